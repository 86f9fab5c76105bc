"""The GEMM family (fully_connected forward / acc_s32 / input gradient, pointwise conv2d forward /
input gradient): the new DSP variant mt_fully_connected_acc_s32_dsp, and every DSP variant of the
family on the real instructions under QEMU, with instruction-count bounds.

- Host: mt_fully_connected_acc_s32_dsp (through the emulated intrinsics of mt_dsp.h) gives the
  portable kernel's accumulators (batch 1..5, Cin 1..70 - every residue mod 8 -, weight split at
  every row, per-tensor weight zero points).
- QEMU (Cortex-M4 mps2-an386, Cortex-M7 mps2-an500; skipped without arm-none-eabi-gcc /
  qemu-system-arm): a bare-metal program built with -DMT_USE_DSP runs the portable kernels and
  their _dsp variants (SMLAD/SXTB16 and the assembly loops of mt_dsp.h and the dsp/ sources) on
  random cases (Cin 8 and 16 - the special-cased assembly -, multiples of 8, odd sizes; full and
  clamped output ranges; requantization shifts from -31 to +4 and zero multipliers; weight splits;
  batch and pixel counts odd and even; sparse gradients) and compares every output byte. The host
  tests can only check the C emulations of the intrinsics; this is the check of the instructions.
  It also counts instructions (SysTick * 40 under -icount shift=0) on MobileNetV2-0.35 / small-CNN
  shapes and asserts upper bounds per multiply-accumulate (regression guards, ~10% above the
  measured values).
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
from cbuild import DSP_KERNELS, FIRMWARE, INCLUDE, KERNELS, PEDANTIC, SANITIZE, load, ptr  # noqa: E402

ACC_SOURCES = [KERNELS / "mt_fully_connected_acc_s32.c", DSP_KERNELS / "mt_fully_connected_acc_s32_dsp.c"]


@pytest.fixture(scope="module")
def acc_lib() -> ct.CDLL:
    so = load(ACC_SOURCES, "mt_gemm_acc", extra_flags=PEDANTIC + ("-Wshadow", "-Wconversion"))
    for name in ("mt_fully_connected_acc_s32", "mt_fully_connected_acc_s32_dsp"):
        getattr(so, name).argtypes = F.SIGNATURES["mt_fully_connected_acc_s32"]
        getattr(so, name).restype = ct.c_int
    return so


def test_fully_connected_acc_dsp_matches_portable(acc_lib):
    rng = np.random.default_rng(7101)
    residues = set()
    for i in range(200 // (3 if SANITIZE else 1)):
        n, cin, cout = int(rng.integers(1, 6)), int(rng.integers(1, 71)), int(rng.integers(1, 14))
        residues.add(cin % 8)
        x = F.int8_input(rng, (n, cin))
        w = F.int8_input(rng, (cout, cin))
        bias = rng.integers(-(1 << 20), 1 << 20, cout).astype(np.int32) if i % 4 else None
        in_zp, w_zp = F.zero_point(rng), (int(rng.integers(-128, 128)) if i % 3 == 0 else 0)
        want = (x.astype(np.int64) - in_zp) @ (w.astype(np.int64) - w_zp).T
        want = want + (bias if bias is not None else 0)
        splits = [None] + (list(range(cout + 1)) if i % 10 == 0 else [int(rng.integers(0, cout + 1))])
        for split in splits:
            for fn in (acc_lib.mt_fully_connected_acc_s32, acc_lib.mt_fully_connected_acc_s32_dsp):
                head, ws, hold = F.split_weights(w, split)
                params = F.FcParams(in_zp, w_zp, 0, -128, 127, ws)
                acc = np.full((n, cout), 77, np.int32)
                assert fn(ct.byref(params), n, cin, ptr(x, ct.c_int8), cout, ptr(head, ct.c_int8),
                          ptr(bias, ct.c_int32) if bias is not None else None, ptr(acc, ct.c_int32)) == 0
                del hold
                np.testing.assert_array_equal(acc, want, err_msg=f"case {i} split {split} {fn.__name__}")
    if not SANITIZE:
        assert residues == set(range(8))
    params = F.FcParams(0, 0, 0, -128, 127, F.WSplit())
    assert acc_lib.mt_fully_connected_acc_s32_dsp(ct.byref(params), 1, 0, None, 1, None, None, None) == -1


# =================================================================================================
# The real instructions under QEMU
# =================================================================================================
HARNESS = r"""
#include <stdint.h>
#include <stddef.h>
#include "mt_kernels_dsp.h"
#include "mt_port.h"

