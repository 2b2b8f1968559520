"""A cache nobody else can write, values checked before they are trusted:
the cache folder as a security boundary, checksums, damaged files, signed
exports, the signing key, and entries from a clock that ran ahead. Run as
users meet them: scripts and the devstash command in subprocesses."""
import os
import pickle
import re
import stat
import subprocess
import sys
import time

import pytest
from conftest import ScriptRunner, line_of
from test_cli import HEADER, base_env, cache, cli, listing, run

from devstash import _core

# An owner nobody is on this machine: the "other local user".
OTHER_UID = OTHER_GID = 54321


def chown_tree(path, uid=OTHER_UID, gid=OTHER_GID):
    os.chown(path, uid, gid)
    if os.path.isdir(path) and not os.path.islink(path):
        for name in os.listdir(path):
            os.chown(os.path.join(path, name), uid, gid, follow_symlinks=False)


def devstash_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("devstash:")]


SCRIPT = HEADER + """
import sys

def slow(x):
    print("computing", x)
    return {"x": x, "text": f"hello world {x}"}

a = slow(1)  # @devstash ttl=1h
b = slow(2)  # @devstash
print("done", a["x"], b["x"])
"""


def teammate(scripts):
    """Another folder with the same script: a teammate's checkout."""
    other = ScriptRunner(scripts.folder / "b")
    other.path = other.write("script.py", SCRIPT)
    return other


@pytest.fixture
def filled(scripts):
    """A folder whose cache holds the two entries of SCRIPT."""
    scripts.path = scripts.write("script.py", SCRIPT)
    assert "computing 1" in run(scripts).stdout
    assert "computing" not in run(scripts).stdout
    return scripts


# ---- 7. entries created in the future ------------------------------------------

def test_an_entry_created_in_the_future_counts_as_expired(filled):
    """Stored while the clock was an hour ahead: an entry with a ttl counts
    as expired (the script recomputes it, list says so); one without a ttl
    is still valid."""
    folder = filled.folder
    with _core.Store(str(cache(folder))) as store:
        for meta in store.entries():
            _created, data, buffers = store.get(meta["key"])
            store.put(meta["key"], data, buffers, created=time.time() + 3600, ttl=meta["ttl"],
                      compute=meta["compute"], callee=meta["callee"], site=meta["site"])
    line_a = line_of(filled.path, "a = slow(1)")
    rows = {e["line"]: e for e in listing(folder)}
    assert rows[line_a]["expired"] is True
    assert rows[line_of(filled.path, "b = slow(2)")]["expired"] is False
    assert [e["line"] for e in listing(folder, "--expired")] == [line_a]
    text = cli(folder, "list").stdout
    row = next(r for r in text.splitlines() if f"script.py:{line_a} " in r)
    assert "future" in row and "expired (created in the future)" in row
    out = run(filled).stdout
    assert "computing 1" in out and "computing 2" not in out
    assert all(not e["expired"] for e in listing(folder))   # replaced by a fresh value


# ---- 1. nobody else can plant code ------------------------------------------------

PWNED = "pwned"


class Plant:
    """A value whose unpickling creates the file PWNED in the working
    directory: what another user would plant."""

    def __reduce__(self):
        return (exec, (f"open({PWNED!r}, 'w').close()",))


def plant_everywhere(folder):
    """Replaces every value of the cache in folder by a Plant pickle, keeping
    the metadata: the next load of any entry would create PWNED."""
    evil = pickle.dumps(Plant(), protocol=5)
    with _core.Store(str(folder)) as store:
        for meta in store.entries():
            store.put(meta["key"], evil, created=meta["created"], ttl=meta["ttl"],
                      compute=meta["compute"], callee=meta["callee"], site=meta["site"])


