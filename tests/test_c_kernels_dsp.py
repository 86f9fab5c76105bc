"""The Arm DSP-extension kernel variants (firmware/src/kernels/dsp/*_dsp.c, mt_kernels_dsp.h) give
the portable kernels' results byte for byte, and the dispatch header picks them by board feature.

On the host ``__ARM_FEATURE_DSP`` is not defined, so the variants run on the portable C emulations
of SMLAD / SXTB16 / SXTAB16 / PKHBT / PKHTB in mt_dsp.h (tested here against a Python model of the
instructions, wrapping included). Each case runs the portable kernel and its ``_dsp`` variant on
the same inputs and compares every output (int8 outputs; gradients, exponents, updated weights,
masters, velocities, xorshift32 state, scratch contents) with ``assert_array_equal``; the cases of
tests/test_c_kernels_fwd.py / test_c_kernels_train.py (numpy-referenced) are reused, plus direct
random draws over channel counts 1..70 (all residues mod 4), every split point, padding, stride 2,
dilation.

Also: the real-instruction path cross-compiled for Cortex-M4 / M7 / M33 with ``-DMT_USE_DSP`` (each
MAC kernel's object must contain SMLAD), the emulation path for Cortex-M0+ and rv32imac, the
dispatch macro expansion on the host and on Cortex-M0+ (portable names) / M4 (``_dsp`` names), the
benchmark list, and the whole module once more under ASan/UBSan.
"""
from __future__ import annotations

import ctypes as ct
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
from cbuild import (CACHE, CROSS_TARGETS, DSP_KERNELS, INCLUDE, KERNELS, PEDANTIC, SANITIZE,  # noqa: E402
                    cross_compile_check, load, ptr, run_sanitized_pytest)

#: the kernel variants (one per file) and the benchmark list
DSP_SOURCES = sorted(DSP_KERNELS.glob("mt_*_dsp.c"))
BENCH_SOURCE = DSP_KERNELS / "mt_dsp_bench.c"
#: portable kernels compared against (every kernel: the variants call portable helpers and fall back
#: to portable kernels outside their fast paths)
PORTABLE_SOURCES = sorted(KERNELS.glob("*.c"))
STRICT = ("-pedantic", "-Wvla", "-Wshadow", "-Wconversion")


def dsp_kernel_list() -> list[str]:
    """The X-macro list MT_DSP_KERNELS of mt_kernels_dsp.h."""
    text = (INCLUDE / "mt_kernels_dsp.h").read_text()
    body = re.search(r"#define MT_DSP_KERNELS\(X\)((?:[^\n]*\\\n)*[^\n]*)", text).group(1)
    return re.findall(r"X\((\w+)\)", body)


KERNEL_NAMES = dsp_kernel_list()
N = 3 if SANITIZE else 1  # divisor of the case counts under the sanitizers
RNG = np.random.default_rng


@pytest.fixture(scope="module")
def lib() -> ct.CDLL:
    so = load(PORTABLE_SOURCES + DSP_SOURCES + [BENCH_SOURCE], "mt_kernels_dsp",
              extra_flags=PEDANTIC + (("-O1",) if SANITIZE else ()))
    for name, args in F.SIGNATURES.items():
        if hasattr(so, name):
            getattr(so, name).argtypes = args
            getattr(so, name).restype = ct.c_size_t if name.endswith("_scratch_bytes") else ct.c_int
    for name, (res, args) in T.SIGNATURES.items():
        getattr(so, name).argtypes = args
        getattr(so, name).restype = res
    for name in KERNEL_NAMES:
        getattr(so, name + "_dsp").argtypes = getattr(so, name).argtypes
        getattr(so, name + "_dsp").restype = getattr(so, name).restype
    return so


class Dsp:
    """``lib`` with every kernel of MT_DSP_KERNELS replaced by its ``_dsp`` variant (so the call
    helpers of the other test modules run the variants unchanged)."""

    def __init__(self, so):
        self._so = so

    def __getattr__(self, name):
        return getattr(self._so, name + "_dsp" if name in KERNEL_NAMES else name)


# =================================================================================================
# The intrinsics' emulation against a model of the instructions
# =================================================================================================
SHIM = r"""
#include "mt_dsp.h"
void t_smlad(int n, const uint32_t *a, const uint32_t *b, const int32_t *c, int32_t *o)
{ int i; for (i = 0; i < n; ++i) o[i] = mt_smlad(a[i], b[i], c[i]); }
void t_sxtab16(int n, const uint32_t *a, const uint32_t *b, uint32_t *o, uint32_t *o8)
{ int i; for (i = 0; i < n; ++i) { o[i] = mt_sxtab16(a[i], b[i]); o8[i] = mt_sxtab16_ror8(a[i], b[i]); } }
void t_sxtb16(int n, const uint32_t *a, uint32_t *o, uint32_t *o8)
{ int i; for (i = 0; i < n; ++i) { o[i] = mt_sxtb16(a[i]); o8[i] = mt_sxtb16_ror8(a[i]); } }
void t_pkh(int n, const uint32_t *a, const uint32_t *b, uint32_t *bt, uint32_t *tb)
{ int i; for (i = 0; i < n; ++i) { bt[i] = mt_pkhbt(a[i], b[i]); tb[i] = mt_pkhtb(a[i], b[i]); } }
void t_read(int n, const int8_t *p8, const int16_t *p16, uint32_t *o8, uint32_t *o16)
{ int i; for (i = 0; i < n; ++i) { o8[i] = mt_read_s8x4(p8 + i); o16[i] = mt_read_s16x2(p16 + i); } }
"""


