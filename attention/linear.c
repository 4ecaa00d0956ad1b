/* linear.c - Linear Transformer attention (Katharopoulos et al., "Transformers are RNNs",
 * arXiv 2006.16236): normalised linear attention with the feature map phi(x) = elu(x) + 1 on queries
 * and keys (m = Dh), den + eps with eps = 1e-6 (reference/attention.md §5.1, §5.2 "Other kernels").
 *
 * Letters: B batch, H heads, N queries, Nk keys, Dh head size (see attention.h).
 * No 1/sqrt(Dh) logit scale: the kernel elu(q)+1 . elu(k)+1 replaces exp(q.k/sqrt(Dh)) (as in the
 * paper and LRA). Causal: prefix sums (kernelized.c). Padding: phi(k) of padded keys is dropped
 * after the feature map (§5.5); `lra_ignore_mask: true` reproduces LRA's code, which never applies
 * the padding mask. No attention dropout (there is no probability matrix; LRA skips it too).
 * Time O(N Dh^2), memory O(Dh^2) per (b,h) plus O(N) per thread when causal.
 */
#include <math.h>
#include <string.h>

#include "../lra/common.h"
#include "attention.h"
#include "fastmath.h"
#include "kernelized.h"

typedef struct {
    float eps;           /* denominator epsilon */
    int lra_ignore_mask; /* 1: ignore key_mask (LRA's linear_attention.py) */
} linear_params;

static const param_def linear_schema[] = {
    P_FLOAT(linear_params, eps, "1e-6", 0.0, 1.0,
            "denominator epsilon: out = phi(q) S / (phi(q) . z + eps) (Katharopoulos et al.; LRA 1e-6)"),
    P_BOOL(linear_params, lra_ignore_mask, "false",
           "ignore the key padding mask as LRA's code does (default: drop padded keys after the feature map)"),
};

/* elu(x) + 1 = x + 1 (x > 0), exp(x) (x <= 0). */
static void elu1_map(const kz_feat *f, const float *x, int n, float *phi) {
    size_t tot = (size_t)n * f->Dh;
    for (size_t i = 0; i < tot; i++) phi[i] = x[i] > 0.0f ? x[i] + 1.0f : lra_expf(x[i]);
}
static void elu1_key(const kz_feat *f, const float *x, int n, float *psi, float *lam) {
    (void)lam;
    elu1_map(f, x, n, psi);
}
/* d(elu(x)+1)/dx = 1 (x > 0), exp(x) = phi (x <= 0). */
static void elu1_bwd(const kz_feat *f, const float *x, int n, const float *phi, float *dphi, float *dx) {
    size_t tot = (size_t)n * f->Dh;
    for (size_t i = 0; i < tot; i++) dx[i] = x[i] > 0.0f ? dphi[i] : dphi[i] * phi[i];
}

static kz_feat linear_feat(const linear_params *p, const attn_shape *s) {
    kz_feat f = {.M = s->Dh, .Dh = s->Dh, .key_scale = 1.0f, .key_eps = 0.0f, .key_log = 0,
                 .den_guard = KZ_DEN_ADD, .den_eps = p->eps, .query = elu1_map, .key = elu1_key,
                 .query_bwd = elu1_bwd, .key_bwd = elu1_bwd, .W = NULL, .x_scale = 1.0f, .phi_eps = 0.0f};
    return f;
}

static int linear_validate(const void *params, const attn_shape *s, char *err, size_t errlen) {
    (void)params;
    if (s->Nk < s->N) return lra_errorf(err, errlen, "linear: key length Nk=%d < query length N=%d", s->Nk, s->N);
    if (s->Dh < 1 || s->Dh > 1024) return lra_errorf(err, errlen, "linear: head size %d not in [1, 1024]", s->Dh);
    return 0;
}

static size_t linear_cache(const void *params, const attn_shape *s) {
    kz_feat f = linear_feat(params, s);
    return kz_layer_cache_bytes(&f, s);
}

static size_t linear_scratch(const void *params, const attn_shape *s, int n_threads) {
    kz_feat f = linear_feat(params, s);
    return kz_layer_scratch_bytes(&f, s, n_threads);
}

static double linear_flops(const void *params, const attn_shape *s) {
    kz_feat f = linear_feat(params, s);
    return kz_layer_flops(&f, s, 2.0 * s->Dh);
}

static const uint8_t *linear_mask(const linear_params *p, const uint8_t *m) { return p->lra_ignore_mask ? NULL : m; }

static void linear_forward(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *key_mask,
                           float *out) {
    const linear_params *p = L->params;
    kz_feat f = linear_feat(p, &L->shape);
    kz_layer_forward(&f, L, q, k, v, linear_mask(p, key_mask), out);
}

static void linear_backward(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *key_mask,
                            const float *out, const float *dout, float *dq, float *dk, float *dv) {
    const linear_params *p = L->params;
    kz_feat f = linear_feat(p, &L->shape);
    kz_layer_backward(&f, L, q, k, v, linear_mask(p, key_mask), out, dout, dq, dk, dv);
}

static void linear_reference(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *key_mask,
                             float *out) {
    const linear_params *p = L->params;
    kz_feat f = linear_feat(p, &L->shape);
    kz_layer_reference(&f, L, q, k, v, linear_mask(p, key_mask), out);
}

const attn_ops attn_linear = {
    .name = "linear",
    .summary = "Linear Transformer: elu(x)+1 feature map, O(N) normalised linear attention, causal by prefix sums",
    .source = "Katharopoulos et al., Transformers are RNNs, arXiv 2006.16236",
    .schema = linear_schema,
    .n_schema = (int)LRA_ARRAY_LEN(linear_schema),
    .params_size = sizeof(linear_params),
    .caps = ATTN_CAP_CAUSAL | ATTN_CAP_KEY_MASK | ATTN_CAP_MEMORY,
    .validate = linear_validate,
    .cache_bytes = linear_cache,
    .scratch_bytes = linear_scratch,
    .flops = linear_flops,
    .forward = linear_forward,
    .backward = linear_backward,
    .reference = linear_reference,
};
