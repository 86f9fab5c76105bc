"""The stack a training program needs on a board: the planner's stack reservation.

    stack_target(board) -> "cortex-m4+dsp" | "cortex-m7+dsp" | "cortex-m0plus" | "rv32imac" | "rv32imc"
    program_kernels(mm) -> the kernels the generated program calls (the emitter's choices)
    program_shape(mm) -> ProgramShape(kind, classes, fg_m)
    plan_stack(mm, board, dsp=None) -> StackPlan

The numbers come from ``stack_table.json`` (next to this file), written by ``python
tools/stack_usage.py --write`` from GCC's ``-fstack-usage`` frames and ``-fcallgraph-info`` call
graphs of the firmware compiled exactly as ``compiler/codegen/firmware.py`` compiles it (see the
tool's docstring for the method; ``tests/test_stack.py`` fails when the table is stale). Per
target (core, and its DSP extension) the table holds the worst-case depth of every public kernel
with its callees, the depth of the device loop's call sites of the program per reference port, the
interrupt handlers, and the generated program's own frames, calibrated on a corpus of programs.

The reservation of a program::

    stack = round_up(max(device, base + program + kernel) + interrupts, alignment)

  base        stack in use where the device loop calls into the program (reset -> main ->
              mt_device_poll -> mt_device_feed -> mt_dev_frame -> mt_dev_train -> mt_train_step,
              and the other entries: the largest);
  program     the generated code's own frames, the largest of: mt_train_step's (``train_bytes`` of
              its kind - backprop, forward gradient, hybrid - + ``per_fg_m_bytes`` * m: fg_step
              keeps a seed, a sign and a stream cursor per perturbation), mt_eval's
              (``eval_bytes`` + its logits, one byte per class rounded up to the alignment) and the
              other entries' (``other_bytes``: mt_infer, mt_init, checkpoints);
  kernel      the deepest of the kernels this program calls (``program_kernels``; the DSP variant
              where the build selects it) and of the runtime helpers generated code calls
              (library routines such as memcpy or 64-bit division, the port's cycle counter);
  device      the deepest path of the device loop that does not enter the program (frame codec,
              replies, boot) - never the larger in practice;
  interrupts  every interrupt handler that returns, nested, each with the hardware exception
              frame (Arm: 32 bytes + 4 of alignment; the RISC-V ports take no interrupts);
  alignment   8 bytes (AAPCS: sp 8-aligned at public interfaces) or 16 (RISC-V psABI).

Boards with a port of their own (the emulated ones) use its numbers; other boards use the largest
over their core's reference ports, which budgets the microtrain device loop and program, not the
framework's own frames around them (an RTOS thread or Arduino loop() that calls mt_device_poll, a
HAL's UART driver and interrupt handlers add theirs: the framework's share of a board's
``reserved_sram_bytes``).
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import MicrotrainError
from ..program import LINEAR_OPS
from .lifetimes import MemoryModel, is_pointwise

TABLE_PATH = Path(__file__).with_name("stack_table.json")


class StackError(MicrotrainError):
    """No stack numbers for this board or program (one line: what and how to get them)."""


@functools.lru_cache(maxsize=1)
def table() -> dict[str, Any]:
    """The stored stack table (compiler/memory/stack_table.json)."""
    try:
        return json.loads(TABLE_PATH.read_text())
    except OSError as e:
        raise StackError(f"{TABLE_PATH}: cannot read the stack table ({e.strerror or e}); "
                         f"run python tools/stack_usage.py --write") from None


def dsp_dispatch() -> dict[str, str]:
    """Kernel -> the variant MT_KERNEL selects on DSP builds (firmware/include/mt_dispatch.h, as
    the table was computed)."""
    return dict(table().get("dsp_dispatch", {}))  # absent only while the tool writes its first table


def stack_target(board) -> str:
    """The table's target of ``board`` (a Board): the RISC-V ISA, or the Arm core (+dsp)."""
    key = board.isa if board.arch == "riscv" else board.core + ("+dsp" if board.dsp else "")
    if key not in table()["targets"]:
        raise StackError(f"{board.name}: no stack numbers for {key} (known: {', '.join(table()['targets'])}); "
                         f"add it to TARGETS in tools/stack_usage.py and run it with --write")
    return key


