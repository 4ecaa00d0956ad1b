/* nystromformer.c - Nystromformer attention (Xiong et al., "Nystromformer: A Nystrom-Based
 * Algorithm for Approximating Self-Attention", arXiv 2102.03902; reference/attention.md §9.4;
 * mlpen/Nystromformer LRA/code/attention_nystrom.py).
 *
 * Letters: B batch, H heads, N length (queries = keys), Dh head size, Lm landmarks (`landmarks`),
 * m = min(Lm, number of real tokens) landmarks actually used, T = `pinv_iters`, Kc = `conv`,
 * C rows per chunk.
 *
 * Per (b,h), with s4 = Dh^-1/4 and padded rows of Q and K zeroed:
 *   Q' = s4 Q, K' = s4 K;  Qt, Kt (m, Dh) = segment means of the real rows of Q', K'
 *   K1 = softmax(Q' Kt^T) (N, m);  A = softmax(Qt Kt^T) (m, m);  K3 = softmax(Qt K'^T + pad) (m, N)
 *   O  = K1 . pinv(A) . (K3 V)  [+ depthwise conv over the sequence of the masked V]
 * pinv by the paper's iteration (Razavi et al.): Z0 = A^T / max_j sum_i A_ij,
 *   Z <- Z (13 I - A Z (15 I - A Z (7 I - A Z))) / 4, T times (default 6, as in the paper).
 * Landmarks: segment means over the REAL tokens in order (segment a holds ranks
 * [a n/m, (a+1) n/m) of the n real tokens). When n is a multiple of m and nothing is padded this is
 * the paper's reshape-and-mean; otherwise segments are uneven (sizes differ by at most 1), so any N
 * works without internal padding, and padded tokens never pollute the landmarks (the pitfall in
 * §9.4): appending padding leaves the real outputs unchanged.
 * Deviation from the reference code: the pinv initial scale max_j sum_i A_ij is taken per (b,h), not
 * over the whole batch and all heads (the code's `init_option="original"`), so a batch element never
 * depends on the others.
 * conv (default 0 = off): the authors' LRA code adds a depthwise conv (one kernel of Kc taps per
 * head, shared over Dh, no bias, zero padding Kc/2) over V * mask; their LRA config uses Kc = 35.
 * Its weights (H, Kc) are learned (L->w), initialised like PyTorch's Conv2d: U(-1/sqrt(Kc), 1/sqrt(Kc)).
 * No causal variant (landmarks mix the whole sequence): validate rejects `causal`.
 *
 * Backward: autodiff of the above, through the three softmaxes, the unrolled pinv iteration
 * (iterates recomputed in scratch, O(T m^2)), the segment means and the conv.
 * Cache per (b,h): Qt, Kt, K3 V, pinv(A) K3 V (m, Dh) and the log-sum-exps of K1 (N) and K3 (m).
 * Time O(N m Dh + T m^3), memory O(N + m^2 T) per (b,h)/thread: K1 and K3 are never stored.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../lra/common.h"
#include "attention.h"
#include "fastmath.h"
#include "kernelized.h"

typedef struct {
    int landmarks;  /* Lm */
    int pinv_iters; /* T */
    int conv;       /* Kc, 0 = off */
} nystrom_params;

static const param_def nystrom_schema[] = {
    P_INT(nystrom_params, landmarks, "64", 1, 1024,
          "number of landmarks m (segment means; paper/LRA code: 32-256, 64 common)"),
    P_INT(nystrom_params, pinv_iters, "6", 0, 100, "iterations of the Moore-Penrose pseudo-inverse (paper: 6)"),
    P_INT(nystrom_params, conv, "0", 0, 1025,
          "kernel size of the depthwise conv skip on V (odd; 0 = off; the authors' LRA config uses 35)"),
};

#define NY_C 256

static int m_max(const nystrom_params *p, const attn_shape *s) { return LRA_MIN(p->landmarks, s->N); }

static int ny_validate(const void *params, const attn_shape *s, char *err, size_t errlen) {
    const nystrom_params *p = params;
    if (s->causal)
        return lra_errorf(err, errlen, "nystromformer: causal attention is not supported (landmarks are means over "
                                       "the whole sequence); set causal: false or choose another mechanism");
    if (s->Nk != s->N)
        return lra_errorf(err, errlen, "nystromformer: key length Nk=%d must equal N=%d (no segment memory)", s->Nk, s->N);
    if (p->conv < 0 || (p->conv > 0 && p->conv % 2 == 0))
        return lra_errorf(err, errlen, "nystromformer: conv must be 0 (off) or odd, got %d", p->conv);
    if (p->landmarks < 1) return lra_errorf(err, errlen, "nystromformer: landmarks must be >= 1");
    if (s->Dh < 1 || s->Dh > 1024) return lra_errorf(err, errlen, "nystromformer: head size %d not in [1, 1024]", s->Dh);
    return 0;
}

static size_t ny_n_weights(const void *params, const attn_shape *s) {
    const nystrom_params *p = params;
    return (size_t)s->H * p->conv;
}

float *nystromformer_conv(const attn_layer *L, int h, int grad) {
    const nystrom_params *p = L->params;
    if (p->conv == 0) return NULL;
    return (grad ? L->dw : L->w) + (size_t)h * p->conv;
}

