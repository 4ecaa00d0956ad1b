/* test_approx.c - the approximation study's building blocks (lra/approx.c): the relative error,
 * Performer's error against its feature count, singular values through LAPACK, softmax attention
 * matrices, and the capture of q, k, v from a model. */
#include "testutil.h"

#include <unistd.h>

#include "../lra/approx.h"
#include "../lra/common.h"
#include "../lra/config.h"

extern const attn_ops attn_softmax;
extern const attn_ops attn_performer;

static void set_key(const attn_ops *ops, void *p, const char *key, const char *val) {
    char err[256];
    const param_def *d = schema_find(ops->schema, ops->n_schema, key);
    assert_non_null(d);
    assert_int_equal(schema_set(d, p, val, err, sizeof err), 0);
}

/* Softmax against itself is exactly 0; a known perturbation gives its size; padded query rows do
 * not count. */
static void test_rel_error(void **st) {
    (void)st;
    approx_inputs in;
    approx_inputs_random(&in, 2, 2, 64, 16, 1.0f, 3);
    size_t n = approx_layer_floats(&in);
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    unsigned char p[ATTN_PARAMS_MAX];
    schema_defaults(attn_softmax.schema, attn_softmax.n_schema, p);
    char err[256];
    assert_int_equal(approx_forward(&attn_softmax, p, &in, 0, 0, a, err, sizeof err), 0);
    assert_int_equal(approx_forward(&attn_softmax, p, &in, 0, 7, b, err, sizeof err), 0);
    assert_true(approx_rel_error(a, b, 2, 2, 64, 16, NULL) == 0.0);
    for (size_t i = 0; i < n; i++) b[i] = a[i] * 1.25f;
    assert_float_equal(approx_rel_error(b, a, 2, 2, 64, 16, NULL), 0.25, 1e-6);
    /* rows of padded positions are ignored: spoil them, the error stays 0 */
    uint8_t *mask = malloc(2 * 64);
    for (int bb = 0; bb < 2; bb++)
        for (int i = 0; i < 64; i++) mask[bb * 64 + i] = i < 40;
    memcpy(b, a, n * sizeof *b);
    for (int bb = 0; bb < 2; bb++)
        for (int h = 0; h < 2; h++)
            for (int i = 40; i < 64; i++) b[(((size_t)bb * 2 + h) * 64 + i) * 16] += 100.0f;
    assert_true(approx_rel_error(b, a, 2, 2, 64, 16, mask) == 0.0);
    assert_true(approx_rel_error(b, a, 2, 2, 64, 16, NULL) > 1.0);
    /* the random inputs' logit scale: q.k/sqrt(Dh) has std ~ logit_std */
    approx_inputs r;
    approx_inputs_random(&r, 1, 1, 512, 32, 2.0f, 5);
    double s2 = 0;
    for (int i = 0; i < 512; i++) {
        double d = 0;
        for (int t = 0; t < 32; t++) d += (double)r.q[i * 32 + t] * r.k[((i * 7 + 3) % 512) * 32 + t];
        s2 += d * d / 32;
    }
    printf("random inputs with logit_std 2: logit std %.3f\n", sqrt(s2 / 512));
    assert_true(fabs(sqrt(s2 / 512) - 2.0) < 0.3);
    approx_inputs_free(&r);
    free(mask);
    free(a);
    free(b);
    approx_inputs_free(&in);
}

/* FAVOR+ (orthogonal) on mild random inputs: the mean error over 4 seeds falls at every step of
 * the feature count, and at 4096 features it is below 0.1 (1/sqrt(M) convergence). */
static void test_performer_error_falls(void **st) {
    (void)st;
    const int feats[] = {16, 64, 256, 1024, 4096};
    double prev = INFINITY;
    unsigned char sp[ATTN_PARAMS_MAX], pp[ATTN_PARAMS_MAX];
    schema_defaults(attn_softmax.schema, attn_softmax.n_schema, sp);
    char err[256];
    for (size_t f = 0; f < LRA_ARRAY_LEN(feats); f++) {
        schema_defaults(attn_performer.schema, attn_performer.n_schema, pp);
        char buf[16];
        snprintf(buf, sizeof buf, "%d", feats[f]);
        set_key(&attn_performer, pp, "features", buf);
        double mean = 0;
        for (int seed = 0; seed < 4; seed++) {
            approx_inputs in;
            approx_inputs_random(&in, 1, 2, 128, 16, 0.25f, (uint64_t)seed);
            size_t n = approx_layer_floats(&in);
            float *ref = malloc(n * sizeof *ref), *out = malloc(n * sizeof *out);
            assert_int_equal(approx_forward(&attn_softmax, sp, &in, 0, 0, ref, err, sizeof err), 0);
            assert_int_equal(approx_forward(&attn_performer, pp, &in, 0, (uint64_t)seed, out, err, sizeof err), 0);
            mean += approx_rel_error(out, ref, 1, 2, 128, 16, NULL) / 4;
            free(ref);
            free(out);
            approx_inputs_free(&in);
        }
        printf("performer features %4d: mean relative error %.4f\n", feats[f], mean);
        assert_true(mean < prev);
        prev = mean;
    }
    assert_true(prev < 0.1);
}

