"""Helpers shared by the soak scripts and by tests/test_hardening.py."""
import os
import subprocess
import sys
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)


def child_env(extra=None):
    """The environment of a user's script: ours without DEVSTASH_* settings,
    quiet (only warnings on stderr), plus `extra` (a None value removes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVSTASH_")}
    env["DEVSTASH_QUIET"] = "1"
    env.update(extra or {})
    return {k: v for k, v in env.items() if v is not None}


def write(folder, name, source):
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(textwrap.dedent(source).lstrip("\n"))
    return path


def run(folder, args, env=None, timeout=120, preexec_fn=None, prefix=()):
    """Runs `python ARGS` in folder (behind `prefix`, e.g. an unshare
    command); returns the CompletedProcess with text output."""
    return subprocess.run(
        [*prefix, sys.executable, *args], cwd=folder, env=child_env(env),
        capture_output=True, text=True, timeout=timeout, preexec_fn=preexec_fn,
    )


def devstash_lines(stderr: str):
    """The lines devstash wrote on stderr (warnings, status, unraisable
    exceptions raised inside it)."""
    return [line for line in stderr.splitlines()
            if line.startswith("devstash") or "Exception ignored" in line or "Traceback" in line]


def list_command(folder, env=None):
    """Runs `python -m devstash list` if that command exists: returns the
    CompletedProcess, or None when the CLI has no `list` yet (usage error)."""
    proc = run(folder, ["-m", "devstash", "list"], env=env)
    if proc.returncode == 2 and ("invalid choice" in proc.stderr or "usage:" in proc.stderr):
        return None
    return proc
