/* test_lm.c - the causal byte-level LM (lra/lm.h): finite-difference gradients of the whole loss
 * w.r.t. every parameter tensor for memory none, xl and compressive (with the memory filled by a
 * previous segment; the compressor against the attention-reconstruction loss), causality inside a
 * segment, memory equivalence (segments + xl memory == one long segment), bits per byte of equal
 * logits == 8, the memory bookkeeping of the compressive memory, bitwise determinism (same seed;
 * 1 vs 2 threads), and the config errors for memory with a non-softmax mechanism. */
#include "testutil.h"

#include <omp.h>
#include <unistd.h>

#include "../lra/config.h"
#include "../lra/lm.h"

static void tiny_cfg(run_cfg *c, int memory, int L, int mem_len, int cmem_len, int cr, int compression,
                     float dropout, const char *attn) {
    memset(c, 0, sizeof *c);
    schema_defaults(model_schema, model_schema_n, &c->model);
    schema_defaults(train_schema, train_schema_n, &c->train);
    schema_defaults(task_common_schema, task_common_schema_n, &c->task);
    snprintf(c->task.name, sizeof c->task.name, "lm");
    c->task_ops = task_find("lm");
    c->task.seq_len = L;
    c->model.d_model = 8;
    c->model.n_heads = 2;
    c->model.n_layers = 2;
    c->model.d_ff = 12;
    c->model.dropout = dropout;
    c->model.attn_dropout = 0;
    c->model.emb_init_std = 0.5f;
    c->model.causal = 1;
    c->model.memory = memory;
    c->model.mem_len = mem_len;
    c->model.cmem_len = cmem_len;
    c->model.compression_rate = cr;
    c->model.compression = compression;
    c->model.recon_weight = 1.0f;
    c->train.seed = 3;
    c->train.grad_clip = 0;
    c->attn_ops = attn_find(attn ? attn : "softmax");
    assert_non_null(c->attn_ops);
    schema_defaults(c->attn_ops->schema, c->attn_ops->n_schema, c->attn_params.bytes);
    config_finalize(c);
}

static uint8_t *rand_bytes(size_t n, uint64_t seed) {
    uint8_t *s = malloc(n);
    rng_t r = rng_make(seed, RNG_TEST);
    for (size_t i = 0; i < n; i++) s[i] = (uint8_t)rng_int(&r, 0, 255);
    return s;
}

static lm_t *build(const run_cfg *c, int B) {
    lm_t *m = calloc(1, sizeof *m);
    char err[512] = "";
    int rc = lm_build(m, c, B, 0, err, sizeof err);
    if (rc) print_message("lm_build: %s\n", err);
    assert_int_equal(rc, 0);
    return m;
}

static void drop_model(lm_t *m) {
    lm_free(m);
    free(m);
}

/* Load segment `seg` of B streams (stream b reads s + b*100). */
static void load_seg(lm_t *m, const uint8_t *s, int seg) {
    for (int b = 0; b < m->B; b++) lm_load_stream(m, b, s, (size_t)b * 100, 99, (size_t)seg * m->L, m->L);
}

/* ---- memory snapshots (the FD losses must see the same memory every call) */
typedef struct {
    float *buf;
    int n_mem, n_cmem;
} mem_snap;

static size_t mem_floats(const lm_t *m) {
    return (size_t)m->NL * m->B * (size_t)(m->M + m->C) * m->D;
}
static mem_snap snap_take(const lm_t *m) {
    mem_snap s = {malloc(mem_floats(m) * sizeof(float) + 1), m->mem->n_mem, m->mem->n_cmem};
    float *p = s.buf;
    for (int l = 0; l < m->NL; l++) {
        size_t a = (size_t)m->B * m->M * m->D, c = (size_t)m->B * m->C * m->D;
        if (a) memcpy(p, m->mem->mem[l], a * sizeof(float));
        p += a;
        if (c) memcpy(p, m->mem->cmem[l], c * sizeof(float));
        p += c;
    }
    return s;
}
static void snap_put(lm_t *m, const mem_snap *s) {
    const float *p = s->buf;
    for (int l = 0; l < m->NL; l++) {
        size_t a = (size_t)m->B * m->M * m->D, c = (size_t)m->B * m->C * m->D;
        if (a) memcpy(m->mem->mem[l], p, a * sizeof(float));
        p += a;
        if (c) memcpy(m->mem->cmem[l], p, c * sizeof(float));
        p += c;
    }
    m->mem->n_mem = s->n_mem;
    m->mem->n_cmem = s->n_cmem;
}

