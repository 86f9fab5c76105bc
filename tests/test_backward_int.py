"""Integer backward pass (``Op.backward_int8``), gradient format, integer loss and integer updates.

Reference: ``backward_float`` evaluated on the DEQUANTIZED operands (int8 activations, weights and
biases turned into reals, the int8 output's activation mask) with the dequantized integer upstream
gradient, so only the backward arithmetic is compared. Checked:
  * cosine >= 0.99 for every input gradient and trainable tensor, rows slices included; exact
    equality where the format promises it (masks, routing, reshapes, power-of-two scalings);
  * no float inside the integer path: a tracer records every float array/scalar a frame of the
    path binds or any Python-level function returns, and an AST check rejects true division,
    float literals and ``float`` names in device code (both shown to fail on float code);
  * int32 accumulators never overflow, on realistic and on worst-case operands;
  * the integer softmax cross-entropy against ``softmax_cross_entropy_float``;
  * the whole integer chain on ``examples/digits_cnn.onnx`` (PTQ on digits-clean) against the
    float chain on the dequantized model.
``python tests/test_backward_int.py`` prints the measurements quoted in docs/training-numerics.md.
"""
from __future__ import annotations

import ast
import inspect
import math
import sys
import textwrap
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from microtrain.compiler import gradfmt
from microtrain.compiler.gradfmt import Grad, acc_monitor
from microtrain.compiler.ir import Graph, Node, QParams, Tensor, verify
from microtrain.compiler.ops import _grad_int, loss_int, registry
from microtrain.compiler.ops._grad_int import prepare_int8_backward
from microtrain.compiler.ops.loss import softmax_cross_entropy_float
from microtrain.compiler.ops.quantize import quantize_array
from microtrain.compiler.quantize import activation_qparams, bias_qparams, weight_qparams

COS_MIN = 0.99
ROOT = Path(__file__).resolve().parents[1]
WEIGHTED = ("conv2d", "depthwise_conv2d", "fully_connected")
W_AXIS = {"conv2d": 0, "depthwise_conv2d": 3, "fully_connected": 0}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 and nb == 0.0:
        return 1.0
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(a @ b / (na * nb))


# ---- the case table ----------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    op: str
    shapes: list  # input shapes in node.inputs order (activation(s), then weight, bias)
    attrs: dict = field(default_factory=dict)
    spread: float = 1.0  # std of the float activation input before quantization
    per_tensor: bool = False  # fully_connected: one weight scale
    exact: bool = False  # the integer gradient equals the float one exactly


