/* performer.c - Performer attention (Choromanski et al., "Rethinking Attention with Performers",
 * arXiv 2009.14794): normalised linear attention (reference/attention.md §5.1) with random-feature
 * kernels (§5.2), computed by attention/kernelized.c.
 *
 * Letters: B batch, H heads, N queries, Nk keys, Dh head size, M random features.
 *
 * Kernels (`kernel`):
 *   softmax   FAVOR+ positive random features, an unbiased estimate of exp(q.k/sqrt(Dh)):
 *             x~ = Dh^-1/4 x, a_l = w_l . x~ - |x~|^2/2,
 *             query  phi_l = M^-1/2 (exp(a_l - max_l a_l) + 1e-6)          (per-token stabiliser)
 *             key    phi_l = M^-1/2 (exp(a_l - c) + 1e-6), c = max of a over the real keys and
 *                    features of the (b,h) slice (JAX/LRA), or the running max over the visible
 *                    keys when causal (so the output is exactly causal, §5.4).
 *             den guard den + 2e-6 [|den| <= 1e-6] (google-research fast_attention.py).
 *             The stabilisers are constants in backward (§5.3: an O(1e-6) deviation from autodiff).
 *   relu      ReLU random features (the paper's generalised kernel): phi = ReLU(W x~) + 1e-3.
 *   lra_relu  LRA's default (`attention_fn_cls='generalized'`, deterministic features): no W,
 *             phi(x) = ReLU(x) + 1e-3 with M = Dh, no data normaliser (`features` is ignored).
 *
 * Random features W (M, Dh), one matrix per layer shared by all heads (as in the JAX code), live in
 * L->state: drawn from stream RNG_FEATURES keyed by (layer, redraw epoch), epoch = step / redraw
 * while training (redraw = 0: never, epoch 0), frozen at eval (the last matrix drawn is kept).
 * `orthogonal`: floor(M/Dh) blocks of Dh orthonormal rows (Gram-Schmidt of a Gaussian matrix, in
 * double; the R factor has a positive diagonal, so each block is Haar-distributed) plus M mod Dh rows
 * of one more block, every row rescaled to the norm of an independent N(0, I) vector (chi(Dh),
 * `ortho_scaling=0`); else iid N(0, I) rows. No gradient flows into W.
 *
 * Padding: key features of padded keys are dropped after the feature map (§5.5), so padded keys
 * change neither num, den nor the stabiliser. `lra_ignore_mask: true` reproduces LRA, whose
 * Performer never applies the padding mask. No attention dropout.
 * Time O(N M Dh), memory O(M Dh) per (b,h) (+ O(N) per thread when causal).
 */
#include <math.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "../lra/common.h"
#include "attention.h"
#include "fastmath.h"
#include "kernelized.h"

enum { PK_SOFTMAX = 0, PK_RELU = 1, PK_LRA_RELU = 2 };

typedef struct {
    int features;        /* M */
    int kernel;          /* PK_* */
    int orthogonal;      /* orthogonal random features */
    int redraw;          /* training steps between redraws, 0 = never */
    int lra_ignore_mask; /* ignore key_mask (LRA) */
} performer_params;

static const param_def performer_schema[] = {
    P_INT(performer_params, features, "256", 1, 65536,
          "number of random features M (google-research default 256; LRA ListOps config: 2); ignored by lra_relu"),
    P_ENUM(performer_params, kernel, "softmax", "softmax|relu|lra_relu",
           "softmax: FAVOR+ positive random features (paper); relu: ReLU random features; "
           "lra_relu: LRA's default deterministic ReLU(x)+1e-3 kernel (no random features)"),
    P_BOOL(performer_params, orthogonal, "true",
           "orthogonal random features (blocks of Dh orthonormal rows with chi-distributed norms); false: iid Gaussian"),
    P_INT(performer_params, redraw, "1000", 0, 1000000000,
          "training steps between redraws of the random features (0 = never; lucidrains 1000; the JAX code "
          "redraws every call); frozen at evaluation"),
    P_BOOL(performer_params, lra_ignore_mask, "false",
           "ignore the key padding mask as LRA's code does (default: drop padded keys after the feature map)"),
};

#define FAVOR_EPS 1e-6f  /* eps_phi and denominator guard (numerical_stabilizer) */
#define RELU_EPS 1e-3f   /* kernel_epsilon of the generalised kernels */
#define STATE_HDR 64     /* bytes before W in L->state */

typedef struct {
    int64_t epoch;
    int32_t drawn;
} perf_state;

static int feat_count(const performer_params *p, const attn_shape *s) {
    return p->kernel == PK_LRA_RELU ? s->Dh : p->features;
}

/* ---- feature maps ---- */

