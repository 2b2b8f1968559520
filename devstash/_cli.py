"""The devstash commands besides `run`: list, show, clear, compact, stats,
prune, export, import, doctor, remote status, push and pull. Only __main__
imports this module; the commands live in one module per group:
_cli_entries (list, show, stats), _cli_maintain (clear, compact, prune),
_cli_share (export, import), _cli_doctor (doctor), _cli_remote (remote
status, push, pull, list --remote), with _cli_common and _cli_values
beside them.

Exit codes: 0 success, 1 a user error (one line on stderr, "devstash: ..."),
2 a usage error (argparse).

Progress bars (export, import, push, pull) are drawn on stderr only when stderr is a
terminal, and only once the work has taken more than a second.
"""
import os
import sys

from . import _core, _signing
from ._cli_common import CliError, add_filters, describe, parse_duration, parse_size
from ._cli_doctor import cmd_doctor
from ._cli_entries import cmd_list, cmd_show, cmd_stats
from ._cli_maintain import cmd_clear, cmd_compact, cmd_prune
from ._cli_share import cmd_export, cmd_import


# ---- the parser ------------------------------------------------------------------

def command(handler):
    """Runs a command: a CliError or a failing store becomes one line on
    stderr and exit status 1."""
    def run(ns) -> int:
        try:
            return handler(ns)
        except CliError as exc:
            return fail(str(exc))
        except (OSError, _core.StoreError) as exc:
            if isinstance(exc, BrokenPipeError):
                # Output piped into head: not an error; keep exit quiet.
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                return 0
            return fail(describe(exc))
        except KeyboardInterrupt:
            return fail("interrupted", 130)
    run.__name__ = handler.__name__
    return run


def fail(message: str, status: int = 1) -> int:
    sys.stdout.flush()
    print(f"devstash: {message}", file=sys.stderr)
    return status


def add_commands(commands, common) -> None:
    """Adds every command but `run` to the subparsers of the devstash parser;
    common holds the options every command takes (--cache-dir)."""
    def add(name, handler, help, description=None):
        p = commands.add_parser(name, help=help, description=description or help,
                                parents=[common])
        p.set_defaults(handler=command(handler), parser=p)
        return p

    p = add("list", cmd_list, "list cached entries",
            "One row per entry: key prefix, callee, call site, size, age, TTL state, hits.")
    add_filters(p)
    p.add_argument("--json", action="store_true", help="print a JSON list (for scripts)")
    p.add_argument("--remote", action="store_true",
                   help="list the entries of the remote cache (DEVSTASH_REMOTE) instead")

    p = add("show", cmd_show, "show one entry and a summary of its value",
            "Show one entry: its metadata, and its value's size and type. A value stored with "
            "marshal (built-in types) is previewed; a pickle is not loaded, since loading one "
            "runs the code it names, unless --load is given.")
    p.add_argument("key", metavar="KEY", help="the key, or any unique hex prefix of it")
    p.add_argument("--load", action="store_true",
                   help="unpickle the value to show it (runs the code the pickle names: only "
                        "for a cache you trust)")

    p = add("clear", cmd_clear, "remove entries",
            "Remove entries: --all, or those matching every selector given.")
    p.add_argument("--all", action="store_true", help="remove every entry")
    add_filters(p)
    p.add_argument("--older-than", metavar="DURATION", type=parse_duration,
                   help="entries created longer ago than DURATION (30m, 2d, 1w)")

    add("compact", cmd_compact, "rewrite the store without its free space",
        "Write a compacted copy of the store and swap it in. Processes that have the store "
        "open meanwhile keep working on the old file; what they write after the swap is lost "
        "(recomputed later).")

    p = add("stats", cmd_stats, "entries, size, hits and time saved")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = add("prune", cmd_prune, "remove entries until the values fit a size",
            "Remove the least recently hit entries (entries never hit first, oldest first) "
            "until the values take at most --max-size.")
    p.add_argument("--max-size", metavar="SIZE", type=parse_size, required=True,
                   help="500M, 2G, ... (K, M, G, T are powers of 1024)")

    p = add("export", cmd_export, "write entries to a signed file a teammate can import",
            "Write the cache's unexpired entries to FILE, each signed with HMAC-SHA256 "
            f"(key: ${_signing.ENV_VAR}, else {_signing.key_file()}, created on first use). "
            "On a terminal, a progress bar shows once it takes more than a second.")
    p.add_argument("file", metavar="FILE")
    add_filters(p, expired=False)

    p = add("import", cmd_import, "merge the entries of an exported file",
            "Merge the entries of FILE into the cache; an entry created at the same time or "
            "later here is kept. Entries whose signature does not verify are refused. "
            "On a terminal, a progress bar shows once it takes more than a second.")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--trust", action="store_true",
                   help="also import entries that fail verification (their values are pickles: "
                        "loading one can run any code, so only for files you trust)")

    add("doctor", cmd_doctor, "check the cache and say how to fix what is wrong")

    remote = commands.add_parser("remote", help="the team cache (DEVSTASH_REMOTE)",
                                 description="The team cache: a Redis or HTTP cache server "
                                 "behind the local cache (DEVSTASH_REMOTE, DEVSTASH_REMOTE_MODE).")
    remote.set_defaults(parser=remote)
    sub = remote.add_subparsers(dest="remote_command", metavar="COMMAND", required=True)
    p = sub.add_parser("status", help="where the remote is, whether it answers, what it holds",
                       parents=[common])
    p.set_defaults(handler=command(_remote_command("cmd_remote_status")), parser=p)

    p = add("push", _remote_command("cmd_push"), "send local entries to the remote cache",
            "Send the cache's unexpired entries that the remote cache does not hold, signed "
            f"with ${_signing.ENV_VAR}. On a terminal, a progress bar shows once it takes more "
            "than a second.")
    add_filters(p, expired=False)

    p = add("pull", _remote_command("cmd_pull"), "fetch entries of the remote cache",
            "Fetch the remote cache's entries that the local cache does not hold; each is "
            "verified before it is written. On a terminal, a progress bar shows once it takes "
            "more than a second.")
    add_filters(p, expired=False)


def _remote_command(name):
    """A command of _cli_remote, imported when it runs."""
    def handler(ns) -> int:
        from . import _cli_remote

        return getattr(_cli_remote, name)(ns)
    handler.__name__ = name
    return handler
