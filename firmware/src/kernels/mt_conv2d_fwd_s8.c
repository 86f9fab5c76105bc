/**
 * @file mt_conv2d_fwd_s8.c
 * @brief General int8 conv2d forward (NHWC activations, OHWI weights); bit-exact with
 *        compiler/ops/conv.py Conv2D.forward_int8.
 *
 * Method (windows of at most MT_CONV_PATCH = KH*KW*Cin elements, the usual case):
 *  - im2col of two output pixels at a time into a stack patch of int8 x, the padding filled with
 *    in_zp (so a padded tap adds in_zp * w - in_zp * w = 0 below);
 *  - every output channel is then one contiguous dot product over the patch, computed for two
 *    output channels x two pixels at once (four int32 accumulators in registers, each patch and
 *    weight byte loaded once per block);
 *  - acc = (bias - in_zp * sum(w)) + sum(x * w): the zero point is folded into a per-channel
 *    constant computed once per call (integer sums are exact, so this is the reference integer);
 *  - requantization by the exact fast form below when a channel allows it, mt_requantize_s8
 *    otherwise.
 * Larger windows are read in place, one contiguous run per kernel row.
 */
#include "mt_kernels_fwd.h"

size_t mt_conv2d_fwd_s8_scratch_bytes(const mt_dims *in_dims, const mt_dims *filter_dims)
{
    (void)in_dims;
    (void)filter_dims;
    return 0u;
}

/* Output channels per tile: their per-channel constants live on the stack. */
#define MT_CONV_TILE 16
/* Window elements (KH*KW*Cin) per pixel of the stack patch (two pixels: 2 * MT_CONV_PATCH bytes). */
#define MT_CONV_PATCH 256

/*
 * Fast requantization (exact): mt_requantize_s8(acc, mult, shift, out_zp, lo, hi) when
 *   |acc| < 2^30, mult in [0, 2^31), e = -shift in [1, 30].
 * Then h = SRDHM(acc, mult) = floor((acc * mult + 2^30) / 2^31) (ties toward +inf; the
 * INT32_MIN * INT32_MIN case cannot occur with mult >= 0) and |h| < 2^30, so
 *   hoff = h + 2^30 = (acc * mult + 2^61 + 2^30) >> 31 with a non-negative int64 (|acc*mult| < 2^61);
 * RDBPOT(h, e) = floor((h + 2^(e-1) - [h < 0]) / 2^e) (ties away from zero), i.e.
 *   RDBPOT(h, e) + 2^(30-e) = (hoff + 2^(e-1) - [hoff < 2^30]) >> e   (all in [0, 2^32) unsigned),
 * and clamp(clamp(r, -1024, 1024) + zp, lo, hi) = clamp(r + zp, lo, hi) for lo, hi, zp in
 * [-128, 127]. Per channel: k = 2^(e-1), d = out_zp - 2^(30-e).
 */
typedef struct {
    int32_t bz;   /* bias - in_zp * sum(w) */
    int32_t mult;
    uint32_t k;
    int32_t d;
} rq_t;

static inline int32_t rq_fast(int32_t acc, const rq_t *r, int e, int32_t lo, int32_t hi)
{
    const uint64_t u = (uint64_t)((int64_t)acc * (int64_t)r->mult + (int64_t)0x2000000040000000);
    const uint32_t h = (uint32_t)(u >> 31);
    const uint32_t v = h + r->k - ((h - 0x40000000u) >> 31);
    int32_t y = (int32_t)(v >> e) + r->d;
    y = (y < lo) ? lo : y;
    return (y > hi) ? hi : y;
}

/* The per-channel constants of channels [o0, o1); returns nonzero when all allow the fast form
 * (|bz| < 2^29 and K * 2^14 < 2^29 bound |acc| < 2^30). */
static int rq_prepare(rq_t *t, uint8_t *e, const mt_conv_params *p, const mt_per_channel_quant *q,
                      const int8_t *w, const int32_t *bias, int32_t o0, int32_t o1, size_t w_len)
{
    int fast = (w_len < 32768u);
    int32_t o;
    size_t i;
    for (o = o0; o < o1; ++o) {
        const int8_t *wr = mt_wrow(w, &p->split, o, w_len);
        const int32_t sh = q->shift[o];
        rq_t *r = &t[o - o0];
        int32_t s = 0;
        for (i = 0; i < w_len; ++i) {
            s += wr[i];
        }
        r->bz = ((bias != NULL) ? bias[o] : 0) - p->in_zp * s; /* |in_zp * s| < 2^22 * ... exact */
        r->mult = q->mult[o];
        if (sh >= -30 && sh <= -1 && r->mult >= 0 && r->bz > -(1 << 29) && r->bz < (1 << 29)) {
            e[o - o0] = (uint8_t)(-sh);
            r->k = 1u << (-sh - 1);
            r->d = p->out_zp - (int32_t)(0x40000000u >> (-sh));
        } else {
            e[o - o0] = 0u;
            fast = 0;
        }
    }
    return fast;
}

