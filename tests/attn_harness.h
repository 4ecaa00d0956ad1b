/* attn_harness.h - generic checks that every attention mechanism's tests run (header-only, for
 * tests/test_<mechanism>.c). Each function builds a standalone attn_layer with malloc'd buffers
 * sized by the mechanism's own declarations, so the declared sizes are exercised too (ASan catches
 * a mechanism that writes past what it declared).
 *
 *   ah_layer *L = ah_new(&attn_local, &params, shape, seed);   // weights initialised by ops->init
 *   ah_fill_qkv(L, seed); ah_random_mask(L, frac_pad, seed);
 *   double e = ah_fast_vs_reference(L);                        // forward vs ops->reference
 *   double e = ah_vs_exact_softmax(L);                         // forward vs exact softmax ref
 *   double g = ah_grad_check(L, max_checks);                   // FD check of q, k, v and weights
 *   double p = ah_padding_invariance(ops, params, shape, extra, seed);
 *   double c = ah_causal_invariance(L, seed);                  // future changes -> past unchanged
 *   ah_free(L);
 */
#ifndef LRA_ATTN_HARNESS_H
#define LRA_ATTN_HARNESS_H

#include "../attention/attention.h"
#include "testutil.h"

extern const attn_ops attn_softmax;

typedef struct {
    attn_layer L;
    float *q, *k, *v, *out, *dout, *dq, *dk, *dv;
    uint8_t *mask; /* (B,Nk) or NULL */
    size_t nq, nk, nw;
} ah_layer;

static inline size_t ah_sz(size_t (*f)(const void *, const attn_shape *), const void *p, const attn_shape *s) {
    return f ? f(p, s) : 0;
}

static inline ah_layer *ah_new(const attn_ops *ops, const void *params, attn_shape s, uint64_t seed) {
    ah_layer *a = calloc(1, sizeof *a);
    a->L.ops = ops;
    a->L.params = params;
    a->L.shape = s;
    a->L.seed = seed;
    a->nq = (size_t)s.B * s.H * s.N * s.Dh;
    a->nk = (size_t)s.B * s.H * s.Nk * s.Dh;
    a->nw = ah_sz(ops->n_weights, params, &s);
    if (a->nw) {
        a->L.w = calloc(a->nw, sizeof(float));
        a->L.dw = calloc(a->nw, sizeof(float));
        rng_t r = rng_make(seed, RNG_INIT);
        if (ops->init) ops->init(&a->L, &r);
    }
    size_t st = ah_sz(ops->state_bytes, params, &s);
    a->L.state = st ? calloc(1, st) : NULL;
    size_t cb = ah_sz(ops->cache_bytes, params, &s);
    a->L.cache = cb ? malloc(cb) : NULL;
    size_t sb = ops->scratch_bytes ? ops->scratch_bytes(params, &s, 64) : 0;
    a->L.scratch = sb ? malloc(sb) : NULL;
    a->q = calloc(a->nq, sizeof(float));
    a->out = calloc(a->nq, sizeof(float));
    a->dout = calloc(a->nq, sizeof(float));
    a->dq = calloc(a->nq, sizeof(float));
    a->k = calloc(a->nk, sizeof(float));
    a->v = calloc(a->nk, sizeof(float));
    a->dk = calloc(a->nk, sizeof(float));
    a->dv = calloc(a->nk, sizeof(float));
    return a;
}

static inline void ah_free(ah_layer *a) {
    free(a->L.w); free(a->L.dw); free(a->L.state); free(a->L.cache); free(a->L.scratch);
    free(a->q); free(a->k); free(a->v); free(a->out); free(a->dout);
    free(a->dq); free(a->dk); free(a->dv); free(a->mask);
    free(a);
}

static inline void ah_fill_qkv(ah_layer *a, uint64_t seed) {
    tu_randn(a->q, a->nq, 1.0f, seed * 7 + 1);
    tu_randn(a->k, a->nk, 1.0f, seed * 7 + 2);
    tu_randn(a->v, a->nk, 1.0f, seed * 7 + 3);
    tu_randn(a->dout, a->nq, 1.0f, seed * 7 + 4);
}

/* Right-padding: for each sequence, the last round(frac*Nk*u) keys are padding (u uniform). */
static inline void ah_random_mask(ah_layer *a, float frac_pad, uint64_t seed) {
    const attn_shape *s = &a->L.shape;
    free(a->mask);
    a->mask = malloc((size_t)s->B * s->Nk);
    rng_t r = rng_make(seed, RNG_TEST + 1);
    for (int b = 0; b < s->B; b++) {
        int npad = (int)(frac_pad * s->Nk * rng_float(&r));
        for (int j = 0; j < s->Nk; j++) a->mask[(size_t)b * s->Nk + j] = j < s->Nk - npad;
    }
}

static inline void ah_forward(ah_layer *a) {
    if (a->L.ops->begin) a->L.ops->begin(&a->L);
    a->L.ops->forward(&a->L, a->q, a->k, a->v, a->mask, a->out);
}

