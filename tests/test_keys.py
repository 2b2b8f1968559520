"""The canonical key hasher (csrc/keys.c): _core.hash_value, hash_call,
hash_call_ex, hash_code and set_library_prefixes.

A wrong "equal" returns a value computed for other inputs, so most tests
here are tables of values that must (or must not) share a digest."""

import collections
import dataclasses
import datetime
import decimal
import enum
import fractions
import functools
import json
import math
import os
import pathlib
import socket
import subprocess
import sys
import sysconfig
import textwrap
import threading
import types

import pytest

from devstash import _core

LIBRARY_PREFIXES = tuple(
    sorted({sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")})
)


@pytest.fixture(autouse=True)
def library_prefixes():
    _core.set_library_prefixes(LIBRARY_PREFIXES)
    yield
    _core.set_library_prefixes(LIBRARY_PREFIXES)


hv = _core.hash_value
hc = _core.hash_call


def assert_all_distinct(values):
    digests = [hv(v) for v in values]
    for i, d in enumerate(digests):
        assert len(d) == 16 and isinstance(d, bytes)
        for j in range(i):
            assert digests[j] != d, f"{values[j]!r} and {values[i]!r} share a key"


def f(*args, **kwargs):
    return args, kwargs


# ---------------------------------------------------------------- scalars


def test_exact_types_differ():
    assert_all_distinct([
        1, 1.0, True, "1", b"1", bytearray(b"1"), (1,), [1], {1}, frozenset({1}),
        {1: None}, 1 + 0j, None, ..., 0, False, 0.0, "", b"", (), [], {}, set(),
        frozenset(), bytearray(), "None", "True", 2, 1.5, "a", b"a",
    ])


def test_equal_values_share_a_key():
    for a, b in [
        (1, 1), (10**30, 10**30), (-5, -5), (1.5, 1.5), ("abc", "ab" + "c"),
        (b"xy", bytes([120, 121])), ((1, "a"), (1, "a")), ([1, [2]], [1, [2]]),
        (None, None), (..., ...), (2 + 3j, complex(2, 3)), (True, 1 == 1),
        (bytearray(b"q"), bytearray(b"q")), (frozenset("ab"), frozenset("ba")),
    ]:
        assert hv(a) == hv(b), (a, b)


def test_ints_of_every_size():
    values = [0, 1, -1, 2**31, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64,
              -(2**64), 2**64 + 1, 10**100, -(10**100), 255, 256]
    assert_all_distinct(values)
    assert hv(10**100) == hv(int("1" + "0" * 100))


def test_floats_nan_and_signed_zero():
    nans = [float("nan"), -float("nan"), math.inf - math.inf,
            __import__("struct").unpack("<d", b"\x01\x00\x00\x00\x00\x00\xf8\x7f")[0]]
    assert len({hv(n) for n in nans}) == 1
    # -0.0 == 0.0 but 1/x, atan2 and str() tell them apart.
    assert hv(-0.0) != hv(0.0)
    assert hv(complex(0.0, -0.0)) != hv(complex(0.0, 0.0))
    assert_all_distinct([math.inf, -math.inf, float("nan"), 0.1, 0.1 + 2**-56, 5e-324])


def test_strings_unicode_and_surrogates():
    assert_all_distinct(["é", "e\u0301", "\ud800", "\udfff", "\ud83d\ude00", "😀",
                         "\x00", "\x00\x00", "ÿ", "\u0100", "a" * 200, "a" * 201])
    assert hv("\ud800x") == hv("\ud800" + "x")
    long = "ü" * 100_000 + "\U0001f600"
    assert hv(long) == hv("".join(["ü" * 100_000, "\U0001f600"]))
    assert hv(long) != hv("ü" * 100_000 + "\U0001f601")


def test_bytes_large_and_small():
    big = bytes(range(256)) * 40_000
    assert hv(big) == hv(bytes(bytearray(big)))
    assert hv(big) != hv(big[:-1] + b"\x00")
    assert hv(big) != hv(bytearray(big))


# ---------------------------------------------------------- containers


def test_framing():
    assert_all_distinct([(1, 2), ((1, 2),), (1, (2,)), ((1,), 2), ("ab",), ("a", "b"),
                         [[1], 2], [1, [2]], ("", "a"), ("a", ""), ((), ()), (((),),)])
    keys = [hc(f, 1, 2), hc(f, (1, 2)), hc(f, 1, (2,)), hc(f, "ab"), hc(f, "a", "b"),
            hc(f, 1), hc(f, a=1), hc(f, 1, a=1), hc(f), hc(f, None), hc(f, b=1),
            hc(f, a="b"), hc(f, ab=""), hc(f, a=1, b=2), hc(f, [1, 2]), hc(f, "a=1")]
    assert len(set(keys)) == len(keys)


def test_keyword_order_does_not_matter():
    assert hc(f, a=1, b=2) == hc(f, b=2, a=1)
    assert hc(f, 0, z=1, a=2, m=3) == hc(f, 0, m=3, a=2, z=1)
    many = {f"k{i}": i for i in range(40)}
    assert hc(f, **many) == hc(f, **dict(reversed(list(many.items()))))
    assert hc(f, a=1, b=2) != hc(f, a=2, b=1)


def test_dicts_and_sets_ignore_order():
    words = [f"word{i}" for i in range(50)]
    d1 = {w: i for i, w in enumerate(words)}
    d2 = {w: d1[w] for w in reversed(words)}
    assert list(d1) != list(d2)
    assert hv(d1) == hv(d2)
    assert hv(set(words)) == hv(set(reversed(words)))
    assert hv(frozenset(words)) == hv(frozenset(reversed(words)))
    assert hv(set(words)) != hv(frozenset(words))
    nested1 = {"a": [{"x": {1, 2}}, {"s": frozenset({"p", "q"})}], "b": {3: {4: 5}}}
    nested2 = {"b": {3: {4: 5}}, "a": [{"x": {2, 1}}, {"s": frozenset({"q", "p"})}]}
    assert hv(nested1) == hv(nested2)


def test_dict_contents_matter():
    assert_all_distinct([{1: 2}, {2: 1}, {1: 2, 3: 4}, {1: 3}, {(1, 2): 3}, {1: (2, 3)},
                         {"a": 1}, {"a": 1.0}, {1: None}, {None: 1}, {1, 2}, {1, 3},
                         {(1, 2)}, {1, 2, 3}])
    # Pairs are hashed as pairs, not as a flat bag of keys and values.
    assert hv({1: 2, 3: 4}) != hv({1: 4, 3: 2})


def test_cycles_are_keyed_by_back_reference():
    """A value that refers to itself keys like pickle sees it: a cycle is a
    back-reference, so equal cyclic values share a key and others do not."""
    def cyclic(tag):
        lst = [tag]
        lst.append(lst)
        return lst

    assert hv(cyclic(1)) == hv(cyclic(1)) != hv(cyclic(2))
    d, e = {}, {}
    d["self"] = d
    e["self"] = e
    assert hv(d) == hv(e) != hv({"self": {}})
    assert hc(f, 1, x=cyclic(1)) == hc(f, 1, x=cyclic(1))
    ns, other = types.SimpleNamespace(v=1), types.SimpleNamespace(v=2)
    ns.me, other.me = ns, other
    assert hv(ns) != hv(other)
    ns2 = types.SimpleNamespace(v=1)
    ns2.me = ns2
    assert hv(ns) == hv(ns2)

    # A client that caches a child holding the client (openai's client.chat).
    class Client:
        def __init__(self, url):
            self.url = url
            self.chat = Chat(self)

    class Chat:
        def __init__(self, client):
            self.client = client

    assert hv(Client("a")) == hv(Client("a")) != hv(Client("b"))


def test_nesting_depth():
    shallow = []
    for _ in range(60):
        shallow = [shallow]
    assert len(hv(shallow)) == 16
    deep = []
    for _ in range(500):
        deep = [deep]
    with pytest.raises(ValueError):
        hv(deep)
    # The hasher recovers: next keys are normal.
    assert hv([1]) == hv([1])


def test_list_mutated_while_hashing_is_refused():
    lst = [1, 2, 3]

    class Shrinker:
        def __reduce_ex__(self, proto):
            lst.clear()
            return (Shrinker, ())

    lst.insert(0, Shrinker())
    with pytest.raises(RuntimeError):
        hv(lst)


# ------------------------------------------------------------- objects


@dataclasses.dataclass
class Point:
    x: int
    y: object


@dataclasses.dataclass
class Point2:
    x: int
    y: object


Pair = collections.namedtuple("Pair", "a b")
Pair2 = collections.namedtuple("Pair2", "a b")


class Color(enum.Enum):
    RED = 1
    GREEN = 2


class Level(enum.IntEnum):
    LOW = 1


class MyStr(str):
    pass


class MyDict(dict):
    pass


class MySet(set):
    pass


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a, b):
        self.a, self.b = a, b


def test_objects_by_state():
    assert hv(Point(1, "a")) == hv(Point(1, "a"))
    assert_all_distinct([Point(1, "a"), Point(2, "a"), Point(1, "b"), Point2(1, "a"),
                         (1, "a"), Pair(1, "a"), Pair2(1, "a"), Slotted(1, "a"),
                         Slotted(2, "a")])
    assert hv(Slotted(1, [2])) == hv(Slotted(1, [2]))
    # A set in an object's state is still order-independent.
    words = [f"w{i}" for i in range(30)]
    assert hv(Point(1, set(words))) == hv(Point(1, set(reversed(words))))
    # Attribute insertion order does not matter.
    a, b = types.SimpleNamespace(), types.SimpleNamespace()
    a.x, a.y = 1, 2
    b.y, b.x = 2, 1
    assert hv(a) == hv(b)


def test_subclasses_of_builtins_count_their_class():
    assert_all_distinct([1, True, Level.LOW, Color.RED, "x", MyStr("x"), {1: 2},
                         MyDict({1: 2}), collections.OrderedDict({1: 2}),
                         collections.defaultdict(int, {1: 2}), {1}, MySet({1}),
                         Pair(1, 2), (1, 2)])
    assert hv(Color.RED) == hv(Color(1))
    assert hv(Color.RED) != hv(Color.GREEN)
    assert hv(MyStr("x")) == hv(MyStr("x")) != hv(MyStr("y"))


def test_ordered_dict_order_matters_and_dict_subclasses_do_not():
    a = collections.OrderedDict([("a", 1), ("b", 2)])
    b = collections.OrderedDict([("b", 2), ("a", 1)])
    assert hv(a) != hv(b)
    assert hv(a) == hv(collections.OrderedDict([("a", 1), ("b", 2)]))
    words = [f"k{i}" for i in range(20)]
    d1 = collections.defaultdict(list, {w: [w] for w in words})
    d2 = collections.defaultdict(list, {w: [w] for w in reversed(words)})
    assert hv(d1) == hv(d2)
    assert hv(collections.defaultdict(list, d1)) != hv(collections.defaultdict(set, d1))
    m1, m2 = MyDict({w: 1 for w in words}), MyDict({w: 1 for w in reversed(words)})
    assert hv(m1) == hv(m2)
    s1, s2 = MySet(words), MySet(reversed(words))
    s1.tag = s2.tag = "t"
    assert hv(s1) == hv(s2)
    s2.tag = "u"
    assert hv(s1) != hv(s2)
    assert hv(collections.Counter("abracadabra")) == hv(collections.Counter("aaaaabbrrcd"))


def test_stdlib_values():
    for a, b, c in [
        (functools.partial(max, 1), functools.partial(max, 1), functools.partial(max, 2)),
        (datetime.datetime(2024, 1, 2, 3), datetime.datetime(2024, 1, 2, 3),
         datetime.datetime(2024, 1, 2, 4)),
        (datetime.date(2024, 1, 2), datetime.date(2024, 1, 2), datetime.date(2024, 1, 3)),
        (decimal.Decimal("1.5"), decimal.Decimal("1.5"), decimal.Decimal("1.50")),
        (pathlib.Path("a/b"), pathlib.Path("a") / "b", pathlib.Path("a/c")),
        (fractions.Fraction(1, 3), fractions.Fraction(2, 6), fractions.Fraction(1, 4)),
        (range(5), range(0, 5), range(6)),
        (slice(1, 2), slice(1, 2), slice(1, 3)),
    ]:
        assert hv(a) == hv(b), a
        assert hv(a) != hv(c), (a, c)
    assert hv(functools.partial(max, 1)) != hv(functools.partial(min, 1))
    # Reduced through copyreg.dispatch_table, as pickle does.
    import re
    assert _core.hash_call_ex(f, re.compile("a+"))[1] == ()
    assert hv(re.compile("a+")) == hv(re.compile("a" + "+"))
    assert hv(re.compile("a+")) != hv(re.compile("a*"))
    assert hv(re.compile("a+")) != hv(re.compile("a+", re.I))
    assert hv(int | str) == hv(int | str) != hv(int | bytes)
    assert hv(datetime.datetime(2024, 1, 2)) != hv(datetime.date(2024, 1, 2))
    assert hv(pathlib.PurePosixPath("a")) != hv("a")


def test_types_modules_functions():
    assert_all_distinct([int, float, str, Point, Point2, math, os, os.path.join,
                         os.path.split, math.sqrt, math.sin, len, max, f, "int",
                         test_types_modules_functions, str.upper, str.lower])
    assert hv(math) == hv(sys.modules["math"])
    assert hv(int) == hv(type(1))


def test_lambdas_closures_and_defaults():
    la = lambda x: x + 1  # noqa: E731
    lb = lambda x: x + 2  # noqa: E731
    assert hv(la) != hv(lb)
    same = [lambda x: x * 2 for _ in range(2)]
    assert hv(same[0]) == hv(same[1])
    with_default = [lambda x, i=i: x + i for i in range(3)]
    assert len({hv(g) for g in with_default}) == 3

    def make_adder(n):
        def add(x):
            return x + n
        return add

    assert hv(make_adder(1)) == hv(make_adder(1))
    assert hv(make_adder(1)) != hv(make_adder(2))
    assert hc(make_adder(1), 5) != hc(make_adder(2), 5)

    def outer():
        def fact(n):
            return 1 if n < 2 else n * fact(n - 1)
        return fact

    assert hv(outer()) == hv(outer())   # a recursive inner function is fine


def test_builtin_bound_methods():
    assert hc("abc".upper) == hc("abc".upper)
    assert hc("abc".upper) != hc("abd".upper)
    assert hc("abc".upper) != hc("abc".lower)
    assert hc([1].append, 2) == hc([1].append, 2)
    assert hc([1].append, 2) != hc([2].append, 2)
    assert hc(math.sqrt, 4.0) != hc(math.sin, 4.0)
    assert hc(math.sqrt, 4.0) != hc(math.sqrt, 9.0)
    assert hc(len, "ab") != hc(max, "ab")
    assert hc(dict.fromkeys, "ab") != hc(collections.OrderedDict.fromkeys, "ab")
    assert hc(str.maketrans, "a", "b") != hc(bytes.maketrans, b"a", b"b")
    assert hc(str.maketrans, {}) != hc(bytes.maketrans, {})


class Scaler:
    def __init__(self, k):
        self.k = k

    def scale(self, x):
        return x * self.k

    def __call__(self, x):
        return x * self.k


def test_callees():
    assert hc(Scaler(2).scale, 3) == hc(Scaler(2).scale, 3)
    assert hc(Scaler(2).scale, 3) != hc(Scaler(3).scale, 3)
    assert hc(Scaler(2), 3) == hc(Scaler(2), 3)
    assert hc(Scaler(2), 3) != hc(Scaler(3), 3)
    assert hc(Scaler(2), 3) != hc(Scaler(2).scale, 3)
    assert hc(Scaler, 2) != hc(Point, 2)
    assert hc(Scaler, 2) != hc(Scaler, 3)
    assert hc(functools.partial(max, 1), 2) != hc(functools.partial(max, 3), 2)
    assert hc(os.path.join, "a", "b") != hc(os.path.split, "a", "b")
    assert hc(f, 1) != hc(Scaler(1), 1)


def test_callee_receiver_that_cannot_be_pickled():
    class Holder:
        def __init__(self, n):
            self.n = n
            self.lock = threading.Lock()

        def get(self):
            return self.n

    d1, names = _core.hash_call_ex(Holder(1).get)
    d1b, _ = _core.hash_call_ex(Holder(1).get)
    d2, _ = _core.hash_call_ex(Holder(2).get)
    assert names == ("_thread.lock",)
    assert d1 == d1b != d2


# --------------------------------------------------------- unhashables


def test_unhashable_values_nested_in_arguments_keyed_by_type(tmp_path):
    lock1, lock2 = threading.Lock(), threading.Lock()
    d1, names = _core.hash_call_ex(f, [lock1], 1)
    assert names == ("_thread.lock",)
    assert _core.hash_call_ex(f, [lock2], 1)[0] == d1
    assert hc(f, [lock1], 1) == d1
    assert hc(f, [lock1], 2) != d1
    assert hc(f, [threading.RLock()], 1) != d1

    sock = socket.socket()
    try:
        k, names = _core.hash_call_ex(f, {"s": sock}, 5)
        assert names == ("socket.socket",)
        assert hc(f, {"s": sock}, 5) == k != hc(f, {"s": sock}, 6)
    finally:
        sock.close()


def test_cached_properties_and_nested_infrastructure_are_no_input():
    """What an object computed from its own state (a functools.cached_property)
    and the connection machinery inside a client do not change its key; its
    configuration does."""
    class Pool:
        def __init__(self):
            self.opened = False

    class Thread(threading.Thread):
        pass

    class Client:
        def __init__(self, url):
            self.url = url
            self.worker = Thread()

        @functools.cached_property
        def chat(self):
            return ("chat", self.url)

    a, b = Client("u"), Client("u")
    b.chat
    assert hv(a) == hv(b) != hv(Client("v"))
    b.worker.name = "renamed"                   # a Thread nested in a client: infrastructure
    assert hv(a) == hv(b)
    def use(t):
        return t.name

    # Given directly to a call, it is an input like any other.
    assert hc(use, Thread(name="a")) != hc(use, Thread(name="b"))


def test_direct_arguments_keyed_by_type_only_are_not_keyed(tmp_path):
    """A type-only key is never used for data a call reads: a direct
    argument that pickle refuses makes the call uncacheable, naming it."""
    def use(a, b=None):
        return a

    lock = threading.Lock()
    with pytest.raises(ValueError, match=r"argument 1 \(a\): a _thread.lock can be keyed by its type only"):
        hc(use, lock, 1)
    with pytest.raises(ValueError, match=r"keyword argument b: a _thread.lock"):
        hc(use, 1, b=lock)
    sock = socket.socket()
    try:
        with pytest.raises(ValueError, match="socket"):
            hc(use, sock)
    finally:
        sock.close()


def test_iterators_are_never_keyed_by_type():
    """Generators and other iterators pickle refuses would be consumed by
    keying: the call is not cached, wherever they sit."""
    def total(xs):
        return sum(xs)

    with pytest.raises(ValueError, match=r"argument 1 \(xs\): a generator is an iterator"):
        hc(total, (x for x in [1, 2, 3]))
    with pytest.raises(ValueError, match="generator is an iterator"):
        hc(total, [(x for x in [1])])
    # Picklable iterators are keyed by what they will yield.
    assert hc(total, iter([1, 2, 3])) == hc(total, iter([1, 2, 3])) != hc(total, iter([1, 2]))


def test_dict_views_keyed_by_contents():
    def total(xs):
        return sum(xs)

    d = {"a": 1, "b": 2}
    k_values, k_keys, k_items = hc(total, d.values()), hc(total, d.keys()), hc(total, d.items())
    assert len({k_values, k_keys, k_items}) == 3
    d["a"] = 10
    assert hc(total, d.values()) != k_values
    assert hc(total, d.items()) != k_items
    assert hc(total, d.keys()) == k_keys
    assert hc(total, {"b": 2, "a": 10}.items()) == hc(total, d.items())
    d["c"] = 0
    assert hc(total, d.keys()) != k_keys


def test_open_files_keyed_by_what_they_read(tmp_path):
    import json

    (tmp_path / "a.json").write_text('{"v": 1}')
    (tmp_path / "b.json").write_text('{"v": 2}')
    with open(tmp_path / "a.json") as fa, open(tmp_path / "b.json") as fb:
        ka, kb = hc(json.load, fa), hc(json.load, fb)
        assert ka != kb
        fa.read(2)
        assert hc(json.load, fa) != ka                  # its position counts
    with open(tmp_path / "a.json") as fa:
        assert hc(json.load, fa) == ka                  # same file, same place
    with open(tmp_path / "a.json", "rb") as fa:
        assert hc(json.load, fa) != ka                  # mode and type count
    (tmp_path / "a.json").write_text('{"v": 3, "w": 4}')
    with open(tmp_path / "a.json") as fa:
        assert hc(json.load, fa) != ka                  # the file changed
    r, w = os.pipe()
    with os.fdopen(r) as fr, os.fdopen(w, "w"):
        with pytest.raises(ValueError, match="stream"):
            hc(json.load, fr)


def test_paths_count_by_the_file_they_name(tmp_path):
    import pathlib

    def load(p, mode="r"):
        return open(p, mode).read()

    data = tmp_path / "data.csv"
    data.write_text("a,b\n1,2\n")
    k_str, k_path = hc(load, str(data)), hc(load, data)
    assert k_str != k_path                              # str and Path differ as values
    os.utime(data, ns=(1, 1))
    assert hc(load, str(data)) != k_str
    k_str = hc(load, str(data))
    data.write_text("a,b\n1,3\n")
    os.utime(data, ns=(1, 1))                           # same size and time, new content:
    assert hc(load, str(data)) == k_str                 # identity, not content: documented
    data.write_text("a,b\n1,2,3\n")
    assert hc(load, str(data)) != k_str
    assert hc(load, p=str(data)) == hc(load, p=str(data))
    # A directory counts by its listing.
    k_dir = hc(load, tmp_path)
    (tmp_path / "new.csv").write_text("x")
    assert hc(load, tmp_path) != k_dir
    # A string naming no file is just a string.
    assert hc(load, "gpt-4") == hc(load, "gpt-4")
    # Equal paths key alike however they were built (Python 3.13 pickles parts).
    assert hv(pathlib.Path("a/b")) == hv(pathlib.Path("a") / "b") == hv(pathlib.Path("a", "b"))
    assert hv(pathlib.PurePosixPath("a/b")) == hv(pathlib.PurePosixPath("a") / "b")
    assert hv(pathlib.PurePosixPath("a/b")) != hv(pathlib.Path("a/b"))   # the type counts
    assert hv(pathlib.Path("a/b")) != hv(pathlib.Path("a/c"))

    assert _core.hash_call_ex(f, 1, [2], {"a": 3}) == (hc(f, 1, [2], {"a": 3}), ())


def test_errors_from_reduce_count_as_unhashable_but_fatal_ones_propagate():
    class Broken:
        def __reduce_ex__(self, proto):
            raise RuntimeError("no")

    class Interrupting:
        def __reduce_ex__(self, proto):
            raise KeyboardInterrupt

    k, names = _core.hash_call_ex(f, [Broken()], 1)
    assert names == (f"{__name__}.test_errors_from_reduce_count_as_unhashable_but_fatal_ones_propagate.<locals>.Broken",)
    assert hc(f, [Broken()], 1) == k != hc(f, [Broken()], 2)
    with pytest.raises(KeyboardInterrupt):
        hv(Interrupting())


def test_buffers():
    import array
    a = array.array("d", [1.0, 2.0])
    assert hv(a) == hv(array.array("d", [1.0, 2.0]))
    assert_all_distinct([a, array.array("d", [1.0, 3.0]), array.array("f", [1.0, 2.0]),
                         memoryview(b"ab"), b"ab", bytearray(b"ab"), memoryview(b"ac")])
    assert hv(memoryview(b"abcdef")[::2]) == hv(memoryview(b"ace"))
    assert hv(memoryview(b"abcd").cast("B", (2, 2))) != hv(memoryview(b"abcd"))


# --------------------------------------------------------------- numpy


def test_numpy_arrays():
    np = pytest.importorskip("numpy")
    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    assert hv(a) == hv(a.copy())
    assert_all_distinct([a, a.reshape(4, 3), a.reshape(12), a.astype(np.float32),
                         a.astype(np.int64), a.astype(">f8"), a + 1, a.tolist(),
                         np.zeros(0), np.zeros((0, 3)), np.float64(1.0), 1.0,
                         np.float32(1.0), np.array(1.0), np.array([1.0])])
    b = a.copy()
    b[2, 3] = -1
    assert hv(a) != hv(b)
    # Non-contiguous views key like their contiguous copies.
    assert hv(a[:, ::2]) == hv(np.ascontiguousarray(a[:, ::2]))
    assert hv(a.T) == hv(np.ascontiguousarray(a.T))
    assert hv(np.asfortranarray(a)) == hv(a)
    assert hv(a[:, ::2]) != hv(a[:, 1::2])
    big = np.random.default_rng(0).random(1_000_000)
    big2 = big.copy()
    assert hv(big) == hv(big2)
    big2[-1] += 1
    assert hv(big) != hv(big2)


def test_numpy_dtypes():
    np = pytest.importorskip("numpy")
    s1 = np.zeros(3, dtype=[("a", "<i4"), ("b", "<f8")])
    s2 = np.zeros(3, dtype=[("a", "<i4"), ("c", "<f8")])
    assert hv(s1) == hv(s1.copy())
    assert hv(s1) != hv(s2)
    d1 = np.array(["2024-01-01", "2024-01-02"], dtype="datetime64[D]")
    assert hv(d1) == hv(d1.copy())
    assert hv(d1) != hv(d1.astype("datetime64[s]"))
    assert hv(d1[::-1]) == hv(d1[::-1].copy())
    o1 = np.array([1, "a", None], dtype=object)
    assert hv(o1) == hv(np.array([1, "a", None], dtype=object))
    assert hv(o1) != hv(np.array([1, "b", None], dtype=object))
    assert hv(np.array(["ab", "c"])) != hv(np.array(["a", "bc"]))
    assert hv(np.array([True, False])) != hv(np.array([1, 0], dtype=np.uint8))


def test_numpy_in_containers_and_subclasses():
    np = pytest.importorskip("numpy")
    x = np.arange(5)
    assert hv({"x": x, "y": [x]}) == hv({"y": [x.copy()], "x": x.copy()})
    m = np.ma.masked_array([1, 2, 3], mask=[0, 1, 0])
    assert hv(m) == hv(np.ma.masked_array([1, 2, 3], mask=[0, 1, 0]))
    assert hv(m) != hv(np.ma.masked_array([1, 2, 3], mask=[0, 0, 0]))


# ------------------------------------------------------- determinism

DETERMINISM_SCRIPT = """
import json, sys, sysconfig, dataclasses, collections
from devstash import _core
_core.set_library_prefixes(tuple(sorted({sysconfig.get_paths()[k] for k in
    ("stdlib", "platstdlib", "purelib", "platlib")})))

@dataclasses.dataclass
class Rec:
    name: str
    tags: set

def helper(x):
    return x in {"alpha", "beta", "gamma", "delta", "epsilon", "zeta"}

def user_fn(x, opts=frozenset({"p", "q", "r", "s"})):
    return helper(x) and x not in opts

words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"] + [f"w{i}" for i in range(40)]
fwd = {w: len(w) for w in words}
rev = {w: len(w) for w in reversed(words)}
values = [
    fwd, rev, set(words), frozenset(reversed(words)),
    {"outer": {w: {w, w.upper()} for w in words}, "list": [set(words[:5]), {"k": frozenset(words)}]},
    Rec("r", set(words)), collections.Counter("".join(words)),
    ("str", 1, 2.5, None, True, b"bytes", 10**40, -0.0, float("nan")),
]
print(json.dumps([_core.hash_value(v).hex() for v in values]
                 + [_core.hash_call(max, 1, 2, key=None).hex(),
                    _core.hash_call(sorted, set(words), key=len, reverse=True).hex(),
                    _core.hash_call(user_fn, "alpha").hex(),
                    _core.hash_code(user_fn).hex()]))
"""


def test_deterministic_across_processes_and_hash_seeds(tmp_path):
    script = tmp_path / "det.py"
    script.write_text(DETERMINISM_SCRIPT)
    results = set()
    for seed in ("0", "1", "4242", "random"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, str(script)], env=env, check=True,
                             capture_output=True, text=True).stdout
        results.add(out.strip())
    assert len(results) == 1
    digests = json.loads(results.pop())
    assert digests[0] == digests[1]      # dict built in two orders
    assert digests[2] != digests[3]      # set vs frozenset
    # The same values hashed in this process.
    ns = {"__name__": "__main__"}
    exec(compile(DETERMINISM_SCRIPT.replace("print(", "result = ("), "det", "exec"), ns)
    assert json.loads(ns["result"]) == digests