/* An empty statement the compiler must keep: stops GCC/Clang from turning the short fill and copy
 * loops below into memset/memcpy calls (slower for a few bytes; absent in -nostdlib builds). */
#if defined(__GNUC__)
#define MT_KEEP_LOOP() __asm__ volatile("")
#else
#define MT_KEEP_LOOP() ((void)0)
#endif

static void fill_s8(int8_t *d, int8_t v, int32_t n)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        d[i] = v;
        MT_KEEP_LOOP();
    }
}

static void copy_s8(int8_t *d, const int8_t *s, int32_t n)
{
    int32_t i = 0;
#if defined(__GNUC__) && (defined(__ARM_FEATURE_UNALIGNED) || defined(__i386__) || defined(__x86_64__))
    for (; i + 4 <= n; i += 4) { /* word copies (one LDR/STR pair where unaligned access is allowed) */
        uint32_t v;
        __builtin_memcpy(&v, s + i, 4);
        __builtin_memcpy(d + i, &v, 4);
        MT_KEEP_LOOP();
    }
#endif
    for (; i < n; ++i) {
        d[i] = s[i];
        MT_KEEP_LOOP();
    }
}

/* Geometry of the patch gather (per call). */
typedef struct {
    const int8_t *in_b;
    int32_t in_h, in_w, in_c, k_h, k_w, dh, dw, row; /* row = KW * Cin */
    int32_t span_h, span_w;                          /* (KH - 1) * dh + 1, (KW - 1) * dw + 1 */
    int8_t pad;                                      /* in_zp */
} gather_t;

/* the window of output pixel (y0, x0) into patch[KH*KW*Cin] as int8 x, padding in_zp */
static void gather_patch(int8_t *patch, const gather_t *g, int32_t y0, int32_t x0)
{
    const int32_t in_c = g->in_c, row = g->row;
    const size_t in_row = (size_t)g->in_w * (size_t)in_c;
    int32_t kx_lo = 0, kx_hi = g->k_w, ky, kx;
    if (g->dw == 1 && x0 >= 0 && x0 + g->span_w <= g->in_w && y0 >= 0 && y0 + g->span_h <= g->in_h) {
        /* inside the input: KH contiguous runs */
        const int8_t *src = g->in_b + (size_t)y0 * in_row + (size_t)x0 * (size_t)in_c;
        const size_t step = (size_t)g->dh * in_row;
        for (ky = 0; ky < g->k_h; ++ky, patch += row, src += step) {
            copy_s8(patch, src, row);
        }
        return;
    }
    while (kx_lo < g->k_w && x0 + kx_lo * g->dw < 0) { /* taps [kx_lo, kx_hi) are inside the row */
        ++kx_lo;
    }
    while (kx_hi > kx_lo && x0 + (kx_hi - 1) * g->dw >= g->in_w) {
        --kx_hi;
    }
    for (ky = 0; ky < g->k_h; ++ky, patch += row) {
        const int32_t iy = y0 + ky * g->dh;
        const int8_t *src;
        if (iy < 0 || iy >= g->in_h) {
            fill_s8(patch, g->pad, row);
            continue;
        }
        src = g->in_b + (size_t)iy * in_row + (size_t)x0 * (size_t)in_c;
        fill_s8(patch, g->pad, kx_lo * in_c);
        if (g->dw == 1) { /* the valid taps of this row are one contiguous run of the input */
            copy_s8(patch + kx_lo * in_c, src + kx_lo * in_c, (kx_hi - kx_lo) * in_c);
        } else {
            for (kx = kx_lo; kx < kx_hi; ++kx) {
                copy_s8(patch + kx * in_c, src + (size_t)kx * (size_t)g->dw * (size_t)in_c, in_c);
            }
        }
        fill_s8(patch + kx_hi * in_c, g->pad, (g->k_w - kx_hi) * in_c);
    }
}

/* a[0..3] = {x0.w0, x1.w0, x0.w1, x1.w1} over len elements (two pixels x two channels) */
static void dot_2x2(const int8_t *x0, const int8_t *x1, const int8_t *w0, const int8_t *w1, int32_t len,
                    int32_t a[4])
{
    int32_t a00 = 0, a01 = 0, a10 = 0, a11 = 0, i = 0;
    for (; i + 2 <= len; i += 2) {
        const int32_t xa = x0[i], xb = x1[i], wa = w0[i], wb = w1[i];
        const int32_t xc = x0[i + 1], xd = x1[i + 1], wc = w0[i + 1], wd = w1[i + 1];
        a00 += xa * wa;
        a01 += xb * wa;
        a10 += xa * wb;
        a11 += xb * wb;
        a00 += xc * wc;
        a01 += xd * wc;
        a10 += xc * wd;
        a11 += xd * wd;
    }
    if (i < len) {
        const int32_t xa = x0[i], xb = x1[i], wa = w0[i], wb = w1[i];
        a00 += xa * wa;
        a01 += xb * wa;
        a10 += xa * wb;
        a11 += xb * wb;
    }
    a[0] = a00;
    a[1] = a01;
    a[2] = a10;
    a[3] = a11;
}

