/* relattn.c - Transformer-XL relative attention (see relattn.h for shapes and conventions).
 *
 * Letters: B batch, H heads, L segment rows, Mc memory rows, Mk = Mc + L, Dh head size.
 * Each (b,h) pair is one OpenMP task that owns its rows of out / dq / dk / dv and its own partial
 * sums of du, dv_bias, dr; the partials are reduced over b in a fixed order afterwards, so results
 * do not depend on the number of threads or the schedule. Inside a task, query rows go in tiles of
 * up to 32: the content term (q+u) K^T and the positional term (q+v) r^T of a tile are two sgemm
 * calls (the positional one against the contiguous range of r rows the tile's distances use, TXL's
 * BD before _rel_shift), the relative lookup is an index computation per pair, and P V and all
 * backward products are sgemm calls too (single-threaded inside the parallel loop, so the result of
 * each call is fixed by its shape). Softmax exponentials use lra_expf (attention/fastmath.h,
 * <= 2 ulp, vectorisable).
 */
#include "relattn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "common.h"
#include "../attention/fastmath.h"

/* Dot product with 8 independent lanes summed in a fixed order: vectorisable without -ffast-math
 * and deterministic. */
static inline float dot(const float *restrict a, const float *restrict b, int n) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += a[i + l] * b[i + l];
    for (int l = 0; i < n; i++, l++) acc[l] += a[i] * b[i];
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

static inline float cfg_scale(const relattn_cfg *c) {
    return c->scale > 0 ? c->scale : 1.0f / sqrtf((float)c->Dh);
}

/* First visible key of query i (inclusive); the last is i + Mc. */
static inline int first_key(const relattn_cfg *c, int i) {
    if (!c->same_length) return 0;
    int lo = i + c->Mc - c->mem_len + 1;
    return lo > 0 ? lo : 0;
}

int relattn_check(const relattn_cfg *c, char *err, size_t errlen) {
    if (!c) return lra_errorf(err, errlen, "relattn: no configuration");
    if (c->B < 1 || c->H < 1 || c->L < 1 || c->Dh < 1)
        return lra_errorf(err, errlen, "relattn: B=%d H=%d L=%d Dh=%d must all be >= 1", c->B, c->H, c->L, c->Dh);
    if (c->Mc < 0) return lra_errorf(err, errlen, "relattn: memory rows Mc=%d must be >= 0", c->Mc);
    if (c->clamp_len < 0)
        return lra_errorf(err, errlen, "model.clamp_len = %d must be >= 0 (0 = no clamp)", c->clamp_len);
    if (c->same_length != 0 && c->same_length != 1)
        return lra_errorf(err, errlen, "model.same_length = %d must be 0 or 1", c->same_length);
    if (c->same_length && c->mem_len < 1)
        return lra_errorf(err, errlen,
                          "model.same_length needs model.mem_len >= 1 (got %d): with no memory every query "
                          "would see no key", c->mem_len);
    if (!(c->scale >= 0) || isinf(c->scale))
        return lra_errorf(err, errlen, "relattn: scale %g must be finite and >= 0 (0 = 1/sqrt(Dh))", (double)c->scale);
    return 0;
}

static void check_or_die(const relattn_cfg *c) {
    char err[256];
    LRA_CHECK(relattn_check(c, err, sizeof err) == 0, "%s", err);
}

size_t relattn_cache_bytes(const relattn_cfg *c) {
    return (size_t)c->B * c->H * c->L * sizeof(float);
}

/* Query rows per tile: the scores of one tile, (TQ, <= Mk), are the largest temporaries. */
#define RELATTN_TQ 32
static int tile_rows(const relattn_cfg *c) { return c->L < RELATTN_TQ ? c->L : RELATTN_TQ; }

/* Scratch layout (floats): per task t = b*H + h, [t*TS, (t+1)*TS) with TS = 2*TQ*Mk + 4*TQ*Dh:
 * two (TQ, Mk) tiles (scores/probabilities/dS, and the positional term BD_raw, dP or dS by distance)
 * and four (TQ, Dh) tiles (q+u, q+v, the two parts of dq); then the backward's partial sums:
 * dr (B*H, Mk, Dh), du (B*H, Dh), dv_bias (B*H, Dh). */
