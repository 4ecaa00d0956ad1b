/* test_relattn.c - Transformer-XL relative attention (lra/relattn.c).
 *
 * Ground truth is a double-precision forward written here from the paper's definition, with the
 * mask built literally as TXL's mem_transformer.py builds it (triu(ones, 1+mlen), and for
 * same_length + tril(ones, -mask_shift_len)), and the relative embedding looked up by distance
 * with clamp_len applied to the distance (TXL's pos_seq.clamp_(max=clamp_len)). The fast forward
 * and the module's reference must match it; the backward must match central differences of it.
 */
#include "testutil.h"

#include "common.h"
#include "relattn.h"

#ifdef _OPENMP
#include <omp.h>
#endif

static void set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

/* ---------------------------------------------------------------------------------------------
 * A problem: inputs, their double copies and the forward/backward buffers. */
typedef struct {
    relattn_cfg c;
    int Mk;
    size_t nq, nk, nr, nb;
    float *q, *k, *v, *r, *u, *vb, *w; /* w: dout, the loss weights: loss = sum(out * w) */
    float *out, *cache, *dq, *dk, *dv, *dr, *du, *dvb;
    void *scratch;
} prob_t;

static prob_t prob_new(relattn_cfg c, uint64_t seed) {
    prob_t p;
    memset(&p, 0, sizeof p);
    p.c = c;
    p.Mk = relattn_klen(&c);
    p.nq = (size_t)c.B * c.H * c.L * c.Dh;
    p.nk = (size_t)c.B * c.H * p.Mk * c.Dh;
    p.nr = (size_t)p.Mk * c.H * c.Dh;
    p.nb = (size_t)c.H * c.Dh;
    p.q = tu_alloc_randn(p.nq, 1.0f, seed + 1);
    p.k = tu_alloc_randn(p.nk, 1.0f, seed + 2);
    p.v = tu_alloc_randn(p.nk, 1.0f, seed + 3);
    p.r = tu_alloc_randn(p.nr, 1.0f, seed + 4);
    p.u = tu_alloc_randn(p.nb, 0.5f, seed + 5);
    p.vb = tu_alloc_randn(p.nb, 0.5f, seed + 6);
    p.w = tu_alloc_randn(p.nq, 1.0f, seed + 7);
    p.out = calloc(p.nq, sizeof(float));
    p.cache = malloc(relattn_cache_bytes(&c));
    p.scratch = malloc(relattn_scratch_bytes(&c));
    p.dq = calloc(p.nq, sizeof(float));
    p.dk = calloc(p.nk, sizeof(float));
    p.dv = calloc(p.nk, sizeof(float));
    p.dr = calloc(p.nr, sizeof(float));
    p.du = calloc(p.nb, sizeof(float));
    p.dvb = calloc(p.nb, sizeof(float));
    return p;
}

static void prob_free(prob_t *p) {
    float *a[] = {p->q, p->k, p->v, p->r, p->u, p->vb, p->w, p->out, p->cache, p->dq, p->dk, p->dv, p->dr, p->du, p->dvb};
    for (size_t i = 0; i < LRA_ARRAY_LEN(a); i++) free(a[i]);
    free(p->scratch);
}

static void prob_forward(prob_t *p) {
    relattn_forward(&p->c, p->q, p->k, p->v, p->r, p->u, p->vb, p->out, p->cache, p->scratch);
}

static void prob_backward(prob_t *p) {
    memset(p->du, 0, p->nb * sizeof(float));
    memset(p->dvb, 0, p->nb * sizeof(float));
    relattn_backward(&p->c, p->q, p->k, p->v, p->r, p->u, p->vb, p->out, p->w, p->cache, p->scratch, p->dq, p->dk,
                     p->dv, p->dr, p->du, p->dvb);
}

/* ---------------------------------------------------------------------------------------------
 * Independent double-precision forward. Inputs are double arrays with the same layouts. */
