"""Stash records: 100,000 instances of 3 fields (int, str, bool), against
every other way to hold them.

Each system runs one child process with its own Python (recordclass and
stash-memory from the peers venv, the rest with ours) that defines
`R(uid: int, name: str, active: bool)` its way and measures, in this order:
* sys.getsizeof of one instance;
* traced memory per instance: tracemalloc around building 100,000
  instances into a preallocated list (`R(i, NAMES[i % 100], i % 2 == 0)`:
  distinct ints, 100 shared strs), values and the list's slot included;
* attribute read: `o.uid; o.name; o.active` unrolled, timeit, per read;
* construction: `R(uid, name, active)` positional, timeit, per call;
* pickle bytes per record of the 100,000 in a list (protocol 5);
timings as the median of 9 repeats in each of 3 rounds over all the systems
(their order reversed every other round: the machine drifts), with their
spread (min–max).
Ours is measured plain and with compact=True (the "compact" rows).

Round trip: `records = build(1_000_000)  # @devstash` in a script run twice
(store, then load on a hit); the line's time minus build() in the first
run, plus the line in the second; median of 3 pairs. Systems with devstash
only (ours' venv): ours, dataclass(slots=True), __slots__, namedtuple, a
regular class.

The seed's benchmark (stash-memory's README): 10,000 instances, the
tracemalloc total (snapshot sum) and per instance, sys.getsizeof and
pympler's asizeof deep size of one instance; regular class against Stash
(and every other column).
"""
import glob
import os

from _harness import (HEADER_MARKER, REPORT, Failed, Metric, System, Table, measure_columns, median, run_script,
                      write_script)

KEY = "stash"
TITLE = "Stash records: 100,000 instances of (int, str, bool)"
COLUMNS = ["ours", "recordclass", "stash_memory", "slots", "dataclass_slots", "namedtuple", "regular"]
PEER = {"recordclass", "stash_memory"}  # run with the peers venv's Python
TRIP = {"ours", "slots", "dataclass_slots", "namedtuple", "regular"}  # need devstash

DEFINE = {
    "ours": """
from devstash import Stash
@Stash
class R:
    uid: int
    name: str
    active: bool
""",
    "ours_compact": """
from devstash import Stash
@Stash(compact=True)
class R:
    uid: int
    name: str
    active: bool
""",
    "recordclass": """
from recordclass import dataobject
class R(dataobject):
    uid: int
    name: str
    active: bool
""",
    "stash_memory": """
from stash import Stash  # stash-memory 0.0.1: @Stash bare raises TypeError
@Stash()
class R:
    uid: int
    name: str
    active: bool
""",
    "slots": """
class R:
    __slots__ = ("uid", "name", "active")
    def __init__(self, uid, name, active):
        self.uid = uid
        self.name = name
        self.active = active
""",
    "dataclass_slots": """
from dataclasses import dataclass
@dataclass(slots=True)
class R:
    uid: int
    name: str
    active: bool
""",
    "namedtuple": """
from collections import namedtuple
R = namedtuple("R", "uid name active")
""",
    "regular": """
class R:
    def __init__(self, uid, name, active):
        self.uid = uid
        self.name = name
        self.active = active
""",
}

MEASURE = """
import pickle, statistics, sys, timeit, tracemalloc
sys.path.append(sys.argv[1])  # pympler, from the peers venv when not here
NAMES = ["".join(["name", str(k)]) for k in range(100)]

def build(n):
    out = [None] * n
    for i in range(n):
        out[i] = R(i, NAMES[i % 100], i % 2 == 0)
    return out

def timed(stmt, per, number):
    runs = timeit.repeat(stmt, globals={"R": R, "o": R(12345, "name7", True), "u": 12345,
                                        "s": NAMES[7], "b": True}, repeat=9, number=number)
    return sorted(t / number / per * 1e9 for t in runs)

out = {"getsizeof": sys.getsizeof(R(12345, NAMES[7], True))}
# the seed's benchmark: 10,000 instances
tracemalloc.start()
seed = build(10_000)
total = sum(stat.size for stat in tracemalloc.take_snapshot().statistics("filename"))
tracemalloc.stop()
out["seed_total"] = total / 2**20
out["seed_avg"] = total / 10_000
from pympler.asizeof import asizeof
out["seed_deep"] = asizeof(seed[1234])
del seed
tracemalloc.start()
before = tracemalloc.get_traced_memory()[0]
rows = build(100_000)
out["traced"] = (tracemalloc.get_traced_memory()[0] - before) / 100_000
tracemalloc.stop()
out["pickle"] = len(pickle.dumps(rows, protocol=5)) / len(rows)
assert pickle.loads(pickle.dumps(rows[:100], protocol=5))[7].name == rows[7].name
del rows
out["read"] = timed("o.uid; o.name; o.active; " * 10, 30, 100_000)
out["construct"] = timed("R(u, s, b)", 1, 100_000)
report(**out)
"""

