"""Stored values as the devstash commands show them.

Loading a pickle runs code, so nothing here unpickles unless asked to
(`devstash show --load`, load_value): pickle_type reads what a pickle would
build from its opcodes without running any, and values stored with marshal
(built-in types only: marshal runs nothing) are previewed.
"""
import os
import sys


class FromScript(Exception):
    """The pickle needs a class defined in the script itself (__main__)."""


def load_value(data: bytes, buffers, site_file: str):
    """Loads a stored value as its script would, with the script's folder on
    sys.path. Returns (value, None), or (None, reason) when it cannot be
    loaded; raises FromScript when it needs the script's own __main__.
    Values of exact built-in types are stored with marshal, the rest are
    pickles, which start with 0x80 (see _runtime.decode_value)."""
    import io
    import pickle

    if data[:1] != b"\x80" and not buffers:
        import marshal

        try:
            return marshal.loads(data), None
        except Exception as exc:  # noqa: BLE001 - any failure is the answer asked for
            return None, f"{type(exc).__name__}: {exc}"

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            if module == "__main__":
                raise FromScript(f"__main__.{name}")
            return super().find_class(module, name)

    folder = os.path.dirname(site_file) if os.path.isabs(site_file) else None
    added = folder is not None and folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        return Unpickler(io.BytesIO(data), buffers=buffers).load(), None
    except FromScript:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure is the answer asked for
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        if added:
            try:
                sys.path.remove(folder)
            except ValueError:
                pass


def type_name(value) -> str:
    t = type(value)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def short_repr(value, limit=400) -> str:
    import itertools
    import reprlib

    class Repr(reprlib.Repr):
        def repr_dict(self, x, level):
            # reprlib sorts keys; a dict shows best in its own order
            if not x:
                return "{}"
            if level <= 0:
                return "{...}"
            items = [f"{self.repr1(k, level - 1)}: {self.repr1(v, level - 1)}"
                     for k, v in itertools.islice(x.items(), self.maxdict)]
            if len(x) > self.maxdict:
                items.append("...")
            return "{" + ", ".join(items) + "}"

    r = Repr()
    r.maxstring = r.maxother = 120
    r.maxlist = r.maxtuple = r.maxset = r.maxdict = r.maxarray = 8
    r.maxlevel = 3
    try:
        text = r.repr(value)
    except Exception as exc:  # noqa: BLE001 - a broken __repr__ must not stop show
        return f"<repr failed: {type(exc).__name__}: {exc}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- the store's value records (store.c's record.c, format 2) --------------

def record_layout(record: bytes):
    """(offset of the pickle, its length, bytes of out-of-band buffers) of a
    well-formed value record: u8 magic | u64 checksum | f64 created | varint
    pickle length | varint number of buffers | u64 end offset per buffer |
    pickle | buffers."""
    pickle_len, nbuffers, table = record_lengths(record)
    start = table + 8 * nbuffers
    return start, pickle_len, len(record) - start - pickle_len


def record_lengths(record: bytes):
    """(pickle length, number of buffers, offset of the buffer table) of a
    value record, read from its head (the record up to the table's end)."""
    pos = 17
    numbers = []
    for _ in range(2):
        shift = value = 0
        while True:
            byte = record[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        numbers.append(value)
    return numbers[0], numbers[1], pos


def is_pickle(data: bytes, buffers=()) -> bool:
    """Pickles start with PROTO (0x80), which no marshal stream does."""
    return data[:1] == b"\x80" or bool(buffers)


def references_main(data: bytes) -> bool:
    """Whether a pickle names something of __main__ (a class the script
    defines): only that script can load it. A byte search, not a parse."""
    return is_pickle(data) and b"__main__" in data


def load_marshal(data: bytes):
    """(value, None) or (None, reason) of a value stored with marshal."""
    import marshal

    try:
        return marshal.loads(data), None
    except Exception as exc:  # noqa: BLE001 - any failure is the answer asked for
        return None, f"{type(exc).__name__}: {exc}"


# ---- what a pickle builds, read without running it ------------------------------

_BUILTIN_TYPES = {"set", "frozenset", "bytearray", "bytes", "complex", "range", "slice", "list",
                  "dict", "tuple", "int", "float", "str", "bool", "object"}
# Reconstructors whose first argument is the class of what they build.
_BY_FIRST_ARGUMENT = {"copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__",
                      "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct"}
# Functions that build an instance of a known type.
_BUILDS = {"numpy.core.numeric._frombuffer": "numpy.ndarray",
           "numpy._core.numeric._frombuffer": "numpy.ndarray",
           "_codecs.encode": "bytes",
           "collections.OrderedDict": "collections.OrderedDict"}
_PUSH_TYPE = {
    "BININT": "int", "BININT1": "int", "BININT2": "int", "LONG": "int", "LONG1": "int",
    "LONG4": "int", "NEWTRUE": "bool", "NEWFALSE": "bool", "NONE": "NoneType",
    "FLOAT": "float", "BINFLOAT": "float", "BINBYTES": "bytes", "SHORT_BINBYTES": "bytes",
    "BINBYTES8": "bytes", "BYTEARRAY8": "bytearray", "EMPTY_LIST": "list", "EMPTY_DICT": "dict",
    "EMPTY_SET": "set", "NEXT_BUFFER": "out-of-band buffer",
}
_STRINGS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE",
            "SHORT_BINUNICODE", "BINUNICODE8"}
