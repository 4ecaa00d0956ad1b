/* approx.c - the approximation study (`lra approx CONFIG`): relative error of each approximate
 * attention mechanism against exact softmax attention on the same Q, K, V, swept over its knob, on
 * random Gaussian inputs and on inputs captured from a ListOps model trained in this process; and
 * Linformer's spectrum analysis (Wang et al., arXiv 2006.04768, §3 and Figure 1): the cumulative
 * normalised singular values sum_{i<=k} s_i / sum_i s_i of the softmax attention matrices P of the
 * trained model, per layer and head. See approx.h for the shapes.
 *
 * Config (every key below is declared in a param_def table; unknown keys are errors with
 * FILE:LINE:COL and a "did you mean" hint):
 *
 *   name: approx                     # results/<name>/ unless --out
 *   seeds: [0, 1, 2]                 # mechanism draws (features, hashes, Linformer E/F) and random inputs
 *   random: {seq_len: 512, d_head: 32, n_heads: 4, batch: 1, logit_std: [0.25, 1.0]}
 *                                    # q, k ~ N(0, logit_std): logits with std logit_std; v ~ N(0, 1);
 *                                    # one input set per logit_std value
 *   capture:                         # a run config; its first run is trained here, then captured
 *     config: ../listops.yaml        # relative to this file; "" = no captured inputs
 *     set: ["attention=softmax", "task.seq_len=[256]"]   # --set overrides of that config
 *     steps: 300                     # or checkpoint: PATH (lra/checkpoint.h) to load instead
 *     sequences: 4                   # validation sequences captured (of the first batch)
 *   spectrum: {top_k: 128, sequences: 4}
 *   mechanisms:                      # each entry: a mechanism, exactly one integer key given as a
 *     - {name: performer, features: [16, 64, 256], orthogonal: true}   # list (the knob); the
 *     - {name: reformer, n_hashes: [1, 2, 4], bucket_size: 32}         # others are fixed
 *
 * Reference of each error: exact softmax attention (attn_softmax, tiled) on the same q, k, v and
 * padding mask, except for `reformer`, whose shared-QK attention (keys are the unit-normalised
 * queries, self-attention masked) is a different function from softmax(Q K^T): its reference is the
 * same mechanism without hashing (n_hashes 1, n_buckets 1, bucket_size N: full shared-QK attention),
 * so its error is the LSH approximation alone. Learned weights (Linformer E, F, Nystromformer's
 * conv) come from the mechanism's initialisation drawn from the seed, for both input kinds: the
 * captured model is trained with its own mechanism (softmax by default), so it has no trained E/F.
 *
 * Seeds: for random inputs a seed draws both the inputs and the mechanism's randomness; for the
 * captured inputs (one fixed set) only the mechanism's (deterministic mechanisms then give the same
 * error for every seed, std 0).
 *
 * Outputs in DIR: approx.csv (mean, std, min, max over seeds per source x logit_std x mechanism x
 * variant x knob value), approx_seeds.csv (one row per seed), inputs.csv (mean normalised entropy and max
 * probability of the exact attention rows of each input set), spectrum.csv (per layer, head and
 * sequence: energy share of the top_k and top n/4 singular values, k for 90%), spectrum_curve.csv
 * (mean and std over heads and sequences of the cumulative share at each k), and the charts
 * approx_random_ls<logit_std>, approx_trained (one panel per mechanism and knob, mean with min-max
 * bars over seeds) and spectrum (.gp, .dat; .png and .svg when gnuplot is on PATH).
 */
#include "approx.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml.h>

#include "checkpoint.h"
#include "common.h"
#include "csv.h"
#include "model.h"
#include "optim.h"
#include "rng.h"

extern const attn_ops attn_softmax;

/* ---------------------------------------------------------------------------------------------
 * Inputs */

void approx_inputs_random(approx_inputs *in, int B, int H, int N, int Dh, float logit_std, uint64_t seed) {
    memset(in, 0, sizeof *in);
    in->Lc = 1, in->B = B, in->H = H, in->N = N, in->Dh = Dh;
    size_t n = approx_layer_floats(in);
    in->q = xmalloc(sizeof(float) * n);
    in->k = xmalloc(sizeof(float) * n);
    in->v = xmalloc(sizeof(float) * n);
    double sd = sqrt((double)logit_std);
    rng_t rq = rng_make(seed, rng_substream(RNG_DATA, 0xA9901, 0));
    rng_t rk = rng_make(seed, rng_substream(RNG_DATA, 0xA9901, 1));
    rng_t rv = rng_make(seed, rng_substream(RNG_DATA, 0xA9901, 2));
    for (size_t i = 0; i < n; i++) {
        in->q[i] = (float)(sd * rng_normal(&rq));
        in->k[i] = (float)(sd * rng_normal(&rk));
        in->v[i] = (float)rng_normal(&rv);
    }
}

void approx_inputs_free(approx_inputs *in) {
    free(in->q);
    free(in->k);
    free(in->v);
    free(in->mask);
    free(in->w);
    memset(in, 0, sizeof *in);
}

