/* lm.c - the causal byte-level language model: tensor table, arena layout, forward, backward,
 * segment memory (Transformer-XL / Compressive), AdamW update, bits-per-byte evaluation.
 * See lm.h for the architecture and the letters used in shape comments. */
#include "lm.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "compress.h"
#include "layers.h"
#include "optim.h"
#include "relattn.h"
#include "rng.h"

enum { LM_INIT_COMP = 100 }; /* compressor weights: compress_init */

/* ---------------------------------------------------------------------------------------------
 * Tensor table */

static void decl(lm_t *m, const char *name, int layer, size_t n, float **p, float **g, int decay, int init,
                 float arg) {
    LRA_CHECK(m->n_tensors < MODEL_MAX_TENSORS, "too many tensors");
    tensor_decl *t = &m->tensors[m->n_tensors++];
    t->name = name;
    t->layer = layer;
    t->n = n;
    t->ptr = p;
    t->gptr = g;
    t->decay = decay;
    t->init = init;
    t->init_arg = arg;
}

static compress_cfg comp_cfg(const lm_t *m) {
    compress_cfg cc = {m->cfg->model.compression, m->cr, m->D};
    return cc;
}

static void declare_tensors(lm_t *m) {
    const model_cfg *mc = &m->cfg->model;
    size_t D = (size_t)m->D, F = (size_t)m->F;
    m->n_tensors = 0;
    decl(m, "wte", -1, (size_t)LM_VOCAB * D, &m->wte, &m->g_wte, 0, INIT_NORMAL, mc->emb_init_std);
    if (m->memory == MEMORY_NONE && mc->pos == POS_LEARNED)
        decl(m, "wpe", -1, (size_t)m->L * D, &m->wpe, &m->g_wpe, 0, INIT_NORMAL, 0.02f);
    if (m->memory != MEMORY_NONE) {
        /* Transformer-XL r_w_bias (u) and r_r_bias (v), shared by all layers; TXL init N(0, 0.02). */
        decl(m, "r_w_bias", -1, D, &m->u, &m->g_u, 0, INIT_NORMAL, 0.02f);
        decl(m, "r_r_bias", -1, D, &m->vb, &m->g_vb, 0, INIT_NORMAL, 0.02f);
    }
    for (int l = 0; l < m->NL; l++) {
        lm_block_params *b = &m->blk[l], *g = &m->gblk[l];
        decl(m, "ln1_w", l, D, &b->ln1_w, &g->ln1_w, 0, INIT_ONE, 0);
        decl(m, "ln1_b", l, D, &b->ln1_b, &g->ln1_b, 0, INIT_ZERO, 0);
        decl(m, "wq", l, D * D, &b->wq, &g->wq, 1, INIT_XAVIER, 0);
        decl(m, "wk", l, D * D, &b->wk, &g->wk, 1, INIT_XAVIER, 0);
        decl(m, "wv", l, D * D, &b->wv, &g->wv, 1, INIT_XAVIER, 0);
        decl(m, "wo", l, D * D, &b->wo, &g->wo, 1, INIT_XAVIER, 0);
        decl(m, "ln2_w", l, D, &b->ln2_w, &g->ln2_w, 0, INIT_ONE, 0);
        decl(m, "ln2_b", l, D, &b->ln2_b, &g->ln2_b, 0, INIT_ZERO, 0);
        decl(m, "w1", l, F * D, &b->w1, &g->w1, 1, INIT_XAVIER, 0);
        decl(m, "b1", l, F, &b->b1, &g->b1, 0, INIT_ZERO, 0);
        decl(m, "w2", l, D * F, &b->w2, &g->w2, 1, INIT_XAVIER, 0);
        decl(m, "b2", l, D, &b->b2, &g->b2, 0, INIT_ZERO, 0);
        if (m->memory == MEMORY_NONE) {
            const attn_ops *ops = m->attn[l].ops;
            size_t nw = ops->n_weights ? ops->n_weights(m->attn[l].params, &m->attn[l].shape) : 0;
            if (nw) decl(m, "attn_w", l, nw, &b->attn_w, &g->attn_w, 0, INIT_ATTN, 0);
        } else {
            decl(m, "w_r", l, D * D, &b->w_r, &g->w_r, 1, INIT_XAVIER, 0);
        }
        if (m->n_comp) decl(m, "compress_w", l, m->n_comp, &b->comp_w, &g->comp_w, 0, LM_INIT_COMP, 0);
    }
    decl(m, "lnf_w", -1, D, &m->lnf_w, &m->g_lnf_w, 0, INIT_ONE, 0);
    decl(m, "lnf_b", -1, D, &m->lnf_b, &m->g_lnf_b, 0, INIT_ZERO, 0);
    decl(m, "head_w", -1, (size_t)LM_CLASSES * D, &m->head_w, &m->g_head_w, 1, INIT_XAVIER, 0);
    decl(m, "head_b", -1, LM_CLASSES, &m->head_b, &m->g_head_b, 0, INIT_ZERO, 0);
}

