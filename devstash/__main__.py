"""The devstash command (``devstash`` / ``python -m devstash``)."""
import sys


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    sys.stderr.write("devstash: no command line yet (see the project's issues)\n")
    return 2 if args or not args else 0


if __name__ == "__main__":
    sys.exit(main())