static int txl_masked(const relattn_cfg *c, int i, int j) {
    int mlen = c->Mc, qlen = c->L, klen = mlen + qlen;
    if (j >= i + 1 + mlen) return 1; /* torch.triu(all_ones, 1 + mlen) */
    if (c->same_length) {
        int mask_len = klen - c->mem_len;
        int mask_shift_len = mask_len > 0 ? qlen - mask_len : qlen;
        if (j <= i - mask_shift_len) return 1; /* torch.tril(all_ones, -mask_shift_len) */
    }
    return 0;
}

static void dref_forward(const relattn_cfg *c, const double *q, const double *k, const double *v, const double *r,
                         const double *u, const double *vb, double *out) {
    const int B = c->B, H = c->H, L = c->L, Dh = c->Dh, Mc = c->Mc, Mk = Mc + L;
    const double s = 1.0 / sqrt((double)Dh);
    double *S = malloc((size_t)Mk * sizeof *S);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            size_t t = (size_t)b * H + h;
            for (int i = 0; i < L; i++) {
                double m = -INFINITY;
                for (int j = 0; j < Mk; j++) {
                    if (txl_masked(c, i, j)) {
                        S[j] = -INFINITY;
                        continue;
                    }
                    /* TXL: pos_seq = klen-1 .. 0, clamped; BD_raw[i][p] uses r[p]; after _rel_shift
                     * query i, key j reads p with pos_seq[p] = (i + mlen) - j. */
                    int dist = i + Mc - j;
                    int pos = (c->clamp_len > 0 && dist > c->clamp_len) ? c->clamp_len : dist;
                    int p = Mk - 1 - pos;
                    double ac = 0, bd = 0;
                    for (int d = 0; d < Dh; d++) {
                        double qd = q[(t * L + i) * Dh + d];
                        ac += (qd + u[(size_t)h * Dh + d]) * k[(t * Mk + j) * Dh + d];
                        bd += (qd + vb[(size_t)h * Dh + d]) * r[((size_t)p * H + h) * Dh + d];
                    }
                    S[j] = s * (ac + bd);
                    if (S[j] > m) m = S[j];
                }
                double l = 0;
                for (int j = 0; j < Mk; j++) l += exp(S[j] - m);
                for (int d = 0; d < Dh; d++) {
                    double o = 0;
                    for (int j = 0; j < Mk; j++) o += exp(S[j] - m) / l * v[(t * Mk + j) * Dh + d];
                    out[(t * L + i) * Dh + d] = o;
                }
            }
        }
    free(S);
}

static double *to_double(const float *x, size_t n) {
    double *y = malloc(n * sizeof *y);
    for (size_t i = 0; i < n; i++) y[i] = x[i];
    return y;
}

/* max |a - b| / max |b| with b double */
static double rel_err_d(const float *a, const double *b, size_t n) {
    double num = 0, den = 1e-30;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (isnan(d) || d > num) num = d;
        if (fabs(b[i]) > den) den = fabs(b[i]);
    }
    return num / den;
}

static const relattn_cfg cases[] = {
    /* B  H  L  Dh  Mc clamp same mem_len scale */
    {2, 2, 5, 4, 0, 0, 0, 0, 0},
    {2, 2, 5, 4, 3, 0, 0, 0, 0},
    {1, 3, 6, 12, 4, 2, 0, 0, 0},  /* Dh 12: the 8-lane dot's tail; clamp_len */
    {2, 2, 5, 4, 3, 0, 1, 3, 0},   /* same_length, memory full (Mc = mem_len) */
    {2, 1, 6, 5, 2, 0, 1, 4, 0},   /* same_length, memory filling (Mc < mem_len < Mk) */
    {1, 2, 4, 3, 0, 0, 1, 6, 0},   /* same_length with Mk <= mem_len: no extra mask */
    {2, 2, 7, 9, 5, 3, 1, 5, 0},   /* clamp_len and same_length together */
    {2, 2, 70, 8, 20, 0, 0, 0, 0}, /* several query tiles (32 rows each), the last one partial */
    {1, 2, 45, 8, 30, 10, 1, 50, 0}, /* tiles with clamp_len and same_length */
    {1, 1, 33, 16, 0, 0, 1, 33, 0},  /* Mc = 0, same_length window = Mk */
};

