/* test_softmax.c - exact softmax attention (attention/softmax.c) and its exp (attention/fastmath.h).
 *
 * The dense double-precision `reference` is the ground truth; the tiled (online softmax) and the
 * materialized forwards must match it, their backwards must match each other and finite
 * differences, and the masks, dropout, determinism and memory contracts of attention.h must hold.
 */
#include "testutil.h"

#include "attention.h"
#include "common.h"
#include "fastmath.h"

#ifdef _OPENMP
#include <omp.h>
#endif

extern const attn_ops attn_softmax;

enum { TILED = 0, MATERIALIZED = 1 };

/* ---------------------------------------------------------------------------------------------
 * Fixture: one layer with its parameter block, cache and scratch. */
typedef struct {
    attn_layer L;
    unsigned char params[ATTN_PARAMS_MAX];
    void *cache, *scratch;
} layer_t;

static int max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static void set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

/* Write the enum index of `impl` through the schema (the parameter struct is private). */
static void set_impl(void *params, int impl) {
    const param_def *d = NULL;
    for (int i = 0; i < attn_softmax.n_schema; i++)
        if (strcmp(attn_softmax.schema[i].key, "impl") == 0) d = &attn_softmax.schema[i];
    assert_non_null(d);
    assert_int_equal(d->type, PT_ENUM);
    assert_int_equal(d->size, sizeof(int));
    memcpy((char *)params + d->offset, &impl, sizeof impl);
}

static layer_t *layer_new(int impl, attn_shape s, float dropout, int training) {
    layer_t *y = calloc(1, sizeof *y);
    set_impl(y->params, impl);
    y->L.ops = &attn_softmax;
    y->L.params = y->params;
    y->L.shape = s;
    y->L.seed = 1234;
    y->L.step = 7;
    y->L.dropout = dropout;
    y->L.training = training;
    char err[256] = "";
    assert_int_equal(attn_softmax.validate(y->params, &s, err, sizeof err), 0);
    int nt = max_threads() < 2 ? 2 : max_threads();
    size_t cb = attn_softmax.cache_bytes(y->params, &s);
    size_t sb = attn_softmax.scratch_bytes(y->params, &s, nt);
    y->cache = malloc(cb ? cb : 1);
    y->scratch = malloc(sb ? sb : 1);
    y->L.cache = y->cache;
    y->L.scratch = y->scratch;
    return y;
}

static void layer_free(layer_t *y) {
    free(y->cache);
    free(y->scratch);
    free(y);
}

/* Tensors of one problem. */
typedef struct {
    attn_shape s;
    size_t nq, nk;                     /* floats in q/out and in k/v */
    float *q, *k, *v, *w;              /* w = dout: loss = sum(out * w) */
    uint8_t *mask;                     /* (B, Nk) or NULL */
} prob_t;

/* mask_mode: 0 none; 1 random padding (ragged lengths, a few holes); 2 like 1 and the last
 * sequence fully padded. */
static prob_t prob_new(int B, int H, int N, int Nk, int Dh, int causal, int mask_mode, uint64_t seed) {
    prob_t p;
    memset(&p, 0, sizeof p);
    attn_shape s = {B, H, N, Nk, Dh, causal, 0, 1, Nk};
    p.s = s;
    p.nq = (size_t)B * H * N * Dh;
    p.nk = (size_t)B * H * Nk * Dh;
    p.q = tu_alloc_randn(p.nq, 1.0f, seed + 1);
    p.k = tu_alloc_randn(p.nk, 1.0f, seed + 2);
    p.v = tu_alloc_randn(p.nk, 1.0f, seed + 3);
    p.w = tu_alloc_randn(p.nq, 1.0f, seed + 4);
    if (mask_mode) {
        rng_t r = rng_make(seed + 5, RNG_TEST);
        p.mask = malloc((size_t)B * Nk);
        for (int b = 0; b < B; b++) {
            int len = rng_int(&r, Nk / 2, Nk);
            for (int j = 0; j < Nk; j++) p.mask[(size_t)b * Nk + j] = (uint8_t)(j < len && rng_float(&r) > 0.1f);
            if (mask_mode == 2 && b == B - 1) memset(p.mask + (size_t)b * Nk, 0, (size_t)Nk);
        }
    }
    return p;
}

