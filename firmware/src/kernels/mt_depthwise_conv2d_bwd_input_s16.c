/**
 * @file mt_depthwise_conv2d_bwd_input_s16.c
 * @brief depthwise_conv2d input gradient; bit-exact with DepthwiseConv2D.backward_int8
 *        position 0: gs = headroom(scale_channels(g), w_bits, M*KH*KW),
 *        gx[..., c] = sum over taps and m of gs[..., c*M+m] * w[0,i,j,c*M+m], renormalised.
 *
 * Depth multiplier 1, 3x3, stride 1, dilation 1 (MobileNet's): per input pixel the 9 taps read
 * gs through three row pointers (the window of a pixel on the border is first copied into a
 * 3x3 stack window, zero where the tap has no output pixel), per channel 9 multiply-accumulates
 * against the weights transposed once per tile of channels. Other geometries with at most 4
 * valid taps per input pixel (stride 2): the valid taps are listed per pixel (rows once per
 * input row, columns per column) and every channel runs over the list. Anything else: the
 * direct sum. The int32 sums do not depend on the order (the headroom pre-shift bounds every
 * partial sum). With the acc scratch every input element is computed once, then renormalised;
 * without it twice (the max, then the rounded mantissas).
 */
#include "mt_kernels_train.h"

/* Channels per tile (weights transposed on the stack, the border window). */
#define MT_DWB_TILE 32

#if defined(__GNUC__)
#define MT_KEEP_LOOP() __asm__ volatile("") /* keeps short loops from becoming memset/memcpy calls */
#else
#define MT_KEEP_LOOP() ((void)0)
#endif

/* What a pass does with the sums: store them (acc), track max |sum|, or write the mantissas. */
enum { SINK_ACC, SINK_MAX, SINK_WRITE };

typedef struct {
    int sink;
    int32_t *acc;
    int16_t *gx;
    int32_t s;
    uint32_t amax;
} sink_t;

static inline void sink_put(sink_t *k, size_t idx, int32_t a)
{
    if (k->sink == SINK_ACC) {
        k->acc[idx] = a;
    } else if (k->sink == SINK_MAX) {
        const uint32_t v = mt_uabs32(a);
        k->amax = (v > k->amax) ? v : k->amax;
    } else {
        k->gx[idx] = (int16_t)mt_rshift_round32(a, k->s);
    }
}

#if defined(__GNUC__)
#define MT_ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define MT_ALWAYS_INLINE static inline
#endif

/* sink_put on a by-value copy of the sink (mode a constant where inlined) */
MT_ALWAYS_INLINE void put_(int mode, int32_t *acc, int16_t *gx, int32_t s, uint32_t *amax, size_t idx, int32_t a)
{
    if (mode == SINK_ACC) {
        acc[idx] = a;
    } else if (mode == SINK_MAX) {
        const uint32_t v = mt_uabs32(a);
        *amax = (v > *amax) ? v : *amax;
    } else {
        gx[idx] = (int16_t)mt_rshift_round32(a, s);
    }
}

static int32_t dx_acc(const mt_conv_train_params *p, const int16_t *gs, const int8_t *w,
                      int32_t n, int32_t h, int32_t x, int32_t c)
{
    const int32_t kh = p->kernel.h, kw = p->kernel.w, cout = p->out.c;
    const int32_t mm = cout / p->in.c;
    int32_t i, j, m, acc = 0;
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
            const int8_t *wq;
            if (wp < 0 || wp % p->stride.w != 0) {
                continue;
            }
            ow = wp / p->stride.w;
            if (ow >= p->out.w) {
                continue;
            }
            gp = gs + (((size_t)n * (size_t)p->out.h + (size_t)oh) * (size_t)p->out.w + (size_t)ow) *
                          (size_t)cout + (size_t)c * (size_t)mm;
            wq = w + ((size_t)i * (size_t)kw + (size_t)j) * (size_t)cout + (size_t)c * (size_t)mm;
            for (m = 0; m < mm; ++m) {
                acc += (int32_t)gp[m] * (int32_t)wq[m];
            }
        }
    }
    return acc;
}

/* The valid taps along one axis for input coordinate v: tap k, output coordinate o(k) - those
 * with v + pad - k * dil = o * stride, 0 <= o < o_n. */
