"""devstash.Stash: lean records for the values people cache.

``@Stash`` turns an annotated class into a record type of devstash's own
(csrc/stash.c): the fields sit inline at fixed offsets, an instance has no
``__dict__``, no weakref slot and no GC header unless asked, and the C type
constructs, compares, hashes, prints and pickles it. This module is the
policy: which annotations are fields, which options and defaults are
allowed, which methods the new class keeps (those marked ``@conserve``).
"""
import sys

from . import _core

__all__ = ["Stash", "conserve"]

# stash.h's option bits and storage kinds
_FREEZE, _WEAKREF, _GC = 1, 2, 4
_OBJECT, _INT, _FLOAT, _BOOL = 0, 1, 2, 3
_OPTIONS = ("freeze", "weakref", "gc", "compact")
_COMPACT = {int: _INT, float: _FLOAT, bool: _BOOL, "int": _INT, "float": _FLOAT, "bool": _BOOL}
_MUTABLE = (list, dict, set, bytearray)
_MARK = "__stash_conserve__"
_GENERATED = ("__init__", "__new__")
_MISSING = object()


def conserve(method):
    """Keeps a method (plain, static, class method or property) on the class
    ``@Stash`` makes; methods without it are left out."""
    target = _underlying(method)
    if target is None:
        raise TypeError("@conserve marks a method, staticmethod, classmethod or property, "
                        f"not {type(method).__name__}")
    try:
        setattr(target, _MARK, True)
    except (AttributeError, TypeError):
        raise TypeError(f"@conserve cannot mark {type(method).__name__} {method!r}") from None
    return method


def _underlying(obj):
    """The function a conserve mark goes on: a staticmethod's or
    classmethod's function, a property's getter, or obj itself."""
    if isinstance(obj, (staticmethod, classmethod)):
        return obj.__func__
    if isinstance(obj, property):
        return obj.fget
    if callable(obj) and hasattr(obj, "__dict__") and not isinstance(obj, type):
        return obj
    return None


def _is_conserved(obj) -> bool:
    target = _underlying(obj)
    return target is not None and getattr(target, _MARK, False) is True


def Stash(cls=None, /, **options):
    """``@Stash`` or ``@Stash(freeze=True, weakref=False, gc=False,
    compact=False)`` on an annotated class: a record class with the
    annotations as fields (README.md, "Stash records")."""
    for name, value in options.items():
        if name not in _OPTIONS:
            raise TypeError(f"Stash() got an unknown option {name!r}: the options are "
                            "freeze, weakref, gc and compact")
        if not isinstance(value, bool):
            raise TypeError(f"Stash option {name} takes True or False, not {value!r}")
    key = tuple(options.get(name, False) for name in _OPTIONS)
    if cls is None:
        return lambda cls: _stash(cls, key)
    return _stash(cls, key)


def _stash(cls, key):
    """The record class of cls with these options: made once, then the same
    class each time (cached on the original class)."""
    if not isinstance(cls, type):
        raise TypeError(f"@Stash decorates a class, not {type(cls).__name__} {cls!r:.80}")
    origin = cls.__dict__.get("__stash_origin__")
    if origin is not None:  # a Stash class again: its definition
        cls = origin
    cache = cls.__dict__.get("__stash_cache__")
    if cache is not None and key in cache:
        return cache[key]
    record = _build(cls, *key)
    if cache is None:
        cache = {}
        try:
            type.__setattr__(cls, "__stash_cache__", cache)
        except TypeError:  # a built-in or immutable class: not cached
            pass
    cache[key] = record
    return record


def _record_base(cls):
    """The Stash class cls derives from, or None."""
    for base in cls.__mro__:
        if "__stash_fields__" in base.__dict__ and "__stash_origin__" in base.__dict__:
            return base
    return None


def _annotations(cls) -> dict:
    own = cls.__dict__.get("__annotations__")
    if own is None and sys.version_info >= (3, 14):  # PEP 649: evaluated on demand
        import annotationlib

        own = annotationlib.get_annotations(cls, format=annotationlib.Format.FORWARDREF)
    return dict(own or {})


def _is_classvar(annotation) -> bool:
    if isinstance(annotation, str):
        return annotation.startswith(("ClassVar", "typing.ClassVar"))
    typing = sys.modules.get("typing")  # a ClassVar object means typing is loaded
    return typing is not None and (annotation is typing.ClassVar
                                   or getattr(annotation, "__origin__", None) is typing.ClassVar)


