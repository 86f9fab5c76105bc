/**
 * @file mt_depthwise_conv2d_fwd_s8.c
 * @brief int8 depthwise conv2d forward with depth multiplier (weights [1, KH, KW, Cin*M]);
 *        bit-exact with compiler/ops/conv.py DepthwiseConv2D.forward_int8.
 */
#include "mt_kernels_fwd.h"

size_t mt_depthwise_conv2d_fwd_s8_scratch_bytes(const mt_dims *in_dims, const mt_dims *filter_dims)
{
    (void)in_dims;
    (void)filter_dims;
    return 0u;
}

mt_status mt_depthwise_conv2d_fwd_s8(const mt_dw_conv_params *p, const mt_per_channel_quant *q,
                                     const mt_dims *in_dims, const int8_t *in,
                                     const mt_dims *filter_dims, const int8_t *w,
                                     const int32_t *bias, const mt_dims *out_dims, int8_t *out)
{
    const int32_t in_h = in_dims->h;
    const int32_t in_w = in_dims->w;
    const int32_t in_c = in_dims->c;
    const int32_t m = p->ch_mult;
    const int32_t out_c = in_c * m;
    const int32_t k_h = filter_dims->h;
    const int32_t k_w = filter_dims->w;
    const int32_t in_zp = p->in_zp;
    int32_t b, oy, ox, ci, j;

    if (m < 1 || filter_dims->n != 1 || filter_dims->c != out_c || out_dims->c != out_c ||
        out_dims->n != in_dims->n || p->stride.h < 1 || p->stride.w < 1 || p->dilation.h < 1 ||
        p->dilation.w < 1) {
        return MT_ERR_ARG;
    }
    for (b = 0; b < in_dims->n; ++b) {
        const int8_t *in_b = in + (size_t)b * in_h * in_w * in_c;
        for (oy = 0; oy < out_dims->h; ++oy) {
            const int32_t y0 = oy * p->stride.h - p->padding.top;
            for (ox = 0; ox < out_dims->w; ++ox) {
                const int32_t x0 = ox * p->stride.w - p->padding.left;
                for (ci = 0; ci < in_c; ++ci) {
                    for (j = 0; j < m; ++j) {
                        const int32_t o = ci * m + j;
                        int32_t acc = (bias != NULL) ? bias[o] : 0;
                        int32_t ky, kx;
                        for (ky = 0; ky < k_h; ++ky) {
                            const int32_t iy = y0 + ky * p->dilation.h;
                            if (iy < 0 || iy >= in_h) {
                                continue;
                            }
                            for (kx = 0; kx < k_w; ++kx) {
                                const int32_t ix = x0 + kx * p->dilation.w;
                                if (ix < 0 || ix >= in_w) {
                                    continue;
                                }
                                acc += ((int32_t)in_b[((size_t)iy * in_w + ix) * in_c + ci] - in_zp) *
                                       (int32_t)w[((size_t)ky * k_w + kx) * out_c + o];
                            }
                        }
                        *out++ = mt_requantize_s8(acc, q->mult[o], (int)q->shift[o], p->out_zp,
                                                  p->act_min, p->act_max);
                    }
                }
            }
        }
    }
    return MT_OK;
}
