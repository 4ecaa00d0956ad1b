/* reformer.c - Reformer LSH attention with shared QK (Kitaev, Kaiser, Levskaya, "Reformer: The
 * Efficient Transformer", arXiv 2001.04451; spec: reference/attention.md §7, LRA notes lra.md §5).
 *
 * Letters: B batch, H heads, N length, Dh head size, C chunk length (bucket_size), R hash rounds
 * (n_hashes), NB buckets, NR real (unmasked) tokens of one sequence, NC candidates of a chunk
 * (<= 2C).
 *
 * What is computed, per (b, h):
 *  - Shared QK. The interface hands over q and k separately, but the Reformer has one projection:
 *    q is used as both queries and keys, keys are q_j / ||q_j|| (unit length, as in the paper and
 *    trax), logits are s * q_i . khat_j with s = 1/sqrt(Dh). The incoming k is IGNORED and its
 *    gradient dk is zero (the model's K projection then receives no gradient; use the Q
 *    projection's output as the shared QK).
 *  - Hashing. Round r draws a rotation Rot_r (Dh x NB/2, N(0,1)) from stream RNG_LSH and
 *    bucket_r(i) = argmax [q_i Rot_r ; -q_i Rot_r] (first maximum wins). NB = 1 skips hashing.
 *    Rotations are per (layer, head, round), shared over the batch; in training they are redrawn
 *    every step (keyed by layer and step), at eval one fixed draw per layer is used (keyed by layer
 *    only). `lra_rotations` reproduces LRA's single PRNGKey(0) draw shared by every layer, head,
 *    step and seed. No gradient flows through hashing or sorting (piecewise constant).
 *  - Padding. Masked tokens (key_mask 0) are removed before sorting: they are neither keys nor
 *    queries, and their output rows are 0 (trax puts them in an extra bucket; removing them makes
 *    the real outputs exactly independent of how much padding follows).
 *  - Sorting and chunks. The NR real tokens of a round are sorted by (bucket, position) (a stable
 *    counting sort) and cut into chunks of C consecutive tokens; each chunk attends to itself and
 *    the previous chunk of the same round (chunk 0 looks back at the round's last chunk, circular as
 *    in trax/lucidrains, but within a round rather than across rounds; a single chunk attends only
 *    to itself, so no key appears twice in one round).
 *  - Causal. Query i sees key j iff j <= i. With the paper's global chunking, future tokens hashed
 *    into lower buckets would shift the chunk boundaries and so change which past keys a query
 *    sees, leaking the future into the past. The causal variant therefore chunks WITHIN each
 *    bucket: the tokens of a bucket, in position order, are cut into chunks of C, and a chunk
 *    attends to itself (keys j <= i) and the previous chunk of the same bucket. A query's candidate
 *    set then depends only on tokens at positions <= i.
 *  - Self mask. A query's logit against itself is the finite constant -1e5 (trax), so a token
 *    attends to itself only when it has no other candidate (e.g. causal position 0).
 *  - Rounds. The candidates of all rounds share one softmax (the multiset of candidates, pairs met
 *    in several rounds counted each time; no duplicate correction): out_i = sum_r w_r(i) o_r(i)
 *    with w_r = exp(lse_r(i) - logsumexp_r lse_r(i)). Backward uses P = exp(S - L_i) with the
 *    combined L_i and the identity dS = P (dP - D_i), D_i = dout_i . out_i (§0.2).
 *  - Dropout on the probabilities (training) uses attn_dropout_scale at the original (i, j).
 *
 * LRA's reformer_attention.py deviates from the paper (lra.md §5, attention.md §7.4): `lra_logits`
 * reproduces its scoring (keys are q itself, not normalised; logits MULTIPLIED by sqrt(Dh); no self
 * mask) and `lra_rotations` its fixed rotations. LRA also used no padding or causal mask; those are
 * always applied here. LRA's bucketing (n_buckets 10, N/10-long chunks) is n_buckets: 10 with
 * bucket_size: N/10.
 *
 * Memory (no N x N): cache B*H*N*(8 + 8R) bytes (row log-sum-exp, per-round sort order and sorted
 * buckets); scratch per thread O(N*Dh + C*Dh) (omp_get_max_threads() slices, so scratch_bytes must
 * be given at least that many threads); state H*R*Dh*NB/2 floats (rotations). Work
 * O(R*N*(Dh*NB + 2C*Dh)): with NB derived from the length, hashing grows as N^2/C (at N = 16K,
 * C = 64 it is half the attention's flops; trax factorises large bucket counts, not done here).
 * OpenMP over (b, h): one thread owns a whole sequence-head, so dq and dv (scatter-adds over chunks)
 * need no synchronisation and results do not depend on the thread count; tiny problems run
 * serially.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "../lra/common.h"
#include "attention.h"
#include "fastmath.h"

typedef struct {
    int n_hashes;    /* R */
    int bucket_size; /* C, chunk length */
    int n_buckets;   /* 0: derived */
    int lra_logits;
    int lra_rotations;
} reformer_params;