static int32_t axis_taps(int32_t v, int32_t pad, int32_t dil, int32_t stride, int32_t k_n, int32_t o_n,
                         int32_t *k_out, int32_t *o_out)
{
    int32_t k, n = 0;
    for (k = 0; k < k_n; ++k) {
        const int32_t vp = v + pad - k * dil;
        if (vp >= 0 && vp % stride == 0 && vp / stride < o_n) {
            k_out[n] = k;
            o_out[n] = vp / stride;
            ++n;
        }
    }
    return n;
}

/* 3x3 stride 1: channels [c0, c0 + n) of input pixel idx0; tap (i, j) of channel c at
 * r_i[(2 - j) * cs + c] (r_i: output row h + top - i, starting at column x + left - 2);
 * weights wt[(i * 3 + j) * MT_DWB_TILE + c]. */
MT_ALWAYS_INLINE void dw3_pixel_m(sink_t *k, size_t idx0, const int16_t *r0, const int16_t *r1, const int16_t *r2,
                      int32_t cs, const int8_t *wt, int32_t n, const int mode)
{
    int32_t *const acc = k->acc;
    int16_t *const gx = k->gx;
    const int32_t sh = k->s;
    uint32_t amax = k->amax;
    const int32_t cs2 = 2 * cs;
    int32_t c;
    for (c = 0; c < n; ++c) {
        int32_t a = r0[c] * wt[2 * MT_DWB_TILE + c];
        a += r0[c + cs] * wt[1 * MT_DWB_TILE + c];
        a += r0[c + cs2] * wt[c];
        a += r1[c] * wt[5 * MT_DWB_TILE + c];
        a += r1[c + cs] * wt[4 * MT_DWB_TILE + c];
        a += r1[c + cs2] * wt[3 * MT_DWB_TILE + c];
        a += r2[c] * wt[8 * MT_DWB_TILE + c];
        a += r2[c + cs] * wt[7 * MT_DWB_TILE + c];
        a += r2[c + cs2] * wt[6 * MT_DWB_TILE + c];
        put_(mode, acc, gx, sh, &amax, idx0 + (size_t)c, a);
    }
    k->amax = amax;
}

static void dw3_pixel(sink_t *k, size_t idx0, const int16_t *r0, const int16_t *r1, const int16_t *r2,
                      int32_t cs, const int8_t *wt, int32_t n)
{
    if (k->sink == SINK_ACC) {
        dw3_pixel_m(k, idx0, r0, r1, r2, cs, wt, n, SINK_ACC);
    } else if (k->sink == SINK_MAX) {
        dw3_pixel_m(k, idx0, r0, r1, r2, cs, wt, n, SINK_MAX);
    } else {
        dw3_pixel_m(k, idx0, r0, r1, r2, cs, wt, n, SINK_WRITE);
    }
}

/* 3x3 on the border: tap t = i * 3 + j of channel c at tap[t][c] (a zero row where the tap has no
 * output pixel). */
MT_ALWAYS_INLINE void dw3_taps_m(sink_t *k, size_t idx0, const int16_t *const tap[9], const int8_t *wt, int32_t n,
                                const int mode)
{
    int32_t *const acc = k->acc;
    int16_t *const gx = k->gx;
    const int32_t sh = k->s;
    uint32_t amax = k->amax;
    int32_t c = 0, t;
    for (; c < n; ++c) {
        int32_t a = 0;
        for (t = 0; t < 9; ++t) {
            a += tap[t][c] * wt[t * MT_DWB_TILE + c];
        }
        put_(mode, acc, gx, sh, &amax, idx0 + (size_t)c, a);
    }
    k->amax = amax;
}

static void dw3_taps(sink_t *k, size_t idx0, const int16_t *const tap[9], const int8_t *wt, int32_t n)
{
    if (k->sink == SINK_ACC) {
        dw3_taps_m(k, idx0, tap, wt, n, SINK_ACC);
    } else if (k->sink == SINK_MAX) {
        dw3_taps_m(k, idx0, tap, wt, n, SINK_MAX);
    } else {
        dw3_taps_m(k, idx0, tap, wt, n, SINK_WRITE);
    }
}

