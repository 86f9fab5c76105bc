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
        for (n = 0, idx = 0; n < p->in.n; ++n) {
            for (h = 0; h < p->in.h; ++h) {
                for (x = 0; x < p->in.w; ++x) {
                    for (c = 0; c < p->in.c; ++c, ++idx) {
                        acc[idx] = dx_acc(p, gs, w, n, h, x, c);
                    }
                }
            }
        }
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
