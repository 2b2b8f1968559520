"""What the devstash commands share: errors, units, entries and their
filters, opening the store, the progress bar and the folder lock."""
import argparse
import fnmatch
import os
import re
import sys
import time

from . import _core, _runtime

# LMDB errors that mean a damaged data.mdb, not a passing condition.
CORRUPT_CODES = ("MDB_INVALID", "MDB_CORRUPTED", "MDB_PAGE_NOTFOUND", "MDB_VERSION_MISMATCH")


class CliError(Exception):
    """A user error: printed as one line "devstash: <message>", exit 1."""


def describe(exc: BaseException) -> str:
    """The message of an exception, in one line."""
    if isinstance(exc, OSError) and not isinstance(exc, _core.StoreError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


# ---- units -----------------------------------------------------------------

def format_size(n: float) -> str:
    """1023 B, 1.5 KiB, 12.0 MiB, 2.0 GiB."""
    if n < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        n /= 1024
        if n < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}"
    raise AssertionError("unreachable")


def format_age(seconds: float) -> str:
    """42s, 12min, 3h, 2d: the largest unit that fits, rounded down."""
    seconds = max(0.0, seconds)
    for size, unit in ((86400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


def format_seconds(seconds: float) -> str:
    """A compute time: 0.35 ms, 120 ms, 12.4 s, 3.2 min, 1.5 h."""
    if seconds < 1:
        return f"{seconds * 1000:.3g} ms"
    if seconds < 60:
        return f"{seconds:.3g} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([kmgt]?)(i?b)?\s*", re.IGNORECASE)


def parse_size(text: str) -> int:
    """"2G", "500M", "1.5GiB", "100KB", "4096": binary units (K = 1024)."""
    m = _SIZE.fullmatch(text)
    if m is None:
        raise argparse.ArgumentTypeError(
            f"invalid size {text!r}: expected a number with an optional unit K, M, G or T "
            "(powers of 1024), such as 500M or 2G")
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2).lower() or " "))


def parse_duration(text: str) -> float:
    try:
        return _core.parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ---- entries ---------------------------------------------------------------

class Entry:
    """One entry's metadata, with what listings derive from it."""

    __slots__ = ("meta", "key", "hex", "callee", "site", "file", "line", "created",
                 "ttl", "size", "compute", "hits", "last_hit")

    def __init__(self, meta: dict):
        self.meta = meta
        self.key = meta["key"]
        self.hex = self.key.hex()
        self.callee = meta["callee"]
        self.site = meta["site"]
        file, sep, line = self.site.rpartition(":")
        if sep and line.isdigit():
            self.file, self.line = file, int(line)
        else:
            self.file, self.line = self.site, None
        self.created = meta["created"]
        self.ttl = meta["ttl"]
        self.size = meta["size"]
        self.compute = meta["compute"]
        self.hits = meta["hits"]
        self.last_hit = meta["last_hit"]

    @property
    def name(self) -> str:
        return self.callee or "(expression)"

    def shown_site(self) -> str:
        """The call site, relative to the working directory when under it."""
        return self.site if self.line is None else f"{shown_path(self.file)}:{self.line}"

    def expires(self):
        return self.created + self.ttl if self.ttl > 0 else None

    def future(self, now: float) -> bool:
        """Created after now: stored while the clock was ahead."""
        return self.created > now

    def expired(self, now: float) -> bool:
        """Past its ttl; an entry with a ttl created in the future counts as
        expired too (the runtime does not load it either)."""
        end = self.expires()
        return end is not None and (now >= end or self.future(now))

    def ttl_state(self, now: float) -> str:
        end = self.expires()
        if end is None:
            return "valid"
        if self.future(now):
            return "expired (created in the future)"
        return "expired" if now >= end else f"expires in {format_age(end - now)}"

    def age(self, now: float) -> str:
        return "future" if self.future(now) else format_age(now - self.created)

    def as_json(self, now: float) -> dict:
        return {
            "key": self.hex, "callee": self.callee, "site": self.site, "file": self.file,
            "line": self.line, "size": self.size, "created": self.created,
            "age": now - self.created, "ttl": self.ttl or None, "expires": self.expires(),
            "expired": self.expired(now), "hits": self.hits, "last_hit": self.last_hit or None,
            "compute": self.compute,
        }


_shown = {}   # path -> how it shows: few files hold many entries


def shown_path(path: str) -> str:
    shown = _shown.get(path)
    if shown is None:
        shown = path
        if os.path.isabs(path):
            rel = os.path.relpath(path, os.getcwd())
            if rel != os.pardir and not rel.startswith(os.pardir + os.sep):
                shown = rel
        _shown[path] = shown
    return shown


def sort_key(e: Entry):
    return (e.file, e.line or 0, e.created, e.hex)


