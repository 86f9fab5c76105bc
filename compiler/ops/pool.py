"""Pooling: max_pool2d, avg_pool2d (windowed, NHWC) and mean (global average over H, W).

Windowed pools take ``ksize`` (kh, kw), ``stride``, ``pad`` (top, left, bottom, right) and a fused
``act``. Padded positions are excluded from the window (max ignores them; avg divides by the number
of valid elements) unless avg_pool2d has ``count_include_pad``.

int8 (TFLite reference): input and output share quantization parameters, so no requantization:
    avg: acc = sum of valid x; y = round_half_away(acc / count); clamp(act)
    max: y = clamp(max of valid x, act)
mean int8 (TFLite reference_ops::QuantizedMeanOrSum, what the reference MEAN kernel runs for
int8 whatever keep_dims is): with n = H*W and (M, e) = QuantizeMultiplier(double(s_x) / double(s_y)),
the 1/n is folded into the multiplier on the host:
    k  = min(floor(log2 n), 32, 31 + e);  M' = (M << k) // n;  e' = e - k
    y  = clamp(MBQM(sum x - zp_x * n, M', e') + zp_y, -128, 127)
"""
from __future__ import annotations

import numpy as np

from .. import fixedpoint as fp
from ._common import apply_act_float, check_act, out_size, pad_nhwc, windows
from ._grad import act_grad, check_need, crop, padded_zeros, taps
from ._grad_int import (Grad, act_mask, bits_of, check_acc, crop_int, headroom, host_only, mul_q31, padded_zeros_int,
                        q31, renormalize)
from .registry import Op, register


def _geom(node, x_shape):
    kh, kw = node.attrs["ksize"]
    sh, sw = node.attrs.get("stride", (1, 1))
    t, l, b, r = node.attrs.get("pad", (0, 0, 0, 0))
    return (kh, kw), (sh, sw), (t, l, b, r), out_size(x_shape[1], kh, sh, 1, t, b), out_size(x_shape[2], kw, sw, 1, l, r)


class _Pool2D(Op):
    differentiable = True

    @classmethod
    def infer(cls, node, ins):
        x = ins[0]
        if len(x.shape) != 4:
            raise ValueError(f"node {node.name!r} ({node.op}): expects a 4-D NHWC input, got {x.shape}")
        (kh, kw), (sh, sw), pads, oh, ow = _geom(node, x.shape)
        if min(kh, kw, sh, sw) < 1 or min(pads) < 0 or oh < 1 or ow < 1:
            raise ValueError(f"node {node.name!r} ({node.op}): window {kh}x{kw}/{sh}x{sw} pads {pads} "
                             f"does not fit input {x.shape}")
        if max(pads[0], pads[2]) >= kh or max(pads[1], pads[3]) >= kw:
            raise ValueError(f"node {node.name!r} ({node.op}): padding must be smaller than the window")
        return [((x.shape[0], oh, ow, x.shape[3]), x.dtype)]

    @classmethod
    def check(cls, node, graph):
        super().check(node, graph)
        check_act(node)
        qx, qy = graph.tensors[node.inputs[0]].quant, graph.tensors[node.outputs[0]].quant
        if graph.tensors[node.inputs[0]].dtype == "int8" and qx != qy:
            raise ValueError(f"node {node.name!r} ({node.op}): int8 pooling needs equal input/output quantization")

    @classmethod
    def _windows(cls, node, x, fill):
        k, s, pads, oh, ow = _geom(node, x.shape)
        valid = pad_nhwc(np.ones((1,) + x.shape[1:3] + (1,), dtype=bool), pads, False)
        return (windows(pad_nhwc(x, pads, fill), k[0], k[1], s, (1, 1), oh, ow),
                windows(valid, k[0], k[1], s, (1, 1), oh, ow))

    @classmethod
    def prepare(cls, node, graph):
        q = graph.tensors[node.outputs[0]].quant
        lo, hi = fp.activation_range_int8(node.attrs.get("act", "none"), q.s, q.zp)
        return {"act_min": lo, "act_max": hi}

    @classmethod
    def macs(cls, node, graph):
        kh, kw = node.attrs["ksize"]
        return graph.tensors[node.outputs[0]].size * kh * kw


