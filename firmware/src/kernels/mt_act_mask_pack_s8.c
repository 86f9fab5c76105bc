/**
 * @file mt_act_mask_pack_s8.c
 * @brief relu / relu6 backward mask as bits, packed from the int8 forward output (the keep
 *        condition of _grad_int.act_mask). Bit i = bit (i & 7) of byte i >> 3, row-major.
 */
#include "mt_kernels_train.h"

size_t mt_act_mask_bytes(int32_t size)
{
    return (size <= 0) ? 0u : ((size_t)size + 7u) / 8u;
}

mt_status mt_act_mask_pack_s8(int32_t size, const int8_t *y, int32_t lo, int32_t hi,
                              uint8_t *bits)
{
    int32_t i;
    uint32_t byte = 0u;
    if (size < 0) {
        return MT_ERR_ARG;
    }
    for (i = 0; i < size; ++i) {
        const int32_t v = y[i];
        if (v > lo && v < hi) {
            byte |= (uint32_t)1 << (i & 7);
        }
        if ((i & 7) == 7) {
            bits[i >> 3] = (uint8_t)byte;
            byte = 0u;
        }
    }
    if ((size & 7) != 0) {
        bits[size >> 3] = (uint8_t)byte;
    }
    return MT_OK;
}