/* Fisher-Yates permutation of [0, n) for an epoch: the trainer's batch order (train.c). */
static void epoch_order(int *perm, int n, uint64_t seed, long epoch) {
    for (int i = 0; i < n; i++) perm[i] = i;
    rng_t r = rng_make(seed, rng_substream(RNG_SHUFFLE, (uint64_t)epoch, 0));
    for (int i = n - 1; i > 0; i--) {
        int j = rng_int(&r, 0, i);
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

int approx_train_capture(const run_cfg *c, const char *checkpoint, int steps, int n_seq, approx_inputs *in,
                         float **att, double *val_acc, char *err, size_t errlen) {
    memset(in, 0, sizeof *in);
    if (att) *att = NULL;
    *val_acc = NAN;
    task_split splits[N_SPLITS];
    memset(splits, 0, sizeof splits);
    task_env env = {.seed = (uint64_t)c->task.data_seed, .seq_len = c->task.seq_len, .base_dir = c->base_dir,
                    .data_dir = c->task.data_dir};
    char e2[1024] = "";
    if (c->task_ops->build(c->task_params.bytes, &env, splits, e2, sizeof e2))
        return lra_errorf(err, errlen, "capture: data: %s", e2);
    int rc = -1;
    model_t *m = xcalloc(1, sizeof *m);
    int *perm = NULL, *idx = NULL;
    if (splits[SPLIT_TRAIN].n == 0 || splits[SPLIT_VAL].n == 0) {
        lra_errorf(err, errlen, "capture: empty train or validation split");
        goto done;
    }
    int n_classes = task_n_classes(c->task_ops, c->task_params.bytes, splits);
    int vocab = c->task_ops->vocab_size(c->task_params.bytes);
    if (checkpoint && checkpoint[0]) {
        if (ckpt_build_model(m, c, c->train.batch_size, checkpoint, CKPT_WEIGHTS_BEST, 0, e2, sizeof e2)) {
            lra_errorf(err, errlen, "capture.checkpoint: %s", e2);
            memset(m, 0, sizeof *m); /* freed by ckpt_build_model */
            goto done;
        }
        steps = 0;
    } else if (model_build(m, c, c->train.batch_size, vocab, n_classes, c->task_ops->kind, 0, e2, sizeof e2)) {
        lra_errorf(err, errlen, "capture: model: %s", e2);
        goto done;
    }
    const task_split *tr = &splits[SPLIT_TRAIN], *va = &splits[SPLIT_VAL];
    int B = m->B;
    if (n_seq < 1 || n_seq > m->Be) {
        lra_errorf(err, errlen, "capture.sequences: %d not in [1, %d] (the batch's encoder sequences)", n_seq, m->Be);
        goto done;
    }
    if (n_seq > va->n * m->n_inputs) {
        lra_errorf(err, errlen, "capture.sequences: %d > the %d validation sequences", n_seq, va->n * m->n_inputs);
        goto done;
    }
    perm = xmalloc(sizeof(int) * (size_t)tr->n);
    idx = xmalloc(sizeof(int) * (size_t)B);
    long epoch = 0;
    int pos = tr->n;
    double t0 = lra_now(), loss = NAN;
    for (int step = 0; step < steps; step++) {
        for (int b = 0; b < B; b++) {
            if (pos >= tr->n) {
                epoch_order(perm, tr->n, (uint64_t)c->train.seed, epoch++);
                pos = 0;
            }
            idx[b] = perm[pos++];
        }
        model_load_batch(m, tr, idx);
        loss = model_forward(m, 1, NULL, NULL);
        if (!isfinite(loss)) {
            lra_errorf(err, errlen, "capture: non-finite training loss at step %d", step + 1);
            goto done;
        }
        model_zero_grad(m);
        model_backward(m);
        model_update(m, lr_at(&c->train, step));
        if (steps >= 20 && (step + 1) % (steps / 10) == 0)
            fprintf(stderr, "lra approx: training step %d/%d, loss %.4f, %.1f s\n", step + 1, steps, loss,
                    lra_now() - t0);
    }
    /* validation accuracy over at most 8 batches */
    int correct = 0, counted = 0, nb = LRA_MIN(8, LRA_CEIL_DIV(va->n, B));
    for (int bi = nb - 1; bi >= 0; bi--) { /* batch 0 last: its activations are the captured ones */
        for (int b = 0; b < B; b++) idx[b] = bi * B + b < va->n ? bi * B + b : -1;
        model_load_batch(m, va, idx);
        int cc = 0, n = 0;
        model_forward(m, 0, &cc, &n);
        correct += cc;
        counted += n;
    }
    *val_acc = counted ? (double)correct / counted : NAN;
    if (checkpoint && checkpoint[0])
        fprintf(stderr, "lra approx: loaded %s (%s %s, seq_len %d, best-validation weights of step %ld): val accuracy %.2f%%\n",
                checkpoint, c->task.name, c->attn_label, c->task.seq_len, m->step, 100 * *val_acc);
    else
        fprintf(stderr, "lra approx: trained %s (%s, seq_len %d) for %d steps in %.1f s: last loss %.4f, val accuracy "
                "%.2f%%\n", c->task.name, c->attn_label, c->task.seq_len, steps, lra_now() - t0, loss, 100 * *val_acc);

    in->Lc = m->L, in->B = n_seq, in->H = m->H, in->N = m->N, in->Dh = m->Dh;
    size_t per = approx_layer_floats(in);
    in->q = xmalloc(sizeof(float) * per * in->Lc);
    in->k = xmalloc(sizeof(float) * per * in->Lc);
    in->v = xmalloc(sizeof(float) * per * in->Lc);
    if (att) *att = xmalloc(sizeof(float) * per * in->Lc);
    for (int l = 0; l < in->Lc; l++) { /* (Be,H,N,Dh): the first n_seq sequences are contiguous */
        memcpy(in->q + per * l, m->act[l].q, sizeof(float) * per);
        memcpy(in->k + per * l, m->act[l].k, sizeof(float) * per);
        memcpy(in->v + per * l, m->act[l].v, sizeof(float) * per);
        if (att) memcpy(*att + per * l, m->act[l].att, sizeof(float) * per);
    }
    in->mask = xmalloc((size_t)n_seq * in->N);
    memcpy(in->mask, m->mask, (size_t)n_seq * in->N);
    in->ops = m->attn[0].ops;
    memcpy(in->params, m->attn[0].params, in->ops->params_size);
    in->nw = in->ops->n_weights ? in->ops->n_weights(m->attn[0].params, &m->attn[0].shape) : 0;
    if (in->nw) {
        in->w = xmalloc(sizeof(float) * in->nw * in->Lc);
        for (int l = 0; l < in->Lc; l++) memcpy(in->w + in->nw * l, m->attn[l].w, sizeof(float) * in->nw);
    }
    rc = 0;
done:
    free(perm);
    free(idx);
    model_free(m);
    free(m);
    for (int i = 0; i < N_SPLITS; i++) task_split_free(&splits[i]);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * One mechanism on one layer of inputs */

int approx_forward(const attn_ops *ops, const void *params, const approx_inputs *in, int layer, uint64_t seed,
                   float *out, char *err, size_t errlen) {
    return approx_forward_w(ops, params, in, layer, seed, NULL, out, err, errlen);
}

int approx_forward_w(const attn_ops *ops, const void *params, const approx_inputs *in, int layer, uint64_t seed,
                     const float *w, float *out, char *err, size_t errlen) {
    attn_shape s = {.B = in->B, .H = in->H, .N = in->N, .Nk = in->N, .Dh = in->Dh, .causal = 0, .layer = layer,
                    .n_layers = in->Lc, .max_len = in->N};
    char e2[512];
    if (ops->validate && ops->validate(params, &s, e2, sizeof e2)) return lra_errorf(err, errlen, "%s", e2);
    attn_layer L;
    memset(&L, 0, sizeof L);
    L.ops = ops;
    L.params = params;
    L.shape = s;
    L.seed = seed;
    size_t nw = ops->n_weights ? ops->n_weights(params, &s) : 0;
    size_t sb = ops->state_bytes ? ops->state_bytes(params, &s) : 0;
    size_t cb = ops->cache_bytes ? ops->cache_bytes(params, &s) : 0;
    size_t xb = ops->scratch_bytes ? ops->scratch_bytes(params, &s, lra_threads()) : 0;
    if (nw) {
        L.w = xcalloc(nw, sizeof(float));
        L.dw = xcalloc(nw, sizeof(float));
        rng_t r = rng_make(seed, rng_substream(RNG_INIT, (uint64_t)layer, 0xA990));
        if (w) memcpy(L.w, w, sizeof(float) * nw);
        else if (ops->init) ops->init(&L, &r);
    }
    L.state = sb ? xcalloc(1, sb) : NULL;
    L.cache = cb ? xmalloc(cb) : NULL;
    L.scratch = xb ? xmalloc(xb) : NULL;
    size_t off = approx_layer_floats(in) * (size_t)layer;
    if (ops->begin) ops->begin(&L);
    ops->forward(&L, in->q + off, in->k + off, in->v + off, in->mask, out);
    free(L.w);
    free(L.dw);
    free(L.state);
    free(L.cache);
    free(L.scratch);
    return 0;
}

static void sq_sums(const float *x, const float *ref, int B, int H, int N, int Dh, const uint8_t *mask, double *num,
                    double *den) {
    double a = 0, b = 0;
    for (int bb = 0; bb < B; bb++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < N; i++) {
                if (mask && !mask[(size_t)bb * N + i]) continue;
                size_t o = (((size_t)bb * H + h) * N + i) * Dh;
                for (int d = 0; d < Dh; d++) {
                    double e = (double)x[o + d] - (double)ref[o + d];
                    a += e * e;
                    b += (double)ref[o + d] * ref[o + d];
                }
            }
    *num += a;
    *den += b;
}

double approx_rel_error(const float *x, const float *ref, int B, int H, int N, int Dh, const uint8_t *mask) {
    double num = 0, den = 0;
    sq_sums(x, ref, B, H, N, Dh, mask, &num, &den);
    if (den == 0) return num == 0 ? 0.0 : INFINITY;
    return sqrt(num / den);
}

/* ---------------------------------------------------------------------------------------------
 * Spectrum */

/* LAPACK (bundled with OpenBLAS). The trailing size_t is gfortran's hidden length of jobz; a C
 * translation of LAPACK ignores it (an extra argument is harmless in the x86-64 and AArch64 ABIs). */
extern void dgesdd_(const char *jobz, const int *m, const int *n, double *a, const int *lda, double *s, double *u,
                    const int *ldu, double *vt, const int *ldvt, double *work, const int *lwork, int *iwork, int *info,
                    size_t jobz_len);

int approx_singular_values(const double *A, int m, int n, double *s) {
    int k = LRA_MIN(m, n), info = 0, lwork = -1, one = 1;
    /* row-major A is column-major A^T (n x m): same singular values */
    double *a = xmalloc(sizeof(double) * (size_t)m * n), wq = 0, dummy = 0;
    memcpy(a, A, sizeof(double) * (size_t)m * n);
    int *iwork = xmalloc(sizeof(int) * (size_t)(8 * (k > 0 ? k : 1)));
    int rows = n, cols = m, lda = n > 1 ? n : 1;
    dgesdd_("N", &rows, &cols, a, &lda, s, &dummy, &one, &dummy, &one, &wq, &lwork, iwork, &info, 1);
    if (info == 0) {
        lwork = (int)wq + 1;
        double *work = xmalloc(sizeof(double) * (size_t)lwork);
        dgesdd_("N", &rows, &cols, a, &lda, s, &dummy, &one, &dummy, &one, work, &lwork, iwork, &info, 1);
        free(work);
    }
    free(iwork);
    free(a);
    return info;
}

int approx_attention_matrix(const approx_inputs *in, int layer, int b, int h, double *P) {
    const int N = in->N, Dh = in->Dh;
    size_t base = approx_layer_floats(in) * (size_t)layer + ((size_t)b * in->H + h) * N * Dh;
    const float *q = in->q + base, *k = in->k + base;
    int *pos = xmalloc(sizeof(int) * (size_t)N), n = 0;
    for (int i = 0; i < N; i++)
        if (!in->mask || in->mask[(size_t)b * N + i]) pos[n++] = i;
    double scale = 1.0 / sqrt((double)Dh);
    for (int a = 0; a < n; a++) {
        double *row = P + (size_t)a * n, mx = -INFINITY, sum = 0;
        const float *qi = q + (size_t)pos[a] * Dh;
        for (int c = 0; c < n; c++) {
            const float *kj = k + (size_t)pos[c] * Dh;
            double d = 0;
            for (int t = 0; t < Dh; t++) d += (double)qi[t] * kj[t];
            row[c] = d * scale;
            if (row[c] > mx) mx = row[c];
        }
        for (int c = 0; c < n; c++) sum += row[c] = exp(row[c] - mx);
        for (int c = 0; c < n; c++) row[c] /= sum;
    }
    free(pos);
    return n;
}

/* ---------------------------------------------------------------------------------------------
 * Config */

#define AX_MAX_ENTRIES 48
#define AX_MAX_VALUES 32
#define AX_MAX_SEEDS 32
#define AX_MAX_SETS 32

typedef struct {
    int enabled;
    int seq_len, d_head, n_heads, batch;
    float logit_std;
} ax_random;

typedef struct {
    char config[512];
    char checkpoint[512];
    int steps;
    int sequences;
} ax_capture;

typedef struct {
    int top_k;
    int sequences;
} ax_spectrum;

static const param_def random_schema[] = {
    P_BOOL(ax_random, enabled, "true", "study random Gaussian inputs"),
    P_INT(ax_random, seq_len, "512", 2, 65536, "sequence length N of the random inputs"),
    P_INT(ax_random, d_head, "32", 1, 1024, "head size Dh"),
    P_INT(ax_random, n_heads, "4", 1, 256, "heads H"),
    P_INT(ax_random, batch, "1", 1, 1024, "sequences B"),
    P_FLOAT(ax_random, logit_std, "1", 0, 100,
            "q and k entries N(0, logit_std), v entries N(0, 1): the logits q.k/sqrt(Dh) have std logit_std; a list "
            "gives one input set per value"),
};

static const param_def capture_schema[] = {
    P_STRING(ax_capture, config, "",
             "run config (relative to this file) whose first run is trained in process and captured; \"\" = none"),
    P_STRING(ax_capture, checkpoint, "",
             "checkpoint of that run config (relative to the working directory) to load instead of training; \"\" = train"),
    P_INT(ax_capture, steps, "300", 0, 100000000, "training steps before capturing (overrides train.steps)"),
    P_INT(ax_capture, sequences, "4", 1, 4096, "validation sequences whose q, k, v are captured"),
};

static const param_def spectrum_schema[] = {
    P_INT(ax_spectrum, top_k, "128", 1, 1 << 20, "report the energy share of the top_k singular values"),
    P_INT(ax_spectrum, sequences, "4", 0, 4096, "sequences per layer and head whose P is decomposed (0 = no spectrum)"),
};

typedef struct {
    const attn_ops *ops;
    attn_params_buf params; /* the fixed keys set, the knob at its default */
    const param_def *knob;
    int n_values;
    int values[AX_MAX_VALUES];
    char variant[160]; /* "orthogonal=false" (the fixed keys written in the config), or "" */
    int line;
} ax_entry;

typedef struct {
    char name[64], path[512], dir[512];
    int seeds[AX_MAX_SEEDS], n_seeds;
    ax_random random;
    float logit_stds[AX_MAX_VALUES]; /* random.logit_std: one random input set per value */
    int n_logit_stds;
    ax_capture capture;
    char sets[AX_MAX_SETS][256];
    int n_sets;
    ax_spectrum spectrum;
    ax_entry entries[AX_MAX_ENTRIES];
    int n_entries;
} ax_config;

typedef struct {
    const char *path;
    yaml_document_t *doc;
    char *err;
    size_t errlen;
} ax_loader;

static int ax_errat(ax_loader *X, const yaml_node_t *nd, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int ax_errat(ax_loader *X, const yaml_node_t *nd, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return lra_errorf(X->err, X->errlen, "%s:%zu:%zu: %s", X->path, nd ? nd->start_mark.line + 1 : 0,
                      nd ? nd->start_mark.column + 1 : 0, msg);
}

static const char *scalar(const yaml_node_t *n) {
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

static int set_key(ax_loader *X, const param_def *s, int ns, void *obj, const char *sec, const yaml_node_t *k,
                   const yaml_node_t *v) {
    const char *key = scalar(k);
    const param_def *d = schema_find(s, ns, key);
    if (!d) {
        const char *near = schema_nearest(s, ns, key);
        if (near) return ax_errat(X, k, "unknown key '%s' in %s (did you mean '%s'?)", key, sec, near);
        return ax_errat(X, k, "unknown key '%s' in %s", key, sec);
    }
    const char *val = scalar(v);
    if (!val) return ax_errat(X, v, "%s.%s: expected a single value", sec, key);
    char e2[512];
    if (schema_set(d, obj, val, e2, sizeof e2)) return ax_errat(X, v, "%s.%s: %s", sec, key, e2);
    return 0;
}

static int load_section(ax_loader *X, yaml_node_t *map, const param_def *s, int ns, void *obj, const char *sec,
                        ax_config *cfg) {
    if (map->type != YAML_MAPPING_NODE) return ax_errat(X, map, "%s: expected a mapping of keys", sec);
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(X->doc, p->key), *v = yaml_document_get_node(X->doc, p->value);
        if (!scalar(k)) return ax_errat(X, k, "%s: keys must be plain names", sec);
        if (cfg && !strcmp(sec, "random") && !strcmp(scalar(k), "logit_std") && v->type == YAML_SEQUENCE_NODE) {
            const param_def *d = schema_find(s, ns, "logit_std");
            cfg->n_logit_stds = 0;
            for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
                yaml_node_t *e = yaml_document_get_node(X->doc, *it);
                if (set_key(X, s, ns, obj, sec, k, e)) return -1;
                if (cfg->n_logit_stds >= AX_MAX_VALUES)
                    return ax_errat(X, e, "random.logit_std: at most %d values", AX_MAX_VALUES);
                memcpy(&cfg->logit_stds[cfg->n_logit_stds++], (char *)obj + d->offset, sizeof(float));
            }
            if (!cfg->n_logit_stds) return ax_errat(X, v, "random.logit_std: empty list");
            continue;
        }
        if (cfg && !strcmp(sec, "capture") && !strcmp(scalar(k), "set")) { /* overrides of the run config */
            if (v->type != YAML_SEQUENCE_NODE) return ax_errat(X, v, "capture.set: expected a list of \"KEY=VALUE\"");
            for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
                yaml_node_t *e = yaml_document_get_node(X->doc, *it);
                if (!scalar(e) || !strchr(scalar(e), '='))
                    return ax_errat(X, e, "capture.set: expected \"KEY=VALUE\" strings");
                if (cfg->n_sets >= AX_MAX_SETS) return ax_errat(X, e, "capture.set: at most %d overrides", AX_MAX_SETS);
                snprintf(cfg->sets[cfg->n_sets++], sizeof cfg->sets[0], "%s", scalar(e));
            }
            continue;
        }
        if (set_key(X, s, ns, obj, sec, k, v)) return -1;
    }
    return 0;
}

static int load_entry(ax_loader *X, yaml_node_t *map, ax_entry *E) {
    if (map->type != YAML_MAPPING_NODE)
        return ax_errat(X, map, "mechanisms: expected a mapping like {name: performer, features: [16, 64]}");
    memset(E, 0, sizeof *E);
    E->line = (int)map->start_mark.line + 1;
    yaml_node_t *name = NULL;
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++)
        if (scalar(yaml_document_get_node(X->doc, p->key)) &&
            !strcmp(scalar(yaml_document_get_node(X->doc, p->key)), "name"))
            name = yaml_document_get_node(X->doc, p->value);
    if (!name || !scalar(name)) return ax_errat(X, map, "mechanisms: entry without a `name:`");
    E->ops = attn_find(scalar(name));
    if (!E->ops) {
        char names[1024] = "";
        for (int i = 0; i < attn_registry_count; i++) {
            size_t l = strlen(names);
            snprintf(names + l, sizeof names - l, "%s%s", i ? ", " : "", attn_registry[i]->name);
        }
        return ax_errat(X, name, "unknown attention mechanism '%s' (mechanisms: %s)", scalar(name), names);
    }
    const attn_ops *ops = E->ops;
    schema_defaults(ops->schema, ops->n_schema, E->params.bytes);
    char where[64];
    snprintf(where, sizeof where, "mechanisms (%s)", ops->name);
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(X->doc, p->key), *v = yaml_document_get_node(X->doc, p->value);
        const char *key = scalar(k);
        if (!key) return ax_errat(X, k, "%s: keys must be plain names", where);
        if (!strcmp(key, "name")) continue;
        if (v->type == YAML_SEQUENCE_NODE) {
            const param_def *d = schema_find(ops->schema, ops->n_schema, key);
            if (!d) return set_key(X, ops->schema, ops->n_schema, E->params.bytes, where, k, v); /* the error */
            if (E->knob) return ax_errat(X, k, "%s: two swept keys ('%s' and '%s'); sweep one knob per entry", where,
                                         E->knob->key, key);
            if (d->type != PT_INT) return ax_errat(X, k, "%s: '%s' is not an integer key; only integer knobs are swept",
                                                   where, key);
            E->knob = d;
            for (yaml_node_item_t *it = v->data.sequence.items.start; it < v->data.sequence.items.top; it++) {
                yaml_node_t *e = yaml_document_get_node(X->doc, *it);
                attn_params_buf tmp = E->params;
                char e2[512];
                if (!scalar(e)) return ax_errat(X, e, "%s.%s: expected integers", where, key);
                if (schema_set(d, tmp.bytes, scalar(e), e2, sizeof e2)) return ax_errat(X, e, "%s.%s: %s", where, key, e2);
                if (E->n_values >= AX_MAX_VALUES) return ax_errat(X, e, "%s.%s: at most %d values", where, key, AX_MAX_VALUES);
                memcpy(&E->values[E->n_values++], tmp.bytes + d->offset, sizeof(int));
            }
            if (!E->n_values) return ax_errat(X, v, "%s.%s: empty list", where, key);
            continue;
        }
        if (set_key(X, ops->schema, ops->n_schema, E->params.bytes, where, k, v)) return -1;
        size_t l = strlen(E->variant);
        snprintf(E->variant + l, sizeof E->variant - l, "%s%s=%s", l ? " " : "", key, scalar(v));
    }
    if (!E->knob)
        return ax_errat(X, map, "%s: no swept key: give the knob as a list, e.g. {name: performer, features: [16, 64]}",
                        where);
    return 0;
}

