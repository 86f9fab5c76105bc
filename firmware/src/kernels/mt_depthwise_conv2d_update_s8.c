/**
 * @file mt_depthwise_conv2d_update_s8.c
 * @brief depthwise_conv2d weight gradient of channels [0, rows) fused with the SGD update;
 *        bit-exact with DepthwiseConv2D.backward_int8 position 1 (rows) followed by sgd_delta
 *        (axis 3) and Int8Trainer._apply. Slice [1, KH, KW, rows], visited in row-major order
 *        (i, j, o); two passes as conv2d (pass 1 into the optional scratch, or recomputed).
 *
 * For one tap (i, j) the output pixels whose input position is inside the image form a rectangle
 * (computed once per tap), and with a channel multiplier of 1 the channels o of g and of x are
 * both contiguous: four channels share each pixel's address arithmetic, the sums stay in
 * registers. Channel multipliers M > 1 take the one-channel loop (x channel o / M).
 */
#include "mt_kernels_train.h"

size_t mt_depthwise_conv2d_update_s8_scratch_bytes(const mt_conv_train_params *p, int32_t rows)
{
    return (size_t)p->kernel.h * (size_t)p->kernel.w * (size_t)rows * sizeof(int32_t);
}

/* first output index with o * s + off >= 0 and one past the last with o * s + off < len, within
 * [0, out) */
static void valid_range(int32_t off, int32_t s, int32_t len, int32_t out, int32_t *lo, int32_t *hi)
{
    int32_t a = (off >= 0) ? 0 : (-off + s - 1) / s;
    int32_t b = (len - 1 - off >= 0) ? (len - 1 - off) / s + 1 : 0;
    a = (a < out) ? a : out;
    b = (b < out) ? b : out;
    *lo = a;
    *hi = (b > a) ? b : a;
}

/* out[0..cnt) = accumulators of tap (i, j), channels o0 .. o0 + cnt (cnt <= 4; cnt > 1 only
 * with M = 1): sum over the tap's valid pixels of RDBPOT(g, sh) * (x - zp); int32 sums wrap in
 * uint32 (the true sums are within int32: headroom) */
static void dw_block(const mt_conv_train_params *p, const int16_t *g, const int8_t *x, int32_t sh,
                     int32_t i, int32_t j, int32_t o0, int32_t cnt, int32_t *out)
{
    const int32_t cin = p->in.c, cout = p->out.c, zp = p->in_zp;
    const int32_t c0 = o0 / (cout / cin);
    const size_t gstep = (size_t)cout, xstep = (size_t)p->stride.w * (size_t)cin;
    int32_t oh0, oh1, ow0, ow1, n, oh, k;
    uint32_t s0 = 0u, s1 = 0u, s2 = 0u, s3 = 0u;
    valid_range(i * p->dilation.h - p->padding.top, p->stride.h, p->in.h, p->out.h, &oh0, &oh1);
    valid_range(j * p->dilation.w - p->padding.left, p->stride.w, p->in.w, p->out.w, &ow0, &ow1);
    for (n = 0; n < p->out.n && ow1 > ow0; ++n) {
        for (oh = oh0; oh < oh1; ++oh) {
            const int32_t h = oh * p->stride.h + i * p->dilation.h - p->padding.top;
            const int32_t w0 = ow0 * p->stride.w + j * p->dilation.w - p->padding.left;
            const int16_t *gp = g + (((size_t)n * (size_t)p->out.h + (size_t)oh) * (size_t)p->out.w +
                                     (size_t)ow0) * gstep + (size_t)o0;
            const int8_t *xp = x + (((size_t)n * (size_t)p->in.h + (size_t)h) * (size_t)p->in.w +
                                    (size_t)w0) * (size_t)cin + (size_t)c0;
            const int16_t *gend = gp + (size_t)(ow1 - ow0) * gstep;
            if (cnt == 4 && sh == 0) {
                for (; gp != gend; gp += gstep, xp += xstep) {
                    s0 += (uint32_t)((int32_t)gp[0] * ((int32_t)xp[0] - zp));
                    s1 += (uint32_t)((int32_t)gp[1] * ((int32_t)xp[1] - zp));
                    s2 += (uint32_t)((int32_t)gp[2] * ((int32_t)xp[2] - zp));
                    s3 += (uint32_t)((int32_t)gp[3] * ((int32_t)xp[3] - zp));
                }
            } else {
                for (; gp != gend; gp += gstep, xp += xstep) {
                    for (k = 0; k < cnt; ++k) {
                        const int32_t gv = (sh > 0) ? mt_rdbpot(gp[k], (int)sh) : (int32_t)gp[k];
                        const uint32_t v = (uint32_t)(gv * ((int32_t)xp[k] - zp));
                        if (k == 0) {
                            s0 += v;
                        } else if (k == 1) {
                            s1 += v;
                        } else if (k == 2) {
                            s2 += v;
                        } else {
                            s3 += v;
                        }
                    }
                }
            }
        }
    }
    out[0] = mt_wrap32(s0);
    if (cnt > 1) {
        out[1] = mt_wrap32(s1);
    }
    if (cnt > 2) {
        out[2] = mt_wrap32(s2);
    }
    if (cnt > 3) {
        out[3] = mt_wrap32(s3);
    }
}

