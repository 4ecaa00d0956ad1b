/* config.c - YAML experiment files -> validated, typed run configs of a sweep (see config.h).
 *
 * Loading a file goes in four steps, so that --set overrides pass exactly the same checks as the
 * file and every error can name the place it came from:
 *   1. parse: libyaml's document API turns the file into nodes with their positions; the sections
 *      become raw key/node lists (duplicate keys and YAML syntax errors are caught here);
 *   2. override: each --set value is parsed as its own little YAML document and replaces or adds a
 *      raw entry (its location is the text "--set KEY");
 *   3. resolve: every key is looked up in its schema and every value (or every value of a sweep
 *      axis) is checked with schema_set, located at the value's line:column;
 *   4. expand: the cartesian product of the axes (attention entry, attention axes, task axes,
 *      model axes, train axes, seed innermost; within a section in schema order) gives the runs;
 *      cross-key rules, task validate() and mechanism validate() are checked on each run.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "common.h"

/* ---------------------------------------------------------------- schemas */

const param_def model_schema[] = {
    P_INT(model_cfg, d_model, "64", 2, 16384, "residual stream width D (divisible by n_heads; even for sinusoidal positions)"),
    P_INT(model_cfg, n_heads, "4", 1, 256, "attention heads H; head size Dh = d_model / n_heads"),
    P_INT(model_cfg, n_layers, "2", 1, 64, "number of pre-LayerNorm Transformer blocks"),
    P_INT(model_cfg, d_ff, "128", 1, 262144, "hidden width of each block's GELU feed-forward network"),
    P_INT(model_cfg, mlp_dim, "128", 1, 262144, "hidden width of the classifier head MLP"),
    P_FLOAT(model_cfg, dropout, "0.1", 0, 0.99, "dropout rate on embeddings, residual branches and FFN hidden units"),
    P_FLOAT(model_cfg, attn_dropout, "0.0", 0, 0.99, "dropout rate on attention probabilities (mechanisms that support it)"),
    P_ENUM(model_cfg, pos, "sinusoidal", "sinusoidal|learned|none", "position encoding added to the token embeddings"),
    P_ENUM(model_cfg, pooling, "cls", "cls|mean", "sequence summary for the classifier: a prepended CLS token or the masked mean"),
    P_BOOL(model_cfg, causal, "false", "causal (left-to-right) attention in the encoder; language-modelling tasks force it on"),
    P_FLOAT(model_cfg, emb_init_std, "1.0", 0, 100, "standard deviation of the token embedding initialisation (LRA: 1.0)"),
    P_ENUM(model_cfg, interaction, "nli", "nli|concat",
           "two-document tasks: classify [u, v, u*v, u-v] (nli, the LRA paper) or [u, v] (concat, what LRA's code did)"),
    P_ENUM(model_cfg, memory, "none", "none|xl|compressive",
           "language modelling: segment memory; none (attention within the segment), xl (Transformer-XL recurrence, relative positions), compressive (xl + compressed memory)"),
    P_INT(model_cfg, mem_len, "0", 0, 1048576, "xl/compressive: positions of memory kept per layer (Transformer-XL mem_len M; required > 0)"),
    P_INT(model_cfg, cmem_len, "0", 0, 1048576, "compressive: compressed memory slots per layer (required > 0)"),
    P_INT(model_cfg, compression_rate, "4", 1, 1024, "compressive: c, evicted memories per compressed slot (segment_len and mem_len must be multiples)"),
    P_ENUM(model_cfg, compression, "conv", "max|mean|conv|dilated_conv", "compressive: compression function f_c (conv: the paper's best)"),
    P_FLOAT(model_cfg, recon_weight, "1.0", 0, 1e6, "compressive: weight of the attention-reconstruction loss (it trains only the compressor)"),
    P_INT(model_cfg, clamp_len, "0", 0, 1048576, "xl/compressive: relative distances above this use this one's encoding (0 = no clamp)"),
    P_BOOL(model_cfg, same_length, "false", "xl/compressive: every query attends over the same number of keys (Transformer-XL eval)"),
};
const int model_schema_n = (int)LRA_ARRAY_LEN(model_schema);

const param_def train_schema[] = {
    P_INT(train_cfg, seed, "0", 0, 2147483647.0, "seed of model init, dropout and batch order; `seeds: [0, 1, 2]` sweeps it"),
    P_INT(train_cfg, batch_size, "32", 1, 65536, "examples per optimisation step"),
    P_INT(train_cfg, steps, "1000", 1, 1e9, "number of optimisation steps"),
    P_FLOAT(train_cfg, lr, "1e-3", 0, 10, "peak learning rate, reached at the end of warmup"),
    P_INT(train_cfg, warmup, "100", 0, 1e9, "linear warmup steps from 0 to lr (may exceed steps, as in LRA's retrieval)"),
    P_ENUM(train_cfg, schedule, "cosine", "cosine|linear|constant|rsqrt", "learning-rate decay after warmup"),
    P_FLOAT(train_cfg, min_lr_ratio, "0.1", 0, 1, "final learning rate as a fraction of lr (cosine and linear schedules)"),
    P_FLOAT(train_cfg, weight_decay, "0.01", 0, 10, "AdamW decoupled weight decay (not on biases or LayerNorm gains)"),
    P_FLOAT(train_cfg, beta1, "0.9", 0, 0.999999, "Adam first-moment decay"),
    P_FLOAT(train_cfg, beta2, "0.98", 0, 0.999999, "Adam second-moment decay (LRA: 0.98)"),
    P_FLOAT(train_cfg, eps, "1e-9", 1e-30, 1, "Adam denominator epsilon (LRA: 1e-9)"),
    P_FLOAT(train_cfg, grad_clip, "1.0", 0, 1e9, "clip the global gradient L2 norm to this value; 0 turns clipping off"),
    P_INT(train_cfg, eval_every, "100", 1, 1e9, "steps between validation evaluations"),
    P_INT(train_cfg, eval_batches, "0", 0, 1e9, "validation batches per evaluation; 0 evaluates the whole split"),
    P_FLOAT(train_cfg, max_minutes, "0", 0, 1e7, "wall-clock limit of one run in minutes (status timeout); 0 means none"),
    P_INT(train_cfg, log_every, "50", 1, 1e9, "steps between training log lines"),
    P_INT(train_cfg, eval_segment_len, "0", 0, 1048576,
          "language modelling: segment length when scoring val/test (Transformer-XL evaluates with shorter segments and longer memory); 0 = task.seq_len"),
    P_INT(train_cfg, eval_mem_len, "0", 0, 1048576, "language modelling, xl/compressive: model.mem_len when scoring val/test; 0 = model.mem_len"),
    P_INT(train_cfg, checkpoint_every, "0", 0, 1e9,
          "steps between checkpoints (parameters, AdamW state, loop position) in DIR/checkpoints/<run_id>.ckpt, also written at a timeout; a run that finds its checkpoint continues from it (lra run --resume) with the same results; 0 = none"),
    P_BOOL(train_cfg, save_model, "false",
           "keep DIR/checkpoints/<run_id>.ckpt after a successful run (last and best-validation parameters, for analyses); otherwise it is deleted when the run ends ok"),
};
const int train_schema_n = (int)LRA_ARRAY_LEN(train_schema);

const param_def task_common_schema[] = {
    P_STRING(task_common, name, "", "task name (required), one of the tasks `lra list` shows"),
    P_INT(task_common, seq_len, "512", 1, 1048576, "tokens per sequence the model sees, excluding the CLS token"),
    P_INT(task_common, data_seed, "0", 0, 2147483647.0, "seed of data generation, sampling and split carving (shared by all runs)"),
    P_STRING(task_common, data_dir, "data", "directory of fetched or real benchmark data, relative to the working directory"),
};
const int task_common_schema_n = (int)LRA_ARRAY_LEN(task_common_schema);

