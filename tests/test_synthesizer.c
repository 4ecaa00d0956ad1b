/* test_synthesizer.c - Synthesizer attention (attention/synthesizer.c): fast forward vs the
 * materialising reference for every mode, limits against exact softmax (zero synthesised logits
 * plus dot product) and the uniform average, top-left slicing of max_len-sized logits,
 * finite-difference gradients of q, k, v and every weight, padding and causal invariance,
 * gradient accumulation, thread determinism, validation and sizes. */
#include "attn_harness.h"

#include "../lra/common.h"

extern const attn_ops attn_synthesizer;

typedef struct {
    unsigned char b[ATTN_PARAMS_MAX] __attribute__((aligned(16)));
} pbuf;

static const void *mkparams(pbuf *p, const char *spec) {
    schema_defaults(attn_synthesizer.schema, attn_synthesizer.n_schema, p->b);
    char tmp[256], err[256];
    snprintf(tmp, sizeof tmp, "%s", spec);
    for (char *tok = strtok(tmp, " "); tok; tok = strtok(NULL, " ")) {
        char *eq = strchr(tok, '=');
        assert_non_null(eq);
        *eq = 0;
        const param_def *d = schema_find(attn_synthesizer.schema, attn_synthesizer.n_schema, tok);
        assert_non_null(d);
        if (schema_set(d, p->b, eq + 1, err, sizeof err)) fail_msg("%s: %s", tok, err);
    }
    return p->b;
}

static attn_shape shp(int B, int H, int N, int Dh, int causal, int max_len) {
    attn_shape s = {B, H, N, N, Dh, causal, 0, 1, max_len};
    return s;
}

/* Make the synthesised logits O(1) (init is near-uniform for the random mode) and the biases
 * non-zero. */
static void scale_weights(ah_layer *a, float f) {
    for (size_t i = 0; i < a->nw; i++) a->L.w[i] = a->L.w[i] * f + 0.1f * sinf(0.7f * (float)i);
}

static const char *MODES[] = {"mode=random", "mode=random mix_dot=true", "mode=random factorized=true k=5",
                              "mode=random factorized=true k=3 mix_dot=true", "mode=dense", "mode=dense mix_dot=true"};

static void test_fast_vs_reference(void **st) {
    (void)st;
    for (size_t m = 0; m < LRA_ARRAY_LEN(MODES); m++)
        for (int c = 0; c < 2; c++)
            for (int var = 0; var < 2; var++) { /* var 1: masked, max_len > N, dropout */
                pbuf pb;
                attn_shape s = shp(2, 2, 37, 8, c, var ? 50 : 37);
                ah_layer *a = ah_new(&attn_synthesizer, mkparams(&pb, MODES[m]), s, 11);
                scale_weights(a, 8);
                ah_fill_qkv(a, 5);
                if (var) {
                    ah_random_mask(a, 0.5f, 3);
                    a->L.training = 1;
                    a->L.dropout = 0.2f;
                    a->L.step = 3;
                }
                double e = ah_fast_vs_reference(a);
                printf("  fast vs reference [%s%s%s]: %.2e\n", MODES[m], c ? " causal" : "",
                       var ? " masked max_len>N dropout" : "", e);
                assert_true(e < 1e-5);
                ah_free(a);
            }
}

/* ---- limits ---- */

