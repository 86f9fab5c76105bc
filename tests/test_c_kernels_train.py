"""C training kernels (firmware/src/kernels, mt_kernels_train.h) against the numpy training engine.

Every kernel runs on the same integers as its numpy counterpart and must give the same integers
(``np.testing.assert_array_equal``, never a tolerance): gradient mantissas AND exponents, updated
int8 weights, int16 masters, int32 velocities and biases, the xorshift32 state, losses and
probabilities. Reference functions:

  gradfmt.renormalize / headroom / mul_q31 / add        mt_grad_*
  _grad_int.act_mask (+ np.packbits, little bit order)   mt_act_mask_pack_s8 / _apply_s16
  _grad_int.sgd_delta, Int8Trainer._apply                mt_sgd_delta_s16, mt_sgd_update_s8/_s32
  <Op>.backward_int8 (+ Int8Trainer._apply)              mt_<op>_bwd_input_s16, mt_<op>_update_s8,
                                                         mt_bias_update_s32
  loss_int.softmax_cross_entropy_int                     mt_softmax_ce_s8 / _acc_s32
  train_float.fmix32 / perturbation_seed / rademacher    mt_fmix32, mt_fg_perturbation_seed,
                                                         mt_rademacher_*
  Int8Trainer.perturb, _forward_gradient's update        mt_fg_perturb_s8/_s32, mt_fg_update_s8/_s32
  train_int.cosine_factor_q15 / scale_lr / COS_TABLE_Q15 mt_cosine_factor_q15, mt_scale_lr_q31

The numpy engine's own functions are called (``Int8Trainer._apply`` / ``perturb`` on a minimal
stand-in object), so the C is compared with exactly what the simulator runs. Under
``MT_SANITIZE=1`` (the sanitizer re-run) the case counts shrink.
"""
from __future__ import annotations

import ctypes as ct
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cbuild  # noqa: E402
from cbuild import KERNELS, PEDANTIC, SANITIZE, cross_compile_check, load, run_sanitized_pytest  # noqa: E402

from microtrain.compiler import fixedpoint as fp  # noqa: E402
from microtrain.compiler import gradfmt  # noqa: E402
from microtrain.compiler.gradfmt import Grad  # noqa: E402
from microtrain.compiler.ir import Graph, Node, QParams, Tensor, verify  # noqa: E402
from microtrain.compiler.ops import registry  # noqa: E402
from microtrain.compiler.ops._grad_int import (act_mask, apply_master_copy, apply_stochastic_round,  # noqa: E402
                                               init_master, prepare_int8_backward, prepare_update,
                                               sgd_delta, xorshift32)
from microtrain.compiler.ops.loss_int import (prepare_softmax_ce_acc, prepare_softmax_ce_int8,  # noqa: E402
                                              softmax_cross_entropy_int)
from microtrain.compiler.ops.quantize import quantize_array  # noqa: E402
from microtrain.compiler.quantize import activation_qparams, bias_qparams, weight_qparams  # noqa: E402
from microtrain.compiler.train_float import FGSlice, fmix32, perturbation_seed, rademacher, row_index  # noqa: E402
from microtrain.compiler.train_int import COS_TABLE_Q15, Int8Trainer, _Slice, cosine_factor_q15, scale_lr  # noqa: E402

INT32_MAX = (1 << 31) - 1
#: randomised repetitions per test (fewer under the sanitizer)
REPS = 2 if SANITIZE else 12

#: the training kernels, one per file (the forward kernels in the same folder are tested elsewhere)
EXPECTED = {
    "mt_act_mask_apply_s16", "mt_act_mask_pack_s8", "mt_add_bwd_input_s16", "mt_avg_pool2d_bwd_input_s16",
    "mt_bias_update_s32", "mt_conv2d_bwd_input_s16", "mt_conv2d_update_s8", "mt_cosine_factor_q15",
    "mt_depthwise_conv2d_bwd_input_s16", "mt_depthwise_conv2d_update_s8", "mt_fg_perturb_s32",
    "mt_fg_perturb_s8", "mt_fg_stream_u32", "mt_fg_update_s32", "mt_fg_update_s8",
    "mt_fully_connected_bwd_input_s16", "mt_fully_connected_update_s8", "mt_grad_add_s16",
    "mt_grad_headroom_s16", "mt_grad_mul_q31_s16", "mt_grad_mul_q31_s32", "mt_grad_renormalize_s32",
    "mt_max_pool2d_bwd_input_s16", "mt_mean_bwd_input_s16", "mt_pad_bwd_input_s16",
    "mt_pointwise_conv2d_bwd_input_s16", "mt_pointwise_conv2d_update_s8", "mt_scale_lr_q31",
    "mt_sgd_delta_s16", "mt_sgd_update_s32", "mt_sgd_update_s8", "mt_softmax_ce_acc_s32",
    "mt_softmax_ce_core_s32", "mt_softmax_ce_s8",
}
TRAIN_SOURCES = [KERNELS / f"{stem}.c" for stem in sorted(EXPECTED)]

I8, I16, I32, U8, U32 = ct.c_int8, ct.c_int16, ct.c_int32, ct.c_uint8, ct.c_uint32
P = ct.POINTER


# ---- C structs (mt_kernels_fwd.h / mt_kernels_train.h) -------------------------------------------
class Dims(ct.Structure):
    _fields_ = [("n", I32), ("h", I32), ("w", I32), ("c", I32)]


class HW(ct.Structure):
    _fields_ = [("h", I32), ("w", I32)]


class Padding(ct.Structure):
    _fields_ = [("top", I32), ("left", I32), ("bottom", I32), ("right", I32)]


class Slice(ct.Structure):
    _fields_ = [("outer", I32), ("rows", I32), ("channels", I32), ("inner", I32)]


class SgdParams(ct.Structure):
    _fields_ = [("mult", P(I32)), ("shift", I32), ("lr_mult", I32), ("lr_shift", I32),
                ("frac_bits", I32), ("mu", I32)]


class SgdState(ct.Structure):
    _fields_ = [("kind", I32), ("master", P(I16)), ("rng", P(U32)), ("velocity", P(I32)),
                ("lo", I32), ("hi", I32)]


class WSplit(ct.Structure):
    _fields_ = [("tail", P(ct.c_int8)), ("rows", I32)]


class FcParams(ct.Structure):
    _fields_ = [("batch", I32), ("in_features", I32), ("out_features", I32), ("in_zp", I32),
                ("w_zp", I32), ("x_mult", I32), ("x_shift", I32), ("x_bits", I32),
                ("w_mult", P(I32)), ("w_shift", I32), ("w_bits", I32), ("split", WSplit)]


class ConvParams(ct.Structure):
    _fields_ = [("in_", Dims), ("out", Dims), ("kernel", HW), ("stride", HW), ("dilation", HW),
                ("padding", Padding), ("in_zp", I32), ("x_mult", I32), ("x_shift", I32),
                ("x_bits", I32), ("w_mult", P(I32)), ("w_shift", I32), ("w_bits", I32), ("split", WSplit)]


class PoolParams(ct.Structure):
    _fields_ = [("in_", Dims), ("out", Dims), ("kernel", HW), ("stride", HW), ("padding", Padding),
                ("count_include_pad", I32), ("inv_count", P(I32))]


class CeBatch(ct.Structure):
    _fields_ = [("batch", I32), ("inv_batch_mult", I32), ("inv_batch_shift", I32), ("batch_log2", I32)]


class CeS8Params(ct.Structure):
    _fields_ = [("mult", I32), ("left_shift", I32), ("diff_min", I32), ("b", CeBatch)]


class CeAccParams(ct.Structure):
    _fields_ = [("mult", P(I32)), ("shift", P(I32)), ("frac_bits", I32), ("radius", I32), ("b", CeBatch)]


class Rademacher(ct.Structure):
    _fields_ = [("state", U32), ("pos", U32)]


MASTER, STOCHASTIC, BIAS = 0, 1, 2
S = ct.c_int  # mt_status
SIGNATURES = {
    "mt_grad_renormalize_s32": (S, [I32, P(I32), I32, P(I16), P(I32)]),
    "mt_grad_headroom_s16": (S, [I32, I32, I32, P(I16), P(I32)]),
    "mt_grad_mul_q31_s32": (S, [I32, I32, P(I32), I32, P(I32), I32, P(I16), P(I32)]),
    "mt_grad_mul_q31_s16": (S, [I32, I32, P(I16), I32, P(I32), I32, P(I16), P(I32)]),
    "mt_grad_add_s16": (S, [I32, P(I16), I32, P(I16), I32, P(I16), P(I32)]),
    "mt_act_mask_bytes": (ct.c_size_t, [I32]),
    "mt_act_mask_pack_s8": (S, [I32, P(I8), I32, I32, P(U8)]),
    "mt_act_mask_apply_s16": (S, [I32, P(U8), P(I16)]),
    "mt_sgd_delta_s16": (S, [P(SgdParams), P(Slice), P(I16), I32, P(I32)]),
    "mt_sgd_update_s8": (S, [P(SgdParams), P(SgdState), P(Slice), P(I32), P(I8)]),
    "mt_sgd_update_s32": (S, [P(SgdParams), P(SgdState), P(Slice), P(I32), P(I32)]),
    "mt_fully_connected_bwd_input_s16_scratch_bytes": (ct.c_size_t, [P(FcParams), ct.c_int, ct.c_int]),
    "mt_fully_connected_bwd_input_s16": (S, [P(FcParams), P(I16), P(I32), P(I16), I32, P(I8), P(I16), P(I32)]),
    "mt_fully_connected_update_s8_scratch_bytes": (ct.c_size_t, [P(FcParams), I32]),
    "mt_fully_connected_update_s8": (S, [P(FcParams), P(SgdParams), P(SgdState), I32, P(I32), P(I16), I32,
                                         P(I8), P(I8), P(I16), P(I32)]),
    "mt_conv2d_bwd_input_s16_scratch_bytes": (ct.c_size_t, [P(ConvParams), ct.c_int, ct.c_int]),
    "mt_conv2d_update_s8_scratch_bytes": (ct.c_size_t, [P(ConvParams), I32]),
    "mt_depthwise_conv2d_update_s8_scratch_bytes": (ct.c_size_t, [P(ConvParams), I32]),
    "mt_bias_update_s32": (S, [P(SgdParams), P(SgdState), I32, I32, I32, P(I16), I32, P(I32), P(I16), P(I32)]),
    "mt_max_pool2d_bwd_input_s16": (S, [P(PoolParams), P(I8), P(I16), I32, P(I16), P(I32)]),
    "mt_avg_pool2d_bwd_input_s16": (S, [P(PoolParams), P(I16), I32, P(I16), P(I32)]),
    "mt_mean_bwd_input_s16": (S, [P(Dims), I32, I32, P(I16), I32, P(I16), P(I32)]),
    "mt_add_bwd_input_s16": (S, [P(Dims), P(Dims), P(I16), I32, P(I16), P(I32)]),
    "mt_pad_bwd_input_s16": (S, [P(Dims), P(Dims), P(I32), P(I16), P(I16)]),
    "mt_softmax_ce_scratch_bytes": (ct.c_size_t, [I32, I32]),
    "mt_softmax_ce_s8": (S, [P(CeS8Params), I32, I32, P(I32), P(I8), P(I32), P(I16), P(I32), P(I32), P(I32),
                             P(U8)]),
    "mt_softmax_ce_acc_s32": (S, [P(CeAccParams), I32, I32, P(I32), P(I32), P(I32), P(I16), P(I32), P(I32),
                                  P(I32), P(U8)]),
    "mt_fmix32": (U32, [U32]),
    "mt_fg_perturbation_seed": (U32, [U32, U32, U32]),
    "mt_rademacher_init": (None, [P(Rademacher), U32]),
    "mt_rademacher_skip": (None, [P(Rademacher), U32]),
    "mt_fg_perturb_s8": (S, [P(Slice), P(I16), I32, I32, P(Rademacher), P(I8)]),
    "mt_fg_perturb_s32": (S, [P(Slice), I32, I32, P(Rademacher), P(I32)]),
    "mt_fg_update_s8": (S, [P(SgdParams), P(SgdState), P(Slice), I32, P(I32), P(Rademacher), P(I8)]),
    "mt_fg_update_s32": (S, [P(SgdParams), P(SgdState), P(Slice), I32, P(I32), P(Rademacher), P(I32)]),
    "mt_cosine_factor_q15": (I32, [I32, I32]),
    "mt_scale_lr_q31": (None, [I32, I32, I32, P(I32), P(I32)]),
}
for _op in ("conv2d", "depthwise_conv2d", "pointwise_conv2d"):
    SIGNATURES[f"mt_{_op}_bwd_input_s16"] = (S, [P(ConvParams), P(I16), P(I32), P(I16), I32, P(I8), P(I16), P(I32)])
    SIGNATURES[f"mt_{_op}_update_s8"] = (S, [P(ConvParams), P(SgdParams), P(SgdState), I32, P(I32), P(I16), I32,
                                           P(I8), P(I8), P(I16), P(I32)])


