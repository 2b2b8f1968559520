/* devstash._core: registers the functions and types of the other files.
 * Nothing else lives here. */
#include "util.h"
#include "buffer.h"
#include "keys.h"
#include "options.h"
#include "rewrite.h"
#include "runtime.h"
#include "scanner.h"
#include "stash.h"
#include "store.h"

PyObject *ds_MarkerError = NULL;
PyObject *ds_StoreError = NULL;

static PyMethodDef core_methods[] = {
    {"comments", scanner_py_comments, METH_O,
     "comments(source: bytes) -> list[tuple[int, int]]: (line, column) of every comment token."},
    {"markers", scanner_py_markers, METH_O,
     "markers(source: bytes) -> list[tuple[int, int, str, bool]]: (line, column, options, own_line) of every marker."},
    {"near_markers", scanner_py_near_markers, METH_O,
     "near_markers(source: bytes) -> list[tuple[int, str]]: (line, comment) of comments that look "
     "meant as markers but are not."},
    {"has_marker", scanner_py_has_marker, METH_O,
     "has_marker(source: bytes) -> bool: whether the marker bytes occur at all (cheap)."},
    {"parse_options", options_py_parse, METH_O,
     "parse_options(text: str) -> dict: parse a marker's options; ValueError on bad input."},
    {"parse_duration", options_py_parse_duration, METH_O,
     "parse_duration(text: str) -> float: seconds in '1h30m'; ValueError on bad input."},
    {"rewrite", (PyCFunction)(void (*)(void))rewrite_py_rewrite, METH_VARARGS | METH_KEYWORDS,
     "rewrite(source: bytes, filename: str, resume_line: int = 0) -> tuple[code, tuple]"},
    {"hash_value", keys_py_hash_value, METH_O,
     "hash_value(obj) -> bytes: canonical 16-byte digest of a value."},
    {"hash_call", (PyCFunction)(void (*)(void))keys_py_hash_call, METH_FASTCALL | METH_KEYWORDS,
     "hash_call(callee, *args, **kwargs) -> bytes: 16-byte key of a call."},
    {"set_library_prefixes", keys_py_set_library_prefixes, METH_O,
     "set_library_prefixes(prefixes: tuple[str, ...]): folders whose functions are not the user's."},
    {"stash_type", (PyCFunction)(void (*)(void))stash_py_type, METH_VARARGS | METH_KEYWORDS,
     "stash_type(name, qualname, fields, kinds, defaults, flags, base, namespace) -> type: "
     "a Stash record type (devstash/_stash.py decides its fields and options)."},
    {NULL, NULL, 0, NULL},
};

static int
core_exec(PyObject *module)
{
    ds_MarkerError = PyErr_NewExceptionWithDoc(
        "devstash._core.MarkerError",
        "A # @devstash marker that cannot be applied (bad option, nothing to cache).",
        PyExc_SyntaxError, NULL);
    if (ds_MarkerError == NULL || PyModule_AddObjectRef(module, "MarkerError", ds_MarkerError) < 0)
        return -1;
    ds_StoreError = PyErr_NewExceptionWithDoc(
        "devstash._core.StoreError", "The LMDB store failed.", PyExc_OSError, NULL);
    if (ds_StoreError == NULL || PyModule_AddObjectRef(module, "StoreError", ds_StoreError) < 0)
        return -1;
    if (PyModule_AddType(module, &Store_Type) < 0 || store_module_init(module) < 0)
        return -1;
    if (PyModule_AddType(module, &Runtime_Type) < 0)
        return -1;
    if (PyModule_AddType(module, &Buffer_Type) < 0)
        return -1;
    if (PyModule_AddStringConstant(module, "RUNTIME_NAME", DS_RUNTIME_NAME) < 0)
        return -1;
    if (keys_module_init(module) < 0)
        return -1;
    if (stash_module_init(module) < 0)
        return -1;
    return 0;
}

static PyModuleDef_Slot core_slots[] = {
    {Py_mod_exec, core_exec},
    {0, NULL},
};

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "devstash._core",
    .m_doc = "devstash's C core: marker scanner, rewriter, key hashing and the LMDB store.",
    .m_size = 0,
    .m_methods = core_methods,
    .m_slots = core_slots,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    return PyModuleDef_Init(&core_module);
}
