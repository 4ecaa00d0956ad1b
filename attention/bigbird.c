/* bigbird.c - BigBird block-sparse attention, ITC form: global, sliding-window and random blocks.
 *
 * Maths: reference/attention.md §8 (Zaheer et al., Big Bird: Transformers for Longer Sequences,
 * arXiv 2007.14062; google-research/bigbird `bigbird/core/attention.py`). The sequence is cut into
 * blocks of block_size tokens (the last block may be shorter: internal padding, never an error).
 * With nb blocks, query block I attends, in one softmax over the union of key blocks,
 *   - global: blocks 0 and nb-1 (global_blocks = 2; 1 = block 0 only; 0 = none). A global query
 *     block attends to every key;
 *   - window: blocks I-h .. I+h with window_blocks = 2h+1 (default 3: I-1, I, I+1);
 *   - random: num_random_blocks blocks drawn without replacement from the blocks that are neither
 *     global nor in the window (fewer when fewer are left, like get_rand_attn_plan).
 * Key padding is excluded; padded query rows are don't-care (0 for blocks past the real length).
 *
 * Where this departs from the reference code, and why:
 *  - The block structure follows each sequence's REAL length n_b (1 + last unpadded key) rather
 *    than the padded batch length: the global "last" block is the last real block and random blocks
 *    are drawn among real blocks. Appending padding therefore never changes a real output (the
 *    reference code draws over the padded length, so its outputs depend on the batch's padding).
 *  - Random blocks: for head h and query block I, each candidate block J gets the key
 *    rng_at(seed, RNG_FEATURES substream (layer, h), (I, J)); the r candidates with the smallest keys
 *    are taken. That is a uniform draw without replacement, fixed for the whole run (deterministic
 *    in seed, layer, head and block, as the reference fixes its plan at construction), and it does
 *    not depend on the batch's padded length. Nothing needs to persist, so state_bytes is 0; the
 *    draws of the current batch are kept in the cache for backward.
 *  - No causal form (the reference decoder uses dense attention): validate rejects `causal`.
 *
 * Shapes (glossary in attention.h): q, k, v, out (B,H,N,Dh); key_mask (B,N). Cache: row
 * log-sum-exp (B,H,N) floats, then the random blocks (B,H,nb,r) int32 and the real block counts (B)
 * int32. Time O(B H N (2 + window_blocks + r) block_size Dh) plus O(B H N block_size Dh) per global
 * block; memory O(B H N) plus per-thread scratch O(N Dh).
 */
#include <string.h>

#include "../lra/common.h"
#include "attention.h"
#include "blocksparse.h"

typedef struct {
    int block_size;
    int num_random_blocks;
    int global_blocks;
    int window_blocks;
} bigbird_params;

static const param_def bigbird_schema[] = {
    P_INT(bigbird_params, block_size, "64", 1, 1 << 16, "tokens per block (BigBird scripts and LRA: 64)"),
    P_INT(bigbird_params, num_random_blocks, "3", 0, 32,
          "random key blocks per query block, fixed per layer and head (BigBird and LRA: 3)"),
    P_INT(bigbird_params, global_blocks, "2", 0, 2,
          "global blocks: 2 = first and last (ITC), 1 = first only, 0 = none"),
    P_INT(bigbird_params, window_blocks, "3", 1, 1023, "sliding window in blocks, odd (3 = I-1, I, I+1)"),
};

typedef struct {
    int N, bs, r, gb, hw; /* hw: window half-width in blocks */
    int nb;               /* blocks of the padded length */
    int tpb;              /* tiles per block */
    int H;
    const uint8_t *mask;
    const int *nbr;  /* (B) real blocks per sequence */
    const int *rnd;  /* (B,H,nb,r) random blocks, -1 = none */
    uint64_t seed, layer;
} bb_ctx;

