/**
 * @file mt_common.h
 * @brief Fixed-point helpers shared by every microtrain kernel (forward and backward).
 *
 * Integer-only, C99, header-only (static inline). Each helper is bit-exact with the function of
 * the same meaning in compiler/fixedpoint.py (the numpy oracle), which itself mirrors TFLite /
 * gemmlowp:
 *
 *   mt_srdhm     <-> srdhm                              (gemmlowp SaturatingRoundingDoublingHighMul)
 *   mt_rdbpot    <-> rounding_divide_by_pot             (gemmlowp RoundingDivideByPOT)
 *   mt_mbqm      <-> multiply_by_quantized_multiplier   (tflite::MultiplyByQuantizedMultiplier,
 *                                                        double-rounding variant)
 *   mt_xorshift32 <-> compiler/ops/_grad_int.py xorshift32 (shifts 13, 17, 5)
 *
 * Portability: no right shift of a negative signed value and no signed overflow is relied upon;
 * wrapping int32 arithmetic is done in uint32 and converted back with mt_wrap32().
 */
#ifndef MT_COMMON_H
#define MT_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Kernel return status (CMSIS-NN style): MT_OK, or MT_ERR_ARG when a kernel's preconditions on
 *  its arguments (shapes, geometry) do not hold; nothing is written then. */
typedef enum {
    MT_OK = 0,
    MT_ERR_ARG = -1
} mt_status;

#define MT_INT32_MIN ((int32_t)(-2147483647 - 1))
#define MT_INT32_MAX ((int32_t)2147483647)

/** Two's-complement reinterpretation of a uint32 as int32 (what C's wrapping int32 math gives). */
/**
 * Weights split by output channel: rows [0, rows) at the kernel's ``w`` pointer (the trained
 * rows, in SRAM), rows [rows, Cout) at ``tail`` (the frozen rows, in flash). ``tail == NULL``:
 * ``w`` holds every row (the default: a zero-initialised struct).
 */
typedef struct {
    const int8_t *tail;   /**< rows [rows, Cout), or NULL */
    int32_t rows;         /**< rows at ``w`` when ``tail`` is set, [0, Cout] */
} mt_wsplit;

/** Row @p o (of @p len elements) of split weights. */
static inline const int8_t *mt_wrow(const int8_t *w, const mt_wsplit *s, int32_t o, size_t len)
{
    if (s->tail != NULL && o >= s->rows) {
        return s->tail + (size_t)(o - s->rows) * len;
    }
    return w + (size_t)o * len;
}

static inline int32_t mt_wrap32(uint32_t u)
{
    return (u <= 0x7FFFFFFFu) ? (int32_t)u : (int32_t)(-(int32_t)(~u) - 1);
}

/** Wrapping int32 addition (a + b mod 2^32), no undefined behaviour. */
static inline int32_t mt_wrap_add32(int32_t a, int32_t b)
{
    return mt_wrap32((uint32_t)a + (uint32_t)b);
}

/** Wrapping int32 subtraction (a - b mod 2^32). */
static inline int32_t mt_wrap_sub32(int32_t a, int32_t b)
{
    return mt_wrap32((uint32_t)a - (uint32_t)b);
}

/** Floor division by 2^n (arithmetic right shift), portable for negative x. n in [0, 31]. */
static inline int32_t mt_asr32(int32_t x, int n)
{
    return (x >= 0) ? (int32_t)(x >> n) : (int32_t)~((~x) >> n);
}

/** Floor division of an int64 by 2^n, portable. n in [0, 63]. */
static inline int64_t mt_asr64(int64_t x, int n)
{
    return (x >= 0) ? (int64_t)(x >> n) : (int64_t)~((~x) >> n);
}

