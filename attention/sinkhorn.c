/* sinkhorn.c - Sparse Sinkhorn attention (Tay, Bahri, Yang, Metzler, Juan, "Sparse Sinkhorn
 * Attention", ICML 2020, arXiv 2002.11296; spec: reference/attention.md §9.2, LRA notes lra.md §5).
 *
 * Letters: B batch, H heads, N length, Dh head size, Bs block size, NB = ceil(N/Bs) blocks,
 * Np = NB*Bs padded length, NBmax = ceil(max_len/Bs) blocks the sort net is sized for, NL live
 * blocks (blocks holding at least one real token), T Sinkhorn iterations, tau temperature.
 *
 * Per (b, h):
 *  1. Blocks. Position p lives in block p / Bs, slot p % Bs (contiguous blocks, the paper's;
 *     `lra_strided` gives LRA's reshape, block p % NB, slot p / NB). Lengths that are not a multiple
 *     of Bs are padded internally to Np: the extra slots are masked. Kbar, Vbar (Np, Dh) are k and v
 *     with masked slots zeroed (m = 1 for real tokens, 0 for key padding and internal padding).
 *  2. SortNet. Block summary s_i = masked mean of the block's keys (Dh). Sorting logits
 *     R0_ij = (s_i . W_h[j] + c_h[j]) / tau over the live blocks, with learned per-head weights
 *     W_h (NBmax, Dh), c_h (NBmax) (the paper pools the layer input X and uses a linear or 2-layer
 *     net; here the net sees the pooled keys of its head, and blocks past N use no column, like
 *     LRA's max_num_blocks slice). Fully padded blocks take no part: they are neither sorted nor
 *     sort targets, so padding appended to a sequence leaves the real outputs unchanged.
 *  3. Sinkhorn balancing (attention.md §9.2): T times { rows: Y -= logsumexp_row(Y); columns:
 *     Y -= logsumexp_col(Y) }, U = exp(Y), a soft permutation (doubly stochastic). Computed in
 *     double in the equivalent probability domain (exp once, then divisions by row and column
 *     sums), which needs 2T times fewer exps than the log domain.
 *     sinkhorn_iters = 0 gives LRA's sort_activation='softmax': one row softmax, U = softmax_row(R0).
 *     No Gumbel noise (deterministic; the paper's noise is optional).
 *  4. Soft sorting. Sorted block i: Ksort_i = sum_j U_ij Kbar_j, Vsort_i = sum_j U_ij Vbar_j
 *     (block-level mixing, slot by slot), and slot t of sorted block i is a candidate iff
 *     msort_it = sum_j U_ij m_jt > 0. With a hard permutation this is exactly the masked block it
 *     points at; with a soft one, padded slots contribute zero keys and values to the mixture.
 *  5. Attention. Block i's queries attend to their own block (real keys) and to sorted block i
 *     under ONE softmax over the 2*Bs candidates (lucidrains' [sorted ; local] concatenation), with
 *     logits s*q.k, s = 1/sqrt(Dh). `lra_sum` gives LRA's variant: two separate softmaxes, local
 *     and sorted, whose outputs are summed. Queries of fully padded blocks get output 0.
 *  Everything is differentiable: the backward goes through the attention, the mixing, the
 *  unrolled Sinkhorn iterations (recomputed from the keys, each iterate recovered from the next
 *  one and its normalising sums), the SortNet and the pooling.
 *  Dropout on the probabilities (training) uses its own counter-based stream keyed by
 *  (layer, step, b, h, i, candidate slot), as sorted candidates have no single key position.
 *
 * No causal variant (the paper's causal Sinkhorn needs cumulative summaries and a causal sort;
 * not implemented): validate rejects causal.
 *
 * Cost: attention O(N * 2Bs * Dh), sorting O(NB^2 * (Dh + T)), mixing O(NB * N * Dh) = O(N^2 Dh / Bs)
 * (inherent to soft sorting: every sorted block is a mixture of all blocks; done as SGEMMs in block
 * coordinates, NB x NB times NB x Bs*Dh; at N = 16K, Bs = 64 it is about twice the attention's
 * flops). Memory: cache B*H*N floats (row log-sum-exp; lra_sum adds the local half's output, N*Dh
 * more); scratch per thread O(Np*Dh + NB^2) (omp_get_max_threads() slices, so scratch_bytes must
 * be given at least that many threads) and, for the weight gradient, B*H*NB*(NB + Dh) floats. The
 * mixed blocks are recomputed in the backward instead of cached. OpenMP over (b, h) (the SGEMMs
 * then run single-threaded inside the parallel region); weight gradients are reduced afterwards
 * over b in a fixed order, so results do not depend on the thread count.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include <cblas.h>

#include "../lra/common.h"
#include "attention.h"
#include "fastmath.h"

typedef struct {
    int block_size;
    int sinkhorn_iters;
    float temperature;
    int lra_sum;
    int lra_strided;
} sinkhorn_params;

static const param_def sinkhorn_schema[] = {
    P_INT(sinkhorn_params, block_size, "64", 1, 1 << 16,
          "block size Bs: queries of a block attend to their block and to one soft-sorted block (LRA: 50; LRA's "
          "CIFAR/Pathfinder configs: 64)"),
    P_INT(sinkhorn_params, sinkhorn_iters, "7", 0, 100,
          "Sinkhorn balancing iterations (row then column normalisation, in log space; lucidrains 7); 0 = LRA's "
          "sort_activation='softmax' (one row softmax)"),
    P_FLOAT(sinkhorn_params, temperature, "0.75", 1e-3, 1e3, "temperature tau dividing the sorting logits (lucidrains 0.75)"),
    P_BOOL(sinkhorn_params, lra_sum, "false",
           "LRA's combination: local-block and sorted-block attention as two softmaxes whose outputs are summed "
           "(default: one softmax over both, as lucidrains)"),
    P_BOOL(sinkhorn_params, lra_strided, "false",
           "LRA's strided blocks: block b holds positions b, b+NB, b+2NB, ... (its reshape) instead of contiguous runs"),
};

#define SK_ALIGN 64

/* ---- derived sizes ---- */

static int sk_nb(const sinkhorn_params *p, const attn_shape *s) { return (s->N + p->block_size - 1) / p->block_size; }

static int sk_nbmax(const sinkhorn_params *p, const attn_shape *s) {
    int len = LRA_MAX(s->max_len, s->N);
    return (len + p->block_size - 1) / p->block_size;
}

static int sk_nmat(const sinkhorn_params *p) { return p->sinkhorn_iters ? 2 * p->sinkhorn_iters : 1; }

/* ---- per-thread scratch ---- */

