/**
 * @file mt_depthwise_conv2d_fwd_s8_dsp.c
 * @brief int8 depthwise conv2d forward with the Arm DSP extension; same results as
 *        mt_depthwise_conv2d_fwd_s8.
 *
 * 3x3 windows with depth multiplier 1 and dilation 1 (any stride and padding), per tile of
 * MT_DW_TILE channels: four channels at a time, one word load per tap gives the four inputs,
 * SXTB16 splits them into {c0, c2} / {c1, c3} lanes and SMLABB / SMLATT multiply each lane with the
 * weights of its channel, widened once per call into a stack table in the same lane order (per
 * tap: 1 LDR + 2 SXTB16 + 2 LDR + 4 multiply-accumulates for 4 outputs). The zero point is folded
 * into a per-channel constant, acc = (bias - in_zp * sum(w)) + sum over the 9 taps of x * w, and
 * pixels whose window is cut by the padding are first copied into a 3x3 stack window filled with
 * in_zp (which then adds in_zp * w - in_zp * w = 0). Exact int32 sums (the caller's no-overflow
 * guarantee bounds every partial sum), then mt_requantize_s8 in the shorter exact form of rq_fast
 * (SMMULR) when the channel allows it. Other shapes: the portable kernel's direct loop.
 */
#include "mt_dsp.h"
#include "mt_kernels_dsp.h"

/* Channels per tile (multiple of 4; per-channel constants and widened weights on the stack). */
#define MT_DW_TILE 16

#if defined(__GNUC__)
#define MT_KEEP_LOOP() __asm__ volatile("") /* keeps short loops from becoming memset/memcpy calls */
#define MT_ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define MT_KEEP_LOOP() ((void)0)
#define MT_ALWAYS_INLINE static inline
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

/* acc + a.h0 * b.h0 (SMLABB) and acc + a.h1 * b.h1 (SMLATT); exact: |products| < 2^15 here */
static inline int32_t smlabb_(uint32_t a, uint32_t b, int32_t acc)
{
#if MT_DSP_NATIVE
    return __smlabb(mt_wrap32(a), mt_wrap32(b), acc);
#else
    return mt_wrap_add32(acc, mt_lane16(a, 0) * mt_lane16(b, 0));
#endif
}

static inline int32_t smlatt_(uint32_t a, uint32_t b, int32_t acc)
{
#if MT_DSP_NATIVE
    return __smlatt(mt_wrap32(a), mt_wrap32(b), acc);
#else
    return mt_wrap_add32(acc, mt_lane16(a, 1) * mt_lane16(b, 1));
#endif
}

static inline int32_t smmulr_(int32_t a, int32_t b)
{
#if MT_DSP_NATIVE
    int32_t r;
    __asm__("smmulr %0, %1, %2" : "=r"(r) : "r"(a), "r"(b)); /* (a * b + 2^31) >> 32 */
    return r;
#else
    const uint64_t u = (uint64_t)((int64_t)a * (int64_t)b + (int64_t)0x4000000080000000);
    return (int32_t)(uint32_t)(u >> 32) - 0x40000000; /* u >= 0: no shift of a negative value */
#endif
}

static inline int32_t ssat8_(int32_t x)
{
#if MT_DSP_NATIVE
    int32_t r;
    __asm__("ssat %0, #8, %1" : "=r"(r) : "r"(x));
    return r;
#else
    return (x < -128) ? -128 : ((x > 127) ? 127 : x);
#endif
}

/*
 * Fast requantization (exact): mt_requantize_s8(acc, mult, shift, out_zp, lo, hi) when
 * |acc| < 2^30, mult in [0, 2^31) and e = -shift in [1, 30]:
 *   h = SRDHM(acc, mult) = floor((acc * mult + 2^30) / 2^31) = SMMULR(2 * acc, mult), |h| < 2^30
 *   (ties toward +inf; INT32_MIN * INT32_MIN cannot occur);
 *   RDBPOT(h, e) + 2^(30-e) = (h + 2^30 + 2^(e-1) - [h < 0]) >> e, in uint32 without wrapping;
 *   clamp(clamp(r, -1024, 1024) + zp, lo, hi) = clamp(r + zp, lo, hi) (lo, hi, zp in [-128, 127]).
 * Per channel: k = 2^30 + 2^(e-1), d = out_zp - 2^(30-e).
 */