/**
 * SaturatingRoundingDoublingHighMul: round(a * b / 2^31), ties toward +inf, C truncation of the
 * nudged product; the single overflow case INT32_MIN * INT32_MIN saturates to INT32_MAX.
 *
 * gemmlowp's nudge-and-truncate, (ab + (ab >= 0 ? 2^30 : 1 - 2^30)) / 2^31 truncated, equals
 * floor((ab + 2^30) / 2^31) for every ab (negative ab: truncation is the ceiling, and
 * ceil((ab + 1 - 2^30) / 2^31) = floor((ab + 1 - 2^30 + 2^31 - 1) / 2^31)). That floor lies in
 * [-2^31 + 1, 2^31 - 1] except for ab = 2^62 (the saturating case, 2^31), and the low 32 bits of
 * the 64-bit two's complement shifted right by 31 are exactly it whether the shift is logical or
 * arithmetic: one multiply, an add, two shifts, no division.
 */
static inline int32_t mt_srdhm(int32_t a, int32_t b)
{
    const uint64_t t = (uint64_t)((int64_t)a * (int64_t)b) + ((uint64_t)1 << 30);
    const uint32_t r = (uint32_t)(t >> 31);
    return (r == 0x80000000u) ? MT_INT32_MAX : mt_wrap32(r);
}

/**
 * RoundingDivideByPOT: x / 2^exponent rounded to nearest, ties away from zero.
 * @param exponent in [0, 31]
 */
static inline int32_t mt_rdbpot(int32_t x, int exponent)
{
    const int32_t mask = (int32_t)(((uint32_t)1 << exponent) - 1u);
    const int32_t remainder = (int32_t)((uint32_t)x & (uint32_t)mask);
    const int32_t threshold = (mask >> 1) + ((x < 0) ? 1 : 0);
    return mt_asr32(x, exponent) + ((remainder > threshold) ? 1 : 0);
}

/**
 * tflite::MultiplyByQuantizedMultiplier (double rounding, TFLite's default build):
 * rdbpot(srdhm(x << max(shift, 0) (wrapping), mult), max(-shift, 0)).
 *
 * @param x      int32 value (usually an accumulator)
 * @param mult   Q0.31 multiplier, in [2^30, 2^31) or 0 (as prepared by quantize_multiplier)
 * @param shift  power-of-two exponent, > 0 is a left shift; any int (|shift| > 31 handled like the
 *               int64 numpy reference: left shifts wrap, right shifts of >= 32 round to 0 / -1)
 */
static inline int32_t mt_mbqm(int32_t x, int32_t mult, int shift)
{
    const int left = (shift > 0) ? shift : 0;
    const int right = (shift > 0) ? 0 : -shift;
    const int32_t xs = (left >= 32) ? 0 : mt_wrap32((uint32_t)x << left);
    const int32_t h = mt_srdhm(xs, mult);
    if (right <= 31) {
        return mt_rdbpot(h, right);
    }
    /* exponent >= 32 on an int32 value: everything rounds to 0 except INT32_MIN / 2^32 = -0.5,
     * which rounds (ties away from zero) to -1. */
    return (right == 32 && h == MT_INT32_MIN) ? -1 : 0;
}

/** Saturate an int32 to int8. */
static inline int8_t mt_sat8(int32_t x)
{
    return (int8_t)((x < -128) ? -128 : ((x > 127) ? 127 : x));
}

/** Saturate an int32 to int16. */
static inline int16_t mt_sat16(int32_t x)
{
    return (int16_t)((x < -32768) ? -32768 : ((x > 32767) ? 32767 : x));
}

/** Clamp x to [lo, hi] (requires lo <= hi). */
static inline int32_t mt_clamp32(int32_t x, int32_t lo, int32_t hi)
{
    return (x < lo) ? lo : ((x > hi) ? hi : x);
}

/** Saturating int32 addition. */
static inline int32_t mt_sat_add32(int32_t a, int32_t b)
{
    const int64_t s = (int64_t)a + (int64_t)b;
    return (s > MT_INT32_MAX) ? MT_INT32_MAX : ((s < MT_INT32_MIN) ? MT_INT32_MIN : (int32_t)s);
}

