"""The rewrite of a main script reuses the code Python compiled for its
unmarked functions and classes (csrc/outline.c). The script must behave
exactly as without devstash, whatever those functions look like."""
import textwrap

from devstash import _core

RICH = '''
import devstash
devstash.activate()
import functools


def decorate(tag):
    def wrap(f):
        @functools.wraps(f)
        def inner(*a, **k):
            return (tag, f(*a, **k))
        return inner
    return wrap


@decorate("d")
@functools.lru_cache(maxsize=None)
def decorated(x):
    """A docstring.
def not_a_def(): this line is inside a string
"""
    return x + 1


def long_signature(a,
                   b=[1, 2,
3],
                   *, c: "int" = 4):
    return a + sum(b) + c


class Base:
    """Doc."""
    def hello(self):
        return "base"


class Child(Base):
    attr = [i * i for i in range(3)]

    def hello(self):
        return "child+" + super().hello()

    @property
    def value(self):
        return len(self.attr)


def gen(n):
    yield from range(n)


async def coro():
    return 5


def closure_maker(k):
    def add(x):
        return x + k
    return add


def one_liner(): return "one"


def slow(x):
    print("computing", x)
    return x * 3


v = slow(2)  # @devstash
import asyncio
print(decorated(1), decorated.__doc__.splitlines()[0], decorated.__wrapped__.__name__)
print(long_signature(1), Child().hello(), Child().value, Child.__doc__, Base.__doc__)
print(list(gen(3)), asyncio.run(coro()), closure_maker(2)(3), one_liner(), v)
'''


def test_script_with_every_kind_of_definition_runs_as_without_devstash(scripts):
    scripts.write("script.py", RICH)
    plain = scripts.run(env={"DEVSTASH_SKIP_REWRITE": "1"}).stdout
    first = scripts.run().stdout
    second = scripts.run().stdout
    assert first == plain
    assert second == plain.replace("computing 2\n", "")


def test_unmarked_definitions_keep_pythons_code_objects(tmp_path):
    source = textwrap.dedent(RICH).lstrip().encode()
    filename = str(tmp_path / "script.py")
    original = compile(source, filename, "exec", dont_inherit=True)
    code, sites = _core.rewrite(source, filename, 2, original=original)
    originals = {(c.co_name, c.co_firstlineno): c for c in original.co_consts if hasattr(c, "co_code")}
    rewritten = {(c.co_name, c.co_firstlineno): c for c in code.co_consts if hasattr(c, "co_code")}
    reused = {name for (name, _), c in rewritten.items() if any(c is o for o in originals.values())}
    # long_signature has a line at column 0 inside its brackets: taken for a
    # statement, it ends the block early, so that one is compiled again.
    assert {"decorate", "decorated", "Base", "Child", "gen", "coro", "closure_maker", "slow"} <= reused
    assert len(sites) == 1
    # the same result as a full rewrite, statement for statement
    full, _ = _core.rewrite(source, filename, 2)
    assert [i.opname for i in __import__("dis").get_instructions(code)] == \
           [i.opname for i in __import__("dis").get_instructions(full)]


def test_outline_falls_back_when_the_code_does_not_match(tmp_path):
    source = textwrap.dedent(RICH).lstrip().encode()
    filename = str(tmp_path / "script.py")
    other = compile("def decorated(x):\n    return 0\n", filename, "exec")
    code, _ = _core.rewrite(source, filename, 2, original=other)
    names = {c.co_name for c in code.co_consts if hasattr(c, "co_code")}
    assert "long_signature" in names
    assert not any(c is o for c in code.co_consts for o in other.co_consts if hasattr(o, "co_code"))
