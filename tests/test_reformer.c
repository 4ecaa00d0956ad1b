/* test_reformer.c - Reformer LSH attention (attention/reformer.c): fast forward vs the plain
 * reference, the one-bucket/one-chunk limit against dense shared-QK softmax with the self mask,
 * finite-difference gradients, padding and causal invariance, rotation schedule, validation. */
#include "attn_harness.h"

#include "../lra/common.h"

extern const attn_ops attn_reformer;

/* Parameter block from "key=value key=value" over the schema defaults (public schema only). */
typedef struct {
    unsigned char b[ATTN_PARAMS_MAX] __attribute__((aligned(16)));
} pbuf;

static const void *mkparams(pbuf *p, const char *spec) {
    schema_defaults(attn_reformer.schema, attn_reformer.n_schema, p->b);
    char tmp[256], err[256];
    snprintf(tmp, sizeof tmp, "%s", spec);
    for (char *tok = strtok(tmp, " "); tok; tok = strtok(NULL, " ")) {
        char *eq = strchr(tok, '=');
        assert_non_null(eq);
        *eq = 0;
        const param_def *d = schema_find(attn_reformer.schema, attn_reformer.n_schema, tok);
        assert_non_null(d);
        if (schema_set(d, p->b, eq + 1, err, sizeof err)) fail_msg("%s: %s", tok, err);
    }
    return p->b;
}

static attn_shape shp(int B, int H, int N, int Dh, int causal) {
    attn_shape s = {B, H, N, N, Dh, causal, 0, 1, N};
    return s;
}

/* Dense shared-QK softmax: logits q_i . q_j/||q_j|| / sqrt(Dh), self -1e5, real keys only (and
 * j <= i when causal); padded rows 0. Written independently of reformer.c. */
static void dense_shared_qk(const attn_shape *s, const float *q, const float *v, const uint8_t *mask, float *out) {
    int N = s->N, Dh = s->Dh;
    double *w = malloc(sizeof(double) * N);
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < s->H; h++) {
            const float *qb = q + ((size_t)b * s->H + h) * N * Dh, *vb = v + ((size_t)b * s->H + h) * N * Dh;
            float *ob = out + ((size_t)b * s->H + h) * N * Dh;
            for (int i = 0; i < N; i++) {
                for (int e = 0; e < Dh; e++) ob[i * Dh + e] = 0;
                if (mask && !mask[b * N + i]) continue;
                double m = -INFINITY;
                for (int j = 0; j < N; j++) {
                    w[j] = NAN;
                    if ((mask && !mask[b * N + j]) || (s->causal && j > i)) continue;
                    double dot = 0, nn = 0;
                    for (int e = 0; e < Dh; e++) dot += (double)qb[i * Dh + e] * qb[j * Dh + e], nn += (double)qb[j * Dh + e] * qb[j * Dh + e];
                    w[j] = j == i ? -1e5 : dot / sqrt(nn) / sqrt((double)Dh);
                    if (w[j] > m) m = w[j];
                }
                double den = 0;
                for (int j = 0; j < N; j++)
                    if (!isnan(w[j])) den += exp(w[j] - m);
                for (int j = 0; j < N; j++) {
                    if (isnan(w[j])) continue;
                    double p = exp(w[j] - m) / den;
                    for (int e = 0; e < Dh; e++) ob[i * Dh + e] += (float)(p * vb[j * Dh + e]);
                }
            }
        }
    free(w);
}

static double vs_dense(ah_layer *a) {
    ah_forward(a);
    float *ref = calloc(a->nq, sizeof(float));
    dense_shared_qk(&a->L.shape, a->q, a->v, a->mask, ref);
    double e = ah_compare_rows(a, a->out, ref);
    free(ref);
    return e;
}

/* ---- fast vs reference over a spread of settings (lengths not multiples of the chunk) ---- */

