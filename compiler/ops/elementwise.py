"""Elementwise ops: add (with fused act), relu, relu6.

add int8 (TFLite reference Add, int8 path):
    left_shift = 20; twice_max = 2 * max(s_a, s_b)
    M_a = s_a / twice_max, M_b = s_b / twice_max      (QuantizeMultiplierSmallerThanOneExp)
    M_y = twice_max / (2^20 * s_y)
    a' = MBQMSmallerThanOneExp((a - zp_a) << 20, M_a);  b' likewise
    y  = clamp(MBQMSmallerThanOneExp(a' + b', M_y) + zp_y, act_min, act_max)
relu / relu6 int8 (TFLite QuantizedReluX): M = float32(s_x / s_y) (the division is float32), then
    y = clamp(MBQM(x - zp_x, M) + zp_y, act_min, act_max).
"""
from __future__ import annotations

import numpy as np

from .. import fixedpoint as fp
from ._common import apply_act_float, check_act
from ._grad import act_grad, check_need, reduce_to
from ._grad_int import act_mask, reduce_to as reduce_to_int
from .registry import Op, register


@register
class Add(Op):
    name = "add"
    differentiable = True

    @classmethod
    def infer(cls, node, ins):
        a, b = ins
        try:
            shape = np.broadcast_shapes(a.shape, b.shape)
        except ValueError:
            raise ValueError(f"node {node.name!r} (add): shapes {a.shape} and {b.shape} do not broadcast") from None
        return [(tuple(shape), a.dtype)]

    @classmethod
    def check(cls, node, graph):
        super().check(node, graph)
        check_act(node)

    @classmethod
    def forward_float(cls, node, xs):
        y = xs[0].astype(np.float32) + xs[1].astype(np.float32)
        return [apply_act_float(y, node.attrs.get("act", "none")).astype(np.float32)]

    @classmethod
    def prepare(cls, node, graph):
        qa = graph.tensors[node.inputs[0]].quant
        qb = graph.tensors[node.inputs[1]].quant
        qy = graph.tensors[node.outputs[0]].quant
        left_shift = 20
        twice_max = np.float64(2 * max(np.float32(qa.s), np.float32(qb.s)))
        ma, sa = fp.quantize_multiplier_smaller_than_one_exp(np.float64(qa.s) / twice_max)
        mb, sb = fp.quantize_multiplier_smaller_than_one_exp(np.float64(qb.s) / twice_max)
        my, sy = fp.quantize_multiplier_smaller_than_one_exp(twice_max / ((1 << left_shift) * np.float64(qy.s)))
        lo, hi = fp.activation_range_int8(node.attrs.get("act", "none"), qy.s, qy.zp)
        return dict(left_shift=left_shift, a_zp=qa.zp, b_zp=qb.zp, out_zp=qy.zp,
                    a_mult=ma, a_shift=sa, b_mult=mb, b_shift=sb, out_mult=my, out_shift=sy,
                    act_min=lo, act_max=hi)

    @classmethod
    def forward_int8(cls, node, xs, p):
        a = (xs[0].astype(np.int64) - p["a_zp"]) << p["left_shift"]
        b = (xs[1].astype(np.int64) - p["b_zp"]) << p["left_shift"]
        a = fp.multiply_by_quantized_multiplier_smaller_than_one_exp(a, p["a_mult"], p["a_shift"])
        b = fp.multiply_by_quantized_multiplier_smaller_than_one_exp(b, p["b_mult"], p["b_shift"])
        y = fp.multiply_by_quantized_multiplier_smaller_than_one_exp(a + b, p["out_mult"], p["out_shift"])
        return [np.clip(y + p["out_zp"], p["act_min"], p["act_max"]).astype(np.int8)]

    @classmethod
    def macs(cls, node, graph):
        return graph.tensors[node.outputs[0]].size

    @classmethod
    def backward_float(cls, node, xs, ys, gys, need, rows=None):
        """a, b broadcast to y; gy shaped like y -> {0: ga shaped like a, 1: gb shaped like b}
        (each summed over the axes its operand was broadcast along)."""
        need = check_need(cls.name, need, (0, 1))
        g = act_grad(gys[0], ys[0], node.attrs.get("act", "none"))
        return {p: reduce_to(g, np.shape(xs[p])) for p in sorted(need)}

    @classmethod
    def backward_int8(cls, node, xs, ys, gys, need, p, rows=None):
        """Integer twin of ``backward_float``: gy Grad (real y) masked by act(y_q), then summed back
        to each operand's shape over its broadcast axes (int32 sum) -> {0: Grad real a, 1: Grad real b}.
        The int8 ADD computes real a + real b, so no scale enters."""
        need = check_need(cls.name, need, (0, 1))
        g = act_mask(gys[0], ys[0], node.attrs.get("act", "none"), p)
        return {k: reduce_to_int(g, np.shape(xs[k]), p) for k in sorted(need)}


class _Relu(Op):
    act = "relu"
    differentiable = True

    @classmethod
    def infer(cls, node, ins):
        return [(ins[0].shape, ins[0].dtype)]

    @classmethod
    def forward_float(cls, node, xs):
        return [apply_act_float(xs[0], cls.act).astype(np.float32)]

    @classmethod
    def prepare(cls, node, graph):
        qx = graph.tensors[node.inputs[0]].quant
        qy = graph.tensors[node.outputs[0]].quant
        # ReluPrepare: `double real_multiplier = input->params.scale / output->params.scale;` divides
        # the two float32 scales in float32 and only then widens to double.
        m, s = fp.quantize_multiplier(np.float64(np.float32(qx.s) / np.float32(qy.s)))
        lo, hi = fp.activation_range_int8(cls.act, qy.s, qy.zp)
        return dict(in_zp=qx.zp, out_zp=qy.zp, mult=m, shift=s, act_min=lo, act_max=hi)

    @classmethod
    def forward_int8(cls, node, xs, p):
        y = fp.multiply_by_quantized_multiplier(xs[0].astype(np.int64) - p["in_zp"], p["mult"], p["shift"])
        return [np.clip(y + p["out_zp"], p["act_min"], p["act_max"]).astype(np.int8)]

    @classmethod
    def backward_float(cls, node, xs, ys, gys, need, rows=None):
        """gy shaped like x -> {0: gy * mask(y)}; relu: y > 0, relu6: 0 < y < 6."""
        need = check_need(cls.name, need, (0,))
        return {0: act_grad(gys[0], ys[0], cls.act)} if 0 in need else {}

    @classmethod
    def backward_int8(cls, node, xs, ys, gys, need, p, rows=None):
        """Integer twin of ``backward_float``: {0: gy masked by y_q} (relu: y_q > act_min; relu6:
        act_min < y_q < act_max). Real y = real x where the mask passes, so no scale enters."""
        need = check_need(cls.name, need, (0,))
        return {0: act_mask(gys[0], ys[0], cls.act, p)} if 0 in need else {}


@register
class Relu(_Relu):
    name = "relu"
    act = "relu"


@register
class Relu6(_Relu):
    name = "relu6"
    act = "relu6"
