"""What the remote transports share: their errors, their timeout, the
hashing of large values while they arrive, the trust of a private CA, and
the choice of a transport by URL scheme."""
import hashlib
import mmap
import os
import queue
import ssl
import threading

# Seconds to connect, and to wait for any one read or write: a remote that
# is down or stuck costs a run about this much once (then it goes on
# local-only), never a hang.
TIMEOUT = float(os.environ.get("DEVSTASH_REMOTE_TIMEOUT") or 1.0)


# Large values are read in pieces of this size, each hashed while the next arrives.
CHUNK = 4 << 20


def value_buffer(size: int):
    """size writable bytes for a large value to be read into, which a value
    loaded from them may keep as its memory. Large: a private anonymous
    mapping asking for huge pages, which the kernel hands out zeroed as the
    bytes first land in them: 100 MB costs ~10 ms of page faults where a
    bytearray (zeroed whole first, in 4 KiB pages) costs 60-80 ms. Private,
    not mmap's default shared: a child of fork must not see the parent's
    arrays change, and shared memory faults slower still."""
    if size < CHUNK or not hasattr(mmap, "MAP_PRIVATE"):
        return bytearray(size)
    buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            buf.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass   # a kernel without transparent huge pages: 4 KiB pages, as a bytearray's
    return buf


class RemoteError(OSError):
    """The remote cannot be reached, timed out, or answered what it should not."""


class RemoteRefused(RemoteError):
    """The remote answers, and will not have this machine: a user name or
    password it does not accept, or a TLS certificate not trusted here."""


WRONG_PASSWORD = "it did not accept the user name or password of the URL"


def untrusted(exc) -> RemoteRefused:
    return RemoteRefused(f"its TLS certificate is not trusted here ({exc}); set DEVSTASH_REMOTE_CA "
                         "to the PEM file of the CA that signed it")


def cert_error(exc):
    """The certificate verification failure behind exc (its cause or
    context, as redis-py wraps it), or None."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return exc
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return None


def tls_context(ca):
    """The system's trusted CAs, and ca's too when given (a PEM file)."""
    context = ssl.create_default_context()
    if ca:
        try:
            context.load_verify_locations(cafile=ca)
        except (OSError, ssl.SSLError) as exc:
            raise RemoteError(f"cannot read the CA certificates of {ca} "
                              f"(DEVSTASH_REMOTE_CA): {exc}") from None
    return context


def open_transport(config):
    """The transport for config.url: redis:// and rediss:// (redis-py),
    http:// and https:// (the standard library); config.ca: a PEM file of
    CAs trusted on top of the system's."""
    url = config.url
    scheme = url.partition("://")[0].lower()
    if scheme in ("redis", "rediss"):
        from ._remote_redis import RedisTransport

        return RedisTransport(url, config.ca)
    if scheme in ("http", "https"):
        from ._remote_http import HttpTransport

        return HttpTransport(url, config.ca)
    raise RemoteError("it is neither a redis://, rediss://, http:// nor https:// URL")


def shown_url(url: str) -> str:
    """url without the password it may hold, for messages."""
    scheme, sep, rest = url.partition("://")
    end = min([i for i in map(rest.find, "/?#") if i >= 0] or [len(rest)])
    # The last @ of the host part ends the user info, as for urllib and
    # redis-py: a password may hold an @ not written %40.
    userinfo, at, host = rest[:end].rpartition("@")
    if not sep or not at:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user + ':***' if user else '***'}@{host}{rest[end:]}"


class Hasher:
    """SHA-256 on a thread of its own, fed pieces in order (hashlib lets go
    of the GIL while it hashes, so hashing overlaps the reading)."""

    def __init__(self):
        self.sha = hashlib.sha256()
        self.pieces = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._run, name="devstash-sha256", daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            piece = self.pieces.get()
            if piece is None:
                return
            self.sha.update(piece)

    def feed(self, piece):
        self.pieces.put(piece)

    def finish(self) -> bytes:
        self.pieces.put(None)
        self.thread.join()
        return self.sha.digest()
