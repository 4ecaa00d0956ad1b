/* compress.h - the Compressive Transformer's compression functions f_c and its
 * attention-reconstruction loss.
 *
 * Source: Rae, Potapenko, Jayakumar, Lillicrap, "Compressive Transformers for Long-Range Sequence
 * Modelling", arXiv 1911.05507 (ICLR 2020), §3 and Algorithm 1 (memory update, f_c, L_attn);
 * spec reference/attention.md §6.2. Reference code consulted for conventions:
 * labmlai annotated_deep_learning_paper_implementations labml_nn/transformers/compressive
 * (Conv1dCompression, AttentionReconstructionLoss).
 *
 * Glossary: B batch, n rows of evicted memory per sequence (the paper's n_s; old_mem), c
 * compression rate, n_out = n / c compressed rows, D = d_model, H heads, Dh head size, HD = H*Dh,
 * L query rows of the reconstruction loss (the segment).
 *
 * Layout: x (B, n, D) -> out (B, n_out, D), float32 row-major.
 *
 * Policy for n not a multiple of c: REQUIRED (n % c == 0); compress_check reports it and the kernels
 * abort (LRA_CHECK) otherwise. For the LM this means the config checker should require
 * segment_len % compression_rate == 0 and mem_len % compression_rate == 0: then every batch of rows
 * evicted from memory (min(filled + segment_len - mem_len, segment_len) rows once the memory is
 * full) is a multiple of c.
 *
 * The compression functions (output row t summarises input rows t*c .. t*c+c-1):
 *   COMPRESS_MAX_POOL   out[t][d] = max_m x[t*c+m][d]             (no parameters; the gradient goes
 *                                   to the first maximal m, ties broken by lowest m)
 *   COMPRESS_MEAN_POOL  out[t][d] = (1/c) sum_m x[t*c+m][d]       (no parameters)
 *   COMPRESS_CONV       1-D convolution, kernel = stride = c, D -> D, with bias:
 *                       out[t][o] = b[o] + sum_{m<c, i<D} W[o][m*D + i] x[t*c+m][i]
 *                       parameters: W (D, c*D) then b (D); n_params = c*D*D + D.
 *                       (Equal to PyTorch Conv1d(D, D, c, stride=c) with weight[o][i][m] = W[o][m*D+i].)
 *   COMPRESS_DILATED_CONV  a WaveNet-style stack of n_layers = max(1, ceil(log2 c)) causal dilated
 *                       convolutions, kernel 2, D -> D, with bias, dilation 2^l for layer l:
 *                         y_0 = x,  z_{l+1}[s] = b_l + A_l y_l[s - 2^l] + C_l y_l[s]
 *                         (rows s - 2^l < 0 of the same sequence are zeros: left zero padding),
 *                         y_{l+1} = ReLU(z_{l+1}) between layers, the last layer linear;
 *                       then out[t] = z_last[t*c + c - 1], the last row of each block of c, whose
 *                       receptive field is the 2^n_layers rows ending there (exactly the block when
 *                       c is a power of 2; for other c it reaches 2^n_layers - c rows into the
 *                       previous block). Same output length n/c as the other functions.
 *                       parameters per layer l: W_l (D, 2*D) = [A_l | C_l] (W_l[o][i] multiplies
 *                       y[s - 2^l][i], W_l[o][D + i] multiplies y[s][i]) then b_l (D);
 *                       n_params = n_layers * (2*D*D + D).
 * Init (compress_init): every weight and bias ~ U(-1/sqrt(fan_in), +1/sqrt(fan_in)), PyTorch's
 * Conv1d default (fan_in = c*D for CONV, 2*D for a dilated layer), drawn in array order from r.
 *
 * Gradient convention: backward OVERWRITES dx and ACCUMULATES (+=) into dw.
 * Threads: sgemm through layers.h linear_* (tiled by shape) and per-(b,h) sgemm calls inside OpenMP
 * loops that own their outputs; results do not depend on the thread count (tested, 1 vs 2).
 */
#ifndef LRA_COMPRESS_H
#define LRA_COMPRESS_H

#include <stddef.h>

#include "rng.h"

typedef enum {
    COMPRESS_MAX_POOL = 0,
    COMPRESS_MEAN_POOL = 1,
    COMPRESS_CONV = 2,
    COMPRESS_DILATED_CONV = 3,
} compress_kind;

/* YAML names, indexed by compress_kind: "max_pool", "mean_pool", "conv", "dilated_conv". */
extern const char *const compress_kind_names[4];

typedef struct {
    int kind;    /* compress_kind */
    int c;       /* compression rate (>= 1): model.compression_rate */
    int d_model; /* D */
} compress_cfg;

/* Validate cfg for n input rows per sequence (n >= 0; n = 0 is allowed and compresses to nothing).
 * Returns 0, or -1 with a message naming the offending key (model.compression_rate, ...), e.g.
 * "n = 30 evicted memory rows is not a multiple of model.compression_rate = 4". */
