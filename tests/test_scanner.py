"""The C marker scanner: comment positions must be exactly tokenize's.

The oracle is the running Python's tokenize, fed through universal newlines
(so "\r", "\r\n" and "\n" all end lines, as for the compiler). Python 3.12
f-string nesting, which 3.11's tokenize cannot judge, has explicit cases.
"""
import io
import multiprocessing
import os
import random
import re
import sys
import sysconfig
import tokenize
import warnings
from concurrent.futures import ProcessPoolExecutor

import pytest

from devstash import _core


def tokenize_comments(source: bytes):
    """(line, col) of every COMMENT token, by the running Python's tokenize."""
    text = source.decode("utf-8-sig")
    readline = io.StringIO(text, newline=None).readline
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 3.12+ warns about invalid escapes
        return [tok.start for tok in tokenize.generate_tokens(readline) if tok.type == tokenize.COMMENT]


def compiles(source: bytes) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # invalid escapes in generated strings
        try:
            compile(source, "<generated>", "exec", dont_inherit=True)
        except (SyntaxError, ValueError):
            return False
    return True


# ---------------------------------------------------------------------------
# Corpus: the installed standard library


def stdlib_files():
    stdlib = sysconfig.get_paths()["stdlib"]
    found = []
    for root, dirs, files in os.walk(stdlib):
        dirs[:] = sorted(d for d in dirs if d not in ("site-packages", "dist-packages", "__pycache__"))
        found.extend(os.path.join(root, f) for f in sorted(files) if f.endswith(".py"))
    return found


def check_file(path):
    """Runs in a worker: returns (path, status, detail)."""
    with open(path, "rb") as f:
        source = f.read()
    try:
        expected = tokenize_comments(source)
    except (UnicodeDecodeError, SyntaxError, tokenize.TokenError):
        return path, "skipped", None
    got = _core.comments(source)
    if got != expected:
        extra = [c for c in got if c not in expected][:5]
        missing = [c for c in expected if c not in got][:5]
        return path, "differs", f"extra {extra}, missing {missing}"
    return path, "ok", len(got)


def run_parallel(fn, items):
    """tokenize is slow in 3.11 (pure Python): spread the files over the
    cores. Fork keeps this module importable in the workers; without a
    usable process pool it runs here."""
    workers = max(1, min(4, os.cpu_count() or 1))
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork") if "fork" in methods else None
    try:
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            return list(pool.map(fn, items, chunksize=16))
    except (OSError, ImportError, NotImplementedError):
        return [fn(item) for item in items]


def test_stdlib_corpus_matches_tokenize():
    files = stdlib_files()
    assert len(files) > 500, "standard library not found"
    results = run_parallel(check_file, files)
    differ = [(p, d) for p, status, d in results if status == "differs"]
    checked = [r for r in results if r[1] == "ok"]
    assert not differ, differ[:10]
    assert len(checked) > 0.95 * len(files)
    assert sum(n for _, _, n in checked) > 10000  # the comments were really compared


# ---------------------------------------------------------------------------
# Generated sources (valid Python 3.11 by construction; checked with compile)

WORDS = ["alpha", "beta", "x", "y1", "_z", "spam", "if", "or", "not", "rb", "br", "f", "u", "r"]
UNICODE = ["é", "漢字", "🎉", "Ωμέγα", "\u00a0", "ß"]
COMMENT_TEXTS = [
    "note", "it's", 'say "hi"', "'''", '"""', "f'{x}'", "# twice", "@devstash",
    "@devstash ttl=1d", " @devstash refresh  # why", "\\", "{", "}", "é漢🎉", "",
    "r'", 'b"', "\t tab",
]
NAMES = ["x", "café", "名前", "rb", "br", "f", "fr", "u", "b", "r", "value", "Ωmega", "t"]

PREFIXES = {
    "plain": [""],
    "u": ["u", "U"],
    "bytes": ["b", "B"],
    "raw": ["r", "R"],
    "rawbytes": ["rb", "Rb", "bR", "BR", "br", "Br", "rB", "RB"],
    "f": ["f", "F"],
    "rawf": ["rf", "fr", "Rf", "fR", "RF", "FR", "rF", "Fr"],
}


