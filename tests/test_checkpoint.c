/* test_checkpoint.c - lra/checkpoint.c and resuming in train.c: a save/load round trip restores
 * every tensor, the AdamW state, the best snapshot and the mechanisms' state bit for bit; every
 * refusal (magic, version, truncation, header/table/data CRC, another shape, mechanism, config or
 * run) names the file and the mismatch; K steps equal K1 steps + save + load into a fresh model +
 * K - K1 steps (same losses, same bits); train_run killed with SIGKILL after a checkpoint and run
 * again gives the uninterrupted run's report and curves.csv; checkpoint keys keep the run id.
 * Bitwise equality holds for any thread count (the same on both sides of each comparison). */
#include "testutil.h"

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../lra/checkpoint.h"
#include "../lra/common.h"
#include "../lra/config.h"
#include "../lra/csv.h"
#include "../lra/model.h"
#include "../lra/optim.h"
#include "../lra/train.h"

static char g_dir[256];

static int setup(void **st) {
    (void)st;
    snprintf(g_dir, sizeof g_dir, "/tmp/lra_test_ckpt_XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **st) {
    (void)st;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void path_in(char *buf, size_t n, const char *name) {
    snprintf(buf, n, "%s/%s", g_dir, name);
}

/* A tiny ListOps config (1 layer, d_model 16), with overrides ("train.steps=20", ...). */
static void load_cfg(run_plan *plan, const char *const *sets, int n_sets) {
    char path[512], err[1024] = "";
    path_in(path, sizeof path, "tiny.yaml");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("name: tiny\n"
          "task: {name: listops, seq_len: 32, max_depth: 3, max_args: 4, n_train: 200, n_val: 64, n_test: 64}\n"
          "model: {d_model: 16, n_heads: 2, n_layers: 1, d_ff: 32, mlp_dim: 16, pos: learned, dropout: 0.1}\n"
          "attention: softmax\n"
          "train: {seed: 1, batch_size: 16, steps: 12, warmup: 3, eval_every: 3}\n",
          f);
    fclose(f);
    memset(plan, 0, sizeof *plan);
    if (config_load(plan, path, sets, n_sets, err, sizeof err)) fail_msg("config_load: %s", err);
    assert_int_equal(plan->n_runs, 1);
}

static void build_splits(const run_cfg *c, task_split splits[N_SPLITS]) {
    memset(splits, 0, sizeof(task_split) * N_SPLITS);
    task_env env = {.seed = (uint64_t)c->task.data_seed, .seq_len = c->task.seq_len, .base_dir = c->base_dir,
                    .data_dir = c->task.data_dir};
    char err[512];
    if (c->task_ops->build(c->task_params.bytes, &env, splits, err, sizeof err)) fail_msg("data: %s", err);
}

static void free_splits(task_split splits[N_SPLITS]) {
    for (int i = 0; i < N_SPLITS; i++) task_split_free(&splits[i]);
}

static void build(model_t *m, const run_cfg *c, const task_split *splits) {
    char err[512];
    int K = task_n_classes(c->task_ops, c->task_params.bytes, splits);
    if (model_build(m, c, c->train.batch_size, c->task_ops->vocab_size(c->task_params.bytes), K, c->task_ops->kind, 0,
                    err, sizeof err))
        fail_msg("model_build: %s", err);
}

/* One training step on examples [step*B, step*B + B) mod n of the train split. */
static double train_step(model_t *m, const task_split *tr) {
    const train_cfg *t = &m->cfg->train;
    int idx[64];
    for (int b = 0; b < m->B; b++) idx[b] = (int)((m->step * m->B + b) % tr->n);
    model_load_batch(m, tr, idx);
    double loss = model_forward(m, 1, NULL, NULL);
    model_zero_grad(m);
    model_backward(m);
    model_update(m, lr_at(t, m->step));
    return loss;
}

static void assert_models_equal(const model_t *a, const model_t *b) {
    assert_int_equal(a->step, b->step);
    assert_int_equal(a->n_params, b->n_params);
    size_t bytes = a->n_params * sizeof(float);
    assert_memory_equal(a->arenas[MEM_PARAMS].base, b->arenas[MEM_PARAMS].base, bytes);
    assert_memory_equal(a->adam_m, b->adam_m, bytes);
    assert_memory_equal(a->adam_v, b->adam_v, bytes);
    assert_memory_equal(a->best, b->best, bytes);
    for (int l = 0; l < a->L; l++) {
        const attn_layer *al = &a->attn[l];
        size_t sb = al->ops->state_bytes ? al->ops->state_bytes(al->params, &al->shape) : 0;
        if (sb) assert_memory_equal(al->state, b->attn[l].state, sb);
    }
}

/* Round trip for a config: train 4 steps, snapshot, 1 more step, save, load into a fresh model. */
static void round_trip(const char *const *sets, int n_sets) {
    run_plan plan;
    load_cfg(&plan, sets, n_sets);
    const run_cfg *c = &plan.runs[0];
    task_split sp[N_SPLITS];
    build_splits(c, sp);
    model_t *a = calloc(1, sizeof *a), *b = calloc(1, sizeof *b);
    build(a, c, sp);
    for (int s = 0; s < 4; s++) train_step(a, &sp[SPLIT_TRAIN]);
    model_snapshot_best(a);
    train_step(a, &sp[SPLIT_TRAIN]);
    char path[512], err[1024] = "";
    path_in(path, sizeof path, "rt.ckpt");
    ckpt_train_state ts = {.epoch = 3, .pos = 17, .best_step = 4, .best_val = 0.25, .win_loss = 1.5, .win_n = 1,
                           .last_win_loss = 2.0, .last_val = 0.25, .elapsed_s = 9.5};
    double times[5] = {0.1, 0.2, 0.3, 0.4, 0.5};
    ckpt_curve_row rows[1] = {{3, 2.0, 0.25, 1e-3, 1.0}};
    ts.n_step_times = 5, ts.step_times = times, ts.n_curve = 1, ts.curve = rows;
    if (ckpt_save(path, a, &ts, err, sizeof err)) fail_msg("save: %s", err);
    build(b, c, sp);
    assert_int_equal(b->step, 0);
    ckpt_train_state got;
    if (ckpt_load(path, b, 1, &got, err, sizeof err)) fail_msg("load: %s", err);
    assert_models_equal(a, b);
    assert_int_equal(got.epoch, 3);
    assert_int_equal(got.pos, 17);
    assert_int_equal(got.best_step, 4);
    assert_true(got.best_val == 0.25 && got.win_loss == 1.5 && got.win_n == 1 && got.last_win_loss == 2.0);
    assert_true(got.elapsed_s == 9.5);
    assert_int_equal(got.n_step_times, 5);
    assert_memory_equal(got.step_times, times, sizeof times);
    assert_int_equal(got.n_curve, 1);
    assert_memory_equal(got.curve, rows, sizeof rows);
    ckpt_train_state_free(&got);

    ckpt_info in;
    if (ckpt_read_info(path, &in, err, sizeof err)) fail_msg("info: %s", err);
    assert_string_equal(in.run_id, c->run_id);
    assert_int_equal(in.step, 5);
    assert_int_equal(in.best_step, 4);
    assert_int_equal(in.d_model, 16);
    assert_int_equal(in.vocab_rows, a->V);
    assert_int_equal(in.threads, lra_threads());

    /* the analysis entry point: best weights, built from the config and the file alone */
    model_t *d = calloc(1, sizeof *d);
    if (ckpt_build_model(d, c, 2, path, CKPT_WEIGHTS_BEST, 0, err, sizeof err)) fail_msg("build_model: %s", err);
    assert_int_equal(d->B, 2);
    assert_memory_equal(d->arenas[MEM_PARAMS].base, a->best, a->n_params * sizeof(float));
    model_free(d);
    model_free(a);
    model_free(b);
    free(a);
    free(b);
    free(d);
    free_splits(sp);
    config_plan_free(&plan);
}

static void test_round_trip_softmax(void **st) {
    (void)st;
    round_trip(NULL, 0);
}

/* Performer keeps its random features in the mechanism state (redrawn every 2 steps). */
static void test_round_trip_performer(void **st) {
    (void)st;
    const char *sets[] = {"attention=[{name: performer, features: 8, redraw: 2}]"};
    round_trip(sets, 1);
}

/* ---------------------------------------------------------------------------------------------
 * Refusals */

static void copy_file(const char *from, const char *to) {
    FILE *a = fopen(from, "rb"), *b = fopen(to, "wb");
    assert_non_null(a);
    assert_non_null(b);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, a)) > 0) assert_int_equal(fwrite(buf, 1, n, b), n);
    fclose(a);
    fclose(b);
}

