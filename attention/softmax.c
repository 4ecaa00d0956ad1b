/* softmax.c - exact softmax attention, O = softmax(s Q K^T + M) V with s = 1/sqrt(Dh)
 * (Vaswani et al., arXiv:1706.03762), in two implementations selected by the `impl` parameter:
 *
 *  tiled         online softmax over key tiles (Milakov & Gimelshein, arXiv:1805.02867;
 *                FlashAttention, Dao et al., arXiv:2205.14135, Alg. 1; reference/attention.md
 *                §1.3-1.4). The cache is the row log-sum-exp L (B,H,N): memory linear in N. The
 *                backward recomputes scores tile by tile from L.
 *  materialized  the LRA-paper baseline: the forward stores the probabilities P, B*H*N*Nk floats,
 *                in the cache (cache_bytes is quadratic in N; stored per head as P^T, (Nk, N), so
 *                the query dimension is contiguous like in the kernels), and the backward is the
 *                dense one reading P instead of recomputing it.
 *
 * Glossary: B batch, H heads, N query length, Nk key length (Nk >= N), Dh head size,
 * Dp = Dh rounded up to a kernel width (16, 32, 64, 128, else a multiple of 64),
 * BR query rows per tile, BC key columns per tile; off = Nk - N (causal offset: query i sees key
 * j iff j <= i + off).
 *
 * Kernel layout. Dh is small (16-64) in LRA, so the long dimension of every tile product is the
 * query tile: scores are held transposed, ST[c][r] = k_c . (s q_r) (BC x BR), and every
 * elementwise softmax step (running max, exp, row sums, rescaling) is a plain loop over the BR
 * query lanes with no horizontal reductions (GCC -O3 vectorises them). All tile products are one
 * kernel, mm_acc(), an outer-product accumulation with a register-blocked accumulator. exp is
 * lra_expf() from fastmath.h, the same function in the forward and the recompute. Tiles are
 * 64 x 64 (measured: 32/128 are no faster at Dh 16-64 on AVX-512, and 64 keeps padding waste low
 * at short N). Work units are (b, h, tile), so B*H*ceil(N/64) of them in the forward.
 *
 * Backward (§1.2 identities, D_i = dO_i . O_i):
 *   dV = P~^T dO,  dP~ = dO V^T,  dS = P o (dP~ o Z/(1-p) - D),  dQ = s dS K,  dK = s dS^T Q.
 * Two deterministic schedules with bitwise-identical results (the same tile function, the same
 * accumulation order for every output element):
 *   per head  one pass per (b,h), key tiles outer, query tiles inner; each thread owns whole heads
 *             (5 tile products and 1 exp per tile pair). Used when B*H >= 4 * threads.
 *   two pass  pass A over (b,h,key tile) owns dK,dV; pass B over (b,h,query tile) owns dQ
 *             (7 products, 2 exps). Used when there are too few heads to share out.
 *
 * Dropout on the probabilities (after normalisation, not in the normaliser) uses the counter-based
 * mask of attn_dropout_scale(), regenerated in the backward.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../lra/common.h"
#include "attention.h"
#include "fastmath.h"

#ifdef _OPENMP
#include <omp.h>
#endif

enum { SM_TILED = 0, SM_MATERIALIZED = 1 };

typedef struct {
    int impl; /* SM_TILED or SM_MATERIALIZED */
} softmax_params;

static const param_def softmax_schema[] = {
    P_ENUM(softmax_params, impl, "tiled", "tiled|materialized",
           "tiled: online softmax, memory linear in N; materialized: stores the N x Nk probabilities (LRA baseline)"),
};

#define BR 64 /* query rows per tile: the vector dimension of every softmax step */
#define BC 64 /* key columns per tile */

static int sm_impl(const void *params) {
    return params ? ((const softmax_params *)params)->impl : SM_TILED;
}

/* Padded head size: the kernels are instantiated for these widths; the padding is zeros. */
static int sm_dpad(int dh) {
    if (dh <= 16) return 16;
    if (dh <= 32) return 32;
    if (dh <= 64) return 64;
    if (dh <= 128) return 128;
    return LRA_CEIL_DIV(dh, 64) * 64;
}

/* ---------------------------------------------------------------------------------------------
 * The one product kernel: C[i][w] (= or +=) sum_{t<T} A[i*sai + t*sat] * X[t*ldx + w]
 * for i < M, w < W: an outer-product accumulation (broadcast one A element, multiply a row of X).
 *
 * Written with GCC vector extensions so that the register blocking is explicit: an RB x CW block
 * of C stays in RB * CW/VL vector registers while t runs (plain loops left GCC 12 storing the
 * accumulator to memory on every t: 2 GFLOP/s instead of ~90). The multiply-add is an explicit
 * vector FMA where the target has one (-std=c11 never contracts a*b+c), else a multiply and an
 * add; the portable branch is what -O1 sanitizer builds without -march run. The sum over t runs in
 * increasing t, so every result depends only on the data, never on threads. W must be a multiple
 * of CW, CW of VL, and M of RB; all are compile-time constants after inlining (except for the
 * generic Dp > 128 instance, which is correct but slower). */
#if defined(__AVX512F__)
#include <immintrin.h>
#define VL 16       /* floats per vector register */
#define ACC_REGS 16 /* vector accumulators per register block */
#define VFMA(a, x, c) _mm512_fmadd_ps(_mm512_set1_ps(a), (x), (c))
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define VL 8
#define ACC_REGS 8
#define VFMA(a, x, c) _mm256_fmadd_ps(_mm256_set1_ps(a), (x), (c))
#else
#define VL 8
#define ACC_REGS 8
#define VFMA(a, x, c) ((c) + (a) * (x))
#endif
typedef float vf __attribute__((vector_size(VL * sizeof(float))));

