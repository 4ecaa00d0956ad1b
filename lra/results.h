/* results.h - the result schemas (runs.csv, curves.csv) and the row a finished run reports.
 * The column lists below are the single definition: the runner writes them, `lra plot` reads
 * them, the README documents them. */
#ifndef LRA_RESULTS_H
#define LRA_RESULTS_H

#include <stddef.h>

/* runs.csv: one row per run (see README "Output"). */
#define RUNS_COLUMNS(X)                                                                       \
    X(run_id)          /* 16 hex digits, hash of the resolved config */                       \
    X(name)            /* experiment name */                                                  \
    X(config)          /* path of the YAML file */                                            \
    X(task)                                                                                   \
    X(attention)       /* mechanism YAML name */                                              \
    X(attention_params) /* non-default mechanism parameters, "k=v;k=v" */                     \
    X(label)           /* attention + params, e.g. "softmax(impl=materialized)" */            \
    X(seq_len)                                                                                \
    X(d_model) X(n_heads) X(n_layers) X(d_ff) X(batch_size)                                   \
    X(steps)           /* configured steps */                                                 \
    X(steps_done)                                                                             \
    X(seed) X(threads)                                                                        \
    X(status)          /* ok | failed | timeout | diverged | oom | crashed */                 \
    X(reason)          /* empty when ok */                                                    \
    X(metric)          /* accuracy | bpb */                                                   \
    X(best_val)        /* best validation metric */                                           \
    X(best_step)       /* step of the best validation */                                      \
    X(test)            /* test metric with the parameters of best_step */                     \
    X(majority)        /* majority-class rate of the test split (classification) */           \
    X(train_loss)      /* mean training loss over the last log window (nats) */               \
    X(step_ms)         /* median training step time, ms */                                    \
    X(tokens_per_s)    /* training tokens per second (batch*seq_len/step time) */             \
    X(flops_per_s)     /* model FLOP/s of the training step (3 x forward FLOPs / step time) */\
    X(params)          /* learned parameter count */                                          \
    X(mem_planned)     /* bytes planned by the arenas (params+grads+optim+acts+scratch) */    \
    X(act_bytes)       /* activation arena high-water bytes */                                \
    X(peak_rss)        /* peak resident set of the run's process, bytes (wait4) */            \
    X(wall_s)          /* wall-clock seconds of the run */                                    \
    X(version)

/* curves.csv: one row per evaluation. */
#define CURVES_COLUMNS(X)                                                                     \
    X(run_id) X(label) X(task) X(seq_len) X(seed)                                             \
    X(step)            /* training steps done */                                              \
    X(train_loss)      /* mean training loss since the previous evaluation */                 \
    X(val)             /* validation metric */                                                \
    X(lr) X(elapsed_s)

#define RESULTS_ENUM(name) COL_RUNS_##name,
enum { RUNS_COLUMNS(RESULTS_ENUM) RUNS_N_COLUMNS };
#undef RESULTS_ENUM
#define RESULTS_ENUM(name) COL_CURVES_##name,
enum { CURVES_COLUMNS(RESULTS_ENUM) CURVES_N_COLUMNS };
#undef RESULTS_ENUM

extern const char *const runs_columns[RUNS_N_COLUMNS];
extern const char *const curves_columns[CURVES_N_COLUMNS];

#endif