/**
 * Requantization epilogue shared by the int8 kernels:
 * clamp(mt_mbqm(acc, mult, shift) + out_zp, act_min, act_max), computed without int32 overflow
 * (the numpy reference adds in int64). act_min/act_max in [-128, 127], out_zp in [-128, 127].
 */
static inline int8_t mt_requantize_s8(int32_t acc, int32_t mult, int shift, int32_t out_zp,
                                      int32_t act_min, int32_t act_max)
{
    /* Any |y| > 1024 clamps to the same bound before and after adding |out_zp| <= 128. */
    const int32_t y = mt_clamp32(mt_mbqm(acc, mult, shift), -1024, 1024) + out_zp;
    return (int8_t)mt_clamp32(y, act_min, act_max);
}

/** Count leading zeros of a uint32 (32 for 0). */
static inline int mt_clz32(uint32_t x)
{
#ifdef __GNUC__
    return (x == 0u) ? 32 : __builtin_clz(x);
#else
    int n = 0;
    if (x == 0u) {
        return 32;
    }
    if ((x & 0xFFFF0000u) == 0u) { n += 16; x <<= 16; }
    if ((x & 0xFF000000u) == 0u) { n += 8; x <<= 8; }
    if ((x & 0xF0000000u) == 0u) { n += 4; x <<= 4; }
    if ((x & 0xC0000000u) == 0u) { n += 2; x <<= 2; }
    if ((x & 0x80000000u) == 0u) { n += 1; }
    return n;
#endif
}

/** One step of Marsaglia's xorshift32 (x ^= x << 13; x ^= x >> 17; x ^= x << 5). State != 0. */
static inline uint32_t mt_xorshift32(uint32_t x)
{
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return x;
}


/* ---------------------------------------------------------------------------------------------
 * gemmlowp fixed-point transcendentals (compiler/fixedpoint.py, same names without the prefix).
 * A value in Qm.(31-m) ("m integer bits") is raw / 2^(31-m); + and - wrap like C int32.
 * ------------------------------------------------------------------------------------------- */

/**
 * SaturatingRoundingMultiplyByPOT<exponent>: saturating x * 2^exponent for exponent > 0,
 * mt_rdbpot(x, -exponent) for exponent <= 0. exponent in [-31, 31].
 */
static inline int32_t mt_srmbpot(int32_t x, int exponent)
{
    int32_t threshold;
    if (exponent <= 0) {
        return mt_rdbpot(x, -exponent);
    }
    threshold = (int32_t)(((uint32_t)1 << (31 - exponent)) - 1u);
    if (x > threshold) {
        return MT_INT32_MAX;
    }
    if (x < -threshold) {
        return MT_INT32_MIN;
    }
    return mt_wrap32((uint32_t)x << exponent); /* in range: exact x * 2^exponent */
}

/** RoundingHalfSum (int32): (a + b + sign(a + b)) / 2 with truncating division. */
static inline int32_t mt_rounding_half_sum(int32_t a, int32_t b)
{
    const int64_t s = (int64_t)a + (int64_t)b;
    const int64_t t = s + ((s >= 0) ? 1 : -1);
    return (int32_t)(t / 2);
}

/** exp(a) for a in [-1/4, 0): Q0.31 in, Q0.31 out (Taylor series around -1/8). */
static inline int32_t mt_exp_on_interval_between_negative_one_quarter_and_0_excl(int32_t a)
{
    const int32_t constant_term = 1895147668;     /* exp(-1/8), Q0.31 */
    const int32_t constant_1_over_3 = 715827883;  /* 1/3, Q0.31 */
    const int32_t x = mt_wrap_add32(a, (int32_t)1 << 28);
    const int32_t x2 = mt_srdhm(x, x);
    const int32_t x3 = mt_srdhm(x2, x);
    const int32_t x4 = mt_srdhm(x2, x2);
    const int32_t x4_over_4 = mt_srmbpot(x4, -2);
    const int32_t poly = mt_srmbpot(
        mt_wrap_add32(mt_srdhm(mt_wrap_add32(x4_over_4, x3), constant_1_over_3), x2), -1);
    return mt_wrap_add32(constant_term, mt_srdhm(constant_term, mt_wrap_add32(x, poly)));
}

