/* libFuzzer driver for fuzz/targets.py: embeds Python, imports the targets
 * and hands every input to targets.check(data). The devstash extension it
 * imports is built with clang's -fsanitize=fuzzer-no-link,address (see
 * fuzz/run.sh), so libFuzzer's coverage comes from the C scanner and
 * rewriter; any Python exception (a Mismatch, or anything else escaping the
 * checks) or a sanitizer report stops the run and saves the input. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>

static PyObject *check;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    Py_InitializeEx(0);   /* keep libFuzzer's own signal handlers */
    PyObject *targets = PyImport_ImportModule("targets");
    if (targets == NULL) {
        PyErr_Print();
        abort();
    }
    check = PyObject_GetAttrString(targets, "check");
    Py_DECREF(targets);
    if (check == NULL) {
        PyErr_Print();
        abort();
    }
    return 0;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    PyObject *input = PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)size);
    if (input == NULL) {
        PyErr_Print();
        abort();
    }
    PyObject *result = PyObject_CallOneArg(check, input);
    Py_DECREF(input);
    if (result == NULL) {
        PyErr_Print();
        abort();
    }
    Py_DECREF(result);
    return 0;
}
