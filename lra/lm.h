/* lm.h - the causal byte-level language model of TASK_LM (DESIGN.md "Model": "Language modelling is
 * causal with a next-byte head"), with optional segment-level memory:
 *
 *   byte embedding (257 ids: 0 padding, byte b -> b+1) [+ absolute positions, memory none only]
 *   -> dropout -> n_layers x pre-LN block [ LN1 -> Q (segment rows), K, V (memory + segment rows)
 *   -> attention -> Wo -> dropout -> residual ; LN2 -> W1 -> GELU -> dropout -> W2 -> dropout ->
 *   residual ] -> final LN -> head (256 byte classes) -> next-byte softmax cross-entropy.
 *
 * memory none:        attention inside the segment with any causal mechanism of the zoo.
 * memory xl:          Transformer-XL (Dai et al., arXiv 1901.02860, §3.2-3.3): each layer keeps its
 *                     INPUT hidden states of the last mem_len positions of earlier segments
 *                     (stop-gradient) and attends over [memory; segment] with the relative
 *                     attention of lra/relattn.h (terms a-d; W_r per layer, u and v shared by all
 *                     layers); no absolute positions.
 * memory compressive: Compressive Transformer (Rae et al., arXiv 1911.05507, Alg. 1): memories
 *                     leaving the mem_len window are compressed at rate c by f_c (lra/compress.h)
 *                     into cmem_len slots; keys/values come from [cmem; mem; segment]. f_c is
 *                     trained only by the attention-reconstruction loss (stop-gradient copies of the
 *                     layer's LN1, W_q, W_k, W_v; reference/attention.md §6.2).
 *
 * Keys/values of memory rows are computed with the current LN1/W_k/W_v, whose gradients include
 * the memory rows (as in Transformer-XL); only the memory hidden states themselves get no gradient.
 * The memory fills from empty at the start of a stream (so the first segment sees no memory), the
 * same way for every stream of the batch; compressed memories appear once the memory overflows.
 *
 * Letters: B parallel streams, L segment length (task.seq_len), D d_model, H heads, Dh = D/H,
 * F d_ff, M mem_len, C cmem_len, c compression_rate, K = (current C) + (current M) + L keys,
 * Kmax = C + M + L, V = 257 input ids, 256 output classes.
 */
#ifndef LRA_LM_H
#define LRA_LM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "arena.h"
#include "config.h"
#include "model.h" /* tensor_decl, INIT_*, MODEL_MAX_LAYERS */
#include "train.h"

#define LM_VOCAB 257   /* input ids: 0 padding, byte b -> b + 1 */
#define LM_CLASSES 256 /* predicted next byte */

typedef struct {
    float *ln1_w, *ln1_b;      /* (D) */
    float *wq, *wk, *wv, *wo;  /* (D, D) as (out, in) */
    float *ln2_w, *ln2_b;      /* (D) */
    float *w1, *b1, *w2, *b2;  /* (F, D), (F), (D, F), (D) */
    float *attn_w;             /* zoo mechanism weights (memory none), or NULL */
    float *w_r;                /* (D, D) Transformer-XL position projection W_r (xl/compressive) */
    float *comp_w;             /* compressor f_c parameters (compressive, learned f_c), or NULL */
} lm_block_params;

typedef struct {
    float *res_in;             /* (B, L, D) block input */
    float *cat;                /* (B, K, D) [cmem; mem; res_in] */
    float *ln1, *ln1_mean, *ln1_rstd; /* (B, K, D), (B*K), (B*K) */
    float *lnq;                /* (B, L, D) segment rows of ln1 */
    float *q;                  /* (B, H, L, Dh) */
    float *k, *v;              /* (B, H, K, Dh) */
    float *r;                  /* (H, K, Dh) R W_r in heads (xl/compressive) */
    float *att;                /* (B, H, L, Dh) */
    float *atty;               /* (B, L, D) */
    float *res_mid;            /* (B, L, D) */
    float *ln2, *ln2_mean, *ln2_rstd;
    float *h, *g;              /* (B, L, F) pre-GELU, post-GELU (after dropout) */
    void *attn_cache;          /* mechanism / relattn cache */
} lm_block_acts;

/* Memory of one set of B streams: per layer the inputs of the last n_mem positions and n_cmem
 * compressed slots, oldest first. */
typedef struct {
    float *mem[MODEL_MAX_LAYERS];  /* (B, M, D), rows [0, n_mem) valid */
    float *cmem[MODEL_MAX_LAYERS]; /* (B, C, D), rows [0, n_cmem) valid */
    int n_mem, n_cmem;
} lm_memory;

