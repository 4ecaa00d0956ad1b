/* layers.c - forward and backward of the Transformer's building blocks (see layers.h).
 *
 * Letters: B batch, N positions, BN = B*N rows, C input width, OC output width, D model width,
 * V vocabulary, K classes.
 *
 * Determinism: every OpenMP loop owns its outputs, and no result depends on the number of threads
 * (tests/test_layers.c compares 1 and 2 threads bit for bit). Sums across rows (parameter
 * gradients of LayerNorm, biases, embeddings, learned positions, mean pooling) are parallelised
 * over COLUMNS with the rows visited in order and accumulated in double. The sgemm products are
 * cut into shape-determined tiles, one single-threaded OpenBLAS call per tile (see Linear).
 * Sums along a row (LayerNorm statistics, softmax normalisers) use eight double accumulators in a
 * fixed lane order, which gcc vectorises without -ffast-math and which gives the same bits at any
 * optimisation level.
 */
#include "layers.h"

#include <math.h>
#include <string.h>

#include <cblas.h>

#include "common.h"
#include "rng.h"

/* Below this many floats of work a parallel region costs more than it saves. */
#define PAR_MIN 16384
/* Column blocks of the column-parallel cross-row sums: at most COL_BLOCK floats (256 bytes of each
 * row per visit, which the prefetcher streams well: LayerNorm dw/db at BN = 16K, C = 256 take
 * 1.2 ms with 64 columns against 3.0 ms with 16), narrowed to 32 or 16 columns so that narrow
 * tensors still have 4 blocks to share out. A function of the width only. */
#define COL_BLOCK 64
static inline int col_block(int C) {
    int cb = COL_BLOCK;
    while (cb > 16 && LRA_CEIL_DIV(C, cb) < 4) cb /= 2;
    return cb;
}

/* ---------------------------------------------------------------------------------------------
 * Row sums in double with a fixed lane order.
 */

static inline double lane_combine(const double acc[8]) {
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

/* sum_i x[i] */
static inline double row_sum(const float *x, int n) {
    double acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += (double)x[i + k];
    for (int k = 0; i < n; i++, k++) acc[k] += (double)x[i];
    return lane_combine(acc);
}

/* sum_i (x[i] - m)^2 */
static inline double row_sq_dev(const float *x, int n, double m) {
    double acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) {
            double d = (double)x[i + k] - m;
            acc[k] += d * d;
        }
    for (int k = 0; i < n; i++, k++) {
        double d = (double)x[i] - m;
        acc[k] += d * d;
    }
    return lane_combine(acc);
}

