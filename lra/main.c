/* main.c - the `lra` command: subcommands run, list, plot, data, bench. Exit status 0 success,
 * 1 when some run failed, 2 for usage or config errors. stdout carries results, stderr logs. */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "approx.h"
#include "bench.h"
#include "common.h"
#include "config.h"
#include "plot.h"
#include "runner.h"
#include "../tasks/listops.h"

static const char *g_prog = "lra";

static void usage_main(FILE *f) {
    fprintf(f,
            "usage: lra <command> [options]\n"
            "\n"
            "Long Range Arena on CPUs: train Transformers with many attention mechanisms on LRA-style\n"
            "tasks from YAML configs; write runs.csv, curves.csv, summary.md and gnuplot charts.\n"
            "\n"
            "commands:\n"
            "  run CONFIG...      run the experiments (sweeps) described by YAML configs\n"
            "  list [WHAT]        every config key, mechanism and task with types, defaults and docs\n"
            "  plot RESULTS_DIR   regenerate charts and summary.md from a results directory's CSV files\n"
            "  data listops       write generated ListOps splits in LRA's TSV format\n"
            "  bench [CONFIG]     efficiency study: throughput, MFU and memory against sequence length\n"
            "  approx CONFIG      error of approximate attention vs exact softmax; attention spectra\n"
            "\n"
            "options: --help (also after each command), --version\n"
            "'lra COMMAND --help' shows the options of a command.\n");
}

static void usage_run(FILE *f) {
    fprintf(f,
            "usage: lra run CONFIG... [options]\n"
            "\n"
            "  -o, --out DIR        results directory (default results/<name>, name from the first config)\n"
            "  -s, --set KEY=VALUE  override a config key, e.g. --set train.steps=100 --set task.seq_len=[64,128]\n"
            "                       --set attention.impl=materialized (every entry that has the key)\n"
            "  -j, --threads N      OpenMP threads per run (default: all cores)\n"
            "      --resume         continue the sweep in DIR: skip runs whose row is ok, run the others again\n"
            "      --force          move existing results aside (DIR.old-TIMESTAMP) and start over\n"
            "      --shard I/N      run only runs with index %% N == I (cluster job arrays)\n"
            "      --dry-run        print the plan (one line per run) and exit\n"
            "      --max-mem SIZE   refuse runs whose planned memory exceeds SIZE (e.g. 400M, 2G): status oom;\n"
            "                       default: the physical memory\n"
            "      --no-plot        do not write charts and summary.md at the end\n"
            "  -h, --help           this help\n");
}

static int parse_int_arg(const char *s, int *out) {
    char *end;
    long v = strtol(s, &end, 10);
    if (end == s || *end || v < 0 || v > 1 << 20) return -1;
    *out = (int)v;
    return 0;
}

static int cmd_run_with(int argc, char **argv, const char **sets);

static int cmd_run(int argc, char **argv) {
    const char **sets = xcalloc((size_t)argc + 1, sizeof *sets);
    int rc = cmd_run_with(argc, argv, sets);
    free(sets);
    return rc;
}

