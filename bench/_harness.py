"""Shared machinery of the benchmarks: the systems under test, running a
generated script in a subprocess, the result tables and the JSON record.

Only the standard library: run.py runs under any Python 3.9+, and every
measured figure comes from a child process run with a system's own Python.
"""
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))


# ---- systems ---------------------------------------------------------------

@dataclass
class System:
    """One column of a table: a cache (ours, 0.1.1, a peer) or a floor.

    kind "marker": `import devstash; devstash.activate()` and `# @devstash`
    lines; "peer": a decorator library; "floor": the bare operation a cache
    cannot beat; "bare": the script with devstash removed."""
    key: str
    label: str
    python: str
    kind: str


class Failed(Exception):
    """A system failed a benchmark; its cells read "error"."""


class NotApplicable(Exception):
    """A system has no form for a benchmark; its cells read "n/a"."""


@dataclass
class Context:
    systems: Dict[str, System]
    quick: bool
    verbose: bool = False
    keep: bool = False
    root: str = field(default_factory=lambda: tempfile.mkdtemp(prefix="devstash-bench-"))

    def py(self, key: str) -> str:
        return self.systems[key].python

    def workdir(self, name: str) -> str:
        """A new, empty folder for one measurement (its cache lives inside)."""
        path = tempfile.mkdtemp(prefix=name + "-", dir=self.root)
        return path

    def log(self, message: str) -> None:
        if self.verbose:
            print(f"    . {message}", file=sys.stderr, flush=True)

    def cleanup(self, again: bool = False) -> None:
        """Removes the temporary folders (0.1.1 and joblib leave 100,000s of
        files); again=True: and starts a new, empty root."""
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)
            if again:
                os.makedirs(self.root)


# ---- running a script ------------------------------------------------------

@dataclass
class Run:
    wall: float           # seconds, fork to exit
    maxrss: int           # bytes
    stdout: str
    stderr: str
    data: Optional[dict]  # the last "@@BENCH {json}" line, if any


def child_env(cache_dir: Optional[str], extra: Optional[dict] = None) -> dict:
    """The environment of a measured child: nothing of ours leaks in (no
    PYTHONPATH that could shadow a venv's devstash, no DEVSTASH_* settings,
    including 0.1.1's DEVSTASH_ACTIVE)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DEVSTASH_", "PYTHON")) and k != "VIRTUAL_ENV"}
    if cache_dir is not None:
        env["DEVSTASH_CACHE_DIR"] = cache_dir
    env.update(extra or {})
    return env


def run_process(argv: List[str], cwd: str, env: dict, timeout: float = 600.0) -> Run:
    """Runs argv to its end and measures wall time and peak RSS (wait4's
    rusage is this child's alone). Raises Failed on a non-zero exit."""
    # files, not pipes: nothing to drain while waiting; unique, since several
    # children may run at once in one folder
    out_fd, out_path = tempfile.mkstemp(prefix=".bench-stdout-", dir=cwd)
    err_fd, err_path = tempfile.mkstemp(prefix=".bench-stderr-", dir=cwd)
    with open(out_fd, "wb") as out, open(err_fd, "wb") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=err)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") \
            else (status >> 8)
    with open(out_path, encoding="utf-8", errors="replace") as f:
        stdout = f.read()
    with open(err_path, encoding="utf-8", errors="replace") as f:
        stderr = f.read()
    os.unlink(out_path)
    os.unlink(err_path)
    if proc.returncode != 0:
        why = "timed out" if proc.returncode == -9 else f"exit {proc.returncode}"
        tail = stderr.strip().splitlines()[-1:] or stdout.strip().splitlines()[-1:] or [""]
        raise Failed(f"{why}: {tail[0][:160]}")
    data = None
    for line in stdout.splitlines():
        if line.startswith("@@BENCH "):
            data = json.loads(line[len("@@BENCH "):])
    return Run(wall, usage.ru_maxrss * 1024, stdout, stderr, data)


