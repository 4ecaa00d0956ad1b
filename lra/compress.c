/* compress.c - Compressive Transformer compression functions and attention-reconstruction loss
 * (see compress.h for definitions, shapes and sources).
 *
 * Letters: B batch, n input rows per sequence, c compression rate, n_out = n / c, D d_model,
 * H heads, Dh head size, HD = H*Dh, L query rows.
 */
#include "compress.h"

#include <math.h>
#include <string.h>

#include <cblas.h>

#include "common.h"
#include "layers.h"

const char *const compress_kind_names[4] = {"max_pool", "mean_pool", "conv", "dilated_conv"};

int compress_check(const compress_cfg *cfg, int n, char *err, size_t errlen) {
    if (!cfg) return lra_errorf(err, errlen, "compress: no configuration");
    if (cfg->kind < COMPRESS_MAX_POOL || cfg->kind > COMPRESS_DILATED_CONV)
        return lra_errorf(err, errlen, "compress: unknown compression function %d", cfg->kind);
    if (cfg->c < 1) return lra_errorf(err, errlen, "model.compression_rate = %d must be >= 1", cfg->c);
    if (cfg->d_model < 1) return lra_errorf(err, errlen, "model.d_model = %d must be >= 1", cfg->d_model);
    if (n < 0) return lra_errorf(err, errlen, "compress: n = %d rows must be >= 0", n);
    if (n % cfg->c != 0)
        return lra_errorf(err, errlen,
                          "n = %d evicted memory rows is not a multiple of model.compression_rate = %d "
                          "(require task.segment_len and model.mem_len to be multiples of it)",
                          n, cfg->c);
    return 0;
}

static void check_or_die(const compress_cfg *cfg, int n) {
    char err[256];
    LRA_CHECK(compress_check(cfg, n, err, sizeof err) == 0, "%s", err);
}

int compress_dilated_layers(const compress_cfg *cfg) {
    if (cfg->kind != COMPRESS_DILATED_CONV) return 0;
    int nl = 0;
    while ((1 << nl) < cfg->c) nl++; /* ceil(log2 c) */
    return nl < 1 ? 1 : nl;
}

size_t compress_n_params(const compress_cfg *cfg) {
    size_t D = (size_t)cfg->d_model;
    switch (cfg->kind) {
    case COMPRESS_CONV: return (size_t)cfg->c * D * D + D;
    case COMPRESS_DILATED_CONV: return (size_t)compress_dilated_layers(cfg) * (2 * D * D + D);
    default: return 0;
    }
}

void compress_init(const compress_cfg *cfg, float *w, rng_t *r) {
    size_t n = compress_n_params(cfg);
    if (n == 0) return;
    LRA_CHECK(w && r, "compress_init: NULL pointer");
    int fan_in = cfg->kind == COMPRESS_CONV ? cfg->c * cfg->d_model : 2 * cfg->d_model;
    float bound = 1.0f / sqrtf((float)fan_in);
    for (size_t i = 0; i < n; i++) w[i] = (2.0f * rng_float(r) - 1.0f) * bound;
}

/* ---------------------------------------------------------------------------------------------
 * Dilated stack. Work layout (floats), with BND = B*n*D:
 *   Y[1..nl-1]  post-ReLU outputs of layers 0..nl-2 (the inputs of layers 1..nl-1), (nl-1)*BND
 *   CAT         concatenated layer inputs [y[s-dil] | y[s]], 2*BND
 *   DCAT        their gradient, 2*BND
 *   GA, GB      two gradient buffers for layer inputs/outputs, BND each
 */
size_t compress_work_bytes(const compress_cfg *cfg, int B, int n) {
    if (cfg->kind != COMPRESS_DILATED_CONV) return 0;
    size_t BND = (size_t)B * n * cfg->d_model;
    return ((size_t)(compress_dilated_layers(cfg) - 1) * BND + 6 * BND) * sizeof(float);
}

