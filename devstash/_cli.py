"""The devstash commands besides `run`: list, show, clear, compact, stats,
prune, export, import and doctor. Only __main__ imports this module.

Exit codes: 0 success, 1 a user error (one line on stderr, "devstash: ..."),
2 a usage error (argparse).

Export file format (version 1; integers little-endian):

    header  = b"DEVSTASH-EXPORT\\n" | u32 version | key id (8 bytes)
    entry   = b"E" | key (16) | u32 meta_len | meta | u64 record_len | record | mac (32)
    trailer = b"Z" | u64 number of entries

meta is UTF-8 JSON {"callee", "site", "ttl", "compute"}; a site under the
exporter's working directory is written relative to it and made absolute
against the importer's. record is the store's own value record (creation
time, pickle, out-of-band buffers: Store.get_record), checked again by
Store.put_record on import. mac is HMAC-SHA256 over b"devstash-export-v1\\0"
followed by the entry's bytes from b"E" to the end of record (_signing.py
says which secret). The key id (the first 8 bytes of HMAC(secret,
"devstash-key-id")) lets import tell "another secret" from "altered".

Progress bars (export, import) are drawn on stderr only when stderr is a
terminal, and only once the work has taken more than a second.
"""
import argparse
import fnmatch
import json
import math
import os
import re
import struct
import sys
import time

from . import _core, _runtime, _signing

EXPORT_MAGIC = b"DEVSTASH-EXPORT\n"
EXPORT_VERSION = 1
MAC_DOMAIN = b"devstash-export-v1\0"
_HEADER = struct.Struct("<16sI8s")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
MAX_META = 1 << 20
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

    def expired(self, now: float) -> bool:
        end = self.expires()
        # Created in the future (the clock was ahead): its age is unknown.
        return end is not None and (now >= end or self.created > now)

    def ttl_state(self, now: float) -> str:
        end = self.expires()
        if end is None:
            return "valid"
        if self.created > now:
            return "expired (created in the future)"
        return "expired" if now >= end else f"expires in {format_age(end - now)}"

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
        return _core.Store(folder, readonly=readonly)
    except (OSError, _core.StoreError) as exc:
        raise CliError(f"cannot open the cache {folder}: {describe(exc)} "
                       "(`devstash doctor` says more)") from None


def load_entries(store) -> list:
    return [Entry(m) for m in store.entries()] if store is not None else []


def say_empty(folder: str, store) -> None:
    if store is None:
        print(f"no cache at {folder} (nothing cached yet)")
    else:
        print(f"no entries in {folder}")


# ---- values --------------------------------------------------------------------

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


# ---- commands ------------------------------------------------------------------

