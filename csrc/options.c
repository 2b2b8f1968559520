/* Marker options: whitespace-separated words "ttl=DURATION", "refresh",
 * "nocode", "nofiles" and "ignore=NAME[,NAME...]". Anything else is refused, so that new options can be added later
 * without silently changing what an old marker means.
 *
 * DURATION is one or more <integer><unit> groups (units s, m, h, d, w) in any
 * order, added up: "30m", "1h30m", "2d". No sign, no fraction, no spaces.
 * It must be more than zero and at most 100 years. */
#include "options.h"

#define DS_SECONDS_PER_DAY 86400ULL
/* 100 years of 365.25 days: refuse anything longer as a typo. */
#define DS_MAX_DAYS 36525ULL
#define DS_MAX_SECONDS (DS_MAX_DAYS * DS_SECONDS_PER_DAY)

/* A quoted word is cut to this many characters in messages. */
#define DS_QUOTE_CHARS 40

#define DS_DURATION_HELP \
    "expected one or more <integer><unit> groups such as 30m or 1h30m, " \
    "with units s, m, h, d, w"
#define DS_ALLOWED "ttl=DURATION, refresh, nocode, nofiles, ignore=NAME[,NAME...]"

static int
is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Length of the valid UTF-8 sequence at p[0..n), or 0 if it is not one. */
static int
utf8_len(const unsigned char *p, Py_ssize_t n)
{
    int len, k;
    unsigned char lo = 0x80, hi = 0xBF;

    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xC2 && p[0] <= 0xDF)
        len = 2;
    else if (p[0] >= 0xE0 && p[0] <= 0xEF)
        len = 3;
    else if (p[0] >= 0xF0 && p[0] <= 0xF4)
        len = 4;
    else
        return 0;
    if (n < len)
        return 0;
    /* The second byte's range excludes overlong forms, surrogates and
     * code points past U+10FFFF. */
    if (p[0] == 0xE0)
        lo = 0xA0;
    else if (p[0] == 0xED)
        hi = 0x9F;
    else if (p[0] == 0xF0)
        lo = 0x90;
    else if (p[0] == 0xF4)
        hi = 0x8F;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (k = 2; k < len; k++)
        if ((p[k] & 0xC0) != 0x80)
            return 0;
    return len;
}

/* Writes a printable, valid UTF-8 rendering of word[0..n) into out:
 * control characters and invalid bytes as \xNN, long words cut with "...". */
static void
quote_word(char *out, size_t outlen, const char *word, Py_ssize_t n)
{
    const unsigned char *p = (const unsigned char *)word;
    size_t o = 0;
    Py_ssize_t i = 0;
    int chars = 0;

    /* Room for one escape or one UTF-8 character, "..." and the NUL. */
    while (i < n && chars < DS_QUOTE_CHARS && o + 8 < outlen) {
        int k = utf8_len(p + i, n - i);
        if (k == 0 || p[i] < 0x20 || p[i] == 0x7F) {
            snprintf(out + o, outlen - o, "\\x%02x", p[i]);
            o += 4;
            i++;
        } else {
            memcpy(out + o, p + i, (size_t)k);
            o += (size_t)k;
            i += k;
        }
        chars++;
    }
    if (i < n && o + 4 <= outlen) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    if (outlen > 0)
        out[o < outlen ? o : outlen - 1] = '\0';
}

/* Formats "<before>'<word>'<after>" into err. */
static void
set_error(char *err, size_t errlen, const char *before, const char *word,
          Py_ssize_t n, const char *after)
{
    char q[4 * DS_QUOTE_CHARS + 8];

    if (err == NULL || errlen == 0)
        return;
    quote_word(q, sizeof q, word, n);
    snprintf(err, errlen, "%s'%s'%s", before, q, after);
}

