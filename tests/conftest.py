"""Helpers for running user scripts the way users run them: `python script.py`
in a fresh subprocess, in a folder of its own, reading what they print."""
import os
import subprocess
import sys
import textwrap

import pytest


class ScriptRunner:
    def __init__(self, folder):
        self.folder = folder

    def write(self, name, source):
        path = self.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip("\n"))
        return path

    def run(self, name="script.py", *args, env=None, check=True, input=None):
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("DEVSTASH_")}
        full_env["DEVSTASH_QUIET"] = "1"  # tests of the status lines turn them back on
        full_env.update(env or {})
        full_env = {k: v for k, v in full_env.items() if v is not None}
        proc = subprocess.run(
            [sys.executable, name, *args],
            cwd=self.folder,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=120,
            input=input,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{name} exited with {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
            )
        return proc


def line_of(path, text):
    """1-based number of the first line of the file at path that contains text."""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in {path}")


@pytest.fixture
def scripts(tmp_path):
    return ScriptRunner(tmp_path)
