/* blocksparse.c - the candidate-set attention kernel of blocksparse.h (forward, backward,
 * reference). Maths: reference/attention.md §0.2 (one softmax over any candidate set, the
 * D_i = dO_i . O_i identity), §1.3 (online softmax), §2.2 (banded/block-sparse forms).
 *
 * Each (segment, chunk of <= Bc columns) of a tile is processed in one of two modes:
 *  - tile mode, when the rows' column ranges overlap (blocks, bands, globals): the scores of all
 *    Br = 32 rows are computed at once, held transposed ST[c][r] (Bc x 32) so that every softmax
 *    step is an elementwise loop over the 32 row lanes, and the products are register-blocked
 *    micro-kernels (kern_t, kern_rows, kern_cols) that GCC -O3 vectorises; rows outside their
 *    range get -inf. Cost ~ (union of the ranges) x 32.
 *  - row mode, when the ranges are mostly disjoint (a lone global row, few rows): one row at a
 *    time over its own columns only. Cost ~ sum of the ranges, with more overhead per pair.
 * The mode is chosen per chunk from these two costs; both update the same per-row online-softmax
 * state, so the result does not depend on the choice beyond float rounding.
 */
#include "blocksparse.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "../lra/common.h"
#include "fastmath.h"

/* Register blocking of the tile-mode products, written with GCC vector extensions so that the
 * accumulators stay in registers (plain loops left GCC 12 spilling them or shuffling lanes). */
#if defined(__AVX512F__)
#include <immintrin.h>
#define BS_VL 16  /* floats per vector register */
#define BS_ACC 16 /* vector accumulators per register block */
#define BS_VFMA(a, x, c) _mm512_fmadd_ps(_mm512_set1_ps(a), (x), (c))
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define BS_VL 8
#define BS_ACC 8
#define BS_VFMA(a, x, c) _mm256_fmadd_ps(_mm256_set1_ps(a), (x), (c))
#else
#define BS_VL 8
#define BS_ACC 8
#define BS_VFMA(a, x, c) ((c) + (a) * (x))
#endif
typedef float bs_vf __attribute__((vector_size(BS_VL * sizeof(float))));

#define BS_VW 16 /* row-mode blocks: 16 columns */
#define BS_LD (BS_BC + BS_VW) /* leading dimension of the transposed key/value chunks (row mode) */
/* Tile mode beats row mode when (union of the row ranges) * Br * BS_TILE_COST <= sum of ranges. */
#define BS_TILE_COST 0.17

/* Per-thread workspace, carved from the scratch slice of the thread. */
typedef struct {
    bs_tile *T;
    int Dp;       /* row stride of the row-major buffers: Dh rounded up to BS_VL, zero padded */
    float *qs;    /* (Br, Dp) scaled queries (rows >= nr are 0) */
    float *dor;   /* (Br, Dp) dout rows (rows >= nr are 0) */
    float *qt;    /* (Dh, Br) scaled queries, transposed */
    float *dot;   /* (Dh, Br) dout, transposed */
    double *acc;  /* (Br, Dh) forward: P V accumulator; backward: dq accumulator */
    float *rowb;  /* (Br, Dp) one chunk's P V (forward) or dq (backward) */
    float *m;     /* (Br) running max */
    double *l;    /* (Br) running normaliser */
    float *rd;    /* (Br) D_i = dO_i . O_i */
    float *rl;    /* (Br) L_i (+inf for rows without candidates and lanes >= nr) */
    float *alpha, *msafe, *lsum; /* (Br) tile-mode softmax update */
    float *st;    /* (Bc + 8, Br) scores / probabilities, transposed */
    float *dpt;   /* (Bc + 8, Br) dP / dS, transposed */
    float *kt;    /* (Dh, Bc + 16) gathered keys, transposed (row mode) */
    float *vt;    /* (Dh, Bc + 16) gathered values, transposed (row mode, backward) */
    float *kc;    /* (Bc + 8, Dp) gathered keys */
    float *vc;    /* (Bc + 8, Dp) gathered values */
    float *dkc;   /* (Bc + 8, Dp) chunk dK partial */
    float *dvc;   /* (Bc + 8, Dp) chunk dV partial */
    float *sc, *p, *dp; /* (Bc + 16) row mode */
    float *vec;   /* (Dh) one row's chunk sum (row mode) */
    float *bias;  /* (Bc + 16) 0 for a valid key, -inf otherwise */
    int *kpos;    /* (Bc) key positions */
    double *dkd;  /* (Nk, Dh) dK accumulator of the current (b, h) */
    double *dvd;  /* (Nk, Dh) */
} bs_ws;

static int pad_dh(int Dh) { return (Dh + BS_VL - 1) / BS_VL * BS_VL; }

static size_t ws_carve(bs_ws *w, char *base, int Nk, int Dh) {
    size_t o = 0;
    const int Dp = pad_dh(Dh);
    if (w) w->Dp = Dp;
#define CARVE(field, type, count)                                   \
    do {                                                            \
        if (w) w->field = (type *)(void *)(base + o);               \
        o += bs_align(sizeof(type) * (size_t)(count));              \
    } while (0)
    CARVE(T, bs_tile, 1);
    CARVE(qs, float, BS_BR * Dp);
    CARVE(dor, float, BS_BR * Dp);
    CARVE(qt, float, Dh * BS_BR);
    CARVE(dot, float, Dh * BS_BR);
    CARVE(acc, double, BS_BR * Dh);
    CARVE(rowb, float, BS_BR * Dp);
    CARVE(m, float, BS_BR);
    CARVE(l, double, BS_BR);
    CARVE(rd, float, BS_BR);
    CARVE(rl, float, BS_BR);
    CARVE(alpha, float, BS_BR);
    CARVE(msafe, float, BS_BR);
    CARVE(lsum, float, BS_BR);
    CARVE(st, float, (BS_BC + 8) * BS_BR);
    CARVE(dpt, float, (BS_BC + 8) * BS_BR);
    CARVE(kt, float, Dh * BS_LD);
    CARVE(vt, float, Dh * BS_LD);
    CARVE(kc, float, (BS_BC + 8) * Dp);
    CARVE(vc, float, (BS_BC + 8) * Dp);
    CARVE(dkc, float, (BS_BC + 8) * Dp);
    CARVE(dvc, float, (BS_BC + 8) * Dp);
    CARVE(sc, float, BS_BC + BS_VW);
    CARVE(p, float, BS_BC + BS_VW);
    CARVE(dp, float, BS_BC + BS_VW);
    CARVE(vec, float, Dh);
    CARVE(bias, float, BS_BC + BS_VW);
    CARVE(kpos, int, BS_BC);
    CARVE(dkd, double, (size_t)Nk * Dh);
    CARVE(dvd, double, (size_t)Nk * Dh);
#undef CARVE
    return o;
}

