/* test_linear.c - Linear Transformer attention (attention/linear.c, attention/kernelized.c). */
#include "attn_harness.h"

#include "../lra/common.h"

extern const attn_ops attn_linear;

static void defaults(void *p) { schema_defaults(attn_linear.schema, attn_linear.n_schema, p); }

static attn_shape shape(int B, int H, int N, int Nk, int Dh, int causal) {
    attn_shape s = {.B = B, .H = H, .N = N, .Nk = Nk, .Dh = Dh, .causal = causal, .layer = 0, .n_layers = 1, .max_len = Nk};
    return s;
}

/* Independent O(N*Nk) reference in double: phi = elu + 1, masked keys dropped, den + eps. */
static void direct_linear(const ah_layer *a, float *out) {
    const attn_shape *s = &a->L.shape;
    int off = s->Nk - s->N, Dh = s->Dh;
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < s->H; h++) {
            size_t qo = ((size_t)b * s->H + h) * s->N * Dh, ko = ((size_t)b * s->H + h) * s->Nk * Dh;
            for (int i = 0; i < s->N; i++) {
                double num[64] = {0}, den = 0;
                for (int j = 0; j < s->Nk; j++) {
                    if (s->causal && j > i + off) break;
                    if (a->mask && !a->mask[(size_t)b * s->Nk + j]) continue;
                    double kq = 0;
                    for (int d = 0; d < Dh; d++) {
                        double x = a->q[qo + (size_t)i * Dh + d], y = a->k[ko + (size_t)j * Dh + d];
                        kq += (x > 0 ? x + 1 : exp(x)) * (y > 0 ? y + 1 : exp(y));
                    }
                    den += kq;
                    for (int d = 0; d < Dh; d++) num[d] += kq * a->v[ko + (size_t)j * Dh + d];
                }
                for (int d = 0; d < Dh; d++) out[qo + (size_t)i * Dh + d] = (float)(num[d] / (den + 1e-6));
            }
        }
}

static double vs_direct(ah_layer *a) {
    ah_forward(a);
    float *ref = calloc(a->nq, sizeof(float));
    direct_linear(a, ref);
    double e = ah_compare_rows(a, a->out, ref);
    free(ref);
    return e;
}

static void test_bidirectional(void **st) {
    (void)st;
    unsigned char p[ATTN_PARAMS_MAX];
    defaults(p);
    ah_layer *a = ah_new(&attn_linear, p, shape(2, 3, 100, 100, 16, 0), 1);
    ah_fill_qkv(a, 1);
    ah_random_mask(a, 0.5f, 1);
    double e1 = ah_fast_vs_reference(a), e2 = vs_direct(a);
    printf("linear bidirectional: fast vs reference %.2e, vs direct %.2e\n", e1, e2);
    assert_true(e1 < 1e-5);
    assert_true(e2 < 1e-5);
    ah_free(a);
}

static void test_causal_vs_direct(void **st) {
    (void)st;
    unsigned char p[ATTN_PARAMS_MAX];
    defaults(p);
    /* N not a multiple of the chunk, Nk > N (segment memory), padding */
    ah_layer *a = ah_new(&attn_linear, p, shape(2, 2, 150, 170, 8, 1), 2);
    ah_fill_qkv(a, 2);
    ah_random_mask(a, 0.3f, 2);
    double e1 = ah_fast_vs_reference(a), e2 = vs_direct(a);
    printf("linear causal: fast vs reference %.2e, vs direct O(N^2) %.2e\n", e1, e2);
    assert_true(e1 < 1e-5);
    assert_true(e2 < 1e-5);
    ah_free(a);
}

static void test_grad(void **st) {
    (void)st;
    unsigned char p[ATTN_PARAMS_MAX];
    defaults(p);
    for (int causal = 0; causal <= 1; causal++) {
        ah_layer *a = ah_new(&attn_linear, p, shape(2, 1, 40, causal ? 45 : 40, 8, causal), 3);
        ah_fill_qkv(a, 3);
        ah_random_mask(a, 0.4f, 3);
        double g = ah_grad_check(a, 60);
        printf("linear causal=%d: FD gradient check worst %.2e\n", causal, g);
        assert_true(g < 2e-2);
        /* padded keys get zero gradient */
        const attn_shape *s = &a->L.shape;
        for (int b = 0; b < s->B; b++)
            for (int j = 0; j < s->Nk; j++)
                if (!a->mask[(size_t)b * s->Nk + j])
                    for (int h = 0; h < s->H; h++)
                        for (int d = 0; d < s->Dh; d++) {
                            size_t o = (((size_t)b * s->H + h) * s->Nk + j) * s->Dh + d;
                            assert_true(a->dk[o] == 0.0f && a->dv[o] == 0.0f);
                        }
        ah_free(a);
    }
}

/* Directional derivative along a random direction in one of q, k, v: checks the whole backward at
 * a size with many causal chunks, where per-coordinate FD is noise-limited. */
