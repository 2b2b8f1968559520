"""Policy around the C runtime: where the store lives, what is warned about,
and the cached forms that need Python (chains, plain expressions, async)."""
import atexit
import errno
import marshal
import os
import sys
import time

from . import __version__, _core, _leftovers

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_stores = {}


def _library_prefixes():
    """Folders whose code is not the user's: the standard library, every
    site-packages on sys.path, devstash itself."""
    prefixes = {os.path.join(os.path.dirname(os.path.abspath(os.__file__)), ""),
                os.path.join(_PACKAGE_DIR, "")}
    for entry in sys.path:
        if os.path.basename(entry.rstrip(os.sep)) in ("site-packages", "dist-packages"):
            prefixes.add(os.path.join(os.path.abspath(entry), ""))
    return tuple(sorted(prefixes))


LIBRARY_PREFIXES = _library_prefixes()
_core.set_library_prefixes(LIBRARY_PREFIXES)


def is_library_file(filename: str) -> bool:
    return filename.startswith(LIBRARY_PREFIXES) or f"{os.sep}site-packages{os.sep}" in filename


def cache_dir() -> str:
    """The cache folder: $DEVSTASH_CACHE_DIR, else ./.devstash_cache."""
    return os.path.abspath(os.environ.get("DEVSTASH_CACHE_DIR") or ".devstash_cache")


_runtimes = []


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def skip_requested() -> bool:
    """DEVSTASH_SKIP_REWRITE=1 (or true, yes) turns devstash off."""
    return _env_flag("DEVSTASH_SKIP_REWRITE")


def open_store():
    """The process's Store for the cache folder, or None (warned) when the
    folder cannot be used: the script then runs uncached."""
    path = cache_dir()
    store = _stores.get(path)
    if store is None and path not in _stores:
        if not _stores:
            atexit.register(_at_exit)
        try:
            store = _core.Store(path)
            store.lock_timeout = _lock_timeout()
            if _leftovers.present(path):
                _leftovers.remove(path)
        except (OSError, _core.StoreError) as exc:
            if getattr(exc, "errno", None) == errno.EPERM and exc.strerror:
                warn(f"not using the cache: {exc.strerror}; running uncached")
            else:
                warn(f"cannot use the cache folder {path} ({exc}); running uncached")
            store = None
        _stores[path] = store
    return store


# The longest a store waits for another process's write: a writer stopped
# with Ctrl-Z holds the cache, and the script must go on without it.
LOCK_TIMEOUT = 10.0
# At exit only hit counts are left to write, and when the cache is held they
# stay in their file for the next process to add (hits.h): no need to wait.
EXIT_LOCK_TIMEOUT = 0.1


def _lock_timeout() -> float:
    """LOCK_TIMEOUT, or DEVSTASH_WAIT when that is shorter."""
    try:
        return min(LOCK_TIMEOUT, _core.parse_duration(os.environ.get("DEVSTASH_WAIT") or "1h"))
    except ValueError:
        return LOCK_TIMEOUT   # Runtime says what is wrong with it


def _at_exit() -> None:
    """Writes the hit counts, then says in one line what the cache did."""
    for rt in _runtimes:
        try:
            rt._write_parts()
        except Exception:  # noqa: BLE001 - only later miss explanations depend on it
            pass
    for store in _stores.values():
        if store is None:
            continue
        try:
            store.lock_timeout = min(store.lock_timeout, EXIT_LOCK_TIMEOUT)
            store.flush(wait=False)  # see store.c: start the writeback, do not wait
        except _core.BusyError:
            pass  # the counts stay in their file: the next flush on the folder adds them
        except Exception as exc:  # noqa: BLE001 - at exit, a report is all we can do
            warn(f"could not record hit counts ({exc})")
    hits = sum(rt.hits for rt in _runtimes) + (_remote.direct if _remote is not None else 0)
    misses = sum(rt.misses for rt in _runtimes)
    if _remote is not None:
        misses -= _remote.hits   # local misses the remote cache answered: hits
    stored = sum(rt.stores for rt in _runtimes)
    if (hits or stored) and not _env_flag("DEVSTASH_QUIET"):
        saved = sum(store.saved_seconds for store in _stores.values() if store is not None)
        remote = f" ({_remote.hits} from the remote cache)" if _remote is not None and _remote.hits \
            else ""
        sys.stderr.write(
            f"devstash: {hits} hit{'s' * (hits != 1)}{remote}, {misses} miss{'es' * (misses != 1)}, "
            f"{stored} stored, {format_seconds(saved)} saved\n"
        )


