/* retrieval.c - the `retrieval` task: do two byte-level documents match? (LRA's "Retrieval" on
 * AAN citation pairs, and a pair generator over any document corpus.)
 *
 * Source: Tay et al., "Long Range Arena", arXiv 2011.04006, task 3 (after Radev et al., the ACL
 * Anthology Network); lra_benchmarks/matching/input_pipeline.py (see
 * /work/shared/reference/lra.md section 1.3). The model encodes both documents with one shared
 * encoder and classifies their combination (lra/model.c, TASK_MATCH); this file only makes the
 * (n, 2, seq_len) ids and the 0/1 labels.
 *
 * LRA's files: PREFIX.{train,eval,test}.tsv (PREFIX new_aan_pairs; eval is the validation split),
 * no header, tab-separated, no quoting, five columns label, id1, id2, text1, text2. The label is
 * parsed as a float and cast to an integer (truncation), as LRA does, and must then be 0 or 1.
 * Each text is cut to its first max_bytes bytes (LRA: 10,000), byte-encoded (b -> b + 1) and
 * truncated or padded to seq_len.
 *
 * The generator (any corpus the text task reads: a directory of files, optionally one
 * sub-directory per class, aclImdb, Source,Target files). Documents are split first (the layout's
 * own splits, else carved by textdata_carve with the data seed, after exact duplicates and
 * documents shorter than min_bytes are dropped), then pairs are made within each split, so no
 * document is shared between splits. A split of D documents gets n pairs (n_train/n_val/n_test,
 * or pairs_per_doc x D): exactly n/2 (rounded down) positives and the rest negatives, in a seeded
 * random order.
 *   same: document  a positive is two non-overlapping windows of one document; a negative is a
 *                   window of each of two different documents. Every window of a document of L
 *                   bytes has w = min(seq_len, L/2) bytes, and a negative's window is drawn as one
 *                   of the two windows of a positive of its document, so window length and position
 *                   carry no information about the label: only the text does.
 *   same: class     a positive is a window of each of two different documents of the same class;
 *                   a negative of two documents of different classes; windows have
 *                   min(seq_len, L) bytes at a uniform position.
 * Randomness: stream RNG_DATA, one sub-stream per split, from the data seed (task.data_seed).
 */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../lra/common.h"
#include "../lra/rng.h"
#include "textdata.h"

#define AAN_DEFAULT_PREFIX "new_aan_pairs"

#define RP retrieval_params
static const param_def retrieval_schema[] = {
    P_STRING(RP, path, "",
             "LRA's AAN files (a directory holding new_aan_pairs.{train,eval,test}.tsv, or such a prefix), or a "
             "corpus to make pairs from: a directory of documents, optionally one sub-directory per class (brown after "
             "scripts/fetch-data.sh), or any layout the text task reads; relative: to the working directory, then "
             "data_dir, then the config's directory"),
    P_ENUM(RP, format, "auto", "auto|aan|imdb|tsv|dirs",
           "layout of path; auto: aan when it has PREFIX.train.tsv, else a corpus (imdb, tsv or dirs, as the text task)"),
    P_STRING(RP, prefix, "", "aan: file prefix (empty = new_aan_pairs); tsv corpus: the PREFIX of PREFIX_train.tsv"),
    P_ENUM(RP, same, "document", "document|class",
           "generator: a positive pair is two non-overlapping windows of one document (document), or windows of two "
           "documents of the same class (class)"),
    P_BOOL(RP, body_only, "false", "generator: keep only the body of RFC 822 messages (what follows the first empty line)"),
    P_BOOL(RP, dedup, "true", "generator: drop documents whose bytes equal an earlier document's"),
    P_FLOAT(RP, val_fraction, "0.1", 0, 0.9,
            "generator, when the corpus has no validation split: this fraction of each class's training documents "
            "becomes it (chosen with data_seed)"),
    P_FLOAT(RP, test_fraction, "0.1", 0, 0.9,
            "generator, when the corpus has no test split: this fraction of each class's documents becomes it"),
    P_INT(RP, n_train, "0", 0, 100000000,
          "training pairs: generator 0 = pairs_per_doc x training documents; aan: at most this many rows, 0 = all"),
    P_INT(RP, n_val, "0", 0, 100000000, "validation pairs (as n_train)"),
    P_INT(RP, n_test, "0", 0, 100000000, "test pairs (as n_train)"),
    P_INT(RP, pairs_per_doc, "10", 1, 1000000, "generator: pairs per document of a split when n_train/n_val/n_test is 0"),
    P_INT(RP, min_bytes, "100", 1, 1000000000, "generator: documents shorter than this many bytes are not used"),
    P_INT(RP, max_bytes, "10000", 0, 1000000000,
          "aan: cut each text to this many bytes before encoding (LRA: 10000); 0 = no cut"),
};
#undef RP

