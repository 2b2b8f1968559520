"""The import hook: modules of the user's project get their markers too.

One meta-path finder sits ahead of the default ones. It asks the ordinary
PathFinder where a module is and takes only plain .py sources inside the
project (the main script's folder, the working directory and the folders in
DEVSTASH_PATH), never the standard library or site-packages. A module without
markers keeps its ordinary spec and loader, so it loads with its ordinary .pyc;
checking it costs one read and a byte search in C.
"""
import os
import sys
from importlib.machinery import PathFinder, SourceFileLoader

from . import _core
from . import _runtime


def has_markers(source: bytes) -> bool:
    return _core.has_marker(source) and bool(_core.markers(source))


class DevstashLoader(SourceFileLoader):
    """Loads a marked module: rewritten code, from the code cache when the
    source is unchanged. Tracebacks keep the module's own file and lines."""

    def get_code(self, fullname):
        source = self.get_data(self.path)
        code, _sites = _runtime.compile_module(source, self.path, 0, _runtime.open_store())
        return code


class DevstashFinder:
    def __init__(self, roots):
        self.roots = tuple(sorted({os.path.join(os.path.abspath(r), "") for r in roots if r}))

    def in_project(self, filename: str) -> bool:
        return filename.startswith(self.roots) and not _runtime.is_library_file(filename)

    def find_spec(self, fullname, path=None, target=None):
        spec = PathFinder.find_spec(fullname, path, target)
        if spec is None or type(spec.loader) is not SourceFileLoader:
            return spec
        origin = spec.origin
        if not origin.endswith(".py") or not self.in_project(origin):
            return spec
        try:
            with open(origin, "rb") as f:
                marked = has_markers(f.read())
        except OSError:
            return spec
        if marked:
            spec.loader = DevstashLoader(fullname, origin)
        return spec

    def invalidate_caches(self):
        PathFinder.invalidate_caches()


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
    global _finder
    if _finder is None:
        _finder = DevstashFinder(project_roots(main_file))
        sys.meta_path.insert(0, _finder)
        _warn_early_imports(_finder)
    return _finder


def _warn_early_imports(finder) -> None:
    for name, module in list(sys.modules.items()):
        filename = getattr(module, "__file__", None)
        if name in ("__main__", "__mp_main__") or not filename or not filename.endswith(".py"):
            continue
        if not finder.in_project(os.path.abspath(filename)):
            continue
        if isinstance(getattr(module, "__loader__", None), DevstashLoader):
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