/* The duration grammar; `what` names the value in messages ("ttl"). */
static int
duration_parse(const char *text, Py_ssize_t len, const char *what,
               double *seconds, char *err, size_t errlen)
{
    char before[32];
    unsigned long long total = 0;
    Py_ssize_t i = 0;
    int too_big = 0;

    snprintf(before, sizeof before, "invalid %s ", what);
    *seconds = 0.0;
    if (len <= 0)
        goto syntax;
    while (i < len) {
        unsigned long long n = 0, unit;
        Py_ssize_t digits = i;

        while (i < len && text[i] >= '0' && text[i] <= '9') {
            /* Stop growing well before overflow: past the limit anyway. */
            if (n <= DS_MAX_SECONDS)
                n = n * 10 + (unsigned long long)(text[i] - '0');
            i++;
        }
        if (i == digits || i == len)
            goto syntax;
        switch (text[i]) {
        case 's': unit = 1; break;
        case 'm': unit = 60; break;
        case 'h': unit = 3600; break;
        case 'd': unit = DS_SECONDS_PER_DAY; break;
        case 'w': unit = 7 * DS_SECONDS_PER_DAY; break;
        default: goto syntax;
        }
        i++;
        /* n <= 10 * DS_MAX_SECONDS + 9 and unit <= 604800: no overflow. */
        if (too_big || n > DS_MAX_SECONDS || n * unit > DS_MAX_SECONDS - total)
            too_big = 1;
        else
            total += n * unit;
    }
    if (too_big) {
        set_error(err, errlen, before, text, len,
                  ": the longest allowed duration is 100 years (36525d)");
        return -1;
    }
    if (total == 0) {
        set_error(err, errlen, before, text, len,
                  ": a duration must be longer than zero, such as 30m or 1h30m");
        return -1;
    }
    *seconds = (double)total;
    return 0;
syntax:
    set_error(err, errlen, before, text, len, ": " DS_DURATION_HELP);
    return -1;
}

static int
word_is(const char *w, Py_ssize_t n, const char *lit)
{
    size_t k = strlen(lit);
    return (size_t)n == k && memcmp(w, lit, k) == 0;
}

static int
word_starts(const char *w, Py_ssize_t n, const char *lit)
{
    size_t k = strlen(lit);
    return (size_t)n >= k && memcmp(w, lit, k) == 0;
}

/* ignore='s value: identifiers separated by single commas. */
static int
ignore_list_ok(const char *v, Py_ssize_t n)
{
    int at_start = 1;
    if (n == 0)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)v[i];
        if (c == ',') {
            if (at_start)
                return 0;
            at_start = 1;
            continue;
        }
        int alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!alpha && !(c >= '0' && c <= '9' && !at_start))
            return 0;
        at_start = 0;
    }
    return !at_start;
}

int
options_parse(const char *text, Py_ssize_t len, ds_options *out,
              char *err, size_t errlen)
{
    Py_ssize_t i = 0;
    int seen_ttl = 0;

    out->ttl = 0.0;
    out->flags = 0;
    out->ignore = NULL;
    out->ignore_len = 0;
    while (i < len) {
        const char *w;
        Py_ssize_t n;
        int flag = 0, again = 0;

        while (i < len && is_space((unsigned char)text[i]))
            i++;
        if (i == len)
            break;
        w = text + i;
        while (i < len && !is_space((unsigned char)text[i]))
            i++;
        n = text + i - w;

        if (word_is(w, n, "refresh"))
            flag = DS_OPT_REFRESH;
        else if (word_is(w, n, "nocode"))
            flag = DS_OPT_NOCODE;
        else if (word_is(w, n, "nofiles"))
            flag = DS_OPT_NOFILES;
        if (flag) {
            again = (out->flags & flag) != 0;
            out->flags |= flag;
        } else if (word_is(w, n, "ttl") || word_is(w, n, "ttl=")) {
            set_error(err, errlen, "option ", w, n,
                      " needs a value: write ttl=DURATION such as ttl=30m or ttl=1h30m, with units s, m, h, d, w");
            goto error;
        } else if (word_starts(w, n, "ttl=")) {
            again = seen_ttl;
            seen_ttl = 1;
            if (!again && duration_parse(w + 4, n - 4, "ttl", &out->ttl, err, errlen) < 0)
                goto error;
        } else if (word_is(w, n, "ignore") || word_is(w, n, "ignore=")) {
            set_error(err, errlen, "option ", w, n,
                      " needs a value: write ignore=NAME[,NAME...] with the argument names "
                      "(or self) to leave out of the key");
            goto error;
        } else if (word_starts(w, n, "ignore=")) {
            again = out->ignore != NULL;
            if (!again && !ignore_list_ok(w + 7, n - 7)) {
                set_error(err, errlen, "option ", w, n,
                          ": ignore= takes argument names (identifiers, or self) separated by commas, "
                          "such as ignore=session or ignore=self,verbose");
                goto error;
            }
            out->ignore = w + 7;
            out->ignore_len = n - 7;
        } else if (word_starts(w, n, "nofiles=")) {
            set_error(err, errlen, "option ", w, n, " takes no value: write nofiles alone");
            goto error;
        } else if (word_starts(w, n, "refresh=")) {
            set_error(err, errlen, "option ", w, n, " takes no value: write refresh alone");
            goto error;
        } else if (word_starts(w, n, "nocode=")) {
            set_error(err, errlen, "option ", w, n, " takes no value: write nocode alone");
            goto error;
        } else {
            set_error(err, errlen, "unknown option ", w, n,
                      ": allowed options are " DS_ALLOWED);
            goto error;
        }
        if (again) {
            set_error(err, errlen, "duplicate option ", w, n,
                      ": give each of " DS_ALLOWED " at most once");
            goto error;
        }
    }
    return 0;
error:
    out->ttl = 0.0;
    out->flags = 0;
    out->ignore = NULL;
    out->ignore_len = 0;
    return -1;
}

