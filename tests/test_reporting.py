"""What devstash tells the user: the status lines, the log, refresh."""
import re

from conftest import line_of

SCRIPT = """
import devstash
devstash.activate()
def slow(x):
    print("computing", x)
    return x * 3
a = slow(1)  # @devstash
b = slow(2)  # @devstash
print(a, b)
"""


def test_one_status_line_when_active_and_one_summary_at_exit(scripts):
    scripts.write("script.py", SCRIPT)
    loud = {"DEVSTASH_QUIET": None}
    first = scripts.run(env=loud)
    # The time saved is measured: on a loaded machine it may not round to 0.
    lines = first.stderr.splitlines()
    assert lines[0] == f"devstash: caching 2 marked lines of script.py (cache: {scripts.folder}/.devstash_cache)"
    assert re.fullmatch(r"devstash: 0 hits, 2 misses, 2 stored, \d+ ms saved", lines[1]) and len(lines) == 2
    second = scripts.run(env=loud)
    assert re.fullmatch(r"devstash: 2 hits, 0 misses, 0 stored, \d+ ms saved", second.stderr.splitlines()[1])
    quiet = scripts.run(env={"DEVSTASH_QUIET": "1"})
    assert quiet.stderr == ""


def test_log_reports_each_hit_miss_and_store_with_the_reason(scripts):
    path = scripts.write("script.py", SCRIPT)
    line = line_of(path, "a = slow(1)")
    first = scripts.run(env={"DEVSTASH_LOG": "info"})
    assert f"devstash: miss script.py:{line}: a = slow(1) (new arguments)" in first.stderr
    assert f"devstash: store script.py:{line}: a = slow(1)" in first.stderr
    second = scripts.run(env={"DEVSTASH_LOG": "info"})
    assert f"devstash: hit script.py:{line}: a = slow(1)" in second.stderr
    assert "miss" not in second.stderr


def test_refresh_environment_recomputes_every_value(scripts):
    scripts.write("script.py", SCRIPT)
    scripts.run()
    again = scripts.run(env={"DEVSTASH_REFRESH": "1"})
    assert again.stdout.splitlines() == ["computing 1", "computing 2", "3 6"]
    assert scripts.run().stdout.splitlines() == ["3 6"]


def test_refresh_option_recomputes_one_line(scripts):
    scripts.write("script.py", SCRIPT.replace("b = slow(2)  # @devstash", "b = slow(2)  # @devstash refresh"))
    scripts.run()
    assert scripts.run().stdout.splitlines() == ["computing 2", "3 6"]


def test_summary_counts_the_time_hits_saved(scripts):
    scripts.write("script.py", """
import devstash, time
devstash.activate()
def slow():
    time.sleep(0.3)
    return 1
v = slow()  # @devstash
""")
    scripts.run()
    line = scripts.run(env={"DEVSTASH_QUIET": None}).stderr.splitlines()[-1]
    assert line.startswith("devstash: 1 hit, 0 misses, 0 stored, ")
    amount, unit = line.split(", ")[-1].split()[:2]
    assert (float(amount) >= 300 if unit == "ms" else float(amount) >= 0.3), line


def test_log_says_when_a_miss_follows_a_code_change(scripts):
    path = scripts.write("script.py", SCRIPT)
    scripts.run()
    scripts.write("script.py", SCRIPT.replace("x * 3", "x * 4"))
    edited = scripts.run(env={"DEVSTASH_LOG": "info"})
    line = line_of(path, "a = slow(1)")
    assert f"devstash: miss script.py:{line}: a = slow(1) (code of slow changed)" in edited.stderr
    assert edited.stdout.splitlines()[-1] == "4 8"
