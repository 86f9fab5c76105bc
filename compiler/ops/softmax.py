"""softmax over the last axis (``beta``, default 1.0). Only allowed as a graph output.

int8 (TFLite reference_ops::Softmax<int8, int8>, the kernel TFLM and CMSIS-NN follow; input any
int8 scale, output fixed at scale 1/256 and zero point -128):
    prepare:  M, left_shift = QuantizeMultiplierGreaterThanOne(min(beta * s_x * 2^26, 2^31 - 1))
              diff_min = -floor(31 * 2^26 / 2^left_shift)           (CalculateInputRadius(5, ls))
    per row:  d[c] = x[c] - max(x)                                  (int32, <= 0)
              z[c] = SRDHM(d[c] << left_shift, M)                   (Q5.26: beta * s_x * d)
              e[c] = exp_on_negative_values(z[c])                   (Q0.31), 0 where d < diff_min
              S    = sum_c RoundingDivideByPOT(e[c], 12)            (Q12.19)
              R, k = GetReciprocal(S, 12)                           (1/S = R / 2^31 / 2^k)
              y[c] = clamp(RoundingDivideByPOT(SRDHM(R, e[c]), k + 23) - 128, -128, 127)
              y[c] = -128 where d < diff_min
"""
from __future__ import annotations

import math

import numpy as np

from .. import fixedpoint as fp
from .registry import Op, register

_SCALED_DIFF_INTEGER_BITS = 5
_ACCUMULATION_INTEGER_BITS = 12


@register
class Softmax(Op):
    name = "softmax"
    differentiable = False  # training replaces it with loss.softmax_cross_entropy_float

    @classmethod
    def infer(cls, node, ins):
        return [(ins[0].shape, ins[0].dtype)]

    @classmethod
    def forward_float(cls, node, xs):
        x = xs[0].astype(np.float64) * node.attrs.get("beta", 1.0)
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return [(e / e.sum(axis=-1, keepdims=True)).astype(np.float32)]

    @classmethod
    def prepare(cls, node, graph):
        qx = graph.tensors[node.inputs[0]].quant
        qy = graph.tensors[node.outputs[0]].quant
        if qx is None or qy is None:
            raise ValueError(f"node {node.name!r} (softmax): int8 operands need quantization parameters")
        # TFLite SoftmaxPrepare: int8 output must be scale 1/256 (to 0.1%), zero point -128.
        if qy.zp != -128 or abs(qy.s - 1.0 / 256) > 0.001 / 256:
            raise ValueError(f"node {node.name!r} (softmax): int8 output must have scale 1/256 and zero "
                             f"point -128, got {qy.s} and {qy.zp}")
        beta = float(np.float32(node.attrs.get("beta", 1.0)))
        # PreprocessSoftmaxScaling: beta and the float32 scale promoted to double, product in double.
        real = min(beta * float(qx.s) * float(1 << (31 - _SCALED_DIFF_INTEGER_BITS)), float((1 << 31) - 1))
        if not real > 1.0:
            raise ValueError(f"node {node.name!r} (softmax): beta * input scale = {beta * qx.s:g} is too "
                             f"small for TFLite's int8 softmax (needs > 2^-26)")
        mult, left_shift = fp.quantize_multiplier(real)
        # CalculateInputRadius(5, left_shift, 31)
        radius = math.floor(((1 << _SCALED_DIFF_INTEGER_BITS) - 1)
                            * float(1 << (31 - _SCALED_DIFF_INTEGER_BITS)) / float(1 << left_shift))
        return {"mult": mult, "left_shift": left_shift, "diff_min": -radius}

    @classmethod
    def forward_int8(cls, node, xs, p):
        x = xs[0].astype(np.int64)
        diff = x - x.max(axis=-1, keepdims=True)  # int32 <= 0
        valid = diff >= p["diff_min"]
        scaled = fp.multiply_by_quantized_multiplier_greater_than_one(diff, p["mult"], p["left_shift"])  # Q5.26
        exp = fp.exp_on_negative_values(scaled, _SCALED_DIFF_INTEGER_BITS)  # Q0.31
        exp = np.where(valid, exp, 0)
        # Q0.31 -> Q12.19 (Rescale<12>), summed with int32 wrap-around as in C.
        acc = fp.saturating_rounding_multiply_by_pot(exp, -_ACCUMULATION_INTEGER_BITS)
        sum_of_exps = fp.wrap_i32(acc.sum(axis=-1, keepdims=True))
        recip, bits_over_unit = fp.get_reciprocal(sum_of_exps, _ACCUMULATION_INTEGER_BITS)
        exponent = bits_over_unit + 31 - 8
        if np.any((exponent < 0) | (exponent > 31)):
            raise AssertionError(f"softmax {node.name!r}: output exponent out of [0, 31]")
        y = fp.rounding_divide_by_pot(fp.srdhm(recip, exp), exponent) - 128
        y = np.where(valid, np.clip(y, -128, 127), -128)
        return [y.astype(np.int8)]