def check_uncached(proc, scripts, *needles):
    """The script ran to its end uncached (it computed both values), with
    exactly one devstash warning that holds every needle and says it runs
    uncached; nothing planted was loaded."""
    assert proc.returncode == 0, proc.stderr
    assert "computing 1" in proc.stdout and "computing 2" in proc.stdout
    assert proc.stdout.endswith("done 1 2\n")
    lines = devstash_lines(proc.stderr)
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "running uncached" in lines[0]
    assert not (scripts.folder / PWNED).exists()
    return lines[0]


def test_a_folder_of_another_owner_is_not_used(filled):
    folder = cache(filled.folder)
    plant_everywhere(folder)
    chown_tree(folder)
    proc = run(filled)
    line = check_uncached(proc, filled, str(folder), "is owned by user id 54321",
                          "not by you (user id 0)", "chown -R 0 ")
    assert line.count(str(folder)) >= 1
    err = cli(filled.folder, "list", code=1).stderr
    assert err.startswith(f"devstash: refusing the cache {folder}: the cache folder {folder} "
                          "is owned by user id 54321") and err.count("\n") == 1
    out = cli(filled.folder, "doctor", code=1).stdout
    assert f"problem  the cache folder {folder} is owned by user id 54321" in out
    assert "chown -R 0 " in out and "no problems found" not in out
    assert "the store opens" not in out   # not opened at all
    # A folder that is ours but holds a file of someone else's.
    os.chown(folder, 0, 0)
    proc = run(filled)
    check_uncached(proc, filled, f"{folder}/data.mdb is owned by user id 54321")
    assert not (filled.folder / PWNED).exists()


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o722])
def test_a_folder_others_can_write_is_not_used(scripts, mode):
    scripts.path = scripts.write("script.py", SCRIPT)
    shared = scripts.folder / "shared"
    env = {"DEVSTASH_CACHE_DIR": str(shared)}
    assert "computing 1" in run(scripts, env=env).stdout
    plant_everywhere(shared)
    os.chmod(shared, mode)
    line = check_uncached(run(scripts, env=env), scripts, str(shared), f"has mode {mode:04o}",
                          f"chmod 700 {shared}")
    assert ("group and others" if mode & 0o002 and mode & 0o020 else
            "others" if mode & 0o002 else "its group") in line
    out = cli(scripts.folder, "doctor", env=env, code=1).stdout
    assert f"problem  the cache folder {shared} has mode {mode:04o}: " in out
    assert f"fix    `chmod 700 {shared}`" in out and "no problems found" not in out
    # A file in it that others can write: the same refusal.
    os.chmod(shared, 0o700)
    os.chmod(shared / "data.mdb", 0o666)
    check_uncached(run(scripts, env=env), scripts, f"{shared}/data.mdb has mode 0666",
                   f"chmod 600 {shared}/data.mdb")
    os.chmod(shared / "data.mdb", 0o600)
    # Made safe again, the cache is used: and still never loads the plant
    # but through the script (which the test does not run again).
    assert cli(scripts.folder, "doctor", env=env).stdout.endswith("no problems found\n")


def test_a_symlinked_cache_folder_is_not_followed(scripts):
    scripts.path = scripts.write("script.py", SCRIPT)
    elsewhere = scripts.folder / "elsewhere"
    assert "computing 1" in run(scripts, env={"DEVSTASH_CACHE_DIR": str(elsewhere)}).stdout
    plant_everywhere(elsewhere)
    os.symlink(elsewhere, cache(scripts.folder))   # planted in the project folder
    line = check_uncached(run(scripts), scripts, str(cache(scripts.folder)),
                          "is a symbolic link (to ")
    assert str(elsewhere) in line
    out = cli(scripts.folder, "doctor", code=1).stdout
    assert "is a symbolic link" in out and "no problems found" not in out
    assert "refusing the cache" in cli(scripts.folder, "list", code=1).stderr
    assert not (scripts.folder / PWNED).exists()


