/* test_sinkhorn.c - Sparse Sinkhorn attention (attention/sinkhorn.c): fast forward vs the plain
 * reference, the one-block limit against exact softmax, a hard-sorting case against an explicit
 * candidate set, finite-difference gradients of q, k, v and the SortNet weights, padding
 * invariance, gradient accumulation, validation and sizes. */
#include "attn_harness.h"

#include "../lra/common.h"

extern const attn_ops attn_sinkhorn;

typedef struct {
    unsigned char b[ATTN_PARAMS_MAX] __attribute__((aligned(16)));
} pbuf;

static const void *mkparams(pbuf *p, const char *spec) {
    schema_defaults(attn_sinkhorn.schema, attn_sinkhorn.n_schema, p->b);
    char tmp[256], err[256];
    snprintf(tmp, sizeof tmp, "%s", spec);
    for (char *tok = strtok(tmp, " "); tok; tok = strtok(NULL, " ")) {
        char *eq = strchr(tok, '=');
        assert_non_null(eq);
        *eq = 0;
        const param_def *d = schema_find(attn_sinkhorn.schema, attn_sinkhorn.n_schema, tok);
        assert_non_null(d);
        if (schema_set(d, p->b, eq + 1, err, sizeof err)) fail_msg("%s: %s", tok, err);
    }
    return p->b;
}

static attn_shape shp(int B, int H, int N, int Dh, int max_len) {
    attn_shape s = {B, H, N, N, Dh, 0, 0, 1, max_len};
    return s;
}

/* Sharpen the SortNet so the soft sort is far from uniform (init gives near-uniform U). */
static void scale_weights(ah_layer *a, float f) {
    for (size_t i = 0; i < a->nw; i++) a->L.w[i] *= f;
    /* Non-zero biases too, so their gradient is exercised. */
    size_t nwW = a->nw / (size_t)(a->L.shape.Dh + 1) * (size_t)a->L.shape.Dh;
    for (size_t i = nwW; i < a->nw; i++) a->L.w[i] = 0.5f * sinf((float)i);
}

static void check_fast_ref(const char *spec, attn_shape s, float pad, float wscale, float drop) {
    pbuf pb;
    const void *p = mkparams(&pb, spec);
    char err[256];
    assert_int_equal(attn_sinkhorn.validate(p, &s, err, sizeof err), 0);
    ah_layer *a = ah_new(&attn_sinkhorn, p, s, 11);
    scale_weights(a, wscale);
    ah_fill_qkv(a, 5);
    if (pad > 0) ah_random_mask(a, pad, 3);
    a->L.training = drop > 0;
    a->L.dropout = drop;
    a->L.step = 4;
    double e = ah_fast_vs_reference(a);
    printf("  fast vs reference [%s N=%d%s%s]: %.2e\n", spec, s.N, pad > 0 ? " masked" : "", drop > 0 ? " dropout" : "", e);
    assert_true(e < 1e-5);
    ah_free(a);
}

static void test_fast_vs_reference(void **st) {
    (void)st;
    check_fast_ref("block_size=8", shp(2, 2, 45, 8, 45), 0, 3, 0);
    check_fast_ref("block_size=8", shp(2, 2, 45, 8, 64), 0.5f, 3, 0); /* max_len > N: first columns */
    check_fast_ref("block_size=5 sinkhorn_iters=0", shp(2, 3, 33, 8, 40), 0.4f, 3, 0);
    check_fast_ref("block_size=6 sinkhorn_iters=1 temperature=0.3", shp(2, 2, 40, 4, 40), 0.3f, 2, 0);
    check_fast_ref("block_size=7 lra_sum=true", shp(2, 2, 50, 8, 50), 0.4f, 3, 0);
    check_fast_ref("block_size=7 lra_strided=true", shp(2, 2, 47, 8, 47), 0.4f, 3, 0);
    check_fast_ref("block_size=4 lra_strided=true lra_sum=true sinkhorn_iters=0", shp(1, 2, 30, 8, 30), 0, 3, 0);
    check_fast_ref("block_size=6 sinkhorn_iters=3", shp(2, 2, 40, 8, 40), 0.4f, 3, 0.2f);
    check_fast_ref("block_size=6 lra_sum=true", shp(2, 2, 40, 8, 40), 0.4f, 3, 0.2f);
}

