/**
 * @file mt_conv2d_fwd_s8_dsp.c
 * @brief General int8 conv2d forward with the Arm DSP extension; same results as mt_conv2d_fwd_s8.
 *
 * acc[o] = bias[o] + sum over valid taps (x - in_zp) * w = bz[o] + sum over all taps x' * w, where
 * x' is x inside the input and in_zp on the padding, and bz[o] = bias[o] - in_zp * sum(w[o]) is
 * computed once per call (exact integers, so the same int32 as the reference; every partial sum is
 * bounded by the caller's no-overflow guarantee, so the reordered SMLAD sums are exact too).
 *
 * Windows of K = KH*KW*Cin <= MT_CONV_PATCH elements: output pixels are gathered (im2col) into a
 * stack patch of int16 x' (two pixels at a time), each group of 4 elements stored {x0, x2, x1, x3}
 * - the order SXTB16 leaves the int8 weights in - and the K % 4 tail zero-padded to a group whose
 * weights come from a per-channel table. Then two output channels x two pixels per pass: per 4
 * elements 2 LDRD (patches), 2 LDR + 4 SXTB16 (weights) and 8 SMLAD for 16 multiply-accumulates
 * (an assembly loop on the real instructions). Windows of at most 16 elements (Cin = 1, 3x3): the
 * whole patch stays in registers and each output channel is 2..8 SMLAD against its weights,
 * widened once per call into a stack table. Larger windows: read in place (SXTAB16 + SMLAD per
 * contiguous run).
 *
 * Requantization: mt_requantize_s8, in the shorter exact form of rq_fast (SMMULR) when the channel
 * allows it.
 */
#include "mt_dsp.h"
#include "mt_kernels_dsp.h"

/* Output channels per tile (their constants live on the stack). */
#define MT_CONV_TILE 16
/* Window elements (KH*KW*Cin) per pixel of the stack patch (2 pixels of int16). */
#define MT_CONV_PATCH 144
/* Windows up to this many elements keep the patch in registers (words of 2 int16). */
#define MT_CONV_TINY 16
/* Output channels per pass of that path (their widened weights on the stack). */
#define MT_CONV_TINY_CH 8

#if defined(__GNUC__)
#define MT_KEEP_LOOP() __asm__ volatile("") /* keeps short loops from becoming memset/memcpy calls */
#else
#define MT_KEEP_LOOP() ((void)0)
#endif

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
    int32_t bz;    /* bias - in_zp * sum(w) */
    int32_t mult;
    uint32_t k;
    int32_t d;
    uint32_t t02;  /* the K % 4 tail group of the weights, {w0, w2} / {w1, w3}, zero-padded */
    uint32_t t13;
    int32_t e;     /* -shift (fast form), 0 otherwise */
} rq_t;

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

/* acc (|acc| < 2^30) -> the output before the activation clamp (r + out_zp, |.| < 2^30) */
static inline int32_t rq_fast(int32_t acc, const rq_t *r)
{
    const int32_t h = smmulr_((int32_t)((uint32_t)acc << 1), r->mult);
    const uint32_t v = (uint32_t)h + r->k - ((uint32_t)h >> 31);
    return (int32_t)(v >> r->e) + r->d;
}

/* Requantization of one tile: fast form for every channel (clamp to the full int8 range, or to
 * [lo, hi]) or mt_requantize_s8 for every channel. */
