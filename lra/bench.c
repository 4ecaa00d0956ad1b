/* bench.c - the efficiency benchmark (DESIGN.md "Performance"; LRA Table 2 / Figure 3).
 *
 * Each (mechanism, seq_len) point runs in a forked child so its peak RSS (wait4) is its own and a
 * crash, an out-of-memory kill or a hang (bench.max_seconds) of one point is a row with a status,
 * never the end of the study. The child builds the model exactly as `lra run` would (same arenas,
 * same kernels) on random byte tokens (vocabulary 257, 2 classes: LRA's byte-level Text task,
 * which LRA's Table 2 measured), runs warm-up steps, then times training steps (forward +
 * backward + AdamW) and inference forwards and reports median, quartiles and extremes.
 *
 * MFU = model FLOP/s / sgemm FLOP/s, where model FLOP/s = 3 x forward FLOPs per step / step time
 * (forward FLOPs count the projections, FFN, head and the mechanism's own declared FLOPs;
 * backward = 2 x forward, the usual convention, not counting recomputation), and the sgemm peak
 * is measured on the same threads in the same process.
 *
 * Two ways in: flags (`lra bench -a softmax,linear -n 1024,2048`), or a YAML file whose
 * `attention:` and `model:` sections are those of a run config (parsed by config.c, the same
 * checks and errors) plus a `bench:` block (bench_schema below) for the lengths, batch, steps and
 * budget. After the points, the longest trainable length per mechanism is probed on the arena
 * plan alone, then plot_bench writes table2.md, summary.md and the charts from the CSV files.
 */
#include "bench.h"

#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml.h>

#include "common.h"
#include "config.h"
#include "csv.h"
#include "model.h"
#include "plot.h"
#include "rng.h"

#define X_NAME(name) #name,
const char *const bench_columns[BENCH_N_COLUMNS] = {BENCH_COLUMNS(X_NAME)};
const char *const maxlen_columns[MAXLEN_N_COLUMNS] = {MAXLEN_COLUMNS(X_NAME)};
#undef X_NAME

/* Bench inputs: random bytes as in LRA's byte-level Text task. */
#define BENCH_VOCAB 257
#define BENCH_CLASSES 2
#define BENCH_MAX_MECH 64

double bench_sgemm_peak(int n, int reps) {
    float *a = xmalloc(sizeof(float) * (size_t)n * n), *b = xmalloc(sizeof(float) * (size_t)n * n),
          *c = xmalloc(sizeof(float) * (size_t)n * n);
    rng_t r = rng_make(1, RNG_TEST);
    for (size_t i = 0; i < (size_t)n * n; i++) a[i] = rng_float(&r) - 0.5f, b[i] = rng_float(&r) - 0.5f;
    double best = 0;
    for (int k = 0; k < reps + 1; k++) {
        double t = lra_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
        t = lra_now() - t;
        if (k > 0 && 2.0 * n * n * (double)n / t > best) best = 2.0 * n * n * (double)n / t;
    }
    free(a);
    free(b);
    free(c);
    return best;
}

/* ---------------------------------------------------------------------------------------- */
/* Settings: the `bench:` block of a config file (or the flags)                               */

typedef struct {
    lra_ilist seq_len;  /* sequence lengths of the study */
    int batch_size;
    int steps;          /* timed steps per point (training, and inference when on) */
    int warmup;         /* untimed steps before them */
    int threads;        /* 0: all cores */
    char max_mem[32];   /* "" = no budget; a size like 4G */
    int inference;      /* also time inference forwards */
    int probe;          /* probe the longest trainable length per mechanism */
    int probe_limit;    /* do not probe beyond this length */
    float max_seconds;  /* per point wall-clock limit (status timeout); 0 = none */
    float time_budget;  /* seconds of timed steps per point and pass, then stop early; 0 = none */
} bench_cfg;

static const param_def bench_schema[] = {
    P_ILIST(bench_cfg, seq_len, "[1024, 2048, 4096]", 1, 1048576,
            "sequence lengths of the study (tokens, without the CLS token)"),
    P_INT(bench_cfg, batch_size, "4", 1, 65536, "sequences per step"),
    P_INT(bench_cfg, steps, "5", 1, 100000, "timed steps per point; the report gives their median, quartiles and extremes"),
    P_INT(bench_cfg, warmup, "2", 0, 100000, "untimed steps before the timed ones"),
    P_INT(bench_cfg, threads, "0", 0, 1024, "OpenMP threads per point; 0 = all cores"),
    P_STRING(bench_cfg, max_mem, "",
             "memory budget like 4G: points whose planned memory exceeds it are not run (status oom), and the "
             "longest trainable length is probed against it (default: none; the probe then uses physical memory)"),
    P_BOOL(bench_cfg, inference, "true", "also time inference forwards (no dropout, no backward)"),
    P_BOOL(bench_cfg, probe, "true", "probe the longest length each mechanism trains within max_mem, on the arena plan"),
    P_INT(bench_cfg, probe_limit, "1048576", 1, 1048576, "do not probe lengths beyond this"),
    P_FLOAT(bench_cfg, max_seconds, "0", 0, 1e7, "wall-clock limit of one point in seconds (status timeout); 0 = none"),
    P_FLOAT(bench_cfg, time_budget, "0", 0, 1e7,
            "seconds of timed steps per point (training, then inference): stop before `steps` once used, after at "
            "least one; warm-up stops after half of it. 0 = always `steps`"),
};
static const int bench_schema_n = (int)LRA_ARRAY_LEN(bench_schema);

typedef struct {
    bench_cfg b;
    long long max_mem;  /* parsed b.max_mem, 0 = none */
    int threads;        /* resolved */
    char name[64];
    int d_model, n_heads, n_layers, d_ff; /* flags mode only */
} bench_opts;

/* ---------------------------------------------------------------------------------------- */
/* One point                                                                                  */

enum { PT_OK, PT_OOM, PT_FAILED };

typedef struct {
    int status; /* PT_* (crashed / timeout are decided by the parent) */
    char reason[256];
    double train[5]; /* ms: median, min, p25, p75, max */
    double infer[3]; /* ms: median, min, max */
    int have_infer;
    int steps_done, warmup_done, infer_steps_done; /* after time_budget */
    double fwd_flops, sgemm_peak;
    long long planned, act_bytes, scratch_bytes, params;
} bench_point;

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Quantile p of sorted v[0..n) with linear interpolation between order statistics. */
static double quantile(const double *v, int n, double p) {
    double pos = p * (n - 1);
    int lo = (int)floor(pos), hi = lo + 1 < n ? lo + 1 : lo;
    return v[lo] + (v[hi] - v[lo]) * (pos - lo);
}