def format_seconds(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def marked_lines(sites) -> int:
    """How many markers the sites come from: a marked print or append
    caches each call in its arguments at a site of its own (rewrite.c)."""
    return len({(site[0], site[1]) for site in sites})


def announce(sites, path: str) -> None:
    """The one line that says devstash is active (DEVSTASH_QUIET=1: none)."""
    if not _env_flag("DEVSTASH_QUIET"):
        n = marked_lines(sites)
        sys.stderr.write(f"devstash: caching {n} marked line{'s' * (n != 1)} of "
                         f"{os.path.basename(path)} (cache: {cache_dir()})\n")


def _logger():
    """The "devstash" logger, writing to stderr itself and not through the
    root logger: a script's logging.basicConfig() neither repeats devstash's
    lines nor changes how they read. Made on first use (importing logging
    costs milliseconds a warm run need not pay)."""
    import logging

    class StderrHandler(logging.StreamHandler):
        """Writes to whatever sys.stderr is when a line is written."""

        @property
        def stream(self):
            return sys.stderr

        @stream.setter
        def stream(self, _value):
            pass

    logger = logging.getLogger("devstash")
    if not logger.handlers:
        handler = StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))  # messages say "devstash: "
        logger.addHandler(handler)
        logger.propagate = False
    return logger


def _configure_logging() -> bool:
    """DEVSTASH_LOG=info|debug sends the "devstash" logger to stderr; true
    when hits, misses and stores should be reported one by one."""
    level = os.environ.get("DEVSTASH_LOG", "").strip().upper()
    if level not in ("INFO", "DEBUG"):
        return False
    _logger().setLevel(level)
    return True


VERBOSE = _configure_logging()


# Bumped when the rewritten code or its sites change shape within a version.
# 3: a marked print or append keeps running; the calls in its arguments are
# cached (rewrite.c), and a plain expression passes the name it is assigned to.
CODE_FORMAT = 5


def code_key(source: bytes, filename: str, resume_line: int) -> bytes:
    """The code cache's key: the source and where it runs from, this Python,
    its optimisation level (-O drops asserts and sets __debug__ at compile
    time) and this devstash (a new version may rewrite differently)."""
    return _core.hash_value(
        ("code", CODE_FORMAT, source, filename, resume_line, sys.implementation.cache_tag,
         sys.flags.optimize, __version__)
    )


def _rewrite(source: bytes, filename: str, resume_line: int, original):
    """_core.rewrite with room for what Python itself compiles: the tree
    goes to Python objects and back, which counts every level of a long
    expression (`1 + 1 + ...`, 2,500 terms) against the recursion limit that
    compiling from text does not. The compiler keeps its own limit."""
    limit = sys.getrecursionlimit()
    if limit < _REWRITE_RECURSION_LIMIT:
        sys.setrecursionlimit(_REWRITE_RECURSION_LIMIT)
    try:
        return _core.rewrite(source, filename, resume_line, original=original)
    finally:
        sys.setrecursionlimit(limit)


_REWRITE_RECURSION_LIMIT = 20_000


def compile_module(source: bytes, filename: str, resume_line: int, store, original=None):
    """(code, sites) for source, from the store's code cache when the same
    source was rewritten before by this Python and this devstash. `original`
    is the code Python compiled from it, if any: its unmarked functions and
    classes are reused instead of compiled again."""
    key = code_key(source, filename, resume_line)
    if store is not None:
        try:
            data = store.get_code(key)
            if data is not None:
                code, sites, *near = marshal.loads(data)
                warn_near_markers(filename, near[0] if near else ())
                return code, sites
        except Exception:  # noqa: BLE001 - an unreadable cache entry means: rewrite again
            pass
    code, sites = _rewrite(source, filename, resume_line, original)
    near = _core.near_markers(source)
    warn_near_markers(filename, near)
    if store is not None:
        try:
            store.put_code(key, marshal.dumps((code, sites, near)))
        except _core.BusyError:
            held(store)
        except Exception:  # noqa: BLE001 - the next run rewrites again, that is all
            pass
    return code, sites