static int cmd_run_with(int argc, char **argv, const char **sets) {
    static const struct option opts[] = {
        {"out", required_argument, 0, 'o'},     {"set", required_argument, 0, 's'},
        {"threads", required_argument, 0, 'j'}, {"resume", no_argument, 0, 'R'},
        {"force", no_argument, 0, 'F'},         {"shard", required_argument, 0, 'S'},
        {"dry-run", no_argument, 0, 'n'},       {"max-mem", required_argument, 0, 'M'},
        {"no-plot", no_argument, 0, 'P'},       {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    runner_opts ro;
    memset(&ro, 0, sizeof ro);
    int n_sets = 0, c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:s:j:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': ro.out_dir = optarg; break;
        case 's': sets[n_sets++] = optarg; break;
        case 'j':
            if (parse_int_arg(optarg, &ro.threads) || ro.threads < 1) {
                fprintf(stderr, "%s: error: --threads: expected a positive integer, got '%s'\n", g_prog, optarg);
                return 2;
            }
            break;
        case 'R': ro.resume = 1; break;
        case 'F': ro.force = 1; break;
        case 'S':
            if (sscanf(optarg, "%d/%d", &ro.shard_i, &ro.shard_n) != 2 || ro.shard_n < 1 || ro.shard_i < 0 ||
                ro.shard_i >= ro.shard_n) {
                fprintf(stderr, "%s: error: --shard: expected I/N with 0 <= I < N, got '%s'\n", g_prog, optarg);
                return 2;
            }
            break;
        case 'n': ro.dry_run = 1; break;
        case 'M':
            ro.max_mem = lra_parse_size(optarg);
            if (ro.max_mem <= 0) {
                fprintf(stderr, "%s: error: --max-mem: expected a size like 400M or 2G, got '%s'\n", g_prog, optarg);
                return 2;
            }
            break;
        case 'P': ro.no_plot = 1; break;
        case 'h': usage_run(stdout); return 0;
        default: usage_run(stderr); return 2;
        }
    }
    if (optind >= argc) {
        fprintf(stderr, "%s: error: run: no config file given\n", g_prog);
        usage_run(stderr);
        return 2;
    }
    if (ro.resume && ro.force) {
        fprintf(stderr, "%s: error: --resume and --force exclude each other\n", g_prog);
        return 2;
    }
    run_plan plan;
    memset(&plan, 0, sizeof plan);
    char err[2048];
    for (int i = optind; i < argc; i++) {
        if (config_load(&plan, argv[i], sets, n_sets, err, sizeof err)) {
            fprintf(stderr, "%s: error: %s\n", g_prog, err);
            config_plan_free(&plan);
            return 2;
        }
    }
    int rc = runner_run(&plan, &ro);
    config_plan_free(&plan);
    return rc;
}

static void print_schema(const char *section, const param_def *s, int n, int markdown) {
    for (int i = 0; i < n; i++) {
        const param_def *p = &s[i];
        char range[96] = "";
        if (p->type == PT_INT || p->type == PT_FLOAT || p->type == PT_INT_LIST)
            snprintf(range, sizeof range, "[%.10g, %.10g]", p->min, p->max);
        else if (p->type == PT_ENUM) {
            /* "a|b" -> "a, b": a bare '|' would split a markdown table cell */
            size_t k = 0;
            for (const char *c = p->choices; *c && k + 3 < sizeof range; c++) {
                if (*c == '|') range[k++] = ',', range[k++] = ' ';
                else range[k++] = *c;
            }
            range[k] = 0;
        }
        if (markdown)
            printf("| `%s%s` | %s | `%s` | %s | %s |\n", section, p->key, schema_type_name(p->type), p->def, range,
                   p->doc);
        else
            printf("  %-22s %-8s default %-14s %-22s %s\n", p->key, schema_type_name(p->type), p->def, range, p->doc);
    }
}