CASES = [
    Case("conv_pad1", "conv2d", [(2, 5, 5, 3), (4, 3, 3, 3), (4,)], {"pad": (1, 1, 1, 1)}),
    Case("conv_s2_asym_relu", "conv2d", [(1, 7, 6, 2), (3, 3, 2, 2), (3,)],
         {"stride": (2, 2), "pad": (0, 1, 2, 0), "act": "relu"}),
    Case("conv_d2_asym_relu6", "conv2d", [(2, 7, 7, 2), (3, 3, 3, 2), (3,)],
         {"dilation": (2, 2), "pad": (2, 1, 1, 2), "act": "relu6"}, spread=4.0),
    Case("conv_s21_d12", "conv2d", [(1, 6, 7, 2), (3, 2, 3, 2), (3,)],
         {"stride": (2, 1), "dilation": (1, 2), "pad": (1, 0, 0, 1)}),
    Case("conv_wide_relu", "conv2d", [(2, 8, 8, 16), (32, 3, 3, 16), (32,)], {"pad": (1, 1, 1, 1), "act": "relu"}),
    Case("conv_1x1_nobias", "conv2d", [(2, 3, 4, 3), (5, 1, 1, 3)], {}),
    Case("dw_m1_relu", "depthwise_conv2d", [(2, 6, 6, 3), (1, 3, 3, 3), (3,)],
         {"pad": (1, 1, 1, 1), "act": "relu"}),
    Case("dw_m2_s2_asym_relu6", "depthwise_conv2d", [(1, 7, 7, 2), (1, 3, 3, 4), (4,)],
         {"stride": (2, 2), "pad": (1, 0, 1, 2), "act": "relu6"}, spread=4.0),
    Case("dw_m3_d2", "depthwise_conv2d", [(1, 7, 6, 2), (1, 3, 2, 6), (6,)],
         {"dilation": (2, 2), "pad": (0, 2, 1, 0)}),
    Case("fc", "fully_connected", [(3, 5), (4, 5), (4,)], {}),
    Case("fc_relu", "fully_connected", [(4, 6), (5, 6), (5,)], {"act": "relu"}),
    Case("fc_relu6", "fully_connected", [(4, 6), (5, 6), (5,)], {"act": "relu6"}, spread=4.0),
    Case("fc_per_tensor", "fully_connected", [(3, 7), (4, 7), (4,)], {}, per_tensor=True),
    Case("fc_wide", "fully_connected", [(8, 256), (64, 256), (64,)], {"act": "relu"}),
    Case("fc_nobias", "fully_connected", [(3, 4), (2, 4)], {}),
    Case("add_same", "add", [(2, 3, 4, 5), (2, 3, 4, 5)], {}, exact=True),
    Case("add_channel_bcast", "add", [(2, 3, 4, 5), (5,)], {"act": "relu"}),
    Case("add_both_bcast_relu6", "add", [(2, 1, 4, 5), (2, 3, 1, 1)], {"act": "relu6"}, spread=4.0),
    Case("add_2d", "add", [(1, 6), (3, 6)], {}),
    Case("relu", "relu", [(2, 3, 4, 5)], {}, exact=True),
    Case("relu6", "relu6", [(3, 7)], {}, spread=4.0, exact=True),
    Case("maxpool_2x2_s2", "max_pool2d", [(2, 6, 6, 3)], {"ksize": (2, 2), "stride": (2, 2)}, exact=True),
    Case("maxpool_3x3_s2_pad", "max_pool2d", [(1, 7, 7, 2)],
         {"ksize": (3, 3), "stride": (2, 2), "pad": (1, 1, 1, 1)}),
    Case("maxpool_asym_relu", "max_pool2d", [(2, 5, 6, 2)],
         {"ksize": (3, 2), "stride": (1, 2), "pad": (2, 0, 0, 1), "act": "relu"}),
    Case("avgpool_2x2_s2", "avg_pool2d", [(2, 6, 6, 3)], {"ksize": (2, 2), "stride": (2, 2)}, exact=True),
    Case("avgpool_pad_excl", "avg_pool2d", [(1, 7, 7, 2)],
         {"ksize": (3, 3), "stride": (2, 2), "pad": (1, 1, 1, 1), "count_include_pad": False}),
    Case("avgpool_pad_incl", "avg_pool2d", [(1, 7, 7, 2)],
         {"ksize": (3, 3), "stride": (2, 2), "pad": (1, 1, 1, 1), "count_include_pad": True}),
    Case("avgpool_asym_incl_relu6", "avg_pool2d", [(2, 5, 6, 2)],
         {"ksize": (3, 2), "stride": (2, 1), "pad": (0, 1, 2, 0), "count_include_pad": True,
          "act": "relu6"}, spread=12.0),
    Case("avgpool_asym_excl_relu", "avg_pool2d", [(2, 5, 6, 2)],
         {"ksize": (3, 2), "stride": (2, 1), "pad": (0, 1, 2, 0), "count_include_pad": False,
          "act": "relu"}),
    Case("mean_keepdims_pow2", "mean", [(2, 4, 4, 5)], {"axes": (1, 2), "keepdims": True}, exact=True),
    Case("mean_flat", "mean", [(2, 3, 5, 5)], {"axes": (1, 2), "keepdims": False}),
    Case("reshape_flatten", "reshape", [(2, 3, 4, 5)], {"shape": (2, 60)}, exact=True),
    Case("reshape_unflatten", "reshape", [(2, 12)], {"shape": (2, 3, 2, 2)}, exact=True),
    Case("pad", "pad", [(2, 3, 4, 5)], {"pads": ((0, 0), (1, 2), (0, 1), (0, 0))}, exact=True),
    Case("quantize", "quantize", [(2, 3, 4, 5)], {}, exact=True),
    Case("dequantize", "dequantize", [(2, 3, 4, 5)], {}, exact=True),
]
CASE_IDS = [c.id for c in CASES]


@dataclass
class Built:
    case: Case
    node: Node
    graph: Graph
    p: dict
    xs_q: list  # integer operands (float32 for a quantize node's input)
    xs_f: list  # dequantized operands, float64
    y_q: np.ndarray
    y_f: np.ndarray  # dequantized output as the float rule must see it
    gy: Grad


def _deq(q: np.ndarray, scale: np.ndarray, zp, axis=None) -> np.ndarray:
    s = np.asarray(scale, np.float64)
    if axis is not None and s.size > 1:
        shape = [1] * q.ndim
        shape[axis] = -1
        s = s.reshape(shape)
    else:
        s = float(s.ravel()[0])
    return s * (q.astype(np.float64) - np.asarray(zp).ravel()[0])


