/* test_longformer.c - Longformer attention (attention/longformer.c): candidate sets read off the
 * output against the paper's definition (band, dilation, global rows and columns, causal), fast vs
 * reference, limit cases vs exact softmax, forward+backward vs dense attention over the same
 * candidate sets and finite differences (with globals, dilation, dropout), padding and causal
 * invariance, per-layer dilation, thread-count determinism, validation errors, sizes. */
#include "attn_harness.h"
#include "blocksparse_check.h"

extern const attn_ops attn_longformer;
#define OPS (&attn_longformer)

static bsc_params lfp(const char *window, const char *dilation, const char *global) {
    bsc_params p = bsc_defaults(OPS);
    if (window) bsc_set(OPS, &p, "window", window);
    if (dilation) bsc_set(OPS, &p, "dilation", dilation);
    if (global) bsc_set(OPS, &p, "global", global);
    return p;
}

typedef struct {
    int N, w, dil, causal, ng;
    const int *g;
    const uint8_t *mask;
} exp_ctx;

/* Paper §3.2 / attention.md §3.2, written independently of the kernel's tiling. */
static int expect_lf(const void *p, int b, int h, int i, int j) {
    const exp_ctx *c = p;
    if (c->mask && !c->mask[b * c->N + j]) return 0;
    for (int x = 0; x < c->ng; x++)
        if (c->g[x] == i || c->g[x] == j) return 1;
    for (int r = -c->w; r <= (c->causal ? 0 : c->w); r++)
        if (j == i + c->dil * r) return 1;
    return 0;
}

static void test_pattern(void **state) {
    (void)state;
    const int N = 29;
    uint8_t mask[2 * 29];
    for (int j = 0; j < 2 * N; j++) mask[j] = j < N ? 1 : (j - N) < 22;
    mask[9] = 0; /* a hole */
    static const int g1[] = {0, 17};
    struct {
        const char *w, *dil, *glob;
        int w_, dil_, causal, ng;
        const int *g;
    } cases[] = {
        {"3", "1", "[]", 3, 1, 0, 0, NULL},        {"2", "3", "[]", 2, 3, 0, 0, NULL},
        {"4", "1", "[17, 0, 17]", 4, 1, 0, 2, g1}, {"2", "2", "[0, 17]", 2, 2, 0, 2, g1},
        {"3", "1", "[]", 3, 1, 1, 0, NULL},        {"2", "4", "[]", 2, 4, 1, 0, NULL},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        bsc_params p = lfp(cases[c].w, cases[c].dil, cases[c].glob);
        exp_ctx e = {N, cases[c].w_, cases[c].dil_, cases[c].causal, cases[c].ng, cases[c].g, mask};
        int bad = bsc_pattern_mismatches(OPS, p.b, bsc_shape(2, 2, N, N, cases[c].causal), mask, expect_lf, &e);
        if (bad) print_error("pattern case %zu: %d mismatches\n", c, bad);
        assert_int_equal(bad, 0);
        e.mask = NULL;
        assert_int_equal(bsc_pattern_mismatches(OPS, p.b, bsc_shape(1, 1, N, N, cases[c].causal), NULL, expect_lf, &e), 0);
    }
}