static void ny_init(attn_layer *L, rng_t *r) {
    const nystrom_params *p = L->params;
    size_t n = ny_n_weights(p, &L->shape);
    double a = p->conv > 0 ? 1.0 / sqrt((double)p->conv) : 0;
    for (size_t i = 0; i < n; i++) L->w[i] = (float)((2.0 * rng_double(r) - 1.0) * a);
}

/* ---- sizes ---- */

static size_t al64(size_t b) { return (b + 63) & ~(size_t)63; }

/* cache per (b,h): [m] Qt Kt BV W (Lm', Dh) lse3 (Lm') lse1 (N) */
static size_t cache_floats_bh(const nystrom_params *p, const attn_shape *s) {
    size_t m = (size_t)m_max(p, s);
    return 16 + 4 * m * s->Dh + m + (size_t)s->N;
}

static size_t ny_cache(const void *params, const attn_shape *s) {
    return (size_t)s->B * s->H * cache_floats_bh(params, s) * sizeof(float);
}

typedef struct {
    int *idx, *seg;                       /* (N) real positions, (m+1) segment starts in rank */
    float *Zs;                            /* (T+1, m, m) pinv iterates */
    float *A, *X, *Y1, *P1, *Y2, *P2, *Y3, *dZ, *dX, *dA, *tmp; /* (m, m) */
    float *S, *dS;                        /* (C, m) or (m, C) */
    float *Qc;                            /* (C, Dh) */
    float *part;                          /* (m, Dh) */
    double *acc1, *acc2, *acc3;           /* (m, Dh) */
    double *mx, *l;                       /* (m) */
    float *dQt, *dKt, *dW, *dBV;          /* (m, Dh) float */
} ny_work;

static size_t ny_thread_bytes(const nystrom_params *p, const attn_shape *s, char *base, ny_work *w) {
    size_t m = (size_t)m_max(p, s), Dh = (size_t)s->Dh, N = (size_t)s->N, T = (size_t)p->pinv_iters, off = 0;
#define TAKE(ptr, type, n)                                  \
    do {                                                    \
        if (w) w->ptr = base ? (type *)(base + off) : NULL; \
        off += al64(sizeof(type) * (size_t)(n));            \
    } while (0)
    TAKE(idx, int, N);
    TAKE(seg, int, m + 1);
    TAKE(Zs, float, (T + 1) * m * m);
    TAKE(A, float, m * m);
    TAKE(X, float, m * m);
    TAKE(Y1, float, m * m);
    TAKE(P1, float, m * m);
    TAKE(Y2, float, m * m);
    TAKE(P2, float, m * m);
    TAKE(Y3, float, m * m);
    TAKE(dZ, float, m * m);
    TAKE(dX, float, m * m);
    TAKE(dA, float, m * m);
    TAKE(tmp, float, m * m);
    TAKE(S, float, NY_C * m);
    TAKE(dS, float, NY_C * m);
    TAKE(Qc, float, NY_C * Dh);
    TAKE(part, float, m * Dh);
    TAKE(acc1, double, m * Dh);
    TAKE(acc2, double, m * Dh);
    TAKE(acc3, double, m * Dh);
    TAKE(mx, double, m);
    TAKE(l, double, m);
    TAKE(dQt, float, m * Dh);
    TAKE(dKt, float, m * Dh);
    TAKE(dW, float, m * Dh);
    TAKE(dBV, float, m * Dh);
#undef TAKE
    return off;
}

/* Scratch: a shared block first ((B, H, Kc) conv weight-gradient partials), then one
 * ny_thread_bytes block per thread. */
static size_t ny_shared_bytes(const nystrom_params *p, const attn_shape *s) {
    return al64(sizeof(float) * (size_t)s->B * s->H * p->conv);
}

static size_t ny_scratch(const void *params, const attn_shape *s, int n_threads) {
    const nystrom_params *p = params;
    if (n_threads < 1) n_threads = 1;
    return ny_shared_bytes(p, s) + (size_t)n_threads * ny_thread_bytes(p, s, NULL, NULL);
}

static double ny_flops(const void *params, const attn_shape *s) {
    const nystrom_params *p = params;
    double N = s->N, m = m_max(p, s), Dh = s->Dh, T = p->pinv_iters;
    double per = 2 * N * Dh                 /* landmarks */
                 + 2 * m * m * Dh + 3 * m * m /* A */
                 + T * 4 * 2 * m * m * m      /* pinv: 4 products per iteration */
                 + 2 * m * N * Dh * 2 + 3 * m * N /* K3 and K3 V */
                 + 2 * m * m * Dh              /* Z BV */
                 + 2 * N * m * Dh * 2 + 3 * N * m /* K1 and K1 W */
                 + 2.0 * N * Dh * p->conv;
    return per * s->B * s->H;
}

/* ---- pieces ---- */

/* Real positions and segment boundaries (in rank); returns m (0 when nothing is real). */
static int segments(const uint8_t *mask, int N, int Lm, int *idx, int *seg) {
    int n = 0;
    for (int j = 0; j < N; j++)
        if (!mask || mask[j]) idx[n++] = j;
    int m = LRA_MIN(Lm, n);
    for (int a = 0; a <= m; a++) seg[a] = m ? (int)((long long)a * n / m) : 0;
    return m;
}