/* ---- gradient checks */
static lm_t *g_m;
static mem_snap *g_snap;
static double ce_loss(void *ctx) {
    (void)ctx;
    return lm_forward(g_m, 1);
}
/* The reconstruction loss of the memory update after the current segment, from the same memory. */
static double recon_loss(void *ctx) {
    (void)ctx;
    snap_put(g_m, g_snap);
    lm_forward(g_m, 1);
    double r = lm_memory_update(g_m, 1);
    snap_put(g_m, g_snap);
    return r;
}

static void grad_case(int memory, float dropout, int compression) {
    run_cfg c;
    int L = 6;
    if (memory == MEMORY_NONE) tiny_cfg(&c, MEMORY_NONE, L, 0, 0, 4, 0, dropout, NULL);
    else if (memory == MEMORY_XL) tiny_cfg(&c, MEMORY_XL, L, 5, 0, 4, 0, dropout, NULL);
    else tiny_cfg(&c, MEMORY_COMPRESSIVE, L, 4, 2, 2, compression, dropout, NULL);
    lm_t *m = build(&c, 2);
    uint8_t *s = rand_bytes(300, 7);
    /* segment 0 fills the memory (and, for compressive, the compressed memory) */
    load_seg(m, s, 0);
    lm_forward(m, 1);
    lm_memory_update(m, 0);
    if (memory == MEMORY_XL) assert_int_equal(m->mem->n_mem, 5);
    if (memory == MEMORY_COMPRESSIVE) {
        assert_int_equal(m->mem->n_mem, 4);
        assert_int_equal(m->mem->n_cmem, 1); /* 2 evicted rows at rate 2 */
    }
    m->step = 1;
    load_seg(m, s, 1);
    mem_snap snap = snap_take(m);
    g_m = m;
    g_snap = &snap;

    lm_zero_grad(m);
    lm_forward(m, 1);
    if (memory != MEMORY_NONE) assert_int_equal(m->K, m->mem->n_cmem + m->mem->n_mem + L);
    lm_backward(m);
    double worst = 0;
    for (int i = 0; i < m->n_tensors; i++) {
        tensor_decl *t = &m->tensors[i];
        if (!strcmp(t->name, "compress_w")) continue; /* trained by the reconstruction loss only */
        float *g = malloc(t->n * sizeof(float));
        memcpy(g, *t->gptr, t->n * sizeof(float));
        double e = tu_fd_check(ce_loss, NULL, *t->ptr, g, t->n, 8, 1e-2f, 1e-2);
        if (e > 5e-2) print_message("memory %d tensor %s (layer %d): fd rel err %.3g\n", memory, t->name, t->layer, e);
        if (e > worst) worst = e;
        free(g);
    }
    assert_true(worst < 5e-2);
    /* the CE never reaches the compressor (memories are stop-gradient) */
    for (int i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, "compress_w"))
            for (size_t j = 0; j < m->tensors[i].n; j++) assert_true((*m->tensors[i].gptr)[j] == 0.0f);

    if (memory == MEMORY_COMPRESSIVE) {
        /* segment 1 evicts 6 rows: the compressor gradient of the reconstruction loss */
        lm_zero_grad(m);
        double r = recon_loss(NULL);
        lm_zero_grad(m);
        snap_put(m, &snap);
        lm_forward(m, 1);
        double r2 = lm_memory_update(m, 1);
        assert_true(isfinite(r) && r > 0);
        assert_true(r == r2);
        assert_int_equal(m->mem->n_cmem, 2); /* 1 + 3 new slots, capped at cmem_len 2 */
        int seen = 0;
        /* copy the analytic gradients first: every FD evaluation accumulates into them again */
        float *gall = malloc(m->n_params * sizeof(float));
        memcpy(gall, m->arenas[MEM_GRADS].base, m->n_params * sizeof(float));
        for (int i = 0; i < m->n_tensors; i++) {
            tensor_decl *t = &m->tensors[i];
            if (strcmp(t->name, "compress_w")) {
                /* nothing but the compressor receives the reconstruction gradient */
                for (size_t j = 0; j < t->n; j++) assert_true((*t->gptr)[j] == 0.0f);
                continue;
            }
            seen++;
            const float *g = gall + (*t->gptr - (float *)m->arenas[MEM_GRADS].base);
            double e = tu_fd_check(recon_loss, NULL, *t->ptr, g, t->n, 16, 1e-2f, 1e-3);
            if (e > 5e-2) print_message("compressor (layer %d): fd rel err %.3g\n", t->layer, e);
            assert_true(e < 5e-2);
        }
        free(gall);
        assert_int_equal(seen, compression >= 2 ? 2 : 0);
    }
    free(snap.buf);
    free(s);
    drop_model(m);
}