size_t bs_thread_bytes(int Nk, int Dh) { return ws_carve(NULL, NULL, Nk, Dh); }

size_t bs_scratch_bytes(int Nk, int Dh, int n_threads) {
    return (size_t)(n_threads < 1 ? 1 : n_threads) * bs_thread_bytes(Nk, Dh);
}

/* Threads for a call: all of them, except for tiny problems where a parallel region costs more
 * than it saves (and, on a busy machine, a barrier can wait a whole scheduler slice). The results
 * do not depend on the thread count. */
static int n_kernel_threads(const attn_shape *s) {
#ifdef _OPENMP
    if ((long)s->B * s->H * s->N * s->Dh < (1L << 15)) return 1;
    return omp_get_max_threads();
#else
    (void)s;
    return 1;
#endif
}

static int thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* The thread's workspace; the slack columns and rows that vector loops may read are zeroed once
 * so they stay finite. */
static bs_ws ws_of(const bs_problem *P, int tid) {
    const attn_shape *s = &P->L->shape;
    bs_ws w;
    size_t tb = bs_thread_bytes(s->Nk, s->Dh);
    ws_carve(&w, (char *)P->scratch + (size_t)tid * tb, s->Nk, s->Dh);
    memset(w.kt, 0, sizeof(float) * (size_t)s->Dh * BS_LD);
    memset(w.vt, 0, sizeof(float) * (size_t)s->Dh * BS_LD);
    memset(w.bias, 0, sizeof(float) * (BS_BC + BS_VW));
    memset(w.st, 0, sizeof(float) * (BS_BC + 8) * BS_BR);
    memset(w.dpt, 0, sizeof(float) * (BS_BC + 8) * BS_BR);
    memset(w.kc, 0, sizeof(float) * (BS_BC + 8) * w.Dp);
    memset(w.vc, 0, sizeof(float) * (BS_BC + 8) * w.Dp);
    memset(w.qs, 0, sizeof(float) * BS_BR * w.Dp);
    memset(w.dor, 0, sizeof(float) * BS_BR * w.Dp);
    return w;
}

static inline int dropout_on(const attn_layer *L) { return L->training && L->dropout > 0.0f; }

/* Clip the per-row ranges of segment g to [0, n) (rows >= nr get an empty range) and return the
 * union [*cmin, *cmax) of the rows' ranges (empty: cmin >= cmax). */
static void seg_span(const bs_tile *T, bs_seg *g, int *cmin, int *cmax) {
    int a = g->n, e = 0;
    for (int r = 0; r < BS_BR; r++) {
        int lo = 0, hi = 0;
        if (r < T->nr) {
            lo = g->lo[r] < 0 ? 0 : g->lo[r];
            hi = g->hi[r] > g->n ? g->n : g->hi[r];
            if (hi < lo) hi = lo;
        }
        g->lo[r] = lo;
        g->hi[r] = hi;
        if (lo < hi) {
            if (lo < a) a = lo;
            if (hi > e) e = hi;
        }
    }
    *cmin = a;
    *cmax = e;
}

/* Within chunk [c0, c0 + nc) of segment g: the union [*ca, *ce) of the rows' ranges relative to c0,
 * and whether tile mode is cheaper than row mode for it. */
static int chunk_plan(const bs_tile *T, const bs_seg *g, int c0, int nc, int *ca, int *ce) {
    int a = nc, e = 0;
    long need = 0;
    for (int r = 0; r < T->nr; r++) {
        int lo = (g->lo[r] > c0 ? g->lo[r] : c0) - c0;
        int hi = (g->hi[r] < c0 + nc ? g->hi[r] : c0 + nc) - c0;
        if (lo >= hi) continue;
        need += hi - lo;
        if (lo < a) a = lo;
        if (hi > e) e = hi;
    }
    *ca = a;
    *ce = e;
    return a < e && (double)(e - a) * BS_BR * BS_TILE_COST <= (double)need;
}

/* Gather columns [c0 + ca, c0 + ce) of segment g into buffer columns [ca, ce): positions, validity
 * as an additive bias, K and V row-major, and in row mode K transposed (and V transposed when
 * backward). */
static void gather(const bs_problem *P, int b, const bs_seg *g, int c0, int ca, int ce, const float *kbh,
                   const float *vbh, bs_ws *w, int rowmode, int backward) {
    const attn_shape *s = &P->L->shape;
    const int Dh = s->Dh, Nk = s->Nk;
    const uint8_t *valid = g->valid ? g->valid : (P->key_mask ? P->key_mask + (size_t)b * Nk : NULL);
    for (int c = ca; c < ce; c++) {
        int t = c0 + c;
        int pos = g->pos ? g->pos[t] : g->start + t * g->stride;
        LRA_CHECK(pos >= 0 && pos < Nk, "pattern lists key %d outside [0, %d)", pos, Nk);
        int idx = g->mstride ? g->mstart + t * g->mstride : pos;
        w->kpos[c] = pos;
        w->bias[c] = idx >= 0 && idx < Nk && (!valid || valid[idx]) ? 0.0f : -INFINITY;
        const float *restrict kr = kbh + (size_t)pos * Dh, *restrict vr = vbh + (size_t)pos * Dh;
        float *restrict kc = w->kc + (size_t)c * w->Dp, *restrict vc = w->vc + (size_t)c * w->Dp;
        for (int d = 0; d < Dh; d++) kc[d] = kr[d];
        for (int d = 0; d < Dh; d++) vc[d] = vr[d];
        if (rowmode) {
            float *restrict kt = w->kt + c;
            for (int d = 0; d < Dh; d++) kt[(size_t)d * BS_LD] = kr[d];
            if (backward) {
                float *restrict vt = w->vt + c;
                for (int d = 0; d < Dh; d++) vt[(size_t)d * BS_LD] = vr[d];
            }
        }
    }
}

