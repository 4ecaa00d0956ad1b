/* sparse.c - Sparse Transformer attention: the "fixed" and "strided" factorised patterns of Child
 * et al., merged into one softmax per head.
 *
 * Maths: reference/attention.md §9.1 (Child, Gray, Radford, Sutskever, Generating Long Sequences
 * with Sparse Transformers, arXiv 1904.10509; openai/sparse_attention `attention.py`; LRA
 * `sparse_transformer/sparse_attention.py`). With l = stride and c = the summary width:
 *   strided:  A1(i) = { j : i - l < j <= i }            A2(i) = { j <= i : (i - j) mod l = 0 }
 *   fixed:    A1(i) = { j <= i : floor(j/l) = floor(i/l) }  A2(i) = { j <= i : j mod l >= l - c }
 * Query i attends to A1(i) union A2(i) in one softmax (the "merged" head of the paper, as LRA does;
 * the per-head split and the alternating-layer forms are not offered). Key padding is excluded.
 *
 * Causality. The paper defines the patterns for autoregressive models. In a non-causal encoder
 * this file drops the "j <= i" clauses, which is the paper's bidirectional reading:
 *   strided:  A1(i) = { j : |i - j| < l },   A2(i) = { j : (i - j) mod l = 0 }   (symmetric)
 *   fixed:    A1(i) = the whole block of i,  A2(i) = every summary column (j mod l >= l - c).
 * lra_causal: true reproduces LRA's sparse_transformer: the causal pattern even in an encoder, and
 * LRA's Fixed2 pattern, which also admits the columns j mod l = 0 (reference/attention.md §9.1).
 * LRA's unmasking of the CLS row and column is not reproduced (the mechanism does not know which
 * position is a CLS token). LRA's settings: pattern fixed, stride 50, c 10.
 *
 * Defaults follow the paper's enwik8 model: fixed, stride 128, c 32. Cost per row: fixed
 * ~ l + N c / l keys, strided ~ 2 l + N / l: O(N sqrt(N)) for l ~ sqrt(N), as in the paper.
 *
 * Kernel: attention/blocksparse.c. Fixed: tiles of rows of one block; segments = the own block
 * (summary columns excluded through a validity row) and the summary columns. Strided: two passes
 * (bs_problem.split), the band over contiguous rows, then the every-l-th keys over rows of one
 * residue class, merged into one softmax per row.
 *
 * Shapes (glossary in attention.h): q, k, v, out (B,H,N,Dh); key_mask (B,N); cache: row
 * log-sum-exp (B,H,N). Memory O(B H N) plus per-thread scratch O(N Dh); fixed adds O(N) ints and
 * O(B N) bytes of masks, strided the pass-0 softmax state O(B H N Dh) (bs_pass_state_bytes).
 */
#include <stdlib.h>
#include <string.h>

#include "../lra/common.h"
#include "attention.h"
#include "blocksparse.h"

enum { SP_FIXED = 0, SP_STRIDED = 1 };

typedef struct {
    int pattern;
    int stride;
    int c;
    int lra_causal;
} sparse_params;

static const param_def sparse_schema[] = {
    P_ENUM(sparse_params, pattern, "fixed", "fixed|strided",
           "fixed: own block + summary columns (text); strided: last l keys + every l-th key (images)"),
    P_INT(sparse_params, stride, "128", 1, 1 << 20,
          "l: block length (fixed) or stride (strided); paper enwik8 128, LRA 50"),
    P_INT(sparse_params, c, "32", 1, 1 << 20,
          "fixed pattern: the last c positions of every block are summary columns (paper 32, LRA 10)"),
    P_BOOL(sparse_params, lra_causal, "false",
           "reproduce LRA: causal pattern even in a non-causal encoder, and Fixed2 also admits j mod l = 0"),
};

typedef struct {
    int N, l, c, causal, strided, lra;
    int n_tiles;
    int tpg;            /* tiles per block (fixed) or per residue class (strided pass 1) */
    int split;          /* strided: tiles of pass 0 (bs_problem.split) */
    int nS;             /* fixed: summary columns < N */
    const int *S;       /* (nS) ascending */
    const uint8_t *own; /* (B,N): key real and not a summary column (fixed, own-block segment) */
    const uint8_t *mask;
} sp_ctx;

static int sp_is_summary(const sp_ctx *c, int j) {
    int t = j % c->l;
    return t >= c->l - c->c || (c->lra && t == 0);
}

static sp_ctx sp_setup(const sparse_params *p, const attn_shape *s) {
    sp_ctx c;
    memset(&c, 0, sizeof c);
    c.N = s->N;
    c.l = p->stride;
    c.c = LRA_MIN(p->c, p->stride);
    c.causal = s->causal || p->lra_causal;
    c.strided = p->pattern == SP_STRIDED;
    c.lra = p->lra_causal;
    if (c.strided) {
        c.split = LRA_CEIL_DIV(s->N, BS_BR);
        c.tpg = LRA_CEIL_DIV(LRA_CEIL_DIV(s->N, c.l), BS_BR); /* per residue class */
        c.n_tiles = c.split + LRA_MIN(c.l, s->N) * c.tpg;
    } else {
        c.tpg = LRA_CEIL_DIV(LRA_MIN(c.l, s->N), BS_BR);
        c.n_tiles = LRA_CEIL_DIV(s->N, c.l) * c.tpg;
    }
    return c;
}

