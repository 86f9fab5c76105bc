"""The planned stack: the planner reserves a main stack per program and board (compiler/memory/stack.py,
from the static analysis table compiler/memory/stack_table.json of tools/stack_usage.py), the image
links exactly that stack (HELLO_INFO.stack_size), and what the device measures (METRICS.stack_hwm
after training, EVAL, INFER and a checkpoint read and write) stays within it:

    measured high-water mark  <=  static worst case of the image  <=  planned stack

The static worst case of the very image (tools/stack_usage.image_stack: GCC's frames and call graph
of the program, device loop, port and kernels as build_image compiles them) also checks the
planner's calibrated model of the generated code on programs outside its corpus (random
architectures; MobileNetV2 when torch is installed). The stored table must equal a fresh
computation (regenerate with ``python tools/stack_usage.py --write``). Cross compilers or QEMU
missing -> skip.
"""
from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("MICROTRAIN_CACHE", str(ROOT / "build" / "native"))
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import stack_usage as su  # noqa: E402

from microtrain.compiler.codegen import firmware as fw  # noqa: E402
from microtrain.compiler.codegen import generate  # noqa: E402
from microtrain.compiler.memory.memplan import plan_memory  # noqa: E402
from microtrain.compiler.memory.stack import StackError, plan_stack, program_kernels, stack_target  # noqa: E402
from microtrain.compiler.schedule import FGOptions, Schedule, resolve  # noqa: E402
from microtrain.host import protocol as P  # noqa: E402
from microtrain.host.boards import all_boards, get_board  # noqa: E402

CROSS = ("arm-none-eabi-gcc", "riscv64-unknown-elf-gcc")
CASES = {  # the sessions of tests/test_device_firmware.py
    "sparse": (Schedule("sparse", bias_last=2, update={0: 0.5, -1: 1.0}), dict(remedy="stochastic")),
    "hybrid": (Schedule("hybrid", fg=FGOptions(m=2, batch=2)),
               dict(remedy="master", loss_input="acc", momentum=0.5, fg_lr=0.02)),
}
TARGETS = ("qemu-m4", "qemu-rv32-virt")
STEPS = 3
RESULTS: dict[str, dict] = {}


def _need(*tools: str) -> None:
    for t in tools:
        if shutil.which(t) is None:
            pytest.skip(f"{t} not installed (make toolchains)")


def _cc(target: str) -> str:
    return fw.compiler(target)


@pytest.fixture(scope="module")
def graph():
    return su.example_graph()


# ---- the table ------------------------------------------------------------------------------------
def test_stack_table_is_fresh():
    _need(*CROSS)
    fresh = json.loads(su.dumps(su.compute_table()))
    stored = json.loads(su.TABLE.read_text())
    stale = [f"{t}.{k}" for t in sorted(set(fresh["targets"]) | set(stored["targets"]))
             for k in sorted(set(fresh["targets"].get(t, {})) | set(stored["targets"].get(t, {})))
             if fresh["targets"].get(t, {}).get(k) != stored["targets"].get(t, {}).get(k)]
    assert fresh == stored, (f"compiler/memory/stack_table.json is stale ({', '.join(stale) or 'header'}): "
                             "run python tools/stack_usage.py --write")


def test_every_board_has_stack_numbers(graph):
    plan = resolve(CASES["sparse"][0], graph)
    for b in all_boards():
        st = plan_memory(graph, plan, board=b).stack
        assert st is not None and st.total_bytes % st.align == 0 and st.total_bytes > st.kernel_bytes, b.name
        assert st.total_bytes == plan_stack(plan_memory(graph, plan).model, b).total_bytes