static int cmd_list(int argc, char **argv) {
    int markdown = 0;
    const char *what = "all";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--markdown")) markdown = 1;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: lra list [all|keys|mechanisms|tasks] [--markdown]\n\n"
                   "Every config key of the model and train sections, every attention mechanism and every task\n"
                   "with its keys, types, defaults, ranges and docs, from the registries.\n");
            return 0;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "%s: error: list: unknown option '%s'\n", g_prog, argv[i]);
            return 2;
        } else if (!strcmp(argv[i], "all") || !strcmp(argv[i], "keys") || !strcmp(argv[i], "mechanisms") ||
                   !strcmp(argv[i], "tasks"))
            what = argv[i];
        else {
            fprintf(stderr, "%s: error: list: unknown topic '%s' (all, keys, mechanisms, tasks)\n", g_prog, argv[i]);
            return 2;
        }
    }
    int all = !strcmp(what, "all");
    const char *hdr = "| key | type | default | range / choices | doc |\n|---|---|---|---|---|\n";
    if (all || !strcmp(what, "keys")) {
        if (markdown) printf("### task (common keys)\n\n%s", hdr);
        else printf("task: (common keys; the task's own keys are listed with the task)\n");
        print_schema(markdown ? "task." : "", task_common_schema, task_common_schema_n, markdown);
        if (markdown) printf("\n### model\n\n%s", hdr);
        else printf("\nmodel:\n");
        print_schema(markdown ? "model." : "", model_schema, model_schema_n, markdown);
        if (markdown) printf("\n### train\n\n%s", hdr);
        else printf("\ntrain: (`seeds: [..]` is the sweep form of `seed`)\n");
        print_schema(markdown ? "train." : "", train_schema, train_schema_n, markdown);
        printf("\n");
    }
    if (all || !strcmp(what, "tasks")) {
        for (int i = 0; i < task_registry_count; i++) {
            const task_ops *t = task_registry[i];
            if (markdown) printf("### task `%s`\n\n%s. Source: %s.\n\n%s", t->name, t->summary, t->source, hdr);
            else printf("task %s: %s\n  source: %s\n", t->name, t->summary, t->source);
            print_schema(markdown ? "task." : "", t->schema, t->n_schema, markdown);
            printf("\n");
        }
    }
    if (all || !strcmp(what, "mechanisms")) {
        for (int i = 0; i < attn_registry_count; i++) {
            const attn_ops *a = attn_registry[i];
            char caps[128] = "";
            if (a->caps & ATTN_CAP_CAUSAL) strcat(caps, " causal");
            if (a->caps & ATTN_CAP_KEY_MASK) strcat(caps, " key-mask");
            if (a->caps & ATTN_CAP_MEMORY) strcat(caps, " memory");
            if (a->caps & ATTN_CAP_MAX_LEN) strcat(caps, " max-len");
            if (a->caps & ATTN_CAP_DROPOUT) strcat(caps, " dropout");
            if (markdown)
                printf("### attention `%s`\n\n%s. Source: %s. Supports:%s.\n\n%s", a->name, a->summary, a->source, caps,
                       a->n_schema ? hdr : "");
            else printf("attention %s: %s\n  source: %s\n  supports:%s\n", a->name, a->summary, a->source, caps);
            print_schema(markdown ? "attention." : "", a->schema, a->n_schema, markdown);
            printf("\n");
        }
    }
    return 0;
}

static int cmd_plot(int argc, char **argv) {
    if (argc == 2 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: lra plot RESULTS_DIR\n\nRewrite the gnuplot scripts, charts (PNG, SVG) and summary.md of a results\n"
               "directory from its runs.csv and curves.csv alone; for a `lra bench` directory, table2.md,\n"
               "summary.md and the bench charts from its bench.csv and maxlen.csv.\n");
        return 0;
    }
    if (argc != 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: lra plot RESULTS_DIR\n");
        return 2;
    }
    char err[1024];
    if (plot_results(argv[1], 0, err, sizeof err)) {
        fprintf(stderr, "%s: error: %s\n", g_prog, err);
        return 2;
    }
    return 0;
}

static void usage_data(FILE *f) {
    fprintf(f, "usage: lra data listops --out DIR [--seed N] [--seq-len N] [--set KEY=VALUE]...\n"
               "\n"
               "Write generated ListOps splits as DIR/basic_{train,val,test}.tsv in LRA's format (header\n"
               "Source<TAB>Target, parenthesised expressions). KEY is any listops task key (lra list tasks).\n");
}