typedef struct {
    float *Km, *Vm;   /* (Np,Dh) masked k, v in block-major order */
    float *m;         /* (Np) slot mask */
    int *live;        /* (NB) live block indices */
    int *lslot;       /* (NB) index into live[] of a block, -1 if not live */
    float *cnt;       /* (NB) real slots per block */
    float *sum;       /* (NB,Dh) block summaries */
    double *R0;       /* (NL,NL) sorting logits, then P0 = exp(R0 - rowmax) */
    double *Y;        /* (2,NL,NL) Sinkhorn iterates, ping-pong; the last one is U (double: 2T
                         normalisations in float put ~1e-6 noise on U) */
    double *Yfin;     /* the buffer holding the last iterate */
    double *Ysum;     /* (nmat,NL) the row or column sums of each normalisation */
    double *G;        /* (NL,NL) gradient through the iterations */
    double *Gsum;     /* (NL) */
    float *U;         /* (NL,NL) */
    float *Uf, *dUf;  /* (NB,NB) U and its gradient in block coordinates (0 for dead blocks) */
    float *Ks, *Vs;   /* (Np,Dh) sorted blocks, by block index (0 for dead blocks) */
    float *ms;        /* (Np) sorted-slot masses */
    float *dKs, *dVs; /* (Np,Dh) */
    float *dKm, *dVm; /* (Np,Dh) */
    float *dU;        /* (NL,NL) */
    float *KT, *VT;   /* (Dh,2Bs) candidates transposed */
    float *S, *P, *dP, *keep; /* (2Bs) */
    double *dacc;     /* (Dh) */
} sk_tls;

static void *sk_bump(char **cur, size_t *used, size_t bytes) {
    size_t a = (*used + SK_ALIGN - 1) & ~(size_t)(SK_ALIGN - 1);
    *used = a + bytes;
    return *cur ? *cur + a : NULL;
}

static size_t sk_tls_layout(const sinkhorn_params *p, const attn_shape *s, char *base, sk_tls *t) {
    size_t u = 0;
    char *b = base;
    size_t NB = (size_t)LRA_MAX(sk_nb(p, s), 1), Bs = (size_t)p->block_size, Np = NB * Bs, Dh = (size_t)s->Dh;
    size_t F = sizeof(float);
    sk_tls x;
    x.Km = sk_bump(&b, &u, Np * Dh * F);
    x.Vm = sk_bump(&b, &u, Np * Dh * F);
    x.m = sk_bump(&b, &u, Np * F);
    x.live = sk_bump(&b, &u, NB * sizeof(int));
    x.lslot = sk_bump(&b, &u, NB * sizeof(int));
    x.cnt = sk_bump(&b, &u, NB * F);
    x.sum = sk_bump(&b, &u, NB * Dh * F);
    x.R0 = sk_bump(&b, &u, NB * NB * sizeof(double));
    x.Y = sk_bump(&b, &u, 2 * NB * NB * sizeof(double));
    x.Ysum = sk_bump(&b, &u, (size_t)sk_nmat(p) * NB * sizeof(double));
    x.G = sk_bump(&b, &u, NB * NB * sizeof(double));
    x.Gsum = sk_bump(&b, &u, NB * sizeof(double));
    x.U = sk_bump(&b, &u, NB * NB * F);
    x.Uf = sk_bump(&b, &u, NB * NB * F);
    x.dUf = sk_bump(&b, &u, NB * NB * F);
    x.Ks = sk_bump(&b, &u, Np * Dh * F);
    x.Vs = sk_bump(&b, &u, Np * Dh * F);
    x.ms = sk_bump(&b, &u, Np * F);
    x.dKs = sk_bump(&b, &u, Np * Dh * F);
    x.dVs = sk_bump(&b, &u, Np * Dh * F);
    x.dKm = sk_bump(&b, &u, Np * Dh * F);
    x.dVm = sk_bump(&b, &u, Np * Dh * F);
    x.dU = sk_bump(&b, &u, NB * NB * F);
    x.KT = sk_bump(&b, &u, 2 * Bs * Dh * F);
    x.VT = sk_bump(&b, &u, 2 * Bs * Dh * F);
    x.S = sk_bump(&b, &u, 2 * Bs * F);
    x.P = sk_bump(&b, &u, 2 * Bs * F);
    x.dP = sk_bump(&b, &u, 2 * Bs * F);
    x.keep = sk_bump(&b, &u, 2 * Bs * F);
    x.dacc = sk_bump(&b, &u, Dh * sizeof(double));
    if (t) *t = x;
    return (u + SK_ALIGN - 1) & ~(size_t)(SK_ALIGN - 1);
}

/* Shared (not per-thread) scratch after the thread slices: per (b,h) dR0 (NB,NB) and summaries
 * (NB,Dh) in full block coordinates, for the ordered weight-gradient reduction. */
static size_t sk_shared_floats(const sinkhorn_params *p, const attn_shape *s) {
    size_t NB = (size_t)sk_nb(p, s);
    return (size_t)s->B * s->H * NB * (NB + (size_t)s->Dh);
}

/* ---- ops: sizes ---- */

static int sinkhorn_validate(const void *params, const attn_shape *s, char *err, size_t errlen) {
    const sinkhorn_params *p = params;
    if (s->causal)
        return lra_errorf(err, errlen, "causal: sinkhorn attention has no causal variant here (its sorting mixes "
                          "blocks from the whole sequence); use a causal mechanism or causal: false");
    if (s->Nk != s->N)
        return lra_errorf(err, errlen, "sinkhorn: segment memory (Nk %d != N %d) is not supported", s->Nk, s->N);
    if (s->max_len > 0 && s->max_len < s->N)
        return lra_errorf(err, errlen, "max_len %d < sequence length %d: the sort net is sized for max_len", s->max_len,
                          s->N);
    if (p->temperature <= 0) return lra_errorf(err, errlen, "temperature: must be > 0, got %g", p->temperature);
    return 0;
}

static size_t sinkhorn_n_weights(const void *params, const attn_shape *s) {
    const sinkhorn_params *p = params;
    return (size_t)s->H * sk_nbmax(p, s) * ((size_t)s->Dh + 1);
}

static size_t sinkhorn_cache_bytes(const void *params, const attn_shape *s) {
    const sinkhorn_params *p = params;
    size_t bhn = (size_t)s->B * s->H * s->N;
    return bhn * sizeof(float) * (p->lra_sum ? 2 + (size_t)s->Dh : 1);
}

static size_t sinkhorn_scratch_bytes(const void *params, const attn_shape *s, int n_threads) {
    size_t shared = sk_shared_floats(params, s) * sizeof(float);
    shared = (shared + SK_ALIGN - 1) & ~(size_t)(SK_ALIGN - 1);
    return shared + (size_t)LRA_MAX(n_threads, 1) * sk_tls_layout(params, s, NULL, NULL);
}