class Gen:
    def __init__(self, seed):
        self.rng = random.Random(seed)

    def choice(self, seq):
        return self.rng.choice(seq)

    def chance(self, p):
        return self.rng.random() < p

    def comment(self):
        text = self.choice(COMMENT_TEXTS)
        lead = self.choice(["#", "# ", "#  ", "#\t", "## "])
        return lead + text

    def string(self, kind=None, depth=0):
        rng = self.rng
        kind = kind or self.choice(list(PREFIXES))
        prefix = self.choice(PREFIXES[kind])
        quote = self.choice(["'", '"', "'''", '"""'])
        q = quote[0]
        other = '"' if q == "'" else "'"
        triple = len(quote) == 3
        raw = "r" in prefix.lower()
        is_bytes = "b" in prefix.lower()
        is_f = "f" in prefix.lower()
        parts = []
        for _ in range(rng.randint(0, 6)):
            n = rng.randrange(15)
            if n == 0:
                parts.append(self.choice(WORDS) + " ")
            elif n == 1:
                parts.append(self.choice(["#", "# @devstash", "#@devstash ttl=1d", " # x"]))
            elif n == 2:
                parts.append(other)
            elif n == 3:
                parts.append("\\" + q)  # an escaped quote, also in raw strings
            elif n == 4:
                parts.append("\\\\")
            elif n == 5 and not is_bytes:
                parts.append(self.choice(UNICODE))
            elif n == 6 and not is_bytes and not raw:
                parts.append("\\N{BULLET}")
            elif n == 7:
                parts.append("\\n\\t\\x41")
            elif n == 8 and triple:
                # a lone or doubled quote must not run into the closing ones
                parts.append(self.choice([q, q + q, "\n", "\n\n", " \n  "]) + "x")
            elif n == 9:
                parts.append("\\\n")  # continuation inside the string
            elif n == 10:
                parts.append("{{" if is_f else self.choice(["{", "}", "{x}"]))
            elif n == 11:
                parts.append("}}" if is_f else "#}")
            elif n >= 12 and is_f:
                parts.append(self.field(other, triple, depth))
            else:
                parts.append("text")
        return prefix + quote + "".join(parts) + quote

    def field(self, other, triple, depth):
        """A replacement field valid in Python 3.11: no outer quote, no
        backslash and no '#' in its expression part."""
        inner = other + self.choice(["k", "#", "{}", "a:b", "}"]) + other
        name = self.choice(NAMES)
        forms = [
            "{%s}" % name,
            "{%s!r}" % name,
            "{%s!s:>10}" % name,
            "{%s:#x}" % name,
            "{%s:#>{width}}" % name,
            "{%s!r:^{width}.{prec}}" % name,
            "{%s[1:2]}" % name,
            "{%s[%s]}" % (name, inner),
            "{%s=}" % name,
            "{%s = !r}" % name,
            "{a!=b}",
            "{(lambda y: y)(1)}",
            "{ {%s: 1}[%s] }" % (inner, inner),
            "{%s:%%H:%%M}" % name,
            "{%s:{%s}}" % (name, inner),
            "{%s}" % inner,
        ]
        if depth < 2:
            nested_prefix = self.choice(["f", "F", "rf"])
            forms.append("{%s%s{%s}%s}" % (nested_prefix, other, name, other))
        if triple:
            forms.append("{\n%s\n  + 1}" % name)
            forms.append("{ %s\n}" % name)
        return self.choice(forms)

    def expr(self, depth=0):
        rng = self.rng
        n = rng.randrange(12 if depth < 3 else 4)
        if n == 0:
            return str(rng.randint(0, 10**6))
        if n == 1:
            return self.choice(NAMES)
        if n in (2, 3):
            return self.string(depth=depth)
        if n == 4:
            return "%s(%s, %s)" % (self.choice(NAMES), self.expr(depth + 1), self.expr(depth + 1))
        if n == 5:
            return "[%s, %s]" % (self.expr(depth + 1), self.expr(depth + 1))
        if n == 6:
            return "{%s: %s}" % (self.expr(depth + 1), self.expr(depth + 1))
        if n == 7:
            return "%s + %s" % (self.expr(depth + 1), self.expr(depth + 1))
        if n == 8:
            kind = self.choice(["bytes", "rawbytes"]) if self.chance(0.3) else None
            if kind:
                return " ".join(self.string(kind) for _ in range(3))
            kinds = ["plain", "u", "raw", "f", "rawf"]
            return " ".join(self.string(self.choice(kinds)) for _ in range(3))
        if n == 9:
            return self.choice(['a if b else"#"', 'b or"#"', 'not"#"', 'x in"#"', "1if y else'#'"])
        if n == 10:
            return "(%s)" % self.expr(depth + 1)
        return "(lambda a, b=%s: a)(1)" % self.string(depth=depth)

    def statement(self, indent):
        rng = self.rng
        n = rng.randrange(12)
        trailing = ("  " + self.comment()) if self.chance(0.5) else ""
        name = self.choice(NAMES)
        if n <= 3:
            return [f"{indent}{name} = {self.expr()}{trailing}"]
        if n == 4:
            return [indent + self.comment()]
        if n == 5:
            return [self.choice(["", "   ", "\t", "\f"])]
        if n == 6:
            inner = indent + "    "
            lines = [f"{indent}{name} = [  {self.comment()}"]
            for _ in range(rng.randint(1, 4)):
                c = ("  " + self.comment()) if self.chance(0.5) else ""
                lines.append(f"{inner}{self.expr()},{c}")
                if self.chance(0.3):
                    lines.append(inner + self.comment())
            lines.append(indent + "]" + trailing)
            return lines
        if n == 7:
            return [f"{indent}{name} = {self.expr()} + \\", f"{indent}    {self.expr()}{trailing}"]
        if n == 8:
            body = indent + "    "
            doc = self.choice(['"""Doc # @devstash\n%s"""' % body, "'''# @devstash ttl=1d'''", '"# not a comment"'])
            return [
                f"{indent}def {self.choice(['g', 'h'])}(a, b={self.string()}):{trailing}",
                f"{body}{doc}",
                f"{body}return {self.expr()}  # @devstash",
            ]
        if n == 9:
            inner = indent + "    "
            return [
                f"{indent}{name} = (",
                f"{inner}{self.string(self.choice(['plain', 'f', 'raw']))}  {self.comment()}",
                f"{inner}{self.string(self.choice(['plain', 'f', 'rawf']))}",
                f"{indent})" + trailing,
            ]
        if n == 10:
            return [f"{indent}rb = br = f = u = r = t = 1; {name} = rb, f, u{trailing}"]
        return [f"{indent}{name} = {self.expr()}; {self.choice(NAMES)} = {self.expr()}{trailing}"]

    def module(self):
        lines = []
        for _ in range(self.rng.randint(1, 12)):
            lines.extend(self.statement(""))
        text = "\n".join(lines) + self.choice(["\n", "", "\n\n"])
        newline = self.choice(["\n", "\r\n", "\r", "mixed"])
        if newline == "mixed":
            text = "".join(self.choice(["\n", "\r\n", "\r"]) if ch == "\n" else ch for ch in text)
        elif newline != "\n":
            text = text.replace("\n", newline)
        source = text.encode("utf-8")
        if self.chance(0.05):
            source = b"\xef\xbb\xbf" + source
        return source