# ----------------------------------------------------------- code identity

CODE_RUNNER = """
import json, sys, sysconfig, importlib
sys.dont_write_bytecode = True
sys.path.insert(0, sys.argv[1])
from devstash import _core
prefixes = tuple(sorted({sysconfig.get_paths()[k] for k in
    ("stdlib", "platstdlib", "purelib", "platlib")})) + tuple(sys.argv[2:])
_core.set_library_prefixes(prefixes)
import os.path
mod = importlib.import_module("usermod")
code = _core.hash_code(mod.f)
print(json.dumps({
    "call": _core.hash_call(mod.f, 3).hex(),
    "method": _core.hash_call(mod.Model(2).run, 3).hex(),
    "ctor": _core.hash_call(mod.Model, 2).hex(),
    "code": code.hex() if code else None,
    "join": _core.hash_call(os.path.join, "a", "b").hex(),
    "join_code": _core.hash_code(os.path.join),
}))
"""

BASE = """
import math

def helper2(x):
    return x - 1

def helper(x):
    return helper2(x) * 2

def f(x, scale=3):
    return [helper(i) + math.floor(scale) for i in range(x)]


class Base:
    def step(self, x):
        return x + 1

    @staticmethod
    def util(x):
        return -x


class Model(Base):
    def __init__(self, k):
        self.k = self.prepare(k)

    def prepare(self, k):
        return k * 10

    def run(self, x):
        return self.util(self.step(x)) * self.k
"""


