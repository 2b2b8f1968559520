"""The import hook: modules of the user's project get their markers too.

One meta-path finder sits ahead of the default ones. It asks the ordinary
PathFinder where a module is and takes only plain .py sources inside the
project (the main script's folder, the working directory and the folders in
DEVSTASH_PATH) that hold a marker, never the standard library or
site-packages. For every other module it answers None, so the ordinary
finders (frozen modules, editable installs, ...) and loaders do their usual
work, .pyc included. Checking a project module costs one read and a byte
search in C; a submodule of a package outside the project is not looked at.

It also carries the markers into processes that multiprocessing spawns (the
"spawn" and "forkserver" start methods), see the end of this file. Forked
children need nothing: they inherit the rewritten code.
"""
import os
import sys
# The import system's own classes, from the frozen module it runs on (what
# importlib.machinery re-exports): importing importlib.machinery and
# importlib.util would cost milliseconds at every start.
from _frozen_importlib_external import PathFinder, SourceFileLoader, spec_from_file_location

from . import _core
from . import _runtime

# The name a spawned child imports the parent's main script by (never a real
# module: only the child's finder answers it).
MAIN_NAME = "__devstash_main__"


def has_markers(source: bytes) -> bool:
    return _core.has_marker(source) and bool(_core.markers(source))


class DevstashLoader(SourceFileLoader):
    """Loads a marked module: rewritten code, from the store's code cache
    when the source is unchanged. The code keeps the module's file and line
    numbers, so tracebacks point at the user's lines. It writes no .pyc: the
    ordinary .pyc must stay the unrewritten code."""

    def get_code(self, fullname):
        source = self.get_data(self.path)
        try:
            code, _sites = _runtime.compile_module(source, self.path, 0, _runtime.open_store())
        except SyntaxError as exc:  # MarkerError included: shown as python shows
            raise exc.with_traceback(None) from None  # a SyntaxError, no devstash internals
        return code


def _folders(paths):
    """Absolute folders ending with a separator, also through symlinks, so a
    prefix test cannot match /proj-old for /proj."""
    out = set()
    for path in paths:
        if path:
            path = os.path.abspath(path)
            out.add(os.path.join(path, ""))
            out.add(os.path.join(os.path.realpath(path), ""))
    return tuple(sorted(out))


def _is_library(filename: str) -> bool:
    # dist-packages: Debian's site-packages, also when it is not on sys.path
    return _runtime.is_library_file(filename) or f"{os.sep}dist-packages{os.sep}" in filename


class DevstashFinder:
    def __init__(self, roots, main_file=None):
        self.roots = _folders(roots)
        self.main_file = main_file  # set in a spawned child only

    def in_project(self, filename: str) -> bool:
        return filename.startswith(self.roots) and not _is_library(filename)

    def _may_hold(self, entry) -> bool:
        """Whether a folder of a package's __path__ can hold project files:
        it is inside a root, or a root is inside it."""
        if not isinstance(entry, str):
            return False
        folder = os.path.join(os.path.abspath(entry), "")
        return any(folder.startswith(root) or root.startswith(folder) for root in self.roots)

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "multiprocessing.spawn":
            return _spawn_module_spec(fullname, path, target)
        if fullname == MAIN_NAME and self.main_file:
            return spec_from_file_location(
                MAIN_NAME, self.main_file, loader=DevstashLoader(MAIN_NAME, self.main_file))
        if path is not None and not any(self._may_hold(entry) for entry in path):
            return None  # numpy.core.x, email.mime.y: cheap to rule out
        spec = PathFinder.find_spec(fullname, path, target)
        if spec is None or type(spec.loader) is not SourceFileLoader:
            return None
        origin = os.path.abspath(spec.origin)
        if not origin.endswith(".py") or not self.in_project(origin):
            return None
        try:
            with open(origin, "rb") as f:
                marked = has_markers(f.read())
        except OSError:
            return None
        if not marked:
            return None
        spec.loader = DevstashLoader(fullname, spec.origin)
        return spec


_finder = None


def project_roots(main_file=None):
    roots = [os.getcwd()]
    if main_file:
        roots.append(os.path.dirname(os.path.abspath(main_file)))
    roots.extend(p for p in os.environ.get("DEVSTASH_PATH", "").split(os.pathsep) if p)
    return roots


def install(main_file=None) -> DevstashFinder:
    """Puts the finder first on sys.meta_path (once) and warns about marked
    project modules that were imported before: their markers are not live."""
    if _finder is None:
        _warn_early_imports(_install(DevstashFinder(project_roots(main_file))))
    return _finder


def _install(finder) -> DevstashFinder:
    global _finder
    _finder = finder
    sys.meta_path.insert(0, finder)
    spawn = sys.modules.get("multiprocessing.spawn")
    if spawn is not None:
        _patch_spawn(spawn)
    return finder