static int ax_load(ax_config *cfg, const char *path, char *err, size_t errlen) {
    memset(cfg, 0, sizeof *cfg);
    schema_defaults(random_schema, (int)LRA_ARRAY_LEN(random_schema), &cfg->random);
    schema_defaults(capture_schema, (int)LRA_ARRAY_LEN(capture_schema), &cfg->capture);
    schema_defaults(spectrum_schema, (int)LRA_ARRAY_LEN(spectrum_schema), &cfg->spectrum);
    cfg->seeds[0] = 0, cfg->n_seeds = 1;
    snprintf(cfg->path, sizeof cfg->path, "%s", path);
    const char *slash = strrchr(path, '/');
    if (slash) snprintf(cfg->dir, sizeof cfg->dir, "%.*s", (int)(slash - path), path);
    else snprintf(cfg->dir, sizeof cfg->dir, ".");
    const char *base = slash ? slash + 1 : path;
    snprintf(cfg->name, sizeof cfg->name, "%.*s", (int)(strcspn(base, ".")), base);

    FILE *f = fopen(path, "rb");
    if (!f) return lra_errorf(err, errlen, "%s: %s", path, strerror(errno));
    yaml_parser_t parser;
    yaml_document_t doc;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    if (!yaml_parser_load(&parser, &doc)) {
        int rc = lra_errorf(err, errlen, "%s:%zu:%zu: YAML: %s", path, parser.problem_mark.line + 1,
                            parser.problem_mark.column + 1, parser.problem ? parser.problem : "parse error");
        yaml_parser_delete(&parser);
        fclose(f);
        return rc;
    }
    yaml_parser_delete(&parser);
    fclose(f);
    ax_loader X = {path, &doc, err, errlen};
    int rc = 0;
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (!root || root->type != YAML_MAPPING_NODE) {
        rc = ax_errat(&X, root, "expected a mapping with mechanisms: (and name, seeds, random, capture, spectrum)");
        goto out;
    }
    static const char *const top[] = {"name", "seeds", "random", "capture", "spectrum", "mechanisms"};
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start; !rc && p < root->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(&doc, p->key), *v = yaml_document_get_node(&doc, p->value);
        const char *key = scalar(k);
        if (!key) {
            rc = ax_errat(&X, k, "keys must be plain names");
        } else if (!strcmp(key, "name")) {
            if (!scalar(v) || !*scalar(v) || strlen(scalar(v)) >= sizeof cfg->name || strchr(scalar(v), '/'))
                rc = ax_errat(&X, v, "name: expected a short name without '/'");
            else snprintf(cfg->name, sizeof cfg->name, "%s", scalar(v));
        } else if (!strcmp(key, "seeds")) {
            cfg->n_seeds = 0;
            yaml_node_item_t one = p->value, *st = &one, *en = &one + 1;
            if (v->type == YAML_SEQUENCE_NODE) st = v->data.sequence.items.start, en = v->data.sequence.items.top;
            for (yaml_node_item_t *it = st; !rc && it < en; it++) {
                yaml_node_t *e = yaml_document_get_node(&doc, *it);
                char *end;
                long s = scalar(e) ? strtol(scalar(e), &end, 10) : -1;
                if (!scalar(e) || *end || end == scalar(e) || s < 0 || s > 2147483647L)
                    rc = ax_errat(&X, e, "seeds: expected non-negative integers");
                else if (cfg->n_seeds >= AX_MAX_SEEDS) rc = ax_errat(&X, e, "seeds: at most %d", AX_MAX_SEEDS);
                else cfg->seeds[cfg->n_seeds++] = (int)s;
            }
            if (!rc && !cfg->n_seeds) rc = ax_errat(&X, v, "seeds: empty list");
        } else if (!strcmp(key, "random")) {
            rc = load_section(&X, v, random_schema, (int)LRA_ARRAY_LEN(random_schema), &cfg->random, "random", cfg);
        } else if (!strcmp(key, "capture")) {
            rc = load_section(&X, v, capture_schema, (int)LRA_ARRAY_LEN(capture_schema), &cfg->capture, "capture", cfg);
        } else if (!strcmp(key, "spectrum")) {
            rc = load_section(&X, v, spectrum_schema, (int)LRA_ARRAY_LEN(spectrum_schema), &cfg->spectrum, "spectrum",
                              NULL);
        } else if (!strcmp(key, "mechanisms")) {
            if (v->type != YAML_SEQUENCE_NODE) {
                rc = ax_errat(&X, v, "mechanisms: expected a list of entries");
                continue;
            }
            for (yaml_node_item_t *it = v->data.sequence.items.start; !rc && it < v->data.sequence.items.top; it++) {
                if (cfg->n_entries >= AX_MAX_ENTRIES) {
                    rc = ax_errat(&X, v, "mechanisms: at most %d entries", AX_MAX_ENTRIES);
                    break;
                }
                rc = load_entry(&X, yaml_document_get_node(&doc, *it), &cfg->entries[cfg->n_entries++]);
            }
        } else {
            int best = 99;
            const char *near = NULL;
            for (size_t i = 0; i < LRA_ARRAY_LEN(top); i++) {
                int d = lra_edit_distance(key, top[i]);
                if (d < best) best = d, near = top[i];
            }
            if (best <= 3) rc = ax_errat(&X, k, "unknown top-level key '%s' (did you mean '%s'?)", key, near);
            else rc = ax_errat(&X, k, "unknown top-level key '%s' (expected name, seeds, random, capture, spectrum, "
                                      "mechanisms)", key);
        }
    }
    if (!rc && cfg->n_logit_stds == 0) cfg->logit_stds[0] = cfg->random.logit_std, cfg->n_logit_stds = 1;
    if (!rc && cfg->n_entries == 0) rc = ax_errat(&X, root, "mechanisms: no entries");
    if (!rc && !cfg->random.enabled && !cfg->capture.config[0])
        rc = ax_errat(&X, root, "nothing to study: random.enabled is false and capture.config is empty");
