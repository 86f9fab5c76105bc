/**
 * @file mt_grad_headroom_s16.c
 * @brief In-place headroom pre-shift of a gradient before a multiply-accumulate; bit-exact with
 *        gradfmt.headroom.
 *
 * The shift needs only bitlen(max |m|): the OR of |m| (or, on DSP cores, max |m| from the signed
 * extremes, two lanes per SSUB16/SEL). RDBPOT of an int16 by s in [1, 31] is one add with the sign and
 * one arithmetic shift (mt_gradfmt_fast.h); s >= 32 rounds every int16 to 0.
 */
#include "mt_kernels_train.h"
#include "mt_gradfmt_fast.h"

mt_status mt_grad_headroom_s16(int32_t operand_bits, int32_t fan_in, int32_t size, int16_t *m,
                               int32_t *e)
{
    uint32_t amax = 0u;
    int32_t i, s;
    if (size < 0 || operand_bits < 0) {
        return MT_ERR_ARG;
    }
    if (size > 0) {
#if MT_GF_SIMD
        int32_t hi, lo;
        mt_gf_minmax16(m, size, &hi, &lo);
        amax = (mt_uabs32(hi) > mt_uabs32(lo)) ? mt_uabs32(hi) : mt_uabs32(lo);
#else
        amax = mt_gf_or_abs16(m, size); /* same bit length as max |m| */
#endif
    }
    s = mt_grad_headroom_shift(amax, operand_bits, fan_in);
    if (s > 0) {
        if (s < 32) {
            mt_gf_rshift16(m, size, s);
        } else {
            for (i = 0; i < size; ++i) {
                m[i] = 0; /* |m| <= 2^15 < 2^(s-1) */
            }
        }
        *e += s;
    }
    return MT_OK;
}