@pytest.fixture(scope="module")
def lib():
    # the sanitized build (MT_SANITIZE=1 child) at -O1: a third faster to compile, same checks
    lib = load(TRAIN_SOURCES, "kernels_train", extra_flags=PEDANTIC + (("-O1",) if SANITIZE else ()))
    for name, (res, args) in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype = res
        fn.argtypes = args
    return lib


def a16(x) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, dtype=np.int64), dtype=np.int16)


def a32(x) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x, dtype=np.int64), dtype=np.int32)


def p16(a):
    return cbuild.ptr(a, I16)


def p32(a):
    return cbuild.ptr(a, I32)


def p8(a):
    return cbuild.ptr(a, I8)


def out_e():
    return ct.c_int32(0)


def rand_mant(rng, shape, top=None) -> np.ndarray:
    """int16 mantissas of a random magnitude (2^0 .. 2^15 - 1), sometimes sparse."""
    top = int(2 ** rng.integers(0, 16) - 1) if top is None else top
    m = rng.integers(-top, top + 1, size=shape)
    if rng.random() < 0.3:
        m = np.where(rng.random(shape) < 0.5, 0, m)
    return m.astype(np.int64)


def assert_grad(m_c: np.ndarray, e_c: int, g: Grad, what: str = "") -> None:
    np.testing.assert_array_equal(m_c.astype(np.int64).reshape(g.m.shape), g.m, err_msg=f"{what} mantissa")
    assert e_c == g.e, f"{what} exponent: C {e_c}, numpy {g.e}"


# =================================================================================================
# Gradient format primitives
# =================================================================================================
def test_grad_renormalize(lib):
    rng = np.random.default_rng(1)
    cases = [np.array([65535, -1]), np.array([(1 << 16) + 2, -(1 << 16) - 2, 3 << 14]),
             np.array([INT32_MAX, -INT32_MAX, 0]), np.zeros(5, np.int64), np.array([32767, -32767]),
             np.array([32768]), np.array([-(1 << 31) + 1, 1])]
    for _ in range(REPS * 4):
        bits = int(rng.integers(0, 32))
        cases.append(rng.integers(-(1 << bits) + 1, 1 << bits, size=int(rng.integers(1, 40))))
    for acc in cases:
        e = int(rng.integers(-80, 40))
        a = a32(acc)
        m = np.zeros(a.size, np.int16)
        eo = out_e()
        assert lib.mt_grad_renormalize_s32(a.size, p32(a), e, p16(m), ct.byref(eo)) == 0
        assert_grad(m, eo.value, gradfmt.renormalize(acc, e), "renormalize")


def test_grad_headroom(lib):
    rng = np.random.default_rng(2)
    for _ in range(REPS * 4):
        m0 = rand_mant(rng, int(rng.integers(1, 50)))
        bits = int(rng.integers(0, 10))
        fan = int(rng.choice([1, 2, 3, 7, 64, 255, 256, 257, 4096, 1 << 20]))
        e = int(rng.integers(-60, 10))
        m = a16(m0)
        eo = ct.c_int32(e)
        assert lib.mt_grad_headroom_s16(bits, fan, m.size, p16(m), ct.byref(eo)) == 0
        assert_grad(m, eo.value, gradfmt.headroom(Grad(m0, e), bits, fan), "headroom")
    m0 = np.full(4, 32767)  # the documented example: 15 + 8 + 12 -> 4 bits
    m = a16(m0)
    eo = ct.c_int32(0)
    lib.mt_grad_headroom_s16(8, 4096, 4, p16(m), ct.byref(eo))
    assert eo.value == 4 and gradfmt.headroom(Grad(m0, 0), 8, 4096).e == 4


@pytest.mark.parametrize("width", [16, 32])
def test_grad_mul_q31(lib, width):
    rng = np.random.default_rng(3 + width)
    for k in range(REPS * 3):
        ch = int(rng.integers(1, 7))
        rows = int(rng.integers(1, 6))
        if width == 16:
            acc = rand_mant(rng, (rows, ch)) if k else np.zeros((rows, ch), np.int64)
        else:
            bits = int(rng.integers(1, 32))
            acc = rng.integers(-(1 << bits) + 1, 1 << bits, size=(rows, ch))
        reals = np.exp(rng.uniform(-12, 6, size=ch))
        if rng.random() < 0.3:
            reals[0] *= 2.0 ** -40  # a channel that aligns to 0
        mult, shift = gradfmt.align_multipliers(reals)
        e = int(rng.integers(-40, 10))
        mm = a32(mult)
        out = np.zeros(acc.size, np.int16)
        eo = out_e()
        if width == 16:
            src = a16(acc)
            rc = lib.mt_grad_mul_q31_s16(acc.size, ch, p16(src), e, p32(mm), shift, p16(out), ct.byref(eo))
        else:
            src = a32(acc)
            rc = lib.mt_grad_mul_q31_s32(acc.size, ch, p32(src), e, p32(mm), shift, p16(out), ct.byref(eo))
        assert rc == 0
        assert_grad(out, eo.value, gradfmt.mul_q31(acc, e, mult, shift), f"mul_q31_s{width}")
    # in place (s16)
    acc = rand_mant(rng, 12)
    m1, s1 = gradfmt.q31(0.3)
    mm = a32([m1])
    buf = a16(acc)
    eo = out_e()
    lib.mt_grad_mul_q31_s16(12, 1, p16(buf), 3, p32(mm), s1, p16(buf), ct.byref(eo))
    assert_grad(buf, eo.value, gradfmt.mul_q31(acc, 3, m1, s1), "mul_q31 in place")


def test_grad_add(lib):
    rng = np.random.default_rng(4)
    for k in range(REPS * 4):
        n = int(rng.integers(1, 30))
        a, b = rand_mant(rng, n), rand_mant(rng, n)
        if k == 0:
            a, b = np.full(n, 32767), np.full(n, 32767)  # carries into a renormalisation
        ea = int(rng.integers(-50, 10))
        eb = ea + int(rng.choice([0, 1, 3, 15, 16, 31, 32, 40, -1, -14, -33]))
        want = gradfmt.add(Grad(a, ea), Grad(b, eb))
        am, bm, out = a16(a), a16(b), np.zeros(n, np.int16)
        eo = out_e()
        assert lib.mt_grad_add_s16(n, p16(am), ea, p16(bm), eb, p16(out), ct.byref(eo)) == 0
        assert_grad(out, eo.value, want, "add")
        lib.mt_grad_add_s16(n, p16(am), ea, p16(bm), eb, p16(am), ct.byref(eo))  # out aliases a
        assert_grad(am, eo.value, want, "add in place")


# =================================================================================================
# Activation masks as bits
# =================================================================================================
def pack_mask(keep: np.ndarray) -> np.ndarray:
    """The C packing: element i is bit (i & 7) of byte i >> 3 (LSB first), row-major."""
    return np.packbits(np.asarray(keep, bool).ravel(), bitorder="little")


def unpack_mask(bits: np.ndarray, size: int) -> np.ndarray:
    return np.unpackbits(np.asarray(bits, np.uint8), bitorder="little")[:size].astype(bool)


@pytest.mark.parametrize("act", ["relu", "relu6"])
def test_act_mask_bits(lib, act):
    rng = np.random.default_rng(5 if act == "relu" else 6)
    for _ in range(REPS):
        shape = tuple(int(d) for d in rng.integers(1, 6, size=int(rng.integers(1, 5))))
        y = rng.integers(-128, 128, size=shape).astype(np.int8)
        p = {"act_min": int(rng.integers(-128, 0)), "act_max": int(rng.integers(0, 128))}
        lo, hi = p["act_min"], (128 if act == "relu" else p["act_max"])
        size = y.size
        nbytes = lib.mt_act_mask_bytes(size)
        assert nbytes == (size + 7) // 8
        bits = np.full(nbytes, 0xAA, np.uint8)
        assert lib.mt_act_mask_pack_s8(size, p8(y), lo, hi, cbuild.ptr(bits, U8)) == 0
        ones = Grad(np.ones(shape, np.int64), 0)  # act_mask of ones is the keep mask itself
        keep = act_mask(ones, y, act, p).m.astype(bool)
        np.testing.assert_array_equal(bits, pack_mask(keep))
        np.testing.assert_array_equal(unpack_mask(bits, size).reshape(shape), keep)
        gy = Grad(rand_mant(rng, shape, 32767), int(rng.integers(-30, 0)))
        want = act_mask(gy, y, act, p)
        m = a16(gy.m)
        assert lib.mt_act_mask_apply_s16(size, cbuild.ptr(bits, U8), p16(m)) == 0
        np.testing.assert_array_equal(m.reshape(shape), want.m)


# =================================================================================================
# SGD: sgd_delta, appliers, momentum (through Int8Trainer._apply itself)
# =================================================================================================
def slice_geom(shape: tuple, axis: int, rows: int) -> tuple[int, int, int, int]:
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    return outer, rows, shape[axis], inner