/* Fill CAT rows for layer input y (B, n, D) and dilation dil. sel = 0: all rows s (CAT is (B*n, 2D));
 * sel = c: only rows s = t*c + c-1 (CAT is (B*n_out, 2D)). */
static void build_cat(float *cat, const float *y, int B, int n, int D, int dil, int sel) {
    int rows = sel ? n / sel : n;
#pragma omp parallel for schedule(static)
    for (int br = 0; br < B * rows; br++) {
        int b = br / rows, t = br % rows, s = sel ? t * sel + sel - 1 : t;
        float *o = cat + (size_t)br * 2 * D;
        const float *ys = y + ((size_t)b * n + s) * D;
        if (s - dil >= 0) memcpy(o, ys - (size_t)dil * D, (size_t)D * sizeof(float));
        else memset(o, 0, (size_t)D * sizeof(float));
        memcpy(o + D, ys, (size_t)D * sizeof(float));
    }
}

/* Gradient of build_cat: dy (B, n, D) = gather of dcat. Each output row reads at most two CAT rows
 * (its own right half, and the left half of row s + dil), so it is a parallel gather. */
static void scatter_cat(float *dy, const float *dcat, int B, int n, int D, int dil, int sel) {
    int rows = sel ? n / sel : n;
#pragma omp parallel for schedule(static)
    for (int bs = 0; bs < B * n; bs++) {
        int b = bs / n, s = bs % n;
        float *o = dy + (size_t)bs * D;
        memset(o, 0, (size_t)D * sizeof(float));
        /* right half: CAT row of s itself */
        int own = sel ? ((s % sel == sel - 1) ? s / sel : -1) : s;
        if (own >= 0) {
            const float *g = dcat + ((size_t)b * rows + own) * 2 * D + D;
            for (int d = 0; d < D; d++) o[d] += g[d];
        }
        /* left half: CAT row of s + dil */
        int s2 = s + dil;
        int oth = s2 >= n ? -1 : sel ? ((s2 % sel == sel - 1) ? s2 / sel : -1) : s2;
        if (oth >= 0) {
            const float *g = dcat + ((size_t)b * rows + oth) * 2 * D;
            for (int d = 0; d < D; d++) o[d] += g[d];
        }
    }
}

static void dilated_forward(const compress_cfg *cfg, const float *w, const float *x, int B, int n, float *out,
                            float *work) {
    const int D = cfg->d_model, c = cfg->c, nl = compress_dilated_layers(cfg);
    const size_t BND = (size_t)B * n * D, lw = 2 * (size_t)D * D + D;
    float *cat = work + (size_t)(nl - 1) * BND;
    const float *y = x;
    for (int l = 0; l < nl; l++) {
        const float *W = w + (size_t)l * lw, *bias = W + 2 * (size_t)D * D;
        int last = l == nl - 1;
        build_cat(cat, y, B, n, D, 1 << l, last ? c : 0);
        if (last) {
            linear_forward(out, cat, W, bias, B * (n / c), 2 * D, D);
        } else {
            float *z = work + (size_t)l * BND; /* Y[l+1] */
            linear_forward(z, cat, W, bias, B * n, 2 * D, D);
            relu_forward(z, z, BND);
            y = z;
        }
    }
}