static double sinkhorn_flops(const void *params, const attn_shape *s) {
    const sinkhorn_params *p = params;
    double N = s->N, Dh = s->Dh, NB = sk_nb(p, s), Np = NB * p->block_size;
    double sort = N * Dh + 2.0 * NB * NB * Dh + 4.0 * sk_nmat(p) * NB * NB;
    double mix = 2.0 * NB * Np * (2.0 * Dh + 1.0);
    double att = N * 2.0 * p->block_size * 4.0 * Dh;
    return (double)s->B * s->H * (sort + mix + att);
}

/* W_h rows ~ N(0, 1/Dh) (lecun normal, flax Dense's default), c_h = 0. */
static void sinkhorn_init(attn_layer *L, rng_t *r) {
    const sinkhorn_params *p = L->params;
    const attn_shape *s = &L->shape;
    size_t nw = (size_t)s->H * sk_nbmax(p, s) * s->Dh, nb = (size_t)s->H * sk_nbmax(p, s);
    float sd = 1.0f / sqrtf((float)s->Dh);
    for (size_t i = 0; i < nw; i++) L->w[i] = (float)rng_normal(r) * sd;
    for (size_t i = 0; i < nb; i++) L->w[nw + i] = 0.0f;
}

/* ---- shared pieces ---- */

typedef struct {
    const sinkhorn_params *p;
    const attn_shape *s;
    const attn_layer *L;
    int NB, NBmax, Bs, Np;
    float scale, itau;
    int drop;
    uint64_t drop_stream;
} sk_ctx;

static sk_ctx sk_make_ctx(const attn_layer *L) {
    sk_ctx c;
    c.p = L->params;
    c.s = &L->shape;
    c.L = L;
    c.NB = sk_nb(c.p, c.s);
    c.NBmax = sk_nbmax(c.p, c.s);
    c.Bs = c.p->block_size;
    c.Np = c.NB * c.Bs;
    c.scale = 1.0f / sqrtf((float)c.s->Dh);
    c.itau = 1.0f / c.p->temperature;
    c.drop = L->training && L->dropout > 0.0f;
    c.drop_stream = rng_substream(RNG_DROPOUT, 2000 + (uint64_t)c.s->layer, (uint64_t)L->step);
    return c;
}

/* Sequence position of (block, slot), or -1 for internal padding. */
static inline int sk_pos(const sk_ctx *c, int blk, int t) {
    int p = c->p->lra_strided ? t * c->NB + blk : blk * c->Bs + t;
    return p < c->s->N ? p : -1;
}

static inline float sk_keep(const sk_ctx *c, int b, int h, int i, int cand) {
    uint64_t ctr = (((uint64_t)b * c->s->H + h) * c->s->N + (uint64_t)i) * (uint64_t)(2 * c->Bs) + (uint64_t)cand;
    return rng_uniform_at(c->L->seed, c->drop_stream, ctr) < c->L->dropout ? 0.0f : 1.0f / (1.0f - c->L->dropout);
}

/* Row (dir 0) or column (dir 1) normalisation of X (n,n) into Y, in double: Y = X / sum, with
 * the n sums kept in sum[] for the backward. A zero sum (everything underflowed) gives zeros.
 * Columns are summed with row-major sweeps (contiguous, vectorisable). */
static void sk_normalise(const double *X, double *Y, double *sum, int n, int dir) {
    if (!dir) {
        for (int a = 0; a < n; a++) {
            const double *x = X + (size_t)a * n;
            double z = 0;
            for (int c = 0; c < n; c++) z += x[c];
            double inv = z > 0 ? 1.0 / z : 0.0;
            for (int c = 0; c < n; c++) Y[(size_t)a * n + c] = x[c] * inv;
            sum[a] = z;
        }
        return;
    }
    for (int c = 0; c < n; c++) sum[c] = 0;
    for (int a = 0; a < n; a++)
        for (int c = 0; c < n; c++) sum[c] += X[(size_t)a * n + c];
    for (int a = 0; a < n; a++)
        for (int c = 0; c < n; c++) Y[(size_t)a * n + c] = sum[c] > 0 ? X[(size_t)a * n + c] / sum[c] : 0.0;
}

/* Sinkhorn balancing in the probability domain: P0 = exp(R0 - rowmax) (kept in R0), then
 * Y_1..Y_nm alternate row and column normalisations (a row softmax when sinkhorn_iters = 0);
 * U = Y_nm. The same iterates as the log-domain updates of the spec (exp(Y_log) = Y), with one
 * exp per entry instead of one per entry and step. Shared by forward and backward so both see
 * identical U. */
static void sk_sinkhorn(const sk_ctx *c, int n, sk_tls *t) {
    int T = c->p->sinkhorn_iters, nm = sk_nmat(c->p);
    size_t nn = (size_t)n * n;
    for (int a = 0; a < n; a++) {
        double *r = t->R0 + (size_t)a * n, mx = -INFINITY;
        for (int x = 0; x < n; x++) mx = r[x] > mx ? r[x] : mx;
        for (int x = 0; x < n; x++) r[x] = exp(r[x] - mx);
    }
    const double *X = t->R0;
    for (int k = 0; k < nm; k++) {
        double *Y = t->Y + (size_t)(k & 1) * nn;
        sk_normalise(X, Y, t->Ysum + (size_t)k * n, n, T ? (k & 1) : 0);
        X = Y;
    }
    t->Yfin = t->Y + (size_t)((nm - 1) & 1) * nn;
    for (size_t k = 0; k < nn; k++) t->U[k] = (float)X[k];
}

/* Steps 1-4 of the header for (b, h): masked blocks, live list, summaries, logits, Sinkhorn,
 * sorted blocks. Returns NL. */
