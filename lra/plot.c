/* plot.c - summary.md and gnuplot charts from a results directory's runs.csv / curves.csv.
 *
 * Everything is derived from the CSV files alone (columns found by name, see results.h), so
 * `lra plot DIR` works on results copied from a cluster or written by an older sweep.
 *
 * Grouping: ok runs are grouped by (task, label, seq_len); when runs.csv holds one task the
 * series is called by its label, otherwise "task: label". Across seeds each group gets the mean
 * and the sample standard deviation (n - 1 in the denominator; 0 for a single seed) of the test
 * metric, best_val, tokens_per_s, peak_rss (MiB) and step_ms. Accuracy (a fraction in the CSV)
 * is shown in percent; bits per byte as is. When a run_id appears on several rows (a run redone
 * after a failure), the last row wins.
 *
 * Outputs (all written through a temporary file and rename, so a reader never sees half a file):
 *   accuracy.dat/.gp, memory.dat/.gp, speed.dat/.gp, curves.dat/.gp (when curves.csv has points),
 *   summary.md, and accuracy/memory/speed/curves .png and .svg when gnuplot is on PATH.
 * The .dat files hold one gnuplot index block per series (or per run for curves), each opened
 * by a "# series: NAME" comment; the .gp scripts name the series in single-quoted gnuplot
 * strings (quotes doubled) with enhanced text off, so labels like "softmax(impl=x,y=z)" or ones
 * with '_' and '^' print verbatim. Each .gp runs on its own: `cd DIR && gnuplot accuracy.gp`.
 */
#include "plot.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"
#include "csv.h"
#include "bench.h"
#include "published.h"
#include "results.h"

/* Per-run quantities, already in display units. */
enum { Q_TEST, Q_BEST, Q_TPS, Q_RSS, Q_STEP, Q_MAJ, NQ };

typedef struct {
    int row;       /* row in the runs table */
    int series;    /* index into series, -1 when the row has no usable label */
    long seq_len;  /* 0 when missing or not a positive integer */
    int ok;        /* status == "ok" */
    double v[NQ];  /* NaN when missing */
} run_t;

typedef struct {
    const char *task, *label; /* borrowed from the table */
    char *display;            /* label, or "task: label" when runs.csv holds several tasks */
    const char *metric;       /* first non-empty metric of its rows ("" when unknown) */
} series_t;

typedef struct {
    int n;
    double mean, std;
} stat_t;

typedef struct {
    double *step, *val;
    int n, cap;
    char *key, *title;
    char *group;      /* task, label and seq_len: runs of a group share a colour */
} curve_t;

typedef struct {
    const char *dir;
    char *runs_path;
    csv_table t;
    int col[RUNS_N_COLUMNS];
    run_t *r;
    int nr;
    series_t *s;
    int ns;
    long *seq;
    int nseq;
    const char *name;
    int multi_task;
    int n_acc, n_other; /* series by metric kind, for headings */
} ctx_t;

typedef struct {
    const char *base;  /* "accuracy", ... */
    const char *alt;   /* alt text for the image link */
    int written;       /* .gp written */
    int rendered;      /* .png and .svg rendered */
} chart_t;

enum { CH_ACCURACY, CH_MEMORY, CH_SPEED, CH_CURVES, N_CHARTS };

/* ---------------------------------------------------------------------------------------- */
/* Small helpers                                                                              */

static char *path_join(const char *dir, const char *name) {
    size_t ld = strlen(dir), ln = strlen(name);
    int slash = ld > 0 && dir[ld - 1] != '/';
    char *p = xmalloc(ld + (size_t)slash + ln + 1);
    memcpy(p, dir, ld);
    if (slash) p[ld] = '/';
    memcpy(p + ld + (size_t)slash, name, ln + 1);
    return p;
}

static const char *cell(const csv_table *t, int r, int c) {
    return c < 0 ? "" : t->rows[r][c];
}

/* Parse a number; empty (or blank) is "missing" (NaN, returns 0); garbage returns -1. */
static int parse_num(const char *s, double *out) {
    while (*s == ' ' || *s == '\t') s++;
    *out = NAN;
    if (!*s) return 0;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    while (*end == ' ' || *end == '\t') end++;
    if (end == s || *end) return -1;
    *out = v;
    return 0;
}

/* Physical line of table row r, counting embedded newlines of earlier rows. */
static int row_line(const csv_table *t, int r) {
    int line = 1;
    for (int i = 0; i < r; i++) {
        line++;
        for (int c = 0; c < t->n_cols; c++)
            for (const char *p = t->rows[i][c]; *p; p++) line += *p == '\n';
    }
    return line;
}

static int is_accuracy(const char *metric) {
    return strcmp(metric, "accuracy") == 0;
}

static void fmt_metric(char *buf, size_t n, double v, int acc) {
    snprintf(buf, n, acc ? "%.2f" : "%.4f", v);
}

/* gnuplot single-quoted string: no escapes except '' for a quote; control characters -> space. */
static void gp_str(FILE *f, const char *s) {
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'') fputs("''", f);
        else if ((unsigned char)*s < 32) fputc(' ', f);
        else fputc(*s, f);
    }
    fputc('\'', f);
}

/* Text on one line (for .dat comments and markdown): control characters -> space. In a markdown
 * table, '|' is escaped. */
static void put_line(FILE *f, const char *s, int md_table) {
    for (; *s; s++) {
        if ((unsigned char)*s < 32) fputc(' ', f);
        else if (*s == '|' && md_table) fputs("\\|", f);
        else fputc(*s, f);
    }
}

/* Markdown code span (labels contain '_', '*', parentheses...): backticks become quotes. */
static void md_code(FILE *f, const char *s, int md_table) {
    fputc('`', f);
    for (; *s; s++) {
        if (*s == '`') fputc('\'', f);
        else if ((unsigned char)*s < 32) fputc(' ', f);
        else if (*s == '|' && md_table) fputs("\\|", f);
        else fputc(*s, f);
    }
    fputc('`', f);
}

/* Output file written to NAME.tmpPID and renamed into place on success. */
typedef struct {
    FILE *f;
    char *path, *tmp;
} outf;

static int of_open(outf *o, const char *dir, const char *name, char *err, size_t errlen) {
    o->path = path_join(dir, name);
    size_t n = strlen(o->path) + 32;
    o->tmp = xmalloc(n);
    snprintf(o->tmp, n, "%s.tmp%ld", o->path, (long)getpid());
    o->f = fopen(o->tmp, "w");
    if (!o->f) {
        lra_errorf(err, errlen, "%s: cannot create: %s", o->tmp, strerror(errno));
        free(o->path);
        free(o->tmp);
        o->path = o->tmp = NULL;
        return -1;
    }
    return 0;
}

static int of_close(outf *o, char *err, size_t errlen) {
    int rc = 0;
    int bad = ferror(o->f);
    int e = errno;
    if (fclose(o->f) != 0) {
        bad = 1;
        e = errno;
    }
    if (bad) {
        rc = lra_errorf(err, errlen, "%s: write failed: %s", o->tmp, strerror(e));
        unlink(o->tmp);
    } else if (rename(o->tmp, o->path) < 0) {
        rc = lra_errorf(err, errlen, "%s: cannot rename into place: %s", o->path, strerror(errno));
        unlink(o->tmp);
    }
    free(o->path);
    free(o->tmp);
    o->f = NULL;
    o->path = o->tmp = NULL;
    return rc;
}

