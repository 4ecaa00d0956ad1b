/* linformer.c - Linformer attention (Wang et al., "Linformer: Self-Attention with Linear
 * Complexity", arXiv 2006.04768; reference/attention.md §4).
 *
 * Letters: B batch, H heads, N length (queries = keys), Dh head size, K projected length (`k`),
 * Lmax = shape.max_len (the longest N the model is built for), C query rows per chunk.
 *
 * Per (b,h):  Kbar = E[:, :N] Kmask (K, Dh),  Vbar = F[:, :N] Vmask (K, Dh),
 *             P = softmax(Q Kbar^T / sqrt(Dh)) (N, K),  O = P Vbar.
 * E, F are learned (K, Lmax) matrices in L->w; a length N <= Lmax uses their first N columns.
 * Padding: the columns of padded keys are zeroed (Kmask, Vmask: padded rows of K and V dropped
 * before projecting, as tatp22's implementation does), so padded tokens cannot leak into Kbar/Vbar
 * (§4.5); with Lmax fixed, appending padding leaves the real outputs unchanged. The softmax still
 * runs over all K projected keys (there is nothing to mask after projecting). `lra_ignore_mask:
 * true` reproduces LRA and fairseq, which ignore the padding mask.
 *
 * Sharing (`share`, §4.2), for the one layer an attn_layer owns:
 *   none      E_h, F_h per head:                 2 H K Lmax weights
 *   headwise  one E and one F for all heads:     2 K Lmax (default: fairseq / lucidrains)
 *   kv        one E = F for all heads, K and V:  K Lmax (LRA's linformer)
 *   layerwise the paper's single E for all layers cannot be expressed here, since every layer owns
 *             its weights: it behaves as kv within the layer and every layer starts from the SAME
 *             E (initialised from a stream not keyed by the layer), but the layers' copies are
 *             trained separately. True cross-layer sharing needs model support.
 * Init: fairseq's xavier-uniform with gain 1/sqrt(2): U(-a, a), a = sqrt(3 / (Lmax + K)).
 * Default K = 256 (the paper's setting for n >= 512); LRA uses k: 16 (`low_rank_features`).
 * No causal variant (the projections mix future tokens, §4.5): validate rejects `causal`.
 *
 * Cache per (b,h): Kbar, Vbar (K, Dh) and the row log-sum-exp (N); backward recomputes P.
 * Time O(N K Dh), memory O(N + K Dh) per (b,h) plus O(C K) per thread. Weight gradients are summed
 * over (b,h) in a fixed order in a second parallel pass over rows of E/F (deterministic).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../lra/common.h"
#include "attention.h"
#include "fastmath.h"
#include "kernelized.h"

#ifdef _OPENMP
#include <omp.h>
#endif

enum { LS_NONE = 0, LS_HEADWISE = 1, LS_KV = 2, LS_LAYERWISE = 3 };

typedef struct {
    int k;               /* projected length K */
    int share;           /* LS_* */
    int lra_ignore_mask; /* ignore key_mask (LRA, fairseq) */
} linformer_params;

static const param_def linformer_schema[] = {
    P_INT(linformer_params, k, "256", 1, 65536,
          "projected length K (paper: 256 for n >= 512; LRA: 16)"),
    P_ENUM(linformer_params, share, "headwise", "none|headwise|kv|layerwise",
           "projection sharing: none (E,F per head), headwise (one E,F per layer; fairseq), kv (E = F; LRA), "
           "layerwise (as kv, every layer initialised to the same E but trained separately)"),
    P_BOOL(linformer_params, lra_ignore_mask, "false",
           "ignore the key padding mask as LRA's code does (default: drop padded keys before projecting)"),
};

#define LF_C 64  /* query rows per chunk */
#define LF_J 256 /* key rows per projection chunk (float partial sums, double across chunks) */

static int n_proj(const linformer_params *p, int H) {
    switch (p->share) {
    case LS_NONE: return 2 * H;
    case LS_HEADWISE: return 2;
    default: return 1;
    }
}

