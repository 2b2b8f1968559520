"""Sharing paid-for results: export and import.

Export file format (version 2; integers little-endian):

    header  = b"DEVSTASH-EXPORT\\n" | u32 version | key id (8 bytes)
    entry   = b"E" | key (16) | u32 meta_len | meta | u64 record_len | record | mac (32)
    trailer = b"Z" | u64 number of entries | digest (32) | trailer mac (32)
    and nothing after it.

meta is UTF-8 JSON {"callee", "site", "ttl", "compute"}; a site under the
exporter's working directory is written relative to it and made absolute
against the importer's. record is the store's own value record (checksum,
creation time, pickle, out-of-band buffers: Store.get_record, which
verifies the checksum), checked again by Store.put_record on import. mac is
HMAC-SHA256 over b"devstash-export-v2\\0" followed by the entry's bytes from
b"E" to the end of record (_signing.py says which secret). digest is the
SHA-256 of every byte of the file before the trailer, and the trailer mac is
HMAC-SHA256 over b"devstash-export-v2-trailer\\0", b"Z", the count and the
digest: entries dropped, added, reordered or changed, and bytes appended,
make the whole file fail, so import checks the whole file before it writes
anything. The key id (the first 8 bytes of HMAC(secret, "devstash-key-id"))
lets import tell "another secret" from "altered".

Export refuses a cache folder that fails the safety checks (folder.c):
entries someone else could have planted must not be signed as the user's.
"""
import hashlib
import os
import struct
import time

from . import _core, _signing
from ._cli_common import (CliError, Progress, cache_folder, format_size, iter_entries, matches,
                          open_store)
from ._cli_values import record_layout
from ._entry_meta import dump_meta, local_site, parse_meta

EXPORT_MAGIC = b"DEVSTASH-EXPORT\n"
EXPORT_VERSION = 2
MAC_DOMAIN = b"devstash-export-v2\0"
TRAILER_DOMAIN = b"devstash-export-v2-trailer\0"
_HEADER = struct.Struct("<16sI8s")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_TRAILER = 1 + 8 + 32 + _signing.MAC_SIZE
MAX_META = 1 << 20






def load_secret(create: bool):
    try:
        return _signing.load(create)
    except _signing.SecretError as exc:
        raise CliError(str(exc)) from None


def trailer_mac(secret, count: int, digest: bytes) -> bytes:
    return secret.sign(TRAILER_DOMAIN + b"Z" + _U64.pack(count) + digest)


def check_exportable(folder: str) -> None:
    """Refuses a cache folder others could have written: export would sign
    what they planted as the user's."""
    try:
        unsafe = _core.check_folder(folder)
    except OSError:
        return   # open_store says what is wrong
    if unsafe is not None:
        problem, fix = unsafe
        raise CliError(f"refusing to export from {folder}: {problem}, and an export would sign "
                       f"their entries as yours; fix: {fix}")


def cmd_export(ns) -> int:
    import tempfile

    folder = cache_folder()
    check_exportable(folder)
    store = open_store(folder, readonly=True)
    now = time.time()
    chosen = [e for e in iter_entries(store) if matches(e, ns, now)]
    live = sorted((e for e in chosen if not e.expired(now)), key=lambda e: e.hex)
    secret = load_secret(create=True)
    target = os.path.abspath(ns.file)
    cwd = os.getcwd()
    try:
        fd, tmp = tempfile.mkstemp(prefix=".devstash-export-", dir=os.path.dirname(target))
    except OSError as exc:
        raise CliError(f"cannot write {ns.file}: {exc.strerror}") from None
    count = size = damaged = 0
    digest = hashlib.sha256()
    progress = Progress("exporting", len(live))
    try:
        with os.fdopen(fd, "wb") as out:
            def write(data):
                out.write(data)
                digest.update(data)

            write(_HEADER.pack(EXPORT_MAGIC, EXPORT_VERSION, secret.key_id))
            for i, e in enumerate(live):
                try:
                    record = store.get_record(e.key)   # its checksum verified
                except _core.DamagedError:
                    damaged += 1   # never signed: it is not what was stored
                    continue
                if record is None:
                    continue   # removed meanwhile, or only metadata left
                meta = dump_meta(e.callee, e.site, e.ttl, e.compute, cwd)
                body = b"".join((b"E", e.key, _U32.pack(len(meta)), meta,
                                 _U64.pack(len(record)), record))
                write(body)
                write(secret.sign(MAC_DOMAIN + body))
                count += 1
                size += e.size
                progress.update(i + 1)
            done = digest.digest()
            out.write(b"Z" + _U64.pack(count) + done + trailer_mac(secret, count, done))
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
    if damaged:
        note += (f"; {damaged} damaged {'entry' if damaged == 1 else 'entries'} left out "
                 "(`devstash doctor` lists them)")
    print(f"exported {count} {'entry' if count == 1 else 'entries'} ({format_size(size)}) "
          f"to {ns.file}, signed with {secret.source}{note}")
    return 0


