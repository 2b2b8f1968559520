"""Fuzz targets for the C marker scanner and rewriter, with Python as oracle.

check(data) runs every target on one input and raises Mismatch (an
AssertionError) when the C core disagrees with Python:

* scanner: _core.comments(data) never crashes, returns sorted (line, col)
  pairs, and for source that Python compiles it equals the COMMENT tokens of
  tokenize; every marker is one of those comments; has_marker(data) is
  exactly `b"@devstash" in data`.
* rewriter: _core.rewrite(data) rejects exactly what ast.parse rejects, with
  the same error (type, message, line); on source that parses it either
  succeeds or raises MarkerError (only when there are markers, on a marker's
  line); the rewritten tree compiles exactly when the original source
  compiles, and without markers it is the original tree. The same holds when
  resuming after an activate() line.

Nothing here executes the input. Used by tests/test_fuzz.py (a short seeded
run), fuzz/run.py (a long seeded run without extra tools) and
fuzz/libfuzzer.c (coverage-guided, `make fuzz`).
"""
import ast
import io
import os
import tokenize
import warnings

from devstash import _core

MARKER = b"@devstash"

# Known, reported bugs whose inputs a long run may set aside while they are
# open, so that it can find others: DEVSTASH_FUZZ_KNOWN=nul (comma list).
#   nul: rewrite() parses a source with a NUL byte only up to that byte,
#        where ast.parse rejects it (tests/regressions/rewrite-nul-*).
KNOWN = set(filter(None, os.environ.get("DEVSTASH_FUZZ_KNOWN", "").split(",")))


class Mismatch(AssertionError):
    """The C core and Python's own tools disagree on an input."""


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escapes, "is" with a literal, ...
        return fn(*args, **kwargs)


def _outcome(fn, *args, **kwargs):
    """(result, None) or (None, exception) of fn; only Exception subclasses
    are caught (a crash or KeyboardInterrupt must propagate)."""
    try:
        return _quiet(fn, *args, **kwargs), None
    except (RecursionError, MemoryError):
        raise _Skip() from None  # limits of the running interpreter, not of devstash
    except Exception as exc:  # noqa: BLE001 - the caller compares exceptions
        return None, exc


class _Skip(Exception):
    """The oracle itself cannot judge this input."""


def _describe(exc):
    if exc is None:
        return None
    if type(exc) is ValueError and str(exc) == "source code string cannot contain null bytes":
        # Python 3.10's compiler refuses a NUL byte with a ValueError where
        # later versions, and rewrite() on every version, raise SyntaxError:
        # the same refusal.
        return ("SyntaxError", str(exc), None)
    if isinstance(exc, SyntaxError):
        return (type(exc).__name__, exc.msg, exc.lineno)
    return (type(exc).__name__, str(exc))


# ---- scanner ----------------------------------------------------------------

def tokenize_comments(data: bytes):
    """(line, col) of every COMMENT token, read as the compiler reads source:
    UTF-8 (a BOM allowed), universal newlines."""
    text = data.decode("utf-8-sig")
    readline = io.StringIO(text, newline=None).readline
    return [tok.start for tok in _quiet(lambda: list(tokenize.generate_tokens(readline)))
            if tok.type == tokenize.COMMENT]


