/* test_performer.c - Performer attention (attention/performer.c, attention/kernelized.c). */
#include "attn_harness.h"

#include "../attention/kernelized.h"
#include "../lra/common.h"

extern const attn_ops attn_performer;

static void set(void *p, const char *key, const char *val) {
    char err[256];
    const param_def *d = schema_find(attn_performer.schema, attn_performer.n_schema, key);
    assert_non_null(d);
    assert_int_equal(schema_set(d, p, val, err, sizeof err), 0);
}

static void params(void *p, const char *kernel, const char *features) {
    schema_defaults(attn_performer.schema, attn_performer.n_schema, p);
    set(p, "kernel", kernel);
    set(p, "features", features);
}

static attn_shape shape(int B, int H, int N, int Nk, int Dh, int causal) {
    attn_shape s = {.B = B, .H = H, .N = N, .Nk = Nk, .Dh = Dh, .causal = causal, .layer = 0, .n_layers = 1, .max_len = Nk};
    return s;
}

static const char *kernels[] = {"softmax", "relu", "lra_relu"};

static void test_fast_vs_reference(void **st) {
    (void)st;
    unsigned char p[ATTN_PARAMS_MAX];
    for (int kk = 0; kk < 3; kk++)
        for (int causal = 0; causal <= 1; causal++) {
            params(p, kernels[kk], "40");
            ah_layer *a = ah_new(&attn_performer, p, shape(2, 2, 100, causal ? 130 : 100, 16, causal), 11);
            ah_fill_qkv(a, 11);
            ah_random_mask(a, 0.5f, 11);
            double e = ah_fast_vs_reference(a);
            printf("performer %-8s causal=%d: fast vs reference %.2e\n", kernels[kk], causal, e);
            assert_true(e < 1e-5);
            ah_free(a);
        }
}

/* Relative L1 error of FAVOR+ against exact softmax, averaged over seeds (random W per seed). */
static double favor_error(int M, int orthogonal, int nseeds, uint64_t seed0) {
    unsigned char p[ATTN_PARAMS_MAX];
    char buf[32];
    snprintf(buf, sizeof buf, "%d", M);
    params(p, "softmax", buf);
    set(p, "orthogonal", orthogonal ? "true" : "false");
    unsigned char sp[ATTN_PARAMS_MAX];
    schema_defaults(attn_softmax.schema, attn_softmax.n_schema, sp);
    double tot = 0;
    for (int sd = 0; sd < nseeds; sd++) {
        ah_layer *a = ah_new(&attn_performer, p, shape(1, 2, 64, 64, 16, 0), seed0 + (uint64_t)sd);
        ah_fill_qkv(a, 21); /* same data for every seed: only the random features change */
        /* |q~ + k~|^2 ~ 2 (FAVOR+'s relative variance grows like exp(|q~ + k~|^2), Lemma 2) */
        for (size_t i = 0; i < a->nq; i++) a->q[i] *= 0.5f;
        for (size_t i = 0; i < a->nk; i++) a->k[i] *= 0.5f;
        ah_forward(a);
        float *ref = calloc(a->nq, sizeof(float));
        attn_layer S = a->L;
        S.ops = &attn_softmax;
        S.params = sp;
        attn_softmax.reference(&S, a->q, a->k, a->v, NULL, ref);
        double num = 0, den = 0;
        for (size_t i = 0; i < a->nq; i++) {
            num += fabs((double)a->out[i] - ref[i]);
            den += fabs((double)ref[i]);
        }
        tot += num / den;
        free(ref);
        ah_free(a);
    }
    return tot / nseeds;
}

static void test_error_falls_with_features(void **st) {
    (void)st;
    int Ms[] = {16, 256, 4096};
    double e[3];
    for (int i = 0; i < 3; i++) {
        e[i] = favor_error(Ms[i], 1, 4, 100);
        printf("performer softmax vs exact: M=%4d mean relative L1 error %.4f\n", Ms[i], e[i]);
    }
    assert_true(e[1] < e[0]);
    assert_true(e[2] < e[1]);
    assert_true(e[2] < 0.05);
    /* error ~ 1/sqrt(M): 16x the features should cut it by roughly 4x; demand at least 2x */
    assert_true(e[2] < 0.5 * e[1] && e[1] < 0.5 * e[0]);
}

