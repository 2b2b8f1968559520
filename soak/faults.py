"""Fault soak: a user's script meets a broken cache and still runs.

    python soak/faults.py [--rounds N] [--only NAME,...] [--keep]

Scenarios (each round runs every one in a fresh folder):
  full-disk        the cache on a full file system: a small tmpfs mounted in
                   a private mount namespace (unshare), or, where that is not
                   allowed, RLIMIT_FSIZE in the child with SIGXFSZ ignored
  full-disk-warm   the same after a first run stored values on it
  read-only        a populated cache folder that cannot be written: a
                   read-only bind mount (root, in a private namespace), else
                   chattr +i (root), else chmod 0500 (other users)
  corrupt-whole    data.mdb's used pages overwritten with random bytes
  corrupt-meta     its two meta pages overwritten with random bytes
  corrupt-small    data.mdb replaced by 100 random bytes
  dead-writer      a process killed while it held LMDB's write lock
  dead-reader      a process killed while it held a read transaction
  dead-claim       a script killed while it computed (holding its claim)
  stopped-writer   a process stopped (SIGSTOP, as Ctrl-Z does) in the middle
                   of a write: hits do not wait for it, stores wait one
                   bounded lock timeout (DEVSTASH_WAIT=1s here) and are
                   skipped with one message
  corrupt-pages    (reported, not counted: see below) the pages between the
                   meta pages and the end overwritten with random bytes

Each must leave the script running to its end, uncached where the cache
cannot be used, exiting with the script's own code (3), with at most one
devstash message on stderr that says why (the dead-* ones with none).

corrupt-pages is outside what LMDB can survive: it trusts its file, and a
damaged branch or leaf page behind valid meta pages can make it abort
(mdb_assert) or crash. Its outcome is printed for information only.

Exits 1 if a counted scenario failed. Needs Linux; root for tmpfs/bind
mounts (or unprivileged user namespaces).
"""
import argparse
import ctypes.util
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

VALUE_SIZE = 300_000
EXIT_CODE = 3

SCRIPT = """
import sys
import time
import devstash
devstash.activate()

def make(i):
    if len(sys.argv) > 2:
        print("computing", flush=True)
        time.sleep(float(sys.argv[2]))
    return bytes([i % 256]) * %(size)d

n = int(sys.argv[1]) if len(sys.argv) > 1 else 5
total = 0
for i in range(n):
    v = make(i)  # @devstash
    assert v == bytes([i %% 256]) * %(size)d, i
    total += len(v)
print("done", total, flush=True)
sys.exit(%(code)d)
""".replace("%(size)d", str(VALUE_SIZE)).replace("%(code)d", str(EXIT_CODE)).replace("%%", "%")


class Failed(AssertionError):
    pass


def setup(folder):
    _common.write(folder, "script.py", SCRIPT)
    return os.path.join(folder, ".devstash_cache")


def check_run(proc, n, reasons=None, messages=1):
    """The script ran to its end with its own exit code; stderr holds
    `messages` devstash lines (at most), naming one of `reasons`."""
    where = f"\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
    if proc.returncode != EXIT_CODE:
        raise Failed(f"exit code {proc.returncode}, not {EXIT_CODE}{where}")
    if proc.stdout.splitlines()[-1:] != [f"done {n * VALUE_SIZE}"]:
        raise Failed(f"the script did not finish{where}")
    lines = _common.devstash_lines(proc.stderr)
    if len(lines) > messages or (messages and not lines and reasons):
        raise Failed(f"{len(lines)} devstash messages, expected {messages}{where}")
    if proc.stderr.strip() and not lines:
        raise Failed(f"unexpected output on stderr{where}")
    for line in lines:
        if "uncached" not in line:
            raise Failed(f"the message does not say the script runs uncached{where}")
        if reasons and not any(r in line for r in reasons):
            raise Failed(f"the message does not say why (one of {reasons}){where}")
        if "None" in line:
            raise Failed(f"the message holds a None where a reason belongs{where}")
    return lines


# ---- ways to break a folder -------------------------------------------------

