"""`devstash run script.py [args]` and `devstash run -m module [args]`: run
code with its markers live, without an activate() call in it."""
import os
import sys
import types

from . import _activate
from . import _core
from . import _hook
from . import _runtime


def run_path(path: str, args) -> None:
    """Runs a script as a real __main__, as `python path args` would."""
    path = os.path.abspath(path)
    try:
        with open(path, "rb") as f:
            source = f.read()
    except OSError as exc:
        raise SystemExit(f"devstash run: cannot read {path}: {exc.strerror}") from None
    sys.argv[:] = [path, *args]
    sys.path[0:0] = [os.path.dirname(path)]
    main = types.ModuleType("__main__")
    main.__file__ = path
    main.__builtins__ = __builtins__
    main.__spec__ = None
    sys.modules["__main__"] = main
    if _activate.skip_requested():
        code = compile(source, path, "exec", dont_inherit=True)
    else:
        _activate.mark_active()
        _hook.install(path)
        code = _compile_marked(source, path)
    _activate.run_code(code, main.__dict__)


def _compile_marked(source: bytes, path: str):
    if not _hook.has_markers(source):
        return compile(source, path, "exec", dont_inherit=True)
    try:
        return _runtime.compile_module(source, path, 0, _runtime.open_store())[0]
    except _core.MarkerError as exc:
        _activate.report_marker_error(exc)


def run_module(name: str, args) -> None:
    """Runs a module as __main__, as `python -m name args` would."""
    import runpy

    sys.argv[:] = [name, *args]  # runpy puts the module's file in argv[0]
    sys.path[0:0] = [os.getcwd()]
    if not _activate.skip_requested():
        _activate.mark_active()
        _hook.install(None)
    try:
        runpy.run_module(name, run_name="__main__", alter_sys=True)
    except ImportError as exc:
        if getattr(exc, "name", None) == name or str(exc).startswith("No module named"):
            raise SystemExit(f"devstash run: {exc}") from None
        raise
