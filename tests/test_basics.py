"""The quickstart promise, end to end: a marked line computes on the first
run and loads on the next, through real scripts run twice."""
import os
import stat

import pytest
from conftest import line_of

HEADER = """
import devstash
devstash.activate()
"""


def lines(proc):
    return proc.stdout.splitlines()


def test_assignment_is_computed_once_then_loaded(scripts):
    scripts.write("script.py", HEADER + """
def slow(x):
    print("computing", x)
    return x * 2

val = slow(10)  # @devstash
print("val", val)
""")
    first = scripts.run()
    assert lines(first) == ["computing 10", "val 20"]
    second = scripts.run()
    assert lines(second) == ["val 20"]
    assert (scripts.folder / ".devstash_cache" / "data.mdb").is_file()


def test_bare_call_statement_is_cached(scripts):
    scripts.write("script.py", HEADER + """
def side_effect(x):
    print("ran", x)
    return x

side_effect(3)  # @devstash
print("done")
""")
    assert lines(scripts.run()) == ["ran 3", "done"]
    assert lines(scripts.run()) == ["done"]


def test_marker_on_its_own_line_applies_to_the_next_line(scripts):
    scripts.write("script.py", HEADER + """
def slow(x):
    print("computing", x)
    return [x, x]

# @devstash
pair = slow(4)
print(pair)
""")
    assert lines(scripts.run()) == ["computing 4", "[4, 4]"]
    assert lines(scripts.run()) == ["[4, 4]"]


def test_arguments_key_separate_entries(scripts):
    scripts.write("script.py", HEADER + """
import sys
def add(a, b=0):
    print("add", a, b)
    return a + b

args = [int(x) for x in sys.argv[1:]]
r = add(args[0], b=args[1])  # @devstash
print("result", r)
""")
    assert lines(scripts.run("script.py", "1", "2")) == ["add 1 2", "result 3"]
    assert lines(scripts.run("script.py", "2", "3")) == ["add 2 3", "result 5"]
    assert lines(scripts.run("script.py", "1", "2")) == ["result 3"]
    assert lines(scripts.run("script.py", "2", "3")) == ["result 5"]


def test_positional_and_tuple_arguments_do_not_collide(scripts):
    scripts.write("script.py", HEADER + """
def f(*args):
    print("called", args)
    return repr(args)

a = f(1, 2)  # @devstash
b = f((1, 2))  # @devstash
c = f(1, (2,))  # @devstash
print(a, b, c)
""")
    first = lines(scripts.run())
    assert first[-1] == "(1, 2) ((1, 2),) (1, (2,))"
    assert len([l for l in first if l.startswith("called")]) == 3
    assert lines(scripts.run()) == ["(1, 2) ((1, 2),) (1, (2,))"]