def _warn_early_imports(finder) -> None:
    # Runs at every activate(): the cheap tests come first (most modules are
    # the standard library's, whose absolute paths fail the roots prefix).
    roots = finder.roots
    for name, module in list(sys.modules.items()):
        filename = getattr(module, "__file__", None)
        if not isinstance(filename, str) or not filename.endswith(".py"):
            continue
        if not os.path.isabs(filename):
            filename = os.path.abspath(filename)
        if not filename.startswith(roots) or name in ("__main__", "__mp_main__"):
            continue
        if isinstance(getattr(module, "__loader__", None), DevstashLoader) or not finder.in_project(filename):
            continue
        try:
            with open(filename, "rb") as f:
                marked = has_markers(f.read())
        except OSError:
            continue
        if marked:
            _runtime.warn(
                f"module {name} ({filename}) was imported before devstash.activate(): "
                "its markers are not live; import it after activate() or use `devstash run`"
            )


# ---- multiprocessing: spawned children -------------------------------------
#
# A spawned child starts a fresh interpreter, reads a dict of "preparation
# data" from its parent, then (multiprocessing.spawn.prepare) restores
# sys.path and re-creates the parent's main module: runpy.run_path(script)
# for a script, runpy.run_module(name) for `python -m name`. Only then does it
# unpickle the process object, whose target the main module must hold.
#
# The parent adds one entry to that dict: an object whose unpickling, in the
# child and before prepare(), installs this finder with the parent's roots.
# When the parent runs its main script rewritten, the entry also swaps
# init_main_from_path for init_main_from_name = MAIN_NAME: prepare() then
# runs runpy.run_module(MAIN_NAME) as __mp_main__, the child's finder answers
# with the script and DevstashLoader, and the child's main module is the
# whole script rewritten, its activate() call a no-op. The original script is
# never executed in the child, so nothing runs twice and no function is
# defined unrewritten. Project modules the child imports (the target's own
# module, under `python -m`, too) go through the finder as in the parent.
#
# multiprocessing.spawn costs ~10 ms to import, so it is patched when the
# program imports it: the finder sees that import and wraps its loader.


def _spawn_module_spec(fullname, path, target):
    spec = PathFinder.find_spec(fullname, path, target)
    if spec is not None and hasattr(spec.loader, "exec_module"):
        spec.loader = _PatchAfterExec(spec.loader, _patch_spawn)
    return spec


class _PatchAfterExec:
    """Loads a standard-library module with its own loader, then patches it.
    The module sees its own loader only."""

    def __init__(self, loader, patch):
        self.loader = loader
        self.patch = patch

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        self.patch(module)

    def __getattr__(self, name):  # get_code, get_source, ... for whoever asks
        return getattr(self.loader, name)


def _patch_spawn(spawn) -> None:
    import functools

    original = spawn.get_preparation_data
    if getattr(original, "__devstash__", False):
        return

    @functools.wraps(original)
    def get_preparation_data(name):
        data = original(name)
        if _finder is not None:
            _add_child_setup(data)
        return data

    get_preparation_data.__devstash__ = True
    spawn.get_preparation_data = get_preparation_data


def _add_child_setup(data) -> None:
    if not _devstash_importable_in_child():
        return
    main_file = None
    path = data.get("init_main_from_path")
    main = sys.modules.get("__main__")
    if (path is not None and _core.RUNTIME_NAME in getattr(main, "__dict__", ())
            and os.path.splitext(os.path.basename(path))[0] != "ipython"):
        # the parent's main script runs rewritten (its prologue bound the
        # runtime): the child imports it through the finder, rewritten too
        del data["init_main_from_path"]
        data["init_main_from_name"] = MAIN_NAME
        main_file = path
    elif data.get("init_main_from_name") == MAIN_NAME:
        main_file = _finder.main_file  # a spawned child spawning in turn
    data["devstash"] = _ChildSetup(_finder.roots, main_file)


def _devstash_importable_in_child() -> bool:
    """The child unpickles the setup before prepare() restores sys.path: its
    path then lacks only the parent's sys.path[0] (the script's folder) and
    has the working directory instead. A devstash found only through the
    script's folder cannot be imported there: the child then runs without
    markers rather than failing."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    entries = [os.path.abspath(p) for p in sys.path if isinstance(p, str)]
    if root not in entries:
        return True  # found by a finder set up at startup (an editable install)
    return root in entries[1:] or root == os.getcwd()


class _ChildSetup:
    """In the preparation data: unpickles as a call to spawn_child."""

    def __init__(self, roots, main_file):
        self.roots = roots
        self.main_file = main_file

    def __reduce__(self):
        return (spawn_child, (self.roots, self.main_file))


def spawn_child(roots, main_file) -> None:
    """Runs in a spawned child while its preparation data is unpickled."""
    from . import _activate

    if _activate.skip_requested():
        return
    _activate.mark_active()  # the script's activate() call has nothing left to do
    if _finder is None:
        _install(DevstashFinder(roots, main_file))
    elif main_file:
        # forked from a forkserver whose preloaded __main__ installed the
        # finder already: it only lacks the script to answer MAIN_NAME with
        _finder.main_file = main_file