typedef struct {
    int mode; /* 0: mt_requantize_s8, 1: fast + SSAT, 2: fast + [lo, hi] */
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

static inline int32_t requant(int32_t acc, const rq_t *r, const rq_mode_t *m, int mode, int32_t o)
{
    int32_t y;
    if (mode == 1) {
        return ssat8_(rq_fast(acc, r));
    }
    if (mode == 2) {
        y = rq_fast(acc, r);
        y = (y < m->lo) ? m->lo : y;
        return (y > m->hi) ? m->hi : y;
    }
    return requant_slow(acc, m, o);
}

/* The constants of channels [o0, o1); returns the requantization mode. fold: bz includes
 * -in_zp * sum(w) (patch paths). Fast form: |bz| < 2^29 and K * 255 * 128 < 2^29 bound |acc|. */
static int rq_prepare(rq_t *t, const mt_conv_params *p, const mt_per_channel_quant *q, const int8_t *w,
                      const int32_t *bias, int32_t o0, int32_t o1, int32_t len, int fold)
{
    const int32_t len4 = len & ~3;
    int fast = (len < 16384);
    int32_t o, i;
    for (o = o0; o < o1; ++o) {
        const int8_t *wr = mt_wrow(w, &p->split, o, (size_t)len);
        const int32_t sh = q->shift[o];
        rq_t *r = &t[o - o0];
        int8_t tail[4] = {0, 0, 0, 0};
        uint32_t tw;
        int32_t s = 0;
        for (i = 0; i < len; ++i) {
            s += wr[i];
        }
        for (i = len4; i < len; ++i) {
            tail[i - len4] = wr[i];
            MT_KEEP_LOOP();
        }
        tw = (uint32_t)(uint8_t)tail[0] | ((uint32_t)(uint8_t)tail[1] << 8) |
             ((uint32_t)(uint8_t)tail[2] << 16) | ((uint32_t)(uint8_t)tail[3] << 24);
        r->t02 = mt_sxtb16(tw);
        r->t13 = mt_sxtb16_ror8(tw);
        r->bz = ((bias != NULL) ? bias[o] : 0) - (fold ? p->in_zp * s : 0);
        r->mult = q->mult[o];
        if (sh >= -30 && sh <= -1 && r->mult >= 0 && r->bz > -(1 << 29) && r->bz < (1 << 29)) {
            r->e = -sh;
            r->k = 0x40000000u + (1u << (-sh - 1));
            r->d = p->out_zp - (int32_t)(0x40000000u >> (-sh));
        } else {
            r->e = 0;
            fast = 0;
        }
    }
    if (!fast) {
        return 0;
    }
    return (p->act_min == -128 && p->act_max == 127) ? 1 : 2;
}

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
#if MT_DSP_LOAD_MEMCPY
    for (; i + 4 <= n; i += 4) { /* one unaligned LDR/STR pair per word */
        const uint32_t v = mt_read_s8x4(s + i);
        __builtin_memcpy(d + i, &v, sizeof v);
        MT_KEEP_LOOP();
    }
#endif
    for (; i < n; ++i) {
        d[i] = s[i];
        MT_KEEP_LOOP();
    }
}

typedef struct {
    const int8_t *in_b;
    int32_t in_h, in_w, in_c, k_h, k_w, dh, dw, row; /* row = KW * Cin */
    int32_t span_h, span_w;                          /* (KH - 1) * dh + 1, (KW - 1) * dw + 1 */
    int8_t pad;                                      /* in_zp */
} gather_t;

/* the window of output pixel (y0, x0) into raw[KH*KW*Cin] as int8 x, padding in_zp */
static void gather_patch(int8_t *raw, const gather_t *g, int32_t y0, int32_t x0)
{
    const int32_t in_c = g->in_c, row = g->row;
    const size_t in_row = (size_t)g->in_w * (size_t)in_c;
    int32_t kx_lo = 0, kx_hi = g->k_w, ky, kx;
    if (g->dw == 1 && x0 >= 0 && x0 + g->span_w <= g->in_w && y0 >= 0 && y0 + g->span_h <= g->in_h) {
        const int8_t *src = g->in_b + (size_t)y0 * in_row + (size_t)x0 * (size_t)in_c;
        const size_t step = (size_t)g->dh * in_row;
        if (row == 3) { /* Cin = 1, KW = 3 */
            for (ky = 0; ky < g->k_h; ++ky, raw += 3, src += step) {
                raw[0] = src[0];
                raw[1] = src[1];
                raw[2] = src[2];
            }
            return;
        }
        for (ky = 0; ky < g->k_h; ++ky, raw += row, src += step) {
            copy_s8(raw, src, row);
        }
        return;
    }
    while (kx_lo < g->k_w && x0 + kx_lo * g->dw < 0) {
        ++kx_lo;
    }
    while (kx_hi > kx_lo && x0 + (kx_hi - 1) * g->dw >= g->in_w) {
        --kx_hi;
    }
    for (ky = 0; ky < g->k_h; ++ky, raw += row) {
        const int32_t iy = y0 + ky * g->dh;
        const int8_t *src;
        if (iy < 0 || iy >= g->in_h) {
            fill_s8(raw, g->pad, row);
            continue;
        }
        src = g->in_b + (size_t)iy * in_row + (size_t)x0 * (size_t)in_c;
        fill_s8(raw, g->pad, kx_lo * in_c);
        if (g->dw == 1) {
            copy_s8(raw + kx_lo * in_c, src + kx_lo * in_c, (kx_hi - kx_lo) * in_c);
        } else {
            for (kx = kx_lo; kx < kx_hi; ++kx) {
                copy_s8(raw + kx * in_c, src + (size_t)kx * (size_t)g->dw * (size_t)in_c, in_c);
            }
        }
        fill_s8(raw + kx_hi * in_c, g->pad, (g->k_w - kx_hi) * in_c);
    }
}

