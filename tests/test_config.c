/* test_config.c - schema parsing/formatting and YAML experiment configs (lra/schema.c, lra/config.c).
 *
 * Config files are written into a fresh mkdtemp directory and loaded through the real registries
 * (attention/registry.c, tasks/registry.c); checks that need a mechanism with a capability the
 * registry may not have yet (no causal support, an int-list parameter) look it up and skip
 * when there is none.
 */
#include "testutil.h"

#include <ctype.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common.h"
#include "config.h"
#include "schema.h"

static char g_dir[256];

static int group_setup(void **state) {
    (void)state;
    snprintf(g_dir, sizeof g_dir, "/tmp/lra_test_config_XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int group_teardown(void **state) {
    (void)state;
    DIR *d = opendir(g_dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char p[600];
            snprintf(p, sizeof p, "%s/%s", g_dir, e->d_name);
            unlink(p);
        }
        closedir(d);
    }
    rmdir(g_dir);
    return 0;
}

/* Write text to g_dir/name; the full path goes to path[512]. */
static void write_cfg(const char *name, const char *text, char *path) {
    snprintf(path, 512, "%s/%s", g_dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void load_ok(const char *name, const char *text, const char *const *sets, int n_sets, run_plan *plan) {
    char path[512], err[1024] = "";
    write_cfg(name, text, path);
    if (config_load(plan, path, sets, n_sets, err, sizeof err) != 0) fail_msg("config_load(%s) failed: %s", name, err);
}

/* config_load must fail with "PATH:LINE:COL: " and a message containing needle. */
static void expect_err(const char *name, const char *text, const char *const *sets, int n_sets, int line, int col,
                       const char *needle) {
    char path[512], err[1024] = "", want[600];
    write_cfg(name, text, path);
    run_plan plan = {0};
    int rc = config_load(&plan, path, sets, n_sets, err, sizeof err);
    if (rc != -1) fail_msg("%s: expected an error containing '%s', got success (%d runs)", name, needle, plan.n_runs);
    snprintf(want, sizeof want, "%s:%d:%d: ", path, line, col);
    if (strncmp(err, want, strlen(want))) fail_msg("%s: error '%s' does not start with '%s'", name, err, want);
    if (!strstr(err, needle)) fail_msg("%s: error '%s' does not contain '%s'", name, err, needle);
    assert_int_equal(plan.n_runs, 0);
    assert_null(plan.runs);
}

/* An --set error: the message must be exactly want (the "--set KEY: ..." form has no file position). */
static void expect_set_err(const char *text, const char *set, const char *want) {
    char path[512], err[1024] = "";
    write_cfg("set_err.yaml", text, path);
    run_plan plan = {0};
    const char *sets[] = {set};
    int rc = config_load(&plan, path, sets, 1, err, sizeof err);
    if (rc != -1) fail_msg("--set %s: expected an error, got success", set);
    if (strncmp(err, want, strlen(want))) fail_msg("--set %s: error '%s' does not start with '%s'", set, err, want);
    assert_int_equal(plan.n_runs, 0);
}

static int param_int(const param_def *s, int n, const void *obj, const char *key) {
    const param_def *d = schema_find(s, n, key);
    if (!d) fail_msg("no key '%s'", key);
    int v;
    memcpy(&v, (const unsigned char *)obj + d->offset, sizeof v);
    return v;
}

static int attn_int(const run_cfg *c, const char *key) {
    return param_int(c->attn_ops->schema, c->attn_ops->n_schema, c->attn_params.bytes, key);
}

static int impl_of(const run_cfg *c) { return attn_int(c, "impl"); }

static int impl_index(const char *name) {
    const attn_ops *a = attn_find("softmax");
    const param_def *d = schema_find(a->schema, a->n_schema, "impl");
    return schema_enum_index(d->choices, name);
}

static char *dump_text(const run_cfg *c) {
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    config_dump_yaml(c, f);
    fclose(f);
    return text;
}

/* ------------------------------------------------------------------ schema.c */

typedef struct {
    int i;
    float f;
    int b;
    char s[8];
    int e;
    lra_ilist l;
    double d;
} tcfg;

static const param_def tschema[] = {
    P_INT(tcfg, i, "4", 1, 65536, "an int"),
    P_FLOAT(tcfg, f, "0.1", 0, 1, "a float"),
    P_BOOL(tcfg, b, "false", "a bool"),
    P_STRING(tcfg, s, "abc", "a string"),
    P_ENUM(tcfg, e, "tiled", "tiled|materialized|other", "an enum"),
    P_ILIST(tcfg, l, "[1, 2]", 1, 8, "an int list"),
    P_FLOAT(tcfg, d, "0.1", -1e300, 1e300, "a double"),
};
#define TN ((int)LRA_ARRAY_LEN(tschema))

static void set_ok(const char *key, tcfg *c, const char *text) {
    char err[256];
    if (schema_set(schema_find(tschema, TN, key), c, text, err, sizeof err))
        fail_msg("schema_set(%s, '%s') failed: %s", key, text, err);
}

static void set_bad(const char *key, tcfg *c, const char *text, const char *want) {
    char err[256] = "";
    tcfg before = *c;
    assert_int_equal(schema_set(schema_find(tschema, TN, key), c, text, err, sizeof err), -1);
    if (!strstr(err, want)) fail_msg("schema_set(%s, '%s'): error '%s' lacks '%s'", key, text, err, want);
    assert_memory_equal(&before, c, sizeof before); /* untouched on error */
}

static void test_schema_defaults_and_set(void **state) {
    (void)state;
    tcfg c;
    memset(&c, 0x55, sizeof c);
    schema_defaults(tschema, TN, &c);
    assert_int_equal(c.i, 4);
    assert_true(c.f == 0.1f);
    assert_int_equal(c.b, 0);
    assert_string_equal(c.s, "abc");
    assert_int_equal(c.e, 0);
    assert_int_equal(c.l.n, 2);
    assert_int_equal(c.l.v[0], 1);
    assert_int_equal(c.l.v[1], 2);
    assert_true(c.d == 0.1);

    /* ints: inclusive range, strict syntax, exact message */
    set_ok("i", &c, "1");
    assert_int_equal(c.i, 1);
    set_ok("i", &c, "65536");
    assert_int_equal(c.i, 65536);
    set_ok("i", &c, "+12");
    assert_int_equal(c.i, 12);
    char err[256];
    assert_int_equal(schema_set(&tschema[0], &c, "12.5", err, sizeof err), -1);
    assert_string_equal(err, "expected an integer in [1, 65536], got '12.5'");
    set_bad("i", &c, "65537", "got '65537'");
    set_bad("i", &c, "0", "in [1, 65536]");
    set_bad("i", &c, "-3", "got '-3'");
    set_bad("i", &c, "1e3", "expected an integer");
    set_bad("i", &c, "abc", "got 'abc'");
    set_bad("i", &c, "", "got ''");
    set_bad("i", &c, "99999999999999999999", "expected an integer");

    /* floats */
    set_ok("f", &c, "1");
    assert_true(c.f == 1.0f);
    set_ok("f", &c, "0");
    assert_true(c.f == 0.0f);
    set_ok("f", &c, "1e-3");
    assert_true(c.f == 1e-3f);
    set_ok("f", &c, "-0.0");
    assert_int_equal(schema_set(&tschema[1], &c, "2", err, sizeof err), -1);
    assert_string_equal(err, "expected a number in [0, 1], got '2'");
    set_bad("f", &c, "1.0000001", "in [0, 1]");
    set_bad("f", &c, "nan", "expected a number");
    set_bad("f", &c, "inf", "expected a number");
    set_bad("f", &c, "0x1p-3", "expected a number");
    set_bad("f", &c, "0.5.5", "expected a number");
    set_bad("d", &c, "1e400", "expected a number");

    /* bools: true/false and yes/no, on/off in any case */
    const char *yes[] = {"true", "True", "TRUE", "yes", "on", "On"};
    const char *no[] = {"false", "False", "no", "NO", "off"};
    for (size_t k = 0; k < LRA_ARRAY_LEN(yes); k++) {
        c.b = 0;
        set_ok("b", &c, yes[k]);
        assert_int_equal(c.b, 1);
    }
    for (size_t k = 0; k < LRA_ARRAY_LEN(no); k++) {
        c.b = 1;
        set_ok("b", &c, no[k]);
        assert_int_equal(c.b, 0);
    }
    set_bad("b", &c, "maybe", "expected true or false, got 'maybe'");
    set_bad("b", &c, "1", "expected true or false");

    /* strings fit their capacity including the NUL */
    set_ok("s", &c, "abcdefg");
    assert_string_equal(c.s, "abcdefg");
    set_bad("s", &c, "abcdefgh", "at most 7 characters");

    /* enums by name, with a suggestion */
    set_ok("e", &c, "materialized");
    assert_int_equal(c.e, 1);
    set_bad("e", &c, "tild", "expected one of tiled|materialized|other, got 'tild' (did you mean 'tiled'?)");
    set_bad("e", &c, "xyzzy", "got 'xyzzy'");

    /* int lists: "[1, 2]", "1,2", a single "4", "[]" */
    set_ok("l", &c, "[3, 4, 5]");
    assert_int_equal(c.l.n, 3);
    assert_int_equal(c.l.v[2], 5);
    set_ok("l", &c, "1,2");
    assert_int_equal(c.l.n, 2);
    assert_int_equal(c.l.v[0], 1);
    assert_int_equal(c.l.v[1], 2);
    set_ok("l", &c, "4");
    assert_int_equal(c.l.n, 1);
    assert_int_equal(c.l.v[0], 4);
    set_ok("l", &c, "[]");
    assert_int_equal(c.l.n, 0);
    set_ok("l", &c, "[8,1]");
    assert_int_equal(c.l.n, 2);
    set_bad("l", &c, "[1, 9]", "bad item '9'");
    set_bad("l", &c, "[1,,2]", "expected a list of integers");
    set_bad("l", &c, "[1, 2", "expected a list of integers");
    set_bad("l", &c, "[1, x]", "bad item 'x'");
    char many[200] = "[";
    for (int k = 0; k < LRA_ILIST_MAX + 1; k++) strcat(many, k ? ",1" : "1");
    strcat(many, "]");
    set_bad("l", &c, many, "at most 32 integers");
}

static void fmt(const char *key, const tcfg *c, const char *want) {
    char buf[256];
    schema_format(schema_find(tschema, TN, key), c, buf, sizeof buf);
    assert_string_equal(buf, want);
}

static void test_schema_format_roundtrip(void **state) {
    (void)state;
    tcfg c;
    schema_defaults(tschema, TN, &c);
    fmt("i", &c, "4");
    fmt("f", &c, "0.1");
    fmt("b", &c, "false");
    fmt("s", &c, "abc");
    fmt("e", &c, "tiled");
    fmt("l", &c, "[1, 2]");
    fmt("d", &c, "0.1");
    c.f = 1e-9f;
    fmt("f", &c, "1e-09");
    c.f = 1.0f;
    fmt("f", &c, "1");
    c.f = 0.98f;
    fmt("f", &c, "0.98");
    c.e = 2;
    fmt("e", &c, "other");
    c.l.n = 0;
    fmt("l", &c, "[]");
    c.b = 1;
    fmt("b", &c, "true");

    /* Every float round trips exactly through format -> set (random bit patterns in [0, 1]). */
    const param_def *fd = schema_find(tschema, TN, "f"), *dd = schema_find(tschema, TN, "d");
    rng_t r = rng_make(7, RNG_TEST);
    int checked = 0;
    for (int k = 0; k < 20000; k++) {
        uint32_t bits = (uint32_t)rng_u64(&r);
        float x;
        memcpy(&x, &bits, sizeof x);
        if (!isfinite(x)) continue;
        x = fabsf(x);
        if (x > 1) x = 1 / x;
        tcfg a, b;
        schema_defaults(tschema, TN, &a);
        b = a;
        a.f = x;
        char buf[64], err[128];
        schema_format(fd, &a, buf, sizeof buf);
        assert_int_equal(schema_set(fd, &b, buf, err, sizeof err), 0);
        assert_memory_equal(&a.f, &b.f, sizeof a.f);
        double y = (double)x * 1e10 + 1.0 / 3.0;
        a.d = y;
        schema_format(dd, &a, buf, sizeof buf);
        assert_int_equal(schema_set(dd, &b, buf, err, sizeof err), 0);
        assert_true(b.d == y);
        checked++;
    }
    assert_true(checked > 19000);

    /* dump: "key: value" lines, strings quoted only when YAML needs it */
    schema_defaults(tschema, TN, &c);
    snprintf(c.s, sizeof c.s, "a b:#");
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    schema_dump_yaml(tschema, 3, &c, 2, f);
    schema_dump_yaml(tschema + 3, 1, &c, 2, f);
    fclose(f);
    assert_string_equal(text, "  i: 4\n  f: 0.1\n  b: false\n  s: \"a b:#\"\n");
    free(text);
}

static void test_schema_helpers(void **state) {
    (void)state;
    assert_ptr_equal(schema_find(tschema, TN, "l"), &tschema[5]);
    assert_null(schema_find(tschema, TN, "zz"));
    assert_string_equal(schema_nearest(model_schema, model_schema_n, "d_modle"), "d_model");
    assert_string_equal(schema_nearest(model_schema, model_schema_n, "nheads"), "n_heads");
    assert_null(schema_nearest(model_schema, model_schema_n, "completely_else"));
    assert_int_equal(schema_enum_index("a|bb|c", "bb"), 1);
    assert_int_equal(schema_enum_index("a|bb|c", "c"), 2);
    assert_int_equal(schema_enum_index("a|bb|c", "b"), -1);
    char buf[16];
    assert_string_equal(schema_enum_name("a|bb|c", 2, buf, sizeof buf), "c");
    assert_string_equal(schema_enum_name("a|bb|c", 3, buf, sizeof buf), "");
    assert_string_equal(schema_type_name(PT_INT_LIST), "int list");
    assert_string_equal(schema_type_name(PT_ENUM), "enum");

    /* The fixed schemas: sizes, docs, defaults that parse (schema_defaults aborts otherwise). */
    assert_int_equal(model_schema_n, 20);
    assert_int_equal(train_schema_n, 20);
    assert_int_equal(task_common_schema_n, 4);
    const param_def *all[] = {model_schema, train_schema, task_common_schema};
    const int ns[] = {model_schema_n, train_schema_n, task_common_schema_n};
    for (int s = 0; s < 3; s++)
        for (int i = 0; i < ns[s]; i++) {
            assert_true(all[s][i].doc && strlen(all[s][i].doc) > 10);
            if (all[s][i].type == PT_INT || all[s][i].type == PT_FLOAT) assert_true(all[s][i].min < all[s][i].max);
        }
}

/* ------------------------------------------------------------------ config: values */

static const char *FULL =
    "# a full config\n"
    "name: full\n"
    "task:\n"
    "  name: listops\n"
    "  seq_len: 256\n"
    "  data_seed: 7\n"
    "  data_dir: my data\n"
    "  max_depth: 6\n"
    "model:\n"
    "  d_model: 32\n"
    "  n_heads: 2\n"
    "  n_layers: 3\n"
    "  d_ff: 96\n"
    "  mlp_dim: 48\n"
    "  dropout: 0.2\n"
    "  attn_dropout: 0.05\n"
    "  pos: learned\n"
    "  pooling: mean\n"
    "  causal: yes\n"
    "  emb_init_std: 0.5\n"
    "attention:\n"
    "  name: softmax\n"
    "  impl: materialized\n"
    "train:\n"
    "  seed: 5\n"
    "  batch_size: 8\n"
    "  steps: 200\n"
    "  lr: 5e-4\n"
    "  warmup: 300\n"
    "  schedule: linear\n"
    "  min_lr_ratio: 0\n"
    "  weight_decay: 0.1\n"
    "  beta1: 0.8\n"
    "  beta2: 0.999\n"
    "  eps: 1e-6\n"
    "  grad_clip: 0\n"
    "  eval_every: 20\n"
    "  eval_batches: 4\n"
    "  max_minutes: 2.5\n"
    "  log_every: 10\n";

static void test_full_config(void **state) {
    (void)state;
    run_plan plan = {0};
    load_ok("full.yaml", FULL, NULL, 0, &plan);
    assert_int_equal(plan.n_runs, 1);
    assert_string_equal(plan.name, "full");
    const run_cfg *c = &plan.runs[0];
    assert_string_equal(c->exp_name, "full");
    assert_string_equal(c->base_dir, g_dir);
    assert_non_null(strstr(c->config_path, "/full.yaml"));
    assert_string_equal(c->task.name, "listops");
    assert_ptr_equal(c->task_ops, task_find("listops"));
    assert_int_equal(c->task.seq_len, 256);
    assert_int_equal(c->task.data_seed, 7);
    assert_string_equal(c->task.data_dir, "my data");
    assert_int_equal(param_int(c->task_ops->schema, c->task_ops->n_schema, c->task_params.bytes, "max_depth"), 6);
    assert_int_equal(c->model.d_model, 32);
    assert_int_equal(c->model.n_heads, 2);
    assert_int_equal(c->model.n_layers, 3);
    assert_int_equal(c->model.d_ff, 96);
    assert_int_equal(c->model.mlp_dim, 48);
    assert_true(c->model.dropout == 0.2f);
    assert_true(c->model.attn_dropout == 0.05f);
    assert_int_equal(c->model.pos, POS_LEARNED);
    assert_int_equal(c->model.pooling, POOL_MEAN);
    assert_int_equal(c->model.causal, 1);
    assert_true(c->model.emb_init_std == 0.5f);
    assert_ptr_equal(c->attn_ops, attn_find("softmax"));
    assert_int_equal(impl_of(c), impl_index("materialized"));
    assert_string_equal(c->attn_label, "softmax(impl=materialized)");
    assert_int_equal(c->train.seed, 5);
    assert_int_equal(c->train.batch_size, 8);
    assert_int_equal(c->train.steps, 200);
    assert_true(c->train.lr == 5e-4f);
    assert_int_equal(c->train.warmup, 300); /* warmup > steps is allowed */
    assert_int_equal(c->train.schedule, SCHED_LINEAR);
    assert_true(c->train.min_lr_ratio == 0.0f);
    assert_true(c->train.weight_decay == 0.1f);
    assert_true(c->train.beta1 == 0.8f);
    assert_true(c->train.beta2 == 0.999f);
    assert_true(c->train.eps == 1e-6f);
    assert_true(c->train.grad_clip == 0.0f);
    assert_int_equal(c->train.eval_every, 20);
    assert_int_equal(c->train.eval_batches, 4);
    assert_true(c->train.max_minutes == 2.5f);
    assert_int_equal(c->train.log_every, 10);
    assert_int_equal((int)strlen(c->run_id), 16);
    for (int i = 0; i < 16; i++) assert_true(isxdigit((unsigned char)c->run_id[i]) && !isupper((unsigned char)c->run_id[i]));

    /* pooling mean: no CLS token, N = seq_len */
    attn_shape s = config_attn_shape(c, 8, 1);
    assert_int_equal(s.B, 8);
    assert_int_equal(s.H, 2);
    assert_int_equal(s.Dh, 16);
    assert_int_equal(s.N, 256);
    assert_int_equal(s.Nk, 256);
    assert_int_equal(s.causal, 1);
    assert_int_equal(s.layer, 1);
    assert_int_equal(s.n_layers, 3);
    assert_int_equal(s.max_len, 256);
    config_plan_free(&plan);
    assert_null(plan.runs);
    assert_int_equal(plan.n_runs, 0);
}

static void test_defaults(void **state) {
    (void)state;
    run_plan plan = {0};
    load_ok("minimal.yaml", "task: {name: listops}\n", NULL, 0, &plan);
    assert_int_equal(plan.n_runs, 1);
    assert_string_equal(plan.name, "minimal"); /* the file's base name */
    const run_cfg *c = &plan.runs[0];
    assert_string_equal(c->exp_name, "minimal");
    assert_int_equal(c->task.seq_len, 512);
    assert_int_equal(c->task.data_seed, 0);
    assert_string_equal(c->task.data_dir, "data");
    assert_int_equal(c->model.d_model, 64);
    assert_int_equal(c->model.n_heads, 4);
    assert_int_equal(c->model.n_layers, 2);
    assert_int_equal(c->model.d_ff, 128);
    assert_int_equal(c->model.mlp_dim, 128);
    assert_true(c->model.dropout == 0.1f);
    assert_true(c->model.attn_dropout == 0.0f);
    assert_int_equal(c->model.pos, POS_SINUSOIDAL);
    assert_int_equal(c->model.pooling, POOL_CLS);
    assert_int_equal(c->model.causal, 0);
    assert_true(c->model.emb_init_std == 1.0f);
    assert_int_equal(c->train.seed, 0);
    assert_int_equal(c->train.batch_size, 32);
    assert_int_equal(c->train.steps, 1000);
    assert_true(c->train.lr == 1e-3f);
    assert_int_equal(c->train.warmup, 100);
    assert_int_equal(c->train.schedule, SCHED_COSINE);
    assert_true(c->train.min_lr_ratio == 0.1f);
    assert_true(c->train.weight_decay == 0.01f);
    assert_true(c->train.beta1 == 0.9f);
    assert_true(c->train.beta2 == 0.98f);
    assert_true(c->train.eps == 1e-9f);
    assert_true(c->train.grad_clip == 1.0f);
    assert_int_equal(c->train.eval_every, 100);
    assert_int_equal(c->train.eval_batches, 0);
    assert_true(c->train.max_minutes == 0.0f);
    assert_int_equal(c->train.log_every, 50);
    /* no attention: the exact softmax with its defaults */
    assert_ptr_equal(c->attn_ops, attn_find("softmax"));
    assert_int_equal(impl_of(c), impl_index("tiled"));
    assert_string_equal(c->attn_label, "softmax");
    /* the task's own defaults */
    const task_ops *t = task_find("listops");
    attn_params_buf unused;
    (void)unused;
    task_params_buf defs;
    memset(&defs, 0, sizeof defs);
    schema_defaults(t->schema, t->n_schema, defs.bytes);
    assert_memory_equal(defs.bytes, c->task_params.bytes, t->params_size);
    /* CLS pooling: N = seq_len + 1 */
    attn_shape s = config_attn_shape(c, 32, 0);
    assert_int_equal(s.N, 513);
    assert_int_equal(s.max_len, 513);
    assert_int_equal(s.Dh, 16);
    assert_int_equal(s.causal, 0);
    config_plan_free(&plan);

    /* empty sections are all defaults too, and 'attention' may be a bare name */
    load_ok("empty_sections.yaml", "name: e\ntask:\n  name: listops\nmodel:\ntrain:\nattention: softmax\n", NULL, 0,
            &plan);
    assert_int_equal(plan.n_runs, 1);
    assert_int_equal(plan.runs[0].model.d_model, 64);
    assert_string_equal(plan.runs[0].attn_label, "softmax");
    config_plan_free(&plan);
}

/* ------------------------------------------------------------------ sweeps */

static void test_sweep_order(void **state) {
    (void)state;
    const char *text =
        "name: sweep\n"
        "task: {name: listops, seq_len: [64, 128]}\n"
        "model: {d_model: [32, 64], n_layers: 1}\n"
        "attention:\n"
        "  - softmax\n"
        "  - {name: softmax, impl: [tiled, materialized]}\n"
        "train: {lr: [1e-3, 1e-4], seeds: [0, 1, 2]}\n";
    run_plan plan = {0};
    load_ok("sweep.yaml", text, NULL, 0, &plan);
    /* entry 1: 2 seq * 2 d_model * 2 lr * 3 seeds = 24; entry 2 adds its impl axis: 48 */
    assert_int_equal(plan.n_runs, 72);
    const int seqs[] = {64, 128}, dms[] = {32, 64}, seeds[] = {0, 1, 2};
    const float lrs[] = {1e-3f, 1e-4f};
    for (int r = 0; r < 72; r++) {
        const run_cfg *c = &plan.runs[r];
        int entry = r < 24 ? 0 : 1, q = r < 24 ? r : r - 24;
        int impl = entry == 0 ? 0 : q / 24; /* attention axes come right after the entry */
        q %= 24;
        assert_int_equal(c->train.seed, seeds[q % 3]);         /* seeds innermost */
        assert_true(c->train.lr == lrs[(q / 3) % 2]);          /* then train axes */
        assert_int_equal(c->model.d_model, dms[(q / 6) % 2]);  /* model axes */
        assert_int_equal(c->task.seq_len, seqs[(q / 12) % 2]); /* task axes */
        assert_int_equal(impl_of(c), impl_index(impl ? "materialized" : "tiled"));
        assert_int_equal(c->model.n_layers, 1);
        assert_string_equal(c->exp_name, "sweep");
    }
    /* run ids: content-addressed. Entry 2's impl=tiled runs equal entry 1's runs (tiled is the
     * default), every other pair differs. */
    for (int r = 0; r < 24; r++) assert_string_equal(plan.runs[r].run_id, plan.runs[24 + r].run_id);
    int distinct_pairs = 0;
    for (int a = 0; a < 72; a++)
        for (int b = a + 1; b < 72; b++) {
            int same = !strcmp(plan.runs[a].run_id, plan.runs[b].run_id);
            int expect_same = (b - a == 24 && a < 24);
            assert_int_equal(same, expect_same);
            distinct_pairs += !same;
        }
    assert_int_equal(distinct_pairs, 72 * 71 / 2 - 24);
    /* model/train axes other than the seed are part of the label (seq_len is its own column) */
    assert_string_equal(plan.runs[48].attn_label, "softmax(impl=materialized) d_model=32 lr=1e-3");
    assert_string_equal(plan.runs[24].attn_label, "softmax d_model=32 lr=1e-3");
    config_plan_free(&plan);
}

static void test_seeds(void **state) {
    (void)state;
    run_plan plan = {0};
    load_ok("seeds.yaml", "task: {name: listops, data_seed: 11}\ntrain:\n  seeds: [3, 1, 4]\n  steps: 9\n", NULL, 0,
            &plan);
    assert_int_equal(plan.n_runs, 3);
    assert_int_equal(plan.runs[0].train.seed, 3);
    assert_int_equal(plan.runs[1].train.seed, 1);
    assert_int_equal(plan.runs[2].train.seed, 4);
    for (int r = 0; r < 3; r++) {
        assert_int_equal(plan.runs[r].task.data_seed, 11); /* the data is shared */
        assert_int_equal(plan.runs[r].train.steps, 9);
    }
    assert_string_not_equal(plan.runs[0].run_id, plan.runs[1].run_id);
    assert_string_not_equal(plan.runs[1].run_id, plan.runs[2].run_id);
    /* seeds innermost even when written before other train axes; a scalar seeds is one run */
    load_ok("seeds2.yaml", "task: {name: listops}\ntrain:\n  seeds: [7, 8]\n  steps: [10, 20]\n", NULL, 0, &plan);
    assert_int_equal(plan.n_runs, 3 + 4);
    const int want_seed[] = {7, 8, 7, 8}, want_steps[] = {10, 10, 20, 20};
    for (int r = 0; r < 4; r++) {
        assert_int_equal(plan.runs[3 + r].train.seed, want_seed[r]);
        assert_int_equal(plan.runs[3 + r].train.steps, want_steps[r]);
    }
    load_ok("seeds3.yaml", "task: {name: listops}\ntrain: {seeds: 5}\n", NULL, 0, &plan);
    assert_int_equal(plan.n_runs, 8);
    assert_int_equal(plan.runs[7].train.seed, 5);
    assert_string_equal(plan.name, "seeds"); /* the first file's name */
    config_plan_free(&plan);
}

static void test_attention_forms(void **state) {
    (void)state;
    run_plan plan = {0};
    load_ok("a1.yaml", "task: {name: listops}\nattention: {name: softmax, impl: materialized}\n", NULL, 0, &plan);
    assert_int_equal(plan.n_runs, 1);
    assert_int_equal(impl_of(&plan.runs[0]), impl_index("materialized"));
    load_ok("a2.yaml",
            "task: {name: listops}\nattention:\n  - name: softmax\n    impl: materialized\n  - softmax\n"
            "  - {name: softmax, impl: tiled}\n",
            NULL, 0, &plan);
    assert_int_equal(plan.n_runs, 4);
    assert_int_equal(impl_of(&plan.runs[1]), impl_index("materialized"));
    assert_int_equal(impl_of(&plan.runs[2]), impl_index("tiled"));
    assert_int_equal(impl_of(&plan.runs[3]), impl_index("tiled"));
    assert_string_equal(plan.runs[1].attn_label, "softmax(impl=materialized)");
    assert_string_equal(plan.runs[2].attn_label, "softmax");
    config_plan_free(&plan);
}

/* A PT_INT_LIST parameter: a flat list is one value, a list of lists is an axis. Uses whichever
 * registered mechanism or task has one; skipped while none does. */
static void test_int_list_axis(void **state) {
    (void)state;
    const attn_ops *a = NULL;
    const param_def *d = NULL;
    for (int i = 0; i < attn_registry_count && !d; i++)
        for (int j = 0; j < attn_registry[i]->n_schema; j++)
            if (attn_registry[i]->schema[j].type == PT_INT_LIST && attn_registry[i]->schema[j].def) {
                a = attn_registry[i];
                d = &attn_registry[i]->schema[j];
                break;
            }
    if (!d) {
        print_message("no mechanism has an int-list parameter yet; skipped\n");
        skip();
    }
    char text[512];
    run_plan plan = {0};
    snprintf(text, sizeof text, "task: {name: listops}\nattention:\n  name: %s\n  %s: %s\n", a->name, d->key, d->def);
    load_ok("ilist1.yaml", text, NULL, 0, &plan);
    assert_int_equal(plan.n_runs, 1);
    snprintf(text, sizeof text, "task: {name: listops}\nattention:\n  name: %s\n  %s: [%s, %s]\n", a->name, d->key,
             d->def, d->def);
    load_ok("ilist2.yaml", text, NULL, 0, &plan);
    assert_int_equal(plan.n_runs, 3);
    lra_ilist want, got;
    attn_params_buf buf;
    char err[256];
    assert_int_equal(schema_set(d, buf.bytes, d->def, err, sizeof err), 0);
    memcpy(&want, buf.bytes + d->offset, sizeof want);
    for (int r = 0; r < 3; r++) {
        memcpy(&got, plan.runs[r].attn_params.bytes + d->offset, sizeof got);
        assert_int_equal(got.n, want.n);
        assert_memory_equal(got.v, want.v, sizeof(int) * (size_t)want.n);
    }
    config_plan_free(&plan);
}

/* ------------------------------------------------------------------ errors */

static void test_errors(void **state) {
    (void)state;
    expect_err("unknown_key.yaml", "task:\n  name: listops\nmodel:\n  d_modle: 32\n", NULL, 0, 4, 3,
               "unknown key 'd_modle' in model (did you mean 'd_model'?)");
    expect_err("unknown_key2.yaml", "task:\n  name: listops\n  max_dept: 3\n", NULL, 0, 3, 3,
               "unknown key 'max_dept' in task 'listops' (did you mean 'max_depth'?)");
    expect_err("misplaced.yaml", "task: {name: listops}\nmodel:\n  steps: 3\n", NULL, 0, 3, 3,
               "unknown key 'steps' in model (it belongs under train:)");
    expect_err("wrong_type.yaml", "task: {name: listops}\nmodel:\n  n_heads: four\n", NULL, 0, 3, 12,
               "model.n_heads: expected an integer in [1, 256], got 'four'");
    expect_err("wrong_type2.yaml", "model:\n  d_model: {a: 1}\ntask: {name: listops}\n", NULL, 0, 2, 12,
               "model.d_model: expected an integer, got a mapping");
    expect_err("wrong_type3.yaml", "task: {name: listops}\nmodel: {causal: maybe}\n", NULL, 0, 2, 17,
               "model.causal: expected true or false, got 'maybe'");
    expect_err("nested.yaml", "task: {name: listops}\nmodel: {d_model: [[32]]}\n", NULL, 0, 2, 19,
               "model.d_model: expected an integer or a list of them (a sweep axis), got a nested list");
    expect_err("novalue.yaml", "task: {name: listops}\ntrain:\n  steps:\n", NULL, 0, 3, 9,
               "train.steps: missing value");
    expect_err("range.yaml", "task:\n  name: listops\nmodel:\n  dropout: 1.5\n", NULL, 0, 4, 12,
               "model.dropout: expected a number in [0, 0.99], got '1.5'");
    expect_err("range_axis.yaml", "task:\n  name: listops\n  seq_len: [64, 0, 128]\n", NULL, 0, 3, 17,
               "task.seq_len: expected an integer in [1, 1048576], got '0'");
    expect_err("empty_axis.yaml", "task:\n  name: listops\n  seq_len: []\n", NULL, 0, 3, 12,
               "task.seq_len: empty list");
    expect_err("enum.yaml", "task: {name: listops}\nattention: {name: softmax, impl: tild}\n", NULL, 0, 2, 34,
               "attention.impl: expected one of tiled|materialized, got 'tild' (did you mean 'tiled'?)");
    expect_err("unknown_task.yaml", "task:\n  name: listop\n", NULL, 0, 2, 9,
               "unknown task 'listop' (did you mean 'listops'?)");
    expect_err("unknown_task2.yaml", "task:\n  name: qqqqqqqqqq\n", NULL, 0, 2, 9, "unknown task 'qqqqqqqqqq' (tasks: ");
    expect_err("missing_task.yaml", "model: {d_model: 32}\n", NULL, 0, 1, 1, "missing task name");
    expect_err("unknown_attn.yaml", "task: {name: listops}\nattention:\n  - softmax\n  - name: softmx\n    impl: tiled\n",
               NULL, 0, 4, 11, "unknown attention mechanism 'softmx' (did you mean 'softmax'?)");
    expect_err("unknown_attn2.yaml", "task: {name: listops}\nattention: [softmax, sofmax]\n", NULL, 0, 2, 22,
               "unknown attention mechanism 'sofmax' (did you mean 'softmax'?)");
    expect_err("attn_key.yaml", "task: {name: listops}\nattention:\n  - {name: softmax, imp: tiled}\n", NULL, 0, 3, 21,
               "unknown key 'imp' in attention 'softmax' (did you mean 'impl'?)");
    expect_err("attn_noname.yaml", "task: {name: listops}\nattention:\n  - impl: tiled\n", NULL, 0, 3, 5,
               "attention entry without 'name:'");
    expect_err("dup.yaml", "task: {name: listops}\nmodel:\n  d_model: 32\n  n_heads: 2\n  d_model: 64\n", NULL, 0, 5, 3,
               "duplicate key 'd_model' in model (first given at line 3)");
    expect_err("dup_top.yaml", "task: {name: listops}\nname: a\ntask: {name: listops}\n", NULL, 0, 3, 1,
               "duplicate key 'task' at the top level (first given at line 1)");
    expect_err("top.yaml", "task: {name: listops}\nmodle:\n  d_model: 3\n", NULL, 0, 2, 1,
               "unknown top-level key 'modle' (did you mean 'model'?)");
    expect_err("syntax.yaml", "task:\n  name: listops\nmodel: {d_model: 32\ntrain:\n  steps: 3\n", NULL, 0, 4, 6,
               "YAML syntax error");
    expect_err("syntax2.yaml", "task:\n  name: listops\n   bad: 1\n", NULL, 0, 3, 7, "YAML syntax error");
    expect_err("two_docs.yaml", "task: {name: listops}\n---\ntask: {name: listops}\n", NULL, 0, 3, 1,
               "only one YAML document");
    expect_err("not_a_map.yaml", "- task\n- model\n", NULL, 0, 1, 1, "expected a mapping");
    expect_err("seed_seeds.yaml", "task: {name: listops}\ntrain:\n  seed: 1\n  steps: 10\n  seeds: [1, 2]\n", NULL, 0, 5,
               3, "give either train.seed or train.seeds, not both");
    expect_err("heads.yaml", "task: {name: listops}\nmodel:\n  d_model: 30\n  n_heads: 4\n", NULL, 0, 4, 12,
               "d_model 30 is not divisible by n_heads 4");
    expect_err("heads_axis.yaml", "task: {name: listops}\nmodel:\n  d_model: 48\n  n_heads: [2, 5]\n", NULL, 0, 4, 16,
               "d_model 48 is not divisible by n_heads 5");
    expect_err("heads_default.yaml", "task: {name: listops}\nmodel:\n  d_model: 66\n", NULL, 0, 3, 12,
               "d_model 66 is not divisible by n_heads 4");
    expect_err("odd.yaml", "task: {name: listops}\nmodel:\n  n_heads: 1\n  d_model: 33\n", NULL, 0, 4, 12,
               "sinusoidal positions need an even d_model");
    expect_err("task_validate.yaml", "task:\n  name: listops\n  seq_len: 64\n  min_length: 100\n  max_length: 50\n", NULL,
               0, 4, 15, "min_length");
    expect_err("bad_name.yaml", "name: a/b\ntask: {name: listops}\n", NULL, 0, 1, 7, "no '/'");
    expect_err("empty.yaml", "", NULL, 0, 1, 1, "empty config file");
    expect_err("comments.yaml", "# only a comment\n\n", NULL, 0, 1, 1, "empty config file");

    /* a missing file: "FILE: cannot open: ..." */
    char path[600], err[1024];
    snprintf(path, sizeof path, "%s/does_not_exist.yaml", g_dir);
    run_plan plan = {0};
    assert_int_equal(config_load(&plan, path, NULL, 0, err, sizeof err), -1);
    char want[700];
    snprintf(want, sizeof want, "%s: cannot open: No such file or directory", path);
    assert_string_equal(err, want);
    assert_int_equal(plan.n_runs, 0);

    /* an error in a second file leaves the plan as it was */
    load_ok("good.yaml", "task: {name: listops}\n", NULL, 0, &plan);
    assert_int_equal(plan.n_runs, 1);
    write_cfg("bad2.yaml", "task: {name: listops}\nmodel: {d_model: 0}\n", path);
    assert_int_equal(config_load(&plan, path, NULL, 0, err, sizeof err), -1);
    assert_int_equal(plan.n_runs, 1);
    assert_string_equal(plan.name, "good");
    config_plan_free(&plan);
}

/* causal requested but the mechanism lacks ATTN_CAP_CAUSAL: skipped while every mechanism has it. */
static void test_causal_capability(void **state) {
    (void)state;
    const attn_ops *a = NULL;
    for (int i = 0; i < attn_registry_count; i++)
        if (!(attn_registry[i]->caps & ATTN_CAP_CAUSAL)) a = attn_registry[i];
    if (!a) {
        print_message("every registered mechanism supports causal attention; skipped\n");
        skip();
    }
    char text[256], want[128];
    snprintf(text, sizeof text, "task: {name: listops}\nmodel: {causal: true}\nattention:\n  - softmax\n  - %s\n", a->name);
    snprintf(want, sizeof want, "attention '%s' does not support causal attention", a->name);
    expect_err("causal.yaml", text, NULL, 0, 5, 5, want);
}

/* ------------------------------------------------------------------ --set */

static void test_overrides(void **state) {
    (void)state;
    const char *base = "name: base\ntask: {name: listops, seq_len: 128}\nmodel: {d_model: 32}\n"
                       "attention: [softmax, {name: softmax, impl: tiled}]\ntrain: {seeds: [0, 1]}\n";
    const char *sets[] = {"train.steps=77",    "model.d_model=128", "task.seq_len=[64,128,256]",
                          "attention.impl=materialized", "name=over", "train.seed=9"};
    run_plan plan = {0};
    load_ok("over.yaml", base, sets, 6, &plan);
    assert_int_equal(plan.n_runs, 2 * 3); /* seeds replaced by one seed */
    assert_string_equal(plan.name, "over");
    const int seqs[] = {64, 128, 256};
    for (int r = 0; r < 6; r++) {
        const run_cfg *c = &plan.runs[r];
        assert_int_equal(c->train.steps, 77);
        assert_int_equal(c->model.d_model, 128);
        assert_int_equal(c->task.seq_len, seqs[r % 3]);
        assert_int_equal(impl_of(c), impl_index("materialized"));
        assert_int_equal(c->train.seed, 9);
        assert_string_equal(c->exp_name, "over");
    }
    config_plan_free(&plan);

    /* attention=NAME and attention=[a, {..}] replace the list */
    const char *s2[] = {"attention=softmax"};
    load_ok("over2.yaml", base, s2, 1, &plan);
    assert_int_equal(plan.n_runs, 2); /* 1 entry x 2 seeds */
    config_plan_free(&plan);
    const char *s3[] = {"attention=[softmax, {name: softmax, impl: materialized}, softmax]", "train.seeds=[4]"};
    load_ok("over3.yaml", base, s3, 2, &plan);
    assert_int_equal(plan.n_runs, 3);
    assert_int_equal(impl_of(&plan.runs[1]), impl_index("materialized"));
    assert_int_equal(plan.runs[2].train.seed, 4);
    config_plan_free(&plan);
    /* a --set may supply what the file lacks */
    const char *s4[] = {"task.name=listops"};
    load_ok("over4.yaml", "model: {n_layers: 1}\n", s4, 1, &plan);
    assert_int_equal(plan.n_runs, 1);
    config_plan_free(&plan);

    expect_set_err(base, "model.d_modle=3", "--set model.d_modle: unknown key 'd_modle' in model (did you mean 'd_model'?)");
    expect_set_err(base, "train.steps=abc", "--set train.steps: expected an integer in [1, 1000000000], got 'abc'");
    expect_set_err(base, "task.seq_len=[64, x]", "--set task.seq_len: expected an integer in [1, 1048576], got 'x'");
    expect_set_err(base, "attention.window=3", "--set attention.window: no attention entry has a parameter 'window'");
    expect_set_err(base, "attention.imp=tiled", "--set attention.imp: no attention entry has a parameter 'imp' (did you mean 'impl'?)");
    expect_set_err(base, "model.d_model", "--set model.d_model: expected section.key=value");
    expect_set_err(base, "modle.d_model=3", "--set modle.d_model: unknown section 'modle' (did you mean 'model'?)");
    expect_set_err(base, "task.seq_len=[64,", "--set task.seq_len: cannot read value '[64,' as YAML");
    expect_set_err(base, "task.seq_len=", "--set task.seq_len: missing value");
    expect_set_err(base, "model.n_heads=3", "--set model.n_heads: d_model 32 is not divisible by n_heads 3");
    expect_set_err(base, "attention=[softmax, sotfmax]", "--set attention: unknown attention mechanism 'sotfmax'");
    expect_set_err(base, "task.name=listop", "--set task.name: unknown task 'listop' (did you mean 'listops'?)");
}

/* ------------------------------------------------------------------ run ids and dumps */

static void test_run_id(void **state) {
    (void)state;
    const char *text = "name: rid\ntask: {name: listops, seq_len: 128}\ntrain: {steps: 1000}\n";
    run_plan a = {0}, b = {0};
    load_ok("rid.yaml", text, NULL, 0, &a);
    load_ok("rid.yaml", text, NULL, 0, &b);
    assert_string_equal(a.runs[0].run_id, b.runs[0].run_id);
    config_plan_free(&b);

    /* the id is FNV-1a of exactly the dump */
    char *dump = dump_text(&a.runs[0]);
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)lra_fnv1a(LRA_FNV_INIT, dump, strlen(dump)));
    assert_string_equal(hex, a.runs[0].run_id);
    free(dump);

    /* any one value that differs gives a different id */
    const char *changes[] = {"train.steps=1001", "model.dropout=0.11", "task.data_seed=1",
                             "attention.impl=materialized", "name=other", "task.max_depth=9",
                             "train.lr=0.0010001", "task.data_dir=elsewhere"};
    for (size_t k = 0; k < LRA_ARRAY_LEN(changes); k++) {
        const char *s[] = {changes[k]};
        load_ok("rid.yaml", text, s, 1, &b);
        if (!strcmp(a.runs[0].run_id, b.runs[0].run_id)) fail_msg("--set %s kept the run id", changes[k]);
        config_plan_free(&b);
    }
    /* the same value written differently is the same run */
    const char *same[] = {"train.steps=1000", "train.lr=1e-3", "model.causal=no", "attention=[{name: softmax, impl: tiled}]"};
    for (size_t k = 0; k < LRA_ARRAY_LEN(same); k++) {
        const char *s[] = {same[k]};
        load_ok("rid.yaml", text, s, 1, &b);
        if (strcmp(a.runs[0].run_id, b.runs[0].run_id)) fail_msg("--set %s changed the run id", same[k]);
        config_plan_free(&b);
    }
    config_plan_free(&a);
}