static void test_orthogonal_beats_iid(void **st) {
    (void)st;
    double eo = favor_error(64, 1, 12, 300), ei = favor_error(64, 0, 12, 300);
    printf("performer M=64 over 12 draws: orthogonal %.4f, iid %.4f\n", eo, ei);
    assert_true(eo < ei);
}

/* FD check for piecewise-smooth maps (the ReLU kernels): W x~ has entries within 1e-2 of the kink,
 * where central differences with h = 1e-2 straddle it, while h = 1e-3 is dominated by float32
 * noise. Per coordinate, take the best agreement over h in {1e-2, 3e-3, 1e-3} and over central,
 * forward and backward differences: at a kink the analytic gradient is one of the one-sided
 * derivatives, a kink spoils only the large central steps and noise only the small ones, but a
 * wrong gradient spoils them all. */
static double fd_multi(ah_layer *a, float *x, const float *g, size_t n, int max_checks) {
    const float hs[3] = {1e-2f, 3e-3f, 1e-3f};
    double worst = 0;
    size_t stride = n <= (size_t)max_checks ? 1 : n / (size_t)max_checks;
    for (size_t i = 0; i < n; i += stride) {
        double best = 1e30, f0 = ah_loss(a);
        for (int t = 0; t < 3; t++) {
            float old = x[i];
            x[i] = old + hs[t];
            double fp = ah_loss(a);
            x[i] = old - hs[t];
            double fm = ah_loss(a);
            x[i] = old;
            double fds[3] = {(fp - fm) / (2.0 * hs[t]), (fp - f0) / hs[t], (f0 - fm) / hs[t]};
            for (int u = 0; u < 3; u++) best = fmin(best, fabs(fds[u] - g[i]) / fmax(fabs(fds[u]) + fabs(g[i]), 1e-3));
        }
        worst = fmax(worst, best);
    }
    return worst;
}

static double grad_check_multi(ah_layer *a, int max_checks) {
    ah_backward(a);
    float *gq = malloc(a->nq * sizeof(float)), *gk = malloc(a->nk * sizeof(float)), *gv = malloc(a->nk * sizeof(float));
    memcpy(gq, a->dq, a->nq * sizeof(float));
    memcpy(gk, a->dk, a->nk * sizeof(float));
    memcpy(gv, a->dv, a->nk * sizeof(float));
    double w = fd_multi(a, a->q, gq, a->nq, max_checks);
    w = fmax(w, fd_multi(a, a->k, gk, a->nk, max_checks));
    w = fmax(w, fd_multi(a, a->v, gv, a->nk, max_checks));
    free(gq); free(gk); free(gv);
    return w;
}

static void test_grad(void **st) {
    (void)st;
    unsigned char p[ATTN_PARAMS_MAX];
    for (int kk = 0; kk < 3; kk++)
        for (int causal = 0; causal <= 1; causal++) {
            params(p, kernels[kk], "24");
            /* small: fewer outputs, so less float32 rounding noise in the loss (gradients of a few
             * 1e-4 are compared at an absolute level of ~2e-5) */
            ah_layer *a = ah_new(&attn_performer, p, shape(1, 2, 20, causal ? 23 : 20, 8, causal), 31);
            ah_fill_qkv(a, 31);
            ah_random_mask(a, 0.4f, 31);
            double g = kk == 0 ? ah_grad_check(a, 50) : grad_check_multi(a, 50);
            printf("performer %-8s causal=%d: FD gradient check worst %.2e\n", kernels[kk], causal, g);
            assert_true(g < 2e-2);
            ah_free(a);
        }
}

