/* test_linformer.c - Linformer attention (attention/linformer.c). */
#include "attn_harness.h"

#include "../attention/kernelized.h"
#include "../lra/common.h"

extern const attn_ops attn_linformer;

static const char *shares[] = {"none", "headwise", "kv", "layerwise"};

static void params(void *p, const char *k, const char *share) {
    char err[256];
    schema_defaults(attn_linformer.schema, attn_linformer.n_schema, p);
    assert_int_equal(schema_set(schema_find(attn_linformer.schema, attn_linformer.n_schema, "k"), p, k, err, sizeof err), 0);
    assert_int_equal(schema_set(schema_find(attn_linformer.schema, attn_linformer.n_schema, "share"), p, share, err, sizeof err), 0);
}

static attn_shape shape(int B, int H, int N, int Dh, int max_len) {
    attn_shape s = {.B = B, .H = H, .N = N, .Nk = N, .Dh = Dh, .causal = 0, .layer = 0, .n_layers = 1, .max_len = max_len};
    return s;
}

static void test_fast_vs_reference(void **st) {
    (void)st;
    unsigned char p[ATTN_PARAMS_MAX];
    for (int sh = 0; sh < 4; sh++) {
        params(p, "24", shares[sh]);
        ah_layer *a = ah_new(&attn_linformer, p, shape(2, 3, 100, 16, 130), 1);
        ah_fill_qkv(a, 1);
        ah_random_mask(a, 0.5f, 1);
        double e = ah_fast_vs_reference(a);
        printf("linformer share=%-9s: fast vs reference %.2e\n", shares[sh], e);
        assert_true(e < 1e-5);
        ah_free(a);
    }
}

/* k = N, E = F = identity (first N columns of a max_len-wide matrix): exact softmax attention. */
static void test_identity_equals_softmax(void **st) {
    (void)st;
    unsigned char p[ATTN_PARAMS_MAX];
    const int N = 70, Lmax = 96;
    for (int sh = 0; sh < 3; sh++) {
        params(p, "70", shares[sh]);
        ah_layer *a = ah_new(&attn_linformer, p, shape(2, 2, N, 16, Lmax), 2);
        ah_fill_qkv(a, 2);
        memset(a->L.w, 0, a->nw * sizeof(float));
        for (int h = 0; h < 2; h++)
            for (int which = 0; which < 2; which++) {
                float *E = linformer_proj(&a->L, h, which, 0);
                for (int r = 0; r < N; r++) E[(size_t)r * Lmax + r] = 1.0f;
            }
        double e = ah_vs_exact_softmax(a);
        printf("linformer share=%-9s k=N, E=F=I: vs exact softmax %.2e\n", shares[sh], e);
        assert_true(e < 1e-5);
        ah_free(a);
    }
}

static void test_grad(void **st) {
    (void)st;
    unsigned char p[ATTN_PARAMS_MAX];
    for (int sh = 0; sh < 4; sh++) {
        params(p, "8", shares[sh]);
        ah_layer *a = ah_new(&attn_linformer, p, shape(1, 2, 30, 8, 36), 3);
        ah_fill_qkv(a, 3);
        ah_random_mask(a, 0.5f, 3);
        double g = ah_grad_check(a, 60);
        printf("linformer share=%-9s: FD gradient check (q, k, v, E, F) worst %.2e\n", shares[sh], g);
        assert_true(g < 2e-2);
        /* columns >= N and padded keys get no gradient into E; weights accumulate (+=) */
        ah_backward(a);
        float *dw1 = malloc(a->nw * sizeof(float));
        memcpy(dw1, a->L.dw, a->nw * sizeof(float));
        float *E = linformer_proj(&a->L, 0, 0, 1);
        for (int r = 0; r < 8; r++)
            for (int j = 30; j < 36; j++) assert_true(E[(size_t)r * 36 + j] == 0.0f);
        a->L.ops->backward(&a->L, a->q, a->k, a->v, a->mask, a->out, a->dout, a->dq, a->dk, a->dv);
        float *twice = malloc(a->nw * sizeof(float));
        for (size_t i = 0; i < a->nw; i++) twice[i] = 2.0f * dw1[i];
        assert_true(tu_rel_err(a->L.dw, twice, a->nw) < 1e-6);
        free(twice);
        free(dw1);
        ah_free(a);
    }
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
    for (int sh = 0; sh < 3; sh++) {
        params(p, "32", shares[sh]);
        ah_layer *a = ah_new(&attn_linformer, p, shape(2, 2, 300, 16, 320), 7);
        ah_fill_qkv(a, 7);
        ah_random_mask(a, 0.4f, 7);
        for (int part = 0; part < 4; part++) {
            /* E, F multiply sums over N keys: a smaller step keeps the second-order term small */
            double e = dir_check(a, part, part == 3 ? 1e-3f : 3e-3f, 8 + (uint64_t)part);
            printf("linformer share=%-9s: directional derivative along %s (N=300, padded) rel error %.2e\n", shares[sh],
                   (const char *[]){"q", "k", "v", "E,F"}[part], e);
            assert_true(e < 5e-3); /* float32 noise is ~1e-3 here; a wrong gradient is off by far more */
        }
        ah_free(a);
    }
}