void mt_port_log(const char *s);
void mt_port_exit(int code);
mt_status mt_fully_connected_acc_s32_dsp(const mt_fc_params *p, int32_t batch, int32_t in_features,
                                         const int8_t *in, int32_t out_features, const int8_t *w,
                                         const int32_t *bias, int32_t *acc);

static char line[200];
static uint32_t rs = 2463534242u;
static int failures;
static uint32_t rnd(void) { rs ^= rs << 13; rs ^= rs >> 17; rs ^= rs << 5; return rs; }
static int32_t rint_(int32_t lo, int32_t hi) { return lo + (int32_t)(rnd() % (uint32_t)(hi - lo + 1)); }
static char *put_s(char *p, const char *s) { while (*s) *p++ = *s++; return p; }
static char *put_u(char *p, uint32_t v) { char t[11]; int n = 0; do { t[n++] = (char)('0' + v % 10u); v /= 10u; } while (v); while (n) *p++ = t[--n]; return p; }
static int same(const void *a, const void *b, size_t n) { const uint8_t *x = a, *y = b; while (n--) if (*x++ != *y++) return 0; return 1; }

#define MAXB 200000
static int8_t xin[MAXB], wts[MAXB], tail_w[MAXB], out0[MAXB], out1[MAXB];
static int32_t bias[2048], mult[2048], shft[2048], wmul[2048];
static int32_t acc0[40000], acc1[40000];
static int16_t g16[40000], gs0[40000], gs1[40000], gx0[40000], gx1[40000];

static void fill8(int8_t *p, int32_t n) { while (n--) *p++ = (int8_t)(rnd() & 0xFFu); }
static void quant(int32_t cout, int wide)
{
    int32_t o;
    for (o = 0; o < cout; ++o) {
        bias[o] = rint_(-(1 << 20), 1 << 20);
        mult[o] = (int32_t)((1u << 30) + rnd() % (1u << 30));
        shft[o] = wide ? rint_(-31, 4) : rint_(-11, -6);
        if (wide && rnd() % 16u == 0u) mult[o] = 0;
    }
}
/* w rows [split, cout) copied to tail_w: the kernel sees the split layout */
static const int8_t *split_w(int32_t cout, int32_t cin, int32_t split, mt_wsplit *ws)
{
    int32_t i;
    if (split < 0) { ws->tail = NULL; ws->rows = 0; return wts; }
    for (i = 0; i < (cout - split) * cin; ++i) tail_w[i] = wts[split * cin + i];
    ws->tail = (cout > split) ? tail_w : NULL;
    ws->rows = split;
    return wts;
}
static void report(const char *what, int32_t a, int32_t b, int32_t c, uint32_t t0, uint32_t t1, int ok)
{
    char *p = line;
    p = put_s(p, what); *p++ = ' '; p = put_u(p, (uint32_t)a); *p++ = ' '; p = put_u(p, (uint32_t)b);
    *p++ = ' '; p = put_u(p, (uint32_t)c); *p++ = ' '; p = put_u(p, t0); *p++ = ' '; p = put_u(p, t1);
    p = put_s(p, ok ? " OK\n" : " MISMATCH\n"); *p = 0;
    failures += !ok;
    mt_port_log(line);
}
#define TIME(v, call) do { uint32_t c0_ = mt_port_cycles(); call; v = (mt_port_cycles() - c0_) * 40u; } while (0)

