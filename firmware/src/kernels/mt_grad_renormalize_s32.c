/**
 * @file mt_grad_renormalize_s32.c
 * @brief int32 accumulators -> int16 gradient mantissas; bit-exact with gradfmt.renormalize.
 */
#include "mt_kernels_train.h"

mt_status mt_grad_renormalize_s32(int32_t size, const int32_t *acc, int32_t e, int16_t *m,
                                  int32_t *e_out)
{
    uint32_t amax = 0u;
    int32_t i, s;
    if (size < 0) {
        return MT_ERR_ARG;
    }
    for (i = 0; i < size; ++i) {
        const uint32_t a = mt_uabs32(acc[i]);
        amax = (a > amax) ? a : amax;
    }
    s = mt_grad_renorm_shift(amax);
    for (i = 0; i < size; ++i) {
        m[i] = (int16_t)mt_rshift_round32(acc[i], s);
    }
    *e_out = e + s;
    return MT_OK;
}
