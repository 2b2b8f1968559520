"""Keys and the store as users meet them: across processes, hash seeds,
code edits, renamed classes, parallel runs and fork."""
import os
import subprocess
import sys
import time

HEADER = """
import devstash
devstash.activate()
"""


def computed(proc):
    return [l for l in proc.stdout.splitlines() if l.startswith("computing")]


def test_same_key_across_processes_and_hash_seeds(scripts):
    scripts.write("script.py", HEADER + """
def summarize(config, tags):
    print("computing")
    return sorted(config.items()), sorted(tags)
words = ["alpha", "beta", "gamma", "delta", "epsilon"]
config = {w: len(w) for w in words}
tags = frozenset(words)
r = summarize(config, tags=tags)  # @devstash
print(r[0][0])
""")
    first = scripts.run(env={"PYTHONHASHSEED": "1"})
    assert computed(first) == ["computing"]
    for seed in ("2", "3", "random"):
        again = scripts.run(env={"PYTHONHASHSEED": seed})
        assert computed(again) == [] and again.stdout.strip() == "('alpha', 5)"


def test_an_argument_keyed_by_type_only_runs_uncached_until_ignored(scripts):
    """A lock passed directly would be keyed by its type alone: the line
    runs uncached with one warning naming the argument, until the marker
    leaves it out with ignore=."""
    body = """
import sys, threading
def work(lock, n):
    print("computing", n)
    return n * 2
lock = threading.Lock()
v = work(lock, int(sys.argv[1]))  # @devstash{opts}
print(v)
"""
    scripts.write("script.py", HEADER + body.format(opts=""))
    for _ in range(2):
        run = scripts.run("script.py", "1")
        assert run.stdout.splitlines() == ["computing 1", "2"]
        assert run.stderr.count("argument 1 (lock): a _thread.lock can be keyed by its type only") == 1
        assert "runs uncached" in run.stderr
    scripts.write("script.py", HEADER + body.format(opts=" ignore=lock"))
    assert scripts.run("script.py", "1").stdout.splitlines() == ["computing 1", "2"]
    second = scripts.run("script.py", "2")
    assert second.stdout.splitlines() == ["computing 2", "4"]
    assert "lock" not in second.stderr
    assert scripts.run("script.py", "1").stdout.splitlines() == ["2"]


FUNC = """
def helper(x):
    return x + 1

def compute(x):
    print("computing")
    return helper(x) * 10
"""


def test_editing_the_function_recomputes_and_moving_it_does_not(scripts):
    body = "\nv = compute(1)  # @devstash\nprint(v)\n"
    scripts.write("script.py", HEADER + FUNC + body)
    assert computed(scripts.run()) == ["computing"]
    # moved down the file: same code, same key
    scripts.write("script.py", HEADER + "\n\n\n# a comment\n" + FUNC + body)
    moved = scripts.run()
    assert computed(moved) == [] and moved.stdout.strip() == "20"
    # the body edited: recomputed
    scripts.write("script.py", HEADER + FUNC.replace("* 10", "* 100") + body)
    edited = scripts.run()
    assert computed(edited) == ["computing"] and edited.stdout.splitlines()[-1] == "200"
    # a helper it calls by name edited: recomputed
    scripts.write("script.py", HEADER + FUNC.replace("* 10", "* 100").replace("x + 1", "x + 2") + body)
    helper_edited = scripts.run()
    assert computed(helper_edited) == ["computing"] and helper_edited.stdout.splitlines()[-1] == "300"


def test_nocode_keeps_paid_results_across_edits(scripts):
    body = "\nv = compute(1)  # @devstash nocode\nprint(v)\n"
    scripts.write("script.py", HEADER + FUNC + body)
    assert computed(scripts.run()) == ["computing"]
    scripts.write("script.py", HEADER + FUNC.replace("* 10", "* 100") + body)
    kept = scripts.run()
    assert computed(kept) == [] and kept.stdout.strip() == "20"


def test_entry_whose_class_is_gone_is_recomputed_with_one_warning(scripts):
    source = HEADER + """
class Result:
    def __init__(self, v):
        self.v = v
def make():
    print("computing")
    return Result(5)
r = make()  # @devstash nocode
print(type(r).__name__, r.v)
"""
    scripts.write("script.py", source)
    assert computed(scripts.run()) == ["computing"]
    # Rename the class: the stored pickle names __main__.Result, now missing.
    scripts.write("script.py", source.replace("Result", "Outcome"))
    proc = scripts.run()
    assert proc.stdout.splitlines() == ["computing", "Outcome 5"]
    assert proc.stderr.count("cannot be loaded") == 1
    assert scripts.run().stdout.splitlines() == ["Outcome 5"]


