"""The single-pass gradient-format kernels (mt_grad_mul_q31_s16/_s32, mt_grad_headroom_s16,
mt_grad_renormalize_s32 on firmware/include/mt_gradfmt_fast.h) against compiler/gradfmt.py.

Their shortcuts - max |SRDHM| from per-channel extremes, SRDHM and the rounding shift fused into
one 64-bit multiply-add, RDBPOT as one add and one arithmetic shift - must give the reference's
integers for every input the reference accepts. Checked here on two builds of the same sources:
the scalar C, and the SIMD paths (SSUB16/SEL column walks) through mt_dsp.h's exact emulation
(-DMT_USE_DSP -DMT_DSP_EMULATE). Cases: every int16 value at every normalisation shift and for
multipliers giving every renormalisation shift, random tensors of random shapes (odd channel
counts, one pixel, one channel, in place), and the edges (-32768, INT32_MIN, +-(2^31 - 1), zero
multipliers, all-zero input, headroom shifts up to 35).
"""
from __future__ import annotations

import ctypes as ct
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cbuild  # noqa: E402
from cbuild import KERNELS, PEDANTIC, SANITIZE, load  # noqa: E402

from microtrain.compiler import gradfmt  # noqa: E402
from microtrain.compiler.gradfmt import Grad  # noqa: E402

SOURCES = [KERNELS / f"mt_grad_{k}.c" for k in ("mul_q31_s16", "mul_q31_s32", "headroom_s16", "renormalize_s32")]
I16, I32 = ct.c_int16, ct.c_int32
P = ct.POINTER
SIGNATURES = {
    "mt_grad_renormalize_s32": [I32, P(I32), I32, P(I16), P(I32)],
    "mt_grad_headroom_s16": [I32, I32, I32, P(I16), P(I32)],
    "mt_grad_mul_q31_s32": [I32, I32, P(I32), I32, P(I32), I32, P(I16), P(I32)],
    "mt_grad_mul_q31_s16": [I32, I32, P(I16), I32, P(I32), I32, P(I16), P(I32)],
}
REPS = 2 if SANITIZE else 10
BUILDS = {"scalar": (), "simd-emulated": ("-DMT_USE_DSP", "-DMT_DSP_EMULATE")}


@pytest.fixture(scope="module", params=sorted(BUILDS))
def lib(request):
    flags = PEDANTIC + BUILDS[request.param] + (("-O1",) if SANITIZE else ())
    lib = load(SOURCES, f"gradfmt_fast_{request.param.replace('-', '_')}", extra_flags=flags)
    for name, args in SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype = ct.c_int
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


def check(m_c: np.ndarray, e_c: int, g: Grad, what: str) -> None:
    np.testing.assert_array_equal(m_c.astype(np.int64).ravel(), g.m.ravel(), err_msg=f"{what} mantissa")
    assert e_c == g.e, f"{what} exponent: C {e_c}, numpy {g.e}"


def mul16(lib, x: np.ndarray, mult, shift: int, e: int = 0, inplace: bool = False, what: str = "") -> None:
    """x: [npix, channels] (int16 values), mult: [channels]."""
    x = np.asarray(x, np.int64)
    ch = x.shape[-1] if x.ndim > 1 else 1
    src = a16(x.ravel())
    mm = a32(np.atleast_1d(mult))
    out = src if inplace else np.zeros(src.size, np.int16)
    eo = ct.c_int32(0)
    assert lib.mt_grad_mul_q31_s16(src.size, ch, p16(src), e, p32(mm), shift, p16(out), ct.byref(eo)) == 0
    ref = gradfmt.mul_q31(x if x.ndim > 1 else x.reshape(-1, 1), e, np.asarray(mult, np.int64), shift)
    check(out, eo.value, ref, f"mul_q31_s16 {what}")


def mul32(lib, x: np.ndarray, mult, shift: int, e: int = 0, what: str = "") -> None:
    x = np.asarray(x, np.int64)
    ch = x.shape[-1]
    src = a32(x.ravel())
    mm = a32(np.atleast_1d(mult))
    out = np.zeros(src.size, np.int16)
    eo = ct.c_int32(0)
    assert lib.mt_grad_mul_q31_s32(src.size, ch, p32(src), e, p32(mm), shift, p16(out), ct.byref(eo)) == 0
    check(out, eo.value, gradfmt.mul_q31(x, e, np.asarray(mult, np.int64), shift), f"mul_q31_s32 {what}")


