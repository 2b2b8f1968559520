"""The team cache: a real redis-server and a real nginx with WebDAV PUT
(tests/remote_servers.py) behind the local store. Two machines are two
folders, each with its own checkout of the script and its own cache; the
scripts run in subprocesses as users run them, and a counter file shows
what each one computed."""
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import ScriptRunner
from remote_servers import free_port, http_server, redis_server, remote_server  # noqa: F401
from test_cli import HEADER, base_env

SECRET = "team-secret-0123456789abcdef"
BIG = 2_000_000   # float64 items: 16 MB, stored by content (cas/)

SCRIPT = HEADER + """
import os
import numpy as np

def note(what):
    with open("computed.txt", "a") as f:
        f.write(what + "\\n")

def work(x):
    note("work")
    return {"x": x, "by": os.environ.get("MACHINE", "")}

def big(n):
    note("big")
    return np.full(n, 7.0)

def big_again(n):
    note("big_again")
    return np.full(n, 7.0)

a = work(1)  # @devstash
arr = big(int(os.environ.get("BIG", "10")))  # @devstash
arr2 = big_again(int(os.environ.get("BIG", "10")))  # @devstash
arr[-1] = arr2[0] = 7.0   # a hit's arrays are writable, as computed ones
print("result", a["x"], a["by"], float(arr.sum()), float(arr2.sum()))
"""


