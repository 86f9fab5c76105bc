/**
 * @file mt_kernels_train.h
 * @brief Portable integer training kernels: backward pass, loss, SGD updates, forward gradient.
 *
 * C99, integer only (no float, no heap, no stdio, no VLAs). Every kernel is bit-exact with the
 * numpy training engine (the oracle); each prototype names the function it mirrors:
 *
 *   compiler/gradfmt.py          gradient format (renormalize, headroom, mul_q31, add)
 *   compiler/ops/_grad_int.py    act_mask, sum_to, scale_channels, sgd_delta, appliers
 *   compiler/ops/<op>.py         Op.backward_int8 of conv2d, depthwise_conv2d, fully_connected,
 *                                add, max_pool2d, avg_pool2d, mean, pad (reshape: nothing to do)
 *   compiler/ops/loss_int.py     softmax_cross_entropy_int (int8 logits or int32 accumulators)
 *   compiler/train_int.py        Int8Trainer._apply (momentum, bias update), perturb,
 *                                cosine_factor_q15, scale_lr
 *   compiler/train_float.py      fmix32, perturbation_seed, rademacher (forward-gradient stream)
 *
 * Conventions (see docs/training-numerics.md for the formats):
 *
 *  - Gradient tensors are (int16 mantissas m, one int32 exponent e per tensor): real = m * 2^e,
 *    |m| <= 32767 (-32768 never produced). Gradients are w.r.t. REAL values: a weight gradient
 *    w.r.t. W = s_w[c] * (w_q - zp_w), a bias gradient w.r.t. b = s_b[c] * b_q.
 *  - Accumulators are int32 and never wrap: every multiply-accumulate operand is pre-shifted
 *    ("headroom") so that any partial sum, in any order, is bounded by 2^31.
 *  - Layouts are those of the forward kernels (mt_kernels_fwd.h): NHWC activations, OHWI conv
 *    weights [Cout, KH, KW, Cin], depthwise weights [1, KH, KW, C*M], FC weights [Cout, Cin];
 *    gradients have the layout of the tensor they belong to.
 *  - A whole-tensor exponent depends on the max over the whole tensor, so a kernel that produces
 *    an int16 tensor from int32 accumulators either keeps the accumulators in an optional int32
 *    scratch, or computes them twice (pass 1: max |acc|; pass 2: recompute, shift, write). The
 *    integers are the same either way; each kernel states what it does.
 *  - Trained slices: the first ``rows`` output channels (LayerTrain.weight_rows / bias_rows).
 *    A slice is described by mt_slice; master copies and velocities are stored densely in the
 *    slice's own row-major order (the numpy ``tensor[row_index(axis, rows)]``).
 *  - Arguments: params structs first, then scratch, then inputs, outputs last. Kernels return
 *    MT_OK, or MT_ERR_ARG (nothing written) when a documented precondition on shapes fails.
 */
#ifndef MT_KERNELS_TRAIN_H
#define MT_KERNELS_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "mt_common.h"
#include "mt_kernels_fwd.h" /* mt_dims, mt_hw, mt_padding */

