/**
 * @file mt_sgd_delta_s16.c
 * @brief Q15.16 update deltas of a parameter slice from its gradient; bit-exact with
 *        _grad_int.sgd_delta (QAS on/off is in the host-prepared per-channel factor).
 */
#include "mt_kernels_train.h"

mt_status mt_sgd_delta_s16(const mt_sgd_params *u, const mt_slice *s, const int16_t *m, int32_t e,
                           int32_t *delta)
{
    const int32_t size = s->outer * s->rows * s->inner;
    uint32_t amax = 0u;
    mt_sgd_norm q;
    int32_t o, r, k, i;
    if (s->outer < 1 || s->rows < 1 || s->inner < 1) {
        return MT_ERR_ARG;
    }
    for (i = 0; i < size; ++i) {
        const uint32_t a = mt_uabs32(m[i]);
        amax = (a > amax) ? a : amax;
    }
    q = mt_sgd_norm_make(u, amax, e);
    for (o = 0, i = 0; o < s->outer; ++o) {
        for (r = 0; r < s->rows; ++r) {
            for (k = 0; k < s->inner; ++k, ++i) {
                delta[i] = mt_sgd_delta_elem(u, &q, m[i], r);
            }
        }
    }
    return MT_OK;
}
