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

from ..ir import Graph
from ..schedule import TrainPlan
from . import planner
from .lifetimes import MemoryModel, memory_model
from .stack import StackPlan, plan_stack


@dataclass
class MemoryPlan:
    model: MemoryModel
    arena: planner.Plan
    stack: StackPlan | None = None  # the planned main stack on the board the plan was made for

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
        }


def plan_memory(graph: Graph, plan: TrainPlan, algorithms=None, *, board=None, dsp: bool | None = None,
                **options: Any) -> MemoryPlan:
    """Plan one training step of ``graph`` (int8 IR) under ``plan``; ``options`` go to
    :func:`memory_model` (remedy, momentum, accumulate, lr_schedule, inplace). ``board`` (a Board):
    also plan the main stack of the program on it (``dsp``: the build's kernel variants)."""
    model = memory_model(graph, plan, **options)
    stack = None if board is None else plan_stack(model, board, dsp)
    return MemoryPlan(model, planner.plan(model.buffers, algorithms), stack)