/* ---------------------------------------------------------------------------------------------
 * Tests. */
static void test_forward_matches_reference(void **state) {
    (void)state;
    for (size_t ci = 0; ci < LRA_ARRAY_LEN(cases); ci++) {
        relattn_cfg c = cases[ci];
        char err[200];
        assert_int_equal(relattn_check(&c, err, sizeof err), 0);
        prob_t p = prob_new(c, 100 + ci);
        prob_forward(&p);
        float *ref = calloc(p.nq, sizeof(float));
        relattn_reference(&c, p.q, p.k, p.v, p.r, p.u, p.vb, ref);
        double *dq = to_double(p.q, p.nq), *dk = to_double(p.k, p.nk), *dv = to_double(p.v, p.nk);
        double *dr = to_double(p.r, p.nr), *du = to_double(p.u, p.nb), *dvb = to_double(p.vb, p.nb);
        double *dout = malloc(p.nq * sizeof *dout);
        dref_forward(&c, dq, dk, dv, dr, du, dvb, dout);
        double e_fast = rel_err_d(p.out, dout, p.nq), e_ref = rel_err_d(ref, dout, p.nq);
        print_message("case %zu (Mc=%d clamp=%d same_length=%d mem_len=%d): fast %.2e, reference %.2e\n", ci, c.Mc,
                      c.clamp_len, c.same_length, c.mem_len, e_fast, e_ref);
        assert_true(e_fast <= 1e-5);
        assert_true(e_ref <= 1e-6);
        free(ref);
        free(dq), free(dk), free(dv), free(dr), free(du), free(dvb), free(dout);
        prob_free(&p);
    }
}

/* The masks of the cases above, counted: same_length gives every query exactly mem_len keys once
 * the keys outnumber mem_len; causal alone gives query i exactly i + Mc + 1 keys. */
static void test_mask_counts(void **state) {
    (void)state;
    relattn_cfg c = {1, 1, 6, 2, 2, 0, 1, 4, 0};
    int expect_same[6] = {3, 4, 4, 4, 4, 4}; /* i=0 sees j=0..2 (3 keys), later exactly 4 */
    for (int i = 0; i < c.L; i++) {
        int n = 0;
        for (int j = 0; j < c.Mc + c.L; j++) n += !txl_masked(&c, i, j);
        assert_int_equal(n, expect_same[i]);
    }
    c.same_length = 0;
    for (int i = 0; i < c.L; i++) {
        int n = 0;
        for (int j = 0; j < c.Mc + c.L; j++) n += !txl_masked(&c, i, j);
        assert_int_equal(n, i + c.Mc + 1);
    }
}

/* Central differences of the double forward (h = 1e-5 in double: truncation error ~1e-10) against
 * the float32 analytic backward, for every input array, all coordinates. */
typedef struct {
    relattn_cfg c;
    double *q, *k, *v, *r, *u, *vb, *w, *out;
    size_t nq;
} dctx;

static double dloss(dctx *x) {
    dref_forward(&x->c, x->q, x->k, x->v, x->r, x->u, x->vb, x->out);
    double s = 0;
    for (size_t i = 0; i < x->nq; i++) s += x->out[i] * x->w[i];
    return s;
}

static double fd_err(dctx *x, double *arr, const float *grad, size_t n) {
    double num = 0, den = 1e-12;
    const double h = 1e-5;
    for (size_t i = 0; i < n; i++) {
        double old = arr[i];
        arr[i] = old + h;
        double fp = dloss(x);
        arr[i] = old - h;
        double fm = dloss(x);
        arr[i] = old;
        double fd = (fp - fm) / (2 * h);
        double e = fabs(fd - (double)grad[i]);
        if (isnan(e) || e > num) num = e;
        if (fabs(fd) > den) den = fabs(fd);
    }
    return num / den;
}

