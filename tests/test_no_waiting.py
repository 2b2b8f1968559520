"""No process waits forever for another, and no thread is failed by another:
a writer stopped mid-write (Ctrl-Z, SIGSTOP) holds up other writers for a
bounded time and readers not at all; the map grows while other threads of
the process are in the middle of hits."""
import fcntl
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from devstash import _core

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="flock and SIGSTOP semantics")


def gate_is_held(cache):
    """Whether some process holds the writer gate (an flock on data.mdb):
    it is inside a write transaction now."""
    fd = os.open(cache / "data.mdb", os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the probe's own lock
    return False


WRITER = textwrap.dedent("""
    import sys
    from devstash import _core
    store = _core.Store(sys.argv[1])
    big = bytearray(600 << 20)
    print("ready", flush=True)
    for i in range(1000):
        big[0] = i % 256
        store.put(b"big-%05d" % i + bytes(7), b"", [big])
""")


@pytest.fixture
def stopped_writer(tmp_path):
    """A process stopped with SIGSTOP while it holds the cache's write lock:
    yields the cache folder; continues and ends the writer after."""
    cache = tmp_path / ".devstash_cache"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(cache)], stdout=subprocess.PIPE, text=True, cwd=cache.parent)
    try:
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline, "the writer never held the write lock"
            if gate_is_held(cache):
                os.kill(proc.pid, signal.SIGSTOP)
                if gate_is_held(cache):
                    break  # stopped inside a write
                os.kill(proc.pid, signal.SIGCONT)  # between writes: try again
        yield cache
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.communicate()


def test_a_stopped_writer_holds_up_no_hit_and_stores_only_for_a_bounded_time(scripts, stopped_writer):
    scripts.write("script.py", """
        import json, os, sys
        import devstash
        devstash.activate()

        def slow(x):
            with open("computed.log", "a") as log:
                log.write(f"{x}\\n")
            return {"x": x, "square": x * x}

        a = slow(int(sys.argv[1]))  # @devstash
        b = slow(int(sys.argv[2]))  # @devstash
        print(json.dumps([a, b]))
    """)
    env = {"DEVSTASH_CACHE_DIR": str(stopped_writer), "DEVSTASH_WAIT": "2s"}
    first = scripts.run("script.py", "3", "4", env=env)
    assert first.stdout.strip() == '[{"x": 3, "square": 9}, {"x": 4, "square": 16}]'
    assert "not stored" in first.stderr and "held by another process" in first.stderr
    assert first.stderr.count("not stored") == 1, first.stderr  # said once per run
    assert (scripts.folder / "computed.log").read_text().split() == ["3", "4"]


def test_hits_never_wait_for_a_stopped_writer(scripts, tmp_path):
    cache = tmp_path / ".devstash_cache"
    scripts.write("script.py", """
        import sys
        import devstash
        devstash.activate()

        def slow(x):
            with open("computed.log", "a") as log:
                log.write(f"{x}\\n")
            return x * 10

        print(slow(int(sys.argv[1])))  # @devstash
    """)
    env = {"DEVSTASH_CACHE_DIR": str(cache), "DEVSTASH_WAIT": "2s"}
    assert scripts.run("script.py", "7", env=env).stdout.strip() == "70"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(cache)], stdout=subprocess.PIPE, text=True, cwd=cache.parent)
    try:
        assert proc.stdout.readline().strip() == "ready"
        while not gate_is_held(cache):
            time.sleep(0.001)
        os.kill(proc.pid, signal.SIGSTOP)
        started = time.monotonic()
        hit = scripts.run("script.py", "7", env=env)
        took = time.monotonic() - started
        assert hit.stdout.strip() == "70"
        assert "not stored" not in hit.stderr and "held by" not in hit.stderr, hit.stderr
        # A hit takes no lock: it never reaches the 2 s bound of a store.
        assert took < 2, f"the hit waited {took:.1f} s"
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.communicate()
    assert (scripts.folder / "computed.log").read_text().split() == ["7"]


def test_store_put_gives_up_with_busy_error_and_gets_go_on(stopped_writer):
    store = _core.Store(str(stopped_writer))
    store.lock_timeout = 0.5
    started = time.monotonic()
    with pytest.raises(_core.BusyError, match="held by another process for more than"):
        store.put(b"k" * 16, b"v", None)
    assert 0.4 < time.monotonic() - started < 5
    assert store.get(b"x" * 16) is None
    store.close()