static void test_limits(void **st) {
    (void)st;
    /* Zero synthesised logits + dot product = exact softmax. */
    static const char *mix[] = {"mode=random mix_dot=true", "mode=random factorized=true mix_dot=true", "mode=dense mix_dot=true"};
    for (size_t m = 0; m < LRA_ARRAY_LEN(mix); m++)
        for (int c = 0; c < 2; c++)
            for (int masked = 0; masked < 2; masked++) {
                pbuf pb;
                ah_layer *a = ah_new(&attn_synthesizer, mkparams(&pb, mix[m]), shp(2, 2, 33, 8, c, 40), 3);
                memset(a->L.w, 0, a->nw * sizeof(float));
                ah_fill_qkv(a, 7);
                if (masked) ah_random_mask(a, 0.5f, 2);
                double e = ah_vs_exact_softmax(a);
                printf("  zero logits + q.k vs exact softmax [%s%s%s]: %.2e\n", mix[m], c ? " causal" : "",
                       masked ? " masked" : "", e);
                assert_true(e < 1e-5);
                ah_free(a);
            }
    /* Zero logits without the dot product: the plain average of the visible values. */
    pbuf pb;
    ah_layer *a = ah_new(&attn_synthesizer, mkparams(&pb, "mode=random"), shp(1, 2, 20, 4, 1, 20), 3);
    memset(a->L.w, 0, a->nw * sizeof(float));
    ah_fill_qkv(a, 1);
    ah_forward(a);
    for (int h = 0; h < 2; h++)
        for (int i = 0; i < 20; i++)
            for (int e = 0; e < 4; e++) {
                double avg = 0;
                for (int j = 0; j <= i; j++) avg += a->v[((size_t)h * 20 + j) * 4 + e];
                assert_float_equal(a->out[((size_t)h * 20 + i) * 4 + e], avg / (i + 1), 1e-5);
            }
    ah_free(a);
}

/* N < max_len uses the top-left N x N block: a layer sized for max_len 50 and one sized for
 * N = 30 holding the sliced weights give the same output. */
static void test_top_left_block(void **st) {
    (void)st;
    static const char *specs[] = {"mode=random mix_dot=true", "mode=random factorized=true k=4", "mode=dense"};
    for (size_t m = 0; m < LRA_ARRAY_LEN(specs); m++) {
        pbuf pb;
        const void *p = mkparams(&pb, specs[m]);
        int N = 30, ML = 50, H = 2, Dh = 4;
        ah_layer *big = ah_new(&attn_synthesizer, p, shp(2, H, N, Dh, 0, ML), 4);
        ah_layer *sm = ah_new(&attn_synthesizer, p, shp(2, H, N, Dh, 0, N), 4);
        scale_weights(big, 5);
        ah_fill_qkv(big, 2);
        memcpy(sm->q, big->q, big->nq * 4); memcpy(sm->k, big->k, big->nk * 4); memcpy(sm->v, big->v, big->nk * 4);
        /* Slice by the documented layouts. */
        const float *w = big->L.w;
        float *x = sm->L.w;
        if (m == 0) {
            for (int h = 0; h < H; h++)
                for (int i = 0; i < N; i++)
                    for (int j = 0; j < N; j++) x[((size_t)h * N + i) * N + j] = w[((size_t)h * ML + i) * ML + j];
        } else if (m == 1) {
            int K = 4;
            for (int h = 0; h < H; h++)
                for (int i = 0; i < N; i++)
                    for (int a = 0; a < K; a++) {
                        x[((size_t)h * N + i) * K + a] = w[((size_t)h * ML + i) * K + a];
                        x[(size_t)H * N * K + ((size_t)h * K + a) * N + i] = w[(size_t)H * ML * K + ((size_t)h * K + a) * ML + i];
                    }
        } else {
            size_t w1 = (size_t)H * Dh * Dh, b1 = (size_t)H * Dh;
            memcpy(x, w, (w1 + b1) * sizeof(float));
            for (int h = 0; h < H; h++) {
                for (int d = 0; d < Dh; d++)
                    for (int j = 0; j < N; j++)
                        x[w1 + b1 + ((size_t)h * Dh + d) * N + j] = w[w1 + b1 + ((size_t)h * Dh + d) * ML + j];
                for (int j = 0; j < N; j++)
                    x[w1 + b1 + (size_t)H * Dh * N + (size_t)h * N + j] = w[w1 + b1 + (size_t)H * Dh * ML + (size_t)h * ML + j];
            }
        }
        ah_forward(big);
        ah_forward(sm);
        double e = tu_rel_err(big->out, sm->out, big->nq);
        printf("  top-left block [%s]: %.2e\n", specs[m], e);
        assert_true(e < 1e-6);
        ah_free(big);
        ah_free(sm);
    }
}

/* ---- gradients ---- */

