"""microtrain.compiler.memory: buffer lifetimes -> one static arena per region, verified.

``planner`` is a pure function over ``Buffer`` records; ``render`` draws a plan (text or PNG);
``stack`` plans the main stack of a program on a board (``stack_table.json``, tools/stack_usage.py).
"""
from __future__ import annotations

from .planner import ALGORITHMS, Buffer, Plan, PlanError, lower_bound, plan, plan_regions, verify

__all__ = ["ALGORITHMS", "Buffer", "Plan", "PlanError", "lower_bound", "plan", "plan_regions", "verify"]