class Gen312(Gen):
    """Adds what only Python 3.12 (PEP 701) allows in replacement fields:
    the same quotes, nested strings of any form, backslashes and comments."""

    def field(self, other, triple, depth):
        if depth >= 3 or self.chance(0.4):
            return super().field(other, triple, depth)
        name = self.choice(NAMES)
        forms = [
            "{%s[%s]}" % (name, self.string(depth=depth + 1)),
            "{%s(%s, %s)}" % (name, self.string(depth=depth + 1), self.string("f", depth + 1)),
            "{%s  %s\n}" % (name, self.comment().replace("\\", "")),
            "{%s(  %s\n  %s,  %s\n)}" % (name, self.comment(), self.expr(depth + 1), self.comment()),
            "{'\\n'.join(%s)}" % name,
            "{%s:{%s}#>{%s}}" % (name, self.string(depth=depth + 1), name),
            "{%s!r:{%s!r}}" % (name, self.string("f", depth + 1)),
        ]
        return self.choice(forms)

    def expr(self, depth=0):
        return super().expr(depth + 1)


class Gen314(Gen312):
    """Adds Python 3.14 template strings (PEP 750): a t in place of an
    f-string's f, in either case, nested ones included. With as_f, the same
    seed gives the same source with every t left an f: the same comments,
    which any 3.12+ tokenize can judge."""

    def __init__(self, seed, as_f=False):
        super().__init__(seed)
        self.as_f = as_f

    def string(self, kind=None, depth=0):
        s = super().string(kind, depth)
        m = re.match(r"([rRfF]{1,2})['\"]", s)
        if m and "f" in m.group(1).lower() and self.chance(0.5) and not self.as_f:
            s = m.group(1).replace("f", "t").replace("F", "T") + s[len(m.group(1)):]
        return s


