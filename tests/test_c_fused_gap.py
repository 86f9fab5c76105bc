"""Fused mean <- pointwise conv2d backward (mt_mean_pointwise_bwd_s16, mt_kernels_fused.h) against
the unfused kernel sequence it replaces, both compiled natively:

    mt_mean_bwd_input_s16 -> mt_act_mask_apply_s16 -> mt_bias_update_s32 (optional)
    -> mt_pointwise_conv2d_bwd_input_s16 (gs aliasing G or separate, acc scratch or two passes)

A small C harness (``HARNESS``) runs the sequence on a materialised G [N*H*W, C]; the fused kernel
runs in both of its modes (single MAC pass / two passes) on the same inputs. Everything must be the
same integers: the status, gx and gx_e, the updated bias and velocity, the rng state. Scratch and gx
are followed by guard bytes that must stay untouched (and the sanitizer re-run checks the rest).
Random shapes (N 1-2, H, W 1-5, C 1-300, Cin 1-130), masks (none, all 0, all 1, random densities,
whole channels / pixels / samples masked), gradients (zero, small, int16 extremes), weights (int8
extremes, split SRAM/flash), bias slices 0..C with lr != 0 and lr == 0, momentum, narrow clamps.
"""
from __future__ import annotations

import ctypes as ct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cbuild  # noqa: E402
from cbuild import CACHE, KERNELS, PEDANTIC, SANITIZE, cross_compile_check, load, ptr, run_sanitized_pytest  # noqa: E402

from microtrain.compiler import gradfmt  # noqa: E402

FUSED = KERNELS / "mt_mean_pointwise_bwd_s16.c"
UNFUSED = [KERNELS / f"{s}.c" for s in ("mt_mean_bwd_input_s16", "mt_act_mask_apply_s16", "mt_bias_update_s32",
                                        "mt_pointwise_conv2d_bwd_input_s16", "mt_fully_connected_bwd_input_s16",
                                        "mt_grad_renormalize_s32")]
INT32_MAX = (1 << 31) - 1
BIAS, STOCHASTIC = 2, 1
GUARD = 64  # guard bytes after scratch and gx

HARNESS = r"""
#include "mt_kernels_fused.h"

/* the unfused sequence on a materialised G [P, C] (gs: separate scratch or NULL = in place in G;
 * acc: scratch or NULL = two passes) */
int ref_mean_pointwise(const mt_conv_train_params *p, int32_t inv_mult, int32_t inv_shift,
                       const mt_sgd_params *u, mt_sgd_state *st, int32_t rows, const int16_t *g,
                       int32_t g_e, const uint8_t *mask, const int8_t *w, int32_t *bias, int16_t *G,
                       int16_t *gs, int32_t *acc, int16_t *gx, int32_t *gx_e)
{
    const int32_t pixels = p->out.n * p->out.h * p->out.w, c = p->out.c;
    int32_t ge = 0;
    mt_status r = mt_mean_bwd_input_s16(&p->out, inv_mult, inv_shift, g, g_e, G, &ge);
    if (r != MT_OK) {
        return (int)r;
    }
    if (mask != NULL && (r = mt_act_mask_apply_s16(pixels * c, mask, G)) != MT_OK) {
        return (int)r;
    }
    if (u != NULL && rows > 0 &&
        (r = mt_bias_update_s32(u, st, pixels, c, rows, G, ge, bias, NULL, NULL)) != MT_OK) {
        return (int)r;
    }
    return (int)mt_pointwise_conv2d_bwd_input_s16(p, gs != NULL ? gs : G, acc, G, ge, w, gx, gx_e);
}
"""

I8, I16, I32, U8, U32 = ct.c_int8, ct.c_int16, ct.c_int32, ct.c_uint8, ct.c_uint32
P = ct.POINTER


class Dims(ct.Structure):
    _fields_ = [("n", I32), ("h", I32), ("w", I32), ("c", I32)]


class HW(ct.Structure):
    _fields_ = [("h", I32), ("w", I32)]


class Padding(ct.Structure):
    _fields_ = [("top", I32), ("left", I32), ("bottom", I32), ("right", I32)]


