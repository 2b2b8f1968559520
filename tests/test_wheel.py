"""The packages `make wheel` builds into dist/, as a user installs them
(`make test-wheel` builds them and runs these; `make test` skips them).

* The repaired wheel installs into a fresh venv and runs the quickstart
  twice with the system's LMDB hidden: its extension loads the LMDB that
  auditwheel put in devstash.libs/, never the system's.
* The sdist builds with `pip install` where LMDB's development files are.
* Both carry the metadata an index page shows.
"""
import email
import glob
import json
import os
import platform
import shutil
import subprocess
import sys
import zipfile

import pytest

WHEEL_DIR = os.environ.get("DEVSTASH_WHEEL_DIR")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(REPO, "examples", "quickstart.py")

pytestmark = pytest.mark.skipif(not WHEEL_DIR, reason="`make test-wheel` builds dist/ and runs these")

TAG = f"cp{sys.version_info[0]}{sys.version_info[1]}"


def the_wheel():
    found = glob.glob(os.path.join(WHEEL_DIR, f"devstash-*-{TAG}-{TAG}-manylinux_*_{platform.machine()}.whl"))
    assert len(found) == 1, f"one manylinux wheel for {TAG} expected in {WHEEL_DIR}: {os.listdir(WHEEL_DIR)}"
    return found[0]


def the_sdist():
    found = glob.glob(os.path.join(WHEEL_DIR, "devstash-*.tar.gz"))
    assert len(found) == 1, os.listdir(WHEEL_DIR)
    return found[0]


def run(cmd, **kwargs):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)
    assert proc.returncode == 0, f"{cmd} exited with {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def fresh_venv(path, package):
    """A venv of this Python holding `package` (a wheel or an sdist) and its
    build's needs only; returns its python."""
    run([sys.executable, "-m", "venv", str(path)])
    python = str(path / "bin" / "python")
    run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", package])
    return python


def extension(python):
    out = run([python, "-c", "import devstash._core as c; print(c.__file__)"], cwd="/").stdout
    return out.strip()


def system_lmdb_files():
    """The real files of every liblmdb the system's loader could find."""
    names = set()
    try:
        listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout
    except OSError:
        listing = ""
    for line in listing.splitlines():
        if "liblmdb" in line and "=>" in line:
            names.add(line.split("=>")[-1].strip())
    for folder in ("/lib", "/usr/lib", "/lib64", "/usr/lib64", "/usr/local/lib",
                   "/lib/*-linux-gnu*", "/usr/lib/*-linux-gnu*", "/usr/local/lib/*-linux-gnu*"):
        names.update(glob.glob(os.path.join(folder, "liblmdb*.so*")))
    return sorted({os.path.realpath(n) for n in names if os.path.exists(n)})


