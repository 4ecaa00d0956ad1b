/* blocksparse_check.h - test helpers for the exact sparse-pattern mechanisms (local, longformer,
 * bigbird, sparse; header-only, included by their tests/test_<name>.c after attn_harness.h).
 *
 *   bsc_params p = bsc_defaults(ops); bsc_set(ops, &p, "window", "4");   // params via the schema
 *   uint8_t *vis = bsc_candidates(ops, p.b, shape, mask, seed);         // candidate sets C(i)
 *   int bad = bsc_pattern_mismatches(ops, p.b, shape, mask, expect, ctx); // C(i) vs a definition
 *   double e = bsc_dense_check(a);  // forward and backward vs dense attention over the same C(i)
 *
 * The candidate sets are read off the mechanism's own forward: with q = 0 every visible key gets
 * the same weight, and with one-hot values v_j = e_j (Dh = N) row i of the output is 1/|C(i)| on
 * C(i) and exactly 0 elsewhere. bsc_dense_check then computes, in double, the softmax forward and
 * the dense backward (reference/attention.md §1.2, dropout included) restricted to those sets and
 * compares out, dq, dk, dv: an exact check of the backward with no finite-difference noise.
 */
#ifndef LRA_BLOCKSPARSE_CHECK_H
#define LRA_BLOCKSPARSE_CHECK_H

#include "attn_harness.h"

#ifdef _OPENMP
#include <omp.h>
#endif

typedef struct {
    _Alignas(16) unsigned char b[ATTN_PARAMS_MAX];
} bsc_params;

static inline void bsc_set(const attn_ops *ops, bsc_params *p, const char *key, const char *val) {
    char err[256];
    const param_def *d = schema_find(ops->schema, ops->n_schema, key);
    if (!d) fail_msg("no key %s in %s", key, ops->name);
    if (schema_set(d, p->b, val, err, sizeof err)) fail_msg("%s: %s", key, err);
}

static inline void bsc_seti(const attn_ops *ops, bsc_params *p, const char *key, int v) {
    char t[32];
    snprintf(t, sizeof t, "%d", v);
    bsc_set(ops, p, key, t);
}

static inline bsc_params bsc_defaults(const attn_ops *ops) {
    bsc_params p;
    memset(&p, 0, sizeof p);
    schema_defaults(ops->schema, ops->n_schema, p.b);
    return p;
}

/* The YAML text of a key's current value. */
static inline const char *bsc_get(const attn_ops *ops, const bsc_params *p, const char *key, char *buf, size_t n) {
    const param_def *d = schema_find(ops->schema, ops->n_schema, key);
    if (!d) fail_msg("no key %s in %s", key, ops->name);
    schema_format(d, p->b, buf, n);
    return buf;
}

static inline attn_shape bsc_shape(int B, int H, int N, int Dh, int causal) {
    attn_shape s = {B, H, N, N, Dh, causal, 0, 1, N};
    return s;
}

/* Candidate sets: vis[((b*H + h)*N + i)*N + j] = 1 iff key j is in C(i) for (b, h). Uses the
 * shape's layer and the given seed (patterns may depend on both, e.g. BigBird's random blocks). */
static inline uint8_t *bsc_candidates(const attn_ops *ops, const void *params, attn_shape s, const uint8_t *mask,
                                      uint64_t seed) {
    const int N = s.N;
    s.Dh = N;
    ah_layer *a = ah_new(ops, params, s, seed);
    if (mask) {
        a->mask = malloc((size_t)s.B * N);
        memcpy(a->mask, mask, (size_t)s.B * N);
    }
    for (int bh = 0; bh < s.B * s.H; bh++)
        for (int j = 0; j < N; j++) a->v[((size_t)bh * N + j) * N + j] = 1.0f;
    ah_forward(a);
    size_t n = (size_t)s.B * s.H * N * N;
    uint8_t *vis = malloc(n);
    for (size_t x = 0; x < n; x++) vis[x] = a->out[x] > 0.0f;
    ah_free(a);
    return vis;
}

/* Number of (b, h, i, j) where the candidate sets disagree with expect(ctx, b, h, i, j). Also
 * checks the weights are uniform (1/|C(i)|), i.e. no key is counted twice. */
static inline int bsc_pattern_mismatches(const attn_ops *ops, const void *params, attn_shape s, const uint8_t *mask,
                                         int (*expect)(const void *, int, int, int, int), const void *ctx) {
    const int N = s.N;
    s.Dh = N;
    ah_layer *a = ah_new(ops, params, s, 1);
    if (mask) {
        a->mask = malloc((size_t)s.B * N);
        memcpy(a->mask, mask, (size_t)s.B * N);
    }
    for (int bh = 0; bh < s.B * s.H; bh++)
        for (int j = 0; j < N; j++) a->v[((size_t)bh * N + j) * N + j] = 1.0f;
    ah_forward(a);
    int bad = 0;
    for (int b = 0; b < s.B; b++)
        for (int h = 0; h < s.H; h++)
            for (int i = 0; i < N; i++) {
                int cnt = 0;
                for (int j = 0; j < N; j++) cnt += expect(ctx, b, h, i, j) != 0;
                const float *row = a->out + (((size_t)b * s.H + h) * N + i) * N;
                for (int j = 0; j < N; j++) {
                    double want = expect(ctx, b, h, i, j) ? 1.0 / cnt : 0.0;
                    if (fabs(row[j] - want) > 1e-6) bad++;
                }
            }
    ah_free(a);
    return bad;
}

