/* blocksparse.h - exact attention over a per-row candidate set, shared by the sparse-pattern
 * mechanisms (local, longformer, bigbird, sparse). Never builds an N x Nk matrix.
 *
 * Glossary: B batch, H heads, N query length, Nk key length, Dh head size, Br rows per tile
 * (BS_BR), Bc key columns per chunk (BS_BC).
 *
 * A mechanism describes its pattern as TILES of query rows. For each (b, h, tile) its plan
 * callback lists up to BS_BR query positions and up to BS_MAX_SEG key SEGMENTS. A segment is an
 * ascending list of key positions (explicit, or start + t*stride) and, for each row r of the tile,
 * the half-open range [lo[r], hi[r]) of segment columns that row sees. Row i's candidate set is the
 * union over segments of those columns whose key is valid (key padding and any pattern-specific
 * exclusion, see bs_seg.valid). The plan must list each key at most once per row (no duplicates
 * across segments), and every query row 0..N-1 must appear in exactly one tile per (b, h); rows
 * with no segment (or no valid candidate) get output 0. (Two-pass problems: see bs_problem.split.)
 *
 * One softmax normalises the whole candidate set (reference/attention.md §0.2), so the kernel is
 * the online-softmax loop of §1.3 restricted to the listed columns:
 *   forward:  per (b, h, tile), in parallel: scores s*q_i.k_j, running max, exp, P V; writes out
 *             and the row log-sum-exp L_i (+inf for rows with no candidate) into lse;
 *   backward: per (b, h), in parallel (one thread owns dq, dk, dv of that (b, h)): recompute
 *             P = exp(S - L), dV += P~^T dO, dP = dO V^T, dS = P (dP - D) with D_i = dO_i . O_i,
 *             dQ = s dS K, dK = s dS^T Q. Single pass, tiles in a fixed order, so results do not
 *             depend on the thread count.
 * Long sums (row normaliser, P V and dQ over many chunks, dK and dV over many rows) are carried
 * in double; sums inside one chunk of <= BS_BC columns are float.
 *
 * Dropout on the probabilities (training with L->dropout > 0) uses attn_dropout_scale with the
 * original (b, h, i, j) coordinates, so forward and backward regenerate the same mask.
 *
 * Scratch: the kernel needs bs_thread_bytes(Nk, Dh) bytes per OpenMP thread; it runs with
 * omp_get_max_threads() threads, so size the scratch with n_threads >= that (lra_threads()).
 */
#ifndef LRA_BLOCKSPARSE_H
#define LRA_BLOCKSPARSE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "attention.h"

#define BS_BR 32      /* query rows per tile */
#define BS_BC 64      /* key columns per chunk */
#define BS_MAX_SEG 40 /* segments per tile */
#define BS_ALIGN 64

typedef struct {
    int n;                /* columns (keys) in the segment */
    const int *pos;       /* ascending key positions (n), or NULL: position = start + t*stride */
    int start, stride;
    /* Key validity of column t: valid[idx] with idx = mstart + t*mstride when mstride != 0, else
     * idx = the key position; idx outside [0, Nk) is invalid. valid == NULL: the key-padding row
     * key_mask[b] (all valid when the mask is NULL). Mechanisms pass their own row to exclude
     * keys listed in another segment (Longformer's global keys inside the band), or to read the
     * mask elsewhere (LRA's strided local attention). */
    const uint8_t *valid;
    int mstart, mstride;
    int lo[BS_BR], hi[BS_BR]; /* per row: visible columns [lo, hi), clipped to [0, n) */
} bs_seg;

typedef struct {
    int nr;          /* query rows in this tile (0: nothing to do) */
    int row[BS_BR];  /* their positions in [0, N) */
    int nseg;
    bs_seg seg[BS_MAX_SEG];
} bs_tile;

/* Reset a segment's header (everything before lo): a contiguous, all-rows segment of 0 keys. */
static inline void bs_seg_reset(bs_seg *g) { memset(g, 0, offsetof(bs_seg, lo)); }

