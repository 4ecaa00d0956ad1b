#include "rng.h"

#include <math.h>

static inline uint64_t splitmix_final(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t rng_at(uint64_t seed, uint64_t stream, uint64_t counter) {
    uint64_t h = splitmix_final(seed + 0x9e3779b97f4a7c15ULL * (stream + 1));
    h = splitmix_final(h ^ (counter * 0xd1342543de82ef95ULL + 0x632be59bd9b4e019ULL));
    return splitmix_final(h + counter);
}

uint64_t rng_substream(uint64_t stream, uint64_t a, uint64_t b) {
    return splitmix_final(splitmix_final(stream * 0x9e3779b97f4a7c15ULL + a) ^ (b + 0x7f4a7c159e3779b9ULL));
}

uint64_t rng_u64(rng_t *r) { return rng_at(r->seed, r->stream, r->counter++); }

double rng_double(rng_t *r) { return (double)(rng_u64(r) >> 11) * (1.0 / 9007199254740992.0); }

float rng_float(rng_t *r) { return (float)(rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

int rng_int(rng_t *r, int lo, int hi) {
    uint64_t range = (uint64_t)((int64_t)hi - (int64_t)lo) + 1;
    uint64_t limit = UINT64_MAX - UINT64_MAX % range;
    uint64_t x;
    do x = rng_u64(r);
    while (x >= limit);
    return lo + (int)(x % range);
}

double rng_normal(rng_t *r) {
    double u1 = rng_double(r), u2 = rng_double(r);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}