static bb_ctx bb_setup(const bigbird_params *p, const attn_shape *s) {
    bb_ctx c;
    memset(&c, 0, sizeof c);
    c.N = s->N;
    c.bs = p->block_size;
    c.r = p->num_random_blocks;
    c.gb = p->global_blocks;
    c.hw = (p->window_blocks - 1) / 2;
    c.nb = LRA_CEIL_DIV(s->N, p->block_size);
    c.tpb = LRA_CEIL_DIV(LRA_MIN(p->block_size, s->N), BS_BR);
    c.H = s->H;
    c.layer = (uint64_t)(s->layer < 0 ? 0 : s->layer);
    return c;
}

static size_t bb_rnd_count(const bigbird_params *p, const attn_shape *s) {
    return (size_t)s->B * s->H * LRA_CEIL_DIV(s->N, p->block_size) * p->num_random_blocks;
}

static int bb_is_global(const bb_ctx *c, int nbr, int J) { return (c->gb >= 1 && J == 0) || (c->gb >= 2 && J == nbr - 1); }

/* Real blocks of sequence b: ceil(n_b / bs) with n_b = 1 + last unpadded key (0 if none). */
static int bb_real_blocks(const bb_ctx *c, const uint8_t *mask, int b) {
    if (!mask) return c->nb;
    int n = c->N;
    while (n > 0 && !mask[(size_t)b * c->N + n - 1]) n--;
    return LRA_CEIL_DIV(n, c->bs);
}

/* Random blocks of (head h, query block I) for a sequence of nbr real blocks: the r allowed blocks
 * with the smallest keys rng_at(seed, substream(RNG_FEATURES, layer, h), I * 2^32 + J), ascending
 * by key. Writes r entries (unused: -1); returns how many were drawn. */
static int bb_draw(const bb_ctx *c, int h, int I, int nbr, int *out) {
    uint64_t key[32];
    int n = 0;
    if (c->r <= 0) return 0;
    const uint64_t stream = rng_substream(RNG_FEATURES, 0x6b1b + c->layer, (uint64_t)h);
    for (int J = 0; J < nbr; J++) {
        if (bb_is_global(c, nbr, J) || (J >= I - c->hw && J <= I + c->hw)) continue;
        uint64_t kj = rng_at(c->seed, stream, ((uint64_t)I << 32) | (uint64_t)J);
        /* insert into the sorted top-r list */
        if (n < c->r) n++;
        else if (kj >= key[n - 1]) continue;
        int x = n - 1;
        while (x > 0 && key[x - 1] > kj) {
            key[x] = key[x - 1];
            out[x] = out[x - 1];
            x--;
        }
        key[x] = kj;
        out[x] = J;
    }
    for (int x = n; x < c->r; x++) out[x] = -1;
    return n;
}

static void bb_fill(bb_ctx *c, const attn_shape *s, const uint8_t *mask, void *cache) {
    int *rnd = (int *)(void *)((char *)cache + sizeof(float) * (size_t)s->B * s->H * s->N);
    int *nbr = rnd + (size_t)s->B * s->H * c->nb * c->r;
    for (int b = 0; b < s->B; b++) nbr[b] = bb_real_blocks(c, mask, b);
    const int BH = s->B * s->H;
    const long work = (long)BH * c->nb * c->nb; /* hash draws; small calls stay serial */
    (void)work;                                 /* unused without OpenMP */
#pragma omp parallel for schedule(static) if (work > (1L << 16))
    for (int bh = 0; bh < BH; bh++) {
        const int b = bh / s->H, h = bh % s->H;
        for (int I = 0; I < c->nb; I++) bb_draw(c, h, I, nbr[b], rnd + ((size_t)bh * c->nb + I) * c->r);
    }
    c->mask = mask;
    c->rnd = rnd;
    c->nbr = nbr;
}