/* ---- tile-mode micro-kernels (lanes = the Br = 32 rows of the tile) ---- */

/* The one product kernel: C[i][w] = sum_{t in [t0, t1)} A[i*sai + t*sat] * X[t*ldx + w] for
 * i < M (rounded up to the row block, a power of two <= 8: callers leave 8 slack rows) and w < W
 * (a multiple of BS_VL; blocks of CW <= 4 BS_VL columns, CW dividing W):
 * an outer-product accumulation, one broadcast A element times a row of X, with an RB x CW block
 * of C in vector registers while t runs, t increasing (deterministic). W is a compile-time
 * constant after inlining for the widths dispatched below. */
static inline __attribute__((always_inline)) void mm(float *restrict C, int ldc, const float *restrict A, int sai,
                                                     int sat, const float *restrict X, int ldx, int M, int t0,
                                                     int t1, const int W) {
    const int CW = W <= 4 * BS_VL ? W : W % (4 * BS_VL) == 0 ? 4 * BS_VL : W % (2 * BS_VL) == 0 ? 2 * BS_VL : BS_VL;
    const int NV = CW / BS_VL;                    /* vectors per row of the block */
    const int RA = BS_ACC / NV; /* rows per block: a power of two <= 8, so it divides 8 and 32 */
    const int RB = RA >= 8 ? 8 : RA >= 4 ? 4 : RA >= 2 ? 2 : 1;
    for (int w0 = 0; w0 < W; w0 += CW)
        for (int i = 0; i < M; i += RB) {
            bs_vf acc[BS_ACC];
#pragma GCC unroll 16
            for (int x = 0; x < RB * NV; x++) acc[x] = (bs_vf){0};
            for (int t = t0; t < t1; t++) {
                const float *xr = X + (size_t)t * ldx + w0;
                bs_vf xv[4] = {{0}};
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) memcpy(&xv[v], xr + v * BS_VL, sizeof(bs_vf));
#pragma GCC unroll 16
                for (int ii = 0; ii < RB; ii++) {
                    const float a = A[(size_t)(i + ii) * sai + (size_t)t * sat];
#pragma GCC unroll 4
                    for (int v = 0; v < NV; v++) acc[ii * NV + v] = BS_VFMA(a, xv[v], acc[ii * NV + v]);
                }
            }
#pragma GCC unroll 16
            for (int x = 0; x < RB * NV; x++)
                memcpy(C + (size_t)(i + x / NV) * ldc + w0 + (x % NV) * BS_VL, &acc[x], sizeof(bs_vf));
        }
}

/* mm with W = Dp dispatched to compile-time widths. */
static void mm_dp(float *restrict C, int ldc, const float *restrict A, int sai, int sat, const float *restrict X,
                  int ldx, int M, int t0, int t1, int Dp) {
    switch (Dp) {
    case 16: mm(C, ldc, A, sai, sat, X, ldx, M, t0, t1, 16); break;
    case 32: mm(C, ldc, A, sai, sat, X, ldx, M, t0, t1, 32); break;
    case 64: mm(C, ldc, A, sai, sat, X, ldx, M, t0, t1, 64); break;
    case 128: mm(C, ldc, A, sai, sat, X, ldx, M, t0, t1, 128); break;
#if BS_VL == 8
    case 8: mm(C, ldc, A, sai, sat, X, ldx, M, t0, t1, 8); break;
#endif
    default: mm(C, ldc, A, sai, sat, X, ldx, M, t0, t1, Dp); break;
    }
}

/* XT[c][u] = sum_{d < Dh} Y[c][d] Zt[d][u] for c in [ca, ce), u < Br: Y (Bc + 8, Dp), Zt (Dh, Br). */
static void kern_t(const float *restrict Y, int Dp, const float *restrict Zt, int Dh, int ca, int ce,
                   float *restrict XT) {
    mm(XT + (size_t)ca * BS_BR, BS_BR, Y + (size_t)ca * Dp, Dp, 1, Zt, BS_BR, ce - ca, 0, Dh, BS_BR);
}

/* out[r][d] = sum_{c in [ca, ce)} AT[c][r] Y[c][d] for r < nr8 (a multiple of 8): AT (Bc + 8, Br),
 * Y (Bc + 8, Dp), out (Br, Dp). */
static void kern_rows(const float *restrict AT, const float *restrict Y, int Dp, int ca, int ce, int nr8,
                      float *restrict out) {
    mm_dp(out, Dp, AT, 1, BS_BR, Y, Dp, nr8, ca, ce, Dp);
}

/* out[c][d] = sum_{u < nr} AT[c][u] Z[u][d] for c in [ca, ce): AT (Bc + 8, Br), Z (Br, Dp),
 * out (Bc + 8, Dp) overwritten (rows up to ce rounded up to the row block). */
static void kern_cols(const float *restrict AT, const float *restrict Z, int Dp, int ca, int ce, int nr,
                      float *restrict out) {
    mm_dp(out + (size_t)ca * Dp, Dp, AT + (size_t)ca * BS_BR, BS_BR, 1, Z, Dp, ce - ca, 0, nr, Dp);
}

/* ST[c][u] += bias[c] inside row u's range of segment columns, -inf outside. */
static void mask_t(const bs_seg *g, const float *restrict bias, int c0, int ca, int ce, float *restrict ST) {
    const int *restrict lo = g->lo, *restrict hi = g->hi;
    for (int c = ca; c < ce; c++) {
        const int cg = c0 + c;
        const float bc = bias[c];
        float *restrict x = ST + (size_t)c * BS_BR;
        for (int u = 0; u < BS_BR; u++) x[u] = (cg >= lo[u] && cg < hi[u]) ? x[u] + bc : -INFINITY;
    }
}

