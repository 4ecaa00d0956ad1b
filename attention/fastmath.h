/* fastmath.h - small vectorisable math for attention kernels (static inline, no state).
 *
 * lra_expf(x): exp(x), made for x <= 0, the softmax case (arguments are score - running max or
 * score - log-sum-exp). Branch-free, no libm call, no table, so GCC -O3 vectorises a loop that
 * calls it without -ffast-math. Error <= 2 ulp (measured ~1 ulp against double exp by
 * tests/test_softmax.c) for x in [-87.33, 88]; x < -87.33 (where exp is below FLT_MIN), including
 * -inf, gives exactly 0 (no denormals); x > 88 gives +inf (a little early: exp(88.72) is the
 * largest float); NaN gives NaN, so non-finite checks keep working.
 *
 * Method: Cody-Waite range reduction x = n ln2 + r with n = rint(x / ln2), |r| <= ln2 / 2,
 * then the degree-6 minimax polynomial of Cephes expf (S. Moshier, Cephes Math Library,
 * "expf.c"), and 2^n assembled in the exponent bits. Rounding to an integer uses the 1.5 * 2^23
 * trick (round-to-nearest in the default FP mode), so n comes out of the float's low bits.
 */
#ifndef LRA_FASTMATH_H
#define LRA_FASTMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Fused multiply-add a * b + c where the target has FMA (one rounding), else a multiply and an
 * add (two roundings): -std=c11 turns off FP contraction, so kernels ask for FMA explicitly, and
 * without hardware FMA fmaf() would be a slow libm call. Results may differ in the last bits
 * between the two builds; within one build they are deterministic. */
#if defined(__FMA__) || defined(__ARM_FEATURE_FMA)
#define LRA_FMAF(a, b, c) fmaf((a), (b), (c))
#else
#define LRA_FMAF(a, b, c) ((a) * (b) + (c))
#endif

static inline float lra_expf(float x) {
    const float log2e = 1.44269504088896341f;
    const float ln2_hi = 0.693359375f;     /* exact in 9 bits: n * ln2_hi is exact */
    const float ln2_lo = -2.12194440e-4f;  /* ln2 - ln2_hi */
    const float shifter = 12582912.0f;     /* 1.5 * 2^23 */
    const float lo = -87.33654f;           /* log(FLT_MIN): below it the result is 0 */
    float xc = x < lo ? lo : x;            /* NaN fails the comparison and stays NaN */
    xc = xc > 88.0f ? 88.0f : xc;
    float kf = LRA_FMAF(xc, log2e, shifter);       /* rint(x / ln2) + shifter, exact for |n| < 2^22 */
    uint32_t kb;
    memcpy(&kb, &kf, sizeof kb);
    kf -= shifter;
    float r = LRA_FMAF(kf, -ln2_hi, xc);
    r = LRA_FMAF(kf, -ln2_lo, r);
    float z = r * r;
    float p = 1.9875691500e-4f;
    p = LRA_FMAF(p, r, 1.3981999507e-3f);
    p = LRA_FMAF(p, r, 8.3334519073e-3f);
    p = LRA_FMAF(p, r, 4.1665795894e-2f);
    p = LRA_FMAF(p, r, 1.6666665459e-1f);
    p = LRA_FMAF(p, r, 5.0000001201e-1f);
    p = LRA_FMAF(p, z, r) + 1.0f;
    /* kb = bits(shifter) + n for |n| < 2^22; 2^n has exponent field n + 127. */
    uint32_t eb = (kb - 0x4B400000u + 127u) << 23;
    float scale;
    memcpy(&scale, &eb, sizeof scale);
    /* Selects between constants, then a multiply: keeps the loop free of control flow (GCC will
     * not if-convert trapping FP arithmetic without -ffast-math). y * 0 = 0 as y is finite. */
    float fix = x < lo ? 0.0f : 1.0f;
    fix = x > 88.0f ? INFINITY : fix;
    return p * scale * fix;
}

#endif