static const textdata_format retrieval_formats[] = {TD_AUTO, TD_AAN, TD_IMDB, TD_TSV, TD_DIRS};

static int retrieval_vocab_size(const void *params) { return TEXT_VOCAB; }
static int retrieval_n_classes(const void *params) { return 2; }

/* ------------------------------------------------------------------------------------------ */
/* Where the data is                                                                           */

static int prefix_exists(const char *cand) {
    static const char *const csv[] = {".tsv", ".csv", NULL}, *const tsv[] = {".tsv", NULL};
    char stem[PATH_MAX + 8], found[PATH_MAX + 32];
    snprintf(stem, sizeof stem, "%s_train", cand);
    if (textdata_find_file(stem, csv, found, sizeof found)) return 1;
    snprintf(stem, sizeof stem, "%s.train", cand);
    return textdata_find_file(stem, tsv, found, sizeof found);
}

static const char *aan_prefix(const retrieval_params *p) { return p->prefix[0] ? p->prefix : AAN_DEFAULT_PREFIX; }

/* Resolve task.path: *fmt gets the layout; root the corpus directory (or AAN base PREFIX path). */
static int locate(const retrieval_params *p, const task_env *env, int *fmt, char root[PATH_MAX], char *err,
                  size_t errlen) {
    if (!p->path[0])
        return lra_errorf(err, errlen,
                          "task.path: required: LRA's AAN files (new_aan_pairs.*.tsv) or a corpus, e.g. `path: brown` "
                          "after scripts/fetch-data.sh brown");
    char resolved[PATH_MAX], imdb_root[PATH_MAX] = "";
    if (textdata_resolve_path(p->path, env, prefix_exists, resolved, sizeof resolved, err, errlen)) return -1;
    *fmt = textdata_detect(resolved, retrieval_formats[p->format], aan_prefix(p), p->prefix, imdb_root,
                           sizeof imdb_root, err, errlen);
    if (*fmt < 0) return -1;
    if (*fmt == TD_AAN && textdata_is_dir(resolved)) {
        if (snprintf(root, PATH_MAX, "%s/%s", resolved, aan_prefix(p)) >= PATH_MAX)
            return lra_errorf(err, errlen, "task.path: too long");
    } else {
        snprintf(root, PATH_MAX, "%s", *fmt == TD_IMDB ? imdb_root : resolved);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* LRA's AAN files                                                                             */

static void show_bytes(char *out, size_t n, const char *s, size_t len) {
    size_t k = 0;
    for (size_t i = 0; i < len && i < 40 && k + 5 < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 32 && c < 127) out[k++] = (char)c;
        else k += (size_t)snprintf(out + k, n - k, "\\x%02x", c);
    }
    out[k] = '\0';
}

/* Load one AAN file into out ((n, 2, S) ids, labels); at most max_rows rows (0 = all). */
static int load_aan(const char *file, int S, size_t max_bytes, int max_rows, task_split *out, char *err,
                    size_t errlen) {
    memset(out, 0, sizeof *out);
    textdata_reader r;
    if (textdata_reader_open(&r, file, '\t', 0, err, errlen)) return -1;
    int n = 0, cap = 0, rc = -1, got;
    int32_t *tokens = NULL, *labels = NULL;
    while ((max_rows <= 0 || n < max_rows) && (got = textdata_reader_next(&r, err, errlen)) != 0) {
        if (got < 0) goto out;
        if (r.nf != 5) {
            lra_errorf(err, errlen, "%s:%ld: expected 5 tab-separated columns (label, id1, id2, text1, text2), got %d",
                       r.name, r.rec_line, r.nf);
            goto out;
        }
        size_t ll;
        const char *ls = textdata_field(&r, 0, &ll);
        char *end;
        errno = 0;
        double v = strtod(ls, &end);
        while (*end == ' ') end++;
        if (end == ls || *end || !isfinite(v)) {
            char shown[200];
            show_bytes(shown, sizeof shown, ls, ll);
            lra_errorf(err, errlen, "%s:%ld: label '%s' is not a number%s", r.name, r.rec_line, shown,
                       r.rec_line == 1 ? " (LRA's AAN files have no header row)" : "");
            goto out;
        }
        if (!(v > -1.0 && v < 2.0)) { /* (int)v is 0 or 1 exactly on (-1, 2) */
            lra_errorf(err, errlen, "%s:%ld: label %g is not 0 or 1 (after LRA's float-to-int cast)", r.name, r.rec_line,
                       v);
            goto out;
        }
        size_t l1, l2;
        const char *t1 = textdata_field(&r, 3, &l1), *t2 = textdata_field(&r, 4, &l2);
        if (!l1 || !l2) {
            lra_errorf(err, errlen, "%s:%ld: empty text%d", r.name, r.rec_line, l1 ? 2 : 1);
            goto out;
        }
        if (max_bytes) l1 = LRA_MIN(l1, max_bytes), l2 = LRA_MIN(l2, max_bytes);
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            if (max_rows > 0 && cap > max_rows) cap = max_rows;
            tokens = xrealloc(tokens, (size_t)cap * 2 * (size_t)S * sizeof *tokens);
            labels = xrealloc(labels, (size_t)cap * sizeof *labels);
        }
        int32_t *row = tokens + (size_t)n * 2 * (size_t)S;
        textdata_encode((const uint8_t *)t1, l1, S, row);
        textdata_encode((const uint8_t *)t2, l2, S, row + S);
        labels[n++] = (int32_t)v;
    }
    if (n == 0) {
        lra_errorf(err, errlen, "%s:%ld: no rows (an empty file)", r.name, r.line);
        goto out;
    }
    out->n = n;
    out->seq_len = S;
    out->n_inputs = 2;
    out->tokens = xrealloc(tokens, (size_t)n * 2 * (size_t)S * sizeof *tokens);
    out->labels = xrealloc(labels, (size_t)n * sizeof *labels);
    tokens = labels = NULL;
    rc = 0;
out:
    free(tokens);
    free(labels);
    textdata_reader_close(&r);
    return rc;
}

