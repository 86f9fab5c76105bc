/**
 * @file mt_conv2d_fwd_s8_dsp.c
 * @brief General int8 conv2d forward with the Arm DSP extension (SXTAB16 + SMLAD, two output
 *        channels per pass over the input window); same results as mt_conv2d_fwd_s8.
 *
 * With dilation.w == 1 the valid taps of one kernel row are contiguous in both the NHWC input row
 * and the OHWI weight row, so each kernel row is one dot product of (valid KW) * Cin elements
 * (long enough for the 4-wide SIMD loop even when Cin is 1..3); with dilation.w > 1 each tap is a
 * dot product of Cin elements. The int32 sums are the portable kernel's, reordered (exact: the
 * caller guarantees no overflow), then the same mt_requantize_s8.
 */
#include "mt_dsp.h"
#include "mt_kernels_dsp.h"

/* Window geometry of one output pixel: kernel rows [0, KH) are checked against the input height,
 * kernel columns [kx_lo, kx_hi] are the valid ones. */
typedef struct {
    const int8_t *in_b;
    int32_t in_h, in_w, in_c, k_h, k_w, dil_h, dil_w;
    int32_t y0, x0, kx_lo, kx_hi;
    uint32_t xoff2;
} window_t;

/* *acc0 (+ *acc1 when w1 != NULL) += the window sums of weight rows w0 (and w1) */
static void window_dot(const window_t *g, const int8_t *w0, const int8_t *w1, int32_t *acc0,
                       int32_t *acc1)
{
    int32_t ky, kx;
    for (ky = 0; ky < g->k_h; ++ky) {
        const int32_t iy = g->y0 + ky * g->dil_h;
        const int8_t *x_row;
        size_t w_row;
        if (iy < 0 || iy >= g->in_h) {
            continue;
        }
        x_row = g->in_b + (size_t)iy * (size_t)g->in_w * (size_t)g->in_c;
        w_row = (size_t)ky * (size_t)g->k_w;
        for (kx = g->kx_lo; kx <= g->kx_hi; ++kx) {
            /* dilation.w == 1: the whole valid run [kx_lo, kx_hi] at once */
            const int32_t run = (g->dil_w == 1) ? (g->kx_hi - g->kx_lo + 1) : 1;
            const size_t xo = (size_t)(g->x0 + kx * g->dil_w) * (size_t)g->in_c;
            const size_t wo = (w_row + (size_t)kx) * (size_t)g->in_c;
            if (w1 != NULL) {
                mt_dot2_s8(x_row + xo, w0 + wo, w1 + wo, run * g->in_c, g->xoff2, 0u, acc0, acc1);
            } else {
                *acc0 = mt_dot1_s8(x_row + xo, w0 + wo, run * g->in_c, g->xoff2, 0u, *acc0);
            }
            kx += run - 1;
        }
    }
}

mt_status mt_conv2d_fwd_s8_dsp(const mt_conv_params *p, const mt_per_channel_quant *q,
                               const mt_dims *in_dims, const int8_t *in,
                               const mt_dims *filter_dims, const int8_t *w, const int32_t *bias,
                               const mt_dims *out_dims, int8_t *out)
{
    const int32_t out_c = filter_dims->n;
    const size_t row_len = (size_t)filter_dims->h * (size_t)filter_dims->w * (size_t)in_dims->c;
    window_t g;
    int32_t b, oy, ox, o;

    if (filter_dims->c != in_dims->c || out_dims->c != out_c || out_dims->n != in_dims->n ||
        p->stride.h < 1 || p->stride.w < 1 || p->dilation.h < 1 || p->dilation.w < 1) {
        return MT_ERR_ARG;
    }
    g.in_h = in_dims->h;
    g.in_w = in_dims->w;
    g.in_c = in_dims->c;
    g.k_h = filter_dims->h;
    g.k_w = filter_dims->w;
    g.dil_h = p->dilation.h;
    g.dil_w = p->dilation.w;
    g.xoff2 = mt_dup16(-p->in_zp);
    for (b = 0; b < in_dims->n; ++b) {
        g.in_b = in + (size_t)b * (size_t)g.in_h * (size_t)g.in_w * (size_t)g.in_c;
        for (oy = 0; oy < out_dims->h; ++oy) {
            g.y0 = oy * p->stride.h - p->padding.top;
            for (ox = 0; ox < out_dims->w; ++ox) {
                g.x0 = ox * p->stride.w - p->padding.left;
                g.kx_lo = 0;
                g.kx_hi = g.k_w - 1;
                while (g.kx_lo < g.k_w && g.x0 + g.kx_lo * g.dil_w < 0) {
                    ++g.kx_lo;
                }
                while (g.kx_hi >= g.kx_lo && g.x0 + g.kx_hi * g.dil_w >= g.in_w) {
                    --g.kx_hi;
                }
                for (o = 0; o < out_c; o += 2) {
                    const int two = (o + 1 < out_c);
                    const int8_t *w0 = mt_wrow(w, &p->split, o, row_len);
                    const int8_t *w1 = two ? mt_wrow(w, &p->split, o + 1, row_len) : NULL;
                    int32_t acc0 = (bias != NULL) ? bias[o] : 0;
                    int32_t acc1 = (two && bias != NULL) ? bias[o + 1] : 0;
                    window_dot(&g, w0, w1, &acc0, &acc1);
                    *out++ = mt_requantize_s8(acc0, q->mult[o], (int)q->shift[o], p->out_zp,
                                              p->act_min, p->act_max);
                    if (two) {
                        *out++ = mt_requantize_s8(acc1, q->mult[o + 1], (int)q->shift[o + 1],
                                                  p->out_zp, p->act_min, p->act_max);
                    }
                }
            }
        }
    }
    return MT_OK;
}