static const param_def reformer_schema[] = {
    P_INT(reformer_params, n_hashes, "1", 1, 16,
          "hash rounds; the candidates of all rounds share one softmax (paper 1..8, LRA 1)"),
    P_INT(reformer_params, bucket_size, "64", 1, 1 << 20,
          "chunk length C: sorted tokens are cut into chunks of C that attend to themselves and the previous chunk "
          "(paper/lucidrains 64, trax 128; LRA used chunks of N/10, i.e. bucket_size = N/10 with n_buckets 10)"),
    P_INT(reformer_params, n_buckets, "0", 0, 1 << 20,
          "hash buckets, even (or 1: no hashing); 0 = ceil(max_len / bucket_size) rounded up to even, at least 2 "
          "(LRA: 10)"),
    P_BOOL(reformer_params, lra_logits, "false",
           "LRA's scoring: keys are q unnormalised, logits multiplied (not divided) by sqrt(Dh), no self mask"),
    P_BOOL(reformer_params, lra_rotations, "false",
           "LRA's fixed rotations (one PRNGKey(0)-like draw shared by every layer, head, step and seed) instead of a "
           "fresh draw per layer and training step"),
};

#define RF_SELF_LOGIT (-1e5f) /* trax: self only wins when nothing else is visible */
#define RF_EPS 1e-6f          /* floor on ||q|| when normalising keys */
#define RF_ALIGN 64

/* ---- derived sizes ---- */

static int rf_nbuckets(const reformer_params *p, const attn_shape *s) {
    if (p->n_buckets > 0) return p->n_buckets;
    long len = LRA_MAX(s->max_len, s->N);
    long nb = (len + p->bucket_size - 1) / p->bucket_size;
    if (nb < 2) nb = 2;
    if (nb & 1) nb++;
    return (int)nb;
}

static int rf_half(const reformer_params *p, const attn_shape *s) {
    int nb = rf_nbuckets(p, s);
    return nb == 1 ? 0 : nb / 2;
}

/* Candidates per chunk, at most: own chunk + previous chunk, never more than N. */
static int rf_cap(const reformer_params *p, const attn_shape *s) {
    long c = 2L * p->bucket_size;
    return (int)LRA_MIN(c, (long)LRA_MAX(s->N, 1));
}

static float rf_scale(const reformer_params *p, const attn_shape *s) {
    return p->lra_logits ? sqrtf((float)s->Dh) : 1.0f / sqrtf((float)s->Dh);
}

/* ---- cache layout: L (B,H,N) double | perm (B,H,R,N) int32 | sorted buckets (B,H,R,N) int32 ----
 * L is kept in double: a query whose only candidate is itself has L = -1e5 + log(#rounds), and a
 * float at 1e5 has a spacing of 0.008, which would put a 0.4% error on its probability. */

typedef struct {
    double *L;
    int *perm, *sbk;
} rf_cache;

static rf_cache rf_cache_view(void *base, const reformer_params *p, const attn_shape *s) {
    rf_cache c;
    size_t bhn = (size_t)s->B * s->H * s->N;
    c.L = base;
    c.perm = (int *)(c.L + bhn);
    c.sbk = c.perm + bhn * p->n_hashes;
    return c;
}

/* ---- per-thread scratch ---- */

typedef struct {
    int *real;  /* (N) real positions, ascending */
    int *slot;  /* (N) index into real[] of a position, -1 for padding */
    int *bkt;   /* (N) bucket of real[t] in the current round */
    int *cnt;   /* (NB+1) counting sort */
    int *chunk; /* (4N) chunk descriptors lo, hi, plo, phi */
    int *cand;  /* (NC) candidate positions of a chunk */
    float *g;   /* (N) key normaliser 1/||q_j|| (1 in lra_logits) */
    float *D;   /* (N) dout_i . out_i */
    float *dkh; /* (N,Dh) gradient w.r.t. the normalised keys */
    float *KT;  /* (Dh,NC) candidate keys, transposed */
    float *Kc;  /* (NC,Dh) candidate keys */
    float *VT;  /* (Dh,NC) candidate values, transposed */
    float *Vc;  /* (NC,Dh) */
    float *dKc, *dVc; /* (NC,Dh) */
    float *S, *P, *dP, *keep; /* (NC) */
    float *proj; /* (NB/2) */
    float *o;    /* (Dh) */
} rf_tls;

static void *rf_bump(char **cur, size_t *used, size_t bytes) {
    size_t a = (*used + RF_ALIGN - 1) & ~(size_t)(RF_ALIGN - 1);
    *used = a + bytes;
    return *cur ? *cur + a : NULL;
}

