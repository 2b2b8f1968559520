"""A hit leaves the program exactly as the computation would have left it:
receivers and arguments the call changed, the object it returned, the
global random generators. Each script runs two or three times and prints
the program's state after the marked line; the runs must agree, and the
costly call must not run again (it appends to calls.txt when it does)."""
import pytest

HEADER = """
import devstash
devstash.activate()
def note(what):
    with open("calls.txt", "a") as f:
        f.write(what + "\\n")
"""


def calls(scripts):
    path = scripts.folder / "calls.txt"
    return path.read_text().split() if path.exists() else []


def runs(scripts, n=3):
    return [scripts.run().stdout for _ in range(n)]


def test_fit_leaves_the_model_fitted_and_returns_it(scripts):
    pytest.importorskip("sklearn")
    scripts.write("script.py", HEADER + """
import numpy as np
from sklearn.linear_model import LogisticRegression
rng = np.random.RandomState(0)
X = rng.normal(size=(200, 4))
y = (X[:, 0] + X[:, 1] > 0).astype(int)
class Counted(LogisticRegression):
    def fit(self, X, y):
        note("fit")
        return super().fit(X, y)
clf = Counted()
clf.fit(X, y)  # @devstash
print(clf.predict(X[:10]).tolist(), round(float(clf.coef_[0, 0]), 6))
lr = Counted(C=0.5)
model = lr.fit(X, y)  # @devstash
print(model is lr, model.predict(X[:5]).tolist())
""")
    outputs = runs(scripts)
    assert outputs[0] == outputs[1] == outputs[2]
    assert "True" in outputs[0]
    assert calls(scripts) == ["fit", "fit"]           # run 1 only


def test_fillna_inplace_keeps_its_effect(scripts):
    pytest.importorskip("pandas")
    scripts.write("script.py", HEADER + """
import pandas as pd
df = pd.DataFrame({"a": [1.0, None, 3.0], "b": [None, 2.0, None]})
def fill(frame):
    note("fill")
    frame.fillna(0, inplace=True)
fill(df)  # @devstash
print(df.isna().sum().sum(), df["a"].tolist(), df["b"].tolist())
df.fillna(-1, inplace=True)  # @devstash
print(df.values.tolist())
""")
    outputs = runs(scripts)
    assert outputs[0] == outputs[1] == outputs[2]
    assert outputs[0].splitlines()[0] == "0 [1.0, 0.0, 3.0] [0.0, 2.0, 0.0]"
    assert calls(scripts) == ["fill"]


def test_shuffle_and_sort_reorder_as_on_the_first_run(scripts):
    scripts.write("script.py", HEADER + """
import random
xs = list(range(10))
ys = xs                              # another reference sees the change too
def shuffled_copy_count(v):
    note("shuffle")
    random.Random(len(v)).shuffle(v)
    return len(v)
n = shuffled_copy_count(xs)  # @devstash
print(n, xs, ys is xs)
""")
    outputs = runs(scripts)
    assert outputs[0] == outputs[1] == outputs[2]
    assert outputs[0] != "10 [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] True\\n"
    assert calls(scripts) == ["shuffle"]


def test_global_generators_are_advanced_and_their_seed_counts(scripts):
    pytest.importorskip("numpy")
    body = """
import numpy as np
import random
np.random.seed({seed})
random.seed({seed})
def noisy_sample(n):
    note("sample")
    return np.random.normal(size=n).round(6).tolist(), random.random()
a = noisy_sample(3)  # @devstash
b = np.random.normal(size=3).round(6).tolist()
c = random.random()
print(a, b, c)
"""
    scripts.write("script.py", HEADER + body.format(seed=0))
    first, second, third = runs(scripts)
    assert first == second == third                  # b and c drawn after a, as on run 1
    assert calls(scripts) == ["sample"]
    scripts.write("script.py", HEADER + body.format(seed=1))
    seed1 = scripts.run().stdout
    assert seed1 != first and calls(scripts) == ["sample", "sample"]
    assert scripts.run().stdout == seed1 and calls(scripts) == ["sample", "sample"]


def test_an_object_holding_a_lock_gets_its_changed_attributes_back(scripts):
    """The whole receiver does not pickle (a lock): the attributes the call
    set are kept and put back instead."""
    scripts.write("script.py", HEADER + """
import threading
class Worker:
    def __init__(self):
        self.lock = threading.Lock()
        self.done = 0
    def work(self, n):
        note("work")
        self.done += n
        return self.done
w = Worker()
r = w.work(2)  # @devstash
print(r, w.done, type(w.lock).__name__)
""")
    assert runs(scripts) == ["2 2 lock\n"] * 3
    assert calls(scripts) == ["work"]


def test_an_effect_that_cannot_be_kept_runs_uncached_with_one_warning(scripts):
    scripts.write("script.py", HEADER + """
import threading
class Worker:
    def __init__(self):
        self.done = 0
    def work(self, n):
        note("work")
        self.done += n
        self.guard = threading.Lock()      # a new lock: no pickle keeps it
        return self.done
w = Worker()
r = w.work(2)  # @devstash
print(r, w.done, hasattr(w, "guard"))
""")
    for _ in range(2):
        run = scripts.run()
        assert run.stdout.split() == ["2", "2", "True"]
        assert run.stderr.count("runs uncached") == 1
    assert calls(scripts) == ["work", "work"]


def test_calls_that_change_nothing_still_return_fresh_values(scripts):
    scripts.write("script.py", HEADER + """
data = [1, 2, 3]
def doubled(v):
    note("double")
    return [x * 2 for x in v]
out = doubled(data)  # @devstash
out.append(99)
again = doubled(data)  # @devstash
print(out, again, data)
""")
    outputs = runs(scripts, 2)
    assert outputs[0] == outputs[1] == "[2, 4, 6, 99] [2, 4, 6] [1, 2, 3]\n"


def test_a_cached_append_of_a_plain_value_keeps_the_list_growing(scripts):
    scripts.write("script.py", HEADER + """
results = []
for x in (1, 2, 3):
    results.append(x * 2)  # @devstash
print(results)
""")
    assert runs(scripts) == ["[2, 4, 6]\n"] * 3