/* ---- limits ---- */

/* One block: U = [1], the sorted block is the block itself; each key appears twice under one
 * softmax, which is exact softmax attention. lra_sum gives twice exact softmax. */
static void test_one_block_is_softmax(void **st) {
    (void)st;
    static const char *specs[] = {"block_size=64", "block_size=40 sinkhorn_iters=0", "block_size=37 lra_strided=true"};
    for (size_t k = 0; k < LRA_ARRAY_LEN(specs); k++)
        for (int masked = 0; masked < 2; masked++) {
            pbuf pb;
            ah_layer *a = ah_new(&attn_sinkhorn, mkparams(&pb, specs[k]), shp(2, 2, 37, 8, 37), 21);
            scale_weights(a, 3);
            ah_fill_qkv(a, 9);
            if (masked) ah_random_mask(a, 0.5f, 4);
            double e = ah_vs_exact_softmax(a);
            printf("  one block vs exact softmax [%s%s]: %.2e\n", specs[k], masked ? " masked" : "", e);
            assert_true(e < 1e-5);
            ah_free(a);
        }
    pbuf pb;
    ah_layer *a = ah_new(&attn_sinkhorn, mkparams(&pb, "block_size=64 lra_sum=true"), shp(2, 2, 37, 8, 37), 21);
    ah_fill_qkv(a, 9);
    ah_random_mask(a, 0.5f, 4);
    ah_forward(a);
    float *two = malloc(a->nq * sizeof(float));
    for (size_t i = 0; i < a->nq; i++) two[i] = 0.5f * a->out[i];
    memcpy(a->out, two, a->nq * sizeof(float));
    unsigned char sp[ATTN_PARAMS_MAX] __attribute__((aligned(16)));
    schema_defaults(attn_softmax.schema, attn_softmax.n_schema, sp);
    attn_layer S = a->L;
    S.ops = &attn_softmax;
    S.params = sp;
    float *ref = calloc(a->nq, sizeof(float));
    attn_softmax.reference(&S, a->q, a->k, a->v, a->mask, ref);
    double e = ah_compare_rows(a, two, ref);
    printf("  one block, lra_sum = 2 x softmax: %.2e\n", e);
    assert_true(e < 1e-5);
    free(two);
    free(ref);
    ah_free(a);
}

/* Hard sorting: keys of block i carry a large component along e_i, and W_j = 10 e_{sigma(j)}, so
 * block i's logits peak at j = sigma^-1(i) and U is (numerically) that permutation. Block i must
 * then attend exactly to its own keys and block sigma^-1(i)'s keys (checked against a direct
 * softmax over that set). Both the Sinkhorn and the softmax (LRA) sorting. */
static void test_hard_sort(void **st) {
    (void)st;
    const int NB = 4, Bs = 5, N = NB * Bs, Dh = 4;
    const int sigma[4] = {2, 0, 3, 1}; /* W_j = 10 e_sigma(j) */
    const char *specs[] = {"block_size=5", "block_size=5 sinkhorn_iters=0"};
    for (int k = 0; k < 2; k++) {
        pbuf pb;
        ah_layer *a = ah_new(&attn_sinkhorn, mkparams(&pb, specs[k]), shp(1, 1, N, Dh, N), 3);
        ah_fill_qkv(a, 7);
        for (int i = 0; i < NB; i++)
            for (int u = 0; u < Bs; u++) a->k[(i * Bs + u) * Dh + i] += 10.0f;
        memset(a->L.w, 0, a->nw * sizeof(float));
        for (int j = 0; j < NB; j++) a->L.w[j * Dh + sigma[j]] = 10.0f;
        ah_forward(a);
        double worst = 0;
        for (int i = 0; i < NB; i++) {
            int src = -1;
            for (int j = 0; j < NB; j++)
                if (sigma[j] == i) src = j;
            for (int u = 0; u < Bs; u++) {
                int qi = i * Bs + u;
                double sc[10], mx = -1e300, z = 0, o[4] = {0};
                for (int x = 0; x < 2 * Bs; x++) {
                    int kj = x < Bs ? i * Bs + x : src * Bs + x - Bs;
                    double d = 0;
                    for (int e = 0; e < Dh; e++) d += (double)a->q[qi * Dh + e] * a->k[kj * Dh + e];
                    sc[x] = d / 2.0;
                    if (sc[x] > mx) mx = sc[x];
                }
                for (int x = 0; x < 2 * Bs; x++) z += exp(sc[x] - mx);
                for (int x = 0; x < 2 * Bs; x++) {
                    int kj = x < Bs ? i * Bs + x : src * Bs + x - Bs;
                    for (int e = 0; e < Dh; e++) o[e] += exp(sc[x] - mx) / z * a->v[kj * Dh + e];
                }
                for (int e = 0; e < Dh; e++) worst = fmax(worst, fabs(o[e] - a->out[qi * Dh + e]));
            }
        }
        printf("  hard sort [%s]: max abs error %.2e\n", specs[k], worst);
        assert_true(worst < 1e-4);
        ah_free(a);
    }
}

