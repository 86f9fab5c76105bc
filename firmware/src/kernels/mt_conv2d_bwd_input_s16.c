/**
 * @file mt_conv2d_bwd_input_s16.c
 * @brief conv2d input gradient; bit-exact with Conv2D.backward_int8 position 0:
 *        gs = headroom(scale_channels(g), w_bits, Cout*KH*KW), gx = renormalize(sum over taps of
 *        gs @ w[:, i, j, :]) cropped to the unpadded input. Gather form (one accumulator per
 *        input element).
 */
#include "mt_kernels_train.h"

size_t mt_conv2d_bwd_input_s16_scratch_bytes(const mt_conv_train_params *p, int gs_aliases_g,
                                             int single_pass)
{
    size_t bytes = 0u;
    if (!gs_aliases_g) {
        bytes += (size_t)p->out.n * (size_t)p->out.h * (size_t)p->out.w * (size_t)p->out.c *
                 sizeof(int16_t);
        bytes = (bytes + 3u) & ~(size_t)3u;
    }
    if (single_pass) {
        bytes += (size_t)p->in.n * (size_t)p->in.h * (size_t)p->in.w * (size_t)p->in.c *
                 sizeof(int32_t);
    }
    return bytes;
}

/* sum_{i,j,o} gs[n,oh,ow,o] * w[o,i,j,c] over the taps that reach input pixel (h, x) */
static int32_t dx_acc(const mt_conv_train_params *p, const int16_t *gs, const int8_t *w,
                      int32_t n, int32_t h, int32_t x, int32_t c)
{
    const int32_t kh = p->kernel.h, kw = p->kernel.w, cin = p->in.c, cout = p->out.c;
    const size_t wstride = (size_t)kh * (size_t)kw * (size_t)cin;
    int32_t i, j, o, acc = 0;
    for (i = 0; i < kh; ++i) {
        const int32_t hp = h + p->padding.top - i * p->dilation.h;
        int32_t oh;
        if (hp < 0 || hp % p->stride.h != 0) {
            continue;
        }
        oh = hp / p->stride.h;
        if (oh >= p->out.h) {
            continue;
        }
        for (j = 0; j < kw; ++j) {
            const int32_t wp = x + p->padding.left - j * p->dilation.w;
            int32_t ow;
            const int16_t *gp;
            size_t wq;
            if (wp < 0 || wp % p->stride.w != 0) {
                continue;
            }
            ow = wp / p->stride.w;
            if (ow >= p->out.w) {
                continue;
            }
            gp = gs + (((size_t)n * (size_t)p->out.h + (size_t)oh) * (size_t)p->out.w + (size_t)ow) *
                          (size_t)cout;
            wq = ((size_t)i * (size_t)kw + (size_t)j) * (size_t)cin + (size_t)c;
            for (o = 0; o < cout; ++o) {
                acc += (int32_t)gp[o] * (int32_t)mt_wrow(w, &p->split, o, wstride)[wq];
            }
        }
    }
    return acc;
}

/* Scatter form into the int32 scratch (one accumulator per input element): every output pixel's
 * scaled gradient times each valid tap's weight row, added over the input channels (contiguous
 * in x and w). Sums the same terms as dx_acc; int32 sums do not depend on the order (the
 * headroom bounds every partial sum). */
static void axpy_s8(int32_t *a, int32_t gv, const int8_t *wr, int32_t len)
{
    int32_t c;
    for (c = 0; c < len; ++c) {
        a[c] += gv * (int32_t)wr[c];
    }
}

