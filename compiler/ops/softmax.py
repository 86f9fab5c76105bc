"""softmax over the last axis (``beta``, default 1.0). Only allowed as a graph output."""
from __future__ import annotations

import numpy as np

from .registry import Op, register


@register
class Softmax(Op):
    name = "softmax"

    @classmethod
    def infer(cls, node, ins):
        return [(ins[0].shape, ins[0].dtype)]

    @classmethod
    def forward_float(cls, node, xs):
        x = xs[0].astype(np.float64) * node.attrs.get("beta", 1.0)
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return [(e / e.sum(axis=-1, keepdims=True)).astype(np.float32)]