/* U (n, M) = (x_scale x) W^T, and hx[i] = |x_scale x_i|^2 / 2. */
static void project(const kz_feat *f, const float *x, int n, float *U, float *hx) {
    kz_gemm(0, 1, n, f->M, f->Dh, f->x_scale, x, f->Dh, f->W, f->Dh, 0.0f, U, f->M);
    if (hx)
        for (int i = 0; i < n; i++) {
            double h = 0;
            for (int d = 0; d < f->Dh; d++) {
                double t = (double)f->x_scale * x[(size_t)i * f->Dh + d];
                h += t * t;
            }
            hx[i] = (float)(0.5 * h);
        }
}

/* phi = exp(a - rowmax a) scaled, a = u - h; returns the row max through lam when non-NULL. */
static void favor_rows(const kz_feat *f, const float *x, int n, float *out, float *lam, float scale, float eps) {
    float hx[KZ_CHUNK];
    const int M = f->M;
    for (int i0 = 0; i0 < n; i0 += KZ_CHUNK) {
        int m = LRA_MIN(KZ_CHUNK, n - i0);
        float *U = out + (size_t)i0 * M;
        project(f, x + (size_t)i0 * f->Dh, m, U, lam ? hx : NULL);
        for (int i = 0; i < m; i++) {
            float *restrict u = U + (size_t)i * M;
            float c = -INFINITY;
            for (int l = 0; l < M; l++) c = u[l] > c ? u[l] : c;
            for (int l = 0; l < M; l++) u[l] = scale * (lra_expf(u[l] - c) + eps);
            if (lam) lam[i0 + i] = c - hx[i];
        }
    }
}

static void favor_query(const kz_feat *f, const float *x, int n, float *phi) {
    favor_rows(f, x, n, phi, NULL, 1.0f / sqrtf((float)f->M), FAVOR_EPS);
}

static void favor_key(const kz_feat *f, const float *x, int n, float *psi, float *lam) {
    favor_rows(f, x, n, psi, lam, 1.0f, 0.0f);
}

/* dx = x_scale (W^T da - x~ sum_l da_l) with da given row-wise in da (n, M). */
static void favor_bwd_common(const kz_feat *f, const float *x, int n, const float *da, float *dx) {
    const int M = f->M, Dh = f->Dh;
    kz_gemm(0, 0, n, Dh, M, f->x_scale, da, M, f->W, Dh, 0.0f, dx, Dh);
    for (int i = 0; i < n; i++) {
        double sa = 0;
        for (int l = 0; l < M; l++) sa += da[(size_t)i * M + l];
        float c = (float)(sa * f->x_scale * f->x_scale);
        for (int d = 0; d < Dh; d++) dx[(size_t)i * Dh + d] -= c * x[(size_t)i * Dh + d];
    }
}

/* query: phi = s (exp(a - c) + eps)  =>  da = dphi (phi - s eps) */
static void favor_query_bwd(const kz_feat *f, const float *x, int n, const float *phi, float *dphi, float *dx) {
    const float se = FAVOR_EPS / sqrtf((float)f->M);
    size_t tot = (size_t)n * f->M;
    for (size_t i = 0; i < tot; i++) dphi[i] *= phi[i] - se;
    favor_bwd_common(f, x, n, dphi, dx);
}

/* key: psi = exp(a - lambda), lambda fixed  =>  da = dpsi psi */
static void favor_key_bwd(const kz_feat *f, const float *x, int n, const float *psi, float *dpsi, float *dx) {
    size_t tot = (size_t)n * f->M;
    for (size_t i = 0; i < tot; i++) dpsi[i] *= psi[i];
    favor_bwd_common(f, x, n, dpsi, dx);
}

/* ReLU random features: phi = ReLU(W x~) + eps (queries and keys alike). */
static void relu_map(const kz_feat *f, const float *x, int n, float *phi) {
    project(f, x, n, phi, NULL);
    size_t tot = (size_t)n * f->M;
    for (size_t i = 0; i < tot; i++) phi[i] = (phi[i] > 0.0f ? phi[i] : 0.0f) + RELU_EPS;
}
static void relu_key(const kz_feat *f, const float *x, int n, float *psi, float *lam) {
    (void)lam;
    relu_map(f, x, n, psi);
}
static void relu_bwd(const kz_feat *f, const float *x, int n, const float *phi, float *dphi, float *dx) {
    size_t tot = (size_t)n * f->M;
    for (size_t i = 0; i < tot; i++) dphi[i] = phi[i] > RELU_EPS ? dphi[i] : 0.0f;
    kz_gemm(0, 0, n, f->Dh, f->M, f->x_scale, dphi, f->M, f->W, f->Dh, 0.0f, dx, f->Dh);
}