static void test_gradcheck(void **state) {
    (void)state;
    const relattn_cfg gcases[] = {
        {2, 2, 4, 3, 0, 0, 0, 0, 0},
        {2, 2, 4, 3, 3, 0, 0, 0, 0},
        {2, 2, 5, 3, 3, 2, 1, 4, 0}, /* clamp_len + same_length */
        {1, 2, 37, 3, 6, 8, 1, 20, 0}, /* two query tiles, clamp_len + same_length */
    };
    for (size_t ci = 0; ci < LRA_ARRAY_LEN(gcases); ci++) {
        relattn_cfg c = gcases[ci];
        prob_t p = prob_new(c, 300 + ci);
        prob_forward(&p);
        prob_backward(&p);
        dctx x = {c, to_double(p.q, p.nq), to_double(p.k, p.nk), to_double(p.v, p.nk), to_double(p.r, p.nr),
                  to_double(p.u, p.nb), to_double(p.vb, p.nb), to_double(p.w, p.nq), malloc(p.nq * sizeof(double)),
                  p.nq};
        double e[6] = {fd_err(&x, x.q, p.dq, p.nq), fd_err(&x, x.k, p.dk, p.nk), fd_err(&x, x.v, p.dv, p.nk),
                       fd_err(&x, x.r, p.dr, p.nr), fd_err(&x, x.u, p.du, p.nb), fd_err(&x, x.vb, p.dvb, p.nb)};
        print_message("gradcheck case %zu (Mc=%d clamp=%d same=%d): dq %.1e dk %.1e dv %.1e dr %.1e du %.1e dv_bias %.1e\n",
                      ci, c.Mc, c.clamp_len, c.same_length, e[0], e[1], e[2], e[3], e[4], e[5]);
        for (int i = 0; i < 6; i++) assert_true(e[i] < 1e-4);
        /* clamp: the rows of r farther than clamp_len are never read, so their gradient is exactly 0 */
        if (c.clamp_len > 0)
            for (int pr = 0; pr < p.Mk - 1 - c.clamp_len; pr++)
                for (int hd = 0; hd < c.H * c.Dh; hd++) assert_true(p.dr[(size_t)pr * c.H * c.Dh + hd] == 0.0f);
        free(x.q), free(x.k), free(x.v), free(x.r), free(x.u), free(x.vb), free(x.w), free(x.out);
        prob_free(&p);
    }
}

/* Gradient convention: dq/dk/dv/dr overwritten, du/dv_bias accumulated. */
static void test_gradient_convention(void **state) {
    (void)state;
    relattn_cfg c = {2, 2, 4, 3, 2, 0, 0, 0, 0};
    prob_t p = prob_new(c, 400);
    prob_forward(&p);
    prob_backward(&p);
    float *du1 = malloc(p.nb * sizeof(float)), *dq1 = malloc(p.nq * sizeof(float)), *dr1 = malloc(p.nr * sizeof(float));
    memcpy(du1, p.du, p.nb * sizeof(float));
    memcpy(dq1, p.dq, p.nq * sizeof(float));
    memcpy(dr1, p.dr, p.nr * sizeof(float));
    relattn_backward(&c, p.q, p.k, p.v, p.r, p.u, p.vb, p.out, p.w, p.cache, p.scratch, p.dq, p.dk, p.dv, p.dr,
                     p.du, p.dvb);
    for (size_t i = 0; i < p.nb; i++) assert_true(p.du[i] == 2.0f * du1[i]);
    assert_memory_equal(p.dq, dq1, p.nq * sizeof(float));
    assert_memory_equal(p.dr, dr1, p.nr * sizeof(float));
    /* NULL du / dv_bias are allowed */
    relattn_backward(&c, p.q, p.k, p.v, p.r, p.u, p.vb, p.out, p.w, p.cache, p.scratch, p.dq, p.dk, p.dv, p.dr,
                     NULL, NULL);
    assert_memory_equal(p.dq, dq1, p.nq * sizeof(float));
    free(du1), free(dq1), free(dr1);
    prob_free(&p);
}