static size_t sp_shared_bytes(const sparse_params *p, const attn_shape *s) {
    if (p->pattern == SP_STRIDED) return bs_align(bs_pass_state_bytes(s->B, s->H, s->N, s->Dh));
    return bs_align(sizeof(int) * (size_t)s->N) + bs_align((size_t)s->B * s->N);
}

static void sp_buffers(sp_ctx *c, const attn_shape *s, const uint8_t *mask, void *scratch) {
    c->mask = mask;
    if (c->strided) return;
    int *S = scratch;
    uint8_t *own = (uint8_t *)scratch + bs_align(sizeof(int) * (size_t)s->N);
    int n = 0;
    for (int j = 0; j < s->N; j++)
        if (sp_is_summary(c, j)) S[n++] = j;
    for (int b = 0; b < s->B; b++)
        for (int j = 0; j < s->N; j++)
            own[(size_t)b * s->N + j] = (uint8_t)(!sp_is_summary(c, j) && (!mask || mask[(size_t)b * s->N + j]));
    c->nS = n;
    c->S = S;
    c->own = own;
}

/* Number of entries of the ascending list S[0..n) that are <= x. */
static int upper_bound(const int *S, int n, int x) {
    int lo = 0, hi = n;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (S[mid] <= x) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

static void sp_plan_fixed(const sp_ctx *c, int b, int t, bs_tile *T) {
    const int blk = t / c->tpg, r0 = (t % c->tpg) * BS_BR;
    const int base = blk * c->l, n = LRA_MIN(c->l, c->N - base);
    if (r0 >= n) return;
    const int nr = LRA_MIN(BS_BR, n - r0);
    bs_seg *own = &T->seg[0], *sum = &T->seg[1];
    bs_seg_reset(own);
    own->n = n;
    own->start = base;
    own->stride = 1;
    own->valid = c->own + (size_t)b * c->N;
    bs_seg_reset(sum);
    sum->n = c->nS;
    sum->pos = c->S;
    int hs = c->causal ? upper_bound(c->S, c->nS, base + r0 - 1) : c->nS;
    for (int r = 0; r < nr; r++) {
        const int i = base + r0 + r;
        T->row[r] = i;
        own->lo[r] = 0;
        own->hi[r] = c->causal ? i - base + 1 : n;
        if (c->causal)
            while (hs < c->nS && c->S[hs] <= i) hs++;
        sum->lo[r] = 0;
        sum->hi[r] = hs;
    }
    T->nr = nr;
    T->nseg = 2;
}

/* Strided, two passes (bs_problem.split). Pass 0: tiles of BS_BR contiguous rows and the band A1
 * (self included), one contiguous segment shared by the tile. Pass 1: tiles of rows of one residue
 * class rho + l*u, which share the every-l-th keys rho + l*t: t < u below (and t > u above when
 * bidirectional). Both parts then run as dense tiles. */
static void sp_plan_strided(const sp_ctx *c, int t, bs_tile *T) {
    const int l = c->l;
    if (t < c->split) {
        const int i0 = t * BS_BR, i1 = LRA_MIN(c->N, i0 + BS_BR);
        if (i0 >= i1) return;
        const int right = c->causal ? 0 : l - 1;
        const int kb0 = LRA_MAX(0, i0 - (l - 1)), kb1 = LRA_MIN(c->N - 1, i1 - 1 + right);
        bs_seg *band = &T->seg[0];
        bs_seg_reset(band);
        band->n = kb1 - kb0 + 1;
        band->start = kb0;
        band->stride = 1;
        for (int r = 0; r < i1 - i0; r++) {
            const int i = i0 + r;
            T->row[r] = i;
            band->lo[r] = i - (l - 1) - kb0;
            band->hi[r] = i + right + 1 - kb0;
        }
        T->nr = i1 - i0;
        T->nseg = 1;
        return;
    }
    t -= c->split;
    const int rho = t / c->tpg, u0 = (t % c->tpg) * BS_BR;
    if (rho >= c->N) return;
    const int ncls = (c->N - rho + l - 1) / l;
    const int u1 = LRA_MIN(ncls, u0 + BS_BR);
    if (u0 >= u1) return;
    bs_seg *below = &T->seg[0], *above = &T->seg[1];
    bs_seg_reset(below);
    below->n = ncls;
    below->start = rho;
    below->stride = l;
    *above = *below;
    for (int r = 0; r < u1 - u0; r++) {
        const int u = u0 + r;
        T->row[r] = rho + l * u;
        below->lo[r] = 0; /* j = rho, rho + l, ..., i - l */
        below->hi[r] = u;
        above->lo[r] = u + 1; /* j = i + l, i + 2l, ... */
        above->hi[r] = ncls;
    }
    T->nr = u1 - u0;
    T->nseg = c->causal ? 1 : 2;
}

static void sp_plan(const bs_problem *P, int b, int h, int t, bs_tile *T) {
    const sp_ctx *c = P->ctx;
    if (c->strided) sp_plan_strided(c, t, T);
    else sp_plan_fixed(c, b, t, T);
}

static int sp_visible(const void *ctx, int b, int h, int i, int j) {
    const sp_ctx *c = ctx;
    if (c->mask && !c->mask[(size_t)b * c->N + j]) return 0;
    if (c->causal && j > i) return 0;
    if (c->strided) {
        int d = abs(i - j);
        return d < c->l || d % c->l == 0;
    }
    return j / c->l == i / c->l || sp_is_summary(c, j);
}

static int sp_validate(const void *params, const attn_shape *s, char *err, size_t errlen) {
    const sparse_params *p = params;
    if (bs_validate_shape("sparse", s, err, errlen)) return -1;
    if (p->pattern == SP_FIXED && p->c > p->stride)
        return lra_errorf(err, errlen, "c: %d summary columns exceed the block length stride = %d", p->c, p->stride);
    return 0;
}

static size_t sp_cache_bytes(const void *params, const attn_shape *s) {
    return sizeof(float) * (size_t)s->B * s->H * s->N;
}

static size_t sp_scratch_bytes(const void *params, const attn_shape *s, int n_threads) {
    return sp_shared_bytes(params, s) + bs_scratch_bytes(s->Nk, s->Dh, n_threads);
}

/* Summary columns in [0, x] (x >= -1). */
static long sp_count_summary(const sp_ctx *c, long x) {
    if (x < 0) return 0;
    long per = c->c + (c->lra && c->c < c->l), full = (x + 1) / c->l, rem = (x + 1) % c->l;
    long part = LRA_MAX(0, rem - (c->l - c->c)) + (c->lra && rem > 0 && c->c < c->l);
    return full * per + part;
}

/* Exact pair count for a batch without padding. */
static double sp_flops(const void *params, const attn_shape *s) {
    sp_ctx c = sp_setup(params, s);
    const int N = s->N, l = c.l;
    double pairs = 0;
    for (int i = 0; i < N; i++) {
        if (c.strided) {
            int lo = LRA_MAX(0, i - l + 1), hi = c.causal ? i : LRA_MIN(N - 1, i + l - 1);
            pairs += hi - lo + 1 + i / l + (c.causal ? 0 : (N - 1 - i) / l);
        } else {
            long base = (long)(i / l) * l, end = LRA_MIN(N - 1, base + l - 1);
            if (c.causal)
                pairs += (double)(i - base + 1) + (double)sp_count_summary(&c, base - 1);
            else
                pairs += (double)(end - base + 1) + (double)(sp_count_summary(&c, N - 1) -
                                                             (sp_count_summary(&c, end) - sp_count_summary(&c, base - 1)));
        }
    }
    return (double)s->B * s->H * bs_pair_flops(pairs, s->Dh);
}

static bs_problem sp_problem(attn_layer *L, const uint8_t *mask, sp_ctx *c) {
    const attn_shape *s = &L->shape;
    sp_buffers(c, s, mask, L->scratch);
    bs_problem P = {.L = L, .key_mask = mask, .n_tiles = c->n_tiles, .plan = sp_plan, .ctx = c,
                    .lse = (float *)L->cache, .scratch = (char *)L->scratch + sp_shared_bytes(L->params, s),
                    .split = c->strided ? c->split : 0, .state = c->strided ? L->scratch : NULL};
    return P;
}

static void sp_forward(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *mask,
                       float *out) {
    sp_ctx c = sp_setup(L->params, &L->shape);
    bs_problem P = sp_problem(L, mask, &c);
    bs_forward(&P, q, k, v, out);
}

static void sp_backward(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *mask,
                        const float *out, const float *dout, float *dq, float *dk, float *dv) {
    sp_ctx c = sp_setup(L->params, &L->shape);
    bs_problem P = sp_problem(L, mask, &c);
    bs_backward(&P, q, k, v, out, dout, dq, dk, dv);
}

static void sp_reference(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *mask,
                         float *out) {
    sp_ctx c = sp_setup(L->params, &L->shape);
    c.mask = mask;
    bs_reference(L, sp_visible, &c, q, k, v, out);
}

const attn_ops attn_sparse = {
    .name = "sparse",
    .summary = "Sparse Transformer: fixed or strided factorised pattern, merged in one softmax",
    .source = "Child et al., Generating Long Sequences with Sparse Transformers, arXiv 1904.10509",
    .schema = sparse_schema,
    .n_schema = (int)(sizeof sparse_schema / sizeof sparse_schema[0]),
    .params_size = sizeof(sparse_params),
    .caps = ATTN_CAP_CAUSAL | ATTN_CAP_KEY_MASK | ATTN_CAP_DROPOUT,
    .validate = sp_validate,
    .cache_bytes = sp_cache_bytes,
    .scratch_bytes = sp_scratch_bytes,
    .flops = sp_flops,
    .forward = sp_forward,
    .backward = sp_backward,
    .reference = sp_reference,
};