static inline __attribute__((always_inline)) void mm_acc(float *restrict C, int ldc, const float *restrict A,
                                                         int sai, int sat, const float *restrict X, int ldx,
                                                         int M, int T, const int W, int zero) {
    const int CW = W < 4 * VL ? W : 4 * VL; /* columns per block */
    const int NV = CW / VL;                 /* vectors per row of the block */
    const int RB = ACC_REGS / NV > 8 ? 8 : ACC_REGS / NV;
    for (int w0 = 0; w0 < W; w0 += CW)
        for (int i = 0; i < M; i += RB) {
            vf acc[ACC_REGS];
#pragma GCC unroll 16
            for (int k = 0; k < RB * NV; k++) {
                if (zero) acc[k] = (vf){0};
                else memcpy(&acc[k], C + (size_t)(i + k / NV) * ldc + w0 + (k % NV) * VL, sizeof(vf));
            }
            for (int t = 0; t < T; t++) {
                const float *x = X + (size_t)t * ldx + w0;
                vf xv[4] = {{0}};
#pragma GCC unroll 4
                for (int v = 0; v < NV; v++) memcpy(&xv[v], x + v * VL, sizeof(vf));
#pragma GCC unroll 16
                for (int ii = 0; ii < RB; ii++) {
                    float a = A[(size_t)(i + ii) * sai + (size_t)t * sat];
#pragma GCC unroll 4
                    for (int v = 0; v < NV; v++) acc[ii * NV + v] = VFMA(a, xv[v], acc[ii * NV + v]);
                }
            }
#pragma GCC unroll 16
            for (int k = 0; k < RB * NV; k++)
                memcpy(C + (size_t)(i + k / NV) * ldc + w0 + (k % NV) * VL, &acc[k], sizeof(vf));
        }
}

/* ---------------------------------------------------------------------------------------------
 * Per-call context and per-thread tile buffers. */
typedef struct {
    const attn_layer *L;
    int B, H, N, Nk, dh, dp, off, causal;
    int nI, nJ, Npad;
    float scale;
    int dropout; /* dropout active in this call */
    const float *q, *k, *v, *out, *dout;
    const uint8_t *km;
    float *o, *dq, *dk, *dv;
    float *lse; /* tiled cache (B,H,N) */
    float *P;   /* materialized cache, stored transposed per head: (B,H,Nk,N) */
    float *D;   /* backward: dO . O per row (B,H,N), in scratch */
    char *thread_base;
    size_t thread_bytes;
} sm_ctx;

typedef struct {
    float *qsT;  /* (Dp, BR)  s * Q_I transposed, zero padded (forward) */
    float *qs;   /* (BR, Dp)  s * Q_I (forward) */
    float *kr;   /* (BC, Dp)  K_J */
    float *vr;   /* (BC, Dp)  V_J */
    float *st;   /* (BC, BR)  scores / probabilities, transposed */
    float *dpt;  /* (BC, BR)  dP / dS, transposed */
    float *zt;   /* (BC, BR)  dropout keep-scales, transposed */
    float *acc;  /* (Dp, BR)  O_I^T accumulator (forward), dQ_I^T (backward pass B) */
    float *dka;  /* (BC, Dp)  dK_J accumulator */
    float *dva;  /* (BC, Dp)  dV_J accumulator */
    float *m, *ms, *alpha, *lsum, *mx; /* (BR) */
    double *l;   /* (BR) running softmax denominators */
    uint8_t *dead; /* (BC) key column masked (padding or past Nk) */
    /* Backward query-side inputs of one head, prepared once per unit, tile `it` at offset
     * it * BR * Dp (matrices) or it * BR (vectors): */
    float *hqsT; /* (nI, Dp, BR)  s * Q transposed */
    float *hqs;  /* (nI, BR, Dp)  s * Q */
    float *hdoT; /* (nI, Dp, BR)  dO transposed */
    float *hdo;  /* (nI, BR, Dp)  dO */
    float *hlse; /* (Npad)  L, +inf on padding rows (tiled) */
    float *hdd;  /* (Npad)  D = dO . O, 0 on padding rows */
    float *dqT;  /* (Dp, Npad)  per-head dQ^T accumulator (backward per-head schedule) */
} sm_buf;

static size_t seg(size_t nfloats) { return LRA_CEIL_DIV(nfloats, 16) * 16 * sizeof(float); }

/* Bytes of one thread's buffers, and the carving of them (the two must agree). */
static size_t sm_thread_bytes(int dp, int Npad) {
    size_t t = 0;
    t += 2 * seg((size_t)dp * BR);                 /* qsT qs */
    t += 2 * seg((size_t)BC * dp);                 /* kr vr */
    t += 3 * seg((size_t)BC * BR);                 /* st dpt zt */
    t += seg((size_t)dp * BR);                     /* acc */
    t += 2 * seg((size_t)BC * dp);                 /* dka dva */
    t += 5 * seg(BR);                              /* m ms alpha lsum mx */
    t += seg(2 * BR);                              /* l (double) */
    t += seg(BC);                                  /* dead */
    t += 4 * seg((size_t)dp * (size_t)Npad);       /* hqsT hqs hdoT hdo */
    t += 2 * seg((size_t)Npad);                    /* hlse hdd */
    t += seg((size_t)dp * (size_t)Npad);           /* dqT */
    return t;
}

static sm_buf sm_carve(char *p, int dp, int Npad) {
    sm_buf b;
#define TAKE(field, type, n) (b.field = (type *)(void *)p, p += seg(n))
    TAKE(qsT, float, (size_t)dp * BR);
    TAKE(qs, float, (size_t)dp * BR);
    TAKE(kr, float, (size_t)BC * dp);
    TAKE(vr, float, (size_t)BC * dp);
    TAKE(st, float, (size_t)BC * BR);
    TAKE(dpt, float, (size_t)BC * BR);
    TAKE(zt, float, (size_t)BC * BR);
    TAKE(acc, float, (size_t)dp * BR);
    TAKE(dka, float, (size_t)BC * dp);
    TAKE(dva, float, (size_t)BC * dp);
    TAKE(m, float, BR);
    TAKE(ms, float, BR);
    TAKE(alpha, float, BR);
    TAKE(lsum, float, BR);
    TAKE(mx, float, BR);
    TAKE(l, double, 2 * BR);
    TAKE(dead, uint8_t, BC);
    TAKE(hqsT, float, (size_t)dp * Npad);
    TAKE(hqs, float, (size_t)dp * Npad);
    TAKE(hdoT, float, (size_t)dp * Npad);
    TAKE(hdo, float, (size_t)dp * Npad);
    TAKE(hlse, float, (size_t)Npad);
    TAKE(hdd, float, (size_t)Npad);
    TAKE(dqT, float, (size_t)dp * (size_t)Npad);
#undef TAKE
    return b;
}

