"""pytest --devstash: markers live in test files, conftest files and the
modules they import, together with pytest's assertion rewriting, in xdist
workers too. Each suite runs in a pytest subprocess, twice or three times."""
import os
import subprocess
import sys

import pytest

API = """
import os
def fetch(x):
    with open(os.environ["CALLS"], "a") as f:
        f.write(f"{x}\\n")
    return {"id": x, "items": [x, x + 1]}
"""

CONFTEST = """
import pytest
from api import fetch
@pytest.fixture
def response():
    return fetch(100)  # @devstash
"""

TEST = """
from api import fetch
from helpers import summarize
def test_items(response):
    data = fetch(1)  # @devstash
    assert data["items"] == [1, 2]
    assert response["id"] == 100
    assert summarize(3) == 7
def test_assert_details_survive():
    data = fetch(2)  # @devstash
    assert data["items"] == [2, 99]
"""

HELPERS = """
from api import fetch
def summarize(x):
    data = fetch(x)  # @devstash
    return sum(data["items"])
"""


def pytest_run(folder, *args, env=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("DEVSTASH_", "PYTEST_"))}
    full_env.update({"CALLS": str(folder / "calls.txt"), "DEVSTASH_QUIET": "1"})
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
                          cwd=folder, env=full_env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def suite(tmp_path):
    for name, text in {"api.py": API, "conftest.py": CONFTEST, "test_api.py": TEST,
                       "helpers.py": HELPERS}.items():
        (tmp_path / name).write_text(text.lstrip("\n"))
    return tmp_path


def calls(folder):
    path = folder / "calls.txt"
    return sorted(path.read_text().split()) if path.exists() else []


def test_markers_are_live_in_tests_conftest_and_imported_modules(suite):
    first = pytest_run(suite, "--devstash")
    assert "1 failed, 1 passed" in first.stdout, first.stdout + first.stderr
    assert calls(suite) == ["1", "100", "2", "3"]
    # pytest's assertion rewriting still explains the failure.
    assert "assert [2, 3] == [2, 99]" in first.stdout
    for _ in range(2):
        again = pytest_run(suite, "--devstash")
        assert "1 failed, 1 passed" in again.stdout
        assert "assert [2, 3] == [2, 99]" in again.stdout
        assert calls(suite) == ["1", "100", "2", "3"]      # nothing fetched again


def test_without_the_option_nothing_is_cached(suite):
    pytest_run(suite, "--devstash")
    plain = pytest_run(suite)
    assert "1 failed, 1 passed" in plain.stdout
    assert calls(suite) == ["1", "1", "100", "100", "2", "2", "3", "3"]


def test_the_ini_setting_and_refresh(suite):
    (suite / "pytest.ini").write_text("[pytest]\ndevstash = true\n")
    pytest_run(suite)
    pytest_run(suite)
    assert calls(suite) == ["1", "100", "2", "3"]
    pytest_run(suite, "--devstash-refresh")
    assert calls(suite) == ["1", "1", "100", "100", "2", "2", "3", "3"]


def test_xdist_workers_share_the_cache(suite):
    pytest.importorskip("xdist")
    first = pytest_run(suite, "--devstash", "-n", "2")
    assert "1 failed, 1 passed" in first.stdout, first.stdout + first.stderr
    fetched = calls(suite)
    again = pytest_run(suite, "--devstash", "-n", "2")
    assert "1 failed, 1 passed" in again.stdout
    assert calls(suite) == fetched                   # the workers hit what was stored


def test_activate_in_conftest_keeps_assertion_details(suite):
    (suite / "conftest.py").write_text("import devstash\ndevstash.activate()\n" + CONFTEST.lstrip("\n"))
    for _ in range(2):
        run = pytest_run(suite)
        assert "1 failed, 1 passed" in run.stdout
        assert "assert [2, 3] == [2, 99]" in run.stdout
    # The test file and the module it imports hit; the conftest file itself
    # was already running when it called activate(), so its marker is not
    # live (pytest --devstash has no such limit).
    assert calls(suite) == ["1", "100", "100", "2", "3"]