def add_filters(parser, expired=True) -> None:
    parser.add_argument("--pattern", metavar="GLOB",
                        help="entries whose callee or call site matches the glob (e.g. '*load*')")
    parser.add_argument("--site", metavar="FILE[:LINE]",
                        help="entries of a script, or of one line of it")
    if expired:
        parser.add_argument("--expired", action="store_true",
                            help="entries whose TTL has passed")


def site_filter(text: str):
    """(absolute file, line or None) of a --site argument."""
    m = re.fullmatch(r"(.+):(\d+)", text)
    file, line = (m.group(1), int(m.group(2))) if m else (text, None)
    return os.path.abspath(file), line


def matches(e: Entry, ns, now: float) -> bool:
    """Whether e passes every filter given in ns (all must hold)."""
    pattern = getattr(ns, "pattern", None)
    if pattern is not None:
        names = (e.callee, e.callee.rpartition(".")[2], e.site, e.shown_site())
        if not any(n and fnmatch.fnmatchcase(n, pattern) for n in names):
            return False
    site = getattr(ns, "site", None)
    if site is not None:
        file, line = site_filter(site)
        if e.file != file or (line is not None and e.line != line):
            return False
    if getattr(ns, "expired", False) and not e.expired(now):
        return False
    older = getattr(ns, "older_than", None)
    if older is not None and now - e.created < older:
        return False
    return True


# ---- the store ---------------------------------------------------------------

def cache_folder() -> str:
    return _runtime.cache_dir()


def has_store(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "data.mdb"))


def open_store(folder: str, readonly: bool):
    """The Store of folder, or None when nothing was ever cached there. A
    read-only open never creates the folder."""
    if not has_store(folder):
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise CliError(f"{folder} is not a folder")
        if readonly:
            return None
    try:
        if readonly:
            add_left_hits(folder)
        return _core.Store(folder, readonly=readonly)
    except (OSError, _core.StoreError) as exc:
        raise CliError(store_problem(folder, exc)) from None


def add_left_hits(folder: str) -> None:
    """Adds the hit counts that processes which ended without writing them
    (SIGTERM, SIGKILL) left in the folder (csrc/hits.h): a writable open's
    close does. Counts only: any failure leaves them for the next time."""
    try:
        if not any(name.startswith("hits-") for name in os.listdir(folder)):
            return
        store = _core.Store(folder)
        store.lock_timeout = 1.0
        store.close()
    except (OSError, _core.StoreError):
        pass


def store_problem(folder: str, exc) -> str:
    """What to say when the store of folder cannot be opened."""
    if isinstance(exc, _core.UnsafeFolderError):
        return f"refusing the cache {folder}: {exc.problem}; fix: {exc.fix}"
    message = describe(exc)
    if "devstash doctor" in message:   # a damaged store says what to do
        return f"cannot open the cache {folder}: {message}"
    return f"cannot open the cache {folder}: {message} (`devstash doctor` says more)"


# Entries per read of the store when walking all of them: memory stays flat
# however large the cache.
PAGE = 2000


def iter_entries(store, prefix: str = ""):
    """Every entry (whose key starts with the hex prefix), in key order, a
    page at a time."""
    if store is None:
        return
    after = None
    while True:
        metas = store.scan(after=after, limit=PAGE, prefix=prefix)
        for meta in metas:
            yield Entry(meta)
        if len(metas) < PAGE:
            return
        after = metas[-1]["key"]


def say_empty(folder: str, store) -> None:
    if store is None:
        print(f"no cache at {folder} (nothing cached yet)")
    else:
        print(f"no entries in {folder}")


# ---- progress ----------------------------------------------------------------

class Progress:
    """A one-line "\\r" bar on stderr, only on a terminal and only once the
    work has run for `delay` seconds; erased when done."""

    WIDTH = 30

    def __init__(self, label, total, stream=None, clock=time.monotonic, delay=1.0):
        self.stream = sys.stderr if stream is None else stream
        self.label = label
        self.total = max(total, 1)
        self.clock = clock
        self.start = clock()
        self.delay = delay
        self.last = 0.0
        self.drawn = False
        try:
            self.enabled = self.stream.isatty()
        except (AttributeError, ValueError):
            self.enabled = False

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if now - self.start < self.delay or (self.drawn and now - self.last < 0.1):
            return
        self.last = now
        frac = min(max(done / self.total, 0.0), 1.0)
        filled = int(frac * self.WIDTH)
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (self.WIDTH - filled)}] "
                          f"{int(frac * 100):3d}%")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\r" + " " * (len(self.label) + self.WIDTH + 8) + "\r")
            self.stream.flush()
            self.drawn = False


class FolderLock:
    """The flock store.c takes on the cache folder while a process opens the
    store or changes its map size: holding it, nobody opens the files."""

    def __init__(self, folder: str):
        self.folder = folder
        self.fd = -1

    def __enter__(self):
        import fcntl

        self.fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)   # releases the flock
        return False
