/* test_bigbird.c - BigBird ITC attention (attention/bigbird.c): the block structure read off the
 * output (global, window, random blocks; draws fixed in seed and layer, different per head),
 * fast vs reference, limit cases vs exact softmax, forward+backward vs dense attention over the
 * same candidate sets, finite differences, padding invariance (blocks follow the real length),
 * thread-count determinism, validation (no causal), sizes. */
#include "attn_harness.h"
#include "blocksparse_check.h"

extern const attn_ops attn_bigbird;
#define OPS (&attn_bigbird)

static bsc_params bbp(int bs, int r, int gb, int wb) {
    bsc_params p = bsc_defaults(OPS);
    bsc_seti(OPS, &p, "block_size", bs);
    bsc_seti(OPS, &p, "num_random_blocks", r);
    bsc_seti(OPS, &p, "global_blocks", gb);
    bsc_seti(OPS, &p, "window_blocks", wb);
    return p;
}

/* Check the ITC structure of every real query row; returns the number of violations. Counts
 * random-block differences between heads into *head_diff. */
static int check_structure(const uint8_t *vis, attn_shape s, const uint8_t *mask, int bs, int r, int gb, int wb,
                           int *head_diff) {
    const int N = s.N, hw = (wb - 1) / 2;
    int bad = 0;
    *head_diff = 0;
    for (int b = 0; b < s.B; b++) {
        int n = N;
        while (mask && n > 0 && !mask[b * N + n - 1]) n--;
        const int nbr = (n + bs - 1) / bs;
        for (int h = 0; h < s.H; h++)
            for (int i = 0; i < N; i++) {
                const uint8_t *row = vis + (((size_t)b * s.H + h) * N + i) * N;
                const int I = i / bs;
                if (I >= nbr) { /* padded block: output 0 */
                    for (int j = 0; j < N; j++) bad += row[j];
                    continue;
                }
                int isg = (gb >= 1 && I == 0) || (gb >= 2 && I == nbr - 1);
                int extra = 0, allowed = 0;
                for (int J = 0; J < nbr; J++) {
                    int want_all = isg || (gb >= 1 && J == 0) || (gb >= 2 && J == nbr - 1) || (J >= I - hw && J <= I + hw);
                    int seen = 0, cnt = 0;
                    for (int j = J * bs; j < (J + 1) * bs && j < N; j++) {
                        int real = !mask || mask[b * N + j];
                        if (!real) bad += row[j]; /* padding never visible */
                        if (real) cnt++, seen += row[j];
                    }
                    if (want_all) {
                        bad += seen != cnt; /* whole block visible */
                    } else {
                        allowed++;
                        if (seen) extra++, bad += seen != cnt; /* random blocks are whole blocks */
                        if (h > 0 && i % bs == 0) {
                            const uint8_t *row0 = vis + (((size_t)b * s.H + 0) * N + i) * N;
                            *head_diff += (row0[J * bs] != row[J * bs]);
                        }
                    }
                }
                for (int j = nbr * bs; j < N; j++) bad += row[j];
                if (!isg) {
                    /* exactly min(r, allowed) random blocks, unless a drawn block is all padding */
                    int want = r < allowed ? r : allowed;
                    if (extra > want) bad++;
                    if (!mask && extra != want) bad++;
                }
                /* rows of one block share one set */
                if (i % bs) bad += memcmp(row, row - N * (i % bs), (size_t)N) != 0;
            }
    }
    return bad;
}

static void test_structure(void **state) {
    (void)state;
    const int N = 62, bs = 4; /* 16 blocks, the last of 2 tokens */
    uint8_t mask[2 * 62];
    for (int j = 0; j < 2 * N; j++) mask[j] = j < N ? 1 : (j - N) < 45;
    mask[20] = 0; /* a hole */
    const int cfg[][3] = {{2, 2, 3}, {3, 1, 3}, {2, 0, 5}, {0, 2, 3}, {5, 2, 1}};
    for (size_t c = 0; c < sizeof cfg / sizeof cfg[0]; c++) {
        bsc_params p = bbp(bs, cfg[c][0], cfg[c][1], cfg[c][2]);
        attn_shape s = bsc_shape(2, 3, N, N, 0);
        for (int masked = 0; masked <= 1; masked++) {
            uint8_t *vis = bsc_candidates(OPS, p.b, s, masked ? mask : NULL, 7);
            int hd;
            int bad = check_structure(vis, s, masked ? mask : NULL, bs, cfg[c][0], cfg[c][1], cfg[c][2], &hd);
            if (bad) print_error("structure case %zu masked %d: %d violations\n", c, masked, bad);
            assert_int_equal(bad, 0);
            if (cfg[c][0] > 0) assert_true(hd > 0); /* heads draw different random blocks */
            free(vis);
        }
    }
}