/* Singular values of known matrices: a rank-2 construction 3 u1 v1^T + u2 v2^T (orthonormal u, v),
 * its transpose, and the uniform attention matrix (rank 1, s1 = 1). Frobenius identity on a
 * random rectangular matrix. */
static void test_singular_values(void **st) {
    (void)st;
    const int m = 6, n = 5;
    double A[30] = {0}, At[30], s[6];
    const double r2 = 1.0 / sqrt(2.0);
    double u1[6] = {1, 0, 0, 0, 0, 0}, u2[6] = {0, r2, r2, 0, 0, 0};
    double v1[5] = {0, 1, 0, 0, 0}, v2[5] = {r2, 0, 0, -r2, 0};
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) A[i * n + j] = 3 * u1[i] * v1[j] + u2[i] * v2[j];
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) At[j * m + i] = A[i * n + j];
    const double want[5] = {3, 1, 0, 0, 0};
    assert_int_equal(approx_singular_values(A, m, n, s), 0);
    for (int i = 0; i < 5; i++) assert_float_equal(s[i], want[i], 1e-12);
    assert_int_equal(approx_singular_values(At, n, m, s), 0);
    for (int i = 0; i < 5; i++) assert_float_equal(s[i], want[i], 1e-12);
    assert_float_equal(A[1], 3.0, 0); /* input untouched */

    double R[7 * 4], sr[4], fro = 0, ss = 0;
    rng_t r = rng_make(1, RNG_TEST);
    for (int i = 0; i < 28; i++) {
        R[i] = rng_normal(&r);
        fro += R[i] * R[i];
    }
    assert_int_equal(approx_singular_values(R, 7, 4, sr), 0);
    for (int i = 0; i < 4; i++) {
        ss += sr[i] * sr[i];
        if (i) assert_true(sr[i] <= sr[i - 1]);
    }
    assert_float_equal(ss, fro, 1e-9 * fro);

    /* q = 0: uniform attention over the 30 real positions of 48; P = 11^T / 30 */
    approx_inputs in;
    approx_inputs_random(&in, 1, 1, 48, 8, 1.0f, 2);
    memset(in.q, 0, approx_layer_floats(&in) * sizeof(float));
    in.mask = malloc(48);
    for (int i = 0; i < 48; i++) in.mask[i] = i % 8 < 5;
    double *P = malloc(sizeof(double) * 48 * 48), sv[48];
    int nr = approx_attention_matrix(&in, 0, 0, 0, P);
    assert_int_equal(nr, 30);
    for (int i = 0; i < nr * nr; i++) assert_float_equal(P[i], 1.0 / 30, 1e-15);
    assert_int_equal(approx_singular_values(P, nr, nr, sv), 0);
    assert_float_equal(sv[0], 1.0, 1e-12);
    assert_true(sv[1] < 1e-12);
    /* random logits: rows are distributions */
    approx_inputs_free(&in);
    approx_inputs_random(&in, 1, 2, 40, 8, 1.0f, 4);
    nr = approx_attention_matrix(&in, 0, 0, 1, P);
    assert_int_equal(nr, 40);
    for (int i = 0; i < nr; i++) {
        double t = 0;
        for (int j = 0; j < nr; j++) t += P[i * nr + j];
        assert_float_equal(t, 1.0, 1e-12);
    }
    free(P);
    approx_inputs_free(&in);
}

/* q, k, v captured from a (briefly trained) ListOps model reproduce that model's attention output:
 * running softmax on the captured tensors gives the outputs the model's layers computed. */
