/* test_compress.c - Compressive Transformer compression functions and the attention-reconstruction
 * loss (lra/compress.c).
 *
 * Pools against hand-computed values; the convolutions against naive loops written here from the
 * definitions in compress.h and against central differences (input and parameters); the
 * reconstruction loss against central differences w.r.t. f_c's parameters, with the stop-gradient
 * contract checked (the layer's weights are bit-for-bit unchanged, only dw_fc moves).
 */
#include "testutil.h"

#include "common.h"
#include "compress.h"
#include "layers.h"

#ifdef _OPENMP
#include <omp.h>
#endif

static void set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

/* ---------------------------------------------------------------------------------------------
 * Pools. x (1, 4, 2): rows (1,-2) (3,-5) (0.5,7) (-1,7), c = 2. */
static const float X4[8] = {1, -2, 3, -5, 0.5f, 7, -1, 7};

static void test_max_pool_values(void **state) {
    (void)state;
    compress_cfg cfg = {COMPRESS_MAX_POOL, 2, 2};
    float out[4], dx[8];
    compress_forward(&cfg, NULL, X4, 1, 4, out, NULL);
    const float want[4] = {3, -2, 0.5f, 7};
    assert_memory_equal(out, want, sizeof want);
    const float dout[4] = {10, 20, 30, 40};
    compress_backward(&cfg, NULL, X4, 1, 4, dout, dx, NULL, NULL);
    /* the max row gets the gradient; the tie (7, 7) goes to the first row */
    const float wdx[8] = {0, 20, 10, 0, 30, 40, 0, 0};
    assert_memory_equal(dx, wdx, sizeof wdx);
    assert_int_equal(compress_n_params(&cfg), 0);
}

static void test_mean_pool_values(void **state) {
    (void)state;
    compress_cfg cfg = {COMPRESS_MEAN_POOL, 2, 2};
    float out[4], dx[8];
    compress_forward(&cfg, NULL, X4, 1, 4, out, NULL);
    const float want[4] = {2, -3.5f, -0.25f, 7};
    assert_memory_equal(out, want, sizeof want);
    const float dout[4] = {10, 20, 30, 40};
    compress_backward(&cfg, NULL, X4, 1, 4, dout, dx, NULL, NULL);
    const float wdx[8] = {5, 10, 5, 10, 15, 20, 15, 20};
    assert_memory_equal(dx, wdx, sizeof wdx);
    /* c = 4 over the 4 rows, and c = 1 is the identity */
    cfg.c = 4;
    compress_forward(&cfg, NULL, X4, 1, 4, out, NULL);
    assert_true(out[0] == 0.875f && out[1] == 1.75f);
    cfg.c = 1;
    float id[8];
    compress_forward(&cfg, NULL, X4, 1, 4, id, NULL);
    assert_memory_equal(id, X4, sizeof id);
}

static void test_check_policy(void **state) {
    (void)state;
    char err[256];
    compress_cfg cfg = {COMPRESS_CONV, 4, 8};
    assert_int_equal(compress_check(&cfg, 12, err, sizeof err), 0);
    assert_int_equal(compress_check(&cfg, 0, err, sizeof err), 0);
    assert_int_equal(compress_check(&cfg, 30, err, sizeof err), -1);
    assert_non_null(strstr(err, "model.compression_rate = 4"));
    assert_non_null(strstr(err, "30"));
    cfg.c = 0;
    assert_int_equal(compress_check(&cfg, 8, err, sizeof err), -1);
    assert_non_null(strstr(err, "model.compression_rate"));
    assert_string_equal(compress_kind_names[COMPRESS_DILATED_CONV], "dilated_conv");
}