/* a[0] = x0.w, a[1] = x1.w */
static void dot_1x2(const int8_t *x0, const int8_t *x1, const int8_t *w, int32_t len, int32_t a[2])
{
    int32_t a0 = 0, a1 = 0, i;
    for (i = 0; i < len; ++i) {
        const int32_t wv = w[i];
        a0 += x0[i] * wv;
        a1 += x1[i] * wv;
    }
    a[0] = a0;
    a[1] = a1;
}

static int32_t dot_s8(const int8_t *x, const int8_t *w, int32_t len)
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

/* y[i] = requantized (acc[i] + bz) of channels [o0, o0 + n) of the tile */
static void requant_row(int8_t *y, const int32_t *acc, const rq_t *t, const uint8_t *e, int fast,
                        const mt_per_channel_quant *q, int32_t o0, int32_t n, const mt_conv_params *p)
{
    const int32_t lo = p->act_min, hi = p->act_max;
    int32_t i;
    if (fast) {
        for (i = 0; i < n; ++i) {
            y[i] = (int8_t)rq_fast(acc[i] + t[i].bz, &t[i], e[i], lo, hi);
        }
        return;
    }
    for (i = 0; i < n; ++i) {
        y[i] = mt_requantize_s8(acc[i] + t[i].bz, q->mult[o0 + i], (int)q->shift[o0 + i], p->out_zp, lo, hi);
    }
}

/* Windows too large for the patch: read in place, one contiguous run per kernel row (dilation.w
 * 1) or per tap. acc = bias + sum x*w - in_zp * (sum of the weights of the valid taps). */