static void test_grad_none(void **st) {
    (void)st;
    grad_case(MEMORY_NONE, 0.0f, 0);
}
static void test_grad_none_dropout(void **st) {
    (void)st;
    grad_case(MEMORY_NONE, 0.2f, 0);
}
static void test_grad_xl(void **st) {
    (void)st;
    grad_case(MEMORY_XL, 0.0f, 0);
}
static void test_grad_xl_dropout(void **st) {
    (void)st;
    grad_case(MEMORY_XL, 0.2f, 0);
}
static void test_grad_compressive_conv(void **st) {
    (void)st;
    grad_case(MEMORY_COMPRESSIVE, 0.0f, 2);
}
static void test_grad_compressive_dilated(void **st) {
    (void)st;
    grad_case(MEMORY_COMPRESSIVE, 0.0f, 3);
}
static void test_grad_compressive_maxpool(void **st) {
    (void)st;
    grad_case(MEMORY_COMPRESSIVE, 0.0f, 0);
}

/* ---- causality: changing bytes from position t0 on never changes losses before t0 - 1 (the
 * loss at t0 - 1 has the changed byte as its target). */
static void causal_case(int memory, const char *attn) {
    run_cfg c;
    int L = 16;
    tiny_cfg(&c, memory, L, memory == MEMORY_NONE ? 0 : 8, memory == MEMORY_COMPRESSIVE ? 4 : 0, 2, 2, 0.0f, attn);
    lm_t *m = build(&c, 2);
    uint8_t *s = rand_bytes(300, 9);
    load_seg(m, s, 0);
    lm_forward(m, 0);
    lm_memory_update(m, 0);
    mem_snap snap = snap_take(m);
    load_seg(m, s, 1);
    lm_forward(m, 0);
    float *ref = malloc(sizeof(float) * 2 * L);
    memcpy(ref, m->losses, sizeof(float) * 2 * L);
    for (int t0 = 1; t0 < L; t0 += 5) {
        uint8_t *s2 = malloc(300);
        memcpy(s2, s, 300);
        for (int b = 0; b < 2; b++)
            for (int t = t0; t <= L; t++) s2[b * 100 + L + t] ^= 0x5a;
        snap_put(m, &snap);
        load_seg(m, s2, 1);
        lm_forward(m, 0);
        for (int b = 0; b < 2; b++) {
            for (int t = 0; t < t0 - 1; t++) assert_true(m->losses[b * L + t] == ref[b * L + t]);
            int changed = 0;
            for (int t = t0 - 1; t < L; t++) changed += m->losses[b * L + t] != ref[b * L + t];
            assert_true(changed > 0);
        }
        free(s2);
    }
    free(ref);
    free(snap.buf);
    free(s);
    drop_model(m);
}
static void test_causal_none(void **st) {
    (void)st;
    causal_case(MEMORY_NONE, NULL);
    causal_case(MEMORY_NONE, "linear");
}
static void test_causal_xl(void **st) {
    (void)st;
    causal_case(MEMORY_XL, NULL);
}
static void test_causal_compressive(void **st) {
    (void)st;
    causal_case(MEMORY_COMPRESSIVE, NULL);
}

