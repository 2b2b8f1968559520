"""Cache hit, small value: the cost of one marked call that hits.

A script runs `x = f(1)  # @devstash` in a loop (after a first run stored
the value), the same loop unmarked, `x = f(1)`, and a loop doing
`x = None`, several rounds each. The figure: (best marked round - best
unmarked round) / N, what the marker adds to the line. A second row: the
whole hit line over the empty loop, the figure to compare with the floors.
joblib and diskcache have no marker form: the same loop calls their
decorated f. The floors replace the line by the bare lookup (a dict; a
py-lmdb read transaction + pickle.loads) and subtract the empty loop.
"""
from _harness import HEADER_MARKER, REPORT, Failed, Metric, Table, measure_columns, run_script, write_script

KEY = "hit"
TITLE = "cache hit, small value, per marked call"
LINE = "the whole hit line, over an empty loop"
COLUMNS = ["ours", "devstash011", "diskcache", "joblib", "floor_dict", "floor_lmdb"]

VALUE = '{"id": a, "name": "item-%d" % a, "score": 0.5, "tags": ["x", "y"]}'

FUNC = f"""\
CALLS = 0
def f(a):
    global CALLS
    CALLS += 1
    return {VALUE}
EXPECTED = f(1)
"""

# The timing loop: calibrate N so one round lasts ~TARGET seconds, then
# alternate rounds of the cached line and the baseline line.
LOOP = """\
import time
TARGET = {target}
ROUNDS = {rounds}
x = CACHED_WARMUP
t0 = time.perf_counter()
for i in range(200):
    {cached}
per = (time.perf_counter() - t0) / 200
N = min(2_000_000, max(2000, int(TARGET / max(per, 1e-8))))
cached_best = base_best = empty_best = float("inf")
calls_before = CALLS
for r in range(ROUNDS):
    t0 = time.perf_counter()
    for i in range(N):
        {cached}
    cached_best = min(cached_best, time.perf_counter() - t0)
    got = x
    c = CALLS
    t0 = time.perf_counter()
    for i in range(N):
        {baseline}
    base_best = min(base_best, time.perf_counter() - t0)
    calls_before += CALLS - c
    t0 = time.perf_counter()
    for i in range(N):
        x = None
    empty_best = min(empty_best, time.perf_counter() - t0)
report(per_call_us=(cached_best - base_best) / N * 1e6, line_us=(cached_best - empty_best) / N * 1e6,
       cached_us=cached_best / N * 1e6, base_us=base_best / N * 1e6, empty_us=empty_best / N * 1e6,
       n=N, computed=CALLS - calls_before, ok=(got == EXPECTED))
"""


def script_for(key: str, target: float, rounds: int) -> str:
    loop = dict(target=target, rounds=rounds)
    if key in ("ours", "devstash011"):
        head = "import time\n" + HEADER_MARKER + REPORT + FUNC
        body = LOOP.format(cached="x = f(1)  # @devstash", baseline="x = f(1)", **loop)
        body = body.replace("CACHED_WARMUP", "f(1)  # @devstash")
    elif key == "joblib":
        head = REPORT + FUNC + "import sys, joblib\ng = joblib.Memory(sys.argv[1], verbose=0).cache(f)\n"
        body = LOOP.format(cached="x = g(1)", baseline="x = f(1)", **loop).replace("CACHED_WARMUP", "g(1)")
    elif key == "diskcache":
        head = REPORT + FUNC + "import sys, diskcache\ng = diskcache.Cache(sys.argv[1]).memoize()(f)\n"
        body = LOOP.format(cached="x = g(1)", baseline="x = f(1)", **loop).replace("CACHED_WARMUP", "g(1)")
    elif key == "floor_dict":
        head = REPORT + FUNC + "memo = {('__main__.f', 1): f(1)}\nCALLS = 0\n"
        body = LOOP.format(cached="x = memo[('__main__.f', 1)]", baseline="x = None", **loop)
        body = body.replace("CACHED_WARMUP", "memo[('__main__.f', 1)]")
    elif key == "floor_lmdb":
        head = REPORT + FUNC + (
            "import sys, pickle, lmdb\n"
            "env = lmdb.open(sys.argv[1], map_size=1 << 30)\n"
            "K = bytes(range(16))\n"
            "with env.begin(write=True) as txn:\n"
            "    txn.put(K, pickle.dumps(f(1), 5))\n"
            "CALLS = 0\n"
            "def get():\n"
            "    with env.begin(buffers=True) as txn:\n"
            "        return pickle.loads(txn.get(K))\n"
        )
        # inline, not get(): the floor is the lookup, without a Python call
        cached = "with env.begin(buffers=True) as txn: x = pickle.loads(txn.get(K))"
        body = LOOP.format(cached=cached, baseline="x = None", **loop).replace("CACHED_WARMUP", "get()")
    else:
        raise KeyError(key)
    return head + body


def measure(ctx, key):
    folder = ctx.workdir(f"hit-{key}")
    target, rounds = (0.04, 3) if ctx.quick else (0.15, 5)
    path = write_script(folder, script_for(key, target, rounds))
    store = folder + "/store"
    # the first run stores the value; the second one is measured
    run_script(ctx.py(key), path, folder, args=[store])
    run = run_script(ctx.py(key), path, folder, args=[store])
    d = run.data
    if not d["ok"]:
        raise Failed("wrong value on a hit")
    if d["computed"]:
        raise Failed(f"not cached: f ran {d['computed']} times in the warm run")
    ctx.log(f"hit/{key}: {d}")
    return {"per marked call": d["per_call_us"], LINE: d["line_us"], "_cached_line_us": d["cached_us"],
            "_uncached_line_us": d["base_us"], "_empty_loop_us": d["empty_us"], "_calls_per_round": d["n"]}


def run(ctx) -> Table:
    table = Table(KEY, TITLE, COLUMNS, [
        Metric("per marked call", "µs", goal=("<=", 2.0), expected_011=21.7),
        Metric(LINE, "µs"),
    ], notes=["per marked call: best round of the cached line minus best round of the same line "
              "uncached, `x = f(1)` (floors: minus `x = None`); warm run, value stored by a first run",
              "the whole line: best round of the cached line minus a loop doing `x = None` (comparable "
              "with the floors)"])
    return measure_columns(ctx, table, measure)