static void check_fast_ref(const char *spec, attn_shape s, float pad, int training, float drop, double tol) {
    pbuf pb;
    const void *p = mkparams(&pb, spec);
    char err[256];
    assert_int_equal(attn_reformer.validate(p, &s, err, sizeof err), 0);
    ah_layer *a = ah_new(&attn_reformer, p, s, 11);
    ah_fill_qkv(a, 5);
    if (pad > 0) ah_random_mask(a, pad, 3);
    a->L.training = training;
    a->L.dropout = drop;
    a->L.step = 7;
    double e = ah_fast_vs_reference(a);
    printf("  fast vs reference [%s%s%s]: %.2e\n", spec, s.causal ? " causal" : "", pad > 0 ? " masked" : "", e);
    assert_true(e < tol);
    /* Padded query rows are exactly zero. */
    if (a->mask)
        for (int b = 0; b < s.B; b++)
            for (int i = 0; i < s.N; i++)
                if (!a->mask[b * s.N + i])
                    for (int h = 0; h < s.H; h++)
                        for (int d = 0; d < s.Dh; d++) assert_true(a->out[(((size_t)b * s.H + h) * s.N + i) * s.Dh + d] == 0.0f);
    ah_free(a);
}

static void test_fast_vs_reference(void **st) {
    (void)st;
    check_fast_ref("bucket_size=4 n_buckets=4", shp(2, 2, 37, 8, 0), 0, 0, 0, 1e-5);
    check_fast_ref("bucket_size=5 n_buckets=6 n_hashes=3", shp(2, 3, 41, 8, 0), 0.5f, 0, 0, 1e-5);
    check_fast_ref("bucket_size=4 n_buckets=4 n_hashes=2", shp(2, 2, 37, 8, 1), 0, 0, 0, 1e-5);
    check_fast_ref("bucket_size=3 n_buckets=8 n_hashes=2", shp(3, 2, 50, 4, 1), 0.6f, 0, 0, 1e-5);
    check_fast_ref("bucket_size=7 n_hashes=2", shp(2, 2, 64, 8, 0), 0.4f, 0, 0, 1e-5); /* derived NB */
    check_fast_ref("bucket_size=4 n_buckets=4 lra_logits=true lra_rotations=true", shp(2, 2, 33, 8, 0), 0.3f, 0, 0, 1e-5);
    check_fast_ref("bucket_size=6 n_buckets=4 n_hashes=2", shp(2, 2, 40, 8, 0), 0.3f, 1, 0.25f, 1e-5); /* dropout */
    check_fast_ref("bucket_size=6 n_buckets=4 n_hashes=2", shp(2, 2, 40, 8, 1), 0.3f, 1, 0.25f, 1e-5);
}

/* ---- limit: one bucket / one chunk = dense shared-QK softmax with the self mask ---- */

static void test_one_bucket_is_dense(void **st) {
    (void)st;
    /* Causal chunks are formed within a bucket, so there the limit needs n_buckets = 1. */
    static const char *specs[] = {"n_buckets=1 bucket_size=64", "n_buckets=1 bucket_size=40 n_hashes=3",
                                  "n_buckets=2 bucket_size=40"};
    for (int c = 0; c < 2; c++)
        for (size_t k = 0; k < LRA_ARRAY_LEN(specs) - (size_t)c; k++)
            for (int masked = 0; masked < 2; masked++) {
                pbuf pb;
                ah_layer *a = ah_new(&attn_reformer, mkparams(&pb, specs[k]), shp(2, 2, 37, 8, c), 21);
                ah_fill_qkv(a, 9);
                if (masked) ah_random_mask(a, 0.5f, 4);
                double e = vs_dense(a);
                printf("  one chunk vs dense [%s%s%s]: %.2e\n", specs[k], c ? " causal" : "", masked ? " masked" : "", e);
                assert_true(e < 1e-5);
                ah_free(a);
            }
    /* Causal position 0 sees only itself, so its output is exactly its value (self mask finite). */
    pbuf pb;
    ah_layer *a = ah_new(&attn_reformer, mkparams(&pb, "bucket_size=4 n_buckets=4"), shp(1, 1, 20, 4, 1), 2);
    ah_fill_qkv(a, 2);
    ah_forward(a);
    for (int d = 0; d < 4; d++) assert_float_equal(a->out[d], a->v[d], 1e-6);
    ah_free(a);
}

/* ---- gradients ---- */

