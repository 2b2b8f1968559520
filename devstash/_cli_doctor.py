"""`devstash doctor`: says what is wrong with a cache and how to fix it.

It never loads a value: unpickling runs code, and a cache that doctor is
asked about may hold someone else's. It checks that the folder is safe to
use, that the store opens, and every value's checksum.
"""
import json
import os
import re
import time

from . import _core, _leftovers, _signing
from ._cli_common import CORRUPT_CODES, Entry, cache_folder, describe, format_size, iter_entries
from ._cli_values import references_main, record_layout


def probe(folder: str) -> dict:
    """What doctor needs to know of the store, gathered in a child process:
    a damaged file can crash LMDB, and unpickling runs the user's imports."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:   # the child: never returns
        status = 0
        try:
            os.close(read_fd)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            result = json.dumps(examine(folder)).encode()
            with os.fdopen(write_fd, "wb") as out:
                out.write(result)
        except BaseException:  # noqa: BLE001 - the parent reports a child that says nothing
            status = 1
        finally:
            os._exit(status)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    _pid, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        import signal

        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return {"crashed": name}
    try:
        return json.loads(data)
    except ValueError:
        return {"error": "the check of the store failed without a report", "kind": "other"}


def examine(folder: str) -> dict:
    try:
        store = _core.Store(folder, readonly=True)
    except (OSError, _core.StoreError) as exc:
        return {"error": describe(exc), "kind": error_kind(exc)}
    now = time.time()
    report = {"stale_readers": store.check_readers(), "entries": 0, "size": 0, "expired": 0,
              "expired_size": 0, "future": 0, "missing": {}, "damaged": {}, "old": 0,
              "from_script": 0}
    try:
        entries = list(iter_entries(store))
        report["entries"] = len(entries)
        report["size"] = sum(e.size for e in entries)
        for e in entries:
            if e.expired(now):
                report["expired"] += 1
                report["expired_size"] += e.size
            if e.future(now):
                report["future"] += 1
            try:
                record = store.get_record(e.key)   # its checksum verified
            except _core.DamagedError:
                report["damaged"][e.site] = report["damaged"].get(e.site, 0) + 1
                continue
            if record is None:
                if store.verify(e.key) == "old":
                    report["old"] += 1
                else:
                    report["missing"][e.site] = report["missing"].get(e.site, 0) + 1
                continue
            start, pickle_len, _data = record_layout(record)
            if references_main(record[start:start + pickle_len]):
                report["from_script"] += 1
    except (OSError, _core.StoreError) as exc:
        return {"error": describe(exc), "kind": error_kind(exc)}
    finally:
        store.close()
    return report


def error_kind(exc) -> str:
    if isinstance(exc, _core.DamagedError) or any(code in str(exc) for code in CORRUPT_CODES):
        return "corrupt"
    if getattr(exc, "errno", None) in (13, 1):   # EACCES, EPERM
        return "access"
    return "other"


_HINT = re.compile(r"(: run `devstash doctor` or delete the folder| \(the cache is damaged: run "
                   r"`devstash doctor` or delete the folder\))$")


def without_hint(message: str) -> str:
    """A damaged store's message without its advice to run doctor."""
    return _HINT.sub("", message)


class Doctor:
    def __init__(self):
        self.problems = 0

    def ok(self, text: str) -> None:
        print(f"ok       {text}")

    def problem(self, text: str, fix: str) -> None:
        self.problems += 1
        print(f"problem  {text}")
        print(f"  fix    {fix}")


def cmd_doctor(ns) -> int:
    folder = cache_folder()
    doc = Doctor()
    print(f"cache    {folder}")
    check_secret(doc)
    if not os.path.lexists(folder):
        doc.ok("no cache folder yet: nothing is cached (the first cached run creates it)")
        print("no problems found")
        return 0
    if not os.path.islink(folder) and not os.path.isdir(folder):
        doc.problem(f"{folder} is not a folder: devstash runs uncached",
                    "remove it, or set DEVSTASH_CACHE_DIR to another path")
        return 1
    if not check_folder(doc, folder):
        return 1   # not opened: what is in it may be someone else's
    if not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
        doc.problem("the folder is read-only for you: scripts run uncached (with a warning)",
                    f"chmod u+rwx {folder}, or set DEVSTASH_CACHE_DIR to a writable folder")
    removed, freed = _leftovers.remove(folder)
    if removed:
        doc.ok(f"removed {removed} leftover cop{'ies' if removed != 1 else 'y'} of the store that an "
               f"interrupted `devstash compact` left ({format_size(freed)})")
    data = os.path.join(folder, "data.mdb")
    if not os.path.exists(data):
        doc.ok("no data.mdb yet: the cache is empty")
    else:
        check_store(doc, folder)
    if doc.problems == 0:
        print("no problems found")
    return 1 if doc.problems else 0


