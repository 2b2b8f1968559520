"""Runs the devstash benchmarks against every system and prints one table per
benchmark; writes the figures to bench/results.json (--quick:
bench/results-quick.json).

    python bench/run.py --ours .venv/bin/python [--quick] [--only hit,startup]

The systems: ours (the Python given by --ours, with devstash built from this
checkout), devstash 0.1.1 from PyPI (--devstash011, default
bench/.venvs/devstash011/bin/python) and the peers joblib and diskcache plus
the floors (py-lmdb, numpy, xxhash) in --peers (default
bench/.venvs/peers/bin/python). `make bench` and `make bench-quick` build
those environments first. A system that fails a benchmark reads "error" in
its column; the run goes on.
"""
import argparse
import datetime
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import _harness  # noqa: E402
from _harness import BENCH_DIR, Context, System  # noqa: E402

# In the order they run; each is the module bench_KEY.py.
BENCHMARKS = ["hit", "startup", "scripts", "arrays", "entries", "concurrent", "effects", "rewrite",
              "cli", "remote", "stash"]

LABELS = {
    "ours": "ours",
    "devstash011": "0.1.1",
    "joblib": "joblib",
    "diskcache": "diskcache",
    "bare": "bare script",
    "floor_dict": "floor: dict",
    "floor_lmdb": "floor: py-lmdb",
    "floor_memcpy": "floor: memcpy",
    "floor_xxh3": "floor: xxh3",
    "ours_http": "ours: HTTP",
    "local": "local hit",
    "cachier": "cachier: Redis",
    "floor_redis": "floor: Redis GET",
    "floor_http": "floor: HTTP GET",
    "recordclass": "recordclass",
    "stash_memory": "stash-memory",
    "slots": "__slots__",
    "dataclass_slots": "dataclass(slots)",
    "namedtuple": "namedtuple",
    "regular": "regular class",
}


def versions(python: str, modules) -> dict:
    code = (
        "import json, sys\n"
        "from importlib import metadata\n"
        "out = {'python': sys.version.split()[0]}\n"
        f"for m in {list(modules)!r}:\n"
        "    try: out[m] = metadata.version(m)\n"
        "    except Exception as e: out[m] = 'missing'\n"
        "print(json.dumps(out))\n"
    )
    try:
        done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60,
                              env=_harness.child_env(None), cwd="/")
        return json.loads(done.stdout)
    except Exception as exc:  # noqa: BLE001
        return {"error": str(exc)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ours", required=True, help="python with devstash from this checkout")
    ap.add_argument("--devstash011", default=os.path.join(BENCH_DIR, ".venvs/devstash011/bin/python"))
    ap.add_argument("--peers", default=os.path.join(BENCH_DIR, ".venvs/peers/bin/python"))
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats (< 2 minutes)")
    ap.add_argument("--only", default="", help="comma-separated benchmark keys: "
                    + ",".join(BENCHMARKS))
    ap.add_argument("--json", default=None, help="where to write the results")
    ap.add_argument("--verbose", "-v", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folders (to inspect)")
    args = ap.parse_args(argv)

    ours = os.path.abspath(args.ours) if os.sep in args.ours else (shutil.which(args.ours) or args.ours)
    d011 = os.path.abspath(args.devstash011)
    peers = os.path.abspath(args.peers)
    systems = {
        "ours": System("ours", LABELS["ours"], ours, "marker"),
        "devstash011": System("devstash011", LABELS["devstash011"], d011, "marker"),
        "joblib": System("joblib", "joblib", peers, "peer"),
        "diskcache": System("diskcache", "diskcache", peers, "peer"),
        "bare": System("bare", "bare script", ours, "bare"),
    }
    systems["ours_http"] = System("ours_http", LABELS["ours_http"], ours, "marker")
    systems["local"] = System("local", LABELS["local"], ours, "marker")
    systems["cachier"] = System("cachier", LABELS["cachier"], peers, "peer")
    for key in ("floor_dict", "floor_lmdb", "floor_memcpy", "floor_xxh3", "floor_redis", "floor_http"):
        systems[key] = System(key, LABELS[key], peers, "floor")

    only = [k for k in args.only.split(",") if k]
    unknown = set(only) - set(BENCHMARKS)
    if unknown:
        ap.error(f"unknown benchmark {', '.join(sorted(unknown))}")
    selected = [importlib.import_module("bench_" + k) for k in BENCHMARKS if not only or k in only]
    out_path = args.json or os.path.join(BENCH_DIR, "results-quick.json" if args.quick else "results.json")
    ctx = Context(systems, quick=args.quick, verbose=args.verbose, keep=args.keep)

    meta = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "quick": args.quick,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                    "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]},
        "pythons": {
            "ours": versions(ours, ["devstash", "numpy"]),
            "devstash011": versions(d011, ["devstash", "numpy"]),
            "peers": versions(peers, ["joblib", "diskcache", "lmdb", "xxhash", "numpy", "cachier",
                                      "redis", "recordclass", "stash-memory", "pympler"]),
        },
    }
    print(f"devstash benchmarks{' (quick)' if args.quick else ''}: {meta['machine']['platform']}, "
          f"{meta['machine']['cpus']} CPUs, load average {os.getloadavg()[0]:.2f} "
          "(other work on the machine skews every figure)")
    for who, v in meta["pythons"].items():
        print(f"  {who}: " + ", ".join(f"{k} {x}" for k, x in v.items()))
    print("  ✓/✗: our figure meets/misses its goal; × 0.1.1: the figure over devstash 0.1.1's\n", flush=True)

    results = {"meta": meta, "benchmarks": {}}
    started = time.perf_counter()
    try:
        for bench in selected:
            t0 = time.perf_counter()
            table = bench.run(ctx)
            ctx.cleanup(again=True)
            print(_harness.render(table, LABELS))
            print(f"   ({time.perf_counter() - t0:.0f} s)\n", flush=True)
            results["benchmarks"][bench.KEY] = _harness.to_json(table)
            meta["seconds"] = round(time.perf_counter() - started, 1)
            meta["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
            with open(out_path, "w", encoding="utf-8") as f:
                json.dump(results, f, indent=1, ensure_ascii=False)
                f.write("\n")
    finally:
        ctx.cleanup()
    print(f"total {time.perf_counter() - started:.0f} s; results in {os.path.relpath(out_path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