TRIP_SCRIPT = """
import sys, time
N = 1_000_000
NAMES = ["".join(["name", str(k)]) for k in range(100)]
BUILD = 0.0

def build(n):
    global BUILD
    t = time.perf_counter()
    out = [R(i, NAMES[i % 100], i % 2 == 0) for i in range(n)]
    BUILD = time.perf_counter() - t
    return out

t0 = time.perf_counter()
records = build(N)  # @devstash
line = time.perf_counter() - t0
ok = len(records) == N and records[-1].uid == N - 1 and records[5].name == "name5"
report(line=line, build=BUILD, ok=ok)
"""

SIZE, SIZE_C = "sys.getsizeof", "sys.getsizeof, compact=True"
TRACED, TRACED_C = "traced per instance", "traced per instance, compact=True"
READ, READ_C = "attribute read", "attribute read, compact=True"
CONSTRUCT, CONSTRUCT_C = "construction", "construction, compact=True"
PICKLE = "pickle per record"
TRIP_S, TRIP_X = "1M records through a marked line", "  speed-up over dataclass(slots=True)"
SEED_TOTAL, SEED_AVG = "seed: tracemalloc total, 10,000", "seed: tracemalloc per instance"
SEED_SIZE, SEED_DEEP = "seed: sys.getsizeof", "seed: pympler asizeof (deep)"


def peers_site(ctx) -> str:
    found = glob.glob(os.path.join(os.path.dirname(os.path.dirname(ctx.py("joblib"))), "lib", "python*",
                                   "site-packages"))
    return found[0] if found else ""


def child(ctx, key, variant):
    folder = ctx.workdir(f"stash-{variant}")
    path = write_script(folder, "import sys\n" + REPORT + DEFINE[variant] + MEASURE)
    d = run_script(ctx.py(key), path, folder, args=[peers_site(ctx)], timeout=600).data
    ctx.log(f"stash/{variant}: {d}")
    return d


def spread(times) -> str:
    return f"{median(times):.1f} ({times[0]:.1f}–{times[-1]:.1f})"


def round_trip(ctx, key) -> float:
    """Median over 3 fresh caches of (store: line - build) + (load: line)."""
    totals = []
    for attempt in range(2 if ctx.quick else 3):
        folder = ctx.workdir(f"stash-trip-{key}-{attempt}")
        path = write_script(folder, "import sys\n" + HEADER_MARKER + REPORT + DEFINE[key] + TRIP_SCRIPT)
        first = run_script(ctx.py(key), path, folder, timeout=600).data
        second = run_script(ctx.py(key), path, folder, timeout=600).data
        if not (first["ok"] and second["ok"]):
            raise Failed("wrong records")
        if second["build"]:
            raise Failed("not cached: build() ran on the second run")
        totals.append(first["line"] - first["build"] + second["line"])
    ctx.log(f"stash/trip/{key}: {[round(t, 3) for t in totals]}")
    return median(totals)


def measure_rounds(ctx) -> dict:
    """Every variant's child, in rounds that alternate their order (the
    machine drifts); per variant the first run's sizes and the timings of
    all rounds pooled, or the Failed that stopped it."""
    variants = [(key, key) for key in COLUMNS] + [("ours", "ours_compact")]
    runs = {variant: [] for _, variant in variants}
    for number in range(1 if ctx.quick else 3):
        for key, variant in (variants if number % 2 == 0 else variants[::-1]):
            if isinstance(runs[variant], Exception):
                continue
            try:
                runs[variant].append(child(ctx, key, variant))
            except Failed as exc:
                runs[variant] = exc
    pooled = {}
    for variant, got in runs.items():
        if isinstance(got, Exception):
            pooled[variant] = got
            continue
        pooled[variant] = dict(got[0], read=sorted(t for d in got for t in d["read"]),
                               construct=sorted(t for d in got for t in d["construct"]))
    return pooled


