"""fully_connected: x [N, Cin], w [Cout, Cin], b [Cout] -> y [N, Cout] (fused act).

int8 (TFLite reference FullyConnected, per-tensor or per-channel weights):
    acc[c] = b[c] + sum_k (x[k] - zp_x) * w[c, k]
    y[c]   = clamp(MBQM(acc[c], M[c], shift[c]) + zp_y, act_min, act_max)
Per-tensor multipliers are computed as TFLite's GetQuantizedConvolutionMultipler does: the scale
product in float32, then the division in float64.
"""
from __future__ import annotations

import numpy as np

from .. import fixedpoint as fp
from ._common import apply_act_float, check_act, conv_prepare, requant_epilogue
from ._grad import act_grad, check_need, check_rows
from ._grad_int import (Grad, act_mask, bits_of, check_acc, headroom, linear_prepare_backward, mul_q31,
                        renormalize, scale_channels, sum_to)
from .registry import Op, register


@register
class FullyConnected(Op):
    name = "fully_connected"
    const_inputs = (1, 2)
    param_inputs = (1, 2)
    differentiable = True

    @classmethod
    def infer(cls, node, ins):
        x, w = ins[0], ins[1]
        if len(x.shape) != 2 or len(w.shape) != 2:
            raise ValueError(f"node {node.name!r} (fully_connected): expects [N, Cin] input and [Cout, Cin] "
                             f"weights, got {x.shape} and {w.shape}")
        if w.shape[1] != x.shape[1]:
            raise ValueError(f"node {node.name!r} (fully_connected): weights take {w.shape[1]} inputs, "
                             f"input has {x.shape[1]}")
        return [((x.shape[0], w.shape[0]), x.dtype)]

    @classmethod
    def check(cls, node, graph):
        super().check(node, graph)
        check_act(node)

    @classmethod
    def forward_float(cls, node, xs):
        x, w = xs[0].astype(np.float64), xs[1].astype(np.float64)
        y = x @ w.T
        if len(xs) > 2 and xs[2] is not None:
            y = y + xs[2]
        return [apply_act_float(y, node.attrs.get("act", "none")).astype(np.float32)]

    @classmethod
    def prepare(cls, node, graph):
        w = graph.tensors[node.inputs[1]]
        p = conv_prepare(node, graph, 0, w.shape[0])
        if w.quant.scale.size == 1:
            x = graph.tensors[node.inputs[0]]
            y = graph.tensors[node.outputs[0]]
            prod = np.float64(np.float32(x.quant.s) * np.float32(w.quant.s))
            m, s = fp.quantize_multiplier(prod / np.float64(y.quant.s))
            p["mult"] = np.full(w.shape[0], m, np.int64)
            p["shift"] = np.full(w.shape[0], s, np.int64)
        p["w_zp"] = int(w.quant.zero_point[0]) if w.quant.scale.size == 1 else 0
        return p

    @classmethod
    def forward_int8(cls, node, xs, p):
        x, w = xs[0].astype(np.int64), xs[1].astype(np.int64)
        acc = (x - p["in_zp"]) @ (w - p["w_zp"]).T
        if len(xs) > 2 and xs[2] is not None:
            acc = acc + xs[2].astype(np.int64)
        return [requant_epilogue(acc, p)]

    @classmethod
    def macs(cls, node, graph):
        w = graph.tensors[node.inputs[1]]
        n = graph.tensors[node.inputs[0]].shape[0]
        return int(n * w.shape[0] * w.shape[1])

    @classmethod
    def backward_float(cls, node, xs, ys, gys, need, rows=None):
        """x [N,Cin], w [Cout,Cin], gy [N,Cout] -> {0: gx [N,Cin], 1: gw [R,Cin], 2: gb [R]},
        R = rows or Cout (output channels [0, R))."""
        need = check_need(cls.name, need, (0, 1, 2))
        x, w = xs[0].astype(np.float64), xs[1].astype(np.float64)
        g = act_grad(gys[0], ys[0], node.attrs.get("act", "none"))
        r = check_rows(cls.name, rows, w.shape[0])
        out = {}
        if 0 in need:
            out[0] = g @ w
        if 1 in need:
            out[1] = g[:, :r].T @ x
        if 2 in need:
            out[2] = g[:, :r].sum(axis=0)
        return out

    @classmethod
    def prepare_backward(cls, node, graph):
        """Host constants of ``backward_int8`` (see ``_grad_int.linear_prepare_backward``)."""
        return linear_prepare_backward(node, graph, 0)

    @classmethod
    def backward_int8(cls, node, xs, ys, gys, need, p, rows=None):
        """Integer twin of ``backward_float``: x int8 [N,Cin], w int8 [Cout,Cin], y int8, gy Grad
        (real y) -> {0: Grad real x [N,Cin], 1: Grad real W [R,Cin], 2: Grad real b [R]}.

        b: sum_n gz; W: s_x * sum_n gz * (x - zp_x) (fan-in N); x: sum_o (gz * s_w[o]) * (w - zp_w)
        (fan-in Cout); int32 accumulators, headroom-shifted operands, renormalised results.
        """
        need = check_need(cls.name, need, (0, 1, 2))
        bits, acc_bits = bits_of(p)
        x, w = xs[0].astype(np.int64), xs[1].astype(np.int64)
        g = act_mask(gys[0], ys[0], node.attrs.get("act", "none"), p)
        r = check_rows(cls.name, rows, w.shape[0])
        out = {}
        if 0 in need:
            gs = headroom(scale_channels(g, p["w_mult"], p["w_shift"], p), p["w_bits"], w.shape[0], acc_bits)
            acc = check_acc(gs.m @ (w - p["w_zp"]), f"{node.name} dx", acc_bits)
            out[0] = renormalize(acc, gs.e, bits)
        if 1 in need:
            gr = headroom(Grad(g.m[:, :r], g.e), p["x_bits"], x.shape[0], acc_bits)
            acc = check_acc(gr.m.T @ (x - p["in_zp"]), f"{node.name} dW", acc_bits)
            out[1] = mul_q31(acc, gr.e, p["x_mult"], p["x_shift"], bits)
        if 2 in need:
            out[2] = sum_to(Grad(g.m[:, :r], g.e), (0,), p, f"{node.name} db")
        return out
