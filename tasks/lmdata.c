/* lmdata.c - the `lm` task: byte-level language modelling data. build() gives each split as one
 * raw byte stream (task_split.stream, stream_len; n = 0, no tokens or labels); the model
 * (lra/lm.c) cuts the streams into segment_len pieces, maps byte b to id b + 1 (0 is padding, so
 * vocab_size is 257) and predicts the next byte over 256 classes (bits per byte).
 *
 * Sources (tasks/bytesrc.h): a plain file, gzip or dictzip (.gz, .dz; e.g. Debian's dict-gcide,
 * /usr/share/dictd/gcide.dict.dz), a zip archive member (enwik8.zip, text8.zip as published: one
 * deflated member enwik8 / text8), a PG19-style directory (train/, validation/, test/ of .txt or
 * .txt.gz books), or a directory of documents (e.g. data/brown of scripts/fetch-data.sh).
 *
 * Splits:
 *  - one stream (plain, gzip, zip) of L bytes: the first n_train bytes are train, the next n_val
 *    val, the last n_test test, with n_val = floor(L * val_fraction + 1/2) and n_test likewise,
 *    n_train = L - n_val - n_test. The fractions are taken to 6 decimals (ppm = round(f * 1e6))
 *    and the products computed in integers, n = (L * ppm + 500000) / 1000000, so the float keys
 *    give the decimal split exactly: with the defaults 0.05/0.05, enwik8 (L = 100,000,000) gets
 *    the standard 90M/5M/5M (Al-Rfou et al. 2018; Dai et al. 2019), and text8 the same; a smaller
 *    or larger file is split in the same proportions.
 *  - pg19: its own directories; each split is its books concatenated in file-name order (Rae et al.
 *    2020, PG-19).
 *  - dirs: split BY DOCUMENT: n_test = floor(D * test_fraction + 1/2) documents go to test and
 *    n_val likewise to val, chosen by a seeded shuffle of the D documents (task.data_seed, stream
 *    RNG_DATA), the rest to train; each split is its documents concatenated in listing order
 *    (bytesrc_list_files), so no document is in two splits and the result depends on the seed and
 *    the corpus only. This is the PG19-like prose stream of the Brown corpus (500 documents).
 * Documents and books are concatenated as they are (no separator: Brown's and PG19's files end
 * with a newline). max_train_bytes / max_eval_bytes then keep the first bytes of the train / the
 * val and test streams (CPU-sized runs); the split boundaries do not move.
 */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../lra/common.h"
#include "../lra/rng.h"
#include "bytesrc.h"
#include "task.h"
#include "textdata.h"

typedef struct {
    char path[512];      /* file or directory */
    int format;          /* bytesrc_format */
    char member[256];    /* zip member; "" = the only one */
    int max_bytes;       /* inflate limit over the whole source */
    float val_fraction;  /* single stream: share of bytes; dirs: share of documents */
    float test_fraction;
    int max_train_bytes; /* keep at most this many bytes of the train stream; 0 = all */
    int max_eval_bytes;  /* ... of the val and of the test stream; 0 = all */
} lm_params;

#define LP lm_params
static const param_def lm_schema[] = {
    P_STRING(LP, path, "",
             "the byte source: a plain file, a .gz/.dz file (e.g. /usr/share/dictd/gcide.dict.dz of Debian's "
             "dict-gcide), a .zip archive (enwik8.zip, text8.zip), a PG19-style directory (train/, validation/, "
             "test/ of .txt or .txt.gz books) or a directory of documents (brown after scripts/fetch-data.sh); "
             "relative: to the working directory, then data_dir, then the config's directory"),
    P_ENUM(LP, format, "auto", "auto|plain|gzip|zip|pg19|dirs",
           "how to read path; auto: gzip/zip by magic bytes (else .gz/.dz/.zip extension), pg19 for a directory "
           "with train/, dirs for another directory, else plain"),
    P_STRING(LP, member, "", "zip: the member to read (enwik8, text8); empty = the archive's only member"),
    P_INT(LP, max_bytes, "1073741824", 1, 2147483647,
          "inflate limit: refuse a source that decompresses to more bytes than this (1 GiB)"),
    P_FLOAT(LP, val_fraction, "0.05", 0, 0.9,
            "single file: the validation bytes, after train (enwik8/text8: 5M of 100M); dirs: the share of "
            "documents (seeded with data_seed); count = floor(n x fraction + 1/2), the fraction taken to 6 decimals; "
            "pg19 uses its directories"),
    P_FLOAT(LP, test_fraction, "0.05", 0, 0.9,
            "single file: the test bytes, the last ones (enwik8/text8: 5M of 100M); dirs: the share of documents"),
    P_INT(LP, max_train_bytes, "0", 0, 2147483647,
          "keep only the first this many bytes of the train stream (CPU-sized runs); 0 = all"),
    P_INT(LP, max_eval_bytes, "0", 0, 2147483647,
          "keep only the first this many bytes of the val and of the test stream, which the model scores whole; "
          "0 = all"),
};
#undef LP

