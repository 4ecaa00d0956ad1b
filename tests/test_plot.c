/* test_plot.c - summary.md numbers, .dat/.gp files and (when gnuplot is installed) the rendered
 * charts, from synthetic runs.csv / curves.csv written with the real CSV writer. */
#include "testutil.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../lra/common.h"
#include "../lra/csv.h"
#include "../lra/plot.h"
#include "../lra/results.h"

#define N_LABELS 2
#define N_SEQ 2
#define N_SEEDS 2
static const char *const labels[N_LABELS] = {"softmax", "longformer(window=32,global=cls)"};
static const int seqs[N_SEQ] = {256, 512};
static const char *const crash_reason = "killed by signal 11 (Segmentation fault), core dumped";

/* The synthetic metrics of run (label l, seq_len index q, seed s). */
static double syn_test(int l, int q, int s) { return 0.40 + 0.07 * l - 0.05 * q + 0.013 * s + 0.004 * l * s; }
static double syn_best(int l, int q, int s) { return syn_test(l, q, s) + 0.02 + 0.001 * s; }
static double syn_tps(int l, int q, int s) { return 10000.0 / (1 + l) / (1 + q) + 37.0 * s; }
static double syn_rss(int l, int q, int s) { return (100.0 + 50 * l + 64.0 * (1 << q) + 3.5 * s) * 1048576.0 + 4096; }
static double syn_step(int l, int q, int s) { return 12.5 * (1 + l) * (1 + q) + 0.25 * s; }
static double syn_major(int q) { return q == 0 ? 0.10 : 0.105; }

typedef struct {
    int n;
    double mean, std;
} gstat;

static gstat stat_of(const double *v, int n) {
    gstat st = {n, 0, 0};
    for (int i = 0; i < n; i++) st.mean += v[i];
    st.mean /= n;
    double ss = 0;
    for (int i = 0; i < n; i++) ss += (v[i] - st.mean) * (v[i] - st.mean);
    st.std = n > 1 ? sqrt(ss / (n - 1)) : 0;
    return st;
}

/* Stats over seeds of f(l, q, s) * scale. */
static gstat seeds_stat(double (*f)(int, int, int), int l, int q, double scale) {
    double v[N_SEEDS];
    for (int s = 0; s < N_SEEDS; s++) v[s] = f(l, q, s) * scale;
    return stat_of(v, N_SEEDS);
}

static void fill_row(char vals[RUNS_N_COLUMNS][128], const char *label, int seq, int seed,
                     const char *status, const char *reason) {
    for (int c = 0; c < RUNS_N_COLUMNS; c++) vals[c][0] = 0;
    snprintf(vals[COL_RUNS_run_id], 128, "%016x", (unsigned)(seq * 131 + seed * 7 + (int)strlen(label)));
    snprintf(vals[COL_RUNS_name], 128, "plot test");
    snprintf(vals[COL_RUNS_config], 128, "configs/plot,test.yaml");
    snprintf(vals[COL_RUNS_task], 128, "listops");
    snprintf(vals[COL_RUNS_attention], 128, "%.*s", (int)strcspn(label, "("), label);
    snprintf(vals[COL_RUNS_label], 128, "%s", label);
    snprintf(vals[COL_RUNS_seq_len], 128, "%d", seq);
    snprintf(vals[COL_RUNS_seed], 128, "%d", seed);
    snprintf(vals[COL_RUNS_status], 128, "%s", status);
    snprintf(vals[COL_RUNS_reason], 128, "%s", reason);
    snprintf(vals[COL_RUNS_version], 128, "0.1.0");
}

static void write_runs(const char *dir) {
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/runs.csv", dir);
    char vals[RUNS_N_COLUMNS][128];
    const char *f[RUNS_N_COLUMNS];
    for (int c = 0; c < RUNS_N_COLUMNS; c++) f[c] = vals[c];
    for (int l = 0; l < N_LABELS; l++)
        for (int q = 0; q < N_SEQ; q++)
            for (int s = 0; s < N_SEEDS; s++) {
                fill_row(vals, labels[l], seqs[q], s, "ok", "");
                snprintf(vals[COL_RUNS_metric], 128, "accuracy");
                snprintf(vals[COL_RUNS_test], 128, "%.17g", syn_test(l, q, s));
                snprintf(vals[COL_RUNS_best_val], 128, "%.17g", syn_best(l, q, s));
                snprintf(vals[COL_RUNS_majority], 128, "%.17g", syn_major(q));
                snprintf(vals[COL_RUNS_tokens_per_s], 128, "%.17g", syn_tps(l, q, s));
                snprintf(vals[COL_RUNS_peak_rss], 128, "%.0f", syn_rss(l, q, s));
                snprintf(vals[COL_RUNS_step_ms], 128, "%.17g", syn_step(l, q, s));
                assert_int_equal(csv_append_row(path, runs_columns, f, RUNS_N_COLUMNS, err, sizeof err), 0);
            }
    fill_row(vals, labels[0], 512, 2, "crashed", crash_reason);
    snprintf(vals[COL_RUNS_metric], 128, "accuracy");
    assert_int_equal(csv_append_row(path, runs_columns, f, RUNS_N_COLUMNS, err, sizeof err), 0);
}