def mults_for_every_shift(rng) -> list[int]:
    """Multipliers from 0 to 2^31 - 1 whose SRDHM products land on every renormalisation shift."""
    out = [0, 1, 2, 3, (1 << 15) - 1, 1 << 15, (1 << 30) - 1, 1 << 30, (1 << 31) - 1, (1 << 31) - 2]
    for b in range(0, 31):
        out += [1 << b, (1 << b) + int(rng.integers(0, 1 << b)) if b else 1, (2 << b) - 1]
    return sorted(set(out))


# ---- mul_q31_s16 -------------------------------------------------------------------------------------
def test_mul_q31_s16_every_value(lib):
    """Every int16 value with |x| <= 2^b at every normalisation shift L = 31 - bitlen(2^b) (and the
    neighbouring amax 2^b - 1), each multiplier alone (channels = 1) and eight multipliers as
    channels of one tensor (the largest decides s, the others take the fused write at that s)."""
    rng = np.random.default_rng(11)
    mults = mults_for_every_shift(rng)
    for b in range(0, 16):
        for top in ((1 << b), (1 << b) - 1):
            if top == 0:
                continue
            x = np.arange(-top, min(top, 32767) + 1)  # int16: -2^15 only on the negative side
            for k, mlt in enumerate(mults):
                if k % (1 if b in (0, 7, 14, 15) else 5):
                    continue
                mul16(lib, x, [mlt], int(rng.integers(-20, 20)), int(rng.integers(-30, 30)), what=f"b={b} m={mlt}")
            # channels: pad to a multiple of 8 with 0 (a value every tensor may hold)
            xs = np.concatenate([x, np.zeros((-x.size) % 8, np.int64)]).reshape(-1, 8)
            for _ in range(4):
                mm = rng.choice(mults, size=8)
                mul16(lib, xs, mm, -3, 1, what=f"b={b} channels")
                mul16(lib, xs[:, :7].copy(), mm[:7], -3, 1, what=f"b={b} 7 channels")


def test_mul_q31_s16_full_range_exhaustive(lib):
    """All 65536 int16 values (-32768 included: L = 15, s up to 17 takes the two-rounding path)."""
    x = np.arange(-32768, 32768)
    for mlt in ((1 << 31) - 1, (1 << 30) + 12345, 1 << 30, (1 << 30) - 1, 987654321, 1 << 16, 77777, 40000, 1):
        mul16(lib, x, [mlt], 0, what=f"all int16 m={mlt}")
    xs = x.reshape(-1, 16)
    mul16(lib, xs, np.arange(16) * 134217727 + 1, -5, what="all int16 16 channels")
    x2 = np.arange(-32767, 32768)
    for mlt in ((1 << 31) - 1, 1 << 30, 1234567890):
        mul16(lib, x2, [mlt], 0, what=f"symmetric int16 m={mlt}")


def test_mul_q31_s16_random(lib):
    rng = np.random.default_rng(12)
    for k in range(REPS * 40):
        ch = int(rng.choice([1, 2, 3, 4, 5, 7, 8, 16, 17, 32]))
        npix = int(rng.choice([1, 2, 3, 4, 5, 8, 9, 33]))
        top = int(2 ** rng.integers(0, 16) - 1) + int(rng.random() < 0.1)
        x = rng.integers(-top, top + 1, size=(npix, ch))
        if rng.random() < 0.3:
            x = np.where(rng.random(x.shape) < 0.6, 0, x)
        if rng.random() < 0.2:
            x = -np.abs(x)  # one-signed channels: extremes all <= 0
        if k == 0:
            x[:] = 0
        reals = np.exp(rng.uniform(-14, 6, size=ch))
        if rng.random() < 0.3:
            reals[int(rng.integers(0, ch))] *= 2.0 ** -40  # a channel that aligns to 0
        mult, shift = gradfmt.align_multipliers(reals)
        if rng.random() < 0.2:
            mult = rng.integers(0, 1 << 31, size=ch)  # arbitrary Q31 values, not only aligned ones
        e = int(rng.integers(-40, 10))
        mul16(lib, x, mult, shift, e, inplace=bool(rng.random() < 0.3), what=f"random {k}")


def test_mul_q31_s16_edges(lib):
    mul16(lib, np.zeros((0, 3), np.int64), [1 << 30] * 3, 2, 5, what="empty")
    mul16(lib, np.zeros((4, 3), np.int64), [1 << 30] * 3, 2, 5, what="zeros")
    mul16(lib, np.array([[-32768, 32767]]), [(1 << 31) - 1, (1 << 31) - 1], 0, what="int16 extremes")
    mul16(lib, np.array([[-32768], [1]]), [(1 << 31) - 1], 0, what="-32768 alone")
    mul16(lib, np.array([[-32768, 5], [3, -32768]]), [0, 1 << 30], 0, what="zero multiplier")
    mul16(lib, np.array([-1, 1, -1, 1, 0]), [(1 << 31) - 1], 0, inplace=True, what="+-1")
    for ch in (1, 2, 3):
        mul16(lib, np.full((5, ch), -16384), [1 << 30] * ch, 0, what="ties")


