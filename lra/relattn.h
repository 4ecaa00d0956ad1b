/* relattn.h - Transformer-XL relative multi-head attention over [memory ; segment], one layer.
 *
 * Source: Dai et al., "Transformer-XL: Attentive Language Models Beyond a Fixed-Length Context",
 * arXiv 1901.02860, §3.3 (the relative score A_ij = (a) + (b) + (c) + (d)); code
 * kimiyoung/transformer-xl pytorch/mem_transformer.py (RelPartialLearnableMultiHeadAttn,
 * PositionalEmbedding, the same_length / clamp_len options). Spec: reference/attention.md §6.1.
 * With the Compressive Transformer (Rae et al., arXiv 1911.05507, §3) the caller passes
 * [cmem ; mem] as the Mc memory rows; nothing else changes.
 *
 * Glossary: B batch, H heads, L segment rows (queries), Mc memory rows present (0 at the start of
 * a stream; memory rows come first, oldest first), Mk = Mc + L key rows, Dh head size,
 * D = d_model (residual width), HD = H*Dh.
 *
 * Layout (float32, contiguous, row-major, innermost last):
 *   q        (B, H, L,  Dh)   queries of the L segment rows            (q_i)
 *   k, v     (B, H, Mk, Dh)   keys/values of the rows [memory ; segment] (k_j, v_j)
 *   r        (Mk, H, Dh)      projected relative embeddings r = R W_r: row p is distance
 *                             Mk-1-p (TXL's layout: p = 0 is the farthest, p = Mk-1 distance 0)
 *   u        (H, Dh)          global content bias   (TXL r_w_bias, the paper's u)
 *   v_bias   (H, Dh)          global position bias  (TXL r_r_bias, the paper's v)
 *   out      (B, H, L, Dh)
 *
 * Score (query i in 0..L-1, key j in 0..Mk-1), relative distance delta_ij = (i + Mc) - j:
 *   score(i,j) = scale * [ (q_i + u) . k_j  +  (q_i + v_bias) . r[Mk-1-d(delta_ij)] ]
 *   d(delta) = min(delta, clamp_len) if clamp_len > 0, else delta.
 * Visible keys: delta_ij >= 0 (causal: key j is not after query i), and with same_length also
 * delta_ij < mem_len (every query sees exactly mem_len keys once Mk > mem_len, as TXL's
 * same_length mask: triu(ones, 1+mlen) + tril(ones, -(mem_len - mlen))). delta = 0 (the query's
 * own row) is always visible, so no row is ever fully masked.
 * out_i = sum_j softmax_j(score(i,.)) v_j. The BD term is computed directly per (i,j): no
 * _rel_shift. No dropout on attention probabilities (TXL dropatt, default 0, is not supported).
 *
 * Memory: the forward never stores an L x Mk matrix: it works on tiles of TQ = min(L, 32) query
 * rows (scores of one tile in scratch) and caches only the row log-sum-exp, (B,H,L) floats; the
 * backward recomputes the scores tile by tile from the cache (FlashAttention-style). Sizes:
 * relattn_cache_bytes, relattn_scratch_bytes (independent of the thread count; both grow with Mc and
 * L, so an arena planned for the largest Mc serves every call with fewer memory rows).
 *
 * What the caller does (not this module):
 *   - the projections q = h W_q, k = [mem;h] W_k, v = [mem;h] W_v (layers.h linear_forward) and the
 *     reshape to (B,H,.,Dh); the output projection;
 *   - r = R W_r: fill R (Mk, d_model) with relattn_pos_emb(), then
 *     linear_forward(r, R, W_r, NULL, Mk, d_model, H*Dh) with W_r (H*Dh, d_model) the caller's
 *     parameter; r is then (Mk, H, Dh) as this module reads it. Backward: relattn_backward gives
 *     dr (Mk, H, Dh); linear_backward(NULL, dW_r, NULL, dr, R, W_r, Mk, d_model, H*Dh) gives
 *     dW_r += R^T dr (R is a constant, so dinp may be NULL);
 *   - stop-gradient on memory: dk, dv are written for all Mk rows; the caller drops rows 0..Mc-1.
 *
 * Gradient convention (project-wide): dq, dk, dv and dr are OVERWRITTEN (activations; r is the
 * activation R W_r); du and dv_bias are ACCUMULATED (+=; parameters, shared across layers in TXL).
 *
 * Threads: OpenMP over (b, h); each (b,h) task owns its rows of out, dq, dk, dv and its own
 * partial of du, dv_bias, dr in scratch; the partials are summed over b in a fixed order. The
 * products inside a task are CBLAS sgemm calls (one thread each, inside the parallel loop).
 * Results are bit-identical for any thread count.
 */
#ifndef LRA_RELATTN_H
#define LRA_RELATTN_H

