/**
 * @file mt_pointwise_conv2d_fwd_s8.c
 * @brief 1x1 stride-1 unpadded int8 conv2d (a matrix-vector product per pixel); same results as
 *        mt_conv2d_fwd_s8 and compiler/ops/conv.py Conv2D.forward_int8.
 */
#include "mt_kernels_fwd.h"

size_t mt_pointwise_conv2d_fwd_s8_scratch_bytes(const mt_dims *in_dims, const mt_dims *filter_dims)
{
    (void)filter_dims;
    return (size_t)in_dims->c * sizeof(int16_t);
}

mt_status mt_pointwise_conv2d_fwd_s8(void *scratch, const mt_conv_params *p,
                                     const mt_per_channel_quant *q,
                                     const mt_dims *in_dims, const int8_t *in,
                                     const mt_dims *filter_dims, const int8_t *w,
                                     const int32_t *bias, const mt_dims *out_dims, int8_t *out)
{
    int16_t *row = (int16_t *)scratch;
    const int32_t in_c = in_dims->c;
    const int32_t out_c = filter_dims->n;
    const int32_t pixels = in_dims->n * in_dims->h * in_dims->w;
    int32_t px, o, c;

    if (scratch == NULL || filter_dims->h != 1 || filter_dims->w != 1 || filter_dims->c != in_c ||
        p->stride.h != 1 || p->stride.w != 1 || p->padding.top != 0 || p->padding.left != 0 ||
        p->padding.bottom != 0 || p->padding.right != 0 || out_dims->n != in_dims->n ||
        out_dims->h != in_dims->h || out_dims->w != in_dims->w || out_dims->c != out_c) {
        return MT_ERR_ARG;
    }
    for (px = 0; px < pixels; ++px) {
        const int8_t *x = in + (size_t)px * in_c;
        for (c = 0; c < in_c; ++c) {
            row[c] = (int16_t)((int32_t)x[c] - p->in_zp); /* [-255, 255] */
        }
        for (o = 0; o < out_c; ++o) {
            const int8_t *w_o = mt_wrow(w, &p->split, o, (size_t)in_c);
            int32_t acc0 = (bias != NULL) ? bias[o] : 0;
            int32_t acc1 = 0;
            for (c = 0; c + 1 < in_c; c += 2) {
                acc0 += (int32_t)row[c] * (int32_t)w_o[c];
                acc1 += (int32_t)row[c + 1] * (int32_t)w_o[c + 1];
            }
            if (c < in_c) {
                acc0 += (int32_t)row[c] * (int32_t)w_o[c];
            }
            *out++ = mt_requantize_s8(acc0 + acc1, q->mult[o], (int)q->shift[o], p->out_zp,
                                      p->act_min, p->act_max);
        }
    }
    return MT_OK;
}
