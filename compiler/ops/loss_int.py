"""Integer softmax cross-entropy: the loss step of the no-FPU training program.

Plain functions (not IR ops). Host prepares constants (float64 allowed, ``prepare_*``); the
device part, :func:`softmax_cross_entropy_int`, is integer only and uses the gemmlowp fixed-point
exp / reciprocal of the int8 softmax (``fixedpoint.exp_on_negative_values``, ``get_reciprocal``).

Logits come either as int8 (scale s, zero point zp; ``prepare_softmax_ce_int8``) or as the int32
accumulators of the last layer (``acc[c]`` at scale ``s_acc[c] = s_x * s_w[c]``, bias included;
``prepare_softmax_ce_acc``). Per row n, both give d[c] = z[c] - max z <= 0 in Q5.26:

  int8:  d = SRDHM((x - max x) << (ls - 1), M) << 1     (M, ls) = QM(s * 2^26) as SOFTMAX; one
                                                 bit less of left shift so that the radius
                                                 fits int32 (SOFTMAX's radius is up to 2x smaller)
         valid where x - max x >= diff_min = -floor(31 / s)
  int32: z = MBQM(acc[c], M_c, k_c)              Q(31-F).F logits, F = the largest value with
                                                 s_acc[c] * 2^F < 1 for all c (<= 26): right
                                                 shifts only, so z never wraps;
         u = zmax - z                            uint32 (exact: 0 <= u < 2^32);
         valid where u <= 31 * 2^F;  d = -(u << (26 - F))
  e[c] = exp_on_negative_values(d, 5)            Q0.31, 0 where not valid (exp(-31) ~ 3e-14)
  S    = sum_c RDBPOT(e[c], 12)                  Q12.19 (C <= 4096 classes)
  R, k = GetReciprocal(S, 12)                    1/S = R * 2^(-31 - k)
  p[c] = RDBPOT(SRDHM(R, e[c]), k)               Q0.31 probability in [0, 2^31]

Outputs (:class:`LossInt`):
  grad     Grad of dL/dlogits (real logits), L = mean over the batch: int32 Q0.31
           g[c] = p[c] (c != t), g[t] = -min(sum_{c != t} p[c], 2^31 - 1) (1 - p[t] taken from
           the other classes, so a confident sample keeps a relative-precision gradient),
           renormalised to int16 (e = -15 when some probability is >= 1/2, lower otherwise),
           then times 1/N (exponent -log2 N for a power-of-two N, else one Q31 multiply).
  loss     int32 per sample, Q15.16 nats: -ln p[t] = ln S - d[t]; ln S = ln2 * log2 S with log2 S
           by normalisation (clz) and 16 squarings (one fractional bit each, SRDHM in Q2.29);
           ``d[t]`` below -31 (invalid) counts as -31. ``loss_mean``: (sum + N/2) // N, Q15.16.
  correct  bool per sample: first argmax of the int8 logits (or of z) == label.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import fixedpoint as fp
from ..gradfmt import GRAD_BITS, Grad, host_only, mul_q31, q31, renormalize

_DIFF_INTEGER_BITS = 5  # Q5.26 differences, as the int8 softmax
_ACC_INTEGER_BITS = 12  # Q12.19 sum of exponentials
LOSS_FRAC_BITS = 16  # loss values are Q15.16 nats
LN2_Q31 = 1488522236  # round(ln 2 * 2^31)
_RADIUS = 31  # differences below -31 (real) give exp = 0


@dataclass
class LossInt:
    grad: Grad  # dL/dlogits, real logits, [N, C]
    loss: np.ndarray  # int64 [N] holding int32 Q15.16 per-sample -ln p[label]
    loss_mean: int  # Q15.16 batch mean
    correct: np.ndarray  # bool [N]
    prob: np.ndarray  # int64 [N, C], Q0.31 probabilities


@host_only
def prepare_softmax_ce_int8(scale: float, zero_point: int, batch: int) -> dict:
    """Host constants for int8 logits (``real = scale * (x - zero_point)``), batch size ``batch``."""
    s = float(np.float32(scale))
    mult, ls = fp.quantize_multiplier(s * float(1 << (31 - _DIFF_INTEGER_BITS)))
    if not 1 <= ls <= 31:
        raise ValueError(f"softmax cross-entropy: logit scale {scale} outside [2^-26, 16)")
    radius = min(math.floor(_RADIUS / s), 255)
    # |diff << (ls - 1)| < 2^31: 2^(ls-1) = s * 2^56 / M with M >= 2^30, so radius * 2^(ls-1) <= 31 * 2^26
    assert radius << (ls - 1) < 1 << 31
    p = {"kind": "int8", "mult": mult, "left_shift": ls, "diff_min": -radius}
    p.update(_prepare_batch(batch))
    return p


@host_only
def prepare_softmax_ce_acc(acc_scales: np.ndarray, batch: int) -> dict:
    """Host constants for int32 accumulator logits (``real[c] = acc_scales[c] * acc[c]``)."""
    s = np.asarray(acc_scales, dtype=np.float64).ravel()
    if np.any(s <= 0):
        raise ValueError("softmax cross-entropy: accumulator scales must be > 0")
    frac_bits = min(-math.frexp(float(s.max()))[1], 31 - _DIFF_INTEGER_BITS)  # s_max * 2^F < 1
    mult, shift = fp.quantize_multiplier_array(s * math.ldexp(1.0, frac_bits))
    if np.any(shift > 0):
        raise AssertionError("softmax cross-entropy: accumulator multipliers must be < 1")
    p = {"kind": "acc", "mult": mult, "shift": shift, "frac_bits": frac_bits,
         "radius": _RADIUS << frac_bits}
    p.update(_prepare_batch(batch))
    return p


@host_only
def _prepare_batch(batch: int) -> dict:
    batch = int(batch)
    if batch < 1:
        raise ValueError("softmax cross-entropy: batch must be >= 1")
    m, k = q31(1.0 / batch)
    return {"batch": batch, "inv_batch_mult": m, "inv_batch_shift": k,
            "batch_log2": batch.bit_length() - 1 if batch & (batch - 1) == 0 else -1}


def _differences(logits: np.ndarray, p: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(d Q5.26 <= 0, valid mask, values whose first argmax is the prediction)."""
    if p["kind"] == "int8":
        x = np.asarray(logits).astype(np.int64)
        diff = x - x.max(axis=1, keepdims=True)
        valid = diff >= p["diff_min"]
        d = fp.srdhm(np.where(valid, diff, 0) << (p["left_shift"] - 1), p["mult"]) << 1
        return d, valid, x
    acc = np.asarray(logits).astype(np.int64)
    z = fp.multiply_by_quantized_multiplier(acc, p["mult"], p["shift"])  # Q(31-F).F
    u = z.max(axis=1, keepdims=True) - z  # uint32 in C
    valid = u <= p["radius"]
    d = -(np.where(valid, u, 0) << (31 - _DIFF_INTEGER_BITS - p["frac_bits"]))
    return d, valid, z