/* Lays out one thread's scratch at base (NULL: only measure). Returns its bytes. */
static size_t rf_tls_layout(const reformer_params *p, const attn_shape *s, char *base, rf_tls *t) {
    size_t u = 0;
    char *b = base;
    size_t N = (size_t)LRA_MAX(s->N, 1), Dh = (size_t)s->Dh, NC = (size_t)rf_cap(p, s);
    size_t NB = (size_t)rf_nbuckets(p, s), half = (size_t)LRA_MAX(rf_half(p, s), 1);
    rf_tls x;
    x.real = rf_bump(&b, &u, N * sizeof(int));
    x.slot = rf_bump(&b, &u, N * sizeof(int));
    x.bkt = rf_bump(&b, &u, N * sizeof(int));
    x.cnt = rf_bump(&b, &u, (NB + 1) * sizeof(int));
    x.chunk = rf_bump(&b, &u, 4 * N * sizeof(int));
    x.cand = rf_bump(&b, &u, NC * sizeof(int));
    x.g = rf_bump(&b, &u, N * sizeof(float));
    x.D = rf_bump(&b, &u, N * sizeof(float));
    x.dkh = rf_bump(&b, &u, N * Dh * sizeof(float));
    x.KT = rf_bump(&b, &u, NC * Dh * sizeof(float));
    x.Kc = rf_bump(&b, &u, NC * Dh * sizeof(float));
    x.VT = rf_bump(&b, &u, NC * Dh * sizeof(float));
    x.Vc = rf_bump(&b, &u, NC * Dh * sizeof(float));
    x.dKc = rf_bump(&b, &u, NC * Dh * sizeof(float));
    x.dVc = rf_bump(&b, &u, NC * Dh * sizeof(float));
    x.S = rf_bump(&b, &u, NC * sizeof(float));
    x.P = rf_bump(&b, &u, NC * sizeof(float));
    x.dP = rf_bump(&b, &u, NC * sizeof(float));
    x.keep = rf_bump(&b, &u, NC * sizeof(float));
    x.proj = rf_bump(&b, &u, half * sizeof(float));
    x.o = rf_bump(&b, &u, Dh * sizeof(float));
    if (t) *t = x;
    return (u + RF_ALIGN - 1) & ~(size_t)(RF_ALIGN - 1);
}

/* ---- ops: sizes ---- */

static int reformer_validate(const void *params, const attn_shape *s, char *err, size_t errlen) {
    const reformer_params *p = params;
    if (s->Nk != s->N)
        return lra_errorf(err, errlen, "reformer: segment memory (Nk %d != N %d) is not supported; shared-QK LSH "
                          "attention needs keys = queries", s->Nk, s->N);
    if (p->n_buckets > 1 && (p->n_buckets & 1))
        return lra_errorf(err, errlen, "n_buckets: must be even (random rotations give NB/2 directions and their "
                          "negatives) or 1, got %d", p->n_buckets);
    if (p->bucket_size < 1) return lra_errorf(err, errlen, "bucket_size: must be >= 1, got %d", p->bucket_size);
    if (p->n_hashes < 1) return lra_errorf(err, errlen, "n_hashes: must be >= 1, got %d", p->n_hashes);
    return 0;
}

static size_t reformer_state_bytes(const void *params, const attn_shape *s) {
    const reformer_params *p = params;
    return (size_t)s->H * p->n_hashes * s->Dh * rf_half(p, s) * sizeof(float);
}

static size_t reformer_cache_bytes(const void *params, const attn_shape *s) {
    const reformer_params *p = params;
    return (size_t)s->B * s->H * s->N * (sizeof(double) + 2 * sizeof(int) * (size_t)p->n_hashes);
}

static size_t reformer_scratch_bytes(const void *params, const attn_shape *s, int n_threads) {
    return (size_t)LRA_MAX(n_threads, 1) * rf_tls_layout(params, s, NULL, NULL);
}

static double reformer_flops(const void *params, const attn_shape *s) {
    const reformer_params *p = params;
    double N = s->N, Dh = s->Dh, R = p->n_hashes, nc = rf_cap(p, s);
    double hash = rf_half(p, s) ? 2.0 * N * Dh * rf_half(p, s) : 0.0;
    /* Each query meets at most NC candidates per round: QK^T and PV, 2 flops per multiply-add. */
    return (double)s->B * s->H * R * (hash + N * nc * 4.0 * Dh);
}

/* ---- rotations ---- */

/* Fill L->state with Rot (H, R, Dh, NB/2) ~ N(0,1) from stream RNG_LSH (Box-Muller on counters
 * 2e, 2e+1 of element e, so every element is a pure function of its coordinates). */
static void reformer_begin(attn_layer *L) {
    const reformer_params *p = L->params;
    const attn_shape *s = &L->shape;
    int half = rf_half(p, s);
    if (!half || !L->state) return;
    uint64_t seed = L->seed, stream;
    if (p->lra_rotations) {
        seed = 0;
        stream = rng_substream(RNG_LSH, 0, 0);
    } else {
        /* Step key 0 is eval; training step t uses t + 1, so every step draws fresh rotations. */
        stream = rng_substream(RNG_LSH, 1 + (uint64_t)s->layer, L->training ? (uint64_t)L->step + 1 : 0);
    }
    float *rot = L->state;
    size_t per_head = (size_t)p->n_hashes * s->Dh * half;
    for (int h = 0; h < s->H; h++)
        for (size_t e = 0; e < per_head; e++) {
            uint64_t ctr = ((p->lra_rotations ? 0 : (uint64_t)h) * per_head + e) * 2;
            rng_t r = {seed, stream, ctr};
            rot[(size_t)h * per_head + e] = (float)rng_normal(&r);
        }
}

/* Bucket of x (Dh) under rotation rot (Dh, half): argmax over [x rot ; -x rot], first max wins.
 * Shared by the fast and the reference forward so both see identical buckets. */