static int proj_index(const linformer_params *p, int h, int which) {
    switch (p->share) {
    case LS_NONE: return 2 * h + which;
    case LS_HEADWISE: return which;
    default: return 0;
    }
}

float *linformer_proj(const attn_layer *L, int h, int which, int grad) {
    const linformer_params *p = L->params;
    float *base = grad ? L->dw : L->w;
    return base + (size_t)proj_index(p, h, which) * p->k * L->shape.max_len;
}

static int lf_validate(const void *params, const attn_shape *s, char *err, size_t errlen) {
    const linformer_params *p = params;
    if (s->causal)
        return lra_errorf(err, errlen, "linformer: causal attention is not supported (the length projection mixes "
                                       "future tokens); set causal: false or choose another mechanism");
    if (s->Nk != s->N)
        return lra_errorf(err, errlen, "linformer: key length Nk=%d must equal N=%d (no segment memory)", s->Nk, s->N);
    if (s->max_len < s->N)
        return lra_errorf(err, errlen, "linformer: sequence length %d exceeds max_len %d (E and F have max_len columns)",
                          s->N, s->max_len);
    if (p->k < 1) return lra_errorf(err, errlen, "linformer: k must be >= 1, got %d", p->k);
    return 0;
}

static size_t lf_n_weights(const void *params, const attn_shape *s) {
    const linformer_params *p = params;
    return (size_t)n_proj(p, s->H) * p->k * s->max_len;
}

/* per (b,h) cache: Kbar, Vbar (K, Dh), lse (N) */
static size_t cache_floats_bh(const linformer_params *p, const attn_shape *s) {
    return (size_t)2 * p->k * s->Dh + (size_t)s->N;
}

static size_t lf_cache(const void *params, const attn_shape *s) {
    return (size_t)s->B * s->H * cache_floats_bh(params, s) * sizeof(float);
}

/* per-thread work */
typedef struct {
    float *S, *dP;      /* (C, K) */
    float *part;        /* (K, Dh) float partial */
    double *acc1, *acc2; /* (K, Dh) double accumulators */
    float *row;         /* (16, N) weight-gradient rows */
    float *xc;          /* (LF_J, Dh) masked rows */
} lf_work;

static size_t al64(size_t b) { return (b + 63) & ~(size_t)63; }

static size_t lf_thread_bytes(const linformer_params *p, const attn_shape *s, char *base, lf_work *w) {
    size_t K = (size_t)p->k, Dh = (size_t)s->Dh, off = 0;
#define TAKE(ptr, type, n)                                  \
    do {                                                    \
        if (w) w->ptr = base ? (type *)(base + off) : NULL; \
        off += al64(sizeof(type) * (size_t)(n));            \
    } while (0)
    TAKE(S, float, LF_C * K);
    TAKE(dP, float, LF_C * K);
    TAKE(part, float, K * Dh);
    TAKE(acc1, double, K * Dh);
    TAKE(acc2, double, K * Dh);
    TAKE(row, float, 16 * (size_t)s->N);
    TAKE(xc, float, LF_J * Dh);
#undef TAKE
    return off;
}

/* Scratch: a shared block first (dKbar, dVbar for every (b,h), used by backward's weight-gradient
 * pass), then one lf_thread_bytes block per thread. */
static size_t lf_shared_bytes(const linformer_params *p, const attn_shape *s) {
    return al64(sizeof(float) * (size_t)s->B * s->H * 2 * p->k * s->Dh);
}

static size_t lf_scratch(const void *params, const attn_shape *s, int n_threads) {
    if (n_threads < 1) n_threads = 1;
    const linformer_params *p = params;
    return lf_shared_bytes(p, s) + (size_t)n_threads * lf_thread_bytes(p, s, NULL, NULL);
}



