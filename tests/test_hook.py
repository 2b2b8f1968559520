"""Markers wherever the user's code runs, end to end: project modules through
the import hook, `devstash run` (script, -m module, -m pytest) and
multiprocessing workers. Every path runs twice in fresh processes: the second
run must print the same values without computing."""
import multiprocessing
import os

import pytest
from conftest import line_of

import devstash

MARKED_MODULE = """
import os

def slow(x):
    # one write per line: workers of a pool share the pipe
    os.write(1, f"computing {__name__} {x}\\n".encode())
    return x * 2

def work(x):
    return slow(x)  # @devstash
"""

PLAIN_MODULE = """
def double(x):
    print("computing plain", x, flush=True)
    return x * 2
"""

ACTIVATE = """
import devstash
devstash.activate()
"""


def computed(proc):
    return [l for l in proc.stdout.splitlines() if l.startswith("computing")]


def values(proc):
    return [l for l in proc.stdout.splitlines() if not l.startswith("computing")]


def devstash_run(scripts, *args, **kwargs):
    """`python -m devstash run ARGS` in the scripts' folder."""
    return scripts.run("-m", "devstash", "run", *args, **kwargs)


# ---- the import hook ---------------------------------------------------------

def test_marked_project_module_is_rewritten_and_cached(scripts):
    scripts.write("mymod.py", MARKED_MODULE)
    scripts.write("plain.py", PLAIN_MODULE)
    scripts.write("script.py", ACTIVATE + """
import mymod, plain
print(mymod.work(3), plain.double(1))
print(type(mymod.__loader__).__name__, type(plain.__loader__).__name__)
""")
    env = {"PYTHONDONTWRITEBYTECODE": None}  # .pyc files written, as for users
    first = scripts.run(env=env)
    assert computed(first) == ["computing mymod 3", "computing plain 1"]
    assert values(first) == ["6 2", "DevstashLoader SourceFileLoader"]
    second = scripts.run(env=env)
    assert computed(second) == ["computing plain 1"]
    assert values(second) == ["6 2", "DevstashLoader SourceFileLoader"]
    # the module without markers keeps its ordinary .pyc; the rewritten one
    # never writes one (a later run without devstash must not load rewritten code)
    cached = {p.name.split(".")[0] for p in (scripts.folder / "__pycache__").iterdir()}
    assert cached == {"plain"}


def test_package_and_submodule_in_the_project(scripts):
    scripts.write("pkg/__init__.py", "from .sub import work  # plain re-export\n")
    scripts.write("pkg/sub.py", MARKED_MODULE)
    scripts.write("script.py", ACTIVATE + """
from pkg import work
print(work(5))
""")
    assert computed(scripts.run()) == ["computing pkg.sub 5"]
    second = scripts.run()
    assert computed(second) == [] and values(second) == ["10"]


def test_module_imported_before_activate_warns_once_by_name(scripts):
    path = scripts.write("mymod.py", MARKED_MODULE)
    scripts.write("script.py", """
import mymod
import devstash
devstash.activate()
import devstash
devstash.activate()
print(mymod.work(2))
""")
    for _ in range(2):
        proc = scripts.run()
        assert computed(proc) == ["computing mymod 2"]  # not live: computed every run
        assert proc.stderr.count("was imported before devstash.activate()") == 1
        assert f"module mymod ({path})" in proc.stderr


def test_unmarked_early_import_is_not_warned_about(scripts):
    scripts.write("plain.py", PLAIN_MODULE)
    scripts.write("script.py", "import plain\n" + ACTIVATE + "print('ok')\n")
    proc = scripts.run()
    assert proc.stdout.splitlines() == ["ok"] and "devstash" not in proc.stderr


def test_site_packages_inside_the_project_is_not_rewritten(scripts):
    # a virtual environment created in the project folder is still a library
    scripts.write(".venv/lib/python3.11/site-packages/vmod.py", MARKED_MODULE)
    scripts.write("script.py", ACTIVATE + """
import sys
sys.path.append(".venv/lib/python3.11/site-packages")
import vmod
print(vmod.work(4), type(vmod.__loader__).__name__)
""")
    for _ in range(2):
        proc = scripts.run()
        assert computed(proc) == ["computing vmod 4"]
        assert values(proc) == ["8 SourceFileLoader"]