def test_cache_dir_environment_variable_moves_the_store(scripts, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    scripts.write("script.py", HEADER + """
def slow():
    print("computing")
    return 1
v = slow()  # @devstash
""")
    env = {"DEVSTASH_CACHE_DIR": str(elsewhere)}
    assert lines(scripts.run(env=env)) == ["computing"]
    assert lines(scripts.run(env=env)) == []
    assert (elsewhere / "data.mdb").is_file()
    assert not (scripts.folder / ".devstash_cache").exists()


def test_cache_folder_is_private_to_its_owner(scripts):
    scripts.write("script.py", HEADER + """
v = len("abc")  # @devstash
""")
    scripts.run()
    mode = stat.S_IMODE(os.stat(scripts.folder / ".devstash_cache").st_mode)
    assert mode == 0o700


@pytest.mark.parametrize("value", ["1", "true", "yes", "TRUE"])
def test_skip_rewrite_runs_the_script_untouched(scripts, value):
    scripts.write("script.py", HEADER + """
def slow():
    print("computing")
    return 1
v = slow()  # @devstash
""")
    env = {"DEVSTASH_SKIP_REWRITE": value}
    assert lines(scripts.run(env=env)) == ["computing"]
    assert lines(scripts.run(env=env)) == ["computing"]
    assert not (scripts.folder / ".devstash_cache").exists()


def test_ttl_expiry_recomputes_and_replaces(scripts):
    # The entry's creation time is what TTL is checked against: age it by
    # rewriting the stored value through the Store API rather than sleeping.
    scripts.write("script.py", HEADER + """
import time
def now():
    print("computing")
    return time.time()
t = now()  # @devstash ttl=30m
print("t", t)
""")
    first = lines(scripts.run())
    assert first[0] == "computing"
    t1 = first[1]
    assert lines(scripts.run()) == [t1]
    age_entries(scripts.folder / ".devstash_cache", seconds=31 * 60)
    third = lines(scripts.run())
    assert third[0] == "computing" and third[1] != t1
    assert lines(scripts.run()) == [third[1]]


def age_entries(cache, seconds):
    """Moves every entry's creation time back by `seconds`."""
    from devstash import _core

    with _core.Store(str(cache)) as store:
        for entry in store.entries():
            created, data, buffers = store.get(entry["key"])
            store.put(entry["key"], data, buffers, created=created - seconds,
                      ttl=entry["ttl"], callee=entry["callee"], site=entry["site"])


def test_ttl_not_yet_expired_is_a_hit(scripts):
    scripts.write("script.py", HEADER + """
import time
def now():
    print("computing")
    return 5
t = now()  # @devstash ttl=1h30m
""")
    assert lines(scripts.run()) == ["computing"]
    age_entries(scripts.folder / ".devstash_cache", seconds=60 * 60)
    assert lines(scripts.run()) == []


@pytest.mark.parametrize("bad", ["soon", "5x", "1.5h", ""])
def test_invalid_ttl_stops_the_script_at_activate(scripts, bad):
    scripts.write("script.py", f"""
print("before")
import devstash
devstash.activate()
print("after")
v = len("x")  # @devstash ttl={bad}
""")
    proc = scripts.run(check=False)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == ["before"]
    err = proc.stderr
    assert "script.py" in err and "line 5" in err
    assert f"ttl={bad}" in err
    assert "s, m, h, d, w" in err


def test_unpicklable_result_warns_once_and_returns_the_real_value(scripts):
    path = scripts.write("script.py", HEADER + """
import threading
def make():
    print("making")
    return threading.Lock()
for i in range(3):
    lock = make()  # @devstash
    print(type(lock).__name__)
""")
    for _ in range(2):
        proc = scripts.run()
        assert lines(proc) == ["making", "lock"] * 3
        assert proc.stderr.count("cannot be pickled") == 1
        assert f"script.py:{line_of(path, 'lock = make()')}: lock = make()" in proc.stderr


def test_exception_in_marked_call_reaches_user_code_and_nothing_is_stored(scripts):
    scripts.write("script.py", HEADER + """
class Boom(Exception):
    pass
def fail(x):
    print("calling")
    raise Boom(x)
try:
    v = fail(7)  # @devstash
except Boom as e:
    print("caught", e.args)
""")
    assert lines(scripts.run()) == ["calling", "caught (7,)"]
    assert lines(scripts.run()) == ["calling", "caught (7,)"]


def test_unwritable_cache_folder_warns_and_runs_uncached(scripts):
    if os.geteuid() == 0:
        # root ignores permissions: block the folder with a file instead
        (scripts.folder / ".devstash_cache").write_text("not a folder")
    else:
        (scripts.folder / ".devstash_cache").mkdir(mode=0o500)
    scripts.write("script.py", HEADER + """
def slow():
    print("computing")
    return 1
v = slow()  # @devstash
print("v", v)
""")
    for _ in range(2):
        proc = scripts.run()
        assert lines(proc) == ["computing", "v 1"]
        assert proc.stderr.count("running uncached") == 1
        assert ".devstash_cache" in proc.stderr


def test_stored_value_decodes_to_the_result(scripts):
    path = scripts.write("script.py", HEADER + """
def slow():
    return {"a": [1, 2, 3]}
v = slow()  # @devstash
""")
    scripts.run()
    from devstash import _core
    from devstash._runtime import decode_value

    with _core.Store(str(scripts.folder / ".devstash_cache")) as store:
        entries = store.entries()
        assert len(entries) == 1
        created, data, buffers = store.get(entries[0]["key"])
        assert decode_value(data, buffers) == {"a": [1, 2, 3]}
        assert entries[0]["callee"] == "__main__.slow"
        assert entries[0]["site"] == f"{path}:{line_of(path, 'v = slow()')}"


def test_script_without_markers_is_not_rewritten(scripts):
    scripts.write("script.py", HEADER + """
import sys
print(sys._getframe().f_code.co_name, "# @devstash in a string is no marker")
""")
    proc = scripts.run()
    assert lines(proc) == ["<module> # @devstash in a string is no marker"]
    assert not (scripts.folder / ".devstash_cache").exists()


def test_custom_objects_are_stored_as_protocol_5_pickles(scripts):
    scripts.write("script.py", HEADER + """
import fractions
def make():
    return fractions.Fraction(1, 3)
v = make()  # @devstash
""")
    scripts.run()
    import pickle
    import pickletools
    from devstash import _core

    with _core.Store(str(scripts.folder / ".devstash_cache")) as store:
        (entry,) = store.entries()
        created, data, buffers = store.get(entry["key"])
    first_opcode, protocol, _pos = next(pickletools.genops(data))
    assert first_opcode.name == "PROTO" and protocol == 5
    assert str(pickle.loads(data)) == "1/3"


def test_large_array_result_round_trips_writable(scripts):
    pytest.importorskip("numpy")
    scripts.write("script.py", HEADER + """
import numpy as np
def make(n):
    print("computing")
    return np.arange(n, dtype=np.float32).reshape(-1, 1000)
a = make(4_000_000)  # @devstash
a[0, 0] = -1.0
print(a.shape, a.dtype, a.flags.writeable, float(a[1:].sum()), a[0, 0])
""")
    first = scripts.run().stdout.splitlines()
    assert first[0] == "computing"
    assert scripts.run().stdout.splitlines() == first[1:]
    assert first[1].startswith("(4000, 1000) float32 True")
