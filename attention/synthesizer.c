/* synthesizer.c - Synthesizer attention (Tay, Bahri, Metzler, Juan, Zhao, Zheng, "Synthesizer:
 * Rethinking Self-Attention in Transformer Models", ICML 2021, arXiv 2005.00743; spec:
 * reference/attention.md §9.3, LRA notes lra.md §3 and §5).
 *
 * Letters: B batch, H heads, N length, Dh head size, ML = max(max_len, N) the length the learned
 * logits are sized for, k rank of the factorised random logits, TJ key columns per tile.
 *
 * The attention logits are synthesised instead of (or besides) computed from q.k:
 *   mode dense   S_ij = W2_h[:, j] . relu(W1_h q_i + b1_h) + b2_h[j]   (per head, a 2-layer MLP
 *                on the query row, Dh -> Dh -> ML; the paper's F(X_i) on the head's input)
 *   mode random  S_ij = R_h[i][j]                    (a learned (ML, ML) matrix per head)
 *     factorized S_ij = R1_h[i] . R2_h[:, j]         (R1 (ML, k), R2 (k, ML))
 *   mix_dot      adds s q_i.k_j, s = 1/sqrt(Dh) (the paper's mixtures, e.g. R + V; LRA's encoder
 *                default ignore_dot_product=False is mix_dot: true with mode random)
 * then O = softmax(S + mask) V over keys j < N: a length-N input uses the top-left N x N block of
 * the ML-sized logits (Linformer-style column slicing; attention.md §9.3). Key padding masks the
 * key columns; causal (j <= i) is supported by masking too, and is exact since row i reads only
 * its own row of the synthesised logits and keys j <= i. Dropout on the probabilities uses
 * attn_dropout_scale.
 *
 * Dense by nature: every row attends to all N keys, O(N^2 Dh) work, and the random mode has
 * O(ML^2) parameters. The N x N matrix is never stored, though: the forward keeps the row
 * log-sum-exp L (cache B*H*N floats) and the backward recomputes logits row by row:
 *   pass A, parallel over (head, key tile): dV, dK and the key-indexed parameter gradients
 *            (R columns, R2, W2, b2), summing over b and rows in a fixed order;
 *   pass B, parallel over (head, query tile): dQ and the query-indexed ones (R1; dense: the MLP
 *            input gradient, whose W1/b1 sums run afterwards in pass C, parallel over (head, row
 *            of W1)).
 * Every output element has one owner and a fixed summation order, so results do not depend on
 * the thread count. Scratch: k and v transposed once per (b,h) plus, in dense mode, the MLP
 * pre-activations and their gradients (all O(B*H*N*Dh)), and O(N + TI*TJ) per thread
 * (omp_get_max_threads() slices).
 *
 * factorized applies to mode random only (the paper's factorised dense variant is not
 * implemented; validate rejects it).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "../lra/common.h"
#include "attention.h"
#include "fastmath.h"

enum { SY_DENSE = 0, SY_RANDOM = 1 };

typedef struct {
    int mode;       /* SY_DENSE, SY_RANDOM */
    int factorized; /* random: R = R1 R2 */
    int k;          /* rank of the factorisation */
    int mix_dot;    /* add s q.k to the synthesised logits */
} synthesizer_params;

static const param_def synthesizer_schema[] = {
    P_ENUM(synthesizer_params, mode, "random", "dense|random",
           "dense: logits from a per-head 2-layer MLP of the query (Dh -> Dh -> max_len); random: a learned "
           "(max_len x max_len) logit matrix per head (LRA's encoder default)"),
    P_BOOL(synthesizer_params, factorized, "false",
           "random mode: logits R1 R2 with R1 (max_len x k), R2 (k x max_len) (LRA text config: factorized_random)"),
    P_INT(synthesizer_params, k, "32", 1, 4096, "rank of the factorised random logits (LRA: 32)"),
    P_BOOL(synthesizer_params, mix_dot, "false",
           "add dot-product logits q.k/sqrt(Dh) to the synthesised ones (the paper's mixtures; LRA's encoder default "
           "ignore_dot_product=False is mix_dot: true)"),
};

#define SY_ALIGN 64
#define SY_TJ 64 /* key columns per pass-A tile */
#define SY_TI 32 /* query rows per forward / pass-B tile */

/* ---- sizes ---- */

static int sy_ml(const attn_shape *s) { return LRA_MAX(s->max_len, s->N); }

/* Offsets (floats) of the weight tensors inside L->w, all heads of a tensor together. */
typedef struct {
    size_t W1, b1, W2, b2; /* dense: (H,Dh,Dh) (H,Dh) (H,Dh,ML) (H,ML) */
    size_t R;              /* random: (H,ML,ML) */
    size_t R1, R2;         /* factorised: (H,ML,k) (H,k,ML) */
    size_t total;
} sy_layout;