static void prob_free(prob_t *p) {
    free(p->q);
    free(p->k);
    free(p->v);
    free(p->w);
    free(p->mask);
}

static int all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

/* Shapes used by the equivalence tests: N not a multiple of the 64-row tile, Dh 8/16/20/64 and
 * one above 128 (generic path), Nk > N with the causal offset, masks incl. a fully padded sequence. */
typedef struct {
    int B, H, N, Nk, Dh, causal, mask;
} tcase;

static const tcase CASES[] = {
    {2, 2, 37, 37, 16, 0, 0},  {1, 3, 100, 100, 8, 1, 0}, {2, 1, 70, 70, 64, 0, 1},
    {1, 2, 50, 130, 16, 1, 1}, {3, 1, 65, 65, 20, 1, 2},  {2, 2, 130, 130, 16, 0, 2},
    {1, 1, 20, 150, 130, 0, 1}, {1, 1, 200, 200, 32, 1, 1},
};

/* ---------------------------------------------------------------------------------------------
 * fastmath.h */
static float ulp_of(float x) { return nextafterf(fabsf(x), INFINITY) - fabsf(x); }

static void test_expf_accuracy(void **state) {
    (void)state;
    double worst = 0;
    /* a million arguments spread over [-87.3, 0], plus small ones near 0 */
    for (int i = 0; i <= 1000000; i++) {
        float x = -87.3f * (float)i / 1000000.0f;
        float y = lra_expf(x);
        double e = exp((double)x);
        double u = fabs((double)y - e) / ulp_of((float)e);
        if (u > worst) worst = u;
    }
    for (float x = -1e-3f; x < 0; x *= 0.5f) {
        double u = fabs((double)lra_expf(x) - exp((double)x)) / ulp_of((float)exp((double)x));
        if (u > worst) worst = u;
        if (x > -1e-30f) break;
    }
    print_message("lra_expf: worst error %.3f ulp on [-87.3, 0]\n", worst);
    assert_true(worst <= 2.0);
    double worst_pos = 0; /* other mechanisms may pass positive arguments */
    for (int i = 1; i <= 100000; i++) {
        float x = 88.0f * (float)i / 100000.0f;
        double e = exp((double)x);
        worst_pos = fmax(worst_pos, fabs((double)lra_expf(x) - e) / ulp_of((float)e));
    }
    print_message("lra_expf: worst error %.3f ulp on (0, 88]\n", worst_pos);
    assert_true(worst_pos <= 2.0);
    assert_true(isinf(lra_expf(89.0f)) && isinf(lra_expf(INFINITY)));
    assert_true(lra_expf(0.0f) == 1.0f);
    assert_true(lra_expf(-INFINITY) == 0.0f);
    assert_true(lra_expf(-88.0f) == 0.0f);
    assert_true(lra_expf(-1e30f) == 0.0f);
    assert_true(isnan(lra_expf(NAN)));
    /* vectorised loop form gives the same values as the scalar calls */
    float xs[67], ys[67];
    for (int i = 0; i < 67; i++) xs[i] = -0.37f * (float)i;
    for (int i = 0; i < 67; i++) ys[i] = lra_expf(xs[i]);
    for (int i = 0; i < 67; i++) assert_true(ys[i] == lra_expf(xs[i]));
}

/* ---------------------------------------------------------------------------------------------
 * Forward equivalence. */
