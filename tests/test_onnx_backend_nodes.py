"""The ONNX backend node test cases shipped with the onnx package, for the ops the reader supports.

Sources (all from the installed onnx package):
  * ``onnx/backend/test/data/node/test_*/`` (model.onnx + test_data_set_0/*.pb) when the wheel ships
    it; otherwise the very same cases generated in memory by ``onnx.backend.test.case.node``
    (newer wheels ship the generators, not the files);
  * ``onnx/backend/test/data/pytorch-{converted,operator}/`` (opset < 13 models are upgraded with
    ``onnx.version_converter`` first).
A case is selected when every op in its model is in SUPPORTED_ONNX_OPS. Inputs that the reader needs
as constants (weights, shapes, pads, bounds) are turned into initializers holding the test data.
Each selected case must either import and reproduce the stored outputs with the float reference, or
be rejected with UnsupportedOpError / ModelFormatError; nothing else may happen.
"""
from __future__ import annotations

import glob
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from microtrain.compiler.errors import ModelFormatError, UnsupportedOpError
from microtrain.compiler.frontend.onnx_reader import SUPPORTED_ONNX_OPS, load_onnx
from models.onnx_helpers import run_ir

RTOL, ATOL = 1e-5, 1e-6
MIN_RUN = 40  # cases that must import and match (a healthy number: currently ~60)
# Cases that exercise configurations the reader claims to support: they must run, not be rejected.
MUST_RUN = {
    "test_basic_conv_with_padding", "test_basic_conv_without_padding", "test_conv_with_strides_padding",
    "test_conv_with_strides_no_padding", "test_conv_with_strides_and_asymmetric_padding",
    "test_conv_with_autopad_same", "test_gemm_default_no_bias", "test_gemm_default_vector_bias",
    "test_gemm_transposeB", "test_gemm_alpha", "test_gemm_beta", "test_gemm_default_single_elem_vector_bias",
    "test_gemm_default_scalar_bias", "test_gemm_default_zero_bias",
    "test_matmul_2d", "test_globalaveragepool", "test_globalaveragepool_precomputed",
    "test_averagepool_2d_default", "test_averagepool_2d_pads", "test_averagepool_2d_pads_count_include_pad",
    "test_averagepool_2d_same_upper", "test_averagepool_2d_same_lower", "test_averagepool_2d_strides",
    "test_averagepool_2d_precomputed_pads", "test_averagepool_2d_precomputed_same_upper",
    "test_maxpool_2d_default", "test_maxpool_2d_pads", "test_maxpool_2d_same_upper", "test_maxpool_2d_same_lower",
    "test_maxpool_2d_strides", "test_maxpool_2d_precomputed_pads", "test_maxpool_2d_precomputed_strides",
    "test_constant_pad", "test_softmax_example", "test_softmax_large_number", "test_identity",
    "test_Conv2d", "test_Conv2d_depthwise", "test_Conv2d_depthwise_padded", "test_Conv2d_depthwise_strided",
    "test_Conv2d_depthwise_with_multiplier", "test_Conv2d_padding", "test_Conv2d_strided", "test_Conv2d_no_bias",
    "test_Conv2d_dilated", "test_Linear", "test_MaxPool2d", "test_AvgPool2d", "test_AvgPool2d_stride",
    "test_ReLU", "test_ZeroPad2d", "test_ConstantPad2d", "test_operator_conv", "test_operator_mm", "test_Softmax",
    "test_softmax_lastdim", "test_constant_pad_axes", "test_constant_pad_negative_axes",
}

# Input positions the reader takes only as constants.
PARAM_INPUTS = {
    "Conv": (1, 2), "Gemm": (1, 2), "MatMul": (1,), "BatchNormalization": (1, 2, 3, 4), "Clip": (1, 2),
    "Reshape": (1,), "Pad": (1, 2, 3), "Squeeze": (1,), "Unsqueeze": (1,), "Dropout": (1, 2),
    "QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2),
}


@dataclass
class Case:
    name: str
    model: onnx.ModelProto
    inputs: list
    outputs: list
    origin: str


@dataclass
class Results:
    ran: list = field(default_factory=list)
    rejected: dict = field(default_factory=dict)
    failed: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)


def _read_pb_dir(d: str, prefix: str) -> list:
    out = []
    for f in sorted(glob.glob(os.path.join(d, f"{prefix}_*.pb")), key=lambda p: int(p.rsplit("_", 1)[1][:-3])):
        t = onnx.TensorProto()
        with open(f, "rb") as fh:
            t.ParseFromString(fh.read())
        out.append(numpy_helper.to_array(t))
    return out


