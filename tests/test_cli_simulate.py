"""``microtrain simulate``: JSON contract, training changes accuracy, --save-params, --plot, and
the error discipline (exit 2, one ``error:`` line, no traceback) for bad data and schedules."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from microtrain.host.cli import cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_ONNX = str(ROOT / "examples" / "digits_cnn.onnx")


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.fixture(scope="module")
def sparse_json() -> dict:
    r = run("simulate", EXAMPLE_ONNX, "--data", "digits", "--schedule", "sparse", "--steps", "50", "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)  # exactly one JSON object on stdout


def test_json_keys_and_types(sparse_json):
    d = sparse_json
    for k in ("accuracy_before", "accuracy_after", "float_accuracy_after"):
        assert isinstance(d[k], float) and 0.0 <= d[k] <= 1.0
    assert d["steps"] == 50 and isinstance(d["steps"], int)
    assert d["seed"] == 0
    assert d["schedule"]["kind"] == "sparse" and d["schedule"]["microtrain_schedule"] == 1
    assert isinstance(d["trainable_params"], int) and d["trainable_params"] > 0
    assert isinstance(d["loss_curve"], list) and len(d["loss_curve"]) == 50
    assert all(isinstance(v, float) for v in d["loss_curve"])
    assert d["loss_curve_stride"] == 1
    assert isinstance(d["warnings"], list)


def test_training_changes_accuracy(sparse_json):
    assert sparse_json["accuracy_after"] != sparse_json["accuracy_before"]


def test_no_float_and_save_params_and_plot(tmp_path):
    params, png = tmp_path / "p.npz", tmp_path / "curve.png"
    r = run("simulate", EXAMPLE_ONNX, "--data", "digits", "--update", "-1:1,-2:0.5", "--steps", "30",
            "--seed", "3", "--no-float", "--json", "--save-params", str(params), "--plot", str(png))
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["float_accuracy_after"] is None and d["seed"] == 3
    with np.load(params) as z:
        files = set(z.files)
        assert files == {"fc1.weight", "fc1.weight.scale", "fc2.weight", "fc2.weight.scale"}
        assert z["fc2.weight"].dtype == np.int8 and z["fc2.weight"].shape == (10, 32)
        assert z["fc1.weight.scale"].shape == (32,) and np.all(z["fc1.weight.scale"] > 0)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".microtrain-")]  # no temp leftovers


def test_save_params_biases_are_int32(tmp_path):
    params = tmp_path / "b.npz"
    r = run("simulate", EXAMPLE_ONNX, "--data", "digits-clean", "--schedule", "bias", "--steps", "10",
            "--no-float", "--save-params", str(params))
    assert r.exit_code == 0, r.output
    assert "accuracy after" in r.stdout
    with np.load(params) as z:
        biases = [k for k in z.files if not k.endswith(".scale")]
        assert biases and all(z[k].dtype == np.int32 for k in biases)
        assert all(f"{k}.scale" in z.files for k in biases)


# ---- errors -----------------------------------------------------------------------------------

def _npz(path: Path, labels_max: int = 9, shape=(1, 8, 8)) -> str:
    rng = np.random.default_rng(0)
    x = rng.random((60,) + shape).astype(np.float32)
    y = rng.integers(0, 10, 60)
    y[5] = labels_max
    np.savez(path, x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    return str(path)


def _assert_one_line_error(r, needle: str) -> None:
    assert r.exit_code == 2, r.output
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.output and needle in lines[0], lines[0]


@pytest.mark.parametrize("case,needle", [
    ("label", "label 12"),
    ("shape", "shape"),
    ("update", "--update -9"),
])
def test_errors_exit_2_one_line(tmp_path, case, needle):
    if case == "label":
        data, extra = _npz(tmp_path / "d.npz", labels_max=12), []
    elif case == "shape":
        data, extra = _npz(tmp_path / "d.npz", shape=(1, 7, 9)), []
    else:
        data, extra = _npz(tmp_path / "d.npz"), ["--update", "-9"]
    r = run("simulate", EXAMPLE_ONNX, "--data", data, "--steps", "5", *extra)
    _assert_one_line_error(r, needle)


def test_epochs_with_steps_and_missing_file(tmp_path):
    _assert_one_line_error(run("simulate", EXAMPLE_ONNX, "--data", "digits", "--steps", "5", "--epochs", "1"),
                           "--epochs")
    _assert_one_line_error(run("simulate", str(tmp_path / "nope.onnx"), "--data", "digits"), "nope.onnx")
    _assert_one_line_error(run("simulate", EXAMPLE_ONNX, "--data", str(tmp_path / "nope.npz")), "nope.npz")