/* FD over x (q or v) for multi-chunk settings: a +-h step of q can move a token across a hash
 * boundary, where the loss jumps; such coordinates are detected by comparing the cache's sort
 * order (white-box: it follows the row log-sum-exp section, B*H*N doubles) and skipped. */
static double fd_skip_flips(ah_layer *a, float *x, const float *g, size_t n, int max_checks, int *skipped) {
    const attn_shape *s = &a->L.shape;
    size_t cb = attn_reformer.cache_bytes(a->L.params, s), off = (size_t)s->B * s->H * s->N * sizeof(double);
    ah_forward(a);
    unsigned char *base = malloc(cb);
    memcpy(base, a->L.cache, cb);
    double worst = 0;
    *skipped = 0;
    size_t stride = n <= (size_t)max_checks ? 1 : n / (size_t)max_checks;
    const float h = 1e-2f;
    for (size_t i = 0; i < n; i += stride) {
        float old = x[i];
        x[i] = old + h;
        double fp = ah_loss(a);
        int same = !memcmp((char *)a->L.cache + off, base + off, cb - off);
        x[i] = old - h;
        double fm = ah_loss(a);
        same = same && !memcmp((char *)a->L.cache + off, base + off, cb - off);
        x[i] = old;
        if (!same) {
            (*skipped)++;
            continue;
        }
        double fd = (fp - fm) / (2.0 * h), an = g[i];
        double err = fabs(fd - an) / fmax(fabs(fd) + fabs(an), 1e-3);
        if (err > worst) worst = err;
    }
    free(base);
    return worst;
}

static void check_grad_multichunk(const char *spec, attn_shape s, float pad, int training, float drop, float qscale) {
    pbuf pb;
    ah_layer *a = ah_new(&attn_reformer, mkparams(&pb, spec), s, 31);
    ah_fill_qkv(a, 13);
    for (size_t i = 0; i < a->nq; i++) a->q[i] *= qscale;
    if (pad > 0) ah_random_mask(a, pad, 8);
    a->L.training = training;
    a->L.dropout = drop;
    a->L.step = 2;
    ah_backward(a);
    float *gq = malloc(a->nq * sizeof(float)), *gv = malloc(a->nk * sizeof(float));
    memcpy(gq, a->dq, a->nq * sizeof(float));
    memcpy(gv, a->dv, a->nk * sizeof(float));
    for (size_t i = 0; i < a->nk; i++) assert_true(a->dk[i] == 0.0f); /* k is not used */
    int sq, sv;
    double eq = fd_skip_flips(a, a->q, gq, a->nq, 120, &sq);
    double ev = fd_skip_flips(a, a->v, gv, a->nk, 120, &sv);
    printf("  FD [%s%s%s]: q %.2e (%d flips skipped), v %.2e\n", spec, s.causal ? " causal" : "",
           drop > 0 ? " dropout" : "", eq, sq, ev);
    assert_true(eq < 2e-2);
    assert_true(ev < 2e-2);
    assert_int_equal(sv, 0);
    assert_true(sq < 30);
    free(gq);
    free(gv);
    ah_free(a);
}

static void test_gradients(void **st) {
    (void)st;
    /* One chunk: hashing cannot change the candidates (causal: only with one bucket, as chunks are
     * formed within buckets), so the harness checks q, k (zero) and v. */
    static const char *one[] = {"n_buckets=1 bucket_size=16 n_hashes=2", "n_buckets=4 bucket_size=16 n_hashes=2"};
    for (int c = 0; c < 2; c++)
        for (size_t k = 0; k < LRA_ARRAY_LEN(one) - (size_t)c; k++) {
            pbuf pb;
            ah_layer *a = ah_new(&attn_reformer, mkparams(&pb, one[k]), shp(2, 2, 13, 4, c), 41);
            ah_fill_qkv(a, 17);
            ah_random_mask(a, 0.4f, 5);
            double g = ah_grad_check(a, 200);
            printf("  FD one chunk [%s%s]: %.2e\n", one[k], c ? " causal" : "", g);
            assert_true(g < 2e-2);
            ah_free(a);
        }
    check_grad_multichunk("bucket_size=3 n_buckets=4", shp(2, 2, 17, 4, 0), 0.3f, 0, 0, 1.0f);
    check_grad_multichunk("bucket_size=3 n_buckets=4 n_hashes=3", shp(2, 2, 17, 4, 0), 0.3f, 0, 0, 1.0f);
    check_grad_multichunk("bucket_size=3 n_buckets=4 n_hashes=2", shp(2, 2, 17, 4, 1), 0.3f, 0, 0, 1.0f);
    check_grad_multichunk("bucket_size=3 n_buckets=4 n_hashes=2", shp(2, 2, 17, 4, 0), 0.3f, 1, 0.2f, 1.0f);
    check_grad_multichunk("bucket_size=3 n_buckets=4 lra_logits=true", shp(2, 2, 17, 4, 0), 0.3f, 0, 0, 0.4f);
}