/* Three evaluations per ok run (val = test - 0.03 + 0.01 * e), one for the crashed run. */
static void write_curves(const char *dir) {
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/curves.csv", dir);
    char v[CURVES_N_COLUMNS][128];
    const char *f[CURVES_N_COLUMNS];
    for (int c = 0; c < CURVES_N_COLUMNS; c++) f[c] = v[c];
    char rv[RUNS_N_COLUMNS][128];
    for (int l = 0; l <= N_LABELS; l++)
        for (int q = 0; q < N_SEQ; q++)
            for (int s = 0; s < N_SEEDS + 1; s++) {
                int crashed = l == N_LABELS || s == N_SEEDS;
                if (crashed && !(l == N_LABELS && q == 1 && s == N_SEEDS)) continue;
                int ll = crashed ? 0 : l;
                fill_row(rv, labels[ll], seqs[q], s, "ok", "");
                for (int e = 0; e < (crashed ? 1 : 3); e++) {
                    snprintf(v[COL_CURVES_run_id], 128, "%s", rv[COL_RUNS_run_id]);
                    snprintf(v[COL_CURVES_label], 128, "%s", labels[ll]);
                    snprintf(v[COL_CURVES_task], 128, "listops");
                    snprintf(v[COL_CURVES_seq_len], 128, "%d", seqs[q]);
                    snprintf(v[COL_CURVES_seed], 128, "%d", s);
                    snprintf(v[COL_CURVES_step], 128, "%d", 100 * (e + 1));
                    snprintf(v[COL_CURVES_train_loss], 128, "%.4f", 2.0 - 0.1 * e);
                    double val = crashed ? 0.2 : syn_test(l, q, s) - 0.03 + 0.01 * e;
                    snprintf(v[COL_CURVES_val], 128, "%.17g", val);
                    snprintf(v[COL_CURVES_lr], 128, "0.001");
                    snprintf(v[COL_CURVES_elapsed_s], 128, "%d", e + 1);
                    assert_int_equal(csv_append_row(path, curves_columns, f, CURVES_N_COLUMNS, err, sizeof err), 0);
                }
            }
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = 0;
    fclose(f);
    return s;
}

static long file_size(const char *dir, const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static char *read_in(const char *dir, const char *name) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    char *s = read_file(path);
    if (!s) fail_msg("cannot read %s", path);
    return s;
}

static int gnuplot_on_path(void) {
    const char *path = getenv("PATH");
    if (!path) return 0;
    char *copy = strdup(path), *save = NULL;
    int found = 0;
    for (char *d = strtok_r(copy, ":", &save); d && !found; d = strtok_r(NULL, ":", &save)) {
        char p[1024];
        snprintf(p, sizeof p, "%s/gnuplot", d);
        found = access(p, X_OK) == 0;
    }
    free(copy);
    return found;
}

/* Rows "seq mean std n ..." of the index block whose comment is "# series: NAME". */
static int dat_block(const char *dat, const char *name, double rows[][4], int max) {
    char want[256];
    snprintf(want, sizeof want, "# series: %s\n", name);
    const char *p = strstr(dat, want);
    if (!p) return -1;
    p += strlen(want);
    int n = 0;
    while (*p && *p != '\n' && *p != '#' && n < max) {
        int used = 0;
        if (sscanf(p, "%lf %lf %lf %lf%n", &rows[n][0], &rows[n][1], &rows[n][2], &rows[n][3], &used) != 4)
            break;
        n++;
        p = strchr(p, '\n');
        if (!p) break;
        p++;
    }
    return n;
}

