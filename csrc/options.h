/* Marker options: "ttl=1h30m", "refresh", "nocode", "nofiles",
 * "ignore=NAME[,NAME...]". Strict: anything else is an error; nothing is
 * ever evaluated. */
#ifndef DEVSTASH_OPTIONS_H
#define DEVSTASH_OPTIONS_H

#include "util.h"

#define DS_OPT_REFRESH 0x1   /* recompute and replace on every run */
#define DS_OPT_NOCODE  0x2   /* leave the callee's code out of the key */
#define DS_OPT_NOFILES 0x4   /* paths count by their text only, not the file */

/* Size of an error buffer that holds any message options_parse writes. */
#define DS_OPTIONS_ERRLEN 512

typedef struct {
    double ttl;    /* seconds; 0 means no expiry */
    int flags;     /* DS_OPT_* */
    /* ignore=: the comma-separated names, pointing into the parsed text
     * (valid as long as it is); NULL when absent. Each name is checked to be
     * an identifier. */
    const char *ignore;
    Py_ssize_t ignore_len;
} ds_options;

/* Parses the option text text[0..len) (UTF-8). On success returns 0.
 * On error returns -1 and writes a one-sentence reason (no location) into
 * err, which says what was wrong and what is allowed. Sets no exception. */
int options_parse(const char *text, Py_ssize_t len, ds_options *out,
                  char *err, size_t errlen);

/* Parses a duration such as "30m" or "1h30m" into seconds; same contract. */
int options_parse_duration(const char *text, Py_ssize_t len, double *seconds,
                           char *err, size_t errlen);

/* The ignore= names of `o` as a tuple of str (empty when none); NULL with
 * an exception on failure. */
PyObject *options_ignore_tuple(const ds_options *o);

/* _core.parse_options(text: str) -> dict; raises ValueError(reason). */
PyObject *options_py_parse(PyObject *module, PyObject *text);
/* _core.parse_duration(text: str) -> float; raises ValueError(reason). */
PyObject *options_py_parse_duration(PyObject *module, PyObject *text);

#endif /* DEVSTASH_OPTIONS_H */
