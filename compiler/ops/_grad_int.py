"""Helpers shared by the integer backward rules (``backward_int8``) and the integer SGD update.

Contract of ``backward_int8(node, xs, ys, gys, need, p, rows=None) -> {position: Grad}`` (the
integer twin of ``backward_float``, same positions, shapes and ``rows`` slicing):
  * ``xs``: the int8 forward operands (int8 activations, int8 weights, int32 bias);
  * ``ys``: the int8 forward outputs (fused activation masks are read from them);
  * ``gys``: :class:`Grad` per output, gradient w.r.t. the REAL output value;
  * results: Grads w.r.t. the REAL inputs; a weight gradient is w.r.t. ``W = s_w[c] * (w_q - zp_w)``,
    a bias gradient w.r.t. ``b = s_b[c] * b_q``; every mantissa int16 (``gradfmt.GRAD_BITS``);
  * ``p``: ``prepare_int8_backward(node, graph)`` = the op's forward ``prepare`` dict plus its
    ``prepare_backward`` dict (host constants, all Python ints / int64 arrays).
Everything reachable from ``backward_int8`` is integer-only; accumulators are checked to fit int32
(``gradfmt.check_acc``). ``p["grad_bits"]`` / ``p["acc_bits"]`` (optional) override the widths
for measurements only.

Window geometry and tap slices are those of ``_grad.taps``; padded buffers are int64 zeros.
"""
from __future__ import annotations

import numpy as np

from .. import fixedpoint as fp
from ..gradfmt import (ACC_BITS, GRAD_BITS, Grad, align_multipliers, check_acc, headroom, host_only, max_abs,
                       mul_q31, normalize31, q31, renormalize, rshift_round)


def bits_of(p: dict) -> tuple[int, int]:
    return int(p.get("grad_bits", GRAD_BITS)), int(p.get("acc_bits", ACC_BITS))


@host_only
def prepare_int8_backward(node, graph) -> dict:
    """Forward ``prepare`` constants + ``prepare_backward`` constants of ``node`` (host)."""
    from . import registry

    op = registry.get(node.op)
    p = dict(op.prepare(node, graph))
    pb = getattr(op, "prepare_backward", None)
    if pb is not None:
        p.update(pb(node, graph))
    return p


@host_only
def operand_bits(lo: int, hi: int) -> int:
    """Smallest ``b`` with ``|v| <= 2^b`` for every integer ``v`` in ``[lo, hi]`` (the headroom
    bound: ``|m| < 2^bitlen(m)`` and ``|v| <= 2^b`` give ``|m * v| < 2^(bitlen(m) + b)``)."""
    top = max(abs(int(lo)), abs(int(hi)))
    return (top - 1).bit_length() if top else 0


@host_only
def linear_prepare_backward(node, graph, w_axis: int) -> dict:
    """Host constants of conv2d / depthwise_conv2d / fully_connected backward:

    ``x_mult, x_shift``  s_x as Q31 (weight gradient: dW = s_x * sum g * (x - zp_x));
    ``w_mult [C], w_shift`` s_w[c] aligned to one exponent (input gradient: g * s_w[c] per output
                         channel before the sum over output channels);
    ``x_bits``            ``max|x - zp_x| <= 2^x_bits`` over int8 x (weight-gradient MAC headroom);
    ``w_bits``            ``max|w - zp_w| <= 2^w_bits`` over int8 w (7 for zp_w = 0; input-gradient
                          MAC headroom).
    """
    x = graph.tensors[node.inputs[0]]
    w = graph.tensors[node.inputs[1]]
    cout = w.shape[w_axis]
    s_w = w.quant.scale.astype(np.float64)
    if s_w.size == 1:
        s_w = np.full(cout, s_w[0])
    w_mult, w_shift = align_multipliers(s_w)
    x_mult, x_shift = q31(np.float64(x.quant.s))
    w_zp = int(w.quant.zero_point[0]) if w.quant.scale.size == 1 else 0
    return {"x_mult": x_mult, "x_shift": x_shift, "w_mult": w_mult, "w_shift": w_shift,
            "x_bits": operand_bits(-128 - x.quant.zp, 127 - x.quant.zp),
            "w_bits": operand_bits(-128 - w_zp, 127 - w_zp)}


# ---------------------------------------------------------------------------------------------
# Device-side pieces (integer only)
# ---------------------------------------------------------------------------------------------
def act_mask(gy: Grad, y: np.ndarray, act: str, p: dict) -> Grad:
    """dL/dz from dL/dy for a fused/standalone activation, mask from the int8 output:
    relu passes ``y_q > act_min``; relu6 ``act_min < y_q < act_max``; none passes everything."""
    if act == "none":
        return gy
    y = np.asarray(y)
    if act == "relu":
        keep = y > p["act_min"]
    elif act == "relu6":
        keep = (y > p["act_min"]) & (y < p["act_max"])
    else:
        raise ValueError(f"unknown fused activation {act!r}")
    return Grad(np.where(keep, gy.m, 0), gy.e)