/* ---- padding, causality, determinism ---- */

static void test_padding_invariance(void **st) {
    (void)st;
    static const char *specs[] = {"bucket_size=4", "bucket_size=5 n_buckets=4 n_hashes=3"};
    for (int c = 0; c < 2; c++)
        for (size_t k = 0; k < LRA_ARRAY_LEN(specs); k++)
            for (int extra = 3; extra <= 13; extra += 10) {
                pbuf pb;
                double e = ah_padding_invariance(&attn_reformer, mkparams(&pb, specs[k]), shp(2, 2, 30, 8, c), extra, 5);
                printf("  padding +%d [%s%s]: %.2e\n", extra, specs[k], c ? " causal" : "", e);
                assert_true(e < 1e-6);
            }
}

static void test_causal_invariance(void **st) {
    (void)st;
    static const char *specs[] = {"bucket_size=3 n_buckets=4", "bucket_size=4 n_buckets=8 n_hashes=3",
                                  "bucket_size=2 n_buckets=2 n_hashes=2 lra_logits=true"};
    for (size_t k = 0; k < LRA_ARRAY_LEN(specs); k++)
        for (int t = 5; t < 40; t += 11) {
            pbuf pb;
            ah_layer *a = ah_new(&attn_reformer, mkparams(&pb, specs[k]), shp(2, 2, 40, 8, 1), 3);
            ah_fill_qkv(a, 4);
            double e = ah_causal_invariance(a, t, 6);
            assert_true(e == 0.0);
            ah_free(a);
        }
}

static void test_threads_deterministic(void **st) {
    (void)st;
    pbuf pb;
    /* Big enough to run in parallel (reformer.c runs tiny problems serially). */
    ah_layer *a = ah_new(&attn_reformer, mkparams(&pb, "bucket_size=16 n_buckets=6 n_hashes=2"), shp(2, 3, 300, 8, 0), 3);
    ah_fill_qkv(a, 4);
    ah_random_mask(a, 0.3f, 2);
    int nt = lra_threads();
    float *o1 = malloc(a->nq * 4), *g1 = malloc(a->nq * 4), *v1 = malloc(a->nq * 4);
    lra_set_threads(1);
    ah_backward(a);
    memcpy(o1, a->out, a->nq * 4); memcpy(g1, a->dq, a->nq * 4); memcpy(v1, a->dv, a->nq * 4);
    lra_set_threads(2);
    ah_backward(a);
    assert_memory_equal(o1, a->out, a->nq * 4);
    assert_memory_equal(g1, a->dq, a->nq * 4);
    assert_memory_equal(v1, a->dv, a->nq * 4);
    lra_set_threads(nt);
    free(o1); free(g1); free(v1);
    ah_free(a);
}

/* ---- rotations: redrawn per training step and layer, fixed at eval, LRA fixed everywhere ---- */