/**
 * exp_on_negative_values: a <= 0 in Q(integer_bits).(31 - integer_bits) -> exp(a) in Q0.31.
 * integer_bits in [1, 29] (softmax uses 5).
 */
static inline int32_t mt_exp_on_negative_values(int32_t a, int integer_bits)
{
    static const int32_t barrel[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535,
                                      720401, 242}; /* exp(-2^e), e = -2..4, Q0.31 */
    const int frac_bits = 31 - integer_bits;
    const int32_t one_quarter = (int32_t)1 << (frac_bits - 2);
    const int32_t a_mod_quarter_minus_one_quarter =
        mt_wrap_sub32((int32_t)((uint32_t)a & (uint32_t)(one_quarter - 1)), one_quarter);
    const int32_t remainder = mt_wrap_sub32(a_mod_quarter_minus_one_quarter, a);
    int32_t result = mt_exp_on_interval_between_negative_one_quarter_and_0_excl(
        mt_srmbpot(a_mod_quarter_minus_one_quarter, integer_bits));
    int e;
    for (e = -2; e <= 4; ++e) {
        if (integer_bits > e) {
            const int bit = frac_bits + e;
            if (bit >= 0 && bit <= 31 && (((uint32_t)remainder >> bit) & 1u) != 0u) {
                result = mt_srdhm(result, barrel[e + 2]);
            }
        }
    }
    if (integer_bits > 5) {
        const int32_t clamp = -(int32_t)((uint32_t)1 << (36 - integer_bits)); /* -32.0 */
        if (a < clamp) {
            result = 0;
        }
    }
    return (a == 0) ? MT_INT32_MAX : result;
}

/** one_over_one_plus_x_for_x_in_0_1: Q0.31 a in [0, 1) -> 1/(1 + a) in Q0.31 (Newton-Raphson). */
static inline int32_t mt_one_over_one_plus_x_for_x_in_0_1(int32_t a)
{
    const int32_t half_denominator = mt_rounding_half_sum(a, MT_INT32_MAX); /* Q0.31 */
    const int32_t constant_48_over_17 = 1515870810;                        /* Q2.29 */
    const int32_t constant_neg_32_over_17 = -1010580540;                   /* Q2.29 */
    const int32_t one_q2 = (int32_t)1 << 29;
    int32_t x = mt_wrap_add32(constant_48_over_17, mt_srdhm(half_denominator, constant_neg_32_over_17));
    int i;
    for (i = 0; i < 3; ++i) {
        const int32_t half_denominator_times_x = mt_srdhm(half_denominator, x);
        const int32_t one_minus = mt_wrap_sub32(one_q2, half_denominator_times_x);
        x = mt_wrap_add32(x, mt_srmbpot(mt_srdhm(x, one_minus), 2));
    }
    return mt_srmbpot(x, 1);
}

/**
 * tflite::GetReciprocal: x > 0 in Q(x_integer_digits) -> 1/x = result / 2^31 * 2^-(*num_bits_over_unit).
 */
static inline int32_t mt_get_reciprocal(int32_t x, int x_integer_digits, int *num_bits_over_unit)
{
    const int headroom_plus_one = mt_clz32((uint32_t)x);
    const uint32_t shifted = (headroom_plus_one >= 32) ? 0u : ((uint32_t)x << headroom_plus_one);
    *num_bits_over_unit = x_integer_digits - headroom_plus_one;
    return mt_one_over_one_plus_x_for_x_in_0_1(mt_wrap32(shifted - 0x80000000u));
}

#ifdef __cplusplus
}
#endif

#endif /* MT_COMMON_H */