_TO_MARK_TYPE = {"LIST": "list", "DICT": "dict", "FROZENSET": "frozenset"}
_POP_TO_MARK = {"APPENDS", "SETITEMS", "ADDITEMS", "POP_MARK"}
_POPS = {"APPEND": 1, "SETITEM": 2, "BUILD": 1, "POP": 1}


def _global_name(item):
    return item[1] if item[0] == "global" else None


def _built_by(func, args):
    """What calling func (a stack item) with args (a stack item) builds."""
    name = _global_name(func)
    if name is None:
        return ("?", None)
    first = args[1][0] if args[0] == "tuple" and args[1] else None
    if name in _BY_FIRST_ARGUMENT and first is not None and first[0] == "global":
        return ("type", first[1])
    if name in _BUILDS:
        return ("type", _BUILDS[name])
    module, _, short = name.rpartition(".")
    if module == "builtins":
        return ("type", short) if short in _BUILTIN_TYPES else ("call", name)
    loaded = sys.modules.get(module)   # looked at only if already imported: nothing runs
    if loaded is not None:
        obj = getattr(loaded, short, None)
        if isinstance(obj, type):
            return ("type", name)
        if obj is not None:
            return ("call", name)
    if short[:1].isupper():
        return ("type", name)   # a class, by the naming convention
    return ("call", name)


def _py3_name(module: str, qual: str) -> str:
    """A global as protocols 0-2 write it (Python 2 names) mapped the way
    pickle maps it when loading."""
    import _compat_pickle

    module, qual = _compat_pickle.NAME_MAPPING.get((module, qual), (module, qual))
    module = _compat_pickle.IMPORT_MAPPING.get(module, module)
    return f"{module}.{qual}"


def pickle_type(data: bytes, limit: int = 200_000) -> str:
    """The type of what a pickle builds, read from its opcodes (nothing is
    imported or run): "dict", "numpy.ndarray", "helper.Thing", or "built by
    module.function()" when a function builds it. Gives up (with what the
    outermost object looks like so far) after `limit` opcodes."""
    import pickletools

    mark = ("mark", None)
    stack, memo = [], {}

    def pop_to_mark():
        items = []
        while stack and stack[-1] is not mark:
            items.append(stack.pop())
        if not stack:
            raise ValueError("no mark")
        stack.pop()
        items.reverse()
        return items

    result = None
    try:
        for count, (op, arg, _pos) in enumerate(pickletools.genops(data)):
            if count >= limit:
                break
            name = op.name
            if name in ("PROTO", "FRAME", "READONLY_BUFFER"):
                continue
            if name == "STOP":
                result = stack.pop()
                break
            if name == "INT":
                stack.append(("type", "bool" if isinstance(arg, bool) else "int"))
            elif name in _PUSH_TYPE:
                stack.append(("type", _PUSH_TYPE[name]))
            elif name in _STRINGS:
                stack.append(("str", arg))
            elif name == "EMPTY_TUPLE":
                stack.append(("tuple", []))
            elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
                n = int(name[-1])
                items = stack[-n:]
                del stack[-n:]
                stack.append(("tuple", items))
            elif name == "TUPLE":
                stack.append(("tuple", pop_to_mark()))
            elif name in _TO_MARK_TYPE:
                pop_to_mark()
                stack.append(("type", _TO_MARK_TYPE[name]))
            elif name == "MARK":
                stack.append(mark)
            elif name in _POP_TO_MARK:
                pop_to_mark()
            elif name in _POPS:
                del stack[-_POPS[name]:]
            elif name == "DUP":
                stack.append(stack[-1])
            elif name == "GLOBAL":
                module, _, qual = arg.partition(" ")
                stack.append(("global", _py3_name(module, qual)))
            elif name == "STACK_GLOBAL":
                qual, module = stack.pop(), stack.pop()
                stack.append(("global", f"{module[1]}.{qual[1]}")
                             if module[0] == qual[0] == "str" else ("?", None))
            elif name == "INST":
                module, _, qual = arg.partition(" ")
                pop_to_mark()
                stack.append(("type", _py3_name(module, qual)))
            elif name == "OBJ":
                items = pop_to_mark()
                cls = _global_name(items[0]) if items else None
                stack.append(("type", cls) if cls else ("?", None))
            elif name == "REDUCE":
                args, func = stack.pop(), stack.pop()
                stack.append(_built_by(func, args))
            elif name in ("NEWOBJ", "NEWOBJ_EX"):
                if name == "NEWOBJ_EX":
                    stack.pop()
                stack.pop()
                cls = _global_name(stack.pop())
                stack.append(("type", cls) if cls else ("?", None))
            elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[arg] = stack[-1]
            elif name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
            elif name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[arg])
            elif name == "PERSID":
                stack.append(("?", None))
            elif name == "BINPERSID":
                stack[-1] = ("?", None)
            elif name in ("EXT1", "EXT2", "EXT4"):
                stack.append(("?", None))
            else:
                return "unknown (an opcode this reader does not know)"
    except Exception:  # noqa: BLE001 - a damaged or unusual pickle: say so, never fail
        return "unknown (the pickle could not be read)"
    if result is None:   # over the limit: the outermost object so far
        result = next((item for item in stack if item is not mark), ("?", None))
    kind, what = result
    if kind == "type":
        return what
    if kind == "str":
        return "str"
    if kind == "tuple":
        return "tuple"
    if kind == "global":
        return f"a reference to {what}"
    if kind == "call":
        return f"built by {what}()"
    return "unknown"