@register
class MaxPool2D(_Pool2D):
    name = "max_pool2d"

    @classmethod
    def forward_float(cls, node, xs):
        win, _ = cls._windows(node, xs[0].astype(np.float32), -np.inf)
        return [apply_act_float(win.max(axis=(3, 4)), node.attrs.get("act", "none")).astype(np.float32)]

    @classmethod
    def forward_int8(cls, node, xs, p):
        win, _ = cls._windows(node, xs[0].astype(np.int64), -(1 << 40))
        return [np.clip(win.max(axis=(3, 4)), p["act_min"], p["act_max"]).astype(np.int8)]

    @classmethod
    def backward_float(cls, node, xs, ys, gys, need, rows=None):
        """x [N,H,W,C], gy [N,OH,OW,C] -> {0: gx [N,H,W,C]}.

        Each window's gradient goes to one element: the first maximum in row-major (kh, kw) scan
        order over the padded window (padding is -inf, never chosen); overlapping windows add up.
        """
        need = check_need(cls.name, need, (0,))
        if 0 not in need:
            return {}
        x = xs[0].astype(np.float64)
        k, s, pads, oh, ow = _geom(node, x.shape)
        win, _ = cls._windows(node, x, -np.inf)  # [N,OH,OW,KH,KW,C]
        first = win.reshape(win.shape[:3] + (k[0] * k[1], x.shape[3])).argmax(axis=3)  # [N,OH,OW,C]
        g = act_grad(gys[0], ys[0], node.attrs.get("act", "none"))
        gxp = padded_zeros(x.shape, pads)
        for i, j, idx in taps(k[0], k[1], s, (1, 1), oh, ow):
            gxp[idx] += np.where(first == i * k[1] + j, g, 0.0)
        return {0: crop(gxp, pads, x.shape)}

    @classmethod
    def backward_int8(cls, node, xs, ys, gys, need, p, rows=None):
        """Integer twin of ``backward_float``: x int8 [N,H,W,C], y int8, gy Grad (real y) ->
        {0: Grad real x}. Each window's masked gy goes to its first int8 maximum (row-major scan;
        dequantization is monotonic, so it is the float rule's element); overlapping windows add
        in an int32 accumulator (fan-in ceil(KH/SH) * ceil(KW/SW))."""
        need = check_need(cls.name, need, (0,))
        if 0 not in need:
            return {}
        bits, acc_bits = bits_of(p)
        x = xs[0].astype(np.int64)
        k, s, pads, oh, ow = _geom(node, x.shape)
        win, _ = cls._windows(node, x, -(1 << 40))  # padding is never the maximum
        first = win.reshape(win.shape[:3] + (k[0] * k[1], x.shape[3])).argmax(axis=3)
        g = act_mask(gys[0], ys[0], node.attrs.get("act", "none"), p)
        g = headroom(g, 0, ((k[0] + s[0] - 1) // s[0]) * ((k[1] + s[1] - 1) // s[1]), acc_bits)
        gxp = padded_zeros_int(x.shape, pads)
        for i, j, idx in taps(k[0], k[1], s, (1, 1), oh, ow):
            gxp[idx] += np.where(first == i * k[1] + j, g.m, 0)
        return {0: renormalize(check_acc(crop_int(gxp, pads, x.shape), f"{node.name} dx", acc_bits), g.e, bits)}


@register
class AvgPool2D(_Pool2D):
    name = "avg_pool2d"

    @classmethod
    def _count(cls, node, valid):
        if node.attrs.get("count_include_pad", False):
            kh, kw = node.attrs["ksize"]
            return np.full(valid.shape[:3] + (1,), kh * kw, dtype=np.int64)
        return valid.sum(axis=(3, 4)).astype(np.int64)

    @classmethod
    def forward_float(cls, node, xs):
        win, valid = cls._windows(node, xs[0].astype(np.float64), 0.0)
        y = win.sum(axis=(3, 4)) / cls._count(node, valid)
        return [apply_act_float(y, node.attrs.get("act", "none")).astype(np.float32)]

    @classmethod
    def forward_int8(cls, node, xs, p):
        win, valid = cls._windows(node, xs[0].astype(np.int64), 0)
        acc = win.sum(axis=(3, 4))
        cnt = cls._count(node, valid)
        y = _div_round_half_away(acc, cnt)
        return [np.clip(y, p["act_min"], p["act_max"]).astype(np.int8)]

    @classmethod
    def backward_float(cls, node, xs, ys, gys, need, rows=None):
        """x [N,H,W,C], gy [N,OH,OW,C] -> {0: gx [N,H,W,C]}: each window spreads gy / count over
        its valid elements (count as in the forward: valid elements, or KH*KW with
        ``count_include_pad``; the share of padded positions is dropped)."""
        need = check_need(cls.name, need, (0,))
        if 0 not in need:
            return {}
        x_shape = np.shape(xs[0])
        k, s, pads, oh, ow = _geom(node, x_shape)
        _, valid = cls._windows(node, np.zeros((1,) + tuple(x_shape[1:3]) + (1,)), 0.0)
        g = act_grad(gys[0], ys[0], node.attrs.get("act", "none")) / cls._count(node, valid)
        gxp = padded_zeros(x_shape, pads)
        for _i, _j, idx in taps(k[0], k[1], s, (1, 1), oh, ow):
            gxp[idx] += g
        return {0: crop(gxp, pads, x_shape)}

    @classmethod
    @host_only
    def prepare_backward(cls, node, graph):
        """``inv_count[n] = round(2^30 / n)`` for n in [1, KH*KW] (index 0 unused): 1/n as a Q31
        multiplier with exponent 1, i.e. ``1/n = inv_count[n] * 2^(1 - 31)``."""
        kh, kw = node.attrs["ksize"]
        return {"inv_count": np.array([0] + [((1 << 31) + n) // (2 * n) for n in range(1, kh * kw + 1)],
                                      dtype=np.int64)}

    @classmethod
    def backward_int8(cls, node, xs, ys, gys, need, p, rows=None):
        """Integer twin of ``backward_float``: x int8 [N,H,W,C], y int8, gy Grad (real y) ->
        {0: Grad real x}: gy masked by act(y_q), times 1/count per window (``inv_count`` table,
        count as in the forward), spread over the window's valid taps in an int32 accumulator
        (fan-in ceil(KH/SH) * ceil(KW/SW)). Power-of-two counts scale exactly."""
        need = check_need(cls.name, need, (0,))
        if 0 not in need:
            return {}
        bits, acc_bits = bits_of(p)
        x_shape = np.shape(xs[0])
        k, s, pads, oh, ow = _geom(node, x_shape)
        _, valid = cls._windows(node, np.zeros((1,) + tuple(x_shape[1:3]) + (1,), dtype=np.int64), 0)
        cnt = cls._count(node, valid)  # [1,OH,OW,1]
        g = act_mask(gys[0], ys[0], node.attrs.get("act", "none"), p)
        g = mul_q31(g.m, g.e, p["inv_count"][cnt], 1, bits)
        g = headroom(g, 0, ((k[0] + s[0] - 1) // s[0]) * ((k[1] + s[1] - 1) // s[1]), acc_bits)
        gxp = padded_zeros_int(x_shape, pads)
        for _i, _j, idx in taps(k[0], k[1], s, (1, 1), oh, ow):
            gxp[idx] += g.m
        return {0: renormalize(check_acc(crop_int(gxp, pads, x_shape), f"{node.name} dx", acc_bits), g.e, bits)}


def _div_round_half_away(acc: np.ndarray, cnt) -> np.ndarray:
    """C's (acc > 0 ? (acc + n/2) / n : (acc - n/2) / n) with truncating division."""
    cnt = np.asarray(cnt, dtype=np.int64)
    num = np.where(acc > 0, acc + cnt // 2, acc - cnt // 2)
    q = np.abs(num) // cnt
    return np.where(num < 0, -q, q)


@register
class Mean(Op):
    """Global average over H and W of an NHWC tensor (``axes`` = (1, 2)); ``keepdims``."""

    name = "mean"
    differentiable = True

    @classmethod
    def infer(cls, node, ins):
        x = ins[0]
        axes = tuple(node.attrs.get("axes", (1, 2)))
        if len(x.shape) != 4 or axes != (1, 2):
            raise ValueError(f"node {node.name!r} (mean): only the global mean over H,W of a 4-D NHWC "
                             f"tensor is supported (axes {axes}, shape {x.shape})")
        shape = (x.shape[0], 1, 1, x.shape[3]) if node.attrs.get("keepdims", True) else (x.shape[0], x.shape[3])
        return [(shape, x.dtype)]

    @classmethod
    def forward_float(cls, node, xs):
        y = xs[0].astype(np.float64).mean(axis=(1, 2), keepdims=node.attrs.get("keepdims", True))
        return [y.astype(np.float32)]

    @classmethod
    def prepare(cls, node, graph):
        x = graph.tensors[node.inputs[0]]
        qx, qy = x.quant, graph.tensors[node.outputs[0]].quant
        m, e = fp.quantize_multiplier(np.float64(qx.s) / np.float64(qy.s))
        n = int(x.shape[1] * x.shape[2])
        k = min(n.bit_length() - 1, 32, 31 + e)  # 63 - CountLeadingZeros(uint64 n), clamped
        return {"in_zp": qx.zp, "out_zp": qy.zp, "count": n,
                "mult": (m << k) // n, "shift": e - k}  # int64 division of positives: floor

    @classmethod
    def forward_int8(cls, node, xs, p):
        x = xs[0].astype(np.int64)
        if x.shape[1] * x.shape[2] != p["count"]:
            raise ValueError(f"node {node.name!r} (mean): prepared for {p['count']} elements per channel")
        acc = x.sum(axis=(1, 2), keepdims=node.attrs.get("keepdims", True))  # int32 sum of raw int8
        acc = fp.wrap_i32(acc - p["in_zp"] * p["count"])
        y = fp.multiply_by_quantized_multiplier(acc, p["mult"], p["shift"]) + p["out_zp"]
        return [np.clip(y, -128, 127).astype(np.int8)]

    @classmethod
    def macs(cls, node, graph):
        return graph.tensors[node.inputs[0]].size

    @classmethod
    def backward_float(cls, node, xs, ys, gys, need, rows=None):
        """x [N,H,W,C], gy [N,1,1,C] or [N,C] -> {0: gx [N,H,W,C] = gy / (H*W) at every pixel}."""
        need = check_need(cls.name, need, (0,))
        if 0 not in need:
            return {}
        n, h, w, c = np.shape(xs[0])
        g = np.asarray(gys[0], dtype=np.float64).reshape(n, 1, 1, c) / (h * w)
        return {0: np.broadcast_to(g, (n, h, w, c)).copy()}

    @classmethod
    @host_only
    def prepare_backward(cls, node, graph):
        """1/(H*W) as a Q31 multiplier: ``1/n = inv_mult * 2^(inv_shift - 31)`` (exact for n = 2^k)."""
        x = graph.tensors[node.inputs[0]]
        m, k = q31(1.0 / (x.shape[1] * x.shape[2]))
        return {"inv_mult": m, "inv_shift": k}

    @classmethod
    def backward_int8(cls, node, xs, ys, gys, need, p, rows=None):
        """Integer twin of ``backward_float``: gy Grad [N,1,1,C] or [N,C] (real y) ->
        {0: Grad real x [N,H,W,C] = gy / (H*W) at every pixel} (one Q31 multiply, renormalised)."""
        need = check_need(cls.name, need, (0,))
        if 0 not in need:
            return {}
        bits, _ = bits_of(p)
        n, h, w, c = np.shape(xs[0])
        g = mul_q31(gys[0].m.reshape(n, 1, 1, c), gys[0].e, p["inv_mult"], p["inv_shift"], bits)
        return {0: Grad(np.broadcast_to(g.m, (n, h, w, c)).copy(), g.e)}