/* Xt (m, Dh) = s4 * mean of rows x[idx[r]] over each segment. */
static void seg_means(const float *x, const int *idx, const int *seg, int m, int Dh, float s4, float *Xt) {
    for (int a = 0; a < m; a++) {
        double acc[1024] = {0};
        for (int r = seg[a]; r < seg[a + 1]; r++)
            for (int d = 0; d < Dh; d++) acc[d] += x[(size_t)idx[r] * Dh + d];
        double inv = s4 / (double)(seg[a + 1] - seg[a]);
        for (int d = 0; d < Dh; d++) Xt[(size_t)a * Dh + d] = (float)(acc[d] * inv);
    }
}

/* In-place row softmax of S (n, m), writing lse (n) when non-NULL. */
static void row_softmax(float *S, int n, int m, float *lse) {
    for (int i = 0; i < n; i++) {
        float *restrict row = S + (size_t)i * m;
        float mx = -INFINITY;
        for (int a = 0; a < m; a++) mx = row[a] > mx ? row[a] : mx;
        for (int a = 0; a < m; a++) row[a] = lra_expf(row[a] - mx);
        double l = 0;
        for (int a = 0; a < m; a++) l += row[a];
        float inv = (float)(1.0 / l);
        for (int a = 0; a < m; a++) row[a] *= inv;
        if (lse) lse[i] = mx + (float)log(l);
    }
}

static void add_identity(float *Y, const float *X, float c, int m) { /* Y = c I - X */
    for (int i = 0; i < m * m; i++) Y[i] = -X[i];
    for (int i = 0; i < m; i++) Y[(size_t)i * m + i] += c;
}

/* Z_0..Z_T into w->Zs from A (m, m); returns the column index of the max column sum. */
static int pinv_forward(const float *A, int m, int T, ny_work *w, float *cmax_out) {
    int jmax = 0;
    double cmax = -1;
    for (int j = 0; j < m; j++) {
        double cs = 0;
        for (int i = 0; i < m; i++) cs += A[(size_t)i * m + j];
        if (cs > cmax) cmax = cs, jmax = j;
    }
    float *Z = w->Zs;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < m; j++) Z[(size_t)i * m + j] = (float)(A[(size_t)j * m + i] / cmax);
    for (int t = 0; t < T; t++) {
        const float *Zt = w->Zs + (size_t)t * m * m;
        float *Zn = w->Zs + (size_t)(t + 1) * m * m;
        kz_gemm(0, 0, m, m, m, 1.0f, A, m, Zt, m, 0.0f, w->X, m);
        add_identity(w->Y1, w->X, 7.0f, m);
        kz_gemm(0, 0, m, m, m, 1.0f, w->X, m, w->Y1, m, 0.0f, w->P1, m);
        add_identity(w->Y2, w->P1, 15.0f, m);
        kz_gemm(0, 0, m, m, m, 1.0f, w->X, m, w->Y2, m, 0.0f, w->P2, m);
        add_identity(w->Y3, w->P2, 13.0f, m);
        kz_gemm(0, 0, m, m, m, 0.25f, Zt, m, w->Y3, m, 0.0f, Zn, m);
    }
    *cmax_out = (float)cmax;
    return jmax;
}

/* dA (m, m) from dZ_T (in w->dZ, destroyed), given A and the iterates. */
static void pinv_backward(const float *A, int m, int T, int jmax, float cmax, ny_work *w) {
    memset(w->dA, 0, sizeof(float) * m * m);
    for (int t = T - 1; t >= 0; t--) {
        const float *Zt = w->Zs + (size_t)t * m * m;
        /* recompute the iteration's intermediates */
        kz_gemm(0, 0, m, m, m, 1.0f, A, m, Zt, m, 0.0f, w->X, m);
        add_identity(w->Y1, w->X, 7.0f, m);
        kz_gemm(0, 0, m, m, m, 1.0f, w->X, m, w->Y1, m, 0.0f, w->P1, m);
        add_identity(w->Y2, w->P1, 15.0f, m);
        kz_gemm(0, 0, m, m, m, 1.0f, w->X, m, w->Y2, m, 0.0f, w->P2, m);
        add_identity(w->Y3, w->P2, 13.0f, m);
        /* Zn = Z Y3 / 4 */
        float *dZn = w->dZ, *dY3 = w->tmp;
        kz_gemm(1, 0, m, m, m, 0.25f, Zt, m, dZn, m, 0.0f, dY3, m); /* dY3 = Z^T dZn / 4 */
        /* dP2 = -dY3; dX = dP2 Y2^T; dY2 = X^T dP2 */
        kz_gemm(0, 1, m, m, m, -1.0f, dY3, m, w->Y2, m, 0.0f, w->dX, m);
        float *dY2 = w->P2; /* P2 no longer needed */
        kz_gemm(1, 0, m, m, m, -1.0f, w->X, m, dY3, m, 0.0f, dY2, m);
        /* dP1 = -dY2; dX += dP1 Y1^T; dY1 = X^T dP1; dX -= dY1 */
        kz_gemm(0, 1, m, m, m, -1.0f, dY2, m, w->Y1, m, 1.0f, w->dX, m);
        kz_gemm(1, 0, m, m, m, 1.0f, w->X, m, dY2, m, 1.0f, w->dX, m); /* -dY1 = X^T dY2 */
        /* dZ = dZn Y3^T / 4 + A^T dX;  dA += dX Z^T */
        kz_gemm(0, 1, m, m, m, 1.0f, w->dX, m, Zt, m, 1.0f, w->dA, m);
        kz_gemm(0, 1, m, m, m, 0.25f, dZn, m, w->Y3, m, 0.0f, w->P1, m);
        kz_gemm(1, 0, m, m, m, 1.0f, A, m, w->dX, m, 1.0f, w->P1, m);
        memcpy(w->dZ, w->P1, sizeof(float) * m * m);
    }
    /* Z0 = A^T / cmax, cmax = sum_i A[i, jmax] */
    double dc = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < m; j++) {
            float g = w->dZ[(size_t)i * m + j];
            w->dA[(size_t)j * m + i] += g / cmax;
            dc -= (double)g * A[(size_t)j * m + i];
        }
    dc /= (double)cmax * cmax;
    for (int i = 0; i < m; i++) w->dA[(size_t)i * m + jmax] += (float)dc;
}