/* Each tensor draws from its own sub-stream (name, layer), as in model.c. */
static void init_params(lm_t *m) {
    compress_cfg cc = comp_cfg(m);
    for (int i = 0; i < m->n_tensors; i++) {
        tensor_decl *t = &m->tensors[i];
        float *p = *t->ptr;
        uint64_t name_h = lra_fnv1a(LRA_FNV_INIT, t->name, strlen(t->name));
        rng_t r = rng_make(m->seed, rng_substream(RNG_INIT, name_h, (uint64_t)(t->layer + 1)));
        switch (t->init) {
        case INIT_ZERO: memset(p, 0, t->n * sizeof(float)); break;
        case INIT_ONE:
            for (size_t j = 0; j < t->n; j++) p[j] = 1.0f;
            break;
        case INIT_NORMAL:
            for (size_t j = 0; j < t->n; j++) p[j] = (float)(rng_normal(&r) * t->init_arg);
            break;
        case INIT_XAVIER: {
            int fi = m->D, fo = m->D;
            if (!strcmp(t->name, "w1")) fo = m->F;
            else if (!strcmp(t->name, "w2")) fi = m->F;
            else if (!strcmp(t->name, "head_w")) fo = LM_CLASSES;
            double lim = sqrt(6.0 / (fi + fo));
            for (size_t j = 0; j < t->n; j++) p[j] = (float)((2.0 * rng_double(&r) - 1.0) * lim);
            break;
        }
        case INIT_ATTN:
            if (m->attn[t->layer].ops->init) m->attn[t->layer].ops->init(&m->attn[t->layer], &r);
            break;
        case LM_INIT_COMP: compress_init(&cc, p, &r); break;
        default: LRA_CHECK(0, "bad init kind");
        }
    }
}

/* ---------------------------------------------------------------------------------------------
 * Layout: the same code runs in measuring mode and for real */

static relattn_cfg rel_cfg(const lm_t *m, int Mc) {
    relattn_cfg rc;
    memset(&rc, 0, sizeof rc);
    rc.B = m->B;
    rc.H = m->H;
    rc.L = m->L;
    rc.Dh = m->Dh;
    rc.Mc = Mc;
    rc.clamp_len = m->cfg->model.clamp_len;
    rc.same_length = m->cfg->model.same_length;
    rc.mem_len = m->M + m->C;
    rc.scale = 0.0f;
    return rc;
}

