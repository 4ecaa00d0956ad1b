/* test_model.c - the whole encoder: finite-difference gradients of the loss w.r.t. every
 * parameter tensor (classification with CLS and mean pooling, learned and sinusoidal positions,
 * dropout on, the dual-encoder head), the gradient convention, the memory plan, padding
 * examples, and bitwise determinism (same seed twice; 1 vs 2 threads). */
#include "testutil.h"

#include <omp.h>

#include "../lra/config.h"
#include "../lra/model.h"

static int g_interaction;
static void tiny_cfg(run_cfg *c, int pos, int pooling, float dropout, const char *impl) {
    memset(c, 0, sizeof *c);
    schema_defaults(model_schema, model_schema_n, &c->model);
    schema_defaults(train_schema, train_schema_n, &c->train);
    schema_defaults(task_common_schema, task_common_schema_n, &c->task);
    snprintf(c->task.name, sizeof c->task.name, "listops");
    c->task_ops = task_find("listops");
    c->task.seq_len = 7;
    c->model.d_model = 8;
    c->model.n_heads = 2;
    c->model.n_layers = 2;
    c->model.d_ff = 12;
    c->model.mlp_dim = 6;
    c->model.pos = pos;
    c->model.pooling = pooling;
    c->model.dropout = dropout;
    c->model.attn_dropout = 0;
    c->model.emb_init_std = 0.5f;
    c->model.interaction = g_interaction;
    c->train.seed = 3;
    c->train.grad_clip = 0;
    c->attn_ops = attn_find("softmax");
    assert_non_null(c->attn_ops);
    schema_defaults(c->attn_ops->schema, c->attn_ops->n_schema, c->attn_params.bytes);
    if (impl) {
        const param_def *d = schema_find(c->attn_ops->schema, c->attn_ops->n_schema, "impl");
        char err[256];
        assert_int_equal(schema_set(d, c->attn_params.bytes, impl, err, sizeof err), 0);
    }
    config_finalize(c);
}

/* A fake split: n examples of random tokens in [1, V) with random right padding. */
static task_split fake_split(int n, int n_inputs, int seq_len, int V, int K, uint64_t seed) {
    task_split s = {.n = n, .seq_len = seq_len, .n_inputs = n_inputs};
    s.tokens = calloc((size_t)n * n_inputs * seq_len, sizeof(int32_t));
    s.labels = calloc((size_t)n, sizeof(int32_t));
    rng_t r = rng_make(seed, RNG_TEST);
    for (int e = 0; e < n * n_inputs; e++) {
        int len = rng_int(&r, 2, seq_len);
        for (int t = 0; t < len; t++) s.tokens[(size_t)e * seq_len + t] = rng_int(&r, 1, V - 1);
    }
    for (int e = 0; e < n; e++) s.labels[e] = rng_int(&r, 0, K - 1);
    return s;
}

static model_t *g_m;
static double loss_fn(void *ctx) {
    (void)ctx;
    return model_forward(g_m, 1, NULL, NULL);
}

static double check_all_tensors(model_t *m) {
    g_m = m;
    model_zero_grad(m);
    model_forward(m, 1, NULL, NULL);
    model_backward(m);
    double worst = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        tensor_decl *t = &m->tensors[i];
        float *g = malloc(t->n * sizeof(float));
        memcpy(g, *t->gptr, t->n * sizeof(float));
        double e = tu_fd_check(loss_fn, NULL, *t->ptr, g, t->n, 6, 1e-2f, 1e-2);
        if (e > 5e-2) print_message("tensor %s (layer %d): fd rel err %.3g\n", t->name, t->layer, e);
        if (e > worst) worst = e;
        free(g);
    }
    return worst;
}

static void run_grad_case(int pos, int pooling, float dropout, task_kind kind, const char *impl) {
    run_cfg c;
    tiny_cfg(&c, pos, pooling, dropout, impl);
    int V = 11, K = 3, B = 3;
    model_t *m = calloc(1, sizeof *m);
    char err[256];
    assert_int_equal(model_build(m, &c, B, V, K, kind, 0, err, sizeof err), 0);
    task_split s = fake_split(4, kind == TASK_MATCH ? 2 : 1, c.task.seq_len, V, K, 11);
    int idx[3] = {0, 2, 3};
    model_load_batch(m, &s, idx);
    double worst = check_all_tensors(m);
    assert_true(worst < 5e-2);
    task_split_free(&s);
    model_free(m);
    free(m);
}

static void test_grad_cls_sinusoidal(void **st) {
    (void)st;
    run_grad_case(POS_SINUSOIDAL, POOL_CLS, 0.0f, TASK_CLASSIFY, NULL);
}
static void test_grad_mean_learned(void **st) {
    (void)st;
    run_grad_case(POS_LEARNED, POOL_MEAN, 0.0f, TASK_CLASSIFY, NULL);
}
static void test_grad_dropout_materialized(void **st) {
    (void)st;
    run_grad_case(POS_SINUSOIDAL, POOL_CLS, 0.2f, TASK_CLASSIFY, "materialized");
}
static void test_grad_match(void **st) {
    (void)st;
    run_grad_case(POS_SINUSOIDAL, POOL_CLS, 0.0f, TASK_MATCH, NULL);
}
static void test_grad_match_concat(void **st) {
    (void)st;
    g_interaction = INTERACT_CONCAT;
    run_grad_case(POS_SINUSOIDAL, POOL_MEAN, 0.0f, TASK_MATCH, NULL);
    g_interaction = INTERACT_NLI;
}

