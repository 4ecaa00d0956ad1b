/* test_layers.c - lra/layers.c: finite-difference gradients of every layer w.r.t. every input and
 * parameter, hand-computed forward values, the gradient convention (input grads overwritten,
 * parameter grads accumulated), dropout statistics, and 1-thread vs 2-thread bitwise identity. */
#include "testutil.h"

#include <omp.h>

#include "../lra/layers.h"

/* FD settings: float32 kernels, loss accumulated in double. */
#define FD_H 1e-2f
#define FD_FLOOR 1e-3
#define FD_TOL 1e-2

static float *zalloc(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

static float *fdup(const float *x, size_t n) {
    float *y = malloc(n * sizeof *y);
    memcpy(y, x, n * sizeof *y);
    return y;
}

static int same_bits(const float *a, const float *b, size_t n) { return memcmp(a, b, n * sizeof(float)) == 0; }

/* ------------------------------------------------------------------------------------------ */
/* Embedding */

typedef struct {
    int BN, D, V;
    int32_t *ids;
    float *wte, *out, *wgt;
} emb_ctx;

static double emb_loss(void *p) {
    emb_ctx *c = p;
    embedding_forward(c->out, c->ids, c->wte, c->BN, c->D);
    return tu_dot(c->out, c->wgt, (size_t)c->BN * c->D);
}

static void test_embedding(void **state) {
    (void)state;
    emb_ctx c = {.BN = 9, .D = 5, .V = 7};
    int32_t ids[9] = {3, 0, 6, 3, 3, 1, 6, 2, 5};
    c.ids = ids;
    c.wte = tu_alloc_randn((size_t)c.V * c.D, 1.0f, 1);
    c.wgt = tu_alloc_randn((size_t)c.BN * c.D, 1.0f, 2);
    c.out = zalloc((size_t)c.BN * c.D);
    emb_loss(&c);
    /* forward: rows are copies */
    for (int r = 0; r < c.BN; r++)
        for (int d = 0; d < c.D; d++) assert_true(c.out[r * c.D + d] == c.wte[ids[r] * c.D + d]);
    float *dwte = zalloc((size_t)c.V * c.D);
    embedding_backward(dwte, c.wgt, ids, c.BN, c.D, c.V);
    /* id 4 never appears: its gradient row stays zero */
    for (int d = 0; d < c.D; d++) assert_true(dwte[4 * c.D + d] == 0.0f);
    double e = tu_fd_check(emb_loss, &c, c.wte, dwte, (size_t)c.V * c.D, 1000, FD_H, FD_FLOOR);
    assert_true(e < 1e-3);
    /* accumulation: a second call doubles */
    float *once = fdup(dwte, (size_t)c.V * c.D);
    embedding_backward(dwte, c.wgt, ids, c.BN, c.D, c.V);
    for (int i = 0; i < c.V * c.D; i++) assert_float_equal(dwte[i], 2.0f * once[i], 1e-6f * (1 + fabsf(once[i])));
    free(once); free(dwte); free(c.wte); free(c.wgt); free(c.out);
}

/* ------------------------------------------------------------------------------------------ */
/* Positions */

static void test_sinusoidal_values(void **state) {
    (void)state;
    int N = 12, D = 8, half = 4;
    float *pe = zalloc((size_t)N * D);
    posenc_sinusoidal(pe, N, D);
    /* position 0: sin 0 = 0 in the first half, cos 0 = 1 in the second */
    for (int i = 0; i < half; i++) {
        assert_float_equal(pe[i], 0.0f, 0.0f);
        assert_float_equal(pe[half + i], 1.0f, 0.0f);
    }
    /* w_0 = 1: pe[1][0] = sin 1, pe[1][4] = cos 1 */
    assert_float_equal(pe[1 * D + 0], 0.8414710f, 1e-6f);
    assert_float_equal(pe[1 * D + half], 0.5403023f, 1e-6f);
    /* w_1 = 10000^(-1/3) = 0.0464159: pe[5][1] = sin(0.2320794) = 0.2300 */
    assert_float_equal(pe[5 * D + 1], 0.2300023f, 1e-6f);
    assert_float_equal(pe[5 * D + half + 1], 0.9731908f, 1e-6f);
    /* w_3 = 1e-4 (last frequency): pe[11][3] = sin(1.1e-3) */
    assert_float_equal(pe[11 * D + 3], 1.0999998e-3f, 1e-9f);
    /* every entry against the formula (concatenated, not interleaved) */
    for (int pos = 0; pos < N; pos++)
        for (int i = 0; i < half; i++) {
            double w = pow(10000.0, -(double)i / (half - 1));
            assert_float_equal(pe[pos * D + i], (float)sin(pos * w), 1e-6f);
            assert_float_equal(pe[pos * D + half + i], (float)cos(pos * w), 1e-6f);
        }
    free(pe);
}

typedef struct {
    int B, N, D;
    float *x0, *x, *pe, *wgt;
} pos_ctx;

static double pos_loss(void *p) {
    pos_ctx *c = p;
    size_t n = (size_t)c->B * c->N * c->D;
    memcpy(c->x, c->x0, n * sizeof(float));
    add_positions_forward(c->x, c->pe, c->B, c->N, c->D);
    return tu_dot(c->x, c->wgt, n);
}

static void test_learned_positions(void **state) {
    (void)state;
    pos_ctx c = {.B = 3, .N = 5, .D = 6};
    size_t n = (size_t)c.B * c.N * c.D, npe = (size_t)c.N * c.D;
    c.x0 = tu_alloc_randn(n, 1.0f, 3);
    c.x = zalloc(n);
    c.pe = tu_alloc_randn(npe, 0.02f, 4);
    c.wgt = tu_alloc_randn(n, 1.0f, 5);
    pos_loss(&c);
    assert_float_equal(c.x[(2 * c.N + 4) * c.D + 3], c.x0[(2 * c.N + 4) * c.D + 3] + c.pe[4 * c.D + 3], 1e-7f);
    float *dpe = zalloc(npe);
    add_positions_backward(dpe, c.wgt, c.B, c.N, c.D);
    double e = tu_fd_check(pos_loss, &c, c.pe, dpe, npe, 1000, FD_H, FD_FLOOR);
    assert_true(e < 1e-3);
    float *once = fdup(dpe, npe);
    add_positions_backward(dpe, c.wgt, c.B, c.N, c.D);
    for (size_t i = 0; i < npe; i++) assert_float_equal(dpe[i], 2.0f * once[i], 1e-6f * (1 + fabsf(once[i])));
    free(once); free(dpe); free(c.x0); free(c.x); free(c.pe); free(c.wgt);
}

/* ------------------------------------------------------------------------------------------ */
/* LayerNorm */

static void test_layernorm_values(void **state) {
    (void)state;
    float x[4] = {1, 2, 3, 4}, w[4] = {1, 1, 2, 2}, b[4] = {0, 0, 1, -1}, out[4], mean, rstd;
    layernorm_forward(out, &mean, &rstd, x, w, b, 1, 4);
    /* mean 2.5, biased variance 1.25, rstd = 1/sqrt(1.25 + 1e-6) = 0.8944268 */
    assert_float_equal(mean, 2.5f, 0.0f);
    assert_float_equal(rstd, 0.8944268f, 1e-6f);
    assert_float_equal(out[0], -1.5f * 0.8944268f, 1e-6f);
    assert_float_equal(out[1], -0.5f * 0.8944268f, 1e-6f);
    assert_float_equal(out[2], 0.5f * 0.8944268f * 2 + 1, 1e-6f);
    assert_float_equal(out[3], 1.5f * 0.8944268f * 2 - 1, 1e-6f);
    /* a constant row normalises to b (variance 0: rstd = 1/sqrt(eps) = 1000) */
    float xc[3] = {7, 7, 7}, wc[3] = {1, 1, 1}, bc[3] = {0.5f, -0.5f, 0}, oc[3];
    layernorm_forward(oc, &mean, &rstd, xc, wc, bc, 1, 3);
    assert_float_equal(rstd, 1000.0f, 1e-2f);
    for (int i = 0; i < 3; i++) assert_float_equal(oc[i], bc[i], 0.0f);
}

typedef struct {
    int BN, C;
    float *inp, *w, *b, *out, *mean, *rstd, *wgt;
} ln_ctx;

static double ln_loss(void *p) {
    ln_ctx *c = p;
    layernorm_forward(c->out, c->mean, c->rstd, c->inp, c->w, c->b, c->BN, c->C);
    return tu_dot(c->out, c->wgt, (size_t)c->BN * c->C);
}

static void test_layernorm_grad(void **state) {
    (void)state;
    ln_ctx c = {.BN = 4, .C = 13}; /* 13: exercises the 8-lane tail */
    size_t n = (size_t)c.BN * c.C;
    c.inp = tu_alloc_randn(n, 1.0f, 6);
    for (size_t i = 0; i < n; i++) c.inp[i] += 0.5f; /* non-zero mean */
    c.w = tu_alloc_randn((size_t)c.C, 1.0f, 7);
    c.b = tu_alloc_randn((size_t)c.C, 1.0f, 8);
    c.wgt = tu_alloc_randn(n, 1.0f, 9);
    c.out = zalloc(n);
    c.mean = zalloc((size_t)c.BN);
    c.rstd = zalloc((size_t)c.BN);
    ln_loss(&c);
    float *dinp = zalloc(n), *dw = zalloc((size_t)c.C), *db = zalloc((size_t)c.C);
    layernorm_backward(dinp, dw, db, c.wgt, c.inp, c.w, c.mean, c.rstd, c.BN, c.C);
    double ei = tu_fd_check(ln_loss, &c, c.inp, dinp, n, 1000, FD_H, FD_FLOOR);
    double ew = tu_fd_check(ln_loss, &c, c.w, dw, (size_t)c.C, 1000, FD_H, FD_FLOOR);
    double eb = tu_fd_check(ln_loss, &c, c.b, db, (size_t)c.C, 1000, FD_H, FD_FLOOR);
    print_message("layernorm fd rel err: inp %.2e w %.2e b %.2e\n", ei, ew, eb);
    assert_true(ei < FD_TOL);
    assert_true(ew < FD_TOL);
    assert_true(eb < FD_TOL);
    /* convention: second call overwrites dinp, doubles dw and db */
    ln_loss(&c);
    float *dinp1 = fdup(dinp, n), *dw1 = fdup(dw, (size_t)c.C), *db1 = fdup(db, (size_t)c.C);
    for (size_t i = 0; i < n; i++) dinp[i] = 1e9f; /* garbage must be overwritten */
    layernorm_backward(dinp, dw, db, c.wgt, c.inp, c.w, c.mean, c.rstd, c.BN, c.C);
    assert_true(same_bits(dinp, dinp1, n));
    for (int i = 0; i < c.C; i++) {
        assert_float_equal(dw[i], 2.0f * dw1[i], 1e-6f * (1 + fabsf(dw1[i])));
        assert_float_equal(db[i], 2.0f * db1[i], 1e-6f * (1 + fabsf(db1[i])));
    }
    free(dinp1); free(dw1); free(db1);
    free(dinp); free(dw); free(db);
    free(c.inp); free(c.w); free(c.b); free(c.wgt); free(c.out); free(c.mean); free(c.rstd);
}

/* ------------------------------------------------------------------------------------------ */
/* Linear */

typedef struct {
    int BN, C, OC;
    float *inp, *w, *b, *out, *wgt;
} lin_ctx;

static double lin_loss(void *p) {
    lin_ctx *c = p;
    linear_forward(c->out, c->inp, c->w, c->b, c->BN, c->C, c->OC);
    return tu_dot(c->out, c->wgt, (size_t)c->BN * c->OC);
}

static void test_linear(void **state) {
    (void)state;
    /* forward against a hand-computed 1x2 -> 3 product */
    float x[2] = {1, 2}, w[6] = {1, 0, 0, 1, 2, -1}, b[3] = {0.5f, 0, -1}, o[3] = {99, 99, 99};
    linear_forward(o, x, w, b, 1, 2, 3);
    assert_float_equal(o[0], 1.5f, 0);
    assert_float_equal(o[1], 2.0f, 0);
    assert_float_equal(o[2], -1.0f, 0);
    linear_forward(o, x, w, NULL, 1, 2, 3); /* no bias: garbage in out is overwritten */
    assert_float_equal(o[0], 1.0f, 0);
    assert_float_equal(o[2], 0.0f, 0);

    lin_ctx c = {.BN = 7, .C = 6, .OC = 5};
    size_t ni = (size_t)c.BN * c.C, nw = (size_t)c.OC * c.C, no = (size_t)c.BN * c.OC;
    c.inp = tu_alloc_randn(ni, 1.0f, 10);
    c.w = tu_alloc_randn(nw, 0.5f, 11);
    c.b = tu_alloc_randn((size_t)c.OC, 0.5f, 12);
    c.wgt = tu_alloc_randn(no, 1.0f, 13);
    c.out = zalloc(no);
    float *dinp = zalloc(ni), *dw = zalloc(nw), *db = zalloc((size_t)c.OC);
    linear_backward(dinp, dw, db, c.wgt, c.inp, c.w, c.BN, c.C, c.OC);
    double ei = tu_fd_check(lin_loss, &c, c.inp, dinp, ni, 1000, FD_H, FD_FLOOR);
    double ew = tu_fd_check(lin_loss, &c, c.w, dw, nw, 1000, FD_H, FD_FLOOR);
    double eb = tu_fd_check(lin_loss, &c, c.b, db, (size_t)c.OC, 1000, FD_H, FD_FLOOR);
    print_message("linear fd rel err: inp %.2e w %.2e b %.2e\n", ei, ew, eb);
    assert_true(ei < 1e-3);
    assert_true(ew < 1e-3);
    assert_true(eb < 1e-3);
    /* convention */
    float *dinp1 = fdup(dinp, ni), *dw1 = fdup(dw, nw), *db1 = fdup(db, (size_t)c.OC);
    for (size_t i = 0; i < ni; i++) dinp[i] = -3e8f;
    linear_backward(dinp, dw, db, c.wgt, c.inp, c.w, c.BN, c.C, c.OC);
    assert_true(same_bits(dinp, dinp1, ni));
    for (size_t i = 0; i < nw; i++) assert_float_equal(dw[i], 2.0f * dw1[i], 1e-6f * (1 + fabsf(dw1[i])));
    for (int i = 0; i < c.OC; i++) assert_float_equal(db[i], 2.0f * db1[i], 1e-6f * (1 + fabsf(db1[i])));
    free(dinp1); free(dw1); free(db1);
    free(dinp); free(dw); free(db);
    free(c.inp); free(c.w); free(c.b); free(c.wgt); free(c.out);
}

/* ------------------------------------------------------------------------------------------ */
/* Element-wise activations and dropout */

typedef struct {
    size_t n;
    int kind; /* 0 gelu, 1 relu, 2 dropout */
    float p;
    float *inp, *out, *wgt;
} ew_ctx;

static double ew_loss(void *q) {
    ew_ctx *c = q;
    if (c->kind == 0) gelu_forward(c->out, c->inp, c->n);
    else if (c->kind == 1) relu_forward(c->out, c->inp, c->n);
    else dropout_forward(c->out, c->inp, c->n, c->p, 42, 7);
    return tu_dot(c->out, c->wgt, c->n);
}

static void test_gelu(void **state) {
    (void)state;
    float x[4] = {1.0f, 0.0f, -1.0f, 3.0f}, y[4];
    gelu_forward(y, x, 4);
    assert_float_equal(y[0], 0.841192f, 1e-6f);  /* tanh approximation (exact erf: 0.841345) */
    assert_float_equal(y[1], 0.0f, 0.0f);
    assert_float_equal(y[2], -0.158808f, 1e-6f);
    assert_float_equal(y[3], 2.996363f, 1e-6f);
    ew_ctx c = {.n = 64, .kind = 0};
    c.inp = tu_alloc_randn(c.n, 2.0f, 14);
    c.wgt = tu_alloc_randn(c.n, 1.0f, 15);
    c.out = zalloc(c.n);
    float *dinp = zalloc(c.n);
    gelu_backward(dinp, c.inp, c.wgt, c.n);
    double e = tu_fd_check(ew_loss, &c, c.inp, dinp, c.n, 1000, FD_H, FD_FLOOR);
    print_message("gelu fd rel err %.2e\n", e);
    assert_true(e < FD_TOL);
    /* gelu'(0) = 0.5 */
    float z = 0.0f, one = 1.0f, dz;
    gelu_backward(&dz, &z, &one, 1);
    assert_float_equal(dz, 0.5f, 1e-7f);
    free(dinp); free(c.inp); free(c.wgt); free(c.out);
}

static void test_relu(void **state) {
    (void)state;
    ew_ctx c = {.n = 64, .kind = 1};
    c.inp = tu_alloc_randn(c.n, 1.0f, 16);
    for (size_t i = 0; i < c.n; i++) /* keep every input at least 0.1 from the kink */
        c.inp[i] = c.inp[i] >= 0 ? c.inp[i] + 0.1f : c.inp[i] - 0.1f;
    c.wgt = tu_alloc_randn(c.n, 1.0f, 17);
    c.out = zalloc(c.n);
    ew_loss(&c);
    for (size_t i = 0; i < c.n; i++) assert_true(c.out[i] == (c.inp[i] > 0 ? c.inp[i] : 0.0f));
    float *dinp = zalloc(c.n);
    relu_backward(dinp, c.inp, c.wgt, c.n);
    double e = tu_fd_check(ew_loss, &c, c.inp, dinp, c.n, 1000, FD_H, FD_FLOOR);
    assert_true(e < 1e-4);
    free(dinp); free(c.inp); free(c.wgt); free(c.out);
}

static void test_dropout_grad(void **state) {
    (void)state;
    ew_ctx c = {.n = 200, .kind = 2, .p = 0.3f};
    c.inp = tu_alloc_randn(c.n, 1.0f, 18);
    c.wgt = tu_alloc_randn(c.n, 1.0f, 19);
    c.out = zalloc(c.n);
    float *dinp = zalloc(c.n);
    dropout_backward(dinp, c.wgt, c.n, c.p, 42, 7);
    double e = tu_fd_check(ew_loss, &c, c.inp, dinp, c.n, 1000, FD_H, FD_FLOOR);
    assert_true(e < 1e-3);
    free(dinp); free(c.inp); free(c.wgt); free(c.out);
}

static void test_dropout_stats(void **state) {
    (void)state;
    size_t n = 100000;
    float p = 0.3f;
    float *x = malloc(n * sizeof *x), *y = zalloc(n), *y2 = zalloc(n), *y3 = zalloc(n), *g = zalloc(n);
    for (size_t i = 0; i < n; i++) x[i] = 1.0f + (float)(i % 7);
    dropout_forward(y, x, n, p, 123, 5);
    size_t dropped = 0;
    for (size_t i = 0; i < n; i++) {
        if (y[i] == 0.0f) dropped++;
        else assert_float_equal(y[i], x[i] / (1.0f - p), 1e-5f * y[i]);
    }
    double frac = (double)dropped / (double)n;
    print_message("dropout p=0.3: dropped fraction %.4f\n", frac);
    assert_true(fabs(frac - p) < 0.006); /* 4 sigma at n = 1e5 */
    /* same (seed, stream): same mask; another stream: a different one */
    dropout_forward(y2, x, n, p, 123, 5);
    assert_true(same_bits(y, y2, n));
    dropout_forward(y3, x, n, p, 123, 6);
    size_t differ = 0;
    for (size_t i = 0; i < n; i++) differ += (y[i] == 0.0f) != (y3[i] == 0.0f);
    /* independent masks differ in 2 p (1-p) = 42% of places */
    assert_true(differ > n / 3 && differ < n / 2);
    /* backward uses the forward's mask and scale */
    float *ones = malloc(n * sizeof *ones);
    for (size_t i = 0; i < n; i++) ones[i] = 1.0f;
    dropout_backward(g, ones, n, p, 123, 5);
    for (size_t i = 0; i < n; i++) assert_true(g[i] == (y[i] == 0.0f ? 0.0f : 1.0f / (1.0f - p)));
    /* in place gives the same result; p = 0 is a copy */
    memcpy(y2, x, n * sizeof(float));
    dropout_forward(y2, y2, n, p, 123, 5);
    assert_true(same_bits(y, y2, n));
    dropout_forward(y3, x, n, 0.0f, 123, 5);
    assert_true(same_bits(y3, x, n));
    free(x); free(y); free(y2); free(y3); free(g); free(ones);
}

static void test_residual(void **state) {
    (void)state;
    float a[3] = {1, 2, 3}, b[3] = {0.5f, -2, 10};
    residual_forward(a, a, b, 3);
    assert_float_equal(a[0], 1.5f, 0);
    assert_float_equal(a[1], 0.0f, 0);
    assert_float_equal(a[2], 13.0f, 0);
}

/* ------------------------------------------------------------------------------------------ */
/* Pooling */

typedef struct {
    int B, N, D, mean;
    const uint8_t *mask;
    float *x, *out, *wgt;
} pool_ctx;

static double pool_loss(void *p) {
    pool_ctx *c = p;
    if (c->mean) pool_mean_forward(c->out, c->x, c->mask, c->B, c->N, c->D);
    else pool_cls_forward(c->out, c->x, c->B, c->N, c->D);
    return tu_dot(c->out, c->wgt, (size_t)c->B * c->D);
}

static void test_pool_cls(void **state) {
    (void)state;
    pool_ctx c = {.B = 3, .N = 4, .D = 5, .mean = 0};
    size_t n = (size_t)c.B * c.N * c.D;
    c.x = tu_alloc_randn(n, 1.0f, 20);
    c.wgt = tu_alloc_randn((size_t)c.B * c.D, 1.0f, 21);
    c.out = zalloc((size_t)c.B * c.D);
    pool_loss(&c);
    assert_true(c.out[2 * c.D + 3] == c.x[(2 * c.N + 0) * c.D + 3]);
    float *dx = malloc(n * sizeof *dx);
    for (size_t i = 0; i < n; i++) dx[i] = 5.0f; /* overwritten, including the zeros */
    pool_cls_backward(dx, c.wgt, c.B, c.N, c.D);
    double e = tu_fd_check(pool_loss, &c, c.x, dx, n, 1000, FD_H, FD_FLOOR);
    assert_true(e < 1e-4);
    free(dx); free(c.x); free(c.wgt); free(c.out);
}

static void test_pool_mean(void **state) {
    (void)state;
    enum { B = 3, N = 5, D = 4 };
    /* row 0: 3 real tokens, row 1: all real, row 2: all padding */
    static const uint8_t mask[B * N] = {1, 1, 0, 1, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0};
    pool_ctx c = {.B = B, .N = N, .D = D, .mean = 1, .mask = mask};
    size_t n = (size_t)B * N * D;
    c.x = tu_alloc_randn(n, 1.0f, 22);
    c.wgt = tu_alloc_randn((size_t)B * D, 1.0f, 23);
    c.out = malloc((size_t)B * D * sizeof(float));
    for (int i = 0; i < B * D; i++) c.out[i] = 9.0f;
    pool_loss(&c);
    for (int d = 0; d < D; d++) {
        float want0 = (c.x[0 * D + d] + c.x[1 * D + d] + c.x[3 * D + d]) / 3.0f;
        assert_float_equal(c.out[d], want0, 1e-6f);
        assert_float_equal(c.out[2 * D + d], 0.0f, 0.0f); /* all-masked row -> zeros */
    }
    float *dx = malloc(n * sizeof *dx);
    for (size_t i = 0; i < n; i++) dx[i] = 5.0f;
    pool_mean_backward(dx, c.wgt, mask, B, N, D);
    for (int i = 0; i < N * D; i++) assert_float_equal(dx[2 * N * D + i], 0.0f, 0.0f);
    for (int d = 0; d < D; d++) assert_float_equal(dx[2 * D + d], 0.0f, 0.0f); /* padded position */
    double e = tu_fd_check(pool_loss, &c, c.x, dx, n, 1000, FD_H, FD_FLOOR);
    assert_true(e < 1e-3);
    free(dx); free(c.x); free(c.wgt); free(c.out);
}

/* ------------------------------------------------------------------------------------------ */
/* Cross-entropy */

typedef struct {
    int B, K;
    const int32_t *t;
    float scale;
    float *logits, *probs, *losses;
} ce_ctx;

static double ce_loss(void *p) {
    ce_ctx *c = p;
    crossentropy_forward(c->losses, c->probs, c->logits, c->t, c->B, c->K);
    double s = 0;
    for (int b = 0; b < c->B; b++) s += c->losses[b];
    return s * c->scale;
}

static void test_crossentropy(void **state) {
    (void)state;
    /* uniform logits: loss = log K; known: logits log(1,2,3), target 2 -> -log(3/6) = log 2 */
    float lu[10] = {0}, pu[10], lossu;
    int32_t t3 = 3;
    for (int k = 0; k < 10; k++) lu[k] = 2.5f;
    crossentropy_forward(&lossu, pu, lu, &t3, 1, 10);
    assert_float_equal(lossu, (float)log(10.0), 1e-6f);
    for (int k = 0; k < 10; k++) assert_float_equal(pu[k], 0.1f, 1e-7f);
    float lk[3] = {0.0f, (float)log(2.0), (float)log(3.0)}, pk[3], lossk;
    int32_t t2 = 2;
    crossentropy_forward(&lossk, pk, lk, &t2, 1, 3);
    assert_float_equal(lossk, (float)log(2.0), 1e-6f);
    assert_float_equal(pk[1], 1.0f / 3.0f, 1e-6f);
    /* stability: huge logits do not overflow */
    float lh[2] = {1000.0f, 0.0f}, ph[2], lossh;
    int32_t t1 = 1;
    crossentropy_forward(&lossh, ph, lh, &t1, 1, 2);
    assert_float_equal(lossh, 1000.0f, 1e-3f);
    assert_true(isfinite(ph[0]) && ph[0] == 1.0f);

    /* gradient, with row 2 ignored */
    enum { B = 4, K = 6 };
    static const int32_t t[B] = {1, 5, -1, 0};
    ce_ctx c = {.B = B, .K = K, .t = t, .scale = 1.0f / 3.0f};
    c.logits = tu_alloc_randn((size_t)B * K, 2.0f, 24);
    c.probs = zalloc((size_t)B * K);
    c.losses = zalloc(B);
    ce_loss(&c);
    assert_float_equal(c.losses[2], 0.0f, 0.0f);
    float *dl = malloc((size_t)B * K * sizeof *dl);
    for (int i = 0; i < B * K; i++) dl[i] = 7.0f;
    crossentropy_backward(dl, c.probs, t, B, K, c.scale);
    for (int k = 0; k < K; k++) assert_float_equal(dl[2 * K + k], 0.0f, 0.0f);
    double e = tu_fd_check(ce_loss, &c, c.logits, dl, (size_t)B * K, 1000, FD_H, FD_FLOOR);
    print_message("crossentropy fd rel err %.2e\n", e);
    assert_true(e < FD_TOL);
    free(dl); free(c.logits); free(c.probs); free(c.losses);
}

/* ------------------------------------------------------------------------------------------ */
/* 1 thread vs 2 threads: bitwise identical (sizes above the parallel threshold). */

static void test_threads_bitwise(void **state) {
    (void)state;
    int saved = omp_get_max_threads();
    enum { BN = 640, C = 72, OC = 96, V = 50 };
    size_t n = (size_t)BN * C;
    float *inp = tu_alloc_randn(n, 1.0f, 30), *dout = tu_alloc_randn(n, 1.0f, 31);
    float *w = tu_alloc_randn(C, 1.0f, 32), *b = tu_alloc_randn(C, 1.0f, 33);
    float *lw = tu_alloc_randn((size_t)OC * C, 0.2f, 34), *lb = tu_alloc_randn(OC, 0.2f, 35);
    float *ldout = tu_alloc_randn((size_t)BN * OC, 1.0f, 36);
    int32_t *ids = malloc(BN * sizeof *ids);
    rng_t r = rng_make(37, RNG_TEST);
    for (int i = 0; i < BN; i++) ids[i] = rng_int(&r, 0, V - 1);

    float *res[2][10];
    for (int run = 0; run < 2; run++) {
        omp_set_num_threads(run + 1);
        float **o = res[run];
        o[0] = zalloc(n); o[1] = zalloc(BN); o[2] = zalloc(BN);             /* ln out, mean, rstd */
        o[3] = zalloc(n); o[4] = zalloc(C); o[5] = zalloc(C);               /* ln dinp, dw, db */
        o[6] = zalloc((size_t)BN * OC);                                      /* linear out */
        o[7] = zalloc(n); o[8] = zalloc((size_t)OC * C + OC);                /* linear dinp, dw|db */
        o[9] = zalloc((size_t)V * C);                                        /* embedding dwte */
        layernorm_forward(o[0], o[1], o[2], inp, w, b, BN, C);
        layernorm_backward(o[3], o[4], o[5], dout, inp, w, o[1], o[2], BN, C);
        linear_forward(o[6], inp, lw, lb, BN, C, OC);
        linear_backward(o[7], o[8], o[8] + (size_t)OC * C, ldout, inp, lw, BN, C, OC);
        embedding_backward(o[9], dout, ids, BN, C, V);
    }
    omp_set_num_threads(saved);
    size_t sz[10] = {n, BN, BN, n, C, C, (size_t)BN * OC, n, (size_t)OC * C + OC, (size_t)V * C};
    const char *names[10] = {"ln out", "ln mean", "ln rstd", "ln dinp", "ln dw", "ln db",
                             "linear out", "linear dinp", "linear dw/db", "embedding dwte"};
    for (int k = 0; k < 10; k++) {
        if (!same_bits(res[0][k], res[1][k], sz[k])) fail_msg("%s differs between 1 and 2 threads", names[k]);
        free(res[0][k]);
        free(res[1][k]);
    }
    free(inp); free(dout); free(w); free(b); free(lw); free(lb); free(ldout); free(ids);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embedding),
        cmocka_unit_test(test_sinusoidal_values),
        cmocka_unit_test(test_learned_positions),
        cmocka_unit_test(test_layernorm_values),
        cmocka_unit_test(test_layernorm_grad),
        cmocka_unit_test(test_linear),
        cmocka_unit_test(test_gelu),
        cmocka_unit_test(test_relu),
        cmocka_unit_test(test_dropout_grad),
        cmocka_unit_test(test_dropout_stats),
        cmocka_unit_test(test_residual),
        cmocka_unit_test(test_pool_cls),
        cmocka_unit_test(test_pool_mean),
        cmocka_unit_test(test_crossentropy),
        cmocka_unit_test(test_threads_bitwise),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