static void layout(lm_t *m, int nthreads) {
    arena_t *P = &m->arenas[MEM_PARAMS], *G = &m->arenas[MEM_GRADS], *O = &m->arenas[MEM_OPTIM];
    arena_t *A = &m->arenas[MEM_ACTS], *S = &m->arenas[MEM_SCRATCH];
    size_t B = (size_t)m->B, L = (size_t)m->L, D = (size_t)m->D, F = (size_t)m->F, Km = (size_t)m->Kmax;
    size_t BL = B * L, BK = B * Km;

    for (int i = 0; i < m->n_tensors; i++) {
        tensor_decl *t = &m->tensors[i];
        *t->ptr = arena_floats(P, t->n);
        *t->gptr = arena_floats(G, t->n);
    }
    m->n_params = P->used / sizeof(float);
    for (int l = 0; m->memory == MEMORY_NONE && l < m->NL; l++) {
        attn_layer *al = &m->attn[l];
        size_t sb = al->ops->state_bytes ? al->ops->state_bytes(al->params, &al->shape) : 0;
        al->state = sb ? arena_alloc(P, sb) : NULL;
    }
    m->best = arena_floats(P, m->n_params);
    m->adam_m = arena_floats(O, m->n_params);
    m->adam_v = arena_floats(O, m->n_params);

    /* segment memory state (two sets: training streams, evaluation streams) */
    lm_memory *sets[2] = {&m->mem_train, &m->mem_eval};
    for (int s = 0; s < 2; s++)
        for (int l = 0; l < m->NL; l++) {
            sets[s]->mem[l] = m->M ? arena_floats(A, B * (size_t)m->M * D) : NULL;
            sets[s]->cmem[l] = m->C ? arena_floats(A, B * (size_t)m->C * D) : NULL;
        }

    m->ids = arena_alloc(A, BL * sizeof(int32_t));
    m->targets = arena_alloc(A, BL * sizeof(int32_t));
    if (m->memory == MEMORY_NONE && m->cfg->model.pos == POS_SINUSOIDAL) m->pe_fixed = arena_floats(A, L * D);
    if (m->memory != MEMORY_NONE) m->rpos = arena_floats(A, Km * D);
    relattn_cfg rc = rel_cfg(m, m->M + m->C);
    for (int l = 0; l < m->NL; l++) {
        lm_block_acts *a = &m->act[l];
        a->res_in = arena_floats(A, BL * D);
        a->cat = arena_floats(A, BK * D);
        a->ln1 = arena_floats(A, BK * D);
        a->ln1_mean = arena_floats(A, BK);
        a->ln1_rstd = arena_floats(A, BK);
        a->lnq = arena_floats(A, BL * D);
        a->q = arena_floats(A, BL * D);
        a->k = arena_floats(A, BK * D);
        a->v = arena_floats(A, BK * D);
        a->r = m->memory != MEMORY_NONE ? arena_floats(A, Km * D) : NULL;
        a->att = arena_floats(A, BL * D);
        a->atty = arena_floats(A, BL * D);
        a->res_mid = arena_floats(A, BL * D);
        a->ln2 = arena_floats(A, BL * D);
        a->ln2_mean = arena_floats(A, BL);
        a->ln2_rstd = arena_floats(A, BL);
        a->h = arena_floats(A, BL * F);
        a->g = arena_floats(A, BL * F);
        size_t cb;
        if (m->memory == MEMORY_NONE) {
            attn_layer *al = &m->attn[l];
            cb = al->ops->cache_bytes ? al->ops->cache_bytes(al->params, &al->shape) : 0;
        } else {
            cb = relattn_cache_bytes(&rc);
        }
        a->attn_cache = cb ? arena_alloc(A, cb) : NULL;
    }
    m->res_out = arena_floats(A, BL * D);
    m->lnf = arena_floats(A, BL * D);
    m->lnf_mean = arena_floats(A, BL);
    m->lnf_rstd = arena_floats(A, BL);
    m->logits = arena_floats(A, BL * LM_CLASSES);
    m->probs = arena_floats(A, BL * LM_CLASSES);
    m->losses = arena_floats(A, BL);

    m->d_res = arena_floats(S, BL * D);
    m->d_tmp = arena_floats(S, BK * D);
    m->d_tmp2 = arena_floats(S, BK * D);
    m->d_ln1 = arena_floats(S, BK * D);
    m->d_q = arena_floats(S, BL * D);
    m->d_k = arena_floats(S, BK * D);
    m->d_v = arena_floats(S, BK * D);
    m->d_att = arena_floats(S, BL * D);
    m->d_h = arena_floats(S, BL * F);
    m->d_g = arena_floats(S, BL * F);
    m->d_logits = arena_floats(S, BL * LM_CLASSES);
    m->d_r = m->memory != MEMORY_NONE ? arena_floats(S, Km * D) : NULL;
    size_t sb = 0;
    if (m->memory == MEMORY_NONE) {
        for (int l = 0; l < m->NL; l++) {
            attn_layer *al = &m->attn[l];
            size_t x = al->ops->scratch_bytes ? al->ops->scratch_bytes(al->params, &al->shape, nthreads) : 0;
            if (x > sb) sb = x;
        }
    } else {
        sb = relattn_scratch_bytes(&rc);
    }
    m->attn_scratch = sb ? arena_alloc(S, sb) : NULL;
    if (m->memory == MEMORY_COMPRESSIVE) {
        /* evicted rows (B, <= L, D), new slots (B, <= L/c, D), f_c work, reconstruction work */
        compress_cfg cc = comp_cfg(m);
        size_t wb = compress_work_bytes(&cc, m->B, m->L);
        size_t rb = compress_recon_work_bytes(&cc, m->B, m->L, m->L, m->H, m->Dh);
        m->comp_scratch_floats = BL * D + B * (L / (size_t)m->cr) * D + (wb > rb ? wb : rb) / sizeof(float) + 16;
        m->comp_scratch = arena_floats(S, m->comp_scratch_floats);
    }
}

