/* model.c - the Transformer encoder: tensor table, arena layout, forward, backward, update.
 * See model.h for the architecture and the letters used in shape comments. */
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"
#include "layers.h"
#include "optim.h"
#include "rng.h"

/* ---------------------------------------------------------------------------------------------
 * Tensor table */

static void decl(model_t *m, const char *name, int layer, size_t n, float **p, float **g, int decay, int init,
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

static void declare_tensors(model_t *m) {
    const model_cfg *mc = &m->cfg->model;
    size_t D = (size_t)m->D, F = (size_t)m->F;
    m->n_tensors = 0;
    decl(m, "wte", -1, (size_t)m->V * D, &m->wte, &m->g_wte, 0, INIT_NORMAL, mc->emb_init_std);
    if (mc->pos == POS_LEARNED) decl(m, "wpe", -1, (size_t)m->N * D, &m->wpe, &m->g_wpe, 0, INIT_NORMAL, 0.02f);
    for (int l = 0; l < m->L; l++) {
        block_params *b = &m->blk[l], *g = &m->gblk[l];
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
        const attn_ops *ops = m->attn[l].ops;
        size_t nw = ops->n_weights ? ops->n_weights(m->attn[l].params, &m->attn[l].shape) : 0;
        if (nw) decl(m, "attn_w", l, nw, &b->attn_w, &g->attn_w, 0, INIT_ATTN, 0);
    }
    decl(m, "lnf_w", -1, D, &m->lnf_w, &m->g_lnf_w, 0, INIT_ONE, 0);
    decl(m, "lnf_b", -1, D, &m->lnf_b, &m->g_lnf_b, 0, INIT_ZERO, 0);
    decl(m, "head_w1", -1, (size_t)m->M * m->head_in, &m->hw1, &m->g_hw1, 1, INIT_XAVIER, 0);
    decl(m, "head_b1", -1, (size_t)m->M, &m->hb1, &m->g_hb1, 0, INIT_ZERO, 0);
    decl(m, "head_w2", -1, (size_t)m->K * m->M, &m->hw2, &m->g_hw2, 1, INIT_XAVIER, 0);
    decl(m, "head_b2", -1, (size_t)m->K, &m->hb2, &m->g_hb2, 0, INIT_ZERO, 0);
}

/* fan_in/fan_out of a (out, in) matrix from the table entry. */
static void fans(const model_t *m, const tensor_decl *t, int *fan_in, int *fan_out) {
    int D = m->D, F = m->F;
    *fan_in = D;
    *fan_out = D;
    if (!strcmp(t->name, "w1")) *fan_in = D, *fan_out = F;
    else if (!strcmp(t->name, "w2")) *fan_in = F, *fan_out = D;
    else if (!strcmp(t->name, "head_w1")) *fan_in = m->head_in, *fan_out = m->M;
    else if (!strcmp(t->name, "head_w2")) *fan_in = m->M, *fan_out = m->K;
}

/* Each tensor draws from its own sub-stream (name, layer), so changing one part of the model (say
 * the mechanism's weights) never changes the initial values of the others. */
static void init_params(model_t *m) {
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
            int fi, fo;
            fans(m, t, &fi, &fo);
            double lim = sqrt(6.0 / (fi + fo));
            for (size_t j = 0; j < t->n; j++) p[j] = (float)((2.0 * rng_double(&r) - 1.0) * lim);
            break;
        }
        case INIT_ATTN:
            if (m->attn[t->layer].ops->init) m->attn[t->layer].ops->init(&m->attn[t->layer], &r);
            break;
        default: LRA_CHECK(0, "bad init kind");
        }
    }
    /* The CLS row of the embedding starts at zero (LRA: zero-initialised learned CLS vector). */
    if (m->use_cls) memset(m->wte + (size_t)(m->V - 1) * m->D, 0, sizeof(float) * (size_t)m->D);
}

/* ---------------------------------------------------------------------------------------------
 * Layout: the same code runs in measuring mode and for real */