# ---------------------------------------------------------------------------------------------
# what the generated program calls (compiler/codegen/emit.py makes the same choices)
# ---------------------------------------------------------------------------------------------
def _kname(graph, node) -> str:
    return "pointwise_conv2d" if node.op == "conv2d" and is_pointwise(graph, node) else node.op


def program_kernels(mm: MemoryModel) -> tuple[str, ...]:
    """Every kernel entry point the generated program of ``mm`` calls, by generic name (a kernel
    with a DSP variant is called through MT_KERNEL, which selects the variant on DSP builds).
    ``generate()`` checks that the emitted C calls no other kernel."""
    g = mm.graph
    nodes = {n.name: n for n in g.nodes}
    root = {t: r for r, ms in mm.members.items() for t in ms}
    out: set[str] = {"mt_fmix32"}  # mt_init: the PRNG seed
    if mm.options.get("lr_schedule") == "cosine":
        out |= {"mt_cosine_factor_q15", "mt_scale_lr_q31"}
    fwd_kernel = {"add": "mt_add_fwd_s8", "relu": "mt_relu_fwd_s8", "relu6": "mt_relu_fwd_s8",
                  "max_pool2d": "mt_max_pool2d_fwd_s8", "avg_pool2d": "mt_avg_pool2d_fwd_s8",
                  "mean": "mt_mean_fwd_s8", "pad": "mt_pad_fwd_s8", "fully_connected": "mt_fully_connected_fwd_s8",
                  "fully_connected_acc": "mt_fully_connected_acc_s32"}
    bwd_kernel = {"max_pool2d": "mt_max_pool2d_bwd_input_s16", "avg_pool2d": "mt_avg_pool2d_bwd_input_s16",
                  "mean": "mt_mean_bwd_input_s16", "add": "mt_add_bwd_input_s16", "pad": "mt_pad_bwd_input_s16"}
    grads: set[str] = set()
    fg = False
    for st in mm.steps:
        node = nodes.get(st.node)
        if st.kind in ("forward", "fg_forward", "patch"):  # patch: a stage node on a tile (or a region copy)
            if st.op == "conv2d":
                out.add(f"mt_{_kname(g, node)}_fwd_s8")
            elif st.op == "depthwise_conv2d":
                x, y = st.reads[0], st.writes[0]
                out.add("mt_depthwise_conv2d_fwd_s8_inplace" if root.get(x, x) == root.get(y, y)
                        else "mt_depthwise_conv2d_fwd_s8")
            elif st.op in fwd_kernel:
                out.add(fwd_kernel[st.op])
            if any(w.startswith("mask:") for w in st.writes):
                out.add("mt_act_mask_pack_s8")
        elif st.op == "mean_pointwise":  # fused global mean <- 1x1 conv backward
            out.add("mt_mean_pointwise_bwd_s16")
            grads.update(st.writes)
        elif st.kind in ("grad_input", "update"):
            if any(f"mask:{o}" in root for o in node.outputs):
                out.add("mt_act_mask_apply_s16")
            if st.kind == "grad_input":
                if node.op in LINEAR_OPS:
                    out.add(f"mt_{_kname(g, node)}_bwd_input_s16")
                elif node.op in bwd_kernel:
                    out.add(bwd_kernel[node.op])
                if st.writes[0] in grads:  # a second contribution: added into the first
                    out.add("mt_grad_add_s16")
                grads.update(st.writes)
            else:  # one update step per trained tensor of the layer: its weight rows, its bias
                lt = next((lt for lt in mm.plan.layers if lt.node == node.name), None)
                if lt is None or lt.weight_rows:
                    out.add(f"mt_{_kname(g, node)}_update_s8")
                if lt is None or lt.bias_rows:
                    out.add("mt_bias_update_s32")
        elif st.kind == "loss":
            grads.update(st.writes)
            if mm.options.get("loss_input") == "acc":
                out |= {"mt_fully_connected_acc_s32", "mt_softmax_ce_acc_s32"}
            else:
                out.add("mt_softmax_ce_s8")
        elif st.kind.startswith("fg_"):
            fg = True
    if fg:
        out |= {"mt_softmax_ce_acc_s32", "mt_rademacher_init", "mt_rademacher_skip", "mt_fg_perturbation_seed"}
        for lt in mm.plan.layers:
            if lt.trainable and lt.method == "fg":
                if lt.weight_rows:
                    out |= {"mt_fg_perturb_s8", "mt_fg_update_s8"}
                if lt.bias_rows:
                    out |= {"mt_fg_perturb_s32", "mt_fg_update_s32"}
    return tuple(sorted(out))


