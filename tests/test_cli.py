"""The devstash command, run as users run it (`python -m devstash ...` in a
subprocess) against caches filled by real scripts."""
import io
import json
import os
import pickle
import re
import signal
import stat
import subprocess
import sys
import time

import pytest
from conftest import ScriptRunner, line_of

HEADER = """
import devstash
devstash.activate()
"""

SCRIPT = HEADER + """
import os

def slow(x):
    print("computing", x)
    return {"x": x, "text": f"hello world {x}", "tag": os.environ.get("TAG", "")}

def load_rows(n):
    print("loading", n)
    return list(range(n))

a = slow(1)  # @devstash ttl=1h
b = slow(2)  # @devstash
rows = load_rows(1000)  # @devstash
print("done", a["x"], b["x"], len(rows), a["text"], a["tag"])
"""


def base_env(folder, env=None):
    full = {k: v for k, v in os.environ.items() if not k.startswith("DEVSTASH_")}
    full["XDG_CONFIG_HOME"] = str(folder / "config")   # the signing key of this test
    full.update(env or {})
    return full


def cli(folder, *args, env=None, code=0):
    """Runs `python -m devstash args` in folder; checks the exit status."""
    proc = subprocess.run([sys.executable, "-m", "devstash", *args], cwd=folder,
                          env=base_env(folder, env), capture_output=True, text=True, timeout=120)
    assert proc.returncode == code, (
        f"devstash {' '.join(args)} exited with {proc.returncode}, not {code}\n"
        f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    return proc


def run(scripts, *args, env=None):
    return scripts.run("script.py", *args, env=base_env(scripts.folder, env))


def listing(folder, *args, env=None):
    return json.loads(cli(folder, "list", "--json", *args, env=env).stdout)


@pytest.fixture
def filled(scripts):
    """A folder whose cache holds the three entries of SCRIPT, each hit once."""
    path = scripts.write("script.py", SCRIPT)
    assert "computing 1" in run(scripts).stdout
    assert "computing" not in run(scripts).stdout
    scripts.path = path
    return scripts


def cache(folder):
    return folder / ".devstash_cache"


def plant(folder, entries):
    """Writes entries straight into the store of folder: (key, value,
    created, ttl, callee, site, hits_at). For ages and hit times a script
    cannot produce without waiting."""
    from devstash import _core

    with _core.Store(str(cache(folder))) as store:
        for key, value, created, ttl, callee, site, hit_at in entries:
            store.put(key, pickle.dumps(value, protocol=5), created=created, ttl=ttl,
                      compute=0.5, callee=callee, site=site)
            if hit_at:
                store.note_hit(key, hit_at)


def k(first, rest=0):
    return bytes([first]) + rest.to_bytes(15, "big")


# ---- list --------------------------------------------------------------------

def test_list_shows_one_row_per_entry(filled):
    out = cli(filled.folder, "list").stdout.splitlines()
    assert out[0].split() == ["KEY", "CALLEE", "SITE", "SIZE", "AGE", "TTL", "HITS"]
    rows = out[1:-1]
    assert len(rows) == 3
    line_a = line_of(filled.path, "a = slow(1)")
    row_a = next(r for r in rows if f"script.py:{line_a} " in r)
    assert re.match(r"[0-9a-f]{12}  __main__\.slow ", row_a)
    assert re.search(r"expires in 5\dmin +1$", row_a)
    row_rows = next(r for r in rows if "__main__.load_rows" in r)
    assert re.search(r"\d\.\d KiB .* valid +1$", row_rows)
    assert out[-1].startswith("3 entries, ")


def test_list_json_for_scripts(filled):
    entries = listing(filled.folder)
    assert [e["callee"] for e in entries] == ["__main__.slow", "__main__.slow", "__main__.load_rows"]
    first = entries[0]
    assert re.fullmatch(r"[0-9a-f]{32}", first["key"])
    assert first["site"] == f"{filled.path}:{line_of(filled.path, 'a = slow(1)')}"
    assert first["ttl"] == 3600 and first["expired"] is False and first["hits"] == 1
    assert entries[1]["ttl"] is None and entries[1]["expires"] is None
    assert all(e["size"] > 0 and e["last_hit"] >= e["created"] for e in entries)


def test_list_filters(filled):
    folder = filled.folder
    assert [e["callee"] for e in listing(folder, "--pattern", "*load*")] == ["__main__.load_rows"]
    assert len(listing(folder, "--pattern", "load_rows")) == 1   # the short name matches too
    assert len(listing(folder, "--pattern", "script.py:*")) == 3
    line_b = line_of(filled.path, "b = slow(2)")
    only_b = listing(folder, "--site", f"script.py:{line_b}")
    assert len(only_b) == 1 and only_b[0]["line"] == line_b
    assert len(listing(folder, "--site", "script.py")) == 3
    assert listing(folder, "--site", "other.py") == []
    assert listing(folder, "--expired") == []
    now = time.time()
    plant(folder, [(k(1), "old", now - 7200, 3600.0, "mod.old", f"{folder}/old.py:3", 0)])
    expired = listing(folder, "--expired")
    assert [e["callee"] for e in expired] == ["mod.old"]
    text = cli(folder, "list", "--expired").stdout
    assert "old.py:3" in text and " expired " in text and "2h" in text
    assert cli(folder, "list", "--pattern", "nothing*").stdout == "no entry matches\n"


def test_list_missing_and_empty_cache(scripts):
    folder = scripts.folder
    proc = cli(folder, "list")
    assert proc.stdout == f"no cache at {cache(folder)} (nothing cached yet)\n"
    assert not cache(folder).exists()   # listing never creates the folder
    assert listing(folder) == []
    from devstash import _core

    _core.Store(str(cache(folder))).close()
    assert cli(folder, "list").stdout == f"no entries in {cache(folder)}\n"
    assert listing(folder) == []
    assert "no cache at" in cli(folder, "stats", "--cache-dir", str(folder / "none")).stdout


# ---- show --------------------------------------------------------------------

def test_show_by_unique_prefix(filled):
    entry = listing(filled.folder, "--site", f"script.py:{line_of(filled.path, 'a = slow(1)')}")[0]
    out = cli(filled.folder, "show", entry["key"][:8]).stdout
    fields = dict(line.split(None, 1) for line in out.splitlines())
    assert fields["key"] == entry["key"]
    assert fields["callee"] == "__main__.slow"
    assert fields["type"] == "dict"
    assert fields["value"] == "{'x': 1, 'text': 'hello world 1', 'tag': ''}"
    assert fields["ttl"].startswith("1h (expires in 59min")
    assert fields["hits"].startswith("1 (last ")
    assert cli(filled.folder, "show", entry["key"].upper()).stdout == out


def test_show_long_value_is_truncated(filled):
    entry = listing(filled.folder, "--pattern", "load_rows")[0]
    fields = dict(line.split(None, 1) for line in cli(filled.folder, "show", entry["key"]).stdout.splitlines())
    assert fields["type"] == "list"
    assert fields["value"] == "[0, 1, 2, 3, 4, 5, 6, 7, ...]"


def test_show_bad_unknown_and_ambiguous_keys(scripts):
    folder = scripts.folder
    assert cli(folder, "show", "ab", code=1).stderr == \
        f"devstash: no entry with key ab (no cache at {cache(folder)})\n"
    plant(folder, [(k(0xAB, 1), 1, time.time(), 0.0, "m.f", "x.py:1", 0),
                   (k(0xAB, 2), 2, time.time(), 0.0, "m.f", "x.py:1", 0)])
    err = cli(folder, "show", "ab", code=1).stderr
    assert err == "devstash: key prefix ab matches 2 entries; give more digits\n"
    assert cli(folder, "show", "cd", code=1).stderr == "devstash: no entry with key cd\n"
    err = cli(folder, "show", "xyz", code=1).stderr
    assert err.startswith("devstash: not a key: 'xyz'") and err.count("\n") == 1
    out = cli(folder, "show", k(0xAB, 1).hex()).stdout
    assert "type     int\n" in out and "value    not loaded: " in out


def test_show_value_that_fails_to_unpickle(scripts):
    scripts.write("helper.py", "class Thing:\n    def __init__(self, v):\n        self.v = v\n")
    path = scripts.write("script.py", HEADER + """
from helper import Thing

class Local:
    pass

def make(v):
    return Thing(v)

def local():
    return Local()

t = make(5)  # @devstash
l = local()  # @devstash
print(t.v)
""")
    run(scripts)
    site = listing(scripts.folder, "--pattern", "make")[0]

    def show(key, *args):
        out = cli(scripts.folder, "show", key, *args).stdout
        return dict(line.split(None, 1) for line in out.splitlines())

    fields = show(site["key"])   # read from the pickle's opcodes, nothing loaded
    assert fields["type"] == "helper.Thing" and fields["value"].startswith("not loaded: ")
    assert f"devstash show --load {site['key'][:12]}" in fields["value"]
    fields = show(site["key"], "--load")
    assert fields["type"] == "helper.Thing"     # the script's folder is on sys.path
    assert fields["value"].startswith("<helper.Thing object at ")
    (scripts.folder / "helper.py").write_text("class Renamed:\n    pass\n")
    fields = show(site["key"], "--load")
    assert fields["value"].startswith("cannot be unpickled: AttributeError: ")
    assert "Thing" in fields["value"] and "type" not in fields
    assert show(site["key"])["type"] == "helper.Thing"
    local = listing(scripts.folder, "--pattern", "local")[0]
    assert show(local["key"])["type"] == "__main__.Local"
    out = cli(scripts.folder, "show", local["key"], "--load").stdout
    assert "it holds __main__.Local, a class defined in the script itself" in out
    assert path.exists()


# ---- clear -------------------------------------------------------------------

def test_clear_needs_a_selector(filled):
    proc = cli(filled.folder, "clear", code=2)
    assert "--all" in proc.stderr and "usage: devstash clear" in proc.stderr
    assert "--all" in cli(filled.folder, "clear", "--all", "--expired", code=2).stderr
    assert len(listing(filled.folder)) == 3


def test_clear_bad_duration(filled):
    err = cli(filled.folder, "clear", "--older-than", "2x", code=2).stderr
    assert "argument --older-than: invalid duration '2x'" in err
    assert "must be longer than zero" in cli(filled.folder, "clear", "--older-than", "0s", code=2).stderr


def test_clear_by_site_then_the_script_recomputes_only_that(filled):
    line_b = line_of(filled.path, "b = slow(2)")
    size = listing(filled.folder, "--site", f"script.py:{line_b}")[0]["size"]
    out = cli(filled.folder, "clear", "--site", f"script.py:{line_b}").stdout
    assert out == f"removed 1 entry ({size} B) from {cache(filled.folder)}\n"
    assert len(listing(filled.folder)) == 2
    assert run(filled).stdout.splitlines()[0] == "computing 2"


def test_clear_by_pattern_age_and_expiry(filled):
    folder = filled.folder
    now = time.time()
    plant(folder, [(k(1), "a" * 100, now - 3 * 86400, 0.0, "mod.old", "old.py:1", 0),
                   (k(2), "b", now - 7200, 3600.0, "mod.stale", "old.py:2", 0)])
    assert cli(folder, "clear", "--older-than", "2d").stdout.startswith("removed 1 entry (")
    assert cli(folder, "clear", "--expired").stdout.startswith("removed 1 entry (")
    assert len(listing(folder)) == 3
    out = cli(folder, "clear", "--pattern", "*slow").stdout
    assert out.startswith("removed 2 entries (")
    assert [e["callee"] for e in listing(folder)] == ["__main__.load_rows"]
    assert cli(folder, "clear", "--pattern", "*slow").stdout.startswith("removed 0 entries (0 B)")


def test_clear_all(filled):
    total = sum(e["size"] for e in listing(filled.folder))
    out = cli(filled.folder, "clear", "--all").stdout
    assert out == f"removed 3 entries ({total / 1024:.1f} KiB) from {cache(filled.folder)}\n"
    assert cli(filled.folder, "list").stdout == f"no entries in {cache(filled.folder)}\n"
    assert run(filled).stdout.splitlines()[:3] == ["computing 1", "computing 2", "loading 1000"]
    assert len(listing(filled.folder)) == 3


def test_clear_on_missing_cache(scripts):
    assert "nothing to clear" in cli(scripts.folder, "clear", "--all").stdout
    assert not cache(scripts.folder).exists()


# ---- compact -------------------------------------------------------------------

def test_compact_shrinks_and_old_readers_keep_working(filled):
    folder = filled.folder
    big = [(k(9, i), bytes(20000), time.time(), 0.0, "m.big", "big.py:1", 0) for i in range(200)]
    plant(folder, big)
    cli(folder, "clear", "--pattern", "m.big")
    key = bytes.fromhex(listing(folder, "--pattern", "load_rows")[0]["key"])
    # A process that had the store open before the swap.
    reader = subprocess.Popen(
        [sys.executable, "-c", f"""
import sys
from devstash import _core
s = _core.Store(sys.argv[1])
print(len(s.get({key!r})[1]), flush=True)
sys.stdin.readline()
print(len(s.get({key!r})[1]), s.count(), flush=True)
""", str(cache(folder))],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=base_env(folder), cwd=folder)
    first = reader.stdout.readline()
    out = cli(folder, "compact").stdout
    m = re.fullmatch(r"compacted (.*): ([\d.]+) (\w+) -> ([\d.]+) (\w+) \(3 entries\)\n", out)
    assert m and m.group(1) == str(cache(folder))
    units = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2}
    before = float(m.group(2)) * units[m.group(3)]
    after = float(m.group(4)) * units[m.group(5)]
    assert after < before / 4
    # New processes see the compacted store while the old reader still holds
    # the old files (and the old lock file) open.
    assert len(listing(folder)) == 3
    assert "computing" not in run(filled).stdout
    reader.stdin.write("\n")
    reader.stdin.flush()
    second = reader.stdout.readline()
    assert reader.wait(timeout=60) == 0
    reader.stdin.close()
    reader.stdout.close()
    assert second.split() == [first.strip(), "3"]
    assert not [p for p in os.listdir(cache(folder)) if p.startswith(".compact-")]
    assert listing(folder, "--pattern", "load_rows")[0]["hits"] == 2
    assert "nothing to compact" in cli(folder, "compact", "--cache-dir", "elsewhere").stdout