out:
    yaml_document_delete(&doc);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * The study */


typedef struct {
    FILE *f;
    char path[1100];
} ofile;

static int of_open(ofile *o, const char *dir, const char *name, char *err, size_t errlen) {
    snprintf(o->path, sizeof o->path, "%s/%s", dir, name);
    o->f = fopen(o->path, "w");
    if (!o->f) return lra_errorf(err, errlen, "%s: %s", o->path, strerror(errno));
    return 0;
}

static int of_close(ofile *o, char *err, size_t errlen) {
    if (!o->f) return 0;
    int bad = ferror(o->f);
    if (fclose(o->f) || bad) {
        o->f = NULL;
        return lra_errorf(err, errlen, "%s: write error", o->path);
    }
    o->f = NULL;
    return 0;
}

static void csv_row(FILE *f, int n, ...) {
    const char *fields[32];
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n && i < 32; i++) fields[i] = va_arg(ap, const char *);
    va_end(ap);
    char *line = csv_format_row(fields, n);
    fputs(line, f);
    free(line);
}

static const char *fmt_g(char *buf, double v) {
    snprintf(buf, 32, "%.6g", v);
    return buf;
}
static const char *fmt_d(char *buf, long v) {
    snprintf(buf, 32, "%ld", v);
    return buf;
}