static void test_capture_matches_model(void **st) {
    (void)st;
    char dir[] = "/tmp/test_approx_XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/m.yaml", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("name: capture\n"
          "task: {name: listops, seq_len: 48, max_depth: 3, max_args: 4, n_train: 64, n_val: 16, n_test: 16}\n"
          "model: {d_model: 16, n_heads: 2, n_layers: 2, d_ff: 32, mlp_dim: 16}\n"
          "attention: softmax\n"
          "train: {seed: 0, batch_size: 8, steps: 3, warmup: 1, eval_every: 100}\n",
          f);
    fclose(f);
    run_plan plan;
    memset(&plan, 0, sizeof plan);
    char err[1024];
    assert_int_equal(config_load(&plan, path, NULL, 0, err, sizeof err), 0);
    approx_inputs in;
    float *att = NULL;
    double acc;
    assert_int_equal(approx_train_capture(&plan.runs[0], NULL, 3, 4, &in, &att, &acc, err, sizeof err), 0);
    assert_int_equal(in.Lc, 2);
    assert_int_equal(in.B, 4);
    assert_int_equal(in.H, 2);
    assert_int_equal(in.N, 49); /* CLS + 48 */
    assert_int_equal(in.Dh, 8);
    assert_true(acc >= 0 && acc <= 1);
    int real = 0;
    for (int i = 0; i < in.B * in.N; i++) real += in.mask[i];
    assert_true(real > 4 && real < in.B * in.N); /* ListOps lengths vary: some padding */
    size_t per = approx_layer_floats(&in);
    float *out = malloc(per * sizeof *out);
    unsigned char sp[ATTN_PARAMS_MAX];
    schema_defaults(attn_softmax.schema, attn_softmax.n_schema, sp);
    for (int l = 0; l < in.Lc; l++) {
        assert_int_equal(approx_forward(&attn_softmax, sp, &in, l, 0, out, err, sizeof err), 0);
        double e = approx_rel_error(out, att + per * l, in.B, in.H, in.N, in.Dh, in.mask);
        printf("layer %d: captured softmax vs the model's attention output: %.3g\n", l, e);
        assert_true(e < 1e-6);
        /* and the layers differ (each layer's own q, k, v were captured) */
        if (l) assert_true(approx_rel_error(att, att + per * l, in.B, in.H, in.N, in.Dh, in.mask) > 1e-2);
    }
    assert_ptr_equal(in.ops, &attn_softmax);
    assert_int_equal((int)in.nw, 0);
    /* a bad sequence count is an error naming the key */
    approx_inputs in2;
    assert_int_equal(approx_train_capture(&plan.runs[0], NULL, 0, 99, &in2, NULL, &acc, err, sizeof err), -1);
    assert_non_null(strstr(err, "capture.sequences"));
    free(out);
    free(att);
    approx_inputs_free(&in);
    config_plan_free(&plan);
    unlink(path);
    rmdir(dir);
}

/* A mechanism with learned weights: the captured (trained) Linformer E/F of each layer reproduce the
 * model's attention output; E/F from ops->init (what the study uses otherwise) do not. */
static void test_capture_trained_weights(void **st) {
    (void)st;
    char dir[] = "/tmp/test_approx_XXXXXX", path[64];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/m.yaml", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("name: capture\n"
          "task: {name: listops, seq_len: 40, max_depth: 3, max_args: 4, n_train: 64, n_val: 16, n_test: 16}\n"
          "model: {d_model: 16, n_heads: 2, n_layers: 2, d_ff: 32, mlp_dim: 16}\n"
          "attention: {name: linformer, k: 8}\n"
          "train: {seed: 1, batch_size: 8, steps: 5, warmup: 1, lr: 0.01, eval_every: 100}\n",
          f);
    fclose(f);
    run_plan plan;
    memset(&plan, 0, sizeof plan);
    char err[1024];
    assert_int_equal(config_load(&plan, path, NULL, 0, err, sizeof err), 0);
    approx_inputs in;
    float *att = NULL;
    double acc;
    assert_int_equal(approx_train_capture(&plan.runs[0], NULL, 5, 3, &in, &att, &acc, err, sizeof err), 0);
    assert_ptr_equal(in.ops, plan.runs[0].attn_ops);
    assert_true(in.nw > 0);
    size_t per = approx_layer_floats(&in);
    float *out = malloc(per * sizeof *out);
    for (int l = 0; l < in.Lc; l++) {
        assert_int_equal(approx_forward_w(in.ops, in.params, &in, l, 0, in.w + in.nw * l, out, err, sizeof err), 0);
        double e = approx_rel_error(out, att + per * l, in.B, in.H, in.N, in.Dh, in.mask);
        printf("linformer layer %d: captured E/F vs the model's output: %.3g\n", l, e);
        assert_true(e < 1e-6);
        assert_int_equal(approx_forward(in.ops, in.params, &in, l, 0, out, err, sizeof err), 0);
        e = approx_rel_error(out, att + per * l, in.B, in.H, in.N, in.Dh, in.mask);
        printf("linformer layer %d: initial E/F vs the model's output: %.3g\n", l, e);
        assert_true(e > 1e-4);
    }
    free(out);
    free(att);
    approx_inputs_free(&in);
    config_plan_free(&plan);
    unlink(path);
    rmdir(dir);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rel_error),
        cmocka_unit_test(test_performer_error_falls),
        cmocka_unit_test(test_singular_values),
        cmocka_unit_test(test_capture_matches_model),
        cmocka_unit_test(test_capture_trained_weights),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
