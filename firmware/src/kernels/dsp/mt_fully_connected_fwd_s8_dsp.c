/**
 * @file mt_fully_connected_fwd_s8_dsp.c
 * @brief int8 fully connected forward with the Arm DSP extension; same results as
 *        mt_fully_connected_fwd_s8.
 *
 * No scratch (as the portable kernel): the input row is widened on the fly with SXTAB16
 * (x - in_zp) and shared by two output channels per pass; the weights are widened with SXTAB16 as
 * well (w - w_zp, so per-tensor weight zero points cost nothing extra); SMLAD adds the products.
 */
#include "mt_dsp.h"
#include "mt_kernels_dsp.h"

mt_status mt_fully_connected_fwd_s8_dsp(const mt_fc_params *p, const mt_per_channel_quant *q,
                                        int32_t batch, int32_t in_features, const int8_t *in,
                                        int32_t out_features, const int8_t *w,
                                        const int32_t *bias, int8_t *out)
{
    const uint32_t xoff2 = mt_dup16(-p->in_zp);
    const uint32_t woff2 = mt_dup16(-p->w_zp);
    int32_t n, o;
    if (batch < 0 || in_features < 1 || out_features < 1) {
        return MT_ERR_ARG;
    }
    for (n = 0; n < batch; ++n) {
        const int8_t *x = in + (size_t)n * (size_t)in_features;
        for (o = 0; o < out_features; o += 2) {
            const int8_t *w0 = mt_wrow(w, &p->split, o, (size_t)in_features);
            int32_t acc0 = (bias != NULL) ? bias[o] : 0;
            if (o + 1 < out_features) {
                const int8_t *w1 = mt_wrow(w, &p->split, o + 1, (size_t)in_features);
                int32_t acc1 = (bias != NULL) ? bias[o + 1] : 0;
                mt_dot2_s8(x, w0, w1, in_features, xoff2, woff2, &acc0, &acc1);
                *out++ = mt_requantize_s8(acc0, q->mult[o], (int)q->shift[o], p->out_zp,
                                          p->act_min, p->act_max);
                *out++ = mt_requantize_s8(acc1, q->mult[o + 1], (int)q->shift[o + 1], p->out_zp,
                                          p->act_min, p->act_max);
            } else {
                acc0 = mt_dot1_s8(x, w0, in_features, xoff2, woff2, acc0);
                *out++ = mt_requantize_s8(acc0, q->mult[o], (int)q->shift[o], p->out_zp,
                                          p->act_min, p->act_max);
            }
        }
    }
    return MT_OK;
}
