"""The secret that signs exported entries (HMAC-SHA256).

A team shares one secret through DEVSTASH_SECRET: everyone's exports then
verify on everyone's import. Without it each user has a key of their own in
$XDG_CONFIG_HOME/devstash/secret (~/.config/devstash/secret), created on the
first export with mode 0600: their exports verify only on their own imports.
The key file holds text; putting that text in DEVSTASH_SECRET gives the same
key, which is how a user shares their key with a teammate.

Verification matters because an imported value is a pickle, and loading a
pickle can run any code: an entry nobody signed must not slip into a cache.
"""
import hashlib
import hmac
import os
import secrets

ENV_VAR = "DEVSTASH_SECRET"
MAC_SIZE = 32
_KEY_ID_LABEL = b"devstash-key-id"


class SecretError(Exception):
    """The key file cannot be read or created."""


class Secret:
    """A signing key and where it came from (for messages)."""

    def __init__(self, key: bytes, source: str):
        self.key = key
        self.source = source
        # Names the key in an export's header without revealing it, so that
        # import can say "another secret" instead of "altered" entries.
        self.key_id = hmac.new(key, _KEY_ID_LABEL, hashlib.sha256).digest()[:8]

    def sign(self, data) -> bytes:
        return hmac.new(self.key, data, hashlib.sha256).digest()

    def verify(self, data, mac: bytes) -> bool:
        return hmac.compare_digest(self.sign(data), mac)


def key_file() -> str:
    """Where the per-user key lives: $XDG_CONFIG_HOME/devstash/secret, or
    ~/.config/devstash/secret (the XDG spec ignores a relative value)."""
    base = os.environ.get("XDG_CONFIG_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "devstash", "secret")


def load(create: bool) -> "Secret | None":
    """DEVSTASH_SECRET if set (and not empty), else the key file; a missing
    key file is created when create is true, else None is returned."""
    text = os.environ.get(ENV_VAR, "")
    if text:
        return Secret(text.encode("utf-8"), f"${ENV_VAR}")
    path = key_file()
    try:
        return Secret(_read(path), path)
    except FileNotFoundError:
        if not create:
            return None
    except OSError as exc:
        raise SecretError(f"cannot read the key file {path}: {exc.strerror}") from None
    return Secret(_create(path), f"{path} (created now)")


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        key = f.read().strip()
    if not key:
        raise SecretError(f"the key file {path} is empty: delete it to get a new key")
    return key


def _create(path: str) -> bytes:
    """Writes a new random key. The file appears whole or not at all: the key
    goes to a temporary file that is then hard-linked to its name, which
    fails if another process created the key first (then its key wins)."""
    folder = os.path.dirname(path)
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        tmp = os.path.join(folder, f".secret-{os.getpid()}-{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
        return _read(path)
    except OSError as exc:
        raise SecretError(f"cannot create the key file {path}: {exc.strerror}") from None


def loose_permissions(path: str) -> bool:
    """Whether others than the owner may read or write the key file."""
    try:
        return bool(os.stat(path).st_mode & 0o077)
    except OSError:
        return False
