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
    """gemmlowp SaturatingRoundingDoublingHighMul for int32 a, b: round(a*b / 2^31), saturating."""
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
