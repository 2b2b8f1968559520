"""What a marked call changed besides its value, kept with the value and put
back on a hit, so that a hit leaves the program as the call would have.

Three kinds of change are seen, by comparing state digests (the key's own
canonical hash, devstash._core.hash_value) before and after a miss:
  * the receiver and the arguments: `clf.fit(X, y)` fits clf, `xs.sort()`
    and `random.shuffle(xs)` reorder xs, `df.fillna(0, inplace=True)`;
  * the global random generators of `random` and NumPy, which a call that
    draws numbers advances;
  * the value's identity: `lr.fit(X, y)` returns lr itself.
A change is kept as the object after the call (pickled with the value) and
restored into the very same object on a hit, so every other reference sees
it: list, dict, set, bytearray, deque and NumPy array contents in place,
other objects by pickle's own rules (their __setstate__, or __dict__ and
slots), after their __dict__ is emptied. A change that cannot be kept or
put back exactly (state that does not pickle, an array that changed shape)
makes the line run uncached: never a value without its effects.

This module is imported on a miss or on restoring only. The record kept in
the store is devstash._runtime.Effects (cheap to import for pickle)."""
import collections
import pickle
import sys

from . import _core
from ._runtime import Effects

# Values whose state a call cannot change: not worth a digest.
_IMMUTABLE = (int, float, complex, str, bytes, bool, type(None), range)


class Unrestorable(Exception):
    """A change the call made that devstash cannot keep or put back."""


def _targets(func, args, kwargs):
    """(where, object) of everything the call can change in place: its
    receiver, then its arguments."""
    out = []
    receiver = getattr(func, "__self__", None)
    if receiver is not None and not isinstance(receiver, (type, type(sys))) \
            and type(receiver) not in _IMMUTABLE:
        out.append(("self", receiver))
    for i, arg in enumerate(args):
        if type(arg) not in _IMMUTABLE:
            out.append((("arg", i), arg))
    for name, arg in (kwargs or {}).items():
        if type(arg) not in _IMMUTABLE:
            out.append((("kw", name), arg))
    return out


def _digest(obj):
    try:
        return _core.hash_value(obj)
    except Exception:  # noqa: BLE001 - what cannot be hashed cannot be compared
        return None


def rng_states():
    """The global generators' states: {"random": ..., "numpy": ...} for the
    modules this process has imported."""
    states = {}
    rnd = sys.modules.get("random")
    if rnd is not None:
        states["random"] = rnd.getstate()
    nprandom = sys.modules.get("numpy.random")   # never imported here: only looked at
    if nprandom is not None:
        states["numpy"] = nprandom.get_state()
    return states


def rng_digest(states=None) -> bytes:
    return _core.hash_value(_comparable(rng_states() if states is None else states))


def _comparable(states):
    """NumPy's state holds an array: hashable by value as it is."""
    return tuple(sorted(states.items(), key=lambda kv: kv[0]))


def _same_state(a, b) -> bool:
    """random's state is a tuple of ints; NumPy's holds an array."""
    try:
        return bool(a == b)
    except ValueError:   # an array's truth value
        return _core.hash_value(a) == _core.hash_value(b)


def _set_rng(states) -> None:
    if "random" in states:
        import random

        random.setstate(states["random"])
    if "numpy" in states:
        import numpy

        numpy.random.set_state(states["numpy"])


def _attr_digests(obj, depth=2, prefix=()):
    """{attribute path: digest} of an object's attributes and of theirs, to
    find which attributes a call changed when the whole object cannot be
    kept (a client holding locks). Methods bound to other objects and
    functools.cached_property values are left out: they follow the objects
    they come from."""
    import functools

    out = {}
    attrs = getattr(obj, "__dict__", None)
    if not isinstance(attrs, dict) or isinstance(obj, type):
        return out
    for name, value in list(attrs.items()):
        if isinstance(getattr(type(obj), name, None), functools.cached_property):
            continue
        if callable(value) and getattr(value, "__self__", None) is not None:
            continue
        path = prefix + (name,)
        out[path] = (_digest(value), id(value))
        if depth > 1 and type(value) not in _IMMUTABLE:
            out.update(_attr_digests(value, depth - 1, path))
    return out