static int build_aan(const retrieval_params *p, const char *base, int S, task_split out[N_SPLITS], char *err,
                     size_t errlen) {
    static const char *const parts[N_SPLITS] = {"train", "eval", "test"}; /* LRA's names; eval = validation */
    static const char *const exts[] = {".tsv", NULL};
    const int limit[N_SPLITS] = {p->n_train, p->n_val, p->n_test};
    for (int s = 0; s < N_SPLITS; s++) {
        char stem[PATH_MAX + 16], file[PATH_MAX + 32];
        snprintf(stem, sizeof stem, "%s.%s", base, parts[s]);
        if (!textdata_find_file(stem, exts, file, sizeof file)) {
            lra_errorf(err, errlen, "%s.tsv: cannot open: no such file (nor .tsv.gz); LRA's AAN release has %s.{train,eval,test}.tsv",
                       stem, base);
            goto fail;
        }
        if (load_aan(file, S, (size_t)p->max_bytes, limit[s], &out[s], err, errlen)) goto fail;
    }
    return 0;
fail:
    for (int s = 0; s < N_SPLITS; s++) task_split_free(&out[s]);
    return -1;
}

/* ------------------------------------------------------------------------------------------ */
/* The pair generator                                                                          */

/* Uniform integer in [0, n), n >= 1, unbiased (rejection). */
static size_t rand_below(rng_t *r, size_t n) {
    uint64_t lim = UINT64_MAX - UINT64_MAX % (uint64_t)n;
    for (;;) {
        uint64_t x = rng_u64(r);
        if (x < lim) return (size_t)(x % (uint64_t)n);
    }
}

