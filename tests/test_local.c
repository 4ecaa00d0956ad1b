/* test_local.c - block-local attention (attention/local.c): the candidate sets read off the output
 * (contiguous blocks and LRA's strided quirk), fast vs reference, limit cases vs exact softmax,
 * forward+backward vs dense attention over the same sets, finite differences, padding and causal
 * invariance, fully padded rows, thread-count determinism, sizes and validation. */
#include "attn_harness.h"
#include "blocksparse_check.h"

extern const attn_ops attn_local;
#define OPS (&attn_local)

static bsc_params lp(int bs, int strided) {
    bsc_params p = bsc_defaults(OPS);
    bsc_seti(OPS, &p, "block_size", bs);
    bsc_set(OPS, &p, "lra_strided", strided ? "true" : "false");
    return p;
}

typedef struct {
    int N, bs, causal;
    const uint8_t *mask;
} exp_ctx;

/* Image Transformer 1D local / attention.md §2.1: same block, j <= i when causal. */
static int expect_contiguous(const void *p, int b, int h, int i, int j) {
    const exp_ctx *c = p;
    if (c->causal && j > i) return 0;
    if (c->mask && !c->mask[b * c->N + j]) return 0;
    return i / c->bs == j / c->bs;
}

/* LRA's reshape (bs, N, ...) -> (bs, block_size, N/block_size, ...), attention over axis 1:
 * element (i1, i2) is token i1*nb + i2, so a group is fixed i2; the mask reshaped to
 * (bs*nb, block_size) gives member i1 of group i2 the flag of token i2*block_size + i1. */
static int expect_lra_strided(const void *p, int b, int h, int i, int j) {
    const exp_ctx *c = p;
    int nb = c->N / c->bs; /* N % block_size == 0 here, as in LRA */
    if (c->causal && j > i) return 0;
    if (i % nb != j % nb) return 0;
    int i1 = j / nb, i2 = j % nb;
    return !c->mask || c->mask[b * c->N + i2 * c->bs + i1];
}

static void test_pattern_contiguous(void **state) {
    (void)state;
    const int N = 23; /* blocks of 5: 5,5,5,5,3 (the last padded internally) */
    uint8_t mask[2 * 23];
    for (int j = 0; j < 2 * N; j++) mask[j] = 1;
    mask[3] = 0;                                   /* a hole in sequence 0 */
    for (int j = 19; j < N; j++) mask[N + j] = 0;  /* right padding in sequence 1 */
    bsc_params p = lp(5, 0);
    for (int causal = 0; causal <= 1; causal++) {
        exp_ctx e = {N, 5, causal, mask};
        assert_int_equal(bsc_pattern_mismatches(OPS, p.b, bsc_shape(2, 2, N, N, causal), mask, expect_contiguous, &e), 0);
        e.mask = NULL;
        assert_int_equal(bsc_pattern_mismatches(OPS, p.b, bsc_shape(2, 1, N, N, causal), NULL, expect_contiguous, &e), 0);
    }
}

static void test_pattern_lra_strided(void **state) {
    (void)state;
    const int N = 12, bs = 4; /* nb = 3 groups: {0,3,6,9}, {1,4,7,10}, {2,5,8,11} */
    uint8_t mask[12];
    for (int j = 0; j < N; j++) mask[j] = 1;
    mask[5] = 0; /* LRA masks member 1 of group 1 (token 4), not token 5 */
    bsc_params p = lp(bs, 1);
    for (int causal = 0; causal <= 1; causal++) {
        exp_ctx e = {N, bs, causal, mask};
        assert_int_equal(bsc_pattern_mismatches(OPS, p.b, bsc_shape(1, 1, N, N, causal), mask, expect_lra_strided, &e), 0);
    }
    /* the quirk by hand: row 1 sees tokens 1, 7, 10 (token 4 masked through mask[5]); token 5
     * itself stays visible to its own group */
    uint8_t *vis = bsc_candidates(OPS, p.b, bsc_shape(1, 1, N, N, 0), mask, 1);
    const uint8_t *r1 = vis + 1 * N, *r2 = vis + 2 * N;
    assert_true(r1[1] && r1[7] && r1[10] && !r1[4] && !r1[0] && !r1[2]);
    assert_true(r2[2] && r2[5] && r2[8] && r2[11]);
    free(vis);
}

