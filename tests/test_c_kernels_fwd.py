"""The firmware's int8 forward kernels (firmware/src/kernels/mt_*_fwd_s8.c) are bit-exact with the
numpy references (``forward_int8`` of each op in compiler/ops, with the constants of its
``prepare``), and the shared fixed-point helpers (firmware/include/mt_common.h) with
compiler/fixedpoint.py.

Each case builds a one-node IR graph (verified), runs ``prepare`` + ``forward_int8`` and the C
kernel built for the host with the same constants, and compares with ``assert_array_equal``.
Seeded numpy loops; edge cases drawn on purpose: extreme multipliers (shifts down to -31 and
below, where prepare gives a zero multiplier, and positive shifts), zero points at -128/127,
saturated inputs and outputs, stride/dilation 2+, asymmetric padding, depth multipliers, channel
counts that are not multiples of 4, broadcasting.

Also here: the whole module once more under ASan/UBSan (a subprocess, fewer cases), and every
kernel cross-compiled for Cortex-M4, Cortex-M0+ and rv32imac (no soft-float calls on M0+).
"""
from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from ctypes import POINTER, Structure, byref, c_int, c_int8, c_int32, c_size_t, c_uint32, c_void_p
from pathlib import Path

import numpy as np
import pytest

from cbuild import (CACHE, INCLUDE, KERNELS, PEDANTIC, SANITIZE, build_shared, cross_compile_check, load, ptr,
                    run_sanitized_pytest)
from microtrain.compiler import fixedpoint as fp
from microtrain.compiler.ir import Graph, Node, QParams, Tensor, verify
from microtrain.compiler.ops import registry

N_CASES = 8 if SANITIZE else 100
KERNEL_SOURCES = sorted([*KERNELS.glob("mt_*_fwd_s8*.c"), KERNELS / "mt_fully_connected_acc_s32.c"])


# ---- ctypes mirrors of mt_kernels_fwd.h ----------------------------------------------------------
class Dims(Structure):
    _fields_ = [("n", c_int32), ("h", c_int32), ("w", c_int32), ("c", c_int32)]


class HW(Structure):
    _fields_ = [("h", c_int32), ("w", c_int32)]


class Padding(Structure):
    _fields_ = [("top", c_int32), ("left", c_int32), ("bottom", c_int32), ("right", c_int32)]


class PerChannelQuant(Structure):
    _fields_ = [("mult", POINTER(c_int32)), ("shift", POINTER(c_int32))]


class WSplit(Structure):
    _fields_ = [("tail", POINTER(c_int8)), ("rows", c_int32)]


class ConvParams(Structure):
    _fields_ = [("in_zp", c_int32), ("out_zp", c_int32), ("stride", HW), ("dilation", HW),
                ("padding", Padding), ("act_min", c_int32), ("act_max", c_int32), ("split", WSplit)]


class DwConvParams(Structure):
    _fields_ = [("in_zp", c_int32), ("out_zp", c_int32), ("ch_mult", c_int32), ("stride", HW),
                ("dilation", HW), ("padding", Padding), ("act_min", c_int32), ("act_max", c_int32)]


class FcParams(Structure):
    _fields_ = [("in_zp", c_int32), ("w_zp", c_int32), ("out_zp", c_int32), ("act_min", c_int32),
                ("act_max", c_int32), ("split", WSplit)]


class AddParams(Structure):
    _fields_ = [(f, c_int32) for f in ("left_shift", "a_zp", "b_zp", "out_zp", "a_mult", "a_shift", "b_mult",
                                       "b_shift", "out_mult", "out_shift", "act_min", "act_max")]


class ReluParams(Structure):
    _fields_ = [(f, c_int32) for f in ("in_zp", "out_zp", "mult", "shift", "act_min", "act_max")]


class PoolParams(Structure):
    _fields_ = [("ksize", HW), ("stride", HW), ("padding", Padding), ("act_min", c_int32),
                ("act_max", c_int32), ("count_include_pad", c_int32)]


class MeanParams(Structure):
    _fields_ = [(f, c_int32) for f in ("in_zp", "out_zp", "count", "mult", "shift")]


class SoftmaxParams(Structure):
    _fields_ = [(f, c_int32) for f in ("mult", "left_shift", "diff_min")]


class PadParams(Structure):
    _fields_ = [("before", c_int32 * 4), ("after", c_int32 * 4), ("value", c_int32)]


