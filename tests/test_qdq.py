"""QDQ int8 models written by onnxruntime.quantization.quantize_static -> int8 IR, compared with
onnxruntime on the quantized (int8) tensors.

Two comparisons per network (per-channel and per-tensor weights, int8 activations):
  * per node, teacher-forced: every int8 IR node gets onnxruntime's int8 input tensors and its
    output is compared with onnxruntime's int8 output (isolates each op's import: weights, scales,
    zero points, layouts, fused activations) -> >= 99% equal, never more than 1 LSB apart;
  * end to end: the network's final int8 output on 200 random inputs.
The IR's int8 kernels follow TFLite's integer arithmetic (double-rounding requantization, round
half away from zero), onnxruntime follows ONNX's (float scale, round half to even). So single
elements can differ by 1 LSB where a value sits near .5 LSB; per node this stays well under 1%
except for two TFLite kernels whose rounding is coarser (see LOOSE_OPS), and end to end the
differences of consecutive layers add up (bounds in E2E_*).
"""
from __future__ import annotations

import functools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from microtrain.compiler.frontend.onnx_reader import load_onnx
from models.onnx_helpers import (expose_quantized_outputs, init, make_model, ort_session, per_node_int8_agreement,
                                 quantize_qdq, run_ir)

pytest.importorskip("onnxruntime.quantization")

node = helper.make_node
N_E2E, N_NODE, N_CALIB = 200, 64, 32
# Ops whose TFLite int8 kernel rounds differently from ONNX's float-then-round-half-even in more than
# 1% of elements (never by more than 1 LSB): the agreement asserted for them per node. (avg_pool2d
# with an even window count would belong here too: exact .5 ties, TFLite rounds them away from zero,
# ONNX to even; the networks below use odd windows.)
LOOSE_OPS = {
    "mean": 0.90,  # TFLite QuantizedMeanOrSum folds 1/n into the multiplier: double rounding (~94%)
}
NODE_MIN_EQUAL = 0.99
# End to end, per-layer 1-LSB differences (0.2-0.6% of each conv/fc output) propagate and are
# amplified by the fan-in of later layers; measured: block 92.8% / 87.9%, gap_head 86.7% / 84.6%,
# matmul_head 97.3% / 95.4% (per channel / per tensor), max 2 LSB.
E2E_MIN_EQUAL = {"block": 0.85, "gap_head": 0.80, "matmul_head": 0.92}
E2E_MAX_DIFF = 2
E2E_MIN_TOP1 = 0.95  # arg-max agreement of the int8 class scores (block, gap_head)


def _w(r, *shape, scale=None):
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return (r.standard_normal(shape) * (scale if scale is not None else 1 / np.sqrt(fan_in))).astype(np.float32)