static void check_forward_vs_reference(int impl) {
    double worst = 0;
    for (size_t c = 0; c < LRA_ARRAY_LEN(CASES); c++) {
        const tcase *t = &CASES[c];
        prob_t p = prob_new(t->B, t->H, t->N, t->Nk, t->Dh, t->causal, t->mask, 100 + c);
        layer_t *y = layer_new(impl, p.s, 0.0f, 0);
        float *out = malloc(p.nq * sizeof *out), *ref = malloc(p.nq * sizeof *ref);
        memset(out, 0xff, p.nq * sizeof *out); /* NaN garbage: every element must be written */
        attn_softmax.forward(&y->L, p.q, p.k, p.v, p.mask, out);
        attn_softmax.reference(&y->L, p.q, p.k, p.v, p.mask, ref);
        assert_true(all_finite(out, p.nq));
        double e = tu_rel_err(out, ref, p.nq);
        if (e > 1e-5) print_error("case %zu impl %d: rel err %g\n", c, impl, e);
        assert_true(e <= 1e-5);
        worst = fmax(worst, e);
        if (t->mask == 2) { /* the fully padded sequence gives exact zeros */
            size_t per_b = (size_t)t->H * t->N * t->Dh;
            for (size_t i = (size_t)(t->B - 1) * per_b; i < p.nq; i++) assert_true(out[i] == 0.0f);
        }
        free(out);
        free(ref);
        layer_free(y);
        prob_free(&p);
    }
    print_message("forward impl=%d vs reference: worst rel err %.2e\n", impl, worst);
}

static void test_tiled_forward_matches_reference(void **state) {
    (void)state;
    check_forward_vs_reference(TILED);
}

static void test_materialized_forward_matches_reference(void **state) {
    (void)state;
    check_forward_vs_reference(MATERIALIZED);
}

/* ---------------------------------------------------------------------------------------------
 * Backward equivalence: tiled (recomputed P) against materialized (stored P). */
typedef struct {
    float *out, *dq, *dk, *dv;
} grads_t;

static grads_t run_fwd_bwd(layer_t *y, const prob_t *p) {
    grads_t g;
    g.out = malloc(p->nq * sizeof(float));
    g.dq = malloc(p->nq * sizeof(float));
    g.dk = malloc(p->nk * sizeof(float));
    g.dv = malloc(p->nk * sizeof(float));
    memset(g.dq, 0xff, p->nq * sizeof(float)); /* backward overwrites */
    memset(g.dk, 0xff, p->nk * sizeof(float));
    memset(g.dv, 0xff, p->nk * sizeof(float));
    attn_softmax.forward(&y->L, p->q, p->k, p->v, p->mask, g.out);
    attn_softmax.backward(&y->L, p->q, p->k, p->v, p->mask, g.out, p->w, g.dq, g.dk, g.dv);
    return g;
}

static void grads_free(grads_t *g) {
    free(g->out);
    free(g->dq);
    free(g->dk);
    free(g->dv);
}

static void test_tiled_backward_matches_materialized(void **state) {
    (void)state;
    double worst = 0;
    for (size_t c = 0; c < LRA_ARRAY_LEN(CASES); c++) {
        const tcase *t = &CASES[c];
        prob_t p = prob_new(t->B, t->H, t->N, t->Nk, t->Dh, t->causal, t->mask, 200 + c);
        layer_t *yt = layer_new(TILED, p.s, 0.0f, 0), *ym = layer_new(MATERIALIZED, p.s, 0.0f, 0);
        grads_t gt = run_fwd_bwd(yt, &p), gm = run_fwd_bwd(ym, &p);
        assert_true(all_finite(gt.dq, p.nq) && all_finite(gt.dk, p.nk) && all_finite(gt.dv, p.nk));
        assert_true(all_finite(gm.dq, p.nq) && all_finite(gm.dk, p.nk) && all_finite(gm.dv, p.nk));
        double eq = tu_rel_err(gt.dq, gm.dq, p.nq), ek = tu_rel_err(gt.dk, gm.dk, p.nk),
               ev = tu_rel_err(gt.dv, gm.dv, p.nk);
        if (eq > 1e-5 || ek > 1e-5 || ev > 1e-5) print_error("case %zu: dq %g dk %g dv %g\n", c, eq, ek, ev);
        assert_true(eq <= 1e-5 && ek <= 1e-5 && ev <= 1e-5);
        worst = fmax(worst, fmax(eq, fmax(ek, ev)));
        /* padded keys get zero gradient */
        if (p.mask)
            for (int b = 0; b < t->B; b++)
                for (int h = 0; h < t->H; h++)
                    for (int j = 0; j < t->Nk; j++) {
                        if (p.mask[(size_t)b * t->Nk + j]) continue;
                        size_t o = (((size_t)b * t->H + h) * t->Nk + j) * t->Dh;
                        for (int x = 0; x < t->Dh; x++) assert_true(gt.dk[o + x] == 0.0f && gt.dv[o + x] == 0.0f);
                    }
        grads_free(&gt);
        grads_free(&gm);
        layer_free(yt);
        layer_free(ym);
        prob_free(&p);
    }
    print_message("backward tiled vs materialized: worst rel err %.2e\n", worst);
}