def cmd_list(ns) -> int:
    folder = cache_folder()
    store = open_store(folder, readonly=True)
    now = time.time()
    entries = sorted((e for e in load_entries(store) if matches(e, ns, now)), key=sort_key)
    if ns.json:
        print(json.dumps([e.as_json(now) for e in entries], indent=2))
        return 0
    if not entries:
        if store is not None and store.count() > 0:
            print("no entry matches")
        else:
            say_empty(folder, store)
        return 0
    rows = [("KEY", "CALLEE", "SITE", "SIZE", "AGE", "TTL", "HITS")]
    rows += [(e.hex[:12], e.name, e.shown_site(), format_size(e.size), format_age(now - e.created),
              e.ttl_state(now), str(e.hits)) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    right = {3, 4, 6}
    for r in rows:
        cells = [c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        print("  ".join(cells).rstrip())
    total = sum(e.size for e in entries)
    print(f"{len(entries)} {'entry' if len(entries) == 1 else 'entries'}, {format_size(total)}")
    return 0


def find_entry(store, prefix: str) -> Entry:
    text = prefix.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{1,32}", text):
        raise CliError(f"not a key: {prefix!r} (give a hex prefix of a key from `devstash list`)")
    if len(text) == 32:
        meta = store.meta(bytes.fromhex(text))
        found = [Entry(meta)] if meta is not None else []
    else:
        found = [e for e in load_entries(store) if e.hex.startswith(text)]
    if not found:
        raise CliError(f"no entry with key {text}")
    if len(found) > 1:
        raise CliError(f"key prefix {text} matches {len(found)} entries; give more digits")
    return found[0]


def cmd_show(ns) -> int:
    folder = cache_folder()
    store = open_store(folder, readonly=True)
    if store is None:
        raise CliError(f"no entry with key {ns.key.strip().lower()} (no cache at {folder})")
    e = find_entry(store, ns.key)
    now = time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.created))
    ttl = "none" if e.ttl <= 0 else f"{format_age(e.ttl)} ({e.ttl_state(now)})"
    last = f" (last {format_age(now - e.last_hit)} ago)" if e.hits and e.last_hit else ""
    rows = [
        ("key", e.hex), ("callee", e.name), ("site", e.shown_site()),
        ("created", f"{stamp} ({format_age(now - e.created)} ago)"), ("ttl", ttl),
        ("compute", format_seconds(e.compute)), ("hits", f"{e.hits}{last}"),
    ]
    got = store.get(e.key)
    if got is None:
        rows += [("size", format_size(e.size)), ("value", "missing or unreadable value record")]
    else:
        _created, pickled, buffers = got
        extra = f", {len(buffers)} out-of-band buffer{'s' if len(buffers) != 1 else ''}" if buffers else ""
        encoding = "pickle" if pickled[:1] == b"\x80" else "marshal"
        rows.append(("size", f"{format_size(e.size)} ({encoding} {format_size(len(pickled))}{extra})"))
        try:
            value, error = load_value(pickled, buffers, e.file)
        except FromScript as exc:
            rows.append(("value", f"cannot load here: it holds {exc}, a class defined in the "
                                  "script itself; only that script can load it"))
        else:
            if error is not None:
                rows.append(("value", f"cannot be unpickled: {error}"))
            else:
                rows += [("type", type_name(value)), ("value", short_repr(value))]
    for name, text in rows:
        print(f"{name:<8} {text}")
    return 0


def cmd_clear(ns) -> int:
    selectors = [ns.pattern is not None, ns.site is not None, ns.expired, ns.older_than is not None]
    if not ns.all and not any(selectors):
        ns.parser.error("say what to remove: --all for everything, or --pattern, --site, "
                        "--expired, --older-than")
    if ns.all and any(selectors):
        ns.parser.error("--all removes everything: it takes no other selector")
    folder = cache_folder()
    if not has_store(folder):
        print(f"no cache at {folder}: nothing to clear")
        return 0
    if ns.all:
        try:
            store = _core.Store(folder)
        except (OSError, _core.StoreError) as exc:
            return clear_damaged(folder, exc)
    else:
        store = open_store(folder, readonly=False)
    with store:
        now = time.time()
        chosen = [e for e in load_entries(store) if ns.all or matches(e, ns, now)]
        if ns.all:
            store.clear()
        else:
            chosen = [e for e in chosen if store.delete(e.key)]
    print(f"removed {len(chosen)} {'entry' if len(chosen) == 1 else 'entries'} "
          f"({format_size(sum(e.size for e in chosen))}) from {folder}")
    return 0


def clear_damaged(folder: str, exc) -> int:
    """clear --all of a store LMDB cannot open because its file is damaged:
    remove the files (under the folder lock every opener takes)."""
    message = describe(exc)
    if not any(code in message for code in CORRUPT_CODES):
        raise CliError(f"cannot open the cache {folder}: {message}")
    with FolderLock(folder):
        for name in ("data.mdb", "lock.mdb"):
            try:
                os.unlink(os.path.join(folder, name))
            except FileNotFoundError:
                pass
    print(f"the store in {folder} was damaged ({message}); removed its files")
    return 0


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


def cmd_compact(ns) -> int:
    """Compacting copy, checked, then renamed over data.mdb with a fresh lock
    file, under the folder lock. A process that has the store open keeps the
    old files (its open descriptors) and keeps working; what it writes after
    the swap is lost, which for a cache means recomputed later."""
    import shutil
    import tempfile

    folder = cache_folder()
    if not has_store(folder):
        print(f"no cache at {folder}: nothing to compact")
        return 0
    store = open_store(folder, readonly=False)
    work = tempfile.mkdtemp(prefix=".compact-", dir=folder)
    try:
        with store:
            before = store.info()["used"]
            after = store.compact_to(os.path.join(work, "data.mdb"))
        try:
            with _core.Store(work, readonly=True) as copy:
                count = copy.count()
                copy.entries()
        except (OSError, _core.StoreError) as exc:
            raise CliError(f"the compacted copy does not read back ({describe(exc)}); "
                           "the store was left as it was") from None
        with FolderLock(folder):
            os.rename(os.path.join(work, "data.mdb"), os.path.join(folder, "data.mdb"))
            try:
                os.unlink(os.path.join(folder, "lock.mdb"))
            except FileNotFoundError:
                pass
            fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"compacted {folder}: {format_size(before)} -> {format_size(after)} "
          f"({count} {'entry' if count == 1 else 'entries'})")
    return 0