GENERATED_CASES = 3000


def test_generated_sources_match_tokenize():
    failures = []
    compared = comments = 0
    for case in range(GENERATED_CASES):
        source = Gen(1000 + case).module()
        if not compiles(source):
            continue
        expected = tokenize_comments(source)
        got = _core.comments(source)
        compared += 1
        comments += len(expected)
        if got != expected:
            failures.append((case, source, got, expected))
    assert not failures, failures[:3]
    # The generator makes valid code: nearly every case must be compared.
    assert compared > 0.9 * GENERATED_CASES
    assert comments > 4 * GENERATED_CASES


@pytest.mark.skipif(sys.version_info < (3, 12), reason="needs Python 3.12's tokenize as the oracle")
def test_generated_pep701_sources_match_tokenize():
    failures = []
    compared = 0
    for case in range(1500):
        source = Gen312(5000 + case).module()
        if not compiles(source):
            continue
        expected = tokenize_comments(source)
        got = _core.comments(source)
        compared += 1
        if got != expected:
            failures.append((case, source, got, expected))
    assert not failures, failures[:3]
    assert compared > 500


@pytest.mark.skipif(sys.version_info < (3, 14), reason="needs Python 3.14's tokenize as the oracle")
def test_generated_template_string_sources_match_tokenize():
    failures = []
    compared = 0
    for case in range(1500):
        source = Gen314(9000 + case).module()
        if not compiles(source):
            continue  # e.g. a t-string concatenated with a str, which 3.14 refuses
        expected = tokenize_comments(source)
        got = _core.comments(source)
        compared += 1
        if got != expected:
            failures.append((case, source, got, expected))
    assert not failures, failures[:3]
    assert compared > 300


@pytest.mark.skipif(sys.version_info < (3, 12), reason="needs Python 3.12's tokenize as the oracle")
def test_generated_template_strings_scan_as_their_fstring_twins():
    """Before 3.14 no tokenize reads t-strings: each generated source must
    have exactly the comments of its twin with f-strings, which 3.12's
    tokenize judges."""
    failures = []
    compared = 0
    for case in range(1500):
        source, twin = Gen314(9000 + case).module(), Gen314(9000 + case, as_f=True).module()
        if source == twin or not compiles(twin):
            continue
        compared += 1
        got = _core.comments(source)
        if got != tokenize_comments(twin):
            failures.append((case, source, got, tokenize_comments(twin)))
    assert not failures, failures[:3]
    assert compared > 500


def test_template_string_generator_makes_template_strings():
    blob = b"".join(Gen314(9000 + case).module() for case in range(100))
    assert re.search(rb"(?<![A-Za-z0-9_])[tT][rR]?['\"]", blob)
    assert re.search(rb"(?<![A-Za-z0-9_])[rR][tT]['\"]", blob)


def test_generator_covers_the_forms():
    """The generated corpus really holds the forms the brief lists."""
    blob = b"".join(Gen(1000 + case).module() for case in range(300))
    for needle in [b'rb"', b"Rb'", b'f"""', b"rf'", b"\\\n", b"\r\n", b"# @devstash", b"{{",
                   b"!r:", b":#x", "é".encode(), "名前".encode(), b"\\N{BULLET}", b"else\"#\""]:
        assert needle in blob, needle


