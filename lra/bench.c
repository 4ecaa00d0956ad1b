/* bench.c - the efficiency benchmark (DESIGN.md "Performance"). Each (mechanism, seq_len) point
 * runs in a forked child so its peak RSS (wait4) is its own; the child builds the model exactly as
 * `lra run` would (same arenas, same kernels) on random byte tokens, runs warm-up steps, then
 * times training steps (forward + backward + AdamW) and inference forwards, and reports medians.
 *
 * MFU = model FLOP/s / sgemm FLOP/s, where model FLOP/s = 3 x forward FLOPs per step / step time
 * (forward FLOPs count the projections, FFN, head and the mechanism's own declared FLOPs;
 * backward = 2 x forward, the usual convention, not counting recomputation), and the sgemm peak
 * is measured on the same threads right before.
 */
#include "bench.h"

#include <cblas.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include "common.h"
#include "config.h"
#include "csv.h"
#include "model.h"
#include "rng.h"

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

typedef struct {
    int ok;
    char reason[256];
    double train_ms, train_ms_min, train_ms_max, infer_ms, fwd_flops, sgemm_peak;
    long long planned, act_bytes, params;
} bench_point;

typedef struct {
    int B, d_model, n_heads, n_layers, d_ff, steps, warmup, threads;
    long long max_mem;
} bench_opts;

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Build a run config for one point: model/train defaults, the given sizes, mechanism + params. */
static int bench_config(run_cfg *c, const bench_opts *o, const char *spec, int seq_len, char *err, size_t errlen) {
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
    c->train.batch_size = o->B;
    c->task.seq_len = seq_len;
    snprintf(c->task.name, sizeof c->task.name, "listops");
    c->task_ops = task_find("listops");
    /* spec: name[:key=value[:key=value...]] */
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

static void bench_child(const run_cfg *c, const bench_opts *o, bench_point *pt) {
    memset(pt, 0, sizeof *pt);
    char err[256];
    pt->sgemm_peak = bench_sgemm_peak(1024, 3);
    model_t *m = xcalloc(1, sizeof *m);
    if (model_build(m, c, o->B, 257, 2, TASK_CLASSIFY, o->max_mem, err, sizeof err)) {
        snprintf(pt->reason, sizeof pt->reason, "%s", err);
        pt->planned = (long long)model_planned_total(m);
        return;
    }
    pt->planned = (long long)model_planned_total(m);
    pt->act_bytes = (long long)model_planned_bytes(m, MEM_ACTS);
    pt->params = (long long)m->n_params_real;
    pt->fwd_flops = m->fwd_flops;
    rng_t r = rng_make(7, RNG_TEST);
    for (int e = 0; e < m->Be; e++)
        for (int n = 0; n < m->N; n++) {
            m->ids[(size_t)e * m->N + n] = (m->use_cls && n == 0) ? m->V - 1 : rng_int(&r, 1, 256);
            m->mask[(size_t)e * m->N + n] = 1;
        }
    for (int b = 0; b < m->B; b++) m->targets[b] = rng_int(&r, 0, 1);
    int total = o->warmup + o->steps;
    double *tt = xmalloc(sizeof(double) * (size_t)total), *ti = xmalloc(sizeof(double) * (size_t)total);
    for (int s = 0; s < total; s++) {
        double t = lra_now();
        model_forward(m, 1, NULL, NULL);
        model_zero_grad(m);
        model_backward(m);
        model_update(m, 1e-4f);
        tt[s] = lra_now() - t;
    }
    for (int s = 0; s < total; s++) {
        double t = lra_now();
        model_forward(m, 0, NULL, NULL);
        ti[s] = lra_now() - t;
    }
    qsort(tt + o->warmup, (size_t)o->steps, sizeof(double), cmp_d);
    qsort(ti + o->warmup, (size_t)o->steps, sizeof(double), cmp_d);
    /* median: the middle value, or the mean of the two middle values for an even count */
    int lo = o->warmup + (o->steps - 1) / 2, hi = o->warmup + o->steps / 2;
    pt->train_ms = 1e3 * 0.5 * (tt[lo] + tt[hi]);
    pt->train_ms_min = 1e3 * tt[o->warmup];
    pt->train_ms_max = 1e3 * tt[total - 1];
    pt->infer_ms = 1e3 * 0.5 * (ti[lo] + ti[hi]);
    pt->ok = 1;
    free(tt);
    free(ti);
    model_free(m);
    free(m);
}

static int run_point(const run_cfg *c, const bench_opts *o, bench_point *pt, long long *rss) {
    int fds[2];
    if (pipe(fds)) return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        close(fds[0]);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (o->threads > 0) lra_set_threads(o->threads);
        bench_point p;
        bench_child(c, o, &p);
        ssize_t w = write(fds[1], &p, sizeof p);
        _exit(w == (ssize_t)sizeof p ? 0 : 3);
    }
    close(fds[1]);
    size_t got = 0;
    for (;;) {
        ssize_t n = read(fds[0], (char *)pt + got, sizeof *pt - got);
        if (n > 0) {
            got += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        break;
    }
    close(fds[0]);
    int st;
    struct rusage ru;
    memset(&ru, 0, sizeof ru);
    while (wait4(pid, &st, 0, &ru) < 0 && errno == EINTR) {
    }
    *rss = (long long)ru.ru_maxrss * 1024LL;
    if (got != sizeof *pt) {
        memset(pt, 0, sizeof *pt);
        if (WIFSIGNALED(st)) snprintf(pt->reason, sizeof pt->reason, "crashed: signal %d", WTERMSIG(st));
        else snprintf(pt->reason, sizeof pt->reason, "failed without a report");
    }
    return 0;
}

static void usage_bench(FILE *f) {
    fprintf(f, "usage: lra bench [options]\n"
               "\n"
               "Training-step and inference throughput, model FLOP/s, MFU (against the sgemm FLOP/s measured\n"
               "on the same threads) and memory for each mechanism and sequence length. Random byte tokens,\n"
               "CLS pooling, the same model and kernels as `lra run`.\n"
               "\n"
               "  -a, --attention LIST  mechanisms, comma-separated, each name[:key=value...]\n"
               "                        (default softmax,softmax:impl=materialized)\n"
               "  -n, --seq-len LIST    sequence lengths (default 1024,2048,4096)\n"
               "  -b, --batch N         batch size (default 4)\n"
               "      --d-model N       (default 64)    --heads N (default 4)\n"
               "      --layers N        (default 2)     --d-ff N (default 128)\n"
               "      --steps N         timed steps (default 5), after --warmup N (default 2)\n"
               "  -j, --threads N       OpenMP threads (default: all cores)\n"
               "  -o, --out DIR         also write DIR/bench.csv (default results/bench)\n"
               "      --max-mem SIZE    skip points whose planned memory exceeds SIZE\n"
               "  -h, --help\n");
}

static int parse_list(const char *s, int *out, int max) {
    int n = 0;
    const char *p = s;
    while (*p && n < max) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > 1 << 24) return -1;
        out[n++] = (int)v;
        if (*end == ',') end++;
        else if (*end) return -1;
        p = end;
    }
    return n;
}

