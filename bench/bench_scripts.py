"""Whole-process cost: a user script run as users run it, `python script.py`.

The scripts come from gen_scripts.py (200 and 7,000 lines, 3 and 40 marked
lines). Each figure is the best wall time of the script with devstash over
the best wall time of the bare script (the same file without `import
devstash` and `devstash.activate()`), runs interleaved:
* warm run: the cache holds every marked value (a first run stored them);
* first run: a new, empty cache folder for every run;
* peak memory: max RSS of the warm 7,000-line run minus the bare run's.
Every run is checked: a warm run must print the bare script's checksum of
the marked values and must not have run a marked call.
joblib and diskcache have no form that applies to a whole script: n/a.
"""
import os
import time

from _harness import Failed, Metric, Table, best, median, run_script, write_script
from gen_scripts import generate

KEY = "scripts"
TITLE = "whole script, `python script.py`: time and memory over the bare script"
COLUMNS = ["ours", "devstash011", "joblib", "diskcache", "bare"]
SYSTEMS = ["ours", "devstash011"]


def parse_check(stdout: str):
    for line in stdout.splitlines():
        if line.startswith("@@CHECK "):
            _, crc, computed = line.split()
            return int(crc), int(computed)
    raise Failed("the script printed no checksum")


def measure_size(ctx, lines: int, reps: int, errors: dict) -> dict:
    """Wall times and RSS of the bare script and each system at one size."""
    folder = ctx.workdir(f"scripts-{lines}")
    marked = write_script(folder, generate(lines, marked=True), "marked.py")
    bare = write_script(folder, generate(lines, marked=False), "bare.py")
    ref = run_script(ctx.py("bare"), bare, folder, need_data=False)
    ref_crc, ref_computed = parse_check(ref.stdout)
    out = {"bare": {"warm": [], "rss": []}}
    live = []
    for key in SYSTEMS:
        if key in errors:
            continue
        try:
            run = run_script(ctx.py(key), marked, folder, cache_dir=os.path.join(folder, key + "-cache"),
                             need_data=False)
            if parse_check(run.stdout) != (ref_crc, ref_computed):
                raise Failed("the first run printed other values than the bare script")
            out[key] = {"warm": [], "first": [], "rss": []}
            live.append(key)
        except Exception as exc:  # noqa: BLE001
            errors[key] = str(exc) if isinstance(exc, Failed) else f"{type(exc).__name__}: {exc}"
    for rep in range(reps):
        run = run_script(ctx.py("bare"), bare, folder, need_data=False)
        out["bare"]["warm"].append(run.wall)
        out["bare"]["rss"].append(run.maxrss)
        for key in list(live):
            try:
                warm = run_script(ctx.py(key), marked, folder, cache_dir=os.path.join(folder, key + "-cache"),
                                  need_data=False)
                crc, computed = parse_check(warm.stdout)
                if computed:
                    raise Failed(f"not cached: {computed} of {ref_computed} marked calls ran in a warm run")
                if crc != ref_crc:
                    raise Failed("a warm run printed other values than the bare script")
                first = run_script(ctx.py(key), marked, folder,
                                   cache_dir=os.path.join(folder, f"{key}-first-{rep}"), need_data=False)
                if parse_check(first.stdout) != (ref_crc, ref_computed):
                    raise Failed("a first run printed other values than the bare script")
            except Exception as exc:  # noqa: BLE001
                errors[key] = str(exc) if isinstance(exc, Failed) else f"{type(exc).__name__}: {exc}"
                live.remove(key)
                continue
            out[key]["warm"].append(warm.wall)
            out[key]["rss"].append(warm.maxrss)
            out[key]["first"].append(first.wall)
    return out


def run(ctx) -> Table:
    sizes = [(200, "200 lines", 1.10, 3.6, 1.5, 3.6), (7000, "7,000 lines", 1.05, 4.2, 1.5, 4.3)]
    metrics = []
    for _, label, warm_goal, warm_011, first_goal, first_011 in sizes:
        metrics.append(Metric(f"warm run, {label}", "x", goal=("<=", warm_goal), expected_011=warm_011))
    for _, label, warm_goal, warm_011, first_goal, first_011 in sizes:
        metrics.append(Metric(f"first run, {label}", "x", goal=("<=", first_goal), expected_011=first_011))
    metrics.append(Metric("peak RSS over bare, warm, 7,000 lines", "MiB", goal=("<=", 5.0), expected_011=41.0))
    for _, label, *_ in sizes:
        metrics.append(Metric(f"wall time, warm, {label}", "ms"))
    table = Table(KEY, TITLE, COLUMNS, metrics, notes=[
        "ratios: best wall time over the bare script's best; first run: a new cache folder each run"])
    by_name = {m.name: m for m in metrics}
    started = time.perf_counter()
    errors = {}
    raw = {}
    for lines, label, *_ in sizes:
        reps = (5 if lines < 1000 else 4) if ctx.quick else (20 if lines < 1000 else 12)
        try:
            raw[lines] = data = measure_size(ctx, lines, reps, errors)
        except Exception as exc:  # noqa: BLE001 - the bare script itself failed: nothing to compare
            for key in COLUMNS:
                errors.setdefault(key, f"bare script: {exc}")
            continue
        bare_best = best(data["bare"]["warm"])
        by_name[f"wall time, warm, {label}"].values["bare"] = bare_best * 1000
        by_name[f"warm run, {label}"].values["bare"] = 1.0
        by_name[f"first run, {label}"].values["bare"] = 1.0
        for key in SYSTEMS:
            d = data.get(key)
            if key in errors or not d or not d["warm"]:
                continue
            by_name[f"warm run, {label}"].values[key] = best(d["warm"]) / bare_best
            by_name[f"first run, {label}"].values[key] = best(d["first"]) / bare_best
            by_name[f"wall time, warm, {label}"].values[key] = best(d["warm"]) * 1000
            if lines == 7000:
                rss = (median(d["rss"]) - median(data["bare"]["rss"])) / 2**20
                by_name["peak RSS over bare, warm, 7,000 lines"].values[key] = rss
            ctx.log(f"scripts/{lines}/{key}: warm best {best(d['warm']) * 1000:.1f} ms median "
                    f"{median(d['warm']) * 1000:.1f}, first best {best(d['first']) * 1000:.1f} ms, "
                    f"bare best {bare_best * 1000:.1f} median {median(data['bare']['warm']) * 1000:.1f}")
        if lines == 7000:
            by_name["peak RSS over bare, warm, 7,000 lines"].values["bare"] = 0.0
    for m in metrics:
        for key in COLUMNS:
            if key in errors:
                m.values[key] = f"error: {errors[key]}"
            elif key not in SYSTEMS and key != "bare":
                m.values[key] = None
            else:
                m.values.setdefault(key, None)
    table.raw = {str(k): {s: {kk: [round(x, 5) for x in vv] for kk, vv in d.items()} for s, d in v.items()}
                 for k, v in raw.items()}
    table.seconds = time.perf_counter() - started
    return table
