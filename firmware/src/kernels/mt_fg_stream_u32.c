/**
 * @file mt_fg_stream_u32.c
 * @brief Forward-gradient perturbation stream: fmix32, the per-perturbation seed and the
 *        Rademacher cursor; bit-exact with train_float.fmix32 / perturbation_seed / rademacher.
 */
#include "mt_kernels_train.h"

uint32_t mt_fmix32(uint32_t h)
{
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h;
}

uint32_t mt_fg_perturbation_seed(uint32_t seed, uint32_t step, uint32_t i)
{
    uint32_t h = mt_fmix32(seed ^ 0x9E3779B9u);
    h = mt_fmix32(h ^ step);
    h = mt_fmix32(h ^ i);
    return (h != 0u) ? h : 0x9E3779B9u;
}

void mt_rademacher_init(mt_rademacher *r, uint32_t seed)
{
    r->state = seed;
    r->pos = 0u;
}

void mt_rademacher_skip(mt_rademacher *r, uint32_t n)
{
    /* draws taken so far: ceil(pos / 32); needed after the skip: ceil((pos + n) / 32) */
    const uint32_t done = (r->pos + 31u) >> 5;
    const uint32_t need = (r->pos + n + 31u) >> 5;
    uint32_t k;
    for (k = done; k < need; ++k) {
        r->state = mt_xorshift32(r->state);
    }
    r->pos += n;
}
