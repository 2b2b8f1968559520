"""The signed form of one entry on the remote cache.

A value record of the store (record.c: magic, checksum, creation time,
lengths, buffer table, then pickle and buffers) is cut in two: the head,
up to the end of the buffer table, and the body, the pickle and buffers.
The body is what a value is made of, the same bytes whoever computed it
and whenever: a large body goes to cas/<sha256 of body> once, however many
keys share it; a small one travels inside the entry.

Entry under ac/<key hex> (integers little-endian):

    MAGIC | key (16) | u32 meta_len | meta | u32 head_len | head |
    u64 body_len | sha256(body) (32) | u8 inline | [body if inline] | mac (32)

meta is dump_meta's JSON (_entry_meta.py). mac is HMAC-SHA256 under the
team secret (_signing.py) over DOMAIN and every byte before it: the key is
inside, so a signed entry cannot be moved to another key, and the body's
digest is inside, so a body from cas/ is checked against it before any
byte of it is unpickled. The store joins head and body where it keeps
them (Store.put_record's body: a large value is not copied in memory
first) and checks the record there once more (its checksum and lengths).
"""
import hashlib
import hmac
import struct

from ._cli_values import record_layout, record_lengths
from ._entry_meta import parse_meta

MAGIC = b"DSREMOT1"
DOMAIN = b"devstash-remote-v1\0"
KEY_SIZE = 16
MAC_SIZE = 32
# A body at least this large is stored once by content (cas/); smaller
# ones are cheaper inside the entry than as a second round trip.
CAS_MIN = 256 * 1024
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_F64 = struct.Struct("<d")


class BadEntry(ValueError):
    """Bytes that are not an entry this devstash writes, or whose signature
    does not verify under this secret."""


class Entry:
    """One remote entry, verified: its metadata, the head of its record and
    either its body or the digest under which cas/ holds it."""

    __slots__ = ("key", "meta_bytes", "meta", "head", "body_len", "digest", "body")

    def __init__(self, key, meta_bytes, meta, head, body_len, digest, body):
        self.key, self.meta_bytes, self.meta, self.head = key, meta_bytes, meta, head
        self.body_len, self.digest, self.body = body_len, digest, body

    @property
    def created(self) -> float:
        return _F64.unpack_from(self.head, 9)[0]

    def expired(self, now: float) -> bool:
        ttl = self.meta[2]
        return ttl > 0 and (now >= self.created + ttl or self.created > now)

    def checked_body(self, fetched=None):
        """The value bytes, checked against the signed length and digest:
        the entry's own, or fetched, (body, its SHA-256) as cas/ returned
        them (the transport hashes while it reads)."""
        body, digest = fetched if fetched is not None else (self.body, None)
        if body is None or len(body) != self.body_len:
            raise BadEntry("its value bytes do not match the signed digest")
        if digest is None:
            digest = hashlib.sha256(body).digest()
        if not hmac.compare_digest(digest, self.digest):
            raise BadEntry("its value bytes do not match the signed digest")
        return body


def value_parts(head, body) -> tuple:
    """(pickle, [out-of-band buffers]) of a record given as head and body,
    as views into body: a value loaded from them shares its memory."""
    pickle_len, nbuffers, table = record_lengths(head)
    view = memoryview(body)
    buffers, start = [], pickle_len
    for i in range(nbuffers):
        end = pickle_len + _U64.unpack_from(head, table + 8 * i)[0]
        buffers.append(view[start:end])
        start = end
    return view[:pickle_len], buffers


def split(record) -> tuple:
    """(head, body) of a value record, as memoryviews (no copy)."""
    start = record_layout(record)[0]
    view = memoryview(record)
    return view[:start], view[start:]


def pack(secret, key: bytes, meta: bytes, record) -> tuple:
    """(entry bytes, body digest hex or None, body): the signed entry of a
    record; when the digest is given, the body goes to cas/ under it."""
    head, body = split(record)
    digest = hashlib.sha256(body).digest()
    inline = len(body) < CAS_MIN
    parts = [MAGIC, key, _U32.pack(len(meta)), meta, _U32.pack(len(head)), head,
             _U64.pack(len(body)), digest, b"\1" if inline else b"\0"]
    if inline:
        parts.append(body)
    signed = b"".join(parts)
    data = signed + secret.sign(DOMAIN + signed)
    return data, (None if inline else digest.hex()), body


def unpack(secret, key: bytes, data: bytes) -> Entry:
    """The entry in data, its signature verified for key (BadEntry if not)."""
    if len(data) < len(MAGIC) + KEY_SIZE + MAC_SIZE or not data.startswith(MAGIC):
        raise BadEntry("it is not a devstash entry")
    signed, mac = data[:-MAC_SIZE], data[-MAC_SIZE:]
    if not secret.verify(DOMAIN + signed, mac):
        raise BadEntry("its signature does not verify (another secret, or altered)")
    pos = len(MAGIC)

    def take(n):
        nonlocal pos
        if n > len(signed) - pos:
            raise BadEntry("it is cut short")
        pos += n
        return signed[pos - n:pos]

    if take(KEY_SIZE) != key:
        raise BadEntry("it was signed for another key")
    meta_bytes = take(_U32.unpack(take(4))[0])
    meta = parse_meta(meta_bytes)
    if meta is None:
        raise BadEntry("its metadata is malformed")
    head = take(_U32.unpack(take(4))[0])
    if len(head) < 17:
        raise BadEntry("its record is malformed")
    body_len = _U64.unpack(take(8))[0]
    digest = take(32)
    inline = take(1) == b"\1"
    body = take(body_len) if inline else None
    if pos != len(signed):
        raise BadEntry("it has bytes after its end")
    return Entry(key, meta_bytes, meta, head, body_len, digest, body)
