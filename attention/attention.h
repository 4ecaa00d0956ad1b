/* attention.h - the attention mechanism interface. One constant attn_ops table per mechanism,
 * found by its YAML name through the registry (attention/registry.c).
 *
 * Glossary (used in shape comments across attention/):
 *   B batch, H heads, N query length, Nk key length (Nk >= N; Nk > N only with segment memory,
 *   where the first Nk-N keys are memory), Dh head size, D = H*Dh, W window, M random features,
 *   K projected length (Linformer), Bs block size.
 *
 * Layout: q (B,H,N,Dh), k and v (B,H,Nk,Dh), out (B,H,N,Dh), contiguous float32 row-major, Dh
 * innermost. key_mask (B,Nk) uint8, 1 = real token, 0 = padding; NULL means all real.
 * Causal: query i sees key j iff j <= i + (Nk - N).
 * Logit scale is 1/sqrt(Dh) applied to the scores unless a mechanism documents otherwise.
 *
 * Gradient convention (the whole project): backward OVERWRITES activation gradients (dq, dk, dv)
 * and ACCUMULATES (+=) into parameter gradients (L->dw).
 *
 * Memory: forward may write what backward needs into L->cache (ops->cache_bytes, part of the
 * activations arena, one per layer) and use L->scratch freely (ops->scratch_bytes, shared by all
 * layers; contents are not preserved between calls). Nothing else may be allocated per step.
 * No mechanism materialises an N x Nk matrix unless it is dense by nature (materialised softmax,
 * Synthesizer); then its cache_bytes says so and the benchmark shows it.
 *
 * Determinism: OpenMP loops own their outputs; no float atomics or reduction(+:); random draws
 * come from rng_at(L->seed, stream, counter) with counters derived from coordinates.
 */
#ifndef LRA_ATTENTION_H
#define LRA_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

#include "../lra/rng.h"
#include "../lra/schema.h"

typedef struct {
    int B, H, N, Nk, Dh;
    int causal;   /* 1: causal mask (see above) */
    int layer;    /* 0-based index of this layer, for per-layer parameters (dilation lists, ...) */
    int n_layers;
    int max_len;  /* longest N the model is configured for (Linformer's n_max) */
} attn_shape;

typedef struct attn_ops attn_ops;

/* One attention layer instance. The model owns the memory; the mechanism only reads the sizes it
 * declared through its ops. */
typedef struct {
    const attn_ops *ops;
    const void *params;  /* the mechanism's parameter struct, filled from ops->schema */
    attn_shape shape;
    float *w;            /* learned weights, ops->n_weights floats (params arena); NULL if none */
    float *dw;           /* their gradients (grads arena), accumulated by backward */
    void *state;         /* non-learned buffers that persist across steps (random features):
                            ops->state_bytes, zeroed at start; the mechanism fills it */
    void *cache;         /* forward -> backward, ops->cache_bytes */
    void *scratch;       /* temporaries, ops->scratch_bytes */
    uint64_t seed;       /* run seed; use streams RNG_DROPOUT / RNG_FEATURES / RNG_LSH */
    long step;           /* current training step (0-based), for redraw schedules and dropout keys */
    int training;        /* 1 during training steps (dropout active, redraws allowed) */
    float dropout;       /* dropout on attention probabilities, in [0, 1) */
} attn_layer;

enum {
    ATTN_CAP_CAUSAL = 1 << 0,   /* supports shape.causal = 1 */
    ATTN_CAP_KEY_MASK = 1 << 1, /* honours key_mask (else a non-NULL mask is rejected by validate) */
    ATTN_CAP_MEMORY = 1 << 2,   /* supports Nk > N (segment memory) */
    ATTN_CAP_MAX_LEN = 1 << 3,  /* needs shape.max_len (fixed maximum length, e.g. Linformer) */
    ATTN_CAP_DROPOUT = 1 << 4,  /* applies L->dropout to attention probabilities */
};

struct attn_ops {
    const char *name;    /* YAML name, e.g. "softmax" */
    const char *summary; /* one line for `lra list` */
    const char *source;  /* paper and arXiv id */
    const param_def *schema;
    int n_schema;
    size_t params_size;  /* sizeof the parameter struct (<= ATTN_PARAMS_MAX) */
    unsigned caps;

    /* Check params against a shape (e.g. causal requested but unsupported, block > N allowed?).
     * Return 0, or -1 with a message naming the offending key. NULL: always valid. */
    int (*validate)(const void *params, const attn_shape *s, char *err, size_t errlen);

    /* Sizes, all pure functions of params and shape. NULL means 0. */
    size_t (*n_weights)(const void *params, const attn_shape *s);    /* floats */
    size_t (*state_bytes)(const void *params, const attn_shape *s);
    size_t (*cache_bytes)(const void *params, const attn_shape *s);
    size_t (*scratch_bytes)(const void *params, const attn_shape *s, int n_threads);
    /* Forward FLOPs of one call (multiply-add = 2), excluding the Q/K/V/O projections. */
    double (*flops)(const void *params, const attn_shape *s);

    /* Initialise learned weights L->w (n_weights floats) from r. NULL if none. */
    void (*init)(attn_layer *L, rng_t *r);
    /* Called once before each forward (training or eval): redraw schedules etc. NULL if none. */
    void (*begin)(attn_layer *L);

    void (*forward)(attn_layer *L, const float *q, const float *k, const float *v,
                    const uint8_t *key_mask, float *out);
    /* out is forward's output for the same inputs; dout (B,H,N,Dh). Writes dq, dk, dv. */
    void (*backward)(attn_layer *L, const float *q, const float *k, const float *v,
                     const uint8_t *key_mask, const float *out, const float *dout,
                     float *dq, float *dk, float *dv);
    /* Plain, obviously-correct forward (may use O(N*Nk) memory it mallocs itself); tests only. */
    void (*reference)(attn_layer *L, const float *q, const float *k, const float *v,
                      const uint8_t *key_mask, float *out);
};

#define ATTN_PARAMS_MAX 1024

/* Registry (attention/registry.c). */
extern const attn_ops *const attn_registry[];
extern const int attn_registry_count;
/* Mechanism by YAML name, or NULL. */
const attn_ops *attn_find(const char *name);

/* Helpers shared by mechanisms (attention/attn_util.c). */
static inline int attn_visible(const attn_shape *s, int i, int j) {
    return !s->causal || j <= i + (s->Nk - s->N);
}
/* Dropout keep-scale for probability element (b,h,i,j) of layer L at L->step: 0 or 1/(1-p).
 * Counter-based, so forward and backward regenerate the same mask. Returns 1 when not training. */
float attn_dropout_scale(const attn_layer *L, int b, int h, int i, int j);

#endif