def build(case: Case, seed: int = 0, bits: int = gradfmt.GRAD_BITS) -> Built:
    """A one-node int8 graph for ``case`` with PTQ-style parameters, its int8 forward and a random
    upstream gradient quantized to a Grad."""
    rng = np.random.default_rng([zlib.crc32(case.id.encode()), seed])
    op = registry.get(case.op)
    g = Graph(name=case.id)
    act_names = ["a", "b"] if case.op == "add" else ["x"]
    names = (act_names + ["w", "b"])[: len(case.shapes)] if case.op != "add" else act_names
    xs_q, xs_f = [], []
    for k, (name, shape) in enumerate(zip(names, case.shapes)):
        if k < len(act_names):
            xf = rng.standard_normal(shape) * case.spread + rng.uniform(-0.5, 0.5) * case.spread
            q = activation_qparams(xf.min(), xf.max())
            if case.op == "quantize":
                g.add_tensor(Tensor(name, shape, "float32"))
                xs_q.append(xf.astype(np.float32))
                xs_f.append(xf.astype(np.float32).astype(np.float64))
                continue
            xq = quantize_array(xf, q.s, q.zp)
            g.add_tensor(Tensor(name, shape, "int8", quant=q))
            xs_q.append(xq)
            xs_f.append(_deq(xq, q.scale, q.zp))
        elif k == 1:
            axis = None if case.per_tensor else W_AXIS[case.op]
            wq, wqp = weight_qparams(rng.standard_normal(shape) * 0.5, axis)
            g.add_tensor(Tensor(name, shape, "int8", data=wq, quant=wqp))
            xs_q.append(wq)
            xs_f.append(_deq(wq, wqp.scale, 0, axis))
        else:
            bq, bqp = bias_qparams(rng.standard_normal(shape) * 0.5, g.tensors["x"].quant.s, g.tensors["w"].quant)
            g.add_tensor(Tensor(name, shape, "int32", data=bq, quant=bqp))
            xs_q.append(bq)
            xs_f.append(_deq(bq, bqp.scale, 0, 0))
    g.inputs = [n for n in act_names if n in g.tensors]
    node = Node(case.op, case.id, list(names), ["y"], dict(case.attrs))
    ((yshape, ydtype),) = op.infer(node, [g.tensors[n] for n in names])
    if case.op in ("max_pool2d", "avg_pool2d", "reshape", "pad"):
        yq = g.tensors["x"].quant
    elif case.op == "dequantize":
        yq = None
    else:
        yf = op.forward_float(node, [x.astype(np.float32) for x in xs_f])[0]
        yq = activation_qparams(yf.min(), yf.max())
    g.add_tensor(Tensor("y", yshape, "float32" if case.op == "dequantize" else "int8", quant=yq))
    g.nodes = [node]
    g.outputs = ["y"]
    verify(g)
    p = prepare_int8_backward(node, g)
    if bits != gradfmt.GRAD_BITS:
        p.update(grad_bits=bits, acc_bits=64 if bits > 16 else 32)
    y_q = op.forward_int8(node, xs_q, p)[0]
    if case.op == "dequantize":
        y_f = y_q.astype(np.float64)
    else:
        y_f = _deq(y_q, yq.scale, yq.zp)
        act = case.op if case.op in ("relu", "relu6") else case.attrs.get("act", "none")
        if act == "relu6":  # the int8 clamp at act_max is the real 6, whatever the code dequantizes to
            y_f = np.where(y_q >= p["act_max"], 6.0, y_f)
    gy = Grad.from_real(np.random.default_rng(seed + 7).standard_normal(y_q.shape), bits)
    return Built(case, node, g, p, xs_q, xs_f, y_q, y_f, gy)


def run_int(b: Built, need, rows=None) -> dict:
    return registry.get(b.case.op).backward_int8(b.node, b.xs_q, [b.y_q], [b.gy], set(need), b.p, rows=rows)


def run_float(b: Built, need, rows=None) -> dict:
    return registry.get(b.case.op).backward_float(b.node, b.xs_f, [b.y_f], [b.gy.real()], set(need), rows=rows)


def positions(case: Case) -> list[int]:
    return list(range(len(case.shapes)))


