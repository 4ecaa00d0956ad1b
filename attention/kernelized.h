/* kernelized.h - helpers shared by the kernelised and low-rank group of mechanisms: `linear`,
 * `performer` (normalised linear attention with a feature map, reference/attention.md §5.1-5.5),
 * `linformer` (§4) and `nystromformer` (§9.4). Nothing outside this group should include it.
 *
 * Letters: N query length, Nk key length (Nk - N leading memory keys), Dh head size, M features
 * per token, K projected length (Linformer), Lm landmarks (Nystromformer), C rows per chunk.
 *
 * Normalised linear attention (one (b,h) slice; §5.1). Query i sees the visible real keys j
 * (all of them, or j <= i + Nk - N when causal):
 *     num_i = sum_j (phiq_i . phik_j) v_j      den_i = sum_j phiq_i . phik_j  (+ guard)
 *     out_i = num_i / den_i
 * Key features come in a factored form so that FAVOR+'s max stabiliser can be carried exactly:
 *     phik_jl(c) = s * (psi_jl * exp(lambda_j - c) + eps_k)
 * where psi (Nk, M) and lambda (Nk) are what the key map returns (lambda = 0 for maps without a
 * stabiliser) and c is the stabiliser: the max of lambda over the real keys (bidirectional; the
 * JAX/LRA "max over all keys", restricted to real ones so padding cannot change it) or the running
 * max over the visible real keys (causal; §5.4, so no future key can change a past output, bit for
 * bit). c cancels between num and den except for eps_k; it is treated as a constant in backward
 * (stop-gradient, §5.3). Padded keys are dropped after the feature map (§5.5): they add nothing
 * to num, den or the stabiliser, and get zero gradient.
 *
 * Bidirectional: S = sum_j phik_j v_j^T, z = sum_j phik_j over key chunks (a GEMM per chunk of
 * KZ_CHUNK rows, float within a chunk, double across chunks), then num = Phi_q S (GEMM). The final
 * S, z and c are cached for backward, which recomputes the features.
 * Causal: the chunked form of §5.1 with chunks of KZ_CCHUNK (16) positions: intra-chunk pairs through
 * the masked product Phi_q Psi^T (GEMM), earlier chunks through the prefix state (double, rescaled
 * when the running stabiliser grows). Backward: a forward pass over chunks for dq (prefix state) and
 * a reverse pass for dk, dv (suffix sums of phi_i dnum_i^T, phi_i dden_i), as in fast-transformers'
 * CPU kernel; never the subtraction-based prefix reconstruction of the JAX code (§12).
 * Memory: O(C*M + M*Dh) per thread; causal adds O(N + Nk) floats per thread (the running
 * stabiliser per position and the denominators, kept for the reverse pass). Time O(N M Dh) plus
 * O(N C M) for the causal intra-chunk products.
 */
#ifndef LRA_KERNELIZED_H
#define LRA_KERNELIZED_H

#include <stddef.h>
#include <stdint.h>

#include "attention.h"

/* Rows per chunk of the chunked loops (feature maps, partial sums). */
#define KZ_CHUNK 64
/* Positions per chunk of the causal form (<= KZ_CHUNK): the intra-chunk product costs O(C M) per
 * row and the prefix state O(M Dh), so C near Dh is best (measured: 16 is ~2x faster than 64 and
 * than a row-by-row scan for M = 256, Dh = 16). */
#define KZ_CCHUNK 16

enum { KZ_DEN_ADD = 0, /* den + eps (Katharopoulos et al.; fast-transformers; LRA linear) */
       KZ_DEN_JAX = 1  /* den + 2 eps [|den| <= eps] (google-research fast_attention.py) */ };

typedef struct kz_feat kz_feat;
/* A feature map. All row pointers are (n, Dh) / (n, M) row-major. */
struct kz_feat {
    int M, Dh;
    float key_scale; /* s */
    float key_eps;   /* eps_k, added after the exp(lambda - c) rescale */
    int key_log;     /* 1: keys return lambda (running-max stabiliser); 0: lambda = 0 */
    int den_guard;   /* KZ_DEN_ADD or KZ_DEN_JAX */
    float den_eps;
    /* phi (n, M) of query rows x (n, Dh). */
    void (*query)(const kz_feat *f, const float *x, int n, float *phi);
    /* psi (n, M) and lambda (n, only written when key_log) of key rows x. */
    void (*key)(const kz_feat *f, const float *x, int n, float *psi, float *lam);
    /* dx (n, Dh) from dphi (n, M), given x and the phi that query() returned. dphi may be
     * overwritten (it is driver scratch). */
    void (*query_bwd)(const kz_feat *f, const float *x, int n, const float *phi, float *dphi, float *dx);
    /* dx (n, Dh) from dpsi (n, M) (lambda held fixed), given x and psi. dpsi may be overwritten. */
    void (*key_bwd)(const kz_feat *f, const float *x, int n, const float *psi, float *dpsi, float *dx);
    const float *W;  /* (M, Dh) random projection for maps that use one, else NULL */
    float x_scale;   /* data normaliser applied to x before W (Dh^-1/4 for FAVOR+) */
    float phi_eps;   /* epsilon inside the map (FAVOR+ eps_phi, ReLU kernel_eps) */
};

