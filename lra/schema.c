/* schema.c - parse, check and print values described by param_def tables (see schema.h).
 *
 * Texts handed to schema_set are scalars as YAML gives them (already unquoted). Parsing is
 * strict: the whole text must be consumed, integers must be integers ("12.5" is an error for an
 * int), floats must be finite, and ranges are inclusive. A range of [0, 0] on an int or float
 * means "unbounded" (no table in lra uses [0, 0] as a real range).
 * Floats are printed with the shortest "%.Ng" (N <= 9 for float, <= 17 for double) that reads
 * back to the identical value, so format -> set round trips are exact and dumps stay readable.
 */
#include "schema.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common.h"

const param_def *schema_find(const param_def *s, int n, const char *key) {
    for (int i = 0; i < n; i++)
        if (strcmp(s[i].key, key) == 0) return &s[i];
    return NULL;
}

const char *schema_nearest(const param_def *s, int n, const char *key) {
    const char *best = NULL;
    int best_d = 4;
    int klen = (int)strlen(key);
    for (int i = 0; i < n; i++) {
        int d = lra_edit_distance(key, s[i].key);
        /* A distance equal to the key's whole length is a replacement, not a typo. */
        if (d < best_d && d < klen) {
            best_d = d;
            best = s[i].key;
        }
    }
    return best;
}

const char *schema_type_name(param_type t) {
    switch (t) {
    case PT_INT: return "int";
    case PT_FLOAT: return "float";
    case PT_BOOL: return "bool";
    case PT_STRING: return "string";
    case PT_ENUM: return "enum";
    case PT_INT_LIST: return "int list";
    }
    return "?";
}

int schema_enum_index(const char *choices, const char *name) {
    if (!choices || !name) return -1;
    size_t nl = strlen(name);
    int idx = 0;
    const char *p = choices;
    for (;;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == nl && strncmp(p, name, len) == 0) return idx;
        if (!bar) return -1;
        p = bar + 1;
        idx++;
    }
}

const char *schema_enum_name(const char *choices, int idx, char *buf, size_t n) {
    if (n) buf[0] = 0;
    if (!choices || idx < 0) return buf;
    const char *p = choices;
    for (int i = 0; i < idx; i++) {
        p = strchr(p, '|');
        if (!p) return buf;
        p++;
    }
    const char *bar = strchr(p, '|');
    size_t len = bar ? (size_t)(bar - p) : strlen(p);
    if (n) {
        if (len >= n) len = n - 1;
        memcpy(buf, p, len);
        buf[len] = 0;
    }
    return buf;
}

/* Nearest enum choice to name (edit distance <= 3), into buf; 0 if none. */
static int enum_nearest(const char *choices, const char *name, char *buf, size_t n) {
    int best_d = 4, found = 0;
    char tmp[128];
    for (int i = 0;; i++) {
        schema_enum_name(choices, i, tmp, sizeof tmp);
        if (!tmp[0]) break;
        int d = lra_edit_distance(name, tmp);
        if (d < best_d && d < (int)strlen(name)) {
            best_d = d;
            snprintf(buf, n, "%s", tmp);
            found = 1;
        }
    }
    return found;
}

static int unbounded(const param_def *d) { return d->min == 0 && d->max == 0; }

/* A range bound for messages: integral values in full ("1000000000", not "1e+09"). */
static void bound_text(double v, char *buf, size_t n) {
    if (v == floor(v) && fabs(v) < 1e15) snprintf(buf, n, "%.0f", v);
    else snprintf(buf, n, "%.9g", v);
}

/* " in [1, 4096]" or "" when unbounded, for messages. */
static void range_text(const param_def *d, char *buf, size_t n) {
    char lo[48], hi[48];
    if (unbounded(d)) {
        buf[0] = 0;
        return;
    }
    bound_text(d->min, lo, sizeof lo);
    bound_text(d->max, hi, sizeof hi);
    snprintf(buf, n, " in [%s, %s]", lo, hi);
}

static int blank(const char *s) {
    while (isspace((unsigned char)*s)) s++;
    return *s == 0;
}

/* Strict integer: optional sign, digits, surrounding blanks allowed. */
static int parse_ll(const char *s, long long *out) {
    while (isspace((unsigned char)*s)) s++;
    if (!*s) return -1;
    const char *q = s;
    if (*q == '+' || *q == '-') q++;
    if (!isdigit((unsigned char)*q)) return -1;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno) return -1;
    while (isspace((unsigned char)*end)) end++;
    if (*end) return -1;
    *out = v;
    return 0;
}