P8, P32 = POINTER(c_int8), POINTER(c_int32)
PD = POINTER(Dims)
SIGNATURES = {
    "mt_conv2d_fwd_s8": [POINTER(ConvParams), POINTER(PerChannelQuant), PD, P8, PD, P8, P32, PD, P8],
    "mt_pointwise_conv2d_fwd_s8": [c_void_p, POINTER(ConvParams), POINTER(PerChannelQuant), PD, P8, PD, P8, P32,
                                   PD, P8],
    "mt_depthwise_conv2d_fwd_s8": [POINTER(DwConvParams), POINTER(PerChannelQuant), PD, P8, PD, P8, P32, PD, P8],
    "mt_fully_connected_fwd_s8": [POINTER(FcParams), POINTER(PerChannelQuant), c_int32, c_int32, P8, c_int32, P8,
                                  P32, P8],
    "mt_depthwise_conv2d_fwd_s8_inplace": [POINTER(DwConvParams), POINTER(PerChannelQuant), PD, P8, PD, P8, P32,
                                           PD, P8, c_int32],
    "mt_depthwise_conv2d_fwd_s8_inplace_scratch_bytes": [PD, c_int32],
    "mt_fully_connected_acc_s32": [POINTER(FcParams), c_int32, c_int32, P8, c_int32, P8, P32, P32],
    "mt_add_fwd_s8": [POINTER(AddParams), PD, P8, PD, P8, PD, P8],
    "mt_relu_fwd_s8": [POINTER(ReluParams), c_int32, P8, P8],
    "mt_max_pool2d_fwd_s8": [POINTER(PoolParams), PD, P8, PD, P8],
    "mt_avg_pool2d_fwd_s8": [POINTER(PoolParams), PD, P8, PD, P8],
    "mt_mean_fwd_s8": [POINTER(MeanParams), PD, P8, P8],
    "mt_softmax_fwd_s8": [POINTER(SoftmaxParams), c_int32, c_int32, P8, P8],
    "mt_pad_fwd_s8": [POINTER(PadParams), PD, P8, PD, P8],
    "mt_pointwise_conv2d_fwd_s8_scratch_bytes": [PD, PD],
    "mt_conv2d_fwd_s8_scratch_bytes": [PD, PD],
    "mt_depthwise_conv2d_fwd_s8_scratch_bytes": [PD, PD],
}


@pytest.fixture(scope="module")
def lib() -> ctypes.CDLL:
    so = load(KERNEL_SOURCES, "mt_kernels_fwd", extra_flags=PEDANTIC)
    for name, args in SIGNATURES.items():
        fn = getattr(so, name)
        fn.argtypes = args
        fn.restype = c_size_t if name.endswith("_scratch_bytes") else c_int
    return so


# ---- reference side -------------------------------------------------------------------------------
def reference(op: str, inputs: list, attrs: dict, y_quant: QParams):
    """One-node graph: ``inputs`` = [(array, QParams | None, is_const)] in node input order ->
    (prepared constants, int8 reference output)."""
    g = Graph("case")
    names = []
    for i, (arr, q, const) in enumerate(inputs):
        name = f"t{i}"
        g.add_tensor(Tensor(name, arr.shape, str(arr.dtype), data=arr if const else None, quant=q))
        names.append(name)
        if not const:
            g.inputs.append(name)
    node = Node(op, "n0", names, ["y"], dict(attrs))
    cls = registry.get(op)
    ((shape, dtype),) = cls.infer(node, [g.tensors[n] for n in names])
    g.add_tensor(Tensor("y", shape, dtype, quant=y_quant))
    g.nodes.append(node)
    g.outputs = ["y"]
    verify(g)
    p = cls.prepare(node, g)
    (y,) = cls.forward_int8(node, [a for a, _, _ in inputs], p)
    assert y.dtype == np.int8 and y.shape == tuple(shape)
    return p, y


def qp(scale, zp=0, axis=None) -> QParams:
    return QParams(np.asarray(scale, np.float32), np.asarray(zp, np.int64), axis)


def dims(shape) -> Dims:
    shape = tuple(int(d) for d in shape)
    if len(shape) == 2:
        return Dims(shape[0], 1, 1, shape[1])
    shape = (1,) * (4 - len(shape)) + shape
    return Dims(*shape)


def i32(a) -> np.ndarray:
    a = np.asarray(a, np.int64)
    assert np.all((a >= fp.INT32_MIN) & (a <= fp.INT32_MAX))
    return np.ascontiguousarray(a, dtype=np.int32)


def zero_point(rng) -> int:
    r = rng.random()
    if r < 0.15:
        return -128
    if r < 0.3:
        return 127
    return int(rng.integers(-128, 128))


def int8_input(rng, shape) -> np.ndarray:
    x = rng.integers(-128, 128, size=shape)
    if rng.random() < 0.15:  # saturated corners
        x = np.where(rng.random(shape) < 0.5, -128, 127)
    return x.astype(np.int8)


def act_choice(rng) -> str:
    return str(rng.choice(["none", "relu", "relu6"]))


def log_uniform(rng, lo_exp: float, hi_exp: float) -> float:
    return float(np.float32(2.0 ** rng.uniform(lo_exp, hi_exp)))


def real_multiplier_exp(rng) -> tuple[float, float]:
    """log2 range of the effective requantization multiplier: mostly realistic, sometimes extreme
    (shifts near -31, below -31 -> zero multiplier, and positive shifts)."""
    r = rng.random()
    if r < 0.1:
        return (-45.0, -30.0)
    if r < 0.2:
        return (0.0, 12.0)
    return (-14.0, -4.0)


def requant_arrays(p) -> tuple[PerChannelQuant, tuple]:
    mult, shift = i32(p["mult"]), i32(p["shift"])
    return PerChannelQuant(ptr(mult, c_int32), ptr(shift, c_int32)), (mult, shift)


