/**
 * @file mt_depthwise_conv2d_fwd_s8.c
 * @brief int8 depthwise conv2d forward with depth multiplier (weights [1, KH, KW, Cin*M]);
 *        bit-exact with compiler/ops/conv.py DepthwiseConv2D.forward_int8.
 *
 * 3x3 windows with depth multiplier 1 and dilation 1 (MobileNet's; any stride and padding), per
 * tile of MT_DW_TILE channels: the weights are transposed once per call into a stack table
 * (9 contiguous taps per channel) and acc = (bias - in_zp * sum(w)) + sum over the 9 taps of
 * x * w, the zero point folded into a per-channel constant (exact integers: the reference's
 * int32). Pixels whose window is cut by the padding are first copied into a 3x3 stack window
 * filled with in_zp (which then adds in_zp * w - in_zp * w = 0), so every pixel runs the same
 * loop. Requantization in the exact shorter form of rq_fast when the channel allows it. Other
 * shapes: the direct loop.
 */
#include "mt_kernels_fwd.h"

size_t mt_depthwise_conv2d_fwd_s8_scratch_bytes(const mt_dims *in_dims, const mt_dims *filter_dims)
{
    (void)in_dims;
    (void)filter_dims;
    return 0u;
}

/* Channels per tile of the 3x3 path (per-channel constants and weights on the stack). */
#define MT_DW_TILE 16

#if defined(__GNUC__)
#define MT_KEEP_LOOP() __asm__ volatile("") /* keeps short loops from becoming memset/memcpy calls */
#else
#define MT_KEEP_LOOP() ((void)0)
#endif

/* n bytes from s to d (no overlap), by words where the compiler can merge the bytes */
static void copy_s8(int8_t *d, const int8_t *s, int32_t n)
{
    int32_t i = 0;
#if defined(__GNUC__) && (defined(__ARM_FEATURE_UNALIGNED) || defined(__i386__) || defined(__x86_64__))
    for (; i + 4 <= n; i += 4) { /* one LDR/STR pair where unaligned access is allowed */
        uint32_t v;
        __builtin_memcpy(&v, s + i, sizeof v);
        __builtin_memcpy(d + i, &v, sizeof v);
        MT_KEEP_LOOP();
    }
#endif
    for (; i < n; ++i) {
        d[i] = s[i];
        MT_KEEP_LOOP();
    }
}

/*
 * Fast requantization (exact): mt_requantize_s8(acc, mult, shift, out_zp, lo, hi) when
 * |acc| < 2^30, mult in [0, 2^31) and e = -shift in [1, 30]. Then h = SRDHM(acc, mult) =
 * floor((acc * mult + 2^30) / 2^31) (ties toward +inf, no INT32_MIN * INT32_MIN), |h| < 2^30, and
 *   hoff = h + 2^30 = (acc * mult + 2^61 + 2^30) >> 31   (a non-negative int64: |acc * mult| < 2^61),
 *   RDBPOT(h, e) + 2^(30-e) = (hoff + 2^(e-1) - [hoff < 2^30]) >> e   (uint32, no wrap),
 *   clamp(clamp(r, -1024, 1024) + zp, lo, hi) = clamp(r + zp, lo, hi)   (lo, hi, zp in [-128, 127]).
 * Per channel: k = 2^(e-1), d = out_zp - 2^(30-e).
 */
typedef struct {
    int32_t bz;    /* bias - in_zp * sum(w) */
    int32_t mult;
    uint32_t k;
    int32_t d;
    int8_t w[9];   /* the channel's weights, tap ky * 3 + kx */
    uint8_t e;     /* -shift when the fast form applies, else 0 */
    uint8_t pad_[2];
} ch_t;

static inline int32_t rq_fast(int32_t acc, const ch_t *r)
{
    const uint64_t u = (uint64_t)((int64_t)acc * (int64_t)r->mult + (int64_t)0x2000000040000000);
    const uint32_t h = (uint32_t)(u >> 31);
    const uint32_t v = h + r->k - ((h - 0x40000000u) >> 31);
    return (int32_t)(v >> r->e) + r->d;
}

#if defined(__GNUC__)
#define MT_ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define MT_ALWAYS_INLINE static inline
#endif

/* The 3x3 path of one output pixel for the n channels of a tile: tap (ky, kx) of channel i at
 * row[ky][kx * cs + i]. mode 1: fast form, full int8 range; 2: fast form, [act_min, act_max];
 * 0: mt_requantize_s8. */
