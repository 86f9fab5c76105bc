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

/* Output channels per tile: the weight sums of a tile live on the stack (4 * MT_CONV_TILE bytes). */
#define MT_CONV_TILE 32
/* Windows of at most this many elements (KH*KW*Cin) are gathered into a stack patch of int16
 * x - in_zp, padding 0, so every output channel is one contiguous dot product; larger windows are
 * read in place, one run per kernel row. */
#define MT_CONV_PATCH 256

/* the window of output pixel (y0, x0) into patch[KH*KW*Cin] as x - in_zp, padding 0 */
static void gather_patch(int16_t *patch, const int8_t *in_b, int32_t in_h, int32_t in_w, int32_t in_c,
                         int32_t k_h, int32_t k_w, int32_t y0, int32_t x0, const mt_conv_params *p)
{
    const int32_t dw = p->dilation.w;
    const int32_t kx_first = (x0 >= 0) ? 0 : (-x0 + dw - 1) / dw;
    const int32_t kx_lo = (kx_first < k_w) ? kx_first : k_w;
    const int32_t kx_top = (in_w - x0 + dw - 1) / dw; /* taps [kx_lo, kx_hi) are inside the row */
    const int32_t kx_hi = (kx_top < kx_lo) ? kx_lo : ((kx_top < k_w) ? kx_top : k_w);
    const size_t row = (size_t)k_w * (size_t)in_c;
    const int16_t pad = 0; /* (zp - zp): padding contributes nothing */
    int32_t ky, kx;
    size_t c;
    for (ky = 0; ky < k_h; ++ky) {
        const int32_t iy = y0 + ky * p->dilation.h;
        int16_t *dst = patch + (size_t)ky * row;
        if (iy < 0 || iy >= in_h) {
            for (c = 0; c < row; ++c) {
                dst[c] = pad;
            }
            continue;
        }
        for (c = 0; c < (size_t)kx_lo * (size_t)in_c; ++c) {
            dst[c] = pad;
        }
        if (dw == 1) { /* the valid taps of this row are one contiguous run of the input */
            const int8_t *src = in_b + ((size_t)iy * (size_t)in_w + (size_t)(x0 + kx_lo)) * (size_t)in_c;
            const size_t len = (size_t)(kx_hi - kx_lo) * (size_t)in_c;
            int16_t *d = dst + (size_t)kx_lo * (size_t)in_c;
            for (c = 0; c < len; ++c) {
                d[c] = (int16_t)((int32_t)src[c] - p->in_zp);
            }
        } else {
            for (kx = kx_lo; kx < kx_hi; ++kx) {
                const int8_t *src = in_b + ((size_t)iy * (size_t)in_w + (size_t)(x0 + kx * dw)) * (size_t)in_c;
                int16_t *d = dst + (size_t)kx * (size_t)in_c;
                for (c = 0; c < (size_t)in_c; ++c) {
                    d[c] = (int16_t)((int32_t)src[c] - p->in_zp);
                }
            }
        }
        for (c = (size_t)kx_hi * (size_t)in_c; c < row; ++c) {
            dst[c] = pad;
        }
    }
}

/* sum_k x[k] * w[k] over one contiguous run (vectorisable: no zero point inside the loop) */
static int32_t dot_s8(const int8_t *x, const int8_t *w, int32_t len)
{
    int32_t c, a = 0;
    for (c = 0; c < len; ++c) {
        a += (int32_t)x[c] * (int32_t)w[c];
    }
    return a;
}

static int32_t dot_s16(const int16_t *x, const int8_t *w, int32_t len)
{
    int32_t c, a = 0;
    for (c = 0; c < len; ++c) {
        a += (int32_t)x[c] * (int32_t)w[c];
    }
    return a;
}

static int32_t sum_s8(const int8_t *w, int32_t len)
{
    int32_t c, a = 0;
    for (c = 0; c < len; ++c) {
        a += (int32_t)w[c];
    }
    return a;
}