def test_a_killed_compact_leaves_nothing_behind_for_long(filled):
    """A compact killed midway leaves a whole copy of the store in a
    .compact-* folder: the next open, doctor or compact removes it, unless a
    live compact still owns it."""
    import signal

    folder = filled.folder
    plant(folder, [(k(8, i), bytes(200_000), time.time(), 0.0, "m.big", "big.py:1", 0) for i in range(1500)])

    def killed_compact():
        proc = subprocess.Popen([sys.executable, "-m", "devstash", "compact"], cwd=folder,
                                env=base_env(folder), stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            left = [p for p in cache(folder).glob(".compact-*") if (p / "data.mdb").exists()]
            if left and (left[0] / "data.mdb").stat().st_size > 1 << 20:
                proc.kill()
                proc.wait()
                return left[0]
        proc.kill()
        proc.wait()
        raise AssertionError("compact never started its copy")

    def age(path):   # past the grace of a folder compact has only just made
        past = time.time() - 60
        os.utime(path, (past, past))

    left = killed_compact()
    assert (left / "data.mdb").stat().st_size > 1 << 20
    # A live compact's folder (it holds the flock) is never touched.
    live = cache(folder) / ".compact-live"
    live.mkdir()
    age(live)
    holder = subprocess.Popen([sys.executable, "-c", f"""
import fcntl, os, sys, time
fd = os.open({str(live / "owner.lock")!r}, os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(60)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        age(left)
        run(filled)   # the next open of the cache by a script
        assert not left.exists() and live.exists()
        left = killed_compact()
        age(left)
        out = cli(folder, "doctor").stdout
        assert "removed 1 leftover copy of the store" in out and not left.exists()
        left = killed_compact()
        age(left)
        out = cli(folder, "compact").stdout
        assert out.startswith("removed 1 leftover copy of an interrupted compact")
        assert not left.exists() and live.exists()
    finally:
        holder.kill()
        holder.communicate()
    assert run(filled).stdout.splitlines() == ["done 1 2 1000 hello world 1 "]


# ---- stats and prune ------------------------------------------------------------

def test_stats(filled):
    entries = listing(filled.folder)
    stats = json.loads(cli(filled.folder, "stats", "--json").stdout)
    assert stats["entries"] == 3 and stats["hits"] == 3 and stats["sites"] == 3
    assert stats["size"] == sum(e["size"] for e in entries)
    assert stats["saved"] == pytest.approx(sum(e["compute"] * e["hits"] for e in entries))
    text = cli(filled.folder, "stats").stdout
    assert "entries     3 from 3 call sites (0 expired)" in text
    assert re.search(r"hits        3\ntime saved  [\d.]+ (ms|s)\n", text)


def test_prune_drops_least_recently_hit_first(scripts):
    folder = scripts.folder
    now = time.time()
    value = bytes(1000)
    plant(folder, [(k(1), value, now - 30, 0.0, "m.a", "a.py:1", now - 5),     # hit last
                   (k(2), value, now - 20, 0.0, "m.b", "a.py:2", 0),           # never hit
                   (k(3), value, now - 10, 0.0, "m.c", "a.py:3", now - 9),     # hit earlier
                   (k(4), value, now - 40, 0.0, "m.d", "a.py:4", 0)])          # never, oldest
    size = listing(folder)[0]["size"]
    out = cli(folder, "prune", "--max-size", str(2 * size)).stdout
    assert out.startswith("removed 2 entries (")
    assert sorted(e["callee"] for e in listing(folder)) == ["m.a", "m.c"]
    cli(folder, "prune", "--max-size", str(size))
    assert [e["callee"] for e in listing(folder)] == ["m.a"]
    assert cli(folder, "prune", "--max-size", "2G").stdout.startswith("nothing to prune: ")
    assert "invalid size '2Q'" in cli(folder, "prune", "--max-size", "2Q", code=2).stderr
    assert "--max-size" in cli(folder, "prune", code=2).stderr


# ---- export and import -------------------------------------------------------------

def teammate(scripts, name="b"):
    """Another folder with the same script: a teammate's checkout."""
    other = ScriptRunner(scripts.folder / name)
    other.path = other.write("script.py", SCRIPT)
    return other


def test_export_then_import_gives_hits_elsewhere(filled):
    out = cli(filled.folder, "export", "team.dsx").stdout
    assert re.fullmatch(r"exported 3 entries \(.*\) to team\.dsx, signed with .*secret \(created now\)\n", out)
    export = filled.folder / "team.dsx"
    assert export.read_bytes().startswith(b"DEVSTASH-EXPORT\n")
    key_file = filled.folder / "config" / "devstash" / "secret"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    secret = key_file.read_text()
    other = teammate(filled)
    other_env = {"XDG_CONFIG_HOME": str(filled.folder / "config")}   # same user
    out = cli(other.folder, "import", str(export), env=other_env).stdout
    assert out.startswith("imported 3 entries (") and "kept" not in out
    assert run(other).stdout == "done 1 2 1000 hello world 1 \n"   # no "computing": hits
    sites = {e["site"] for e in listing(other.folder)}
    assert f"{other.path}:{line_of(other.path, 'a = slow(1)')}" in sites   # relocated
    out = cli(other.folder, "import", str(export), env=other_env).stdout
    assert out.startswith("imported 0 entries (0 B)") and "kept 3 local entries" in out
    assert key_file.read_text() == secret   # the key is created once


def test_export_takes_the_list_filters(filled):
    out = cli(filled.folder, "export", "rows.dsx", "--pattern", "*load*").stdout
    assert out.startswith("exported 1 entry (")
    third = teammate(filled, "c")
    env = {"XDG_CONFIG_HOME": str(filled.folder / "config")}
    cli(third.folder, "import", str(filled.folder / "rows.dsx"), env=env)
    out = run(third).stdout
    assert "computing 1" in out and "computing 2" in out and "loading" not in out


def test_import_never_overwrites_a_newer_entry(filled):
    cli(filled.folder, "export", "old.dsx")
    other = teammate(filled)
    env = {"XDG_CONFIG_HOME": str(filled.folder / "config")}
    assert "computing 1" in run(other, env={"TAG": "mine"}).stdout    # newer than the export
    out = cli(other.folder, "import", str(filled.folder / "old.dsx"), env=env).stdout
    assert out.startswith("imported 0 entries") and "kept 3 local entries" in out
    assert run(other).stdout.endswith("hello world 1 mine\n")
    # An export newer than the local entries replaces them.
    cli(filled.folder, "clear", "--all")
    run(filled, env={"TAG": "theirs"})
    cli(filled.folder, "export", "new.dsx")
    out = cli(other.folder, "import", str(filled.folder / "new.dsx"), env=env).stdout
    assert out.startswith("imported 3 entries")
    assert run(other).stdout.endswith("hello world 1 theirs\n")


def test_tampered_export_is_refused_unless_trusted(filled):
    cli(filled.folder, "export", "team.dsx")
    export = filled.folder / "team.dsx"
    data = export.read_bytes()
    assert data.count(b'"ttl":3600.0') == 1    # in the metadata of slow(1)'s entry
    export.write_bytes(data.replace(b'"ttl":3600.0', b'"ttl":7200.0'))
    other = teammate(filled)
    env = {"XDG_CONFIG_HOME": str(filled.folder / "config")}
    proc = cli(other.folder, "import", str(export), env=env, code=1)
    assert proc.stdout == ""    # refused as a whole
    assert proc.stderr == (
        f"devstash: refused {export}: its signature does not verify (its entries do not match its "
        "signed trailer: entries were dropped, added or changed after export); nothing was "
        "imported; pass --trust to import its entries anyway\n")
    assert listing(other.folder) == []
    proc = cli(other.folder, "import", "--trust", str(export), env=env)
    assert proc.stdout.startswith("imported 3 entries")
    assert "1 not verified, imported because of --trust" in proc.stdout
    assert {e["ttl"] for e in listing(other.folder)} == {None, 7200.0}
    assert run(other).stdout == "done 1 2 1000 hello world 1 \n"


def test_wrong_secret_is_refused(filled):
    team_a, team_b = "team-a-secret-0123456789", "team-b-secret-0123456789"
    cli(filled.folder, "export", "team.dsx", env={"DEVSTASH_SECRET": team_a})
    export = str(filled.folder / "team.dsx")
    other = teammate(filled)
    proc = cli(other.folder, "import", export, env={"DEVSTASH_SECRET": team_b}, code=1)
    assert f"refused {export}: its signature does not verify (the file was signed with another " \
           "secret than $DEVSTASH_SECRET" in proc.stderr
    assert listing(other.folder) == []
    # No secret at all here (no key file, no variable): nothing verifies.
    proc = cli(other.folder, "import", export, code=1)
    assert "there is no signing secret here" in proc.stderr
    assert not (other.folder / "config" / "devstash" / "secret").exists()
    cli(other.folder, "import", export, env={"DEVSTASH_SECRET": team_a})
    assert run(other).stdout == "done 1 2 1000 hello world 1 \n"


def test_import_bad_files(filled):
    folder = filled.folder
    (folder / "junk.dsx").write_bytes(b"not an export at all")
    assert cli(folder, "import", "junk.dsx", code=1).stderr == "devstash: junk.dsx is not a devstash export\n"
    assert cli(folder, "import", "absent.dsx", code=1).stderr.startswith("devstash: cannot read absent.dsx: ")
    cli(folder, "export", "team.dsx")
    data = (folder / "team.dsx").read_bytes()
    (folder / "cut.dsx").write_bytes(data[: len(data) // 2])
    other = teammate(filled)
    env = {"XDG_CONFIG_HOME": str(folder / "config")}
    err = cli(other.folder, "import", str(folder / "cut.dsx"), env=env, code=1).stderr
    assert err == f"devstash: {folder / 'cut.dsx'} is truncated or damaged; nothing was imported\n"


def test_export_of_missing_cache_is_empty(scripts):
    out = cli(scripts.folder, "export", "none.dsx").stdout
    assert out.startswith("exported 0 entries (0 B) to none.dsx")
    assert cli(scripts.folder, "import", "none.dsx", "--cache-dir", "c2").stdout.startswith(
        "imported 0 entries")


# ---- doctor --------------------------------------------------------------------------

def test_doctor_on_a_missing_and_a_healthy_cache(filled, tmp_path):
    out = cli(filled.folder, "doctor", "--cache-dir", str(tmp_path / "nothing")).stdout
    assert "no cache folder yet: nothing is cached" in out and out.endswith("no problems found\n")
    out = cli(filled.folder, "doctor").stdout
    assert "ok       the store opens: 3 entries" in out
    assert "no reader slots left by dead processes" in out
    assert out.endswith("no problems found\n")


def test_doctor_on_a_corrupt_store_then_clear_all_fixes_it(filled):
    data = cache(filled.folder) / "data.mdb"
    data.write_bytes(os.urandom(64 * 1024))
    proc = cli(filled.folder, "doctor", code=1)
    assert "problem  data.mdb is damaged: " in proc.stdout and "MDB_INVALID" in proc.stdout
    assert "fix    devstash clear --all" in proc.stdout
    assert "devstash doctor" in cli(filled.folder, "list", code=1).stderr
    assert "damaged" in cli(filled.folder, "clear", "--all").stdout
    assert cli(filled.folder, "doctor").stdout.endswith("no problems found\n")
    assert "computing 1" in run(filled).stdout


def test_doctor_clears_readers_of_dead_processes(filled):
    folder = str(cache(filled.folder))
    # LMDB resets the reader table when the first process opens the store,
    # so a slot only stays stale while another process holds the store open.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom devstash import _core\n"
         "s = _core.Store(sys.argv[1]); s.count(); print('open', flush=True); sys.stdin.read()",
         folder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=base_env(filled.folder), cwd=filled.folder)
    try:
        assert holder.stdout.readline() == "open\n"
        killed = subprocess.run(
            [sys.executable, "-c", "import os, signal, sys\nfrom devstash import _core\n"
             "s = _core.Store(sys.argv[1]); s.count(); os.kill(os.getpid(), signal.SIGKILL)", folder],
            env=base_env(filled.folder), cwd=filled.folder)
        assert killed.returncode == -signal.SIGKILL
        out = cli(filled.folder, "doctor").stdout
        assert "cleared 1 reader slot that dead processes had left in lock.mdb" in out
        assert "no reader slots left" in cli(filled.folder, "doctor").stdout
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
        holder.stdout.close()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to any folder")
def test_doctor_on_a_read_only_folder(filled):
    folder = cache(filled.folder)
    folder.chmod(0o500)
    try:
        out = cli(filled.folder, "doctor", code=1).stdout
        assert "problem  the folder is read-only for you" in out
        assert f"chmod u+rwx {folder}" in out
    finally:
        folder.chmod(0o700)


def test_doctor_on_a_file_instead_of_a_folder(scripts):
    (scripts.folder / "notadir").write_text("x")
    out = cli(scripts.folder, "doctor", "--cache-dir", "notadir", code=1).stdout
    assert "notadir is not a folder" in out


def test_doctor_flags_a_loose_key_file(filled):
    cli(filled.folder, "export", "x.dsx")
    (filled.folder / "config" / "devstash" / "secret").chmod(0o644)
    out = cli(filled.folder, "doctor", code=1).stdout
    assert "is readable or writable by others" in out and "chmod 600" in out


# ---- the command line ---------------------------------------------------------------

def test_cache_dir_option_and_variable(filled):
    other = filled.folder / "elsewhere"
    run(filled, env={"DEVSTASH_CACHE_DIR": str(other)})
    assert len(listing(filled.folder, "--cache-dir", str(other))) == 3
    assert len(json.loads(cli(filled.folder, "--cache-dir", str(other), "list", "--json").stdout)) == 3
    assert len(listing(filled.folder, env={"DEVSTASH_CACHE_DIR": str(other)})) == 3
    cli(filled.folder, "--cache-dir", str(other), "clear", "--all")
    assert len(listing(filled.folder)) == 3    # the default cache is untouched
    assert listing(filled.folder, "--cache-dir", str(other)) == []


def test_run_still_passes_everything_to_the_script(scripts):
    scripts.write("plain.py", """
import sys
def slow(x):
    print("computing", x)
    return x
v = slow(3)  # @devstash
print("args", sys.argv[1:])
""")
    out = cli(scripts.folder, "run", "plain.py", "--json", "-m", "x").stdout
    assert out == "computing 3\nargs ['--json', '-m', 'x']\n"
    assert cli(scripts.folder, "run", "plain.py").stdout == "args []\n"
    out = cli(scripts.folder, "--cache-dir", "other", "run", "plain.py", "list").stdout
    assert out == "computing 3\nargs ['list']\n"
    assert len(listing(scripts.folder, "--cache-dir", "other")) == 1


def test_usage_errors_exit_2(scripts):
    assert cli(scripts.folder, code=2).stderr.startswith("usage: devstash")
    assert "invalid choice: 'bogus'" in cli(scripts.folder, "bogus", code=2).stderr
    assert "unrecognized arguments: --bogus" in cli(scripts.folder, "list", "--bogus", code=2).stderr


def test_import_devstash_does_not_load_the_command(scripts):
    out = subprocess.run([sys.executable, "-c", "import sys, devstash; "
                          "print(sorted(m for m in sys.modules if m.startswith('devstash')))"],
                         cwd=scripts.folder, capture_output=True, text=True, check=True).stdout
    assert out == "['devstash']\n"


# ---- helpers, in process ---------------------------------------------------------------

def test_progress_bar_waits_a_second_and_needs_a_terminal():
    from devstash._cli_common import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    now = [0.0]
    stream = Tty()
    bar = Progress("importing", 200, stream=stream, clock=lambda: now[0])
    bar.update(50)
    assert stream.getvalue() == ""            # not within the first second
    now[0] = 1.5
    bar.update(100)
    assert stream.getvalue() == "\rimporting [" + "#" * 15 + "." * 15 + "]  50%"
    now[0] = 1.55
    bar.update(150)                           # redrawn at most 10 times a second
    assert stream.getvalue().count("\r") == 1
    bar.close()
    assert stream.getvalue().endswith("\r")
    plain = io.StringIO()
    bar = Progress("exporting", 10, stream=plain, clock=lambda: now[0])
    now[0] = 10.0
    bar.update(5)
    bar.close()
    assert plain.getvalue() == ""             # not a terminal: no bar


def test_units():
    from devstash._cli_common import format_age, format_size, parse_size

    assert [format_size(n) for n in (0, 1023, 1024, 1536, 5 * 1024 ** 2, 3 * 1024 ** 3)] == \
        ["0 B", "1023 B", "1.0 KiB", "1.5 KiB", "5.0 MiB", "3.0 GiB"]
    assert [format_age(s) for s in (-3, 0, 59, 60, 3599, 3600 * 3, 86400 * 2 + 5)] == \
        ["0s", "0s", "59s", "1min", "59min", "3h", "2d"]
    assert [parse_size(t) for t in ("2G", "500M", "1.5GiB", "100kb", "4096", "1t")] == \
        [2 * 1024 ** 3, 500 * 1024 ** 2, int(1.5 * 1024 ** 3), 102400, 4096, 1024 ** 4]