static size_t doc_len(const textdata_docs *d, int i) { return d->off[i + 1] - d->off[i]; }

/* same: document. Two non-overlapping windows of w = min(S, L/2) bytes, uniformly placed: a in
 * [0, L - 2w], b in [a + w, L - w], then in random order. */
static void window_pair(const textdata_docs *d, int i, int S, rng_t *r, size_t *a, size_t *b, size_t *w) {
    size_t L = doc_len(d, i);
    *w = LRA_MIN((size_t)S, L / 2);
    size_t x = rand_below(r, L - 2 * *w + 1);
    size_t y = x + *w + rand_below(r, L - *w - (x + *w) + 1);
    if (rng_u64(r) & 1) *a = x, *b = y;
    else *a = y, *b = x;
}

/* same: class. One window of min(S, L) bytes at a uniform position. */
static void window_one(const textdata_docs *d, int i, int S, rng_t *r, size_t *a, size_t *w) {
    size_t L = doc_len(d, i);
    *w = LRA_MIN((size_t)S, L);
    *a = rand_below(r, L - *w + 1);
}

static void put_window(const textdata_docs *d, int i, size_t at, size_t w, int S, int32_t *dst) {
    textdata_encode(d->bytes + d->off[i] + at, w, S, dst);
}

/* Drop documents shorter than min_bytes (keeping order). */
static void drop_short(textdata_docs *d, size_t min_bytes) {
    int k = 0;
    size_t pos = 0;
    for (int i = 0; i < d->n; i++) {
        size_t from = d->off[i], len = d->off[i + 1] - from;
        if (len < min_bytes) {
            free(d->name[i]);
            continue;
        }
        memmove(d->bytes + pos, d->bytes + from, len);
        d->off[k] = pos;
        pos += len;
        d->label[k] = d->label[i];
        d->split[k] = d->split[i];
        d->name[k] = d->name[i];
        k++;
    }
    d->n = k;
    if (d->off) d->off[k] = pos;
    d->len = pos;
}

static int cmp_by_label(const void *a, const void *b, void *ctx) {
    const int32_t *label = ctx;
    int x = *(const int *)a, y = *(const int *)b;
    if (label[x] != label[y]) return (label[x] > label[y]) - (label[x] < label[y]);
    return (x > y) - (x < y);
}