class Update:
    """One trained slice: the numpy engine's state and the C state side by side."""

    def __init__(self, rng, w_full: np.ndarray, role: str, axis: int, rows: int, scales: np.ndarray,
                 lr: float, remedy: str = "master", momentum: bool = False, qas: bool = True,
                 lo: int | None = None, hi: int | None = None, fresh_velocity: bool = False):
        self.role, self.axis, self.rows = role, axis, rows
        self.name = "t"
        self.w = np.array(w_full, copy=True)
        self.index = row_index(axis, rows, self.w.ndim)
        self.upd = prepare_update(np.asarray(scales, np.float64)[:rows], 1.0, qas)
        self.lr = gradfmt.q31(lr)
        if lo is None:
            lo, hi = (-127, 127) if role == "weight" else (-INT32_MAX, INT32_MAX)
        self.lo, self.hi = lo, hi
        self.master_on = role == "weight" and remedy == "master"
        sl = self.w[self.index]
        self.master = init_master(sl) if self.master_on else None
        if self.master_on and rng.random() < 0.5:  # a master with sub-LSB history
            self.master = np.clip(self.master + rng.integers(-128, 128, size=sl.shape), lo << 8, hi << 8)
            self.w[self.index] = fp.rounding_divide_by_pot(self.master, 8).astype(self.w.dtype)
        self.mu = int(rng.integers(1, 1 << 31)) if momentum else 0
        self.velocity = None
        if momentum and not fresh_velocity:
            self.velocity = rng.integers(-(1 << 30), 1 << 30, size=sl.shape).astype(np.int64)
        self.rng_state = int(rng.integers(1, 1 << 32))
        # C side
        self.c_w = np.ascontiguousarray(self.w.copy())
        self.c_master = a16(self.master) if self.master_on else np.zeros(1, np.int16)
        self.c_vel = a32(self.velocity if self.velocity is not None else np.zeros(sl.shape))
        self.c_rng = np.array([self.rng_state], np.uint32)
        self.c_mult = a32(self.upd["mult"])
        self.params = SgdParams(p32(self.c_mult), int(self.upd["shift"]), int(self.lr[0]), int(self.lr[1]),
                                16, self.mu)
        kind = BIAS if role == "bias" else (MASTER if self.master_on else STOCHASTIC)
        self.state = SgdState(kind, p16(self.c_master), cbuild.ptr(self.c_rng, U32),
                              p32(self.c_vel) if momentum else None, lo, hi)
        self.slice = Slice(*slice_geom(self.w.shape, axis, rows))

    def engine_apply(self, g: Grad) -> None:
        """Int8Trainer._apply on a stand-in holding this slice."""
        s = _Slice(self.name, self.role, "bp", self.axis, self.rows, self.index, self.upd, self.lo, self.hi,
                   self.master_on)
        fake = SimpleNamespace(slices={self.name: s}, mu_q31=self.mu,
                               _velocity={} if self.velocity is None else {self.name: self.velocity},
                               params={self.name: self.w},
                               masters={self.name: self.master} if self.master_on else {},
                               rng_state=self.rng_state)
        Int8Trainer._apply(fake, self.name, g, self.lr)
        self.w = fake.params[self.name]
        if self.master_on:
            self.master = fake.masters[self.name]
        self.velocity = fake._velocity.get(self.name, self.velocity)
        self.rng_state = fake.rng_state

    def check(self, what: str = "") -> None:
        np.testing.assert_array_equal(self.c_w, self.w, err_msg=f"{what}: parameters")
        if self.master_on:
            np.testing.assert_array_equal(self.c_master.reshape(self.master.shape), self.master,
                                          err_msg=f"{what}: master")
        if self.mu:
            np.testing.assert_array_equal(self.c_vel.reshape(self.velocity.shape), self.velocity,
                                          err_msg=f"{what}: velocity")
        assert int(self.c_rng[0]) == self.rng_state, f"{what}: xorshift32 state"


def test_sgd_delta(lib):
    rng = np.random.default_rng(7)
    for k in range(REPS * 4):
        shape, axis = ((6, 3, 2, 4), 0) if k % 3 else ((1, 2, 3, 5), 3)
        if k % 5 == 4:
            shape, axis = (7,), 0
        rows = int(rng.integers(1, shape[axis] + 1))
        sl_shape = tuple(rows if a == axis else d for a, d in enumerate(shape))
        m = rand_mant(rng, sl_shape) if k % 7 else np.zeros(sl_shape, np.int64)
        e = int(rng.integers(-70, 25))  # tiny to saturating
        scales = np.exp(rng.uniform(-9, 0, size=shape[axis]))
        upd = prepare_update(scales[:rows], 1.0, qas=bool(k % 2))
        upd["lr_mult"], upd["lr_shift"] = gradfmt.q31(float(np.exp(rng.uniform(-12, 3))))
        want = sgd_delta(Grad(m, e), upd, axis)
        mm = a32(upd["mult"])
        par = SgdParams(p32(mm), int(upd["shift"]), int(upd["lr_mult"]), int(upd["lr_shift"]), 16, 0)
        sl = Slice(*slice_geom(shape, axis, rows))
        src = a16(m)
        out = np.zeros(m.size, np.int32)
        assert lib.mt_sgd_delta_s16(ct.byref(par), ct.byref(sl), p16(src), e, p32(out)) == 0
        np.testing.assert_array_equal(out.reshape(want.shape), want)
    # saturation is reached and tested
    m = np.array([32767, -32767, 5], np.int64)
    upd = prepare_update(np.full(3, 1e-3), 1.0)
    upd["lr_mult"], upd["lr_shift"] = gradfmt.q31(1.0)
    assert np.abs(sgd_delta(Grad(m, 10), upd)).max() == INT32_MAX


@pytest.mark.parametrize("remedy", ["master", "stochastic", "bias"])
def test_sgd_update(lib, remedy):
    rng = np.random.default_rng({"master": 8, "stochastic": 9, "bias": 10}[remedy])
    for k in range(REPS * 2):
        if remedy == "bias":
            shape, axis, role = (int(rng.integers(1, 9)),), 0, "bias"
            w = rng.integers(-(1 << 30), 1 << 30, size=shape).astype(np.int32)
            if k == 1:
                w[0] = INT32_MAX - 3  # saturates
        else:
            shape, axis = ((5, 2, 2, 3), 0) if k % 2 else ((1, 3, 2, 4), 3)
            role = "weight"
            w = rng.integers(-127, 128, size=shape).astype(np.int8)
        rows = int(rng.integers(1, shape[axis] + 1))
        scales = np.exp(rng.uniform(-8, -2, size=shape[axis]))
        up = Update(rng, w, role, axis, rows, scales, float(np.exp(rng.uniform(-10, 1))),
                    remedy="stochastic" if remedy == "stochastic" else "master", momentum=bool(k % 3 == 1),
                    fresh_velocity=bool(k % 2))
        sl_shape = up.w[up.index].shape
        for step in range(3):  # several steps: state carries over
            g = Grad(rand_mant(rng, sl_shape), int(rng.integers(-40, 10)))
            up.engine_apply(g)
            upd = dict(up.upd, lr_mult=up.lr[0], lr_shift=up.lr[1])
            delta = a32(sgd_delta(g, upd, axis))
            fn = lib.mt_sgd_update_s32 if role == "bias" else lib.mt_sgd_update_s8
            ptr_w = p32(up.c_w) if role == "bias" else p8(up.c_w)
            assert fn(ct.byref(up.params), ct.byref(up.state), ct.byref(up.slice), p32(delta), ptr_w) == 0
            up.check(f"{remedy} step {step}")


def test_stochastic_and_master_appliers_directly(lib):
    """The appliers themselves (apply_stochastic_round / apply_master_copy) on extreme deltas."""
    rng = np.random.default_rng(11)
    w = rng.integers(-127, 128, size=(4, 6)).astype(np.int8)
    delta = rng.integers(-(1 << 31) + 1, 1 << 31, size=(4, 6)).astype(np.int64)
    delta[0, :3] = [INT32_MAX, -INT32_MAX, 0]
    delta[1] = rng.integers(-70000, 70000, size=6)
    mult = a32([1 << 30] * 4)
    par = SgdParams(p32(mult), 0, 1 << 30, 0, 16, 0)
    sl = Slice(1, 4, 4, 6)
    state0 = 0x12345678
    want_w, want_state = apply_stochastic_round(w, delta, 16, state0)
    cw, crng = w.copy(), np.array([state0], np.uint32)
    st = SgdState(STOCHASTIC, None, cbuild.ptr(crng, U32), None, -127, 127)
    d32 = a32(delta)
    lib.mt_sgd_update_s8(ct.byref(par), ct.byref(st), ct.byref(sl), p32(d32), p8(cw))
    np.testing.assert_array_equal(cw, want_w)
    assert int(crng[0]) == want_state
    master = np.clip(init_master(w) + rng.integers(-200, 200, size=w.shape), -32512, 32512)
    want_m, want_w = apply_master_copy(master, delta)
    cw, cm = w.copy(), a16(master)
    st = SgdState(MASTER, p16(cm), None, None, -127, 127)
    lib.mt_sgd_update_s8(ct.byref(par), ct.byref(st), ct.byref(sl), p32(d32), p8(cw))
    np.testing.assert_array_equal(cm, want_m)
    np.testing.assert_array_equal(cw, want_w)
    # lr 0: nothing moves, no PRNG draw
    par0 = SgdParams(p32(mult), 0, 0, 0, 16, 0)
    crng = np.array([state0], np.uint32)
    st = SgdState(STOCHASTIC, None, cbuild.ptr(crng, U32), None, -127, 127)
    cw = w.copy()
    lib.mt_sgd_update_s8(ct.byref(par0), ct.byref(st), ct.byref(sl), p32(d32), p8(cw))
    np.testing.assert_array_equal(cw, w)
    assert int(crng[0]) == state0


# =================================================================================================
# Layers: one-node int8 graphs (as tests/test_backward_int.py builds them)
# =================================================================================================
W_AXIS = {"conv2d": 0, "depthwise_conv2d": 3, "fully_connected": 0}


class Built(SimpleNamespace):
    pass


def build(op: str, shapes: list, attrs: dict, seed: int, per_tensor: bool = False, spread: float = 1.0,
          extreme: bool = False, grad_top: int | None = None) -> Built:
    """A one-node int8 graph: PTQ-style parameters, its int8 forward, a random int16 upstream
    gradient (random magnitude and exponent). ``extreme``: x at |x - zp| = 255 and |g| = 32767."""
    rng = np.random.default_rng([seed, len(op), sum(map(ord, op))])
    opc = registry.get(op)
    g = Graph(name=f"{op}_{seed}")
    act_names = ["a", "b"] if op == "add" else ["x"]
    names = act_names if op == "add" else (act_names + ["w", "b"])[: len(shapes)]
    xs_q, xs_f = [], []
    for k, (name, shape) in enumerate(zip(names, shapes)):
        if k < len(act_names):
            if extreme:
                q = activation_qparams(0.0, 4.0)  # zp = -128
                xq = np.full(shape, 127, np.int8)
            else:
                xf = rng.standard_normal(shape) * spread + rng.uniform(-0.5, 0.5) * spread
                q = activation_qparams(xf.min(), xf.max())
                xq = quantize_array(xf, q.s, q.zp)
            g.add_tensor(Tensor(name, shape, "int8", quant=q))
            xs_q.append(xq)
            xs_f.append(q.s * (xq.astype(np.float64) - q.zp))
        elif k == 1:
            axis = None if per_tensor else W_AXIS[op]
            wq, wqp = weight_qparams(rng.standard_normal(shape) * 0.5, axis)
            if per_tensor:  # a per-tensor FC weight with a zero point
                wqp = QParams(wqp.scale, np.array([int(rng.integers(-20, 21))]))
                wq = np.clip(wq.astype(np.int64) + int(wqp.zero_point[0]), -128, 127).astype(np.int8)
            g.add_tensor(Tensor(name, shape, "int8", data=wq, quant=wqp))
            xs_q.append(wq)
            s = wqp.scale.astype(np.float64)
            if s.size > 1:
                sh = [1] * len(shape)
                sh[W_AXIS[op]] = -1
                s = s.reshape(sh)
            xs_f.append(s * (wq.astype(np.float64) - wqp.zero_point[0]))
        else:
            bq, bqp = bias_qparams(rng.standard_normal(shape) * 0.5, g.tensors["x"].quant.s, g.tensors["w"].quant)
            g.add_tensor(Tensor(name, shape, "int32", data=bq, quant=bqp))
            xs_q.append(bq)
            xs_f.append(bq * bqp.scale.astype(np.float64))
    g.inputs = list(act_names)
    node = Node(op, f"n_{op}", list(names), ["y"], dict(attrs))
    ((yshape, _),) = opc.infer(node, [g.tensors[n] for n in names])
    if op in ("max_pool2d", "avg_pool2d", "reshape", "pad"):
        yq = g.tensors["x"].quant
    else:
        yf = opc.forward_float(node, [x.astype(np.float32) for x in xs_f])[0]
        yq = activation_qparams(yf.min(), yf.max())
    g.add_tensor(Tensor("y", yshape, "int8", quant=yq))
    g.nodes = [node]
    g.outputs = ["y"]
    verify(g)
    p = prepare_int8_backward(node, g)
    y_q = opc.forward_int8(node, xs_q, p)[0]
    if extreme:
        gy = Grad(np.full(y_q.shape, 32767, np.int64), -20)
    else:
        gy = Grad(rand_mant(rng, y_q.shape, grad_top), int(rng.integers(-45, 0)))
    return Built(op=op, opc=opc, node=node, graph=g, p=p, xs=xs_q, y=y_q, gy=gy, rng=rng,
                 act=op if op in ("relu", "relu6") else attrs.get("act", "none"))