static int rf_hash(const float *x, const float *rot, int Dh, int half, float *proj) {
    if (!half) return 0;
    for (int c = 0; c < half; c++) proj[c] = 0.0f;
    for (int d = 0; d < Dh; d++) {
        const float xd = x[d], *row = rot + (size_t)d * half;
        for (int c = 0; c < half; c++) proj[c] = LRA_FMAF(xd, row[c], proj[c]);
    }
    int best = 0;
    float bv = proj[0];
    for (int c = 1; c < half; c++)
        if (proj[c] > bv) bv = proj[c], best = c;
    for (int c = 0; c < half; c++)
        if (-proj[c] > bv) bv = -proj[c], best = half + c;
    return best;
}

/* 1/||x||, floored (shared by forward, backward and reference). */
static float rf_inv_norm(const float *x, int Dh) {
    double ss = 0;
    for (int d = 0; d < Dh; d++) ss += (double)x[d] * x[d];
    float n = (float)sqrt(ss);
    return 1.0f / (n > RF_EPS ? n : RF_EPS);
}

/* out[e] = sum_k w[k] X[k*ldx + e] for e < Dh, k < n (rows summed in order k = 0..n-1). The
 * accumulator is a fixed-width local array, so GCC keeps it in vector registers; accumulating
 * through a pointer instead stores and reloads it for every row (a store-forwarding chain that
 * made this loop ~10x slower). */
static void rf_wsum_rows(const float *w, const float *X, size_t ldx, int n, int Dh, float *out) {
    int e0 = 0;
    for (; e0 + 16 <= Dh; e0 += 16) {
        float acc[16];
        for (int e = 0; e < 16; e++) acc[e] = 0.0f;
        for (int k = 0; k < n; k++) {
            const float wk = w[k], *x = X + (size_t)k * ldx + e0;
            for (int e = 0; e < 16; e++) acc[e] = LRA_FMAF(wk, x[e], acc[e]);
        }
        for (int e = 0; e < 16; e++) out[e0 + e] = acc[e];
    }
    for (int e = e0; e < Dh; e++) {
        float a = 0.0f;
        for (int k = 0; k < n; k++) a = LRA_FMAF(w[k], X[(size_t)k * ldx + e], a);
        out[e] = a;
    }
}

/* ---- per (b,h) pieces of the fast path ---- */

typedef struct {
    const reformer_params *p;
    const attn_shape *s;
    const attn_layer *L;
    int NB, half, C, NC;
    float scale;
    int selfmask;
    int drop; /* dropout active */
} rf_ctx;

static rf_ctx rf_make_ctx(const attn_layer *L) {
    rf_ctx c;
    c.p = L->params;
    c.s = &L->shape;
    c.L = L;
    c.NB = rf_nbuckets(c.p, c.s);
    c.half = rf_half(c.p, c.s);
    c.C = c.p->bucket_size;
    c.NC = rf_cap(c.p, c.s);
    c.scale = rf_scale(c.p, c.s);
    c.selfmask = !c.p->lra_logits;
    c.drop = L->training && L->dropout > 0.0f;
    return c;
}

/* Real positions of sequence b (ascending) and key normalisers; returns NR. */
static int rf_real(const rf_ctx *c, int b, const float *qb, const uint8_t *mask, rf_tls *t) {
    int N = c->s->N, Dh = c->s->Dh, nr = 0;
    for (int i = 0; i < N; i++) {
        if (!mask || mask[(size_t)b * N + i]) {
            t->slot[i] = nr;
            t->real[nr++] = i;
        } else {
            t->slot[i] = -1;
        }
    }
    for (int u = 0; u < nr; u++) {
        int j = t->real[u];
        t->g[j] = c->p->lra_logits ? 1.0f : rf_inv_norm(qb + (size_t)j * Dh, Dh);
    }
    return nr;
}

/* Hash the real tokens under round r's rotation and counting-sort them by (bucket, position):
 * perm[0..nr) positions, sbk[0..nr) their buckets. */
static void rf_sort_round(const rf_ctx *c, int h, int r, const float *qb, const float *rot, int nr, rf_tls *t,
                          int *perm, int *sbk) {
    int Dh = c->s->Dh, NB = c->NB;
    const float *R = rot ? rot + ((size_t)h * c->p->n_hashes + r) * Dh * c->half : NULL;
    for (int u = 0; u < nr; u++) t->bkt[u] = R ? rf_hash(qb + (size_t)t->real[u] * Dh, R, Dh, c->half, t->proj) : 0;
    memset(t->cnt, 0, sizeof(int) * (size_t)(NB + 1));
    for (int u = 0; u < nr; u++) t->cnt[t->bkt[u] + 1]++;
    for (int k = 0; k < NB; k++) t->cnt[k + 1] += t->cnt[k];
    for (int u = 0; u < nr; u++) { /* ascending positions: stable */
        int at = t->cnt[t->bkt[u]]++;
        perm[at] = t->real[u];
        sbk[at] = t->bkt[u];
    }
}

/* Chunk descriptors (lo, hi, plo, phi) over the sorted list of one round; returns the count.
 * Non-causal: chunks of C over the whole list, previous chunk circular within the round.
 * Causal: chunks of C within each bucket's run, previous chunk within the same bucket only. */
