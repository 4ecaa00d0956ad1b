/* test_optim.c - lra/optim.c: learning-rate schedules at their key steps, one AdamW update against
 * hand-computed values, weight decay, gradient norm and clipping (incl. 1 vs 2 threads). */
#include "testutil.h"

#include <omp.h>

#include "../lra/optim.h"

static train_cfg sched(int schedule, float lr, int warmup, int steps, float min_ratio) {
    train_cfg t;
    memset(&t, 0, sizeof t);
    t.schedule = schedule;
    t.lr = lr;
    t.warmup = warmup;
    t.steps = steps;
    t.min_lr_ratio = min_ratio;
    return t;
}

#define LR_EQ(got, want) assert_float_equal((got), (want), 1e-6f * fabsf((float)(want)) + 1e-12f)

static void test_lr_warmup(void **state) {
    (void)state;
    /* lr 1e-3, warmup 100: factor (step+1)/warmup, the same for every schedule */
    for (int s = SCHED_COSINE; s <= SCHED_RSQRT; s++) {
        train_cfg t = sched(s, 1e-3f, 100, 1000, 0.1f);
        LR_EQ(lr_at(&t, 0), 1e-5f);   /* warmup start */
        LR_EQ(lr_at(&t, 49), 5e-4f);  /* half way */
        LR_EQ(lr_at(&t, 99), 1e-3f);  /* warmup end: the peak */
        /* first step after warmup: still the peak, except rsqrt which is already decaying */
        LR_EQ(lr_at(&t, 100), s == SCHED_RSQRT ? (float)(1e-3 * sqrt(100.0 / 101.0)) : 1e-3f);
    }
    /* no warmup: the peak from step 0 */
    train_cfg t = sched(SCHED_COSINE, 2e-3f, 0, 100, 0.0f);
    LR_EQ(lr_at(&t, 0), 2e-3f);
}

static void test_lr_cosine(void **state) {
    (void)state;
    train_cfg t = sched(SCHED_COSINE, 1e-3f, 100, 1000, 0.1f);
    /* decay over steps 100..1000: midpoint 550 -> (lr + lr_min) / 2 = 5.5e-4 */
    LR_EQ(lr_at(&t, 550), 5.5e-4f);
    /* quarter 325: 1e-4 + 9e-4 * (1 + cos(pi/4)) / 2 = 8.682e-4 */
    LR_EQ(lr_at(&t, 325), (float)(1e-4 + 9e-4 * 0.5 * (1 + cos(M_PI / 4))));
    LR_EQ(lr_at(&t, 325), 8.6819805e-4f);
    /* final = lr * min_lr_ratio, and it stays there */
    LR_EQ(lr_at(&t, 1000), 1e-4f);
    LR_EQ(lr_at(&t, 5000), 1e-4f);
    /* monotone after the peak */
    for (long s = 100; s < 1000; s++) assert_true(lr_at(&t, s + 1) <= lr_at(&t, s));
    /* min_lr_ratio 0 decays to 0 */
    train_cfg z = sched(SCHED_COSINE, 1e-3f, 0, 10, 0.0f);
    assert_float_equal(lr_at(&z, 10), 0.0f, 1e-12f);
}

static void test_lr_linear_constant(void **state) {
    (void)state;
    train_cfg t = sched(SCHED_LINEAR, 1e-3f, 100, 1000, 0.1f);
    LR_EQ(lr_at(&t, 550), 5.5e-4f);
    LR_EQ(lr_at(&t, 325), 7.75e-4f);
    LR_EQ(lr_at(&t, 1000), 1e-4f);
    train_cfg c = sched(SCHED_CONSTANT, 5e-4f, 10, 1000, 0.1f);
    LR_EQ(lr_at(&c, 4), 2.5e-4f);
    LR_EQ(lr_at(&c, 9), 5e-4f);
    LR_EQ(lr_at(&c, 500), 5e-4f);
    LR_EQ(lr_at(&c, 999), 5e-4f);
}