def _utf8_source(data: bytes) -> bool:
    """Whether the compiler reads data as UTF-8 (no other coding cookie)."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError:
        return False
    return encoding in ("utf-8", "utf-8-sig")


def check_scanner(data: bytes, compiles: bool) -> None:
    got = _core.comments(data)
    if not isinstance(got, list) or any(
            type(c) is not tuple or len(c) != 2 or c[0] < 1 or c[1] < 0 for c in got):
        raise Mismatch(f"comments() returned a malformed result: {got!r}")
    if got != sorted(got) or len(set(got)) != len(got):
        raise Mismatch(f"comments() not in order or repeated: {got!r}")
    markers = _core.markers(data)
    positions = set(got)
    for m in markers:
        if (m[0], m[1]) not in positions:
            raise Mismatch(f"marker {m!r} is not a comment; comments {got!r}")
        if not isinstance(m[2], str) or type(m[3]) is not bool:
            raise Mismatch(f"malformed marker {m!r}")
    if _core.has_marker(data) != (MARKER in data):
        raise Mismatch("has_marker() disagrees with a byte search")
    if markers and MARKER not in data:
        raise Mismatch(f"markers without the marker bytes: {markers!r}")
    if not compiles or not _utf8_source(data):
        return
    try:
        expected = tokenize_comments(data)
    except (SyntaxError, tokenize.TokenError, UnicodeDecodeError, IndentationError):
        return  # 3.11's tokenize cannot read some sources the 3.11 compiler accepts
    if got != expected:
        raise Mismatch(f"comments() {got!r} but tokenize finds {expected!r}")


# ---- rewriter -----------------------------------------------------------------

FILENAME = "<fuzz>"


def _compile(source_or_tree):
    return compile(source_or_tree, FILENAME, "exec", dont_inherit=True)


def _check_rewrite_result(data, result, exc, parsed, compiled_exc, markers, resume_line):
    if exc is not None:
        if isinstance(exc, _core.MarkerError):
            if not markers:
                raise Mismatch(f"MarkerError without a marker: {exc!r}")
            if exc.lineno not in {m[0] for m in markers}:
                raise Mismatch(f"MarkerError on line {exc.lineno}, markers on {[m[0] for m in markers]}")
            if not exc.filename == FILENAME:
                raise Mismatch(f"MarkerError names {exc.filename!r}")
            return
        if resume_line and isinstance(exc, RuntimeError) and "top level" in str(exc):
            return  # resuming inside a def, a loop, ...: the documented error
        raise Mismatch(f"rewrite() rejects what ast.parse accepts: {exc!r}"
                       f" (resume_line={resume_line})")
    tree, sites = result
    if not isinstance(tree, ast.Module) or type(sites) is not tuple:
        raise Mismatch(f"rewrite(tree=True) returned {type(tree)!r}, {type(sites)!r}")
    if len(sites) != len(markers):
        raise Mismatch(f"{len(sites)} sites for {len(markers)} markers")
    for site, marker in zip(sites, markers):
        if site[0] != marker[0] or site[1] != marker[1]:
            raise Mismatch(f"site {site!r} for marker {marker!r}")
    if not markers and not resume_line and ast.dump(tree) != ast.dump(parsed):
        raise Mismatch("rewrite() changed a source without markers")
    _, rewritten_exc = _outcome(_compile, tree)
    # Resuming drops the statements before the activate() line, so the rest
    # may compile where the whole did not ('return' outside function), never
    # the other way round.
    if (rewritten_exc is None) != (compiled_exc is None) and not (resume_line and rewritten_exc is None):
        raise Mismatch(f"the original compiles: {_describe(compiled_exc)}; "
                       f"the rewritten tree: {_describe(rewritten_exc)} (resume_line={resume_line})")


def check_rewriter(data: bytes, resume_line: int = 0):
    """Returns whether Python compiles data (for check_scanner)."""
    parsed, parse_exc = _outcome(compile, data, FILENAME, "exec", ast.PyCF_ONLY_AST, dont_inherit=True)
    result, exc = _outcome(_core.rewrite, data, FILENAME, 0, tree=True)
    if parse_exc is not None:
        if exc is None:
            raise Mismatch(f"rewrite() accepts what ast.parse rejects: {_describe(parse_exc)}")
        if isinstance(exc, _core.MarkerError) or _describe(exc) != _describe(parse_exc):
            raise Mismatch(f"ast.parse: {_describe(parse_exc)}; rewrite(): {_describe(exc)}")
        return False
    STATS["parsed"] += 1
    _, compiled_exc = _outcome(_compile, data)
    markers = _core.markers(data)
    _check_rewrite_result(data, result, exc, parsed, compiled_exc, markers, 0)
    # the code path compiles itself: the same outcome as compiling the tree
    code, code_exc = _outcome(_core.rewrite, data, FILENAME, 0)
    if exc is None:
        _, tree_exc = _outcome(_compile, result[0])
        if _describe(code_exc) != _describe(tree_exc):
            raise Mismatch(f"rewrite(): {_describe(code_exc)}; compiling its tree: {_describe(tree_exc)}")
        if code_exc is None and type(code[0]).__name__ != "code":
            raise Mismatch(f"rewrite() returned {type(code[0])!r}")
    elif _describe(code_exc) != _describe(exc):
        raise Mismatch(f"rewrite(): {_describe(code_exc)}; rewrite(tree=True): {_describe(exc)}")
    if resume_line and exc is None:
        result, exc = _outcome(_core.rewrite, data, FILENAME, resume_line, tree=True)
        _check_rewrite_result(data, result, exc, parsed, compiled_exc, markers, resume_line)
    return compiled_exc is None


STATS = {"inputs": 0, "parsed": 0, "compiled": 0, "skipped": 0}


def check(data: bytes) -> None:
    """Every target on one input; raises Mismatch on a disagreement."""
    STATS["inputs"] += 1
    lines = data.count(b"\n") + 1
    resume_line = data[0] % (lines + 2) if data else 0
    try:
        if "nul" in KNOWN and b"\0" in data:
            raise _Skip()
        compiles = check_rewriter(data, resume_line)
    except _Skip:
        STATS["skipped"] += 1
        compiles = False
    STATS["compiled"] += compiles
    try:
        check_scanner(data, compiles)
    except _Skip:
        pass