static int rf_chunks(const rf_ctx *c, int nr, const int *sbk, int *ch) {
    int C = c->C, n = 0;
    if (!c->s->causal) {
        int nc = (nr + C - 1) / C;
        for (int k = 0; k < nc; k++) {
            int *d = ch + 4 * n++;
            d[0] = k * C;
            d[1] = LRA_MIN(nr, (k + 1) * C);
            if (k > 0) d[2] = (k - 1) * C, d[3] = k * C;
            else if (nc > 1) d[2] = (nc - 1) * C, d[3] = nr;
            else d[2] = d[3] = 0;
        }
        return n;
    }
    for (int a = 0; a < nr;) {
        int e = a;
        while (e < nr && sbk[e] == sbk[a]) e++;
        for (int lo = a; lo < e; lo += C) {
            int *d = ch + 4 * n++;
            d[0] = lo;
            d[1] = LRA_MIN(e, lo + C);
            if (lo > a) d[2] = lo - C, d[3] = lo;
            else d[2] = d[3] = 0;
        }
        a = e;
    }
    return n;
}

/* Gather a chunk's candidates (previous chunk, then own chunk): positions, normalised keys
 * transposed (KT) and values as rows (Vc); for the backward also keys as rows (Kc) and values
 * transposed (VT). Transposed copies make per-query loops run over candidates, which vectorises.
 * Returns the number of candidates. */
static int rf_gather(const rf_ctx *c, const int *d, const int *perm, const float *qb, const float *vb, rf_tls *t,
                     int bwd) {
    int Dh = c->s->Dh, ld = c->NC, n = 0;
    for (int pass = 0; pass < 2; pass++) {
        int lo = pass ? d[0] : d[2], hi = pass ? d[1] : d[3];
        for (int u = lo; u < hi; u++) t->cand[n++] = perm[u];
    }
    for (int k = 0; k < n; k++) {
        int j = t->cand[k];
        const float *qj = qb + (size_t)j * Dh, *vj = vb + (size_t)j * Dh;
        float gj = t->g[j];
        for (int e = 0; e < Dh; e++) {
            float kv = qj[e] * gj;
            t->KT[(size_t)e * ld + k] = kv;
            t->Vc[(size_t)k * Dh + e] = vj[e];
            if (bwd) {
                t->Kc[(size_t)k * Dh + e] = kv;
                t->VT[(size_t)e * ld + k] = vj[e];
            }
        }
    }
    return n;
}

/* Logits S[k] of query position i (vector qi) against the gathered candidates; -inf where causal
 * hides the key, RF_SELF_LOGIT at the query itself (unless lra_logits). */
static void rf_logits(const rf_ctx *c, int i, const float *qi, int n, rf_tls *t) {
    int Dh = c->s->Dh, ld = c->NC;
    float *S = t->S;
    for (int k = 0; k < n; k++) S[k] = 0.0f;
    for (int e = 0; e < Dh; e++) {
        const float qe = qi[e], *row = t->KT + (size_t)e * ld;
        for (int k = 0; k < n; k++) S[k] = LRA_FMAF(qe, row[k], S[k]);
    }
    for (int k = 0; k < n; k++) S[k] *= c->scale;
    for (int k = 0; k < n; k++) {
        int j = t->cand[k];
        if (c->s->causal && j > i) S[k] = -INFINITY;
        else if (c->selfmask && j == i) S[k] = RF_SELF_LOGIT;
    }
}

static void rf_keep(const rf_ctx *c, int b, int h, int i, int n, rf_tls *t) {
    for (int k = 0; k < n; k++) t->keep[k] = c->drop ? attn_dropout_scale(c->L, b, h, i, t->cand[k]) : 1.0f;
}

static void rf_forward_bh(const rf_ctx *c, int b, int h, const float *q, const float *v, const uint8_t *mask,
                          float *out, const float *rot, rf_cache cc, rf_tls *t) {
    const attn_shape *s = c->s;
    int N = s->N, Dh = s->Dh, R = c->p->n_hashes;
    size_t bh = (size_t)b * s->H + h;
    const float *qb = q + bh * N * Dh, *vb = v + bh * N * Dh;
    float *ob = out + bh * N * Dh;
    double *Lb = cc.L + bh * N;
    memset(ob, 0, sizeof(float) * (size_t)N * Dh);
    for (int i = 0; i < N; i++) Lb[i] = INFINITY;
    int nr = rf_real(c, b, qb, mask, t);
    for (int r = 0; r < R; r++) {
        int *perm = cc.perm + (bh * R + r) * N, *sbk = cc.sbk + (bh * R + r) * N;
        rf_sort_round(c, h, r, qb, rot, nr, t, perm, sbk);
        int nch = rf_chunks(c, nr, sbk, t->chunk);
        for (int ci = 0; ci < nch; ci++) {
            const int *d = t->chunk + 4 * ci;
            int n = rf_gather(c, d, perm, qb, vb, t, 0);
            for (int u = d[0]; u < d[1]; u++) {
                int i = perm[u];
                const float *qi = qb + (size_t)i * Dh;
                rf_logits(c, i, qi, n, t);
                rf_keep(c, b, h, i, n, t);
                float m = -INFINITY;
                for (int k = 0; k < n; k++) m = t->S[k] > m ? t->S[k] : m;
                /* m is finite: the query itself is always a candidate. */
                for (int k = 0; k < n; k++) t->P[k] = lra_expf(t->S[k] - m);
                double l = 0;
                for (int k = 0; k < n; k++) l += t->P[k];
                float *o = t->o;
                for (int k = 0; k < n; k++) t->P[k] *= t->keep[k]; /* after the normaliser */
                rf_wsum_rows(t->P, t->Vc, (size_t)Dh, n, Dh, o);
                float inv = (float)(1.0 / l);
                double lse = (double)m + log(l);
                float *oi = ob + (size_t)i * Dh;
                if (r == 0) {
                    for (int e = 0; e < Dh; e++) oi[e] = o[e] * inv;
                    Lb[i] = lse;
                } else { /* merge round r into the running (out, L), in double */
                    double L0 = Lb[i], mx = L0 > lse ? L0 : lse;
                    double Ln = mx + log(exp(L0 - mx) + exp(lse - mx));
                    float a = (float)exp(L0 - Ln), w = (float)exp(lse - Ln) * inv;
                    for (int e = 0; e < Dh; e++) oi[e] = a * oi[e] + w * o[e];
                    Lb[i] = Ln;
                }
            }
        }
    }
}

