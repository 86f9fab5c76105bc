"""The tuned spatial-convolution kernels (helper K2 of the kernel-speed work) and their DSP variants.

Portable kernels (firmware/src/kernels): mt_conv2d_fwd_s8, mt_conv2d_bwd_input_s16,
mt_depthwise_conv2d_fwd_s8 (+ _inplace), mt_depthwise_conv2d_bwd_input_s16. DSP variants
(firmware/src/kernels/dsp): mt_conv2d_fwd_s8_dsp and the new mt_depthwise_conv2d_fwd_s8_dsp,
mt_depthwise_conv2d_fwd_s8_inplace_dsp, mt_conv2d_bwd_input_s16_dsp,
mt_depthwise_conv2d_bwd_input_s16_dsp (not yet in the MT_DSP_KERNELS registry: this module builds
them itself, as tests/test_c_kernels_dsp.py does for the registered ones).

Every kernel must give the numpy engine's integers (no tolerance):
  - forward: one-node graphs through compiler/ops (test_c_kernels_fwd.reference), on the shapes
    the tuned paths special-case (Cin = 1 3x3 windows kept in registers, the K % 4 tail group,
    windows up to / past the stack patch, odd pixel and channel counts, the padded border,
    depthwise 3x3 with 1..70 channels and the generic depthwise path) and random draws;
  - input gradients: test_c_kernels_train.build cases (Conv2D / DepthwiseConv2D.backward_int8),
    in the two-pass, scratch, aliased and split-weight variants;
  - DSP variants: also byte-equal to the portable kernels on wide random draws (host: the
    emulated intrinsics of mt_dsp.h; cross-compiled with the real instructions).
Cross-compiled with the strict flags of test_c_kernels_dsp: the DSP variants contain the DSP
multiply-accumulates (SMLAD, or SMLABB/SMLATT in the depthwise kernels), the portable kernels no
memcpy/memset calls on rv32imac (-nostdlib images).
"""
from __future__ import annotations

import ctypes as ct
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_c_kernels_fwd as F  # noqa: E402
import test_c_kernels_train as T  # noqa: E402
from cbuild import (DSP_KERNELS, INCLUDE, KERNELS, PEDANTIC, SANITIZE, cross_compile_check, load,  # noqa: E402
                    ptr, run_sanitized_pytest)

ROOT = Path(__file__).resolve().parents[1]
FW = ROOT / "firmware"
#: the DSP variants of this module (those present: the others may be work in progress)
K2_DSP = ["mt_conv2d_fwd_s8", "mt_depthwise_conv2d_fwd_s8", "mt_depthwise_conv2d_fwd_s8_inplace",
          "mt_conv2d_bwd_input_s16", "mt_depthwise_conv2d_bwd_input_s16"]
DSP_SOURCES = [DSP_KERNELS / f"{k}_dsp.c" for k in K2_DSP if (DSP_KERNELS / f"{k}_dsp.c").is_file()]
HAVE = {p.stem[: -len("_dsp")] for p in DSP_SOURCES}
PORTABLE_SOURCES = sorted(set(F.KERNEL_SOURCES) | set(T.TRAIN_SOURCES))
STRICT = ("-pedantic", "-Wvla", "-Wshadow", "-Wconversion")
N = 4 if SANITIZE else 1
RNG = np.random.default_rng
I8, I16, I32 = ct.c_int8, ct.c_int16, ct.c_int32

DSP_PROTOS = """
#include "mt_kernels_fwd.h"
#include "mt_kernels_train.h"
"""


@pytest.fixture(scope="module")
def lib() -> ct.CDLL:
    so = load(PORTABLE_SOURCES + DSP_SOURCES, "mt_kernels_k2", extra_flags=PEDANTIC + (("-O1",) if SANITIZE else ()))
    for name, args in F.SIGNATURES.items():
        if hasattr(so, name):
            getattr(so, name).argtypes = args
            getattr(so, name).restype = ct.c_size_t if name.endswith("_scratch_bytes") else ct.c_int
    for name, (res, args) in T.SIGNATURES.items():
        getattr(so, name).argtypes = args
        getattr(so, name).restype = res
    for name in HAVE:
        getattr(so, name + "_dsp").argtypes = getattr(so, name).argtypes
        getattr(so, name + "_dsp").restype = getattr(so, name).restype
    return so


