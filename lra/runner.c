/* runner.c - the sweep (DESIGN.md "Run isolation"): every run trains in a forked child; the
 * parent reads the child's report through a pipe and its peak RSS through wait4, turns crashes,
 * time-outs and refusals into rows with a status and a reason, appends each row to runs.csv
 * atomically, and goes on. Nothing already written is lost: rows are whole or absent. */
#include "runner.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common.h"
#include "csv.h"
#include "plot.h"
#include "results.h"
#include "train.h"

static volatile sig_atomic_t g_interrupted = 0;
static void on_signal(int sig) { g_interrupted = sig; }

static int mkdir_p(const char *path) {
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
        *p = '/';
    }
    if (mkdir(tmp, 0755) && errno != EEXIST) return -1;
    return 0;
}

void runner_attn_params(const run_cfg *c, char *buf, size_t n) {
    const attn_ops *ops = c->attn_ops;
    attn_params_buf def;
    schema_defaults(ops->schema, ops->n_schema, def.bytes);
    buf[0] = 0;
    size_t len = 0;
    for (int i = 0; i < ops->n_schema; i++) {
        char a[256], b[256];
        schema_format(&ops->schema[i], c->attn_params.bytes, a, sizeof a);
        schema_format(&ops->schema[i], def.bytes, b, sizeof b);
        if (!strcmp(a, b)) continue;
        int w = snprintf(buf + len, n - len, "%s%s=%s", len ? ";" : "", ops->schema[i].key, a);
        if (w < 0 || (size_t)w >= n - len) break;
        len += (size_t)w;
    }
}

/* The run ids of DIR/runs.csv rows with status ok: those runs are finished. A run with any other
 * status (crashed, timeout, oom, ...) is run again by --resume and its old row is replaced. */
static int load_done(const char *runs_csv, char ***ids, int *n, char *err, size_t errlen) {
    *ids = NULL;
    *n = 0;
    if (access(runs_csv, F_OK)) return 0;
    csv_table t;
    if (csv_read(runs_csv, &t, err, errlen)) return -1;
    int c = csv_col(&t, "run_id"), cs = csv_col(&t, "status");
    if ((c < 0 || cs < 0) && t.n_rows > 0) {
        csv_free(&t);
        return lra_errorf(err, errlen, "%s:1: no run_id or status column in the header", runs_csv);
    }
    *ids = xcalloc((size_t)(t.n_rows > 0 ? t.n_rows : 1), sizeof(char *));
    for (int r = 1; r < t.n_rows; r++)
        if (!strcmp(t.rows[r][cs], "ok")) (*ids)[(*n)++] = xstrdup(t.rows[r][c]);
    csv_free(&t);
    return 0;
}

static int is_done(char **ids, int n, const char *id) {
    for (int i = 0; i < n; i++)
        if (!strcmp(ids[i], id)) return 1;
    return 0;
}

/* Remove from path, in place, the rows whose run_id is one of ids[0..n): rows of runs about to
 * run again (their old non-ok row, curve points of a killed run). Done under the same flock that
 * csv_append_row takes, and by truncating and rewriting the same inode, so other shards appending
 * with O_APPEND never lose a row. */
static void drop_rows(const char *path, char **ids, int n) {
    if (n == 0 || access(path, F_OK)) return;
    int fd = open(path, O_RDWR);
    if (fd < 0) return;
    if (flock(fd, LOCK_EX)) {
        close(fd);
        return;
    }
    csv_table t;
    char err[512];
    if (csv_read_fd(path, fd, &t, err, sizeof err) == 0) {
        int c = csv_col(&t, "run_id"), dropped = 0;
        size_t len = 0, cap = 4096;
        char *buf = xmalloc(cap);
        for (int r = 0; r < t.n_rows && c >= 0; r++) {
            if (r > 0 && is_done(ids, n, t.rows[r][c])) {
                dropped++;
                continue;
            }
            char *line = csv_format_row((const char *const *)t.rows[r], t.n_cols);
            size_t l = strlen(line);
            if (len + l + 1 > cap) {
                while (len + l + 1 > cap) cap *= 2;
                buf = xrealloc(buf, cap);
            }
            memcpy(buf + len, line, l);
            len += l;
            free(line);
        }
        if (dropped && ftruncate(fd, 0) == 0) {
            size_t off = 0;
            while (off < len) {
                ssize_t w = pwrite(fd, buf + off, len - off, (off_t)off);
                if (w <= 0) break;
                off += (size_t)w;
            }
            fsync(fd);
        }
        free(buf);
        csv_free(&t);
    }
    flock(fd, LOCK_UN);
    close(fd);
}