/* Forward + backward of a (its q, k, v, mask, dout, dropout settings) against dense double
 * attention over the mechanism's own candidate sets. Returns the worst of the relative errors
 * (tu_rel_err style: max abs difference over max abs reference) of out (real rows), dq, dk, dv. */
static inline double bsc_dense_check(ah_layer *a) {
    const attn_shape *s = &a->L.shape;
    const int B = s->B, H = s->H, N = s->N, Dh = s->Dh;
    uint8_t *vis = bsc_candidates(a->L.ops, a->L.params, *s, a->mask, a->L.seed);
    ah_backward(a); /* zeroes dout on padded rows, runs forward and backward */
    const size_t nq = a->nq;
    double *o = calloc(nq, sizeof(double)), *gq = calloc(nq, sizeof(double));
    double *gk = calloc(nq, sizeof(double)), *gv = calloc(nq, sizeof(double));
    double *p = malloc(sizeof(double) * N), *z = malloc(sizeof(double) * N), *dp = malloc(sizeof(double) * N);
    const double sc = 1.0 / sqrt((double)Dh);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const size_t bh = (size_t)b * H + h;
            const float *q = a->q + bh * N * Dh, *k = a->k + bh * N * Dh, *v = a->v + bh * N * Dh;
            const float *dout = a->dout + bh * N * Dh;
            for (int i = 0; i < N; i++) {
                const uint8_t *row = vis + (bh * N + i) * N;
                double mx = -INFINITY;
                for (int j = 0; j < N; j++) {
                    p[j] = -INFINITY;
                    if (!row[j]) continue;
                    double d = 0;
                    for (int x = 0; x < Dh; x++) d += (double)q[i * Dh + x] * k[j * Dh + x];
                    p[j] = d * sc;
                    if (p[j] > mx) mx = p[j];
                }
                if (mx == -INFINITY) continue;
                double sum = 0;
                for (int j = 0; j < N; j++) sum += row[j] ? exp(p[j] - mx) : 0.0;
                double D = 0;
                for (int j = 0; j < N; j++) {
                    p[j] = row[j] ? exp(p[j] - mx) / sum : 0.0;
                    z[j] = row[j] ? attn_dropout_scale(&a->L, b, h, i, j) : 0.0;
                    double d = 0;
                    for (int x = 0; x < Dh; x++) d += (double)dout[i * Dh + x] * v[j * Dh + x];
                    dp[j] = d;
                    D += p[j] * z[j] * d;
                    for (int x = 0; x < Dh; x++) o[(bh * N + i) * Dh + x] += p[j] * z[j] * v[j * Dh + x];
                }
                for (int j = 0; j < N; j++) {
                    if (!row[j]) continue;
                    double ds = p[j] * (z[j] * dp[j] - D);
                    for (int x = 0; x < Dh; x++) {
                        gq[(bh * N + i) * Dh + x] += sc * ds * k[j * Dh + x];
                        gk[(bh * N + j) * Dh + x] += sc * ds * q[i * Dh + x];
                        gv[(bh * N + j) * Dh + x] += p[j] * z[j] * dout[i * Dh + x];
                    }
                }
            }
        }
    float *f = malloc(nq * sizeof(float));
    double worst = 0, e;
    for (size_t x = 0; x < nq; x++) f[x] = (float)o[x];
    e = ah_compare_rows(a, a->out, f); if (e > worst) worst = e;
    for (size_t x = 0; x < nq; x++) f[x] = (float)gq[x];
    e = tu_rel_err(a->dq, f, nq); if (e > worst) worst = e;
    for (size_t x = 0; x < nq; x++) f[x] = (float)gk[x];
    e = tu_rel_err(a->dk, f, nq); if (e > worst) worst = e;
    for (size_t x = 0; x < nq; x++) f[x] = (float)gv[x];
    e = tu_rel_err(a->dv, f, nq); if (e > worst) worst = e;
    free(f), free(o), free(gq), free(gk), free(gv), free(p), free(z), free(dp), free(vis);
    return worst;
}

/* Set the OpenMP thread count; returns the previous one. */
static inline int bsc_threads(int n) {
#ifdef _OPENMP
    int old = omp_get_max_threads();
    omp_set_num_threads(n);
    return old;
#else
    (void)n;
    return 1;
#endif
}

/* Forward and backward bitwise identical with 1 and 2 threads, and backward overwrites its
 * outputs (a second call gives the same dq, dk, dv). Returns 1 when all hold. The kernel runs
 * serially below B*H*N*Dh = 32768, so give a larger shape. */
static inline int bsc_thread_determinism(ah_layer *a) {
    size_t n = a->nq;
    float *o1 = malloc(n * 4), *q1 = malloc(n * 4), *k1 = malloc(n * 4), *v1 = malloc(n * 4);
    int saved = bsc_threads(1);
    ah_backward(a);
    memcpy(o1, a->out, n * 4), memcpy(q1, a->dq, n * 4), memcpy(k1, a->dk, n * 4), memcpy(v1, a->dv, n * 4);
    bsc_threads(2);
    ah_backward(a);
    a->L.ops->backward(&a->L, a->q, a->k, a->v, a->mask, a->out, a->dout, a->dq, a->dk, a->dv);
    bsc_threads(saved);
    int ok = !memcmp(o1, a->out, n * 4) && !memcmp(q1, a->dq, n * 4) && !memcmp(k1, a->dk, n * 4) &&
             !memcmp(v1, a->dv, n * 4);
    free(o1), free(q1), free(k1), free(v1);
    return ok;
}

#endif