static void patch(const char *path, long off, const void *bytes, size_t n) {
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, off, SEEK_SET);
    assert_int_equal(fwrite(bytes, 1, n, f), n);
    fclose(f);
}

static void flip(const char *path, long off) {
    FILE *f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, off, SEEK_SET);
    int ch = fgetc(f);
    fseek(f, off, SEEK_SET);
    fputc(ch ^ 0x10, f);
    fclose(f);
}

/* Loading path into m must fail with a message that names path and contains needle. */
static void expect_refusal(const char *path, model_t *m, int require_run, const char *needle) {
    char err[1024] = "";
    ckpt_train_state ts;
    int rc = ckpt_load(path, m, require_run, &ts, err, sizeof err);
    if (rc == 0) fail_msg("loading %s succeeded; expected '%s'", path, needle);
    if (strncmp(err, path, strlen(path)) || !strstr(err, needle))
        fail_msg("error '%s' lacks the path '%s' or '%s'", err, path, needle);
}

static void test_refusals(void **st) {
    (void)st;
    run_plan plan;
    load_cfg(&plan, NULL, 0);
    const run_cfg *c = &plan.runs[0];
    task_split sp[N_SPLITS];
    build_splits(c, sp);
    model_t *a = calloc(1, sizeof *a);
    build(a, c, sp);
    train_step(a, &sp[SPLIT_TRAIN]);
    char good[512], bad[512], err[1024];
    path_in(good, sizeof good, "good.ckpt");
    path_in(bad, sizeof bad, "bad.ckpt");
    if (ckpt_save(good, a, NULL, err, sizeof err)) fail_msg("save: %s", err);
    struct stat sb;
    assert_int_equal(stat(good, &sb), 0);

    path_in(bad, sizeof bad, "missing.ckpt");
    expect_refusal(bad, a, 1, "cannot open the checkpoint");
    path_in(bad, sizeof bad, "bad.ckpt");

    copy_file(good, bad);
    patch(bad, 0, "LRACKPTX", 8);
    expect_refusal(bad, a, 1, "not an lra checkpoint (bad magic 'LRACKPTX', expected 'LRACKPT1')");

    copy_file(good, bad);
    unsigned char v2[4] = {2, 0, 0, 0};
    patch(bad, 8, v2, 4);
    expect_refusal(bad, a, 1, "checkpoint format version 2, this lra reads version 1");

    copy_file(good, bad);
    assert_int_equal(truncate(bad, sb.st_size / 2), 0);
    char want[128];
    snprintf(want, sizeof want, "truncated: %lld bytes, the header says %lld", (long long)sb.st_size / 2,
             (long long)sb.st_size);
    expect_refusal(bad, a, 1, want);

    copy_file(good, bad);
    assert_int_equal(truncate(bad, 100), 0);
    expect_refusal(bad, a, 1, "truncated: 100 bytes, the header alone is 432");

    copy_file(good, bad);
    flip(bad, 40); /* inside the run id */
    expect_refusal(bad, a, 1, "CRC mismatch in the header");

    copy_file(good, bad);
    flip(bad, 432 + 3); /* the first table entry's name */
    expect_refusal(bad, a, 1, "CRC mismatch in the tensor table");

    copy_file(good, bad);
    flip(bad, sb.st_size - 12); /* data of the last tensor */
    expect_refusal(bad, a, 1, "CRC mismatch in tensor 'best/head_b2'");

    /* another shape, mechanism, model config, run */
    const char *shapes[] = {"model.d_model=32"};
    const char *mech[] = {"attention=[linear]"};
    const char *impl[] = {"attention=[{name: softmax, impl: materialized}]"};
    const char *drop[] = {"model.dropout=0.2"};
    const char *run[] = {"train.steps=13"};
    struct {
        const char *const *sets;
        const char *needle;
        int require_run;
    } cases[] = {
        {shapes, "d_model is 16 in the checkpoint, 32 in this model", 0},
        {mech, "a checkpoint of attention 'softmax', this model uses 'linear'", 0},
        {impl, "a checkpoint of attention softmax, this model uses softmax(impl=materialized)", 0},
        {drop, "written for another model config", 0},
        {run, "belongs to run", 1},
    };
    for (size_t k = 0; k < LRA_ARRAY_LEN(cases); k++) {
        run_plan p2;
        load_cfg(&p2, cases[k].sets, 1);
        model_t *b = calloc(1, sizeof *b);
        build(b, &p2.runs[0], sp);
        expect_refusal(good, b, cases[k].require_run, cases[k].needle);
        model_free(b);
        free(b);
        config_plan_free(&p2);
    }
    /* ... but another run of the same model loads for analyses (require_run = 0) */
    {
        run_plan p2;
        load_cfg(&p2, run, 1);
        model_t *b = calloc(1, sizeof *b);
        build(b, &p2.runs[0], sp);
        if (ckpt_load(good, b, 0, NULL, err, sizeof err)) fail_msg("model-only load: %s", err);
        assert_memory_equal(b->arenas[MEM_PARAMS].base, a->arenas[MEM_PARAMS].base, a->n_params * sizeof(float));
        model_free(b);
        free(b);
        config_plan_free(&p2);
    }
    /* no best weights before a validation */
    model_t *d = calloc(1, sizeof *d);
    assert_int_equal(ckpt_build_model(d, c, 2, good, CKPT_WEIGHTS_BEST, 0, err, sizeof err), -1);
    assert_non_null(strstr(err, "no validation has been run yet"));
    free(d);
    /* the good file still loads */
    if (ckpt_load(good, a, 1, NULL, err, sizeof err)) fail_msg("good file: %s", err);
    model_free(a);
    free(a);
    free_splits(sp);
    config_plan_free(&plan);
}

