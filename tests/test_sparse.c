/* test_sparse.c - Sparse Transformer attention (attention/sparse.c): the fixed and strided
 * candidate sets read off the output against the paper's definitions (causal, bidirectional,
 * LRA's variant), fast vs reference, limit cases vs exact softmax, forward+backward vs dense
 * attention over the same candidate sets, finite differences, padding and causal invariance,
 * thread-count determinism, validation, sizes. */
#include "attn_harness.h"
#include "blocksparse_check.h"

extern const attn_ops attn_sparse;
#define OPS (&attn_sparse)

static bsc_params spp(const char *pattern, int l, int c, int lra) {
    bsc_params p = bsc_defaults(OPS);
    bsc_set(OPS, &p, "pattern", pattern);
    bsc_seti(OPS, &p, "stride", l);
    bsc_seti(OPS, &p, "c", c);
    bsc_set(OPS, &p, "lra_causal", lra ? "true" : "false");
    return p;
}

typedef struct {
    int N, l, c, causal, strided, lra;
    const uint8_t *mask;
} exp_ctx;

/* Child et al. §4.2 (attention.md §9.1), as sets over j; the bidirectional forms drop j <= i. */
static int expect_sparse(const void *p, int b, int h, int i, int j) {
    const exp_ctx *e = p;
    if (e->mask && !e->mask[b * e->N + j]) return 0;
    if (e->causal && j > i) return 0;
    if (e->strided) {
        int a1 = e->causal ? (i - e->l < j && j <= i) : (i - e->l < j && j < i + e->l);
        int a2 = ((i - j) % e->l + e->l) % e->l == 0;
        return a1 || a2;
    }
    int a1 = j / e->l == i / e->l;
    int a2 = j % e->l >= e->l - e->c || (e->lra && j % e->l == 0);
    return a1 || a2;
}

static void test_pattern(void **state) {
    (void)state;
    const int N = 31;
    uint8_t mask[2 * 31];
    for (int j = 0; j < 2 * N; j++) mask[j] = j < N ? 1 : (j - N) < 24;
    mask[6] = 0;
    const int cases[][5] = {/* strided, l, c, causal(shape), lra */
                            {0, 6, 2, 0, 0}, {0, 6, 2, 1, 0}, {0, 5, 1, 0, 1}, {0, 7, 7, 1, 0},
                            {1, 5, 0, 0, 0}, {1, 5, 0, 1, 0}, {1, 4, 0, 0, 1}, {1, 40, 0, 0, 0}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        bsc_params p = spp(cases[c][0] ? "strided" : "fixed", cases[c][1], cases[c][2] ? cases[c][2] : 1, cases[c][4]);
        exp_ctx e = {N, cases[c][1], cases[c][2] ? cases[c][2] : 1, cases[c][3] || cases[c][4], cases[c][0], cases[c][4],
                     mask};
        int bad = bsc_pattern_mismatches(OPS, p.b, bsc_shape(2, 2, N, N, cases[c][3]), mask, expect_sparse, &e);
        if (bad) print_error("pattern case %zu: %d mismatches\n", c, bad);
        assert_int_equal(bad, 0);
        e.mask = NULL;
        assert_int_equal(bsc_pattern_mismatches(OPS, p.b, bsc_shape(1, 1, N, N, cases[c][3]), NULL, expect_sparse, &e), 0);
    }
}

static void test_fast_vs_reference(void **state) {
    (void)state;
    const int cases[][6] = {/* strided, l, c, causal, N, Dh */
                            {0, 10, 3, 0, 95, 16}, {0, 10, 3, 1, 95, 16}, {0, 50, 10, 0, 180, 8},
                            {0, 7, 2, 1, 64, 4},   {1, 9, 1, 0, 95, 16},  {1, 9, 1, 1, 95, 16},
                            {1, 40, 1, 0, 130, 8}, {1, 3, 1, 1, 70, 8}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int lra = 0; lra <= 1; lra++) {
            bsc_params p = spp(cases[c][0] ? "strided" : "fixed", cases[c][1], cases[c][2], lra);
            ah_layer *a = ah_new(OPS, p.b, bsc_shape(2, 2, cases[c][4], cases[c][5], cases[c][3]), 5 + c);
            ah_fill_qkv(a, 11 + c);
            ah_random_mask(a, 0.4f, 3 + c);
            double e = ah_fast_vs_reference(a);
            print_message("sparse fast vs reference case %zu lra %d: %.3g\n", c, lra, e);
            assert_true(e < 1e-5);
            ah_free(a);
        }
}