def sum_to(g: Grad, axes: tuple[int, ...], p: dict, what: str, shape=None) -> Grad:
    """Sum the mantissa over ``axes`` (int32 accumulator, headroom-shifted first), renormalise;
    reshape to ``shape`` when given."""
    bits, acc_bits = bits_of(p)
    fan = int(np.prod([g.m.shape[a] for a in axes], dtype=np.int64)) if axes else 1
    h = headroom(g, 0, fan, acc_bits)
    acc = check_acc(h.m.sum(axis=axes) if axes else h.m, what, acc_bits)
    if shape is not None:
        acc = acc.reshape(shape)
    return renormalize(acc, h.e, bits)


def reduce_to(g: Grad, shape: tuple[int, ...], p: dict) -> Grad:
    """Integer ``_grad.reduce_to``: sum a broadcast result's gradient back to ``shape``."""
    shape = tuple(shape)
    lead = g.m.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + a for a, d in enumerate(shape)
                                      if d == 1 and g.m.shape[lead + a] != 1)
    if not axes:
        return Grad(g.m.reshape(shape).copy(), g.e)
    return sum_to(g, axes, p, "add reduce", shape)


def scale_channels(g: Grad, mult: np.ndarray, shift: int, p: dict) -> Grad:
    """g * s[c] along the last axis (``mult``/``shift`` from ``align_multipliers``)."""
    bits, _ = bits_of(p)
    return mul_q31(g.m, g.e, mult, shift, bits)


def padded_zeros_int(x_shape: tuple[int, ...], pads: tuple[int, int, int, int]) -> np.ndarray:
    t, l, b, r = pads
    n, h, w, c = x_shape
    return np.zeros((n, h + t + b, w + l + r, c), dtype=np.int64)


def crop_int(gxp: np.ndarray, pads: tuple[int, int, int, int], x_shape: tuple[int, ...]) -> np.ndarray:
    t, l = pads[0], pads[1]
    return np.ascontiguousarray(gxp[:, t:t + x_shape[1], l:l + x_shape[2], :])


def pad_centered(x: np.ndarray, zp: int, pads: tuple[int, int, int, int]) -> np.ndarray:
    """int8 x -> int64 ``x - zp`` (real x / s_x), zero-padded by (top, left, bottom, right)."""
    t, l, b, r = pads
    xc = np.asarray(x, dtype=np.int64) - int(zp)
    n, h, w, c = xc.shape
    out = np.zeros((n, h + t + b, w + l + r, c), dtype=np.int64)
    out[:, t:t + h, l:l + w, :] = xc
    return out


# ---------------------------------------------------------------------------------------------
# Integer SGD update (QAS on/off), two appliers
# ---------------------------------------------------------------------------------------------
#: fractional bits of an update delta in quantized units (int32, Q15.16)
DELTA_FRAC_BITS = 16
#: fractional bits of the int16 master copy (w_q * 2^8; |w_q| <= 127 -> |master| <= 32512)
MASTER_FRAC_BITS = 8


@host_only
def prepare_update(scales: np.ndarray, lr: float, qas: bool = True,
                   frac_bits: int = DELTA_FRAC_BITS) -> dict:
    """Host constants of ``sgd_delta`` for one trainable slice.

    ``scales``: per output channel of the slice, the scale of the quantized parameter: ``s_w[c]``
    for a weight, ``s_b[c] = s_x * s_w[c]`` for a bias (one value broadcasts).
    QAS on:  delta_q[c] = -lr * g_real[c] / s[c]   (G_Wbar * s^-2 with G_Wbar = g_real * s; the same
             step as float SGD on the real value);
    QAS off: delta_q[c] = -lr * g_real[c] * s[c]   (-lr * G_Wbar, plain SGD on the integer value).
    Returns ``mult [C], shift`` (the per-channel factor 1/s or s, aligned), ``lr_mult, lr_shift``
    (lr as Q31; replaceable per step for an lr schedule) and ``frac_bits``.
    """
    s = np.asarray(scales, dtype=np.float64).ravel()
    if np.any(s <= 0) or lr <= 0:
        raise ValueError("prepare_update: scales and lr must be > 0")
    mult, shift = align_multipliers(1.0 / s if qas else s)
    lr_mult, lr_shift = q31(lr)
    return {"mult": mult, "shift": shift, "lr_mult": lr_mult, "lr_shift": lr_shift,
            "frac_bits": int(frac_bits)}


