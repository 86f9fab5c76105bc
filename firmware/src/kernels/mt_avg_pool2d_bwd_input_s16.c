/**
 * @file mt_avg_pool2d_bwd_input_s16.c
 * @brief avg_pool2d input gradient; bit-exact with AvgPool2D.backward_int8:
 *        gw = headroom(mul_q31(g, inv_count[count(oh, ow)], 1)), spread over each window's valid
 *        taps (int32), renormalised. Gather form, no scratch.
 */
#include "mt_kernels_train.h"

static int32_t span(int32_t start, int32_t k, int32_t size)
{
    const int32_t lo = (start > 0) ? start : 0;
    const int32_t hi = (start + k < size) ? start + k : size;
    return (hi > lo) ? hi - lo : 0;
}

static int32_t window_mult(const mt_pool_train_params *p, int32_t oh, int32_t ow)
{
    int32_t cnt = p->kernel.h * p->kernel.w;
    if (!p->count_include_pad) {
        cnt = span(oh * p->stride.h - p->padding.top, p->kernel.h, p->in.h) *
              span(ow * p->stride.w - p->padding.left, p->kernel.w, p->in.w);
    }
    return p->inv_count[cnt];
}

typedef struct {
    int32_t zero, lsh, sr, sh;
} avg_norm;

static int32_t scaled(const avg_norm *q, int32_t g, int32_t mult)
{
    if (q->zero) {
        return 0;
    }
    return mt_rshift_round32(mt_rshift_round32(mt_srdhm(mt_norm31(g, q->lsh), mult), q->sr), q->sh);
}

static int32_t first_window(int32_t hp, int32_t k, int32_t s)
{
    const int32_t num = hp - k + 1;
    return (num <= 0) ? 0 : (num + s - 1) / s;
}

static int32_t gather(const mt_pool_train_params *p, const avg_norm *q, const int16_t *g, int32_t n,
                      int32_t h, int32_t w, int32_t c)
{
    const int32_t hp = h + p->padding.top, wp = w + p->padding.left;
    int32_t oh, ow, oh1 = hp / p->stride.h, ow1 = wp / p->stride.w, acc = 0;
    oh1 = (oh1 < p->out.h - 1) ? oh1 : p->out.h - 1;
    ow1 = (ow1 < p->out.w - 1) ? ow1 : p->out.w - 1;
    for (oh = first_window(hp, p->kernel.h, p->stride.h); oh <= oh1; ++oh) {
        for (ow = first_window(wp, p->kernel.w, p->stride.w); ow <= ow1; ++ow) {
            acc += scaled(q, g[(((size_t)n * (size_t)p->out.h + (size_t)oh) * (size_t)p->out.w +
                                (size_t)ow) * (size_t)p->out.c + (size_t)c],
                          window_mult(p, oh, ow));
        }
    }
    return acc;
}

mt_status mt_avg_pool2d_bwd_input_s16(const mt_pool_train_params *p, const int16_t *g,
                                      int32_t g_e, int16_t *gx, int32_t *gx_e)
{
    const int32_t fan = ((p->kernel.h + p->stride.h - 1) / p->stride.h) *
                        ((p->kernel.w + p->stride.w - 1) / p->stride.w);
    uint32_t amax = 0u, tmax = 0u;
    int32_t n, h, w, c, idx, s = 0, pass, e;
    avg_norm q;
    if (p->kernel.h < 1 || p->kernel.w < 1 || p->stride.h < 1 || p->stride.w < 1 ||
        p->in.n != p->out.n || p->in.c != p->out.c || p->out.h < 1 || p->out.w < 1) {
        return MT_ERR_ARG;
    }
    q.zero = 0;
    q.lsh = 0;
    q.sr = 0;
    q.sh = 0;
    for (idx = 0; idx < p->out.n * p->out.h * p->out.w * p->out.c; ++idx) {
        const uint32_t a = mt_uabs32(g[idx]);
        amax = (a > amax) ? a : amax;
    }
    if (amax == 0u) {
        q.zero = 1;
        e = g_e;
    } else {
        q.lsh = mt_norm31_shift(amax);
        for (n = 0, idx = 0; n < p->out.n; ++n) { /* max |t| of mul_q31 */
            for (h = 0; h < p->out.h; ++h) {
                for (w = 0; w < p->out.w; ++w) {
                    const int32_t mult = window_mult(p, h, w);
                    for (c = 0; c < p->out.c; ++c, ++idx) {
                        const uint32_t t = mt_uabs32(mt_srdhm(mt_norm31(g[idx], q.lsh), mult));
                        tmax = (t > tmax) ? t : tmax;
                    }
                }
            }
        }
        q.sr = mt_grad_renorm_shift(tmax);
        e = g_e + 1 - q.lsh + q.sr;
    }
    q.sh = mt_grad_headroom_shift(mt_urshift_round32(tmax, q.sr), 0, fan);
    e += q.sh;
    amax = 0u;
    for (pass = 0; pass < 2; ++pass) { /* pass 0: max |acc|; pass 1: recompute, write */
        for (n = 0, idx = 0; n < p->in.n; ++n) {
            for (h = 0; h < p->in.h; ++h) {
                for (w = 0; w < p->in.w; ++w) {
                    for (c = 0; c < p->in.c; ++c, ++idx) {
                        const int32_t a = gather(p, &q, g, n, h, w, c);
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
        if (pass == 0) {
            s = mt_grad_renorm_shift(amax);
        }
    }
    *gx_e = e + s;
    return MT_OK;
}