static void layout(model_t *m, int nthreads) {
    arena_t *P = &m->arenas[MEM_PARAMS], *G = &m->arenas[MEM_GRADS], *O = &m->arenas[MEM_OPTIM];
    arena_t *A = &m->arenas[MEM_ACTS], *S = &m->arenas[MEM_SCRATCH];
    size_t R = (size_t)m->R, D = (size_t)m->D, F = (size_t)m->F, BeN = (size_t)m->Be * m->N;

    for (int i = 0; i < m->n_tensors; i++) {
        tensor_decl *t = &m->tensors[i];
        *t->ptr = arena_floats(P, t->n);
        *t->gptr = arena_floats(G, t->n);
    }
    m->n_params = P->used / sizeof(float);
    for (int l = 0; l < m->L; l++) {
        attn_layer *al = &m->attn[l];
        size_t sb = al->ops->state_bytes ? al->ops->state_bytes(al->params, &al->shape) : 0;
        al->state = sb ? arena_alloc(P, sb) : NULL;
    }
    m->best = arena_floats(P, m->n_params);
    m->adam_m = arena_floats(O, m->n_params);
    m->adam_v = arena_floats(O, m->n_params);

    m->ids = arena_alloc(A, BeN * sizeof(int32_t));
    m->mask = arena_alloc(A, BeN);
    m->targets = arena_alloc(A, (size_t)m->B * sizeof(int32_t));
    if (m->cfg->model.pos == POS_SINUSOIDAL) m->pe_fixed = arena_floats(A, (size_t)m->N * D);
    for (int l = 0; l < m->L; l++) {
        block_acts *a = &m->act[l];
        attn_layer *al = &m->attn[l];
        a->res_in = arena_floats(A, R * D);
        a->ln1 = arena_floats(A, R * D);
        a->ln1_mean = arena_floats(A, R);
        a->ln1_rstd = arena_floats(A, R);
        a->q = arena_floats(A, R * D);
        a->k = arena_floats(A, R * D);
        a->v = arena_floats(A, R * D);
        a->att = arena_floats(A, R * D);
        a->atty = arena_floats(A, R * D);
        a->res_mid = arena_floats(A, R * D);
        a->ln2 = arena_floats(A, R * D);
        a->ln2_mean = arena_floats(A, R);
        a->ln2_rstd = arena_floats(A, R);
        a->h = arena_floats(A, R * F);
        a->g = arena_floats(A, R * F);
        size_t cb = al->ops->cache_bytes ? al->ops->cache_bytes(al->params, &al->shape) : 0;
        a->attn_cache = cb ? arena_alloc(A, cb) : NULL;
    }
    m->res_out = arena_floats(A, R * D);
    m->lnf = arena_floats(A, R * D);
    m->lnf_mean = arena_floats(A, R);
    m->lnf_rstd = arena_floats(A, R);
    m->pooled = arena_floats(A, (size_t)m->Be * D);
    m->head_x = arena_floats(A, (size_t)m->B * m->head_in);
    m->head_h = arena_floats(A, (size_t)m->B * m->M);
    m->head_a = arena_floats(A, (size_t)m->B * m->M);
    m->logits = arena_floats(A, (size_t)m->B * m->K);
    m->probs = arena_floats(A, (size_t)m->B * m->K);
    m->losses = arena_floats(A, (size_t)m->B);

    m->d_res = arena_floats(S, R * D);
    m->d_tmp = arena_floats(S, R * D);
    m->d_tmp2 = arena_floats(S, R * D);
    m->d_q = arena_floats(S, R * D);
    m->d_k = arena_floats(S, R * D);
    m->d_v = arena_floats(S, R * D);
    m->d_att = arena_floats(S, R * D);
    m->d_h = arena_floats(S, R * F);
    m->d_g = arena_floats(S, R * F);
    m->d_pooled = arena_floats(S, (size_t)m->Be * D);
    m->d_head_x = arena_floats(S, (size_t)m->B * m->head_in);
    m->d_head_h = arena_floats(S, (size_t)m->B * m->M);
    m->d_logits = arena_floats(S, (size_t)m->B * m->K);
    size_t sb = 0;
    for (int l = 0; l < m->L; l++) {
        attn_layer *al = &m->attn[l];
        size_t x = al->ops->scratch_bytes ? al->ops->scratch_bytes(al->params, &al->shape, nthreads) : 0;
        if (x > sb) sb = x;
    }
    m->attn_scratch = sb ? arena_alloc(S, sb) : NULL;
}