def cmd_stats(ns) -> int:
    folder = cache_folder()
    store = open_store(folder, readonly=True)
    now = time.time()
    entries = load_entries(store)
    stats = {
        "folder": folder,
        "entries": len(entries),
        "size": sum(e.size for e in entries),
        "disk": store.info()["used"] if store is not None else 0,
        "sites": len({e.site for e in entries}),
        "expired": sum(e.expired(now) for e in entries),
        "hits": sum(e.hits for e in entries),
        "saved": sum(e.compute * e.hits for e in entries),
    }
    if ns.json:
        print(json.dumps(stats, indent=2))
        return 0
    if store is None:
        print(f"no cache at {folder} (nothing cached yet)")
        return 0
    print(f"cache       {folder}")
    print(f"entries     {stats['entries']} from {stats['sites']} call "
          f"site{'s' if stats['sites'] != 1 else ''} ({stats['expired']} expired)")
    print(f"size        {format_size(stats['size'])} of values, "
          f"{format_size(stats['disk'])} in use on disk")
    print(f"hits        {stats['hits']}")
    print(f"time saved  {format_seconds(stats['saved'])}")
    return 0


def cmd_prune(ns) -> int:
    folder = cache_folder()
    if not has_store(folder):
        print(f"no cache at {folder}: nothing to prune")
        return 0
    with open_store(folder, readonly=False) as store:
        entries = load_entries(store)
        total = sum(e.size for e in entries)
        if total <= ns.max_size:
            print(f"nothing to prune: {format_size(total)} fits in {format_size(ns.max_size)}")
            return 0
        removed = []
        # Least recently hit first; among entries never hit (or hit at the
        # same time), the oldest.
        for e in sorted(entries, key=lambda e: (e.last_hit, e.created, e.hex)):
            if total <= ns.max_size:
                break
            if store.delete(e.key):
                removed.append(e)
            total -= e.size
    print(f"removed {len(removed)} {'entry' if len(removed) == 1 else 'entries'} "
          f"({format_size(sum(e.size for e in removed))}); {format_size(total)} left "
          f"in {len(entries) - len(removed)}")
    return 0


# ---- export and import -----------------------------------------------------------

def portable_site(site: str, base: str) -> str:
    """A site under base, written relative to it (with /), for export."""
    file, sep, line = site.rpartition(":")
    if not sep or not line.isdigit() or not os.path.isabs(file):
        return site
    rel = os.path.relpath(file, base)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return site
    return f"{rel.replace(os.sep, '/')}:{line}"


def local_site(site: str, base: str) -> str:
    """An imported site: a relative one is made absolute against base."""
    file, sep, line = site.rpartition(":")
    if not sep or not line.isdigit() or os.path.isabs(file) or not file:
        return site
    return f"{os.path.normpath(os.path.join(base, file))}:{line}"


def load_secret(create: bool):
    try:
        return _signing.load(create)
    except _signing.SecretError as exc:
        raise CliError(str(exc)) from None


