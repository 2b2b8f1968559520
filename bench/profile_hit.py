"""Where a cache hit's time goes: runs the hit benchmark's marked line under
callgrind and prints the instructions of one hit, split by what they do.

    python bench/profile_hit.py .venv/bin/python [--hits 20000] [--keep DIR]

The script (the same small dict value as bench_hit.py) runs once to store
the value, then `hits` times under `valgrind --tool=callgrind
--toggle-collect=Runtime_call`: only instructions executed inside the C hit
path (rt.call and everything it calls) are counted. `pickle` is imported
before the loop so its one-time import is not part of a hit. Instructions
are not time, but on this path they track it closely (no I/O: LMDB reads
its memory map).
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

SCRIPT = """\
import pickle
import devstash
devstash.activate()
def f(a):
    return {{"id": a, "name": "item-%d" % a, "score": 0.5, "tags": ["x", "y"]}}
for i in range({hits}):
    x = f(1)  # @devstash
"""

# callee (as callgrind_annotate names it) -> what it is
GROUPS = [
    ("PyMarshal_ReadObjectFromString", "marshal: building the value (exact built-in types)"),
    ("PyObject_CallOneArg", "pickle.loads: building the value"),
    ("PyObject_Vectorcall", "pickle.loads: building the value"),
    ("store_lookup", "LMDB: lookup (B-tree search, record decode)"),
    ("store_read_begin", "LMDB: read transaction (renew + reset)"),
    ("store_read_end", "LMDB: read transaction (renew + reset)"),
    ("store_note_hit", "hit counting (in memory)"),
    ("keys_", "key: hashing callee and arguments (xxh3)"),
    ("PyMemoryView_FromMemory", "memoryview over the record, and its release"),
    ("_Py_Dealloc", "memoryview over the record, and its release"),
    ("PyObject_CallMethod", "memoryview over the record, and its release"),
    ("pickle_ready", "pickle module lookup"),
]


def tree_section(tree: str, function: str):
    """[(inclusive Ir, callee)] of function's block in --tree=calling output."""
    out, inside = [], False
    for line in tree.splitlines():
        if re.search(r"\*\s+\S*:%s \[" % re.escape(function), line):
            inside = True
            continue
        if inside:
            m = re.match(r"\s*([\d,]+) \(.*?\)\s+>\s+(\S+)", line)
            if not m:
                break
            out.append((int(m.group(1).replace(",", "")), m.group(2).split(":")[-1].split("'")[0]))
    return out


def self_cost(tree: str, function: str, inclusive: int) -> int:
    return inclusive - sum(ir for ir, _ in tree_section(tree, function))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("python", help="a python with devstash installed")
    ap.add_argument("--hits", type=int, default=20000)
    ap.add_argument("--keep", default=None, help="keep the script and callgrind output in this folder")
    args = ap.parse_args(argv)
    if not shutil.which("valgrind"):
        sys.exit("valgrind is not installed (apt-get install valgrind)")
    folder = args.keep or tempfile.mkdtemp(prefix="devstash-profile-")
    os.makedirs(folder, exist_ok=True)
    script = os.path.join(folder, "hit.py")
    with open(script, "w") as f:
        f.write(SCRIPT.format(hits=args.hits))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEVSTASH_", "PYTHON"))}
    env["DEVSTASH_CACHE_DIR"] = os.path.join(folder, "cache")
    shutil.rmtree(env["DEVSTASH_CACHE_DIR"], ignore_errors=True)
    subprocess.run([args.python, script], cwd=folder, env=env, check=True)  # stores
    out = os.path.join(folder, "callgrind.out")
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                    "--toggle-collect=Runtime_call", args.python, script],
                   cwd=folder, env=env, check=True, stderr=subprocess.DEVNULL)
    tree = subprocess.run(["callgrind_annotate", "--tree=calling", "--inclusive=yes", out],
                          capture_output=True, text=True, check=True).stdout
    total = int(re.search(r"([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", tree).group(1).replace(",", ""))
    parts = {}
    call = tree_section(tree, "Runtime_call")
    load_ir = next((ir for ir, name in call if name == "Runtime_load"), 0)
    rows = [(ir, name) for ir, name in call if name != "Runtime_load"] + tree_section(tree, "Runtime_load")
    for ir, name in rows:
        label = next((g for prefix, g in GROUPS if name.startswith(prefix)), f"other: {name}")
        parts[label] = parts.get(label, 0) + ir
    parts["devstash's own code (rt.call, load: glue)"] = (
        self_cost(tree, "Runtime_call", total) + self_cost(tree, "Runtime_load", load_ir))
    # pickle.loads = the unpickling proper (_pickle.c's load()) + making and
    # freeing an Unpickler for every call
    unpickle = [int(m.group(1).replace(",", "")) for m in
                re.finditer(r"^\s*([\d,]+) \(.*?\)\s+>\s+\S*_pickle\.c:load \(", tree, re.M)]
    whole = parts.pop("pickle.loads: building the value", 0)
    if unpickle and whole:
        parts["pickle.loads: building the value (_pickle.c load())"] = max(unpickle)
        parts["pickle.loads: a new Unpickler per call, and freeing it"] = whole - max(unpickle)
    elif whole:
        parts["pickle.loads"] = whole
    print(f"one hit: {total / args.hits:,.0f} instructions inside the C hit path "
          f"({args.hits:,} hits, callgrind)")
    for label, ir in sorted(parts.items(), key=lambda kv: -kv[1]):
        if ir / total >= 0.005:
            print(f"  {ir / args.hits:8,.0f}  {ir / total:6.1%}  {label}")
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