static double dir_check(ah_layer *a, int part, float h, uint64_t seed) {
    ah_backward(a);
    float *x = part == 0 ? a->q : part == 1 ? a->k : a->v;
    const float *g = part == 0 ? a->dq : part == 1 ? a->dk : a->dv;
    size_t n = part == 0 ? a->nq : a->nk;
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
    defaults(p);
    for (int causal = 0; causal <= 1; causal++) {
        ah_layer *a = ah_new(&attn_linear, p, shape(2, 2, 150, causal ? 170 : 150, 16, causal), 8);
        ah_fill_qkv(a, 8);
        ah_random_mask(a, 0.4f, 8);
        for (int part = 0; part < 3; part++) {
            double e = dir_check(a, part, 1e-2f, 9 + (uint64_t)part);
            printf("linear causal=%d: directional derivative along %c (N=150, padded) rel error %.2e\n", causal, "qkv"[part], e);
            assert_true(e < 2e-3);
        }
        ah_free(a);
    }
}

static void test_padding_and_causal_invariance(void **st) {
    (void)st;
    unsigned char p[ATTN_PARAMS_MAX];
    defaults(p);
    double e0 = ah_padding_invariance(&attn_linear, p, shape(2, 2, 90, 90, 16, 0), 37, 4);
    double e1 = ah_padding_invariance(&attn_linear, p, shape(2, 2, 90, 90, 16, 1), 37, 4);
    printf("linear padding invariance: bidirectional %.2e, causal %.2e\n", e0, e1);
    assert_true(e0 < 1e-6);
    assert_true(e1 < 1e-6);
    ah_layer *a = ah_new(&attn_linear, p, shape(2, 2, 130, 130, 16, 1), 5);
    ah_fill_qkv(a, 5);
    double c = ah_causal_invariance(a, 77, 5);
    printf("linear causal invariance (future perturbed): max change %.2e\n", c);
    assert_true(c == 0.0);
    ah_free(a);
}

static void test_lra_ignore_mask(void **st) {
    (void)st;
    unsigned char p[ATTN_PARAMS_MAX];
    defaults(p);
    char err[256];
    assert_int_equal(schema_set(schema_find(attn_linear.schema, attn_linear.n_schema, "lra_ignore_mask"), p, "true", err, sizeof err), 0);
    ah_layer *a = ah_new(&attn_linear, p, shape(2, 2, 64, 64, 8, 0), 6);
    ah_fill_qkv(a, 6);
    ah_random_mask(a, 0.9f, 6);
    ah_forward(a);
    float *o1 = malloc(a->nq * sizeof(float));
    memcpy(o1, a->out, a->nq * sizeof(float));
    free(a->mask);
    a->mask = NULL;
    ah_forward(a);
    assert_true(tu_rel_err(o1, a->out, a->nq) == 0.0);
    free(o1);
    ah_free(a);
}

static void test_fully_masked_and_threads(void **st) {
    (void)st;
    unsigned char p[ATTN_PARAMS_MAX];
    defaults(p);
    for (int causal = 0; causal <= 1; causal++) {
        ah_layer *a = ah_new(&attn_linear, p, shape(3, 2, 80, 80, 8, causal), 7);
        ah_fill_qkv(a, 7);
        ah_random_mask(a, 0.5f, 7);
        memset(a->mask + 80, 0, 80); /* batch 1 entirely padding */
        lra_set_threads(1);
        ah_backward(a);
        float *o1 = malloc(a->nq * sizeof(float)), *g1 = malloc(a->nk * sizeof(float));
        memcpy(o1, a->out, a->nq * sizeof(float));
        memcpy(g1, a->dk, a->nk * sizeof(float));
        for (size_t i = 0; i < a->nq; i++) assert_true(isfinite(a->out[i]) && isfinite(a->dq[i]));
        for (size_t i = 0; i < (size_t)2 * 80 * 8; i++) assert_true(a->out[(size_t)2 * 80 * 8 + i] == 0.0f);
        lra_set_threads(2);
        ah_backward(a);
        assert_memory_equal(o1, a->out, a->nq * sizeof(float));
        assert_memory_equal(g1, a->dk, a->nk * sizeof(float));
        free(o1); free(g1);
        ah_free(a);
    }
}

static void test_validate_and_sizes(void **st) {
    (void)st;
    unsigned char p[ATTN_PARAMS_MAX];
    defaults(p);
    char err[256];
    attn_shape s = shape(4, 4, 4096, 4096, 16, 0);
    assert_int_equal(attn_linear.validate(p, &s, err, sizeof err), 0);
    s.Nk = 100;
    assert_int_equal(attn_linear.validate(p, &s, err, sizeof err), -1);
    s = shape(4, 4, 1024, 1024, 16, 0);
    attn_shape s2 = shape(4, 4, 2048, 2048, 16, 0);
    /* bidirectional memory does not depend on N at all; causal grows linearly */
    assert_true(attn_linear.cache_bytes(p, &s) == attn_linear.cache_bytes(p, &s2));
    assert_true(attn_linear.scratch_bytes(p, &s, 2) == attn_linear.scratch_bytes(p, &s2, 2));
    s.causal = s2.causal = 1;
    size_t a = attn_linear.scratch_bytes(p, &s, 2), b = attn_linear.scratch_bytes(p, &s2, 2);
    assert_true(b > a && b < 2 * a + 4096);
    assert_true(fabs(attn_linear.flops(p, &s2) / attn_linear.flops(p, &s) - 2.0) < 1e-9);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bidirectional),
        cmocka_unit_test(test_causal_vs_direct),
        cmocka_unit_test(test_grad),
        cmocka_unit_test(test_grad_directional),
        cmocka_unit_test(test_padding_and_causal_invariance),
        cmocka_unit_test(test_lra_ignore_mask),
        cmocka_unit_test(test_fully_masked_and_threads),
        cmocka_unit_test(test_validate_and_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
