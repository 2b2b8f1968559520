"""A marked line whose outermost call is a built-in effect (`print`, a
container's mutator such as `list.append`) caches the costly calls in its
arguments, and the effect itself runs on every run. Scripts run as users run
them, two and three times; the assertions are on what the program holds and
prints, and on a log the costly function appends to each time it really runs."""
import json
import os
import subprocess
import sys

from conftest import line_of

from devstash import _core

HEADER = """
import devstash
devstash.activate()

def log(*what):
    with open("ran.log", "a") as f:
        f.write(" ".join(map(str, what)) + "\\n")

def fetch(x):
    log("fetch", x)
    return x * 2

def slow(x):
    log("slow", x)
    return x * 10
"""


def ran(scripts):
    """What fetch and slow logged, one line per real run of one of them."""
    path = scripts.folder / "ran.log"
    lines = path.read_text().splitlines() if path.exists() else []
    path.unlink(missing_ok=True)
    return lines


def output(proc):
    return proc.stdout.splitlines()


def test_append_in_a_loop_keeps_every_item_on_every_run(scripts):
    scripts.write("script.py", HEADER + """
results = []
for x in [1, 2]:
    results.append(fetch(x))  # @devstash
print(results)
""")
    assert output(scripts.run()) == ["[2, 4]"]
    assert ran(scripts) == ["fetch 1", "fetch 2"]
    for _ in range(2):   # runs 2 and 3: nothing lost, fetch never runs
        assert output(scripts.run()) == ["[2, 4]"]
        assert ran(scripts) == []


def test_print_of_an_fstring_prints_on_every_run(scripts):
    scripts.write("script.py", HEADER + """
print(f"value: {slow(2)}")  # @devstash
print("end")
""")
    assert output(scripts.run()) == ["value: 20", "end"]
    assert ran(scripts) == ["slow 2"]
    for _ in range(2):
        assert output(scripts.run()) == ["value: 20", "end"]
        assert ran(scripts) == []


def test_every_call_argument_gets_its_own_entry(scripts):
    """Positional, keyword, starred and f-string arguments are each cached on
    their own: a change to one argument recomputes that call only."""
    scripts.write("script.py", HEADER + """
import sys
n = int(sys.argv[1])
def rows(k):
    log("rows", k)
    return [k, k + 1]
def joiner(c):
    log("joiner", c)
    return c
print(slow(1), f"<{fetch(n)!r:>4}|{slow(n) + 1}>", *rows(3), sep=joiner(","))  # @devstash
""")
    expected = {"2": ["10,<   4|21>,3,4"], "3": ["10,<   6|31>,3,4"]}
    assert output(scripts.run("script.py", "2")) == expected["2"]
    assert sorted(ran(scripts)) == ["fetch 2", "joiner ,", "rows 3", "slow 1", "slow 2"]
    assert output(scripts.run("script.py", "3")) == expected["3"]
    assert sorted(ran(scripts)) == ["fetch 3", "slow 3"]   # only the calls that read n
    for argv in ("2", "3", "2"):
        assert output(scripts.run("script.py", argv)) == expected[argv]
        assert ran(scripts) == []


def test_container_mutators_run_on_every_run(scripts):
    scripts.write("script.py", HEADER + """
from collections import deque
items, table, seen, queue = [0], {}, {300, 5}, deque([0])
for x in [1, 2]:
    items.append(fetch(x))  # @devstash
    items.extend([fetch(x + 10), 7])  # @devstash
    items.insert(0, fetch(x + 20))  # @devstash
    table.update(fetch(x + 30) and {x: fetch(x + 30)})  # @devstash
    table.update(last=fetch(x + 40))  # @devstash
    table.setdefault("first", fetch(x + 50))  # @devstash
    seen.add(fetch(x + 60))  # @devstash
    seen.update({fetch(x + 70)}, [fetch(x + 80)])  # @devstash
    seen.discard(fetch(x + 149))  # @devstash
    queue.append(fetch(x + 90))  # @devstash
    queue.appendleft(fetch(x + 100))  # @devstash
    queue.extend([fetch(x + 110)])  # @devstash
    queue.extendleft(fetch(y) for y in [x + 120])  # @devstash
print(items)
print(sorted(table.items(), key=str))
print(sorted(seen))
print(list(queue))
""")
    expected = [
        "[44, 42, 0, 2, 22, 7, 4, 24, 7]",
        "[('first', 102), ('last', 84), (1, 62), (2, 64)]",
        "[5, 122, 124, 142, 144, 162, 164]",
        "[244, 204, 242, 202, 0, 182, 222, 184, 224]",
    ]
    assert output(scripts.run()) == expected
    first = ran(scripts)
    assert len(first) == 30 and "fetch 1" in first and "fetch 121" in first
    for _ in range(2):
        assert output(scripts.run()) == expected
        assert ran(scripts) == []


def test_effect_in_a_function_and_on_a_multiline_statement(scripts):
    scripts.write("script.py", HEADER + """
class Report:
    def __init__(self):
        self.lines = []
    def build(self, xs):
        for x in xs:
            # @devstash
            self.lines.append(
                fetch(x),
            )
        return self.lines
print(Report().build([3, 4]))
print(
    "total",
    slow(5),
)  # @devstash
""")
    assert output(scripts.run()) == ["[6, 8]", "total 50"]
    assert ran(scripts) == ["fetch 3", "fetch 4", "slow 5"]
    for _ in range(2):
        assert output(scripts.run()) == ["[6, 8]", "total 50"]
        assert ran(scripts) == []