/*
 * acc = bias + sum over valid taps of (x - in_zp) * w = bias + sum x*w - in_zp * sum w.
 * The sum of w over the whole window is computed once per output channel (per tile); border
 * pixels, whose windows are cut by the padding, sum the weights of their valid taps instead.
 * Integer sums are exact, so this is the same integer as the reference for every pixel.
 */
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
    const size_t w_len = (size_t)k_h * (size_t)k_w * (size_t)in_c;
    int32_t wsum[MT_CONV_TILE];
    int16_t patch[MT_CONV_PATCH];
    int32_t b, oy, ox, o, o0;

    if (filter_dims->c != in_c || out_dims->c != out_c || out_dims->n != in_dims->n ||
        p->stride.h < 1 || p->stride.w < 1 || p->dilation.h < 1 || p->dilation.w < 1) {
        return MT_ERR_ARG;
    }
    for (o0 = 0; o0 < out_c; o0 += MT_CONV_TILE) {
        const int32_t o1 = (o0 + MT_CONV_TILE < out_c) ? o0 + MT_CONV_TILE : out_c;
        for (o = o0; o < o1; ++o) {
            wsum[o - o0] = sum_s8(mt_wrow(w, &p->split, o, w_len), (int32_t)w_len);
        }
        for (b = 0; b < in_dims->n; ++b) {
            const int8_t *in_b = in + (size_t)b * in_h * in_w * in_c;
            int8_t *out_b = out + (size_t)b * out_dims->h * out_dims->w * out_c;
            for (oy = 0; oy < out_dims->h; ++oy) {
                const int32_t y0 = oy * p->stride.h - p->padding.top;
                /* taps ky in [ky_lo, ky_hi) are inside the input rows */
                const int32_t ky_lo = (y0 >= 0) ? 0 : (-y0 + p->dilation.h - 1) / p->dilation.h;
                const int32_t ky_top = (in_h - y0 + p->dilation.h - 1) / p->dilation.h;
                const int32_t ky_hi = (ky_top < k_h) ? ky_top : k_h;
                for (ox = 0; ox < out_dims->w; ++ox) {
                    const int32_t x0 = ox * p->stride.w - p->padding.left;
                    const int32_t kx_lo = (x0 >= 0) ? 0 : (-x0 + p->dilation.w - 1) / p->dilation.w;
                    const int32_t kx_top = (in_w - x0 + p->dilation.w - 1) / p->dilation.w;
                    const int32_t kx_hi = (kx_top < k_w) ? kx_top : k_w;
                    const int full = ky_lo == 0 && ky_hi == k_h && kx_lo == 0 && kx_hi == k_w;
                    int8_t *out_px = out_b + ((size_t)oy * out_dims->w + ox) * out_c;
                    if (w_len <= MT_CONV_PATCH) {
                        gather_patch(patch, in_b, in_h, in_w, in_c, k_h, k_w, y0, x0, p);
                        for (o = o0; o < o1; ++o) {
                            int32_t acc = dot_s16(patch, mt_wrow(w, &p->split, o, w_len), (int32_t)w_len);
                            if (bias != NULL) {
                                acc += bias[o];
                            }
                            out_px[o] = mt_requantize_s8(acc, q->mult[o], (int)q->shift[o], p->out_zp,
                                                         p->act_min, p->act_max);
                        }
                        continue;
                    }
                    for (o = o0; o < o1; ++o) {
                        const int8_t *w_o = mt_wrow(w, &p->split, o, w_len);
                        int32_t acc = 0, ws = 0;
                        int32_t ky, kx;
                        for (ky = ky_lo; ky < ky_hi; ++ky) {
                            const int32_t iy = y0 + ky * p->dilation.h;
                            const int8_t *x_row = in_b + ((size_t)iy * in_w) * in_c;
                            const int8_t *w_row = w_o + (size_t)ky * k_w * in_c;
                            if (p->dilation.w == 1) { /* one contiguous run of (kx_hi - kx_lo) * in_c */
                                const int32_t len = (kx_hi - kx_lo) * in_c;
                                const int8_t *wp = w_row + (size_t)kx_lo * in_c;
                                acc += dot_s8(x_row + (size_t)(x0 + kx_lo) * in_c, wp, len);
                                if (!full) {
                                    ws += sum_s8(wp, len);
                                }
                                continue;
                            }
                            for (kx = kx_lo; kx < kx_hi; ++kx) {
                                const int8_t *wp = w_row + (size_t)kx * in_c;
                                acc += dot_s8(x_row + (size_t)(x0 + kx * p->dilation.w) * in_c, wp, in_c);
                                if (!full) {
                                    ws += sum_s8(wp, in_c);
                                }
                            }
                        }
                        acc -= in_zp * (full ? wsum[o - o0] : ws);
                        if (bias != NULL) {
                            acc += bias[o];
                        }
                        out_px[o] = mt_requantize_s8(acc, q->mult[o], (int)q->shift[o], p->out_zp,
                                                     p->act_min, p->act_max);
                    }
                }
            }
        }
    }
    return MT_OK;
}