int model_build(model_t *m, const run_cfg *c, int B, int vocab, int n_classes, task_kind kind, long long max_mem,
                char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    const model_cfg *mc = &c->model;
    m->cfg = c;
    m->kind = kind;
    m->seed = (uint64_t)c->train.seed;
    m->B = B;
    m->n_inputs = kind == TASK_MATCH ? 2 : 1;
    m->Be = B * m->n_inputs;
    m->S = c->task.seq_len;
    m->use_cls = mc->pooling == POOL_CLS && kind != TASK_LM;
    m->N = m->S + m->use_cls;
    m->D = mc->d_model;
    m->H = mc->n_heads;
    m->Dh = m->D / m->H;
    m->F = mc->d_ff;
    m->L = mc->n_layers;
    m->V = vocab + m->use_cls;
    m->K = n_classes;
    m->M = mc->mlp_dim;
    m->R = m->Be * m->N;
    m->head_in = kind != TASK_MATCH ? m->D : (mc->interaction == INTERACT_CONCAT ? 2 * m->D : 4 * m->D);
    if (m->L > MODEL_MAX_LAYERS) return lra_errorf(err, errlen, "model.n_layers: at most %d", MODEL_MAX_LAYERS);
    if (kind == TASK_LM) return lra_errorf(err, errlen, "task kind lm is not supported by this model yet");

    for (int l = 0; l < m->L; l++) {
        attn_layer *al = &m->attn[l];
        al->ops = c->attn_ops;
        al->params = c->attn_params.bytes;
        al->shape = config_attn_shape(c, m->Be, l);
        al->shape.N = al->shape.Nk = m->N;
        al->shape.max_len = LRA_MAX(al->shape.max_len, m->N);
        al->seed = m->seed;
        al->dropout = mc->attn_dropout;
        if (al->ops->validate && al->ops->validate(al->params, &al->shape, err, errlen)) return -1;
    }
    declare_tensors(m);

    int nthreads = lra_threads();
    static const char *names[MEM_N_CATEGORIES] = {"params", "grads", "optimizer", "activations", "scratch", "data"};
    for (int i = 0; i < MEM_N_CATEGORIES; i++) arena_measure(&m->arenas[i], names[i]);
    layout(m, nthreads);
    m->n_params_real = 0;
    for (int i = 0; i < m->n_tensors; i++) m->n_params_real += m->tensors[i].n;

    size_t total = model_planned_total(m);
    if (max_mem > 0 && (long long)total > max_mem) {
        char a[32], b[32];
        return lra_errorf(err, errlen, "the model needs %s of planned memory > --max-mem %s",
                          lra_fmt_bytes((double)total, a, sizeof a), lra_fmt_bytes((double)max_mem, b, sizeof b));
    }
    for (int i = 0; i < MEM_N_CATEGORIES; i++) arena_commit(&m->arenas[i]);
    layout(m, nthreads);
    for (int l = 0; l < m->L; l++) {
        m->attn[l].w = m->blk[l].attn_w;
        m->attn[l].dw = m->gblk[l].attn_w;
        m->attn[l].cache = m->act[l].attn_cache;
        m->attn[l].scratch = m->attn_scratch;
    }
    if (m->pe_fixed) posenc_sinusoidal(m->pe_fixed, m->N, m->D);
    init_params(m);

    /* Forward FLOPs per batch: projections and FFN (2 per multiply-add), attention, head. */
    double R = m->R, D = m->D, F = m->F;
    m->fwd_flops = 0;
    for (int l = 0; l < m->L; l++) {
        m->fwd_flops += 2.0 * R * (4.0 * D * D + 2.0 * D * F);
        const attn_layer *al = &m->attn[l];
        if (al->ops->flops) m->fwd_flops += al->ops->flops(al->params, &al->shape);
    }
    m->fwd_flops += 2.0 * m->B * ((double)m->head_in * m->M + (double)m->M * m->K);
    return 0;
}

