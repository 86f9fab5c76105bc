/**
 * @file mt_gradfmt_fast.h
 * @brief Private to the gradient-format kernels (mt_grad_mul_q31_s16/_s32, mt_grad_headroom_s16,
 *        mt_grad_renormalize_s32): the single-pass forms of their max and write loops. Everything
 *        here is static inline and gives exactly the integers of compiler/gradfmt.py (and of the
 *        per-element mt_srdhm / mt_rshift_round32 chains they replace); the arguments are below.
 *
 * 1. max |SRDHM(x << L, M[c])| without computing it per element (mul_q31).
 *    For M >= 0 and |x << L| < 2^31 (never the saturating case), SRDHM(x << L, M) =
 *    floor((x M 2^L + 2^30) / 2^31) =: T(x M), non-decreasing in the product P = x M. The max of |t|
 *    over a tensor is max(max t, -min t), and a non-decreasing T commutes with max and min, so
 *      max |t| = max(T(max_e P_e), -T(min_e P_e)) (both taken with 0 included),
 *    and max_e P_e = max_c max(M[c] * max_{e in c} x, ...) needs only the per-channel extremes of x
 *    (M[c] >= 0: the extreme products of a channel are at its extreme x). One read pass gives the
 *    extremes (column walks, two channels per word with SSUB16/SEL on DSP cores), max |x| (hence
 *    L) and the two 64-bit products; L is applied afterwards (|P 2^L| < 2^62).
 *
 * 2. RDBPOT(SRDHM(x << L, M), s) in one multiply-accumulate (mul_q31's write pass), 1 <= s <= L + 1.
 *    With t = floor((a M + 2^30) / 2^31), a = x 2^L, h = 2^(s-1), RDBPOT(t, s) (ties away from 0) is
 *    floor((t + h) / 2^s) for t >= 0 and floor((t + h - 1) / 2^s) for t < 0; for t = 0 both are 0
 *    (0 <= h - 1 < h < 2^s). t > 0 needs x > 0 and t < 0 needs x < 0, so the choice can use
 *    sigma = [x < 0]. Nested floors of integers merge:
 *      out = floor((a M + 2^30 + (h - sigma) 2^31) / 2^(31 + s))
 *          = floor((x 2^j M + Q_sigma) / 2^32),  j = L + 1 - s >= 0,
 *      Q_sigma = floor((2^30 + (h - sigma) 2^31) / 2^(s-1)) = 2^31 + 2^(31-s) - sigma 2^(32-s)
 *    (dividing numerator and denominator by 2^(s-1): floor((2^(s-1) Y + B) / 2^(s-1+32)) =
 *    floor((Y + floor(B / 2^(s-1))) / 2^32) for an integer Y = x 2^j M). 2^30 <= Q_sigma < 2^32,
 *    |x 2^j| < 2^(bitlen(max|x|) + j) = 2^(32 - s) <= 2^31 (fits int32), and the high word of the
 *    64-bit sum is the result: one SMULL/SMLAL-class multiply per element, no second rounding.
 *
 * 3. RDBPOT(x, s) for s >= 1 = floor((x + h - sigma) / 2^s) (the t < 0 / t >= 0 cases above): one
 *    add with the sign, one arithmetic shift, when x + h does not overflow int32 (checked from max |x|
 *    by the callers; x - 1 + h >= INT32_MIN always).
 *
 * 4. max |x|: of int16 data from the signed max and min (SSUB16/SEL on DSP cores, two lanes at a
 *    time) or the OR of |x| where only the bit length matters (headroom); of int32 data as
 *    M = max(x ^ (x >> 31)) = max(|x| - [x < 0]) (one EOR per value): max |x| is M or M + 1, and
 *    renormalize looks -(M + 1) up only when the two give different shifts.
 *
 * The SIMD paths are used when the kernels are built with MT_USE_DSP on a core with the DSP extension
 * (or with MT_DSP_EMULATE, the host tests' exact emulation); every other build uses the scalar C.
 */
#ifndef MT_GRADFMT_FAST_H
#define MT_GRADFMT_FAST_H

#include "mt_kernels_train.h"

#if defined(MT_USE_DSP)
#include "mt_dsp.h"
#if MT_DSP_NATIVE || defined(MT_DSP_EMULATE)
#define MT_GF_SIMD 1
#endif
#endif
#ifndef MT_GF_SIMD
#define MT_GF_SIMD 0
#endif

/* ---- 1. max |SRDHM| from per-channel extremes --------------------------------------------- */

