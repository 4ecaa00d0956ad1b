/* train.h - one training run: data, model, optimisation, evaluation, test with the best
 * validation parameters. Runs inside the runner's child process (or directly in tests/bench). */
#ifndef LRA_TRAIN_H
#define LRA_TRAIN_H

#include <stdio.h>

#include "config.h"

/* Statuses of a run (runs.csv `status`). */
#define STATUS_OK "ok"
#define STATUS_FAILED "failed"     /* bad data, invalid combination found at run time */
#define STATUS_TIMEOUT "timeout"   /* train.max_minutes exceeded */
#define STATUS_DIVERGED "diverged" /* non-finite loss */
#define STATUS_OOM "oom"           /* planned memory over --max-mem */
#define STATUS_CRASHED "crashed"   /* killed by a signal */

typedef struct {
    char status[16];
    char reason[256];
    int steps_done;
    double best_val;     /* NaN when no evaluation happened */
    int best_step;
    double test;         /* NaN when not evaluated */
    double majority;     /* majority-class rate of the test split */
    double train_loss;   /* mean training loss over the last evaluation window */
    double step_ms;      /* median step time */
    double tokens_per_s;
    double flops_per_s;
    long long params;
    long long mem_planned;
    long long act_bytes;
    double wall_s;
    char metric[16];     /* "accuracy" */
} run_report;

typedef struct {
    const char *curves_path; /* curves.csv to append evaluation rows to (NULL: none) */
    const char *ckpt_path;   /* this run's checkpoint file (NULL: none): resumed from when it exists,
                                written every train.checkpoint_every steps and at a timeout */
    FILE *log;               /* the run's log file (NULL: none) */
    int verbose;             /* also print step/eval lines on stderr */
    int tty;                 /* draw a progress bar on stderr */
    long long max_mem;       /* --max-mem in bytes, 0 = unlimited */
    const char *fault;       /* test-only fault injection: "crash", "nan", "hang" (at step index 1),
                                "kill@N" (SIGKILL before step index N) (NULL: none) */
    const char *run_label;   /* shown in the progress bar, e.g. "3/8 softmax n=256 s=1" */
} train_opts;

/* Train and evaluate run config c. Always fills rep (status and reason say what happened).
 * Returns 0 when status is ok. Never exits the process except through a crash. */
int train_run(const run_cfg *c, const train_opts *o, run_report *rep);

/* Log a line to o->log (flushed) and, when o->verbose, to stderr (clearing a progress line on a
 * tty). Shared by the classification and language-modelling loops. */
void train_log(const train_opts *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Append one evaluation point to o->curves_path (columns CURVES_COLUMNS of results.h); a write error
 * is logged as a warning, never fatal. */
void train_append_curve(const train_opts *o, const run_cfg *c, int step, double loss, double val, float lr,
                        double elapsed);

#endif
