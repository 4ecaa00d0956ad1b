/* optim.c - AdamW (Loshchilov & Hutter, arXiv 1711.05101), learning-rate schedules and global
 * gradient-norm clipping (see optim.h).
 *
 * Determinism: adamw_update is element-wise (each iteration owns its element); grad_norm splits
 * the vector into a FIXED number of chunks (independent of the thread count), sums each chunk in
 * double with fixed lanes, then adds the chunk partials serially in chunk order.
 */
#include "optim.h"

#include <math.h>

#include "common.h"

#define PAR_MIN 16384
/* grad_norm chunks: a constant, so the summation order never depends on the thread count. */
#define NORM_CHUNKS 64

/* Warmup: linear from lr/warmup at step 0 to lr at step warmup-1 (factor (step+1)/warmup), so no
 * update is wasted at lr = 0. After warmup, with p = (step - warmup) / (steps - warmup) clamped to
 * [0, 1] (p = 1 when steps <= warmup):
 *   cosine:   lr_min + (lr - lr_min) * (1 + cos(pi p)) / 2      (lr_min = lr * min_lr_ratio)
 *   linear:   lr + (lr_min - lr) * p
 *   constant: lr
 *   rsqrt:    lr * sqrt(warmup / max(step+1, warmup)); a warmup of 0 counts as 1 (lr / sqrt(step+1)).
 * LRA (create_learning_rate_scheduler, "constant * linear_warmup * rsqrt_decay") gives
 * base * min(1, s/w) / sqrt(max(s, w)); ours is that with s = step+1 and the peak normalised to lr,
 * so e.g. a warmup longer than the run reaches only lr * steps / warmup, as in LRA's retrieval. */
float lr_at(const train_cfg *t, long step) {
    double lr = t->lr;
    if (step < 0) step = 0;
    long warmup = t->warmup > 0 ? t->warmup : 0;
    double s1 = (double)(step + 1);
    if (warmup > 0 && step < warmup) {
        double f = s1 / (double)warmup;
        return (float)(lr * f);
    }
    double lr_min = lr * (double)t->min_lr_ratio;
    double p = 1.0;
    if ((long)t->steps > warmup) {
        p = (double)(step - warmup) / (double)((long)t->steps - warmup);
        if (p > 1.0) p = 1.0;
        if (p < 0.0) p = 0.0;
    }
    switch (t->schedule) {
    case SCHED_COSINE: return (float)(lr_min + (lr - lr_min) * 0.5 * (1.0 + cos(M_PI * p)));
    case SCHED_LINEAR: return (float)(lr + (lr_min - lr) * p);
    case SCHED_CONSTANT: return (float)lr;
    case SCHED_RSQRT: {
        double w = warmup > 0 ? (double)warmup : 1.0;
        return (float)(lr * sqrt(w / fmax(s1, w)));
    }
    default: LRA_CHECK(0, "lr_at: unknown schedule %d", t->schedule);
    }
    return 0.0f;
}

/* m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
 * p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p), mhat = m / (1 - b1^t), vhat = v / (1 - b2^t).
 * The decay uses p before the update (flax optim.Adam with weight_decay, which LRA uses). */
void adamw_update(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, long t) {
    LRA_CHECK(t >= 1, "adamw_update: step t=%ld must be >= 1 (1-based for bias correction)", t);
    float bc1 = (float)(1.0 - pow((double)beta1, (double)t));
    float bc2 = (float)(1.0 - pow((double)beta2, (double)t));
    float omb1 = 1.0f - beta1, omb2 = 1.0f - beta2;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float gi = g[i];
        float mi = beta1 * m[i] + omb1 * gi;
        float vi = beta2 * v[i] + omb2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float mhat = mi / bc1, vhat = vi / bc2;
        p[i] -= lr * (mhat / (sqrtf(vhat) + eps) + weight_decay * p[i]);
    }
}

static double sumsq_chunk(const float *g, size_t n) {
    double acc[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += (double)g[i + k] * (double)g[i + k];
    for (int k = 0; i < n; i++, k++) acc[k] += (double)g[i] * (double)g[i];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* sqrt(sum g^2): NORM_CHUNKS fixed chunks summed in parallel, partials added in order. */
double grad_norm(const float *g, size_t n) {
    double part[NORM_CHUNKS];
    size_t chunk = (n + NORM_CHUNKS - 1) / NORM_CHUNKS;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int c = 0; c < NORM_CHUNKS; c++) {
        size_t lo = (size_t)c * chunk;
        size_t hi = lo + chunk < n ? lo + chunk : n;
        part[c] = lo < hi ? sumsq_chunk(g + lo, hi - lo) : 0.0;
    }
    double s = 0.0;
    for (int c = 0; c < NORM_CHUNKS; c++) s += part[c];
    return sqrt(s);
}

/* Scale g by max_norm / norm when norm > max_norm > 0. A non-finite norm is returned unchanged
 * and g is left alone, so the caller's NaN/divergence check sees it. */
double grad_clip(float *g, size_t n, double max_norm) {
    double norm = grad_norm(g, n);
    if (max_norm <= 0.0 || !isfinite(norm) || norm <= max_norm) return norm;
    float scale = (float)(max_norm / norm);
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) g[i] *= scale;
    return norm;
}
