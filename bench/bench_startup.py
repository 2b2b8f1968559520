"""`import devstash`: what the import costs before a script does anything.

Two figures, best of several processes each:
* `python -X importtime -c "import devstash"`: the cumulative time of the
  top-level `devstash` entry (everything the import pulls in).
* the wall time of `python -c "import devstash"` minus `python -c "pass"`:
  the same cost seen from outside, importtime's own overhead excluded.
joblib and diskcache: the same for `import joblib` / `import diskcache`.
"""
import os

from _harness import Failed, Metric, Table, best, child_env, measure_columns, run_process

KEY = "startup"
TITLE = "import devstash"
COLUMNS = ["ours", "devstash011", "joblib", "diskcache"]
MODULE = {"ours": "devstash", "devstash011": "devstash", "joblib": "joblib", "diskcache": "diskcache"}


def importtime_us(stderr: str, module: str) -> float:
    """The cumulative figure of the top-level entry for module."""
    for line in stderr.splitlines():
        if not line.startswith("import time:"):
            continue
        parts = [p.strip() for p in line[len("import time:"):].split("|")]
        if len(parts) == 3 and parts[2] == module:  # top level: no indent
            return float(parts[1])
    raise Failed(f"no importtime line for {module}")


def measure(ctx, key):
    python, module = ctx.py(key), MODULE[key]
    folder = ctx.workdir(f"startup-{key}")
    env = child_env(os.path.join(folder, ".devstash_cache"))
    repeats = 5 if ctx.quick else 15
    cumulative, with_import, bare = [], [], []
    for _ in range(repeats):
        run = run_process([python, "-X", "importtime", "-c", f"import {module}"], folder, env)
        cumulative.append(importtime_us(run.stderr, module))
        with_import.append(run_process([python, "-c", f"import {module}"], folder, env).wall)
        bare.append(run_process([python, "-c", "pass"], folder, env).wall)
    return {
        "-X importtime, cumulative": best(cumulative) / 1000,
        "process wall, over `python -c pass`": (best(with_import) - best(bare)) * 1000,
    }


def run(ctx) -> Table:
    table = Table(KEY, TITLE, COLUMNS, [
        Metric("-X importtime, cumulative", "ms", goal=("<=", 2.0), expected_011=25.0),
        Metric("process wall, over `python -c pass`", "ms"),
    ], notes=["best of several processes; joblib and diskcache: `import joblib` / `import diskcache`"])
    return measure_columns(ctx, table, measure)
