/* test_nystromformer.c - Nystromformer attention (attention/nystromformer.c). */
#include "attn_harness.h"

#include "../attention/kernelized.h"
#include "../lra/common.h"

extern const attn_ops attn_nystromformer;

static void params(void *p, const char *landmarks, const char *iters, const char *conv) {
    char err[256];
    const param_def *S = attn_nystromformer.schema;
    int n = attn_nystromformer.n_schema;
    schema_defaults(S, n, p);
    assert_int_equal(schema_set(schema_find(S, n, "landmarks"), p, landmarks, err, sizeof err), 0);
    assert_int_equal(schema_set(schema_find(S, n, "pinv_iters"), p, iters, err, sizeof err), 0);
    assert_int_equal(schema_set(schema_find(S, n, "conv"), p, conv, err, sizeof err), 0);
}

static attn_shape shape(int B, int H, int N, int Dh) {
    attn_shape s = {.B = B, .H = H, .N = N, .Nk = N, .Dh = Dh, .causal = 0, .layer = 0, .n_layers = 1, .max_len = N};
    return s;
}

static void test_fast_vs_reference(void **st) {
    (void)st;
    unsigned char p[ATTN_PARAMS_MAX];
    const char *convs[] = {"0", "5"};
    for (int c = 0; c < 2; c++) {
        params(p, "12", "6", convs[c]); /* N = 150 is not a multiple of 12: uneven segments */
        ah_layer *a = ah_new(&attn_nystromformer, p, shape(2, 2, 150, 16), 1);
        ah_fill_qkv(a, 1);
        ah_random_mask(a, 0.5f, 1);
        double e = ah_fast_vs_reference(a);
        printf("nystromformer m=12 conv=%s: fast vs reference %.2e\n", convs[c], e);
        assert_true(e < 1e-5);
        ah_free(a);
    }
}

/* landmarks = N: every segment is one token, A = K1 = K3 = exact attention matrix, and
 * O = A pinv(A) A V = A V once the pseudo-inverse has converged. */
static void test_landmarks_n_equals_softmax(void **st) {
    (void)st;
    unsigned char p[ATTN_PARAMS_MAX];
    const char *iters[] = {"6", "12", "40"};
    double e[3];
    for (int t = 0; t < 3; t++) {
        params(p, "48", iters[t], "0");
        ah_layer *a = ah_new(&attn_nystromformer, p, shape(2, 2, 48, 16), 2);
        ah_fill_qkv(a, 2);
        e[t] = ah_vs_exact_softmax(a);
        printf("nystromformer landmarks=N=48, pinv_iters=%s: vs exact softmax %.2e\n", iters[t], e[t]);
        ah_free(a);
    }
    /* The iteration needs more than the default 6 steps when A is ill-conditioned; with enough of them
     * the only error left is float32 rounding amplified by cond(A). */
    assert_true(e[2] < 1e-3);
    assert_true(e[2] <= e[0]);
}

static void test_grad(void **st) {
    (void)st;
    unsigned char p[ATTN_PARAMS_MAX];
    const char *convs[] = {"0", "5"};
    for (int c = 0; c < 2; c++) {
        params(p, "7", "3", convs[c]);
        ah_layer *a = ah_new(&attn_nystromformer, p, shape(2, 1, 30, 8), 3);
        ah_fill_qkv(a, 3);
        ah_random_mask(a, 0.4f, 3);
        double g = ah_grad_check(a, 60);
        printf("nystromformer m=7 pinv_iters=3 conv=%s: FD gradient check (q, k, v, conv) worst %.2e\n", convs[c], g);
        assert_true(g < 2e-2);
        ah_free(a);
    }
    /* landmarks = N with the default 6 iterations: gradients through the full unrolled pinv. Keys
     * near the queries make A diagonally dominant, hence well conditioned: float32 noise in the loss
     * is amplified by cond(A), and FD would otherwise measure that noise rather than the gradient. */
    params(p, "16", "6", "3");
    ah_layer *a = ah_new(&attn_nystromformer, p, shape(1, 2, 16, 8), 4);
    ah_fill_qkv(a, 4);
    for (size_t i = 0; i < a->nk; i++) a->k[i] = a->q[i] + 0.3f * a->k[i];
    double g = ah_grad_check(a, 60);
    printf("nystromformer m=N=16 pinv_iters=6 conv=3: FD gradient check worst %.2e\n", g);
    assert_true(g < 2e-2);
    /* parameter gradients accumulate */
    ah_backward(a);
    float dw1[3];
    memcpy(dw1, a->L.dw, sizeof dw1);
    a->L.ops->backward(&a->L, a->q, a->k, a->v, a->mask, a->out, a->dout, a->dq, a->dk, a->dv);
    for (int i = 0; i < 3; i++) assert_true(fabsf(a->L.dw[i] - 2 * dw1[i]) <= 1e-6f * fabsf(dw1[i]) + 1e-9f);
    ah_free(a);
}

/* Directional derivative along a random direction in one of q, k, v or the weights (part 0..3):
 * (L(x + h u) - L(x - h u)) / 2h against <grad L, u>. The sum is large next to float32 noise, so
 * this checks the whole backward at sizes where per-coordinate FD is noise-limited. */
