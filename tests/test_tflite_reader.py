"""TFLite reader: structure of the IR it builds, and one-line errors for everything it rejects."""
from __future__ import annotations

import numpy as np
import pytest

from microtrain.compiler.errors import ModelFormatError, UnsupportedOpError
from microtrain.compiler.frontend import load_model
from microtrain.compiler.frontend.tflite_reader import SUPPORTED_OPS, load_tflite, parse_tflite, same_valid_pads
from microtrain.compiler.interpreter import Interpreter
from tflite_builder import OpSpec, TensorSpec, act, bias, build_model, int32_const, weights

RNG = np.random.default_rng(0)


def conv_model(h=6, w=6, cin=2, cout=3, k=3, stride=2, dilation=1, padding="SAME", fused="RELU6",
               depthwise=False) -> bytes:
    eff = (k - 1) * dilation + 1
    oh = (h + stride - 1) // stride if padding == "SAME" else (h + stride - eff) // stride
    ow = (w + stride - 1) // stride if padding == "SAME" else (w + stride - eff) // stride
    ws = np.linspace(0.01, 0.02, cout).astype(np.float32)
    wshape = (1, k, k, cout) if depthwise else (cout, k, k, cin)
    tensors = [act("input", (1, h, w, cin), 0.05, -3),
               weights("w", RNG.integers(-127, 128, wshape), ws, axis=3 if depthwise else 0),
               bias("b", RNG.integers(-100, 100, cout), 0.05, ws), act("out", (1, oh, ow, cout), 0.1, 4)]
    opts = dict(padding=padding, stride_w=stride, stride_h=stride, fused_activation_function=fused,
                dilation_w_factor=dilation, dilation_h_factor=dilation)
    if depthwise:
        opts["depth_multiplier"] = cout // cin
    op = "DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"
    return build_model(tensors, [OpSpec(op, ["input", "w", "b"], ["out"], opts)], ["input"], ["out"])


def classifier_model(per_channel_fc: bool = True) -> bytes:
    """float -> QUANTIZE -> CONV(relu) -> MEAN -> FC -> SOFTMAX -> DEQUANTIZE -> float."""
    w1s = np.full(4, 0.01, np.float32)
    w2s = np.linspace(0.01, 0.03, 3).astype(np.float32) if per_channel_fc else np.float32([0.02])
    tensors = [
        TensorSpec("image", (1, 5, 5, 1), "float32"), act("q", (1, 5, 5, 1), 0.02, -1),
        weights("w1", RNG.integers(-127, 128, (4, 3, 3, 1)), w1s), bias("b1", np.zeros(4), 0.02, w1s),
        act("c", (1, 5, 5, 4), 0.05, -128), int32_const("axes", [1, 2]), act("m", (1, 4), 0.05, -128),
        weights("w2", RNG.integers(-127, 128, (3, 4)), w2s),
        bias("b2", np.zeros(3), 0.05, w2s if per_channel_fc else w2s[0]),
        act("logits", (1, 3), 0.2, 10), act("probs", (1, 3), 1 / 256, -128), TensorSpec("scores", (1, 3), "float32"),
    ]
    ops = [
        OpSpec("QUANTIZE", ["image"], ["q"]),
        OpSpec("CONV_2D", ["q", "w1", "b1"], ["c"], dict(padding="SAME", stride_w=1, stride_h=1,
                                                         fused_activation_function="RELU")),
        OpSpec("MEAN", ["c", "axes"], ["m"], dict(keep_dims=False)),
        OpSpec("FULLY_CONNECTED", ["m", "w2", "b2"], ["logits"]),
        OpSpec("SOFTMAX", ["logits"], ["probs"], dict(beta=1.0)),
        OpSpec("DEQUANTIZE", ["probs"], ["scores"]),
    ]
    return build_model(tensors, ops, ["image"], ["scores"])


# ---- structure -------------------------------------------------------------------------------
@pytest.mark.parametrize("h,k,stride,dilation,padding,expected", [
    (6, 3, 2, 1, "SAME", (0, 0, 1, 1)),    # total 1: the odd pixel goes bottom/right
    (5, 3, 2, 1, "SAME", (1, 1, 1, 1)),    # total 2
    (7, 3, 1, 2, "SAME", (2, 2, 2, 2)),    # dilated: effective kernel 5
    (8, 4, 1, 1, "SAME", (1, 1, 2, 2)),    # even kernel
    (6, 1, 3, 1, "SAME", (0, 0, 0, 0)),    # stride > kernel: no padding
    (6, 3, 2, 1, "VALID", (0, 0, 0, 0)),
])
def test_same_valid_padding_becomes_explicit(h, k, stride, dilation, padding, expected):
    assert same_valid_pads(padding, (h, h), (k, k), (stride, stride), (dilation, dilation)) == expected
    g = parse_tflite(conv_model(h=h, w=h, k=k, stride=stride, dilation=dilation, padding=padding))
    (node,) = g.nodes
    assert node.op == "conv2d"
    assert node.attrs["pad"] == expected
    assert node.attrs["stride"] == (stride, stride) and node.attrs["dilation"] == (dilation, dilation)