/* Depth multiplier 1, 3x3, stride 1, dilation 1. */
static void dx_s1(const mt_conv_train_params *p, const int16_t *gs, const int8_t *w, sink_t *k)
{
    const int32_t c = p->in.c, oh_n = p->out.h, ow_n = p->out.w, top = p->padding.top, left = p->padding.left;
    int8_t wt[9 * MT_DWB_TILE];
    int16_t zero[MT_DWB_TILE];    /* the taps without an output pixel */
    int32_t c0, t, i, j, n, h, x, cc;
    for (cc = 0; cc < MT_DWB_TILE; ++cc) {
        zero[cc] = 0;
        MT_KEEP_LOOP();
    }
    for (c0 = 0; c0 < c; c0 += MT_DWB_TILE) {
        const int32_t nc = (c - c0 < MT_DWB_TILE) ? c - c0 : MT_DWB_TILE;
        for (t = 0; t < 9; ++t) {
            for (cc = 0; cc < nc; ++cc) {
                wt[t * MT_DWB_TILE + cc] = w[(size_t)t * (size_t)c + (size_t)(c0 + cc)];
                MT_KEEP_LOOP();
            }
        }
        for (n = 0; n < p->in.n; ++n) {
            const int16_t *gs_n = gs + (size_t)n * (size_t)oh_n * (size_t)ow_n * (size_t)c + (size_t)c0;
            for (h = 0; h < p->in.h; ++h) {
                const int32_t y = h + top; /* tap i reads output row y - i */
                const int rows_in = (y - 2 >= 0 && y < oh_n);
                for (x = 0; x < p->in.w; ++x) {
                    const int32_t xx = x + left; /* tap j reads output column xx - j */
                    const size_t idx0 = (((size_t)n * (size_t)p->in.h + (size_t)h) * (size_t)p->in.w + (size_t)x) *
                                            (size_t)c + (size_t)c0;
                    if (rows_in && xx - 2 >= 0 && xx < ow_n) {
                        const int16_t *b = gs_n + ((size_t)(y - 2) * (size_t)ow_n + (size_t)(xx - 2)) * (size_t)c;
                        const size_t rs = (size_t)ow_n * (size_t)c;
                        dw3_pixel(k, idx0, b + 2 * rs, b + rs, b, c, wt, nc);
                        continue;
                    }
                    {
                        const int16_t *tap[9];
                        for (i = 0; i < 3; ++i) {
                            for (j = 0; j < 3; ++j) {
                                const int32_t oy = y - i, ox = xx - j;
                                tap[i * 3 + j] = (oy >= 0 && oy < oh_n && ox >= 0 && ox < ow_n)
                                                     ? gs_n + ((size_t)oy * (size_t)ow_n + (size_t)ox) * (size_t)c
                                                     : zero;
                            }
                        }
                        dw3_taps(k, idx0, tap, wt, nc);
                    }
                }
            }
        }
    }
}

/* Depth multiplier 1, at most 4 valid taps per input pixel: the taps listed per pixel. */
static void dx_list(const mt_conv_train_params *p, const int16_t *gs, const int8_t *w, sink_t *k)
{
    const int32_t c = p->in.c, kh = p->kernel.h, kw = p->kernel.w;
    int32_t n, h, x, i, j, cc;
    for (n = 0; n < p->in.n; ++n) {
        const int16_t *gs_n = gs + (size_t)n * (size_t)p->out.h * (size_t)p->out.w * (size_t)c;
        for (h = 0; h < p->in.h; ++h) {
            int32_t ki[3], oi[3];
            const int32_t ni = axis_taps(h, p->padding.top, p->dilation.h, p->stride.h, kh, p->out.h, ki, oi);
            for (x = 0; x < p->in.w; ++x) {
                int32_t kj[3], oj[3], nt = 0;
                const int32_t nj = axis_taps(x, p->padding.left, p->dilation.w, p->stride.w, kw, p->out.w, kj, oj);
                const int16_t *g[4];
                const int8_t *wv[4];
                const size_t idx0 = (((size_t)n * (size_t)p->in.h + (size_t)h) * (size_t)p->in.w + (size_t)x) * (size_t)c;
                for (i = 0; i < ni; ++i) {
                    for (j = 0; j < nj; ++j) {
                        g[nt] = gs_n + ((size_t)oi[i] * (size_t)p->out.w + (size_t)oj[j]) * (size_t)c;
                        wv[nt] = w + (size_t)(ki[i] * kw + kj[j]) * (size_t)c;
                        ++nt;
                    }
                }
                switch (nt) {
                case 0:
                    for (cc = 0; cc < c; ++cc) {
                        sink_put(k, idx0 + (size_t)cc, 0);
                        MT_KEEP_LOOP();
                    }
                    break;
                case 1:
                    for (cc = 0; cc < c; ++cc) {
                        sink_put(k, idx0 + (size_t)cc, g[0][cc] * wv[0][cc]);
                    }
                    break;
                case 2:
                    for (cc = 0; cc < c; ++cc) {
                        sink_put(k, idx0 + (size_t)cc, g[0][cc] * wv[0][cc] + g[1][cc] * wv[1][cc]);
                    }
                    break;
                case 3:
                    for (cc = 0; cc < c; ++cc) {
                        sink_put(k, idx0 + (size_t)cc, g[0][cc] * wv[0][cc] + g[1][cc] * wv[1][cc] + g[2][cc] * wv[2][cc]);
                    }
                    break;
                default:
                    for (cc = 0; cc < c; ++cc) {
                        sink_put(k, idx0 + (size_t)cc, g[0][cc] * wv[0][cc] + g[1][cc] * wv[1][cc] +
                                                           g[2][cc] * wv[2][cc] + g[3][cc] * wv[3][cc]);
                    }
                    break;
                }
            }
        }
    }
}

