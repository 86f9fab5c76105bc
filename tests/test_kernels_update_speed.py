"""The fast paths of the fused weight updates (mt_*_update_s8, mt_bias_update_s32, their DSP
variants) are bit-exact with the numpy engine.

The per-element chain of the fused updates (mt_wupd_* in mt_fully_connected_update_s8.c) has three
paths: the reference helpers (generic), the fused magnitude chain (three UMLALs) and, for the
master copy without momentum and without a gradient output, a one-multiply estimate with an exact
fallback near rounding boundaries. tests/test_c_kernels_train.py always asks for the gradient, so
the estimate is exercised here: every case runs with and without the gradient output, against
backward_int8 + Int8Trainer._apply. Also here: the new conv2d DSP variant (pass 1 as an SMLAD GEMM,
mt_wgrad_gemm_dsp.h) against the portable kernel, every output byte for byte (scratch included);
the estimate near every boundary of its result (a C harness that scans the accumulators around
each step of the exact chain); bias updates with a headroom shift and with more channels than the
kernel keeps on its stack; and the objects free of libc calls (memset/memcpy: -nostdlib builds).
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
import test_c_kernels_train as T  # noqa: E402
from cbuild import DSP_KERNELS, INCLUDE, KERNELS, PEDANTIC, SANITIZE, cross_compile_check, load, ptr  # noqa: E402

from microtrain.compiler import gradfmt  # noqa: E402
from microtrain.compiler.gradfmt import Grad  # noqa: E402
from microtrain.compiler.ops._grad_int import sum_to  # noqa: E402

I8, I16, I32, U32 = ct.c_int8, ct.c_int16, ct.c_int32, ct.c_uint32
MY_DSP = [DSP_KERNELS / f"{k}_dsp.c" for k in ("mt_fully_connected_update_s8", "mt_pointwise_conv2d_update_s8",
                                                 "mt_conv2d_update_s8")]
UPDATE_ARGS = [ct.POINTER(T.FcParams), ct.POINTER(T.SgdParams), ct.POINTER(T.SgdState), I32, ct.POINTER(I32),
               ct.POINTER(I16), I32, ct.POINTER(I8), ct.POINTER(I8), ct.POINTER(I16), ct.POINTER(I32)]


@pytest.fixture(scope="module")
def lib():
    so = load(T.TRAIN_SOURCES + MY_DSP, "kernels_update_speed",
              extra_flags=PEDANTIC + (("-O1",) if SANITIZE else ()))
    for name, (res, args) in T.SIGNATURES.items():
        getattr(so, name).restype = res
        getattr(so, name).argtypes = args
    for k in ("fully_connected", "pointwise_conv2d", "conv2d"):
        fn = getattr(so, f"mt_{k}_update_s8_dsp")
        fn.restype = ct.c_int
        fn.argtypes = getattr(so, f"mt_{k}_update_s8").argtypes
    return so


def _p(a, t):
    return ptr(a, t) if a is not None else None


# the LINEAR_CASES of test_c_kernels_train plus shapes whose rows are long enough for the estimate
# (64 elements or more per output channel) and batch-1 fully_connected (the outer-product path)
EXTRA_CASES = [
    ("fc_b1_wide", "fully_connected", "fully_connected", [(1, 256), (32, 256), (32,)], {"act": "relu"}, {}),
    ("fc_b1_relu6", "fully_connected", "fully_connected", [(1, 96), (7, 96), (7,)], {"act": "relu6"}, {}),
    ("fc_b3_long", "fully_connected", "fully_connected", [(3, 80), (5, 80), (5,)], {}, {}),
    ("conv_long_rows", "conv2d", "conv2d", [(1, 8, 8, 8), (6, 3, 3, 8), (6,)],
     {"stride": (2, 2), "pad": (1, 1, 1, 1), "act": "relu"}, {}),
    ("conv_cin1", "conv2d", "conv2d", [(1, 9, 9, 1), (4, 3, 3, 1), (4,)], {"pad": (1, 1, 1, 1)}, {}),
    ("pointwise_long", "conv2d", "pointwise_conv2d", [(1, 4, 4, 72), (6, 1, 1, 72), (6,)], {"act": "relu"}, {}),
]
CASES = T.LINEAR_CASES + EXTRA_CASES


def _lrs(rng) -> list[float]:
    # the bench's rates (small deltas: the estimate's range) and the wide random ones of the engine tests
    return [float(np.exp(rng.uniform(-9, -3))), float(np.exp(rng.uniform(-9, 0)))]


#: update kernels with a DSP variant (mt_dispatch.h): the dsp cases exist only for those
_DSP_UPDATES = set(re.findall(r"#define MT_HAS_DSP_(mt_\w+_update_s8) 1",
                              (Path(__file__).resolve().parents[1] / "firmware" / "include" / "mt_dispatch.h").read_text()))
_VARIANT_CASES = [(c, v) for v in ("portable", "dsp") for c in CASES
                  if v == "portable" or f"mt_{c[2]}_update_s8" in _DSP_UPDATES]


@pytest.mark.parametrize("case,variant", _VARIANT_CASES, ids=[f"{c[0]}-{v}" for c, v in _VARIANT_CASES])
def test_update_without_gradient_output(lib, case, variant):
    """grad = NULL (what generated programs pass): fused chain and estimate paths == numpy engine;
    master / stochastic, with and without momentum, scratch or two passes."""
    cid, op, kern, shapes, attrs, opts = case
    name = f"mt_{kern}_update_s8" + ("_dsp" if variant == "dsp" else "")
    fn = getattr(lib, name)
    axis = T.W_AXIS[op]
    for seed in range(1 if SANITIZE else 3):
        b = T.build(op, shapes, attrs, seed, **opts)
        rng = b.rng
        g = T.masked_c(lib, b)
        par, keep = T.fc_params(b) if op == "fully_connected" else T.conv_params(b)
        x = np.ascontiguousarray(b.xs[0])
        w0 = b.xs[1]
        cout = w0.shape[axis]
        s_w = b.graph.tensors["w"].quant.scale.astype(np.float64)
        s_w = np.full(cout, s_w[0]) if s_w.size == 1 else s_w
        for rows in T._rows_list(cout):
            gw = T.run_numpy(b, 1, rows)
            for k, lr in enumerate(_lrs(rng)):
                remedy = "stochastic" if (seed + k) % 3 == 2 else "master"
                up = T.Update(rng, w0, "weight", axis, rows, s_w, lr, remedy=remedy, momentum=(seed + rows + k) % 4 == 3,
                              qas=bool((seed + k) % 2 == 0))
                up.engine_apply(gw)
                size = int(np.prod(up.w[up.index].shape))
                acc = np.full(size, 7, np.int32) if (seed + rows + k) % 2 else None
                rc = fn(ct.byref(par), ct.byref(up.params), ct.byref(up.state), rows, _p(acc, I32),
                        ptr(g, I16), b.gy.e, ptr(x, I8), ptr(up.c_w, I8), None, None)
                assert rc == 0
                up.check(f"{cid} {variant} seed {seed} rows {rows} lr {lr:.3g} {remedy}")


def _conv_geometry(rng):
    while True:
        n, h, w = int(rng.integers(1, 3)), int(rng.integers(1, 12)), int(rng.integers(1, 12))
        cin, kh, kw = int(rng.integers(1, 10)), int(rng.integers(1, 4)), int(rng.integers(1, 4))
        sh, sw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        dh, dw = (1, 1) if rng.random() < 0.7 else (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        pt, pb = (min(int(rng.integers(0, 3)), (kh - 1) * dh) for _ in range(2))
        pl, pr = (min(int(rng.integers(0, 3)), (kw - 1) * dw) for _ in range(2))
        oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
        ow = (w + pl + pr - dw * (kw - 1) - 1) // sw + 1
        if oh >= 1 and ow >= 1:
            return n, h, w, cin, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr


def test_conv2d_dsp_variant_matches_portable(lib):
    """mt_conv2d_update_s8_dsp (SMLAD GEMM, SXTAB16 packing) == mt_conv2d_update_s8, every output
    and the scratch, over random geometries (padding, strides, dilation, 1..9 channels)."""
    rng = np.random.default_rng(31)
    for i in range(60 if SANITIZE else 200):
        n, h, w, cin, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl, pb, pr = _conv_geometry(rng)
        cout = int(rng.integers(1, 20))
        zp = int(rng.choice([-128, 0, int(rng.integers(-128, 128))]))
        par = T.ConvParams(T.Dims(n, h, w, cin), T.Dims(n, oh, ow, cout), T.HW(kh, kw), T.HW(sh, sw), T.HW(dh, dw),
                           T.Padding(pt, pl, pb, pr), zp, int(rng.integers(1 << 30, 1 << 31)), int(rng.integers(-12, 1)),
                           8 if zp <= 0 else 9, None, -7, 7)
        x = rng.integers(-128, 128, (n, h, w, cin)).astype(np.int8)
        x[rng.random(x.shape) < 0.4] = zp
        top = int(rng.choice([3, 4000, 32767]))
        g = rng.integers(-top, top + 1, (n, oh, ow, cout)).astype(np.int16)
        g[rng.random(g.shape) < 0.3] = 0
        rows = int(rng.integers(1, cout + 1))
        kk = kh * kw * cin
        mult = rng.integers(1 << 30, 1 << 31, rows).astype(np.int32)
        mu = int(rng.integers(1, 1 << 31)) if rng.random() < 0.3 else 0
        kind = int(rng.integers(0, 2))
        w0 = rng.integers(-127, 128, (cout, kh, kw, cin)).astype(np.int8)
        m0 = np.clip(w0.reshape(cout, -1)[:rows].astype(np.int64) * 256 + rng.integers(-128, 128, (rows, kk)),
                     -32512, 32512).astype(np.int16)
        v0 = rng.integers(-(1 << 30), 1 << 30, rows * kk).astype(np.int32)
        r0 = int(rng.integers(1, 1 << 32))
        lr_shift, shift, lr = int(rng.integers(-14, -2)), int(rng.integers(4, 14)), int(rng.integers(1 << 30, 1 << 31))
        with_grad = i % 3 == 0
        outs = []
        for name in ("mt_conv2d_update_s8", "mt_conv2d_update_s8_dsp"):
            wc, mc, vc, rc_ = w0.copy(), m0.copy(), v0.copy(), np.array([r0], np.uint32)
            up = T.SgdParams(ptr(mult, I32), shift, lr, lr_shift, 16, mu)
            st = T.SgdState(kind, ptr(mc, I16), ptr(rc_, U32), ptr(vc, I32) if mu else None, -127, 127)
            acc = np.full(rows * kk, 7, np.int32)
            grad = np.full(rows * kk, 5, np.int16) if with_grad else None
            ge = ct.c_int32(-999)
            rc = getattr(lib, name)(ct.byref(par), ct.byref(up), ct.byref(st), rows, ptr(acc, I32), ptr(g, I16),
                                    -15, ptr(x, I8), ptr(wc, I8), _p(grad, I16), ct.byref(ge) if grad is not None else None)
            outs.append((rc, wc, mc, vc, rc_, acc, grad, ge.value))
        for u, v, what in zip(outs[0], outs[1], ("rc", "w", "master", "velocity", "rng", "acc", "grad", "grad_e")):
            if isinstance(u, np.ndarray):
                np.testing.assert_array_equal(v, u, err_msg=f"case {i} {what}")
            else:
                assert u == v, f"case {i} {what}"


def test_conv2d_dsp_variant_reference_cases(lib):
    """The conv2d cases of test_c_kernels_train through the DSP variant, against the numpy engine."""
    for case in [c for c in CASES if c[2] == "conv2d"]:
        cid, op, kern, shapes, attrs, opts = case
        b = T.build(op, shapes, attrs, 0, **opts)
        g = T.masked_c(lib, b)
        par, keep = T.conv_params(b)
        x = np.ascontiguousarray(b.xs[0])
        w0 = b.xs[1]
        cout = w0.shape[0]
        s_w = b.graph.tensors["w"].quant.scale.astype(np.float64)
        s_w = np.full(cout, s_w[0]) if s_w.size == 1 else s_w
        for rows in T._rows_list(cout):
            gw = T.run_numpy(b, 1, rows)
            up = T.Update(b.rng, w0, "weight", 0, rows, s_w, 0.01, remedy="master", momentum=rows % 2 == 0)
            up.engine_apply(gw)
            size = int(np.prod(up.w[up.index].shape))
            grad, ge = np.zeros(size, np.int16), ct.c_int32()
            assert lib.mt_conv2d_update_s8_dsp(ct.byref(par), ct.byref(up.params), ct.byref(up.state), rows,
                                               ptr(np.zeros(size, np.int32), I32), ptr(g, I16), b.gy.e, ptr(x, I8),
                                               ptr(up.c_w, I8), ptr(grad, I16), ct.byref(ge)) == 0
            T.assert_grad(grad.reshape(up.w[up.index].shape), ge.value, gw, f"{cid} rows {rows} dW")
            up.check(f"{cid} rows {rows}")


def test_bias_update_headroom_and_many_channels(lib):
    """Bias gradient with a headroom shift (more than 2^16 pixels of full-scale gradient) and with
    more channels than the kernel's on-stack sums (64), against sum_to + sgd_delta + the bias apply."""
    rng = np.random.default_rng(41)
    for pixels, channels, rows in ((70000, 3, 2), (140000, 2, 2), (7, 150, 150), (3, 130, 97), (40, 64, 64)):
        g = rng.integers(-32767, 32768, (pixels, channels)).astype(np.int16)
        g_e = int(rng.integers(-30, -5))
        want = sum_to(Grad(g[:, :rows].astype(np.int64), g_e), (0,), {}, "bias")
        if pixels > 65536:
            assert gradfmt.headroom(Grad(g[:, :rows].astype(np.int64), g_e), 0, pixels).e > g_e
        s_b = np.exp(rng.uniform(-12, -6, channels))
        ub = T.Update(rng, rng.integers(-(1 << 20), 1 << 20, channels).astype(np.int32), "bias", 0, rows, s_b, 0.05,
                      momentum=bool(rows % 2))
        ub.engine_apply(want)
        gb, ge = np.zeros(rows, np.int16), ct.c_int32()
        assert lib.mt_bias_update_s32(ct.byref(ub.params), ct.byref(ub.state), pixels, channels, rows,
                                      ptr(np.ascontiguousarray(g), I16), g_e, ptr(ub.c_w, I32), ptr(gb, I16),
                                      ct.byref(ge)) == 0
        T.assert_grad(gb, ge.value, want, f"bias {pixels}x{channels}")
        ub.check(f"bias {pixels}x{channels}")


