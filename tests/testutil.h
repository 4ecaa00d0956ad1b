/* testutil.h - helpers shared by the cmocka tests: deterministic random tensors, error norms,
 * and a central finite-difference gradient checker.
 *
 * Gradient checks: a test supplies a scalar loss f(x) = sum(out * w) for a fixed random w, i.e.
 * dout = w; it compares the analytic gradient of one input/parameter array against
 * (f(x + h e_i) - f(x - h e_i)) / 2h computed with float32 kernels. With h around 1e-2..1e-3 and
 * the loss accumulated in double, float32 kernels agree to ~1e-2 relative; tests use
 * fd_check() which reports the worst relative error over checked coordinates.
 */
#ifndef LRA_TESTUTIL_H
#define LRA_TESTUTIL_H

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "../lra/rng.h"

/* Fill x[n] with N(0, std^2) from a seed. */
static inline void tu_randn(float *x, size_t n, float std, uint64_t seed) {
    rng_t r = rng_make(seed, RNG_TEST);
    for (size_t i = 0; i < n; i++) x[i] = (float)(rng_normal(&r) * std);
}

static inline float *tu_alloc_randn(size_t n, float std, uint64_t seed) {
    float *x = malloc(n * sizeof *x);
    tu_randn(x, n, std, seed);
    return x;
}

/* max_i |a_i - b_i| / max(max_i |b_i|, tiny): relative to the reference's scale. */
static inline double tu_rel_err(const float *a, const float *b, size_t n) {
    double num = 0, den = 1e-30;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (isnan(d) || d > num) num = d;
        if (fabs((double)b[i]) > den) den = fabs((double)b[i]);
    }
    return num / den;
}

static inline double tu_dot(const float *a, const float *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * (double)b[i];
    return s;
}

/* Central finite differences of loss(ctx) w.r.t. x[idx] for up to max_checks coordinates spread
 * over x (all when n <= max_checks), compared with grad[idx]. Returns the worst error measured
 * as |fd - an| / max(|fd| + |an|, floor) over the checked coordinates; floor guards tiny gradients.
 * loss() must recompute the forward from scratch each call. */
static inline double tu_fd_check(double (*loss)(void *ctx), void *ctx, float *x, const float *grad,
                                 size_t n, int max_checks, float h, double floor_) {
    double worst = 0;
    size_t stride = n <= (size_t)max_checks ? 1 : n / (size_t)max_checks;
    for (size_t i = 0; i < n; i += stride) {
        float old = x[i];
        x[i] = old + h;
        double fp = loss(ctx);
        x[i] = old - h;
        double fm = loss(ctx);
        x[i] = old;
        double fd = (fp - fm) / (2.0 * (double)h);
        double an = grad[i];
        double err = fabs(fd - an) / fmax(fabs(fd) + fabs(an), floor_);
        if (isnan(err) || err > worst) worst = err; /* NaN sticks: it must fail the check */
    }
    return worst;
}

#endif