typedef struct {
    int32_t bz2;  /* 2 * (bias - in_zp * sum(w)) */
    int32_t mult;
    uint32_t k;
    int32_t d;
    uint32_t e;   /* -shift (fast form) */
} rq_t;

/* acc2 = 2 * acc (the weights are widened doubled: every sum is twice the reference's) */
static inline int32_t rq_fast(int32_t acc2, const rq_t *r)
{
    const int32_t h = smmulr_(acc2, r->mult);
    const uint32_t v = (uint32_t)h + r->k - ((uint32_t)h >> 31);
    return (int32_t)(v >> r->e) + r->d;
}

/* per call */
typedef struct {
    int mode;                 /* 1: fast + SSAT, 2: fast + [lo, hi], 0: mt_requantize_s8 */
    int32_t lo, hi, out_zp;
    const int32_t *mult, *shift;
} rq_mode_t;

/* mt_requantize_s8 out of line (the slow, general form: kept out of the unrolled blocks) */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static int32_t requant_slow(int32_t acc, const rq_mode_t *m, int32_t o)
{
    return mt_requantize_s8(acc, m->mult[o], (int)m->shift[o], m->out_zp, m->lo, m->hi);
}

/* acc2 = 2 * acc (|acc| < 2^30) in the fast modes, acc itself in mode 0 */
MT_ALWAYS_INLINE int32_t requant(int32_t acc2, const rq_t *r, const rq_mode_t *m, int mode, int32_t o)
{
    int32_t y;
    if (mode == 1) {
        return ssat8_(rq_fast(acc2, r));
    }
    if (mode == 2) {
        y = rq_fast(acc2, r);
        y = (y < m->lo) ? m->lo : y;
        return (y > m->hi) ? m->hi : y;
    }
    return requant_slow(acc2, m, o);
}

/* The tile's tables: per group of 4 channels and tap, the doubled weights {2 w_c0, 2 w_c2} and
 * {2 w_c1, 2 w_c3}; tail channels (n % 4) plainly per channel and tap. */
typedef struct {
    rq_t rq[MT_DW_TILE];
    uint32_t wg[MT_DW_TILE / 4][9][2];
    int8_t wtail[4][9];    /* [i & 3]: rows 0..2 used (n % 4 <= 3) */
} tile_t;

/*
 * One output pixel, the n channels of a tile: tap (ky, kx) of channel i at r_ky[kx * cs + i] (the
 * input, or the padded window).
 */
