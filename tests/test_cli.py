"""The CLI in-process (click CliRunner): --version, help, boards, inspect (ONNX and TFLite, text and
JSON, with --data), and the error discipline: exit 2, one ``error:`` line, never a traceback."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from microtrain.host import cli as cli_mod
from microtrain.host.cli import cli, observe_errors

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_ONNX = ROOT / "examples" / "digits_cnn.onnx"


# ---- model builders (shared with test_fuzz_models) ----------------------------------------------

def build_onnx_cnn(seed: int = 0) -> bytes:
    """A tiny float CNN for 8x8 one-channel images: Conv3x3(4)+Relu -> Flatten -> Gemm(10)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((4, 1, 3, 3)) * 0.3).astype(np.float32)
    b = (rng.standard_normal(4) * 0.1).astype(np.float32)
    fw = (rng.standard_normal((10, 256)) * 0.05).astype(np.float32)
    fb = np.zeros(10, np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], name="flatten", axis=1),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
        initializer=[numpy_helper.from_array(a, n) for a, n in ((w, "w"), (b, "b"), (fw, "fw"), (fb, "fb"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="microtrain-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def build_tflite_cnn(seed: int = 0) -> bytes:
    """A tiny full-integer int8 CNN with float boundary: QUANTIZE -> CONV_2D+RELU -> RESHAPE ->
    FULLY_CONNECTED -> DEQUANTIZE, input [1, 8, 8, 1] float32, output [1, 10] float32."""
    import tflite_builder as tb

    rng = np.random.default_rng(seed)
    s_x, s_c, s_y = 1 / 16, 0.05, 0.1
    w_s = np.full(4, 0.01, np.float32)
    fw_s = np.float32(0.004)
    tensors = [
        tb.TensorSpec("x", (1, 8, 8, 1), "float32"),
        tb.act("xq", (1, 8, 8, 1), s_x, -128),
        tb.weights("w", rng.integers(-127, 128, (4, 3, 3, 1)), w_s, axis=0),
        tb.bias("b", rng.integers(-200, 200, 4), s_x, w_s),
        tb.act("c", (1, 8, 8, 4), s_c, -128),
        tb.int32_const("shape", [1, 256]),
        tb.act("r", (1, 256), s_c, -128),
        tb.weights("fw", rng.integers(-127, 128, (10, 256)), [fw_s]),
        tb.bias("fb", np.zeros(10), s_c, [fw_s]),
        tb.act("logits", (1, 10), s_y, 0),
        tb.TensorSpec("y", (1, 10), "float32"),
    ]
    ops = [
        tb.OpSpec("QUANTIZE", ["x"], ["xq"]),
        tb.OpSpec("CONV_2D", ["xq", "w", "b"], ["c"], {"padding": "SAME", "stride_w": 1, "stride_h": 1,
                                                       "fused_activation_function": "RELU"}),
        tb.OpSpec("RESHAPE", ["c", "shape"], ["r"], {"new_shape": [1, 256]}),
        tb.OpSpec("FULLY_CONNECTED", ["r", "fw", "fb"], ["logits"], {"fused_activation_function": "NONE"}),
        tb.OpSpec("DEQUANTIZE", ["logits"], ["y"]),
    ]
    return tb.build_model(tensors, ops, inputs=["x"], outputs=["y"])


@pytest.fixture(scope="session")
def onnx_model(tmp_path_factory) -> Path:
    """examples/digits_cnn.onnx when it exists, else a tiny CNN built here."""
    if EXAMPLE_ONNX.exists():
        return EXAMPLE_ONNX
    p = tmp_path_factory.mktemp("models") / "tiny_cnn.onnx"
    p.write_bytes(build_onnx_cnn())
    return p


@pytest.fixture(scope="session")
def tflite_model(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("models") / "tiny_cnn.tflite"
    p.write_bytes(build_tflite_cnn())
    return p


# ---- helpers ---------------------------------------------------------------------------------------

def run(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)


def assert_one_line_error(result, code: int = 2, contains: str = "") -> str:
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    err = result.stderr
    assert "Traceback" not in result.output
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert contains.lower() in lines[0].lower(), lines[0]
    return lines[0]


def one_json(result) -> dict:
    assert result.exit_code == 0, (result.output, result.exception)
    obj = json.loads(result.stdout)  # raises if stdout is not exactly one JSON document
    assert isinstance(obj, dict)
    return obj


# ---- version and help --------------------------------------------------------------------------------

def test_version():
    from importlib.metadata import version

    r = run("--version")
    assert r.exit_code == 0 and r.stdout.strip() == f"microtrain {version('microtrain')}"


@pytest.mark.parametrize("cmd", [[], ["boards"], ["inspect"]])
def test_help_teaches(cmd):
    r = run(*cmd, "--help")
    assert r.exit_code == 0
    assert "Examples:" in r.stdout and "microtrain " in r.stdout.split("Examples:")[1]
    assert run(*cmd, "-h").stdout == r.stdout


def test_main_entry_point(capsys):
    with pytest.raises(SystemExit) as e:
        cli_mod.main(["--version"])
    assert e.value.code == 0 and "microtrain" in capsys.readouterr().out


# ---- boards ---------------------------------------------------------------------------------------------

def test_boards_table():
    r = run("boards")
    assert r.exit_code == 0
    for name in ("STM32F746G-DISCO", "NUCLEO-F411RE", "nRF52840-DK", "Raspberry Pi Pico",
                 "ESP32-C3-DevKitM-1", "HiFive1 Rev B", "Arduino Nano 33 BLE", "qemu-m4", "qemu-m7", "qemu-rv32"):
        assert name in r.stdout
    line = next(l for l in r.stdout.splitlines() if l.startswith("STM32F746G-DISCO"))
    assert "cortex-m7" in line and "320 KiB" in line and "1 MiB" in line and "216 MHz" in line


def test_boards_json():
    obj = one_json(run("boards", "--json"))
    boards = {b["name"]: b for b in obj["boards"]}
    assert len(boards) >= 10
    b = boards["NUCLEO-F411RE"]
    assert (b["core"], b["sram_bytes"], b["flash_bytes"], b["clock_hz"]) == ("cortex-m4", 131072, 524288, 100_000_000)
    assert b["features"] == {"dsp": True, "fpu": "sp"}
    assert boards["qemu-rv32"]["qemu"]["machine"] == "sifive_e"


def test_board_detail():
    r = run("boards", "DISCO_F746NG")
    assert r.exit_code == 0 and "STM32F746G-DISCO" in r.stdout and "usable" in r.stdout
    assert one_json(run("boards", "qemu-m4", "--json"))["board"]["qemu"]["uart"] == 0x40004000


def test_unknown_board():
    line = assert_one_line_error(run("boards", "arduino-uno"), contains="unknown board 'arduino-uno'")
    assert "stm32f746g-disco" in line and "qemu-rv32" in line


# ---- inspect ----------------------------------------------------------------------------------------------

def _check_summary(obj: dict, fmt: str, precision: str) -> None:
    assert obj["format"] == fmt and obj["precision"] == precision
    layers, tot = obj["layers"], obj["totals"]
    assert layers and tot["layers"] == len(layers)
    for l in layers:
        assert set(l) >= {"index", "name", "op", "input_shapes", "output_shapes", "params", "macs", "param_bytes"}
    assert tot["params"] == sum(l["params"] for l in layers) > 0
    assert tot["macs"] == sum(l["macs"] for l in layers) > 0
    assert tot["weight_bytes_float32"] == 4 * tot["params"]
    assert 0 < tot["weight_bytes_int8"] < tot["weight_bytes_float32"]
    assert {"conv2d", "fully_connected"} <= {l["op"] for l in layers}


def test_inspect_onnx_json(onnx_model):
    obj = one_json(run("inspect", onnx_model, "--json"))
    _check_summary(obj, "onnx", "float32")
    assert obj["totals"]["param_bytes"] == obj["totals"]["weight_bytes_float32"]
    assert "accuracy" not in obj


def test_inspect_onnx_text(onnx_model):
    r = run("inspect", onnx_model)
    assert r.exit_code == 0, r.output
    assert "float32" in r.stdout and "conv2d" in r.stdout and "total" in r.stdout and "MACs" in r.stdout


def test_inspect_tflite(tflite_model):
    obj = one_json(run("inspect", tflite_model, "--json"))
    _check_summary(obj, "tflite", "int8")
    conv = next(l for l in obj["layers"] if l["op"] == "conv2d")
    assert conv["params"] == 4 * 9 + 4 and conv["param_bytes"] == 4 * 9 + 4 * 4
    assert conv["macs"] == 8 * 8 * 4 * 9
    fc = next(l for l in obj["layers"] if l["op"] == "fully_connected")
    assert fc["macs"] == 256 * 10
    r = run("inspect", tflite_model)
    assert r.exit_code == 0 and "int8" in r.stdout


def test_inspect_data_onnx(onnx_model):
    obj = one_json(run("inspect", onnx_model, "--data", "digits", "--calib-samples", "64", "--json"))
    acc = obj["accuracy"]
    assert acc["data"] == "digits" and acc["calib_samples"] == 64 and acc["test_samples"] > 100
    assert "SHIFTED" in acc["description"]
    for k in ("float32", "int8", "agreement"):
        assert 0.0 <= acc[k] <= 1.0


@pytest.mark.skipif(not EXAMPLE_ONNX.exists(), reason="needs the trained example model")
def test_example_model_accuracy_on_its_pretraining_domain():
    acc = one_json(run("inspect", EXAMPLE_ONNX, "--data", "digits-clean", "--json"))["accuracy"]
    assert acc["float32"] > 0.9 and acc["int8"] > 0.9 and acc["agreement"] > 0.95
    assert abs(acc["float32"] - acc["int8"]) < 0.03


def test_inspect_data_text(onnx_model):
    r = run("inspect", onnx_model, "--data", "digits", "--calib-samples", "32")
    assert r.exit_code == 0, r.output
    assert "accuracy" in r.stdout and "agreement" in r.stdout


def test_inspect_data_tflite(tflite_model):
    acc = one_json(run("inspect", tflite_model, "--data", "digits-clean", "--json"))["accuracy"]
    assert acc["float32"] is None and acc["agreement"] is None and 0.0 <= acc["int8"] <= 1.0


def test_inspect_data_npz(onnx_model, tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "d.npz"
    np.savez(p, x_train=rng.random((40, 1, 8, 8)).astype(np.float32), y_train=rng.integers(0, 10, 40),
             x_test=rng.random((30, 1, 8, 8)).astype(np.float32), y_test=rng.integers(0, 10, 30))
    acc = one_json(run("inspect", onnx_model, "--data", p, "--json"))["accuracy"]
    assert acc["test_samples"] == 30 and acc["calib_samples"] == 40


# ---- errors ---------------------------------------------------------------------------------------------------

def test_missing_model():
    r = run("inspect", "no/such/model.onnx", "--json")
    assert_one_line_error(r, contains="no/such/model.onnx")
    assert r.stdout == ""


@pytest.mark.parametrize("name,content", [
    ("empty.onnx", b""),
    ("garbage.onnx", bytes(range(256)) * 4),
    ("empty.tflite", b""),
    ("garbage.tflite", b"\x10\x00\x00\x00TFL3" + b"\xff" * 64),
    ("model.txt", b"hello"),
    ("text.onnx", b"this is not a model\n"),
])
def test_corrupt_model_files(tmp_path, name, content):
    p = tmp_path / name
    p.write_bytes(content)
    assert_one_line_error(run("inspect", p), contains=name)


def test_truncated_models(tmp_path, onnx_model, tflite_model):
    for src in (onnx_model, tflite_model):
        data = src.read_bytes()
        p = tmp_path / ("cut" + src.suffix)
        p.write_bytes(data[: len(data) // 2])
        assert_one_line_error(run("inspect", p), contains=p.name)


def test_onnx_with_tflite_extension(tmp_path, onnx_model):
    p = tmp_path / "model.tflite"
    p.write_bytes(onnx_model.read_bytes())
    assert_one_line_error(run("inspect", p), contains="TFL3")


def test_bad_data(tmp_path, onnx_model):
    assert_one_line_error(run("inspect", onnx_model, "--data", "mnist-of-the-future"))
    assert_one_line_error(run("inspect", onnx_model, "--data", tmp_path / "missing.npz"))
    bad = tmp_path / "bad_shape.npz"
    np.savez(bad, x_train=np.zeros((10, 5, 5), np.float32), y_train=np.zeros(10, np.int64),
             x_test=np.zeros((10, 5, 5), np.float32), y_test=np.zeros(10, np.int64))
    assert_one_line_error(run("inspect", onnx_model, "--data", bad))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 definitely not a zip")
    assert_one_line_error(run("inspect", onnx_model, "--data", junk))


def test_usage_errors_exit_2(onnx_model):
    assert run("inspect").exit_code == 2
    assert run("inspect", onnx_model, "--calib-samples", "0").exit_code == 2
    assert run("frobnicate").exit_code == 2


def test_debug_shows_the_exception(tmp_path):
    from microtrain.compiler.errors import ModelFormatError

    r = CliRunner().invoke(cli, ["--debug", "inspect", str(tmp_path / "missing.onnx")])
    assert isinstance(r.exception, ModelFormatError)  # propagates: python prints the traceback


def test_unexpected_exception_while_loading(monkeypatch, onnx_model):
    import microtrain.compiler.frontend as fe

    def boom(path):
        raise IndexError("list index out of range")

    monkeypatch.setattr(fe, "load_model", boom)
    with observe_errors() as seen:
        line = assert_one_line_error(run("inspect", onnx_model), code=2, contains="IndexError")
    assert "--debug" in line
    assert [k for k, _ in seen] == ["unexpected-load", "error"]
    r = CliRunner().invoke(cli, ["--debug", "inspect", str(onnx_model)])
    assert isinstance(r.exception, IndexError)


def test_internal_error_is_one_line_exit_1(monkeypatch, onnx_model):
    import microtrain.compiler.inspect as ins

    monkeypatch.setattr(ins, "inspect_graph", lambda g: 1 / 0)
    with observe_errors() as seen:
        line = assert_one_line_error(run("inspect", onnx_model), code=1, contains="internal error")
    assert "ZeroDivisionError" in line and "--debug" in line
    assert [k for k, _ in seen] == ["internal"]