static void test_fast_vs_reference(void **state) {
    (void)state;
    struct {
        const char *w, *dil, *glob;
        int N, Dh, causal;
    } cases[] = {
        {"5", "1", "[]", 77, 16, 0},      {"5", "1", "[]", 77, 16, 1},         {"3", "2", "[0]", 64, 8, 0},
        {"8", "3", "[1, 40, 63]", 70, 16, 0}, {"40", "1", "[0, 5]", 150, 16, 0}, {"4", "5", "[]", 61, 4, 1},
        {"0", "1", "[3]", 33, 8, 0},     {"6", "1", "[0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40, 42, 44, 46, 48, 50, 52, 54, 56, 58, 60, 89]", 90, 8, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        bsc_params p = lfp(cases[c].w, cases[c].dil, cases[c].glob);
        ah_layer *a = ah_new(OPS, p.b, bsc_shape(2, 3, cases[c].N, cases[c].Dh, cases[c].causal), 5 + c);
        ah_fill_qkv(a, 11 + c);
        ah_random_mask(a, 0.4f, 3 + c);
        double e = ah_fast_vs_reference(a);
        print_message("longformer fast vs reference case %zu: %.3g\n", c, e);
        assert_true(e < 1e-5);
        ah_free(a);
    }
}

static void test_limit_exact_softmax(void **state) {
    (void)state;
    /* window >= N (with and without globals, causal, masks), and every position global */
    struct {
        const char *w, *glob;
        int causal;
    } cases[] = {{"60", "[]", 0}, {"60", "[0, 7]", 0}, {"59", "[]", 1}, {"1000", "[]", 1}, {"0", "[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31]", 0}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int masked = 0; masked <= 1; masked++) {
            bsc_params p = lfp(cases[c].w, "1", cases[c].glob);
            int N = c == 4 ? 32 : 60;
            ah_layer *a = ah_new(OPS, p.b, bsc_shape(2, 2, N, 16, cases[c].causal), 7);
            ah_fill_qkv(a, 8);
            if (masked) ah_random_mask(a, 0.5f, 9);
            double e = ah_vs_exact_softmax(a);
            print_message("longformer limit case %zu (mask %d) vs exact softmax: %.3g\n", c, masked, e);
            assert_true(e < 1e-5);
            ah_free(a);
        }
}

static void test_grad_fd(void **state) {
    (void)state;
    struct {
        const char *w, *dil, *glob;
        int causal, dropout;
    } cases[] = {{"2", "1", "[]", 0, 0}, {"2", "2", "[0, 6]", 0, 0}, {"3", "1", "[]", 1, 0},
                 {"1", "3", "[]", 1, 0}, {"2", "1", "[4]", 0, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        bsc_params p = lfp(cases[c].w, cases[c].dil, cases[c].glob);
        ah_layer *a = ah_new(OPS, p.b, bsc_shape(2, 2, 14, 4, cases[c].causal), 21 + c);
        ah_fill_qkv(a, 31 + c);
        ah_random_mask(a, 0.3f, 41 + c);
        for (size_t x = 0; x < a->nq; x++) a->q[x] *= 0.5f; /* flatter rows: no FD-noise-sized gradients */
        if (cases[c].dropout) {
            a->L.training = 1;
            a->L.dropout = 0.2f;
            a->L.step = 5;
        }
        double g = ah_grad_check(a, 200);
        print_message("longformer finite-difference check case %zu: %.3g\n", c, g);
        assert_true(g < 2e-2);
        ah_free(a);
    }
}

static void test_padding_invariance(void **state) {
    (void)state;
    bsc_params p = lfp("4", "2", "[0, 3]"), pc = lfp("5", "1", "[]");
    double e0 = ah_padding_invariance(OPS, p.b, bsc_shape(2, 2, 37, 8, 0), 19, 5);
    double e1 = ah_padding_invariance(OPS, pc.b, bsc_shape(2, 2, 37, 8, 1), 7, 6);
    print_message("longformer padding invariance: %.3g, causal %.3g\n", e0, e1);
    assert_true(e0 < 1e-6 && e1 < 1e-6);
}

static void test_causal_invariance(void **state) {
    (void)state;
    const char *dil[] = {"1", "3"};
    for (int x = 0; x < 2; x++) {
        bsc_params p = lfp("6", dil[x], "[]");
        ah_layer *a = ah_new(OPS, p.b, bsc_shape(2, 2, 50, 8, 1), 4);
        ah_fill_qkv(a, 5);
        assert_true(ah_causal_invariance(a, 23, 9) == 0.0);
        ah_free(a);
    }
}

/* Per-layer dilation: layer l uses dilation[l]. */
static void test_dilation_per_layer(void **state) {
    (void)state;
    bsc_params p = lfp("2", "[1, 3]", "[]"), p3 = lfp("2", "3", "[]");
    attn_shape s = bsc_shape(1, 2, 31, 8, 0);
    s.n_layers = 2;
    s.layer = 1;
    ah_layer *a = ah_new(OPS, p.b, s, 3), *b = ah_new(OPS, p3.b, s, 3);
    ah_fill_qkv(a, 4);
    ah_fill_qkv(b, 4);
    ah_forward(a);
    ah_forward(b);
    assert_memory_equal(a->out, b->out, a->nq * sizeof(float));
    a->L.shape.layer = 0; /* dilation 1 now: different output */
    ah_forward(a);
    assert_true(tu_rel_err(a->out, b->out, a->nq) > 1e-2);
    ah_free(a);
    ah_free(b);
}

static void test_determinism(void **state) {
    (void)state;
    bsc_params p = lfp("9", "2", "[0, 11]");
    ah_layer *a = ah_new(OPS, p.b, bsc_shape(2, 4, 301, 16, 0), 4); /* above the size where the kernel goes parallel */
    ah_fill_qkv(a, 5);
    ah_random_mask(a, 0.3f, 6);
    a->L.training = 1, a->L.dropout = 0.1f;
    assert_true(bsc_thread_determinism(a));
    ah_free(a);
}

static void test_dense_backward(void **state) {
    (void)state;
    struct {
        const char *w, *dil, *glob;
        int N, causal, dropout;
    } cases[] = {{"4", "1", "[]", 45, 0, 0},     {"3", "2", "[0, 20]", 45, 0, 0}, {"5", "1", "[]", 45, 1, 0},
                 {"2", "3", "[]", 46, 1, 0},     {"6", "1", "[1, 30]", 50, 0, 1}, {"50", "1", "[2]", 40, 0, 0}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        bsc_params p = lfp(cases[c].w, cases[c].dil, cases[c].glob);
        ah_layer *a = ah_new(OPS, p.b, bsc_shape(2, 2, cases[c].N, 8, cases[c].causal), 3 + c);
        ah_fill_qkv(a, 13 + c);
        ah_random_mask(a, 0.4f, 23 + c);
        if (cases[c].dropout) a->L.training = 1, a->L.dropout = 0.15f, a->L.step = 11;
        double e = bsc_dense_check(a);
        print_message("longformer forward+backward vs dense over the same sets, case %zu: %.3g\n", c, e);
        assert_true(e < 1e-5);
        ah_free(a);
    }
}

static void test_validate_and_sizes(void **state) {
    (void)state;
    char err[256] = "";
    bsc_params p = lfp("4", "1", "[0]");
    attn_shape s = bsc_shape(2, 3, 10, 8, 1);
    assert_int_equal(OPS->validate(p.b, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "global"));
    s.causal = 0;
    assert_int_equal(OPS->validate(p.b, &s, err, sizeof err), 0);
    bsc_params pg = lfp("4", "1", "[12]");
    assert_int_equal(OPS->validate(pg.b, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "global"));
    bsc_params pd = lfp("4", "[1, 2, 3]", "[]");
    s.n_layers = 2;
    assert_int_equal(OPS->validate(pd.b, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "dilation"));
    s.n_layers = 3;
    s.layer = 2;
    assert_int_equal(OPS->validate(pd.b, &s, err, sizeof err), 0);
    s.Nk = 12;
    assert_int_equal(OPS->validate(pd.b, &s, err, sizeof err), -1);

    /* defaults: one-sided 256 (LRA's 512), no dilation, no globals */
    bsc_params d = bsc_defaults(OPS);
    char buf[64];
    assert_string_equal(bsc_get(OPS, &d, "window", buf, sizeof buf), "256");
    assert_string_equal(bsc_get(OPS, &d, "dilation", buf, sizeof buf), "[1]");
    assert_string_equal(bsc_get(OPS, &d, "global", buf, sizeof buf), "[]");

    /* FLOPs: N = 10, w = 2, no globals: band sizes 3,4,5,5,5,5,5,5,4,3 = 44 pairs */
    bsc_params pf = lfp("2", "1", "[]");
    attn_shape sf = bsc_shape(2, 3, 10, 8, 0);
    assert_true(fabs(OPS->flops(pf.b, &sf) - 2 * 3 * 44.0 * 4 * 8) < 1e-9);
    assert_int_equal(OPS->cache_bytes(pf.b, &sf), 2 * 3 * 10 * sizeof(float));
    attn_shape s1 = bsc_shape(4, 4, 1024, 16, 0), s2 = bsc_shape(4, 4, 2048, 16, 0);
    size_t a1 = OPS->scratch_bytes(pf.b, &s1, 2), a2 = OPS->scratch_bytes(pf.b, &s2, 2);
    assert_true(a2 > a1 && a2 < 2 * a1 + 4096);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pattern),          cmocka_unit_test(test_fast_vs_reference),
        cmocka_unit_test(test_limit_exact_softmax), cmocka_unit_test(test_grad_fd),
        cmocka_unit_test(test_padding_invariance), cmocka_unit_test(test_causal_invariance),
        cmocka_unit_test(test_dilation_per_layer), cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_dense_backward),
        cmocka_unit_test(test_validate_and_sizes),
    };
    return cmocka_run_group_tests_name("longformer", tests, NULL, NULL);
}
