"""`devstash doctor`: says what is wrong with a cache and how to fix it."""
import json
import os
import time

from . import _core, _signing
from ._cli_common import CORRUPT_CODES, Entry, cache_folder, describe, format_size, load_entries
from ._cli_values import FromScript, load_value


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
        message = describe(exc)
        kind = "corrupt" if any(code in message for code in CORRUPT_CODES) else "other"
        if getattr(exc, "errno", None) in (13, 1):   # EACCES, EPERM
            kind = "access"
        return {"error": message, "kind": kind}
    now = time.time()
    report = {"stale_readers": store.check_readers(), "entries": 0, "size": 0, "expired": 0,
              "expired_size": 0, "missing": {}, "broken": {}, "from_script": 0}
    try:
        entries = load_entries(store)
        report["entries"] = len(entries)
        report["size"] = sum(e.size for e in entries)
        for e in entries:
            if e.expired(now):
                report["expired"] += 1
                report["expired_size"] += e.size
            got = store.get(e.key)
            if got is None:
                report["missing"][e.site] = report["missing"].get(e.site, 0) + 1
                continue
            try:
                _value, error = load_value(got[1], got[2], e.file)
            except FromScript:
                report["from_script"] += 1
                continue
            if error is not None:
                count, _first = report["broken"].get(e.site, (0, error))
                report["broken"][e.site] = (count + 1, _first)
    except (OSError, _core.StoreError) as exc:
        message = describe(exc)
        kind = "corrupt" if any(code in message for code in CORRUPT_CODES) else "other"
        return {"error": message, "kind": kind}
    finally:
        store.close()
    return report


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
    if not os.path.isdir(folder):
        doc.problem(f"{folder} is not a folder: devstash runs uncached",
                    "remove it, or set DEVSTASH_CACHE_DIR to another path")
        return 1
    if not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
        doc.problem("the folder is read-only for you: scripts run uncached (with a warning)",
                    f"chmod u+rwx {folder}, or set DEVSTASH_CACHE_DIR to a writable folder")
    leftovers = sorted(n for n in os.listdir(folder) if n.startswith(".compact-"))
    if leftovers:
        doc.problem(f"{len(leftovers)} leftover folder{'s' if len(leftovers) != 1 else ''} of an "
                    "interrupted `devstash compact`",
                    "rm -r " + " ".join(os.path.join(folder, n) for n in leftovers))
    data = os.path.join(folder, "data.mdb")
    if not os.path.exists(data):
        doc.ok("no data.mdb yet: the cache is empty")
    else:
        check_store(doc, folder)
    if doc.problems == 0:
        print("no problems found")
    return 1 if doc.problems else 0


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
            doc.problem(f"data.mdb is damaged: {report['error']}",
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
    if report["from_script"]:
        doc.ok(f"{report['from_script']} {'entry holds' if report['from_script'] == 1 else 'entries hold'} "
               "classes defined in their script (__main__): only that script loads them")
    if report["missing"]:
        count = sum(report["missing"].values())
        doc.problem(f"{count} {'entry has' if count == 1 else 'entries have'} metadata but no "
                    f"readable value: {', '.join(shown_site(s) for s in sorted(report['missing']))}",
                    "they are recomputed on the next run; or devstash clear --site FILE:LINE")
    if report["broken"]:
        count = sum(c for c, _ in report["broken"].values())
        lines = "; ".join(f"{shown_site(site)} ({c}: {why})"
                          for site, (c, why) in sorted(report["broken"].items()))
        doc.problem(f"{count} {'entry fails' if count == 1 else 'entries fail'} to unpickle: {lines}",
                    "their scripts recompute and replace them on the next run; "
                    "or devstash clear --site FILE:LINE")


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