/* raw[0..len) -> words {x0, x2}, {x1, x3} per group of 4, the last group zero-padded. In place:
 * raw may sit at (int8_t *)dst + 2 * len4 - len4... (each group is read before it is written). */
static void widen_patch(uint32_t *dst, const int8_t *raw, int32_t len)
{
    int32_t k = 0;
    for (; k + 4 <= len; k += 4, dst += 2) {
        const uint32_t v = mt_read_s8x4(raw + k);
        dst[0] = mt_sxtb16(v);
        dst[1] = mt_sxtb16_ror8(v);
    }
    if (k < len) {
        uint32_t v = (uint32_t)(uint8_t)raw[k];
        if (k + 1 < len) {
            v |= (uint32_t)(uint8_t)raw[k + 1] << 8;
        }
        if (k + 2 < len) {
            v |= (uint32_t)(uint8_t)raw[k + 2] << 16;
        }
        dst[0] = mt_sxtb16(v);
        dst[1] = mt_sxtb16_ror8(v);
    }
}

/*
 * s[0..3] += {x.w0, y.w0, x.w1, y.w1} over the first 4 * groups elements: x, y widened patches
 * (y = x + MT_CONV_PATCH / 2 words), w1 = w0 + dw.
 */
#if MT_DSP_NATIVE
/* one group: 2 LDRD (patch words of both pixels), 2 LDR + 4 SXTB16 (weights), 8 SMLAD */
#define MT_CONV_ASM_GROUP                                                                         \
    "ldrd %[y02], %[y13], [%[x], %[yo]]\n\t"                                                       \
    "ldrd %[x02], %[x13], [%[x]], #8\n\t"                                                          \
    "ldr %[u], [%[w], %[d]]\n\t"                                                                  \
    "sxtb16 %[t], %[u]\n\t"                                                                       \
    "smlad %[s10], %[x02], %[t], %[s10]\n\t"                                                      \
    "smlad %[s11], %[y02], %[t], %[s11]\n\t"                                                      \
    "sxtb16 %[u], %[u], ror #8\n\t"                                                               \
    "smlad %[s10], %[x13], %[u], %[s10]\n\t"                                                      \
    "smlad %[s11], %[y13], %[u], %[s11]\n\t"                                                      \
    "ldr %[u], [%[w]], #4\n\t"                                                                    \
    "sxtb16 %[t], %[u]\n\t"                                                                       \
    "smlad %[s00], %[x02], %[t], %[s00]\n\t"                                                      \
    "smlad %[s01], %[y02], %[t], %[s01]\n\t"                                                      \
    "sxtb16 %[u], %[u], ror #8\n\t"                                                               \
    "smlad %[s00], %[x13], %[u], %[s00]\n\t"                                                      \
    "smlad %[s01], %[y13], %[u], %[s01]\n\t"
#endif