# ---- conv2d / pointwise ---------------------------------------------------------------------------
def conv_case(rng, depthwise=False, pointwise=False):
    while True:
        n = int(rng.integers(1, 3))
        h, w = int(rng.integers(1, 10)), int(rng.integers(1, 10))
        cin = int(rng.integers(1, 8))
        m = int(rng.integers(1, 4)) if depthwise else 1
        cout = cin * m if depthwise else int(rng.integers(1, 8))
        if pointwise:
            cin = int(rng.integers(1, 40))
            cout = int(rng.integers(1, 12))
            kh = kw = sh = sw = dh = dw = 1
            pads = (0, 0, 0, 0)
        else:
            kh, kw = int(rng.integers(1, 5)), int(rng.integers(1, 5))
            sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
            dh, dw = int(rng.choice([1, 1, 2, 3])), int(rng.choice([1, 1, 2, 3]))
            pads = tuple(int(v) for v in rng.integers(0, 4, 4))
        eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
        if h + pads[0] + pads[2] >= eh and w + pads[1] + pads[3] >= ew:
            break
    act = act_choice(rng)
    s_in = log_uniform(rng, -8, 0)
    zp_in, zp_out = zero_point(rng), zero_point(rng)
    w_scales = (rng.uniform(1e-3, 0.05, cout)).astype(np.float32)
    lo, hi = real_multiplier_exp(rng)
    s_out = np.float32(s_in * float(np.mean(w_scales)) / 2.0 ** rng.uniform(lo, hi))
    wshape = (1, kh, kw, cout) if depthwise else (cout, kh, kw, cin)
    wq = rng.integers(-127, 128, wshape).astype(np.int8)
    if rng.random() < 0.1:
        wq = np.where(rng.random(wshape) < 0.5, -127, 127).astype(np.int8)
    bmax = 1 << int(rng.choice([8, 16, 24, 28]))
    bias = rng.integers(-bmax, bmax, cout).astype(np.int32) if rng.random() < 0.85 else None
    x = int8_input(rng, (n, h, w, cin))
    attrs = {"stride": (sh, sw), "dilation": (dh, dw), "pad": pads, "act": act}
    inputs = [(x, qp(s_in, zp_in), False), (wq, qp(w_scales, 0, 3 if depthwise else 0), True)]
    if bias is not None:
        inputs.append((bias, None, True))
    p, y = reference("depthwise_conv2d" if depthwise else "conv2d", inputs, attrs, qp(s_out, zp_out))
    return dict(x=x, w=wq, b=bias, p=p, y=y, attrs=attrs, m=m)


def split_weights(w: np.ndarray, rows: int | None):
    """(head, WSplit): rows [0, rows) and [rows, Cout) in two separate arrays (SRAM/flash on the
    device); (w, zero split) when rows is None."""
    if rows is None:
        return w, WSplit(), []
    head, tail = np.ascontiguousarray(w[:rows]).copy(), np.ascontiguousarray(w[rows:]).copy()
    return head, WSplit(ptr(tail, c_int8) if tail.size else None, rows), [head, tail]


def _conv_call(lib, c, pointwise=False, split=None):
    p, attrs = c["p"], c["attrs"]
    sh, sw = attrs["stride"]
    dh, dw = attrs["dilation"]
    t, l, b, r = attrs["pad"]
    w, ws, hold = split_weights(c["w"], split)
    params = ConvParams(p["in_zp"], p["out_zp"], HW(sh, sw), HW(dh, dw), Padding(t, l, b, r), p["act_min"],
                        p["act_max"], ws)
    quant, keep = requant_arrays(p)
    out = np.full(c["y"].shape, 99, np.int8)
    bias = ptr(c["b"], c_int32) if c["b"] is not None else None
    x, fd = c["x"], dims(c["w"].shape)  # filter dims: the whole (logical) weight tensor
    if pointwise:
        assert lib.mt_pointwise_conv2d_fwd_s8_scratch_bytes(byref(dims(x.shape)), byref(fd)) == 0
        st = lib.mt_pointwise_conv2d_fwd_s8(None, byref(params), byref(quant),  # no scratch (NULL)
                                            byref(dims(x.shape)), ptr(x, c_int8), byref(fd),
                                            ptr(w, c_int8), bias, byref(dims(out.shape)), ptr(out, c_int8))
    else:
        assert lib.mt_conv2d_fwd_s8_scratch_bytes(byref(dims(x.shape)), byref(fd)) == 0
        st = lib.mt_conv2d_fwd_s8(byref(params), byref(quant), byref(dims(x.shape)), ptr(x, c_int8),
                                  byref(fd), ptr(w, c_int8), bias, byref(dims(out.shape)), ptr(out, c_int8))
    del keep, hold
    assert st == 0
    return out


def test_conv2d(lib):
    rng = np.random.default_rng(101)
    shifts, mults = [], []
    for _ in range(N_CASES):
        c = conv_case(rng)
        shifts.extend(int(s) for s in c["p"]["shift"])
        mults.extend(int(m) for m in c["p"]["mult"])
        np.testing.assert_array_equal(_conv_call(lib, c), c["y"])
        if c["w"].shape[1:3] == (1, 1) and c["attrs"]["stride"] == (1, 1) and c["attrs"]["pad"] == (0, 0, 0, 0):
            np.testing.assert_array_equal(_conv_call(lib, c, pointwise=True), c["y"])
        rows = int(rng.integers(0, c["w"].shape[0] + 1))  # trained rows in SRAM, the rest in flash
        np.testing.assert_array_equal(_conv_call(lib, c, split=rows), c["y"])
    if not SANITIZE:  # the draw reaches both ends of the shift range and zero multipliers (shift < -31)
        assert min(shifts) <= -25 and max(shifts) >= 8 and min(mults) == 0