static sy_layout sy_weights(const synthesizer_params *p, const attn_shape *s) {
    sy_layout w;
    memset(&w, 0, sizeof w);
    size_t H = (size_t)s->H, Dh = (size_t)s->Dh, ML = (size_t)sy_ml(s), k = (size_t)p->k;
    if (p->mode == SY_DENSE) {
        w.W1 = 0;
        w.b1 = H * Dh * Dh;
        w.W2 = w.b1 + H * Dh;
        w.b2 = w.W2 + H * Dh * ML;
        w.total = w.b2 + H * ML;
    } else if (p->factorized) {
        w.R1 = 0;
        w.R2 = H * ML * k;
        w.total = 2 * H * ML * k;
    } else {
        w.R = 0;
        w.total = H * ML * ML;
    }
    return w;
}

static int synthesizer_validate(const void *params, const attn_shape *s, char *err, size_t errlen) {
    const synthesizer_params *p = params;
    if (p->factorized && p->mode == SY_DENSE)
        return lra_errorf(err, errlen, "factorized: applies to mode random only (the factorised dense synthesizer is "
                          "not implemented)");
    if (s->Nk != s->N)
        return lra_errorf(err, errlen, "synthesizer: segment memory (Nk %d != N %d) is not supported", s->Nk, s->N);
    if (s->max_len > 0 && s->max_len < s->N)
        return lra_errorf(err, errlen, "max_len %d < sequence length %d: the synthesised logits are sized for max_len",
                          s->max_len, s->N);
    return 0;
}

static size_t synthesizer_n_weights(const void *params, const attn_shape *s) {
    return sy_weights(params, s).total;
}

static size_t synthesizer_cache_bytes(const void *params, const attn_shape *s) {
    (void)params;
    return (size_t)s->B * s->H * s->N * sizeof(float);
}

typedef struct {
    float *S, *P, *dP, *keep; /* (N) */
    float *hid, *dhid;       /* (Dh) */
    double *acc;             /* (max(Dh,k)) */
    double *tdv, *tdk;       /* (TJ,Dh) */
    double *tdw;             /* (max(Dh,k),TJ) */
    double *tdb;             /* (TJ) */
    float *Pb, *Sb;          /* (TI,TJ) pass A row block: P keep, dS */
    float *hb;               /* (TI,Dh) pass A row block: relu(pre) */
    float *fo;               /* (max(Dh,TJ)) */
} sy_tls;

static void *sy_bump(char **cur, size_t *used, size_t bytes) {
    size_t a = (*used + SY_ALIGN - 1) & ~(size_t)(SY_ALIGN - 1);
    *used = a + bytes;
    return *cur ? *cur + a : NULL;
}

static size_t sy_tls_layout(const synthesizer_params *p, const attn_shape *s, char *base, sy_tls *t) {
    size_t u = 0;
    char *b = base;
    size_t N = (size_t)LRA_MAX(s->N, 1), Dh = (size_t)s->Dh, F = sizeof(float), D = sizeof(double);
    size_t wide = (size_t)LRA_MAX(s->Dh, p->k);
    sy_tls x;
    x.S = sy_bump(&b, &u, N * F);
    x.P = sy_bump(&b, &u, N * F);
    x.dP = sy_bump(&b, &u, N * F);
    x.keep = sy_bump(&b, &u, N * F);
    x.hid = sy_bump(&b, &u, Dh * F);
    x.dhid = sy_bump(&b, &u, Dh * F);
    x.acc = sy_bump(&b, &u, wide * D);
    x.tdv = sy_bump(&b, &u, SY_TJ * Dh * D);
    x.tdk = sy_bump(&b, &u, SY_TJ * Dh * D);
    x.tdw = sy_bump(&b, &u, wide * SY_TJ * D);
    x.tdb = sy_bump(&b, &u, SY_TJ * D);
    x.Pb = sy_bump(&b, &u, SY_TI * SY_TJ * F);
    x.Sb = sy_bump(&b, &u, SY_TI * SY_TJ * F);
    x.hb = sy_bump(&b, &u, SY_TI * Dh * F);
    x.fo = sy_bump(&b, &u, (Dh > SY_TJ ? Dh : SY_TJ) * F);
    if (t) *t = x;
    return (u + SY_ALIGN - 1) & ~(size_t)(SY_ALIGN - 1);
}

/* Shared scratch (first, independent of the thread count): D (B,H,N); dense: pre-activations
 * and their gradients (B,H,N,Dh) each; k and v transposed per (b,h), (B,H,Dh,N) each (transposed
 * once, not once per tile). */
static size_t sy_shared_bytes(const synthesizer_params *p, const attn_shape *s) {
    size_t bhn = (size_t)s->B * s->H * s->N;
    size_t f = bhn + (p->mode == SY_DENSE ? 2 * bhn * (size_t)s->Dh : 0) + 2 * bhn * (size_t)s->Dh;
    return (f * sizeof(float) + SY_ALIGN - 1) & ~(size_t)(SY_ALIGN - 1);
}

static size_t synthesizer_scratch_bytes(const void *params, const attn_shape *s, int n_threads) {
    return sy_shared_bytes(params, s) + (size_t)LRA_MAX(n_threads, 1) * sy_tls_layout(params, s, NULL, NULL);
}

