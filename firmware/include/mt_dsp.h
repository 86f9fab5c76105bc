/**
 * @file mt_dsp.h
 * @brief Arm DSP-extension (SIMD32) helpers for the ``*_dsp`` kernels, with bit-exact portable C
 *        emulations.
 *
 * Packed operands are uint32 words holding two 16-bit lanes (lane 0 = bits 0..15) or four 8-bit
 * lanes (lane 0 = bits 0..7, the lowest address in memory: little-endian, as on every Cortex-M).
 *
 *   mt_smlad(a, b, acc)       acc + a.h0 * b.h0 + a.h1 * b.h1        (SMLAD; wraps mod 2^32 -
 *                                                                     the Q flag is not modelled)
 *   mt_sxtb16(x)              {sext(x.b0), sext(x.b2)}              (SXTB16)
 *   mt_sxtb16_ror8(x)         {sext(x.b1), sext(x.b3)}              (SXTB16 ..., ROR #8)
 *   mt_sxtab16(a, x)          {a.h0 + sext(x.b0), a.h1 + sext(x.b2)} (SXTAB16; each lane mod 2^16)
 *   mt_sxtab16_ror8(a, x)     {a.h0 + sext(x.b1), a.h1 + sext(x.b3)} (SXTAB16 ..., ROR #8)
 *   mt_pkhbt(a, b)            {a.h0, b.h0}                          (PKHBT a, b, LSL #16)
 *   mt_pkhtb(a, b)            {b.h1, a.h1}                          (PKHTB a, b, ASR #16)
 *   mt_read_s8x4 / mt_read_s16x2   unaligned-safe 32-bit loads (memcpy: one LDR on v7E-M),
 *                             mt_write_s16x2 the store
 *   mt_dup16(v)               {v, v} (v in [-32768, 32767])
 *   mt_ssat8(x)               x saturated to [-128, 127]            (SSAT #8)
 *   mt_max16x2(a, b)          {max(a.h0, b.h0), max(a.h1, b.h1)}    (SSUB16 + SEL)
 *   mt_min16x2(a, b)          {min(a.h0, b.h0), min(a.h1, b.h1)}    (SSUB16 + SEL)
 *
 * Built on them (the GEMM family: fully_connected / pointwise forward, fully_connected_acc):
 *   mt_mac2x2_s8    2 rows x 2 weight rows of int8 dot products (zero points folded by the caller);
 *                   mt_mac2x2d_s8 the same for rows of one stride (assembly loop when native)
 *   mt_mac1x4_s8    1 row (with its zero-point offset) x 4 equally spaced weight rows (assembly
 *                   loop when native)
 *   mt_row_fold_s8  acc + off * sum(w): the input zero point folded into a start value
 * The assembly loops use fixed instruction sequences on GCC-allocated registers (13 of them) and
 * read their loop end from a memory operand; their C fallbacks are the emulated reference.
 *
 * When ``__ARM_FEATURE_DSP`` is defined (Cortex-M4/M7/M33/M55/M85 with GCC or Clang) the real
 * instructions are used (ACLE ``<arm_acle.h>`` intrinsics for SMLAD/SXTB16/SXTAB16, inline assembly
 * for the ROR #8 forms and PKHBT/PKHTB, which ACLE lacks). Otherwise - or when
 * ``MT_DSP_EMULATE`` is defined - portable C with exactly the same results is used, so the host
 * tests run the ``*_dsp`` kernels bit-exactly. Integer only, no undefined behaviour: products are
 * exact in int32 (|h0 * h1| <= 2^30) and sums wrap in uint32.
 */
#ifndef MT_DSP_H
#define MT_DSP_H

#include <stdint.h>

#include "mt_common.h"

#if defined(__ARM_FEATURE_DSP) && !defined(MT_DSP_EMULATE)
#define MT_DSP_NATIVE 1
#include <arm_acle.h>
#else
#define MT_DSP_NATIVE 0
#endif

