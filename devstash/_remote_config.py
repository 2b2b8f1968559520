"""Where the remote cache is and how it is used: DEVSTASH_REMOTE,
DEVSTASH_REMOTE_MODE and DEVSTASH_REMOTE_CA, else `remote`, `remote_mode` and
`remote_ca` in the [tool.devstash] table of the project's pyproject.toml (the
first one found from the working directory up; a relative remote_ca is taken
from the folder of that file). The environment wins, so CI can point elsewhere.

The CA: a PEM file of the certificate authorities that signed the TLS
certificate of a rediss:// or https:// remote, trusted on top of the
system's own (SSL_CERT_FILE would replace those for the whole process).

Read on the first local miss of a run only: a run of hits reads nothing.
Python 3.10 has no tomllib; there the table is read by a small parser of
its own that takes `name = "string"` lines, which is all this table holds.
"""
import os
import re

MODES = ("read-write", "read-only", "write-only")


class Config:
    __slots__ = ("url", "mode", "source", "ca")

    def __init__(self, url: str, mode: str, source: str, ca=None):
        self.url, self.mode, self.source, self.ca = url, mode, source, ca

    @property
    def reads(self) -> bool:
        return self.mode != "write-only"

    @property
    def writes(self) -> bool:
        return self.mode != "read-only"


class ConfigError(ValueError):
    """A setting that cannot be used; the message says which and why."""


def find_pyproject(start: str):
    folder = os.path.abspath(start)
    while True:
        path = os.path.join(folder, "pyproject.toml")
        if os.path.isfile(path):
            return path
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def read_table(path: str) -> dict:
    """The [tool.devstash] table of a pyproject.toml, {} when it has none."""
    with open(path, "rb") as f:
        data = f.read()
    if b"devstash" not in data:
        return {}   # most projects: no TOML parser to import
    try:
        import tomllib
    except ImportError:
        return _read_table_by_hand(data.decode("utf-8", "replace"), path)
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid TOML ({exc})") from None
    found = table.get("tool", {}).get("devstash", {})
    return found if isinstance(found, dict) else {}


_HEADER = re.compile(r"\s*\[\s*([^\]]*?)\s*\]\s*(#.*)?")
_STRING = re.compile(r"""\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|'([^']*)')\s*(#.*)?""")


def _read_table_by_hand(text: str, path: str) -> dict:
    """[tool.devstash] on Python 3.10: its `name = "string"` lines; any other
    line of the table is named in the error, not guessed at."""
    table, inside = {}, False
    for number, line in enumerate(text.splitlines(), 1):
        header = _HEADER.fullmatch(line)
        if header and not line.lstrip().startswith("[["):
            inside = header.group(1).replace(" ", "") == "tool.devstash"
            continue
        if not inside or not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _STRING.fullmatch(line)
        if m is None:
            raise ConfigError(f"{path}:{number}: [tool.devstash] takes name = \"string\" lines "
                              "on Python 3.10 (which has no TOML reader)")
        value = m.group(2) if m.group(2) is not None else m.group(3)
        if m.group(2) is not None:
            value = value.encode("latin-1", "backslashreplace").decode("unicode_escape")
        table[m.group(1)] = value
    return table


def load(cwd=None):
    """The remote's Config, or None when no remote is set. ConfigError for
    a setting that cannot be used."""
    url = os.environ.get("DEVSTASH_REMOTE", "").strip()
    mode = os.environ.get("DEVSTASH_REMOTE_MODE", "").strip().lower()
    ca = os.environ.get("DEVSTASH_REMOTE_CA", "").strip()
    source = "DEVSTASH_REMOTE"
    path = None if url and mode and ca else find_pyproject(cwd or os.getcwd())
    if path is not None:
        try:
            table = read_table(path)
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
        for name in ("remote", "remote_mode", "remote_ca"):
            if name in table and not isinstance(table[name], str):
                raise ConfigError(f"{path}: [tool.devstash] {name} must be a string")
        if not url and table.get("remote", "").strip():
            url, source = table["remote"].strip(), f"{path} [tool.devstash]"
        if not mode:
            mode = table.get("remote_mode", "").strip().lower()
        if not ca and table.get("remote_ca", "").strip():
            ca = os.path.join(os.path.dirname(path), os.path.expanduser(table["remote_ca"].strip()))
    if not url:
        return None
    mode = mode or "read-write"
    if mode not in MODES:
        raise ConfigError(f"remote mode {mode!r} is not one of {', '.join(MODES)}")
    return Config(url, mode, source, os.path.expanduser(ca) if ca else None)