@pytest.fixture(scope="module")
def shim():
    src = CACHE / "shims" / "mt_dsp_shim.c"
    src.parent.mkdir(parents=True, exist_ok=True)
    if not src.exists() or src.read_text() != SHIM:
        tmp = src.with_suffix(f".{np.random.default_rng().integers(1 << 30)}.tmp")
        tmp.write_text(SHIM)
        tmp.replace(src)
    return load([src], "mt_dsp_shim", extra_flags=PEDANTIC)


def _lanes16(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = x.astype(np.uint32)
    return ((x & 0xFFFF).astype(np.uint16).view(np.int16).astype(np.int64),
            (x >> 16).astype(np.uint16).view(np.int16).astype(np.int64))


def _bytes(x: np.ndarray) -> list[np.ndarray]:
    x = x.astype(np.uint32)
    return [((x >> (8 * i)) & 0xFF).astype(np.uint8).view(np.int8).astype(np.int64) for i in range(4)]


def _pack(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return ((lo.astype(np.int64) & 0xFFFF) | ((hi.astype(np.int64) & 0xFFFF) << 16)).astype(np.uint32)


def _u32(a):
    return ptr(a, ct.c_uint32)


def test_intrinsics_emulation(shim):
    """SMLAD (wrapping, as the instruction's result with the Q flag ignored), SXTB16, SXTAB16 (lanes
    mod 2^16), their ROR #8 forms, PKHBT/PKHTB and the little-endian loads, on random and edge words."""
    rng = RNG(11)
    n = 4000
    edges = np.array([0, 0xFFFFFFFF, 0x80008000, 0x7FFF7FFF, 0x80007FFF, 0x00018000, 0x7F807F80, 0x80808080,
                      0x7F7F7F7F, 0x12345678], np.uint32)
    a = np.concatenate([edges, rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)])
    b = np.concatenate([edges[::-1], rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)])
    c = rng.integers(-(1 << 31), 1 << 31, a.size).astype(np.int32)
    c[:4] = [2**31 - 1, -(2**31), 2**31 - 2**30, 0]  # overflow: the result wraps
    m = a.size
    out = np.zeros(m, np.int32)
    shim.t_smlad(m, _u32(a), _u32(b), ptr(c, ct.c_int32), ptr(out, ct.c_int32))
    (a0, a1), (b0, b1) = _lanes16(a), _lanes16(b)
    want = (c.astype(np.int64) + a0 * b0 + a1 * b1 + (1 << 31)) % (1 << 32) - (1 << 31)
    np.testing.assert_array_equal(out, want)
    assert np.any(c.astype(np.int64) + a0 * b0 + a1 * b1 > 2**31 - 1)  # the wrap is exercised
    o, o8 = np.zeros(m, np.uint32), np.zeros(m, np.uint32)
    shim.t_sxtb16(m, _u32(a), _u32(o), _u32(o8))
    by = _bytes(a)
    np.testing.assert_array_equal(o, _pack(by[0], by[2]))
    np.testing.assert_array_equal(o8, _pack(by[1], by[3]))
    shim.t_sxtab16(m, _u32(b), _u32(a), _u32(o), _u32(o8))
    np.testing.assert_array_equal(o, _pack(b0 + by[0], b1 + by[2]))
    np.testing.assert_array_equal(o8, _pack(b0 + by[1], b1 + by[3]))
    shim.t_pkh(m, _u32(a), _u32(b), _u32(o), _u32(o8))
    np.testing.assert_array_equal(o, _pack(a0, b0))
    np.testing.assert_array_equal(o8, _pack(b1, a1))
    raw8 = rng.integers(-128, 128, m + 3).astype(np.int8)
    raw16 = rng.integers(-32768, 32768, m + 1).astype(np.int16)
    shim.t_read(m, ptr(raw8, ct.c_int8), ptr(raw16, ct.c_int16), _u32(o), _u32(o8))  # odd addresses too
    r8 = raw8.view(np.uint8).astype(np.uint64)
    np.testing.assert_array_equal(o, (r8[:-3] | r8[1:-2] << 8 | r8[2:-1] << 16 | r8[3:] << 24).astype(np.uint32))
    np.testing.assert_array_equal(o8, _pack(raw16[:-1], raw16[1:]))


# =================================================================================================
# Forward kernels
# =================================================================================================
def _out_range(rng) -> tuple[int, int]:
    lo, hi = sorted(int(v) for v in rng.integers(-128, 128, 2))
    return (-128, 127) if rng.random() < 0.4 else (lo, hi)


def _requant(rng, cout: int) -> dict:
    mult = rng.integers(1 << 30, 1 << 31, cout)
    mult[rng.random(cout) < 0.05] = 0
    shift = rng.integers(-31, 5, cout) if rng.random() < 0.3 else rng.integers(-14, -4, cout)
    return {"mult": mult, "shift": shift}


