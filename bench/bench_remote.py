"""The team cache on loopback: a remote hit, for Redis and HTTP.

A real redis-server and a real nginx with WebDAV PUT (tools/cache_servers.py)
on loopback ports. A first run fills the remote; each measured run starts
with an empty local cache (a teammate's first run), so every marked line is
a remote hit: the entry fetched, verified, written to the local store and
loaded. A warm-up line first (the transport imported, the connection made),
then:
* small: `v = small(i)  # @devstash` in a loop of distinct keys, each call
  timed; the median per call.
* 100 MB: `arr = make_array(N)  # @devstash` (a 100 MB float64 array), the
  line timed, one per process; the median of several processes.
Beside ours: the same script with a warm local cache (a local hit);
cachier's Redis backend on the same server (every hit is a remote hit);
and the floors, the server read with its own client: redis-py GET of the
small pickle and of 100 MB, and http.client GET of the same from nginx,
measured the same way (connected first; one 100 MB read a process, into
memory the process never touched, as ours is).
The goals are ratios to those floors measured in the same run.
"""
import os
import statistics
import sys
import tempfile
from pathlib import Path

from _harness import (HEADER_MARKER, REPORT, Failed, Metric, NotApplicable, Table, measure_columns,
                      run_script, write_script)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))

from cache_servers import ServerMissing, start_nginx, start_redis  # noqa: E402

KEY = "remote"
TITLE = "team cache on loopback: a remote hit (median)"
COLUMNS = ["ours", "ours_http", "local", "cachier", "floor_redis", "floor_http"]
SMALL, BIG = "small remote hit, per call", "100 MB remote hit"
SMALL_X, BIG_X = "small hit / GET round trip", "100 MB hit / raw 100 MB read"
SECRET = "bench-team-secret-0123456789"

COMMON = """\
import sys, time
import numpy as np
CALLS = 0
N = 12_500_000  # float64: 100 MB
def small(i):
    global CALLS
    CALLS += 1
    return {"i": i, "text": "hello world"}
def make_array(n):
    global CALLS
    CALLS += 1
    return np.arange(n, dtype=np.float64)
mode, n = sys.argv[1], int(sys.argv[2])
"""

BODY = """\
w = {small_call}(-1){marker}
times = []
if mode == "small":
    for i in range(n):
        t0 = time.perf_counter()
        v = {small_call}(i){marker}
        times.append(time.perf_counter() - t0)
    ok = v == {{"i": n - 1, "text": "hello world"}}
else:
    t0 = time.perf_counter()
    arr = {big_call}(N){marker}
    times.append(time.perf_counter() - t0)
    ok = arr.shape == (N,) and bool(np.array_equal(arr, np.arange(N, dtype=np.float64)))
report(times=times, computed=CALLS, ok=ok)
"""

CACHIER = """\
import redis
from cachier import cachier
client = redis.Redis(port=int(sys.argv[3]))
small_c = cachier(backend="redis", redis_client=client)(small)
make_c = cachier(backend="redis", redis_client=client)(make_array)
"""

FLOORS = """\
import pickle, sys, time
import numpy as np
kind, mode, n, port = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
small = pickle.dumps({"i": 1, "text": "hello world"}, protocol=5)
big = np.arange(12_500_000, dtype=np.float64).tobytes()
data = small if mode == "small" else big
times = []
# "fill" writes the value; a measured run is connected by a first small
# read, then reads n times (small) or once (big: a process of its own,
# like ours, so its 100 MB land in memory the process never touched).
if kind == "redis":
    import redis
    client = redis.Redis(port=port)
    if sys.argv[5] == "fill":
        client.set("floor:" + mode, data)
    read = lambda: client.get("floor:" + mode)
    client.get("floor:small")
else:
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    if sys.argv[5] == "fill":
        conn.request("PUT", "/floor/" + mode, body=data); conn.getresponse().read()
    def read():
        conn.request("GET", "/floor/" + mode)
        return conn.getresponse().read()
    conn.request("HEAD", "/floor/small"); conn.getresponse().read()
if sys.argv[5] == "fill":
    report(times=[])
    sys.exit()
for _ in range(n):
    t0 = time.perf_counter(); got = read(); times.append(time.perf_counter() - t0)
assert got == data
report(times=times)
"""


def script_for(key: str) -> str:
    if key in ("ours", "ours_http", "local"):
        return HEADER_MARKER + REPORT + COMMON + BODY.format(
            small_call="small", big_call="make_array", marker="  # @devstash")
    if key == "cachier":
        return REPORT + COMMON + CACHIER + BODY.format(small_call="small_c", big_call="make_c",
                                                       marker="")
    return REPORT + FLOORS


class Servers:
    def __init__(self, root):
        self.redis = start_redis(Path(root) / "redis")
        try:
            self.nginx = start_nginx(Path(root) / "nginx")
        except BaseException:
            self.redis.stop()
            raise

    def stop(self):
        self.redis.stop()
        self.nginx.stop()