/* Make n pairs of split s into out. */
static int make_pairs(const retrieval_params *p, const textdata_docs *d, int s, int S, int n, uint64_t seed,
                      task_split *out, char *err, size_t errlen) {
    int nd = 0;
    for (int i = 0; i < d->n; i++) nd += d->split[i] == s;
    int *docs = xmalloc((size_t)LRA_MAX(nd, 1) * sizeof *docs), k = 0;
    for (int i = 0; i < d->n; i++)
        if (d->split[i] == s) docs[k++] = i;
    /* Documents grouped by class (class-major, then corpus order), with each class's range. */
    qsort_r(docs, (size_t)nd, sizeof *docs, cmp_by_label, d->label);
    int nc = d->n_classes;
    int *cstart = xcalloc((size_t)nc + 1, sizeof *cstart), *ccount = xcalloc((size_t)nc, sizeof *ccount);
    for (int j = 0; j < nd; j++) ccount[d->label[docs[j]]]++;
    for (int c = 0; c < nc; c++) cstart[c + 1] = cstart[c] + ccount[c];
    int classes_present = 0, pos_docs = 0; /* pos_docs: documents of classes with at least 2 */
    for (int c = 0; c < nc; c++) {
        classes_present += ccount[c] > 0;
        if (ccount[c] >= 2) pos_docs += ccount[c];
    }
    int rc = -1;
    if (p->same == 0 && nd < 2) {
        lra_errorf(err, errlen,
                   "task.path: the %s split has %d usable document%s (at least task.min_bytes = %d bytes); pairs need "
                   "2 or more: add documents, lower min_bytes or raise the split's fraction",
                   split_names[s], nd, nd == 1 ? "" : "s", p->min_bytes);
        goto out;
    }
    if (p->same == 1 && (classes_present < 2 || pos_docs == 0)) {
        lra_errorf(err, errlen,
                   "task.same: class needs, in every split, 2 classes and a class with 2 documents; the %s split has %d "
                   "document%s in %d class%s",
                   split_names[s], nd, nd == 1 ? "" : "s", classes_present, classes_present == 1 ? "" : "es");
        goto out;
    }
    rng_t r = rng_make(seed, rng_substream(RNG_DATA, 0x70616972 /* "pair" */, (uint64_t)s));
    uint8_t *positive = xmalloc((size_t)n);
    for (int i = 0; i < n; i++) positive[i] = i < n / 2;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)rand_below(&r, (size_t)i + 1);
        uint8_t t = positive[i];
        positive[i] = positive[j];
        positive[j] = t;
    }
    out->n = n;
    out->seq_len = S;
    out->n_inputs = 2;
    out->tokens = xmalloc((size_t)n * 2 * (size_t)S * sizeof *out->tokens);
    out->labels = xmalloc((size_t)n * sizeof *out->labels);
    for (int e = 0; e < n; e++) {
        int32_t *row = out->tokens + (size_t)e * 2 * (size_t)S;
        int i1, i2;
        size_t a, b, w1, w2, unused;
        if (p->same == 0) {
            i1 = docs[rand_below(&r, (size_t)nd)];
            if (positive[e]) {
                window_pair(d, i1, S, &r, &a, &b, &w1);
                i2 = i1;
                w2 = w1;
            } else {
                size_t j = rand_below(&r, (size_t)nd - 1); /* another document, uniformly */
                i2 = docs[j];
                if (i2 == i1) i2 = docs[nd - 1];
                window_pair(d, i1, S, &r, &a, &unused, &w1);
                window_pair(d, i2, S, &r, &b, &unused, &w2);
            }
        } else if (positive[e]) {
            /* A document of a class with at least 2, uniformly; then another of its class. */
            size_t t = rand_below(&r, (size_t)pos_docs);
            int c = 0;
            for (; c < nc; c++) {
                if (ccount[c] < 2) continue;
                if (t < (size_t)ccount[c]) break;
                t -= (size_t)ccount[c];
            }
            int j1 = cstart[c] + (int)t, j2 = cstart[c] + (int)rand_below(&r, (size_t)ccount[c] - 1);
            if (j2 == j1) j2 = cstart[c] + ccount[c] - 1;
            i1 = docs[j1];
            i2 = docs[j2];
            window_one(d, i1, S, &r, &a, &w1);
            window_one(d, i2, S, &r, &b, &w2);
        } else {
            /* A document uniformly, then one of another class uniformly (skip its class's range). */
            int j1;
            do j1 = (int)rand_below(&r, (size_t)nd);
            while (ccount[d->label[docs[j1]]] == nd); /* cannot loop: 2 classes are present */
            int c = d->label[docs[j1]];
            int j2 = (int)rand_below(&r, (size_t)(nd - ccount[c]));
            if (j2 >= cstart[c]) j2 += ccount[c];
            if (rng_u64(&r) & 1) {
                int t = j1;
                j1 = j2;
                j2 = t;
            }
            i1 = docs[j1];
            i2 = docs[j2];
            window_one(d, i1, S, &r, &a, &w1);
            window_one(d, i2, S, &r, &b, &w2);
        }
        put_window(d, i1, a, w1, S, row);
        put_window(d, i2, b, w2, S, row + S);
        out->labels[e] = positive[e];
    }
    free(positive);
    rc = 0;
