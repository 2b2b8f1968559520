"""Crash soak: a storing script killed with SIGKILL at random moments.

    python soak/crash.py [--rounds 200] [--seed 1] [--folder DIR]

Each round starts a user script that stores values of three kinds (bytes up
to 1 MB, marshal-able dicts, NumPy arrays pickled with out-of-band buffers)
and hits earlier ones, and kills it at a random moment: during start-up, in
the middle of storing, or while it writes its code cache. After each kill:
the cache opens; Store.entries() lists only entries whose value loads
(Store.get + _runtime.decode_value) and equals what the script computes for
the inputs the value itself names; no entry of an earlier round is lost
(kills never lose a committed write); and `python -m devstash list`, when
that command exists, exits 0. Then a random third of the entries is deleted
(Store.delete), so the cache stays at a few thousand entries, later rounds
store as much as early ones and LMDB reuses freed pages. Exits 1 on the
first failure.
"""
import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

SCRIPT = """
import sys
import devstash
devstash.activate()
import numpy as np
from values import make

start = int(sys.argv[1])
for j in range(start, start + 100000):
    i = j % 5000
    v = make(i)  # @devstash
    print(i, flush=True)
"""

# The values, importable by the checker too: each names its own input.
VALUES = """
import numpy as np

def make(i):
    kind = i % 3
    if kind == 0:
        size = 1_000_000 if i % 97 == 0 else (i * 7919) % 40_000
        return ("bytes", i, bytes([i % 256]) * size)
    if kind == 1:
        return ("dict", i, {"i": i, "items": list(range(i % 50)), "s": "x" * (i % 3000)})
    return ("array", i, np.full((i % 200) + 1, i, dtype=np.int64))


def same(a, b):
    if a[0] == "array":
        return a[:2] == b[:2] and type(b[2]) is np.ndarray and b[2].dtype == a[2].dtype \\
            and np.array_equal(a[2], b[2])
    return a == b
"""


class Failed(AssertionError):
    pass


def setup(folder):
    _common.write(folder, "script.py", SCRIPT)
    _common.write(folder, "values.py", VALUES)
    return os.path.join(folder, ".devstash_cache")


def check_cache(folder):
    """Opens the cache, loads every listed entry, checks it. Returns the set
    of keys."""
    from devstash import _core
    from devstash._runtime import decode_value

    sys.path.insert(0, folder)
    try:
        import importlib

        values = importlib.import_module("values")
    finally:
        sys.path.remove(folder)
    cache = os.path.join(folder, ".devstash_cache")
    if not os.path.exists(cache):
        return set()
    keys = set()
    with _core.Store(cache) as store:
        entries = store.entries()
        if store.count() != len(entries):
            raise Failed(f"count() {store.count()} but entries() lists {len(entries)}")
        for entry in entries:
            got = store.get(entry["key"])
            if got is None:
                raise Failed(f"entries() lists {entry['key'].hex()} but get() finds nothing")
            value = decode_value(got[1], got[2])
            if type(value) is not tuple or len(value) != 3 or not isinstance(value[1], int):
                raise Failed(f"entry {entry['key'].hex()} holds {type(value)!r}")
            if not values.same(values.make(value[1]), value):
                raise Failed(f"entry {entry['key'].hex()} holds a wrong value for input {value[1]}")
            keys.add(entry["key"])
    sys.modules.pop("values", None)
    return keys


def one_round(folder, rng, known):
    """Starts the script, kills it at a random moment, checks the cache.
    Returns the keys now stored."""
    start = rng.randrange(0, 5000)
    proc = subprocess.Popen([sys.executable, "script.py", str(start)], cwd=folder,
                            env=_common.child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        moment = rng.random()
        if moment < 0.2:
            time.sleep(rng.uniform(0, 0.25))     # start-up: imports, rewrite, code cache
        else:
            proc.stdout.readline()               # storing or hitting
            time.sleep(rng.uniform(0, 0.3))
        proc.send_signal(signal.SIGKILL)
    finally:
        _, err = proc.communicate()
    if proc.returncode not in (-signal.SIGKILL, 0):
        raise Failed(f"the script failed before it was killed ({proc.returncode}):\n{err.decode()}")
    keys = check_cache(folder)
    lost = known - keys
    if lost:
        raise Failed(f"{len(lost)} entries of earlier rounds are gone, e.g. {next(iter(lost)).hex()}")
    listing = _common.list_command(folder)
    if listing is not None and listing.returncode != 0:
        raise Failed(f"devstash list exited {listing.returncode}:\n{listing.stderr}")
    from devstash import _core

    doomed = [k for k in sorted(keys) if rng.random() < 0.33]
    with _core.Store(os.path.join(folder, ".devstash_cache")) as store:
        for key in doomed:
            if not store.delete(key):
                raise Failed(f"delete({key.hex()}) found nothing")
    return keys.difference(doomed)


def soak(rounds, seed=1, folder=None, progress=False):
    """Runs `rounds` rounds in folder (a new temporary one if None); returns
    the number of entries at the end. Raises Failed."""
    own = folder is None
    folder = folder or tempfile.mkdtemp(prefix="devstash-crash-")
    try:
        setup(folder)
        rng = random.Random(seed)
        keys = check_cache(folder)
        for n in range(rounds):
            try:
                keys = one_round(folder, rng, keys)
            except Failed as exc:
                raise Failed(f"round {n} (folder {folder}): {exc}") from None
            if progress and (n + 1) % 10 == 0:
                print(f"round {n + 1}: {len(keys)} entries, all load", flush=True)
        return len(keys)
    finally:
        if own:
            shutil.rmtree(folder, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--folder", help="work here (kept) instead of in a temporary folder")
    ns = parser.parse_args(argv)
    start = time.monotonic()
    try:
        n = soak(ns.rounds, ns.seed, ns.folder, progress=True)
    except Failed as exc:
        print(f"FAILED: {exc}")
        return 1
    print(f"{ns.rounds} rounds in {time.monotonic() - start:.0f} s: {n} entries, all load")
    return 0


if __name__ == "__main__":
    sys.exit(main())
