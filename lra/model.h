/* model.h - the Transformer encoder used by every task (DESIGN.md "Model").
 *
 * token embedding (+ CLS row) + positions (sinusoidal | learned | none) -> dropout ->
 * n_layers x pre-LN block [ LN -> Q,K,V projections -> attention mechanism -> output projection
 *                           -> dropout -> residual ; LN -> W1 -> GELU -> dropout -> W2 -> dropout
 *                           -> residual ] -> final LN -> pooling (CLS | masked mean) ->
 * classifier MLP (Dense(mlp_dim) -> ReLU -> Dense(n_classes)), softmax cross-entropy.
 * Retrieval (TASK_MATCH) runs the same encoder on both documents (2B sequences) and classifies
 * [u, v, u*v, u-v] (Tay et al. 2020, App. A.1.3).
 *
 * Letters: B batch (examples), Be = B * n_inputs encoder sequences, S task seq_len, N = S (+1 with
 * CLS) positions, D d_model, H heads, Dh = D/H, F d_ff, V vocab rows (task vocab + CLS), K classes,
 * M mlp_dim, R = Be*N rows of the residual stream.
 *
 * Memory: every tensor is declared once in a table (name, category, floats); the arenas are sized
 * by a measuring pass over that table before anything is allocated (model_plan), so the memory
 * report and --max-mem refusal happen before step 1.
 */
#ifndef LRA_MODEL_H
#define LRA_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "config.h"

typedef struct {
    float *ln1_w, *ln1_b;      /* (D) */
    float *wq, *wk, *wv, *wo;  /* (D, D) as (out, in) */
    float *ln2_w, *ln2_b;      /* (D) */
    float *w1, *b1;            /* (F, D), (F) */
    float *w2, *b2;            /* (D, F), (D) */
    float *attn_w;             /* the mechanism's learned weights (or NULL) */
} block_params;

typedef struct {
    float *res_in;             /* (R, D) block input (residual stream) */
    float *ln1, *ln1_mean, *ln1_rstd; /* (R, D), (R), (R) */
    float *q, *k, *v;          /* (Be, H, N, Dh) */
    float *att;                /* (Be, H, N, Dh) mechanism output */
    float *atty;               /* (R, D) att permuted back to rows */
    float *res_mid;            /* (R, D) after the attention residual */
    float *ln2, *ln2_mean, *ln2_rstd;
    float *h;                  /* (R, F) pre-activation */
    float *g;                  /* (R, F) GELU output after dropout */
    void *attn_cache;          /* ops->cache_bytes */
} block_acts;

#define MODEL_MAX_LAYERS 64
#define MODEL_MAX_TENSORS (16 * MODEL_MAX_LAYERS + 32)

typedef struct {
    const char *name;
    int layer;                 /* -1 for non-block tensors */
    size_t n;                  /* floats */
    float **ptr;               /* where the params pointer lives */
    float **gptr;              /* where the grads pointer lives */
    int decay;                 /* 1: AdamW weight decay applies */
    int init;                  /* INIT_* */
    float init_arg;
} tensor_decl;

enum { INIT_ZERO, INIT_ONE, INIT_NORMAL, INIT_XAVIER, INIT_ATTN, INIT_SINUSOID };

typedef struct {
    const run_cfg *cfg;
    task_kind kind;
    int B, Be, n_inputs, S, N, D, H, Dh, F, L, V, K, M, R;
    int use_cls;               /* CLS token prepended (pooling cls, classify/match) */
    int head_in;               /* D, or 4D for TASK_MATCH */

    /* parameters and their gradients (same layout) */
    float *wte, *wpe, *lnf_w, *lnf_b, *hw1, *hb1, *hw2, *hb2;
    float *g_wte, *g_wpe, *g_lnf_w, *g_lnf_b, *g_hw1, *g_hb1, *g_hw2, *g_hb2;
    float *pe_fixed;           /* (N, D) sinusoidal table (activations arena, not learned) */
    block_params blk[MODEL_MAX_LAYERS], gblk[MODEL_MAX_LAYERS];
    block_acts act[MODEL_MAX_LAYERS];
    attn_layer attn[MODEL_MAX_LAYERS];
    unsigned char *attn_state[MODEL_MAX_LAYERS];

    /* the parameter table */
    tensor_decl tensors[MODEL_MAX_TENSORS];
    int n_tensors;
    size_t n_params;           /* floats in the params arena incl. alignment padding */
    size_t n_params_real;      /* learned parameters */

    /* optimizer state, best-validation snapshot */
    float *adam_m, *adam_v, *best;

    /* batch inputs and head activations */
    int32_t *ids;              /* (Be, N) token ids incl. CLS */
    uint8_t *mask;             /* (Be, N) 1 = real */
    int32_t *targets;          /* (B) */
    float *res_out;            /* (R, D) last block output */
    float *lnf, *lnf_mean, *lnf_rstd; /* (R, D), (R), (R) */
    float *pooled;             /* (Be, D) */
    float *head_x;             /* (B, head_in) */
    float *head_h, *head_a;    /* (B, M) pre/post ReLU */
    float *logits, *probs, *losses; /* (B, K), (B, K), (B) */

    /* backward scratch */
    float *d_res, *d_tmp, *d_tmp2;  /* (R, D) */
    float *d_q, *d_k, *d_v, *d_att; /* (Be, H, N, Dh) */
    float *d_h, *d_g;          /* (R, F) */
    float *d_pooled, *d_head_x, *d_head_h, *d_logits; /* (Be,D), (B,head_in), (B,M), (B,K) */
    void *attn_scratch;

    arena_t arenas[MEM_N_CATEGORIES];
    double fwd_flops;          /* forward FLOPs per batch */
    uint64_t seed;
    long step;                 /* optimizer steps done */
    float drop_p;              /* dropout rate of the last forward (0 in eval) */
} model_t;

/* Lay out the model for run config c with batch size B (and the task's vocab/classes/kind):
 * measuring pass, then allocation, then parameter initialisation from (seed, RNG_INIT).
 * If max_mem > 0 and the plan exceeds it, returns -1 without allocating and writes the plan
 * size into err ("needs 1.2 GiB > --max-mem 400 MiB"). Returns 0 on success. */
int model_build(model_t *m, const run_cfg *c, int B, int vocab, int n_classes, task_kind kind,
                long long max_mem, char *err, size_t errlen);
void model_free(model_t *m);

/* Bytes planned per category (valid after model_build or a failed build). */
size_t model_planned_bytes(const model_t *m, mem_category c);
size_t model_planned_total(const model_t *m);
/* Print the memory plan by category and a per-block summary (stderr / log). */
void model_print_plan(const model_t *m, FILE *f);

/* Fill m->ids/mask/targets from examples idx[0..B) of split s (idx[i] < 0: a padding example with
 * target -1, ignored by loss and accuracy). */
void model_load_batch(model_t *m, const task_split *s, const int *idx);

/* Forward on the loaded batch; returns the mean loss over counted examples (nats) and writes the
 * number of correct argmax predictions to *correct and counted examples to *counted. */
double model_forward(model_t *m, int training, int *correct, int *counted);
/* Backward of the mean loss of the last forward; accumulates into the grads arena (zero it first
 * with model_zero_grad). */
void model_backward(model_t *m);
void model_zero_grad(model_t *m);
/* Clip, then one AdamW step at learning rate lr (the step counter advances). Returns the
 * gradient norm before clipping. */
double model_update(model_t *m, float lr);

/* Save / restore the current parameters into the best-validation snapshot. */
void model_snapshot_best(model_t *m);
void model_restore_best(model_t *m);

#endif
