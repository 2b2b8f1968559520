"""Fuzzing the C marker scanner and rewriter against Python's tokenize and
ast (the oracle is fuzz/targets.py): the seed corpus, every input that once
failed (tests/regressions/), and a short seeded mutation run. The long,
coverage-guided run is `make fuzz` (fuzz/run.sh, libFuzzer)."""
import os
import random
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "fuzz"))
import mutate  # noqa: E402
import targets  # noqa: E402

REGRESSIONS = os.path.join(REPO, "tests", "regressions")
CORPUS = os.path.join(REPO, "fuzz", "corpus")


def read(path):
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(REGRESSIONS) if f.endswith(".bin")))
def test_regression(name):
    targets.check(read(os.path.join(REGRESSIONS, name)))


def test_seed_corpus():
    names = sorted(os.listdir(CORPUS))
    assert len(names) >= 20
    for name in names:
        targets.check(read(os.path.join(CORPUS, name)))


def run_inputs(inputs):
    """Checks every input; returns the distinct failures (message, input)."""
    failures = {}
    for data in inputs:
        try:
            targets.check(data)
        except targets.Mismatch as exc:
            failures.setdefault(str(exc).split(":")[0], (str(exc)[:300], data))
    return list(failures.values())


def test_seeded_mutation_run():
    """A few thousand mutants of the corpus (line edits keep many valid, so
    the differential checks do real work). A failure prints the input: copy
    it into tests/regressions/."""
    before = dict(targets.STATS)
    failures = run_inputs(mutate.inputs(seed=20240601, count=4000))
    assert not failures, "\n".join(f"{msg}\n    input: {data!r}" for msg, data in failures[:5])
    parsed = targets.STATS["parsed"] - before["parsed"]
    assert parsed > 1000, f"only {parsed} of 4000 mutants parse: the differential checks idle"


def test_random_bytes():
    rng = random.Random(5)
    alphabet = b"#'\"\\{}()[]:=\r\n \tfrbt@devsh\xc3\xa9\x80\xff0"
    inputs = [bytes(rng.choice(alphabet) for _ in range(rng.randrange(80))) for _ in range(1500)]
    inputs += [rng.randbytes(rng.randrange(300)) for _ in range(300)]
    failures = run_inputs(inputs)
    assert not failures, "\n".join(f"{msg}\n    input: {data!r}" for msg, data in failures[:5])


def test_the_oracle_catches_a_wrong_scanner(monkeypatch):
    """The checks can fail: a scanner that drops the last comment is caught."""
    real = targets._core.comments
    monkeypatch.setattr(targets._core, "comments", lambda data: real(data)[:-1])
    with pytest.raises(targets.Mismatch):
        targets.check(b"x = 1  # a comment\n")
