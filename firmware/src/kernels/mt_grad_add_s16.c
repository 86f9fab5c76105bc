/**
 * @file mt_grad_add_s16.c
 * @brief Sum of two gradients of one tensor (fan-out); bit-exact with gradfmt.add.
 */
#include "mt_kernels_train.h"

mt_status mt_grad_add_s16(int32_t size, const int16_t *a, int32_t a_e, const int16_t *b,
                          int32_t b_e, int16_t *out, int32_t *out_e)
{
    const int16_t *hi = a, *lo = b; /* hi: the operand with the larger exponent (a on ties) */
    int32_t e = a_e, d, i, s;
    uint32_t amax = 0u;
    if (size < 0) {
        return MT_ERR_ARG;
    }
    if (a_e < b_e) {
        hi = b;
        lo = a;
        e = b_e;
    }
    d = (a_e < b_e) ? b_e - a_e : a_e - b_e;
    for (i = 0; i < size; ++i) {
        const uint32_t v = mt_uabs32((int32_t)hi[i] + mt_rshift_round32(lo[i], d));
        amax = (v > amax) ? v : amax;
    }
    s = mt_grad_renorm_shift(amax);
    for (i = 0; i < size; ++i) {
        out[i] = (int16_t)mt_rshift_round32((int32_t)hi[i] + mt_rshift_round32(lo[i], d), s);
    }
    *out_e = e + s;
    return MT_OK;
}