def test_pointwise_conv2d(lib):
    rng = np.random.default_rng(102)
    for _ in range(N_CASES):
        c = conv_case(rng, pointwise=True)
        np.testing.assert_array_equal(_conv_call(lib, c, pointwise=True), c["y"])
        np.testing.assert_array_equal(_conv_call(lib, c), c["y"])
        rows = int(rng.integers(0, c["w"].shape[0] + 1))
        np.testing.assert_array_equal(_conv_call(lib, c, pointwise=True, split=rows), c["y"])


def test_pointwise_conv2d_rejects_other_geometry(lib):
    rng = np.random.default_rng(103)
    c = conv_case(rng, pointwise=True)
    c["attrs"] = dict(c["attrs"], stride=(2, 1))
    with pytest.raises(AssertionError):
        _conv_call(lib, c, pointwise=True)


# ---- depthwise ------------------------------------------------------------------------------------
def test_depthwise_conv2d(lib):
    rng = np.random.default_rng(201)
    mults = set()
    for _ in range(N_CASES):
        c = conv_case(rng, depthwise=True)
        mults.add(c["m"])
        p, attrs = c["p"], c["attrs"]
        t, l, b, r = attrs["pad"]
        params = DwConvParams(p["in_zp"], p["out_zp"], c["m"], HW(*attrs["stride"]), HW(*attrs["dilation"]),
                              Padding(t, l, b, r), p["act_min"], p["act_max"])
        quant, keep = requant_arrays(p)
        x, w = c["x"], c["w"]
        out = np.full(c["y"].shape, 99, np.int8)
        assert lib.mt_depthwise_conv2d_fwd_s8_scratch_bytes(byref(dims(x.shape)), byref(dims(w.shape))) == 0
        st = lib.mt_depthwise_conv2d_fwd_s8(byref(params), byref(quant), byref(dims(x.shape)), ptr(x, c_int8),
                                            byref(dims(w.shape)), ptr(w, c_int8),
                                            ptr(c["b"], c_int32) if c["b"] is not None else None,
                                            byref(dims(out.shape)), ptr(out, c_int8))
        del keep
        assert st == 0
        np.testing.assert_array_equal(out, c["y"])
    if not SANITIZE:
        assert {1, 2, 3} <= mults


def test_depthwise_conv2d_in_place(lib):
    """The in-place variant writes the same output over its input, with the planner's ring size."""
    from microtrain.compiler.memory.lifetimes import depthwise_inplace_rows

    rng = np.random.default_rng(202)
    done = 0
    while done < (10 if SANITIZE else 60):
        c = conv_case(rng, depthwise=True)
        x, y = c["x"], c["y"]
        if c["m"] != 1 or y[0].size > x[0].size:
            continue
        p, attrs = c["p"], c["attrs"]
        t, l, b, r = attrs["pad"]
        rows = depthwise_inplace_rows(x.shape[1], x.shape[2], y.shape[1], y.shape[2], x.shape[3],
                                      attrs["stride"][0], t)
        assert rows >= 1
        params = DwConvParams(p["in_zp"], p["out_zp"], 1, HW(*attrs["stride"]), HW(*attrs["dilation"]),
                              Padding(t, l, b, r), p["act_min"], p["act_max"])
        quant, keep = requant_arrays(p)
        buf = x.copy().ravel()
        nbytes = lib.mt_depthwise_conv2d_fwd_s8_inplace_scratch_bytes(byref(dims(y.shape)), rows)
        ring = np.full(nbytes, 77, np.int8)
        w = c["w"]
        st = lib.mt_depthwise_conv2d_fwd_s8_inplace(byref(params), byref(quant), byref(dims(x.shape)),
                                                    ptr(buf, c_int8), byref(dims(w.shape)), ptr(w, c_int8),
                                                    ptr(c["b"], c_int32) if c["b"] is not None else None,
                                                    byref(dims(y.shape)), ptr(ring, c_int8), rows)
        del keep
        assert st == 0
        np.testing.assert_array_equal(buf[:y.size].reshape(y.shape), y)
        if rows > 1:  # one row fewer than the planner's ring is refused, never silently wrong
            st = lib.mt_depthwise_conv2d_fwd_s8_inplace(byref(params), byref(quant), byref(dims(x.shape)),
                                                        ptr(x.copy(), c_int8), byref(dims(w.shape)), ptr(w, c_int8),
                                                        None, byref(dims(y.shape)), ptr(ring, c_int8), rows - 1)
            assert st == -1
        done += 1


def test_fully_connected_acc(lib):
    rng = np.random.default_rng(302)
    for i in range(N_CASES):
        n, cin, cout = int(rng.integers(1, 4)), int(rng.integers(1, 70)), int(rng.integers(1, 13))
        x = int8_input(rng, (n, cin))
        wq = rng.integers(-127, 128, (cout, cin)).astype(np.int8)
        bias = rng.integers(-(1 << 20), 1 << 20, cout).astype(np.int32)
        in_zp, w_zp = zero_point(rng), int(rng.integers(-20, 21)) if i % 2 else 0
        want = (x.astype(np.int64) - in_zp) @ (wq.astype(np.int64) - w_zp).T + bias
        rows = int(rng.integers(0, cout + 1))
        head, ws, hold = split_weights(wq, rows)
        params = FcParams(in_zp, w_zp, 0, -128, 127, ws)
        acc = np.zeros((n, cout), np.int32)
        assert lib.mt_fully_connected_acc_s32(byref(params), n, cin, ptr(x, c_int8), cout, ptr(head, c_int8),
                                              ptr(bias, c_int32), ptr(acc, c_int32)) == 0
        del hold
        np.testing.assert_array_equal(acc, want)