def wide_conv_case(rng, pointwise: bool = False) -> dict:
    """A conv2d case in the layout of test_c_kernels_fwd.conv_case (no numpy reference: compared
    with the portable kernel), channel counts 1..70."""
    while True:
        n, h, w = int(rng.integers(1, 3)), int(rng.integers(1, 8)), int(rng.integers(1, 8))
        cin, cout = int(rng.integers(1, 71)), int(rng.integers(1, 10))
        if pointwise:
            kh = kw = sh = sw = dh = dw = 1
            pads = (0, 0, 0, 0)
        else:
            kh, kw = int(rng.integers(1, 5)), int(rng.integers(1, 5))
            sh, sw = int(rng.choice([1, 1, 2])), int(rng.choice([1, 1, 2]))
            dh, dw = int(rng.choice([1, 1, 2, 3])), int(rng.choice([1, 1, 2, 3]))
            pads = tuple(int(v) for v in rng.integers(0, 3, 4))
        eh, ew = (kh - 1) * dh + 1, (kw - 1) * dw + 1
        if h + pads[0] + pads[2] >= eh and w + pads[1] + pads[3] >= ew:
            break
    oh = (h + pads[0] + pads[2] - eh) // sh + 1
    ow = (w + pads[1] + pads[3] - ew) // sw + 1
    act_min, act_max = _out_range(rng)
    p = dict(_requant(rng, cout), in_zp=F.zero_point(rng), out_zp=F.zero_point(rng), act_min=act_min,
             act_max=act_max)
    wq = rng.integers(-128, 128, (cout, kh, kw, cin)).astype(np.int8)
    if rng.random() < 0.1:
        wq = np.where(rng.random(wq.shape) < 0.5, -128, 127).astype(np.int8)
    bias = rng.integers(-(1 << 24), 1 << 24, cout).astype(np.int32) if rng.random() < 0.8 else None
    return dict(x=F.int8_input(rng, (n, h, w, cin)), w=wq, b=bias, p=p, y=np.zeros((n, oh, ow, cout), np.int8),
                attrs={"stride": (sh, sw), "dilation": (dh, dw), "pad": pads}, m=1)


def _splits(rng, cout: int, every: bool) -> list:
    return [None] + (list(range(cout + 1)) if every else [int(rng.integers(0, cout + 1))])