#ifdef __cplusplus
extern "C" {
#endif

/** Largest int16 gradient mantissa magnitude (gradfmt.MANT_MAX). */
#define MT_GRAD_MANT_MAX 32767
/** Fractional bits of an SGD delta (int32 Q15.16 quantization steps; DELTA_FRAC_BITS). */
#define MT_DELTA_FRAC_BITS 16
/** Fractional bits of the int16 master copy (w_q * 2^8; MASTER_FRAC_BITS). */
#define MT_MASTER_FRAC_BITS 8
/** Fractional bits of the integer loss (Q15.16 nats; loss_int.LOSS_FRAC_BITS). */
#define MT_LOSS_FRAC_BITS 16
/** Entries of the cosine lr table (train_int.COS_TABLE_STEPS + 1). */
#define MT_COS_TABLE_SIZE 257

/* ============================================================================================ */
/* Scalar helpers of the gradient format (static inline, integer only)                          */
/* ============================================================================================ */

/** Bits needed for v (0 for 0): 32 - clz (gradfmt.bit_length on int32 magnitudes). */
static inline int32_t mt_bitlen32(uint32_t v)
{
    return 32 - (int32_t)mt_clz32(v);
}

/** |x| as uint32 (exact for INT32_MIN). */
static inline uint32_t mt_uabs32(int32_t x)
{
    return (x < 0) ? (0u - (uint32_t)x) : (uint32_t)x;
}

/** gradfmt.rshift_round for int32 x and any shift s >= 0: RDBPOT, ties away from zero; shifts
 *  of 32 and more give 0 (-1 for INT32_MIN at exactly 32), as the int64 numpy code does. */
static inline int32_t mt_rshift_round32(int32_t x, int32_t s)
{
    if (s <= 0) {
        return x;
    }
    if (s >= 32) {
        return (s == 32 && x == MT_INT32_MIN) ? -1 : 0;
    }
    return mt_rdbpot(x, (int)s);
}

/** rshift_round of a non-negative magnitude held in a uint32 (the renormalisation test). */
static inline uint32_t mt_urshift_round32(uint32_t a, int32_t s)
{
    uint32_t mask;
    if (s <= 0) {
        return a;
    }
    if (s >= 32) {
        return (s == 32 && a >= 0x80000000u) ? 1u : 0u;
    }
    mask = ((uint32_t)1 << s) - 1u;
    return (a >> s) + (((a & mask) > (mask >> 1)) ? 1u : 0u);
}

/** Shift of gradfmt.renormalize for max |acc| = amax: max(0, bitlen - 15), plus one when rounding
 *  amax by it reaches 2^15. */
static inline int32_t mt_grad_renorm_shift(uint32_t amax)
{
    int32_t s = mt_bitlen32(amax) - 15;
    if (s <= 0) {
        return 0;
    }
    if (mt_urshift_round32(amax, s) > (uint32_t)MT_GRAD_MANT_MAX) {
        ++s;
    }
    return s;
}

/** Bitwise OR of |m| over @p rows values of each of @p n lines @p stride apart: it has the bit
 *  length of max |m|, all that mt_grad_headroom_shift reads. */
static inline uint32_t mt_grad_or_abs16(const int16_t *m, int32_t n, int32_t stride, int32_t rows)
{
    uint32_t acc = 0u;
    int32_t q, r;
    for (q = 0; q < n; ++q, m += stride) {
        for (r = 0; r < rows; ++r) {
            acc |= mt_uabs32(m[r]);
        }
    }
    return acc;
}

/** Shift of gradfmt.headroom: max(0, bitlen(amax) + operand_bits + ceil(log2 fan_in) - 31). */
static inline int32_t mt_grad_headroom_shift(uint32_t amax, int32_t operand_bits, int32_t fan_in)
{
    const int32_t k = (fan_in > 1) ? mt_bitlen32((uint32_t)fan_in - 1u) : 0;
    const int32_t s = mt_bitlen32(amax) + operand_bits + k - 31;
    return (s > 0) ? s : 0;
}

/** Shift L of gradfmt.normalize31 for max |x| = amax > 0: 31 - bitlen(amax) (-1 only for 2^31). */
static inline int32_t mt_norm31_shift(uint32_t amax)
{
    return 31 - mt_bitlen32(amax);
}

/** One element of gradfmt.normalize31: x * 2^L (exact, |x| <= amax) or, for L < 0, a rounding
 *  right shift; clamped to +-(2^31 - 1). */
static inline int32_t mt_norm31(int32_t x, int32_t lsh)
{
    int32_t r;
    if (lsh >= 0) {
        return mt_wrap32((uint32_t)x << lsh);
    }
    r = mt_rshift_round32(x, -lsh);
    return (r == MT_INT32_MIN) ? -MT_INT32_MAX : r;
}

/** Saturating symmetric left shift: clip(t * 2^min(s, 31), -(2^31 - 1), 2^31 - 1), s >= 0. */
static inline int32_t mt_sat_shl32(int32_t t, int32_t s)
{
    int32_t lim;
    if (t == 0 || s == 0) {
        return (t == MT_INT32_MIN) ? -MT_INT32_MAX : t;
    }
    if (s >= 31) {
        return (t > 0) ? MT_INT32_MAX : -MT_INT32_MAX;
    }
    lim = MT_INT32_MAX >> s;
    if (t > lim) {
        return MT_INT32_MAX;
    }
    if (t < -lim) {
        return -MT_INT32_MAX;
    }
    return mt_wrap32((uint32_t)t << s);
}

/** max |srdhm(norm31(a, lsh), mult)| over a in [nmin, pmax] (nmin <= 0 <= pmax, mult >= 0):
 *  |SRDHM| is non-decreasing in |a| on each sign, so the two extremes decide. */
static inline uint32_t mt_srdhm_extreme(int32_t pmax, int32_t nmin, int32_t lsh, int32_t mult)
{
    const uint32_t hi = mt_uabs32(mt_srdhm(mt_norm31(pmax, lsh), mult));
    const uint32_t lo = mt_uabs32(mt_srdhm(mt_norm31(nmin, lsh), mult));
    return (hi > lo) ? hi : lo;
}

/* ============================================================================================ */
/* Gradient-format kernels (compiler/gradfmt.py)                                                */
/* ============================================================================================ */

/**
 * @brief int32 accumulators -> int16 gradient (gradfmt.renormalize).
 *
 * s = mt_grad_renorm_shift(max |acc|); m = RDBPOT(acc, s); e_out = e + s.
 * @param[in]  size   elements (>= 0)
 * @param[in]  acc    int32 [size], |acc| <= 2^31 - 1
 * @param[in]  e      exponent of acc
 * @param[out] m      int16 [size] (must not alias acc)
 * @param[out] e_out  exponent of m
 */
mt_status mt_grad_renormalize_s32(int32_t size, const int32_t *acc, int32_t e, int16_t *m,
                                  int32_t *e_out);

/**
 * @brief Headroom pre-shift before a multiply-accumulate, in place (gradfmt.headroom).
 *
 * s = max(0, bitlen(max |m|) + operand_bits + ceil(log2 fan_in) - 31); m = RDBPOT(m, s); e += s.
 * Afterwards fan_in products m * v with |v| <= 2^operand_bits sum below 2^31 in any order.
 * @param[in]     operand_bits  bound of the other MAC operand (0..31)
 * @param[in]     fan_in        number of products per accumulator (>= 1)
 * @param[in]     size          elements
 * @param[in,out] m             int16 [size]
 * @param[in,out] e             exponent
 */
mt_status mt_grad_headroom_s16(int32_t operand_bits, int32_t fan_in, int32_t size, int16_t *m,
                               int32_t *e);

/**
 * @brief Multiply int32 accumulators by a real factor per channel (gradfmt.mul_q31).
 *
 * r[c] = mult[c] * 2^(shift - 31), c = index % channels (last axis). The operand is normalised to
 * 31 bits (L = 31 - bitlen(max |acc|)), t = SRDHM(acc << L, mult[c]), then renormalised:
 * e_out = e + shift - L + s. All-zero input: zeros, e_out = e. Three read passes, no scratch.
 * @param[in]  size      elements, a multiple of channels
 * @param[in]  channels  length of mult (1 for a scalar factor)
 * @param[in]  acc       int32 [size]
 * @param[in]  mult      Q31 multipliers [channels], each in [0, 2^31) (gradfmt.q31 /
 *                       align_multipliers)
 * @param[out] m         int16 [size]
 */
mt_status mt_grad_mul_q31_s32(int32_t size, int32_t channels, const int32_t *acc, int32_t e,
                              const int32_t *mult, int32_t shift, int16_t *m, int32_t *e_out);

/**
 * @brief As mt_grad_mul_q31_s32 on int16 mantissas (scale_channels, avg/mean/loss scalings).
 * @param[out] out  int16 [size]; may alias in (elementwise)
 */
mt_status mt_grad_mul_q31_s16(int32_t size, int32_t channels, const int16_t *in, int32_t e,
                              const int32_t *mult, int32_t shift, int16_t *out, int32_t *e_out);

/**
 * @brief Sum of two gradients of one tensor (fan-out; gradfmt.add).
 *
 * The operand with the smaller exponent is shifted right (rounding) to the larger one, the int32
 * sums are renormalised. Two passes (max, then write).
 * @param[out] out    int16 [size]; may alias a or b
 * @param[out] out_e  exponent of out
 */
mt_status mt_grad_add_s16(int32_t size, const int16_t *a, int32_t a_e, const int16_t *b,
                          int32_t b_e, int16_t *out, int32_t *out_e);

/* ============================================================================================ */
/* Activation masks as bits (_grad_int.act_mask)                                                */
/* ============================================================================================ */

/** Bytes of a packed mask of @p size elements: ceil(size / 8). */
size_t mt_act_mask_bytes(int32_t size);

/**
 * @brief Pack the backward mask of a fused/standalone relu or relu6 from the int8 output.
 *
 * keep[i] = (lo < y[i] < hi). relu: lo = act_min, hi = 128 (no upper bound); relu6: lo = act_min,
 * hi = act_max (the int8 clamp bounds of the forward). Element i is bit (i & 7) of byte i >> 3
 * (LSB first), elements in row-major order; unused high bits of the last byte are 0.
 * Run right after the forward kernel; the int8 output need not be kept for the backward pass.
 * @param[out] bits  uint8 [mt_act_mask_bytes(size)]
 */
mt_status mt_act_mask_pack_s8(int32_t size, const int8_t *y, int32_t lo, int32_t hi,
                              uint8_t *bits);

/** @brief Apply a packed mask in place: m[i] = keep[i] ? m[i] : 0 (exponent unchanged). */
mt_status mt_act_mask_apply_s16(int32_t size, const uint8_t *bits, int16_t *m);

/* ============================================================================================ */
/* SGD update (_grad_int.prepare_update / sgd_delta / appliers, Int8Trainer._apply)             */
/* ============================================================================================ */

/** A trained slice of a parameter tensor: the first @c rows of @c channels along the
 *  output-channel axis. The tensor is [outer, channels, inner] (row-major); the slice is
 *  [outer, rows, inner] and is stored densely in that order in master / velocity arrays.
 *   conv2d W [Cout,KH,KW,Cin]: {1, R, Cout, KH*KW*Cin};  FC W [Cout,Cin]: {1, R, Cout, Cin};
 *   depthwise W [1,KH,KW,C]: {KH*KW, R, C, 1};           bias [C]: {1, R, C, 1}. */
typedef struct {
    int32_t outer;     /**< blocks before the channel axis (>= 1) */
    int32_t rows;      /**< trained channels, 1 <= rows <= channels */
    int32_t channels;  /**< channels of the full tensor along the axis */
    int32_t inner;     /**< elements after the channel axis (>= 1) */
} mt_slice;

/** Host-prepared update constants of one slice (prepare_update + the step's lr). */
typedef struct {
    const int32_t *mult;  /**< [rows] aligned Q31 factor per channel: 1/s[c] (QAS) or s[c] */
    int32_t shift;        /**< common exponent of mult */
    int32_t lr_mult;      /**< lr as Q31 in [2^30, 2^31); 0 = no update this step */
    int32_t lr_shift;     /**< exponent of lr */
    int32_t frac_bits;    /**< F of the int32 deltas: 16 (MT_DELTA_FRAC_BITS); 8..31 */
    int32_t mu;           /**< momentum as Q31 (round(mu * 2^31)); 0 = no momentum */
} mt_sgd_params;

/** How the int32 deltas reach the parameter. */
typedef enum {
    MT_APPLY_MASTER = 0,      /**< int8 weights through an int16 master copy (w_q * 2^8) */
    MT_APPLY_STOCHASTIC = 1,  /**< int8 weights, stochastic rounding from xorshift32 */
    MT_APPLY_BIAS = 2         /**< int32 biases: b += RDBPOT(delta, F), saturated */
} mt_apply_kind;

/** Mutable update state of one slice. */
typedef struct {
    int32_t kind;        /**< mt_apply_kind */
    int16_t *master;     /**< MASTER: [slice], |master| <= hi * 2^8 (persistent SRAM) */
    uint32_t *rng;       /**< STOCHASTIC: xorshift32 state (nonzero), shared by all tensors */
    int32_t *velocity;   /**< [slice] Q15.16 velocity when mu != 0 (zeros at start), else NULL */
    int32_t lo;          /**< clamp of the quantized value: -127 for weights, -(2^31-1) (+2 delta
                              for forward-gradient biases) for biases */
    int32_t hi;          /**< 127 / 2^31-1 (-2 delta) */
} mt_sgd_state;

/** Normalisation of one gradient slice for sgd_delta (whole-slice constants). */
typedef struct {
    int32_t lsh;    /**< 31 - bitlen(max |m|) */
    int32_t total;  /**< shift + lr_shift + e - lsh + F: left (>= 0) or right shift of the result */
    int32_t zero;   /**< max |m| == 0: every delta is 0 */
} mt_sgd_norm;

/** sgd_delta's whole-slice constants for mantissas with max |m| = max_m and exponent e. */
static inline mt_sgd_norm mt_sgd_norm_make(const mt_sgd_params *u, uint32_t max_m, int32_t e)
{
    mt_sgd_norm q;
    q.zero = (max_m == 0u);
    q.lsh = q.zero ? 0 : mt_norm31_shift(max_m);
    q.total = u->shift + u->lr_shift + e - q.lsh + u->frac_bits;
    return q;
}

/** One element of sgd_delta: -(SRDHM(SRDHM(m << L, mult[row]), lr) shifted by total), the
 *  left shift saturating at +-(2^31 - 1). */
static inline int32_t mt_sgd_delta_elem(const mt_sgd_params *u, const mt_sgd_norm *q, int32_t m,
                                        int32_t row)
{
    int32_t t;
    if (q->zero) {
        return 0;
    }
    t = mt_srdhm(mt_srdhm(mt_norm31(m, q->lsh), u->mult[row]), u->lr_mult);
    t = (q->total >= 0) ? mt_sat_shl32(t, q->total) : mt_rshift_round32(t, -q->total);
    return -t;
}

/** Momentum (Int8Trainer._apply): v = clip(SRDHM(v, mu) + delta, +-(2^31 - 1)); returns the
 *  delta to apply (delta itself without momentum). @p idx: slice index. */
static inline int32_t mt_sgd_momentum_elem(const mt_sgd_params *u, mt_sgd_state *st, int32_t idx,
                                           int32_t delta)
{
    int64_t v;
    if (u->mu == 0 || st->velocity == NULL) {
        return delta;
    }
    v = (int64_t)mt_srdhm(st->velocity[idx], u->mu) + (int64_t)delta;
    v = (v > MT_INT32_MAX) ? MT_INT32_MAX : ((v < -MT_INT32_MAX) ? -MT_INT32_MAX : v);
    st->velocity[idx] = (int32_t)v;
    return (int32_t)v;
}

/** One int8 weight: momentum, then apply_master_copy (MASTER) or apply_stochastic_round
 *  (STOCHASTIC: one xorshift32 step, r = top F bits). Returns the new int8 weight. */
static inline int8_t mt_sgd_apply_w8_elem(const mt_sgd_params *u, mt_sgd_state *st, int32_t idx,
                                          int8_t w, int32_t delta)
{
    const int32_t f = u->frac_bits;
    delta = mt_sgd_momentum_elem(u, st, idx, delta);
    if (st->kind == MT_APPLY_MASTER) {
        const int32_t d = mt_rshift_round32(delta, f - MT_MASTER_FRAC_BITS);
        const int32_t m = mt_clamp32(mt_sat_add32(st->master[idx], d),
                                     st->lo * (1 << MT_MASTER_FRAC_BITS),
                                     st->hi * (1 << MT_MASTER_FRAC_BITS));
        st->master[idx] = (int16_t)m;
        return (int8_t)mt_rdbpot(m, MT_MASTER_FRAC_BITS);
    } else {
        const uint32_t x = mt_xorshift32(*st->rng);
        const uint32_t mask = ((uint32_t)1 << f) - 1u;
        const int32_t q = mt_asr32(delta, (int)f);
        const int32_t carry = (int32_t)((((uint32_t)delta & mask) + (x >> (32 - f))) >> f);
        *st->rng = x;
        return (int8_t)mt_clamp32(mt_sat_add32((int32_t)w + carry, q), st->lo, st->hi);
    }
}

/** One int32 bias: momentum, then b = clip(b + RDBPOT(delta, F), lo, hi). */
static inline int32_t mt_sgd_apply_b32_elem(const mt_sgd_params *u, mt_sgd_state *st, int32_t idx,
                                            int32_t b, int32_t delta)
{
    delta = mt_sgd_momentum_elem(u, st, idx, delta);
    return mt_clamp32(mt_sat_add32(b, mt_rshift_round32(delta, u->frac_bits)), st->lo, st->hi);
}

/** Whole-slice constants of a fused weight-gradient update: mul_q31(acc, x_mult, x_shift) of
 *  accumulators in [nmin, pmax] (exponent e), then sgd_delta of the result. */
typedef struct {
    int32_t zero;   /**< every accumulator is 0: the gradient is 0 with exponent e */
    int32_t lsh;    /**< normalize31 shift of the accumulators */
    int32_t sr;     /**< renormalisation shift after the SRDHM */
    int32_t e;      /**< exponent of the gradient mantissas */
    mt_sgd_norm q;  /**< sgd_delta constants of those mantissas */
} mt_wgrad_norm;

/** Constants of mt_wgrad_norm from the extremes of the accumulators (nmin <= 0 <= pmax). */
static inline mt_wgrad_norm mt_wgrad_norm_make(const mt_sgd_params *u, int32_t pmax,
                                               int32_t nmin, int32_t e, int32_t x_mult,
                                               int32_t x_shift)
{
    mt_wgrad_norm w;
    const uint32_t amax = (mt_uabs32(nmin) > (uint32_t)pmax) ? mt_uabs32(nmin) : (uint32_t)pmax;
    uint32_t tmax;
    w.zero = (amax == 0u);
    if (w.zero) {
        w.lsh = 0;
        w.sr = 0;
        w.e = e;
        w.q = mt_sgd_norm_make(u, 0u, e);
        return w;
    }
    w.lsh = mt_norm31_shift(amax);
    tmax = mt_srdhm_extreme(pmax, nmin, w.lsh, x_mult);
    w.sr = mt_grad_renorm_shift(tmax);
    w.e = e + x_shift - w.lsh + w.sr;
    w.q = mt_sgd_norm_make(u, mt_urshift_round32(tmax, w.sr), w.e);
    return w;
}

/** Gradient mantissa of one accumulator under mt_wgrad_norm (one element of mul_q31). */
static inline int32_t mt_wgrad_mant(const mt_wgrad_norm *w, int32_t acc, int32_t x_mult)
{
    return w->zero ? 0 : mt_rshift_round32(mt_srdhm(mt_norm31(acc, w->lsh), x_mult), w->sr);
}

/* -------------------------------------------------------------------------------------------- */
/* The per-element chain of the fused weight updates (shared by mt_*_update_s8 and their DSP    */
/* variants; implemented in mt_fully_connected_update_s8.c). Not a kernel: internal helpers.    */
/*                                                                                              */
/* For one accumulator a (channel c) the reference computes, each step rounding:                */
/*   m  = RDBPOT(SRDHM(a << L, x_mult), sr)          mul_q31 of the accumulators                */
/*   t2 = SRDHM(m << L2, mult[c]); t3 = SRDHM(t2, lr) sgd_delta                                 */
/*   delta = -RDBPOT(t3, s1)  (total = -s1 < 0)       sgd_delta's shift                         */
/*   master: d = RDBPOT(delta, F - 8); stochastic: floor((delta + r) / 2^F)                     */
/* Every rounding is floor((v + bias) / 2^k) with a bias that depends only on the sign, and the  */
/* signs of a, m, t2, t3 agree (or the value is 0, where either bias gives 0), so the chain runs */
/* on magnitudes |a| with one sign: three 32x32->64 unsigned multiply-accumulates (UMLAL), each */
/* SRDHM fused with the power-of-two roundings that follow it (floor(floor(y / 2^a) + h) / 2^b) */
/* = floor((y + h 2^a) / 2^(a+b)) for integers). The operands are doubled (|a| << (L + 1),      */
/* |m| << (L2 + 1), 2 lr: all < 2^32 unsigned) so that every quotient is the high word of the   */
/* 64-bit sum shifted right. The bounds are in mt_fully_connected_update_s8.c (mt_wupd_init).    */
/* -------------------------------------------------------------------------------------------- */

/** Element path chosen by mt_wupd_init for a whole slice. */
enum {
    MT_WUPD_GENERIC = 0,  /**< the reference helpers element by element (any input) */
    MT_WUPD_ZERO = 1,     /**< every delta is 0 (zero gradient): the appliers only */
    MT_WUPD_FAST = 2,     /**< the fused magnitude chain */
    MT_WUPD_GRAD = 3      /**< lr 0: gradient mantissas only, nothing is updated */
};

/** Whole-slice constants of the fused update chain (mt_wupd_init). */
typedef struct {
    const mt_sgd_params *u;
    mt_sgd_state *st;
    mt_wgrad_norm wn;   /**< the reference constants (generic path, grad exponent) */
    int32_t x_mult;
    int16_t *grad;      /**< optional gradient mantissas, slice order */
    int32_t mode;       /**< MT_WUPD_* */
    int32_t stoch;      /**< st->kind == MT_APPLY_STOCHASTIC */
    int32_t mom;        /**< momentum active (mu != 0 and a velocity array) */
    /* fused chain (MT_WUPD_FAST) */
    int32_t ash;        /**< |a| << ash, ash = L + 1 */
    uint32_t xm;        /**< x_mult */
    uint32_t ha;        /**< high word of the bias of m: 2^(sr-1) (0 when sr = 0) */
    int32_t sr;
    int32_t l2;         /**< |m| << l2, l2 = L2 + 1 */
    uint32_t lr2;       /**< 2 lr */
    uint32_t hc;        /**< high word of the last stage's bias */
    int32_t sc;         /**< last stage's shift: s1 + F - 8 (master, no momentum) or s1 */
    uint32_t amaxs;     /**< max |a| << ash (< 2^32): bounds the one-multiply estimate */
    /* appliers (MT_WUPD_FAST and MT_WUPD_ZERO) */
    int32_t frac;       /**< F */
    int32_t mlo, mhi;   /**< master clamp lo * 2^8, hi * 2^8 (master) or lo, hi (stochastic) */
} mt_wupd;

/** Constants of a fused update from the extremes of the slice's accumulators (nmin <= 0 <= pmax)
 *  and their exponent e (as mt_wgrad_norm_make); @p grad optional. */
void mt_wupd_init(mt_wupd *c, const mt_sgd_params *u, mt_sgd_state *st, int32_t pmax, int32_t nmin,
                  int32_t e, int32_t x_mult, int32_t x_shift, int16_t *grad);

/** Update @p n consecutive slice elements [idx, idx + n) of one output channel @p row: their
 *  accumulators acc[0..n) (NULL: all 0) and int8 weights w[0..n). Elements must be visited in
 *  slice order (the stochastic draws). */
void mt_wupd_row(const mt_wupd *c, int32_t row, int32_t idx, int32_t n, const int32_t *acc,
                 int8_t *w);

/** As mt_wupd_row with the accumulators of a batch-1 outer product, acc[k] = gq * (x[k] - zp)
 *  (every product within int32: the headroom of gq). */
void mt_wupd_row_outer(const mt_wupd *c, int32_t row, int32_t idx, int32_t n, int32_t gq,
                       const int8_t *x, int32_t zp, int8_t *w);

/**
 * @brief Update deltas of a slice from its gradient (_grad_int.sgd_delta).
 *
 * Q15.16 int32 deltas (F = frac_bits), delta = round(-lr * f[c] * g_real * 2^F), f = 1/s (QAS)
 * or s, saturating at +-(2^31 - 1).
 * @param[in]  s      slice geometry (channel of element (o, r, k) is r)
 * @param[in]  m, e   gradient mantissas [slice] (dense slice order) and exponent
 * @param[out] delta  int32 [slice]
 */
mt_status mt_sgd_delta_s16(const mt_sgd_params *u, const mt_slice *s, const int16_t *m, int32_t e,
                           int32_t *delta);

/**
 * @brief Apply deltas to the int8 weights of a slice (master copy or stochastic rounding, with
 *        optional momentum), as Int8Trainer._apply does. Nothing happens when lr_mult == 0.
 * @param[in]     delta  int32 [slice] (from mt_sgd_delta_s16)
 * @param[in,out] w      the full int8 tensor [outer, channels, inner]; the slice is rewritten
 */
mt_status mt_sgd_update_s8(const mt_sgd_params *u, mt_sgd_state *st, const mt_slice *s,
                           const int32_t *delta, int8_t *w);

/** @brief As mt_sgd_update_s8 for an int32 bias slice (st->kind == MT_APPLY_BIAS). */
mt_status mt_sgd_update_s32(const mt_sgd_params *u, mt_sgd_state *st, const mt_slice *s,
                            const int32_t *delta, int32_t *bias);

/* ============================================================================================ */
/* fully_connected (FullyConnected.backward_int8)                                               */
/* ============================================================================================ */

/** fully_connected backward constants (forward prepare + linear_prepare_backward). */
typedef struct {
    int32_t batch;         /**< N */
    int32_t in_features;   /**< Cin */
    int32_t out_features;  /**< Cout */
    int32_t in_zp;         /**< zero point of x, [-128, 127] */
    int32_t w_zp;          /**< zero point of a per-tensor weight (0 when per channel) */
    int32_t x_mult;        /**< s_x as Q31 (gradfmt.q31) */
    int32_t x_shift;       /**< its exponent */
    int32_t x_bits;        /**< |x - in_zp| <= 2^x_bits */
    const int32_t *w_mult; /**< [Cout] s_w[c] aligned Q31 */
    int32_t w_shift;       /**< common exponent of w_mult */
    int32_t w_bits;        /**< |w - w_zp| <= 2^w_bits */
    mt_wsplit split;       /**< weight rows split SRAM/flash for the input gradient (zero: not split) */
} mt_fc_train_params;

/** Bytes of mt_fully_connected_bwd_input_s16's scratch: gs int16 [N*Cout] (0 when it aliases
 *  g), plus, when @p single_pass, acc int32 [N*Cin]. */
size_t mt_fully_connected_bwd_input_s16_scratch_bytes(const mt_fc_train_params *p, int gs_aliases_g,
                                                      int single_pass);

/**
 * @brief Input gradient of fully_connected (backward_int8 position 0).
 *
 * gs = headroom(scale_channels(g, w_mult, w_shift), w_bits, Cout);
 * gx[n,k] = sum_o gs[n,o] * (w[o,k] - w_zp) (int32), renormalised.
 * @param[out]    gs   scratch int16 [N, Cout]; may alias g (g is then destroyed: do it only when
 *                     no weight/bias update of this layer still needs g)
 * @param[in]     acc  optional int32 [N, Cin]: one MAC pass when given, two when NULL
 * @param[in]     g    masked upstream gradient int16 [N, Cout], exponent g_e
 * @param[in]     w    int8 [Cout, Cin] (pre-update weights)
 * @param[out]    gx   int16 [N, Cin], exponent *gx_e
 */
mt_status mt_fully_connected_bwd_input_s16(const mt_fc_train_params *p, int16_t *gs, int32_t *acc,
                                           const int16_t *g, int32_t g_e, const int8_t *w,
                                           int16_t *gx, int32_t *gx_e);

/** Bytes of the optional acc scratch of the fused weight update: rows * Cin int32. */
size_t mt_fully_connected_update_s8_scratch_bytes(const mt_fc_train_params *p, int32_t rows);

/**
 * @brief Weight gradient of the first @p rows output channels fused with the SGD update.
 *
 * Mirrors backward_int8 position 1 (rows) + sgd_delta + Int8Trainer._apply:
 *   gr = headroom(g[:, :rows], x_bits, N); acc[o,k] = sum_n gr[n,o] * (x[n,k] - in_zp);
 *   G = mul_q31(acc, x_mult, x_shift)  (whole-slice normalisation and renormalisation);
 *   delta = sgd_delta(G); momentum; master copy / stochastic rounding; w rewritten.
 * The exponent of G needs max |acc| over the whole slice before any row is updated: pass 1
 * computes every accumulator (stored in @p acc when given), pass 2 (recomputes and) updates one
 * output-channel row at a time. Without scratch the MACs run twice; no gradient tensor is live.
 * Batch 1 has no MACs (acc[o,k] is one product): pass 1 takes the extremes from those of x, pass
 * 2 forms the products, and @p acc is not used. The scratch's contents afterwards are
 * unspecified (the fused chain may reuse it).
 * @param[in]     u, st    update constants / state of the weight slice {1, rows, Cout, Cin}
 * @param[in]     acc      optional int32 [rows * Cin] scratch (single MAC pass)
 * @param[in]     g        masked upstream gradient int16 [N, Cout], exponent g_e
 * @param[in]     x        int8 [N, Cin] forward input
 * @param[in,out] w        int8 [Cout, Cin]; rows [0, rows) updated
 * @param[out]    grad, grad_e  optional (NULL): the weight gradient [rows, Cin] (tests)
 */
mt_status mt_fully_connected_update_s8(const mt_fc_train_params *p, const mt_sgd_params *u,
                                       mt_sgd_state *st, int32_t rows, int32_t *acc,
                                       const int16_t *g, int32_t g_e, const int8_t *x, int8_t *w,
                                       int16_t *grad, int32_t *grad_e);

/* ============================================================================================ */
/* conv2d / depthwise_conv2d / pointwise (Conv2D, DepthwiseConv2D .backward_int8)               */
/* ============================================================================================ */

/** conv2d / depthwise backward constants (node attributes + linear_prepare_backward). */
typedef struct {
    mt_dims in;            /**< x {N, H, W, Cin} */
    mt_dims out;           /**< y and g {N, OH, OW, Cout} (depthwise: Cout = Cin * M) */
    mt_hw kernel;          /**< KH, KW */
    mt_hw stride;          /**< >= 1 */
    mt_hw dilation;        /**< >= 1 */
    mt_padding padding;    /**< top/left used; bottom/right only shaped OH/OW */
    int32_t in_zp;         /**< zero point of x */
    int32_t x_mult;        /**< s_x as Q31 */
    int32_t x_shift;
    int32_t x_bits;        /**< |x - in_zp| <= 2^x_bits */
    const int32_t *w_mult; /**< [Cout] aligned Q31 s_w[c] */
    int32_t w_shift;
    int32_t w_bits;        /**< |w| <= 2^w_bits (7 for symmetric int8) */
    mt_wsplit split;       /**< conv2d/pointwise input gradient: weight rows split SRAM/flash
                                (zero: not split); depthwise ignores it (whole weights) */
} mt_conv_train_params;

/** Scratch bytes of the conv2d/depthwise input gradients: gs int16 [N*OH*OW*Cout] (0 when it
 *  aliases g) plus, when @p single_pass, acc int32 [N*H*W*Cin]. */
size_t mt_conv2d_bwd_input_s16_scratch_bytes(const mt_conv_train_params *p, int gs_aliases_g,
                                             int single_pass);

/**
 * @brief conv2d input gradient (Conv2D.backward_int8 position 0).
 *
 * gs = headroom(scale_channels(g), w_bits, Cout*KH*KW);
 * gx[n,h,w,c] = sum over taps (i,j) whose output pixel oh = (h + top - i*dh) / sh (exact, in
 * range) exists, and over o, of gs[n,oh,ow,o] * w[o,i,j,c]; renormalised. Gather form: every
 * input element is one accumulator, so two passes (max, write) need no scratch.
 * Arguments as mt_fully_connected_bwd_input_s16; w int8 [Cout, KH, KW, Cin]; gx [N, H, W, Cin].
 */
mt_status mt_conv2d_bwd_input_s16(const mt_conv_train_params *p, int16_t *gs, int32_t *acc,
                                  const int16_t *g, int32_t g_e, const int8_t *w, int16_t *gx,
                                  int32_t *gx_e);

/** Bytes of the optional acc scratch of mt_conv2d_update_s8: rows * KH * KW * Cin int32. */
size_t mt_conv2d_update_s8_scratch_bytes(const mt_conv_train_params *p, int32_t rows);

/**
 * @brief conv2d weight gradient of output channels [0, rows) fused with the SGD update.
 *
 * acc[o,i,j,c] = sum_{n,oh,ow} gr[n,oh,ow,o] * (x[n, oh*sh + i*dh - top, ow*sw + j*dw - left, c]
 * - in_zp) (padding contributes 0), gr = headroom(g[..., :rows], x_bits, N*OH*OW); then as
 * mt_fully_connected_update_s8 (two passes; slice {1, rows, Cout, KH*KW*Cin}, updated in
 * row-major order o, i, j, c).
 */
mt_status mt_conv2d_update_s8(const mt_conv_train_params *p, const mt_sgd_params *u,
                              mt_sgd_state *st, int32_t rows, int32_t *acc, const int16_t *g,
                              int32_t g_e, const int8_t *x, int8_t *w, int16_t *grad,
                              int32_t *grad_e);

/**
 * @brief depthwise_conv2d input gradient (DepthwiseConv2D.backward_int8 position 0).
 *
 * gs = headroom(scale_channels(g), w_bits, M*KH*KW);
 * gx[n,h,w,c] = sum_{i,j valid} sum_m gs[n,oh,ow,c*M+m] * w[0,i,j,c*M+m]; renormalised.
 * Scratch as conv2d (mt_conv2d_bwd_input_s16_scratch_bytes).
 */
mt_status mt_depthwise_conv2d_bwd_input_s16(const mt_conv_train_params *p, int16_t *gs,
                                            int32_t *acc, const int16_t *g, int32_t g_e,
                                            const int8_t *w, int16_t *gx, int32_t *gx_e);

/** Bytes of the optional acc scratch of mt_depthwise_conv2d_update_s8: KH * KW * rows int32. */
size_t mt_depthwise_conv2d_update_s8_scratch_bytes(const mt_conv_train_params *p, int32_t rows);

/**
 * @brief depthwise weight gradient of channels [0, rows) fused with the SGD update.
 *
 * acc[0,i,j,o] = sum gr[n,oh,ow,o] * (x[n,.,.,o / M] - in_zp); slice {KH*KW, rows, C*M, 1}
 * (master/velocity [KH, KW, rows]); updated, and stochastic draws taken, in row-major order
 * (i, j, o). Two passes as mt_conv2d_update_s8.
 */
mt_status mt_depthwise_conv2d_update_s8(const mt_conv_train_params *p, const mt_sgd_params *u,
                                        mt_sgd_state *st, int32_t rows, int32_t *acc,
                                        const int16_t *g, int32_t g_e, const int8_t *x,
                                        int8_t *w, int16_t *grad, int32_t *grad_e);

/**
 * @brief A pointwise (1x1, stride 1, unpadded) conv2d as a fully_connected layer over its N*H*W
 *        pixels (same constants, same fan-in): the parameters the pointwise kernels hand to the
 *        fully_connected ones. MT_ERR_ARG when the geometry is not pointwise.
 */
static inline mt_status mt_pointwise_as_fc(const mt_conv_train_params *p, mt_fc_train_params *f)
{
    if (p->kernel.h != 1 || p->kernel.w != 1 || p->stride.h != 1 || p->stride.w != 1 ||
        p->padding.top != 0 || p->padding.left != 0 || p->padding.bottom != 0 ||
        p->padding.right != 0 || p->in.n != p->out.n || p->in.h != p->out.h ||
        p->in.w != p->out.w) {
        return MT_ERR_ARG;
    }
    f->batch = p->in.n * p->in.h * p->in.w;
    f->in_features = p->in.c;
    f->out_features = p->out.c;
    f->in_zp = p->in_zp;
    f->w_zp = 0;
    f->x_mult = p->x_mult;
    f->x_shift = p->x_shift;
    f->x_bits = p->x_bits;
    f->w_mult = p->w_mult;
    f->w_shift = p->w_shift;
    f->w_bits = p->w_bits;
    f->split = p->split;
    return MT_OK;
}

/**
 * @brief Pointwise (1x1, stride 1, unpadded) conv2d input gradient: the fully_connected rule
 *        over N*H*W pixels, same integers as mt_conv2d_bwd_input_s16. MT_ERR_ARG otherwise.
 * Scratch: gs int16 [N*H*W*Cout] (may alias g), optional acc int32 [N*H*W*Cin].
 */
mt_status mt_pointwise_conv2d_bwd_input_s16(const mt_conv_train_params *p, int16_t *gs,
                                            int32_t *acc, const int16_t *g, int32_t g_e,
                                            const int8_t *w, int16_t *gx, int32_t *gx_e);

/** @brief Pointwise conv2d fused weight update (the fully_connected rule over pixels); optional
 *  acc scratch rows * Cin int32. Same integers as mt_conv2d_update_s8. */
mt_status mt_pointwise_conv2d_update_s8(const mt_conv_train_params *p, const mt_sgd_params *u,
                                        mt_sgd_state *st, int32_t rows, int32_t *acc,
                                        const int16_t *g, int32_t g_e, const int8_t *x,
                                        int8_t *w, int16_t *grad, int32_t *grad_e);

/**
 * @brief Bias gradient of channels [0, rows) fused with the update (sum_to + sgd_delta +
 *        b += RDBPOT(delta, 16), saturated to [lo, hi]).
 *
 * gb[c] = sum_p RDBPOT(g[p,c], s_h), s_h = headroom(max |g[:, :rows]|, 0, pixels); renormalised
 * over the rows channels. Three passes over g[:, :rows] (max, sums, sums + update); no scratch.
 * @param[in]     u, st     update constants / state (kind MT_APPLY_BIAS) of slice {1, rows, C, 1}
 * @param[in]     pixels    N*OH*OW (conv) or N (fc)
 * @param[in]     channels  C, the row stride of g
 * @param[in]     g         masked upstream gradient int16 [pixels, C], exponent g_e
 * @param[in,out] bias      int32 [C]; entries [0, rows) updated
 * @param[out]    grad, grad_e  optional (NULL): the bias gradient [rows] (tests)
 */
mt_status mt_bias_update_s32(const mt_sgd_params *u, mt_sgd_state *st, int32_t pixels,
                             int32_t channels, int32_t rows, const int16_t *g, int32_t g_e,
                             int32_t *bias, int16_t *grad, int32_t *grad_e);

/* ============================================================================================ */
/* Pooling, add, pad (pool.py, elementwise.py, shape.py backward_int8)                          */
/* ============================================================================================ */

/** Windowed pool geometry (node attributes ``ksize``, ``stride``, ``pad``). */
typedef struct {
    mt_dims in;               /**< x {N, H, W, C} */
    mt_dims out;              /**< y {N, OH, OW, C} */
    mt_hw kernel;             /**< KH, KW */
    mt_hw stride;
    mt_padding padding;       /**< each smaller than the window */
    int32_t count_include_pad; /**< avg only: divide by KH*KW instead of the valid count */
    const int32_t *inv_count; /**< avg only: [KH*KW + 1] round(2^30 / n) (prepare_backward) */
} mt_pool_train_params;

/**
 * @brief max_pool2d input gradient (MaxPool2D.backward_int8).
 *
 * Each window's masked gradient goes to its first int8 maximum (row-major over the valid taps);
 * overlapping windows add in int32 after headroom(g, 0, ceil(KH/SH)*ceil(KW/SW)); renormalised.
 * Gather form, two passes (the window maxima are recomputed from x); no scratch.
 * @param[in]  x   int8 [N, H, W, C] forward input
 * @param[in]  g   masked gradient int16 [N, OH, OW, C]
 * @param[out] gx  int16 [N, H, W, C]
 */
mt_status mt_max_pool2d_bwd_input_s16(const mt_pool_train_params *p, const int8_t *x,
                                      const int16_t *g, int32_t g_e, int16_t *gx, int32_t *gx_e);

/**
 * @brief avg_pool2d input gradient (AvgPool2D.backward_int8).
 *
 * gw = mul_q31(g, inv_count[count(oh,ow)], 1) (one multiplier per window), headroom(fan
 * ceil(KH/SH)*ceil(KW/SW)), spread over the valid taps, renormalised. Gather form, no scratch.
 */
mt_status mt_avg_pool2d_bwd_input_s16(const mt_pool_train_params *p, const int16_t *g,
                                      int32_t g_e, int16_t *gx, int32_t *gx_e);

/**
 * @brief mean (global over H, W) input gradient (Mean.backward_int8): gx[n,h,w,c] =
 *        mul_q31(g, inv_mult, inv_shift)[n,c] at every pixel.
 * @param[in]  in_dims  x {N, H, W, C}; g is [N, C]
 */
mt_status mt_mean_bwd_input_s16(const mt_dims *in_dims, int32_t inv_mult, int32_t inv_shift,
                                const int16_t *g, int32_t g_e, int16_t *gx, int32_t *gx_e);

/**
 * @brief add: gradient of one operand (Add.backward_int8 via _grad_int.reduce_to).
 *
 * The masked output gradient summed over the axes along which the operand was broadcast
 * (headroom with fan-in = product of those extents, then renormalised); a copy when none.
 * Shapes are right-aligned to 4-D (missing leading axes are 1).
 * @param[in]  y_dims  output/gradient shape; x_dims: operand shape, each dim 1 or equal to y's
 * @param[out] gx      int16 [x_dims], must not alias g (unless x_dims == y_dims)
 */
mt_status mt_add_bwd_input_s16(const mt_dims *y_dims, const mt_dims *x_dims, const int16_t *g,
                               int32_t g_e, int16_t *gx, int32_t *gx_e);

/**
 * @brief pad input gradient (Pad.backward_int8): the border cut off, exponent unchanged.
 * (reshape needs no kernel: mantissas and exponent are reused as they are.)
 * @param[in] before  pad before each axis {n(=0), h, w, c} of the 4-D (right-aligned) shapes
 */
mt_status mt_pad_bwd_input_s16(const mt_dims *x_dims, const mt_dims *y_dims,
                               const int32_t before[4], const int16_t *g, int16_t *gx);

/* ============================================================================================ */
/* Integer softmax cross-entropy (compiler/ops/loss_int.py)                                     */
/* ============================================================================================ */

/** Per-batch constants (loss_int._prepare_batch). */
typedef struct {
    int32_t batch;            /**< N (the kernel's batch must equal it) */
    int32_t inv_batch_mult;   /**< 1/N as Q31 */
    int32_t inv_batch_shift;
    int32_t batch_log2;       /**< log2 N for a power of two, else -1 */
} mt_ce_batch_params;

/** int8 logits (prepare_softmax_ce_int8). */
typedef struct {
    int32_t mult;        /**< QM(s * 2^26) multiplier */
    int32_t left_shift;  /**< its shift, 1..31 */
    int32_t diff_min;    /**< -floor(31 / s) (>= -255) */
    mt_ce_batch_params b;
} mt_softmax_ce_s8_params;

/** int32 accumulator logits (prepare_softmax_ce_acc). */
typedef struct {
    const int32_t *mult;   /**< [C] MBQM multipliers of s_acc[c] * 2^F */
    const int32_t *shift;  /**< [C] their shifts (<= 0) */
    int32_t frac_bits;     /**< F (<= 26) */
    int32_t radius;        /**< 31 << F */
    mt_ce_batch_params b;
} mt_softmax_ce_acc_params;

/** Marker of an invalid (below the radius) difference in the core's input buffer. */
#define MT_CE_INVALID MT_INT32_MIN

/** Bytes of the softmax cross-entropy buffer: batch * classes int32. */
size_t mt_softmax_ce_scratch_bytes(int32_t batch, int32_t classes);

/**
 * @brief Softmax cross-entropy from differences (shared core of the two variants).
 *
 * @param[in,out] buf        in: d[n,c] = z - max z in Q5.26 (<= 0) or MT_CE_INVALID;
 *                           out: probabilities p[n,c] in Q0.31
 * @param[in]     labels     int32 [N], in [0, C)
 * @param[out]    grad       int16 [N, C], exponent *grad_e: dL/dlogits of the batch-mean loss
 * @param[out]    loss       optional int32 [N] Q15.16 nats per sample
 * @param[out]    loss_mean  Q15.16 batch mean, (sum + N/2) // N
 */
mt_status mt_softmax_ce_core_s32(const mt_ce_batch_params *b, int32_t batch, int32_t classes,
                                 int32_t *buf, const int32_t *labels, int16_t *grad,
                                 int32_t *grad_e, int32_t *loss, int32_t *loss_mean);

/**
 * @brief Softmax cross-entropy on int8 logits (softmax_cross_entropy_int, kind "int8").
 * @param[out] buf      scratch int32 [N, C]; holds the Q0.31 probabilities on return
 * @param[out] correct  optional uint8 [N]: first argmax of the logits == label
 * Other arguments as mt_softmax_ce_core_s32.
 */
mt_status mt_softmax_ce_s8(const mt_softmax_ce_s8_params *p, int32_t batch, int32_t classes,
                           int32_t *buf, const int8_t *logits, const int32_t *labels,
                           int16_t *grad, int32_t *grad_e, int32_t *loss, int32_t *loss_mean,
                           uint8_t *correct);

/**
 * @brief Softmax cross-entropy on the int32 accumulators of the final fully_connected layer
 *        (kind "acc"): z = MBQM(acc, mult[c], shift[c]); correct = first argmax of z.
 */
mt_status mt_softmax_ce_acc_s32(const mt_softmax_ce_acc_params *p, int32_t batch, int32_t classes,
                                int32_t *buf, const int32_t *acc, const int32_t *labels,
                                int16_t *grad, int32_t *grad_e, int32_t *loss, int32_t *loss_mean,
                                uint8_t *correct);

/* ============================================================================================ */
/* Forward gradient (train_float.fmix32 / perturbation_seed / rademacher, Int8Trainer.perturb)  */
/* ============================================================================================ */

/** MurmurHash3 fmix32 (a bijection on uint32, fmix32(0) == 0). */
uint32_t mt_fmix32(uint32_t h);

/** Nonzero xorshift32 seed of perturbation i (1..m) of step t:
 *  h = fmix32(seed ^ 0x9E3779B9); h = fmix32(h ^ t); h = fmix32(h ^ i); h ? h : 0x9E3779B9. */
uint32_t mt_fg_perturbation_seed(uint32_t seed, uint32_t step, uint32_t i);

/** Cursor in a Rademacher stream: element e is bit (e % 32) of draw e / 32, draw k being the
 *  xorshift32 state after k + 1 steps from the seed; bit set -> +1, clear -> -1. */
typedef struct {
    uint32_t state;  /**< xorshift32 state = the current draw */
    uint32_t pos;    /**< next element index */
} mt_rademacher;

/** Start a stream at element 0 (seed nonzero). */
void mt_rademacher_init(mt_rademacher *r, uint32_t seed);

/** Advance @p n elements (the stream positions of an excluded tensor). */
void mt_rademacher_skip(mt_rademacher *r, uint32_t n);

/** Next sign of the stream: +1 or -1. */
static inline int32_t mt_rademacher_next(mt_rademacher *r)
{
    const uint32_t b = r->pos & 31u;
    if (b == 0u) {
        r->state = mt_xorshift32(r->state);
    }
    r->pos++;
    return ((r->state >> b) & 1u) ? 1 : -1;
}

/**
 * @brief Perturb an int8 weight slice from its int16 master (Int8Trainer.perturb, weights):
 *        w = clamp(RDBPOT(master + k * delta * z, 8), -127, 127), z from the stream (slice
 *        order). k = 0 restores exactly. The master is not written.
 * @param[in]     s       slice geometry
 * @param[in]     master  int16 [slice]
 * @param[in]     delta   perturbation in master units (>= 256)
 * @param[in]     k       +1, -1 or 0
 * @param[in,out] z       stream cursor at the slice's offset; advanced by the slice size
 * @param[in,out] w       full int8 tensor; the slice is rewritten
 */
mt_status mt_fg_perturb_s8(const mt_slice *s, const int16_t *master, int32_t delta, int32_t k,
                           mt_rademacher *z, int8_t *w);

/**
 * @brief Perturb an int32 bias slice in place: b += step * delta * z (wrapping int32 as the
 *        numpy astype; the update keeps |b| <= 2^31 - 1 - 2 delta so nothing wraps).
 * @param[in] step  k - prev: +1, -2 or +1 for the (+dz, -2dz, +dz) sequence
 */
mt_status mt_fg_perturb_s32(const mt_slice *s, int32_t delta, int32_t step, mt_rademacher *z,
                            int32_t *bias);

/**
 * @brief Forward-gradient update of an int8 weight slice (Int8Trainer._forward_gradient):
 *        g = sum_i sign[i] * z_i (regenerated from m stream cursors, never stored), then
 *        sgd_delta(Grad(g, 0)) (lr includes the 1/m), momentum, master copy (st->kind MASTER).
 *        Two passes over the streams (max |g|, then update).
 * @param[in]     m     number of perturbations, 1..16 (the first pass copies the m cursors)
 * @param[in]     sign  [m] sign(L+ - L-) per perturbation, 0 for a skipped (tied) one
 * @param[in,out] z     [m] cursors at the slice's offset in stream i; advanced by the slice size
 */
mt_status mt_fg_update_s8(const mt_sgd_params *u, mt_sgd_state *st, const mt_slice *s, int32_t m,
                          const int32_t *sign, mt_rademacher *z, int8_t *w);

/** @brief As mt_fg_update_s8 for an int32 bias slice (st->kind MT_APPLY_BIAS). */
mt_status mt_fg_update_s32(const mt_sgd_params *u, mt_sgd_state *st, const mt_slice *s, int32_t m,
                           const int32_t *sign, mt_rademacher *z, int32_t *bias);

/* ============================================================================================ */
/* Learning-rate schedule (train_int.cosine_factor_q15, scale_lr)                               */
/* ============================================================================================ */

/** round(2^15 * (1 + cos(pi * i / 256)) / 2), i = 0..256 (train_int.COS_TABLE_Q15; flash). */
extern const uint16_t mt_cos_table_q15[MT_COS_TABLE_SIZE];

/** (1 + cos(pi * min(t, T) / T)) / 2 as Q15 (0..32768) by table lookup and linear
 *  interpolation; 0 <= t, 1 <= total < 2^23. */
int32_t mt_cosine_factor_q15(int32_t t, int32_t total);

/** lr (mult in [2^30, 2^31), shift) times a Q15 factor in [0, 32768], the product multiplier
 *  renormalised to [2^30, 2^31); (0, 0) when it is 0. */
void mt_scale_lr_q31(int32_t mult, int32_t shift, int32_t f_q15, int32_t *mult_out,
                     int32_t *shift_out);

#ifdef __cplusplus
}
#endif

#endif /* MT_KERNELS_TRAIN_H */