enum { LM_VOCAB = 257, LM_CLASSES = 256 };

static int lm_vocab_size(const void *params) {
    (void)params;
    return LM_VOCAB;
}

static int lm_n_classes(const void *params) {
    (void)params;
    return LM_CLASSES;
}

/* ------------------------------------------------------------------------------------------ */
/* Where the data is                                                                           */

static int starts_with(const char *s, const char *pre) { return strncmp(s, pre, strlen(pre)) == 0; }

/* Resolve task.path (textdata_resolve_path: as given, data_dir, config dir) and its format. */
static int locate(const lm_params *p, const task_env *env, char out[PATH_MAX], bytesrc_format *fmt, char *err,
                  size_t errlen) {
    if (!p->path[0])
        return lra_errorf(err, errlen,
                          "task.path: required: the byte stream to model, e.g. /usr/share/dictd/gcide.dict.dz "
                          "(apt-get install dict-gcide), enwik8.zip, a PG19 directory, or brown (after "
                          "scripts/fetch-data.sh brown)");
    if (textdata_resolve_path(p->path, env, NULL, out, PATH_MAX, err, errlen)) {
        const char *base = strrchr(p->path, '/');
        base = base ? base + 1 : p->path;
        if (starts_with(base, "gcide"))
            return lra_errorf(err, errlen,
                              "task.path: %s not found: install the Debian package dict-gcide (apt-get install "
                              "dict-gcide)",
                              p->path);
        if (starts_with(base, "enwik") || starts_with(base, "text8"))
            return lra_errorf(err, errlen,
                              "task.path: %s not found: lra does not download it; put the published archive "
                              "(Hutter Prize data, e.g. enwik8.zip) at that path, under data_dir, or next to the "
                              "config",
                              p->path);
        return -1;
    }
    int d = bytesrc_detect(out, err, errlen);
    if (d < 0) return -1;
    int want = p->format;
    int is_dir = d == BS_PG19 || d == BS_DIRS;
    if (want != BS_AUTO) {
        int want_dir = want == BS_PG19 || want == BS_DIRS;
        if (want_dir && !is_dir)
            return lra_errorf(err, errlen, "task.format: %s needs a directory, but %s is a file",
                              bytesrc_format_names[want], out);
        if (!want_dir && is_dir)
            return lra_errorf(err, errlen, "task.format: %s needs a file, but %s is a directory",
                              bytesrc_format_names[want], out);
        d = want;
    }
    if (p->member[0] && d != BS_ZIP)
        return lra_errorf(err, errlen, "task.member: only for zip archives, but %s is read as %s", out,
                          bytesrc_format_names[d]);
    *fmt = (bytesrc_format)d;
    if (d == BS_PG19) {
        char sd[PATH_MAX];
        for (int s = 0; s < N_SPLITS; s++)
            if (bytesrc_pg19_split_dir(out, s, sd, sizeof sd, err, errlen)) return -1;
    }
    return 0;
}

static int lm_validate(const void *params, const task_env *env, char *err, size_t errlen) {
    const lm_params *p = params;
    if ((double)p->val_fraction + (double)p->test_fraction >= 1.0)
        return lra_errorf(err, errlen, "task.val_fraction: val_fraction + test_fraction must be below 1, got %g + %g",
                          (double)p->val_fraction, (double)p->test_fraction);
    char path[PATH_MAX];
    bytesrc_format fmt = BS_AUTO;
    return locate(p, env, path, &fmt, err, errlen);
}

/* ------------------------------------------------------------------------------------------ */
/* Splits                                                                                      */

/* round(x * f) for a fraction f given to 6 decimals, in exact integer arithmetic. */
static size_t frac_count(size_t x, float f) {
    uint64_t ppm = (uint64_t)llround((double)f * 1e6);
    /* x < 2^31 (max_bytes) and ppm <= 1e6 < 2^20: the product fits in 64 bits. */
    return (size_t)(((uint64_t)x * ppm + 500000u) / 1000000u);
}