def test_conv2d_reference_cases(lib):
    """test_c_kernels_fwd.conv_case (numpy-referenced): the variant gives the reference output."""
    rng = RNG(1101)
    dsp = Dsp(lib)
    for i in range(60 // N):
        c = F.conv_case(rng, pointwise=i % 3 == 0)
        geom_pw = c["w"].shape[1:3] == (1, 1) and c["attrs"]["stride"] == (1, 1) and c["attrs"]["pad"] == (0,) * 4
        for split in _splits(rng, c["w"].shape[0], i % 4 == 0):
            np.testing.assert_array_equal(F._conv_call(dsp, c, split=split), c["y"], err_msg=f"case {i} {split}")
            if geom_pw:
                np.testing.assert_array_equal(F._conv_call(dsp, c, pointwise=True, split=split), c["y"])


@pytest.mark.parametrize("pointwise", [False, True], ids=["conv2d", "pointwise"])
def test_conv2d_wide_channels(lib, pointwise):
    rng = RNG(1201 + pointwise)
    dsp = Dsp(lib)
    cins, geoms = set(), set()
    for i in range(240 // N):
        c = wide_conv_case(rng, pointwise)
        cins.add(c["x"].shape[3])
        geoms.add((c["attrs"]["stride"], c["attrs"]["dilation"], any(c["attrs"]["pad"])))
        for split in _splits(rng, c["w"].shape[0], i % 5 == 0):
            want = F._conv_call(lib, c, pointwise=pointwise, split=split)
            got = F._conv_call(dsp, c, pointwise=pointwise, split=split)
            np.testing.assert_array_equal(got, want, err_msg=f"case {i} split {split} {c['attrs']}")
    if not SANITIZE:
        assert {c % 4 for c in cins} == {0, 1, 2, 3} and min(cins) <= 3 and max(cins) >= 60
        if not pointwise:
            assert any(g[0] != (1, 1) for g in geoms) and any(g[1] != (1, 1) for g in geoms)
            assert any(g[2] for g in geoms)


def test_conv2d_dsp_rejects_like_portable(lib):
    rng = RNG(1301)
    c = wide_conv_case(rng, pointwise=True)
    c["attrs"] = dict(c["attrs"], stride=(2, 1))
    for so in (lib, Dsp(lib)):
        with pytest.raises(AssertionError):  # status MT_ERR_ARG
            F._conv_call(so, c, pointwise=True)
    bad = F.Dims(1, 1, 1, 3)
    params = F.ConvParams(0, 0, F.HW(1, 1), F.HW(1, 1), F.Padding(), -128, 127, F.WSplit())
    for fn in (lib.mt_conv2d_fwd_s8, lib.mt_conv2d_fwd_s8_dsp):  # filter Cin != input Cin
        assert fn(ct.byref(params), None, ct.byref(F.Dims(1, 1, 1, 2)), None, ct.byref(bad), None, None,
                  ct.byref(F.Dims(1, 1, 1, 1)), None) == -1


def _fc_call(fn, p: dict, x, w, bias, cout, split):
    head, ws, hold = F.split_weights(w, split)
    params = F.FcParams(p["in_zp"], p["w_zp"], p["out_zp"], p["act_min"], p["act_max"], ws)
    quant, keep = F.requant_arrays(p)
    out = np.full((x.shape[0], cout), 99, np.int8)
    st = fn(ct.byref(params), ct.byref(quant), x.shape[0], x.shape[1], ptr(x, ct.c_int8), cout,
            ptr(head, ct.c_int8), ptr(bias, ct.c_int32) if bias is not None else None, ptr(out, ct.c_int8))
    del keep, hold
    assert st == 0
    return out


def test_fully_connected(lib):
    rng = RNG(1401)
    cins = set()
    for i in range(300 // N):
        n, cin, cout = int(rng.integers(1, 5)), int(rng.integers(1, 71)), int(rng.integers(1, 14))
        cins.add(cin)
        act_min, act_max = _out_range(rng)
        w_zp = int(rng.integers(-128, 128)) if i % 3 == 0 else 0  # per-tensor weights keep a zero point
        p = dict(_requant(rng, cout), in_zp=F.zero_point(rng), w_zp=w_zp, out_zp=F.zero_point(rng),
                 act_min=act_min, act_max=act_max)
        x = F.int8_input(rng, (n, cin))
        w = F.int8_input(rng, (cout, cin))
        bias = rng.integers(-(1 << 24), 1 << 24, cout).astype(np.int32) if i % 5 else None
        for split in _splits(rng, cout, i % 6 == 0):
            want = _fc_call(lib.mt_fully_connected_fwd_s8, p, x, w, bias, cout, split)
            got = _fc_call(lib.mt_fully_connected_fwd_s8_dsp, p, x, w, bias, cout, split)
            np.testing.assert_array_equal(got, want, err_msg=f"case {i} split {split}")
    if not SANITIZE:
        assert {c % 4 for c in cins} == {0, 1, 2, 3}
    params = F.FcParams(0, 0, 0, -128, 127, F.WSplit())
    for fn in (lib.mt_fully_connected_fwd_s8, lib.mt_fully_connected_fwd_s8_dsp):
        assert fn(ct.byref(params), None, 1, 0, None, 1, None, None, None) == -1


# =================================================================================================
# Training kernels
# =================================================================================================
I8, I16, I32, U32 = ct.c_int8, ct.c_int16, ct.c_int32, ct.c_uint32


def _p(a, t):
    return ptr(a, t) if a is not None else None


class SgdSide:
    """One copy of the update state (params, master, velocity, rng) for one kernel run."""

    def __init__(self, rng, w: np.ndarray, rows: int, inner: int, kind: int, mu: int, lr_zero: bool):
        self.w = w.copy()
        sl = rows * inner
        self.mult = rng.integers(1 << 30, 1 << 31, rows).astype(np.int32)
        self.params = T.SgdParams(ptr(self.mult, I32), int(rng.integers(-4, 4)),
                                  0 if lr_zero else int(rng.integers(1 << 30, 1 << 31)), int(rng.integers(-14, -2)),
                                  16, mu)
        base = self.w.reshape(-1)[:sl].astype(np.int64) << 8
        self.master = np.clip(base + rng.integers(-128, 128, sl), -127 << 8, 127 << 8).astype(np.int16)
        self.vel = rng.integers(-(1 << 30), 1 << 30, sl).astype(np.int32)
        self.rng = np.array([int(rng.integers(1, 1 << 32))], np.uint32)
        self.state = T.SgdState(kind, ptr(self.master, I16), ptr(self.rng, U32),
                                ptr(self.vel, I32) if mu else None, -127, 127)

    def clone(self) -> "SgdSide":
        c = object.__new__(SgdSide)
        c.w, c.mult, c.master, c.vel, c.rng = (a.copy() for a in (self.w, self.mult, self.master, self.vel, self.rng))
        pr = self.params
        c.params = T.SgdParams(ptr(c.mult, I32), pr.shift, pr.lr_mult, pr.lr_shift, pr.frac_bits, pr.mu)
        c.state = T.SgdState(self.state.kind, ptr(c.master, I16), ptr(c.rng, U32),
                             ptr(c.vel, I32) if pr.mu else None, -127, 127)
        return c

    def arrays(self):
        return self.w, self.master, self.vel, self.rng


def _run_update(fn, par, side: SgdSide, rows, g, g_e, x, n_acc, with_grad):
    acc = np.full(n_acc, 7, np.int32) if n_acc else None
    grad = np.full(rows * (side.w.size // (side.w.shape[0])), 5, np.int16) if with_grad else None
    ge = ct.c_int32(-999)
    rc = fn(ct.byref(par), ct.byref(side.params), ct.byref(side.state), rows, _p(acc, I32), ptr(g, I16), g_e,
            ptr(x, I8), ptr(side.w, I8), _p(grad, I16), ct.byref(ge) if with_grad else None)
    return rc, acc, grad, ge.value


def _compare_update(fn_p, fn_d, par, side: SgdSide, rows, g, g_e, x, what, scratch=None, with_grad=True):
    inner = side.w.size // side.w.shape[0]
    n_acc = rows * inner if scratch else 0
    a, b = side.clone(), side.clone()
    ra = _run_update(fn_p, par, a, rows, g, g_e, x, n_acc, with_grad)
    rb = _run_update(fn_d, par, b, rows, g, g_e, x, n_acc, with_grad)
    assert ra[0] == rb[0], what
    for u, v, name in zip(ra[1:], rb[1:], ("acc", "grad", "grad_e")):
        np.testing.assert_array_equal(v, u, err_msg=f"{what}: {name}")
    for u, v, name in zip(a.arrays(), b.arrays(), ("w", "master", "velocity", "rng")):
        np.testing.assert_array_equal(v, u, err_msg=f"{what}: {name}")
    return ra


def _fc_train(batch, cin, cout, in_zp=0, w_zp=0, x_mult=1 << 30, x_shift=-7, x_bits=8, w_mult=None,
              w_shift=-7, w_bits=7) -> T.FcParams:
    return T.FcParams(batch, cin, cout, in_zp, w_zp, x_mult, x_shift, x_bits, _p(w_mult, I32), w_shift, w_bits)


def _pw_train(n, h, w, cin, cout, in_zp, x_mult, x_shift, w_mult=None, w_shift=-7, w_bits=7) -> T.ConvParams:
    return T.ConvParams(T.Dims(n, h, w, cin), T.Dims(n, h, w, cout), T.HW(1, 1), T.HW(1, 1), T.HW(1, 1),
                        T.Padding(), in_zp, x_mult, x_shift, 8, _p(w_mult, I32), w_shift, w_bits)


def _grad_in(rng, shape) -> np.ndarray:
    top = int(rng.choice([1, 100, 4000, 32767]))
    g = rng.integers(-top, top + 1, shape)
    g[rng.random(shape) < 0.2] = 0
    return np.ascontiguousarray(g, dtype=np.int16)


@pytest.mark.parametrize("kernel", ["fully_connected", "pointwise_conv2d"])
def test_weight_update_wide(lib, kernel):
    """Fused weight gradient + SGD update: every output of the variant equals the portable one
    (master and stochastic, with and without momentum, scratch or two passes, lr 0)."""
    rng = RNG(1501 if kernel == "fully_connected" else 1502)
    fn_p = getattr(lib, f"mt_{kernel}_update_s8")
    fn_d = getattr(lib, f"mt_{kernel}_update_s8_dsp")
    batches = set()
    for i in range(120 // N):
        cin, cout = int(rng.integers(1, 71)), int(rng.integers(1, 10))
        in_zp, x_mult, x_shift = F.zero_point(rng), int(rng.integers(1 << 30, 1 << 31)), int(rng.integers(-12, 0))
        if kernel == "fully_connected":
            batch = int(rng.integers(1, 10))
            par = _fc_train(batch, cin, cout, in_zp, 0, x_mult, x_shift)
            xshape = (batch, cin)
        else:
            n, h, w = int(rng.integers(1, 3)), int(rng.integers(1, 5)), int(rng.integers(1, 5))
            batch = n * h * w
            par = _pw_train(n, h, w, cin, cout, in_zp, x_mult, x_shift)
            xshape = (n, h, w, cin)
        batches.add(batch % 2)
        x = F.int8_input(rng, xshape)
        g = _grad_in(rng, (batch, cout))
        w0 = rng.integers(-127, 128, (cout, cin)).astype(np.int8)
        rows_list = range(1, cout + 1) if i % 6 == 0 else [int(rng.integers(1, cout + 1))]
        for rows in rows_list:
            kind = int(rng.integers(0, 2))  # MASTER or STOCHASTIC
            mu = int(rng.integers(1, 1 << 31)) if rng.random() < 0.5 else 0
            side = SgdSide(rng, w0, rows, cin, kind, mu, lr_zero=rng.random() < 0.1)
            what = f"{kernel} case {i} rows {rows} batch {batch} cin {cin}"
            _compare_update(fn_p, fn_d, par, side, rows, g, int(rng.integers(-40, 0)), x, what,
                            scratch=bool(rng.random() < 0.5), with_grad=rng.random() < 0.8)
    if not SANITIZE:
        assert batches == {0, 1}
    # rejected alike (rows outside [1, Cout], a non-pointwise geometry), nothing written
    side = SgdSide(rng, np.zeros((3, 4), np.int8), 1, 4, 0, 0, False)
    g, x = np.ones(6, np.int16), np.ones(8, np.int8)
    par = _fc_train(2, 4, 3) if kernel == "fully_connected" else _pw_train(1, 1, 2, 4, 3, 0, 1 << 30, -7)
    for rows in (0, 4):
        assert _compare_update(fn_p, fn_d, par, side, rows, g, 0, x, f"rows {rows}", with_grad=False)[0] == -1
    if kernel == "pointwise_conv2d":
        par.stride = T.HW(2, 2)
        assert _compare_update(fn_p, fn_d, par, side, 1, g, 0, x, "stride 2", with_grad=False)[0] == -1


@pytest.mark.parametrize("case", [c for c in T.LINEAR_CASES if c[2] in ("fully_connected", "pointwise_conv2d")],
                         ids=[c[0] for c in T.LINEAR_CASES if c[2] in ("fully_connected", "pointwise_conv2d")])
def test_linear_reference_cases(lib, case):
    """test_c_kernels_train.LINEAR_CASES (numpy engine): the variants give the engine's gradients
    and the portable kernels' updates."""
    cid, op, kern, shapes, attrs, opts = case
    for seed in T.seeds_for(cid)[: 2 if SANITIZE else 3]:
        b = T.build(op, shapes, attrs, seed, **opts)
        g = T.masked_c(lib, b)
        par, keep = T.fc_params(b) if op == "fully_connected" else T.conv_params(b)
        x = np.ascontiguousarray(b.xs[0])
        w = np.ascontiguousarray(b.xs[1])
        cout = w.shape[0]
        # input gradient, against the numpy engine
        want = T.run_numpy(b, 0)
        for variant in ("two_pass", "scratch", "alias", "split"):
            gs = g.copy() if variant == "alias" else np.zeros(g.size, np.int16)
            acc = np.zeros(b.xs[0].size, np.int32) if variant == "scratch" else None
            gx, eo = np.zeros(b.xs[0].size, np.int16), ct.c_int32()
            wp = w
            if variant == "split":
                r = (seed + 1) % (cout + 1)
                wp, tail = w[:r].copy(), w[r:].copy()
                keep += [wp, tail]
                par.split = T.WSplit(ptr(tail, I8) if tail.size else None, r)
            fn = getattr(lib, f"mt_{kern}_bwd_input_s16_dsp")
            assert fn(ct.byref(par), ptr(gs, I16), _p(acc, I32), ptr(gs if variant == "alias" else g, I16), b.gy.e,
                      ptr(wp, I8), ptr(gx, I16), ct.byref(eo)) == 0
            par.split = T.WSplit()
            T.assert_grad(gx, eo.value, want, f"{cid} seed {seed} {variant} dx")
        # weight update, against the portable kernel (itself against the engine in test_c_kernels_train)
        for rows in T._rows_list(cout):
            side = SgdSide(b.rng, w.reshape(cout, -1), rows, w.size // cout, int(b.rng.integers(0, 2)),
                           int(b.rng.integers(0, 1 << 31)) if seed % 2 else 0, False)
            _, _, grad, ge = _compare_update(getattr(lib, f"mt_{kern}_update_s8"), getattr(lib, f"mt_{kern}_update_s8_dsp"),
                                             par, side, rows, g, b.gy.e, x, f"{cid} seed {seed} rows {rows}",
                                             scratch=bool(rows % 2))
            T.assert_grad(grad.reshape((rows,) + w.shape[1:]), ge, T.run_numpy(b, 1, rows), f"{cid} rows {rows} dW")


def _bwd_call(fn, par, g, g_e, w, variant, split):
    fc = isinstance(par, T.FcParams)
    xsize = par.batch * par.in_features if fc else par.in_.n * par.in_.h * par.in_.w * par.in_.c
    gs = g.copy() if variant == "alias" else np.full(g.size, 3, np.int16)
    acc = np.full(xsize, 9, np.int32) if variant == "scratch" else None
    gx = np.full(xsize, 1, np.int16)
    eo = ct.c_int32(-999)
    wp, keep = w, []
    if split is not None:  # trained rows [0, split) in one array (SRAM), the rest in another (flash)
        wp, tail = w[:split].copy(), w[split:].copy()
        keep = [wp, tail]
        par.split = T.WSplit(ptr(tail, I8) if tail.size else None, split)
    rc = fn(ct.byref(par), ptr(gs, I16), _p(acc, I32), ptr(gs if variant == "alias" else g, I16), g_e,
            ptr(wp, I8), ptr(gx, I16), ct.byref(eo))
    par.split = T.WSplit()
    del keep
    return rc, gs, acc, gx, eo.value


@pytest.mark.parametrize("kernel", ["fully_connected", "pointwise_conv2d"])
def test_input_gradient_wide(lib, kernel):
    rng = RNG(1601 if kernel == "fully_connected" else 1602)
    fn_p = getattr(lib, f"mt_{kernel}_bwd_input_s16")
    fn_d = getattr(lib, f"mt_{kernel}_bwd_input_s16_dsp")
    couts = set()
    for i in range(150 // N):
        cin, cout = int(rng.integers(1, 71)), int(rng.integers(1, 71))
        couts.add(cout % 4)
        w_mult = rng.integers(1 << 29, 1 << 31, cout).astype(np.int32)
        w_shift = int(rng.integers(-12, 0))
        if kernel == "fully_connected":
            batch = int(rng.integers(1, 6))
            w_zp = int(rng.integers(-20, 21)) if i % 3 == 0 else 0
            par = _fc_train(batch, cin, cout, 0, w_zp, w_mult=w_mult, w_shift=w_shift, w_bits=8 if w_zp else 7)
        else:
            n, h, wd = int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(1, 4))
            batch = n * h * wd
            par = _pw_train(n, h, wd, cin, cout, 0, 1 << 30, -7, w_mult=w_mult, w_shift=w_shift)
        w = rng.integers(-127, 128, (cout, cin)).astype(np.int8)
        g = _grad_in(rng, batch * cout)
        g_e = int(rng.integers(-40, 0))
        splits = [None] + (list(range(cout + 1)) if i % 10 == 0 else [int(rng.integers(0, cout + 1))])
        for variant in ("two_pass", "scratch", "alias"):
            for split in splits if variant == "two_pass" else [None, splits[-1]]:
                ra = _bwd_call(fn_p, par, g, g_e, w, variant, split)
                rb = _bwd_call(fn_d, par, g, g_e, w, variant, split)
                for u, v, name in zip(ra, rb, ("status", "gs", "acc", "gx", "gx_e")):
                    np.testing.assert_array_equal(v, u, err_msg=f"{kernel} case {i} {variant} split {split}: {name}")
    if not SANITIZE:
        assert couts == {0, 1, 2, 3}
    if kernel == "pointwise_conv2d":  # a non-pointwise geometry is rejected alike
        par = _pw_train(1, 2, 2, 3, 2, 0, 1 << 30, -7, w_mult=np.full(2, 1 << 30, np.int32))
        par.padding = T.Padding(1, 0, 0, 0)
        g = np.ones(8, np.int16)
        assert fn_p(ct.byref(par), ptr(g, I16), None, ptr(g, I16), 0, None, None, None) == -1
        assert fn_d(ct.byref(par), ptr(g, I16), None, ptr(g, I16), 0, None, None, None) == -1


# =================================================================================================
# Sources, headers, dispatch, benchmark list
# =================================================================================================
def _strip_comments(text: str) -> str:
    return re.sub(r"/\*.*?\*/|//[^\n]*", "", text, flags=re.S)


def _prototypes(text: str) -> dict[str, str]:
    code = " ".join(_strip_comments(text).split())
    return {m.group(2): m.group(3).strip() for m in re.finditer(r"\b(mt_status|int32_t|void)\s+(mt_\w+)\s*\(([^;{]*)\)\s*;",
                                                                    code)}


def test_sources_and_signatures():
    """One kernel per file named after it; integer only, no heap/stdio; every listed kernel has a
    variant declared with the portable parameter list, and MT_HAS_DSP_<name> for each."""
    stems = sorted(p.stem for p in DSP_SOURCES)
    assert stems == sorted(f"{k}_dsp" for k in KERNEL_NAMES)
    for path in DSP_SOURCES + [BENCH_SOURCE, INCLUDE / "mt_dsp.h", INCLUDE / "mt_kernels_dsp.h",
                               INCLUDE / "mt_dispatch.h"]:
        code = _strip_comments(path.read_text())
        bad = re.findall(r"\b(float|double|malloc|calloc|realloc|free|printf|puts)\b|<stdio\.h>|<math\.h>", code)
        assert not bad, f"{path.name}: {bad}"
        if path in DSP_SOURCES:
            assert re.search(rf"\bmt_status\s+{path.stem}\s*\(", code), path.name
            assert len(re.findall(r"^mt_status\s+mt_\w+\s*\(", code, flags=re.M)) == 1, path.name
    portable = {**_prototypes((INCLUDE / "mt_kernels_fwd.h").read_text()),
                **_prototypes((INCLUDE / "mt_kernels_train.h").read_text())}
    dsp = _prototypes((INCLUDE / "mt_kernels_dsp.h").read_text())
    dispatch = (INCLUDE / "mt_dispatch.h").read_text()
    for name in KERNEL_NAMES:
        assert dsp[f"{name}_dsp"] == portable[name], name
        assert f"#define MT_HAS_DSP_{name} 1" in dispatch
        assert re.search(rf"#define MT_DSP_ALT_{name} ~, {name}_dsp\b", dispatch)
    assert len(re.findall(r"#define MT_HAS_DSP_", dispatch)) == len(KERNEL_NAMES)


def _expand(names: list[str], defines: tuple = ()) -> list[str]:
    src = '#include "mt_dispatch.h"\n' + "".join(f"@@ MT_KERNEL({n})\n" for n in names)
    out = subprocess.run(["gcc", "-E", "-P", "-std=c99", f"-I{INCLUDE}", *defines, "-"], input=src, text=True,
                         capture_output=True, check=True).stdout
    return [line.split("@@", 1)[1].strip() for line in out.splitlines() if line.startswith("@@")]


def test_dispatch_expansion():
    others = ["mt_relu_fwd_s8", "mt_add_fwd_s8", "mt_bias_update_s32", "mt_not_a_kernel"]
    assert _expand(KERNEL_NAMES + others) == KERNEL_NAMES + others
    assert _expand(KERNEL_NAMES + others, ("-DMT_USE_DSP",)) == [f"{n}_dsp" for n in KERNEL_NAMES] + others


DISPATCH_USER = """#include "mt_dispatch.h"
typedef void (*any_fn)(void);
any_fn mt_dispatch_user_table[] = {
%s
};
"""


@pytest.mark.skipif(SANITIZE, reason="host sanitizer run only")
@pytest.mark.parametrize("target,defines", [("cortex-m0plus", ()), ("rv32imac", ()), ("cortex-m4", ("-DMT_USE_DSP",)),
                                            ("cortex-m7", ("-DMT_USE_DSP",))])
def test_dispatch_cross(target, defines, tmp_path):
    """Code calling MT_KERNEL(...) compiles for the target and references the portable kernels
    without MT_USE_DSP (Cortex-M0+, rv32imac) and the _dsp variants with it (M4, M7)."""
    src = tmp_path / "user.c"
    names = KERNEL_NAMES + ["mt_relu_fwd_s8"]
    src.write_text(DISPATCH_USER % "\n".join(f"    (any_fn)MT_KERNEL({n})," for n in names))
    (obj,) = cross_compile_check([src], target, extra_flags=STRICT + defines, out_dir=tmp_path)
    nm = CROSS_TARGETS[target][0].replace("gcc", "nm")
    undefined = set(subprocess.run([nm, "-u", str(obj)], capture_output=True, text=True, check=True).stdout.split())
    dsp_names = {f"{n}_dsp" for n in KERNEL_NAMES}
    if defines:
        assert dsp_names <= undefined and not set(KERNEL_NAMES) & undefined
    else:
        assert set(KERNEL_NAMES) <= undefined and not dsp_names & undefined
    assert "mt_relu_fwd_s8" in undefined  # no variant: the portable kernel either way


def _objdump_counts(obj: Path) -> dict[str, int]:
    text = subprocess.run(["arm-none-eabi-objdump", "-d", str(obj)], capture_output=True, text=True,
                          check=True).stdout
    mnemonics = [f[2].strip() for f in (line.split("\t") for line in text.splitlines())
                 if len(f) >= 3 and f[0].strip().endswith(":")]
    return {m: mnemonics.count(m) for m in ("smlad", "smlabb", "smlatt", "smmulr", "sxtb16", "sxtab16", "pkhbt",
                                            "pkhtb")}


#: kernels that only wrap another variant (the fully_connected rule over pixels)
WRAPPERS = {"mt_pointwise_conv2d_update_s8": "mt_fully_connected_update_s8_dsp",
            "mt_pointwise_conv2d_bwd_input_s16": "mt_fully_connected_bwd_input_s16_dsp",
            "mt_pointwise_conv2d_fwd_s8": "mt_fully_connected_fwd_s8_dsp",
            "mt_depthwise_conv2d_fwd_s8_inplace": "mt_depthwise_conv2d_fwd_s8_dsp"}
#: kernels whose accumulators are per channel (depthwise): halfword multiplies instead of SMLAD
HALFWORD_MACS = {"mt_depthwise_conv2d_fwd_s8", "mt_depthwise_conv2d_bwd_input_s16"}


@pytest.mark.skipif(SANITIZE, reason="host sanitizer run only")
@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m7", "cortex-m33"])
def test_cross_compile_dsp_instructions(target, tmp_path):
    """The real-instruction path: -DMT_USE_DSP, strict warnings; every MAC kernel's object contains
    SMLAD (and the SXTB16/SXTAB16 unpacking), no soft-float or libc calls."""
    if shutil.which("arm-none-eabi-objdump") is None:
        pytest.skip("arm-none-eabi-objdump not installed")
    objs = cross_compile_check(DSP_SOURCES + [BENCH_SOURCE], target, extra_flags=STRICT + ("-DMT_USE_DSP",),
                               out_dir=tmp_path)
    report = {}
    for src, obj in zip(DSP_SOURCES, objs):
        counts = _objdump_counts(obj)
        report[src.stem] = counts
        kernel = src.stem[: -len("_dsp")]
        undefined = subprocess.run(["arm-none-eabi-nm", "-u", str(obj)], capture_output=True, text=True,
                                   check=True).stdout.split()
        bad = [s for s in undefined if re.match(r"__aeabi_[fd]|__\w+[sd]f\d|malloc|printf|puts", s)]
        assert not bad, f"{src.name}: {bad}"
        if kernel in WRAPPERS:
            assert WRAPPERS[kernel] in undefined, src.name
        elif kernel in HALFWORD_MACS:
            assert counts["smlabb"] + counts["smlatt"] >= 1, f"{src.name}: {counts}"
        else:
            assert counts["smlad"] >= 1, f"{src.name}: {counts}"
            assert counts["sxtb16"] + counts["sxtab16"] >= 1, f"{src.name}: {counts}"
    print(f"\n{target} DSP instruction counts:")
    for stem, counts in report.items():
        print(f"  {stem:45s} " + " ".join(f"{k}={v}" for k, v in counts.items()))


@pytest.mark.skipif(SANITIZE, reason="host sanitizer run only")
@pytest.mark.parametrize("target,defines", [("cortex-m0plus", ()), ("rv32imac", ()),
                                            ("cortex-m4", ("-DMT_USE_DSP", "-DMT_DSP_EMULATE"))])
def test_cross_compile_emulation(target, defines, tmp_path):
    """Without the DSP extension (or with MT_DSP_EMULATE) the variants compile to the portable
    emulation: no SMLAD there."""
    objs = cross_compile_check(DSP_SOURCES + [BENCH_SOURCE], target, extra_flags=STRICT + defines, out_dir=tmp_path)
    assert len(objs) == len(DSP_SOURCES) + 1
    if target.startswith("cortex") and shutil.which("arm-none-eabi-objdump"):
        assert all(_objdump_counts(o)["smlad"] == 0 for o in objs)


def test_bench_list(lib):
    """The benchmark hook: one entry per MT_DSP_KERNELS kernel, in order, with both addresses."""

    class Entry(ct.Structure):
        _fields_ = [("name", ct.c_char_p), ("portable", ct.c_void_p), ("dsp", ct.c_void_p)]

    count = ct.c_int32.in_dll(lib, "mt_dsp_bench_count").value
    table = (Entry * count).in_dll(lib, "mt_dsp_bench_list")
    assert [e.name.decode() for e in table] == KERNEL_NAMES
    for e in table:
        name = e.name.decode()
        assert e.portable == ct.cast(getattr(lib, name), ct.c_void_p).value
        assert e.dsp == ct.cast(getattr(lib, name + "_dsp"), ct.c_void_p).value


@pytest.mark.skipif(SANITIZE, reason="already running under the sanitizers")
def test_under_sanitizers():
    if not Path(subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True,
                               text=True).stdout.strip()).is_file():
        pytest.skip("libasan not installed")
    proc = run_sanitized_pytest(Path(__file__), "-k", "not test_under_sanitizers and not cross", timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:]
    assert " passed" in proc.stdout
