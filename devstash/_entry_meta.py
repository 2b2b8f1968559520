"""An entry's metadata as it travels between machines (exports and the
remote cache): call sites written relative to the working directory, and
the check of metadata read back from a file or a server."""
import json
import math
import os


def portable_site(site: str, base: str) -> str:
    """A site under base, written relative to it (with /), for export."""
    file, sep, line = site.rpartition(":")
    if not sep or not line.isdigit() or not os.path.isabs(file):
        return site
    rel = os.path.relpath(file, base)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return site
    return f"{rel.replace(os.sep, '/')}:{line}"


def local_site(site: str, base: str) -> str:
    """An imported site: a relative one is made absolute against base."""
    file, sep, line = site.rpartition(":")
    if not sep or not line.isdigit() or os.path.isabs(file) or not file:
        return site
    return f"{os.path.normpath(os.path.join(base, file))}:{line}"


def dump_meta(callee: str, site: str, ttl: float, compute: float, base: str) -> bytes:
    """The metadata of an entry as UTF-8 JSON, its site made portable."""
    return json.dumps({"callee": callee, "site": portable_site(site, base), "ttl": ttl,
                       "compute": compute}, separators=(",", ":")).encode()


def parse_meta(data: bytes):
    """(callee, site, ttl, compute) of metadata read back, or None when it is
    not what dump_meta writes."""
    try:
        meta = json.loads(data)
    except ValueError:
        return None
    if not isinstance(meta, dict):
        return None
    callee, site, ttl, compute = (meta.get(k) for k in ("callee", "site", "ttl", "compute"))
    if not (isinstance(callee, str) and isinstance(site, str) and "\0" not in callee + site):
        return None
    for number in (ttl, compute):
        if not isinstance(number, (int, float)) or isinstance(number, bool) \
                or not math.isfinite(number) or number < 0:
            return None
    return callee, site, float(ttl), float(compute)