static int sk_prepare(const sk_ctx *c, int b, int h, const float *k, const float *v, const uint8_t *mask,
                      const float *w, sk_tls *t) {
    const attn_shape *s = c->s;
    int N = s->N, Dh = s->Dh, Bs = c->Bs, NB = c->NB;
    size_t bh = (size_t)b * s->H + h;
    const float *kb = k + bh * N * Dh, *vb = v + bh * N * Dh;
    int nl = 0;
    for (int i = 0; i < NB; i++) {
        double cn = 0;
        for (int e = 0; e < Dh; e++) t->dacc[e] = 0;
        for (int u = 0; u < Bs; u++) {
            int p = sk_pos(c, i, u);
            size_t r = (size_t)i * Bs + u;
            int real = p >= 0 && (!mask || mask[(size_t)b * N + p]);
            t->m[r] = real ? 1.0f : 0.0f;
            float *kr = t->Km + r * Dh, *vr = t->Vm + r * Dh;
            if (real) {
                memcpy(kr, kb + (size_t)p * Dh, sizeof(float) * Dh);
                memcpy(vr, vb + (size_t)p * Dh, sizeof(float) * Dh);
                for (int e = 0; e < Dh; e++) t->dacc[e] += kr[e];
                cn += 1;
            } else {
                memset(kr, 0, sizeof(float) * Dh);
                memset(vr, 0, sizeof(float) * Dh);
            }
        }
        t->cnt[i] = (float)cn;
        t->lslot[i] = -1;
        if (cn > 0) {
            t->lslot[i] = nl;
            t->live[nl++] = i;
            for (int e = 0; e < Dh; e++) t->sum[(size_t)i * Dh + e] = (float)(t->dacc[e] / cn);
        }
    }
    if (!nl) return 0;
    /* Sorting logits over live blocks: R0[a][c] = (s_a . W[c] + c[c]) / tau. */
    const float *W = w + (size_t)h * c->NBmax * Dh, *bias = w + (size_t)s->H * c->NBmax * Dh + (size_t)h * c->NBmax;
    for (int a = 0; a < nl; a++) {
        const float *sa = t->sum + (size_t)t->live[a] * Dh;
        for (int cc = 0; cc < nl; cc++) {
            const float *wc = W + (size_t)t->live[cc] * Dh;
            double acc = bias[t->live[cc]];
            for (int e = 0; e < Dh; e++) acc += (double)sa[e] * wc[e];
            t->R0[(size_t)a * nl + cc] = acc * c->itau;
        }
    }
    sk_sinkhorn(c, nl, t);
    /* Sorted blocks: Ks = Uf Kbar, Vs = Uf Vbar, ms = Uf m, with Uf = U in block coordinates
     * (rows and columns of dead blocks 0; their Kbar, Vbar, m are 0 anyway). Three SGEMMs
     * (NB x NB times NB x Bs*Dh): this mixing is the O(N^2 Dh / Bs) part. */
    int blk = Bs * Dh;
    memset(t->Uf, 0, sizeof(float) * (size_t)NB * NB);
    for (int a = 0; a < nl; a++)
        for (int cc = 0; cc < nl; cc++) t->Uf[(size_t)t->live[a] * NB + t->live[cc]] = t->U[(size_t)a * nl + cc];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, NB, blk, NB, 1.0f, t->Uf, NB, t->Km, blk, 0.0f, t->Ks, blk);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, NB, blk, NB, 1.0f, t->Uf, NB, t->Vm, blk, 0.0f, t->Vs, blk);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, NB, Bs, NB, 1.0f, t->Uf, NB, t->m, Bs, 0.0f, t->ms, Bs);
    return nl;
}

/* Candidates of live block i: own slots [0,Bs), sorted slots [Bs,2Bs), transposed into KT/VT
 * (Dh, 2Bs) so per-query loops run over candidates. */
static void sk_gather(const sk_ctx *c, int i, sk_tls *t, int want_vt) {
    int Bs = c->Bs, Dh = c->s->Dh, ld = 2 * Bs;
    const float *own = t->Km + (size_t)i * Bs * Dh, *srt = t->Ks + (size_t)i * Bs * Dh;
    const float *vown = t->Vm + (size_t)i * Bs * Dh, *vsrt = t->Vs + (size_t)i * Bs * Dh;
    for (int u = 0; u < Bs; u++)
        for (int e = 0; e < Dh; e++) {
            t->KT[(size_t)e * ld + u] = own[(size_t)u * Dh + e];
            t->KT[(size_t)e * ld + Bs + u] = srt[(size_t)u * Dh + e];
            if (want_vt) {
                t->VT[(size_t)e * ld + u] = vown[(size_t)u * Dh + e];
                t->VT[(size_t)e * ld + Bs + u] = vsrt[(size_t)u * Dh + e];
            }
        }
}

/* Logits of query qi against the 2Bs candidates of live block i; -inf where masked. */
static void sk_logits(const sk_ctx *c, int i, const float *qi, sk_tls *t) {
    int Bs = c->Bs, Dh = c->s->Dh, n = 2 * Bs;
    float *S = t->S;
    for (int k = 0; k < n; k++) S[k] = 0.0f;
    for (int e = 0; e < Dh; e++) {
        const float qe = qi[e], *row = t->KT + (size_t)e * n;
        for (int k = 0; k < n; k++) S[k] = LRA_FMAF(qe, row[k], S[k]);
    }
    const float *mo = t->m + (size_t)i * Bs, *mso = t->ms + (size_t)i * Bs;
    for (int k = 0; k < Bs; k++) S[k] = mo[k] > 0 ? S[k] * c->scale : -INFINITY;
    for (int k = 0; k < Bs; k++) S[Bs + k] = mso[k] > 0 ? S[Bs + k] * c->scale : -INFINITY;
}

/* Softmax of S[lo,hi) into P (unnormalised exp(S - m)); returns lse (+inf if all masked) and
 * 1/l in *inv (0 if all masked). */
static float sk_softmax_part(const float *S, float *P, int lo, int hi, float *inv) {
    float m = -INFINITY;
    for (int k = lo; k < hi; k++) m = S[k] > m ? S[k] : m;
    if (m == -INFINITY) {
        for (int k = lo; k < hi; k++) P[k] = 0.0f;
        *inv = 0.0f;
        return INFINITY;
    }
    double l = 0;
    for (int k = lo; k < hi; k++) P[k] = lra_expf(S[k] - m);
    for (int k = lo; k < hi; k++) l += P[k];
    *inv = (float)(1.0 / l);
    return m + (float)log(l);
}

/* out[e] = sum_k w[k] X[k*ldx + e] for e < Dh, k < n (rows summed in order k = 0..n-1). The
 * accumulator is a fixed-width local array, so GCC keeps it in vector registers; accumulating
 * through a pointer instead stores and reloads it for every row (a store-forwarding chain that
 * made this loop ~10x slower). */
static void sk_wsum_rows(const float *w, const float *X, size_t ldx, int n, int Dh, float *out) {
    int e0 = 0;
    for (; e0 + 16 <= Dh; e0 += 16) {
        float acc[16];
        for (int e = 0; e < 16; e++) acc[e] = 0.0f;
        for (int k = 0; k < n; k++) {
            const float wk = w[k], *x = X + (size_t)k * ldx + e0;
            for (int e = 0; e < 16; e++) acc[e] = LRA_FMAF(wk, x[e], acc[e]);
        }
        for (int e = 0; e < 16; e++) out[e0 + e] = acc[e];
    }
    for (int e = e0; e < Dh; e++) {
        float a = 0.0f;
        for (int k = 0; k < n; k++) a = LRA_FMAF(w[k], X[(size_t)k * ldx + e], a);
        out[e] = a;
    }
}