static double lf_flops(const void *params, const attn_shape *s) {
    const linformer_params *p = params;
    double N = s->N, K = p->k, Dh = s->Dh;
    return s->B * s->H * (2 * 2.0 * N * K * Dh /* projections */ + 2.0 * N * K * Dh /* scores */ + 4.0 * N * K /* softmax */ +
                          2.0 * N * K * Dh /* P Vbar */);
}

static void lf_init(attn_layer *L, rng_t *r) {
    const linformer_params *p = L->params;
    size_t n = lf_n_weights(p, &L->shape);
    double a = sqrt(3.0 / ((double)L->shape.max_len + p->k));
    rng_t rl = rng_make(L->seed, rng_substream(RNG_INIT, 0x4c696e666f726d72ULL /* "Linformr" */, 0));
    rng_t *rr = p->share == LS_LAYERWISE ? &rl : r;
    for (size_t i = 0; i < n; i++) L->w[i] = (float)((2.0 * rng_double(rr) - 1.0) * a);
}

/* acc (K, Dh) = sum over real rows j < N of P[:, j] x_j, P (K, Lmax) row-major: a GEMM per chunk of
 * LF_J rows (padded rows zeroed in a copy), float within a chunk, double across chunks. */
static void project_rows(const float *P, int K, int Lmax, const float *x, const uint8_t *mask, int N, int Dh,
                         lf_work *w, double *acc) {
    memset(acc, 0, sizeof(double) * K * Dh);
    for (int j0 = 0; j0 < N; j0 += LF_J) {
        int n = LRA_MIN(LF_J, N - j0);
        const float *xs = x + (size_t)j0 * Dh;
        if (mask) {
            for (int j = 0; j < n; j++) {
                if (mask[j0 + j]) memcpy(w->xc + (size_t)j * Dh, xs + (size_t)j * Dh, sizeof(float) * Dh);
                else memset(w->xc + (size_t)j * Dh, 0, sizeof(float) * Dh);
            }
            xs = w->xc;
        }
        kz_gemm(0, 0, K, Dh, n, 1.0f, P + j0, Lmax, xs, Dh, 0.0f, w->part, Dh);
        for (int i = 0; i < K * Dh; i++) acc[i] += w->part[i];
    }
}

typedef struct {
    const attn_layer *L;
    const linformer_params *p;
    const float *q, *k, *v, *out, *dout;
    const uint8_t *mask;
    float *o, *dq, *dk, *dv;
    float *dbar; /* (B*H, 2, K, Dh) */
    size_t tb;
} lf_call;

static void lf_fwd_bh(int b, int h, int tid, void *ctx) {
    lf_call *c = ctx;
    const attn_shape *s = &c->L->shape;
    const int N = s->N, Dh = s->Dh, K = c->p->k, Lmax = s->max_len;
    size_t bh = (size_t)b * s->H + h, xo = bh * N * Dh;
    lf_work w;
    lf_thread_bytes(c->p, s, (char *)c->L->scratch + lf_shared_bytes(c->p, s) + (size_t)tid * c->tb, &w);
    float *Kbar = (float *)c->L->cache + bh * cache_floats_bh(c->p, s), *Vbar = Kbar + (size_t)K * Dh,
          *lse = Vbar + (size_t)K * Dh;
    const uint8_t *mask = c->mask ? c->mask + (size_t)b * N : NULL;
    const float *E = linformer_proj(c->L, h, 0, 0), *F = linformer_proj(c->L, h, 1, 0);
    project_rows(E, K, Lmax, c->k + xo, mask, N, Dh, &w, w.acc1);
    project_rows(F, K, Lmax, c->v + xo, mask, N, Dh, &w, w.acc2);
    for (int i = 0; i < K * Dh; i++) {
        Kbar[i] = (float)w.acc1[i];
        Vbar[i] = (float)w.acc2[i];
    }
    const float sc = 1.0f / sqrtf((float)Dh);
    for (int i0 = 0; i0 < N; i0 += LF_C) {
        int n = LRA_MIN(LF_C, N - i0);
        kz_gemm(0, 1, n, K, Dh, sc, c->q + xo + (size_t)i0 * Dh, Dh, Kbar, Dh, 0.0f, w.S, K);
        for (int i = 0; i < n; i++) {
            float *restrict row = w.S + (size_t)i * K;
            float m = -INFINITY;
            for (int r = 0; r < K; r++) m = row[r] > m ? row[r] : m;
            for (int r = 0; r < K; r++) row[r] = lra_expf(row[r] - m);
            double l = 0;
            for (int r = 0; r < K; r++) l += row[r];
            float inv = (float)(1.0 / l);
            for (int r = 0; r < K; r++) row[r] *= inv;
            lse[i0 + i] = m + (float)log(l);
        }
        kz_gemm(0, 0, n, Dh, K, 1.0f, w.S, K, Vbar, Dh, 0.0f, c->o + xo + (size_t)i0 * Dh, Dh);
    }
}