/* Word loads: GCC/Clang on a little-endian target copy the bytes with __builtin_memcpy (one
 * unaligned LDR on v7E-M, no libc call, no <string.h> needed in freestanding builds); anything
 * else assembles the bytes (same lanes on any byte order). */
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && \
    (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
#define MT_DSP_LOAD_MEMCPY 1
#else
#define MT_DSP_LOAD_MEMCPY 0
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- lane helpers (portable, used by the emulations and by scalar tails) -------------------- */

/** Signed value of 16-bit lane @p i (0 or 1) of @p x. */
static inline int32_t mt_lane16(uint32_t x, int i)
{
    const uint32_t h = (i != 0) ? (x >> 16) : (x & 0xFFFFu);
    return (int32_t)(h ^ 0x8000u) - 0x8000;
}

/** Sign-extended byte @p i (0..3) of @p x, as uint32 (two's complement). */
static inline uint32_t mt_sext8u(uint32_t x, int i)
{
    return (((x >> (8 * i)) & 0xFFu) ^ 0x80u) - 0x80u;
}

/** {lo, hi} 16-bit lanes from two int32 values (each taken mod 2^16). */
static inline uint32_t mt_pack16(int32_t lo, int32_t hi)
{
    return ((uint32_t)lo & 0xFFFFu) | ((uint32_t)hi << 16);
}

/** {v, v}. */
static inline uint32_t mt_dup16(int32_t v)
{
    return mt_pack16(v, v);
}

/* ---- loads ----------------------------------------------------------------------------------- */

/** Four int8 from any address: byte p[i] in lane i. */
static inline uint32_t mt_read_s8x4(const int8_t *p)
{
#if MT_DSP_LOAD_MEMCPY
    uint32_t v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
#else
    const uint8_t *b = (const uint8_t *)p;
    return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
#endif
}

/** Two int16 from any (even) address: p[0] in lane 0, p[1] in lane 1. */
static inline uint32_t mt_read_s16x2(const int16_t *p)
{
#if MT_DSP_LOAD_MEMCPY
    uint32_t v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
#else
    return mt_pack16(p[0], p[1]);
#endif
}

/** Store two 16-bit lanes to p[0], p[1]. */
static inline void mt_write_s16x2(int16_t *p, uint32_t v)
{
#if MT_DSP_LOAD_MEMCPY
    __builtin_memcpy(p, &v, sizeof v);
#else
    p[0] = (int16_t)mt_lane16(v, 0);
    p[1] = (int16_t)mt_lane16(v, 1);
#endif
}

/* ---- the instructions -------------------------------------------------------------------------- */

/** SMLAD: acc + a.h0 * b.h0 + a.h1 * b.h1, wrapping mod 2^32. */
static inline int32_t mt_smlad(uint32_t a, uint32_t b, int32_t acc)
{
#if MT_DSP_NATIVE
    return __smlad(mt_wrap32(a), mt_wrap32(b), acc);
#else
    const int32_t p0 = mt_lane16(a, 0) * mt_lane16(b, 0);
    const int32_t p1 = mt_lane16(a, 1) * mt_lane16(b, 1);
    return mt_wrap32((uint32_t)acc + (uint32_t)p0 + (uint32_t)p1);
#endif
}

/** SXTB16: {sext(b0), sext(b2)}. */
static inline uint32_t mt_sxtb16(uint32_t x)
{
#if MT_DSP_NATIVE
    return (uint32_t)__sxtb16(mt_wrap32(x));
#else
    return (mt_sext8u(x, 0) & 0xFFFFu) | (mt_sext8u(x, 2) << 16);
#endif
}

/** SXTB16 with ROR #8: {sext(b1), sext(b3)}. */
static inline uint32_t mt_sxtb16_ror8(uint32_t x)
{
#if MT_DSP_NATIVE
    uint32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
#else
    return (mt_sext8u(x, 1) & 0xFFFFu) | (mt_sext8u(x, 3) << 16);
#endif
}

/** SXTAB16: {a.h0 + sext(b0), a.h1 + sext(b2)}, each lane mod 2^16. */
static inline uint32_t mt_sxtab16(uint32_t a, uint32_t x)
{
#if MT_DSP_NATIVE
    return (uint32_t)__sxtab16(mt_wrap32(a), mt_wrap32(x));
#else
    return ((a + mt_sext8u(x, 0)) & 0xFFFFu) | (((a >> 16) + mt_sext8u(x, 2)) << 16);
#endif
}

/** SXTAB16 with ROR #8: {a.h0 + sext(b1), a.h1 + sext(b3)}, each lane mod 2^16. */
static inline uint32_t mt_sxtab16_ror8(uint32_t a, uint32_t x)
{
#if MT_DSP_NATIVE
    uint32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
    return r;
#else
    return ((a + mt_sext8u(x, 1)) & 0xFFFFu) | (((a >> 16) + mt_sext8u(x, 3)) << 16);
#endif
}

/** PKHBT a, b, LSL #16: {a.h0, b.h0}. */
static inline uint32_t mt_pkhbt(uint32_t a, uint32_t b)
{
#if MT_DSP_NATIVE
    uint32_t r;
    __asm__("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
#else
    return (a & 0xFFFFu) | (b << 16);
#endif
}

/** PKHTB a, b, ASR #16: {b.h1, a.h1}. */
static inline uint32_t mt_pkhtb(uint32_t a, uint32_t b)
{
#if MT_DSP_NATIVE
    uint32_t r;
    __asm__("pkhtb %0, %1, %2, asr #16" : "=r"(r) : "r"(a), "r"(b));
    return r;
#else
    return (a & 0xFFFF0000u) | (b >> 16);
#endif
}

/** SSAT #8: x saturated to [-128, 127]. */
static inline int32_t mt_ssat8(int32_t x)
{
#if MT_DSP_NATIVE
    int32_t r;
    __asm__("ssat %0, #8, %1" : "=r"(r) : "r"(x));
    return r;
#else
    return (x < -128) ? -128 : ((x > 127) ? 127 : x);
#endif
}

/** Lane-wise signed maximum of two int16 pairs: SSUB16 sets GE per lane where a >= b, SEL takes a
 *  there (one asm block: nothing may touch the GE flags in between). */
static inline uint32_t mt_max16x2(uint32_t a, uint32_t b)
{
#if MT_DSP_NATIVE
    uint32_t r;
    __asm__("ssub16 %0, %1, %2\n\tsel %0, %1, %2" : "=&r"(r) : "r"(a), "r"(b) : "cc");
    return r;
#else
    const int32_t a0 = mt_lane16(a, 0), a1 = mt_lane16(a, 1);
    const int32_t b0 = mt_lane16(b, 0), b1 = mt_lane16(b, 1);
    return mt_pack16((a0 >= b0) ? a0 : b0, (a1 >= b1) ? a1 : b1);
#endif
}

/** Lane-wise signed minimum of two int16 pairs (SSUB16 + SEL with the operands swapped). */
static inline uint32_t mt_min16x2(uint32_t a, uint32_t b)
{
#if MT_DSP_NATIVE
    uint32_t r;
    __asm__("ssub16 %0, %1, %2\n\tsel %0, %2, %1" : "=&r"(r) : "r"(a), "r"(b) : "cc");
    return r;
#else
    const int32_t a0 = mt_lane16(a, 0), a1 = mt_lane16(a, 1);
    const int32_t b0 = mt_lane16(b, 0), b1 = mt_lane16(b, 1);
    return mt_pack16((a0 >= b0) ? b0 : a0, (a1 >= b1) ? b1 : a1);
#endif
}

/* ---- dot products built on them (shared by the *_dsp kernels) -------------------------------- */

/**
 * Two int8 dot products over @p len elements sharing the activation row (wrapping int32):
 *   *a0 += sum_k (x[k] + xoff) * (w0[k] + woff),  *a1 += sum_k (x[k] + xoff) * (w1[k] + woff)
 * @p xoff2 = mt_dup16(xoff), @p woff2 = mt_dup16(woff), offsets minus the zero points, every
 * x + xoff and w + woff in int16 range (|.| <= 255 for int8 data and int8 zero points).
 * Elements are taken in groups of 4 (SXTAB16 splits even/odd bytes, SMLAD adds the pairs).
 */
static inline void mt_dot2_s8(const int8_t *x, const int8_t *w0, const int8_t *w1, int32_t len,
                              uint32_t xoff2, uint32_t woff2, int32_t *a0, int32_t *a1)
{
    const int32_t xoff = mt_lane16(xoff2, 0), woff = mt_lane16(woff2, 0);
    int32_t s0 = *a0, s1 = *a1, k = 0;
    for (; k + 4 <= len; k += 4) {
        const uint32_t xv = mt_read_s8x4(x + k);
        const uint32_t x02 = mt_sxtab16(xoff2, xv);
        const uint32_t x13 = mt_sxtab16_ror8(xoff2, xv);
        const uint32_t u0 = mt_read_s8x4(w0 + k);
        const uint32_t u1 = mt_read_s8x4(w1 + k);
        s0 = mt_smlad(x02, mt_sxtab16(woff2, u0), s0);
        s0 = mt_smlad(x13, mt_sxtab16_ror8(woff2, u0), s0);
        s1 = mt_smlad(x02, mt_sxtab16(woff2, u1), s1);
        s1 = mt_smlad(x13, mt_sxtab16_ror8(woff2, u1), s1);
    }
    for (; k < len; ++k) {
        const int32_t xk = (int32_t)x[k] + xoff;
        s0 = mt_wrap32((uint32_t)s0 + (uint32_t)(xk * ((int32_t)w0[k] + woff)));
        s1 = mt_wrap32((uint32_t)s1 + (uint32_t)(xk * ((int32_t)w1[k] + woff)));
    }
    *a0 = s0;
    *a1 = s1;
}

/** One int8 dot product, as mt_dot2_s8 with a single weight row. */
static inline int32_t mt_dot1_s8(const int8_t *x, const int8_t *w, int32_t len, uint32_t xoff2,
                                 uint32_t woff2, int32_t acc)
{
    const int32_t xoff = mt_lane16(xoff2, 0), woff = mt_lane16(woff2, 0);
    int32_t k = 0;
    for (; k + 4 <= len; k += 4) {
        const uint32_t xv = mt_read_s8x4(x + k);
        const uint32_t u = mt_read_s8x4(w + k);
        acc = mt_smlad(mt_sxtab16(xoff2, xv), mt_sxtab16(woff2, u), acc);
        acc = mt_smlad(mt_sxtab16_ror8(xoff2, xv), mt_sxtab16_ror8(woff2, u), acc);
    }
    for (; k < len; ++k) {
        acc = mt_wrap32((uint32_t)acc + (uint32_t)(((int32_t)x[k] + xoff) * ((int32_t)w[k] + woff)));
    }
    return acc;
}

/**
 * 2x2 block of int8 dot products over @p len elements, no zero points (the caller folds them):
 *   s[0] += x0 . w0, s[1] += x0 . w1, s[2] += x1 . w0, s[3] += x1 . w1   (wrapping int32)
 * with x1 = x0 + dx, w1 = w0 + dw. Per 4 elements: 4 word loads, 8 SXTB16, 8 SMLAD for 16
 * multiply-accumulates (each loaded word is unpacked once and used twice).
 */
static inline void mt_mac2x2_s8(const int8_t *x0, ptrdiff_t dx, const int8_t *w0, ptrdiff_t dw,
                                int32_t len, int32_t s[4])
{
    int32_t s00 = s[0], s01 = s[1], s10 = s[2], s11 = s[3];
    int32_t k;
    for (k = len >> 2; k > 0; --k) {
        const uint32_t wa = mt_read_s8x4(w0), wb = mt_read_s8x4(w0 + dw);
        const uint32_t wa02 = mt_sxtb16(wa), wa13 = mt_sxtb16_ror8(wa);
        const uint32_t wb02 = mt_sxtb16(wb), wb13 = mt_sxtb16_ror8(wb);
        uint32_t xv = mt_read_s8x4(x0 + dx);
        uint32_t x02 = mt_sxtb16(xv), x13 = mt_sxtb16_ror8(xv);
        s10 = mt_smlad(x02, wa02, s10);
        s11 = mt_smlad(x02, wb02, s11);
        s10 = mt_smlad(x13, wa13, s10);
        s11 = mt_smlad(x13, wb13, s11);
        xv = mt_read_s8x4(x0);
        x02 = mt_sxtb16(xv);
        x13 = mt_sxtb16_ror8(xv);
        s00 = mt_smlad(x02, wa02, s00);
        s01 = mt_smlad(x02, wb02, s01);
        s00 = mt_smlad(x13, wa13, s00);
        s01 = mt_smlad(x13, wb13, s01);
        x0 += 4;
        w0 += 4;
    }
    for (k = len & 3; k > 0; --k) {
        const int32_t a0 = x0[0], a1 = x0[dx], b0 = w0[0], b1 = w0[dw];
        s00 = mt_wrap_add32(s00, a0 * b0);
        s01 = mt_wrap_add32(s01, a0 * b1);
        s10 = mt_wrap_add32(s10, a1 * b0);
        s11 = mt_wrap_add32(s11, a1 * b1);
        ++x0;
        ++w0;
    }
    s[0] = s00;
    s[1] = s01;
    s[2] = s10;
    s[3] = s11;
}

#if MT_DSP_NATIVE
/* 4 elements of mt_mac2x2d_s8: x rows unpacked first (t0/t1 = x1 even/odd, t2/t3 = x0), then
 * one weight word at a time (t4/t5), 20 instructions for 16 multiply-accumulates. */
#define MT_MAC2X2_ASM_STEP                                                                        \
    "ldr %[t1], [%[x], %[d]]\n\t"                                                               \
    "ldr %[t3], [%[x]], #4\n\t"                                                                 \
    "sxtb16 %[t0], %[t1]\n\t"                                                                   \
    "sxtb16 %[t1], %[t1], ror #8\n\t"                                                           \
    "sxtb16 %[t2], %[t3]\n\t"                                                                   \
    "sxtb16 %[t3], %[t3], ror #8\n\t"                                                           \
    "ldr %[t5], [%[w], %[d]]\n\t"                                                               \
    "sxtb16 %[t4], %[t5]\n\t"                                                                   \
    "sxtb16 %[t5], %[t5], ror #8\n\t"                                                           \
    "smlad %[s11], %[t0], %[t4], %[s11]\n\t"                                                    \
    "smlad %[s01], %[t2], %[t4], %[s01]\n\t"                                                    \
    "smlad %[s11], %[t1], %[t5], %[s11]\n\t"                                                    \
    "smlad %[s01], %[t3], %[t5], %[s01]\n\t"                                                    \
    "ldr %[t5], [%[w]], #4\n\t"                                                                 \
    "sxtb16 %[t4], %[t5]\n\t"                                                                   \
    "sxtb16 %[t5], %[t5], ror #8\n\t"                                                           \
    "smlad %[s10], %[t0], %[t4], %[s10]\n\t"                                                    \
    "smlad %[s00], %[t2], %[t4], %[s00]\n\t"                                                    \
    "smlad %[s10], %[t1], %[t5], %[s10]\n\t"                                                    \
    "smlad %[s00], %[t3], %[t5], %[s00]\n\t"
#endif

/**
 * mt_mac2x2_s8 with one stride for both operands (x1 = x0 + d, w1 = w0 + d: rows of one array).
 * With the DSP extension the loop over 8-element steps is hand-scheduled assembly (13 registers,
 * the loop end read from memory), the rest as mt_mac2x2_s8.
 */
static inline void mt_mac2x2d_s8(const int8_t *x0, const int8_t *w0, ptrdiff_t d, int32_t len,
                                 int32_t s[4])
{
#if MT_DSP_NATIVE
    if (len >= 8) {
        int32_t s00 = s[0], s01 = s[1], s10 = s[2], s11 = s[3];
        const int8_t *volatile end = x0 + (len & ~(int32_t)7);
        uint32_t t0, t1, t2, t3, t4, t5;
        __asm__ volatile("1:\n\t" MT_MAC2X2_ASM_STEP MT_MAC2X2_ASM_STEP
                         "ldr %[t0], %[end]\n\t"
                         "cmp %[x], %[t0]\n\t"
                         "bne 1b\n\t"
                         : [x] "+r"(x0), [w] "+r"(w0), [s00] "+r"(s00), [s01] "+r"(s01),
                           [s10] "+r"(s10), [s11] "+r"(s11), [t0] "=&r"(t0), [t1] "=&r"(t1),
                           [t2] "=&r"(t2), [t3] "=&r"(t3), [t4] "=&r"(t4), [t5] "=&r"(t5)
                         : [d] "r"(d), [end] "m"(end)
                         : "cc", "memory");
        s[0] = s00;
        s[1] = s01;
        s[2] = s10;
        s[3] = s11;
        len &= 7;
    }
#endif
    mt_mac2x2_s8(x0, d, w0, d, len, s);
}

/**
 * One row against four weight rows w0 + j * dw: s[j] += sum_k (x[k] + xoff) * w0[j * dw + k],
 * j < 4 (wrapping int32), @p xoff2 = mt_dup16(xoff), every x + xoff in int16 range. Per 4
 * elements: 5 word loads, 2 SXTAB16, 8 SXTB16, 8 SMLAD for 16 multiply-accumulates.
 */
#if MT_DSP_NATIVE
/* 4 elements of mt_mac1x4_s8: the input word unpacked with -zero point (t0/t1), then each weight
 * row's word (t2/t3), 23 instructions for 16 multiply-accumulates. */
#define MT_MAC1X4_ASM_STEP                                                                        \
    "ldr %[t1], [%[x]], #4\n\t"                                                                 \
    "sxtab16 %[t0], %[xo], %[t1]\n\t"                                                           \
    "sxtab16 %[t1], %[xo], %[t1], ror #8\n\t"                                                   \
    "ldr %[t3], [%[w0], %[d]]\n\t"                                                              \
    "sxtb16 %[t2], %[t3]\n\t"                                                                   \
    "sxtb16 %[t3], %[t3], ror #8\n\t"                                                           \
    "smlad %[s1], %[t0], %[t2], %[s1]\n\t"                                                      \
    "smlad %[s1], %[t1], %[t3], %[s1]\n\t"                                                      \
    "ldr %[t3], [%[w0]], #4\n\t"                                                                \
    "sxtb16 %[t2], %[t3]\n\t"                                                                   \
    "sxtb16 %[t3], %[t3], ror #8\n\t"                                                           \
    "smlad %[s0], %[t0], %[t2], %[s0]\n\t"                                                      \
    "smlad %[s0], %[t1], %[t3], %[s0]\n\t"                                                      \
    "ldr %[t3], [%[w2], %[d]]\n\t"                                                              \
    "sxtb16 %[t2], %[t3]\n\t"                                                                   \
    "sxtb16 %[t3], %[t3], ror #8\n\t"                                                           \
    "smlad %[s3], %[t0], %[t2], %[s3]\n\t"                                                      \
    "smlad %[s3], %[t1], %[t3], %[s3]\n\t"                                                      \
    "ldr %[t3], [%[w2]], #4\n\t"                                                                \
    "sxtb16 %[t2], %[t3]\n\t"                                                                   \
    "sxtb16 %[t3], %[t3], ror #8\n\t"                                                           \
    "smlad %[s2], %[t0], %[t2], %[s2]\n\t"                                                      \
    "smlad %[s2], %[t1], %[t3], %[s2]\n\t"
#endif

static inline void mt_mac1x4_s8(const int8_t *x, const int8_t *w0, ptrdiff_t dw, int32_t len,
                                uint32_t xoff2, int32_t s[4])
{
    const int32_t xoff = mt_lane16(xoff2, 0);
    const int8_t *w2 = w0 + 2 * dw;
    const int8_t *end;
    int32_t s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3];
#if MT_DSP_NATIVE
    if (len >= 8) { /* 8 per pass, hand-scheduled (13 registers, the loop end read from memory) */
        const int8_t *volatile end8 = x + (len & ~(int32_t)7);
        uint32_t t0, t1, t2, t3;
        __asm__ volatile("1:\n\t" MT_MAC1X4_ASM_STEP MT_MAC1X4_ASM_STEP
                         "ldr %[t0], %[end]\n\t"
                         "cmp %[x], %[t0]\n\t"
                         "bne 1b\n\t"
                         : [x] "+r"(x), [w0] "+r"(w0), [w2] "+r"(w2), [s0] "+r"(s0),
                           [s1] "+r"(s1), [s2] "+r"(s2), [s3] "+r"(s3), [t0] "=&r"(t0),
                           [t1] "=&r"(t1), [t2] "=&r"(t2), [t3] "=&r"(t3)
                         : [d] "r"(dw), [xo] "r"(xoff2), [end] "m"(end8)
                         : "cc", "memory");
        len &= 7;
    }
#endif
    end = x + (len & ~(int32_t)3);
    while (x != end) {
        const uint32_t xv = mt_read_s8x4(x);
        const uint32_t x02 = mt_sxtab16(xoff2, xv), x13 = mt_sxtab16_ror8(xoff2, xv);
        uint32_t u = mt_read_s8x4(w0);
        s0 = mt_smlad(x02, mt_sxtb16(u), s0);
        s0 = mt_smlad(x13, mt_sxtb16_ror8(u), s0);
        u = mt_read_s8x4(w0 + dw);
        s1 = mt_smlad(x02, mt_sxtb16(u), s1);
        s1 = mt_smlad(x13, mt_sxtb16_ror8(u), s1);
        u = mt_read_s8x4(w2);
        s2 = mt_smlad(x02, mt_sxtb16(u), s2);
        s2 = mt_smlad(x13, mt_sxtb16_ror8(u), s2);
        u = mt_read_s8x4(w2 + dw);
        s3 = mt_smlad(x02, mt_sxtb16(u), s3);
        s3 = mt_smlad(x13, mt_sxtb16_ror8(u), s3);
        x += 4;
        w0 += 4;
        w2 += 4;
    }
    for (len &= 3; len > 0; --len) {
        const int32_t a = (int32_t)*x++ + xoff;
        s0 = mt_wrap_add32(s0, a * w0[0]);
        s1 = mt_wrap_add32(s1, a * w0[dw]);
        s2 = mt_wrap_add32(s2, a * w2[0]);
        s3 = mt_wrap_add32(s3, a * w2[dw]);
        ++w0;
        ++w2;
    }
    s[0] = s0;
    s[1] = s1;
    s[2] = s2;
    s[3] = s3;
}

/**
 * acc + sum_k off * w[k] over @p len int8 weights (wrapping int32), @p off2 = mt_dup16(off):
 * the zero-point fold of a weight row (bias - in_zp * sum w with off = -in_zp).
 */
static inline int32_t mt_row_fold_s8(const int8_t *w, int32_t len, uint32_t off2, int32_t acc)
{
    const int32_t off = mt_lane16(off2, 0);
    int32_t k = 0;
    for (; k + 4 <= len; k += 4) {
        const uint32_t u = mt_read_s8x4(w + k);
        acc = mt_smlad(off2, mt_sxtb16(u), acc);
        acc = mt_smlad(off2, mt_sxtb16_ror8(u), acc);
    }
    for (; k < len; ++k) {
        acc = mt_wrap_add32(acc, off * w[k]);
    }
    return acc;
}

#ifdef __cplusplus
}
#endif

#endif /* MT_DSP_H */
