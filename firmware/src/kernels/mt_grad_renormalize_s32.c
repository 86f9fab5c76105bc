/**
 * @file mt_grad_renormalize_s32.c
 * @brief int32 accumulators -> int16 gradient mantissas; bit-exact with gradfmt.renormalize.
 *
 * Read pass: M = max of |acc| - [acc < 0] (one EOR per value, mt_gradfmt_fast.h); max |acc| is M or
 * M + 1, and only when the two give different shifts is it looked up (does -(M + 1) occur?). Write
 * pass: RDBPOT by s >= 1 is one add with the sign and one arithmetic shift while max |acc| + 2^(s-1)
 * fits int32.
 */
#include "mt_kernels_train.h"
#include "mt_gradfmt_fast.h"

mt_status mt_grad_renormalize_s32(int32_t size, const int32_t *acc, int32_t e, int16_t *m,
                                  int32_t *e_out)
{
    uint32_t ones, amax;
    int32_t i, s;
    if (size < 0) {
        return MT_ERR_ARG;
    }
    ones = mt_gf_max_ones32(acc, size); /* < 2^31 */
    s = mt_grad_renorm_shift(ones);
    amax = ones + 1u; /* an upper bound of max |acc| */
    if (size > 0 && mt_grad_renorm_shift(amax) != s) {
        amax = ones + (uint32_t)mt_gf_has32(acc, size, 0u - amax);
        s = mt_grad_renorm_shift(amax);
    }
    if (s == 0) {
        for (i = 0; i + 4 <= size; i += 4) {
            m[i] = (int16_t)acc[i];
            m[i + 1] = (int16_t)acc[i + 1];
            m[i + 2] = (int16_t)acc[i + 2];
            m[i + 3] = (int16_t)acc[i + 3];
        }
        for (; i < size; ++i) {
            m[i] = (int16_t)acc[i];
        }
    } else if (amax <= 0x7FFFFFFFu - ((uint32_t)1 << (s - 1))) {
        mt_gf_rshift32(acc, m, size, s);
    } else {
        for (i = 0; i < size; ++i) {
            m[i] = (int16_t)mt_rshift_round32(acc[i], s);
        }
    }
    *e_out = e + s;
    return MT_OK;
}