static const char *signal_name(int sig) {
    const char *s = strsignal(sig);
    return s ? s : "unknown signal";
}

static void fmt_num(char *buf, size_t n, double v, const char *fmt) {
    if (isnan(v)) buf[0] = 0;
    else snprintf(buf, n, fmt, v);
}

static int write_row(const char *runs_csv, const run_cfg *c, const run_report *r, long long peak_rss, int threads,
                     char *err, size_t errlen) {
    char f[RUNS_N_COLUMNS][160];
    const char *fields[RUNS_N_COLUMNS];
    char aparams[512];
    runner_attn_params(c, aparams, sizeof aparams);
    for (int i = 0; i < RUNS_N_COLUMNS; i++) f[i][0] = 0, fields[i] = f[i];
    snprintf(f[COL_RUNS_run_id], 160, "%s", c->run_id);
    fields[COL_RUNS_name] = c->exp_name;
    fields[COL_RUNS_config] = c->config_path;
    fields[COL_RUNS_task] = c->task.name;
    fields[COL_RUNS_attention] = c->attn_ops->name;
    fields[COL_RUNS_attention_params] = aparams;
    fields[COL_RUNS_label] = c->attn_label;
    snprintf(f[COL_RUNS_seq_len], 160, "%d", c->task.seq_len);
    snprintf(f[COL_RUNS_d_model], 160, "%d", c->model.d_model);
    snprintf(f[COL_RUNS_n_heads], 160, "%d", c->model.n_heads);
    snprintf(f[COL_RUNS_n_layers], 160, "%d", c->model.n_layers);
    snprintf(f[COL_RUNS_d_ff], 160, "%d", c->model.d_ff);
    snprintf(f[COL_RUNS_batch_size], 160, "%d", c->train.batch_size);
    snprintf(f[COL_RUNS_steps], 160, "%d", c->train.steps);
    snprintf(f[COL_RUNS_steps_done], 160, "%d", r->steps_done);
    snprintf(f[COL_RUNS_seed], 160, "%d", c->train.seed);
    snprintf(f[COL_RUNS_threads], 160, "%d", threads);
    fields[COL_RUNS_status] = r->status;
    fields[COL_RUNS_reason] = r->reason;
    fields[COL_RUNS_metric] = r->metric[0] ? r->metric : "accuracy";
    fmt_num(f[COL_RUNS_best_val], 160, r->best_val, "%.6f");
    if (r->best_step > 0) snprintf(f[COL_RUNS_best_step], 160, "%d", r->best_step);
    fmt_num(f[COL_RUNS_test], 160, r->test, "%.6f");
    fmt_num(f[COL_RUNS_majority], 160, r->majority, "%.6f");
    fmt_num(f[COL_RUNS_train_loss], 160, r->train_loss, "%.6f");
    if (r->steps_done > 0) {
        snprintf(f[COL_RUNS_step_ms], 160, "%.3f", r->step_ms);
        snprintf(f[COL_RUNS_tokens_per_s], 160, "%.1f", r->tokens_per_s);
        snprintf(f[COL_RUNS_flops_per_s], 160, "%.4g", r->flops_per_s);
    }
    if (r->params) snprintf(f[COL_RUNS_params], 160, "%lld", r->params);
    if (r->mem_planned) snprintf(f[COL_RUNS_mem_planned], 160, "%lld", r->mem_planned);
    if (r->act_bytes) snprintf(f[COL_RUNS_act_bytes], 160, "%lld", r->act_bytes);
    if (peak_rss > 0) snprintf(f[COL_RUNS_peak_rss], 160, "%lld", peak_rss);
    snprintf(f[COL_RUNS_wall_s], 160, "%.2f", r->wall_s);
    fields[COL_RUNS_version] = LRA_VERSION;
    return csv_append_row(runs_csv, runs_columns, fields, RUNS_N_COLUMNS, err, errlen);
}

