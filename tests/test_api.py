"""The Python API: @devstash.cache and devstash.entries(), through scripts."""

SCRIPT = """
import sys
import devstash

@devstash.cache(ttl="1h")
def square(x):
    print("computing", x)
    return x * x

@devstash.cache
def pair(a, b=0):
    print("computing pair")
    return (a, b)

print(square(int(sys.argv[1])), pair(1, b=2))
"""


def test_decorator_caches_across_runs_with_argument_keys(scripts):
    scripts.write("script.py", SCRIPT)
    assert scripts.run("script.py", "3").stdout.splitlines() == ["computing 3", "computing pair", "9 (1, 2)"]
    assert scripts.run("script.py", "3").stdout.splitlines() == ["9 (1, 2)"]
    assert scripts.run("script.py", "4").stdout.splitlines() == ["computing 4", "16 (1, 2)"]


def test_decorator_and_marker_share_keys(scripts):
    scripts.write("marked.py", """
import devstash
devstash.activate()
from lib import square
v = square.__wrapped__(5)  # @devstash
print(v)
""")
    scripts.write("lib.py", """
import devstash
@devstash.cache
def square(x):
    print("computing", x)
    return x * x
""")
    scripts.write("decorated.py", """
from lib import square
print(square(5))
""")
    assert scripts.run("decorated.py").stdout.splitlines() == ["computing 5", "25"]
    assert scripts.run("marked.py").stdout.splitlines() == ["25"]


def test_decorator_respects_skip_rewrite(scripts):
    scripts.write("script.py", SCRIPT)
    env = {"DEVSTASH_SKIP_REWRITE": "1"}
    for _ in range(2):
        assert scripts.run("script.py", "2", env=env).stdout.splitlines()[0] == "computing 2"
    assert not (scripts.folder / ".devstash_cache").exists()


def test_async_decorator(scripts):
    scripts.write("script.py", """
import asyncio, devstash
@devstash.cache
async def fetch(x):
    print("computing")
    return {"x": x}
print(asyncio.run(fetch(7)))
""")
    assert scripts.run().stdout.splitlines() == ["computing", "{'x': 7}"]
    assert scripts.run().stdout.splitlines() == ["{'x': 7}"]


def test_entries_serve_cached_values_as_fixtures(scripts):
    scripts.write("script.py", SCRIPT)
    scripts.run("script.py", "3")
    scripts.write("fixture.py", """
import devstash
found = sorted((e.callee, e.load(), e.ttl, e.expired) for e in devstash.entries())
for row in found:
    print(row)
""")
    assert scripts.run("fixture.py").stdout.splitlines() == [
        "('__main__.pair', (1, 2), 0.0, False)",
        "('__main__.square', 9, 3600.0, False)",
    ]


def test_entries_of_a_missing_cache_is_empty(scripts):
    scripts.write("fixture.py", "import devstash\nprint(list(devstash.entries()))\n")
    assert scripts.run("fixture.py").stdout.strip() == "[]"
    assert not (scripts.folder / ".devstash_cache").exists()