def measure(ctx, key, pooled):
    d = pooled[key]
    if isinstance(d, Exception):
        raise d
    out = {SIZE: d["getsizeof"], TRACED: d["traced"], READ: median(d["read"]),
           CONSTRUCT: median(d["construct"]), PICKLE: d["pickle"],
           SEED_TOTAL: d["seed_total"], SEED_AVG: d["seed_avg"], SEED_SIZE: d["getsizeof"],
           SEED_DEEP: d["seed_deep"], "_read_ns": d["read"], "_construct_ns": d["construct"]}
    c = pooled["ours_compact"]
    if key == "ours" and not isinstance(c, Exception):
        out.update({SIZE_C: c["getsizeof"], TRACED_C: c["traced"], READ_C: median(c["read"]),
                    CONSTRUCT_C: median(c["construct"]), "_compact_read_ns": c["read"],
                    "_compact_construct_ns": c["construct"]})
    if key in TRIP:
        try:
            out[TRIP_S] = round_trip(ctx, key)
        except Failed as exc:
            out[TRIP_S] = f"error: {exc}"
    return out


def run(ctx) -> Table:
    for key in COLUMNS[1:]:
        python = ctx.py("joblib") if key in PEER else ctx.py("ours")
        ctx.systems.setdefault(key, System(key, key, python, "peer"))
    table = Table(KEY, TITLE, COLUMNS, [
        Metric(SIZE, "B", goal=("<=", 40), ratio_base="recordclass"),
        Metric(SIZE_C, "B", goal=("<=", 40), ratio=False),
        Metric(TRACED, "B", ratio_base="recordclass"),
        Metric(TRACED_C, "B", goal=("<=", 48), ratio=False),
        Metric(READ, "ns", ratio_base="slots"),
        Metric(READ_C, "ns", ratio=False),
        Metric(CONSTRUCT, "ns", ratio_base="recordclass"),
        Metric(CONSTRUCT_C, "ns", ratio=False),
        Metric(PICKLE, "B", ratio_base="recordclass"),
        Metric(TRIP_S, "s", ratio_base="dataclass_slots"),
        Metric(TRIP_X, "x", goal=(">=", 2.0), ratio=False),
        Metric(SEED_TOTAL, "MiB total", ratio=False),
        Metric(SEED_AVG, "B", ratio_base="regular"),
        Metric(SEED_SIZE, "B", ratio_base="regular"),
        Metric(SEED_DEEP, "B", ratio_base="regular"),
    ], notes=["× X: the figure over that column's (the anchor of each goal); timings: median of 9 repeats "
              "in each of 3 rounds of the systems (1 in quick mode), their order reversed every other round",
              "round trip: store (the line's time minus build()) plus load on a hit, median of 3 pairs of "
              "runs; recordclass and stash-memory live in the peers venv, which has no devstash: n/a"])
    pooled = measure_rounds(ctx)
    measure_columns(ctx, table, lambda ctx, key: measure(ctx, key, pooled))
    by_name = {m.name: m for m in table.metrics}
    # goals relative to the anchors, measured in the same run
    for name, anchor in ((TRACED, "recordclass"), (READ, "slots"), (CONSTRUCT, "recordclass"),
                         (PICKLE, "recordclass")):
        value = by_name[name].values.get(anchor)
        if isinstance(value, (int, float)):
            by_name[name].goal = ("<=", value)
    base = by_name[TRIP_S].values.get("dataclass_slots")
    for key in COLUMNS:
        v = by_name[TRIP_S].values.get(key)
        by_name[TRIP_X].values[key] = base / v if isinstance(v, float) and isinstance(base, float) else None
    for name, raw in ((READ, "read_ns"), (CONSTRUCT, "construct_ns")):
        cells = [f"{key} {spread(table.raw[key][raw])}" for key in COLUMNS if raw in table.raw.get(key, {})]
        table.notes.append(f"{name}, ns, median (min–max): " + ", ".join(cells))
    compact = table.raw.get("ours", {})
    if "compact_read_ns" in compact:
        table.notes.append(f"compact=True, ns, median (min–max): read {spread(compact['compact_read_ns'])}, "
                           f"construction {spread(compact['compact_construct_ns'])}")
    return table