def test_lock_timeout_is_checked(tmp_path):
    with _core.Store(str(tmp_path / "cache")) as store:
        assert store.lock_timeout == 10
        with pytest.raises(ValueError, match="between 0 and 86400"):
            store.lock_timeout = -1


class SlowToLoad:
    """A value whose loading releases the GIL part-way: another thread runs
    while this one is in the middle of a hit, with its read open."""

    def __init__(self, i, size):
        self.i, self.payload = i, bytes([i % 251]) * size

    def __setstate__(self, state):
        time.sleep(0.001)
        self.__dict__.update(state)


def make(i, size):
    return SlowToLoad(i, size)


def test_the_map_grows_while_other_threads_are_mid_hit(tmp_path):
    from devstash import _runtime

    failures = []

    class Recording(_runtime.Runtime):
        def _store_failed(self, site, exc):
            failures.append(repr(exc))

        def _unreadable(self, site, exc):
            failures.append(repr(exc))

    store = _core.Store(str(tmp_path / "cache"), map_size=256 << 10)
    first_map = store.info()["map_size"]
    rt = Recording(store, str(tmp_path / "threads.py"), ((1, 0, 0.0, 0, "call", "make(i, size)"),))
    errors = []

    def worker(t):
        try:
            for round_ in range(3):
                for i in range(t, 160, 16):
                    v = rt.call(0, make, i, 20_000 + 1000 * (i % 7))
                    assert v.i == i and v.payload == bytes([i % 251]) * (20_000 + 1000 * (i % 7))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(16)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert not failures, failures
    assert rt.stores == 160 and rt.hits == 320
    assert store.info()["map_size"] > 8 * first_map
    store.close()


def stats(folder, cache):
    proc = subprocess.run([sys.executable, "-m", "devstash", "stats", "--json"], cwd=folder,
                          env={**os.environ, "DEVSTASH_CACHE_DIR": str(cache)},
                          capture_output=True, text=True, timeout=60, check=True)
    return json.loads(proc.stdout)


KILLED_AFTER_HITS = """
    import os, signal, sys
    import devstash
    devstash.activate()

    def slow(x):
        with open("computed.log", "a") as log:
            log.write(f"{x}\\n")
        return x * 10

    for x in (1, 2, 1):
        print(slow(x), flush=True)  # @devstash
    if len(sys.argv) > 1:
        os.kill(os.getpid(), signal.SIGTERM)
"""


def test_hit_counts_survive_sigterm_and_the_process_ends_as_without_devstash(scripts, tmp_path):
    cache = tmp_path / "cache"
    env = {"DEVSTASH_CACHE_DIR": str(cache)}
    scripts.write("script.py", KILLED_AFTER_HITS)
    first = scripts.run("script.py", env=env)
    assert first.stdout.split() == ["10", "20", "10"]
    assert stats(scripts.folder, cache)["hits"] == 1  # the third call
    for run in (2, 3):
        killed = scripts.run("script.py", "kill", env=env, check=False)
        assert killed.returncode == -signal.SIGTERM, killed.stderr
        assert killed.stdout.split() == ["10", "20", "10"]
        assert [n for n in os.listdir(cache) if n.startswith("hits-")], "no counts left behind"
        assert stats(scripts.folder, cache)["hits"] == 1 + 3 * (run - 1)
        assert not [n for n in os.listdir(cache) if n.startswith("hits-")]
    assert (scripts.folder / "computed.log").read_text().split() == ["1", "2"]


def test_hit_counts_wait_in_their_file_when_the_cache_is_held_at_exit(scripts, tmp_path):
    cache = tmp_path / ".devstash_cache"
    env = {"DEVSTASH_CACHE_DIR": str(cache)}
    scripts.write("script.py", KILLED_AFTER_HITS)
    scripts.run("script.py", env=env)
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(cache)], stdout=subprocess.PIPE, text=True,
                            cwd=cache.parent)
    try:
        assert proc.stdout.readline().strip() == "ready"
        while not gate_is_held(cache):
            time.sleep(0.001)
        os.kill(proc.pid, signal.SIGSTOP)
        held = scripts.run("script.py", env=env)
        assert held.stdout.split() == ["10", "20", "10"] and held.stderr == ""
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.communicate()
    # 1 hit of the first run, 3 of the run that could not write them.
    assert stats(scripts.folder, cache)["hits"] == 4