static void test_param_counts(void **state) {
    (void)state;
    compress_cfg cfg = {COMPRESS_CONV, 3, 5};
    assert_int_equal(compress_n_params(&cfg), 3 * 25 + 5);
    cfg.kind = COMPRESS_DILATED_CONV;
    const int layers[] = {0, 1, 1, 2, 2, 3, 3, 3, 3}; /* c = 1..8 */
    for (int c = 1; c <= 8; c++) {
        cfg.c = c;
        assert_int_equal(compress_dilated_layers(&cfg), layers[c]);
        assert_int_equal(compress_n_params(&cfg), (size_t)layers[c] * (2 * 25 + 5));
    }
    /* init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), deterministic in the stream */
    cfg.kind = COMPRESS_CONV;
    cfg.c = 4;
    size_t n = compress_n_params(&cfg);
    float *w = malloc(n * sizeof *w), *w2 = malloc(n * sizeof *w2);
    rng_t r = rng_make(7, RNG_INIT), r2 = rng_make(7, RNG_INIT);
    compress_init(&cfg, w, &r);
    compress_init(&cfg, w2, &r2);
    assert_memory_equal(w, w2, n * sizeof *w);
    float bound = 1.0f / sqrtf(20.0f), mx = 0;
    for (size_t i = 0; i < n; i++) mx = fmaxf(mx, fabsf(w[i]));
    assert_true(mx <= bound && mx > 0.9f * bound);
    free(w), free(w2);
}

/* ---------------------------------------------------------------------------------------------
 * Convolutions against naive loops from the header's definitions. */
static void naive_conv(const float *w, const float *x, int B, int n, int D, int c, double *out) {
    const float *bias = w + (size_t)c * D * D;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < n / c; t++)
            for (int o = 0; o < D; o++) {
                double a = bias[o];
                for (int m = 0; m < c; m++)
                    for (int i = 0; i < D; i++)
                        a += (double)w[(size_t)o * c * D + (size_t)m * D + i] * x[((size_t)b * n + t * c + m) * D + i];
                out[((size_t)b * (n / c) + t) * D + o] = a;
            }
}

/* y_{l+1}[s] = b_l + A_l y_l[s - 2^l] + C_l y_l[s], ReLU between layers, out[t] = z_last[t*c + c-1]. */
static void naive_dilated(const float *w, const float *x, int B, int n, int D, int c, int nl, double *out) {
    double *y = malloc((size_t)n * D * sizeof *y), *z = malloc((size_t)n * D * sizeof *z);
    const size_t lw = 2 * (size_t)D * D + D;
    for (int b = 0; b < B; b++) {
        for (int e = 0; e < n * D; e++) y[e] = x[(size_t)b * n * D + e];
        for (int l = 0; l < nl; l++) {
            const float *W = w + l * lw, *bias = W + 2 * (size_t)D * D;
            int dil = 1 << l;
            for (int s = 0; s < n; s++)
                for (int o = 0; o < D; o++) {
                    double a = bias[o];
                    for (int i = 0; i < D; i++) {
                        if (s - dil >= 0) a += (double)W[(size_t)o * 2 * D + i] * y[(size_t)(s - dil) * D + i];
                        a += (double)W[(size_t)o * 2 * D + D + i] * y[(size_t)s * D + i];
                    }
                    z[(size_t)s * D + o] = (l < nl - 1 && a < 0) ? 0 : a;
                }
            memcpy(y, z, (size_t)n * D * sizeof *y);
        }
        for (int t = 0; t < n / c; t++)
            for (int o = 0; o < D; o++) out[((size_t)b * (n / c) + t) * D + o] = y[(size_t)(t * c + c - 1) * D + o];
    }
    free(y), free(z);
}

static void test_conv_matches_naive(void **state) {
    (void)state;
    const int kinds[] = {COMPRESS_CONV, COMPRESS_DILATED_CONV};
    const int rates[] = {1, 2, 3, 4, 5};
    const int B = 2, n = 60, D = 6;
    float *x = tu_alloc_randn((size_t)B * n * D, 1.0f, 11);
    for (size_t ki = 0; ki < 2; ki++)
        for (size_t ri = 0; ri < LRA_ARRAY_LEN(rates); ri++) {
            compress_cfg cfg = {kinds[ki], rates[ri], D};
            size_t np = compress_n_params(&cfg), no = (size_t)B * (n / cfg.c) * D;
            float *w = malloc(np * sizeof *w), *out = malloc(no * sizeof *out);
            rng_t r = rng_make(3, RNG_TEST);
            compress_init(&cfg, w, &r);
            void *work = malloc(compress_work_bytes(&cfg, B, n) + 1);
            compress_forward(&cfg, w, x, B, n, out, work);
            double *ref = malloc(no * sizeof *ref);
            if (cfg.kind == COMPRESS_CONV) naive_conv(w, x, B, n, D, cfg.c, ref);
            else naive_dilated(w, x, B, n, D, cfg.c, compress_dilated_layers(&cfg), ref);
            double num = 0, den = 1e-30;
            for (size_t i = 0; i < no; i++) {
                num = fmax(num, fabs(out[i] - ref[i]));
                den = fmax(den, fabs(ref[i]));
            }
            assert_true(num / den < 1e-5);
            free(w), free(out), free(work), free(ref);
        }
    free(x);
}