/* LRA's deterministic generalised kernel: phi = ReLU(x) + eps, M = Dh. */
static void lrarelu_map(const kz_feat *f, const float *x, int n, float *phi) {
    size_t tot = (size_t)n * f->Dh;
    for (size_t i = 0; i < tot; i++) phi[i] = (x[i] > 0.0f ? x[i] : 0.0f) + RELU_EPS;
}
static void lrarelu_key(const kz_feat *f, const float *x, int n, float *psi, float *lam) {
    (void)lam;
    lrarelu_map(f, x, n, psi);
}
static void lrarelu_bwd(const kz_feat *f, const float *x, int n, const float *phi, float *dphi, float *dx) {
    size_t tot = (size_t)n * f->Dh;
    for (size_t i = 0; i < tot; i++) dx[i] = x[i] > 0.0f ? dphi[i] : 0.0f;
}

static kz_feat performer_feat(const performer_params *p, const attn_shape *s, const void *state) {
    kz_feat f = {.M = feat_count(p, s), .Dh = s->Dh, .key_scale = 1.0f, .key_eps = 0.0f, .key_log = 0,
                 .den_guard = KZ_DEN_JAX, .den_eps = FAVOR_EPS, .W = NULL, .x_scale = 1.0f, .phi_eps = RELU_EPS};
    if (state) f.W = (const float *)((const char *)state + STATE_HDR);
    switch (p->kernel) {
    case PK_SOFTMAX:
        f.key_scale = 1.0f / sqrtf((float)f.M);
        f.key_eps = FAVOR_EPS;
        f.key_log = 1;
        f.x_scale = powf((float)s->Dh, -0.25f);
        f.phi_eps = FAVOR_EPS;
        f.query = favor_query;
        f.key = favor_key;
        f.query_bwd = favor_query_bwd;
        f.key_bwd = favor_key_bwd;
        break;
    case PK_RELU:
        f.x_scale = powf((float)s->Dh, -0.25f);
        f.query = relu_map;
        f.key = relu_key;
        f.query_bwd = relu_bwd;
        f.key_bwd = relu_bwd;
        break;
    default:
        f.W = NULL;
        f.query = lrarelu_map;
        f.key = lrarelu_key;
        f.query_bwd = lrarelu_bwd;
        f.key_bwd = lrarelu_bwd;
        break;
    }
    return f;
}

/* ---- random features ---- */

/* W (M, Dh) for (seed, layer, epoch). */
static void draw_features(float *W, int M, int Dh, int orthogonal, uint64_t seed, int layer, int64_t epoch) {
    rng_t r = rng_make(seed, rng_substream(RNG_FEATURES, (uint64_t)layer, (uint64_t)epoch));
    if (!orthogonal) {
        for (size_t i = 0; i < (size_t)M * Dh; i++) W[i] = (float)rng_normal(&r);
        return;
    }
    double *G = xmalloc(sizeof(double) * (size_t)Dh * Dh);
    for (int l0 = 0; l0 < M; l0 += Dh) {
        for (int i = 0; i < Dh * Dh; i++) G[i] = rng_normal(&r);
        /* modified Gram-Schmidt on the rows */
        for (int i = 0; i < Dh; i++) {
            double *gi = G + (size_t)i * Dh;
            for (int j = 0; j < i; j++) {
                const double *gj = G + (size_t)j * Dh;
                double dp = 0;
                for (int d = 0; d < Dh; d++) dp += gi[d] * gj[d];
                for (int d = 0; d < Dh; d++) gi[d] -= dp * gj[d];
            }
            double nn = 0;
            for (int d = 0; d < Dh; d++) nn += gi[d] * gi[d];
            nn = sqrt(nn);
            LRA_CHECK(nn > 1e-300, "degenerate Gaussian block");
            for (int d = 0; d < Dh; d++) gi[d] /= nn;
        }
        int rows = LRA_MIN(Dh, M - l0);
        for (int i = 0; i < rows; i++)
            for (int d = 0; d < Dh; d++) W[(size_t)(l0 + i) * Dh + d] = (float)G[(size_t)i * Dh + d];
    }
    free(G);
    /* row norms: chi(Dh), the norm of an independent Gaussian vector (ortho_scaling = 0) */
    for (int l = 0; l < M; l++) {
        double nn = 0;
        for (int d = 0; d < Dh; d++) {
            double g = rng_normal(&r);
            nn += g * g;
        }
        nn = sqrt(nn);
        for (int d = 0; d < Dh; d++) W[(size_t)l * Dh + d] = (float)(W[(size_t)l * Dh + d] * nn);
    }
}