/* ---- gradients ---- */

/* Directional finite differences: for a random direction d over a whole tensor x,
 * (f(x + h d) - f(x - h d)) / 2h against grad . d. The SortNet's weights move the loss by ~1e-6 per
 * 1e-2 step, the size of float32 rounding in the ~300 outputs, so coordinate-wise FD is
 * noise-limited there; along a random direction the signal adds up over all coordinates while the
 * noise does not. Error = |fd - an| / max(|fd| + |an|, 0.1 ||grad||). Returns the worst over q, k,
 * v, w and `ndir` directions each. */
static double dir_check(ah_layer *a, int ndir) {
    ah_backward(a);
    float *x[4] = {a->q, a->k, a->v, a->L.w};
    const float *g0[4] = {a->dq, a->dk, a->dv, a->L.dw};
    size_t n[4] = {a->nq, a->nk, a->nk, a->nw};
    double worst = 0;
    for (int t = 0; t < 4; t++) {
        if (!n[t]) continue;
        float *g = malloc(n[t] * sizeof(float)), *x0 = malloc(n[t] * sizeof(float)), *d = malloc(n[t] * sizeof(float));
        memcpy(g, g0[t], n[t] * sizeof(float));
        memcpy(x0, x[t], n[t] * sizeof(float));
        double gn = sqrt(tu_dot(g, g, n[t]));
        for (int r = 0; r < ndir; r++) {
            tu_randn(d, n[t], 1.0f, 1000 + 10 * t + r);
            const double h = 1e-3;
            for (size_t i = 0; i < n[t]; i++) x[t][i] = x0[i] + (float)(h * d[i]);
            double fp = ah_loss(a);
            for (size_t i = 0; i < n[t]; i++) x[t][i] = x0[i] - (float)(h * d[i]);
            double fm = ah_loss(a);
            memcpy(x[t], x0, n[t] * sizeof(float));
            double fd = (fp - fm) / (2 * h), an = tu_dot(g, d, n[t]);
            double e = fabs(fd - an) / fmax(fabs(fd) + fabs(an), 0.1 * gn + 1e-12);
            if (!isfinite(fd) || !isfinite(an)) e = INFINITY;
            if (e > worst) worst = e;
        }
        free(g); free(x0); free(d);
    }
    return worst;
}

/* Coordinate-wise FD (h 1e-2) of q, k, v and w with a floor of 1e-2 on |fd| + |an| (the
 * harness's 1e-3 floor sits at the float32 noise level of the sort net's tiny gradients). */
static double coord_check(ah_layer *a, int max_checks, double per[4]) {
    ah_backward(a);
    float *x[4] = {a->q, a->k, a->v, a->L.w};
    const float *g0[4] = {a->dq, a->dk, a->dv, a->L.dw};
    size_t n[4] = {a->nq, a->nk, a->nk, a->nw};
    double worst = 0;
    for (int t = 0; t < 4; t++) {
        float *g = malloc(n[t] * sizeof(float));
        memcpy(g, g0[t], n[t] * sizeof(float));
        double e = tu_fd_check(ah_loss, a, x[t], g, n[t], max_checks, 1e-2f, 1e-2);
        for (size_t i = 0; i < n[t]; i++)
            if (!isfinite(g[i])) e = INFINITY; /* tu_fd_check's max would skip a NaN */
        if (per) per[t] = e;
        if (e > worst) worst = e;
        free(g);
    }
    return worst;
}

