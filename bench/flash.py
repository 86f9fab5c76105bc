"""Measured flash of generated training programs vs the planner's estimate. Prints one JSON object.

    python bench/flash.py [--out bench/results/flash.json] [--no-mobilenet] [--board qemu-m4]

For each case the program is generated (``microtrain compile``'s path: generate + write_project), the
folder's Makefile builds it for the board (Cortex-M4: -Os -mthumb, DSP kernels) and what a firmware
links is measured: ``arm-none-eabi-ld -r --gc-sections`` of mt_model.o + libmtmodel.a with the public
API (mt_init, mt_train_step, mt_infer, mt_eval, mt_params_get, mt_params_set, mt_step_count) as
roots, so only the referenced kernels count, then ``arm-none-eabi-size`` (Berkeley: text includes
.rodata). Not counted: the libgcc/libc helpers the program calls (memcpy, memset, 64-bit division;
listed as ``undefined``), which every firmware links anyway. ``ratio`` = measured text+data over the
planner's ``flash.params_bytes + flash.code_bytes_estimate`` (``microtrain plan --json``);
``code_ratio`` = (text + data - params_bytes) over code_bytes_estimate.

Cases: the example model under bias/sparse/last-k/full/fg/hybrid, and the MobileNetV2-w0.35
128x128 fixture (tests/models/mobilenetv2.py, built with PyTorch) under the MIT-style sparse scheme
(``--bias-last 20 --update -1:1,-3:0.25,-5:0.25,-6:0.25,-8:0.25``, stochastic rounding) and bias.
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
sys.path.insert(0, str(ROOT / "tests"))

from microtrain.compiler.codegen import generate  # noqa: E402
from microtrain.compiler.codegen.project import write_project  # noqa: E402
from microtrain.compiler.frontend import load_model  # noqa: E402
from microtrain.compiler.quantize import quantize_graph  # noqa: E402
from microtrain.compiler.schedule import Schedule, parse_update, resolve  # noqa: E402
from microtrain.host.boards import get_board  # noqa: E402

API = ("mt_init", "mt_train_step", "mt_infer", "mt_eval", "mt_params_get", "mt_params_set", "mt_step_count")
#: "none" is left out: the C generator does not emit inference-only programs yet
KINDS = ("bias", "sparse", "last-k", "full", "fg", "hybrid")
MIT_SCHEME = Schedule("sparse", bias_last=20, update=parse_update("-1:1,-3:0.25,-5:0.25,-6:0.25,-8:0.25"))


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}\n{p.stdout}{p.stderr}")
    return p.stdout


def link_relocatable(project: Path, prefix: str = "arm-none-eabi-") -> Path:
    """``ld -r --gc-sections`` of the built project with the public API as roots -> linked.o."""
    out = project / "linked.o"
    roots = [a for s in API for a in ("-u", s)]
    emul = ["-m", "elf32lriscv"] if prefix.startswith("riscv") else []  # riscv64 ld defaults to elf64
    _run([f"{prefix}ld", *emul, "-r", "--gc-sections", *roots, "build/mt_model.o", "libmtmodel.a", "-o", out.name],
         cwd=project)
    return out


def measure(project: Path, prefix: str = "arm-none-eabi-", jobs: int = 2) -> dict:
    """Build ``project`` (its Makefile) and measure what a firmware links of it."""
    _run(["make", "-s", f"-j{jobs}", "-C", str(project)])
    linked = link_relocatable(project, prefix)
    berkeley = _run([f"{prefix}size", str(linked)]).splitlines()[1].split()
    text, data, bss = (int(v) for v in berkeley[:3])
    code = rodata = 0
    for line in _run([f"{prefix}size", "-A", str(linked)]).splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isdigit():
            if parts[0].startswith(".text"):
                code += int(parts[1])
            elif parts[0].startswith(".rodata"):
                rodata += int(parts[1])
    undefined = sorted(set(_run([f"{prefix}nm", "-u", str(linked)]).split()) - {"U"})
    kernels = sorted(set(re.findall(r"\bT (mt_[a-z0-9_]+)", _run([f"{prefix}nm", str(linked)]))) - set(API))
    return {"text": text, "data": data, "bss": bss, "code": code, "rodata": rodata, "undefined": undefined,
            "kernels": kernels}


def case(graph, schedule: Schedule, board, remedy: str, model: str, tmp: Path) -> dict:
    t0 = time.perf_counter()
    plan = resolve(schedule, graph)
    gen = generate(graph, plan, momentum=schedule.momentum or 0.0, remedy=remedy, board=board.name)
    mp = gen.memory
    d = tmp / f"p{len(list(tmp.iterdir()))}"
    write_project(gen, board, d)
    prefix = "arm-none-eabi-" if board.arch == "arm" else "riscv64-unknown-elf-"
    m = measure(d, prefix)
    est = mp.flash_params_bytes + mp.code_bytes_estimate
    shutil.rmtree(d, ignore_errors=True)
    return {"model": model, "schedule": schedule.kind, "describe": schedule.describe(), "remedy": remedy,
            "board": board.name, "core": board.core, "hash": gen.hash,
            "measured": {k: m[k] for k in ("text", "data", "bss", "code", "rodata")},
            "estimate": {"params_bytes": mp.flash_params_bytes, "code_bytes_estimate": mp.code_bytes_estimate,
                         "total_bytes": est},
            "ratio": round((m["text"] + m["data"]) / est, 4),
            # flash beyond the parameters (code + parameter structs + kernel tables) vs the code estimate
            "code_ratio": round((m["text"] + m["data"] - mp.flash_params_bytes) / mp.code_bytes_estimate, 4),
            "kernels": m["kernels"], "undefined": m["undefined"], "seconds": round(time.perf_counter() - t0, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--board", default="qemu-m4")
    ap.add_argument("--no-mobilenet", action="store_true")
    a = ap.parse_args()
    from microtrain.host.data import load_data

    board = get_board(a.board)
    if shutil.which("arm-none-eabi-gcc" if board.arch == "arm" else "riscv64-unknown-elf-gcc") is None:
        sys.exit(f"error: no cross compiler for {board.name}")
    g = load_model(str(ROOT / "examples" / "digits_cnn.onnx"))
    q = quantize_graph(g, load_data("digits", g).x_train[:200])
    rows = []
    with tempfile.TemporaryDirectory(prefix="mt-flash-") as tmp:
        for k in KINDS:
            rows.append(case(q, Schedule(k), board, "master", "examples/digits_cnn.onnx", Path(tmp)))
        rows.append(case(q, Schedule("sparse"), board, "stochastic", "examples/digits_cnn.onnx", Path(tmp)))
        if not a.no_mobilenet:
            from models.mobilenetv2 import build_mobilenetv2_onnx

            with tempfile.TemporaryDirectory() as d:
                mg = load_model(build_mobilenetv2_onnx(Path(d) / "mnv2.onnx"))
            x = np.random.default_rng(0).standard_normal((8, 3, 128, 128)).astype(np.float32)
            mq = quantize_graph(mg, x)
            name = "MobileNetV2 w0.35 128x128x3, 10 classes (tests/models/mobilenetv2.py)"
            rows.append(case(mq, MIT_SCHEME, board, "stochastic", name, Path(tmp)))
            rows.append(case(mq, Schedule("bias"), board, "stochastic", name, Path(tmp)))
    out = {"board": board.name, "core": board.core, "opt": "-Os",
           "method": "ld -r --gc-sections of mt_model.o + libmtmodel.a, roots = the public API; "
                     "size: text includes .rodata; libgcc/libc helpers not counted",
           "cases": rows}
    text = json.dumps(out, indent=2)
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    os.environ.setdefault("MICROTRAIN_CACHE", str(ROOT / "build" / "native"))
    main()
