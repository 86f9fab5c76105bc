/**
 * @file mt_fg_update_s32.c
 * @brief Forward-gradient update of an int32 bias slice; bit-exact with the update part of
 *        Int8Trainer._forward_gradient for a bias (g = sum_i sign[i] * z_i, sgd_delta,
 *        momentum, b += RDBPOT(delta, 16) clamped to [lo, hi]). Two passes over the streams.
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

mt_status mt_fg_update_s32(const mt_sgd_params *u, mt_sgd_state *st, const mt_slice *s, int32_t m,
                           const int32_t *sign, mt_rademacher *z, int32_t *bias)
{
    mt_rademacher probe[MT_FG_MAX_M];
    uint32_t gmax = 0u;
    int32_t i, o, r, j, idx;
    const int32_t size = s->outer * s->rows * s->inner;
    mt_sgd_norm q;
    if (m < 1 || m > MT_FG_MAX_M || s->outer < 1 || s->rows < 1 || s->rows > s->channels ||
        s->inner < 1 || st->kind != MT_APPLY_BIAS) {
        return MT_ERR_ARG;
    }
    if (u->lr_mult == 0) {
        for (i = 0; i < m; ++i) {
            mt_rademacher_skip(&z[i], (uint32_t)size);
        }
        return MT_OK;
    }
    for (i = 0; i < m; ++i) {
        probe[i] = z[i];
    }
    for (idx = 0; idx < size; ++idx) {
        const uint32_t a = mt_uabs32(next_g(m, sign, probe));
        gmax = (a > gmax) ? a : gmax;
    }
    q = mt_sgd_norm_make(u, gmax, 0);
    for (o = 0, idx = 0; o < s->outer; ++o) {
        for (r = 0; r < s->rows; ++r) {
            int32_t *br = bias + ((size_t)o * (size_t)s->channels + (size_t)r) * (size_t)s->inner;
            for (j = 0; j < s->inner; ++j, ++idx) {
                const int32_t g = next_g(m, sign, z);
                br[j] = mt_sgd_apply_b32_elem(u, st, idx, br[j], mt_sgd_delta_elem(u, &q, g, r));
            }
        }
    }
    return MT_OK;
}