static void rf_backward_bh(const rf_ctx *c, int b, int h, const float *q, const float *v, const uint8_t *mask,
                           const float *out, const float *dout, float *dq, float *dv, rf_cache cc, rf_tls *t) {
    const attn_shape *s = c->s;
    int N = s->N, Dh = s->Dh, R = c->p->n_hashes, ld = c->NC;
    size_t bh = (size_t)b * s->H + h;
    const float *qb = q + bh * N * Dh, *vb = v + bh * N * Dh, *ob = out + bh * N * Dh, *dob = dout + bh * N * Dh;
    const double *Lb = cc.L + bh * N;
    float *dqb = dq + bh * N * Dh, *dvb = dv + bh * N * Dh;
    memset(dqb, 0, sizeof(float) * (size_t)N * Dh);
    memset(dvb, 0, sizeof(float) * (size_t)N * Dh);
    int nr = rf_real(c, b, qb, mask, t);
    for (int u = 0; u < nr; u++) {
        int i = t->real[u];
        double acc = 0;
        for (int e = 0; e < Dh; e++) acc += (double)dob[(size_t)i * Dh + e] * ob[(size_t)i * Dh + e];
        t->D[i] = (float)acc;
        memset(t->dkh + (size_t)i * Dh, 0, sizeof(float) * (size_t)Dh);
    }
    for (int r = 0; r < R; r++) {
        const int *perm = cc.perm + (bh * R + r) * N, *sbk = cc.sbk + (bh * R + r) * N;
        int nch = rf_chunks(c, nr, sbk, t->chunk);
        for (int ci = 0; ci < nch; ci++) {
            const int *d = t->chunk + 4 * ci;
            int n = rf_gather(c, d, perm, qb, vb, t, 1);
            memset(t->dKc, 0, sizeof(float) * (size_t)n * Dh);
            memset(t->dVc, 0, sizeof(float) * (size_t)n * Dh);
            for (int u = d[0]; u < d[1]; u++) {
                int i = perm[u];
                const float *qi = qb + (size_t)i * Dh, *doi = dob + (size_t)i * Dh;
                double Li = Lb[i];
                float Di = t->D[i];
                float *dqi = dqb + (size_t)i * Dh;
                rf_logits(c, i, qi, n, t);
                rf_keep(c, b, h, i, n, t);
                for (int k = 0; k < n; k++) t->P[k] = lra_expf((float)((double)t->S[k] - Li));
                for (int k = 0; k < n; k++) t->dP[k] = 0.0f;
                for (int e = 0; e < Dh; e++) {
                    const float de = doi[e], *row = t->VT + (size_t)e * ld;
                    for (int k = 0; k < n; k++) t->dP[k] = LRA_FMAF(de, row[k], t->dP[k]);
                }
                float *dS = t->S; /* the logits are no longer needed */
                for (int k = 0; k < n; k++) {
                    float pk = t->P[k];
                    dS[k] = 0.0f;
                    if (pk == 0.0f) continue;
                    float pkeep = pk * t->keep[k];
                    float *dvk = t->dVc + (size_t)k * Dh;
                    for (int e = 0; e < Dh; e++) dvk[e] = LRA_FMAF(pkeep, doi[e], dvk[e]);
                    /* The self logit is a constant: no gradient reaches q through it. */
                    if (c->selfmask && t->cand[k] == i) continue;
                    float ds = pk * (t->keep[k] * t->dP[k] - Di) * c->scale;
                    float *dkk = t->dKc + (size_t)k * Dh;
                    for (int e = 0; e < Dh; e++) dkk[e] = LRA_FMAF(ds, qi[e], dkk[e]);
                    dS[k] = ds;
                }
                rf_wsum_rows(dS, t->Kc, (size_t)Dh, n, Dh, t->o);
                for (int e = 0; e < Dh; e++) dqi[e] += t->o[e];
            }
            for (int k = 0; k < n; k++) {
                int j = t->cand[k];
                float *dkj = t->dkh + (size_t)j * Dh, *dvj = dvb + (size_t)j * Dh;
                const float *a = t->dKc + (size_t)k * Dh, *bb = t->dVc + (size_t)k * Dh;
                for (int e = 0; e < Dh; e++) dkj[e] += a[e];
                for (int e = 0; e < Dh; e++) dvj[e] += bb[e];
            }
        }
    }
    /* Key role -> q through khat = q g: dq += g (dkhat - khat (khat . dkhat)) (unit-norm
     * projection); identity in lra_logits; g dkhat where the norm is floored. */
    for (int u = 0; u < nr; u++) {
        int j = t->real[u];
        const float *qj = qb + (size_t)j * Dh, *dk = t->dkh + (size_t)j * Dh;
        float *dqj = dqb + (size_t)j * Dh, g = t->g[j];
        if (c->p->lra_logits) {
            for (int e = 0; e < Dh; e++) dqj[e] += dk[e];
            continue;
        }
        double ss = 0, pr = 0;
        for (int e = 0; e < Dh; e++) ss += (double)qj[e] * qj[e], pr += (double)qj[e] * g * dk[e];
        if (sqrt(ss) <= RF_EPS) {
            for (int e = 0; e < Dh; e++) dqj[e] += g * dk[e];
            continue;
        }
        float prf = (float)pr;
        for (int e = 0; e < Dh; e++) dqj[e] += g * (dk[e] - qj[e] * g * prf);
    }
}