# ---------------------------------------------------------------------------
# Explicit cases


@pytest.mark.parametrize(
    "source, expected",
    [
        (b"", []),
        (b"#", [(1, 0)]),
        (b"x = 1  # c\n", [(1, 7)]),
        (b"x = '#'  # c\n", [(1, 9)]),
        (b'x = "a\\"#"  # c\n', [(1, 12)]),
        (b'x = r"\\"#"  # c\n', [(1, 12)]),  # a raw string still skips \"
        (b"x = '''\n# no\n'''  # yes\n", [(3, 5)]),
        (b"x = 'a\\\n# no'  # yes\n", [(2, 7)]),  # continuation inside a string
        (b"x = 1 + \\\n    2  # c\n", [(2, 7)]),
        (b"x = (  # a\n  1,  # b\n)  # c\n", [(1, 7), (2, 6), (3, 3)]),
        (b"a\r\nb # c\r\n# d\r", [(2, 2), (3, 0)]),
        (b"a\rb # c\r# d", [(2, 2), (3, 0)]),
        (b"\xef\xbb\xbf# bom\n", [(1, 0)]),
        ("é = '漢'  # c\n".encode(), [(1, 9)]),
        ("x = '🎉' # c".encode(), [(1, 8)]),
        (b"x = b'#' rb'#' Br'#' u'#'  # c\n", [(1, 27)]),
        (b'x = a if b else"#"  # c\n', [(1, 20)]),  # 'else' is no prefix
        (b'x = y or"#"  # c\n', [(1, 13)]),
        (b'x = ur"#"  # c\n', [(1, 11)]),  # 'ur' is a name, then a string
        (b'\tx = 1\f# c\n', [(1, 7)]),
    ],
)
def test_explicit_comments(source, expected):
    assert _core.comments(source) == expected
    assert tokenize_comments(source) == expected


# Python 3.12 (PEP 701) f-strings: 3.11's tokenize cannot judge these.
FSTRING_312 = [
    (b'f"{x["a"]}"  # c\n', [(1, 13)]),  # same quote inside a field
    (b'f"{x["#"]}"  # c\n', [(1, 13)]),
    (b'f"{f"{f"{x}"}"}"  # c\n', [(1, 18)]),  # nested, same quotes
    (b'f"{x:#x}"  # c\n', [(1, 11)]),  # '#' in a format spec is text
    (b'f"{x!r:#>{w}}"  # z\n', [(1, 16)]),  # nested field in the spec
    (b'f"{x:{y:{z}}}#"  # c\n', [(1, 17)]),
    (b'f"{x:{{}}}"  # c\n', [(1, 13)]),  # no {{ escape inside a spec
    (b'f"{{#}}"  # c\n', [(1, 10)]),  # {{ and }} are escapes
    (b'f"{a!=b}#"  # c\n', [(1, 12)]),  # != is an operator
    (b"f\"{'{'}#\"  # c\n", [(1, 11)]),
    (b'f"""{x  # in a field\n}"""  # after\n', [(1, 8), (2, 6)]),
    (b'f"{x  # in a field\n}"  # after\n', [(1, 6), (2, 4)]),
    (b'f"""{\n  x  # a } comment "\n  + y\n}"""  # end\n', [(2, 5), (4, 6)]),
    (b'f"""{x:\n#}"""  # c\n', [(2, 7)]),
    (b'f"{x:abc\n}"  # c\n', [(2, 4)]),  # a newline ends a single-quoted spec
    (b'f"\\N{NUMBER SIGN} {x}"  # c\n', [(1, 24)]),
    (b'rf"\\N{x} #"  # c\n', [(1, 13)]),  # raw: {x} is a field, '#' text
    (b'f"\\{x}#"  # c\n', [(1, 10)]),  # a backslash does not escape a brace
    (b'f"{x}}}#"  # c\n', [(1, 11)]),
    (b"f'{\"\"\"#\"\"\"}'  # c\n", [(1, 14)]),
    (b'f"{x:{"#"}}"  # c\n', [(1, 14)]),
    (b'f"{x}" "{#}"  # c\n', [(1, 14)]),
    (b'F"{x}" Rf"{y}" fR"{z}"  # c\n', [(1, 24)]),
    (b'f"{lambda: 1}"  # c\n', [(1, 16)]),
    (b'f"{(lambda: "#")()}"  # c\n', [(1, 22)]),
]


