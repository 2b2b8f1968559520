"""The team cache: a remote store behind the local one (policy).

The local store stays in front and its hit path never looks here. On a
local miss the runtime asks fetch(); a remote entry is verified (its HMAC
under the team secret, then the digest of its value bytes) before a byte
of it is unpickled, written to the local store and loaded from there. A
value computed here goes to the local store at once and to the remote from
a background thread (upload()); at exit the uploads left get EXIT_WAIT
seconds, then are abandoned with one warning (`devstash push` sends them).

The remote never fails a run: any error or timeout (_remote_transport.py)
turns it off for the rest of the run with one warning. Entries that fail
verification are skipped with one warning and never replace a local one.
Without a signing secret the remote is not used at all: unsigned pickles
from a server would run whatever code they name.
"""
import atexit
import collections
import os
import queue
import threading
import time

from . import _signing
from ._entry_meta import dump_meta, local_site
from ._remote_entry import BadEntry, pack, unpack
from ._remote_transport import RemoteError, RemoteRefused, open_transport, shown_url

EXIT_WAIT = float(os.environ.get("DEVSTASH_REMOTE_EXIT_WAIT") or 30.0)
MAX_PENDING = 10_000   # uploads waiting at once (keys only); more are left to `devstash push`

NO_SECRET = (f"set {_signing.ENV_VAR} to the team's secret (at least {_signing.MIN_SECRET} bytes, "
             "e.g. from python -c 'import secrets; print(secrets.token_hex(32))'), the same on "
             "every machine (the per-user key file of exports is not used here)")


def team_secret():
    """The Secret of DEVSTASH_SECRET, or None. Not the per-user key file
    exports fall back to: it differs from machine to machine, so each would
    refuse, and then overwrite, what the others wrote."""
    if not os.environ.get(_signing.ENV_VAR):
        return None
    return _signing.load(create=False)   # SecretError for a secret too short


def _warn(message: str) -> None:
    from ._runtime import warn

    warn(message)


def send(transport, secret, store, key: bytes, replace: bool, cwd: str):
    """Uploads the local entry of key: "sent", "there" (an entry was on the
    remote: not replaced unless replace), "gone" (no local entry), or the
    entry's bytes: written where another machine's write may replace it,
    to be confirmed (transport.confirm) SETTLE seconds later (HTTP)."""
    record = store.get_record(key)
    meta = store.meta(key)
    if record is None or meta is None:
        return "gone"
    data, digest, body = pack(secret, key, dump_meta(meta["callee"], meta["site"], meta["ttl"],
                                                     meta["compute"], cwd), record)
    if digest is not None and not transport.has_cas(digest):
        transport.put_cas(digest, body)   # the value bytes first: an entry never points nowhere
    stands = transport.put_ac(key.hex(), data, create_only=not replace)
    return data if stands is None else "sent" if stands else "there"


def receive(transport, secret, key: bytes):
    """(value bytes, Entry) of the remote entry of key, verified; None when
    the remote has none. BadEntry when it fails verification."""
    data = transport.get_ac(key.hex())
    if data is None:
        return None
    entry = unpack(secret, key, bytes(data))
    return value_bytes(transport, entry), entry


def value_bytes(transport, entry):
    """The value bytes of a verified entry, from cas/ when not inside it,
    checked against its signed digest (BadEntry if not)."""
    fetched = None
    if entry.body is None:
        fetched = transport.get_cas(entry.digest.hex(), entry.body_len)
        if fetched is None:
            raise BadEntry("its value bytes are missing from the server (cas/)")
    return entry.checked_body(fetched)


def store_entry(store, key: bytes, body, entry, cwd: str, replace: bool) -> bool:
    """Writes a verified remote entry into the local store; without replace,
    a local entry created at the same time or later is kept."""
    callee, site, ttl, compute = entry.meta
    return store.put_record(key, entry.head, body=body, ttl=ttl, compute=compute, callee=callee,
                            site=local_site(site, cwd), if_newer=not replace)


