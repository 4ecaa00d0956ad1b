/* text.c - the `text` task: byte-level document classification (LRA's "Text", IMDB reviews, and
 * any labelled corpus in the layouts of textdata.h: aclImdb, LRA's Source,Target files, one
 * directory per class such as the SpamAssassin and Brown corpora of scripts/fetch-data.sh).
 *
 * Source: Tay et al., "Long Range Arena", arXiv 2011.04006, task 2 (byte-level IMDB, after Maas et
 * al. 2011); lra_benchmarks/text_classification/input_pipeline.py (see
 * /work/shared/reference/lra.md section 1.2).
 *
 * An example is the first seq_len bytes of a document as ids b + 1, right-padded with 0 (LRA's
 * ByteTextEncoder, truncate, pad). With `windows: K` a document gives up to K examples: its
 * consecutive seq_len-byte windows, each after the first kept when it has at least seq_len/2
 * bytes; all of a document's windows stay in the document's split. Each split's examples are stored
 * in a seeded random order (not class by class), so that scoring only the first validation batches
 * (train.eval_batches) sees every class; n_train/n_val/n_test keep the first examples of that order.
 *
 * Splits: the layout's own train/val/test parts are used; a missing validation (or test) split is
 * carved from the training documents, stratified by class, with the data seed (textdata_carve),
 * after exact duplicates are removed (`dedup`), so no document is in two splits. LRA had no
 * validation split for IMDB and evaluated on the test split; here the validation split is carved
 * from train and the test split is scored once, with the parameters of the best validation step.
 *
 * The number of classes: the `n_classes` key when set; otherwise the data's (class directories, or
 * the largest Target + 1), which build() records in task_split.n_classes.
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "../lra/common.h"
#include "../lra/rng.h"
#include "textdata.h"

#define TP text_params
static const param_def text_schema[] = {
    P_STRING(TP, path, "",
             "the corpus: an IMDB-layout directory (aclImdb: {train,test}/{neg,pos}/*.txt), a directory holding LRA's "
             "PREFIX_{train,val,test}.tsv Source,Target files, or one sub-directory per class (spam, brown after "
             "scripts/fetch-data.sh); relative: to the working directory, then data_dir, then the config's directory"),
    P_ENUM(TP, format, "auto", "auto|imdb|tsv|dirs",
           "layout of path; auto: imdb when it has train/<class>/, tsv when it has PREFIX_train.tsv/.csv, else dirs"),
    P_STRING(TP, prefix, "", "tsv layout: the PREFIX of PREFIX_train.tsv (LRA: the task name); empty = the only one in path"),
    P_INT(TP, n_classes, "0", 0, 65536,
          "number of classes; 0 = from the data (class directories, or the largest Target + 1)"),
    P_BOOL(TP, body_only, "false",
           "keep only the body of RFC 822 messages (what follows the first empty line): e-mail headers make spam "
           "detection too easy"),
    P_INT(TP, windows, "1", 1, 1000000,
          "examples per document: its first seq_len bytes (1, as LRA), or up to this many consecutive seq_len windows "
          "(each later one at least seq_len/2 bytes), all in the document's split"),
    P_BOOL(TP, dedup, "true",
           "drop documents whose kept bytes equal an earlier document's, so no text is in two splits (false: the data as "
           "given, like LRA)"),
    P_FLOAT(TP, val_fraction, "0.1", 0, 0.9,
            "when the data has no validation split, this fraction of each class's training documents becomes it "
            "(chosen with data_seed)"),
    P_FLOAT(TP, test_fraction, "0.1", 0, 0.9,
            "when the data has no test split, this fraction of each class's training documents becomes it"),
    P_INT(TP, n_train, "0", 0, 100000000, "use at most this many training examples (a seeded random subset); 0 = all"),
    P_INT(TP, n_val, "0", 0, 100000000, "use at most this many validation examples; 0 = all"),
    P_INT(TP, n_test, "0", 0, 100000000, "use at most this many test examples; 0 = all"),
};
#undef TP

static const textdata_format text_formats[] = {TD_AUTO, TD_IMDB, TD_TSV, TD_DIRS};

/* ------------------------------------------------------------------------------------------ */
/* Where the data is                                                                           */

