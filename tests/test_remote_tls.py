"""The team cache over TLS and behind passwords: rediss://, a Redis
requirepass or ACL user in the URL, https:// with nginx's basic auth
(secured_server in tests/remote_servers.py: real servers, a throwaway CA).
Two machines are two folders with their own cache, as in test_remote.py."""
import re

import pytest
from remote_servers import OVER_TLS, PASSWORD, QUOTED, WITH_PASSWORD, make_certs, secured_server  # noqa: F401
from test_remote import BIG, Machine, remote_names, result, warnings_of

ALL = ["big", "big_again", "work"]


def trusting(server, how="setting"):
    """The environment that makes a machine trust server's CA: the
    DEVSTASH_REMOTE_CA setting, or OpenSSL's SSL_CERT_FILE (which replaces
    the system's CAs for the whole process)."""
    if server.ca is None:
        return {}
    return {"DEVSTASH_REMOTE_CA": str(server.ca)} if how == "setting" else {"SSL_CERT_FILE": str(server.ca)}


def shows_no_password(proc):
    said = proc.stdout + proc.stderr
    assert PASSWORD not in said and QUOTED not in said and "Zq7x" not in said


def test_machine_b_hits_what_a_computed(tmp_path, secured_server):
    a = Machine(tmp_path / "a", secured_server, **trusting(secured_server, "setting"))
    b = Machine(tmp_path / "b", secured_server, **trusting(secured_server, "SSL_CERT_FILE"))
    first = a.go()
    assert sorted(a.computed()) == ALL and warnings_of(first) == [], first.stderr
    assert len(remote_names(secured_server, "ac")) == 3
    assert len(remote_names(secured_server, "cas")) == 1
    second = b.go()
    assert b.computed() == [], second.stderr
    assert result(second) == result(first) == f"result 1 a {7.0 * BIG} {7.0 * BIG}"
    assert second.stderr.count("(from the remote cache") == 3 and warnings_of(second) == []
    status = b.cli("remote", "status")
    assert "reachable  yes" in status.stdout and "entries    3" in status.stdout
    listing = b.cli("list", "--remote")
    assert "__main__.work" in listing.stdout and "3 entries on" in listing.stdout
    for proc in (first, second, status, listing):
        shows_no_password(proc)


def runs_locally(machine, first):
    """The next run of machine hits its local cache: nothing computed again,
    the remote not asked, nothing said."""
    again = machine.go()
    assert sorted(machine.computed()) == ALL and result(again) == result(first)
    assert warnings_of(again) == [] and "remote" not in again.stderr, again.stderr


def wrong_password_urls(server):
    assert QUOTED in server.url
    return {"wrong": server.url.replace(QUOTED, "not-Zq7x-either"),
            "missing": re.sub(r"//[^/@]*@", "//", server.url)}


@pytest.mark.parametrize("secured_server", WITH_PASSWORD, indirect=True)
def test_a_wrong_password_one_warning_and_local_only(tmp_path, secured_server):
    urls = wrong_password_urls(secured_server)
    Machine(tmp_path / "a", secured_server, **trusting(secured_server)).go()
    for how, url in urls.items():
        b = Machine(tmp_path / how, None, DEVSTASH_REMOTE=url, **trusting(secured_server))
        proc = b.go()
        assert sorted(b.computed()) == ALL, proc.stderr
        assert result(proc) == f"result 1 {how} {7.0 * BIG} {7.0 * BIG}"
        [warning] = warnings_of(proc)
        assert "refused this machine" in warning and "local cache only" in warning
        said = "did not accept the user name or password" if how == "wrong" else "asks for"
        assert said in warning, warning
        assert f"127.0.0.1:{secured_server.port}" in warning
        shows_no_password(proc)
        runs_locally(b, proc)
        status = b.cli("remote", "status", code=1)
        assert "reachable  no" in status.stdout and said in status.stdout
        shows_no_password(status)
    assert len(remote_names(secured_server, "ac")) == 3   # nothing more was written


@pytest.mark.parametrize("secured_server", OVER_TLS, indirect=True)
def test_an_untrusted_certificate_one_warning_and_local_only(tmp_path, secured_server):
    """The client trusts another CA than the one that signed the server's
    certificate; then no CA besides the system's."""
    other_ca, _cert, _key = make_certs(tmp_path / "other", "other-ca")
    Machine(tmp_path / "a", secured_server, **trusting(secured_server)).go()
    for how, env in (("other", {"DEVSTASH_REMOTE_CA": str(other_ca)}), ("none", {})):
        b = Machine(tmp_path / how, secured_server, **env)
        proc = b.go()
        assert sorted(b.computed()) == ALL, proc.stderr
        assert result(proc) == f"result 1 {how} {7.0 * BIG} {7.0 * BIG}"
        [warning] = warnings_of(proc)
        assert "refused this machine" in warning and "local cache only" in warning
        assert "not trusted here" in warning and "DEVSTASH_REMOTE_CA" in warning, warning
        shows_no_password(proc)
        runs_locally(b, proc)
    assert len(remote_names(secured_server, "ac")) == 3


@pytest.mark.parametrize("secured_server", OVER_TLS, indirect=True)
def test_the_ca_in_pyproject_and_a_missing_ca_file(tmp_path, secured_server):
    """remote_ca in [tool.devstash], relative to the pyproject.toml; a CA
    file that is not there is said, and the run goes on."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "team-ca.pem").write_text(secured_server.ca.read_text())
    (project / "pyproject.toml").write_text('[tool.devstash]\nremote_ca = "team-ca.pem"\n')
    a = Machine(project / "a", secured_server)   # runs in project/a: the path is not the cwd's
    proc = a.go()
    assert warnings_of(proc) == [] and len(remote_names(secured_server, "ac")) == 3, proc.stderr
    status = a.cli("remote", "status").stdout
    assert f"ca         {project / 'team-ca.pem'} (trusted" in status and "reachable  yes" in status
    b = Machine(tmp_path / "b", secured_server, DEVSTASH_REMOTE_CA=str(tmp_path / "nowhere.pem"))
    proc = b.go()
    assert sorted(b.computed()) == ALL
    [warning] = warnings_of(proc)
    assert "nowhere.pem" in warning and "DEVSTASH_REMOTE_CA" in warning, warning