/* ---- row-mode helpers ---- */

/* sc[c] = bias[c] + x . Xt[:, c] for c in [a, a + 16 nblk), Xt (Dh, Bc + 16) transposed; bias
 * NULL means 0. Up to four blocks of 16 columns share each broadcast of x[d] and give four
 * independent accumulator chains; the sums over d stay in registers. */
#define DOT_BLOCKS(NB)                                                                                \
    do {                                                                                              \
        float acc[NB][BS_VW];                                                                         \
        for (int b_ = 0; b_ < NB; b_++)                                                               \
            for (int u = 0; u < BS_VW; u++) acc[b_][u] = bias ? bias[c0 + b_ * BS_VW + u] : 0.0f;     \
        for (int d = 0; d < Dh; d++) {                                                                \
            const float xd = x[d];                                                                    \
            const float *restrict row = xt + (size_t)d * BS_LD + c0;                                  \
            for (int b_ = 0; b_ < NB; b_++)                                                           \
                for (int u = 0; u < BS_VW; u++) acc[b_][u] = LRA_FMAF(xd, row[b_ * BS_VW + u], acc[b_][u]); \
        }                                                                                             \
        for (int b_ = 0; b_ < NB; b_++)                                                               \
            for (int u = 0; u < BS_VW; u++) sc[c0 + b_ * BS_VW + u] = acc[b_][u];                      \
    } while (0)

static inline void dot_cols(const float *restrict x, const float *restrict xt, const float *restrict bias, int Dh,
                            int a, int nblk, float *restrict sc) {
    for (int c0 = a; nblk > 0;) {
        switch (nblk) {
        case 1: DOT_BLOCKS(1); c0 += BS_VW, nblk -= 1; break;
        case 2: DOT_BLOCKS(2); c0 += 2 * BS_VW, nblk -= 2; break;
        case 3: DOT_BLOCKS(3); c0 += 3 * BS_VW, nblk -= 3; break;
        default: DOT_BLOCKS(4); c0 += 4 * BS_VW, nblk -= 4; break;
        }
    }
}

/* max of x[a .. a + 16 nblk) (no NaN expected; -inf if all -inf). */
static inline float max_blocks(const float *restrict x, int a, int nblk) {
    float m[BS_VW];
    for (int u = 0; u < BS_VW; u++) m[u] = -INFINITY;
    for (int k = 0; k < nblk; k++)
        for (int u = 0; u < BS_VW; u++) {
            float y = x[a + k * BS_VW + u];
            m[u] = y > m[u] ? y : m[u];
        }
    float r = m[0];
    for (int u = 1; u < BS_VW; u++) r = m[u] > r ? m[u] : r;
    return r;
}

/* out[0..Dh) = sum_{c in [a, e)} p[c] * X[c, :] for a (Bc, ld) row-major X. Blocks of 16 of d
 * with four independent register accumulators over c (latency), combined in a fixed order. */
static inline void weighted_rows(const float *restrict p, const float *restrict X, int ld, int Dh, int a, int e,
                                 float *restrict out) {
    int d0 = 0;
    for (; d0 + BS_VW <= Dh; d0 += BS_VW) {
        float a0[BS_VW], a1[BS_VW], a2[BS_VW], a3[BS_VW];
        for (int u = 0; u < BS_VW; u++) a0[u] = a1[u] = a2[u] = a3[u] = 0.0f;
        int c = a;
        for (; c + 4 <= e; c += 4) {
            const float w0 = p[c], w1 = p[c + 1], w2 = p[c + 2], w3 = p[c + 3];
            const float *restrict x0 = X + (size_t)c * ld + d0;
            for (int u = 0; u < BS_VW; u++) {
                a0[u] = LRA_FMAF(w0, x0[u], a0[u]);
                a1[u] = LRA_FMAF(w1, x0[ld + u], a1[u]);
                a2[u] = LRA_FMAF(w2, x0[2 * ld + u], a2[u]);
                a3[u] = LRA_FMAF(w3, x0[3 * ld + u], a3[u]);
            }
        }
        for (; c < e; c++) {
            const float w0 = p[c];
            const float *restrict x0 = X + (size_t)c * ld + d0;
            for (int u = 0; u < BS_VW; u++) a0[u] = LRA_FMAF(w0, x0[u], a0[u]);
        }
        for (int u = 0; u < BS_VW; u++) out[d0 + u] = (a0[u] + a1[u]) + (a2[u] + a3[u]);
    }
    for (int d = d0; d < Dh; d++) { /* Dh not a multiple of 16: the rest, one column at a time */
        float t = 0.0f;
        for (int c = a; c < e; c++) t = LRA_FMAF(p[c], X[(size_t)c * ld + d], t);
        out[d] = t;
    }
}

/* Sum of x[a..e) with eight lanes combined in a fixed order (no float reduction clause). */
static inline float lane_sum(const float *restrict x, int a, int e) {
    float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int c = a;
    for (; c + 8 <= e; c += 8)
        for (int u = 0; u < 8; u++) lane[u] += x[c + u];
    float t = ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    for (; c < e; c++) t += x[c];
    return t;
}

/* Load the tile's rows: scaled queries (and their transpose); in backward also dout, D_i and
 * L_i. Lanes >= nr are zero (L = +inf). */