static char *make_dir(void) {
    char *d = strdup("/tmp/lra_test_plot_XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static void remove_dir(char *d) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", d);
    assert_int_equal(system(cmd), 0);
    free(d);
}

/* Run plot_results with stdout and stderr captured into files; returns its rc. */
static int plot_captured(const char *dir, int quiet, char *err, size_t errlen, char **out, char **errout) {
    char op[600], ep[600];
    snprintf(op, sizeof op, "%s.stdout", dir);
    snprintf(ep, sizeof ep, "%s.stderr", dir);
    fflush(stdout);
    fflush(stderr);
    int so = dup(1), se = dup(2);
    int fo = open(op, O_WRONLY | O_CREAT | O_TRUNC, 0644), fe = open(ep, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fo >= 0 && fe >= 0);
    dup2(fo, 1);
    dup2(fe, 2);
    int rc = plot_results(dir, quiet, err, errlen);
    fflush(stdout);
    fflush(stderr);
    dup2(so, 1);
    dup2(se, 2);
    close(so);
    close(se);
    close(fo);
    close(fe);
    *out = read_file(op);
    *errout = read_file(ep);
    unlink(op);
    unlink(ep);
    return rc;
}

static void check_outputs(const char *dir) {
    char *md = read_in(dir, "summary.md");
    assert_non_null(strstr(md, "# lra results: plot test\n"));
    /* Test accuracy (%) and best validation tables: one row per label, mean ± std (n). */
    for (int k = 0; k < 2; k++) {
        for (int l = 0; l < N_LABELS; l++) {
            char row[512];
            int n = snprintf(row, sizeof row, "| `%s` |", labels[l]);
            for (int q = 0; q < N_SEQ; q++) {
                gstat st = seeds_stat(k ? syn_best : syn_test, l, q, 100.0);
                n += snprintf(row + n, sizeof row - (size_t)n, " %.2f ± %.2f (%d) |", st.mean, st.std, st.n);
            }
            if (!strstr(md, row)) fail_msg("summary.md lacks the row\n%s\n---\n%s", row, md);
        }
    }
    assert_non_null(strstr(md, "## Test accuracy (%)"));
    assert_non_null(strstr(md, "## Best validation accuracy (%)"));
    /* Known values, independently of the formulas above: softmax at 256 over seeds 0 and 1 has
     * test 40.0 and 41.3 -> 40.65 ± 0.92. */
    assert_non_null(strstr(md, "| `softmax` | 40.65 ± 0.92 (2) |"));
    assert_non_null(strstr(md, "Majority-class rate of the test split: 10.00% at seq_len 256, 10.50% at seq_len 512."));
    /* Speed and memory rows. */
    for (int l = 0; l < N_LABELS; l++)
        for (int q = 0; q < N_SEQ; q++) {
            char row[512];
            gstat tps = seeds_stat(syn_tps, l, q, 1), ms = seeds_stat(syn_step, l, q, 1);
            gstat rss = seeds_stat(syn_rss, l, q, 1.0 / 1048576.0);
            snprintf(row, sizeof row, "| `%s` | %d | %.0f | %.2f | %.1f | 2 |", labels[l], seqs[q], tps.mean,
                     ms.mean, rss.mean);
            if (!strstr(md, row)) fail_msg("summary.md lacks the row\n%s\n---\n%s", row, md);
        }
    assert_non_null(strstr(md, "\n9 runs: 8 ok, 1 crashed\n"));
    char line[512];
    snprintf(line, sizeof line, "- `softmax` seq_len=512 seed=2 (run %016x): crashed: %s\n",
             (unsigned)(512 * 131 + 2 * 7 + 7), crash_reason);
    if (!strstr(md, line)) fail_msg("summary.md lacks\n%s---\n%s", line, md);
    for (int i = 0; i < 4; i++) {
        const char *img[] = {"(accuracy.png)", "(memory.png)", "(speed.png)", "(curves.png)"};
        assert_non_null(strstr(md, img[i]));
    }
    free(md);

    const char *files[] = {"accuracy.dat", "accuracy.gp", "memory.dat", "memory.gp",
                           "speed.dat",    "speed.gp",    "curves.dat", "curves.gp"};
    for (size_t i = 0; i < LRA_ARRAY_LEN(files); i++) assert_true(file_size(dir, files[i]) > 0);

    /* .dat numbers: block per label, rows seq_len mean std n. */
    char *acc = read_in(dir, "accuracy.dat"), *mem = read_in(dir, "memory.dat"), *spd = read_in(dir, "speed.dat");
    for (int l = 0; l < N_LABELS; l++) {
        double rows[8][4];
        assert_int_equal(dat_block(acc, labels[l], rows, 8), N_SEQ);
        for (int q = 0; q < N_SEQ; q++) {
            gstat st = seeds_stat(syn_test, l, q, 100.0);
            assert_int_equal((int)rows[q][0], seqs[q]);
            assert_true(fabs(rows[q][1] - st.mean) < 1e-6);
            assert_true(fabs(rows[q][2] - st.std) < 1e-6);
            assert_int_equal((int)rows[q][3], 2);
        }
        assert_int_equal(dat_block(mem, labels[l], rows, 8), N_SEQ);
        for (int q = 0; q < N_SEQ; q++) {
            gstat st = seeds_stat(syn_rss, l, q, 1.0 / 1048576.0);
            assert_true(fabs(rows[q][1] - st.mean) < 1e-6);
            assert_true(fabs(rows[q][2] - st.std) < 1e-6);
        }
        assert_int_equal(dat_block(spd, labels[l], rows, 8), N_SEQ);
        for (int q = 0; q < N_SEQ; q++) {
            gstat st = seeds_stat(syn_tps, l, q, 1);
            assert_true(fabs(rows[q][1] - st.mean) < 1e-6);
            assert_true(fabs(rows[q][2] - st.std) < 1e-6);
        }
    }
    free(acc);
    free(mem);
    free(spd);

    /* Curves: one block per run (8 ok + the crashed one), val in percent. */
    char *cv = read_in(dir, "curves.dat");
    int blocks = 0;
    for (char *p = cv; (p = strstr(p, "# series: ")) != NULL; p++) blocks++;
    assert_int_equal(blocks, 9);
    double rows[8][4];
    const char *p = strstr(cv, "# series: longformer(window=32,global=cls) L=512 seed=1\n");
    assert_non_null(p);
    double st_, v0, st2, v2;
    p = strchr(p, '\n') + 1;
    assert_int_equal(sscanf(p, "%lf %lf", &st_, &v0), 2);
    assert_true(st_ == 100.0);
    assert_true(fabs(v0 - 100.0 * (syn_test(1, 1, 1) - 0.03)) < 1e-6);
    p = strchr(strchr(p, '\n') + 1, '\n') + 1;
    assert_int_equal(sscanf(p, "%lf %lf", &st2, &v2), 2);
    assert_true(st2 == 300.0);
    assert_true(fabs(v2 - 100.0 * (syn_test(1, 1, 1) - 0.01)) < 1e-6);
    (void)rows;
    free(cv);

    /* The .gp titles are single-quoted gnuplot strings; the script is self-contained. */
    char *gp = read_in(dir, "accuracy.gp");
    assert_non_null(strstr(gp, "title 'longformer(window=32,global=cls)'"));
    assert_non_null(strstr(gp, "'accuracy.dat' index 0"));
    assert_non_null(strstr(gp, "set output 'accuracy.png'"));
    assert_non_null(strstr(gp, "set output 'accuracy.svg'"));
    assert_non_null(strstr(gp, "set xtics ('256' 256, '512' 512)"));
    free(gp);
}