int lm_build(lm_t *m, const run_cfg *c, int B, long long max_mem, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    const model_cfg *mc = &c->model;
    m->cfg = c;
    m->memory = mc->memory;
    m->seed = (uint64_t)c->train.seed;
    m->B = B;
    m->L = c->task.seq_len;
    m->D = mc->d_model;
    m->H = mc->n_heads;
    m->Dh = m->D / m->H;
    m->F = mc->d_ff;
    m->NL = mc->n_layers;
    m->M = m->memory != MEMORY_NONE ? mc->mem_len : 0;
    m->C = m->memory == MEMORY_COMPRESSIVE ? mc->cmem_len : 0;
    m->cr = mc->compression_rate;
    m->Kmax = m->L + m->M + m->C;
    m->last_recon = NAN;
    m->mem = &m->mem_train;
    if (m->NL > MODEL_MAX_LAYERS) return lra_errorf(err, errlen, "model.n_layers: at most %d", MODEL_MAX_LAYERS);
    if (m->D % m->H) return lra_errorf(err, errlen, "model.n_heads: d_model %d is not divisible by n_heads %d", m->D, m->H);

    if (m->memory == MEMORY_NONE) {
        if (!(c->attn_ops->caps & ATTN_CAP_CAUSAL))
            return lra_errorf(err, errlen,
                              "attention '%s' does not support causal attention, which language modelling needs",
                              c->attn_ops->name);
        for (int l = 0; l < m->NL; l++) {
            attn_layer *al = &m->attn[l];
            al->ops = c->attn_ops;
            al->params = c->attn_params.bytes;
            memset(&al->shape, 0, sizeof al->shape);
            al->shape.B = B;
            al->shape.H = m->H;
            al->shape.N = al->shape.Nk = m->L;
            al->shape.Dh = m->Dh;
            al->shape.causal = 1;
            al->shape.layer = l;
            al->shape.n_layers = m->NL;
            al->shape.max_len = m->L;
            al->seed = m->seed;
            al->dropout = mc->attn_dropout;
            if (al->ops->validate && al->ops->validate(al->params, &al->shape, err, errlen)) return -1;
        }
    } else {
        if (strcmp(c->attn_ops->name, "softmax"))
            return lra_errorf(err, errlen,
                              "attention '%s' cannot be used with model.memory %s: the relative attention over "
                              "[memory; segment] is exact softmax (use attention: softmax)",
                              c->attn_ops->name, m->memory == MEMORY_XL ? "xl" : "compressive");
        if (m->M <= 0) return lra_errorf(err, errlen, "model.mem_len: must be > 0 with model.memory xl/compressive");
        if (m->D % 2) return lra_errorf(err, errlen, "model.d_model: relative positions need an even d_model, got %d", m->D);
        relattn_cfg rc = rel_cfg(m, m->M + m->C);
        if (relattn_check(&rc, err, errlen)) return -1;
        if (m->memory == MEMORY_COMPRESSIVE) {
            if (m->C <= 0) return lra_errorf(err, errlen, "model.cmem_len: must be > 0 with model.memory compressive");
            compress_cfg cc = comp_cfg(m);
            if (compress_check(&cc, m->L, err, errlen) || compress_check(&cc, m->M, err, errlen)) return -1;
            m->n_comp = compress_n_params(&cc);
        }
    }
    declare_tensors(m);

    int nthreads = lra_threads();
    static const char *names[MEM_N_CATEGORIES] = {"params", "grads", "optimizer", "activations", "scratch", "data"};
    for (int i = 0; i < MEM_N_CATEGORIES; i++) arena_measure(&m->arenas[i], names[i]);
    layout(m, nthreads);
    m->n_params_real = 0;
    for (int i = 0; i < m->n_tensors; i++) m->n_params_real += m->tensors[i].n;

    size_t total = lm_planned_total(m);
    if (max_mem > 0 && (long long)total > max_mem) {
        char a[32], b[32];
        return lra_errorf(err, errlen, "the model needs %s of planned memory > --max-mem %s",
                          lra_fmt_bytes((double)total, a, sizeof a), lra_fmt_bytes((double)max_mem, b, sizeof b));
    }
    for (int i = 0; i < MEM_N_CATEGORIES; i++) arena_commit(&m->arenas[i]);
    layout(m, nthreads);
    for (int l = 0; m->memory == MEMORY_NONE && l < m->NL; l++) {
        m->attn[l].w = m->blk[l].attn_w;
        m->attn[l].dw = m->gblk[l].attn_w;
        m->attn[l].cache = m->act[l].attn_cache;
        m->attn[l].scratch = m->attn_scratch;
    }
    if (m->pe_fixed) posenc_sinusoidal(m->pe_fixed, m->L, m->D);
    init_params(m);

    /* Forward FLOPs per segment batch with full memory (multiply-add = 2). */
    double BL = (double)B * m->L, D = m->D, F = m->F, K = m->Kmax;
    m->fwd_flops = 0;
    for (int l = 0; l < m->NL; l++) {
        m->fwd_flops += 2.0 * BL * (2.0 * D * D + 2.0 * D * F) + 2.0 * B * K * 2.0 * D * D;
        if (m->memory == MEMORY_NONE) {
            const attn_layer *al = &m->attn[l];
            if (al->ops->flops) m->fwd_flops += al->ops->flops(al->params, &al->shape);
        } else {
            relattn_cfg rc = rel_cfg(m, m->M + m->C);
            m->fwd_flops += relattn_flops(&rc) + 2.0 * K * D * D;
        }
    }
    m->fwd_flops += 2.0 * BL * D * LM_CLASSES;
    return 0;
}

void lm_free(lm_t *m) {
    for (int i = 0; i < MEM_N_CATEGORIES; i++) arena_free(&m->arenas[i]);
}

size_t lm_planned_bytes(const lm_t *m, mem_category c) {
    const arena_t *a = &m->arenas[c];
    return a->measuring ? a->peak : a->cap;
}

size_t lm_planned_total(const lm_t *m) {
    size_t t = 0;
    for (int i = 0; i < MEM_N_CATEGORIES; i++) t += lm_planned_bytes(m, (mem_category)i);
    return t;
}

