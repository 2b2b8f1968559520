"""Stored values as the devstash commands show them."""
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
