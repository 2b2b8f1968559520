"""The commands of the team cache: `remote status`, `push`, `pull` and
`list --remote` (the policy of the remote itself: _remote.py)."""
import json
import os
import time

from . import _signing
from ._cli_common import (CliError, Entry, Progress, cache_folder, format_age, format_size,
                          iter_entries, matches, open_store, sort_key)
from ._entry_meta import local_site
from ._remote import NO_SECRET, send, store_entry, team_secret, value_bytes
from ._remote_config import ConfigError, load as load_config
from ._remote_entry import BadEntry, unpack
from ._remote_transport import RemoteError, open_transport, shown_url

NOT_SET = ("no remote cache is set: DEVSTASH_REMOTE=redis://host:6379/0 (or https://host/prefix), "
           "or remote = \"...\" in the [tool.devstash] table of pyproject.toml")


class Connection:
    """The remote as a command uses it: config, secret and transport."""

    def __init__(self, need_secret=True):
        try:
            self.config = load_config()
        except ConfigError as exc:
            raise CliError(str(exc)) from None
        if self.config is None:
            raise CliError(NOT_SET)
        self.where = shown_url(self.config.url)
        try:
            self.secret = team_secret()
        except _signing.SecretError as exc:
            raise CliError(str(exc)) from None
        if self.secret is None and need_secret:
            raise CliError(f"the remote cache {self.where} needs a signing secret: {NO_SECRET}")
        try:
            self.transport = open_transport(self.config)
        except RemoteError as exc:
            raise CliError(f"cannot use the remote cache {self.where}: {exc}") from None

    def allow(self, ok: bool) -> None:
        """Refuses a command the remote mode rules out here."""
        if not ok:
            raise CliError(f"the remote cache {self.where} is {self.config.mode} here "
                           "(DEVSTASH_REMOTE_MODE)")

    def fail(self, exc) -> CliError:
        return CliError(f"the remote cache {self.where} failed: {exc}")


def remote_entry(conn, hexkey: str):
    """(Entry for listings and filters, signed entry) of a remote key, or
    None when it is gone; BadEntry when it fails verification."""
    key = bytes.fromhex(hexkey)
    data = conn.transport.get_ac(hexkey)
    if data is None:
        return None
    signed = unpack(conn.secret, key, bytes(data))
    callee, site, ttl, compute = signed.meta
    meta = {"key": key, "callee": callee, "site": local_site(site, os.getcwd()),
            "created": signed.created, "ttl": ttl, "size": signed.body_len, "compute": compute,
            "hits": 0, "last_hit": 0.0}
    return Entry(meta), signed


def remote_keys(conn) -> list:
    keys = []
    for name in conn.transport.ac_keys():
        try:
            if len(bytes.fromhex(name)) == 16:
                keys.append(name)
        except ValueError:
            continue   # not one of ours
    return sorted(keys)


def cmd_remote_status(ns) -> int:
    conn = Connection(need_secret=False)
    rows = [("remote", f"{conn.where} (from {conn.config.source})"), ("mode", conn.config.mode),
            ("secret", conn.secret.source if conn.secret else f"none: the remote is not used; {NO_SECRET}")]
    if conn.config.ca:
        rows.append(("ca", f"{conn.config.ca} (trusted besides the system's CAs)"))
    start = time.perf_counter()
    try:
        conn.transport.ping()
        rows.append(("reachable", f"yes ({(time.perf_counter() - start) * 1000:.1f} ms)"))
    except RemoteError as exc:
        rows.append(("reachable", f"no ({exc})"))
        for name, text in rows:
            print(f"{name:<10} {text}")
        return 1
    try:
        entries, size = conn.transport.usage()
        rows += [("entries", str(entries)), ("size", format_size(size))]
    except RemoteError as exc:
        rows.append(("entries", f"unknown ({exc})"))
    for name, text in rows:
        print(f"{name:<10} {text}")
    return 0


def cmd_push(ns) -> int:
    conn = Connection()
    conn.allow(conn.config.writes)
    folder = cache_folder()
    store = open_store(folder, readonly=True)
    now = time.time()
    chosen = [e for e in iter_entries(store) if matches(e, ns, now) and not e.expired(now)]
    sent = there = 0
    progress = Progress("pushing", len(chosen))
    cwd = os.getcwd()
    try:
        for i, e in enumerate(chosen):
            # Checked first, so written plainly (no create-if-absent round
            # trips): a teammate's entry written meanwhile is as good.
            if conn.transport.has_ac(e.hex):
                there += 1
            elif send(conn.transport, conn.secret, store, e.key, True, cwd) == "sent":
                sent += 1
            progress.update(i + 1)
    except RemoteError as exc:
        raise conn.fail(exc) from None
    finally:
        progress.close()
        if store is not None:
            store.close()
    note = f"; {there} already there" if there else ""
    print(f"pushed {sent} {'entry' if sent == 1 else 'entries'} to {conn.where}{note}")
    return 0


def cmd_pull(ns) -> int:
    conn = Connection()
    conn.allow(conn.config.reads)
    store = open_store(cache_folder(), readonly=False)
    now = time.time()
    pulled = kept = refused = size = 0
    cwd = os.getcwd()
    try:
        keys = remote_keys(conn)
        progress = Progress("pulling", len(keys))
        try:
            for i, hexkey in enumerate(keys):
                progress.update(i + 1)
                key = bytes.fromhex(hexkey)
                if store.verify(key) == "ok":
                    kept += 1
                    continue
                try:
                    found = remote_entry(conn, hexkey)
                    if found is None or not matches(found[0], ns, now) or found[1].expired(now):
                        continue
                    signed = found[1]
                    body = value_bytes(conn.transport, signed)
                    if store_entry(store, key, body, signed, cwd, replace=False):
                        pulled += 1
                        size += signed.body_len
                    else:
                        kept += 1
                except (BadEntry, ValueError):
                    refused += 1
        finally:
            progress.close()
    except RemoteError as exc:
        raise conn.fail(exc) from None
    finally:
        store.close()
    parts = [f"pulled {pulled} {'entry' if pulled == 1 else 'entries'} ({format_size(size)}) "
             f"from {conn.where}"]
    if kept:
        parts.append(f"kept {kept} local")
    if refused:
        parts.append(f"refused {refused} that fail verification (is {_signing.ENV_VAR} the "
                     "team's secret?)")
    print("; ".join(parts))
    return 0


def cmd_list_remote(ns) -> int:
    conn = Connection()
    now = time.time()
    entries, refused = [], 0
    try:
        for hexkey in remote_keys(conn):
            try:
                found = remote_entry(conn, hexkey)
            except BadEntry:
                refused += 1
                continue
            if found is not None and matches(found[0], ns, now):
                entries.append(found[0])
    except RemoteError as exc:
        raise conn.fail(exc) from None
    entries.sort(key=sort_key)
    if ns.json:
        print(json.dumps([dict(e.as_json(now), hits=None, last_hit=None) for e in entries],
                         indent=2))
        return 0
    rows = [("KEY", "CALLEE", "SITE", "SIZE", "AGE", "TTL")]
    rows += [(e.hex[:12], e.name, e.shown_site(), format_size(e.size), format_age(now - e.created),
              e.ttl_state(now)) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        cells = [c.rjust(w) if i in (3, 4) else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        print("  ".join(cells).rstrip())
    total = sum(e.size for e in entries)
    note = f"; {refused} refused (they fail verification)" if refused else ""
    print(f"{len(entries)} {'entry' if len(entries) == 1 else 'entries'} on {conn.where}, "
          f"{format_size(total)}{note}")
    return 0