def spread(times) -> dict:
    """Median, and the 10th and 90th percentiles (min and max of few)."""
    times = sorted(times)
    if len(times) >= 10:
        q = statistics.quantiles(times, n=10)
        lo, hi = q[0], q[-1]
    else:
        lo, hi = times[0], times[-1]
    return {"median": statistics.median(times), "low": lo, "high": hi, "n": len(times)}


def measure(ctx, key, servers):
    n_small = 100 if ctx.quick else 300
    big_runs = 2 if ctx.quick else 5
    folder = ctx.workdir(f"remote-{key}")
    path = write_script(folder, script_for(key))
    if key.startswith("floor_"):
        kind, port = ("redis", servers.redis.port) if key == "floor_redis" else ("http", servers.nginx.port)
        times = {}
        for mode, n, runs in (("small", n_small, 2), ("big", 1, big_runs)):
            run_script(ctx.py(key), path, folder, args=[kind, mode, n, port, "fill"])
            times[mode] = [t for _ in range(runs) for t in run_script(
                ctx.py(key), path, folder, args=[kind, mode, n, port, "read"]).data["times"]]
        s, b = spread(times["small"]), spread(times["big"])
        return {SMALL: s["median"] * 1000, BIG: b["median"], "_small": s, "_big": b}
    url = servers.nginx.url + "/" + key if key == "ours_http" else servers.redis.url
    env = {"DEVSTASH_REMOTE": url, "DEVSTASH_SECRET": SECRET, "DEVSTASH_QUIET": "1"}
    args_extra = [servers.redis.port] if key == "cachier" else []
    out = {}
    for mode, n, runs, name in (("small", n_small, 1, SMALL), ("big", 1, big_runs, BIG)):
        args = [mode, n, *args_extra]
        filler = tempfile.mkdtemp(prefix="fill-", dir=folder)
        run_script(ctx.py(key), path, folder, args=args, cache_dir=filler, env_extra=env, timeout=300)
        times = []
        for _ in range(runs if mode == "big" else 2):
            # ours, ours_http: an empty local cache, all remote hits; local:
            # the filled one, all local hits; cachier: its Redis every time.
            cache = filler if key == "local" else tempfile.mkdtemp(prefix="run-", dir=folder)
            d = run_script(ctx.py(key), path, folder, args=args, cache_dir=cache, env_extra=env,
                           timeout=300).data
            if not d["ok"]:
                raise Failed("wrong value on a hit")
            if d["computed"]:
                raise Failed(f"not cached: {d['computed']} calls ran")
            times += d["times"]
        s = spread(times)
        out[name] = s["median"] * (1000 if mode == "small" else 1)
        out["_" + mode] = s
        ctx.log(f"remote/{key}/{mode}: {s}")
    return out


def run(ctx) -> Table:
    table = Table(KEY, TITLE, COLUMNS, [
        Metric(SMALL, "ms"),
        Metric(BIG, "s"),
        Metric(SMALL_X, "x", goal=("<=", 2.0)),
        Metric(BIG_X, "x", goal=("<=", 2.0)),
    ], notes=["ours = Redis, ours_http = nginx (WebDAV); each measured run has an empty local "
              "cache; local = ours with the local cache warm; cachier = its Redis backend; "
              "floors: redis-py GET and http.client GET of the same bytes from the same servers",
              "ratios: ours over the Redis floor, ours_http over the HTTP floor, cachier over the "
              "Redis floor"])
    try:
        servers = Servers(ctx.root + "-servers")
    except (ServerMissing, RuntimeError) as exc:
        table.notes.append(f"not measured: {exc}")
        return measure_columns(ctx, table, lambda c, k: (_ for _ in ()).throw(NotApplicable()))
    try:
        measure_columns(ctx, table, lambda c, k: measure(c, k, servers))
    finally:
        servers.stop()
    floors = {"ours": "floor_redis", "ours_http": "floor_http", "cachier": "floor_redis",
              "local": "floor_redis"}
    by = {m.name: m for m in table.metrics}
    for ratio, base in ((SMALL_X, SMALL), (BIG_X, BIG)):
        for key in COLUMNS:
            v, f = by[base].values.get(key), by[base].values.get(floors.get(key, ""))
            if isinstance(v, float) and isinstance(f, float) and f > 0:
                by[ratio].values[key] = v / f
    for key in COLUMNS:
        parts = []
        for mode, unit, scale in (("small", "ms", 1000), ("big", "s", 1)):
            s = table.raw.get(key, {}).get(mode)
            if s:
                parts.append(f"{mode} {s['low'] * scale:.3g}–{s['high'] * scale:.3g} {unit} "
                             f"(n={s['n']})")
        if parts:
            table.notes.append(f"spread (p10–p90, or min–max) {key}: " + ", ".join(parts))
    return table
