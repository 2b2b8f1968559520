"""The remote cache on Redis, through redis-py (`pip install devstash[redis]`).

Keys: <prefix>ac:<key hex> holds a signed entry (_remote_entry.py),
<prefix>cas:<sha256 hex> the value bytes of large entries. An entry is
created with SET NX: of two machines that computed the same key at once,
the first one's entry stays, and the second adopts it (_remote.py).
"""
import hashlib
import urllib.parse

from ._remote_transport import (CHUNK, WRONG_PASSWORD, Hasher, RemoteError, RemoteRefused, TIMEOUT,
                                cert_error, tls_context, untrusted, value_buffer)

PREFIX = "devstash:"


class RedisTransport:
    SETTLE = 0.0   # SET NX decides at once: put_ac never asks for confirm()

    def __init__(self, url: str, ca=None):
        try:
            import redis
        except ImportError:
            raise RemoteError("it is a Redis URL and redis-py is not installed: "
                              "pip install 'devstash[redis]'") from None
        self._errors = (redis.RedisError, OSError)
        self._auth = (redis.AuthenticationError, redis.ResponseError)
        self._password = bool(urllib.parse.urlsplit(url).password)
        tls = {}
        if url.partition("://")[0].lower() == "rediss":
            # The certificate is checked against the host name too (redis-py
            # before 6 did not by default); ca: trusted on top of the system's.
            tls["ssl_check_hostname"] = True
            if ca:
                tls_context(ca)   # an unreadable file said as such, not as a failed connection
                tls["ssl_ca_certs"] = ca
        try:
            self.client = redis.Redis.from_url(url, socket_connect_timeout=TIMEOUT,
                                               socket_timeout=TIMEOUT, **tls)
        except ValueError as exc:
            raise RemoteError(f"not a Redis URL ({exc})") from None

    def _do(self, op, *args, **kwargs):
        try:
            return op(*args, **kwargs)
        except self._errors as exc:
            raise self._error(exc) from None

    def _error(self, exc) -> RemoteError:
        """What exc says of the remote; a wrong password or an untrusted
        certificate is said as such (redis-py wraps the latter)."""
        text = str(exc)
        if isinstance(exc, self._auth) and (not isinstance(exc, self._auth[1])
                                            or text.startswith(("NOAUTH", "WRONGPASS"))):
            return RemoteRefused(WRONG_PASSWORD if self._password else
                                 "it asks for a password: redis://:password@host:port/0 "
                                 "(or user:password@ for an ACL user) in the URL")
        cert = cert_error(exc)
        if cert is not None or "CERTIFICATE_VERIFY_FAILED" in text:
            return untrusted(cert or text)
        return RemoteError(text or type(exc).__name__)

    def ping(self) -> None:
        self._do(self.client.ping)

    def get_ac(self, hexkey: str):
        return self._do(self.client.get, PREFIX + "ac:" + hexkey)

    def put_ac(self, hexkey: str, data: bytes, create_only: bool) -> bool:
        """True when written; False when create_only and an entry was there."""
        return bool(self._do(self.client.set, PREFIX + "ac:" + hexkey, data, nx=create_only))

    def has_ac(self, hexkey: str) -> bool:
        return bool(self._do(self.client.exists, PREFIX + "ac:" + hexkey))

    def get_cas(self, digest: str, size: int):
        """(value bytes, their SHA-256), or None. A large value (size: what
        its entry says) is read in pieces (GETRANGE) into one writable
        buffer, each piece hashed while the next arrives: redis-py would
        gather a 100 MB reply through copies of its own."""
        name = PREFIX + "cas:" + digest
        if size < 2 * CHUNK:
            body = self._do(self.client.get, name)
            return None if body is None else (body, hashlib.sha256(body).digest())
        stored = self._do(self.client.strlen, name)
        if stored != size:
            return None if stored == 0 else (b"", b"")   # fails the entry's check
        buf = value_buffer(size)
        view = memoryview(buf)
        hasher = Hasher()
        pos = 0
        try:
            while pos < size:
                piece = self._do(self.client.getrange, name, pos, min(size, pos + CHUNK) - 1)
                if not piece:
                    break
                view[pos:pos + len(piece)] = piece
                hasher.feed(view[pos:pos + len(piece)])
                pos += len(piece)
        finally:
            digest_seen = hasher.finish()
        return (buf, digest_seen) if pos == size else (b"", b"")

    def has_cas(self, digest: str) -> bool:
        return bool(self._do(self.client.exists, PREFIX + "cas:" + digest))

    def put_cas(self, digest: str, body) -> None:
        self._do(self.client.set, PREFIX + "cas:" + digest, body)

    def ac_keys(self) -> list:
        """The key hex of every entry."""
        start = len(PREFIX) + 3
        return [name[start:].decode() for name in
                self._do(lambda: list(self.client.scan_iter(match=PREFIX + "ac:*", count=1000)))]

    def usage(self) -> tuple:
        """(entries, bytes of entries and value bytes)."""
        def total():
            names = list(self.client.scan_iter(match=PREFIX + "*", count=1000))
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.strlen(name)
            sizes = pipe.execute() if names else []
            entries = sum(1 for name in names if name.startswith((PREFIX + "ac:").encode()))
            return entries, sum(sizes)
        return self._do(total)