static int tsv_prefix_exists(const char *cand) {
    static const char *const exts[] = {".tsv", ".csv", NULL};
    char stem[PATH_MAX + 8], found[PATH_MAX + 32];
    snprintf(stem, sizeof stem, "%s_train", cand);
    return textdata_find_file(stem, exts, found, sizeof found);
}

/* Resolve task.path and its layout into src (whose path points into root). */
static int locate(const text_params *p, const task_env *env, textdata_source *src, char root[PATH_MAX], char *err,
                  size_t errlen) {
    if (!p->path[0])
        return lra_errorf(err, errlen,
                          "task.path: required: the corpus to classify, e.g. `path: spam` or `path: brown` (after "
                          "scripts/fetch-data.sh), or the aclImdb directory");
    char resolved[PATH_MAX], imdb_root[PATH_MAX] = "";
    if (textdata_resolve_path(p->path, env, tsv_prefix_exists, resolved, sizeof resolved, err, errlen)) return -1;
    int fmt = textdata_detect(resolved, text_formats[p->format], NULL, p->prefix, imdb_root, sizeof imdb_root, err,
                              errlen);
    if (fmt < 0) return -1;
    snprintf(root, PATH_MAX, "%s", fmt == TD_IMDB ? imdb_root : resolved);
    memset(src, 0, sizeof *src);
    src->format = (textdata_format)fmt;
    src->path = root;
    src->prefix = p->prefix;
    src->body_only = p->body_only;
    return 0;
}

static int text_vocab_size(const void *params) {
    (void)params;
    return TEXT_VOCAB;
}

/* The n_classes key, or 0: the data's count, which build() records in task_split.n_classes. */
static int text_n_classes(const void *params) { return ((const text_params *)params)->n_classes; }

/* ------------------------------------------------------------------------------------------ */
/* Validate and build                                                                          */

static int text_validate(const void *params, const task_env *env, char *err, size_t errlen) {
    const text_params *p = params;
    if (env->seq_len < 1) return lra_errorf(err, errlen, "task.seq_len: must be at least 1, got %d", env->seq_len);
    if ((double)p->val_fraction + (double)p->test_fraction >= 1.0)
        return lra_errorf(err, errlen, "task.val_fraction: val_fraction + test_fraction must be below 1, got %g + %g",
                          (double)p->val_fraction, (double)p->test_fraction);
    if ((long long)env->seq_len * p->windows > (long long)INT_MAX)
        return lra_errorf(err, errlen, "task.windows: seq_len x windows = %lld bytes per document is too many",
                          (long long)env->seq_len * p->windows);
    char root[PATH_MAX];
    textdata_source src;
    return locate(p, env, &src, root, err, errlen);
}

/* Windows of a document of len bytes that become examples: the first, then each further full-ish
 * one (at least seq_len/2 bytes, at least 1), at most `windows`. */
static int n_windows(size_t len, int seq_len, int windows) {
    size_t min_tail = LRA_MAX((size_t)1, (size_t)seq_len / 2);
    int k = 1;
    while (k < windows && len > (size_t)k * (size_t)seq_len && len - (size_t)k * (size_t)seq_len >= min_tail) k++;
    return k;
}