MT_ALWAYS_INLINE void dw3x3_pixel_m(int8_t *y, const int8_t *r0, const int8_t *r1, const int8_t *r2, int32_t cs,
                                    const ch_t *t, int32_t n, const mt_dw_conv_params *p,
                                    const mt_per_channel_quant *q, int32_t o0, const int mode)
{
    const int32_t cs2 = 2 * cs;
    int32_t i;
    for (i = 0; i < n; ++i, ++t) {
        int32_t a = t->bz, v;
        a += r0[i] * t->w[0];
        a += r0[i + cs] * t->w[1];
        a += r0[i + cs2] * t->w[2];
        a += r1[i] * t->w[3];
        a += r1[i + cs] * t->w[4];
        a += r1[i + cs2] * t->w[5];
        a += r2[i] * t->w[6];
        a += r2[i + cs] * t->w[7];
        a += r2[i + cs2] * t->w[8];
        if (mode == 1) {
            v = rq_fast(a, t);
            y[i] = (int8_t)((v < -128) ? -128 : ((v > 127) ? 127 : v));
        } else if (mode == 2) {
            v = rq_fast(a, t);
            v = (v < p->act_min) ? p->act_min : v;
            y[i] = (int8_t)((v > p->act_max) ? p->act_max : v);
        } else {
            y[i] = mt_requantize_s8(a, q->mult[o0 + i], (int)q->shift[o0 + i], p->out_zp, p->act_min,
                                    p->act_max);
        }
    }
}

/* count pixels of one output row: pixel k's window rows at r_i + k * step, output at y + k * ys */
static void dw_run(int8_t *y, size_t ys, const int8_t *r0, const int8_t *r1, const int8_t *r2, size_t step,
                   int32_t count, int32_t cs, const ch_t *t, int32_t n, int mode, const mt_dw_conv_params *p,
                   const mt_per_channel_quant *q, int32_t o0)
{
    int32_t k;
#define MT_DW_RUN(md)                                                                             \
    for (k = 0; k < count; ++k, y += ys, r0 += step, r1 += step, r2 += step) {                    \
        dw3x3_pixel_m(y, r0, r1, r2, cs, t, n, p, q, o0, md);                                     \
    }
    if (mode == 1) {
        MT_DW_RUN(1)
    } else if (mode == 2) {
        MT_DW_RUN(2)
    } else {
        MT_DW_RUN(0)
    }
#undef MT_DW_RUN
}

/* Any shape: acc = bias + sum over the valid taps of (x - in_zp) * w. */
static void dw_direct(const mt_dw_conv_params *p, const mt_per_channel_quant *q, const mt_dims *in_dims,
                      const int8_t *in, const mt_dims *filter_dims, const int8_t *w, const int32_t *bias,
                      const mt_dims *out_dims, int8_t *out)
{
    const int32_t in_h = in_dims->h, in_w = in_dims->w, in_c = in_dims->c;
    const int32_t m = p->ch_mult, out_c = in_c * m, k_h = filter_dims->h, k_w = filter_dims->w;
    const int32_t in_zp = p->in_zp;
    int32_t b, oy, ox, ci, j, ky, kx;
    for (b = 0; b < in_dims->n; ++b) {
        const int8_t *in_b = in + (size_t)b * (size_t)in_h * (size_t)in_w * (size_t)in_c;
        for (oy = 0; oy < out_dims->h; ++oy) {
            const int32_t y0 = oy * p->stride.h - p->padding.top;
            for (ox = 0; ox < out_dims->w; ++ox) {
                const int32_t x0 = ox * p->stride.w - p->padding.left;
                for (ci = 0; ci < in_c; ++ci) {
                    for (j = 0; j < m; ++j) {
                        const int32_t o = ci * m + j;
                        int32_t acc = (bias != NULL) ? bias[o] : 0;
                        for (ky = 0; ky < k_h; ++ky) {
                            const int32_t iy = y0 + ky * p->dilation.h;
                            const int8_t *xr;
                            const int8_t *wr;
                            if (iy < 0 || iy >= in_h) {
                                continue;
                            }
                            xr = in_b + (size_t)iy * (size_t)in_w * (size_t)in_c + (size_t)ci;
                            wr = w + (size_t)ky * (size_t)k_w * (size_t)out_c + (size_t)o;
                            for (kx = 0; kx < k_w; ++kx) {
                                const int32_t ix = x0 + kx * p->dilation.w;
                                if (ix >= 0 && ix < in_w) {
                                    acc += ((int32_t)xr[(size_t)ix * (size_t)in_c] - in_zp) *
                                           (int32_t)wr[(size_t)kx * (size_t)out_c];
                                }
                            }
                        }
                        *out++ = mt_requantize_s8(acc, q->mult[o], (int)q->shift[o], p->out_zp,
                                                  p->act_min, p->act_max);
                    }
                }
            }
        }
    }
}