# ---- fully_connected ------------------------------------------------------------------------------
def test_fully_connected(lib):
    rng = np.random.default_rng(301)
    for i in range(N_CASES):
        n, cin, cout = int(rng.integers(1, 4)), int(rng.integers(1, 70)), int(rng.integers(1, 13))
        per_tensor = i % 3 == 0
        s_in = log_uniform(rng, -8, 0)
        w_scales = rng.uniform(1e-3, 0.05, 1 if per_tensor else cout).astype(np.float32)
        lo, hi = real_multiplier_exp(rng)
        s_out = np.float32(s_in * float(np.mean(w_scales)) / 2.0 ** rng.uniform(lo, hi))
        x = int8_input(rng, (n, cin))
        wq = rng.integers(-127, 128, (cout, cin)).astype(np.int8)
        bias = rng.integers(-(1 << 20), 1 << 20, cout).astype(np.int32)
        w_zp = int(rng.integers(-20, 21)) if per_tensor and i % 2 else 0  # FC keeps a per-tensor w_zp
        inputs = [(x, qp(s_in, zero_point(rng)), False),
                  (wq, qp(w_scales, w_zp, None if per_tensor else 0), True)]
        if i % 5:
            inputs.append((bias, None, True))
        p, y = reference("fully_connected", inputs, {"act": act_choice(rng)}, qp(s_out, zero_point(rng)))
        assert p["w_zp"] == w_zp
        for rows in (None, int(rng.integers(0, cout + 1))):
            head, ws, hold = split_weights(wq, rows)
            params = FcParams(p["in_zp"], p["w_zp"], p["out_zp"], p["act_min"], p["act_max"], ws)
            quant, keep = requant_arrays(p)
            out = np.full(y.shape, 99, np.int8)
            st = lib.mt_fully_connected_fwd_s8(byref(params), byref(quant), n, cin, ptr(x, c_int8), cout,
                                               ptr(head, c_int8), ptr(bias, c_int32) if i % 5 else None,
                                               ptr(out, c_int8))
            del keep, hold
            assert st == 0
            np.testing.assert_array_equal(out, y)


# ---- add ------------------------------------------------------------------------------------------
ADD_SHAPES = [((2, 3, 4, 5), (2, 3, 4, 5)), ((2, 3, 4, 5), (1, 1, 1, 5)), ((2, 1, 4, 1), (1, 3, 1, 7)),
              ((3, 7), (3, 7)), ((3, 7), (1, 7)), ((1, 5, 5, 3), (1, 5, 5, 1)), ((2, 2, 3, 6), (6,)),
              ((1, 1, 1, 1), (2, 3, 3, 2)), ((4, 9), (4, 1))]


def test_add(lib):
    rng = np.random.default_rng(401)
    for i in range(N_CASES):
        sa, sb = ADD_SHAPES[i % len(ADD_SHAPES)]
        if rng.random() < 0.5:
            sa, sb = sb, sa
        s_a = log_uniform(rng, -8, 0)
        r = rng.random()
        s_b = log_uniform(rng, -45, -30) if r < 0.1 else (s_a if r < 0.25 else log_uniform(rng, -8, 0))
        s_y = np.float32(max(s_a, s_b) * 2.0 ** rng.uniform(-3, 4))
        a, b = int8_input(rng, sa), int8_input(rng, sb)
        p, y = reference("add", [(a, qp(s_a, zero_point(rng)), False), (b, qp(s_b, zero_point(rng)), False)],
                         {"act": act_choice(rng)}, qp(s_y, zero_point(rng)))
        params = AddParams(*[int(p[f]) for f, _ in AddParams._fields_])
        out = np.full(y.shape, 99, np.int8)
        st = lib.mt_add_fwd_s8(byref(params), byref(dims(a.shape)), ptr(a, c_int8), byref(dims(b.shape)),
                               ptr(b, c_int8), byref(dims(y.shape)), ptr(out, c_int8))
        assert st == 0
        np.testing.assert_array_equal(out, y)


def test_add_rejects_incompatible_shapes(lib):
    params = AddParams(20, 0, 0, 0, 1 << 30, 0, 1 << 30, 0, 1 << 30, -20, -128, 127)
    a, b, out = np.zeros((1, 1, 2, 3), np.int8), np.zeros((1, 1, 3, 3), np.int8), np.zeros((1, 1, 3, 3), np.int8)
    assert lib.mt_add_fwd_s8(byref(params), byref(dims(a.shape)), ptr(a, c_int8), byref(dims(b.shape)),
                             ptr(b, c_int8), byref(dims(out.shape)), ptr(out, c_int8)) == -1