MT_ALWAYS_INLINE void dw_pixel(int8_t *y, const int8_t *r0, const int8_t *r1, const int8_t *r2, int32_t cs,
                               const tile_t *t, int32_t n, const rq_mode_t *m, int32_t o0, const int mode)
{
    const int32_t cs2 = 2 * cs;
    const uint32_t(*wg)[9][2] = t->wg;
    const rq_t *r = t->rq;
    int32_t i;
    for (i = 0; i + 4 <= n; i += 4, ++wg, r += 4) {
        int32_t a0 = r[0].bz2, a1 = r[1].bz2, a2 = r[2].bz2, a3 = r[3].bz2;
#if MT_DSP_NATIVE
        /* per tap: 1 LDR (4 inputs), 1 LDRD (the widened weights), 2 SXTB16, 4 SMLAxy */
#define MT_DW_ASM_TAP(addr, off)                                                                  \
    "ldr %[xv], " addr "\n\t"                                                                      \
    "ldrd %[w02], %[w13], [%[wp], #" off "]\n\t"                                                   \
    "sxtb16 %[t], %[xv]\n\t"                                                                       \
    "smlabb %[a0], %[t], %[w02], %[a0]\n\t"                                                        \
    "smlatt %[a2], %[t], %[w02], %[a2]\n\t"                                                        \
    "sxtb16 %[xv], %[xv], ror #8\n\t"                                                              \
    "smlabb %[a1], %[xv], %[w13], %[a1]\n\t"                                                       \
    "smlatt %[a3], %[xv], %[w13], %[a3]\n\t"
        uint32_t xv, tt, w02, w13;
        __asm__(MT_DW_ASM_TAP("[%[r0]]", "0") MT_DW_ASM_TAP("[%[r0], %[cs]]", "8")
                MT_DW_ASM_TAP("[%[r0], %[cs], lsl #1]", "16") MT_DW_ASM_TAP("[%[r1]]", "24")
                MT_DW_ASM_TAP("[%[r1], %[cs]]", "32") MT_DW_ASM_TAP("[%[r1], %[cs], lsl #1]", "40")
                MT_DW_ASM_TAP("[%[r2]]", "48") MT_DW_ASM_TAP("[%[r2], %[cs]]", "56")
                MT_DW_ASM_TAP("[%[r2], %[cs], lsl #1]", "64")
                : [a0] "+r"(a0), [a1] "+r"(a1), [a2] "+r"(a2), [a3] "+r"(a3), [xv] "=&r"(xv), [t] "=&r"(tt),
                  [w02] "=&r"(w02), [w13] "=&r"(w13)
                : [r0] "r"(r0 + i), [r1] "r"(r1 + i), [r2] "r"(r2 + i), [cs] "r"(cs), [wp] "r"(wg),
                  "m"(*wg));
#undef MT_DW_ASM_TAP
        (void)cs2;
#else
#define MT_DW_TAP(src, j)                                \
    do {                                                 \
        const uint32_t xv = mt_read_s8x4(src);          \
        const uint32_t x02 = mt_sxtb16(xv);             \
        const uint32_t x13 = mt_sxtb16_ror8(xv);        \
        a0 = smlabb_(x02, (*wg)[j][0], a0);              \
        a2 = smlatt_(x02, (*wg)[j][0], a2);              \
        a1 = smlabb_(x13, (*wg)[j][1], a1);              \
        a3 = smlatt_(x13, (*wg)[j][1], a3);              \
    } while (0)
        MT_DW_TAP(r0 + i, 0);
        MT_DW_TAP(r0 + i + cs, 1);
        MT_DW_TAP(r0 + i + cs2, 2);
        MT_DW_TAP(r1 + i, 3);
        MT_DW_TAP(r1 + i + cs, 4);
        MT_DW_TAP(r1 + i + cs2, 5);
        MT_DW_TAP(r2 + i, 6);
        MT_DW_TAP(r2 + i + cs, 7);
        MT_DW_TAP(r2 + i + cs2, 8);
#undef MT_DW_TAP
#endif
        y[i] = (int8_t)requant(a0, &r[0], m, mode, o0 + i);
        y[i + 1] = (int8_t)requant(a1, &r[1], m, mode, o0 + i + 1);
        y[i + 2] = (int8_t)requant(a2, &r[2], m, mode, o0 + i + 2);
        y[i + 3] = (int8_t)requant(a3, &r[3], m, mode, o0 + i + 3);
    }
    for (; i < n; ++i, ++r) { /* n % 4 tail channels */
        const int8_t *wt = t->wtail[i & 3];
        int32_t a = r0[i] * wt[0] + r0[i + cs] * wt[1] + r0[i + cs2] * wt[2];
        a += r1[i] * wt[3] + r1[i + cs] * wt[4] + r1[i + cs2] * wt[5];
        a += r2[i] * wt[6] + r2[i + cs] * wt[7] + r2[i + cs2] * wt[8];
        y[i] = (int8_t)requant(r->bz2 + ((mode != 0) ? 2 * a : a), r, m, mode, o0 + i);
    }
}

/* count pixels of one output row: pixel k's window rows at r_i + k * step, output at y + k * ys */
static void dw_run(int8_t *y, size_t ys, const int8_t *r0, const int8_t *r1, const int8_t *r2, size_t step,
                   int32_t count, int32_t cs, const tile_t *t, int32_t n, const rq_mode_t *m, int32_t o0)
{
    int32_t k;
#define MT_DW_RUN(mode)                                                                           \
    for (k = 0; k < count; ++k, y += ys, r0 += step, r1 += step, r2 += step) {                    \
        dw_pixel(y, r0, r1, r2, cs, t, n, m, o0, mode);                                           \
    }
    if (m->mode == 1) {
        MT_DW_RUN(1)
    } else if (m->mode == 2) {
        MT_DW_RUN(2)
    } else {
        MT_DW_RUN(0)
    }
#undef MT_DW_RUN
}

/* The tables of channels [o0, o0 + n); returns the requantization mode. In the fast modes
 * (|acc| < 2^30) the weights and bz are doubled, so the sums are 2 * acc, the SMMULR operand;
 * in mode 0 they are not (2 * acc might not fit). */