class Variant:
    """``lib`` with the kernels of K2 replaced by their ``_dsp`` variants when ``dsp``."""

    def __init__(self, so, dsp: bool):
        self._so, self._dsp = so, dsp

    def __getattr__(self, name):
        return getattr(self._so, name + "_dsp" if self._dsp and name in HAVE else name)


def variants(so, kernel: str):
    out = [("portable", Variant(so, False))]
    if kernel in HAVE:
        out.append(("dsp", Variant(so, True)))
    return out


# =================================================================================================
# forward cases with a numpy reference
# =================================================================================================
def ref_case(rng, *, n, h, w, cin, cout, kh, kw, stride=(1, 1), dil=(1, 1), pads=(0, 0, 0, 0),
             depthwise=False, m=1, act=None, extreme_w=False):
    """One conv2d / depthwise_conv2d node of the given geometry, random PTQ-style constants (as
    test_c_kernels_fwd.conv_case draws them), its numpy int8 output."""
    act = act or F.act_choice(rng)
    if depthwise:
        cout = cin * m
    s_in = F.log_uniform(rng, -8, 0)
    zp_in, zp_out = F.zero_point(rng), F.zero_point(rng)
    w_scales = rng.uniform(1e-3, 0.05, cout).astype(np.float32)
    lo, hi = F.real_multiplier_exp(rng)
    s_out = np.float32(s_in * float(np.mean(w_scales)) / 2.0 ** rng.uniform(lo, hi))
    wshape = (1, kh, kw, cout) if depthwise else (cout, kh, kw, cin)
    wq = rng.integers(-127, 128, wshape).astype(np.int8)
    if extreme_w or rng.random() < 0.1:
        wq = np.where(rng.random(wshape) < 0.5, -127, 127).astype(np.int8)
    bmax = 1 << int(rng.choice([8, 16, 24, 28]))
    bias = rng.integers(-bmax, bmax, cout).astype(np.int32) if rng.random() < 0.85 else None
    x = F.int8_input(rng, (n, h, w, cin))
    attrs = {"stride": tuple(stride), "dilation": tuple(dil), "pad": tuple(pads), "act": act}
    inputs = [(x, F.qp(s_in, zp_in), False), (wq, F.qp(w_scales, 0, 3 if depthwise else 0), True)]
    if bias is not None:
        inputs.append((bias, None, True))
    p, y = F.reference("depthwise_conv2d" if depthwise else "conv2d", inputs, attrs, F.qp(s_out, zp_out))
    return dict(x=x, w=wq, b=bias, p=p, y=y, attrs=attrs, m=m)


#: conv2d geometries of the tuned paths: (n, h, w, cin, cout, kh, kw, stride, dilation, pads)
CONV_SHAPES = [
    (1, 16, 16, 1, 8, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1)),   # the CNN's conv1: Cin = 1, window in registers
    (2, 7, 5, 1, 5, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1)),     # odd pixels / channels, batch 2
    (1, 9, 9, 1, 3, 4, 4, (2, 1), (1, 1), (2, 0, 1, 3)),     # 16-element window, asymmetric padding
    (1, 6, 7, 1, 4, 3, 2, (1, 2), (2, 1), (0, 1, 2, 0)),     # Cin = 1 with dilation
    (1, 16, 16, 8, 16, 3, 3, (2, 2), (1, 1), (1, 1, 1, 1)),  # the CNN's conv2
    (1, 8, 8, 16, 16, 3, 3, (2, 2), (1, 1), (1, 1, 1, 1)),   # conv3: 144 = the whole patch
    (1, 12, 12, 3, 16, 3, 3, (2, 2), (1, 1), (1, 1, 1, 1)),  # MobileNet stem: K % 4 = 3
    (1, 5, 6, 2, 7, 3, 3, (1, 1), (1, 1), (1, 0, 0, 1)),     # K % 4 = 2, odd Cout
    (1, 5, 5, 5, 3, 3, 3, (1, 1), (2, 2), (2, 2, 2, 2)),     # K % 4 = 1, dilation 2
    (1, 4, 4, 17, 9, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1)),    # K = 153 > the DSP patch
    (2, 5, 5, 29, 5, 3, 3, (1, 2), (1, 1), (1, 1, 1, 1)),    # K = 261 > the portable patch
    (1, 3, 3, 40, 33, 1, 1, (1, 1), (1, 1), (0, 0, 0, 0)),   # 1x1, Cout past one tile
    (1, 7, 3, 4, 35, 2, 2, (1, 1), (1, 1), (0, 0, 1, 1)),    # Cout past the DSP tile
]


