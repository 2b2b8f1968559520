"""activate(): run the rest of the main script, rewritten, as the real __main__."""
import os
import sys

from . import _core
from . import _hook
from . import _runtime

# A runner (devstash run, the pytest plugin) made the markers live already:
# an activate() call in the code it runs does nothing.
_done = False
# activate() is running a script now: an activate() inside it does nothing.
# Not a once-per-process flag: IPython's %run runs a script again and again.
_running = False


skip_requested = _runtime.skip_requested


def mark_active() -> None:
    """From now on activate() does nothing: `devstash run` has done its work."""
    global _done
    _done = True


def activate_main(frame) -> None:
    __tracebackhide__ = True  # IPython and pytest leave devstash's frames out
    if _done or _running or skip_requested():
        return
    namespace = frame.f_globals
    in_main = namespace.get("__name__") == "__main__"
    # The code's own file name: pdb, cProfile, trace and runpy run a script
    # in a namespace of their own (not sys.modules["__main__"]) and may hand
    # it a str subclass as __file__; the frame knows which file runs.
    path = str(os.fspath(frame.f_code.co_filename))
    _hook.install(path if in_main else _main_file())
    if not in_main:
        # Called from an imported module: the hook is all there is to do. In
        # a conftest file, devstash also composes with pytest's assertion
        # rewriting, so that test files keep both.
        if "_pytest.assertion.rewrite" in sys.modules:
            from . import _pytest_plugin

            _pytest_plugin.compose_with_pytest()
        return
    if frame.f_code.co_name != "<module>":
        raise RuntimeError(
            f"{frame.f_code.co_filename}:{frame.f_lineno}: devstash.activate() must be called "
            "at the top level of the script, not inside a function"
        )
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError:
        # python -c, standard input, a zipapp: the code came from no file.
        _runtime.warn(f"markers are not live in {path}: devstash reads them from the script's "
                      "file, and this code came from none (python -c, standard input or a zip "
                      "archive); save it as a .py file, or use devstash run")
        return
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
    run_code(code, namespace, frame)


def _main_file():
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    return str(os.fspath(path)) if path is not None else None


def report_marker_error(exc) -> None:
    """Prints a marker error as Python prints a SyntaxError, and exits."""
    import traceback

    sys.stderr.write("".join(traceback.format_exception_only(type(exc), exc)))
    raise SystemExit(1)


def run_code(code, namespace, frame) -> None:
    """Executes the rest of the script, then ends the original module code
    (which would run it again, unrewritten) as a finished script ends: with
    SystemExit(0), which devstash's excepthook keeps quiet (python -i would
    print it). The user's own exception goes up as it is, with devstash's
    frames cut, so that pdb's and python -i's post-mortem land where it was
    raised; only when the activate() call sits inside a try, whose handlers
    would catch it, does devstash report it and exit as Python would."""
    global _running
    __tracebackhide__ = True
    _install_excepthook(frame)
    _running = True
    try:
        exec(code, namespace)
    except SystemExit:
        raise
    except BaseException as exc:
        exc.__traceback__ = _runtime.user_traceback(exc.__traceback__)
        if _inside_handler(frame):
            exit_uncaught(exc)
        raise
    finally:
        _running = False
    raise ScriptFinished(0)


class ScriptFinished(SystemExit):
    """The script ran to its end inside activate()."""


def _inside_handler(frame) -> bool:
    """Whether the activate() call in `frame` is covered by a try or with
    (an entry of the code's exception table). Python 3.10 has no table:
    there, the script's source says. No frame (devstash run): nothing to
    cover it."""
    if frame is None:
        return False
    try:
        import dis

        entries = dis._parse_exception_table(frame.f_code)
    except (AttributeError, ImportError):
        return _inside_block_310(frame)
    return any(e.start <= frame.f_lasti < e.end for e in entries)


def _inside_block_310(frame) -> bool:
    """Python 3.10: whether the line of the activate() call lies inside a
    try or with statement of the module's code (functions and classes
    aside); when the source cannot tell, assume it does."""
    import ast

    try:
        with open(frame.f_code.co_filename, "rb") as f:
            tree = ast.parse(f.read())
    except (OSError, SyntaxError, ValueError):
        return True
    line = frame.f_lineno
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        start = getattr(node, "lineno", None)  # a match case has no position
        if start is not None and not start <= line <= node.end_lineno:
            continue
        if isinstance(node, (ast.Try, ast.With, ast.AsyncWith)):
            return True
        for field in ("body", "orelse", "finalbody", "handlers", "cases"):
            todo.extend(getattr(node, field, ()))
    return False


_activation_frame = None


def _install_excepthook(frame) -> None:
    """Tracebacks printed for the script show its own frames only: not the
    activate() call that ran it, nor devstash's."""
    global _activation_frame
    _activation_frame = frame
    original = sys.excepthook
    if getattr(original, "_devstash", False):
        return  # installed by an earlier run in this process (%run)

    def excepthook(exc_type, exc, tb):
        if isinstance(exc, ScriptFinished):
            return
        while tb is not None and tb.tb_frame is _activation_frame:
            tb = tb.tb_next
        tb = _runtime.user_traceback(tb)
        if isinstance(exc, BaseException):
            exc.__traceback__ = tb   # what Python's own hook prints from
        original(exc_type, exc, tb)

    excepthook._devstash = True
    sys.excepthook = excepthook


def exit_uncaught(exc: BaseException) -> None:
    """What python does with an uncaught exception (print its traceback,
    exit with 1), with devstash's own frames cut from the traceback."""
    tb = _runtime.user_traceback(exc.__traceback__)
    exc.__traceback__ = tb
    sys.excepthook(type(exc), exc, tb)
    raise SystemExit(1) from None
