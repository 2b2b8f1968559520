"""The devstash command: `devstash COMMAND` or `python -m devstash COMMAND`.

`run` is dispatched here, before argparse, so that everything after the
target belongs to the script; the other commands live in _cli.py.
"""
import argparse
import os
import sys


def _run(ns) -> int:
    from . import _run

    if ns.module:
        _run.run_module(ns.module, ns.args)
    elif ns.target:
        _run.run_path(ns.target, ns.args)
    else:
        raise SystemExit("devstash run: give a script or -m MODULE")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import _cli

    parser = argparse.ArgumentParser(
        prog="devstash", description="Persistent cache for # @devstash marked lines."
    )
    parser.add_argument("--cache-dir", metavar="DIR",
                        help="the cache folder (default: $DEVSTASH_CACHE_DIR or ./.devstash_cache)")
    # The same option after the command; SUPPRESS keeps a value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--cache-dir", metavar="DIR", default=argparse.SUPPRESS,
                        help="the cache folder (default: $DEVSTASH_CACHE_DIR or ./.devstash_cache)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    run = commands.add_parser(
        "run", help="run a script or module with its markers live",
        description="Run a script (or -m module) with # @devstash markers live, "
        "without an activate() call in it.",
    )
    run.add_argument("-m", dest="module", metavar="MODULE", help="run a module, like python -m")
    run.add_argument("target", nargs="?", help="the script to run")
    run.add_argument("args", nargs=argparse.REMAINDER, help="arguments for the script")
    run.set_defaults(handler=_run)
    _cli.add_commands(commands, common)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # A leading --cache-dir also reaches `run` and its script: through the
    # environment, as DEVSTASH_CACHE_DIR.
    if argv and argv[0].startswith("--cache-dir="):
        os.environ["DEVSTASH_CACHE_DIR"] = argv.pop(0).partition("=")[2]
    elif len(argv) >= 2 and argv[0] == "--cache-dir":
        os.environ["DEVSTASH_CACHE_DIR"] = argv[1]
        del argv[:2]
    # `devstash run -m mod args...`: everything after the module belongs to it
    # `devstash run [-m] target args...`: everything after the target belongs
    # to it, options included, as with python itself
    if len(argv) >= 2 and argv[0] == "run" and argv[1] not in ("-h", "--help"):
        from . import _run

        if argv[1] == "-m" and len(argv) >= 3:
            _run.run_module(argv[2], argv[3:])
            return 0
        if not argv[1].startswith("-"):
            _run.run_path(argv[1], argv[2:])
            return 0
    ns = build_parser().parse_args(argv)
    if getattr(ns, "cache_dir", None):
        os.environ["DEVSTASH_CACHE_DIR"] = ns.cache_dir
    return ns.handler(ns)


if __name__ == "__main__":
    sys.exit(main())
