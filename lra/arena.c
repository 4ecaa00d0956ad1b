#include "arena.h"

#include <stdlib.h>
#include <string.h>

#include "common.h"

static const char *g_names[MEM_N_CATEGORIES] = {"params", "grads", "optimizer", "activations", "scratch", "data"};

const char *mem_category_name(mem_category c) { return (unsigned)c < MEM_N_CATEGORIES ? g_names[c] : "?"; }

void arena_measure(arena_t *a, const char *name) {
    memset(a, 0, sizeof *a);
    a->name = name;
    a->measuring = 1;
}

void arena_commit(arena_t *a) {
    LRA_CHECK(a->measuring, "arena %s committed twice", a->name);
    a->cap = a->peak;
    a->base = NULL;
    if (a->cap) {
        a->base = aligned_alloc(ARENA_ALIGN, a->cap);
        LRA_CHECK(a->base, "out of memory committing arena %s (%zu bytes)", a->name, a->cap);
        memset(a->base, 0, a->cap);
    }
    a->used = 0;
    a->peak = 0;
    a->measuring = 0;
}

void *arena_alloc(arena_t *a, size_t bytes) {
    size_t sz = (bytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    size_t off = a->used;
    a->used += sz;
    if (a->used > a->peak) a->peak = a->used;
    if (a->measuring) return NULL;
    LRA_CHECK(a->used <= a->cap, "arena %s overflow: %zu > planned %zu bytes", a->name, a->used, a->cap);
    return a->base + off;
}

float *arena_floats(arena_t *a, size_t n) { return arena_alloc(a, n * sizeof(float)); }

size_t arena_mark(const arena_t *a) { return a->used; }

void arena_reset(arena_t *a, size_t mark) {
    LRA_CHECK(mark <= a->used, "arena %s reset past its top", a->name);
    a->used = mark;
}

void arena_free(arena_t *a) {
    free(a->base);
    a->base = NULL;
    a->cap = a->used = 0;
}