def _check_compact(owner, name, kind, default):
    if kind == _BOOL:
        ok = isinstance(default, bool)
    elif kind == _INT:
        ok = isinstance(default, int) and -(1 << 63) <= default < (1 << 63)
    else:
        ok = isinstance(default, (int, float))
    if not ok:
        what = {_INT: "an int that fits in 64 bits", _FLOAT: "a float", _BOOL: "a bool"}[kind]
        raise TypeError(f"{owner}.{name} is a compact field (compact=True): its default must be "
                        f"{what}, not {default!r}")


def _build(cls, freeze, weakref, gc, compact):
    owner = cls.__qualname__
    bases = [b for b in cls.__bases__ if b is not object]
    record_bases = [b for b in bases if _record_base(b) is not None]
    if len(record_bases) > 1:
        raise TypeError(f"{owner}: a Stash class derives from one Stash class at most")
    base = None
    if record_bases:
        base = record_bases[0]
        if _record_base(base) is not base:
            raise TypeError(f"{owner}: {base.__qualname__} derives from a Stash class without "
                            "@Stash; decorate it too, or derive from the Stash class itself")
        if base.__stash_frozen__ != freeze:
            raise TypeError(f"{owner}: cannot derive a {'frozen' if freeze else 'non-frozen'} Stash "
                            f"class from a {'frozen' if base.__stash_frozen__ else 'non-frozen'} one")
    inherited = set(base.__mro__) if base is not None else {object}

    # methods kept: the conserved ones of the class and its plain bases
    conserved = {}
    for klass in reversed(cls.__mro__):
        if klass in inherited:
            continue
        for name, value in klass.__dict__.items():
            if _is_conserved(value):
                conserved[name] = value
            else:
                conserved.pop(name, None)  # overridden without @conserve
    for name in conserved:
        if name in _GENERATED:
            raise TypeError(f"{owner}.{name}: Stash generates {name}; it cannot be conserved")

    fields = list(base.__stash_fields__) if base is not None else []
    kinds = list(base.__stash_kinds__) if base is not None else []
    defaults = dict(base.__stash_defaults__) if base is not None else {}
    annotations = _annotations(cls)
    for name, annotation in annotations.items():
        if _is_classvar(annotation):
            continue
        if name.startswith("__") and name.endswith("__"):
            raise TypeError(f"{owner}.{name}: a field cannot have a dunder name")
        if name in fields:
            raise TypeError(f"{owner}.{name} is already a field of {base.__qualname__}")
        if name in conserved or (base is not None and _is_conserved(getattr(base, name, None))):
            raise TypeError(f"{owner}.{name} is both a field and a conserved method")
        kind = _COMPACT.get(annotation, _OBJECT) if compact else _OBJECT
        default = cls.__dict__.get(name, _MISSING)
        if default is not _MISSING:
            if isinstance(default, _MUTABLE):
                raise ValueError(f"{owner}.{name}: a mutable default ({type(default).__name__}) would be "
                                 "shared by every record; give a tuple or frozenset, or pass a value "
                                 "to each record")
            if kind != _OBJECT:
                _check_compact(owner, name, kind, default)
            defaults[name] = default
        fields.append(name)
        kinds.append(kind)

    fields = tuple(fields)
    namespace = {
        "__module__": cls.__module__,
        "__doc__": cls.__doc__,
        "__annotations__": annotations,
        "__stash_origin__": cls,
        "__stash_fields__": fields,
        "__stash_kinds__": tuple(kinds),
        "__stash_defaults__": defaults,
        "__stash_frozen__": freeze,
        "__match_args__": fields,
        **conserved,
    }
    flags = (_FREEZE if freeze else 0) | (_WEAKREF if weakref else 0) | (_GC if gc else 0)
    record = _core.stash_type(cls.__name__, cls.__qualname__, fields, tuple(kinds), defaults, flags,
                              base, namespace, _signature(cls.__name__, fields, defaults))
    for value in conserved.values():
        _rebind_class_cell(_underlying(value), cls, record)
    return record


_LITERALS = (int, float, complex, str, bytes, bool, type(None))


def _signature(name, fields, defaults) -> str:
    """The text signature inspect.signature reads (__text_signature__): a
    default that is not a literal shows as ``...``."""
    params = []
    for field in fields:
        if field not in defaults:
            params.append(field)
        else:
            default = defaults[field]
            literal = type(default) in _LITERALS and default == default  # not NaN
            params.append(f"{field}={default!r}" if literal else f"{field}=...")
    return f"{name}({', '.join(params)})\n--\n\n"


def _rebind_class_cell(function, old, new):
    """A conserved method that calls super() or names __class__ reads the
    class from a closure cell: point it at the new class."""
    code = getattr(function, "__code__", None)
    if code is None or "__class__" not in code.co_freevars:
        return
    cell = function.__closure__[code.co_freevars.index("__class__")]
    if cell.cell_contents is old:
        cell.cell_contents = new
