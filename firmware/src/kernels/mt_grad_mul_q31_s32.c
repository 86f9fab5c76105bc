/**
 * @file mt_grad_mul_q31_s32.c
 * @brief int32 accumulators times a per-channel Q31 factor -> int16 gradient; bit-exact with
 *        gradfmt.mul_q31 (normalize31, SRDHM, renormalize).
 */
#include "mt_kernels_train.h"

mt_status mt_grad_mul_q31_s32(int32_t size, int32_t channels, const int32_t *acc, int32_t e,
                              const int32_t *mult, int32_t shift, int16_t *m, int32_t *e_out)
{
    uint32_t amax = 0u, tmax = 0u;
    int32_t i, c, lsh, s;
    if (size < 0 || channels < 1 || size % channels != 0) {
        return MT_ERR_ARG;
    }
    for (i = 0; i < size; ++i) {
        const uint32_t a = mt_uabs32(acc[i]);
        amax = (a > amax) ? a : amax;
    }
    if (amax == 0u) {
        for (i = 0; i < size; ++i) {
            m[i] = 0;
        }
        *e_out = e;
        return MT_OK;
    }
    lsh = mt_norm31_shift(amax);
    for (i = 0, c = 0; i < size; ++i) {
        const uint32_t t = mt_uabs32(mt_srdhm(mt_norm31(acc[i], lsh), mult[c]));
        tmax = (t > tmax) ? t : tmax;
        c = (c + 1 == channels) ? 0 : c + 1;
    }
    s = mt_grad_renorm_shift(tmax);
    for (i = 0, c = 0; i < size; ++i) {
        m[i] = (int16_t)mt_rshift_round32(mt_srdhm(mt_norm31(acc[i], lsh), mult[c]), s);
        c = (c + 1 == channels) ? 0 : c + 1;
    }
    *e_out = e + shift - lsh + s;
    return MT_OK;
}