/* ---------------------------------------------------------------------------------------------
 * Finite differences. */
typedef struct {
    layer_t *y;
    prob_t *p;
    float *out;
} fd_ctx;

static double fd_loss(void *vctx) {
    fd_ctx *c = vctx;
    attn_softmax.forward(&c->y->L, c->p->q, c->p->k, c->p->v, c->p->mask, c->out);
    return tu_dot(c->out, c->p->w, c->p->nq);
}

/* Worst FD error over q, k, v. */
static double fd_check_all(int impl, float dropout, int causal, int mask_mode, uint64_t seed) {
    prob_t p = prob_new(2, 2, 9, 12, 8, causal, mask_mode, seed);
    layer_t *y = layer_new(impl, p.s, dropout, dropout > 0);
    grads_t g = run_fwd_bwd(y, &p);
    fd_ctx ctx = {y, &p, malloc(p.nq * sizeof(float))};
    double eq = tu_fd_check(fd_loss, &ctx, p.q, g.dq, p.nq, 200, 1e-2f, 1e-2);
    double ek = tu_fd_check(fd_loss, &ctx, p.k, g.dk, p.nk, 200, 1e-2f, 1e-2);
    double ev = tu_fd_check(fd_loss, &ctx, p.v, g.dv, p.nk, 200, 1e-2f, 1e-2);
    print_message("  fd impl=%d dropout=%.1f causal=%d: dq %.2e dk %.2e dv %.2e\n", impl, (double)dropout, causal, eq, ek, ev);
    double e = fmax(eq, fmax(ek, ev));
    free(ctx.out);
    grads_free(&g);
    layer_free(y);
    prob_free(&p);
    return e;
}

static void test_gradcheck(void **state) {
    (void)state;
    for (int impl = 0; impl < 2; impl++)
        for (int causal = 0; causal < 2; causal++) {
            double e = fd_check_all(impl, 0.0f, causal, 1, 300 + 10 * impl + causal);
            print_message("gradcheck impl=%d causal=%d: worst rel err %.2e\n", impl, causal, e);
            assert_true(e < 1e-2);
        }
}

/* ---------------------------------------------------------------------------------------------
 * Dropout. */
static void test_dropout_gradcheck(void **state) {
    (void)state;
    for (int impl = 0; impl < 2; impl++) {
        double e = fd_check_all(impl, 0.3f, 1, 1, 400 + impl);
        print_message("dropout gradcheck impl=%d: worst rel err %.2e\n", impl, e);
        assert_true(e < 1e-2);
    }
}

/* With v_j = e_j (Dh = Nk) the output row is the probability row itself, so the kept/dropped
 * pattern can be read off the output. */