static void test_plot_full(void **state) {
    (void)state;
    char *dir = make_dir();
    write_runs(dir);
    write_curves(dir);
    char err[512] = "", *out, *eout;
    int rc = plot_captured(dir, 0, err, sizeof err, &out, &eout);
    if (rc) fail_msg("plot_results: %s", err);
    char expect[600];
    snprintf(expect, sizeof expect, "%s/summary.md\n", dir);
    assert_string_equal(out, expect);
    check_outputs(dir);
    if (gnuplot_on_path()) {
        assert_string_equal(eout, ""); /* no warnings when everything renders */
        const char *charts[] = {"accuracy", "memory", "speed", "curves"};
        for (int i = 0; i < 4; i++) {
            char name[64];
            snprintf(name, sizeof name, "%s.png", charts[i]);
            assert_true(file_size(dir, name) > 1000);
            char *png = read_in(dir, name);
            assert_memory_equal(png, "\x89PNG", 4);
            free(png);
            snprintf(name, sizeof name, "%s.svg", charts[i]);
            assert_true(file_size(dir, name) > 1000);
            char *svg = read_in(dir, name);
            assert_non_null(strstr(svg, "<svg"));
            free(svg);
        }
        assert_int_equal(file_size(dir, "gnuplot.log"), -1);
        char *md = read_in(dir, "summary.md");
        assert_null(strstr(md, "not rendered"));
        free(md);
    } else {
        print_message("gnuplot not on PATH: chart rendering not checked\n");
    }
    free(out);
    free(eout);

    /* quiet: nothing on stdout; a second run over the same directory gives the same summary. */
    char *before = read_in(dir, "summary.md");
    rc = plot_captured(dir, 1, err, sizeof err, &out, &eout);
    assert_int_equal(rc, 0);
    assert_string_equal(out, "");
    char *after = read_in(dir, "summary.md");
    assert_string_equal(before, after);
    free(before);
    free(after);
    free(out);
    free(eout);
    remove_dir(dir);
}

