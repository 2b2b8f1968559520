"""The remote cache on an HTTP cache server, through the standard library.

Bazel's remote-cache layout: GET/PUT/HEAD <base>/ac/<key hex> for signed
entries (_remote_entry.py) and <base>/cas/<sha256 hex> for the value bytes
of large entries. Works against bazel-remote and against a plain WebDAV
server (nginx with `dav_methods PUT`). Listing entries (pull, list --remote,
status) needs a server that lists a folder as JSON: nginx's
`autoindex on; autoindex_format json;`.

Plain HTTP has no "create unless present": an entry is written after a
HEAD finds none, then read back SETTLE seconds later (in the background
upload); when another machine's write came in meanwhile, the entry read
back is theirs, and this machine adopts it (_remote.py). Only a machine
stalled for longer than SETTLE between its HEAD and its PUT can still end
with a value of its own (until its next pull).
"""
import base64
import hashlib
import http.client
import json
import ssl
import threading
import urllib.parse

from ._remote_transport import (CHUNK, WRONG_PASSWORD, Hasher, RemoteError, RemoteRefused, TIMEOUT,
                                tls_context, untrusted, value_buffer)

_RETRY = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class HttpTransport:
    SETTLE = 0.1   # seconds between writing an entry and reading it back

    def __init__(self, url: str, ca=None):
        parts = urllib.parse.urlsplit(url)
        if not parts.hostname:
            raise RemoteError("it names no host")
        self.https = parts.scheme.lower() == "https"
        self.host = parts.hostname
        try:
            self.port = parts.port
        except ValueError as exc:
            raise RemoteError(str(exc)) from None
        self.base = parts.path.rstrip("/")
        # Basic auth from the URL's user:password (never in a message: shown_url).
        self.headers = {}
        if parts.username is not None:
            who = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            self.headers["Authorization"] = "Basic " + base64.b64encode(who.encode()).decode()
        self.context = tls_context(ca) if self.https else None
        self._local = threading.local()   # one kept-alive connection a thread

    def _connection(self):
        conn = getattr(self._local, "conn", None)
        if conn is None:
            if self.https:
                conn = http.client.HTTPSConnection(self.host, self.port, timeout=TIMEOUT,
                                                   context=self.context)
            else:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
            self._local.conn = conn
        return conn

    def _drop(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _request(self, method, path, body=None, hashed=False):
        """(status, body bytes or None) of one request; a kept-alive
        connection the server closed meanwhile is opened again once.
        hashed: a GET's body comes as (body, its SHA-256)."""
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request(method, self.base + path, body=body, headers=self.headers)
                resp = conn.getresponse()
                data = _read(resp, hashed) if method == "GET" and resp.status == 200 else resp.read()
                if resp.will_close:
                    self._drop()
            except _RETRY as exc:
                self._drop()
                if attempt:
                    raise RemoteError(str(exc) or type(exc).__name__) from None
            except ssl.SSLCertVerificationError as exc:
                self._drop()
                raise untrusted(exc) from None
            except (OSError, http.client.HTTPException) as exc:
                self._drop()
                raise RemoteError(str(exc) or type(exc).__name__) from None
            else:
                if resp.status == 401:
                    raise RemoteRefused(WRONG_PASSWORD if "Authorization" in self.headers else
                                        "it asks for a user name and password: "
                                        "https://user:password@host/... in the URL")
                return resp.status, data
        raise AssertionError("unreachable")

    def _get(self, path, hashed=False):
        status, data = self._request("GET", path, hashed=hashed)
        if status == 200:
            return data
        if status == 404:
            return None
        raise RemoteError(f"GET {self.base + path} answered {status}")

    def _has(self, path) -> bool:
        status, _ = self._request("HEAD", path)
        if status in (200, 404):
            return status == 200
        raise RemoteError(f"HEAD {self.base + path} answered {status}")

    def _put(self, path, data) -> None:
        status, _ = self._request("PUT", path, body=data)
        if status not in (200, 201, 204):
            raise RemoteError(f"PUT {self.base + path} answered {status}")

    def ping(self) -> None:
        status, _ = self._request("HEAD", "/ac/")
        if status >= 500 or status in (403, 407):
            raise RemoteError(f"HEAD {self.base}/ac/ answered {status}")

    def get_ac(self, hexkey: str):
        return self._get("/ac/" + hexkey)

    def has_ac(self, hexkey: str) -> bool:
        return self._has("/ac/" + hexkey)

    def put_ac(self, hexkey: str, data: bytes, create_only: bool):
        """True when written; with create_only, False when an entry was
        there, else None: confirm() tells, SETTLE seconds later, whether
        this write stands (see the module's comment)."""
        path = "/ac/" + hexkey
        if create_only and self._has(path):
            return False
        self._put(path, data)
        return None if create_only else True

    def confirm(self, hexkey: str, data: bytes) -> bool:
        """Whether the entry written by put_ac is still ours."""
        return self._get("/ac/" + hexkey) == data

    def get_cas(self, digest: str, size: int):
        """(value bytes, their SHA-256), or None."""
        return self._get("/cas/" + digest, hashed=True)

    def has_cas(self, digest: str) -> bool:
        return self._has("/cas/" + digest)

    def put_cas(self, digest: str, body) -> None:
        self._put("/cas/" + digest, body)

    def _listing(self, folder: str) -> list:
        """[(name, size)] of a folder, from a JSON directory listing."""
        status, data = self._request("GET", folder)
        if status == 404:
            return []
        try:
            items = json.loads(data) if status == 200 else None
            if not isinstance(items, list):
                raise ValueError
            return [(item["name"], int(item.get("size", 0))) for item in items
                    if item.get("type") == "file"]
        except (ValueError, TypeError, KeyError, AttributeError):
            raise RemoteError("the server does not list its entries as JSON (for nginx: "
                              "autoindex on; autoindex_format json;)") from None

    def ac_keys(self) -> list:
        return [name for name, _size in self._listing("/ac/")]

    def usage(self) -> tuple:
        ac = self._listing("/ac/")
        cas = self._listing("/cas/")
        return len(ac), sum(size for _name, size in ac + cas)


def _read(resp, hashed=False):
    """The body of a response, read into one buffer of its announced size
    (value_buffer: a large value is not copied from chunk to chunk). hashed: (body, its
    SHA-256), the hash taken by a second thread while the rest arrives."""
    if resp.length is None:
        data = bytearray(resp.read())
        return (data, hashlib.sha256(data).digest()) if hashed else data
    buf = value_buffer(resp.length)
    view = memoryview(buf)
    hasher = Hasher() if hashed else None
    got = done = 0
    try:
        while got < len(buf):
            n = resp.readinto(view[got:min(len(buf), got + CHUNK)])
            if not n:
                raise http.client.IncompleteRead(bytes(view[:got]), len(buf) - got)
            got += n
            if hasher is not None and (got - done >= CHUNK or got == len(buf)):
                hasher.feed(view[done:got])
                done = got
    finally:
        digest = hasher.finish() if hasher is not None else None
    return (buf, digest) if hashed else buf
