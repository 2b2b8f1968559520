"""`devstash run script.py [args]` and `devstash run -m module [args]`: run
code with its markers live, without an activate() call in it, the way
`python script.py args` and `python -m module args` run it: a fresh
__main__ module, the same sys.argv and sys.path[0], the same exit status and
tracebacks without devstash's frames. An activate() call in the code does
nothing. The import hook is installed first, so project modules the code
imports (a test file's imports under `-m pytest`) carry their markers."""
import os
import sys
import types
from _frozen_importlib_external import SourceFileLoader

from . import _activate
from . import _hook
from . import _runtime

_launcher = None  # the __main__ module devstash was started as, kept alive


def run_path(path: str, args) -> None:
    """Runs a script as `python path args` would; exits with its status. A
    folder runs its __main__.py with the folder first on sys.path; a zip
    archive (a zipapp) runs as python runs it, its markers not live: devstash
    reads markers from files."""
    full = os.path.abspath(path)
    if os.path.isdir(full):
        return _run_folder(path, full, args)
    import zipfile

    if os.path.isfile(full) and zipfile.is_zipfile(full):
        return _run_zipapp(path, full, args)
    try:
        with open(full, "rb") as f:
            source = f.read()
    except OSError as exc:
        sys.stderr.write(f"devstash run: can't open file {path!r}: [Errno {exc.errno}] {exc.strerror}\n")
        raise SystemExit(2) from None  # python's status for a missing script
    sys.argv[:] = [path, *args]
    _set_path0(os.path.dirname(full))
    main = _fresh_main()
    main.__file__ = full
    main.__loader__ = SourceFileLoader("__main__", full)
    if _activate.skip_requested():
        code = _compile(lambda: compile(source, full, "exec", dont_inherit=True))
    else:
        _activate.mark_active()
        _hook.install(full)
        code = _compile(lambda: _compile_marked(source, full))
    _activate.run_code(code, main.__dict__, None)


def _run_folder(path: str, full: str, args) -> None:
    script = os.path.join(full, "__main__.py")
    if not os.path.isfile(script):
        sys.stderr.write(f"devstash run: can't find '__main__' module in {path!r}\n")
        raise SystemExit(1)
    run_path(script, args)
    # not reached: run_path exits


def _run_zipapp(path: str, full: str, args) -> None:
    import runpy

    _runtime.warn(f"markers are not live in {path}: devstash reads them from .py files, and a zip "
                  "archive holds none it can rewrite; run its folder instead")
    sys.argv[:] = [path, *args]
    _set_path0(full)
    _activate.mark_active()
    try:
        runpy.run_path(full, run_name="__main__")
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        _activate.exit_uncaught(exc)
    raise SystemExit(0)


def _compile_marked(source: bytes, path: str):
    if not _hook.has_markers(source):
        return compile(source, path, "exec", dont_inherit=True)
    code, sites = _runtime.compile_module(source, path, 0, _runtime.open_store())
    _runtime.announce(sites, path)
    return code


def _compile(make):
    """A syntax or marker error is printed as python prints a SyntaxError."""
    try:
        return make()
    except SyntaxError as exc:
        _activate.report_marker_error(exc)


def run_module(name: str, args) -> None:
    """Runs a module as `python -m name args` would."""
    import runpy

    sys.argv[:] = [name, *args]  # runpy puts the module's file in argv[0]
    _set_path0(os.getcwd())
    if not _activate.skip_requested():
        _activate.mark_active()
        _hook.install(None)
    _fresh_main()
    # runpy._run_module_as_main is what `python -m` itself calls: it runs the
    # module in the real __main__ (here the fresh one) and reports a module
    # that cannot be found the way python does. run_module is the public
    # fallback, should it ever go away.
    run_as_main = getattr(runpy, "_run_module_as_main", None)
    try:
        if run_as_main is not None:
            run_as_main(name, True)
        else:
            runpy.run_module(name, run_name="__main__", alter_sys=True)
    except (SystemExit, KeyboardInterrupt):
        raise
    except BaseException as exc:
        _activate.exit_uncaught(exc)


def _set_path0(folder: str) -> None:
    """python puts the script's folder (for -m, the working directory) first
    on sys.path; devstash's launcher holds that slot: the console script's
    folder, or the working directory for `python -m devstash`."""
    if getattr(sys.flags, "safe_path", False):
        return  # python -P adds neither
    if sys.path:
        sys.path[0] = folder
    else:
        sys.path.insert(0, folder)


def _fresh_main() -> types.ModuleType:
    """A new, empty __main__ in sys.modules, as python gives every script."""
    import builtins

    global _launcher
    _launcher = sys.modules.get("__main__")
    main = types.ModuleType("__main__")
    main.__builtins__ = builtins
    main.__cached__ = None
    sys.modules["__main__"] = main
    return main