/* The most valid taps of any input pixel along one axis (k_n taps, dilation dil, stride s). */
static int32_t axis_max_taps(int32_t k_n, int32_t dil, int32_t s)
{
    int32_t best = 0, r, k;
    for (r = 0; r < s; ++r) { /* taps k with k * dil = r (mod s) */
        int32_t cnt = 0;
        for (k = 0; k < k_n; ++k) {
            cnt += ((k * dil) % s == r) ? 1 : 0;
        }
        best = (cnt > best) ? cnt : best;
    }
    return best;
}

static void dx_pass(const mt_conv_train_params *p, const int16_t *gs, const int8_t *w, sink_t *k)
{
    int32_t n, h, x, c;
    size_t idx = 0;
    if (p->out.c == p->in.c && p->kernel.h == 3 && p->kernel.w == 3 && p->stride.h == 1 && p->stride.w == 1 &&
        p->dilation.h == 1 && p->dilation.w == 1) {
        dx_s1(p, gs, w, k);
        return;
    }
    if (p->out.c == p->in.c && p->kernel.h <= 3 && p->kernel.w <= 3 &&
        axis_max_taps(p->kernel.h, p->dilation.h, p->stride.h) * axis_max_taps(p->kernel.w, p->dilation.w, p->stride.w) <= 4) {
        dx_list(p, gs, w, k);
        return;
    }
    for (n = 0; n < p->in.n; ++n) {
        for (h = 0; h < p->in.h; ++h) {
            for (x = 0; x < p->in.w; ++x) {
                for (c = 0; c < p->in.c; ++c, ++idx) {
                    sink_put(k, idx, dx_acc(p, gs, w, n, h, x, c));
                }
            }
        }
    }
}

mt_status mt_depthwise_conv2d_bwd_input_s16(const mt_conv_train_params *p, int16_t *gs,
                                            int32_t *acc, const int16_t *g, int32_t g_e,
                                            const int8_t *w, int16_t *gx, int32_t *gx_e)
{
    const int32_t gsize = p->out.n * p->out.h * p->out.w * p->out.c;
    const int32_t xsize = p->in.n * p->in.h * p->in.w * p->in.c;
    int32_t gs_e;
    sink_t k;
    if (p->in.n != p->out.n || p->in.c < 1 || p->out.c % p->in.c != 0 || p->kernel.h < 1 ||
        p->kernel.w < 1 || p->stride.h < 1 || p->stride.w < 1 || p->dilation.h < 1 ||
        p->dilation.w < 1 || gsize < 1 || xsize < 1) {
        return MT_ERR_ARG;
    }
    mt_grad_mul_q31_s16(gsize, p->out.c, g, g_e, p->w_mult, p->w_shift, gs, &gs_e);
    mt_grad_headroom_s16(p->w_bits, (p->out.c / p->in.c) * p->kernel.h * p->kernel.w, gsize, gs,
                         &gs_e);
    k.acc = acc;
    k.gx = gx;
    k.s = 0;
    k.amax = 0u;
    if (acc != NULL) {
        k.sink = SINK_ACC;
        dx_pass(p, gs, w, &k);
        return mt_grad_renormalize_s32(xsize, acc, gs_e, gx, gx_e);
    }
    k.sink = SINK_MAX;
    dx_pass(p, gs, w, &k);
    k.s = mt_grad_renorm_shift(k.amax);
    k.sink = SINK_WRITE;
    dx_pass(p, gs, w, &k);
    *gx_e = gs_e + k.s;
    return MT_OK;
}