def check_folder(doc: "Doctor", folder: str) -> bool:
    """The checks every open of the store makes (see folder.c): whether the
    folder and its files are yours and nobody else's to write."""
    try:
        unsafe = _core.check_folder(folder)
    except OSError as exc:
        doc.problem(f"cannot examine {folder}: {describe(exc)}",
                    "give yourself access to it, or set DEVSTASH_CACHE_DIR to another path")
        return False
    if unsafe is None:
        doc.ok("the folder and its files are yours, and nobody else can write them")
        return True
    problem, fix = unsafe
    doc.problem(f"{problem}; scripts run uncached (with a warning) and the devstash commands "
                "refuse the folder", fix)
    return False


def check_store(doc: Doctor, folder: str) -> None:
    for name in ("data.mdb", "lock.mdb"):
        path = os.path.join(folder, name)
        if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
            doc.problem(f"{name} is not readable and writable for you",
                        f"chmod u+rw {path} (or delete the folder {folder})")
    report = probe(folder)
    if "crashed" in report:
        doc.problem(f"reading data.mdb crashed the check ({report['crashed']}): the file is damaged",
                    f"delete the folder: rm -r {folder} (the cache refills on the next runs)")
    elif "error" in report:
        if report["kind"] == "corrupt":
            doc.problem(f"data.mdb is damaged: {without_hint(report['error'])}",
                        f"devstash clear --all (or delete the folder {folder})")
        elif report["kind"] == "access":
            doc.problem(f"the store cannot be opened: {report['error']}",
                        f"give yourself access (chmod -R u+rw {folder}) or delete the folder")
        else:
            doc.problem(f"the store cannot be opened: {report['error']}",
                        f"devstash clear --all, or delete the folder {folder}")
    else:
        report_store(doc, report)


def report_store(doc: Doctor, report: dict) -> None:
    n = report["entries"]
    doc.ok(f"the store opens: {n} {'entry' if n == 1 else 'entries'}, {format_size(report['size'])}")
    stale = report["stale_readers"]
    if stale:
        doc.ok(f"cleared {stale} reader slot{'s' if stale != 1 else ''} that dead processes had "
               "left in lock.mdb (they kept old pages from reuse)")
    else:
        doc.ok("lock.mdb: no reader slots left by dead processes")
    if report["expired"]:
        doc.ok(f"{report['expired']} expired {'entry' if report['expired'] == 1 else 'entries'} "
               f"({format_size(report['expired_size'])}): `devstash clear --expired` frees them")
    if report["future"]:
        n = report["future"]
        doc.ok(f"{n} {'entry was' if n == 1 else 'entries were'} stored while the clock was ahead "
               "(created in the future): with a ttl, they count as expired")
    if report["old"]:
        n = report["old"]
        doc.ok(f"{n} {'entry was' if n == 1 else 'entries were'} stored by an older devstash "
               "(without a checksum): their scripts recompute them on the next run")
    if report["from_script"]:
        doc.ok(f"{report['from_script']} {'entry holds' if report['from_script'] == 1 else 'entries hold'} "
               "classes defined in their script (__main__): only that script loads them")
    damaged = report["damaged"]
    if damaged:
        count = sum(damaged.values())
        doc.problem(f"{count} {'entry is' if count == 1 else 'entries are'} damaged (the checksum of "
                    "the stored value does not match its bytes): "
                    + ", ".join(f"{shown_site(s)}" + (f" ({c})" if c > 1 else "")
                                for s, c in sorted(damaged.items())),
                    "their scripts recompute and replace them on the next run (with one warning); "
                    "or devstash clear --site FILE:LINE")
    else:
        n = report["entries"] - sum(report["missing"].values()) - report["old"]
        doc.ok(f"every stored value matches its checksum ({n} checked)")
    if report["missing"]:
        count = sum(report["missing"].values())
        doc.problem(f"{count} {'entry has' if count == 1 else 'entries have'} metadata but no "
                    f"readable value: {', '.join(shown_site(s) for s in sorted(report['missing']))}",
                    "they are recomputed on the next run; or devstash clear --site FILE:LINE")


def shown_site(site: str) -> str:
    return Entry({"key": b"", "callee": "", "site": site, "created": 0.0, "ttl": 0.0,
                  "size": 0, "compute": 0.0, "hits": 0, "last_hit": 0.0}).shown_site()


def check_secret(doc: Doctor) -> None:
    refused = _signing.problem()
    if refused is not None:
        doc.problem(*refused)
        return
    if os.environ.get(_signing.ENV_VAR):
        doc.ok(f"exports are signed with ${_signing.ENV_VAR}")
        return
    path = _signing.key_file()
    if not os.path.exists(path):
        doc.ok(f"signing key: none yet ({path} is created on the first export)")
    else:
        doc.ok(f"exports are signed with the key in {path}")