static void test_lr_rsqrt(void **state) {
    (void)state;
    /* LRA ListOps: lr normalised to the peak, warmup 1000 */
    train_cfg t = sched(SCHED_RSQRT, 1e-3f, 1000, 5000, 0.0f);
    LR_EQ(lr_at(&t, 0), 1e-6f);
    LR_EQ(lr_at(&t, 999), 1e-3f);
    LR_EQ(lr_at(&t, 3999), 5e-4f);             /* sqrt(1000/4000) = 1/2 */
    LR_EQ(lr_at(&t, 4999), 4.472136e-4f);      /* sqrt(1000/5000) */
    LR_EQ(lr_at(&t, 99999), 1e-4f);            /* sqrt(1000/100000) */
    /* LRA retrieval: warmup 8000 > 5000 steps, the lr reaches only 5000/8000 of the peak */
    train_cfg r = sched(SCHED_RSQRT, 1e-3f, 8000, 5000, 0.0f);
    LR_EQ(lr_at(&r, 4999), 6.25e-4f);
    /* warmup 0 counts as 1: lr / sqrt(step+1) */
    train_cfg z = sched(SCHED_RSQRT, 1e-3f, 0, 100, 0.0f);
    LR_EQ(lr_at(&z, 0), 1e-3f);
    LR_EQ(lr_at(&z, 3), 5e-4f);
}

static void test_adamw_hand(void **state) {
    (void)state;
    /* two elements, two steps, beta1 0.9, beta2 0.999, eps 1e-8, lr 0.1, wd 0 */
    float p[2] = {1.0f, -2.0f}, m[2] = {0, 0}, v[2] = {0, 0};
    float g1[2] = {0.5f, -0.25f};
    adamw_update(p, g1, m, v, 2, 0.1f, 0.9f, 0.999f, 1e-8f, 0.0f, 1);
    /* step 1: m = 0.05, v = 2.5e-4, mhat = 0.5, vhat = 0.25: update = 0.5 / (0.5 + 1e-8) ~ 1 */
    assert_float_equal(m[0], 0.05f, 1e-7f);
    assert_float_equal(v[0], 2.5e-4f, 3e-8f); /* 1 - 0.999f = 9.99987e-4 in float */
    assert_float_equal(p[0], 0.9f, 1e-6f);
    assert_float_equal(p[1], -1.9f, 1e-6f); /* sign of the gradient: the step is -lr * sign */
    /* step 2 with g = -0.2 on element 0:
     *   m = 0.9*0.05 - 0.1*0.2 = 0.025;  v = 0.999*2.5e-4 + 0.001*0.04 = 2.8975e-4
     *   mhat = 0.025/0.19 = 0.13157895;  vhat = 2.8975e-4/0.001999 = 0.14494747
     *   p = 0.9 - 0.1 * 0.13157895 / (0.38071967 + 1e-8) = 0.9 - 0.03456057 = 0.86543943 */
    float g2[2] = {-0.2f, 0.0f};
    adamw_update(p, g2, m, v, 2, 0.1f, 0.9f, 0.999f, 1e-8f, 0.0f, 2);
    assert_float_equal(m[0], 0.025f, 1e-7f);
    assert_float_equal(v[0], 2.8975e-4f, 3e-8f);
    assert_float_equal(p[0], 0.86543943f, 2e-6f);
    /* element 1 at g = 0: m = -0.0225, v = 6.24375e-5*0.999 -> p moves on by the momentum:
     *   mhat = -0.0225/0.19 = -0.11842105, vhat = 6.2437500e-5/0.001999 = 0.031234366
     *   p = -1.9 + 0.1 * 0.11842105 / 0.17673247 = -1.9 + 0.06700581 = -1.8329942 */
    assert_float_equal(p[1], -1.8329942f, 2e-6f);
}

