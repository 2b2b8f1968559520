"""Real cache servers on loopback, for the team-cache tests and benchmarks:
redis-server, and nginx with WebDAV PUT and JSON folder listings (Debian's
redis-server and nginx-core, which `make sysdeps` installs). Each runs on a
free port with its folders under the one given, in the foreground, until
stop(). Standard library only: bench/run.py runs under any Python."""
import shutil
import socket
import subprocess
import time


class ServerMissing(RuntimeError):
    """The program is not installed."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find(program: str) -> str:
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin")
    if path is None:
        raise ServerMissing(f"{program} is not installed: `make sysdeps` installs it")
    return path


class Server:
    """A running server: its URL and port; stop(), and start() again on the
    same port and folder (a server that went away and came back)."""

    def __init__(self, argv, port, url, what, folder):
        self.argv, self.port, self.url, self.what, self.folder = argv, port, url, what, folder
        self.log = folder / f"{what}.log"
        self.proc = None
        self.start()

    def start(self, timeout=10.0):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.what} exited with {self.proc.returncode}: see {self.log}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.what} did not listen on port {self.port}")

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
    """redis-server without persistence: a restart starts empty."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [find("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder),
            "--save", "", "--appendonly", "no", "--daemonize", "no"]
    return Server(argv, port, f"redis://127.0.0.1:{port}/0", "redis-server", folder)


# One process (master_process off): nobody to switch users to, so the
# folders of the test's own user serve; objects live under www/.
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


def start_nginx(folder, prefix="/devstash") -> Server:
    """nginx serving folder/www: GET, HEAD, PUT, DELETE and JSON listings."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "www").mkdir(exist_ok=True)
    port = free_port()
    conf = folder / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=folder, port=port))
    argv = [find("nginx"), "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(conf)]
    return Server(argv, port, f"http://127.0.0.1:{port}{prefix}", "nginx", folder)
