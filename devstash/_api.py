"""The Python API, for people who prefer code to comments and for tests that
reuse cached values as fixtures: @devstash.cache and devstash.entries()."""
import functools
import inspect
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Union

from . import _core
from . import _runtime

DS_OPT_REFRESH = 0x1  # keep in step with csrc/options.h
DS_OPT_NOCODE = 0x2


def cache(func: Optional[Callable] = None, *, ttl: Union[str, float, None] = None,
          refresh: bool = False, nocode: bool = False):
    """Caches a function's results with the same keys, store and rules as a
    ``# @devstash`` marker on a call of it: ``@devstash.cache(ttl="1d")``.

    ttl is a duration ("30m", "1h30m") or seconds; ``refresh`` recomputes on
    every run; ``nocode`` keeps results when the function's code changes.
    """
    seconds = _ttl_seconds(ttl)
    flags = (DS_OPT_REFRESH if refresh else 0) | (DS_OPT_NOCODE if nocode else 0)

    def decorate(f: Callable) -> Callable:
        code = getattr(f, "__code__", None)
        site = (code.co_firstlineno if code else 0, 0, seconds, flags, "call",
                f"@devstash.cache {getattr(f, '__qualname__', repr(f))}")
        filename = code.co_filename if code else "<unknown>"
        runtime = None  # made on the first call: decorating touches no disk

        def get_runtime():
            nonlocal runtime
            if runtime is None:
                store = None if _runtime.skip_requested() else _runtime.open_store()
                runtime = _runtime.Runtime(store, filename, (site,))
            return runtime

        if inspect.iscoroutinefunction(f):
            @functools.wraps(f)
            async def async_wrapper(*args, **kwargs):
                return await get_runtime().acall(0, f, *args, **kwargs)
            return async_wrapper

        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            return get_runtime().call(0, f, *args, **kwargs)
        return wrapper

    return decorate(func) if func is not None else decorate


def _ttl_seconds(ttl) -> float:
    if ttl is None:
        return 0.0
    if isinstance(ttl, str):
        return _core.parse_duration(ttl)
    seconds = float(ttl)
    if not seconds > 0:
        raise ValueError(f"ttl must be a positive duration, not {ttl!r}")
    return seconds


@dataclass(frozen=True)
class Entry:
    """One cached value: its metadata, and load() for the value itself."""

    key: str            # hex digest of the key
    callee: str         # "module.qualname"; for a plain expression the name it is
                        # assigned to (`squares = [...]`), else ""
    site: str           # "file:line" of the marker that stored it
    created: float      # unix time
    ttl: float          # seconds, 0 = none
    size: int           # bytes of the stored value
    compute: float      # seconds the computation took
    hits: int
    last_hit: float
    cache_dir: str

    @property
    def expired(self) -> bool:
        import time

        now = time.time()
        # created in the future (a clock set back since): age unknown, expired
        return self.ttl > 0 and (now - self.created > self.ttl or self.created > now)

    def load(self) -> Any:
        """The stored value, as a hit would return it."""
        with _core.Store(self.cache_dir) as store:
            record = store.get(bytes.fromhex(self.key))
        if record is None:
            raise KeyError(f"entry {self.key} is no longer in {self.cache_dir}")
        _created, data, buffers = record
        return _runtime.decode_value(data, buffers)


def entries(cache_dir: Optional[str] = None) -> Iterator[Entry]:
    """The entries of the cache (default: the one devstash.activate() uses)."""
    folder = os.path.abspath(cache_dir) if cache_dir else _runtime.cache_dir()
    if not os.path.exists(os.path.join(folder, "data.mdb")):
        return iter(())
    with _core.Store(folder, readonly=True) as store:
        metas = store.entries()
    return iter([
        Entry(key=m["key"].hex(), callee=m["callee"], site=m["site"], created=m["created"],
              ttl=m["ttl"], size=m["size"], compute=m["compute"], hits=m["hits"],
              last_hit=m["last_hit"], cache_dir=folder)
        for m in metas
    ])