mt_status mt_depthwise_conv2d_update_s8(const mt_conv_train_params *p, const mt_sgd_params *u,
                                        mt_sgd_state *st, int32_t rows, int32_t *acc,
                                        const int16_t *g, int32_t g_e, const int8_t *x,
                                        int8_t *w, int16_t *grad, int32_t *grad_e)
{
    const int32_t kh = p->kernel.h, kw = p->kernel.w, cout = p->out.c;
    const int32_t pixels = p->out.n * p->out.h * p->out.w;
    const int update = (u->lr_mult != 0);
    uint32_t amax = 0u;
    int32_t o, i, j, k, idx, sh, pmax = 0, nmin = 0;
    int32_t buf[4];
    mt_wupd c;
    if (p->in.n != p->out.n || p->in.c < 1 || cout % p->in.c != 0 || kh < 1 || kw < 1 ||
        pixels < 1 || rows < 1 || rows > cout) {
        return MT_ERR_ARG;
    }
    if (update && st->kind != MT_APPLY_MASTER && st->kind != MT_APPLY_STOCHASTIC) {
        return MT_ERR_ARG;
    }
    if (!update && grad == NULL) {
        return MT_OK;
    }
    amax = mt_grad_or_abs16(g, pixels, cout, rows); /* headroom of g[..., :rows] */
    sh = mt_grad_headroom_shift(amax, p->x_bits, pixels);
    for (i = 0, idx = 0; i < kh; ++i) { /* pass 1: extremes of the accumulators */
        for (j = 0; j < kw; ++j) {
            for (o = 0; o < rows; o += 4) {
                const int32_t cnt = (rows - o < 4) ? rows - o : 4;
                int32_t *a = (acc != NULL) ? acc + idx + o : buf;
                if (p->out.c == p->in.c) {
                    dw_block(p, g, x, sh, i, j, o, cnt, a);
                } else {
                    for (k = 0; k < cnt; ++k) {
                        dw_block(p, g, x, sh, i, j, o + k, 1, a + k);
                    }
                }
                for (k = 0; k < cnt; ++k) {
                    pmax = (a[k] > pmax) ? a[k] : pmax;
                    nmin = (a[k] < nmin) ? a[k] : nmin;
                }
            }
            idx += rows;
        }
    }
    mt_wupd_init(&c, u, st, pmax, nmin, g_e + sh, p->x_mult, p->x_shift, grad);
    for (i = 0, idx = 0; i < kh; ++i) { /* pass 2: slice order (i, j, o) */
        for (j = 0; j < kw; ++j) {
            int8_t *wt = w + ((size_t)i * (size_t)kw + (size_t)j) * (size_t)cout;
            for (o = 0; o < rows; o += 4) {
                const int32_t cnt = (rows - o < 4) ? rows - o : 4;
                const int32_t *a = (acc != NULL) ? acc + idx + o : buf;
                if (acc == NULL) {
                    if (p->out.c == p->in.c) {
                        dw_block(p, g, x, sh, i, j, o, cnt, buf);
                    } else {
                        for (k = 0; k < cnt; ++k) {
                            dw_block(p, g, x, sh, i, j, o + k, 1, buf + k);
                        }
                    }
                }
                for (k = 0; k < cnt; ++k) {
                    mt_wupd_row(&c, o + k, idx + o + k, 1, a + k, wt + o + k);
                }
            }
            idx += rows;
        }
    }
    if (grad_e != NULL) {
        *grad_e = c.wn.e;
    }
    return MT_OK;
}