class ExportReader:
    """Reads an export file entry by entry, checking every length against
    what is left of the file before reading it, and hashing what it read."""

    def __init__(self, f, name: str):
        self.f = f
        self.name = name
        self.size = os.fstat(f.fileno()).st_size
        self.digest = hashlib.sha256()
        head = f.read(_HEADER.size)
        if len(head) < _HEADER.size or not head.startswith(EXPORT_MAGIC):
            raise CliError(f"{name} is not a devstash export")
        _magic, version, self.key_id = _HEADER.unpack(head)
        if version != EXPORT_VERSION:
            raise CliError(f"{name} is a version {version} export; this devstash reads "
                           f"version {EXPORT_VERSION} (export it again with this devstash)")
        self.digest.update(head)
        self.start = f.tell()
        self.count = None   # from the trailer
        self.seen = 0
        self.signed_digest = self.mac = None

    def damaged(self, what: str = "truncated or damaged") -> CliError:
        return CliError(f"{self.name} is {what}; nothing was imported")

    def exact(self, n: int) -> bytes:
        if n > self.size - self.f.tell():
            raise self.damaged()
        data = self.f.read(n)
        if len(data) != n:
            raise self.damaged()
        return data

    def entries(self):
        """Yields (key, meta bytes, record, signed bytes, mac); then checks
        the trailer's structure: its count, its digest, the end of file."""
        while True:
            kind = self.exact(1)
            if kind == b"Z":
                self.read_trailer()
                return
            if kind != b"E":
                raise self.damaged(f"damaged (unknown record at byte {self.f.tell() - 1})")
            key = self.exact(16)
            meta_len_b = self.exact(4)
            meta_len = _U32.unpack(meta_len_b)[0]
            if meta_len > MAX_META:
                raise self.damaged(f"damaged (metadata of {meta_len} bytes)")
            meta = self.exact(meta_len)
            record_len_b = self.exact(8)
            record = self.exact(_U64.unpack(record_len_b)[0])
            mac = self.exact(_signing.MAC_SIZE)
            body = b"".join((kind, key, meta_len_b, meta, record_len_b, record))
            self.digest.update(body)
            self.digest.update(mac)
            self.seen += 1
            yield key, meta, record, body, mac

    def read_trailer(self) -> None:
        rest = self.exact(_TRAILER - 1)
        self.count = _U64.unpack(rest[:8])[0]
        self.signed_digest = rest[8:40]
        self.mac = rest[40:]
        extra = self.size - self.f.tell()
        if extra:
            raise self.damaged(f"damaged ({extra} byte{'s' if extra != 1 else ''} after its end)")
        self.read_digest = self.digest.digest()
        # Entries dropped, added or changed: the signed trailer does not
        # describe this file (a failed verification, which --trust overrides).
        self.intact = self.count == self.seen and self.signed_digest == self.read_digest

    def scan(self) -> None:
        """Reads the whole file once: its structure, count and digest."""
        for _entry in self.entries():
            pass

    def verifies(self, secret) -> bool:
        """Whether the trailer (count and digest of the whole file) matches
        the file and is signed with secret. After scan()."""
        return self.intact and secret is not None and secret.verify(
            TRAILER_DOMAIN + b"Z" + _U64.pack(self.count) + self.signed_digest, self.mac)

    def rewind(self) -> None:
        """Back to the first entry, for a second pass."""
        self.first_digest = self.read_digest
        self.f.seek(0)
        self.digest = hashlib.sha256(self.f.read(self.start))
        self.seen = 0




def value_size(record: bytes) -> int:
    """The pickle and buffer bytes of a well-formed value record (what
    listings call its size)."""
    start, _pickle_len, _data = record_layout(record)
    return len(record) - start


def refusal(reader, secret) -> str:
    if not reader.intact:
        return ("its entries do not match its signed trailer: entries were dropped, added or "
                "changed after export")
    if secret is None:
        return ("there is no signing secret here: set DEVSTASH_SECRET to the secret the file "
                "was exported with")
    if reader.key_id != secret.key_id:
        return (f"the file was signed with another secret than {secret.source}: set "
                "DEVSTASH_SECRET to the exporter's")
    return "it was altered after export"


def cmd_import(ns) -> int:
    secret = load_secret(create=False)
    try:
        f = open(ns.file, "rb")
    except OSError as exc:
        raise CliError(f"cannot read {ns.file}: {exc.strerror}") from None
    folder = cache_folder()
    imported = kept = malformed = size = 0
    unverified = 0   # entries that fail verification, imported with --trust
    cwd = os.getcwd()
    with f:
        reader = ExportReader(f, ns.file)
        # First the whole file: its structure, count and digest, and the
        # signature over them. Nothing is written before it all checks out.
        reader.scan()
        whole = reader.verifies(secret)
        if not whole and not ns.trust:
            raise CliError(f"refused {ns.file}: its signature does not verify "
                           f"({refusal(reader, secret)}); nothing was imported; pass --trust to "
                           "import its entries anyway")
        reader.rewind()
        store = open_store(folder, readonly=False)
        progress = Progress("importing", reader.size)
        try:
            for key, meta_bytes, record, body, mac in reader.entries():
                progress.update(f.tell())
                if not (secret is not None and secret.verify(MAC_DOMAIN + body, mac)):
                    unverified += 1
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
    if reader.read_digest != reader.first_digest:
        raise CliError(f"{ns.file} changed while it was imported: {imported} entries were "
                       "imported, each checked by its own signature; import it again once it "
                       "is whole")
    parts = [f"imported {imported} {'entry' if imported == 1 else 'entries'} "
             f"({format_size(size)}) from {ns.file}"]
    if kept:
        parts.append(f"kept {kept} local {'entry' if kept == 1 else 'entries'} as new or newer")
    if malformed:
        parts.append(f"skipped {malformed} malformed")
    if not whole:
        parts.append(f"the file's signature does not verify ({refusal(reader, secret)})")
    if unverified and ns.trust:
        parts.append(f"{unverified} not verified, imported because of --trust")
    print("; ".join(parts))
    if unverified and not ns.trust:   # a whole file that verifies, yet an entry does not
        raise CliError(f"refused {unverified} {'entry' if unverified == 1 else 'entries'} that "
                       "fail verification")
    return 0