/* ---------------------------------------------------------------------------------------------
 * K steps == K1 steps + save + load + (K - K1) steps */

static void resume_model_level(const char *const *sets, int n_sets) {
    const int K = 12, K1 = 5;
    run_plan plan;
    load_cfg(&plan, sets, n_sets);
    const run_cfg *c = &plan.runs[0];
    task_split sp[N_SPLITS];
    build_splits(c, sp);
    double la[12], lb[12];
    model_t *a = calloc(1, sizeof *a);
    build(a, c, sp);
    for (int s = 0; s < K; s++) {
        la[s] = train_step(a, &sp[SPLIT_TRAIN]);
        if (s == 6) model_snapshot_best(a);
    }

    model_t *b = calloc(1, sizeof *b);
    build(b, c, sp);
    for (int s = 0; s < K1; s++) lb[s] = train_step(b, &sp[SPLIT_TRAIN]);
    char path[512], err[1024];
    path_in(path, sizeof path, "mid.ckpt");
    if (ckpt_save(path, b, NULL, err, sizeof err)) fail_msg("save: %s", err);
    model_free(b);
    memset(b, 0, sizeof *b);
    build(b, c, sp);
    if (ckpt_load(path, b, 1, NULL, err, sizeof err)) fail_msg("load: %s", err);
    assert_int_equal(b->step, K1);
    for (int s = K1; s < K; s++) {
        lb[s] = train_step(b, &sp[SPLIT_TRAIN]);
        if (s == 6) model_snapshot_best(b);
    }
    for (int s = 0; s < K; s++)
        if (memcmp(&la[s], &lb[s], sizeof(double))) fail_msg("step %d: loss %.17g vs %.17g", s, la[s], lb[s]);
    assert_models_equal(a, b);
    /* and the losses moved: the comparison is not between two idle models */
    assert_true(la[K - 1] != la[0]);
    model_free(a);
    model_free(b);
    free(a);
    free(b);
    free_splits(sp);
    config_plan_free(&plan);
}

