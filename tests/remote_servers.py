"""Real cache servers for the team-cache tests: redis-server and nginx with
WebDAV PUT (Debian's redis-server and nginx-core, which `make sysdeps`
installs), each on a free loopback port with folders of its own under the
test's temporary folder, stopped after. Tests import the fixtures."""
import os
import shutil
import socket
import subprocess
import time

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc, what: str, timeout=10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on port {port}")


def find(program: str) -> str:
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin")
    if path is None:
        pytest.fail(f"{program} is not installed: `make sysdeps` installs it")
    return path


class Server:
    """A running server: its URL; stop() and start() again on the same port
    and folder (a server that went away and came back)."""

    def __init__(self, argv, port, url, what, log):
        self.argv, self.port, self.url, self.what, self.log = argv, port, url, what, log
        self.proc = None
        self.start()

    def start(self):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc, self.what)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def start_redis(folder) -> Server:
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [find("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
            "--save", "", "--appendonly", "no", "--protected-mode", "yes", "--daemonize", "no"]
    return Server(argv, port, f"redis://127.0.0.1:{port}/0", "redis-server", folder / "redis.log")


NGINX_CONF = """
daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    client_max_body_size 0;
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/www;
        location / {{
            dav_methods PUT DELETE;
            create_full_put_path on;
            autoindex on;
            autoindex_format json;
        }}
    }}
}}
"""


def start_nginx(folder) -> Server:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "www").mkdir(exist_ok=True)
    port = free_port()
    conf = folder / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=folder, port=port))
    argv = [find("nginx"), "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(conf)]
    return Server(argv, port, f"http://127.0.0.1:{port}/devstash", "nginx", folder / "nginx.log")


@pytest.fixture
def redis_server(tmp_path):
    server = start_redis(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def http_server(tmp_path):
    server = start_nginx(tmp_path / "nginx")
    yield server
    server.stop()


@pytest.fixture(params=["redis", "http"])
def remote_server(request, tmp_path):
    """Each test that takes it runs against both tiers."""
    start = start_redis if request.param == "redis" else start_nginx
    server = start(tmp_path / request.param)
    yield server
    server.stop()
