/**
 * @file mt_softmax_fwd_s8.c
 * @brief int8 softmax over the last axis (TFLite reference Softmax<int8, int8>: gemmlowp
 *        exp_on_negative_values and GetReciprocal); bit-exact with compiler/ops/softmax.py.
 *
 * Output scale 1/256, zero point -128. Per row:
 *   d = x - max(x) (<= 0); z = SRDHM(d << left_shift, mult) (Q5.26); e = exp(z) (Q0.31), 0 where
 *   d < diff_min; S = sum RDBPOT(e, 12) (Q12.19, wrapping); R, k = GetReciprocal(S, 12);
 *   y = clamp(RDBPOT(SRDHM(R, e), k + 23) - 128, -128, 127), -128 where d < diff_min.
 */
#include "mt_kernels_fwd.h"

#define MT_SOFTMAX_DIFF_INTEGER_BITS 5
#define MT_SOFTMAX_ACC_INTEGER_BITS 12

size_t mt_softmax_fwd_s8_scratch_bytes(int32_t cols)
{
    (void)cols;
    return 0u;
}

/* exp(beta * s_x * d) in Q0.31 for a valid difference d (diff_min <= d <= 0). */
static int32_t softmax_exp(const mt_softmax_params *p, int32_t diff)
{
    /* valid d satisfy |d| * 2^left_shift <= 31 * 2^26: the shift cannot overflow */
    const int32_t scaled = mt_srdhm(mt_wrap32((uint32_t)diff << p->left_shift), p->mult);
    return mt_exp_on_negative_values(scaled, MT_SOFTMAX_DIFF_INTEGER_BITS);
}

mt_status mt_softmax_fwd_s8(const mt_softmax_params *p, int32_t rows, int32_t cols,
                            const int8_t *in, int8_t *out)
{
    int32_t r, c;
    if (rows < 0 || cols < 1 || p->left_shift < 0 || p->left_shift > 31 || p->diff_min > 0) {
        return MT_ERR_ARG;
    }
    for (r = 0; r < rows; ++r) {
        const int8_t *x = in + (size_t)r * cols;
        int8_t *y = out + (size_t)r * cols;
        int32_t max = x[0];
        uint32_t sum = 0u; /* Q12.19, int32 wrapping as in C */
        int32_t recip;
        int bits_over_unit;
        int exponent;

        for (c = 1; c < cols; ++c) {
            if (x[c] > max) {
                max = x[c];
            }
        }
        for (c = 0; c < cols; ++c) {
            const int32_t diff = (int32_t)x[c] - max;
            if (diff >= p->diff_min) {
                sum += (uint32_t)mt_rdbpot(softmax_exp(p, diff), MT_SOFTMAX_ACC_INTEGER_BITS);
            }
        }
        recip = mt_get_reciprocal(mt_wrap32(sum), MT_SOFTMAX_ACC_INTEGER_BITS, &bits_over_unit);
        exponent = bits_over_unit + 31 - 8;
        for (c = 0; c < cols; ++c) {
            const int32_t diff = (int32_t)x[c] - max;
            int32_t v = -128;
            if (diff >= p->diff_min) {
                /* SRDHM(R, e) >= 0; an exponent above 31 (rows whose sum exceeds 2^8, which the
                 * reference rejects) rounds it to 0. */
                const int32_t prod = mt_srdhm(recip, softmax_exp(p, diff));
                v = ((exponent <= 31) ? mt_rdbpot(prod, exponent) : 0) - 128;
                v = mt_clamp32(v, -128, 127);
            }
            y[c] = (int8_t)v;
        }
    }
    return MT_OK;
}