#include <stddef.h>

typedef struct {
    int B, H, L, Dh;
    int Mc;          /* memory rows present, 0 <= Mc; Mk = Mc + L */
    int clamp_len;   /* > 0: distances above clamp_len use the row of distance clamp_len; 0: off */
    int same_length; /* 1: mask delta >= mem_len (TXL same_length); 0: plain causal */
    int mem_len;     /* configured memory capacity in rows (TXL mem_len; with compressive memory
                        cmem_len + mem_len). Read only when same_length = 1, then must be >= 1. */
    float scale;     /* logit scale; 0 means 1/sqrt(Dh) (TXL's scale) */
} relattn_cfg;

/* Mk = Mc + L. */
static inline int relattn_klen(const relattn_cfg *c) { return c->Mc + c->L; }

/* Validate a configuration. Returns 0, or -1 with a message in err naming the offending value
 * (B/H/L/Dh >= 1, Mc >= 0, clamp_len >= 0, same_length in {0,1} with mem_len >= 1). The kernels
 * below abort (LRA_CHECK) on a configuration this rejects. */
int relattn_check(const relattn_cfg *c, char *err, size_t errlen);

/* Bytes forward writes for backward: the row log-sum-exp, B*H*L floats. */
size_t relattn_cache_bytes(const relattn_cfg *c);
/* Bytes of scratch used by forward and backward (contents not preserved between calls):
 * per (b,h) task 2*TQ*Mk + 4*TQ*Dh floats (TQ = min(L, 32)), plus backward's partial gradients
 * B*H*(Mk+2)*Dh floats.
 * Does not depend on the number of threads. */
size_t relattn_scratch_bytes(const relattn_cfg *c);
/* Forward FLOPs of one call (multiply-add = 2): two score terms and P.V over the visible pairs. */
double relattn_flops(const relattn_cfg *c);

/* Sinusoidal relative position table R (klen, d_model), TXL PositionalEmbedding: row p has
 * distance pos = klen-1-p (clamped to clamp_len if clamp_len > 0), and
 *   R[p][k] = sin(pos * f_k),  R[p][d_model/2 + k] = cos(pos * f_k),  f_k = 10000^(-2k/d_model),
 * k = 0..d_model/2-1 (concatenated halves [sin | cos], not interleaved). d_model must be even.
 * (Clamping here is optional: the kernels clamp the distance themselves and never read rows whose
 * distance exceeds clamp_len; it is offered to match TXL's table exactly.) TXL applies dropout to R;
 * that is the caller's choice. */
void relattn_pos_emb(float *R, int klen, int d_model, int clamp_len);

/* Forward. Shapes in the header comment. Writes out (B,H,L,Dh) and cache (relattn_cache_bytes).
 * scratch: relattn_scratch_bytes. Aborts (LRA_CHECK) on a bad cfg or NULL pointer. */
void relattn_forward(const relattn_cfg *c, const float *q, const float *k, const float *v, const float *r,
                     const float *u, const float *v_bias, float *out, float *cache, void *scratch);

/* Backward (reference/attention.md §6.1), with dS_ij = P_ij (dout_i.v_j - dout_i.out_i):
 *   dq_i  = s sum_j dS_ij (k_j + r[delta_ij])          (overwritten, (B,H,L,Dh))
 *   dk_j  = s sum_i dS_ij (q_i + u)                    (overwritten, (B,H,Mk,Dh), all rows)
 *   dv_j  = sum_i P_ij dout_i                          (overwritten, (B,H,Mk,Dh), all rows)
 *   du   += s sum_{b,i,j} dS_ij k_j                    ((H,Dh), accumulated)
 *   dv_bias += s sum_{b,i,j} dS_ij r[delta_ij]         ((H,Dh), accumulated)
 *   dr[p] = s sum_{b, (i,j): Mk-1-d(delta_ij) = p} dS_ij (q_i + v_bias)  (overwritten, (Mk,H,Dh))
 * q, k, v, r, u, v_bias, out are the forward's inputs and output; cache is what forward wrote;
 * dout (B,H,L,Dh). du / dv_bias may be NULL (not wanted). scratch: relattn_scratch_bytes. */
void relattn_backward(const relattn_cfg *c, const float *q, const float *k, const float *v, const float *r,
                      const float *u, const float *v_bias, const float *out, const float *dout,
                      const float *cache, void *scratch, float *dq, float *dk, float *dv, float *dr,
                      float *du, float *dv_bias);

/* Plain reference forward: naive loops, double accumulation, one explicit L x Mk score matrix per
 * (b,h) that it mallocs itself. For tests only. Same arguments and output as relattn_forward. */
void relattn_reference(const relattn_cfg *c, const float *q, const float *k, const float *v, const float *r,
                       const float *u, const float *v_bias, float *out);

#endif