typedef struct {
    float *L;    /* (B,H,N) log-sum-exp (concat) or of the local half (lra_sum) */
    float *L2;   /* (B,H,N) lra_sum: of the sorted half */
    float *oloc; /* (B,H,N,Dh) lra_sum: output of the local half */
} sk_cache;

static sk_cache sk_cache_view(void *base, const sinkhorn_params *p, const attn_shape *s) {
    sk_cache c;
    size_t bhn = (size_t)s->B * s->H * s->N;
    c.L = base;
    c.L2 = p->lra_sum ? c.L + bhn : NULL;
    c.oloc = p->lra_sum ? c.L + 2 * bhn : NULL;
    return c;
}

static void sk_forward_bh(const sk_ctx *c, int b, int h, const float *q, const float *k, const float *v,
                          const uint8_t *mask, const float *w, float *out, sk_cache cc, sk_tls *t) {
    const attn_shape *s = c->s;
    int N = s->N, Dh = s->Dh, Bs = c->Bs, lsum = c->p->lra_sum;
    size_t bh = (size_t)b * s->H + h;
    const float *qb = q + bh * N * Dh;
    float *ob = out + bh * N * Dh, *Lb = cc.L + bh * N;
    memset(ob, 0, sizeof(float) * (size_t)N * Dh);
    for (int i = 0; i < N; i++) Lb[i] = INFINITY;
    if (lsum) {
        for (int i = 0; i < N; i++) cc.L2[bh * N + i] = INFINITY;
        memset(cc.oloc + bh * N * Dh, 0, sizeof(float) * (size_t)N * Dh);
    }
    int nl = sk_prepare(c, b, h, k, v, mask, w, t);
    for (int a = 0; a < nl; a++) {
        int i = t->live[a];
        sk_gather(c, i, t, 0);
        const float *vown = t->Vm + (size_t)i * Bs * Dh, *vsrt = t->Vs + (size_t)i * Bs * Dh;
        for (int u = 0; u < Bs; u++) {
            int p = sk_pos(c, i, u);
            if (p < 0) continue;
            sk_logits(c, i, qb + (size_t)p * Dh, t);
            for (int x = 0; x < 2 * Bs; x++) t->keep[x] = c->drop ? sk_keep(c, b, h, p, x) : 1.0f;
            float inv1, inv2 = 0.0f, l1, l2 = INFINITY;
            if (lsum) {
                l1 = sk_softmax_part(t->S, t->P, 0, Bs, &inv1);
                l2 = sk_softmax_part(t->S, t->P, Bs, 2 * Bs, &inv2);
            } else {
                l1 = sk_softmax_part(t->S, t->P, 0, 2 * Bs, &inv1);
                inv2 = inv1;
            }
            float *o = ob + (size_t)p * Dh;
            for (int x = 0; x < Bs; x++) t->P[x] *= t->keep[x] * inv1;
            for (int x = Bs; x < 2 * Bs; x++) t->P[x] *= t->keep[x] * inv2;
            sk_wsum_rows(t->P, vown, (size_t)Dh, Bs, Dh, o);
            if (lsum) memcpy(cc.oloc + (bh * N + p) * Dh, o, sizeof(float) * Dh);
            sk_wsum_rows(t->P + Bs, vsrt, (size_t)Dh, Bs, Dh, t->dP);
            for (int e = 0; e < Dh; e++) o[e] += t->dP[e];
            Lb[p] = l1;
            if (lsum) cc.L2[bh * N + p] = l2;
        }
    }
}