def log2_q16(x: np.ndarray, frac_bits_in: int) -> np.ndarray:
    """log2 of positive int32 ``x`` in Q(31-frac_bits_in).frac_bits_in, as int32 Q15.16.

    Normalise ``x`` to y in [1, 2) (Q1.30, via the bit length), integer part = bitlen - 1 -
    frac_bits_in; then 16 times: y = SRDHM(y, y) (y^2 in Q2.29); bit = y >= 2 (raw >= 2^30); y =
    raw if bit else raw << 1. Fractional bits are truncated (error < 2^-16 plus SRDHM rounding)."""
    x = np.asarray(x, dtype=np.int64)
    n = 32 - fp.count_leading_zeros_u32(x)  # bit length, <= 31 for positive int32
    y = x << (31 - n)  # Q1.30 in [2^30, 2^31)
    frac = np.zeros(x.shape, np.int64)
    for _ in range(LOSS_FRAC_BITS):
        sq = fp.srdhm(y, y)
        bit = sq >= (1 << 30)
        frac = (frac << 1) | bit
        y = np.where(bit, sq, sq << 1)
    return ((n - 1 - frac_bits_in) << LOSS_FRAC_BITS) + frac


def softmax_cross_entropy_int(logits: np.ndarray, labels: np.ndarray, p: dict,
                              bits: int = GRAD_BITS) -> LossInt:
    """Integer softmax cross-entropy of ``logits`` [N, C] (int8 or int32 per ``p``) and integer
    ``labels`` [N]. See the module docstring for every format. ``bits`` is the gradient mantissa
    width (16; other values for measurements)."""
    t = np.asarray(labels).astype(np.int64)
    n, c = np.shape(logits)
    if t.shape != (n,) or n != p["batch"]:
        raise ValueError(f"softmax cross-entropy: {n} logit rows, {t.shape} labels, prepared for batch {p['batch']}")
    if np.any((t < 0) | (t >= c)):
        raise ValueError(f"softmax cross-entropy: labels outside [0, {c})")
    d, valid, score = _differences(logits, p)
    e = np.where(valid, fp.exp_on_negative_values(d, _DIFF_INTEGER_BITS), 0)  # Q0.31
    s = fp.wrap_i32(fp.saturating_rounding_multiply_by_pot(e, -_ACC_INTEGER_BITS).sum(axis=1, keepdims=True))
    recip, over = fp.get_reciprocal(s, _ACC_INTEGER_BITS)
    prob = fp.rounding_divide_by_pot(fp.srdhm(recip, e), over)  # Q0.31
    rows = np.arange(n)
    is_t = np.zeros((n, c), dtype=bool)
    is_t[rows, t] = True
    others = np.minimum(np.where(is_t, 0, prob).sum(axis=1), fp.INT32_MAX)
    g = renormalize(np.where(is_t, -others[:, None], prob), -31, bits)
    if p["batch"] > 1:
        if p["batch_log2"] >= 0:
            g = Grad(g.m, g.e - p["batch_log2"])
        else:
            g = mul_q31(g.m, g.e, p["inv_batch_mult"], p["inv_batch_shift"], bits)
    ln_s = fp.srdhm(log2_q16(s[:, 0], 31 - _ACC_INTEGER_BITS), LN2_Q31)  # Q15.16
    d_t = np.where(valid[rows, t], d[rows, t], -(_RADIUS << (31 - _DIFF_INTEGER_BITS)))
    loss = ln_s + fp.rounding_divide_by_pot(-d_t, 31 - _DIFF_INTEGER_BITS - LOSS_FRAC_BITS)
    loss_mean = int((loss.sum() + n // 2) // n)
    correct = score.argmax(axis=1) == t
    return LossInt(g, loss, loss_mean, correct, prob)