/* The top-level `name:` as a schema entry, so dumps quote it like any other string. */
static const param_def exp_name_def = {"name", PT_STRING, "", 0, 0, NULL, "experiment name",
                                       offsetof(run_cfg, exp_name), sizeof(((run_cfg *)0)->exp_name)};

static const char *const top_keys[] = {"name", "task", "model", "attention", "train"};

#define MAX_RUNS_PER_FILE 10000

/* ---------------------------------------------------------------- loader state */

typedef struct {
    const char *src; /* file path, or "--set KEY" */
    int line, col;   /* 1-based; 0 when the source has no position (overrides) */
} loc_t;

typedef struct {
    const char *key;
    yaml_document_t *doc;
    yaml_node_t *val;
    loc_t kloc, vloc;
} kv_t;

typedef struct {
    kv_t *v;
    int n, cap;
} kvlist;

typedef struct {
    const char *name;
    loc_t loc;      /* the entry (its line is where validate errors point) */
    loc_t name_loc; /* the name value */
    kvlist params;  /* every key but name */
} attn_raw;

/* Where nodes of one YAML document come from. */
typedef struct {
    const char *src;
    int has_pos;
} srcinfo;

/* One key of a section after resolution: a fixed value (n == 1) or a sweep axis (n > 1). */
typedef enum { SEC_TASK_COMMON, SEC_TASK, SEC_MODEL, SEC_TRAIN, SEC_ATTN } section_id;

typedef struct {
    const param_def *def;
    section_id sec;
    const char *label; /* "model.d_model" (pool) */
    int n;
    const char **vals; /* texts for schema_set (pool) */
    loc_t *locs;
    loc_t kloc;
} setting;

typedef struct {
    setting *v;
    int n, cap;
} setlist;

typedef struct {
    const char *path;
    char *err;
    size_t errlen;

    yaml_document_t **docs;
    int n_docs;
    char **pool;
    int n_pool;

    const char *exp_name;
    loc_t exp_loc;
    loc_t root_loc;
    int has_section[5];
    loc_t section_loc[5];
    kvlist task, model, train;
    attn_raw *attn;
    int n_attn;
} loader;

enum { TOP_NAME, TOP_TASK, TOP_MODEL, TOP_ATTN, TOP_TRAIN };

static const char *pool_add(loader *L, char *s) {
    L->pool = xrealloc(L->pool, (size_t)(L->n_pool + 1) * sizeof *L->pool);
    L->pool[L->n_pool++] = s;
    return s;
}

static const char *pool_printf(loader *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *pool_printf(loader *L, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    int rc = vasprintf(&s, fmt, ap);
    va_end(ap);
    LRA_CHECK(rc >= 0, "out of memory formatting a string");
    return pool_add(L, s);
}

static void kv_free(kvlist *l) {
    free(l->v);
    memset(l, 0, sizeof *l);
}

static void attn_free_all(loader *L) {
    for (int i = 0; i < L->n_attn; i++) kv_free(&L->attn[i].params);
    free(L->attn);
    L->attn = NULL;
    L->n_attn = 0;
}

static void loader_free(loader *L) {
    for (int i = 0; i < L->n_docs; i++) {
        yaml_document_delete(L->docs[i]);
        free(L->docs[i]);
    }
    free(L->docs);
    for (int i = 0; i < L->n_pool; i++) free(L->pool[i]);
    free(L->pool);
    kv_free(&L->task);
    kv_free(&L->model);
    kv_free(&L->train);
    attn_free_all(L);
}

/* Report an error at a location: "SRC:LINE:COL: msg" or "SRC: msg". Returns -1. */
static int errat(loader *L, loc_t at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int errat(loader *L, loc_t at, const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (at.line > 0) return lra_errorf(L->err, L->errlen, "%s:%d:%d: %s", at.src, at.line, at.col, msg);
    return lra_errorf(L->err, L->errlen, "%s: %s", at.src, msg);
}

static loc_t node_loc(srcinfo si, const yaml_node_t *n) {
    loc_t l = {si.src, 0, 0};
    if (si.has_pos && n) {
        l.line = (int)n->start_mark.line + 1;
        l.col = (int)n->start_mark.column + 1;
    }
    return l;
}

static const char *node_kind(const yaml_node_t *n) {
    switch (n->type) {
    case YAML_SCALAR_NODE: return "a scalar";
    case YAML_SEQUENCE_NODE: return "a list";
    case YAML_MAPPING_NODE: return "a mapping";
    default: return "nothing";
    }
}

static const char *scalar_text(const yaml_node_t *n) { return (const char *)n->data.scalar.value; }

/* A plain empty / ~ / null scalar: a key given without a value. */
static int is_null(const yaml_node_t *n) {
    if (!n) return 1;
    if (n->type != YAML_SCALAR_NODE) return 0;
    if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return 0;
    const char *s = scalar_text(n);
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

static void kv_put(kvlist *l, const kv_t *kv) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 8;
        l->v = xrealloc(l->v, (size_t)l->cap * sizeof *l->v);
    }
    l->v[l->n++] = *kv;
}

static kv_t *kv_find(kvlist *l, const char *key) {
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->v[i].key, key)) return &l->v[i];
    return NULL;
}

static void kv_remove(kvlist *l, const char *key) {
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->v[i].key, key)) {
            memmove(&l->v[i], &l->v[i + 1], (size_t)(l->n - i - 1) * sizeof *l->v);
            l->n--;
            return;
        }
}

/* Replace the entry with kv's key, or append it. */
static void kv_upsert(kvlist *l, const kv_t *kv) {
    kv_t *old = kv_find(l, kv->key);
    if (old) *old = *kv;
    else kv_put(l, kv);
}

/* Read a mapping node into out, rejecting non-scalar and duplicate keys. what: "in model". */
static int read_map(loader *L, srcinfo si, yaml_document_t *doc, yaml_node_t *map, const char *what, kvlist *out) {
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(doc, p->key);
        yaml_node_t *v = yaml_document_get_node(doc, p->value);
        loc_t kl = node_loc(si, k);
        if (!k || k->type != YAML_SCALAR_NODE || is_null(k))
            return errat(L, kl, "keys %s must be plain names, got %s", what, k ? node_kind(k) : "nothing");
        const char *key = scalar_text(k);
        kv_t *dup = kv_find(out, key);
        if (dup) {
            if (dup->kloc.line > 0)
                return errat(L, kl, "duplicate key '%s' %s (first given at line %d)", key, what, dup->kloc.line);
            return errat(L, kl, "duplicate key '%s' %s", key, what);
        }
        kv_t kv = {key, doc, v, kl, node_loc(si, v)};
        kv_put(out, &kv);
    }
    return 0;
}

/* Registry names for hints. */
static const char *nearest_task(const char *name) {
    const char *best = NULL;
    int bd = 4;
    for (int i = 0; i < task_registry_count; i++) {
        int d = lra_edit_distance(name, task_registry[i]->name);
        if (d < bd && d < (int)strlen(name)) bd = d, best = task_registry[i]->name;
    }
    return best;
}

static const char *nearest_attn(const char *name) {
    const char *best = NULL;
    int bd = 4;
    for (int i = 0; i < attn_registry_count; i++) {
        int d = lra_edit_distance(name, attn_registry[i]->name);
        if (d < bd && d < (int)strlen(name)) bd = d, best = attn_registry[i]->name;
    }
    return best;
}

/* "listops, text, ..." into buf. */
static void list_names(int tasks, char *buf, size_t n) {
    size_t used = 0;
    buf[0] = 0;
    int cnt = tasks ? task_registry_count : attn_registry_count;
    for (int i = 0; i < cnt && used < n; i++) {
        const char *nm = tasks ? task_registry[i]->name : attn_registry[i]->name;
        used += (size_t)snprintf(buf + used, n - used, "%s%s", i ? ", " : "", nm);
    }
}