static void sk_backward_bh(const sk_ctx *c, int b, int h, const float *q, const float *k, const float *v,
                           const uint8_t *mask, const float *w, const float *out, const float *dout, float *dq, float *dk,
                           float *dv, sk_cache cc, sk_tls *t, float *dR0f, float *sumf) {
    const attn_shape *s = c->s;
    int N = s->N, Dh = s->Dh, Bs = c->Bs, NB = c->NB, lsum = c->p->lra_sum, ld = 2 * Bs;
    size_t bh = (size_t)b * s->H + h, blk = (size_t)Bs * Dh;
    const float *qb = q + bh * N * Dh, *ob = out + bh * N * Dh, *dob = dout + bh * N * Dh;
    float *dqb = dq + bh * N * Dh, *dkb = dk + bh * N * Dh, *dvb = dv + bh * N * Dh;
    memset(dqb, 0, sizeof(float) * (size_t)N * Dh);
    memset(dkb, 0, sizeof(float) * (size_t)N * Dh);
    memset(dvb, 0, sizeof(float) * (size_t)N * Dh);
    float *dRf = dR0f + bh * NB * NB, *sf = sumf + bh * NB * Dh;
    memset(dRf, 0, sizeof(float) * (size_t)NB * NB);
    memset(sf, 0, sizeof(float) * (size_t)NB * Dh);
    int nl = sk_prepare(c, b, h, k, v, mask, w, t);
    if (!nl) return;
    memset(t->dKs, 0, sizeof(float) * (size_t)NB * blk);
    memset(t->dVs, 0, sizeof(float) * (size_t)NB * blk);
    memset(t->dKm, 0, sizeof(float) * (size_t)NB * blk);
    memset(t->dVm, 0, sizeof(float) * (size_t)NB * blk);

    /* 1. Attention backward: P = exp(S - L), dS = P (keep dP - D), per candidate. */
    for (int a = 0; a < nl; a++) {
        int i = t->live[a];
        sk_gather(c, i, t, 1);
        const float *Kown = t->Km + (size_t)i * blk, *Ksrt = t->Ks + (size_t)i * blk;
        float *dKown = t->dKm + (size_t)i * blk, *dKsrt = t->dKs + (size_t)i * blk;
        float *dVown = t->dVm + (size_t)i * blk, *dVsrt = t->dVs + (size_t)i * blk;
        for (int u = 0; u < Bs; u++) {
            int p = sk_pos(c, i, u);
            if (p < 0) continue;
            const float *qi = qb + (size_t)p * Dh, *doi = dob + (size_t)p * Dh, *oi = ob + (size_t)p * Dh;
            float *dqi = dqb + (size_t)p * Dh;
            sk_logits(c, i, qi, t);
            for (int x = 0; x < ld; x++) t->keep[x] = c->drop ? sk_keep(c, b, h, p, x) : 1.0f;
            float L1 = cc.L[bh * N + p], L2 = lsum ? cc.L2[bh * N + p] : L1;
            double d1 = 0, d2 = 0;
            if (lsum) {
                const float *ol = cc.oloc + (bh * N + p) * Dh;
                for (int e = 0; e < Dh; e++) d1 += (double)doi[e] * ol[e], d2 += (double)doi[e] * (oi[e] - ol[e]);
            } else {
                for (int e = 0; e < Dh; e++) d1 += (double)doi[e] * oi[e];
                d2 = d1;
            }
            for (int x = 0; x < Bs; x++) t->P[x] = lra_expf(t->S[x] - L1);
            for (int x = Bs; x < ld; x++) t->P[x] = lra_expf(t->S[x] - L2);
            for (int x = 0; x < ld; x++) t->dP[x] = 0.0f;
            for (int e = 0; e < Dh; e++) {
                const float de = doi[e], *row = t->VT + (size_t)e * ld;
                for (int x = 0; x < ld; x++) t->dP[x] = LRA_FMAF(de, row[x], t->dP[x]);
            }
            float *dS = t->S; /* the logits are no longer needed */
            for (int x = 0; x < ld; x++) {
                float px = t->P[x];
                dS[x] = 0.0f;
                if (px == 0.0f) continue;
                int own = x < Bs, xs = own ? x : x - Bs;
                float pk = px * t->keep[x];
                float ds = px * (t->keep[x] * t->dP[x] - (float)(own ? d1 : d2)) * c->scale;
                float *dkr = (own ? dKown : dKsrt) + (size_t)xs * Dh, *dvr = (own ? dVown : dVsrt) + (size_t)xs * Dh;
                for (int e = 0; e < Dh; e++) dkr[e] = LRA_FMAF(ds, qi[e], dkr[e]);
                for (int e = 0; e < Dh; e++) dvr[e] = LRA_FMAF(pk, doi[e], dvr[e]);
                dS[x] = ds;
            }
            /* dq = s sum dS k over both halves (dS already carries s); reuse dP as output. */
            sk_wsum_rows(dS, Kown, (size_t)Dh, Bs, Dh, t->dP);
            for (int e = 0; e < Dh; e++) dqi[e] = t->dP[e];
            sk_wsum_rows(dS + Bs, Ksrt, (size_t)Dh, Bs, Dh, t->dP);
            for (int e = 0; e < Dh; e++) dqi[e] += t->dP[e];
        }
    }

    /* 2. Mixing backward (SGEMMs in block coordinates): dUf = dKs Kbar^T + dVs Vbar^T;
     * dKbar += Uf^T dKs, dVbar += Uf^T dVs. */
    int ib = (int)blk;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, NB, NB, ib, 1.0f, t->dKs, ib, t->Km, ib, 0.0f, t->dUf, NB);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, NB, NB, ib, 1.0f, t->dVs, ib, t->Vm, ib, 1.0f, t->dUf, NB);
    for (int a = 0; a < nl; a++)
        for (int x = 0; x < nl; x++) t->dU[(size_t)a * nl + x] = t->dUf[(size_t)t->live[a] * NB + t->live[x]];
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, NB, ib, NB, 1.0f, t->Uf, NB, t->dKs, ib, 1.0f, t->dKm, ib);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, NB, ib, NB, 1.0f, t->Uf, NB, t->dVs, ib, 1.0f, t->dVm, ib);

    /* 3. Sinkhorn backward: G = dU; a normalisation Y = X / sum(X) (rows or columns) has
     * dX = (dY - sum(dY * Y)) / sum(X) along the same direction; finally dR0 = P0 * dP0 (the
     * row-max shift cancels in the first row normalisation). The iterates are not stored: each
     * step's input is recovered from its output as X = Y * sum (exact up to rounding), so the
     * scratch holds two NL x NL buffers instead of 2T. */
    size_t nn = (size_t)nl * nl;
    double *G = t->G, *dot = t->Gsum;
    for (size_t x = 0; x < nn; x++) G[x] = t->dU[x];
    int T = c->p->sinkhorn_iters;
    double *Ycur = t->Yfin, *Yoth = Ycur == t->Y ? t->Y + nn : t->Y;
    for (int kk = sk_nmat(c->p) - 1; kk >= 0; kk--) {
        const double *Y = Ycur, *sum = t->Ysum + (size_t)kk * nl;
        int dir = T ? (kk & 1) : 0;
        if (kk > 0) { /* input of step kk, needed by step kk - 1 */
            for (int a = 0; a < nl; a++)
                for (int x = 0; x < nl; x++)
                    Yoth[(size_t)a * nl + x] = Y[(size_t)a * nl + x] * (dir ? sum[x] : sum[a]);
        }
        if (!dir) {
            for (int a = 0; a < nl; a++) {
                double d = 0, *g = G + (size_t)a * nl;
                const double *y = Y + (size_t)a * nl;
                for (int x = 0; x < nl; x++) d += g[x] * y[x];
                double inv = sum[a] > 0 ? 1.0 / sum[a] : 0.0;
                for (int x = 0; x < nl; x++) g[x] = (g[x] - d) * inv;
            }
        } else {
            for (int x = 0; x < nl; x++) dot[x] = 0;
            for (int a = 0; a < nl; a++)
                for (int x = 0; x < nl; x++) dot[x] += G[(size_t)a * nl + x] * Y[(size_t)a * nl + x];
            for (int a = 0; a < nl; a++)
                for (int x = 0; x < nl; x++)
                    G[(size_t)a * nl + x] = sum[x] > 0 ? (G[(size_t)a * nl + x] - dot[x]) / sum[x] : 0.0;
        }
        double *tmp = Ycur;
        Ycur = Yoth;
        Yoth = tmp;
    }
    for (size_t x = 0; x < nn; x++) G[x] *= t->R0[x];

    /* 4. SortNet and pooling: ds_a = sum_c dR0[a][c] W[c] / tau; s_a = sum_u m K / cnt. */
    const float *W = w + (size_t)h * c->NBmax * Dh;
    for (int a = 0; a < nl; a++) {
        int i = t->live[a];
        for (int e = 0; e < Dh; e++) t->dacc[e] = 0;
        for (int x = 0; x < nl; x++) {
            double g = G[(size_t)a * nl + x];
            dRf[(size_t)i * NB + t->live[x]] = (float)g;
            const float *wc = W + (size_t)t->live[x] * Dh;
            for (int e = 0; e < Dh; e++) t->dacc[e] += g * wc[e];
        }
        memcpy(sf + (size_t)i * Dh, t->sum + (size_t)i * Dh, sizeof(float) * Dh);
        float sc = c->itau / t->cnt[i];
        for (int u = 0; u < Bs; u++) {
            if (t->m[(size_t)i * Bs + u] == 0.0f) continue;
            float *dkr = t->dKm + ((size_t)i * Bs + u) * Dh;
            for (int e = 0; e < Dh; e++) dkr[e] += (float)t->dacc[e] * sc;
        }
    }

    /* 5. Scatter to positions; masked slots have zero gradient (their k, v are never read). */
    for (int i = 0; i < NB; i++)
        for (int u = 0; u < Bs; u++) {
            size_t r = (size_t)i * Bs + u;
            int p = sk_pos(c, i, u);
            if (p < 0 || t->m[r] == 0.0f) continue;
            memcpy(dkb + (size_t)p * Dh, t->dKm + r * Dh, sizeof(float) * Dh);
            memcpy(dvb + (size_t)p * Dh, t->dVm + r * Dh, sizeof(float) * Dh);
        }
}