static void test_dropout_rate_and_eval(void **state) {
    (void)state;
    const int B = 4, H = 4, N = 32, Nk = 32;
    const float pdrop = 0.3f;
    for (int impl = 0; impl < 2; impl++) {
        prob_t p = prob_new(B, H, N, Nk, Nk, 0, 0, 500 + impl);
        for (int bh = 0; bh < B * H; bh++)
            for (int j = 0; j < Nk; j++)
                for (int x = 0; x < Nk; x++) p.v[((size_t)bh * Nk + j) * Nk + x] = j == x ? 1.0f : 0.0f;
        layer_t *y0 = layer_new(impl, p.s, pdrop, 0), *y1 = layer_new(impl, p.s, pdrop, 1),
                *yn = layer_new(impl, p.s, 0.0f, 1);
        float *o0 = malloc(p.nq * sizeof(float)), *o1 = malloc(p.nq * sizeof(float)), *on = malloc(p.nq * sizeof(float)),
              *ref = malloc(p.nq * sizeof(float));
        attn_softmax.forward(&y0->L, p.q, p.k, p.v, NULL, o0); /* training = 0 */
        attn_softmax.forward(&y1->L, p.q, p.k, p.v, NULL, o1); /* training = 1 */
        attn_softmax.forward(&yn->L, p.q, p.k, p.v, NULL, on); /* dropout = 0 */
        assert_memory_equal(o0, on, p.nq * sizeof(float)); /* eval: no dropout */
        /* the mask is attn_dropout_scale()'s: the reference uses it directly */
        attn_softmax.reference(&y1->L, p.q, p.k, p.v, NULL, ref);
        assert_true(tu_rel_err(o1, ref, p.nq) <= 1e-5);
        long dropped = 0, total = 0;
        double worst_scale = 0;
        for (size_t i = 0; i < p.nq; i++) {
            if (on[i] <= 0.0f) continue;
            total++;
            if (o1[i] == 0.0f) dropped++;
            else worst_scale = fmax(worst_scale, fabs(o1[i] / on[i] * (1.0 - pdrop) - 1.0));
        }
        double frac = (double)dropped / (double)total;
        print_message("dropout impl=%d: dropped %.4f of %ld probabilities (p = %.2f)\n", impl, frac, total, pdrop);
        assert_true(fabs(frac - pdrop) < 0.03);
        assert_true(worst_scale < 1e-5); /* kept ones are scaled by 1/(1-p) */
        free(o0);
        free(o1);
        free(on);
        free(ref);
        layer_free(y0);
        layer_free(y1);
        layer_free(yn);
        prob_free(&p);
    }
}

/* ---------------------------------------------------------------------------------------------
 * Padding invariance: appending padded keys and queries leaves the real outputs and gradients
 * unchanged. */
