"""IPython and Jupyter: `%load_ext devstash` makes markers work in cells.

IPython hands a cell to extensions twice: as text (input_transformers_post,
after its own %magic and !shell transforms) and as a tree (ast_transformers,
without comments, so without markers). The text transformer remembers each
cell's final text; the tree transformer finds the remembered text that the
tree was parsed from and returns the rewriter's tree for it instead: the same
statements at the same positions, the marked ones going through the cache,
and a prologue binding the cell's runtime. IPython compiles and runs it as
usual, so tracebacks, display of the last value and top-level await are
IPython's own.

A notebook's cells share one namespace, and a function defined in one cell
is called from others: each cell's runtime gets a global of its own
(``@devstash:<hash of the cell>``, a name no user code can spell) so a
function keeps the call sites of the cell it came from.

Values are keyed as in scripts (callee, code, arguments; never the cell's
name), so they survive kernel restarts; re-running a cell hits the cache.
Loading the extension also installs the import hook: project modules
imported afterwards carry their markers, as under activate().
"""
import ast
import collections
import linecache

from IPython.core.error import InputRejected

from . import _activate
from . import _core
from . import _hook
from . import _runtime

_cells = None  # the _Cells of the shell the extension is loaded in


class MarkerError(InputRejected, _core.MarkerError):
    """A marker error in a cell. IPython stops the cell (InputRejected keeps
    the transformer registered) and shows it as it shows a SyntaxError: the
    cell, the line, a caret, the message; the kernel goes on."""


class _CellTransformer(ast.NodeTransformer):
    def __init__(self, cells):
        super().__init__()
        self.cells = cells

    def visit(self, node):  # the whole cell at once: no walk
        return self.cells.rewrite(node)


class _Cells:
    """The extension's state in one shell."""

    def __init__(self, shell):
        self.shell = shell
        self.texts = collections.deque(maxlen=8)  # (text, marked), newest last
        self.transformer = _CellTransformer(self)
        self.runtimes = {}  # runtime global -> number of marked lines in its cell
        self.bound = []  # runtime globals the cells running now bind
        self.before = {}  # runtime global -> (runtime, counters) as the cell started
        self.last = None  # what the last cell did, for %devstash
        self.warned = False

    # -- the text transformer: the cell as IPython will parse it
    def remember(self, lines):
        text = "".join(lines)
        self.texts.append((text, _core.has_marker(text.encode("utf-8", "surrogatepass"))))
        return lines

    # -- the tree transformer
    def rewrite(self, tree):
        if not isinstance(tree, ast.Module) or not any(marked for _, marked in self.texts):
            return tree
        text = self._source_of(tree)
        if text is None:
            return tree
        filename = _cell_filename(text)
        try:
            new, sites = _core.rewrite(text.encode("utf-8", "surrogatepass"), filename, 0, True)
        except SyntaxError as exc:  # MarkerError included
            raise MarkerError(*exc.args) from None
        if not sites:
            return tree  # marker bytes in a string or a comment that is no marker
        name = f"{_core.RUNTIME_NAME}:{_core.hash_value(text).hex()[:12]}"
        for node in ast.walk(new):
            if isinstance(node, ast.Name) and node.id == _core.RUNTIME_NAME:
                node.id = name
        self.runtimes[name] = _runtime.marked_lines(sites)
        self.bound.append(name)
        return new

    def _source_of(self, tree):
        """The remembered text `tree` was parsed from, newest first (%timeit
        transforms its setup and its statement, then parses both), or None
        when it has no marker. It is then forgotten, with every older text."""
        dump = ast.dump(tree, include_attributes=True)
        for i in range(len(self.texts) - 1, -1, -1):
            # unmarked texts are compared too: markers are comments, so an
            # unmarked text can have the very tree of an older marked one
            text, marked = self.texts[i]
            try:
                same = ast.dump(ast.parse(text), include_attributes=True) == dump
            except (SyntaxError, ValueError):
                same = False
            if same:
                for _ in range(i + 1):
                    self.texts.popleft()
                return text if marked else None
        if self.texts and self.texts[-1][1] and not self.warned and self._looks_changed(tree):
            self.warned = True
            _runtime.warn("a marked cell was changed by another IPython extension after devstash "
                          "saw it: its markers are off (load devstash last)")
        return None

    def _looks_changed(self, tree) -> bool:
        """Whether `tree` looks like a remembered marked text changed by
        another extension (the same statements at the same lines) rather
        than a tree of its own (%timeit's "pass" setup)."""
        shape = [(type(node).__name__, node.lineno) for node in tree.body]
        for text, marked in self.texts:
            try:
                if marked and [(type(n).__name__, n.lineno) for n in ast.parse(text).body] == shape:
                    return True
            except (SyntaxError, ValueError):
                pass
        return False

    # -- per-cell counters
    def _counters(self):
        ns = self.shell.user_ns
        out = {}
        for name in list(self.runtimes):
            runtime = ns.get(name)
            if isinstance(runtime, _core.Runtime):
                out[name] = (runtime, runtime.hits, runtime.misses, runtime.stores,
                             runtime.compute_seconds)
            else:
                del self.runtimes[name]  # %reset, del: the cell's runtime is gone
        return out

    def pre_run_cell(self, info=None):
        self.before = self._counters()
        self.bound = []

    def post_run_cell(self, result=None):
        raw = getattr(getattr(result, "info", None), "raw_cell", None) or ""
        if raw.lstrip().startswith("%devstash"):
            return  # asking about the last cell is not a cell to report on
        hits = misses = stores = 0
        seconds = 0.0
        hidden = self.shell.user_ns_hidden
        for name, now in self._counters().items():
            runtime = now[0]
            hidden[name] = runtime  # %who and %whos leave it out
            then = self.before.get(name)
            base = then[1:] if then is not None and then[0] is runtime else (0, 0, 0, 0.0)
            hits += now[1] - base[0]
            misses += now[2] - base[1]
            stores += now[3] - base[2]
            seconds += now[4] - base[3]
        self.last = {
            "cell": getattr(result, "execution_count", None),
            "marked": sum(self.runtimes.get(name, 0) for name in set(self.bound)),
            "hits": hits, "misses": misses, "stores": stores, "seconds": seconds,
        }
        self.bound = []

    # -- %devstash
    def magic(self, line=""):
        """%devstash: what the last cell's marked lines did, and the cache."""
        print(self.report())

    def report(self) -> str:
        last = self.last
        lines = []
        if last is None:
            lines.append("devstash: no cell has run since the extension was loaded")
        else:
            where = f"In [{last['cell']}]" if last["cell"] is not None else "the last cell"
            lines.append(
                f"devstash: {where}: {last['marked']} marked line{'s' * (last['marked'] != 1)} "
                f"in the cell; {last['hits']} hit{'s' * (last['hits'] != 1)}, "
                f"{last['misses']} miss{'es' * (last['misses'] != 1)}, "
                f"{last['stores']} stored ({last['seconds']:.2f} s computed)")
        store = _runtime.open_store()
        if store is None:
            lines.append("devstash: no cache (the cache folder cannot be used)")
        else:
            info = store.info()
            n = info["entries"]
            lines.append(f"devstash: cache {info['path']}: {n} entr{'y' if n == 1 else 'ies'}, "
                         f"{_size(info['used'])} used")
        return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"  # not reached


