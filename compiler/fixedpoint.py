"""TFLite fixed-point arithmetic, vectorised in numpy, bit-exact with the C++ it mirrors.

Two halves:
  * host "Prepare" helpers that turn a real multiplier into (int32 multiplier, shift) using float64,
    exactly as tflite::QuantizeMultiplier does (frexp, round, overflow fix-up);
  * integer kernels' arithmetic (SaturatingRoundingDoublingHighMul, RoundingDivideByPOT,
    MultiplyByQuantizedMultiplier...) on int64 arrays holding int32 values. No float here.

Integers are carried as numpy int64 so that products of two int32 never overflow; results that
C computes in int32 are wrapped with ``wrap_i32`` where C would wrap.
"""
from __future__ import annotations

import math

import numpy as np

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


# ---------------------------------------------------------------------------------------------
# Prepare (host, float64)
# ---------------------------------------------------------------------------------------------
def quantize_multiplier(real: float) -> tuple[int, int]:
    """tflite::QuantizeMultiplier: real = q * 2^(shift - 31), q in [2^30, 2^31) (or 0).

    Returns ``(q, shift)``; ``shift`` > 0 is a left shift.
    """
    real = float(real)
    if real == 0.0:
        return 0, 0
    frac, shift = math.frexp(real)  # real = frac * 2^shift, frac in [0.5, 1)
    q = int(_round_half_away(frac * (1 << 31)))
    assert q <= (1 << 31)
    if q == (1 << 31):
        q //= 2
        shift += 1
    if shift < -31:
        shift = 0
        q = 0
    # TFLite (not single-rounding builds) leaves shift > 30 as is; such multipliers do not occur
    # for valid int8 graphs.
    return q, shift


def quantize_multiplier_smaller_than_one_exp(real: float) -> tuple[int, int]:
    """tflite::QuantizeMultiplierSmallerThanOneExp: requires 0 < real < 1; shift <= 0."""
    if not (0.0 < real < 1.0):
        raise ValueError(f"multiplier {real} is not in (0, 1)")
    q, shift = quantize_multiplier(real)
    assert shift <= 0
    return q, shift