static double synthesizer_flops(const void *params, const attn_shape *s) {
    const synthesizer_params *p = params;
    double N = s->N, Dh = s->Dh, vis = s->causal ? N * (N + 1) / 2 : N * N;
    double f = 2.0 * vis * Dh; /* P V */
    if (p->mode == SY_DENSE) f += 2.0 * N * Dh * Dh + 2.0 * vis * Dh;
    else if (p->factorized) f += 2.0 * vis * p->k;
    if (p->mix_dot) f += 2.0 * vis * Dh;
    return (double)s->B * s->H * f;
}

/* dense: W1, W2 ~ N(0, 1/Dh) (lecun normal, flax Dense's default; fan-in Dh for both), biases 0.
 * random: R ~ N(0, 1/ML) (lecun normal over a row: near-uniform attention at the start).
 * factorised: R1, R2 ~ N(0, 1/k) (so that R1 R2 has entries of std 1/sqrt(k)). */
static void synthesizer_init(attn_layer *L, rng_t *r) {
    const synthesizer_params *p = L->params;
    const attn_shape *s = &L->shape;
    sy_layout w = sy_weights(p, s);
    size_t H = (size_t)s->H, Dh = (size_t)s->Dh, ML = (size_t)sy_ml(s);
    memset(L->w, 0, w.total * sizeof(float));
    if (p->mode == SY_DENSE) {
        float sd = 1.0f / sqrtf((float)Dh);
        for (size_t i = 0; i < H * Dh * Dh; i++) L->w[w.W1 + i] = (float)rng_normal(r) * sd;
        for (size_t i = 0; i < H * Dh * ML; i++) L->w[w.W2 + i] = (float)rng_normal(r) * sd;
    } else if (p->factorized) {
        float sd = 1.0f / sqrtf((float)p->k);
        for (size_t i = 0; i < w.total; i++) L->w[i] = (float)rng_normal(r) * sd;
    } else {
        float sd = 1.0f / sqrtf((float)ML);
        for (size_t i = 0; i < w.total; i++) L->w[i] = (float)rng_normal(r) * sd;
    }
}

/* ---- shared pieces ---- */

typedef struct {
    const synthesizer_params *p;
    const attn_shape *s;
    const attn_layer *L;
    sy_layout w;
    int ML;
    float scale;
    int drop;
} sy_ctx;

static sy_ctx sy_make_ctx(const attn_layer *L) {
    sy_ctx c;
    c.p = L->params;
    c.s = &L->shape;
    c.L = L;
    c.w = sy_weights(c.p, c.s);
    c.ML = sy_ml(c.s);
    c.scale = 1.0f / sqrtf((float)c.s->Dh);
    c.drop = L->training && L->dropout > 0.0f;
    return c;
}

/* Keys visible to row i: [0, sy_jmax). */
static inline int sy_jmax(const sy_ctx *c, int i) { return c->s->causal ? i + 1 : c->s->N; }

/* pre = W1_h q + b1_h (Dh). */
static void sy_pre(const sy_ctx *c, const float *w, int h, const float *qi, float *pre) {
    int Dh = c->s->Dh;
    const float *W1 = w + c->w.W1 + (size_t)h * Dh * Dh, *b1 = w + c->w.b1 + (size_t)h * Dh;
    for (int r = 0; r < Dh; r++) {
        float a = b1[r];
        for (int e = 0; e < Dh; e++) a = LRA_FMAF(W1[(size_t)r * Dh + e], qi[e], a);
        pre[r] = a;
    }
}

/* Logits S[j - j0] of row i for keys j in [j0, j1): synthesised part, + s q.k (KT: keys
 * transposed with leading dimension ld, column 0 = key j0), -inf at padded keys. pre is row i's
 * MLP pre-activation (dense). The same function in the forward and both backward passes. */
static void sy_logits(const sy_ctx *c, const float *w, int b, int h, int i, const float *qi, const float *pre,
                      const float *KT, int ld, int j0, int j1, const uint8_t *mask, float *S) {
    int Dh = c->s->Dh, n = j1 - j0, ML = c->ML;
    if (c->p->mode == SY_DENSE) {
        const float *W2 = w + c->w.W2 + (size_t)h * Dh * ML + j0, *b2 = w + c->w.b2 + (size_t)h * ML + j0;
        for (int x = 0; x < n; x++) S[x] = b2[x];
        for (int d = 0; d < Dh; d++) {
            float hd = pre[d] > 0.0f ? pre[d] : 0.0f;
            if (hd == 0.0f) continue;
            const float *row = W2 + (size_t)d * ML;
            for (int x = 0; x < n; x++) S[x] = LRA_FMAF(hd, row[x], S[x]);
        }
    } else if (c->p->factorized) {
        int K = c->p->k;
        const float *r1 = w + c->w.R1 + ((size_t)h * ML + i) * K, *R2 = w + c->w.R2 + (size_t)h * K * ML + j0;
        for (int x = 0; x < n; x++) S[x] = 0.0f;
        for (int a = 0; a < K; a++) {
            const float ra = r1[a], *row = R2 + (size_t)a * ML;
            for (int x = 0; x < n; x++) S[x] = LRA_FMAF(ra, row[x], S[x]);
        }
    } else {
        memcpy(S, w + c->w.R + ((size_t)h * ML + i) * ML + j0, sizeof(float) * n);
    }
    if (c->p->mix_dot) {
        for (int e = 0; e < Dh; e++) {
            const float qe = qi[e] * c->scale, *row = KT + (size_t)e * ld;
            for (int x = 0; x < n; x++) S[x] = LRA_FMAF(qe, row[x], S[x]);
        }
    }
    if (mask) {
        const uint8_t *mb = mask + (size_t)b * c->s->N + j0;
        for (int x = 0; x < n; x++) S[x] = mb[x] ? S[x] : -INFINITY;
    }
}

