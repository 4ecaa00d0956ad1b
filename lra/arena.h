/* arena.h - planned memory: one bump arena per category, sized by a measuring pass.
 *
 * Usage (ggml style): run the same layout code twice. First with arenas in measuring mode
 * (arena_alloc returns NULL and only counts bytes), then arena_commit() allocates exactly that
 * many bytes, and the layout code runs again for real. The plan (bytes per category) is known
 * before step 1, printed, and checked against --max-mem.
 *
 * Scratch is reused: arena_mark/arena_reset release everything allocated after a mark, and the
 * high-water mark (`peak`) is what the memory report records.
 */
#ifndef LRA_ARENA_H
#define LRA_ARENA_H

#include <stddef.h>

typedef enum {
    MEM_PARAMS = 0, /* learned parameters */
    MEM_GRADS,      /* their gradients */
    MEM_OPTIM,      /* optimizer state (AdamW m, v) */
    MEM_ACTS,       /* activations kept for backward */
    MEM_SCRATCH,    /* temporaries reused between layers (attention scratch, etc.) */
    MEM_DATA,       /* task data (token ids, labels) */
    MEM_N_CATEGORIES
} mem_category;

#define ARENA_ALIGN 64

typedef struct {
    const char *name;
    char *base;
    size_t cap;   /* committed bytes (0 while measuring) */
    size_t used;  /* current offset */
    size_t peak;  /* high-water mark of used */
    int measuring;
} arena_t;

/* Start measuring: base NULL, counters 0. */
void arena_measure(arena_t *a, const char *name);
/* Allocate cap = peak bytes (zeroed) and reset used to 0, ready for the real layout pass. */
void arena_commit(arena_t *a);
/* bytes rounded up to ARENA_ALIGN; NULL while measuring. Aborts when a committed arena overflows
 * (a planning bug, not a user error). */
void *arena_alloc(arena_t *a, size_t bytes);
float *arena_floats(arena_t *a, size_t n);
size_t arena_mark(const arena_t *a);
void arena_reset(arena_t *a, size_t mark);
void arena_free(arena_t *a);

const char *mem_category_name(mem_category c);

#endif