mt_status mt_depthwise_conv2d_fwd_s8(const mt_dw_conv_params *p, const mt_per_channel_quant *q,
                                     const mt_dims *in_dims, const int8_t *in,
                                     const mt_dims *filter_dims, const int8_t *w,
                                     const int32_t *bias, const mt_dims *out_dims, int8_t *out)
{
    const int32_t in_h = in_dims->h, in_w = in_dims->w, c = in_dims->c;
    const int32_t m = p->ch_mult;
    const int32_t oh = out_dims->h, ow = out_dims->w;
    ch_t ch[MT_DW_TILE];
    int8_t win[9 * MT_DW_TILE]; /* a padded window: tap (ky, kx) of channel i at [(ky * 3 + kx) * n + i] */
    int8_t zrow[MT_DW_TILE];    /* in_zp: the taps outside the input */
    int32_t b, oy, ox, o0, i, t;

    if (m < 1 || filter_dims->n != 1 || filter_dims->c != c * m || out_dims->c != c * m ||
        out_dims->n != in_dims->n || p->stride.h < 1 || p->stride.w < 1 || p->dilation.h < 1 ||
        p->dilation.w < 1) {
        return MT_ERR_ARG;
    }
    if (m != 1 || filter_dims->h != 3 || filter_dims->w != 3 || p->dilation.h != 1 || p->dilation.w != 1) {
        dw_direct(p, q, in_dims, in, filter_dims, w, bias, out_dims, out);
        return MT_OK;
    }
    for (i = 0; i < MT_DW_TILE; ++i) {
        zrow[i] = (int8_t)p->in_zp;
        MT_KEEP_LOOP();
    }
    for (o0 = 0; o0 < c; o0 += MT_DW_TILE) {
        const int32_t n = (o0 + MT_DW_TILE < c) ? MT_DW_TILE : c - o0;
        int mode = (p->act_min == -128 && p->act_max == 127) ? 1 : 2;
        for (i = 0; i < n; ++i) { /* per-channel constants and weights */
            const int32_t o = o0 + i, sh = q->shift[o];
            ch_t *r = &ch[i];
            int32_t s = 0;
            for (t = 0; t < 9; ++t) {
                r->w[t] = w[(size_t)t * (size_t)c + (size_t)o];
                s += r->w[t];
            }
            r->bz = ((bias != NULL) ? bias[o] : 0) - p->in_zp * s;
            r->mult = q->mult[o];
            if (sh >= -30 && sh <= -1 && r->mult >= 0 && r->bz > -(1 << 29) && r->bz < (1 << 29)) {
                r->e = (uint8_t)(-sh);
                r->k = 1u << (-sh - 1);
                r->d = p->out_zp - (int32_t)(0x40000000u >> (-sh));
            } else {
                r->e = 0u;
                mode = 0;
            }
        }
        for (b = 0; b < in_dims->n; ++b) {
            const int8_t *in_b = in + (size_t)b * (size_t)in_h * (size_t)in_w * (size_t)c + o0;
            int8_t *out_b = out + (size_t)b * (size_t)oh * (size_t)ow * (size_t)c + o0;
            /* output columns [lo, hi) have their whole window inside the input columns */
            int32_t lo = 0, hi = ow;
            while (lo < ow && lo * p->stride.w - p->padding.left < 0) {
                ++lo;
            }
            while (hi > lo && (hi - 1) * p->stride.w - p->padding.left + 3 > in_w) {
                --hi;
            }
            for (oy = 0; oy < oh; ++oy) {
                const int32_t y0 = oy * p->stride.h - p->padding.top;
                const int rows_in = (y0 >= 0 && y0 + 3 <= in_h);
                for (ox = 0; ox < ow; ++ox) {
                    const int32_t x0 = ox * p->stride.w - p->padding.left;
                    int8_t *yp = out_b + ((size_t)oy * (size_t)ow + (size_t)ox) * (size_t)c;
                    if (rows_in && ox == lo && hi > lo) { /* the inside run of this row */
                        const int8_t *base = in_b + ((size_t)y0 * (size_t)in_w + (size_t)x0) * (size_t)c;
                        const size_t rs = (size_t)in_w * (size_t)c;
                        dw_run(yp, (size_t)c, base, base + rs, base + 2 * rs, (size_t)p->stride.w * (size_t)c, hi - lo, c, ch, n, mode, p, q, o0);
                        ox = hi - 1;
                    } else { /* the window with in_zp padding */
                        int32_t ky, kx;
                        for (ky = 0; ky < 3; ++ky) {
                            for (kx = 0; kx < 3; ++kx) {
                                const int32_t iy = y0 + ky, ix = x0 + kx;
                                const int8_t *s = zrow;
                                if (iy >= 0 && iy < in_h && ix >= 0 && ix < in_w) {
                                    s = in_b + ((size_t)iy * (size_t)in_w + (size_t)ix) * (size_t)c;
                                }
                                copy_s8(win + (ky * 3 + kx) * n, s, n);
                            }
                        }
                        dw_run(yp, 0u, win, win + 3 * n, win + 6 * n, 0u, 1, n, ch, n, mode, p, q, o0);
                    }
                }
            }
        }
    }
    return MT_OK;
}