static void test_adamw_weight_decay(void **state) {
    (void)state;
    /* zero gradient, zero moments: only the decoupled decay acts, p *= 1 - lr * wd */
    float p[3] = {1.0f, -4.0f, 0.5f}, g[3] = {0, 0, 0}, m[3] = {0}, v[3] = {0};
    float p0[3] = {1.0f, -4.0f, 0.5f};
    adamw_update(p, g, m, v, 3, 0.01f, 0.9f, 0.98f, 1e-9f, 0.0f, 1);
    for (int i = 0; i < 3; i++) assert_true(p[i] == p0[i]); /* wd 0: unchanged */
    adamw_update(p, g, m, v, 3, 0.01f, 0.9f, 0.98f, 1e-9f, 0.1f, 2);
    for (int i = 0; i < 3; i++) assert_float_equal(p[i], p0[i] * (1.0f - 0.01f * 0.1f), 1e-7f);
    /* with a gradient: decay adds lr * wd * p on top of the Adam step (p before the update) */
    float pa[1] = {2.0f}, pb[1] = {2.0f}, ga[1] = {0.3f}, ma[1] = {0}, va[1] = {0}, mb[1] = {0}, vb[1] = {0};
    adamw_update(pa, ga, ma, va, 1, 0.05f, 0.9f, 0.98f, 1e-9f, 0.0f, 1);
    adamw_update(pb, ga, mb, vb, 1, 0.05f, 0.9f, 0.98f, 1e-9f, 0.2f, 1);
    assert_float_equal(pa[0] - pb[0], 0.05f * 0.2f * 2.0f, 1e-6f);
    assert_float_equal(pa[0], 2.0f - 0.05f, 1e-6f);
}

static void test_grad_norm_clip(void **state) {
    (void)state;
    float g2[2] = {3.0f, 4.0f};
    assert_true(grad_norm(g2, 2) == 5.0);
    assert_true(grad_norm(g2, 0) == 0.0);
    /* large vector of 0.5: norm = 0.5 sqrt(n) */
    size_t n = 100003;
    float *g = malloc(n * sizeof *g);
    for (size_t i = 0; i < n; i++) g[i] = 0.5f;
    assert_float_equal((float)grad_norm(g, n), (float)(0.5 * sqrt((double)n)), 1e-3f);
    /* clip to 1: returns the old norm, the new norm equals max_norm */
    double before = grad_clip(g, n, 1.0);
    assert_float_equal((float)before, (float)(0.5 * sqrt((double)n)), 1e-3f);
    double after = grad_norm(g, n);
    print_message("norm %.6f -> clipped %.9f\n", before, after);
    assert_true(fabs(after - 1.0) < 1e-6);
    /* below the threshold, or max_norm <= 0: no-op, bit for bit */
    float *copy = malloc(n * sizeof *copy);
    memcpy(copy, g, n * sizeof *g);
    assert_true(fabs(grad_clip(g, n, 2.0) - after) < 1e-12);
    assert_memory_equal(g, copy, n * sizeof *g);
    grad_clip(g, n, 0.0);
    assert_memory_equal(g, copy, n * sizeof *g);
    /* a non-finite norm is reported, g left alone for the caller's divergence check */
    g[7] = NAN;
    memcpy(copy, g, n * sizeof *g);
    assert_true(isnan(grad_clip(g, n, 1.0)));
    assert_memory_equal(g, copy, n * sizeof *g);
    free(g);
    free(copy);
}

static void test_grad_norm_threads(void **state) {
    (void)state;
    size_t n = 300007;
    float *g = tu_alloc_randn(n, 1.0f, 77);
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    double a = grad_norm(g, n);
    omp_set_num_threads(2);
    double b = grad_norm(g, n);
    omp_set_num_threads(saved);
    assert_memory_equal(&a, &b, sizeof a);
    /* and against a plain serial double sum */
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
    assert_true(fabs(a - sqrt(s)) < 1e-9 * sqrt(s));
    free(g);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lr_warmup),
        cmocka_unit_test(test_lr_cosine),
        cmocka_unit_test(test_lr_linear_constant),
        cmocka_unit_test(test_lr_rsqrt),
        cmocka_unit_test(test_adamw_hand),
        cmocka_unit_test(test_adamw_weight_decay),
        cmocka_unit_test(test_grad_norm_clip),
        cmocka_unit_test(test_grad_norm_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