static size_t task_floats(const relattn_cfg *c) {
    return 2 * (size_t)tile_rows(c) * relattn_klen(c) + 4 * (size_t)tile_rows(c) * c->Dh;
}

size_t relattn_scratch_bytes(const relattn_cfg *c) {
    size_t BH = (size_t)c->B * c->H;
    return (BH * task_floats(c) + BH * ((size_t)relattn_klen(c) + 2) * c->Dh) * sizeof(float);
}

double relattn_flops(const relattn_cfg *c) {
    double pairs = 0;
    for (int i = 0; i < c->L; i++) pairs += (double)(i + c->Mc - first_key(c, i) + 1);
    return (double)c->B * c->H * pairs * 6.0 * c->Dh;
}

void relattn_pos_emb(float *R, int klen, int d_model, int clamp_len) {
    LRA_CHECK(R && klen >= 0 && d_model > 0 && d_model % 2 == 0, "relattn_pos_emb: klen=%d d_model=%d (even)", klen,
              d_model);
    int half = d_model / 2;
    for (int k = 0; k < half; k++) {
        /* TXL: inv_freq = 1 / 10000^(2k / d_model); here in double, the table rounded to float. */
        const double f = pow(10000.0, -2.0 * k / (double)d_model);
        for (int p = 0; p < klen; p++) {
            int pos = klen - 1 - p;
            if (clamp_len > 0 && pos > clamp_len) pos = clamp_len;
            double a = (double)pos * f;
            R[(size_t)p * d_model + k] = (float)sin(a);
            R[(size_t)p * d_model + half + k] = (float)cos(a);
        }
    }
}

/* One tile of query rows i0 .. i0+nq-1 of task (b,h): the key range, the range of r rows, and the
 * raw score terms. Keys jlo..jhi (W of them) cover every key visible to some row of the tile; the
 * distances of visible pairs lie in 0..dmax (clamped), i.e. rows p0 = Mk-1-dmax .. Mk-1 of r (np of
 * them). S (nq, W) = (q+u) K^T and BR (nq, np) = (q+v) r[p0..]^T by sgemm; the score of a visible
 * pair is s * (S[ii][j-jlo] + BR[ii][dmax - d(delta)]). */
typedef struct {
    int i0, nq, jlo, W, dmax, p0, np;
} tile_t;

static tile_t tile_make(const relattn_cfg *c, int i0) {
    const int Mk = relattn_klen(c);
    tile_t T;
    T.i0 = i0;
    T.nq = LRA_MIN(tile_rows(c), c->L - i0);
    T.jlo = first_key(c, i0);
    T.W = (i0 + T.nq - 1 + c->Mc) - T.jlo + 1;
    T.dmax = (i0 + T.nq - 1 + c->Mc) - T.jlo;
    if (c->clamp_len > 0 && T.dmax > c->clamp_len) T.dmax = c->clamp_len;
    T.p0 = Mk - 1 - T.dmax;
    T.np = T.dmax + 1;
    return T;
}

/* qu = q + u, qv = q + v_bias for the tile's rows; S and BR as above. */
static void tile_scores(const relattn_cfg *c, const tile_t *T, int h, const float *qb, const float *kb,
                        const float *r, const float *u, const float *v_bias, float *qu, float *qv, float *S,
                        float *BR) {
    const int H = c->H, Dh = c->Dh;
    for (int ii = 0; ii < T->nq; ii++)
        for (int d = 0; d < Dh; d++) {
            float x = qb[(size_t)(T->i0 + ii) * Dh + d];
            qu[(size_t)ii * Dh + d] = x + u[(size_t)h * Dh + d];
            qv[(size_t)ii * Dh + d] = x + v_bias[(size_t)h * Dh + d];
        }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T->nq, T->W, Dh, 1.0f, qu, Dh, kb + (size_t)T->jlo * Dh, Dh,
                0.0f, S, T->W);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T->nq, T->np, Dh, 1.0f, qv, Dh,
                r + ((size_t)T->p0 * H + h) * Dh, H * Dh, 0.0f, BR, T->np);
}

/* Turn the raw tile terms of row ii into probabilities in S (0 for masked keys), given the row's
 * log-sum-exp (lse_known) or computing it (returned). */