def _unshare_prefix():
    """A command prefix that runs its command in a private mount namespace
    where it may mount, or None."""
    for prefix in (["unshare", "-m"], ["unshare", "-Urm"]):
        if shutil.which(prefix[0]) is None:
            return None
        probe = tempfile.mkdtemp(prefix="devstash-probe-")
        try:
            ok = subprocess.run(
                [*prefix, "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs '{probe}' && "
                 f"mount -o remount,ro '{probe}'"],
                capture_output=True, timeout=30,
            ).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
        finally:
            os.rmdir(probe)
        if ok:
            return prefix
    return None


_PREFIX = []


def mount_prefix():
    if not _PREFIX:
        _PREFIX.append(_unshare_prefix())
    return _PREFIX[0]


def in_namespace(setup_sh):
    """A prefix running `setup_sh` (shell, as root of a private mount
    namespace) and then the command."""
    return [*mount_prefix(), "sh", "-c", setup_sh + ' && exec "$@"', "sh"]


def _fsize_limit(limit):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


# ---- scenarios ----------------------------------------------------------------

def full_disk(folder, rng):
    setup(folder)
    disk = os.path.join(folder, "disk")
    os.mkdir(disk)
    env = {"DEVSTASH_CACHE_DIR": os.path.join(disk, "cache")}
    n = 10   # 3 MB to store: more than the disk holds
    if mount_prefix():
        size = rng.choice(("256k", "1m", "2m"))
        proc = _common.run(folder, ["script.py", str(n)], env=env,
                           prefix=in_namespace(f"mount -t tmpfs -o size={size} tmpfs '{disk}'"))
        return check_run(proc, n, ["No space left on device"])
    proc = _common.run(folder, ["script.py", str(n)], env=env,
                       preexec_fn=_fsize_limit(rng.choice((100_000, 600_000))))
    return check_run(proc, n, ["File too large"])


def full_disk_warm(folder, rng):
    """A first run stores on the file system, a file fills it, the second
    run (new values to store) meets the full disk."""
    setup(folder)
    if not mount_prefix():
        raise Skipped("needs a tmpfs in a private mount namespace")
    disk = os.path.join(folder, "disk")
    os.mkdir(disk)
    env = {"DEVSTASH_CACHE_DIR": os.path.join(disk, "cache")}
    n = 8
    py = sys.executable
    fill = rng.choice(("head -c 100000000 /dev/zero", "head -c 100000000 /dev/urandom"))
    sh = (f"mount -t tmpfs -o size=6m tmpfs '{disk}' && "
          f"'{py}' script.py 2 >/dev/null 2>&1; "
          f"{{ {fill} > '{disk}/filler'; }} 2>/dev/null; true")
    proc = _common.run(folder, ["script.py", str(n)], env=env, prefix=in_namespace(sh))
    return check_run(proc, n, ["No space left on device"])


class Skipped(Exception):
    pass


def read_only(folder, rng):
    cache = setup(folder)
    first = _common.run(folder, ["script.py", "2"])
    check_run(first, 2, messages=0)
    n = 4   # two values more to store: the run must write, and cannot
    reasons = ["Read-only file system", "Permission denied", "Operation not permitted"]
    if os.geteuid() != 0:
        os.chmod(cache, 0o500)
        try:
            return check_run(_common.run(folder, ["script.py", str(n)]), n, reasons)
        finally:
            os.chmod(cache, 0o700)
    if mount_prefix():
        prefix = in_namespace(f"mount --bind '{cache}' '{cache}' && mount -o remount,bind,ro '{cache}'")
        return check_run(_common.run(folder, ["script.py", str(n)], prefix=prefix), n, reasons)
    paths = [cache] + [os.path.join(cache, f) for f in os.listdir(cache)]
    if subprocess.run(["chattr", "+i", *paths], capture_output=True).returncode != 0:
        raise Skipped("root here can neither mount nor chattr +i: no read-only folder")
    try:
        return check_run(_common.run(folder, ["script.py", str(n)]), n, reasons)
    finally:
        subprocess.run(["chattr", "-i", *paths], capture_output=True)


def _used_bytes(cache):
    from devstash import _core

    with _core.Store(cache, readonly=True) as store:
        return store.info()["used"]