/* Parse one attention entry: a bare name or a mapping with `name:`. */
static int read_attn_entry(loader *L, srcinfo si, yaml_document_t *doc, yaml_node_t *n, attn_raw *out) {
    memset(out, 0, sizeof *out);
    out->loc = node_loc(si, n);
    if (n->type == YAML_SCALAR_NODE) {
        if (is_null(n)) return errat(L, out->loc, "attention entry without a mechanism name");
        out->name = scalar_text(n);
        out->name_loc = out->loc;
        return 0;
    }
    if (n->type != YAML_MAPPING_NODE)
        return errat(L, out->loc, "attention entries are a mechanism name or a mapping with 'name:', got %s",
                     node_kind(n));
    if (read_map(L, si, doc, n, "in an attention entry", &out->params)) return -1;
    kv_t *nm = kv_find(&out->params, "name");
    if (!nm) {
        char names[512];
        list_names(0, names, sizeof names);
        return errat(L, out->loc, "attention entry without 'name:' (mechanisms: %s)", names);
    }
    if (nm->val->type != YAML_SCALAR_NODE || is_null(nm->val))
        return errat(L, nm->vloc,
                     "attention name must be one mechanism name, got %s (list several entries under attention: "
                     "to compare mechanisms)",
                     is_null(nm->val) ? "nothing" : node_kind(nm->val));
    out->name = scalar_text(nm->val);
    out->name_loc = nm->vloc;
    kv_remove(&out->params, "name");
    return 0;
}

/* attention: a name, a mapping, or a list of them. Replaces L->attn. */
static int read_attention(loader *L, srcinfo si, yaml_document_t *doc, yaml_node_t *n) {
    attn_free_all(L);
    loc_t at = node_loc(si, n);
    if (is_null(n)) return errat(L, at, "attention: expected a mechanism name, a mapping or a list of them");
    if (n->type != YAML_SEQUENCE_NODE) {
        L->attn = xcalloc(1, sizeof *L->attn);
        L->n_attn = 1;
        return read_attn_entry(L, si, doc, n, &L->attn[0]);
    }
    int cnt = (int)(n->data.sequence.items.top - n->data.sequence.items.start);
    if (cnt == 0) return errat(L, at, "attention: empty list (give at least one mechanism)");
    L->attn = xcalloc((size_t)cnt, sizeof *L->attn);
    for (int i = 0; i < cnt; i++) {
        yaml_node_t *it = yaml_document_get_node(doc, n->data.sequence.items.start[i]);
        L->n_attn = i + 1;
        if (read_attn_entry(L, si, doc, it, &L->attn[i])) return -1;
    }
    return 0;
}

static int syntax_error(loader *L, yaml_parser_t *p, const char *src, int has_pos) {
    const char *prob = p->problem ? p->problem : "malformed YAML";
    char ctx[256] = "";
    if (p->context) snprintf(ctx, sizeof ctx, " %s", p->context);
    if (p->error == YAML_READER_ERROR) {
        loc_t at = {src, has_pos ? 1 : 0, 1};
        return errat(L, at, "YAML error: %s at byte %zu", prob, p->problem_offset);
    }
    loc_t at = {src, has_pos ? (int)p->problem_mark.line + 1 : 0, (int)p->problem_mark.column + 1};
    return errat(L, at, "YAML syntax error: %s%s", prob, ctx);
}

/* Load one YAML document from a file or string; *root NULL when empty. Keeps the doc in L. */
static int load_doc(loader *L, FILE *f, const char *text, const char *src, int has_pos, yaml_document_t **out,
                    yaml_node_t **root) {
    yaml_parser_t p;
    LRA_CHECK(yaml_parser_initialize(&p), "libyaml: cannot initialise a parser");
    if (f) yaml_parser_set_input_file(&p, f);
    else yaml_parser_set_input_string(&p, (const unsigned char *)text, strlen(text));
    yaml_document_t *doc = xcalloc(1, sizeof *doc);
    if (!yaml_parser_load(&p, doc)) {
        int rc = syntax_error(L, &p, src, has_pos);
        yaml_parser_delete(&p);
        free(doc);
        return rc;
    }
    L->docs = xrealloc(L->docs, (size_t)(L->n_docs + 1) * sizeof *L->docs);
    L->docs[L->n_docs++] = doc;
    *out = doc;
    *root = yaml_document_get_root_node(doc);
    if (*root) {
        /* A second document in the same stream is almost certainly a mistake. */
        yaml_document_t extra;
        if (!yaml_parser_load(&p, &extra)) {
            int rc = syntax_error(L, &p, src, has_pos);
            yaml_parser_delete(&p);
            return rc;
        }
        yaml_node_t *r2 = yaml_document_get_root_node(&extra);
        if (r2) {
            srcinfo si = {src, has_pos};
            loc_t at = node_loc(si, r2);
            yaml_document_delete(&extra);
            yaml_parser_delete(&p);
            return errat(L, at, "only one YAML document is allowed (found a second one; remove the '---')");
        }
        yaml_document_delete(&extra);
    }
    yaml_parser_delete(&p);
    return 0;
}

static int top_index(const char *key) {
    for (int i = 0; i < (int)LRA_ARRAY_LEN(top_keys); i++)
        if (!strcmp(top_keys[i], key)) return i;
    return -1;
}

static const char *nearest_top(const char *key) {
    const char *best = NULL;
    int bd = 4;
    for (int i = 0; i < (int)LRA_ARRAY_LEN(top_keys); i++) {
        int d = lra_edit_distance(key, top_keys[i]);
        if (d < bd && d < (int)strlen(key)) bd = d, best = top_keys[i];
    }
    return best;
}

static kvlist *section_list(loader *L, int top) {
    return top == TOP_TASK ? &L->task : top == TOP_MODEL ? &L->model : top == TOP_TRAIN ? &L->train : NULL;
}

/* Step 1: the file. */
static int parse_file(loader *L) {
    struct stat st;
    if (stat(L->path, &st) == 0 && S_ISDIR(st.st_mode))
        return lra_errorf(L->err, L->errlen, "%s: is a directory, not a YAML config file", L->path);
    FILE *f = fopen(L->path, "rb");
    if (!f) return lra_errorf(L->err, L->errlen, "%s: cannot open: %s", L->path, strerror(errno));
    yaml_document_t *doc;
    yaml_node_t *root;
    int rc = load_doc(L, f, NULL, L->path, 1, &doc, &root);
    fclose(f);
    if (rc) return -1;
    srcinfo si = {L->path, 1};
    loc_t start = {L->path, 1, 1};
    L->root_loc = start;
    if (!root || is_null(root))
        return errat(L, start, "empty config file (expected a mapping with name, task, model, attention, train)");
    L->root_loc = node_loc(si, root);
    if (root->type != YAML_MAPPING_NODE)
        return errat(L, L->root_loc, "expected a mapping with name, task, model, attention, train; got %s",
                     node_kind(root));
    kvlist top = {0};
    if (read_map(L, si, doc, root, "at the top level", &top)) {
        kv_free(&top);
        return -1;
    }
    for (int i = 0; i < top.n; i++) {
        kv_t *kv = &top.v[i];
        int t = top_index(kv->key);
        if (t < 0) {
            const char *near = nearest_top(kv->key);
            rc = near ? errat(L, kv->kloc, "unknown top-level key '%s' (did you mean '%s'?)", kv->key, near)
                      : errat(L, kv->kloc, "unknown top-level key '%s' (expected name, task, model, attention, train)",
                              kv->key);
            kv_free(&top);
            return rc;
        }
        L->has_section[t] = 1;
        L->section_loc[t] = kv->vloc;
        if (t == TOP_NAME) {
            if (kv->val->type != YAML_SCALAR_NODE || is_null(kv->val)) {
                kv_free(&top);
                return errat(L, kv->vloc, "name: expected the experiment name, got %s",
                             is_null(kv->val) ? "nothing" : node_kind(kv->val));
            }
            L->exp_name = scalar_text(kv->val);
            L->exp_loc = kv->vloc;
        } else if (t == TOP_ATTN) {
            if (read_attention(L, si, doc, kv->val)) {
                kv_free(&top);
                return -1;
            }
        } else {
            if (is_null(kv->val)) continue; /* `model:` with nothing under it: all defaults */
            if (kv->val->type != YAML_MAPPING_NODE) {
                rc = errat(L, kv->vloc, "%s: expected a mapping of keys, got %s", kv->key, node_kind(kv->val));
                kv_free(&top);
                return rc;
            }
            char what[32];
            snprintf(what, sizeof what, "in %s", kv->key);
            if (read_map(L, si, doc, kv->val, what, section_list(L, t))) {
                kv_free(&top);
                return -1;
            }
        }
    }
    kv_free(&top);
    if (!L->has_section[TOP_ATTN]) {
        /* No attention: the exact softmax baseline. */
        L->attn = xcalloc(1, sizeof *L->attn);
        L->n_attn = 1;
        L->attn[0].name = "softmax";
        L->attn[0].loc = L->attn[0].name_loc = L->root_loc;
    }
    return 0;
}