def _block():
    """conv s2 + relu -> depthwise + relu6 -> 1x1 conv -> residual add -> maxpool -> avgpool 3x3
    -> flatten (H*W > 1: permuted FC weights) -> gemm."""
    r = np.random.default_rng(10)
    nodes = [node("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
             node("Relu", ["c1"], ["r1"]),
             node("Conv", ["r1", "W2", "B2"], ["c2"], pads=[1, 1, 1, 1], group=8),
             node("Clip", ["c2", "lo", "hi"], ["r2"]),
             node("Conv", ["r2", "W3", "B3"], ["c3"]),
             node("Add", ["c3", "r1"], ["s"]),
             node("MaxPool", ["s"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
             node("AveragePool", ["mp"], ["ap"], kernel_shape=[3, 3], strides=[1, 1]),
             node("Flatten", ["ap"], ["f"]),
             node("Gemm", ["f", "Wf", "Bf"], ["y"], transB=1)]
    inits = [init("W1", _w(r, 8, 3, 3, 3)), init("B1", _w(r, 8, scale=0.2)), init("W2", _w(r, 8, 1, 3, 3)),
             init("B2", _w(r, 8, scale=0.2)), init("lo", np.float32(0)), init("hi", np.float32(6)),
             init("W3", _w(r, 8, 8, 1, 1)), init("B3", _w(r, 8, scale=0.2)), init("Wf", _w(r, 10, 8 * 3 * 3)),
             init("Bf", _w(r, 10, scale=0.2))]
    return make_model(nodes, [("x", ["N", 3, 20, 20])], [("y", None)], inits, 13), (3, 20, 20)


def _gap_head():
    """conv + relu -> zero Pad -> conv -> global average pool -> flatten -> gemm (transB=0) -> softmax."""
    r = np.random.default_rng(11)
    nodes = [node("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]),
             node("Relu", ["c1"], ["r1"]),
             node("Pad", ["r1", "pads"], ["p"]),
             node("Conv", ["p", "W2", "B2"], ["c2"], strides=[2, 2]),
             node("GlobalAveragePool", ["c2"], ["g"]),
             node("Flatten", ["g"], ["f"]),
             node("Gemm", ["f", "Wf", "Bf"], ["l"]),
             node("Softmax", ["l"], ["y"])]
    inits = [init("W1", _w(r, 6, 4, 3, 3)), init("B1", _w(r, 6, scale=0.2)),
             init("pads", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64)),
             init("W2", _w(r, 12, 6, 3, 3)), init("B2", _w(r, 12, scale=0.2)),
             init("Wf", _w(r, 12, 5, scale=0.8)), init("Bf", _w(r, 5, scale=0.2))]
    return make_model(nodes, [("x", ["N", 4, 12, 12])], [("y", None)], inits, 13), (4, 12, 12)


def _matmul_head():
    """relu on the input (standalone) -> 1x1 conv -> maxpool with pads -> reshape [N, -1] -> MatMul."""
    r = np.random.default_rng(12)
    nodes = [node("Relu", ["x"], ["rx"]),
             node("Conv", ["rx", "W1", "B1"], ["c1"]),
             node("MaxPool", ["c1"], ["mp"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             node("Reshape", ["mp", "shape"], ["f"]),
             node("MatMul", ["f", "Wm"], ["y"])]
    inits = [init("W1", _w(r, 5, 3, 1, 1)), init("B1", _w(r, 5, scale=0.2)),
             init("shape", np.array([0, -1], np.int64)), init("Wm", _w(r, 5 * 4 * 4, 6, scale=0.15))]
    return make_model(nodes, [("x", ["N", 3, 8, 8])], [("y", None)], inits, 13), (3, 8, 8)


NETS = {"block": _block, "gap_head": _gap_head, "matmul_head": _matmul_head}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("qdq")


@functools.lru_cache(maxsize=None)
def _quantized(net: str, per_channel: bool, act: str, workdir: str):
    model, shape = NETS[net]()
    r = np.random.default_rng(99)
    calib = [{"x": r.standard_normal((1,) + shape).astype(np.float32)} for _ in range(N_CALIB)]
    q = quantize_qdq(model, calib, workdir, per_channel, act, name=f"{net}_{per_channel}_{act}")
    return q, shape


def _inputs(shape, n, seed):
    return np.random.default_rng(seed).standard_normal((n,) + shape).astype(np.float32)


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
@pytest.mark.parametrize("net", sorted(NETS))
def test_end_to_end_int8_agreement(net, per_channel, workdir):
    q, shape = _quantized(net, per_channel, "int8", str(workdir))
    qi = expose_quantized_outputs(q)
    g = load_onnx(qi)
    assert g.meta["quantized"]
    if net != "gap_head":  # gap_head keeps onnxruntime's float Softmax (its output scale is not 1/256)
        assert g.is_quantized  # integers from the input quantize to the output
    x = _inputs(shape, N_E2E, 1)
    want = ort_session(qi).run(None, {"x": x})[0].astype(np.int64)
    got = run_ir(g, {"x": x})[0].astype(np.int64)
    d = np.abs(want - got)
    equal = float((d == 0).mean())
    top1 = float((want.argmax(axis=1) == got.argmax(axis=1)).mean())
    print(f"\n{net} per_channel={per_channel}: {equal:.2%} of {d.size} int8 outputs equal, max diff {d.max()} LSB, "
          f"mean diff {d.mean():.3f} LSB, top-1 agreement {top1:.1%}")
    assert d.max() <= E2E_MAX_DIFF
    assert equal >= E2E_MIN_EQUAL[net]
    if net != "matmul_head":
        assert top1 >= E2E_MIN_TOP1


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
@pytest.mark.parametrize("net", sorted(NETS))
def test_per_node_int8_agreement_teacher_forced(net, per_channel, workdir):
    q, shape = _quantized(net, per_channel, "int8", str(workdir))
    g = load_onnx(q)
    checked = per_node_int8_agreement(q, g, {"x": _inputs(shape, N_NODE, 2)})
    print("\n" + "\n".join(f"  {k:28s} {op:18s} {eq:7.2%} equal, max {mx}" for k, (op, eq, mx) in checked.items()))
    ops = {op for op, _, _ in checked.values()}
    assert {"conv2d", "fully_connected"} <= ops
    for name, (op, eq, mx) in checked.items():
        assert mx <= 1, (name, op, mx)
        assert eq >= LOOSE_OPS.get(op, NODE_MIN_EQUAL), (name, op, eq)


def test_int8_graph_structure(workdir):
    q, _ = _quantized("block", True, "int8", str(workdir))
    g = load_onnx(q)
    ops = [n.op for n in g.nodes]
    assert ops[0] == "quantize" and ops[-1] == "dequantize"
    assert ops[1:-1] == ["conv2d", "depthwise_conv2d", "conv2d", "add", "max_pool2d", "avg_pool2d", "reshape",
                         "fully_connected"]
    assert g.is_quantized and g.tensors[g.inputs[0]].dtype == "float32"
    assert g.tensors[g.outputs[0]].dtype == "float32"
    acts = {n.name: n.attrs.get("act") for n in g.nodes if n.op in ("conv2d", "depthwise_conv2d")}
    assert list(acts.values())[:2] == ["relu", "relu"] or list(acts.values())[:2] == ["relu", "relu6"]
    for n in g.nodes:
        if n.op in ("conv2d", "depthwise_conv2d", "fully_connected"):
            x, w, b = (g.tensors[i] for i in n.inputs)
            axis = 3 if n.op == "depthwise_conv2d" else 0
            assert w.dtype == "int8" and w.quant.axis == axis and np.all(w.quant.zero_point == 0)
            assert w.quant.scale.size == w.shape[axis]
            assert b.dtype == "int32"
            np.testing.assert_allclose(b.quant.scale, np.float32(x.quant.s) * w.quant.scale, rtol=1e-6)


def test_uint8_activations_are_shifted_exactly(workdir):
    """QUInt8 activations import as int8 (q - 128, zp - 128); the int8 result is the same."""
    q8, shape = _quantized("block", True, "uint8", str(workdir))
    qi = expose_quantized_outputs(q8)
    g = load_onnx(qi)
    x = _inputs(shape, N_E2E, 3)
    want = ort_session(qi).run(None, {"x": x})[0].astype(np.int64)
    assert want.dtype == np.int64 and q8.graph.node  # uint8 values in [0, 255]
    got = run_ir(g, {"x": x})[0].astype(np.int64) + 128
    d = np.abs(want - got)
    assert d.max() <= E2E_MAX_DIFF and (d == 0).mean() >= E2E_MIN_EQUAL["block"]


def test_dequantized_output_is_float(workdir):
    q, shape = _quantized("gap_head", True, "int8", str(workdir))
    g = load_onnx(q)
    x = _inputs(shape, 8, 4)
    want = ort_session(q).run(None, {"x": x})[0]
    got = run_ir(g, {"x": x})[0]
    assert got.dtype == np.float32
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=0.05)  # softmax of int8 logits, scale 1/256
    assert np.abs(got - want).max() <= 2 / 256 + 1e-7


def test_mixed_precision_only_convs_quantized(workdir):
    """quantize_static(op_types_to_quantize=["Conv"]): Add/pools/Gemm stay float and read
    dequantized int8 tensors; Relu/Clip keep their own QDQ pair and run as int8 relu/relu6."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    model, shape = _block()
    r = np.random.default_rng(5)
    calib = iter([{"x": r.standard_normal((1,) + shape).astype(np.float32)} for _ in range(N_CALIB)])

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(calib, None)

    src, dst = workdir / "mixed_f32.onnx", workdir / "mixed_qdq.onnx"
    onnx.save(model, str(src))
    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"])
    q = onnx.load(str(dst))
    g = load_onnx(q)
    dtypes = {n.op: g.tensors[n.outputs[0]].dtype for n in g.nodes}
    assert dtypes["conv2d"] == dtypes["depthwise_conv2d"] == "int8"
    assert dtypes["add"] == dtypes["avg_pool2d"] == dtypes["fully_connected"] == "float32"
    x = _inputs(shape, N_E2E, 6)
    want = ort_session(q).run(None, {"x": x})[0]
    got = run_ir(g, {"x": x})[0]
    err = np.abs(got - want).max()
    print(f"\nmixed precision: max |ours - onnxruntime| = {err:.3g} (max |y| {np.abs(want).max():.3g})")
    assert err <= 0.01 * np.abs(want).max()  # 1-LSB differences in the int8 convs, carried through float
    assert (want.argmax(1) == got.argmax(1)).mean() >= E2E_MIN_TOP1


def test_int8_graph_input_and_output():
    """A QDQ model with int8 I/O: DequantizeLinear on the graph input gives it its quantization."""
    r = np.random.default_rng(7)
    wq = r.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    ws = (r.uniform(0.5, 1.5, 4) * 0.01).astype(np.float32)
    bq = r.integers(-500, 500, 4).astype(np.int32)
    nodes = [node("DequantizeLinear", ["xq", "xs", "xz"], ["x"]),
             node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0),
             node("DequantizeLinear", ["bq", "bs"], ["b"], axis=0),
             node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             node("QuantizeLinear", ["c", "ys", "yz"], ["yq"])]
    xs, ys = np.float32(0.05), np.float32(0.2)
    inits = [init("xs", xs), init("xz", np.int8(3)), init("wq", wq), init("ws", ws), init("wz", np.zeros(4, np.int8)),
             init("bq", bq), init("bs", (xs * ws).astype(np.float32)), init("ys", ys), init("yz", np.int8(-5))]
    m = make_model(nodes, [helper.make_tensor_value_info("xq", TensorProto.INT8, ["N", 3, 6, 6])],
                   [helper.make_tensor_value_info("yq", TensorProto.INT8, ["N", 4, 6, 6])], inits, 13)
    g = load_onnx(m)
    assert [n.op for n in g.nodes] == ["conv2d"] and g.is_quantized
    assert g.tensors["xq"].quant.zp == 3 and g.tensors["yq"].quant.zp == -5
    np.testing.assert_array_equal(g.tensors[g.nodes[0].inputs[2]].data, bq)  # bias ints taken as written
    xq = r.integers(-128, 128, (20, 3, 6, 6)).astype(np.int8)
    want = ort_session(m).run(None, {"xq": xq})[0].astype(np.int64)
    got = run_ir(g, {"xq": xq})[0].astype(np.int64)
    d = np.abs(want - got)
    assert d.max() <= 1 and (d == 0).mean() >= NODE_MIN_EQUAL
