"""The rewriter at scale: a script of N marked lines rewritten from scratch
(`devstash._core.rewrite`, as activate() does on a first run), N = 10,000,
40,000 and 100,000. It must grow linearly: 100,000 markers in 5 s or less.
Median of three runs in fresh processes."""
from _harness import REPORT, Failed, Metric, Table, measure_columns, median, run_script, write_script

KEY = "rewrite"
TITLE = "rewriting N marked lines"
COLUMNS = ["ours"]
SIZES = (10_000, 40_000, 100_000)

SCRIPT = """\
import sys, time
from devstash import _core
n = int(sys.argv[1])
lines = ["def f(x):", "    return x"] + [f"v{i} = f({i})  # @devstash" for i in range(n)]
src = ("\\n".join(lines) + "\\n").encode()
t0 = time.perf_counter()
code, sites = _core.rewrite(src, "big.py", 0)
report(seconds=time.perf_counter() - t0, sites=len(sites))
"""


def measure(ctx, key):
    folder = ctx.workdir("rewrite")
    path = write_script(folder, REPORT + SCRIPT)
    out = {}
    for n in SIZES[:2] if ctx.quick else SIZES:
        times = []
        for _ in range(3):
            d = run_script(ctx.py(key), path, folder, args=[n]).data
            if d["sites"] != n:
                raise Failed(f"{d['sites']} sites for {n} markers")
            times.append(d["seconds"])
        out[f"{n:,} markers"] = median(times)
    return out


def run(ctx) -> Table:
    table = Table(KEY, TITLE, COLUMNS, [
        Metric(f"{n:,} markers", "s", goal=("<=", 5.0) if n == 100_000 else None, ratio=False)
        for n in SIZES
    ], notes=["before 0.3: 10,000 markers 1.7 s, 40,000 19 s, 100,000 99.5 s (quadratic)"])
    return measure_columns(ctx, table, measure)