/* r = 0, u = v = 0: plain causal softmax attention over [mem ; seg] with query i at key position
 * i + Mc, written here as naively as possible. */
static void test_limit_plain_attention(void **state) {
    (void)state;
    relattn_cfg c = {2, 2, 5, 4, 3, 0, 0, 0, 0};
    prob_t p = prob_new(c, 500);
    memset(p.r, 0, p.nr * sizeof(float));
    memset(p.u, 0, p.nb * sizeof(float));
    memset(p.vb, 0, p.nb * sizeof(float));
    prob_forward(&p);
    const int Mk = p.Mk, L = c.L, Dh = c.Dh;
    double worst = 0, scale = 0;
    for (int t = 0; t < c.B * c.H; t++)
        for (int i = 0; i < L; i++) {
            double w[64], sum = 0;
            for (int j = 0; j <= i + c.Mc; j++) {
                double a = 0;
                for (int d = 0; d < Dh; d++)
                    a += (double)p.q[((size_t)t * L + i) * Dh + d] * p.k[((size_t)t * Mk + j) * Dh + d];
                w[j] = exp(a / 2.0); /* 1/sqrt(4) */
                sum += w[j];
            }
            for (int d = 0; d < Dh; d++) {
                double o = 0;
                for (int j = 0; j <= i + c.Mc; j++) o += w[j] / sum * p.v[((size_t)t * Mk + j) * Dh + d];
                worst = fmax(worst, fabs(o - p.out[((size_t)t * L + i) * Dh + d]));
                scale = fmax(scale, fabs(o));
            }
        }
    print_message("r=u=v=0 vs causal softmax over [mem;seg]: max abs err %.2e (scale %.2f)\n", worst, scale);
    assert_true(worst <= 1e-5 * scale);
    prob_free(&p);
}

/* Changing k/v at future segment positions never changes earlier outputs (bit for bit), with and
 * without memory and with same_length. */
static void test_causality(void **state) {
    (void)state;
    const relattn_cfg cc[] = {{2, 2, 6, 4, 0, 0, 0, 0, 0}, {2, 2, 6, 4, 3, 2, 1, 4, 0}, {1, 2, 40, 4, 5, 0, 0, 0, 0}};
    for (size_t ci = 0; ci < LRA_ARRAY_LEN(cc); ci++) {
        relattn_cfg c = cc[ci];
        prob_t p = prob_new(c, 600 + ci);
        prob_forward(&p);
        float *o1 = malloc(p.nq * sizeof(float));
        memcpy(o1, p.out, p.nq * sizeof(float));
        const int i0 = c.L > 32 ? 20 : 2; /* perturb keys of segment positions > i0 (mid-tile) */
        for (int t = 0; t < c.B * c.H; t++)
            for (int j = c.Mc + i0 + 1; j < p.Mk; j++)
                for (int d = 0; d < c.Dh; d++) {
                    p.k[((size_t)t * p.Mk + j) * c.Dh + d] += 3.0f;
                    p.v[((size_t)t * p.Mk + j) * c.Dh + d] -= 5.0f;
                }
        prob_forward(&p);
        int changed_later = 0;
        for (int t = 0; t < c.B * c.H; t++) {
            size_t off = (size_t)t * c.L * c.Dh;
            assert_memory_equal(p.out + off, o1 + off, (size_t)(i0 + 1) * c.Dh * sizeof(float));
            changed_later |= memcmp(p.out + off + (size_t)(i0 + 1) * c.Dh, o1 + off + (size_t)(i0 + 1) * c.Dh,
                                    (size_t)(c.L - i0 - 1) * c.Dh * sizeof(float)) != 0;
        }
        assert_true(changed_later); /* the perturbation is seen where it should be */
        free(o1);
        prob_free(&p);
    }
}