def test_asymmetric_hw_padding():
    # H: in 5, k 2, s 1 -> total 1 (bottom); W: in 6, k 2, s 2 -> total 0.
    assert same_valid_pads("SAME", (5, 6), (2, 2), (1, 2), (1, 1)) == (0, 0, 1, 0)


@pytest.mark.parametrize("fused,act_attr", [("NONE", "none"), ("RELU", "relu"), ("RELU6", "relu6")])
def test_fused_activation_becomes_act(fused, act_attr):
    g = parse_tflite(conv_model(fused=fused))
    assert g.nodes[0].attrs["act"] == act_attr


def test_weights_keep_layout_scales_and_channel_axis():
    g = parse_tflite(conv_model(cin=2, cout=3))
    w, b = g.tensors["w"], g.tensors["b"]
    assert w.shape == (3, 3, 3, 2) and w.dtype == "int8" and w.quant.axis == 0
    assert w.quant.scale.dtype == np.float32
    np.testing.assert_array_equal(w.quant.scale, np.linspace(0.01, 0.02, 3).astype(np.float32))
    assert b.dtype == "int32" and b.quant.axis == 0
    assert g.tensors["input"].quant.scale[0] == np.float32(0.05) and g.tensors["input"].quant.zp == -3

    d = parse_tflite(conv_model(cin=2, cout=4, depthwise=True))
    assert d.nodes[0].op == "depthwise_conv2d"
    assert d.tensors["w"].shape == (1, 3, 3, 4) and d.tensors["w"].quant.axis == 3


@pytest.mark.parametrize("per_channel", [True, False])
def test_boundary_quantize_dequantize_and_fc_axis(per_channel):
    g = parse_tflite(classifier_model(per_channel))
    assert [n.op for n in g.nodes] == ["quantize", "conv2d", "mean", "fully_connected", "softmax", "dequantize"]
    assert g.inputs == ["image"] and g.outputs == ["scores"]
    assert g.tensors["image"].dtype == "float32" and g.tensors["scores"].dtype == "float32"
    assert g.is_quantized
    assert g.tensors["w2"].quant.axis == (0 if per_channel else None)
    assert g.node("m").attrs == {"axes": (1, 2), "keepdims": False}
    assert g.node("probs").attrs["beta"] == 1.0
    y = Interpreter(g).run(RNG.uniform(-1, 1, (1, 5, 5, 1)).astype(np.float32))["scores"]
    assert y.dtype == np.float32 and y.shape == (1, 3)


def test_node_names_are_output_tensor_names():
    g = parse_tflite(classifier_model())
    for n in g.nodes:
        assert n.name == n.outputs[0]


def test_fc_on_rank4_input_gets_explicit_flatten():
    ws = np.full(5, 0.01, np.float32)
    tensors = [act("x", (1, 2, 2, 3), 0.05, 0), weights("w", RNG.integers(-127, 128, (5, 12)), ws),
               act("y", (1, 5), 0.1, 0)]
    g = parse_tflite(build_model(tensors, [OpSpec("FULLY_CONNECTED", ["x", "w"], ["y"])], ["x"], ["y"]))
    assert [n.op for n in g.nodes] == ["reshape", "fully_connected"]
    flat = g.nodes[0].outputs[0]
    assert g.tensors[flat].shape == (1, 12) and g.tensors[flat].quant == g.tensors["x"].quant


def test_mean_keep_dims_and_negative_axes():
    tensors = [act("x", (1, 3, 4, 2), 0.05, 1), int32_const("axes", [-3, 2]), act("y", (1, 1, 1, 2), 0.04, -2)]
    g = parse_tflite(build_model(tensors, [OpSpec("MEAN", ["x", "axes"], ["y"], dict(keep_dims=True))], ["x"], ["y"]))
    assert g.nodes[0].attrs == {"axes": (1, 2), "keepdims": True}


