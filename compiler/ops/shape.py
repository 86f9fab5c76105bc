"""Data-movement ops: reshape, pad.

reshape: ``shape`` attribute (static, fully resolved); int8 values and parameters pass through.
pad:     ``pads`` attribute, per axis (before, after); pads with ``value`` in float and with the
         input zero point in int8 (TFLite PAD on int8 pads with the zero point).
"""
from __future__ import annotations

import numpy as np

from ._grad import check_need
from ._grad_int import Grad
from .registry import Op, register


@register
class Reshape(Op):
    name = "reshape"
    differentiable = True

    @classmethod
    def infer(cls, node, ins):
        shape = tuple(int(d) for d in node.attrs["shape"])
        if shape[0] != ins[0].shape[0]:
            raise ValueError(f"node {node.name!r} (reshape): the batch axis must be kept "
                             f"({ins[0].shape} -> {shape})")
        if int(np.prod(shape)) != ins[0].size:
            raise ValueError(f"node {node.name!r} (reshape): cannot reshape {ins[0].shape} to {shape}")
        return [(shape, ins[0].dtype)]

    @classmethod
    def check(cls, node, graph):
        x, y = graph.tensors[node.inputs[0]], graph.tensors[node.outputs[0]]
        if x.dtype == "int8" and x.quant != y.quant:
            raise ValueError(f"node {node.name!r} (reshape): int8 reshape must keep quantization")

    @classmethod
    def forward_float(cls, node, xs):
        return [_reshape(node, xs[0])]

    @classmethod
    def forward_int8(cls, node, xs, p):
        return [_reshape(node, xs[0])]

    @classmethod
    def backward_float(cls, node, xs, ys, gys, need, rows=None):
        """gy shaped like y -> {0: gy reshaped to x's shape}."""
        need = check_need(cls.name, need, (0,))
        if 0 not in need:
            return {}
        return {0: np.asarray(gys[0], dtype=np.float64).reshape(np.shape(xs[0]))}

    @classmethod
    def backward_int8(cls, node, xs, ys, gys, need, p, rows=None):
        """Integer twin of ``backward_float``: {0: gy's mantissa reshaped to x's shape, same exponent}."""
        need = check_need(cls.name, need, (0,))
        if 0 not in need:
            return {}
        return {0: Grad(gys[0].m.reshape(np.shape(xs[0])).copy(), gys[0].e)}


def _reshape(node, x):
    """Reshape keeping the runtime batch size (the IR's batch axis is dimension 0)."""
    return x.reshape((x.shape[0],) + tuple(node.attrs["shape"][1:]))


@register
class Pad(Op):
    name = "pad"
    differentiable = True

    @classmethod
    def infer(cls, node, ins):
        pads = node.attrs["pads"]
        x = ins[0]
        if len(pads) != len(x.shape) or any(min(p) < 0 for p in pads) or tuple(pads[0]) != (0, 0):
            raise ValueError(f"node {node.name!r} (pad): need one non-negative (before, after) per axis "
                             f"of {x.shape}, got {pads} (the batch axis cannot be padded)")
        return [(tuple(d + a + b for d, (a, b) in zip(x.shape, pads)), x.dtype)]

    @classmethod
    def forward_float(cls, node, xs):
        return [np.pad(xs[0], node.attrs["pads"], constant_values=node.attrs.get("value", 0.0))]

    @classmethod
    def prepare(cls, node, graph):
        return {"value": graph.tensors[node.outputs[0]].quant.zp}

    @classmethod
    def forward_int8(cls, node, xs, p):
        return [np.pad(xs[0], node.attrs["pads"], constant_values=p["value"]).astype(np.int8)]

    @classmethod
    def backward_float(cls, node, xs, ys, gys, need, rows=None):
        """gy shaped like y -> {0: gy with the padded border cut off (shaped like x)}."""
        need = check_need(cls.name, need, (0,))
        if 0 not in need:
            return {}
        idx = tuple(slice(a, a + d) for (a, _b), d in zip(node.attrs["pads"], np.shape(xs[0])))
        return {0: np.asarray(gys[0], dtype=np.float64)[idx].copy()}

    @classmethod
    def backward_int8(cls, node, xs, ys, gys, need, p, rows=None):
        """Integer twin of ``backward_float``: {0: gy's mantissa with the border cut off, same exponent}."""
        need = check_need(cls.name, need, (0,))
        if 0 not in need:
            return {}
        idx = tuple(slice(a, a + d) for (a, _b), d in zip(node.attrs["pads"], np.shape(xs[0])))
        return {0: Grad(gys[0].m[idx].copy(), gys[0].e)}
