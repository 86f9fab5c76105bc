/**
 * @file mt_pointwise_conv2d_fwd_s8_dsp.c
 * @brief 1x1 stride-1 unpadded int8 conv2d with the Arm DSP extension; same results as
 *        mt_pointwise_conv2d_fwd_s8 (and mt_conv2d_fwd_s8).
 *
 * Per pixel the input row (x - in_zp) is widened once into the int16 scratch with SXTAB16, in the
 * order SXTB16 leaves the weights in: each group of 4 channels is stored {x0, x2, x1, x3}, so the
 * inner loop is 3 loads, 2 SXTB16 and 2 SMLAD per 4 channels and output channel, with two output
 * channels per pass (the input words are loaded once for both). Same scratch size as the portable
 * kernel (Cin int16); the tail channels (Cin % 4) are plain.
 */
#include "mt_dsp.h"
#include "mt_kernels_dsp.h"

/* *a0 (+ *a1 when w1 != NULL) += row . w (row in the reordered layout above) */
static void dot_row(const int16_t *row, const int8_t *w0, const int8_t *w1, int32_t len,
                    int32_t *a0, int32_t *a1)
{
    int32_t s0 = *a0, s1 = *a1, c = 0;
    if (w1 != NULL) {
        for (; c + 4 <= len; c += 4) {
            const uint32_t x02 = mt_read_s16x2(row + c);
            const uint32_t x13 = mt_read_s16x2(row + c + 2);
            const uint32_t u0 = mt_read_s8x4(w0 + c);
            const uint32_t u1 = mt_read_s8x4(w1 + c);
            s0 = mt_smlad(x02, mt_sxtb16(u0), s0);
            s0 = mt_smlad(x13, mt_sxtb16_ror8(u0), s0);
            s1 = mt_smlad(x02, mt_sxtb16(u1), s1);
            s1 = mt_smlad(x13, mt_sxtb16_ror8(u1), s1);
        }
        for (; c < len; ++c) {
            s0 = mt_wrap32((uint32_t)s0 + (uint32_t)((int32_t)row[c] * (int32_t)w0[c]));
            s1 = mt_wrap32((uint32_t)s1 + (uint32_t)((int32_t)row[c] * (int32_t)w1[c]));
        }
    } else {
        for (; c + 4 <= len; c += 4) {
            const uint32_t u0 = mt_read_s8x4(w0 + c);
            s0 = mt_smlad(mt_read_s16x2(row + c), mt_sxtb16(u0), s0);
            s0 = mt_smlad(mt_read_s16x2(row + c + 2), mt_sxtb16_ror8(u0), s0);
        }
        for (; c < len; ++c) {
            s0 = mt_wrap32((uint32_t)s0 + (uint32_t)((int32_t)row[c] * (int32_t)w0[c]));
        }
    }
    *a0 = s0;
    *a1 = s1;
}

mt_status mt_pointwise_conv2d_fwd_s8_dsp(void *scratch, const mt_conv_params *p,
                                         const mt_per_channel_quant *q,
                                         const mt_dims *in_dims, const int8_t *in,
                                         const mt_dims *filter_dims, const int8_t *w,
                                         const int32_t *bias, const mt_dims *out_dims, int8_t *out)
{
    int16_t *row = (int16_t *)scratch;
    const int32_t in_c = in_dims->c;
    const int32_t out_c = filter_dims->n;
    const int32_t pixels = in_dims->n * in_dims->h * in_dims->w;
    const uint32_t xoff2 = mt_dup16(-p->in_zp);
    int32_t px, o, c;

    if (scratch == NULL || filter_dims->h != 1 || filter_dims->w != 1 || filter_dims->c != in_c ||
        p->stride.h != 1 || p->stride.w != 1 || p->padding.top != 0 || p->padding.left != 0 ||
        p->padding.bottom != 0 || p->padding.right != 0 || out_dims->n != in_dims->n ||
        out_dims->h != in_dims->h || out_dims->w != in_dims->w || out_dims->c != out_c) {
        return MT_ERR_ARG;
    }
    for (px = 0; px < pixels; ++px) {
        const int8_t *x = in + (size_t)px * (size_t)in_c;
        for (c = 0; c + 4 <= in_c; c += 4) { /* {x0, x2, x1, x3} - in_zp, in [-255, 255] */
            const uint32_t xv = mt_read_s8x4(x + c);
            mt_write_s16x2(row + c, mt_sxtab16(xoff2, xv));
            mt_write_s16x2(row + c + 2, mt_sxtab16_ror8(xoff2, xv));
        }
        for (; c < in_c; ++c) {
            row[c] = (int16_t)((int32_t)x[c] - p->in_zp);
        }
        for (o = 0; o < out_c; o += 2) {
            const int two = (o + 1 < out_c);
            const int8_t *w0 = mt_wrow(w, &p->split, o, (size_t)in_c);
            const int8_t *w1 = two ? mt_wrow(w, &p->split, o + 1, (size_t)in_c) : NULL;
            int32_t acc0 = (bias != NULL) ? bias[o] : 0;
            int32_t acc1 = (two && bias != NULL) ? bias[o + 1] : 0;
            dot_row(row, w0, w1, in_c, &acc0, &acc1);
            *out++ = mt_requantize_s8(acc0, q->mult[o], (int)q->shift[o], p->out_zp, p->act_min,
                                      p->act_max);
            if (two) {
                *out++ = mt_requantize_s8(acc1, q->mult[o + 1], (int)q->shift[o + 1], p->out_zp,
                                          p->act_min, p->act_max);
            }
        }
    }
    return MT_OK;
}