def cmd_export(ns) -> int:
    import tempfile

    folder = cache_folder()
    store = open_store(folder, readonly=True)
    now = time.time()
    chosen = [e for e in load_entries(store) if matches(e, ns, now)]
    live = sorted((e for e in chosen if not e.expired(now)), key=lambda e: e.hex)
    secret = load_secret(create=True)
    target = os.path.abspath(ns.file)
    cwd = os.getcwd()
    try:
        fd, tmp = tempfile.mkstemp(prefix=".devstash-export-", dir=os.path.dirname(target))
    except OSError as exc:
        raise CliError(f"cannot write {ns.file}: {exc.strerror}") from None
    count = size = 0
    progress = Progress("exporting", len(live))
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(_HEADER.pack(EXPORT_MAGIC, EXPORT_VERSION, secret.key_id))
            for i, e in enumerate(live):
                record = store.get_record(e.key)
                if record is None:
                    continue   # removed meanwhile, or only metadata left
                meta = json.dumps({"callee": e.callee, "site": portable_site(e.site, cwd),
                                   "ttl": e.ttl, "compute": e.compute},
                                  separators=(",", ":")).encode()
                body = b"".join((b"E", e.key, _U32.pack(len(meta)), meta,
                                 _U64.pack(len(record)), record))
                out.write(body)
                out.write(secret.sign(MAC_DOMAIN + body))
                count += 1
                size += e.size
                progress.update(i + 1)
            out.write(b"Z" + _U64.pack(count))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        progress.close()
        if store is not None:
            store.close()
    skipped = len(chosen) - len(live)
    note = f"; {skipped} expired left out" if skipped else ""
    print(f"exported {count} {'entry' if count == 1 else 'entries'} ({format_size(size)}) "
          f"to {ns.file}, signed with {secret.source}{note}")
    return 0


class ExportReader:
    """Reads an export file entry by entry, checking every length against
    what is left of the file before reading it."""

    def __init__(self, f, name: str):
        self.f = f
        self.name = name
        self.size = os.fstat(f.fileno()).st_size
        head = f.read(_HEADER.size)
        if len(head) < _HEADER.size or not head.startswith(EXPORT_MAGIC):
            raise CliError(f"{name} is not a devstash export")
        _magic, version, self.key_id = _HEADER.unpack(head)
        if version != EXPORT_VERSION:
            raise CliError(f"{name} is a version {version} export; this devstash reads "
                           f"version {EXPORT_VERSION}")
        self.count = None   # from the trailer

    def exact(self, n: int) -> bytes:
        if n > self.size - self.f.tell():
            raise CliError(f"{self.name} is truncated or damaged")
        data = self.f.read(n)
        if len(data) != n:
            raise CliError(f"{self.name} is truncated or damaged")
        return data

    def entries(self):
        """Yields (key, meta bytes, record, signed bytes, mac)."""
        while True:
            kind = self.exact(1)
            if kind == b"Z":
                self.count = _U64.unpack(self.exact(8))[0]
                return
            if kind != b"E":
                raise CliError(f"{self.name} is damaged (unknown record at byte {self.f.tell() - 1})")
            key = self.exact(16)
            meta_len_b = self.exact(4)
            meta_len = _U32.unpack(meta_len_b)[0]
            if meta_len > MAX_META:
                raise CliError(f"{self.name} is damaged (metadata of {meta_len} bytes)")
            meta = self.exact(meta_len)
            record_len_b = self.exact(8)
            record = self.exact(_U64.unpack(record_len_b)[0])
            mac = self.exact(_signing.MAC_SIZE)
            body = b"".join((kind, key, meta_len_b, meta, record_len_b, record))
            yield key, meta, record, body, mac


def parse_meta(data: bytes):
    """The metadata of an imported entry, or None when it is not what export writes."""
    try:
        meta = json.loads(data)
    except ValueError:
        return None
    if not isinstance(meta, dict):
        return None
    callee, site, ttl, compute = (meta.get(k) for k in ("callee", "site", "ttl", "compute"))
    if not (isinstance(callee, str) and isinstance(site, str) and "\0" not in callee + site):
        return None
    for number in (ttl, compute):
        if not isinstance(number, (int, float)) or isinstance(number, bool) \
                or not math.isfinite(number) or number < 0:
            return None
    return callee, site, float(ttl), float(compute)