/* clamp_len inside the kernel equals TXL's clamped table: the unclamped kernel fed an r whose rows
 * beyond clamp_len are copies of the clamp_len row. */
static void test_clamp_equals_clamped_table(void **state) {
    (void)state;
    relattn_cfg c = {1, 2, 5, 4, 4, 3, 0, 0, 0};
    prob_t p = prob_new(c, 700);
    prob_forward(&p);
    float *o1 = malloc(p.nq * sizeof(float));
    memcpy(o1, p.out, p.nq * sizeof(float));
    const size_t row = (size_t)c.H * c.Dh;
    for (int pr = 0; pr < p.Mk - 1 - c.clamp_len; pr++)
        memcpy(p.r + pr * row, p.r + (size_t)(p.Mk - 1 - c.clamp_len) * row, row * sizeof(float));
    p.c.clamp_len = 0;
    prob_forward(&p);
    assert_memory_equal(p.out, o1, p.nq * sizeof(float));
    free(o1);
    prob_free(&p);
}

/* Segment recurrence at the kernel level: queries of segment 2 attending over [segment 1 ; segment 2]
 * as memory (Mc = L) equal the last L rows of one call over the whole 2L-row stream (Mc = 0), with
 * the same keys, values and distance table. */
static void test_memory_equals_full_stream(void **state) {
    (void)state;
    const int B = 2, H = 2, L = 40, Dh = 8;
    relattn_cfg full = {B, H, 2 * L, Dh, 0, 0, 0, 0, 0}, seg = {B, H, L, Dh, L, 0, 0, 0, 0};
    prob_t f = prob_new(full, 900);
    prob_t g = prob_new(seg, 901);
    /* same k, v (all 2L rows), r, u, v_bias; queries = the last L rows of the full run */
    memcpy(g.k, f.k, f.nk * sizeof(float));
    memcpy(g.v, f.v, f.nk * sizeof(float));
    memcpy(g.r, f.r, f.nr * sizeof(float));
    memcpy(g.u, f.u, f.nb * sizeof(float));
    memcpy(g.vb, f.vb, f.nb * sizeof(float));
    for (int t = 0; t < B * H; t++)
        memcpy(g.q + (size_t)t * L * Dh, f.q + ((size_t)t * 2 * L + L) * Dh, (size_t)L * Dh * sizeof(float));
    prob_forward(&f);
    prob_forward(&g);
    double worst = 0, scale = 0;
    for (int t = 0; t < B * H; t++)
        for (int e = 0; e < L * Dh; e++) {
            double ref = f.out[((size_t)t * 2 * L + L) * Dh + e];
            worst = fmax(worst, fabs(g.out[(size_t)t * L * Dh + e] - ref));
            scale = fmax(scale, fabs(ref));
        }
    print_message("segment with memory vs whole stream: max abs diff %.2e (scale %.2f)\n", worst, scale);
    assert_true(worst <= 1e-5 * scale); /* not bitwise: the query tiles and sgemm shapes differ */
    prob_free(&f);
    prob_free(&g);
}

static void test_threads_bitwise(void **state) {
    (void)state;
    for (int ci = 0; ci < 2; ci++) {
    relattn_cfg c = ci == 0 ? (relattn_cfg){3, 3, 9, 8, 5, 4, 1, 7, 0} : (relattn_cfg){2, 3, 40, 8, 10, 0, 0, 0, 0};
    prob_t a = prob_new(c, 800), b = prob_new(c, 800);
    set_threads(1);
    prob_forward(&a);
    prob_backward(&a);
    set_threads(2);
    prob_forward(&b);
    prob_backward(&b);
    set_threads(1);
    assert_memory_equal(a.out, b.out, a.nq * sizeof(float));
    assert_memory_equal(a.dq, b.dq, a.nq * sizeof(float));
    assert_memory_equal(a.dk, b.dk, a.nk * sizeof(float));
    assert_memory_equal(a.dv, b.dv, a.nk * sizeof(float));
    assert_memory_equal(a.dr, b.dr, a.nr * sizeof(float));
    assert_memory_equal(a.du, b.du, a.nb * sizeof(float));
    assert_memory_equal(a.dvb, b.dvb, a.nb * sizeof(float));
    prob_free(&a);
    prob_free(&b);
    }
}

