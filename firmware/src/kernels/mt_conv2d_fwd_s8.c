/**
 * @file mt_conv2d_fwd_s8.c
 * @brief General int8 conv2d forward (NHWC activations, OHWI weights); bit-exact with
 *        compiler/ops/conv.py Conv2D.forward_int8.
 */
#include "mt_kernels_fwd.h"

size_t mt_conv2d_fwd_s8_scratch_bytes(const mt_dims *in_dims, const mt_dims *filter_dims)
{
    (void)in_dims;
    (void)filter_dims;
    return 0u;
}

mt_status mt_conv2d_fwd_s8(const mt_conv_params *p, const mt_per_channel_quant *q,
                           const mt_dims *in_dims, const int8_t *in,
                           const mt_dims *filter_dims, const int8_t *w, const int32_t *bias,
                           const mt_dims *out_dims, int8_t *out)
{
    const int32_t in_h = in_dims->h;
    const int32_t in_w = in_dims->w;
    const int32_t in_c = in_dims->c;
    const int32_t out_c = filter_dims->n;
    const int32_t k_h = filter_dims->h;
    const int32_t k_w = filter_dims->w;
    const int32_t in_zp = p->in_zp;
    int32_t b, oy, ox, o;

    if (filter_dims->c != in_c || out_dims->c != out_c || out_dims->n != in_dims->n ||
        p->stride.h < 1 || p->stride.w < 1 || p->dilation.h < 1 || p->dilation.w < 1) {
        return MT_ERR_ARG;
    }
    for (b = 0; b < in_dims->n; ++b) {
        const int8_t *in_b = in + (size_t)b * in_h * in_w * in_c;
        for (oy = 0; oy < out_dims->h; ++oy) {
            const int32_t y0 = oy * p->stride.h - p->padding.top;
            for (ox = 0; ox < out_dims->w; ++ox) {
                const int32_t x0 = ox * p->stride.w - p->padding.left;
                for (o = 0; o < out_c; ++o) {
                    const int8_t *w_o = mt_wrow(w, &p->split, o, (size_t)k_h * k_w * in_c);
                    int32_t acc = (bias != NULL) ? bias[o] : 0;
                    int32_t ky, kx, c;
                    for (ky = 0; ky < k_h; ++ky) {
                        const int32_t iy = y0 + ky * p->dilation.h;
                        if (iy < 0 || iy >= in_h) {
                            continue;
                        }
                        for (kx = 0; kx < k_w; ++kx) {
                            const int32_t ix = x0 + kx * p->dilation.w;
                            const int8_t *x_px;
                            const int8_t *w_px;
                            if (ix < 0 || ix >= in_w) {
                                continue;
                            }
                            x_px = in_b + ((size_t)iy * in_w + ix) * in_c;
                            w_px = w_o + ((size_t)ky * k_w + kx) * in_c;
                            for (c = 0; c < in_c; ++c) {
                                acc += ((int32_t)x_px[c] - in_zp) * (int32_t)w_px[c];
                            }
                        }
                    }
                    *out++ = mt_requantize_s8(acc, q->mult[o], (int)q->shift[o], p->out_zp,
                                              p->act_min, p->act_max);
                }
            }
        }
    }
    return MT_OK;
}