typedef struct {
    const attn_layer *L;
    const nystrom_params *p;
    const float *q, *k, *v, *out, *dout;
    const uint8_t *mask;
    float *o, *dq, *dk, *dv;
    float *dconv; /* (B, H, Kc) partials */
    size_t tb;
} ny_call;

typedef struct {
    float *hdr, *Qt, *Kt, *BV, *W, *lse3, *lse1;
} ny_cache_view;

static ny_cache_view cache_view(const ny_call *c, size_t bh) {
    const attn_shape *s = &c->L->shape;
    size_t M = (size_t)m_max(c->p, s), Dh = (size_t)s->Dh;
    float *base = (float *)c->L->cache + bh * cache_floats_bh(c->p, s);
    ny_cache_view v = {.hdr = base, .Qt = base + 16};
    v.Kt = v.Qt + M * Dh;
    v.BV = v.Kt + M * Dh;
    v.W = v.BV + M * Dh;
    v.lse3 = v.W + M * Dh;
    v.lse1 = v.lse3 + M;
    return v;
}

static void conv_forward(const float *w, int Kc, const float *v, const uint8_t *mask, int N, int Dh, float *out) {
    int pad = Kc / 2;
    for (int i = 0; i < N; i++) {
        float *restrict o = out + (size_t)i * Dh;
        for (int t = 0; t < Kc; t++) {
            int j = i + t - pad;
            if (j < 0 || j >= N || (mask && !mask[j])) continue;
            const float *restrict vj = v + (size_t)j * Dh;
            float wt = w[t];
            for (int d = 0; d < Dh; d++) o[d] += wt * vj[d];
        }
    }
}

static void ny_fwd_bh(int b, int h, int tid, void *ctx) {
    ny_call *c = ctx;
    const attn_shape *s = &c->L->shape;
    const nystrom_params *p = c->p;
    const int N = s->N, Dh = s->Dh;
    size_t bh = (size_t)b * s->H + h, xo = bh * N * Dh;
    const float *q = c->q + xo, *k = c->k + xo, *v = c->v + xo;
    float *out = c->o + xo;
    const uint8_t *mask = c->mask ? c->mask + (size_t)b * N : NULL;
    ny_work w;
    ny_thread_bytes(p, s, (char *)c->L->scratch + ny_shared_bytes(p, s) + (size_t)tid * c->tb, &w);
    ny_cache_view cv = cache_view(c, bh);
    const float s4 = powf((float)Dh, -0.25f);
    int m = segments(mask, N, p->landmarks, w.idx, w.seg);
    cv.hdr[0] = (float)m;
    memset(out, 0, sizeof(float) * N * Dh);
    if (m > 0) {
        seg_means(q, w.idx, w.seg, m, Dh, s4, cv.Qt);
        seg_means(k, w.idx, w.seg, m, Dh, s4, cv.Kt);
        kz_gemm(0, 1, m, m, Dh, 1.0f, cv.Qt, Dh, cv.Kt, Dh, 0.0f, w.A, m);
        row_softmax(w.A, m, m, NULL);
        float cmax;
        pinv_forward(w.A, m, p->pinv_iters, &w, &cmax);
        const float *Z = w.Zs + (size_t)p->pinv_iters * m * m;
        /* BV = softmax(Qt K'^T + pad) V, online over key chunks (double accumulators) */
        for (int a = 0; a < m; a++) w.mx[a] = -INFINITY, w.l[a] = 0;
        memset(w.acc1, 0, sizeof(double) * m * Dh);
        for (int j0 = 0; j0 < N; j0 += NY_C) {
            int n = LRA_MIN(NY_C, N - j0);
            kz_gemm(0, 1, m, n, Dh, s4, cv.Qt, Dh, k + (size_t)j0 * Dh, Dh, 0.0f, w.S, n);
            for (int a = 0; a < m; a++) {
                float *restrict row = w.S + (size_t)a * n;
                float cm = -INFINITY;
                for (int j = 0; j < n; j++) {
                    if (mask && !mask[j0 + j]) row[j] = -INFINITY;
                    cm = row[j] > cm ? row[j] : cm;
                }
                double mn = cm > w.mx[a] ? cm : w.mx[a];
                if (mn == -INFINITY) {
                    for (int j = 0; j < n; j++) row[j] = 0.0f;
                    continue;
                }
                double alpha = w.mx[a] == -INFINITY ? 0.0 : exp(w.mx[a] - mn);
                if (alpha != 1.0) {
                    w.l[a] *= alpha;
                    for (int d = 0; d < Dh; d++) w.acc1[(size_t)a * Dh + d] *= alpha;
                }
                w.mx[a] = mn;
                float mf = (float)mn;
                double ls = 0;
                for (int j = 0; j < n; j++) row[j] = lra_expf(row[j] - mf);
                for (int j = 0; j < n; j++) ls += row[j];
                w.l[a] += ls;
            }
            kz_gemm(0, 0, m, Dh, n, 1.0f, w.S, n, v + (size_t)j0 * Dh, Dh, 0.0f, w.part, Dh);
            for (int i = 0; i < m * Dh; i++) w.acc1[i] += w.part[i];
        }
        for (int a = 0; a < m; a++) {
            cv.lse3[a] = (float)(w.mx[a] + log(w.l[a]));
            for (int d = 0; d < Dh; d++) cv.BV[(size_t)a * Dh + d] = (float)(w.acc1[(size_t)a * Dh + d] / w.l[a]);
        }
        kz_gemm(0, 0, m, Dh, m, 1.0f, Z, m, cv.BV, Dh, 0.0f, cv.W, Dh);
        /* out = softmax(Q' Kt^T) W */
        for (int i0 = 0; i0 < N; i0 += NY_C) {
            int n = LRA_MIN(NY_C, N - i0);
            for (int i = 0; i < n; i++) {
                float f = (!mask || mask[i0 + i]) ? s4 : 0.0f;
                for (int d = 0; d < Dh; d++) w.Qc[(size_t)i * Dh + d] = f * q[(size_t)(i0 + i) * Dh + d];
            }
            kz_gemm(0, 1, n, m, Dh, 1.0f, w.Qc, Dh, cv.Kt, Dh, 0.0f, w.S, m);
            row_softmax(w.S, n, m, cv.lse1 + i0);
            kz_gemm(0, 0, n, Dh, m, 1.0f, w.S, m, cv.W, Dh, 0.0f, out + (size_t)i0 * Dh, Dh);
        }
    }
    if (p->conv > 0) conv_forward(nystromformer_conv(c->L, h, 0), p->conv, v, mask, N, Dh, out);
}

