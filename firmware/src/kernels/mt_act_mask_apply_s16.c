/**
 * @file mt_act_mask_apply_s16.c
 * @brief Apply a packed relu / relu6 mask to a gradient in place (_grad_int.act_mask):
 *        m[i] = keep[i] ? m[i] : 0, exponent unchanged.
 */
#include "mt_kernels_train.h"

mt_status mt_act_mask_apply_s16(int32_t size, const uint8_t *bits, int16_t *m)
{
    int32_t i;
    if (size < 0) {
        return MT_ERR_ARG;
    }
    for (i = 0; i < size; ++i) {
        if (((bits[i >> 3] >> (i & 7)) & 1u) == 0u) {
            m[i] = 0;
        }
    }
    return MT_OK;
}