/** Running extremes of the products x * M over channels: pmax >= 0 >= pmin (start at 0). */
typedef struct {
    int64_t pmax;
    int64_t pmin;
    uint32_t amax; /* max |x| */
} mt_gf_ext;

static inline void mt_gf_ext_add(mt_gf_ext *x, int32_t hi, int32_t lo, int32_t mult)
{
    const int64_t ph = (int64_t)hi * mult, pl = (int64_t)lo * mult;
    const uint32_t ah = mt_uabs32(hi), al = mt_uabs32(lo);
    const uint32_t a = (ah > al) ? ah : al;
    x->pmax = (ph > x->pmax) ? ph : x->pmax;
    x->pmin = (pl < x->pmin) ? pl : x->pmin;
    x->amax = (a > x->amax) ? a : x->amax;
}

/** T(P) = floor((P 2^lsh + 2^30) / 2^31) = SRDHM(x << lsh, M) for P = x M, |P 2^lsh| < 2^62. */
static inline int32_t mt_gf_srdhm_of_prod(int64_t p, int32_t lsh)
{
    return mt_wrap32((uint32_t)((((uint64_t)p << lsh) + ((uint64_t)1 << 30)) >> 31));
}

/** max |SRDHM(x << lsh, M[c])| over the tensor from the running product extremes. */
static inline uint32_t mt_gf_tmax(const mt_gf_ext *x, int32_t lsh)
{
    const uint32_t hi = mt_uabs32(mt_gf_srdhm_of_prod(x->pmax, lsh));
    const uint32_t lo = mt_uabs32(mt_gf_srdhm_of_prod(x->pmin, lsh));
    return (hi > lo) ? hi : lo;
}

/** Scalar column walk: extremes of x[0], x[stride], ... (n >= 1 values). */
static inline void mt_gf_col16(const int16_t *x, int32_t n, int32_t stride, int32_t *hi, int32_t *lo)
{
    int32_t mx = *x, mn = *x, k;
    for (k = 1; k < n; ++k) {
        int32_t v;
        x += stride;
        v = *x;
        mx = (v > mx) ? v : mx;
        mn = (v < mn) ? v : mn;
    }
    *hi = mx;
    *lo = mn;
}

/** Extremes of x[0..n) (n >= 1). */
static inline void mt_gf_minmax16(const int16_t *x, int32_t n, int32_t *hi, int32_t *lo)
{
#if MT_GF_SIMD
    if (n >= 4) {
        uint32_t mx = mt_read_s16x2(x), mn = mx;
        int32_t k, a, b;
        for (k = 2; k + 4 <= n; k += 4) {
            const uint32_t v = mt_read_s16x2(x + k), w = mt_read_s16x2(x + k + 2);
            mx = mt_max16x2(mt_max16x2(mx, v), w);
            mn = mt_min16x2(mt_min16x2(mn, v), w);
        }
        if (k + 2 <= n) {
            const uint32_t v = mt_read_s16x2(x + k);
            mx = mt_max16x2(mx, v);
            mn = mt_min16x2(mn, v);
            k += 2;
        }
        a = mt_lane16(mx, 0);
        b = mt_lane16(mx, 1);
        *hi = (a > b) ? a : b;
        a = mt_lane16(mn, 0);
        b = mt_lane16(mn, 1);
        *lo = (a < b) ? a : b;
        for (; k < n; ++k) {
            const int32_t v = x[k];
            *hi = (v > *hi) ? v : *hi;
            *lo = (v < *lo) ? v : *lo;
        }
        return;
    }
#endif
    mt_gf_col16(x, n, 1, hi, lo);
}

/**
 * One read pass of mul_q31 on int16 data [npix, channels]: per-channel extremes (column walks) folded
 * into the product extremes and max |x|.
 */