class Capture:
    """State digests taken before a miss computes (see capture())."""

    def __init__(self, func, args, kwargs, watch_rng=True):
        self.targets = _targets(func, args, kwargs)
        self.before = [_digest(obj) for _, obj in self.targets]
        self.attrs_before = [_attr_digests(obj) for _, obj in self.targets]
        self.shapes = [getattr(obj, "shape", None) for _, obj in self.targets]
        # The generators' states as they are (their digest is made only
        # when the call turns out to have drawn from them).
        self.rng_before = rng_states() if watch_rng else {}

    def rng_changed(self) -> bool:
        """Whether a generator that existed before the call was advanced by
        it (one imported during the call was not: it starts fresh)."""
        if not self.rng_before:
            return False
        now = rng_states()
        return any(name in now and not _same_state(now[name], state)
                   for name, state in self.rng_before.items())

    def rng_before_digest(self) -> bytes:
        return rng_digest(self.rng_before)

    def record(self, value):
        """After the call: None when it changed nothing and returned a value
        of its own, else the Effects record to store. Unrestorable when a
        change cannot be kept or put back exactly."""
        changed = []
        for (where, obj), before, attrs, shape in zip(self.targets, self.before, self.attrs_before,
                                                      self.shapes):
            after = _digest(obj)
            if after is not None and after == before:
                continue
            if after is None or before is None:
                raise Unrestorable(f"{_name(where, obj)} cannot be compared before and after the call")
            if shape is not None and getattr(obj, "shape", None) != shape:
                raise Unrestorable(f"{_name(where, obj)} changed shape")
            try:
                _check_restorable(obj, after, where)
                changed.append((where, obj))
            except Unrestorable:
                # The whole object cannot be kept: what changed in it may be.
                assigned = _changed_attributes(obj, attrs)
                if assigned is None:
                    raise
                if assigned:
                    changed.append((where, Assigned(assigned)))
        returns = None
        for where, obj in self.targets:
            if value is obj:
                returns = where
                break
        rng = {name: state for name, state in rng_states().items() if name in self.rng_before} \
            if self.rng_changed() else None
        if not changed and returns is None and rng is None:
            return None
        return Effects(None if returns is not None else value, returns, changed, rng)


class Assigned:
    """Attribute values a call set in an object that cannot be kept whole:
    [(attribute path, value)], put back by setattr along each path."""

    def __init__(self, items):
        self.items = items

    def __reduce__(self):
        return (Assigned, (self.items,))


def _changed_attributes(obj, before):
    """[(path, new value)] of the attributes the call set (values that pickle
    and come back equal), or None when a change is not of that kind."""
    after = _attr_digests(obj)
    changed = [path for path, (digest, ident) in after.items()
               if path not in before or before[path][0] != digest]
    leaves = []
    for path in changed:
        digest, ident = after[path]
        old = before.get(path)
        # An object that stayed itself and whose own attributes are listed
        # deeper: its change is told by those.
        if old is not None and old[1] == ident and any(p[:len(path)] == path and len(p) > len(path)
                                                       for p in changed):
            continue
        value = _get_path(obj, path)
        try:
            if _digest(pickle.loads(pickle.dumps(value, protocol=5))) != digest:
                return None
        except Exception:  # noqa: BLE001 - not a value that can be kept
            return None
        leaves.append((path, value))
    if any(path not in after for path in before if len(path) == 1):
        return None   # an attribute was deleted: not an assignment
    return leaves


def _get_path(obj, path):
    for name in path:
        obj = getattr(obj, name)
    return obj


def capture(func, args, kwargs, watch_rng=True) -> Capture:
    return Capture(func, args, kwargs, watch_rng)