void model_free(model_t *m) {
    for (int i = 0; i < MEM_N_CATEGORIES; i++) arena_free(&m->arenas[i]);
}

size_t model_planned_bytes(const model_t *m, mem_category c) {
    const arena_t *a = &m->arenas[c];
    return a->measuring ? a->peak : a->cap;
}

size_t model_planned_total(const model_t *m) {
    size_t t = 0;
    for (int i = 0; i < MEM_N_CATEGORIES; i++) t += model_planned_bytes(m, (mem_category)i);
    return t;
}

void model_print_plan(const model_t *m, FILE *f) {
    char buf[32];
    fprintf(f, "model: %s, %d layers, d_model %d, %d heads (Dh %d), d_ff %d, seq_len %d (+%d CLS), batch %d%s\n",
            m->cfg->attn_label, m->L, m->D, m->H, m->Dh, m->F, m->S, m->use_cls, m->B,
            m->n_inputs == 2 ? " x 2 documents" : "");
    fprintf(f, "model: %zu parameters, forward %.3f GFLOP per batch (%.1f kFLOP per token)\n", m->n_params_real,
            m->fwd_flops * 1e-9, m->fwd_flops / ((double)m->Be * m->N) * 1e-3);
    for (int l = 0; l < m->L; l++) {
        const attn_layer *al = &m->attn[l];
        size_t cb = al->ops->cache_bytes ? al->ops->cache_bytes(al->params, &al->shape) : 0;
        double af = al->ops->flops ? al->ops->flops(al->params, &al->shape) : 0;
        double act = (double)m->R * (8.0 * m->D + 2.0 * m->F) * sizeof(float) + (double)cb;
        fprintf(f, "  block %d: %-28s attn cache %s, activations %s, attention %.3f GFLOP\n", l, m->cfg->attn_label,
                lra_fmt_bytes((double)cb, buf, sizeof buf), lra_fmt_bytes(act, (char[32]){0}, 32), af * 1e-9);
    }
    fprintf(f, "memory plan:");
    for (int i = 0; i < MEM_N_CATEGORIES; i++) {
        if (i == MEM_DATA) continue;
        fprintf(f, " %s %s;", mem_category_name((mem_category)i),
                lra_fmt_bytes((double)model_planned_bytes(m, (mem_category)i), buf, sizeof buf));
    }
    fprintf(f, " total %s\n", lra_fmt_bytes((double)model_planned_total(m), buf, sizeof buf));
}

/* ---------------------------------------------------------------------------------------------
 * Batches */

void model_load_batch(model_t *m, const task_split *s, const int *idx) {
    int S = m->S, N = m->N;
    for (int b = 0; b < m->B; b++) {
        for (int in = 0; in < m->n_inputs; in++) {
            int e = in * m->B + b; /* encoder sequence: documents 1 first, then documents 2 */
            int32_t *dst = m->ids + (size_t)e * N;
            uint8_t *mk = m->mask + (size_t)e * N;
            int off = 0;
            if (m->use_cls) {
                dst[0] = m->V - 1;
                mk[0] = 1;
                off = 1;
            }
            if (idx[b] < 0) {
                for (int t = 0; t < S; t++) dst[off + t] = 0, mk[off + t] = 0;
                if (!m->use_cls) mk[0] = 1; /* keep one real key so no row is fully masked */
                continue;
            }
            const int32_t *src = s->tokens + ((size_t)idx[b] * s->n_inputs + in) * s->seq_len;
            int n = LRA_MIN(S, s->seq_len);
            for (int t = 0; t < n; t++) dst[off + t] = src[t], mk[off + t] = src[t] != 0;
            for (int t = n; t < S; t++) dst[off + t] = 0, mk[off + t] = 0;
        }
        m->targets[b] = idx[b] < 0 ? -1 : s->labels[idx[b]];
    }
}

