"""Every way people run a script: debuggers, profilers, runpy, python -i,
-c and -O, folders and zipapps. Each runs twice, as a user would, and must
behave as without devstash apart from the second run not computing."""
import os
import subprocess
import sys
import zipfile

import pytest

SCRIPT = """
import devstash
devstash.activate()
def f(x):
    print("computing")
    return x * 2
y = f(2)  # @devstash
print("y =", y)
"""

RAISES = """
import devstash
devstash.activate()
def f(x):
    return x * 2
y = f(2)  # @devstash
def boom(v):
    local_value = v + 1
    raise ValueError("bad " + str(local_value))
boom(y)
"""


def run(scripts, *argv, input=None, env=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DEVSTASH_")}
    full_env["DEVSTASH_QUIET"] = "1"
    full_env.update(env or {})
    return subprocess.run([sys.executable, *argv], cwd=scripts.folder, env=full_env,
                          capture_output=True, text=True, timeout=120, input=input)


def computes(proc):
    return proc.stdout.count("computing")


@pytest.mark.parametrize("runner", [["-m", "pdb"], ["-m", "cProfile"], ["-m", "trace", "--count"]])
def test_markers_are_live_under_debuggers_and_profilers(scripts, runner):
    scripts.write("s.py", SCRIPT)
    first = run(scripts, *runner, "s.py", input="c\nq\n")
    assert "y = 4" in first.stdout and computes(first) == 1, first.stderr
    second = run(scripts, *runner, "s.py", input="c\nq\n")
    assert "y = 4" in second.stdout and computes(second) == 0, second.stderr
    assert "Traceback" not in second.stderr


def test_the_profile_shows_the_users_functions(scripts):
    scripts.write("s.py", SCRIPT.replace("def f(x):", "def slow_function(x):").replace("f(2)", "slow_function(2)"))
    first = run(scripts, "-m", "cProfile", "s.py")
    assert "s.py:3(slow_function)" in first.stdout


def test_pdb_post_mortem_lands_in_the_users_frame(scripts):
    scripts.write("s.py", RAISES)
    proc = run(scripts, "-m", "pdb", "s.py", input="c\np local_value\nq\nq\n")
    assert "Uncaught exception. Entering post mortem debugging" in proc.stdout
    assert "s.py(8)boom()" in proc.stdout
    assert "\n(Pdb) 5\n" in proc.stdout


def test_python_i_keeps_the_scripts_names_and_post_mortem(scripts):
    scripts.write("ok.py", SCRIPT)
    run(scripts, "ok.py")
    proc = run(scripts, "-i", "ok.py", input="print('at the prompt', y)\n")
    assert "at the prompt 4" in proc.stdout
    assert "SystemExit" not in proc.stderr and "Traceback" not in proc.stderr
    assert computes(proc) == 0
    scripts.write("bad.py", RAISES)
    proc = run(scripts, "-i", "bad.py", input="import pdb\npdb.pm()\np local_value\nq\n")
    assert "(Pdb) 5" in proc.stdout
    # The traceback is the one plain Python shows: the user's frames only.
    assert 'File "' + str(scripts.folder / "bad.py") + '", line 9, in <module>' in proc.stderr
    assert "devstash" not in proc.stderr.split("Traceback")[1].split("ValueError")[0]


def test_an_uncaught_error_and_ctrl_c_show_only_the_users_frames(scripts):
    scripts.write("bad.py", RAISES)
    proc = run(scripts, "bad.py")
    assert proc.returncode == 1
    tb = proc.stderr[proc.stderr.index("Traceback"):]
    assert "activate" not in tb and "_activate.py" not in tb and "site-packages" not in tb
    assert tb.splitlines()[-1] == "ValueError: bad 5"
    scripts.write("intr.py", RAISES.replace('raise ValueError("bad " + str(local_value))',
                                            "raise KeyboardInterrupt"))
    proc = run(scripts, "intr.py")
    assert proc.returncode != 0
    tb = proc.stderr[proc.stderr.index("Traceback"):]
    assert "_activate.py" not in tb and "KeyboardInterrupt" in tb


def test_runpy_run_path_runs_the_script_with_markers_live(scripts):
    scripts.write("s.py", SCRIPT)
    scripts.write("runner.py", """
import runpy
runpy.run_path("s.py", run_name="__main__")
""")
    assert computes(run(scripts, "runner.py")) == 1
    again = run(scripts, "runner.py")
    assert computes(again) == 0 and "y = 4" in again.stdout


def test_code_without_a_file_says_markers_are_not_live(scripts):
    proc = run(scripts, "-c", "import devstash; devstash.activate(); print('ran')")
    assert proc.stdout.strip() == "ran"
    assert proc.stderr.count("markers are not live in <string>") == 1
    proc = run(scripts, "-", input="import devstash\ndevstash.activate()\nprint('ran')\n")
    assert proc.stdout.strip() == "ran" and "markers are not live in <stdin>" in proc.stderr


def test_the_optimisation_level_is_part_of_the_code_cache(scripts):
    scripts.write("s.py", SCRIPT + """
try:
    assert False
    print("asserts off", __debug__)
except AssertionError:
    print("asserts on", __debug__)
""")
    assert "asserts on True" in run(scripts, "s.py").stdout
    assert "asserts off False" in run(scripts, "-O", "s.py").stdout
    assert "asserts on True" in run(scripts, "s.py").stdout
    assert "asserts off False" in run(scripts, "-O", "s.py").stdout


def test_devstash_run_a_folder_and_a_zipapp(scripts):
    scripts.write("app/__main__.py", SCRIPT.replace("import devstash\ndevstash.activate()\n", ""))
    for expected in (1, 0):
        proc = run(scripts, "-m", "devstash", "run", "app")
        assert "y = 4" in proc.stdout and computes(proc) == expected, proc.stderr
    with zipfile.ZipFile(scripts.folder / "app.pyz", "w") as z:
        z.write(scripts.folder / "app" / "__main__.py", "__main__.py")
    proc = run(scripts, "-m", "devstash", "run", "app.pyz")
    assert "y = 4" in proc.stdout and proc.returncode == 0
    assert proc.stderr.count("markers are not live in app.pyz") == 1


def test_activate_inside_a_with_or_a_try_that_would_change_meaning_is_refused(scripts):
    scripts.write("w.py", """
import devstash
with open(__file__) as f:
    devstash.activate()
    print("inside", int("1"))  # @devstash
""")
    proc = run(scripts, "w.py")
    assert proc.returncode == 1 and "inside" not in proc.stdout
    assert "w.py:3: devstash.activate() inside a with block" in proc.stderr
    scripts.write("t.py", """
import devstash
try:
    devstash.activate()
    print("more", int("1"))  # @devstash
except ValueError:
    pass
""")
    proc = run(scripts, "t.py")
    assert proc.returncode == 1 and "t.py:3: devstash.activate() inside a try block" in proc.stderr


def test_the_optional_import_pattern_keeps_working(scripts):
    scripts.write("s.py", """
try:
    import devstash
    devstash.activate()
except ImportError:
    pass
def f(x):
    print("computing")
    return x * 2
y = f(2)  # @devstash
print("y =", y)
if y == 4:
    raise ImportError("raised by the script, not caught by the try above")
""")
    for expected in (1, 0):
        proc = run(scripts, "s.py")
        assert computes(proc) == expected and "y = 4" in proc.stdout
        assert proc.returncode == 1
        assert proc.stderr.count("ImportError: raised by the script") == 1


def ipython(scripts, *argv, input=""):
    return run(scripts, "-m", "IPython", "--no-banner", "--colors=nocolor", "--HistoryManager.enabled=False",
               *argv, input=input)


def test_ipython_run_is_cached_every_time(scripts):
    pytest.importorskip("IPython")
    scripts.write("s.py", SCRIPT)
    proc = ipython(scripts, input="%run s.py\n%run s.py\n%run s.py\nprint('y in the namespace', y)\n")
    assert proc.stdout.count("y = 4") == 3
    assert computes(proc) == 1                    # the second and third %run hit
    assert "y in the namespace 4" in proc.stdout


def test_ipython_script_error_is_shown_as_a_script_error(scripts):
    pytest.importorskip("IPython")
    scripts.write("bad.py", RAISES)
    proc = ipython(scripts, "bad.py")
    out = proc.stdout + proc.stderr
    assert "ValueError: bad 5" in out
    assert "crashed" not in out and "_activate.py" not in out and "__init__.py" not in out


def test_ipython_timeit_of_a_marked_line_gives_no_false_warning(scripts):
    pytest.importorskip("IPython")
    proc = ipython(scripts, input="%load_ext devstash\ndef f(x): return x * 2\n"
                                  "%timeit -n 3 -r 1 f(2)  # @devstash\n")
    assert "loops each" in proc.stdout
    assert "changed by another IPython extension" not in proc.stdout + proc.stderr


def test_threads_and_tasks_missing_the_same_key_compute_once(scripts):
    scripts.write("s.py", """
import asyncio, threading, time
import devstash
devstash.activate()
def slow(x):
    print("computing", x, flush=True)
    time.sleep(0.3)
    return x * 2
results = []
def worker():
    results.append(slow(21))  # @devstash
threads = [threading.Thread(target=worker) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
async def aslow(x):
    print("computing async", x, flush=True)
    await asyncio.sleep(0.3)
    return x * 3
async def task():
    return await aslow(5)  # @devstash
async def main():
    beats = 0
    async def heartbeat():
        nonlocal beats
        while True:
            await asyncio.sleep(0.02)
            beats += 1
    hb = asyncio.create_task(heartbeat())
    values = await asyncio.gather(*(task() for _ in range(4)))
    hb.cancel()
    return values, beats
values, beats = asyncio.run(main())
print(sorted(results), values, "loop ran" if beats > 5 else "loop blocked")
""")
    first = run(scripts, "s.py")
    assert first.stdout.count("computing 21") == 1
    assert first.stdout.count("computing async 5") == 1
    assert "[42, 42, 42, 42] [15, 15, 15, 15] loop ran" in first.stdout
    second = run(scripts, "s.py")
    assert "computing" not in second.stdout and "[42, 42, 42, 42] [15, 15, 15, 15]" in second.stdout


def test_kernprof_line_profiles_a_script_with_markers_live(scripts):
    pytest.importorskip("line_profiler")
    scripts.write("s.py", SCRIPT.replace("def f(x):", "@profile\ndef f(x):"))
    kernprof = [os.path.join(os.path.dirname(sys.executable), "kernprof"), "-l", "s.py"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVSTASH_")}
    first = subprocess.run(kernprof, cwd=scripts.folder, env=env, capture_output=True, text=True, timeout=120)
    assert computes(first) == 1 and "y = 4" in first.stdout, first.stderr
    second = subprocess.run(kernprof, cwd=scripts.folder, env=env, capture_output=True, text=True, timeout=120)
    assert computes(second) == 0 and "y = 4" in second.stdout, second.stderr