static void lf_forward(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *key_mask,
                       float *out) {
    const linformer_params *p = L->params;
    lf_call c = {.L = L, .p = p, .q = q, .k = k, .v = v, .mask = p->lra_ignore_mask ? NULL : key_mask, .o = out,
                 .tb = lf_thread_bytes(p, &L->shape, NULL, NULL)};
    kz_parallel_bh(L->shape.B, L->shape.H, lf_fwd_bh, &c);
}

static void lf_bwd_bh(int b, int h, int tid, void *ctx) {
    lf_call *c = ctx;
    const attn_shape *s = &c->L->shape;
    const int N = s->N, Dh = s->Dh, K = c->p->k, Lmax = s->max_len;
    size_t bh = (size_t)b * s->H + h, xo = bh * N * Dh;
    lf_work w;
    lf_thread_bytes(c->p, s, (char *)c->L->scratch + lf_shared_bytes(c->p, s) + (size_t)tid * c->tb, &w);
    const float *Kbar = (const float *)c->L->cache + bh * cache_floats_bh(c->p, s), *Vbar = Kbar + (size_t)K * Dh,
                *lse = Vbar + (size_t)K * Dh;
    const uint8_t *mask = c->mask ? c->mask + (size_t)b * N : NULL;
    const float sc = 1.0f / sqrtf((float)Dh);
    double *dKb = w.acc1, *dVb = w.acc2;
    memset(dKb, 0, sizeof(double) * K * Dh);
    memset(dVb, 0, sizeof(double) * K * Dh);
    for (int i0 = 0; i0 < N; i0 += LF_C) {
        int n = LRA_MIN(LF_C, N - i0);
        const float *qc = c->q + xo + (size_t)i0 * Dh, *gc = c->dout + xo + (size_t)i0 * Dh,
                    *oc = c->out + xo + (size_t)i0 * Dh;
        kz_gemm(0, 1, n, K, Dh, sc, qc, Dh, Kbar, Dh, 0.0f, w.S, K);
        for (int i = 0; i < n; i++) {
            float *restrict row = w.S + (size_t)i * K;
            float L0 = lse[i0 + i];
            for (int r = 0; r < K; r++) row[r] = lra_expf(row[r] - L0);
        }
        /* dVbar += P^T dO */
        kz_gemm(1, 0, K, Dh, n, 1.0f, w.S, K, gc, Dh, 0.0f, w.part, Dh);
        for (int i = 0; i < K * Dh; i++) dVb[i] += w.part[i];
        /* dP = dO Vbar^T; dS = P (dP - D), D_i = dO_i . O_i */
        kz_gemm(0, 1, n, K, Dh, 1.0f, gc, Dh, Vbar, Dh, 0.0f, w.dP, K);
        for (int i = 0; i < n; i++) {
            double D = 0;
            for (int d = 0; d < Dh; d++) D += (double)gc[(size_t)i * Dh + d] * oc[(size_t)i * Dh + d];
            float Df = (float)D;
            float *restrict pr = w.S + (size_t)i * K, *restrict dr = w.dP + (size_t)i * K;
            for (int r = 0; r < K; r++) dr[r] = pr[r] * (dr[r] - Df);
        }
        /* dQ = sc dS Kbar; dKbar += sc dS^T Q */
        kz_gemm(0, 0, n, Dh, K, sc, w.dP, K, Kbar, Dh, 0.0f, c->dq + xo + (size_t)i0 * Dh, Dh);
        kz_gemm(1, 0, K, Dh, n, sc, w.dP, K, qc, Dh, 0.0f, w.part, Dh);
        for (int i = 0; i < K * Dh; i++) dKb[i] += w.part[i];
    }
    float *dK = c->dbar + bh * 2 * K * Dh, *dV = dK + (size_t)K * Dh;
    for (int i = 0; i < K * Dh; i++) {
        dK[i] = (float)dKb[i];
        dV[i] = (float)dVb[i];
    }
    /* dK = E[:, :N]^T dKbar, dV = F[:, :N]^T dVbar, zero on padded rows */
    const float *E = linformer_proj(c->L, h, 0, 0), *F = linformer_proj(c->L, h, 1, 0);
    kz_gemm(1, 0, N, Dh, K, 1.0f, E, Lmax, dK, Dh, 0.0f, c->dk + xo, Dh);
    kz_gemm(1, 0, N, Dh, K, 1.0f, F, Lmax, dV, Dh, 0.0f, c->dv + xo, Dh);
    if (mask)
        for (int j = 0; j < N; j++)
            if (!mask[j]) {
                memset(c->dk + xo + (size_t)j * Dh, 0, sizeof(float) * Dh);
                memset(c->dv + xo + (size_t)j * Dh, 0, sizeof(float) * Dh);
            }
}