static void dilated_backward(const compress_cfg *cfg, const float *w, const float *x, int B, int n,
                             const float *dout, float *dx, float *dw, float *work) {
    const int D = cfg->d_model, c = cfg->c, nl = compress_dilated_layers(cfg);
    const size_t BND = (size_t)B * n * D, lw = 2 * (size_t)D * D + D;
    float *cat = work + (size_t)(nl - 1) * BND, *dcat = cat + 2 * BND, *ga = dcat + 2 * BND, *gb = ga + BND;
    for (int l = nl - 1; l >= 0; l--) {
        const float *W = w + (size_t)l * lw;
        float *dW = dw ? dw + (size_t)l * lw : NULL, *db = dw ? dW + 2 * (size_t)D * D : NULL;
        const float *y = l == 0 ? x : work + (size_t)(l - 1) * BND;
        int last = l == nl - 1;
        int sel = last ? c : 0, rows = last ? B * (n / c) : B * n;
        const float *dz;
        if (last) {
            dz = dout;
        } else {
            /* ga holds dL/dy_{l+1}; through the ReLU: y_{l+1} > 0 iff z_{l+1} > 0. */
            const float *yn = work + (size_t)l * BND;
            for (size_t e = 0; e < BND; e++) ga[e] = yn[e] > 0.0f ? ga[e] : 0.0f;
            dz = ga;
        }
        build_cat(cat, y, B, n, D, 1 << l, sel);
        int want_dy = l > 0 || dx != NULL;
        linear_backward(want_dy ? dcat : NULL, dW, db, dz, cat, W, rows, 2 * D, D);
        if (!want_dy) break;
        float *dy = l == 0 ? dx : gb;
        scatter_cat(dy, dcat, B, n, D, 1 << l, sel);
        if (l > 0) { /* gb -> ga for the next (lower) layer */
            float *tmp = ga;
            ga = gb;
            gb = tmp;
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Forward / backward dispatch. */
void compress_forward(const compress_cfg *cfg, const float *w, const float *x, int B, int n, float *out,
                      void *work) {
    check_or_die(cfg, n);
    LRA_CHECK(B >= 0 && (B * n == 0 || (x && out)), "compress_forward: B=%d, NULL pointer", B);
    const int D = cfg->d_model, c = cfg->c, no = n / c;
    if (B == 0 || no == 0) return;
    switch (cfg->kind) {
    case COMPRESS_MAX_POOL:
    case COMPRESS_MEAN_POOL: {
        const int is_max = cfg->kind == COMPRESS_MAX_POOL;
#pragma omp parallel for schedule(static)
        for (int bt = 0; bt < B * no; bt++) {
            const float *xs = x + (size_t)bt * c * D; /* rows t*c.. of sequence b are contiguous */
            float *o = out + (size_t)bt * D;
            for (int d = 0; d < D; d++) o[d] = xs[d];
            for (int m = 1; m < c; m++)
                for (int d = 0; d < D; d++) {
                    float xv = xs[(size_t)m * D + d];
                    o[d] = is_max ? (xv > o[d] ? xv : o[d]) : o[d] + xv;
                }
            if (!is_max)
                for (int d = 0; d < D; d++) o[d] /= (float)c;
        }
        break;
    }
    case COMPRESS_CONV:
        LRA_CHECK(w, "compress_forward: conv needs weights");
        /* Blocks of c rows are contiguous: the conv is a linear map of (B*no, c*D) rows. */
        linear_forward(out, x, w, w + (size_t)c * D * D, B * no, c * D, D);
        break;
    case COMPRESS_DILATED_CONV:
        LRA_CHECK(w && work, "compress_forward: dilated conv needs weights and work");
        dilated_forward(cfg, w, x, B, n, out, work);
        break;
    }
}

void compress_backward(const compress_cfg *cfg, const float *w, const float *x, int B, int n,
                       const float *dout, float *dx, float *dw, void *work) {
    check_or_die(cfg, n);
    const int D = cfg->d_model, c = cfg->c, no = n / c;
    if (B == 0 || n == 0) return;
    LRA_CHECK(x && dout, "compress_backward: NULL pointer");
    switch (cfg->kind) {
    case COMPRESS_MAX_POOL:
    case COMPRESS_MEAN_POOL: {
        if (!dx) return;
        const int is_max = cfg->kind == COMPRESS_MAX_POOL;
#pragma omp parallel for schedule(static)
        for (int bt = 0; bt < B * no; bt++) {
            const float *xs = x + (size_t)bt * c * D, *g = dout + (size_t)bt * D;
            float *dxs = dx + (size_t)bt * c * D;
            if (is_max) {
                memset(dxs, 0, (size_t)c * D * sizeof(float));
                for (int d = 0; d < D; d++) {
                    int am = 0; /* first maximal row */
                    for (int m = 1; m < c; m++)
                        if (xs[(size_t)m * D + d] > xs[(size_t)am * D + d]) am = m;
                    dxs[(size_t)am * D + d] = g[d];
                }
            } else {
                for (int m = 0; m < c; m++)
                    for (int d = 0; d < D; d++) dxs[(size_t)m * D + d] = g[d] / (float)c;
            }
        }
        break;
    }
    case COMPRESS_CONV:
        LRA_CHECK(w, "compress_backward: conv needs weights");
        linear_backward(dx, dw, dw ? dw + (size_t)c * D * D : NULL, dout, x, w, B * no, c * D, D);
        break;
    case COMPRESS_DILATED_CONV:
        LRA_CHECK(w && work, "compress_backward: dilated conv needs weights and work");
        dilated_backward(cfg, w, x, B, n, dout, dx, dw, work);
        break;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Attention-reconstruction loss. */

/* Content-only multi-head attention without mask: Q (B, L, HD), K, V (B, nk, HD), out (B, L, HD);
 * P (B, H, L, nk) receives the probabilities. OpenMP over (b,h); each task owns its P block and its
 * Dh output columns; the products are sgemm calls on strided head slices. */
static void mha_forward(const float *Q, const float *K, const float *V, int B, int L, int nk, int H, int Dh,
                        float *out, float *P) {
    const int HD = H * Dh;
    const float s = 1.0f / sqrtf((float)Dh);
#pragma omp parallel for schedule(static)
    for (int t = 0; t < B * H; t++) {
        const int b = t / H, h = t % H;
        const float *Qt = Q + (size_t)b * L * HD + (size_t)h * Dh, *Kt = K + (size_t)b * nk * HD + (size_t)h * Dh;
        const float *Vt = V + (size_t)b * nk * HD + (size_t)h * Dh;
        float *Pt = P + (size_t)t * L * nk;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, nk, Dh, s, Qt, HD, Kt, HD, 0.0f, Pt, nk);
        for (int i = 0; i < L; i++) {
            float *p = Pt + (size_t)i * nk, m = -INFINITY, l = 0;
            for (int j = 0; j < nk; j++) m = p[j] > m ? p[j] : m;
            for (int j = 0; j < nk; j++) {
                p[j] = expf(p[j] - m);
                l += p[j];
            }
            const float inv = 1.0f / l;
            for (int j = 0; j < nk; j++) p[j] *= inv;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, L, Dh, nk, 1.0f, Pt, nk, Vt, HD, 0.0f,
                    out + (size_t)b * L * HD + (size_t)h * Dh, HD);
    }
}

/* Backward of mha_forward to K and V only (dK, dV (B, nk, HD) overwritten); Q is a constant here.
 * dS: (B, H, L, nk) scratch. */
static void mha_backward_kv(const float *Q, const float *V, const float *out, const float *dout, const float *P,
                            int B, int L, int nk, int H, int Dh, float *dK, float *dV, float *dS) {
    const int HD = H * Dh;
    const float s = 1.0f / sqrtf((float)Dh);
#pragma omp parallel for schedule(static)
    for (int t = 0; t < B * H; t++) {
        const int b = t / H, h = t % H;
        const size_t qo = (size_t)b * L * HD + (size_t)h * Dh, ko = (size_t)b * nk * HD + (size_t)h * Dh;
        const float *Pt = P + (size_t)t * L * nk;
        float *St = dS + (size_t)t * L * nk;
        /* dP = dout V^T; dS = P (dP - D_i), D_i = dout_i . out_i */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, L, nk, Dh, 1.0f, dout + qo, HD, V + ko, HD, 0.0f, St, nk);
        for (int i = 0; i < L; i++) {
            const float *gi = dout + qo + (size_t)i * HD, *oi = out + qo + (size_t)i * HD;
            double Di = 0;
            for (int d = 0; d < Dh; d++) Di += (double)gi[d] * oi[d];
            const float *p = Pt + (size_t)i * nk;
            float *ds = St + (size_t)i * nk;
            for (int j = 0; j < nk; j++) ds[j] = p[j] * (ds[j] - (float)Di);
        }
        /* dV = P^T dout;  dK = s dS^T Q */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, Dh, L, 1.0f, Pt, nk, dout + qo, HD, 0.0f, dV + ko, HD);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, nk, Dh, L, s, St, nk, Q + qo, HD, 0.0f, dK + ko, HD);
    }
}

/* Work layout of compress_recon_loss (floats); the compression function's own work follows. */
typedef struct {
    size_t Q, Mln, mean_m, rstd_m, Km, Vm, Am, C, Cln, mean_c, rstd_c, Kc, Vc, Ac, dAc, P, Pm, dS, dKc, dVc, dCln,
        tmp, dC, lnd, cwork, total;
} recon_layout;

static recon_layout recon_plan(const compress_cfg *cfg, int B, int L, int n, int H, int Dh) {
    const size_t D = (size_t)cfg->d_model, HD = (size_t)H * Dh, nc = (size_t)(n / cfg->c);
    recon_layout r;
    size_t o = 0;
#define TAKE(f, sz) (r.f = o, o += (sz))
    TAKE(Q, (size_t)B * L * HD);
    TAKE(Mln, (size_t)B * n * D);
    TAKE(mean_m, (size_t)B * n);
    TAKE(rstd_m, (size_t)B * n);
    TAKE(Km, (size_t)B * n * HD);
    TAKE(Vm, (size_t)B * n * HD);
    TAKE(Am, (size_t)B * L * HD);
    TAKE(C, (size_t)B * nc * D);
    TAKE(Cln, (size_t)B * nc * D);
    TAKE(mean_c, (size_t)B * nc);
    TAKE(rstd_c, (size_t)B * nc);
    TAKE(Kc, (size_t)B * nc * HD);
    TAKE(Vc, (size_t)B * nc * HD);
    TAKE(Ac, (size_t)B * L * HD);
    TAKE(dAc, (size_t)B * L * HD);
    TAKE(P, (size_t)B * H * L * nc);
    TAKE(Pm, (size_t)B * H * L * n);
    TAKE(dS, (size_t)B * H * L * nc);
    TAKE(dKc, (size_t)B * nc * HD);
    TAKE(dVc, (size_t)B * nc * HD);
    TAKE(dCln, (size_t)B * nc * D);
    TAKE(tmp, (size_t)B * nc * D);
    TAKE(dC, (size_t)B * nc * D);
    TAKE(lnd, 2 * D);
    o = (o + 15) & ~(size_t)15; /* 64-byte alignment of the compression work */
    TAKE(cwork, (compress_work_bytes(cfg, B, n) + sizeof(float) - 1) / sizeof(float));
#undef TAKE
    r.total = o;
    return r;
}

size_t compress_recon_work_bytes(const compress_cfg *cfg, int B, int L, int n, int H, int Dh) {
    return recon_plan(cfg, B, L, n, H, Dh).total * sizeof(float);
}

float compress_recon_loss(const compress_cfg *cfg, const float *w_fc, float *dw_fc, const float *h,
                          const float *old_mem, int B, int L, int n, int H, int Dh, const float *W_q,
                          const float *W_k, const float *W_v, const float *ln_w, const float *ln_b,
                          float weight, void *work) {
    check_or_die(cfg, n);
    LRA_CHECK(B >= 1 && L >= 1 && H >= 1 && Dh >= 1, "compress_recon_loss: B=%d L=%d H=%d Dh=%d", B, L, H, Dh);
    LRA_CHECK((ln_w == NULL) == (ln_b == NULL), "compress_recon_loss: give both ln_w and ln_b, or neither");
    if (n == 0) return 0.0f;
    LRA_CHECK(h && old_mem && W_q && W_k && W_v && work, "compress_recon_loss: NULL pointer");
    LRA_CHECK(compress_n_params(cfg) == 0 || w_fc, "compress_recon_loss: f_c has parameters, w_fc is NULL");
    const int D = cfg->d_model, HD = H * Dh, nc = n / cfg->c;
    const recon_layout Lo = recon_plan(cfg, B, L, n, H, Dh);
    float *wk = work;
#define BUF(f) (wk + Lo.f)
    /* Queries: Q = h W_q^T (h and W_q are constants). */
    linear_forward(BUF(Q), h, W_q, NULL, B * L, D, HD);
    /* Target: attention over the uncompressed memory (no gradient needed). */
    const float *mem_in = old_mem;
    if (ln_w) {
        layernorm_forward(BUF(Mln), BUF(mean_m), BUF(rstd_m), old_mem, ln_w, ln_b, B * n, D);
        mem_in = BUF(Mln);
    }
    linear_forward(BUF(Km), mem_in, W_k, NULL, B * n, D, HD);
    linear_forward(BUF(Vm), mem_in, W_v, NULL, B * n, D, HD);
    mha_forward(BUF(Q), BUF(Km), BUF(Vm), B, L, n, H, Dh, BUF(Am), BUF(Pm));
    /* Prediction: attention over f_c(old_mem). */
    compress_forward(cfg, w_fc, old_mem, B, n, BUF(C), BUF(cwork));
    const float *c_in = BUF(C);
    if (ln_w) {
        layernorm_forward(BUF(Cln), BUF(mean_c), BUF(rstd_c), BUF(C), ln_w, ln_b, B * nc, D);
        c_in = BUF(Cln);
    }
    linear_forward(BUF(Kc), c_in, W_k, NULL, B * nc, D, HD);
    linear_forward(BUF(Vc), c_in, W_v, NULL, B * nc, D, HD);
    mha_forward(BUF(Q), BUF(Kc), BUF(Vc), B, L, nc, H, Dh, BUF(Ac), BUF(P));
    /* L_attn = mean (Ac - Am)^2, summed in double in a fixed order; dAc = weight * 2 (Ac - Am) / N. */
    const size_t N = (size_t)B * L * HD;
    const float *Ac = BUF(Ac), *Am = BUF(Am);
    float *dAc = BUF(dAc);
    double sum = 0;
    const float g = (float)(2.0 * (double)weight / (double)N);
    for (size_t e = 0; e < N; e++) {
        float diff = Ac[e] - Am[e];
        sum += (double)diff * diff;
        dAc[e] = g * diff;
    }
    float loss = (float)(sum / (double)N);
    if (compress_n_params(cfg) == 0 || dw_fc == NULL) return loss;
    /* Backward to f_c's parameters only: attention -> K_c, V_c -> LN(C) -> C -> f_c. W_k, W_v and the
     * LayerNorm are constants: dinp only (dw = NULL); the LayerNorm's parameter gradients go to
     * throw-away accumulators (lnd) that nobody reads. */
    mha_backward_kv(BUF(Q), BUF(Vc), Ac, dAc, BUF(P), B, L, nc, H, Dh, BUF(dKc), BUF(dVc), BUF(dS));
    float *dCln = BUF(dCln), *tmp = BUF(tmp);
    linear_backward(dCln, NULL, NULL, BUF(dKc), c_in, W_k, B * nc, D, HD);
    linear_backward(tmp, NULL, NULL, BUF(dVc), c_in, W_v, B * nc, D, HD);
    for (size_t e = 0; e < (size_t)B * nc * D; e++) dCln[e] += tmp[e];
    const float *dC = dCln;
    if (ln_w) {
        memset(BUF(lnd), 0, 2 * (size_t)D * sizeof(float));
        layernorm_backward(BUF(dC), BUF(lnd), BUF(lnd) + D, dCln, BUF(C), ln_w, BUF(mean_c), BUF(rstd_c), B * nc, D);
        dC = BUF(dC);
    }
    compress_backward(cfg, w_fc, old_mem, B, n, dC, NULL, dw_fc, BUF(cwork));
#undef BUF
    return loss;
}