void lm_print_plan(const lm_t *m, FILE *f) {
    static const char *mem_names[] = {"none", "xl", "compressive"};
    char buf[32], b2[32];
    const model_cfg *mc = &m->cfg->model;
    fprintf(f, "model: causal LM, %s, memory %s, %d layers, d_model %d, %d heads (Dh %d), d_ff %d, segment %d, "
               "%d streams\n",
            m->cfg->attn_label, mem_names[m->memory], m->NL, m->D, m->H, m->Dh, m->F, m->L, m->B);
    if (m->memory != MEMORY_NONE)
        fprintf(f, "model: mem_len %d, attention span %d positions (segment + mem_len%s; clamp_len %d, same_length %s)\n",
                m->M, m->L + m->M + (m->memory == MEMORY_COMPRESSIVE ? m->cr * m->C : 0),
                m->memory == MEMORY_COMPRESSIVE ? " + compression_rate x cmem_len" : "", mc->clamp_len,
                mc->same_length ? "true" : "false");
    if (m->memory == MEMORY_COMPRESSIVE) {
        char kb[32];
        fprintf(f, "model: cmem_len %d, compression %s at rate %d (%zu parameters per layer), recon_weight %g\n", m->C,
                schema_enum_name("max|mean|conv|dilated_conv", mc->compression, kb, sizeof kb), m->cr, m->n_comp,
                (double)mc->recon_weight);
    }
    fprintf(f, "model: %zu parameters, forward %.3f GFLOP per segment batch (%.1f kFLOP per byte)\n", m->n_params_real,
            m->fwd_flops * 1e-9, m->fwd_flops / ((double)m->B * m->L) * 1e-3);
    double state = 2.0 * m->NL * (double)m->B * (m->M + m->C) * m->D * sizeof(float);
    fprintf(f, "  segment memory state: %s (2 sets x %d layers x %d streams x %d rows x d_model %d)\n",
            lra_fmt_bytes(state, buf, sizeof buf), m->NL, m->B, m->M + m->C, m->D);
    double act = (double)m->B * ((double)m->L * (10.0 * m->D + 2.0 * m->F) + 5.0 * m->Kmax * m->D) * sizeof(float);
    fprintf(f, "  per block: activations %s, keys per query up to %d\n", lra_fmt_bytes(act, b2, sizeof b2), m->Kmax);
    fprintf(f, "memory plan:");
    for (int i = 0; i < MEM_N_CATEGORIES; i++) {
        if (i == MEM_DATA) continue;
        fprintf(f, " %s %s;", mem_category_name((mem_category)i),
                lra_fmt_bytes((double)lm_planned_bytes(m, (mem_category)i), buf, sizeof buf));
    }
    fprintf(f, " total %s\n", lra_fmt_bytes((double)lm_planned_total(m), buf, sizeof buf));
}

/* ---------------------------------------------------------------------------------------------
 * Helpers */

/* dst(B, rows, D) = src(B, K, D)[:, off:off+rows, :]  (copy == 1), or dst += that (copy == 0). */
static void gather_rows(float *dst, const float *src, int B, int K, int off, int rows, int D, int copy) {
    for (int b = 0; b < B; b++) {
        float *d = dst + (size_t)b * rows * D;
        const float *s = src + ((size_t)b * K + off) * D;
        if (copy) memcpy(d, s, sizeof(float) * (size_t)rows * D);
        else add_inplace(d, s, (size_t)rows * D);
    }
}

enum { SITE_EMB = 0, SITE_ATTN_OUT = 1, SITE_FFN_ACT = 2, SITE_FFN_OUT = 3 };
static uint64_t drop_stream(const lm_t *m, int site, int layer) {
    return rng_substream(RNG_DROPOUT, (uint64_t)(layer + 1) * 16 + (uint64_t)site, (uint64_t)m->step);
}

/* ---------------------------------------------------------------------------------------------
 * Forward / backward */