static inline mt_gf_ext mt_gf_scan16(const int16_t *in, int32_t npix, int32_t channels,
                                     const int32_t *mult)
{
    mt_gf_ext x;
    int32_t c = 0, hi, lo;
    x.pmax = 0;
    x.pmin = 0;
    x.amax = 0u;
    if (channels == 1) {
        mt_gf_minmax16(in, npix, &hi, &lo);
        mt_gf_ext_add(&x, hi, lo, mult[0]);
        return x;
    }
#if MT_GF_SIMD
    for (; c + 2 <= channels; c += 2) {
        const int16_t *q = in + c;
        uint32_t mx = mt_read_s16x2(q), mn = mx;
        int32_t k = 1;
        for (; k + 2 <= npix; k += 2) {
            const uint32_t v = mt_read_s16x2(q + channels), w = mt_read_s16x2(q + 2 * channels);
            q += 2 * channels;
            mx = mt_max16x2(mt_max16x2(mx, v), w);
            mn = mt_min16x2(mt_min16x2(mn, v), w);
        }
        if (k < npix) {
            const uint32_t v = mt_read_s16x2(q + channels);
            mx = mt_max16x2(mx, v);
            mn = mt_min16x2(mn, v);
        }
        mt_gf_ext_add(&x, mt_lane16(mx, 0), mt_lane16(mn, 0), mult[c]);
        mt_gf_ext_add(&x, mt_lane16(mx, 1), mt_lane16(mn, 1), mult[c + 1]);
    }
#else
    for (; c + 2 <= channels; c += 2) {
        const int16_t *q = in + c, *qe = in + c + (size_t)npix * (size_t)channels;
        int32_t mx0 = q[0], mn0 = q[0], mx1 = q[1], mn1 = q[1];
        for (q += channels; q != qe; q += channels) {
            const int32_t v = q[0], w = q[1];
            mx0 = (v > mx0) ? v : mx0;
            mn0 = (v < mn0) ? v : mn0;
            mx1 = (w > mx1) ? w : mx1;
            mn1 = (w < mn1) ? w : mn1;
        }
        mt_gf_ext_add(&x, mx0, mn0, mult[c]);
        mt_gf_ext_add(&x, mx1, mn1, mult[c + 1]);
    }
#endif
    for (; c < channels; ++c) {
        mt_gf_col16(in + c, npix, channels, &hi, &lo);
        mt_gf_ext_add(&x, hi, lo, mult[c]);
    }
    return x;
}

/* ---- 2. RDBPOT(SRDHM(x << L, M), s) in one multiply ----------------------------------------- */

/** Constants of the fused write for 1 <= s <= lsh + 1: j, Q_0 and 2^(32-s). */
typedef struct {
    int32_t j;
    uint32_t q0;
    uint32_t d;
} mt_gf_fused;

static inline mt_gf_fused mt_gf_fused_make(int32_t lsh, int32_t s)
{
    mt_gf_fused f;
    f.j = lsh + 1 - s;
    f.q0 = 0x80000000u + ((uint32_t)1 << (31 - s));
    f.d = (uint32_t)1 << (32 - s);
    return f;
}

/** floor((x 2^j M + Q_sigma) / 2^32) = RDBPOT(SRDHM(x << lsh, M), s); |x| 2^j < 2^31. */
static inline int32_t mt_gf_fused_elem(const mt_gf_fused *f, int32_t x, int32_t mult)
{
    const int32_t a = mt_wrap32((uint32_t)x << f->j);
    const uint32_t q = f->q0 - (f->d & (0u - ((uint32_t)x >> 31)));
    return mt_wrap32((uint32_t)(((uint64_t)((int64_t)a * mult) + q) >> 32));
}

/**
 * The same for any lsh >= 0 and s >= 1 without the j >= 0 condition (int32 operands, where s can
 * exceed lsh + 1): out = floor((a M + B_sigma) / 2^(31 + s)), a = x << lsh,
 * B_sigma = 2^30 + 2^(30 + s) - sigma 2^31; the high word of the 64-bit sum shifted by s - 1.
 */
static inline int32_t mt_gf_fused_wide_elem(int32_t a, int32_t mult, uint64_t b0, int32_t s)
{
    const uint64_t y = (uint64_t)((int64_t)a * mult) + b0 - (((uint64_t)a >> 31) & 1u) * 0x80000000u;
    return mt_asr32(mt_wrap32((uint32_t)(y >> 32)), (int)(s - 1));
}

/** Scalar column walk of int32 data: extremes of x[0], x[stride], ... (n >= 1 values). */
static inline void mt_gf_col32(const int32_t *x, int32_t n, int32_t stride, int32_t *hi, int32_t *lo)
{
    int32_t mx = *x, mn = *x, k;
    for (k = 1; k < n; ++k) {
        int32_t v;
        x += stride;
        v = *x;
        mx = (v > mx) ? v : mx;
        mn = (v < mn) ? v : mn;
    }
    *hi = mx;
    *lo = mn;
}

/* ---- 3. RDBPOT(x, s), s >= 1, x + 2^(s-1) <= INT32_MAX ------------------------------------- */

static inline int32_t mt_gf_rdbpot_fast(int32_t x, uint32_t h, int32_t s)
{
    return mt_asr32(mt_wrap32((uint32_t)x + h - ((uint32_t)x >> 31)), (int)s);
}