static void test_fast_vs_reference(void **state) {
    (void)state;
    const int cases[][5] = {/* N, block_size, causal, Dh, lra_strided */
                            {37, 8, 0, 16, 0}, {37, 8, 1, 16, 0}, {100, 50, 0, 8, 0}, {70, 33, 1, 4, 0},
                            {64, 100, 0, 16, 0}, {60, 6, 0, 16, 1}, {61, 6, 1, 8, 1}, {200, 40, 0, 16, 0},
                            {130, 70, 0, 16, 0}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        bsc_params p = lp(cases[c][1], cases[c][4]);
        ah_layer *a = ah_new(OPS, p.b, bsc_shape(2, 3, cases[c][0], cases[c][3], cases[c][2]), 5 + c);
        ah_fill_qkv(a, 11 + c);
        ah_random_mask(a, 0.4f, 3 + c);
        double e = ah_fast_vs_reference(a);
        print_message("local fast vs reference case %zu: %.3g\n", c, e);
        assert_true(e < 1e-5);
        ah_free(a);
    }
}

static void test_limit_exact_softmax(void **state) {
    (void)state;
    for (int causal = 0; causal <= 1; causal++)
        for (int masked = 0; masked <= 1; masked++)
            for (int strided = 0; strided <= 1; strided++) {
                bsc_params p = lp(strided ? 50 : 64, strided); /* one block (group) covers N = 50 */
                ah_layer *a = ah_new(OPS, p.b, bsc_shape(2, 2, 50, 16, causal), 7);
                ah_fill_qkv(a, 8);
                if (masked) ah_random_mask(a, 0.5f, 9);
                double e = ah_vs_exact_softmax(a);
                print_message("local (block >= N, causal %d, mask %d, strided %d) vs exact softmax: %.3g\n", causal,
                              masked, strided, e);
                assert_true(e < 1e-5);
                ah_free(a);
            }
}

static void test_dense_backward(void **state) {
    (void)state;
    const int cases[][6] = {/* N, block_size, causal, strided, dropout, Dh */
                            {45, 8, 0, 0, 0, 16}, {45, 8, 1, 0, 0, 16}, {40, 5, 0, 1, 0, 8},
                            {41, 5, 1, 1, 0, 8},  {45, 8, 0, 0, 1, 16}, {70, 40, 1, 0, 1, 4},
                            {50, 20, 0, 0, 0, 20}, {50, 20, 1, 0, 0, 48}, {40, 13, 0, 0, 0, 80}, {40, 13, 1, 1, 0, 33}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        bsc_params p = lp(cases[c][1], cases[c][3]);
        ah_layer *a = ah_new(OPS, p.b, bsc_shape(2, 2, cases[c][0], cases[c][5], cases[c][2]), 3 + c);
        ah_fill_qkv(a, 13 + c);
        ah_random_mask(a, 0.4f, 23 + c);
        if (cases[c][4]) a->L.training = 1, a->L.dropout = 0.15f, a->L.step = 11;
        double e = bsc_dense_check(a);
        print_message("local forward+backward vs dense over the same sets, case %zu: %.3g\n", c, e);
        assert_true(e < 1e-5);
        ah_free(a);
    }
}

static void test_grad_fd(void **state) {
    (void)state;
    for (int c = 0; c < 4; c++) {
        bsc_params p = lp(c == 3 ? 4 : 5, c == 3);
        ah_layer *a = ah_new(OPS, p.b, bsc_shape(2, 2, 13, 4, c & 1), 21 + c);
        ah_fill_qkv(a, 31 + c);
        ah_random_mask(a, 0.3f, 41 + c);
        for (size_t x = 0; x < a->nq; x++) a->q[x] *= 0.5f; /* flatter rows: no FD-noise-sized gradients */
        if (c == 2) a->L.training = 1, a->L.dropout = 0.2f, a->L.step = 3;
        double g = ah_grad_check(a, 200);
        print_message("local finite-difference check case %d: %.3g\n", c, g);
        assert_true(g < 2e-2);
        ah_free(a);
    }
}

static void test_padding_invariance(void **state) {
    (void)state;
    bsc_params p = lp(8, 0);
    double e0 = ah_padding_invariance(OPS, p.b, bsc_shape(2, 2, 29, 8, 0), 13, 5);
    double e1 = ah_padding_invariance(OPS, p.b, bsc_shape(2, 2, 29, 8, 1), 3, 6);
    print_message("local padding invariance: %.3g, causal %.3g\n", e0, e1);
    assert_true(e0 < 1e-6 && e1 < 1e-6);
}