/* Directional derivative along a random direction u restricted to one of q, k, v (part 0, 1, 2):
 * (L(x + h u) - L(x - h u)) / 2h against <grad L, u>. The sum is large next to float32 noise, so
 * this checks the whole backward (many chunks, stabiliser rescales, padding) at sizes where
 * per-coordinate FD is noise-limited. One part at a time: the three parts nearly cancel. Needs a
 * smooth map (ReLU kernels cross kinks along u). Returns the relative error. */
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
    for (int causal = 0; causal <= 1; causal++) {
        params(p, "softmax", "48");
        ah_layer *a = ah_new(&attn_performer, p, shape(2, 2, 150, causal ? 170 : 150, 16, causal), 35);
        ah_fill_qkv(a, 35);
        ah_random_mask(a, 0.4f, 35);
        for (int part = 0; part < 3; part++) {
            double e = dir_check(a, part, 1e-2f, 36 + (uint64_t)part);
            printf("performer softmax causal=%d: directional derivative along %c (N=150, padded) rel error %.2e\n",
                   causal, "qkv"[part], e);
            /* ~7e-4 of it on k is the stop-gradient through the max stabiliser (eps_phi = 1e-6) */
            assert_true(e < 5e-3);
        }
        ah_free(a);
    }
}

static void test_padding_and_causal_invariance(void **st) {
    (void)st;
    unsigned char p[ATTN_PARAMS_MAX];
    for (int kk = 0; kk < 3; kk++) {
        params(p, kernels[kk], "32");
        double e0 = ah_padding_invariance(&attn_performer, p, shape(2, 2, 70, 70, 16, 0), 45, 41);
        double e1 = ah_padding_invariance(&attn_performer, p, shape(2, 2, 70, 70, 16, 1), 45, 41);
        ah_layer *a = ah_new(&attn_performer, p, shape(2, 2, 150, 150, 16, 1), 42);
        ah_fill_qkv(a, 42);
        double c = ah_causal_invariance(a, 90, 42);
        printf("performer %-8s: padding invariance bidir %.2e causal %.2e; causal invariance %.2e\n", kernels[kk], e0,
               e1, c);
        assert_true(e0 < 1e-6 && e1 < 1e-6);
        assert_true(c == 0.0);
        ah_free(a);
    }
}

static void test_features_and_redraw(void **st) {
    (void)st;
    unsigned char p[ATTN_PARAMS_MAX];
    params(p, "softmax", "40");
    set(p, "redraw", "10");
    const int Dh = 16, M = 40;
    ah_layer *a = ah_new(&attn_performer, p, shape(1, 1, 8, 8, Dh, 0), 51);
    assert_true(attn_performer.state_bytes(p, &a->L.shape) >= sizeof(float) * M * Dh);
    a->L.training = 1;
    a->L.step = 0;
    attn_performer.begin(&a->L);
    const float *W = performer_projection(&a->L);
    float *W0 = malloc(sizeof(float) * M * Dh);
    memcpy(W0, W, sizeof(float) * M * Dh);
    /* orthogonal rows within each block of Dh rows; squared norms ~ chi^2(Dh), mean Dh */
    double worst = 0, nsq = 0;
    for (int l = 0; l < M; l++) {
        for (int m = l + 1; m < M && m / Dh == l / Dh; m++) {
            double d = 0, nl = 0, nm = 0;
            for (int x = 0; x < Dh; x++) {
                d += (double)W[l * Dh + x] * W[m * Dh + x];
                nl += (double)W[l * Dh + x] * W[l * Dh + x];
                nm += (double)W[m * Dh + x] * W[m * Dh + x];
            }
            if (fabs(d) / sqrt(nl * nm) > worst) worst = fabs(d) / sqrt(nl * nm);
        }
        for (int x = 0; x < Dh; x++) nsq += (double)W[l * Dh + x] * W[l * Dh + x];
    }
    printf("performer W: worst in-block cosine %.2e, mean squared row norm %.2f (Dh=%d)\n", worst, nsq / M, Dh);
    assert_true(worst < 1e-6);
    assert_true(nsq / M > 0.6 * Dh && nsq / M < 1.4 * Dh);
    a->L.step = 9;
    attn_performer.begin(&a->L);
    assert_memory_equal(W0, performer_projection(&a->L), sizeof(float) * M * Dh);
    a->L.step = 10;
    attn_performer.begin(&a->L);
    assert_memory_not_equal(W0, performer_projection(&a->L), sizeof(float) * M * Dh);
    float *W1 = malloc(sizeof(float) * M * Dh);
    memcpy(W1, performer_projection(&a->L), sizeof(float) * M * Dh);
    /* eval: frozen at the last draw, whatever the step */
    a->L.training = 0;
    a->L.step = 35;
    attn_performer.begin(&a->L);
    assert_memory_equal(W1, performer_projection(&a->L), sizeof(float) * M * Dh);
    /* a fresh layer at the same (seed, layer, epoch) draws the same matrix; another layer differs */
    ah_layer *b = ah_new(&attn_performer, p, shape(1, 1, 8, 8, Dh, 0), 51);
    b->L.training = 1;
    b->L.step = 3;
    attn_performer.begin(&b->L);
    assert_memory_equal(W0, performer_projection(&b->L), sizeof(float) * M * Dh);
    ah_layer *c = ah_new(&attn_performer, p, shape(1, 1, 8, 8, Dh, 0), 51);
    c->L.shape.layer = 1;
    attn_performer.begin(&c->L);
    assert_memory_not_equal(W0, performer_projection(&c->L), sizeof(float) * M * Dh);
    /* redraw = 0: never redrawn while training */
    set(p, "redraw", "0");
    ah_layer *d = ah_new(&attn_performer, p, shape(1, 1, 8, 8, Dh, 0), 51);
    d->L.training = 1;
    d->L.step = 12345;
    attn_performer.begin(&d->L);
    assert_memory_equal(W0, performer_projection(&d->L), sizeof(float) * M * Dh);
    free(W0); free(W1);
    ah_free(a); ah_free(b); ah_free(c); ah_free(d);
}