double lm_forward(lm_t *m, int training) {
    const model_cfg *mc = &m->cfg->model;
    int B = m->B, L = m->L, D = m->D, F = m->F, H = m->H, Dh = m->Dh, BL = B * L;
    float p = training ? mc->dropout : 0.0f;
    m->drop_p = p;
    lm_memory *ms = m->mem;
    int nc = ms->n_cmem, nm = ms->n_mem, Mc = nc + nm, K = Mc + L;
    m->K = K;

    float *x = m->act[0].res_in;
    embedding_forward(x, m->ids, m->wte, BL, D);
    if (m->memory == MEMORY_NONE && mc->pos == POS_SINUSOIDAL) add_positions_forward(x, m->pe_fixed, B, L, D);
    else if (m->memory == MEMORY_NONE && mc->pos == POS_LEARNED) add_positions_forward(x, m->wpe, B, L, D);
    dropout_forward(x, x, (size_t)BL * D, p, m->seed, drop_stream(m, SITE_EMB, -1));
    relattn_cfg rc = rel_cfg(m, Mc);
    if (m->memory != MEMORY_NONE) relattn_pos_emb(m->rpos, K, D, mc->clamp_len);

    for (int l = 0; l < m->NL; l++) {
        lm_block_params *w = &m->blk[l];
        lm_block_acts *a = &m->act[l];
        float *out = l + 1 < m->NL ? m->act[l + 1].res_in : m->res_out;
        /* cat = [cmem; mem; x] per stream */
        for (int b = 0; b < B; b++) {
            float *dst = a->cat + (size_t)b * K * D;
            if (nc) memcpy(dst, ms->cmem[l] + (size_t)b * m->C * D, sizeof(float) * (size_t)nc * D);
            if (nm) memcpy(dst + (size_t)nc * D, ms->mem[l] + (size_t)b * m->M * D, sizeof(float) * (size_t)nm * D);
            memcpy(dst + (size_t)Mc * D, a->res_in + (size_t)b * L * D, sizeof(float) * (size_t)L * D);
        }
        layernorm_forward(a->ln1, a->ln1_mean, a->ln1_rstd, a->cat, w->ln1_w, w->ln1_b, B * K, D);
        gather_rows(a->lnq, a->ln1, B, K, Mc, L, D, 1);
        linear_forward(m->d_tmp, a->lnq, w->wq, NULL, BL, D, D);
        heads_split(a->q, m->d_tmp, B, L, H, Dh);
        linear_forward(m->d_tmp, a->ln1, w->wk, NULL, B * K, D, D);
        heads_split(a->k, m->d_tmp, B, K, H, Dh);
        linear_forward(m->d_tmp, a->ln1, w->wv, NULL, B * K, D, D);
        heads_split(a->v, m->d_tmp, B, K, H, Dh);

        if (m->memory == MEMORY_NONE) {
            attn_layer *al = &m->attn[l];
            al->training = training;
            al->step = m->step;
            if (al->ops->begin) al->ops->begin(al);
            al->ops->forward(al, a->q, a->k, a->v, NULL, a->att);
        } else {
            linear_forward(a->r, m->rpos, w->w_r, NULL, K, D, D); /* r = R W_r, (K, H, Dh) */
            relattn_forward(&rc, a->q, a->k, a->v, a->r, m->u, m->vb, a->att, a->attn_cache, m->attn_scratch);
        }
        heads_merge(a->atty, a->att, B, L, H, Dh);
        linear_forward(m->d_tmp, a->atty, w->wo, NULL, BL, D, D);
        dropout_forward(m->d_tmp, m->d_tmp, (size_t)BL * D, p, m->seed, drop_stream(m, SITE_ATTN_OUT, l));
        residual_forward(a->res_mid, a->res_in, m->d_tmp, (size_t)BL * D);

        layernorm_forward(a->ln2, a->ln2_mean, a->ln2_rstd, a->res_mid, w->ln2_w, w->ln2_b, BL, D);
        linear_forward(a->h, a->ln2, w->w1, w->b1, BL, D, F);
        gelu_forward(a->g, a->h, (size_t)BL * F);
        dropout_forward(a->g, a->g, (size_t)BL * F, p, m->seed, drop_stream(m, SITE_FFN_ACT, l));
        linear_forward(m->d_tmp, a->g, w->w2, w->b2, BL, F, D);
        dropout_forward(m->d_tmp, m->d_tmp, (size_t)BL * D, p, m->seed, drop_stream(m, SITE_FFN_OUT, l));
        residual_forward(out, a->res_mid, m->d_tmp, (size_t)BL * D);
    }
    layernorm_forward(m->lnf, m->lnf_mean, m->lnf_rstd, m->res_out, m->lnf_w, m->lnf_b, BL, D);
    linear_forward(m->logits, m->lnf, m->head_w, m->head_b, BL, D, LM_CLASSES);
    crossentropy_forward(m->losses, m->probs, m->logits, m->targets, BL, LM_CLASSES);
    double sum = 0;
    int n = 0;
    for (int i = 0; i < BL; i++)
        if (m->targets[i] >= 0) {
            sum += m->losses[i];
            n++;
        }
    m->n_counted = n;
    return n ? sum / n : 0.0;
}