def _corrupt(folder, rng, how):
    cache = setup(folder)
    check_run(_common.run(folder, ["script.py", "4"]), 4, messages=0)
    data = os.path.join(cache, "data.mdb")
    used = _used_bytes(cache)
    page = 4096
    with open(data, "r+b") as f:
        if how == "whole":
            f.write(rng.randbytes(used))
        elif how == "meta":
            f.write(rng.randbytes(2 * page))
        elif how == "pages":
            f.seek(2 * page)
            f.write(rng.randbytes(max(0, used - 2 * page)))
        else:
            f.truncate(0)
            f.write(rng.randbytes(100))
    n = 6
    proc = _common.run(folder, ["script.py", str(n)], timeout=60)
    return check_run(proc, n, ["MDB_", "LMDB", "Invalid argument"])


def corrupt_whole(folder, rng):
    return _corrupt(folder, rng, "whole")


def corrupt_meta(folder, rng):
    return _corrupt(folder, rng, "meta")


def corrupt_small(folder, rng):
    return _corrupt(folder, rng, "small")


def corrupt_pages(folder, rng):
    return _corrupt(folder, rng, "pages")


HOLD = """
import ctypes, ctypes.util, os, signal, sys
path, mode = sys.argv[1], sys.argv[2]
lib = ctypes.CDLL(ctypes.util.find_library("lmdb"))
lib.mdb_env_set_mapsize.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
lib.mdb_env_open.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint, ctypes.c_uint]
lib.mdb_txn_begin.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_void_p]
env = ctypes.c_void_p()
assert lib.mdb_env_create(ctypes.byref(env)) == 0
lib.mdb_env_set_maxdbs(env, 4)
lib.mdb_env_set_maxreaders(env, 510)
assert lib.mdb_env_set_mapsize(env, os.path.getsize(os.path.join(path, "data.mdb"))) == 0
# MDB_NOTLS | MDB_NOSYNC | MDB_WRITEMAP, as devstash opens it
assert lib.mdb_env_open(env, path.encode(), 0x200000 | 0x10000 | 0x80000, 0o600) == 0
txn = ctypes.c_void_p()
assert lib.mdb_txn_begin(env, None, 0x20000 if mode == "reader" else 0, ctypes.byref(txn)) == 0
os.kill(os.getpid(), signal.SIGKILL)   # dies holding the lock (reader slot)
"""


def _dead_holder(folder, mode):
    if ctypes.util.find_library("lmdb") is None:
        raise Skipped("liblmdb not found by ctypes")
    cache = setup(folder)
    check_run(_common.run(folder, ["script.py", "2"]), 2, messages=0)
    _common.write(folder, "hold.py", HOLD)
    held = _common.run(folder, ["hold.py", cache, mode])
    if held.returncode != -signal.SIGKILL:
        raise Failed(f"the lock holder did not die as planned: {held.returncode}\n{held.stderr}")
    n = 4
    proc = _common.run(folder, ["script.py", str(n)], timeout=60)
    check_run(proc, n, messages=0)
    from devstash import _core

    with _core.Store(cache) as store:
        if store.count() != n:
            raise Failed(f"{store.count()} entries after the run, expected {n}")
        if mode == "reader" and store.info()["readers"] > 2:
            raise Failed(f"the dead reader's slot was not freed: {store.info()}")


def dead_writer(folder, rng):
    return _dead_holder(folder, "writer")


def dead_reader(folder, rng):
    return _dead_holder(folder, "reader")