/* Tiny problems (tests, short sequences) run serially: a parallel region costs more than the work. */
static int rf_parallel(const rf_ctx *c) {
    return (double)c->s->B * c->s->H * c->s->N * c->NC * c->s->Dh * c->p->n_hashes >= 2e5;
}

static rf_tls rf_thread_tls(const attn_layer *L, size_t per) {
    int tid = 0;
#ifdef _OPENMP
    tid = omp_get_thread_num();
#endif
    rf_tls t;
    rf_tls_layout(L->params, &L->shape, (char *)L->scratch + (size_t)tid * per, &t);
    return t;
}

/* Fast forward. q (B,H,N,Dh) is the shared QK; k is ignored; v (B,H,N,Dh); out (B,H,N,Dh), rows of
 * padded positions 0. Needs begin() to have filled the rotations. Scratch: one slice per thread,
 * omp_get_max_threads() <= the n_threads given to scratch_bytes. */
static void reformer_forward(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *mask,
                             float *out) {
    (void)k;
    rf_ctx c = rf_make_ctx(L);
    rf_cache cc = rf_cache_view(L->cache, c.p, c.s);
    size_t per = rf_tls_layout(c.p, c.s, NULL, NULL);
    int BH = c.s->B * c.s->H;
    const float *rot = c.half ? L->state : NULL;
#pragma omp parallel for schedule(dynamic, 1) if (rf_parallel(&c))
    for (int bh = 0; bh < BH; bh++) {
        rf_tls t = rf_thread_tls(L, per);
        rf_forward_bh(&c, bh / c.s->H, bh % c.s->H, q, v, mask, out, rot, cc, &t);
    }
}

/* Backward: dq (B,H,N,Dh) from both the query and the key role of q; dk = 0 (k is not used);
 * dv (B,H,N,Dh). Reuses forward's sort order (cache), so hashing is not redone. */
static void reformer_backward(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *mask,
                              const float *out, const float *dout, float *dq, float *dk, float *dv) {
    (void)k;
    rf_ctx c = rf_make_ctx(L);
    rf_cache cc = rf_cache_view(L->cache, c.p, c.s);
    size_t per = rf_tls_layout(c.p, c.s, NULL, NULL);
    int BH = c.s->B * c.s->H;
    memset(dk, 0, sizeof(float) * (size_t)BH * c.s->Nk * c.s->Dh);
#pragma omp parallel for schedule(dynamic, 1) if (rf_parallel(&c))
    for (int bh = 0; bh < BH; bh++) {
        rf_tls t = rf_thread_tls(L, per);
        rf_backward_bh(&c, bh / c.s->H, bh % c.s->H, q, v, mask, out, dout, dq, dv, cc, &t);
    }
}

/* ---- reference: candidate counts as an explicit N x N matrix, softmax in double ---- */

typedef struct {
    int bucket, pos;
} rf_item;