def _dw_params(c: dict) -> F.DwConvParams:
    p, a = c["p"], c["attrs"]
    t, l, b, r = a["pad"]
    return F.DwConvParams(p["in_zp"], p["out_zp"], c["m"], F.HW(*a["stride"]), F.HW(*a["dilation"]),
                          F.Padding(t, l, b, r), p["act_min"], p["act_max"])


def _dw_call(so, c: dict) -> np.ndarray:
    quant, keep = F.requant_arrays(c["p"])
    x, w = c["x"], c["w"]
    out = np.full(c["y"].shape, 99, np.int8)
    st = so.mt_depthwise_conv2d_fwd_s8(ct.byref(_dw_params(c)), ct.byref(quant), ct.byref(F.dims(x.shape)),
                                       ptr(x, I8), ct.byref(F.dims(w.shape)), ptr(w, I8),
                                       ptr(c["b"], I32) if c["b"] is not None else None,
                                       ct.byref(F.dims(out.shape)), ptr(out, I8))
    del keep
    assert st == 0
    return out


@pytest.mark.parametrize("shape", CONV_SHAPES, ids=[f"conv{i}" for i in range(len(CONV_SHAPES))])
def test_conv2d_fwd_shapes(lib, shape):
    n, h, w, cin, cout, kh, kw, stride, dil, pads = shape
    rng = RNG(abs(hash(shape)) % (1 << 32))
    for i in range(6 // N + 1):
        c = ref_case(rng, n=n, h=h, w=w, cin=cin, cout=cout, kh=kh, kw=kw, stride=stride, dil=dil, pads=pads,
                     act="none" if i == 0 else None, extreme_w=(i == 1))
        for name, so in variants(lib, "mt_conv2d_fwd_s8"):
            for split in (None, int(rng.integers(0, cout + 1))):
                np.testing.assert_array_equal(F._conv_call(so, c, split=split), c["y"], err_msg=f"{name} {shape} {split}")


def test_conv2d_fwd_random(lib):
    rng = RNG(2101)
    for i in range(120 // N):
        kh, kw = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        cin = int(rng.choice([1, 1, 2, 3, 4, 8, 16, 24, 31]))
        geom = dict(n=int(rng.integers(1, 3)), h=int(rng.integers(kh, 9)), w=int(rng.integers(kw, 9)), cin=cin,
                    cout=int(rng.integers(1, 20)), kh=kh, kw=kw,
                    stride=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
                    dil=(1, 1) if rng.random() < 0.7 else (int(rng.integers(1, 3)), int(rng.integers(1, 3))),
                    pads=tuple(int(v) for v in rng.integers(0, 2, 4)))
        if geom["h"] + geom["pads"][0] + geom["pads"][2] < (kh - 1) * geom["dil"][0] + 1 or \
                geom["w"] + geom["pads"][1] + geom["pads"][3] < (kw - 1) * geom["dil"][1] + 1:
            continue
        c = ref_case(rng, **geom)
        for name, so in variants(lib, "mt_conv2d_fwd_s8"):
            np.testing.assert_array_equal(F._conv_call(so, c), c["y"], err_msg=f"{name} case {i} {geom}")


#: depthwise geometries: (n, h, w, c, m, kh, kw, stride, dilation, pads)
DW_SHAPES = [
    (1, 16, 16, 16, 1, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1)),   # MobileNet-like
    (1, 9, 8, 48, 1, 3, 3, (2, 2), (1, 1), (1, 1, 1, 1)),
    (1, 4, 4, 33, 1, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1)),     # mostly border, a 1-channel tile tail
    (2, 5, 6, 7, 1, 3, 3, (1, 2), (1, 1), (0, 2, 1, 0)),       # C % 4 = 3, asymmetric padding
    (1, 3, 3, 1, 1, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1)),       # one channel
    (1, 6, 6, 18, 1, 3, 3, (3, 3), (1, 1), (2, 2, 2, 2)),      # stride 3, padding 2
    (1, 7, 7, 5, 1, 3, 3, (1, 1), (2, 2), (2, 2, 2, 2)),       # dilation: the direct path
    (1, 6, 5, 4, 2, 3, 3, (1, 1), (1, 1), (1, 1, 1, 1)),       # depth multiplier 2
    (1, 6, 6, 8, 1, 5, 5, (1, 1), (1, 1), (2, 2, 2, 2)),       # 5x5
]