static void conv_direct(const mt_conv_params *p, const mt_per_channel_quant *q, const mt_dims *in_dims,
                        const int8_t *in, const mt_dims *filter_dims, const int8_t *w, const int32_t *bias,
                        const mt_dims *out_dims, int8_t *out)
{
    const int32_t in_h = in_dims->h, in_w = in_dims->w, in_c = in_dims->c;
    const int32_t out_c = filter_dims->n, k_h = filter_dims->h, k_w = filter_dims->w;
    const size_t w_len = (size_t)k_h * (size_t)k_w * (size_t)in_c;
    int32_t b, oy, ox, o, ky, kx;
    for (b = 0; b < in_dims->n; ++b) {
        const int8_t *in_b = in + (size_t)b * (size_t)in_h * (size_t)in_w * (size_t)in_c;
        for (oy = 0; oy < out_dims->h; ++oy) {
            const int32_t y0 = oy * p->stride.h - p->padding.top;
            const int32_t ky_lo = (y0 >= 0) ? 0 : (-y0 + p->dilation.h - 1) / p->dilation.h;
            const int32_t ky_top = (in_h - y0 + p->dilation.h - 1) / p->dilation.h;
            const int32_t ky_hi = (ky_top < k_h) ? ky_top : k_h;
            for (ox = 0; ox < out_dims->w; ++ox) {
                const int32_t x0 = ox * p->stride.w - p->padding.left;
                const int32_t kx_lo = (x0 >= 0) ? 0 : (-x0 + p->dilation.w - 1) / p->dilation.w;
                const int32_t kx_top = (in_w - x0 + p->dilation.w - 1) / p->dilation.w;
                const int32_t kx_hi = (kx_top < k_w) ? kx_top : k_w;
                for (o = 0; o < out_c; ++o) {
                    const int8_t *w_o = mt_wrow(w, &p->split, o, w_len);
                    int32_t acc = (bias != NULL) ? bias[o] : 0, ws = 0;
                    for (ky = ky_lo; ky < ky_hi; ++ky) {
                        const int32_t iy = y0 + ky * p->dilation.h;
                        const int8_t *x_row = in_b + (size_t)iy * (size_t)in_w * (size_t)in_c;
                        const int8_t *w_row = w_o + (size_t)ky * (size_t)k_w * (size_t)in_c;
                        if (p->dilation.w == 1) {
                            const int32_t len = (kx_hi - kx_lo) * in_c;
                            const int8_t *wp = w_row + (size_t)kx_lo * (size_t)in_c;
                            acc += dot_s8(x_row + (size_t)(x0 + kx_lo) * (size_t)in_c, wp, len);
                            ws += sum_s8(wp, len);
                            continue;
                        }
                        for (kx = kx_lo; kx < kx_hi; ++kx) {
                            const int8_t *wp = w_row + (size_t)kx * (size_t)in_c;
                            acc += dot_s8(x_row + (size_t)(x0 + kx * p->dilation.w) * (size_t)in_c, wp, in_c);
                            ws += sum_s8(wp, in_c);
                        }
                    }
                    acc -= p->in_zp * ws;
                    *out++ = mt_requantize_s8(acc, q->mult[o], (int)q->shift[o], p->out_zp, p->act_min,
                                              p->act_max);
                }
            }
        }
    }
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
    const int32_t ow = out_dims->w;
    const int32_t pixels = out_dims->h * out_dims->w;
    const size_t w_len = (size_t)k_h * (size_t)k_w * (size_t)in_c;
    const int32_t len = (int32_t)w_len;
    rq_t rq[MT_CONV_TILE];
    uint8_t ex[MT_CONV_TILE];
    int8_t patch[2 * MT_CONV_PATCH];
    int32_t acc[2 * MT_CONV_TILE];
    int32_t b, px, o, o0, a[4];
    gather_t g;

    if (filter_dims->c != in_c || out_dims->c != out_c || out_dims->n != in_dims->n ||
        p->stride.h < 1 || p->stride.w < 1 || p->dilation.h < 1 || p->dilation.w < 1) {
        return MT_ERR_ARG;
    }
    if (w_len > MT_CONV_PATCH) {
        conv_direct(p, q, in_dims, in, filter_dims, w, bias, out_dims, out);
        return MT_OK;
    }
    g.in_h = in_h;
    g.in_w = in_w;
    g.in_c = in_c;
    g.k_h = k_h;
    g.k_w = k_w;
    g.dh = p->dilation.h;
    g.dw = p->dilation.w;
    g.row = k_w * in_c;
    g.span_h = (k_h - 1) * g.dh + 1;
    g.span_w = (k_w - 1) * g.dw + 1;
    g.pad = (int8_t)p->in_zp;
    for (o0 = 0; o0 < out_c; o0 += MT_CONV_TILE) {
        const int32_t o1 = (o0 + MT_CONV_TILE < out_c) ? o0 + MT_CONV_TILE : out_c;
        const int fast = rq_prepare(rq, ex, p, q, w, bias, o0, o1, w_len);
        for (b = 0; b < in_dims->n; ++b) {
            int8_t *out_b = out + (size_t)b * (size_t)pixels * (size_t)out_c;
            int32_t oy = 0, ox = 0;
            g.in_b = in + (size_t)b * (size_t)in_h * (size_t)in_w * (size_t)in_c;
            for (px = 0; px < pixels; px += 2) {
                const int two = (px + 1 < pixels);
                int8_t *y0p = out_b + (size_t)px * (size_t)out_c;
                int8_t *y1p = y0p + out_c;
                gather_patch(patch, &g, oy * p->stride.h - p->padding.top, ox * p->stride.w - p->padding.left);
                if (++ox == ow) {
                    ox = 0;
                    ++oy;
                }
                if (two) {
                    gather_patch(patch + MT_CONV_PATCH, &g, oy * p->stride.h - p->padding.top,
                                 ox * p->stride.w - p->padding.left);
                    if (++ox == ow) {
                        ox = 0;
                        ++oy;
                    }
                }
                for (o = o0; o < o1; o += 2) {
                    const int32_t i0 = o - o0;
                    const int8_t *w0 = mt_wrow(w, &p->split, o, w_len);
                    if (o + 1 < o1) {
                        const int8_t *w1 = mt_wrow(w, &p->split, o + 1, w_len);
                        if (two) {
                            dot_2x2(patch, patch + MT_CONV_PATCH, w0, w1, len, a);
                            acc[i0] = a[0];
                            acc[MT_CONV_TILE + i0] = a[1];
                            acc[i0 + 1] = a[2];
                            acc[MT_CONV_TILE + i0 + 1] = a[3];
                        } else {
                            dot_1x2(w0, w1, patch, len, &acc[i0]);
                        }
                    } else if (two) {
                        dot_1x2(patch, patch + MT_CONV_PATCH, w0, len, a);
                        acc[i0] = a[0];
                        acc[MT_CONV_TILE + i0] = a[1];
                    } else {
                        acc[i0] = dot_s8(patch, w0, len);
                    }
                }
                requant_row(y0p + o0, acc, rq, ex, fast, q, o0, o1 - o0, p);
                if (two) {
                    requant_row(y1p + o0, acc + MT_CONV_TILE, rq, ex, fast, q, o0, o1 - o0, p);
                }
            }
        }
    }
    return MT_OK;
}