def test_two_processes_missing_the_same_key_compute_once(scripts):
    scripts.write("script.py", HEADER + """
import time
def slow():
    print("computing", flush=True)
    time.sleep(1.5)
    return 42
v = slow()  # @devstash
print("value", v)
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVSTASH_")}
    env["DEVSTASH_QUIET"] = "1"
    procs = []
    for _ in range(3):
        procs.append(subprocess.Popen([sys.executable, "script.py"], cwd=scripts.folder, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        time.sleep(0.2)
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    stdout = "".join(out for out, _ in outputs)
    assert stdout.count("computing") == 1
    assert stdout.count("value 42") == 3


def test_forked_child_uses_its_own_store_handles(scripts):
    scripts.write("script.py", HEADER + """
import os
def square(x):
    print("computing", x, flush=True)
    return x * x
a = square(2)  # @devstash
pid = os.fork()
if pid == 0:
    b = square(3)  # @devstash
    c = square(2)  # @devstash
    print("child", b, c, flush=True)
    os._exit(0)
os.waitpid(pid, 0)
d = square(3)  # @devstash
print("parent", a, d, flush=True)
""")
    first = scripts.run()
    assert first.stdout.splitlines() == ["computing 2", "computing 3", "child 9 4", "parent 4 9"]
    second = scripts.run()
    assert second.stdout.splitlines() == ["child 9 4", "parent 4 9"]


def test_killed_while_storing_leaves_a_readable_cache(scripts):
    import random
    import signal

    scripts.write("script.py", HEADER + """
import sys
def big(i):
    return bytes([i % 256]) * (1000 + i)
for i in range(100000):
    v = big(i)  # @devstash
    print(i, flush=True)
""")
    scripts.write("check.py", """
import sys
from devstash import _core
from devstash._runtime import decode_value
with _core.Store(".devstash_cache") as store:
    n = 0
    for entry in store.entries():
        got = store.get(entry["key"])
        if got is None:
            continue
        value = decode_value(got[1], got[2])
        i = len(value) - 1000
        assert value == bytes([i % 256]) * (1000 + i), i
        n += 1
print(n)
""")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVSTASH_")}
    env["DEVSTASH_QUIET"] = "1"
    rng = random.Random(7)
    for _ in range(5):
        proc = subprocess.Popen([sys.executable, "script.py"], cwd=scripts.folder, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        proc.stdout.readline()
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        count = int(scripts.run("check.py").stdout)
        assert count >= 1


def test_spawned_worker_and_parent_share_entries(scripts):
    scripts.write("script.py", HEADER + """
import multiprocessing as mp

def square(x):
    print("computing", x, flush=True)
    return x * x

def work(x):
    return square(x)  # @devstash

if __name__ == "__main__":
    with mp.get_context("spawn").Pool(1) as pool:
        print("worker", pool.apply(work, (3,)), flush=True)
    print("parent", work(3), flush=True)
""")
    first = scripts.run()
    assert first.stdout.splitlines() == ["computing 3", "worker 9", "parent 9"]
    assert scripts.run().stdout.splitlines() == ["worker 9", "parent 9"]


def test_values_that_pickle_but_do_not_load_back_stop_being_stored(scripts):
    """Recomputing, storing and warning on every run helps nobody: the second
    failure is remembered, with one warning, until the code changes."""
    source = HEADER + """
class Fragile:
    def __init__(self, v):
        self.v = v
    def __reduce__(self):
        return (Fragile._load, (self.v,))
    @staticmethod
    def _load(v):
        raise RuntimeError("cannot rebuild")
def make():
    print("computing")
    return Fragile(5)
r = make()  # @devstash
print(r.v)
"""
    scripts.write("script.py", source)
    assert computed(scripts.run()) == ["computing"]
    second = scripts.run()
    assert second.stdout.splitlines() == ["computing", "5"]
    assert second.stderr.count("cannot be loaded") == 1
    assert second.stderr.count("no longer stored") == 1
    for _ in range(2):
        later = scripts.run()
        assert later.stdout.splitlines() == ["computing", "5"]
        assert later.stderr == ""
    # Fixed code is stored again.
    scripts.write("script.py", source.replace('raise RuntimeError("cannot rebuild")', "return Fragile(v)")
                  .replace('print("computing")', 'print("computing", 2)'))
    assert computed(scripts.run()) == ["computing 2"]
    assert computed(scripts.run()) == []