ESTIMATE_HARNESS = r"""
#include <stdio.h>
#include <stdlib.h>
#include "mt_fully_connected_update_s8.c"
static uint64_t s_ = 88172645463325252ull;
static uint64_t rnd(void) { s_ ^= s_ << 13; s_ ^= s_ >> 7; s_ ^= s_ << 17; return s_; }
static int32_t rr(int32_t lo, int32_t hi) { return (int32_t)((int64_t)lo + (int64_t)(rnd() % (uint64_t)((int64_t)hi - lo + 1))); }
static uint32_t rd_; /* the draw of the stochastic case (top 16 bits) */
static int est(const mt_wupd *c, const wupd_est *e, int32_t a, int32_t *d)
{
    const uint32_t s = (uint32_t)mt_asr32(a, 31);
    uint32_t h = (uint32_t)(((uint64_t)((((uint32_t)a ^ s) - s) << c->ash) * e->kf) >> 32) + e->qh;
    if (c->stoch) h += rd_ ^ (0xFFFFu & ~s);
    if ((h & 0xFFFFu) > e->trange) return 0;
    *d = mt_wrap32(((h >> 16) ^ ~s) - ~s);
    return 1;
}
/* the exact result: the master's RDBPOT(delta, F - 8), or floor((delta + r) / 2^16) */
static int32_t exact(const mt_wupd *c, int32_t a)
{
    const int32_t d = wupd_exact(c, 0, a);
    return c->stoch ? mt_asr32(d + (int32_t)rd_, 16) : d;
}
int main(int argc, char **argv)
{
    long iters = atol(argv[1]), checked = 0, accepted = 0, cases = 0, it;
    static int32_t mult[1]; static int16_t master[1]; uint32_t rng = 1;
    for (it = 0; it < iters; ++it) {
        mt_sgd_params u; mt_sgd_state st; mt_wupd c; wupd_est e;
        int32_t pmax, nmin, amax, k, sign;
        long budget;
        mult[0] = (rnd() & 3) ? rr(1 << 30, 0x7FFFFFFF) : rr(0, 0x7FFFFFFF);
        u.mult = mult; u.shift = rr(-4, 24); u.lr_mult = rr(1 << 30, 0x7FFFFFFF); u.lr_shift = rr(-24, 6);
        u.frac_bits = (rnd() & 3) ? 16 : rr(8, 31); u.mu = 0;
        st.kind = (rnd() & 1) ? MT_APPLY_MASTER : MT_APPLY_STOCHASTIC;
        st.lo = -127; st.hi = 127;
        if (st.kind == MT_APPLY_STOCHASTIC && (rnd() & 3)) u.frac_bits = 16;
        rd_ = (uint32_t)(rnd() & 0xFFFFu); st.master = master; st.rng = &rng; st.velocity = NULL; st.lo = -127; st.hi = 127;
        amax = (rnd() % 3 == 0) ? rr(1, 1000) : rr(1, 0x7FFFFFFF);
        pmax = amax; nmin = -rr(0, amax);
        if (rnd() & 1) { nmin = -amax; pmax = rr(0, amax); }
        mt_wupd_init(&c, &u, &st, pmax, nmin, rr(-60, 10), (rnd() & 7) ? rr(1 << 30, 0x7FFFFFFF) : rr(0, 0x7FFFFFFF),
                     rr(-12, 2), NULL);
        if (c.mode != MT_WUPD_FAST || !wupd_est_make(&c, 0, &e)) continue;
        ++cases;
        for (k = 0; k < 1000; ++k) {
            int32_t a = rr(nmin, pmax), d1, d2;
            if (a == 0) continue;
            d1 = exact(&c, a);
            if (est(&c, &e, a, &d2)) { ++accepted; if (d1 != d2) { printf("MISMATCH %ld %d %d %d\n", it, a, d1, d2); return 1; } }
            ++checked;
        }
        budget = checked + 100000;
        for (sign = -1; sign <= 1; sign += 2) { /* every value around each step of the exact result */
            int32_t lim = sign > 0 ? pmax : -nmin, a = 1, prev = exact(&c, sign);
            while (a < lim && checked < budget) {
                int32_t step = a / 64 + 1, b = (lim - a < step) ? lim : a + step, db = exact(&c, sign * b), x;
                if (db != prev) {
                    for (x = a; x <= b; ++x) {
                        int32_t d1 = exact(&c, sign * x), d2;
                        if (est(&c, &e, sign * x, &d2)) { ++accepted; if (d1 != d2) { printf("MISMATCH %ld %d %d %d\n", it, sign * x, d1, d2); return 1; } }
                        ++checked;
                    }
                    prev = db;
                }
                a = b;
            }
        }
    }
    printf("%ld %ld %ld\n", cases, checked, accepted);
    return 0;
}
"""