static void test_padding_invariance(void **state) {
    (void)state;
    const int B = 2, H = 2, N = 100, P = 60, Dh = 16, Np = N + P;
    for (int impl = 0; impl < 2; impl++)
        for (int causal = 0; causal < 2; causal++) {
            prob_t a = prob_new(B, H, N, N, Dh, causal, 0, 600 + impl);
            prob_t b = prob_new(B, H, Np, Np, Dh, causal, 0, 700 + impl); /* random values in the pad */
            b.mask = malloc((size_t)B * Np);
            for (int x = 0; x < B; x++)
                for (int j = 0; j < Np; j++) b.mask[(size_t)x * Np + j] = j < N;
            for (int bh = 0; bh < B * H; bh++) {
                size_t sa = (size_t)bh * N * Dh, sb = (size_t)bh * Np * Dh, n = (size_t)N * Dh;
                memcpy(b.q + sb, a.q + sa, n * sizeof(float));
                memcpy(b.k + sb, a.k + sa, n * sizeof(float));
                memcpy(b.v + sb, a.v + sa, n * sizeof(float));
                memcpy(b.w + sb, a.w + sa, n * sizeof(float));
                memset(b.w + sb + n, 0, (size_t)P * Dh * sizeof(float)); /* no loss on padded queries */
            }
            layer_t *ya = layer_new(impl, a.s, 0.0f, 0), *yb = layer_new(impl, b.s, 0.0f, 0);
            grads_t ga = run_fwd_bwd(ya, &a), gb = run_fwd_bwd(yb, &b);
            double eo = 0, eq = 0, ek = 0, ev = 0;
            for (int bh = 0; bh < B * H; bh++) {
                size_t sa = (size_t)bh * N * Dh, sb = (size_t)bh * Np * Dh, n = (size_t)N * Dh;
                eo = fmax(eo, tu_rel_err(gb.out + sb, ga.out + sa, n));
                eq = fmax(eq, tu_rel_err(gb.dq + sb, ga.dq + sa, n));
                ek = fmax(ek, tu_rel_err(gb.dk + sb, ga.dk + sa, n));
                ev = fmax(ev, tu_rel_err(gb.dv + sb, ga.dv + sa, n));
                for (size_t i = n; i < (size_t)Np * Dh; i++) assert_true(gb.dk[sb + i] == 0.0f && gb.dv[sb + i] == 0.0f);
            }
            if (eo > 1e-6 || eq > 1e-6 || ek > 1e-6 || ev > 1e-6)
                print_error("impl %d causal %d: out %g dq %g dk %g dv %g\n", impl, causal, eo, eq, ek, ev);
            assert_true(eo <= 1e-6 && eq <= 1e-6 && ek <= 1e-6 && ev <= 1e-6);
            grads_free(&ga);
            grads_free(&gb);
            layer_free(ya);
            layer_free(yb);
            prob_free(&a);
            prob_free(&b);
        }
}

/* ---------------------------------------------------------------------------------------------
 * Causality: changing keys/values at positions >= t never changes the outputs of queries that
 * cannot see them (i + off < t), bit for bit. Also with Nk > N. */
static void test_causal_no_future_leak(void **state) {
    (void)state;
    const int B = 1, H = 2, N = 150, Dh = 16;
    const int Nks[2] = {150, 170};
    for (int impl = 0; impl < 2; impl++)
        for (int ki = 0; ki < 2; ki++) {
            int Nk = Nks[ki], off = Nk - N, t0 = 90;
            prob_t p = prob_new(B, H, N, Nk, Dh, 1, 0, 800 + impl);
            layer_t *y = layer_new(impl, p.s, 0.1f, 1);
            float *o1 = malloc(p.nq * sizeof(float)), *o2 = malloc(p.nq * sizeof(float));
            attn_softmax.forward(&y->L, p.q, p.k, p.v, NULL, o1);
            for (int bh = 0; bh < B * H; bh++)
                for (int j = t0; j < Nk; j++)
                    for (int x = 0; x < Dh; x++) {
                        p.k[((size_t)bh * Nk + j) * Dh + x] += 5.0f;
                        p.v[((size_t)bh * Nk + j) * Dh + x] *= -3.0f;
                    }
            attn_softmax.forward(&y->L, p.q, p.k, p.v, NULL, o2);
            int changed_future = 0;
            for (int bh = 0; bh < B * H; bh++)
                for (int i = 0; i < N; i++) {
                    const float *a = o1 + ((size_t)bh * N + i) * Dh, *b = o2 + ((size_t)bh * N + i) * Dh;
                    if (i + off < t0) assert_memory_equal(a, b, Dh * sizeof(float));
                    else changed_future |= memcmp(a, b, Dh * sizeof(float)) != 0;
                }
            assert_true(changed_future); /* the perturbation does reach the rows that see it */
            free(o1);
            free(o2);
            layer_free(y);
            prob_free(&p);
        }
}

/* ---------------------------------------------------------------------------------------------
 * Determinism: 1 thread and 2 threads give the same bits, forward and backward, for both impls,
 * with masks and dropout. The backward schedule depends on the thread count (per head when
 * B*H >= 4 * threads, else two passes): B*H = 2 is two-pass with both, B*H = 12 per-head with
 * both, and B*H = 6 per-head with 1 thread but two-pass with 2, which proves the two schedules
 * give the same bits. */