static inline void dot_2x2(const uint32_t *x, const int8_t *w0, ptrdiff_t dw, int32_t groups, int32_t *a00,
                           int32_t *a01, int32_t *a10, int32_t *a11)
{
    int32_t s00 = *a00, s01 = *a01, s10 = *a10, s11 = *a11;
#if MT_DSP_NATIVE
    /* the asm reads both patches (its "m" operand: the stores that built them come first) and the
     * weights (never written) */
    const uint32_t(*patch)[MT_CONV_PATCH] = (const uint32_t(*)[MT_CONV_PATCH])x;
    uint32_t x02, x13, y02, y13, u, t;
    if (groups >= 2) { /* two groups per iteration; y at 2 * MT_CONV_PATCH bytes (LDRD offset <= 1020) */
        const uint32_t *volatile end = x + 2 * (groups & ~1);
        __asm__ volatile("1:\n\t" MT_CONV_ASM_GROUP MT_CONV_ASM_GROUP
                         "ldr %[t], %[end]\n\t"
                         "cmp %[x], %[t]\n\t"
                         "bne 1b\n\t"
                         : [x] "+r"(x), [w] "+r"(w0), [s00] "+r"(s00), [s01] "+r"(s01), [s10] "+r"(s10),
                           [s11] "+r"(s11), [x02] "=&r"(x02), [x13] "=&r"(x13), [y02] "=&r"(y02),
                           [y13] "=&r"(y13), [u] "=&r"(u), [t] "=&r"(t)
                         : [d] "r"(dw), [end] "m"(end), [yo] "i"(2 * MT_CONV_PATCH), "m"(*patch)
                         : "cc");
    }
    if (groups & 1) {
        __asm__ volatile(MT_CONV_ASM_GROUP
                         : [x] "+r"(x), [w] "+r"(w0), [s00] "+r"(s00), [s01] "+r"(s01), [s10] "+r"(s10),
                           [s11] "+r"(s11), [x02] "=&r"(x02), [x13] "=&r"(x13), [y02] "=&r"(y02),
                           [y13] "=&r"(y13), [u] "=&r"(u), [t] "=&r"(t)
                         : [d] "r"(dw), [yo] "i"(2 * MT_CONV_PATCH), "m"(*patch));
    }
#else
    const uint32_t *y = x + MT_CONV_PATCH / 2;
    int32_t g;
    for (g = 0; g < groups; ++g, x += 2, y += 2, w0 += 4) {
        const uint32_t u0 = mt_read_s8x4(w0), u1 = mt_read_s8x4(w0 + dw);
        uint32_t wv = mt_sxtb16(u0);
        s00 = mt_smlad(x[0], wv, s00);
        s01 = mt_smlad(y[0], wv, s01);
        wv = mt_sxtb16_ror8(u0);
        s00 = mt_smlad(x[1], wv, s00);
        s01 = mt_smlad(y[1], wv, s01);
        wv = mt_sxtb16(u1);
        s10 = mt_smlad(x[0], wv, s10);
        s11 = mt_smlad(y[0], wv, s11);
        wv = mt_sxtb16_ror8(u1);
        s10 = mt_smlad(x[1], wv, s10);
        s11 = mt_smlad(y[1], wv, s11);
    }
#endif
    *a00 = s00;
    *a01 = s01;
    *a10 = s10;
    *a11 = s11;
}

/* s[0..1] += {x.w, y.w} over 4 * groups elements */
static void dot_1x2(const uint32_t *x, const int8_t *w, int32_t groups, int32_t s[2])
{
    const uint32_t *y = x + MT_CONV_PATCH / 2;
    int32_t s0 = s[0], s1 = s[1], g;
    for (g = 0; g < groups; ++g, x += 2, y += 2, w += 4) {
        const uint32_t u = mt_read_s8x4(w);
        uint32_t wv = mt_sxtb16(u);
        s0 = mt_smlad(x[0], wv, s0);
        s1 = mt_smlad(y[0], wv, s1);
        wv = mt_sxtb16_ror8(u);
        s0 = mt_smlad(x[1], wv, s0);
        s1 = mt_smlad(y[1], wv, s1);
    }
    s[0] = s0;
    s[1] = s1;
}

/* acc[0] (+ acc[1] when w1 != NULL) += sum over the valid taps of (x - in_zp) * w (windows larger
 * than the patch; xoff2 = {-in_zp, -in_zp}) */
static void window_dot(const gather_t *g, uint32_t xoff2, int32_t y0, int32_t x0, const int8_t *w0,
                       const int8_t *w1, int32_t *acc0, int32_t *acc1)
{
    int32_t ky, kx, kx_lo = 0, kx_hi = g->k_w - 1;
    while (kx_lo < g->k_w && x0 + kx_lo * g->dw < 0) {
        ++kx_lo;
    }
    while (kx_hi >= kx_lo && x0 + kx_hi * g->dw >= g->in_w) {
        --kx_hi;
    }
    for (ky = 0; ky < g->k_h; ++ky) {
        const int32_t iy = y0 + ky * g->dh;
        const int8_t *x_row;
        size_t w_row;
        if (iy < 0 || iy >= g->in_h) {
            continue;
        }
        x_row = g->in_b + (size_t)iy * (size_t)g->in_w * (size_t)g->in_c;
        w_row = (size_t)ky * (size_t)g->k_w;
        for (kx = kx_lo; kx <= kx_hi; ++kx) {
            const int32_t run = (g->dw == 1) ? (kx_hi - kx_lo + 1) : 1;
            const size_t xo = (size_t)(x0 + kx * g->dw) * (size_t)g->in_c;
            const size_t wo = (w_row + (size_t)kx) * (size_t)g->in_c;
            if (w1 != NULL) {
                mt_dot2_s8(x_row + xo, w0 + wo, w1 + wo, run * g->in_c, xoff2, 0u, acc0, acc1);
            } else {
                *acc0 = mt_dot1_s8(x_row + xo, w0 + wo, run * g->in_c, xoff2, 0u, *acc0);
            }
            kx += run - 1;
        }
    }
}