def run_version(tmp_path, name, source, *library):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "usermod.py").write_text(textwrap.dedent(source))
    runner = tmp_path / "runner.py"
    runner.write_text(CODE_RUNNER)
    lib = [str(tmp_path / d) for d in library]
    out = subprocess.run([sys.executable, str(runner), str(folder), *lib], check=True,
                         capture_output=True, text=True,
                         env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1")).stdout
    return json.loads(out)


def test_code_identity(tmp_path):
    base = run_version(tmp_path, "base", BASE)
    assert base["code"] is not None
    moved = run_version(tmp_path, "moved", "\n\n\n# a comment\n" + BASE.replace(
        "def f(", "\n\n\n\ndef f("))
    assert moved["call"] == base["call"]
    assert moved["code"] == base["code"]
    edited = run_version(tmp_path, "edited", BASE.replace("math.floor(scale)", "math.ceil(scale)"))
    assert edited["call"] != base["call"]
    default = run_version(tmp_path, "default", BASE.replace("scale=3", "scale=4"))
    assert default["call"] != base["call"]
    helper = run_version(tmp_path, "helper", BASE.replace("* 2", "* 3"))
    assert helper["call"] != base["call"]
    helper2 = run_version(tmp_path, "helper2", BASE.replace("x - 1", "x - 2"))
    assert helper2["call"] != base["call"]
    moved_helper = run_version(tmp_path, "moved_helper", BASE.replace(
        "def helper(x)", "\n\n\ndef helper(x)"))
    assert moved_helper["call"] == base["call"]
    assert moved["method"] == base["method"] and moved["ctor"] == base["ctor"]
    assert edited["method"] == base["method"]      # run() does not call f
    # Methods it calls on self, found through the class (and its bases).
    step = run_version(tmp_path, "step", BASE.replace("x + 1", "x + 2"))
    assert step["method"] != base["method"]
    assert step["call"] == base["call"]
    util = run_version(tmp_path, "util", BASE.replace("return -x", "return x"))
    assert util["method"] != base["method"]
    prepare = run_version(tmp_path, "prepare", BASE.replace("k * 10", "k * 11"))
    assert prepare["ctor"] != base["ctor"]
    # A stdlib function is keyed by its name only.
    assert base["join_code"] is None
    assert base["join"] == edited["join"] == helper["join"]


def test_library_code_is_keyed_by_name_only(tmp_path):
    lib = run_version(tmp_path, "lib", BASE, "lib")
    assert lib["code"] is None
    lib_edited = run_version(tmp_path, "lib_edited", BASE.replace("x - 1", "x - 2"),
                             "lib_edited")
    assert lib_edited["call"] == lib["call"]
    user = run_version(tmp_path, "user", BASE)
    assert user["call"] != lib["call"]


def test_hash_code_in_process():
    def g(x):
        return x + 1

    def h(x):
        return x + 2

    assert _core.hash_code(g) != _core.hash_code(h)
    assert _core.hash_code(g.__code__) == _core.hash_code(g.__code__)
    assert _core.hash_code(os.path.join) is None
    with pytest.raises(TypeError):
        _core.hash_code(1)


def test_set_library_prefixes_validates():
    with pytest.raises(TypeError):
        _core.set_library_prefixes((1,))
    with pytest.raises(TypeError):
        _core.set_library_prefixes(None)
    _core.set_library_prefixes(())
    _core.set_library_prefixes(["/nonexistent"])


def test_reentrant_hashing():
    class Nested:
        def __reduce_ex__(self, proto):
            inner = hv({"x": [1, 2, 3]})
            return (Nested, (inner,))

    assert hv([Nested(), 1]) == hv([Nested(), 1])
    assert hv(Nested()) != hv(Nested().__reduce_ex__(5)[1][0])


def test_no_reference_leaks():
    import gc
    np = pytest.importorskip("numpy")
    arr = np.arange(10)[::2]
    lock = threading.Lock()
    values = [1, "x", (1, [2, {3: {4}}]), Point(1, {2}), lock, arr, math.sqrt,
              collections.OrderedDict(a=1), MySet({1})]

    def run():
        for _ in range(200):
            for v in values:
                hv(v)
            hc(Scaler(1).scale, *values[:4], k=values)
            _core.hash_call_ex(f, [lock], x=values)
            try:
                hc(f, lock)
            except ValueError:
                pass
            cyclic = []
            cyclic.append(cyclic)
            hv(cyclic)

    run()
    gc.collect()
    before = sys.gettotalrefcount() if hasattr(sys, "gettotalrefcount") else None
    blocks = sys.getallocatedblocks()
    run()
    gc.collect()
    assert sys.getallocatedblocks() - blocks < 100
    if before is not None:
        assert sys.gettotalrefcount() - before < 100


class OddReduce:
    """__reduce_ex__ returns whatever it was given (made fresh per call)."""

    def __init__(self, make):
        self.make = make

    def __reduce_ex__(self, proto):
        return self.make()


class RaisingModuleMeta(type):
    @property
    def __module__(cls):
        raise RuntimeError("no module")


class OddClass(metaclass=RaisingModuleMeta):
    pass


def test_odd_objects_are_keyed_stably():
    import io
    import itertools
    import mmap
    import unittest.mock
    import weakref

    odd = [
        OddReduce(lambda: 42),
        OddReduce(lambda: (1,)),
        OddReduce(lambda: (1,) * 7),
        OddReduce(lambda: (OddReduce, 5)),
        OddReduce(lambda: (OddReduce, (), None, iter([1, 2]))),
        OddReduce(lambda: (OddReduce, (), None, None, iter([(1, 2), (3, 4)]))),
        OddReduce(lambda: "a_global_name"),
        types.ModuleType("m"), OddClass, OddClass(), io.BytesIO(b"abc"),
        weakref.ref(OddClass), sys, unittest.mock.Mock(),
        property(lambda s: 1), NotImplemented, object(), Exception("e"),
    ]
    if sys.version_info < (3, 12):
        odd.append(itertools.count())
    else:
        # Pickling itertools objects is deprecated in 3.12 and gone in 3.14:
        # an iterator pickle refuses, on every version from 3.12 on.
        with pytest.raises(ValueError, match="is an iterator"):
            _core.hash_call_ex(f, [itertools.count()])
    with mmap.mmap(-1, 16) as m:
        odd.append(m)
        for v in odd:
            d1, names1 = _core.hash_call_ex(f, [v])
            d2, names2 = _core.hash_call_ex(f, [v])
            assert (d1, names1) == (d2, names2), v
    assert _core.hash_call_ex(f, [OddReduce(lambda: 42)])[1] == (f"{__name__}.OddReduce",)
    assert _core.hash_call_ex(f, [OddReduce(lambda: (1,) * 7)])[1] == (f"{__name__}.OddReduce",)
    assert _core.hash_call_ex(f, [weakref.ref(OddClass)])[1] == ("weakref.ReferenceType",)
    # Pair order in dictitems does not matter; their content does.
    a = OddReduce(lambda: (OddReduce, (), None, None, iter([(1, 2), (3, 4)])))
    b = OddReduce(lambda: (OddReduce, (), None, None, iter([(3, 4), (1, 2)])))
    c = OddReduce(lambda: (OddReduce, (), None, None, iter([(3, 4), (1, 3)])))
    assert hv(a) == hv(b) != hv(c)
    # listitems order does.
    a = OddReduce(lambda: (OddReduce, (), None, iter([1, 2])))
    b = OddReduce(lambda: (OddReduce, (), None, iter([2, 1])))
    assert hv(a) != hv(b)