def write_script(folder: str, text: str, name: str = "script.py") -> str:
    path = os.path.join(folder, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(textwrap.dedent(text).lstrip())
    return path


def run_script(python: str, script: str, cwd: str, args=(), cache_dir: Optional[str] = None,
               env_extra: Optional[dict] = None, timeout: float = 600.0, need_data: bool = True) -> Run:
    """Runs `python script args` as a user would, in cwd, with the devstash
    cache in cache_dir (default: cwd/.devstash_cache)."""
    cache_dir = cache_dir or os.path.join(cwd, ".devstash_cache")
    run = run_process([python, script, *map(str, args)], cwd, child_env(cache_dir, env_extra), timeout)
    if need_data and run.data is None:
        raise Failed("the script printed no result line")
    return run


def disk_usage(path: str) -> int:
    """Bytes allocated on disk under path (st_blocks * 512, like `du`),
    folders included: a folder of 100,000 files is itself large."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        total += os.lstat(dirpath).st_blocks * 512
        for name in filenames:
            total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


# Script fragments shared by the generated scripts.
HEADER_MARKER = """\
import devstash
devstash.activate()
"""

REPORT = """\
import json as _json
def report(**values):
    print("@@BENCH " + _json.dumps(values), flush=True)
"""


# ---- results and tables ----------------------------------------------------

@dataclass
class Metric:
    """One row of a table. goal is (op, value) with op "<=" or ">=", checked
    against ours; values maps a column key to a float, an "error: ..." string
    or None (n/a)."""
    name: str
    unit: str
    goal: Optional[tuple] = None
    expected_011: Optional[float] = None
    values: Dict[str, object] = field(default_factory=dict)
    note: str = ""
    ratio: bool = True    # print the "× 0.1.1" row under it
    ratio_base: str = "devstash011"  # the column that row divides by

    def meets_goal(self) -> Optional[bool]:
        v = self.values.get("ours")
        if self.goal is None or not isinstance(v, (int, float)):
            return None
        op, target = self.goal
        return v <= target if op == "<=" else v >= target


@dataclass
class Table:
    key: str
    title: str
    columns: List[str]             # system keys, in order; "ours" first
    metrics: List[Metric]
    notes: List[str] = field(default_factory=list)
    seconds: float = 0.0
    raw: dict = field(default_factory=dict)   # extra detail for the JSON record


def measure_columns(ctx: Context, table: Table, measure: Callable[[Context, str], Optional[dict]]) -> Table:
    """Fills table.metrics' values column by column: measure(ctx, key)
    returns {metric name: value} (names starting with "_" go to table.raw);
    None or NotApplicable means n/a; Failed (or
    any other exception) means error, and the next column goes on."""
    started = time.perf_counter()
    by_name = {m.name: m for m in table.metrics}
    for key in table.columns:
        system = ctx.systems.get(key)
        t0 = time.perf_counter()
        try:
            if system is None or not os.path.exists(system.python):
                raise Failed(f"no python for {key}")
            got = measure(ctx, key)
        except NotApplicable:
            got = None
        except Failed as exc:
            got = {name: f"error: {exc}" for name in by_name}
        except Exception as exc:  # noqa: BLE001 - a broken system must not stop the run
            got = {name: f"error: {type(exc).__name__}: {exc}" for name in by_name}
        for name, metric in by_name.items():
            metric.values[key] = None if got is None else got.get(name)
        for name, value in (got or {}).items():
            if name.startswith("_"):  # detail for the JSON record only
                table.raw.setdefault(key, {})[name[1:]] = value
        ctx.log(f"{table.key}/{key}: {time.perf_counter() - t0:.1f} s")
    table.seconds = time.perf_counter() - started
    return table


def fmt_value(value, unit: str) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return "error"
    if unit == "x":
        return f"{value:.2f}"
    if unit in ("us", "µs"):
        return f"{value:.2f} µs" if value < 10 else f"{value:.1f} µs" if value < 100 else f"{value:.0f} µs"
    if unit == "ms":
        return f"{value:.2f} ms" if value < 10 else f"{value:.1f} ms"
    if unit == "s":
        return f"{value:.4f} s" if value < 0.1 else f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "B":
        return f"{value:,.0f} B"
    if unit == "MiB":
        return f"{value:+.1f} MiB"
    if unit == "/s":
        return f"{value:,.0f}/s"
    return f"{value:.3g} {unit}"


def fmt_ratio(r: float) -> str:
    if r == 0:
        return "0x"
    return f"{r:.2f}x" if abs(r) >= 0.1 else f"{r:.3f}x" if abs(r) >= 0.01 else f"{r:.4f}x"


def fmt_goal(goal, unit: str) -> str:
    if goal is None:
        return ""
    op, target = goal
    sym = "≤" if op == "<=" else "≥"
    text = fmt_value(target, unit)
    return f"{sym} {text.lstrip('+')}"


def render(table: Table, labels: Dict[str, str]) -> str:
    """The table as text: a column per system, ours first with the goal
    beside it (a figure that misses its goal is marked ✗), then for each
    figure its ratio to devstash 0.1.1 on the line below."""
    head = ["", labels.get("ours", "ours"), "goal"] + [labels.get(k, k) for k in table.columns[1:]]
    rows = [head]
    for m in table.metrics:
        cells = [f"{m.name}"]
        for i, key in enumerate(table.columns):
            v = m.values.get(key)
            text = "" if v is None and key.startswith("floor_") else fmt_value(v, m.unit)
            if key == "ours":
                ok = m.meets_goal()
                text += "  ✗" if ok is False else "  ✓" if ok else ""
                cells.append(text)
                cells.append(fmt_goal(m.goal, m.unit))
            else:
                cells.append(text)
        rows.append(cells)
        base = m.values.get(m.ratio_base)
        if m.ratio and isinstance(base, (int, float)) and base and m.unit not in ("MiB",):
            ratio = ["  × " + ("0.1.1" if m.ratio_base == "devstash011" else labels.get(m.ratio_base, m.ratio_base))]
            for key in table.columns:
                v = m.values.get(key)
                r = fmt_ratio(v / base) if isinstance(v, (int, float)) else ""
                ratio.append(r)
                if key == "ours":
                    ratio.append("")
            rows.append(ratio)
    widths = [max(_width(r[i]) for r in rows) for i in range(len(head))]
    lines = [f"== {table.title}"]
    for j, r in enumerate(rows):
        parts = [_pad(r[0], widths[0], left=True)] + [_pad(c, w) for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(parts).rstrip())
        if j == 0:
            lines.append("-" * len(lines[-1]))
    errors = [(labels.get(k, k), m.name, v) for m in table.metrics for k, v in m.values.items()
              if isinstance(v, str)]
    seen = set()
    for who, name, v in errors:
        if (who, v) not in seen:
            seen.add((who, v))
            lines.append(f"   {who}: {v}")
    for note in table.notes:
        lines.append(f"   note: {note}")
    return "\n".join(lines)


def _width(s: str) -> int:
    return len(s)


def _pad(s: str, w: int, left: bool = False) -> str:
    return s.ljust(w) if left else s.rjust(w)


def to_json(table: Table) -> dict:
    return {
        "title": table.title,
        "seconds": round(table.seconds, 1),
        "notes": table.notes,
        "raw": table.raw,
        "metrics": [
            {
                "name": m.name,
                "unit": m.unit,
                "goal": list(m.goal) if m.goal else None,
                "meets_goal": m.meets_goal(),
                "expected_devstash011": m.expected_011,
                "ratio_base": m.ratio_base,
                "values": {k: (_round(v) if isinstance(v, float) else v) for k, v in m.values.items()},
                "note": m.note,
            }
            for m in table.metrics
        ],
    }


def _round(v: float) -> float:
    if v == 0 or not math.isfinite(v):
        return v
    return round(v, max(0, 4 - int(math.floor(math.log10(abs(v))))))


def best(values) -> float:
    return min(values)


def median(values) -> float:
    return statistics.median(values)
