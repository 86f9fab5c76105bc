"""conv2d and depthwise_conv2d (NHWC activations).

conv2d            x [N,H,W,Cin], w [Cout,KH,KW,Cin] (OHWI), b [Cout] -> y [N,OH,OW,Cout]
depthwise_conv2d  x [N,H,W,Cin], w [1,KH,KW,Cin*M],  b [Cin*M]  -> y [N,OH,OW,Cin*M]
                  output channel o reads input channel o // M.

Attributes: ``stride`` (sh, sw), ``dilation`` (dh, dw), ``pad`` (top, left, bottom, right),
``act`` in {none, relu, relu6} (fused; in int8 it is the output clamp).

int8 semantics follow TFLite's reference per-channel kernels:
    acc[c]  = b[c] + sum (x - zp_x) * w[c]          (int32; padding contributes nothing)
    y[c]    = clamp(MBQM(acc[c], M[c], shift[c]) + zp_y, act_min, act_max)
"""
from __future__ import annotations

import numpy as np

from ._common import (check_act, conv_prepare, out_size, pad_nhwc, requant_epilogue, windows,
                      apply_act_float)
from ._grad import act_grad, check_need, check_rows, crop, padded_zeros, taps
from ._grad_int import (Grad, act_mask, bits_of, check_acc, crop_int, headroom, linear_prepare_backward,
                        mul_q31, pad_centered, padded_zeros_int, renormalize, scale_channels, sum_to)
from .registry import Op, register


def _geometry(node, x_shape, kh, kw):
    sh, sw = node.attrs.get("stride", (1, 1))
    dh, dw = node.attrs.get("dilation", (1, 1))
    t, l, b, r = node.attrs.get("pad", (0, 0, 0, 0))
    oh = out_size(x_shape[1], kh, sh, dh, t, b)
    ow = out_size(x_shape[2], kw, sw, dw, l, r)
    return (sh, sw), (dh, dw), (t, l, b, r), oh, ow


def _check_geometry(node, x_shape, kh, kw):
    (sh, sw), (dh, dw), pads, oh, ow = _geometry(node, x_shape, kh, kw)
    if min(sh, sw, dh, dw) < 1 or min(pads) < 0:
        raise ValueError(f"node {node.name!r} ({node.op}): stride/dilation must be >= 1 and pads >= 0")
    if oh < 1 or ow < 1:
        raise ValueError(f"node {node.name!r} ({node.op}): kernel {kh}x{kw} does not fit input {x_shape}")