/** m[i] = RDBPOT(m[i], s) in place, s in [1, 31] (int16 values: no overflow). */
static inline void mt_gf_rshift16(int16_t *m, int32_t size, int32_t s)
{
    const uint32_t h = (uint32_t)1 << (s - 1);
    int32_t i = 0;
    for (; i + 4 <= size; i += 4) {
        m[i] = (int16_t)mt_gf_rdbpot_fast(m[i], h, s);
        m[i + 1] = (int16_t)mt_gf_rdbpot_fast(m[i + 1], h, s);
        m[i + 2] = (int16_t)mt_gf_rdbpot_fast(m[i + 2], h, s);
        m[i + 3] = (int16_t)mt_gf_rdbpot_fast(m[i + 3], h, s);
    }
    for (; i < size; ++i) {
        m[i] = (int16_t)mt_gf_rdbpot_fast(m[i], h, s);
    }
}

/** m[i] = RDBPOT(acc[i], s), s >= 1, max |acc| + 2^(s-1) <= INT32_MAX. */
static inline void mt_gf_rshift32(const int32_t *acc, int16_t *m, int32_t size, int32_t s)
{
    const uint32_t h = (uint32_t)1 << (s - 1);
    int32_t i = 0;
    for (; i + 4 <= size; i += 4) {
        /* one store after each load: halfword stores (GCC would merge four into bit-field inserts) */
        m[i] = (int16_t)mt_gf_rdbpot_fast(acc[i], h, s);
        m[i + 1] = (int16_t)mt_gf_rdbpot_fast(acc[i + 1], h, s);
        m[i + 2] = (int16_t)mt_gf_rdbpot_fast(acc[i + 2], h, s);
        m[i + 3] = (int16_t)mt_gf_rdbpot_fast(acc[i + 3], h, s);
    }
    for (; i < size; ++i) {
        m[i] = (int16_t)mt_gf_rdbpot_fast(acc[i], h, s);
    }
}

/* ---- 4. max |x| ------------------------------------------------------------------------------ */

/** |x| with the sign mask spelled out (EOR/SUB with ASR #31 on Arm, not a compare and negate). */
static inline uint32_t mt_gf_abs32(int32_t x)
{
    const uint32_t sm = (uint32_t)mt_asr32(x, 31);
    return ((uint32_t)x ^ sm) - sm;
}

/** Bitwise OR of |x[i]|: the bit length of max |x| (all the headroom shift reads). */
static inline uint32_t mt_gf_or_abs16(const int16_t *x, int32_t n)
{
    uint32_t a0 = 0u, a1 = 0u;
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        a0 |= mt_gf_abs32(x[i]) | mt_gf_abs32(x[i + 2]);
        a1 |= mt_gf_abs32(x[i + 1]) | mt_gf_abs32(x[i + 3]);
    }
    for (; i < n; ++i) {
        a0 |= mt_gf_abs32(x[i]);
    }
    return a0 | a1;
}

/**
 * max over x of x ^ (x >> 31) = |x| - [x < 0] (one EOR per value): max |x| is this M or M + 1, the
 * latter exactly when -(M + 1) occurs (mt_gf_has32).
 */
static inline uint32_t mt_gf_max_ones32(const int32_t *x, int32_t n)
{
    uint32_t a0 = 0u, a1 = 0u;
    int32_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const uint32_t u = (uint32_t)x[i] ^ (uint32_t)mt_asr32(x[i], 31);
        const uint32_t v = (uint32_t)x[i + 1] ^ (uint32_t)mt_asr32(x[i + 1], 31);
        const uint32_t w = (uint32_t)x[i + 2] ^ (uint32_t)mt_asr32(x[i + 2], 31);
        const uint32_t z = (uint32_t)x[i + 3] ^ (uint32_t)mt_asr32(x[i + 3], 31);
        a0 = (u > a0) ? u : a0;
        a1 = (v > a1) ? v : a1;
        a0 = (w > a0) ? w : a0;
        a1 = (z > a1) ? z : a1;
    }
    for (; i < n; ++i) {
        const uint32_t u = (uint32_t)x[i] ^ (uint32_t)mt_asr32(x[i], 31);
        a0 = (u > a0) ? u : a0;
    }
    return (a0 > a1) ? a0 : a1;
}

/** Whether the int32 bit pattern v occurs in x[0..n). */
static inline int mt_gf_has32(const int32_t *x, int32_t n, uint32_t v)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        if ((uint32_t)x[i] == v) {
            return 1;
        }
    }
    return 0;
}

#endif /* MT_GRADFMT_FAST_H */
