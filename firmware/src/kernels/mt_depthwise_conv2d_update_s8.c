/**
 * @file mt_depthwise_conv2d_update_s8.c
 * @brief depthwise_conv2d weight gradient of channels [0, rows) fused with the SGD update;
 *        bit-exact with DepthwiseConv2D.backward_int8 position 1 (rows) followed by sgd_delta
 *        (axis 3) and Int8Trainer._apply. Slice [1, KH, KW, rows], visited in row-major order
 *        (i, j, o); two passes as conv2d.
 */
#include "mt_kernels_train.h"

size_t mt_depthwise_conv2d_update_s8_scratch_bytes(const mt_conv_train_params *p, int32_t rows)
{
    return (size_t)p->kernel.h * (size_t)p->kernel.w * (size_t)rows * sizeof(int32_t);
}

/* acc[0,i,j,o] = sum_{n,oh,ow} RDBPOT(g[n,oh,ow,o], sh) * (x[n, ., ., o / M] - in_zp) */
static int32_t dw_acc(const mt_conv_train_params *p, const int16_t *g, const int8_t *x, int32_t sh,
                      int32_t i, int32_t j, int32_t o)
{
    const int32_t c = o / (p->out.c / p->in.c);
    int32_t n, oh, ow, acc = 0;
    for (n = 0; n < p->out.n; ++n) {
        for (oh = 0; oh < p->out.h; ++oh) {
            const int32_t h = oh * p->stride.h + i * p->dilation.h - p->padding.top;
            if (h < 0 || h >= p->in.h) {
                continue;
            }
            for (ow = 0; ow < p->out.w; ++ow) {
                const int32_t xw = ow * p->stride.w + j * p->dilation.w - p->padding.left;
                int32_t gv;
                if (xw < 0 || xw >= p->in.w) {
                    continue;
                }
                gv = g[(((size_t)n * (size_t)p->out.h + (size_t)oh) * (size_t)p->out.w + (size_t)ow) *
                           (size_t)p->out.c + (size_t)o];
                gv = mt_rshift_round32(gv, sh);
                acc += gv * ((int32_t)x[(((size_t)n * (size_t)p->in.h + (size_t)h) * (size_t)p->in.w +
                                          (size_t)xw) * (size_t)p->in.c + (size_t)c] - p->in_zp);
            }
        }
    }
    return acc;
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
    int32_t q, o, i, j, idx, sh, pmax = 0, nmin = 0;
    mt_wgrad_norm wn;
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
    for (q = 0; q < pixels; ++q) { /* headroom of g[..., :rows] */
        for (o = 0; o < rows; ++o) {
            const uint32_t a = mt_uabs32(g[(size_t)q * (size_t)cout + (size_t)o]);
            amax = (a > amax) ? a : amax;
        }
    }
    sh = mt_grad_headroom_shift(amax, p->x_bits, pixels);
    for (i = 0, idx = 0; i < kh; ++i) { /* pass 1: extremes of the accumulators */
        for (j = 0; j < kw; ++j) {
            for (o = 0; o < rows; ++o, ++idx) {
                const int32_t a = dw_acc(p, g, x, sh, i, j, o);
                if (acc != NULL) {
                    acc[idx] = a;
                }
                pmax = (a > pmax) ? a : pmax;
                nmin = (a < nmin) ? a : nmin;
            }
        }
    }
    wn = mt_wgrad_norm_make(u, pmax, nmin, g_e + sh, p->x_mult, p->x_shift);
    for (i = 0, idx = 0; i < kh; ++i) { /* pass 2: slice order (i, j, o) */
        for (j = 0; j < kw; ++j) {
            int8_t *wt = w + ((size_t)i * (size_t)kw + (size_t)j) * (size_t)cout;
            for (o = 0; o < rows; ++o, ++idx) {
                const int32_t a = (acc != NULL) ? acc[idx] : dw_acc(p, g, x, sh, i, j, o);
                const int32_t m = mt_wgrad_mant(&wn, a, p->x_mult);
                if (grad != NULL) {
                    grad[idx] = (int16_t)m;
                }
                if (update) {
                    wt[o] = mt_sgd_apply_w8_elem(u, st, idx, wt[o], mt_sgd_delta_elem(u, &wn.q, m, o));
                }
            }
        }
    }
    if (grad_e != NULL) {
        *grad_e = wn.e;
    }
    return MT_OK;
}
