"""Instructions per inference and per training step on emulated boards, per kernel variant.

    python bench/device.py [--out bench/results/device.json] [--quick] [--models cnn,example,mobilenet]
                           [--boards qemu-m4,qemu-m7,qemu-rv32-virt] [--steps N]

Method. The generated program (compiler/codegen) is cross-compiled (-O2, the flags of
compiler/codegen/firmware.py) with the board's bare-metal port and a benchmark main
(firmware/port/qemu-mps2/smoke_main.c: N training steps on samples compiled in, then K inferences,
then the per-step-function profile of -DMT_PROFILE). QEMU runs it with `-icount shift=0`: every
guest instruction advances virtual time by 1 ns. On the mps2 machines the port's SysTick counts
the 25 MHz SYSCLK, so instructions = ticks * 40 (exact to 40 instructions per reading); on RISC-V
`mcycle` counts instructions directly. The first training step is left out (cold caches do not
exist here, but the first step initialises the cosine factor's table).

Arm boards are measured twice: portable kernels only, and with -DMT_USE_DSP (the SMLAD/SXTB16
variants selected by mt_dispatch.h); both must report the same losses and predictions.

Models and schedules:
  cnn        the AIfES comparison CNN (tests/models/small_cnn.py): inference; "last-2" trains the
             last two layers (last-k 2); "all" trains every layer (full)
  example    examples/digits_cnn.onnx, sparse (the default schedule)
  mobilenet  MobileNetV2-w0.35 128x128, MIT-style sparse scheme (stochastic rounding)

MACs are the model's forward MACs (inference) and the planned training step's MACs (bench/speed.py's
macs_per_step: forward, input gradients and weight gradients of the trained slices). The serial
protocol run (`protocol`) trains the example model through the flashed firmware over the bridge and
must count the same instructions per step as the benchmark main.
"""
from __future__ import annotations

import argparse
import json
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
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

#: instructions per cycle-counter tick under -icount shift=0
INSTR_PER_TICK = {"qemu-m4": 40, "qemu-m7": 40, "qemu-rv32-virt": 1}
BOARDS = ("qemu-m4", "qemu-m7", "qemu-rv32-virt")
#: the targets of the kernel-speed issue (instructions)
TARGETS = {("cnn", "inference", "qemu-m4"): 300_000, ("cnn", "last-2", "qemu-m4"): 500_000,
           ("cnn", "all", "qemu-m4"): 1_500_000, ("mobilenet", "sparse", "qemu-m7"): 60_000_000}


def build(gen, board: str, x: np.ndarray, y: np.ndarray, steps: int, infers: int, dsp: bool, work: Path) -> Path:
    from microtrain.compiler.codegen import firmware as fw

    work.mkdir(parents=True, exist_ok=True)
    for name, text in gen.files.items():
        (work / name).write_text(text)
    (work / "mt_smoke_data.h").write_text(
        f"#define MT_SMOKE_STEPS {steps}\n#define MT_SMOKE_SEED 1u\n#define MT_SMOKE_TOTAL {max(steps, 1)}\n"
        f"#define MT_SMOKE_INFERS {infers}\n"
        "static const int8_t mt_smoke_x[] = {" + ",".join(map(str, x.ravel().tolist())) + "};\n"
        "static const int32_t mt_smoke_y[] = {" + ",".join(map(str, y.tolist())) + "};\n")
    port = fw.PORTS[board]
    srcs = [FW / s for s in port.sources] + sorted((FW / "src" / "kernels").glob("*.c"))
    if dsp:
        srcs += sorted((FW / "src" / "kernels" / "dsp").glob("mt_*_dsp.c"))
    elf = work / "bench.elf"
    cmd = [fw.compiler(board), *fw.compile_flags(board, dsp=dsp), "-DMT_PROFILE", "-include",
           str(FW / "include" / "mt_port.h"), f"-I{FW / 'include'}", *(f"-I{FW / d}" for d in port.include_dirs),
           f"-I{work}", str(FW / "port" / "qemu-mps2" / "smoke_main.c"), str(work / "mt_model.c"),
           *map(str, srcs), *fw.link_flags(board), "-o", str(elf)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-3000:])
    return elf