/* Keys of block i get +off along e_(i mod Dh), so block summaries differ and the sort matters. */
static void structure_keys(ah_layer *a, int Bs, float off) {
    const attn_shape *s = &a->L.shape;
    for (int bh = 0; bh < s->B * s->H; bh++)
        for (int p = 0; p < s->N; p++) a->k[((size_t)bh * s->N + p) * s->Dh + (p / Bs) % s->Dh] += off;
}

static void check_grad(const char *spec, attn_shape s, int Bs, float pad, float wscale, float drop) {
    pbuf pb;
    ah_layer *a = ah_new(&attn_sinkhorn, mkparams(&pb, spec), s, 31);
    scale_weights(a, wscale);
    ah_fill_qkv(a, 13);
    structure_keys(a, Bs, 2.0f);
    if (pad > 0) ah_random_mask(a, pad, 8);
    a->L.training = drop > 0;
    a->L.dropout = drop;
    a->L.step = 1;
    double ed = dir_check(a, 4);
    double pt[4];
    double ec = coord_check(a, 120, pt);
    printf("  FD [%s N=%d%s%s]: directional %.2e, coordinates %.2e (q %.1e k %.1e v %.1e w %.1e)\n", spec, s.N,
           pad > 0 ? " masked" : "", drop > 0 ? " dropout" : "", ed, ec, pt[0], pt[1], pt[2], pt[3]);
    assert_true(ed < 5e-3);
    assert_true(ec < 2e-2);
    /* The sort net receives a real gradient. */
    double gn = 0;
    for (size_t i = 0; i < a->nw; i++) gn += fabs(a->L.dw[i]);
    assert_true(gn > 1e-3);
    ah_free(a);
}

static void test_gradients(void **st) {
    (void)st;
    check_grad("block_size=4", shp(2, 2, 18, 4, 18), 4, 0.3f, 3, 0);
    check_grad("block_size=4 sinkhorn_iters=0", shp(2, 2, 18, 4, 24), 4, 0.3f, 3, 0);
    check_grad("block_size=3 sinkhorn_iters=2 temperature=0.5", shp(1, 2, 17, 4, 17), 3, 0.3f, 2, 0);
    check_grad("block_size=4 lra_sum=true", shp(2, 2, 18, 4, 18), 4, 0.3f, 3, 0);
    check_grad("block_size=4 lra_strided=true", shp(2, 1, 18, 4, 18), 4, 0.3f, 3, 0);
    check_grad("block_size=4", shp(2, 2, 18, 4, 18), 4, 0.3f, 3, 0.2f);
    /* The generic harness check as well, on a small single-head case. */
    pbuf pb;
    ah_layer *a = ah_new(&attn_sinkhorn, mkparams(&pb, "block_size=4 sinkhorn_iters=0"), shp(1, 1, 12, 4, 12), 5);
    scale_weights(a, 3);
    ah_fill_qkv(a, 3);
    structure_keys(a, 4, 2.0f);
    double g = ah_grad_check(a, 200);
    printf("  harness FD [block_size=4 sinkhorn_iters=0 N=12]: %.2e\n", g);
    assert_true(g < 2e-2);
    ah_free(a);
}

/* Backward accumulates into dw (gradient convention): twice the same backward gives 2x. */
static void test_dw_accumulates(void **st) {
    (void)st;
    pbuf pb;
    ah_layer *a = ah_new(&attn_sinkhorn, mkparams(&pb, "block_size=4"), shp(2, 2, 18, 4, 18), 3);
    scale_weights(a, 3);
    ah_fill_qkv(a, 2);
    ah_backward(a);
    float *g1 = malloc(a->nw * sizeof(float));
    memcpy(g1, a->L.dw, a->nw * sizeof(float));
    float *dq1 = malloc(a->nq * sizeof(float));
    memcpy(dq1, a->dq, a->nq * sizeof(float));
    a->L.ops->backward(&a->L, a->q, a->k, a->v, a->mask, a->out, a->dout, a->dq, a->dk, a->dv);
    for (size_t i = 0; i < a->nw; i++) assert_float_equal(a->L.dw[i], 2 * g1[i], 1e-6 * (1 + fabsf(g1[i])));
    assert_memory_equal(dq1, a->dq, a->nq * sizeof(float)); /* activation grads overwritten */
    free(g1);
    free(dq1);
    ah_free(a);
}