def masked_c(lib, b: Built) -> np.ndarray:
    """The upstream gradient masked by the C kernels (pack from y, apply), int16."""
    m = a16(b.gy.m)
    if b.act == "none":
        return m
    lo = b.p["act_min"]
    hi = 128 if b.act == "relu" else b.p["act_max"]
    bits = np.zeros(lib.mt_act_mask_bytes(b.y.size), np.uint8)
    lib.mt_act_mask_pack_s8(b.y.size, p8(np.ascontiguousarray(b.y)), lo, hi, cbuild.ptr(bits, U8))
    lib.mt_act_mask_apply_s16(m.size, cbuild.ptr(bits, U8), p16(m))
    np.testing.assert_array_equal(m.reshape(b.y.shape), act_mask(b.gy, b.y, b.act, b.p).m)
    return m


def run_numpy(b: Built, pos: int, rows=None) -> Grad:
    return b.opc.backward_int8(b.node, b.xs, [b.y], [b.gy], {pos}, b.p, rows=rows)[pos]


def fc_params(b: Built) -> tuple[FcParams, list]:
    x, w = b.xs[0], b.xs[1]
    wm = a32(b.p["w_mult"])
    par = FcParams(x.shape[0], x.shape[1], w.shape[0], int(b.p["in_zp"]), int(b.p["w_zp"]), int(b.p["x_mult"]),
                   int(b.p["x_shift"]), int(b.p["x_bits"]), p32(wm), int(b.p["w_shift"]), int(b.p["w_bits"]))
    return par, [wm]


def conv_params(b: Built) -> tuple[ConvParams, list]:
    x = b.xs[0]
    wm = a32(b.p["w_mult"])
    a = b.node.attrs
    w = b.xs[1]
    kh, kw = w.shape[1], w.shape[2]
    t, l, bo, r = a.get("pad", (0, 0, 0, 0))
    par = ConvParams(Dims(*x.shape), Dims(*b.y.shape), HW(kh, kw), HW(*a.get("stride", (1, 1))),
                     HW(*a.get("dilation", (1, 1))), Padding(t, l, bo, r), int(b.p["in_zp"]), int(b.p["x_mult"]),
                     int(b.p["x_shift"]), int(b.p["x_bits"]), p32(wm), int(b.p["w_shift"]), int(b.p["w_bits"]))
    return par, [wm]


LINEAR_CASES = [
    # (id, op, kernel, shapes, attrs, options)
    ("fc", "fully_connected", "fully_connected", [(3, 5), (4, 5), (4,)], {}, {}),
    ("fc_relu", "fully_connected", "fully_connected", [(4, 6), (5, 6), (5,)], {"act": "relu"}, {}),
    ("fc_relu6", "fully_connected", "fully_connected", [(4, 6), (5, 6), (5,)], {"act": "relu6"}, {"spread": 4.0}),
    ("fc_per_tensor", "fully_connected", "fully_connected", [(3, 7), (4, 7), (4,)], {}, {"per_tensor": True}),
    ("fc_wide", "fully_connected", "fully_connected", [(8, 64), (32, 64), (32,)], {"act": "relu"}, {}),
    ("fc_extreme", "fully_connected", "fully_connected", [(64, 6), (3, 6), (3,)], {}, {"extreme": True}),
    ("conv_pad1", "conv2d", "conv2d", [(2, 5, 5, 3), (4, 3, 3, 3), (4,)], {"pad": (1, 1, 1, 1)}, {}),
    ("conv_s2_asym_relu", "conv2d", "conv2d", [(1, 7, 6, 2), (3, 3, 2, 2), (3,)],
     {"stride": (2, 2), "pad": (0, 1, 2, 0), "act": "relu"}, {}),
    ("conv_d2_relu6", "conv2d", "conv2d", [(2, 7, 7, 2), (3, 3, 3, 2), (3,)],
     {"dilation": (2, 2), "pad": (2, 1, 1, 2), "act": "relu6"}, {"spread": 4.0}),
    ("conv_s21_d12", "conv2d", "conv2d", [(1, 6, 7, 2), (3, 2, 3, 2), (3,)],
     {"stride": (2, 1), "dilation": (1, 2), "pad": (1, 0, 0, 1)}, {}),
    ("conv_digits_like", "conv2d", "conv2d", [(1, 8, 8, 4), (8, 3, 3, 4), (8,)],
     {"pad": (1, 1, 1, 1), "act": "relu"}, {}),
    ("conv_extreme_headroom", "conv2d", "conv2d", [(1, 64, 64, 1), (2, 3, 3, 1), (2,)], {"pad": (1, 1, 1, 1)},
     {"extreme": True}),
    ("conv_dx_headroom", "conv2d", "conv2d", [(1, 4, 4, 2), (64, 3, 3, 2), (64,)], {"pad": (1, 1, 1, 1)},
     {"grad_top": 32767}),
    ("fc_dx_headroom", "fully_connected", "fully_connected", [(2, 8), (600, 8), (600,)], {}, {"grad_top": 32767}),
    ("pointwise", "conv2d", "pointwise_conv2d", [(2, 3, 4, 3), (5, 1, 1, 3), (5,)], {"act": "relu"}, {}),
    ("pointwise_as_conv", "conv2d", "conv2d", [(2, 3, 4, 3), (5, 1, 1, 3), (5,)], {"act": "relu"}, {}),
    ("dw_m1_relu", "depthwise_conv2d", "depthwise_conv2d", [(2, 6, 6, 3), (1, 3, 3, 3), (3,)],
     {"pad": (1, 1, 1, 1), "act": "relu"}, {}),
    ("dw_m2_s2_relu6", "depthwise_conv2d", "depthwise_conv2d", [(1, 7, 7, 2), (1, 3, 3, 4), (4,)],
     {"stride": (2, 2), "pad": (1, 0, 1, 2), "act": "relu6"}, {"spread": 4.0}),
    ("dw_m3_d2", "depthwise_conv2d", "depthwise_conv2d", [(1, 7, 6, 2), (1, 3, 2, 6), (6,)],
     {"dilation": (2, 2), "pad": (0, 2, 1, 0)}, {}),
    ("dw_dx_headroom", "depthwise_conv2d", "depthwise_conv2d", [(1, 4, 4, 1), (1, 3, 3, 64), (64,)],
     {"pad": (1, 1, 1, 1)}, {"grad_top": 32767}),
]
LINEAR_IDS = [c[0] for c in LINEAR_CASES]


def seeds_for(case_id: str) -> range:
    if "extreme" in case_id:
        return range(1)
    return range(2 if SANITIZE else 5)


@pytest.mark.parametrize("case", LINEAR_CASES, ids=LINEAR_IDS)
def test_linear_bwd_input(lib, case):
    cid, op, kern, shapes, attrs, opts = case
    fn = getattr(lib, f"mt_{kern}_bwd_input_s16")
    for seed in seeds_for(cid):
        b = build(op, shapes, attrs, seed, **opts)
        want = run_numpy(b, 0)
        g = masked_c(lib, b)
        if "headroom" in cid:  # the case exercises the pre-shift it is named after
            gm = act_mask(b.gy, b.y, b.act, b.p)
            if "dx" in cid:
                fan = b.xs[1].size // b.xs[0].shape[-1]  # Cout*KH*KW, Cout, M*KH*KW
                gs = gradfmt.mul_q31(gm.m, gm.e, b.p["w_mult"], b.p["w_shift"])
                assert gradfmt.headroom(gs, b.p["w_bits"], fan).e > gs.e, cid
            else:
                fan = b.gy.m.size // b.gy.m.shape[-1]
                assert gradfmt.headroom(gm, b.p["x_bits"], fan).e > gm.e, cid
        par, keep = fc_params(b) if op == "fully_connected" else conv_params(b)
        w = np.ascontiguousarray(b.xs[1])
        g_orig = g.copy()
        variants = ["two_pass", "scratch", "alias"] + (["split"] if kern != "depthwise_conv2d" else [])
        for variant in variants:
            gs = g.copy() if variant == "alias" else np.zeros(g.size, np.int16)
            gin = gs if variant == "alias" else g
            acc = np.zeros(b.xs[0].size, np.int32) if variant == "scratch" else None
            gx = np.zeros(b.xs[0].size, np.int16)
            eo = out_e()
            wp = w
            if variant == "split":  # trained rows [0, r) in one array (SRAM), the rest in another
                r = seed % (w.shape[0] + 1)
                wp, tail = w[:r].copy(), w[r:].copy()
                keep += [wp, tail]
                par.split = WSplit(p8(tail) if tail.size else None, r)
            rc = fn(ct.byref(par), p16(gs), p32(acc) if acc is not None else None, p16(gin), b.gy.e, p8(wp),
                    p16(gx), ct.byref(eo))
            par.split = WSplit()
            assert rc == 0
            assert_grad(gx, eo.value, want, f"{cid} seed {seed} {variant} dx")
        np.testing.assert_array_equal(g, g_orig)  # g untouched when gs does not alias it
    if op == "fully_connected":
        assert lib.mt_fully_connected_bwd_input_s16_scratch_bytes(ct.byref(par), 0, 1) >= 2 * b.gy.m.size
    else:
        assert lib.mt_conv2d_bwd_input_s16_scratch_bytes(ct.byref(par), 1, 1) == 4 * b.xs[0].size


