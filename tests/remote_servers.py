"""Fixtures with real cache servers for the team-cache tests (started by
tools/cache_servers.py, stopped after each test). Tests import them."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))

from cache_servers import ServerMissing, free_port, start_nginx, start_redis  # noqa: E402

__all__ = ["free_port", "http_server", "redis_server", "remote_server"]


def started(start, folder):
    try:
        return start(folder)
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