static void pw(int32_t px, int32_t cin, int32_t cout, int mode, int32_t split, const char *tag)
{
    static int16_t scratch[4096];
    mt_conv_params p;
    mt_per_channel_quant q = {mult, shft};
    mt_dims di = {1, px, 1, cin}, df = {cout, 1, 1, cin}, dout = {1, px, 1, cout};
    uint32_t t0, t1;
    int i, ok;
    const int8_t *w;
    for (i = 0; i < (int)sizeof p; ++i) ((uint8_t *)&p)[i] = 0;
    p.in_zp = rint_(-128, 127); p.out_zp = rint_(-128, 127);
    p.stride.h = p.stride.w = p.dilation.h = p.dilation.w = 1;
    p.act_min = (mode == 1) ? rint_(-128, 0) : -128; p.act_max = (mode == 1) ? rint_(1, 127) : 127;
    fill8(xin, px * cin); fill8(wts, cout * cin); quant(cout, mode != 0);
    w = split_w(cout, cin, split, &p.split);
    TIME(t0, mt_pointwise_conv2d_fwd_s8(scratch, &p, &q, &di, xin, &df, w, (mode == 2) ? NULL : bias, &dout, out0));
    TIME(t1, mt_pointwise_conv2d_fwd_s8_dsp(scratch, &p, &q, &di, xin, &df, w, (mode == 2) ? NULL : bias, &dout, out1));
    ok = same(out0, out1, (size_t)(px * cout));
    report(tag, px, cin, cout, t0, t1, ok);
}

static void fc(int32_t n, int32_t cin, int32_t cout, int mode, int32_t split, const char *tag)
{
    mt_fc_params p;
    mt_per_channel_quant q = {mult, shft};
    uint32_t t0, t1, t2, t3;
    const int8_t *w;
    p.in_zp = rint_(-128, 127); p.out_zp = rint_(-128, 127);
    p.w_zp = (mode == 3) ? rint_(-128, 127) : 0;
    p.act_min = (mode == 1) ? rint_(-128, 0) : -128; p.act_max = (mode == 1) ? rint_(1, 127) : 127;
    fill8(xin, n * cin); fill8(wts, cout * cin); quant(cout, mode != 0);
    w = split_w(cout, cin, split, &p.split);
    TIME(t0, mt_fully_connected_fwd_s8(&p, &q, n, cin, xin, cout, w, bias, out0));
    TIME(t1, mt_fully_connected_fwd_s8_dsp(&p, &q, n, cin, xin, cout, w, bias, out1));
    report(tag, n, cin, cout, t0, t1, same(out0, out1, (size_t)(n * cout)));
    TIME(t2, mt_fully_connected_acc_s32(&p, n, cin, xin, cout, w, bias, acc0));
    TIME(t3, mt_fully_connected_acc_s32_dsp(&p, n, cin, xin, cout, w, bias, acc1));
    report("acc", n, cin, cout, t2, t3, same(acc0, acc1, (size_t)(n * cout) * 4u));
}

static void bwd(int pointwise, int32_t n, int32_t cin, int32_t cout, int zero_pct, int with_acc,
                int32_t split, int w_zp, const char *tag)
{
    mt_fc_train_params f;
    mt_conv_train_params c;
    int32_t e0 = -99, e1 = -98, i;
    uint32_t t0, t1;
    const int8_t *w;
    int ok;
    for (i = 0; i < cout; ++i) wmul[i] = (int32_t)((1u << 29) + rnd() % (3u << 29));
    for (i = 0; i < (int)sizeof f; ++i) ((uint8_t *)&f)[i] = 0;
    for (i = 0; i < (int)sizeof c; ++i) ((uint8_t *)&c)[i] = 0;
    fill8(wts, cout * cin);
    for (i = 0; i < cout * cin; ++i) if (wts[i] == -128) wts[i] = -127;
    for (i = 0; i < n * cout; ++i) g16[i] = (int16_t)(((int32_t)(rnd() % 100u) < zero_pct) ? 0 : rint_(-9000, 9000));
    f.batch = n; f.in_features = cin; f.out_features = cout; f.w_zp = w_zp ? rint_(-20, 20) : 0;
    f.x_mult = 1 << 30; f.x_shift = -7; f.x_bits = 8; f.w_mult = wmul; f.w_shift = -9; f.w_bits = w_zp ? 8 : 7;
    c.in.n = 1; c.in.h = n; c.in.w = 1; c.in.c = cin; c.out = c.in; c.out.c = cout;
    c.kernel.h = c.kernel.w = 1; c.stride = c.kernel; c.dilation = c.kernel;
    c.x_mult = 1 << 30; c.x_shift = -7; c.x_bits = 8; c.w_mult = wmul; c.w_shift = -9; c.w_bits = 7;
    w = split_w(cout, cin, split, pointwise ? &c.split : &f.split);
    if (pointwise) {
        TIME(t0, mt_pointwise_conv2d_bwd_input_s16(&c, gs0, with_acc ? acc0 : NULL, g16, -20, w, gx0, &e0));
        TIME(t1, mt_pointwise_conv2d_bwd_input_s16_dsp(&c, gs1, with_acc ? acc1 : NULL, g16, -20, w, gx1, &e1));
    } else {
        TIME(t0, mt_fully_connected_bwd_input_s16(&f, gs0, with_acc ? acc0 : NULL, g16, -20, w, gx0, &e0));
        TIME(t1, mt_fully_connected_bwd_input_s16_dsp(&f, gs1, with_acc ? acc1 : NULL, g16, -20, w, gx1, &e1));
    }
    ok = e0 == e1 && same(gx0, gx1, (size_t)(n * cin) * 2u) && same(gs0, gs1, (size_t)(n * cout) * 2u);
    if (with_acc) ok = ok && same(acc0, acc1, (size_t)(n * cin) * 4u);
    report(tag, n, cin, cout, t0, t1, ok);
}