static int cmp_long(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

/* ---------------------------------------------------------------------------------------- */
/* Loading runs.csv                                                                           */

static const char *const numeric_cols[NQ] = {"test", "best_val", "tokens_per_s", "peak_rss",
                                             "step_ms", "majority"};

static int load_runs(ctx_t *x, char *err, size_t errlen) {
    x->runs_path = path_join(x->dir, "runs.csv");
    if (csv_read(x->runs_path, &x->t, err, errlen) < 0) return -1;
    const csv_table *t = &x->t;
    if (t->n_rows == 0) return lra_errorf(err, errlen, "%s:1: empty file, no header line", x->runs_path);
    for (int c = 0; c < RUNS_N_COLUMNS; c++) x->col[c] = csv_col(t, runs_columns[c]);
    const int required[] = {COL_RUNS_label, COL_RUNS_seq_len, COL_RUNS_status, COL_RUNS_test};
    for (size_t i = 0; i < LRA_ARRAY_LEN(required); i++)
        if (x->col[required[i]] < 0)
            return lra_errorf(err, errlen, "%s:1: no column '%s' in the header", x->runs_path,
                              runs_columns[required[i]]);
    const int qcol[NQ] = {x->col[COL_RUNS_test], x->col[COL_RUNS_best_val],
                          x->col[COL_RUNS_tokens_per_s], x->col[COL_RUNS_peak_rss],
                          x->col[COL_RUNS_step_ms], x->col[COL_RUNS_majority]};

    /* Tasks: several -> series are named "task: label". */
    const char *first_task = NULL;
    for (int r = 1; r < t->n_rows; r++) {
        const char *task = cell(t, r, x->col[COL_RUNS_task]);
        if (!first_task) first_task = task;
        else if (strcmp(first_task, task) != 0) x->multi_task = 1;
    }

    x->r = xcalloc((size_t)LRA_MAX(t->n_rows, 1), sizeof *x->r);
    x->s = xcalloc((size_t)LRA_MAX(t->n_rows, 1), sizeof *x->s);
    x->seq = xcalloc((size_t)LRA_MAX(t->n_rows, 1), sizeof *x->seq);
    for (int r = 1; r < t->n_rows; r++) {
        const char *id = cell(t, r, x->col[COL_RUNS_run_id]);
        const char *status = cell(t, r, x->col[COL_RUNS_status]);
        int ok = strcmp(status, "ok") == 0;
        if (!x->name || !x->name[0]) x->name = cell(t, r, x->col[COL_RUNS_name]);

        /* Later rows of the same run_id replace earlier ones (in place, keeping the order). */
        int slot = x->nr;
        if (id[0])
            for (int i = 0; i < x->nr; i++)
                if (strcmp(cell(t, x->r[i].row, x->col[COL_RUNS_run_id]), id) == 0) slot = i;
        run_t *u = &x->r[slot];
        if (slot == x->nr) x->nr++;
        memset(u, 0, sizeof *u);
        u->row = r;
        u->ok = ok;

        const char *seq_s = cell(t, r, x->col[COL_RUNS_seq_len]);
        char *end;
        long L = strtol(seq_s, &end, 10);
        if (end != seq_s && !*end && L > 0) u->seq_len = L;
        else if (ok)
            return lra_errorf(err, errlen, "%s:%d: column 'seq_len': '%s' is not a positive integer",
                              x->runs_path, row_line(t, r), seq_s);

        const char *task = cell(t, r, x->col[COL_RUNS_task]);
        const char *label = cell(t, r, x->col[COL_RUNS_label]);
        if (!label[0]) label = cell(t, r, x->col[COL_RUNS_attention]);
        if (!label[0]) label = "(no label)";
        int s = 0;
        while (s < x->ns && !(strcmp(x->s[s].label, label) == 0 && strcmp(x->s[s].task, task) == 0))
            s++;
        if (s == x->ns) {
            x->s[s].task = task;
            x->s[s].label = label;
            x->s[s].metric = "";
            if (x->multi_task) {
                size_t n = strlen(task) + strlen(label) + 3;
                x->s[s].display = xmalloc(n);
                snprintf(x->s[s].display, n, "%s: %s", task, label);
            } else {
                x->s[s].display = xstrdup(label);
            }
            x->ns++;
        }
        u->series = s;
        const char *metric = cell(t, r, x->col[COL_RUNS_metric]);
        if (!x->s[s].metric[0]) x->s[s].metric = metric;
        int acc = is_accuracy(metric[0] ? metric : x->s[s].metric);

        for (int q = 0; q < NQ; q++) {
            const char *v = cell(t, r, qcol[q]);
            if (parse_num(v, &u->v[q]) < 0) {
                if (ok)
                    return lra_errorf(err, errlen, "%s:%d: column '%s': '%s' is not a number",
                                      x->runs_path, row_line(t, r), numeric_cols[q], v);
                u->v[q] = NAN;
            }
        }
        if (acc) {
            u->v[Q_TEST] *= 100.0;
            u->v[Q_BEST] *= 100.0;
        }
        u->v[Q_MAJ] *= 100.0;
        u->v[Q_RSS] /= 1024.0 * 1024.0;
    }
    if (!x->name || !x->name[0]) {
        const char *b = strrchr(x->dir, '/');
        x->name = b && b[1] ? b + 1 : x->dir;
    }
    for (int i = 0; i < x->nr; i++) {
        if (x->r[i].seq_len <= 0) continue;
        int found = 0;
        for (int q = 0; q < x->nseq; q++) found |= x->seq[q] == x->r[i].seq_len;
        if (!found) x->seq[x->nseq++] = x->r[i].seq_len;
    }
    qsort(x->seq, (size_t)x->nseq, sizeof *x->seq, cmp_long);
    for (int s = 0; s < x->ns; s++) {
        if (is_accuracy(x->s[s].metric)) x->n_acc++;
        else if (x->s[s].metric[0]) x->n_other++;
    }
    return 0;
}

/* Mean and sample std of quantity k over the ok runs of (series s, seq_len L), in run order. */
static stat_t group_stat(const ctx_t *x, int s, long L, int k) {
    stat_t st = {0, NAN, NAN};
    double sum = 0;
    for (int i = 0; i < x->nr; i++) {
        const run_t *u = &x->r[i];
        if (u->ok && u->series == s && u->seq_len == L && isfinite(u->v[k])) {
            sum += u->v[k];
            st.n++;
        }
    }
    if (st.n == 0) return st;
    st.mean = sum / st.n;
    double ss = 0;
    for (int i = 0; i < x->nr; i++) {
        const run_t *u = &x->r[i];
        if (u->ok && u->series == s && u->seq_len == L && isfinite(u->v[k]))
            ss += (u->v[k] - st.mean) * (u->v[k] - st.mean);
    }
    st.std = st.n > 1 ? sqrt(ss / (st.n - 1)) : 0.0;
    return st;
}

/* ---------------------------------------------------------------------------------------- */
/* gnuplot scripts                                                                            */

static void gp_header(FILE *f, const char *base, const char *what) {
    fprintf(f,
            "# %s.gp - %s. Written by `lra plot` from the CSV files in this directory.\n"
            "# Render: cd into this directory, then `gnuplot %s.gp` -> %s.png and %s.svg.\n"
            "set encoding utf8\n"
            "if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) { "
            "set terminal pngcairo noenhanced size 960,720 "
            "} else { set terminal png noenhanced size 960,720 }\n"
            "set output '%s.png'\n"
            "set grid\n"
            "set key outside below center horizontal\n",
            base, what, base, base, base, base);
}

static void gp_footer(FILE *f, const char *base) {
    fprintf(f,
            "set terminal svg noenhanced size 960,720 dynamic background rgb 'white'\n"
            "set output '%s.svg'\n"
            "replot\n"
            "unset output\n",
            base);
}

/* One chart of a per-(series, seq_len) quantity against seq_len. Writes BASE.dat and BASE.gp;
 * returns 0 (with *written = 0 when no ok run has the quantity), or -1 with err. */
static int write_seq_chart(const ctx_t *x, const char *base, int k, const char *what,
                           const char *ylabel, int logy_ok, int *written, char *err, size_t errlen) {
    *written = 0;
    /* Which seq_lens and series have data; the range of the means for the log-y decision. */
    int nblocks = 0, nx = 0;
    long xs[x->nseq > 0 ? x->nseq : 1];
    double lo = INFINITY, hi = -INFINITY;
    for (int q = 0; q < x->nseq; q++) {
        int any = 0;
        for (int s = 0; s < x->ns; s++) {
            stat_t st = group_stat(x, s, x->seq[q], k);
            if (st.n) {
                any = 1;
                lo = fmin(lo, st.mean);
                hi = fmax(hi, st.mean);
            }
        }
        if (any) xs[nx++] = x->seq[q];
    }
    if (nx == 0) return 0;

    char dat[64], gp[64];
    snprintf(dat, sizeof dat, "%s.dat", base);
    snprintf(gp, sizeof gp, "%s.gp", base);
    outf o;
    if (of_open(&o, x->dir, dat, err, errlen) < 0) return -1;
    fprintf(o.f, "# %s: %s, mean and sample std over seeds (ok runs of runs.csv)\n", dat, what);
    fprintf(o.f, "# one index block per series; columns: seq_len mean std n%s\n",
            k == Q_TEST ? " best_val_mean best_val_std best_val_n" : "");
    int block_series[x->ns > 0 ? x->ns : 1];
    for (int s = 0; s < x->ns; s++) {
        int has = 0;
        for (int q = 0; q < x->nseq && !has; q++) has = group_stat(x, s, x->seq[q], k).n > 0;
        if (!has) continue;
        fprintf(o.f, "%s# series: ", nblocks ? "\n\n" : "\n");
        put_line(o.f, x->s[s].display, 0);
        fputc('\n', o.f);
        for (int q = 0; q < x->nseq; q++) {
            stat_t st = group_stat(x, s, x->seq[q], k);
            if (!st.n) continue;
            fprintf(o.f, "%ld %.10g %.10g %d", x->seq[q], st.mean, st.std, st.n);
            if (k == Q_TEST) {
                stat_t b = group_stat(x, s, x->seq[q], Q_BEST);
                if (b.n) fprintf(o.f, " %.10g %.10g %d", b.mean, b.std, b.n);
                else fprintf(o.f, " NaN NaN 0");
            }
            fputc('\n', o.f);
        }
        block_series[nblocks++] = s;
    }
    if (of_close(&o, err, errlen) < 0) return -1;

    if (of_open(&o, x->dir, gp, err, errlen) < 0) return -1;
    FILE *f = o.f;
    gp_header(f, base, what);
    fputs("set title ", f);
    {
        size_t n = strlen(x->name) + strlen(what) + 4;
        char *title = xmalloc(n);
        snprintf(title, n, "%s: %s", x->name, what);
        gp_str(f, title);
        free(title);
    }
    fputs("\nset xlabel 'sequence length (tokens)'\nset ylabel ", f);
    gp_str(f, ylabel);
    fputc('\n', f);
    int logx = nx > 2;
    int logy = logy_ok && lo > 0 && hi / lo >= 8.0;
    if (logx) fputs("set logscale x 2\n", f);
    if (logy) fputs("set logscale y\n", f);
    fputs("set xtics (", f);
    for (int i = 0; i < nx; i++) fprintf(f, "%s'%ld' %ld", i ? ", " : "", xs[i], xs[i]);
    fputs(")\n", f);
    double x0 = (double)xs[0], x1 = (double)xs[nx - 1];
    if (logx) fprintf(f, "set xrange [%g:%g]\n", x0 / 1.25, x1 * 1.25);
    else if (nx == 1) fprintf(f, "set xrange [%g:%g]\n", x0 * 0.5, x1 * 1.5);
    else fprintf(f, "set xrange [%g:%g]\n", x0 - 0.08 * (x1 - x0), x1 + 0.08 * (x1 - x0));
    if (!logy) fputs("set offsets 0, 0, graph 0.05, graph 0.05\n", f);
    /* On a log y axis, clip error bars that would reach zero or below. */
    const char *using = logy ? "1:2:($2-$3 > 0 ? $2-$3 : $2):($2+$3)" : "1:2:3";
    fputs("plot ", f);
    for (int b = 0; b < nblocks; b++) {
        if (b == 0) fprintf(f, "'%s' index 0", dat);
        else fprintf(f, ", \\\n     '' index %d", b);
        fprintf(f, " using %s with yerrorlines lw 2 pt 7 title ", using);
        gp_str(f, x->s[block_series[b]].display);
    }
    fputc('\n', f);
    gp_footer(f, base);
    if (of_close(&o, err, errlen) < 0) return -1;
    *written = 1;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* curves.csv                                                                                 */

static void curve_push(curve_t *c, double step, double val) {
    if (c->n > 0 && step <= c->step[c->n - 1]) c->n = 0; /* the run restarted: keep the new try */
    if (c->n == c->cap) {
        c->cap = c->cap ? 2 * c->cap : 32;
        c->step = xrealloc(c->step, (size_t)c->cap * sizeof *c->step);
        c->val = xrealloc(c->val, (size_t)c->cap * sizeof *c->val);
    }
    c->step[c->n] = step;
    c->val[c->n++] = val;
}

/* Is the metric of a curve accuracy? From its run's row, else its label's series, else the
 * experiment's only metric kind. */
static int curve_is_accuracy(const ctx_t *x, const char *run_id, const char *label) {
    if (run_id[0])
        for (int i = 0; i < x->nr; i++)
            if (strcmp(cell(&x->t, x->r[i].row, x->col[COL_RUNS_run_id]), run_id) == 0) {
                const char *m = cell(&x->t, x->r[i].row, x->col[COL_RUNS_metric]);
                if (m[0]) return is_accuracy(m);
            }
    for (int s = 0; s < x->ns; s++)
        if (strcmp(x->s[s].label, label) == 0 && x->s[s].metric[0]) return is_accuracy(x->s[s].metric);
    return x->n_acc > 0 && x->n_other == 0;
}

/* Writes curves.dat/.gp from DIR/curves.csv. A missing or unreadable curves.csv only skips the
 * chart (with a warning when it is malformed). */
static int write_curves(const ctx_t *x, int *written, char *err, size_t errlen) {
    *written = 0;
    char *path = path_join(x->dir, "curves.csv");
    if (access(path, F_OK) != 0) {
        free(path);
        return 0;
    }
    csv_table t;
    char cerr[512];
    if (csv_read(path, &t, cerr, sizeof cerr) < 0) {
        fprintf(stderr, "lra: warning: %s; skipping the curves chart\n", cerr);
        free(path);
        return 0;
    }
    int c_id = csv_col(&t, "run_id"), c_label = csv_col(&t, "label"), c_task = csv_col(&t, "task");
    int c_seq = csv_col(&t, "seq_len"), c_seed = csv_col(&t, "seed"), c_step = csv_col(&t, "step");
    int c_val = csv_col(&t, "val");
    if (c_step < 0 || c_val < 0) {
        fprintf(stderr, "lra: warning: %s:1: no '%s' column; skipping the curves chart\n", path,
                c_step < 0 ? "step" : "val");
        csv_free(&t);
        free(path);
        return 0;
    }
    int multi_task = 0;
    for (int r = 2; r < t.n_rows; r++) multi_task |= strcmp(cell(&t, r, c_task), cell(&t, 1, c_task)) != 0;

    curve_t *cv = xcalloc((size_t)LRA_MAX(t.n_rows, 1), sizeof *cv);
    int *acc = xcalloc((size_t)LRA_MAX(t.n_rows, 1), sizeof *acc);
    int nc = 0, any_acc = 0, any_other = 0;
    for (int r = 1; r < t.n_rows; r++) {
        double step, val;
        if (parse_num(cell(&t, r, c_step), &step) < 0 || parse_num(cell(&t, r, c_val), &val) < 0 ||
            !isfinite(step) || !isfinite(val))
            continue;
        const char *id = cell(&t, r, c_id), *label = cell(&t, r, c_label);
        const char *seq = cell(&t, r, c_seq), *seed = cell(&t, r, c_seed), *task = cell(&t, r, c_task);
        size_t kn = strlen(id) + strlen(task) + strlen(label) + strlen(seq) + strlen(seed) + 8;
        char *key = xmalloc(kn);
        if (id[0]) snprintf(key, kn, "%s", id);
        else snprintf(key, kn, "%s\x1f%s\x1f%s\x1f%s", task, label, seq, seed);
        int c = 0;
        while (c < nc && strcmp(cv[c].key, key) != 0) c++;
        if (c == nc) {
            cv[c].key = key;
            size_t tn = strlen(task) + strlen(label) + strlen(seq) + strlen(seed) + 32;
            cv[c].title = xmalloc(tn);
            snprintf(cv[c].title, tn, "%s%s%s L=%s seed=%s", multi_task ? task : "",
                     multi_task ? ": " : "", label[0] ? label : "(no label)", seq, seed);
            size_t gn = strlen(task) + strlen(label) + strlen(seq) + 4;
            cv[c].group = xmalloc(gn);
            snprintf(cv[c].group, gn, "%s\x1f%s\x1f%s", task, label, seq);
            acc[c] = curve_is_accuracy(x, id, label);
            any_acc |= acc[c];
            any_other |= !acc[c];
            nc++;
        } else {
            free(key);
        }
        curve_push(&cv[c], step, acc[c] ? 100.0 * val : val);
    }

    int rc = 0, nb = 0;
    for (int c = 0; c < nc; c++) nb += cv[c].n > 0;
    if (nb > 0) {
        outf o;
        rc = of_open(&o, x->dir, "curves.dat", err, errlen);
        if (rc == 0) {
            fputs("# curves.dat: validation metric vs training step (curves.csv), accuracy in %\n"
                  "# one index block per run; columns: step val\n",
                  o.f);
            int b = 0;
            for (int c = 0; c < nc; c++) {
                if (!cv[c].n) continue;
                fprintf(o.f, "%s# series: ", b++ ? "\n\n" : "\n");
                put_line(o.f, cv[c].title, 0);
                fputc('\n', o.f);
                for (int i = 0; i < cv[c].n; i++) fprintf(o.f, "%.10g %.10g\n", cv[c].step[i], cv[c].val[i]);
            }
            rc = of_close(&o, err, errlen);
        }
        if (rc == 0) rc = of_open(&o, x->dir, "curves.gp", err, errlen);
        if (rc == 0) {
            const char *ylabel = any_acc && !any_other ? "validation accuracy (%)"
                                 : any_acc            ? "validation metric (accuracy in %)"
                                                      : "validation metric";
            gp_header(o.f, "curves", "validation metric vs training step, one line per run");
            fputs("set title ", o.f);
            size_t n = strlen(x->name) + 64;
            char *title = xmalloc(n);
            snprintf(title, n, "%s: validation metric vs training step", x->name);
            gp_str(o.f, title);
            free(title);
            fputs("\nset xlabel 'training step'\nset ylabel ", o.f);
            gp_str(o.f, ylabel);
            fputs("\nplot ", o.f);
            int bi = 0;
            for (int c = 0; c < nc; c++) {
                if (!cv[c].n) continue;
                /* colour by (task, label, seq_len) in order of appearance, dash type by seed */
                int colour = 0, dash = 0, first = c;
                for (int j = 0; j < c; j++)
                    if (cv[j].n && strcmp(cv[j].group, cv[c].group) == 0) {
                        if (first == c) first = j;
                        dash++;
                    }
                for (int j = 0; j < first; j++) {
                    if (!cv[j].n) continue;
                    int is_first = 1;
                    for (int k = 0; k < j && is_first; k++)
                        is_first = !(cv[k].n && strcmp(cv[k].group, cv[j].group) == 0);
                    colour += is_first;
                }
                if (bi == 0) fprintf(o.f, "'curves.dat' index 0");
                else fprintf(o.f, ", \\\n     '' index %d", bi);
                fprintf(o.f, " using 1:2 with linespoints lc %d dt %d lw 1.5 pt 7 ps 0.6 title ",
                        colour + 1, dash % 5 + 1);
                gp_str(o.f, cv[c].title);
                bi++;
            }
            fputc('\n', o.f);
            gp_footer(o.f, "curves");
            rc = of_close(&o, err, errlen);
            if (rc == 0) *written = 1;
        }
    }
    for (int c = 0; c < nc; c++) {
        free(cv[c].key);
        free(cv[c].title);
        free(cv[c].group);
        free(cv[c].step);
        free(cv[c].val);
    }
    free(cv);
    free(acc);
    csv_free(&t);
    free(path);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* Rendering                                                                                  */

/* Full path of an executable on PATH into buf, or 0 when absent. */
static int find_on_path(const char *prog, char *buf, size_t n) {
    const char *path = getenv("PATH");
    if (!path) path = "/usr/local/bin:/usr/bin:/bin";
    const char *p = path;
    for (;;) {
        const char *e = strchr(p, ':');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (len == 0) snprintf(buf, n, "./%s", prog);
        else snprintf(buf, n, "%.*s/%s", (int)len, p, prog);
        struct stat st;
        if (stat(buf, &st) == 0 && S_ISREG(st.st_mode) && access(buf, X_OK) == 0) return 1;
        if (!e) break;
        p = e + 1;
    }
    return 0;
}

/* Run `gnuplot BASE.gp` inside dir, stdout to /dev/null and stderr to log_fd. Returns the wait
 * status, or -1 when fork/wait failed. */
static int run_gnuplot(const char *gnuplot, const char *dir, const char *script, int log_fd) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        if (chdir(dir) < 0) _exit(126);
        int null_fd = open("/dev/null", O_RDWR);
        if (null_fd >= 0) {
            dup2(null_fd, 0);
            dup2(null_fd, 1);
        }
        if (log_fd >= 0) dup2(log_fd, 2);
        char *argv[] = {(char *)"gnuplot", (char *)script, NULL};
        execv(gnuplot, argv);
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return -1;
    }
    return status;
}

static void render(const char *dir, chart_t *ch, int n_charts) {
    char gnuplot[4096];
    if (!find_on_path("gnuplot", gnuplot, sizeof gnuplot)) {
        char names[256] = "";
        for (int i = 0; i < n_charts; i++)
            if (ch[i].written) {
                size_t l = strlen(names);
                snprintf(names + l, sizeof names - l, "%s%s.gp", l ? ", " : "", ch[i].base);
            }
        fprintf(stderr, "lra: warning: gnuplot not found; wrote %s in %s, install gnuplot-nox to render\n",
                names, dir);
        return;
    }
    char *log_path = path_join(dir, "gnuplot.log");
    int log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int failed = 0;
    for (int i = 0; i < n_charts; i++) {
        if (!ch[i].written) continue;
        char script[64];
        snprintf(script, sizeof script, "%s.gp", ch[i].base);
        int st = run_gnuplot(gnuplot, dir, script, log_fd);
        if (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0) {
            ch[i].rendered = 1;
            continue;
        }
        failed = 1;
        if (st == -1)
            fprintf(stderr, "lra: warning: cannot run gnuplot on %s/%s: %s\n", dir, script, strerror(errno));
        else if (WIFEXITED(st))
            fprintf(stderr, "lra: warning: gnuplot failed on %s/%s (exit status %d); see %s\n", dir,
                    script, WEXITSTATUS(st), log_path);
        else
            fprintf(stderr, "lra: warning: gnuplot was killed by signal %d on %s/%s\n",
                    WIFSIGNALED(st) ? WTERMSIG(st) : 0, dir, script);
    }
    if (log_fd >= 0) close(log_fd);
    if (!failed) unlink(log_path); /* warnings of successful renders are not worth keeping */
    free(log_path);
}

/* ---------------------------------------------------------------------------------------- */
/* summary.md                                                                                 */

static void md_cell_metric(FILE *f, const ctx_t *x, int s, long L, int k) {
    stat_t st = group_stat(x, s, L, k);
    if (st.n) {
        int acc = is_accuracy(x->s[s].metric);
        char m[64], d[64];
        fmt_metric(m, sizeof m, st.mean, acc);
        fmt_metric(d, sizeof d, st.std, acc);
        fprintf(f, " %s ± %s (%d) |", m, d, st.n);
        return;
    }
    /* No ok run: say what happened to the runs of this cell, if any. */
    const char *seen[16];
    int cnt[16], ns = 0;
    for (int i = 0; i < x->nr; i++) {
        const run_t *u = &x->r[i];
        if (u->series != s || u->seq_len != L || u->ok) continue;
        const char *status = cell(&x->t, u->row, x->col[COL_RUNS_status]);
        int j = 0;
        while (j < ns && strcmp(seen[j], status) != 0) j++;
        if (j == ns && ns < 16) {
            seen[ns] = status;
            cnt[ns++] = 0;
        }
        if (j < ns) cnt[j]++;
    }
    fputs(" —", f);
    for (int j = 0; j < ns; j++) {
        fprintf(f, "%s%d ", j ? ", " : " (", cnt[j]);
        put_line(f, seen[j][0] ? seen[j] : "no status", 1);
    }
    fputs(ns ? ") |" : " |", f);
}

static void md_metric_table(FILE *f, const ctx_t *x, int k, const char *what) {
    const char *unit = x->n_acc && !x->n_other   ? "accuracy (%)"
                       : x->n_other && !x->n_acc ? "metric (bits per byte for lm, lower is better)"
                                                 : "metric (accuracy in %, bits per byte as is)";
    if (x->n_other && !x->n_acc) {
        int all_bpb = 1;
        for (int s = 0; s < x->ns; s++)
            if (x->s[s].metric[0] && strcmp(x->s[s].metric, "bpb") != 0) all_bpb = 0;
        if (all_bpb) unit = "bits per byte (lower is better)";
        else unit = "metric";
    }
    fprintf(f, "## %s %s\n\n| label |", what, unit);
    for (int q = 0; q < x->nseq; q++) fprintf(f, " seq_len %ld |", x->seq[q]);
    fputs("\n| --- |", f);
    for (int q = 0; q < x->nseq; q++) fputs(" ---: |", f);
    fputc('\n', f);
    for (int s = 0; s < x->ns; s++) {
        fputs("| ", f);
        md_code(f, x->s[s].display, 1);
        fputs(" |", f);
        for (int q = 0; q < x->nseq; q++) md_cell_metric(f, x, s, x->seq[q], k);
        fputc('\n', f);
    }
    fputc('\n', f);
}

static void md_majority(FILE *f, const ctx_t *x) {
    /* One line per task (one line in the usual single-task case). */
    for (int s0 = 0; s0 < x->ns; s0++) {
        int first = 1;
        for (int j = 0; j < s0; j++) first &= strcmp(x->s[j].task, x->s[s0].task) != 0;
        if (!first) continue;
        fputs("Majority-class rate of the test split", f);
        if (x->multi_task) {
            fputs(" (", f);
            put_line(f, x->s[s0].task, 0);
            fputc(')', f);
        }
        fputs(":", f);
        int any = 0;
        for (int q = 0; q < x->nseq; q++) {
            double sum = 0;
            int n = 0;
            for (int i = 0; i < x->nr; i++) {
                const run_t *u = &x->r[i];
                if (u->series >= 0 && strcmp(x->s[u->series].task, x->s[s0].task) == 0 &&
                    u->seq_len == x->seq[q] && isfinite(u->v[Q_MAJ])) {
                    sum += u->v[Q_MAJ];
                    n++;
                }
            }
            if (!n) continue;
            fprintf(f, "%s %.2f%% at seq_len %ld", any ? "," : "", sum / n, x->seq[q]);
            any = 1;
        }
        fputs(any ? ".\n" : " n/a.\n", f);
    }
    fputc('\n', f);
}

static void md_speed_memory(FILE *f, const ctx_t *x) {
    fputs("## Speed and memory (mean over seeds)\n\n"
          "| label | seq_len | tokens/s | step (ms) | peak RSS (MiB) | ok runs |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: |\n",
          f);
    for (int s = 0; s < x->ns; s++)
        for (int q = 0; q < x->nseq; q++) {
            stat_t tps = group_stat(x, s, x->seq[q], Q_TPS), ms = group_stat(x, s, x->seq[q], Q_STEP);
            stat_t rss = group_stat(x, s, x->seq[q], Q_RSS);
            int n = 0;
            for (int i = 0; i < x->nr; i++)
                n += x->r[i].ok && x->r[i].series == s && x->r[i].seq_len == x->seq[q];
            if (!n) continue;
            fputs("| ", f);
            md_code(f, x->s[s].display, 1);
            fprintf(f, " | %ld |", x->seq[q]);
            if (tps.n) fprintf(f, " %.0f |", tps.mean);
            else fputs(" — |", f);
            if (ms.n) fprintf(f, " %.2f |", ms.mean);
            else fputs(" — |", f);
            if (rss.n) fprintf(f, " %.1f |", rss.mean);
            else fputs(" — |", f);
            fprintf(f, " %d |\n", n);
        }
    fputc('\n', f);
}

/* LRA's published Table 1 beside ours: one row per label, per task our test accuracy at the
 * longest seq_len with ok runs (mean ± std over seeds) and LRA's number (published.h). */
static void md_published(FILE *f, const ctx_t *x) {
    if (!x->n_acc) return;
    const char *tasks[32];
    int nt = 0;
    for (int s = 0; s < x->ns; s++) {
        int seen = 0;
        for (int t = 0; t < nt; t++) seen |= !strcmp(tasks[t], x->s[s].task);
        if (!seen && nt < 32 && is_accuracy(x->s[s].metric)) tasks[nt++] = x->s[s].task;
    }
    if (!nt) return;
    fputs("## Against LRA's published accuracy (Table 1)\n\n"
          "Ours: test accuracy (%) at the longest sequence length with ok runs, mean ± std over seeds (ok runs). "
          "LRA: Tay et al. 2020 (arXiv 2011.04006) Table 1, test accuracy (%) of their model on the full task "
          "(ListOps 2K, Text 4K, Retrieval 4K+4K, Image 1K, Pathfinder 1K), TPU-trained with their "
          "hyperparameters; our runs are usually smaller, so the comparison is a sanity check, not a reproduction "
          "claim. `softmax` compares with their Transformer, whatever its impl.\n\n| label |",
          f);
    for (int t = 0; t < nt; t++) {
        fputc(' ', f);
        put_line(f, tasks[t], 1);
        fputs(" (ours) | ", f);
        put_line(f, tasks[t], 1);
        fputs(" (LRA) |", f);
    }
    fputs("\n| --- |", f);
    for (int t = 0; t < nt; t++) fputs(" ---: | ---: |", f);
    fputc('\n', f);
    for (int s0 = 0; s0 < x->ns; s0++) {
        int first = 1;
        for (int j = 0; j < s0; j++) first &= strcmp(x->s[j].label, x->s[s0].label) != 0;
        if (!first) continue;
        const char *label = x->s[s0].label;
        char attn[64];
        snprintf(attn, sizeof attn, "%.*s", (int)strcspn(label, "( +"), label);
        fputs("| ", f);
        md_code(f, label, 1);
        fputs(" |", f);
        for (int t = 0; t < nt; t++) {
            int s = -1;
            for (int j = 0; j < x->ns; j++)
                if (!strcmp(x->s[j].label, label) && !strcmp(x->s[j].task, tasks[t])) s = j;
            stat_t st = {0, NAN, NAN};
            long L = 0;
            for (int q = x->nseq - 1; s >= 0 && q >= 0 && !st.n; q--) {
                st = group_stat(x, s, x->seq[q], Q_TEST);
                L = x->seq[q];
            }
            if (st.n) fprintf(f, " %.2f ± %.2f (%d) @%ld |", st.mean, st.std, st.n, L);
            else fputs(" — |", f);
            double acc;
            int k = published_table1(attn, tasks[t], &acc);
            if (k == 1) fprintf(f, " %.2f |", acc);
            else if (k == 2) fputs(" FAIL (50) |", f);
            else fputs(published_model_name(attn) ? " — |" : " not in LRA |", f);
        }
        fputc('\n', f);
    }
    fputc('\n', f);
}

/* "8 runs: 7 ok, 1 crashed" (ok first, then statuses in order of appearance). */
static void md_status_line(FILE *f, const ctx_t *x) {
    int n_ok = 0;
    for (int i = 0; i < x->nr; i++) n_ok += x->r[i].ok;
    fprintf(f, "%d run%s: %d ok", x->nr, x->nr == 1 ? "" : "s", n_ok);
    for (int i = 0; i < x->nr; i++) {
        if (x->r[i].ok) continue;
        const char *st = cell(&x->t, x->r[i].row, x->col[COL_RUNS_status]);
        int seen = 0;
        for (int j = 0; j < i && !seen; j++)
            seen = !x->r[j].ok && strcmp(cell(&x->t, x->r[j].row, x->col[COL_RUNS_status]), st) == 0;
        if (seen) continue;
        int n = 0;
        for (int j = i; j < x->nr; j++)
            n += !x->r[j].ok && strcmp(cell(&x->t, x->r[j].row, x->col[COL_RUNS_status]), st) == 0;
        fprintf(f, ", %d ", n);
        put_line(f, st[0] ? st : "no status", 0);
    }
    fputc('\n', f);
}

static int write_summary(const ctx_t *x, const chart_t *ch, int have_gnuplot, char *err, size_t errlen) {
    outf o;
    if (of_open(&o, x->dir, "summary.md", err, errlen) < 0) return -1;
    FILE *f = o.f;
    fputs("# lra results: ", f);
    put_line(f, x->name, 0);
    fputs("\n\nWritten by `lra plot` from `runs.csv` in this directory. Cells are mean ± sample "
          "standard deviation over seeds, with the number of ok runs in parentheses; only ok runs "
          "count.\n\n",
          f);
    if (x->nr == 0) {
        fputs("No runs in `runs.csv` yet.\n", f);
        return of_close(&o, err, errlen);
    }
    md_metric_table(f, x, Q_TEST, "Test");
    md_metric_table(f, x, Q_BEST, "Best validation");
    md_majority(f, x);
    md_speed_memory(f, x);
    md_published(f, x);

    fputs("## Runs\n\n", f);
    md_status_line(f, x);
    int listed = 0;
    for (int i = 0; i < x->nr; i++) {
        const run_t *u = &x->r[i];
        if (u->ok) continue;
        const csv_table *t = &x->t;
        if (!listed++) fputc('\n', f);
        fputs("- ", f);
        md_code(f, u->series >= 0 ? x->s[u->series].display : "(no label)", 0);
        fputs(" seq_len=", f);
        put_line(f, cell(t, u->row, x->col[COL_RUNS_seq_len]), 0);
        fputs(" seed=", f);
        put_line(f, cell(t, u->row, x->col[COL_RUNS_seed]), 0);
        const char *id = cell(t, u->row, x->col[COL_RUNS_run_id]);
        if (id[0]) {
            fputs(" (run ", f);
            put_line(f, id, 0);
            fputc(')', f);
        }
        const char *st = cell(t, u->row, x->col[COL_RUNS_status]);
        fputs(": ", f);
        put_line(f, st[0] ? st : "no status", 0);
        const char *reason = cell(t, u->row, x->col[COL_RUNS_reason]);
        if (reason[0]) {
            fputs(": ", f);
            put_line(f, reason, 0);
        }
        fputc('\n', f);
    }
    fputc('\n', f);

    int any = 0, all_rendered = 1;
    for (int i = 0; i < N_CHARTS; i++)
        if (ch[i].written) {
            any = 1;
            all_rendered &= ch[i].rendered;
        }
    if (any) {
        fputs("## Charts\n\n", f);
        if (!all_rendered)
            fprintf(f, "Some charts are not rendered (%s): run `gnuplot NAME.gp` in this directory for "
                       "each script below.\n\n",
                    have_gnuplot ? "gnuplot failed, see gnuplot.log" : "gnuplot was not found");
        for (int i = 0; i < N_CHARTS; i++)
            if (ch[i].written) fprintf(f, "![%s](%s.png)\n\n", ch[i].alt, ch[i].base);
    }
    return of_close(&o, err, errlen);
}

/* ---------------------------------------------------------------------------------------- */

int plot_results(const char *dir, int quiet, char *err, size_t errlen) {
    /* A bench directory (bench.csv, no runs.csv): the Table 2 analogue is its summary. */
    char *runs_p = path_join(dir, "runs.csv"), *bench_p = path_join(dir, "bench.csv");
    int has_runs = access(runs_p, F_OK) == 0, has_bench = access(bench_p, F_OK) == 0;
    free(runs_p);
    free(bench_p);
    if (has_bench && !has_runs) return plot_bench(dir, quiet, err, errlen);
    if (has_bench && plot_bench(dir, quiet, err, errlen)) return -1;
    ctx_t x;
    memset(&x, 0, sizeof x);
    x.dir = dir;
    chart_t ch[N_CHARTS] = {
        [CH_ACCURACY] = {"accuracy", "test metric vs sequence length", 0, 0},
        [CH_MEMORY] = {"memory", "peak RSS vs sequence length", 0, 0},
        [CH_SPEED] = {"speed", "training tokens per second vs sequence length", 0, 0},
        [CH_CURVES] = {"curves", "validation metric vs training step", 0, 0},
    };
    int rc = load_runs(&x, err, errlen);
    if (rc == 0) {
        const char *yl = x.n_acc && !x.n_other   ? "test accuracy (%)"
                         : x.n_other && !x.n_acc ? "test metric (bits per byte)"
                                                 : "test metric (accuracy in %, bpb as is)";
        const char *what = x.n_acc && !x.n_other ? "test accuracy vs sequence length"
                                                 : "test metric vs sequence length";
        rc = write_seq_chart(&x, "accuracy", Q_TEST, what, yl, 0, &ch[CH_ACCURACY].written, err, errlen);
    }
    if (rc == 0)
        rc = write_seq_chart(&x, "memory", Q_RSS, "peak RSS vs sequence length", "peak RSS (MiB)", 1,
                             &ch[CH_MEMORY].written, err, errlen);
    if (rc == 0)
        rc = write_seq_chart(&x, "speed", Q_TPS, "training throughput vs sequence length",
                             "training tokens per second", 1, &ch[CH_SPEED].written, err, errlen);
    if (rc == 0) rc = write_curves(&x, &ch[CH_CURVES].written, err, errlen);
    int have_gnuplot = 0;
    if (rc == 0) {
        char buf[4096];
        have_gnuplot = find_on_path("gnuplot", buf, sizeof buf);
        int any = 0;
        for (int i = 0; i < N_CHARTS; i++) any |= ch[i].written;
        if (any) render(dir, ch, N_CHARTS);
        rc = write_summary(&x, ch, have_gnuplot, err, errlen);
    }
    if (rc == 0 && !quiet) {
        char *p = path_join(dir, "summary.md");
        printf("%s\n", p);
        fflush(stdout);
        free(p);
    }
    for (int s = 0; s < x.ns; s++) free(x.s[s].display);
    free(x.s);
    free(x.r);
    free(x.seq);
    free(x.runs_path);
    csv_free(&x.t);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* Bench directories: bench.csv (+ maxlen.csv) -> table2.md, summary.md, bench_time.*,         */
/* bench_memory.* (see bench.h for the columns)                                               */

enum { B_TRAIN, B_MIN, B_P25, B_P75, B_MAX, B_SPS, B_TPS, B_INFER, B_ISPS, B_MFU, B_IMFU, B_PLANNED, B_RSS, NB };
static const int bench_qcol[NB] = {BENCH_COL_train_ms,        BENCH_COL_train_ms_min, BENCH_COL_train_ms_p25,
                                   BENCH_COL_train_ms_p75,    BENCH_COL_train_ms_max, BENCH_COL_train_steps_per_s,
                                   BENCH_COL_tokens_per_s,    BENCH_COL_infer_ms,     BENCH_COL_infer_steps_per_s,
                                   BENCH_COL_mfu,             BENCH_COL_infer_mfu,    BENCH_COL_mem_planned,
                                   BENCH_COL_peak_rss};

typedef struct {
    int row, series;
    long N;
    int ok;
    double v[NB];
} bpt_t;

typedef struct {
    const char *dir, *name;
    char *path;
    csv_table t, ml; /* bench.csv, maxlen.csv (ml.n_rows 0 when absent) */
    int col[BENCH_N_COLUMNS], mlcol[MAXLEN_N_COLUMNS];
    bpt_t *p;
    int np;
    const char **label; /* series labels (borrowed) */
    int ns;
    long *seq;
    int nseq;
    int base;           /* baseline series for ratios, -1 when none */
} bctx_t;

static const char *bcell(const bctx_t *b, int r, int c) {
    return cell(&b->t, r, b->col[c]);
}

static const bpt_t *bench_at(const bctx_t *b, int s, long N) {
    for (int i = b->np - 1; i >= 0; i--)
        if (b->p[i].series == s && b->p[i].N == N) return &b->p[i];
    return NULL;
}

static int load_bench(bctx_t *b, char *err, size_t errlen) {
    b->path = path_join(b->dir, "bench.csv");
    if (csv_read(b->path, &b->t, err, errlen) < 0) return -1;
    if (b->t.n_rows == 0) return lra_errorf(err, errlen, "%s:1: empty file, no header line", b->path);
    for (int c = 0; c < BENCH_N_COLUMNS; c++) b->col[c] = csv_col(&b->t, bench_columns[c]);
    const int required[] = {BENCH_COL_label, BENCH_COL_seq_len, BENCH_COL_status};
    for (size_t i = 0; i < LRA_ARRAY_LEN(required); i++)
        if (b->col[required[i]] < 0)
            return lra_errorf(err, errlen, "%s:1: no column '%s' in the header", b->path, bench_columns[required[i]]);
    int n = LRA_MAX(b->t.n_rows, 1);
    b->p = xcalloc((size_t)n, sizeof *b->p);
    b->label = xcalloc((size_t)n, sizeof *b->label);
    b->seq = xcalloc((size_t)n, sizeof *b->seq);
    for (int r = 1; r < b->t.n_rows; r++) {
        bpt_t *u = &b->p[b->np];
        u->row = r;
        const char *ls = bcell(b, r, BENCH_COL_seq_len);
        char *end;
        long L = strtol(ls, &end, 10);
        if (end == ls || *end || L <= 0)
            return lra_errorf(err, errlen, "%s:%d: column 'seq_len': '%s' is not a positive integer", b->path,
                              row_line(&b->t, r), ls);
        u->N = L;
        u->ok = !strcmp(bcell(b, r, BENCH_COL_status), "ok");
        for (int q = 0; q < NB; q++) {
            const char *v = bcell(b, r, bench_qcol[q]);
            if (parse_num(v, &u->v[q]) < 0)
                return lra_errorf(err, errlen, "%s:%d: column '%s': '%s' is not a number", b->path,
                                  row_line(&b->t, r), bench_columns[bench_qcol[q]], v);
        }
        const char *label = bcell(b, r, BENCH_COL_label);
        int s = 0;
        while (s < b->ns && strcmp(b->label[s], label)) s++;
        if (s == b->ns) b->label[b->ns++] = label;
        u->series = s;
        int seen = 0;
        for (int q = 0; q < b->nseq; q++) seen |= b->seq[q] == L;
        if (!seen) b->seq[b->nseq++] = L;
        b->np++;
    }
    qsort(b->seq, (size_t)b->nseq, sizeof *b->seq, cmp_long);
    if (b->np && bcell(b, b->p[0].row, BENCH_COL_name)[0]) b->name = bcell(b, b->p[0].row, BENCH_COL_name);
    /* Baseline: the N x N softmax LRA's Transformer used, else tiled softmax, else any softmax. */
    b->base = -1;
    static const char *const prefs[] = {"softmax(impl=materialized)", "softmax"};
    for (size_t k = 0; k < LRA_ARRAY_LEN(prefs) && b->base < 0; k++)
        for (int s = 0; s < b->ns; s++)
            if (!strcmp(b->label[s], prefs[k])) b->base = s;
    for (int s = 0; s < b->ns && b->base < 0; s++)
        if (!strncmp(b->label[s], "softmax", 7)) b->base = s;
    /* maxlen.csv is optional */
    char *ml = path_join(b->dir, "maxlen.csv");
    char e2[512];
    if (access(ml, F_OK) == 0 && csv_read(ml, &b->ml, e2, sizeof e2) < 0) {
        fprintf(stderr, "lra: warning: %s; skipping the longest-length table\n", e2);
        memset(&b->ml, 0, sizeof b->ml);
    }
    for (int c = 0; c < MAXLEN_N_COLUMNS; c++) b->mlcol[c] = b->ml.n_rows ? csv_col(&b->ml, maxlen_columns[c]) : -1;
    free(ml);
    return 0;
}

/* A table cell for a point that did not run: its status. */
static void md_status_cell(FILE *f, const bctx_t *b, const bpt_t *u) {
    if (!u) {
        fputs(" — |", f);
        return;
    }
    fputc(' ', f);
    put_line(f, bcell(b, u->row, BENCH_COL_status), 1);
    fputs(" |", f);
}

static void fmt_mib(char *buf, size_t n, double bytes) {
    double mib = bytes / (1024.0 * 1024.0);
    snprintf(buf, n, mib >= 100 ? "%.0f" : mib >= 10 ? "%.1f" : "%.2f", mib);
}

/* Steps/s (speed-up vs baseline) per mechanism x length, for quantity q (B_SPS or B_ISPS). */
static void md_bench_speed(FILE *f, const bctx_t *b, int q, const char *what) {
    fprintf(f, "## %s\n\n| mechanism |", what);
    for (int k = 0; k < b->nseq; k++) fprintf(f, " N=%ld |", b->seq[k]);
    fputs("\n| --- |", f);
    for (int k = 0; k < b->nseq; k++) fputs(" ---: |", f);
    fputc('\n', f);
    for (int s = 0; s < b->ns; s++) {
        fputs("| ", f);
        md_code(f, b->label[s], 1);
        fputs(" |", f);
        for (int k = 0; k < b->nseq; k++) {
            const bpt_t *u = bench_at(b, s, b->seq[k]), *ref = b->base >= 0 ? bench_at(b, b->base, b->seq[k]) : NULL;
            if (!u || !u->ok || !isfinite(u->v[q])) {
                if (u && u->ok) fputs(" — |", f);
                else md_status_cell(f, b, u);
                continue;
            }
            fprintf(f, " %.3g", u->v[q]);
            if (ref && ref->ok && isfinite(ref->v[q]) && ref->v[q] > 0) fprintf(f, " (%.2fx)", u->v[q] / ref->v[q]);
            fputs(" |", f);
        }
        fputc('\n', f);
    }
    fputc('\n', f);
}

static void md_bench_memory(FILE *f, const bctx_t *b) {
    fputs("## Memory: peak RSS MiB (ratio vs baseline); planned arenas MiB\n\n"
          "Peak RSS is the resident set of the point's own process (wait4), including the runtime, BLAS "
          "buffers and the sgemm probe (3 x 4 MiB); the plan is the arena bytes (parameters, gradients, "
          "optimizer state, activations, scratch) fixed before step 1. Points over max_mem are not run; "
          "their cell gives the plan.\n\n| mechanism |",
          f);
    for (int k = 0; k < b->nseq; k++) fprintf(f, " N=%ld |", b->seq[k]);
    fputs("\n| --- |", f);
    for (int k = 0; k < b->nseq; k++) fputs(" ---: |", f);
    fputc('\n', f);
    for (int s = 0; s < b->ns; s++) {
        fputs("| ", f);
        md_code(f, b->label[s], 1);
        fputs(" |", f);
        for (int k = 0; k < b->nseq; k++) {
            const bpt_t *u = bench_at(b, s, b->seq[k]), *ref = b->base >= 0 ? bench_at(b, b->base, b->seq[k]) : NULL;
            char a[32], c[32];
            if (!u || !u->ok) {
                if (u && isfinite(u->v[B_PLANNED])) {
                    fmt_mib(c, sizeof c, u->v[B_PLANNED]);
                    fputc(' ', f);
                    put_line(f, bcell(b, u->row, BENCH_COL_status), 1);
                    fprintf(f, ", plan %s |", c);
                } else
                    md_status_cell(f, b, u);
                continue;
            }
            fmt_mib(a, sizeof a, u->v[B_RSS]);
            fprintf(f, " %s", a);
            if (ref && ref->ok && ref->v[B_RSS] > 0) fprintf(f, " (%.2fx)", u->v[B_RSS] / ref->v[B_RSS]);
            if (isfinite(u->v[B_PLANNED])) {
                fmt_mib(c, sizeof c, u->v[B_PLANNED]);
                fprintf(f, "; plan %s", c);
            }
            fputs(" |", f);
        }
        fputc('\n', f);
    }
    fputc('\n', f);
}

static void md_bench_spread(FILE *f, const bctx_t *b) {
    fputs("## Spread and utilisation: training step ms, median [p25–p75] (min–max); MFU\n\n| mechanism |", f);
    for (int k = 0; k < b->nseq; k++) fprintf(f, " N=%ld |", b->seq[k]);
    fputs("\n| --- |", f);
    for (int k = 0; k < b->nseq; k++) fputs(" ---: |", f);
    fputc('\n', f);
    for (int s = 0; s < b->ns; s++) {
        fputs("| ", f);
        md_code(f, b->label[s], 1);
        fputs(" |", f);
        for (int k = 0; k < b->nseq; k++) {
            const bpt_t *u = bench_at(b, s, b->seq[k]);
            if (!u || !u->ok) {
                md_status_cell(f, b, u);
                continue;
            }
            fprintf(f, " %.4g [%.4g–%.4g] (%.4g–%.4g); MFU %.1f%% |", u->v[B_TRAIN], u->v[B_P25], u->v[B_P75],
                    u->v[B_MIN], u->v[B_MAX], 100 * u->v[B_MFU]);
        }
        fputc('\n', f);
    }
    fputc('\n', f);
}

/* LRA's Table 2 beside ours at the lengths both have (N = 1K..4K as 1024k or 1000k). */
static void md_bench_lra(FILE *f, const bctx_t *b) {
    long ls[8];
    int nl = 0;
    for (int k = 0; k < b->nseq && nl < 8; k++)
        if (published_table2_length((int)b->seq[k])) ls[nl++] = b->seq[k];
    fputs("## Beside LRA's published Table 2\n\n"
          "LRA's figures are theirs, not ours: training steps/s and peak memory per device on the byte-level "
          "Text task with **batch 32 on 4x4 TPU v3 chips** (Tay et al. 2020, arXiv 2011.04006, Table 2), "
          "their model sizes; speed-ups in parentheses are relative to their Transformer. Ours: this study's "
          "setting (CPU, the batch above), speed-up and memory relative to our baseline. Compare the ratios, "
          "not the absolute numbers. LRA did not measure Sparse Transformer and Longformer (dense-mask "
          "emulations, no custom kernels) and has no Nyströmformer.\n\n",
          f);
    if (!nl) {
        fputs("None of this study's lengths is one of LRA's (1K, 2K, 3K, 4K).\n\n", f);
        return;
    }
    for (int pass = 0; pass < 2; pass++) {
        fprintf(f, "%s\n\n| mechanism | LRA model |", pass ? "Memory (ours: peak RSS ratio vs baseline; LRA: GB per device, ratio vs Transformer)"
                                                            : "Training steps/s (speed-up)");
        for (int k = 0; k < nl; k++) fprintf(f, " ours N=%ld | LRA %s |", ls[k], published_table2_length((int)ls[k]));
        fputs("\n| --- | --- |", f);
        for (int k = 0; k < nl; k++) fputs(" ---: | ---: |", f);
        fputc('\n', f);
        for (int s = 0; s < b->ns; s++) {
            char attn[64];
            snprintf(attn, sizeof attn, "%.*s", (int)strcspn(b->label[s], "("), b->label[s]);
            const char *model = published_model_name(attn);
            fputs("| ", f);
            md_code(f, b->label[s], 1);
            fputs(" | ", f);
            put_line(f, model ? model : "not in LRA", 1);
            fputs(" |", f);
            for (int k = 0; k < nl; k++) {
                const bpt_t *u = bench_at(b, s, ls[k]), *ref = b->base >= 0 ? bench_at(b, b->base, ls[k]) : NULL;
                int q = pass ? B_RSS : B_SPS;
                if (u && u->ok && isfinite(u->v[q])) {
                    if (pass) {
                        char a[32];
                        fmt_mib(a, sizeof a, u->v[q]);
                        fprintf(f, " %s MiB", a);
                    } else
                        fprintf(f, " %.3g", u->v[q]);
                    if (ref && ref->ok && ref->v[q] > 0) fprintf(f, " (%.2fx)", u->v[q] / ref->v[q]);
                    fputs(" |", f);
                } else
                    md_status_cell(f, b, u);
                double sps, sp, gb, sps0, sp0, gb0;
                if (published_table2(attn, (int)ls[k], &sps, &sp, &gb)) {
                    if (pass) {
                        published_table2("softmax", (int)ls[k], &sps0, &sp0, &gb0);
                        fprintf(f, " %.2f GB (%.2fx) |", gb, gb / gb0);
                    } else
                        fprintf(f, " %.1f (%.1fx) |", sps, sp);
                } else
                    fputs(model ? " not measured |" : " — |", f);
            }
            fputc('\n', f);
        }
        fputc('\n', f);
    }
}

static void md_bench_maxlen(FILE *f, const bctx_t *b) {
    if (b->ml.n_rows < 2) return;
    const csv_table *t = &b->ml;
    char lim[32] = "";
    double v;
    if (parse_num(cell(t, 1, b->mlcol[MAXLEN_COL_max_mem]), &v) == 0 && isfinite(v)) lra_fmt_bytes(v, lim, sizeof lim);
    fputs("## Longest trainable length within ", f);
    put_line(f, lim, 0);
    fputs(" (", f);
    put_line(f, cell(t, 1, b->mlcol[MAXLEN_COL_max_mem_source]), 0);
    fputs(")\n\nFrom the arena plan alone (nothing is run): the listed lengths, then doubling until the plan "
          "exceeds the budget, then bisection in steps of 64 tokens. The plan covers the arenas, not the "
          "process overhead that peak RSS adds.\n\n"
          "| mechanism | longest N (doubling) | its plan (MiB) | first N over | its plan (MiB) | longest N (bisection) | note |\n"
          "| --- | ---: | ---: | ---: | ---: | ---: | --- |\n",
          f);
    for (int r = 1; r < t->n_rows; r++) {
        fputs("| ", f);
        md_code(f, cell(t, r, b->mlcol[MAXLEN_COL_label]), 1);
        const int cols[] = {MAXLEN_COL_longest_n, MAXLEN_COL_longest_planned, MAXLEN_COL_next_n,
                            MAXLEN_COL_next_planned, MAXLEN_COL_longest_n_fine, MAXLEN_COL_note};
        for (size_t i = 0; i < LRA_ARRAY_LEN(cols); i++) {
            const char *c = cell(t, r, b->mlcol[cols[i]]);
            fputs(" | ", f);
            if ((cols[i] == MAXLEN_COL_longest_planned || cols[i] == MAXLEN_COL_next_planned) &&
                parse_num(c, &v) == 0 && isfinite(v)) {
                char a[32];
                fmt_mib(a, sizeof a, v);
                fputs(a, f);
            } else
                put_line(f, c[0] ? c : "—", 1);
        }
        fputs(" |\n", f);
    }
    fputc('\n', f);
}

/* The Table 2 analogue into f (table2.md and, for a directory without runs.csv, summary.md). */
static void md_bench(FILE *f, const bctx_t *b, const chart_t *ch, int n_charts, int have_gnuplot) {
    int r0 = b->np ? b->p[0].row : -1;
    if (r0 > 0) {
        fputs("Setting (bench.csv): batch ", f);
        put_line(f, bcell(b, r0, BENCH_COL_batch_size), 0);
        fputs(", d_model ", f);
        put_line(f, bcell(b, r0, BENCH_COL_d_model), 0);
        fputs(", ", f);
        put_line(f, bcell(b, r0, BENCH_COL_n_heads), 0);
        fputs(" heads, ", f);
        put_line(f, bcell(b, r0, BENCH_COL_n_layers), 0);
        fputs(" layers, d_ff ", f);
        put_line(f, bcell(b, r0, BENCH_COL_d_ff), 0);
        fputs(", ", f);
        put_line(f, bcell(b, r0, BENCH_COL_threads), 0);
        /* steps and warm-up actually done vary by point when bench.time_budget cut them short */
        long smin = 0, smax = 0, wmin = 0, wmax = 0;
        int first = 1;
        for (int i = 0; i < b->np; i++) {
            if (!b->p[i].ok) continue;
            long sv = atol(bcell(b, b->p[i].row, BENCH_COL_steps)), wv = atol(bcell(b, b->p[i].row, BENCH_COL_warmup));
            if (first || sv < smin) smin = sv;
            if (first || sv > smax) smax = sv;
            if (first || wv < wmin) wmin = wv;
            if (first || wv > wmax) wmax = wv;
            first = 0;
        }
        fputs(" threads; random byte tokens (vocabulary 257, 2 classes, CLS pooling); median of ", f);
        if (smin == smax) fprintf(f, "%ld", smin);
        else fprintf(f, "%ld-%ld (per point: bench.csv `steps`)", smin, smax);
        fputs(" timed steps after ", f);
        if (wmin == wmax) fprintf(f, "%ld", wmin);
        else fprintf(f, "%ld-%ld", wmin, wmax);
        fputs(" warm-up, each point in its own process. A training step is forward + backward + AdamW.\n\n", f);
    }
    if (b->base >= 0) {
        fputs("Ratios in parentheses are relative to ", f);
        md_code(f, b->label[b->base], 0);
        fputs(" at the same length", f);
        fputs(!strcmp(b->label[b->base], "softmax(impl=materialized)")
                  ? " (exact attention storing the N x N probabilities, as LRA's Transformer did).\n\n"
                  : ".\n\n",
              f);
    } else
        fputs("No softmax mechanism in this study: no ratios.\n\n", f);
    int n_ok = 0;
    for (int i = 0; i < b->np; i++) n_ok += b->p[i].ok;
    fprintf(f, "%d point%s: %d ok", b->np, b->np == 1 ? "" : "s", n_ok);
    for (int i = 0; i < b->np; i++) {
        if (b->p[i].ok) continue;
        const char *st = bcell(b, b->p[i].row, BENCH_COL_status);
        int seen = 0;
        for (int j = 0; j < i && !seen; j++) seen = !b->p[j].ok && !strcmp(bcell(b, b->p[j].row, BENCH_COL_status), st);
        if (seen) continue;
        int n = 0;
        for (int j = i; j < b->np; j++) n += !b->p[j].ok && !strcmp(bcell(b, b->p[j].row, BENCH_COL_status), st);
        fprintf(f, ", %d ", n);
        put_line(f, st, 0);
    }
    fputs(".\n\n", f);
    md_bench_speed(f, b, B_SPS, "Training steps per second (speed-up vs baseline)");
    int any_inf = 0;
    for (int i = 0; i < b->np; i++) any_inf |= b->p[i].ok && isfinite(b->p[i].v[B_ISPS]);
    if (any_inf) md_bench_speed(f, b, B_ISPS, "Inference steps per second (speed-up vs baseline)");
    md_bench_memory(f, b);
    md_bench_lra(f, b);
    md_bench_maxlen(f, b);
    md_bench_spread(f, b);
    int listed = 0;
    for (int i = 0; i < b->np; i++) {
        if (b->p[i].ok) continue;
        if (!listed++) fputs("## Points not run to the end\n\n", f);
        fputs("- ", f);
        md_code(f, b->label[b->p[i].series], 0);
        fprintf(f, " N=%ld: ", b->p[i].N);
        put_line(f, bcell(b, b->p[i].row, BENCH_COL_status), 0);
        const char *reason = bcell(b, b->p[i].row, BENCH_COL_reason);
        if (reason[0]) {
            fputs(": ", f);
            put_line(f, reason, 0);
        }
        fputc('\n', f);
    }
    if (listed) fputc('\n', f);
    int any = 0, all = 1;
    for (int i = 0; i < n_charts; i++)
        if (ch[i].written) any = 1, all &= ch[i].rendered;
    if (any) {
        fputs("## Charts\n\n", f);
        if (!all)
            fprintf(f, "Some charts are not rendered (%s): run `gnuplot NAME.gp` in this directory.\n\n",
                    have_gnuplot ? "gnuplot failed, see gnuplot.log" : "gnuplot was not found");
        for (int i = 0; i < n_charts; i++)
            if (ch[i].written) fprintf(f, "![%s](%s.png)\n\n", ch[i].alt, ch[i].base);
    }
}

/* Log-log chart of q against N, one line per mechanism (ok points only). Error bars: min..max of
 * the training step (time chart); the memory chart adds the plan as a dashed line per mechanism. */
static int write_bench_chart(const bctx_t *b, const char *base, int q, const char *what, const char *ylabel,
                             double scale, int *written, char *err, size_t errlen) {
    *written = 0;
    int any = 0;
    for (int i = 0; i < b->np; i++) any |= b->p[i].ok && isfinite(b->p[i].v[q]);
    if (!any) return 0;
    char dat[64], gp[64];
    snprintf(dat, sizeof dat, "%s.dat", base);
    snprintf(gp, sizeof gp, "%s.gp", base);
    int is_time = q == B_TRAIN;
    outf o;
    if (of_open(&o, b->dir, dat, err, errlen) < 0) return -1;
    fprintf(o.f, "# %s: %s (ok points of bench.csv)\n# one index block per series; columns: seq_len %s\n", dat,
            what, is_time ? "median min max p25 p75 (ms)" : "peak_rss_MiB planned_MiB");
    int nblocks = 0, block_series[b->ns > 0 ? b->ns : 1];
    for (int s = 0; s < b->ns; s++) {
        int has = 0;
        for (int k = 0; k < b->nseq; k++) {
            const bpt_t *u = bench_at(b, s, b->seq[k]);
            has |= u && u->ok && isfinite(u->v[q]);
        }
        if (!has) continue;
        fprintf(o.f, "%s# series: ", nblocks ? "\n\n" : "\n");
        put_line(o.f, b->label[s], 0);
        fputc('\n', o.f);
        for (int k = 0; k < b->nseq; k++) {
            const bpt_t *u = bench_at(b, s, b->seq[k]);
            if (!u || !u->ok || !isfinite(u->v[q])) continue;
            if (is_time)
                fprintf(o.f, "%ld %.10g %.10g %.10g %.10g %.10g\n", u->N, u->v[B_TRAIN], u->v[B_MIN], u->v[B_MAX],
                        u->v[B_P25], u->v[B_P75]);
            else
                fprintf(o.f, "%ld %.10g %.10g\n", u->N, u->v[q] * scale, u->v[B_PLANNED] * scale);
        }
        block_series[nblocks++] = s;
    }
    if (of_close(&o, err, errlen) < 0) return -1;
    if (of_open(&o, b->dir, gp, err, errlen) < 0) return -1;
    FILE *f = o.f;
    gp_header(f, base, what);
    fputs("set title ", f);
    size_t tn = strlen(b->name) + strlen(what) + 4;
    char *title = xmalloc(tn);
    snprintf(title, tn, "%s: %s", b->name, what);
    gp_str(f, title);
    free(title);
    fputs("\nset xlabel 'sequence length N (tokens)'\nset ylabel ", f);
    gp_str(f, ylabel);
    fputs("\nset logscale x 2\nset logscale y\nset xtics (", f);
    for (int k = 0; k < b->nseq; k++) fprintf(f, "%s'%ld' %ld", k ? ", " : "", b->seq[k], b->seq[k]);
    fprintf(f, ")\nset xrange [%g:%g]\nplot ", (double)b->seq[0] / 1.25, (double)b->seq[b->nseq - 1] * 1.25);
    for (int i = 0; i < nblocks; i++) {
        if (i) fputs(", \\\n     ", f);
        fprintf(f, "'%s' index %d using 1:2%s with %s lc %d lw 2 pt 7 title ", dat, i, is_time ? ":3:4" : "",
                is_time ? "yerrorlines" : "linespoints", i + 1);
        gp_str(f, b->label[block_series[i]]);
        if (!is_time) {
            fprintf(f, ", \\\n     '%s' index %d using 1:3 with lines lc %d lw 1 dt 2 notitle", dat, i, i + 1);
        }
    }
    fputc('\n', f);
    gp_footer(f, base);
    if (of_close(&o, err, errlen) < 0) return -1;
    *written = 1;
    return 0;
}

int plot_bench(const char *dir, int quiet, char *err, size_t errlen) {
    bctx_t b;
    memset(&b, 0, sizeof b);
    b.dir = dir;
    const char *sl = strrchr(dir, '/');
    b.name = sl && sl[1] ? sl + 1 : dir;
    chart_t ch[2] = {{"bench_time", "training step time vs sequence length (log-log)", 0, 0},
                     {"bench_memory", "peak RSS (solid) and planned arenas (dashed) vs sequence length (log-log)", 0, 0}};
    int rc = load_bench(&b, err, errlen);
    if (rc == 0)
        rc = write_bench_chart(&b, "bench_time", B_TRAIN, "training step time vs N (median, min-max bars)",
                               "training step (ms)", 1, &ch[0].written, err, errlen);
    if (rc == 0)
        rc = write_bench_chart(&b, "bench_memory", B_RSS, "peak RSS (solid) and planned arenas (dashed) vs N",
                               "memory (MiB)", 1.0 / (1024.0 * 1024.0), &ch[1].written, err, errlen);
    char gpbuf[4096];
    int have_gnuplot = find_on_path("gnuplot", gpbuf, sizeof gpbuf);
    if (rc == 0 && (ch[0].written || ch[1].written)) render(dir, ch, 2);
    char *runs = path_join(dir, "runs.csv");
    int has_runs = access(runs, F_OK) == 0;
    free(runs);
    for (int pass = 0; rc == 0 && pass < 1 + !has_runs; pass++) {
        outf o;
        if (of_open(&o, dir, pass ? "summary.md" : "table2.md", err, errlen) < 0) {
            rc = -1;
            break;
        }
        fputs(pass ? "# lra results: " : "# lra bench: ", o.f);
        put_line(o.f, b.name, 0);
        fputs(" — efficiency (LRA Table 2 analogue)\n\nWritten by `lra plot` from `bench.csv` and `maxlen.csv` in "
              "this directory (`lra bench` writes them; columns in lra/bench.h).\n\n",
              o.f);
        md_bench(o.f, &b, ch, 2, have_gnuplot);
        rc = of_close(&o, err, errlen);
    }
    if (rc == 0 && !quiet) {
        char *p = path_join(dir, "table2.md");
        printf("%s\n", p);
        fflush(stdout);
        free(p);
    }
    free(b.p);
    free(b.label);
    free(b.seq);
    free(b.path);
    csv_free(&b.t);
    if (b.ml.n_rows) csv_free(&b.ml);
    return rc;
}