static void ny_forward(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *key_mask,
                       float *out) {
    const nystrom_params *p = L->params;
    ny_call c = {.L = L, .p = p, .q = q, .k = k, .v = v, .mask = key_mask, .o = out,
                 .tb = ny_thread_bytes(p, &L->shape, NULL, NULL)};
    kz_parallel_bh(L->shape.B, L->shape.H, ny_fwd_bh, &c);
}

static void ny_bwd_bh(int b, int h, int tid, void *ctx) {
    ny_call *c = ctx;
    const attn_shape *s = &c->L->shape;
    const nystrom_params *p = c->p;
    const int N = s->N, Dh = s->Dh, Kc = p->conv;
    size_t bh = (size_t)b * s->H + h, xo = bh * N * Dh;
    const float *q = c->q + xo, *k = c->k + xo, *v = c->v + xo, *G = c->dout + xo;
    float *dq = c->dq + xo, *dk = c->dk + xo, *dv = c->dv + xo;
    const uint8_t *mask = c->mask ? c->mask + (size_t)b * N : NULL;
    ny_work w;
    ny_thread_bytes(p, s, (char *)c->L->scratch + ny_shared_bytes(p, s) + (size_t)tid * c->tb, &w);
    ny_cache_view cv = cache_view(c, bh);
    const float s4 = powf((float)Dh, -0.25f);
    memset(dq, 0, sizeof(float) * N * Dh);
    memset(dk, 0, sizeof(float) * N * Dh);
    memset(dv, 0, sizeof(float) * N * Dh);
    /* conv: dVm_j = sum_t w_t G_{j-t+pad}; dw_t = sum_i G_i . Vm_{i+t-pad} */
    if (Kc > 0) {
        const float *wc = nystromformer_conv(c->L, h, 0);
        float *dwc = c->dconv + bh * Kc;
        int pad = Kc / 2;
        for (int j = 0; j < N; j++) {
            if (mask && !mask[j]) continue;
            float *restrict dvj = dv + (size_t)j * Dh;
            for (int t = 0; t < Kc; t++) {
                int i = j - t + pad;
                if (i < 0 || i >= N) continue;
                const float *restrict gi = G + (size_t)i * Dh;
                for (int d = 0; d < Dh; d++) dvj[d] += wc[t] * gi[d];
            }
        }
        for (int t = 0; t < Kc; t++) {
            double acc = 0;
            for (int i = 0; i < N; i++) {
                int j = i + t - pad;
                if (j < 0 || j >= N || (mask && !mask[j])) continue;
                float part = 0;
                for (int d = 0; d < Dh; d++) part += G[(size_t)i * Dh + d] * v[(size_t)j * Dh + d];
                acc += part;
            }
            dwc[t] = (float)acc;
        }
    }
    int m = (int)cv.hdr[0];
    if (m == 0) return;
    segments(mask, N, p->landmarks, w.idx, w.seg);
    const int T = p->pinv_iters;
    kz_gemm(0, 1, m, m, Dh, 1.0f, cv.Qt, Dh, cv.Kt, Dh, 0.0f, w.A, m);
    row_softmax(w.A, m, m, NULL);
    float cmax;
    int jmax = pinv_forward(w.A, m, T, &w, &cmax);
    const float *Z = w.Zs + (size_t)T * m * m;
    /* K1 part */
    double *dKt = w.acc1, *dW = w.acc2, *dQt = w.acc3;
    memset(dKt, 0, sizeof(double) * m * Dh);
    memset(dW, 0, sizeof(double) * m * Dh);
    memset(dQt, 0, sizeof(double) * m * Dh);
    for (int i0 = 0; i0 < N; i0 += NY_C) {
        int n = LRA_MIN(NY_C, N - i0);
        for (int i = 0; i < n; i++) {
            float f = (!mask || mask[i0 + i]) ? s4 : 0.0f;
            for (int d = 0; d < Dh; d++) w.Qc[(size_t)i * Dh + d] = f * q[(size_t)(i0 + i) * Dh + d];
        }
        kz_gemm(0, 1, n, m, Dh, 1.0f, w.Qc, Dh, cv.Kt, Dh, 0.0f, w.S, m);
        for (int i = 0; i < n; i++) {
            float *restrict row = w.S + (size_t)i * m, L0 = cv.lse1[i0 + i];
            for (int a = 0; a < m; a++) row[a] = lra_expf(row[a] - L0);
        }
        const float *Gc = G + (size_t)i0 * Dh;
        kz_gemm(1, 0, m, Dh, n, 1.0f, w.S, m, Gc, Dh, 0.0f, w.part, Dh); /* dW += K1^T G */
        for (int x = 0; x < m * Dh; x++) dW[x] += w.part[x];
        kz_gemm(0, 1, n, m, Dh, 1.0f, Gc, Dh, cv.W, Dh, 0.0f, w.dS, m); /* dK1 = G W^T */
        for (int i = 0; i < n; i++) {
            float *restrict pr = w.S + (size_t)i * m, *restrict dr = w.dS + (size_t)i * m;
            double D = 0;
            for (int a = 0; a < m; a++) D += (double)pr[a] * dr[a];
            float Df = (float)D;
            for (int a = 0; a < m; a++) dr[a] = pr[a] * (dr[a] - Df);
        }
        kz_gemm(0, 0, n, Dh, m, 1.0f, w.dS, m, cv.Kt, Dh, 0.0f, dq + (size_t)i0 * Dh, Dh); /* dQ' */
        for (int i = 0; i < n; i++) {
            float f = (!mask || mask[i0 + i]) ? s4 : 0.0f;
            for (int d = 0; d < Dh; d++) dq[(size_t)(i0 + i) * Dh + d] *= f;
        }
        kz_gemm(1, 0, m, Dh, n, 1.0f, w.dS, m, w.Qc, Dh, 0.0f, w.part, Dh); /* dKt += dS1^T Q' */
        for (int x = 0; x < m * Dh; x++) dKt[x] += w.part[x];
    }
    /* W = Z BV: dZ = dW BV^T, dBV = Z^T dW */
    for (int x = 0; x < m * Dh; x++) w.dW[x] = (float)dW[x];
    kz_gemm(0, 1, m, m, Dh, 1.0f, w.dW, Dh, cv.BV, Dh, 0.0f, w.dZ, m);
    kz_gemm(1, 0, m, Dh, m, 1.0f, Z, m, w.dW, Dh, 0.0f, w.dBV, Dh);
    /* K3 part: BV = K3 V; delta_a = dBV_a . BV_a (kept in w.mx) */
    for (int a = 0; a < m; a++) {
        double D = 0;
        for (int d = 0; d < Dh; d++) D += (double)w.dBV[(size_t)a * Dh + d] * cv.BV[(size_t)a * Dh + d];
        w.mx[a] = D;
    }
    for (int j0 = 0; j0 < N; j0 += NY_C) {
        int n = LRA_MIN(NY_C, N - j0);
        const float *kc = k + (size_t)j0 * Dh, *vc = v + (size_t)j0 * Dh;
        kz_gemm(0, 1, m, n, Dh, s4, cv.Qt, Dh, kc, Dh, 0.0f, w.S, n);
        for (int a = 0; a < m; a++) {
            float *restrict row = w.S + (size_t)a * n, L0 = cv.lse3[a];
            for (int j = 0; j < n; j++) row[j] = (mask && !mask[j0 + j]) ? 0.0f : lra_expf(row[j] - L0);
        }
        kz_gemm(1, 0, n, Dh, m, 1.0f, w.S, n, w.dBV, Dh, 1.0f, dv + (size_t)j0 * Dh, Dh); /* dV += K3^T dBV */
        kz_gemm(0, 1, m, n, Dh, 1.0f, w.dBV, Dh, vc, Dh, 0.0f, w.dS, n);                 /* dK3 = dBV V^T */
        for (int a = 0; a < m; a++) {
            float *restrict pr = w.S + (size_t)a * n, *restrict dr = w.dS + (size_t)a * n;
            float Da = (float)w.mx[a];
            for (int j = 0; j < n; j++) dr[j] = pr[j] * (dr[j] - Da);
        }
        kz_gemm(1, 0, n, Dh, m, s4, w.dS, n, cv.Qt, Dh, 0.0f, dk + (size_t)j0 * Dh, Dh); /* dK = s4 dS3^T Qt */
        kz_gemm(0, 0, m, Dh, n, s4, w.dS, n, kc, Dh, 0.0f, w.dQt, Dh);                   /* dQt += s4 dS3 K */
        for (int x = 0; x < m * Dh; x++) dQt[x] += w.dQt[x];
    }
    if (mask)
        for (int j = 0; j < N; j++)
            if (!mask[j]) memset(dk + (size_t)j * Dh, 0, sizeof(float) * Dh);
    /* pinv and A = softmax(Qt Kt^T) */
    pinv_backward(w.A, m, T, jmax, cmax, &w);
    for (int a = 0; a < m; a++) {
        float *restrict pr = w.A + (size_t)a * m, *restrict dr = w.dA + (size_t)a * m;
        double D = 0;
        for (int x = 0; x < m; x++) D += (double)pr[x] * dr[x];
        float Df = (float)D;
        for (int x = 0; x < m; x++) dr[x] = pr[x] * (dr[x] - Df);
    }
    kz_gemm(0, 0, m, Dh, m, 1.0f, w.dA, m, cv.Kt, Dh, 0.0f, w.dQt, Dh);
    kz_gemm(1, 0, m, Dh, m, 1.0f, w.dA, m, cv.Qt, Dh, 0.0f, w.dKt, Dh);
    for (int x = 0; x < m * Dh; x++) {
        w.dQt[x] += (float)dQt[x];
        w.dKt[x] += (float)dKt[x];
    }
    /* segment means */
    for (int a = 0; a < m; a++) {
        float f = s4 / (float)(w.seg[a + 1] - w.seg[a]);
        for (int r = w.seg[a]; r < w.seg[a + 1]; r++) {
            int i = w.idx[r];
            for (int d = 0; d < Dh; d++) {
                dq[(size_t)i * Dh + d] += f * w.dQt[(size_t)a * Dh + d];
                dk[(size_t)i * Dh + d] += f * w.dKt[(size_t)a * Dh + d];
            }
        }
    }
}

