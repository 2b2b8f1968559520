"""devstash.Stash: the stash-memory README's examples as written, the rules
of the generated methods, the options (freeze, weakref, gc, compact),
pickling and copying, errors for bad use, and a marked line that returns
100,000 records, cached and loaded by a real script run twice."""
import copy
import gc
import pickle
import sys
import weakref

import pytest

from devstash import Stash, conserve


# ---- the seed README's examples, as written --------------------------------

def test_quickstart_example(capsys):
    @Stash
    class Example:
        name: str
        age: int
        is_single: bool

    example1 = Example(
        name="Tony Stark",
        age=34,
        is_single=False
    )

    print(example1.name)        # Tony Stark
    print(example1.age)         # 34
    print(example1.is_single)   # False
    assert capsys.readouterr().out == "Tony Stark\n34\nFalse\n"
    # the qualified name, as a dataclass's repr: the class is local here
    assert repr(example1) == ("test_quickstart_example.<locals>."
                              "Example(name='Tony Stark', age=34, is_single=False)")


def test_freeze_example():
    @Stash(freeze=True)
    class Example:
        name: str
        age: int
        is_villain: bool

    example1 = Example(
        name="Otto Octavius",
        age=52,
        is_villain=True
    )

    with pytest.raises(AttributeError, match="'name'"):
        example1.name = "Norman Osborn"     # Raises an AttributeError, as values are immutable.
    assert example1.name == "Otto Octavius"


def test_conserve_example(capsys):
    @Stash
    class Example:
        name: str
        age: int
        is_superhero: bool

        # Method is preserved
        @conserve
        def smash(self):
            print(f"{self.name} SMASH!")

        # Method is NOT preserved, due to lack of @conserve-decorator
        def surrender(self):
            print(f"{self.name} surrenders!")

    example1 = Example(
        name="Bruce Banner",
        age=39,
        is_superhero=True
    )

    example1.smash()                # Successfully runs and prints message.

    try:                            # Raises AttributeError: Instance has no atribute 'surrender'
        example1.surrender()
    except AttributeError as e:
        print(f"Method missing {e}")
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Bruce Banner SMASH!"
    assert out[1].startswith("Method missing ") and "surrender" in out[1]
    assert not hasattr(Example, "surrender")


def test_inheritance_example_conserved_methods_are_inherited():
    @Stash
    class Person:
        name: str

        @conserve
        def greet(self):
            return f"Hi, {self.name}"

    @Stash
    class Hero(Person):
        power: str = "flight"

        @conserve
        def boast(self):
            return f"{self.greet()}: {self.power}!"

    hero = Hero("Clark")
    assert hero.boast() == "Hi, Clark: flight!"
    assert hero.greet() == "Hi, Clark"
    assert isinstance(hero, Person)
    assert Hero.__stash_fields__ == ("name", "power")
    assert repr(Hero("Diana", power="strength")).endswith(".Hero(name='Diana', power='strength')")


def test_generated_classes_are_cached():
    class Point:
        x: int
        y: int

    first = Stash(Point)
    assert Stash(Point) is first
    assert Stash(first) is first  # decorating the Stash class: its definition again
    assert Stash(freeze=True)(Point) is Stash(freeze=True)(Point)
    assert Stash(freeze=True)(Point) is not first


@pytest.mark.skipif(sys.version_info[:2] == (3, 12), reason="3.12 makes interned strs immortal: not interned")
def test_string_values_are_interned():
    @Stash
    class Row:
        city: str

    a = Row("".join(["Lon", "don"]))
    b = Row("".join(["Lond", "on"]))
    assert a.city is b.city
    long_text = "x" * 1000
    assert Row(long_text).city is long_text  # long text is kept as given


@pytest.mark.skipif(sys.version_info[:2] == (3, 12), reason="3.12 makes interned strs immortal: not interned")
def test_interning_stays_right_as_strs_come_and_go():
    # stash.c remembers the last interned result of a few str objects by
    # address: many strs, freed and made again (new objects at reused
    # addresses), must each still get their own value, interned.
    @Stash
    class Row:
        city: str

    for round_ in range(3):
        for k in range(500):
            text = "".join(["city-", str(k), "-", str(round_)])
            row = Row(text)
            assert row.city == text
            assert row.city is sys.intern(text)
            assert Row(text).city is row.city
            del text, row