# ---- relu / relu6 ---------------------------------------------------------------------------------
def test_relu_relu6(lib):
    rng = np.random.default_rng(501)
    for i in range(N_CASES):
        op = "relu" if i % 2 else "relu6"
        shape = [(2, 3, 3, 5), (4, 7), (1, 2, 2, 3)][i % 3]
        s_x = log_uniform(rng, -6, 0)
        r = rng.random()
        s_y = s_x if r < 0.4 else np.float32(s_x * 2.0 ** rng.uniform(-6, 6))
        zp_x = zero_point(rng)
        zp_y = zp_x if r < 0.4 else zero_point(rng)
        x = int8_input(rng, shape)
        p, y = reference(op, [(x, qp(s_x, zp_x), False)], {}, qp(s_y, zp_y))
        params = ReluParams(*[int(p[f]) for f, _ in ReluParams._fields_])
        out = np.full(y.shape, 99, np.int8)
        assert lib.mt_relu_fwd_s8(byref(params), x.size, ptr(x, c_int8), ptr(out, c_int8)) == 0
        np.testing.assert_array_equal(out, y)
        inplace = x.copy()  # out may alias in
        assert lib.mt_relu_fwd_s8(byref(params), x.size, ptr(inplace, c_int8), ptr(inplace, c_int8)) == 0
        np.testing.assert_array_equal(inplace, y)


# ---- pools ----------------------------------------------------------------------------------------
def pool_case(rng, op):
    while True:
        n, h, w, c = int(rng.integers(1, 3)), int(rng.integers(1, 10)), int(rng.integers(1, 10)), int(rng.integers(1, 8))
        kh, kw = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        pads = (int(rng.integers(0, kh)), int(rng.integers(0, kw)), int(rng.integers(0, kh)), int(rng.integers(0, kw)))
        if h + pads[0] + pads[2] >= kh and w + pads[1] + pads[3] >= kw:
            break
    attrs = {"ksize": (kh, kw), "stride": (sh, sw), "pad": pads, "act": act_choice(rng)}
    if op == "avg_pool2d" and rng.random() < 0.3:
        attrs["count_include_pad"] = True
    x = int8_input(rng, (n, h, w, c))
    q = qp(log_uniform(rng, -8, 0), zero_point(rng))
    p, y = reference(op, [(x, q, False)], attrs, q)
    params = PoolParams(HW(kh, kw), HW(sh, sw), Padding(*pads), p["act_min"], p["act_max"],
                        int(attrs.get("count_include_pad", False)))
    return x, y, params


@pytest.mark.parametrize("op", ["max_pool2d", "avg_pool2d"])
def test_pool2d(lib, op):
    rng = np.random.default_rng(601 if op == "max_pool2d" else 602)
    fn = getattr(lib, f"mt_{op}_fwd_s8")
    for _ in range(N_CASES):
        x, y, params = pool_case(rng, op)
        out = np.full(y.shape, 99, np.int8)
        assert fn(byref(params), byref(dims(x.shape)), ptr(x, c_int8), byref(dims(y.shape)), ptr(out, c_int8)) == 0
        np.testing.assert_array_equal(out, y)


# ---- mean -----------------------------------------------------------------------------------------
def test_mean(lib):
    rng = np.random.default_rng(701)
    for i in range(N_CASES):
        hw = [(1, 1), (2, 2), (3, 5), (7, 7), (16, 16), (4, 9), (1, 33)][i % 7]
        shape = (int(rng.integers(1, 3)),) + hw + (int(rng.integers(1, 10)),)
        s_x = log_uniform(rng, -8, 0)
        r = rng.random()
        s_y = s_x if r < 0.3 else np.float32(s_x * 2.0 ** (rng.uniform(-40, -25) if r < 0.4 else rng.uniform(-5, 8)))
        x = int8_input(rng, shape)
        p, y = reference("mean", [(x, qp(s_x, zero_point(rng)), False)], {"axes": (1, 2), "keepdims": bool(i % 2)},
                         qp(s_y, zero_point(rng)))
        params = MeanParams(*[int(p[f]) for f, _ in MeanParams._fields_])
        out = np.full(y.shape, 99, np.int8)
        assert lib.mt_mean_fwd_s8(byref(params), byref(dims(x.shape)), ptr(x, c_int8), ptr(out, c_int8)) == 0
        np.testing.assert_array_equal(out, y)


