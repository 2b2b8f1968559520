"""The secret that signs exported entries (HMAC-SHA256).

A team shares one secret through DEVSTASH_SECRET: everyone's exports then
verify on everyone's import. Without it each user has a key of their own in
$XDG_CONFIG_HOME/devstash/secret (~/.config/devstash/secret), created on the
first export with mode 0600: their exports verify only on their own imports.
The key file holds text; putting that text in DEVSTASH_SECRET gives the same
key, which is how a user shares their key with a teammate.

A key is refused, not merely reported, when others could know or replace it:
a key file that is not the user's or that group or others may read or
write, and a DEVSTASH_SECRET shorter than MIN_SECRET bytes. Folders made for
the key file are created with mode 0700 whatever the umask.

Verification matters because an imported value is a pickle, and loading a
pickle can run any code: an entry nobody signed must not slip into a cache.
"""
import hashlib
import hmac
import os
import secrets
import stat

ENV_VAR = "DEVSTASH_SECRET"
MAC_SIZE = 32
MIN_SECRET = 16   # bytes: a shorter secret can be guessed
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
        key = text.encode("utf-8")
        if len(key) < MIN_SECRET:
            raise SecretError(
                f"${ENV_VAR} is {len(key)} byte{'s' if len(key) != 1 else ''} long; a signing "
                f"secret needs at least {MIN_SECRET} (a shorter one can be guessed): for example "
                "python -c 'import secrets; print(secrets.token_hex(32))'")
        return Secret(key, f"${ENV_VAR}")
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
    """The key in the file at path, checked on what was opened: the user's
    own file, which nobody else may read or write."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        problem = _loose(os.fstat(f.fileno()), path)
        if problem:
            raise SecretError(f"{problem}: it is refused, since others could sign or forge "
                              f"entries with it; fix: {_fix(path)}")
        key = f.read().strip()
    if not key:
        raise SecretError(f"the key file {path} is empty: delete it to get a new key")
    if len(key) < MIN_SECRET:
        raise SecretError(f"the key in {path} is shorter than {MIN_SECRET} bytes: delete the "
                          "file to get a new key")
    return key


def _loose(st, path: str) -> str:
    """What is wrong with the key file's owner or mode, or ""."""
    if st.st_uid != os.geteuid():
        return (f"the key file {path} is owned by user id {st.st_uid}, not by you "
                f"(user id {os.geteuid()})")
    if st.st_mode & 0o077:
        return (f"the key file {path} is readable or writable by others "
                f"(mode {stat.S_IMODE(st.st_mode):04o})")
    return ""


def _fix(path: str) -> str:
    return f"chmod 600 {path} (or delete it to get a new key)"


def make_private_dirs(folder: str) -> None:
    """mkdir -p where every folder made has mode 0700, whatever the umask."""
    missing = []
    while not os.path.isdir(folder):
        missing.append(folder)
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        os.chmod(path, 0o700)


def _create(path: str) -> bytes:
    """Writes a new random key. The file appears whole or not at all: the key
    goes to a temporary file that is then hard-linked to its name, which
    fails if another process created the key first (then its key wins)."""
    folder = os.path.dirname(path)
    try:
        make_private_dirs(folder)
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


def problem() -> "tuple[str, str] | None":
    """(problem, fix) with the secret that load() would refuse, or None."""
    text = os.environ.get(ENV_VAR, "")
    if text:
        try:
            load(create=False)
        except SecretError as exc:
            return str(exc), f"set {ENV_VAR} to a secret of at least {MIN_SECRET} bytes"
        return None
    path = key_file()
    try:
        st = os.stat(path)
    except OSError:
        return None
    loose = _loose(st, path)
    if loose:
        return f"{loose}: exports and imports refuse it", _fix(path)
    try:
        _read(path)
    except (SecretError, OSError) as exc:
        return str(exc), f"delete {path} to get a new key"
    return None