/* Reference params for an entry: the function the mechanism approximates (see the file comment). */
static const attn_ops *reference_of(const ax_entry *E, int N, attn_params_buf *rp, const char **what) {
    if (!strcmp(E->ops->name, "reformer")) {
        *rp = E->params;
        char e2[128], nb[32];
        snprintf(nb, sizeof nb, "%d", N);
        const param_def *d;
        if ((d = schema_find(E->ops->schema, E->ops->n_schema, "n_hashes"))) schema_set(d, rp->bytes, "1", e2, sizeof e2);
        if ((d = schema_find(E->ops->schema, E->ops->n_schema, "n_buckets"))) schema_set(d, rp->bytes, "1", e2, sizeof e2);
        if ((d = schema_find(E->ops->schema, E->ops->n_schema, "bucket_size")))
            schema_set(d, rp->bytes, nb, e2, sizeof e2);
        *what = "reformer without hashing (full shared-QK attention)";
        return E->ops;
    }
    schema_defaults(attn_softmax.schema, attn_softmax.n_schema, rp->bytes);
    *what = "softmax";
    return &attn_softmax;
}

/* Mean normalised entropy H(row)/log(n) and mean max probability of the exact attention rows. */
static void attention_stats(const approx_inputs *in, double *ent, double *pmax) {
    double se = 0, sm = 0;
    long rows = 0;
    double *P = xmalloc(sizeof(double) * (size_t)in->N * in->N);
    for (int l = 0; l < in->Lc; l++)
        for (int b = 0; b < in->B; b++)
            for (int h = 0; h < in->H; h++) {
                int n = approx_attention_matrix(in, l, b, h, P);
                if (n < 2) continue;
                for (int i = 0; i < n; i++) {
                    double e = 0, mx = 0;
                    for (int j = 0; j < n; j++) {
                        double p = P[(size_t)i * n + j];
                        if (p > 0) e -= p * log(p);
                        if (p > mx) mx = p;
                    }
                    se += e / log((double)n);
                    sm += mx;
                    rows++;
                }
            }
    free(P);
    *ent = rows ? se / rows : NAN;
    *pmax = rows ? sm / rows : NAN;
}

typedef struct {
    double mean, sd, lo, hi;
    int n;
} ax_stat;

static ax_stat stats_of(const double *x, int n) {
    ax_stat s = {0, 0, INFINITY, -INFINITY, n};
    for (int i = 0; i < n; i++) {
        s.mean += x[i];
        if (x[i] < s.lo) s.lo = x[i];
        if (x[i] > s.hi) s.hi = x[i];
    }
    s.mean /= n > 0 ? n : 1;
    for (int i = 0; i < n; i++) s.sd += (x[i] - s.mean) * (x[i] - s.mean);
    s.sd = n > 1 ? sqrt(s.sd / (n - 1)) : 0;
    return s;
}

/* Errors of every entry x value x seed on one input source. inputs[si]: the inputs of seed si
 * (random: one set per seed; trained: the same captured set for all). res: (entries, values, seeds). */
static int run_errors(const ax_config *cfg, approx_inputs *const *inputs, double *res, int *trained_w, char *err,
                      size_t errlen) {
    const approx_inputs *in0 = inputs[0];
    size_t per = approx_layer_floats(in0);
    float *ref = xmalloc(sizeof(float) * per * in0->Lc), *out = xmalloc(sizeof(float) * per);
    int rc = 0;
    for (int e = 0; e < cfg->n_entries && !rc; e++) {
        const ax_entry *E = &cfg->entries[e];
        attn_params_buf rp;
        const char *what;
        const attn_ops *rops = reference_of(E, in0->N, &rp, &what);
        const approx_inputs *last = NULL;
        for (int si = 0; si < cfg->n_seeds && !rc; si++) {
            const approx_inputs *in = inputs[si];
            if (in != last) { /* exact reference of every layer of these inputs */
                for (int l = 0; l < in->Lc && !rc; l++)
                    rc = approx_forward(rops, rp.bytes, in, l, 0, ref + per * l, err, errlen);
                last = in;
            }
            for (int vi = 0; vi < E->n_values && !rc; vi++) {
                attn_params_buf p = E->params;
                memcpy(p.bytes + E->knob->offset, &E->values[vi], sizeof(int));
                /* the captured model's own mechanism and parameters: use its trained weights */
                attn_shape s = {.B = in->B, .H = in->H, .N = in->N, .Nk = in->N, .Dh = in->Dh, .n_layers = in->Lc,
                                .max_len = in->N};
                int tw = in->w && in->ops == E->ops && !memcmp(p.bytes, in->params, E->ops->params_size) &&
                         E->ops->n_weights && E->ops->n_weights(p.bytes, &s) == in->nw;
                trained_w[(size_t)e * AX_MAX_VALUES + vi] = tw;
                double num = 0, den = 0;
                for (int l = 0; l < in->Lc && !rc; l++) {
                    char e2[512];
                    if (approx_forward_w(E->ops, p.bytes, in, l, (uint64_t)cfg->seeds[si], tw ? in->w + in->nw * l : NULL,
                                         out, e2, sizeof e2)) {
                        rc = lra_errorf(err, errlen, "%s:%d: %s with %s=%d: %s", cfg->path, E->line, E->ops->name,
                                        E->knob->key, E->values[vi], e2);
                        break;
                    }
                    sq_sums(out, ref + per * l, in->B, in->H, in->N, in->Dh, in->mask, &num, &den);
                }
                res[((size_t)e * AX_MAX_VALUES + vi) * AX_MAX_SEEDS + si] = den > 0 ? sqrt(num / den) : 0.0;
            }
        }
    }
    free(ref);
    free(out);
    return rc;
}

/* Spectrum of one source: rows in spectrum.csv, the mean curve per layer into curve[l][k-1] (and its
 * std into curve_sd), k = 1..N. */
static int run_spectrum(const ax_config *cfg, const approx_inputs *in, const char *src, const char *ls, FILE *csv,
                        double *curve,
                        double *curve_sd, double *share_q, char *err, size_t errlen) {
    int N = in->N, nseq = LRA_MIN(cfg->spectrum.sequences, in->B);
    double *P = xmalloc(sizeof(double) * (size_t)N * N), *s = xmalloc(sizeof(double) * (size_t)N);
    double *acc2 = xcalloc((size_t)N, sizeof(double));
    double sq = 0;
    int nq = 0;
    for (int l = 0; l < in->Lc; l++) {
        double *cv = curve + (size_t)l * N, *cs = curve_sd + (size_t)l * N;
        memset(cv, 0, sizeof(double) * (size_t)N);
        memset(acc2, 0, sizeof(double) * (size_t)N);
        int cnt = 0;
        for (int h = 0; h < in->H; h++)
            for (int b = 0; b < nseq; b++) {
                int n = approx_attention_matrix(in, l, b, h, P);
                if (n < 1) continue;
                int info = approx_singular_values(P, n, n, s);
                if (info) {
                    free(P), free(s), free(acc2);
                    return lra_errorf(err, errlen, "spectrum: LAPACK dgesdd failed (info %d) on layer %d head %d", info,
                                      l, h);
                }
                double tot = 0, c = 0;
                for (int i = 0; i < n; i++) tot += s[i];
                int top = LRA_MIN(cfg->spectrum.top_k, n), quarter = LRA_MAX(1, n / 4), k90 = n;
                double e_top = 0, e_q = 0;
                for (int i = 0; i < N; i++) {
                    if (i < n) c += s[i];
                    double share = i < n ? c / tot : 1.0;
                    if (i + 1 == top) e_top = share;
                    if (i + 1 == quarter) e_q = share;
                    if (share >= 0.9 && k90 == n && i < n) k90 = i + 1;
                    cv[i] += share;
                    acc2[i] += share * share;
                }
                sq += e_q;
                nq++;
                char a[32], bb[32], cc[32], d[32], e[32], f[32], g[32], hh[32], ii[32];
                csv_row(csv, 11, src, ls, fmt_d(a, l), fmt_d(bb, h), fmt_d(cc, b), fmt_d(d, n), fmt_d(e, top),
                        fmt_g(f, e_top), fmt_g(g, e_q), fmt_d(hh, k90), fmt_g(ii, s[0] / tot));
                cnt++;
            }
        for (int i = 0; i < N; i++) {
            double m = cnt ? cv[i] / cnt : NAN;
            double v = cnt > 1 ? (acc2[i] - cnt * m * m) / (cnt - 1) : 0;
            cv[i] = m;
            cs[i] = v > 0 ? sqrt(v) : 0;
        }
    }
    *share_q = nq ? sq / nq : NAN;
    free(P), free(s), free(acc2);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Charts */

static void gp_str(FILE *f, const char *s) {
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'') fputs("''", f);
        else fputc((unsigned char)*s < 32 ? ' ' : *s, f);
    }
    fputc('\'', f);
}