@pytest.mark.parametrize("source, expected", FSTRING_312)
def test_fstrings_python312(source, expected):
    assert _core.comments(source) == expected
    if sys.version_info >= (3, 12):
        assert tokenize_comments(source) == expected


@pytest.mark.parametrize(
    "source, expected",
    [
        (b't"{x:#x}"  # c\n', [(1, 11)]),  # Python 3.14 template strings
        (b't"{x # c\n}"\n', [(1, 5)]),
        (b'tr"{x}#" rt"#"  # c\n', [(1, 16)]),
        (b't"{x # yes\n}"  # c\n', [(1, 5), (2, 4)]),
        (b'tb"{x # no}"  # c\n', [(1, 14)]),  # 'tb' is no prefix: a plain string
        (b'ft"{x # no}"  # c\n', [(1, 14)]),
    ],
)
def test_template_strings(source, expected):
    assert _core.comments(source) == expected


# Python 3.14 template strings (PEP 750) follow the f-string rules with a t
# prefix, in either case and with r on either side. Before 3.14 these do not
# compile; from 3.14 on the running tokenize is the oracle too.
TSTRING_314 = [
    (b'T"{x}#"  # c\n', [(1, 9)]),
    (b'Tr"{x}#" tR"#" RT"#" rT"{y}"  # c\n', [(1, 30)]),
    (b't"""{x\n# in a field\n}#"""  # after\n', [(2, 0), (3, 7)]),
    (b"t'{x!r:#>{w}}'  # c\n", [(1, 16)]),
    (b't"{t"{x}"}#"  # c\n', [(1, 14)]),  # nested, same quotes
    (b't"{x:{"#"}}" T"{{#}}"  # c\n', [(1, 23)]),
    (b'rt"\\N{x} #"  # c\n', [(1, 13)]),  # raw: {x} is a field
    (b't"\\N{NUMBER SIGN} {x}"  # c\n', [(1, 24)]),
    (b'x = tf"#" + bt"#"  # c\n', [(1, 19)]),  # no such prefixes: names, then strings
]


@pytest.mark.parametrize("source, expected", TSTRING_314)
def test_template_strings_python314(source, expected):
    assert _core.comments(source) == expected
    if sys.version_info >= (3, 14):
        assert tokenize_comments(source) == expected


def test_no_marker_inside_a_template_string():
    assert markers('s = t"# @devstash"\n') == []
    assert markers("s = Tr'{x} # @devstash'\n") == []
    assert markers('s = t"{x:# @devstash}"\n') == []
    assert markers('s = t"""\n# @devstash\n{x}"""\n') == []
    assert markers('s = rt"# @devstash" + g()  # @devstash ttl=1h\n') == [(1, 27, "ttl=1h", False)]
    # A comment inside a replacement field is code's comment, as in f-strings.
    assert markers('s = t"""{g(  # @devstash\n)}"""\n') == [(1, 13, "", False)]


# Grammar of later versions that the scanner reads as opaque code: its
# comments are tokenize's on every version (tokenize does not parse).
GRAMMAR_CASES = [
    # PEP 695 (3.12): type parameters and type statements
    (b"type Pair[T] = tuple[T, T]  # c\n", [(1, 28)]),
    (b"def first[T: (int, str), *Ts, **P](x: T) -> T:  # c\n    return x  # d\n",
     [(1, 48), (2, 14)]),
    (b"class Box[T]:  # c\n    v: T  # d\n", [(1, 15), (2, 10)]),
    # PEP 696 (3.13): defaults of type parameters
    (b"def f[T = int, *Ts = *tuple[str, ...]]() -> T: ...  # c\n", [(1, 52)]),
    (b"type Opt[T = str] = T | None  # c\n", [(1, 30)]),
    # PEP 758 (3.14): except and except* without brackets
    (b"try:\n    x = f()  # c\nexcept ValueError, TypeError:  # d\n    pass\n",
     [(2, 13), (3, 31)]),
    (b"try:\n    pass\nexcept* OSError, KeyError:  # d\n    pass\n", [(3, 28)]),
]