def test_string_values_are_kept_as_given_on_3_12():
    @Stash
    class Row:
        city: str

    city = "".join(["Par", "is", "-", str(id(Row))])
    assert Row(city).city is city
    if sys.version_info[:2] == (3, 12):
        assert sys.getrefcount(city) < 100  # not made immortal


def test_metadata_of_the_original_class_is_kept():
    class Film:
        """A film."""
        title: str
        year: int = 1999

    Record = Stash(Film)
    assert Record.__name__ == "Film"
    assert Record.__qualname__ == Film.__qualname__
    assert Record.__module__ == __name__
    assert Record.__doc__ == "A film."
    assert Record.__annotations__ == {"title": str, "year": int}
    assert Record.__stash_origin__ is Film
    assert Record.__match_args__ == ("title", "year")


# ---- the generated methods ---------------------------------------------------

@Stash
class Row:
    name: str
    age: int
    is_single: bool = True


@Stash(freeze=True)
class FrozenRow:
    name: str
    age: int = 0


@Stash(compact=True)
class CompactRow:
    uid: int
    name: str
    active: bool
    score: float = 0.5


def test_layout_has_no_dict_and_no_gc_header():
    row = Row("a", 1, False)
    assert sys.getsizeof(row) == 16 + 3 * 8
    assert not hasattr(row, "__dict__")
    assert not gc.is_tracked(row)
    with pytest.raises(AttributeError, match="email"):
        row.email = "a@example.com"
    with pytest.raises(TypeError):
        weakref.ref(row)  # only with weakref=True


def test_repr():
    assert repr(Row("Tony Stark", 34, False)) == "Row(name='Tony Stark', age=34, is_single=False)"
    assert repr(CompactRow(1, "a", True)) == "CompactRow(uid=1, name='a', active=True, score=0.5)"


def test_signature():
    import inspect

    assert str(inspect.signature(Row)) == "(name, age, is_single=True)"
    assert str(inspect.signature(CompactRow)) == "(uid, name, active, score=0.5)"
    assert Row.__doc__ is None


def test_init_positional_and_keyword_with_defaults():
    assert Row("a", 1) == Row(name="a", age=1, is_single=True)
    assert Row("a", age=2, is_single=False).age == 2
    assert FrozenRow("b").age == 0


@pytest.mark.parametrize("call, message", [
    (lambda: Row("a"), r"Row\(\) missing 1 required argument: 'age'"),
    (lambda: Row(), r"Row\(\) missing 2 required arguments: 'name' and 'age'"),
    (lambda: Row("a", 1, True, 4), r"Row\(\) takes 3 positional arguments but 4 were given"),
    (lambda: Row("a", 1, name="b"), r"Row\(\) got multiple values for argument 'name'"),
    (lambda: Row("a", 1, nmae="b"), r"Row\(\) got an unexpected keyword argument 'nmae'"),
])
def test_init_errors_read_as_a_dataclass_s(call, message):
    with pytest.raises(TypeError, match=message):
        call()


def test_mutable_records_can_be_changed_and_do_not_hash():
    row = Row("a", 1)
    row.age = 2
    assert row == Row("a", 2)
    assert Row.__hash__ is None
    with pytest.raises(TypeError, match="unhashable"):
        hash(row)


def test_equality_rules():
    assert Row("a", 1) == Row("a", 1)
    assert Row("a", 1) != Row("a", 2)
    assert Row("a", 1) != ("a", 1, True)
    assert FrozenRow("a", 1) != Row("a", 1, True)  # another class is never equal
    with pytest.raises(TypeError):
        Row("a", 1) < Row("a", 2)  # no ordering


def test_frozen_records_hash_and_refuse_changes():
    row = FrozenRow("a", 1)
    assert hash(row) == hash(FrozenRow("a", 1))
    assert len({FrozenRow("a", 1), FrozenRow("a", 1), FrozenRow("b", 1)}) == 2
    with pytest.raises(AttributeError, match="cannot assign to field 'age'"):
        row.age = 2
    with pytest.raises(AttributeError, match="cannot delete field 'name'"):
        del row.name
    with pytest.raises(AttributeError):
        row.other = 1
    with pytest.raises((AttributeError, TypeError)):
        object.__setattr__(row, "age", 3)
    assert row == FrozenRow("a", 1)


