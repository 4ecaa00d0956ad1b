/* layers.h - forward and backward of the Transformer's building blocks, on raw float pointers
 * (llm.c style). Letters: B batch, N positions, BN = B*N rows, C input width, OC output width,
 * D model width, V vocabulary, K classes.
 *
 * Gradient convention: backward OVERWRITES the input gradient (dinp, dx, ...) and ACCUMULATES (+=)
 * into parameter gradients (dw, db, dwte, ...). Every parallel loop owns its outputs and every
 * cross-row sum is taken in a fixed order, so results are identical run to run for a given
 * thread count. Dense products go through CBLAS sgemm.
 */
#ifndef LRA_LAYERS_H
#define LRA_LAYERS_H

#include <stddef.h>
#include <stdint.h>

/* out(BN,D) = wte[ids[r]] for each row r. ids in [0, V). */
void embedding_forward(float *out, const int32_t *ids, const float *wte, int BN, int D);
/* dwte(V,D) += scattered dout(BN,D). Deterministic: parallel over columns, rows in order. */
void embedding_backward(float *dwte, const float *dout, const int32_t *ids, int BN, int D, int V);

/* Sinusoidal position table pe(N,D) as in LRA/flax `sinusoidal_init` (Vaswani et al. 2017, §3.5):
 * first D/2 columns sin(pos * w_i), last D/2 columns cos(pos * w_i), w_i = 10000^(-i/(D/2-1)).
 * (Concatenated, not interleaved.) D must be even. */
void posenc_sinusoidal(float *pe, int N, int D);
/* x(B,N,D) += pe(N,D) broadcast over the batch. */
void add_positions_forward(float *x, const float *pe, int B, int N, int D);
/* dpe(N,D) += sum over b of dx(B,N,D)  (learned positions). */
void add_positions_backward(float *dpe, const float *dx, int B, int N, int D);

/* LayerNorm over the last dim (Ba, Kiros, Hinton 2016), eps 1e-6 (flax default).
 * out, inp (BN,C); w, b (C); saves mean, rstd (BN) for backward. */
#define LAYERNORM_EPS 1e-6f
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                       const float *b, int BN, int C);
void layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                        const float *w, const float *mean, const float *rstd, int BN, int C);

/* out(BN,OC) = inp(BN,C) . w(OC,C)^T + b(OC); b may be NULL. CBLAS sgemm. */
void linear_forward(float *out, const float *inp, const float *w, const float *b, int BN, int C, int OC);
/* dinp(BN,C) = dout . w ; dw(OC,C) += dout^T . inp ; db(OC) += column sums of dout (if db). */
void linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                     const float *w, int BN, int C, int OC);

/* GELU, tanh approximation (Hendrycks & Gimpel 2016; flax nn.gelu default). n elements. */
void gelu_forward(float *out, const float *inp, size_t n);
void gelu_backward(float *dinp, const float *inp, const float *dout, size_t n);
void relu_forward(float *out, const float *inp, size_t n);
void relu_backward(float *dinp, const float *inp, const float *dout, size_t n);

/* Inverted dropout: out[i] = inp[i] * keep_i / (1-p), keep_i = (rng_uniform_at(seed, stream, i) >= p).
 * The mask is recomputed from (seed, stream) in backward, never stored. p = 0: copy. In-place ok. */
void dropout_forward(float *out, const float *inp, size_t n, float p, uint64_t seed, uint64_t stream);
void dropout_backward(float *dinp, const float *dout, size_t n, float p, uint64_t seed, uint64_t stream);

/* out = a + b (n elements). In-place (out == a) allowed. */
/* Attention head layout. heads_split: dst (B, H, N, Dh) <- src rows (B, N, H*Dh) (the output of a
 * Q/K/V projection); heads_merge: the inverse, dst rows (B, N, H*Dh) <- src (B, H, N, Dh). */
void heads_split(float *dst, const float *src, int B, int N, int H, int Dh);
void heads_merge(float *dst, const float *src, int B, int N, int H, int Dh);
/* a[i] += b[i] for i < n. */
void add_inplace(float *a, const float *b, size_t n);

void residual_forward(float *out, const float *a, const float *b, size_t n);

/* CLS pooling: out(B,D) = x(B,N,D)[:, 0, :].  Backward writes dx (zero except position 0). */
void pool_cls_forward(float *out, const float *x, int B, int N, int D);
void pool_cls_backward(float *dx, const float *dout, int B, int N, int D);
/* Masked mean pooling: out(B,D) = mean over positions with mask(B,N)=1 (0 vector if none). */
void pool_mean_forward(float *out, const float *x, const uint8_t *mask, int B, int N, int D);
void pool_mean_backward(float *dx, const float *dout, const uint8_t *mask, int B, int N, int D);

/* Softmax cross-entropy. logits(B,K), targets(B) in [0,K). Writes probs(B,K), losses(B) (nats).
 * Targets < 0 are ignored (loss 0, zero gradient). */
void crossentropy_forward(float *losses, float *probs, const float *logits, const int32_t *targets, int B, int K);
/* dlogits(B,K) = (probs - onehot(target)) * scale   (scale is usually 1/number of counted rows). */
void crossentropy_backward(float *dlogits, const float *probs, const int32_t *targets, int B, int K, float scale);

#endif