/* ---------------------------------------------------------------------------------------------
 * Forward / backward */

/* Dropout sites: a stream per (site, layer, step) so masks never repeat across steps. */
enum { SITE_EMB = 0, SITE_ATTN_OUT = 1, SITE_FFN_ACT = 2, SITE_FFN_OUT = 3 };
static uint64_t drop_stream(const model_t *m, int site, int layer) {
    return rng_substream(RNG_DROPOUT, (uint64_t)(layer + 1) * 16 + (uint64_t)site, (uint64_t)m->step);
}

double model_forward(model_t *m, int training, int *correct, int *counted) {
    const model_cfg *mc = &m->cfg->model;
    int R = m->R, D = m->D, F = m->F, Be = m->Be, N = m->N, H = m->H, Dh = m->Dh;
    float p = training ? mc->dropout : 0.0f;
    m->drop_p = p;

    float *x = m->act[0].res_in;
    embedding_forward(x, m->ids, m->wte, R, D);
    if (mc->pos == POS_SINUSOIDAL) add_positions_forward(x, m->pe_fixed, Be, N, D);
    else if (mc->pos == POS_LEARNED) add_positions_forward(x, m->wpe, Be, N, D);
    dropout_forward(x, x, (size_t)R * D, p, m->seed, drop_stream(m, SITE_EMB, -1));

    for (int l = 0; l < m->L; l++) {
        block_params *w = &m->blk[l];
        block_acts *a = &m->act[l];
        float *out = l + 1 < m->L ? m->act[l + 1].res_in : m->res_out;
        layernorm_forward(a->ln1, a->ln1_mean, a->ln1_rstd, a->res_in, w->ln1_w, w->ln1_b, R, D);
        linear_forward(m->d_tmp, a->ln1, w->wq, NULL, R, D, D);
        heads_split(a->q, m->d_tmp, Be, N, H, Dh);
        linear_forward(m->d_tmp, a->ln1, w->wk, NULL, R, D, D);
        heads_split(a->k, m->d_tmp, Be, N, H, Dh);
        linear_forward(m->d_tmp, a->ln1, w->wv, NULL, R, D, D);
        heads_split(a->v, m->d_tmp, Be, N, H, Dh);

        attn_layer *al = &m->attn[l];
        al->training = training;
        al->step = m->step;
        if (al->ops->begin) al->ops->begin(al);
        al->ops->forward(al, a->q, a->k, a->v, m->mask, a->att);
        heads_merge(a->atty, a->att, Be, N, H, Dh);

        linear_forward(m->d_tmp, a->atty, w->wo, NULL, R, D, D);
        dropout_forward(m->d_tmp, m->d_tmp, (size_t)R * D, p, m->seed, drop_stream(m, SITE_ATTN_OUT, l));
        residual_forward(a->res_mid, a->res_in, m->d_tmp, (size_t)R * D);

        layernorm_forward(a->ln2, a->ln2_mean, a->ln2_rstd, a->res_mid, w->ln2_w, w->ln2_b, R, D);
        linear_forward(a->h, a->ln2, w->w1, w->b1, R, D, F);
        gelu_forward(a->g, a->h, (size_t)R * F);
        dropout_forward(a->g, a->g, (size_t)R * F, p, m->seed, drop_stream(m, SITE_FFN_ACT, l));
        linear_forward(m->d_tmp, a->g, w->w2, w->b2, R, F, D);
        dropout_forward(m->d_tmp, m->d_tmp, (size_t)R * D, p, m->seed, drop_stream(m, SITE_FFN_OUT, l));
        residual_forward(out, a->res_mid, m->d_tmp, (size_t)R * D);
    }
    layernorm_forward(m->lnf, m->lnf_mean, m->lnf_rstd, m->res_out, m->lnf_w, m->lnf_b, R, D);
    if (m->use_cls) pool_cls_forward(m->pooled, m->lnf, Be, N, D);
    else pool_mean_forward(m->pooled, m->lnf, m->mask, Be, N, D);

    int B = m->B;
    if (m->kind == TASK_MATCH) {
        for (int b = 0; b < B; b++) {
            const float *u = m->pooled + (size_t)b * D, *v = m->pooled + (size_t)(B + b) * D;
            float *hx = m->head_x + (size_t)b * m->head_in;
            int nli = m->head_in == 4 * D;
            for (int i = 0; i < D; i++) {
                hx[i] = u[i];
                hx[D + i] = v[i];
                if (nli) {
                    hx[2 * D + i] = u[i] * v[i];
                    hx[3 * D + i] = u[i] - v[i];
                }
            }
        }
    } else {
        memcpy(m->head_x, m->pooled, sizeof(float) * (size_t)B * D);
    }
    linear_forward(m->head_h, m->head_x, m->hw1, m->hb1, B, m->head_in, m->M);
    relu_forward(m->head_a, m->head_h, (size_t)B * m->M);
    linear_forward(m->logits, m->head_a, m->hw2, m->hb2, B, m->M, m->K);
    crossentropy_forward(m->losses, m->probs, m->logits, m->targets, B, m->K);

    double loss = 0;
    int nc = 0, ok = 0;
    for (int b = 0; b < B; b++) {
        if (m->targets[b] < 0) continue;
        loss += m->losses[b];
        nc++;
        const float *lg = m->logits + (size_t)b * m->K;
        int arg = 0;
        for (int k = 1; k < m->K; k++)
            if (lg[k] > lg[arg]) arg = k;
        ok += arg == m->targets[b];
    }
    if (correct) *correct = ok;
    if (counted) *counted = nc;
    return nc ? loss / nc : 0.0;
}