/* Step 2: one --set override. */
static int apply_set(loader *L, const char *set) {
    const char *eq = strchr(set, '=');
    const char *keytext = eq ? pool_printf(L, "%.*s", (int)(eq - set), set) : set;
    loc_t at = {pool_printf(L, "--set %s", keytext), 0, 0};
    if (!eq || eq == set) return errat(L, at, "expected section.key=value (e.g. model.d_model=128)");
    const char *value = eq + 1;
    yaml_document_t *doc;
    yaml_node_t *root;
    if (load_doc(L, NULL, value, at.src, 0, &doc, &root)) {
        /* Re-word: the YAML message alone does not show the value. */
        char inner[512];
        snprintf(inner, sizeof inner, "%s", L->err ? L->err : "");
        const char *msg = inner + strlen(at.src);
        if (*msg == ':') msg += 2;
        return errat(L, at, "cannot read value '%s' as YAML: %s", value, msg);
    }
    if (!root || is_null(root)) return errat(L, at, "missing value after '='");
    srcinfo si = {at.src, 0};
    const char *dot = strchr(keytext, '.');
    char section[32];
    snprintf(section, sizeof section, "%.*s", dot ? (int)(dot - keytext) : (int)strlen(keytext), keytext);
    int t = top_index(section);
    if (t < 0) {
        const char *near = nearest_top(section);
        if (near) return errat(L, at, "unknown section '%s' (did you mean '%s'?)", section, near);
        return errat(L, at, "unknown section '%s' (expected name, task, model, attention or train)", section);
    }
    const char *key = dot ? dot + 1 : NULL;
    if (t == TOP_NAME) {
        if (key) return errat(L, at, "'name' has no keys; use --set name=NAME");
        if (root->type != YAML_SCALAR_NODE) return errat(L, at, "name: expected the experiment name, got %s", node_kind(root));
        L->exp_name = scalar_text(root);
        L->exp_loc = at;
        return 0;
    }
    if (t == TOP_ATTN && !key) return read_attention(L, si, doc, root);
    if (!key || !*key) return errat(L, at, "expected %s.KEY=value", section);
    kv_t kv = {key, doc, root, at, at};
    if (t == TOP_ATTN) {
        if (!strcmp(key, "name")) return errat(L, at, "use --set attention=NAME (or attention=[a, b]) to choose mechanisms");
        int applied = 0;
        const char *near = NULL;
        for (int i = 0; i < L->n_attn; i++) {
            const attn_ops *ops = attn_find(L->attn[i].name);
            if (!ops) continue; /* reported when the entries are resolved */
            if (schema_find(ops->schema, ops->n_schema, key)) {
                kv_upsert(&L->attn[i].params, &kv);
                applied++;
            } else if (!near) {
                near = schema_nearest(ops->schema, ops->n_schema, key);
            }
        }
        if (!applied) {
            if (near) return errat(L, at, "no attention entry has a parameter '%s' (did you mean '%s'?)", key, near);
            return errat(L, at, "no attention entry has a parameter '%s'", key);
        }
        return 0;
    }
    kvlist *l = section_list(L, t);
    if (t == TOP_TRAIN && !strcmp(key, "seed")) kv_remove(l, "seeds");
    if (t == TOP_TRAIN && !strcmp(key, "seeds")) kv_remove(l, "seed");
    kv_upsert(l, &kv);
    L->has_section[t] = 1;
    return 0;
}

/* ---------------------------------------------------------------- step 3: resolve */

typedef union {
    max_align_t align;
    unsigned char bytes[8192];
} scratch_buf;

static void set_put(setlist *s, const setting *x) {
    if (s->n == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 16;
        s->v = xrealloc(s->v, (size_t)s->cap * sizeof *s->v);
    }
    s->v[s->n++] = *x;
}

static void set_free(setlist *s) {
    for (int i = 0; i < s->n; i++) {
        free(s->v[i].vals);
        free(s->v[i].locs);
    }
    free(s->v);
    memset(s, 0, sizeof *s);
}

static void setting_add_value(setting *st, const char *text, loc_t at) {
    st->vals = xrealloc(st->vals, (size_t)(st->n + 1) * sizeof *st->vals);
    st->locs = xrealloc(st->locs, (size_t)(st->n + 1) * sizeof *st->locs);
    st->vals[st->n] = text;
    st->locs[st->n] = at;
    st->n++;
}

/* "label: " before a message, except for overrides whose location already is "--set label". */
static const char *pfx(loader *L, const char *label, loc_t at) {
    return at.line > 0 ? pool_printf(L, "%s: ", label) : "";
}

/* Check one value text against def; located error "LOC: label: reason". */
static int check_value(loader *L, const setting *st, const char *text, loc_t at) {
    scratch_buf scratch;
    char why[512];
    LRA_CHECK(st->def->offset + st->def->size <= sizeof scratch.bytes, "parameter '%s' lies outside the scratch buffer",
              st->def->key);
    if (schema_set(st->def, scratch.bytes, text, why, sizeof why)) return errat(L, at, "%s%s", pfx(L, st->label, at), why);
    return 0;
}

/* "[1, 2]" from a sequence of scalars (an int-list value). */
static int flat_list_text(loader *L, srcinfo si, yaml_document_t *doc, yaml_node_t *seq, const setting *st,
                          const char **out) {
    size_t cap = 64, used = 0;
    char *buf = xmalloc(cap);
    buf[used++] = '[';
    int cnt = (int)(seq->data.sequence.items.top - seq->data.sequence.items.start);
    for (int i = 0; i < cnt; i++) {
        yaml_node_t *it = yaml_document_get_node(doc, seq->data.sequence.items.start[i]);
        if (it->type != YAML_SCALAR_NODE || is_null(it)) {
            free(buf);
            return errat(L, node_loc(si, it), "%sexpected an integer in the list, got %s", pfx(L, st->label, node_loc(si, it)),
                         is_null(it) ? "nothing" : node_kind(it));
        }
        const char *s = scalar_text(it);
        size_t need = strlen(s) + 4;
        if (used + need + 2 > cap) {
            cap = 2 * (used + need + 2);
            buf = xrealloc(buf, cap);
        }
        used += (size_t)sprintf(buf + used, i ? ", %s" : "%s", s);
    }
    buf[used++] = ']';
    buf[used] = 0;
    *out = pool_add(L, buf);
    return 0;
}

static const char *what_expected(const param_def *d) {
    switch (d->type) {
    case PT_INT: return "an integer";
    case PT_FLOAT: return "a number";
    case PT_BOOL: return "true or false";
    case PT_STRING: return "a text";
    case PT_ENUM: return "a name";
    case PT_INT_LIST: return "a list of integers";
    }
    return "a value";
}