def test_deleted_field_of_a_mutable_record():
    row = Row("a", 1)
    del row.age
    assert repr(row) == "Row(name='a', age=<deleted>, is_single=True)"
    with pytest.raises(AttributeError):
        row.age
    with pytest.raises(AttributeError, match="age"):
        pickle.dumps(row)


def test_repr_of_a_record_that_contains_itself():
    @Stash(gc=True)
    class Box:
        content: object = None

    box = Box()
    box.content = [box]
    assert repr(box) == "{0}(content=[{0}(...)])".format(Box.__qualname__)


def test_match_statement():
    row = Row("Ada", 36)
    match row:
        case Row(name, age, single):
            assert (name, age, single) == ("Ada", 36, True)
        case _:
            pytest.fail("no match")
    match FrozenRow("Bob"):
        case FrozenRow(name="Bob", age=0):
            pass
        case _:
            pytest.fail("no match")


# ---- pickling and copying ----------------------------------------------------

@pytest.mark.parametrize("record", [Row("a", 1, False), FrozenRow("b", 2), CompactRow(7, "c", True, 2.5)])
def test_pickle_round_trip_by_reference_to_the_class(record):
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        data = pickle.dumps(record, protocol=protocol)
        back = pickle.loads(data)
        assert type(back) is type(record)
        assert back == record
    assert record.__reduce__() == (type(record), tuple(getattr(record, f) for f in record.__stash_fields__))
    assert record.__reduce_ex__(5) == record.__reduce__()


def test_pickle_is_compact():
    rows = [Row("same", i, i % 2 == 0) for i in range(10_000)]
    data = pickle.dumps(rows, protocol=5)
    assert pickle.loads(data) == rows
    assert len(data) / len(rows) < 16


def test_copy_deepcopy_and_replace():
    row = Row("a", [1, 2][0])
    shallow = copy.copy(row)
    assert shallow == row and shallow is not row
    holder = Row("x", 1)
    holder.name = ["list"]  # fields of a mutable record take any value
    deep = copy.deepcopy(holder)
    assert deep == holder and deep.name is not holder.name
    changed = row.__replace__(age=5)
    assert changed == Row("a", 5) and row.age == 1
    if sys.version_info >= (3, 13):
        assert copy.replace(FrozenRow("a", 1), age=2) == FrozenRow("a", 2)
    with pytest.raises(TypeError, match="unexpected keyword argument 'nope'"):
        row.__replace__(nope=1)


def test_weakref_only_when_asked():
    @Stash(weakref=True)
    class Node:
        value: int

    node = Node(1)
    ref = weakref.ref(node)
    assert ref() is node
    assert sys.getsizeof(node) == 16 + 2 * 8
    del node
    assert ref() is None


def test_gc_true_records_in_a_cycle_are_collected():
    @Stash(gc=True)
    class Link:
        other: object = None

    @Stash(gc=True, weakref=True)
    class Watched:
        other: object = None

    a, b = Watched(), Link()
    a.other, b.other = b, a
    assert gc.is_tracked(a) and gc.is_tracked(b)
    ref = weakref.ref(a)
    del a, b
    gc.collect()
    assert ref() is None


def test_gc_true_long_chain_is_freed_without_a_deep_c_stack():
    @Stash(gc=True)
    class Cell:
        next: object = None

    head = None
    for _ in range(200_000):
        head = Cell(head)
    del head  # the trashcan keeps this off the C stack


def test_subclass_of_a_gc_record_is_tracked_too():
    @Stash(gc=True)
    class Base:
        a: object = None

    @Stash
    class Sub(Base):
        b: int = 0

    assert gc.is_tracked(Sub())


# ---- compact=True -------------------------------------------------------------

def test_compact_fields_are_unboxed():
    row = CompactRow(2**62, "n", False)
    assert sys.getsizeof(row) == 16 + 8 + 8 + 8 + 8  # uid, name, score, active (padded)
    assert (row.uid, row.name, row.active, row.score) == (2**62, "n", False, 0.5)
    assert type(row.uid) is int and type(row.active) is bool and type(row.score) is float
    assert sys.getsizeof(Stash(compact=True)(type("Small", (), {"__annotations__": {
        "uid": int, "name": str, "active": bool}}))(1, "a", True)) == 40
    row.uid = -5
    row.score = 3
    assert row == CompactRow(-5, "n", False, 3.0)
    assert CompactRow(1, "a", True, 1) == CompactRow(1, "a", True, 1.0)