/* Scratch layout: shared dR0/summary area first (its size does not depend on the thread count),
 * then one slice per thread. */
static sk_tls sk_thread_tls(const attn_layer *L, size_t per) {
    int tid = 0;
#ifdef _OPENMP
    tid = omp_get_thread_num();
#endif
    size_t shared = sk_shared_floats(L->params, &L->shape) * sizeof(float);
    shared = (shared + SK_ALIGN - 1) & ~(size_t)(SK_ALIGN - 1);
    sk_tls t;
    sk_tls_layout(L->params, &L->shape, (char *)L->scratch + shared + (size_t)tid * per, &t);
    return t;
}

static int sk_parallel(const sk_ctx *c) {
    return (double)c->s->B * c->s->H * c->s->N * 2.0 * c->Bs * c->s->Dh >= 2e5;
}

/* Fast forward: q, k, v, out (B,H,N,Dh); key_mask (B,N) or NULL. Rows of fully padded blocks get 0. */
static void sinkhorn_forward(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *mask,
                             float *out) {
    sk_ctx c = sk_make_ctx(L);
    sk_cache cc = sk_cache_view(L->cache, c.p, c.s);
    size_t per = sk_tls_layout(c.p, c.s, NULL, NULL);
    int BH = c.s->B * c.s->H;
#pragma omp parallel for schedule(dynamic, 1) if (sk_parallel(&c))
    for (int bh = 0; bh < BH; bh++) {
        sk_tls t = sk_thread_tls(L, per);
        sk_forward_bh(&c, bh / c.s->H, bh % c.s->H, q, k, v, mask, L->w, out, cc, &t);
    }
}

/* Backward: writes dq, dk, dv (B,H,N,Dh); adds the SortNet gradients into L->dw. */
static void sinkhorn_backward(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *mask,
                              const float *out, const float *dout, float *dq, float *dk, float *dv) {
    sk_ctx c = sk_make_ctx(L);
    const attn_shape *s = c.s;
    sk_cache cc = sk_cache_view(L->cache, c.p, s);
    size_t per = sk_tls_layout(c.p, s, NULL, NULL);
    int BH = s->B * s->H, NB = c.NB, Dh = s->Dh;
    float *dR0f = L->scratch, *sumf = dR0f + (size_t)BH * NB * NB;
#pragma omp parallel for schedule(dynamic, 1) if (sk_parallel(&c))
    for (int bh = 0; bh < BH; bh++) {
        sk_tls t = sk_thread_tls(L, per);
        sk_backward_bh(&c, bh / s->H, bh % s->H, q, k, v, mask, L->w, out, dout, dq, dk, dv, cc, &t, dR0f, sumf);
    }
    /* dW[h][j] += sum_b sum_i dR0[b,h][i][j] s[b,h][i] / tau; dc[h][j] += sum dR0 / tau. Each
     * (h, j) is owned by one iteration and summed over b, i in order. */
    float *dW = L->dw, *dc = L->dw + (size_t)s->H * c.NBmax * Dh;
#pragma omp parallel for schedule(static) if (sk_parallel(&c))
    for (int hj = 0; hj < s->H * NB; hj++) {
        int h = hj / NB, j = hj % NB;
        sk_tls t = sk_thread_tls(L, per);
        double accb = 0;
        for (int e = 0; e < Dh; e++) t.dacc[e] = 0;
        for (int b = 0; b < s->B; b++) {
            size_t bh = (size_t)b * s->H + h;
            for (int i = 0; i < NB; i++) {
                float g = dR0f[(bh * NB + i) * NB + j];
                if (g == 0.0f) continue;
                const float *si = sumf + (bh * NB + i) * Dh;
                for (int e = 0; e < Dh; e++) t.dacc[e] += (double)g * si[e];
                accb += g;
            }
        }
        float *dwj = dW + ((size_t)h * c.NBmax + j) * Dh;
        for (int e = 0; e < Dh; e++) dwj[e] += (float)(t.dacc[e] * c.itau);
        dc[(size_t)h * c.NBmax + j] += (float)(accb * c.itau);
    }
}

/* ---- reference: dense, double, explicit soft permutation matrix over blocks ---- */