def test_awaited_call_inside_an_effect(scripts):
    scripts.write("script.py", HEADER + """
import asyncio
async def afetch(x):
    log("afetch", x)
    await asyncio.sleep(0)
    return x + 1
async def main():
    out = []
    for x in [1, 2]:
        out.append(await afetch(x))  # @devstash
    print(out)
asyncio.run(main())
""")
    assert output(scripts.run()) == ["[2, 3]"]
    assert ran(scripts) == ["afetch 1", "afetch 2"]
    assert output(scripts.run()) == ["[2, 3]"]
    assert ran(scripts) == []


def test_options_apply_to_the_inner_calls(scripts):
    scripts.write("script.py", HEADER + """
print(slow(1))  # @devstash refresh
""")
    for _ in range(2):
        assert output(scripts.run()) == ["10"]
        assert ran(scripts) == ["slow 1"]


def test_warning_names_the_inner_call(scripts):
    path = scripts.write("script.py", HEADER + """
import threading
def make_lock(x):
    log("make_lock", x)
    return threading.Lock()
locks = []
locks.append(make_lock(1))  # @devstash
print(len(locks))
""")
    line = line_of(path, "locks.append(")
    for _ in range(2):   # not picklable: never stored, so it runs every time
        proc = scripts.run()
        assert output(proc) == ["1"]
        assert ran(scripts) == ["make_lock 1"]
        assert f"script.py:{line}: make_lock(1): result cannot be pickled" in proc.stderr


def test_a_miss_is_explained_against_the_same_inner_call(scripts):
    """Each cached call of an effect keeps the parts of its own last key, so
    a miss says what changed for that call, not against its neighbour's."""
    path = scripts.write("script.py", HEADER + """
import sys
n = int(sys.argv[1])
print(slow(n), fetch(2), sep=",")  # @devstash
""")
    line = line_of(path, "print(slow(n)")
    assert output(scripts.run("script.py", "1")) == ["10,4"]
    proc = scripts.run("script.py", "2", env={"DEVSTASH_LOG": "info"})
    assert output(proc) == ["20,4"]
    assert f"miss script.py:{line}: slow(n) (argument 1 changed)" in proc.stderr
    assert f"hit script.py:{line}: fetch(2)" in proc.stderr


def test_status_line_counts_marked_lines_not_cached_calls(scripts):
    scripts.write("script.py", HEADER + """
print(slow(1), slow(2), slow(3))  # @devstash
""")
    proc = scripts.run(env={"DEVSTASH_QUIET": None})
    assert "devstash: caching 1 marked line of script.py" in proc.stderr
    assert "0 hits, 3 misses, 3 stored" in proc.stderr
    proc = scripts.run(env={"DEVSTASH_QUIET": None})
    assert output(proc) == ["10 20 30"]
    assert "3 hits, 0 misses, 0 stored" in proc.stderr


def sites_of(body):
    source = ("import devstash\ndevstash.activate()\n" + body).encode()
    return [site[4:6] for site in _core.rewrite(source, "s.py")[1]]   # (kind, label)


def test_sites_of_effects():
    """The rule, on the sites the rewriter returns (kind, label): one per
    argument that holds a call, labelled with that argument's text."""
    assert sites_of("r.append(fetch(x))  # @devstash\n") == [("call", "fetch(x)")]
    assert sites_of("print(f'{a} {slow(2)!r} {g(1) + 1}', end=h())  # @devstash\n") == [
        ("call", "slow(2)"), ("expr", "g(1) + 1"), ("call", "h()")]
    assert sites_of("d.setdefault(k, get(u).json()['x'])  # @devstash\n") == [
        ("chain", "get(u).json()['x']")]
    assert sites_of("r.extend([f(i) for i in v], *more(), **opts())  # @devstash\n") == [
        ("expr", "[f(i) for i in v]"), ("call", "more()"), ("call", "opts()")]
    # a lambda argument is not called there: it is no costly call
    assert sites_of("s.add(lambda: f(1), slow(2))  # @devstash\n") == [("call", "slow(2)")]
    # no call in the arguments: the whole line is cached, as for any call
    assert sites_of("r.append(x)  # @devstash\n") == [("call", "r.append(x)")]
    assert sites_of("print(f'{x}')  # @devstash\n") == [("call", "print(f'{x}')")]
    # other outermost calls, and effects whose value is assigned: as before
    assert sites_of("r.sort(key=f(1))  # @devstash\n") == [("call", "r.sort(key=f(1))")]
    assert sites_of("n = r.append(f(1))  # @devstash\n") == [("call", "n = r.append(f(1))")]


def cli_listing(folder):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVSTASH_")}
    proc = subprocess.run([sys.executable, "-m", "devstash", "list", "--json"], cwd=folder,
                          env=env, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(proc.stdout)


def test_assigned_expression_is_listed_by_its_name(scripts):
    path = scripts.write("script.py", HEADER + """
v = [1, 2, 3]
squares = [x * x for x in v]  # @devstash
total: int = squares[0] + squares[-1]  # @devstash
[x + 1 for x in v]  # @devstash
print(squares, total)
""")
    assert output(scripts.run()) == ["[1, 4, 9] 10"]
    callees = {e["line"]: e["callee"] for e in cli_listing(scripts.folder)}
    assert callees == {line_of(path, "squares = "): "squares", line_of(path, "total: int"): "total",
                       line_of(path, "[x + 1 for"): ""}
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVSTASH_")}
    table = subprocess.run([sys.executable, "-m", "devstash", "list"], cwd=scripts.folder,
                           env=env, capture_output=True, text=True, timeout=120, check=True).stdout
    assert " squares " in table and " total " in table and "(expression)" in table
    assert output(scripts.run()) == ["[1, 4, 9] 10"]   # the same entries are hit