@pytest.mark.parametrize("args, error, message", [
    ((2**63, "a", True), OverflowError, "CompactRow.uid is a compact int field.*does not fit in 64 bits"),
    ((-2**63 - 1, "a", True), OverflowError, "does not fit in 64 bits"),
    (("1", "a", True), TypeError, "CompactRow.uid is a compact int field.*takes an int, not str"),
    ((1, "a", 1), TypeError, "CompactRow.active is a compact bool field.*takes a bool, not int"),
    ((1, "a", True, "x"), TypeError, "CompactRow.score is a compact float field.*not str"),
])
def test_compact_values_that_do_not_fit_are_refused(args, error, message):
    with pytest.raises(error, match=message):
        CompactRow(*args)


@pytest.mark.parametrize("field, value, error, message", [
    ("uid", 2**64, OverflowError, "CompactRow.uid is a compact int field.*does not fit in 64 bits"),
    ("uid", "7", TypeError, "CompactRow.uid is a compact int field.*takes an int, not str"),
    ("active", 0, TypeError, "CompactRow.active is a compact bool field.*takes a bool, not int"),
    ("score", None, TypeError, "CompactRow.score is a compact float field.*not NoneType"),
])
def test_compact_assignment_is_checked_like_construction(field, value, error, message):
    row = CompactRow(1, "a", True)
    with pytest.raises(error, match=message):
        setattr(row, field, value)
    assert row == CompactRow(1, "a", True)
    with pytest.raises(AttributeError, match=f"cannot delete compact field '{field}'"):
        delattr(row, field)
    row.name = "b"  # a reference field as usual
    with pytest.raises(AttributeError, match="nothing"):
        row.nothing = 1


def test_compact_limits_are_kept():
    assert CompactRow(2**63 - 1, "a", True).uid == 2**63 - 1
    assert CompactRow(-2**63, "a", True).uid == -2**63


def test_compact_default_must_fit():
    with pytest.raises(TypeError, match="its default must be an int"):
        @Stash(compact=True)
        class Bad:
            n: int = "zero"


# ---- errors for bad use ---------------------------------------------------------

def test_stash_of_a_non_class_is_refused():
    with pytest.raises(TypeError, match="@Stash decorates a class, not function"):
        @Stash
        def f():
            pass
    with pytest.raises(TypeError, match="decorates a class, not int"):
        Stash(3)


def test_unknown_and_wrong_options_are_refused():
    with pytest.raises(TypeError, match="unknown option 'frozen'"):
        Stash(frozen=True)
    with pytest.raises(TypeError, match="freeze takes True or False"):
        Stash(freeze="yes")


def test_field_named_like_a_conserved_method_is_refused():
    with pytest.raises(TypeError, match="both a field and a conserved method"):
        @Stash
        class Clash:
            name: str

            @conserve
            def name(self):
                return 1

    @Stash
    class Base:
        a: int

        @conserve
        def label(self):
            return "x"

    with pytest.raises(TypeError, match="both a field and a conserved method"):
        @Stash
        class Sub(Base):
            label: str


@pytest.mark.parametrize("default", [[], {}, set(), bytearray()])
def test_mutable_defaults_are_refused(default):
    with pytest.raises(ValueError, match="mutable default"):
        Stash(type("Bad", (), {"__annotations__": {"items": list}, "items": default}))


def test_conserving_init_and_bad_targets_are_refused():
    with pytest.raises(TypeError, match="Stash generates __init__"):
        @Stash
        class Bad:
            a: int

            @conserve
            def __init__(self, a):
                self.a = a
    with pytest.raises(TypeError, match="@conserve marks a method"):
        conserve(42)


def test_frozen_and_mutable_do_not_mix_in_inheritance():
    with pytest.raises(TypeError, match="cannot derive a non-frozen Stash class from a frozen one"):
        @Stash
        class Sub(FrozenRow):
            extra: int = 0