/* Sign pattern of the dense MLP's pre-activations W1 q + b1 over all (b, h, i) (white-box: the
 * weight layout documented in synthesizer.c, W1 (H,Dh,Dh) then b1 (H,Dh)). A +-h step that flips a
 * sign crosses a ReLU kink, where central differences are meaningless; such coordinates are
 * skipped. 0 for the other modes. */
static uint64_t relu_signature(const ah_layer *a, int dense) {
    if (!dense) return 0;
    const attn_shape *s = &a->L.shape;
    int H = s->H, Dh = s->Dh;
    uint64_t hsh = 1469598103934665603ULL;
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < s->N; i++)
                for (int r = 0; r < Dh; r++) {
                    double p = a->L.w[(size_t)H * Dh * Dh + (size_t)h * Dh + r];
                    for (int e = 0; e < Dh; e++)
                        p += (double)a->L.w[((size_t)h * Dh + r) * Dh + e] * a->q[(((size_t)b * H + h) * s->N + i) * Dh + e];
                    hsh = (hsh ^ (uint64_t)(p > 0)) * 1099511628211ULL;
                }
    return hsh;
}

/* Directional FD along random directions of whole tensors (q, k, v, w): per-element gradients of
 * a (max_len x max_len) logit matrix are ~1e-4, at the float32 noise level of coordinate-wise FD,
 * while along a random direction the signal adds up. Error |fd - an| / max(|fd| + |an|,
 * 0.1 ||grad||), worst over tensors and directions; directions whose step crosses a ReLU kink of
 * the dense MLP are replaced. */
static double dir_check(ah_layer *a, int ndir, int dense) {
    ah_backward(a);
    uint64_t sig = relu_signature(a, dense);
    float *x[4] = {a->q, a->k, a->v, a->L.w};
    const float *g0[4] = {a->dq, a->dk, a->dv, a->L.dw};
    size_t n[4] = {a->nq, a->nk, a->nk, a->nw};
    double worst = 0;
    for (int t = 0; t < 4; t++) {
        float *g = malloc(n[t] * sizeof(float)), *x0 = malloc(n[t] * sizeof(float)), *d = malloc(n[t] * sizeof(float));
        memcpy(g, g0[t], n[t] * sizeof(float));
        memcpy(x0, x[t], n[t] * sizeof(float));
        double gn = sqrt(tu_dot(g, g, n[t]));
        for (int r = 0, tries = 0; r < ndir && tries < 4 * ndir; tries++) {
            tu_randn(d, n[t], 1.0f, 2000 + 100 * t + tries);
            const double h = 1e-3;
            for (size_t i = 0; i < n[t]; i++) x[t][i] = x0[i] + (float)(h * d[i]);
            double fp = ah_loss(a);
            int flip = relu_signature(a, dense) != sig;
            for (size_t i = 0; i < n[t]; i++) x[t][i] = x0[i] - (float)(h * d[i]);
            double fm = ah_loss(a);
            flip = flip || relu_signature(a, dense) != sig;
            memcpy(x[t], x0, n[t] * sizeof(float));
            if (flip) continue; /* the step crosses a ReLU kink: draw another direction */
            r++;
            double fd = (fp - fm) / (2 * h), an = tu_dot(g, d, n[t]);
            double e = fabs(fd - an) / fmax(fabs(fd) + fabs(an), 0.1 * gn + 1e-12);
            if (!isfinite(fd) || !isfinite(an)) e = INFINITY;
            if (gn == 0 && fabs(fd) < 1e-6) e = 0; /* a tensor the loss does not depend on (k without mix_dot) */
            if (e > worst) worst = e;
        }
        free(g); free(x0); free(d);
    }
    return worst;
}

/* Coordinate-wise FD (h 1e-2) of q, k, v and w with a floor of 1e-2 on |fd| + |an| (the
 * harness's 1e-3 floor sits at the float32 noise level of the tiny per-element gradients of a
 * learned logit matrix); coordinates whose step crosses a ReLU kink are skipped and counted. */