def held(store) -> None:
    """A write waited its bound for another process holding the cache: the
    run's later writes try once and give up at once, so a run waits for a
    stopped writer one lock timeout at most."""
    store.lock_timeout = 0


_said_held = False   # a value went unstored because the cache was held: said once a run


def warn_near_markers(filename: str, near) -> None:
    """One warning per comment that looks meant as a marker but is not one."""
    for line, text in near:
        warn(f"{os.path.basename(filename)}:{line}: {text.strip()!r} is not a marker, and the line "
             "is not cached: write '# @devstash' in lower case, then a space before any options")


_remote = None
_remote_asked = False


def remote_cache():
    """The team cache of this run (_remote.py), or None: read on the first
    local miss of a run, so that a run of hits never looks at it."""
    global _remote, _remote_asked
    if not _remote_asked:
        _remote_asked = True
        from . import _remote_config

        try:
            config = _remote_config.load()
        except _remote_config.ConfigError as exc:
            warn(f"not using a remote cache: {exc}")
            config = None
        if config is not None:
            from . import _remote as remote_module

            _remote = remote_module.connect(config)
    return _remote


def _remote_miss() -> str:
    """What a miss line adds when the remote cache was asked too."""
    if _remote is None or _remote.down or not _remote.config.reads:
        return ""
    return "; not in the remote cache either"


def _fetched_value(body, entry):
    """(True, value) made from a large value's bytes as the transports read
    them (value_buffer: a bytearray or an anonymous mapping): writable
    memory of this process alone, which the value's arrays may share, as
    they share a local hit's copy out of the store (a second 100 MB copy
    spared). Else (False, None): loaded from the store."""
    import mmap

    if not isinstance(body, (bytearray, mmap.mmap)):
        return False, None
    from ._remote_entry import value_parts

    try:
        data, buffers = value_parts(entry.head, body)
        return True, decode_value(data, buffers)
    except Exception:  # noqa: BLE001 - the store's own load says what is wrong
        return False, None


def decode_value(data: bytes, buffers=()):
    """A stored value back as an object: a pickle (protocol 5, out-of-band
    buffers) or, for values made of exact built-in types, marshal data. A
    pickle starts with 0x80, which no marshal stream does (see runtime.c)."""
    if data[:1] == b"\x80":
        import pickle

        return pickle.loads(data, buffers=buffers)
    return marshal.loads(data)


# ---- reporting -------------------------------------------------------------

def warn(message: str) -> None:
    """One line on stderr through the "devstash" logger (Python's last-resort
    handler prints warnings even when logging is not configured)."""
    _logger().warning("devstash: %s", message)


def _describe(exc) -> str:
    return f"{type(exc).__name__}: {exc}" if exc is not None else "unknown error"


class Effects:
    """A stored value with what its call changed besides (devstash/_effects.py):
    `value` (None when the call returned one of its inputs), `returns`
    (which input it returned: "self", ("arg", i), ("kw", name), or None),
    `changed` ([(which input, its state after the call)]) and `rng` (the
    global generators' states after the call, or None)."""

    __slots__ = ("value", "returns", "changed", "rng")

    def __init__(self, value, returns, changed, rng):
        self.value, self.returns, self.changed, self.rng = value, returns, changed, rng

    def __reduce__(self):
        return (Effects, (self.value, self.returns, self.changed, self.rng))


_NOT_STORED = object()