out:
    free(docs);
    free(cstart);
    free(ccount);
    return rc;
}

static int build_pairs(const retrieval_params *p, int fmt, const char *root, const task_env *env,
                       task_split out[N_SPLITS], char *err, size_t errlen) {
    textdata_source src = {.format = (textdata_format)fmt, .path = root, .prefix = p->prefix, .body_only = p->body_only};
    textdata_docs d;
    if (textdata_load(&src, &d, err, errlen)) return -1;
    if (p->dedup) textdata_dedup(&d);
    drop_short(&d, LRA_MAX((size_t)p->min_bytes, (size_t)(p->same == 0 ? 2 : 1))); /* same document: 2 windows of >= 1 byte */
    textdata_carve(&d, env->seed, p->val_fraction, p->test_fraction);
    const int limit[N_SPLITS] = {p->n_train, p->n_val, p->n_test};
    int rc = 0;
    for (int s = 0; s < N_SPLITS && rc == 0; s++) {
        int nd = textdata_count_split(&d, s);
        long long n = limit[s] > 0 ? limit[s] : (long long)p->pairs_per_doc * nd;
        if (n > INT_MAX / 2) n = INT_MAX / 2;
        if (n < 1) n = 1; /* make_pairs reports the empty split */
        rc = make_pairs(p, &d, s, env->seq_len, (int)n, env->seed, &out[s], err, errlen);
    }
    if (rc)
        for (int s = 0; s < N_SPLITS; s++) task_split_free(&out[s]);
    textdata_docs_free(&d);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Validate and build                                                                          */

static int retrieval_validate(const void *params, const task_env *env, char *err, size_t errlen) {
    const retrieval_params *p = params;
    if (env->seq_len < 1) return lra_errorf(err, errlen, "task.seq_len: must be at least 1, got %d", env->seq_len);
    if ((double)p->val_fraction + (double)p->test_fraction >= 1.0)
        return lra_errorf(err, errlen, "task.val_fraction: val_fraction + test_fraction must be below 1, got %g + %g",
                          (double)p->val_fraction, (double)p->test_fraction);
    int fmt;
    char root[PATH_MAX];
    return locate(p, env, &fmt, root, err, errlen);
}

static int retrieval_build(const void *params, const task_env *env, task_split out[N_SPLITS], char *err,
                           size_t errlen) {
    const retrieval_params *p = params;
    if (retrieval_validate(params, env, err, errlen)) return -1;
    int fmt;
    char root[PATH_MAX];
    if (locate(p, env, &fmt, root, err, errlen)) return -1;
    if (fmt == TD_AAN) return build_aan(p, root, env->seq_len, out, err, errlen);
    return build_pairs(p, fmt, root, env, out, err, errlen);
}

const task_ops task_retrieval = {
    .name = "retrieval",
    .summary = "two byte-level documents -> match or not (LRA Retrieval/AAN files, or pairs generated from any corpus)",
    .source = "Tay et al., Long Range Arena, arXiv 2011.04006 (task 3); Radev et al., ACL Anthology Network",
    .kind = TASK_MATCH,
    .schema = retrieval_schema,
    .n_schema = (int)(sizeof retrieval_schema / sizeof retrieval_schema[0]),
    .params_size = sizeof(retrieval_params),
    .vocab_size = retrieval_vocab_size,
    .n_classes = retrieval_n_classes,
    .validate = retrieval_validate,
    .build = retrieval_build,
};

_Static_assert(sizeof(retrieval_params) <= TASK_PARAMS_MAX, "retrieval_params exceeds TASK_PARAMS_MAX");
