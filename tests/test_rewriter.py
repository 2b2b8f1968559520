"""Every place and statement form a marker can take, end to end: each script
runs twice; the second run must print the same values without computing."""

import pytest

HEADER = """
import devstash
devstash.activate()
def slow(*args, **kwargs):
    print("computing", args, sorted(kwargs.items()))
    return sum(args) + sum(kwargs.values())
"""


def computed(proc):
    return [l for l in proc.stdout.splitlines() if l.startswith("computing")]


def values(proc):
    return [l for l in proc.stdout.splitlines() if not l.startswith("computing")]


def twice(scripts, body, expect_values, first_computes, name="script.py"):
    scripts.write(name, HEADER + body)
    first = scripts.run(name)
    assert values(first) == expect_values
    assert len(computed(first)) == first_computes
    second = scripts.run(name)
    assert values(second) == expect_values
    assert computed(second) == []
    return first, second


STATEMENT_FORMS = {
    "assign": ("x = slow(1, 2)  # @devstash\nprint(x)\n", ["3"]),
    "tuple-unpack": ("a, b = divmod(slow(7), 2), slow(0)  # @devstash\nprint(a, b)\n", ["(3, 1) 0"]),
    "annotated": ("x: int = slow(4)  # @devstash\nprint(x)\n", ["4"]),
    "augmented": ("x = 10\nx += slow(5)  # @devstash\nprint(x)\n", ["15"]),
    "keywords": ("x = slow(1, k=2)  # @devstash\nprint(x)\n", ["3"]),
    "star-args": ("a = [1, 2]\nkw = {'z': 3}\nx = slow(*a, **kw)  # @devstash\nprint(x)\n", ["6"]),
    "return": ("def f():\n    return slow(9)  # @devstash\nprint(f())\n", ["9"]),
    "multiline-first": ("x = slow(  # @devstash\n    1,\n    2,\n)\nprint(x)\n", ["3"]),
    "multiline-last": ("x = slow(\n    1,\n    2,\n)  # @devstash\nprint(x)\n", ["3"]),
    "own-line-before-multiline": ("# @devstash\nx = slow(\n    1,\n)\nprint(x)\n", ["1"]),
    "semicolons-last-statement": ("y = 1; x = slow(y)  # @devstash\nprint(x)\n", ["1"]),
}


@pytest.mark.parametrize("form", sorted(STATEMENT_FORMS))
def test_statement_forms(scripts, form):
    body, expected = STATEMENT_FORMS[form]
    first_computes = 2 if form == "tuple-unpack" else 1
    twice(scripts, body, expected, first_computes)


def test_method_call_on_object_keys_on_receiver_state(scripts):
    twice(scripts, """
class Model:
    def __init__(self, w):
        self.w = w
    def predict(self, x):
        print("computing predict", self.w, x)
        return self.w * x
m1, m2 = Model(2), Model(3)
a = m1.predict(5)  # @devstash
b = m2.predict(5)  # @devstash
print(a, b)
""", ["10 15"], 2)


def test_chain_on_hit_runs_nothing(scripts):
    twice(scripts, """
class Response:
    def __init__(self, url):
        self.url = url
    def json(self):
        print("computing json", self.url)
        return {"url": self.url, "items": [1, 2]}
def get(url):
    print("computing get", url)
    return Response(url)
for url in ["a", "b"]:
    data = get(url).json()["items"]  # @devstash
    print(url, data)
""", ["a [1, 2]", "b [1, 2]"], 4)


def test_chain_keys_on_every_call_argument(scripts):
    scripts.write("script.py", HEADER + """
import sys
class Q:
    def __init__(self, n): self.n = n
    def times(self, k):
        print("computing times", self.n, k)
        return self.n * k
def q(n):
    return Q(n)
k = int(sys.argv[1])
r = q(2).times(k)  # @devstash
print(r)
""")
    assert values(scripts.run("script.py", "3")) == ["6"]
    assert values(scripts.run("script.py", "4")) == ["8"]
    again = scripts.run("script.py", "3")
    assert values(again) == ["6"] and computed(again) == []


def test_await_call_in_async_code(scripts):
    twice(scripts, """
import asyncio
async def fetch(x):
    print("computing fetch", x)
    await asyncio.sleep(0)
    return x * 10
async def main():
    v = await fetch(4)  # @devstash
    print(v)
asyncio.run(main())
""", ["40"], 1)