static uint8_t *copy_bytes(const uint8_t *src, size_t n) {
    uint8_t *d = xmalloc(n ? n : 1);
    if (n) memcpy(d, src, n);
    return d;
}

/* One stream -> train | val | test by byte counts. Takes ownership of b->data. */
static int split_stream(const lm_params *p, const char *path, bytebuf *b, task_split out[N_SPLITS], char *err,
                        size_t errlen) {
    size_t L = b->len, nv = frac_count(L, p->val_fraction), nt = frac_count(L, p->test_fraction);
    size_t ntr = L - nv - nt; /* nv + nt <= L: the fractions sum below 1 */
    if (!ntr || !nv || !nt) {
        int rc = lra_errorf(err, errlen,
                            "task.path: %s has %zu bytes: too few for three non-empty splits (train %zu, val %zu, "
                            "test %zu bytes with val_fraction %g, test_fraction %g)",
                            path, L, ntr, nv, nt, (double)p->val_fraction, (double)p->test_fraction);
        bytebuf_free(b);
        return rc;
    }
    out[SPLIT_VAL].stream = copy_bytes(b->data + ntr, nv);
    out[SPLIT_VAL].stream_len = nv;
    out[SPLIT_TEST].stream = copy_bytes(b->data + ntr + nv, nt);
    out[SPLIT_TEST].stream_len = nt;
    out[SPLIT_TRAIN].stream = xrealloc(b->data, ntr);
    out[SPLIT_TRAIN].stream_len = ntr;
    b->data = NULL;
    b->len = b->cap = 0;
    return 0;
}

static void free_files(char **f, int n) {
    for (int i = 0; i < n; i++) free(f[i]);
    free(f);
}

/* PG19: each split directory's files concatenated; max_bytes bounds the three together (one
 * buffer, copied out per split). */
static int build_pg19(const lm_params *p, const char *root, task_split out[N_SPLITS], char *err, size_t errlen) {
    bytebuf b = {.max_bytes = (size_t)p->max_bytes};
    size_t bound[N_SPLITS + 1] = {0};
    for (int s = 0; s < N_SPLITS; s++) {
        char dir[PATH_MAX];
        char **files;
        int n;
        if (bytesrc_pg19_split_dir(root, s, dir, sizeof dir, err, errlen) ||
            bytesrc_list_files(dir, &files, &n, err, errlen)) {
            bytebuf_free(&b);
            return -1;
        }
        int rc = n ? 0 : lra_errorf(err, errlen, "%s: no books (the %s split of the PG19 layout is empty)", dir,
                                    split_names[s]);
        for (int i = 0; i < n && rc == 0; i++) rc = bytesrc_read_file(&b, files[i], BS_AUTO, NULL, err, errlen);
        free_files(files, n);
        if (rc == 0 && b.len == bound[s])
            rc = lra_errorf(err, errlen, "%s: the %s split is empty (its books have no bytes)", dir, split_names[s]);
        if (rc) {
            bytebuf_free(&b);
            return -1;
        }
        bound[s + 1] = b.len;
    }
    for (int s = 0; s < N_SPLITS; s++) {
        out[s].stream_len = bound[s + 1] - bound[s];
        out[s].stream = copy_bytes(b.data + bound[s], out[s].stream_len);
    }
    bytebuf_free(&b);
    return 0;
}