void lm_backward(lm_t *m) {
    const model_cfg *mc = &m->cfg->model;
    int B = m->B, L = m->L, D = m->D, F = m->F, H = m->H, Dh = m->Dh, BL = B * L;
    int K = m->K, Mc = K - L;
    float p = m->drop_p;
    relattn_cfg rc = rel_cfg(m, Mc);
    crossentropy_backward(m->d_logits, m->probs, m->targets, BL, LM_CLASSES,
                          m->n_counted ? 1.0f / (float)m->n_counted : 0.0f);
    linear_backward(m->d_tmp, m->g_head_w, m->g_head_b, m->d_logits, m->lnf, m->head_w, BL, D, LM_CLASSES);
    layernorm_backward(m->d_res, m->g_lnf_w, m->g_lnf_b, m->d_tmp, m->res_out, m->lnf_w, m->lnf_mean, m->lnf_rstd, BL,
                       D);

    for (int l = m->NL - 1; l >= 0; l--) {
        lm_block_params *w = &m->blk[l], *g = &m->gblk[l];
        lm_block_acts *a = &m->act[l];
        /* out = res_mid + drop(W2 g + b2) */
        dropout_backward(m->d_tmp, m->d_res, (size_t)BL * D, p, m->seed, drop_stream(m, SITE_FFN_OUT, l));
        linear_backward(m->d_g, g->w2, g->b2, m->d_tmp, a->g, w->w2, BL, F, D);
        dropout_backward(m->d_g, m->d_g, (size_t)BL * F, p, m->seed, drop_stream(m, SITE_FFN_ACT, l));
        gelu_backward(m->d_h, a->h, m->d_g, (size_t)BL * F);
        linear_backward(m->d_tmp, g->w1, g->b1, m->d_h, a->ln2, w->w1, BL, D, F);
        layernorm_backward(m->d_tmp2, g->ln2_w, g->ln2_b, m->d_tmp, a->res_mid, w->ln2_w, a->ln2_mean, a->ln2_rstd,
                           BL, D);
        add_inplace(m->d_res, m->d_tmp2, (size_t)BL * D); /* d(res_mid) */

        /* res_mid = res_in + drop(Wo atty) */
        dropout_backward(m->d_tmp, m->d_res, (size_t)BL * D, p, m->seed, drop_stream(m, SITE_ATTN_OUT, l));
        linear_backward(m->d_tmp2, g->wo, NULL, m->d_tmp, a->atty, w->wo, BL, D, D);
        heads_split(m->d_att, m->d_tmp2, B, L, H, Dh);
        if (m->memory == MEMORY_NONE) {
            attn_layer *al = &m->attn[l];
            al->ops->backward(al, a->q, a->k, a->v, NULL, a->att, m->d_att, m->d_q, m->d_k, m->d_v);
        } else {
            relattn_backward(&rc, a->q, a->k, a->v, a->r, m->u, m->vb, a->att, m->d_att, a->attn_cache,
                             m->attn_scratch, m->d_q, m->d_k, m->d_v, m->d_r, m->g_u, m->g_vb);
            linear_backward(NULL, g->w_r, NULL, m->d_r, m->rpos, w->w_r, K, D, D); /* dW_r += dr^T R */
        }

        /* d(ln1) over all K rows: keys and values of memory rows train LN1/W_k/W_v too */
        heads_merge(m->d_tmp, m->d_k, B, K, H, Dh);
        linear_backward(m->d_ln1, g->wk, NULL, m->d_tmp, a->ln1, w->wk, B * K, D, D);
        heads_merge(m->d_tmp, m->d_v, B, K, H, Dh);
        linear_backward(m->d_tmp2, g->wv, NULL, m->d_tmp, a->ln1, w->wv, B * K, D, D);
        add_inplace(m->d_ln1, m->d_tmp2, (size_t)B * K * D);
        heads_merge(m->d_tmp, m->d_q, B, L, H, Dh);
        linear_backward(m->d_tmp2, g->wq, NULL, m->d_tmp, a->lnq, w->wq, BL, D, D);
        for (int b = 0; b < B; b++) /* queries are the segment rows */
            add_inplace(m->d_ln1 + ((size_t)b * K + Mc) * D, m->d_tmp2 + (size_t)b * L * D, (size_t)L * D);
        layernorm_backward(m->d_tmp, g->ln1_w, g->ln1_b, m->d_ln1, a->cat, w->ln1_w, a->ln1_mean, a->ln1_rstd, B * K,
                           D);
        /* segment rows reach the residual stream; memory rows stop here (stop-gradient) */
        for (int b = 0; b < B; b++)
            add_inplace(m->d_res + (size_t)b * L * D, m->d_tmp + ((size_t)b * K + Mc) * D, (size_t)L * D);
    }
    dropout_backward(m->d_res, m->d_res, (size_t)BL * D, p, m->seed, drop_stream(m, SITE_EMB, -1));
    if (m->memory == MEMORY_NONE && mc->pos == POS_LEARNED) add_positions_backward(m->g_wpe, m->d_res, B, L, D);
    embedding_backward(m->g_wte, m->d_res, m->ids, BL, D, LM_VOCAB);
}

/* ---------------------------------------------------------------------------------------------
 * Segment memory */

void lm_memory_reset(lm_t *m) {
    m->mem->n_mem = 0;
    m->mem->n_cmem = 0;
}

void lm_memory_select(lm_t *m, int eval) {
    m->mem = eval ? &m->mem_eval : &m->mem_train;
}