static void test_limit_exact_softmax(void **state) {
    (void)state;
    /* block/stride >= N (one block; band covers all), every column a summary column, and
     * lra_causal in a non-causal shape equals causal softmax */
    struct {
        const char *pat;
        int l, c, causal, lra, want_causal;
    } cases[] = {{"fixed", 64, 4, 0, 0, 0},   {"fixed", 64, 4, 1, 0, 1},  {"fixed", 8, 8, 0, 0, 0},
                 {"fixed", 8, 8, 1, 0, 1},    {"strided", 50, 1, 0, 0, 0}, {"strided", 50, 1, 1, 0, 1},
                 {"strided", 64, 1, 0, 1, 1}, {"fixed", 50, 10, 0, 1, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int masked = 0; masked <= 1; masked++) {
            bsc_params p = spp(cases[c].pat, cases[c].l, cases[c].c, cases[c].lra);
            ah_layer *a = ah_new(OPS, p.b, bsc_shape(2, 2, 50, 16, cases[c].causal), 7);
            ah_fill_qkv(a, 8);
            if (masked) ah_random_mask(a, 0.5f, 9);
            double e;
            if (cases[c].want_causal && !cases[c].causal) {
                /* compare with exact causal softmax: run the reference of softmax on a causal shape */
                ah_forward(a);
                float *ref = calloc(a->nq, sizeof(float));
                unsigned char sp[ATTN_PARAMS_MAX] __attribute__((aligned(16)));
                schema_defaults(attn_softmax.schema, attn_softmax.n_schema, sp);
                attn_layer S = a->L;
                S.ops = &attn_softmax;
                S.params = sp;
                S.shape.causal = 1;
                attn_softmax.reference(&S, a->q, a->k, a->v, a->mask, ref);
                e = ah_compare_rows(a, a->out, ref);
                free(ref);
            } else {
                e = ah_vs_exact_softmax(a);
            }
            print_message("sparse limit case %zu (mask %d) vs exact softmax: %.3g\n", c, masked, e);
            assert_true(e < 1e-5);
            ah_free(a);
        }
}

static void test_grad_fd(void **state) {
    (void)state;
    const int cases[][5] = {/* strided, l, c, causal, lra/dropout */
                            {0, 4, 1, 0, 0}, {0, 4, 2, 1, 0}, {1, 3, 1, 0, 0}, {1, 3, 1, 1, 0}, {0, 5, 2, 0, 2}, {1, 4, 1, 0, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        bsc_params p = spp(cases[c][0] ? "strided" : "fixed", cases[c][1], cases[c][2], cases[c][4] == 1);
        ah_layer *a = ah_new(OPS, p.b, bsc_shape(2, 2, 15, 4, cases[c][3]), 21 + c);
        ah_fill_qkv(a, 31 + c);
        ah_random_mask(a, 0.3f, 41 + c);
        for (size_t x = 0; x < a->nq; x++) a->q[x] *= 0.5f; /* flatter rows: no FD-noise-sized gradients */
        if (cases[c][4] == 2) {
            a->L.training = 1;
            a->L.dropout = 0.2f;
            a->L.step = 7;
        }
        double g = ah_grad_check(a, 200);
        print_message("sparse finite-difference check case %zu: %.3g\n", c, g);
        assert_true(g < 2e-2);
        ah_free(a);
    }
}

static void test_padding_invariance(void **state) {
    (void)state;
    bsc_params pf = spp("fixed", 6, 2, 0), ps = spp("strided", 5, 1, 0), pl = spp("fixed", 6, 2, 1);
    double e0 = ah_padding_invariance(OPS, pf.b, bsc_shape(2, 2, 40, 8, 0), 17, 5);
    double e1 = ah_padding_invariance(OPS, ps.b, bsc_shape(2, 2, 40, 8, 0), 11, 6);
    double e2 = ah_padding_invariance(OPS, pl.b, bsc_shape(2, 2, 40, 8, 0), 9, 7);
    double e3 = ah_padding_invariance(OPS, ps.b, bsc_shape(2, 2, 40, 8, 1), 9, 8);
    print_message("sparse padding invariance: fixed %.3g, strided %.3g, lra %.3g, causal strided %.3g\n", e0, e1, e2,
                  e3);
    assert_true(e0 < 1e-6 && e1 < 1e-6 && e2 < 1e-6 && e3 < 1e-6);
}

static void test_causal_invariance(void **state) {
    (void)state;
    bsc_params pf = spp("fixed", 6, 2, 0), ps = spp("strided", 5, 1, 0), pl = spp("fixed", 6, 2, 1);
    const bsc_params *ps_[] = {&pf, &ps};
    for (int x = 0; x < 2; x++) {
        ah_layer *a = ah_new(OPS, ps_[x]->b, bsc_shape(2, 2, 47, 8, 1), 4);
        ah_fill_qkv(a, 5);
        assert_true(ah_causal_invariance(a, 20, 9) == 0.0);
        ah_free(a);
    }
    /* lra_causal: causal even with shape.causal = 0 */
    ah_layer *a = ah_new(OPS, pl.b, bsc_shape(2, 2, 47, 8, 0), 4);
    ah_fill_qkv(a, 5);
    assert_true(ah_causal_invariance(a, 20, 9) == 0.0);
    ah_free(a);
}

static void test_determinism(void **state) {
    (void)state;
    const char *pats[] = {"fixed", "strided"};
    for (int x = 0; x < 2; x++) {
        bsc_params p = spp(pats[x], 9, 3, 0);
        ah_layer *a = ah_new(OPS, p.b, bsc_shape(2, 4, 300, 16, 0), 4); /* above the size where the kernel goes parallel */
        ah_fill_qkv(a, 5);
        ah_random_mask(a, 0.3f, 6);
        a->L.training = 1, a->L.dropout = 0.1f;
        assert_true(bsc_thread_determinism(a));
        ah_free(a);
    }
}

static void test_dense_backward(void **state) {
    (void)state;
    const int cases[][6] = {/* strided, l, c, causal, lra, dropout */
                            {0, 6, 2, 0, 0, 0}, {0, 6, 2, 1, 0, 0}, {0, 7, 3, 0, 1, 0}, {1, 5, 1, 0, 0, 0},
                            {1, 5, 1, 1, 0, 0}, {1, 6, 1, 0, 1, 0}, {0, 6, 2, 0, 0, 1}, {1, 5, 1, 0, 0, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        bsc_params p = spp(cases[c][0] ? "strided" : "fixed", cases[c][1], cases[c][2], cases[c][4]);
        ah_layer *a = ah_new(OPS, p.b, bsc_shape(2, 2, 47, 8, cases[c][3]), 3 + c);
        ah_fill_qkv(a, 13 + c);
        ah_random_mask(a, 0.4f, 23 + c);
        if (cases[c][5]) a->L.training = 1, a->L.dropout = 0.15f, a->L.step = 11;
        double e = bsc_dense_check(a);
        print_message("sparse forward+backward vs dense over the same sets, case %zu: %.3g\n", c, e);
        assert_true(e < 1e-5);
        ah_free(a);
    }
}

static void test_validate_and_sizes(void **state) {
    (void)state;
    char err[256] = "";
    bsc_params p = spp("fixed", 8, 9, 0);
    attn_shape s = bsc_shape(2, 3, 40, 8, 0);
    assert_int_equal(OPS->validate(p.b, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "c:"));
    bsc_params ok = spp("fixed", 8, 8, 0);
    assert_int_equal(OPS->validate(ok.b, &s, err, sizeof err), 0);
    s.Nk = 41;
    assert_int_equal(OPS->validate(ok.b, &s, err, sizeof err), -1);
    assert_true(OPS->caps & ATTN_CAP_CAUSAL);

    bsc_params d = bsc_defaults(OPS);
    char buf[64];
    assert_string_equal(bsc_get(OPS, &d, "pattern", buf, sizeof buf), "fixed");
    assert_string_equal(bsc_get(OPS, &d, "stride", buf, sizeof buf), "128");
    assert_string_equal(bsc_get(OPS, &d, "c", buf, sizeof buf), "32");
    assert_string_equal(bsc_get(OPS, &d, "lra_causal", buf, sizeof buf), "false");

    /* FLOPs equal 4*Dh times the candidate count, counted here by brute force over the pattern */
    const int cases[][5] = {{0, 6, 2, 0, 0}, {0, 6, 2, 1, 0}, {0, 5, 2, 0, 1}, {1, 5, 1, 0, 0}, {1, 5, 1, 1, 0}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        bsc_params pf = spp(cases[c][0] ? "strided" : "fixed", cases[c][1], cases[c][2], cases[c][4]);
        attn_shape sf = bsc_shape(2, 3, 37, 8, cases[c][3]);
        exp_ctx e = {37, cases[c][1], cases[c][2], cases[c][3] || cases[c][4], cases[c][0], cases[c][4], NULL};
        double pairs = 0;
        for (int i = 0; i < 37; i++)
            for (int j = 0; j < 37; j++) pairs += expect_sparse(&e, 0, 0, i, j);
        assert_true(fabs(OPS->flops(pf.b, &sf) - 2 * 3 * pairs * 4 * 8) < 1e-6);
    }
    attn_shape s1 = bsc_shape(4, 4, 1024, 16, 0), s2 = bsc_shape(4, 4, 2048, 16, 0);
    size_t a1 = OPS->scratch_bytes(ok.b, &s1, 2), a2 = OPS->scratch_bytes(ok.b, &s2, 2);
    assert_true(a2 > a1 && a2 < 2 * a1 + 4096);
    assert_int_equal(OPS->cache_bytes(ok.b, &s1), 4 * 4 * 1024 * sizeof(float));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pattern),            cmocka_unit_test(test_fast_vs_reference),
        cmocka_unit_test(test_limit_exact_softmax), cmocka_unit_test(test_grad_fd),
        cmocka_unit_test(test_padding_invariance), cmocka_unit_test(test_causal_invariance),
        cmocka_unit_test(test_determinism),        cmocka_unit_test(test_dense_backward),
        cmocka_unit_test(test_validate_and_sizes),
    };
    return cmocka_run_group_tests_name("sparse", tests, NULL, NULL);
}