static int tile_prepare(tile_t *t, const mt_dw_conv_params *p, const mt_per_channel_quant *q, const int8_t *w,
                        const int32_t *bias, int32_t c, int32_t o0, int32_t n)
{
    const int32_t n4 = n & ~3;
    int mode = (p->act_min == -128 && p->act_max == 127) ? 1 : 2;
    int32_t i, j, f;
    for (i = 0; i < n; ++i) {
        const int32_t o = o0 + i, sh = q->shift[o];
        rq_t *r = &t->rq[i];
        int32_t s = 0;
        for (j = 0; j < 9; ++j) {
            s += w[(size_t)j * (size_t)c + (size_t)o];
        }
        r->bz2 = ((bias != NULL) ? bias[o] : 0) - p->in_zp * s;
        r->mult = q->mult[o];
        if (sh >= -30 && sh <= -1 && r->mult >= 0 && r->bz2 > -(1 << 29) && r->bz2 < (1 << 29)) {
            r->e = (uint32_t)(-sh);
            r->k = 0x40000000u + (1u << (-sh - 1));
            r->d = p->out_zp - (int32_t)(0x40000000u >> (-sh));
        } else {
            r->e = 0u;
            mode = 0;
        }
    }
    f = (mode != 0) ? 2 : 1;
    for (i = 0; i < n; ++i) {
        t->rq[i].bz2 *= f;
    }
    for (j = 0; j < 9; ++j) {
        const int8_t *wj = w + (size_t)j * (size_t)c + (size_t)o0;
        for (i = 0; i < n4; i += 4) {
            t->wg[i >> 2][j][0] = mt_pack16(f * wj[i], f * wj[i + 2]);
            t->wg[i >> 2][j][1] = mt_pack16(f * wj[i + 1], f * wj[i + 3]);
        }
        for (; i < n; ++i) {
            t->wtail[i & 3][j] = wj[i];
        }
    }
    return mode;
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

mt_status mt_depthwise_conv2d_fwd_s8_dsp(const mt_dw_conv_params *p, const mt_per_channel_quant *q,
                                         const mt_dims *in_dims, const int8_t *in,
                                         const mt_dims *filter_dims, const int8_t *w,
                                         const int32_t *bias, const mt_dims *out_dims, int8_t *out)
{
    const int32_t in_h = in_dims->h, in_w = in_dims->w, c = in_dims->c;
    const int32_t oh = out_dims->h, ow = out_dims->w;
    tile_t t;
    int8_t win[9 * MT_DW_TILE]; /* a padded window: tap (ky, kx) of channel i at [(ky * 3 + kx) * n + i] */
    int8_t zrow[MT_DW_TILE];    /* in_zp: the taps outside the input */
    rq_mode_t m;
    int32_t b, oy, ox, o0, i;

    if (p->ch_mult < 1 || filter_dims->n != 1 || filter_dims->c != c * p->ch_mult ||
        out_dims->c != c * p->ch_mult || out_dims->n != in_dims->n || p->stride.h < 1 || p->stride.w < 1 ||
        p->dilation.h < 1 || p->dilation.w < 1) {
        return MT_ERR_ARG;
    }
    if (p->ch_mult != 1 || filter_dims->h != 3 || filter_dims->w != 3 || p->dilation.h != 1 ||
        p->dilation.w != 1) {
        dw_direct(p, q, in_dims, in, filter_dims, w, bias, out_dims, out);
        return MT_OK;
    }
    m.lo = p->act_min;
    m.hi = p->act_max;
    m.out_zp = p->out_zp;
    m.mult = q->mult;
    m.shift = q->shift;
    for (i = 0; i < MT_DW_TILE; ++i) {
        zrow[i] = (int8_t)p->in_zp;
        MT_KEEP_LOOP();
    }
    for (o0 = 0; o0 < c; o0 += MT_DW_TILE) {
        const int32_t n = (o0 + MT_DW_TILE < c) ? MT_DW_TILE : c - o0;
        m.mode = tile_prepare(&t, p, q, w, bias, c, o0, n);
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
                        dw_run(yp, (size_t)c, base, base + rs, base + 2 * rs, (size_t)p->stride.w * (size_t)c, hi - lo, c, &t, n, &m, o0);
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
                        dw_run(yp, 0u, win, win + 3 * n, win + 6 * n, 0u, 1, n, &t, n, &m, o0);
                    }
                }
            }
        }
    }
    return MT_OK;
}
