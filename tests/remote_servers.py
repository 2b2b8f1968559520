"""Fixtures with real cache servers for the team-cache tests (started by
tools/cache_servers.py, stopped after each test). Tests import them.
secured_server: the same servers over TLS (a throwaway CA, server.ca)
and/or asking for a password (server.password, in server.url)."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))

from cache_servers import ServerMissing, free_port, make_certs, quoted, start_nginx, start_redis  # noqa: E402

__all__ = ["free_port", "http_server", "make_certs", "redis_server", "remote_server", "secured_server",
           "OVER_TLS", "PASSWORD", "QUOTED", "WITH_PASSWORD"]

PASSWORD = "pw@Zq7x:not/to be%shown"   # written %-encoded in the URLs (QUOTED)
QUOTED = quoted(PASSWORD)

SECURED = {
    "rediss": (start_redis, dict(tls=True)),
    "redis-requirepass": (start_redis, dict(password=PASSWORD)),
    "rediss-acl-user": (start_redis, dict(tls=True, user="alice", password=PASSWORD)),
    "https": (start_nginx, dict(tls=True)),
    "https-basic-auth": (start_nginx, dict(tls=True, user="bob", password=PASSWORD)),
}
OVER_TLS = sorted(kind for kind, (_start, options) in SECURED.items() if options.get("tls"))
WITH_PASSWORD = sorted(kind for kind, (_start, options) in SECURED.items() if options.get("password"))


def started(start, folder, **options):
    try:
        return start(folder, **options)
    except ServerMissing as exc:
        pytest.fail(str(exc))


@pytest.fixture
def redis_server(tmp_path):
    server = started(start_redis, tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def http_server(tmp_path):
    server = started(start_nginx, tmp_path / "nginx")
    yield server
    server.stop()


@pytest.fixture(params=["redis", "http"])
def remote_server(request, tmp_path):
    """Each test that takes it runs against both tiers."""
    server = started(start_redis if request.param == "redis" else start_nginx,
                     tmp_path / request.param)
    yield server
    server.stop()


@pytest.fixture(params=sorted(SECURED))
def secured_server(request, tmp_path):
    """Each test that takes it runs against every kind of SECURED, or those
    it names: @pytest.mark.parametrize("secured_server", OVER_TLS, indirect=True)."""
    start, options = SECURED[request.param]
    server = started(start, tmp_path / request.param, **options)
    yield server
    server.stop()