# ---- softmax --------------------------------------------------------------------------------------
def test_softmax(lib):
    rng = np.random.default_rng(801)
    for i in range(N_CASES):
        shape = [(1, 10), (3, 7), (2, 1, 1, 5), (2, 64), (4, 1), (1, 130)][i % 6]
        beta = float(rng.choice([1.0, 1.0, 0.5, 2.0]))
        r = rng.random()
        s_x = log_uniform(rng, -24, -20) if r < 0.1 else (log_uniform(rng, 2, 6) if r < 0.2 else log_uniform(rng, -9, 0))
        x = int8_input(rng, shape)
        if rng.random() < 0.1:
            x[...] = int(rng.integers(-128, 128))  # all equal
        p, y = reference("softmax", [(x, qp(s_x, zero_point(rng)), False)], {"beta": beta}, qp(1.0 / 256, -128))
        params = SoftmaxParams(int(p["mult"]), int(p["left_shift"]), int(p["diff_min"]))
        out = np.full(y.shape, 99, np.int8)
        cols = shape[-1]
        assert lib.mt_softmax_fwd_s8(byref(params), x.size // cols, cols, ptr(x, c_int8), ptr(out, c_int8)) == 0
        np.testing.assert_array_equal(out, y)


# ---- pad ------------------------------------------------------------------------------------------
def test_pad(lib):
    rng = np.random.default_rng(901)
    for i in range(N_CASES):
        rank = 4 if i % 3 else 2
        shape = tuple(int(v) for v in rng.integers(1, 6, rank))
        pads = [(0, 0)] + [tuple(int(v) for v in rng.integers(0, 4, 2)) for _ in range(rank - 1)]
        x = int8_input(rng, shape)
        q = qp(log_uniform(rng, -8, 0), zero_point(rng))
        p, y = reference("pad", [(x, q, False)], {"pads": pads}, q)
        full = pads if rank == 4 else [pads[0], (0, 0), (0, 0), pads[1]]  # [N, C] is {N, 1, 1, C}
        params = PadParams((c_int32 * 4)(*[a for a, _ in full]), (c_int32 * 4)(*[b for _, b in full]), int(p["value"]))
        out = np.full(y.shape, 99, np.int8)
        assert lib.mt_pad_fwd_s8(byref(params), byref(dims(x.shape)), ptr(x, c_int8), byref(dims(y.shape)),
                                 ptr(out, c_int8)) == 0
        np.testing.assert_array_equal(out, y)


# ---- mt_common.h helpers against compiler/fixedpoint.py -------------------------------------------
COMMON_SHIM = r"""
#include "mt_common.h"
#define MAP1(name, expr) void name(int n, const int32_t *a, int32_t *out) { int i; for (i = 0; i < n; ++i) out[i] = (expr); }
#define MAP2(name, expr) void name(int n, const int32_t *a, const int32_t *b, int32_t *out) { int i; for (i = 0; i < n; ++i) out[i] = (expr); }
MAP2(t_srdhm, mt_srdhm(a[i], b[i]))
MAP2(t_rdbpot, mt_rdbpot(a[i], (int)b[i]))
MAP2(t_srmbpot, mt_srmbpot(a[i], (int)b[i]))
MAP2(t_sat_add32, mt_sat_add32(a[i], b[i]))
MAP2(t_rounding_half_sum, mt_rounding_half_sum(a[i], b[i]))
MAP1(t_sat8, mt_sat8(a[i]))
MAP1(t_sat16, mt_sat16(a[i]))
MAP1(t_clz32, mt_clz32((uint32_t)a[i]))
MAP1(t_exp5, mt_exp_on_negative_values(a[i], 5))
MAP1(t_exp_interval, mt_exp_on_interval_between_negative_one_quarter_and_0_excl(a[i]))
MAP1(t_one_over, mt_one_over_one_plus_x_for_x_in_0_1(a[i]))
void t_mbqm(int n, const int32_t *x, const int32_t *m, const int32_t *s, int32_t *out)
{ int i; for (i = 0; i < n; ++i) out[i] = mt_mbqm(x[i], m[i], (int)s[i]); }
void t_recip(int n, const int32_t *x, int32_t *out, int32_t *bits)
{ int i; for (i = 0; i < n; ++i) { int b; out[i] = mt_get_reciprocal(x[i], 12, &b); bits[i] = b; } }
void t_xorshift(int n, uint32_t seed, uint32_t *out)
{ int i; for (i = 0; i < n; ++i) { seed = mt_xorshift32(seed); out[i] = seed; } }
"""


@pytest.fixture(scope="module")
def common():
    src = CACHE / "shims" / "mt_common_shim.c"
    src.parent.mkdir(parents=True, exist_ok=True)
    if not src.exists() or src.read_text() != COMMON_SHIM:
        tmp = src.with_suffix(f".{np.random.default_rng().integers(1 << 30)}.tmp")
        tmp.write_text(COMMON_SHIM)
        tmp.replace(src)
    return load([src], "mt_common_shim")


def _call(fn, *arrays):
    arrays = [i32(a) for a in arrays]
    out = np.zeros(arrays[0].shape, np.int32)
    fn(c_int(arrays[0].size), *[ptr(a, c_int32) for a in arrays], ptr(out, c_int32))
    return out.astype(np.int64)


def edge_int32(rng, n):
    edges = np.array([fp.INT32_MIN, fp.INT32_MIN + 1, -1, 0, 1, fp.INT32_MAX - 1, fp.INT32_MAX, 1 << 30, -(1 << 30),
                      1 << 16, -(1 << 16), 12345, -12345], np.int64)
    vals = rng.integers(fp.INT32_MIN, fp.INT32_MAX, n, endpoint=True)
    small = rng.integers(-(1 << 12), 1 << 12, n)
    return np.concatenate([edges, vals, small])


def test_common_helpers(common):
    rng = np.random.default_rng(1001)
    n = 500 if SANITIZE else 5000
    a, b = edge_int32(rng, n), edge_int32(rng, n)
    b = rng.permutation(b)
    np.testing.assert_array_equal(_call(common.t_srdhm, a, b), fp.srdhm(a, b))
    np.testing.assert_array_equal(_call(common.t_srdhm, a, a), fp.srdhm(a, a))
    e = rng.integers(0, 32, a.size)
    np.testing.assert_array_equal(_call(common.t_rdbpot, a, e), fp.rounding_divide_by_pot(a, e))
    for ex in (-31, -12, -1, 0, 1, 2, 5, 30, 31):
        ev = np.full(a.size, ex)
        np.testing.assert_array_equal(_call(common.t_srmbpot, a, ev), fp.saturating_rounding_multiply_by_pot(a, ex))
    np.testing.assert_array_equal(_call(common.t_sat_add32, a, b), np.clip(a + b, fp.INT32_MIN, fp.INT32_MAX))
    np.testing.assert_array_equal(_call(common.t_rounding_half_sum, a, b), fp.rounding_half_sum(a, b))
    np.testing.assert_array_equal(_call(common.t_sat8, a), np.clip(a, -128, 127))
    np.testing.assert_array_equal(_call(common.t_sat16, a), np.clip(a, -32768, 32767))
    np.testing.assert_array_equal(_call(common.t_clz32, a), fp.count_leading_zeros_u32(a))
    # MultiplyByQuantizedMultiplier over every shift prepare can produce (and beyond)
    m = np.concatenate([[0, 1 << 30, fp.INT32_MAX], rng.integers(1 << 30, 1 << 31, a.size - 3)])
    s = rng.integers(-40, 41, a.size)
    np.testing.assert_array_equal(_call(common.t_mbqm, a, m, s), fp.multiply_by_quantized_multiplier(a, m, s))
    # gemmlowp transcendentals
    neg = -np.abs(np.concatenate([[0, 1, 1 << 26, 31 << 26, fp.INT32_MAX], rng.integers(0, 1 << 31, n),
                                  rng.integers(0, 1 << 27, n)]))
    np.testing.assert_array_equal(_call(common.t_exp5, neg), fp.exp_on_negative_values(neg, 5))
    quarter = -rng.integers(1, (1 << 29) + 1, n)
    np.testing.assert_array_equal(_call(common.t_exp_interval, quarter),
                                  fp.exp_on_interval_between_negative_one_quarter_and_0_excl(quarter))
    unit = np.concatenate([[0, 1, fp.INT32_MAX], rng.integers(0, 1 << 31, n)])
    np.testing.assert_array_equal(_call(common.t_one_over, unit), fp.one_over_one_plus_x_for_x_in_0_1(unit))
    sums = np.concatenate([[1 << 19, (1 << 19) + 1, fp.INT32_MAX, fp.INT32_MIN, -5], rng.integers(1, 1 << 31, n)])
    recip, bits = np.zeros(sums.size, np.int32), np.zeros(sums.size, np.int32)
    s32 = i32(sums)
    common.t_recip(c_int(s32.size), ptr(s32, c_int32), ptr(recip, c_int32), ptr(bits, c_int32))
    ref_r, ref_b = fp.get_reciprocal(sums, 12)
    np.testing.assert_array_equal(recip, ref_r)
    np.testing.assert_array_equal(bits, ref_b)


def test_xorshift32(common):
    from microtrain.compiler.ops._grad_int import xorshift32

    out = np.zeros(1000, np.uint32)
    common.t_xorshift(c_int(out.size), c_uint32(2463534242), ptr(out, c_uint32))
    x, ref = 2463534242, []
    for _ in range(out.size):
        x = xorshift32(x)
        ref.append(x)
    np.testing.assert_array_equal(out, np.array(ref, np.uint32))


# ---- hygiene, sanitizer, cross targets ------------------------------------------------------------
def test_kernels_are_integer_only_and_heap_free():
    files = KERNEL_SOURCES + [INCLUDE / "mt_common.h", INCLUDE / "mt_kernels_fwd.h"]
    assert len(KERNEL_SOURCES) >= 11
    for f in files:
        code = re.sub(r"/\*.*?\*/|//[^\n]*", "", f.read_text(), flags=re.S)
        bad = re.findall(r"\b(float|double|malloc|calloc|realloc|free|printf|puts)\b|<stdio\.h>|<math\.h>", code)
        assert not bad, f"{f.name}: {bad}"


@pytest.mark.skipif(SANITIZE, reason="already inside the sanitized run")
def test_under_sanitizers():
    if not Path(subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                               text=True).stdout.strip()).is_file():
        pytest.skip("libasan not installed")
    proc = run_sanitized_pytest(Path(__file__), "-k", "not sanitizers and not cross")
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert " passed" in proc.stdout


