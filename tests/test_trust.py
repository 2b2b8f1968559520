"""A cache nobody else can write, values checked before they are trusted:
the cache folder as a security boundary, checksums, damaged files, signed
exports, the signing key, and entries from a clock that ran ahead. Run as
users meet them: scripts and the devstash command in subprocesses."""
import json
import os
import pickle
import re
import stat
import subprocess
import sys
import time

import pytest
from conftest import line_of
from test_cli import HEADER, base_env, cache, cli, listing, run, teammate

from devstash import _core

# An owner nobody is on this machine: the "other local user".
OTHER_UID = OTHER_GID = 54321


def chown_tree(path, uid=OTHER_UID, gid=OTHER_GID):
    os.chown(path, uid, gid)
    if os.path.isdir(path) and not os.path.islink(path):
        for name in os.listdir(path):
            os.chown(os.path.join(path, name), uid, gid, follow_symlinks=False)


def devstash_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("devstash:")]


SCRIPT = HEADER + """
import sys

def slow(x):
    print("computing", x)
    return {"x": x, "text": f"hello world {x}"}

a = slow(1)  # @devstash ttl=1h
b = slow(2)  # @devstash
print("done", a["x"], b["x"])
"""


@pytest.fixture
def filled(scripts):
    """A folder whose cache holds the two entries of SCRIPT."""
    scripts.path = scripts.write("script.py", SCRIPT)
    assert "computing 1" in run(scripts).stdout
    assert "computing" not in run(scripts).stdout
    return scripts


# ---- 7. entries created in the future ------------------------------------------

def test_an_entry_created_in_the_future_counts_as_expired(filled):
    """Stored while the clock was an hour ahead: an entry with a ttl counts
    as expired (the script recomputes it, list says so); one without a ttl
    is still valid."""
    folder = filled.folder
    with _core.Store(str(cache(folder))) as store:
        for meta in store.entries():
            _created, data, buffers = store.get(meta["key"])
            store.put(meta["key"], data, buffers, created=time.time() + 3600, ttl=meta["ttl"],
                      compute=meta["compute"], callee=meta["callee"], site=meta["site"])
    line_a = line_of(filled.path, "a = slow(1)")
    rows = {e["line"]: e for e in listing(folder)}
    assert rows[line_a]["expired"] is True
    assert rows[line_of(filled.path, "b = slow(2)")]["expired"] is False
    assert [e["line"] for e in listing(folder, "--expired")] == [line_a]
    text = cli(folder, "list").stdout
    row = next(r for r in text.splitlines() if f"script.py:{line_a} " in r)
    assert "future" in row and "expired (created in the future)" in row
    out = run(filled).stdout
    assert "computing 1" in out and "computing 2" not in out
    assert all(not e["expired"] for e in listing(folder))   # replaced by a fresh value
