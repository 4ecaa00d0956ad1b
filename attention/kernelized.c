/* kernelized.c - normalised linear attention (reference/attention.md §5.1, §5.4, §5.5) shared by
 * `linear` and `performer`, plus small helpers for the low-rank group. See kernelized.h for the
 * maths and the factored key features. */
#include "kernelized.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "../lra/common.h"
#include "fastmath.h"

/* ---- helpers ---- */

void kz_gemm(int ta, int tb, int m, int n, int kk, float alpha, const float *A, int lda, const float *B, int ldb,
             float beta, float *C, int ldc) {
    if (m <= 0 || n <= 0) return;
    if (kk <= 0) { /* BLAS leaves C untouched when k = 0 only for beta = 1 */
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) C[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(size_t)i * ldc + j];
        return;
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, kk, alpha, A,
                lda, B, ldb, beta, C, ldc);
}

void kz_parallel_bh(int B, int H, void (*fn)(int b, int h, int tid, void *ctx), void *ctx) {
    int n = B * H;
    int nt = lra_threads();
    if (nt > n) nt = n;
    if (nt < 1) nt = 1;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (int bh = 0; bh < n; bh++) {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        fn(bh / H, bh % H, tid, ctx);
    }
}

/* 16 independent lanes, so the compiler vectorises without reassociating; fixed final order. */
static double dot_ff(const float *restrict a, const float *restrict b, int n) {
    float acc[16] = {0};
    int i = 0;
    for (; i + 16 <= n; i += 16)
        for (int u = 0; u < 16; u++) acc[u] += a[i + u] * b[i + u];
    double s = 0;
    for (int u = 0; u < 16; u++) s += acc[u];
    for (; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static double sum_f(const float *a, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += a[i];
    return s;
}

static inline float den_guard(const kz_feat *f, double den) {
    if (f->den_guard == KZ_DEN_ADD) return (float)(den + f->den_eps);
    return (float)(fabs(den) <= f->den_eps ? den + 2.0 * f->den_eps : den);
}

/* ---- per-thread work layout ---- */

typedef struct {
    float *psi, *lam, *phi, *dphi; /* (C,M), (C), (C,M), (C,M) */
    float *Sf, *zf, *Pf;            /* (M,Dh), (M), (Dh): float copies of the sums */
    float *Tp, *tp, *Up;            /* per-chunk float partials */
    float *cj, *den;                /* causal: running stabiliser per key position (Nk), den (N) */
    float *dnum, *dden;             /* (C,Dh), (C) */
    float *A, *B, *num;             /* causal: (C,C), (C,max(C,Dh)), (C,Dh) */
    double *T, *t, *U;              /* (M,Dh), (M), (Dh) double accumulators */
} kz_work;

static size_t al64(size_t b) { return (b + 63) & ~(size_t)63; }

static size_t layout(const kz_feat *f, int N, int Nk, int causal, char *base, kz_work *w) {
    size_t M = (size_t)f->M, Dh = (size_t)f->Dh, C = KZ_CHUNK, off = 0;
#define TAKE(ptr, type, n)                                          \
    do {                                                            \
        if (w) w->ptr = base ? (type *)(base + off) : NULL;         \
        off += al64(sizeof(type) * (size_t)(n));                    \
    } while (0)
    TAKE(T, double, M * Dh);
    TAKE(t, double, M);
    TAKE(U, double, Dh);
    TAKE(psi, float, C * M);
    TAKE(lam, float, C);
    TAKE(phi, float, C * M);
    TAKE(dphi, float, C * M);
    TAKE(Sf, float, M * Dh);
    TAKE(zf, float, M);
    TAKE(Pf, float, Dh);
    TAKE(Tp, float, M * LRA_MAX(Dh, causal ? C : 1));
    TAKE(tp, float, M);
    TAKE(Up, float, Dh);
    TAKE(dnum, float, C * Dh);
    TAKE(dden, float, C);
    TAKE(A, float, causal ? C * C : 1);
    TAKE(B, float, causal ? C * LRA_MAX(C, Dh) : 1);
    TAKE(num, float, causal ? C * Dh : 1);
    TAKE(cj, float, causal ? Nk : 1);
    TAKE(den, float, causal ? N : 1);
#undef TAKE
    return off;
}

size_t kz_thread_bytes(const kz_feat *f, int N, int Nk, int causal) { return layout(f, N, Nk, causal, NULL, NULL); }

static inline int is_real(const uint8_t *mask, int j) { return !mask || mask[j]; }

/* ---- bidirectional ---- */

/* Sums over the real keys: T = sum psi_j e^{lam_j - c} v_j^T, t = sum psi_j e^{lam_j - c},
 * U = sum v_j, cnt; c = max lambda over real keys (running, rescaling when it grows). */
static float key_sums(const kz_feat *f, int Nk, const float *k, const float *v, const uint8_t *mask, kz_work *w,
                      double *cnt_out) {
    const int M = f->M, Dh = f->Dh;
    float c = f->key_log ? -INFINITY : 0.0f;
    double cnt = 0;
    memset(w->T, 0, sizeof(double) * M * Dh);
    memset(w->t, 0, sizeof(double) * M);
    memset(w->U, 0, sizeof(double) * Dh);
    for (int j0 = 0; j0 < Nk; j0 += KZ_CHUNK) {
        int n = LRA_MIN(KZ_CHUNK, Nk - j0), any = 0;
        for (int j = 0; j < n; j++) any |= is_real(mask, j0 + j);
        if (!any) continue;
        f->key(f, k + (size_t)j0 * Dh, n, w->psi, w->lam);
        if (f->key_log) {
            float cm = -INFINITY;
            for (int j = 0; j < n; j++)
                if (is_real(mask, j0 + j) && w->lam[j] > cm) cm = w->lam[j];
            if (cm > c) {
                double a = c == -INFINITY ? 0.0 : exp((double)c - cm);
                for (int i = 0; i < M * Dh; i++) w->T[i] *= a;
                for (int i = 0; i < M; i++) w->t[i] *= a;
                c = cm;
            }
        }
        /* psi_j <- psi_j e^{lam_j - c} (0 for padded keys); Tp = psi^T V, tp = column sums */
        memset(w->tp, 0, sizeof(float) * M);
        memset(w->Up, 0, sizeof(float) * Dh);
        for (int j = 0; j < n; j++) {
            float *restrict pj = w->psi + (size_t)j * M;
            if (!is_real(mask, j0 + j)) {
                memset(pj, 0, sizeof(float) * M);
                continue;
            }
            const float *restrict vj = v + (size_t)(j0 + j) * Dh;
            if (f->key_log) {
                float wj = lra_expf(w->lam[j] - c);
                for (int l = 0; l < M; l++) pj[l] *= wj;
            }
            for (int l = 0; l < M; l++) w->tp[l] += pj[l];
            for (int d = 0; d < Dh; d++) w->Up[d] += vj[d];
            cnt += 1;
        }
        kz_gemm(1, 0, M, Dh, n, 1.0f, w->psi, M, v + (size_t)j0 * Dh, Dh, 0.0f, w->Tp, Dh);
        for (int i = 0; i < M * Dh; i++) w->T[i] += w->Tp[i];
        for (int i = 0; i < M; i++) w->t[i] += w->tp[i];
        for (int d = 0; d < Dh; d++) w->U[d] += w->Up[d];
    }
    *cnt_out = cnt;
    return c;
}

static void forward_bidir(const kz_feat *f, int N, int Nk, const float *q, const float *k, const float *v,
                          const uint8_t *mask, float *out, float *cache, kz_work *w) {
    const int M = f->M, Dh = f->Dh;
    const float s = f->key_scale, ek = f->key_eps;
    double cnt;
    float c = key_sums(f, Nk, k, v, mask, w, &cnt);
    float *Sf = cache, *zf = cache + (size_t)M * Dh;
    for (int l = 0; l < M; l++) {
        for (int d = 0; d < Dh; d++) Sf[(size_t)l * Dh + d] = (float)(s * (w->T[(size_t)l * Dh + d] + ek * w->U[d]));
        zf[l] = (float)(s * (w->t[l] + ek * cnt));
    }
    cache[(size_t)M * (Dh + 1)] = c;
    for (int i0 = 0; i0 < N; i0 += KZ_CHUNK) {
        int n = LRA_MIN(KZ_CHUNK, N - i0);
        f->query(f, q + (size_t)i0 * Dh, n, w->phi);
        float *oc = out + (size_t)i0 * Dh;
        kz_gemm(0, 0, n, Dh, M, 1.0f, w->phi, M, Sf, Dh, 0.0f, oc, Dh);
        for (int i = 0; i < n; i++) {
            float den = den_guard(f, dot_ff(w->phi + (size_t)i * M, zf, M));
            for (int d = 0; d < Dh; d++) oc[(size_t)i * Dh + d] /= den;
        }
    }
}

static void backward_bidir(const kz_feat *f, int N, int Nk, const float *q, const float *k, const float *v,
                           const uint8_t *mask, const float *out, const float *dout, const float *cache,
                           float *dq, float *dk, float *dv, kz_work *w) {
    const int M = f->M, Dh = f->Dh;
    const float s = f->key_scale, ek = f->key_eps;
    const float *Sf = cache, *zf = cache + (size_t)M * Dh;
    const float c = cache[(size_t)M * (Dh + 1)];
    double *R = w->T, *r = w->t, *P = w->U;
    memset(R, 0, sizeof(double) * M * Dh);
    memset(r, 0, sizeof(double) * M);
    memset(P, 0, sizeof(double) * Dh);
    /* queries: dphi_i = S dnum_i + z dden_i; R = sum phi_i dnum_i^T, r = sum phi_i dden_i */
    for (int i0 = 0; i0 < N; i0 += KZ_CHUNK) {
        int n = LRA_MIN(KZ_CHUNK, N - i0);
        f->query(f, q + (size_t)i0 * Dh, n, w->phi);
        memset(w->tp, 0, sizeof(float) * M);
        memset(w->Up, 0, sizeof(float) * Dh);
        for (int i = 0; i < n; i++) {
            const float *restrict ph = w->phi + (size_t)i * M;
            const float *restrict g = dout + (size_t)(i0 + i) * Dh, *restrict o = out + (size_t)(i0 + i) * Dh;
            float *restrict dn = w->dnum + (size_t)i * Dh;
            float den = den_guard(f, dot_ff(ph, zf, M));
            float dden = (float)(-dot_ff(g, o, Dh) / den);
            w->dden[i] = dden;
            for (int d = 0; d < Dh; d++) dn[d] = g[d] / den;
            for (int l = 0; l < M; l++) w->tp[l] += ph[l] * dden;
            float sp = (float)sum_f(ph, M);
            for (int d = 0; d < Dh; d++) w->Up[d] += sp * dn[d];
        }
        kz_gemm(0, 1, n, M, Dh, 1.0f, w->dnum, Dh, Sf, Dh, 0.0f, w->dphi, M);
        for (int i = 0; i < n; i++) {
            float *restrict dph = w->dphi + (size_t)i * M, dd = w->dden[i];
            for (int l = 0; l < M; l++) dph[l] += zf[l] * dd;
        }
        kz_gemm(1, 0, M, Dh, n, 1.0f, w->phi, M, w->dnum, Dh, 0.0f, w->Tp, Dh);
        for (int i = 0; i < M * Dh; i++) R[i] += w->Tp[i];
        for (int i = 0; i < M; i++) r[i] += w->tp[i];
        for (int d = 0; d < Dh; d++) P[d] += w->Up[d];
        f->query_bwd(f, q + (size_t)i0 * Dh, n, w->phi, w->dphi, dq + (size_t)i0 * Dh);
    }
    float *Rf = w->Sf, *rf = w->zf, *Pf = w->Pf;
    for (int i = 0; i < M * Dh; i++) Rf[i] = (float)R[i];
    for (int i = 0; i < M; i++) rf[i] = (float)r[i];
    for (int d = 0; d < Dh; d++) Pf[d] = (float)(s * ek * P[d]);
    /* keys: dpsi_j = s e^{lam_j - c} (R v_j + r); dv_j = s e^{lam_j - c} R^T psi_j + s eps_k P */
    for (int j0 = 0; j0 < Nk; j0 += KZ_CHUNK) {
        int n = LRA_MIN(KZ_CHUNK, Nk - j0);
        f->key(f, k + (size_t)j0 * Dh, n, w->psi, w->lam);
        const float *vc = v + (size_t)j0 * Dh;
        float *dvc = dv + (size_t)j0 * Dh;
        kz_gemm(0, 1, n, M, Dh, 1.0f, vc, Dh, Rf, Dh, 0.0f, w->dphi, M); /* V R^T */
        kz_gemm(0, 0, n, Dh, M, 1.0f, w->psi, M, Rf, Dh, 0.0f, dvc, Dh); /* psi R */
        for (int j = 0; j < n; j++) {
            float *restrict dpj = w->dphi + (size_t)j * M;
            float *restrict dvj = dvc + (size_t)j * Dh;
            if (!is_real(mask, j0 + j)) {
                memset(dpj, 0, sizeof(float) * M);
                memset(dvj, 0, sizeof(float) * Dh);
                continue;
            }
            float wj = s * (f->key_log ? lra_expf(w->lam[j] - c) : 1.0f);
            for (int l = 0; l < M; l++) dpj[l] = wj * (dpj[l] + rf[l]);
            for (int d = 0; d < Dh; d++) dvj[d] = wj * dvj[d] + Pf[d];
        }
        f->key_bwd(f, k + (size_t)j0 * Dh, n, w->psi, w->dphi, dk + (size_t)j0 * Dh);
        for (int j = 0; j < n; j++)
            if (!is_real(mask, j0 + j)) memset(dk + (size_t)(j0 + j) * Dh, 0, sizeof(float) * Dh);
    }
}

/* ---- causal: chunked prefix sums (§5.1 "chunked causal form") ----
 *
 * Chunk [p0, p0+n) of key positions; its queries are the rows i = p - off for p in the chunk
 * (off = Nk - N). cj[p] is the running stabiliser after key p (max lambda over the real keys
 * <= p; 0 for maps without one), so query i at position p sees
 *   phik_j = s (psi_j e^{lam_j - cj[p]} + eps_k),  j <= p real
 * and every factor e^{lam_j - cj[p]}, e^{c_prev - cj[p]} is <= 1. Within a chunk the pairs go through
 * A = Phi_q Psi^T (GEMM) with the future and padded keys zeroed; earlier chunks through the state
 * T = sum psi_j e^{lam_j - c} v_j^T, t = sum psi_j e^{lam_j - c} (double, rescaled when c grows),
 * U = sum v_j, cnt (the eps_k part). An output never reads a later key, bit for bit. */

/* e^{a - b} for a <= b, with -inf - -inf = 1 (nothing seen yet) */
static inline float rescale(float a, float b) {
    if (a == b) return 1.0f;
    if (a == -INFINITY) return 0.0f;
    return lra_expf(a - b);
}

typedef struct {
    int p0, n;      /* key positions [p0, p0+n) */
    int i0, nq;     /* query rows [i0, i0+nq) */
    int kl0;        /* local key index of query row i0 (kl_r = kl0 + r) */
    float c_prev;   /* stabiliser before the chunk */
} cchunk;

static cchunk chunk_at(int p0, int n, int off, float c_prev) {
    cchunk c = {.p0 = p0, .n = n, .c_prev = c_prev};
    c.i0 = LRA_MAX(p0 - off, 0);
    int i1 = p0 + n - off;
    c.nq = LRA_MAX(i1 - c.i0, 0);
    c.kl0 = c.i0 + off - p0;
    return c;
}

/* Features of the chunk's keys and queries, running stabiliser cj[p0..p0+n). */
static void chunk_features(const kz_feat *f, const cchunk *ch, const float *q, const float *k, const uint8_t *mask,
                           kz_work *w) {
    const int Dh = f->Dh;
    f->key(f, k + (size_t)ch->p0 * Dh, ch->n, w->psi, w->lam);
    if (ch->nq > 0) f->query(f, q + (size_t)ch->i0 * Dh, ch->nq, w->phi);
    float c = ch->c_prev;
    for (int j = 0; j < ch->n; j++) {
        if (f->key_log && is_real(mask, ch->p0 + j) && w->lam[j] > c) c = w->lam[j];
        w->cj[ch->p0 + j] = c;
    }
}

/* A (nq, n) <- A o [j <= kl_r, real j] e^{lam_j - c_r}  (the visible intra-chunk weights) */
static void chunk_weights(const kz_feat *f, const cchunk *ch, const uint8_t *mask, const kz_work *w, float *A) {
    for (int r = 0; r < ch->nq; r++) {
        int kl = ch->kl0 + r;
        float cr = w->cj[ch->p0 + kl];
        float *restrict row = A + (size_t)r * ch->n;
        for (int j = 0; j < ch->n; j++) {
            if (j > kl || !is_real(mask, ch->p0 + j)) row[j] = 0.0f;
            else if (f->key_log) row[j] *= lra_expf(w->lam[j] - cr);
        }
    }
}

/* num (nq, Dh) and den (nq) of the chunk's queries, before the s scale and the guard. */
static void chunk_num_den(const kz_feat *f, const cchunk *ch, const float *v, const uint8_t *mask, kz_work *w,
                          double cnt_prev, float *num, float *den) {
    const int M = f->M, Dh = f->Dh, n = ch->n, nq = ch->nq;
    const double ek = f->key_eps;
    kz_gemm(0, 1, nq, n, M, 1.0f, w->phi, M, w->psi, M, 0.0f, w->A, n);
    chunk_weights(f, ch, mask, w, w->A);
    kz_gemm(0, 0, nq, Dh, n, 1.0f, w->A, n, v + (size_t)ch->p0 * Dh, Dh, 0.0f, num, Dh);
    kz_gemm(0, 0, nq, Dh, M, 1.0f, w->phi, M, w->Sf, Dh, 0.0f, w->B, Dh); /* inter = Phi_q T */
    float Ucum[1024];
    double cntc = 0;
    int jdone = 0;
    for (int d = 0; d < Dh; d++) Ucum[d] = 0.0f;
    for (int r = 0; r < nq; r++) {
        int kl = ch->kl0 + r;
        const float *ph = w->phi + (size_t)r * M;
        float a = rescale(ch->c_prev, w->cj[ch->p0 + kl]);
        float *restrict nr = num + (size_t)r * Dh;
        const float *restrict ir = w->B + (size_t)r * Dh;
        double dn = sum_f(w->A + (size_t)r * n, n) + (double)a * dot_ff(ph, w->zf, M);
        for (int d = 0; d < Dh; d++) nr[d] += a * ir[d];
        if (ek != 0) {
            for (; jdone <= kl; jdone++)
                if (is_real(mask, ch->p0 + jdone)) {
                    const float *vj = v + (size_t)(ch->p0 + jdone) * Dh;
                    for (int d = 0; d < Dh; d++) Ucum[d] += vj[d];
                    cntc += 1;
                }
            double sp = sum_f(ph, M);
            for (int d = 0; d < Dh; d++) nr[d] += (float)(ek * sp * (w->U[d] + Ucum[d]));
            dn += ek * sp * (cnt_prev + cntc);
        }
        den[r] = (float)dn;
    }
}

/* Add the chunk's keys to the state (T, t, U, cnt at the new stabiliser). */
static void chunk_add_keys(const kz_feat *f, const cchunk *ch, const float *v, const uint8_t *mask, kz_work *w,
                           double *cnt) {
    const int M = f->M, Dh = f->Dh, n = ch->n;
    float c_end = w->cj[ch->p0 + n - 1];
    if (f->key_log && c_end != ch->c_prev) {
        double a = ch->c_prev == -INFINITY ? 0.0 : exp((double)ch->c_prev - c_end);
        for (int i = 0; i < M * Dh; i++) w->T[i] *= a;
        for (int i = 0; i < M; i++) w->t[i] *= a;
    }
    for (int j = 0; j < n; j++) {
        float *restrict pj = w->psi + (size_t)j * M;
        if (!is_real(mask, ch->p0 + j)) {
            memset(pj, 0, sizeof(float) * M);
            continue;
        }
        if (f->key_log) {
            float wj = lra_expf(w->lam[j] - c_end);
            for (int l = 0; l < M; l++) pj[l] *= wj;
        }
        for (int l = 0; l < M; l++) w->t[l] += pj[l];
        const float *vj = v + (size_t)(ch->p0 + j) * Dh;
        for (int d = 0; d < Dh; d++) w->U[d] += vj[d];
        *cnt += 1;
    }
    kz_gemm(1, 0, M, Dh, n, 1.0f, w->psi, M, v + (size_t)ch->p0 * Dh, Dh, 0.0f, w->Tp, Dh);
    for (int i = 0; i < M * Dh; i++) w->T[i] += w->Tp[i];
}

static void state_to_float(const kz_feat *f, kz_work *w) {
    for (int i = 0; i < f->M * f->Dh; i++) w->Sf[i] = (float)w->T[i];
    for (int i = 0; i < f->M; i++) w->zf[i] = (float)w->t[i];
}

static void forward_causal(const kz_feat *f, int N, int Nk, const float *q, const float *k, const float *v,
                           const uint8_t *mask, float *out, kz_work *w) {
    const int M = f->M, Dh = f->Dh, off = Nk - N;
    const float s = f->key_scale;
    memset(w->T, 0, sizeof(double) * M * Dh);
    memset(w->t, 0, sizeof(double) * M);
    memset(w->U, 0, sizeof(double) * Dh);
    double cnt = 0;
    float c = f->key_log ? -INFINITY : 0.0f;
    for (int p0 = 0; p0 < Nk; p0 += KZ_CCHUNK) {
        cchunk ch = chunk_at(p0, LRA_MIN(KZ_CCHUNK, Nk - p0), off, c);
        chunk_features(f, &ch, q, k, mask, w);
        if (ch.nq > 0) {
            state_to_float(f, w);
            float *num = out + (size_t)ch.i0 * Dh;
            chunk_num_den(f, &ch, v, mask, w, cnt, num, w->dden);
            for (int r = 0; r < ch.nq; r++) {
                float dg = den_guard(f, (double)s * w->dden[r]);
                for (int d = 0; d < Dh; d++) num[(size_t)r * Dh + d] = s * num[(size_t)r * Dh + d] / dg;
            }
        }
        chunk_add_keys(f, &ch, v, mask, w, &cnt);
        c = w->cj[p0 + ch.n - 1];
    }
}

static void backward_causal(const kz_feat *f, int N, int Nk, const float *q, const float *k, const float *v,
                            const uint8_t *mask, const float *out, const float *dout, float *dq, float *dk,
                            float *dv, kz_work *w) {
    const int M = f->M, Dh = f->Dh, off = Nk - N;
    const float s = f->key_scale, ek = f->key_eps;
    memset(w->T, 0, sizeof(double) * M * Dh);
    memset(w->t, 0, sizeof(double) * M);
    memset(w->U, 0, sizeof(double) * Dh);
    double cnt = 0;
    float c = f->key_log ? -INFINITY : 0.0f;
    /* pass 1, forward over chunks: den (kept), dq */
    for (int p0 = 0; p0 < Nk; p0 += KZ_CCHUNK) {
        cchunk ch = chunk_at(p0, LRA_MIN(KZ_CCHUNK, Nk - p0), off, c);
        chunk_features(f, &ch, q, k, mask, w);
        if (ch.nq > 0) {
            const int n = ch.n, nq = ch.nq;
            state_to_float(f, w);
            chunk_num_den(f, &ch, v, mask, w, cnt, w->num, w->dden);
            /* dnum, dden; dPhi_q = s [ a_r (dnum T^T + dden t) + E Psi + eps_k (U_r . dnum + cnt_r dden) ] */
            float Ucum[1024];
            double cntc = 0;
            int jdone = 0;
            for (int d = 0; d < Dh; d++) Ucum[d] = 0.0f;
            for (int r = 0; r < nq; r++) {
                int i = ch.i0 + r;
                float den = den_guard(f, (double)s * w->dden[r]);
                w->den[i] = den;
                const float *g = dout + (size_t)i * Dh, *o = out + (size_t)i * Dh;
                float *dn = w->dnum + (size_t)r * Dh;
                for (int d = 0; d < Dh; d++) dn[d] = g[d] / den;
                w->dden[r] = (float)(-dot_ff(g, o, Dh) / den);
            }
            kz_gemm(0, 1, nq, n, Dh, 1.0f, w->dnum, Dh, v + (size_t)p0 * Dh, Dh, 0.0f, w->B, n); /* dnum V^T */
            for (int r = 0; r < nq; r++) {
                int kl = ch.kl0 + r;
                float cr = w->cj[p0 + kl], dd = w->dden[r];
                float *restrict row = w->B + (size_t)r * n;
                for (int j = 0; j < n; j++) {
                    if (j > kl || !is_real(mask, p0 + j)) row[j] = 0.0f;
                    else row[j] = (row[j] + dd) * (f->key_log ? lra_expf(w->lam[j] - cr) : 1.0f);
                }
            }
            kz_gemm(0, 0, nq, M, n, 1.0f, w->B, n, w->psi, M, 0.0f, w->dphi, M);          /* E Psi */
            kz_gemm(0, 1, nq, M, Dh, 1.0f, w->dnum, Dh, w->Sf, Dh, 0.0f, w->Tp, M);       /* dnum T^T */
            for (int r = 0; r < nq; r++) {
                int kl = ch.kl0 + r;
                float a = rescale(ch.c_prev, w->cj[p0 + kl]), dd = w->dden[r];
                float *restrict dph = w->dphi + (size_t)r * M;
                const float *restrict it = w->Tp + (size_t)r * M;
                float e = 0.0f;
                if (ek != 0.0f) {
                    for (; jdone <= kl; jdone++)
                        if (is_real(mask, p0 + jdone)) {
                            const float *vj = v + (size_t)(p0 + jdone) * Dh;
                            for (int d = 0; d < Dh; d++) Ucum[d] += vj[d];
                            cntc += 1;
                        }
                    double ud = 0;
                    for (int d = 0; d < Dh; d++) ud += (w->U[d] + Ucum[d]) * w->dnum[(size_t)r * Dh + d];
                    e = (float)(ek * (ud + (cnt + cntc) * dd));
                }
                for (int l = 0; l < M; l++) dph[l] = s * (dph[l] + a * (it[l] + w->zf[l] * dd) + e);
            }
            f->query_bwd(f, q + (size_t)ch.i0 * Dh, nq, w->phi, w->dphi, dq + (size_t)ch.i0 * Dh);
        }
        chunk_add_keys(f, &ch, v, mask, w, &cnt);
        c = w->cj[p0 + ch.n - 1];
    }
    /* pass 2, reverse over chunks: R, r, P suffix sums over later queries, R and r at the stabiliser
     * at the end of the current chunk; dk, dv */
    double *R = w->T, *rr = w->t, *P = w->U;
    memset(R, 0, sizeof(double) * M * Dh);
    memset(rr, 0, sizeof(double) * M);
    memset(P, 0, sizeof(double) * Dh);
    int nchunks = (Nk + KZ_CCHUNK - 1) / KZ_CCHUNK;
    for (int ci = nchunks - 1; ci >= 0; ci--) {
        int p0 = ci * KZ_CCHUNK, n = LRA_MIN(KZ_CCHUNK, Nk - p0);
        float c_before = p0 > 0 ? w->cj[p0 - 1] : (f->key_log ? -INFINITY : 0.0f);
        cchunk ch = chunk_at(p0, n, off, c_before);
        /* features only: cj is already known (recomputing it gives the same values) */
        f->key(f, k + (size_t)p0 * Dh, n, w->psi, w->lam);
        if (ch.nq > 0) f->query(f, q + (size_t)ch.i0 * Dh, ch.nq, w->phi);
        float c_end = w->cj[p0 + n - 1];
        const int nq = ch.nq;
        for (int r = 0; r < nq; r++) {
            int i = ch.i0 + r;
            const float *g = dout + (size_t)i * Dh, *o = out + (size_t)i * Dh;
            float den = w->den[i];
            for (int d = 0; d < Dh; d++) w->dnum[(size_t)r * Dh + d] = g[d] / den;
            w->dden[r] = (float)(-dot_ff(g, o, Dh) / den);
        }
        const float *vc = v + (size_t)p0 * Dh;
        float *dvc = dv + (size_t)p0 * Dh;
        for (int i = 0; i < M * Dh; i++) w->Sf[i] = (float)R[i];
        for (int i = 0; i < M; i++) w->zf[i] = (float)rr[i];
        /* inter: dpsi_j = s e^{lam_j - c_end} (R v_j + r), dv_j = s e^{lam_j - c_end} R^T psi_j */
        kz_gemm(0, 1, n, M, Dh, 1.0f, vc, Dh, w->Sf, Dh, 0.0f, w->dphi, M);
        kz_gemm(0, 0, n, Dh, M, 1.0f, w->psi, M, w->Sf, Dh, 0.0f, dvc, Dh);
        for (int j = 0; j < n; j++) {
            float wj = f->key_log ? rescale(w->lam[j], c_end) : 1.0f;
            float *restrict dpj = w->dphi + (size_t)j * M, *restrict dvj = dvc + (size_t)j * Dh;
            for (int l = 0; l < M; l++) dpj[l] = wj * (dpj[l] + w->zf[l]);
            for (int d = 0; d < Dh; d++) dvj[d] *= wj;
        }
        if (nq > 0) {
            /* intra: A' (visible weights), dv += A'^T dnum; dpsi += E^T Phi_q, E = A-pattern o (dnum V^T + dden) */
            kz_gemm(0, 1, nq, n, M, 1.0f, w->phi, M, w->psi, M, 0.0f, w->A, n);
            chunk_weights(f, &ch, mask, w, w->A);
            kz_gemm(1, 0, n, Dh, nq, 1.0f, w->A, n, w->dnum, Dh, 1.0f, dvc, Dh);
            kz_gemm(0, 1, nq, n, Dh, 1.0f, w->dnum, Dh, vc, Dh, 0.0f, w->B, n);
            for (int r = 0; r < nq; r++) {
                int kl = ch.kl0 + r;
                float cr = w->cj[p0 + kl], dd = w->dden[r];
                float *restrict row = w->B + (size_t)r * n;
                for (int j = 0; j < n; j++) {
                    if (j > kl || !is_real(mask, p0 + j)) row[j] = 0.0f;
                    else row[j] = (row[j] + dd) * (f->key_log ? lra_expf(w->lam[j] - cr) : 1.0f);
                }
            }
            kz_gemm(1, 0, n, M, nq, 1.0f, w->B, n, w->phi, M, 1.0f, w->dphi, M);
        }
        /* eps part of dv: s eps_k (P_later + sum over this chunk's rows r with kl_r >= j of sum(phi_r) dnum_r) */
        if (ek != 0.0f) {
            float Psuf[1024];
            for (int d = 0; d < Dh; d++) Psuf[d] = (float)P[d];
            int r = nq - 1;
            for (int j = n - 1; j >= 0; j--) {
                for (; r >= 0 && ch.kl0 + r >= j; r--) {
                    float sp = (float)sum_f(w->phi + (size_t)r * M, M);
                    for (int d = 0; d < Dh; d++) Psuf[d] += sp * w->dnum[(size_t)r * Dh + d];
                }
                float *dvj = dvc + (size_t)j * Dh;
                for (int d = 0; d < Dh; d++) dvj[d] += ek * Psuf[d];
            }
        }
        for (int j = 0; j < n; j++) {
            float *restrict dpj = w->dphi + (size_t)j * M, *restrict dvj = dvc + (size_t)j * Dh;
            if (!is_real(mask, p0 + j)) {
                memset(dpj, 0, sizeof(float) * M);
                memset(dvj, 0, sizeof(float) * Dh);
                continue;
            }
            for (int l = 0; l < M; l++) dpj[l] *= s;
            for (int d = 0; d < Dh; d++) dvj[d] *= s;
        }
        f->key_bwd(f, k + (size_t)p0 * Dh, n, w->psi, w->dphi, dk + (size_t)p0 * Dh);
        for (int j = 0; j < n; j++)
            if (!is_real(mask, p0 + j)) memset(dk + (size_t)(p0 + j) * Dh, 0, sizeof(float) * Dh);
        /* move the suffix state to c_before and add this chunk's queries */
        if (f->key_log && c_before != c_end) {
            double a = c_before == -INFINITY ? 0.0 : exp((double)c_before - c_end);
            for (int i = 0; i < M * Dh; i++) R[i] *= a;
            for (int i = 0; i < M; i++) rr[i] *= a;
        }
        if (nq > 0) {
            for (int r = 0; r < nq; r++) {
                float a = f->key_log ? rescale(c_before, w->cj[p0 + ch.kl0 + r]) : 1.0f;
                float *restrict ph = w->phi + (size_t)r * M;
                float sp = (float)sum_f(ph, M);
                for (int d = 0; d < Dh; d++) P[d] += (double)sp * w->dnum[(size_t)r * Dh + d];
                for (int l = 0; l < M; l++) {
                    ph[l] *= a;
                    rr[l] += (double)ph[l] * w->dden[r];
                }
            }
            kz_gemm(1, 0, M, Dh, nq, 1.0f, w->phi, M, w->dnum, Dh, 0.0f, w->Tp, Dh);
            for (int i = 0; i < M * Dh; i++) R[i] += w->Tp[i];
        }
    }
}

void kz_forward(const kz_feat *f, int N, int Nk, int causal, const float *q, const float *k, const float *v,
                const uint8_t *mask, float *out, float *cache, void *work) {
    kz_work w;
    layout(f, N, Nk, causal, work, &w);
    if (causal) forward_causal(f, N, Nk, q, k, v, mask, out, &w);
    else forward_bidir(f, N, Nk, q, k, v, mask, out, cache, &w);
}

void kz_backward(const kz_feat *f, int N, int Nk, int causal, const float *q, const float *k, const float *v,
                 const uint8_t *mask, const float *out, const float *dout, const float *cache,
                 float *dq, float *dk, float *dv, void *work) {
    kz_work w;
    layout(f, N, Nk, causal, work, &w);
    if (causal) backward_causal(f, N, Nk, q, k, v, mask, out, dout, dq, dk, dv, &w);
    else backward_bidir(f, N, Nk, q, k, v, mask, out, dout, cache, dq, dk, dv, &w);
}

void kz_reference(const kz_feat *f, int N, int Nk, int causal, const float *q, const float *k, const float *v,
                  const uint8_t *mask, float *out) {
    const int M = f->M, Dh = f->Dh, off = Nk - N;
    float *psi = xmalloc(sizeof(float) * (size_t)Nk * M), *lam = xcalloc((size_t)Nk, sizeof(float));
    float *phi = xmalloc(sizeof(float) * M);
    double *num = xmalloc(sizeof(double) * Dh);
    for (int j = 0; j < Nk; j++) f->key(f, k + (size_t)j * Dh, 1, psi + (size_t)j * M, lam + j);
    if (!f->key_log)
        for (int j = 0; j < Nk; j++) lam[j] = 0;
    for (int i = 0; i < N; i++) {
        int last = causal ? i + off : Nk - 1;
        float c = f->key_log ? -INFINITY : 0.0f;
        for (int j = 0; j <= last; j++)
            if (is_real(mask, j) && lam[j] > c) c = lam[j];
        f->query(f, q + (size_t)i * Dh, 1, phi);
        double den = 0;
        for (int d = 0; d < Dh; d++) num[d] = 0;
        for (int j = 0; j <= last; j++) {
            if (!is_real(mask, j)) continue;
            double a = 0;
            for (int l = 0; l < M; l++)
                a += (double)phi[l] * f->key_scale * ((double)psi[(size_t)j * M + l] * exp((double)lam[j] - c) + f->key_eps);
            den += a;
            for (int d = 0; d < Dh; d++) num[d] += a * v[(size_t)j * Dh + d];
        }
        float dg = den_guard(f, den);
        for (int d = 0; d < Dh; d++) out[(size_t)i * Dh + d] = (float)(num[d] / dg);
    }
    free(psi); free(lam); free(phi); free(num);
}

/* ---- whole-layer drivers for linear and performer ---- */

typedef struct {
    const kz_feat *f;
    const attn_layer *L;
    const float *q, *k, *v, *out, *dout;
    const uint8_t *mask;
    float *o, *dq, *dk, *dv;
    size_t tb;
} kz_call;

static void call_fwd(int b, int h, int tid, void *ctx) {
    kz_call *c = ctx;
    const attn_shape *s = &c->L->shape;
    size_t bh = (size_t)b * s->H + h, qo = bh * s->N * s->Dh, ko = bh * s->Nk * s->Dh;
    float *cache = s->causal ? NULL : (float *)c->L->cache + bh * kz_cache_floats(c->f);
    kz_forward(c->f, s->N, s->Nk, s->causal, c->q + qo, c->k + ko, c->v + ko, c->mask ? c->mask + (size_t)b * s->Nk : NULL,
               c->o + qo, cache, (char *)c->L->scratch + (size_t)tid * c->tb);
}

static void call_bwd(int b, int h, int tid, void *ctx) {
    kz_call *c = ctx;
    const attn_shape *s = &c->L->shape;
    size_t bh = (size_t)b * s->H + h, qo = bh * s->N * s->Dh, ko = bh * s->Nk * s->Dh;
    const float *cache = s->causal ? NULL : (const float *)c->L->cache + bh * kz_cache_floats(c->f);
    kz_backward(c->f, s->N, s->Nk, s->causal, c->q + qo, c->k + ko, c->v + ko,
                c->mask ? c->mask + (size_t)b * s->Nk : NULL, c->out + qo, c->dout + qo, cache, c->dq + qo,
                c->dk + ko, c->dv + ko, (char *)c->L->scratch + (size_t)tid * c->tb);
}

size_t kz_layer_cache_bytes(const kz_feat *f, const attn_shape *s) {
    return s->causal ? 0 : (size_t)s->B * s->H * kz_cache_floats(f) * sizeof(float);
}

size_t kz_layer_scratch_bytes(const kz_feat *f, const attn_shape *s, int n_threads) {
    if (n_threads < 1) n_threads = 1;
    return (size_t)n_threads * kz_thread_bytes(f, s->N, s->Nk, s->causal);
}

void kz_layer_forward(const kz_feat *f, const attn_layer *L, const float *q, const float *k, const float *v,
                      const uint8_t *mask, float *out) {
    const attn_shape *s = &L->shape;
    kz_call c = {.f = f, .L = L, .q = q, .k = k, .v = v, .mask = mask, .o = out,
                 .tb = kz_thread_bytes(f, s->N, s->Nk, s->causal)};
    kz_parallel_bh(s->B, s->H, call_fwd, &c);
}

void kz_layer_backward(const kz_feat *f, const attn_layer *L, const float *q, const float *k, const float *v,
                       const uint8_t *mask, const float *out, const float *dout, float *dq, float *dk, float *dv) {
    const attn_shape *s = &L->shape;
    kz_call c = {.f = f, .L = L, .q = q, .k = k, .v = v, .mask = mask, .out = out, .dout = dout, .dq = dq, .dk = dk,
                 .dv = dv, .tb = kz_thread_bytes(f, s->N, s->Nk, s->causal)};
    kz_parallel_bh(s->B, s->H, call_bwd, &c);
}

void kz_layer_reference(const kz_feat *f, const attn_layer *L, const float *q, const float *k, const float *v,
                        const uint8_t *mask, float *out) {
    const attn_shape *s = &L->shape;
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < s->H; h++) {
            size_t bh = (size_t)b * s->H + h, qo = bh * s->N * s->Dh, ko = bh * s->Nk * s->Dh;
            kz_reference(f, s->N, s->Nk, s->causal, q + qo, k + ko, v + ko, mask ? mask + (size_t)b * s->Nk : NULL,
                         out + qo);
        }
}

double kz_layer_flops(const kz_feat *f, const attn_shape *s, double feature_flops_per_row) {
    double M = f->M, Dh = s->Dh, N = s->N, Nk = s->Nk;
    double per = feature_flops_per_row * (N + Nk) /* feature maps */
                 + 2.0 * Nk * M * (Dh + 1)       /* S = sum phik v^T, z */
                 + 2.0 * N * M * (Dh + 1)        /* num, den */
                 + N * Dh;                       /* division */
    return per * s->B * s->H;
}