static void gp_head(FILE *f, const char *base, const char *what, int w, int h) {
    fprintf(f,
            "# %s.gp - %s. Written by `lra approx`.\n"
            "# Render: cd into this directory, then `gnuplot %s.gp` -> %s.png and %s.svg.\n"
            "set encoding utf8\n"
            "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) { "
            "set terminal pngcairo noenhanced size %d,%d "
            "} else { set terminal png noenhanced size %d,%d }\n"
            "set output '%s.png'\n"
            "set grid\n",
            base, what, base, base, base, w, h, w, h, base);
}

/* BASE.dat/.gp (approx_random_lsX, approx_trained): one panel per (mechanism, knob), one line per variant, mean with min-max bars. */
/* The multiplot of the error chart: one panel per (mechanism, knob), a line per entry. Written once
 * per terminal (gnuplot's multiplot cannot be replotted). */
static void write_panels(FILE *f, const ax_config *cfg, const char *base, const char *title, int rows, int cols,
                         int n_panels, const int *first, const int *panel_of) {
    fprintf(f, "set multiplot layout %d,%d title ", rows, cols);
    gp_str(f, title);
    fprintf(f, "\n");
    for (int p = 0; p < n_panels; p++) {
        const ax_entry *F = &cfg->entries[first[p]];
        char t[128];
        snprintf(t, sizeof t, "%s: %s", F->ops->name, F->knob->key);
        fprintf(f, "set title ");
        gp_str(f, t);
        fprintf(f, "\nset xlabel ");
        gp_str(f, F->knob->key);
        fprintf(f, "\nplot ");
        int k = 0;
        for (int e = 0; e < cfg->n_entries; e++) {
            if (panel_of[e] != p) continue;
            fprintf(f, "%s'%s.dat' index %d using 1:2:4:5 with yerrorlines lw 2 title ", k++ ? ", \\\n     " : "",
                    base, e);
            gp_str(f, cfg->entries[e].variant[0] ? cfg->entries[e].variant : "default");
        }
        fprintf(f, "\n");
    }
}

static int write_error_chart(const ax_config *cfg, const char *dir, const char *base, const ax_stat *st,
                             const char *title, char *err, size_t errlen) {
    char name[80];
    ofile d = {0}, g = {0};
    snprintf(name, sizeof name, "%s.dat", base);
    if (of_open(&d, dir, name, err, errlen)) return -1;
    for (int e = 0; e < cfg->n_entries; e++) {
        const ax_entry *E = &cfg->entries[e];
        fprintf(d.f, "# series: %s %s %s\n# %s mean_rel_error std min max\n", E->ops->name, E->knob->key, E->variant,
                E->knob->key);
        for (int v = 0; v < E->n_values; v++) {
            const ax_stat *s = &st[(size_t)e * AX_MAX_VALUES + v];
            fprintf(d.f, "%d %.6g %.6g %.6g %.6g\n", E->values[v], s->mean, s->sd, s->lo, s->hi);
        }
        fprintf(d.f, "\n\n");
    }
    if (of_close(&d, err, errlen)) return -1;
    /* panels: distinct (mechanism, knob) in entry order */
    int panel_of[AX_MAX_ENTRIES], n_panels = 0, first[AX_MAX_ENTRIES];
    for (int e = 0; e < cfg->n_entries; e++) {
        panel_of[e] = -1;
        for (int p = 0; p < n_panels; p++) {
            const ax_entry *F = &cfg->entries[first[p]];
            if (F->ops == cfg->entries[e].ops && F->knob == cfg->entries[e].knob) panel_of[e] = p;
        }
        if (panel_of[e] < 0) first[n_panels] = e, panel_of[e] = n_panels++;
    }
    int cols = n_panels < 3 ? n_panels : 3, rows = LRA_CEIL_DIV(n_panels, cols);
    snprintf(name, sizeof name, "%s.gp", base);
    if (of_open(&g, dir, name, err, errlen)) return -1;
    int width = LRA_MAX(520 * cols, 1040), height = 420 * rows + 60;
    gp_head(g.f, base, "relative error of approximate attention vs exact, against each knob", width, height);
    fprintf(g.f, "set logscale xy\nset format y '%%g'\nset key top right\n"
                 "set ylabel '||A - softmax||_F / ||softmax||_F'\n");
    write_panels(g.f, cfg, base, title, rows, cols, n_panels, first, panel_of);
    fprintf(g.f, "unset multiplot\n"
                 "set terminal svg noenhanced size %d,%d dynamic background rgb 'white'\n"
                 "set output '%s.svg'\n",
            width, height, base);
    /* multiplot cannot replot: run the panels again for the SVG */
    write_panels(g.f, cfg, base, title, rows, cols, n_panels, first, panel_of);
    fprintf(g.f, "unset multiplot\nunset output\n");
    return of_close(&g, err, errlen);
}

/* Full path of an executable on PATH into buf, or 0 when absent. */
static int find_on_path(const char *prog, char *buf, size_t n) {
    const char *p = getenv("PATH");
    if (!p) p = "/usr/local/bin:/usr/bin:/bin";
    for (;;) {
        const char *e = strchr(p, ':');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        snprintf(buf, n, "%.*s/%s", (int)(len ? len : 1), len ? p : ".", prog);
        struct stat st;
        if (stat(buf, &st) == 0 && S_ISREG(st.st_mode) && access(buf, X_OK) == 0) return 1;
        if (!e) return 0;
        p = e + 1;
    }
}