typedef struct {
    const run_cfg *cfg;
    int memory;                /* MEMORY_* */
    int B, L, D, H, Dh, F, NL, M, C, cr, Kmax;
    int K;                     /* keys of the last forward */
    size_t n_comp;             /* floats of one layer's compressor parameters (0: none) */

    /* parameters (grads mirror them) */
    float *wte, *wpe, *u, *vb, *lnf_w, *lnf_b, *head_w, *head_b;
    float *g_wte, *g_wpe, *g_u, *g_vb, *g_lnf_w, *g_lnf_b, *g_head_w, *g_head_b;
    lm_block_params blk[MODEL_MAX_LAYERS], gblk[MODEL_MAX_LAYERS];
    lm_block_acts act[MODEL_MAX_LAYERS];
    attn_layer attn[MODEL_MAX_LAYERS]; /* memory none: the zoo mechanism per layer */
    tensor_decl tensors[MODEL_MAX_TENSORS];
    int n_tensors;
    size_t n_params, n_params_real;
    float *adam_m, *adam_v, *best;

    /* memories: the training streams and the evaluation streams; `mem` points at the active one */
    lm_memory mem_train, mem_eval, *mem;

    /* segment inputs */
    int32_t *ids;              /* (B, L) input ids in [0, 257) */
    int32_t *targets;          /* (B, L) next byte in [0, 256), -1 = not scored */
    float *pe_fixed;           /* (L, D) absolute sinusoidal table (memory none, pos sinusoidal) */
    float *rpos;               /* (Kmax, D) relative sinusoid table R of the last forward */
    float *res_out, *lnf, *lnf_mean, *lnf_rstd; /* (B, L, D), (B, L) */
    float *logits, *probs;     /* (B*L, 256) */
    float *losses;             /* (B*L) per-position CE in nats (0 where target < 0) */
    int n_counted;             /* scored positions of the last forward */

    /* backward scratch (sized for B*Kmax rows) */
    float *d_res, *d_tmp, *d_tmp2, *d_ln1, *d_q, *d_k, *d_v, *d_att, *d_h, *d_g, *d_logits, *d_r;
    float *d_sink;             /* parameter-gradient sink for stop-gradient products (D*D + 2D) */
    void *attn_scratch;
    float *comp_scratch;       /* compressive: evicted rows, new slots and reconstruction buffers */
    size_t comp_scratch_floats;

    arena_t arenas[MEM_N_CATEGORIES];
    double fwd_flops;          /* forward FLOPs per segment batch at full memory */
    double last_recon;         /* reconstruction loss of the last memory update (NaN if none) */
    uint64_t seed;
    long step;
    float drop_p;
} lm_t;

/* Lay out and initialise the LM of run config c for B parallel streams (segment length
 * c->task.seq_len): measuring pass, --max-mem check (max_mem > 0), allocation, init from
 * (train.seed, RNG_INIT). Errors (-1, message in err): too many layers, mechanism validate()
 * failures, memory xl/compressive with a mechanism other than softmax, planned memory over
 * --max-mem ("... > --max-mem ..."). */
int lm_build(lm_t *m, const run_cfg *c, int B, long long max_mem, char *err, size_t errlen);
void lm_free(lm_t *m);
size_t lm_planned_total(const lm_t *m);
size_t lm_planned_bytes(const lm_t *m, mem_category c);
/* Model summary and memory plan by category (incl. the segment memory state). */
void lm_print_plan(const lm_t *m, FILE *f);

/* Forward of the segment in m->ids / m->targets with the active memory (read, not changed).
 * Returns the mean next-byte cross-entropy (nats) over positions with target >= 0 (0 if none);
 * per-position losses in m->losses. training: dropout on. */
double lm_forward(lm_t *m, int training);
/* Backward of the mean CE of the last forward; accumulates into the grads (zero them first). */
void lm_backward(lm_t *m);
/* Push the last forward's layer inputs into the active memory (drop the oldest beyond mem_len;
 * compressive: compress the evicted rows into cmem). Compressive returns the attention-
 * reconstruction loss (mean over layers of the mean squared error) and, when training, adds
 * recon_weight times its gradient into the compressor gradients only; otherwise returns NaN.
 * Memory none: does nothing. */
double lm_memory_update(lm_t *m, int training);
/* Empty the active memory. */
void lm_memory_reset(lm_t *m);
/* Select the training (0) or evaluation (1) memory as active. */
void lm_memory_select(lm_t *m, int eval);

void lm_zero_grad(lm_t *m);
/* Clip, then one AdamW step at lr; returns the gradient norm before clipping. */
double lm_update(lm_t *m, float lr);
void lm_snapshot_best(lm_t *m);
void lm_restore_best(lm_t *m);

/* Fill stream b of the segment from the part of src whose predictions are the positions
 * [part_start, part_start + part_len) (part_start + part_len < the length of src): position t < n
 * reads i = part_start + (offset + t) mod part_len, input id src[i] + 1, target src[i + 1];
 * positions t >= n are padding (id 0, target -1). */
void lm_load_stream(lm_t *m, int b, const uint8_t *src, size_t part_start, size_t part_len, size_t offset, int n);

/* Bits per byte of the first n_bytes bytes of stream s (0 or more than the stream: all of it):
 * the bytes are cut into B contiguous parts (consecutive parts overlap by one byte, so every byte
 * but the first is predicted exactly once), scored in consecutive segments with the evaluation
 * memory carried through (reset first). bpb = sum of CE (nats) / predicted bytes / ln 2.
 * *n_pred (if non-NULL) receives the number of predicted bytes. Dropout off, grads untouched. */
double lm_eval_bpb(lm_t *m, const uint8_t *s, size_t len, long long n_bytes, long long *n_pred);

/* lmtrain.c: the whole TASK_LM run (data, model, training with memory carried between steps,
 * bpb on val every eval_every steps, test with the best (lowest) val bpb parameters). train_run()
 * sends TASK_LM runs here; same contract as train_run. */
int lm_train_run(const run_cfg *c, const train_opts *o, run_report *rep);

#endif
