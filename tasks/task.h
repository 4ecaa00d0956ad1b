/* task.h - the task interface. One constant task_ops table per task, found by its YAML name
 * through the registry (tasks/registry.c).
 *
 * A task builds (generated, deterministic in env->seed) or loads (files in the original
 * benchmark's formats) its three splits. Token id 0 is padding everywhere; byte-level tasks map
 * byte b to id b+1. Tasks know nothing of models: they return ids and labels, the trainer batches.
 */
#ifndef LRA_TASK_H
#define LRA_TASK_H

#include <stddef.h>
#include <stdint.h>

#include "../lra/schema.h"

typedef enum {
    TASK_CLASSIFY, /* one sequence -> class */
    TASK_MATCH,    /* two sequences -> class (retrieval, dual encoder) */
    TASK_LM,       /* one byte stream, next-byte prediction */
} task_kind;

enum { SPLIT_TRAIN = 0, SPLIT_VAL = 1, SPLIT_TEST = 2, N_SPLITS = 3 };
extern const char *const split_names[N_SPLITS]; /* "train", "val", "test" */

typedef struct {
    int n;            /* examples (TASK_CLASSIFY, TASK_MATCH) */
    int seq_len;      /* tokens per input sequence, right-padded with 0 */
    int n_inputs;     /* 1, or 2 for TASK_MATCH */
    int32_t *tokens;  /* (n, n_inputs, seq_len), malloc'd */
    int32_t *labels;  /* (n,), class ids in [0, n_classes), malloc'd */
    int n_classes;    /* classes as built, when the count depends on the data (set by build() in
                       * every split); 0: ops->n_classes(params) gives it. See task_n_classes. */
    uint8_t *stream;  /* TASK_LM: the split's bytes, malloc'd */
    size_t stream_len;
} task_split;

typedef struct {
    uint64_t seed;          /* data seed (task.data_seed): generation, sampling and split carving */
    int seq_len;            /* task.seq_len: tokens per sequence the model sees (excluding CLS) */
    const char *base_dir;   /* directory of the config file, for relative paths */
    const char *data_dir;   /* task.data_dir (default "data") */
} task_env;

typedef struct task_ops {
    const char *name;    /* YAML name, e.g. "listops" */
    const char *summary; /* one line for `lra list` */
    const char *source;  /* paper / dataset reference */
    task_kind kind;
    const param_def *schema; /* task-specific keys (under `task:` next to name/seq_len/...) */
    int n_schema;
    size_t params_size;      /* <= TASK_PARAMS_MAX */
    int (*vocab_size)(const void *params);  /* including padding id 0 */
    /* Classes known from the params alone, or 0 when only build() can tell (it then sets
     * task_split.n_classes). Use task_n_classes() after a build. */
    int (*n_classes)(const void *params);
    /* Check params (e.g. min_length < max_length); -1 with a message naming the key. NULL: ok. */
    int (*validate)(const void *params, const task_env *env, char *err, size_t errlen);
    /* Build all three splits into out (zero-initialised by the caller). On error return -1 with
     * "FILE:LINE: reason" (for files) or "task.KEY: reason" in err, and free what was built. */
    int (*build)(const void *params, const task_env *env, task_split out[N_SPLITS], char *err, size_t errlen);
} task_ops;

#define TASK_PARAMS_MAX 2048

extern const task_ops *const task_registry[];
extern const int task_registry_count;
const task_ops *task_find(const char *name); /* NULL when unknown */

void task_split_free(task_split *s);

/* Number of classes of built splits: splits[SPLIT_TRAIN].n_classes when build() set it, else
 * ops->n_classes(params). */
int task_n_classes(const task_ops *ops, const void *params, const task_split splits[N_SPLITS]);

/* Share of the most frequent label in s (the majority-class accuracy), in [0, 1]. */
double task_majority_rate(const task_split *s, int n_classes);

#endif