@pytest.mark.parametrize("source, expected", GRAMMAR_CASES)
def test_later_grammar(source, expected):
    assert _core.comments(source) == expected
    assert tokenize_comments(source) == expected


# ---------------------------------------------------------------------------
# Markers


def markers(text: str):
    return _core.markers(text.encode())


@pytest.mark.parametrize(
    "comment, options",
    [
        ("# @devstash", ""),
        ("#@devstash", ""),
        ("#   @devstash ttl=1d", "ttl=1d"),
        ("#\t@devstash\tttl=1d refresh  ", "ttl=1d refresh"),
        ("# @devstash ttl=1d  # refresh daily", "ttl=1d"),
        ("# @devstash # just a note", ""),
        ("# @devstash    ttl=30m   nocode   ", "ttl=30m   nocode"),
        ("# @devstash ttl=soon", "ttl=soon"),  # validity is the option parser's job
    ],
)
def test_marker_options(comment, options):
    assert markers(f"x = f()  {comment}\n") == [(1, 9, options, False)]


@pytest.mark.parametrize(
    "comment",
    [
        "# @devstashes",
        "# see @devstash docs",
        "## @devstash",
        "# @DevStash",
        "# @devstash=1",
        "# @devstash:",
        "# @devstash#x",
        "# @ devstash",
        "# devstash",
        "#\u00a0@devstash",  # no-break space is not white space here
        "# @devstash\u00a0ttl=1d",
    ],
)
def test_not_markers(comment):
    assert markers(f"x = f()  {comment}\n") == []
    assert len(_core.comments(f"x = f()  {comment}\n".encode())) == 1


def test_markers_in_strings_are_ignored():
    source = (
        '"""Module doc.\n'
        "# @devstash\n"
        '"""\n'
        "s = '# @devstash'\n"
        'b = b"# @devstash"  # @devstash refresh\n'
        "t = f'{x:# @devstash}'\n"
    )
    assert markers(source) == [(5, 20, "refresh", False)]
    assert _core.has_marker(source.encode())


def test_own_line():
    source = (
        "x = f()  # @devstash\n"
        "# @devstash\n"
        "    # @devstash ttl=1h\n"
        "\t \f# @devstash nocode\n"
        "y = [\n"
        "    1,  # @devstash\n"
        "    # @devstash\n"
        "]\n"
    )
    assert markers(source) == [
        (1, 9, "", False),
        (2, 0, "", True),
        (3, 4, "ttl=1h", True),
        (4, 3, "nocode", True),
        (6, 8, "", False),
        (7, 4, "", True),
    ]


def test_marker_line_endings_bom_and_columns():
    source = "a = 1\r\né = f()  # @devstash ttl=1d\r\nb = 2\r# @devstash\r".encode()
    assert _core.markers(source) == [(2, 9, "ttl=1d", False), (4, 0, "", True)]
    assert _core.markers(b"\xef\xbb\xbf# @devstash refresh") == [(1, 0, "refresh", True)]
    assert _core.markers("名前 = g()  # @devstash".encode()) == [(1, 10, "", False)]


def test_marker_in_fstring_field_comment():
    source = b'x = f"""{g(  # @devstash ttl=1d\n)}"""\n'
    assert _core.markers(source) == [(1, 13, "ttl=1d", False)]


def test_marker_options_with_undecodable_bytes():
    (line, col, options, own), = _core.markers(b"x = 1  # @devstash ttl=\xff\n")
    assert (line, col, own) == (1, 7, False)
    assert options == "ttl=\ufffd"


def test_has_marker():
    assert _core.has_marker(b"x = 1  # @devstash") is True
    assert _core.has_marker(b"s = '@devstash'") is True  # cheap: strings count too
    assert _core.has_marker(b"x = 1  # @devstas") is False
    assert _core.has_marker(b"") is False