# ---- measured <= static <= planned, on the device --------------------------------------------------
def _session(target: str, gen, image: Path, tmp_path: Path) -> tuple[dict, int]:
    from test_device_firmware import is_ack, start  # noqa: E402

    man = gen.manifest
    B, C, nin = int(man["batch"]), int(man["classes"]), int(man["input_bytes"])
    rng = np.random.default_rng(5)
    dev = start(target, image, tmp_path)
    try:
        h = dev.request("HELLO").fields()
        is_ack(dev.request("INIT", seed=3, total_steps=STEPS, session=1, count=0, trace=0))
        chunk = int(h["max_payload"]) - P.message("SAMPLE").size

        def sample(slot: int) -> None:
            x = rng.integers(-128, 128, nin, dtype=np.int8).tobytes()
            for off in range(0, nin, chunk):
                is_ack(dev.request("SAMPLE", x[off:off + chunk], total=nin, offset=off, label=int(rng.integers(C)),
                                   slot=slot, reserved=0))

        for t in range(STEPS):
            for j in range(B):
                sample(j)
            assert dev.request("TRAIN", step=t).message.name == "METRICS"
        sample(0)
        assert dev.request("EVAL").message.name == "EVAL_RESULT"
        assert dev.request("INFER").message.name == "INFER_RESULT"
        total = int(man["params_bytes"])
        get = int(h["max_payload"]) - P.message("PARAMS_DATA").size
        ck = b""
        while len(ck) < total:
            f = dev.request("PARAMS_GET", offset=len(ck), length=min(get, total - len(ck)), reserved=0)
            ck += f.fields()["data"]
        put = int(h["max_payload"]) - P.message("PARAMS_SET").size
        for off in range(0, total, put):
            is_ack(dev.request("PARAMS_SET", ck[off:off + put], total=total, offset=off))
        m = dev.request("METRICS_GET").fields()
        return h, int(m["stack_hwm"])
    finally:
        dev.close()


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_measured_stack_within_plan(target, case, graph, tmp_path):
    board = get_board(target)
    _need(_cc(target), board.qemu_binary)
    sched, kw = CASES[case]
    gen = generate(graph, sched, lr=0.05, lr_schedule="cosine", board=target, **kw)
    planned = gen.memory.stack_bytes
    assert planned == fw.stack_bytes_of(gen, target) == gen.memory.stack_for(board).total_bytes
    assert gen.memory.peak_bytes == gen.memory.persistent_bytes + gen.memory.arena_bytes + planned
    static = su.image_stack(gen, target)
    image = fw.build_image(gen, target, tmp_path / "img")
    hello, hwm = _session(target, gen, image, tmp_path)
    assert hello["stack_size"] == planned  # the image links exactly the planned stack
    assert 0 < hwm <= static["total_bytes"] <= planned, (hwm, static, gen.memory.stack.to_json())
    RESULTS[f"{target}-{case}"] = r = {
        "measured": hwm, "static": static["total_bytes"], "planned": planned,
        "measured/planned": round(hwm / planned, 3), "static/planned": round(static["total_bytes"] / planned, 3),
        "plan": gen.memory.stack.to_json(), "static_path": " > ".join(static["path"])}
    print(f"\n{target} {case}: stack measured {hwm} B <= static {static['total_bytes']} B <= planned {planned} B "
          f"(measured/planned {r['measured/planned']}, static/planned {r['static/planned']}); "
          f"plan {r['plan']}; deepest path {r['static_path']}")


# ---- the planner's model of the generated code, on programs outside its corpus ----------------------
def _static_vs_planned(gen, targets=TARGETS) -> list[str]:
    out = []
    for t in targets:
        if shutil.which(_cc(t)) is None:
            continue
        planned = fw.stack_bytes_of(gen, t)
        static = su.image_stack(gen, t)["total_bytes"]
        assert static <= planned, (t, static, planned, gen.memory.stack_for(get_board(t)).to_json())
        out.append(f"{t} {static}/{planned}")
    return out


def test_random_architectures_stay_within_plan():
    _need(*CROSS)
    from models.random_arch import SCHEDULES, quantized, random_spec

    rnd = random.Random(2)
    for seed in (5, 17, 22, 30, 37):  # not in the calibration corpus (su.ARCH_SEEDS)
        assert seed not in su.ARCH_SEEDS
        q, _, _ = quantized(random_spec(seed))
        for sid, skw, tkw in rnd.sample(SCHEDULES, 3):
            skw = dict(skw)
            gen = generate(q, Schedule(skw.pop("kind"), **skw),
                           **{k: v for k, v in tkw.items() if k not in ("seed", "total_steps")})
            print(f"seed {seed} {sid}: static/planned " + ", ".join(_static_vs_planned(gen)))


@pytest.mark.slow
def test_mobilenetv2_stays_within_plan(mobilenetv2_onnx):
    _need(*CROSS)
    from microtrain.compiler.frontend import load_model
    from microtrain.compiler.quantize import quantize_graph

    g = load_model(mobilenetv2_onnx)
    q = quantize_graph(g, np.random.default_rng(0).standard_normal((8, 128, 128, 3)).astype(np.float32))
    for sched, kw in ((Schedule("sparse"), {}), (Schedule("hybrid"), dict(loss_input="acc"))):
        gen = generate(q, sched, **kw)
        print(f"MobileNetV2 {sched.kind}: static/planned " + ", ".join(_static_vs_planned(gen)))