@register
class Conv2D(Op):
    name = "conv2d"
    const_inputs = (1, 2)
    param_inputs = (1, 2)
    differentiable = True

    @classmethod
    def infer(cls, node, ins):
        x, w = ins[0], ins[1]
        if len(x.shape) != 4 or len(w.shape) != 4:
            raise ValueError(f"node {node.name!r} (conv2d): expects 4-D input and OHWI weights")
        if w.shape[3] != x.shape[3]:
            raise ValueError(f"node {node.name!r} (conv2d): weights have {w.shape[3]} input channels, "
                             f"input has {x.shape[3]}")
        _check_geometry(node, x.shape, w.shape[1], w.shape[2])
        _, _, _, oh, ow = _geometry(node, x.shape, w.shape[1], w.shape[2])
        return [((x.shape[0], oh, ow, w.shape[0]), x.dtype if x.dtype != "int8" else "int8")]

    @classmethod
    def check(cls, node, graph):
        super().check(node, graph)
        check_act(node)
        if len(node.inputs) > 2 and node.inputs[2]:
            b = graph.tensors[node.inputs[2]]
            cout = graph.tensors[node.inputs[1]].shape[0]
            if b.shape != (cout,):
                raise ValueError(f"node {node.name!r} (conv2d): bias shape {b.shape} != ({cout},)")

    @classmethod
    def forward_float(cls, node, xs):
        x, w = xs[0], xs[1]
        b = xs[2] if len(xs) > 2 else None
        kh, kw = w.shape[1], w.shape[2]
        stride, dil, pads, oh, ow = _geometry(node, x.shape, kh, kw)
        win = windows(pad_nhwc(x, pads, 0.0), kh, kw, stride, dil, oh, ow)
        y = np.tensordot(win.astype(np.float64), w.astype(np.float64), axes=([3, 4, 5], [1, 2, 3]))
        if b is not None:
            y = y + b
        return [apply_act_float(y, node.attrs.get("act", "none")).astype(np.float32)]

    @classmethod
    def prepare(cls, node, graph):
        return conv_prepare(node, graph, 0, graph.tensors[node.inputs[1]].shape[0])

    @classmethod
    def forward_int8(cls, node, xs, p):
        x, w = xs[0], xs[1]
        b = xs[2] if len(xs) > 2 else None
        kh, kw = w.shape[1], w.shape[2]
        stride, dil, pads, oh, ow = _geometry(node, x.shape, kh, kw)
        xc = pad_nhwc(x.astype(np.int64) - p["in_zp"], pads, 0)
        win = windows(xc, kh, kw, stride, dil, oh, ow)
        n = x.shape[0]
        cols = win.reshape(n * oh * ow, kh * kw * x.shape[3])
        acc = cols @ w.reshape(w.shape[0], -1).astype(np.int64).T
        if b is not None:
            acc = acc + b.astype(np.int64)
        return [requant_epilogue(acc, p).reshape(n, oh, ow, w.shape[0])]

    @classmethod
    def macs(cls, node, graph):
        y = graph.tensors[node.outputs[0]]
        w = graph.tensors[node.inputs[1]]
        return int(np.prod(y.shape)) * w.shape[1] * w.shape[2] * w.shape[3]

    @classmethod
    def backward_float(cls, node, xs, ys, gys, need, rows=None):
        """x [N,H,W,Cin], w [Cout,KH,KW,Cin], gy [N,OH,OW,Cout] ->
        {0: gx [N,H,W,Cin], 1: gw [R,KH,KW,Cin], 2: gb [R]}, R = rows or Cout (channels [0, R))."""
        need = check_need(cls.name, need, (0, 1, 2))
        x, w = xs[0], xs[1]
        kh, kw = w.shape[1], w.shape[2]
        stride, dil, pads, oh, ow = _geometry(node, x.shape, kh, kw)
        g = act_grad(gys[0], ys[0], node.attrs.get("act", "none"))
        r = check_rows(cls.name, rows, w.shape[0])
        out = {}
        if 2 in need:
            out[2] = g[..., :r].sum(axis=(0, 1, 2))
        if 1 in need:
            xp = pad_nhwc(x.astype(np.float64), pads, 0.0)
            gr = g[..., :r]
            gw = np.empty((r, kh, kw, x.shape[3]), dtype=np.float64)
            for i, j, idx in taps(kh, kw, stride, dil, oh, ow):
                gw[:, i, j, :] = np.tensordot(gr, xp[idx], axes=([0, 1, 2], [0, 1, 2]))
            out[1] = gw
        if 0 in need:
            w64 = w.astype(np.float64)
            gxp = padded_zeros(x.shape, pads)
            for i, j, idx in taps(kh, kw, stride, dil, oh, ow):
                gxp[idx] += g @ w64[:, i, j, :]
            out[0] = crop(gxp, pads, x.shape)
        return out

    @classmethod
    def prepare_backward(cls, node, graph):
        """Host constants of ``backward_int8`` (see ``_grad_int.linear_prepare_backward``)."""
        return linear_prepare_backward(node, graph, 0)

    @classmethod
    def backward_int8(cls, node, xs, ys, gys, need, p, rows=None):
        """Integer twin of ``backward_float``: x int8 [N,H,W,Cin], w int8 [Cout,KH,KW,Cin], y int8,
        gy Grad (real y) -> {0: Grad real x, 1: Grad real W [R,KH,KW,Cin], 2: Grad real b [R]}.

        gz = gy masked by act(y_q).
        b: sum_{n,h,w} gz                                  (int32, fan-in N*OH*OW)
        W: s_x * sum_{n,h,w} gz * (x - zp_x)               (int32, fan-in N*OH*OW, |x - zp_x| <= 2^x_bits)
        x: sum_{o,i,j} (gz * s_w[o]) * w[o,i,j,:]           (int32, fan-in Cout*KH*KW, |w| <= 2^w_bits)
        Each MAC operand is headroom-shifted so no int32 partial sum overflows; results renormalised.
        """
        need = check_need(cls.name, need, (0, 1, 2))
        bits, acc_bits = bits_of(p)
        x, w = xs[0], xs[1]
        kh, kw = w.shape[1], w.shape[2]
        stride, dil, pads, oh, ow = _geometry(node, x.shape, kh, kw)
        g = act_mask(gys[0], ys[0], node.attrs.get("act", "none"), p)
        r = check_rows(cls.name, rows, w.shape[0])
        n = x.shape[0]
        out = {}
        if 2 in need:
            out[2] = sum_to(Grad(g.m[..., :r], g.e), (0, 1, 2), p, f"{node.name} db")
        if 1 in need:
            xc = pad_centered(x, p["in_zp"], pads)
            gr = headroom(Grad(g.m[..., :r], g.e), p["x_bits"], n * oh * ow, acc_bits)
            acc = np.empty((r, kh, kw, x.shape[3]), dtype=np.int64)
            for i, j, idx in taps(kh, kw, stride, dil, oh, ow):
                acc[:, i, j, :] = np.tensordot(gr.m, xc[idx], axes=([0, 1, 2], [0, 1, 2]))
            check_acc(acc, f"{node.name} dW", acc_bits)
            out[1] = mul_q31(acc, gr.e, p["x_mult"], p["x_shift"], bits)
        if 0 in need:
            gs = headroom(scale_channels(g, p["w_mult"], p["w_shift"], p), p["w_bits"],
                          w.shape[0] * kh * kw, acc_bits)
            w64 = w.astype(np.int64)
            gxp = padded_zeros_int(x.shape, pads)
            for i, j, idx in taps(kh, kw, stride, dil, oh, ow):
                gxp[idx] += gs.m @ w64[:, i, j, :]
            out[0] = renormalize(check_acc(crop_int(gxp, pads, x.shape), f"{node.name} dx", acc_bits),
                                 gs.e, bits)
        return out