/* ---- memory equivalence: 4 segments of 6 with xl memory 24 == one segment of 24 */
static void test_memory_equivalence(void **st) {
    (void)st;
    run_cfg c1, c2;
    tiny_cfg(&c1, MEMORY_XL, 6, 24, 0, 4, 0, 0.0f, NULL);
    tiny_cfg(&c2, MEMORY_XL, 24, 24, 0, 4, 0, 0.0f, NULL);
    lm_t *m1 = build(&c1, 2), *m2 = build(&c2, 2);
    assert_int_equal(m1->n_params_real, m2->n_params_real);
    /* the same parameters (init does not depend on the segment length; copied to be sure) */
    memcpy(m2->arenas[MEM_PARAMS].base, m1->arenas[MEM_PARAMS].base, m1->n_params * sizeof(float));
    uint8_t *s = rand_bytes(300, 13);
    load_seg(m2, s, 0);
    lm_forward(m2, 0);
    double worst = 0;
    for (int seg = 0; seg < 4; seg++) {
        load_seg(m1, s, seg);
        lm_forward(m1, 0);
        lm_memory_update(m1, 0);
        for (int b = 0; b < 2; b++)
            for (int t = 0; t < 6; t++) {
                double d = fabs((double)m1->losses[b * 6 + t] - (double)m2->losses[b * 24 + seg * 6 + t]);
                if (d > worst) worst = d;
            }
    }
    print_message("memory equivalence: max |loss difference| %.3g\n", worst);
    assert_true(worst < 1e-5);
    /* and memory matters: without it (memory none is a different model, so reset instead) the later
     * segments' losses change */
    lm_memory_reset(m1);
    load_seg(m1, s, 3);
    lm_forward(m1, 0);
    double diff = 0;
    for (int t = 0; t < 6; t++) diff += fabs((double)m1->losses[t] - (double)m2->losses[18 + t]);
    assert_true(diff > 1e-3);
    free(s);
    drop_model(m1);
    drop_model(m2);
}

/* ---- bits per byte of equal logits is log2(256) = 8 */
static void test_bpb_uniform(void **st) {
    (void)st;
    for (int mem = 0; mem < 3; mem++) {
        run_cfg c;
        tiny_cfg(&c, mem, 8, mem ? 8 : 0, mem == 2 ? 4 : 0, 2, 2, 0.0f, NULL);
        lm_t *m = build(&c, 3);
        memset(m->head_w, 0, sizeof(float) * LM_CLASSES * m->D);
        memset(m->head_b, 0, sizeof(float) * LM_CLASSES);
        uint8_t *s = rand_bytes(1000, 17);
        long long np = 0;
        double bpb = lm_eval_bpb(m, s, 1000, 0, &np);
        assert_int_equal(np, 999); /* every byte but the first is predicted once */
        assert_true(fabs(bpb - 8.0) < 1e-6);
        bpb = lm_eval_bpb(m, s, 1000, 101, &np); /* eval byte budget */
        assert_int_equal(np, 100);
        assert_true(fabs(bpb - 8.0) < 1e-6);
        free(s);
        drop_model(m);
    }
}

/* lm_eval_bpb == mean of the per-position losses of the same segments, and the evaluation memory
 * leaves the training memory alone. */