def _name(where, obj) -> str:
    kind = type(obj).__qualname__
    if where == "self":
        return f"the receiver (a {kind})"
    if where[0] == "arg":
        return f"argument {where[1] + 1} (a {kind})"
    return f"keyword argument {where[1]} (a {kind})"


def _check_restorable(obj, after, where) -> None:
    """Puts a pickled copy of obj's new state into another copy and compares
    digests: a state that does not pickle, or does not come back the same,
    is refused before anything is stored."""
    try:
        data = pickle.dumps(obj, protocol=5)
        into, source = pickle.loads(data), pickle.loads(data)
        _transplant(into, source)
    except Unrestorable:
        raise
    except Exception as exc:  # noqa: BLE001 - any failure means: cannot be kept
        raise Unrestorable(f"the call changed {_name(where, obj)}, whose state cannot be kept "
                           f"({type(exc).__name__}: {exc})") from None
    if _digest(into) != after:
        raise Unrestorable(f"the call changed {_name(where, obj)}, whose state does not come "
                           "back the same from pickle")


def _transplant(obj, new) -> None:
    """Makes obj (a live object) hold what new (a loaded copy) holds."""
    if type(obj) is not type(new):
        raise Unrestorable(f"a {type(obj).__qualname__} became a {type(new).__qualname__}")
    if isinstance(obj, (list, bytearray)):
        obj[:] = new
    elif isinstance(obj, dict):
        obj.clear()
        obj.update(new)
    elif isinstance(obj, set):
        obj.clear()
        obj.update(new)
    elif isinstance(obj, collections.deque):
        obj.clear()
        obj.extend(new)
    elif type(obj).__module__ == "numpy" and type(obj).__name__ == "ndarray":
        if obj.shape != new.shape or obj.dtype != new.dtype:
            raise Unrestorable("a NumPy array changed shape or dtype")
        obj[...] = new
    else:
        _set_state(obj, new)
    # A list or dict subclass may carry attributes besides its items.
    if isinstance(obj, (list, dict, set)) and hasattr(new, "__dict__") and type(obj) not in (list, dict, set):
        obj.__dict__.clear()
        obj.__dict__.update(new.__dict__)


def _set_state(obj, new) -> None:
    """Pickle's BUILD step, into a live object: its __dict__ emptied first,
    as a freshly unpickled object's is."""
    reduced = new.__reduce_ex__(5)
    if not isinstance(reduced, tuple) or len(reduced) < 2:
        raise Unrestorable(f"a {type(obj).__qualname__} is pickled by name, not by state")
    state = reduced[2] if len(reduced) > 2 else None
    if hasattr(obj, "__dict__"):
        obj.__dict__.clear()
    setstate = getattr(type(obj), "__setstate__", None)
    if setstate is not None and setstate is not getattr(object, "__setstate__", None):
        obj.__setstate__(state)
    elif state is not None:
        slots = None
        if isinstance(state, tuple) and len(state) == 2:
            state, slots = state
        if state:
            obj.__dict__.update(state)
        for name, value in (slots or {}).items():
            setattr(obj, name, value)
    if len(reduced) > 3 and reduced[3] is not None:
        items = list(reduced[3])
        obj[:] = items
    if len(reduced) > 4 and reduced[4] is not None:
        obj.clear()
        for k, v in reduced[4]:
            obj[k] = v


def _resolve(where, func, args, kwargs):
    if where == "self":
        return func.__self__
    if where[0] == "arg":
        return args[where[1]]
    return kwargs[where[1]]


def restore(record, func, args, kwargs):
    """A hit: puts the kept changes into the live objects and returns the
    value as the call returned it."""
    for where, new in record.changed:
        target = _resolve(where, func, args, kwargs)
        if isinstance(new, Assigned):
            for path, value in new.items:
                setattr(_get_path(target, path[:-1]), path[-1], value)
        else:
            _transplant(target, new)
    if record.rng is not None:
        _set_rng(record.rng)
    if record.returns is not None:
        return _resolve(record.returns, func, args, kwargs)
    return record.value
