"""Tests of the LMDB store (csrc/store.c) through devstash._core.Store."""
import os
import pickle
import random
import signal
import stat
import subprocess
import sys
import textwrap
import time
import traceback

import numpy as np
import pytest

from devstash import _core

Store = _core.Store


def key(i):
    return i.to_bytes(16, "big")


# Child interpreters must import the devstash under test, not a source tree
# that happens to be their working directory.
_IMPORT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(_core.__file__)))
_CHILD_ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(
    [_IMPORT_ROOT] + [os.path.abspath(p) for p in
                      os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))


def spawn(code, *args, **kwargs):
    """Starts code in a fresh interpreter that imports the same devstash."""
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                            env=_CHILD_ENV, cwd="/", **kwargs)


def run_python(code, *args):
    proc = spawn(code, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    return out


@pytest.fixture
def store(tmp_path):
    with Store(str(tmp_path / "cache")) as s:
        yield s


# ---- values -----------------------------------------------------------------

def test_round_trip_in_band(store):
    value = {"a": [1, 2.5, "x"], "b": b"\x00" * 100}
    p = pickle.dumps(value, protocol=5)
    store.put(key(1), p, created=123.5)
    created, pickled, buffers = store.get(key(1))
    assert created == 123.5
    assert pickled == p
    assert buffers == []
    assert pickle.loads(pickled) == value
    assert store.get(key(2)) is None


def test_round_trip_out_of_band(store):
    arrays = [np.arange(1000, dtype=np.float64), np.ones((3, 4), dtype=np.int32, order="F"),
              np.zeros(0, dtype=np.uint8)]
    buffers = []
    p = pickle.dumps(arrays, protocol=5, buffer_callback=buffers.append)
    assert len(buffers) >= 2   # really out of band
    store.put(key(1), p, buffers)
    created, pickled, got = store.get(key(1))
    assert abs(created - time.time()) < 60
    assert pickled == p
    assert all(isinstance(b, bytearray) for b in got)
    assert [bytes(b) for b in got] == [bytes(b.raw()) for b in buffers]
    back = pickle.loads(pickled, buffers=got)
    for a, b in zip(arrays, back):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype


def test_buffers_of_any_buffer_type(store):
    store.put(key(1), b"p", [b"abc", bytearray(b""), memoryview(b"0123456789")[2:5]])
    assert store.get(key(1))[2] == [bytearray(b"abc"), bytearray(), bytearray(b"234")]
    with pytest.raises(BufferError):
        store.put(key(2), b"p", [memoryview(b"0123456789")[::2]])
    with pytest.raises(TypeError):
        store.put(key(2), b"p", [object()])
    assert store.get(key(2)) is None


def test_overwrite(store):
    store.put(key(1), b"one", [b"1" * 5000])
    store.put(key(1), b"two")
    assert store.get(key(1))[1:] == (b"two", [])
    assert store.count() == 1


def test_keys_must_be_16_bytes(store):
    for bad in (b"", b"x" * 15, b"x" * 17):
        with pytest.raises(ValueError):
            store.get(bad)
        with pytest.raises(ValueError):
            store.put(bad, b"p")
        with pytest.raises(ValueError):
            store.note_hit(bad, 1.0)
    with pytest.raises(TypeError):
        store.get("x" * 16)
    assert store.get(bytearray(16)) is None


# ---- metadata, hits, delete, listing ----------------------------------------

def test_meta_fields(store):
    site = "/home/someone/projects/analysis/notebooks/script.py:42"
    store.put(key(7), b"x" * 30, [b"y" * 12], created=1000.25, ttl=1800.0, compute=2.5,
              callee="__main__.slow_function", site=site)
    m = store.meta(key(7))
    assert m == {"key": key(7), "callee": "__main__.slow_function", "site": site,
                 "created": 1000.25, "ttl": 1800.0, "size": 42, "compute": 2.5,
                 "hits": 0, "last_hit": 0.0}
    store.put(key(8), b"z", callee="f", site="a:1")   # short strings: stored inline
    m = store.meta(key(8))
    assert (m["callee"], m["site"], m["ttl"], m["compute"], m["size"]) == ("f", "a:1", 0.0, 0.0, 1)
    store.put(key(9), b"z", callee="g\u00e9", site="\u00e9t\u00e9.py:3")
    assert store.meta(key(9))["callee"] == "g\u00e9"
    assert store.meta(key(9))["site"] == "\u00e9t\u00e9.py:3"
    assert store.meta(key(10)) is None
    with pytest.raises(ValueError):
        store.put(key(11), b"z", callee="a\0b")


def test_hits_counted_in_memory_then_flushed(tmp_path):
    path = str(tmp_path / "cache")
    s = Store(path)
    s.put(key(1), b"v")
    s.note_hit(key(1), 50.0)
    s.note_hit(key(1), 40.0)
    assert s.meta(key(1))["hits"] == 2      # pending hits are shown
    assert s.meta(key(1))["last_hit"] == 50.0
    other = run_python("""
        import sys
        from devstash import _core
        print(_core.Store(sys.argv[1]).meta((1).to_bytes(16, "big"))["hits"])
        """, path)
    assert other.strip() == "0"      # not written yet
    s.flush()
    other = run_python("""
        import sys
        from devstash import _core
        m = _core.Store(sys.argv[1]).meta((1).to_bytes(16, "big"))
        print(m["hits"], m["last_hit"])
        """, path)
    assert other.split() == ["2", "50.0"]
    s.note_hit(key(1), 45.0)
    s.note_hit(key(99), 45.0)               # no such entry: ignored
    s.close()                               # close flushes
    with Store(path) as s:
        assert (s.meta(key(1))["hits"], s.meta(key(1))["last_hit"]) == (3, 50.0)
        assert s.meta(key(99)) is None


def test_hits_summed_across_processes(tmp_path):
    path = str(tmp_path / "cache")
    with Store(path) as s:
        s.put(key(1), b"v", site="s.py:1")
        s.put(key(2), b"w", site="s.py:2")
    code = """
        import sys
        from devstash import _core
        s = _core.Store(sys.argv[1])
        n, t = int(sys.argv[2]), float(sys.argv[3])
        for i in range(n):
            s.note_hit((1).to_bytes(16, "big"), t - i)
        s.note_hit((2).to_bytes(16, "big"), t)
        s.flush()
        """
    a = spawn(code, path, 30, 500.0)
    b = spawn(code, path, 12, 900.0)
    assert a.wait() == 0 and b.wait() == 0
    with Store(path) as s:
        assert (s.meta(key(1))["hits"], s.meta(key(1))["last_hit"]) == (42, 900.0)
        assert (s.meta(key(2))["hits"], s.meta(key(2))["last_hit"]) == (2, 900.0)


def test_put_and_delete_forget_pending_hits(store):
    store.put(key(1), b"v")
    store.note_hit(key(1), 10.0)
    store.put(key(1), b"new value")
    store.flush()
    assert store.meta(key(1))["hits"] == 0
    store.note_hit(key(1), 10.0)
    assert store.delete(key(1)) is True
    store.put(key(1), b"again")
    store.flush()
    assert store.meta(key(1))["hits"] == 0


def test_delete(store):
    store.put(key(1), b"v", [b"buffer"])
    store.put(key(2), b"w")
    assert store.delete(key(1)) is True
    assert store.get(key(1)) is None
    assert store.meta(key(1)) is None
    assert store.delete(key(1)) is False
    assert store.count() == 1
    assert store.get(key(2))[1] == b"w"


def test_entries(store):
    long_site = "/a/rather/long/path/to/the/users/script.py:%d"
    for i in range(50):
        store.put(key(i), b"v" * i, created=float(i), callee="mod.f%d" % (i % 3),
                  site=long_site % (i % 5), compute=i / 10)
    store.put(key(100), b"short", callee="", site="")
    entries = store.entries()
    assert store.count() == len(entries) == 51
    assert [e["key"] for e in entries] == sorted(e["key"] for e in entries)
    by_key = {e["key"]: e for e in entries}
    for i in range(50):
        e = by_key[key(i)]
        assert (e["callee"], e["site"]) == ("mod.f%d" % (i % 3), long_site % (i % 5))
        assert (e["created"], e["size"], e["compute"], e["hits"]) == (float(i), i, i / 10, 0)
    assert (by_key[key(100)]["callee"], by_key[key(100)]["site"]) == ("", "")
    assert set(entries[0]) == {"key", "callee", "site", "created", "ttl", "size",
                               "compute", "hits", "last_hit"}


def test_code_table(store):
    assert store.get_code(key(1)) is None
    store.put_code(key(1), b"\xe3compiled")
    store.put_code(key(2), b"")
    assert store.get_code(key(1)) == b"\xe3compiled"
    assert store.get_code(key(2)) == b""
    assert store.get(key(1)) is None        # a separate table
    assert store.count() == 0


def test_info(store):
    store.put(key(1), b"v")
    info = store.info()
    assert info["entries"] == 1
    assert info["page_size"] > 0
    assert info["used"] == (info["last_pgno"] + 1) * info["page_size"]
    assert info["map_size"] >= info["used"]
    assert info["path"] == store.path


# ---- damaged records ----------------------------------------------------------

def test_truncated_and_corrupted_records_read_as_absent(store):
    buffers = []
    p = pickle.dumps([np.arange(50), np.arange(7.0)], protocol=5,
                     buffer_callback=buffers.append)
    store.put(key(1), p, buffers)
    raw = store._get_raw(key(1))
    assert raw is not None and len(raw) > len(p)
    store._put_raw(key(2), raw)
    assert store.get(key(2))[1] == p        # the hook writes records faithfully
    for n in range(len(raw)):
        store._put_raw(key(2), raw[:n])
        assert store.get(key(2)) is None, n
    store._put_raw(key(2), raw + b"\x00")
    assert store.get(key(2)) is None
    garbage = [b"\xd5", b"\xd5" + b"\xff" * 30, b"\x00" * 40,
               b"\xd5" + bytes(8) + b"\xff" * 9 + b"\x01",       # overlong varint
               b"\xd5" + bytes(8) + b"\x05\x02" + (3).to_bytes(8, "little")
               + (2).to_bytes(8, "little") + b"x" * 6,            # decreasing ends
               b"\xd5" + bytes(8) + b"\x01\x01" + (2 ** 63).to_bytes(8, "little") + b"xy"]
    for g in garbage:
        store._put_raw(key(3), g)
        assert store.get(key(3)) is None, g
    rnd = random.Random(5)
    for _ in range(2000):                   # flipped bytes: never a crash, never a value
        damaged = bytearray(raw)
        for _ in range(rnd.randint(1, 3)):
            at = rnd.randrange(len(damaged)) if rnd.random() < 0.5 else rnd.randrange(40)
            damaged[at] ^= rnd.randrange(1, 256)
        store._put_raw(key(4), bytes(damaged))
        assert store.get(key(4)) is None
        assert store.verify(key(4)) == ("old" if damaged[0] == 0xD5 else "damaged")
        if damaged[0] != 0xD5:
            with pytest.raises(_core.DamagedError):
                store.get_record(key(4))
    assert store.get(key(1))[1] == p
    assert store.verify(key(1)) == "ok" and store.verify(key(9)) == "missing"


def test_every_byte_of_a_record_is_covered_by_its_checksum(store):
    """Header, pickle and each out-of-band buffer: one flipped bit anywhere
    and the record reads as damaged, never as another value."""
    buffers = []
    p = pickle.dumps([np.arange(1000), np.arange(3.0)], protocol=5, buffer_callback=buffers.append)
    store.put(key(1), p, buffers, created=5.0)
    raw = store._get_raw(key(1))
    assert raw[0] == 0xD6 and store.get_record(key(1)) == raw
    for at in range(1, len(raw)):
        for bit in (0x01, 0x80):
            damaged = bytearray(raw)
            damaged[at] ^= bit
            store._put_raw(key(2), bytes(damaged))
            assert store.verify(key(2)) == "damaged", at
    with pytest.raises(ValueError):
        store.put_record(key(3), bytes(damaged))   # import refuses it too


# ---- map size -----------------------------------------------------------------

def test_map_grows_from_tiny(tmp_path):
    path = str(tmp_path / "cache")
    with Store(path, map_size=64 * 1024) as s:
        assert s.info()["map_size"] < 1 << 20
        big = os.urandom(3 << 20)
        s.put(key(1), pickle.dumps(big, protocol=5))
        arr = np.arange(4 << 20, dtype=np.uint8)
        buffers = []
        p = pickle.dumps(arr, protocol=5, buffer_callback=buffers.append)
        s.put(key(2), p, buffers)
        for i in range(3, 200):
            s.put(key(i), os.urandom(20000))
        assert s.info()["map_size"] > 10 << 20
        assert pickle.loads(s.get(key(1))[1]) == big
        _, p2, b2 = s.get(key(2))
        np.testing.assert_array_equal(pickle.loads(p2, buffers=b2), arr)
        assert s.count() == 199


def test_map_grown_by_another_process(tmp_path):
    path = str(tmp_path / "cache")
    s = Store(path, map_size=256 * 1024)
    s.put(key(1), b"small")
    run_python("""
        import sys
        from devstash import _core
        with _core.Store(sys.argv[1], map_size=256 * 1024) as s:
            s.put((2).to_bytes(16, "big"), bytes(range(256)) * 40000)
        """, path)
    assert s.get(key(2))[1] == bytes(range(256)) * 40000   # MDB_MAP_RESIZED handled
    s.put(key(3), b"after")
    assert s.get(key(3))[1] == b"after"
    assert s.get(key(1))[1] == b"small"
    s.close()


def test_file_never_shrinks_under_another_process(tmp_path):
    # With MDB_WRITEMAP LMDB truncates data.mdb to the opener's map size.
    path = str(tmp_path / "cache")
    with Store(path, map_size=64 << 20) as s:
        s.put(key(1), b"v")
    size = os.path.getsize(os.path.join(path, "data.mdb"))
    assert size >= 64 << 20
    with Store(path, map_size=1 << 20) as s:
        assert s.info()["map_size"] >= size
    assert os.path.getsize(os.path.join(path, "data.mdb")) == size


@pytest.mark.skipif(not os.environ.get("DEVSTASH_SLOW_TESTS"),
                    reason="writes several GB; set DEVSTASH_SLOW_TESTS=1")
def test_value_of_several_gigabytes(tmp_path):
    with Store(str(tmp_path / "cache")) as s:
        arr = np.full(3 << 30, 7, dtype=np.uint8)
        arr[-1] = 9
        buffers = []
        p = pickle.dumps(arr, protocol=5, buffer_callback=buffers.append)
        s.put(key(1), p, buffers)
        del arr, buffers
        _, p2, b2 = s.get(key(1))
        back = pickle.loads(p2, buffers=b2)
        assert back.shape == (3 << 30,) and back[0] == 7 and back[-1] == 9


# ---- volume -------------------------------------------------------------------

def test_many_small_entries(tmp_path):
    n = 100_000
    with Store(str(tmp_path / "cache")) as s:
        for i in range(n):
            s.put(key(i * 7919), i.to_bytes(20, "little"), callee="__main__.f",
                  site="/tmp/bench/script.py:12")
        assert s.count() == n
        for i in range(n):
            assert s.get(key(i * 7919))[1] == i.to_bytes(20, "little")
        info = s.info()
        assert info["entries"] == n
        assert info["used"] / n < 400   # compact records (about 170 bytes measured)


# ---- processes ------------------------------------------------------------------

WRITER = """
    import pickle, sys
    from devstash import _core
    s = _core.Store(sys.argv[1], map_size=1 << 20)
    start = int(sys.argv[2])
    print("ready", flush=True)
    i = start
    while True:
        n = (i * 7919) % 300000 if i % 4 == 0 else i % 97
        payload = bytes([i % 251]) * n
        p = pickle.dumps((i, payload[: n // 2]), protocol=5)
        s.put(i.to_bytes(16, "big"), p, [payload[n // 2:]], created=float(i),
              callee="writer", site="/somewhere/writer.py:%d" % (i % 10))
        if i % 3 == 0:
            s.note_hit((i // 2).to_bytes(16, "big"), float(i))
        if i % 50 == 0:
            s.flush()
        if i % 17 == 0:
            s.delete((i - 5).to_bytes(16, "big"))
        i += 1
"""


def check_written(path):
    with Store(path) as s:
        entries = s.entries()
        assert s.count() == len(entries)
        for e in entries:
            i = int.from_bytes(e["key"], "big")
            n = (i * 7919) % 300000 if i % 4 == 0 else i % 97
            payload = bytes([i % 251]) * n
            created, p, buffers = s.get(e["key"])
            assert created == e["created"] == float(i)
            assert pickle.loads(p) == (i, payload[: n // 2])
            assert buffers == [bytearray(payload[n // 2:])]
            assert e["size"] == len(p) + n - n // 2
            assert e["site"] == "/somewhere/writer.py:%d" % (i % 10)
        return len(entries)


def test_sigkill_while_writing(tmp_path):
    path = str(tmp_path / "cache")
    rnd = random.Random(11)
    for round_ in range(5):
        proc = spawn(WRITER, path, round_ * 150, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rnd.uniform(0.05, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        assert check_written(path) > 0
    with Store(path) as s:      # and the store still takes writes
        s.put(key(1), b"fine")
        assert s.get(key(1))[1] == b"fine"


def test_fork(tmp_path):
    s = Store(str(tmp_path / "cache"))
    s.put(key(1), b"parent")
    s.note_hit(key(1), 10.0)
    assert s.get(key(1))[1] == b"parent"    # the reader exists before the fork
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            assert s.get(key(1))[1] == b"parent"
            s.put(key(2), b"child", [b"buf"])
            assert s.get(key(2))[1:] == (b"child", [bytearray(b"buf")])
            s.note_hit(key(1), 20.0)
            s.close()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert s.get(key(2))[1:] == (b"child", [bytearray(b"buf")])
    s.put(key(3), b"parent again")
    s.flush()
    # The child flushed its own hit, never the parent's pending one twice.
    assert (s.meta(key(1))["hits"], s.meta(key(1))["last_hit"]) == (2, 20.0)
    assert s.get(key(3))[1] == b"parent again"
    s.close()


def test_concurrent_writers(tmp_path):
    path = str(tmp_path / "cache")
    code = """
        import sys
        from devstash import _core
        s = _core.Store(sys.argv[1], map_size=128 * 1024)
        base = int(sys.argv[2])
        for i in range(base, base + 1500):
            s.put(i.to_bytes(16, "big"), i.to_bytes(8, "little") * (1 + i % 700))
        s.close()
        """
    procs = [spawn(code, path, base) for base in (0, 100_000, 200_000)]
    assert [p.wait() for p in procs] == [0, 0, 0]
    with Store(path) as s:
        assert s.count() == 4500
        for base in (0, 100_000, 200_000):
            for i in range(base, base + 1500):
                assert s.get(key(i))[1] == i.to_bytes(8, "little") * (1 + i % 700)


def test_two_objects_on_one_folder_share_the_environment(tmp_path):
    path = str(tmp_path / "cache")
    a = Store(path)
    b = Store(path + "/")
    a.put(key(1), b"a")
    assert b.get(key(1))[1] == b"a"
    a.close()
    b.put(key(2), b"b")
    assert b.get(key(1))[1] == b"a"
    b.close()


# ---- folder, modes, errors ------------------------------------------------------

def test_folder_created_owner_only(tmp_path):
    path = tmp_path / "deep" / "cache"
    with Store(str(path)) as s:
        s.put(key(1), b"v")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / "deep").st_mode) == 0o700
    for name in os.listdir(path):
        assert stat.S_IMODE(os.stat(path / name).st_mode) & 0o077 == 0


def test_folder_that_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    path = str(blocker / "cache")
    with pytest.raises(_core.StoreError) as info:
        Store(path)
    assert path in str(info.value)
    assert isinstance(info.value, OSError)
    assert info.value.errno is not None


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_folder_that_cannot_be_written(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        for path in (str(locked), str(locked / "cache")):
            with pytest.raises(OSError) as info:
                Store(path)
            assert path in str(info.value)
    finally:
        locked.chmod(0o700)


def test_closed_and_readonly(tmp_path):
    path = str(tmp_path / "cache")
    with pytest.raises(_core.StoreError) as info:
        Store(path, readonly=True)          # nothing to read: not created
    assert path in str(info.value)
    assert not os.path.exists(path)
    s = Store(path)
    assert s.path == path and not s.closed
    s.put(key(1), b"v")
    s.close()
    s.close()
    assert s.closed
    for call in (lambda: s.get(key(1)), lambda: s.put(key(1), b"v"), s.entries, s.flush):
        with pytest.raises(_core.StoreError):
            call()
    with Store(path, readonly=True) as r:
        assert r.readonly
        assert r.get(key(1))[1] == b"v"
        assert [e["key"] for e in r.entries()] == [key(1)]
        with pytest.raises(_core.StoreError):
            r.put(key(2), b"w")
        with pytest.raises(_core.StoreError):
            r.delete(key(1))
        r.note_hit(key(1), 1.0)             # ignored, nowhere to write
        r.flush()


def test_readonly_store_of_an_empty_folder(tmp_path):
    path = tmp_path / "cache"
    path.mkdir()
    run_python("""
        import sys
        from devstash import _core
        _core.Store(sys.argv[1]).close()   # creates data.mdb, no tables yet
        """, path / "sub")
    with Store(str(path / "sub"), readonly=True) as r:
        assert r.entries() == [] and r.count() == 0
        assert r.get(key(1)) is None and r.meta(key(1)) is None
        assert r.get_code(key(1)) is None