def _rows_list(c: int) -> list[int]:
    return sorted({1, (c + 1) // 2, c})


@pytest.mark.parametrize("case", LINEAR_CASES, ids=LINEAR_IDS)
def test_linear_update(lib, case):
    """Weight gradient of the first rows channels fused with the update == backward_int8(rows) +
    Int8Trainer._apply (master / stochastic, momentum), and the bias kernel likewise."""
    cid, op, kern, shapes, attrs, opts = case
    fn = getattr(lib, f"mt_{kern}_update_s8")
    axis = W_AXIS[op]
    for seed in seeds_for(cid):
        b = build(op, shapes, attrs, seed, **opts)
        rng = b.rng
        g = masked_c(lib, b)
        par, keep = fc_params(b) if op == "fully_connected" else conv_params(b)
        x = np.ascontiguousarray(b.xs[0])
        w0 = b.xs[1]
        cout = w0.shape[axis]
        s_w = b.graph.tensors["w"].quant.scale.astype(np.float64)
        s_w = np.full(cout, s_w[0]) if s_w.size == 1 else s_w
        for rows in _rows_list(cout):
            gw = run_numpy(b, 1, rows)
            k = int(rng.integers(0, 4))
            up = Update(rng, w0, "weight", axis, rows, s_w, float(np.exp(rng.uniform(-9, 0))),
                        remedy="stochastic" if k % 2 else "master", momentum=k >= 2, qas=bool(seed % 2 == 0))
            up.engine_apply(gw)
            sl_shape = up.w[up.index].shape
            grad = np.zeros(int(np.prod(sl_shape)), np.int16)
            ge = out_e()
            acc = np.zeros(grad.size, np.int32) if (seed + rows) % 2 else None
            rc = fn(ct.byref(par), ct.byref(up.params), ct.byref(up.state), rows,
                    p32(acc) if acc is not None else None, p16(g), b.gy.e, p8(x), p8(up.c_w), p16(grad),
                    ct.byref(ge))
            assert rc == 0
            assert_grad(grad.reshape(sl_shape), ge.value, gw, f"{cid} seed {seed} rows {rows} dW")
            up.check(f"{cid} seed {seed} rows {rows} W")
            if len(shapes) > 2:  # bias
                gb = run_numpy(b, 2, rows)
                s_b = (np.float64(b.graph.tensors["x"].quant.s) * s_w if b.graph.tensors["b"].quant.scale.size != cout
                       else b.graph.tensors["b"].quant.scale.astype(np.float64))
                ub = Update(rng, b.xs[2], "bias", 0, rows, s_b, float(np.exp(rng.uniform(-9, 0))),
                            momentum=bool(rng.random() < 0.5))
                ub.engine_apply(gb)
                gbc = np.zeros(rows, np.int16)
                pixels = g.size // cout
                assert lib.mt_bias_update_s32(ct.byref(ub.params), ct.byref(ub.state), pixels, cout, rows, p16(g),
                                              b.gy.e, p32(ub.c_w), p16(gbc), ct.byref(ge)) == 0
                assert_grad(gbc, ge.value, gb, f"{cid} seed {seed} rows {rows} db")
                ub.check(f"{cid} seed {seed} rows {rows} b")
        # gradient only (lr 0): the update is skipped, nothing moves
        up = Update(rng, w0, "weight", axis, cout, s_w, 0.01, remedy="stochastic")
        up.params.lr_mult = 0
        grad = np.zeros(w0.size, np.int16)
        ge = out_e()
        fn(ct.byref(par), ct.byref(up.params), ct.byref(up.state), cout, None, p16(g), b.gy.e, p8(x),
           p8(up.c_w), p16(grad), ct.byref(ge))
        assert_grad(grad.reshape(up.w[up.index].shape), ge.value, run_numpy(b, 1), f"{cid} lr 0")
        np.testing.assert_array_equal(up.c_w, w0)
        assert int(up.c_rng[0]) == up.rng_state


def test_linear_rejects_bad_rows(lib):
    b = build("fully_connected", [(3, 5), (4, 5), (4,)], {}, 0)
    par, keep = fc_params(b)
    up = Update(np.random.default_rng(0), b.xs[1], "weight", 0, 4, np.ones(4), 0.1)
    g = a16(b.gy.m)
    x = np.ascontiguousarray(b.xs[0])
    for rows in (0, 5):
        assert lib.mt_fully_connected_update_s8(ct.byref(par), ct.byref(up.params), ct.byref(up.state), rows,
                                                None, p16(g), 0, p8(x), p8(up.c_w), None, None) != 0
    np.testing.assert_array_equal(up.c_w, b.xs[1])


def test_update_scratch_sizes(lib):
    b = build("conv2d", [(2, 5, 5, 3), (4, 3, 3, 3), (4,)], {"pad": (1, 1, 1, 1)}, 0)
    par, keep = conv_params(b)
    assert lib.mt_conv2d_update_s8_scratch_bytes(ct.byref(par), 2) == 4 * 2 * 3 * 3 * 3
    assert lib.mt_conv2d_bwd_input_s16_scratch_bytes(ct.byref(par), 0, 0) == 2 * b.y.size
    assert lib.mt_softmax_ce_scratch_bytes(3, 10) == 120


# =================================================================================================
# Pooling, mean, add, pad (reshape needs no kernel)
# =================================================================================================
POOL_CASES = [
    ("maxpool_2x2_s2", "max_pool2d", [(2, 6, 6, 3)], {"ksize": (2, 2), "stride": (2, 2)}),
    ("maxpool_3x3_s2_pad", "max_pool2d", [(1, 7, 7, 2)], {"ksize": (3, 3), "stride": (2, 2), "pad": (1, 1, 1, 1)}),
    ("maxpool_asym_relu", "max_pool2d", [(2, 5, 6, 2)],
     {"ksize": (3, 2), "stride": (1, 2), "pad": (2, 0, 0, 1), "act": "relu"}),
    ("maxpool_ties", "max_pool2d", [(1, 6, 6, 2)], {"ksize": (3, 3), "stride": (1, 1)}),
    ("avgpool_2x2_s2", "avg_pool2d", [(2, 6, 6, 3)], {"ksize": (2, 2), "stride": (2, 2)}),
    ("avgpool_pad_excl", "avg_pool2d", [(1, 7, 7, 2)],
     {"ksize": (3, 3), "stride": (2, 2), "pad": (1, 1, 1, 1), "count_include_pad": False}),
    ("avgpool_pad_incl", "avg_pool2d", [(1, 7, 7, 2)],
     {"ksize": (3, 3), "stride": (2, 2), "pad": (1, 1, 1, 1), "count_include_pad": True}),
    ("avgpool_asym_relu6", "avg_pool2d", [(2, 5, 6, 2)],
     {"ksize": (3, 2), "stride": (2, 1), "pad": (0, 1, 2, 0), "count_include_pad": True, "act": "relu6"}),
]


@pytest.mark.parametrize("case", POOL_CASES, ids=[c[0] for c in POOL_CASES])
def test_pool_bwd_input(lib, case):
    cid, op, shapes, attrs = case
    for seed in range(2 if SANITIZE else 5):
        b = build(op, shapes, attrs, seed, spread=12.0 if "relu6" in cid else 1.0)
        if cid == "maxpool_ties":  # few distinct values: many ties, first maximum wins
            b.xs[0] = b.rng.integers(-2, 2, size=shapes[0]).astype(np.int8)
            b.y = b.opc.forward_int8(b.node, b.xs, b.p)[0]
        want = run_numpy(b, 0)
        g = masked_c(lib, b)
        x = np.ascontiguousarray(b.xs[0])
        t, l, bo, r = attrs.get("pad", (0, 0, 0, 0))
        kh, kw = attrs["ksize"]
        inv = a32(b.p["inv_count"]) if op == "avg_pool2d" else np.zeros(1, np.int32)
        par = PoolParams(Dims(*x.shape), Dims(*b.y.shape), HW(kh, kw), HW(*attrs.get("stride", (1, 1))),
                         Padding(t, l, bo, r), int(attrs.get("count_include_pad", False)), p32(inv))
        gx = np.zeros(x.size, np.int16)
        eo = out_e()
        if op == "max_pool2d":
            rc = lib.mt_max_pool2d_bwd_input_s16(ct.byref(par), p8(x), p16(g), b.gy.e, p16(gx), ct.byref(eo))
        else:
            rc = lib.mt_avg_pool2d_bwd_input_s16(ct.byref(par), p16(g), b.gy.e, p16(gx), ct.byref(eo))
        assert rc == 0
        assert_grad(gx, eo.value, want, f"{cid} seed {seed}")


@pytest.mark.parametrize("keepdims", [True, False])
def test_mean_bwd_input(lib, keepdims):
    for seed in range(REPS):
        shape = [(2, 4, 4, 5), (2, 3, 5, 5), (1, 1, 1, 3), (3, 7, 2, 1)][seed % 4]
        b = build("mean", [shape], {"axes": (1, 2), "keepdims": keepdims}, seed)
        if seed == 1:
            b.gy = Grad(np.zeros(b.gy.m.shape, np.int64), -7)
        want = run_numpy(b, 0)
        g = a16(b.gy.m)
        gx = np.zeros(int(np.prod(shape)), np.int16)
        eo = out_e()
        assert lib.mt_mean_bwd_input_s16(ct.byref(Dims(*shape)), int(b.p["inv_mult"]), int(b.p["inv_shift"]),
                                         p16(g), b.gy.e, p16(gx), ct.byref(eo)) == 0
        assert_grad(gx, eo.value, want, f"mean seed {seed}")


def dims4(shape) -> Dims:
    s = (1,) * (4 - len(shape)) + tuple(shape)
    return Dims(*s)


ADD_CASES = [
    ("add_same", [(2, 3, 4, 5), (2, 3, 4, 5)], {}),
    ("add_channel_bcast_relu", [(2, 3, 4, 5), (5,)], {"act": "relu"}),
    ("add_both_bcast_relu6", [(2, 1, 4, 5), (2, 3, 1, 1)], {"act": "relu6"}),
    ("add_2d", [(1, 6), (3, 6)], {}),
    ("add_scalarish", [(2, 3, 4, 5), (1, 1, 1, 1)], {}),
]


@pytest.mark.parametrize("case", ADD_CASES, ids=[c[0] for c in ADD_CASES])
def test_add_bwd_input(lib, case):
    cid, shapes, attrs = case
    for seed in range(2 if SANITIZE else 5):
        b = build("add", shapes, attrs, seed, spread=4.0 if "relu6" in cid else 1.0)
        g = masked_c(lib, b)
        for pos in (0, 1):
            want = run_numpy(b, pos)
            gx = np.zeros(b.xs[pos].size, np.int16)
            eo = out_e()
            assert lib.mt_add_bwd_input_s16(ct.byref(dims4(b.y.shape)), ct.byref(dims4(b.xs[pos].shape)), p16(g),
                                            b.gy.e, p16(gx), ct.byref(eo)) == 0
            assert_grad(gx, eo.value, want, f"{cid} seed {seed} input {pos}")


def test_pad_and_reshape_bwd(lib):
    b = build("pad", [(2, 3, 4, 5)], {"pads": ((0, 0), (1, 2), (0, 1), (0, 0))}, 0)
    want = run_numpy(b, 0)
    g = a16(b.gy.m)
    gx = np.zeros(b.xs[0].size, np.int16)
    before = a32([0, 1, 0, 0])
    assert lib.mt_pad_bwd_input_s16(ct.byref(Dims(*b.xs[0].shape)), ct.byref(Dims(*b.y.shape)), p32(before),
                                    p16(g), p16(gx)) == 0
    assert_grad(gx, b.gy.e, want, "pad")
    r = build("reshape", [(2, 3, 4, 5)], {"shape": (2, 60)}, 0)
    rw = run_numpy(r, 0)  # reshape: same mantissas in the same order, same exponent
    np.testing.assert_array_equal(rw.m.ravel(), r.gy.m.ravel())
    assert rw.e == r.gy.e


# =================================================================================================
# Integer softmax cross-entropy
# =================================================================================================
def _check_loss(li, grad, ge, loss, mean, correct, prob, what):
    assert_grad(grad.reshape(li.grad.m.shape), ge.value, li.grad, what)
    np.testing.assert_array_equal(loss, li.loss, err_msg=f"{what} loss")
    assert mean.value == li.loss_mean, what
    np.testing.assert_array_equal(correct.astype(bool), li.correct, err_msg=f"{what} correct")
    np.testing.assert_array_equal(prob.reshape(li.prob.shape), li.prob, err_msg=f"{what} prob")


def _batch(p) -> CeBatch:
    return CeBatch(p["batch"], p["inv_batch_mult"], p["inv_batch_shift"], p["batch_log2"])


def test_softmax_ce_s8(lib):
    rng = np.random.default_rng(12)
    for k in range(REPS * 3):
        n = int(rng.choice([1, 2, 3, 4, 5, 8]))
        c = int(rng.choice([2, 3, 10, 17]))
        scale = float(np.exp(rng.uniform(-4, 1.5)))  # radius from 255 (clipped) down to ~7 codes
        zp = int(rng.integers(-128, 128))
        logits = rng.integers(-128, 128, size=(n, c)).astype(np.int8)
        if k % 4 == 1:
            logits[:] = logits[:, :1]  # all ties
        if k % 4 == 2:
            logits = np.where(rng.random((n, c)) < 0.5, 127, -128).astype(np.int8)
        labels = rng.integers(0, c, size=n)
        p = prepare_softmax_ce_int8(scale, zp, n)
        li = softmax_cross_entropy_int(logits, labels, p)
        par = CeS8Params(p["mult"], p["left_shift"], p["diff_min"], _batch(p))
        buf = np.zeros(n * c, np.int32)
        grad, loss, correct = np.zeros(n * c, np.int16), np.zeros(n, np.int32), np.zeros(n, np.uint8)
        ge, mean = out_e(), out_e()
        lab = a32(labels)
        assert lib.mt_softmax_ce_s8(ct.byref(par), n, c, p32(buf), p8(logits), p32(lab), p16(grad), ct.byref(ge),
                                    p32(loss), ct.byref(mean), cbuild.ptr(correct, U8)) == 0
        _check_loss(li, grad, ge, loss, mean, correct, buf, f"ce_s8 case {k}")


def test_softmax_ce_acc(lib):
    rng = np.random.default_rng(13)
    for k in range(REPS * 3):
        n = int(rng.choice([1, 2, 3, 4, 6]))
        c = int(rng.choice([2, 5, 10]))
        s_acc = np.exp(rng.uniform(-12, -3, size=c))
        if k % 3 == 0:
            s_acc[:] = s_acc[0]
        span = int(rng.choice([1 << 8, 1 << 14, 1 << 20, 1 << 28]))
        acc = rng.integers(-span, span, size=(n, c))
        if k % 4 == 1:  # tied maxima: the first one is the prediction
            acc[:, 1] = acc[:, 0] = acc.max(axis=1)
        labels = rng.integers(0, c, size=n)
        p = prepare_softmax_ce_acc(s_acc, n)
        li = softmax_cross_entropy_int(acc, labels, p)
        mult, shift = a32(p["mult"]), a32(p["shift"])
        par = CeAccParams(p32(mult), p32(shift), p["frac_bits"], p["radius"], _batch(p))
        buf = np.zeros(n * c, np.int32)
        grad, loss, correct = np.zeros(n * c, np.int16), np.zeros(n, np.int32), np.zeros(n, np.uint8)
        ge, mean = out_e(), out_e()
        a, lab = a32(acc), a32(labels)
        assert lib.mt_softmax_ce_acc_s32(ct.byref(par), n, c, p32(buf), p32(a), p32(lab), p16(grad), ct.byref(ge),
                                         p32(loss), ct.byref(mean), cbuild.ptr(correct, U8)) == 0
        _check_loss(li, grad, ge, loss, mean, correct, buf, f"ce_acc case {k}")


def test_softmax_ce_rejects_bad_labels(lib):
    p = prepare_softmax_ce_int8(0.1, 0, 1)
    par = CeS8Params(p["mult"], p["left_shift"], p["diff_min"], _batch(p))
    buf, grad = np.zeros(3, np.int32), np.zeros(3, np.int16)
    logits, lab = np.zeros(3, np.int8), a32([3])
    ge, mean = out_e(), out_e()
    buf[:] = 77
    assert lib.mt_softmax_ce_s8(ct.byref(par), 1, 3, p32(buf), p8(logits), p32(lab), p16(grad), ct.byref(ge),
                                None, ct.byref(mean), None) != 0
    assert np.all(buf == 77)  # nothing written


# =================================================================================================
# Forward gradient
# =================================================================================================
def test_fg_seed_and_stream(lib):
    rng = np.random.default_rng(14)
    for v in [0, 1, 0x9E3779B9, 0xFFFFFFFF] + [int(x) for x in rng.integers(0, 1 << 32, size=50)]:
        assert lib.mt_fmix32(v) == fmix32(v)
    for _ in range(50):
        s, t, i = (int(x) for x in rng.integers(0, 1 << 32, size=3))
        assert lib.mt_fg_perturbation_seed(s, t, i) == perturbation_seed(s, t, i)
    assert lib.mt_fg_perturbation_seed(0, 0, 1) == perturbation_seed(0, 0, 1)
    # a seed whose hash is 0 falls back to the constant (fmix32 is a bijection: invert the chain)
    seed0 = _fmix32_inv(_fmix32_inv(1)) ^ 0x9E3779B9  # fmix32(fmix32(fmix32(seed0 ^ C) ^ 0) ^ 1) == 0
    assert perturbation_seed(seed0, 0, 1) == 0x9E3779B9 == lib.mt_fg_perturbation_seed(seed0, 0, 1)
    for _ in range(REPS):
        seed = int(rng.integers(1, 1 << 32))
        n = int(rng.integers(1, 300))
        want = rademacher(seed, n)
        z = Rademacher()
        lib.mt_rademacher_init(ct.byref(z), seed)
        got = []
        k = 0
        while k < n:  # interleave reads and skips
            step = int(rng.integers(1, 40))
            if rng.random() < 0.4:
                lib.mt_rademacher_skip(ct.byref(z), min(step, n - k))
                got.extend([None] * min(step, n - k))
                k += min(step, n - k)
            else:
                for _ in range(min(step, n - k)):
                    got.append(_next_sign(z))
                    k += 1
        for e, zz in enumerate(got):
            if zz is not None:
                assert zz == want[e], (seed, e)
        assert z.pos == n


def _fmix32_inv(h: int) -> int:
    """Inverse of fmix32 (xorshifts undone, odd multipliers inverted mod 2^32)."""
    m32 = 0xFFFFFFFF
    h ^= h >> 16
    h = (h * pow(0xC2B2AE35, -1, 1 << 32)) & m32
    h ^= (h >> 13) ^ (h >> 26)
    h = (h * pow(0x85EBCA6B, -1, 1 << 32)) & m32
    h ^= h >> 16
    return h


def _next_sign(z: Rademacher) -> int:
    """mt_rademacher_next is static inline: the same step in Python on the C cursor."""
    b = z.pos & 31
    if b == 0:
        z.state = xorshift32(z.state)
    z.pos += 1
    return 1 if (z.state >> b) & 1 else -1


def _fg_case(rng, n_slices=3):
    """Slices of an fg walk: (role, full tensor, axis, rows, delta); one excluded (delta 0)."""
    out = []
    w = rng.integers(-127, 128, size=(4, 3, 3, 2)).astype(np.int8)
    out.append(("weight", w, 0, int(rng.integers(1, 5)), int(rng.integers(256, 2000))))
    dw = rng.integers(-127, 128, size=(1, 3, 2, 5)).astype(np.int8)
    out.append(("weight", dw, 3, int(rng.integers(1, 6)), 0))  # excluded: keeps its positions
    b = rng.integers(-(1 << 20), 1 << 20, size=(6,)).astype(np.int32)
    out.append(("bias", b, 0, int(rng.integers(1, 7)), int(rng.integers(1, 500))))
    dw2 = rng.integers(-127, 128, size=(1, 2, 2, 6)).astype(np.int8)
    out.append(("weight", dw2, 3, int(rng.integers(1, 7)), int(rng.integers(256, 900))))
    return out[: n_slices + 1]


def _walk(slices):
    walk, off = [], 0
    for k, (role, t, axis, rows, _d) in enumerate(slices):
        shape = tuple(rows if a == axis else d for a, d in enumerate(t.shape))
        size = int(np.prod(shape))
        walk.append(FGSlice(f"l{k}", f"t{k}", role, axis, rows, shape, off, size))
        off += size
    return walk, off


def test_fg_perturb(lib):
    rng = np.random.default_rng(15)
    for rep in range(REPS):
        slices = _fg_case(rng)
        walk, total = _walk(slices)
        live = [s for s, sl in zip(walk, slices) if sl[4] > 0]
        params = {s.tensor: sl[1].copy() for s, sl in zip(walk, slices)}
        masters = {}
        for s, sl in zip(walk, slices):
            if s.role == "weight":
                m = init_master(params[s.tensor][s.index])
                masters[s.tensor] = np.clip(m + rng.integers(-255, 256, size=m.shape), -32512, 32512)
                params[s.tensor][s.index] = fp.rounding_divide_by_pot(masters[s.tensor], 8).astype(np.int8)
        fake = SimpleNamespace(_fg_live=live, fg_delta={s.tensor: sl[4] for s, sl in zip(walk, slices)},
                               params=params, masters=masters)
        c_params = {k: np.ascontiguousarray(v.copy()) for k, v in params.items()}
        c_masters = {k: a16(v) for k, v in masters.items()}
        seed = perturbation_seed(int(rng.integers(0, 1 << 32)), rep, 1)
        zfull = rademacher(seed, total)
        zs = [zfull[s.offset:s.offset + s.size].reshape(s.shape).astype(np.int64) for s in live]
        original = {k: v.copy() for k, v in params.items()}
        for k, prev in ((1, 0), (-1, 1), (0, -1)):
            Int8Trainer.perturb(fake, zs, k, prev)
            z = Rademacher()
            lib.mt_rademacher_init(ct.byref(z), seed)
            for s, sl in zip(walk, slices):
                geo = Slice(*slice_geom(sl[1].shape, s.axis, s.rows))
                d = sl[4]
                if d == 0:
                    lib.mt_rademacher_skip(ct.byref(z), s.size)
                elif s.role == "weight":
                    assert lib.mt_fg_perturb_s8(ct.byref(geo), p16(c_masters[s.tensor]), d, k, ct.byref(z),
                                                p8(c_params[s.tensor])) == 0
                else:
                    assert lib.mt_fg_perturb_s32(ct.byref(geo), d, k - prev, ct.byref(z),
                                                 p32(c_params[s.tensor])) == 0
            assert z.pos == total
            for name in params:
                np.testing.assert_array_equal(c_params[name], fake.params[name], err_msg=f"{name} k={k}")
        for name in params:  # the restore is exact
            np.testing.assert_array_equal(c_params[name], original[name])


def test_fg_update(lib):
    """g = sum_i sign_i z_i regenerated from m streams, through sgd_delta, momentum and the
    master copy / bias update: == Int8Trainer._forward_gradient's update (its _apply)."""
    rng = np.random.default_rng(16)
    m = 3
    for rep in range(REPS):
        slices = _fg_case(rng)
        walk, total = _walk(slices)
        seed, t = int(rng.integers(0, 1 << 32)), int(rng.integers(0, 1000))
        signs = [int(s) for s in rng.choice([-1, 0, 1], size=m)]
        if rep == 0:
            signs = [1, 1, 1]
        zstreams = [rademacher(perturbation_seed(seed, t, i), total) for i in range(1, m + 1)]
        momentum = rep % 3 != 2  # the velocity holds the raw deltas: every bit of them is compared
        ups = []
        for s, sl in zip(walk, slices):
            scales = np.exp(rng.uniform(-8, -3, size=sl[1].shape[s.axis]))
            if s.role == "bias":
                d = sl[4]
                up = Update(rng, sl[1], "bias", 0, s.rows, scales, float(np.exp(rng.uniform(-7, 8))) / m,
                            momentum=momentum,
                            lo=-INT32_MAX + 2 * d, hi=INT32_MAX - 2 * d)
            else:
                up = Update(rng, sl[1], "weight", s.axis, s.rows, scales, float(np.exp(rng.uniform(-7, 8))) / m,
                            remedy="master", momentum=momentum)
            ups.append(up)
        zc = (Rademacher * m)()
        for i in range(m):
            lib.mt_rademacher_init(ct.byref(zc[i]), perturbation_seed(seed, t, i + 1))
        sg = a32(signs)
        for s, sl, up in zip(walk, slices, ups):
            if sl[4] == 0:  # excluded tensor: no update, positions skipped
                for i in range(m):
                    lib.mt_rademacher_skip(ct.byref(zc[i]), s.size)
                continue
            g = np.zeros(s.shape, np.int64)
            for i in range(m):
                g += signs[i] * zstreams[i][s.offset:s.offset + s.size].reshape(s.shape)
            up.engine_apply(Grad(g, 0))
            fn = lib.mt_fg_update_s32 if s.role == "bias" else lib.mt_fg_update_s8
            ptr_w = p32(up.c_w) if s.role == "bias" else p8(up.c_w)
            assert fn(ct.byref(up.params), ct.byref(up.state), ct.byref(up.slice), m, p32(sg), zc, ptr_w) == 0
            up.check(f"fg rep {rep} {s.tensor}")
        assert all(zc[i].pos == total for i in range(m))
    # lr 0 (end of a cosine schedule): nothing moves, the cursors still pass the slice
    up = Update(rng, np.ones((3, 4), np.int8), "weight", 0, 2, np.ones(3), 0.1)
    up.params.lr_mult = 0
    zc = (Rademacher * m)()
    for i in range(m):
        lib.mt_rademacher_init(ct.byref(zc[i]), i + 1)
    assert lib.mt_fg_update_s8(ct.byref(up.params), ct.byref(up.state), ct.byref(up.slice), m, p32(a32([1, 1, 1])),
                               zc, p8(up.c_w)) == 0
    np.testing.assert_array_equal(up.c_w, up.w)
    assert all(zc[i].pos == 8 for i in range(m))


# =================================================================================================
# Learning-rate schedule
# =================================================================================================
def test_cosine_lr(lib):
    table = (ct.c_uint16 * 257).in_dll(lib, "mt_cos_table_q15")
    np.testing.assert_array_equal(np.array(table[:], np.int64), COS_TABLE_Q15)
    rng = np.random.default_rng(17)
    totals = [1, 2, 3, 7, 100, 255, 256, 257, 1000, 12345, (1 << 23) - 1]
    for total in totals:
        ts = {0, 1, total - 1, total, total + 5} | {int(x) for x in rng.integers(0, total + 1, size=30)}
        for t in sorted(ts):
            assert lib.mt_cosine_factor_q15(t, total) == cosine_factor_q15(t, total), (t, total)
    mo, so = ct.c_int32(0), ct.c_int32(0)
    for _ in range(200):
        mult, shift = gradfmt.q31(float(np.exp(rng.uniform(-12, 2))))
        f = int(rng.choice([0, 1, 2, 3, 100, 16384, 32767, 32768, int(rng.integers(0, 32769))]))
        lib.mt_scale_lr_q31(mult, shift, f, ct.byref(mo), ct.byref(so))
        assert (mo.value, so.value) == scale_lr(mult, shift, f), (mult, shift, f)


# =================================================================================================
# Build hygiene: no float, cross targets, sanitizer re-run
# =================================================================================================
def test_every_kernel_file_is_built_and_integer_only():
    assert all(p.is_file() for p in TRAIN_SOURCES)
    backward_like = {p.stem for p in KERNELS.glob("mt_*.c")
                     if re.search(r"_(bwd_\w+|update_s\d+|grad_\w+)$|^mt_(grad|sgd|fg|act_mask|softmax_ce)_", p.stem)}
    # fused kernels (mt_kernels_fused.h) have their own differential tests against the unfused sequence
    fused = {"mt_mean_pointwise_bwd_s16"}  # tests/test_c_fused_gap.py
    backward_like -= fused
    assert backward_like <= EXPECTED, f"training kernels not tested here: {sorted(backward_like - EXPECTED)}"
    header = (cbuild.INCLUDE / "mt_kernels_train.h").read_text()
    for path in TRAIN_SOURCES + [cbuild.INCLUDE / "mt_kernels_train.h"]:
        code = re.sub(r"/\*.*?\*/|//[^\n]*", "", path.read_text(), flags=re.S)
        assert not re.search(r"\b(float|double|malloc|calloc|realloc|free|printf|stdio)\b", code), path.name
    for stem in EXPECTED - {"mt_fg_stream_u32", "mt_softmax_ce_core_s32"}:
        assert stem + "(" in header.replace("\n", " ").replace("( ", "("), stem


@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m0plus", "rv32imac"])
def test_cross_compile(target, tmp_path):
    flags = ("-pedantic", "-Wvla", "-Wshadow", "-Wconversion")
    objs = cross_compile_check(TRAIN_SOURCES, target, extra_flags=flags, out_dir=tmp_path)
    assert len(objs) == len(TRAIN_SOURCES)
    nm = cbuild.CROSS_TARGETS[target][0].replace("gcc", "nm")
    undefined = subprocess.run([nm, "-u", *map(str, objs)], capture_output=True, text=True, check=True).stdout
    # no soft-float helpers, no libc beyond what a freestanding build provides
    bad = re.findall(r"\b(__aeabi_[fd]\w+|__\w+[sd]f\d\b|__\w+[sd]f[23]\w*|malloc|printf|puts)\b", undefined)
    assert not bad, f"{target}: {sorted(set(bad))}"


@pytest.mark.skipif(SANITIZE, reason="already running under the sanitizers")
def test_under_sanitizers():
    proc = run_sanitized_pytest(Path(__file__), "-k", "not test_under_sanitizers and not test_cross_compile",
                                timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:]


# =================================================================================================
# End to end: the C kernels run Int8Trainer's training steps on examples/digits_cnn.onnx
# =================================================================================================
class CEngine:
    """A minimal host-side driver of the C kernels that walks the same TrainingProgram as
    :class:`Int8Trainer` (forward by the numpy int8 interpreter of ``tr``, whose parameter arrays
    the C kernels update in place; loss, backward, updates, forward gradient and the cosine lr in C).
    Masters are int16, velocities int32, one uint32 xorshift32 state: the device's state."""

    def __init__(self, lib, tr: Int8Trainer):
        self.lib, self.tr = lib, tr
        self.params = {k: np.ascontiguousarray(v) for k, v in tr.params.items()}
        tr.params = self.params
        self.masters = {k: a16(v) for k, v in tr.masters.items()}
        self.velocity = {n: np.zeros(tr.params[n][s.index].size, np.int32) for n, s in tr.slices.items()}
        self.rng = np.array([tr.rng_state], np.uint32)
        self.keep = []

    # ---- helpers ----
    def lr(self, method: str) -> tuple[int, int]:
        mult, shift = self.tr._lr_q31[method]
        if self.tr.lr_schedule == "cosine":
            f = self.lib.mt_cosine_factor_q15(self.tr.t, self.tr.total_steps)
            mo, so = ct.c_int32(0), ct.c_int32(0)
            self.lib.mt_scale_lr_q31(mult, shift, f, ct.byref(mo), ct.byref(so))
            mult, shift = mo.value, so.value
        assert (mult, shift) == self.tr.lr_q31(method)
        return mult, shift

    def sgd(self, name: str, lr: tuple[int, int]) -> tuple[SgdParams, SgdState, Slice]:
        s = self.tr.slices[name]
        mult = a32(s.upd["mult"])
        self.keep.append(mult)
        par = SgdParams(p32(mult), int(s.upd["shift"]), int(lr[0]), int(lr[1]), 16, int(self.tr.mu_q31))
        kind = BIAS if s.role == "bias" else (MASTER if s.master else STOCHASTIC)
        st = SgdState(kind, p16(self.masters[name]) if s.master else None, cbuild.ptr(self.rng, U32),
                      p32(self.velocity[name]) if self.tr.mu_q31 else None, int(s.lo), int(s.hi))
        return par, st, Slice(*slice_geom(self.params[name].shape, s.axis, s.rows))

    def masked(self, node, g: np.ndarray, env: dict) -> np.ndarray:
        act = node.attrs.get("act", "none")
        m = g.copy()
        if act != "none":
            p = self.tr.prepared[node.name]
            y = np.ascontiguousarray(env[node.outputs[0]])
            bits = np.zeros(self.lib.mt_act_mask_bytes(y.size), np.uint8)
            hi = 128 if act == "relu" else p["act_max"]
            self.lib.mt_act_mask_pack_s8(y.size, p8(y), p["act_min"], hi, cbuild.ptr(bits, U8))
            self.lib.mt_act_mask_apply_s16(m.size, cbuild.ptr(bits, U8), p16(m))
        return m

    def built(self, node, env) -> Built:
        xs = [self.tr._value(env, i) for i in node.inputs]
        return Built(xs=xs, y=env[node.outputs[0]], p=self.tr.prepared[node.name], node=node)

    # ---- one backprop sample ----
    def backprop(self, x1: np.ndarray, y1: np.ndarray) -> tuple[int, int]:
        tr, lib = self.tr, self.lib
        env = tr._forward({tr.input: x1})
        lab = a32(y1)
        ge, mean = out_e(), out_e()
        corr = np.zeros(1, np.uint8)
        if tr.loss_input == "acc":
            p = tr._loss_prep("acc", 1)
            acc = a32(tr._logit_acc(env))
            mult, shift = a32(p["mult"]), a32(p["shift"])
            par = CeAccParams(p32(mult), p32(shift), p["frac_bits"], p["radius"], _batch(p))
            buf, grad = np.zeros(acc.size, np.int32), np.zeros(acc.size, np.int16)
            assert lib.mt_softmax_ce_acc_s32(ct.byref(par), 1, acc.size, p32(buf), p32(acc), p32(lab), p16(grad),
                                             ct.byref(ge), None, ct.byref(mean), cbuild.ptr(corr, U8)) == 0
        else:
            p = tr._loss_prep("int8", 1)
            logits = np.ascontiguousarray(env[tr.program.logits])
            par = CeS8Params(p["mult"], p["left_shift"], p["diff_min"], _batch(p))
            buf, grad = np.zeros(logits.size, np.int32), np.zeros(logits.size, np.int16)
            assert lib.mt_softmax_ce_s8(ct.byref(par), 1, logits.size, p32(buf), p8(logits), p32(lab), p16(grad),
                                        ct.byref(ge), None, ct.byref(mean), cbuild.ptr(corr, U8)) == 0
        grads = {f"grad:{tr.program.logits}": (grad, ge.value)}
        lr = self.lr("bp")
        for s in tr._bwd:
            node = tr._nodes[s.node]
            k = s.attrs["input"]
            g, e = grads[f"grad:{node.outputs[0]}"]
            b = self.built(node, env)
            gm = self.masked(node, g, env)
            if s.kind == "grad_input":
                gx, gx_e = self.grad_input(node, b, gm, e)
                gn = f"grad:{node.inputs[k]}"
                if gn in grads:
                    o, oe = out_e(), grads[gn]
                    lib.mt_grad_add_s16(gx.size, p16(oe[0]), oe[1], p16(gx), gx_e, p16(oe[0]), ct.byref(o))
                    grads[gn] = (oe[0], o.value)
                else:
                    grads[gn] = (gx, gx_e)
            else:
                self.update(node, b, s.writes[0], k, gm, e, lr)
        return mean.value, int(corr[0])

    def grad_input(self, node, b: Built, g: np.ndarray, e: int) -> tuple[np.ndarray, int]:
        lib = self.lib
        x = b.xs[0]
        gx = np.zeros(x.size, np.int16)
        eo = out_e()
        if node.op == "reshape":
            return g.copy(), e
        if node.op == "max_pool2d":
            a = node.attrs
            t, l, bo, r = a.get("pad", (0, 0, 0, 0))
            par = PoolParams(Dims(*x.shape), Dims(*b.y.shape), HW(*a["ksize"]), HW(*a.get("stride", (1, 1))),
                             Padding(t, l, bo, r), 0, None)
            assert lib.mt_max_pool2d_bwd_input_s16(ct.byref(par), p8(np.ascontiguousarray(x)), p16(g), e, p16(gx),
                                                   ct.byref(eo)) == 0
            return gx, eo.value
        par, keep = fc_params(b) if node.op == "fully_connected" else conv_params(b)
        w = np.ascontiguousarray(b.xs[1])
        gs = np.zeros(g.size, np.int16)
        fn = getattr(lib, f"mt_{node.op}_bwd_input_s16")
        assert fn(ct.byref(par), p16(gs), None, p16(g), e, p8(w), p16(gx), ct.byref(eo)) == 0
        return gx, eo.value

    def update(self, node, b: Built, name: str, k: int, g: np.ndarray, e: int, lr) -> None:
        if lr[0] == 0:
            return
        lib = self.lib
        par, st, sl = self.sgd(name, lr)
        s = self.tr.slices[name]
        if k == 2:
            cout = self.params[name].shape[0]
            assert lib.mt_bias_update_s32(ct.byref(par), ct.byref(st), g.size // cout, cout, s.rows, p16(g), e,
                                          p32(self.params[name]), None, None) == 0
            return
        lp, keep = fc_params(b) if node.op == "fully_connected" else conv_params(b)
        fn = getattr(lib, f"mt_{node.op}_update_s8")
        assert fn(ct.byref(lp), ct.byref(par), ct.byref(st), s.rows, None, p16(g), e,
                  p8(np.ascontiguousarray(b.xs[0])), p8(self.params[name]), None, None) == 0

    # ---- forward gradient ----
    def fg_loss(self, base: dict, y: np.ndarray, stop: int) -> int:
        tr, lib = self.tr, self.lib
        env = tr._forward(dict(base), tr._start, stop)
        acc = a32(tr._logit_acc(env))
        n, c = acc.shape
        p = tr._loss_prep("acc", n)
        mult, shift = a32(p["mult"]), a32(p["shift"])
        par = CeAccParams(p32(mult), p32(shift), p["frac_bits"], p["radius"], _batch(p))
        buf, grad = np.zeros(acc.size, np.int32), np.zeros(acc.size, np.int16)
        ge, mean = out_e(), out_e()
        lab = a32(y)
        assert lib.mt_softmax_ce_acc_s32(ct.byref(par), n, c, p32(buf), p32(acc), p32(lab), p16(grad), ct.byref(ge),
                                         None, ct.byref(mean), None) == 0
        return mean.value

    def loss_only(self, base: dict, y: np.ndarray) -> tuple[int, int]:
        tr, lib = self.tr, self.lib
        env = tr._forward(dict(base), tr._start)
        n = y.size
        lab = a32(y)
        mean, ge = out_e(), out_e()
        corr = np.zeros(n, np.uint8)
        p = tr._loss_prep(tr.loss_input, n)
        if tr.loss_input == "acc":
            acc = a32(tr._logit_acc(env))
            mult, shift = a32(p["mult"]), a32(p["shift"])
            par = CeAccParams(p32(mult), p32(shift), p["frac_bits"], p["radius"], _batch(p))
            buf, grad = np.zeros(acc.size, np.int32), np.zeros(acc.size, np.int16)
            lib.mt_softmax_ce_acc_s32(ct.byref(par), n, acc.shape[1], p32(buf), p32(acc), p32(lab), p16(grad),
                                      ct.byref(ge), None, ct.byref(mean), cbuild.ptr(corr, U8))
        else:
            logits = np.ascontiguousarray(env[tr.program.logits])
            par = CeS8Params(p["mult"], p["left_shift"], p["diff_min"], _batch(p))
            buf, grad = np.zeros(logits.size, np.int32), np.zeros(logits.size, np.int16)
            lib.mt_softmax_ce_s8(ct.byref(par), n, logits.shape[1], p32(buf), p8(logits), p32(lab), p16(grad),
                                 ct.byref(ge), None, ct.byref(mean), cbuild.ptr(corr, U8))
        return mean.value, int(corr.sum())

    def perturb(self, seed: int, k: int, prev: int) -> None:
        z = Rademacher()
        self.lib.mt_rademacher_init(ct.byref(z), seed)
        for s in self.tr.walk:
            d = self.tr.fg_delta[s.tensor]
            sl = Slice(*slice_geom(self.params[s.tensor].shape, s.axis, s.rows))
            if d == 0:
                self.lib.mt_rademacher_skip(ct.byref(z), s.size)
            elif s.role == "weight":
                self.lib.mt_fg_perturb_s8(ct.byref(sl), p16(self.masters[s.tensor]), d, k, ct.byref(z),
                                          p8(self.params[s.tensor]))
            else:
                self.lib.mt_fg_perturb_s32(ct.byref(sl), d, k - prev, ct.byref(z), p32(self.params[s.tensor]))

    def forward_gradient(self, base: dict, y: np.ndarray) -> int:
        tr, lib = self.tr, self.lib
        m = tr.fg.m
        stop = tr._final_step()
        seeds = [lib.mt_fg_perturbation_seed(tr.seed, tr.t, i) for i in range(1, m + 1)]
        signs = []
        for i in range(m):
            self.perturb(seeds[i], 1, 0)
            lp = self.fg_loss(base, y, stop)
            self.perturb(seeds[i], -1, 1)
            lm = self.fg_loss(base, y, stop)
            self.perturb(seeds[i], 0, -1)
            signs.append(0 if lp == lm else (1 if lp > lm else -1))
        lr = self.lr("fg")
        zc = (Rademacher * m)()
        for i in range(m):
            lib.mt_rademacher_init(ct.byref(zc[i]), seeds[i])
        sg = a32(signs)
        for s in tr.walk:
            if tr.fg_delta[s.tensor] == 0 or lr[0] == 0:
                for i in range(m):
                    lib.mt_rademacher_skip(ct.byref(zc[i]), s.size)
                continue
            par, st, sl = self.sgd(s.tensor, lr)
            fn = lib.mt_fg_update_s32 if s.role == "bias" else lib.mt_fg_update_s8
            w = p32(self.params[s.tensor]) if s.role == "bias" else p8(self.params[s.tensor])
            assert fn(ct.byref(par), ct.byref(st), ct.byref(sl), m, p32(sg), zc, w) == 0
        return signs.count(0)

    def step(self, x: np.ndarray, y: np.ndarray) -> tuple[int, int, int]:
        tr = self.tr
        y = np.asarray(y, np.int64).reshape(-1)
        base = tr.frozen_prefix(x)
        loss = correct = skipped = 0
        if tr._has_bp:
            total = 0
            for j in range(y.size):
                lj, cj = self.backprop(x[j:j + 1], y[j:j + 1])
                total += lj
                correct += cj
            loss = (total + y.size // 2) // y.size
        else:  # reported loss of the unperturbed forward (batch), as Int8Trainer.step
            loss, correct = self.loss_only(base, y)
        if tr._fg_live:
            skipped = self.forward_gradient(base, y)
        tr.t += 1
        return loss, correct, skipped


E2E = [
    ("full_master_momentum_int8", dict(schedule=("full", {}), remedy="master", loss_input="int8", momentum=0.9)),
    ("sparse_rows_stochastic_acc", dict(schedule=("sparse", {"bias_last": 2, "update": {0: 0.5, 2: 0.3, -1: 1.0}}),
                                        remedy="stochastic", loss_input="acc")),
    ("hybrid", dict(schedule=("hybrid", {"fg": "batch2"}), remedy="stochastic", loss_input="int8")),
    ("fg_rows_momentum", dict(schedule=("fg", {"update": {1: 0.25, -1: 1.0}, "bias_last": 2, "fg": "batch2"}),
                              remedy="master", loss_input="acc", momentum=0.5)),
]


@pytest.fixture(scope="module")
def digits():
    from microtrain.compiler.frontend import load_model
    from microtrain.compiler.quantize import quantize_graph
    from microtrain.host.data import load_data

    root = Path(__file__).resolve().parents[1]
    fmodel = load_model(str(root / "examples" / "digits_cnn.onnx"))
    qmodel = quantize_graph(fmodel, load_data("digits-clean", fmodel).x_train[:64])
    task = load_data("digits", fmodel)
    return qmodel, task


@pytest.mark.parametrize("case", E2E, ids=[c[0] for c in E2E])
def test_digits_training_steps_match_engine(lib, digits, case):
    """Two Int8Trainers on the same schedule: one steps in numpy (the simulator), the other is
    driven by the C kernels; after every step parameters, masters, velocities, the PRNG state and
    the loss agree exactly."""
    from microtrain.compiler.schedule import FGOptions, Schedule
    from microtrain.compiler.train_int import int8_samples

    cid, opts = case
    qmodel, task = digits
    kind, sk = opts["schedule"]
    sk = dict(sk)
    if sk.get("fg") == "batch2":
        sk["fg"] = FGOptions(m=3, batch=2)
    steps = 2 if SANITIZE else 4
    kw = dict(seed=7, lr_schedule="cosine", total_steps=steps + 1, remedy=opts["remedy"],
              loss_input=opts["loss_input"], lr=0.05, momentum=opts.get("momentum", 0.0))
    if kind in ("fg", "hybrid"):
        kw["fg_lr"] = 0.02
    ref = Int8Trainer(qmodel, Schedule(kind, **sk), **kw)
    eng = CEngine(lib, Int8Trainer(qmodel, Schedule(kind, **sk), **kw))
    b = ref.samples_per_step
    x = int8_samples(ref, task.x_train[: steps * b])
    y = np.asarray(task.y_train[: steps * b], np.int64)
    stats = {"skipped": 0}
    assert bool(ref.mu_q31) == ("momentum" in opts)
    for t in range(steps):
        xs, ys = x[t * b:(t + 1) * b], y[t * b:(t + 1) * b]
        r = ref.step(xs, ys)
        loss, correct, skipped = eng.step(xs, ys)
        assert (loss, correct, skipped) == (r.loss_q16, r.correct, r.skipped), f"{cid} step {t}"
        stats["skipped"] += skipped
        for name in ref.params:
            np.testing.assert_array_equal(eng.params[name], ref.params[name], err_msg=f"{cid} step {t} {name}")
        for name in ref.masters:
            np.testing.assert_array_equal(eng.masters[name].reshape(ref.masters[name].shape), ref.masters[name],
                                          err_msg=f"{cid} step {t} master {name}")
        for name, v in ref._velocity.items():
            np.testing.assert_array_equal(eng.velocity[name].reshape(v.shape), v, err_msg=f"{cid} velocity {name}")
        assert int(eng.rng[0]) == ref.rng_state
    moved = {n for n in ref.params if not np.array_equal(ref.params[n], qmodel.tensors[n].data)}
    trained = {n for n, s in ref.slices.items() if s.method == "bp" or ref.fg_delta.get(n, 0) > 0}
    assert moved and moved <= trained, f"{cid}: moved {moved}, trained {trained}"
    if ref._fg_live:  # the forward-gradient path really updated something
        assert moved & {s.tensor for s in ref._fg_live} or stats["skipped"] == steps * ref.fg.m