/* dirs: documents split by document with the data seed. */
static int build_dirs(const lm_params *p, const char *root, uint64_t seed, task_split out[N_SPLITS], char *err,
                      size_t errlen) {
    char **files;
    int n;
    if (bytesrc_list_files(root, &files, &n, err, errlen)) return -1;
    int rc = -1;
    bytebuf b = {.max_bytes = (size_t)p->max_bytes};
    size_t *off = xmalloc(((size_t)n + 1) * sizeof *off);
    int *perm = xmalloc(((size_t)n + 1) * sizeof *perm);
    int8_t *split = xmalloc((size_t)n + 1);
    int nt = (int)frac_count((size_t)n, p->test_fraction), nv = (int)frac_count((size_t)n, p->val_fraction);
    if (n - nt - nv < 1 || nt < 1 || nv < 1) {
        lra_errorf(err, errlen,
                   "task.path: %s has %d documents: too few for three non-empty splits (train %d, val %d, test %d "
                   "with val_fraction %g, test_fraction %g)",
                   root, n, n - nt - nv, nv, nt, (double)p->val_fraction, (double)p->test_fraction);
        goto out;
    }
    off[0] = 0;
    for (int i = 0; i < n; i++) {
        if (bytesrc_read_file(&b, files[i], BS_AUTO, NULL, err, errlen)) goto out;
        off[i + 1] = b.len;
    }
    /* Fisher-Yates over the documents; the first nt of the order go to test, the next nv to val. */
    for (int i = 0; i < n; i++) perm[i] = i;
    rng_t r = rng_make(seed, rng_substream(RNG_DATA, 0x6c6d646f /* "lmdo" */, 0));
    for (int i = n - 1; i > 0; i--) {
        int j = rng_int(&r, 0, i), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    for (int k = 0; k < n; k++) split[perm[k]] = (int8_t)(k < nt ? SPLIT_TEST : k < nt + nv ? SPLIT_VAL : SPLIT_TRAIN);
    for (int s = 0; s < N_SPLITS; s++) {
        size_t len = 0;
        for (int i = 0; i < n; i++)
            if (split[i] == s) len += off[i + 1] - off[i];
        if (!len) {
            lra_errorf(err, errlen, "task.path: the %s split of %s is empty (its documents have no bytes)",
                       split_names[s], root);
            goto out;
        }
        uint8_t *d = xmalloc(len);
        size_t at = 0;
        for (int i = 0; i < n; i++)
            if (split[i] == s) {
                memcpy(d + at, b.data + off[i], off[i + 1] - off[i]);
                at += off[i + 1] - off[i];
            }
        out[s].stream = d;
        out[s].stream_len = len;
    }
    rc = 0;
out:
    bytebuf_free(&b);
    free(off);
    free(perm);
    free(split);
    free_files(files, n);
    return rc;
}

/* Keep the first `cap` bytes of a split (0 = all). */
static void cap_split(task_split *s, int cap) {
    if (cap > 0 && s->stream_len > (size_t)cap) {
        s->stream_len = (size_t)cap;
        s->stream = xrealloc(s->stream, s->stream_len);
    }
}

static int lm_build(const void *params, const task_env *env, task_split out[N_SPLITS], char *err, size_t errlen) {
    const lm_params *p = params;
    if (lm_validate(params, env, err, errlen)) return -1;
    char path[PATH_MAX];
    bytesrc_format fmt = BS_AUTO;
    if (locate(p, env, path, &fmt, err, errlen)) return -1;
    int rc;
    if (fmt == BS_PG19) {
        rc = build_pg19(p, path, out, err, errlen);
    } else if (fmt == BS_DIRS) {
        rc = build_dirs(p, path, env->seed, out, err, errlen);
    } else {
        bytebuf b = {.max_bytes = (size_t)p->max_bytes};
        rc = bytesrc_read_file(&b, path, fmt, p->member, err, errlen);
        if (rc == 0 && b.len == 0) rc = lra_errorf(err, errlen, "%s: empty: no bytes to model", path);
        if (rc) bytebuf_free(&b);
        else rc = split_stream(p, path, &b, out, err, errlen);
    }
    if (rc) {
        for (int s = 0; s < N_SPLITS; s++) task_split_free(&out[s]);
        return -1;
    }
    cap_split(&out[SPLIT_TRAIN], p->max_train_bytes);
    cap_split(&out[SPLIT_VAL], p->max_eval_bytes);
    cap_split(&out[SPLIT_TEST], p->max_eval_bytes);
    for (int s = 0; s < N_SPLITS; s++) {
        out[s].n = 0;
        out[s].n_classes = LM_CLASSES;
    }
    return 0;
}

const task_ops task_lm = {
    .name = "lm",
    .summary = "byte-level language modelling on a stream (enwik8/text8 zip, gzip/dictzip such as gcide, plain, "
               "PG19 directories, a directory of documents); bits per byte",
    .source = "enwik8/text8: Hutter Prize data, Mahoney 2006 (90M/5M/5M split: Al-Rfou et al. arXiv 1808.04444); "
              "PG-19: Rae et al., Compressive Transformer, arXiv 1911.05507",
    .kind = TASK_LM,
    .schema = lm_schema,
    .n_schema = (int)(sizeof lm_schema / sizeof lm_schema[0]),
    .params_size = sizeof(lm_params),
    .vocab_size = lm_vocab_size,
    .n_classes = lm_n_classes,
    .validate = lm_validate,
    .build = lm_build,
};

_Static_assert(sizeof(lm_params) <= TASK_PARAMS_MAX, "lm_params exceeds TASK_PARAMS_MAX");