static void test_eval_consistency(void **st) {
    (void)st;
    run_cfg c;
    tiny_cfg(&c, MEMORY_XL, 5, 10, 0, 4, 0, 0.0f, NULL);
    lm_t *m = build(&c, 1);
    uint8_t *s = rand_bytes(21, 19);
    load_seg(m, s, 0);
    lm_forward(m, 0);
    lm_memory_update(m, 0);
    assert_int_equal(m->mem_train.n_mem, 5);
    long long np;
    double bpb = lm_eval_bpb(m, s, 21, 0, &np);
    assert_int_equal(np, 20);
    assert_int_equal(m->mem_train.n_mem, 5);
    assert_ptr_equal(m->mem, &m->mem_train);
    /* by hand: 4 segments of 5 predictions, eval memory from empty */
    lm_memory_select(m, 1);
    lm_memory_reset(m);
    double sum = 0;
    for (int seg = 0; seg < 4; seg++) {
        lm_load_stream(m, 0, s, 0, 20, (size_t)seg * 5, 5);
        lm_forward(m, 0);
        for (int t = 0; t < 5; t++) sum += m->losses[t];
        lm_memory_update(m, 0);
    }
    lm_memory_select(m, 0);
    assert_true(fabs(bpb - sum / 20 / log(2.0)) < 1e-9);
    free(s);
    drop_model(m);
}

/* Evaluation with another segment length and memory (train.eval_segment_len / eval_mem_len: a
 * second model with the same parameter layout, parameters copied): with the memory covering the
 * whole stream both score the same bits per byte. */
static void test_eval_other_lengths(void **st) {
    (void)st;
    run_cfg c1, c2;
    tiny_cfg(&c1, MEMORY_XL, 6, 6, 0, 4, 0, 0.0f, NULL);
    tiny_cfg(&c2, MEMORY_XL, 3, 40, 0, 4, 0, 0.0f, NULL);
    lm_t *m1 = build(&c1, 2), *m2 = build(&c2, 2);
    assert_int_equal(m1->n_params, m2->n_params);
    memcpy(m2->arenas[MEM_PARAMS].base, m1->arenas[MEM_PARAMS].base, m1->n_params * sizeof(float));
    run_cfg c3;
    tiny_cfg(&c3, MEMORY_XL, 36, 40, 0, 4, 0, 0.0f, NULL);
    lm_t *m3 = build(&c3, 2);
    memcpy(m3->arenas[MEM_PARAMS].base, m1->arenas[MEM_PARAMS].base, m1->n_params * sizeof(float));
    uint8_t *s = rand_bytes(73, 29);
    double b2 = lm_eval_bpb(m2, s, 73, 0, NULL), b3 = lm_eval_bpb(m3, s, 73, 0, NULL);
    double b1 = lm_eval_bpb(m1, s, 73, 0, NULL);
    print_message("bpb: segment 3 + memory 40: %.7f, one segment of 36: %.7f, segment 6 + memory 6: %.7f\n", b2, b3,
                  b1);
    assert_true(fabs(b2 - b3) < 1e-5);
    assert_true(fabs(b1 - b3) > 1e-4); /* a short memory does lose context */
    free(s);
    drop_model(m1);
    drop_model(m2);
    drop_model(m3);
}

/* ---- determinism: a few training steps, twice, and with 1 and 2 threads */
static float *train_steps(int memory, int threads) {
    int old = omp_get_max_threads();
    omp_set_num_threads(threads);
    run_cfg c;
    tiny_cfg(&c, memory, 8, memory ? 8 : 0, memory == MEMORY_COMPRESSIVE ? 4 : 0, 2, 2, 0.1f, NULL);
    c.model.d_model = 16;
    lm_t *m = build(&c, 4);
    uint8_t *s = rand_bytes(1000, 23);
    for (int step = 0; step < 4; step++) {
        for (int b = 0; b < 4; b++) lm_load_stream(m, b, s, (size_t)b * 240, 240, (size_t)step * 8, 8);
        lm_zero_grad(m);
        lm_forward(m, 1);
        lm_backward(m);
        lm_memory_update(m, 1);
        lm_update(m, 1e-2f);
    }
    float *p = malloc(m->n_params * sizeof(float));
    memcpy(p, m->arenas[MEM_PARAMS].base, m->n_params * sizeof(float));
    p[0] += 0.0f;
    free(s);
    drop_model(m);
    omp_set_num_threads(old);
    return p;
}
static void test_determinism(void **st) {
    (void)st;
    for (int mem = 0; mem < 3; mem++) {
        run_cfg c;
        tiny_cfg(&c, mem, 8, mem ? 8 : 0, mem == MEMORY_COMPRESSIVE ? 4 : 0, 2, 2, 0.1f, NULL);
        c.model.d_model = 16;
        lm_t *m = build(&c, 4);
        size_t n = m->n_params;
        drop_model(m);
        float *a = train_steps(mem, 1), *b = train_steps(mem, 1), *d = train_steps(mem, 2);
        assert_memory_equal(a, b, n * sizeof(float));
        assert_memory_equal(a, d, n * sizeof(float));
        free(a);
        free(b);
        free(d);
    }
}