/* Turn a raw key/node into a setting: a scalar, a flat list (int-list value), or a sweep axis. */
static int make_setting(loader *L, const kv_t *kv, const param_def *def, section_id sec, const char *label,
                        setting *st) {
    memset(st, 0, sizeof *st);
    st->def = def;
    st->sec = sec;
    st->label = label;
    st->kloc = kv->kloc;
    srcinfo si = {kv->vloc.src, kv->vloc.line > 0};
    yaml_node_t *v = kv->val;
    if (is_null(v)) return errat(L, kv->vloc, "%smissing value (expected %s)", pfx(L, label, kv->vloc), what_expected(def));
    if (v->type == YAML_MAPPING_NODE)
        return errat(L, kv->vloc, "%sexpected %s, got a mapping", pfx(L, label, kv->vloc), what_expected(def));
    if (v->type == YAML_SCALAR_NODE) {
        setting_add_value(st, scalar_text(v), kv->vloc);
        return check_value(L, st, st->vals[0], st->locs[0]);
    }
    int cnt = (int)(v->data.sequence.items.top - v->data.sequence.items.start);
    if (def->type == PT_INT_LIST) {
        int nested = 0;
        for (int i = 0; i < cnt; i++)
            if (yaml_document_get_node(kv->doc, v->data.sequence.items.start[i])->type == YAML_SEQUENCE_NODE) nested = 1;
        if (!nested) { /* a flat list is one value */
            const char *text;
            if (flat_list_text(L, si, kv->doc, v, st, &text)) return -1;
            setting_add_value(st, text, kv->vloc);
            return check_value(L, st, text, kv->vloc);
        }
    }
    if (cnt == 0) return errat(L, kv->vloc, "%sempty list (a sweep axis needs at least one value)", pfx(L, label, kv->vloc));
    for (int i = 0; i < cnt; i++) {
        yaml_node_t *it = yaml_document_get_node(kv->doc, v->data.sequence.items.start[i]);
        loc_t at = node_loc(si, it);
        if (it->type == YAML_SCALAR_NODE && !is_null(it)) {
            setting_add_value(st, scalar_text(it), at);
        } else if (it->type == YAML_SEQUENCE_NODE && def->type == PT_INT_LIST) {
            const char *text;
            if (flat_list_text(L, si, kv->doc, it, st, &text)) return -1;
            setting_add_value(st, text, at);
        } else {
            return errat(L, at, "%sexpected %s or a list of them (a sweep axis), got %s", pfx(L, label, at), what_expected(def),
                         is_null(it) ? "nothing" : it->type == YAML_SEQUENCE_NODE ? "a nested list" : node_kind(it));
        }
        if (check_value(L, st, st->vals[st->n - 1], at)) return -1;
    }
    return 0;
}

/* If key belongs to some other section, a hint for the unknown-key message. */
static const char *other_home(const char *key, const char *here) {
    if (strcmp(here, "model") && schema_find(model_schema, model_schema_n, key)) return "model";
    if (strcmp(here, "train") && (schema_find(train_schema, train_schema_n, key) || !strcmp(key, "seeds"))) return "train";
    if (strcmp(here, "task") && schema_find(task_common_schema, task_common_schema_n, key)) return "task";
    if (strcmp(here, "attention"))
        for (int i = 0; i < attn_registry_count; i++)
            if (schema_find(attn_registry[i]->schema, attn_registry[i]->n_schema, key)) return "attention";
    if (strcmp(here, "task"))
        for (int i = 0; i < task_registry_count; i++)
            if (schema_find(task_registry[i]->schema, task_registry[i]->n_schema, key)) return "task";
    return NULL;
}

static int unknown_key(loader *L, const kv_t *kv, const char *where, const char *home, const char *near) {
    const char *other = other_home(kv->key, home);
    /* An exact key of another section says more than a near miss in this one. */
    if (!strcmp(home, "attention") && !near)
        for (int i = 0; i < attn_registry_count; i++)
            if (schema_find(attn_registry[i]->schema, attn_registry[i]->n_schema, kv->key))
                return errat(L, kv->kloc, "unknown key '%s' in %s (it is a parameter of '%s')", kv->key, where,
                             attn_registry[i]->name);
    if (other) return errat(L, kv->kloc, "unknown key '%s' in %s (it belongs under %s:)", kv->key, where, other);
    if (near) return errat(L, kv->kloc, "unknown key '%s' in %s (did you mean '%s'?)", kv->key, where, near);
    return errat(L, kv->kloc, "unknown key '%s' in %s", kv->key, where);
}

/* Resolved file: settings per section and the mechanisms. */
typedef struct {
    const task_ops *task;
    loc_t task_loc;
    setlist task_set, model_set, train_set; /* train: seed last */
    const attn_ops **attn;
    setlist *attn_set;
    int n_attn;
} resolved;

static void resolved_free(resolved *R) {
    set_free(&R->task_set);
    set_free(&R->model_set);
    set_free(&R->train_set);
    for (int i = 0; i < R->n_attn; i++) set_free(&R->attn_set[i]);
    free(R->attn_set);
    free(R->attn);
}

static int resolve_task(loader *L, resolved *R) {
    kv_t *nm = kv_find(&L->task, "name");
    if (!nm) {
        char names[512];
        list_names(1, names, sizeof names);
        loc_t at = L->has_section[TOP_TASK] ? L->section_loc[TOP_TASK] : L->root_loc;
        return errat(L, at, "missing task name: give task: {name: ...} (tasks: %s)", names);
    }
    if (nm->val->type != YAML_SCALAR_NODE || is_null(nm->val))
        return errat(L, nm->vloc, "task.name: expected one task name, got %s (use one file per task)",
                     is_null(nm->val) ? "nothing" : node_kind(nm->val));
    const char *name = scalar_text(nm->val);
    R->task = task_find(name);
    R->task_loc = nm->vloc;
    if (!R->task) {
        const char *near = nearest_task(name);
        if (near) return errat(L, nm->vloc, "unknown task '%s' (did you mean '%s'?)", name, near);
        char names[512];
        list_names(1, names, sizeof names);
        return errat(L, nm->vloc, "unknown task '%s' (tasks: %s)", name, names);
    }
    LRA_CHECK(R->task->params_size <= TASK_PARAMS_MAX, "task '%s' params_size %zu > TASK_PARAMS_MAX", name,
              R->task->params_size);
    const task_ops *t = R->task;
    char where[96];
    snprintf(where, sizeof where, "task '%s'", t->name);
    for (int i = 0; i < L->task.n; i++) {
        kv_t *kv = &L->task.v[i];
        if (schema_find(task_common_schema, task_common_schema_n, kv->key) || schema_find(t->schema, t->n_schema, kv->key))
            continue;
        const char *near = schema_nearest(task_common_schema, task_common_schema_n, kv->key);
        const char *near2 = schema_nearest(t->schema, t->n_schema, kv->key);
        if (near2 && (!near || lra_edit_distance(kv->key, near2) < lra_edit_distance(kv->key, near))) near = near2;
        return unknown_key(L, kv, where, "task", near);
    }
    for (int pass = 0; pass < 2; pass++) {
        const param_def *s = pass ? t->schema : task_common_schema;
        int n = pass ? t->n_schema : task_common_schema_n;
        for (int j = 0; j < n; j++) {
            kv_t *kv = kv_find(&L->task, s[j].key);
            if (!kv) continue;
            setting st;
            int rc = make_setting(L, kv, &s[j], pass ? SEC_TASK : SEC_TASK_COMMON, pool_printf(L, "task.%s", s[j].key), &st);
            set_put(&R->task_set, &st);
            if (rc) return -1;
        }
    }
    return 0;
}