#if defined(__GNUC__)
#define MT_ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define MT_ALWAYS_INLINE static inline
#endif

/* {lo, hi} int16 lanes from two sign-extended int8 values */
static inline uint32_t pair_(int32_t lo, int32_t hi)
{
    return mt_pkhbt((uint32_t)lo, (uint32_t)hi);
}

/*
 * Windows of at most MT_CONV_TINY elements (Cin = 1, 3x3): the window as words of plain pairs
 * {x[2j], x[2j+1]} (zero beyond K), kept in registers; per output channel NW SMLAD against its
 * weights in the same layout (widened once per call), then requantize and store. Tap k of the
 * window is src[off[k]]: the input through the per-call tap offsets inside the input, the
 * gathered window (in_zp padding) with off[k] = k on the border. nw and mode are constants at
 * each call site (complete unrolling).
 */
MT_ALWAYS_INLINE void tiny_pixel(int8_t *y, const int8_t *src, const int32_t *off, int32_t len,
                                 const uint32_t *wt, const rq_t *t, const rq_mode_t *m, int32_t o0, int32_t n,
                                 const int nw, const int mode)
{
#define MT_TINY_X(j) (((2 * (j)) < len) ? pair_(src[off[2 * (j)]], (2 * (j) + 1 < len) ? src[off[2 * (j) + 1]] : 0) : 0u)
    const uint32_t x0 = MT_TINY_X(0), x1 = MT_TINY_X(1), x2 = MT_TINY_X(2), x3 = MT_TINY_X(3);
    const uint32_t x4 = (nw > 4) ? MT_TINY_X(4) : 0u, x5 = (nw > 5) ? MT_TINY_X(5) : 0u;
    const uint32_t x6 = (nw > 6) ? MT_TINY_X(6) : 0u, x7 = (nw > 7) ? MT_TINY_X(7) : 0u;
#undef MT_TINY_X
    int32_t i;
    for (i = 0; i < n; ++i, wt += MT_CONV_TINY / 2) {
        int32_t a = mt_smlad(x0, wt[0], t[i].bz);
        a = mt_smlad(x1, wt[1], a);
        a = mt_smlad(x2, wt[2], a);
        a = mt_smlad(x3, wt[3], a);
        if (nw > 4) {
            a = mt_smlad(x4, wt[4], a);
        }
        if (nw > 5) {
            a = mt_smlad(x5, wt[5], a);
        }
        if (nw > 6) {
            a = mt_smlad(x6, wt[6], a);
        }
        if (nw > 7) {
            a = mt_smlad(x7, wt[7], a);
        }
        y[i] = (int8_t)requant(a, &t[i], m, mode, o0 + i);
    }
}

/* tiny_pixel for windows of 9..10 elements (Cin = 1, 3x3) and of up to 16, per requantization */
/* tiny_pixel for windows of 9..10 elements (Cin = 1, 3x3) and of up to 16, per requantization, on
 * count pixels of one output row (pixel k: window at src + k * step, outputs at y + k * ys) */
static void tiny_any(int8_t *y, size_t ys, const int8_t *src, size_t step, int32_t count, const int32_t *off,
                     int32_t len, const uint32_t *wt, const rq_t *t, const rq_mode_t *m, int32_t o0, int32_t n)
{
    int32_t k;
#define MT_TINY_RUN(nw, mode)                                                                     \
    for (k = 0; k < count; ++k, y += ys, src += step) {                                           \
        tiny_pixel(y, src, off, len, wt, t, m, o0, n, nw, mode);                                  \
    }
    if (len > 8 && len <= 10) {
        if (m->mode == 1) {
            MT_TINY_RUN(5, 1)
        } else {
            MT_TINY_RUN(5, 0)
        }
    } else if (m->mode == 1) {
        MT_TINY_RUN(8, 1)
    } else {
        MT_TINY_RUN(8, 0)
    }
#undef MT_TINY_RUN
}