static void test_dump_roundtrip(void **state) {
    (void)state;
    const char *text = "name: \"rt: x\"\ntask: {name: listops, seq_len: [96, 128], data_dir: \"d #1\"}\n"
                       "model: {dropout: 0.15, pos: none, d_model: 33, n_heads: 3}\n"
                       "attention: [softmax, {name: softmax, impl: materialized}]\n"
                       "train: {seeds: [1, 2], lr: 3e-4, eps: 1e-8, max_minutes: 0.1}\n";
    run_plan plan = {0};
    load_ok("rt.yaml", text, NULL, 0, &plan);
    assert_int_equal(plan.n_runs, 8);
    char *first = dump_text(&plan.runs[0]);
    const char *head = "name: \"rt: x\"\ntask:\n  name: listops\n  seq_len: 96\n  data_seed: 0\n  data_dir: \"d #1\"\n";
    if (strncmp(first, head, strlen(head))) fail_msg("dump starts:\n%s", first);
    assert_non_null(strstr(first, "\nmodel:\n  d_model: 33\n  n_heads: 3\n  n_layers: 2\n  d_ff: 128\n  mlp_dim: 128\n"
                                  "  dropout: 0.15\n  attn_dropout: 0\n  pos: none\n  pooling: cls\n  causal: false\n"
                                  "  emb_init_std: 1\n  interaction: nli\n  memory: none\n  mem_len: 0\n"));
    assert_non_null(strstr(first, "  impl: tiled\n"));
    assert_non_null(strstr(first, "\ntrain:\n  seed: 1\n  batch_size: 32\n  steps: 1000\n  lr: 0.0003\n"));
    assert_non_null(strstr(first, "  eps: 1e-08\n"));
    assert_non_null(strstr(first, "  log_every: 50\n"));
    assert_null(strstr(first, "seeds"));
    free(first);

    for (int r = 0; r < plan.n_runs; r++) {
        char *d = dump_text(&plan.runs[r]);
        char name[64], path[512];
        snprintf(name, sizeof name, "rt_dump_%d.yaml", r);
        write_cfg(name, d, path);
        run_plan again = {0};
        char err[1024];
        if (config_load(&again, path, NULL, 0, err, sizeof err)) fail_msg("reloading the dump failed: %s\n%s", err, d);
        assert_int_equal(again.n_runs, 1);
        assert_string_equal(again.runs[0].run_id, plan.runs[r].run_id);
        assert_string_equal(again.runs[0].attn_label, plan.runs[r].attn_label);
        char *d2 = dump_text(&again.runs[0]);
        assert_string_equal(d, d2);
        free(d2);
        free(d);
        config_plan_free(&again);
    }
    config_plan_free(&plan);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schema_defaults_and_set),
        cmocka_unit_test(test_schema_format_roundtrip),
        cmocka_unit_test(test_schema_helpers),
        cmocka_unit_test(test_full_config),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_sweep_order),
        cmocka_unit_test(test_seeds),
        cmocka_unit_test(test_attention_forms),
        cmocka_unit_test(test_int_list_axis),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_causal_capability),
        cmocka_unit_test(test_overrides),
        cmocka_unit_test(test_run_id),
        cmocka_unit_test(test_dump_roundtrip),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
