"""Post-training quantization: the TFLite int8 parameter rules on hand-built float graphs, int8 vs
float closeness, calibration methods, boundary modes, errors, and the example-model acceptance
(int8 vs float top-1 agreement >= 97% on the digits test splits)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from microtrain.compiler.errors import DataError, UnsupportedOpError
from microtrain.compiler.interpreter import Interpreter
from microtrain.compiler.ir import Graph, Node, Tensor, verify
from microtrain.compiler.ops.quantize import dequantize_array
from microtrain.compiler.quantize import (activation_qparams, evaluate, predict, quantize_graph,
                                          weight_qparams)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_ONNX = ROOT / "examples" / "digits_cnn.onnx"


def _w(rng, *shape) -> np.ndarray:
    fan_in = int(np.prod(shape[1:])) if shape[0] != 1 else int(np.prod(shape[1:3]))
    return (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)


def _add(g: Graph, op: str, name: str, ins: list[str], out_shape, **attrs) -> str:
    out = g.add_tensor(Tensor(f"{name}_out", out_shape, "float32")).name
    g.nodes.append(Node(op, name, ins, [out], attrs))
    return out


def cnn_graph(seed: int = 0) -> Graph:
    """x [N,6,6,3] -> conv3x3(relu) -> depthwise x2 -> max_pool -> reshape -> fc(relu) -> fc."""
    rng = np.random.default_rng(seed)
    g = Graph(name="cnn")
    g.add_tensor(Tensor("x", (1, 6, 6, 3), "float32"))
    w1, b1 = g.const("w1", _w(rng, 4, 3, 3, 3)).name, g.const("b1", rng.standard_normal(4).astype(np.float32) * 0.1).name
    w2, b2 = g.const("w2", _w(rng, 1, 3, 3, 8)).name, g.const("b2", rng.standard_normal(8).astype(np.float32) * 0.1).name
    w3, b3 = g.const("w3", _w(rng, 16, 32)).name, g.const("b3", rng.standard_normal(16).astype(np.float32) * 0.1).name
    w4, b4 = g.const("w4", _w(rng, 5, 16)).name, g.const("b4", rng.standard_normal(5).astype(np.float32) * 0.1).name
    h = _add(g, "conv2d", "conv", ["x", w1, b1], (1, 6, 6, 4), pad=(1, 1, 1, 1), act="relu")
    h = _add(g, "depthwise_conv2d", "dw", [h, w2, b2], (1, 4, 4, 8))
    h = _add(g, "max_pool2d", "pool", [h], (1, 2, 2, 8), ksize=(2, 2), stride=(2, 2))
    h = _add(g, "reshape", "flat", [h], (1, 32), shape=(1, 32))
    h = _add(g, "fully_connected", "fc1", [h, w3, b3], (1, 16), act="relu")
    h = _add(g, "fully_connected", "fc2", [h, w4, b4], (1, 5))
    g.inputs, g.outputs = ["x"], [h]
    return verify(g)


def branchy_graph(seed: int = 1) -> Graph:
    """pad -> conv (no bias) -> {relu -> avg_pool, max_pool} -> add(relu6) -> mean -> fc -> softmax."""
    rng = np.random.default_rng(seed)
    g = Graph(name="branchy")
    g.add_tensor(Tensor("x", (1, 4, 4, 2), "float32"))
    w1 = g.const("w1", _w(rng, 3, 3, 3, 2)).name
    w2, b2 = g.const("w2", _w(rng, 4, 3)).name, g.const("b2", np.zeros(4, np.float32)).name
    h = _add(g, "pad", "pad", ["x"], (1, 6, 6, 2), pads=((0, 0), (1, 1), (1, 1), (0, 0)))
    c = _add(g, "conv2d", "conv", [h, w1], (1, 4, 4, 3))
    r = _add(g, "relu", "relu", [c], (1, 4, 4, 3))
    a = _add(g, "avg_pool2d", "avg", [r], (1, 2, 2, 3), ksize=(2, 2), stride=(2, 2))
    m = _add(g, "max_pool2d", "max", [c], (1, 2, 2, 3), ksize=(2, 2), stride=(2, 2))
    s = _add(g, "add", "add", [a, m], (1, 2, 2, 3), act="relu6")
    s = _add(g, "mean", "mean", [s], (1, 3), axes=(1, 2), keepdims=False)
    s = _add(g, "fully_connected", "fc", [s, w2, b2], (1, 4))
    s = _add(g, "softmax", "softmax", [s], (1, 4))
    g.inputs, g.outputs = ["x"], [s]
    return verify(g)


def _data(g: Graph, n: int, seed: int) -> np.ndarray:
    shape = (n,) + g.tensors[g.inputs[0]].shape[1:]
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _run(g: Graph, x: np.ndarray) -> np.ndarray:
    return next(iter(Interpreter(g).run(x).values()))


def _params(q: Graph, node: str):
    n = q.node(node)
    return [q.tensors[i] if i else None for i in n.inputs], q.tensors[n.outputs[0]]


# ---------------------------------------------------------------------------------------------
# parameter rules
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [cnn_graph, branchy_graph])
def test_int8_output_close_to_float(make):
    g = make()
    x = _data(g, 256, 0)
    q = quantize_graph(g, x)
    s_out = q.tensors[q.nodes[-1].inputs[0]].quant.s
    # on the calibration samples nothing clips: only rounding errors, a few output steps at most
    yf, yq = _run(g, x), _run(q, x)
    assert yq.dtype == np.float32 and yq.shape == yf.shape
    err = np.abs(yq - yf)
    assert err.mean() < 1.5 * s_out and err.max() < 8 * s_out, (err.mean() / s_out, err.max() / s_out)
    # fresh samples from the same distribution may clip at the calibrated range edges, rarely
    xt = _data(g, 256, 1)
    yf, yq = _run(g, xt), _run(q, xt)
    assert np.abs(yq - yf).mean() < 1.5 * s_out
    if make is cnn_graph:
        assert np.mean(yq.argmax(1) == yf.argmax(1)) >= 0.9


@pytest.mark.parametrize("per_channel", [True, False])
def test_weights_symmetric_and_bias_at_input_times_weight_scale(per_channel):
    g = cnn_graph()
    q = quantize_graph(g, _data(g, 64, 0), per_channel=per_channel)
    for node, axis, float_w, float_b in (("conv", 0, "w1", "b1"), ("dw", 3, "w2", "b2"),
                                         ("fc1", 0, "w3", "b3"), ("fc2", 0, "w4", "b4")):
        (x, w, b), _ = _params(q, node)
        assert w.dtype == "int8" and b.dtype == "int32"
        assert np.all(w.quant.zero_point == 0) and np.all(b.quant.zero_point == 0)
        assert w.data.min() >= -127 and w.data.max() <= 127
        wf, bf = g.tensors[float_w].data, g.tensors[float_b].data
        if per_channel:
            assert w.quant.axis == axis and w.quant.scale.size == w.shape[axis]
            other = tuple(a for a in range(4 if node in ("conv", "dw") else 2) if a != axis)
            assert np.all(np.abs(w.data).max(axis=other) == 127)
            expect = (np.abs(wf).max(axis=other) / 127).astype(np.float32)
            assert np.allclose(w.quant.scale, expect, rtol=1e-6)
        else:
            assert w.quant.axis is None and w.quant.scale.size == 1
            assert np.abs(w.data).max() == 127
        # bias scale is exactly float32(s_in) * s_w, per channel; bias = round(b / scale)
        assert np.array_equal(b.quant.scale, (np.float32(x.quant.s) * w.quant.scale).astype(np.float32))
        scale = np.broadcast_to(b.quant.scale.astype(np.float64), bf.shape)
        assert np.all(np.abs(b.data - bf / scale) <= 0.5 + 1e-6)
        # dequantized weights are within half a step of the float weights
        shape = [1] * w.data.ndim
        if w.quant.axis is not None:
            shape[axis] = -1
        step = w.quant.scale.reshape(shape)
        assert np.all(np.abs(w.data * step - wf) <= step / 2 * (1 + 1e-5))


def test_activation_rules():
    g = cnn_graph()
    q = quantize_graph(g, _data(g, 64, 0))
    (_, _, _), conv_out = _params(q, "conv")
    assert conv_out.quant.zp == -128  # ReLU-fused: range observed after the activation, lo = 0
    for node in ("pool", "flat"):  # values pass through: parameters shared with the input
        (x,), y = _params(q, node)
        assert x.quant == y.quant
    b = branchy_graph()
    qb = quantize_graph(b, _data(b, 64, 0))
    (x,), y = _params(qb, "pad")
    assert x.quant == y.quant
    (x,), y = _params(qb, "avg")
    assert x.quant == y.quant
    _, sm = _params(qb, "softmax")
    assert sm.quant.zp == -128 and sm.quant.s == np.float32(1 / 256)
    # every int8 activation's range contains 0 exactly
    for t in qb.tensors.values():
        if t.dtype == "int8" and not t.is_const:
            assert -128 <= t.quant.zp <= 127


def test_activation_qparams_formula():
    q = activation_qparams(-1.0, 3.0)
    assert q.s == np.float32(4.0 / 255) and q.zp == round(-128 + 1.0 / np.float32(4.0 / 255))
    assert activation_qparams(0.5, 2.0).zp == -128  # widened to include 0
    assert activation_qparams(-4.0, -1.0).zp == 127
    assert activation_qparams(0.0, 0.0).s == np.float32(1 / 255)  # degenerate range
    w, p = weight_qparams(np.array([[0.0, 0.0], [1.0, -0.5]], np.float32), axis=0)
    assert p.scale[0] > 0 and np.array_equal(w, [[0, 0], [127, -64]])


def test_percentile_and_minmax_both_work():
    g = cnn_graph()
    x = _data(g, 256, 0)
    x[0, 0, 0, 0] = 40.0  # one outlier stretches the min-max input range
    qm = quantize_graph(g, x, method="minmax")
    qp = quantize_graph(g, x, method="percentile", percentile=99.9)
    sm, sp = qm.tensors["x/int8"].quant.s, qp.tensors["x/int8"].quant.s
    assert sp < sm / 5
    assert qm.meta["quantization"]["method"] == "minmax"
    assert qp.meta["quantization"] == {"method": "percentile", "percentile": 99.9, "per_channel": True,
                                       "io": "float", "calibration_samples": 256}
    xt = _data(g, 128, 2)
    yf = _run(g, xt)
    err_m, err_p = np.abs(_run(qm, xt) - yf).mean(), np.abs(_run(qp, xt) - yf).mean()
    assert err_p < err_m  # clipping one outlier keeps resolution for the typical values


def test_io_modes():
    g = cnn_graph()
    x = _data(g, 64, 0)
    qf = quantize_graph(g, x, io="float")
    assert qf.inputs == ["x"] and qf.outputs == g.outputs
    assert qf.tensors["x"].dtype == "float32" and qf.tensors[qf.outputs[0]].dtype == "float32"
    assert qf.nodes[0].op == "quantize" and qf.nodes[-1].op == "dequantize"
    assert qf.is_quantized
    qi = quantize_graph(g, x, io="int8")
    assert qi.tensors[qi.inputs[0]].dtype == "int8" and qi.tensors[qi.outputs[0]].dtype == "int8"
    assert all(n.op not in ("quantize", "dequantize") for n in qi.nodes)
    # same integers inside: dequantized int8 output == float-io output
    xq = Interpreter(qf).run(x, keep_all=True)["x/int8"]
    yi = _run(qi, xq)
    oq = qi.tensors[qi.outputs[0]].quant
    assert np.array_equal(dequantize_array(yi, oq.s, oq.zp), _run(qf, x))
    # evaluate/predict take float samples for both (quantized on the way in for int8 inputs)
    labels = predict(g, x)
    assert evaluate(qf, x, labels) == evaluate(qi, x, labels) >= 0.9
    assert evaluate(g, x, labels) == 1.0


def test_input_graph_untouched_and_int8_passes_through():
    g = cnn_graph()
    before = {k: (t.dtype, None if t.data is None else t.data.copy()) for k, t in g.tensors.items()}
    q = quantize_graph(g, _data(g, 32, 0), io="int8")
    assert {k: t.dtype for k, t in g.tensors.items()} == {k: v[0] for k, v in before.items()}
    assert all(np.array_equal(t.data, before[k][1]) for k, t in g.tensors.items() if t.is_const)
    again = quantize_graph(q, _data(g, 32, 0))
    assert again is not q and [n.op for n in again.nodes] == [n.op for n in q.nodes]
    assert all(again.tensors[k].quant == t.quant for k, t in q.tensors.items())


@pytest.mark.parametrize("case, needle", [
    ("empty", "no samples"),
    ("shape", "samples have shape (5, 5, 3)"),
    ("dtype", "dtype float64"),
    ("nan", "NaN"),
])
def test_bad_calibration_data(case, needle):
    g = cnn_graph()
    x = {"empty": np.zeros((0, 6, 6, 3), np.float32), "shape": np.zeros((4, 5, 5, 3), np.float32),
         "dtype": np.zeros((4, 6, 6, 3)), "nan": np.full((4, 6, 6, 3), np.nan, np.float32)}[case]
    with pytest.raises(DataError) as e:
        quantize_graph(g, x)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("calibration data") and needle in msg, msg


def test_unfolded_batchnorm_is_rejected():
    g = Graph(name="bn")
    g.add_tensor(Tensor("x", (1, 4), "float32"))
    ps = [g.const(n, np.ones(4, np.float32)).name for n in ("scale", "bias", "mean", "var")]
    g.add_tensor(Tensor("y", (1, 4), "float32"))
    g.nodes.append(Node("batch_norm", "bn", ["x"] + ps, ["y"], {"eps": 1e-5}))
    g.inputs, g.outputs = ["x"], ["y"]
    with pytest.raises(UnsupportedOpError, match="fold BatchNorm"):
        quantize_graph(verify(g), np.ones((2, 4), np.float32))


# ---------------------------------------------------------------------------------------------
# acceptance: the example model
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def example():
    from microtrain.compiler.frontend import load_model
    from microtrain.host.data import load_data

    g = load_model(EXAMPLE_ONNX)
    clean, shifted = load_data("digits-clean", g), load_data("digits", g)
    return g, clean, shifted


@pytest.mark.parametrize("method", ["minmax", "percentile"])
def test_example_model_int8_agrees_with_float(example, method):
    g, clean, shifted = example
    q = quantize_graph(g, clean.x_train, method=method)  # NCHW samples accepted (source layout)
    assert q.is_quantized and q.meta["input_layout"] == "NCHW"
    for name, ds in (("clean", clean), ("shifted", shifted)):
        pf, pq = predict(g, ds.x_test), predict(q, ds.x_test)
        agree = float(np.mean(pf == pq))
        acc_f, acc_q = float(np.mean(pf == ds.y_test)), float(np.mean(pq == ds.y_test))
        print(f"{method} {name}: float {acc_f:.4f} int8 {acc_q:.4f} agreement {agree:.4f}")
        assert agree >= 0.97, (name, agree)
        assert abs(acc_q - acc_f) <= 0.02, (name, acc_f, acc_q)
    assert evaluate(q, clean.x_test, clean.y_test) >= 0.95