/* Every channel of the tile for the widened pixel pair in patch: y0[i], y1[i] (i < n) */
MT_ALWAYS_INLINE void pair_rows(const uint32_t *patch, const int8_t *w, const mt_wsplit *split, int32_t len,
                                const rq_t *r, const rq_mode_t *m, int8_t *y0, int8_t *y1, int32_t o0, int32_t n,
                                const int mode)
{
    const int32_t groups = len >> 2;
    const uint32_t *xt = patch + 2 * groups, *yt = xt + MT_CONV_PATCH / 2; /* the tail group */
    int32_t i;
    for (i = 0; i + 2 <= n; i += 2, r += 2) {
        const int8_t *w0 = mt_wrow(w, split, o0 + i, (size_t)len);
        const int8_t *w1 = mt_wrow(w, split, o0 + i + 1, (size_t)len);
        int32_t a0 = r[0].bz, a1 = r[0].bz, a2 = r[1].bz, a3 = r[1].bz;
        dot_2x2(patch, w0, w1 - w0, groups, &a0, &a1, &a2, &a3);
        if ((len & 3) != 0) {
            a0 = mt_smlad(xt[1], r[0].t13, mt_smlad(xt[0], r[0].t02, a0));
            a1 = mt_smlad(yt[1], r[0].t13, mt_smlad(yt[0], r[0].t02, a1));
            a2 = mt_smlad(xt[1], r[1].t13, mt_smlad(xt[0], r[1].t02, a2));
            a3 = mt_smlad(yt[1], r[1].t13, mt_smlad(yt[0], r[1].t02, a3));
        }
        y0[i] = (int8_t)requant(a0, &r[0], m, mode, o0 + i);
        y1[i] = (int8_t)requant(a1, &r[0], m, mode, o0 + i);
        y0[i + 1] = (int8_t)requant(a2, &r[1], m, mode, o0 + i + 1);
        y1[i + 1] = (int8_t)requant(a3, &r[1], m, mode, o0 + i + 1);
    }
    if (i < n) {
        int32_t a[2];
        a[0] = a[1] = r[0].bz;
        dot_1x2(patch, mt_wrow(w, split, o0 + i, (size_t)len), groups, a);
        if ((len & 3) != 0) {
            a[0] = mt_smlad(xt[1], r[0].t13, mt_smlad(xt[0], r[0].t02, a[0]));
            a[1] = mt_smlad(yt[1], r[0].t13, mt_smlad(yt[0], r[0].t02, a[1]));
        }
        y0[i] = (int8_t)requant(a[0], &r[0], m, mode, o0 + i);
        y1[i] = (int8_t)requant(a[1], &r[0], m, mode, o0 + i);
    }
}

static void pair_rows_any(const uint32_t *patch, const int8_t *w, const mt_wsplit *split, int32_t len,
                          const rq_t *r, const rq_mode_t *m, int8_t *y0, int8_t *y1, int32_t o0, int32_t n)
{
    if (m->mode == 1) {
        pair_rows(patch, w, split, len, r, m, y0, y1, o0, n, 1);
    } else {
        pair_rows(patch, w, split, len, r, m, y0, y1, o0, n, 0);
    }
}

/* The window of output pixel (y0, x0) widened into dst (groups {x0, x2}, {x1, x3}): directly
 * from the input rows when the window is inside and its rows are whole groups, else gathered
 * into the upper bytes of dst's own words and widened in place. */
static void gather_widen(uint32_t *dst, const gather_t *g, int32_t len, int32_t y0, int32_t x0)
{
    const int32_t row = g->row;
    if ((row & 3) == 0 && g->dw == 1 && x0 >= 0 && x0 + g->span_w <= g->in_w && y0 >= 0 &&
        y0 + g->span_h <= g->in_h) {
        const size_t in_row = (size_t)g->in_w * (size_t)g->in_c;
        const int8_t *src = g->in_b + (size_t)y0 * in_row + (size_t)x0 * (size_t)g->in_c;
        const size_t step = (size_t)g->dh * in_row;
        int32_t ky, k;
        for (ky = 0; ky < g->k_h; ++ky, src += step) {
            for (k = 0; k < row; k += 4, dst += 2) {
                const uint32_t v = mt_read_s8x4(src + k);
                dst[0] = mt_sxtb16(v);
                dst[1] = mt_sxtb16_ror8(v);
            }
        }
        return;
    }
    {
        int8_t *raw = (int8_t *)dst + 4 * (MT_CONV_PATCH / 2) - len;
        gather_patch(raw, g, y0, x0);
        widen_patch(dst, raw, len);
    }
}