def rows_options(case: Case) -> list:
    if case.op not in WEIGHTED:
        return [None]
    c = case.shapes[1][W_AXIS[case.op]]
    return [None] + sorted({1, (c + 1) // 2})


def case_cosines(b: Built) -> dict[tuple, float]:
    """{(position, rows): cosine} of every requested gradient of a built case."""
    out = {}
    for rows in rows_options(b.case):
        need = positions(b.case) if rows is None else [p for p in positions(b.case) if p > 0]
        gi, gf = run_int(b, need, rows), run_float(b, need, rows)
        for p in need:
            out[(p, rows)] = cosine(gi[p].real(), gf[p])
    return out


# ---- registry coverage -------------------------------------------------------------------------
def test_every_differentiable_op_has_an_integer_rule_and_a_case():
    ops = registry.all_ops()
    diff = {n for n, op in ops.items() if op.differentiable}
    assert {n for n in diff if not hasattr(ops[n], "backward_int8")} == set()
    assert diff == {c.op for c in CASES}


# ---- per-op agreement with the float rule --------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_matches_float_rule_on_dequantized_operands(case):
    for seed in range(3):
        b = build(case, seed)
        need = positions(case)
        gi, gf = run_int(b, need), run_float(b, need)
        assert set(gi) == set(need)
        for p in need:
            g = gi[p]
            assert isinstance(g, Grad) and g.m.dtype == np.int64, (p, type(g))
            assert g.m.shape == np.shape(b.xs_q[p]), (p, g.m.shape)
            assert gradfmt.max_abs(g.m) <= gradfmt.MANT_MAX
            c = cosine(g.real(), gf[p])
            assert c >= COS_MIN, f"{case.id} seed {seed} input {p}: cosine {c:.6f}"
            if case.exact:
                np.testing.assert_array_equal(g.real(), gf[p], err_msg=f"{case.id}: input {p}")
        for p in need:  # one position at a time gives the same result
            one = run_int(b, {p})
            assert set(one) == {p}
            np.testing.assert_array_equal(one[p].m, gi[p].m)
            assert one[p].e == gi[p].e


WEIGHTED_CASES = [c for c in CASES if c.op in WEIGHTED]


@pytest.mark.parametrize("case", WEIGHTED_CASES, ids=[c.id for c in WEIGHTED_CASES])
def test_rows_slices(case):
    b = build(case, 1)
    params = [p for p in (1, 2) if p < len(case.shapes)]
    full = run_int(b, params)
    for rows in rows_options(case)[1:]:
        gi, gf = run_int(b, params, rows), run_float(b, params, rows)
        for p in params:
            ax = W_AXIS[case.op] if p == 1 else 0
            assert gi[p].m.shape == gf[p].shape
            assert cosine(gi[p].real(), gf[p]) >= COS_MIN, (rows, p)
            # a slice is the prefix of the full gradient up to the per-tensor renormalisation
            want = np.take(full[p].real(), np.arange(rows), axis=ax)
            assert cosine(gi[p].real(), want) >= 0.9999
    assert np.array_equal(run_int(b, {0}, rows=1)[0].m, run_int(b, {0})[0].m)


def test_validation_matches_float_rule():
    b = build(CASES[0])
    with pytest.raises(ValueError, match="rows"):
        run_int(b, {1}, rows=0)
    with pytest.raises(ValueError, match="position"):
        run_int(b, {3})


# ---- gradient format ---------------------------------------------------------------------------
def test_renormalize_exact_cases():
    acc = np.array([-32767, 5, 0, 32767], np.int64)
    g = gradfmt.renormalize(acc, -20)
    assert g.e == -20 and np.array_equal(g.m, acc)  # fits: untouched
    acc = np.array([-3, 1, 7, -32767], np.int64) << 12  # needs a shift of 12; multiples of 2^12
    g = gradfmt.renormalize(acc, 4)
    assert g.e == 16 and gradfmt.max_abs(g.m) == gradfmt.MANT_MAX
    np.testing.assert_array_equal(g.real(), acc.astype(np.float64) * 16.0)  # shift is exact
    # rounding reaching 2^15 takes one more shift
    g = gradfmt.renormalize(np.array([65535, -1]), 0)
    assert g.e == 2 and g.m.tolist() == [16384, 0]
    # RDBPOT ties away from zero, symmetric
    g = gradfmt.renormalize(np.array([(1 << 16) + 2, -(1 << 16) - 2, 3 << 14]), 0)
    assert g.e == 2 and g.m.tolist() == [16385, -16385, 12288]


def test_mul_q31_and_headroom():
    m = np.arange(-32767, 32768, 97, dtype=np.int64)
    for real in (0.5, 0.25, 2.0 ** -20, 8.0):  # powers of two are exact
        mult, k = gradfmt.q31(real)
        g = gradfmt.mul_q31(m, -3, mult, k)
        np.testing.assert_array_equal(g.real(), m * 2.0 ** -3 * real)
    for real in (0.3, 1.7e-3, 12345.678):
        mult, k = gradfmt.q31(real)
        g = gradfmt.mul_q31(m, 5, mult, k)
        np.testing.assert_allclose(g.real(), m * 32.0 * real, rtol=0, atol=2.0 ** g.e)
    g = Grad(np.full(4, 32767), 0)
    h = gradfmt.headroom(g, 8, 4096)  # 15 + 8 + 12 = 35 bits -> 4 bits of pre-shift
    assert h.e == 4 and gradfmt.max_abs(h.m) * 256 * 4096 <= 2 ** 31
    assert gradfmt.headroom(g, 7, 512) is g  # 15 + 7 + 9 = 31: fits


def test_grad_from_real_roundtrip_and_add():
    x = np.random.default_rng(0).standard_normal(100) * 1e-3
    g = Grad.from_real(x)
    assert gradfmt.max_abs(g.m) <= gradfmt.MANT_MAX and gradfmt.max_abs(g.m) > gradfmt.MANT_MAX // 2
    assert np.max(np.abs(g.real() - x)) <= 2.0 ** (g.e - 1)
    a, b = Grad(np.array([100, -200]), -3), Grad(np.array([1, 3]), -5)
    s = gradfmt.add(a, b)
    np.testing.assert_array_equal(s.real(), [12.5, -24.875])  # b aligned to 2^-3: 1/4 -> 0, 3/4 -> 1


# ---- integer only ------------------------------------------------------------------------------
class FloatTrace:
    """sys.settrace recorder: every float ndarray / float scalar that a Python-level function
    returns, or that a local variable of a frame in the integer-path modules holds at a line."""

    MODULES = ("gradfmt.py", "_grad_int.py", "loss_int.py", "conv.py", "fully_connected.py",
               "elementwise.py", "pool.py", "shape.py", "quantize.py")

    def __init__(self, extra: tuple[str, ...] = ()):
        self.hits: list[str] = []
        self.files = self.MODULES + tuple(extra)

    @staticmethod
    def _is_float(v) -> bool:
        if isinstance(v, (float, np.floating)):
            return True
        return isinstance(v, np.ndarray) and v.dtype.kind in "fc"

    def _ours(self, frame) -> bool:
        f = frame.f_code.co_filename
        return ("/compiler/" in f and f.endswith(self.MODULES)) or f.endswith(self.files)

    def _local(self, frame, event, arg):
        if event == "return" and self._is_float(arg):
            self.hits.append(f"{frame.f_code.co_name} returned {type(arg).__name__}")
        elif event == "line" and self._ours(frame):
            for k, v in frame.f_locals.items():
                if self._is_float(v):
                    self.hits.append(f"{frame.f_code.co_name}: local {k} is {type(v).__name__}")
        return self._local

    def _global(self, frame, event, arg):
        return self._local

    def __enter__(self):
        self._old = sys.gettrace()
        sys.settrace(self._global)
        return self

    def __exit__(self, *exc):
        sys.settrace(self._old)
        return False


def test_float_tracer_catches_float_code():
    def sneaky(m):
        t = np.zeros(m.shape)  # float64 buffer
        return (t + m).astype(np.int64)

    with FloatTrace(extra=("test_backward_int.py",)) as tr:
        sneaky(np.arange(3))
    assert any("local t is ndarray" in h for h in tr.hits)  # a float buffer bound to a name
    with FloatTrace() as tr:
        np.pad(np.arange(3), 1, constant_values=0.5).astype(np.float64)
        np.linspace(0, 1, 3)  # a Python-level numpy function returning float
    assert any("linspace" in h for h in tr.hits)
    with FloatTrace() as tr:
        gradfmt.mul_q31(np.arange(3), 0, 1 << 30, 1)
    assert tr.hits == []


@pytest.mark.parametrize("case", [c for c in CASES if c.op != "quantize"],
                         ids=[c.id for c in CASES if c.op != "quantize"])
def test_backward_int8_runs_without_float(case):
    b = build(case, 2)
    need = positions(case)
    with FloatTrace() as tr:
        out = run_int(b, need, rows_options(case)[-1] if case.op in WEIGHTED else None)
    assert tr.hits == [], tr.hits[:5]
    for g in out.values():
        assert g.m.dtype == np.int64 and isinstance(g.e, int)


_FORBIDDEN_CALLS = {"float", "exp", "log", "log2", "sqrt", "ldexp", "frexp", "true_divide", "divide"}


def _float_constructs(fn_node: ast.AST) -> list[str]:
    bad = []
    for n in ast.walk(fn_node):
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div):
            bad.append(f"line {n.lineno}: true division")
        elif isinstance(n, ast.AugAssign) and isinstance(n.op, ast.Div):
            bad.append(f"line {n.lineno}: true division")
        elif isinstance(n, ast.Constant) and isinstance(n.value, float):
            bad.append(f"line {n.lineno}: float literal {n.value}")
        elif isinstance(n, ast.Name) and "float" in n.id.lower():
            bad.append(f"line {n.lineno}: {n.id}")
        elif isinstance(n, ast.Attribute) and ("float" in n.attr.lower() or n.attr in _FORBIDDEN_CALLS):
            bad.append(f"line {n.lineno}: .{n.attr}")
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in _FORBIDDEN_CALLS:
            bad.append(f"line {n.lineno}: {n.func.id}()")
    return bad


def _device_functions(tree: ast.AST):
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            decos = {d.id if isinstance(d, ast.Name) else getattr(d, "attr", "") for d in n.decorator_list}
            if "host_only" not in decos and not n.name.startswith("prepare"):
                yield n


def test_ast_check_catches_float_code():
    src = "def f(m):\n    return (m / 2).astype(int) + np.float32(0.5)\n"
    assert len(_float_constructs(ast.parse(src))) >= 3


def test_device_code_has_no_float_constructs():
    bad = []
    for mod in (gradfmt, _grad_int, loss_int):
        tree = ast.parse(Path(mod.__file__).read_text())
        for fn in _device_functions(tree):
            bad += [f"{mod.__name__}.{fn.name} {b}" for b in _float_constructs(fn)]
    for name, op in registry.all_ops().items():
        if hasattr(op, "backward_int8"):
            tree = ast.parse(textwrap.dedent(inspect.getsource(op.backward_int8)))
            bad += [f"{name}.backward_int8 {b}" for b in _float_constructs(tree)]
    assert bad == []


# ---- int32 headroom ----------------------------------------------------------------------------
def test_accumulators_stay_int32_on_cases():
    with acc_monitor() as rec:
        for case in CASES:
            b = build(case, 0)
            run_int(b, positions(case))
    assert rec and max(v for _, v in rec) < 2 ** 31


@pytest.mark.parametrize("op", ["conv2d", "fully_connected", "depthwise_conv2d"])
def test_worst_case_operands_do_not_overflow(op):
    """Full-scale int16 gradients of one sign against x - zp_x = 255 and w = 127 with large fan-ins
    (unshifted sums would reach 2^33): the headroom shift keeps every int32 accumulator in range
    without wasting more than a bit or two, and the result is still the float one."""
    if op == "conv2d":
        case = Case("worst_conv", op, [(4, 16, 16, 32), (256, 3, 3, 32), (256,)], {"pad": (1, 1, 1, 1)})
    elif op == "depthwise_conv2d":
        case = Case("worst_dw", op, [(4, 32, 32, 4), (1, 3, 3, 32), (32,)], {"pad": (1, 1, 1, 1)})
    else:
        case = Case("worst_fc", op, [(512, 64), (1024, 64), (1024,)], {})
    b = build(case, 0)
    qx = b.graph.tensors["x"].quant
    b.graph.tensors["x"].quant = QParams(qx.scale, -128)
    b.p = prepare_int8_backward(b.node, b.graph)
    assert b.p["x_bits"] == 8 and b.p["w_bits"] == 7
    b.xs_q[0] = np.full(b.xs_q[0].shape, 127, np.int8)
    b.xs_f[0] = _deq(b.xs_q[0], qx.scale, -128)
    b.xs_q[1] = np.full(b.xs_q[1].shape, 127, np.int8)
    b.xs_f[1] = _deq(b.xs_q[1], b.graph.tensors["w"].quant.scale, 0, W_AXIS[op])
    b.y_q = registry.get(op).forward_int8(b.node, b.xs_q, b.p)[0]
    b.y_f = _deq(b.y_q, b.graph.tensors["y"].quant.scale, b.graph.tensors["y"].quant.zp)
    b.gy = Grad(np.full(b.y_q.shape, 32767), -20)
    with acc_monitor() as rec:
        gi = run_int(b, [0, 1, 2])
    top = dict(rec)
    assert max(top.values()) < 2 ** 31
    assert top[f"{case.id} dW"] >= 2 ** 29  # shifted just enough (fan-in x 255 x 32767 > 2^31)
    gf = run_float(b, [0, 1, 2])
    for p in (0, 1, 2):
        assert cosine(gi[p].real(), gf[p]) >= 0.9999


# ---- integer loss ------------------------------------------------------------------------------
LOSS_TOL_INT8 = 2.0 ** -12  # |loss_int - loss_float| (nats), int8 logits, label within 31 of the max


@pytest.mark.parametrize("batch", [1, 4, 6])
def test_integer_loss_from_int8_logits(batch):
    rng = np.random.default_rng(batch)
    worst_cos, worst_err = 1.0, 0.0
    for trial in range(40):
        scale, zp = float(rng.uniform(0.02, 0.3)), int(rng.integers(-40, 40))
        x = np.clip(rng.normal(zp, 8 / scale * rng.uniform(0.1, 1), (batch, 10)), -128, 127).astype(np.int8)
        t = rng.integers(0, 10, batch)
        real = scale * (x.astype(np.float64) - zp)
        keep = real[np.arange(batch), t] >= real.max(axis=1) - 30  # the loss saturates below -31
        t = np.where(keep, t, real.argmax(axis=1))
        p = loss_int.prepare_softmax_ce_int8(np.float32(scale), zp, batch)
        r = loss_int.softmax_cross_entropy_int(x, t, p)
        lf, gf = softmax_cross_entropy_float(np.float32(scale) * (x.astype(np.float64) - zp), t)
        worst_cos = min(worst_cos, cosine(r.grad.real(), gf))
        worst_err = max(worst_err, abs(r.loss_mean / 65536 - lf))
        assert np.array_equal(r.correct, x.argmax(axis=1) == t)
        assert r.grad.m.dtype == np.int64 and gradfmt.max_abs(r.grad.m) <= gradfmt.MANT_MAX
        assert r.loss.dtype == np.int64 and np.all(r.loss >= 0) and np.all(r.loss < 2 ** 31)
    assert worst_cos >= 0.999, worst_cos
    assert worst_err <= LOSS_TOL_INT8, worst_err


def test_integer_loss_from_int32_accumulators():
    rng = np.random.default_rng(5)
    for trial in range(30):
        batch = int(rng.integers(1, 5))
        s = rng.uniform(5e-5, 5e-4, 10).astype(np.float32)
        acc = rng.integers(-60000, 60000, (batch, 10))
        z = acc * s.astype(np.float64)
        t = np.array([rng.choice(np.flatnonzero(row >= row.max() - 30)) for row in z])  # not saturated
        p = loss_int.prepare_softmax_ce_acc(s, batch)
        r = loss_int.softmax_cross_entropy_int(acc, t, p)
        lf, gf = softmax_cross_entropy_float(acc * s.astype(np.float64), t)
        assert cosine(r.grad.real(), gf) >= 0.999
        # logits are rounded to 2^-F (F >= -log2(s) - 1): loss error <= 2 LSB of z + 2^-12
        assert abs(r.loss_mean / 65536 - lf) <= 2.0 ** (1 - p["frac_bits"]) + 2.0 ** -12
        ok = np.sort(z, axis=1)[:, -1] - np.sort(z, axis=1)[:, -2] > 2.0 ** (1 - p["frac_bits"])
        assert np.array_equal(r.correct[ok], (z.argmax(axis=1) == t)[ok])


def test_integer_loss_runs_without_float_and_saturates():
    p = loss_int.prepare_softmax_ce_int8(0.25, 0, 2)
    x = np.array([[127, -128, 0], [5, 5, 5]], np.int8)
    with FloatTrace() as tr:
        r = loss_int.softmax_cross_entropy_int(x, np.array([1, 2]), p)
    assert tr.hits == []
    assert r.loss[0] / 65536 == pytest.approx(31.0, abs=1e-3)  # label 63.75 below the max: capped
    assert r.loss[1] / 65536 == pytest.approx(math.log(3), abs=2.0 ** -14)
    assert r.correct.tolist() == [False, False]  # a three-way tie predicts the first class
    np.testing.assert_array_equal(loss_int.log2_q16(np.array([1 << 19, 3 << 19]), 19),
                                  [0, round(math.log2(3) * 65536 - 0.5)])


# ---- integer SGD update ------------------------------------------------------------------------
def test_sgd_delta_qas_on_and_off():
    rng = np.random.default_rng(0)
    s_w = rng.uniform(1e-3, 2e-2, 6).astype(np.float32)
    g = Grad.from_real(rng.standard_normal((6, 3, 3, 4)) * 1e-2)
    lr = 0.05
    for qas, factor in ((True, 1.0 / s_w.astype(np.float64)), (False, s_w.astype(np.float64))):
        p = _grad_int.prepare_update(s_w, lr, qas=qas)
        with FloatTrace() as tr:
            d = _grad_int.sgd_delta(g, p, axis=0)
        assert tr.hits == []
        want = -lr * g.real() * factor.reshape(-1, 1, 1, 1) * 2.0 ** p["frac_bits"]
        np.testing.assert_allclose(d, np.clip(want, -(2 ** 31 - 1), 2 ** 31 - 1), rtol=2e-6, atol=1.0)
    p = _grad_int.prepare_update(s_w[:4], lr)  # depthwise slice: channel axis 3
    dw = Grad.from_real(rng.standard_normal((1, 3, 3, 4)))
    want = -lr * dw.real() / s_w[:4].astype(np.float64) * 2.0 ** 16
    np.testing.assert_allclose(_grad_int.sgd_delta(dw, p, axis=3), np.clip(want, -(2 ** 31 - 1), 2 ** 31 - 1),
                               rtol=2e-6, atol=1.0)


def test_xorshift32_and_stochastic_rounding_are_unbiased():
    x = 1
    seq = []
    for _ in range(3):
        x = _grad_int.xorshift32(x)
        seq.append(x)
    assert seq == [270369, 67634689, 2647435461]  # Marsaglia's xorshift32(13, 17, 5) from state 1
    w = np.zeros(20000, np.int8)
    delta = np.full(20000, int(0.3 * 2 ** 16), np.int64)  # 0.3 LSB: lost by plain rounding
    new, state = _grad_int.apply_stochastic_round(w, delta, 16, 12345)
    assert new.dtype == np.int8 and state != 12345
    assert abs(new.mean() - 0.3) < 0.02 and set(np.unique(new)) == {0, 1}
    new, _ = _grad_int.apply_stochastic_round(w, -delta, 16, 999)
    assert abs(new.mean() + 0.3) < 0.02
    # deterministic for a state, clamped to the int8 weight range
    a, _ = _grad_int.apply_stochastic_round(np.array([127, -127], np.int8), np.array([5 << 16, -5 << 16]), 16, 7)
    assert a.tolist() == [127, -127]


def test_master_copy_accumulates_small_steps():
    w = np.array([3, -3, 126], np.int8)
    master = _grad_int.init_master(w)
    delta = np.array([int(0.1 * 2 ** 16), -int(0.1 * 2 ** 16), 2 << 16], np.int64)
    for step in range(1, 11):
        master, w_new = _grad_int.apply_master_copy(master, delta)
        assert np.all(np.abs(master) <= 127 * 256) and w_new.dtype == np.int8
    assert w_new.tolist() == [4, -4, 127]  # ten 0.1 LSB steps make one LSB; clamped at 127


# ---- end to end: examples/digits_cnn.onnx ------------------------------------------------------
LINEAR = ("conv2d", "depthwise_conv2d", "fully_connected")


@dataclass
class Model:
    graph: Graph  # int8 graph (PTQ, io float)
    body: list  # nodes from the first int8 layer to the logits
    logits: str  # int8 logits tensor
    prepared: dict  # node name -> prepare + prepare_backward


@pytest.fixture(scope="module")
def digits_model() -> Model:
    from microtrain.compiler.frontend import load_model
    from microtrain.compiler.quantize import quantize_graph
    from microtrain.host.data import load_data

    fg = load_model(ROOT / "examples" / "digits_cnn.onnx")
    qg = quantize_graph(fg, load_data("digits-clean", fg).x_train[:256])
    body = [n for n in qg.nodes if n.op not in ("quantize", "dequantize")]
    return Model(qg, body, body[-1].outputs[0], {n.name: prepare_int8_backward(n, qg) for n in body})


def _forward(model: Model, x: np.ndarray) -> dict:
    from microtrain.compiler.interpreter import Interpreter
    from microtrain.compiler.quantize import model_input

    return Interpreter(model.graph, check=False).run(model_input(x, model.graph), keep_all=True)


def _dequantized(model: Model, name: str, value: np.ndarray) -> np.ndarray:
    t = model.graph.tensors[name]
    q = t.quant
    return _deq(np.asarray(value), q.scale, q.zero_point, q.axis)


def chain(model: Model, env: dict, labels: np.ndarray, integer: bool, bits: int = gradfmt.GRAD_BITS,
          float_loss_grad: bool = False) -> dict:
    """Backprop from the loss to conv1 through every layer; returns {(node, position): gradient}
    (float64 arrays; the integer chain's Grads dequantized at the end only). The integer chain
    runs the integer loss on the int8 logits (or, with ``float_loss_grad``, the float loss
    gradient quantized to a Grad), ``backward_int8`` with int8 values; the float chain runs
    ``softmax_cross_entropy_float`` and ``backward_float`` on the dequantized values."""
    g = model.graph
    val = (lambda n: g.tensors[n].data if g.tensors[n].is_const else env[n]) if integer else \
        (lambda n: _dequantized(model, n, g.tensors[n].data if g.tensors[n].is_const else env[n]))
    n_batch = len(labels)
    if integer and not float_loss_grad:
        q = g.tensors[model.logits].quant
        p = loss_int.prepare_softmax_ce_int8(q.s, q.zp, n_batch)
        grads = {model.logits: loss_int.softmax_cross_entropy_int(env[model.logits], labels, p, bits=bits).grad}
    else:
        _, gl = softmax_cross_entropy_float(_dequantized(model, model.logits, env[model.logits]), labels)
        grads = {model.logits: Grad.from_real(gl, bits) if integer else gl}
    first = model.body[0]
    out = {}
    for n in reversed(model.body):
        gy = grads.pop(n.outputs[0], None)
        if gy is None:
            continue
        op = registry.get(n.op)
        need = {k for k, i in enumerate(n.inputs) if i and not g.tensors[i].is_const and n is not first}
        if n.op in LINEAR:
            need |= {k for k in (1, 2) if k < len(n.inputs)}
        xs = [val(i) for i in n.inputs]
        ys = [val(o) for o in n.outputs]
        if integer:
            p = dict(model.prepared[n.name])
            if bits != gradfmt.GRAD_BITS:
                p.update(grad_bits=bits, acc_bits=64 if bits > 16 else 32)
            res = op.backward_int8(n, xs, ys, [gy], need, p)
        else:
            res = op.backward_float(n, xs, ys, [gy], need)
        for k, gk in res.items():
            name = n.inputs[k]
            if g.tensors[name].is_const:
                out[(n.name, k)] = gk.real() if integer else gk
            elif name in grads:
                grads[name] = gradfmt.add(grads[name], gk, bits) if integer else grads[name] + gk
            else:
                grads[name] = gk
        if integer:
            for k, name in enumerate(n.inputs):
                if k in res and name in grads and not g.tensors[name].is_const:
                    out[(n.name, k)] = grads[name].real()
        else:
            for k in res:
                if not g.tensors[n.inputs[k]].is_const:
                    out[(n.name, k)] = res[k]
    return out


def digits_cosines(model: Model, x: np.ndarray, y: np.ndarray, batch: int, bits: int = gradfmt.GRAD_BITS,
                   float_loss_grad: bool = False) -> dict:
    """Minimum cosine per (layer, position) over the batches of (x, y)."""
    worst: dict = {}
    for s in range(0, len(y) - batch + 1, batch):
        env = _forward(model, x[s:s + batch])
        lab = y[s:s + batch]
        gi = chain(model, env, lab, True, bits, float_loss_grad)
        gf = chain(model, env, lab, False)
        assert set(gi) == set(gf)
        for key in gf:
            worst[key] = min(worst.get(key, 1.0), cosine(gi[key], gf[key]))
    return worst


@pytest.mark.parametrize("batch", [1, 16])
def test_digits_integer_chain_matches_float_chain(digits_model, batch):
    from microtrain.host.data import load_data

    ds = load_data("digits", digits_model.graph)  # the shifted, last-mile domain: real gradients
    n = 16 if batch == 1 else 64
    with acc_monitor() as rec:
        worst = digits_cosines(digits_model, ds.x_train[:n], ds.y_train[:n], batch)
    assert max(v for _, v in rec) < 2 ** 31
    layers = [nd.name for nd in digits_model.body if nd.op in LINEAR]
    assert {(ln, 1) for ln in layers} <= set(worst) and (layers[0], 0) not in worst
    bad = {k: round(v, 5) for k, v in worst.items() if v < COS_MIN}
    assert not bad, bad


# ---- measurements for docs/training-numerics.md ------------------------------------------------
def measure() -> None:  # pragma: no cover - run by hand: python tests/test_backward_int.py
    import time

    from microtrain.host.data import load_data

    t0 = time.time()
    print("per-op 1 - min cosine over 3 seeds (all positions, rows slices) by mantissa width")
    widths = (8, 12, 16, 32)
    print(f"{'case':<26}" + "".join(f"{'int' + str(b):>10}" for b in widths))
    per_op: dict = {}
    for case in CASES:
        row = []
        for bits in widths:
            c = min(min(case_cosines(build(case, seed, bits)).values()) for seed in range(3))
            row.append(c)
            per_op.setdefault(case.op, {}).setdefault(bits, 1.0)
            per_op[case.op][bits] = min(per_op[case.op][bits], c)
        print(f"{case.id:<26}" + "".join(f"{1 - c:>10.1e}" for c in row))
    print("\nper-op 1 - min cosine")
    for op, d in per_op.items():
        print(f"{op:<26}" + "".join(f"{1 - d[b]:>10.1e}" for b in widths))
    from microtrain.compiler.frontend import load_model
    from microtrain.compiler.quantize import quantize_graph

    fg = load_model(ROOT / "examples" / "digits_cnn.onnx")
    ds = load_data("digits", fg)
    qg = quantize_graph(fg, load_data("digits-clean", fg).x_train[:256])
    body = [n for n in qg.nodes if n.op not in ("quantize", "dequantize")]
    model = Model(qg, body, body[-1].outputs[0], {n.name: prepare_int8_backward(n, qg) for n in body})
    for batch, n in ((1, 128), (16, 256)):
        print(f"\ndigits_cnn, batch {batch}, {n} samples: min cosine per layer (W, b, x)")
        res = {}
        for bits in widths:
            with acc_monitor() as rec:
                res[bits] = digits_cosines(model, ds.x_train[:n], ds.y_train[:n], batch, bits)
            print(f"  int{bits}: max |acc| = 2^{math.log2(max(v for _, v in rec)):.2f}")
        for key in res[16]:
            print(f"  {key[0]:<14} {key[1]}" + "".join(f"{1 - res[b][key]:>10.1e}" for b in widths))
    print(f"\n{time.time() - t0:.1f} s")


if __name__ == "__main__":  # pragma: no cover
    measure()
