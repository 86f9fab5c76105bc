"""Helpers shared by op references: windows, padding, requantization epilogue."""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import fixedpoint as fp

ACTS = ("none", "relu", "relu6")


def out_size(in_size: int, k: int, stride: int, dilation: int, pad_lo: int, pad_hi: int) -> int:
    eff = (k - 1) * dilation + 1
    return (in_size + pad_lo + pad_hi - eff) // stride + 1


def pad_nhwc(x: np.ndarray, pads: tuple[int, int, int, int], value) -> np.ndarray:
    """Pad H and W of an NHWC array by (top, left, bottom, right) with a constant."""
    t, l, b, r = pads
    if not (t or l or b or r):
        return x
    return np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=value)


def windows(x: np.ndarray, kh: int, kw: int, stride: tuple[int, int], dilation: tuple[int, int],
            oh: int, ow: int) -> np.ndarray:
    """View of sliding windows: [N, OH, OW, KH, KW, C] from a padded NHWC array (no copy)."""
    dh, dw = dilation
    sh, sw = stride
    v = sliding_window_view(x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(1, 2))
    # v: [N, H', W', C, KH_eff, KW_eff]
    v = v[:, : (oh - 1) * sh + 1 : sh, : (ow - 1) * sw + 1 : sw, :, ::dh, ::dw]
    return v.transpose(0, 1, 2, 4, 5, 3)


def apply_act_float(y: np.ndarray, act: str) -> np.ndarray:
    if act == "relu":
        return np.maximum(y, 0)
    if act == "relu6":
        return np.clip(y, 0, 6)
    return y


def requant_epilogue(acc: np.ndarray, p: dict) -> np.ndarray:
    """int32 accumulator -> int8: per-channel MultiplyByQuantizedMultiplier, + zp_out, clamp.

    ``p`` holds ``mult``/``shift`` (broadcastable to acc's last axis), ``out_zp``, ``act_min``,
    ``act_max`` as produced by a conv/fc ``prepare``.
    """
    y = fp.multiply_by_quantized_multiplier(acc, p["mult"], p["shift"]) + p["out_zp"]
    return np.clip(y, p["act_min"], p["act_max"]).astype(np.int8)


def conv_prepare(node, graph, w_axis: int, out_channels: int) -> dict:
    """TFLite PopulateConvolutionQuantizationParams for int8 conv / depthwise / per-channel fc.

    effective_scale[c] = double(s_in) * double(s_w[c]) / double(s_out), then QuantizeMultiplier.
    """
    x = graph.tensors[node.inputs[0]]
    w = graph.tensors[node.inputs[1]]
    y = graph.tensors[node.outputs[0]]
    if x.quant is None or w.quant is None or y.quant is None:
        raise ValueError(f"node {node.name!r} ({node.op}): int8 operands need quantization parameters")
    s_in = np.float64(x.quant.s)
    s_out = np.float64(y.quant.s)
    s_w = w.quant.scale.astype(np.float64)
    if s_w.size == 1:
        s_w = np.full(out_channels, s_w[0])
    mult, shift = fp.quantize_multiplier_array(s_in * s_w / s_out)
    act_min, act_max = fp.activation_range_int8(node.attrs.get("act", "none"), y.quant.s, y.quant.zp)
    return {
        "in_zp": x.quant.zp,
        "out_zp": y.quant.zp,
        "mult": mult,
        "shift": shift,
        "act_min": act_min,
        "act_max": act_max,
    }


def check_act(node) -> None:
    act = node.attrs.get("act", "none")
    if act not in ACTS:
        raise ValueError(f"node {node.name!r} ({node.op}): fused activation {act!r} not one of {ACTS}")