@pytest.mark.skipif(SANITIZE, reason="host harness, not a library")
def test_estimate_exact_near_boundaries(tmp_path):
    """The one-multiply estimate (wupd_est_*: master copy RDBPOT(delta, F - 8), stochastic
    floor((delta + r) / 2^16) with a random draw per slice) either gives the exact chain's result or
    declines (then the chain runs), for random slice constants, checked on random accumulators and
    on every accumulator around each step of the exact result."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no host C compiler")
    src = tmp_path / "est.c"
    src.write_text(ESTIMATE_HARNESS)
    exe = tmp_path / "est"
    subprocess.run([cc, "-O2", "-std=gnu99", "-Wno-unused-function", f"-I{INCLUDE}", f"-I{KERNELS}", str(src),
                    str(KERNELS / "mt_conv2d_update_s8.c"), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe), "1500"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout
    cases, checked, accepted = map(int, out.stdout.split())
    assert cases > 100 and checked > 10 ** 6 and accepted > checked // 2, out.stdout


MY_SOURCES = [KERNELS / f"{k}.c" for k in ("mt_fully_connected_update_s8", "mt_pointwise_conv2d_update_s8",
                                            "mt_conv2d_update_s8", "mt_depthwise_conv2d_update_s8",
                                            "mt_bias_update_s32")]


@pytest.mark.skipif(SANITIZE, reason="cross builds only")
@pytest.mark.parametrize("target", ["cortex-m4", "cortex-m0plus", "rv32imac"])
@pytest.mark.parametrize("opt", ["-O2", "-Os"])
def test_no_libc_calls(target, opt, tmp_path):
    """The portable update kernels call no memset/memcpy (loops the compiler could turn into them
    are kept as loops): -nostdlib images link them."""
    objs = cross_compile_check(MY_SOURCES, target, extra_flags=("-pedantic", "-Wvla", "-Wshadow", "-Wconversion", opt),
                               out_dir=tmp_path)
    nm = {"rv32imac": "riscv64-unknown-elf-nm"}.get(target, "arm-none-eabi-nm")
    undefined = subprocess.run([nm, "-u", *map(str, objs)], capture_output=True, text=True, check=True).stdout
    assert "memset" not in undefined and "memcpy" not in undefined, undefined


@pytest.mark.skipif(SANITIZE, reason="already running under the sanitizers")
def test_under_sanitizers():
    from cbuild import run_sanitized_pytest

    proc = run_sanitized_pytest(Path(__file__), "-k", "not test_under_sanitizers and not test_no_libc_calls "
                                                      "and not test_estimate", timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:]