static void ny_backward(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *key_mask,
                        const float *out, const float *dout, float *dq, float *dk, float *dv) {
    const nystrom_params *p = L->params;
    const attn_shape *s = &L->shape;
    ny_call c = {.L = L, .p = p, .q = q, .k = k, .v = v, .out = out, .dout = dout, .mask = key_mask, .dq = dq,
                 .dk = dk, .dv = dv, .tb = ny_thread_bytes(p, s, NULL, NULL)};
    c.dconv = (float *)L->scratch;
    kz_parallel_bh(s->B, s->H, ny_bwd_bh, &c);
    if (p->conv > 0)
        for (int h = 0; h < s->H; h++) {
            float *dw = nystromformer_conv(L, h, 1);
            for (int t = 0; t < p->conv; t++) {
                double acc = 0;
                for (int b = 0; b < s->B; b++) acc += c.dconv[((size_t)b * s->H + h) * p->conv + t];
                dw[t] += (float)acc;
            }
        }
}

/* Plain reference in double: dense K1, A, K3, the same pinv iteration, dense conv. */
static void ny_reference(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *key_mask,
                         float *out) {
    const nystrom_params *p = L->params;
    const attn_shape *s = &L->shape;
    const int N = s->N, Dh = s->Dh, T = p->pinv_iters;
    const double s4 = pow((double)Dh, -0.25);
    int *idx = xmalloc(sizeof(int) * N), *seg = xmalloc(sizeof(int) * (N + 1));
    double *Qt = xmalloc(sizeof(double) * N * Dh), *Kt = xmalloc(sizeof(double) * N * Dh);
    double *A = xmalloc(sizeof(double) * N * N), *Z = xmalloc(sizeof(double) * N * N), *X = xmalloc(sizeof(double) * N * N);
    double *Y = xmalloc(sizeof(double) * N * N), *Y2 = xmalloc(sizeof(double) * N * N);
    double *BV = xmalloc(sizeof(double) * N * Dh), *W = xmalloc(sizeof(double) * N * Dh), *row = xmalloc(sizeof(double) * N);
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < s->H; h++) {
            size_t xo = ((size_t)b * s->H + h) * N * Dh;
            const uint8_t *mask = key_mask ? key_mask + (size_t)b * N : NULL;
            int m = segments(mask, N, p->landmarks, idx, seg);
            for (size_t x = 0; x < (size_t)N * Dh; x++) out[xo + x] = 0;
            if (m > 0) {
                for (int a = 0; a < m; a++)
                    for (int d = 0; d < Dh; d++) {
                        double sq = 0, sk = 0;
                        for (int r = seg[a]; r < seg[a + 1]; r++) {
                            sq += q[xo + (size_t)idx[r] * Dh + d];
                            sk += k[xo + (size_t)idx[r] * Dh + d];
                        }
                        Qt[a * Dh + d] = s4 * sq / (seg[a + 1] - seg[a]);
                        Kt[a * Dh + d] = s4 * sk / (seg[a + 1] - seg[a]);
                    }
                for (int a = 0; a < m; a++) {
                    double mx = -INFINITY, l = 0;
                    for (int c2 = 0; c2 < m; c2++) {
                        double t = 0;
                        for (int d = 0; d < Dh; d++) t += Qt[a * Dh + d] * Kt[c2 * Dh + d];
                        A[a * m + c2] = t;
                        if (t > mx) mx = t;
                    }
                    for (int c2 = 0; c2 < m; c2++) l += (A[a * m + c2] = exp(A[a * m + c2] - mx));
                    for (int c2 = 0; c2 < m; c2++) A[a * m + c2] /= l;
                }
                double cmax = -1;
                for (int j = 0; j < m; j++) {
                    double cs = 0;
                    for (int i = 0; i < m; i++) cs += A[i * m + j];
                    if (cs > cmax) cmax = cs;
                }
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < m; j++) Z[i * m + j] = A[j * m + i] / cmax;
                for (int t = 0; t < T; t++) {
                    /* X = A Z; Y = 7I - X; Y = 15I - X Y; Y = 13I - X Y; Z = Z Y / 4 */
                    for (int i = 0; i < m; i++)
                        for (int j = 0; j < m; j++) {
                            double a2 = 0;
                            for (int x = 0; x < m; x++) a2 += A[i * m + x] * Z[x * m + j];
                            X[i * m + j] = a2;
                        }
                    for (int i = 0; i < m * m; i++) Y[i] = -X[i];
                    for (int i = 0; i < m; i++) Y[i * m + i] += 7;
                    for (int it = 0; it < 2; it++) {
                        double cc = it == 0 ? 15 : 13;
                        for (int i = 0; i < m; i++)
                            for (int j = 0; j < m; j++) {
                                double a2 = 0;
                                for (int x = 0; x < m; x++) a2 += X[i * m + x] * Y[x * m + j];
                                Y2[i * m + j] = -a2 + (i == j ? cc : 0);
                            }
                        memcpy(Y, Y2, sizeof(double) * m * m);
                    }
                    for (int i = 0; i < m; i++)
                        for (int j = 0; j < m; j++) {
                            double a2 = 0;
                            for (int x = 0; x < m; x++) a2 += Z[i * m + x] * Y[x * m + j];
                            Y2[i * m + j] = 0.25 * a2;
                        }
                    memcpy(Z, Y2, sizeof(double) * m * m);
                }
                for (int a = 0; a < m; a++) {
                    double mx = -INFINITY, l = 0;
                    for (int j = 0; j < N; j++) {
                        row[j] = -INFINITY;
                        if (mask && !mask[j]) continue;
                        double t = 0;
                        for (int d = 0; d < Dh; d++) t += Qt[a * Dh + d] * s4 * k[xo + (size_t)j * Dh + d];
                        row[j] = t;
                        if (t > mx) mx = t;
                    }
                    for (int j = 0; j < N; j++) l += (row[j] = row[j] == -INFINITY ? 0 : exp(row[j] - mx));
                    for (int d = 0; d < Dh; d++) {
                        double a2 = 0;
                        for (int j = 0; j < N; j++) a2 += row[j] * v[xo + (size_t)j * Dh + d];
                        BV[a * Dh + d] = a2 / l;
                    }
                }
                for (int a = 0; a < m; a++)
                    for (int d = 0; d < Dh; d++) {
                        double a2 = 0;
                        for (int x = 0; x < m; x++) a2 += Z[a * m + x] * BV[x * Dh + d];
                        W[a * Dh + d] = a2;
                    }
                for (int i = 0; i < N; i++) {
                    double f = (!mask || mask[i]) ? s4 : 0, mx = -INFINITY, l = 0;
                    for (int a = 0; a < m; a++) {
                        double t = 0;
                        for (int d = 0; d < Dh; d++) t += f * q[xo + (size_t)i * Dh + d] * Kt[a * Dh + d];
                        row[a] = t;
                        if (t > mx) mx = t;
                    }
                    for (int a = 0; a < m; a++) l += (row[a] = exp(row[a] - mx));
                    for (int d = 0; d < Dh; d++) {
                        double a2 = 0;
                        for (int a = 0; a < m; a++) a2 += row[a] * W[a * Dh + d];
                        out[xo + (size_t)i * Dh + d] = (float)(a2 / l);
                    }
                }
            }
            if (p->conv > 0) {
                const float *wc = nystromformer_conv(L, h, 0);
                for (int i = 0; i < N; i++)
                    for (int d = 0; d < Dh; d++) {
                        double a2 = out[xo + (size_t)i * Dh + d];
                        for (int t = 0; t < p->conv; t++) {
                            int j = i + t - p->conv / 2;
                            if (j < 0 || j >= N || (mask && !mask[j])) continue;
                            a2 += (double)wc[t] * v[xo + (size_t)j * Dh + d];
                        }
                        out[xo + (size_t)i * Dh + d] = (float)a2;
                    }
            }
        }
    free(idx); free(seg); free(Qt); free(Kt); free(A); free(Z); free(X); free(Y); free(Y2); free(BV); free(W); free(row);
}

const attn_ops attn_nystromformer = {
    .name = "nystromformer",
    .summary = "Nystromformer: segment-mean landmarks, Nystrom approximation with iterative pseudo-inverse; O(N m)",
    .source = "Xiong et al., Nystromformer: A Nystrom-Based Algorithm for Approximating Self-Attention, arXiv 2102.03902",
    .schema = nystrom_schema,
    .n_schema = (int)LRA_ARRAY_LEN(nystrom_schema),
    .params_size = sizeof(nystrom_params),
    .caps = ATTN_CAP_KEY_MASK,
    .validate = ny_validate,
    .n_weights = ny_n_weights,
    .cache_bytes = ny_cache,
    .scratch_bytes = ny_scratch,
    .flops = ny_flops,
    .init = ny_init,
    .forward = ny_forward,
    .backward = ny_backward,
    .reference = ny_reference,
};