def _cell_filename(text: str) -> str:
    """The name IPython compiles the cell under (tracebacks show it as
    "Cell In[n]"): IPython caches the cell's text in linecache under that
    name just before parsing it, so the newest entry holding the text is it."""
    lines = [line + "\n" for line in text.splitlines()]
    for name, entry in reversed(list(linecache.cache.items())):
        if len(entry) == 4 and entry[1] is None and entry[0] == len(text) and entry[2] == lines:
            return name
    return "<devstash cell>"


def load_ipython_extension(shell) -> None:
    global _cells
    if _cells is not None:
        if _cells.shell is shell:
            return
        unload_ipython_extension(_cells.shell)
    if _activate.skip_requested():
        _runtime.warn("DEVSTASH_SKIP_REWRITE is set: markers in cells stay off")
        return
    # not _activate.mark_active(): `%run script.py` of a script that calls
    # activate() must still get its markers
    _hook.install(None)
    cells = _Cells(shell)
    shell.input_transformers_post.append(cells.remember)
    shell.ast_transformers.insert(0, cells.transformer)
    shell.events.register("pre_run_cell", cells.pre_run_cell)
    shell.events.register("post_run_cell", cells.post_run_cell)
    shell.register_magic_function(cells.magic, "line", "devstash")
    _cells = cells


def unload_ipython_extension(shell) -> None:
    global _cells
    cells = _cells
    if cells is None or cells.shell is not shell:
        return
    _cells = None
    if cells.remember in shell.input_transformers_post:
        shell.input_transformers_post.remove(cells.remember)
    if cells.transformer in shell.ast_transformers:
        shell.ast_transformers.remove(cells.transformer)
    for event, callback in (("pre_run_cell", cells.pre_run_cell),
                            ("post_run_cell", cells.post_run_cell)):
        try:
            shell.events.unregister(event, callback)
        except ValueError:
            pass
    shell.magics_manager.magics["line"].pop("devstash", None)