static double coord_check(ah_layer *a, int max_checks, int dense, double per[4], int *skipped) {
    ah_backward(a);
    float *x[4] = {a->q, a->k, a->v, a->L.w};
    const float *g0[4] = {a->dq, a->dk, a->dv, a->L.dw};
    size_t n[4] = {a->nq, a->nk, a->nk, a->nw};
    double worst = 0;
    uint64_t sig = relu_signature(a, dense);
    *skipped = 0;
    for (int t = 0; t < 4; t++) {
        float *g = malloc(n[t] * sizeof(float));
        memcpy(g, g0[t], n[t] * sizeof(float));
        double e = 0;
        size_t stride = n[t] <= (size_t)max_checks ? 1 : n[t] / (size_t)max_checks;
        for (size_t i = 0; i < n[t]; i += stride) {
            const float h = 1e-2f, old = x[t][i];
            x[t][i] = old + h;
            double fp = ah_loss(a);
            int flip = relu_signature(a, dense) != sig;
            x[t][i] = old - h;
            double fm = ah_loss(a);
            flip = flip || relu_signature(a, dense) != sig;
            x[t][i] = old;
            if (flip) {
                (*skipped)++;
                continue;
            }
            double fd = (fp - fm) / (2.0 * h), an = g[i];
            double err = fabs(fd - an) / fmax(fabs(fd) + fabs(an), 1e-2);
            if (!isfinite(an) || !isfinite(fd)) err = INFINITY;
            if (!(err <= e)) e = err;
        }
        if (per) per[t] = e;
        if (!(e <= worst)) worst = e;
        free(g);
    }
    return worst;
}

static void test_gradients(void **st) {
    (void)st;
    for (size_t m = 0; m < LRA_ARRAY_LEN(MODES); m++)
        for (int c = 0; c < 2; c++) {
            pbuf pb;
            ah_layer *a = ah_new(&attn_synthesizer, mkparams(&pb, MODES[m]), shp(2, 2, 13, 4, c, 16), 31);
            /* Moderate logits: with very peaked softmaxes the h = 1e-2 truncation error shows. */
            scale_weights(a, 2);
            ah_fill_qkv(a, 13);
            ah_random_mask(a, 0.4f, 8);
            if (c) { /* dropout in the causal runs */
                a->L.training = 1;
                a->L.dropout = 0.2f;
                a->L.step = 5;
            }
            double pt[4];
            int skipped, dense = strstr(MODES[m], "dense") != NULL;
            double ed = dir_check(a, 4, dense), ec = coord_check(a, 120, dense, pt, &skipped);
            double gn = 0;
            for (size_t i = 0; i < a->nw; i++) gn += fabs(a->L.dw[i]);
            printf("  FD [%s%s]: directional %.2e, coordinates %.2e (q %.1e k %.1e v %.1e w %.1e; %d ReLU kinks skipped)\n",
                   MODES[m], c ? " causal dropout" : " masked", ed, ec, pt[0], pt[1], pt[2], pt[3], skipped);
            assert_true(skipped < 40);
            assert_true(ed < 5e-3);
            assert_true(ec < 2e-2);
            assert_true(gn > 1e-3);
            ah_free(a);
        }
    /* The generic harness check on a small dense case. */
    pbuf pb;
    ah_layer *a = ah_new(&attn_synthesizer, mkparams(&pb, "mode=dense mix_dot=true"), shp(1, 1, 9, 4, 0, 9), 5);
    scale_weights(a, 4);
    ah_fill_qkv(a, 3);
    double g = ah_grad_check(a, 200);
    printf("  harness FD [mode=dense mix_dot=true N=9]: %.2e\n", g);
    assert_true(g < 2e-2);
    ah_free(a);
}

static void test_dw_accumulates(void **st) {
    (void)st;
    for (size_t m = 0; m < LRA_ARRAY_LEN(MODES); m++) {
        pbuf pb;
        ah_layer *a = ah_new(&attn_synthesizer, mkparams(&pb, MODES[m]), shp(2, 2, 13, 4, 0, 16), 3);
        scale_weights(a, 4);
        ah_fill_qkv(a, 2);
        ah_backward(a);
        float *g1 = malloc(a->nw * sizeof(float));
        memcpy(g1, a->L.dw, a->nw * sizeof(float));
        a->L.ops->backward(&a->L, a->q, a->k, a->v, a->mask, a->out, a->dout, a->dq, a->dk, a->dv);
        for (size_t i = 0; i < a->nw; i++) assert_float_equal(a->L.dw[i], 2 * g1[i], 1e-6 * (1 + fabsf(g1[i])));
        free(g1);
        ah_free(a);
    }
}

