/* longformer.c - Longformer attention: a (dilated) sliding window plus symmetric global tokens.
 *
 * Maths: reference/attention.md §3 (Beltagy, Peters, Cohan, arXiv 2004.05150). For a non-global
 * query i the candidate set is one softmax over
 *     band(i) = { j = i + dilation*r : r in [-window, window] (causal: [-window, 0]), 0 <= j < N,
 *                 j not global }  union  G (the global positions),
 * and a global query g attends to every key. Key padding is excluded everywhere; padded query rows
 * are don't-care. Global keys are removed from the band so they are not counted twice (§3.2).
 *
 * Conventions, stated because implementations differ (§3.1):
 *  - `window` is ONE-SIDED, as in allenai's attention_window: token i sees i-window..i+window,
 *    2*window+1 keys. The default 256 is LRA's sliding_window_size 512; LRA's code splits 512 as
 *    255 back, self, 256 forward, here it is 256 on each side (513 keys).
 *  - `dilation` gives one value for all layers, or one per layer (indexed by the layer number);
 *    the paper's per-head dilation is not offered.
 *  - `global` lists positions (e.g. [0] for a CLS token); LRA uses none. The paper gives global
 *    rows separate projections W_Qg, W_Kg, W_Vg; q, k, v arrive here already projected, so global
 *    rows use the same q, k, v as the band (the paper initialises W_*g as copies of W_*).
 *  - causal: window right side 0 and no global tokens (validate rejects `global` with causal).
 *
 * Shapes (glossary in attention.h): q, k, v, out (B,H,N,Dh); key_mask (B,N); cache: row
 * log-sum-exp (B,H,N). Time O(B H N (2 window + 1 + |G|) Dh + B H |G| N Dh); memory O(B H N) plus
 * per-thread scratch O(N Dh) and O(B N) bytes of masks: no N x N buffer.
 */
#include <stdlib.h>
#include <string.h>

#include "../lra/common.h"
#include "attention.h"
#include "blocksparse.h"

typedef struct {
    int window;
    lra_ilist dilation;
    lra_ilist global_;
} longformer_params;

static const param_def longformer_schema[] = {
    P_INT(longformer_params, window, "256", 0, 1 << 20,
          "one-sided window w: token i sees keys i-w..i+w (2w+1 keys; LRA's sliding_window_size 512 = 256)"),
    P_ILIST(longformer_params, dilation, "[1]", 1, 1 << 16,
            "gap between window keys (1 = none): one value for all layers or one per layer"),
    P_ILIST_K(longformer_params, "global", global_, "[]", 0, 1 << 30,
              "positions with symmetric global attention, e.g. [0] for a CLS token (LRA: none)"),
};

typedef struct {
    int N, w, dil, causal;
    int ng;            /* distinct global positions < N */
    int g[LRA_ILIST_MAX];
    int tpc;           /* band tiles per residue class */
    int n_band_tiles;  /* dil * tpc */
    const uint8_t *mask;     /* (B,N) or NULL */
    const uint8_t *is_glob;  /* (N) 1 at global positions (setup buffers) */
    const uint8_t *band_ok;  /* (B,N) mask and not global */
} lf_ctx;

static int lf_dilation(const longformer_params *p, int layer) {
    if (p->dilation.n <= 0) return 1;
    if (p->dilation.n == 1 || layer < 0) return p->dilation.v[0];
    return p->dilation.v[layer < p->dilation.n ? layer : p->dilation.n - 1];
}