static void sy_transpose(const float *x, int n, int Dh, float *xt, int ld) {
    for (int j = 0; j < n; j++)
        for (int e = 0; e < Dh; e++) xt[(size_t)e * ld + j] = x[(size_t)j * Dh + e];
}

/* sum_j a[j] b[j] in double with 8 independent lanes (a fixed order that vectorises). */
static double sy_dot_long(const float *a, const float *b, int n) {
    double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) acc[l] += (double)a[j + l] * b[j + l];
    double s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; j < n; j++) s += (double)a[j] * b[j];
    return s;
}

/* out[e] = sum_k w[k] X[k*ldx + e] in double, e < Dh, k < n in order. A fixed-width local
 * accumulator stays in registers (through a pointer it is stored and reloaded every row). */
static void sy_wsum_rows(const float *w, const float *X, size_t ldx, int n, int Dh, double *out) {
    int e0 = 0;
    for (; e0 + 8 <= Dh; e0 += 8) {
        double acc[8];
        for (int e = 0; e < 8; e++) acc[e] = 0.0;
        for (int k = 0; k < n; k++) {
            const double wk = w[k];
            const float *x = X + (size_t)k * ldx + e0;
            for (int e = 0; e < 8; e++) acc[e] += wk * x[e];
        }
        for (int e = 0; e < 8; e++) out[e0 + e] = acc[e];
    }
    for (int e = e0; e < Dh; e++) {
        double a = 0.0;
        for (int k = 0; k < n; k++) a += (double)w[k] * X[(size_t)k * ldx + e];
        out[e] = a;
    }
}

/* out[c] = sum_r w[r*ws] X[r*ldx + c] for c < width, r < nr (rows in order), in float: the
 * short per-block sums of pass A (at most TI rows; the long sums across blocks are in double). */
static void sy_wsum_f(const float *w, size_t ws, const float *X, size_t ldx, int nr, int width, float *out) {
    int c0 = 0;
    for (; c0 + 16 <= width; c0 += 16) {
        float acc[16];
        for (int c = 0; c < 16; c++) acc[c] = 0.0f;
        for (int r = 0; r < nr; r++) {
            const float wr = w[(size_t)r * ws], *x = X + (size_t)r * ldx + c0;
            for (int c = 0; c < 16; c++) acc[c] = LRA_FMAF(wr, x[c], acc[c]);
        }
        for (int c = 0; c < 16; c++) out[c0 + c] = acc[c];
    }
    for (int c = c0; c < width; c++) {
        float a = 0.0f;
        for (int r = 0; r < nr; r++) a = LRA_FMAF(w[(size_t)r * ws], X[(size_t)r * ldx + c], a);
        out[c] = a;
    }
}

static sy_tls sy_thread_tls(const attn_layer *L, size_t per) {
    int tid = 0;
#ifdef _OPENMP
    tid = omp_get_thread_num();
#endif
    sy_tls t;
    sy_tls_layout(L->params, &L->shape, (char *)L->scratch + sy_shared_bytes(L->params, &L->shape) + (size_t)tid * per,
                  &t);
    return t;
}

/* Views into the shared scratch. */
typedef struct {
    float *D, *pre, *dpre, *KT, *VT;
} sy_shared;

static sy_shared sy_shared_view(const attn_layer *L) {
    const synthesizer_params *p = L->params;
    const attn_shape *s = &L->shape;
    size_t bhn = (size_t)s->B * s->H * s->N, Dh = (size_t)s->Dh;
    sy_shared v;
    v.D = L->scratch;
    v.pre = v.D + bhn;
    v.dpre = p->mode == SY_DENSE ? v.pre + bhn * Dh : v.pre;
    v.KT = p->mode == SY_DENSE ? v.dpre + bhn * Dh : v.pre;
    v.VT = v.KT + bhn * Dh;
    return v;
}

static int sy_parallel(const sy_ctx *c) { return (double)c->s->B * c->s->H * c->s->N * c->s->N * c->s->Dh >= 2e5; }

/* ---- forward ---- */