/* Rows of padded queries are don't-care: compare only rows i whose key position (i + Nk - N) is
 * real. Returns max relative error of fast forward vs ops->reference. */
static inline double ah_compare_rows(const ah_layer *a, const float *x, const float *y) {
    const attn_shape *s = &a->L.shape;
    double num = 0, den = 1e-30;
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < s->H; h++)
            for (int i = 0; i < s->N; i++) {
                if (a->mask && !a->mask[(size_t)b * s->Nk + i + (s->Nk - s->N)]) continue;
                size_t o = (((size_t)b * s->H + h) * s->N + i) * s->Dh;
                for (int d = 0; d < s->Dh; d++) {
                    double e = fabs((double)x[o + d] - (double)y[o + d]);
                    if (isnan(e) || e > num) num = e;
                    if (fabs((double)y[o + d]) > den) den = fabs((double)y[o + d]);
                }
            }
    return num / den;
}

static inline double ah_fast_vs_reference(ah_layer *a) {
    ah_forward(a);
    float *ref = calloc(a->nq, sizeof(float));
    a->L.ops->reference(&a->L, a->q, a->k, a->v, a->mask, ref);
    double e = ah_compare_rows(a, a->out, ref);
    free(ref);
    return e;
}

/* Forward of this mechanism vs exact softmax attention (attn_softmax.reference, default params,
 * same shape incl. causal, same mask). For limit cases (window >= N, ...). */
static inline double ah_vs_exact_softmax(ah_layer *a) {
    ah_forward(a);
    float *ref = calloc(a->nq, sizeof(float));
    unsigned char sp[ATTN_PARAMS_MAX] __attribute__((aligned(16)));
    schema_defaults(attn_softmax.schema, attn_softmax.n_schema, sp);
    attn_layer S = a->L;
    S.ops = &attn_softmax;
    S.params = sp;
    S.training = 0;
    attn_softmax.reference(&S, a->q, a->k, a->v, a->mask, ref);
    double e = ah_compare_rows(a, a->out, ref);
    free(ref);
    return e;
}

/* loss = sum(out * dout) over real query rows, in double. */
static inline double ah_loss(void *ctx) {
    ah_layer *a = ctx;
    ah_forward(a);
    const attn_shape *s = &a->L.shape;
    double acc = 0;
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < s->H; h++)
            for (int i = 0; i < s->N; i++) {
                if (a->mask && !a->mask[(size_t)b * s->Nk + i + (s->Nk - s->N)]) continue;
                size_t o = (((size_t)b * s->H + h) * s->N + i) * s->Dh;
                for (int d = 0; d < s->Dh; d++) acc += (double)a->out[o + d] * a->dout[o + d];
            }
    return acc;
}

/* Zero dout on padded query rows (so the analytic gradient matches ah_loss). */
static inline void ah_mask_dout(ah_layer *a) {
    const attn_shape *s = &a->L.shape;
    if (!a->mask) return;
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < s->H; h++)
            for (int i = 0; i < s->N; i++)
                if (!a->mask[(size_t)b * s->Nk + i + (s->Nk - s->N)])
                    memset(a->dout + (((size_t)b * s->H + h) * s->N + i) * s->Dh, 0, sizeof(float) * s->Dh);
}

/* Analytic backward (forward then backward, weights' grads zeroed first). */
static inline void ah_backward(ah_layer *a) {
    ah_mask_dout(a);
    if (a->nw) memset(a->L.dw, 0, a->nw * sizeof(float));
    ah_forward(a);
    a->L.ops->backward(&a->L, a->q, a->k, a->v, a->mask, a->out, a->dout, a->dq, a->dk, a->dv);
}

/* Worst FD relative error over q, k, v and the learned weights (max_checks coordinates each).
 * Uses h = 1e-2 and a floor of 1e-3 on |fd|+|an|: float32 kernels typically give < 1e-2. */
static inline double ah_grad_check(ah_layer *a, int max_checks) {
    ah_backward(a);
    float *gq = malloc(a->nq * sizeof(float)), *gk = malloc(a->nk * sizeof(float)), *gv = malloc(a->nk * sizeof(float));
    memcpy(gq, a->dq, a->nq * sizeof(float));
    memcpy(gk, a->dk, a->nk * sizeof(float));
    memcpy(gv, a->dv, a->nk * sizeof(float));
    float *gw = a->nw ? malloc(a->nw * sizeof(float)) : NULL;
    if (a->nw) memcpy(gw, a->L.dw, a->nw * sizeof(float));
    double w = 0, e;
    e = tu_fd_check(ah_loss, a, a->q, gq, a->nq, max_checks, 1e-2f, 1e-3); if (isnan(e) || e > w) w = e;
    e = tu_fd_check(ah_loss, a, a->k, gk, a->nk, max_checks, 1e-2f, 1e-3); if (isnan(e) || e > w) w = e;
    e = tu_fd_check(ah_loss, a, a->v, gv, a->nk, max_checks, 1e-2f, 1e-3); if (isnan(e) || e > w) w = e;
    if (a->nw) { e = tu_fd_check(ah_loss, a, a->L.w, gw, a->nw, max_checks, 1e-2f, 1e-3); if (isnan(e) || e > w) w = e; }
    free(gq); free(gk); free(gv); free(gw);
    return w;
}

