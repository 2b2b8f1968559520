"""activate(): run the rest of the main script, rewritten, as the real __main__."""
import sys

from . import _core
from . import _hook
from . import _runtime

_done = False  # activate() runs once per process


skip_requested = _runtime.skip_requested


def mark_active() -> None:
    """From now on activate() does nothing: `devstash run` has done its work."""
    global _done
    _done = True


def activate_main(frame) -> None:
    if _done or skip_requested():
        return
    mark_active()
    main = sys.modules.get("__main__")
    namespace = getattr(main, "__dict__", None)
    path = namespace.get("__file__") if namespace else None
    _hook.install(path)
    if frame.f_globals is not namespace:
        return  # called from an imported module: the hook is all there is to do
    if frame.f_code.co_name != "<module>":
        raise RuntimeError(
            f"{frame.f_code.co_filename}:{frame.f_lineno}: devstash.activate() must be called "
            "at the top level of the script, not inside a function"
        )
    path = path or (sys.argv[0] if sys.argv else "")
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError:
        return  # python -c, an interactive session, a zipapp: no script file to read
    if not _core.has_marker(source) or not _core.markers(source):
        # Nothing to cache: the script goes on untouched, never re-executed.
        # A marker written wrong is said, so that it is not silently ignored.
        if b"evstash" in source or b"EVSTASH" in source:
            _runtime.warn_near_markers(path, _core.near_markers(source))
        return
    store = _runtime.open_store()
    try:
        code, sites = _runtime.compile_module(source, path, frame.f_lineno, store, frame.f_code)
    except _core.MarkerError as exc:
        report_marker_error(exc)
    _runtime.announce(sites, path)
    run_code(code, namespace)


def report_marker_error(exc) -> None:
    """Prints a marker error as Python prints a SyntaxError, and exits."""
    import traceback

    sys.stderr.write("".join(traceback.format_exception_only(type(exc), exc)))
    raise SystemExit(1)


def run_code(code, namespace) -> None:
    """Executes the rest of the script and exits as the script would have."""
    try:
        exec(code, namespace)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        exit_uncaught(exc)
    raise SystemExit(0)


def exit_uncaught(exc: BaseException) -> None:
    """What python does with an uncaught exception (print its traceback,
    exit with 1), with devstash's own frames cut from the traceback."""
    tb = _runtime.user_traceback(exc.__traceback__)
    exc.__traceback__ = tb
    sys.excepthook(type(exc), exc, tb)
    raise SystemExit(1) from None