static int cmd_data(int argc, char **argv) {
    static const struct option opts[] = {{"out", required_argument, 0, 'o'},     {"seed", required_argument, 0, 'd'},
                                         {"seq-len", required_argument, 0, 'n'}, {"set", required_argument, 0, 's'},
                                         {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage_data(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "listops")) {
        fprintf(stderr, "%s: error: data: unknown dataset '%s' (known: listops)\n", g_prog, argv[1]);
        return 2;
    }
    const char *out = NULL;
    int seed = 0, seq_len = 2000, c;
    task_params_buf params;
    schema_defaults(task_listops.schema, task_listops.n_schema, params.bytes);
    char err[1024];
    optind = 2;
    while ((c = getopt_long(argc, argv, "o:s:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'd':
            if (parse_int_arg(optarg, &seed)) {
                fprintf(stderr, "%s: error: --seed: expected a non-negative integer, got '%s'\n", g_prog, optarg);
                return 2;
            }
            break;
        case 'n':
            if (parse_int_arg(optarg, &seq_len) || seq_len < 4) {
                fprintf(stderr, "%s: error: --seq-len: expected an integer >= 4, got '%s'\n", g_prog, optarg);
                return 2;
            }
            break;
        case 's': {
            char key[128];
            const char *eq = strchr(optarg, '=');
            if (!eq || eq - optarg >= (long)sizeof key) {
                fprintf(stderr, "%s: error: --set: expected KEY=VALUE, got '%s'\n", g_prog, optarg);
                return 2;
            }
            memcpy(key, optarg, (size_t)(eq - optarg));
            key[eq - optarg] = 0;
            const char *k = strncmp(key, "task.", 5) ? key : key + 5;
            const param_def *d = schema_find(task_listops.schema, task_listops.n_schema, k);
            if (!d) {
                const char *near = schema_nearest(task_listops.schema, task_listops.n_schema, k);
                fprintf(stderr, "%s: error: --set %s: unknown listops key%s%s%s\n", g_prog, key,
                        near ? " (did you mean '" : "", near ? near : "", near ? "'?)" : "");
                return 2;
            }
            if (schema_set(d, params.bytes, eq + 1, err, sizeof err)) {
                fprintf(stderr, "%s: error: --set %s: %s\n", g_prog, key, err);
                return 2;
            }
            break;
        }
        case 'h': usage_data(stdout); return 0;
        default: usage_data(stderr); return 2;
        }
    }
    if (!out || optind != argc) {
        if (!out) fprintf(stderr, "%s: error: data listops: --out DIR is required\n", g_prog);
        else fprintf(stderr, "%s: error: data listops: unexpected argument '%s'\n", g_prog, argv[optind]);
        usage_data(stderr);
        return 2;
    }
    task_env env = {.seed = (uint64_t)seed, .seq_len = seq_len, .base_dir = ".", .data_dir = "data"};
    if (task_listops.validate && task_listops.validate(params.bytes, &env, err, sizeof err)) {
        fprintf(stderr, "%s: error: %s\n", g_prog, err);
        return 2;
    }
    task_split splits[N_SPLITS];
    memset(splits, 0, sizeof splits);
    listops_stats st;
    if (listops_generate((const listops_params *)params.bytes, seq_len, (uint64_t)seed, splits, &st, err, sizeof err) ||
        listops_write_tsv(out, "basic", splits, err, sizeof err)) {
        fprintf(stderr, "%s: error: %s\n", g_prog, err);
        for (int i = 0; i < N_SPLITS; i++) task_split_free(&splits[i]);
        return 1;
    }
    fprintf(stderr, "lra: %d train / %d val / %d test trees, lengths in (%d, %d), %lld draws\n", splits[0].n,
            splits[1].n, splits[2].n, st.min_length, st.max_length, st.draws);
    for (int i = 0; i < N_SPLITS; i++) task_split_free(&splits[i]);
    printf("%s/basic_train.tsv\n%s/basic_val.tsv\n%s/basic_test.tsv\n", out, out, out);
    return 0;
}

/* libgomp reads OMP_WAIT_POLICY when it loads, before main. Its default lets idle threads spin
 * for a while, which on a shared or oversubscribed machine makes every parallel region wait for
 * descheduled spinners: we measured 5-25x slower training steps on a loaded 2-core machine.
 * Unless the user chose a policy, run ourselves again with passive waits (results are identical;
 * only idle threads sleep instead of spinning). */
static void ensure_wait_policy(char **argv) {
    if (getenv("OMP_WAIT_POLICY") || getenv("LRA_NO_REEXEC")) return;
    setenv("OMP_WAIT_POLICY", "passive", 1);
    setenv("LRA_NO_REEXEC", "1", 1);
    execv("/proc/self/exe", argv);
    /* exec failed (no /proc): carry on with the default policy */
}

int main(int argc, char **argv) {
    ensure_wait_policy(argv);
    if (argc < 2) {
        usage_main(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--version") || !strcmp(cmd, "-V") || !strcmp(cmd, "version")) {
        printf("lra %s\n", LRA_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        usage_main(stdout);
        return 0;
    }
    if (!strcmp(cmd, "run")) return cmd_run(argc - 1, argv + 1);
    if (!strcmp(cmd, "list")) return cmd_list(argc - 1, argv + 1);
    if (!strcmp(cmd, "plot")) return cmd_plot(argc - 1, argv + 1);
    if (!strcmp(cmd, "data")) return cmd_data(argc - 1, argv + 1);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - 1, argv + 1);
    if (!strcmp(cmd, "approx")) return cmd_approx(argc - 1, argv + 1);
    fprintf(stderr, "%s: error: unknown command '%s'\n", g_prog, cmd);
    usage_main(stderr);
    return 2;
}
