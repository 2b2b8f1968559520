"""The cache folder is a security boundary: loading a value unpickles it.
A folder (or a file in it) that another user owns or can write, or a
symbolic link where the folder or its files should be, is never used: the
script runs uncached with one warning that names it and the fix, and the
devstash command refuses it (the tests run as root: other owners are set
with chown, other modes with chmod)."""
import os
import pickle
import subprocess
import sys

from devstash import _core

SCRIPT = """
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


def plant(folder, victim_file):
    """A store in `folder` whose every value would create victim_file."""
    with _core.Store(str(folder)) as store:
        store.put(b"k" * 16, pickle.dumps(Planted(str(victim_file)), protocol=5), site="x.py:1")


def cli(scripts, *args, env=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("DEVSTASH_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "devstash", *args], cwd=scripts.folder,
                          env=full_env, capture_output=True, text=True, timeout=120)


def test_a_folder_another_user_owns_is_not_used(scripts):
    scripts.write("script.py", SCRIPT)
    cache = scripts.folder / ".devstash_cache"
    scripts.run()
    os.chown(cache, 4242, 4242)
    for _ in range(2):
        run = scripts.run()
        assert run.stdout.split() == ["computing", "42"]
        assert run.stderr.count("owned by user id 4242") == 1
        assert "runs uncached" in run.stderr or "running uncached" in run.stderr
    doctor = cli(scripts, "doctor")
    assert doctor.returncode == 1 and "owned by user id 4242" in doctor.stdout
    assert "no problems found" not in doctor.stdout
    assert cli(scripts, "list").returncode != 0


def test_a_folder_others_can_write_is_not_used_and_its_values_never_load(scripts, tmp_path):
    shared = tmp_path / "shared"
    victim = tmp_path / "planted-was-loaded"
    plant(shared, victim)
    os.chmod(shared, 0o777)
    scripts.write("script.py", SCRIPT)
    run = scripts.run(env={"DEVSTASH_CACHE_DIR": str(shared)})
    assert run.stdout.split() == ["computing", "42"]
    assert run.stderr.count("has mode 0777") == 1 and "chmod 700" in run.stderr
    for command in (["show", "x.py"], ["export", str(tmp_path / "out.dstash")], ["list"]):
        proc = cli(scripts, *command, env={"DEVSTASH_CACHE_DIR": str(shared)})
        assert proc.returncode != 0, command
    doctor = cli(scripts, "doctor", env={"DEVSTASH_CACHE_DIR": str(shared)})
    assert doctor.returncode == 1 and "mode 0777" in doctor.stdout
    assert not victim.exists()


def test_a_symlinked_cache_folder_is_not_followed(scripts, tmp_path):
    target = tmp_path / "elsewhere"
    victim = tmp_path / "planted-was-loaded"
    plant(target, victim)
    os.symlink(target, scripts.folder / ".devstash_cache")
    scripts.write("script.py", SCRIPT)
    run = scripts.run()
    assert run.stdout.split() == ["computing", "42"]
    assert run.stderr.count("is a symbolic link") == 1
    assert not victim.exists()


def test_a_symlinked_lock_file_is_not_written_through(scripts, tmp_path):
    scripts.write("script.py", SCRIPT)
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
    scripts.write("script.py", SCRIPT)
    scripts.run()
    assert scripts.run().stdout.split() == ["42"]
    assert _core.check_folder(str(scripts.folder / ".devstash_cache")) is None
    assert oct(os.stat(scripts.folder / ".devstash_cache").st_mode & 0o777) == "0o700"


def test_an_entry_created_in_the_future_counts_as_expired(scripts):
    import time

    scripts.write("script.py", SCRIPT.replace("# @devstash", "# @devstash ttl=1h"))
    scripts.run()
    folder = str(scripts.folder / ".devstash_cache")
    with _core.Store(folder) as store:
        meta = store.entries()[0]
        created, pickled, buffers = store.get(meta["key"])
        store.put(meta["key"], pickled, buffers, created=time.time() + 86400, ttl=3600,
                  callee=meta["callee"], site=meta["site"])
    listing = cli(scripts, "list", env={"DEVSTASH_CACHE_DIR": folder})
    assert "created in the future" in listing.stdout
    assert scripts.run().stdout.split() == ["computing", "42"]    # recomputed, not trusted
    assert scripts.run().stdout.split() == ["42"]
