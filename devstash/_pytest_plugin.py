"""The pytest plugin: `pytest --devstash` (or `devstash = true` in the ini
file) makes markers live in test files, conftest files and the project
modules they import, so cached API responses serve as test fixtures.

pytest loads test and conftest files through its own import hook, which
rewrites their asserts. devstash composes with it rather than competing: the
marked lines of such a file are rewritten first (devstash's tree), then
pytest rewrites the asserts of that same tree, so both work in one file. The
compiled result goes to pytest's own .pyc cache under a name of its own, so
a run without devstash never loads code rewritten with it. Other project
modules go through devstash's import hook, placed after pytest's.

xdist workers are processes of their own: the controller's choice reaches
them through the environment (DEVSTASH_PYTEST), and each composes again.
`--devstash-refresh` recomputes every marked value (DEVSTASH_REFRESH)."""
import importlib.util
import os

import pytest

from . import __version__

_ENV_ACTIVE = "DEVSTASH_PYTEST"


def pytest_addoption(parser):
    group = parser.getgroup("devstash", "devstash: cache marked lines across runs")
    group.addoption("--devstash", action="store_true", default=False,
                    help="make # @devstash markers live in tests, conftest files and project modules")
    group.addoption("--devstash-refresh", action="store_true", default=False,
                    help="with --devstash: recompute and replace every marked value")
    parser.addini("devstash", type="bool", default=False,
                  help="make # @devstash markers live, as --devstash does")


def _option(config, name) -> bool:
    """An option's value before pytest_configure: still in the early parse."""
    return bool(getattr(config.known_args_namespace, name, False))


def _wanted(config) -> bool:
    from . import _activate

    if _option(config, "devstash") or config.getini("devstash"):
        return True
    # An xdist worker of a controller that asked for it, or pytest started
    # by `devstash run -m pytest`.
    return os.environ.get(_ENV_ACTIVE) == "1" or _activate._done


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    """Before the first conftest is imported: pytest's assertion hook is in
    place by now, and devstash composes with it."""
    if not _wanted(early_config) or os.environ.get("DEVSTASH_SKIP_REWRITE", "").lower() in ("1", "true", "yes"):
        return
    os.environ[_ENV_ACTIVE] = "1"
    if _option(early_config, "devstash_refresh"):
        os.environ["DEVSTASH_REFRESH"] = "1"
    from . import _activate, _hook

    _activate.mark_active()  # an activate() in a conftest file has nothing left to do
    _hook.install(None)
    compose_with_pytest()


_composed = False


def compose_with_pytest() -> bool:
    """Makes pytest's assertion rewriting rewrite devstash's markers first,
    and puts devstash's finder after pytest's. False when pytest's
    assertion rewriting is not in use (then devstash's finder takes the
    test files as any project module)."""
    global _composed
    import sys

    rewrite = sys.modules.get("_pytest.assertion.rewrite")
    if rewrite is None:
        return False
    hook_type = getattr(rewrite, "AssertionRewritingHook", None)
    if not any(isinstance(f, hook_type) for f in sys.meta_path):
        return False
    if not _composed:
        _composed = True
        original = rewrite._rewrite_test

        def _rewrite_test(fn, config):
            return _rewrite_marked_test(rewrite, original, fn, config)

        rewrite._rewrite_test = _rewrite_test
        # Its own .pyc name: a run without devstash must not load this code.
        rewrite.PYC_TAIL = f".{rewrite.PYTEST_TAG}-devstash-{__version__}{rewrite.PYC_EXT}"
    _after_pytest(hook_type)
    return True


def _rewrite_marked_test(rewrite, original, fn, config):
    from . import _core, _runtime

    source = fn.read_bytes()
    if not (_core.has_marker(source) and _core.markers(source)):
        return original(fn, config)
    strfn = str(fn)
    tree, _sites = _core.rewrite(source, strfn, 0, True)
    rewrite.rewrite_asserts(tree, source, strfn, config)
    _runtime.warn_near_markers(strfn, _core.near_markers(source))
    code = compile(tree, strfn, "exec", dont_inherit=True)
    return importlib.util.source_hash(source), code


def _after_pytest(hook_type) -> None:
    """devstash's finder right after pytest's, which keeps the test files."""
    import sys

    from . import _hook

    finder = _hook._finder
    if finder is None or finder not in sys.meta_path:
        return
    sys.meta_path.remove(finder)
    index = max(i for i, f in enumerate(sys.meta_path) if isinstance(f, hook_type))
    sys.meta_path.insert(index + 1, finder)
