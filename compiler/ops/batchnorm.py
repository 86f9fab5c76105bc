"""batch_norm (inference form): a frontend-only op, float32 only.

    y = (x - mean) / sqrt(var + eps) * scale + bias        per channel (last axis, NHWC / [N, C])

Inputs: x, scale [C], bias [C], mean [C], var [C] (all but x constant). Attribute ``eps``.
Frontends emit it for a source BatchNormalization; ``passes.fold_batchnorm`` folds it into the
conv2d / depthwise_conv2d / fully_connected that produces x. A graph that still holds a batch_norm
after the frontend is rejected there, so quantization, scheduling and codegen never see this op
(it has no int8 reference on purpose).
"""
from __future__ import annotations

import numpy as np

from .registry import Op, register


@register
class BatchNorm(Op):
    name = "batch_norm"
    const_inputs = (1, 2, 3, 4)
    differentiable = False  # folded away before training

    @classmethod
    def infer(cls, node, ins):
        x = ins[0]
        if x.dtype != "float32":
            raise ValueError(f"node {node.name!r} (batch_norm): float32 only (fold it before quantizing)")
        if len(x.shape) not in (2, 4):
            raise ValueError(f"node {node.name!r} (batch_norm): expects [N, C] or NHWC input, got {x.shape}")
        for t in ins[1:5]:
            if t is None or t.shape != (x.shape[-1],):
                raise ValueError(f"node {node.name!r} (batch_norm): parameters must have shape ({x.shape[-1]},)")
        return [(x.shape, x.dtype)]

    @classmethod
    def check(cls, node, graph):
        super().check(node, graph)
        if len(node.inputs) != 5:
            raise ValueError(f"node {node.name!r} (batch_norm): needs x, scale, bias, mean, var")
        eps = node.attrs.get("eps", 1e-5)
        if not (np.isfinite(eps) and eps >= 0):
            raise ValueError(f"node {node.name!r} (batch_norm): eps must be finite and >= 0, got {eps}")

    @staticmethod
    def affine(node, scale, bias, mean, var) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel (a, c) in float64 with y = a * x + c."""
        eps = np.float64(node.attrs.get("eps", 1e-5))
        a = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
        c = bias.astype(np.float64) - mean.astype(np.float64) * a
        return a, c

    @classmethod
    def forward_float(cls, node, xs):
        x, scale, bias, mean, var = xs
        eps = np.float64(node.attrs.get("eps", 1e-5))
        y = (x.astype(np.float64) - mean) / np.sqrt(var.astype(np.float64) + eps) * scale + bias
        return [y.astype(np.float32)]

    @classmethod
    def macs(cls, node, graph):
        return graph.tensors[node.inputs[0]].size