def test_load_from_file_and_load_model_dispatch(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(classifier_model())
    g = load_tflite(path)
    assert g.meta["format"] == "tflite" and g.meta["source"] == str(path)
    other = tmp_path / "no_extension"
    other.write_bytes(classifier_model())
    assert [n.op for n in load_model(other).nodes] == [n.op for n in g.nodes]


# ---- errors ----------------------------------------------------------------------------------
def unary_model(op: str, options=None, options_type=None) -> bytes:
    tensors = [act("x", (1, 4), 0.05, 0), act("y", (1, 4), 1 / 128, 0)]
    return build_model(tensors, [OpSpec(op, ["x"], ["y"], options or {}, options_type=options_type)], ["x"], ["y"])


def test_unsupported_op_names_op_node_and_supported_list():
    with pytest.raises(UnsupportedOpError) as e:
        parse_tflite(unary_model("TANH"))
    msg = str(e.value)
    assert e.value.op_type == "TANH" and e.value.node_name == "y"
    assert "'TANH'" in msg and "'y'" in msg
    assert all(op in msg for op in SUPPORTED_OPS)
    assert "\n" not in msg


def test_unsupported_op_inside_a_supported_graph():
    tensors = [act("x", (1, 4), 0.05, 0), act("a", (1, 4), 0.05, 0), act("c", (1, 8), 0.05, 0)]
    model = build_model(tensors, [OpSpec("RELU", ["x"], ["a"]),
                                  OpSpec("CONCATENATION", ["x", "a"], ["c"], dict(axis=1))], ["x"], ["c"])
    with pytest.raises(UnsupportedOpError, match="'CONCATENATION' at node 'c'"):
        parse_tflite(model)


def test_unsupported_fused_activation():
    with pytest.raises(UnsupportedOpError, match="RELU_N1_TO_1"):
        parse_tflite(conv_model(fused="RELU_N1_TO_1"))


def test_unsupported_mean_axes():
    tensors = [act("x", (1, 3, 4, 2), 0.05, 1), int32_const("axes", [3]), act("y", (1, 3, 4), 0.04, -2)]
    with pytest.raises(UnsupportedOpError, match="MEAN"):
        parse_tflite(build_model(tensors, [OpSpec("MEAN", ["x", "axes"], ["y"])], ["x"], ["y"]))


def test_float_model_is_rejected_with_a_clear_message():
    tensors = [TensorSpec("x", (1, 4, 4, 1), "float32"),
               TensorSpec("w", (2, 3, 3, 1), "float32", data=RNG.standard_normal((2, 3, 3, 1))),
               TensorSpec("b", (2,), "float32", data=np.zeros(2)), TensorSpec("y", (1, 4, 4, 2), "float32")]
    model = build_model(tensors, [OpSpec("CONV_2D", ["x", "w", "b"], ["y"], dict(padding="SAME", stride_w=1,
                                                                                  stride_h=1))], ["x"], ["y"])
    with pytest.raises(ModelFormatError, match="float .*only full-integer int8 TFLite"):
        parse_tflite(model)


def test_float_op_in_an_int8_model_is_unsupported():
    tensors = [act("x", (1, 4), 0.05, 0), TensorSpec("f", (1, 4), "float32"), TensorSpec("y", (1, 4), "float32")]
    model = build_model(tensors, [OpSpec("DEQUANTIZE", ["x"], ["f"]), OpSpec("RELU", ["f"], ["y"])], ["x"], ["y"])
    with pytest.raises(UnsupportedOpError, match="float32 .*full-integer int8"):
        parse_tflite(model)


def test_uint8_model_is_rejected():
    tensors = [TensorSpec("x", (1, 4), "uint8", scale=0.05, zero_point=128),
               TensorSpec("y", (1, 4), "uint8", scale=0.05, zero_point=128)]
    with pytest.raises(ModelFormatError, match="uint8"):
        parse_tflite(build_model(tensors, [OpSpec("RELU", ["x"], ["y"])], ["x"], ["y"]))


@pytest.mark.parametrize("data", [b"", b"TFL3", b"\x00" * 64, b"PK\x03\x04" + b"\x00" * 60,
                                  b"\x08\x00\x00\x00TFL3" + b"\xff" * 40])
def test_not_a_model(data):
    with pytest.raises(ModelFormatError):
        parse_tflite(data)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFormatError, match="cannot read"):
        load_tflite(tmp_path / "nope.tflite")


def _parse_or_error(data: bytes) -> None:
    """A mutated model either parses to a verified graph or fails with a MicrotrainError."""
    try:
        g = parse_tflite(data)
    except (ModelFormatError, UnsupportedOpError) as e:
        assert "\n" not in str(e)
        return
    assert g.nodes  # parsed and verified


def test_truncated_files_raise_model_format_error():
    model = classifier_model()
    for n in sorted(set(np.linspace(0, len(model) - 1, 60).astype(int))):
        with pytest.raises(ModelFormatError):
            parse_tflite(model[:n])


def test_random_byte_flips_never_raise_another_exception():
    model = classifier_model()
    rng = np.random.default_rng(1234)
    for _ in range(150):
        data = bytearray(model)
        for pos in rng.integers(0, len(data), size=int(rng.integers(1, 4))):
            data[pos] = int(rng.integers(0, 256))
        _parse_or_error(bytes(data))


def test_word_overwrites_never_raise_another_exception():
    """Offsets and lengths replaced by extreme 32-bit values (huge vectors, wild offsets)."""
    model = classifier_model()
    rng = np.random.default_rng(99)
    words = [0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0x00010000, len(model), len(model) - 4, 0]
    for _ in range(120):
        data = bytearray(model)
        pos = int(rng.integers(0, (len(data) - 4) // 4)) * 4
        data[pos:pos + 4] = int(rng.choice(words)).to_bytes(4, "little")
        _parse_or_error(bytes(data))