def sgd_delta(g: Grad, p: dict, axis: int = 0) -> np.ndarray:
    """Update of a quantized parameter slice in fixed point: int32 values with ``p["frac_bits"]``
    fractional bits, ``delta_fx = round(-lr * f[c] * g_real * 2^F)``, ``f`` = 1/s (QAS) or s.

    ``g``: gradient w.r.t. the real parameter (Grad, shaped like the slice); ``axis``: the
    output-channel axis (0 for conv2d/fully_connected weights and biases, 3 for depthwise).
    Saturates at +-(2^31 - 1) (a step of 2^(31-F) quantization steps or more).
    """
    m = g.m
    if max_abs(m) == 0:
        return np.zeros(m.shape, np.int64)
    a, lsh = normalize31(m)
    shape = [1] * m.ndim
    shape[axis] = -1
    mult = np.asarray(p["mult"], dtype=np.int64).reshape(shape)
    t = fp.srdhm(fp.srdhm(a, mult), p["lr_mult"])  # a * f[c] * lr = t * 2^(shift + lr_shift)
    total = int(p["shift"]) + int(p["lr_shift"]) + g.e - lsh + int(p["frac_bits"])
    if total >= 0:
        d = np.clip(t << min(total, 31), -fp.INT32_MAX, fp.INT32_MAX)
    else:
        d = rshift_round(t, -total)
    return -d


def xorshift32(state: int) -> int:
    """One step of Marsaglia's xorshift32 on a uint32 state (never 0):
    ``x ^= x << 13; x ^= x >> 17; x ^= x << 5`` (all mod 2^32)."""
    x = int(state) & 0xFFFFFFFF
    x ^= (x << 13) & 0xFFFFFFFF
    x ^= x >> 17
    x ^= (x << 5) & 0xFFFFFFFF
    return x


def apply_stochastic_round(w_q: np.ndarray, delta_fx: np.ndarray, frac_bits: int, rng_state: int,
                           lo: int = -127, hi: int = 127) -> tuple[np.ndarray, int]:
    """``w + floor(delta / 2^F + u)``, u uniform in [0, 1) from xorshift32, clamped to [lo, hi].

    One PRNG step per element in C (row-major) order; ``u = (x >> (32 - F)) / 2^F`` (the top F
    bits of the new state). Computed as ``q = delta >> F`` (floor), ``carry = ((delta & (2^F - 1))
    + r) >> F``, so nothing overflows int32. E[result] = w + delta / 2^F before clamping.
    Returns (new values in w_q's dtype, new PRNG state). Requires 1 <= F <= 31, state != 0.
    """
    if not 1 <= frac_bits <= 31:
        raise ValueError("apply_stochastic_round: frac_bits must be in [1, 31]")
    if int(rng_state) & 0xFFFFFFFF == 0:
        raise ValueError("apply_stochastic_round: xorshift32 state must be non-zero")
    d = np.asarray(delta_fx, dtype=np.int64).ravel()
    r = np.empty(d.shape, np.int64)
    x = int(rng_state)
    for i in range(d.size):
        x = xorshift32(x)
        r[i] = x >> (32 - frac_bits)
    q = d >> frac_bits
    carry = ((d & ((1 << frac_bits) - 1)) + r) >> frac_bits
    w = np.asarray(w_q)
    new = np.clip(w.astype(np.int64).ravel() + q + carry, lo, hi).reshape(w.shape)
    return new.astype(w.dtype), x


def init_master(w_q: np.ndarray, frac_bits: int = MASTER_FRAC_BITS) -> np.ndarray:
    """int16 master copy of an int8 slice: ``w_q << F_master`` (int64 array of int16 values)."""
    return np.asarray(w_q, dtype=np.int64) << frac_bits


def apply_master_copy(master: np.ndarray, delta_fx: np.ndarray, frac_bits_master: int = MASTER_FRAC_BITS,
                      frac_bits: int = DELTA_FRAC_BITS, lo: int = -127,
                      hi: int = 127) -> tuple[np.ndarray, np.ndarray]:
    """Accumulate ``delta_fx`` (F fractional bits) into the master copy (F_master fractional bits,
    ``RDBPOT(delta, F - F_master)``), clamp to ``[lo, hi] * 2^F_master`` (int16 for F_master <= 8),
    and return ``(new master, int8 weights = RDBPOT(master, F_master))``."""
    d = np.asarray(delta_fx, dtype=np.int64)
    if frac_bits >= frac_bits_master:
        d = rshift_round(d, frac_bits - frac_bits_master)
    else:
        d = d << (frac_bits_master - frac_bits)
    m = np.clip(np.asarray(master, dtype=np.int64) + d, lo << frac_bits_master, hi << frac_bits_master)
    w = fp.rounding_divide_by_pot(m, frac_bits_master)
    return m, w.astype(np.int8)