def quantize_multiplier_array(reals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pairs = [quantize_multiplier(float(r)) for r in np.asarray(reals, dtype=np.float64).ravel()]
    return (np.array([p[0] for p in pairs], dtype=np.int64),
            np.array([p[1] for p in pairs], dtype=np.int64))


def _round_half_away(x: float) -> float:
    """std::round semantics (half away from zero), unlike Python's round (half to even)."""
    return math.floor(x + 0.5) if x >= 0 else -math.floor(-x + 0.5)


def tflite_round(x):
    """TfLiteRound / std::round on float32 or float64 values (half away from zero)."""
    x = np.asarray(x)
    return np.sign(x) * np.floor(np.abs(x) + x.dtype.type(0.5))


# ---------------------------------------------------------------------------------------------
# Integer arithmetic (int64 arrays holding int32 values)
# ---------------------------------------------------------------------------------------------
def wrap_i32(x: np.ndarray) -> np.ndarray:
    """Two's-complement wrap of int64 values to the int32 range (what C's int32 arithmetic does)."""
    x = np.asarray(x, dtype=np.int64)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def srdhm(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp SaturatingRoundingDoublingHighMul: a*b / 2^31 rounded to nearest, ties toward +inf;
    saturates the single overflow case (INT32_MIN * INT32_MIN)."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    overflow = (a == INT32_MIN) & (b == INT32_MIN)
    ab = a * b
    nudge = np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    t = ab + nudge
    # C++ integer division truncates toward zero.
    q = np.where(t >= 0, t >> 31, -((-t) >> 31))
    return np.where(overflow, INT32_MAX, q)


def rounding_divide_by_pot(x: np.ndarray, exponent) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: x / 2^exponent rounded half away from zero (0 <= exp <= 31)."""
    x = np.asarray(x, dtype=np.int64)
    exponent = np.asarray(exponent, dtype=np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(x: np.ndarray, multiplier, shift) -> np.ndarray:
    """tflite::MultiplyByQuantizedMultiplier (double-rounding variant, TFLite's default build).

    ``multiplier``/``shift`` broadcast against ``x`` (per-channel requantization passes arrays
    shaped to the channel axis).
    """
    x = np.asarray(x, dtype=np.int64)
    shift = np.asarray(shift, dtype=np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    return rounding_divide_by_pot(srdhm(wrap_i32(x * (np.int64(1) << left)), multiplier), right)


def multiply_by_quantized_multiplier_smaller_than_one_exp(x: np.ndarray, multiplier, left_shift) -> np.ndarray:
    """tflite::MultiplyByQuantizedMultiplierSmallerThanOneExp (left_shift <= 0)."""
    return rounding_divide_by_pot(srdhm(x, multiplier), -np.asarray(left_shift, dtype=np.int64))


def saturating_left_shift(x: np.ndarray, shift: int) -> np.ndarray:
    return np.clip(np.asarray(x, np.int64) << shift, INT32_MIN, INT32_MAX)


def multiply_by_quantized_multiplier_greater_than_one(x: np.ndarray, multiplier, left_shift) -> np.ndarray:
    """tflite::MultiplyByQuantizedMultiplierGreaterThanOne (left_shift >= 0): SRDHM(x << shift, M)."""
    x = np.asarray(x, dtype=np.int64)
    return srdhm(wrap_i32(x * (np.int64(1) << np.asarray(left_shift, np.int64))), multiplier)


# ---------------------------------------------------------------------------------------------
# gemmlowp fixed-point transcendentals (int32 raw values in int64 arrays)
#
# A value in Qm.(31-m) ("m integer bits") is raw / 2^(31-m). Products of Qa and Qb values are SRDHM
# of the raws and live in Q(a+b); + and - are plain int32 additions (wrapping, as in C).
# ---------------------------------------------------------------------------------------------
def saturating_rounding_multiply_by_pot(x: np.ndarray, exponent: int) -> np.ndarray:
    """gemmlowp SaturatingRoundingMultiplyByPOT<exponent>: saturating << for exponent > 0,
    rounding >> (RoundingDivideByPOT) for exponent < 0."""
    x = np.asarray(x, dtype=np.int64)
    if exponent == 0:
        return x
    if exponent < 0:
        return rounding_divide_by_pot(x, -exponent)
    threshold = (1 << (31 - exponent)) - 1
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, x << exponent))


def rounding_half_sum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """gemmlowp RoundingHalfSum for int32: (a + b + sign(a + b)) / 2, C truncating division."""
    s = np.asarray(a, np.int64) + np.asarray(b, np.int64)
    t = s + np.where(s >= 0, 1, -1)
    return np.where(t >= 0, t // 2, -((-t) // 2))


def count_leading_zeros_u32(x: np.ndarray) -> np.ndarray:
    """CountLeadingZeros of the uint32 reinterpretation of int32 values (32 for 0)."""
    u = np.asarray(x, np.int64) & 0xFFFFFFFF
    n = np.zeros(u.shape, np.int64)
    for bits in (16, 8, 4, 2, 1):
        small = u < (np.int64(1) << (32 - bits))
        n = n + np.where(small, bits, 0)
        u = np.where(small, u << bits, u)
    return np.where(np.asarray(x, np.int64) & 0xFFFFFFFF == 0, 32, n)


def exp_on_interval_between_negative_one_quarter_and_0_excl(a: np.ndarray) -> np.ndarray:
    """exp(a) for a in [-1/4, 0): Q0.31 in, Q0.31 out (Taylor series around -1/8)."""
    constant_term = 1895147668  # exp(-1/8) in Q0.31
    constant_1_over_3 = 715827883  # 1/3 in Q0.31
    x = wrap_i32(np.asarray(a, np.int64) + (1 << 28))  # a + 1/8
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = saturating_rounding_multiply_by_pot(x4, -2)
    poly = saturating_rounding_multiply_by_pot(
        wrap_i32(srdhm(wrap_i32(x4_over_4 + x3), constant_1_over_3) + x2), -1)
    return wrap_i32(constant_term + srdhm(constant_term, wrap_i32(x + poly)))


_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535),
               (3, 720401), (4, 242))  # exp(-2^e) in Q0.31


def exp_on_negative_values(a: np.ndarray, integer_bits: int) -> np.ndarray:
    """gemmlowp exp_on_negative_values: a <= 0 in Q(integer_bits).(31-integer_bits) -> exp(a) in Q0.31."""
    a = np.asarray(a, np.int64)
    frac_bits = 31 - integer_bits
    one_quarter = 1 << (frac_bits - 2)
    a_mod_quarter_minus_one_quarter = wrap_i32((a & (one_quarter - 1)) - one_quarter)
    result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        saturating_rounding_multiply_by_pot(a_mod_quarter_minus_one_quarter, integer_bits))  # Rescale<0>
    remainder = wrap_i32(a_mod_quarter_minus_one_quarter - a)
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            bit = np.int64(1) << (frac_bits + exponent)
            result = np.where((remainder & bit) != 0, srdhm(result, multiplier), result)
    if integer_bits > 5:
        clamp = -(1 << (36 - integer_bits))  # -32.0 in the input format
        result = np.where(a < clamp, 0, result)
    return np.where(a == 0, INT32_MAX, result)


def one_over_one_plus_x_for_x_in_0_1(a: np.ndarray) -> np.ndarray:
    """gemmlowp one_over_one_plus_x_for_x_in_0_1: Q0.31 in [0, 1) -> 1/(1+a) in Q0.31
    (Newton-Raphson division, three iterations, intermediates in Q2.29)."""
    half_denominator = rounding_half_sum(a, INT32_MAX)  # (1 + a) / 2 in Q0.31
    constant_48_over_17 = 1515870810  # Q2.29
    constant_neg_32_over_17 = -1010580540  # Q2.29
    one_q2 = 1 << 29
    x = wrap_i32(constant_48_over_17 + srdhm(half_denominator, constant_neg_32_over_17))
    for _ in range(3):
        half_denominator_times_x = srdhm(half_denominator, x)  # Q2.29
        one_minus = wrap_i32(one_q2 - half_denominator_times_x)
        x = wrap_i32(x + saturating_rounding_multiply_by_pot(srdhm(x, one_minus), 2))  # Q4 -> Q2
    return saturating_rounding_multiply_by_pot(x, 1)  # x / 2 in Q1.30 -> Q0.31


def get_reciprocal(x: np.ndarray, x_integer_digits: int) -> tuple[np.ndarray, np.ndarray]:
    """tflite::GetReciprocal: x > 0 in Q(x_integer_digits) -> (1/x scaled into Q0.31, num_bits_over_unit).

    1/x = raw / 2^31 * 2^-num_bits_over_unit.
    """
    x = np.asarray(x, np.int64)
    headroom_plus_one = count_leading_zeros_u32(x)
    num_bits_over_unit = x_integer_digits - headroom_plus_one
    shifted = ((x & 0xFFFFFFFF) << headroom_plus_one) & 0xFFFFFFFF  # uint32 shift
    shifted_sum_minus_one = wrap_i32(shifted - (1 << 31))
    return one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one), num_bits_over_unit


# ---------------------------------------------------------------------------------------------
# Activation ranges (host)
# ---------------------------------------------------------------------------------------------
def activation_range_int8(act: str, scale: float, zero_point: int) -> tuple[int, int]:
    """tflite::CalculateActivationRangeQuantized for int8 outputs.

    The real bound is quantized in float32 (``zero_point + round(f / scale)``) as TFLite does.
    """
    qmin, qmax = -128, 127
    s = np.float32(scale)

    def q(f: float) -> int:
        return int(zero_point) + int(tflite_round(np.float32(f) / s))

    if act in ("none", None):
        return qmin, qmax
    if act == "relu":
        return max(qmin, q(0.0)), qmax
    if act == "relu6":
        return max(qmin, q(0.0)), min(qmax, q(6.0))
    if act == "relu_n1_to_1":
        return max(qmin, q(-1.0)), min(qmax, q(1.0))
    raise ValueError(f"unsupported fused activation {act!r}")
