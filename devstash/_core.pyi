"""devstash._core: the C core. Python code reaches it only through the
devstash package; this stub documents its surface."""
import ast
from types import CodeType
from typing import Any, Iterable, TypedDict

RUNTIME_NAME: str  # "@devstash": the global a rewritten module calls

class MarkerError(SyntaxError):
    """A # @devstash marker that cannot be applied; carries file, line, column."""

class StoreError(OSError):
    """The LMDB store failed: "<what>: <mdb_strerror>"."""

class UnsafeFolderError(StoreError):
    """The cache folder or a file in it is someone else's, writable by others,
    or a symbolic link (folder.c): its values could run someone else's code."""
    problem: str
    fix: str

class DamagedError(StoreError):
    """data.mdb (cut short, unreadable pages) or a value record (checksum) is
    damaged."""

class BusyError(StoreError):
    """A write waited Store.lock_timeout seconds for another process holding
    the cache (stopped?) or for a read of this process: nothing was written."""

# folder.c
def check_folder(path: str) -> tuple[str, str] | None: ...

# scanner.c
def comments(source: bytes) -> list[tuple[int, int]]: ...
def markers(source: bytes) -> list[tuple[int, int, str, bool]]: ...
def has_marker(source: bytes) -> bool: ...

# options.c
class Options(TypedDict):
    ttl: float
    flags: int
    refresh: bool
    nocode: bool

def parse_options(text: str) -> Options: ...
def parse_duration(text: str) -> float: ...

# rewrite.c
Site = tuple[int, int, float, int, str, str]  # line, column, ttl, flags, kind, label

def rewrite(source: bytes, filename: str, resume_line: int = 0, tree: bool = False,
            original: CodeType | None = None) -> tuple[CodeType | "ast.Module", tuple[Site, ...]]: ...

# keys.c
def hash_value(obj: object) -> bytes: ...
def hash_call(callee: object, *args: Any, **kwargs: Any) -> bytes: ...
def hash_call_ex(callee: object, *args: Any, **kwargs: Any) -> tuple[bytes, tuple[str, ...]]: ...
def hash_code(func: object) -> bytes | None: ...
def set_library_prefixes(prefixes: tuple[str, ...]) -> None: ...

# store.c
class EntryMeta(TypedDict):
    key: bytes
    callee: str
    site: str
    created: float
    ttl: float
    size: int
    compute: float
    hits: int
    last_hit: float

class Store:
    path: str
    readonly: bool
    closed: bool
    saved_seconds: float  # compute seconds of the hits flushed through this object
    lock_timeout: float  # seconds a write waits for another process before BusyError
    def __init__(self, path: str, map_size: int = 0, readonly: bool = False) -> None: ...
    def __enter__(self) -> "Store": ...
    def __exit__(self, *exc: object) -> None: ...
    def close(self) -> None: ...
    def get(self, key: bytes) -> tuple[float, bytes, list[bytearray]] | None: ...
    def put(
        self, key: bytes, pickle: bytes, buffers: Iterable[Any] = (), *,
        created: float | None = None, ttl: float = 0.0, compute: float = 0.0,
        callee: str = "", site: str = "",
    ) -> None: ...
    def delete(self, key: bytes) -> bool: ...
    def meta(self, key: bytes) -> EntryMeta | None: ...
    def entries(self) -> list[EntryMeta]: ...
    # store_scan.c: walks for the devstash command, in C over the cursor
    def scan(self, after: bytes | None = None, limit: int = -1, prefix: str = "") -> list[EntryMeta]: ...
    def totals(self, now: float) -> dict[str, Any]: ...  # entries, size, hits, saved, expired, sites
    def prune(self, max_size: int) -> tuple[int, int, int, int]: ...  # removed, bytes, left, bytes
    def count(self) -> int: ...
    def note_hit(self, key: bytes, when: float) -> None: ...
    def flush(self, wait: bool = True) -> None: ...
    def get_code(self, key: bytes) -> bytes | None: ...
    def put_code(self, key: bytes, data: bytes) -> None: ...
    def info(self) -> dict[str, Any]: ...
    # raw records, for export/import and the CLI
    def get_record(self, key: bytes) -> bytes | None: ...  # DamagedError: checksum
    def verify(self, key: bytes) -> str: ...  # "ok", "missing", "old", "damaged"
    def put_record(self, key: bytes, record: bytes, *, ttl: float = 0.0, compute: float = 0.0,
                   callee: str = "", site: str = "", if_newer: bool = False,
                   body: bytes | None = None) -> bool: ...  # record + body, joined in the map
    def clear(self) -> int: ...
    def compact_to(self, filename: str) -> int: ...
    def check_readers(self) -> int: ...

class Buffer:
    """Writable memory holding a loaded value's large out-of-band buffer."""

# runtime.c
class Runtime:
    store: Store | None
    filename: str
    sites: tuple[Site, ...]
    refresh: int
    verbose: int
    hits: int
    misses: int
    stores: int
    compute_seconds: float
    def __init__(self, store: Store | None, filename: str, sites: tuple[Site, ...],
                 refresh: bool = False, verbose: bool = False) -> None: ...
    def call(self, site: int, func: Any, /, *args: Any, **kwargs: Any) -> Any: ...
    def key_call(self, site: int, func: Any, /, *args: Any, **kwargs: Any) -> bytes | None: ...
    def key_chain(self, site: int, root: Any, steps: tuple[Any, ...], /) -> bytes | None: ...
    def key_expr(self, site: int, values: tuple[Any, ...], /) -> bytes | None: ...
    def load(self, site: int, key: bytes, /) -> tuple[bool, Any]: ...
    def save(self, site: int, key: bytes, value: Any, seconds: float, callee: Any = None, /) -> bool: ...

# stash.c
def stash_type(name: str, qualname: str, fields: tuple[str, ...], kinds: tuple[int, ...],
               defaults: dict[str, Any], flags: int, base: type | None,
               namespace: dict[str, Any], signature: str | None = None) -> type:
    """A Stash record type (devstash/_stash.py decides its fields and options).

    fields: every field, the base's first; kinds: 0 a reference, 1 an int64,
    2 a double, 3 a bool (compact=True); flags: 1 freeze, 2 weakref, 4 gc;
    namespace: attributes set on the new class (__module__ required);
    signature: "Name(a, b=1)\n--\n\n", the class's __text_signature__."""
