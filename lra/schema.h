/* schema.h - table-driven parameter declarations (type, default, range, doc per key).
 *
 * Every configurable struct in lra (model, train, each task, each attention mechanism) is
 * described by an array of param_def. The table drives: YAML validation (config.c), defaults,
 * `lra list`, the README's config reference, the resolved-config dump and the run id.
 * Values live in a plain C struct; each param_def says where (offsetof) and how big.
 */
#ifndef LRA_SCHEMA_H
#define LRA_SCHEMA_H

#include <stddef.h>
#include <stdio.h>

typedef enum {
    PT_INT,      /* int;                 range [min, max] */
    PT_FLOAT,    /* float;               range [min, max] */
    PT_BOOL,     /* int 0/1;             YAML true/false */
    PT_STRING,   /* char[size];          free text (paths, names) */
    PT_ENUM,     /* int index into choices ("a|b|c"); YAML gives the name */
    PT_INT_LIST, /* lra_ilist;           a YAML list of ints (a flat list is a value, not a sweep axis) */
} param_type;

#define LRA_ILIST_MAX 32
typedef struct {
    int n;
    int v[LRA_ILIST_MAX];
} lra_ilist;

typedef struct {
    const char *key;     /* YAML key, the field's standard term (d_model, window, ...) */
    param_type type;
    const char *def;     /* default, written as it would be in YAML ("0.1", "true", "[0]", "tiled") */
    double min, max;     /* inclusive range for PT_INT / PT_FLOAT / list elements */
    const char *choices; /* PT_ENUM: "tiled|materialized" */
    const char *doc;     /* one line for `lra list` and the README */
    size_t offset;       /* offsetof(struct, field) */
    size_t size;         /* sizeof(field); PT_STRING: capacity including NUL */
} param_def;

#define P_INT(st, f, def, lo, hi, doc) {#f, PT_INT, def, lo, hi, NULL, doc, offsetof(st, f), sizeof(((st *)0)->f)}
#define P_FLOAT(st, f, def, lo, hi, doc) {#f, PT_FLOAT, def, lo, hi, NULL, doc, offsetof(st, f), sizeof(((st *)0)->f)}
#define P_BOOL(st, f, def, doc) {#f, PT_BOOL, def, 0, 1, NULL, doc, offsetof(st, f), sizeof(((st *)0)->f)}
#define P_STRING(st, f, def, doc) {#f, PT_STRING, def, 0, 0, NULL, doc, offsetof(st, f), sizeof(((st *)0)->f)}
#define P_ENUM(st, f, def, choices, doc) {#f, PT_ENUM, def, 0, 0, choices, doc, offsetof(st, f), sizeof(((st *)0)->f)}
#define P_ILIST(st, f, def, lo, hi, doc) {#f, PT_INT_LIST, def, lo, hi, NULL, doc, offsetof(st, f), sizeof(((st *)0)->f)}
/* Same, with a YAML key that differs from the C field name (e.g. `global`, a C keyword). */
#define P_INT_K(st, key, f, def, lo, hi, doc) {key, PT_INT, def, lo, hi, NULL, doc, offsetof(st, f), sizeof(((st *)0)->f)}
#define P_ILIST_K(st, key, f, def, lo, hi, doc) {key, PT_INT_LIST, def, lo, hi, NULL, doc, offsetof(st, f), sizeof(((st *)0)->f)}

/* Find a key in a schema; NULL when absent. */
const param_def *schema_find(const param_def *s, int n, const char *key);

/* Nearest key by edit distance (<= 3), or NULL: for "did you mean" hints. */
const char *schema_nearest(const param_def *s, int n, const char *key);

/* Parse one scalar text (as YAML gives it) for def and store it into obj.
 * PT_INT_LIST takes "[1, 2, 3]" or "1,2,3" or a single "4". Returns 0, or -1 with a reason in err
 * (e.g. "expected an integer in [1, 4096], got 'abc'"). */
int schema_set(const param_def *def, void *obj, const char *text, char *err, size_t errlen);

/* Store every default of the schema into obj. Aborts if a default is invalid (programming error). */
void schema_defaults(const param_def *s, int n, void *obj);

/* Write the value of def in obj as YAML scalar text ("0.1", "true", "[1, 2]", "tiled"). */
void schema_format(const param_def *def, const void *obj, char *buf, size_t n);

/* Write "key: value" lines for the whole schema at the given indent (resolved config dumps). */
void schema_dump_yaml(const param_def *s, int n, const void *obj, int indent, FILE *f);

/* Name of a param type for docs ("int", "float", "bool", "string", "enum", "int list"). */
const char *schema_type_name(param_type t);

/* Enum helpers: index of name in "a|b|c" (-1 if absent); name at index into buf. */
int schema_enum_index(const char *choices, const char *name);
const char *schema_enum_name(const char *choices, int idx, char *buf, size_t n);

#endif