static void test_pos_emb(void **state) {
    (void)state;
    float R[3 * 4];
    relattn_pos_emb(R, 3, 4, 0);
    /* row p = 2 is distance 0; row 0 distance 2; f_0 = 1, f_1 = 10000^(-2/4) = 0.01 */
    const float want[12] = {sinf(2.0f), sinf(0.02f), cosf(2.0f), cosf(0.02f),
                            sinf(1.0f), sinf(0.01f), cosf(1.0f), cosf(0.01f), 0, 0, 1, 1};
    for (int i = 0; i < 12; i++) assert_true(fabsf(R[i] - want[i]) < 1e-7f);
    relattn_pos_emb(R, 3, 4, 1); /* clamp: distance 2 -> 1 */
    for (int i = 0; i < 4; i++) assert_true(fabsf(R[i] - want[4 + i]) < 1e-7f);
}

static void test_check_and_sizes(void **state) {
    (void)state;
    char err[256];
    relattn_cfg c = {2, 2, 4, 8, 3, 0, 1, 0, 0};
    assert_int_equal(relattn_check(&c, err, sizeof err), -1);
    assert_non_null(strstr(err, "model.mem_len"));
    c.mem_len = 7;
    c.clamp_len = -1;
    assert_int_equal(relattn_check(&c, err, sizeof err), -1);
    assert_non_null(strstr(err, "model.clamp_len"));
    c.clamp_len = 0;
    assert_int_equal(relattn_check(&c, err, sizeof err), 0);
    /* cache: the row log-sum-exp only (no L x Mk matrix) */
    assert_int_equal(relattn_cache_bytes(&c), 2 * 2 * 4 * sizeof(float));
    /* scratch: B*H*(2*TQ*Mk + 4*TQ*Dh) + B*H*(Mk + 2)*Dh floats, TQ = min(L, 32) = 4 */
    assert_int_equal(relattn_scratch_bytes(&c), (size_t)(4 * (2 * 4 * 7 + 4 * 4 * 8) + 4 * 9 * 8) * sizeof(float));
    c.L = 100; /* TQ = 32, Mk = 103 */
    assert_int_equal(relattn_scratch_bytes(&c), (size_t)(4 * (2 * 32 * 103 + 4 * 32 * 8) + 4 * 105 * 8) * sizeof(float));
    c.L = 4;
    /* flops: same_length with mem_len 7 >= Mk: query i sees i + 4 keys; 6 Dh flops per pair */
    assert_true(relattn_flops(&c) == 4.0 * (4 + 5 + 6 + 7) * 6 * 8);
}

int main(void) {
    setenv("OMP_WAIT_POLICY", "passive", 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_matches_reference),
        cmocka_unit_test(test_mask_counts),
        cmocka_unit_test(test_gradcheck),
        cmocka_unit_test(test_gradient_convention),
        cmocka_unit_test(test_limit_plain_attention),
        cmocka_unit_test(test_causality),
        cmocka_unit_test(test_clamp_equals_clamped_table),
        cmocka_unit_test(test_memory_equals_full_stream),
        cmocka_unit_test(test_threads_bitwise),
        cmocka_unit_test(test_pos_emb),
        cmocka_unit_test(test_check_and_sizes),
    };
    return cmocka_run_group_tests_name("relattn", tests, NULL, NULL);
}