# ---- mul_q31_s32 -------------------------------------------------------------------------------------
def test_mul_q31_s32(lib):
    rng = np.random.default_rng(13)
    edge = [np.array([[-(1 << 31), 1]]), np.array([[(1 << 31) - 1, -(1 << 31) + 1]]), np.array([[1 << 30, -(1 << 30)]]),
            np.zeros((2, 2), np.int64)]
    for x in edge:
        for mlt in ((1 << 31) - 1, 1 << 30, 3):
            mul32(lib, x, [mlt] * x.shape[1], -2, 4, what=f"edge m={mlt}")
    for k in range(REPS * 30):
        ch = int(rng.choice([1, 2, 3, 5, 8]))
        npix = int(rng.choice([1, 2, 3, 7]))
        bits = int(rng.integers(1, 32))
        x = rng.integers(-(1 << bits) + 1, 1 << bits, size=(npix, ch))
        if rng.random() < 0.1:
            x.flat[0] = -(1 << 31)
        mult = rng.integers(0, 1 << 31, size=ch) >> rng.integers(0, 31, size=ch)
        mul32(lib, x, mult, int(rng.integers(-10, 10)), int(rng.integers(-40, 10)), what=f"random {k}")


# ---- headroom ----------------------------------------------------------------------------------------
def test_headroom_every_shift(lib):
    """Every int16 value, every shift 0..35 (bits x fan-in), plus random tensors."""
    x = np.arange(-32768, 32768)
    for bits in range(0, 32, 3):
        for fan in (1, 2, 3, 255, 256, 257, 1 << 12, 1 << 20):
            m = a16(x)
            eo = ct.c_int32(7)
            assert lib.mt_grad_headroom_s16(bits, fan, m.size, p16(m), ct.byref(eo)) == 0
            check(m, eo.value, gradfmt.headroom(Grad(x, 7), bits, fan), f"headroom bits={bits} fan={fan}")
    rng = np.random.default_rng(14)
    for k in range(REPS * 40):
        n = int(rng.integers(0, 40))
        top = int(2 ** rng.integers(0, 16) - 1)
        m0 = rng.integers(-top, top + 1, size=n)
        bits = int(rng.integers(0, 32))
        fan = int(rng.choice([1, 2, 3, 7, 64, 255, 256, 257, 4096, 1 << 20]))
        m = a16(m0)
        eo = ct.c_int32(-3)
        assert lib.mt_grad_headroom_s16(bits, fan, m.size, p16(m), ct.byref(eo)) == 0
        check(m, eo.value, gradfmt.headroom(Grad(m0, -3), bits, fan), f"headroom random {k}")


# ---- renormalize -------------------------------------------------------------------------------------
def renorm(lib, acc, e: int, what: str) -> None:
    a = a32(acc)
    m = np.zeros(a.size, np.int16)
    eo = ct.c_int32(0)
    assert lib.mt_grad_renormalize_s32(a.size, p32(a), e, p16(m), ct.byref(eo)) == 0
    check(m, eo.value, gradfmt.renormalize(np.asarray(acc, np.int64), e), what)


def test_renormalize(lib):
    rng = np.random.default_rng(15)
    imax = (1 << 31) - 1
    edge = [np.array([imax, -imax, 0]), np.array([-(1 << 31), 1]), np.array([imax - 65535, -(1 << 16)]),
            np.array([imax - 65536]), np.array([-(1 << 31) + 1]), np.array([32767, -32767]), np.array([32768]),
            np.array([65535, -1]), np.array([(1 << 16) + 2, -(1 << 16) - 2, 3 << 14]), np.zeros(5, np.int64),
            np.array([], np.int64)]
    for acc in edge:
        renorm(lib, acc, 3, f"edge {acc[:3]}")
    # every rounding boundary: values around k * 2^s + 2^(s-1) for every s, both signs
    for s in range(1, 18):
        base = np.arange(-40, 41) * (1 << s) + (1 << (s - 1))
        for top in ((1 << (s + 15)) - (1 << (s - 1)) - 1, (1 << (s + 15)) - (1 << (s - 1))):
            acc = np.concatenate([base, -base, [top, -top]])
            acc = acc[np.abs(acc) <= imax]
            renorm(lib, acc, 0, f"boundaries s={s}")
    for k in range(REPS * 40):
        bits = int(rng.integers(0, 32))
        acc = rng.integers(-(1 << bits) + 1, 1 << bits, size=int(rng.integers(1, 45)))
        renorm(lib, acc, int(rng.integers(-80, 40)), f"random {k}")