void model_zero_grad(model_t *m) {
    arena_t *G = &m->arenas[MEM_GRADS];
    memset(G->base, 0, G->cap);
}

void model_backward(model_t *m) {
    const model_cfg *mc = &m->cfg->model;
    int R = m->R, D = m->D, F = m->F, Be = m->Be, N = m->N, H = m->H, Dh = m->Dh, B = m->B;
    float p = m->drop_p;
    int nc = 0;
    for (int b = 0; b < B; b++) nc += m->targets[b] >= 0;
    crossentropy_backward(m->d_logits, m->probs, m->targets, B, m->K, nc ? 1.0f / (float)nc : 0.0f);
    linear_backward(m->d_head_h, m->g_hw2, m->g_hb2, m->d_logits, m->head_a, m->hw2, B, m->M, m->K);
    relu_backward(m->d_head_h, m->head_h, m->d_head_h, (size_t)B * m->M);
    linear_backward(m->d_head_x, m->g_hw1, m->g_hb1, m->d_head_h, m->head_x, m->hw1, B, m->head_in, m->M);
    if (m->kind == TASK_MATCH) {
        for (int b = 0; b < B; b++) {
            const float *u = m->pooled + (size_t)b * D, *v = m->pooled + (size_t)(B + b) * D;
            const float *dx = m->d_head_x + (size_t)b * m->head_in;
            float *du = m->d_pooled + (size_t)b * D, *dv = m->d_pooled + (size_t)(B + b) * D;
            int nli = m->head_in == 4 * D;
            for (int i = 0; i < D; i++) {
                du[i] = dx[i] + (nli ? dx[2 * D + i] * v[i] + dx[3 * D + i] : 0.0f);
                dv[i] = dx[D + i] + (nli ? dx[2 * D + i] * u[i] - dx[3 * D + i] : 0.0f);
            }
        }
    } else {
        memcpy(m->d_pooled, m->d_head_x, sizeof(float) * (size_t)B * D);
    }
    if (m->use_cls) pool_cls_backward(m->d_tmp, m->d_pooled, Be, N, D);
    else pool_mean_backward(m->d_tmp, m->d_pooled, m->mask, Be, N, D);
    layernorm_backward(m->d_res, m->g_lnf_w, m->g_lnf_b, m->d_tmp, m->res_out, m->lnf_w, m->lnf_mean, m->lnf_rstd,
                       R, D);

    for (int l = m->L - 1; l >= 0; l--) {
        block_params *w = &m->blk[l], *g = &m->gblk[l];
        block_acts *a = &m->act[l];
        /* out = res_mid + drop(W2 g + b2) */
        dropout_backward(m->d_tmp, m->d_res, (size_t)R * D, p, m->seed, drop_stream(m, SITE_FFN_OUT, l));
        linear_backward(m->d_g, g->w2, g->b2, m->d_tmp, a->g, w->w2, R, F, D);
        dropout_backward(m->d_g, m->d_g, (size_t)R * F, p, m->seed, drop_stream(m, SITE_FFN_ACT, l));
        gelu_backward(m->d_h, a->h, m->d_g, (size_t)R * F);
        linear_backward(m->d_tmp, g->w1, g->b1, m->d_h, a->ln2, w->w1, R, D, F);
        layernorm_backward(m->d_tmp2, g->ln2_w, g->ln2_b, m->d_tmp, a->res_mid, w->ln2_w, a->ln2_mean, a->ln2_rstd, R,
                           D);
        add_inplace(m->d_res, m->d_tmp2, (size_t)R * D); /* d(res_mid) */

        /* res_mid = res_in + drop(Wo atty) */
        dropout_backward(m->d_tmp, m->d_res, (size_t)R * D, p, m->seed, drop_stream(m, SITE_ATTN_OUT, l));
        linear_backward(m->d_tmp2, g->wo, NULL, m->d_tmp, a->atty, w->wo, R, D, D);
        heads_split(m->d_att, m->d_tmp2, Be, N, H, Dh);
        attn_layer *al = &m->attn[l];
        al->ops->backward(al, a->q, a->k, a->v, m->mask, a->att, m->d_att, m->d_q, m->d_k, m->d_v);

        /* d(ln1) = dQ Wq + dK Wk + dV Wv, summed in a fixed order */
        heads_merge(m->d_tmp, m->d_q, Be, N, H, Dh);
        linear_backward(m->d_att, g->wq, NULL, m->d_tmp, a->ln1, w->wq, R, D, D); /* d_att reused as d(ln1) */
        heads_merge(m->d_tmp, m->d_k, Be, N, H, Dh);
        linear_backward(m->d_tmp2, g->wk, NULL, m->d_tmp, a->ln1, w->wk, R, D, D);
        add_inplace(m->d_att, m->d_tmp2, (size_t)R * D);
        heads_merge(m->d_tmp, m->d_v, Be, N, H, Dh);
        linear_backward(m->d_tmp2, g->wv, NULL, m->d_tmp, a->ln1, w->wv, R, D, D);
        add_inplace(m->d_att, m->d_tmp2, (size_t)R * D);
        layernorm_backward(m->d_tmp, g->ln1_w, g->ln1_b, m->d_att, a->res_in, w->ln1_w, a->ln1_mean, a->ln1_rstd, R,
                           D);
        add_inplace(m->d_res, m->d_tmp, (size_t)R * D); /* d(res_in) */
    }
    dropout_backward(m->d_res, m->d_res, (size_t)R * D, p, m->seed, drop_stream(m, SITE_EMB, -1));
    if (mc->pos == POS_LEARNED) add_positions_backward(m->g_wpe, m->d_res, Be, N, D);
    embedding_backward(m->g_wte, m->d_res, m->ids, R, D, m->V);
}

double model_update(model_t *m, float lr) {
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

void model_snapshot_best(model_t *m) {
    memcpy(m->best, m->arenas[MEM_PARAMS].base, m->n_params * sizeof(float));
}

void model_restore_best(model_t *m) {
    memcpy(m->arenas[MEM_PARAMS].base, m->best, m->n_params * sizeof(float));
}