/* One training step (forward + backward + AdamW) or inference forward; returns milliseconds. */
static double timed_step(model_t *m, int training) {
    double t0 = lra_now();
    if (training) {
        model_forward(m, 1, NULL, NULL);
        model_zero_grad(m);
        model_backward(m);
        model_update(m, 1e-4f);
    } else
        model_forward(m, 0, NULL, NULL);
    return 1e3 * (lra_now() - t0);
}

static void bench_child(const run_cfg *c, const bench_opts *o, bench_point *pt, const char *fault) {
    memset(pt, 0, sizeof *pt);
    char err[256];
    int B = o->b.batch_size;
    model_t *m = xcalloc(1, sizeof *m);
    if (model_build(m, c, B, BENCH_VOCAB, BENCH_CLASSES, TASK_CLASSIFY, o->max_mem, err, sizeof err)) {
        snprintf(pt->reason, sizeof pt->reason, "%s", err);
        pt->planned = (long long)model_planned_total(m);
        pt->status = pt->planned > 0 && o->max_mem > 0 && pt->planned > o->max_mem ? PT_OOM : PT_FAILED;
        free(m);
        return;
    }
    if (fault && !strcmp(fault, "crash")) raise(SIGSEGV);
    if (fault && !strcmp(fault, "hang"))
        for (;;) pause();
    pt->planned = (long long)model_planned_total(m);
    pt->act_bytes = (long long)model_planned_bytes(m, MEM_ACTS);
    pt->scratch_bytes = (long long)model_planned_bytes(m, MEM_SCRATCH);
    pt->params = (long long)m->n_params_real;
    pt->fwd_flops = m->fwd_flops;
    pt->sgemm_peak = bench_sgemm_peak(1024, 3);
    rng_t r = rng_make(7, RNG_TEST);
    for (int e = 0; e < m->Be; e++)
        for (int n = 0; n < m->N; n++) {
            m->ids[(size_t)e * m->N + n] = (m->use_cls && n == 0) ? m->V - 1 : rng_int(&r, 1, BENCH_VOCAB - 1);
            m->mask[(size_t)e * m->N + n] = 1;
        }
    for (int b = 0; b < m->B; b++) m->targets[b] = rng_int(&r, 0, BENCH_CLASSES - 1);
    int W = o->b.warmup, S = o->b.steps;
    double *t = xmalloc(sizeof(double) * (size_t)(W + S));
    for (int pass = 0; pass < 1 + (o->b.inference != 0); pass++) {
        /* pass 0: training steps; pass 1: inference forwards. Warm-up stops early once it used
         * half of time_budget, the timed steps once they used all of it (at least one each). */
        double budget = o->b.time_budget, used = 0;
        int w = 0, n = 0;
        while (w < W) {
            used += 1e-3 * timed_step(m, pass == 0);
            w++;
            if (budget > 0 && used >= 0.5 * budget) break;
        }
        used = 0;
        while (n < S) {
            t[n] = timed_step(m, pass == 0);
            used += 1e-3 * t[n++];
            if (budget > 0 && used >= budget) break;
        }
        qsort(t, (size_t)n, sizeof(double), cmp_d);
        if (pass == 0) {
            pt->train[0] = quantile(t, n, 0.5);
            pt->train[1] = t[0];
            pt->train[2] = quantile(t, n, 0.25);
            pt->train[3] = quantile(t, n, 0.75);
            pt->train[4] = t[n - 1];
            pt->steps_done = n;
            pt->warmup_done = w;
        } else {
            pt->infer[0] = quantile(t, n, 0.5);
            pt->infer[1] = t[0];
            pt->infer[2] = t[n - 1];
            pt->have_infer = 1;
            pt->infer_steps_done = n;
        }
    }
    pt->status = PT_OK;
    free(t);
    model_free(m);
    free(m);
}