static float tile_row_probs(const relattn_cfg *c, const tile_t *T, int ii, float *S, const float *BR, float s,
                            int have_lse, float lse) {
    const int i = T->i0 + ii, ja = first_key(c, i), jb = i + c->Mc;
    float *Srow = S + (size_t)ii * T->W;
    const float *Brow = BR + (size_t)ii * T->np;
    for (int j = T->jlo; j < ja; j++) Srow[j - T->jlo] = 0.0f;
    for (int j = jb + 1; j < T->jlo + T->W; j++) Srow[j - T->jlo] = 0.0f;
    float m = -INFINITY;
    for (int j = ja; j <= jb; j++) {
        int delta = i + c->Mc - j;
        int dd = (c->clamp_len > 0 && delta > c->clamp_len) ? c->clamp_len : delta;
        float x = s * (Srow[j - T->jlo] + Brow[T->dmax - dd]);
        Srow[j - T->jlo] = x;
        if (x > m) m = x;
    }
    if (have_lse) {
        for (int j = ja; j <= jb; j++) Srow[j - T->jlo] = lra_expf(Srow[j - T->jlo] - lse);
        return lse;
    }
    float l = 0.0f;
    for (int j = ja; j <= jb; j++) {
        float e = lra_expf(Srow[j - T->jlo] - m);
        Srow[j - T->jlo] = e;
        l += e;
    }
    float inv = 1.0f / l;
    for (int j = ja; j <= jb; j++) Srow[j - T->jlo] *= inv;
    return m + logf(l);
}

void relattn_forward(const relattn_cfg *c, const float *q, const float *k, const float *v, const float *r,
                     const float *u, const float *v_bias, float *out, float *cache, void *scratch) {
    check_or_die(c);
    LRA_CHECK(q && k && v && r && u && v_bias && out && cache && scratch, "relattn_forward: NULL pointer");
    const int B = c->B, H = c->H, L = c->L, Dh = c->Dh, Mk = relattn_klen(c), TQ = tile_rows(c);
    const float s = cfg_scale(c);
    const size_t TS = task_floats(c);
    float *scr = scratch;

#pragma omp parallel for schedule(static)
    for (int t = 0; t < B * H; t++) {
        const int h = t % H;
        const float *qb = q + (size_t)t * L * Dh, *kb = k + (size_t)t * Mk * Dh, *vb = v + (size_t)t * Mk * Dh;
        float *ob = out + (size_t)t * L * Dh, *lse = cache + (size_t)t * L;
        float *S = scr + (size_t)t * TS, *BR = S + (size_t)TQ * Mk, *qu = BR + (size_t)TQ * Mk, *qv = qu + (size_t)TQ * Dh;
        for (int i0 = 0; i0 < L; i0 += TQ) {
            tile_t T = tile_make(c, i0);
            tile_scores(c, &T, h, qb, kb, r, u, v_bias, qu, qv, S, BR);
            for (int ii = 0; ii < T.nq; ii++) lse[i0 + ii] = tile_row_probs(c, &T, ii, S, BR, s, 0, 0.0f);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T.nq, Dh, T.W, 1.0f, S, T.W,
                        vb + (size_t)T.jlo * Dh, Dh, 0.0f, ob + (size_t)i0 * Dh, Dh);
        }
    }
}