static void test_padding_invariance(void **st) {
    (void)st;
    static const char *specs[] = {"block_size=8", "block_size=5 sinkhorn_iters=0", "block_size=6 lra_sum=true"};
    for (size_t k = 0; k < LRA_ARRAY_LEN(specs); k++)
        for (int extra = 2; extra <= 22; extra += 20) {
            pbuf pb;
            double e = ah_padding_invariance(&attn_sinkhorn, mkparams(&pb, specs[k]), shp(2, 2, 30, 8, 30), extra, 5);
            printf("  padding +%d [%s]: %.2e\n", extra, specs[k], e);
            assert_true(e < 1e-6);
        }
}

static void test_threads_deterministic(void **st) {
    (void)st;
    pbuf pb;
    ah_layer *a = ah_new(&attn_sinkhorn, mkparams(&pb, "block_size=16"), shp(2, 3, 300, 8, 300), 3);
    scale_weights(a, 3);
    ah_fill_qkv(a, 4);
    ah_random_mask(a, 0.3f, 2);
    int nt = lra_threads();
    size_t n = a->nq * sizeof(float);
    float *o1 = malloc(n), *g1 = malloc(n), *k1 = malloc(n), *w1 = malloc(a->nw * sizeof(float));
    lra_set_threads(1);
    ah_backward(a);
    memcpy(o1, a->out, n); memcpy(g1, a->dq, n); memcpy(k1, a->dk, n); memcpy(w1, a->L.dw, a->nw * sizeof(float));
    lra_set_threads(2);
    ah_backward(a);
    assert_memory_equal(o1, a->out, n);
    assert_memory_equal(g1, a->dq, n);
    assert_memory_equal(k1, a->dk, n);
    assert_memory_equal(w1, a->L.dw, a->nw * sizeof(float));
    lra_set_threads(nt);
    free(o1); free(g1); free(k1); free(w1);
    ah_free(a);
}

static void test_validate_and_sizes(void **st) {
    (void)st;
    pbuf pb;
    char err[256];
    const void *p = mkparams(&pb, "");
    attn_shape s = shp(2, 4, 1000, 16, 1000);
    assert_int_equal(attn_sinkhorn.validate(p, &s, err, sizeof err), 0);
    attn_shape c = s;
    c.causal = 1;
    assert_int_equal(attn_sinkhorn.validate(p, &c, err, sizeof err), -1);
    assert_non_null(strstr(err, "causal"));
    attn_shape m = s;
    m.Nk = 1100;
    assert_int_equal(attn_sinkhorn.validate(p, &m, err, sizeof err), -1);
    /* Default block 64: NBmax = 16, weights H * 16 * (Dh + 1). */
    assert_int_equal(attn_sinkhorn.n_weights(p, &s), 4 * 16 * 17);
    assert_int_equal(attn_sinkhorn.cache_bytes(p, &s), (size_t)2 * 4 * 1000 * 4);
    assert_int_equal(attn_sinkhorn.cache_bytes(mkparams(&pb, "lra_sum=true"), &s), (size_t)2 * 4 * 1000 * 4 * 18);
    p = mkparams(&pb, "");
    attn_shape s2 = s;
    s2.N = s2.Nk = s2.max_len = 2000;
    double r = (double)attn_sinkhorn.scratch_bytes(p, &s2, 2) / attn_sinkhorn.scratch_bytes(p, &s, 2);
    assert_true(r > 1.8 && r < 2.6);
    assert_false(attn_sinkhorn.caps & ATTN_CAP_CAUSAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_vs_reference),
        cmocka_unit_test(test_one_block_is_softmax),
        cmocka_unit_test(test_hard_sort),
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_dw_accumulates),
        cmocka_unit_test(test_padding_invariance),
        cmocka_unit_test(test_threads_deterministic),
        cmocka_unit_test(test_validate_and_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