@register
class DepthwiseConv2D(Op):
    name = "depthwise_conv2d"
    const_inputs = (1, 2)
    param_inputs = (1, 2)
    differentiable = True

    @classmethod
    def infer(cls, node, ins):
        x, w = ins[0], ins[1]
        if len(x.shape) != 4 or len(w.shape) != 4 or w.shape[0] != 1:
            raise ValueError(f"node {node.name!r} (depthwise_conv2d): expects 4-D input and [1,KH,KW,C*M] weights")
        if w.shape[3] % x.shape[3]:
            raise ValueError(f"node {node.name!r} (depthwise_conv2d): {w.shape[3]} output channels is not a "
                             f"multiple of {x.shape[3]} input channels")
        _check_geometry(node, x.shape, w.shape[1], w.shape[2])
        _, _, _, oh, ow = _geometry(node, x.shape, w.shape[1], w.shape[2])
        return [((x.shape[0], oh, ow, w.shape[3]), x.dtype)]

    @classmethod
    def check(cls, node, graph):
        super().check(node, graph)
        check_act(node)

    @staticmethod
    def _expand(x, w):
        m = w.shape[3] // x.shape[3]
        return np.repeat(x, m, axis=3) if m > 1 else x

    @classmethod
    def forward_float(cls, node, xs):
        x, w = xs[0], xs[1]
        b = xs[2] if len(xs) > 2 else None
        kh, kw = w.shape[1], w.shape[2]
        stride, dil, pads, oh, ow = _geometry(node, x.shape, kh, kw)
        xe = cls._expand(pad_nhwc(x, pads, 0.0), w).astype(np.float64)
        win = windows(xe, kh, kw, stride, dil, oh, ow)  # [N,OH,OW,KH,KW,C]
        y = np.einsum("nhwijc,ijc->nhwc", win, w[0].astype(np.float64))
        if b is not None:
            y = y + b
        return [apply_act_float(y, node.attrs.get("act", "none")).astype(np.float32)]

    @classmethod
    def prepare(cls, node, graph):
        return conv_prepare(node, graph, 3, graph.tensors[node.inputs[1]].shape[3])

    @classmethod
    def forward_int8(cls, node, xs, p):
        x, w = xs[0], xs[1]
        b = xs[2] if len(xs) > 2 else None
        kh, kw = w.shape[1], w.shape[2]
        stride, dil, pads, oh, ow = _geometry(node, x.shape, kh, kw)
        xc = cls._expand(pad_nhwc(x.astype(np.int64) - p["in_zp"], pads, 0), w)
        win = windows(xc, kh, kw, stride, dil, oh, ow)
        acc = np.einsum("nhwijc,ijc->nhwc", win, w[0].astype(np.int64))
        if b is not None:
            acc = acc + b.astype(np.int64)
        return [requant_epilogue(acc, p)]

    @classmethod
    def macs(cls, node, graph):
        y = graph.tensors[node.outputs[0]]
        w = graph.tensors[node.inputs[1]]
        return int(np.prod(y.shape)) * w.shape[1] * w.shape[2]

    @classmethod
    def backward_float(cls, node, xs, ys, gys, need, rows=None):
        """x [N,H,W,C], w [1,KH,KW,C*M], gy [N,OH,OW,C*M] ->
        {0: gx [N,H,W,C], 1: gw [1,KH,KW,R], 2: gb [R]}, R = rows or C*M (channels [0, R));
        output channel o reads input channel o // M."""
        need = check_need(cls.name, need, (0, 1, 2))
        x, w = xs[0], xs[1]
        kh, kw, co = w.shape[1], w.shape[2], w.shape[3]
        m = co // x.shape[3]
        stride, dil, pads, oh, ow = _geometry(node, x.shape, kh, kw)
        g = act_grad(gys[0], ys[0], node.attrs.get("act", "none"))
        r = check_rows(cls.name, rows, co)
        out = {}
        if 2 in need:
            out[2] = g[..., :r].sum(axis=(0, 1, 2))
        if 1 in need:
            xp = pad_nhwc(x.astype(np.float64), pads, 0.0)
            src = np.arange(r) // m  # input channel read by output channel o < r
            gr = g[..., :r]
            gw = np.empty((1, kh, kw, r), dtype=np.float64)
            for i, j, idx in taps(kh, kw, stride, dil, oh, ow):
                gw[0, i, j, :] = np.einsum("nhwo,nhwo->o", gr, xp[idx][..., src])
            out[1] = gw
        if 0 in need:
            w64 = w[0].astype(np.float64)
            n = x.shape[0]
            gxp = padded_zeros(x.shape, pads)
            for i, j, idx in taps(kh, kw, stride, dil, oh, ow):
                gxp[idx] += (g * w64[i, j]).reshape(n, oh, ow, x.shape[3], m).sum(axis=4)
            out[0] = crop(gxp, pads, x.shape)
        return out

    @classmethod
    def prepare_backward(cls, node, graph):
        """Host constants of ``backward_int8`` (see ``_grad_int.linear_prepare_backward``)."""
        return linear_prepare_backward(node, graph, 3)

    @classmethod
    def backward_int8(cls, node, xs, ys, gys, need, p, rows=None):
        """Integer twin of ``backward_float``: x int8 [N,H,W,C], w int8 [1,KH,KW,C*M], y int8,
        gy Grad (real y) -> {0: Grad real x, 1: Grad real W [1,KH,KW,R], 2: Grad real b [R]};
        output channel o reads input channel o // M.

        b: sum_{n,h,w} gz[o]; W: s_x * sum_{n,h,w} gz[o] * (x[o // M] - zp_x) (fan-in N*OH*OW);
        x[c]: sum_{m,i,j} (gz[c*M+m] * s_w[c*M+m]) * w[i,j,c*M+m] (fan-in M*KH*KW); int32 accumulators.
        """
        need = check_need(cls.name, need, (0, 1, 2))
        bits, acc_bits = bits_of(p)
        x, w = xs[0], xs[1]
        kh, kw, co = w.shape[1], w.shape[2], w.shape[3]
        m = co // x.shape[3]
        stride, dil, pads, oh, ow = _geometry(node, x.shape, kh, kw)
        g = act_mask(gys[0], ys[0], node.attrs.get("act", "none"), p)
        r = check_rows(cls.name, rows, co)
        n = x.shape[0]
        out = {}
        if 2 in need:
            out[2] = sum_to(Grad(g.m[..., :r], g.e), (0, 1, 2), p, f"{node.name} db")
        if 1 in need:
            xc = pad_centered(x, p["in_zp"], pads)
            src = np.arange(r) // m
            gr = headroom(Grad(g.m[..., :r], g.e), p["x_bits"], n * oh * ow, acc_bits)
            acc = np.empty((1, kh, kw, r), dtype=np.int64)
            for i, j, idx in taps(kh, kw, stride, dil, oh, ow):
                acc[0, i, j, :] = np.einsum("nhwo,nhwo->o", gr.m, xc[idx][..., src])
            check_acc(acc, f"{node.name} dW", acc_bits)
            out[1] = mul_q31(acc, gr.e, p["x_mult"], p["x_shift"], bits)
        if 0 in need:
            gs = headroom(scale_channels(g, p["w_mult"], p["w_shift"], p), p["w_bits"], m * kh * kw, acc_bits)
            w64 = w[0].astype(np.int64)
            gxp = padded_zeros_int(x.shape, pads)
            for i, j, idx in taps(kh, kw, stride, dil, oh, ow):
                gxp[idx] += (gs.m * w64[i, j]).reshape(n, oh, ow, x.shape[3], m).sum(axis=4)
            out[0] = renormalize(check_acc(crop_int(gxp, pads, x.shape), f"{node.name} dx", acc_bits),
                                 gs.e, bits)
        return out