/* Run one point in a child. *status_out: "ok", "oom", "failed", "crashed", "timeout". */
static int run_point(const run_cfg *c, const bench_opts *o, const char *fault, bench_point *pt, long long *rss,
                     double *wall, double *cpu, const char **status_out) {
    int fds[2];
    if (pipe(fds)) return -1;
    fflush(NULL);
    double t0 = lra_now();
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    if (pid == 0) {
        close(fds[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (o->threads > 0) lra_set_threads(o->threads);
        bench_point p;
        bench_child(c, o, &p, fault);
        ssize_t w = write(fds[1], &p, sizeof p);
        _exit(w == (ssize_t)sizeof p ? 0 : 3);
    }
    close(fds[1]);
    size_t got = 0;
    int timed_out = 0;
    for (;;) {
        int wait_ms = -1;
        if (o->b.max_seconds > 0) {
            double left = o->b.max_seconds - (lra_now() - t0);
            if (left <= 0) {
                timed_out = 1;
                kill(pid, SIGKILL);
                break;
            }
            wait_ms = (int)ceil(left * 1e3);
        }
        struct pollfd pfd = {fds[0], POLLIN, 0};
        int pr = poll(&pfd, 1, wait_ms);
        if (pr < 0 && errno == EINTR) continue;
        if (pr == 0) continue; /* the deadline check above decides */
        ssize_t n = read(fds[0], (char *)pt + got, sizeof *pt - got);
        if (n > 0) {
            got += (size_t)n;
            if (got == sizeof *pt) break;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        break;
    }
    close(fds[0]);
    int st = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    while (wait4(pid, &st, 0, &ru) < 0 && errno == EINTR) {
    }
    *wall = lra_now() - t0;
    *rss = (long long)ru.ru_maxrss * 1024LL;
    *cpu = (double)ru.ru_utime.tv_sec + 1e-6 * (double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_sec +
           1e-6 * (double)ru.ru_stime.tv_usec;
    if (timed_out) {
        memset(pt, 0, sizeof *pt);
        snprintf(pt->reason, sizeof pt->reason, "no result within bench.max_seconds = %g s; killed",
                 (double)o->b.max_seconds);
        *status_out = "timeout";
    } else if (got != sizeof *pt) {
        memset(pt, 0, sizeof *pt);
        if (WIFSIGNALED(st))
            snprintf(pt->reason, sizeof pt->reason, "killed by signal %d (%s)%s", WTERMSIG(st), strsignal(WTERMSIG(st)),
                     WTERMSIG(st) == SIGKILL ? "; out of memory?" : "");
        else snprintf(pt->reason, sizeof pt->reason, "exited with status %d without a report", WEXITSTATUS(st));
        *status_out = "crashed";
    } else {
        *status_out = pt->status == PT_OK ? "ok" : pt->status == PT_OOM ? "oom" : "failed";
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Longest trainable length                                                                   */

/* Planned bytes of cfg at seq_len N and batch B (measuring pass only: nothing is allocated).
 * Returns 0 with a reason in why when the mechanism rejects the shape. */
static long long plan_bytes(const run_cfg *base, int N, int B, char *why, size_t n) {
    run_cfg c = *base;
    c.task.seq_len = N;
    c.train.batch_size = B;
    model_t *m = xcalloc(1, sizeof *m);
    char err[256];
    long long total = 0;
    /* max_mem 1: model_build stops right after planning, before committing any arena */
    if (model_build(m, &c, B, BENCH_VOCAB, BENCH_CLASSES, TASK_CLASSIFY, 1, err, sizeof err) == 0) {
        total = (long long)model_planned_total(m); /* a 1-byte model: impossible, but harmless */
        model_free(m);
    } else {
        total = (long long)model_planned_total(m);
        if (total <= 0) snprintf(why, n, "%s", err);
    }
    free(m);
    return total;
}

typedef struct {
    int longest, next, fine;
    long long longest_planned, next_planned;
    char note[256];
} probe_result;

static void probe_longest(const run_cfg *base, const bench_opts *o, long long limit, probe_result *pr) {
    memset(pr, 0, sizeof *pr);
    int B = o->b.batch_size, lim = o->b.probe_limit;
    int cand[LRA_ILIST_MAX + 32], nc = 0;
    for (int i = 0; i < o->b.seq_len.n; i++) cand[nc++] = o->b.seq_len.v[i];
    /* ascending, unique */
    for (int i = 1; i < nc; i++)
        for (int j = i; j > 0 && cand[j - 1] > cand[j]; j--) {
            int t = cand[j];
            cand[j] = cand[j - 1];
            cand[j - 1] = t;
        }
    int w = 0;
    for (int i = 0; i < nc; i++)
        if (!w || cand[w - 1] != cand[i]) cand[w++] = cand[i];
    nc = w;
    while (nc < (int)LRA_ARRAY_LEN(cand) && cand[nc - 1] <= lim / 2) cand[nc] = cand[nc - 1] * 2, nc++;
    char why[256] = "";
    for (int i = 0; i < nc && cand[i] <= lim; i++) {
        long long p = plan_bytes(base, cand[i], B, why, sizeof why);
        if (p <= 0) {
            snprintf(pr->note, sizeof pr->note, "seq_len %d rejected: %.200s", cand[i], why);
            pr->next = cand[i];
            break;
        }
        if (p > limit) {
            pr->next = cand[i];
            pr->next_planned = p;
            break;
        }
        pr->longest = cand[i];
        pr->longest_planned = p;
    }
    if (!pr->next && !pr->note[0]) snprintf(pr->note, sizeof pr->note, "fits up to probe_limit %d", lim);
    if (!pr->longest && !pr->note[0]) snprintf(pr->note, sizeof pr->note, "none of the lengths fits");
    pr->fine = pr->longest;
    if (pr->longest && pr->next_planned > 0) {
        /* Bisection on multiples of 64 between the last fit and the first miss. */
        int lo = pr->longest, hi = pr->next;
        while (hi - lo > 64) {
            int mid = lo + (hi - lo) / 2 / 64 * 64;
            if (mid <= lo) break;
            long long p = plan_bytes(base, mid, B, why, sizeof why);
            if (p > 0 && p <= limit) lo = mid;
            else hi = mid;
        }
        pr->fine = lo;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Config file: `bench:` block + run-config sections                                          */

static const char *scalar(yaml_node_t *n) {
    return (const char *)n->data.scalar.value;
}

/* Replace the first occurrence of from in s (capacity n) by to. */
static void str_replace_first(char *s, size_t n, const char *from, const char *to) {
    char *p = strstr(s, from);
    if (!p) return;
    size_t lf = strlen(from), lt = strlen(to), rest = strlen(p + lf);
    if ((size_t)(p - s) + lt + rest + 1 > n) return;
    memmove(p + lt, p + lf, rest + 1);
    memcpy(p, to, lt);
}

/* Read path: the bench block into b (defaults first), the rest through config_load (with the
 * non-bench --set overrides) into plan. Errors: "FILE:LINE:COL: reason" in err. */
static int load_bench_config(const char *path, const char **sets, int n_sets, bench_cfg *b, run_plan *plan,
                             char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) return lra_errorf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
    char *text = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) text = xrealloc(text, cap = 2 * cap + 8192);
        size_t n = fread(text + len, 1, 4096, f);
        len += n;
        if (n < 4096) break;
    }
    fclose(f);
    text[len] = 0;

    yaml_parser_t ps;
    yaml_document_t doc;
    yaml_parser_initialize(&ps);
    yaml_parser_set_input_string(&ps, (const unsigned char *)text, len);
    int rc = 0, have_name = 0;
    size_t cut_from = 0, cut_to = 0; /* line range [from, to) of the bench block, 1-based */
    if (!yaml_parser_load(&ps, &doc)) {
        rc = lra_errorf(err, errlen, "%s:%zu:%zu: YAML syntax error: %s", path, ps.problem_mark.line + 1,
                        ps.problem_mark.column + 1, ps.problem ? ps.problem : "?");
        yaml_parser_delete(&ps);
        free(text);
        return rc;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    schema_defaults(bench_schema, bench_schema_n, b);
    if (!root) rc = lra_errorf(err, errlen, "%s:1:1: empty config", path);
    else if (root->type != YAML_MAPPING_NODE || root->data.mapping.style == YAML_FLOW_MAPPING_STYLE)
        rc = lra_errorf(err, errlen, "%s:%zu:%zu: expected a block mapping of sections (name, model, attention, bench)",
                        path, root->start_mark.line + 1, root->start_mark.column + 1);
    for (yaml_node_pair_t *p = rc ? NULL : root->data.mapping.pairs.start; p && p < root->data.mapping.pairs.top && !rc;
         p++) {
        yaml_node_t *k = yaml_document_get_node(&doc, p->key), *v = yaml_document_get_node(&doc, p->value);
        if (k->type != YAML_SCALAR_NODE) continue; /* config_load reports it */
        const char *key = scalar(k);
        if (!strcmp(key, "name")) have_name = 1;
        if (!strcmp(key, "task"))
            rc = lra_errorf(err, errlen,
                            "%s:%zu:%zu: a bench config has no task section: inputs are random bytes (vocabulary "
                            "%d, %d classes, like LRA's byte-level Text task); set the lengths in bench.seq_len",
                            path, k->start_mark.line + 1, k->start_mark.column + 1, BENCH_VOCAB, BENCH_CLASSES);
        else if (!strcmp(key, "train"))
            rc = lra_errorf(err, errlen,
                            "%s:%zu:%zu: a bench config has no train section: set bench.batch_size, bench.steps and "
                            "bench.warmup",
                            path, k->start_mark.line + 1, k->start_mark.column + 1);
        if (rc || strcmp(key, "bench")) continue;
        cut_from = k->start_mark.line + 1;
        cut_to = v->end_mark.line + 1 + (v->end_mark.column > 0);
        if (v->type != YAML_MAPPING_NODE) {
            rc = lra_errorf(err, errlen, "%s:%zu:%zu: bench: expected a mapping of bench keys", path,
                            v->start_mark.line + 1, v->start_mark.column + 1);
            break;
        }
        for (yaml_node_pair_t *q = v->data.mapping.pairs.start; q < v->data.mapping.pairs.top && !rc; q++) {
            yaml_node_t *bk = yaml_document_get_node(&doc, q->key), *bv = yaml_document_get_node(&doc, q->value);
            if (bk->type != YAML_SCALAR_NODE) {
                rc = lra_errorf(err, errlen, "%s:%zu:%zu: bench: keys are names", path, bk->start_mark.line + 1,
                                bk->start_mark.column + 1);
                break;
            }
            const param_def *d = schema_find(bench_schema, bench_schema_n, scalar(bk));
            if (!d) {
                const char *near = schema_nearest(bench_schema, bench_schema_n, scalar(bk));
                rc = lra_errorf(err, errlen, "%s:%zu:%zu: unknown key '%s' in bench%s%s%s", path,
                                bk->start_mark.line + 1, bk->start_mark.column + 1, scalar(bk),
                                near ? " (did you mean '" : "", near ? near : "", near ? "'?)" : "");
                break;
            }
            for (yaml_node_pair_t *r = v->data.mapping.pairs.start; r < q; r++) {
                yaml_node_t *pk = yaml_document_get_node(&doc, r->key);
                if (pk->type == YAML_SCALAR_NODE && !strcmp(scalar(pk), scalar(bk)))
                    rc = lra_errorf(err, errlen, "%s:%zu:%zu: bench.%s given twice", path, bk->start_mark.line + 1,
                                    bk->start_mark.column + 1, scalar(bk));
            }
            if (rc) break;
            char val[1024] = "", why[256];
            if (bv->type == YAML_SCALAR_NODE) snprintf(val, sizeof val, "%s", scalar(bv));
            else if (bv->type == YAML_SEQUENCE_NODE && d->type == PT_INT_LIST) {
                size_t u = (size_t)snprintf(val, sizeof val, "[");
                for (yaml_node_item_t *it = bv->data.sequence.items.start; it < bv->data.sequence.items.top; it++) {
                    yaml_node_t *e = yaml_document_get_node(&doc, *it);
                    if (e->type != YAML_SCALAR_NODE) {
                        rc = lra_errorf(err, errlen, "%s:%zu:%zu: bench.%s: expected a list of integers", path,
                                        e->start_mark.line + 1, e->start_mark.column + 1, d->key);
                        break;
                    }
                    if (u < sizeof val)
                        u += (size_t)snprintf(val + u, sizeof val - u, "%s%s", it > bv->data.sequence.items.start ? ", " : "",
                                              scalar(e));
                }
                if (u < sizeof val) snprintf(val + u, sizeof val - u, "]");
            } else
                rc = lra_errorf(err, errlen, "%s:%zu:%zu: bench.%s: expected a %s", path, bv->start_mark.line + 1,
                                bv->start_mark.column + 1, d->key, d->type == PT_INT_LIST ? "list of integers" : "value");
            if (!rc && schema_set(d, b, val, why, sizeof why))
                rc = lra_errorf(err, errlen, "%s:%zu:%zu: bench.%s: %s", path, bv->start_mark.line + 1,
                                bv->start_mark.column + 1, d->key, why);
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&ps);

    /* --set bench.KEY=VALUE overrides; the others go to config_load. */
    const char **rest = xcalloc((size_t)n_sets + 1, sizeof *rest);
    int n_rest = 0;
    for (int i = 0; i < n_sets && !rc; i++) {
        if (strncmp(sets[i], "bench.", 6)) {
            rest[n_rest++] = sets[i];
            continue;
        }
        char key[64], why[256];
        const char *eq = strchr(sets[i], '=');
        if (!eq || eq - sets[i] - 6 >= (long)sizeof key) {
            rc = lra_errorf(err, errlen, "--set %s: expected KEY=VALUE", sets[i]);
            break;
        }
        memcpy(key, sets[i] + 6, (size_t)(eq - sets[i] - 6));
        key[eq - sets[i] - 6] = 0;
        const param_def *d = schema_find(bench_schema, bench_schema_n, key);
        if (!d) {
            const char *near = schema_nearest(bench_schema, bench_schema_n, key);
            rc = lra_errorf(err, errlen, "--set bench.%s: unknown key%s%s%s", key, near ? " (did you mean '" : "",
                            near ? near : "", near ? "'?)" : "");
        } else if (schema_set(d, b, eq + 1, why, sizeof why))
            rc = lra_errorf(err, errlen, "--set bench.%s: %s", key, why);
    }

    /* The rest of the file, with the bench block blanked (line numbers kept), plus a task line, is
     * a run config: config_load checks it and expands the attention entries. */
    if (!rc) {
        char tmp[] = "/tmp/lra-bench-XXXXXX.yaml";
        int fd = mkstemps(tmp, 5);
        if (fd < 0) rc = lra_errorf(err, errlen, "cannot create a temporary file: %s", strerror(errno));
        else {
            FILE *o = fdopen(fd, "w");
            size_t line = 1;
            for (size_t i = 0; i < len; i++) {
                if (!(line >= cut_from && line < cut_to) || text[i] == '\n') fputc(text[i], o);
                if (text[i] == '\n') line++;
            }
            if (len && text[len - 1] != '\n') fputc('\n', o);
            fprintf(o, "task: {name: listops, seq_len: %d}\n", b->seq_len.n ? b->seq_len.v[0] : 512);
            if (fclose(o)) rc = lra_errorf(err, errlen, "%s: write failed: %s", tmp, strerror(errno));
            if (!rc && config_load(plan, tmp, rest, n_rest, err, errlen)) {
                str_replace_first(err, errlen, tmp, path);
                rc = -1;
            }
            unlink(tmp);
            if (!rc && !have_name) {
                const char *base = strrchr(path, '/');
                base = base ? base + 1 : path;
                snprintf(plan->name, sizeof plan->name, "%.*s", (int)strcspn(base, "."), base);
            }
        }
    }
    free(rest);
    free(text);
    return rc ? -1 : 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Flags mode: mechanisms from "name[:key=value...]" specs                                    */

static int spec_config(run_cfg *c, const bench_opts *o, const char *spec, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    snprintf(c->exp_name, sizeof c->exp_name, "bench");
    snprintf(c->config_path, sizeof c->config_path, "(lra bench)");
    schema_defaults(model_schema, model_schema_n, &c->model);
    schema_defaults(train_schema, train_schema_n, &c->train);
    schema_defaults(task_common_schema, task_common_schema_n, &c->task);
    c->model.d_model = o->d_model;
    c->model.n_heads = o->n_heads;
    c->model.n_layers = o->n_layers;
    c->model.d_ff = o->d_ff;
    c->model.dropout = 0.1f;
    snprintf(c->task.name, sizeof c->task.name, "listops");
    c->task_ops = task_find("listops");
    char buf[256];
    snprintf(buf, sizeof buf, "%s", spec);
    char *save = NULL, *tok = strtok_r(buf, ":", &save);
    c->attn_ops = tok ? attn_find(tok) : NULL;
    if (!c->attn_ops) return lra_errorf(err, errlen, "--attention: unknown mechanism '%s'", tok ? tok : "");
    schema_defaults(c->attn_ops->schema, c->attn_ops->n_schema, c->attn_params.bytes);
    while ((tok = strtok_r(NULL, ":", &save))) {
        char *eq = strchr(tok, '=');
        if (!eq) return lra_errorf(err, errlen, "--attention %s: expected key=value, got '%s'", spec, tok);
        *eq = 0;
        const param_def *d = schema_find(c->attn_ops->schema, c->attn_ops->n_schema, tok);
        if (!d) return lra_errorf(err, errlen, "--attention %s: %s has no key '%s'", spec, c->attn_ops->name, tok);
        if (schema_set(d, c->attn_params.bytes, eq + 1, err, errlen)) return -1;
    }
    config_finalize(c);
    return 0;
}

static void usage_bench(FILE *f) {
    fprintf(f, "usage: lra bench [CONFIG.yaml] [options]\n"
               "\n"
               "Training-step and inference throughput, model FLOP/s, MFU (against the sgemm FLOP/s measured\n"
               "on the same threads), planned arena bytes and peak RSS for each mechanism and sequence length,\n"
               "each point in its own process; then the longest length each mechanism trains within the memory\n"
               "budget (from the arena plan), and table2.md (LRA Table 2 analogue, LRA's figures beside ours),\n"
               "summary.md and log-log charts. Inputs are random bytes (vocabulary 257, 2 classes, CLS pooling).\n"
               "\n"
               "CONFIG.yaml: `attention:` and `model:` as in a run config, plus a `bench:` block:\n");
    for (int i = 0; i < bench_schema_n; i++)
        fprintf(f, "  %-12s %-8s default %-20s %s\n", bench_schema[i].key, schema_type_name(bench_schema[i].type),
                bench_schema[i].def[0] ? bench_schema[i].def : "(none)", bench_schema[i].doc);
    fprintf(f, "\n"
               "options (override the config's bench block):\n"
               "  -a, --attention LIST  without CONFIG: mechanisms, comma-separated, each name[:key=value...]\n"
               "                        (default softmax,softmax:impl=materialized)\n"
               "  -n, --seq-len LIST    sequence lengths (default 1024,2048,4096)\n"
               "  -b, --batch N         batch size (default 4)\n"
               "      --d-model N       without CONFIG (default 64)   --heads N (default 4)\n"
               "      --layers N        without CONFIG (default 2)    --d-ff N (default 128)\n"
               "      --steps N         timed steps (default 5), after --warmup N (default 2)\n"
               "  -j, --threads N       OpenMP threads (default: all cores)\n"
               "  -o, --out DIR         results directory (default results/bench, or results/<name>)\n"
               "      --max-mem SIZE    memory budget: points over it are not run (status oom)\n"
               "      --max-seconds S   wall-clock limit per point (status timeout)\n"
               "      --no-inference    time training steps only\n"
               "      --no-probe        skip the longest-length probe\n"
               "      --dry-run         print each point's planned memory and the probe; run and write nothing\n"
               "  -s, --set KEY=VALUE   with CONFIG: override a key (bench.steps=1, model.d_model=128, ...)\n"
               "  -h, --help\n"
               "\n"
               "Exit status: 0 when every point is ok or oom, 1 when some point failed, crashed or timed out,\n"
               "2 for usage or config errors.\n");
}

static int parse_list(const char *s, lra_ilist *out) {
    out->n = 0;
    const char *p = s;
    while (*p) {
        if (out->n == LRA_ILIST_MAX) return -1;
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 1 << 20) return -1;
        out->v[out->n++] = (int)v;
        if (*end == ',') end++;
        else if (*end) return -1;
        p = end;
    }
    return out->n;
}

/* Test-only fault injection: LRA_TEST_FAULT="KIND:INDEX" makes point INDEX (0-based, in study
 * order) crash (SIGSEGV) or hang, after its model is built. */
static const char *fault_for(int index) {
    const char *e = getenv("LRA_TEST_FAULT");
    static char kind[16];
    if (!e) return NULL;
    const char *colon = strchr(e, ':');
    if (!colon || colon - e >= (long)sizeof kind || atoi(colon + 1) != index) return NULL;
    memcpy(kind, e, (size_t)(colon - e));
    kind[colon - e] = 0;
    return kind;
}

static void mkdir_p(const char *dir) {
    char buf[1200];
    snprintf(buf, sizeof buf, "%s", dir);
    for (char *p = buf + 1; *p; p++)
        if (*p == '/') *p = 0, mkdir(buf, 0755), *p = '/';
    mkdir(buf, 0755);
}

int cmd_bench(int argc, char **argv) {
    static const struct option opts[] = {
        {"attention", required_argument, 0, 'a'}, {"seq-len", required_argument, 0, 'n'},
        {"batch", required_argument, 0, 'b'},     {"d-model", required_argument, 0, 'D'},
        {"heads", required_argument, 0, 'H'},     {"layers", required_argument, 0, 'L'},
        {"d-ff", required_argument, 0, 'F'},      {"steps", required_argument, 0, 'S'},
        {"warmup", required_argument, 0, 'W'},    {"threads", required_argument, 0, 'j'},
        {"out", required_argument, 0, 'o'},       {"max-mem", required_argument, 0, 'M'},
        {"max-seconds", required_argument, 0, 'T'}, {"no-inference", no_argument, 0, 'I'},
        {"no-probe", no_argument, 0, 'P'},        {"set", required_argument, 0, 's'},
        {"dry-run", no_argument, 0, 'd'},
        {"help", no_argument, 0, 'h'},            {0, 0, 0, 0}};
    bench_opts o;
    memset(&o, 0, sizeof o);
    o.d_model = 64, o.n_heads = 4, o.n_layers = 2, o.d_ff = 128;
    /* Flag values, applied over the config's bench block (-1 / NULL: not given). */
    int f_B = -1, f_steps = -1, f_warmup = -1, f_threads = -1, f_noinf = 0, f_noprobe = 0, model_flag = 0, dry = 0;
    double f_secs = -1;
    const char *attn = NULL, *out = NULL, *f_maxmem = NULL;
    lra_ilist f_lens = {0};
    const char **sets = xcalloc((size_t)argc + 1, sizeof *sets);
    int n_sets = 0, c, rc = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "a:n:b:j:o:s:h", opts, NULL)) != -1) {
        int *dst = NULL;
        switch (c) {
        case 'a': attn = optarg; break;
        case 'n':
            if (parse_list(optarg, &f_lens) <= 0) {
                fprintf(stderr, "lra: error: --seq-len: expected a list like 1024,2048, got '%s'\n", optarg);
                rc = 2;
            }
            break;
        case 'b': dst = &f_B; break;
        case 'D': dst = &o.d_model, model_flag = 1; break;
        case 'H': dst = &o.n_heads, model_flag = 1; break;
        case 'L': dst = &o.n_layers, model_flag = 1; break;
        case 'F': dst = &o.d_ff, model_flag = 1; break;
        case 'S': dst = &f_steps; break;
        case 'W': dst = &f_warmup; break;
        case 'j': dst = &f_threads; break;
        case 'o': out = optarg; break;
        case 'M':
            f_maxmem = optarg;
            if (lra_parse_size(optarg) <= 0) {
                fprintf(stderr, "lra: error: --max-mem: expected a size like 400M, got '%s'\n", optarg);
                rc = 2;
            }
            break;
        case 'T': {
            char *end;
            f_secs = strtod(optarg, &end);
            if (end == optarg || *end || !(f_secs >= 0)) {
                fprintf(stderr, "lra: error: --max-seconds: expected a number of seconds, got '%s'\n", optarg);
                rc = 2;
            }
            break;
        }
        case 'I': f_noinf = 1; break;
        case 'P': f_noprobe = 1; break;
        case 'd': dry = 1; break;
        case 's': sets[n_sets++] = optarg; break;
        case 'h': usage_bench(stdout); free(sets); return 0;
        default: usage_bench(stderr); free(sets); return 2;
        }
        if (dst) {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (end == optarg || *end || v < (c == 'W' ? 0 : 1) || v > 1 << 20) {
                const char *name = "option";
                for (int j = 0; opts[j].name; j++)
                    if (opts[j].val == c) name = opts[j].name;
                fprintf(stderr, "lra: error: --%s: expected a %s integer, got '%s'\n", name,
                        c == 'W' ? "non-negative" : "positive", optarg);
                rc = 2;
            }
            *dst = (int)v;
        }
        if (rc) {
            free(sets);
            return rc;
        }
    }
    const char *config = NULL;
    if (optind < argc) config = argv[optind++];
    if (optind != argc) {
        fprintf(stderr, "lra: error: bench: unexpected argument '%s'\n", argv[optind]);
        usage_bench(stderr);
        free(sets);
        return 2;
    }
    char err[2048];
    run_cfg *mech = xcalloc(BENCH_MAX_MECH, sizeof *mech);
    int n_mech = 0;
    if (config) {
        if (attn || model_flag) {
            fprintf(stderr, "lra: error: bench %s: --attention and the model flags apply without a config; edit its "
                            "attention: and model: sections or use --set model.KEY=VALUE\n", config);
            rc = 2;
        }
        run_plan plan;
        memset(&plan, 0, sizeof plan);
        if (!rc && load_bench_config(config, sets, n_sets, &o.b, &plan, err, sizeof err)) {
            fprintf(stderr, "lra: error: %s\n", err);
            rc = 2;
        }
        for (int i = 0; !rc && i < plan.n_runs; i++) {
            int dup = -1;
            /* a model/train sweep axis shows in the label after a space ("softmax d_model=32") */
            const char *li = plan.runs[i].attn_label;
            size_t ni = strcspn(li, " ");
            for (int j = 0; j < n_mech; j++) {
                const char *lj = mech[j].attn_label;
                if (strcspn(lj, " ") == ni && !strncmp(lj, li, ni)) dup = j;
            }
            if (dup >= 0) {
                fprintf(stderr, "lra: error: %s: two runs share the mechanism %.*s: a bench config sweeps attention "
                                "entries only (no lists in model:)\n", config, (int)ni, li);
                rc = 2;
            } else if (n_mech == BENCH_MAX_MECH) {
                fprintf(stderr, "lra: error: %s: more than %d mechanisms\n", config, BENCH_MAX_MECH);
                rc = 2;
            } else
                mech[n_mech++] = plan.runs[i];
        }
        if (!rc) snprintf(o.name, sizeof o.name, "%s", plan.name);
        config_plan_free(&plan);
    } else {
        schema_defaults(bench_schema, bench_schema_n, &o.b);
        snprintf(o.name, sizeof o.name, "bench");
        if (n_sets) {
            fprintf(stderr, "lra: error: --set needs a CONFIG.yaml\n");
            rc = 2;
        }
        if (!rc && o.d_model % o.n_heads) {
            fprintf(stderr, "lra: error: --d-model %d is not a multiple of --heads %d\n", o.d_model, o.n_heads);
            rc = 2;
        }
        char buf[4096];
        snprintf(buf, sizeof buf, "%s", attn ? attn : "softmax,softmax:impl=materialized");
        char *save = NULL;
        for (char *t = strtok_r(buf, ",", &save); t && !rc; t = strtok_r(NULL, ",", &save)) {
            if (n_mech == BENCH_MAX_MECH || spec_config(&mech[n_mech], &o, t, err, sizeof err)) {
                fprintf(stderr, "lra: error: %s\n", n_mech == BENCH_MAX_MECH ? "--attention: too many mechanisms" : err);
                rc = 2;
            } else
                n_mech++;
        }
    }
    free(sets);
    if (rc) {
        free(mech);
        return rc;
    }
    if (f_lens.n) o.b.seq_len = f_lens;
    if (f_B > 0) o.b.batch_size = f_B;
    if (f_steps > 0) o.b.steps = f_steps;
    if (f_warmup >= 0) o.b.warmup = f_warmup;
    if (f_threads > 0) o.b.threads = f_threads;
    if (f_maxmem) snprintf(o.b.max_mem, sizeof o.b.max_mem, "%s", f_maxmem);
    if (f_secs >= 0) o.b.max_seconds = (float)f_secs;
    if (f_noinf) o.b.inference = 0;
    if (f_noprobe) o.b.probe = 0;
    if (o.b.max_mem[0]) {
        o.max_mem = lra_parse_size(o.b.max_mem);
        if (o.max_mem <= 0) {
            fprintf(stderr, "lra: error: %s: bench.max_mem: expected a size like 4G, got '%s'\n",
                    config ? config : "bench", o.b.max_mem);
            free(mech);
            return 2;
        }
    }
    if (o.b.seq_len.n == 0) {
        fprintf(stderr, "lra: error: bench.seq_len: give at least one length\n");
        free(mech);
        return 2;
    }
    o.threads = o.b.threads;

    char dir[1024], csv_path[1100], maxlen_path[1100];
    if (out) snprintf(dir, sizeof dir, "%s", out);
    else snprintf(dir, sizeof dir, "results/%s", o.name);
    snprintf(csv_path, sizeof csv_path, "%s/bench.csv", dir);
    snprintf(maxlen_path, sizeof maxlen_path, "%s/maxlen.csv", dir);
    if (!dry) {
        char merr[512];
        if (lra_move_aside_if(dir, "bench.csv", merr, sizeof merr)) {
            fprintf(stderr, "lra: error: %s\n", merr);
            free(mech);
            return 2;
        }
        mkdir_p(dir);
        unlink(csv_path); /* one invocation, one table */
        unlink(maxlen_path);
    }
    int threads = o.threads > 0 ? o.threads : lra_threads();
    const model_cfg *mc = &mech[0].model;
    char mm[32] = "none";
    if (o.max_mem) lra_fmt_bytes((double)o.max_mem, mm, sizeof mm);
    printf("lra bench %s: B=%d d_model=%d heads=%d layers=%d d_ff=%d, random bytes (vocabulary %d), CLS pooling, "
           "%d threads, median of %d steps after %d warm-up, max_mem %s\n",
           o.name, o.b.batch_size, mc->d_model, mc->n_heads, mc->n_layers, mc->d_ff, BENCH_VOCAB, threads, o.b.steps,
           o.b.warmup, mm);
    if (!dry)
        printf("%-30s %7s %-7s %10s %9s %10s %11s %9s %9s %6s %11s %11s\n", "attention", "seq_len", "status", "train ms",
           "(IQR)", "infer ms", "tokens/s", "GFLOP/s", "sgemm", "MFU", "planned", "peak RSS");
    fflush(stdout);

    int bad = 0, index = 0;
    for (int i = 0; i < n_mech; i++)
        for (int k = 0; k < o.b.seq_len.n; k++, index++) {
            int N = o.b.seq_len.v[k];
            run_cfg cfg = mech[i];
            cfg.task.seq_len = N;
            cfg.train.batch_size = o.b.batch_size;
            config_finalize(&cfg);
            if (dry) {
                char why[256] = "", a[32];
                if (o.threads > 0) lra_set_threads(o.threads);
                long long p = plan_bytes(&cfg, N, o.b.batch_size, why, sizeof why);
                if (p > 0)
                    printf("%-30s %7d plan %s%s\n", cfg.attn_label, N, lra_fmt_bytes((double)p, a, sizeof a),
                           o.max_mem && p > o.max_mem ? " > max_mem: oom" : "");
                else printf("%-30s %7d rejected: %s\n", cfg.attn_label, N, why);
                continue;
            }
            bench_point pt;
            long long rss = 0;
            double wall = 0, cpu = 0;
            const char *status = "failed";
            if (run_point(&cfg, &o, fault_for(index), &pt, &rss, &wall, &cpu, &status)) {
                fprintf(stderr, "lra: error: fork: %s\n", strerror(errno));
                free(mech);
                return 1;
            }
            int ok = !strcmp(status, "ok");
            bad += strcmp(status, "ok") && strcmp(status, "oom");
            double tokens = (double)o.b.batch_size * N;
            double fps = ok ? 3.0 * pt.fwd_flops / (pt.train[0] * 1e-3) : 0;
            char a[32], r[32], inf[32] = "-";
            if (pt.have_infer) snprintf(inf, sizeof inf, "%.1f", pt.infer[0]);
            if (ok)
                printf("%-30s %7d %-7s %10.1f %9.1f %10s %11.0f %9.2f %9.1f %5.1f%% %11s %11s\n", cfg.attn_label, N,
                       status, pt.train[0], pt.train[3] - pt.train[2], inf,
                       tokens / (pt.train[0] * 1e-3), fps * 1e-9, pt.sgemm_peak * 1e-9, 100 * fps / pt.sgemm_peak,
                       lra_fmt_bytes((double)pt.planned, a, sizeof a), lra_fmt_bytes((double)rss, r, sizeof r));
            else printf("%-30s %7d %-7s %s\n", cfg.attn_label, N, status, pt.reason);
            fflush(stdout);

            char f[BENCH_N_COLUMNS][64];
            const char *fields[BENCH_N_COLUMNS];
            for (int j = 0; j < BENCH_N_COLUMNS; j++) f[j][0] = 0, fields[j] = f[j];
#define SETF(col, ...) snprintf(f[BENCH_COL_##col], 64, __VA_ARGS__)
            fields[BENCH_COL_name] = o.name;
            fields[BENCH_COL_label] = cfg.attn_label;
            fields[BENCH_COL_attention] = cfg.attn_ops->name;
            SETF(seq_len, "%d", N);
            SETF(batch_size, "%d", o.b.batch_size);
            SETF(d_model, "%d", cfg.model.d_model);
            SETF(n_heads, "%d", cfg.model.n_heads);
            SETF(n_layers, "%d", cfg.model.n_layers);
            SETF(d_ff, "%d", cfg.model.d_ff);
            SETF(threads, "%d", threads);
            fields[BENCH_COL_status] = status;
            fields[BENCH_COL_reason] = pt.reason;
            SETF(steps, "%d", ok ? pt.steps_done : o.b.steps);
            SETF(warmup, "%d", ok ? pt.warmup_done : o.b.warmup);
            if (ok && pt.have_infer) SETF(infer_steps, "%d", pt.infer_steps_done);
            if (ok) {
                SETF(train_ms, "%.4f", pt.train[0]);
                SETF(train_ms_min, "%.4f", pt.train[1]);
                SETF(train_ms_p25, "%.4f", pt.train[2]);
                SETF(train_ms_p75, "%.4f", pt.train[3]);
                SETF(train_ms_max, "%.4f", pt.train[4]);
                SETF(train_steps_per_s, "%.4f", 1e3 / pt.train[0]);
                SETF(tokens_per_s, "%.1f", tokens / (pt.train[0] * 1e-3));
                if (pt.have_infer) {
                    SETF(infer_ms, "%.4f", pt.infer[0]);
                    SETF(infer_ms_min, "%.4f", pt.infer[1]);
                    SETF(infer_ms_max, "%.4f", pt.infer[2]);
                    SETF(infer_steps_per_s, "%.4f", 1e3 / pt.infer[0]);
                    SETF(infer_tokens_per_s, "%.1f", tokens / (pt.infer[0] * 1e-3));
                    SETF(infer_mfu, "%.5f", pt.fwd_flops / (pt.infer[0] * 1e-3) / pt.sgemm_peak);
                }
                SETF(fwd_flops, "%.6g", pt.fwd_flops);
                SETF(flops_per_s, "%.6g", fps);
                SETF(sgemm_flops_per_s, "%.6g", pt.sgemm_peak);
                SETF(mfu, "%.5f", fps / pt.sgemm_peak);
                SETF(params, "%lld", pt.params);
                SETF(act_bytes, "%lld", pt.act_bytes);
                SETF(scratch_bytes, "%lld", pt.scratch_bytes);
            }
            if (pt.planned > 0) SETF(mem_planned, "%lld", pt.planned);
            SETF(peak_rss, "%lld", rss);
            SETF(max_mem, "%lld", o.max_mem);
            SETF(wall_s, "%.3f", wall);
            SETF(cpu_s, "%.3f", cpu);
            fields[BENCH_COL_version] = LRA_VERSION;
#undef SETF
            if (csv_append_row(csv_path, bench_columns, fields, BENCH_N_COLUMNS, err, sizeof err))
                fprintf(stderr, "lra: warning: %s\n", err);
        }

    if (o.b.probe) {
        long long limit = o.max_mem;
        const char *src = "max_mem";
        if (!limit) {
            limit = (long long)sysconf(_SC_PHYS_PAGES) * (long long)sysconf(_SC_PAGESIZE);
            src = "physical memory";
        }
        if (o.threads > 0) lra_set_threads(o.threads); /* the scratch plan depends on the thread count */
        char lim[32];
        printf("\nlongest seq_len within %s (%s), from the arena plan:\n", lra_fmt_bytes((double)limit, lim, sizeof lim),
               src);
        for (int i = 0; i < n_mech; i++) {
            probe_result pr;
            probe_longest(&mech[i], &o, limit, &pr);
            char a[32] = "", b2[32] = "";
            if (pr.longest) lra_fmt_bytes((double)pr.longest_planned, a, sizeof a);
            if (pr.next_planned) lra_fmt_bytes((double)pr.next_planned, b2, sizeof b2);
            if (pr.longest) printf("%-30s %8d (plan %s)", mech[i].attn_label, pr.longest, a);
            else printf("%-30s %8s", mech[i].attn_label, "none");
            if (pr.next_planned) printf("; %d needs %s; bisection: %d", pr.next, b2, pr.fine);
            if (pr.note[0]) printf("; %s", pr.note);
            printf("\n");
            char f[MAXLEN_N_COLUMNS][64];
            const char *fields[MAXLEN_N_COLUMNS];
            for (int j = 0; j < MAXLEN_N_COLUMNS; j++) f[j][0] = 0, fields[j] = f[j];
            if (dry) continue;
            fields[MAXLEN_COL_label] = mech[i].attn_label;
            fields[MAXLEN_COL_attention] = mech[i].attn_ops->name;
            snprintf(f[MAXLEN_COL_batch_size], 64, "%d", o.b.batch_size);
            snprintf(f[MAXLEN_COL_threads], 64, "%d", threads);
            snprintf(f[MAXLEN_COL_max_mem], 64, "%lld", limit);
            fields[MAXLEN_COL_max_mem_source] = src;
            snprintf(f[MAXLEN_COL_longest_n], 64, "%d", pr.longest);
            if (pr.longest) snprintf(f[MAXLEN_COL_longest_planned], 64, "%lld", pr.longest_planned);
            if (pr.next) snprintf(f[MAXLEN_COL_next_n], 64, "%d", pr.next);
            if (pr.next_planned) snprintf(f[MAXLEN_COL_next_planned], 64, "%lld", pr.next_planned);
            snprintf(f[MAXLEN_COL_longest_n_fine], 64, "%d", pr.fine);
            fields[MAXLEN_COL_note] = pr.note;
            if (csv_append_row(maxlen_path, maxlen_columns, fields, MAXLEN_N_COLUMNS, err, sizeof err))
                fprintf(stderr, "lra: warning: %s\n", err);
        }
    }
    free(mech);
    if (dry) return 0;
    printf("\nresults: %s\n", csv_path);
    fflush(stdout);
    if (plot_bench(dir, 0, err, sizeof err)) fprintf(stderr, "lra: warning: %s\n", err);
    return bad ? 1 : 0;
}