double lm_memory_update(lm_t *m, int training) {
    if (m->memory == MEMORY_NONE) return NAN;
    int B = m->B, L = m->L, D = m->D, M = m->M, C = m->C;
    lm_memory *ms = m->mem;
    int nc = ms->n_cmem, nm = ms->n_mem, K = nc + nm + L;
    LRA_CHECK(K == m->K, "lm_memory_update: the memory changed since the forward (K %d vs %d)", K, m->K);
    int tot = nm + L, n_ev = tot > M ? tot - M : 0, keep = tot - n_ev;
    int n_new = m->memory == MEMORY_COMPRESSIVE ? n_ev / m->cr : 0;
    int nc_after = LRA_MIN(C, nc + n_new);
    double recon = 0;
    int did_recon = 0;
    compress_cfg cc = comp_cfg(m);
    for (int l = 0; l < m->NL; l++) {
        lm_block_acts *a = &m->act[l];
        lm_block_params *w = &m->blk[l];
        if (m->memory == MEMORY_COMPRESSIVE && n_ev > 0) {
            float *old = m->comp_scratch;                         /* (B, n_ev, D) */
            float *nw = old + (size_t)B * L * D;                  /* (B, n_new, D) */
            float *work = nw + (size_t)B * (L / m->cr) * D;
            gather_rows(old, a->cat, B, K, nc, n_ev, D, 1);
            compress_forward(&cc, w->comp_w, old, B, n_ev, nw, work);
            if (training) {
                float rw = m->cfg->model.recon_weight / (float)m->NL;
                recon += compress_recon_loss(&cc, w->comp_w, m->n_comp ? m->gblk[l].comp_w : NULL, a->lnq, old, B, L,
                                             n_ev, m->H, m->Dh, w->wq, w->wk, w->wv, w->ln1_w, w->ln1_b, rw, work);
                did_recon = 1;
            }
            /* cmem = last C rows of [cmem; new] */
            for (int b = 0; b < B; b++) {
                float *cm = ms->cmem[l] + (size_t)b * C * D;
                int drop = nc + n_new - nc_after; /* oldest rows that fall out */
                if (drop < nc) memmove(cm, cm + (size_t)drop * D, sizeof(float) * (size_t)(nc - drop) * D);
                int kept_old = nc - drop > 0 ? nc - drop : 0;
                int skip_new = drop > nc ? drop - nc : 0;
                memcpy(cm + (size_t)kept_old * D, nw + ((size_t)b * n_new + skip_new) * D,
                       sizeof(float) * (size_t)(n_new - skip_new) * D);
            }
        }
        /* mem = last M rows of [mem; x] = cat rows [nc + n_ev, K) */
        for (int b = 0; b < B; b++)
            memcpy(ms->mem[l] + (size_t)b * M * D, a->cat + ((size_t)b * K + nc + n_ev) * D,
                   sizeof(float) * (size_t)keep * D);
    }
    ms->n_mem = keep;
    ms->n_cmem = nc_after;
    m->last_recon = did_recon ? recon / m->NL : NAN;
    return m->last_recon;
}

/* ---------------------------------------------------------------------------------------------
 * Optimisation */

void lm_zero_grad(lm_t *m) {
    arena_t *G = &m->arenas[MEM_GRADS];
    memset(G->base, 0, G->cap);
}

double lm_update(lm_t *m, float lr) {
    const train_cfg *t = &m->cfg->train;
    float *gbase = (float *)m->arenas[MEM_GRADS].base, *pbase = (float *)m->arenas[MEM_PARAMS].base;
    double norm = grad_clip(gbase, m->n_params, t->grad_clip);
    m->step++;
    for (int i = 0; i < m->n_tensors; i++) {
        const tensor_decl *td = &m->tensors[i];
        size_t off = (size_t)(*td->ptr - pbase);
        adamw_update(*td->ptr, gbase + off, m->adam_m + off, m->adam_v + off, td->n, lr, t->beta1, t->beta2, t->eps,
                     td->decay ? t->weight_decay : 0.0f, m->step);
    }
    return norm;
}

void lm_snapshot_best(lm_t *m) {
    memcpy(m->best, m->arenas[MEM_PARAMS].base, m->n_params * sizeof(float));
}

void lm_restore_best(lm_t *m) {
    memcpy(m->arenas[MEM_PARAMS].base, m->best, m->n_params * sizeof(float));
}

/* ---------------------------------------------------------------------------------------------
 * Data and evaluation */

void lm_load_stream(lm_t *m, int b, const uint8_t *src, size_t part_start, size_t part_len, size_t offset, int n) {
    int L = m->L;
    int32_t *ids = m->ids + (size_t)b * L, *tg = m->targets + (size_t)b * L;
    for (int t = 0; t < L; t++) {
        if (t < n && part_len > 0) {
            size_t i = part_start + (offset + (size_t)t) % part_len;
            ids[t] = (int32_t)src[i] + 1;
            tg[t] = (int32_t)src[i + 1];
        } else {
            ids[t] = 0;
            tg[t] = -1;
        }
    }
}

double lm_eval_bpb(lm_t *m, const uint8_t *s, size_t len, long long n_bytes, long long *n_pred) {
    size_t nb = (n_bytes <= 0 || (size_t)n_bytes > len) ? len : (size_t)n_bytes;
    if (n_pred) *n_pred = 0;
    if (nb < 2) return NAN;
    size_t T = nb - 1, P = T / (size_t)m->B;
    size_t last = T - P * (size_t)(m->B - 1);
    int L = m->L;
    size_t nseg = (last + (size_t)L - 1) / (size_t)L;
    lm_memory_select(m, 1);
    lm_memory_reset(m);
    double sum = 0;
    long long cnt = 0;
    for (size_t sg = 0; sg < nseg; sg++) {
        size_t off = sg * (size_t)L;
        for (int b = 0; b < m->B; b++) {
            size_t plen = b == m->B - 1 ? last : P, start = (size_t)b * P;
            int n = off < plen ? (int)LRA_MIN((size_t)L, plen - off) : 0;
            lm_load_stream(m, b, s, start, plen, off, n);
        }
        lm_forward(m, 0);
        for (int i = 0; i < m->B * L; i++)
            if (m->targets[i] >= 0) sum += m->losses[i];
        cnt += m->n_counted;
        lm_memory_update(m, 0);
    }
    lm_memory_select(m, 0);
    if (n_pred) *n_pred = cnt;
    return cnt ? sum / (double)cnt / log(2.0) : NAN;
}