/* dE[r, j] += sum over the (b,h) using this projection, in order, of mask_bj dXbar_bh[r] . X_bh[j];
 * one task per (projection, block of 16 rows), which owns those rows of dw. */
typedef struct {
    lf_call *c;
    int nblk;
} lf_wctx;

static void lf_wgrad_task(int task, int tid, lf_call *c, int nblk) {
    const attn_shape *s = &c->L->shape;
    const linformer_params *p = c->p;
    const int N = s->N, Dh = s->Dh, K = p->k, Lmax = s->max_len;
    int pi = task / nblk, r0 = (task % nblk) * 16, nr = LRA_MIN(16, K - r0);
    lf_work w;
    lf_thread_bytes(p, s, (char *)c->L->scratch + lf_shared_bytes(p, s) + (size_t)tid * c->tb, &w);
    float *dW = c->L->dw + (size_t)pi * K * Lmax;
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < s->H; h++)
            for (int which = 0; which < 2; which++) {
                if (proj_index(p, h, which) != pi) continue;
                size_t bh = (size_t)b * s->H + h, xo = bh * N * Dh;
                const float *dX = c->dbar + (bh * 2 + which) * K * Dh + (size_t)r0 * Dh;
                const float *X = (which ? c->v : c->k) + xo;
                kz_gemm(0, 1, nr, N, Dh, 1.0f, dX, Dh, X, Dh, 0.0f, w.row, N);
                const uint8_t *mask = c->mask ? c->mask + (size_t)b * N : NULL;
                for (int r = 0; r < nr; r++) {
                    float *restrict dst = dW + (size_t)(r0 + r) * Lmax;
                    const float *restrict src = w.row + (size_t)r * N;
                    if (mask)
                        for (int j = 0; j < N; j++) dst[j] += mask[j] ? src[j] : 0.0f;
                    else
                        for (int j = 0; j < N; j++) dst[j] += src[j];
                }
            }
}