static void sinkhorn_reference(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *mask,
                               float *out) {
    const sinkhorn_params *p = L->params;
    const attn_shape *s = &L->shape;
    int N = s->N, Dh = s->Dh, Bs = p->block_size, NB = sk_nb(p, s), NBmax = sk_nbmax(p, s), T = p->sinkhorn_iters;
    double scale = 1.0 / sqrt((double)Dh);
    int *bpos = xmalloc(sizeof(int) * (size_t)NB * Bs); /* position of (block, slot), -1 padding */
    double *m = xmalloc(sizeof(double) * (size_t)NB * Bs), *sum = xmalloc(sizeof(double) * (size_t)NB * Dh);
    double *R = xmalloc(sizeof(double) * (size_t)NB * NB), *Ks = xmalloc(sizeof(double) * (size_t)NB * Bs * Dh);
    double *Vs = xmalloc(sizeof(double) * (size_t)NB * Bs * Dh), *ms = xmalloc(sizeof(double) * (size_t)NB * Bs);
    double *sc = xmalloc(sizeof(double) * 2 * Bs), *acc = xmalloc(sizeof(double) * Dh);
    int *live = xmalloc(sizeof(int) * (size_t)NB);
    for (int i = 0; i < NB; i++)
        for (int u = 0; u < Bs; u++) {
            int pp = p->lra_strided ? u * NB + i : i * Bs + u;
            bpos[i * Bs + u] = pp < N ? pp : -1;
        }
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < s->H; h++) {
            size_t bh = (size_t)b * s->H + h;
            const float *qb = q + bh * N * Dh, *kb = k + bh * N * Dh, *vb = v + bh * N * Dh;
            float *ob = out + bh * N * Dh;
            memset(ob, 0, sizeof(float) * (size_t)N * Dh);
            int nl = 0;
            for (int i = 0; i < NB; i++) {
                double cn = 0;
                for (int e = 0; e < Dh; e++) sum[i * Dh + e] = 0;
                for (int u = 0; u < Bs; u++) {
                    int pp = bpos[i * Bs + u];
                    m[i * Bs + u] = pp >= 0 && (!mask || mask[(size_t)b * N + pp]);
                    if (m[i * Bs + u] == 0) continue;
                    cn += 1;
                    for (int e = 0; e < Dh; e++) sum[i * Dh + e] += kb[(size_t)pp * Dh + e];
                }
                if (cn > 0) {
                    live[nl++] = i;
                    for (int e = 0; e < Dh; e++) sum[i * Dh + e] /= cn;
                }
            }
            const float *W = L->w + (size_t)h * NBmax * Dh, *bias = L->w + (size_t)s->H * NBmax * Dh + (size_t)h * NBmax;
            for (int a = 0; a < nl; a++)
                for (int c = 0; c < nl; c++) {
                    double x = bias[live[c]];
                    for (int e = 0; e < Dh; e++) x += sum[live[a] * Dh + e] * W[(size_t)live[c] * Dh + e];
                    R[a * nl + c] = x / p->temperature;
                }
            /* Sinkhorn in the probability domain (equivalent to the log-domain updates). */
            for (int x = 0; x < nl * nl; x++) R[x] = exp(R[x]);
            for (int it = 0; it < (T ? T : 1); it++) {
                for (int a = 0; a < nl; a++) {
                    double z = 0;
                    for (int c = 0; c < nl; c++) z += R[a * nl + c];
                    for (int c = 0; c < nl; c++) R[a * nl + c] /= z;
                }
                if (!T) break;
                for (int c = 0; c < nl; c++) {
                    double z = 0;
                    for (int a = 0; a < nl; a++) z += R[a * nl + c];
                    for (int a = 0; a < nl; a++) R[a * nl + c] /= z;
                }
            }
            for (int a = 0; a < nl; a++)
                for (int u = 0; u < Bs; u++) {
                    ms[a * Bs + u] = 0;
                    for (int e = 0; e < Dh; e++) Ks[((size_t)a * Bs + u) * Dh + e] = Vs[((size_t)a * Bs + u) * Dh + e] = 0;
                    for (int c = 0; c < nl; c++) {
                        int pp = bpos[live[c] * Bs + u];
                        if (pp < 0 || m[live[c] * Bs + u] == 0) continue;
                        double uac = R[a * nl + c];
                        ms[a * Bs + u] += uac;
                        for (int e = 0; e < Dh; e++) {
                            Ks[((size_t)a * Bs + u) * Dh + e] += uac * kb[(size_t)pp * Dh + e];
                            Vs[((size_t)a * Bs + u) * Dh + e] += uac * vb[(size_t)pp * Dh + e];
                        }
                    }
                }
            for (int a = 0; a < nl; a++) {
                int i = live[a];
                for (int u = 0; u < Bs; u++) {
                    int pi = bpos[i * Bs + u];
                    if (pi < 0) continue;
                    /* Candidate x < Bs: own slot x; x >= Bs: sorted slot x - Bs. NAN = masked. */
                    for (int x = 0; x < 2 * Bs; x++) {
                        int own = x < Bs, xs = own ? x : x - Bs;
                        double ok = own ? m[i * Bs + xs] : (ms[a * Bs + xs] > 0);
                        sc[x] = NAN;
                        if (!ok) continue;
                        double d = 0;
                        for (int e = 0; e < Dh; e++) {
                            double kk = own ? kb[(size_t)bpos[i * Bs + xs] * Dh + e] : Ks[((size_t)a * Bs + xs) * Dh + e];
                            d += (double)qb[(size_t)pi * Dh + e] * kk;
                        }
                        sc[x] = d * scale;
                    }
                    for (int e = 0; e < Dh; e++) acc[e] = 0;
                    for (int part = 0; part < (p->lra_sum ? 2 : 1); part++) {
                        int lo = p->lra_sum ? part * Bs : 0, hi = p->lra_sum ? lo + Bs : 2 * Bs;
                        double mx = -INFINITY, z = 0;
                        for (int x = lo; x < hi; x++)
                            if (!isnan(sc[x]) && sc[x] > mx) mx = sc[x];
                        if (mx == -INFINITY) continue;
                        for (int x = lo; x < hi; x++)
                            if (!isnan(sc[x])) z += exp(sc[x] - mx);
                        for (int x = lo; x < hi; x++) {
                            if (isnan(sc[x])) continue;
                            int own = x < Bs, xs = own ? x : x - Bs;
                            double pr = exp(sc[x] - mx) / z;
                            if (L->training && L->dropout > 0) {
                                uint64_t st = rng_substream(RNG_DROPOUT, 2000 + (uint64_t)s->layer, (uint64_t)L->step);
                                uint64_t ctr = (bh * N + (uint64_t)pi) * (uint64_t)(2 * Bs) + (uint64_t)x;
                                pr *= rng_uniform_at(L->seed, st, ctr) < L->dropout ? 0.0 : 1.0 / (1.0 - L->dropout);
                            }
                            for (int e = 0; e < Dh; e++)
                                acc[e] += pr * (own ? vb[(size_t)bpos[i * Bs + xs] * Dh + e] : Vs[((size_t)a * Bs + xs) * Dh + e]);
                        }
                    }
                    for (int e = 0; e < Dh; e++) ob[(size_t)pi * Dh + e] = (float)acc[e];
                }
            }
        }
    free(bpos); free(m); free(sum); free(R); free(Ks); free(Vs); free(ms); free(sc); free(acc); free(live);
}

const attn_ops attn_sinkhorn = {
    .name = "sinkhorn",
    .summary = "Sparse Sinkhorn attention: blocks attend to themselves and to a block picked by a learned soft sort",
    .source = "Tay, Bahri, Yang, Metzler, Juan 2020, Sparse Sinkhorn Attention, arXiv 2002.11296",
    .schema = sinkhorn_schema,
    .n_schema = (int)LRA_ARRAY_LEN(sinkhorn_schema),
    .params_size = sizeof(sinkhorn_params),
    .caps = ATTN_CAP_KEY_MASK | ATTN_CAP_MAX_LEN | ATTN_CAP_DROPOUT,
    .validate = sinkhorn_validate,
    .n_weights = sinkhorn_n_weights,
    .state_bytes = NULL,
    .cache_bytes = sinkhorn_cache_bytes,
    .scratch_bytes = sinkhorn_scratch_bytes,
    .flops = sinkhorn_flops,
    .init = sinkhorn_init,
    .begin = NULL,
    .forward = sinkhorn_forward,
    .backward = sinkhorn_backward,
    .reference = sinkhorn_reference,
};