class Remote:
    """The remote of this run, as the runtime uses it."""

    def __init__(self, config, secret, transport):
        self.config = config
        self.secret = secret
        self.transport = transport
        self.where = shown_url(config.url)
        self.cwd = os.getcwd()
        self.down = False
        self.rejected = 0
        self.hits = 0      # remote hits of this run
        self.direct = 0    # of them, loaded from the fetched bytes (not counted by runtime.c)
        self._queue = None
        self._lock = threading.Lock()
        self._dropped = 0
        self._pid = os.getpid()

    def _forked(self) -> None:
        """In a child of fork: connections of its own, and an upload thread
        of its own (the parent's did not come along)."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self.transport = open_transport(self.config)
            self._queue = None
            self._dropped = 0

    def failed(self, exc) -> None:
        """The remote is off for the rest of the run, said once."""
        with self._lock:
            if self.down:
                return
            self.down = True
        what = "refused this machine" if isinstance(exc, RemoteRefused) else "is unreachable"
        _warn(f"the remote cache {self.where} {what} ({exc}); this run goes on "
              "with the local cache only")

    def rejected_entry(self, key: bytes, exc) -> None:
        self.rejected += 1
        if self.rejected == 1:
            _warn(f"a remote entry ({key.hex()[:12]}) was refused: {exc}; it is ignored "
                  f"(is {_signing.ENV_VAR} the team's secret?)")

    # -- a local miss
    def fetch(self, store, key: bytes):
        """(value bytes, Entry) when the remote had key: then its verified
        entry is in the local store now, unless a good local entry was there
        already; else None."""
        if self.down or not self.config.reads:
            return None
        self._forked()
        try:
            got = receive(self.transport, self.secret, key)
        except RemoteError as exc:
            self.failed(exc)
            return None
        except BadEntry as exc:
            self.rejected_entry(key, exc)
            return None
        if got is None or got[1].expired(time.time()):
            return None
        try:
            store_entry(store, key, got[0], got[1], self.cwd, replace=False)
        except ValueError as exc:   # the joined record fails the store's own checks
            self.rejected_entry(key, exc)
            return None
        return got

    # -- a value computed here
    def upload(self, store, key: bytes, replace: bool) -> None:
        """Queues the local entry of key for the background upload."""
        if self.down or not self.config.writes:
            return
        self._forked()
        if self._queue is None:
            self._queue = queue.Queue(MAX_PENDING)
            threading.Thread(target=self._uploader, name="devstash-upload", daemon=True).start()
            atexit.register(self._finish)
        try:
            self._queue.put_nowait((store, key, replace))
        except queue.Full:
            self._dropped += 1

    def _uploader(self) -> None:
        # Entries written where a write may still replace them (HTTP): each
        # is read back once its SETTLE time is over, meanwhile others go on.
        settling = collections.deque()   # (when to read back, store, key, our bytes)
        while True:
            wait = max(0.0, settling[0][0] - time.monotonic()) if settling else None
            try:
                store, key, replace = self._queue.get(timeout=wait)
            except queue.Empty:
                pass
            else:
                self._guarded(key, lambda: self._send(store, key, replace, settling))
            while settling and settling[0][0] <= time.monotonic():
                _when, store, key, data = settling.popleft()
                self._guarded(key, lambda: self._settled(store, key, data))

    def _guarded(self, key: bytes, step) -> None:
        """One upload step; the entry's task is done unless it is settling."""
        settling = False
        try:
            settling = not self.down and step()
        except RemoteError as exc:
            self.failed(exc)
        except Exception as exc:  # noqa: BLE001 - an upload never fails the script
            _warn(f"could not upload entry {key.hex()[:12]} to the remote cache ({exc})")
        finally:
            if not settling:
                self._queue.task_done()

    def _send(self, store, key: bytes, replace: bool, settling) -> bool:
        """Uploads one entry; True when it is settling."""
        sent = send(self.transport, self.secret, store, key, replace, self.cwd)
        if isinstance(sent, bytes):
            settling.append((time.monotonic() + self.transport.SETTLE, store, key, sent))
            return True
        if sent == "there":
            self._adopt(store, key)
        return False

    def _settled(self, store, key: bytes, data: bytes) -> bool:
        if not self.transport.confirm(key.hex(), data):
            self._adopt(store, key)
        return False

    def _adopt(self, store, key: bytes) -> None:
        """Another machine's entry for key got there first (it computed the
        same call at the same time): it is adopted here too, so both
        machines end with the same value; unless it is expired or does not
        verify, then ours replaces it."""
        try:
            got = receive(self.transport, self.secret, key)
        except BadEntry:
            got = None
        if got is None or got[1].expired(time.time()):
            send(self.transport, self.secret, store, key, True, self.cwd)
            return
        body, entry = got
        if b"".join((entry.head, body)) != store.get_record(key):
            store_entry(store, key, body, entry, self.cwd, replace=True)

    def _finish(self) -> None:
        """At exit: waits up to EXIT_WAIT seconds for the uploads left."""
        q = self._queue
        if q is None:
            return   # a child of fork that uploaded nothing
        deadline = time.monotonic() + EXIT_WAIT
        with q.all_tasks_done:
            while q.unfinished_tasks and not self.down:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                q.all_tasks_done.wait(min(left, 0.1))
            left_over = q.unfinished_tasks
        left_over += self._dropped
        if left_over and not self.down:
            _warn(f"{left_over} upload{'s' * (left_over != 1)} to the remote cache {self.where} "
                  f"{'were' if left_over != 1 else 'was'} abandoned (more than {MAX_PENDING} "
                  f"waiting, or not done {EXIT_WAIT:.0f} s into the exit); `devstash push` sends "
                  "what is left")


def connect(config):
    """The Remote for config, or None, said once why, when it cannot be used."""
    where = shown_url(config.url)
    try:
        secret = team_secret()
    except _signing.SecretError as exc:
        _warn(f"not using the remote cache {where}: {exc}")
        return None
    if secret is None:
        _warn(f"not using the remote cache {where}: entries are signed and there is no "
              f"secret to sign them with; {NO_SECRET}")
        return None
    try:
        transport = open_transport(config)
    except RemoteError as exc:
        _warn(f"not using the remote cache {where}: {exc}")
        return None
    return Remote(config, secret, transport)
