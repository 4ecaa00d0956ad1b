/* rng.h - counter-based random numbers: value = f(seed, stream, counter), no hidden state.
 *
 * Any random draw can be recomputed from its coordinates, so results do not depend on the thread
 * schedule and dropout masks can be regenerated in the backward pass instead of stored.
 * The mixing function is two rounds of the splitmix64 finaliser over (seed, stream, counter)
 * (Steele, Lea, Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014).
 *
 * Streams: one per purpose, derived from the run seed, so that e.g. changing the dropout rate never
 * changes the initial weights or the data.
 */
#ifndef LRA_RNG_H
#define LRA_RNG_H

#include <stdint.h>

enum {
    RNG_DATA = 1,     /* task generation (ListOps trees, pair sampling, splits) */
    RNG_SHUFFLE = 2,  /* batch order */
    RNG_INIT = 3,     /* parameter initialisation */
    RNG_DROPOUT = 4,  /* dropout masks (keyed further by layer/site and step) */
    RNG_FEATURES = 5, /* random features (Performer), random blocks (BigBird) */
    RNG_LSH = 6,      /* LSH rotations (Reformer) */
    RNG_TEST = 99,    /* tests */
};

/* 64 random bits at (seed, stream, counter). Pure function. */
uint64_t rng_at(uint64_t seed, uint64_t stream, uint64_t counter);

/* Uniform float in [0, 1) with 24 random bits, from rng_at. */
static inline float rng_uniform_at(uint64_t seed, uint64_t stream, uint64_t counter) {
    return (float)(rng_at(seed, stream, counter) >> 40) * (1.0f / 16777216.0f);
}

/* Derive a sub-stream id from a stream and up to two coordinates (layer, site, step, ...). */
uint64_t rng_substream(uint64_t stream, uint64_t a, uint64_t b);

/* A sequential cursor over one stream: convenient for serial code (data generation, init). */
typedef struct {
    uint64_t seed, stream, counter;
} rng_t;

static inline rng_t rng_make(uint64_t seed, uint64_t stream) {
    rng_t r = {seed, stream, 0};
    return r;
}
uint64_t rng_u64(rng_t *r);
double rng_double(rng_t *r);          /* [0, 1) with 53 bits */
float rng_float(rng_t *r);            /* [0, 1) with 24 bits */
int rng_int(rng_t *r, int lo, int hi); /* uniform integer in [lo, hi] inclusive, unbiased */
double rng_normal(rng_t *r);          /* standard normal (Box-Muller, one value per call) */

#endif