class WSplit(ct.Structure):
    _fields_ = [("tail", P(I8)), ("rows", I32)]


class ConvParams(ct.Structure):
    _fields_ = [("in_", Dims), ("out", Dims), ("kernel", HW), ("stride", HW), ("dilation", HW),
                ("padding", Padding), ("in_zp", I32), ("x_mult", I32), ("x_shift", I32),
                ("x_bits", I32), ("w_mult", P(I32)), ("w_shift", I32), ("w_bits", I32), ("split", WSplit)]


class SgdParams(ct.Structure):
    _fields_ = [("mult", P(I32)), ("shift", I32), ("lr_mult", I32), ("lr_shift", I32),
                ("frac_bits", I32), ("mu", I32)]


class SgdState(ct.Structure):
    _fields_ = [("kind", I32), ("master", P(I16)), ("rng", P(U32)), ("velocity", P(I32)),
                ("lo", I32), ("hi", I32)]


@pytest.fixture(scope="module")
def lib():
    src = CACHE / "shims" / "mt_fused_gap_harness.c"
    src.parent.mkdir(parents=True, exist_ok=True)
    if not src.exists() or src.read_text() != HARNESS:
        tmp = src.with_suffix(f".{np.random.default_rng().integers(1 << 30)}.tmp")
        tmp.write_text(HARNESS)
        tmp.replace(src)
    so = load(UNFUSED + [FUSED, src], "fused_gap",
              extra_flags=PEDANTIC + ("-Wl,--no-undefined",) + (("-O1",) if SANITIZE else ()))
    so.mt_mean_pointwise_bwd_s16_scratch_bytes.restype = ct.c_size_t
    so.mt_mean_pointwise_bwd_s16_scratch_bytes.argtypes = [P(ConvParams), ct.c_int]
    so.mt_mean_pointwise_bwd_s16.restype = ct.c_int
    so.mt_mean_pointwise_bwd_s16.argtypes = [P(ConvParams), I32, I32, P(SgdParams), P(SgdState), I32, P(I32),
                                             ct.c_int, P(I16), I32, P(U8), P(I8), P(I32), P(I16), P(I32)]
    so.ref_mean_pointwise.restype = ct.c_int
    so.ref_mean_pointwise.argtypes = [P(ConvParams), I32, I32, P(SgdParams), P(SgdState), I32, P(I16), I32,
                                      P(U8), P(I8), P(I32), P(I16), P(I16), P(I32), P(I16), P(I32)]
    return so


# ---- random cases ----------------------------------------------------------------------------------
def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def rand_grad(rng, shape):
    kind = _pick(rng, ["zero", "small", "small", "medium", "medium", "full", "full", "extreme", "sparse", "one"])
    if kind == "zero":
        return np.zeros(shape, np.int16)
    if kind == "small":
        g = rng.integers(-3, 4, shape)
    elif kind == "medium":
        g = rng.integers(-2000, 2001, shape)
    elif kind == "full":
        g = rng.integers(-32768, 32768, shape)
    elif kind == "extreme":
        g = rng.choice([-32768, -32767, 32767, 0, 1, -1], shape)
    elif kind == "sparse":
        g = rng.integers(-32768, 32768, shape) * (rng.random(shape) < 0.05)
    else:  # a single non-zero entry
        g = np.zeros(shape, np.int64)
        g.flat[int(rng.integers(g.size))] = int(rng.choice([-32768, 32767, 1, -1, 12345]))
    return g.astype(np.int16)


def rand_mask(rng, n, h, w, c):
    """(packed bits or None, the 0/1 tensor)"""
    kind = _pick(rng, ["none", "zeros", "ones", "dense", "dense", "half", "half", "sparse", "channels", "pixels",
                       "sample"])
    shape = (n, h, w, c)
    if kind == "none":
        return None, np.ones(shape, np.uint8)
    if kind == "zeros":
        keep = np.zeros(shape, bool)
    elif kind == "ones":
        keep = np.ones(shape, bool)
    else:
        dens = {"dense": 0.95, "half": 0.5, "sparse": 0.05}.get(kind, rng.random())
        keep = rng.random(shape) < dens
        if kind == "channels":  # whole channels masked (some of them in every sample)
            keep[..., rng.random(c) < 0.5] = False
        elif kind == "pixels":
            keep[:, rng.random(h) < 0.5] = False
        elif kind == "sample":
            keep[int(rng.integers(n))] = False
    bits = np.packbits(keep.ravel(), bitorder="little")
    return np.ascontiguousarray(bits, dtype=np.uint8), keep.astype(np.uint8)