PyObject *
options_ignore_tuple(const ds_options *o)
{
    if (o->ignore == NULL)
        return PyTuple_New(0);
    PyObject *text = PyUnicode_FromStringAndSize(o->ignore, o->ignore_len);
    if (text == NULL)
        return NULL;
    PyObject *comma = PyUnicode_FromString(",");
    PyObject *parts = comma ? PyUnicode_Split(text, comma, -1) : NULL;
    Py_DECREF(text);
    Py_XDECREF(comma);
    if (parts == NULL)
        return NULL;
    PyObject *res = PyList_AsTuple(parts);
    Py_DECREF(parts);
    return res;
}

int
options_parse_duration(const char *text, Py_ssize_t len, double *seconds,
                       char *err, size_t errlen)
{
    return duration_parse(text, len, "duration", seconds, err, errlen);
}

/* ---- Python-level functions ---- */

/* The UTF-8 text of `text`, or NULL with TypeError (not a str) or
 * UnicodeEncodeError (lone surrogates; a ValueError too). */
static const char *
options_text(PyObject *text, const char *what, Py_ssize_t *len)
{
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "%s must be str, not %.100s",
                     what, Py_TYPE(text)->tp_name);
        return NULL;
    }
    return PyUnicode_AsUTF8AndSize(text, len);
}

PyObject *
options_py_parse(PyObject *module, PyObject *text)
{
    char err[DS_OPTIONS_ERRLEN];
    ds_options o;
    Py_ssize_t len;
    const char *s;

    DS_UNUSED(module);
    s = options_text(text, "options", &len);
    if (s == NULL)
        return NULL;
    if (options_parse(s, len, &o, err, sizeof err) < 0) {
        PyErr_SetString(PyExc_ValueError, err);
        return NULL;
    }
    PyObject *ignore = options_ignore_tuple(&o);
    if (ignore == NULL)
        return NULL;
    return Py_BuildValue("{s:d,s:i,s:O,s:O,s:O,s:N}",
                         "ttl", o.ttl,
                         "flags", o.flags,
                         "refresh", (o.flags & DS_OPT_REFRESH) ? Py_True : Py_False,
                         "nocode", (o.flags & DS_OPT_NOCODE) ? Py_True : Py_False,
                         "nofiles", (o.flags & DS_OPT_NOFILES) ? Py_True : Py_False,
                         "ignore", ignore);
}

PyObject *
options_py_parse_duration(PyObject *module, PyObject *text)
{
    char err[DS_OPTIONS_ERRLEN];
    double seconds;
    Py_ssize_t len;
    const char *s;

    DS_UNUSED(module);
    s = options_text(text, "duration", &len);
    if (s == NULL)
        return NULL;
    if (options_parse_duration(s, len, &seconds, err, sizeof err) < 0) {
        PyErr_SetString(PyExc_ValueError, err);
        return NULL;
    }
    return PyFloat_FromDouble(seconds);
}