/* q, k, v, out (B,H,N,Dh); key_mask (B,N) or NULL. Rows with no visible key get 0. */
static void synthesizer_forward(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *mask,
                                float *out) {
    sy_ctx c = sy_make_ctx(L);
    const attn_shape *s = c.s;
    int N = s->N, Dh = s->Dh, nti = LRA_CEIL_DIV(N, SY_TI);
    size_t per = sy_tls_layout(c.p, s, NULL, NULL);
    float *Lc = L->cache;
    sy_shared sh = sy_shared_view(L);
    int items = s->B * s->H * nti;
    if (c.p->mix_dot) {
#pragma omp parallel for schedule(static) if (sy_parallel(&c))
        for (int bh = 0; bh < s->B * s->H; bh++)
            sy_transpose(k + (size_t)bh * N * Dh, N, Dh, sh.KT + (size_t)bh * Dh * N, N);
    }
#pragma omp parallel for schedule(dynamic, 1) if (sy_parallel(&c))
    for (int it = 0; it < items; it++) {
        int bh = it / nti, ti = it % nti, b = bh / s->H, h = bh % s->H;
        sy_tls t = sy_thread_tls(L, per);
        const float *qb = q + (size_t)bh * N * Dh, *vb = v + (size_t)bh * N * Dh, *KT = sh.KT + (size_t)bh * Dh * N;
        int i0 = ti * SY_TI, i1 = LRA_MIN(N, i0 + SY_TI);
        for (int i = i0; i < i1; i++) {
            const float *qi = qb + (size_t)i * Dh;
            float *oi = out + ((size_t)bh * N + i) * Dh;
            int jm = sy_jmax(&c, i);
            if (c.p->mode == SY_DENSE) sy_pre(&c, L->w, h, qi, t.hid);
            sy_logits(&c, L->w, b, h, i, qi, t.hid, KT, N, 0, jm, mask, t.S);
            float m = -INFINITY;
            for (int j = 0; j < jm; j++) m = t.S[j] > m ? t.S[j] : m;
            if (m == -INFINITY) {
                memset(oi, 0, sizeof(float) * Dh);
                Lc[(size_t)bh * N + i] = INFINITY;
                continue;
            }
            for (int j = 0; j < jm; j++) t.P[j] = lra_expf(t.S[j] - m);
            double l = 0;
            for (int j = 0; j < jm; j++) l += t.P[j];
            if (c.drop)
                for (int j = 0; j < jm; j++) t.P[j] *= attn_dropout_scale(L, b, h, i, j);
            sy_wsum_rows(t.P, vb, (size_t)Dh, jm, Dh, t.acc);
            for (int e = 0; e < Dh; e++) oi[e] = (float)(t.acc[e] / l);
            Lc[(size_t)bh * N + i] = m + (float)log(l);
        }
    }
}

/* ---- backward ---- */

/* P, dP and dS = P (keep dP - D) for row i over keys [j0, j1) whose logits are in t->S; VT has
 * leading dimension ld with column 0 = key j0. Leaves P keep in t->P and dS in t->dP. */
static void sy_row_grad(const sy_ctx *c, int b, int h, int i, float Li, float Di, const float *doi, const float *VT,
                        int ld, int j0, int j1, sy_tls *t) {
    int Dh = c->s->Dh, n = j1 - j0;
    for (int x = 0; x < n; x++) t->P[x] = lra_expf(t->S[x] - Li);
    for (int x = 0; x < n; x++) t->dP[x] = 0.0f;
    for (int e = 0; e < Dh; e++) {
        const float de = doi[e], *row = VT + (size_t)e * ld;
        for (int x = 0; x < n; x++) t->dP[x] = LRA_FMAF(de, row[x], t->dP[x]);
    }
    if (c->drop) {
        for (int x = 0; x < n; x++) {
            float kp = t->P[x] == 0.0f ? 0.0f : attn_dropout_scale(c->L, b, h, i, j0 + x);
            t->dP[x] = t->P[x] * (kp * t->dP[x] - Di);
            t->P[x] *= kp;
        }
    } else {
        for (int x = 0; x < n; x++) t->dP[x] = t->P[x] * (t->dP[x] - Di);
    }
}

