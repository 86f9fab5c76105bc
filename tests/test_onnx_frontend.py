"""ONNX reader: every supported op, several shapes and attributes, opsets 13 and 21, float output of
the reference interpreter == onnxruntime (rtol 1e-5, atol 1e-6); plus the error contract."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from microtrain.compiler.errors import ModelFormatError, UnsupportedOpError
from microtrain.compiler.frontend import load_model
from microtrain.compiler.frontend.onnx_reader import SUPPORTED_ONNX_OPS, load_onnx
from models.onnx_helpers import init, make_model, run_ir, run_ort, vi

pytest.importorskip("onnxruntime")

OPSETS = (13, 21)
RTOL, ATOL = 1e-5, 1e-6
node = helper.make_node


def _w(seed: int, *shape, scale: float | None = None) -> np.ndarray:
    """Weights scaled so outputs stay O(1) (fan-in = product of all but the first dim)."""
    r = np.random.default_rng(seed)
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    s = scale if scale is not None else 1.0 / np.sqrt(fan_in)
    return (r.standard_normal(shape) * s).astype(np.float32)


def _check(model: onnx.ModelProto, batch: int | None = None, seeds=(0, 1)):
    """Import ``model`` and compare against onnxruntime on random inputs; returns the graph."""
    g = load_onnx(model)
    for seed in seeds:
        r = np.random.default_rng(100 + seed)
        feeds = {}
        for i in model.graph.input:
            if i.name in {t.name for t in model.graph.initializer}:
                continue
            dims = [d.dim_value if d.HasField("dim_value") else (batch or 1) for d in i.type.tensor_type.shape.dim]
            feeds[i.name] = r.standard_normal(dims).astype(np.float32)
        want = run_ort(model, feeds)
        got = run_ir(g, feeds)
        assert len(want) == len(got)
        for w, o in zip(want, got):
            assert o.shape == w.shape
            np.testing.assert_allclose(o, w, rtol=RTOL, atol=ATOL)
    return g


def _ops(g) -> list[str]:
    return [n.op for n in g.nodes]


# ---------------------------------------------------------------------------------------------
# Conv
# ---------------------------------------------------------------------------------------------
CONV_CASES = {
    # name: (input NCHW, weight shape, attrs, bias)
    "k3_pad1": ((1, 3, 9, 9), (8, 3, 3, 3), dict(pads=[1, 1, 1, 1]), True),
    "k1_nobias": ((1, 4, 5, 6), (6, 4, 1, 1), {}, False),
    "k3_s2_asym": ((1, 3, 9, 8), (5, 3, 3, 3), dict(strides=[2, 2], pads=[0, 1, 1, 0]), True),
    "k5_dil2": ((1, 2, 12, 11), (4, 2, 5, 5), dict(dilations=[2, 2], pads=[2, 3, 1, 2]), True),
    "k3x2_rect_stride": ((1, 3, 10, 9), (4, 3, 3, 2), dict(strides=[1, 2], kernel_shape=[3, 2]), True),
    "same_upper_s2": ((1, 3, 10, 7), (4, 3, 3, 3), dict(auto_pad="SAME_UPPER", strides=[2, 2]), True),
    "same_lower_k4": ((1, 3, 9, 9), (4, 3, 4, 4), dict(auto_pad="SAME_LOWER", strides=[2, 2]), True),
    "valid": ((1, 3, 8, 8), (4, 3, 3, 3), dict(auto_pad="VALID", strides=[2, 1]), False),
    "dw_k3": ((1, 6, 8, 8), (6, 1, 3, 3), dict(group=6, pads=[1, 1, 1, 1]), True),
    "dw_mult2_s2": ((1, 4, 9, 9), (8, 1, 3, 3), dict(group=4, strides=[2, 2]), True),
    "dw_same_upper": ((1, 5, 7, 10), (5, 1, 5, 5), dict(group=5, auto_pad="SAME_UPPER", strides=[2, 2]), False),
    "dw_dil": ((1, 3, 10, 10), (3, 1, 3, 3), dict(group=3, dilations=[2, 1], pads=[2, 1, 2, 1]), True),
    "cin1_group1": ((1, 1, 6, 6), (3, 1, 3, 3), dict(group=1), True),
}


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv(case, opset):
    xs, ws, attrs, bias = CONV_CASES[case]
    inits = [init("W", _w(1, *ws))]
    ins = ["x", "W"]
    if bias:
        inits.append(init("B", _w(2, ws[0], scale=0.5)))
        ins.append("B")
    m = make_model([node("Conv", ins, ["y"], name="conv", **attrs)], [("x", xs)], [("y", None)], inits, opset)
    g = _check(m)
    op = "depthwise_conv2d" if attrs.get("group", 1) > 1 else "conv2d"
    assert _ops(g) == [op]
    w = g.tensors[g.nodes[0].inputs[1]]
    assert w.shape == ((1, ws[2], ws[3], ws[0]) if op == "depthwise_conv2d" else (ws[0], ws[2], ws[3], ws[1]))
    assert g.tensors["x"].shape == (xs[0], xs[2], xs[3], xs[1])
    assert g.meta["input_layout"] == "NCHW" and g.meta["input_shape"] == list(xs)


def test_conv_symbolic_batch_runs_any_batch():
    m = make_model([node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1])], [("x", ["N", 3, 6, 6])], [("y", None)],
                   [init("W", _w(3, 4, 3, 3, 3))])
    g = _check(m, batch=3)
    assert g.tensors["x"].shape == (1, 6, 6, 3)
    assert g.meta["input_shape"] == [1, 3, 6, 6]


# ---------------------------------------------------------------------------------------------
# Gemm / MatMul
# ---------------------------------------------------------------------------------------------
GEMM_CASES = {
    "transB_biasM": (dict(transB=1), (6, 10), (6,)),
    "noTrans_bias1M_alpha_beta": (dict(alpha=0.5, beta=2.0), (10, 6), (1, 6)),
    "alpha_noC": (dict(transB=1, alpha=0.3), (7, 10), None),
    "scalarC": (dict(transB=1, beta=0.7), (5, 10), ()),
    "C_1x1": (dict(), (10, 4), (1, 1)),
}


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("case", sorted(GEMM_CASES))
def test_gemm(case, opset):
    attrs, bshape, cshape = GEMM_CASES[case]
    inits = [init("B", _w(4, *bshape, scale=0.3))]
    ins = ["x", "B"]
    if cshape is not None:
        inits.append(init("C", _w(5, *cshape, scale=0.5) if cshape else np.float32(0.25)))
        ins.append("C")
    m = make_model([node("Gemm", ins, ["y"], **attrs)], [("x", (1, 10))], [("y", None)], inits, opset)
    g = _check(m)
    assert _ops(g) == ["fully_connected"]


@pytest.mark.parametrize("opset", OPSETS)
def test_gemm_fixed_batch(opset):
    m = make_model([node("Gemm", ["x", "B", "C"], ["y"], transB=1)], [("x", (3, 8))], [("y", None)],
                   [init("B", _w(6, 4, 8)), init("C", _w(7, 4))], opset)
    _check(m)


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("bias", ["none", "after", "before"])
def test_matmul(opset, bias):
    nodes = [node("MatMul", ["x", "B"], ["mm"])]
    inits = [init("B", _w(8, 12, 5, scale=0.3))]
    out = "mm"
    if bias != "none":
        inits.append(init("b", _w(9, 5, scale=0.5)))
        nodes.append(node("Add", ["mm", "b"] if bias == "after" else ["b", "mm"], ["y"]))
        out = "y"
    m = make_model(nodes, [("x", ["N", 12])], [(out, None)], inits, opset)
    g = _check(m, batch=2)
    assert _ops(g) == ["fully_connected"]  # the bias Add is folded
    if bias != "none":
        np.testing.assert_array_equal(g.tensors[g.nodes[0].inputs[2]].data, onnx.numpy_helper.to_array(inits[1]))


# ---------------------------------------------------------------------------------------------
# Relu / Clip
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("shape", [(1, 3, 5, 4), (2, 7)])
def test_relu_standalone(opset, shape):
    m = make_model([node("Relu", ["x"], ["y"])], [("x", shape)], [("y", None)], [], opset)
    g = _check(m)
    assert _ops(g) == ["relu"]


def _conv_then(act_nodes, opset, extra_inits=(), out="y"):
    nodes = [node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], name="conv")] + act_nodes
    inits = [init("W", _w(10, 6, 3, 3, 3, scale=1.0)), init("B", _w(11, 6))] + list(extra_inits)
    return make_model(nodes, [("x", (1, 3, 7, 7))], [(out, None)], inits, opset)


@pytest.mark.parametrize("opset", OPSETS)
def test_relu_fused_into_conv(opset):
    g = _check(_conv_then([node("Relu", ["c"], ["y"])], opset))
    assert _ops(g) == ["conv2d"] and g.nodes[0].attrs["act"] == "relu"
    assert g.outputs == ["y"]


@pytest.mark.parametrize("opset", OPSETS)
def test_relu_not_fused_when_conv_output_has_other_reader(opset):
    m = _conv_then([node("Relu", ["c"], ["r"]), node("Add", ["r", "c"], ["y"])], opset)
    g = _check(m)
    assert _ops(g) == ["conv2d", "relu", "add"]
    assert g.nodes[0].attrs["act"] == "none"


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("bounds", ["0_6", "0_none", "0_inf"])
def test_clip(opset, bounds):
    lo = init("lo", np.float32(0.0))
    hi = {"0_6": np.float32(6.0), "0_none": None, "0_inf": np.float32(np.inf)}[bounds]
    inits = [lo] + ([init("hi", hi)] if hi is not None else [])
    ins = ["c", "lo"] + (["hi"] if hi is not None else [])
    g = _check(_conv_then([node("Clip", ins, ["y"])], opset, inits))
    assert _ops(g) == ["conv2d"]
    assert g.nodes[0].attrs["act"] == ("relu6" if bounds == "0_6" else "relu")


@pytest.mark.parametrize("opset", OPSETS)
def test_clip_standalone_on_input(opset):
    m = make_model([node("Clip", ["x", "lo", "hi"], ["y"])], [("x", (1, 2, 3, 3))], [("y", None)],
                   [init("lo", np.float32(0)), init("hi", np.float32(6))], opset)
    r = np.random.default_rng(0)
    g = load_onnx(m)
    assert _ops(g) == ["relu6"]
    x = (r.standard_normal((1, 2, 3, 3)) * 5).astype(np.float32)
    np.testing.assert_allclose(run_ir(g, {"x": x})[0], run_ort(m, {"x": x})[0], rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------------------------
# Add
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("opset", OPSETS)
def test_add_residual_and_fused_relu(opset):
    nodes = [node("Conv", ["x", "W1", "B1"], ["a"], pads=[1, 1, 1, 1]),
             node("Relu", ["a"], ["ar"]),
             node("Conv", ["ar", "W2"], ["b"], pads=[1, 1, 1, 1]),
             node("Add", ["b", "x"], ["s"]),
             node("Relu", ["s"], ["y"])]
    inits = [init("W1", _w(12, 4, 4, 3, 3)), init("B1", _w(13, 4)), init("W2", _w(14, 4, 4, 3, 3))]
    g = _check(make_model(nodes, [("x", (1, 4, 6, 6))], [("y", None)], inits, opset))
    assert _ops(g) == ["conv2d", "conv2d", "add"]
    assert [n.attrs["act"] for n in g.nodes] == ["relu", "none", "relu"]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("cshape", [(6, 1, 1), (1, 6, 1, 1), (6, 1, 1, 1)[1:], ()])
def test_add_constant_bias_folds_into_conv(opset, cshape):
    c = _w(15, *cshape, scale=0.5) if cshape else np.float32(0.75)
    g = _check(_conv_then([node("Add", ["c", "k"], ["y"])], opset, [init("k", c)]))
    assert _ops(g) == ["conv2d"]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("cshape", [(1, 3, 1, 1), (3, 1, 5), (5,), ()])
def test_add_constant_to_input(opset, cshape):
    c = _w(16, *cshape, scale=0.5) if cshape else np.float32(-0.5)
    m = make_model([node("Add", ["k", "x"], ["y"])], [("x", (1, 3, 4, 5))], [("y", None)], [init("k", c)], opset)
    g = _check(m)
    assert _ops(g) == ["add"]


@pytest.mark.parametrize("opset", OPSETS)
def test_add_broadcast_activations(opset):
    nodes = [node("GlobalAveragePool", ["x"], ["m"]), node("Add", ["x", "m"], ["y"])]
    _check(make_model(nodes, [("x", (1, 5, 4, 3))], [("y", None)], [], opset))


@pytest.mark.parametrize("opset", OPSETS)
def test_add_2d(opset):
    nodes = [node("Gemm", ["x", "B1"], ["a"], transB=1), node("Gemm", ["x", "B2"], ["b"], transB=1),
             node("Add", ["a", "b"], ["y"])]
    _check(make_model(nodes, [("x", (2, 6))], [("y", None)], [init("B1", _w(17, 4, 6)), init("B2", _w(18, 4, 6))],
                      opset))


# ---------------------------------------------------------------------------------------------
# Pools
# ---------------------------------------------------------------------------------------------
POOL_CASES = {
    "k2_s2": ((1, 3, 8, 8), dict(kernel_shape=[2, 2], strides=[2, 2])),
    "k3_s2_pad1": ((1, 4, 9, 7), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),
    "k3_s1_asym": ((1, 2, 6, 6), dict(kernel_shape=[3, 3], pads=[0, 1, 2, 1])),
    "k3x2_rect": ((1, 3, 7, 8), dict(kernel_shape=[3, 2], strides=[1, 2])),
    "same_upper": ((1, 3, 7, 7), dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")),
    "same_lower": ((1, 3, 8, 6), dict(kernel_shape=[2, 2], strides=[2, 1], auto_pad="SAME_LOWER")),
    "valid": ((1, 2, 7, 7), dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="VALID")),
    "ceil_same_size": ((1, 2, 8, 8), dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)),
}


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("case", sorted(POOL_CASES))
def test_maxpool(case, opset):
    xs, attrs = POOL_CASES[case]
    g = _check(make_model([node("MaxPool", ["x"], ["y"], **attrs)], [("x", xs)], [("y", None)], [], opset))
    assert _ops(g) == ["max_pool2d"]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("case", sorted(POOL_CASES))
def test_avgpool(case, opset, count_include_pad):
    xs, attrs = POOL_CASES[case]
    m = make_model([node("AveragePool", ["x"], ["y"], count_include_pad=count_include_pad, **attrs)],
                   [("x", xs)], [("y", None)], [], opset)
    g = _check(m)
    assert _ops(g) == ["avg_pool2d"]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("shape", [(1, 3, 5, 5), (2, 8, 4, 7), (1, 4, 1, 1)])
def test_global_average_pool(opset, shape):
    g = _check(make_model([node("GlobalAveragePool", ["x"], ["y"])], [("x", shape)], [("y", None)], [], opset))
    assert _ops(g) == ["mean"]


# ---------------------------------------------------------------------------------------------
# Flatten / Reshape / Squeeze / Unsqueeze
# ---------------------------------------------------------------------------------------------
def _conv_gap():
    return ([node("Conv", ["x", "W"], ["c"], pads=[1, 1, 1, 1]), node("GlobalAveragePool", ["c"], ["p"])],
            [init("W", _w(20, 6, 3, 3, 3))])


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("axis", [1, -3])
def test_flatten_after_gap(opset, axis):
    nodes, inits = _conv_gap()
    nodes += [node("Flatten", ["p"], ["f"], axis=axis), node("Gemm", ["f", "B", "C"], ["y"], transB=1)]
    inits += [init("B", _w(21, 4, 6)), init("C", _w(22, 4))]
    g = _check(make_model(nodes, [("x", (1, 3, 5, 5))], [("y", None)], inits, opset))
    assert _ops(g) == ["conv2d", "mean", "reshape", "fully_connected"]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("how", ["flatten", "reshape", "reshape_0", "flatten_relu"])
@pytest.mark.parametrize("fc", ["gemm_transB", "gemm", "matmul"])
def test_flatten_spatial_feeds_fc_with_permuted_weights(opset, how, fc):
    nodes = [node("Conv", ["x", "W"], ["c"], strides=[2, 2])]
    inits = [init("W", _w(23, 5, 3, 3, 3))]  # -> [1, 5, 3, 4]: H*W = 12
    if how.startswith("flatten"):
        nodes.append(node("Flatten", ["c"], ["f"]))
    else:
        inits.append(init("shape", np.array([1, -1] if how == "reshape" else [0, 60], np.int64)))
        nodes.append(node("Reshape", ["c", "shape"], ["f"]))
    if how == "flatten_relu":
        nodes.append(node("Relu", ["f"], ["f2"]))
        f = "f2"
    else:
        f = "f"
    if fc == "gemm_transB":
        nodes.append(node("Gemm", [f, "B"], ["y"], transB=1))
        inits.append(init("B", _w(24, 7, 60)))
    elif fc == "gemm":
        nodes.append(node("Gemm", [f, "B"], ["y"]))
        inits.append(init("B", _w(24, 60, 7, scale=0.13)))
    else:
        nodes.append(node("MatMul", [f, "B"], ["y"]))
        inits.append(init("B", _w(24, 60, 7, scale=0.13)))
    g = _check(make_model(nodes, [("x", (1, 3, 8, 9))], [("y", None)], inits, opset))
    assert "transpose" not in _ops(g)


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("spec", [[1, -1], [0, -1], [-1, 6]])
def test_reshape_pooled_to_2d(opset, spec):
    nodes, inits = _conv_gap()
    nodes += [node("Reshape", ["p", "s"], ["y"])]
    inits += [init("s", np.array(spec, np.int64))]
    g = _check(make_model(nodes, [("x", (1, 3, 4, 4))], [("y", None)], inits, opset))
    assert _ops(g) == ["conv2d", "mean", "reshape"]


@pytest.mark.parametrize("opset", OPSETS)
def test_reshape_spatial_merge_keeps_channels(opset):
    # [1,4,6,4] -> [1,4,12,2] keeps every channel's row-major spatial order: a plain NHWC reshape.
    nodes = [node("Reshape", ["x", "s"], ["r"]), node("Conv", ["r", "W"], ["y"], pads=[1, 1, 1, 1])]
    inits = [init("s", np.array([1, 4, 12, 2], np.int64)), init("W", _w(25, 3, 4, 3, 3))]
    _check(make_model(nodes, [("x", (1, 4, 6, 4))], [("y", None)], inits, opset))


@pytest.mark.parametrize("opset", OPSETS)
def test_reshape_2d_to_4d_and_back_and_roundtrip(opset):
    nodes = [node("Gemm", ["x", "B"], ["a"], transB=1), node("Reshape", ["a", "s4"], ["a4"]),
             node("Conv", ["a4", "W"], ["c"]), node("Flatten", ["c"], ["y"])]
    inits = [init("B", _w(26, 8, 5)), init("s4", np.array([-1, 8, 1, 1], np.int64)), init("W", _w(27, 3, 8, 1, 1))]
    g = _check(make_model(nodes, [("x", (1, 5))], [("y", None)], inits, opset))
    assert _ops(g) == ["fully_connected", "reshape", "conv2d", "reshape"]


@pytest.mark.parametrize("opset", OPSETS)
def test_reshape_flat_roundtrip_to_nchw(opset):
    nodes = [node("Flatten", ["x"], ["f"]), node("Reshape", ["f", "s"], ["r"]),
             node("Conv", ["r", "W"], ["y"], pads=[1, 1, 1, 1])]
    inits = [init("s", np.array([1, 3, 4, 5], np.int64)), init("W", _w(28, 2, 3, 3, 3))]
    _check(make_model(nodes, [("x", (1, 3, 4, 5))], [("y", None)], inits, opset))


@pytest.mark.parametrize("opset", OPSETS)
def test_squeeze_unsqueeze(opset):
    nodes, inits = _conv_gap()
    nodes += [node("Squeeze", ["p", "ax"], ["s"]), node("Gemm", ["s", "B"], ["g"], transB=1),
              node("Unsqueeze", ["g", "ax2"], ["u"]), node("Conv", ["u", "W2"], ["y"])]
    inits += [init("ax", np.array([2, 3], np.int64)), init("B", _w(29, 5, 6)),
              init("ax2", np.array([-1, 2], np.int64)), init("W2", _w(30, 4, 5, 1, 1))]
    g = _check(make_model(nodes, [("x", (1, 3, 5, 5))], [("y", None)], inits, opset))
    assert _ops(g) == ["conv2d", "mean", "reshape", "fully_connected", "reshape", "conv2d"]


@pytest.mark.parametrize("opset", OPSETS)
def test_squeeze_without_axes_fixed_batch(opset):
    nodes = [node("GlobalAveragePool", ["x"], ["p"]), node("Squeeze", ["p"], ["y"])]
    _check(make_model(nodes, [("x", (2, 6, 3, 3))], [("y", None)], [], opset))


# ---------------------------------------------------------------------------------------------
# BatchNormalization (folded)
# ---------------------------------------------------------------------------------------------
def _bn_inits(prefix: str, c: int, seed: int):
    r = np.random.default_rng(seed)
    return [init(f"{prefix}_s", r.uniform(0.5, 1.5, c).astype(np.float32)),
            init(f"{prefix}_b", (r.standard_normal(c) * 0.2).astype(np.float32)),
            init(f"{prefix}_m", (r.standard_normal(c) * 0.3).astype(np.float32)),
            init(f"{prefix}_v", r.uniform(0.3, 2.0, c).astype(np.float32))]


def _bn(x, y, prefix, **kw):
    return node("BatchNormalization", [x] + [f"{prefix}_{k}" for k in "sbmv"], [y], **kw)


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("kind", ["conv", "conv_nobias", "dw", "gemm"])
def test_batchnorm_folded(opset, kind):
    if kind == "gemm":
        nodes = [node("Gemm", ["x", "B", "C"], ["a"], transB=1), _bn("a", "y", "bn", epsilon=1e-3)]
        inits = [init("B", _w(31, 6, 10)), init("C", _w(32, 6))] + _bn_inits("bn", 6, 0)
        xs = (1, 10)
    else:
        grp = 4 if kind == "dw" else 1
        ins = ["x", "W"] + (["B"] if kind != "conv_nobias" else [])
        nodes = [node("Conv", ins, ["a"], pads=[1, 1, 1, 1], group=grp), _bn("a", "b", "bn"),
                 node("Clip", ["b", "lo", "hi"], ["y"])]
        inits = [init("W", _w(33, 4, 4 // grp, 3, 3)), init("B", _w(34, 4)), init("lo", np.float32(0)),
                 init("hi", np.float32(6))] + _bn_inits("bn", 4, 1)
        xs = (1, 4, 6, 6)
    g = _check(make_model(nodes, [("x", xs)], [("y", None)], inits, opset))
    assert "batch_norm" not in _ops(g)
    assert len(g.nodes) == 1


# ---------------------------------------------------------------------------------------------
# Pad, Softmax, Identity, Dropout, Constant
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("case", ["zero_before_conv", "value_before_conv", "channels", "before_maxpool"])
def test_pad(opset, case):
    pads = {"channels": [0, 1, 0, 0, 0, 2, 0, 0]}.get(case, [0, 0, 1, 2, 0, 0, 2, 0])
    value = 1.5 if case == "value_before_conv" else 0.0
    nodes = [node("Pad", ["x", "p", "v"], ["px"], mode="constant")]
    inits = [init("p", np.array(pads, np.int64)), init("v", np.float32(value))]
    if case == "before_maxpool":
        nodes.append(node("MaxPool", ["px"], ["y"], kernel_shape=[2, 2], strides=[2, 2]))
    elif case == "channels":
        nodes.append(node("Conv", ["px", "W"], ["y"]))
        inits.append(init("W", _w(35, 3, 6, 1, 1)))
    else:
        nodes.append(node("Conv", ["px", "W"], ["y"]))
        inits.append(init("W", _w(35, 3, 3, 3, 3)))
    g = _check(make_model(nodes, [("x", (1, 3, 6, 5))], [("y", None)], inits, opset))
    if case == "zero_before_conv":
        assert _ops(g) == ["conv2d"] and g.nodes[0].attrs["pad"] == (1, 2, 2, 0)


def test_pad_with_axes_opset21():
    nodes = [node("Pad", ["x", "p", "", "axes"], ["y"])]
    inits = [init("p", np.array([1, 0, 2, 3], np.int64)), init("axes", np.array([2, -1], np.int64))]
    g = _check(make_model(nodes, [("x", (1, 2, 3, 4))], [("y", None)], inits, 21))
    assert _ops(g) == ["pad"]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("axis", [None, 1, -1])
def test_softmax_at_output(opset, axis):
    kw = {} if axis is None else {"axis": axis}
    nodes = [node("Gemm", ["x", "B"], ["l"], transB=1), node("Softmax", ["l"], ["y"], **kw)]
    g = _check(make_model(nodes, [("x", (2, 6))], [("y", None)], [init("B", _w(36, 5, 6, scale=1.0))], opset))
    assert _ops(g) == ["fully_connected", "softmax"]


@pytest.mark.parametrize("opset", OPSETS)
def test_softmax_channel_axis_4d(opset):
    nodes = [node("Conv", ["x", "W"], ["c"]), node("Softmax", ["c"], ["y"], axis=1)]
    _check(make_model(nodes, [("x", (1, 3, 4, 4))], [("y", None)], [init("W", _w(37, 5, 3, 1, 1))], opset))


@pytest.mark.parametrize("opset", OPSETS)
def test_identity_and_dropout_removed(opset):
    nodes = [node("Identity", ["x"], ["i"]), node("Conv", ["i", "W"], ["c"]),
             node("Dropout", ["c", "ratio"], ["d"]), node("Relu", ["d"], ["r"]), node("Identity", ["r"], ["y"])]
    inits = [init("W", _w(38, 4, 3, 1, 1)), init("ratio", np.float32(0.3))]
    g = _check(make_model(nodes, [("x", (1, 3, 4, 4))], [("y", None)], inits, opset))
    assert _ops(g) == ["conv2d"] and g.outputs == ["y"]


@pytest.mark.parametrize("opset", OPSETS)
def test_identity_only_model(opset):
    g = _check(make_model([node("Identity", ["x"], ["y"])], [("x", (1, 2, 3, 3))], [("y", None)], [], opset))
    assert g.nodes == [] and g.outputs == ["x"]


@pytest.mark.parametrize("opset", OPSETS)
def test_constant_nodes(opset):
    w = _w(39, 4, 3, 3, 3)
    nodes = [node("Constant", [], ["W"], value=onnx.numpy_helper.from_array(w)),
             node("Constant", [], ["k"], value_floats=[0.1, -0.2, 0.3, 0.4]),
             node("Constant", [], ["shape"], value_ints=[1, -1]),
             node("Constant", [], ["one"], value_float=1.0),
             node("Conv", ["x", "W"], ["c"]),
             node("GlobalAveragePool", ["c"], ["p"]),
             node("Reshape", ["p", "shape"], ["f"]),
             node("Add", ["k", "one"], ["k1"]),
             node("Add", ["f", "k1"], ["y"])]
    _check(make_model(nodes, [("x", (1, 3, 5, 5))], [("y", None)], [], opset))


def test_multiple_inputs_and_outputs():
    nodes = [node("Conv", ["a", "W"], ["c"], pads=[1, 1, 1, 1]), node("Add", ["c", "b"], ["s"]),
             node("Relu", ["s"], ["y1"]), node("GlobalAveragePool", ["s"], ["p"]), node("Flatten", ["p"], ["y2"])]
    m = make_model(nodes, [("a", (1, 3, 4, 4)), ("b", (1, 5, 4, 4))], [("y1", None), ("y2", None)],
                   [init("W", _w(40, 5, 3, 3, 3))], 13)
    g = _check(m)
    assert [o["layout"] for o in g.meta["outputs"]] == ["NCHW", "NC"]


def test_load_from_path_and_bytes(tmp_path):
    m = make_model([node("Relu", ["x"], ["y"])], [("x", (1, 3))], [("y", None)])
    p = tmp_path / "m.onnx"
    onnx.save(m, str(p))
    for src in (str(p), p, m.SerializeToString()):
        assert [n.op for n in load_onnx(src).nodes] == ["relu"]
    g = load_model(p)
    assert g.meta["source"] == str(p) and g.meta["format"] == "onnx"


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
def test_unsupported_op_message_names_op_node_and_list():
    m = make_model([node("Sigmoid", ["x"], ["y"], name="sig0")], [("x", (1, 4))], [("y", None)])
    with pytest.raises(UnsupportedOpError) as e:
        load_onnx(m)
    msg = str(e.value)
    assert "'Sigmoid'" in msg and "'sig0'" in msg and "\n" not in msg
    for op in SUPPORTED_ONNX_OPS:
        assert op in msg
    assert e.value.op_type == "Sigmoid" and e.value.node_name == "sig0"


def _conv_model(**attrs):
    return make_model([node("Conv", ["x", "W"], ["y"], name="c0", **attrs)], [("x", (1, 4, 6, 6))], [("y", None)],
                      [init("W", _w(41, 4, 4 // attrs.get("group", 1), 3, 3))])


UNSUPPORTED = {
    "grouped_conv": (lambda: _conv_model(group=2), "Conv", "group"),
    "clip_bounds": (lambda: make_model([node("Clip", ["x", "lo", "hi"], ["y"], name="n")], [("x", (1, 3))],
                                       [("y", None)], [init("lo", np.float32(-1)), init("hi", np.float32(1))]),
                    "Clip", "Clip(min=-1"),
    "softmax_not_output": (lambda: make_model([node("Softmax", ["x"], ["s"], name="n"), node("Relu", ["s"], ["y"])],
                                              [("x", (1, 3))], [("y", None)]), "Softmax", "graph output"),
    "bn_on_input": (lambda: make_model([_bn("x", "y", "bn")], [("x", (1, 3, 2, 2))], [("y", None)],
                                       _bn_inits("bn", 3, 2)), "BatchNormalization", "graph input"),
    "bn_after_relu": (lambda: make_model([node("Conv", ["x", "W"], ["c"]), node("Relu", ["c"], ["r"]),
                                          _bn("r", "y", "bn", name="n")], [("x", (1, 3, 4, 4))], [("y", None)],
                                         [init("W", _w(42, 3, 3, 1, 1))] + _bn_inits("bn", 3, 3)),
                      "BatchNormalization", "relu"),
    "bn_shared_output": (lambda: make_model([node("Conv", ["x", "W"], ["c"]), _bn("c", "b", "bn"),
                                             node("Add", ["b", "c"], ["y"])], [("x", (1, 3, 4, 4))], [("y", None)],
                                            [init("W", _w(42, 3, 3, 1, 1))] + _bn_inits("bn", 3, 3)),
                         "BatchNormalization", "also read"),
    "flatten_to_output": (lambda: make_model([node("Flatten", ["x"], ["y"], name="n")], [("x", (1, 2, 3, 3))],
                                             [("y", None)]), "Flatten", "H*W > 1"),
    "flatten_to_add": (lambda: make_model([node("Flatten", ["x"], ["f"]), node("Add", ["f", "k"], ["y"], name="n")],
                                          [("x", (1, 2, 3, 3))], [("y", None)], [init("k", _w(1, 18))]),
                       "Add", "flattened"),
    "ceil_mode": (lambda: make_model([node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1,
                                           name="n")], [("x", (1, 1, 5, 5))], [("y", None)]), "MaxPool", "ceil_mode"),
    "pool_dilation": (lambda: make_model([node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], dilations=[2, 2],
                                               name="n")], [("x", (1, 1, 5, 5))], [("y", None)]), "MaxPool",
                      "dilations"),
    "gemm_transA": (lambda: make_model([node("Gemm", ["x", "B"], ["y"], transA=1, name="n")], [("x", (4, 1))],
                                       [("y", None)], [init("B", _w(1, 4, 3))]), "Gemm", "transA"),
    "conv1d": (lambda: make_model([node("Conv", ["x", "W"], ["y"], name="n")], [("x", (1, 2, 8))], [("y", None)],
                                  [init("W", _w(1, 3, 2, 3))]), "Conv", "rank 3"),
    "conv_weights_input": (lambda: make_model([node("Conv", ["x", "W"], ["y"], name="n")],
                                              [("x", (1, 2, 5, 5)), ("W", (3, 2, 3, 3))], [("y", None)]),
                           "Conv", "constant"),
    "pad_reflect": (lambda: make_model([node("Pad", ["x", "p"], ["y"], mode="reflect", name="n")],
                                       [("x", (1, 2, 5, 5))], [("y", None)],
                                       [init("p", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))]), "Pad", "reflect"),
    "reshape_transpose": (lambda: make_model([node("Reshape", ["x", "s"], ["y"], name="n")], [("x", (1, 2, 3, 4))],
                                             [("y", None)], [init("s", np.array([1, 3, 2, 4], np.int64))]),
                          "Reshape", "transpose"),
    "reshape_batch": (lambda: make_model([node("Reshape", ["x", "s"], ["y"], name="n")], [("x", (2, 6))],
                                         [("y", None)], [init("s", np.array([4, 3], np.int64))]),
                      "Reshape", "batch"),
    "rank3_input": (lambda: make_model([node("Relu", ["x"], ["y"], name="n")], [("x", (1, 3, 4))], [("y", None)]),
                    "Relu", "rank 3"),
    "other_domain": (lambda: _custom_domain_model(), "com.microsoft.FusedConv", ""),
}


def _custom_domain_model():
    g = helper.make_graph([node("FusedConv", ["x"], ["y"], domain="com.microsoft", name="n")], "t",
                          [vi("x", (1, 3))], [vi("y", (1, 3))])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)])


@pytest.mark.parametrize("case", sorted(UNSUPPORTED))
def test_unsupported_configurations(case):
    build, op, detail = UNSUPPORTED[case]
    with pytest.raises(UnsupportedOpError) as e:
        load_onnx(build())
    msg = str(e.value)
    assert f"'{op}'" in msg and detail in msg and "\n" not in msg, msg
    assert "supported: Add, AveragePool" in msg


def test_truncated_and_corrupt_bytes():
    good = _conv_model().SerializeToString()
    for bad in (good[: len(good) // 2], good[:7], b"\xff" * 64, b"not a model at all", b"",
                bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8))):
        with pytest.raises(ModelFormatError) as e:
            load_onnx(bad)
        assert "\n" not in str(e.value)


def test_fuzzed_bytes_raise_only_our_errors():
    good = bytearray(_conv_then([node("Relu", ["c"], ["y"])], 13).SerializeToString())
    r = np.random.default_rng(7)
    for _ in range(150):
        b = bytearray(good)
        for pos in r.integers(0, len(b), r.integers(1, 6)):
            b[pos] = int(r.integers(0, 256))
        try:
            load_onnx(bytes(b))
        except (ModelFormatError, UnsupportedOpError) as e:
            assert "\n" not in str(e)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFormatError):
        load_onnx(tmp_path / "nope.onnx")


def test_missing_initializer_names_node():
    g = helper.make_graph([node("Conv", ["x", "W"], ["y"], name="conv7")], "t", [vi("x", (1, 2, 4, 4))],
                          [vi("y", None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(ModelFormatError, match="conv7.*'W'"):
        load_onnx(m)


def test_dangling_graph_output():
    g = helper.make_graph([node("Relu", ["x"], ["y"])], "t", [vi("x", (1, 2))], [vi("z", None)])
    with pytest.raises(ModelFormatError, match="'z'"):
        load_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))


def test_bad_attribute_names_node():
    n = node("Conv", ["x", "W"], ["y"], name="conv9")
    n.attribute.append(helper.make_attribute("strides", [1.0, 2.0]))
    g = helper.make_graph([n], "t", [vi("x", (1, 2, 4, 4))], [vi("y", None)], [init("W", _w(1, 2, 2, 3, 3))])
    with pytest.raises(ModelFormatError, match="conv9"):
        load_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))


def test_bad_initializer_data():
    t = init("W", _w(1, 2, 2, 3, 3))
    t.raw_data = t.raw_data[:-4]
    g = helper.make_graph([node("Conv", ["x", "W"], ["y"])], "t", [vi("x", (1, 2, 4, 4))], [vi("y", None)], [t])
    with pytest.raises(ModelFormatError):
        load_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))


def test_old_opset_rejected():
    g = helper.make_graph([node("Relu", ["x"], ["y"])], "t", [vi("x", (1, 2))], [vi("y", None)])
    with pytest.raises(ModelFormatError, match="opset 11"):
        load_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 11)]))


def test_symbolic_spatial_dim_rejected():
    m = make_model([node("Relu", ["x"], ["y"])], [("x", ["N", 3, "H", 4])], [("y", None)])
    with pytest.raises(ModelFormatError, match="symbolic"):
        load_onnx(m)


def test_non_float_input_rejected():
    g = helper.make_graph([node("Relu", ["x"], ["y"], name="r")], "t", [vi("x", (1, 2), TensorProto.DOUBLE)],
                          [vi("y", None, TensorProto.DOUBLE)])
    with pytest.raises(UnsupportedOpError, match="element type"):
        load_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))


# ---------------------------------------------------------------------------------------------
# passes on hand-built IR graphs
# ---------------------------------------------------------------------------------------------
def test_passes_remove_noops_and_keep_function():
    from microtrain.compiler import passes
    from microtrain.compiler.interpreter import run
    from microtrain.compiler.ir import Graph, Node, Tensor, verify

    g = Graph()
    g.add_tensor(Tensor("x", (1, 4, 4, 3), "float32"))
    g.inputs = ["x"]
    for name, shape in (("r", (1, 4, 4, 3)), ("p", (1, 4, 4, 3)), ("c", (1, 4, 4, 2)), ("y", (1, 4, 4, 2))):
        g.add_tensor(Tensor(name, shape, "float32"))
    g.const("w", _w(50, 2, 1, 1, 3))
    g.const("b", np.zeros(2, np.float32))
    g.nodes = [Node("reshape", "same", ["x"], ["r"], {"shape": (1, 4, 4, 3)}),
               Node("pad", "zero", ["r"], ["p"], {"pads": ((0, 0), (0, 0), (0, 0), (0, 0))}),
               Node("conv2d", "conv", ["p", "w", "b"], ["c"], {"act": "none"}),
               Node("relu", "relu", ["c"], ["y"])]
    g.outputs = ["y"]
    verify(g)
    x = np.random.default_rng(0).standard_normal((2, 4, 4, 3)).astype(np.float32)
    before = run(g, x)
    passes.cleanup(g)
    assert [n.op for n in g.nodes] == ["conv2d"] and g.nodes[0].attrs["act"] == "relu" and g.outputs == ["y"]
    np.testing.assert_array_equal(run(g, x), before)


def test_batch_norm_op_float_reference():
    from microtrain.compiler.ir import Node
    from microtrain.compiler.ops import registry

    r = np.random.default_rng(0)
    x = r.standard_normal((2, 3, 3, 4)).astype(np.float32)
    s, b, m = (r.standard_normal(4).astype(np.float32) for _ in range(3))
    v = r.uniform(0.5, 2, 4).astype(np.float32)
    n = Node("batch_norm", "bn", ["x", "s", "b", "m", "v"], ["y"], {"eps": 1e-3})
    y = registry.get("batch_norm").forward_float(n, [x, s, b, m, v])[0]
    np.testing.assert_allclose(y, (x - m) / np.sqrt(v + 1e-3) * s + b, rtol=1e-6, atol=1e-6)
