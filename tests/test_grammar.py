"""The grammar of each Python version, end to end: markers inside the
statements a version added work on that version (each test runs where its
syntax exists; the scanner's side of later versions is in test_scanner.py)."""
import sys

import pytest

HEADER = """
import devstash
devstash.activate()
def slow(*args):
    print("computing", args)
    return sum(args)
"""


def twice(scripts, body, expect):
    """Runs the script twice: the first run computes, the second loads."""
    scripts.write("script.py", HEADER + body)
    first = scripts.run()
    assert [l for l in first.stdout.splitlines() if not l.startswith("computing")] == expect
    assert any(l.startswith("computing") for l in first.stdout.splitlines())
    second = scripts.run()
    assert second.stdout.splitlines() == expect, second.stdout


def test_match_statement(scripts):  # 3.10
    twice(scripts, """
match [1, 2]:
    case [a, b]:
        v = slow(a, b)  # @devstash
print(v)
""", ["3"])


@pytest.mark.skipif(sys.version_info < (3, 11), reason="except* is Python 3.11")
def test_except_star(scripts):
    twice(scripts, """
try:
    raise ExceptionGroup("g", [ValueError(1)])
except* ValueError as group:
    v = slow(len(group.exceptions), 1)  # @devstash
print(v)
""", ["2"])


@pytest.mark.skipif(sys.version_info < (3, 12), reason="PEP 701 f-strings are Python 3.12")
def test_pep701_fstrings(scripts):
    twice(scripts, """
d = {"k": 5, "#": 1}
v = slow(len(f"{d["k"]}{d["#"]}"), d["k"])  # @devstash
w = f"{d["k"]:#x} # @devstash"
u = f'''{slow(  # @devstash
    2, 3)}'''
print(v, w, u)
""", ["7 0x5 # @devstash 5"])


@pytest.mark.skipif(sys.version_info < (3, 12), reason="PEP 695 is Python 3.12")
def test_pep695_type_parameters(scripts):
    twice(scripts, """
def first[T](xs: list[T]) -> T:
    v = slow(*xs)  # @devstash
    return v
class Box[T]:
    size = slow(3, 4)  # @devstash
    def total[S](self, s: S) -> int:
        return slow(s, 1)  # @devstash
type Pair[T] = tuple[T, T]
print(first([1, 2]), Box.size, Box().total(5), Pair.__value__)
""", ["3 7 6 tuple[T, T]"])


@pytest.mark.skipif(sys.version_info < (3, 12), reason="PEP 695 is Python 3.12")
def test_marker_on_a_type_statement_is_refused(scripts):
    scripts.write("script.py", HEADER + "type Alias = list[int]  # @devstash\n")
    proc = scripts.run(check=False)
    assert proc.returncode == 1
    assert "MarkerError" in proc.stderr and "no statement it can cache" in proc.stderr


@pytest.mark.skipif(sys.version_info < (3, 13), reason="PEP 696 is Python 3.13")
def test_pep696_type_parameter_defaults(scripts):
    twice(scripts, """
def first[T = int](xs: list[T]) -> T:
    return slow(*xs)  # @devstash
class Box[T = str]:
    size = slow(3, 4)  # @devstash
type Opt[T = str] = T | None
print(first([1, 2]), Box.size, Opt.__type_params__[0].__default__.__name__)
""", ["3 7 str"])


@pytest.mark.skipif(sys.version_info < (3, 14), reason="PEP 750 template strings are Python 3.14")
def test_pep750_template_strings(scripts):
    twice(scripts, """
x = 2
tmpl = t"{x} # @devstash"
raw = Tr'# @devstash {x}'
v = slow(len(tmpl.strings), len(raw.interpolations))  # @devstash
print(v, tmpl.strings[-1], raw.strings[0])
""", ["3  # @devstash # @devstash "])


@pytest.mark.skipif(sys.version_info < (3, 14), reason="PEP 758 is Python 3.14")
def test_pep758_except_without_brackets(scripts):
    twice(scripts, """
try:
    int("x")
except ValueError, TypeError:
    v = slow(1, 2)  # @devstash
print(v)
""", ["3"])