static int rf_item_cmp(const void *a, const void *b) {
    const rf_item *x = a, *y = b;
    if (x->bucket != y->bucket) return x->bucket < y->bucket ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

static void reformer_reference(attn_layer *L, const float *q, const float *k, const float *v, const uint8_t *mask,
                               float *out) {
    (void)k;
    const reformer_params *p = L->params;
    const attn_shape *s = &L->shape;
    int N = s->N, Dh = s->Dh, R = p->n_hashes, C = p->bucket_size, half = rf_half(p, s);
    double scale = p->lra_logits ? sqrt((double)Dh) : 1.0 / sqrt((double)Dh);
    int *cnt = xcalloc((size_t)N * N, sizeof(int));
    int *bucket = xmalloc(sizeof(int) * (size_t)N), *tpos = xmalloc(sizeof(int) * (size_t)N);
    int *rank = xmalloc(sizeof(int) * (size_t)N), *real = xmalloc(sizeof(int) * (size_t)N);
    rf_item *items = xmalloc(sizeof(rf_item) * (size_t)N);
    double *kh = xmalloc(sizeof(double) * (size_t)N * Dh), *w = xmalloc(sizeof(double) * (size_t)N);
    double *acc = xmalloc(sizeof(double) * (size_t)Dh);
    float *proj = xmalloc(sizeof(float) * (size_t)LRA_MAX(half, 1));
    for (int b = 0; b < s->B; b++)
        for (int h = 0; h < s->H; h++) {
            size_t bh = (size_t)b * s->H + h;
            const float *qb = q + bh * N * Dh, *vb = v + bh * N * Dh;
            float *ob = out + bh * N * Dh;
            memset(ob, 0, sizeof(float) * (size_t)N * Dh);
            memset(cnt, 0, sizeof(int) * (size_t)N * N);
            int nr = 0;
            for (int i = 0; i < N; i++)
                if (!mask || mask[(size_t)b * N + i]) real[nr++] = i;
            for (int u = 0; u < nr; u++) {
                int j = real[u];
                double ss = 0;
                for (int e = 0; e < Dh; e++) ss += (double)qb[(size_t)j * Dh + e] * qb[(size_t)j * Dh + e];
                double g = p->lra_logits ? 1.0 : 1.0 / fmax(sqrt(ss), (double)RF_EPS);
                for (int e = 0; e < Dh; e++) kh[(size_t)j * Dh + e] = qb[(size_t)j * Dh + e] * g;
            }
            for (int r = 0; r < R; r++) {
                const float *rot = half ? (const float *)L->state + ((size_t)h * R + r) * Dh * half : NULL;
                for (int u = 0; u < nr; u++) {
                    int i = real[u];
                    bucket[i] = rot ? rf_hash(qb + (size_t)i * Dh, rot, Dh, half, proj) : 0;
                    items[u].bucket = bucket[i];
                    items[u].pos = i;
                }
                qsort(items, (size_t)nr, sizeof *items, rf_item_cmp);
                for (int u = 0; u < nr; u++) tpos[items[u].pos] = u;
                if (!s->causal) {
                    /* Chunk k = sorted index / C; candidates: own chunk and the previous one (circular). */
                    int nc = (nr + C - 1) / C;
                    for (int a = 0; a < nr; a++)
                        for (int c2 = 0; c2 < nr; c2++) {
                            int i = real[a], j = real[c2];
                            int ki = tpos[i] / C, kj = tpos[j] / C;
                            int prev = ki > 0 ? ki - 1 : (nc > 1 ? nc - 1 : -1);
                            if (kj == ki || kj == prev) cnt[(size_t)i * N + j]++;
                        }
                } else {
                    /* Rank within the bucket by position; chunk = rank / C; own and previous chunk of
                     * the same bucket, keys j <= i. */
                    for (int a = 0; a < nr; a++) {
                        int i = real[a];
                        rank[i] = 0;
                        for (int c2 = 0; c2 < a; c2++) rank[i] += bucket[real[c2]] == bucket[i];
                    }
                    for (int a = 0; a < nr; a++)
                        for (int c2 = 0; c2 <= a; c2++) {
                            int i = real[a], j = real[c2];
                            if (bucket[i] != bucket[j]) continue;
                            int ki = rank[i] / C, kj = rank[j] / C;
                            if (kj == ki || kj == ki - 1) cnt[(size_t)i * N + j]++;
                        }
                }
            }
            for (int a = 0; a < nr; a++) {
                int i = real[a];
                double m = -INFINITY;
                for (int j = 0; j < N; j++) {
                    if (!cnt[(size_t)i * N + j]) continue;
                    double sc = 0;
                    for (int e = 0; e < Dh; e++) sc += (double)qb[(size_t)i * Dh + e] * kh[(size_t)j * Dh + e];
                    w[j] = (!p->lra_logits && j == i) ? (double)RF_SELF_LOGIT : scale * sc;
                    if (w[j] > m) m = w[j];
                }
                double den = 0;
                for (int e = 0; e < Dh; e++) acc[e] = 0;
                for (int j = 0; j < N; j++) {
                    if (!cnt[(size_t)i * N + j]) continue;
                    double pj = cnt[(size_t)i * N + j] * exp(w[j] - m);
                    den += pj;
                    pj *= attn_dropout_scale(L, b, h, i, j);
                    for (int e = 0; e < Dh; e++) acc[e] += pj * vb[(size_t)j * Dh + e];
                }
                for (int e = 0; e < Dh; e++) ob[(size_t)i * Dh + e] = (float)(acc[e] / den);
            }
        }
    free(cnt); free(bucket); free(tpos); free(rank); free(real); free(items); free(kh); free(w); free(acc); free(proj);
}

const attn_ops attn_reformer = {
    .name = "reformer",
    .summary = "Reformer LSH attention: shared QK hashed into buckets, sorted chunks attend to themselves and one back",
    .source = "Kitaev, Kaiser, Levskaya 2020, Reformer: The Efficient Transformer, arXiv 2001.04451",
    .schema = reformer_schema,
    .n_schema = (int)LRA_ARRAY_LEN(reformer_schema),
    .params_size = sizeof(reformer_params),
    .caps = ATTN_CAP_CAUSAL | ATTN_CAP_KEY_MASK | ATTN_CAP_DROPOUT,
    .validate = reformer_validate,
    .n_weights = NULL,
    .state_bytes = reformer_state_bytes,
    .cache_bytes = reformer_cache_bytes,
    .scratch_bytes = reformer_scratch_bytes,
    .flops = reformer_flops,
    .init = NULL,
    .begin = reformer_begin,
    .forward = reformer_forward,
    .backward = reformer_backward,
    .reference = reformer_reference,
};