# ---- the planner's kernel list is the emitter's ---------------------------------------------------
def test_program_kernels_cover_the_emitted_calls(graph):
    for name, skw, gkw in su.CORPUS:
        gen = generate(graph, su.schedule_of(skw), **gkw)  # generate() itself refuses a mismatch
        assert set(gen.kernels) <= set(program_kernels(gen.memory.model)), name
        assert gen.kernels, name


def test_plan_json_reports_the_stack():
    from click.testing import CliRunner

    from microtrain.host.cli import cli

    model = str(ROOT / "examples" / "digits_cnn.onnx")
    for board in ("qemu-rv32", "stm32f746g-disco"):
        r = CliRunner().invoke(cli, ["plan", model, "--board", board, "--schedule", "sparse", "--json"],
                               catch_exceptions=False)
        assert r.exit_code == 0, r.output
        s = json.loads(r.stdout)["sram"]
        b = get_board(board)
        assert s["stack_bytes"] == s["stack"]["stack_bytes"] > 0 and s["stack"]["target"] == stack_target(b)
        assert s["peak_bytes"] == s["persistent_bytes"] + s["arena_bytes"] + s["stack_bytes"]
        assert s["capacity_bytes"] == b.sram_bytes - b.reserved_sram_bytes
        print(f"\n{board}: stack {s['stack']}")


# ---- the analysis refuses what it cannot bound ------------------------------------------------------
@pytest.mark.parametrize("code, msg", [
    ("int g(int); int f(int n) { char b[n]; b[0] = 1; return g(b[n - 1]); }", "dynamic stack frame"),
    ("typedef int (*fp)(int); int f(fp p, int x) { return p(x) + 1; }", "indirect call"),
    ("int a(int); int b(int n) { return n > 3 ? a(n - 1) * 3 : n; }\n"
     "int a(int n) { return n > 5 ? b(n / 2) + 1 : n; }", "recursion"),
])
def test_analysis_fails_loudly(code, msg, tmp_path):
    _need("arm-none-eabi-gcc")
    src = tmp_path / "x.c"
    src.write_text(code + "\n")
    obj = tmp_path / "x.o"
    subprocess.run(["arm-none-eabi-gcc", "-O2", "-mcpu=cortex-m4", "-mthumb", "-fno-inline", *su.STACK_FLAGS,
                    "-c", str(src), "-o", str(obj)], check=True, cwd=tmp_path)
    g = su.Graph("arm-none-eabi-objdump")
    with pytest.raises(su.StackError, match=msg):
        g.add_unit(su.Unit("x.c", obj))
        for k in list(g.funcs):
            g.depth(k)


def test_local_dispatch_is_bounded_by_its_candidates(tmp_path):
    """An indirect call reaches the functions whose address its object takes: the deeper one counts."""
    _need("arm-none-eabi-gcc")
    src = tmp_path / "d.c"
    src.write_text("static int a(int x) { volatile int b[8]; b[0] = x; return b[0] + 1; }\n"
                   "static int b(int x) { volatile int c[30]; c[1] = x; return c[1] * 3; }\n"
                   "int f(int s, int x) { return (s ? a : b)(x); }\n")
    obj = tmp_path / "d.o"
    subprocess.run(["arm-none-eabi-gcc", "-O2", "-mcpu=cortex-m4", "-mthumb", "-ffunction-sections", *su.STACK_FLAGS,
                    "-c", str(src), "-o", str(obj)], check=True, cwd=tmp_path)
    g = su.Graph("arm-none-eabi-objdump")
    g.add_unit(su.Unit("d.c", obj))
    frames = {f.name: f.frame for f in g.funcs.values()}
    assert g.depth(g.find("f")) == frames["f"] + max(frames["a"], frames["b"]) and frames["b"] >= 120


def test_unknown_core_is_one_line():
    b = get_board("qemu-m4")
    from dataclasses import replace

    with pytest.raises(StackError) as e:
        stack_target(replace(b, core="cortex-m33", isa="armv8-m.main"))
    assert "no stack numbers" in str(e.value) and "\n" not in str(e.value)


def test_report(capsys):
    if RESULTS:
        with capsys.disabled():
            print("\nstack measured / static / planned (bytes):")
            for k, r in RESULTS.items():
                print(f"  {k:24s} {r['measured']:5d} / {r['static']:5d} / {r['planned']:5d}   "
                      f"measured/planned {r['measured/planned']:.3f}")