static void load_rows(const bs_problem *P, int b, int h, bs_ws *w, const float *q, const float *out,
                      const float *dout, int backward) {
    const attn_shape *s = &P->L->shape;
    const int Dh = s->Dh, N = s->N, Dp = w->Dp;
    const bs_tile *T = w->T;
    const float scale = 1.0f / sqrtf((float)Dh);
    const size_t bh = (size_t)b * s->H + h;
    for (int r = 0; r < BS_BR; r++) {
        float *qs = w->qs + (size_t)r * Dp, *dr = w->dor + (size_t)r * Dp;
        for (int d = 0; d < Dh; d++) w->acc[(size_t)r * Dh + d] = 0.0;
        w->m[r] = -INFINITY;
        w->l[r] = 0.0;
        if (r >= T->nr) {
            memset(qs, 0, sizeof(float) * Dh);
            memset(dr, 0, sizeof(float) * Dh);
            w->rd[r] = 0.0f;
            w->rl[r] = INFINITY;
            continue;
        }
        const int i = T->row[r];
        LRA_CHECK(i >= 0 && i < N, "pattern lists query %d outside [0, %d)", i, N);
        const float *qr = q + (bh * N + i) * Dh;
        for (int d = 0; d < Dh; d++) qs[d] = qr[d] * scale;
        if (backward) {
            const float *dd = dout + (bh * N + i) * Dh, *orow = out + (bh * N + i) * Dh;
            double D = 0.0;
            for (int d = 0; d < Dh; d++) {
                dr[d] = dd[d];
                D += (double)dd[d] * orow[d];
            }
            w->rd[r] = (float)D;
            w->rl[r] = P->lse[bh * N + i];
        }
    }
    for (int d = 0; d < Dh; d++)
        for (int r = 0; r < BS_BR; r++) {
            w->qt[(size_t)d * BS_BR + r] = w->qs[(size_t)r * Dp + d];
            if (backward) w->dot[(size_t)d * BS_BR + r] = w->dor[(size_t)r * Dp + d];
        }
}

/* Plan tile t of (b, h) into the workspace; returns the number of rows (0: nothing to do). */
static int plan_tile(const bs_problem *P, int b, int h, int t, bs_ws *w) {
    bs_tile *T = w->T;
    T->nr = 0;
    T->nseg = 0;
    P->plan(P, b, h, t, T);
    if (T->nr <= 0) return 0;
    LRA_CHECK(T->nr <= BS_BR && T->nseg >= 0 && T->nseg <= BS_MAX_SEG, "bad tile (%d rows, %d segments)", T->nr,
              T->nseg);
    return T->nr;
}

/* ---- forward ---- */

/* Tile mode: online-softmax update of every row with the columns [ca, ce) of this chunk. */
static void fwd_chunk_tile(const bs_problem *P, int b, int h, const bs_seg *g, int c0, int ca, int ce, bs_ws *w) {
    attn_layer *L = P->L;
    const int Dh = L->shape.Dh;
    const bs_tile *T = w->T;
    float *restrict st = w->st;
    const int Dp = w->Dp;
    kern_t(w->kc, Dp, w->qt, Dh, ca, ce, st);
    mask_t(g, w->bias, c0, ca, ce, st);
    float mx[BS_BR];
    for (int u = 0; u < BS_BR; u++) mx[u] = -INFINITY;
    for (int c = ca; c < ce; c++)
        for (int u = 0; u < BS_BR; u++) {
            const float y = st[(size_t)c * BS_BR + u];
            mx[u] = y > mx[u] ? y : mx[u];
        }
    float *restrict alpha = w->alpha, *restrict msafe = w->msafe, *restrict lsum = w->lsum;
    for (int u = 0; u < BS_BR; u++) {
        const float mo = w->m[u], mn = mo > mx[u] ? mo : mx[u];
        alpha[u] = mo == -INFINITY ? 0.0f : lra_expf(mo - mn);
        msafe[u] = mn == -INFINITY ? 0.0f : mn; /* all -inf so far: exp(-inf - 0) = 0 */
        w->m[u] = mn;
        lsum[u] = 0.0f;
    }
    for (int c = ca; c < ce; c++) {
        float *restrict x = st + (size_t)c * BS_BR;
        for (int u = 0; u < BS_BR; u++) {
            x[u] = lra_expf(x[u] - msafe[u]);
            lsum[u] += x[u];
        }
    }
    for (int r = 0; r < T->nr; r++) w->l[r] = (double)alpha[r] * w->l[r] + (double)lsum[r];
    if (dropout_on(L))
        for (int c = ca; c < ce; c++)
            for (int r = 0; r < T->nr; r++) {
                float *x = st + (size_t)c * BS_BR + r;
                if (*x != 0.0f) *x *= attn_dropout_scale(L, b, h, T->row[r], w->kpos[c]);
            }
    const int nr8 = (T->nr + 7) & ~7;
    kern_rows(st, w->vc, Dp, ca, ce, nr8, w->rowb);
    for (int r = 0; r < T->nr; r++) {
        double *acc = w->acc + (size_t)r * Dh;
        const float *pv = w->rowb + (size_t)r * Dp;
        const double al = alpha[r];
        for (int d = 0; d < Dh; d++) acc[d] = al * acc[d] + (double)pv[d];
    }
}

/* Row mode: online-softmax update of row r with the gathered columns [a, e). */
static void fwd_row(const bs_problem *P, int b, int h, int r, int a, int e, bs_ws *w) {
    attn_layer *L = P->L;
    const int Dh = L->shape.Dh;
    /* scores of columns [a, e), computed in blocks of 16 up to ee; the slack is -inf */
    const int nblk = (e - a + BS_VW - 1) / BS_VW, ee = a + nblk * BS_VW;
    float *restrict sc = w->sc;
    dot_cols(w->qs + (size_t)r * w->Dp, w->kt, w->bias, Dh, a, nblk, sc);
    for (int c = e; c < ee; c++) sc[c] = -INFINITY;
    const float mx = max_blocks(sc, a, nblk);
    if (mx == -INFINITY) return;
    const float mo = w->m[r];
    const float mn = mo > mx ? mo : mx;
    const float alpha = mo == -INFINITY ? 0.0f : lra_expf(mo - mn);
    float *restrict p = w->p;
    for (int c = a; c < ee; c++) p[c] = lra_expf(sc[c] - mn);
    w->l[r] = (double)alpha * w->l[r] + (double)lane_sum(p, a, ee);
    if (dropout_on(L))
        for (int c = a; c < e; c++)
            if (p[c] != 0.0f) p[c] *= attn_dropout_scale(L, b, h, w->T->row[r], w->kpos[c]);
    float *restrict pvb = w->vec;
    weighted_rows(p, w->vc, w->Dp, Dh, a, e, pvb);
    double *acc = w->acc + (size_t)r * Dh;
    for (int d = 0; d < Dh; d++) acc[d] = (double)alpha * acc[d] + (double)pvb[d];
    w->m[r] = mn;
}

