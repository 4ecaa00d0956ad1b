/* approx.h - `lra approx`: how far each approximate attention mechanism is from exact softmax
 * attention on the same Q, K, V, against its knob (Performer features, Linformer k, window, Reformer
 * n_hashes / bucket_size, Nystromformer landmarks), and Linformer's spectrum analysis of softmax
 * attention matrices (Wang et al., arXiv 2006.04768, Figure 1).
 *
 * Letters: Lc captured layers, B sequences, H heads, N positions, Dh head size, n real positions of
 * one sequence (n <= N).
 *
 * Relative error of an output X against the exact softmax output Y (both (B,H,N,Dh), over the real
 * query rows only): ||X - Y||_F / ||Y||_F, sums in double.
 */
#ifndef LRA_APPROX_H
#define LRA_APPROX_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

/* Inputs of one study: Lc layers of (B,H,N,Dh) q, k, v, and the key mask shared by all layers. */
typedef struct {
    int Lc, B, H, N, Dh;
    float *q, *k, *v; /* (Lc, B, H, N, Dh) each, malloc'd */
    uint8_t *mask;    /* (B, N), 1 = real token; NULL: all real */
    /* Captured inputs only: the model's mechanism, its parameters and learned weights, so that the
     * same mechanism can be evaluated with its trained weights (e.g. Linformer's E, F). */
    const attn_ops *ops;                 /* NULL for random inputs */
    unsigned char params[ATTN_PARAMS_MAX];
    size_t nw;                           /* learned floats per layer (0: none) */
    float *w;                            /* (Lc, nw), malloc'd, or NULL */
} approx_inputs;

/* Floats of one layer's q (B*H*N*Dh). */
static inline size_t approx_layer_floats(const approx_inputs *in) {
    return (size_t)in->B * in->H * in->N * in->Dh;
}

/* Random Gaussian inputs, one layer: q and k entries N(0, logit_std) (so the logits q.k/sqrt(Dh)
 * have standard deviation logit_std), v entries N(0, 1); no mask. Drawn from (seed, RNG_DATA). */
void approx_inputs_random(approx_inputs *in, int B, int H, int N, int Dh, float logit_std, uint64_t seed);
void approx_inputs_free(approx_inputs *in);

/* Train the model of run config c for `steps` optimizer steps in this process (the schedule of
 * c->train, batches in the trainer's seeded order; steps = 0 keeps the initialisation), or, when
 * checkpoint is a non-empty path, load its best-validation weights (lra/checkpoint.h), then run
 * the first validation batch through it in evaluation mode and capture every layer's q, k, v of its
 * first n_seq sequences (<= c->train.batch_size) and their padding mask into in. When att is not
 * NULL, *att receives a malloc'd copy of the mechanism outputs of the same layers and sequences
 * ((Lc,B,H,N,Dh), what the model's attention produced). *val_acc: validation accuracy over at most
 * 8 batches (NaN when not evaluated). Returns 0, or -1 with a reason (data errors, build errors). */
int approx_train_capture(const run_cfg *c, const char *checkpoint, int steps, int n_seq, approx_inputs *in,
                         float **att, double *val_acc, char *err, size_t errlen);

/* Run mechanism ops with params (a filled parameter struct) in evaluation mode on layer `layer` of
 * in, with its learned weights from ops->init and its random draws keyed by seed; shape.max_len = N,
 * shape.layer = layer. out: (B,H,N,Dh). Returns 0, or -1 with the mechanism's validation error. */
int approx_forward(const attn_ops *ops, const void *params, const approx_inputs *in, int layer, uint64_t seed,
                   float *out, char *err, size_t errlen);
/* Same with the learned weights w (ops->n_weights floats for this shape) instead of ops->init's. */
int approx_forward_w(const attn_ops *ops, const void *params, const approx_inputs *in, int layer, uint64_t seed,
                     const float *w, float *out, char *err, size_t errlen);

/* ||x - ref||_F / ||ref||_F over real query rows of (B,H,N,Dh) tensors; mask (B,N) or NULL.
 * Returns 0 when both are zero. */
double approx_rel_error(const float *x, const float *ref, int B, int H, int N, int Dh, const uint8_t *mask);

/* Singular values of the row-major m x n matrix A (not modified), in decreasing order, into
 * s (min(m,n)), via LAPACK dgesdd (OpenBLAS). Returns 0, or the LAPACK info (non-zero: failed). */
int approx_singular_values(const double *A, int m, int n, double *s);

/* Softmax attention matrix of layer, sequence b, head h over the real positions: P (n x n,
 * row-major, rows sum to 1) with P_ij = softmax_j(q_i . k_j / sqrt(Dh)), in double. Returns n. */
int approx_attention_matrix(const approx_inputs *in, int layer, int b, int h, double *P);

/* `lra approx CONFIG [options]`; argv[0] is "approx". Returns the exit status. */
int cmd_approx(int argc, char **argv);

#endif