/* Outputs of the real rows of a length-N input equal those of the same input right-padded with
 * `extra` masked positions (N+extra, mask 0 on the tail). Returns the max relative difference.
 * Shape must have Nk == N. Mechanisms with learned length-dependent weights (Linformer) must set
 * max_len to the padded length in both shapes, which this does. */
static inline double ah_padding_invariance(const attn_ops *ops, const void *params, attn_shape s, int extra, uint64_t seed) {
    attn_shape s2 = s;
    s2.N += extra; s2.Nk += extra;
    s.max_len = s2.max_len = (s.max_len > s2.N ? s.max_len : s2.N);
    ah_layer *a = ah_new(ops, params, s, seed), *p = ah_new(ops, params, s2, seed);
    ah_fill_qkv(a, seed);
    a->mask = malloc((size_t)s.B * s.Nk); memset(a->mask, 1, (size_t)s.B * s.Nk);
    p->mask = calloc((size_t)s2.B * s2.Nk, 1);
    for (int b = 0; b < s.B; b++) memset(p->mask + (size_t)b * s2.Nk, 1, (size_t)s.N);
    tu_randn(p->q, p->nq, 1.0f, seed + 99); tu_randn(p->k, p->nk, 1.0f, seed + 98); tu_randn(p->v, p->nk, 1.0f, seed + 97);
    for (int b = 0; b < s.B; b++)
        for (int h = 0; h < s.H; h++)
            for (int i = 0; i < s.N; i++) {
                size_t o = (((size_t)b * s.H + h) * s.N + i) * s.Dh, o2 = (((size_t)b * s.H + h) * s2.N + i) * s.Dh;
                memcpy(p->q + o2, a->q + o, sizeof(float) * s.Dh);
                memcpy(p->k + o2, a->k + o, sizeof(float) * s.Dh);
                memcpy(p->v + o2, a->v + o, sizeof(float) * s.Dh);
            }
    if (a->nw) memcpy(p->L.w, a->L.w, a->nw * sizeof(float) < p->nw * sizeof(float) ? a->nw * sizeof(float) : p->nw * sizeof(float));
    ah_forward(a); ah_forward(p);
    double num = 0, den = 1e-30;
    for (int b = 0; b < s.B; b++)
        for (int h = 0; h < s.H; h++)
            for (int i = 0; i < s.N; i++)
                for (int d = 0; d < s.Dh; d++) {
                    float x = a->out[(((size_t)b * s.H + h) * s.N + i) * s.Dh + d];
                    float y = p->out[(((size_t)b * s.H + h) * s2.N + i) * s.Dh + d];
                    if (isnan(x - y) || fabs((double)x - y) > num) num = fabs((double)x - y);
                    if (fabs((double)x) > den) den = fabs((double)x);
                }
    ah_free(a); ah_free(p);
    return num / den;
}

/* With shape.causal = 1: perturb q, k and v at positions > t and check outputs at rows <= t are
 * unchanged (bitwise). Returns the max abs difference (0 expected). */
static inline double ah_causal_invariance(ah_layer *a, int t, uint64_t seed) {
    const attn_shape *s = &a->L.shape;
    ah_forward(a);
    float *o1 = malloc(a->nq * sizeof(float));
    memcpy(o1, a->out, a->nq * sizeof(float));
    rng_t r = rng_make(seed, RNG_TEST + 2);
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < s->H; h++) {
            for (int i = t + 1; i < s->N; i++)
                for (int d = 0; d < s->Dh; d++) a->q[(((size_t)b * s->H + h) * s->N + i) * s->Dh + d] += (float)rng_normal(&r);
            for (int j = t + 1 + (s->Nk - s->N); j < s->Nk; j++)
                for (int d = 0; d < s->Dh; d++) {
                    a->k[(((size_t)b * s->H + h) * s->Nk + j) * s->Dh + d] += (float)rng_normal(&r);
                    a->v[(((size_t)b * s->H + h) * s->Nk + j) * s->Dh + d] += (float)rng_normal(&r);
                }
        }
    ah_forward(a);
    double worst = 0;
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < s->H; h++)
            for (int i = 0; i <= t && i < s->N; i++)
                for (int d = 0; d < s->Dh; d++) {
                    size_t o = (((size_t)b * s->H + h) * s->N + i) * s->Dh + d;
                    double e = fabs((double)a->out[o] - o1[o]);
                    if (isnan(e) || e > worst) worst = e;
                }
    free(o1);
    return worst;
}

#endif