static void write_config(const char *dir, const run_cfg *c) {
    char path[1400];
    snprintf(path, sizeof path, "%s/config.yaml", dir);
    FILE *f = fopen(path, "w");
    if (!f) return;
    fprintf(f, "# resolved config of run %s (every key, defaults included)\n", c->run_id);
    config_dump_yaml(c, f);
    fclose(f);
}

/* Run one config in a child. Fills rep and *peak_rss. Returns 1 when interrupted. */
static int run_child(const run_cfg *c, const runner_opts *o, const char *run_dir, const char *curves_csv,
                     const char *ckpt, const char *label, const char *fault, run_report *rep, long long *peak_rss) {
    int fds[2];
    memset(rep, 0, sizeof *rep);
    rep->best_val = rep->test = rep->majority = rep->train_loss = NAN;
    if (pipe(fds)) {
        snprintf(rep->status, sizeof rep->status, STATUS_FAILED);
        snprintf(rep->reason, sizeof rep->reason, "pipe: %s", strerror(errno));
        return 0;
    }
    fflush(NULL);
    double t0 = lra_now();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(rep->status, sizeof rep->status, STATUS_FAILED);
        snprintf(rep->reason, sizeof rep->reason, "fork: %s", strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return 0;
    }
    if (pid == 0) {
        close(fds[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        if (o->threads > 0) lra_set_threads(o->threads);
        char logp[1400];
        snprintf(logp, sizeof logp, "%s/log.txt", run_dir);
        /* A run continuing from its checkpoint keeps the log of the process that was stopped. */
        FILE *log = fopen(logp, ckpt && access(ckpt, F_OK) == 0 ? "a" : "w");
        /* Without --max-mem the budget is physical memory: a plan beyond it is an `oom` row, not an
         * allocation failure half way through. */
        long long max_mem = o->max_mem > 0 ? o->max_mem
                                           : (long long)sysconf(_SC_PHYS_PAGES) * (long long)sysconf(_SC_PAGESIZE);
        train_opts to = {.curves_path = curves_csv, .log = log, .verbose = 1, .tty = isatty(2), .max_mem = max_mem,
                         .fault = fault, .run_label = label, .ckpt_path = ckpt};
        if (log) {
            fprintf(log, "run %s (%s), config %s, lra %s, %d threads\n", c->run_id, label, c->config_path, LRA_VERSION,
                    lra_threads());
        }
        run_report r;
        train_run(c, &to, &r);
        if (log) {
            fprintf(log, "status %s%s%s\n", r.status, r.reason[0] ? ": " : "", r.reason);
            fclose(log);
        }
        ssize_t w = write(fds[1], &r, sizeof r);
        _exit(w == (ssize_t)sizeof r ? 0 : 3);
    }
    close(fds[1]);
    double deadline = c->train.max_minutes > 0 ? t0 + 60.0 * c->train.max_minutes * 1.25 + 10.0 : 0;
    size_t got = 0;
    int timed_out = 0, interrupted = 0;
    for (;;) {
        struct pollfd p = {.fd = fds[0], .events = POLLIN};
        int pr = poll(&p, 1, 200);
        if (pr > 0) {
            ssize_t n = read(fds[0], (char *)rep + got, sizeof *rep - got);
            if (n > 0) {
                got += (size_t)n;
                continue;
            }
            if (n == 0) break; /* EOF: child closed or exited */
            if (errno != EINTR) break;
        }
        if (g_interrupted && !interrupted) {
            interrupted = 1;
            kill(pid, SIGKILL);
        }
        if (deadline > 0 && lra_now() > deadline && !timed_out) {
            timed_out = 1;
            kill(pid, SIGKILL);
        }
    }
    close(fds[0]);
    int st = 0;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    while (wait4(pid, &st, 0, &ru) < 0 && errno == EINTR) {
    }
    *peak_rss = (long long)ru.ru_maxrss * 1024LL;
    if (interrupted || (WIFSIGNALED(st) && (WTERMSIG(st) == SIGINT || WTERMSIG(st) == SIGTERM) && g_interrupted))
        return 1;
    if (got != sizeof *rep) {
        memset(rep, 0, sizeof *rep);
        rep->best_val = rep->test = rep->majority = rep->train_loss = NAN;
        snprintf(rep->metric, sizeof rep->metric, "accuracy");
        if (timed_out) {
            snprintf(rep->status, sizeof rep->status, STATUS_TIMEOUT);
            snprintf(rep->reason, sizeof rep->reason, "killed after %.0f s (train.max_minutes %.3g)", lra_now() - t0,
                     (double)c->train.max_minutes);
        } else if (WIFSIGNALED(st)) {
            snprintf(rep->status, sizeof rep->status, STATUS_CRASHED);
            snprintf(rep->reason, sizeof rep->reason, "killed by signal %d (%s); see %.120s/log.txt", WTERMSIG(st),
                     signal_name(WTERMSIG(st)), run_dir);
        } else {
            snprintf(rep->status, sizeof rep->status, STATUS_FAILED);
            snprintf(rep->reason, sizeof rep->reason, "exited with status %d without a report; see %.120s/log.txt",
                     WIFEXITED(st) ? WEXITSTATUS(st) : -1, run_dir);
        }
        rep->wall_s = lra_now() - t0;
    }
    return 0;
}

/* Test-only fault injection: LRA_TEST_FAULT="KIND:INDEX" makes plan run INDEX (0-based, in the
 * whole plan) crash / return NaN / hang. Used by tests/cli to check that a sweep survives. */
static const char *fault_for(int index) {
    const char *e = getenv("LRA_TEST_FAULT");
    static char kind[16];
    if (!e) return NULL;
    const char *colon = strchr(e, ':');
    if (!colon || colon - e >= (long)sizeof kind) return NULL;
    if (atoi(colon + 1) != index) return NULL;
    memcpy(kind, e, (size_t)(colon - e));
    kind[colon - e] = 0;
    return kind;
}

int runner_run(const run_plan *plan, const runner_opts *o) {
    char out[1024], runs_csv[1100], curves_csv[1100], err[1024];
    if (o->out_dir) snprintf(out, sizeof out, "%s", o->out_dir);
    else snprintf(out, sizeof out, "results/%s", plan->name);
    snprintf(runs_csv, sizeof runs_csv, "%s/runs.csv", out);
    snprintf(curves_csv, sizeof curves_csv, "%s/curves.csv", out);

    struct stat sb;
    int exists = stat(runs_csv, &sb) == 0 && sb.st_size > 0;
    /* Shards of one sweep share the directory: each skips what is finished, like --resume. */
    int resume = o->resume || o->shard_n > 1;
    if (exists && !resume && !o->dry_run) {
        if (!o->force) {
            fprintf(stderr,
                    "lra: error: %s already holds results; use --resume to continue that sweep, --force to move it "
                    "aside and start over, or --out DIR\n",
                    runs_csv);
            return 2;
        }
        char aside[1100], stamp[32];
        time_t now = time(NULL);
        strftime(stamp, sizeof stamp, "%Y%m%d-%H%M%S", localtime(&now));
        snprintf(aside, sizeof aside, "%s.old-%s", out, stamp);
        if (rename(out, aside)) {
            fprintf(stderr, "lra: error: cannot move %s to %s: %s\n", out, aside, strerror(errno));
            return 2;
        }
        fprintf(stderr, "lra: moved the previous results to %s\n", aside);
    }

    char **done = NULL;
    int n_done = 0;
    if (resume && load_done(runs_csv, &done, &n_done, err, sizeof err)) {
        fprintf(stderr, "lra: error: %s\n", err);
        return 2;
    }

    int n_foreign = 0; /* finished runs of another config in this directory */
    for (int i = 0; i < n_done; i++) {
        int found = 0;
        for (int r = 0; r < plan->n_runs && !found; r++) found = !strcmp(plan->runs[r].run_id, done[i]);
        n_foreign += !found;
    }
    if (n_foreign)
        fprintf(stderr,
                "lra: warning: %s holds %d finished run%s that %s not in this config (was it changed since?); %s kept "
                "and summary.md shows them beside the new ones: use --force to start over, or another --out\n",
                runs_csv, n_foreign, n_foreign == 1 ? "" : "s", n_foreign == 1 ? "is" : "are",
                n_foreign == 1 ? "it is" : "they are");

    int shard_n = o->shard_n > 0 ? o->shard_n : 1;
    int *todo = xmalloc(sizeof(int) * (size_t)(plan->n_runs ? plan->n_runs : 1));
    int n_todo = 0, n_skipped = 0, n_dup = 0;
    for (int i = 0; i < plan->n_runs; i++) {
        if (i % shard_n != o->shard_i) continue;
        if (is_done(done, n_done, plan->runs[i].run_id)) {
            n_skipped++;
            continue;
        }
        int dup = 0; /* the same resolved config listed twice in a sweep runs once */
        for (int k = 0; k < n_todo && !dup; k++) dup = !strcmp(plan->runs[todo[k]].run_id, plan->runs[i].run_id);
        if (dup) {
            n_dup++;
            continue;
        }
        todo[n_todo++] = i;
    }
    int threads = o->threads > 0 ? o->threads : lra_threads();

    if (o->dry_run) {
        printf("plan %s: %d runs", plan->name, plan->n_runs);
        if (shard_n > 1) printf(", shard %d/%d", o->shard_i, shard_n);
        if (n_skipped) printf(", %d already done in %s", n_skipped, runs_csv);
        if (n_dup) printf(", %d duplicates of other runs dropped", n_dup);
        printf(", %d to run, %d threads each, results in %s\n", n_todo, threads, out);
        printf("%-4s %-16s %-12s %-32s %8s %6s %6s %6s\n", "#", "run_id", "task", "attention", "seq_len", "seed",
               "steps", "batch");
        for (int k = 0; k < n_todo; k++) {
            const run_cfg *c = &plan->runs[todo[k]];
            printf("%-4d %-16s %-12s %-32s %8d %6d %6d %6d\n", todo[k], c->run_id, c->task.name, c->attn_label,
                   c->task.seq_len, c->train.seed, c->train.steps, c->train.batch_size);
        }
        for (int i = 0; i < n_done; i++) free(done[i]);
        free(done);
        free(todo);
        return 0;
    }

    char runs_dir[1100];
    snprintf(runs_dir, sizeof runs_dir, "%s/runs", out);
    if (mkdir_p(runs_dir)) {
        fprintf(stderr, "lra: error: cannot create %s: %s\n", runs_dir, strerror(errno));
        free(todo);
        return 2;
    }
    if (resume) {
        char **redo = xcalloc((size_t)(n_todo ? n_todo : 1), sizeof(char *));
        for (int k = 0; k < n_todo; k++) redo[k] = plan->runs[todo[k]].run_id;
        drop_rows(runs_csv, redo, n_todo);
        drop_rows(curves_csv, redo, n_todo);
        free(redo);
    }

    fprintf(stderr, "lra: %s: %d runs to do", plan->name, n_todo);
    if (n_skipped) fprintf(stderr, " (%d finished runs skipped)", n_skipped);
    if (n_dup) fprintf(stderr, " (%d duplicates of other runs dropped)", n_dup);
    fprintf(stderr, ", %d threads each; results in %s\n", threads, out);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    int n_bad = 0, interrupted = 0;
    for (int k = 0; k < n_todo && !g_interrupted; k++) {
        const run_cfg *c = &plan->runs[todo[k]];
        char run_dir[1200], label[256];
        snprintf(run_dir, sizeof run_dir, "%s/%s", runs_dir, c->run_id);
        mkdir_p(run_dir);
        write_config(run_dir, c);
        snprintf(label, sizeof label, "[%d/%d] %s n=%d seed=%d", k + 1, n_todo, c->attn_label, c->task.seq_len,
                 c->train.seed);
        fprintf(stderr, "lra: %s: run %s\n", label, c->run_id);
        /* the run resumes from its checkpoint when one exists (train.checkpoint_every) */
        char ckpt_dir[1100], ckpt[1200];
        snprintf(ckpt_dir, sizeof ckpt_dir, "%s/checkpoints", out);
        snprintf(ckpt, sizeof ckpt, "%s/%s.ckpt", ckpt_dir, c->run_id);
        if ((c->train.checkpoint_every > 0 || c->train.save_model) && mkdir_p(ckpt_dir))
            fprintf(stderr, "lra: warning: cannot create %s: %s\n", ckpt_dir, strerror(errno));
        run_report rep;
        long long rss = 0;
        if (run_child(c, o, run_dir, curves_csv, ckpt, label, fault_for(todo[k]), &rep, &rss)) {
            interrupted = 1;
            break;
        }
        if (write_row(runs_csv, c, &rep, rss, threads, err, sizeof err)) {
            fprintf(stderr, "lra: error: %s\n", err);
            n_bad++;
            continue;
        }
        int ok = !strcmp(rep.status, STATUS_OK);
        n_bad += !ok;
        char rssb[32];
        if (ok && !strcmp(rep.metric, "bpb"))
            printf("%-8s %-32s seq_len %-6d seed %-3d test %6.4f bpb  best val %6.4f bpb @ %-6d  %9.0f tok/s  "
                   "peak RSS %s  %.1f s\n",
                   rep.status, c->attn_label, c->task.seq_len, c->train.seed, rep.test, rep.best_val, rep.best_step,
                   rep.tokens_per_s, lra_fmt_bytes((double)rss, rssb, sizeof rssb), rep.wall_s);
        else if (ok)
            printf("%-8s %-32s seq_len %-6d seed %-3d test %6.2f%%  best val %6.2f%% @ %-6d majority %5.2f%%  %9.0f tok/s  "
                   "peak RSS %s  %.1f s\n",
                   rep.status, c->attn_label, c->task.seq_len, c->train.seed, 100 * rep.test, 100 * rep.best_val,
                   rep.best_step, 100 * rep.majority, rep.tokens_per_s, lra_fmt_bytes((double)rss, rssb, sizeof rssb),
                   rep.wall_s);
        else
            printf("%-8s %-32s seq_len %-6d seed %-3d %s\n", rep.status, c->attn_label, c->task.seq_len,
                   c->train.seed, rep.reason);
        fflush(stdout);
    }
    if (g_interrupted) interrupted = 1;
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);

    if (!o->no_plot && access(runs_csv, F_OK) == 0) {
        if (plot_results(out, 1, err, sizeof err)) fprintf(stderr, "lra: warning: charts: %s\n", err);
    }
    if (o->no_plot) printf("results: %s (runs.csv, curves.csv; charts and summary.md: lra plot %s)\n", out, out);
    else printf("results: %s (runs.csv, curves.csv, summary.md, charts)\n", out);
    for (int i = 0; i < n_done; i++) free(done[i]);
    free(done);
    free(todo);
    if (interrupted) {
        fprintf(stderr, "lra: interrupted; finished rows are in %s, continue with --resume\n", runs_csv);
        return 130;
    }
    return n_bad ? 1 : 0;
}