static void dx_scatter(const mt_conv_train_params *p, const int16_t *gs, const int8_t *w, int32_t *acc)
{
    const int32_t kh = p->kernel.h, kw = p->kernel.w, cin = p->in.c, cout = p->out.c;
    const int32_t dh = p->dilation.h, dw = p->dilation.w;
    const size_t wstride = (size_t)kh * (size_t)kw * (size_t)cin;
    const int32_t xsize = p->in.n * p->in.h * p->in.w * cin;
    int32_t i, n, oh, ow, ky, kx, o;
    for (i = 0; i < xsize; ++i) {
        acc[i] = 0;
    }
    for (n = 0; n < p->out.n; ++n) {
        for (oh = 0; oh < p->out.h; ++oh) {
            const int32_t y0 = oh * p->stride.h - p->padding.top;
            const int32_t ky_lo = (y0 >= 0) ? 0 : (-y0 + dh - 1) / dh;
            const int32_t ky_top = (p->in.h - y0 + dh - 1) / dh;
            const int32_t ky_hi = (ky_top < kh) ? ky_top : kh;
            for (ow = 0; ow < p->out.w; ++ow) {
                const int32_t x0 = ow * p->stride.w - p->padding.left;
                const int32_t kx_lo = (x0 >= 0) ? 0 : (-x0 + dw - 1) / dw;
                const int32_t kx_top = (p->in.w - x0 + dw - 1) / dw;
                const int32_t kx_hi = (kx_top < kw) ? kx_top : kw;
                const int16_t *gp = gs + (((size_t)n * (size_t)p->out.h + (size_t)oh) * (size_t)p->out.w +
                                          (size_t)ow) * (size_t)cout;
                for (o = 0; o < cout; ++o) {
                    const int32_t gv = gp[o];
                    const int8_t *wo;
                    if (gv == 0) {
                        continue;
                    }
                    wo = mt_wrow(w, &p->split, o, wstride);
                    for (ky = ky_lo; ky < ky_hi; ++ky) {
                        const int32_t h = y0 + ky * dh;
                        int32_t *a_row = acc + ((size_t)n * (size_t)p->in.h + (size_t)h) * (size_t)p->in.w * (size_t)cin;
                        const int8_t *w_row = wo + (size_t)ky * (size_t)kw * (size_t)cin;
                        if (dw == 1) { /* the valid taps of this kernel row: one contiguous run */
                            axpy_s8(a_row + (size_t)(x0 + kx_lo) * (size_t)cin, gv, w_row + (size_t)kx_lo * (size_t)cin,
                                    (kx_hi - kx_lo) * cin);
                            continue;
                        }
                        for (kx = kx_lo; kx < kx_hi; ++kx) {
                            axpy_s8(a_row + (size_t)(x0 + kx * dw) * (size_t)cin, gv, w_row + (size_t)kx * (size_t)cin,
                                    cin);
                        }
                    }
                }
            }
        }
    }
}

mt_status mt_conv2d_bwd_input_s16(const mt_conv_train_params *p, int16_t *gs, int32_t *acc,
                                  const int16_t *g, int32_t g_e, const int8_t *w, int16_t *gx,
                                  int32_t *gx_e)
{
    const int32_t gsize = p->out.n * p->out.h * p->out.w * p->out.c;
    const int32_t xsize = p->in.n * p->in.h * p->in.w * p->in.c;
    int32_t n, h, x, c, idx, gs_e, s, pass;
    uint32_t amax = 0u;
    if (p->in.n != p->out.n || p->kernel.h < 1 || p->kernel.w < 1 || p->stride.h < 1 ||
        p->stride.w < 1 || p->dilation.h < 1 || p->dilation.w < 1 || gsize < 1 || xsize < 1) {
        return MT_ERR_ARG;
    }
    mt_grad_mul_q31_s16(gsize, p->out.c, g, g_e, p->w_mult, p->w_shift, gs, &gs_e);
    mt_grad_headroom_s16(p->w_bits, p->out.c * p->kernel.h * p->kernel.w, gsize, gs, &gs_e);
    if (acc != NULL) {
        dx_scatter(p, gs, w, acc);
        return mt_grad_renormalize_s32(xsize, acc, gs_e, gx, gx_e);
    }
    s = 0;
    for (pass = 0; pass < 2; ++pass) { /* pass 0: max |acc|; pass 1: recompute, write */
        for (n = 0, idx = 0; n < p->in.n; ++n) {
            for (h = 0; h < p->in.h; ++h) {
                for (x = 0; x < p->in.w; ++x) {
                    for (c = 0; c < p->in.c; ++c, ++idx) {
                        const int32_t a = dx_acc(p, gs, w, n, h, x, c);
                        if (pass == 0) {
                            const uint32_t v = mt_uabs32(a);
                            amax = (v > amax) ? v : amax;
                        } else {
                            gx[idx] = (int16_t)mt_rshift_round32(a, s);
                        }
                    }
                }
            }
        }
        s = mt_grad_renorm_shift(amax);
    }
    *gx_e = gs_e + s;
    return MT_OK;
}
