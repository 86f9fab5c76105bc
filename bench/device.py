"""Instructions per training step on emulated Cortex-M4/M7: portable kernels vs the DSP variants.

    python bench/device.py [--out bench/results/device.json] [--no-mobilenet] [--steps N]

The generated program (compiler/codegen) is cross-compiled (arm-none-eabi-gcc -O2) with the
bare-metal port firmware/port/qemu-mps2 twice: portable kernels only, and with -DMT_USE_DSP (the
SMLAD/SXTB16 variants of firmware/src/kernels/dsp, selected by mt_dispatch.h). QEMU runs it with
`-icount shift=0`: every guest instruction advances virtual time by 1 ns, and the port's SysTick
counts the 25 MHz SYSCLK, so instructions = ticks * 40 (exact to 40 instructions per reading).
The program reports each step's ticks (mt_metrics.cycles); the first step is left out.

Models: the example model (sparse schedule) and the MobileNetV2-w0.35 128x128 fixture with the
MIT-style sparse scheme (stochastic rounding). Prints JSON and writes it to --out. The
serial-protocol device runs (bench/device.py of the Devices issue) will extend this.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FW = ROOT / "firmware"
PORT = FW / "port" / "qemu-mps2"
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

INSTR_PER_TICK = 40  # 1 ns per instruction (-icount shift=0) / 25 MHz SysTick
MACHINES = {"qemu-m4": ("mps2-an386", "cortex-m4"), "qemu-m7": ("mps2-an500", "cortex-m7")}
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-fno-strict-aliasing", "-ffunction-sections",
          "-fdata-sections", "-mthumb", "-mfloat-abi=soft"]


def build(gen, x: np.ndarray, y: np.ndarray, steps: int, cpu: str, dsp: bool, work: Path) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    for name, text in gen.files.items():
        (work / name).write_text(text)
    (work / "mt_smoke_data.h").write_text(
        f"#define MT_SMOKE_STEPS {steps}\n#define MT_SMOKE_SEED 1u\n#define MT_SMOKE_TOTAL {steps}\n"
        "static const int8_t mt_smoke_x[] = {" + ",".join(map(str, x.ravel().tolist())) + "};\n"
        "static const int32_t mt_smoke_y[] = {" + ",".join(map(str, y.tolist())) + "};\n")
    srcs = sorted((FW / "src" / "kernels").glob("*.c"))
    if dsp:
        srcs += sorted((FW / "src" / "kernels" / "dsp").glob("mt_*_dsp.c"))
    from microtrain.compiler.codegen.firmware import PORTS

    port = PORTS["qemu-m4"]  # the mps2 port (both machines): startup, SysTick cycles, semihosting, stack
    elf = work / "fw.elf"
    cmd = ["arm-none-eabi-gcc", f"-mcpu={cpu}", *CFLAGS, *(["-DMT_USE_DSP"] if dsp else []),
           "-include", str(FW / "include" / "mt_port.h"), f"-I{FW / 'include'}",
           *(f"-I{FW / d}" for d in port.include_dirs), f"-I{work}", *(str(FW / s) for s in port.sources),
           str(PORT / "smoke_main.c"), str(work / "mt_model.c"), *map(str, srcs),
           "-T", str(FW / port.ldscript), "-nostartfiles", "--specs=nosys.specs", "-Wl,--gc-sections", "-o", str(elf)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-3000:])
    return elf


def run(elf: Path, machine: str, cpu: str) -> list[tuple[int, int, int, int, int]]:
    p = subprocess.run(["qemu-system-arm", "-M", machine, "-cpu", cpu, "-nographic", "-monitor", "none",
                        "-icount", "shift=0", "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=3600)
    if p.returncode != 0 or "END" not in p.stdout:
        raise RuntimeError(p.stdout[-2000:])
    return [tuple(int(v) for v in m) for m in re.findall(r"STEP (\d+) (-?\d+) (-?\d+) (-?\d+) (\d+)", p.stdout)]


def bench_model(label: str, graph, sched, remedy: str, x_src: np.ndarray, y: np.ndarray, steps: int,
                work: Path) -> dict:
    from speed import macs_per_step

    from microtrain.compiler.codegen import generate
    from microtrain.compiler.schedule import resolve
    from microtrain.compiler.train_int import Int8Trainer, int8_samples

    plan = resolve(sched, graph)
    gen = generate(graph, plan, remedy=remedy)
    ref = Int8Trainer(graph, plan, remedy=remedy, seed=1, lr_schedule="cosine", total_steps=steps)
    x = int8_samples(ref, x_src[:steps])
    yy = np.asarray(y[:steps], np.int64)
    macs = macs_per_step(graph, plan)["total"]
    out = {"model": label, "schedule": sched.describe(), "macs_per_step": macs, "machines": {}}
    for name, (machine, cpu) in MACHINES.items():
        row = {}
        results = {}
        for variant, dsp in (("portable", False), ("dsp", True)):
            t0 = time.perf_counter()
            elf = build(gen, x, yy, steps, cpu, dsp, work / f"{label}-{name}-{variant}")
            st = run(elf, machine, cpu)
            results[variant] = st
            instr = [s[4] * INSTR_PER_TICK for s in st[1:]]
            row[variant] = {"instructions_per_step": int(np.mean(instr)), "steps_measured": len(instr),
                            "macs_per_instruction": round(macs / float(np.mean(instr)), 4),
                            "seconds": round(time.perf_counter() - t0, 1)}
            print(f"  {label} {name} {variant}: {row[variant]['instructions_per_step']:,} instr/step", file=sys.stderr)
        same = [s[:4] for s in results["portable"]] == [s[:4] for s in results["dsp"]]
        row["portable_over_dsp"] = round(row["portable"]["instructions_per_step"] / row["dsp"]["instructions_per_step"], 3)
        row["same_losses"] = same
        out["machines"][name] = row
    return out


def bench_protocol(graph, x_src: np.ndarray, y: np.ndarray, steps: int, work: Path) -> dict:
    """The example model's firmware over the serial protocol (the image `microtrain flash`
    starts): METRICS.cycles of each TRAIN, in instructions; must equal the smoke harness's count."""
    from microtrain.compiler.codegen import generate
    from microtrain.compiler.codegen import firmware as fw
    from microtrain.compiler.schedule import Schedule, resolve
    from microtrain.host import devices
    from microtrain.host.boards import get_board
    from microtrain.host.bridge import Bridge
    from microtrain.host.device_trainer import DeviceTrainer

    out = {}
    for name in MACHINES:
        board = get_board(name)
        plan = resolve(Schedule("sparse"), graph)
        gen = generate(graph, plan, board=name)
        d = work / f"proto-{name}"
        d.mkdir(parents=True, exist_ok=True)
        prog = devices.Program(d, gen, graph, plan, {})
        st = devices.start_emulator(prog, board)
        try:
            with Bridge(st["url"]) as b:
                tr = DeviceTrainer(b, gen, seed=1, total_steps=steps)
                x = tr.host_samples(x_src[:steps], "x_train")
                cyc = []
                for t in range(steps):
                    tr.step(x[t:t + 1], np.asarray(y[t:t + 1]))
                    cyc.append(int(tr.metrics["cycles"]))
        finally:
            devices.stop(d)
        instr = [c * INSTR_PER_TICK for c in cyc[1:]]
        out[name] = {"instructions_per_step": int(np.mean(instr)), "steps_measured": len(instr),
                     "dsp": bool(board.dsp), "opt": fw.OPT}
        print(f"  protocol {name}: {out[name]['instructions_per_step']:,} instr/step", file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "device.json"))
    ap.add_argument("--no-mobilenet", action="store_true")
    ap.add_argument("--steps", type=int, default=4)
    a = ap.parse_args()
    for tool in ("arm-none-eabi-gcc", "qemu-system-arm"):
        if shutil.which(tool) is None:
            sys.exit(f"error: {tool} not installed (make toolchains)")
    from microtrain.compiler.frontend import load_model
    from microtrain.compiler.quantize import quantize_graph
    from microtrain.compiler.schedule import Schedule
    from microtrain.host.data import load_data
    from microtrain.host.schedule_options import parse_update

    res = {"benchmark": "instructions per training step on QEMU (-icount shift=0), portable vs DSP kernels",
           "method": __doc__.split("\n\n")[2].replace("\n", " "), "qemu": subprocess.run(
               ["qemu-system-arm", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
           "gcc": subprocess.run(["arm-none-eabi-gcc", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
           "rows": []}
    with tempfile.TemporaryDirectory(prefix="mt-device-") as tmp:
        work = Path(tmp)
        fm = load_model(str(ROOT / "examples" / "digits_cnn.onnx"))
        q = quantize_graph(fm, load_data("digits-clean", fm).x_train[:64])
        task = load_data("digits", fm)
        res["rows"].append(bench_model("digits_cnn", q, Schedule("sparse"), "master", task.x_train, task.y_train,
                                       a.steps, work))
        res["protocol"] = {"model": "digits_cnn", "what": "the flashed firmware (device loop + UART port, DSP "
                           "kernels) trained over the serial bridge; METRICS.cycles * 40 per TRAIN",
                           "machines": bench_protocol(q, task.x_train, task.y_train, max(a.steps, 3), work)}
        if not a.no_mobilenet:
            from models.mobilenetv2 import build_mobilenetv2_onnx

            g = load_model(build_mobilenetv2_onnx(work / "mnv2.onnx", width=0.35, resolution=128))
            xs = np.random.default_rng(0).standard_normal((8, 3, 128, 128)).astype(np.float32)
            qm = quantize_graph(g, xs[:4])
            sched = Schedule("sparse", bias_last=20, update=parse_update("-1:1,-3:0.25,-5:0.25,-6:0.25,-8:0.25"))
            res["rows"].append(bench_model("mobilenetv2_w035_128", qm, sched, "stochastic", xs, np.arange(8) % 10,
                                           min(a.steps, 3), work))
    text = json.dumps(res, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