static void bb_plan(const bs_problem *P, int b, int h, int t, bs_tile *T) {
    const bb_ctx *c = P->ctx;
    const int I = t / c->tpb, r0 = (t % c->tpb) * BS_BR;
    const int base = I * c->bs, nrows = LRA_MIN(c->bs, c->N - base);
    if (r0 >= nrows) return;
    const int nr = LRA_MIN(BS_BR, nrows - r0);
    T->nr = nr;
    for (int r = 0; r < nr; r++) T->row[r] = base + r0 + r;
    const int nbr = c->nbr[b];
    if (I >= nbr) return; /* padded rows: no segment, output 0 */
    /* key block runs [a, b]: the global query block sees every real key; otherwise the window,
     * the global blocks and the random blocks, sorted and merged where adjacent. */
    int ra[2 + 2 + 32], rb[2 + 2 + 32], nrun = 0;
    if (bb_is_global(c, nbr, I)) {
        ra[0] = 0;
        rb[0] = nbr - 1;
        nrun = 1;
    } else {
        const int *rnd = c->rnd + (((size_t)b * c->H + h) * c->nb + I) * c->r;
        ra[nrun] = LRA_MAX(0, I - c->hw);
        rb[nrun++] = LRA_MIN(nbr - 1, I + c->hw);
        if (c->gb >= 1) ra[nrun] = rb[nrun] = 0, nrun++;
        if (c->gb >= 2) ra[nrun] = rb[nrun] = nbr - 1, nrun++;
        for (int x = 0; x < c->r && rnd[x] >= 0; x++) ra[nrun] = rb[nrun] = rnd[x], nrun++;
        for (int x = 1; x < nrun; x++) /* insertion sort by start (<= 36 runs) */
            for (int y = x; y > 0 && ra[y - 1] > ra[y]; y--) {
                int t0 = ra[y], t1 = rb[y];
                ra[y] = ra[y - 1], rb[y] = rb[y - 1];
                ra[y - 1] = t0, rb[y - 1] = t1;
            }
        int m = 0;
        for (int x = 1; x < nrun; x++) {
            if (ra[x] <= rb[m] + 1) {
                if (rb[x] > rb[m]) rb[m] = rb[x];
            } else {
                m++;
                ra[m] = ra[x], rb[m] = rb[x];
            }
        }
        nrun = m + 1;
    }
    int ns = 0;
    for (int x = 0; x < nrun; x++) {
        bs_seg *g = &T->seg[ns++];
        bs_seg_reset(g);
        g->stride = 1;
        g->start = ra[x] * c->bs;
        g->n = LRA_MIN(c->N, (rb[x] + 1) * c->bs) - g->start;
        for (int r = 0; r < nr; r++) {
            g->lo[r] = 0;
            g->hi[r] = g->n;
        }
    }
    T->nseg = ns;
}

static int bb_visible(const void *ctx, int b, int h, int i, int j) {
    const bb_ctx *c = ctx;
    if (c->mask && !c->mask[(size_t)b * c->N + j]) return 0;
    const int nbr = bb_real_blocks(c, c->mask, b);
    const int I = i / c->bs, J = j / c->bs;
    if (I >= nbr) return 0;
    if (bb_is_global(c, nbr, I) || bb_is_global(c, nbr, J)) return 1;
    if (J >= I - c->hw && J <= I + c->hw) return 1;
    int rnd[32];
    bb_draw(c, h, I, nbr, rnd);
    for (int x = 0; x < c->r; x++)
        if (rnd[x] == J) return 1;
    return 0;
}

static int bb_validate(const void *params, const attn_shape *s, char *err, size_t errlen) {
    const bigbird_params *p = params;
    if (bs_validate_shape("bigbird", s, err, errlen)) return -1;
    if (s->causal)
        return lra_errorf(err, errlen,
                          "causal: bigbird has no causal form (its reference decoder uses dense attention); use "
                          "softmax, local, longformer or sparse for causal models");
    if (p->window_blocks % 2 == 0)
        return lra_errorf(err, errlen, "window_blocks: must be odd (I-h .. I+h), got %d", p->window_blocks);
    return 0;
}

