/* optim.h - AdamW (Loshchilov & Hutter, arXiv 1711.05101), learning-rate schedules, gradient
 * clipping. */
#ifndef LRA_OPTIM_H
#define LRA_OPTIM_H

#include <stddef.h>

#include "config.h"

/* Learning rate at step (0-based) for train config t: linear warmup over t->warmup steps to t->lr,
 * then SCHED_COSINE: half cosine to lr*min_lr_ratio at t->steps; SCHED_LINEAR: linear to
 * lr*min_lr_ratio; SCHED_CONSTANT: lr; SCHED_RSQRT: lr * sqrt(warmup / max(step+1, warmup))
 * (LRA's rsqrt_decay with the peak normalised to lr). */
float lr_at(const train_cfg *t, long step);

/* One AdamW update of n parameters at step t (1-based, for bias correction):
 * m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p).
 * Parallel over elements (each owns its output). */
void adamw_update(float *p, const float *g, float *m, float *v, size_t n, float lr, float beta1,
                  float beta2, float eps, float weight_decay, long t);

/* Global L2 norm of g (n floats), accumulated in double in a fixed order. */
double grad_norm(const float *g, size_t n);
/* Scale g so its norm is at most max_norm (no-op when max_norm <= 0 or norm <= max_norm).
 * Returns the norm before clipping. */
double grad_clip(float *g, size_t n, double max_norm);

#endif