def value_size(record: bytes) -> int:
    """The pickle and buffer bytes of a well-formed value record (what
    listings call its size): the record less its header (store.c)."""
    pos = 9
    for _ in range(2):   # varints: pickle length, number of buffers
        shift = value = 0
        while True:
            byte = record[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
    return len(record) - pos - 8 * value


def cmd_import(ns) -> int:
    secret = load_secret(create=False)
    try:
        f = open(ns.file, "rb")
    except OSError as exc:
        raise CliError(f"cannot read {ns.file}: {exc.strerror}") from None
    folder = cache_folder()
    imported = kept = malformed = size = 0
    unverified = []   # entries that fail verification, imported or not
    cwd = os.getcwd()
    with f:
        reader = ExportReader(f, ns.file)
        store = open_store(folder, readonly=False)
        progress = Progress("importing", reader.size)
        try:
            for key, meta_bytes, record, body, mac in reader.entries():
                progress.update(f.tell())
                verified = secret is not None and secret.verify(MAC_DOMAIN + body, mac)
                if not verified:
                    unverified.append(key)
                    if not ns.trust:
                        continue
                meta = parse_meta(meta_bytes)
                if meta is None:
                    malformed += 1
                    continue
                callee, site, ttl, compute = meta
                try:
                    written = store.put_record(key, record, ttl=ttl, compute=compute,
                                               callee=callee, site=local_site(site, cwd),
                                               if_newer=True)
                except ValueError:
                    malformed += 1
                    continue
                if written:
                    imported += 1
                    size += value_size(record)
                else:
                    kept += 1
        finally:
            progress.close()
            store.close()
    parts = [f"imported {imported} {'entry' if imported == 1 else 'entries'} "
             f"({format_size(size)}) from {ns.file}"]
    if kept:
        parts.append(f"kept {kept} local {'entry' if kept == 1 else 'entries'} as new or newer")
    if malformed:
        parts.append(f"skipped {malformed} malformed")
    if unverified and ns.trust:
        parts.append(f"{len(unverified)} not verified, imported because of --trust")
    print("; ".join(parts))
    if unverified and not ns.trust:
        if secret is None:
            why = ("there is no signing secret here: set DEVSTASH_SECRET to the secret "
                   "the file was exported with")
        elif reader.key_id != secret.key_id:
            why = (f"the file was signed with another secret than {secret.source}: set "
                   "DEVSTASH_SECRET to the exporter's")
        else:
            why = "they were altered after export"
        n = len(unverified)
        raise CliError(f"refused {n} {'entry that fails' if n == 1 else 'entries that fail'} verification "
                       f"({why}); pass --trust to import unverified entries anyway")
    return 0


# ---- doctor ----------------------------------------------------------------------

def probe(folder: str) -> dict:
    """What doctor needs to know of the store, gathered in a child process:
    a damaged file can crash LMDB, and unpickling runs the user's imports."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: never returns
        status = 0
        try:
            os.close(read_fd)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            result = json.dumps(examine(folder)).encode()
            with os.fdopen(write_fd, "wb") as out:
                out.write(result)
        except BaseException:  # noqa: BLE001 - the parent reports a child that says nothing
            status = 1
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _pid, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        import signal

        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return {"crashed": name}
    try:
        return json.loads(data)
    except ValueError:
        return {"error": "the check of the store failed without a report", "kind": "other"}


def examine(folder: str) -> dict:
    try:
        store = _core.Store(folder, readonly=True)
    except (OSError, _core.StoreError) as exc:
        message = describe(exc)
        kind = "corrupt" if any(code in message for code in CORRUPT_CODES) else "other"
        if getattr(exc, "errno", None) in (13, 1):   # EACCES, EPERM
            kind = "access"
        return {"error": message, "kind": kind}
    now = time.time()
    report = {"stale_readers": store.check_readers(), "entries": 0, "size": 0, "expired": 0,
              "expired_size": 0, "missing": {}, "broken": {}, "from_script": 0}
    try:
        entries = load_entries(store)
        report["entries"] = len(entries)
        report["size"] = sum(e.size for e in entries)
        for e in entries:
            if e.expired(now):
                report["expired"] += 1
                report["expired_size"] += e.size
            got = store.get(e.key)
            if got is None:
                report["missing"][e.site] = report["missing"].get(e.site, 0) + 1
                continue
            try:
                _value, error = load_value(got[1], got[2], e.file)
            except FromScript:
                report["from_script"] += 1
                continue
            if error is not None:
                count, _first = report["broken"].get(e.site, (0, error))
                report["broken"][e.site] = (count + 1, _first)
    except (OSError, _core.StoreError) as exc:
        message = describe(exc)
        kind = "corrupt" if any(code in message for code in CORRUPT_CODES) else "other"
        return {"error": message, "kind": kind}
    finally:
        store.close()
    return report


class Doctor:
    def __init__(self):
        self.problems = 0

    def ok(self, text: str) -> None:
        print(f"ok       {text}")

    def problem(self, text: str, fix: str) -> None:
        self.problems += 1
        print(f"problem  {text}")
        print(f"  fix    {fix}")


def cmd_doctor(ns) -> int:
    folder = cache_folder()
    doc = Doctor()
    print(f"cache    {folder}")
    check_secret(doc)
    if not os.path.lexists(folder):
        doc.ok("no cache folder yet: nothing is cached (the first cached run creates it)")
        print("no problems found")
        return 0
    untrusted = _core.check_folder(folder)
    if untrusted:
        what, _, fix = untrusted.partition("; fix: ")
        doc.problem(f"{what}; devstash does not use it (scripts run uncached)",
                    fix or "use a folder of your own: set DEVSTASH_CACHE_DIR")
        return 1
    if not os.path.isdir(folder):
        doc.problem(f"{folder} is not a folder: devstash runs uncached",
                    "remove it, or set DEVSTASH_CACHE_DIR to another path")
        return 1
    if not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
        doc.problem("the folder is read-only for you: scripts run uncached (with a warning)",
                    f"chmod u+rwx {folder}, or set DEVSTASH_CACHE_DIR to a writable folder")
    leftovers = sorted(n for n in os.listdir(folder) if n.startswith(".compact-"))
    if leftovers:
        doc.problem(f"{len(leftovers)} leftover folder{'s' if len(leftovers) != 1 else ''} of an "
                    "interrupted `devstash compact`",
                    "rm -r " + " ".join(os.path.join(folder, n) for n in leftovers))
    data = os.path.join(folder, "data.mdb")
    if not os.path.exists(data):
        doc.ok("no data.mdb yet: the cache is empty")
    else:
        check_store(doc, folder)
    if doc.problems == 0:
        print("no problems found")
    return 1 if doc.problems else 0


def check_store(doc: Doctor, folder: str) -> None:
    for name in ("data.mdb", "lock.mdb"):
        path = os.path.join(folder, name)
        if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
            doc.problem(f"{name} is not readable and writable for you",
                        f"chmod u+rw {path} (or delete the folder {folder})")
    report = probe(folder)
    if "crashed" in report:
        doc.problem(f"reading data.mdb crashed the check ({report['crashed']}): the file is damaged",
                    f"delete the folder: rm -r {folder} (the cache refills on the next runs)")
    elif "error" in report:
        if report["kind"] == "corrupt":
            doc.problem(f"data.mdb is damaged: {report['error']}",
                        f"devstash clear --all (or delete the folder {folder})")
        elif report["kind"] == "access":
            doc.problem(f"the store cannot be opened: {report['error']}",
                        f"give yourself access (chmod -R u+rw {folder}) or delete the folder")
        else:
            doc.problem(f"the store cannot be opened: {report['error']}",
                        f"devstash clear --all, or delete the folder {folder}")
    else:
        report_store(doc, report)


def report_store(doc: Doctor, report: dict) -> None:
    n = report["entries"]
    doc.ok(f"the store opens: {n} {'entry' if n == 1 else 'entries'}, {format_size(report['size'])}")
    stale = report["stale_readers"]
    if stale:
        doc.ok(f"cleared {stale} reader slot{'s' if stale != 1 else ''} that dead processes had "
               "left in lock.mdb (they kept old pages from reuse)")
    else:
        doc.ok("lock.mdb: no reader slots left by dead processes")
    if report["expired"]:
        doc.ok(f"{report['expired']} expired {'entry' if report['expired'] == 1 else 'entries'} "
               f"({format_size(report['expired_size'])}): `devstash clear --expired` frees them")
    if report["from_script"]:
        doc.ok(f"{report['from_script']} {'entry holds' if report['from_script'] == 1 else 'entries hold'} "
               "classes defined in their script (__main__): only that script loads them")
    if report["missing"]:
        count = sum(report["missing"].values())
        doc.problem(f"{count} {'entry has' if count == 1 else 'entries have'} metadata but no "
                    f"readable value: {', '.join(shown_site(s) for s in sorted(report['missing']))}",
                    "they are recomputed on the next run; or devstash clear --site FILE:LINE")
    if report["broken"]:
        count = sum(c for c, _ in report["broken"].values())
        lines = "; ".join(f"{shown_site(site)} ({c}: {why})"
                          for site, (c, why) in sorted(report["broken"].items()))
        doc.problem(f"{count} {'entry fails' if count == 1 else 'entries fail'} to unpickle: {lines}",
                    "their scripts recompute and replace them on the next run; "
                    "or devstash clear --site FILE:LINE")


def shown_site(site: str) -> str:
    return Entry({"key": b"", "callee": "", "site": site, "created": 0.0, "ttl": 0.0,
                  "size": 0, "compute": 0.0, "hits": 0, "last_hit": 0.0}).shown_site()


def check_secret(doc: Doctor) -> None:
    if os.environ.get(_signing.ENV_VAR):
        doc.ok(f"exports are signed with ${_signing.ENV_VAR}")
        return
    path = _signing.key_file()
    if not os.path.exists(path):
        doc.ok(f"signing key: none yet ({path} is created on the first export)")
    elif _signing.loose_permissions(path):
        doc.problem(f"the signing key {path} is readable or writable by others",
                    f"chmod 600 {path}")
    else:
        doc.ok(f"exports are signed with the key in {path}")


# ---- the parser ------------------------------------------------------------------

def command(handler):
    """Runs a command: a CliError or a failing store becomes one line on
    stderr and exit status 1."""
    def run(ns) -> int:
        try:
            return handler(ns)
        except CliError as exc:
            return fail(str(exc))
        except (OSError, _core.StoreError) as exc:
            if isinstance(exc, BrokenPipeError):
                # Output piped into head: not an error; keep exit quiet.
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                return 0
            return fail(describe(exc))
        except KeyboardInterrupt:
            return fail("interrupted", 130)
    run.__name__ = handler.__name__
    return run


def fail(message: str, status: int = 1) -> int:
    sys.stdout.flush()
    print(f"devstash: {message}", file=sys.stderr)
    return status


def add_commands(commands, common) -> None:
    """Adds every command but `run` to the subparsers of the devstash parser;
    common holds the options every command takes (--cache-dir)."""
    def add(name, handler, help, description=None):
        p = commands.add_parser(name, help=help, description=description or help,
                                parents=[common])
        p.set_defaults(handler=command(handler), parser=p)
        return p

    p = add("list", cmd_list, "list cached entries",
            "One row per entry: key prefix, callee, call site, size, age, TTL state, hits.")
    add_filters(p)
    p.add_argument("--json", action="store_true", help="print a JSON list (for scripts)")

    p = add("show", cmd_show, "show one entry and a summary of its value")
    p.add_argument("key", metavar="KEY", help="the key, or any unique hex prefix of it")

    p = add("clear", cmd_clear, "remove entries",
            "Remove entries: --all, or those matching every selector given.")
    p.add_argument("--all", action="store_true", help="remove every entry")
    add_filters(p)
    p.add_argument("--older-than", metavar="DURATION", type=parse_duration,
                   help="entries created longer ago than DURATION (30m, 2d, 1w)")

    add("compact", cmd_compact, "rewrite the store without its free space",
        "Write a compacted copy of the store and swap it in. Processes that have the store "
        "open meanwhile keep working on the old file; what they write after the swap is lost "
        "(recomputed later).")

    p = add("stats", cmd_stats, "entries, size, hits and time saved")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("prune", cmd_prune, "remove entries until the values fit a size",
            "Remove the least recently hit entries (entries never hit first, oldest first) "
            "until the values take at most --max-size.")
    p.add_argument("--max-size", metavar="SIZE", type=parse_size, required=True,
                   help="500M, 2G, ... (K, M, G, T are powers of 1024)")

    p = add("export", cmd_export, "write entries to a signed file a teammate can import",
            "Write the cache's unexpired entries to FILE, each signed with HMAC-SHA256 "
            f"(key: ${_signing.ENV_VAR}, else {_signing.key_file()}, created on first use). "
            "On a terminal, a progress bar shows once it takes more than a second.")
    p.add_argument("file", metavar="FILE")
    add_filters(p, expired=False)

    p = add("import", cmd_import, "merge the entries of an exported file",
            "Merge the entries of FILE into the cache; an entry created at the same time or "
            "later here is kept. Entries whose signature does not verify are refused. "
            "On a terminal, a progress bar shows once it takes more than a second.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--trust", action="store_true",
                   help="also import entries that fail verification (their values are pickles: "
                        "loading one can run any code, so only for files you trust)")

    add("doctor", cmd_doctor, "check the cache and say how to fix what is wrong")
