"""Float backward rules (``Op.backward_float``) and the float loss.

Checked three ways on the same case table:
  * central finite differences in float64 of L = sum(gy * y), y from a float64 reference forward
    defined here (index-array gathers, independent of the ops' own window helpers) that is itself
    checked against each op's ``forward_float``;
  * torch autograd (NHWC <-> NCHW, OHWI <-> OIHW, depthwise [1,KH,KW,C*M] <-> [C*M,1,KH,KW]);
  * structural contracts: rows-sliced gradients, requested positions only, float64 results.
Every op in the registry with ``differentiable = True`` must have a case in ``CASES``.
All ops here are piecewise linear, so finite differences are exact up to rounding as long as no
kink (relu at 0, relu6 at 0 and 6, a max tie) lies within a step: inputs are redrawn until every
pre-activation and every window's top-two gap is at least ``MARGIN`` away from one.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np
import pytest

from microtrain.compiler.ir import Node
from microtrain.compiler.ops import registry
from microtrain.compiler.ops.loss import softmax_cross_entropy_float

STEP = 1e-3  # finite-difference step for the piecewise-linear ops
MARGIN = 2e-2  # minimum distance of any pre-activation / max gap from a kink
RTOL, ATOL = 1e-6, 1e-8


# ---- the case table ----------------------------------------------------------------------------
@dataclass
class Case:
    id: str
    op: str
    shapes: list  # input shapes in node.inputs order (activation(s), then weight, bias)
    attrs: dict = field(default_factory=dict)
    spread: float = 1.0  # std of the activation input (relu6 cases spread past 6)
    distinct: bool = False  # activation input is a shuffled grid of values 0.05 apart (max pools)

    @property
    def weighted(self) -> bool:
        return self.op in ("conv2d", "depthwise_conv2d", "fully_connected")


CASES = [
    Case("conv_pad1", "conv2d", [(2, 5, 5, 3), (4, 3, 3, 3), (4,)], {"pad": (1, 1, 1, 1)}),
    Case("conv_s2_asym_relu", "conv2d", [(1, 7, 6, 2), (3, 3, 2, 2), (3,)],
         {"stride": (2, 2), "pad": (0, 1, 2, 0), "act": "relu"}),
    Case("conv_d2_asym_relu6", "conv2d", [(2, 7, 7, 2), (3, 3, 3, 2), (3,)],
         {"dilation": (2, 2), "pad": (2, 1, 1, 2), "act": "relu6"}, spread=4.0),
    Case("conv_s21_d12", "conv2d", [(1, 6, 7, 2), (3, 2, 3, 2), (3,)],
         {"stride": (2, 1), "dilation": (1, 2), "pad": (1, 0, 0, 1)}),
    Case("conv_unread_tail", "conv2d", [(1, 6, 6, 2), (2, 3, 3, 2), (2,)], {"stride": (2, 2)}),
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
    Case("fc_nobias", "fully_connected", [(3, 4), (2, 4)], {}),
    Case("add_same", "add", [(2, 3, 4, 5), (2, 3, 4, 5)], {}),
    Case("add_channel_bcast", "add", [(2, 3, 4, 5), (5,)], {"act": "relu"}),
    Case("add_both_bcast_relu6", "add", [(2, 1, 4, 5), (2, 3, 1, 1)], {"act": "relu6"}, spread=4.0),
    Case("add_2d", "add", [(1, 6), (3, 6)], {}),
    Case("relu", "relu", [(2, 3, 4, 5)], {}),
    Case("relu6", "relu6", [(3, 7)], {}, spread=4.0),
    Case("maxpool_2x2_s2", "max_pool2d", [(2, 6, 6, 3)], {"ksize": (2, 2), "stride": (2, 2)}, distinct=True),
    Case("maxpool_3x3_s2_pad", "max_pool2d", [(1, 7, 7, 2)],
         {"ksize": (3, 3), "stride": (2, 2), "pad": (1, 1, 1, 1)}, distinct=True),
    Case("maxpool_asym_relu", "max_pool2d", [(2, 5, 6, 2)],
         {"ksize": (3, 2), "stride": (1, 2), "pad": (2, 0, 0, 1), "act": "relu"}, distinct=True),
    Case("avgpool_2x2_s2", "avg_pool2d", [(2, 6, 6, 3)], {"ksize": (2, 2), "stride": (2, 2)}),
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
    Case("mean_keepdims", "mean", [(2, 3, 4, 5)], {"axes": (1, 2), "keepdims": True}),
    Case("mean_flat", "mean", [(2, 3, 4, 5)], {"axes": (1, 2), "keepdims": False}),
    Case("reshape_flatten", "reshape", [(2, 3, 4, 5)], {"shape": (2, 60)}),
    Case("reshape_unflatten", "reshape", [(2, 12)], {"shape": (2, 3, 2, 2)}),
    Case("pad", "pad", [(2, 3, 4, 5)], {"pads": ((0, 0), (1, 2), (0, 1), (0, 0)), "value": 0.5}),
    Case("quantize", "quantize", [(2, 3, 4, 5)], {}),
    Case("dequantize", "dequantize", [(2, 3, 4, 5)], {}),
]
CASE_IDS = [c.id for c in CASES]


def node_of(case: Case) -> Node:
    names = ["a", "b"] if case.op == "add" else ["x", "w", "b"]
    return Node(case.op, case.id, names[: len(case.shapes)], ["y"], dict(case.attrs))


# ---- float64 reference forward -----------------------------------------------------------------
def _out(n, k, s, d, lo, hi):
    return (n + lo + hi - (d * (k - 1) + 1)) // s + 1


def _gathered_taps(xp, kh, kw, stride, dil, oh, ow):
    """(i, j, xp[:, oh*sh + i*dh, ow*sw + j*dw, :]) per tap, [N, OH, OW, C] via index arrays."""
    r0, c0 = np.arange(oh) * stride[0], np.arange(ow) * stride[1]
    for i in range(kh):
        for j in range(kw):
            yield i, j, xp[:, (r0 + i * dil[0])[:, None], (c0 + j * dil[1])[None, :], :]


def _pad_hw(x, pads, value):
    t, l, b, r = pads
    return np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=value)


def ref_pre(op: str, attrs: dict, xs: list) -> np.ndarray:
    """Pre-activation output in float64 (the fused ``act`` or relu/relu6 itself is applied later)."""
    if op in ("conv2d", "depthwise_conv2d"):
        x, w = xs[0], xs[1]
        kh, kw = w.shape[1], w.shape[2]
        st, dl = attrs.get("stride", (1, 1)), attrs.get("dilation", (1, 1))
        pads = attrs.get("pad", (0, 0, 0, 0))
        oh = _out(x.shape[1], kh, st[0], dl[0], pads[0], pads[2])
        ow = _out(x.shape[2], kw, st[1], dl[1], pads[1], pads[3])
        xp = _pad_hw(x, pads, 0.0)
        if op == "conv2d":
            z = np.zeros((x.shape[0], oh, ow, w.shape[0]))
            for i, j, tap in _gathered_taps(xp, kh, kw, st, dl, oh, ow):
                z += np.einsum("nhwc,oc->nhwo", tap, w[:, i, j, :])
        else:
            src = np.arange(w.shape[3]) // (w.shape[3] // x.shape[3])
            z = np.zeros((x.shape[0], oh, ow, w.shape[3]))
            for i, j, tap in _gathered_taps(xp, kh, kw, st, dl, oh, ow):
                z += tap[..., src] * w[0, i, j, :]
        return z + xs[2] if len(xs) > 2 else z
    if op == "fully_connected":
        z = xs[0] @ xs[1].T
        return z + xs[2] if len(xs) > 2 else z
    if op == "add":
        return xs[0] + xs[1]
    if op in ("max_pool2d", "avg_pool2d"):
        x = xs[0]
        kh, kw = attrs["ksize"]
        st, pads = attrs.get("stride", (1, 1)), attrs.get("pad", (0, 0, 0, 0))
        oh = _out(x.shape[1], kh, st[0], 1, pads[0], pads[2])
        ow = _out(x.shape[2], kw, st[1], 1, pads[1], pads[3])
        if op == "max_pool2d":
            taps = [t for _, _, t in _gathered_taps(_pad_hw(x, pads, -np.inf), kh, kw, st, (1, 1), oh, ow)]
            return np.max(taps, axis=0)
        total = sum(t for _, _, t in _gathered_taps(_pad_hw(x, pads, 0.0), kh, kw, st, (1, 1), oh, ow))
        if attrs.get("count_include_pad", False):
            return total / (kh * kw)
        ones = _pad_hw(np.ones((1,) + x.shape[1:3] + (1,)), pads, 0.0)
        return total / sum(t for _, _, t in _gathered_taps(ones, kh, kw, st, (1, 1), oh, ow))
    if op == "mean":
        return xs[0].mean(axis=(1, 2), keepdims=attrs.get("keepdims", True))
    if op == "reshape":
        return xs[0].reshape((xs[0].shape[0],) + tuple(attrs["shape"][1:]))
    if op == "pad":
        return np.pad(xs[0], attrs["pads"], constant_values=attrs.get("value", 0.0))
    if op in ("relu", "relu6", "quantize", "dequantize"):
        return xs[0]
    raise KeyError(op)


def act_of(case: Case) -> str:
    return case.op if case.op in ("relu", "relu6") else case.attrs.get("act", "none")


def apply_act(z: np.ndarray, act: str) -> np.ndarray:
    return {"none": z, "relu": np.maximum(z, 0.0), "relu6": np.clip(z, 0.0, 6.0)}[act]


def ref_forward(case: Case, xs: list) -> np.ndarray:
    return apply_act(ref_pre(case.op, case.attrs, xs), act_of(case))


# ---- inputs away from kinks --------------------------------------------------------------------
def _draw(case: Case, rng: np.random.Generator) -> list:
    xs = []
    for k, shape in enumerate(case.shapes):
        if k == 0 and case.distinct:
            size = int(np.prod(shape))
            xs.append(((rng.permutation(size) - size / 3) * 0.05).reshape(shape))
        elif k == 0 or case.op == "add":
            xs.append(rng.standard_normal(shape) * case.spread)
        else:
            xs.append(rng.standard_normal(shape) * 0.5)
    return xs


def _far_from_kinks(case: Case, xs: list) -> bool:
    z = ref_pre(case.op, case.attrs, xs)
    act = act_of(case)
    if act in ("relu", "relu6"):
        if np.min(np.abs(z)) < MARGIN or not (np.any(z > 0) and np.any(z < 0)):
            return False
        if act == "relu6" and (np.min(np.abs(z - 6.0)) < MARGIN or not np.any(z > 6.0)):
            return False
    if case.op == "max_pool2d":  # top-two gap of every padded window
        a = case.attrs
        x = xs[0]
        kh, kw = a["ksize"]
        st, pads = a.get("stride", (1, 1)), a.get("pad", (0, 0, 0, 0))
        oh = _out(x.shape[1], kh, st[0], 1, pads[0], pads[2])
        ow = _out(x.shape[2], kw, st[1], 1, pads[1], pads[3])
        taps = np.sort([t for _, _, t in _gathered_taps(_pad_hw(x, pads, -np.inf), kh, kw, st, (1, 1), oh, ow)],
                       axis=0)
        if np.min(taps[-1] - taps[-2]) < MARGIN:
            return False
    return True


def inputs_for(case: Case) -> list:
    for seed in range(100):
        xs = _draw(case, np.random.default_rng([zlib.crc32(case.id.encode()), seed]))
        if _far_from_kinks(case, xs):
            return xs
    raise AssertionError(f"{case.id}: no kink-free draw in 100 seeds")


def finite_difference(case: Case, xs: list, gy: np.ndarray, pos: int) -> np.ndarray:
    """Central difference of L = sum(gy * y) w.r.t. every element of xs[pos] (float64)."""
    grad = np.empty(xs[pos].shape)
    work = [x.copy() for x in xs]
    flat = work[pos].reshape(-1)
    for e in range(flat.size):
        keep = flat[e]
        flat[e] = keep + STEP
        hi = np.sum(gy * ref_forward(case, work))
        flat[e] = keep - STEP
        lo = np.sum(gy * ref_forward(case, work))
        flat[e] = keep
        grad.reshape(-1)[e] = (hi - lo) / (2 * STEP)
    return grad


def backward(case: Case, xs: list, gy: np.ndarray, need, rows=None) -> dict:
    y = ref_forward(case, xs)
    return registry.get(case.op).backward_float(node_of(case), xs, [y], [gy], set(need), rows=rows)


def _setup(case: Case):
    xs = inputs_for(case)
    gy = np.random.default_rng(7).standard_normal(ref_forward(case, xs).shape)
    return xs, gy


# ---- registry coverage -------------------------------------------------------------------------
def test_every_differentiable_op_has_a_case():
    ops = registry.all_ops()
    covered = {c.op for c in CASES}
    missing = sorted(n for n, op in ops.items() if op.differentiable and n not in covered)
    assert not missing, f"differentiable ops without a backward case: {missing}"
    assert not covered - set(ops), "cases for unregistered ops"
    expected = {"conv2d", "depthwise_conv2d", "fully_connected", "add", "relu", "relu6", "max_pool2d",
                "avg_pool2d", "mean", "reshape", "pad", "quantize", "dequantize"}
    assert expected <= {n for n, op in ops.items() if op.differentiable}
    assert not ops["softmax"].differentiable and not ops["batch_norm"].differentiable


@pytest.mark.parametrize("name", sorted(n for n, op in registry.all_ops().items() if not op.differentiable))
def test_non_differentiable_ops_refuse(name):
    with pytest.raises(NotImplementedError):
        registry.get(name).backward_float(Node(name, "n", ["x"], ["y"]), [np.zeros((1, 2))],
                                          [np.zeros((1, 2))], [np.zeros((1, 2))], {0})


# ---- finite differences ------------------------------------------------------------------------
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_reference_forward_matches_op_forward(case):
    xs = inputs_for(case)
    got = registry.get(case.op).forward_float(node_of(case), [x.astype(np.float32) for x in xs])[0]
    np.testing.assert_allclose(got, ref_forward(case, xs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_gradients_match_finite_differences(case):
    xs, gy = _setup(case)
    positions = list(range(len(xs)))
    grads = backward(case, xs, gy, positions)
    assert set(grads) == set(positions)
    for p in positions:
        assert grads[p].shape == xs[p].shape, (p, grads[p].shape)
        np.testing.assert_allclose(grads[p], finite_difference(case, xs, gy, p), rtol=RTOL, atol=ATOL,
                                   err_msg=f"{case.id}: input {p}")
        one = backward(case, xs, gy, {p})
        assert set(one) == {p}
        np.testing.assert_allclose(one[p], grads[p], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("case", [c for c in CASES if c.weighted], ids=[c.id for c in CASES if c.weighted])
def test_rows_slice_is_prefix_of_full_gradient(case):
    xs, gy = _setup(case)
    params = [p for p in (1, 2) if p < len(xs)]
    full = backward(case, xs, gy, params)
    axis = 3 if case.op == "depthwise_conv2d" else 0
    channels = xs[1].shape[axis]
    for rows in sorted({1, (channels + 1) // 2, channels}):
        got = backward(case, xs, gy, params, rows=rows)
        for p in params:
            ax = axis if p == 1 else 0
            want = np.take(full[p], np.arange(rows), axis=ax)
            assert got[p].shape == want.shape
            np.testing.assert_allclose(got[p], want, rtol=1e-12, atol=1e-14)
    # rows never narrows the input gradient
    np.testing.assert_allclose(backward(case, xs, gy, {0}, rows=1)[0], backward(case, xs, gy, {0})[0],
                               rtol=0, atol=0)


def test_rows_and_need_are_validated():
    case = CASES[0]
    xs, gy = _setup(case)
    for rows in (0, xs[1].shape[0] + 1):
        with pytest.raises(ValueError, match="rows"):
            backward(case, xs, gy, {1}, rows=rows)
    with pytest.raises(ValueError, match="position"):
        backward(case, xs, gy, {3})
    relu = next(c for c in CASES if c.op == "relu")
    with pytest.raises(ValueError, match="position"):
        backward(relu, inputs_for(relu), np.zeros(relu.shapes[0]), {1})


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_float32_operands_give_float64_gradients(case):
    xs, gy = _setup(case)
    xs32 = [x.astype(np.float32) for x in xs]
    y32 = registry.get(case.op).forward_float(node_of(case), xs32)[0]
    grads = registry.get(case.op).backward_float(node_of(case), xs32, [y32], [gy.astype(np.float32)],
                                                 set(range(len(xs))))
    want = backward(case, xs, gy, range(len(xs)))
    for p, g in grads.items():
        assert g.dtype == np.float64, (p, g.dtype)
        np.testing.assert_allclose(g, want[p], rtol=1e-5, atol=1e-5)


# ---- max pool tie rule -------------------------------------------------------------------------
def test_max_pool_ties_go_to_first_in_scan_order():
    node = Node("max_pool2d", "mp", ["x"], ["y"], {"ksize": (3, 3), "stride": (1, 1), "pad": (1, 1, 0, 0)})
    x = np.full((1, 4, 4, 1), -2.0)  # every window is a tie (padding is never the max)
    y = registry.get("max_pool2d").forward_float(node, [x])[0]
    gy = np.arange(1.0, 1.0 + y.size).reshape(y.shape)
    gx = registry.get("max_pool2d").backward_float(node, [x], [y], [gy], {0})[0]
    want = np.zeros_like(x)
    for oh in range(y.shape[1]):
        for ow in range(y.shape[2]):
            # first valid element of the padded window starting at (oh - 1, ow - 1)
            want[0, max(oh - 1, 0), max(ow - 1, 0), 0] += gy[0, oh, ow, 0]
    np.testing.assert_array_equal(gx, want)


# ---- loss --------------------------------------------------------------------------------------
def test_softmax_cross_entropy_value_and_finite_differences():
    rng = np.random.default_rng(3)
    z, t = rng.standard_normal((4, 5)) * 2, np.array([0, 3, 4, 3])
    loss, grad = softmax_cross_entropy_float(z, t)
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(4), t])), rel=1e-12)
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-15)
    h, num = 1e-5, np.empty_like(z)
    for idx in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += h
        zm[idx] -= h
        num[idx] = (softmax_cross_entropy_float(zp, t)[0] - softmax_cross_entropy_float(zm, t)[0]) / (2 * h)
    np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-9)


def test_softmax_cross_entropy_is_stable_and_validates():
    z, t = np.array([[1000.0, 0.0, -1000.0], [-1e4, -1e4, -1e4 + 1]]), np.array([2, 2])
    loss, grad = softmax_cross_entropy_float(z, t)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    assert loss == pytest.approx((2000.0 + np.log1p(2 * np.exp(-1.0)) - 1.0 + 1.0) / 2, rel=1e-12)
    shifted = softmax_cross_entropy_float(z - 500.0, t)
    assert shifted[0] == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(shifted[1], grad, atol=1e-15)
    for bad in (np.array([0, 3]), np.array([0.0, 1.0]), np.array([0])):
        with pytest.raises(ValueError):
            softmax_cross_entropy_float(z, bad)


# ---- torch autograd ----------------------------------------------------------------------------
def _torch_grads(fn, xs, gy):
    """Gradients of sum(gy * fn(*xs)) w.r.t. every xs (numpy float64 in, numpy out)."""
    torch = pytest.importorskip("torch")
    ts = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in xs]
    (fn(*ts) * torch.tensor(gy, dtype=torch.float64)).sum().backward()
    return [t.grad.numpy() for t in ts]


def _torch_act(y, act):
    torch = pytest.importorskip("torch")
    return {"none": y, "relu": torch.relu(y), "relu6": torch.clamp(y, 0.0, 6.0)}[act]


def _nchw(t):
    return t.permute(0, 3, 1, 2)


def _nhwc(t):
    return t.permute(0, 2, 3, 1)


def _torch_conv(case):
    F = pytest.importorskip("torch.nn.functional")
    a = case.attrs
    t, l, b, r = a.get("pad", (0, 0, 0, 0))

    def fn(x, w, *bias):
        if case.op == "conv2d":
            wt, groups = w.permute(0, 3, 1, 2), 1  # OHWI -> OIHW
        else:
            wt, groups = w[0].permute(2, 0, 1).unsqueeze(1), x.shape[3]  # [1,KH,KW,CM] -> [CM,1,KH,KW]
        y = F.conv2d(F.pad(_nchw(x), (l, r, t, b)), wt, bias[0] if bias else None,
                     stride=a.get("stride", (1, 1)), dilation=a.get("dilation", (1, 1)), groups=groups)
        return _torch_act(_nhwc(y), a.get("act", "none"))
    return fn


def _torch_pool(case):
    torch = pytest.importorskip("torch")
    F = pytest.importorskip("torch.nn.functional")
    a = case.attrs
    kh, kw = a["ksize"]
    st = a.get("stride", (1, 1))
    t, l, b, r = a.get("pad", (0, 0, 0, 0))

    def fn(x):
        xc = _nchw(x)
        if case.op == "max_pool2d":
            y = F.max_pool2d(F.pad(xc, (l, r, t, b), value=-float("inf")), (kh, kw), st)
        elif a.get("count_include_pad", False):
            y = F.avg_pool2d(F.pad(xc, (l, r, t, b)), (kh, kw), st)
        else:
            ones = F.pad(torch.ones_like(xc[:1, :1]), (l, r, t, b))
            y = F.avg_pool2d(F.pad(xc, (l, r, t, b)), (kh, kw), st) / F.avg_pool2d(ones, (kh, kw), st)
        return _torch_act(_nhwc(y), a.get("act", "none"))
    return fn


def _torch_fn(case):
    F = pytest.importorskip("torch.nn.functional")
    act = case.attrs.get("act", "none")
    if case.op in ("conv2d", "depthwise_conv2d"):
        return _torch_conv(case)
    if case.op == "fully_connected":
        return lambda x, w, *b: _torch_act(F.linear(x, w, b[0] if b else None), act)
    if case.op in ("max_pool2d", "avg_pool2d"):
        return _torch_pool(case)
    if case.op == "mean":
        return lambda x: x.mean(dim=(1, 2), keepdim=case.attrs.get("keepdims", True))
    if case.op == "add":
        return lambda a, b: _torch_act(a + b, act)
    return None


TORCH_CASES = [c for c in CASES if c.op in ("conv2d", "depthwise_conv2d", "fully_connected", "max_pool2d",
                                            "avg_pool2d", "mean", "add")]


@pytest.mark.parametrize("case", TORCH_CASES, ids=[c.id for c in TORCH_CASES])
def test_gradients_match_torch(case):
    xs, gy = _setup(case)
    want = _torch_grads(_torch_fn(case), xs, gy)
    got = backward(case, xs, gy, range(len(xs)))
    for p, w in enumerate(want):
        np.testing.assert_allclose(got[p], w, rtol=1e-10, atol=1e-12, err_msg=f"{case.id}: input {p}")


@pytest.mark.parametrize("include", [False, True])
def test_avg_pool_symmetric_padding_matches_torch_native(include):
    F = pytest.importorskip("torch.nn.functional")
    case = Case("ap_native", "avg_pool2d", [(2, 6, 5, 3)],
                {"ksize": (3, 3), "stride": (2, 2), "pad": (1, 1, 1, 1), "count_include_pad": include})
    xs, gy = _setup(case)
    want = _torch_grads(lambda x: _nhwc(F.avg_pool2d(_nchw(x), 3, 2, 1, count_include_pad=include)), xs, gy)
    np.testing.assert_allclose(backward(case, xs, gy, {0})[0], want[0], rtol=1e-10, atol=1e-12)


def test_max_pool_ties_match_torch_native():
    F = pytest.importorskip("torch.nn.functional")
    case = Case("mp_ties", "max_pool2d", [(1, 5, 5, 2)], {"ksize": (3, 3), "stride": (1, 1), "pad": (1, 1, 1, 1)})
    x = np.round(np.random.default_rng(5).standard_normal((1, 5, 5, 2)))  # many ties
    gy = np.random.default_rng(6).standard_normal((1, 5, 5, 2))
    want = _torch_grads(lambda x: _nhwc(F.max_pool2d(_nchw(x), 3, 1, 1)), [x], gy)
    np.testing.assert_allclose(backward(case, [x], gy, {0})[0], want[0], rtol=1e-12, atol=1e-12)


def test_loss_matches_torch():
    torch = pytest.importorskip("torch")
    z, t = np.random.default_rng(4).standard_normal((6, 7)) * 3, np.array([0, 6, 2, 2, 5, 1])
    zt = torch.tensor(z, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(zt, torch.tensor(t))
    ref.backward()
    loss, grad = softmax_cross_entropy_float(z, t)
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(grad, zt.grad.numpy(), rtol=1e-10, atol=1e-14)