def dead_claim(folder, rng):
    """Killed while computing a value (its claim held): the next run computes
    it at once. DEVSTASH_WAIT is huge, so a stale claim would hang the run
    until the timeout."""
    setup(folder)
    proc = subprocess.Popen([sys.executable, "script.py", "1", "30"], cwd=folder,
                            env=_common.child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if line.strip() != "computing":
            raise Failed(f"the script did not start computing: {line!r}")
        time.sleep(rng.uniform(0, 0.2))
    finally:
        proc.kill()
        proc.communicate()
    again = _common.run(folder, ["script.py", "1", "0"], env={"DEVSTASH_WAIT": "1h"}, timeout=60)
    check_run(again, 1, messages=0)
    if again.stdout.splitlines()[0] != "computing":
        raise Failed("the value was not computed again")


WRITER = """
import sys
from devstash import _core
store = _core.Store(sys.argv[1])
big = bytearray(400 << 20)
print("ready", flush=True)
for i in range(1000):
    big[0] = i % 256
    store.put(b"soak-writer-%04d" % i, b"", [big])
"""


def _gate_held(cache):
    """Whether a process is inside a write: it holds the flock on data.mdb."""
    import fcntl

    fd = os.open(os.path.join(cache, "data.mdb"), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def stopped_writer(folder, rng):
    cache = setup(folder)
    check_run(_common.run(folder, ["script.py", "2"]), 2, messages=0)
    _common.write(folder, "writer.py", WRITER)
    writer = subprocess.Popen([sys.executable, "writer.py", cache], cwd=folder, env=_common.child_env(),
                              stdout=subprocess.PIPE, text=True)
    try:
        if writer.stdout.readline().strip() != "ready":
            raise Failed("the writer did not start")
        deadline = time.monotonic() + 60
        while not _gate_held(cache):
            if time.monotonic() > deadline:
                raise Failed("the writer never held the write lock")
        time.sleep(rng.uniform(0, 0.05))
        os.kill(writer.pid, signal.SIGSTOP)
        env = {"DEVSTASH_WAIT": "1s"}
        started = time.monotonic()
        check_run(_common.run(folder, ["script.py", "2"], env=env, timeout=60), 2, messages=0)
        if time.monotonic() - started > 1.0:
            raise Failed("a run of hits waited for the stopped writer")
        started = time.monotonic()
        check_run(_common.run(folder, ["script.py", "5"], env=env, timeout=60), 5,
                  reasons=["held by another process"])
        if time.monotonic() - started > 4.0:
            raise Failed(f"stores waited {time.monotonic() - started:.1f} s, more than one bound each")
    finally:
        os.kill(writer.pid, signal.SIGCONT)
        writer.kill()
        writer.communicate()
    check_run(_common.run(folder, ["script.py", "5"]), 5, messages=0)


SCENARIOS = {
    "full-disk": full_disk,
    "full-disk-warm": full_disk_warm,
    "read-only": read_only,
    "corrupt-whole": corrupt_whole,
    "corrupt-meta": corrupt_meta,
    "corrupt-small": corrupt_small,
    "dead-writer": dead_writer,
    "dead-reader": dead_reader,
    "dead-claim": dead_claim,
    "stopped-writer": stopped_writer,
}
INFORMATIONAL = {"corrupt-pages": corrupt_pages}


def run_scenario(name, seed, keep=False):
    """(status, detail): status is "ok", "failed" or "skipped"."""
    fn = SCENARIOS.get(name) or INFORMATIONAL[name]
    folder = tempfile.mkdtemp(prefix=f"devstash-fault-{name}-")
    try:
        fn(folder, random.Random(seed))
        return "ok", ""
    except Skipped as exc:
        return "skipped", str(exc)
    except (Failed, subprocess.TimeoutExpired) as exc:
        return "failed", str(exc)
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", help="comma-separated scenario names")
    parser.add_argument("--keep", action="store_true", help="keep the folders of the runs")
    ns = parser.parse_args(argv)
    names = ns.only.split(",") if ns.only else [*SCENARIOS, *INFORMATIONAL]
    failures = 0
    tally = {}
    for round_ in range(ns.rounds):
        for name in names:
            status, detail = run_scenario(name, ns.seed * 1000 + round_, ns.keep)
            tally.setdefault(name, {}).setdefault(status, 0)
            tally[name][status] += 1
            if status != "ok":
                first = detail.strip().splitlines()[:12]
                print(f"round {round_} {name}: {status}\n    " + "\n    ".join(first), flush=True)
            if status == "failed" and name in SCENARIOS:
                failures += 1
    for name, counts in tally.items():
        note = " (informational)" if name in INFORMATIONAL else ""
        print(f"{name:16} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + note)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