def test_a_symlinked_lock_file_is_never_written_through(filled):
    victim = filled.folder / "important.txt"
    victim.write_text("precious\n")
    lock = cache(filled.folder) / "lock.mdb"
    lock.unlink()
    os.symlink(victim, lock)
    check_uncached(run(filled), filled, f"{lock} is a symbolic link", f"rm {lock}")
    for args, code in ((("list",), 1), (("show", "00"), 1), (("export", "x.dsx"), 1),
                       (("doctor",), 1)):
        cli(filled.folder, *args, code=code)
    assert victim.read_text() == "precious\n"
    assert os.path.islink(lock)
    # The fix the message gives works.
    lock.unlink()
    assert "computing" not in run(filled).stdout


def test_a_symlinked_data_file_or_claims_file_is_refused(filled):
    folder = cache(filled.folder)
    real = filled.folder / "real-claims"
    real.write_text("")
    (folder / "claims").unlink(missing_ok=True)
    os.symlink(real, folder / "claims")
    check_uncached(run(filled), filled, f"{folder}/claims is a symbolic link")
    (folder / "claims").unlink()
    os.rename(folder / "data.mdb", filled.folder / "data.mdb")
    os.symlink(filled.folder / "data.mdb", folder / "data.mdb")
    check_uncached(run(filled), filled, f"{folder}/data.mdb is a symbolic link")


def test_folders_devstash_makes_for_the_cache_are_private_whatever_the_umask(scripts):
    scripts.path = scripts.write("script.py", SCRIPT)
    proc = subprocess.run([sys.executable, "script.py"], cwd=scripts.folder,
                          env=base_env(scripts.folder, {"DEVSTASH_CACHE_DIR": "a/b/cache",
                                                        "DEVSTASH_QUIET": "1"}),
                          capture_output=True, text=True, preexec_fn=lambda: os.umask(0))
    assert proc.returncode == 0 and not devstash_lines(proc.stderr), proc.stderr
    for sub in ("a", "a/b", "a/b/cache"):
        assert stat.S_IMODE(os.stat(scripts.folder / sub).st_mode) == 0o700, sub
    assert "computing" not in run(scripts, env={"DEVSTASH_CACHE_DIR": "a/b/cache"}).stdout


# ---- 2. show and doctor never unpickle; export vouches for what it signs -----------

def test_show_and_doctor_never_load_a_planted_pickle(filled):
    plant_everywhere(cache(filled.folder))
    key = listing(filled.folder, "--pattern", "slow")[0]["key"]
    out = cli(filled.folder, "show", key).stdout
    fields = dict(line.split(None, 1) for line in out.splitlines())
    assert fields["type"] == "built by builtins.exec()"
    assert fields["value"].startswith("not loaded: loading a pickle runs the code it names")
    assert re.match(r"\d+ B \(pickle \d+ B\)", fields["size"])
    out = cli(filled.folder, "doctor").stdout
    assert "every stored value matches its checksum (2 checked)" in out
    assert not (filled.folder / PWNED).exists()
    # The plant is live: --load runs it, which is why nothing else does.
    cli(filled.folder, "show", key, "--load")
    assert (filled.folder / PWNED).exists()


def test_show_previews_values_stored_with_marshal(filled):
    key = listing(filled.folder, "--pattern", "slow")[0]["key"]
    fields = dict(line.split(None, 1) for line in cli(filled.folder, "show", key).stdout.splitlines())
    assert fields["type"] == "dict" and fields["value"].startswith("{'x': ")
    assert fields["size"].startswith(fields["size"].split(" (")[0] + " (marshal ")


def test_export_from_a_folder_others_can_write_is_refused(filled):
    folder = cache(filled.folder)
    os.chmod(folder, 0o777)
    err = cli(filled.folder, "export", "team.dsx", code=1).stderr
    assert err.startswith(f"devstash: refusing to export from {folder}: the cache folder {folder} "
                          "has mode 0777: group and others can write it")
    assert "an export would sign their entries as yours" in err and "chmod 700" in err
    assert not (filled.folder / "team.dsx").exists()
    os.chmod(folder, 0o700)
    chown_tree(folder)
    err = cli(filled.folder, "export", "team.dsx", code=1).stderr
    assert "refusing to export" in err and "is owned by user id 54321" in err
    assert not (filled.folder / "team.dsx").exists()