class Runtime(_core.Runtime):
    """The object a rewritten module calls as ``@devstash``."""

    def __init__(self, store, filename, sites):
        super().__init__(store, filename, sites, refresh=_env_flag("DEVSTASH_REFRESH"),
                         verbose=VERBOSE)
        wait = os.environ.get("DEVSTASH_WAIT")
        if wait:
            try:
                self.wait_seconds = _core.parse_duration(wait)
            except ValueError as exc:
                warn(f"DEVSTASH_WAIT: {exc}; waiting up to {self.wait_seconds:.0f} s")
        self._warned = set()
        self._sites_seen = None
        self._old_parts = None      # {site id: parts} stored by earlier runs (read on use)
        self._new_parts = {}
        self._load_failed = set()   # sites whose stored value failed to load this run
        self._unloadable = None     # see _unloadable_lines
        self._rng_sites = set()     # sites whose keys take the random generators' state
        self._rng_checks = {}       # site -> misses that looked at the generators this run
        self._extra_override = None
        self.effects_type = Effects
        if store is not None:
            self._load_rng_sites()
        _runtimes.append(self)

    def _where(self, site) -> str:
        """file:line and the marked statement, as warnings name a call."""
        line, label = self.sites[site][0], self.sites[site][5]
        return f"{os.path.basename(self.filename)}:{line}: {label.splitlines()[0] if label else ''}"

    def _warn_once(self, site, what, message) -> None:
        if (site, what) not in self._warned:
            self._warned.add((site, what))
            warn(f"{self._where(site)}: {message}")

    # -- callbacks from the C runtime
    def _unhashable(self, site, names):
        # Only state nested inside an argument (a lock in a client) is keyed
        # by type: it carries no input, so this is a detail, not a warning.
        if (site, "unhashable") not in self._warned:
            self._warned.add((site, "unhashable"))
            kinds = ", ".join(sorted(set(names)))
            _logger().info("devstash: %s: values of type %s inside the arguments are keyed by "
                           "their type only", self._where(site), kinds)

    def _uncacheable(self, site, exc):
        reason = str(exc) if isinstance(exc, ValueError) else _describe(exc)
        self._warn_once(site, "uncacheable", f"{reason}; this line runs uncached "
                        "(ignore=NAME leaves an argument out of the key)")

    def _unpicklable(self, site, exc):
        self._warn_once(site, "unpicklable", f"result cannot be pickled ({_describe(exc)}); not cached")

    def _unreadable(self, site, exc):
        self._load_failed.add(site)
        self._warn_once(site, "unreadable", f"cached value cannot be loaded ({_describe(exc)}); recomputed")

    # -- values that pickle but do not load back
    def _storable(self, site, key, func, value) -> bool:
        """False for a line whose values were seen not to load back (their
        __reduce__ or __setstate__ fails): storing them again would mean a
        recompute and a warning on every run. Checked by a round trip only
        after a stored value of the line failed to load; remembered in the
        store until the callee's code changes."""
        unloadable = self._unloadable_lines()
        line, mark = self.sites[site][0], _code_mark(func)
        if line in unloadable and unloadable[line] == mark:
            if site in self._load_failed:
                self._forget(key)   # a value stored by an older devstash
            return False
        if site not in self._load_failed:
            return True
        import pickle

        try:
            pickle.loads(pickle.dumps(value, protocol=5))
            return True
        except Exception as exc:  # noqa: BLE001 - any failure means: it does not load back
            self._forget(key)
            unloadable[line] = mark
            try:
                self.store.put_code(self._unloadable_key(), marshal.dumps(unloadable))
            except Exception:  # noqa: BLE001 - then the next run finds out again
                pass
            self._warn_once(site, "unloadable", f"values of this line pickle but do not load back "
                            f"({_describe(exc)}); they are no longer stored")
            return False

    def _forget(self, key) -> None:
        try:
            self.store.delete(key)
        except Exception:  # noqa: BLE001 - the next run tries to load it and fails again
            pass

    def _unloadable_key(self) -> bytes:
        return _core.hash_value(("unloadable-lines", self.filename))

    def _unloadable_lines(self) -> dict:
        """{line: code mark} of this file's lines whose values do not load."""
        if self._unloadable is None:
            self._unloadable = {}
            try:
                data = self.store.get_code(self._unloadable_key()) if self.store else None
                if data:
                    self._unloadable = marshal.loads(data)
            except Exception:  # noqa: BLE001 - nothing remembered: the round trip finds out
                pass
        return self._unloadable

    def _store_failed(self, site, exc):
        if isinstance(exc, _core.BusyError):
            # Only this value goes unstored: the next store may find the cache free.
            global _said_held
            held(self.store)
            if not _said_held:
                _said_held = True
                warn(f"{self._where(site)}: not stored, the run goes on uncached while the cache "
                     f"is held ({exc})")
            return
        warn(f"{self._where(site)}: the cache failed ({_describe(exc)}); running uncached from here")
        store, self.store = self.store, None
        if store is None:
            return
        for path, known in _stores.items():  # said once: not again at exit
            if known is store:
                _stores[path] = None
        try:
            store.flush()  # writes (or, failing, drops) the pending hit counts now
        except Exception:  # noqa: BLE001 - already reported above
            pass

    def _event(self, kind, site, detail):
        if kind == "miss" and detail == "new arguments" and self._site_had_entries(site):
            detail = "new arguments or changed code"
        _logger().info("devstash: %s %s%s", kind, self._where(site), f" ({detail})" if detail else "")

    def _site_had_entries(self, site) -> bool:
        """Whether the store held values from this call site when the run
        began (read once, only when logging): a miss there means the
        arguments or the code changed."""
        if self._sites_seen is None:
            try:
                self._sites_seen = {m["site"] for m in self.store.entries()} if self.store else set()
            except Exception:  # noqa: BLE001 - only a log detail depends on it
                self._sites_seen = set()
        return f"{self.filename}:{self.sites[site][0]}" in self._sites_seen

    # -- the parts of rt.call() that run in Python (see runtime.c)
    def _run_call(self, site, key, func, args, kwargs):
        """A miss: takes the value from the team cache, or computes
        func(*args, **kwargs) and stores the value, or waits for another
        thread of this process that computes it now."""
        hit, value = self._from_remote(site, key)
        if hit:
            return self._loaded(site, value, func, args, kwargs)
        threads = sys.modules.get("threading")
        if threads is None or threads.active_count() == 1:
            return self._compute_call(site, key, func, args, kwargs)   # nobody to wait for
        from ._inflight import inflight

        flights = inflight()
        waiting = flights.begin(key)
        if waiting is not None:
            waiting.wait(self.wait_seconds)
            hit, value = self.load(site, key, True)
            if hit:
                return self._loaded(site, value, func, args, kwargs)
            return self._compute_call(site, key, func, args, kwargs)
        try:
            return self._compute_call(site, key, func, args, kwargs)
        finally:
            flights.end(key)

    # -- the team cache (_remote.py): asked on a local miss, given what is stored
    def _from_remote(self, site, key):
        """(True, value) when the remote cache had key (verified, and now in
        the local store too); else (False, None)."""
        if self.store is None or self.refresh:
            return False, None
        remote = remote_cache()
        got = remote.fetch(self.store, key) if remote is not None else None
        if got is None:
            return False, None
        hit, value = _fetched_value(*got)
        if hit:
            remote.direct += 1
        else:
            verbose, self.verbose = self.verbose, 0   # the hit is reported below, as remote
            try:
                hit, value = self.load(site, key, True)
            finally:
                self.verbose = verbose
        if hit:
            remote.hits += 1
            if self.verbose:
                _logger().info("devstash: hit %s (from the remote cache %s)", self._where(site),
                               remote.where)
        return hit, value

    def save(self, site, key, value, seconds, callee=None):
        """Stores locally (runtime.c); a value stored goes to the remote
        cache too, in the background."""
        stored = super().save(site, key, value, seconds, callee)
        if stored:
            remote = remote_cache()
            if remote is not None:
                remote.upload(self.store, key, bool(self.refresh))
        return stored

    def _loaded(self, site, value, func, args, kwargs):
        """A value load() returned, as the call returns it (see runtime.c's
        Runtime_hit_value: a record of effects is applied)."""
        if self.effects_type is not None and type(value) is self.effects_type:
            return self._restore(site, value, func, args, kwargs)
        return value

    def _compute_call(self, site, key, func, args, kwargs):
        _effects = _effects_module()

        parts = self._key_parts(site, func, args, kwargs) if self._wants_parts(site) else None
        if self.verbose:
            _logger().info("devstash: miss %s (%s%s)", self._where(site),
                           self._miss_reason(site, parts, self.miss_why), _remote_miss())
        captured = _effects.capture(func, args, kwargs, self._watch_rng(site))
        start = time.perf_counter()
        value = func(*args, **kwargs) if kwargs else func(*args)
        seconds = time.perf_counter() - start
        stored = self._with_effects(site, captured, value)
        if stored is _NOT_STORED:
            return value
        if stored.__class__ is Effects and stored.rng is not None and site not in self._rng_sites:
            # It drew from the global generators: its key takes their state
            # from now on, this entry's the state before the call.
            key = self._rng_key(site, captured, stored, func, args, kwargs)
            self._flag_rng(site)
            if key is None:
                return value
        if self._storable(site, key, func, stored) and self.save(site, key, stored, seconds, func) \
                and parts is not None:
            self._new_parts[site] = parts
        return value

    # -- effects: what a call changed besides its value (see _effects.py)
    def _with_effects(self, site, captured, value):
        """What to store for value: itself, an Effects record, or
        _NOT_STORED when a change cannot be kept (warned once)."""
        _effects = _effects_module()

        try:
            record = captured.record(value)
        except _effects.Unrestorable as exc:
            self._warn_once(site, "effects", f"{exc}; this line runs uncached, so that a hit "
                            "never skips what the call changes")
            return _NOT_STORED
        return value if record is None else record

    def _restore(self, site, record, func, args, kwargs):
        """A hit whose value is a record of effects (effects_type): they are
        put back into the live objects. Should that fail, the call runs."""
        _effects = _effects_module()

        try:
            return _effects.restore(record, func, args, kwargs)
        except Exception as exc:  # noqa: BLE001 - recomputing is always right
            self._warn_once(site, "restore", f"the call's effects cannot be put back "
                            f"({_describe(exc)}); recomputed")
            return func(*args, **(kwargs or {}))

    def _site_extra(self, site):
        """The global random generators' state, for sites whose calls were
        seen to draw from them (set_extra): changing the seed recomputes."""
        if self._extra_override is not None:
            return self._extra_override
        _effects = _effects_module()

        return _effects.rng_digest()

    def _watch_rng(self, site) -> bool:
        """Whether a miss looks at the global generators: always at a site
        known to draw from them, else on its first misses of a run (reading
        the generators' state costs microseconds; a loop of misses at a site
        that drew nothing on its first ones is not checked again)."""
        if site in self._rng_sites:
            return True
        seen = self._rng_checks.get(site, 0)
        self._rng_checks[site] = seen + 1
        return seen < 2

    def _rng_key(self, site, captured, record, func, args, kwargs):
        """The key with the generators' state before the call (what the key
        takes from now on). Made after the call from its inputs, so only
        when the call changed none of them; else None: stored next time."""
        if record.changed:
            return None
        self._extra_override = captured.rng_before_digest()
        self.set_extra(site, True)
        try:
            return self.key_call(site, func, *args, **(kwargs or {}))
        finally:
            self._extra_override = None
            self.set_extra(site, site in self._rng_sites)

    def _rng_lines_key(self) -> bytes:
        return _core.hash_value(("rng-lines", self.filename))

    def _load_rng_sites(self) -> None:
        """Sites whose calls draw from the global generators, as recorded
        by earlier runs: their keys take the generators' state."""
        try:
            data = self.store.get_code(self._rng_lines_key()) if self.store else None
            lines = set(marshal.loads(data)) if data else set()
        except Exception:  # noqa: BLE001 - unknown: found out again on the next miss
            lines = set()
        for site, info in enumerate(self.sites):
            if info[0] in lines:
                self._rng_sites.add(site)
                self.set_extra(site, True)

    def _flag_rng(self, site) -> None:
        self._rng_sites.add(site)
        self.set_extra(site, True)
        try:
            data = self.store.get_code(self._rng_lines_key())
            lines = set(marshal.loads(data)) if data else set()
            lines.add(self.sites[site][0])
            self.store.put_code(self._rng_lines_key(), marshal.dumps(sorted(lines)))
        except Exception:  # noqa: BLE001 - the next run finds out again
            pass

    # -- miss reasons: which part of the key changed
    def _wants_parts(self, site) -> bool:
        """Parts are kept for one stored value a site and run (a loop's
        thousands of misses need not hash their inputs twice), and for every
        miss that is reported."""
        return self.verbose or site not in self._new_parts

    def _key_parts(self, site, func, args, kwargs):
        """The key's parts before the call runs (it may change them)."""
        try:
            return self.key_parts(site, func, *args, **(kwargs or {}))
        except Exception:  # noqa: BLE001 - only the explanation of a miss depends on it
            return None

    def _site_id(self, site):
        """A site by line, and by rank among the sites of one marker (the
        calls in a marked print or append, see rewrite.c)."""
        line, col = self.sites[site][0], self.sites[site][1]
        return line, sum(1 for other in self.sites[:site] if other[0] == line and other[1] == col)

    def _parts_key(self) -> bytes:
        """Where the parts of the file's last stored values are kept: one
        record a file, {site id: parts}."""
        return _core.hash_value(("site-parts", self.filename))

    def _all_stored_parts(self) -> dict:
        if self._old_parts is None:
            self._old_parts = {}
            try:
                data = self.store.get_code(self._parts_key()) if self.store else None
                if data:
                    self._old_parts = marshal.loads(data)
            except Exception:  # noqa: BLE001 - a missing record means no explanation
                pass
        return self._old_parts

    def _stored_parts(self, site):
        """The parts of the last value stored at the site, or None."""
        parts = self._all_stored_parts().get(self._site_id(site))
        return dict(_numbered(parts)) if parts else None

    def _miss_reason(self, site, parts, why) -> str:
        """`why` made exact: "file data.csv changed", "global THRESH changed",
        "code of Model.score changed", "argument 2 changed"."""
        why = why or "new arguments"
        if why != "new arguments" or parts is None:
            return why
        old = self._stored_parts(site)
        if old is None:
            return why
        parts = _numbered(parts)
        new = dict(parts)
        changed = [label for label, digest in parts if label in old and old[label] != digest]
        # A file or an attribute says more than the argument that holds it.
        specific = [label for label in changed if not label.startswith(("argument ", "keyword argument "))
                    and (not label.startswith("receiver ") or ": attribute " in label)]
        said = [f"{label} changed" for label in (specific or changed)]
        said += [f"{label} is new" for label, _ in parts if label not in old]
        said += [f"{label} is gone" for label in old if label not in new]
        return ", ".join(said[:3]) if said else why

    def _write_parts(self) -> None:
        """At exit: the parts of each site's last stored value, one write."""
        if not self._new_parts or self.store is None:
            return
        merged = dict(self._all_stored_parts())
        for site, parts in self._new_parts.items():
            merged[self._site_id(site)] = parts
        self.store.put_code(self._parts_key(), marshal.dumps(merged))
        self._new_parts.clear()

    # -- cached forms the rewriter emits besides call()
    def _compute(self, site, key, compute, callee):
        if key is not None:
            hit, value = self._from_remote(site, key)
            if hit:
                return value
        start = time.perf_counter()
        value = compute()
        if key is not None:
            self.save(site, key, value, time.perf_counter() - start, callee)
        return value

    def chain(self, site, root, steps):
        key = self.key_chain(site, root, steps)
        if key is None:
            return run_chain(root, steps)
        hit, value = self.load(site, key, True)   # the miss is reported below
        if hit:
            return value
        hit, remote_value = self._from_remote(site, key)
        if hit:
            return remote_value
        parts = None
        if self._wants_parts(site):
            try:
                parts = self.key_chain_parts(site, root, steps)
            except Exception:  # noqa: BLE001 - only the explanation of a miss depends on it
                pass
        if self.verbose:
            _logger().info("devstash: miss %s (%s%s)", self._where(site),
                           self._miss_reason(site, parts, value), _remote_miss())
        start = time.perf_counter()
        value = run_chain(root, steps)
        if self.save(site, key, value, time.perf_counter() - start, root) and parts is not None:
            self._new_parts[site] = parts
        return value

    def expr(self, site, thunk, values, name=None):
        """A plain expression: `values` are the names it reads, which the
        thunk takes as parameters (see rewrite_plain in rewrite.c); `name`,
        the name it is assigned to, is what listings show as its callee."""
        key = self.key_expr(site, values)
        if key is not None:
            hit, value = self.load(site, key)
            if hit:
                return value
        return self._compute(site, key, lambda: thunk(*values), name)

    async def acall(self, site, func, *args, **kwargs):
        key = self.key_call(site, func, *args, **kwargs) if self.store is not None else None
        if key is None:
            return await func(*args, **kwargs)
        hit, value = self.load(site, key)
        if not hit:
            hit, value = self._from_remote(site, key)   # blocks the loop: ~1 round trip
        if hit:
            return self._loaded(site, value, func, args, kwargs)
        # Another task of this loop computing the same key: await its value.
        from ._inflight import inflight

        flights = inflight()
        waiting = await flights.abegin(key)
        if waiting is not None:
            import asyncio

            try:
                await asyncio.wait_for(waiting.wait(), self.wait_seconds)
            except asyncio.TimeoutError:
                pass
            hit, value = self.load(site, key, True)
            if hit:
                return self._loaded(site, value, func, args, kwargs)
            return await self._compute_acall(site, key, func, args, kwargs)
        try:
            return await self._compute_acall(site, key, func, args, kwargs)
        finally:
            flights.aend(key)

    async def _compute_acall(self, site, key, func, args, kwargs):
        _effects = _effects_module()

        captured = _effects.capture(func, args, kwargs)
        start = time.perf_counter()
        value = await func(*args, **kwargs)
        stored = self._with_effects(site, captured, value)
        if stored is not _NOT_STORED:
            self.save(site, key, stored, time.perf_counter() - start, func)
        return value

    async def achain(self, site, root, steps):
        key = self.key_chain(site, root, steps)
        if key is not None:
            hit, value = self.load(site, key)
            if not hit:
                hit, value = self._from_remote(site, key)
            if hit:
                return value
        start = time.perf_counter()
        value = await run_chain(root, steps)
        if key is not None:
            self.save(site, key, value, time.perf_counter() - start, root)
        return value


