/* runner.h - run a plan: each run in a forked child, results appended to runs.csv atomically. */
#ifndef LRA_RUNNER_H
#define LRA_RUNNER_H

#include "config.h"

typedef struct {
    const char *out_dir;  /* results directory (default results/<plan name>) */
    int threads;          /* OpenMP threads per run (0: the machine's default) */
    int resume;           /* skip run ids already in runs.csv */
    int shard_i, shard_n; /* take runs with index % shard_n == shard_i (shard_n 0/1: all) */
    int dry_run;          /* print the plan only */
    long long max_mem;    /* bytes, 0 = unlimited: runs whose plan exceeds it get status oom */
    int force;            /* start over: move an existing results directory aside */
    int no_plot;          /* skip charts and summary at the end */
} runner_opts;

/* Execute the plan. Returns the process exit status: 0 all ok, 1 some run not ok, 2 usage
 * problem (e.g. results exist without --resume/--force), 130 interrupted (SIGINT/SIGTERM). */
int runner_run(const run_plan *plan, const runner_opts *o);

/* The attention_params column: non-default mechanism parameters as "k=v;k=v" into buf. */
void runner_attn_params(const run_cfg *c, char *buf, size_t n);

#endif
