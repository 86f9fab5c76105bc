/**
 * @file mt_grad_headroom_s16.c
 * @brief In-place headroom pre-shift of a gradient before a multiply-accumulate; bit-exact with
 *        gradfmt.headroom.
 */
#include "mt_kernels_train.h"

mt_status mt_grad_headroom_s16(int32_t operand_bits, int32_t fan_in, int32_t size, int16_t *m,
                               int32_t *e)
{
    uint32_t amax = 0u;
    int32_t i, s;
    if (size < 0 || operand_bits < 0) {
        return MT_ERR_ARG;
    }
    for (i = 0; i < size; ++i) {
        const uint32_t a = mt_uabs32(m[i]);
        amax = (a > amax) ? a : amax;
    }
    s = mt_grad_headroom_shift(amax, operand_bits, fan_in);
    if (s > 0) {
        for (i = 0; i < size; ++i) {
            m[i] = (int16_t)mt_rshift_round32(m[i], s);
        }
        *e += s;
    }
    return MT_OK;
}