int main(void)
{
    int i;
    mt_port_init();
    /* speed shapes (MobileNetV2-0.35 128x128, the small CNN / example heads) */
    pw(4096, 8, 48, 0, -1, "S pw");
    pw(4096, 16, 8, 0, -1, "S pw");
    pw(256, 16, 96, 0, -1, "S pw");
    pw(64, 24, 144, 0, -1, "S pw");
    pw(64, 192, 32, 0, -1, "S pw");
    pw(16, 112, 1280, 0, -1, "S pw");
    pw(16, 336, 112, 0, -1, "S pw");
    fc(1, 256, 32, 0, -1, "S fc");
    fc(1, 1280, 10, 0, -1, "S fc");
    fc(1, 64, 32, 0, -1, "S fc");
    bwd(1, 16, 112, 1280, 30, 1, -1, 0, "S pwbwd");
    bwd(1, 16, 336, 112, 30, 1, -1, 0, "S pwbwd");
    bwd(1, 64, 192, 32, 30, 1, -1, 0, "S pwbwd");
    bwd(0, 1, 256, 32, 0, 1, -1, 0, "S fcbwd");
    bwd(0, 1, 1280, 10, 0, 1, -1, 0, "S fcbwd");
    /* random cases */
    for (i = 0; i < 120; ++i) {
        const int32_t cin = (i % 4 == 0) ? 8 : (i % 4 == 1) ? 16 : (i % 4 == 2) ? 8 * rint_(1, 9) : rint_(1, 70);
        const int32_t cout = rint_(1, 13);
        pw(rint_(1, 9), cin, cout, i % 3, (i % 5 == 0) ? rint_(0, cout) : -1, "R pw");
    }
    for (i = 0; i < 80; ++i) {
        const int32_t cout = rint_(1, 13);
        fc(rint_(1, 5), (i % 3 == 0) ? 8 * rint_(1, 9) : rint_(1, 70), cout, i % 4, (i % 5 == 0) ? rint_(0, cout) : -1, "R fc");
    }
    for (i = 0; i < 80; ++i) {
        const int32_t cout = rint_(1, 70);
        bwd(i & 1, rint_(1, 9), rint_(1, 70), cout, rint_(0, 70), (i % 3) != 0, (i % 4 == 0) ? rint_(0, cout) : -1,
            !(i & 1) && (i % 6 == 0), "R bwd");
    }
    mt_port_log(failures ? "FAILURES\n" : "ALL OK\n");
    mt_port_exit(0);
    return 0;
}
"""

#: upper bounds, instructions per MAC of the DSP variant (measured on qemu-m4 / m7 plus ~10%)
DSP_BOUNDS = {("S pw", 4096, 8, 48): 3.0, ("S pw", 4096, 16, 8): 2.2, ("S pw", 256, 16, 96): 2.2,
              ("S pw", 16, 112, 1280): 1.8, ("S pw", 16, 336, 112): 1.7, ("S fc", 1, 256, 32): 2.1,
              ("S pwbwd", 16, 112, 1280): 1.6, ("S pwbwd", 16, 336, 112): 1.6}
BOARDS = {"qemu-m4": ("cortex-m4", "mps2-an386"), "qemu-m7": ("cortex-m7", "mps2-an500")}


@pytest.mark.skipif(SANITIZE, reason="host sanitizer run only")
@pytest.mark.parametrize("board", sorted(BOARDS))
def test_dsp_variants_on_qemu(board, tmp_path):
    if shutil.which("arm-none-eabi-gcc") is None or shutil.which("qemu-system-arm") is None:
        pytest.skip("arm-none-eabi-gcc / qemu-system-arm not installed")
    cpu, machine = BOARDS[board]
    (tmp_path / "main.c").write_text(HARNESS)
    (tmp_path / "mt_model.h").write_text("#define MT_PARAMS_BYTES 0\n")
    family = ["mt_pointwise_conv2d_fwd_s8", "mt_fully_connected_fwd_s8", "mt_fully_connected_acc_s32",
              "mt_fully_connected_bwd_input_s16", "mt_pointwise_conv2d_bwd_input_s16"]
    srcs = [KERNELS / f"{k}.c" for k in family]
    srcs += [DSP_KERNELS / f"{k}_dsp.c" for k in family]
    srcs += [KERNELS / f"{k}.c" for k in ("mt_grad_mul_q31_s16", "mt_grad_headroom_s16", "mt_grad_renormalize_s32")]
    port = FIRMWARE / "port"
    srcs += [port / "qemu-mps2" / "startup.c", port / "qemu-mps2" / "mt_port_mps2.c",
             port / "common" / "mt_semihost.c", port / "common" / "mt_stack.c", tmp_path / "main.c"]
    elf = tmp_path / "gemm.elf"
    cmd = ["arm-none-eabi-gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-fno-strict-aliasing",
           "-ffunction-sections", "-fdata-sections", f"-mcpu={cpu}", "-mthumb", "-mfloat-abi=soft", "-DMT_USE_DSP",
           "-DMT_PORT_STORAGE_SIZE=0u", f"-I{INCLUDE}", f"-I{port / 'common'}", f"-I{tmp_path}",
           *map(str, srcs), "-nostartfiles", "--specs=nosys.specs", "-T", str(port / "qemu-mps2" / "link.ld"),
           "-Wl,--gc-sections", "-Wl,--no-warn-rwx-segments", "-lgcc", "-o", str(elf)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-3000:]
    run = subprocess.run(["qemu-system-arm", "-M", machine, "-cpu", cpu, "-nographic", "-monitor", "none",
                          "-serial", "null", "-semihosting-config", "enable=on,target=native", "-icount", "shift=0",
                          "-kernel", str(elf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=600)
    out = run.stdout
    bad = [ln for ln in out.splitlines() if ln.endswith("MISMATCH")]
    assert not bad, "\n".join(bad[:20])
    assert "ALL OK" in out, out[-3000:]
    rows = re.findall(r"^(S \w+) (\d+) (\d+) (\d+) (\d+) (\d+) OK$", out, flags=re.M)
    assert len(rows) >= 15
    print(f"\n{board}: instructions (portable, dsp, per MAC, portable/dsp)")
    for tag, a, b, c, t0, t1 in rows:
        a, b, c, t0, t1 = int(a), int(b), int(c), int(t0), int(t1)
        macs = a * b * c
        print(f"  {tag:9s} {a:5d}x{b:4d}x{c:4d}  {t0:9d} {t1:9d}  {t1 / macs:5.2f}  {t0 / max(t1, 1):4.2f}x")
        bound = DSP_BOUNDS.get((tag, a, b, c))
        if bound is not None:
            assert t1 <= bound * macs, f"{tag} {a}x{b}x{c}: {t1 / macs:.2f} instructions/MAC > {bound}"