/* Render dir/base.gp with gnuplot (stdout to /dev/null, stderr to dir/gnuplot.log). 0 on success. */
static int render(const char *gnuplot, const char *dir, const char *base) {
    char script[96], log[1100];
    snprintf(script, sizeof script, "%s.gp", base);
    snprintf(log, sizeof log, "%s/gnuplot.log", dir);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int lfd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (chdir(dir) < 0) _exit(126);
        int nfd = open("/dev/null", O_RDWR);
        if (nfd >= 0) dup2(nfd, 0), dup2(nfd, 1);
        if (lfd >= 0) dup2(lfd, 2);
        char *argv[] = {(char *)"gnuplot", script, NULL};
        execv(gnuplot, argv);
        _exit(127);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* ---------------------------------------------------------------------------------------------
 * Command */

static void usage_approx(FILE *f) {
    fprintf(f, "usage: lra approx CONFIG [options]\n"
               "\n"
               "Relative error ||A(Q,K,V) - softmax(Q,K,V)||_F / ||softmax(Q,K,V)||_F of approximate attention\n"
               "mechanisms against their knob (features, k, window, n_hashes, landmarks, ...), on random Gaussian\n"
               "inputs and on q, k, v captured from a model trained in process; and the singular value spectrum of\n"
               "the trained model's softmax attention matrices (Linformer, Figure 1). See configs/approx.yaml.\n"
               "\n"
               "  -o, --out DIR        results directory (default results/<name>)\n"
               "  -j, --threads N      OpenMP threads (default: all cores)\n"
               "      --no-plot        do not render charts (the .gp and .dat files are still written)\n"
               "  -h, --help           this help\n");
}

int cmd_approx(int argc, char **argv) {
    static const struct option opts[] = {{"out", required_argument, 0, 'o'},
                                         {"threads", required_argument, 0, 'j'},
                                         {"no-plot", no_argument, 0, 'P'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *out_arg = NULL;
    int no_plot = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:j:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out_arg = optarg; break;
        case 'j': {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (end == optarg || *end || v < 1 || v > 4096) {
                fprintf(stderr, "lra: error: --threads: expected a positive integer, got '%s'\n", optarg);
                return 2;
            }
            lra_set_threads((int)v);
            break;
        }
        case 'P': no_plot = 1; break;
        case 'h': usage_approx(stdout); return 0;
        default: usage_approx(stderr); return 2;
        }
    }
    if (optind + 1 != argc) {
        fprintf(stderr, "lra: error: approx: %s\n", optind >= argc ? "no config file given" : "expected one config file");
        usage_approx(stderr);
        return 2;
    }
    char err[2048];
    ax_config *cfg = xcalloc(1, sizeof *cfg);
    if (ax_load(cfg, argv[optind], err, sizeof err)) {
        fprintf(stderr, "lra: error: %s\n", err);
        free(cfg);
        return 2;
    }
    run_cfg rc_model;
    memset(&rc_model, 0, sizeof rc_model);
    if (cfg->capture.config[0]) {
        char path[1100];
        if (cfg->capture.config[0] == '/') snprintf(path, sizeof path, "%s", cfg->capture.config);
        else snprintf(path, sizeof path, "%s/%s", cfg->dir, cfg->capture.config);
        const char *sets[AX_MAX_SETS + 1];
        char steps[64];
        int ns = 0;
        for (int i = 0; i < cfg->n_sets; i++) sets[ns++] = cfg->sets[i];
        snprintf(steps, sizeof steps, "train.steps=%d", cfg->capture.steps > 0 ? cfg->capture.steps : 1);
        sets[ns++] = steps;
        run_plan plan;
        memset(&plan, 0, sizeof plan);
        char e2[1800];
        if (config_load(&plan, path, sets, ns, e2, sizeof e2) || plan.n_runs < 1) {
            fprintf(stderr, "lra: error: %s: capture.config: %s\n", cfg->path, plan.n_runs < 1 && !e2[0] ? "no runs" : e2);
            config_plan_free(&plan);
            free(cfg);
            return 2;
        }
        rc_model = plan.runs[0];
        config_plan_free(&plan);
    }

    char dir[600];
    snprintf(dir, sizeof dir, "%s", out_arg ? out_arg : "");
    if (!out_arg) snprintf(dir, sizeof dir, "results/%s", cfg->name);
    if (lra_move_aside_if(dir, "approx.csv", err, sizeof err)) {
        fprintf(stderr, "lra: error: %s\n", err);
        free(cfg);
        return 1;
    }
    {
        char tmp[600];
        snprintf(tmp, sizeof tmp, "%s", dir);
        for (char *p = tmp + 1; *p; p++)
            if (*p == '/') *p = 0, mkdir(tmp, 0755), *p = '/';
        if (mkdir(tmp, 0755) && errno != EEXIST) {
            fprintf(stderr, "lra: error: %s: %s\n", dir, strerror(errno));
            free(cfg);
            return 1;
        }
    }
    double t0 = lra_now();
    int status = 0;
    ofile fa = {0}, fs = {0}, fi = {0}, fsp = {0}, fc = {0};
    char (*spec_series)[64] = NULL; /* names of the spectrum chart's series */
    if (of_open(&fa, dir, "approx.csv", err, sizeof err) || of_open(&fs, dir, "approx_seeds.csv", err, sizeof err) ||
        of_open(&fi, dir, "inputs.csv", err, sizeof err) || of_open(&fsp, dir, "spectrum.csv", err, sizeof err) ||
        of_open(&fc, dir, "spectrum_curve.csv", err, sizeof err)) {
        fprintf(stderr, "lra: error: %s\n", err);
        status = 1;
        goto end;
    }
    csv_row(fa.f, 17, "source", "logit_std", "mechanism", "variant", "knob", "value", "reference", "weights", "seq_len", "n_heads", "d_head",
            "seeds", "rel_error_mean", "rel_error_std", "rel_error_min", "rel_error_max", "version");
    csv_row(fs.f, 8, "source", "logit_std", "mechanism", "variant", "knob", "value", "seed", "rel_error");
    csv_row(fi.f, 10, "source", "seed", "layers", "sequences", "seq_len", "n_heads", "d_head", "logit_std",
            "entropy_norm", "max_prob");
    csv_row(fsp.f, 11, "source", "logit_std", "layer", "head", "sequence", "n", "top_k", "energy_top_k", "energy_quarter", "k90",
            "s1_share");
    csv_row(fc.f, 6, "source", "logit_std", "layer", "k", "cum_share_mean", "cum_share_std");

    printf("lra approx %s: %d mechanism entries, seeds", cfg->path, cfg->n_entries);
    for (int i = 0; i < cfg->n_seeds; i++) printf(" %d", cfg->seeds[i]);
    printf("\n");
    char gnuplot[4096];
    int have_gp = !no_plot && find_on_path("gnuplot", gnuplot, sizeof gnuplot);
    if (!no_plot && !have_gp) fprintf(stderr, "lra: warning: gnuplot not found; writing .gp and .dat files only, "
                                              "install gnuplot-nox to render\n");
    spec_series = xcalloc((size_t)(AX_MAX_VALUES + 1) * MODEL_MAX_LAYERS, sizeof *spec_series);
    int n_spec_series = 0;
    ofile sd = {0};
    if (cfg->spectrum.sequences > 0 && of_open(&sd, dir, "spectrum.dat", err, sizeof err)) {
        fprintf(stderr, "lra: error: %s\n", err);
        status = 1;
        goto end;
    }
    int max_spec_n = 1;

    /* sources: one random input set per random.logit_std value, then the captured model */
    int n_rand = cfg->random.enabled ? cfg->n_logit_stds : 0;
    for (int src = 0; src < n_rand + 1 && !status; src++) {
        int is_rand = src < n_rand;
        if (!is_rand && !cfg->capture.config[0]) continue;
        float ls = is_rand ? cfg->logit_stds[src] : 0.0f;
        const char *sname = is_rand ? "random" : "trained";
        char lsb[32] = "", base[64];
        if (is_rand) fmt_g(lsb, ls);
        if (is_rand) snprintf(base, sizeof base, "approx_random_ls%s", lsb);
        else snprintf(base, sizeof base, "approx_trained");
        approx_inputs *sets = xcalloc((size_t)cfg->n_seeds, sizeof *sets);
        approx_inputs *ptr[AX_MAX_SEEDS];
        char title[1400];
        if (is_rand) {
            const ax_random *r = &cfg->random;
            for (int si = 0; si < cfg->n_seeds; si++) {
                approx_inputs_random(&sets[si], r->batch, r->n_heads, r->seq_len, r->d_head, ls,
                                     (uint64_t)cfg->seeds[si]);
                ptr[si] = &sets[si];
            }
            snprintf(title, sizeof title, "random Gaussian inputs: N=%d, H=%d, Dh=%d, q,k ~ N(0,%g), v ~ N(0,1); %d seeds",
                     r->seq_len, r->n_heads, r->d_head, (double)ls, cfg->n_seeds);
        } else {
            double acc;
            if (approx_train_capture(&rc_model, cfg->capture.checkpoint, cfg->capture.steps, cfg->capture.sequences, &sets[0], NULL, &acc, err,
                                     sizeof err)) {
                fprintf(stderr, "lra: error: %s: %s\n", cfg->path, err);
                free(sets);
                status = 1;
                break;
            }
            for (int si = 0; si < cfg->n_seeds; si++) ptr[si] = &sets[0];
            char how[600];
            if (cfg->capture.checkpoint[0]) snprintf(how, sizeof how, "from %s", cfg->capture.checkpoint);
            else snprintf(how, sizeof how, "after %d steps", cfg->capture.steps);
            snprintf(title, sizeof title, "q,k,v of %s (%s) %s, val acc %.1f%%: %d layers, %d seqs, N=%d, "
                     "H=%d, Dh=%d; %d seeds", rc_model.task.name, rc_model.attn_label, how, 100 * acc,
                     sets[0].Lc, sets[0].B, sets[0].N, sets[0].H, sets[0].Dh, cfg->n_seeds);
        }
        const approx_inputs *in0 = ptr[0];
        /* input statistics */
        for (int si = 0; si < (is_rand ? cfg->n_seeds : 1); si++) {
            double ent, pm;
            attention_stats(ptr[si], &ent, &pm);
            char a[32], b[32], cc[32], d[32], e[32], f[32], g[32], h[32], i[32];
            csv_row(fi.f, 10, sname, is_rand ? fmt_d(a, cfg->seeds[si]) : "", fmt_d(b, in0->Lc), fmt_d(cc, in0->B),
                    fmt_d(d, in0->N), fmt_d(e, in0->H), fmt_d(f, in0->Dh), is_rand ? fmt_g(g, ls) : "", fmt_g(h, ent),
                    fmt_g(i, pm));
            if (si == 0)
                printf("%s%s%s inputs: %d layer(s) x %d seq x %d heads, N=%d, Dh=%d; exact attention rows: normalised "
                       "entropy %.3f (1 = uniform), mean max probability %.3f\n",
                       sname, is_rand ? " logit_std=" : "", lsb, in0->Lc, in0->B, in0->H, in0->N, in0->Dh, ent, pm);
        }
        /* errors */
        double *res = xcalloc((size_t)AX_MAX_ENTRIES * AX_MAX_VALUES * AX_MAX_SEEDS, sizeof(double));
        ax_stat *st = xcalloc((size_t)AX_MAX_ENTRIES * AX_MAX_VALUES, sizeof *st);
        int *trained_w = xcalloc((size_t)AX_MAX_ENTRIES * AX_MAX_VALUES, sizeof(int));
        if (run_errors(cfg, ptr, res, trained_w, err, sizeof err)) {
            fprintf(stderr, "lra: error: %s\n", err);
            status = 1;
        }
        if (!status) {
            printf("%-8s %-9s %-14s %-24s %-12s %7s %12s %11s\n", "source", "logit_std", "mechanism", "variant", "knob", "value",
                   "rel_error", "std");
            for (int e = 0; e < cfg->n_entries; e++) {
                const ax_entry *E = &cfg->entries[e];
                attn_params_buf rp;
                const char *what;
                reference_of(E, in0->N, &rp, &what);
                for (int v = 0; v < E->n_values; v++) {
                    const double *x = res + ((size_t)e * AX_MAX_VALUES + v) * AX_MAX_SEEDS;
                    ax_stat s = stats_of(x, cfg->n_seeds);
                    st[(size_t)e * AX_MAX_VALUES + v] = s;
                    char a[32], b[32], cc[32], d[32], f[32], g[32], h[32], i[32], j[32];
                    attn_params_buf pv = E->params;
                    memcpy(pv.bytes + E->knob->offset, &E->values[v], sizeof(int));
                    attn_shape sv = {.B = in0->B, .H = in0->H, .N = in0->N, .Nk = in0->N, .Dh = in0->Dh,
                                     .n_layers = in0->Lc, .max_len = in0->N};
                    const char *wts = trained_w[(size_t)e * AX_MAX_VALUES + v]               ? "trained"
                                      : E->ops->n_weights && E->ops->n_weights(pv.bytes, &sv) ? "init"
                                                                                              : "";
                    csv_row(fa.f, 17, sname, lsb, E->ops->name, E->variant, E->knob->key, fmt_d(a, E->values[v]),
                            what, wts, fmt_d(b, in0->N), fmt_d(cc, in0->H), fmt_d(d, in0->Dh), fmt_d(f, cfg->n_seeds),
                            fmt_g(g, s.mean), fmt_g(h, s.sd), fmt_g(i, s.lo), fmt_g(j, s.hi), LRA_VERSION);
                    for (int si = 0; si < cfg->n_seeds; si++)
                        csv_row(fs.f, 8, sname, lsb, E->ops->name, E->variant, E->knob->key, fmt_d(a, E->values[v]),
                                fmt_d(b, cfg->seeds[si]), fmt_g(g, x[si]));
                    printf("%-8s %-9s %-14s %-24s %-12s %7d %12.4g %11.3g%s\n", sname, lsb, E->ops->name,
                           E->variant[0] ? E->variant : "-", E->knob->key, E->values[v], s.mean, s.sd,
                           !strcmp(wts, "trained") ? "  (trained weights)" : "");
                }
            }
            fflush(stdout);
            if (write_error_chart(cfg, dir, base, st, title, err, sizeof err)) {
                fprintf(stderr, "lra: error: %s\n", err);
                status = 1;
            } else if (have_gp && render(gnuplot, dir, base))
                fprintf(stderr, "lra: warning: gnuplot failed on %s/%s.gp; see %s/gnuplot.log\n", dir, base, dir);
        }
        /* spectrum */
        if (!status && cfg->spectrum.sequences > 0) {
            int N = in0->N;
            double *curve = xmalloc(sizeof(double) * (size_t)in0->Lc * N), *csd = xmalloc(sizeof(double) * (size_t)in0->Lc * N);
            double share_q = NAN;
            if (run_spectrum(cfg, in0, sname, lsb, fsp.f, curve, csd, &share_q, err, sizeof err)) {
                fprintf(stderr, "lra: error: %s\n", err);
                status = 1;
            } else {
                printf("%s%s%s spectrum: mean energy share of the top n/4 singular values of P: %.4f\n", sname,
                       is_rand ? " logit_std=" : "", lsb, share_q);
                for (int l = 0; l < in0->Lc; l++) {
                    if (is_rand)
                        snprintf(spec_series[n_spec_series++], sizeof spec_series[0], "random logit_std=%s", lsb);
                    else snprintf(spec_series[n_spec_series++], sizeof spec_series[0], "trained layer %d", l);
                    fprintf(sd.f, "# series: %s\n# k cum_share_mean cum_share_std\n", spec_series[n_spec_series - 1]);
                    for (int k = 0; k < N; k++) {
                        char a[32], b[32], cc[32], d[32];
                        csv_row(fc.f, 6, sname, lsb, fmt_d(a, l), fmt_d(b, k + 1), fmt_g(cc, curve[(size_t)l * N + k]),
                                fmt_g(d, csd[(size_t)l * N + k]));
                        fprintf(sd.f, "%d %.6g %.6g\n", k + 1, curve[(size_t)l * N + k], csd[(size_t)l * N + k]);
                    }
                    fprintf(sd.f, "\n\n");
                }
                if (N > max_spec_n) max_spec_n = N;
            }
            free(curve);
            free(csd);
        }
        free(res);
        free(st);
        free(trained_w);
        for (int si = 0; si < cfg->n_seeds; si++) approx_inputs_free(&sets[si]);
        free(sets);
    }
    if (sd.f && of_close(&sd, err, sizeof err)) fprintf(stderr, "lra: error: %s\n", err), status = 1;
    if (!status && n_spec_series > 0) {
        ofile g = {0};
        if (of_open(&g, dir, "spectrum.gp", err, sizeof err)) {
            fprintf(stderr, "lra: error: %s\n", err);
            status = 1;
        } else {
            gp_head(g.f, "spectrum", "cumulative normalised singular values of softmax attention matrices", 960, 720);
            fprintf(g.f, "set key outside below center horizontal\nset xlabel 'eigenvalue index k'\n"
                         "set ylabel 'cumulative normalised singular value sum'\nset yrange [0:1.02]\n"
                         "set xrange [1:%d]\nset title 'Spectrum of P = softmax(QK^T/sqrt(Dh)) (Linformer Figure 1): mean over "
                         "heads and sequences, band = std'\n",
                    max_spec_n);
            fprintf(g.f, "plot ");
            for (int i = 0; i < n_spec_series; i++) {
                fprintf(g.f, "%s'spectrum.dat' index %d using 1:($2-$3):($2+$3) with filledcurves fs transparent solid "
                             "0.15 noborder lc %d notitle, \\\n     '' index %d using 1:2 with lines lw 2 lc %d %s title ",
                        i ? ", \\\n     " : "", i, i + 1, i, i + 1, !strncmp(spec_series[i], "random", 6) ? "dt 2" : "dt 1");
                gp_str(g.f, spec_series[i]);
            }
            fprintf(g.f, "\nset terminal svg noenhanced size 960,720 dynamic background rgb 'white'\n"
                         "set output 'spectrum.svg'\nreplot\nunset output\n");
            if (of_close(&g, err, sizeof err)) fprintf(stderr, "lra: error: %s\n", err), status = 1;
            else if (have_gp && render(gnuplot, dir, "spectrum"))
                fprintf(stderr, "lra: warning: gnuplot failed on %s/spectrum.gp; see %s/gnuplot.log\n", dir, dir);
        }
    }
end:
    if (of_close(&fa, err, sizeof err) || of_close(&fs, err, sizeof err) || of_close(&fi, err, sizeof err) ||
        of_close(&fsp, err, sizeof err) || of_close(&fc, err, sizeof err)) {
        fprintf(stderr, "lra: error: %s\n", err);
        status = 1;
    }
    if (!status) {
        char logp[1100];
        snprintf(logp, sizeof logp, "%s/gnuplot.log", dir);
        struct stat lst;
        if (stat(logp, &lst) == 0 && lst.st_size == 0) unlink(logp);
        printf("results: %s/approx.csv (%.1f s)\n", dir, lra_now() - t0);
    }
    free(spec_series);
    free(cfg);
    return status;
}
