"""A hit that restores what the call changed: `clf.fit(X, y)  # @devstash`
with scikit-learn, side by side with fitting again.

A warm run's line leaves clf fitted (its state after fit, restored into the
same object) and the script checks that its predictions equal a fresh fit's.
"bare": the same line unmarked, so the fit runs: what recomputing costs.
perf_counter() around the line; median of several processes, with the spread.
"""
from _harness import HEADER_MARKER, REPORT, Failed, Metric, Table, measure_columns, median, run_script, write_script

KEY = "effects"
TITLE = "scikit-learn fit on a hit: the model left fitted"
COLUMNS = ["ours", "bare"]
FIT = "clf.fit(X, y)"

BODY = """\
import sys, time
import numpy as np
from sklearn.ensemble import RandomForestClassifier
rng = np.random.RandomState(0)
X = rng.normal(size=(4000, 20))
y = (X[:, 0] + X[:, 1] * X[:, 2] > 0).astype(int)
clf = RandomForestClassifier(n_estimators=60, random_state=0)
t0 = time.perf_counter()
{line}
t = time.perf_counter() - t0
fresh = RandomForestClassifier(n_estimators=60, random_state=0).fit(X, y)
ok = bool((clf.predict(X[:500]) == fresh.predict(X[:500])).all())
report(seconds=t, ok=ok)
"""


def measure(ctx, key):
    folder = ctx.workdir(f"effects-{key}")
    marked = key == "ours"
    text = (HEADER_MARKER if marked else "") + REPORT + BODY.format(
        line="clf.fit(X, y)  # @devstash" if marked else "clf.fit(X, y)")
    path = write_script(folder, text)
    py = ctx.py(key)
    if marked:
        run_script(py, path, folder)      # stores
    times = []
    for _ in range(3 if ctx.quick else 7):
        d = run_script(py, path, folder).data
        if not d["ok"]:
            raise Failed("the model is not fitted as a fresh fit is")
        times.append(d["seconds"])
    ctx.log(f"effects/{key}: {[round(t, 4) for t in times]}")
    return {FIT: median(times), "_spread": [min(times), max(times)]}


def run(ctx) -> Table:
    table = Table(KEY, TITLE, COLUMNS, [
        Metric(FIT, "s", ratio=False,
               note="ours: a hit that restores the fitted state; bare: the fit itself"),
    ], notes=["median of several warm processes (spread in the JSON record); every run checks "
              "that the model predicts as a fresh fit does"])
    return measure_columns(ctx, table, measure)
