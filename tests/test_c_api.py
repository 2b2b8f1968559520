"""The C sources use no C API that a supported Python deprecates or removed
(csrc/README.md has the audit). Headers mark some deprecations with
Py_DEPRECATED, which `make test-pythons` turns into build errors; the others
are deprecated in the documentation only, and are checked here, on every
Python: a name listed below may appear only under a version check that keeps
it off the versions where it is deprecated, or in util.h, which builds the
new API from the old one for old versions."""
import os
import re

import pytest

CSRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc")

# name -> the first version (PY_VERSION_HEX) where it must not be used; 0:
# never, whatever the guard.
DEPRECATED = {
    "PyErr_Fetch": 0x030C0000,
    "PyErr_Restore": 0x030C0000,
    "PyErr_NormalizeException": 0x030C0000,
    "structmember.h": 0x030C0000,
    "T_OBJECT": 0x030C0000,
    "T_OBJECT_EX": 0x030C0000,
    "READONLY": 0x030C0000,
    "PyUnicode_READY": 0x030C0000,
    "PyUnicode_IS_READY": 0x030C0000,
    "_PyObject_LookupAttr": 0x030D0000,
    "PyEval_GetBuiltins": 0x030D0000,
    "PyEval_GetGlobals": 0x030D0000,
    "PyEval_GetLocals": 0x030D0000,
    "PyWeakref_GetObject": 0,
    "PyWeakref_GET_OBJECT": 0,
    "PyImport_ImportModuleNoBlock": 0,
    "Py_OptimizeFlag": 0,
    "Py_UNICODE": 0,
    "PyDict_GetItem": 0,  # swallows errors: PyDict_GetItemWithError
    "PyModule_AddObject": 0,  # steals only on success: PyModule_AddObjectRef
}
ALLOWED_IN = {"util.h"}  # the compatibility definitions themselves


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r'"(?:\\.|[^"\\\n])*"', '""', text)  # nor in string literals


def uses(path):
    """(line number, name, highest version bound in force) of each use."""
    found = []
    stack = []  # per #if: version bound of the branch taken, or None
    with open(path) as f:
        lines = strip_comments(f.read()).splitlines()
    for number, line in enumerate(lines, 1):
        directive = re.match(r"\s*#\s*(if|ifdef|ifndef|elif|else|endif)\b(.*)", line)
        if directive:
            word, rest = directive.groups()
            below = re.search(r"PY_VERSION_HEX\s*<\s*(0x[0-9A-Fa-f]+)", rest)
            at_least = re.search(r"PY_VERSION_HEX\s*>=\s*(0x[0-9A-Fa-f]+)", rest)
            if word in ("if", "ifdef", "ifndef"):
                stack.append([int(below.group(1), 16) if below else None,
                              int(at_least.group(1), 16) if at_least else None])
            elif word == "elif" and stack:
                stack[-1] = [int(below.group(1), 16) if below else None, None]
            elif word == "else" and stack:
                # the other branch of `>= N` is `< N`
                stack[-1] = [stack[-1][1], None]
            elif word == "endif" and stack:
                stack.pop()
            continue
        bounds = [b for b, _ in stack if b is not None]
        for name in DEPRECATED:
            pattern = r"\b%s\b" % re.escape(name) + (r"\s*\(" if name in ("PyDict_GetItem", "PyModule_AddObject") else "")
            if re.search(pattern, line):
                found.append((number, name, min(bounds) if bounds else None))
    return found


def test_no_deprecated_c_api():
    problems = []
    files = sorted(f for f in os.listdir(CSRC) if f.endswith((".c", ".h")))
    assert len(files) > 10
    for name in files:
        if name in ALLOWED_IN:
            continue
        for number, api, bound in uses(os.path.join(CSRC, name)):
            limit = DEPRECATED[api]
            if limit == 0 or bound is None or bound > limit:
                problems.append(f"csrc/{name}:{number}: {api}")
    assert not problems, "deprecated C API in use (csrc/README.md):\n" + "\n".join(problems)


@pytest.mark.parametrize("source, ok", [
    ("PyErr_Fetch(&a, &b, &c);", False),
    ("/* PyErr_Fetch(&a, &b, &c); */", True),
    ("#if PY_VERSION_HEX < 0x030C0000\nPyUnicode_READY(o);\n#endif", True),
    ("#if PY_VERSION_HEX < 0x030D0000\nPyUnicode_READY(o);\n#endif", False),
    ("#if PY_VERSION_HEX >= 0x030D0000\nx();\n#else\n_PyObject_LookupAttr(o, n, &r);\n#endif", True),
    ("#if PY_VERSION_HEX >= 0x030D0000\n_PyObject_LookupAttr(o, n, &r);\n#endif", False),
    ("PyDict_GetItemWithError(d, k);", True),
    ("PyDict_GetItem(d, k);", False),
])
def test_the_checker(tmp_path, source, ok):
    path = tmp_path / "x.c"
    path.write_text(source + "\n")
    found = [(api, bound) for _, api, bound in uses(str(path))]
    assert all(bound is not None and bound <= DEPRECATED[api] != 0 for api, bound in found) == ok