def _dir_cases(root: str, origin: str) -> list[Case]:
    cases = []
    for d in sorted(glob.glob(os.path.join(root, "test_*"))):
        mp, ds = os.path.join(d, "model.onnx"), os.path.join(d, "test_data_set_0")
        if not (os.path.isfile(mp) and os.path.isdir(ds)):
            continue
        try:
            m = onnx.load(mp)
            ins, outs = _read_pb_dir(ds, "input"), _read_pb_dir(ds, "output")
        except Exception:  # sequence/optional data: not tensors, not ours
            continue
        cases.append(Case(os.path.basename(d), m, ins, outs, origin))
    return cases


def _generated_node_cases() -> list[Case]:
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        tcs = collect_testcases()
    out = []
    for tc in tcs:
        if tc.model is None or not tc.data_sets:
            continue
        ins, outs = tc.data_sets[0]
        if not all(isinstance(a, (np.ndarray, np.generic)) for a in list(ins) + list(outs)):
            continue
        out.append(Case(tc.name, tc.model, [np.asarray(a) for a in ins], [np.asarray(a) for a in outs],
                        "node(generated)"))
    return out


def _upgrade(m: onnx.ModelProto) -> onnx.ModelProto | None:
    v = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)
    if v is None or v >= 13:
        return m
    try:
        return onnx.version_converter.convert_version(m, 13)
    except Exception:
        return None


def _freeze_params(case: Case) -> tuple[onnx.ModelProto, dict]:
    """Graph inputs in PARAM_INPUTS positions become initializers; returns (model, feeds)."""
    m = onnx.ModelProto()
    m.CopyFrom(case.model)
    g = m.graph
    inits = {t.name for t in g.initializer}
    graph_ins = [i.name for i in g.input if i.name not in inits]
    data = dict(zip(graph_ins, case.inputs))
    freeze = set()
    for n in g.node:
        for pos in PARAM_INPUTS.get(n.op_type, ()):
            if pos < len(n.input) and n.input[pos] in data:
                freeze.add(n.input[pos])
    for name in freeze:
        g.initializer.append(numpy_helper.from_array(np.asarray(data[name]), name))
    keep = [i for i in g.input if i.name not in freeze]
    del g.input[:]
    g.input.extend(keep)
    return m, {k: v for k, v in data.items() if k not in freeze}


def _select(cases: list[Case]) -> list[Case]:
    sel = []
    for c in cases:
        ops = {n.op_type for n in c.model.graph.node}
        if ops and ops <= set(SUPPORTED_ONNX_OPS):
            sel.append(c)
    return sel


@pytest.fixture(scope="module")
def results() -> Results:
    return run_all()


def run_all() -> Results:
    base = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")
    node_dir = os.path.join(base, "node")
    cases = _dir_cases(node_dir, "node") if os.path.isdir(node_dir) else _generated_node_cases()
    for sub in ("pytorch-converted", "pytorch-operator"):
        cases += _dir_cases(os.path.join(base, sub), sub)
    res = Results()
    for c in _select(cases):
        m = _upgrade(c.model)
        if m is None:
            res.skipped[c.name] = "onnx.version_converter cannot upgrade it to opset 13"
            continue
        c.model = m
        model, feeds = _freeze_params(c)
        try:
            g = load_onnx(model)
        except (UnsupportedOpError, ModelFormatError) as e:
            assert "\n" not in str(e)
            res.rejected[c.name] = str(e)
            continue
        except Exception as e:  # any other exception type is a reader bug
            res.failed[c.name] = f"import raised {type(e).__name__}: {e}"
            continue
        try:
            got = run_ir(g, feeds)
            assert len(got) == len(c.outputs), f"{len(got)} outputs, expected {len(c.outputs)}"
            for o, w in zip(got, c.outputs):
                np.testing.assert_allclose(o, w, rtol=RTOL, atol=ATOL)
        except Exception as e:
            res.failed[c.name] = f"{type(e).__name__}: {str(e)[:400]}"
            continue
        res.ran.append(c.name)
    print(f"\nONNX backend node cases: {len(res.ran)} ran and matched, {len(res.rejected)} rejected with "
          f"UnsupportedOpError/ModelFormatError, {len(res.skipped)} skipped, {len(res.failed)} failed")
    return res


def test_selected_cases_match_or_are_rejected(results):
    assert not results.failed, "\n".join(f"{k}: {v}" for k, v in sorted(results.failed.items()))


def test_healthy_number_of_cases_ran(results):
    assert len(results.ran) >= MIN_RUN, (len(results.ran), sorted(results.ran))


def test_supported_configurations_are_not_rejected(results):
    missing = {n: results.rejected.get(n, "not found") for n in MUST_RUN if n not in results.ran}
    assert not missing, "\n".join(f"{k}: {v}" for k, v in sorted(missing.items()))


def test_rejections_name_the_op(results):
    for name, msg in results.rejected.items():
        assert "unsupported op" in msg or "microtrain" in msg or ":" in msg, (name, msg)
