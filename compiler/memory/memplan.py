"""The memory plan of a training program: arena offsets, persistent SRAM, flash, and the report.

:func:`plan_memory` = :func:`~microtrain.compiler.memory.lifetimes.memory_model` (what is live
when) + :func:`~microtrain.compiler.memory.planner.plan` (where, verified). The arena size it
returns is the size of the firmware's one static arena, and the offsets are the firmware's.

SRAM peak = persistent + arena + stack. The stack is planned when the plan is made for a board
(``plan_memory(..., board=B)``: :func:`~microtrain.compiler.memory.stack.plan_stack`, the main stack
the firmware links for this program); without a board it is 0. ``lower_bound_bytes`` = persistent +
stack + the largest sum of arena bytes live at one step: no packing of these buffers can do better.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..ir import Graph
from ..patch import (DEFAULT_MAX_OVERHEAD, PatchError, PatchStage, build_stage, find_stages, grids, model_macs,
                     stage_input_tensor)
from ..program import LINEAR_OPS, build_program
from ..schedule import TrainPlan
from . import planner
from .lifetimes import MemoryModel, memory_model
from .stack import StackPlan, plan_stack


@dataclass
class MemoryPlan:
    model: MemoryModel
    arena: planner.Plan
    stack: StackPlan | None = None  # the planned main stack on the board the plan was made for
    #: the patch decision (:func:`plan_memory` ``patch=``): mode, chosen stage, layer-by-layer figures
    patching: dict[str, Any] | None = None

    @property
    def patch(self) -> PatchStage | None:
        """The patched stage of this plan (None: layer by layer)."""
        return self.model.options.get("patch")

    def stack_for(self, board, dsp: bool | None = None) -> StackPlan:
        """The stack this program needs on ``board`` (a Board; ``dsp``: the build's kernel variants,
        default the board's)."""
        return plan_stack(self.model, board, dsp)

    @property
    def stack_bytes(self) -> int:
        """Bytes of the planned main stack (0 when the plan was made without a board)."""
        return 0 if self.stack is None else self.stack.total_bytes

    @property
    def arena_bytes(self) -> int:
        """Bytes of the static arena (rounded up to its alignment)."""
        a = max(self.arena.alignment, 4)
        return (self.arena.size + a - 1) // a * a

    @property
    def persistent_bytes(self) -> int:
        return self.model.persistent_bytes

    @property
    def peak_bytes(self) -> int:
        """SRAM of the plan: persistent + arena + stack."""
        return self.persistent_bytes + self.arena_bytes + self.stack_bytes

    @property
    def lower_bound_bytes(self) -> int:
        return self.persistent_bytes + self.arena.lower_bound + self.stack_bytes

    @property
    def flash_params_bytes(self) -> int:
        return self.model.flash_params_bytes

    @property
    def code_bytes_estimate(self) -> int:
        return self.model.flash["code"]

    def peak(self) -> dict[str, Any]:
        """The step where the most arena bytes are live, its op and its live buffers."""
        k = self.arena.peak_step()
        if k is None:
            return {"step": None, "op": None, "node": None, "live_bytes": 0, "live": []}
        s = self.model.steps[k]
        live = [{"name": b.name, "kind": self.model.kinds.get(b.name, "?"), "bytes": b.size,
                 "offset": self.arena.offsets[b.name]}
                for b in sorted(self.arena.live_at(k), key=lambda b: -b.size) if b.size]
        return {"step": k, "kind": s.kind, "op": s.op, "node": s.node, "label": s.label,
                "live_bytes": self.arena.live_bytes(k), "live": live}

    def arena_by_kind_at_peak(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for b in self.peak()["live"]:
            out[b["kind"]] = out.get(b["kind"], 0) + b["bytes"]
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "sram": {"persistent_bytes": self.persistent_bytes, "arena_bytes": self.arena_bytes,
                     "stack_bytes": self.stack_bytes, "peak_bytes": self.peak_bytes,
                     "lower_bound_bytes": self.lower_bound_bytes,
                     "stack": None if self.stack is None else self.stack.to_json(),
                     "persistent": dict(self.model.persistent),
                     "arena_at_peak": self.arena_by_kind_at_peak(),
                     "algorithm": self.arena.algorithm, "algorithms": dict(self.arena.candidates)},
            "flash": {"params_bytes": self.flash_params_bytes, "code_bytes_estimate": self.code_bytes_estimate,
                      "detail": {k: v for k, v in self.model.flash.items()}},
            "peak": self.peak(),
            "steps": len(self.model.steps), "buffers": len(self.arena.buffers),
            "patch": self.patching,
            "lean_steps": [s.index for s in self.model.steps if s.key in self.model.options.get("lean", ())],
        }


def plan_memory(graph: Graph, plan: TrainPlan, algorithms=None, *, board=None, dsp: bool | None = None,
                patch: str | tuple[int, int] | PatchStage | None = "off",
                patch_max_overhead: float = DEFAULT_MAX_OVERHEAD, scratch: str = "fast",
                **options: Any) -> MemoryPlan:
    """Plan one training step of ``graph`` (int8 IR) under ``plan``; ``options`` go to
    :func:`memory_model` (remedy, momentum, accumulate, lr_schedule, inplace, loss_input). ``board``
    (a Board): also plan the main stack of the program on it (``dsp``: the build's kernel variants).

    ``patch``: ``"off"`` (layer by layer), ``"auto"`` (the split point and R x C grid, R, C <= 8,
    with the smallest arena whose extra MACs stay within ``patch_max_overhead`` of the model's
    forward MACs; used only when it lowers the SRAM peak), ``(R, C)`` (that grid, the best split
    point), or a :class:`PatchStage`. ``scratch``: ``"fast"`` (every linear-op backward kernel
    gets its int32 accumulator scratch) or ``"lean"`` (the steps that would set the arena peak
    run without it: two passes, the same integers)."""
    if scratch not in SCRATCH_MODES:
        raise ValueError(f"scratch must be one of {', '.join(SCRATCH_MODES)}, got {scratch!r}")
    options.setdefault("program", build_program(graph, plan))
    lean_all = frozenset(_leanable(memory_model(graph, plan, **options))) if scratch == "lean" else frozenset()
    stage, info = _choose_patch(graph, plan, patch, patch_max_overhead, lean_all, options)
    lean: set[tuple] = set()
    while True:  # lean only where the accumulators would set the peak
        model = memory_model(graph, plan, patch=stage, lean=frozenset(lean), **options)
        arena = planner.plan(model.buffers, algorithms)
        k = arena.peak_step()
        key = None if k is None else model.steps[k].key
        if key is None or key not in lean_all or key in lean:
            break
        lean.add(key)
    stack = None if board is None else plan_stack(model, board, dsp)
    mp = MemoryPlan(model, arena, stack, info)
    if info is not None and info.get("layer_by_layer") is not None:
        info["layer_by_layer"]["peak_bytes"] = (mp.persistent_bytes + mp.stack_bytes
                                                + info["layer_by_layer"]["arena_bytes"])
        info["patched"] = None if stage is None else {"arena_bytes": mp.arena_bytes, "peak_bytes": mp.peak_bytes}
    return mp


#: kernel scratch policies of :func:`plan_memory`
SCRATCH_MODES = ("fast", "lean")
#: ``patch="auto"`` adopts a patch only when it lowers the arena by at least this fraction
PATCH_MIN_GAIN = 0.01


def _leanable(model: MemoryModel) -> list[tuple]:
    """Backward steps (keys) whose kernel can run without its accumulator scratch: linear-op input
    gradients and weight updates with an ``acc`` part."""
    out = []
    for s in model.steps:
        if s.key is not None and s.scratch and (s.kind == "update" or s.op in LINEAR_OPS
                                                or s.op == "mean_pointwise"):
            out.append(s.key)
    return out


def _arena_of(model: MemoryModel, algorithms) -> int:
    a = planner.plan(model.buffers, algorithms)
    return (a.size + 3) // 4 * 4


def _choose_patch(graph: Graph, plan: TrainPlan, patch, max_overhead: float, lean: frozenset[int],
                  options: dict[str, Any]) -> tuple[PatchStage | None, dict[str, Any] | None]:
    """The patched stage for ``patch`` (see :func:`plan_memory`) and the decision's report."""
    if patch is None or (isinstance(patch, str) and patch == "off"):
        return None, None
    if isinstance(patch, PatchStage):
        return patch, {"mode": f"{patch.grid[0]}x{patch.grid[1]}", "chosen": patch.to_json(),
                       "layer_by_layer": None, "candidates": 1, "max_overhead": max_overhead}
    if max_overhead < 0:
        raise PatchError(f"--patch-max-overhead {max_overhead}: must be >= 0")
    mode = patch if isinstance(patch, str) else f"{patch[0]}x{patch[1]}"
    if isinstance(patch, str) and patch != "auto":
        raise PatchError(f"--patch {patch!r}: expected auto, off or a grid RxC such as 4x4")
    program = options["program"]
    inp = stage_input_tensor(graph)
    trained = {lt.node for lt in plan.layers if lt.trainable}
    frozen = [n.name for n in graph.nodes if n.name not in trained and n.name not in _bp_nodes(program)]
    stages = find_stages(graph, inp, frozen)
    base = memory_model(graph, plan, lean=lean, **options)
    base_bound = planner.lower_bound(base.buffers)
    base_arena = _arena_of(base, None)
    info: dict[str, Any] = {"mode": mode, "chosen": None, "max_overhead": max_overhead,
                            "layer_by_layer": {"arena_bytes": base_arena}, "candidates": 0}
    if not stages:
        info["reason"] = "no frozen prefix of conv/depthwise/pool/relu/add nodes with one output tensor to patch"
        if mode != "auto":
            raise PatchError(f"--patch {mode}: this model and schedule have no frozen stage that can be patched "
                             f"(its first nodes must be frozen conv2d/depthwise_conv2d/max_pool2d/relu/add)")
        return None, info
    total = model_macs(graph)
    grid_list = grids() if mode == "auto" else [tuple(patch)]
    scored = []
    templates: dict[tuple, tuple] = {}
    over: set[tuple[int, int]] = set()  # grids already over the limit: deeper stages only cost more
    for nodes in stages:
        for gr in grid_list:
            if gr in over:
                continue
            try:
                st = build_stage(graph, nodes, gr, inp, total)
            except PatchError:
                continue
            if mode == "auto" and st.overhead > max_overhead:
                over.add(gr)
                continue
            info["candidates"] += 1
            scored.append((_stage_bound(graph, plan, st, lean, options, templates), st.macs_patched, len(nodes),
                           gr, st))
    if not scored:
        if mode != "auto":
            big = max((graph.tensors[graph.node(n[-1]).outputs[0]].shape[1:3] for n in stages), key=lambda s: s[0] * s[1])
            raise PatchError(f"--patch {mode}: the grid is finer than the output of every patchable stage "
                             f"(the largest is {big[0]}x{big[1]})")
        info["reason"] = f"every patch costs more than {100 * max_overhead:g}% extra MACs"
        return None, info
    scored.sort(key=lambda t: t[:4])
    best_arena, best = None, None
    for bound, _, _, _, st in scored[:8]:  # place the most promising few
        a = _arena_of(memory_model(graph, plan, patch=st, lean=lean, **options), None)
        if best_arena is None or a < best_arena:
            best_arena, best = a, st
    if mode == "auto" and (best_arena >= base_arena * (1 - PATCH_MIN_GAIN) or best_arena >= base_arena):
        info["reason"] = (f"patching would not lower the arena ({best_arena:,} B patched vs {base_arena:,} B "
                          f"layer by layer; the peak is outside the frozen stage)")
        return None, info
    del base_bound
    info["chosen"] = best.to_json()
    return best, info


def _stage_bound(graph: Graph, plan: TrainPlan, st: PatchStage, lean, options, templates: dict) -> int:
    """The arena lower bound (most bytes live at one step) with stage ``st``. Stages with the same
    nodes and crops share their timeline: only the tile buffers' sizes differ between grids, so
    one memory model per (split, crops) is built and re-weighed."""
    crops = tuple(sorted({(op.node, k) for t in st.tiles for op in t.ops for k, c in enumerate(op.crop) if c}))
    key = (len(st.nodes), crops)
    if key not in templates:
        m = memory_model(graph, plan, patch=st, lean=lean, **options)
        bufs = m.buffers
        n = len(m.steps)
        first = np.array([b.first for b in bufs], dtype=np.int64)
        last = np.array([b.last for b in bufs], dtype=np.int64)
        size = np.array([b.size for b in bufs], dtype=np.int64)
        tiles = [(i, b.name) for i, b in enumerate(bufs) if b.name.startswith("tile:")]
        templates[key] = (n, first, last, size, tiles)
    n, first, last, size, tiles = templates[key]
    size = size.copy()
    for i, name in tiles:
        if name.startswith("tile:crop:"):
            k, _, node = name[len("tile:crop:"):].partition(":")
            size[i] = st.crop_bytes(node, int(k))
        else:
            size[i] = st.tile_bytes(name[5:])
    delta = np.zeros(n + 1, dtype=np.int64)
    np.add.at(delta, first, size)
    np.add.at(delta, last + 1, -size)
    return int(np.cumsum(delta).max())


def _bp_nodes(program) -> set[str]:
    """Nodes with a backward step (their forward values are saved or differentiated through)."""
    return {s.node for s in program.steps if s.kind in ("grad_input", "update")}