def test_non_call_expression_keyed_by_the_values_it_reads(scripts):
    scripts.write("script.py", HEADER + """
import sys
n = int(sys.argv[1])
def f(i):
    print("computing", i)
    return i * i
squares = [f(i) for i in range(n)]  # @devstash
print(squares)
""")
    assert values(scripts.run("script.py", "3")) == ["[0, 1, 4]"]
    assert values(scripts.run("script.py", "4")) == ["[0, 1, 4, 9]"]
    again = scripts.run("script.py", "3")
    assert values(again) == ["[0, 1, 4]"] and computed(again) == []


def test_markers_inside_functions_loops_with_and_nested_functions(scripts):
    twice(scripts, """
import contextlib
def outer(n):
    def inner(k):
        return slow(k, 100)  # @devstash
    total = 0
    for i in range(n):
        with contextlib.nullcontext():
            total += inner(i)
    return total
print(outer(3))
""", ["303"], 3)


def test_markers_in_methods_survive_name_mangling(scripts):
    twice(scripts, """
class Service:
    def __init__(self):
        self.__secret = 5
    def __compute(self, x):
        return slow(x, self.__secret)
    def run(self, x):
        return self.__compute(x)  # @devstash
print(Service().run(1))
""", ["6"], 1)


def test_function_defined_before_activate(scripts):
    scripts.write("script.py", """
COUNT = []
def slow(*args, **kwargs):
    print("computing", args)
    return sum(args)
def early(x):
    return slow(x, 1)  # @devstash
import devstash
devstash.activate()
print(early(2))
""")
    first = scripts.run()
    assert values(first) == ["3"] and len(computed(first)) == 1
    second = scripts.run()
    assert values(second) == ["3"] and computed(second) == []


def test_lines_before_activate_run_exactly_once(scripts):
    scripts.write("script.py", """
print("prologue")
import devstash
devstash.activate()
print("body")
x = len("abc")  # @devstash
print(x)
""")
    assert scripts.run().stdout.splitlines() == ["prologue", "body", "3"]
    assert scripts.run().stdout.splitlines() == ["prologue", "body", "3"]


def test_runs_as_the_real_main_module(scripts):
    scripts.write("script.py", """
import devstash
devstash.activate()
import sys, os
x = len("abc")  # @devstash
print(__name__, sys.modules["__main__"].__dict__ is globals(), os.path.basename(__file__), sys.argv[1:])
""")
    assert scripts.run("script.py", "a", "--b").stdout.splitlines() == [
        "__main__ True script.py ['a', '--b']"
    ]


def test_dataclass_defined_in_the_script_round_trips(scripts):
    twice(scripts, """
from dataclasses import dataclass
@dataclass
class Point:
    x: int
    y: int
def make(x):
    print("computing make")
    return Point(x, x + 1)
p = make(3)  # @devstash
print(p, type(p).__module__)
""", ["Point(x=3, y=4) __main__"], 1)


def test_exit_codes_are_the_scripts_own(scripts):
    scripts.write("script.py", HEADER + """
import sys
x = slow(1)  # @devstash
sys.exit(3)
""")
    assert scripts.run(check=False).returncode == 3
    assert scripts.run(check=False).returncode == 3


def test_uncaught_exception_traceback_shows_only_user_frames(scripts):
    path = scripts.write("script.py", HEADER + """
x = slow(1)  # @devstash
def broken():
    raise ValueError("bad value")
broken()
""")
    text = path.read_text().splitlines()
    raise_line = text.index('    raise ValueError("bad value")') + 1
    call_line = text.index("broken()") + 1
    proc = scripts.run(check=False)
    assert proc.returncode == 1
    err = proc.stderr
    assert err.startswith("Traceback (most recent call last):")
    assert "ValueError: bad value" in err
    assert f'script.py", line {call_line}, in <module>' in err
    assert f'script.py", line {raise_line}, in broken' in err
    assert "devstash" not in err.replace("script.py", "")


def test_script_started_by_a_devstash_script_is_rewritten_too(scripts):
    scripts.write("child.py", HEADER + """
x = slow(5)  # @devstash
print("child", x)
""")
    scripts.write("parent.py", HEADER + """
import subprocess, sys
y = slow(6)  # @devstash
print("parent", y)
out = subprocess.run([sys.executable, "child.py"], capture_output=True, text=True).stdout
print(out.strip().replace("\\n", " | "))
""")
    first = scripts.run("parent.py")
    assert first.stdout.splitlines()[-1] == "computing (5,) [] | child 5"
    second = scripts.run("parent.py")
    assert second.stdout.splitlines() == ["parent 6", "child 5"]


