"""Real cache servers on loopback, for the team-cache tests and benchmarks:
redis-server, and nginx with WebDAV PUT and JSON folder listings (Debian's
redis-server and nginx-core, which `make sysdeps` installs). Each runs on a
free port with its folders under the one given, in the foreground, until
stop(). Either can serve TLS, with a certificate for 127.0.0.1 and localhost
signed by a throwaway CA (make_certs, with the openssl command line), and ask
for a password: Redis's requirepass or an ACL user, nginx's basic auth.
Standard library only: bench/run.py runs under any Python."""
import base64
import hashlib
import shutil
import socket
import subprocess
import time
import urllib.parse


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


def quoted(password: str) -> str:
    """password as a URL's user info writes it (%40 for @, ...)."""
    return urllib.parse.quote(password, safe="")


def make_certs(folder, name="ca"):
    """A throwaway CA and a server certificate it signed for 127.0.0.1 and
    localhost, in folder: (CA certificate, server certificate, server key)
    paths. name tells two CAs apart in one folder."""
    folder.mkdir(parents=True, exist_ok=True)
    ca, ca_key = folder / f"{name}.pem", folder / f"{name}.key"
    cert, key, csr = folder / f"{name}-server.pem", folder / f"{name}-server.key", folder / f"{name}-server.csr"
    ext = folder / f"{name}-server.ext"
    ext.write_text("basicConstraints = critical, CA:FALSE\n"
                   "keyUsage = critical, digitalSignature, keyEncipherment\n"
                   "extendedKeyUsage = serverAuth\n"
                   "subjectAltName = IP:127.0.0.1, DNS:localhost\n"
                   "subjectKeyIdentifier = hash\n"
                   "authorityKeyIdentifier = keyid\n")
    openssl = find("openssl")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    for argv in (
        [openssl, "req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2",
         "-subj", f"/CN=devstash test {name}",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        [openssl, "req", "-new", *ec, "-keyout", key, "-out", csr, "-subj", "/CN=localhost"],
        [openssl, "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "2", "-extfile", ext],
    ):
        subprocess.run([str(a) for a in argv], check=True, capture_output=True)
    return ca, cert, key


class Server:
    """A running server: its URL and port; stop(), and start() again on the
    same port and folder (a server that went away and came back). ca: the
    CA certificate a client must trust (a TLS server), else None; password:
    the one the server asks for (in url), else None."""

    ca = password = None

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


def start_redis(folder, tls=False, password=None, user=None) -> Server:
    """redis-server without persistence: a restart starts empty. tls: on
    TLS only (rediss://), clients not asked for certificates. password:
    requirepass (redis://:password@...), or with user an ACL user of all
    rights (redis://user:password@...) and the default user off."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [find("redis-server"), "--bind", "127.0.0.1", "--dir", str(folder),
            "--save", "", "--appendonly", "no", "--daemonize", "no"]
    if tls:
        ca, cert, key = make_certs(folder)
        argv += ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
                 "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"]
    else:
        argv += ["--port", str(port)]
    userinfo = ""
    if user is not None:
        argv += ["--user", user, "on", f">{password}", "~*", "&*", "+@all", "--user", "default", "off"]
        userinfo = f"{user}:{quoted(password)}@"
    elif password is not None:
        argv += ["--requirepass", password]
        userinfo = f":{quoted(password)}@"
    url = f"{'rediss' if tls else 'redis'}://{userinfo}127.0.0.1:{port}/0"
    server = Server(argv, port, url, "redis-server", folder)
    server.ca, server.password = (ca if tls else None), password
    return server


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
        listen 127.0.0.1:{port}{ssl};
        root {tmp}/www;{server_extra}
        location / {{
            dav_methods PUT DELETE;
            create_full_put_path on;
            autoindex on;
            autoindex_format json;
        }}
    }}
}}
"""


def start_nginx(folder, prefix="/devstash", tls=False, user=None, password=None) -> Server:
    """nginx serving folder/www: GET, HEAD, PUT, DELETE and JSON listings.
    tls: on TLS only (https://). user and password: basic auth asked for
    everything (https://user:password@...), the password file in nginx's
    {SHA} form."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "www").mkdir(exist_ok=True)
    port = free_port()
    extra, ca = "", None
    if tls:
        ca, cert, key = make_certs(folder)
        extra += f"\n        ssl_certificate {cert};\n        ssl_certificate_key {key};"
    userinfo = ""
    if user is not None:
        sha = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
        (folder / "htpasswd").write_text(f"{user}:{{SHA}}{sha}\n")
        extra += f'\n        auth_basic "devstash";\n        auth_basic_user_file {folder}/htpasswd;'
        userinfo = f"{user}:{quoted(password)}@"
    conf = folder / "nginx.conf"
    conf.write_text(NGINX_CONF.format(tmp=folder, port=port, ssl=" ssl" if tls else "",
                                      server_extra=extra))
    argv = [find("nginx"), "-p", str(folder), "-e", str(folder / "error.log"), "-c", str(conf)]
    url = f"{'https' if tls else 'http'}://{userinfo}127.0.0.1:{port}{prefix}"
    server = Server(argv, port, url, "nginx", folder)
    server.ca, server.password = ca, password
    return server
