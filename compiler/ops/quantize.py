"""Boundary conversions: quantize (float32 -> int8) and dequantize (int8 -> float32).

These are the only ops whose int8 reference touches float: they sit at the graph boundary, where
the host converts samples before they reach the integer core.
    quantize:   q = clamp(round_half_away(x / s) + zp, -128, 127)   (x / s in float32)
    dequantize: x = float32(s) * float32(q - zp)
"""
from __future__ import annotations

import numpy as np

from ..fixedpoint import tflite_round
from ._grad import check_need
from ._grad_int import Grad
from .registry import Op, register


class _StraightThrough(Op):
    """Boundary conversions pass gradients through unchanged (w.r.t. the real value)."""

    @classmethod
    def backward_float(cls, node, xs, ys, gys, need, rows=None):
        """Straight-through: {0: gy} (rounding and clamping are treated as identity)."""
        need = check_need(cls.name, need, (0,))
        return {0: np.asarray(gys[0], dtype=np.float64).copy()} if 0 in need else {}

    @classmethod
    def backward_int8(cls, node, xs, ys, gys, need, p, rows=None):
        """Straight-through, integer: {0: gy unchanged (a Grad w.r.t. the real value)}."""
        need = check_need(cls.name, need, (0,))
        return {0: Grad(gys[0].m.copy(), gys[0].e)} if 0 in need else {}


@register
class Quantize(_StraightThrough):
    name = "quantize"
    differentiable = True

    @classmethod
    def infer(cls, node, ins):
        return [(ins[0].shape, "int8")]

    @classmethod
    def forward_float(cls, node, xs):
        return [xs[0]]

    @classmethod
    def prepare(cls, node, graph):
        q = graph.tensors[node.outputs[0]].quant
        return {"scale": np.float32(q.s), "zp": q.zp}

    @classmethod
    def forward_int8(cls, node, xs, p):
        return [quantize_array(xs[0], p["scale"], p["zp"])]


@register
class Dequantize(_StraightThrough):
    name = "dequantize"
    differentiable = True

    @classmethod
    def infer(cls, node, ins):
        return [(ins[0].shape, "float32")]

    @classmethod
    def forward_float(cls, node, xs):
        return [xs[0]]

    @classmethod
    def prepare(cls, node, graph):
        q = graph.tensors[node.inputs[0]].quant
        return {"scale": np.float32(q.s), "zp": q.zp}

    @classmethod
    def forward_int8(cls, node, xs, p):
        return [dequantize_array(xs[0], p["scale"], p["zp"])]


def quantize_array(x: np.ndarray, scale, zero_point) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    q = tflite_round(x / np.float32(scale)).astype(np.int64) + int(zero_point)
    return np.clip(q, -128, 127).astype(np.int8)


def dequantize_array(q: np.ndarray, scale, zero_point) -> np.ndarray:
    return (np.float32(scale) * (q.astype(np.int64) - int(zero_point)).astype(np.float32)).astype(np.float32)