def run(board: str, elf: Path) -> dict:
    from microtrain.compiler.codegen import firmware as fw

    cmd = fw.qemu_command(board, elf, 0)
    i = cmd.index("-serial")
    cmd[i + 1] = "null"  # no UART needed: the benchmark main reports over semihosting
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=7200)
    if p.returncode != 0 or "END" not in p.stdout:
        raise RuntimeError(p.stdout[-2000:])
    k = INSTR_PER_TICK[board]
    steps = [tuple(int(v) for v in m) for m in re.findall(r"STEP (\d+) (-?\d+) (-?\d+) (-?\d+) (\d+)", p.stdout)]
    infers = [(int(a), int(b), int(c)) for a, b, c in re.findall(r"INFER (\d+) (-?\d+) (\d+)", p.stdout)]
    prof = [(int(a), int(b) * k, int(c), n) for a, b, c, n in re.findall(r"PROF (\d+) (\d+) (\d+) (.*)", p.stdout)]
    hwm = re.search(r"HWM (\d+) (\d+)", p.stdout)
    ck = re.search(r"CK ([0-9a-f]+)", p.stdout)
    return {"steps": steps, "infers": infers, "prof": prof, "k": k, "checkpoint": ck.group(1) if ck else None,
            "arena_hwm": int(hwm.group(1)) if hwm else None, "arena_bytes": int(hwm.group(2)) if hwm else None}


def _kernel_breakdown(prof, steps_run: int, total: float) -> list[dict]:
    """Instructions per training step of each step function (the profile covers the training
    steps only, the first included), the top 12."""
    rows = []
    for idx, instr, calls, name in prof:
        if calls == 0:
            continue
        rows.append({"step": name, "instructions_per_train_step": int(instr / max(steps_run, 1)),
                     "share": round(instr / max(steps_run, 1) / total, 4) if total else None})
    rows.sort(key=lambda r: -r["instructions_per_train_step"])
    return rows[:12]


def bench_config(model: str, sched_label: str, graph, sched, remedy: str, x_src, y, steps: int, infers: int,
                 boards, work: Path, gen_kw: dict | None = None, verify: bool = False) -> list[dict]:
    """Instructions per step/inference of one configuration on each board (portable and DSP
    kernels). ``verify``: also check the device's per-step loss/correct against the numpy engine
    (run layer by layer) and its checkpoint against the native C build's, byte for byte."""
    from speed import macs_per_step

    from microtrain.compiler.codegen import generate
    from microtrain.compiler.schedule import Schedule, resolve
    from microtrain.compiler.train_int import Int8Trainer, int8_samples
    from microtrain.host.boards import get_board

    plan = resolve(sched, graph)
    gen = generate(graph, plan, remedy=remedy, **(gen_kw or {}))
    ref = Int8Trainer(graph, plan, remedy=remedy, seed=1, lr_schedule="cosine", total_steps=max(steps, 1))
    patch = gen.memory.patch
    b = ref.samples_per_step
    n = max(steps * b, infers)
    x = int8_samples(ref, x_src[:n])
    yy = np.asarray(y[:n], np.int64)
    macs_train = int(macs_per_step(graph, plan)["total"])
    macs_infer = int(macs_per_step(graph, resolve(Schedule("none"), graph))["total"])
    if patch is not None:  # the halo recomputation of the patched stage (same per step and inference)
        macs_train += patch.extra_macs
        macs_infer += patch.extra_macs
    expect = None
    if verify:
        from microtrain.compiler.codegen.native import NativeTrainer

        ref.prepare_batches(1, b)
        host = NativeTrainer(graph, plan, generated=gen, seed=1, total_steps=max(steps, 1))
        expect = []
        for t in range(steps):
            r_ = ref.step(x[t * b:(t + 1) * b], yy[t * b:(t + 1) * b])
            host.step(x[t * b:(t + 1) * b], yy[t * b:(t + 1) * b])
            expect.append((t, r_.loss_q16, r_.correct, r_.skipped))
        host_ck = host.checkpoint().hex()
        same_params = all(np.array_equal(v, ref.params[k_]) for k_, v in host.params.items())
    rows = []
    for board in boards:
        variants = [("portable", False), ("dsp", True)] if get_board(board).dsp else [("portable", False)]
        res = {}
        for variant, dsp in variants:
            t0 = time.perf_counter()
            elf = build(gen, board, x, yy, steps, infers, dsp, work / f"{model}-{sched_label}-{board}-{variant}")
            r = run(board, elf)
            k = r["k"]
            train = [s[4] * k for s in r["steps"][1:]]
            inf = [c * k for _, _, c in r["infers"][1:]]
            row = {"model": model, "schedule": sched_label, "schedule_description": plan.schedule.describe(),
                   "board": board, "variant": variant,
                   "instructions_per_train_step": int(np.mean(train)) if train else None,
                   "instructions_per_inference": int(np.mean(inf)) if inf else None,
                   "macs_per_train_step": macs_train, "macs_per_inference": macs_infer,
                   "train_macs_per_instruction": round(macs_train / np.mean(train), 4) if train else None,
                   "inference_macs_per_instruction": round(macs_infer / np.mean(inf), 4) if inf else None,
                   "kernels": _kernel_breakdown(r["prof"], len(r["steps"]), float(np.mean(train)) if train else 0.0),
                   "memory": {"arena_bytes_planned": gen.memory.arena_bytes, "arena_high_water": r["arena_hwm"],
                              "hwm_equals_plan": r["arena_hwm"] == gen.memory.arena_bytes,
                              "persistent_bytes": gen.memory.persistent_bytes},
                   "patch": None if patch is None else {"grid": list(patch.grid), "split_after": patch.nodes[-1],
                                                        "extra_macs": patch.extra_macs,
                                                        "overhead": round(patch.overhead, 4)},
                   "seconds": round(time.perf_counter() - t0, 1)}
            for kind, key in (("inference", "instructions_per_inference"), (sched_label, "instructions_per_train_step")):
                tgt = TARGETS.get((model, kind, board))
                if tgt is not None and row[key] is not None:
                    row.setdefault("targets", {})[kind] = {"target": tgt, "met": row[key] <= tgt}
            if expect is not None:
                row["bit_exact"] = {"steps_equal_numpy": [tuple(v[:4]) for v in r["steps"]] == expect,
                                    "checkpoint_equals_native": r["checkpoint"] == host_ck,
                                    "native_params_equal_numpy": same_params, "steps": len(expect)}
            res[variant] = r
            rows.append(row)
            print(f"  {model}/{sched_label} {board} {variant}: train {row['instructions_per_train_step']:,} "
                  f"infer {row['instructions_per_inference']:,} instr", file=sys.stderr)
        if "dsp" in res:
            same = ([s[:4] for s in res["portable"]["steps"]] == [s[:4] for s in res["dsp"]["steps"]]
                    and [i[:2] for i in res["portable"]["infers"]] == [i[:2] for i in res["dsp"]["infers"]])
            port, dsp_row = rows[-2], rows[-1]
            for key in ("instructions_per_train_step", "instructions_per_inference"):
                if port[key] and dsp_row[key]:
                    dsp_row[f"portable_over_dsp_{key.split('_per_')[1]}"] = round(port[key] / dsp_row[key], 3)
            dsp_row["same_results_as_portable"] = same
            dsp_row["per_step_portable_over_dsp"] = _step_ratios(res["portable"]["prof"], res["dsp"]["prof"],
                                                                 len(res["dsp"]["steps"]))
    return rows