def test_modules_outside_the_project_need_devstash_path(scripts, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (outside / "extmod.py").write_text(MARKED_MODULE)
    scripts.write("script.py", ACTIVATE + f"""
import sys
sys.path.append({str(outside)!r})
import extmod
print(extmod.work(1))
""")
    assert computed(scripts.run()) == ["computing extmod 1"]
    assert computed(scripts.run()) == ["computing extmod 1"]  # not the user's project
    env = {"DEVSTASH_PATH": str(outside)}
    assert computed(scripts.run(env=env)) == ["computing extmod 1"]
    assert computed(scripts.run(env=env)) == []


def test_skip_rewrite_turns_the_hook_off(scripts):
    scripts.write("mymod.py", MARKED_MODULE)
    scripts.write("script.py", ACTIVATE + """
import mymod
print(mymod.work(3), type(mymod.__loader__).__name__)
""")
    for _ in range(2):
        proc = scripts.run(env={"DEVSTASH_SKIP_REWRITE": "1"})
        assert computed(proc) == ["computing mymod 3"]
        assert values(proc) == ["6 SourceFileLoader"]


def test_standard_library_imports_are_left_to_the_ordinary_finders(scripts):
    # __hello__ is both a file and a frozen module: the hook must not hand
    # back the file where Python would use the frozen one
    scripts.write("script.py", ACTIVATE + """
import __hello__, json.decoder
print(__hello__.__spec__.origin, type(json.decoder.__loader__).__name__)
""")
    plain = scripts.run(env={"DEVSTASH_SKIP_REWRITE": "1"})
    hooked = scripts.run()
    assert hooked.stdout == plain.stdout and hooked.stdout.strip()


def test_traceback_keeps_the_modules_file_and_lines(scripts):
    mod = scripts.write("mymod.py", MARKED_MODULE + """
def fail(x):
    y = work(x)  # @devstash
    raise ValueError(y)
""")
    script = scripts.write("script.py", ACTIVATE + """
import mymod
mymod.fail(21)
""")
    for _ in range(2):
        proc = scripts.run(check=False)
        assert proc.returncode == 1
        err = proc.stderr
        assert f'File "{mod}", line {line_of(mod, "raise ValueError")}, in fail' in err
        assert f'File "{script}", line {line_of(script, "mymod.fail(21)")}, in <module>' in err
        assert err.rstrip().endswith("ValueError: 42")


def test_second_import_of_an_unchanged_module_uses_the_code_cache(scripts):
    mod = scripts.write("mymod.py", MARKED_MODULE)
    scripts.write("script.py", """
import os
from devstash import _core
rewritten = []
real = _core.rewrite
def counting(source, filename, *args, **kwargs):
    rewritten.append(os.path.basename(filename))
    return real(source, filename, *args, **kwargs)
_core.rewrite = counting
import devstash
devstash.activate()
import mymod
print(mymod.work(1), rewritten)
""")
    assert values(scripts.run()) == ["2 ['mymod.py']"]
    assert values(scripts.run()) == ["2 []"]
    mod.write_text(MARKED_MODULE + "\n# edited\n")
    assert values(scripts.run()) == ["2 ['mymod.py']"]


def test_marker_error_in_an_imported_module_reads_like_a_syntax_error(scripts):
    scripts.write("badmod.py", 'x = len("a")  # @devstash ttl=zz\n')
    scripts.write("script.py", ACTIVATE + "import badmod\n")
    proc = scripts.run(check=False)
    assert proc.returncode == 1
    assert 'badmod.py", line 1' in proc.stderr and "ttl=zz" in proc.stderr
    assert "MarkerError" in proc.stderr
    # the folder devstash is installed in may itself hold "rewrite" (a checkout
    # named after a branch): only what follows it counts
    err = proc.stderr.replace(os.path.dirname(os.path.dirname(devstash.__file__)), "<site>")
    assert "_runtime.py" not in err and "rewrite" not in err


# ---- devstash run ------------------------------------------------------------

RUN_SCRIPT = """
import sys
import mymod
def slow(x):
    print("computing main", x, flush=True)
    return x + 1
v = slow(10)  # @devstash
print(v, mymod.work(v))
print(__name__, sys.argv)
"""


def test_run_script_without_activate(scripts):
    path = scripts.write("script.py", RUN_SCRIPT + """
import os
print(__file__ == os.path.abspath("script.py"), sys.path[0] == os.path.dirname(__file__))
""")
    scripts.write("mymod.py", MARKED_MODULE)
    first = devstash_run(scripts, "script.py", "a", "--flag", "-m")
    assert computed(first) == ["computing main 10", "computing mymod 11"]
    expect = ["11 22", "__main__ ['script.py', 'a', '--flag', '-m']", "True True"]
    assert values(first) == expect
    second = devstash_run(scripts, str(path), "a", "--flag", "-m")
    assert computed(second) == []
    assert values(second)[0] == "11 22"


def test_run_script_that_calls_activate_runs_it_once(scripts):
    scripts.write("mymod.py", MARKED_MODULE)
    scripts.write("script.py", "print('top')\n" + ACTIVATE + RUN_SCRIPT)
    for expect_computed in (["computing main 10", "computing mymod 11"], []):
        proc = devstash_run(scripts, "script.py")
        assert computed(proc) == expect_computed
        assert values(proc) == ["top", "11 22", "__main__ ['script.py']"]


def test_run_exit_status_and_traceback_as_python(scripts):
    scripts.write("exits.py", "import sys\nsys.exit(3)\n")
    assert devstash_run(scripts, "exits.py", check=False).returncode == 3
    script = scripts.write("fails.py", "def f():\n    raise KeyError('k')\nf()\n")
    proc = devstash_run(scripts, "fails.py", check=False)
    assert proc.returncode == 1
    assert f'File "{script}", line 2, in f' in proc.stderr
    assert "_run.py" not in proc.stderr and "_activate.py" not in proc.stderr
    assert proc.stderr.rstrip().endswith("KeyError: 'k'")
    missing = devstash_run(scripts, "nosuch.py", check=False)
    assert missing.returncode == 2 and "nosuch.py" in missing.stderr


def test_run_skip_rewrite_runs_plainly(scripts):
    scripts.write("mymod.py", MARKED_MODULE)
    scripts.write("script.py", RUN_SCRIPT)
    for _ in range(2):
        proc = devstash_run(scripts, "script.py", env={"DEVSTASH_SKIP_REWRITE": "1"})
        assert computed(proc) == ["computing main 10", "computing mymod 11"]
    assert not (scripts.folder / ".devstash_cache").exists()


def test_run_module(scripts):
    scripts.write("mymod.py", MARKED_MODULE)
    mod = scripts.write("tool/main.py", RUN_SCRIPT)
    scripts.write("tool/__init__.py", "")
    first = devstash_run(scripts, "-m", "tool.main", "x", "-v")
    assert computed(first) == ["computing main 10", "computing mymod 11"]
    assert values(first) == ["11 22", f"__main__ [{str(mod)!r}, 'x', '-v']"]
    second = devstash_run(scripts, "-m", "tool.main", "x", "-v")
    assert computed(second) == [] and values(second) == values(first)


def test_run_module_errors_as_python(scripts):
    proc = devstash_run(scripts, "-m", "nosuchmodule", check=False)
    assert proc.returncode == 1 and "No module named nosuchmodule" in proc.stderr
    scripts.write("fails.py", "import missing_dependency_xyz\n")
    proc = devstash_run(scripts, "-m", "fails", check=False)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and 'fails.py", line 1' in proc.stderr
    assert "No module named 'missing_dependency_xyz'" in proc.stderr


def test_run_pytest_gives_project_modules_their_markers(scripts):
    scripts.write("mymod.py", MARKED_MODULE)
    scripts.write("test_mymod.py", """
import mymod
def test_work():
    assert mymod.work(7) == 14
""")
    args = ("-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "test_mymod.py")
    first = devstash_run(scripts, *args)
    assert "computing mymod 7" in first.stdout and "1 passed" in first.stdout
    second = devstash_run(scripts, *args)
    assert "computing" not in second.stdout and "1 passed" in second.stdout
    scripts.write("test_fails.py", "def test_no():\n    assert False\n")
    assert devstash_run(scripts, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "test_fails.py", check=False).returncode == 1


def test_run_standard_library_runner(scripts):
    proc = devstash_run(scripts, "-m", "json.tool", "--sort-keys", input='{"b": 1, "a": [2]}')
    assert proc.stdout.split() == ["{", '"a":', "[", "2", "],", '"b":', "1", "}"]
    assert proc.stderr == ""


# ---- multiprocessing ---------------------------------------------------------

MP_SCRIPT = """
import os
import sys
import multiprocessing as mp
import mymod

def say(*parts):  # one write per line: the processes share the pipe
    os.write(1, (" ".join(map(str, parts)) + "\\n").encode())

def slow(x):
    say("computing", x)
    return x * x

def worker(x):
    return slow(x) + mymod.work(x)  # @devstash

say("body", __name__, os.getpid())

if __name__ == "__main__":
    ctx = mp.get_context(sys.argv[1])
    with ctx.Pool(2) as pool:
        say("results", sorted(pool.map(worker, [1, 2, 3])))
        say("direct", sorted(pool.map(mymod.work, [7, 8])))
"""


def start_methods():
    return [m for m in ("fork", "spawn", "forkserver") if m in multiprocessing.get_all_start_methods()]


def check_mp_run(proc, first):
    lines = values(proc)
    assert lines[0].startswith("body __main__ ")
    bodies = [l for l in lines if l.startswith("body")]
    assert len(bodies) == len(set(bodies))  # no process ran the script twice
    assert "results [3, 8, 15]" in lines and "direct [14, 16]" in lines
    if first:
        assert sorted(computed(proc)) == sorted(
            ["computing 1", "computing 2", "computing 3", "computing mymod 1",
             "computing mymod 2", "computing mymod 3", "computing mymod 7", "computing mymod 8"])
    else:
        assert computed(proc) == []


@pytest.mark.parametrize("method", start_methods())
def test_multiprocessing_workers_under_activate(scripts, method):
    scripts.write("mymod.py", MARKED_MODULE)
    scripts.write("script.py", ACTIVATE + MP_SCRIPT)
    check_mp_run(scripts.run("script.py", method), first=True)
    check_mp_run(scripts.run("script.py", method), first=False)


@pytest.mark.parametrize("how", ["script", "module"])
@pytest.mark.parametrize("method", [m for m in start_methods() if m != "fork"])
def test_multiprocessing_workers_under_devstash_run(scripts, method, how):
    scripts.write("mymod.py", MARKED_MODULE)
    scripts.write("mpmain.py", MP_SCRIPT)
    target = ("mpmain.py",) if how == "script" else ("-m", "mpmain")
    check_mp_run(devstash_run(scripts, *target, method), first=True)
    check_mp_run(devstash_run(scripts, *target, method), first=False)


@pytest.mark.skipif("spawn" not in start_methods(), reason="no spawn start method")
def test_spawned_child_of_a_script_without_markers_still_hooks_imports(scripts):
    # nothing in the main script to rewrite: the child re-runs it as usual,
    # and the worker's own module goes through the child's import hook
    scripts.write("mymod.py", MARKED_MODULE)
    scripts.write("script.py", ACTIVATE + """
import multiprocessing as mp
import mymod
if __name__ == "__main__":
    with mp.get_context("spawn").Pool(1) as pool:
        print(pool.map(mymod.work, [5]), flush=True)
""")
    assert computed(scripts.run()) == ["computing mymod 5"]
    second = scripts.run()
    assert computed(second) == [] and values(second) == ["[10]"]