/* Finite differences of loss = sum(out * g) w.r.t. x and w. */
typedef struct {
    compress_cfg cfg;
    float *w, *x, *g, *out;
    void *work;
    int B, n;
} cctx;

static double closs(void *p) {
    cctx *c = p;
    compress_forward(&c->cfg, c->w, c->x, c->B, c->n, c->out, c->work);
    return tu_dot(c->out, c->g, (size_t)c->B * (c->n / c->cfg.c) * c->cfg.d_model);
}

static void test_conv_gradcheck(void **state) {
    (void)state;
    const struct {
        int kind, c;
    } cs[] = {{COMPRESS_CONV, 3}, {COMPRESS_DILATED_CONV, 2}, {COMPRESS_DILATED_CONV, 4}, {COMPRESS_DILATED_CONV, 3},
              {COMPRESS_MEAN_POOL, 3}, {COMPRESS_MAX_POOL, 3}};
    for (size_t ci = 0; ci < LRA_ARRAY_LEN(cs); ci++) {
        cctx c = {{cs[ci].kind, cs[ci].c, 5}, NULL, NULL, NULL, NULL, NULL, 2, 12};
        const size_t nx = (size_t)c.B * c.n * 5, no = (size_t)c.B * (c.n / c.cfg.c) * 5, np = compress_n_params(&c.cfg);
        c.x = tu_alloc_randn(nx, 1.0f, 20 + ci);
        c.g = tu_alloc_randn(no, 1.0f, 40 + ci);
        c.out = malloc(no * sizeof(float));
        c.w = np ? malloc(np * sizeof(float)) : NULL;
        rng_t r = rng_make(5 + ci, RNG_TEST);
        if (np) compress_init(&c.cfg, c.w, &r);
        c.work = malloc(compress_work_bytes(&c.cfg, c.B, c.n) + 1);
        float *dx = malloc(nx * sizeof(float)), *dw = np ? calloc(np, sizeof(float)) : NULL;
        compress_forward(&c.cfg, c.w, c.x, c.B, c.n, c.out, c.work);
        compress_backward(&c.cfg, c.w, c.x, c.B, c.n, c.g, dx, dw, c.work);
        /* Linear maps (conv, mean) take a large step (float rounding of the loss stays small); the
         * piecewise-linear ones (ReLU stack, max) a small one, so that few steps cross a kink. */
        const int smooth = c.cfg.kind == COMPRESS_CONV || c.cfg.kind == COMPRESS_MEAN_POOL ||
                           (c.cfg.kind == COMPRESS_DILATED_CONV && compress_dilated_layers(&c.cfg) == 1);
        const float hs = smooth ? 1e-2f : 1e-3f;
        double ex = tu_fd_check(closs, &c, c.x, dx, nx, 200, hs, 1e-2);
        double ew = np ? tu_fd_check(closs, &c, c.w, dw, np, 300, hs, 1e-2) : 0;
        print_message("%s c=%d: dx %.1e dw %.1e (%zu params)\n", compress_kind_names[c.cfg.kind], c.cfg.c, ex, ew, np);
        /* tolerance: float32 forward, steps above; a wrong gradient gives O(1) errors */
        const double tol = smooth ? 2e-3 : 1e-2;
        assert_true(ex < tol);
        assert_true(ew < tol);
        if (np) {
            /* dw accumulates; dx may be NULL */
            float *dw1 = malloc(np * sizeof(float));
            memcpy(dw1, dw, np * sizeof(float));
            compress_forward(&c.cfg, c.w, c.x, c.B, c.n, c.out, c.work);
            compress_backward(&c.cfg, c.w, c.x, c.B, c.n, c.g, NULL, dw, c.work);
            for (size_t i = 0; i < np; i++) assert_true(dw[i] == 2.0f * dw1[i]);
            free(dw1);
        }
        free(c.x), free(c.g), free(c.out), free(c.w), free(c.work), free(dx), free(dw);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Reconstruction loss. */
typedef struct {
    compress_cfg cfg;
    int B, L, n, H, Dh;
    float *w, *dw, *h, *mem, *Wq, *Wk, *Wv, *lnw, *lnb;
    void *work;
} rctx;

static rctx rctx_new(int kind, int c, int with_ln, uint64_t seed) {
    rctx x = {{kind, c, 8}, 2, 5, 12, 2, 3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    const int D = 8, HD = x.H * x.Dh;
    size_t np = compress_n_params(&x.cfg);
    x.w = np ? malloc(np * sizeof(float)) : NULL;
    x.dw = np ? calloc(np, sizeof(float)) : NULL;
    rng_t r = rng_make(seed, RNG_INIT);
    if (np) compress_init(&x.cfg, x.w, &r);
    x.h = tu_alloc_randn((size_t)x.B * x.L * D, 1.0f, seed + 1);
    x.mem = tu_alloc_randn((size_t)x.B * x.n * D, 1.0f, seed + 2);
    x.Wq = tu_alloc_randn((size_t)HD * D, 0.6f, seed + 3);
    x.Wk = tu_alloc_randn((size_t)HD * D, 0.6f, seed + 4);
    x.Wv = tu_alloc_randn((size_t)HD * D, 0.6f, seed + 5);
    if (with_ln) {
        x.lnw = tu_alloc_randn(D, 0.3f, seed + 6);
        x.lnb = tu_alloc_randn(D, 0.3f, seed + 7);
        for (int i = 0; i < D; i++) x.lnw[i] += 1.0f;
    }
    x.work = malloc(compress_recon_work_bytes(&x.cfg, x.B, x.L, x.n, x.H, x.Dh));
    return x;
}

static void rctx_free(rctx *x) {
    free(x->w), free(x->dw), free(x->h), free(x->mem), free(x->Wq), free(x->Wk), free(x->Wv), free(x->lnw),
        free(x->lnb), free(x->work);
}

static float rloss_grad(rctx *x, float *dw, float weight) {
    return compress_recon_loss(&x->cfg, x->w, dw, x->h, x->mem, x->B, x->L, x->n, x->H, x->Dh, x->Wq, x->Wk, x->Wv,
                               x->lnw, x->lnb, weight, x->work);
}

/* The FD loss in double: the float return value is the double mean rounded once; scaled by 1e3 so
 * its rounding (1e-7 relative) stays far below the differences taken. */
static double rloss(void *p) { return 1e3 * (double)rloss_grad(p, NULL, 1.0f); }

static void test_recon_gradcheck(void **state) {
    (void)state;
    const struct {
        int kind, c, ln;
    } cs[] = {{COMPRESS_CONV, 3, 1}, {COMPRESS_CONV, 4, 0}, {COMPRESS_DILATED_CONV, 2, 1}, {COMPRESS_DILATED_CONV, 2, 0}};
    /* The dilated stack is checked with c = 2 (one layer, no ReLU): the loss comes back as a float,
     * too coarse for the small steps that avoid ReLU kinks; the multi-layer stack's backward is
     * checked through compress_backward in test_conv_gradcheck. */
    for (size_t ci = 0; ci < LRA_ARRAY_LEN(cs); ci++) {
        rctx x = rctx_new(cs[ci].kind, cs[ci].c, cs[ci].ln, 90 + ci);
        size_t np = compress_n_params(&x.cfg);
        float loss = rloss_grad(&x, x.dw, 1e3f);
        /* errors relative to |fd| + |an|, floored at 2% of the largest gradient: the float32 loss
         * limits how small a component can be resolved */
        double gmax = 0;
        for (size_t i = 0; i < np; i++) gmax = fmax(gmax, fabs(x.dw[i]));
        double e = tu_fd_check(rloss, &x, x.w, x.dw, np, 300, 3e-3f, 0.02 * gmax);
        print_message("recon %s c=%d ln=%d: loss %.4f, max |dw_fc| %.3g, fd err %.1e\n", compress_kind_names[x.cfg.kind],
                      x.cfg.c, cs[ci].ln, loss, gmax, e);
        assert_true(loss > 0);
        assert_true(e < 1e-2);
        rctx_free(&x);
    }
}

/* Stop-gradient contract: the layer's weights, LayerNorm, h and old_mem are bit-for-bit unchanged;
 * only dw_fc moves; it accumulates and scales with `weight`. */
static void test_recon_stop_gradient(void **state) {
    (void)state;
    rctx x = rctx_new(COMPRESS_CONV, 3, 1, 200);
    const int D = 8, HD = x.H * x.Dh;
    size_t nw = (size_t)HD * D, np = compress_n_params(&x.cfg);
    float *Wq0 = malloc(nw * 4), *Wk0 = malloc(nw * 4), *Wv0 = malloc(nw * 4), *h0 = malloc((size_t)x.B * x.L * D * 4),
          *m0 = malloc((size_t)x.B * x.n * D * 4), *lw0 = malloc(D * 4), *lb0 = malloc(D * 4), *w0 = malloc(np * 4);
    memcpy(Wq0, x.Wq, nw * 4), memcpy(Wk0, x.Wk, nw * 4), memcpy(Wv0, x.Wv, nw * 4);
    memcpy(h0, x.h, (size_t)x.B * x.L * D * 4), memcpy(m0, x.mem, (size_t)x.B * x.n * D * 4);
    memcpy(lw0, x.lnw, D * 4), memcpy(lb0, x.lnb, D * 4), memcpy(w0, x.w, np * 4);
    float l1 = rloss_grad(&x, x.dw, 1.0f);
    assert_memory_equal(x.Wq, Wq0, nw * 4);
    assert_memory_equal(x.Wk, Wk0, nw * 4);
    assert_memory_equal(x.Wv, Wv0, nw * 4);
    assert_memory_equal(x.lnw, lw0, D * 4);
    assert_memory_equal(x.lnb, lb0, D * 4);
    assert_memory_equal(x.h, h0, (size_t)x.B * x.L * D * 4);
    assert_memory_equal(x.mem, m0, (size_t)x.B * x.n * D * 4);
    assert_memory_equal(x.w, w0, np * 4);
    double g2 = 0;
    for (size_t i = 0; i < np; i++) g2 += (double)x.dw[i] * x.dw[i];
    assert_true(g2 > 0);
    /* accumulate: a second call with weight 0.5 adds half the gradient */
    float *dw1 = malloc(np * 4);
    memcpy(dw1, x.dw, np * 4);
    float l2 = rloss_grad(&x, x.dw, 0.5f);
    assert_true(l1 == l2);
    for (size_t i = 0; i < np; i++) assert_true(fabsf(x.dw[i] - 1.5f * dw1[i]) <= 1e-6f * fabsf(dw1[i]) + 1e-12f);
    free(Wq0), free(Wk0), free(Wv0), free(h0), free(m0), free(lw0), free(lb0), free(w0), free(dw1);
    rctx_free(&x);
}

/* The target is computed independently here: content attention over LN(old_mem), against which a
 * mean pool with c = 1 (the identity) must give exactly zero loss; a c = 2 mean pool must not. */
static void test_recon_identity_zero(void **state) {
    (void)state;
    for (int ln = 0; ln <= 1; ln++) {
        rctx x = rctx_new(COMPRESS_MEAN_POOL, 1, ln, 300);
        assert_true(rloss_grad(&x, NULL, 1.0f) == 0.0f);
        rctx_free(&x);
        rctx y = rctx_new(COMPRESS_MAX_POOL, 1, ln, 301);
        assert_true(rloss_grad(&y, NULL, 1.0f) == 0.0f);
        rctx_free(&y);
        rctx z = rctx_new(COMPRESS_MEAN_POOL, 2, ln, 302);
        assert_true(rloss_grad(&z, NULL, 1.0f) > 1e-4f);
        rctx_free(&z);
    }
}

/* The loss value against an independent naive computation (post-LN variant, mean pool c = 2). */
static void test_recon_value(void **state) {
    (void)state;
    rctx x = rctx_new(COMPRESS_MEAN_POOL, 2, 0, 400);
    const int B = x.B, L = x.L, n = x.n, H = x.H, Dh = x.Dh, D = 8, HD = H * Dh, nc = n / 2;
    float got = rloss_grad(&x, NULL, 1.0f);
    double *cm = malloc((size_t)B * nc * D * sizeof *cm);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < nc; t++)
            for (int d = 0; d < D; d++)
                cm[((size_t)b * nc + t) * D + d] =
                    0.5 * ((double)x.mem[((size_t)b * n + 2 * t) * D + d] + x.mem[((size_t)b * n + 2 * t + 1) * D + d]);
    double sum = 0;
    for (int b = 0; b < B; b++)
        for (int i = 0; i < L; i++)
            for (int h = 0; h < H; h++) {
                double q[8] = {0}, o[2][8] = {{0}};
                for (int e = 0; e < Dh; e++)
                    for (int d = 0; d < D; d++)
                        q[e] += (double)x.Wq[(size_t)(h * Dh + e) * D + d] * x.h[((size_t)b * L + i) * D + d];
                for (int which = 0; which < 2; which++) {
                    int nk = which ? nc : n;
                    double sc[64], kk[64][8], vv[64][8], mx = -INFINITY, z = 0;
                    for (int j = 0; j < nk; j++) {
                        for (int e = 0; e < Dh; e++) {
                            kk[j][e] = vv[j][e] = 0;
                            for (int d = 0; d < D; d++) {
                                double m = which ? cm[((size_t)b * nc + j) * D + d] : x.mem[((size_t)b * n + j) * D + d];
                                kk[j][e] += (double)x.Wk[(size_t)(h * Dh + e) * D + d] * m;
                                vv[j][e] += (double)x.Wv[(size_t)(h * Dh + e) * D + d] * m;
                            }
                        }
                        sc[j] = 0;
                        for (int e = 0; e < Dh; e++) sc[j] += q[e] * kk[j][e] / sqrt((double)Dh);
                        mx = fmax(mx, sc[j]);
                    }
                    for (int j = 0; j < nk; j++) z += exp(sc[j] - mx);
                    for (int j = 0; j < nk; j++)
                        for (int e = 0; e < Dh; e++) o[which][e] += exp(sc[j] - mx) / z * vv[j][e];
                }
                for (int e = 0; e < Dh; e++) sum += (o[1][e] - o[0][e]) * (o[1][e] - o[0][e]);
            }
    double want = sum / ((double)B * L * HD);
    print_message("recon loss %.7f, naive %.7f\n", got, want);
    assert_true(fabs(got - want) <= 1e-4 * want);
    free(cm);
    rctx_free(&x);
}

static void test_recon_threads_bitwise(void **state) {
    (void)state;
    rctx a = rctx_new(COMPRESS_DILATED_CONV, 4, 1, 500), b = rctx_new(COMPRESS_DILATED_CONV, 4, 1, 500);
    set_threads(1);
    float la = rloss_grad(&a, a.dw, 1.0f);
    set_threads(2);
    float lb = rloss_grad(&b, b.dw, 1.0f);
    set_threads(1);
    assert_true(la == lb);
    assert_memory_equal(a.dw, b.dw, compress_n_params(&a.cfg) * sizeof(float));
    rctx_free(&a);
    rctx_free(&b);
}

int main(void) {
    setenv("OMP_WAIT_POLICY", "passive", 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_max_pool_values),
        cmocka_unit_test(test_mean_pool_values),
        cmocka_unit_test(test_check_policy),
        cmocka_unit_test(test_param_counts),
        cmocka_unit_test(test_conv_matches_naive),
        cmocka_unit_test(test_conv_gradcheck),
        cmocka_unit_test(test_recon_gradcheck),
        cmocka_unit_test(test_recon_stop_gradient),
        cmocka_unit_test(test_recon_identity_zero),
        cmocka_unit_test(test_recon_value),
        cmocka_unit_test(test_recon_threads_bitwise),
    };
    return cmocka_run_group_tests_name("compress", tests, NULL, NULL);
}