void relattn_backward(const relattn_cfg *c, const float *q, const float *k, const float *v, const float *r,
                      const float *u, const float *v_bias, const float *out, const float *dout,
                      const float *cache, void *scratch, float *dq, float *dk, float *dv, float *dr,
                      float *du, float *dv_bias) {
    check_or_die(c);
    LRA_CHECK(q && k && v && r && u && v_bias && out && dout && cache && scratch && dq && dk && dv && dr,
              "relattn_backward: NULL pointer");
    const int B = c->B, H = c->H, L = c->L, Dh = c->Dh, Mc = c->Mc, Mk = relattn_klen(c), TQ = tile_rows(c);
    const int BH = B * H;
    const float s = cfg_scale(c);
    const size_t TS = task_floats(c);
    float *scr = scratch;
    float *dr_part = scr + (size_t)BH * TS;          /* (BH, Mk, Dh) */
    float *du_part = dr_part + (size_t)BH * Mk * Dh; /* (BH, Dh) */
    float *dvb_part = du_part + (size_t)BH * Dh;     /* (BH, Dh) */

#pragma omp parallel for schedule(static)
    for (int t = 0; t < BH; t++) {
        const int h = t % H;
        const float *qb = q + (size_t)t * L * Dh, *ob = out + (size_t)t * L * Dh, *gb = dout + (size_t)t * L * Dh;
        const float *kb = k + (size_t)t * Mk * Dh, *vb = v + (size_t)t * Mk * Dh;
        const float *lse = cache + (size_t)t * L;
        float *dqb = dq + (size_t)t * L * Dh, *dkb = dk + (size_t)t * Mk * Dh, *dvb = dv + (size_t)t * Mk * Dh;
        float *drp = dr_part + (size_t)t * Mk * Dh, *dup = du_part + (size_t)t * Dh, *dvbp = dvb_part + (size_t)t * Dh;
        float *S = scr + (size_t)t * TS, *X = S + (size_t)TQ * Mk, *qu = X + (size_t)TQ * Mk, *qv = qu + (size_t)TQ * Dh;
        float *dqk = qv + (size_t)TQ * Dh, *dqr = dqk + (size_t)TQ * Dh;
        memset(dkb, 0, (size_t)Mk * Dh * sizeof(float));
        memset(dvb, 0, (size_t)Mk * Dh * sizeof(float));
        memset(drp, 0, (size_t)Mk * Dh * sizeof(float));
        memset(dup, 0, (size_t)Dh * sizeof(float));
        memset(dvbp, 0, (size_t)Dh * sizeof(float));
        for (int i0 = 0; i0 < L; i0 += TQ) {
            tile_t T = tile_make(c, i0);
            const float *gt = gb + (size_t)i0 * Dh;
            /* P (in S) recomputed from the cached log-sum-exp; X holds BD_raw meanwhile. */
            tile_scores(c, &T, h, qb, kb, r, u, v_bias, qu, qv, S, X);
            for (int ii = 0; ii < T.nq; ii++) tile_row_probs(c, &T, ii, S, X, s, 1, lse[i0 + ii]);
            /* dv_j += sum_i P_ij dout_i */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T.W, Dh, T.nq, 1.0f, S, T.W, gt, Dh, 1.0f,
                        dvb + (size_t)T.jlo * Dh, Dh);
            /* dP (in X) = dout V^T; then S <- G = s * P (dP - D_i), D_i = dout_i . out_i */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T.nq, T.W, Dh, 1.0f, gt, Dh, vb + (size_t)T.jlo * Dh,
                        Dh, 0.0f, X, T.W);
            for (int ii = 0; ii < T.nq; ii++) {
                const int i = i0 + ii, ja = first_key(c, i), jb = i + Mc;
                const float Di = dot(gt + (size_t)ii * Dh, ob + (size_t)i * Dh, Dh);
                float *Srow = S + (size_t)ii * T.W;
                const float *Xrow = X + (size_t)ii * T.W;
                for (int j = ja; j <= jb; j++) Srow[j - T.jlo] = s * Srow[j - T.jlo] * (Xrow[j - T.jlo] - Di);
            }
            /* dk_j += sum_i G_ij (q_i + u);  dq (content part) = G K */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T.W, Dh, T.nq, 1.0f, S, T.W, qu, Dh, 1.0f,
                        dkb + (size_t)T.jlo * Dh, Dh);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T.nq, Dh, T.W, 1.0f, S, T.W,
                        kb + (size_t)T.jlo * Dh, Dh, 0.0f, dqk, Dh);
            /* G by distance (in X, (nq, np)): Graw[ii][dmax - d] = sum of G over the row's keys at
             * (clamped) distance d, keys in ascending order. */
            memset(X, 0, (size_t)T.nq * T.np * sizeof(float));
            for (int ii = 0; ii < T.nq; ii++) {
                const int i = i0 + ii, ja = first_key(c, i), jb = i + Mc;
                const float *Srow = S + (size_t)ii * T.W;
                float *Grow = X + (size_t)ii * T.np;
                for (int j = ja; j <= jb; j++) {
                    int delta = i + Mc - j;
                    int dd = (c->clamp_len > 0 && delta > c->clamp_len) ? c->clamp_len : delta;
                    Grow[T.dmax - dd] += Srow[j - T.jlo];
                }
            }
            /* dq (position part) = Graw r[p0..];  dr[p] += Graw^T (q + v_bias) */
            const float *rt = r + ((size_t)T.p0 * H + h) * Dh;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T.nq, Dh, T.np, 1.0f, X, T.np, rt, H * Dh, 0.0f,
                        dqr, Dh);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T.np, Dh, T.nq, 1.0f, X, T.np, qv, Dh, 1.0f,
                        drp + (size_t)T.p0 * Dh, Dh);
            for (int ii = 0; ii < T.nq; ii++) {
                float *dqi = dqb + (size_t)(i0 + ii) * Dh;
                const float *a = dqk + (size_t)ii * Dh, *bq = dqr + (size_t)ii * Dh;
                for (int d = 0; d < Dh; d++) {
                    dqi[d] = a[d] + bq[d];
                    dup[d] += a[d];
                    dvbp[d] += bq[d];
                }
            }
        }
    }

    /* Reduce the per-(b,h) partials over b, in order b = 0..B-1, in double. */
    const size_t nr = (size_t)Mk * H * Dh;