/* Row mode for a chunk [c0, c0 + nc) of segment g: each row over its own columns. */
static void fwd_chunk_rows(const bs_problem *P, int b, int h, const bs_seg *g, int c0, int nc, bs_ws *w) {
    for (int r = 0; r < w->T->nr; r++) {
        const int a = (g->lo[r] > c0 ? g->lo[r] : c0) - c0;
        const int e = (g->hi[r] < c0 + nc ? g->hi[r] : c0 + nc) - c0;
        if (a < e) fwd_row(P, b, h, r, a, e, w);
    }
}

size_t bs_pass_state_bytes(int B, int H, int N, int Dh) {
    const size_t rows = (size_t)B * H * N;
    return bs_align(rows * sizeof(float)) + bs_align(rows * sizeof(double)) + bs_align(rows * Dh * sizeof(float));
}

/* The pass-0 state arrays in P->state. */
static void pass_state(const bs_problem *P, float **m, double **l, float **acc) {
    const attn_shape *s = &P->L->shape;
    const size_t rows = (size_t)s->B * s->H * s->N;
    char *base = P->state;
    *m = (float *)(void *)base;
    *l = (double *)(void *)(base + bs_align(rows * sizeof(float)));
    *acc = (float *)(void *)(base + bs_align(rows * sizeof(float)) + bs_align(rows * sizeof(double)));
}

enum { PASS_ONLY = 0, PASS_SAVE = 1, PASS_LOAD = 2 };

static void forward_tile(const bs_problem *P, int b, int h, int t, bs_ws *w, const float *q, const float *k,
                         const float *v, float *out, int pass) {
    const attn_shape *s = &P->L->shape;
    const int Dh = s->Dh, N = s->N, Nk = s->Nk;
    if (!plan_tile(P, b, h, t, w)) return;
    bs_tile *T = w->T;
    const size_t bh = (size_t)b * s->H + h;
    const float *kbh = k + bh * Nk * Dh, *vbh = v + bh * Nk * Dh;
    load_rows(P, b, h, w, q, NULL, NULL, 0);
    float *sm = NULL, *sacc = NULL;
    double *sl = NULL;
    if (pass != PASS_ONLY) pass_state(P, &sm, &sl, &sacc);
    if (pass == PASS_LOAD)
        for (int r = 0; r < T->nr; r++) {
            const size_t x = bh * N + T->row[r];
            w->m[r] = sm[x];
            w->l[r] = sl[x];
            for (int d = 0; d < Dh; d++) w->acc[(size_t)r * Dh + d] = sacc[x * Dh + d];
        }
    for (int gi = 0; gi < T->nseg; gi++) {
        bs_seg *g = &T->seg[gi];
        int cmin, cmax;
        seg_span(T, g, &cmin, &cmax);
        for (int c0 = cmin; c0 < cmax; c0 += BS_BC) {
            const int nc = cmax - c0 < BS_BC ? cmax - c0 : BS_BC;
            int ca, ce;
            const int tile = chunk_plan(T, g, c0, nc, &ca, &ce);
            if (ca >= ce) continue;
            gather(P, b, g, c0, ca, ce, kbh, vbh, w, !tile, 0);
            if (tile) fwd_chunk_tile(P, b, h, g, c0, ca, ce, w);
            else fwd_chunk_rows(P, b, h, g, c0, nc, w);
        }
    }
    if (pass == PASS_SAVE) {
        for (int r = 0; r < T->nr; r++) {
            const size_t x = bh * N + T->row[r];
            sm[x] = w->m[r];
            sl[x] = w->l[r];
            for (int d = 0; d < Dh; d++) sacc[x * Dh + d] = (float)w->acc[(size_t)r * Dh + d];
        }
        return;
    }
    float *lse = P->lse + bh * N;
    for (int r = 0; r < T->nr; r++) {
        const int i = T->row[r];
        float *o = out + (bh * N + i) * Dh;
        const double lr = w->l[r];
        if (lr > 0.0) {
            const double inv = 1.0 / lr;
            for (int d = 0; d < Dh; d++) o[d] = (float)(w->acc[(size_t)r * Dh + d] * inv);
            lse[i] = w->m[r] + (float)log(lr);
        } else {
            memset(o, 0, sizeof(float) * Dh);
            lse[i] = INFINITY;
        }
    }
}

/* Tiles [t0, t1) of every (b, h), in parallel. */
static void forward_tiles(const bs_problem *P, int t0, int t1, int pass, const float *q, const float *k,
                          const float *v, float *out) {
    const attn_shape *s = &P->L->shape;
    const int per = t1 - t0;
    if (per <= 0) return;
    const long total = (long)s->B * s->H * per;
    const int nt = n_kernel_threads(s);
    (void)nt; /* unused without OpenMP */
#pragma omp parallel num_threads(nt)
    {
        bs_ws w = ws_of(P, thread_id());
#pragma omp for schedule(dynamic, 4)
        for (long u = 0; u < total; u++) {
            int t = t0 + (int)(u % per);
            long bh = u / per;
            forward_tile(P, (int)(bh / s->H), (int)(bh % s->H), t, &w, q, k, v, out, pass);
        }
    }
}

void bs_forward(const bs_problem *P, const float *q, const float *k, const float *v, float *out) {
    const attn_shape *s = &P->L->shape;
    LRA_CHECK(s->Dh >= 1 && P->n_tiles >= 0 && P->split >= 0 && P->split <= P->n_tiles,
              "head size %d, %d tiles, split %d", s->Dh, P->n_tiles, P->split);
    if (P->split > 0) {
        LRA_CHECK(P->state != NULL, "two-pass problem without state");
        forward_tiles(P, 0, P->split, PASS_SAVE, q, k, v, out);
        forward_tiles(P, P->split, P->n_tiles, PASS_LOAD, q, k, v, out);
    } else {
        forward_tiles(P, 0, P->n_tiles, PASS_ONLY, q, k, v, out);
    }
}