/* ---- config: memory with a non-softmax mechanism, memory on a classification task */
static int load_text(const char *yaml, char *err, size_t errlen) {
    char path[] = "/tmp/test_lm_XXXXXX.yaml";
    int fd = mkstemps(path, 5);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, yaml, strlen(yaml)), (ssize_t)strlen(yaml));
    close(fd);
    run_plan plan = {0};
    int rc = config_load(&plan, path, NULL, 0, err, errlen);
    config_plan_free(&plan);
    unlink(path);
    return rc;
}
static void test_config_errors(void **st) {
    (void)st;
    char err[1024];
    FILE *f = fopen("/tmp/test_lm_data.txt", "w");
    assert_non_null(f);
    for (int i = 0; i < 200; i++) fputs("some text to model, ", f);
    fclose(f);
    assert_int_equal(load_text("task: {name: lm, seq_len: 32, path: /tmp/test_lm_data.txt}\nmodel: {memory: xl, mem_len: 32}\nattention: linear\n", err,
                               sizeof err),
                     -1);
    assert_non_null(strstr(err, "attention 'linear'"));
    assert_non_null(strstr(err, "softmax"));
    assert_int_equal(load_text("task: {name: lm, seq_len: 32, path: /tmp/test_lm_data.txt}\nmodel: {memory: xl}\n", err, sizeof err), -1);
    assert_non_null(strstr(err, "model.mem_len"));
    assert_int_equal(load_text("task: {name: lm, seq_len: 30, path: /tmp/test_lm_data.txt}\nmodel: {memory: compressive, mem_len: 32, cmem_len: 8, "
                               "compression_rate: 4}\n",
                               err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "model.compression_rate"));
    assert_int_equal(load_text("task: {name: listops, seq_len: 32}\nmodel: {memory: xl, mem_len: 8}\n", err, sizeof err),
                     -1);
    assert_non_null(strstr(err, "model.memory"));
    assert_int_equal(load_text("task: {name: lm, seq_len: 32, path: /tmp/test_lm_data.txt}\nmodel: {memory: compressive, mem_len: 32, cmem_len: 8}\n",
                               err, sizeof err),
                     0);
    unlink("/tmp/test_lm_data.txt");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grad_none),
        cmocka_unit_test(test_grad_none_dropout),
        cmocka_unit_test(test_grad_xl),
        cmocka_unit_test(test_grad_xl_dropout),
        cmocka_unit_test(test_grad_compressive_conv),
        cmocka_unit_test(test_grad_compressive_dilated),
        cmocka_unit_test(test_grad_compressive_maxpool),
        cmocka_unit_test(test_causal_none),
        cmocka_unit_test(test_causal_xl),
        cmocka_unit_test(test_causal_compressive),
        cmocka_unit_test(test_memory_equivalence),
        cmocka_unit_test(test_bpb_uniform),
        cmocka_unit_test(test_eval_consistency),
        cmocka_unit_test(test_eval_other_lengths),
        cmocka_unit_test(test_determinism),
        cmocka_unit_test(test_config_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