#: step functions whose kernel has a DSP variant (conv / depthwise / pointwise / fc, forward and backward)
_LINEAR = ("conv2d", "depthwise_conv2d", "fully_connected", "fully_connected_acc", "mean_pointwise")


def _step_ratios(prof_port, prof_dsp, steps_run: int) -> list[dict]:
    """Per step function of a conv/fc kernel: instructions per training step with the portable
    and with the DSP kernels (the same generated code; the function also runs the shared
    gradient-format helpers), and their ratio. The patched stage's tile loop is one entry."""
    port = {name: instr for _, instr, calls, name in prof_port if calls}
    out = []
    for _, instr, calls, name in prof_dsp:
        parts = name.split()
        if not calls or name not in port or len(parts) < 3 or (parts[2] not in _LINEAR and parts[1] != "patch"):
            continue
        p, d = port[name] / max(steps_run, 1), instr / max(steps_run, 1)
        out.append({"step": name, "portable": int(p), "dsp": int(d), "ratio": round(p / d, 3) if d else None})
    return out


def bench_protocol(graph, x_src: np.ndarray, y: np.ndarray, steps: int, work: Path) -> dict:
    """The example model's firmware over the serial protocol (the image `microtrain flash`
    starts): METRICS.cycles of each TRAIN, in instructions."""
    from microtrain.compiler.codegen import generate
    from microtrain.compiler.codegen import firmware as fw
    from microtrain.compiler.schedule import Schedule, resolve
    from microtrain.host import devices
    from microtrain.host.boards import get_board
    from microtrain.host.bridge import Bridge
    from microtrain.host.device_trainer import DeviceTrainer

    out = {}
    for name in ("qemu-m4", "qemu-m7"):
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
        instr = [c * INSTR_PER_TICK[name] for c in cyc[1:]]
        out[name] = {"instructions_per_train_step": int(np.mean(instr)), "steps_measured": len(instr),
                     "dsp": bool(board.dsp), "opt": fw.OPT}
        print(f"  protocol {name}: {out[name]['instructions_per_train_step']:,} instr/step", file=sys.stderr)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "device.json"))
    ap.add_argument("--models", default="cnn,example,mobilenet")
    ap.add_argument("--boards", default=",".join(BOARDS))
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="no MobileNetV2, 3 steps, no protocol run")
    ap.add_argument("--no-protocol", action="store_true")
    a = ap.parse_args()
    models = a.models.split(",")
    boards = [b for b in a.boards.split(",") if b]
    if a.quick:
        models = [m for m in models if m != "mobilenet"]
        a.steps = 3
    need = {"arm-none-eabi-gcc", "qemu-system-arm"} if any(b != "qemu-rv32-virt" for b in boards) else set()
    if "qemu-rv32-virt" in boards:
        need |= {"riscv64-unknown-elf-gcc", "qemu-system-riscv32"}
    for tool in sorted(need):
        if shutil.which(tool) is None:
            sys.exit(f"error: {tool} not installed (make toolchains)")
    from microtrain.compiler.frontend import load_model
    from microtrain.compiler.quantize import quantize_graph
    from microtrain.compiler.schedule import Schedule
    from microtrain.host.data import load_data
    from microtrain.host.schedule_options import parse_update

    res = {"benchmark": "instructions per inference and per training step on QEMU (-icount shift=0)",
           "method": __doc__.split("\n\n")[2].replace("\n", " "),
           "qemu": subprocess.run(["qemu-system-arm", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
           "gcc": subprocess.run(["arm-none-eabi-gcc", "--version"], capture_output=True, text=True).stdout.splitlines()[0],
           "targets": {f"{m}/{s}/{b}": v for (m, s, b), v in TARGETS.items()}, "rows": []}
    with tempfile.TemporaryDirectory(prefix="mt-device-") as tmp:
        work = Path(tmp)
        if "cnn" in models:
            from models.small_cnn import build_small_cnn_onnx, small_cnn_data

            g = load_model(str(build_small_cnn_onnx(work / "cnn.onnx")))
            xs, ys = small_cnn_data(64)
            q = quantize_graph(g, xs[:32])
            for label, sched in (("last-2", Schedule("last-k", last=2)), ("all", Schedule("full"))):
                rows = bench_config("cnn", label, q, sched, "master", xs, ys, a.steps, 4, boards, work)
                for r in rows:  # inference is measured in every build; keep it under its own label too
                    if label == "last-2":
                        r.setdefault("targets", {})
                        tgt = TARGETS.get(("cnn", "inference", r["board"]))
                        if tgt and r["instructions_per_inference"] is not None:
                            r["targets"]["inference"] = {"target": tgt, "met": r["instructions_per_inference"] <= tgt}
                res["rows"] += rows
        if "example" in models:
            fm = load_model(str(ROOT / "examples" / "digits_cnn.onnx"))
            q = quantize_graph(fm, load_data("digits-clean", fm).x_train[:64])
            task = load_data("digits", fm)
            res["rows"] += bench_config("example", "sparse", q, Schedule("sparse"), "master", task.x_train,
                                        task.y_train, a.steps, 4, boards, work)
            if not (a.quick or a.no_protocol):
                res["protocol"] = {"model": "example", "what": "the flashed firmware (device loop + UART port, DSP "
                                   "kernels) trained over the serial bridge; METRICS.cycles per TRAIN, in instructions",
                                   "boards": bench_protocol(q, task.x_train, task.y_train, max(a.steps, 3), work)}
        if "mobilenet" in models:
            from models.mobilenetv2 import build_mobilenetv2_onnx

            g = load_model(build_mobilenetv2_onnx(work / "mnv2.onnx", width=0.35, resolution=128))
            xs = np.random.default_rng(0).standard_normal((8, 3, 128, 128)).astype(np.float32)
            qm = quantize_graph(g, xs[:4])
            sched = Schedule("sparse", bias_last=20, update=parse_update("-1:1,-3:0.25,-5:0.25,-6:0.25,-8:0.25"))
            res["rows"] += bench_config("mobilenet", "sparse", qm, sched, "stochastic", xs, np.arange(8) % 10,
                                        min(a.steps, 3), 2, boards, work)
            # the same with the frozen stage patched and lean backward scratch (the <= 120 KB plan)
            res["rows"] += bench_config("mobilenet", "sparse+patch", qm, sched, "stochastic", xs, np.arange(8) % 10,
                                        min(a.steps, 3), 2, [b for b in boards if b == "qemu-m7"], work,
                                        {"patch": "auto", "scratch": "lean"}, verify=True)
    text = json.dumps(res, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