class Machine(ScriptRunner):
    """A teammate's checkout with its own cache folder."""

    def __init__(self, folder, server, script=SCRIPT, **env):
        super().__init__(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.name = folder.name
        self.write("script.py", script)
        self.env = {"DEVSTASH_REMOTE": server.url if server else None, "DEVSTASH_SECRET": SECRET,
                    "MACHINE": self.name, "BIG": str(BIG), "DEVSTASH_LOG": "info",
                    "DEVSTASH_REMOTE_TIMEOUT": "1", **env}

    def go(self, check=True, **env):
        return self.run("script.py", env=base_env(self.folder, {**self.env, **env}), check=check)

    def cli(self, *args, code=0, **env):
        proc = subprocess.run([sys.executable, "-m", "devstash", *args], cwd=self.folder,
                              env={k: v for k, v in base_env(self.folder, {**self.env, **env}).items()
                                   if v is not None},
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == code, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return proc

    def computed(self):
        path = self.folder / "computed.txt"
        return path.read_text().split() if path.exists() else []


def warnings_of(proc):
    return [line for line in proc.stderr.splitlines()
            if line.startswith("devstash:") and not line.startswith(
                ("devstash: hit", "devstash: miss", "devstash: store", "devstash: caching"))
            and " hit" not in line.split(",")[0]]


def result(proc):
    return [line for line in proc.stdout.splitlines() if line.startswith("result")][0]


def redis_client(server):
    """redis-py on the server as its URL says (TLS, password), trusting its CA."""
    import redis

    return redis.Redis.from_url(server.url, **({"ssl_ca_certs": str(server.ca)} if server.ca else {}))


def remote_names(server, kind):
    """The names of the server's ac/ or cas/ objects."""
    if server.url.startswith("redis"):
        client = redis_client(server)
        return sorted(n.decode().rpartition(":")[2] for n in client.keys(f"devstash:{kind}:*"))
    folder = server.folder / "www" / "devstash" / kind
    return sorted(os.listdir(folder)) if folder.exists() else []


def tamper(server, name):
    """Flips one byte in the middle of the ac entry name."""
    if server.url.startswith("redis"):
        client = redis_client(server)
        data = bytearray(client.get(f"devstash:ac:{name}"))
        data[len(data) // 2] ^= 1
        client.set(f"devstash:ac:{name}", bytes(data))
    else:
        path = server.folder / "www" / "devstash" / "ac" / name
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 1
        path.write_bytes(bytes(data))


def two_machines(tmp_path, server, **env):
    return Machine(tmp_path / "a", server, **env), Machine(tmp_path / "b", server, **env)


# ---- B hits what A computed -----------------------------------------------------

def test_machine_b_hits_what_a_computed(tmp_path, remote_server):
    a, b = two_machines(tmp_path, remote_server)
    first = a.go()
    assert a.computed() == ["work", "big", "big_again"]
    assert warnings_of(first) == []
    assert first.stderr.count("; not in the remote cache either)") == 3, first.stderr
    second = b.go()
    assert b.computed() == [], second.stderr
    assert result(second) == result(first) == f"result 1 a {7.0 * BIG} {7.0 * BIG}"
    assert second.stderr.count("(from the remote cache") == 3
    # The remote hits are in B's local store now: the next run is local.
    third = b.go()
    assert "from the remote cache" not in third.stderr and b.computed() == []
    assert result(third) == result(first)
    # The same array under two keys: its bytes are on the server once.
    assert len(remote_names(remote_server, "ac")) == 3
    assert len(remote_names(remote_server, "cas")) == 1


def test_summary_line_counts_remote_hits(tmp_path, remote_server):
    a, b = two_machines(tmp_path, remote_server)
    a.go()
    proc = b.go(DEVSTASH_QUIET=None, DEVSTASH_LOG=None)
    assert "devstash: 3 hits (3 from the remote cache), 0 misses, 0 stored" in proc.stderr


# ---- what is refused ----------------------------------------------------------

def test_tampered_remote_entry_is_refused(tmp_path, remote_server):
    a, b = two_machines(tmp_path, remote_server)
    a.go()
    for name in remote_names(remote_server, "ac"):
        tamper(remote_server, name)
    proc = b.go()
    assert sorted(b.computed()) == ["big", "big_again", "work"]
    assert result(proc) == f"result 1 b {7.0 * BIG} {7.0 * BIG}"
    refused = [w for w in warnings_of(proc) if "was refused" in w]
    assert len(refused) == 1, proc.stderr   # one warning for the run
    assert "signature does not verify" in refused[0]


def test_entries_of_another_secret_are_refused(tmp_path, redis_server):
    a, b = two_machines(tmp_path, redis_server)
    a.go()
    proc = b.go(DEVSTASH_SECRET="another-secret-0123456789")
    assert sorted(b.computed()) == ["big", "big_again", "work"]
    assert len([w for w in warnings_of(proc) if "was refused" in w]) == 1


def test_a_refused_entry_never_replaces_a_good_local_one(tmp_path, redis_server):
    a, b = two_machines(tmp_path, redis_server)
    a.go()
    b.cli("pull")
    for name in remote_names(redis_server, "ac"):
        tamper(redis_server, name)
    assert "refused 3" in b.cli("pull").stdout or "kept 3 local" in b.cli("pull").stdout
    proc = b.go()
    assert b.computed() == [] and result(proc).startswith("result 1 a ")


def test_without_a_secret_the_remote_is_not_used(tmp_path, remote_server):
    a = Machine(tmp_path / "a", remote_server, DEVSTASH_SECRET=None)
    proc = a.go()
    said = [w for w in warnings_of(proc) if "not using the remote cache" in w]
    assert len(said) == 1 and "set DEVSTASH_SECRET" in said[0], proc.stderr
    assert remote_names(remote_server, "ac") == []


def test_a_short_secret_is_refused(tmp_path, redis_server):
    a = Machine(tmp_path / "a", redis_server, DEVSTASH_SECRET="short")
    proc = a.go()
    assert any("at least 16" in w for w in warnings_of(proc)), proc.stderr
    assert remote_names(redis_server, "ac") == []


# ---- a remote that is down or stuck ----------------------------------------------

def test_stopped_server_one_warning_and_local_only(tmp_path, remote_server):
    a, b = two_machines(tmp_path, remote_server)
    a.go()
    remote_server.stop()
    start = time.monotonic()
    proc = b.go()
    assert time.monotonic() - start < 20
    assert sorted(b.computed()) == ["big", "big_again", "work"]
    down = [w for w in warnings_of(proc) if "unreachable" in w]
    assert len(down) == 1 and "local cache only" in down[0], proc.stderr
    assert len(warnings_of(proc)) == 1, proc.stderr
    assert result(b.go()).startswith("result 1 b")   # the local cache works
    # Back up (a Redis without persistence, empty): the next runs use it again.
    remote_server.start()
    c, d = Machine(tmp_path / "c", remote_server), Machine(tmp_path / "d", remote_server)
    assert warnings_of(c.go()) == []
    proc = d.go()
    assert d.computed() == [] and warnings_of(proc) == [], proc.stderr


def test_stuck_server_times_out(tmp_path):
    """A server that accepts connections and never answers: about a second
    lost, one warning, never a hang."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: [accepted.append(listener.accept()) for _ in range(16)],
                     daemon=True).start()
    try:
        for url in (f"redis://127.0.0.1:{port}/0", f"http://127.0.0.1:{port}/devstash",
                    f"rediss://127.0.0.1:{port}/0", f"https://127.0.0.1:{port}/devstash"):
            # (over TLS: the handshake is what never ends)
            m = Machine(tmp_path / url.partition(":")[0], None, DEVSTASH_REMOTE=url)
            start = time.monotonic()
            proc = m.go()
            assert time.monotonic() - start < 15
            assert result(proc).endswith(f"{7.0 * BIG} {7.0 * BIG}")
            assert len([w for w in warnings_of(proc) if "unreachable" in w]) == 1, proc.stderr
    finally:
        listener.close()


def test_no_server_on_the_port(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/x"
    m = Machine(tmp_path / "m", None, DEVSTASH_REMOTE=url)
    proc = m.go()
    assert len([w for w in warnings_of(proc) if "unreachable" in w]) == 1, proc.stderr


# ---- modes ----------------------------------------------------------------------

def test_read_only_writes_nothing(tmp_path, remote_server):
    a, b = two_machines(tmp_path, remote_server)
    a.go(DEVSTASH_REMOTE_MODE="read-only")
    assert remote_names(remote_server, "ac") == [] and remote_names(remote_server, "cas") == []
    a.cli("push", code=1, DEVSTASH_REMOTE_MODE="read-only")
    # What CI wrote is read.
    a.go(DEVSTASH_REMOTE_MODE="write-only", DEVSTASH_CACHE_DIR=str(tmp_path / "ci-cache"))
    b.go(DEVSTASH_REMOTE_MODE="read-only")
    assert b.computed() == []


def test_write_only_reads_nothing(tmp_path, redis_server):
    a, b = two_machines(tmp_path, redis_server)
    a.go()
    proc = b.go(DEVSTASH_REMOTE_MODE="write-only")
    assert sorted(b.computed()) == ["big", "big_again", "work"]
    assert "from the remote cache" not in proc.stderr


def test_a_bad_mode_is_said(tmp_path, redis_server):
    a = Machine(tmp_path / "a", redis_server, DEVSTASH_REMOTE_MODE="sometimes")
    proc = a.go()
    assert any("is not one of" in w for w in warnings_of(proc)), proc.stderr


# ---- two machines at once --------------------------------------------------------

RACE = HEADER + """
import os, time

def draw():
    time.sleep(1.5)
    with open("computed.txt", "a") as f:
        f.write("draw\\n")
    return os.environ["MACHINE"] + str(os.getpid())

value = draw()  # @devstash
print("result", value)
"""


def test_two_machines_missing_the_same_key_end_with_one_value(tmp_path, remote_server):
    a = Machine(tmp_path / "a", remote_server, script=RACE)
    b = Machine(tmp_path / "b", remote_server, script=RACE)
    procs = [subprocess.Popen([sys.executable, "script.py"], cwd=m.folder,
                              env={k: v for k, v in base_env(m.folder, m.env).items() if v is not None},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for m in (a, b)]
    for p in procs:
        p.communicate(timeout=60)
        assert p.returncode == 0
    assert a.computed() == b.computed() == ["draw"]   # both missed: a race
    assert result(a.go()) == result(b.go())
    assert len(remote_names(remote_server, "ac")) == 1


# ---- configuration ---------------------------------------------------------------

def test_pyproject_table(tmp_path, redis_server):
    a, b = two_machines(tmp_path, redis_server, DEVSTASH_REMOTE=None)
    for m in (a, b):
        m.write("pyproject.toml", f'[project]\nname = "x"\n\n[tool.devstash]\n'
                                  f'remote = "{redis_server.url}"  # the team cache\n')
    a.go()
    b.go()
    assert b.computed() == []
    assert "pyproject.toml [tool.devstash]" in b.cli("remote", "status").stdout


def test_pyproject_by_hand_as_on_python_310(tmp_path):
    from devstash import _remote_config

    text = ('[project]\nname = "x"\nremote = "no"\n[tool.devstash]\n# why\n'
            "remote = 'redis://h:1/0'\nremote_mode = \"read-only\" # CI writes\n[tool.other]\nx = 1\n")
    assert _remote_config._read_table_by_hand(text, "p") == {"remote": "redis://h:1/0",
                                                              "remote_mode": "read-only"}
    with pytest.raises(_remote_config.ConfigError, match="p:2"):
        _remote_config._read_table_by_hand("[tool.devstash]\nremote = 3\n", "p")


def test_password_is_not_shown():
    from devstash._remote_transport import shown_url

    assert shown_url("redis://:pw@h:1/0") == "redis://***@h:1/0"
    assert shown_url("https://me:pw@h/x") == "https://me:***@h/x"
    assert shown_url("http://h/x") == "http://h/x"
    assert shown_url("redis://:p@ss@h:1/0") == "redis://***@h:1/0"
    assert shown_url("rediss://u:p%40ss@h:1/0?x=@") == "rediss://u:***@h:1/0?x=@"
    assert shown_url("https://h/a@b") == "https://h/a@b"


# ---- commands ----------------------------------------------------------------------

def test_push_pull_status_and_list(tmp_path, remote_server):
    a, b = two_machines(tmp_path, remote_server)
    a.go(DEVSTASH_REMOTE=None)   # computed before the team cache was set up
    assert remote_names(remote_server, "ac") == []
    status = a.cli("remote", "status").stdout
    assert "reachable  yes" in status and "entries    0" in status and "read-write" in status
    assert "pushed 3 entries" in a.cli("push").stdout
    assert "pushed 0 entries" in a.cli("push").stdout   # already there
    status = a.cli("remote", "status").stdout
    assert "entries    3" in status
    listing = b.cli("list", "--remote").stdout
    assert "__main__.work" in listing and "3 entries on" in listing
    assert "script.py:" in listing
    assert "pulled 1 entry" in b.cli("pull", "--pattern", "*work*").stdout
    assert "pulled 2 entries" in b.cli("pull", "--site", "script.py").stdout
    proc = b.go(DEVSTASH_REMOTE=None)
    assert b.computed() == [] and result(proc).startswith("result 1 a")
    # Another secret: listed as refused, nothing pulled.
    c = Machine(tmp_path / "c", remote_server, DEVSTASH_SECRET="another-secret-0123456789")
    assert "refused 3" in c.cli("pull").stdout


def test_commands_without_a_remote(tmp_path):
    m = Machine(tmp_path / "m", None)
    assert "no remote cache is set" in m.cli("remote", "status", code=1).stderr
    assert "no remote cache is set" in m.cli("push", code=1).stderr


def test_status_of_a_stopped_server(tmp_path, redis_server):
    m = Machine(tmp_path / "m", redis_server)
    redis_server.stop()
    assert "reachable  no" in m.cli("remote", "status", code=1).stdout


# ---- the store's side: a record written in two parts --------------------------------

def test_put_record_with_body(tmp_path):
    """Store.put_record(key, head, body=...) joins the two in the map and
    checks the record there: what a remote hit writes."""
    import numpy as np

    from devstash import _core
    from devstash._remote_entry import split

    a = _core.Store(str(tmp_path / "a"))
    value = np.arange(100_000, dtype=np.float64)
    import pickle

    buffers = []
    data = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    key = b"k" * 16
    a.put(key, data, [b.raw() for b in buffers], ttl=60.0)
    record = a.get_record(key)
    head, body = split(record)
    b = _core.Store(str(tmp_path / "b"))
    assert b.put_record(key, bytes(head), body=bytes(body), ttl=60.0, callee="f", site="s.py:1")
    assert b.get_record(key) == record
    assert b.meta(key)["size"] == a.meta(key)["size"]
    assert b.meta(key)["created"] == a.meta(key)["created"]
    # if_newer keeps the entry there; a damaged body is refused, nothing written.
    assert not b.put_record(key, bytes(head), body=bytes(body), if_newer=True)
    damaged = bytearray(body)
    damaged[len(damaged) // 2] ^= 1
    other = b"o" * 16
    with pytest.raises(ValueError):
        b.put_record(other, bytes(head), body=bytes(damaged))
    with pytest.raises(ValueError):
        b.put_record(other, bytes(head), body=bytes(body)[:-8])
    with pytest.raises(ValueError):
        b.put_record(other, b"\xd6short", body=bytes(body))
    assert b.get_record(other) is None and b.meta(other) is None


# ---- the other cached forms: chains, plain expressions, async calls ---------------

FORMS = HEADER + """
import asyncio

def note(what):
    with open("computed.txt", "a") as f:
        f.write(what + "\\n")

class Rows:
    def __init__(self, n):
        note("rows")
        self.n = n
    def total(self):
        return sum(range(self.n))

async def fetch(x):
    note("fetch")
    return x * 2

n = 1000
chained = Rows(n).total()  # @devstash
squares = [i * i for i in range(n)]  # @devstash

async def main():
    return await fetch(21)  # @devstash

print("result", chained, sum(squares), asyncio.run(main()))
"""


def test_chains_expressions_and_async_calls(tmp_path, redis_server):
    a = Machine(tmp_path / "a", redis_server, script=FORMS)
    b = Machine(tmp_path / "b", redis_server, script=FORMS)
    first = a.go()
    assert sorted(a.computed()) == ["fetch", "rows"]
    second = b.go()
    assert b.computed() == [] and result(second) == result(first), second.stderr
    assert second.stderr.count("(from the remote cache") == 3, second.stderr


def test_a_child_of_fork_uploads_on_its_own(tmp_path, remote_server):
    """A process forked after the parent used the remote gets connections
    and an upload thread of its own."""
    script = HEADER + """
import os

def note(what):
    with open("computed.txt", "a") as f:
        f.write(what + "\\n")

def work(x):
    note(f"work{x}")
    return x * 10

a = work(1)  # @devstash
pid = os.fork()
if pid == 0:
    # The child ends as scripts do: its uploads finish at exit.
    b = work(2)  # @devstash
else:
    os.waitpid(pid, 0)
    c = work(3)  # @devstash
    print("result", a, c)
"""
    a = Machine(tmp_path / "a", remote_server, script=script)
    b = Machine(tmp_path / "b", remote_server, script=script)
    a.go()
    assert sorted(a.computed()) == ["work1", "work2", "work3"]
    assert len(remote_names(remote_server, "ac")) == 3
    b.go()
    assert b.computed() == []


def test_uploads_left_at_exit_are_abandoned_with_one_warning(tmp_path, http_server):
    """The exit waits DEVSTASH_REMOTE_EXIT_WAIT seconds at most for uploads
    (an HTTP entry settles 0.1 s: with no wait, it is left)."""
    a = Machine(tmp_path / "a", http_server, DEVSTASH_REMOTE_EXIT_WAIT="0")
    proc = a.go()
    left = [w for w in warnings_of(proc) if "abandoned" in w]
    assert len(left) == 1 and "devstash push" in left[0], proc.stderr
    assert "pushed" in a.cli("push").stdout
    b = Machine(tmp_path / "b", http_server)
    b.go()
    assert b.computed() == []


def change_cas(server, name, change):
    """Replaces the cas/ object name with change(its bytes)."""
    if server.url.startswith("redis"):
        client = redis_client(server)
        client.set(f"devstash:cas:{name}", change(client.get(f"devstash:cas:{name}")))
    else:
        path = server.folder / "www" / "devstash" / "cas" / name
        path.write_bytes(change(path.read_bytes()))


def flip_last_byte(data):
    return data[:-1] + bytes([data[-1] ^ 1])


@pytest.mark.parametrize("how", ["altered", "cut short"])
def test_altered_value_bytes_are_refused(tmp_path, remote_server, how):
    """The value bytes in cas/ are checked against the digest the signed
    entry holds before anything is unpickled."""
    a, b = two_machines(tmp_path, remote_server)
    a.go()
    [name] = remote_names(remote_server, "cas")
    change_cas(remote_server, name, flip_last_byte if how == "altered" else lambda d: d[:-1000])
    proc = b.go()
    assert sorted(b.computed()) == ["big", "big_again"]   # work(1) is inline: a remote hit
    refused = [w for w in warnings_of(proc) if "was refused" in w]
    assert len(refused) == 1 and "do not match the signed digest" in refused[0], proc.stderr


def test_the_key_file_of_exports_is_not_the_team_secret(tmp_path, redis_server):
    """Each machine's own key file would make every machine refuse, then
    overwrite, the others' entries: only DEVSTASH_SECRET signs for the team."""
    a = Machine(tmp_path / "a", redis_server, DEVSTASH_SECRET=None)
    a.cli("export", "out.bin")   # creates this machine's key file
    proc = a.go()
    said = [w for w in warnings_of(proc) if "not using the remote cache" in w]
    assert len(said) == 1 and "key file of exports is not used" in said[0], proc.stderr
    assert remote_names(redis_server, "ac") == []