@dataclass(frozen=True)
class ProgramShape:
    """What the generated code's own frames depend on."""

    kind: str     # "bp" (backprop only), "fg" (forward gradient only), "hybrid"
    classes: int  # mt_eval keeps the logits on the stack
    fg_m: int     # fg_step keeps per perturbation a seed, a sign and a stream cursor (0: no fg)


def program_shape(mm: MemoryModel) -> ProgramShape:
    has_bp = any(s.kind == "loss" for s in mm.program.steps)
    fg = any(s.kind.startswith("fg_") for s in mm.steps)
    fgo = mm.plan.schedule.fg
    m = int(fgo.m) if fg and fgo is not None else (3 if fg else 0)
    classes = _numel(mm.graph.tensors[mm.program.logits].shape)
    return ProgramShape("hybrid" if has_bp and fg else ("fg" if fg else "bp"), classes, m)


def _numel(shape) -> int:
    n = 1
    for d in (shape[1:] if len(shape) > 1 else shape):
        n *= int(d)
    return n


# ---------------------------------------------------------------------------------------------
# the reservation
# ---------------------------------------------------------------------------------------------
def _round_up(n: int, a: int) -> int:
    return -(-n // a) * a


@dataclass(frozen=True)
class StackPlan:
    """The planned main stack of one program on one board (bytes; ``total_bytes`` is reserved)."""

    target: str
    port: str                 # the port whose device loop numbers are used ("a|b": largest of several)
    base_bytes: int
    program_bytes: int
    kernel_bytes: int
    kernel: str               # the deepest callee
    device_bytes: int
    interrupt_bytes: int
    align: int
    total_bytes: int
    kernels: tuple[str, ...] = field(default=(), compare=False)

    def to_json(self) -> dict[str, Any]:
        return {"stack_bytes": self.total_bytes, "target": self.target, "port": self.port,
                "base_bytes": self.base_bytes, "program_bytes": self.program_bytes,
                "kernel_bytes": self.kernel_bytes, "deepest_kernel": self.kernel,
                "device_bytes": self.device_bytes, "interrupt_bytes": self.interrupt_bytes,
                "align": self.align}


def plan_stack(mm: MemoryModel, board, dsp: bool | None = None) -> StackPlan:
    """The stack reservation of ``mm``'s generated program on ``board`` (a Board); ``dsp``: whether
    the build uses the DSP kernel variants (default: the board's feature)."""
    target = stack_target(board)
    t = table()["targets"][target]
    use_dsp = bool(board.dsp if dsp is None else dsp)
    kernels = program_kernels(mm)
    variant = dsp_dispatch() if use_dsp else {}
    depth: dict[str, int] = {}
    for k in kernels:
        name = variant.get(k, k)
        if name not in t["kernels"]:
            raise StackError(f"kernel {name} is not in the stack table of {target}; "
                             "run python tools/stack_usage.py --write")
        depth[name] = t["kernels"][name]
    depth.update(t["runtime"])
    kernel = max(sorted(depth), key=lambda k: depth[k])
    shape = program_shape(mm)
    p = t["program"]
    program = max(p["train_bytes"][shape.kind] + p["per_fg_m_bytes"] * shape.fg_m,
                  p["eval_bytes"] + _round_up(p["per_class_bytes"] * shape.classes, t["align"]),
                  p["other_bytes"])
    own = [name for name, v in t["ports"].items() if v["board"] == board.name]
    ports = own or sorted(t["ports"])
    base = max(t["ports"][n]["base_bytes"] for n in ports)
    device = max(t["ports"][n]["device_bytes"] for n in ports)
    irq = max(t["ports"][n]["interrupt_bytes"] for n in ports)
    total = _round_up(max(device, base + program + depth[kernel]) + irq, t["align"])
    return StackPlan(target, "|".join(ports), base, program, depth[kernel], kernel, device, irq, t["align"], total,
                     kernels)
