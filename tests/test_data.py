"""Data: the built-in digits tasks (split, shift, example-model accuracies), .npz files, layout and
input quantization helpers, and the one-line DataError contract."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from microtrain.compiler.errors import DataError
from microtrain.compiler.ir import Graph, Node, Tensor, verify
from microtrain.compiler.ops.quantize import quantize_array
from microtrain.host import data
from microtrain.host.data import (Dataset, digits_images, digits_shift, digits_split, load_data, prepare_input,
                                  quantize_input, to_model_layout)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_ONNX = ROOT / "examples" / "digits_cnn.onnx"


@pytest.fixture(scope="module")
def example_graph():
    from microtrain.compiler.frontend import load_model

    return load_model(EXAMPLE_ONNX)


def _fc_graph(in_shape=(1, 64), layout: str | None = None, classes: int = 10) -> Graph:
    """float graph: reshape to [N, K] (when 4-D) + fully_connected -> [N, classes]."""
    g = Graph(name="fc", meta={"layout": layout} if layout else {})
    g.add_tensor(Tensor("x", in_shape, "float32"))
    k = int(np.prod(in_shape[1:]))
    src = "x"
    if len(in_shape) != 2:
        g.add_tensor(Tensor("flat", (1, k), "float32"))
        g.nodes.append(Node("reshape", "flatten", ["x"], ["flat"], {"shape": (1, k)}))
        src = "flat"
    g.const("w", np.ones((classes, k), np.float32) / k)
    g.const("b", np.zeros(classes, np.float32))
    g.add_tensor(Tensor("y", (1, classes), "float32"))
    g.nodes.append(Node("fully_connected", "fc", [src, "w", "b"], ["y"]))
    g.inputs, g.outputs = ["x"], ["y"]
    return verify(g)


def _nchw_graph() -> Graph:
    """An ONNX-like graph: IR input NHWC [1, 8, 8, 1], source layout NCHW [1, 1, 8, 8]."""
    g = _fc_graph((1, 8, 8, 1))
    g.meta.update({"input_layout": "NCHW", "input_shape": [1, 1, 8, 8]})
    return g


# ---------------------------------------------------------------------------------------------
# built-in digits
# ---------------------------------------------------------------------------------------------
def test_digits_split_is_fixed_stratified_and_disjoint():
    _, y = digits_images()
    tr, te = digits_split(y)
    tr2, te2 = digits_split(y)
    assert np.array_equal(tr, tr2) and np.array_equal(te, te2)
    assert (len(tr), len(te)) == (1257, 540)
    assert not set(tr) & set(te) and len(set(tr) | set(te)) == 1797
    # stratified: every class's test share is within one sample of 30%
    for c in range(10):
        n = int(np.sum(y == c))
        assert abs(int(np.sum(y[te] == c)) - 0.3 * n) <= 1


def test_builtin_datasets_are_deterministic_and_share_the_split():
    a, b = load_data("digits"), load_data("digits")
    clean = load_data("digits-clean")
    for ds in (a, clean):
        assert ds.x_train.shape == (1257, 1, 8, 8) and ds.x_test.shape == (540, 1, 8, 8)
        assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
        assert ds.num_classes == 10 and ds.layout == "NCHW"
        assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    for k in ("x_train", "y_train", "x_test", "y_test"):
        assert np.array_equal(getattr(a, k), getattr(b, k))
    assert np.array_equal(a.y_train, clean.y_train) and np.array_equal(a.y_test, clean.y_test)
    assert not np.array_equal(a.x_test, clean.x_test)
    assert "SHIFTED" in a.description and a.name == "digits" and clean.name == "digits-clean"


def test_shift_matches_its_documented_definition():
    x, _ = digits_images()
    s = np.zeros_like(x, dtype=np.float64)
    s[:, :, 1:, :] = x[:, :, :-1, :]
    s = 0.6 * s + 0.3 + 0.05 * np.random.default_rng(1234).standard_normal(x.shape)
    expect = np.clip(s, 0, 1).astype(np.float32)
    got = digits_shift(x)
    assert got.dtype == np.float32
    assert np.array_equal(got, expect)
    assert np.array_equal(got, digits_shift(x))  # deterministic
    tr, te = digits_split(digits_images()[1])
    assert np.array_equal(load_data("digits").x_test, got[te])
    # the top row carries no digit: black level + noise only
    assert abs(float(got[:, :, 0, :].mean()) - 0.3) < 0.01


def test_example_model_zero_shot_accuracies(example_graph):
    from microtrain.compiler.quantize import evaluate

    clean = load_data("digits-clean", example_graph)
    shifted = load_data("digits", example_graph)
    acc_clean = evaluate(example_graph, clean.x_test, clean.y_test)
    acc_shift = evaluate(example_graph, shifted.x_test, shifted.y_test)
    assert acc_clean >= 0.95, acc_clean
    assert acc_shift < 0.70, acc_shift


def test_builtin_digits_follow_the_model_layout():
    nhwc = load_data("digits", _fc_graph((1, 8, 8, 1), layout="NHWC"))
    assert nhwc.x_train.shape == (1257, 8, 8, 1) and nhwc.layout == "NHWC"
    ref = load_data("digits")
    assert np.array_equal(nhwc.x_test[..., 0], ref.x_test[:, 0])
    flat = load_data("digits-clean", _fc_graph((1, 64)))
    assert flat.x_test.shape == (540, 64) and flat.layout == "flat"
    nchw = load_data("digits", _nchw_graph())
    assert nchw.x_train.shape == (1257, 1, 8, 8)


# ---------------------------------------------------------------------------------------------
# .npz files, layout, input quantization
# ---------------------------------------------------------------------------------------------
def _write_npz(path: Path, **overrides) -> Path:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.random((20, 1, 8, 8), dtype=np.float32),
        "y_train": rng.integers(0, 10, 20),
        "x_test": rng.random((7, 1, 8, 8), dtype=np.float32),
        "y_test": rng.integers(0, 10, 7),
    }
    for k, v in overrides.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    np.savez(path, **arrays)
    return path


def test_npz_loading(tmp_path):
    p = _write_npz(tmp_path / "d.npz")
    ds = load_data(str(p))
    assert isinstance(ds, Dataset) and ds.name == "d.npz"
    assert ds.x_train.shape == (20, 1, 8, 8) and ds.y_test.shape == (7,)
    assert ds.y_train.dtype == np.int64 and ds.num_classes == int(max(ds.y_train.max(), ds.y_test.max())) + 1
    g = _nchw_graph()
    ds = load_data(p, g)  # NCHW samples for an NCHW-source model
    assert ds.num_classes == 10
    # integral float labels and NHWC samples are accepted too
    p2 = _write_npz(tmp_path / "e.npz", y_train=np.arange(20, dtype=np.float64) % 10,
                    x_train=np.zeros((20, 8, 8, 1), np.float32), x_test=np.zeros((7, 8, 8, 1), np.float32))
    ds = load_data(p2, g)
    assert ds.y_train.dtype == np.int64 and ds.y_train[13] == 3
    # one-channel samples without their channel axis get it back
    p4 = _write_npz(tmp_path / "g.npz", x_train=np.zeros((20, 8, 8), np.float32), x_test=np.ones((7, 8, 8), np.float32))
    ds = load_data(p4, g)
    assert ds.x_train.shape == (20, 1, 8, 8) and ds.x_test.shape == (7, 1, 8, 8)
    # int8 samples are taken as is
    p3 = _write_npz(tmp_path / "f.npz", x_train=np.zeros((20, 1, 8, 8), np.int8),
                    x_test=np.zeros((7, 1, 8, 8), np.int8))
    assert load_data(p3, g).x_train.dtype == np.int8


def test_to_model_layout():
    g = _nchw_graph()
    x = np.arange(2 * 64, dtype=np.float32).reshape(2, 1, 8, 8)
    y = to_model_layout(x, g)
    assert y.shape == (2, 8, 8, 1) and np.array_equal(y[..., 0], x[:, 0])
    assert to_model_layout(y, g) is y  # already NHWC
    with pytest.raises(DataError, match=r"\(1, 8, 8\) \(NCHW\) or \(8, 8, 1\) \(NHWC\)"):
        to_model_layout(np.zeros((2, 64), np.float32), g)
    x2 = x[:, 0]  # [N, 8, 8]: the single channel axis left out
    assert np.array_equal(to_model_layout(x2, g), y)
    flat = _fc_graph((1, 64))
    assert to_model_layout(np.zeros((3, 64), np.float32), flat).shape == (3, 64)


def test_quantize_input():
    from microtrain.compiler.quantize import quantize_graph

    g = _nchw_graph()
    x = load_data("digits-clean").x_train
    q = quantize_graph(g, to_model_layout(x[:100], g))
    qp = q.tensors[q.nodes[0].outputs[0]].quant
    xq = quantize_input(to_model_layout(x, q), q)
    assert xq.dtype == np.int8 and np.array_equal(xq, quantize_array(to_model_layout(x, q), qp.s, qp.zp))
    assert quantize_input(xq, q) is xq
    q8 = quantize_graph(g, x[:100], io="int8")
    assert np.array_equal(prepare_input(x, q8), xq)  # layout + quantization
    with pytest.raises(DataError, match="no int8 input quantization"):
        quantize_input(x, g)


# ---------------------------------------------------------------------------------------------
# the one-line DataError contract
# ---------------------------------------------------------------------------------------------
_BAD_NPZ = {
    "missing keys": (dict(y_test=None, x_test=None), "missing array(s) x_test, y_test"),
    "empty train": (dict(x_train=np.zeros((0, 1, 8, 8), np.float32), y_train=np.zeros(0, np.int64)),
                    "x_train is empty"),
    "empty test": (dict(x_test=np.zeros((0, 1, 8, 8), np.float32), y_test=np.zeros(0, np.int64)),
                   "x_test is empty"),
    "count mismatch": (dict(y_train=np.zeros(19, np.int64)), "20 samples but y_train has 19 labels"),
    "float64 samples": (dict(x_train=np.zeros((20, 1, 8, 8))), "dtype float64"),
    "NaN": (dict(x_test=np.full((7, 1, 8, 8), np.nan, np.float32)), "NaN"),
    "non-integer labels": (dict(y_test=np.full(7, 2.5)), "integer class indices"),
    "string labels": (dict(y_test=np.array(["a"] * 7)), "integer class indices"),
    "2-D labels": (dict(y_train=np.zeros((20, 10))), "1-D array"),
    "negative label": (dict(y_train=-np.ones(20, np.int64)), "label -1 outside"),
    "no batch axis": (dict(x_train=np.zeros(20, np.float32)), "batch first"),
    "train/test shapes": (dict(x_test=np.zeros((7, 1, 8, 9), np.float32)), "x_test samples"),
}


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert msg and "\n" not in msg
    return msg


@pytest.mark.parametrize("case", sorted(_BAD_NPZ))
def test_bad_npz_gives_one_line_data_error(tmp_path, case):
    overrides, needle = _BAD_NPZ[case]
    p = _write_npz(tmp_path / "bad.npz", **overrides)
    with pytest.raises(DataError) as e:
        load_data(p)
    msg = _one_line(e)
    assert msg.startswith(f"data {p}") or msg.startswith("data bad.npz"), msg
    assert needle in msg, msg


@pytest.mark.parametrize("case", ["label out of range", "wrong sample shape", "flat for 4-D model"])
def test_data_not_fitting_the_model(tmp_path, case):
    g = _nchw_graph()
    if case == "label out of range":
        p, needle = _write_npz(tmp_path / "d.npz", y_test=np.full(7, 10)), "label 10 outside [0, 10)"
    elif case == "wrong sample shape":
        p, needle = _write_npz(tmp_path / "d.npz", x_train=np.zeros((20, 1, 9, 9), np.float32),
                               x_test=np.zeros((7, 1, 9, 9), np.float32)), "(1, 9, 9)"
    else:
        p, needle = _write_npz(tmp_path / "d.npz", x_train=np.zeros((20, 64), np.float32),
                               x_test=np.zeros((7, 64), np.float32)), "takes (1, 8, 8) (NCHW)"
    with pytest.raises(DataError) as e:
        load_data(p, g)
    assert needle in _one_line(e)


def test_file_errors(tmp_path):
    with pytest.raises(DataError) as e:
        load_data(tmp_path / "nope.npz")
    assert "no such file" in _one_line(e)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"this is not a zip archive at all")
    with pytest.raises(DataError) as e:
        load_data(junk)
    assert "not a readable .npz" in _one_line(e)
    npy = tmp_path / "single.npz"
    with open(npy, "wb") as f:
        np.save(f, np.zeros(3))
    with pytest.raises(DataError) as e:
        load_data(npy)
    assert "single array" in _one_line(e)
    with pytest.raises(DataError) as e:
        load_data("mnist")
    assert "unknown data 'mnist'" in _one_line(e)


def test_builtin_data_for_an_incompatible_model():
    with pytest.raises(DataError) as e:
        load_data("digits", _fc_graph((1, 32)))
    assert "takes (32,)" in _one_line(e)
    with pytest.raises(DataError) as e:
        load_data("digits", _fc_graph((1, 64), classes=5))
    assert "outside [0, 5) for a model with 5 outputs" in _one_line(e)


def test_module_constants_match_the_docstring():
    doc = data.__doc__
    assert "0.6 * s + 0.3" in doc and "0.05 *" in doc and "default_rng(1234)" in doc
    assert (data.SHIFT_GAIN, data.SHIFT_OFFSET, data.SHIFT_NOISE_STD, data.SHIFT_NOISE_SEED) == (0.6, 0.3, 0.05, 1234)