static void test_threads_bitwise(void **state) {
    (void)state;
    int saved = max_threads();
    const tcase shapes[] = {{1, 2, 150, 150, 16, 1, 1}, {3, 4, 70, 70, 32, 0, 2}, {1, 6, 80, 100, 20, 1, 1}};
    for (size_t c = 0; c < LRA_ARRAY_LEN(shapes); c++)
        for (int impl = 0; impl < 2; impl++) {
            const tcase *t = &shapes[c];
            prob_t p = prob_new(t->B, t->H, t->N, t->Nk, t->Dh, t->causal, t->mask, 900 + c);
            layer_t *y = layer_new(impl, p.s, c == 1 ? 0.2f : 0.0f, 1);
            set_threads(1);
            grads_t g1 = run_fwd_bwd(y, &p);
            set_threads(2);
            grads_t g2 = run_fwd_bwd(y, &p);
            assert_memory_equal(g1.out, g2.out, p.nq * sizeof(float));
            assert_memory_equal(g1.dq, g2.dq, p.nq * sizeof(float));
            assert_memory_equal(g1.dk, g2.dk, p.nk * sizeof(float));
            assert_memory_equal(g1.dv, g2.dv, p.nk * sizeof(float));
            /* and run to run */
            grads_t g3 = run_fwd_bwd(y, &p);
            assert_memory_equal(g2.dq, g3.dq, p.nq * sizeof(float));
            grads_free(&g1);
            grads_free(&g2);
            grads_free(&g3);
            layer_free(y);
            prob_free(&p);
        }
    set_threads(saved);
}

/* ---------------------------------------------------------------------------------------------
 * Sizes, FLOPs, validation, interface. */
static void test_memory_and_flops(void **state) {
    (void)state;
    unsigned char pt[ATTN_PARAMS_MAX] = {0}, pm[ATTN_PARAMS_MAX] = {0};
    set_impl(pt, TILED);
    set_impl(pm, MATERIALIZED);
    attn_shape s1 = {4, 4, 1024, 1024, 16, 0, 0, 1, 4096}, s2 = s1, s4 = s1;
    s2.N = s2.Nk = 2048;
    s4.N = s4.Nk = 4096;
    double t1 = (double)attn_softmax.cache_bytes(pt, &s1), t2 = (double)attn_softmax.cache_bytes(pt, &s2),
           t4 = (double)attn_softmax.cache_bytes(pt, &s4);
    double m1 = (double)attn_softmax.cache_bytes(pm, &s1), m2 = (double)attn_softmax.cache_bytes(pm, &s2),
           m4 = (double)attn_softmax.cache_bytes(pm, &s4);
    assert_true(t2 == 2 * t1 && t4 == 4 * t1);           /* linear */
    assert_true(m2 == 4 * m1 && m4 == 16 * m1);          /* quadratic */
    assert_true(m1 == 4.0 * 4 * 4 * 1024 * 1024);        /* exactly P: B*H*N*Nk floats */
    assert_true(t1 == 4.0 * 4 * 4 * 1024);               /* exactly L: B*H*N floats */
    /* scratch of the tiled impl grows at most linearly in N too */
    double sc1 = (double)attn_softmax.scratch_bytes(pt, &s1, 2), sc4 = (double)attn_softmax.scratch_bytes(pt, &s4, 2);
    assert_true(sc4 <= 4.0 * sc1);
    /* FLOPs: 4 N Nk Dh per head, about half for causal */
    assert_true(attn_softmax.flops(pt, &s1) == 4.0 * 4 * 4 * 1024.0 * 1024 * 16);
    attn_shape sc = s1;
    sc.causal = 1;
    double ratio = attn_softmax.flops(pt, &sc) / attn_softmax.flops(pt, &s1);
    assert_true(ratio > 0.5 && ratio < 0.501);
    assert_true(attn_softmax.n_weights == NULL || attn_softmax.n_weights(pt, &s1) == 0);
    unsigned caps = ATTN_CAP_CAUSAL | ATTN_CAP_KEY_MASK | ATTN_CAP_MEMORY | ATTN_CAP_DROPOUT;
    assert_int_equal(attn_softmax.caps, caps);
    assert_string_equal(attn_softmax.name, "softmax");
    assert_string_equal(attn_softmax.schema[0].def, "tiled");
}