static int text_build(const void *params, const task_env *env, task_split out[N_SPLITS], char *err, size_t errlen) {
    const text_params *p = params;
    if (text_validate(params, env, err, errlen)) return -1;
    char root[PATH_MAX];
    textdata_source src;
    if (locate(p, env, &src, root, err, errlen)) return -1;
    const int S = env->seq_len;
    src.keep = (size_t)S * (size_t)p->windows;
    textdata_docs d;
    if (textdata_load(&src, &d, err, errlen)) return -1;
    if (p->dedup) textdata_dedup(&d);
    textdata_carve(&d, env->seed, p->val_fraction, p->test_fraction);

    int nc = d.n_classes, rc = -1;
    if (p->n_classes > 0) {
        if (nc > p->n_classes) {
            int at = -1;
            for (int i = 0; i < d.n && at < 0; i++)
                if (d.label[i] >= p->n_classes) at = i;
            char where[PATH_MAX + 64] = "";
            if (at >= 0)
                snprintf(where, sizeof where, " (%s has class %d%s%s)", d.name[at], (int)d.label[at],
                         d.class_names ? ", " : "", d.class_names ? d.class_names[d.label[at]] : "");
            lra_errorf(err, errlen, "task.n_classes: %d, but the data has %d classes%s", p->n_classes, nc, where);
            goto out;
        }
        nc = p->n_classes;
    }
    if (nc < 2) {
        lra_errorf(err, errlen,
                   "task.path: %s has %d class: classification needs at least 2 (one sub-directory per class, or Target "
                   "labels 0, 1, ...)",
                   root, nc);
        goto out;
    }
    for (int s = 0; s < N_SPLITS; s++)
        if (textdata_count_split(&d, s) == 0) {
            lra_errorf(err, errlen,
                       "task.path: the %s split of %s is empty (%d documents in all: %d train, %d val, %d test); raise "
                       "task.%s_fraction or add data",
                       split_names[s], root, d.n, textdata_count_split(&d, SPLIT_TRAIN), textdata_count_split(&d, SPLIT_VAL),
                       textdata_count_split(&d, SPLIT_TEST), s == SPLIT_TEST ? "test" : "val");
            goto out;
        }

    const int limit[N_SPLITS] = {p->n_train, p->n_val, p->n_test};
    int *ex_doc = NULL, *ex_win = NULL, *pick = NULL;
    for (int s = 0; s < N_SPLITS; s++) {
        int n = 0;
        for (int i = 0; i < d.n; i++)
            if (d.split[i] == s) n += n_windows(d.off[i + 1] - d.off[i], S, p->windows);
        ex_doc = xrealloc(ex_doc, (size_t)n * sizeof *ex_doc);
        ex_win = xrealloc(ex_win, (size_t)n * sizeof *ex_win);
        pick = xrealloc(pick, (size_t)n * sizeof *pick);
        int k = 0;
        for (int i = 0; i < d.n; i++) {
            if (d.split[i] != s) continue;
            int w = n_windows(d.off[i + 1] - d.off[i], S, p->windows);
            for (int j = 0; j < w; j++, k++) ex_doc[k] = i, ex_win[k] = j;
        }
        /* A seeded random order (the trainer's eval_batches scores the first batches of val, which
         * must not be all of one class), and the first n_train/n_val/n_test of it when limited. */
        for (int i = 0; i < n; i++) pick[i] = i;
        rng_t r = rng_make(env->seed, rng_substream(RNG_DATA, 0x6f726472 /* "ordr" */, (uint64_t)s));
        for (int i = n - 1; i > 0; i--) {
            int j = rng_int(&r, 0, i), t = pick[i];
            pick[i] = pick[j];
            pick[j] = t;
        }
        int m = limit[s] > 0 && limit[s] < n ? limit[s] : n;
        task_split *sp = &out[s];
        sp->n = m;
        sp->seq_len = S;
        sp->n_inputs = 1;
        sp->tokens = xmalloc((size_t)m * (size_t)S * sizeof *sp->tokens);
        sp->labels = xmalloc((size_t)m * sizeof *sp->labels);
        for (int e = 0; e < m; e++) {
            int i = ex_doc[pick[e]], w = ex_win[pick[e]];
            size_t from = d.off[i] + (size_t)w * (size_t)S, len = d.off[i + 1] - from;
            textdata_encode(d.bytes + from, len, S, sp->tokens + (size_t)e * (size_t)S);
            sp->labels[e] = d.label[i];
        }
    }
    free(ex_doc);
    free(ex_win);
    free(pick);
    for (int s = 0; s < N_SPLITS; s++) out[s].n_classes = nc;
    rc = 0;
out:
    textdata_docs_free(&d);
    if (rc)
        for (int s = 0; s < N_SPLITS; s++) task_split_free(&out[s]);
    return rc;
}

const task_ops task_text = {
    .name = "text",
    .summary = "byte-level document classification (LRA Text/IMDB; any corpus: aclImdb, Source,Target TSV/CSV, a "
               "directory per class)",
    .source = "Tay et al., Long Range Arena, arXiv 2011.04006 (task 2); Maas et al. 2011, IMDB reviews",
    .kind = TASK_CLASSIFY,
    .schema = text_schema,
    .n_schema = (int)(sizeof text_schema / sizeof text_schema[0]),
    .params_size = sizeof(text_params),
    .vocab_size = text_vocab_size,
    .n_classes = text_n_classes,
    .validate = text_validate,
    .build = text_build,
};

_Static_assert(sizeof(text_params) <= TASK_PARAMS_MAX, "text_params exceeds TASK_PARAMS_MAX");