# ---- 3. the signing key -----------------------------------------------------------

def key_path(folder):
    return folder / "config" / "devstash" / "secret"


def test_the_key_folder_is_private_whatever_the_umask(filled):
    proc = subprocess.run([sys.executable, "-m", "devstash", "export", "team.dsx"],
                          cwd=filled.folder, env=base_env(filled.folder), capture_output=True,
                          text=True, preexec_fn=lambda: os.umask(0))
    assert proc.returncode == 0, proc.stderr
    for path in (filled.folder / "config", filled.folder / "config" / "devstash"):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700, path
    assert stat.S_IMODE(os.stat(key_path(filled.folder)).st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_a_key_file_others_can_read_or_write_is_refused(filled, mode):
    cli(filled.folder, "export", "team.dsx")
    key = key_path(filled.folder)
    os.chmod(key, mode)
    for args in (("export", "again.dsx"), ("import", "team.dsx")):
        err = cli(filled.folder, *args, code=1).stderr
        assert err == (f"devstash: the key file {key} is readable or writable by others "
                       f"(mode {mode:04o}): it is refused, since others could sign or forge "
                       f"entries with it; fix: chmod 600 {key} (or delete it to get a new key)\n")
    assert not (filled.folder / "again.dsx").exists()
    out = cli(filled.folder, "doctor", code=1).stdout
    assert f"problem  the key file {key} is readable or writable by others" in out
    assert f"fix    chmod 600 {key}" in out
    os.chmod(key, 0o600)
    cli(filled.folder, "export", "again.dsx")


def test_a_key_file_of_someone_else_is_refused(filled):
    cli(filled.folder, "export", "team.dsx")
    key = key_path(filled.folder)
    os.chown(key, OTHER_UID, OTHER_GID)
    err = cli(filled.folder, "export", "again.dsx", code=1).stderr
    assert f"the key file {key} is owned by user id 54321, not by you (user id 0)" in err
    assert "no problems found" not in cli(filled.folder, "doctor", code=1).stdout


@pytest.mark.parametrize("secret", ["x", "team-a", "fifteen-bytes!!"])
def test_a_short_secret_is_refused(filled, secret):
    env = {"DEVSTASH_SECRET": secret}
    for args in (("export", "team.dsx"), ("import", "team.dsx")):
        err = cli(filled.folder, *args, env=env, code=1).stderr
        assert err.startswith(f"devstash: $DEVSTASH_SECRET is {len(secret)} byte") and \
            "needs at least 16" in err and err.count("\n") == 1, err
    assert not (filled.folder / "team.dsx").exists()
    out = cli(filled.folder, "doctor", env=env, code=1).stdout
    assert "problem  $DEVSTASH_SECRET is" in out
    cli(filled.folder, "export", "team.dsx", env={"DEVSTASH_SECRET": "sixteen-bytes-ok"})


# ---- 4. values are checked before they are trusted ------------------------------------

VALUES = HEADER + """
import sys
import numpy as np

def text(n):
    print("computing text", flush=True)
    return "".join(["MAR", "KER-"]) + "abcdefgh" * n   # not a constant of the code

def array(n):
    print("computing array", flush=True)
    return np.arange(n, dtype=np.float64) + 0.5

t = text(100)  # @devstash
a = array(300_000)  # @devstash
print("done", len(t), t[:10], t[-3:], float(a.sum()), a[123456])
"""
RIGHT = f"done {7 + 800} MARKER-abc fgh {float(sum(i + 0.5 for i in range(300_000)))} 123456.5\n"


def used_bytes(folder):
    with _core.Store(str(folder), readonly=True) as store:
        return store.info()["used"]


def flip_byte_after(folder, needle, offset=40):
    """Flips one byte `offset` bytes after needle in data.mdb's used pages
    (wherever it is: a page LMDB copied on write keeps a stale copy)."""
    path = cache(folder) / "data.mdb"
    used = used_bytes(cache(folder))
    with open(path, "r+b") as f:
        data = f.read(used)
        at = data.find(needle)
        assert at >= 0
        while at >= 0:
            f.seek(at + offset)
            f.write(bytes([data[at + offset] ^ 0x10]))
            at = data.find(needle, at + 1)


@pytest.mark.parametrize("which", ["text", "array"])
def test_a_flipped_byte_in_a_stored_value_is_caught(scripts, which):
    """Marshal data checked by the lookup; a 2.4 MB array while it is
    copied out of the map. Either way: the right value, one warning, the
    entry replaced, and the next run hits again."""
    scripts.path = scripts.write("script.py", VALUES)
    first = run(scripts)
    assert first.stdout.endswith(RIGHT) and "computing text" in first.stdout
    assert run(scripts).stdout == RIGHT   # hits
    needle = b"MARKER-abcdefgh" if which == "text" else struct_pack_double(123456.5)
    flip_byte_after(scripts.folder, needle, offset=40 if which == "text" else 3)
    key = next(e["key"] for e in listing(scripts.folder) if e["callee"].endswith(which))
    fields = dict(line.split(None, 1) for line in cli(scripts.folder, "show", key).stdout.splitlines())
    assert fields["value"].startswith("damaged: its checksum does not match its bytes")
    out = cli(scripts.folder, "doctor", code=1).stdout
    assert "problem  1 entry is damaged (the checksum of the stored value does not match its bytes)" in out
    assert "no problems found" not in out
    assert "1 damaged entry left out" in cli(scripts.folder, "export", "x.dsx").stdout
    proc = run(scripts)
    assert proc.stdout == f"computing {which}\n" + RIGHT
    lines = devstash_lines(proc.stderr)
    assert len(lines) == 1 and "damaged" in lines[0] and "checksum" in lines[0], proc.stderr
    assert "recomputed" in lines[0]
    again = run(scripts)
    assert again.stdout == RIGHT and not devstash_lines(again.stderr)
    assert cli(scripts.folder, "doctor").stdout.endswith("no problems found\n")


def struct_pack_double(x):
    import struct

    return struct.pack("<d", x)


def test_records_of_the_older_format_are_recomputed_silently(filled):
    """A record without a checksum (format 1, magic 0xD5) reads as absent."""
    folder = cache(filled.folder)
    with _core.Store(str(folder)) as store:
        for meta in store.entries():
            record = store.get_record(meta["key"])
            start = 17   # the old header: magic, f64 created, then the same varints
            store._put_raw(meta["key"], b"\xd5" + record[9:17] + record[start:])
            assert store.verify(meta["key"]) == "old" and store.get(meta["key"]) is None
    out = cli(filled.folder, "doctor").stdout
    assert "2 entries were stored by an older devstash" in out and out.endswith("no problems found\n")
    proc = run(filled)
    assert "computing 1" in proc.stdout and "computing 2" in proc.stdout
    assert not devstash_lines(proc.stderr)
    assert "computing" not in run(filled).stdout


def test_time_of_a_100_mb_array_hit(scripts, capsys):
    """Prints what a hit of a 100 MB array costs now that its checksum is
    verified (budget: 0.03 s); asserts nothing about the time."""
    scripts.write("big.py", HEADER + """
import time
import numpy as np

def make(n):
    print("computing", flush=True)
    return np.arange(n, dtype=np.float64)

t0 = time.perf_counter()
arr = make(12_500_000)  # @devstash
t = time.perf_counter() - t0
assert arr[-1] == 12_499_999.0
print(f"{t:.4f}")
""")
    assert run_named(scripts, "big.py").stdout.startswith("computing")
    times = sorted(float(run_named(scripts, "big.py").stdout) for _ in range(5))
    with capsys.disabled():
        print(f"\n100 MB array hit, best of 5: {times[0]:.4f} s (median {times[2]:.4f} s)")


def run_named(scripts, name):
    return scripts.run(name, env=base_env(scripts.folder))


# ---- 5. a data.mdb cut short ------------------------------------------------------------

def test_a_truncated_data_file_is_reported_not_a_crash(scripts):
    scripts.path = scripts.write("script.py", HEADER + """
def make(i):
    print("computing", i)
    return bytes([i]) * 100_000

total = 0
for i in range(20):
    v = make(i)  # @devstash
    total += len(v)
print("done", total)
""")
    assert run(scripts).stdout.endswith("done 2000000\n")
    folder = cache(scripts.folder)
    key = listing(scripts.folder)[0]["key"]
    used = used_bytes(folder)
    os.truncate(folder / "data.mdb", used // 2)
    proc = run(scripts)
    assert proc.returncode == 0 and proc.stdout.endswith("done 2000000\n")
    assert proc.stdout.count("computing") == 20
    lines = devstash_lines(proc.stderr)
    assert len(lines) == 1 and "damaged" in lines[0] and "cut short" in lines[0], proc.stderr
    assert "run `devstash doctor` or delete the folder" in lines[0] and "uncached" in lines[0]
    assert os.path.getsize(folder / "data.mdb") == used // 2   # not grown, not touched
    for args in (("show", key), ("export", "x.dsx"), ("list",), ("stats",)):
        proc = cli(scripts.folder, *args, code=1)
        assert "damaged" in proc.stderr and "devstash doctor" in proc.stderr, (args, proc.stderr)
    out = cli(scripts.folder, "doctor", code=1).stdout
    assert "problem  data.mdb is damaged: " in out and "cut short" in out
    assert "crashed" not in out
    assert "removed its files" in cli(scripts.folder, "clear", "--all").stdout
    assert run(scripts).stdout.count("computing") == 20
    assert "computing" not in run(scripts).stdout


def test_a_data_file_exactly_as_long_as_its_pages_in_use_opens(filled):
    """The check reads LMDB's meta pages right: a compacted file (no free
    pages at its end) is as long as its pages in use and opens."""
    folder = cache(filled.folder)
    cli(filled.folder, "compact")
    size = os.path.getsize(folder / "data.mdb")
    assert size == used_bytes(folder)
    os.truncate(folder / "data.mdb", size - 4096)
    with pytest.raises(_core.DamagedError, match="cut short"):
        _core.Store(str(folder), readonly=True)
    with pytest.raises(_core.DamagedError, match="cut short"):
        _core.Store(str(folder))
    assert os.path.getsize(folder / "data.mdb") == size - 4096


# ---- 6. exports are signed as a whole ---------------------------------------------------

def export_parts(data):
    """(header, [entry bytes], trailer) of an export file."""
    import struct

    pos, entries = 28, []
    while data[pos:pos + 1] == b"E":
        start = pos
        meta_len = struct.unpack_from("<I", data, pos + 17)[0]
        pos += 21 + meta_len
        record_len = struct.unpack_from("<Q", data, pos)[0]
        pos += 8 + record_len + 32
        entries.append(data[start:pos])
    return data[:28], entries, data[pos:]


@pytest.fixture
def exported(filled):
    cli(filled.folder, "export", "team.dsx")
    filled.export = filled.folder / "team.dsx"
    filled.other = teammate(filled)
    filled.env = {"XDG_CONFIG_HOME": str(filled.folder / "config")}
    return filled


@pytest.mark.parametrize("how", ["dropped", "added", "reordered"])
def test_an_export_with_entries_dropped_or_added_is_refused_as_a_whole(exported, how):
    head, entries, trailer = export_parts(exported.export.read_bytes())
    assert len(entries) == 2 and len(trailer) == 73
    changed = {"dropped": entries[:1], "added": entries + entries[:1],
               "reordered": entries[::-1]}[how]
    exported.export.write_bytes(head + b"".join(changed) + trailer)
    proc = cli(exported.other.folder, "import", str(exported.export), env=exported.env, code=1)
    assert proc.stdout == ""
    assert "its signature does not verify (its entries do not match its signed trailer: entries " \
           "were dropped, added or changed after export); nothing was imported" in proc.stderr
    assert listing(exported.other.folder) == []


def test_an_export_with_bytes_appended_is_refused_even_trusted(exported):
    exported.export.write_bytes(exported.export.read_bytes() + b"\n#!/bin/sh\n")
    for trust in ((), ("--trust",)):
        proc = cli(exported.other.folder, "import", *trust, str(exported.export),
                   env=exported.env, code=1)
        assert proc.stderr == (f"devstash: {exported.export} is damaged (11 bytes after its "
                               "end); nothing was imported\n")
    assert listing(exported.other.folder) == []


def test_a_truncated_export_imports_nothing(exported):
    data = exported.export.read_bytes()
    for cut in (len(data) - 1, len(data) - 40, len(data) - 73, len(data) // 2, 40):
        exported.export.write_bytes(data[:cut])
        for trust in ((), ("--trust",)):
            proc = cli(exported.other.folder, "import", *trust, str(exported.export),
                       env=exported.env, code=1)
            assert "truncated or damaged; nothing was imported" in proc.stderr, (cut, proc.stderr)
    assert listing(exported.other.folder) == []


def test_a_changed_value_in_an_export_never_gets_in(exported):
    """Changed bytes in a value fail the file's signature; with --trust, the
    value's own checksum still keeps it out."""
    data = exported.export.read_bytes()
    assert data.count(b"hello world 1") == 1
    exported.export.write_bytes(data.replace(b"hello world 1", b"HELLO WORLD 1"))
    cli(exported.other.folder, "import", str(exported.export), env=exported.env, code=1)
    out = cli(exported.other.folder, "import", "--trust", str(exported.export),
              env=exported.env).stdout
    assert out.startswith("imported 1 entry") and "skipped 1 malformed" in out
    out = run(exported.other).stdout
    assert out == "computing 1\ndone 1 2\n"


def test_an_intact_export_still_imports(exported):
    out = cli(exported.other.folder, "import", str(exported.export), env=exported.env).stdout
    assert out.startswith("imported 2 entries (")
    assert run(exported.other).stdout == "done 1 2\n"


def test_a_flipped_byte_in_the_compiled_code_cache_is_never_run(scripts):
    """The rewriter's cache replaces the whole script on a warm run: a code
    record that fails its checksum is rewritten from the source again."""
    scripts.path = scripts.write("script.py", HEADER + """
def slow(x):
    return x * 2

v = slow(21)  # @devstash
print("the answer is", v, "CONSTANT-OF-THE-SCRIPT")
""")
    assert run(scripts).stdout == "the answer is 42 CONSTANT-OF-THE-SCRIPT\n"
    flip_byte_after(scripts.folder, b"CONSTANT-OF-THE-SCRIPT", offset=3)
    proc = run(scripts)
    assert proc.stdout == "the answer is 42 CONSTANT-OF-THE-SCRIPT\n"
    assert not devstash_lines(proc.stderr)
    assert run(scripts).stdout == "the answer is 42 CONSTANT-OF-THE-SCRIPT\n"


# ---- the first tests of the folder checks (main's test_trust.py) ----------------------

SCRIPT_42 = """
import devstash
devstash.activate()
def f(x):
    print("computing")
    return x * 2
print(f(21))  # @devstash
"""


class Planted:
    """A value whose unpickling creates a file: what an attacker plants."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def plant_one(folder, victim_file):
    """A store in `folder` whose every value would create victim_file."""
    with _core.Store(str(folder)) as store:
        store.put(b"k" * 16, pickle.dumps(Planted(str(victim_file)), protocol=5), site="x.py:1")


def cli_in(scripts, *args, env=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DEVSTASH_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "devstash", *args], cwd=scripts.folder,
                          env=full_env, capture_output=True, text=True, timeout=120)


def test_a_folder_another_user_owns_is_not_used(scripts):
    scripts.write("script.py", SCRIPT_42)
    cache = scripts.folder / ".devstash_cache"
    scripts.run()
    os.chown(cache, 4242, 4242)
    for _ in range(2):
        run = scripts.run()
        assert run.stdout.split() == ["computing", "42"]
        assert run.stderr.count("owned by user id 4242") == 1
        assert "runs uncached" in run.stderr or "running uncached" in run.stderr
    doctor = cli_in(scripts, "doctor")
    assert doctor.returncode == 1 and "owned by user id 4242" in doctor.stdout
    assert "no problems found" not in doctor.stdout
    assert cli_in(scripts, "list").returncode != 0


def test_a_folder_others_can_write_is_not_used_and_its_values_never_load(scripts, tmp_path):
    shared = tmp_path / "shared"
    victim = tmp_path / "planted-was-loaded"
    plant_one(shared, victim)
    os.chmod(shared, 0o777)
    scripts.write("script.py", SCRIPT_42)
    run = scripts.run(env={"DEVSTASH_CACHE_DIR": str(shared)})
    assert run.stdout.split() == ["computing", "42"]
    assert run.stderr.count("has mode 0777") == 1 and "chmod 700" in run.stderr
    for command in (["show", "x.py"], ["export", str(tmp_path / "out.dstash")], ["list"]):
        proc = cli_in(scripts, *command, env={"DEVSTASH_CACHE_DIR": str(shared)})
        assert proc.returncode != 0, command
    doctor = cli_in(scripts, "doctor", env={"DEVSTASH_CACHE_DIR": str(shared)})
    assert doctor.returncode == 1 and "mode 0777" in doctor.stdout
    assert not victim.exists()


def test_a_symlinked_cache_folder_to_a_planted_store_is_not_followed(scripts, tmp_path):
    target = tmp_path / "elsewhere"
    victim = tmp_path / "planted-was-loaded"
    plant_one(target, victim)
    os.symlink(target, scripts.folder / ".devstash_cache")
    scripts.write("script.py", SCRIPT_42)
    run = scripts.run()
    assert run.stdout.split() == ["computing", "42"]
    assert run.stderr.count("is a symbolic link") == 1
    assert not victim.exists()


def test_a_symlinked_lock_file_is_not_written_through(scripts, tmp_path):
    scripts.write("script.py", SCRIPT_42)
    scripts.run()
    important = tmp_path / "important.txt"
    important.write_text("keep me")
    lock = scripts.folder / ".devstash_cache" / "lock.mdb"
    lock.unlink()
    os.symlink(important, lock)
    run = scripts.run()
    assert run.stdout.split() == ["computing", "42"]
    assert "lock.mdb is a symbolic link" in run.stderr and "rm " in run.stderr
    assert important.read_text() == "keep me"


def test_a_private_folder_is_used(scripts):
    scripts.write("script.py", SCRIPT_42)
    scripts.run()
    assert scripts.run().stdout.split() == ["42"]
    assert _core.check_folder(str(scripts.folder / ".devstash_cache")) is None
    assert oct(os.stat(scripts.folder / ".devstash_cache").st_mode & 0o777) == "0o700"


def test_an_entry_created_in_the_future_is_recomputed(scripts):
    scripts.write("script.py", SCRIPT_42.replace("# @devstash", "# @devstash ttl=1h"))
    scripts.run()
    folder = str(scripts.folder / ".devstash_cache")
    with _core.Store(folder) as store:
        meta = store.entries()[0]
        created, pickled, buffers = store.get(meta["key"])
        store.put(meta["key"], pickled, buffers, created=time.time() + 86400, ttl=3600,
                  callee=meta["callee"], site=meta["site"])
    listing = cli_in(scripts, "list", env={"DEVSTASH_CACHE_DIR": folder})
    assert "created in the future" in listing.stdout
    assert scripts.run().stdout.split() == ["computing", "42"]    # recomputed, not trusted
    assert scripts.run().stdout.split() == ["42"]
