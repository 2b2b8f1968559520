"""A small seeded mutator for Python sources: byte edits, tokens from
python.dict, line edits and splices between corpus files. Line edits keep
most mutants valid Python, so the differential checks in targets.py (which
only judge valid code) get real work; byte edits reach the error paths.

Deterministic for a given seed and corpus: a failure found by the test suite
is found again by the same run."""
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))


def load_dict(path=os.path.join(HERE, "python.dict")):
    """Tokens of a libFuzzer dictionary file (lines `"..."` with \\xNN escapes)."""
    tokens = []
    with open(path, "rb") as f:
        for raw in f:
            line = raw.strip()
            if not line.startswith(b'"') or not line.endswith(b'"'):
                continue
            tokens.append(line[1:-1].decode("ascii").encode("latin-1").decode("unicode_escape").encode("latin-1"))
    return tokens


def load_corpus(folder=os.path.join(HERE, "corpus")):
    items = []
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            items.append(f.read())
    return items


class Mutator:
    def __init__(self, seed, corpus=None, tokens=None):
        self.rng = random.Random(seed)
        self.corpus = corpus if corpus is not None else load_corpus()
        self.tokens = tokens if tokens is not None else load_dict()

    def pick(self):
        return self.rng.choice(self.corpus) if self.corpus else b""

    def mutate(self, data: bytes) -> bytes:
        rng = self.rng
        for _ in range(rng.choice((1, 1, 1, 1, 2, 3))):
            data = rng.choice(self.ops)(self, data)
        return data[:4096]

    # -- byte edits
    def flip(self, data):
        if not data:
            return bytes([self.rng.randrange(256)])
        i = self.rng.randrange(len(data))
        return data[:i] + bytes([data[i] ^ (1 << self.rng.randrange(8))]) + data[i + 1:]

    def insert_byte(self, data):
        i = self.rng.randrange(len(data) + 1)
        b = self.rng.choice(b"#'\"\\{}()[]:!=\r\n \t\x0cfrbutFRBUT@\x00\x80\xc3\xa9\xff")
        return data[:i] + bytes([b]) + data[i:]

    def delete(self, data):
        if not data:
            return data
        i = self.rng.randrange(len(data))
        return data[:i] + data[i + self.rng.randrange(1, 9):]

    def duplicate(self, data):
        if not data:
            return data
        i = self.rng.randrange(len(data))
        j = min(len(data), i + self.rng.randrange(1, 40))
        k = self.rng.randrange(len(data) + 1)
        return data[:k] + data[i:j] + data[k:]

    def token(self, data):
        i = self.rng.randrange(len(data) + 1)
        return data[:i] + self.rng.choice(self.tokens) + data[i:]

    # -- line edits
    def _lines(self, data):
        return data.splitlines(keepends=True) or [b""]

    def swap_lines(self, data):
        lines = self._lines(data)
        i, j = self.rng.randrange(len(lines)), self.rng.randrange(len(lines))
        lines[i], lines[j] = lines[j], lines[i]
        return b"".join(lines)

    def copy_line(self, data):
        lines = self._lines(data)
        source = self._lines(self.pick())
        lines.insert(self.rng.randrange(len(lines) + 1), self.rng.choice(source))
        return b"".join(lines)

    def drop_line(self, data):
        lines = self._lines(data)
        del lines[self.rng.randrange(len(lines))]
        return b"".join(lines)

    def indent_line(self, data):
        lines = self._lines(data)
        i = self.rng.randrange(len(lines))
        lines[i] = self.rng.choice((b"    ", b"\t", b" ", b"")) + lines[i].lstrip(b" \t")
        return b"".join(lines)

    def mark_line(self, data):
        lines = self._lines(data)
        i = self.rng.randrange(len(lines))
        body = lines[i].rstrip(b"\r\n")
        end = lines[i][len(body):] or b"\n"
        option = self.rng.choice((b"", b" ttl=5m", b" nocode", b" refresh", b" ttl=1h30m nocode",
                                  b" ttl=", b" bogus", b" ttl=__import__('os')"))
        lines[i] = body + b"  # @devstash" + option + end
        return b"".join(lines)

    def splice(self, data):
        other = self.pick()
        i = self.rng.randrange(len(data) + 1)
        j = self.rng.randrange(len(other) + 1)
        return data[:i] + other[j:]

    # Line edits (which mostly keep the code valid) come up more often than
    # byte edits (which mostly break it): the differential checks only
    # judge valid code.
    ops = (flip, insert_byte, delete, duplicate, token, token, splice,
           swap_lines, copy_line, copy_line, copy_line, drop_line, drop_line,
           indent_line, mark_line, mark_line, mark_line, mark_line)


def inputs(seed: int, count: int):
    """count inputs: the corpus itself first, then mutants of it and of
    earlier mutants (a small pool, so edits accumulate)."""
    mutator = Mutator(seed)
    pool = list(mutator.corpus)
    yield from pool[:count]
    for n in range(max(0, count - len(pool))):
        # half the time a corpus file, else any earlier mutant
        parent = mutator.rng.choice(pool if mutator.rng.random() < 0.5 else mutator.corpus)
        child = mutator.mutate(parent)
        if len(pool) < 256:
            pool.append(child)
        else:
            pool[mutator.rng.randrange(len(pool))] = child
        yield child