static void test_plot_without_gnuplot(void **state) {
    (void)state;
    char *dir = make_dir(), *empty = make_dir();
    write_runs(dir);
    write_curves(dir);
    char *old_path = getenv("PATH") ? strdup(getenv("PATH")) : NULL;
    setenv("PATH", empty, 1);
    char err[512] = "", *out, *eout;
    int rc = plot_captured(dir, 1, err, sizeof err, &out, &eout);
    if (old_path) setenv("PATH", old_path, 1);
    else unsetenv("PATH");
    free(old_path);
    if (rc) fail_msg("plot_results: %s", err);
    check_outputs(dir);
    assert_int_equal(file_size(dir, "accuracy.png"), -1);
    assert_int_equal(file_size(dir, "accuracy.svg"), -1);
    /* Exactly one warning, naming the scripts and the package. */
    char expect[800];
    snprintf(expect, sizeof expect,
             "lra: warning: gnuplot not found; wrote accuracy.gp, memory.gp, speed.gp, curves.gp in %s, "
             "install gnuplot-nox to render\n",
             dir);
    assert_string_equal(eout, expect);
    char *md = read_in(dir, "summary.md");
    assert_non_null(strstr(md, "gnuplot was not found"));
    free(md);
    free(out);
    free(eout);

    /* A gnuplot that fails: still success, one warning per script, its stderr kept in a log. */
    char fake[600];
    snprintf(fake, sizeof fake, "%s/gnuplot", empty);
    FILE *fp = fopen(fake, "w");
    assert_non_null(fp);
    fputs("#!/bin/sh\necho \"cannot render $1\" >&2\nexit 3\n", fp);
    fclose(fp);
    assert_int_equal(chmod(fake, 0755), 0);
    old_path = getenv("PATH") ? strdup(getenv("PATH")) : NULL;
    setenv("PATH", empty, 1);
    rc = plot_captured(dir, 1, err, sizeof err, &out, &eout);
    if (old_path) setenv("PATH", old_path, 1);
    free(old_path);
    assert_int_equal(rc, 0);
    int warnings = 0;
    for (char *p = eout; (p = strstr(p, "lra: warning: gnuplot failed on ")) != NULL; p++) warnings++;
    assert_int_equal(warnings, 4);
    assert_non_null(strstr(eout, "(exit status 3)"));
    char *log = read_in(dir, "gnuplot.log");
    assert_non_null(strstr(log, "cannot render accuracy.gp\n"));
    assert_non_null(strstr(log, "cannot render curves.gp\n"));
    free(log);
    md = read_in(dir, "summary.md");
    assert_non_null(strstr(md, "gnuplot failed"));
    free(md);
    free(out);
    free(eout);
    remove_dir(dir);
    remove_dir(empty);
}

