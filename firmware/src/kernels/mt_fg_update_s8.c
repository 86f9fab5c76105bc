/**
 * @file mt_fg_update_s8.c
 * @brief Forward-gradient update of an int8 weight slice; bit-exact with the update part of
 *        Int8Trainer._forward_gradient: g = sum_i sign[i] * z_i (z regenerated from the streams,
 *        never stored), sgd_delta(Grad(g, 0)), momentum, master copy. Two passes over the
 *        streams: max |g| (sgd_delta's whole-slice normalisation), then the update.
 */
#include "mt_kernels_train.h"

#define MT_FG_MAX_M 16

static int32_t next_g(int32_t m, const int32_t *sign, mt_rademacher *z)
{
    int32_t i, g = 0;
    for (i = 0; i < m; ++i) {
        g += sign[i] * mt_rademacher_next(&z[i]);
    }
    return g;
}

mt_status mt_fg_update_s8(const mt_sgd_params *u, mt_sgd_state *st, const mt_slice *s, int32_t m,
                          const int32_t *sign, mt_rademacher *z, int8_t *w)
{
    mt_rademacher probe[MT_FG_MAX_M];
    uint32_t gmax = 0u;
    int32_t i, o, r, j, idx;
    const int32_t size = s->outer * s->rows * s->inner;
    mt_sgd_norm q;
    if (m < 1 || m > MT_FG_MAX_M || s->outer < 1 || s->rows < 1 || s->rows > s->channels ||
        s->inner < 1 || (st->kind != MT_APPLY_MASTER && st->kind != MT_APPLY_STOCHASTIC)) {
        return MT_ERR_ARG;
    }
    if (u->lr_mult == 0) { /* no update: the streams still move past the slice */
        for (i = 0; i < m; ++i) {
            mt_rademacher_skip(&z[i], (uint32_t)size);
        }
        return MT_OK;
    }
    for (i = 0; i < m; ++i) {
        probe[i] = z[i];
    }
    for (idx = 0; idx < size; ++idx) { /* pass 1: max |g| */
        const uint32_t a = mt_uabs32(next_g(m, sign, probe));
        gmax = (a > gmax) ? a : gmax;
    }
    q = mt_sgd_norm_make(u, gmax, 0);
    for (o = 0, idx = 0; o < s->outer; ++o) { /* pass 2: regenerate, update */
        for (r = 0; r < s->rows; ++r) {
            int8_t *wr = w + ((size_t)o * (size_t)s->channels + (size_t)r) * (size_t)s->inner;
            for (j = 0; j < s->inner; ++j, ++idx) {
                const int32_t g = next_g(m, sign, z);
                wr[j] = mt_sgd_apply_w8_elem(u, st, idx, wr[j], mt_sgd_delta_elem(u, &q, g, r));
            }
        }
    }
    return MT_OK;
}