/* The draws are fixed by (seed, layer): same seed and layer -> same sets; another layer or seed ->
 * different random blocks. Steps and calls do not change them. */
static void test_random_blocks_fixed(void **state) {
    (void)state;
    bsc_params p = bbp(4, 3, 2, 3);
    attn_shape s = bsc_shape(1, 2, 64, 64, 0);
    uint8_t *a = bsc_candidates(OPS, p.b, s, NULL, 7), *b = bsc_candidates(OPS, p.b, s, NULL, 7);
    const size_t n = (size_t)2 * 64 * 64;
    assert_memory_equal(a, b, n);
    uint8_t *c = bsc_candidates(OPS, p.b, s, NULL, 8);
    s.layer = 1;
    uint8_t *d = bsc_candidates(OPS, p.b, s, NULL, 7);
    assert_true(memcmp(a, c, n) != 0);
    assert_true(memcmp(a, d, n) != 0);
    free(a), free(b), free(c), free(d);
}

static void test_fast_vs_reference(void **state) {
    (void)state;
    const int cases[][7] = {/* N, bs, r, gb, wb, Dh, H */
                            {100, 8, 3, 2, 3, 16, 2}, {97, 8, 2, 1, 3, 8, 2}, {130, 16, 3, 2, 3, 16, 2},
                            {64, 64, 3, 2, 3, 16, 2}, {150, 6, 4, 0, 5, 4, 3}, {77, 40, 3, 2, 3, 16, 2},
                            {200, 10, 0, 2, 1, 8, 2}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        bsc_params p = bbp(cases[c][1], cases[c][2], cases[c][3], cases[c][4]);
        ah_layer *a = ah_new(OPS, p.b, bsc_shape(2, cases[c][6], cases[c][0], cases[c][5], 0), 5 + c);
        ah_fill_qkv(a, 11 + c);
        ah_random_mask(a, 0.4f, 3 + c);
        double e = ah_fast_vs_reference(a);
        print_message("bigbird fast vs reference case %zu: %.3g\n", c, e);
        assert_true(e < 1e-5);
        ah_free(a);
    }
}