static int resolve_section(loader *L, kvlist *l, const param_def *s, int n, section_id sec, const char *secname,
                           setlist *out) {
    int is_train = sec == SEC_TRAIN;
    kv_t *seed_kv = NULL;
    for (int i = 0; i < l->n; i++) {
        kv_t *kv = &l->v[i];
        if (is_train && (!strcmp(kv->key, "seed") || !strcmp(kv->key, "seeds"))) {
            if (seed_kv)
                return errat(L, kv->kloc, "give either train.seed or train.seeds, not both ('%s' is already given%s)",
                             seed_kv->key, seed_kv->kloc.line ? pool_printf(L, " at line %d", seed_kv->kloc.line) : "");
            seed_kv = kv;
            continue;
        }
        if (!schema_find(s, n, kv->key)) return unknown_key(L, kv, secname, secname, schema_nearest(s, n, kv->key));
    }
    for (int j = 0; j < n; j++) {
        if (is_train && !strcmp(s[j].key, "seed")) continue;
        kv_t *kv = kv_find(l, s[j].key);
        if (!kv) continue;
        setting st;
        int rc = make_setting(L, kv, &s[j], sec, pool_printf(L, "%s.%s", secname, s[j].key), &st);
        set_put(out, &st);
        if (rc) return -1;
    }
    if (seed_kv) { /* seeds innermost */
        setting st;
        const param_def *d = schema_find(s, n, "seed");
        int rc = make_setting(L, seed_kv, d, sec, pool_printf(L, "train.%s", seed_kv->key), &st);
        set_put(out, &st);
        if (rc) return -1;
    }
    return 0;
}

