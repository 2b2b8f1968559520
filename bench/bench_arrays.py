"""100 MB numpy arrays: the marked line on a hit.

* result: `arr = make_array(N)  # @devstash` returns a 100 MB float64 array;
  on a hit the line must bring those 100 MB back.
* argument: `s = summarize(big)  # @devstash` takes a 100 MB array and
  returns a float; on a hit the line must still hash the argument to find
  the key.
perf_counter() around the one line, in a warm run (a first run stored the
value); best of several processes. Every hit is checked (whole array equal,
no call ran). joblib and diskcache: their decorated function on the same
line. Floors: copying 100 MB into a new array (memcpy plus the page faults
any fresh 100 MB pays); reading 100 MB out of an LMDB map into a new array
(py-lmdb: a read transaction, get, one copy): what a copying LMDB design
pays; and xxh3-128 over the 100 MB (python-xxhash).
"""
from _harness import HEADER_MARKER, REPORT, Failed, Metric, Table, best, measure_columns, run_script, write_script

KEY = "arrays"
TITLE = "100 MB array, the marked line on a hit"
COLUMNS = ["ours", "devstash011", "joblib", "diskcache", "floor_memcpy", "floor_lmdb", "floor_xxh3"]
RESULT, ARG = "100 MB result", "100 MB argument"

COMMON = """\
CALLS = 0
N = 12_500_000  # float64: 100 MB
def make_array(n):
    global CALLS
    CALLS += 1
    return np.arange(n, dtype=np.float64)
def summarize(a):
    global CALLS
    CALLS += 1
    return float(a[::1000].sum())
mode = sys.argv[1]
"""

BODY = """\
if mode == "result":
    t0 = time.perf_counter()
    arr = {result_call}
    t = time.perf_counter() - t0
    ok = arr.shape == (N,) and arr.dtype == np.float64 and bool(np.array_equal(arr, np.arange(N, dtype=np.float64)))
else:
    big = np.arange(N, dtype=np.float64) * 0.5
    t0 = time.perf_counter()
    s = {arg_call}
    t = time.perf_counter() - t0
    ok = s == float(big[::1000].sum())
report(seconds=t, computed=CALLS, ok=ok)
"""

FLOORS = """\
import sys, time
import numpy as np
src = np.arange(12_500_000, dtype=np.float64)
times = []
if sys.argv[1] == "memcpy":
    dst = np.zeros_like(src)
    pre = []
    for _ in range(7):
        t0 = time.perf_counter(); fresh = src.copy(); times.append(time.perf_counter() - t0); del fresh
        t0 = time.perf_counter(); np.copyto(dst, src); pre.append(time.perf_counter() - t0)
    report(seconds=min(times), prefaulted=min(pre))
elif sys.argv[1] == "lmdb":
    import lmdb
    env = lmdb.open(sys.argv[2], map_size=1 << 30)
    with env.begin(write=True) as txn:
        txn.put(b"k" * 16, memoryview(src).cast("B"))
    env.close()
    env = lmdb.open(sys.argv[2], map_size=1 << 30)
    for _ in range(7):
        t0 = time.perf_counter()
        with env.begin(buffers=True) as txn:
            fresh = np.frombuffer(bytearray(txn.get(b"k" * 16)), dtype=np.float64)
        times.append(time.perf_counter() - t0)
        del fresh
    report(seconds=min(times))
else:
    import xxhash
    for _ in range(7):
        t0 = time.perf_counter(); xxhash.xxh3_128_digest(src); times.append(time.perf_counter() - t0)
    report(seconds=min(times))
"""


def script_for(key: str) -> str:
    imports = "import sys, time\nimport numpy as np\n"
    if key in ("ours", "devstash011"):
        return imports + HEADER_MARKER + REPORT + COMMON + BODY.format(
            result_call="make_array(N)  # @devstash", arg_call="summarize(big)  # @devstash")
    if key == "joblib":
        setup = "import joblib\nmem = joblib.Memory(sys.argv[2], verbose=0)\n" \
                "make_c, summ_c = mem.cache(make_array), mem.cache(summarize)\n"
    elif key == "diskcache":
        setup = "import diskcache\ncache = diskcache.Cache(sys.argv[2])\n" \
                "make_c, summ_c = cache.memoize()(make_array), cache.memoize()(summarize)\n"
    else:
        return REPORT + FLOORS
    return imports + REPORT + COMMON + setup + BODY.format(result_call="make_c(N)", arg_call="summ_c(big)")


def measure(ctx, key):
    folder = ctx.workdir(f"arrays-{key}")
    path = write_script(folder, script_for(key))
    repeats = 2 if ctx.quick else 5
    if key.startswith("floor_"):
        mode = key[len("floor_"):]
        d = run_script(ctx.py(key), path, folder, args=[mode, folder + "/lmdb"]).data
        ctx.log(f"arrays/{key}: {d}")
        return {ARG if mode == "xxh3" else RESULT: d["seconds"], "_detail": d}
    out = {}
    for mode, name in (("result", RESULT), ("arg", ARG)):
        store = f"{folder}/store-{mode}"
        try:
            run_script(ctx.py(key), path, folder, args=[mode, store], timeout=300)  # stores
            times = []
            for _ in range(repeats):
                d = run_script(ctx.py(key), path, folder, args=[mode, store], timeout=300).data
                if not d["ok"]:
                    raise Failed("wrong value on a hit")
                if d["computed"]:
                    raise Failed("not cached: the function ran in a warm run")
                times.append(d["seconds"])
            out[name] = best(times)
            ctx.log(f"arrays/{key}/{mode}: {[round(t, 4) for t in times]}")
        except Failed as exc:
            out[name] = f"error: {exc}"
    return out


def run(ctx) -> Table:
    table = Table(KEY, TITLE, COLUMNS, [
        Metric(RESULT, "s", goal=("<=", 0.03), expected_011=0.056),
        Metric(ARG, "s", goal=("<=", 0.02), expected_011=0.20),
    ], notes=["the line alone, on a hit in a warm run; best of several processes",
              "floors: memcpy = `a.copy()` of 100 MB (new memory); py-lmdb = get + one copy out of "
              "the map; xxh3 = xxh3-128 over 100 MB"])
    return measure_columns(ctx, table, measure)