int cmd_bench(int argc, char **argv) {
    static const struct option opts[] = {
        {"attention", required_argument, 0, 'a'}, {"seq-len", required_argument, 0, 'n'},
        {"batch", required_argument, 0, 'b'},     {"d-model", required_argument, 0, 'D'},
        {"heads", required_argument, 0, 'H'},     {"layers", required_argument, 0, 'L'},
        {"d-ff", required_argument, 0, 'F'},      {"steps", required_argument, 0, 'S'},
        {"warmup", required_argument, 0, 'W'},    {"threads", required_argument, 0, 'j'},
        {"out", required_argument, 0, 'o'},       {"max-mem", required_argument, 0, 'M'},
        {"help", no_argument, 0, 'h'},            {0, 0, 0, 0}};
    bench_opts o = {.B = 4, .d_model = 64, .n_heads = 4, .n_layers = 2, .d_ff = 128, .steps = 5, .warmup = 2};
    const char *attn = "softmax,softmax:impl=materialized", *out = "results/bench";
    int lens[32] = {1024, 2048, 4096}, n_lens = 3, c, li = -1;
    optind = 1;
    while ((c = getopt_long(argc, argv, "a:n:b:j:o:h", opts, &li)) != -1) {
        int *dst = NULL;
        switch (c) {
        case 'a': attn = optarg; break;
        case 'n':
            n_lens = parse_list(optarg, lens, 32);
            if (n_lens <= 0) {
                fprintf(stderr, "lra: error: --seq-len: expected a list like 1024,2048, got '%s'\n", optarg);
                return 2;
            }
            break;
        case 'b': dst = &o.B; break;
        case 'D': dst = &o.d_model; break;
        case 'H': dst = &o.n_heads; break;
        case 'L': dst = &o.n_layers; break;
        case 'F': dst = &o.d_ff; break;
        case 'S': dst = &o.steps; break;
        case 'W': dst = &o.warmup; break;
        case 'j': dst = &o.threads; break;
        case 'o': out = optarg; break;
        case 'M':
            o.max_mem = lra_parse_size(optarg);
            if (o.max_mem <= 0) {
                fprintf(stderr, "lra: error: --max-mem: expected a size like 400M, got '%s'\n", optarg);
                return 2;
            }
            break;
        case 'h': usage_bench(stdout); return 0;
        default: usage_bench(stderr); return 2;
        }
        if (dst) {
            char *end;
            long v = strtol(optarg, &end, 10);
            if (end == optarg || *end || v < (c == 'W' ? 0 : 1) || v > 1 << 20) {
                const char *name = "option";
                for (int j = 0; opts[j].name; j++)
                    if (opts[j].val == c) name = opts[j].name;
                fprintf(stderr, "lra: error: --%s: expected a positive integer, got '%s'\n", name, optarg);
                return 2;
            }
            *dst = (int)v;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "lra: error: bench: unexpected argument '%s'\n", argv[optind]);
        usage_bench(stderr);
        return 2;
    }
    if (o.d_model % o.n_heads) {
        fprintf(stderr, "lra: error: --d-model %d is not a multiple of --heads %d\n", o.d_model, o.n_heads);
        return 2;
    }

    /* Validate every spec before running anything. */
    char specs[32][256];
    int n_specs = 0;
    {
        char buf[4096];
        snprintf(buf, sizeof buf, "%s", attn);
        char *save = NULL;
        for (char *t = strtok_r(buf, ",", &save); t && n_specs < 32; t = strtok_r(NULL, ",", &save))
            snprintf(specs[n_specs++], sizeof specs[0], "%s", t);
    }
    char err[512];
    for (int i = 0; i < n_specs; i++) {
        run_cfg tmp;
        if (bench_config(&tmp, &o, specs[i], lens[0], err, sizeof err)) {
            fprintf(stderr, "lra: error: %s\n", err);
            return 2;
        }
    }
    char csv_path[1100];
    snprintf(csv_path, sizeof csv_path, "%s/bench.csv", out);
    {
        char cmd[1200];
        snprintf(cmd, sizeof cmd, "%s", out);
        for (char *p = cmd + 1; *p; p++)
            if (*p == '/') *p = 0, mkdir(cmd, 0755), *p = '/';
        mkdir(cmd, 0755);
    }
    unlink(csv_path); /* one invocation, one table */
    int threads = o.threads > 0 ? o.threads : lra_threads();
    printf("lra bench: B=%d d_model=%d heads=%d layers=%d d_ff=%d, byte vocabulary, CLS pooling, %d threads, "
           "median of %d steps after %d warm-up\n",
           o.B, o.d_model, o.n_heads, o.n_layers, o.d_ff, threads, o.steps, o.warmup);
    printf("%-30s %7s %10s %10s %11s %10s %9s %7s %11s %11s %11s\n", "attention", "seq_len", "train ms", "infer ms",
           "tokens/s", "GFLOP/s", "sgemm", "MFU", "planned", "act", "peak RSS");
    static const char *const hdr[] = {"label",    "seq_len",      "batch_size",   "d_model",  "n_heads",
                                      "n_layers", "d_ff",         "threads",      "status",   "reason",
                                      "train_ms", "train_ms_min", "train_ms_max", "infer_ms", "tokens_per_s",
                                      "infer_tokens_per_s",       "flops_per_s",  "sgemm_flops_per_s",
                                      "mfu",      "params",       "mem_planned",  "act_bytes", "peak_rss",
                                      "version"};
    int nh = (int)(sizeof hdr / sizeof hdr[0]), bad = 0;
    for (int i = 0; i < n_specs; i++)
        for (int k = 0; k < n_lens; k++) {
            run_cfg cfg;
            bench_config(&cfg, &o, specs[i], lens[k], err, sizeof err);
            bench_point pt;
            long long rss = 0;
            if (run_point(&cfg, &o, &pt, &rss)) {
                fprintf(stderr, "lra: error: fork: %s\n", strerror(errno));
                return 1;
            }
            double tokens = (double)o.B * lens[k];
            double fps = pt.ok ? 3.0 * pt.fwd_flops / (pt.train_ms * 1e-3) : 0;
            char a[32], b[32], r[32];
            if (pt.ok)
                printf("%-30s %7d %10.1f %10.1f %11.0f %10.2f %9.1f %6.1f%% %11s %11s %11s\n", cfg.attn_label, lens[k],
                       pt.train_ms, pt.infer_ms, tokens / (pt.train_ms * 1e-3), fps * 1e-9, pt.sgemm_peak * 1e-9,
                       100 * fps / pt.sgemm_peak, lra_fmt_bytes((double)pt.planned, a, sizeof a),
                       lra_fmt_bytes((double)pt.act_bytes, b, sizeof b), lra_fmt_bytes((double)rss, r, sizeof r));
            else {
                printf("%-30s %7d  skipped: %s\n", cfg.attn_label, lens[k], pt.reason);
                bad++;
            }
            fflush(stdout);
            char f[24][64];
            const char *fields[24];
            for (int j = 0; j < nh; j++) f[j][0] = 0, fields[j] = f[j];
            fields[0] = cfg.attn_label;
            snprintf(f[1], 64, "%d", lens[k]);
            snprintf(f[2], 64, "%d", o.B);
            snprintf(f[3], 64, "%d", o.d_model);
            snprintf(f[4], 64, "%d", o.n_heads);
            snprintf(f[5], 64, "%d", o.n_layers);
            snprintf(f[6], 64, "%d", o.d_ff);
            snprintf(f[7], 64, "%d", threads);
            fields[8] = pt.ok ? "ok" : (strstr(pt.reason, "--max-mem") ? "oom" : "failed");
            fields[9] = pt.reason;
            if (pt.ok) {
                snprintf(f[10], 64, "%.3f", pt.train_ms);
                snprintf(f[11], 64, "%.3f", pt.train_ms_min);
                snprintf(f[12], 64, "%.3f", pt.train_ms_max);
                snprintf(f[13], 64, "%.3f", pt.infer_ms);
                snprintf(f[14], 64, "%.1f", tokens / (pt.train_ms * 1e-3));
                snprintf(f[15], 64, "%.1f", tokens / (pt.infer_ms * 1e-3));
                snprintf(f[16], 64, "%.4g", fps);
                snprintf(f[17], 64, "%.4g", pt.sgemm_peak);
                snprintf(f[18], 64, "%.4f", fps / pt.sgemm_peak);
                snprintf(f[19], 64, "%lld", pt.params);
                snprintf(f[21], 64, "%lld", pt.act_bytes);
                snprintf(f[22], 64, "%lld", rss);
            }
            snprintf(f[20], 64, "%lld", pt.planned);
            fields[23] = LRA_VERSION;
            if (csv_append_row(csv_path, hdr, fields, nh, err, sizeof err)) fprintf(stderr, "lra: warning: %s\n", err);
        }
    printf("results: %s\n", csv_path);
    return bad ? 1 : 0;
}