/* q, k, v, out, dout (B,H,N,Dh). Writes dq, dk, dv; adds into L->dw. */
static void synthesizer_backward(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *mask,
                                 const float *out, const float *dout, float *dq, float *dk, float *dv) {
    sy_ctx c = sy_make_ctx(L);
    const attn_shape *s = c.s;
    int N = s->N, Dh = s->Dh, H = s->H, B = s->B, ML = c.ML, dense = c.p->mode == SY_DENSE;
    int K = c.p->k, fact = c.p->mode == SY_RANDOM && c.p->factorized, raw = c.p->mode == SY_RANDOM && !fact;
    size_t per = sy_tls_layout(c.p, s, NULL, NULL), bhn = (size_t)B * H * N;
    const float *Lc = L->cache;
    sy_shared sh = sy_shared_view(L);
    float *D = sh.D, *pre = sh.pre, *dpre = sh.dpre;
    const float *w = L->w;
    float *dw = L->dw;
    int par = sy_parallel(&c);

    /* Pre-pass: D_i = dout_i . out_i; dense: MLP pre-activations. */
#pragma omp parallel for schedule(static) if (par)
    for (int bh = 0; bh < B * H; bh++) {
        sy_transpose(v + (size_t)bh * N * Dh, N, Dh, sh.VT + (size_t)bh * Dh * N, N);
        if (c.p->mix_dot) sy_transpose(k + (size_t)bh * N * Dh, N, Dh, sh.KT + (size_t)bh * Dh * N, N);
        for (int i = 0; i < N; i++) {
            size_t r = (size_t)bh * N + i;
            double a = 0;
            for (int e = 0; e < Dh; e++) a += (double)dout[r * Dh + e] * out[r * Dh + e];
            D[r] = (float)a;
            if (dense) sy_pre(&c, w, bh % H, q + r * Dh, pre + r * Dh);
        }
    }

    /* Pass A: (head, key tile) owns dv, dk of those keys and the key-indexed parameter grads. */
    int ntj = LRA_CEIL_DIV(N, SY_TJ);
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int it = 0; it < H * ntj; it++) {
        int h = it / ntj, j0 = (it % ntj) * SY_TJ, j1 = LRA_MIN(N, j0 + SY_TJ), n = j1 - j0;
        sy_tls t = sy_thread_tls(L, per);
        int wide = dense ? Dh : (fact ? K : 0);
        memset(t.tdw, 0, sizeof(double) * (size_t)wide * SY_TJ);
        memset(t.tdb, 0, sizeof(double) * SY_TJ);
        for (int b = 0; b < B; b++) {
            size_t bh = (size_t)b * H + h;
            const float *qb = q + bh * N * Dh;
            const float *KT = sh.KT + bh * Dh * N + j0, *VT = sh.VT + bh * Dh * N + j0; /* column 0 = key j0 */
            memset(t.tdv, 0, sizeof(double) * SY_TJ * Dh);
            memset(t.tdk, 0, sizeof(double) * SY_TJ * Dh);
            /* Rows in blocks of TI: P keep and dS of the block over the tile's columns go to Pb, Sb
             * (zero where invisible), then every tile gradient is a small product of the block,
             * summed in float over the block's rows and in double across blocks. */
            for (int ib = s->causal ? j0 : 0; ib < N; ib += SY_TI) {
                int nr = LRA_MIN(SY_TI, N - ib);
                memset(t.Pb, 0, sizeof(float) * SY_TI * SY_TJ);
                memset(t.Sb, 0, sizeof(float) * SY_TI * SY_TJ);
                for (int r = 0; r < nr; r++) {
                    int i = ib + r;
                    float Li = Lc[bh * N + i];
                    if (dense)
                        for (int d = 0; d < Dh; d++) {
                            float pv = pre[(bh * N + i) * Dh + d];
                            t.hb[(size_t)r * Dh + d] = pv > 0.0f ? pv : 0.0f;
                        }
                    if (Li == INFINITY || (s->causal && i < j0)) continue;
                    int je = s->causal ? LRA_MIN(j1, i + 1) : j1, m = je - j0;
                    const float *qi = qb + (size_t)i * Dh, *doi = dout + (bh * N + i) * Dh;
                    const float *pi = dense ? pre + (bh * N + i) * Dh : NULL;
                    sy_logits(&c, w, b, h, i, qi, pi, KT, N, j0, je, mask, t.S);
                    sy_row_grad(&c, b, h, i, Li, D[bh * N + i], doi, VT, N, j0, je, &t);
                    memcpy(t.Pb + (size_t)r * SY_TJ, t.P, sizeof(float) * m);
                    memcpy(t.Sb + (size_t)r * SY_TJ, t.dP, sizeof(float) * m);
                }
                const float *dob = dout + (bh * N + ib) * Dh, *qblk = qb + (size_t)ib * Dh;
                for (int x = 0; x < n; x++) { /* dv_j += sum_r P_rj dout_r; dk_j += s sum_r dS_rj q_r */
                    sy_wsum_f(t.Pb + x, SY_TJ, dob, (size_t)Dh, nr, Dh, t.fo);
                    double *tv = t.tdv + (size_t)x * Dh;
                    for (int e = 0; e < Dh; e++) tv[e] += t.fo[e];
                    if (c.p->mix_dot) {
                        sy_wsum_f(t.Sb + x, SY_TJ, qblk, (size_t)Dh, nr, Dh, t.fo);
                        double *tk = t.tdk + (size_t)x * Dh;
                        for (int e = 0; e < Dh; e++) tk[e] += (double)t.fo[e] * c.scale;
                    }
                }
                if (raw) { /* dR[h][i][j] += dS: B terms per element, added in b order */
                    for (int r = 0; r < nr; r++) {
                        float *dr = dw + c.w.R + ((size_t)h * ML + ib + r) * ML + j0;
                        const float *sr = t.Sb + (size_t)r * SY_TJ;
                        for (int x = 0; x < n; x++) dr[x] += sr[x];
                    }
                } else if (fact) { /* dR2[a][j] += sum_r R1[i_r][a] dS_rj */
                    const float *r1 = w + c.w.R1 + ((size_t)h * ML + ib) * K;
                    for (int a = 0; a < K; a++) {
                        sy_wsum_f(r1 + a, (size_t)K, t.Sb, SY_TJ, nr, n, t.fo);
                        double *row = t.tdw + (size_t)a * SY_TJ;
                        for (int x = 0; x < n; x++) row[x] += t.fo[x];
                    }
                } else { /* dense: dW2[d][j] += sum_r hid_rd dS_rj, db2[j] += sum_r dS_rj */
                    for (int d = 0; d < Dh; d++) {
                        sy_wsum_f(t.hb + d, (size_t)Dh, t.Sb, SY_TJ, nr, n, t.fo);
                        double *row = t.tdw + (size_t)d * SY_TJ;
                        for (int x = 0; x < n; x++) row[x] += t.fo[x];
                    }
                    for (int r = 0; r < nr; r++)
                        for (int x = 0; x < n; x++) t.tdb[x] += t.Sb[(size_t)r * SY_TJ + x];
                }
            }
            float *dvb = dv + bh * N * Dh, *dkb = dk + bh * N * Dh;
            for (int x = 0; x < n; x++)
                for (int e = 0; e < Dh; e++) {
                    dvb[(size_t)(j0 + x) * Dh + e] = (float)t.tdv[(size_t)x * Dh + e];
                    dkb[(size_t)(j0 + x) * Dh + e] = (float)t.tdk[(size_t)x * Dh + e];
                }
        }
        if (fact) {
            float *dR2 = dw + c.w.R2 + (size_t)h * K * ML + j0;
            for (int a = 0; a < K; a++)
                for (int x = 0; x < n; x++) dR2[(size_t)a * ML + x] += (float)t.tdw[(size_t)a * SY_TJ + x];
        } else if (dense) {
            float *dW2 = dw + c.w.W2 + (size_t)h * Dh * ML + j0, *db2 = dw + c.w.b2 + (size_t)h * ML + j0;
            for (int d = 0; d < Dh; d++)
                for (int x = 0; x < n; x++) dW2[(size_t)d * ML + x] += (float)t.tdw[(size_t)d * SY_TJ + x];
            for (int x = 0; x < n; x++) db2[x] += (float)t.tdb[x];
        }
    }

    /* Pass B: (head, query tile) owns dq of those rows, dR1 rows and (dense) dpre. */
    if (!c.p->mix_dot && !dense && !fact) {
        memset(dq, 0, sizeof(float) * bhn * Dh);
        return;
    }
    int nti = LRA_CEIL_DIV(N, SY_TI);
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int it = 0; it < H * nti; it++) {
        int h = it / nti, i0 = (it % nti) * SY_TI, i1 = LRA_MIN(N, i0 + SY_TI);
        sy_tls t = sy_thread_tls(L, per);
        for (int b = 0; b < B; b++) {
            size_t bh = (size_t)b * H + h;
            const float *qb = q + bh * N * Dh, *kb = k + bh * N * Dh;
            const float *KT = sh.KT + bh * Dh * N, *VT = sh.VT + bh * Dh * N;
            for (int i = i0; i < i1; i++) {
                float *dqi = dq + (bh * N + i) * Dh;
                float Li = Lc[bh * N + i];
                memset(dqi, 0, sizeof(float) * Dh);
                if (dense) memset(dpre + (bh * N + i) * Dh, 0, sizeof(float) * Dh);
                if (Li == INFINITY) continue;
                int jm = sy_jmax(&c, i);
                const float *qi = qb + (size_t)i * Dh, *doi = dout + (bh * N + i) * Dh;
                const float *pi = dense ? pre + (bh * N + i) * Dh : NULL;
                sy_logits(&c, w, b, h, i, qi, pi, KT, N, 0, jm, mask, t.S);
                sy_row_grad(&c, b, h, i, Li, D[bh * N + i], doi, VT, N, 0, jm, &t);
                const float *dS = t.dP;
                if (c.p->mix_dot) {
                    sy_wsum_rows(dS, kb, (size_t)Dh, jm, Dh, t.acc);
                    for (int e = 0; e < Dh; e++) dqi[e] = (float)(t.acc[e] * c.scale);
                }
                if (fact) { /* dR1[h][i][a] += sum_j dS_j R2[a][j] */
                    float *dr1 = dw + c.w.R1 + ((size_t)h * ML + i) * K;
                    const float *R2 = w + c.w.R2 + (size_t)h * K * ML;
                    for (int a = 0; a < K; a++) dr1[a] += (float)sy_dot_long(dS, R2 + (size_t)a * ML, jm);
                } else if (dense) { /* dhid_d = sum_j dS_j W2[d][j]; dpre = dhid (pre > 0); dq += W1^T dpre */
                    const float *W2 = w + c.w.W2 + (size_t)h * Dh * ML, *W1 = w + c.w.W1 + (size_t)h * Dh * Dh;
                    float *dp = dpre + (bh * N + i) * Dh;
                    for (int d = 0; d < Dh; d++) dp[d] = pi[d] > 0.0f ? (float)sy_dot_long(dS, W2 + (size_t)d * ML, jm) : 0.0f;
                    for (int r = 0; r < Dh; r++) {
                        if (dp[r] == 0.0f) continue;
                        for (int e = 0; e < Dh; e++) dqi[e] = LRA_FMAF(dp[r], W1[(size_t)r * Dh + e], dqi[e]);
                    }
                }
            }
        }
    }

    /* Pass C (dense): dW1[h][r][e] += sum_{b,i} dpre[r] q[e]; db1[h][r] += sum dpre[r]. */
    if (dense) {
#pragma omp parallel for schedule(static) if (par)
        for (int hr = 0; hr < H * Dh; hr++) {
            int h = hr / Dh, r = hr % Dh;
            sy_tls t = sy_thread_tls(L, per);
            double sb = 0;
            for (int e = 0; e < Dh; e++) t.acc[e] = 0;
            for (int b = 0; b < B; b++) {
                size_t bh = (size_t)b * H + h;
                for (int i = 0; i < N; i++) {
                    double g = dpre[(bh * N + i) * Dh + r];
                    if (g == 0.0) continue;
                    const float *qi = q + (bh * N + i) * Dh;
                    for (int e = 0; e < Dh; e++) t.acc[e] += g * qi[e];
                    sb += g;
                }
            }
            float *dW1 = dw + c.w.W1 + ((size_t)h * Dh + r) * Dh;
            for (int e = 0; e < Dh; e++) dW1[e] += (float)t.acc[e];
            dw[c.w.b1 + (size_t)h * Dh + r] += (float)sb;
        }
    }
}