/* Parameter grads accumulate: a second backward without zeroing doubles them. */
static void test_grad_convention(void **st) {
    (void)st;
    run_cfg c;
    tiny_cfg(&c, POS_SINUSOIDAL, POOL_CLS, 0.1f, NULL);
    model_t *m = calloc(1, sizeof *m);
    char err[256];
    assert_int_equal(model_build(m, &c, 2, 9, 3, TASK_CLASSIFY, 0, err, sizeof err), 0);
    task_split s = fake_split(2, 1, c.task.seq_len, 9, 3, 5);
    int idx[2] = {0, 1};
    model_load_batch(m, &s, idx);
    model_zero_grad(m);
    model_forward(m, 1, NULL, NULL);
    model_backward(m);
    float *g1 = malloc(m->n_params * sizeof(float));
    memcpy(g1, m->arenas[MEM_GRADS].base, m->n_params * sizeof(float));
    model_forward(m, 1, NULL, NULL);
    model_backward(m);
    const float *g2 = (const float *)m->arenas[MEM_GRADS].base;
    double worst = 0;
    for (size_t i = 0; i < m->n_params; i++) {
        double e = fabs((double)g2[i] - 2.0 * g1[i]);
        if (e > worst) worst = e;
    }
    assert_true(worst < 1e-5);
    free(g1);
    task_split_free(&s);
    model_free(m);
    free(m);
}

/* The plan is made before allocation and matches what was allocated; --max-mem refuses. */
static void test_memory_plan(void **st) {
    (void)st;
    run_cfg c;
    tiny_cfg(&c, POS_SINUSOIDAL, POOL_CLS, 0.1f, NULL);
    c.task.seq_len = 64;
    model_t *m = calloc(1, sizeof *m);
    char err[256];
    assert_int_equal(model_build(m, &c, 4, 9, 3, TASK_CLASSIFY, 0, err, sizeof err), 0);
    size_t total = model_planned_total(m);
    assert_true(total > 0);
    for (int i = 0; i < MEM_N_CATEGORIES; i++) assert_int_equal(m->arenas[i].used, m->arenas[i].cap);
    /* params count: embedding (9+1)x8, 2 blocks, final LN, head */
    size_t D = 8, F = 12, blk = 4 * D + 4 * D * D + 2 * F * D + F + D;
    assert_int_equal(m->n_params_real, 10 * D + 2 * blk + 2 * D + 6 * D + 6 + 3 * 6 + 3);
    model_free(m);
    memset(m, 0, sizeof *m);
    assert_int_equal(model_build(m, &c, 4, 9, 3, TASK_CLASSIFY, (long long)(total / 2), err, sizeof err), -1);
    assert_non_null(strstr(err, "--max-mem"));
    model_free(m);
    free(m);
}

/* Train a few steps and return the final loss bits. */
static double train_steps(int threads, int steps) {
    omp_set_num_threads(threads);
    run_cfg c;
    tiny_cfg(&c, POS_SINUSOIDAL, POOL_CLS, 0.1f, NULL);
    c.task.seq_len = 40;
    c.model.d_model = 32;
    c.model.n_heads = 4;
    c.model.d_ff = 64;
    c.train.grad_clip = 1.0f;
    model_t *m = calloc(1, sizeof *m);
    char err[256];
    assert_int_equal(model_build(m, &c, 8, 20, 4, TASK_CLASSIFY, 0, err, sizeof err), 0);
    task_split s = fake_split(16, 1, c.task.seq_len, 20, 4, 9);
    double loss = 0;
    for (int k = 0; k < steps; k++) {
        int idx[8];
        for (int b = 0; b < 8; b++) idx[b] = (k * 8 + b) % 16;
        model_load_batch(m, &s, idx);
        loss = model_forward(m, 1, NULL, NULL);
        model_zero_grad(m);
        model_backward(m);
        model_update(m, 1e-3f);
    }
    task_split_free(&s);
    model_free(m);
    free(m);
    omp_set_num_threads(2);
    return loss;
}

static void test_determinism(void **st) {
    (void)st;
    double a = train_steps(2, 5), b = train_steps(2, 5), c1 = train_steps(1, 5);
    assert_memory_equal(&a, &b, sizeof a);
    assert_memory_equal(&a, &c1, sizeof a);
    assert_true(isfinite(a));
}

/* Padding examples (idx -1) are ignored by loss and accuracy. */
static void test_padding_examples(void **st) {
    (void)st;
    run_cfg c;
    tiny_cfg(&c, POS_SINUSOIDAL, POOL_CLS, 0.0f, NULL);
    model_t *m = calloc(1, sizeof *m);
    char err[256];
    assert_int_equal(model_build(m, &c, 3, 9, 3, TASK_CLASSIFY, 0, err, sizeof err), 0);
    task_split s = fake_split(3, 1, c.task.seq_len, 9, 3, 21);
    int idx1[3] = {0, 1, -1}, idx2[3] = {0, 1, 2};
    int corr = 0, cnt = 0;
    model_load_batch(m, &s, idx1);
    double l1 = model_forward(m, 0, &corr, &cnt);
    assert_int_equal(cnt, 2);
    model_load_batch(m, &s, idx2);
    model_forward(m, 0, NULL, NULL);
    double l2 = (m->losses[0] + m->losses[1]) / 2.0;
    assert_true(fabs(l1 - l2) < 1e-6);
    task_split_free(&s);
    model_free(m);
    free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grad_cls_sinusoidal), cmocka_unit_test(test_grad_mean_learned),
        cmocka_unit_test(test_grad_dropout_materialized), cmocka_unit_test(test_grad_match), cmocka_unit_test(test_grad_match_concat),
        cmocka_unit_test(test_grad_convention), cmocka_unit_test(test_memory_plan),
        cmocka_unit_test(test_determinism), cmocka_unit_test(test_padding_examples),
    };
    return cmocka_run_group_tests_name("model", tests, NULL, NULL);
}
