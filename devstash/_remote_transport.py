"""What the remote transports share: their error, their timeout, and the
choice of one by URL scheme."""
import os

# Seconds to connect, and to wait for any one read or write: a remote that
# is down or stuck costs a run about this much once (then it goes on
# local-only), never a hang.
TIMEOUT = float(os.environ.get("DEVSTASH_REMOTE_TIMEOUT") or 1.0)


class RemoteError(OSError):
    """The remote cannot be reached, timed out, or answered what it should not."""


def open_transport(url: str):
    """The transport for url: redis:// and rediss:// (redis-py), http:// and
    https:// (the standard library)."""
    scheme = url.partition("://")[0].lower()
    if scheme in ("redis", "rediss"):
        from ._remote_redis import RedisTransport

        return RedisTransport(url)
    if scheme in ("http", "https"):
        from ._remote_http import HttpTransport

        return HttpTransport(url)
    raise RemoteError("it is neither a redis://, rediss://, http:// nor https:// URL")


def shown_url(url: str) -> str:
    """url without the password it may hold, for messages."""
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.partition("@")
    if not sep or not at or "/" in userinfo:
        return url
    user = userinfo.partition(":")[0]
    return f"{scheme}://{user + ':***' if user else '***'}@{host}"