@pytest.mark.skipif(SANITIZE, reason="host sanitizer run only")
@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m0plus", "rv32imac"])
def test_cross_compile(target, tmp_path):
    objs = cross_compile_check(KERNEL_SOURCES, target, extra_flags=PEDANTIC, out_dir=tmp_path)
    assert len(objs) == len(KERNEL_SOURCES)
    nm = "arm-none-eabi-nm" if target.startswith("cortex") else "riscv64-unknown-elf-nm"
    if shutil.which(nm):
        undefined = subprocess.run([nm, "-u", *map(str, objs)], capture_output=True, text=True, check=True).stdout
        soft_float = re.findall(r"__aeabi_[a-z0-9]*[fd](?:add|sub|mul|div|cmp\w*|2\w+)\b|__(?:add|sub|mul|div)[sd]f3",
                                undefined)
        assert not soft_float, soft_float


def test_build_cache_is_reused():
    a = build_shared(KERNEL_SOURCES, "mt_kernels_fwd", extra_flags=PEDANTIC, sanitize=SANITIZE)
    b = build_shared(KERNEL_SOURCES, "mt_kernels_fwd", extra_flags=PEDANTIC, sanitize=SANITIZE)
    assert a == b and a.is_file()


def test_ptr_checks_dtype_and_layout():
    with pytest.raises(TypeError):
        ptr(np.zeros(3, np.int16), c_int8)
    with pytest.raises(ValueError):
        ptr(np.zeros((4, 4), np.int8)[:, ::2], c_int8)
