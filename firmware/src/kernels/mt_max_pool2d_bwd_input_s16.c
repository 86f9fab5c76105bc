/**
 * @file mt_max_pool2d_bwd_input_s16.c
 * @brief max_pool2d input gradient; bit-exact with MaxPool2D.backward_int8: each window's
 *        (masked, headroom-shifted) gradient goes to its first int8 maximum in row-major tap
 *        order; overlapping windows add in int32; renormalised. Gather form, two passes.
 */
#include "mt_kernels_train.h"

/* Does window (n, oh, ow, c) route its gradient to tap (ti, tj)? (first maximum, valid taps) */
static int routes_to(const mt_pool_train_params *p, const int8_t *x, int32_t n, int32_t oh,
                     int32_t ow, int32_t c, int32_t ti, int32_t tj)
{
    int32_t i, j, best = -1000, bi = -1, bj = -1;
    for (i = 0; i < p->kernel.h; ++i) {
        const int32_t h = oh * p->stride.h + i - p->padding.top;
        if (h < 0 || h >= p->in.h) {
            continue;
        }
        for (j = 0; j < p->kernel.w; ++j) {
            const int32_t w = ow * p->stride.w + j - p->padding.left;
            int32_t v;
            if (w < 0 || w >= p->in.w) {
                continue;
            }
            v = x[(((size_t)n * (size_t)p->in.h + (size_t)h) * (size_t)p->in.w + (size_t)w) *
                      (size_t)p->in.c + (size_t)c];
            if (v > best) {
                best = v;
                bi = i;
                bj = j;
            }
        }
    }
    return bi == ti && bj == tj;
}

/* first output index whose window [o*s - pad, o*s - pad + k) contains position hp - pad */
static int32_t first_window(int32_t hp, int32_t k, int32_t s)
{
    const int32_t num = hp - k + 1;
    return (num <= 0) ? 0 : (num + s - 1) / s;
}

static int32_t gather(const mt_pool_train_params *p, const int8_t *x, const int16_t *g, int32_t sh,
                      int32_t n, int32_t h, int32_t w, int32_t c)
{
    const int32_t hp = h + p->padding.top, wp = w + p->padding.left;
    int32_t oh, ow, oh1 = hp / p->stride.h, ow1 = wp / p->stride.w, acc = 0;
    oh1 = (oh1 < p->out.h - 1) ? oh1 : p->out.h - 1;
    ow1 = (ow1 < p->out.w - 1) ? ow1 : p->out.w - 1;
    for (oh = first_window(hp, p->kernel.h, p->stride.h); oh <= oh1; ++oh) {
        for (ow = first_window(wp, p->kernel.w, p->stride.w); ow <= ow1; ++ow) {
            if (routes_to(p, x, n, oh, ow, c, hp - oh * p->stride.h, wp - ow * p->stride.w)) {
                acc += mt_rshift_round32(
                    g[(((size_t)n * (size_t)p->out.h + (size_t)oh) * (size_t)p->out.w + (size_t)ow) *
                          (size_t)p->out.c + (size_t)c], sh);
            }
        }
    }
    return acc;
}

/* Windows that do not overlap (stride >= window): every input is in at most one window, so each
 * window's gradient lands on its first maximum alone. Same integers as the gather form. */
static void scatter_disjoint(const mt_pool_train_params *p, const int8_t *x, const int16_t *g,
                             int32_t sh, int32_t s, int16_t *gx)
{
    const int32_t xsize = p->in.n * p->in.h * p->in.w * p->in.c;
    int32_t i, n, oh, ow, c, idx = 0;
    for (i = 0; i < xsize; ++i) {
        gx[i] = 0;
    }
    for (n = 0; n < p->out.n; ++n) {
        for (oh = 0; oh < p->out.h; ++oh) {
            for (ow = 0; ow < p->out.w; ++ow) {
                for (c = 0; c < p->out.c; ++c, ++idx) {
                    int32_t ti, tj, best = -1000;
                    size_t at = 0u;
                    for (ti = 0; ti < p->kernel.h; ++ti) {
                        const int32_t h = oh * p->stride.h + ti - p->padding.top;
                        if (h < 0 || h >= p->in.h) {
                            continue;
                        }
                        for (tj = 0; tj < p->kernel.w; ++tj) {
                            const int32_t w = ow * p->stride.w + tj - p->padding.left;
                            size_t k;
                            if (w < 0 || w >= p->in.w) {
                                continue;
                            }
                            k = (((size_t)n * (size_t)p->in.h + (size_t)h) * (size_t)p->in.w + (size_t)w) *
                                    (size_t)p->in.c + (size_t)c;
                            if (x[k] > best) {
                                best = x[k];
                                at = k;
                            }
                        }
                    }
                    if (best > -1000) {
                        gx[at] = (int16_t)mt_rshift_round32(mt_rshift_round32(g[idx], sh), s);
                    }
                }
            }
        }
    }
}

mt_status mt_max_pool2d_bwd_input_s16(const mt_pool_train_params *p, const int8_t *x,
                                      const int16_t *g, int32_t g_e, int16_t *gx, int32_t *gx_e)
{
    const int32_t gsize = p->out.n * p->out.h * p->out.w * p->out.c;
    const int32_t fan = ((p->kernel.h + p->stride.h - 1) / p->stride.h) *
                        ((p->kernel.w + p->stride.w - 1) / p->stride.w);
    uint32_t amax = 0u;
    int32_t i, n, h, w, c, idx, sh, s = 0, pass;
    if (p->kernel.h < 1 || p->kernel.w < 1 || p->stride.h < 1 || p->stride.w < 1 ||
        p->in.n != p->out.n || p->in.c != p->out.c || gsize < 1) {
        return MT_ERR_ARG;
    }
    for (i = 0; i < gsize; ++i) {
        const uint32_t a = mt_uabs32(g[i]);
        amax = (a > amax) ? a : amax;
    }
    sh = mt_grad_headroom_shift(amax, 0, fan);
    amax = 0u;
    if (p->stride.h >= p->kernel.h && p->stride.w >= p->kernel.w && p->padding.top < p->kernel.h &&
        p->padding.left < p->kernel.w) {
        /* every window has a valid tap and routes its whole gradient to one input */
        for (i = 0; i < gsize; ++i) {
            const uint32_t a = mt_uabs32(mt_rshift_round32(g[i], sh));
            amax = (a > amax) ? a : amax;
        }
        s = mt_grad_renorm_shift(amax);
        scatter_disjoint(p, x, g, sh, s, gx);
        *gx_e = g_e + sh + s;
        return MT_OK;
    }
    for (pass = 0; pass < 2; ++pass) { /* pass 0: max |acc|; pass 1: recompute, write */
        for (n = 0, idx = 0; n < p->in.n; ++n) {
            for (h = 0; h < p->in.h; ++h) {
                for (w = 0; w < p->in.w; ++w) {
                    for (c = 0; c < p->in.c; ++c, ++idx) {
                        const int32_t a = gather(p, x, g, sh, n, h, w, c);
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
    *gx_e = g_e + sh + s;
    return MT_OK;
}
