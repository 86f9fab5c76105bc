"""The small CNN of the kernel-speed comparison with AIfES (float ONNX, seeded He-normal weights):

    Conv(1->8, 3x3, s1, p1)+ReLU -> Conv(8->16, 3x3, s2, p1)+ReLU -> Conv(16->16, 3x3, s2, p1)+ReLU
    -> Flatten -> FC(256->32)+ReLU -> FC(32->10)          input 1x1x16x16 (NCHW), batch 1

    build_small_cnn_onnx(path, seed=0) -> path
    small_cnn_data(n, seed=0) -> (x [n,1,16,16] float32 in [0, 1], y [n] int64)

MACs per inference: 18,432 + 73,728 + 36,864 + 8,192 + 320 = 137,536.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from .onnx_helpers import init, make_model, vi


def build_small_cnn_onnx(path, seed: int = 0):
    rng = np.random.default_rng(seed)

    def he(*shape):
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    inits = [init("w1", he(8, 1, 3, 3)), init("b1", (rng.standard_normal(8) * 0.05).astype(np.float32)),
             init("w2", he(16, 8, 3, 3)), init("b2", (rng.standard_normal(16) * 0.05).astype(np.float32)),
             init("w3", he(16, 16, 3, 3)), init("b3", (rng.standard_normal(16) * 0.05).astype(np.float32)),
             init("w4", he(32, 256)), init("b4", (rng.standard_normal(32) * 0.05).astype(np.float32)),
             init("w5", he(10, 32)), init("b5", (rng.standard_normal(10) * 0.05).astype(np.float32))]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("Conv", ["r2", "w3", "b3"], ["c3"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("Flatten", ["r3"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "w4", "b4"], ["g4"], transB=1),
        helper.make_node("Relu", ["g4"], ["r4"]),
        helper.make_node("Gemm", ["r4", "w5", "b5"], ["y"], transB=1),
    ]
    model = make_model(nodes, [vi("x", [1, 1, 16, 16])], [vi("y", [1, 10])], inits, opset=13, name="small_cnn")
    onnx.save(model, str(path))
    return path


def small_cnn_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 16, 16), dtype=np.float32), rng.integers(0, 10, n).astype(np.int64)


_ = TensorProto  # (re-exported for callers building variants)
