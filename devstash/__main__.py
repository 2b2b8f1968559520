"""The devstash command: `devstash COMMAND` or `python -m devstash COMMAND`."""
import argparse
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
    parser = argparse.ArgumentParser(
        prog="devstash", description="Persistent cache for # @devstash marked lines."
    )
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
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
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
    return ns.handler(ns)


if __name__ == "__main__":
    sys.exit(main())