def rand_w_mult(rng, c):
    kind = _pick(rng, ["aligned", "aligned", "spread", "zeros"])
    if kind == "aligned":  # per-channel scales within a factor 2^6: align_multipliers
        reals = np.exp(rng.uniform(-4, 0, c)) * 2.0 ** float(rng.integers(-12, 0))
        mult, shift = gradfmt.align_multipliers(reals)
    elif kind == "spread":  # raw Q31 values (some tiny, some 0)
        mult = rng.integers(0, 1 << 31, c) >> rng.integers(0, 31, c)
        mult[rng.random(c) < 0.1] = 0
        shift = int(rng.integers(-14, 2))
    else:
        mult = np.zeros(c, np.int64)
        mult[int(rng.integers(c))] = 1 << 30
        shift = int(rng.integers(-10, 1))
    return np.ascontiguousarray(mult, dtype=np.int32), int(shift)


def rand_weights(rng, c, cin):
    kind = _pick(rng, ["uniform", "extreme", "small"])
    if kind == "uniform":
        w = rng.integers(-128, 128, (c, cin))
    elif kind == "extreme":
        w = rng.choice([-128, 127, -127, 0], (c, cin))
    else:
        w = rng.integers(-3, 4, (c, cin))
    return w.astype(np.int8)


class Case:
    """One set of inputs; ``run_ref`` / ``run_fused`` return everything observable."""

    def __init__(self, rng, n=None, h=None, w=None, c=None, cin=None):
        self.n = int(rng.integers(1, 3)) if n is None else n
        self.h = int(rng.integers(1, 6)) if h is None else h
        self.w = int(rng.integers(1, 6)) if w is None else w
        if c is None:
            c = int(_pick(rng, [1, 2, 3, 4, 5, 7, 8, 9, int(rng.integers(1, 301)), int(rng.integers(1, 301)),
                                int(rng.integers(200, 301))]))
        if cin is None:
            cin = int(_pick(rng, [1, 2, 3, 5, int(rng.integers(1, 131)), int(rng.integers(1, 131))]))
        self.c, self.cin = c, cin
        self.pixels = self.n * self.h * self.w
        hw = self.h * self.w
        self.inv_mult, self.inv_shift = gradfmt.q31(1.0 / hw)
        if rng.random() < 0.1:  # any Q31 factor
            self.inv_mult, self.inv_shift = int(rng.integers(1 << 30, 1 << 31)), int(rng.integers(-12, 3))
        self.g = rand_grad(rng, (self.n, c))
        self.g_e = int(rng.integers(-40, 10))
        self.mask, self.keep = rand_mask(rng, self.n, self.h, self.w, c)
        self.w_mult, self.w_shift = rand_w_mult(rng, c)
        self.weights = rand_weights(rng, c, cin)
        # split weights: rows [0, split) at w, the rest at a separate tail buffer
        self.split = int(rng.integers(0, c + 1)) if rng.random() < 0.4 else None
        if self.split is not None:
            self.w_head = np.ascontiguousarray(self.weights[:self.split]).reshape(-1) if self.split else np.zeros(1, np.int8)
            self.w_tail = np.ascontiguousarray(self.weights[self.split:]).reshape(-1) if self.split < c else np.zeros(1, np.int8)
        else:
            self.w_head, self.w_tail = np.ascontiguousarray(self.weights).reshape(-1), None
        # bias update
        self.train = rng.random() < 0.75
        self.rows = int(_pick(rng, [0, 1, c, int(rng.integers(0, c + 1)), int(rng.integers(0, c + 1))]))
        self.u_mult = np.ascontiguousarray(
            (rng.integers(1 << 30, 1 << 31, max(self.rows, 1)) >> rng.integers(0, 4, max(self.rows, 1))), dtype=np.int32)
        self.u_shift = int(rng.integers(-8, 12))
        self.lr_zero = rng.random() < 0.2
        self.lr_mult = 0 if self.lr_zero else int(rng.integers(1 << 30, 1 << 31))
        self.lr_shift = int(rng.integers(-14, -2))
        self.mu = int(rng.integers(0, 1 << 31)) if rng.random() < 0.4 else 0
        self.kind = BIAS if (not self.lr_zero or rng.random() < 0.5) else STOCHASTIC
        self.velocity = rng.integers(-(1 << 30), 1 << 30, c).astype(np.int32) if self.mu else None
        self.rng_state = int(rng.integers(1, 1 << 32))
        if rng.random() < 0.3:
            self.lo, self.hi = -int(rng.integers(1, 1 << 20)), int(rng.integers(1, 1 << 20))
        else:
            self.lo, self.hi = -INT32_MAX + (int(rng.integers(0, 3)) if rng.random() < 0.5 else 0), INT32_MAX
        self.bias = rng.integers(-(1 << 31), 1 << 31, c).astype(np.int32)
        if rng.random() < 0.3:
            self.bias[:] = rng.choice([-INT32_MAX, INT32_MAX, 0], c)

    def params(self) -> ConvParams:
        p = ConvParams()
        p.in_ = Dims(self.n, self.h, self.w, self.cin)
        p.out = Dims(self.n, self.h, self.w, self.c)
        p.kernel, p.stride, p.dilation = HW(1, 1), HW(1, 1), HW(1, 1)
        p.padding = Padding(0, 0, 0, 0)
        p.in_zp, p.x_mult, p.x_shift, p.x_bits = -128, 1 << 30, -7, 8
        p.w_mult, p.w_shift, p.w_bits = ptr(self.w_mult, I32), self.w_shift, 7
        if self.split is not None:
            p.split = WSplit(ptr(self.w_tail, I8), self.split)
        else:
            p.split = WSplit(None, 0)
        self._keep = (p,)
        return p

    def update(self):
        """(u, st, bias, velocity, rng) fresh copies; u None when the bias is not trained"""
        bias = self.bias.copy()
        vel = self.velocity.copy() if self.velocity is not None else None
        rng = np.array([self.rng_state], np.uint32)
        if not self.train:
            return None, None, bias, vel, rng
        u = SgdParams(ptr(self.u_mult, I32), self.u_shift, self.lr_mult, self.lr_shift, 16, self.mu)
        st = SgdState(self.kind, None, ptr(rng, U32), ptr(vel, I32) if vel is not None else None, self.lo, self.hi)
        return u, st, bias, vel, rng

    def _mask_ptr(self):
        return ptr(self.mask, U8) if self.mask is not None else None

    def run_ref(self, lib, gs_separate: bool, use_acc: bool, p=None):
        p = self.params() if p is None else p
        u, st, bias, vel, rng = self.update()
        G = np.zeros(self.pixels * self.c, np.int16)
        gs = np.zeros(self.pixels * self.c, np.int16) if gs_separate else None
        acc = np.zeros(self.pixels * self.cin, np.int32) if use_acc else None
        gx = np.full(self.pixels * self.cin, 0x5A5A, np.int16)
        gxe = I32(-999)
        st_ = lib.ref_mean_pointwise(ct.byref(p), self.inv_mult, self.inv_shift, ct.byref(u) if u else None,
                                     ct.byref(st) if st else None, self.rows, ptr(self.g, I16), self.g_e,
                                     self._mask_ptr(), ptr(self.w_head, I8), ptr(bias, I32), ptr(G, I16),
                                     ptr(gs, I16) if gs is not None else None,
                                     ptr(acc, I32) if acc is not None else None, ptr(gx, I16), ct.byref(gxe))
        return st_, gx, gxe.value, bias, vel, int(rng[0])

    def run_fused(self, lib, single_pass: bool, p=None):
        p = self.params() if p is None else p
        u, st, bias, vel, rng = self.update()
        nbytes = lib.mt_mean_pointwise_bwd_s16_scratch_bytes(ct.byref(p), int(single_pass))
        scratch = np.full((nbytes + GUARD + 3) // 4, 0x3C3C3C3C, np.int32)
        gx = np.full(self.pixels * self.cin + GUARD // 2, 0x5A5A, np.int16)
        gxe = I32(-999)
        st_ = lib.mt_mean_pointwise_bwd_s16(ct.byref(p), self.inv_mult, self.inv_shift, ct.byref(u) if u else None,
                                            ct.byref(st) if st else None, self.rows, ptr(scratch, I32),
                                            int(single_pass), ptr(self.g, I16), self.g_e, self._mask_ptr(),
                                            ptr(self.w_head, I8), ptr(bias, I32), ptr(gx, I16), ct.byref(gxe))
        guard = scratch.view(np.uint8)[nbytes:]
        assert np.all(guard == 0x3C), "scratch overrun"
        assert np.all(gx[self.pixels * self.cin:] == 0x5A5A), "gx overrun"
        return st_, gx[:self.pixels * self.cin], gxe.value, bias, vel, int(rng[0]), nbytes


def check_case(lib, case: Case, rng) -> None:
    ref = case.run_ref(lib, gs_separate=bool(rng.random() < 0.5), use_acc=bool(rng.random() < 0.5))
    for single in (False, True):
        got = case.run_fused(lib, single)
        what = (f"N{case.n} H{case.h} W{case.w} C{case.c} Cin{case.cin} rows{case.rows} train{case.train} "
                f"lr0{case.lr_zero} kind{case.kind} split{case.split} mask{case.mask is not None} single{single}")
        assert got[0] == ref[0], what
        if ref[0] != 0:
            continue
        np.testing.assert_array_equal(got[1], ref[1], err_msg=what)
        assert got[2] == ref[2], what
        np.testing.assert_array_equal(got[3], ref[3], err_msg=what)
        if ref[4] is not None:
            np.testing.assert_array_equal(got[4], ref[4], err_msg=what)
        assert got[5] == ref[5], what
        if single:  # the documented scratch size
            c4 = (case.n * case.c * 2 + 3) // 4 * 4
            want = case.cin * 4 + c4 + case.pixels + (case.pixels * case.cin + 7) // 8
            assert got[6] == (want + 3) // 4 * 4
        else:
            assert got[6] == case.cin * 4 + (case.n * case.c * 2 + 3) // 4 * 4


# ---- tests -------------------------------------------------------------------------------------------
CASES = 60 if SANITIZE else 4000


def test_random_cases_bit_exact(lib):
    rng = np.random.default_rng(20240917)
    for _ in range(CASES):
        check_case(lib, Case(rng), rng)


def test_unfused_variants_agree(lib):
    """The oracle itself: the four ways of running the unfused pointwise kernel give one answer."""
    rng = np.random.default_rng(7)
    for _ in range(10 if SANITIZE else 150):
        case = Case(rng)
        outs = [case.run_ref(lib, gs, acc) for gs in (False, True) for acc in (False, True)]
        for o in outs[1:]:
            assert o[0] == outs[0][0]
            np.testing.assert_array_equal(o[1], outs[0][1])
            assert o[2] == outs[0][2]
            np.testing.assert_array_equal(o[3], outs[0][3])


@pytest.mark.parametrize("shape", [(1, 1, 1, 1, 1), (2, 5, 5, 300, 130), (1, 4, 4, 300, 1), (2, 1, 1, 1, 130),
                                   (1, 2, 3, 8, 8), (2, 3, 1, 16, 3), (1, 5, 5, 1, 17)])
def test_edge_shapes(lib, shape):
    rng = np.random.default_rng(sum(shape))
    for _ in range(4 if SANITIZE else 40):
        check_case(lib, Case(rng, *shape), rng)


def test_extremes(lib):
    """int16 min/max gradients, all-unmasked, -128/127 weights, every bias channel trained: the
    headroom and renormalisation shifts at their largest."""
    rng = np.random.default_rng(3)
    for _ in range(4 if SANITIZE else 60):
        case = Case(rng, c=int(rng.integers(1, 301)), cin=int(rng.integers(1, 131)))
        case.g[:] = rng.choice([-32768, 32767], case.g.shape)
        case.weights[:] = rng.choice([-128, 127], case.weights.shape)
        case.split = None
        case.w_head, case.w_tail = np.ascontiguousarray(case.weights).reshape(-1), None
        case.w_mult[:] = (1 << 31) - 1
        if rng.random() < 0.5:
            case.mask, case.keep = None, np.ones_like(case.keep)
        case.train, case.rows, case.lr_zero, case.kind = True, case.c, False, BIAS
        case.lr_mult = (1 << 31) - 1
        case.u_mult = np.full(case.c, (1 << 31) - 1, np.int32)
        check_case(lib, case, rng)


def test_large_mean_window(lib):
    """H*W > 65535: the per-(n, c) counts are taken from the mask on demand (no uint16 table)."""
    rng = np.random.default_rng(11)
    for i in range(1 if SANITIZE else 4):
        n = 1 + i % 2
        case = Case(rng, n=n, h=257, w=256, c=int(rng.integers(1, 11)), cin=int(rng.integers(1, 4)))
        keep = rng.random((n, 257, 256, case.c)) < rng.choice([0.5, 0.99])
        case.mask, case.keep = np.packbits(keep.ravel(), bitorder="little"), keep.astype(np.uint8)
        case.train, case.rows, case.lr_zero, case.kind = True, case.c, False, BIAS
        case.lr_mult = int(rng.integers(1 << 30, 1 << 31))
        case.u_mult = np.full(case.c, 1 << 30, np.int32)
        case.g[:] = rng.integers(-32768, 32768, case.g.shape)
        check_case(lib, case, rng)


def test_errors_write_nothing(lib):
    rng = np.random.default_rng(5)
    case = Case(rng, n=1, h=2, w=2, c=6, cin=5)
    case.train, case.rows, case.lr_zero, case.lr_mult = True, 3, False, 1 << 30
    case.kind = STOCHASTIC  # a bias update needs MT_APPLY_BIAS
    for single in (False, True):
        st_, gx, gxe, bias, *_ = case.run_fused(lib, single)
        assert st_ == -1 and gxe == -999 and np.all(gx == 0x5A5A) and np.array_equal(bias, case.bias)
    assert case.run_ref(lib, False, True)[0] == -1
    case.kind = BIAS
    case.rows = case.c + 1
    assert case.run_fused(lib, True)[0] == -1
    case.rows = 2
    p = case.params()
    p.kernel = HW(3, 3)  # not pointwise
    assert lib.mt_mean_pointwise_bwd_s16_scratch_bytes(ct.byref(p), 1) == 0
    st_, gx, gxe, *_ = case.run_fused(lib, True, p=p)
    assert st_ == -1 and gxe == -999


def test_integer_only_and_cross_compile(tmp_path):
    code = FUSED.read_text() + (cbuild.INCLUDE / "mt_kernels_fused.h").read_text()
    import re
    code = re.sub(r"/\*.*?\*/|//[^\n]*", "", code, flags=re.S)
    assert not re.search(r"\b(float|double|malloc|calloc|realloc|free|printf|stdio)\b", code)
    flags = ("-pedantic", "-Wvla", "-Wshadow", "-Wconversion")
    for target in ("cortex-m4", "cortex-m0plus", "rv32imac"):
        objs = cross_compile_check([FUSED], target, extra_flags=flags, out_dir=tmp_path / target)
        nm = cbuild.CROSS_TARGETS[target][0].replace("gcc", "nm")
        undefined = subprocess.run([nm, "-u", *map(str, objs)], capture_output=True, text=True, check=True).stdout
        assert not re.findall(r"\b(__aeabi_[fd]\w+|__\w+[sd]f\d\b|__\w+[sd]f[23]\w*|malloc|printf|puts)\b", undefined)


@pytest.mark.skipif(SANITIZE, reason="already running under the sanitizers")
def test_under_sanitizers():
    proc = run_sanitized_pytest(Path(__file__), "-k", "not test_under_sanitizers and not cross_compile",
                                timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:]