mt_status mt_conv2d_fwd_s8_dsp(const mt_conv_params *p, const mt_per_channel_quant *q,
                               const mt_dims *in_dims, const int8_t *in,
                               const mt_dims *filter_dims, const int8_t *w, const int32_t *bias,
                               const mt_dims *out_dims, int8_t *out)
{
    const int32_t in_h = in_dims->h, in_w = in_dims->w, in_c = in_dims->c;
    const int32_t out_c = filter_dims->n, k_h = filter_dims->h, k_w = filter_dims->w;
    const int32_t ow = out_dims->w, pixels = out_dims->h * out_dims->w;
    const size_t w_len = (size_t)k_h * (size_t)k_w * (size_t)in_c;
    const int32_t len = (int32_t)w_len;
    const int small = (w_len <= MT_CONV_PATCH), tiny = (w_len <= MT_CONV_TINY && in_c == 1);
    const uint32_t xoff2 = mt_dup16(-p->in_zp);
    rq_t rq[MT_CONV_TILE];
    union {
        uint32_t patch[MT_CONV_PATCH]; /* 2 pixels x MT_CONV_PATCH / 2 words (int16 pairs) */
        struct {
            int32_t off[MT_CONV_TINY];   /* tap k of the window at src + off[k] */
            int32_t ident[MT_CONV_TINY]; /* k */
            int16_t ty[MT_CONV_TINY];    /* tap k at input row y0 + ty[k], column x0 + tx[k] */
            int16_t tx[MT_CONV_TINY];
            uint32_t wt[MT_CONV_TINY_CH][MT_CONV_TINY / 2];
        } tiny;
    } u;
    int8_t spare[MT_CONV_TILE]; /* the outputs of a missing second pixel */
    int32_t b, px, o, o0, i, a[4];
    rq_mode_t m;
    gather_t g;

    if (filter_dims->c != in_c || out_dims->c != out_c || out_dims->n != in_dims->n ||
        p->stride.h < 1 || p->stride.w < 1 || p->dilation.h < 1 || p->dilation.w < 1) {
        return MT_ERR_ARG;
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
    if (tiny) {
        int32_t k = 0, ky, kx, c;
        for (ky = 0; ky < k_h; ++ky) {
            for (kx = 0; kx < k_w; ++kx) {
                for (c = 0; c < in_c; ++c) {
                    u.tiny.ident[k] = k;
                    u.tiny.ty[k] = (int16_t)(ky * g.dh);
                    u.tiny.tx[k] = (int16_t)(kx * g.dw);
                    u.tiny.off[k++] = (ky * g.dh * in_w + kx * g.dw) * in_c + c;
                }
            }
        }
    }
    m.lo = p->act_min;
    m.hi = p->act_max;
    m.out_zp = p->out_zp;
    m.mult = q->mult;
    m.shift = q->shift;
    for (o0 = 0; o0 < out_c; o0 += MT_CONV_TILE) {
        const int32_t o1 = (o0 + MT_CONV_TILE < out_c) ? o0 + MT_CONV_TILE : out_c, n = o1 - o0;
        m.mode = rq_prepare(rq, p, q, w, bias, o0, o1, len, small);
        for (b = 0; b < in_dims->n && tiny; ++b) {
            int8_t *out_b = out + (size_t)b * (size_t)pixels * (size_t)out_c;
            int32_t s0;
            g.in_b = in + (size_t)b * (size_t)in_h * (size_t)in_w * (size_t)in_c;
            for (s0 = o0; s0 < o1; s0 += MT_CONV_TINY_CH) { /* channels [s0, s1) of the tile */
                const int32_t s1 = (s0 + MT_CONV_TINY_CH < o1) ? s0 + MT_CONV_TINY_CH : o1;
                int8_t raw[MT_CONV_TINY];
                int32_t oy, ox, lo = 0, hi = ow;
                for (o = s0; o < s1; ++o) { /* the weights as plain int16 pairs, odd K: {w[K-1], 0} */
                    const int8_t *src = mt_wrow(w, &p->split, o, w_len);
                    for (i = 0; i < MT_CONV_TINY / 2; ++i) {
                        u.tiny.wt[o - s0][i] = pair_((2 * i < len) ? src[2 * i] : 0, (2 * i + 1 < len) ? src[2 * i + 1] : 0);
                    }
                }
                /* output columns [lo, hi) have their whole window inside the input columns */
                while (lo < ow && lo * p->stride.w - p->padding.left < 0) {
                    ++lo;
                }
                while (hi > lo && (hi - 1) * p->stride.w - p->padding.left + g.span_w > in_w) {
                    --hi;
                }
                for (oy = 0; oy < out_dims->h; ++oy) {
                    const int32_t y0 = oy * p->stride.h - p->padding.top;
                    const int rows_in = (y0 >= 0 && y0 + g.span_h <= in_h);
                    for (ox = 0; ox < ow; ++ox) {
                        const int32_t x0 = ox * p->stride.w - p->padding.left;
                        int8_t *yp = out_b + ((size_t)oy * (size_t)ow + (size_t)ox) * (size_t)out_c + s0;
                        if (rows_in && ox == lo && hi > lo) { /* the inside run of this row */
                            const int8_t *src = g.in_b + ((size_t)y0 * (size_t)in_w + (size_t)x0) * (size_t)in_c;
                            tiny_any(yp, (size_t)out_c, src, (size_t)p->stride.w * (size_t)in_c, hi - lo, u.tiny.off, len,
                                     u.tiny.wt[0], rq + (s0 - o0), &m, s0, s1 - s0);
                            ox = hi - 1;
                            continue;
                        }
                        for (i = 0; i < len; ++i) { /* the taps one by one (Cin = 1), in_zp outside */
                            const int32_t iy = y0 + u.tiny.ty[i], ix = x0 + u.tiny.tx[i];
                            raw[i] = ((uint32_t)iy < (uint32_t)in_h && (uint32_t)ix < (uint32_t)in_w)
                                         ? g.in_b[(size_t)iy * (size_t)in_w + (size_t)ix] : g.pad;
                        }
                        tiny_any(yp, 0u, raw, 0u, 1, u.tiny.ident, len, u.tiny.wt[0], rq + (s0 - o0), &m, s0, s1 - s0);
                    }
                }
            }
        }
        for (b = 0; b < in_dims->n && !tiny; ++b) {
            int8_t *out_b = out + (size_t)b * (size_t)pixels * (size_t)out_c;
            int32_t oy = 0, ox = 0;
            g.in_b = in + (size_t)b * (size_t)in_h * (size_t)in_w * (size_t)in_c;
            for (px = 0; px < pixels; px += 2) {
                const int two = (px + 1 < pixels);
                const int32_t ya = oy * p->stride.h - p->padding.top, xa = ox * p->stride.w - p->padding.left;
                int32_t yb = ya, xb = xa;
                int8_t *y0p = out_b + (size_t)px * (size_t)out_c + o0;
                int8_t *y1p = two ? y0p + out_c : spare;
                if (++ox == ow) {
                    ox = 0;
                    ++oy;
                }
                if (two) {
                    yb = oy * p->stride.h - p->padding.top;
                    xb = ox * p->stride.w - p->padding.left;
                    if (++ox == ow) {
                        ox = 0;
                        ++oy;
                    }
                }
                if (small) {
                    gather_widen(u.patch, &g, len, ya, xa);
                    gather_widen(u.patch + MT_CONV_PATCH / 2, &g, len, yb, xb);
                    pair_rows_any(u.patch, w, &p->split, len, rq, &m, y0p, y1p, o0, n);
                    continue;
                }
                for (o = o0; o < o1; o += 2) {
                    const rq_t *r = &rq[o - o0];
                    const int8_t *w0 = mt_wrow(w, &p->split, o, w_len);
                    const int8_t *w1 = (o + 1 < o1) ? mt_wrow(w, &p->split, o + 1, w_len) : NULL;
                    a[0] = a[1] = r[0].bz;
                    a[2] = a[3] = (w1 != NULL) ? r[1].bz : 0;
                    window_dot(&g, xoff2, ya, xa, w0, w1, &a[0], &a[2]);
                    window_dot(&g, xoff2, yb, xb, w0, w1, &a[1], &a[3]);
                    y0p[o - o0] = (int8_t)requant(a[0], &r[0], &m, m.mode, o);
                    y1p[o - o0] = (int8_t)requant(a[1], &r[0], &m, m.mode, o);
                    if (w1 != NULL) {
                        y0p[o + 1 - o0] = (int8_t)requant(a[2], &r[1], &m, m.mode, o + 1);
                        y1p[o + 1 - o0] = (int8_t)requant(a[3], &r[1], &m, m.mode, o + 1);
                    }
                }
            }
        }
    }
    return MT_OK;
}
