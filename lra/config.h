/* config.h - experiment configs: YAML (libyaml) -> validated, typed run configs of a sweep.
 *
 * File layout (every key declared in a schema table; see `lra list` and the README):
 *
 *   name: quickstart                  # results go to results/<name>/ unless --out
 *   task:                             # common keys (task_common) + the task's own schema keys
 *     name: listops
 *     seq_len: [128, 256]             # any list-valued setting is a sweep axis
 *     max_depth: 4
 *   model: {d_model: 64, n_heads: 4, n_layers: 2, d_ff: 128}
 *   attention:                        # a list of mechanisms (or one mapping / one name string)
 *     - name: softmax
 *       impl: tiled
 *     - {name: softmax, impl: materialized}
 *   train:
 *     seeds: [0, 1]                   # `seeds` (a list) is the sweep form of `seed`
 *     steps: 500
 *
 * A list for a PT_INT_LIST key (e.g. `dilation: [1, 2]`) is a value; a list of lists is an axis.
 * The cartesian product of the axes, in the order attention entry, attention axes, task axes,
 * model axes, train axes, seeds innermost, gives the runs.
 */
#ifndef LRA_CONFIG_H
#define LRA_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#include "../attention/attention.h"
#include "../tasks/task.h"
#include "schema.h"

enum { POS_SINUSOIDAL = 0, POS_LEARNED = 1, POS_NONE = 2 };
enum { POOL_CLS = 0, POOL_MEAN = 1 };
enum { INTERACT_NLI = 0, INTERACT_CONCAT = 1 };
enum { SCHED_COSINE = 0, SCHED_LINEAR = 1, SCHED_CONSTANT = 2, SCHED_RSQRT = 3 };
enum { MEMORY_NONE = 0, MEMORY_XL = 1, MEMORY_COMPRESSIVE = 2 };

typedef struct {
    int d_model;        /* residual width D */
    int n_heads;        /* H; Dh = d_model / n_heads */
    int n_layers;
    int d_ff;           /* FFN hidden width */
    int mlp_dim;        /* classifier head hidden width */
    float dropout;      /* residual/FFN/embedding dropout */
    float attn_dropout; /* dropout on attention probabilities */
    int pos;            /* POS_*: "sinusoidal|learned|none" */
    int pooling;        /* POOL_*: "cls|mean" */
    int causal;         /* causal attention in the encoder (LM tasks force it) */
    float emb_init_std; /* token embedding init std (LRA: 1.0) */
    int interaction;    /* INTERACT_*: "nli|concat", the retrieval head's input */
    /* Language modelling (TASK_LM; lra/lm.h). The segment length is task.seq_len. */
    int memory;         /* MEMORY_*: "none|xl|compressive" segment-level recurrence */
    int mem_len;        /* xl/compressive: memory positions kept per layer (Transformer-XL M) */
    int cmem_len;       /* compressive: compressed memory slots per layer */
    int compression_rate; /* compressive: c, evicted memories per compressed slot */
    int compression;    /* "max|mean|conv|dilated_conv": the index is lra/compress.h's compress_kind */
    float recon_weight; /* compressive: weight of the attention-reconstruction loss */
    int clamp_len;      /* xl/compressive: relative distances clamped to this (0 = no clamp) */
    int same_length;    /* xl/compressive: every query sees the same number of keys */
} model_cfg;

typedef struct {
    int seed;           /* model init, dropout and batch order; `seeds: [..]` sweeps it */
    int batch_size;
    int steps;
    float lr;           /* peak learning rate */
    int warmup;         /* linear warmup steps */
    int schedule;       /* SCHED_*: "cosine|linear|constant|rsqrt" */
    float min_lr_ratio; /* final lr = lr * min_lr_ratio (cosine, linear) */
    float weight_decay; /* AdamW decoupled decay (not on biases, LayerNorm, embeddings' positions) */
    float beta1, beta2, eps;
    float grad_clip;    /* global L2 norm clip; 0 = off */
    int eval_every;     /* steps between validation evaluations */
    int eval_batches;   /* batches per validation; 0 = the whole split */
    float max_minutes;  /* wall-clock limit of the run; 0 = none -> status timeout */
    int log_every;      /* steps between log lines */
    int eval_segment_len; /* TASK_LM: segment length of val/test scoring; 0 = task.seq_len */
    int eval_mem_len;   /* TASK_LM xl/compressive: mem_len of val/test scoring; 0 = model.mem_len */
    int checkpoint_every; /* steps between checkpoints (DIR/checkpoints/<run_id>.ckpt); 0 = none */
    int save_model;     /* keep the final checkpoint after a successful run */
} train_cfg;

typedef struct {
    char name[32];      /* task YAML name */
    int seq_len;        /* tokens per sequence (excluding CLS) */
    int data_seed;      /* data generation / sampling seed, shared by all runs by default */
    char data_dir[256]; /* where fetched/real data lives (relative to the working directory) */
} task_common;

typedef union {
    max_align_t align;
    unsigned char bytes[TASK_PARAMS_MAX];
} task_params_buf;
typedef union {
    max_align_t align;
    unsigned char bytes[ATTN_PARAMS_MAX];
} attn_params_buf;

typedef struct {
    char exp_name[64];        /* top-level `name:` */
    char config_path[512];    /* the YAML file this run came from */
    char base_dir[512];       /* its directory */
    task_common task;
    const task_ops *task_ops;
    task_params_buf task_params;
    const attn_ops *attn_ops;
    attn_params_buf attn_params;
    char attn_label[160];     /* "softmax" or "softmax(impl=materialized)": non-default params */
    model_cfg model;
    train_cfg train;
    char run_id[17];          /* 16 hex digits: FNV-1a of the resolved config (config_dump_yaml) */
} run_cfg;

typedef struct {
    char name[64];            /* experiment name (top-level `name:`, else the file's base name) */
    int n_runs;
    run_cfg *runs;            /* malloc'd */
} run_plan;

/* Schemas of the fixed sections (for `lra list` and docs). */
extern const param_def model_schema[];
extern const int model_schema_n;
extern const param_def train_schema[];
extern const int train_schema_n;
extern const param_def task_common_schema[];
extern const int task_common_schema_n;

/* Parse path, apply --set overrides ("section.key=value", value in YAML flow syntax, e.g.
 * "train.steps=100", "task.seq_len=[64,128]", "attention.impl=materialized" which applies to every
 * attention entry that has the key), validate, expand the sweep and append the runs to plan
 * (several files may be loaded into one plan; the plan's name is the first file's).
 * Returns 0, or -1 with "FILE:LINE:COL: reason (did you mean 'x'?)" in err; for overrides the
 * location is "--set KEY". Unknown keys, wrong types, out-of-range values, unknown task or
 * mechanism names and mechanism/shape incompatibilities (attn validate) are all errors. */
int config_load(run_plan *plan, const char *path, const char *const *sets, int n_sets, char *err, size_t errlen);
void config_plan_free(run_plan *plan);

/* Write the fully resolved config of one run as YAML (every key, defaults included). The run id
 * is the hash of exactly this text with the run id line omitted, written with train.checkpoint_every
 * and train.save_model at their defaults (they do not change results). */
void config_dump_yaml(const run_cfg *c, FILE *f);

/* Compute c->run_id and c->attn_label from the rest of c. */
void config_finalize(run_cfg *c);

/* The attention shape implied by a run config for layer l (N = seq_len (+1 with CLS), etc.). */
attn_shape config_attn_shape(const run_cfg *c, int batch, int layer);

#endif