int compress_check(const compress_cfg *cfg, int n, char *err, size_t errlen);

/* Number of learned floats (0 for the pools). */
size_t compress_n_params(const compress_cfg *cfg);
/* Number of stacked layers of COMPRESS_DILATED_CONV (max(1, ceil(log2 c))); 0 for other kinds. */
int compress_dilated_layers(const compress_cfg *cfg);
/* Fill w (compress_n_params floats) as documented above, drawing from r. No-op for the pools. */
void compress_init(const compress_cfg *cfg, float *w, rng_t *r);

/* Bytes of `work` that compress_forward needs (and keeps for compress_backward) for B sequences of
 * n rows: 0 for pools and CONV; for DILATED_CONV the layer outputs plus backward temporaries. */
size_t compress_work_bytes(const compress_cfg *cfg, int B, int n);

/* out (B, n/c, D) = f_c(x (B, n, D)). w: compress_n_params floats (NULL allowed for the pools).
 * work: compress_work_bytes(cfg, B, n) (NULL allowed when that is 0); it must be passed unchanged
 * to compress_backward. Aborts (LRA_CHECK) if n % c != 0. */
void compress_forward(const compress_cfg *cfg, const float *w, const float *x, int B, int n, float *out,
                      void *work);

/* Backward of compress_forward with the same x, w, work: dout (B, n/c, D) ->
 * dx (B, n, D) overwritten (dx may be NULL: not wanted), dw += dL/dw (NULL allowed for the pools).
 * work is used as scratch too (its forward contents are consumed). */
void compress_backward(const compress_cfg *cfg, const float *w, const float *x, int B, int n,
                       const float *dout, float *dx, float *dw, void *work);

/* Attention-reconstruction loss (Rae et al. §3.2 and Algorithm 1, spec §6.2), for one layer:
 *   Q = h W_q^T, and for M in {old_mem, f_c(old_mem)}:  M' = LN(M) if ln_w != NULL else M,
 *   K = M' W_k^T, V = M' W_v^T  (per head, content only: no positional terms, no mask, no output
 *   projection),  attn(h, M) = concat_h softmax(Q_h K_h^T / sqrt(Dh)) V_h     (B, L, HD)
 *   L_attn = mean over B*L*HD elements of (attn(h, f_c(old_mem)) - attn(h, old_mem))^2.
 * Returns L_attn (float, unweighted) and ACCUMULATES weight * dL_attn/dw_fc into dw_fc. Nothing
 * else receives gradient: h, old_mem and the layer's W_q, W_k, W_v, ln_w, ln_b are constants
 * (stop-gradient). The weights are read through const pointers and never written; there are no
 * gradient outputs for them. (Pitfall, spec §6.2: lucidrains/compressive-transformer-pytorch calls
 * `self.to_kv.weight.detach_()` in place before this loss; its issue #5 reports that the aux loss
 * then updates no weights. Do not copy that: here the layer's tensors are only read, as constants,
 * the stop-gradient copies of labml's version.) The task loss never reaches f_c because memories are detached.
 * Arguments:
 *   cfg, w_fc, dw_fc   the compression function, its parameters and gradient (the pools have no
 *                      parameters: then the loss is only measured and dw_fc may be NULL)
 *   h       (B, L, D)  the layer's query-side input rows as its attention sees them (pre-LN model:
 *                      the LayerNormed segment rows; post-LN: the raw layer input)
 *   old_mem (B, n, D)  the raw memory rows being evicted (layer inputs, what f_c compresses)
 *   W_q, W_k, W_v (HD, D) the layer's projections (layers.h linear layout: out x in), no biases
 *   ln_w, ln_b (D)     the layer's attention LayerNorm (applied to old_mem and to f_c(old_mem)
 *                      before W_k, W_v, eps LAYERNORM_EPS); both NULL for a post-LN layer
 *   weight             multiplies the accumulated gradient (e.g. 1 / number of layers)
 *   work               compress_recon_work_bytes(cfg, B, L, n, H, Dh)
 * n % c == 0 is required (LRA_CHECK); n = 0 returns 0 and touches nothing. */
float compress_recon_loss(const compress_cfg *cfg, const float *w_fc, float *dw_fc, const float *h,
                          const float *old_mem, int B, int L, int n, int H, int Dh, const float *W_q,
                          const float *W_k, const float *W_v, const float *ln_w, const float *ln_b,
                          float weight, void *work);

/* Bytes of work for compress_recon_loss: the projections and attention outputs of both paths,
 * the attention probabilities of both ((B,H,L,n) and (B,H,L,n/c) floats: these small attentions are
 * materialised), their LayerNorm statistics and gradients, and compress_work_bytes(cfg, B, n).
 * Grows with n: plan with the largest n (segment_len). */
size_t compress_recon_work_bytes(const compress_cfg *cfg, int B, int L, int n, int H, int Dh);

#endif