/* ---- backward ---- */

/* Tile mode: dK, dV partials of columns [ca, ce) into dkc, dvc (overwritten) and dq into acc. */
static void bwd_chunk_tile(const bs_problem *P, int b, int h, const bs_seg *g, int c0, int ca, int ce, bs_ws *w) {
    attn_layer *L = P->L;
    const int Dh = L->shape.Dh;
    const bs_tile *T = w->T;
    float *restrict st = w->st, *restrict dpt = w->dpt;
    const int Dp = w->Dp;
    kern_t(w->kc, Dp, w->qt, Dh, ca, ce, st);
    mask_t(g, w->bias, c0, ca, ce, st);
    kern_t(w->vc, Dp, w->dot, Dh, ca, ce, dpt);
    const float *restrict rl = w->rl, *restrict rd = w->rd;
    if (dropout_on(L)) {
        for (int c = ca; c < ce; c++)
            for (int u = 0; u < BS_BR; u++) {
                float *x = st + (size_t)c * BS_BR + u, *y = dpt + (size_t)c * BS_BR + u;
                const float p = lra_expf(*x - rl[u]);
                const float z = (p != 0.0f && u < T->nr) ? attn_dropout_scale(L, b, h, T->row[u], w->kpos[c]) : 0.0f;
                *y = p * (*y * z - rd[u]); /* dS */
                *x = p * z;                /* P~ */
            }
    } else {
        for (int c = ca; c < ce; c++) {
            float *restrict x = st + (size_t)c * BS_BR, *restrict y = dpt + (size_t)c * BS_BR;
            for (int u = 0; u < BS_BR; u++) {
                const float p = lra_expf(x[u] - rl[u]);
                y[u] = p * (y[u] - rd[u]);
                x[u] = p;
            }
        }
    }
    kern_cols(st, w->dor, Dp, ca, ce, T->nr, w->dvc); /* dV_c = sum_r P~_rc dO_r */
    kern_cols(dpt, w->qs, Dp, ca, ce, T->nr, w->dkc); /* dK_c = sum_r dS_rc (s q_r) */
    const int nr8 = (T->nr + 7) & ~7;
    kern_rows(dpt, w->kc, Dp, ca, ce, nr8, w->rowb); /* dq_r = sum_c dS_rc k_c (times s later) */
    for (int r = 0; r < T->nr; r++) {
        double *acc = w->acc + (size_t)r * Dh;
        const float *x = w->rowb + (size_t)r * Dp;
        for (int d = 0; d < Dh; d++) acc[d] += (double)x[d];
    }
}

/* Row mode: gradients of row r over the gathered columns [a, e): dkc, dvc rows accumulate (+=),
 * dq into acc. */
static void bwd_row(const bs_problem *P, int b, int h, int r, int a, int e, bs_ws *w) {
    attn_layer *L = P->L;
    const int Dh = L->shape.Dh, Dp = w->Dp;
    const float Lr = w->rl[r];
    if (Lr == INFINITY) return;
    float *restrict sc = w->sc, *restrict p = w->p, *restrict dp = w->dp;
    const float *restrict qs = w->qs + (size_t)r * Dp, *restrict dor = w->dor + (size_t)r * Dp;
    const int nblk = (e - a + BS_VW - 1) / BS_VW;
    dot_cols(qs, w->kt, w->bias, Dh, a, nblk, sc);
    for (int c = a; c < e; c++) p[c] = lra_expf(sc[c] - Lr);
    dot_cols(dor, w->vt, NULL, Dh, a, nblk, dp);
    const float Dr = w->rd[r];
    if (dropout_on(L)) {
        for (int c = a; c < e; c++) {
            const float z = p[c] != 0.0f ? attn_dropout_scale(L, b, h, w->T->row[r], w->kpos[c]) : 0.0f;
            sc[c] = p[c] * (dp[c] * z - Dr); /* dS */
            p[c] *= z;                       /* P~ for dV */
        }
    } else {
        for (int c = a; c < e; c++) sc[c] = p[c] * (dp[c] - Dr);
    }
    /* dV_c += P~_rc dO_r ; dK_c += dS_rc (s q_r) */
    for (int c = a; c < e; c++) {
        const float pc = p[c], dsc = sc[c];
        float *restrict dvr = w->dvc + (size_t)c * Dp, *restrict dkr = w->dkc + (size_t)c * Dp;
        for (int d = 0; d < Dh; d++) {
            dvr[d] = LRA_FMAF(pc, dor[d], dvr[d]);
            dkr[d] = LRA_FMAF(dsc, qs[d], dkr[d]);
        }
    }
    /* dq_r += sum_c dS_rc k_c (scaled by s at the end) */
    float *restrict pvb = w->vec;
    weighted_rows(sc, w->kc, Dp, Dh, a, e, pvb);
    double *acc = w->acc + (size_t)r * Dh;
    for (int d = 0; d < Dh; d++) acc[d] += (double)pvb[d];
}

/* Add the chunk partials dkc, dvc of buffer columns [ca, ce) into the (b, h) accumulators. */
static void scatter_dkv(bs_ws *w, int Dh, int ca, int ce) {
    for (int c = ca; c < ce; c++) {
        double *restrict dkd = w->dkd + (size_t)w->kpos[c] * Dh, *restrict dvd = w->dvd + (size_t)w->kpos[c] * Dh;
        const float *restrict dkr = w->dkc + (size_t)c * w->Dp, *restrict dvr = w->dvc + (size_t)c * w->Dp;
        for (int d = 0; d < Dh; d++) {
            dkd[d] += (double)dkr[d];
            dvd[d] += (double)dvr[d];
        }
    }
}