static void test_causal_invariance(void **state) {
    (void)state;
    for (int strided = 0; strided <= 1; strided++) {
        bsc_params p = lp(7, strided);
        ah_layer *a = ah_new(OPS, p.b, bsc_shape(2, 2, 40, 8, 1), 4);
        ah_fill_qkv(a, 5);
        assert_true(ah_causal_invariance(a, 17, 9) == 0.0);
        ah_free(a);
    }
}

/* A fully padded sequence: zero output, zero (finite) gradients. */
static void test_all_padded(void **state) {
    (void)state;
    bsc_params p = lp(6, 0);
    ah_layer *a = ah_new(OPS, p.b, bsc_shape(2, 2, 20, 8, 0), 4);
    ah_fill_qkv(a, 5);
    a->mask = malloc(40);
    memset(a->mask, 1, 20);
    memset(a->mask + 20, 0, 20);
    ah_forward(a);
    a->L.ops->backward(&a->L, a->q, a->k, a->v, a->mask, a->out, a->dout, a->dq, a->dk, a->dv);
    size_t half = a->nq / 2;
    for (size_t x = half; x < a->nq; x++) {
        assert_true(a->out[x] == 0.0f);
        assert_true(a->dq[x] == 0.0f && a->dk[x] == 0.0f && a->dv[x] == 0.0f);
    }
    for (size_t x = 0; x < half; x++) assert_true(isfinite(a->out[x]) && isfinite(a->dq[x]) && isfinite(a->dk[x]));
    ah_free(a);
}

static void test_determinism(void **state) {
    (void)state;
    for (int strided = 0; strided <= 1; strided++) {
        bsc_params p = lp(16, strided);
        ah_layer *a = ah_new(OPS, p.b, bsc_shape(2, 4, 300, 16, 1), 4); /* above the size where the kernel goes parallel */
        ah_fill_qkv(a, 5);
        ah_random_mask(a, 0.3f, 6);
        a->L.training = 1, a->L.dropout = 0.1f;
        assert_true(bsc_thread_determinism(a));
        ah_free(a);
    }
}

static void test_sizes_and_validate(void **state) {
    (void)state;
    bsc_params p = lp(4, 0);
    attn_shape s = bsc_shape(2, 3, 10, 8, 0);
    assert_int_equal(OPS->cache_bytes(p.b, &s), 2 * 3 * 10 * sizeof(float));
    /* blocks 4, 4, 2: 16 + 16 + 4 pairs, 4*Dh FLOPs each; causal 10 + 10 + 3 */
    assert_true(fabs(OPS->flops(p.b, &s) - 2 * 3 * 36.0 * 4 * 8) < 1e-9);
    s.causal = 1;
    assert_true(fabs(OPS->flops(p.b, &s) - 2 * 3 * 23.0 * 4 * 8) < 1e-9);
    attn_shape s1 = bsc_shape(4, 4, 1024, 16, 0), s2 = bsc_shape(4, 4, 2048, 16, 0);
    size_t a1 = OPS->scratch_bytes(p.b, &s1, 2), a2 = OPS->scratch_bytes(p.b, &s2, 2);
    assert_true(a2 > a1 && a2 < 2 * a1 + 4096); /* linear in N */
    char err[256] = "";
    s.Nk = 12;
    assert_int_equal(OPS->validate(p.b, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "memory"));
    assert_true(OPS->caps & ATTN_CAP_CAUSAL);
    assert_true(OPS->caps & ATTN_CAP_KEY_MASK);
    bsc_params d = bsc_defaults(OPS);
    char buf[64];
    assert_string_equal(bsc_get(OPS, &d, "block_size", buf, sizeof buf), "50");
    assert_string_equal(bsc_get(OPS, &d, "lra_strided", buf, sizeof buf), "false");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pattern_contiguous), cmocka_unit_test(test_pattern_lra_strided),
        cmocka_unit_test(test_fast_vs_reference),  cmocka_unit_test(test_limit_exact_softmax),
        cmocka_unit_test(test_dense_backward),     cmocka_unit_test(test_grad_fd),
        cmocka_unit_test(test_padding_invariance), cmocka_unit_test(test_causal_invariance),
        cmocka_unit_test(test_all_padded),         cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_sizes_and_validate),
    };
    return cmocka_run_group_tests_name("local", tests, NULL, NULL);
}