static void test_rotation_schedule(void **st) {
    (void)st;
    pbuf pb;
    const void *p = mkparams(&pb, "bucket_size=4 n_buckets=8 n_hashes=2");
    attn_shape s = shp(1, 2, 32, 8, 0);
    size_t sb = attn_reformer.state_bytes(p, &s);
    assert_int_equal(sb, 2 * 2 * 8 * 4 * sizeof(float));
    float *r[6];
    attn_layer L = {0};
    L.ops = &attn_reformer; L.params = p; L.shape = s; L.seed = 5;
    struct { int training, step, layer; } cfg[6] = {{1, 0, 0}, {1, 1, 0}, {0, 0, 0}, {0, 9, 0}, {0, 0, 1}, {1, 0, 0}};
    for (int c = 0; c < 6; c++) {
        r[c] = calloc(1, sb);
        L.state = r[c]; L.training = cfg[c].training; L.step = cfg[c].step; L.shape.layer = cfg[c].layer;
        attn_reformer.begin(&L);
    }
    assert_memory_not_equal(r[0], r[1], sb); /* training: new draw each step */
    assert_memory_equal(r[0], r[5], sb);     /* ... but reproducible */
    assert_memory_equal(r[2], r[3], sb);     /* eval: fixed */
    assert_memory_not_equal(r[2], r[4], sb); /* per layer */
    assert_memory_not_equal(r[0], r[2], sb);
    /* Roughly N(0,1). */
    double m = 0, v = 0;
    size_t n = sb / sizeof(float);
    for (size_t i = 0; i < n; i++) m += r[0][i], v += (double)r[0][i] * r[0][i];
    m /= n; v = v / n - m * m;
    assert_true(fabs(m) < 0.3 && fabs(v - 1) < 0.4);
    /* lra_rotations: identical across layers, steps, heads and seeds. */
    const void *pl = mkparams(&pb, "bucket_size=4 n_buckets=8 n_hashes=2 lra_rotations=true");
    L.params = pl;
    float *x = calloc(1, sb), *y = calloc(1, sb);
    L.state = x; L.training = 1; L.step = 3; L.shape.layer = 0; L.seed = 1;
    attn_reformer.begin(&L);
    L.state = y; L.training = 0; L.step = 0; L.shape.layer = 2; L.seed = 2;
    attn_reformer.begin(&L);
    assert_memory_equal(x, y, sb);
    assert_memory_equal(x, x + sb / sizeof(float) / 2, sb / 2); /* head 1 == head 0 */
    for (int c = 0; c < 6; c++) free(r[c]);
    free(x); free(y);
}

static void test_validate_and_sizes(void **st) {
    (void)st;
    pbuf pb;
    char err[256];
    attn_shape s = shp(2, 4, 1000, 16, 0);
    assert_int_equal(attn_reformer.validate(mkparams(&pb, "n_buckets=7"), &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "n_buckets"));
    attn_shape m = s;
    m.Nk = 1200;
    assert_int_equal(attn_reformer.validate(mkparams(&pb, ""), &m, err, sizeof err), -1);
    assert_non_null(strstr(err, "Nk"));
    assert_int_equal(attn_reformer.validate(mkparams(&pb, ""), &s, err, sizeof err), 0);
    /* Defaults: bucket 64, derived NB = ceil(1000/64) = 16. Cache is linear in N. */
    const void *p = mkparams(&pb, "");
    assert_int_equal(attn_reformer.state_bytes(p, &s), 4 * 1 * 16 * 8 * sizeof(float));
    assert_int_equal(attn_reformer.cache_bytes(p, &s), (size_t)2 * 4 * 1000 * 16);
    attn_shape s2 = s;
    s2.N = s2.Nk = s2.max_len = 2000;
    double r = (double)attn_reformer.scratch_bytes(p, &s2, 2) / attn_reformer.scratch_bytes(p, &s, 2);
    assert_true(r > 1.5 && r < 2.1);
    double f = attn_reformer.flops(p, &s2) / attn_reformer.flops(p, &s);
    assert_true(f > 1.9 && f < 4.5); /* linear in N apart from the hash width NB ~ N/64 */
    assert_true((attn_reformer.caps & ATTN_CAP_CAUSAL) && (attn_reformer.caps & ATTN_CAP_KEY_MASK));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_vs_reference),
        cmocka_unit_test(test_one_bucket_is_dense),
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_padding_invariance),
        cmocka_unit_test(test_causal_invariance),
        cmocka_unit_test(test_threads_deterministic),
        cmocka_unit_test(test_rotation_schedule),
        cmocka_unit_test(test_validate_and_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