static void backward_tile(const bs_problem *P, int b, int h, int t, bs_ws *w, const float *q, const float *k,
                          const float *v, const float *out, const float *dout, float *dq) {
    const attn_shape *s = &P->L->shape;
    const int Dh = s->Dh, N = s->N, Nk = s->Nk;
    if (!plan_tile(P, b, h, t, w)) return;
    bs_tile *T = w->T;
    const size_t bh = (size_t)b * s->H + h;
    const float *kbh = k + bh * Nk * Dh, *vbh = v + bh * Nk * Dh;
    load_rows(P, b, h, w, q, out, dout, 1);
    for (int gi = 0; gi < T->nseg; gi++) {
        bs_seg *g = &T->seg[gi];
        int cmin, cmax;
        seg_span(T, g, &cmin, &cmax);
        for (int c0 = cmin; c0 < cmax; c0 += BS_BC) {
            const int nc = cmax - c0 < BS_BC ? cmax - c0 : BS_BC;
            int ca, ce;
            const int tile = chunk_plan(T, g, c0, nc, &ca, &ce);
            if (ca >= ce) continue;
            gather(P, b, g, c0, ca, ce, kbh, vbh, w, !tile, 1);
            if (tile) {
                bwd_chunk_tile(P, b, h, g, c0, ca, ce, w);
            } else {
                memset(w->dkc + (size_t)ca * w->Dp, 0, sizeof(float) * (size_t)(ce - ca) * w->Dp);
                memset(w->dvc + (size_t)ca * w->Dp, 0, sizeof(float) * (size_t)(ce - ca) * w->Dp);
                for (int r = 0; r < T->nr; r++) {
                    const int a = (g->lo[r] > c0 ? g->lo[r] : c0) - c0;
                    const int e = (g->hi[r] < c0 + nc ? g->hi[r] : c0 + nc) - c0;
                    if (a < e) bwd_row(P, b, h, r, a, e, w);
                }
            }
            scatter_dkv(w, Dh, ca, ce);
        }
    }
    /* dq was zeroed for this (b, h); a row of a two-pass problem gets both passes' parts */
    const double scale = 1.0 / sqrt((double)Dh);
    for (int r = 0; r < T->nr; r++) {
        float *o = dq + (bh * N + T->row[r]) * Dh;
        for (int d = 0; d < Dh; d++) o[d] += (float)(w->acc[(size_t)r * Dh + d] * scale);
    }
}

void bs_backward(const bs_problem *P, const float *q, const float *k, const float *v, const float *out,
                 const float *dout, float *dq, float *dk, float *dv) {
    const attn_shape *s = &P->L->shape;
    LRA_CHECK(s->Dh >= 1 && P->n_tiles >= 0, "head size %d, %d tiles", s->Dh, P->n_tiles);
    const int BH = s->B * s->H, N = s->N, Nk = s->Nk, Dh = s->Dh;
    const int nt = n_kernel_threads(s);
    (void)nt; /* unused without OpenMP */
#pragma omp parallel num_threads(nt)
    {
        bs_ws w = ws_of(P, thread_id());
#pragma omp for schedule(dynamic, 1)
        for (int bh = 0; bh < BH; bh++) {
            const int b = bh / s->H, h = bh % s->H;
            memset(w.dkd, 0, sizeof(double) * (size_t)Nk * Dh);
            memset(w.dvd, 0, sizeof(double) * (size_t)Nk * Dh);
            memset(dq + (size_t)bh * N * Dh, 0, sizeof(float) * (size_t)N * Dh);
            for (int t = 0; t < P->n_tiles; t++) backward_tile(P, b, h, t, &w, q, k, v, out, dout, dq);
            float *dkb = dk + (size_t)bh * Nk * Dh, *dvb = dv + (size_t)bh * Nk * Dh;
            for (size_t x = 0; x < (size_t)Nk * Dh; x++) {
                dkb[x] = (float)w.dkd[x];
                dvb[x] = (float)w.dvd[x];
            }
        }
    }
}

void bs_reference(attn_layer *L, bs_visible_fn visible, const void *ctx, const float *q, const float *k,
                  const float *v, float *out) {
    const attn_shape *s = &L->shape;
    const int B = s->B, H = s->H, N = s->N, Nk = s->Nk, Dh = s->Dh;
    const double scale = 1.0 / sqrt((double)Dh);
    double *sc = xmalloc(sizeof(double) * (size_t)Nk);
    double *acc = xmalloc(sizeof(double) * (size_t)Dh);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const size_t bh = (size_t)b * H + h;
            for (int i = 0; i < N; i++) {
                const float *qi = q + (bh * N + i) * Dh;
                double mx = -INFINITY;
                for (int j = 0; j < Nk; j++) {
                    sc[j] = -INFINITY;
                    if (!visible(ctx, b, h, i, j)) continue;
                    const float *kj = k + (bh * Nk + j) * Dh;
                    double d = 0;
                    for (int x = 0; x < Dh; x++) d += (double)qi[x] * kj[x];
                    sc[j] = d * scale;
                    if (sc[j] > mx) mx = sc[j];
                }
                float *o = out + (bh * N + i) * Dh;
                if (mx == -INFINITY) {
                    memset(o, 0, sizeof(float) * Dh);
                    continue;
                }
                double sum = 0;
                for (int j = 0; j < Nk; j++)
                    if (sc[j] != -INFINITY) sum += exp(sc[j] - mx);
                memset(acc, 0, sizeof(double) * Dh);
                for (int j = 0; j < Nk; j++) {
                    if (sc[j] == -INFINITY) continue;
                    double pj = exp(sc[j] - mx) / sum * attn_dropout_scale(L, b, h, i, j);
                    const float *vj = v + (bh * Nk + j) * Dh;
                    for (int x = 0; x < Dh; x++) acc[x] += pj * vj[x];
                }
                for (int x = 0; x < Dh; x++) o[x] = (float)acc[x];
            }
        }
    free(sc);
    free(acc);
}

int bs_validate_shape(const char *name, const attn_shape *s, char *err, size_t errlen) {
    if (s->Nk != s->N)
        return lra_errorf(err, errlen, "attention '%s' has no segment memory (key length %d != query length %d)", name,
                          s->Nk, s->N);
    if (s->Dh < 1) return lra_errorf(err, errlen, "attention '%s': head size %d < 1", name, s->Dh);
    return 0;
}