static int cmp_int(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* Everything that depends only on params and shape (no buffers). */
static lf_ctx lf_setup(const longformer_params *p, const attn_shape *s) {
    lf_ctx c;
    memset(&c, 0, sizeof c);
    c.N = s->N;
    c.w = p->window;
    c.dil = lf_dilation(p, s->layer);
    c.causal = s->causal;
    int tmp[LRA_ILIST_MAX], n = 0;
    for (int x = 0; x < p->global_.n; x++)
        if (p->global_.v[x] >= 0 && p->global_.v[x] < s->N) tmp[n++] = p->global_.v[x];
    qsort(tmp, (size_t)n, sizeof(int), cmp_int);
    for (int x = 0; x < n; x++)
        if (c.ng == 0 || tmp[x] != c.g[c.ng - 1]) c.g[c.ng++] = tmp[x];
    if (c.causal) c.ng = 0; /* validate rejects it; never build a non-causal pattern */
    c.tpc = LRA_CEIL_DIV(LRA_CEIL_DIV(s->N, c.dil), BS_BR);
    c.n_band_tiles = c.dil * c.tpc;
    return c;
}

static size_t lf_shared_bytes(const attn_shape *s) {
    return bs_align((size_t)s->N) + bs_align((size_t)s->B * s->N);
}

/* Fill the global flags and the band validity rows in the shared scratch. */
static void lf_buffers(lf_ctx *c, const attn_shape *s, const uint8_t *mask, void *scratch) {
    uint8_t *isg = scratch, *band = isg + bs_align((size_t)s->N);
    memset(isg, 0, (size_t)s->N);
    for (int x = 0; x < c->ng; x++) isg[c->g[x]] = 1;
    for (int b = 0; b < s->B; b++)
        for (int j = 0; j < s->N; j++)
            band[(size_t)b * s->N + j] = (uint8_t)(!isg[j] && (!mask || mask[(size_t)b * s->N + j]));
    c->mask = mask;
    c->is_glob = isg;
    c->band_ok = band;
}

static void lf_plan(const bs_problem *P, int b, int h, int t, bs_tile *T) {
    const lf_ctx *c = P->ctx;
    if (t >= c->n_band_tiles) { /* global rows: every key */
        int g0 = (t - c->n_band_tiles) * BS_BR;
        int nr = LRA_MIN(BS_BR, c->ng - g0);
        if (nr <= 0) return;
        bs_seg *g = &T->seg[0];
        bs_seg_reset(g);
        g->n = c->N;
        g->stride = 1;
        for (int r = 0; r < nr; r++) {
            T->row[r] = c->g[g0 + r];
            g->lo[r] = 0;
            g->hi[r] = c->N;
        }
        T->nr = nr;
        T->nseg = 1;
        return;
    }
    /* band rows of residue class rho: positions rho + dil*u, u in [u0, u1) */
    const int rho = t / c->tpc, u0 = (t % c->tpc) * BS_BR;
    if (rho >= c->N) return;
    const int ncls = (c->N - rho + c->dil - 1) / c->dil;
    const int u1 = LRA_MIN(ncls, u0 + BS_BR);
    if (u0 >= u1) return;
    const int k0 = LRA_MAX(0, u0 - c->w);
    const int k1 = LRA_MIN(ncls, (c->causal ? u1 : u1 + c->w));
    bs_seg *band = &T->seg[0], *glob = &T->seg[1];
    bs_seg_reset(band);
    band->n = k1 - k0;
    band->start = rho + c->dil * k0;
    band->stride = c->dil;
    band->valid = c->band_ok + (size_t)b * c->N;
    bs_seg_reset(glob);
    glob->n = c->ng;
    glob->pos = c->g;
    int nr = 0;
    for (int u = u0; u < u1; u++) {
        const int i = rho + c->dil * u;
        if (c->is_glob[i]) continue; /* computed by the global tiles */
        T->row[nr] = i;
        band->lo[nr] = u - c->w - k0;
        band->hi[nr] = (c->causal ? u : u + c->w) + 1 - k0;
        glob->lo[nr] = 0;
        glob->hi[nr] = c->ng;
        nr++;
    }
    T->nr = nr;
    T->nseg = c->ng > 0 ? 2 : 1;
}

static int lf_visible(const void *ctx, int b, int h, int i, int j) {
    const lf_ctx *c = ctx;
    if (c->mask && !c->mask[(size_t)b * c->N + j]) return 0;
    int gi = 0, gj = 0;
    for (int x = 0; x < c->ng; x++) {
        gi |= c->g[x] == i;
        gj |= c->g[x] == j;
    }
    if (gi || gj) return 1;
    int d = j - i;
    if (c->causal && d > 0) return 0;
    return abs(d) <= c->dil * c->w && abs(d) % c->dil == 0;
}

static int lf_validate(const void *params, const attn_shape *s, char *err, size_t errlen) {
    const longformer_params *p = params;
    if (bs_validate_shape("longformer", s, err, errlen)) return -1;
    if (p->dilation.n < 1)
        return lra_errorf(err, errlen, "dilation: give one value for all layers or one per layer (got an empty list)");
    if (p->dilation.n > 1 && s->layer >= p->dilation.n)
        return lra_errorf(err, errlen,
                          "dilation: %d values given but layer %d needs one (give one value for all layers or one "
                          "per layer)",
                          p->dilation.n, s->layer);
    if (p->dilation.n > 1 && s->n_layers > 0 && p->dilation.n != s->n_layers)
        return lra_errorf(err, errlen, "dilation: %d values for %d layers (give one value, or one per layer)",
                          p->dilation.n, s->n_layers);
    for (int x = 0; x < p->global_.n; x++)
        if (p->global_.v[x] >= s->N)
            return lra_errorf(err, errlen, "global: position %d is outside the sequence (length %d)", p->global_.v[x],
                              s->N);
    if (s->causal && p->global_.n > 0)
        return lra_errorf(err, errlen,
                          "global: causal longformer has no global tokens (a global token would see the future); "
                          "use global: []");
    return 0;
}

static size_t lf_cache_bytes(const void *params, const attn_shape *s) {
    return sizeof(float) * (size_t)s->B * s->H * s->N;
}

static size_t lf_scratch_bytes(const void *params, const attn_shape *s, int n_threads) {
    return lf_shared_bytes(s) + bs_scratch_bytes(s->Nk, s->Dh, n_threads);
}

static double lf_flops(const void *params, const attn_shape *s) {
    lf_ctx c = lf_setup(params, s);
    double pairs = (double)c.ng * c.N; /* global rows */
    for (int i = 0; i < c.N; i++) {
        int isg = 0;
        for (int x = 0; x < c.ng; x++) isg |= c.g[x] == i;
        if (isg) continue;
        int u = i / c.dil, ncls = (c.N - i % c.dil + c.dil - 1) / c.dil;
        int lo = LRA_MAX(0, u - c.w), hi = LRA_MIN(ncls - 1, c.causal ? u : u + c.w);
        pairs += (hi - lo + 1) + c.ng; /* band (globals inside it are few: ignored) + global keys */
    }
    return (double)s->B * s->H * bs_pair_flops(pairs, s->Dh);
}

static bs_problem lf_problem(attn_layer *L, const uint8_t *mask, lf_ctx *c) {
    const attn_shape *s = &L->shape;
    lf_buffers(c, s, mask, L->scratch);
    bs_problem P = {.L = L, .key_mask = mask, .n_tiles = c->n_band_tiles + LRA_CEIL_DIV(c->ng, BS_BR), .plan = lf_plan,
                    .ctx = c, .lse = (float *)L->cache, .scratch = (char *)L->scratch + lf_shared_bytes(s)};
    return P;
}

static void lf_forward(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *mask,
                       float *out) {
    lf_ctx c = lf_setup(L->params, &L->shape);
    bs_problem P = lf_problem(L, mask, &c);
    bs_forward(&P, q, k, v, out);
}

static void lf_backward(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *mask,
                        const float *out, const float *dout, float *dq, float *dk, float *dv) {
    lf_ctx c = lf_setup(L->params, &L->shape);
    bs_problem P = lf_problem(L, mask, &c);
    bs_backward(&P, q, k, v, out, dout, dq, dk, dv);
}

static void lf_reference(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *mask,
                         float *out) {
    lf_ctx c = lf_setup(L->params, &L->shape);
    c.mask = mask;
    bs_reference(L, lf_visible, &c, q, k, v, out);
}

const attn_ops attn_longformer = {
    .name = "longformer",
    .summary = "sliding window (one-sided window, optional dilation) plus symmetric global tokens",
    .source = "Beltagy, Peters, Cohan, Longformer: The Long-Document Transformer, arXiv 2004.05150",
    .schema = longformer_schema,
    .n_schema = (int)(sizeof longformer_schema / sizeof longformer_schema[0]),
    .params_size = sizeof(longformer_params),
    .caps = ATTN_CAP_CAUSAL | ATTN_CAP_KEY_MASK | ATTN_CAP_DROPOUT,
    .validate = lf_validate,
    .cache_bytes = lf_cache_bytes,
    .scratch_bytes = lf_scratch_bytes,
    .flops = lf_flops,
    .forward = lf_forward,
    .backward = lf_backward,
    .reference = lf_reference,
};
