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

static void render(const char *dir, chart_t *ch) {
    char gnuplot[4096];
    if (!find_on_path("gnuplot", gnuplot, sizeof gnuplot)) {
        char names[256] = "";
        for (int i = 0; i < N_CHARTS; i++)
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
    for (int i = 0; i < N_CHARTS; i++) {
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
        if (any) render(dir, ch);
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