/* Strict finite number (decimal, exponent allowed; no hex, inf or nan). */
static int parse_double(const char *s, double *out) {
    while (isspace((unsigned char)*s)) s++;
    if (!*s) return -1;
    for (const char *p = s; *p; p++)
        if (!(isdigit((unsigned char)*p) || strchr("+-.eE \t", *p))) return -1;
    errno = 0;
    char *end;
    double v = strtod(s, &end);
    if (end == s || errno == ERANGE) return -1;
    while (isspace((unsigned char)*end)) end++;
    if (*end || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

static int parse_int_in_range(const param_def *d, const char *text, long long *v, const char *what,
                              char *err, size_t errlen) {
    char rng[128];
    range_text(d, rng, sizeof rng);
    if (parse_ll(text, v) != 0 || *v < INT_MIN || *v > INT_MAX)
        return lra_errorf(err, errlen, "expected %s%s, got '%s'", what, rng, text);
    if (!unbounded(d) && ((double)*v < d->min || (double)*v > d->max))
        return lra_errorf(err, errlen, "expected %s%s, got '%s'", what, rng, text);
    return 0;
}

static int parse_ilist(const param_def *d, const char *text, lra_ilist *out, char *err, size_t errlen) {
    char rng[128];
    range_text(d, rng, sizeof rng);
    const char *p = text;
    while (isspace((unsigned char)*p)) p++;
    size_t len = strlen(p);
    while (len && isspace((unsigned char)p[len - 1])) len--;
    char *buf = xmalloc(len + 1);
    memcpy(buf, p, len);
    buf[len] = 0;
    char *body = buf;
    if (len && buf[0] == '[') {
        if (buf[len - 1] != ']') {
            free(buf);
            return lra_errorf(err, errlen, "expected a list of integers%s like [1, 2], got '%s'", rng, text);
        }
        buf[len - 1] = 0;
        body = buf + 1;
    } else if (!len) {
        free(buf);
        return lra_errorf(err, errlen, "expected a list of integers%s like [1, 2], got ''", rng);
    }
    lra_ilist l = {0};
    if (!blank(body)) {
        /* strtok would skip empty items ("1,,2"); walk by hand to reject them. */
        char *item = body;
        for (;;) {
            char *comma = strchr(item, ',');
            if (comma) *comma = 0;
            long long v;
            if (blank(item) || parse_ll(item, &v) != 0 || v < INT_MIN || v > INT_MAX ||
                (!unbounded(d) && ((double)v < d->min || (double)v > d->max))) {
                int r = lra_errorf(err, errlen, "expected a list of integers%s, got '%s' (bad item '%s')", rng,
                                   text, item + strspn(item, " \t"));
                free(buf);
                return r;
            }
            if (l.n == LRA_ILIST_MAX) {
                free(buf);
                return lra_errorf(err, errlen, "list too long: at most %d integers, got '%s'", LRA_ILIST_MAX, text);
            }
            l.v[l.n++] = (int)v;
            if (!comma) break;
            item = comma + 1;
        }
    }
    free(buf);
    *out = l;
    return 0;
}

int schema_set(const param_def *d, void *obj, const char *text, char *err, size_t errlen) {
    unsigned char *dst = (unsigned char *)obj + d->offset;
    if (!text) text = "";
    switch (d->type) {
    case PT_INT: {
        long long v;
        if (parse_int_in_range(d, text, &v, "an integer", err, errlen)) return -1;
        if (d->size == sizeof(long long)) {
            long long x = v;
            memcpy(dst, &x, sizeof x);
        } else {
            LRA_CHECK(d->size == sizeof(int), "PT_INT field '%s' has size %zu", d->key, d->size);
            int x = (int)v;
            memcpy(dst, &x, sizeof x);
        }
        return 0;
    }
    case PT_FLOAT: {
        char rng[128];
        range_text(d, rng, sizeof rng);
        double v;
        if (parse_double(text, &v) != 0)
            return lra_errorf(err, errlen, "expected a number%s, got '%s'", rng, text);
        if (!unbounded(d) && (v < d->min || v > d->max))
            return lra_errorf(err, errlen, "expected a number%s, got '%s'", rng, text);
        if (d->size == sizeof(double)) {
            memcpy(dst, &v, sizeof v);
        } else {
            LRA_CHECK(d->size == sizeof(float), "PT_FLOAT field '%s' has size %zu", d->key, d->size);
            float x = (float)v;
            memcpy(dst, &x, sizeof x);
        }
        return 0;
    }
    case PT_BOOL: {
        int v;
        if (!strcasecmp(text, "true") || !strcasecmp(text, "yes") || !strcasecmp(text, "on")) v = 1;
        else if (!strcasecmp(text, "false") || !strcasecmp(text, "no") || !strcasecmp(text, "off")) v = 0;
        else return lra_errorf(err, errlen, "expected true or false, got '%s'", text);
        LRA_CHECK(d->size == sizeof(int), "PT_BOOL field '%s' has size %zu", d->key, d->size);
        memcpy(dst, &v, sizeof v);
        return 0;
    }
    case PT_STRING: {
        size_t len = strlen(text);
        if (len + 1 > d->size)
            return lra_errorf(err, errlen, "text too long: at most %zu characters, got %zu", d->size - 1, len);
        memcpy(dst, text, len + 1);
        return 0;
    }
    case PT_ENUM: {
        int idx = schema_enum_index(d->choices, text);
        if (idx < 0) {
            char near[128];
            if (enum_nearest(d->choices, text, near, sizeof near))
                return lra_errorf(err, errlen, "expected one of %s, got '%s' (did you mean '%s'?)", d->choices, text,
                                  near);
            return lra_errorf(err, errlen, "expected one of %s, got '%s'", d->choices, text);
        }
        LRA_CHECK(d->size == sizeof(int), "PT_ENUM field '%s' has size %zu", d->key, d->size);
        memcpy(dst, &idx, sizeof idx);
        return 0;
    }
    case PT_INT_LIST: {
        LRA_CHECK(d->size == sizeof(lra_ilist), "PT_INT_LIST field '%s' has size %zu", d->key, d->size);
        lra_ilist l;
        if (parse_ilist(d, text, &l, err, errlen)) return -1;
        memcpy(dst, &l, sizeof l);
        return 0;
    }
    }
    return lra_errorf(err, errlen, "unknown parameter type %d", (int)d->type);
}

void schema_defaults(const param_def *s, int n, void *obj) {
    char err[256];
    for (int i = 0; i < n; i++) {
        const char *def = s[i].def;
        if (!def) def = s[i].type == PT_INT_LIST ? "[]" : "";
        if (!s[i].def && s[i].type == PT_STRING) {
            ((char *)obj + s[i].offset)[0] = 0;
            continue;
        }
        int rc = schema_set(&s[i], obj, def, err, sizeof err);
        LRA_CHECK(rc == 0, "invalid default '%s' for key '%s': %s", def, s[i].key, err);
    }
}

/* Shortest %.Ng that reads back to exactly v (as float when is_float). */
static void format_real(double v, int is_float, char *buf, size_t n) {
    int maxp = is_float ? 9 : 17;
    for (int p = is_float ? 6 : 15; p <= maxp; p++) {
        snprintf(buf, n, "%.*g", p, v);
        double back = strtod(buf, NULL);
        if (is_float ? (float)back == (float)v : back == v) return;
    }
    snprintf(buf, n, "%.*g", maxp, v);
}

void schema_format(const param_def *d, const void *obj, char *buf, size_t n) {
    const unsigned char *src = (const unsigned char *)obj + d->offset;
    if (!n) return;
    buf[0] = 0;
    switch (d->type) {
    case PT_INT:
        if (d->size == sizeof(long long)) {
            long long x;
            memcpy(&x, src, sizeof x);
            snprintf(buf, n, "%lld", x);
        } else {
            int x;
            memcpy(&x, src, sizeof x);
            snprintf(buf, n, "%d", x);
        }
        return;
    case PT_FLOAT:
        if (d->size == sizeof(double)) {
            double x;
            memcpy(&x, src, sizeof x);
            format_real(x, 0, buf, n);
        } else {
            float x;
            memcpy(&x, src, sizeof x);
            format_real((double)x, 1, buf, n);
        }
        return;
    case PT_BOOL: {
        int x;
        memcpy(&x, src, sizeof x);
        snprintf(buf, n, "%s", x ? "true" : "false");
        return;
    }
    case PT_STRING:
        snprintf(buf, n, "%.*s", (int)d->size, (const char *)src);
        return;
    case PT_ENUM: {
        int x;
        memcpy(&x, src, sizeof x);
        schema_enum_name(d->choices, x, buf, n);
        return;
    }
    case PT_INT_LIST: {
        lra_ilist l;
        memcpy(&l, src, sizeof l);
        size_t used = 0;
        used += (size_t)snprintf(buf + used, n - used, "[");
        for (int i = 0; i < l.n && used < n; i++)
            used += (size_t)snprintf(buf + used, n - used, i ? ", %d" : "%d", l.v[i]);
        if (used < n) snprintf(buf + used, n - used, "]");
        return;
    }
    }
}

/* Can s be written as a plain YAML scalar that reads back as the same text? Conservative. */
static int plain_ok(const char *s) {
    if (!*s) return 0;
    if (!strcasecmp(s, "null") || !strcmp(s, "~")) return 0;
    if (s[0] == '-' && (s[1] == 0 || s[1] == ' ')) return 0;
    for (const char *p = s; *p; p++)
        if (!(isalnum((unsigned char)*p) || strchr("_.-/+", *p))) return 0;
    return 1;
}

static void write_scalar(const param_def *d, const char *text, FILE *f) {
    if (d->type != PT_STRING || plain_ok(text)) {
        fputs(text, f);
        return;
    }
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
        else if (*p < 0x20) fprintf(f, "\\x%02x", *p);
        else fputc(*p, f);
    }
    fputc('"', f);
}

void schema_dump_yaml(const param_def *s, int n, const void *obj, int indent, FILE *f) {
    char buf[1024];
    for (int i = 0; i < n; i++) {
        schema_format(&s[i], obj, buf, sizeof buf);
        fprintf(f, "%*s%s: ", indent, "", s[i].key);
        write_scalar(&s[i], buf, f);
        fputc('\n', f);
    }
}