static void test_padding_invariance(void **st) {
    (void)st;
    unsigned char p[ATTN_PARAMS_MAX];
    for (int sh = 0; sh < 4; sh++) {
        params(p, "16", shares[sh]);
        double e = ah_padding_invariance(&attn_linformer, p, shape(2, 2, 60, 16, 60), 40, 4);
        printf("linformer share=%-9s: padding invariance (max_len fixed) %.2e\n", shares[sh], e);
        assert_true(e < 1e-6);
    }
}

static void test_validate_sizes_init(void **st) {
    (void)st;
    unsigned char p[ATTN_PARAMS_MAX];
    params(p, "16", "headwise");
    char err[256] = "";
    attn_shape s = shape(4, 4, 1024, 16, 4096);
    assert_int_equal(attn_linformer.validate(p, &s, err, sizeof err), 0);
    s.causal = 1;
    assert_int_equal(attn_linformer.validate(p, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "causal"));
    s.causal = 0;
    s.N = s.Nk = 5000;
    assert_int_equal(attn_linformer.validate(p, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "max_len"));
    /* parameter counts of the sharing modes (H = 4, K = 16, Lmax = 4096) */
    s = shape(4, 4, 1024, 16, 4096);
    size_t want[4] = {2 * 4 * 16 * 4096, 2 * 16 * 4096, 16 * 4096, 16 * 4096};
    for (int sh = 0; sh < 4; sh++) {
        params(p, "16", shares[sh]);
        assert_int_equal((int)attn_linformer.n_weights(p, &s), (int)want[sh]);
    }
    /* linear memory and FLOPs in N at fixed max_len */
    attn_shape s2 = shape(4, 4, 2048, 16, 4096);
    assert_true(fabs(attn_linformer.flops(p, &s2) / attn_linformer.flops(p, &s) - 2.0) < 1e-9);
    assert_true(attn_linformer.cache_bytes(p, &s2) < 2 * attn_linformer.cache_bytes(p, &s));
    /* init: xavier-uniform, gain 1/sqrt(2); layerwise starts every layer from the same E */
    params(p, "16", "layerwise");
    attn_shape s0 = shape(1, 2, 40, 8, 50), s1 = s0;
    s1.layer = 1;
    ah_layer *a = ah_new(&attn_linformer, p, s0, 5), *b = ah_new(&attn_linformer, p, s1, 5);
    rng_t r = rng_make(77, RNG_INIT); /* a different cursor: layerwise must not use it */
    attn_linformer.init(&b->L, &r);
    assert_memory_equal(a->L.w, b->L.w, a->nw * sizeof(float));
    double bound = sqrt(3.0 / (50 + 16)), mx = 0, var = 0;
    for (size_t i = 0; i < a->nw; i++) {
        mx = fmax(mx, fabs(a->L.w[i]));
        var += (double)a->L.w[i] * a->L.w[i];
    }
    var /= a->nw;
    printf("linformer init: max |w| %.4f (bound %.4f), var %.5f (want %.5f)\n", mx, bound, var, bound * bound / 3);
    assert_true(mx <= bound && mx > 0.9 * bound);
    assert_true(fabs(var / (bound * bound / 3) - 1) < 0.15);
    ah_free(a); ah_free(b);
}

static void test_threads(void **st) {
    (void)st;
    unsigned char p[ATTN_PARAMS_MAX];
    params(p, "32", "kv");
    ah_layer *a = ah_new(&attn_linformer, p, shape(3, 2, 200, 16, 256), 6);
    ah_fill_qkv(a, 6);
    ah_random_mask(a, 0.5f, 6);
    lra_set_threads(1);
    ah_backward(a);
    float *dw = malloc(a->nw * sizeof(float)), *o = malloc(a->nq * sizeof(float));
    memcpy(dw, a->L.dw, a->nw * sizeof(float));
    memcpy(o, a->out, a->nq * sizeof(float));
    lra_set_threads(2);
    ah_backward(a);
    assert_memory_equal(dw, a->L.dw, a->nw * sizeof(float));
    assert_memory_equal(o, a->out, a->nq * sizeof(float));
    free(dw); free(o);
    ah_free(a);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_vs_reference),
        cmocka_unit_test(test_identity_equals_softmax),
        cmocka_unit_test(test_grad),
        cmocka_unit_test(test_grad_directional),
        cmocka_unit_test(test_padding_invariance),
        cmocka_unit_test(test_validate_sizes_init),
        cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