static int resolve_attention(loader *L, resolved *R) {
    R->n_attn = L->n_attn;
    R->attn = xcalloc((size_t)L->n_attn, sizeof *R->attn);
    R->attn_set = xcalloc((size_t)L->n_attn, sizeof *R->attn_set);
    for (int e = 0; e < L->n_attn; e++) {
        attn_raw *a = &L->attn[e];
        const attn_ops *ops = attn_find(a->name);
        if (!ops) {
            const char *near = nearest_attn(a->name);
            if (near) return errat(L, a->name_loc, "unknown attention mechanism '%s' (did you mean '%s'?)", a->name, near);
            char names[512];
            list_names(0, names, sizeof names);
            return errat(L, a->name_loc, "unknown attention mechanism '%s' (mechanisms: %s)", a->name, names);
        }
        LRA_CHECK(ops->params_size <= ATTN_PARAMS_MAX, "mechanism '%s' params_size %zu > ATTN_PARAMS_MAX", ops->name,
                  ops->params_size);
        R->attn[e] = ops;
        char where[96];
        snprintf(where, sizeof where, "attention '%s'", ops->name);
        for (int i = 0; i < a->params.n; i++) {
            kv_t *kv = &a->params.v[i];
            if (!schema_find(ops->schema, ops->n_schema, kv->key))
                return unknown_key(L, kv, where, "attention", schema_nearest(ops->schema, ops->n_schema, kv->key));
        }
        for (int j = 0; j < ops->n_schema; j++) {
            kv_t *kv = kv_find(&a->params, ops->schema[j].key);
            if (!kv) continue;
            setting st;
            int rc = make_setting(L, kv, &ops->schema[j], SEC_ATTN, pool_printf(L, "attention.%s", ops->schema[j].key), &st);
            set_put(&R->attn_set[e], &st);
            if (rc) return -1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- step 4: expand */

static void *setting_target(run_cfg *c, section_id sec) {
    switch (sec) {
    case SEC_TASK_COMMON: return &c->task;
    case SEC_TASK: return c->task_params.bytes;
    case SEC_MODEL: return &c->model;
    case SEC_TRAIN: return &c->train;
    case SEC_ATTN: return c->attn_params.bytes;
    }
    return NULL;
}

/* The location of the chosen value of label in this run, or fallback. */
static loc_t chosen_loc(setting **S, const int *idx, int nS, const char *label, loc_t fallback) {
    for (int i = 0; i < nS; i++)
        if (!strcmp(S[i]->label, label)) return S[i]->locs[idx[i]];
    return fallback;
}

static int has_setting(setting **S, int nS, const char *label) {
    for (int i = 0; i < nS; i++)
        if (!strcmp(S[i]->label, label)) return 1;
    return 0;
}

/* validate() messages start with the key they blame ("task.min_length: ..." or "window: ...").
 * When that key was set in the config, point at its value rather than at the section. */
static int named_key_loc(setting **S, const int *idx, int nS, const char *section, const char *msg, loc_t *at,
                         const char **rest) {
    size_t sl = strlen(section);
    if (!strncmp(msg, section, sl) && msg[sl] == '.') msg += sl + 1;
    size_t kl = strcspn(msg, ": ");
    if (!kl || msg[kl] != ':') return 0;
    for (int i = 0; i < nS; i++) {
        const char *lab = S[i]->label;
        if (!strncmp(lab, section, sl) && lab[sl] == '.' && strlen(lab + sl + 1) == kl &&
            !strncmp(lab + sl + 1, msg, kl)) {
            *at = S[i]->locs[idx[i]];
            *rest = msg + kl + 1;
            while (**rest == ' ') (*rest)++;
            return 1;
        }
    }
    return 0;
}

static int check_run(loader *L, run_cfg *c, setting **S, const int *idx, int nS, loc_t entry_loc, loc_t task_loc) {
    loc_t model_at = L->has_section[TOP_MODEL] ? L->section_loc[TOP_MODEL] : L->root_loc;
    const model_cfg *m = &c->model;
    if (m->d_model % m->n_heads) {
        loc_t at = has_setting(S, nS, "model.n_heads") ? chosen_loc(S, idx, nS, "model.n_heads", model_at)
                                                       : chosen_loc(S, idx, nS, "model.d_model", model_at);
        return errat(L, at, "%sd_model %d is not divisible by n_heads %d (head size Dh = d_model / n_heads)",
                     pfx(L, "model.n_heads", at), m->d_model, m->n_heads);
    }
    if (m->pos == POS_SINUSOIDAL && m->d_model % 2) {
        loc_t at = has_setting(S, nS, "model.d_model") ? chosen_loc(S, idx, nS, "model.d_model", model_at)
                                                       : chosen_loc(S, idx, nS, "model.pos", model_at);
        return errat(L, at, "%ssinusoidal positions need an even d_model, got %d (or set pos: learned)",
                     pfx(L, "model.d_model", at), m->d_model);
    }
    const task_ops *t = c->task_ops;
    task_env env = {(uint64_t)c->task.data_seed, c->task.seq_len, c->base_dir, c->task.data_dir};
    char why[512];
    if (t->validate && t->validate(c->task_params.bytes, &env, why, sizeof why)) {
        loc_t at;
        const char *rest;
        if (named_key_loc(S, idx, nS, "task", why, &at, &rest)) return errat(L, at, "%s", at.line ? why : rest);
        return errat(L, task_loc, "task '%s': %s", t->name, why);
    }
    const attn_ops *a = c->attn_ops;
    if (t->kind == TASK_LM && (c->train.checkpoint_every > 0 || c->train.save_model)) {
        const char *key = c->train.checkpoint_every > 0 ? "train.checkpoint_every" : "train.save_model";
        loc_t train_at = L->has_section[TOP_TRAIN] ? L->section_loc[TOP_TRAIN] : L->root_loc;
        loc_t at = chosen_loc(S, idx, nS, key, train_at);
        return errat(L, at, "%scheckpoints are not supported for language-modelling (lm) runs yet (%s)", pfx(L, key, at), key);
    }
    if (m->memory != MEMORY_NONE) {
        loc_t at = chosen_loc(S, idx, nS, "model.memory", model_at);
        if (t->kind != TASK_LM)
            return errat(L, at, "%ssegment memory needs a language-modelling task, not '%s'", pfx(L, "model.memory", at), t->name);
        if (strcmp(a->name, "softmax"))
            return errat(L, entry_loc, "attention '%s' cannot be used with model.memory %s: the relative attention over [memory; segment] is exact softmax (use attention: softmax)",
                         a->name, m->memory == MEMORY_XL ? "xl" : "compressive");
        if (m->mem_len <= 0) {
            loc_t ml = chosen_loc(S, idx, nS, "model.mem_len", at);
            return errat(L, ml, "%smust be > 0 with model.memory %s (model.mem_len)", pfx(L, "model.mem_len", ml),
                         m->memory == MEMORY_XL ? "xl" : "compressive");
        }
        if (m->memory == MEMORY_COMPRESSIVE) {
            int cr = m->compression_rate;
            loc_t cat = chosen_loc(S, idx, nS, "model.compression_rate", at);
            loc_t cl = chosen_loc(S, idx, nS, "model.cmem_len", at);
            if (m->cmem_len <= 0)
                return errat(L, cl, "%smust be > 0 with model.memory compressive (model.cmem_len)", pfx(L, "model.cmem_len", cl));
            if (c->task.seq_len % cr || m->mem_len % cr)
                return errat(L, cat, "%s%d must divide the segment length task.seq_len (%d) and model.mem_len (%d) (model.compression_rate)",
                             pfx(L, "model.compression_rate", cat), cr, c->task.seq_len, m->mem_len);
            if (c->train.eval_segment_len % cr || c->train.eval_mem_len % cr)
                return errat(L, cat, "%s%d must divide train.eval_segment_len (%d) and train.eval_mem_len (%d) (model.compression_rate)",
                             pfx(L, "model.compression_rate", cat), cr, c->train.eval_segment_len, c->train.eval_mem_len);
        }
    }
    if (t->kind == TASK_LM && m->memory == MEMORY_NONE && m->pos == POS_LEARNED && c->train.eval_segment_len &&
        c->train.eval_segment_len != c->task.seq_len)
    {
        loc_t el = chosen_loc(S, idx, nS, "train.eval_segment_len", model_at);
        return errat(L, el, "%slearned positions (model.pos) are trained for task.seq_len %d positions only, got train.eval_segment_len %d",
                     pfx(L, "train.eval_segment_len", el), c->task.seq_len, c->train.eval_segment_len);
    }
    if (m->causal && !(a->caps & ATTN_CAP_CAUSAL)) {
        if (t->kind == TASK_LM)
            return errat(L, entry_loc, "attention '%s' does not support causal attention, which language-modelling task '%s' needs",
                         a->name, t->name);
        return errat(L, entry_loc, "attention '%s' does not support causal attention (model.causal is true)", a->name);
    }
    if (a->validate)
        for (int l = 0; l < m->n_layers; l++) {
            attn_shape sh = config_attn_shape(c, c->train.batch_size, l);
            if (a->validate(c->attn_params.bytes, &sh, why, sizeof why)) {
                loc_t at = entry_loc;
                const char *rest;
                if (named_key_loc(S, idx, nS, "attention", why, &at, &rest) && !at.line)
                    return errat(L, at, "%s (attention '%s')", rest, a->name);
                return errat(L, at, "attention '%s': %s", a->name, why);
            }
        }
    return 0;
}

static void dir_of(const char *path, char *buf, size_t n) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(buf, n, ".");
    else if (slash == path) snprintf(buf, n, "/");
    else snprintf(buf, n, "%.*s", (int)(slash - path), path);
}

static void base_name_of(const char *path, char *buf, size_t n) {
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    const char *dot = strrchr(b, '.');
    size_t len = dot && dot != b ? (size_t)(dot - b) : strlen(b);
    snprintf(buf, n, "%.*s", (int)len, b);
}

static int check_exp_name(loader *L, const char *name, loc_t at) {
    size_t len = strlen(name);
    if (!len) return errat(L, at, "name: the experiment name is empty");
    if (len >= sizeof(((run_cfg *)0)->exp_name))
        return errat(L, at, "name: at most %zu characters, got %zu", sizeof(((run_cfg *)0)->exp_name) - 1, len);
    if (name[0] == '.' || strchr(name, '/'))
        return errat(L, at, "name: '%s' is used as a directory name: no '/' and no leading '.'", name);
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        if (*p < 0x20) return errat(L, at, "name: control characters are not allowed");
    return 0;
}

/* Runs of one attention entry that differ in a model, train or task sweep axis other than seq_len
 * and the seed are different series: their label gets " key=value" for each such axis, so the
 * summary and the charts never average them together as if they were seeds. Memory keys are
 * already in the label of language-modelling runs. */
static void label_sweep_axes(run_cfg *c, setting **S, const int *idx, int nS) {
    static const char *const skip[] = {"task.seq_len", "train.seed", "train.seeds", "model.memory", "model.mem_len",
                                       "model.cmem_len", "model.compression_rate", "model.compression"};
    size_t cap = sizeof c->attn_label, used = strlen(c->attn_label);
    for (int i = 0; i < nS && used + 1 < cap; i++) {
        if (S[i]->n < 2 || S[i]->sec == SEC_ATTN) continue;
        int skipped = 0;
        for (size_t j = 0; j < sizeof skip / sizeof skip[0]; j++) skipped |= !strcmp(S[i]->label, skip[j]);
        if (skipped) continue;
        const char *key = strrchr(S[i]->label, '.');
        key = key ? key + 1 : S[i]->label;
        int n = snprintf(c->attn_label + used, cap - used, " %s=%s", key, S[i]->vals[idx[i]]);
        if (n < 0) break;
        used += (size_t)n;
    }
}

static int expand(loader *L, resolved *R, run_plan *plan) {
    char exp_name[64];
    if (L->exp_name) {
        if (check_exp_name(L, L->exp_name, L->exp_loc)) return -1;
        snprintf(exp_name, sizeof exp_name, "%s", L->exp_name);
    } else {
        base_name_of(L->path, exp_name, sizeof exp_name);
        if (!exp_name[0]) snprintf(exp_name, sizeof exp_name, "experiment");
    }
    char base_dir[512];
    dir_of(L->path, base_dir, sizeof base_dir);

    /* Count first, so nothing is appended on error. */
    long long total = 0;
    long long common = 1;
    setlist *shared[3] = {&R->task_set, &R->model_set, &R->train_set};
    for (int s = 0; s < 3; s++)
        for (int i = 0; i < shared[s]->n; i++) {
            common *= shared[s]->v[i].n;
            if (common > MAX_RUNS_PER_FILE) break;
        }
    for (int e = 0; e < R->n_attn && total <= MAX_RUNS_PER_FILE; e++) {
        long long p = common;
        for (int i = 0; i < R->attn_set[e].n && p <= MAX_RUNS_PER_FILE; i++) p *= R->attn_set[e].v[i].n;
        total += p;
    }
    if (total > MAX_RUNS_PER_FILE)
        return errat(L, L->root_loc, "the sweep expands to more than %d runs; split it into several files",
                     MAX_RUNS_PER_FILE);

    run_cfg *runs = xcalloc((size_t)total, sizeof *runs);
    int nr = 0;
    for (int e = 0; e < R->n_attn; e++) {
        int nS = R->attn_set[e].n + R->task_set.n + R->model_set.n + R->train_set.n;
        setting **S = xcalloc((size_t)nS + 1, sizeof *S);
        int k = 0;
        for (int i = 0; i < R->attn_set[e].n; i++) S[k++] = &R->attn_set[e].v[i];
        for (int s = 0; s < 3; s++)
            for (int i = 0; i < shared[s]->n; i++) S[k++] = &shared[s]->v[i];
        int *idx = xcalloc((size_t)nS + 1, sizeof *idx);
        for (;;) {
            run_cfg *c = &runs[nr];
            snprintf(c->exp_name, sizeof c->exp_name, "%s", exp_name);
            snprintf(c->config_path, sizeof c->config_path, "%s", L->path);
            snprintf(c->base_dir, sizeof c->base_dir, "%s", base_dir);
            schema_defaults(task_common_schema, task_common_schema_n, &c->task);
            c->task_ops = R->task;
            schema_defaults(R->task->schema, R->task->n_schema, c->task_params.bytes);
            c->attn_ops = R->attn[e];
            schema_defaults(R->attn[e]->schema, R->attn[e]->n_schema, c->attn_params.bytes);
            schema_defaults(model_schema, model_schema_n, &c->model);
            schema_defaults(train_schema, train_schema_n, &c->train);
            for (int i = 0; i < nS; i++) {
                char why[256];
                int rc = schema_set(S[i]->def, setting_target(c, S[i]->sec), S[i]->vals[idx[i]], why, sizeof why);
                LRA_CHECK(rc == 0, "value checked before cannot be set: %s", why);
            }
            if (R->task->kind == TASK_LM) c->model.causal = 1;
            if (c->model.memory != MEMORY_COMPRESSIVE) {
                /* Memory keys a run does not use go back to their defaults, so that a sweep over
                 * memory: [none, xl, compressive] x mem_len/cmem_len axes runs each model once. */
                model_cfg d;
                schema_defaults(model_schema, model_schema_n, &d);
                c->model.cmem_len = d.cmem_len;
                c->model.compression_rate = d.compression_rate;
                c->model.compression = d.compression;
                c->model.recon_weight = d.recon_weight;
                if (c->model.memory == MEMORY_NONE) {
                    c->model.mem_len = d.mem_len;
                    c->model.clamp_len = d.clamp_len;
                    c->model.same_length = d.same_length;
                    c->train.eval_mem_len = 0;
                }
            }
            if (check_run(L, c, S, idx, nS, L->attn[e].loc, R->task_loc)) {
                free(S);
                free(idx);
                free(runs);
                return -1;
            }
            config_finalize(c);
            label_sweep_axes(c, S, idx, nS);
            nr++;
            /* Mixed-radix increment, last setting fastest. */
            int i = nS - 1;
            while (i >= 0 && ++idx[i] == S[i]->n) idx[i--] = 0;
            if (i < 0) break;
        }
        free(S);
        free(idx);
    }
    LRA_CHECK(nr == total, "expanded %d runs, expected %lld", nr, total);
    if (plan->n_runs == 0 && !plan->name[0]) snprintf(plan->name, sizeof plan->name, "%s", exp_name);
    plan->runs = xrealloc(plan->runs, (size_t)(plan->n_runs + nr) * sizeof *plan->runs);
    memcpy(plan->runs + plan->n_runs, runs, (size_t)nr * sizeof *runs);
    plan->n_runs += nr;
    free(runs);
    return 0;
}

/* ---------------------------------------------------------------- public */

int config_load(run_plan *plan, const char *path, const char *const *sets, int n_sets, char *err, size_t errlen) {
    loader L = {0};
    L.path = path;
    L.err = err;
    L.errlen = errlen;
    resolved R = {0};
    int rc = parse_file(&L);
    for (int i = 0; !rc && i < n_sets; i++) rc = apply_set(&L, sets[i]);
    if (!rc) rc = resolve_task(&L, &R);
    if (!rc) rc = resolve_section(&L, &L.model, model_schema, model_schema_n, SEC_MODEL, "model", &R.model_set);
    if (!rc) rc = resolve_section(&L, &L.train, train_schema, train_schema_n, SEC_TRAIN, "train", &R.train_set);
    if (!rc) rc = resolve_attention(&L, &R);
    if (!rc) rc = expand(&L, &R, plan);
    resolved_free(&R);
    loader_free(&L);
    return rc ? -1 : 0;
}

void config_plan_free(run_plan *plan) {
    free(plan->runs);
    memset(plan, 0, sizeof *plan);
}

void config_dump_yaml(const run_cfg *c, FILE *f) {
    schema_dump_yaml(&exp_name_def, 1, c, 0, f);
    fputs("task:\n", f);
    schema_dump_yaml(task_common_schema, task_common_schema_n, &c->task, 2, f);
    if (c->task_ops) schema_dump_yaml(c->task_ops->schema, c->task_ops->n_schema, c->task_params.bytes, 2, f);
    fputs("model:\n", f);
    schema_dump_yaml(model_schema, model_schema_n, &c->model, 2, f);
    fputs("attention:\n", f);
    if (c->attn_ops) {
        fprintf(f, "  name: %s\n", c->attn_ops->name);
        schema_dump_yaml(c->attn_ops->schema, c->attn_ops->n_schema, c->attn_params.bytes, 2, f);
    }
    fputs("train:\n", f);
    schema_dump_yaml(train_schema, train_schema_n, &c->train, 2, f);
}

void config_finalize(run_cfg *c) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    LRA_CHECK(f, "open_memstream failed");
    /* Checkpoint keys do not change the results, so they are hashed at their defaults: a run
     * keeps its id (and finds its checkpoint) when checkpointing is switched on or retuned. */
    run_cfg *h_cfg = xmalloc(sizeof *h_cfg);
    *h_cfg = *c;
    h_cfg->train.checkpoint_every = 0;
    h_cfg->train.save_model = 0;
    config_dump_yaml(h_cfg, f);
    free(h_cfg);
    fclose(f);
    uint64_t h = lra_fnv1a(LRA_FNV_INIT, text, len);
    free(text);
    snprintf(c->run_id, sizeof c->run_id, "%016llx", (unsigned long long)h);

    const attn_ops *a = c->attn_ops;
    if (!a) {
        c->attn_label[0] = 0;
        return;
    }
    attn_params_buf defs;
    memset(&defs, 0, sizeof defs);
    schema_defaults(a->schema, a->n_schema, defs.bytes);
    size_t cap = sizeof c->attn_label, used = 0;
    used += (size_t)snprintf(c->attn_label, cap, "%s", a->name);
    int nd = 0;
    for (int i = 0; i < a->n_schema && used < cap; i++) {
        char v[256], d[256];
        schema_format(&a->schema[i], c->attn_params.bytes, v, sizeof v);
        schema_format(&a->schema[i], defs.bytes, d, sizeof d);
        if (!strcmp(v, d)) continue;
        /* "[1, 2]" -> "[1,2]": labels are compact */
        char *w = v;
        for (char *r = v; *r; r++)
            if (!(*r == ' ' && r > v && r[-1] == ',')) *w++ = *r;
        *w = 0;
        used += (size_t)snprintf(c->attn_label + used, cap - used, "%s%s=%s", nd ? "," : "(", a->schema[i].key, v);
        nd++;
    }
    if (nd && used < cap) used += (size_t)snprintf(c->attn_label + used, cap - used, ")");
    /* Language modelling: the memory kind is part of what is compared (vanilla, XL, Compressive). */
    const model_cfg *mm = &c->model;
    if (mm->memory == MEMORY_XL && used < cap)
        used += (size_t)snprintf(c->attn_label + used, cap - used, "+xl(mem_len=%d)", mm->mem_len);
    else if (mm->memory == MEMORY_COMPRESSIVE && used < cap) {
        char kind[32];
        schema_enum_name("max|mean|conv|dilated_conv", mm->compression, kind, sizeof kind);
        used += (size_t)snprintf(c->attn_label + used, cap - used, "+compressive(mem_len=%d,cmem_len=%d,c=%d,%s)",
                                 mm->mem_len, mm->cmem_len, mm->compression_rate, kind);
    }
    (void)used;
}

attn_shape config_attn_shape(const run_cfg *c, int batch, int layer) {
    attn_shape s;
    memset(&s, 0, sizeof s);
    int cls = c->model.pooling == POOL_CLS && !(c->task_ops && c->task_ops->kind == TASK_LM);
    s.B = batch;
    s.H = c->model.n_heads;
    s.Dh = c->model.n_heads ? c->model.d_model / c->model.n_heads : 0;
    s.N = c->task.seq_len + (cls ? 1 : 0);
    s.Nk = s.N;
    s.causal = c->model.causal;
    s.layer = layer;
    s.n_layers = c->model.n_layers;
    s.max_len = s.N;
    return s;
}