#pragma omp parallel for schedule(static)
    for (size_t e = 0; e < nr; e++) {
        size_t p = e / ((size_t)H * Dh), hd = e % ((size_t)H * Dh), h = hd / Dh, d = hd % Dh;
        double acc = 0;
        for (int b = 0; b < B; b++) acc += dr_part[(((size_t)b * H + h) * Mk + p) * Dh + d];
        dr[e] = (float)acc;
    }
    for (size_t e = 0; e < (size_t)H * Dh; e++) {
        size_t h = e / Dh, d = e % Dh;
        double a = 0, bsum = 0;
        for (int b = 0; b < B; b++) {
            a += du_part[((size_t)b * H + h) * Dh + d];
            bsum += dvb_part[((size_t)b * H + h) * Dh + d];
        }
        if (du) du[e] += (float)a;
        if (dv_bias) dv_bias[e] += (float)bsum;
    }
}

void relattn_reference(const relattn_cfg *c, const float *q, const float *k, const float *v, const float *r,
                       const float *u, const float *v_bias, float *out) {
    check_or_die(c);
    const int B = c->B, H = c->H, L = c->L, Dh = c->Dh, Mc = c->Mc, Mk = relattn_klen(c);
    const double s = c->scale > 0 ? (double)c->scale : 1.0 / sqrt((double)Dh);
    double *S = xmalloc((size_t)L * Mk * sizeof *S);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            size_t t = (size_t)b * H + h;
            for (int i = 0; i < L; i++)
                for (int j = 0; j < Mk; j++) {
                    int delta = i + Mc - j;
                    int visible = delta >= 0 && (!c->same_length || delta < c->mem_len);
                    if (!visible) {
                        S[(size_t)i * Mk + j] = -INFINITY;
                        continue;
                    }
                    int dd = (c->clamp_len > 0 && delta > c->clamp_len) ? c->clamp_len : delta;
                    int p = Mk - 1 - dd;
                    double ac = 0, bd = 0;
                    for (int d = 0; d < Dh; d++) {
                        double qd = q[(t * L + i) * Dh + d];
                        ac += (qd + u[(size_t)h * Dh + d]) * k[(t * Mk + j) * Dh + d];
                        bd += (qd + v_bias[(size_t)h * Dh + d]) * r[((size_t)p * H + h) * Dh + d];
                    }
                    S[(size_t)i * Mk + j] = s * (ac + bd);
                }
            for (int i = 0; i < L; i++) {
                double m = -INFINITY, l = 0;
                for (int j = 0; j < Mk; j++) m = fmax(m, S[(size_t)i * Mk + j]);
                for (int j = 0; j < Mk; j++) l += exp(S[(size_t)i * Mk + j] - m);
                for (int d = 0; d < Dh; d++) {
                    double o = 0;
                    for (int j = 0; j < Mk; j++) o += exp(S[(size_t)i * Mk + j] - m) / l * v[(t * Mk + j) * Dh + d];
                    out[(t * L + i) * Dh + d] = (float)o;
                }
            }
        }
    free(S);
}
