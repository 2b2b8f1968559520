"""The devstash command on a cache of 1,000,000 entries (200,000 with
--quick): `stats`, `show PREFIX`, the first rows of `list` and its peak
memory over all rows, and `prune --max-size` (on a fresh copy each time).
Wall time of the whole command, Python's start included; median of three
processes, the spread in the JSON record."""
import os
import shutil
import subprocess
import time

from _harness import REPORT, Failed, Metric, Table, child_env, measure_columns, median, run_process, \
    run_script, write_script

KEY = "cli"
TITLE = "the devstash command on 1,000,000 entries"
COLUMNS = ["ours"]
ROUNDS = 3

FILL = """\
import random, sys, time
from devstash import _core
n, folder = int(sys.argv[1]), sys.argv[2]
rnd = random.Random(1)
now = time.time()
with _core.Store(folder, map_size=8 << 30) as store:
    for i in range(n):
        key = rnd.randbytes(16)
        store.put(key, b"x" * 60, created=now - rnd.random() * 86400 * 30,
                  ttl=3600.0 if i % 3 == 0 else 0.0, compute=0.5, callee=f"app.load_{i % 50}",
                  site=f"/home/u/project/script_{i % 20}.py:{i % 400 + 1}")
        if i % 5 == 0:
            store.note_hit(key, now)
        if i == n // 2:
            some = key.hex()
report(key=some)
"""


def first_rows(argv, cwd, env) -> float:
    """Seconds until `devstash list` has printed its header and first row."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        if not (proc.stdout.readline() and proc.stdout.readline()):
            raise Failed("list printed no rows")
        return time.perf_counter() - start
    finally:
        proc.kill()
        proc.wait()


def measure(ctx, key):
    n = 200_000 if ctx.quick else 1_000_000
    folder = ctx.workdir("cli")
    cache = os.path.join(folder, "cache")
    path = write_script(folder, REPORT + FILL, "fill.py")
    some = run_script(ctx.py(key), path, folder, args=[n, cache], timeout=1800).data["key"]
    env = child_env(cache)
    cmd = [ctx.py(key), "-m", "devstash"]
    times = {"stats": [], "show PREFIX": [], "list: first rows": [], "prune --max-size": []}
    rss = []
    for _ in range(ROUNDS):
        times["stats"].append(run_process(cmd + ["stats"], folder, env).wall)
        times["show PREFIX"].append(run_process(cmd + ["show", some[:10]], folder, env).wall)
        times["list: first rows"].append(first_rows(cmd + ["list"], folder, env))
        copy = os.path.join(folder, "copy")
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(cache, copy)
        times["prune --max-size"].append(
            run_process(cmd + ["prune", "--max-size", str(n * 60 // 3)], folder, child_env(copy)).wall)
    rss.append(run_process(cmd + ["list"], folder, env).maxrss)
    shutil.rmtree(folder, ignore_errors=True)
    out = {name: median(values) for name, values in times.items()}
    out["list: peak memory, all rows"] = rss[0] / 1e6
    out["_spread"] = {name: [min(v), max(v)] for name, v in times.items()}
    out["_entries"] = n
    return out


def run(ctx) -> Table:
    table = Table(KEY, TITLE, COLUMNS, [
        Metric("stats", "s", goal=("<=", 0.2), ratio=False),
        Metric("show PREFIX", "s", goal=("<=", 0.05), ratio=False,
               note="the command's own work; Python's start is most of it"),
        Metric("list: first rows", "s", goal=("<=", 0.2), ratio=False),
        Metric("list: peak memory, all rows", "MB", ratio=False,
               note="includes the pages of the store mapped while reading (the file, not the heap)"),
        Metric("prune --max-size", "s", goal=("<=", 3.0), ratio=False),
    ], notes=["before 0.3, on 1,000,000 entries: stats 8.9 s, show PREFIX 7.3 s, list 26 s and "
              "2.0 GB before its first row, prune 19.7 s"])
    return measure_columns(ctx, table, measure)