static void test_threads_and_fully_masked(void **st) {
    (void)st;
    unsigned char p[ATTN_PARAMS_MAX];
    for (int causal = 0; causal <= 1; causal++) {
        params(p, "softmax", "64");
        ah_layer *a = ah_new(&attn_performer, p, shape(3, 2, 90, 90, 16, causal), 61);
        ah_fill_qkv(a, 61);
        ah_random_mask(a, 0.5f, 61);
        memset(a->mask + 90, 0, 90);
        lra_set_threads(1);
        ah_backward(a);
        float *o1 = malloc(a->nq * sizeof(float)), *g1 = malloc(a->nk * sizeof(float));
        memcpy(o1, a->out, a->nq * sizeof(float));
        memcpy(g1, a->dk, a->nk * sizeof(float));
        for (size_t i = 0; i < a->nq; i++) assert_true(isfinite(a->out[i]) && isfinite(a->dq[i]));
        for (size_t i = 0; i < (size_t)2 * 90 * 16; i++) assert_true(a->out[(size_t)2 * 90 * 16 + i] == 0.0f);
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
    params(p, "softmax", "256");
    char err[256];
    attn_shape s = shape(4, 4, 1024, 1024, 16, 0), s2 = shape(4, 4, 2048, 2048, 16, 0);
    assert_int_equal(attn_performer.validate(p, &s, err, sizeof err), 0);
    assert_true(attn_performer.cache_bytes(p, &s) == attn_performer.cache_bytes(p, &s2));
    assert_true(attn_performer.scratch_bytes(p, &s, 2) == attn_performer.scratch_bytes(p, &s2, 2));
    assert_true(fabs(attn_performer.flops(p, &s2) / attn_performer.flops(p, &s) - 2.0) < 1e-9);
    s.Nk = 10;
    assert_int_equal(attn_performer.validate(p, &s, err, sizeof err), -1);
    params(p, "lra_relu", "256");
    assert_int_equal((int)attn_performer.state_bytes(p, &s2), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_vs_reference),
        cmocka_unit_test(test_error_falls_with_features),
        cmocka_unit_test(test_orthogonal_beats_iid),
        cmocka_unit_test(test_grad),
        cmocka_unit_test(test_grad_directional),
        cmocka_unit_test(test_padding_and_causal_invariance),
        cmocka_unit_test(test_features_and_redraw),
        cmocka_unit_test(test_threads_and_fully_masked),
        cmocka_unit_test(test_validate_and_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