static void test_resume_model_level(void **st) {
    (void)st;
    resume_model_level(NULL, 0);
}

/* Performer: features redrawn every 2 steps (K1 = 5 is mid-epoch), attention dropout on. */
static void test_resume_model_level_performer(void **st) {
    (void)st;
    const char *sets[] = {"attention=[{name: performer, features: 8, redraw: 2}]", "model.attn_dropout=0.1"};
    resume_model_level(sets, 2);
}

/* ---------------------------------------------------------------------------------------------
 * train_run killed after a checkpoint, run again: the same report and curves */

static char *read_curves_without_elapsed(const char *path) {
    csv_table t;
    char err[512];
    if (csv_read(path, &t, err, sizeof err)) fail_msg("%s", err);
    int ec = csv_col(&t, "elapsed_s");
    assert_true(ec >= 0);
    size_t cap = 1 << 16, len = 0;
    char *out = calloc(1, cap);
    for (int r = 0; r < t.n_rows; r++) {
        t.rows[r][ec][0] = 0;
        char *line = csv_format_row((const char *const *)t.rows[r], t.n_cols);
        size_t l = strlen(line);
        assert_true(len + l < cap);
        memcpy(out + len, line, l + 1);
        len += l;
        free(line);
    }
    csv_free(&t);
    return out;
}

