/* bench.h - `lra bench`: training-step and inference throughput, model FLOP/s, MFU against the
 * measured sgemm peak, and memory (planned arenas, peak RSS) for mechanisms x sequence lengths;
 * the longest sequence each mechanism trains within a memory budget (from the arena plan).
 *
 * Output files (in the results directory; `lra plot DIR` rebuilds the reports from them alone):
 *   bench.csv  - one row per (mechanism, seq_len) point, BENCH_COLUMNS below;
 *   maxlen.csv - one row per mechanism, MAXLEN_COLUMNS below;
 *   table2.md, summary.md, bench_time.*, bench_memory.* - written by plot_bench (plot.h).
 */
#ifndef LRA_BENCH_H
#define LRA_BENCH_H

/* bench.csv columns. Times are milliseconds of one step (training: forward + backward + AdamW on
 * batch_size sequences; inference: one forward without dropout), over `steps` timed steps after
 * `warmup` untimed ones. Empty cells when the point did not run (status not ok). */
#define BENCH_COLUMNS(X)                                                                      \
    X(name)             /* study name (config `name:`, else the file's base name; flags: bench) */ \
    X(label)            /* mechanism + non-default parameters, e.g. softmax(impl=materialized) */ \
    X(attention)        /* mechanism YAML name */                                             \
    X(seq_len)          /* tokens per sequence (the CLS token is one more position) */        \
    X(batch_size) X(d_model) X(n_heads) X(n_layers) X(d_ff)                                   \
    X(threads)          /* OpenMP threads of the point's process */                          \
    X(status)           /* ok | oom (plan over max_mem) | failed | crashed | timeout */       \
    X(reason)           /* empty when ok */                                                   \
    X(steps) X(warmup)  /* timed training steps done; untimed warm-up steps before them (fewer \
                         * than configured when bench.time_budget ran out) */                 \
    X(infer_steps)      /* timed inference forwards done */                                   \
    X(train_ms)         /* median training step */                                            \
    X(train_ms_min) X(train_ms_p25) X(train_ms_p75) X(train_ms_max)                           \
    X(train_steps_per_s) /* 1000 / train_ms */                                                \
    X(tokens_per_s)     /* batch_size * seq_len / median training step */                    \
    X(infer_ms)         /* median inference forward (empty when inference is off) */          \
    X(infer_ms_min) X(infer_ms_max)                                                           \
    X(infer_steps_per_s) X(infer_tokens_per_s)                                                \
    X(fwd_flops)        /* model forward FLOPs per step (projections, FFN, attention, head) */ \
    X(flops_per_s)      /* training: 3 x fwd_flops / train_ms */                              \
    X(sgemm_flops_per_s) /* best 1024^3 sgemm FLOP/s measured in the point's process */       \
    X(mfu)              /* flops_per_s / sgemm_flops_per_s */                                 \
    X(infer_mfu)        /* fwd_flops / infer_ms / sgemm_flops_per_s */                        \
    X(params)           /* learned parameters */                                              \
    X(mem_planned)      /* bytes of all arenas (params, grads, optimizer, activations, scratch) */ \
    X(act_bytes)        /* activation arena (its high-water mark is its plan) */              \
    X(scratch_bytes)    /* scratch arena high-water */                                        \
    X(peak_rss)         /* peak resident set of the point's process, bytes (wait4) */          \
    X(max_mem)          /* the budget in bytes, 0 = none */                                   \
    X(wall_s)           /* seconds of the point's process */                                  \
    X(cpu_s)            /* its user + system CPU seconds (wait4): cpu_s / threads well below   \
                         * wall_s means the machine was busy and the timings are inflated */   \
    X(version)

/* maxlen.csv columns: the longest seq_len whose planned memory fits max_mem, probed on the
 * arena plan (model_build's measuring pass) without running: the listed lengths, then doubling
 * beyond the longest until the plan exceeds max_mem (or probe_limit), then bisection between the
 * last fitting and the first failing length. */
#define MAXLEN_COLUMNS(X)                                                                     \
    X(label) X(attention) X(batch_size) X(threads)                                            \
    X(max_mem)          /* bytes */                                                           \
    X(max_mem_source)   /* "max_mem" (configured) or "physical memory" */                     \
    X(longest_n)        /* longest fitting length of the doubling sequence; 0: none fits */  \
    X(longest_planned)  /* planned bytes at longest_n */                                     \
    X(next_n)           /* the first length that does not fit (empty: probe_limit reached) */ \
    X(next_planned)                                                                           \
    X(longest_n_fine)   /* bisection between longest_n and next_n, in steps of 64 tokens */  \
    X(note)

#define BENCH_ENUM(name) BENCH_COL_##name,
enum { BENCH_COLUMNS(BENCH_ENUM) BENCH_N_COLUMNS };
#undef BENCH_ENUM
#define BENCH_ENUM(name) MAXLEN_COL_##name,
enum { MAXLEN_COLUMNS(BENCH_ENUM) MAXLEN_N_COLUMNS };
#undef BENCH_ENUM

extern const char *const bench_columns[BENCH_N_COLUMNS];
extern const char *const maxlen_columns[MAXLEN_N_COLUMNS];

/* argv[0] is "bench". Returns the exit status: 0 when every point is ok or oom (an expected
 * outcome of a memory budget), 1 when some point failed, crashed or timed out, 2 for usage or
 * config errors (nothing run). */
int cmd_bench(int argc, char **argv);

/* Best sgemm FLOP/s of a square n x n x n product over reps repetitions on the current threads. */
double bench_sgemm_peak(int n, int reps);

#endif