static void test_limit_exact_softmax(void **state) {
    (void)state;
    /* 4 blocks: globals + window cover all; 10 blocks with r = 6 >= the blocks left (6 next to the edges); one block; a window
     * covering everything without globals */
    const int cases[][5] = {{60, 16, 0, 2, 3}, {100, 10, 6, 2, 3}, {50, 64, 3, 2, 3}, {45, 5, 0, 0, 17}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        for (int masked = 0; masked <= 1; masked++) {
            bsc_params p = bbp(cases[c][1], cases[c][2], cases[c][3], cases[c][4]);
            ah_layer *a = ah_new(OPS, p.b, bsc_shape(2, 2, cases[c][0], 16, 0), 7);
            ah_fill_qkv(a, 8);
            if (masked) ah_random_mask(a, 0.5f, 9);
            double e = ah_vs_exact_softmax(a);
            print_message("bigbird limit case %zu (mask %d) vs exact softmax: %.3g\n", c, masked, e);
            assert_true(e < 1e-5);
            ah_free(a);
        }
}

static void test_grad_fd(void **state) {
    (void)state;
    const int cases[][5] = {/* bs, r, gb, wb, dropout */ {2, 1, 2, 3, 0}, {3, 2, 1, 1, 0}, {2, 2, 2, 3, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        bsc_params p = bbp(cases[c][0], cases[c][1], cases[c][2], cases[c][3]);
        ah_layer *a = ah_new(OPS, p.b, bsc_shape(2, 2, 17, 4, 0), 21 + c);
        ah_fill_qkv(a, 31 + c);
        ah_random_mask(a, 0.3f, 41 + c);
        for (size_t x = 0; x < a->nq; x++) a->q[x] *= 0.5f; /* flatter rows: no FD-noise-sized gradients */
        if (cases[c][4]) {
            a->L.training = 1;
            a->L.dropout = 0.2f;
            a->L.step = 2;
        }
        double g = ah_grad_check(a, 200);
        print_message("bigbird finite-difference check case %zu: %.3g\n", c, g);
        assert_true(g < 2e-2);
        ah_free(a);
    }
}

static void test_padding_invariance(void **state) {
    (void)state;
    bsc_params p = bbp(4, 2, 2, 3), p1 = bbp(5, 3, 1, 3);
    double e0 = ah_padding_invariance(OPS, p.b, bsc_shape(2, 2, 42, 8, 0), 13, 5);
    double e1 = ah_padding_invariance(OPS, p1.b, bsc_shape(2, 2, 40, 8, 0), 25, 6);
    print_message("bigbird padding invariance: %.3g, %.3g\n", e0, e1);
    assert_true(e0 < 1e-6 && e1 < 1e-6);
}

static void test_determinism(void **state) {
    (void)state;
    bsc_params p = bbp(8, 3, 2, 3);
    ah_layer *a = ah_new(OPS, p.b, bsc_shape(2, 4, 300, 16, 0), 4); /* above the size where the kernel goes parallel */
    ah_fill_qkv(a, 5);
    ah_random_mask(a, 0.3f, 6);
    a->L.training = 1, a->L.dropout = 0.1f;
    assert_true(bsc_thread_determinism(a));
    ah_free(a);
}

static void test_dense_backward(void **state) {
    (void)state;
    const int cases[][6] = {/* N, bs, r, gb, wb, dropout */
                            {60, 4, 2, 2, 3, 0}, {61, 5, 3, 1, 3, 0}, {64, 4, 1, 0, 5, 0}, {60, 4, 2, 2, 3, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        bsc_params p = bbp(cases[c][1], cases[c][2], cases[c][3], cases[c][4]);
        ah_layer *a = ah_new(OPS, p.b, bsc_shape(2, 3, cases[c][0], 8, 0), 3 + c);
        ah_fill_qkv(a, 13 + c);
        ah_random_mask(a, 0.4f, 23 + c);
        if (cases[c][5]) a->L.training = 1, a->L.dropout = 0.15f, a->L.step = 11;
        double e = bsc_dense_check(a);
        print_message("bigbird forward+backward vs dense over the same sets, case %zu: %.3g\n", c, e);
        assert_true(e < 1e-5);
        ah_free(a);
    }
}

static void test_validate_and_sizes(void **state) {
    (void)state;
    char err[256] = "";
    bsc_params p = bbp(4, 3, 2, 3);
    attn_shape s = bsc_shape(2, 3, 40, 8, 1);
    assert_int_equal(OPS->validate(p.b, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "causal"));
    assert_false(OPS->caps & ATTN_CAP_CAUSAL);
    s.causal = 0;
    assert_int_equal(OPS->validate(p.b, &s, err, sizeof err), 0);
    bsc_params pw = bbp(4, 3, 2, 4);
    assert_int_equal(OPS->validate(pw.b, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "window_blocks"));

    bsc_params d = bsc_defaults(OPS);
    char buf[64];
    assert_string_equal(bsc_get(OPS, &d, "block_size", buf, sizeof buf), "64");
    assert_string_equal(bsc_get(OPS, &d, "num_random_blocks", buf, sizeof buf), "3");
    assert_string_equal(bsc_get(OPS, &d, "global_blocks", buf, sizeof buf), "2");
    assert_string_equal(bsc_get(OPS, &d, "window_blocks", buf, sizeof buf), "3");

    /* cache: lse (B,H,N) floats + random blocks (B,H,nb,r) + (B) ints */
    assert_int_equal(OPS->cache_bytes(p.b, &s), 2 * 3 * 40 * 4 + (2 * 3 * 10 * 3 + 2) * 4);
    /* FLOPs, N = 40, bs = 4, 10 blocks, r = 3: global rows 2 blocks x 4 x 40 keys; block 1 and 8
     * see 4 blocks (window 3 + other global) + 3 random; the rest 5 + 3 blocks */
    double pairs = 2 * 4 * 40.0 + 2 * 4 * (7 * 4.0) + 6 * 4 * (8 * 4.0);
    assert_true(fabs(OPS->flops(p.b, &s) - 2 * 3 * pairs * 4 * 8) < 1e-6);
    attn_shape s1 = bsc_shape(4, 4, 1024, 16, 0), s2 = bsc_shape(4, 4, 2048, 16, 0);
    size_t a1 = OPS->cache_bytes(p.b, &s1) + OPS->scratch_bytes(p.b, &s1, 2);
    size_t a2 = OPS->cache_bytes(p.b, &s2) + OPS->scratch_bytes(p.b, &s2, 2);
    assert_true(a2 > a1 && a2 < 2 * a1 + 4096);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_structure),         cmocka_unit_test(test_random_blocks_fixed),
        cmocka_unit_test(test_fast_vs_reference), cmocka_unit_test(test_limit_exact_softmax),
        cmocka_unit_test(test_grad_fd),              cmocka_unit_test(test_padding_invariance),
        cmocka_unit_test(test_determinism),       cmocka_unit_test(test_dense_backward),
        cmocka_unit_test(test_validate_and_sizes),
    };
    return cmocka_run_group_tests_name("bigbird", tests, NULL, NULL);
}
