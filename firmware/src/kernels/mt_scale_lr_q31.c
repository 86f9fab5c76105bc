/**
 * @file mt_scale_lr_q31.c
 * @brief lr (Q31 multiplier + exponent) times a Q15 factor, renormalised to [2^30, 2^31);
 *        bit-exact with train_int.scale_lr.
 */
#include "mt_kernels_train.h"

void mt_scale_lr_q31(int32_t mult, int32_t shift, int32_t f_q15, int32_t *mult_out,
                     int32_t *shift_out)
{
    int32_t m, lsh;
    if (f_q15 >= (1 << 15)) {
        *mult_out = mult;
        *shift_out = shift;
        return;
    }
    m = mt_srdhm(mult, f_q15 * (1 << 16));
    if (m <= 0) {
        *mult_out = 0;
        *shift_out = 0;
        return;
    }
    lsh = 31 - mt_bitlen32((uint32_t)m);
    *mult_out = mt_wrap32((uint32_t)m << lsh);
    *shift_out = shift - lsh;
}
