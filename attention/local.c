/* local.c - block-local attention: the sequence is cut into blocks of block_size tokens and each
 * token attends to the keys of its own block (causal: those not after it).
 *
 * Maths: reference/attention.md §2 (block-local, Image Transformer 1D local attention, Parmar et
 * al. arXiv 1802.05751; LRA "Local Attention", Tay et al. arXiv 2011.04006). Lengths that are not
 * a multiple of block_size are padded internally (the last block is shorter); never an error.
 *
 * lra_strided reproduces LRA's local_attention.py (reference/attention.md §2.3, reference/lra.md §5
 * "code note"): it reshapes (bs, N, H, Dh) to (bs, block_size, N/block_size, H, Dh) and attends over
 * axis 1, so the softmax groups are the STRIDED sets {g, g + nb, g + 2 nb, ...} with
 * nb = ceil(N/block_size), while the padding mask is reshaped into contiguous chunks: member t of
 * group g is masked by key_mask[g*block_size + t] (positions >= N count as padding). Differences
 * from LRA kept on purpose: a fully masked row gives 0 (LRA's -1e9 gives a uniform average), and
 * N need not be a multiple of block_size (groups then have ceil((N - g)/nb) members).
 *
 * Shapes (glossary in attention.h): q, k, v, out (B,H,N,Dh); key_mask (B,N); cache: row
 * log-sum-exp (B,H,N) floats. Time O(B H N block_size Dh), memory O(B H N) + scratch O(N Dh) per
 * thread: no N x N buffer.
 */
#include <string.h>

#include "../lra/common.h"
#include "attention.h"
#include "blocksparse.h"

typedef struct {
    int block_size;
    int lra_strided;
} local_params;

static const param_def local_schema[] = {
    P_INT(local_params, block_size, "50", 1, 1 << 20,
          "tokens per block; a token attends to the keys of its own block (LRA text: 50, image: 64)"),
    P_BOOL(local_params, lra_strided, "false",
           "reproduce LRA's reshape quirk: groups {g, g+N/block_size, ...} (strided, not contiguous) with the padding "
           "mask read in contiguous chunks"),
};

typedef struct {
    int N, bs, causal, strided;
    int ng;  /* number of blocks (contiguous) or groups (strided) = ceil(N / bs) */
    int tpg; /* tiles per block or group */
    const uint8_t *mask;
} local_ctx;

static local_ctx local_setup(const local_params *p, const attn_shape *s, const uint8_t *mask) {
    local_ctx c;
    c.N = s->N;
    c.bs = p->block_size;
    c.causal = s->causal;
    c.strided = p->lra_strided;
    c.ng = LRA_CEIL_DIV(s->N, p->block_size);
    c.tpg = LRA_CEIL_DIV(LRA_MIN(p->block_size, s->N), BS_BR);
    c.mask = mask;
    return c;
}

/* Members of group g: contiguous block [g*bs, min((g+1)*bs, N)), or strided {g + t*ng : < N}. */
static int local_members(const local_ctx *c, int g) {
    return c->strided ? (c->N - g + c->ng - 1) / c->ng : LRA_MIN(c->bs, c->N - g * c->bs);
}

static void local_plan(const bs_problem *P, int b, int h, int t, bs_tile *T) {
    const local_ctx *c = P->ctx;
    const int grp = t / c->tpg, r0 = (t % c->tpg) * BS_BR;
    const int n = local_members(c, grp);
    if (r0 >= n) return;
    const int nr = LRA_MIN(BS_BR, n - r0);
    bs_seg *g = &T->seg[0];
    bs_seg_reset(g);
    g->n = n;
    if (c->strided) {
        g->start = grp;
        g->stride = c->ng;
        g->mstart = grp * c->bs; /* LRA reads the mask of member t at grp*bs + t */
        g->mstride = 1;
    } else {
        g->start = grp * c->bs;
        g->stride = 1;
    }
    for (int r = 0; r < nr; r++) {
        T->row[r] = g->start + (r0 + r) * g->stride;
        g->lo[r] = 0;
        g->hi[r] = c->causal ? r0 + r + 1 : n;
    }
    T->nr = nr;
    T->nseg = 1;
}

/* The plain definition (for the reference). */
static int local_visible(const void *ctx, int b, int h, int i, int j) {
    const local_ctx *c = ctx;
    if (c->causal && j > i) return 0;
    int idx = j;
    if (c->strided) {
        if (i % c->ng != j % c->ng) return 0;
        idx = (j % c->ng) * c->bs + j / c->ng;
        if (idx >= c->N) return 0;
    } else if (i / c->bs != j / c->bs) {
        return 0;
    }
    return !c->mask || c->mask[(size_t)b * c->N + idx];
}

static int local_validate(const void *params, const attn_shape *s, char *err, size_t errlen) {
    (void)params;
    return bs_validate_shape("local", s, err, errlen);
}

static size_t local_cache_bytes(const void *params, const attn_shape *s) {
    return sizeof(float) * (size_t)s->B * s->H * s->N;
}

static size_t local_scratch_bytes(const void *params, const attn_shape *s, int n_threads) {
    return bs_scratch_bytes(s->Nk, s->Dh, n_threads);
}

static double local_flops(const void *params, const attn_shape *s) {
    local_ctx c = local_setup(params, s, NULL);
    double pairs = 0;
    for (int g = 0; g < c.ng; g++) {
        double n = local_members(&c, g);
        pairs += c.causal ? n * (n + 1) / 2 : n * n;
    }
    return (double)s->B * s->H * bs_pair_flops(pairs, s->Dh);
}

static bs_problem local_problem(attn_layer *L, const uint8_t *mask, const local_ctx *c) {
    bs_problem P = {.L = L, .key_mask = mask, .n_tiles = c->ng * c->tpg, .plan = local_plan, .ctx = c,
                    .lse = (float *)L->cache, .scratch = L->scratch};
    return P;
}

static void local_forward(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *mask,
                          float *out) {
    local_ctx c = local_setup(L->params, &L->shape, mask);
    bs_problem P = local_problem(L, mask, &c);
    bs_forward(&P, q, k, v, out);
}

static void local_backward(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *mask,
                           const float *out, const float *dout, float *dq, float *dk, float *dv) {
    local_ctx c = local_setup(L->params, &L->shape, mask);
    bs_problem P = local_problem(L, mask, &c);
    bs_backward(&P, q, k, v, out, dout, dq, dk, dv);
}

static void local_reference(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *mask,
                            float *out) {
    local_ctx c = local_setup(L->params, &L->shape, mask);
    bs_reference(L, local_visible, &c, q, k, v, out);
}

const attn_ops attn_local = {
    .name = "local",
    .summary = "block-local attention: each token attends within its block of block_size tokens",
    .source = "Parmar et al., Image Transformer, arXiv 1802.05751 (1D local); LRA, Tay et al., arXiv 2011.04006",
    .schema = local_schema,
    .n_schema = (int)(sizeof local_schema / sizeof local_schema[0]),
    .params_size = sizeof(local_params),
    .caps = ATTN_CAP_CAUSAL | ATTN_CAP_KEY_MASK | ATTN_CAP_DROPOUT,
    .validate = local_validate,
    .cache_bytes = local_cache_bytes,
    .scratch_bytes = local_scratch_bytes,
    .flops = local_flops,
    .forward = local_forward,
    .backward = local_backward,
    .reference = local_reference,
};