static void test_validate(void **state) {
    (void)state;
    unsigned char pt[ATTN_PARAMS_MAX] = {0};
    set_impl(pt, TILED);
    char err[256] = "";
    attn_shape s = {1, 1, 64, 32, 16, 0, 0, 1, 64}; /* Nk < N */
    assert_int_equal(attn_softmax.validate(pt, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "Nk"));
    set_impl(pt, 7);
    s.Nk = 64;
    assert_int_equal(attn_softmax.validate(pt, &s, err, sizeof err), -1);
    assert_non_null(strstr(err, "impl"));
}

/* A NaN in the inputs reaches the outputs (no silent masking: --check-finite must see it). */
static void test_nan_propagates(void **state) {
    (void)state;
    for (int impl = 0; impl < 2; impl++) {
        prob_t p = prob_new(1, 1, 10, 10, 16, 0, 0, 1100 + impl);
        p.q[3 * 16 + 2] = NAN; /* query row 3 */
        layer_t *y = layer_new(impl, p.s, 0.0f, 0);
        grads_t g = run_fwd_bwd(y, &p);
        assert_true(isnan(g.out[3 * 16]));
        assert_true(isfinite(g.out[0])); /* other rows unaffected */
        assert_false(all_finite(g.dk, p.nk));
        grads_free(&g);
        layer_free(y);
        prob_free(&p);
    }
}

/* Backward overwrites (never accumulates) dq, dk, dv: a second call gives the same bits. */
static void test_backward_overwrites(void **state) {
    (void)state;
    for (int impl = 0; impl < 2; impl++) {
        prob_t p = prob_new(2, 2, 70, 70, 16, 1, 1, 1000 + impl);
        layer_t *y = layer_new(impl, p.s, 0.0f, 0);
        grads_t g = run_fwd_bwd(y, &p);
        float *dq = malloc(p.nq * sizeof(float)), *dk = malloc(p.nk * sizeof(float)), *dv = malloc(p.nk * sizeof(float));
        memcpy(dq, g.dq, p.nq * sizeof(float));
        memcpy(dk, g.dk, p.nk * sizeof(float));
        memcpy(dv, g.dv, p.nk * sizeof(float));
        attn_softmax.backward(&y->L, p.q, p.k, p.v, p.mask, g.out, p.w, g.dq, g.dk, g.dv);
        assert_memory_equal(dq, g.dq, p.nq * sizeof(float));
        assert_memory_equal(dk, g.dk, p.nk * sizeof(float));
        assert_memory_equal(dv, g.dv, p.nk * sizeof(float));
        free(dq);
        free(dk);
        free(dv);
        grads_free(&g);
        layer_free(y);
        prob_free(&p);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_expf_accuracy),
        cmocka_unit_test(test_tiled_forward_matches_reference),
        cmocka_unit_test(test_materialized_forward_matches_reference),
        cmocka_unit_test(test_tiled_backward_matches_materialized),
        cmocka_unit_test(test_gradcheck),
        cmocka_unit_test(test_dropout_gradcheck),
        cmocka_unit_test(test_dropout_rate_and_eval),
        cmocka_unit_test(test_padding_invariance),
        cmocka_unit_test(test_causal_no_future_leak),
        cmocka_unit_test(test_threads_bitwise),
        cmocka_unit_test(test_memory_and_flops),
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_nan_propagates),
        cmocka_unit_test(test_backward_overwrites),
    };
    return cmocka_run_group_tests_name("softmax", tests, NULL, NULL);
}
