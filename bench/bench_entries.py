"""Many small entries: 100,000 distinct values stored, then read back, and
the disk each one takes.

A script runs `v = item(i)  # @devstash` for i in range(N) (each value a
small tuple) and the same loop unmarked. The first run, on an empty cache,
stores: its figure is the marked loop minus the unmarked loop. The second
run reads every value back: same figure. Deferred work is shown apart:
"exit" is the time from the script's last line to the process's end, over
the same for the bare script (a cache that writes at exit pays it there).
Disk per entry: the cache folder's allocated size (st_blocks * 512, folders
included: for ours the LMDB files, for 0.1.1 its one file per entry) over N,
minus the value's own size (its protocol-5 pickle).
joblib and diskcache: their decorated item() in the same loops; joblib is
measured on fewer entries (it takes ~0.6 ms a store) and scaled to 100,000.
"""
import os
import time

from _harness import (HEADER_MARKER, REPORT, Failed, Metric, Table, best, disk_usage, measure_columns,
                      run_script, write_script)

KEY = "entries"
TITLE = "100,000 distinct small entries"
COLUMNS = ["ours", "devstash011", "joblib", "diskcache"]
STORE, READ, EXIT_STORE, EXIT_READ, DISK = (
    "store 100,000", "read back 100,000", "exit after storing, over bare",
    "exit after reading, over bare", "disk per entry")

BODY = """\
CALLS = 0
def item(i):
    global CALLS
    CALLS += 1
    return (i, "name-%d" % i, i * 0.5)
N = int(sys.argv[1])
{setup}c0 = CALLS
s1 = 0
t0 = time.perf_counter()
for i in range(N):
    {cached}
    s1 += v[0]
marked = time.perf_counter() - t0
computed = CALLS - c0
s2 = 0
t0 = time.perf_counter()
for i in range(N):
    v = item(i)
    s2 += v[0]
plain = time.perf_counter() - t0
sample = range(0, N, 101)
size = sum(len(pickle.dumps(item(i), 5)) for i in sample) / len(sample)
ok = s1 == s2 and v == item(N - 1)
report(marked=marked, plain=plain, computed=computed, value_bytes=size, ok=ok, end=time.time())
"""


def script_for(key: str) -> str:
    imports = "import sys, time, pickle\n"
    if key in ("ours", "devstash011"):
        return imports + HEADER_MARKER + REPORT + BODY.format(cached="v = item(i)  # @devstash", setup="")
    if key == "bare":
        return imports + REPORT + BODY.format(cached="v = item(i)", setup="")
    # a peer: decorate once, outside the loop, as a user would
    setup = ("import joblib\ng = joblib.Memory(sys.argv[2], verbose=0).cache(item)\n" if key == "joblib"
             else "import diskcache\ng = diskcache.Cache(sys.argv[2]).memoize()(item)\n")
    return imports + REPORT + BODY.format(cached="v = g(i)", setup=setup)


def entries_for(ctx, key: str) -> int:
    if key == "joblib":
        return 2_000 if ctx.quick else 10_000
    return 10_000 if ctx.quick else 100_000


def timed(ctx, key, path, folder, n, store):
    """Runs the script; returns (data, seconds from its last line to exit)."""
    run = run_script(ctx.py(key), path, folder, args=[n, store], cache_dir=store, timeout=600)
    return run.data, time.time() - run.data["end"]


def measure(ctx, key):
    folder = ctx.workdir(f"entries-{key}")
    n = entries_for(ctx, key)
    scale = 100_000 / n
    path = write_script(folder, script_for(key))
    bare = write_script(folder, script_for("bare"), "bare.py")
    store = os.path.join(folder, "cache")
    bare_exit = best([timed(ctx, "floor_dict", bare, folder, n, store + "-bare")[1] for _ in range(3)])
    first, exit_store = timed(ctx, key, path, folder, n, store)
    if first["computed"] != n or not first["ok"]:
        raise Failed("the storing run computed other values than expected")
    disk = disk_usage(store)
    second, exit_read = timed(ctx, key, path, folder, n, store)
    if not second["ok"]:
        raise Failed("wrong values read back")
    if second["computed"]:
        raise Failed(f"not cached: {second['computed']} of {n} values computed again")
    ctx.log(f"entries/{key} n={n}: store {first}, read {second}, disk {disk}, exits "
            f"{exit_store:.3f} {exit_read:.3f} bare {bare_exit:.3f}")
    return {
        STORE: (first["marked"] - first["plain"]) * scale,
        READ: (second["marked"] - second["plain"]) * scale,
        EXIT_STORE: exit_store - bare_exit,
        EXIT_READ: exit_read - bare_exit,
        DISK: disk / n - first["value_bytes"],
    }


def run(ctx) -> Table:
    n = entries_for(ctx, "ours")
    notes = ["store/read: the marked loop minus the same loop unmarked; exit: last line to process end, "
             "over the bare script's",
             f"joblib measured on {entries_for(ctx, 'joblib'):,} entries, scaled to 100,000"]
    if n != 100_000:
        notes.append(f"quick: measured on {n:,} entries, scaled to 100,000; disk per entry over {n:,} "
                     "entries carries more fixed overhead (LMDB pages, lock file) than over 100,000")
    table = Table(KEY, TITLE, COLUMNS, [
        Metric(STORE, "s", goal=("<=", 1.0), expected_011=7.2),
        Metric(READ, "s", goal=("<=", 0.3), expected_011=2.3),
        Metric(EXIT_STORE, "s", ratio=False),
        Metric(EXIT_READ, "s", ratio=False),
        Metric(DISK, "B", goal=("<=", 200), expected_011=4160),
    ], notes=notes)
    return measure_columns(ctx, table, measure)