static void performer_begin(attn_layer *L) {
    const performer_params *p = L->params;
    if (p->kernel == PK_LRA_RELU) return;
    perf_state *st = L->state;
    int64_t want = st->drawn ? st->epoch : 0;
    if (L->training && p->redraw > 0) want = (int64_t)(L->step / p->redraw);
    if (st->drawn && want == st->epoch) return;
    draw_features((float *)((char *)L->state + STATE_HDR), p->features, L->shape.Dh, p->orthogonal, L->seed,
                  L->shape.layer, want);
    st->epoch = want;
    st->drawn = 1;
}

const float *performer_projection(const attn_layer *L) {
    const performer_params *p = L->params;
    if (p->kernel == PK_LRA_RELU || !L->state) return NULL;
    return (const float *)((const char *)L->state + STATE_HDR);
}

/* ---- ops ---- */

static int performer_validate(const void *params, const attn_shape *s, char *err, size_t errlen) {
    const performer_params *p = params;
    if (s->Nk < s->N) return lra_errorf(err, errlen, "performer: key length Nk=%d < query length N=%d", s->Nk, s->N);
    if (s->Dh < 1 || s->Dh > 1024) return lra_errorf(err, errlen, "performer: head size %d not in [1, 1024]", s->Dh);
    if (p->kernel != PK_LRA_RELU && p->features < 1)
        return lra_errorf(err, errlen, "performer: features must be >= 1, got %d", p->features);
    return 0;
}

static size_t performer_state(const void *params, const attn_shape *s) {
    const performer_params *p = params;
    if (p->kernel == PK_LRA_RELU) return 0;
    return STATE_HDR + sizeof(float) * (size_t)p->features * s->Dh;
}

static size_t performer_cache(const void *params, const attn_shape *s) {
    kz_feat f = performer_feat(params, s, NULL);
    return kz_layer_cache_bytes(&f, s);
}

static size_t performer_scratch(const void *params, const attn_shape *s, int n_threads) {
    kz_feat f = performer_feat(params, s, NULL);
    return kz_layer_scratch_bytes(&f, s, n_threads);
}

static double performer_flops(const void *params, const attn_shape *s) {
    const performer_params *p = params;
    kz_feat f = performer_feat(params, s, NULL);
    double per_row = p->kernel == PK_LRA_RELU ? 2.0 * s->Dh : 2.0 * f.M * s->Dh + 4.0 * f.M + 2.0 * s->Dh;
    return kz_layer_flops(&f, s, per_row);
}

static const uint8_t *pmask(const performer_params *p, const uint8_t *m) { return p->lra_ignore_mask ? NULL : m; }

static void check_drawn(const attn_layer *L) {
    const performer_params *p = L->params;
    LRA_CHECK(p->kernel == PK_LRA_RELU || ((const perf_state *)L->state)->drawn,
              "performer: random features not drawn (call ops->begin before forward)");
}

static void performer_forward(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *key_mask,
                              float *out) {
    const performer_params *p = L->params;
    check_drawn(L);
    kz_feat f = performer_feat(p, &L->shape, L->state);
    kz_layer_forward(&f, L, q, k, v, pmask(p, key_mask), out);
}

static void performer_backward(attn_layer *L, const float *q, const float *k, const float *v,
                               const uint8_t *key_mask, const float *out, const float *dout, float *dq, float *dk,
                               float *dv) {
    const performer_params *p = L->params;
    check_drawn(L);
    kz_feat f = performer_feat(p, &L->shape, L->state);
    kz_layer_backward(&f, L, q, k, v, pmask(p, key_mask), out, dout, dq, dk, dv);
}

static void performer_reference(attn_layer *L, const float *q, const float *k, const float *v,
                                const uint8_t *key_mask, float *out) {
    const performer_params *p = L->params;
    check_drawn(L);
    kz_feat f = performer_feat(p, &L->shape, L->state);
    kz_layer_reference(&f, L, q, k, v, pmask(p, key_mask), out);
}

const attn_ops attn_performer = {
    .name = "performer",
    .summary = "Performer: FAVOR+ positive orthogonal random features (or ReLU kernels), O(N) linear attention",
    .source = "Choromanski et al., Rethinking Attention with Performers, arXiv 2009.14794",
    .schema = performer_schema,
    .n_schema = (int)LRA_ARRAY_LEN(performer_schema),
    .params_size = sizeof(performer_params),
    .caps = ATTN_CAP_CAUSAL | ATTN_CAP_KEY_MASK | ATTN_CAP_MEMORY,
    .validate = performer_validate,
    .state_bytes = performer_state,
    .cache_bytes = performer_cache,
    .scratch_bytes = performer_scratch,
    .flops = performer_flops,
    .begin = performer_begin,
    .forward = performer_forward,
    .backward = performer_backward,
    .reference = performer_reference,
};