static double dir_check(ah_layer *a, int part, float h, uint64_t seed) {
    ah_backward(a);
    float *x = part == 0 ? a->q : part == 1 ? a->k : part == 2 ? a->v : a->L.w;
    const float *g = part == 0 ? a->dq : part == 1 ? a->dk : part == 2 ? a->dv : a->L.dw;
    size_t n = part == 0 ? a->nq : part == 3 ? a->nw : a->nk;
    float *u = malloc(n * sizeof(float)), *x0 = malloc(n * sizeof(float)), *gc = malloc(n * sizeof(float));
    tu_randn(u, n, 1.0f, seed);
    memcpy(x0, x, n * sizeof(float));
    memcpy(gc, g, n * sizeof(float));
    double an = tu_dot(gc, u, n), f[2];
    for (int sgn = 0; sgn < 2; sgn++) {
        for (size_t i = 0; i < n; i++) x[i] = x0[i] + (sgn ? -h : h) * u[i];
        f[sgn] = ah_loss(a);
    }
    memcpy(x, x0, n * sizeof(float));
    double fd = (f[0] - f[1]) / (2.0 * h);
    free(u); free(x0); free(gc);
    return fabs(fd - an) / fmax(fabs(fd), 1e-6);
}

static void test_grad_directional(void **st) {
    (void)st;
    unsigned char p[ATTN_PARAMS_MAX];
    params(p, "24", "6", "9");
    ah_layer *a = ah_new(&attn_nystromformer, p, shape(2, 2, 300, 16), 9);
    ah_fill_qkv(a, 9);
    ah_random_mask(a, 0.4f, 9);
    for (int part = 0; part < 4; part++) {
        double e = dir_check(a, part, 1e-2f, 10 + (uint64_t)part);
        printf("nystromformer m=24 conv=9: directional derivative along %s (N=300, padded) rel error %.2e\n",
               (const char *[]){"q", "k", "v", "conv"}[part], e);
        assert_true(e < 5e-3);
    }
    ah_free(a);
}

static void test_padding_invariance(void **st) {
    (void)st;
    unsigned char p[ATTN_PARAMS_MAX];
    params(p, "16", "6", "5");
    double e = ah_padding_invariance(&attn_nystromformer, p, shape(2, 2, 100, 16), 37, 5);
    printf("nystromformer: padding invariance %.2e\n", e);
    assert_true(e < 1e-6);
}

static void test_edge_cases(void **st) {
    (void)st;
    unsigned char p[ATTN_PARAMS_MAX];
    /* more landmarks than real tokens, a fully padded sequence, conv on */
    params(p, "64", "6", "3");
    ah_layer *a = ah_new(&attn_nystromformer, p, shape(3, 2, 40, 8), 6);
    ah_fill_qkv(a, 6);
    ah_random_mask(a, 0.9f, 6);
    memset(a->mask + 40, 0, 40);
    double e = ah_fast_vs_reference(a);
    ah_backward(a);
    for (size_t i = 0; i < a->nq; i++) assert_true(isfinite(a->out[i]) && isfinite(a->dq[i]) && isfinite(a->dk[i]));
    for (size_t i = 0; i < (size_t)2 * 40 * 8; i++) assert_true(a->out[(size_t)2 * 40 * 8 + i] == 0.0f);
    printf("nystromformer m > real tokens: fast vs reference %.2e\n", e);
    assert_true(e < 1e-5);
    /* thread-count independence, including the conv weight gradients */
    lra_set_threads(1);
    ah_backward(a);
    float *o = malloc(a->nq * sizeof(float)), *dk = malloc(a->nk * sizeof(float)), *dw = malloc(a->nw * sizeof(float));
    memcpy(o, a->out, a->nq * sizeof(float));
    memcpy(dk, a->dk, a->nk * sizeof(float));
    memcpy(dw, a->L.dw, a->nw * sizeof(float));
    lra_set_threads(2);
    ah_backward(a);
    assert_memory_equal(o, a->out, a->nq * sizeof(float));
    assert_memory_equal(dk, a->dk, a->nk * sizeof(float));
    assert_memory_equal(dw, a->L.dw, a->nw * sizeof(float));
    free(o); free(dk); free(dw);
    ah_free(a);
}

static void test_validate_and_sizes(void **st) {
    (void)st;
    unsigned char p[ATTN_PARAMS_MAX];
    params(p, "64", "6", "0");
    char err[256] = "";
    attn_shape s = shape(4, 4, 1024, 16);
    assert_int_equal(attn_nystromformer.validate(p, &s, err, sizeof err), 0);
    s.causal = 1;
    assert_int_equal(attn_nystromformer.validate(p, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "causal"));
    s.causal = 0;
    params(p, "64", "6", "4");
    assert_int_equal(attn_nystromformer.validate(p, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "conv"));
    params(p, "64", "6", "35");
    assert_int_equal((int)attn_nystromformer.n_weights(p, &s), 4 * 35);
    /* memory and FLOPs linear in N at fixed landmarks */
    attn_shape s2 = shape(4, 4, 2048, 16), s3 = shape(4, 4, 4096, 16);
    double f1 = attn_nystromformer.flops(p, &s), f2 = attn_nystromformer.flops(p, &s2), f3 = attn_nystromformer.flops(p, &s3);
    assert_true(fabs((f3 - f2) / (f2 - f1) - 2.0) < 1e-9); /* affine in N: O(N m Dh) + O(T m^3) */
    assert_true(attn_nystromformer.cache_bytes(p, &s2) < 2 * attn_nystromformer.cache_bytes(p, &s));
    assert_true(attn_nystromformer.scratch_bytes(p, &s2, 2) < 2 * attn_nystromformer.scratch_bytes(p, &s, 2));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_vs_reference),
        cmocka_unit_test(test_landmarks_n_equals_softmax),
        cmocka_unit_test(test_grad),
        cmocka_unit_test(test_grad_directional),
        cmocka_unit_test(test_padding_invariance),
        cmocka_unit_test(test_edge_cases),
        cmocka_unit_test(test_validate_and_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