def test_conserved_kinds_of_methods_and_super():
    @Stash
    class Base:
        x: int

        @conserve
        def describe(self):
            return f"x={self.x}"

    @Stash
    class Thing(Base):
        @conserve
        @staticmethod
        def unit():
            return "m"

        @conserve
        @classmethod
        def make(cls, x):
            return cls(x)

        @property
        @conserve
        def double(self):
            return self.x * 2

        @conserve
        def describe(self):
            return "thing " + super().describe()

    thing = Thing.make(4)
    assert type(thing) is Thing
    assert (Thing.unit(), thing.double, thing.describe()) == ("m", 8, "thing x=4")


def test_classvar_annotations_are_not_fields():
    from typing import ClassVar

    @Stash
    class Counter:
        limit: ClassVar[int] = 10
        value: int = 0

    assert Counter.__stash_fields__ == ("value",)


def test_records_created_and_destroyed_in_loops():
    """Many constructions, failures and copies: under `make test-asan`,
    what a leak, a double free or an overflow would show."""
    for i in range(2_000):
        rows = [Row(f"n{i}", i), FrozenRow("f", i), CompactRow(i, "c", True, i / 3)]
        rows.append(pickle.loads(pickle.dumps(rows[i % 3])))
        rows.append(copy.deepcopy(rows[0]))
        rows.append(rows[1].__replace__(age=-i))
        assert hash(rows[1]) == hash(FrozenRow("f", i))
        assert repr(rows[2]).startswith("CompactRow(")
        for bad in (lambda: Row(), lambda: CompactRow(2**64, "c", True), lambda: Row("a", 1, x=1)):
            with pytest.raises((TypeError, OverflowError)):
                bad()
        del rows


# ---- the marked line ------------------------------------------------------------

def test_marked_line_returning_100_000_records_hits_on_the_second_run(scripts):
    scripts.write("script.py", """
        import devstash
        devstash.activate()
        from devstash import Stash

        @Stash
        class Item:
            sku: str
            count: int
            in_stock: bool

        def build(n):
            print("building")
            return [Item(f"sku{i % 997}", i, i % 3 == 0) for i in range(n)]

        records = build(100_000)  # @devstash
        fresh = [Item(f"sku{i % 997}", i, i % 3 == 0) for i in range(100_000)]
        print(len(records), type(records[0]).__name__, records == fresh, records[99_999])
        print(records[5].sku == records[5 + 997].sku)
    """)
    first = scripts.run().stdout.splitlines()
    assert first == ["building", "100000 Item True Item(sku='sku299', count=99999, in_stock=True)", "True"]
    second = scripts.run().stdout.splitlines()
    assert second == first[1:]  # build() did not run, the loaded records are equal


# ---- classes around Stash classes ------------------------------------------------

def test_plain_subclass_of_a_stash_class_works_and_pickles_its_dict():
    class Sub(Row):
        def double(self):
            return self.age * 2

    sub = Sub("a", 2)
    sub.note = "extra"
    assert (sub.double(), repr(sub)) == (4, f"{Sub.__qualname__}(name='a', age=2, is_single=True)")
    Sub.__qualname__ = "Sub"  # pickle finds it by module and qualified name
    globals()["Sub"] = Sub
    try:
        back = pickle.loads(pickle.dumps(sub))
    finally:
        del globals()["Sub"]
    assert type(back) is Sub and back == sub and back.note == "extra"


def test_conserved_methods_of_a_plain_base_are_kept():
    class Mixin:
        @conserve
        def shout(self):
            return self.word.upper()

        def whisper(self):
            return self.word.lower()

    @Stash
    class Word(Mixin):
        word: str

    assert Word("Hey").shout() == "HEY"
    assert not hasattr(Word, "whisper")
    assert Mixin not in Word.__mro__  # no __dict__ comes with it


def test_a_replaced_layout_is_refused_not_trusted():
    @Stash(freeze=True)
    class Point:
        x: int
        y: int = 0

    for bad in (5, (1, 2), ((1, 2), (0, 0)), (("x",), ())):
        Point.__stash_layout__ = bad
        assert Point(1, 2) == Point(1, 2)  # all positional: the layout is not read
        with pytest.raises(TypeError, match="__stash_layout__ has been replaced"):
            Point(1)
        with pytest.raises(TypeError, match="__stash_layout__ has been replaced"):
            Point(1, 2).x = 3
    del Point.__stash_layout__
    with pytest.raises(TypeError, match="lost its __stash_layout__"):
        Point(x=1)