_effects_loaded = None


def _effects_module():
    """devstash._effects, imported on the first miss (import devstash and
    warm runs stay without it); kept here, as `from . import` costs
    microseconds on every call."""
    global _effects_loaded
    if _effects_loaded is None:
        from . import _effects

        _effects_loaded = _effects
    return _effects_loaded


def _numbered(parts):
    """Parts with labels made unique in order ("code of f", "code of f (2)"):
    a wrapper and the function it wraps can share a name."""
    seen = {}
    out = []
    for label, digest in parts:
        n = seen[label] = seen.get(label, 0) + 1
        out.append((label if n == 1 else f"{label} ({n})", digest))
    return out


def _code_mark(func):
    """What of a callee's code a remembered fact about its line depends on."""
    try:
        return _core.hash_code(getattr(func, "__func__", func))
    except TypeError:
        return None


def runtime_for(filename: str, sites: tuple) -> Runtime:
    """The runtime a rewritten module binds first thing (see rewrite.h)."""
    return Runtime(open_store(), filename, sites)


def run_chain(value, steps):
    """Applies chain steps: ("c", args, kwargs), ("a", name), ("i", index)."""
    for step in steps:
        kind = step[0]
        if kind == "c":
            value = value(*step[1], **step[2])
        elif kind == "a":
            value = getattr(value, step[1])
        else:
            value = value[step[1]]
    return value


def user_traceback(tb):
    """tb without devstash's own frames, so the user sees only their code."""
    import types

    kept = []
    while tb is not None:
        if not tb.tb_frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            kept.append(tb)
        tb = tb.tb_next
    result = None
    for entry in reversed(kept):
        result = types.TracebackType(result, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return result