/* ---- padding, causality, determinism ---- */

static void test_padding_invariance(void **st) {
    (void)st;
    for (size_t m = 0; m < LRA_ARRAY_LEN(MODES); m++)
        for (int c = 0; c < 2; c++) {
            pbuf pb;
            double e = ah_padding_invariance(&attn_synthesizer, mkparams(&pb, MODES[m]), shp(2, 2, 25, 8, c, 0), 9, 5);
            printf("  padding +9 [%s%s]: %.2e\n", MODES[m], c ? " causal" : "", e);
            assert_true(e < 1e-6);
        }
}

static void test_causal_invariance(void **st) {
    (void)st;
    for (size_t m = 0; m < LRA_ARRAY_LEN(MODES); m++)
        for (int t = 3; t < 30; t += 13) {
            pbuf pb;
            ah_layer *a = ah_new(&attn_synthesizer, mkparams(&pb, MODES[m]), shp(2, 2, 30, 8, 1, 30), 3);
            scale_weights(a, 4);
            ah_fill_qkv(a, 4);
            assert_true(ah_causal_invariance(a, t, 6) == 0.0);
            ah_free(a);
        }
}

static void test_threads_deterministic(void **st) {
    (void)st;
    static const char *specs[] = {"mode=random mix_dot=true", "mode=random factorized=true", "mode=dense mix_dot=true"};
    for (size_t m = 0; m < LRA_ARRAY_LEN(specs); m++) {
        pbuf pb;
        ah_layer *a = ah_new(&attn_synthesizer, mkparams(&pb, specs[m]), shp(2, 3, 150, 8, 0, 150), 3);
        scale_weights(a, 4);
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
}

static void test_validate_and_sizes(void **st) {
    (void)st;
    pbuf pb;
    char err[256];
    attn_shape s = shp(2, 4, 1000, 16, 0, 1024);
    assert_int_equal(attn_synthesizer.validate(mkparams(&pb, "mode=dense factorized=true"), &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "factorized"));
    attn_shape m = s;
    m.max_len = 500;
    assert_int_equal(attn_synthesizer.validate(mkparams(&pb, ""), &m, err, sizeof err), -1);
    assert_non_null(strstr(err, "max_len"));
    assert_int_equal(attn_synthesizer.validate(mkparams(&pb, ""), &s, err, sizeof err), 0);
    attn_shape c = s;
    c.causal = 1;
    assert_int_equal(attn_synthesizer.validate(mkparams(&pb, "mode=dense"), &c, err, sizeof err), 0);
    assert_int_equal(attn_synthesizer.n_weights(mkparams(&pb, "mode=random"), &s), (size_t)4 * 1024 * 1024);
    assert_int_equal(attn_synthesizer.n_weights(mkparams(&pb, "mode=random factorized=true"), &s), (size_t)2 * 4 * 1024 * 32);
    assert_int_equal(attn_synthesizer.n_weights(mkparams(&pb, "mode=dense"), &s), (size_t)4 * (16 * 16 + 16 + 16 * 1024 + 1024));
    assert_int_equal(attn_synthesizer.cache_bytes(mkparams(&pb, ""), &s), (size_t)2 * 4 * 1000 * 4);
    /* The defaults are LRA's mode (random) without its dot-product mixing (the paper's). */
    const void *p = mkparams(&pb, "");
    char buf[64];
    schema_format(schema_find(attn_synthesizer.schema, attn_synthesizer.n_schema, "mode"), p, buf, sizeof buf);
    assert_string_equal(buf, "random");
    assert_true(attn_synthesizer.caps & ATTN_CAP_MAX_LEN);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_vs_reference),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_top_left_block),
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_dw_accumulates),
        cmocka_unit_test(test_padding_invariance),
        cmocka_unit_test(test_causal_invariance),
        cmocka_unit_test(test_threads_deterministic),
        cmocka_unit_test(test_validate_and_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
