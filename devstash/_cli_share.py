"""Sharing paid-for results: export and import.

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
"""
import json
import math
import os
import struct
import time

from . import _signing
from ._cli_common import (CliError, Progress, cache_folder, format_size, load_entries, matches,
                          open_store)

EXPORT_MAGIC = b"DEVSTASH-EXPORT\n"
EXPORT_VERSION = 1
MAC_DOMAIN = b"devstash-export-v1\0"
_HEADER = struct.Struct("<16sI8s")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
MAX_META = 1 << 20


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