/* One run, a bpb metric, an apostrophe and enhanced-text characters in the label, no curves. */
static void test_plot_single_run(void **state) {
    (void)state;
    char *dir = make_dir();
    char path[512], err[512];
    snprintf(path, sizeof path, "%s/runs.csv", dir);
    char vals[RUNS_N_COLUMNS][128];
    const char *f[RUNS_N_COLUMNS];
    for (int c = 0; c < RUNS_N_COLUMNS; c++) f[c] = vals[c];
    const char *label = "it's_a^{test}|x";
    fill_row(vals, label, 1024, 0, "ok", "");
    snprintf(vals[COL_RUNS_task], 128, "enwik8");
    snprintf(vals[COL_RUNS_metric], 128, "bpb");
    snprintf(vals[COL_RUNS_test], 128, "1.23456");
    snprintf(vals[COL_RUNS_best_val], 128, "1.2");
    snprintf(vals[COL_RUNS_peak_rss], 128, "%d", 300 * 1048576);
    snprintf(vals[COL_RUNS_tokens_per_s], 128, "5000");
    assert_int_equal(csv_append_row(path, runs_columns, f, RUNS_N_COLUMNS, err, sizeof err), 0);
    char *out, *eout;
    int rc = plot_captured(dir, 1, err, sizeof err, &out, &eout);
    if (rc) fail_msg("plot_results: %s", err);
    char *md = read_in(dir, "summary.md");
    assert_non_null(strstr(md, "## Test bits per byte (lower is better)"));
    assert_non_null(strstr(md, "| `it's_a^{test}\\|x` | 1.2346 ± 0.0000 (1) |"));
    assert_non_null(strstr(md, "\n1 run: 1 ok\n"));
    assert_non_null(strstr(md, "Majority-class rate of the test split: n/a."));
    assert_null(strstr(md, "curves.png"));
    free(md);
    char *gp = read_in(dir, "accuracy.gp");
    assert_non_null(strstr(gp, "title 'it''s_a^{test}|x'"));
    free(gp);
    char *dat = read_in(dir, "memory.dat");
    double rows[2][4];
    assert_int_equal(dat_block(dat, label, rows, 2), 1);
    assert_true(rows[0][0] == 1024 && rows[0][1] == 300.0 && rows[0][2] == 0.0 && rows[0][3] == 1);
    free(dat);
    assert_int_equal(file_size(dir, "curves.gp"), -1);
    if (gnuplot_on_path()) {
        assert_string_equal(eout, "");
        assert_true(file_size(dir, "accuracy.png") > 1000);
        assert_true(file_size(dir, "memory.svg") > 1000);
    }
    free(out);
    free(eout);
    remove_dir(dir);
}

static void test_plot_errors(void **state) {
    (void)state;
    char *dir = make_dir();
    char err[512] = "";
    assert_int_equal(plot_results(dir, 1, err, sizeof err), -1);
    char expect[600];
    snprintf(expect, sizeof expect, "%s/runs.csv: ", dir);
    assert_non_null(strstr(err, expect));
    assert_non_null(strstr(err, "No such file"));

    /* A non-numeric test value in an ok run: file and line. A multi-line reason in row 1 makes
     * the physical line of the bad row 4. */
    char path[512];
    snprintf(path, sizeof path, "%s/runs.csv", dir);
    char vals[RUNS_N_COLUMNS][128];
    const char *f[RUNS_N_COLUMNS];
    for (int c = 0; c < RUNS_N_COLUMNS; c++) f[c] = vals[c];
    fill_row(vals, "softmax", 128, 0, "failed", "line one\nline two");
    assert_int_equal(csv_append_row(path, runs_columns, f, RUNS_N_COLUMNS, err, sizeof err), 0);
    fill_row(vals, "softmax", 128, 1, "ok", "");
    snprintf(vals[COL_RUNS_test], 128, "0.5x");
    assert_int_equal(csv_append_row(path, runs_columns, f, RUNS_N_COLUMNS, err, sizeof err), 0);
    assert_int_equal(plot_results(dir, 1, err, sizeof err), -1);
    snprintf(expect, sizeof expect, "%s/runs.csv:4: column 'test': '0.5x' is not a number", dir);
    assert_string_equal(err, expect);

    /* An empty runs.csv. */
    FILE *fp = fopen(path, "w");
    fclose(fp);
    assert_int_equal(plot_results(dir, 1, err, sizeof err), -1);
    snprintf(expect, sizeof expect, "%s/runs.csv:1: empty file, no header line", dir);
    assert_string_equal(err, expect);

    /* A header without the needed columns. */
    fp = fopen(path, "w");
    fputs("run_id,label\nabc,softmax\n", fp);
    fclose(fp);
    assert_int_equal(plot_results(dir, 1, err, sizeof err), -1);
    snprintf(expect, sizeof expect, "%s/runs.csv:1: no column 'seq_len' in the header", dir);
    assert_string_equal(err, expect);
    remove_dir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plot_full),
        cmocka_unit_test(test_plot_without_gnuplot),
        cmocka_unit_test(test_plot_single_run),
        cmocka_unit_test(test_plot_errors),
    };
    return cmocka_run_group_tests_name("plot", tests, NULL, NULL);
}