static int sm_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static int sm_thread_id(void) {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

static sm_buf sm_thread_buf(const sm_ctx *c) {
    return sm_carve(c->thread_base + (size_t)sm_thread_id() * c->thread_bytes, c->dp, c->Npad);
}

/* ---------------------------------------------------------------------------------------------
 * Tile loading. */

/* dst (n_pad, dp) <- rows src[0..nvalid) of width dh, times mul; zeros elsewhere. */
static void load_rows(float *restrict dst, const float *restrict src, int nvalid, int n_pad, int dh, int dp,
                      float mul) {
    for (int r = 0; r < n_pad; r++) {
        float *d = dst + (size_t)r * dp;
        if (r < nvalid) {
            const float *s = src + (size_t)r * dh;
            for (int x = 0; x < dh; x++) d[x] = s[x] * mul;
            for (int x = dh; x < dp; x++) d[x] = 0.0f;
        } else {
            memset(d, 0, (size_t)dp * sizeof *d);
        }
    }
}

/* dst (dp, BR) <- transpose of rows (BR, dp). */
static void transpose_rows(float *restrict dst, const float *restrict rows, int dp) {
    for (int x = 0; x < dp; x++)
        for (int r = 0; r < BR; r++) dst[(size_t)x * BR + r] = rows[(size_t)r * dp + x];
}

/* Mark dead key columns of tile j0 (padding or beyond Nk); returns the number of live ones. */
static int tile_keys(const sm_ctx *c, int b, int j0, uint8_t *dead) {
    int live = 0;
    const uint8_t *km = c->km ? c->km + (size_t)b * c->Nk : NULL;
    for (int x = 0; x < BC; x++) {
        int j = j0 + x;
        int ok = j < c->Nk && (!km || km[j]);
        dead[x] = (uint8_t)!ok;
        live += ok;
    }
    return live;
}

static int tile_nrows(const sm_ctx *c, int it) { return LRA_MIN(BR, c->N - it * BR); }

/* Causal: can some query of tile it see key tile jt? */
static int tile_visible(const sm_ctx *c, int it, int jt) {
    if (!c->causal) return 1;
    int i_last = it * BR + tile_nrows(c, it) - 1;
    return jt * BC <= i_last + c->off;
}

/* Set masked scores to -inf: dead columns, and causal j > i + off. */
static void mask_scores(const sm_ctx *c, float *restrict st, const uint8_t *dead, int i0, int j0) {
    for (int x = 0; x < BC; x++) {
        float *s = st + (size_t)x * BR;
        if (dead[x]) {
            for (int r = 0; r < BR; r++) s[r] = -INFINITY;
        } else if (c->causal) {
            /* visible iff j0 + x <= i0 + r + off, i.e. r >= j0 + x - off - i0 */
            int rmin = j0 + x - c->off - i0;
            if (rmin > BR) rmin = BR;
            for (int r = 0; r < rmin; r++) s[r] = -INFINITY;
        }
    }
}

/* Dropout keep-scales of a tile: zt[x][r] = attn_dropout_scale(L, b, h, i0 + r, j0 + x), i.e.
 * 0 or 1/(1-p) (attention/attn_util.c), for every r < BR (rows past N get values that multiply
 * zeros). attn_dropout_scale() costs a call and three hash rounds per element, 10x the rest of the
 * tile at Dh = 16, so its definition is restated here with the per-call stream hoisted and the
 * hash inlined (sm_mix and the body of rng_at() in lra/rng.c) so that the loop over r vectorises.
 * It must stay equal to attn_dropout_scale(): tests/test_softmax.c compares dropout forwards with
 * the reference, which calls attn_dropout_scale() itself, to 1e-5. */
static inline uint64_t sm_mix(uint64_t z) { /* splitmix64 finaliser, as splitmix_final in rng.c */
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void dropout_tile(const sm_ctx *c, float *restrict zt, int b, int h, int i0, int j0) {
    const attn_layer *L = c->L;
    uint64_t stream = rng_substream(RNG_DROPOUT, 1000 + (uint64_t)L->shape.layer, (uint64_t)L->step);
    uint64_t h1 = sm_mix(L->seed + 0x9e3779b97f4a7c15ULL * (stream + 1)); /* rng_at's first round */
    float p = L->dropout, keep = 1.0f / (1.0f - p);
    uint64_t nk = (uint64_t)c->Nk;
    uint64_t row0 = (((uint64_t)b * (uint64_t)c->H + (uint64_t)h) * (uint64_t)c->N + (uint64_t)i0) * nk;
    for (int x = 0; x < BC; x++) {
        uint64_t base = row0 + (uint64_t)(j0 + x);
        float *z = zt + (size_t)x * BR;
        for (int r = 0; r < BR; r++) {
            uint64_t ctr = base + (uint64_t)r * nk;
            uint64_t v = sm_mix(h1 ^ (ctr * 0xd1342543de82ef95ULL + 0x632be59bd9b4e019ULL));
            v = sm_mix(v + ctr);
            float u = (float)(uint32_t)(v >> 40) * (1.0f / 16777216.0f);
            z[r] = u < p ? 0.0f : keep;
        }
    }
}

/* Key-tile column count. */
static int tile_ncols(const sm_ctx *c, int jt) { return LRA_MIN(BC, c->Nk - jt * BC); }

/* ---------------------------------------------------------------------------------------------
 * Forward, tiled: one (b, h, query tile) unit. */
static inline __attribute__((always_inline)) void fwd_tiled_unit(const sm_ctx *c, sm_buf *bf, int u, const int dp) {
    const int dh = c->dh;
    int bh = u / c->nI, it = u % c->nI, b = bh / c->H, h = bh % c->H;
    int i0 = it * BR, nr = tile_nrows(c, it);
    const float *qb = c->q + ((size_t)bh * c->N + i0) * dh;
    const float *kb = c->k + (size_t)bh * c->Nk * dh;
    const float *vb = c->v + (size_t)bh * c->Nk * dh;

    load_rows(bf->qs, qb, nr, BR, dh, dp, c->scale);
    transpose_rows(bf->qsT, bf->qs, dp);
    for (int r = 0; r < BR; r++) {
        bf->m[r] = -INFINITY;
        bf->l[r] = 0.0;
    }
    memset(bf->acc, 0, (size_t)dp * BR * sizeof(float));

    for (int jt = 0; jt < c->nJ; jt++) {
        if (!tile_visible(c, it, jt)) break;
        int j0 = jt * BC, nc = tile_ncols(c, jt);
        if (!tile_keys(c, b, j0, bf->dead)) continue;
        load_rows(bf->kr, kb + (size_t)j0 * dh, nc, BC, dh, dp, 1.0f);
        load_rows(bf->vr, vb + (size_t)j0 * dh, nc, BC, dh, dp, 1.0f);
        /* ST[x][r] = k_x . (s q_r) */
        mm_acc(bf->st, BR, bf->kr, dp, 1, bf->qsT, BR, BC, dp, BR, 1);
        mask_scores(c, bf->st, bf->dead, i0, j0);

        /* online softmax over the BR query lanes */
        float *restrict m = bf->m, *restrict ms = bf->ms, *restrict al = bf->alpha, *restrict ls = bf->lsum,
                        *restrict mx = bf->mx;
        for (int r = 0; r < BR; r++) mx[r] = -INFINITY;
        for (int x = 0; x < BC; x++) {
            const float *s = bf->st + (size_t)x * BR;
            for (int r = 0; r < BR; r++) mx[r] = s[r] > mx[r] ? s[r] : mx[r];
        }
        for (int r = 0; r < BR; r++) {
            float mn = m[r] > mx[r] ? m[r] : mx[r];
            ms[r] = mn == -INFINITY ? 0.0f : mn; /* nothing visible yet: exp(-inf - 0) = 0 */
            al[r] = lra_expf(m[r] - ms[r]);
            m[r] = mn;
            ls[r] = 0.0f;
        }
        for (int x = 0; x < BC; x++) {
            float *s = bf->st + (size_t)x * BR;
            for (int r = 0; r < BR; r++) {
                float e = lra_expf(s[r] - ms[r]);
                s[r] = e;
                ls[r] += e;
            }
        }
        for (int r = 0; r < BR; r++) bf->l[r] = (double)al[r] * bf->l[r] + (double)ls[r];
        for (int x = 0; x < dp; x++) {
            float *a = bf->acc + (size_t)x * BR;
            for (int r = 0; r < BR; r++) a[r] *= al[r];
        }
        if (c->dropout) {
            dropout_tile(c, bf->zt, b, h, i0, j0);
            for (size_t e = 0; e < (size_t)BC * BR; e++) bf->st[e] *= bf->zt[e];
        }
        /* O^T[x][r] += sum_j v_j[x] P~^T[j][r] */
        mm_acc(bf->acc, BR, bf->vr, 1, dp, bf->st, BR, dp, BC, BR, 0);
    }

    float *ob = c->o + ((size_t)bh * c->N + i0) * dh;
    float *lb = c->lse + (size_t)bh * c->N + i0;
    for (int r = 0; r < nr; r++) {
        double l = bf->l[r];
        /* l == 0: the row sees no key. NaN scores make l NaN, and NaN must reach the output. */
        for (int x = 0; x < dh; x++) ob[(size_t)r * dh + x] = l == 0 ? 0.0f : (float)(bf->acc[(size_t)x * BR + r] / l);
        lb[r] = l == 0 ? INFINITY : (float)((double)bf->m[r] + log(l));
    }
}

/* ---------------------------------------------------------------------------------------------
 * Forward, materialized: one (b, h, query tile) unit; writes P^T for its query columns. Three
 * sweeps over the stored tile rows: scores and row max, exp and row sums, normalise and P~V. */
static inline __attribute__((always_inline)) void fwd_mat_unit(const sm_ctx *c, sm_buf *bf, int u, const int dp) {
    const int dh = c->dh;
    int bh = u / c->nI, it = u % c->nI, b = bh / c->H, h = bh % c->H;
    int i0 = it * BR, nr = tile_nrows(c, it);
    const float *qb = c->q + ((size_t)bh * c->N + i0) * dh;
    const float *kb = c->k + (size_t)bh * c->Nk * dh;
    const float *vb = c->v + (size_t)bh * c->Nk * dh;
    float *Pb = c->P + (size_t)bh * c->Nk * c->N + i0; /* P^T[j][i0 + r] at Pb[j * N + r] */
    const size_t ldp = (size_t)c->N;

    load_rows(bf->qs, qb, nr, BR, dh, dp, c->scale);
    transpose_rows(bf->qsT, bf->qs, dp);
    float *restrict m = bf->m, *restrict ms = bf->ms, *restrict ls = bf->lsum;
    for (int r = 0; r < BR; r++) {
        m[r] = -INFINITY;
        bf->l[r] = 0.0;
    }
    /* sweep 1: scores into P, row max */
    for (int jt = 0; jt < c->nJ; jt++) {
        int j0 = jt * BC, nc = tile_ncols(c, jt);
        if (!tile_visible(c, it, jt) || !tile_keys(c, b, j0, bf->dead)) {
            for (int x = 0; x < nc; x++) memset(Pb + (size_t)(j0 + x) * ldp, 0, (size_t)nr * sizeof(float));
            continue;
        }
        load_rows(bf->kr, kb + (size_t)j0 * dh, nc, BC, dh, dp, 1.0f);
        mm_acc(bf->st, BR, bf->kr, dp, 1, bf->qsT, BR, BC, dp, BR, 1);
        mask_scores(c, bf->st, bf->dead, i0, j0);
        for (int x = 0; x < BC; x++) {
            const float *s = bf->st + (size_t)x * BR;
            for (int r = 0; r < BR; r++) m[r] = s[r] > m[r] ? s[r] : m[r];
        }
        for (int x = 0; x < nc; x++) memcpy(Pb + (size_t)(j0 + x) * ldp, bf->st + (size_t)x * BR, (size_t)nr * sizeof(float));
    }
    for (int r = 0; r < BR; r++) ms[r] = m[r] == -INFINITY ? 0.0f : m[r];
    /* sweep 2: exp, row sums */
    for (int jt = 0; jt < c->nJ; jt++) {
        int j0 = jt * BC, nc = tile_ncols(c, jt);
        if (!tile_visible(c, it, jt) || !tile_keys(c, b, j0, bf->dead)) continue;
        for (int r = 0; r < BR; r++) ls[r] = 0.0f;
        for (int x = 0; x < nc; x++) {
            float *s = Pb + (size_t)(j0 + x) * ldp;
            for (int r = 0; r < nr; r++) {
                float e = lra_expf(s[r] - ms[r]);
                s[r] = e;
                ls[r] += e;
            }
        }
        for (int r = 0; r < BR; r++) bf->l[r] += (double)ls[r];
    }
    float *restrict inv = bf->alpha;
    for (int r = 0; r < BR; r++) inv[r] = bf->l[r] == 0 ? 0.0f : (float)(1.0 / bf->l[r]); /* NaN stays NaN */
    /* sweep 3: normalise (P is stored before dropout), O^T += V^T P~ */
    memset(bf->acc, 0, (size_t)dp * BR * sizeof(float));
    for (int jt = 0; jt < c->nJ; jt++) {
        int j0 = jt * BC, nc = tile_ncols(c, jt);
        if (!tile_visible(c, it, jt) || !tile_keys(c, b, j0, bf->dead)) continue;
        load_rows(bf->vr, vb + (size_t)j0 * dh, nc, BC, dh, dp, 1.0f);
        for (int x = 0; x < BC; x++) {
            float *t = bf->st + (size_t)x * BR;
            if (x < nc) {
                float *s = Pb + (size_t)(j0 + x) * ldp;
                for (int r = 0; r < nr; r++) s[r] *= inv[r];
                memcpy(t, s, (size_t)nr * sizeof(float));
                for (int r = nr; r < BR; r++) t[r] = 0.0f;
            } else {
                memset(t, 0, BR * sizeof(float));
            }
        }
        if (c->dropout) {
            dropout_tile(c, bf->zt, b, h, i0, j0);
            for (size_t e = 0; e < (size_t)BC * BR; e++) bf->st[e] *= bf->zt[e];
        }
        mm_acc(bf->acc, BR, bf->vr, 1, dp, bf->st, BR, dp, BC, BR, 0);
    }
    float *ob = c->o + ((size_t)bh * c->N + i0) * dh;
    for (int r = 0; r < nr; r++)
        for (int x = 0; x < dh; x++) ob[(size_t)r * dh + x] = bf->acc[(size_t)x * BR + r];
}

/* ---------------------------------------------------------------------------------------------
 * Backward. */

/* Query-tile inputs of the backward for tile it of head bh: s Q_I, dO_I (rows and transposed),
 * L_I, D_I, into the head buffers. */
static void bwd_load_q(const sm_ctx *c, sm_buf *bf, int bh, int it) {
    const int dh = c->dh, dp = c->dp;
    int i0 = it * BR, nr = tile_nrows(c, it);
    size_t o = (size_t)it * BR * dp;
    load_rows(bf->hqs + o, c->q + ((size_t)bh * c->N + i0) * dh, nr, BR, dh, dp, c->scale);
    transpose_rows(bf->hqsT + o, bf->hqs + o, dp);
    load_rows(bf->hdo + o, c->dout + ((size_t)bh * c->N + i0) * dh, nr, BR, dh, dp, 1.0f);
    transpose_rows(bf->hdoT + o, bf->hdo + o, dp);
    const float *D = c->D + (size_t)bh * c->N + i0;
    for (int r = 0; r < BR; r++) {
        bf->hdd[i0 + r] = r < nr ? D[r] : 0.0f;
        bf->hlse[i0 + r] = r < nr && c->lse ? c->lse[(size_t)bh * c->N + i0 + r] : INFINITY;
    }
}

/* Key-tile inputs: K_J, V_J rows and dead columns; returns the number of live keys. */
static int bwd_load_k(const sm_ctx *c, sm_buf *bf, int bh, int jt) {
    const int dh = c->dh, dp = c->dp;
    int j0 = jt * BC, nc = tile_ncols(c, jt);
    int live = tile_keys(c, bh / c->H, j0, bf->dead);
    if (!live) return 0;
    load_rows(bf->kr, c->k + ((size_t)bh * c->Nk + j0) * dh, nc, BC, dh, dp, 1.0f);
    load_rows(bf->vr, c->v + ((size_t)bh * c->Nk + j0) * dh, nc, BC, dh, dp, 1.0f);
    return live;
}

/* One tile pair (I = it, J = jt). want_kv: dK_J, dV_J accumulators (bf->dka, bf->dva) += ...;
 * dqT != NULL: dQ_I^T (Dp rows of stride ldq) += dS K (unscaled by s). */
static inline __attribute__((always_inline)) void bwd_pair(const sm_ctx *c, sm_buf *bf, int bh, int it, int jt,
                                                           int want_kv, float *dqT, int ldq, const int dp) {
    int b = bh / c->H, h = bh % c->H;
    int i0 = it * BR, nr = tile_nrows(c, it), j0 = jt * BC, nc = tile_ncols(c, jt);
    float *restrict st = bf->st, *restrict dpt = bf->dpt;
    const float *restrict lse = bf->hlse + i0, *restrict dd = bf->hdd + i0;
    const size_t o = (size_t)it * BR * dp;
    const float *qsT = bf->hqsT + o, *qs = bf->hqs + o, *doT = bf->hdoT + o, *dor = bf->hdo + o;

    if (c->P) { /* materialized: P^T tile from the cache */
        const float *Pb = c->P + (size_t)bh * c->Nk * c->N + i0;
        for (int x = 0; x < BC; x++) {
            float *t = st + (size_t)x * BR;
            if (x < nc) {
                memcpy(t, Pb + (size_t)(j0 + x) * c->N, (size_t)nr * sizeof(float));
                for (int r = nr; r < BR; r++) t[r] = 0.0f;
            } else {
                memset(t, 0, BR * sizeof(float));
            }
        }
    } else { /* tiled: P = exp(s q k - L), the forward's formula */
        mm_acc(st, BR, bf->kr, dp, 1, qsT, BR, BC, dp, BR, 1);
        mask_scores(c, st, bf->dead, i0, j0);
        for (int x = 0; x < BC; x++) {
            float *s = st + (size_t)x * BR;
            for (int r = 0; r < BR; r++) s[r] = lra_expf(s[r] - lse[r]);
        }
    }
    /* dP~^T[x][r] = v_x . dO_r */
    mm_acc(dpt, BR, bf->vr, dp, 1, doT, BR, BC, dp, BR, 1);
    if (c->dropout) {
        /* dS = P o (Z o dP~ - D), then st becomes P~ = P o Z */
        const float *restrict zt = bf->zt;
        dropout_tile(c, bf->zt, b, h, i0, j0);
        for (int x = 0; x < BC; x++) {
            float *s = st + (size_t)x * BR, *g = dpt + (size_t)x * BR;
            const float *z = zt + (size_t)x * BR;
            for (int r = 0; r < BR; r++) {
                g[r] = s[r] * (g[r] * z[r] - dd[r]);
                s[r] *= z[r];
            }
        }
    } else {
        for (int x = 0; x < BC; x++) {
            const float *s = st + (size_t)x * BR;
            float *g = dpt + (size_t)x * BR;
            for (int r = 0; r < BR; r++) g[r] = s[r] * (g[r] - dd[r]);
        }
    }
    if (want_kv) {
        /* dV_J[x] += sum_r P~^T[x][r] dO_r ; dK_J[x] += sum_r dS^T[x][r] (s q_r) */
        mm_acc(bf->dva, dp, st, BR, 1, dor, dp, BC, BR, dp, 0);
        mm_acc(bf->dka, dp, dpt, BR, 1, qs, dp, BC, BR, dp, 0);
    }
    if (dqT) /* dQ^T[x][r] += sum_j k_j[x] dS^T[j][r] */
        mm_acc(dqT, ldq, bf->kr, 1, dp, dpt, BR, dp, BC, BR, 0);
}

/* Write dK_J, dV_J from the accumulators (zero rows for dead tiles come from a memset). */
static void bwd_store_kv(const sm_ctx *c, const sm_buf *bf, int bh, int jt) {
    const int dh = c->dh, dp = c->dp;
    int j0 = jt * BC, nc = tile_ncols(c, jt);
    float *dk = c->dk + ((size_t)bh * c->Nk + j0) * dh, *dv = c->dv + ((size_t)bh * c->Nk + j0) * dh;
    for (int x = 0; x < nc; x++)
        for (int y = 0; y < dh; y++) {
            dk[(size_t)x * dh + y] = bf->dka[(size_t)x * dp + y];
            dv[(size_t)x * dh + y] = bf->dva[(size_t)x * dp + y];
        }
}

/* dQ_I = s * (dQ^T)^T, from columns col0.. of a (Dp, ld) accumulator. */
static void bwd_store_q(const sm_ctx *c, const float *dqT, int ld, int col0, int bh, int it) {
    const int dh = c->dh;
    int i0 = it * BR, nr = tile_nrows(c, it);
    float *dq = c->dq + ((size_t)bh * c->N + i0) * dh;
    for (int r = 0; r < nr; r++)
        for (int y = 0; y < dh; y++) dq[(size_t)r * dh + y] = c->scale * dqT[(size_t)y * ld + col0 + r];
}

/* Per-head schedule: key tiles outer, query tiles inner; dQ^T accumulates for the whole head. */
static inline __attribute__((always_inline)) void bwd_head(const sm_ctx *c, sm_buf *bf, int bh, const int dp) {
    memset(bf->dqT, 0, (size_t)dp * c->Npad * sizeof(float));
    for (int it = 0; it < c->nI; it++) bwd_load_q(c, bf, bh, it);
    for (int jt = 0; jt < c->nJ; jt++) {
        memset(bf->dka, 0, (size_t)BC * dp * sizeof(float));
        memset(bf->dva, 0, (size_t)BC * dp * sizeof(float));
        if (bwd_load_k(c, bf, bh, jt))
            for (int it = 0; it < c->nI; it++)
                if (tile_visible(c, it, jt)) bwd_pair(c, bf, bh, it, jt, 1, bf->dqT + (size_t)it * BR, c->Npad, dp);
        bwd_store_kv(c, bf, bh, jt);
    }
    for (int it = 0; it < c->nI; it++) bwd_store_q(c, bf->dqT, c->Npad, it * BR, bh, it);
}

/* Two-pass schedule, pass A: one (b, h, key tile) unit owns dK_J, dV_J. */
static inline __attribute__((always_inline)) void bwd_kv_unit(const sm_ctx *c, sm_buf *bf, int u, const int dp) {
    int bh = u / c->nJ, jt = u % c->nJ;
    memset(bf->dka, 0, (size_t)BC * dp * sizeof(float));
    memset(bf->dva, 0, (size_t)BC * dp * sizeof(float));
    if (bwd_load_k(c, bf, bh, jt))
        for (int it = 0; it < c->nI; it++)
            if (tile_visible(c, it, jt)) {
                bwd_load_q(c, bf, bh, it);
                bwd_pair(c, bf, bh, it, jt, 1, NULL, 0, dp);
            }
    bwd_store_kv(c, bf, bh, jt);
}

/* Two-pass schedule, pass B: one (b, h, query tile) unit owns dQ_I. */
static inline __attribute__((always_inline)) void bwd_q_unit(const sm_ctx *c, sm_buf *bf, int u, const int dp) {
    int bh = u / c->nI, it = u % c->nI;
    memset(bf->acc, 0, (size_t)dp * BR * sizeof(float));
    bwd_load_q(c, bf, bh, it);
    for (int jt = 0; jt < c->nJ; jt++) {
        if (!tile_visible(c, it, jt)) break;
        if (!bwd_load_k(c, bf, bh, jt)) continue;
        bwd_pair(c, bf, bh, it, jt, 0, bf->acc, BR, dp);
    }
    bwd_store_q(c, bf->acc, BR, 0, bh, it);
}

/* ---------------------------------------------------------------------------------------------
 * Width dispatch: each unit function is instantiated for the padded head sizes. */
typedef enum { U_FWD_TILED, U_FWD_MAT, U_BWD_HEAD, U_BWD_KV, U_BWD_Q } unit_kind;

static inline __attribute__((always_inline)) void run_unit(const sm_ctx *c, sm_buf *bf, unit_kind k, int u,
                                                           const int dp) {
    switch (k) {
    case U_FWD_TILED: fwd_tiled_unit(c, bf, u, dp); break;
    case U_FWD_MAT: fwd_mat_unit(c, bf, u, dp); break;
    case U_BWD_HEAD: bwd_head(c, bf, u, dp); break;
    case U_BWD_KV: bwd_kv_unit(c, bf, u, dp); break;
    case U_BWD_Q: bwd_q_unit(c, bf, u, dp); break;
    }
}

static void run_d16(const sm_ctx *c, sm_buf *bf, unit_kind k, int u) { run_unit(c, bf, k, u, 16); }
static void run_d32(const sm_ctx *c, sm_buf *bf, unit_kind k, int u) { run_unit(c, bf, k, u, 32); }
static void run_d64(const sm_ctx *c, sm_buf *bf, unit_kind k, int u) { run_unit(c, bf, k, u, 64); }
static void run_d128(const sm_ctx *c, sm_buf *bf, unit_kind k, int u) { run_unit(c, bf, k, u, 128); }
static void run_dany(const sm_ctx *c, sm_buf *bf, unit_kind k, int u) { run_unit(c, bf, k, u, c->dp); }

/* Below this many multiply-adds per call (B*H*N*Nk*Dp) the call runs on one thread: a parallel
 * region and its barrier cost more than they save, and far more on a shared, oversubscribed
 * machine. Results do not depend on the thread count either way. */
#define SM_PARALLEL_MIN_WORK (1 << 18)

/* Run units [0, n) of kind k over the OpenMP threads; each unit owns its outputs. */
static void run_units(const sm_ctx *c, unit_kind k, int n) {
    double work = (double)c->B * c->H * (double)c->N * (double)c->Nk * c->dp;
    (void)work; /* only read by the OpenMP if() clause */
    void (*fn)(const sm_ctx *, sm_buf *, unit_kind, int) = c->dp == 16  ? run_d16
                                                          : c->dp == 32  ? run_d32
                                                          : c->dp == 64  ? run_d64
                                                          : c->dp == 128 ? run_d128
                                                                         : run_dany;
#pragma omp parallel if (work >= SM_PARALLEL_MIN_WORK)
    {
        sm_buf bf = sm_thread_buf(c);
#pragma omp for schedule(dynamic, 1)
        for (int u = 0; u < n; u++) fn(c, &bf, k, u);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Sizes. */
static int sm_npad(const attn_shape *s) { return LRA_CEIL_DIV(s->N, BR) * BR; }

static size_t sm_cache_bytes(const void *params, const attn_shape *s) {
    size_t bhn = (size_t)s->B * (size_t)s->H * (size_t)s->N;
    if (sm_impl(params) == SM_MATERIALIZED) return bhn * (size_t)s->Nk * sizeof(float);
    return bhn * sizeof(float);
}

/* Shared D (B,H,N) for the backward, then n_threads tile buffers. */
static size_t sm_shared_bytes(const attn_shape *s) {
    return seg((size_t)s->B * (size_t)s->H * (size_t)s->N);
}

static size_t sm_scratch_bytes(const void *params, const attn_shape *s, int n_threads) {
    if (n_threads < 1) n_threads = 1;
    return sm_shared_bytes(s) + (size_t)n_threads * sm_thread_bytes(sm_dpad(s->Dh), sm_npad(s));
}

/* Visible (query, key) pairs of one head, ignoring padding. */
static double sm_pairs(const attn_shape *s) {
    double N = s->N, Nk = s->Nk;
    if (!s->causal) return N * Nk;
    double off = Nk - N; /* row i sees i + off + 1 keys */
    return N * off + N * (N + 1) / 2;
}

static double sm_flops(const void *params, const attn_shape *s) {
    return 4.0 * s->Dh * sm_pairs(s) * s->B * s->H;
}

static int sm_validate(const void *params, const attn_shape *s, char *err, size_t errlen) {
    int impl = sm_impl(params);
    if (impl != SM_TILED && impl != SM_MATERIALIZED)
        return lra_errorf(err, errlen, "softmax.impl: expected tiled or materialized (got index %d)", impl);
    if (s->B < 1 || s->H < 1 || s->N < 1 || s->Dh < 1)
        return lra_errorf(err, errlen, "softmax: shape B=%d H=%d N=%d Dh=%d must be positive", s->B, s->H, s->N, s->Dh);
    if (s->Nk < s->N)
        return lra_errorf(err, errlen, "softmax: key length Nk=%d must be >= query length N=%d", s->Nk, s->N);
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Entry points. */
static sm_ctx sm_context(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *key_mask) {
    const attn_shape *s = &L->shape;
    LRA_CHECK(s->B > 0 && s->H > 0 && s->N > 0 && s->Nk >= s->N && s->Dh > 0, "softmax: bad shape B=%d H=%d N=%d Nk=%d Dh=%d",
              s->B, s->H, s->N, s->Nk, s->Dh);
    LRA_CHECK(L->scratch != NULL, "softmax: layer has no scratch (scratch_bytes=%zu)", sm_scratch_bytes(L->params, s, sm_threads()));
    LRA_CHECK(L->cache != NULL, "softmax: layer has no cache (cache_bytes=%zu)", sm_cache_bytes(L->params, s));
    LRA_CHECK(!(L->training && L->dropout > 0) || L->dropout < 1.0f, "softmax: dropout %g not in [0, 1)", (double)L->dropout);
#ifdef _OPENMP
    /* per-thread scratch is indexed by omp_get_thread_num(): callers must not be threads of an
     * enclosing parallel region (they would share slot 0) */
    LRA_CHECK(!omp_in_parallel(), "softmax: called from inside an OpenMP parallel region");
#endif
    sm_ctx c;
    memset(&c, 0, sizeof c);
    c.L = L;
    c.B = s->B, c.H = s->H, c.N = s->N, c.Nk = s->Nk, c.dh = s->Dh, c.dp = sm_dpad(s->Dh);
    c.off = s->Nk - s->N, c.causal = s->causal;
    c.nI = LRA_CEIL_DIV(s->N, BR), c.nJ = LRA_CEIL_DIV(s->Nk, BC), c.Npad = sm_npad(s);
    c.scale = 1.0f / sqrtf((float)s->Dh);
    c.dropout = L->training && L->dropout > 0.0f;
    c.q = q, c.k = k, c.v = v, c.km = key_mask;
    if (sm_impl(L->params) == SM_MATERIALIZED) c.P = L->cache;
    else c.lse = L->cache;
    c.D = L->scratch;
    c.thread_base = (char *)L->scratch + sm_shared_bytes(s);
    c.thread_bytes = sm_thread_bytes(c.dp, c.Npad);
    return c;
}

/* Forward. q (B,H,N,Dh), k, v (B,H,Nk,Dh), key_mask (B,Nk) or NULL -> out (B,H,N,Dh); cache: L
 * (tiled) or P (materialized). Rows that see no key give 0. */
static void sm_forward(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *key_mask,
                       float *out) {
    sm_ctx c = sm_context(L, q, k, v, key_mask);
    c.o = out;
    run_units(&c, c.P ? U_FWD_MAT : U_FWD_TILED, c.B * c.H * c.nI);
}

/* Backward. out is the forward output, dout (B,H,N,Dh); overwrites dq (B,H,N,Dh), dk, dv
 * (B,H,Nk,Dh). Padded keys get zero gradient. */
static void sm_backward(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *key_mask,
                        const float *out, const float *dout, float *dq, float *dk, float *dv) {
    sm_ctx c = sm_context(L, q, k, v, key_mask);
    c.out = out, c.dout = dout, c.dq = dq, c.dk = dk, c.dv = dv;
    const int dh = c.dh;
    long rows = (long)c.B * c.H * c.N;
    float *D = c.D;
#pragma omp parallel for schedule(static) if (rows * dh >= SM_PARALLEL_MIN_WORK)
    for (long i = 0; i < rows; i++) {
        const float *o = out + (size_t)i * dh, *g = dout + (size_t)i * dh;
        double s = 0;
        for (int x = 0; x < dh; x++) s += (double)o[x] * (double)g[x];
        D[i] = (float)s;
    }
    int heads = c.B * c.H;
    if (heads >= 4 * sm_threads()) {
        run_units(&c, U_BWD_HEAD, heads);
    } else {
        run_units(&c, U_BWD_KV, heads * c.nJ);
        run_units(&c, U_BWD_Q, heads * c.nI);
    }
}

/* Reference: dense, double precision, one row at a time; THE exact attention of the tests. */
static void sm_reference(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *key_mask,
                         float *out) {
    const attn_shape *s = &L->shape;
    int B = s->B, H = s->H, N = s->N, Nk = s->Nk, dh = s->Dh;
    double scale = 1.0 / sqrt((double)dh);
    double *sc = xmalloc((size_t)Nk * sizeof *sc);
    double *o = xmalloc((size_t)dh * sizeof *o);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < N; i++) {
                size_t bh = (size_t)b * H + h;
                const float *qi = q + (bh * N + i) * dh;
                double mx = -INFINITY;
                for (int j = 0; j < Nk; j++) {
                    int ok = attn_visible(s, i, j) && (!key_mask || key_mask[(size_t)b * Nk + j]);
                    if (!ok) {
                        sc[j] = -INFINITY;
                        continue;
                    }
                    const float *kj = k + (bh * Nk + j) * dh;
                    double d = 0;
                    for (int x = 0; x < dh; x++) d += (double)qi[x] * (double)kj[x];
                    sc[j] = d * scale;
                    if (sc[j] > mx) mx = sc[j];
                }
                double sum = 0;
                for (int x = 0; x < dh; x++) o[x] = 0;
                if (mx > -INFINITY) {
                    for (int j = 0; j < Nk; j++) {
                        sc[j] = sc[j] == -INFINITY ? 0.0 : exp(sc[j] - mx);
                        sum += sc[j];
                    }
                    for (int j = 0; j < Nk; j++) {
                        if (sc[j] == 0.0) continue;
                        double p = sc[j] / sum * attn_dropout_scale(L, b, h, i, j);
                        const float *vj = v + (bh * Nk + j) * dh;
                        for (int x = 0; x < dh; x++) o[x] += p * vj[x];
                    }
                }
                float *oi = out + (bh * N + i) * dh;
                for (int x = 0; x < dh; x++) oi[x] = (float)o[x];
            }
    free(sc);
    free(o);
}

const attn_ops attn_softmax = {
    .name = "softmax",
    .summary = "exact softmax attention; tiled online softmax (linear memory) or materialized N x N baseline",
    .source = "Vaswani et al. 2017, arXiv:1706.03762; tiling: Dao et al. 2022 (FlashAttention), arXiv:2205.14135",
    .schema = softmax_schema,
    .n_schema = (int)LRA_ARRAY_LEN(softmax_schema),
    .params_size = sizeof(softmax_params),
    .caps = ATTN_CAP_CAUSAL | ATTN_CAP_KEY_MASK | ATTN_CAP_MEMORY | ATTN_CAP_DROPOUT,
    .validate = sm_validate,
    .n_weights = NULL,
    .state_bytes = NULL,
    .cache_bytes = sm_cache_bytes,
    .scratch_bytes = sm_scratch_bytes,
    .flops = sm_flops,
    .init = NULL,
    .begin = NULL,
    .forward = sm_forward,
    .backward = sm_backward,
    .reference = sm_reference,
};