def test_marker_in_string_or_docstring_is_not_a_marker(scripts):
    twice(scripts, '''
"""Docstring mentioning # @devstash ttl=bogus."""
s = "# @devstash nonsense"
t = f"{s!r} # @devstash"
x = slow(2)  # @devstash
print(x, len(s))
''', ["2 20"], 1)


def test_code_cache_is_used_on_the_next_run(scripts):
    path = scripts.write("script.py", HEADER + """
x = slow(2)  # @devstash
print(x)
""")
    scripts.run()
    import marshal
    from devstash import _core, _runtime

    source = path.read_bytes()
    key = _runtime.code_key(source, str(path), 2)
    with _core.Store(str(scripts.folder / ".devstash_cache")) as store:
        code, sites, near = marshal.loads(store.get_code(key))
        assert near == []
        assert len(sites) == 1 and sites[0][0] == 7
        # Swap in other code under the same key: the next run must run it,
        # which shows the source is not parsed and rewritten again.
        other = compile("print('from the code cache')", str(path), "exec")
        store.put_code(key, marshal.dumps((other, sites, near)))
    assert scripts.run().stdout.splitlines() == ["from the code cache"]
    path.write_text(path.read_text() + "print('edited')\n")
    assert scripts.run().stdout.splitlines() == ["2", "edited"]


ERRORS = {
    "unknown option": ("x = slow(1)  # @devstash fast\n", "unknown option 'fast'"),
    "marker on def": ("# @devstash\ndef f():\n    pass\n", "compound statement"),
    "marker at end": ("x = 1\n# @devstash\n", "no statement follows"),
    "marker on import": ("import os  # @devstash\n", "no statement it can cache"),
    "marker on pass": ("if True:\n    pass  # @devstash\n", "no statement it can cache"),
    "bare annotation": ("x: int  # @devstash\n", "without a value"),
    "duplicate": ("x = slow(  # @devstash\n  1)  # @devstash\n", "already has a marker"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_bad_markers_stop_at_activate_with_file_line_column(scripts, case):
    body, message = ERRORS[case]
    scripts.write("script.py", "print('before')\n" + HEADER + "print('after')\n" + body)
    proc = scripts.run(check=False)
    assert proc.returncode == 1
    assert proc.stdout.splitlines() == ["before"]
    err = proc.stderr
    assert message in err
    text = (scripts.folder / "script.py").read_text().splitlines()
    marker_lines = [i for i, l in enumerate(text, 1) if "@devstash" in l]
    assert any(f'script.py", line {n}' in err for n in marker_lines), err
    assert "# @devstash" in err
    assert "MarkerError" in err


# ---- the nodes the rewriter builds -------------------------------------------

EVERY_FORM = b'''
import asyncio
x = slow(1, k=2)  # @devstash
y = client.get(1).json()["items"][0]  # @devstash
z = [i * n for i in range(3)]  # @devstash
print(f"{slow(2)} and {slow(3)!r:>4}", sep=sep())  # @devstash
results.extend(slow(i) for i in range(3))  # @devstash
results.append(slow(4))  # @devstash
class C:
    w: int = slow(5)  # @devstash
    def m(self):
        return self.f(1)  # @devstash
async def main():
    v = await fetch(1)  # @devstash
    u = await client.get(1).json()  # @devstash
'''


def test_built_nodes_are_complete():
    """Python 3.13 warns about a node built without one of its fields
    (DeprecationWarning: Name.__init__ missing 1 required positional
    argument), and 3.15 refuses it: every node of a rewritten tree must have
    every field of its type, and statements and expressions their location."""
    import ast
    import warnings

    from devstash import _core

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tree, sites = _core.rewrite(EVERY_FORM, "forms.py", 0, tree=True)
        compile(tree, "forms.py", "exec")
        _core.rewrite(EVERY_FORM, "forms.py", 0)
    assert len(sites) >= 12
    seen = set()
    for node in ast.walk(tree):
        seen.add(type(node).__name__)
        fields = vars(node)
        missing = [f for f in node._fields if f not in fields]
        assert not missing, (ast.dump(node), missing)
        if isinstance(node, (ast.stmt, ast.expr)):
            assert all(a in fields for a in ("lineno", "col_offset", "end_lineno", "end_col_offset")), ast.dump(node)
    assert {"Lambda", "arguments", "arg", "ListComp", "Dict", "Await", "Tuple", "Constant"} <= seen