static size_t bb_cache_bytes(const void *params, const attn_shape *s) {
    return sizeof(float) * (size_t)s->B * s->H * s->N + sizeof(int) * (bb_rnd_count(params, s) + (size_t)s->B);
}

static size_t bb_scratch_bytes(const void *params, const attn_shape *s, int n_threads) {
    return bs_scratch_bytes(s->Nk, s->Dh, n_threads);
}

/* Pairs for a batch without padding: every head draws min(r, allowed) random blocks, counted as
 * full blocks. */
static double bb_flops(const void *params, const attn_shape *s) {
    bb_ctx c = bb_setup(params, s);
    double pairs = 0;
    for (int I = 0; I < c.nb; I++) {
        double rows = LRA_MIN(c.bs, c.N - I * c.bs), keys = 0;
        if (bb_is_global(&c, c.nb, I)) {
            keys = c.N;
        } else {
            int allowed = 0;
            for (int J = 0; J < c.nb; J++) {
                double len = LRA_MIN(c.bs, c.N - J * c.bs);
                int g = bb_is_global(&c, c.nb, J), w = J >= I - c.hw && J <= I + c.hw;
                if (g || w) keys += len;
                else allowed++;
            }
            keys += (double)LRA_MIN(c.r, allowed) * c.bs;
        }
        pairs += rows * keys;
    }
    return (double)s->B * s->H * bs_pair_flops(pairs, s->Dh);
}

static bs_problem bb_problem(attn_layer *L, const uint8_t *mask, bb_ctx *c) {
    bs_problem P = {.L = L, .key_mask = mask, .n_tiles = c->nb * c->tpb, .plan = bb_plan, .ctx = c,
                    .lse = (float *)L->cache, .scratch = L->scratch};
    return P;
}

static void bb_forward(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *mask,
                       float *out) {
    bb_ctx c = bb_setup(L->params, &L->shape);
    c.seed = L->seed;
    bb_fill(&c, &L->shape, mask, L->cache);
    bs_problem P = bb_problem(L, mask, &c);
    bs_forward(&P, q, k, v, out);
}

static void bb_backward(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *mask,
                        const float *out, const float *dout, float *dq, float *dk, float *dv) {
    const attn_shape *s = &L->shape;
    bb_ctx c = bb_setup(L->params, s);
    c.seed = L->seed;
    c.mask = mask;
    c.rnd = (const int *)(const void *)((const char *)L->cache + sizeof(float) * (size_t)s->B * s->H * s->N);
    c.nbr = c.rnd + bb_rnd_count(L->params, s);
    bs_problem P = bb_problem(L, mask, &c);
    bs_backward(&P, q, k, v, out, dout, dq, dk, dv);
}

static void bb_reference(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *mask,
                         float *out) {
    bb_ctx c = bb_setup(L->params, &L->shape);
    c.seed = L->seed;
    c.mask = mask;
    bs_reference(L, bb_visible, &c, q, k, v, out);
}

const attn_ops attn_bigbird = {
    .name = "bigbird",
    .summary = "block-sparse attention: global, sliding-window and random blocks (ITC)",
    .source = "Zaheer et al., Big Bird: Transformers for Longer Sequences, arXiv 2007.14062",
    .schema = bigbird_schema,
    .n_schema = (int)(sizeof bigbird_schema / sizeof bigbird_schema[0]),
    .params_size = sizeof(bigbird_params),
    .caps = ATTN_CAP_KEY_MASK | ATTN_CAP_DROPOUT,
    .validate = bb_validate,
    .cache_bytes = bb_cache_bytes,
    .scratch_bytes = bb_scratch_bytes,
    .flops = bb_flops,
    .forward = bb_forward,
    .backward = bb_backward,
    .reference = bb_reference,
};