typedef struct bs_problem bs_problem;

/* Fill T for tile t of (b, h): T->nr, T->row, T->nseg and the segments. Called concurrently from
 * several threads: read-only access to P and P->ctx. */
typedef void (*bs_plan_fn)(const bs_problem *P, int b, int h, int t, bs_tile *T);

struct bs_problem {
    attn_layer *L;           /* shape (B, H, N, Nk, Dh), dropout, seed, step */
    const uint8_t *key_mask; /* (B, Nk) or NULL */
    int n_tiles;             /* tiles per (b, h) */
    bs_plan_fn plan;
    const void *ctx;         /* the mechanism's plan data */
    float *lse;              /* (B, H, N): row log-sum-exp, written by forward, read by backward */
    void *scratch;           /* n_threads * bs_thread_bytes(Nk, Dh) bytes, BS_ALIGN aligned */
    /* Optional second pass: tiles [0, split) are pass 0 and [split, n_tiles) pass 1; then EACH pass
     * lists every query row exactly once, and a row's softmax runs over its candidates of both
     * passes (the forward carries the online-softmax state of pass 0 over in `state`; the backward
     * adds the dq of both). For patterns whose two parts want different row tilings (the strided
     * pattern: contiguous rows for the band, rows of one residue class for the every-l-th keys).
     * split = 0: one pass, every row in exactly one tile, state unused. */
    int split;
    void *state;             /* bs_pass_state_bytes(B, H, N, Dh) bytes when split > 0 */
};

/* Bytes of the pass-0 state: per row m (float), l (double), P V (Dh floats). */
size_t bs_pass_state_bytes(int B, int H, int N, int Dh);

/* Bytes of kernel scratch per thread (forward and backward), and for n_threads threads. */
size_t bs_thread_bytes(int Nk, int Dh);
size_t bs_scratch_bytes(int Nk, int Dh, int n_threads);

/* Round up to BS_ALIGN: mechanisms place their own shared scratch before the kernel's. */
static inline size_t bs_align(size_t n) { return (n + BS_ALIGN - 1) / BS_ALIGN * BS_ALIGN; }

/* Fast forward: q (B,H,N,Dh), k and v (B,H,Nk,Dh) -> out (B,H,N,Dh), P->lse (B,H,N). */
void bs_forward(const bs_problem *P, const float *q, const float *k, const float *v, float *out);

/* Backward for the same P (same plan) after bs_forward: overwrites dq (B,H,N,Dh), dk and dv
 * (B,H,Nk,Dh); keys no row sees get gradient 0. out and P->lse are forward's outputs. */
void bs_backward(const bs_problem *P, const float *q, const float *k, const float *v, const float *out,
                 const float *dout, float *dq, float *dk, float *dv);

/* Key j in the candidate set of query i for (b, h), INCLUDING key padding and causality:
 * the plain definition of a pattern, for references. */
typedef int (*bs_visible_fn)(const void *ctx, int b, int h, int i, int j);

/* Plain reference: for every (b, h, i), softmax in double over {j : visible(ctx, b, h, i, j)}
 * with scale 1/sqrt(Dh) and L's dropout, O(N * Nk) time, O(Nk) memory. Rows with no visible key
 * get 0. For tests (ops->reference). */
void bs_reference(attn_layer *L, bs_visible_fn visible, const void *ctx, const float *q, const float *k,
                  const float *v, float *out);

/* FLOPs of attending n_pairs (query, key) pairs with head size Dh: 2*Dh for q.k and 2*Dh for
 * P V (multiply-add = 2), the convention of ops->flops. */
static inline double bs_pair_flops(double n_pairs, int Dh) { return n_pairs * 4.0 * Dh; }

/* Checks shared by the validators of the group: Nk == N (no segment memory). Returns 0 or -1
 * with a message in err. */
int bs_validate_shape(const char *name, const attn_shape *s, char *err, size_t errlen);

#endif
