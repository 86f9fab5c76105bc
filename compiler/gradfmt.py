"""Integer gradient format of the no-FPU backward pass (see docs/training-numerics.md).

A gradient tensor is a :class:`Grad`: an integer mantissa tensor ``m`` and one power-of-two
exponent ``e`` for the whole tensor, ``real = m * 2^e``. Between ops the mantissa is int16
(``|m| <= MANT_MAX = 2^15 - 1``, symmetric: -2^15 never occurs); accumulators are int32.

Device-side operations (integer only; numpy int64 arrays holding the values C holds in int32):

  * ``renormalize(acc, e)``     int32 accumulator -> Grad: ``s = max(0, bitlen(max|acc|) - 15)``
                                (one more if rounding reaches 2^15), ``m = RDBPOT(acc, s)``,
                                ``e + s``. Exact when ``s == 0`` or every ``acc`` is a multiple of
                                ``2^s``. ``bitlen`` is ``32 - clz``.
  * ``headroom(g, bits, K)``    pre-shift before a multiply-accumulate: with ``|operand| <= 2^bits``
                                and fan-in ``K``, ``|sum| < K * 2^(bitlen(max|m|) + bits)``; the
                                mantissa is shifted right (rounding) until that bound is
                                ``<= 2^31``, so no int32 partial sum can overflow.
  * ``mul_q31(acc, e, M, k)``   multiply by a real ``r = M * 2^(k - 31)`` (``M`` a Q31 multiplier
                                from ``fixedpoint.quantize_multiplier``, host-prepared; per channel
                                along the last axis after ``align_multipliers``): the operand is
                                first normalised to 31 bits (``<< L``), ``SRDHM(acc << L, M)``,
                                exponent ``e + k - L``, then ``renormalize``.
  * ``add(a, b)``               sum of two gradients of one tensor (fan-out): the smaller
                                exponent's mantissa is shifted right (rounding) to the larger.

Host-side helpers (float64 allowed, tagged ``@host_only``): ``Grad.from_real`` / ``Grad.real``
(tests, reports), ``align_multipliers`` and ``q31`` (prepare constants).

``bits`` / ``acc_bits`` keyword arguments exist to measure other widths (int8/int32 mantissas,
int64 accumulators); the format is int16 / int32.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from . import fixedpoint as fp

#: mantissa width in bits, sign included (int16)
GRAD_BITS = 16
#: accumulator width in bits, sign included (int32)
ACC_BITS = 32
#: largest mantissa magnitude of an int16 gradient
MANT_MAX = (1 << (GRAD_BITS - 1)) - 1


def host_only(fn: Callable) -> Callable:
    """Marks a host-side function (float allowed); everything else in the integer backward
    modules must stay integer-only (checked by tests/test_backward_int.py)."""
    fn.host_only = True
    return fn


@dataclass
class Grad:
    """``real = m * 2^e``. ``m``: int64 array holding values with ``|m| < 2^(bits-1)``; ``e``: int."""

    m: np.ndarray
    e: int

    def __post_init__(self) -> None:
        self.m = np.asarray(self.m)
        if self.m.dtype != np.int64:
            if self.m.dtype.kind not in "iu":
                raise TypeError(f"Grad mantissa must be integer, got {self.m.dtype}")
            self.m = self.m.astype(np.int64)
        self.e = int(self.e)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.m.shape

    @host_only
    def real(self) -> np.ndarray:
        """float64 value (host and tests only)."""
        return self.m.astype(np.float64) * math.ldexp(1.0, self.e)

    @classmethod
    @host_only
    def from_real(cls, x: np.ndarray, bits: int = GRAD_BITS) -> "Grad":
        """Quantize a float gradient: the smallest exponent with ``max|round(x / 2^e)| <=
        2^(bits-1) - 1`` (host and tests only)."""
        x = np.asarray(x, dtype=np.float64)
        top = (1 << (bits - 1)) - 1
        amax = float(np.max(np.abs(x))) if x.size else 0.0
        if amax == 0.0:
            return cls(np.zeros(x.shape, np.int64), 0)
        e = math.frexp(amax / top)[1]  # amax / top < 2^e
        while e > -1100 and np.max(np.abs(fp.tflite_round(x / math.ldexp(1.0, e - 1)))) <= top:
            e -= 1
        m = fp.tflite_round(x / math.ldexp(1.0, e)).astype(np.int64)
        assert int(np.max(np.abs(m))) <= top
        return cls(m, e)


# ---------------------------------------------------------------------------------------------
# Accumulator monitor (tests): every int32 accumulator checked by ``check_acc`` is recorded here
# ---------------------------------------------------------------------------------------------
_MONITORS: list[list[tuple[str, int]]] = []


@contextmanager
def acc_monitor() -> Iterator[list[tuple[str, int]]]:
    """Collect ``(what, max|acc|)`` of every accumulator checked inside the block."""
    rec: list[tuple[str, int]] = []
    _MONITORS.append(rec)
    try:
        yield rec
    finally:
        _MONITORS.remove(rec)


def check_acc(acc: np.ndarray, what: str, acc_bits: int = ACC_BITS) -> np.ndarray:
    """Assert that ``acc`` holds what a signed ``acc_bits`` C accumulator holds (no wrap)."""
    acc = np.asarray(acc)
    top = int(np.max(np.abs(acc))) if acc.size else 0
    for rec in _MONITORS:
        rec.append((what, top))
    if top > (1 << (acc_bits - 1)) - 1:
        raise AssertionError(f"{what}: int{acc_bits} accumulator overflow (max |acc| = {top})")
    return acc


# ---------------------------------------------------------------------------------------------
# Integer primitives
# ---------------------------------------------------------------------------------------------
def bit_length(v) -> np.ndarray:
    """Bits needed for non-negative ``v < 2^63`` (0 for 0); for int32 values this is ``32 - clz``."""
    v = np.asarray(v, dtype=np.int64)
    n = np.zeros(v.shape, np.int64)
    for b in (32, 16, 8, 4, 2, 1):
        big = v >= (np.int64(1) << b)
        n = n + np.where(big, b, 0)
        v = np.where(big, v >> b, v)
    return n + (v > 0)


def max_abs(x: np.ndarray) -> int:
    return int(np.max(np.abs(x))) if np.size(x) else 0


def rshift_round(x: np.ndarray, s) -> np.ndarray:
    """RoundingDivideByPOT for shifts ``s >= 0`` of any size (``s >= 63``: 0)."""
    x = np.asarray(x, dtype=np.int64)
    s = np.asarray(s, dtype=np.int64)
    big = s >= 63
    r = fp.rounding_divide_by_pot(x, np.where(big, 0, s))
    return np.where(big, 0, r)


def renormalize(acc: np.ndarray, e: int, bits: int = GRAD_BITS) -> Grad:
    """Accumulator (value ``acc * 2^e``) -> Grad with ``|m| <= 2^(bits-1) - 1``."""
    acc = np.asarray(acc, dtype=np.int64)
    top = (1 << (bits - 1)) - 1
    amax = max_abs(acc)
    s = max(0, int(bit_length(amax)) - (bits - 1))
    if s and int(rshift_round(amax, s)) > top:
        s += 1
    if s == 0:
        return Grad(acc.copy(), e)
    return Grad(rshift_round(acc, s), e + s)


def headroom(g: Grad, operand_bits: int, fan_in: int, acc_bits: int = ACC_BITS) -> Grad:
    """Pre-shift ``g`` so that a sum of ``fan_in`` products ``m * v`` with ``|v| <= 2^operand_bits``
    stays within a signed ``acc_bits`` accumulator: ``bitlen(max|m|) + operand_bits +
    ceil(log2(fan_in)) <= acc_bits - 1``."""
    k = max(0, int(fan_in) - 1).bit_length()  # ceil(log2(fan_in))
    s = max(0, int(bit_length(max_abs(g.m))) + operand_bits + k - (acc_bits - 1))
    if s == 0:
        return g
    return Grad(rshift_round(g.m, s), g.e + s)


def mul_q31(acc: np.ndarray, e: int, mult, shift: int, bits: int = GRAD_BITS) -> Grad:
    """``acc * 2^e * M * 2^(shift - 31)`` as a renormalised Grad. ``M``: Q31 multiplier(s) in
    ``[0, 2^31)`` broadcasting against ``acc`` (per channel on the last axis), one common ``shift``.

    ``acc`` is brought to exactly 31 significant bits first (left shift, or rounding right shift
    for wider accumulators), so SRDHM keeps ~30 bits before the final renormalisation."""
    acc = np.asarray(acc, dtype=np.int64)
    if max_abs(acc) == 0:
        return Grad(np.zeros(acc.shape, np.int64), e)
    a, lsh = normalize31(acc)
    t = fp.srdhm(a, np.asarray(mult, dtype=np.int64))
    return renormalize(t, e + int(shift) - lsh, bits)


def normalize31(acc: np.ndarray) -> tuple[np.ndarray, int]:
    """``(acc * 2^L, L)`` with ``max|acc * 2^L|`` of exactly 31 bits (``L = 31 - bitlen``; a
    negative ``L`` is a rounding right shift, clamped to +-(2^31 - 1)). ``acc`` must not be all 0."""
    acc = np.asarray(acc, dtype=np.int64)
    lsh = 31 - int(bit_length(max_abs(acc)))
    a = acc << lsh if lsh >= 0 else rshift_round(acc, -lsh)
    return np.clip(a, -fp.INT32_MAX, fp.INT32_MAX), lsh


def add(a: Grad, b: Grad, bits: int = GRAD_BITS) -> Grad:
    """a + b (same shape): align to the larger exponent, int32 sum, renormalise."""
    if a.e < b.e:
        a, b = b, a
    bm = rshift_round(b.m, a.e - b.e)
    return renormalize(check_acc(a.m + bm, "grad add"), a.e, bits)


# ---------------------------------------------------------------------------------------------
# Host-side constant preparation
# ---------------------------------------------------------------------------------------------
@host_only
def q31(real: float) -> tuple[int, int]:
    """``real = M * 2^(k - 31)`` with ``M`` in ``[2^30, 2^31)`` (0 for 0): QuantizeMultiplier
    without its ``k < -31`` flush (gradient exponents are unbounded; the k goes to the exponent)."""
    real = float(real)
    if real == 0.0:
        return 0, 0
    if real < 0:
        raise ValueError(f"q31: negative multiplier {real}")
    frac, k = math.frexp(real)
    m = int(math.floor(frac * (1 << 31) + 0.5))
    if m == 1 << 31:
        m //= 2
        k += 1
    return m, k


@host_only
def align_multipliers(reals: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-channel positive reals -> (Q31 multipliers int64 [C], one common exponent k) with
    ``reals[c] ~= M[c] * 2^(k - 31)``: each ``q31`` multiplier is shifted right (rounding) by
    ``k - k_c``, ``k = max_c k_c``; channels ``2^31`` times smaller than the largest become 0."""
    pairs = [q31(float(r)) for r in np.asarray(reals, dtype=np.float64).ravel()]
    ks = [k for m, k in pairs if m]
    if not ks:
        return np.zeros(len(pairs), np.int64), 0
    k = max(ks)
    mult = np.array([int(rshift_round(m, k - kc)) if m else 0 for m, kc in pairs], np.int64)
    return mult, k
