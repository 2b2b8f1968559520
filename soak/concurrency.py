"""Concurrency soak: processes hitting, storing and deleting on one cache.

    python soak/concurrency.py [--processes 8] [--threads 4] [--seconds 60] [--seed 1]

Every worker runs the real hit path (devstash._runtime.Runtime.call on a
Store of the shared folder) on calls drawn from a small key space, so the
workers keep hitting each other's values, missing the same keys at once
(compute claims) and racing deletes: 75% calls, 15% Store.delete of a
call's key, 5% chained and plain-expression keys (load/save), the rest
Store.entries() and Store.flush(). Each value names the inputs it was
computed from, and every value a call returns is checked against them: a
value that belongs to another key fails the soak, as does any error,
warning or crash in a worker. Each worker runs its calls in several threads
on one Runtime and Store, and its store starts with a 256 KiB map, so the
map keeps growing while other threads of the process are in the middle of
hits. Exits 1 on failure.
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

SITES = (
    (1, 0, 0.0, 0, "call", "compute(a, b, size)"),
    (2, 0, 0.0, 2, "call", "table(a)"),            # nocode
    (3, 0, 0.0, 0, "expr", "a * 1000 + b"),
)


def compute(a, b, size):
    return {"a": a, "b": b, "payload": bytes([(a * 31 + b) % 256]) * size}


def table(a):
    import numpy as np

    return ("table", a, np.arange(a % 64 + 1, dtype=np.float64) * a)


def worker(folder, seed, seconds, threads=1):
    """Runs in a child process; prints one JSON line of counts."""
    import threading

    import numpy as np

    from devstash import _core, _runtime

    errors = []

    class Checked(_runtime.Runtime):
        def _unhashable(self, site, names):
            errors.append(f"unhashable {names}")

        def _uncacheable(self, site, exc):
            errors.append(f"uncacheable {exc!r}")

        def _unpicklable(self, site, exc):
            errors.append(f"unpicklable {exc!r}")

        def _unreadable(self, site, exc):
            errors.append(f"unreadable {exc!r}")

        def _store_failed(self, site, exc):
            errors.append(f"store failed {exc!r}")

    store = _core.Store(folder, map_size=256 << 10)
    rt = Checked(store, "soak.py", SITES)
    deadline = time.monotonic() + seconds
    totals = []

    def calls(rng):
        counts = {"calls": 0, "deletes": 0, "deleted": 0, "exprs": 0, "lists": 0}
        try:
            mix(rng, counts)
        except BaseException as exc:  # noqa: BLE001 - reported as the worker's error
            errors.append(f"{type(exc).__name__}: {exc}")
        totals.append(counts)

    def mix(rng, counts):
        while time.monotonic() < deadline and not errors:
            for _ in range(200):
                r = rng.random()
                a, b = rng.randrange(40), rng.randrange(8)
                size = (a * 977 + b * 131) % 5000 if a % 10 else 200_000
                if r < 0.60:
                    v = rt.call(0, compute, a, b, size)
                    if v["a"] != a or v["b"] != b or v["payload"] != bytes([(a * 31 + b) % 256]) * size:
                        errors.append(f"compute({a}, {b}, {size}) returned the value of "
                                      f"({v['a']}, {v['b']}, {len(v['payload'])})")
                    counts["calls"] += 1
                elif r < 0.75:
                    t = rt.call(1, table, a)
                    if t[:2] != ("table", a) or not np.array_equal(t[2], table(a)[2]):
                        errors.append(f"table({a}) returned the value of {t[:2]}")
                    counts["calls"] += 1
                elif r < 0.90:
                    if rng.random() < 0.5:
                        key = rt.key_call(0, compute, a, b, size)
                    else:
                        key = rt.key_call(1, table, a)
                    counts["deletes"] += 1
                    counts["deleted"] += bool(store.delete(key))
                elif r < 0.95:
                    key = rt.key_expr(2, (a, b))
                    hit, value = rt.load(2, key)
                    if hit and value != a * 1000 + b:
                        errors.append(f"expr ({a}, {b}) loaded {value!r}")
                    elif not hit:
                        rt.save(2, key, a * 1000 + b, 0.0)
                    counts["exprs"] += 1
                elif r < 0.98:
                    for entry in store.entries():
                        if len(entry["key"]) != 16:
                            errors.append(f"entries() listed a bad key {entry!r}")
                    counts["lists"] += 1
                else:
                    store.flush()
    pool = [threading.Thread(target=calls, args=(random.Random(seed * 1000 + t),)) for t in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    store.flush()
    counts = {k: sum(c[k] for c in totals) for k in totals[0]}
    counts.update(hits=rt.hits, misses=rt.misses, stores=rt.stores, errors=errors[:5])
    print(json.dumps(counts), flush=True)
    return 0


def soak(processes=8, seconds=60.0, seed=1, folder=None, threads=4):
    """Runs the workers; returns their summed counts. Raises AssertionError."""
    own = folder is None
    folder = folder or tempfile.mkdtemp(prefix="devstash-concurrency-")
    cache = os.path.join(folder, "cache")
    here = os.path.abspath(__file__)
    try:
        procs = [subprocess.Popen([sys.executable, here, "--worker", cache, str(seed * 100 + n),
                                   str(seconds), str(threads)], env=_common.child_env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
                 for n in range(processes)]
        outputs = [p.communicate(timeout=seconds + 120) for p in procs]
        total = {}
        problems = []
        for p, (out, err) in zip(procs, outputs):
            if p.returncode != 0 or err.strip():
                problems.append(f"worker exited {p.returncode}:\n{err}")
                continue
            counts = json.loads(out.strip().splitlines()[-1])
            problems.extend(counts.pop("errors"))
            for k, v in counts.items():
                total[k] = total.get(k, 0) + v
        if problems:
            raise AssertionError("\n".join(problems[:10]))
        from devstash import _core
        from devstash._runtime import decode_value

        with _core.Store(cache) as store:   # what is left all loads
            for entry in store.entries():
                got = store.get(entry["key"])
                if got is not None:
                    decode_value(got[1], got[2])
        return total
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)


def main(argv=None):
    if argv is None and sys.argv[1:2] == ["--worker"]:
        return worker(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--threads", type=int, default=4, help="threads per process")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    ns = parser.parse_args(argv)
    try:
        total = soak(ns.processes, ns.seconds, ns.seed, threads=ns.threads)
    except AssertionError as exc:
        print(f"FAILED:\n{exc}")
        return 1
    print(json.dumps(total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