static void lf_backward(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *key_mask,
                        const float *out, const float *dout, float *dq, float *dk, float *dv) {
    const linformer_params *p = L->params;
    const attn_shape *s = &L->shape;
    lf_call c = {.L = L, .p = p, .q = q, .k = k, .v = v, .out = out, .dout = dout,
                 .mask = p->lra_ignore_mask ? NULL : key_mask, .dq = dq, .dk = dk, .dv = dv,
                 .tb = lf_thread_bytes(p, s, NULL, NULL)};
    int nt0 = lra_threads();
    c.dbar = (float *)L->scratch;
    kz_parallel_bh(s->B, s->H, lf_bwd_bh, &c);
    int nblk = LRA_CEIL_DIV(p->k, 16), ntask = n_proj(p, s->H) * nblk;
    int nt = LRA_MAX(1, LRA_MIN(nt0, ntask));
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int t = 0; t < ntask; t++) {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        lf_wgrad_task(t, tid, &c, nblk);
    }
}

/* Plain reference: dense projections and softmax in double. */
static void lf_reference(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *key_mask,
                         float *out) {
    const linformer_params *p = L->params;
    const attn_shape *s = &L->shape;
    const int N = s->N, Dh = s->Dh, K = p->k, Lmax = s->max_len;
    const uint8_t *maskall = p->lra_ignore_mask ? NULL : key_mask;
    double *Kb = xmalloc(sizeof(double) * K * Dh), *Vb = xmalloc(sizeof(double) * K * Dh), *sc = xmalloc(sizeof(double) * K);
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < s->H; h++) {
            size_t xo = ((size_t)b * s->H + h) * N * Dh;
            const uint8_t *mask = maskall ? maskall + (size_t)b * N : NULL;
            const float *E = linformer_proj(L, h, 0, 0), *F = linformer_proj(L, h, 1, 0);
            for (int r = 0; r < K; r++)
                for (int d = 0; d < Dh; d++) {
                    double a = 0, c2 = 0;
                    for (int j = 0; j < N; j++) {
                        if (mask && !mask[j]) continue;
                        a += (double)E[(size_t)r * Lmax + j] * k[xo + (size_t)j * Dh + d];
                        c2 += (double)F[(size_t)r * Lmax + j] * v[xo + (size_t)j * Dh + d];
                    }
                    Kb[r * Dh + d] = a;
                    Vb[r * Dh + d] = c2;
                }
            for (int i = 0; i < N; i++) {
                double m = -INFINITY, l = 0;
                for (int r = 0; r < K; r++) {
                    double a = 0;
                    for (int d = 0; d < Dh; d++) a += (double)q[xo + (size_t)i * Dh + d] * Kb[r * Dh + d];
                    sc[r] = a / sqrt((double)Dh);
                    if (sc[r] > m) m = sc[r];
                }
                for (int r = 0; r < K; r++) l += (sc[r] = exp(sc[r] - m));
                for (int d = 0; d < Dh; d++) {
                    double a = 0;
                    for (int r = 0; r < K; r++) a += sc[r] * Vb[r * Dh + d];
                    out[xo + (size_t)i * Dh + d] = (float)(a / l);
                }
            }
        }
    free(Kb); free(Vb); free(sc);
}

const attn_ops attn_linformer = {
    .name = "linformer",
    .summary = "Linformer: keys and values projected along the length to K rows by learned E, F; O(N K)",
    .source = "Wang et al., Linformer: Self-Attention with Linear Complexity, arXiv 2006.04768",
    .schema = linformer_schema,
    .n_schema = (int)LRA_ARRAY_LEN(linformer_schema),
    .params_size = sizeof(linformer_params),
    .caps = ATTN_CAP_KEY_MASK | ATTN_CAP_MAX_LEN,
    .validate = lf_validate,
    .n_weights = lf_n_weights,
    .cache_bytes = lf_cache,
    .scratch_bytes = lf_scratch,
    .flops = lf_flops,
    .init = lf_init,
    .forward = lf_forward,
    .backward = lf_backward,
    .reference = lf_reference,
};
