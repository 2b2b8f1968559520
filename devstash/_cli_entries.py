"""The commands that read the cache: list, show and stats."""
import itertools
import json
import re
import sys
import time

from ._cli_common import (CliError, Entry, cache_folder, format_age, format_seconds, format_size,
                          iter_entries, matches, open_store, say_empty, sort_key)
from ._cli_values import (FromScript, is_pickle, load_marshal, load_value, pickle_type, short_repr,
                          type_name)


# Up to this many entries, list sorts them by call site and aligns every
# column; a larger cache streams in key order, so the first rows come at once
# and memory does not grow with the cache: its columns are as wide as the
# first WIDTH_ROWS rows need.
SORTED_LIMIT = 10_000
WIDTH_ROWS = 500
HEADER = ("KEY", "CALLEE", "SITE", "SIZE", "AGE", "TTL", "HITS")
RIGHT = {3, 4, 6}


def cmd_list(ns) -> int:
    if getattr(ns, "remote", False):
        from ._cli_remote import cmd_list_remote

        return cmd_list_remote(ns)
    folder = cache_folder()
    store = open_store(folder, readonly=True)
    now = time.time()
    entries = (e for e in iter_entries(store) if matches(e, ns, now))
    small = store is not None and store.count() <= SORTED_LIMIT
    if small:
        entries = iter(sorted(entries, key=sort_key))
    if ns.json:
        return print_json(entries, now)
    first = list(itertools.islice(entries, SORTED_LIMIT if small else WIDTH_ROWS))
    if not first:
        if store is not None and store.count() > 0:
            print("no entry matches")
        else:
            say_empty(folder, store)
        return 0
    rows = [HEADER] + [row(e, now) for e in first]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    count, total = 0, 0
    for r in rows:
        print_row(r, widths)
    for e in first:
        count, total = count + 1, total + e.size
    for e in entries:   # past the first rows: as they come, in the same columns
        print_row(row(e, now), widths)
        count, total = count + 1, total + e.size
    print(f"{count} {'entry' if count == 1 else 'entries'}, {format_size(total)}")
    return 0


def row(e: Entry, now: float) -> tuple:
    return (e.hex[:12], e.name, e.shown_site(), format_size(e.size), e.age(now),
            e.ttl_state(now), str(e.hits))


def print_row(r: tuple, widths: list) -> None:
    cells = [c.rjust(w) if i in RIGHT else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
    print("  ".join(cells).rstrip())


def print_json(entries, now: float) -> int:
    """A JSON array written an entry at a time (the text json.dumps(list,
    indent=2) would give)."""
    out = sys.stdout
    sep = "[\n"
    for e in entries:
        out.write(sep + "\n".join("  " + line for line in json.dumps(e.as_json(now), indent=2).splitlines()))
        sep = ",\n"
    out.write("[]\n" if sep == "[\n" else "\n]\n")
    return 0


def find_entry(store, prefix: str) -> Entry:
    text = prefix.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{1,32}", text):
        raise CliError(f"not a key: {prefix!r} (give a hex prefix of a key from `devstash list`)")
    found = [Entry(m) for m in store.scan(prefix=text, limit=2)]
    if not found:
        raise CliError(f"no entry with key {text}")
    if len(found) > 1:
        many = sum(1 for _ in iter_entries(store, text))
        raise CliError(f"key prefix {text} matches {many} entries; give more digits")
    return found[0]


def cmd_show(ns) -> int:
    folder = cache_folder()
    store = open_store(folder, readonly=True)
    if store is None:
        raise CliError(f"no entry with key {ns.key.strip().lower()} (no cache at {folder})")
    e = find_entry(store, ns.key)
    now = time.time()
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.created))
    ttl = "none" if e.ttl <= 0 else f"{format_age(e.ttl)} ({e.ttl_state(now)})"
    last = f" (last {format_age(now - e.last_hit)} ago)" if e.hits and e.last_hit else ""
    rows = [
        ("key", e.hex), ("callee", e.name), ("site", e.shown_site()),
        ("created", f"{stamp} ({format_age(now - e.created)} ago)" if not e.future(now)
         else f"{stamp} (in the future: stored while the clock was ahead)"), ("ttl", ttl),
        ("compute", format_seconds(e.compute)), ("hits", f"{e.hits}{last}"),
    ]
    rows += value_rows(store, e, ns.load)
    for name, text in rows:
        print(f"{name:<8} {text}")
    return 0


def value_rows(store, e: Entry, load: bool) -> list:
    """size, type and value rows of `show`. A pickle is loaded (which runs
    whatever code it names) only when asked to; a value stored with marshal
    (built-in types only) is previewed."""
    state = store.verify(e.key)
    if state != "ok":
        why = {"damaged": "damaged: its checksum does not match its bytes; the next run of its "
                          "script recomputes it (`devstash doctor` checks every entry)",
               "old": "stored by an older devstash: the next run of its script recomputes it"}
        return [("size", format_size(e.size)),
                ("value", why.get(state, "missing or unreadable value record"))]
    got = store.get(e.key)
    if got is None:
        return [("size", format_size(e.size)), ("value", "missing or unreadable value record")]
    _created, data, buffers = got
    extra = f", {len(buffers)} out-of-band buffer{'s' if len(buffers) != 1 else ''}" if buffers else ""
    pickled = is_pickle(data, buffers)
    encoding = "pickle" if pickled else "marshal"
    rows = [("size", f"{format_size(e.size)} ({encoding} {format_size(len(data))}{extra})")]
    if not pickled:
        value, error = load_marshal(data)
        if error is not None:
            return rows + [("value", f"cannot be read: {error}")]
        return rows + [("type", type_name(value)), ("value", short_repr(value))]
    if not load:
        return rows + [("type", pickle_type(data)),
                       ("value", f"not loaded: loading a pickle runs the code it names "
                                 f"(`devstash show --load {e.hex[:12]}` loads it)")]
    try:
        value, error = load_value(data, buffers, e.file)
    except FromScript as exc:
        return rows + [("value", f"cannot load here: it holds {exc}, a class defined in the "
                                 "script itself; only that script can load it")]
    if error is not None:
        return rows + [("value", f"cannot be unpickled: {error}")]
    return rows + [("type", type_name(value)), ("value", short_repr(value))]


def cmd_stats(ns) -> int:
    folder = cache_folder()
    store = open_store(folder, readonly=True)
    totals = store.totals(time.time()) if store is not None else {}
    stats = {
        "folder": folder,
        "entries": totals.get("entries", 0),
        "size": totals.get("size", 0),
        "disk": store.info()["used"] if store is not None else 0,
        "sites": totals.get("sites", 0),
        "expired": totals.get("expired", 0),
        "hits": totals.get("hits", 0),
        "saved": totals.get("saved", 0.0),
    }
    if ns.json:
        print(json.dumps(stats, indent=2))
        return 0
    if store is None:
        print(f"no cache at {folder} (nothing cached yet)")
        return 0
    print(f"cache       {folder}")
    print(f"entries     {stats['entries']} from {stats['sites']} call "
          f"site{'s' if stats['sites'] != 1 else ''} ({stats['expired']} expired)")
    print(f"size        {format_size(stats['size'])} of values, "
          f"{format_size(stats['disk'])} in use on disk")
    print(f"hits        {stats['hits']}")
    print(f"time saved  {format_seconds(stats['saved'])}")
    return 0