static void test_resume_train_run(void **st) {
    (void)st;
    /* 30 steps of 16 over 200 examples: the last checkpoint (step 16) falls inside epoch 1
     * (example 56 of 200), whose order the resumed run must rebuild; run A ended in epoch 2 */
    const char *sets[] = {"train.checkpoint_every=8", "train.steps=30", "train.eval_every=6"};
    run_plan plan;
    load_cfg(&plan, sets, 3);
    const run_cfg *c = &plan.runs[0];
    char ck_a[512], ck_b[512], cu_a[512], cu_b[512];
    path_in(ck_a, sizeof ck_a, "a.ckpt");
    path_in(ck_b, sizeof ck_b, "b.ckpt");
    path_in(cu_a, sizeof cu_a, "a_curves.csv");
    path_in(cu_b, sizeof cu_b, "b_curves.csv");

    /* killed (SIGKILL) before step index 21: checkpoints at 8 and 16, curve rows 6..18 written.
     * The fork comes first, before this process has run any OpenMP region: libgomp's thread pool
     * does not survive fork, so a child forked later would hang with more than one thread. */
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        alarm(300); /* a hang fails the test instead of blocking it */
        train_opts ob = {.curves_path = cu_b, .ckpt_path = ck_b, .fault = "kill@21"};
        run_report r;
        train_run(c, &ob, &r);
        _exit(0);
    }
    int ws = 0;
    assert_int_equal(waitpid(pid, &ws, 0), pid);
    assert_true(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);

    run_report ra, rb;
    train_opts oa = {.curves_path = cu_a, .ckpt_path = ck_a};
    assert_int_equal(train_run(c, &oa, &ra), 0);
    assert_int_equal(ra.steps_done, 30);
    assert_int_equal(access(ck_a, F_OK), -1); /* a finished run without save_model drops it */
    ckpt_info in;
    char err[1024];
    if (ckpt_read_info(ck_b, &in, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(in.step, 16);
    char *partial = read_curves_without_elapsed(cu_b);
    int rows = 0;
    for (char *p = partial; *p; p++) rows += *p == '\n';
    assert_int_equal(rows, 4); /* header + steps 6, 12, 18 */

    train_opts ob = {.curves_path = cu_b, .ckpt_path = ck_b};
    assert_int_equal(train_run(c, &ob, &rb), 0);
    assert_int_equal(rb.steps_done, 30);
    assert_int_equal(rb.best_step, ra.best_step);
    assert_memory_equal(&rb.best_val, &ra.best_val, sizeof(double));
    assert_memory_equal(&rb.test, &ra.test, sizeof(double));
    assert_memory_equal(&rb.train_loss, &ra.train_loss, sizeof(double));
    assert_true(rb.test > 0 && rb.best_val > 0);
    char *ca = read_curves_without_elapsed(cu_a), *cb = read_curves_without_elapsed(cu_b);
    assert_string_equal(ca, cb); /* rows 6, 12, ..., 30 once each, same values */
    assert_int_equal(access(ck_b, F_OK), -1);
    free(ca);
    free(cb);
    free(partial);

    /* save_model keeps the final checkpoint; running the finished run again reuses it */
    const char *sets2[] = {"train.checkpoint_every=0", "train.steps=30", "train.eval_every=6", "train.save_model=true"};
    run_plan p2;
    load_cfg(&p2, sets2, 4);
    assert_string_equal(p2.runs[0].run_id, c->run_id); /* checkpoint keys do not change the run id */
    char ck_c[512], cu_c[512];
    path_in(ck_c, sizeof ck_c, "c.ckpt");
    path_in(cu_c, sizeof cu_c, "c_curves.csv");
    train_opts oc = {.curves_path = cu_c, .ckpt_path = ck_c};
    run_report rc1, rc2;
    assert_int_equal(train_run(&p2.runs[0], &oc, &rc1), 0);
    if (ckpt_read_info(ck_c, &in, err, sizeof err)) fail_msg("%s", err);
    assert_int_equal(in.step, 30);
    assert_int_equal(in.best_step, ra.best_step);
    assert_int_equal(train_run(&p2.runs[0], &oc, &rc2), 0);
    assert_memory_equal(&rc2.test, &ra.test, sizeof(double));
    ca = read_curves_without_elapsed(cu_a);
    cb = read_curves_without_elapsed(cu_c);
    assert_string_equal(ca, cb);
    free(ca);
    free(cb);
    config_plan_free(&p2);
    config_plan_free(&plan);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resume_train_run), /* first: it forks (see there) */
        cmocka_unit_test(test_round_trip_softmax), cmocka_unit_test(test_round_trip_performer),
        cmocka_unit_test(test_refusals), cmocka_unit_test(test_resume_model_level),
        cmocka_unit_test(test_resume_model_level_performer),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
