"""The generated program on emulated devices: same integers as the numpy engine.

The program of the example model is cross-compiled with the bare-metal port of the board
(firmware/port/qemu-mps2 for Cortex-M4/M7 with the DSP kernel variants, firmware/port/qemu-riscv-virt
for rv32imac; the sources firmware.PORTS lists) and firmware/port/qemu-mps2/smoke_main.c, run under
QEMU on samples compiled into the image, and reports every step's loss / correct / ties and the final
checkpoint over semihosting. Each step must equal the numpy engine's (Int8Trainer) and the checkpoint
must be byte-identical to the host build's (whose trained tensors tests/test_codegen.py already checks
against numpy). This is the engine alone, on the real instruction sets; tests/test_device_firmware.py
drives the same program through the serial protocol.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
FW = ROOT / "firmware"
os.environ.setdefault("MICROTRAIN_CACHE", str(ROOT / "build" / "native"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from microtrain.compiler.codegen import generate  # noqa: E402
from microtrain.compiler.codegen.firmware import PORTS  # noqa: E402
from microtrain.compiler.codegen.native import NativeTrainer  # noqa: E402
from microtrain.compiler.schedule import FGOptions, Schedule  # noqa: E402
from microtrain.compiler.train_int import Int8Trainer, int8_samples  # noqa: E402

COMMON = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-fno-strict-aliasing", "-ffunction-sections",
          "-fdata-sections"]
TARGETS = {
    # name: (compiler, flags, port dir, dsp sources?, qemu command)
    "qemu-m4": ("arm-none-eabi-gcc", ["-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=soft", "-DMT_USE_DSP",
                                      "-nostartfiles", "--specs=nosys.specs"], "qemu-mps2", True,
                ["qemu-system-arm", "-M", "mps2-an386", "-cpu", "cortex-m4"]),
    "qemu-m7": ("arm-none-eabi-gcc", ["-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=soft", "-DMT_USE_DSP",
                                      "-nostartfiles", "--specs=nosys.specs"], "qemu-mps2", True,
                ["qemu-system-arm", "-M", "mps2-an500", "-cpu", "cortex-m7"]),
    "qemu-rv32-virt": ("riscv64-unknown-elf-gcc", ["-march=rv32imac", "-mabi=ilp32", "-mcmodel=medany",
                                                   "-ffreestanding", "-nostartfiles", "-nostdlib"],
                       "qemu-riscv-virt", False,
                       ["qemu-system-riscv32", "-M", "virt", "-bios", "none"]),
}
CASES = [
    ("sparse-stochastic", Schedule("sparse", bias_last=2, update={0: 0.5, -1: 1.0}), dict(remedy="stochastic")),
    ("hybrid-master-acc", Schedule("hybrid", fg=FGOptions(m=2, batch=2)),
     dict(remedy="master", loss_input="acc", momentum=0.5, fg_lr=0.02)),
]
STEPS = 12


@pytest.fixture(scope="module")
def digits():
    from microtrain.compiler.frontend import load_model
    from microtrain.compiler.quantize import quantize_graph
    from microtrain.host.data import load_data

    fmodel = load_model(str(ROOT / "examples" / "digits_cnn.onnx"))
    qmodel = quantize_graph(fmodel, load_data("digits-clean", fmodel).x_train[:64])
    task = load_data("digits", fmodel)
    return qmodel, task.x_train, np.asarray(task.y_train, np.int64)


def _build(target: str, workdir: Path) -> Path:
    cc, flags, _, dsp, _ = TARGETS[target]
    srcs = sorted((FW / "src" / "kernels").glob("*.c"))
    if dsp:
        srcs += sorted((FW / "src" / "kernels" / "dsp").glob("mt_*_dsp.c"))
    port = PORTS[target]  # startup, UART, cycles, semihosting, stack (compiler/codegen/firmware.py)
    elf = workdir / f"{target}.elf"
    cmd = [cc, *COMMON, *flags, f"-I{FW / 'include'}", *(f"-I{FW / d}" for d in port.include_dirs), f"-I{workdir}",
           *(str(FW / s) for s in port.sources), str(FW / "port" / "qemu-mps2" / "smoke_main.c"),
           str(workdir / "mt_model.c"), *map(str, srcs), "-T", str(FW / port.ldscript), "-Wl,--gc-sections",
           "-Wl,--no-warn-rwx-segments", "-lgcc", "-o", str(elf)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-4000:]
    return elf


@pytest.mark.parametrize("target", list(TARGETS))
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_device_steps_and_checkpoint_equal_the_engines(digits, tmp_path, target, case):
    cc, _, _, _, qemu = TARGETS[target]
    for tool in (cc, qemu[0]):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (make toolchains)")
    cid, sched, kw = case
    graph, xf, y = digits
    kw = dict(kw, seed=11, lr=0.05, lr_schedule="cosine", total_steps=STEPS)
    ref = Int8Trainer(graph, sched, **kw)
    b = ref.samples_per_step
    ref.prepare_batches(1, b)
    x = int8_samples(ref, xf[:STEPS * b])
    yy = y[:STEPS * b]
    gen = generate(graph, sched, **{k: v for k, v in kw.items() if k not in ("seed", "total_steps")})
    for name, text in gen.files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "mt_smoke_data.h").write_text(
        f"#define MT_SMOKE_STEPS {STEPS}\n#define MT_SMOKE_SEED {kw['seed']}u\n#define MT_SMOKE_TOTAL {STEPS}\n"
        "static const int8_t mt_smoke_x[] = {" + ",".join(map(str, x.ravel().tolist())) + "};\n"
        "static const int32_t mt_smoke_y[] = {" + ",".join(map(str, yy.tolist())) + "};\n")
    elf = _build(target, tmp_path)
    p = subprocess.run([*qemu, "-nographic", "-monitor", "none", "-semihosting-config", "enable=on,target=native",
                        "-kernel", str(elf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=120)  # semihosting output goes to QEMU's stderr
    assert p.returncode == 0 and "END" in p.stdout, (p.returncode, p.stdout[-2000:])
    steps = [tuple(int(v) for v in m) for m in re.findall(r"STEP (\d+) (-?\d+) (-?\d+) (-?\d+)", p.stdout)]
    assert len(steps) == STEPS
    host = NativeTrainer(graph, sched, generated=gen, seed=kw["seed"], total_steps=STEPS)
    for t in range(STEPS):
        r = ref.step(x[t * b:(t + 1) * b], yy[t * b:(t + 1) * b])
        host.step(x[t * b:(t + 1) * b], yy[t * b:(t + 1) * b])
        assert steps[t] == (t, r.loss_q16, r.correct, r.skipped), f"{target} {cid} step {t}"
    device_ck = bytes.fromhex(re.search(r"CK ([0-9a-f]+)", p.stdout).group(1))
    assert device_ck == host.checkpoint(), f"{target} {cid}: checkpoint differs"
    for name, v in host.params.items():  # and the host build's tensors are the numpy engine's
        np.testing.assert_array_equal(v, ref.params[name], err_msg=f"{target} {cid} {name}")