/* Bytes of per-thread scratch the kz_* drivers need for one (b,h) slice. */
size_t kz_thread_bytes(const kz_feat *f, int N, int Nk, int causal);
/* Floats the bidirectional forward keeps per (b,h) for backward: S (M, Dh), z (M), c (1). */
static inline size_t kz_cache_floats(const kz_feat *f) { return (size_t)f->M * (f->Dh + 1) + 1; }

/* Forward of one (b,h) slice. q (N,Dh), k and v (Nk,Dh), mask (Nk) or NULL, out (N,Dh).
 * cache: kz_cache_floats(f) floats, written when !causal (may be NULL when causal).
 * work: kz_thread_bytes(...) bytes. */
void kz_forward(const kz_feat *f, int N, int Nk, int causal, const float *q, const float *k, const float *v,
                const uint8_t *mask, float *out, float *cache, void *work);

/* Backward of one (b,h) slice: OVERWRITES dq (N,Dh), dk, dv (Nk,Dh). out is the forward's
 * output, dout (N,Dh). cache as written by kz_forward (bidirectional). */
void kz_backward(const kz_feat *f, int N, int Nk, int causal, const float *q, const float *k, const float *v,
                 const uint8_t *mask, const float *out, const float *dout, const float *cache,
                 float *dq, float *dk, float *dv, void *work);

/* Plain O(N*Nk) reference of the same quantity (tests): builds every phik_j with the stabiliser
 * a query sees and sums directly in double. */
void kz_reference(const kz_feat *f, int N, int Nk, int causal, const float *q, const float *k, const float *v,
                  const uint8_t *mask, float *out);

/* Whole-layer drivers (linear, performer): slices (B,H), OpenMP over (b,h) with L->scratch split
 * per thread (kz_layer_scratch_bytes) and the bidirectional sums in L->cache (kz_layer_cache_bytes). */
size_t kz_layer_cache_bytes(const kz_feat *f, const attn_shape *s);
size_t kz_layer_scratch_bytes(const kz_feat *f, const attn_shape *s, int n_threads);
void kz_layer_forward(const kz_feat *f, const attn_layer *L, const float *q, const float *k, const float *v,
                      const uint8_t *mask, float *out);
void kz_layer_backward(const kz_feat *f, const attn_layer *L, const float *q, const float *k, const float *v,
                       const uint8_t *mask, const float *out, const float *dout, float *dq, float *dk, float *dv);
void kz_layer_reference(const kz_feat *f, const attn_layer *L, const float *q, const float *k, const float *v,
                        const uint8_t *mask, float *out);
/* Forward FLOPs of the layer given the feature map's FLOPs per row. */
double kz_layer_flops(const kz_feat *f, const attn_shape *s, double feature_flops_per_row);

/* Run fn(b, h, thread_id, ctx) for every (b,h) in an OpenMP loop (static schedule, each call owns
 * its slice), with at most n_threads threads so per-thread scratch sized for n_threads suffices. */
void kz_parallel_bh(int B, int H, void (*fn)(int b, int h, int tid, void *ctx), void *ctx);

/* ---- small dense helpers (row-major, single-threaded CBLAS) ---- */

/* C (m,n) = alpha * op(A) op(B) + beta * C, op = transpose when ta/tb. lda etc. are row strides. */
void kz_gemm(int ta, int tb, int m, int n, int kk, float alpha, const float *A, int lda, const float *B, int ldb,
             float beta, float *C, int ldc);

/* ---- group-specific accessors (tests set learned weights through these) ---- */

/* Linformer: the (K, max_len) row-major projection `which` (0 = E for keys, 1 = F for values) used
 * by head h of layer L, inside L->w (or L->dw when grad = 1). With share kv/layerwise, E == F. */
float *linformer_proj(const attn_layer *L, int h, int which, int grad);

/* Nystromformer: the depthwise conv kernel (conv floats) of head h inside L->w / L->dw, or NULL
 * when conv = 0. */
float *nystromformer_conv(const attn_layer *L, int h, int grad);

/* Performer: the current random projection (M, Dh) in L->state, or NULL for kernel lra_relu.
 * Valid after ops->begin. */
const float *performer_projection(const attn_layer *L);

#endif