@pytest.mark.parametrize("shape", DW_SHAPES, ids=[f"dw{i}" for i in range(len(DW_SHAPES))])
def test_depthwise_fwd_shapes(lib, shape):
    n, h, w, c, m, kh, kw, stride, dil, pads = shape
    rng = RNG(abs(hash(shape)) % (1 << 32))
    for i in range(6 // N + 1):
        cs = ref_case(rng, n=n, h=h, w=w, cin=c, cout=0, kh=kh, kw=kw, stride=stride, dil=dil, pads=pads,
                      depthwise=True, m=m, act="none" if i == 0 else None, extreme_w=(i == 1))
        for name, so in variants(lib, "mt_depthwise_conv2d_fwd_s8"):
            np.testing.assert_array_equal(_dw_call(so, cs), cs["y"], err_msg=f"{name} {shape}")


def test_depthwise_fwd_random(lib):
    """3x3 depth multiplier 1 (every channel count 1..70, strides 1..2, paddings 0..2), against
    numpy; a few of every other shape."""
    rng = RNG(2201)
    residues = set()
    for i in range(160 // N):
        c = int(rng.integers(1, 71))
        generic = i % 8 == 7
        kh, kw = (int(rng.integers(1, 4)), int(rng.integers(1, 4))) if generic else (3, 3)
        geom = dict(n=int(rng.integers(1, 3)), h=int(rng.integers(kh, 9)), w=int(rng.integers(kw, 9)), cin=c, cout=0,
                    kh=kh, kw=kw, stride=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
                    dil=(int(rng.integers(1, 3)), 1) if generic else (1, 1),
                    pads=tuple(int(v) for v in rng.integers(0, 3, 4)), depthwise=True,
                    m=int(rng.integers(1, 3)) if generic else 1)
        if geom["h"] + geom["pads"][0] + geom["pads"][2] < (kh - 1) * geom["dil"][0] + 1:
            continue
        if geom["w"] + geom["pads"][1] + geom["pads"][3] < kw:
            continue
        residues.add(c % 4)
        cs = ref_case(rng, **geom)
        for name, so in variants(lib, "mt_depthwise_conv2d_fwd_s8"):
            np.testing.assert_array_equal(_dw_call(so, cs), cs["y"], err_msg=f"{name} case {i} {geom}")
    if not SANITIZE:
        assert residues == {0, 1, 2, 3}


def test_depthwise_fwd_inplace(lib):
    """The in-place variants write the reference output over their input with the planner's ring
    (one row fewer is refused, never silently wrong)."""
    from microtrain.compiler.memory.lifetimes import depthwise_inplace_rows

    rng = RNG(2301)
    done = 0
    while done < (10 if SANITIZE else 60):
        kh = 3 if done % 3 else int(rng.integers(1, 4))
        c = int(rng.integers(1, 40))
        geom = dict(n=int(rng.integers(1, 3)), h=int(rng.integers(3, 10)), w=int(rng.integers(3, 10)), cin=c, cout=0,
                    kh=kh, kw=kh, stride=(int(rng.integers(1, 3)),) * 2, dil=(1, 1),
                    pads=tuple(int(v) for v in rng.integers(0, 2, 4)), depthwise=True, m=1)
        cs = ref_case(rng, **geom)
        x, y = cs["x"], cs["y"]
        if y[0].size > x[0].size:
            continue
        t, _, _, _ = cs["attrs"]["pad"]
        rows = depthwise_inplace_rows(x.shape[1], x.shape[2], y.shape[1], y.shape[2], x.shape[3],
                                      cs["attrs"]["stride"][0], t)
        params = _dw_params(cs)
        quant, keep = F.requant_arrays(cs["p"])
        w = cs["w"]
        for name, so in variants(lib, "mt_depthwise_conv2d_fwd_s8_inplace"):
            buf = x.copy().ravel()
            nbytes = so.mt_depthwise_conv2d_fwd_s8_inplace_scratch_bytes(ct.byref(F.dims(y.shape)), rows)
            ring = np.full(nbytes, 77, np.int8)
            st = so.mt_depthwise_conv2d_fwd_s8_inplace(ct.byref(params), ct.byref(quant), ct.byref(F.dims(x.shape)),
                                                       ptr(buf, I8), ct.byref(F.dims(w.shape)), ptr(w, I8),
                                                       ptr(cs["b"], I32) if cs["b"] is not None else None,
                                                       ct.byref(F.dims(y.shape)), ptr(ring, I8), rows)
            assert st == 0
            np.testing.assert_array_equal(buf[:y.size].reshape(y.shape), y, err_msg=f"{name} {geom}")
            if rows > 1:
                st = so.mt_depthwise_conv2d_fwd_s8_inplace(ct.byref(params), ct.byref(quant),
                                                           ct.byref(F.dims(x.shape)), ptr(x.copy(), I8),
                                                           ct.byref(F.dims(w.shape)), ptr(w, I8), None,
                                                           ct.byref(F.dims(y.shape)), ptr(ring, I8), rows - 1)
                assert st == -1
        del keep
        done += 1


def test_fwd_rejects_like_portable(lib):
    bad = F.Dims(1, 1, 1, 3)
    params = F.ConvParams(0, 0, F.HW(1, 1), F.HW(1, 1), F.Padding(), -128, 127, F.WSplit())
    dwp = F.DwConvParams(0, 0, 1, F.HW(1, 1), F.HW(1, 1), F.Padding(), -128, 127)
    for _, so in variants(lib, "mt_conv2d_fwd_s8"):  # filter Cin != input Cin
        assert so.mt_conv2d_fwd_s8(ct.byref(params), None, ct.byref(F.Dims(1, 1, 1, 2)), None, ct.byref(bad), None,
                                   None, ct.byref(F.Dims(1, 1, 1, 1)), None) == -1
    for _, so in variants(lib, "mt_depthwise_conv2d_fwd_s8"):  # filter channels != C * M
        assert so.mt_depthwise_conv2d_fwd_s8(ct.byref(dwp), None, ct.byref(F.Dims(1, 3, 3, 2)), None,
                                             ct.byref(F.Dims(1, 3, 3, 3)), None, None,
                                             ct.byref(F.Dims(1, 1, 1, 2)), None) == -1


# =================================================================================================
# input gradients (Conv2D / DepthwiseConv2D.backward_int8 position 0)
# =================================================================================================
#: test_c_kernels_train's cases plus the CNN / MobileNet shapes the tuned paths special-case
BWD_CASES = [c for c in T.LINEAR_CASES if c[2] in ("conv2d", "depthwise_conv2d")] + [
    ("cnn_conv2", "conv2d", "conv2d", [(1, 16, 16, 8), (16, 3, 3, 8), (16,)], {"stride": (2, 2), "pad": (1, 1, 1, 1)},
     {}),
    ("cnn_conv3_relu", "conv2d", "conv2d", [(1, 8, 8, 16), (16, 3, 3, 16), (16,)],
     {"stride": (2, 2), "pad": (1, 1, 1, 1), "act": "relu"}, {}),
    ("conv_odd_cout", "conv2d", "conv2d", [(2, 5, 6, 6), (7, 3, 3, 6), (7,)], {"pad": (1, 1, 1, 1)}, {}),
    ("conv_wide_cout", "conv2d", "conv2d", [(1, 4, 5, 5), (40, 3, 3, 5), (40,)], {"pad": (1, 0, 1, 2)}, {}),
    ("conv_5x5_s3", "conv2d", "conv2d", [(1, 9, 8, 3), (4, 5, 5, 3), (4,)], {"stride": (3, 2), "pad": (2, 2, 1, 1)}, {}),
    ("conv_9x1", "conv2d", "conv2d", [(1, 12, 3, 2), (3, 9, 1, 2), (3,)], {"pad": (4, 0, 4, 0)}, {}),
    ("dw_mnv2_s1", "depthwise_conv2d", "depthwise_conv2d", [(1, 4, 4, 40), (1, 3, 3, 40), (40,)],
     {"pad": (1, 1, 1, 1)}, {}),
    ("dw_mnv2_s2", "depthwise_conv2d", "depthwise_conv2d", [(1, 8, 8, 22), (1, 3, 3, 22), (22,)],
     {"stride": (2, 2), "pad": (1, 1, 1, 1), "act": "relu6"}, {"spread": 4.0}),
    ("dw_odd_c_asym", "depthwise_conv2d", "depthwise_conv2d", [(2, 7, 5, 7), (1, 3, 3, 7), (7,)],
     {"stride": (1, 2), "pad": (0, 1, 2, 0)}, {}),
    ("dw_5x5", "depthwise_conv2d", "depthwise_conv2d", [(1, 6, 6, 9), (1, 5, 5, 9), (9,)], {"pad": (2, 2, 2, 2)}, {}),
]


def _bwd_run(fn, par, g, g_e, w, variant, split=None):
    xsize = par.in_.n * par.in_.h * par.in_.w * par.in_.c
    gs = g.copy() if variant == "alias" else np.full(g.size, 3, np.int16)
    acc = np.full(xsize, 9, np.int32) if variant == "scratch" else None
    gx = np.full(xsize, 1, np.int16)
    eo = ct.c_int32(-999)
    wp, keep = w, []
    if split is not None:
        wp, tail = w[:split].copy(), w[split:].copy()
        keep = [wp, tail]
        par.split = T.WSplit(ptr(tail, I8) if tail.size else None, split)
    rc = fn(ct.byref(par), ptr(gs, I16), ptr(acc, I32) if acc is not None else None,
            ptr(gs if variant == "alias" else g, I16), g_e, ptr(wp, I8), ptr(gx, I16), ct.byref(eo))
    par.split = T.WSplit()
    del keep
    return rc, gs, acc, gx, eo.value


@pytest.mark.parametrize("case", BWD_CASES, ids=[c[0] for c in BWD_CASES])
def test_bwd_input_reference(lib, case):
    """Every variant of the input gradient (two passes, acc scratch, gs aliasing g, split weight
    rows) gives the numpy engine's gradient."""
    cid, op, kern, shapes, attrs, opts = case
    for seed in T.seeds_for(cid)[: 2 if SANITIZE else 3]:
        b = T.build(op, shapes, attrs, seed, **opts)
        want = T.run_numpy(b, 0)
        g = T.masked_c(lib, b)
        par, keep = T.conv_params(b)
        w = np.ascontiguousarray(b.xs[1])
        for name, so in variants(lib, f"mt_{kern}_bwd_input_s16"):
            fn = getattr(so, f"mt_{kern}_bwd_input_s16")
            for variant in ("two_pass", "scratch", "alias"):
                splits = [None] + ([(seed + 1) % (w.shape[0] + 1)] if kern == "conv2d" else [])
                for split in splits:
                    rc, _, _, gx, e = _bwd_run(fn, par, g, b.gy.e, w, variant, split)
                    assert rc == 0
                    T.assert_grad(gx, e, want, f"{name} {cid} seed {seed} {variant} split {split}")
        del keep


@pytest.mark.parametrize("kern", ["conv2d", "depthwise_conv2d"])
def test_bwd_input_wide(lib, kern):
    """Random geometries (channel counts 1..40, strides 1..3, dilation, padding, batch 2), dense and
    mostly-zero gradients (the kernels pick their scatter form by the nonzero count): the DSP
    variant equals the portable kernel in every output (gs, acc, gx, exponent)."""
    if f"mt_{kern}_bwd_input_s16" not in HAVE:
        pytest.skip("no DSP variant yet")
    rng = RNG(2401 if kern == "conv2d" else 2402)
    fn_p = getattr(lib, f"mt_{kern}_bwd_input_s16")
    fn_d = getattr(lib, f"mt_{kern}_bwd_input_s16_dsp")
    for i in range(80 // N):
        kh, kw = int(rng.integers(1, 6)), int(rng.integers(1, 6))
        sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        dh, dw = (1, 1) if rng.random() < 0.7 else (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        n, h, wd = int(rng.integers(1, 3)), int(rng.integers(1, 9)), int(rng.integers(1, 9))
        pads = [int(v) for v in rng.integers(0, 3, 4)]
        eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
        if h + pads[0] + pads[2] < eh or wd + pads[1] + pads[3] < ew:
            continue
        oh, ow = (h + pads[0] + pads[2] - eh) // sh + 1, (wd + pads[1] + pads[3] - ew) // sw + 1
        cin = int(rng.integers(1, 41))
        if kern == "conv2d":
            cout = int(rng.integers(1, 41))
            w = rng.integers(-127, 128, (cout, kh, kw, cin)).astype(np.int8)
        else:
            cout = cin * int(rng.choice([1, 1, 1, 2, 3]))
            w = rng.integers(-127, 128, (1, kh, kw, cout)).astype(np.int8)
        w_mult = rng.integers(1 << 29, 1 << 31, cout).astype(np.int32)
        par = T.ConvParams(T.Dims(n, h, wd, cin), T.Dims(n, oh, ow, cout), T.HW(kh, kw), T.HW(sh, sw), T.HW(dh, dw),
                           T.Padding(*pads), 0, 1 << 30, -7, 8, ptr(w_mult, I32), int(rng.integers(-12, 0)), 7)
        top = int(rng.choice([1, 100, 4000, 32767]))
        g = rng.integers(-top, top + 1, n * oh * ow * cout)
        g[rng.random(g.size) < (0.85 if i % 2 else 0.2)] = 0  # sparse (ReLU-masked) and dense draws
        g = g.astype(np.int16)
        g_e = int(rng.integers(-40, 0))
        for variant in ("two_pass", "scratch", "alias"):
            split = int(rng.integers(0, cout + 1)) if kern == "conv2d" and rng.random() < 0.5 else None
            ra = _bwd_run(fn_p, par, g, g_e, w, variant, split)
            rb = _bwd_run(fn_d, par, g, g_e, w, variant, split)
            for u, v, what in zip(ra, rb, ("status", "gs", "acc", "gx", "gx_e")):
                np.testing.assert_array_equal(v, u, err_msg=f"{kern} case {i} {variant} split {split}: {what}")


# =================================================================================================
# cross-compilation (the real instructions), sanitizers
# =================================================================================================
def _objdump_mnemonics(obj: Path) -> list[str]:
    text = subprocess.run(["arm-none-eabi-objdump", "-d", str(obj)], capture_output=True, text=True,
                          check=True).stdout
    return [f[2].strip() for f in (line.split("\t") for line in text.splitlines())
            if len(f) >= 3 and f[0].strip().endswith(":")]


#: DSP-extension multiply-accumulates (SMLAD pairs; SMLABB/SMLATT lanes in the depthwise kernels)
DSP_MACS = ("smlad", "smlabb", "smlatt")
#: variants that only run another one
K2_WRAPPERS = {"mt_depthwise_conv2d_fwd_s8_inplace": "mt_depthwise_conv2d_fwd_s8_dsp"}


@pytest.mark.skipif(SANITIZE, reason="host sanitizer run only")
@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m7", "cortex-m33"])
def test_cross_compile_dsp(target, tmp_path):
    """-DMT_USE_DSP with the strict warnings of test_c_kernels_dsp: each variant's object uses the
    DSP multiply-accumulates (or calls the variant it wraps), no soft-float or libc calls."""
    if shutil.which("arm-none-eabi-objdump") is None:
        pytest.skip("arm-none-eabi-objdump not installed")
    objs = cross_compile_check(DSP_SOURCES, target, extra_flags=STRICT + ("-DMT_USE_DSP",), out_dir=tmp_path)
    for src, obj in zip(DSP_SOURCES, objs):
        kernel = src.stem[: -len("_dsp")]
        undefined = subprocess.run(["arm-none-eabi-nm", "-u", str(obj)], capture_output=True, text=True,
                                   check=True).stdout.split()
        bad = [s for s in undefined if re.match(r"__aeabi_[fd]|__\w+[sd]f\d|malloc|printf|puts|memcpy|memset", s)]
        assert not bad, f"{src.name}: {bad}"
        if kernel in K2_WRAPPERS:
            assert K2_WRAPPERS[kernel] in undefined, src.name
            continue
        mn = _objdump_mnemonics(obj)
        assert sum(mn.count(m) for m in DSP_MACS) >= 4, f"{src.name}"
        assert mn.count("sxtb16") + mn.count("smlad") + mn.count("smlabb") >= 1, f"{src.name}"


@pytest.mark.skipif(SANITIZE, reason="host sanitizer run only")
@pytest.mark.parametrize("target,defines", [("cortex-m0plus", ()), ("rv32imac", ()),
                                            ("cortex-m4", ("-DMT_USE_DSP", "-DMT_DSP_EMULATE"))])
def test_cross_compile_emulation(target, defines, tmp_path):
    """Without the DSP extension the variants (and the tuned portable kernels) compile to plain C:
    no SMLAD; on rv32imac (linked -nostdlib) no memcpy/memset calls."""
    portable = [KERNELS / f"{k}.c" for k in K2_DSP]
    objs = cross_compile_check(DSP_SOURCES + portable, target, extra_flags=STRICT + defines, out_dir=tmp_path)
    nm = "riscv64-unknown-elf-nm" if target.startswith("rv") else "arm-none-eabi-nm"
    for src, obj in zip(DSP_SOURCES + portable, objs):
        undefined = subprocess.run([nm, "-u", str(obj)], capture_output=True, text=True, check=True).stdout.split()
        if target.startswith("rv"):
            assert not [s for s in undefined if s in ("memcpy", "memset", "memmove")], src.name
        if target.startswith("cortex") and shutil.which("arm-none-eabi-objdump"):  # (GCC may still pick
            assert "smlad" not in _objdump_mnemonics(obj), src.name              # SMLABB for C on M4)


@pytest.mark.skipif(SANITIZE, reason="already running under the sanitizers")
def test_under_sanitizers():
    if not Path(subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                               text=True).stdout.strip()).is_file():
        pytest.skip("libasan not installed")
    proc = run_sanitized_pytest(Path(__file__), "-k", "not test_under_sanitizers and not cross and not qemu",
                                timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert " passed" in proc.stdout