def hiding_prefix(files):
    """A command prefix that runs what follows in a mount namespace where
    every file in `files` is /dev/null (the loader cannot load it), or None
    when this machine allows no such namespace."""
    mounts = " && ".join(f'mount --bind /dev/null "{f}"' for f in files) or "true"
    script = f'{mounts} && exec "$@"'
    for unshare in (["unshare", "--mount", "--propagation", "private"],
                    ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private"]):
        prefix = unshare + ["sh", "-c", script, "sh"]
        try:
            probe = subprocess.run(prefix + ["true"], capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return prefix
    return None


MAPPED_LMDB = (
    "import devstash._core, json\n"
    "maps = open('/proc/self/maps').read().splitlines()\n"
    "print(json.dumps(sorted({l.split()[-1] for l in maps if 'lmdb' in l.split()[-1]})))\n"
)


def test_wheel_metadata():
    with zipfile.ZipFile(the_wheel()) as whl:
        names = whl.namelist()
        info = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(whl.read(info))
        entry_points = whl.read(info.replace("METADATA", "entry_points.txt")).decode()
    assert [n for n in names if n.startswith("devstash.libs/liblmdb")], "LMDB is not bundled"
    assert not [n for n in names if "xxhash" in n], "xxHash is inlined, never a library of its own"
    assert meta["Name"] == "devstash" and meta["Summary"]
    assert meta["Requires-Python"] == ">=3.10"
    assert meta["License"] == "MIT"
    assert meta["Description-Content-Type"] == "text/markdown"
    assert meta.get_payload().startswith("# devstash")
    urls = meta.get_all("Project-URL")
    assert any(u.startswith("Repository, https://") for u in urls), urls
    classifiers = meta.get_all("Classifier")
    for minor in (10, 11, 12, 13):
        assert f"Programming Language :: Python :: 3.{minor}" in classifiers
    assert "devstash = devstash.__main__:main" in entry_points


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="manylinux wheels are Linux's")
def test_wheel_runs_the_quickstart_with_the_system_lmdb_hidden(tmp_path):
    python = fresh_venv(tmp_path / "venv", the_wheel())
    ext = extension(python)
    libs = os.path.join(os.path.dirname(os.path.dirname(ext)), "devstash.libs")
    bundled = glob.glob(os.path.join(libs, "liblmdb*"))
    assert len(bundled) == 1, os.listdir(os.path.dirname(ext))

    def lmdb_lines(prefix=()):
        """(name asked for, real path found) of each LMDB ldd lists."""
        out = run([*prefix, "ldd", ext]).stdout
        found = []
        for line in out.splitlines():
            if "lmdb" in line:
                name, _, rest = line.strip().partition(" => ")
                found.append((name, os.path.realpath(rest.rpartition(" (")[0])))
        return found

    # The extension asks for the bundled library by its own name, and the
    # loader finds it in devstash.libs (the RPATH auditwheel set).
    lines = lmdb_lines()
    assert lines == [(os.path.basename(bundled[0]), os.path.realpath(bundled[0]))], lines

    hidden = system_lmdb_files()
    prefix = hiding_prefix(hidden)
    if prefix is None:
        # No mount namespace here: the loader keeps its system folders, so
        # check what the process maps instead (below) and say so.
        print("test-wheel: no mount namespace on this machine; the system LMDB stays visible,"
              " the mapped files are checked instead")
        prefix = []
    elif hidden:
        # The system's LMDB really is out of the loader's reach...
        probe = subprocess.run(
            [*prefix, python, "-c", f"import ctypes; ctypes.CDLL({hidden[0]!r})"],
            capture_output=True, text=True)
        assert probe.returncode != 0, "the system LMDB is still loadable"
        # ...and ldd still finds the extension's own.
        assert lmdb_lines(prefix) == lines

    mapped = json.loads(run([*prefix, python, "-c", MAPPED_LMDB], cwd=str(tmp_path)).stdout)
    assert [os.path.realpath(m) for m in mapped] == [os.path.realpath(bundled[0])], mapped

    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(QUICKSTART, folder / "quickstart.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEVSTASH_", "PYTHON"))}
    env["PATH"] = os.path.dirname(python) + os.pathsep + env.get("PATH", "")
    first = run([*prefix, python, "quickstart.py"], cwd=str(folder), env=env)
    second = run([*prefix, python, "quickstart.py"], cwd=str(folder), env=env)
    assert first.stdout.split() == ["Running", "slow_function...", "20"], first.stdout + first.stderr
    assert second.stdout.split() == ["20"], second.stdout + second.stderr
    run([*prefix, os.path.join(os.path.dirname(python), "devstash"), "stats"], cwd=str(folder), env=env)


def test_sdist_builds_where_the_libraries_are(tmp_path):
    python = fresh_venv(tmp_path / "venv", the_sdist())
    folder = tmp_path / "project"
    folder.mkdir()
    shutil.copy(QUICKSTART, folder / "quickstart.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEVSTASH_", "PYTHON"))}
    first = run([python, "quickstart.py"], cwd=str(folder), env=env)
    second = run([python, "quickstart.py"], cwd=str(folder), env=env)
    assert first.stdout.split() == ["Running", "slow_function...", "20"]
    assert second.stdout.split() == ["20"]
    assert "usage: devstash" in run([os.path.join(os.path.dirname(python), "devstash"), "--help"]).stdout
    # The control of the wheel's test: built from source, the extension
    # needs the system's LMDB, so hiding it must break the import.
    hidden = system_lmdb_files()
    prefix = hiding_prefix(hidden) if hidden else None
    if prefix is not None:
        proc = subprocess.run([*prefix, python, "-c", "import devstash._core"],
                              capture_output=True, text=True, cwd=str(folder))
        assert proc.returncode != 0 and "lmdb" in proc.stderr, proc.stderr