def test_types():
    source = b"x = 1  # @devstash\n"
    for obj in (bytearray(source), memoryview(source), memoryview(b"zz" + source)[2:]):
        assert _core.comments(obj) == [(1, 7)]
        assert _core.markers(obj) == [(1, 7, "", False)]
        assert _core.has_marker(obj) is True
    for fn in (_core.comments, _core.markers, _core.has_marker):
        with pytest.raises(TypeError):
            fn("x = 1  # @devstash")
        with pytest.raises(TypeError):
            fn(12)
        with pytest.raises(TypeError):
            fn(None)
    result = _core.comments(source)
    assert type(result) is list and type(result[0]) is tuple


# ---------------------------------------------------------------------------
# Robustness: invalid input never crashes, never runs away


def check_invariants(source: bytes):
    found = _core.comments(source)
    lines = source.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if source.startswith(b"\xef\xbb\xbf"):
        lines[0] = lines[0][3:]
    previous = 0
    for line, col in found:
        assert line > previous  # a comment runs to the end of its line
        previous = line
        text = lines[line - 1]
        before = CONTINUATION.sub(b"", text)  # one byte per code point
        assert 0 <= col < len(before)
        assert before[col:col + 1] == b"#"
    positions = [(m[0], m[1]) for m in _core.markers(source)]
    assert set(positions) <= set(found)
    return found


CONTINUATION = re.compile(rb"[\x80-\xbf]")
ALPHABET = list(b"#'\"\\{}()[]:!=\r\n \tfrbuFRBUTt\xc3\xa9\x00\xff@devstash") + [0x80, 0xBF]


def test_random_bytes():
    rng = random.Random(7)
    for _ in range(3000):
        n = rng.randrange(0, 120)
        source = bytes(rng.choice(ALPHABET) for _ in range(n))
        check_invariants(source)
    for _ in range(300):
        check_invariants(rng.randbytes(rng.randrange(0, 400)))


def test_truncated_real_files():
    rng = random.Random(11)
    files = [f for f in stdlib_files() if os.path.getsize(f) < 200_000]
    for path in rng.sample(files, 60):
        with open(path, "rb") as f:
            source = f.read()
        for _ in range(40):
            cut = rng.randrange(0, len(source) + 1)
            check_invariants(source[:cut])
            start = rng.randrange(0, len(source) + 1)
            check_invariants(source[start:start + rng.randrange(1, 3000)])


@pytest.mark.parametrize(
    "source",
    [
        b'f"{' * 2000,
        b"f'{f\"{" * 1000 + b"x" + b"}\"}'" * 1000,
        b'f"{x:{' * 2000,
        b"(" * 100_000 + b"# c",
        b'x = "\\' + b'"\\' * 200_000,  # unterminated, many escaped quotes
        b"'''" + b"\\'" * 100_000,
        b'rf"' + b"{x:" * 50_000,
        b"\\" * 100_001,
        b"\r" * 1000 + b"#",
    ],
)
def test_pathological_inputs(source):
    check_invariants(source)
    check_invariants(source[: len(source) // 2 + 1])


def test_unterminated_strings_end_at_line_end():
    # best effort for invalid code: a single-quoted string stops at its line
    assert _core.comments(b"x = 'abc # no\ny = 1  # yes\n") == [(2, 7)]
    assert _core.comments(b"x = f'{a} # no\ny = 1  # yes\n") == [(2, 7)]
    # an unterminated triple-quoted string runs to the end
    assert _core.comments(b"x = '''abc\n# no\n") == []


def test_deep_nesting_matches_python_limit():
    depth = 100  # within CPython's own limits
    source = b"f'{" * depth + b"x" + b"}'" * depth + b"  # c\n"
    assert _core.comments(source) == [(1, 5 * depth + 3)]


def test_no_leak():
    import tracemalloc

    source = "x = 1  # @devstash ttl=1d\ny = 'é'  # other\n".encode()

    def work():
        for _ in range(3000):
            _core.comments(source)
            _core.markers(source)
            _core.has_marker(source)
            try:
                _core.markers("str")
            except TypeError:
                pass

    work()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        work()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert after - before < 20_000