/* sum_i a[i] * b[i] */
static inline double row_dot(const float *a, const float *b, int n) {
    double acc[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += (double)a[i + k] * (double)b[i + k];
    for (int k = 0; i < n; i++, k++) acc[k] += (double)a[i] * (double)b[i];
    return lane_combine(acc);
}

/* ---------------------------------------------------------------------------------------------
 * Embedding
 */

/* out(BN,D) = wte[ids[r]]. The caller guarantees ids in [0, V) (checked in the backward, which
 * knows V). */
void embedding_forward(float *out, const int32_t *ids, const float *wte, int BN, int D) {
    LRA_CHECK(BN >= 0 && D > 0, "embedding_forward: BN=%d D=%d", BN, D);
#pragma omp parallel for schedule(static) if ((long)BN * D >= PAR_MIN)
    for (int r = 0; r < BN; r++) {
        LRA_CHECK(ids[r] >= 0, "embedding_forward: negative id %d at row %d", (int)ids[r], r);
        memcpy(out + (size_t)r * D, wte + (size_t)ids[r] * D, (size_t)D * sizeof(float));
    }
}

/* dwte(V,D) += scatter of dout(BN,D) by ids. Parallel over column blocks; within a block rows are
 * visited in order, so each dwte element receives its contributions in row order whatever the
 * thread count. */
void embedding_backward(float *dwte, const float *dout, const int32_t *ids, int BN, int D, int V) {
    LRA_CHECK(BN >= 0 && D > 0 && V > 0, "embedding_backward: BN=%d D=%d V=%d", BN, D, V);
    for (int r = 0; r < BN; r++)
        LRA_CHECK(ids[r] >= 0 && ids[r] < V, "embedding_backward: id %d at row %d outside [0, %d)",
                  (int)ids[r], r, V);
    int cb = col_block(D), nblk = LRA_CEIL_DIV(D, cb);
#pragma omp parallel for schedule(static) if ((long)BN * D >= PAR_MIN)
    for (int blk = 0; blk < nblk; blk++) {
        int c0 = blk * cb, c1 = LRA_MIN(D, c0 + cb);
        for (int r = 0; r < BN; r++) {
            float *dst = dwte + (size_t)ids[r] * D;
            const float *src = dout + (size_t)r * D;
            for (int c = c0; c < c1; c++) dst[c] += src[c];
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Positions
 */

/* pe(N,D): pe[pos][i] = sin(pos * w_i), pe[pos][D/2 + i] = cos(pos * w_i),
 * w_i = 10000^(-i / (D/2 - 1)), i in [0, D/2). With D = 2 the single frequency is 1. Computed in
 * double. Source: Vaswani et al. 2017 §3.5; concatenated layout of flax/tensor2tensor. */
void posenc_sinusoidal(float *pe, int N, int D) {
    LRA_CHECK(N >= 0 && D > 0 && D % 2 == 0, "posenc_sinusoidal: N=%d D=%d (D must be even)", N, D);
    int half = D / 2;
    double log_step = half > 1 ? log(10000.0) / (double)(half - 1) : 0.0;
    for (int pos = 0; pos < N; pos++) {
        float *row = pe + (size_t)pos * D;
        for (int i = 0; i < half; i++) {
            double ang = (double)pos * exp(-(double)i * log_step);
            row[i] = (float)sin(ang);
            row[half + i] = (float)cos(ang);
        }
    }
}

/* x(B,N,D) += pe(N,D). */
void add_positions_forward(float *x, const float *pe, int B, int N, int D) {
    LRA_CHECK(B >= 0 && N >= 0 && D > 0, "add_positions_forward: B=%d N=%d D=%d", B, N, D);
    long rows = (long)B * N;
#pragma omp parallel for schedule(static) if (rows * D >= PAR_MIN)
    for (long r = 0; r < rows; r++) {
        float *xr = x + (size_t)r * D;
        const float *pr = pe + (size_t)(r % N) * D;
        for (int c = 0; c < D; c++) xr[c] += pr[c];
    }
}

/* dpe(N,D) += sum_b dx(b,N,D). Parallel over positions; the batch is summed in order. */
void add_positions_backward(float *dpe, const float *dx, int B, int N, int D) {
    LRA_CHECK(B >= 0 && N >= 0 && D > 0, "add_positions_backward: B=%d N=%d D=%d", B, N, D);
#pragma omp parallel for schedule(static) if ((long)B * N * D >= PAR_MIN)
    for (int n = 0; n < N; n++) {
        float *dp = dpe + (size_t)n * D;
        for (int b = 0; b < B; b++) {
            const float *g = dx + ((size_t)b * N + n) * D;
            for (int c = 0; c < D; c++) dp[c] += g[c];
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * LayerNorm (Ba, Kiros, Hinton 2016)
 */

/* out = (inp - mean) * rstd * w + b per row, rstd = 1/sqrt(var + eps), var the biased variance.
 * Statistics in double (two passes), stored as float for the backward. */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w,
                       const float *b, int BN, int C) {
    LRA_CHECK(BN >= 0 && C > 0, "layernorm_forward: BN=%d C=%d", BN, C);
#pragma omp parallel for schedule(static) if ((long)BN * C >= PAR_MIN)
    for (int r = 0; r < BN; r++) {
        const float *x = inp + (size_t)r * C;
        float *o = out + (size_t)r * C;
        double m = row_sum(x, C) / C;
        double var = row_sq_dev(x, C, m) / C;
        float mf = (float)m;
        float s = (float)(1.0 / sqrt(var + (double)LAYERNORM_EPS));
        for (int c = 0; c < C; c++) o[c] = (x[c] - mf) * s * w[c] + b[c];
        mean[r] = mf;
        rstd[r] = s;
    }
}

/* With xhat = (x - mean) * rstd and g = dout * w (per row):
 *   dinp = rstd * (g - mean(g) - xhat * mean(g * xhat))      (overwritten)
 *   dw  += sum_rows dout * xhat,  db += sum_rows dout           (accumulated)
 * dinp is parallel over rows; dw, db are parallel over column blocks with the rows in order and
 * the sums in double, then added once to dw/db. */
void layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                        const float *w, const float *mean, const float *rstd, int BN, int C) {
    LRA_CHECK(BN >= 0 && C > 0, "layernorm_backward: BN=%d C=%d", BN, C);
    int cb = col_block(C), nblk = LRA_CEIL_DIV(C, cb);
#pragma omp parallel if ((long)BN * C >= PAR_MIN)
    {
#pragma omp for schedule(static) nowait
        for (int r = 0; r < BN; r++) {
            const float *x = inp + (size_t)r * C;
            const float *dy = dout + (size_t)r * C;
            float *dx = dinp + (size_t)r * C;
            float m = mean[r], s = rstd[r];
            /* mean(g) and mean(g * xhat), in double with fixed lanes */
            double acc_g[8] = {0}, acc_gx[8] = {0};
            int c = 0;
            for (; c + 8 <= C; c += 8)
                for (int k = 0; k < 8; k++) {
                    double gk = (double)dy[c + k] * (double)w[c + k];
                    double xh = (double)((x[c + k] - m) * s);
                    acc_g[k] += gk;
                    acc_gx[k] += gk * xh;
                }
            for (int k = 0; c < C; c++, k++) {
                double gk = (double)dy[c] * (double)w[c];
                double xh = (double)((x[c] - m) * s);
                acc_g[k] += gk;
                acc_gx[k] += gk * xh;
            }
            float mg = (float)(lane_combine(acc_g) / C);
            float mgx = (float)(lane_combine(acc_gx) / C);
            for (c = 0; c < C; c++) {
                float xh = (x[c] - m) * s;
                dx[c] = s * (dy[c] * w[c] - mg - xh * mgx);
            }
        }
#pragma omp for schedule(static)
        for (int blk = 0; blk < nblk; blk++) {
            int c0 = blk * cb, n = LRA_MIN(C, c0 + cb) - c0;
            double aw[COL_BLOCK] = {0}, ab[COL_BLOCK] = {0};
            for (int r = 0; r < BN; r++) {
                const float *x = inp + (size_t)r * C + c0;
                const float *dy = dout + (size_t)r * C + c0;
                float m = mean[r], s = rstd[r];
                for (int k = 0; k < n; k++) {
                    float xh = (x[k] - m) * s;
                    aw[k] += (double)dy[k] * (double)xh;
                    ab[k] += (double)dy[k];
                }
            }
            for (int k = 0; k < n; k++) {
                if (dw) dw[c0 + k] += (float)aw[k];
                if (db) db[c0 + k] += (float)ab[k];
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Linear
 *
 * OpenBLAS' own threading splits a product differently for different thread counts, and its
 * micro-kernels then round differently (measured with OpenBLAS 0.3.21: most of a 640x96x72 sgemm
 * differs in the last bit between 1 and 2 threads). So the products are cut into tiles whose size
 * depends only on the shape, and the tiles are spread over an OpenMP loop. Inside an active
 * parallel region OpenBLAS runs single-threaded (num_cpu_avail() returns 1 when
 * omp_in_parallel()), and the regions below deliberately carry no `if` clause: an inactive region
 * would let OpenBLAS thread again. Each tile is therefore computed the same way whatever the
 * thread count, and the result is bitwise identical for 1, 2, ... threads.
 */

/* Rows of out/dinp per sgemm call: large enough that re-packing w per tile costs ~1/LIN_ROWS of
 * the FLOPs, small enough that BN = 16K rows give 64 tiles to share out. */
#define LIN_ROWS 256

/* Side of the square dw tiles: 128, halved (down to 32) until there are at least 4 tiles. Each
 * tile re-packs its slices of dout and inp over all BN rows, so big tiles are cheaper (measured,
 * BN = 16K, 256x256, 2 threads: 13 ms at 128, 16 ms at 64, 23 ms at 32); small models still get
 * 4 tiles (64x64 -> 32) to share out. A function of the shape only, never of the thread count. */
static int dw_tile(int OC, int C) {
    int t = 128;
    while (t > 32 && LRA_CEIL_DIV(OC, t) * LRA_CEIL_DIV(C, t) < 4) t /= 2;
    return t;
}

/* out(BN,OC) = inp(BN,C) . w(OC,C)^T + b. The bias is broadcast into out first, then sgemm adds
 * the product (beta = 1); without a bias sgemm overwrites (beta = 0). */
void linear_forward(float *out, const float *inp, const float *w, const float *b, int BN, int C, int OC) {
    LRA_CHECK(BN >= 0 && C > 0 && OC > 0, "linear_forward: BN=%d C=%d OC=%d", BN, C, OC);
    int ntile = LRA_CEIL_DIV(BN, LIN_ROWS);
#pragma omp parallel for schedule(static)
    for (int t = 0; t < ntile; t++) {
        int r0 = t * LIN_ROWS, nr = LRA_MIN(BN, r0 + LIN_ROWS) - r0;
        float *o = out + (size_t)r0 * OC;
        if (b)
            for (int r = 0; r < nr; r++) memcpy(o + (size_t)r * OC, b, (size_t)OC * sizeof(float));
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nr, OC, C, 1.0f, inp + (size_t)r0 * C, C,
                    w, C, b ? 1.0f : 0.0f, o, OC);
    }
}

/* dinp(BN,C) = dout(BN,OC) . w(OC,C)            (overwritten; skipped when dinp is NULL)
 * dw(OC,C)  += dout^T . inp                      (beta = 1; skipped when dw is NULL)
 * db(OC)    += column sums of dout               (double, column blocks, rows in order)
 * The two products are tiled as described above (row tiles of dinp, square tiles of dw; each dw
 * tile runs the whole BN reduction inside one sgemm call). */
void linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                     const float *w, int BN, int C, int OC) {
    LRA_CHECK(BN >= 0 && C > 0 && OC > 0, "linear_backward: BN=%d C=%d OC=%d", BN, C, OC);
    if (BN == 0) return;
    int nrt = dinp ? LRA_CEIL_DIV(BN, LIN_ROWS) : 0;
    int tw = dw_tile(OC, C);
    int nto = LRA_CEIL_DIV(OC, tw), ntc = LRA_CEIL_DIV(C, tw);
    int nwt = dw ? nto * ntc : 0;
    int cb = col_block(OC), nblk = db ? LRA_CEIL_DIV(OC, cb) : 0;
#pragma omp parallel
    {
#pragma omp for schedule(static) nowait
        for (int t = 0; t < nrt; t++) {
            int r0 = t * LIN_ROWS, nr = LRA_MIN(BN, r0 + LIN_ROWS) - r0;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nr, C, OC, 1.0f, dout + (size_t)r0 * OC,
                        OC, w, C, 0.0f, dinp + (size_t)r0 * C, C);
        }
#pragma omp for schedule(static) nowait
        for (int t = 0; t < nwt; t++) {
            int o0 = (t / ntc) * tw, c0 = (t % ntc) * tw;
            int no = LRA_MIN(OC, o0 + tw) - o0, nc = LRA_MIN(C, c0 + tw) - c0;
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, no, nc, BN, 1.0f, dout + o0, OC,
                        inp + c0, C, 1.0f, dw + (size_t)o0 * C + c0, C);
        }
#pragma omp for schedule(static)
        for (int blk = 0; blk < nblk; blk++) {
            int c0 = blk * cb, n = LRA_MIN(OC, c0 + cb) - c0;
            double acc[COL_BLOCK] = {0};
            for (int r = 0; r < BN; r++) {
                const float *dy = dout + (size_t)r * OC + c0;
                for (int k = 0; k < n; k++) acc[k] += (double)dy[k];
            }
            for (int k = 0; k < n; k++) db[c0 + k] += (float)acc[k];
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Activations
 */

#define GELU_K0 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_K1 0.044715f

/* gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))  (Hendrycks & Gimpel 2016, eq. for
 * the tanh approximation; flax nn.gelu(approximate=True)). */
void gelu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_K0 * (x + GELU_K1 * x * x * x);
        out[i] = 0.5f * x * (1.0f + tanhf(u));
    }
}

/* d gelu/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2), t = tanh(u). */
void gelu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_K0 * (x + GELU_K1 * x * x * x);
        float t = tanhf(u);
        float du = GELU_K0 * (1.0f + 3.0f * GELU_K1 * x * x);
        float d = 0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du;
        dinp[i] = d * dout[i];
    }
}

void relu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

/* The derivative at exactly 0 is taken as 0. */
void relu_backward(float *dinp, const float *inp, const float *dout, size_t n) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) dinp[i] = inp[i] > 0.0f ? dout[i] : 0.0f;
}

/* ---------------------------------------------------------------------------------------------
 * Dropout (inverted; Srivastava et al. 2014). Element i is kept when
 * rng_uniform_at(seed, stream, i) >= p, so the same (seed, stream) gives the same mask in the
 * backward. p must be in [0, 1).
 */

static void dropout_apply(float *out, const float *inp, size_t n, float p, uint64_t seed, uint64_t stream) {
    LRA_CHECK(p >= 0.0f && p < 1.0f, "dropout: rate p=%g must be in [0, 1)", (double)p);
    if (p == 0.0f) {
        if (out != inp) memmove(out, inp, n * sizeof(float));
        return;
    }
    float scale = 1.0f / (1.0f - p);
#pragma omp parallel for schedule(static) if (n >= PAR_MIN / 4)
    for (size_t i = 0; i < n; i++)
        out[i] = rng_uniform_at(seed, stream, (uint64_t)i) >= p ? inp[i] * scale : 0.0f;
}

void dropout_forward(float *out, const float *inp, size_t n, float p, uint64_t seed, uint64_t stream) {
    dropout_apply(out, inp, n, p, seed, stream);
}

/* dinp = dout * keep / (1 - p): the same mask and scale as the forward. */
void dropout_backward(float *dinp, const float *dout, size_t n, float p, uint64_t seed, uint64_t stream) {
    dropout_apply(dinp, dout, n, p, seed, stream);
}

void residual_forward(float *out, const float *a, const float *b, size_t n) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

/* ---------------------------------------------------------------------------------------------
 * Pooling
 */

void pool_cls_forward(float *out, const float *x, int B, int N, int D) {
    LRA_CHECK(B >= 0 && N > 0 && D > 0, "pool_cls_forward: B=%d N=%d D=%d", B, N, D);
    for (int b = 0; b < B; b++) memcpy(out + (size_t)b * D, x + (size_t)b * N * D, (size_t)D * sizeof(float));
}

/* dx(B,N,D) = 0 except dx[b,0,:] = dout[b,:]. */
void pool_cls_backward(float *dx, const float *dout, int B, int N, int D) {
    LRA_CHECK(B >= 0 && N > 0 && D > 0, "pool_cls_backward: B=%d N=%d D=%d", B, N, D);
#pragma omp parallel for schedule(static) if ((long)B * N * D >= PAR_MIN)
    for (int b = 0; b < B; b++) {
        float *d = dx + (size_t)b * N * D;
        memcpy(d, dout + (size_t)b * D, (size_t)D * sizeof(float));
        memset(d + D, 0, (size_t)(N - 1) * D * sizeof(float));
    }
}

static int count_mask(const uint8_t *mask, int b, int N) {
    if (!mask) return N;
    int cnt = 0;
    for (int n = 0; n < N; n++) cnt += mask[(size_t)b * N + n] != 0;
    return cnt;
}

/* out(B,D) = sum_{n: mask[b,n]} x[b,n,:] / count_b, 0 when count_b = 0. A NULL mask means every
 * position is real. Parallel over (b, column block); positions summed in order in double. */
void pool_mean_forward(float *out, const float *x, const uint8_t *mask, int B, int N, int D) {
    LRA_CHECK(B >= 0 && N > 0 && D > 0, "pool_mean_forward: B=%d N=%d D=%d", B, N, D);
    int cb = col_block(D), nblk = LRA_CEIL_DIV(D, cb);
#pragma omp parallel for collapse(2) schedule(static) if ((long)B * N * D >= PAR_MIN)
    for (int b = 0; b < B; b++)
        for (int blk = 0; blk < nblk; blk++) {
            int c0 = blk * cb, nc = LRA_MIN(D, c0 + cb) - c0;
            int cnt = count_mask(mask, b, N);
            double acc[COL_BLOCK] = {0};
            for (int n = 0; n < N; n++) {
                if (mask && !mask[(size_t)b * N + n]) continue;
                const float *xr = x + ((size_t)b * N + n) * D + c0;
                for (int k = 0; k < nc; k++) acc[k] += (double)xr[k];
            }
            float *o = out + (size_t)b * D + c0;
            for (int k = 0; k < nc; k++) o[k] = cnt ? (float)(acc[k] / cnt) : 0.0f;
        }
}

/* dx[b,n,:] = dout[b,:] / count_b where mask[b,n], else 0 (all zero when count_b = 0). */
void pool_mean_backward(float *dx, const float *dout, const uint8_t *mask, int B, int N, int D) {
    LRA_CHECK(B >= 0 && N > 0 && D > 0, "pool_mean_backward: B=%d N=%d D=%d", B, N, D);
#pragma omp parallel for schedule(static) if ((long)B * N * D >= PAR_MIN)
    for (int b = 0; b < B; b++) {
        int cnt = count_mask(mask, b, N);
        float inv = cnt ? 1.0f / (float)cnt : 0.0f;
        const float *g = dout + (size_t)b * D;
        for (int n = 0; n < N; n++) {
            float *d = dx + ((size_t)b * N + n) * D;
            if (cnt == 0 || (mask && !mask[(size_t)b * N + n])) {
                memset(d, 0, (size_t)D * sizeof(float));
            } else {
                for (int c = 0; c < D; c++) d[c] = g[c] * inv;
            }
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Softmax cross-entropy
 */

/* Per row: probs = softmax(logits) with the max subtracted, the normaliser summed in double;
 * loss = log(sum exp(l - max)) - (l[t] - max) in nats. Ignored rows (t < 0) still get probs but
 * loss 0. Targets >= K abort. */
void crossentropy_forward(float *losses, float *probs, const float *logits, const int32_t *targets, int B, int K) {
    LRA_CHECK(B >= 0 && K > 0, "crossentropy_forward: B=%d K=%d", B, K);
#pragma omp parallel for schedule(static) if ((long)B * K >= PAR_MIN)
    for (int b = 0; b < B; b++) {
        const float *l = logits + (size_t)b * K;
        float *p = probs + (size_t)b * K;
        int32_t t = targets[b];
        LRA_CHECK(t < K, "crossentropy_forward: target %d at row %d outside [0, %d)", (int)t, b, K);
        float mx = l[0];
        for (int k = 1; k < K; k++) mx = l[k] > mx ? l[k] : mx;
        for (int k = 0; k < K; k++) p[k] = expf(l[k] - mx);
        double sum = row_sum(p, K);
        float inv = (float)(1.0 / sum);
        for (int k = 0; k < K; k++) p[k] *= inv;
        losses[b] = t < 0 ? 0.0f : (float)(log(sum) - ((double)l[t] - (double)mx));
    }
}

/* dlogits = (probs - onehot(t)) * scale; zero rows for t < 0 (overwritten). */
void crossentropy_backward(float *dlogits, const float *probs, const int32_t *targets, int B, int K, float scale) {
    LRA_CHECK(B >= 0 && K > 0, "crossentropy_backward: B=%d K=%d", B, K);
#pragma omp parallel for schedule(static) if ((long)B * K >= PAR_MIN)
    for (int b = 0; b < B; b++) {
        const float *p = probs + (size_t)b * K;
        float *d = dlogits + (size_t)b * K;
        int32_t t = targets[b];
        LRA_CHECK(t < K, "crossentropy_backward: target %d at row %d outside [0, %d)", (int)t, b, K);
        if (t < 0) {
            memset(d, 0, (size_t)K * sizeof(float));
            continue;
        }
        for (int k = 0; k < K; k++) d[k] = p[k] * scale;
        d[t] = (p[t] - 1.0f) * scale;
    }
}

void heads_split(float *dst, const float *src, int B, int N, int H, int Dh) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int n = 0; n < N; n++)
                memcpy(dst + (((size_t)b * H + h) * N + n) * Dh, src + (((size_t)b * N + n) * H + h) * Dh,
                       sizeof(float) * (size_t)Dh);
}

void heads_merge(float *dst, const float *src, int B, int N, int H, int Dh) {
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int n = 0; n < N; n++)
            for (int h = 0; h < H; h++)
                memcpy(dst + (((size_t)b * N + n) * H + h) * Dh, src + (((size_t)b * H + h) * N + n) * Dh,
                       sizeof(float) * (size_t)Dh);
}

void add_inplace(float *a, const float *b, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) a[i] += b[i];
}
