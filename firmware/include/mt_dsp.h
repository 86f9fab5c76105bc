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

#ifdef __cplusplus
}
#endif

#endif /* MT_DSP_H */
