"""devstash: cache the results of marked lines across runs of a script.

Mark a slow or costly line with a trailing ``# @devstash`` comment and call
:func:`activate` near the top of the script; the next run loads the value
instead of computing it. ``devstash run script.py`` does the same without
the call, and ``%load_ext devstash`` in IPython or Jupyter for cells.
``import devstash`` stays cheap: the C core, pickle and logging load only
when they are needed.
"""
import sys as _sys

TYPE_CHECKING = False  # typing itself costs milliseconds to import
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ._api import Entry
    from ._stash import Stash, conserve

__version__ = "0.2.0"
__all__ = ["activate", "cache", "entries", "Stash", "conserve", "__version__"]


def activate() -> None:
    """Run the rest of the calling script with its ``# @devstash`` markers live.

    Called at the top level of the main script, it reads that script again,
    rewrites the marked lines into cached calls and runs everything after this
    call in the real ``__main__`` module; the process then exits with the
    script's own exit status. With no marker in the script it returns at once.
    ``DEVSTASH_SKIP_REWRITE=1`` turns it off.
    """
    __tracebackhide__ = True  # IPython and pytest leave this frame out of tracebacks
    from ._activate import activate_main

    activate_main(_sys._getframe(1))


def cache(func: "Callable | None" = None, *, ttl: "str | float | None" = None,
          refresh: bool = False, nocode: bool = False):
    """``@devstash.cache(ttl="1d")``: caches a function's results with the same
    keys, store and rules as a ``# @devstash`` marker on a call of it."""
    from ._api import cache as decorate

    return decorate(func, ttl=ttl, refresh=refresh, nocode=nocode)


def entries(cache_dir: "str | None" = None) -> "Iterator[Entry]":
    """The cached entries (metadata, and ``load()`` for each value): cached API
    responses can serve as test fixtures."""
    from ._api import entries as list_entries

    return list_entries(cache_dir)


def __getattr__(name: str):
    """``Stash`` and ``conserve`` (devstash/_stash.py), imported on first use."""
    if name in ("Stash", "conserve"):
        from . import _stash

        value = getattr(_stash, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'devstash' has no attribute {name!r}")


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext devstash`` in IPython or Jupyter: markers work in cells."""
    from ._ipython import load_ipython_extension as load

    load(ipython)


def unload_ipython_extension(ipython: object) -> None:
    """``%unload_ext devstash``: cells run unrewritten again."""
    from ._ipython import unload_ipython_extension as unload

    unload(ipython)
