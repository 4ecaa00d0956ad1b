#include "attention.h"

#include <string.h>

float attn_dropout_scale(const attn_layer *L, int b, int h, int i, int j) {
    if (!L->training || L->dropout <= 0.0f) return 1.0f;
    const attn_shape *s = &L->shape;
    uint64_t stream = rng_substream(RNG_DROPOUT, 1000 + (uint64_t)s->layer, (uint64_t)L->step);
    uint64_t ctr = (((uint64_t)b * (uint64_t)s->H + (uint64_t)h) * (uint64_t)s->N + (uint64_t)i) * (uint64_t)s->Nk + (uint64_t)j;
    float u = rng_uniform_at(L->seed, stream, ctr);
    return u < L->dropout ? 0.0f : 1.0f / (1.0f - L->dropout);
}

const attn_ops *attn_find(const char *name) {
    for (int i = 0; i < attn_registry_count; i++)
        if (strcmp(attn_registry[i]->name, name) == 0) return attn_registry[i];
    return NULL;
}
