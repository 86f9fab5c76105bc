"""TFLite fixed-point primitives against exact rational arithmetic (Python ints / fractions)."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from microtrain.compiler import fixedpoint as fp

i32 = st.integers(fp.INT32_MIN, fp.INT32_MAX)


def _round_half_away(fr: Fraction) -> int:
    """Exact round-half-away-from-zero of a rational."""
    n = abs(fr)
    q = math.floor(n + Fraction(1, 2))
    return q if fr >= 0 else -q


@settings(max_examples=300, deadline=None, derandomize=True)
@given(i32, i32)
def test_srdhm_is_rounded_doubling_high_product(a, b):
    got = int(fp.srdhm(np.int64(a), np.int64(b)))
    if a == b == fp.INT32_MIN:
        assert got == fp.INT32_MAX
        return
    # gemmlowp: (a*b + nudge) / 2^31 with C truncation, nudge = 2^30 or 1 - 2^30 by sign: that is
    # a*b / 2^31 rounded to nearest with ties toward +infinity (-0.5 -> 0, 0.5 -> 1).
    assert got == math.floor(Fraction(a * b, 1 << 31) + Fraction(1, 2))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(i32, st.integers(0, 31))
def test_rounding_divide_by_pot_rounds_half_away(x, e):
    assert int(fp.rounding_divide_by_pot(np.int64(x), e)) == _round_half_away(Fraction(x, 1 << e))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.floats(min_value=1e-9, max_value=1e3, allow_nan=False))
def test_quantize_multiplier_represents_the_real(real):
    q, shift = fp.quantize_multiplier(real)
    assert (1 << 30) <= q < (1 << 31)
    # q * 2^(shift-31) is within half a unit of the 31-bit mantissa of real.
    approx = q * 2.0 ** (shift - 31)
    assert abs(approx - real) <= real * 2.0 ** -30


def test_quantize_multiplier_known_values():
    assert fp.quantize_multiplier(0.5) == (1 << 30, 0)
    assert fp.quantize_multiplier(1.0) == (1 << 30, 1)
    assert fp.quantize_multiplier(0.0) == (0, 0)
    # Mantissa rounding up to 2^31 carries into the exponent.
    assert fp.quantize_multiplier(1.0 - 2.0 ** -40) == (1 << 30, 1)
    # Below 2^-31 of resolution everything flushes to zero, as TFLite does.
    assert fp.quantize_multiplier(2.0 ** -40) == (0, 0)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.integers(-(1 << 20), 1 << 20), st.floats(min_value=1e-6, max_value=0.99))
def test_mbqm_close_to_real_product(x, real):
    q, shift = fp.quantize_multiplier(real)
    got = int(fp.multiply_by_quantized_multiplier(np.int64(x), q, shift))
    assert abs(got - x * real) <= 1.0 + abs(x) * real * 2.0 ** -29


def test_wrap_i32():
    assert int(fp.wrap_i32(np.int64(1 << 31))) == fp.INT32_MIN
    assert int(fp.wrap_i32(np.int64(-(1 << 31) - 1))) == fp.INT32_MAX
    assert int(fp.wrap_i32(np.int64(12345))) == 12345


def test_activation_range_int8():
    assert fp.activation_range_int8("none", 0.1, 3) == (-128, 127)
    assert fp.activation_range_int8("relu", 0.1, -20) == (-20, 127)
    assert fp.activation_range_int8("relu6", 0.05, -128) == (-128, -8)
    assert fp.activation_range_int8("relu6", 0.01, -128) == (-128, 127)


def test_tflite_round_is_half_away_from_zero():
    np.testing.assert_array_equal(fp.tflite_round(np.array([0.5, 1.5, 2.5, -0.5, -2.5], np.float32)),
                                  [1, 2, 3, -1, -3])