/* ---- reference: the N x N logits per (b,h), materialised, softmax in double ---- */

static void synthesizer_reference(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *mask,
                                  float *out) {
    const synthesizer_params *p = L->params;
    const attn_shape *s = &L->shape;
    int N = s->N, Dh = s->Dh, ML = sy_ml(s), K = p->k;
    sy_layout wl = sy_weights(p, s);
    const float *w = L->w;
    double *S = xmalloc(sizeof(double) * (size_t)N * N), *hid = xmalloc(sizeof(double) * Dh);
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < s->H; h++) {
            size_t bh = (size_t)b * s->H + h;
            const float *qb = q + bh * N * Dh, *kb = k + bh * N * Dh, *vb = v + bh * N * Dh;
            for (int i = 0; i < N; i++) {
                if (p->mode == SY_DENSE)
                    for (int r = 0; r < Dh; r++) {
                        double a = w[wl.b1 + (size_t)h * Dh + r];
                        for (int e = 0; e < Dh; e++) a += (double)w[wl.W1 + ((size_t)h * Dh + r) * Dh + e] * qb[i * Dh + e];
                        hid[r] = a > 0 ? a : 0;
                    }
                for (int j = 0; j < N; j++) {
                    double x = 0;
                    if (p->mode == SY_DENSE) {
                        x = w[wl.b2 + (size_t)h * ML + j];
                        for (int d = 0; d < Dh; d++) x += hid[d] * w[wl.W2 + ((size_t)h * Dh + d) * ML + j];
                    } else if (p->factorized) {
                        for (int a = 0; a < K; a++)
                            x += (double)w[wl.R1 + ((size_t)h * ML + i) * K + a] * w[wl.R2 + ((size_t)h * K + a) * ML + j];
                    } else {
                        x = w[wl.R + ((size_t)h * ML + i) * ML + j];
                    }
                    if (p->mix_dot) {
                        double d = 0;
                        for (int e = 0; e < Dh; e++) d += (double)qb[i * Dh + e] * kb[j * Dh + e];
                        x += d / sqrt((double)Dh);
                    }
                    int vis = (!mask || mask[(size_t)b * N + j]) && (!s->causal || j <= i);
                    S[(size_t)i * N + j] = vis ? x : -INFINITY;
                }
            }
            for (int i = 0; i < N; i++) {
                double *row = S + (size_t)i * N, m = -INFINITY, z = 0;
                float *oi = out + (bh * N + i) * Dh;
                for (int j = 0; j < N; j++) m = row[j] > m ? row[j] : m;
                for (int e = 0; e < Dh; e++) oi[e] = 0;
                if (m == -INFINITY) continue;
                for (int j = 0; j < N; j++) z += exp(row[j] - m);
                for (int e = 0; e < Dh; e++) {
                    double a = 0;
                    for (int j = 0; j < N; j++)
                        if (row[j] > -INFINITY) a += exp(row[j] - m) / z * attn_dropout_scale(L, b, h, i, j) * vb[j * Dh + e];
                    oi[e] = (float)a;
                }
            }
        }
    free(S);
    free(hid);
}

const attn_ops attn_synthesizer = {
    .name = "synthesizer",
    .summary = "Synthesizer: attention logits from a per-head MLP of the query (dense) or learned outright (random)",
    .source = "Tay, Bahri, Metzler, Juan, Zhao, Zheng 2021, Synthesizer: Rethinking Self-Attention in Transformer "
              "Models, arXiv 2005.00743",
    .schema = synthesizer_schema,
    .n_schema = (int)LRA_ARRAY_LEN(synthesizer_schema),
    .params_size = sizeof(synthesizer_params),
    .caps = ATTN_CAP_CAUSAL | ATTN_CAP_KEY_MASK | ATTN_CAP_MAX_LEN | ATTN_CAP_DROPOUT,
    .validate = synthesizer_validate,
    .n_weights = synthesizer_n_weights,
    .state_bytes = NULL,
    .cache_bytes = synthesizer_cache_bytes,
    .scratch_bytes = synthesizer_scratch_bytes,
    .flops = synthesizer_flops,
    .init = synthesizer_init,
    .begin = NULL,
    .forward = synthesizer_forward,
    .backward = synthesizer_backward,
    .reference = synthesizer_reference,
};
