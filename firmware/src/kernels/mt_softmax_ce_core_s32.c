/**
 * @file mt_softmax_ce_core_s32.c
 * @brief Integer softmax cross-entropy from Q5.26 differences; bit-exact with the common part of
 *        loss_int.softmax_cross_entropy_int (gemmlowp exp and reciprocal, gradient renormalised
 *        to int16 and scaled by 1/N, Q15.16 loss via log2_q16).
 */
#include "mt_kernels_train.h"

#define DIFF_INTEGER_BITS 5  /* Q5.26 differences */
#define ACC_INTEGER_BITS 12  /* Q12.19 sum of exponentials */
#define LN2_Q31 1488522236   /* round(ln 2 * 2^31) */
#define RADIUS 31

size_t mt_softmax_ce_scratch_bytes(int32_t batch, int32_t classes)
{
    return (size_t)batch * (size_t)classes * sizeof(int32_t);
}

/* loss_int.log2_q16: log2 of x > 0 in Q(31-frac_in).frac_in as Q15.16 (16 squarings) */
static int32_t log2_q16(int32_t x, int32_t frac_in)
{
    const int32_t n = mt_bitlen32((uint32_t)x);
    int32_t y = mt_wrap32((uint32_t)x << (31 - n)); /* Q1.30 in [2^30, 2^31) */
    int32_t frac = 0, k;
    for (k = 0; k < MT_LOSS_FRAC_BITS; ++k) {
        const int32_t sq = mt_srdhm(y, y);
        const int32_t bit = (sq >= ((int32_t)1 << 30)) ? 1 : 0;
        frac = (frac << 1) | bit;
        y = bit ? sq : mt_wrap32((uint32_t)sq << 1);
    }
    return (n - 1 - frac_in) * (1 << MT_LOSS_FRAC_BITS) + frac;
}

/* sum_{c != t} p[c], saturated to 2^31 - 1 (uint32 sum) */
static int32_t others(const int32_t *prob, int32_t classes, int32_t t)
{
    uint32_t s = 0u;
    int32_t c;
    for (c = 0; c < classes; ++c) {
        if (c != t) {
            s += (uint32_t)prob[c];
        }
    }
    return (s > (uint32_t)MT_INT32_MAX) ? MT_INT32_MAX : (int32_t)s;
}

mt_status mt_softmax_ce_core_s32(const mt_ce_batch_params *b, int32_t batch, int32_t classes,
                                 int32_t *buf, const int32_t *labels, int16_t *grad,
                                 int32_t *grad_e, int32_t *loss, int32_t *loss_mean)
{
    int32_t n, c, s, e;
    uint32_t gmax = 0u;
    int64_t total = 0;
    if (batch < 1 || classes < 1 || batch != b->batch) {
        return MT_ERR_ARG;
    }
    for (n = 0; n < batch; ++n) {
        if (labels[n] < 0 || labels[n] >= classes) {
            return MT_ERR_ARG;
        }
    }
    for (n = 0; n < batch; ++n) {
        int32_t *row = buf + (size_t)n * (size_t)classes;
        const int32_t t = labels[n];
        const int32_t d_t = (row[t] == MT_CE_INVALID) ? -(RADIUS << (31 - DIFF_INTEGER_BITS)) : row[t];
        int32_t sum = 0, recip, ln_s, lv, o;
        int over;
        for (c = 0; c < classes; ++c) { /* e = exp(d), Q0.31; S in Q12.19 */
            row[c] = (row[c] == MT_CE_INVALID) ? 0 : mt_exp_on_negative_values(row[c], DIFF_INTEGER_BITS);
            sum = mt_wrap_add32(sum, mt_rdbpot(row[c], ACC_INTEGER_BITS));
        }
        recip = mt_get_reciprocal(sum, ACC_INTEGER_BITS, &over);
        for (c = 0; c < classes; ++c) { /* p = e / S, Q0.31 */
            row[c] = mt_rdbpot(mt_srdhm(recip, row[c]), over);
            if (c != t) {
                const uint32_t a = (uint32_t)row[c];
                gmax = (a > gmax) ? a : gmax;
            }
        }
        o = others(row, classes, t);
        gmax = ((uint32_t)o > gmax) ? (uint32_t)o : gmax;
        ln_s = mt_srdhm(log2_q16(sum, 31 - ACC_INTEGER_BITS), LN2_Q31);
        lv = ln_s + mt_rdbpot(-d_t, 31 - DIFF_INTEGER_BITS - MT_LOSS_FRAC_BITS);
        if (loss != NULL) {
            loss[n] = lv;
        }
        total += lv;
    }
    s = mt_grad_renorm_shift(gmax);
    for (n = 0; n < batch; ++n) {
        const int32_t *row = buf + (size_t)n * (size_t)classes;
        const int32_t t = labels[n];
        const int32_t o = others(row, classes, t);
        for (c = 0; c < classes; ++c) {
            grad[(size_t)n * (size_t)classes + (size_t)c] =
                (int16_t)mt_rshift_round32((c == t) ? -o : row[c], s);
        }
    }
    e = -31 + s;
    if (batch > 1) {
        if (b->batch_log2 >= 0) {
            e -= b->batch_log2;
        } else {
            mt_grad_mul_q31_s16(batch * classes, 1, grad, e, &b->inv_batch_mult, b->inv_batch_shift,
                                grad, &e);
        }
    }
    *grad_e = e;
    {
        /* (sum + N/2) // N, floor division */
        const int64_t num = total + batch / 2;
        int64_t q = num / batch;
        if (num % batch != 0 && num < 0) {
            q -= 1;
        }
        *loss_mean = (int32_t)q;
    }
    return MT_OK;
}
