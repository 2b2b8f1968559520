"""Markers in IPython cells: `%load_ext devstash` in a real InteractiveShell,
cells run through shell.run_cell in a subprocess. Two subprocesses are a
kernel restart: the second must print the same values without computing."""
import pytest

pytest.importorskip("IPython")

from devstash import _core  # noqa: E402 - after the skip

DRIVER = """
from IPython.core.interactiveshell import InteractiveShell
shell = InteractiveShell.instance(colors="nocolor")
for cell in CELLS:
    result = shell.run_cell(cell, store_history=True)
    error = result.error_before_exec or result.error_in_exec
    print(f"[{'ok' if error is None else type(error).__name__}]", flush=True)
"""

SLOW = '''
def slow(x):
    print("computing", x)
    return x * 3
'''


def kernel(scripts, cells, env=None):
    """Runs the cells in a fresh shell; returns its output lines."""
    scripts.write("kernel.py", f"CELLS = {list(cells)!r}\n" + DRIVER)
    return scripts.run("kernel.py", env=env).stdout.splitlines()


def computed(lines):
    return [l for l in lines if l.startswith("computing")]


def test_marked_line_in_a_cell_is_cached_across_kernel_restarts(scripts):
    cell = "v = slow(2)  # @devstash\nprint('v', v)"
    cells = ["%load_ext devstash", SLOW, cell, cell]
    first = kernel(scripts, cells)
    assert first == ["[ok]", "[ok]", "computing 2", "v 6", "[ok]", "v 6", "[ok]"]
    second = kernel(scripts, cells)
    assert second == ["[ok]", "[ok]", "v 6", "[ok]", "v 6", "[ok]"]


def test_function_from_one_cell_keeps_its_own_markers_in_another(scripts):
    # every cell has its own runtime: g's marker (ttl=1h, site 0 of its cell)
    # must not be read from the sites of the cell that calls it
    cells = [
        "%load_ext devstash",
        SLOW + "def g(y):\n    return slow(y)  # @devstash ttl=1h\n",
        "w = slow(100)  # @devstash\nprint(g(5), w)",
    ]
    assert computed(kernel(scripts, cells)) == ["computing 100", "computing 5"]
    second = kernel(scripts, cells)
    assert computed(second) == [] and "15 300" in second
    with _core.Store(str(scripts.folder / ".devstash_cache")) as store:
        ttls = sorted(entry["ttl"] for entry in store.entries())
    assert ttls == [0.0, 3600.0]


def test_marker_error_fails_the_cell_not_the_kernel(scripts):
    cells = [
        "%load_ext devstash",
        SLOW,
        "print('never')\nw = slow(9)  # @devstash ttl=5x",
        "v = slow(4)  # @devstash\nprint('after', v)",
    ]
    first = kernel(scripts, cells)
    assert "never" not in first
    error = first.index("[MarkerError]")
    text = "\n".join(first[:error])
    assert "Cell In[3], line 2" in text and "invalid ttl '5x'" in text and "^" in text
    assert first[error + 1:] == ["computing 4", "after 12", "[ok]"]
    assert kernel(scripts, cells)[error + 1:] == ["after 12", "[ok]"]


def test_devstash_magic_reports_the_last_cell_and_the_cache(scripts):
    cells = [
        "%load_ext devstash",
        SLOW,
        "a = slow(1)  # @devstash\nb = slow(2)  # @devstash",
        "%devstash",
    ]
    first = kernel(scripts, cells)
    assert "devstash: In [3]: 2 marked lines in the cell; 0 hits, 2 misses, 2 stored" in "\n".join(first)
    assert any(l.startswith(f"devstash: cache {scripts.folder}/.devstash_cache: 2 entries,") for l in first)
    second = kernel(scripts, cells)
    assert "devstash: In [3]: 2 marked lines in the cell; 2 hits, 0 misses, 0 stored" in "\n".join(second)


def test_top_level_await_and_the_last_value_display_work_as_usual(scripts):
    cells = [
        "%load_ext devstash",
        SLOW + "async def fetch(x):\n    print('computing fetch', x)\n    return x + 1\n",
        "r = await fetch(3)  # @devstash\nprint('r', r)",
        "slow(11)  # @devstash",
    ]
    first = kernel(scripts, cells)
    assert computed(first) == ["computing fetch 3", "computing 11"]
    second = kernel(scripts, cells)
    assert computed(second) == []
    assert "r 4" in second and "Out[4]: 33" in second


def test_exception_in_a_cell_points_at_the_cells_line(scripts):
    cells = [
        "%load_ext devstash",
        "def fail(x):\n    raise ValueError(x)",
        "ok = len('abc')  # @devstash\nv = fail(1)  # @devstash",
    ]
    for _ in range(2):
        lines = kernel(scripts, cells)
        assert lines[-1] == "[ValueError]"
        text = "\n".join(lines)
        assert "Cell In[3], line 2" in text and "Cell In[2], line 2" in text


def test_runtime_globals_stay_out_of_whos_listing(scripts):
    lines = kernel(scripts, ["%load_ext devstash", SLOW, "v = slow(1)  # @devstash", "%who"])
    assert lines[-2].split() == ["slow", "v"]


def test_project_module_imported_in_a_notebook_gets_its_markers(scripts):
    scripts.write("mymod.py", SLOW + "def work(x):\n    return slow(x)  # @devstash\n")
    cells = ["%load_ext devstash", "import mymod\nprint(type(mymod.__loader__).__name__, mymod.work(7))"]
    assert kernel(scripts, cells) == ["[ok]", "computing 7", "DevstashLoader 21", "[ok]"]
    assert kernel(scripts, cells) == ["[ok]", "DevstashLoader 21", "[ok]"]


def test_unload_and_skip_rewrite_leave_cells_alone(scripts):
    cell = "v = slow(5)  # @devstash"
    unloaded = ["%load_ext devstash", "%unload_ext devstash", SLOW, cell]
    for _ in range(2):
        assert computed(kernel(scripts, unloaded)) == ["computing 5"]
    skipped = ["%load_ext devstash", SLOW, cell]
    for _ in range(2):
        assert computed(kernel(scripts, skipped, env={"DEVSTASH_SKIP_REWRITE": "1"})) == ["computing 5"]
    assert not (scripts.folder / ".devstash_cache").exists()


JUPYTER_DRIVER = """
from jupyter_client.manager import start_new_kernel

km, kc = start_new_kernel(kernel_name="python3")
try:
    for cell in CELLS:
        msg_id = kc.execute(cell)
        while True:
            msg = kc.get_iopub_msg(timeout=60)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                print(content["text"], end="")
            elif kind == "error":
                print("[" + content["ename"] + "]")
            elif kind == "status" and content["execution_state"] == "idle":
                break
finally:
    kc.stop_channels()
    km.shutdown_kernel()
"""


def test_jupyter_kernel_restart_keeps_cell_values(scripts):
    pytest.importorskip("ipykernel")
    pytest.importorskip("jupyter_client")
    cells = ["%load_ext devstash", SLOW, "v = slow(2)  # @devstash\nprint('v', v)",
             "w = slow(3)  # @devstash ttl=5x"]
    scripts.write("jupyter.py", f"CELLS = {cells!r}\n" + JUPYTER_DRIVER)
    first = scripts.run("jupyter.py").stdout.splitlines()
    assert first == ["computing 2", "v 6", "[MarkerError]"]
    second = scripts.run("jupyter.py").stdout.splitlines()
    assert second == ["v 6", "[MarkerError]"]
