"""Static memory planner: buffers with lifetimes -> byte offsets in one arena, verified.

A pure function over plain records (no IR, no numpy arrays of tensors): the compiler turns its
training program into ``Buffer`` records, this module packs them, and ``verify`` checks the packing
with code that shares nothing with the placement routine.

Contract
  * ``Buffer.first`` / ``Buffer.last`` are inclusive program-step indices; two buffers *conflict*
    when their step ranges intersect and both have ``size > 0``. Conflicting buffers must not share
    a byte; non-conflicting ones may.
  * Offsets are in bytes from the arena base; ``offset % align == 0``. The arena base itself must
    be aligned to ``Plan.alignment`` (the largest ``align`` in the plan) by whoever allocates it.
  * ``Plan.size`` is the highest byte any buffer ends at (not rounded up).
  * Zero-size buffers get offset 0 and never conflict.
  * One plan = one region. ``plan`` refuses mixed regions; ``plan_regions`` splits them.

Algorithms (registered in ``ALGORITHMS``, each ``(buffers) -> {name: offset}``)
  All but ``linear`` share one placement routine: walk the buffers in an algorithm-specific order
  and put each at an offset chosen among the gaps left by the already-placed buffers whose
  lifetimes overlap it (``first``-fit: the lowest aligned gap; ``best``-fit: the smallest gap that
  holds it, lowest on ties, else above everything). Orders (every key ends in ``first, name`` so
  the result does not depend on input order):

  greedy_by_size           size desc, first-fit. TFLM's GreedyMemoryPlanner.
  greedy_by_size_best_fit  size desc, best-fit. "Greedy by size for offset calculation",
                           Pisarchyk & Lee 2020 (TFLite GPU delegate).
  greedy_by_breadth        steps by live bytes desc (the widest step first); within a step its
                           unplaced buffers by size desc. A buffer is therefore keyed by the widest
                           step in its lifetime, then that step's index, then size desc. First-fit.
  greedy_by_conflicts      number of conflicting neighbours desc, then size desc. First-fit.
  greedy_by_area           size * lifetime (byte-steps) desc. First-fit.
  linear                   every buffer its own slot, in (first, name) order: the upper bound.

``lower_bound`` is the largest number of bytes live at one step; no packing can go below it
(alignment padding aside).
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from numbers import Integral
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "ALGORITHMS",
    "Buffer",
    "Plan",
    "PlanError",
    "live_profile",
    "lower_bound",
    "plan",
    "plan_regions",
    "register",
    "verify",
]


class PlanError(ValueError):
    """A memory plan (or the buffer set given to the planner) is invalid."""


def _is_int(x: object) -> bool:
    return isinstance(x, Integral) and not isinstance(x, bool)


@dataclass(frozen=True)
class Buffer:
    """One allocation: ``size`` bytes live from step ``first`` to step ``last`` (both inclusive)."""

    name: str
    size: int
    first: int
    last: int
    align: int = 4
    region: str = "arena"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"buffer name must be a non-empty string, got {self.name!r}")
        who = f"buffer {self.name!r}"
        for attr in ("size", "first", "last", "align"):
            v = getattr(self, attr)
            if not _is_int(v):
                raise ValueError(f"{who}: {attr} must be an int, got {type(v).__name__} {v!r}")
        if self.size < 0:
            raise ValueError(f"{who}: size must be >= 0 bytes, got {self.size}")
        if self.first > self.last:
            raise ValueError(f"{who}: first step {self.first} is after last step {self.last}")
        if self.align < 1 or self.align & (self.align - 1):
            raise ValueError(f"{who}: align must be a power of two >= 1, got {self.align}")
        if not isinstance(self.region, str) or not self.region:
            raise ValueError(f"{who}: region must be a non-empty string, got {self.region!r}")

    def overlaps(self, other: Buffer) -> bool:
        """True when both are non-empty and their step ranges intersect."""
        return (self.size > 0 and other.size > 0
                and self.first <= other.last and other.first <= self.last)


# ---------------------------------------------------------------------------------------------
# Live-bytes profile and lower bound
# ---------------------------------------------------------------------------------------------
def live_profile(buffers: Iterable[Buffer]) -> list[tuple[int, int]]:
    """``[(step, bytes live at step)]`` for every step where some buffer starts, ascending.

    The live total only rises where a buffer starts, so its maximum is always in this list.
    Sweep over start/end events: O(n log n), independent of how far apart the steps are.
    """
    delta: dict[int, int] = defaultdict(int)
    starts: set[int] = set()
    for b in buffers:
        delta[b.first] += b.size
        delta[b.last + 1] -= b.size
        starts.add(b.first)
    out: list[tuple[int, int]] = []
    live = 0
    for step in sorted(delta):
        live += delta[step]
        if step in starts:
            out.append((step, live))
    return out


def lower_bound(buffers: Iterable[Buffer]) -> int:
    """Max over steps of the bytes live at that step (0 for no buffers)."""
    return max((live for _, live in live_profile(buffers)), default=0)


def _peak(profile: Sequence[tuple[int, int]]) -> tuple[int | None, int]:
    """(earliest step with the most bytes live, those bytes); (None, 0) when empty."""
    best_step, best = None, -1
    for step, live in profile:
        if live > best:
            best_step, best = step, live
    return best_step, max(best, 0)


# ---------------------------------------------------------------------------------------------
# Placement
# ---------------------------------------------------------------------------------------------
def _align_up(x: int, align: int) -> int:
    return (x + align - 1) & -align


def _place(order: Sequence[Buffer], fit: str) -> dict[str, int]:
    """Place buffers in ``order``; each goes into a gap among placed buffers it conflicts with."""
    offsets: dict[str, int] = {}
    placed: list[tuple[int, int, int, int]] = []  # (first, last, start byte, end byte)
    for b in order:
        if b.size == 0:
            offsets[b.name] = 0
            continue
        f, l, size, align = b.first, b.last, b.size, b.align
        busy = sorted((s, e) for pf, pl, s, e in placed if pf <= l and f <= pl)
        cursor = 0  # lowest aligned byte above every busy interval seen so far
        best_gap, best_off = -1, -1
        for s, e in busy:
            if cursor + size <= s:  # [cursor, s) is free and holds the buffer
                if fit == "first":
                    best_off = cursor
                    break
                if best_off < 0 or s - cursor < best_gap:
                    best_gap, best_off = s - cursor, cursor
            if e > cursor:
                cursor = _align_up(e, align)
        off = best_off if best_off >= 0 else cursor
        offsets[b.name] = off
        placed.append((f, l, off, off + size))
    return offsets


Algorithm = Callable[[Sequence[Buffer]], dict[str, int]]
ALGORITHMS: dict[str, Algorithm] = {}


def register(name: str) -> Callable[[Algorithm], Algorithm]:
    """Decorator: add a placement algorithm to ``ALGORITHMS`` under ``name``."""
    def deco(fn: Algorithm) -> Algorithm:
        if name in ALGORITHMS:
            raise ValueError(f"memory planning algorithm {name!r} is already registered")
        ALGORITHMS[name] = fn
        return fn
    return deco


@register("greedy_by_size")
def greedy_by_size(buffers: Sequence[Buffer]) -> dict[str, int]:
    """Largest first, lowest aligned gap (TFLM GreedyMemoryPlanner)."""
    return _place(sorted(buffers, key=lambda b: (-b.size, b.first, b.name)), "first")


@register("greedy_by_size_best_fit")
def greedy_by_size_best_fit(buffers: Sequence[Buffer]) -> dict[str, int]:
    """Largest first, smallest gap that holds it (Pisarchyk & Lee 2020)."""
    return _place(sorted(buffers, key=lambda b: (-b.size, b.first, b.name)), "best")


@register("greedy_by_breadth")
def greedy_by_breadth(buffers: Sequence[Buffer]) -> dict[str, int]:
    """Buffers of the widest step first (then the next widest...), largest first within a step."""
    profile = live_profile(buffers)
    steps = [s for s, _ in profile]
    lives = [v for _, v in profile]

    def key(b: Buffer):
        lo, hi = bisect_left(steps, b.first), bisect_right(steps, b.last)
        widest = max(lives[lo:hi])  # b.first is in ``steps``, so the slice is never empty
        return (-widest, steps[lives.index(widest, lo, hi)], -b.size, b.first, b.name)

    return _place(sorted(buffers, key=key), "first")


@register("greedy_by_conflicts")
def greedy_by_conflicts(buffers: Sequence[Buffer]) -> dict[str, int]:
    """Most conflicting neighbours first (hardest to place), then largest."""
    live = [b for b in buffers if b.size > 0]
    firsts = sorted(b.first for b in live)
    lasts = sorted(b.last for b in live)
    n = len(live)

    def conflicts(b: Buffer) -> int:
        if b.size == 0:
            return 0
        # neighbours = all - those ending before b starts - those starting after b ends - b itself
        return n - bisect_left(lasts, b.first) - (n - bisect_right(firsts, b.last)) - 1

    return _place(sorted(buffers, key=lambda b: (-conflicts(b), -b.size, b.first, b.name)), "first")


@register("greedy_by_area")
def greedy_by_area(buffers: Sequence[Buffer]) -> dict[str, int]:
    """Most byte-steps first (big and long-lived tensors form the floor), then largest."""
    return _place(sorted(buffers, key=lambda b: (-b.size * (b.last - b.first + 1), -b.size,
                                                  b.first, b.name)), "first")


@register("linear")
def linear(buffers: Sequence[Buffer]) -> dict[str, int]:
    """No reuse: each buffer its own aligned slot, in (first, name) order."""
    offsets: dict[str, int] = {}
    top = 0
    for b in sorted(buffers, key=lambda b: (b.first, b.name)):
        if b.size == 0:
            offsets[b.name] = 0
            continue
        offsets[b.name] = _align_up(top, b.align)
        top = offsets[b.name] + b.size
    return offsets


# ---------------------------------------------------------------------------------------------
# Verifier (independent of _place: pairwise, vectorised)
# ---------------------------------------------------------------------------------------------
_VERIFY_ROWS = 512  # rows of the pairwise test per numpy block (bounds memory at ~n * 512 bools)


def verify(buffers: Sequence[Buffer], offsets: Mapping[str, int], size: int) -> None:
    """Raise ``PlanError`` unless ``offsets`` is a valid packing of ``buffers`` into ``size`` bytes.

    Checks: unique names, an offset for every buffer and none for unknown names, integer offsets
    >= 0, ``offset % align == 0``, ``offset + size <= size`` (arena), and no two buffers whose
    lifetimes overlap share a byte.
    """
    if not _is_int(size) or size < 0:
        raise PlanError(f"arena size must be an int >= 0, got {size!r}")
    seen: set[str] = set()
    for b in buffers:
        if b.name in seen:
            raise PlanError(f"buffer {b.name!r} appears twice")
        seen.add(b.name)
    unknown = sorted(set(offsets) - seen)
    if unknown:
        raise PlanError(f"offsets given for unknown buffers: {', '.join(map(repr, unknown[:5]))}")
    for b in buffers:
        if b.name not in offsets:
            raise PlanError(f"buffer {b.name!r} has no offset")
        off = offsets[b.name]
        if not _is_int(off) or off < 0:
            raise PlanError(f"buffer {b.name!r}: offset must be an int >= 0, got {off!r}")
        if off % b.align:
            raise PlanError(f"buffer {b.name!r}: offset {off} is not a multiple of its "
                            f"alignment {b.align}")
        if off + b.size > size:
            raise PlanError(f"buffer {b.name!r}: bytes [{off}, {off + b.size}) exceed the arena "
                            f"of {size} bytes")
    live = [b for b in buffers if b.size > 0]
    if len(live) < 2:
        return
    f = np.array([b.first for b in live], dtype=np.int64)
    l = np.array([b.last for b in live], dtype=np.int64)
    o = np.array([offsets[b.name] for b in live], dtype=np.int64)
    e = o + np.array([b.size for b in live], dtype=np.int64)
    n = len(live)
    cols = np.arange(n)
    for r0 in range(0, n, _VERIFY_ROWS):
        r = slice(r0, min(n, r0 + _VERIFY_ROWS))
        clash = ((f[r, None] <= l[None, :]) & (f[None, :] <= l[r, None])
                 & (o[r, None] < e[None, :]) & (o[None, :] < e[r, None])
                 & (cols[None, :] > cols[r, None]))  # each unordered pair once, never i with i
        if clash.any():
            i, j = np.argwhere(clash)[0]
            a, b = live[r0 + int(i)], live[int(j)]
            oa, ob = offsets[a.name], offsets[b.name]
            raise PlanError(
                f"buffers {a.name!r} (bytes [{oa}, {oa + a.size}), steps {a.first}..{a.last}) and "
                f"{b.name!r} (bytes [{ob}, {ob + b.size}), steps {b.first}..{b.last}) share bytes "
                f"[{max(oa, ob)}, {min(oa + a.size, ob + b.size)}) while both live at steps "
                f"{max(a.first, b.first)}..{min(a.last, b.last)}")


# ---------------------------------------------------------------------------------------------
# Plans
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """A verified packing of one region's buffers.

    ``candidates`` maps every algorithm that ran to the arena it reached (bytes), in run order.
    """

    offsets: dict[str, int]
    size: int
    algorithm: str
    lower_bound: int
    buffers: tuple[Buffer, ...] = ()
    candidates: dict[str, int] = field(default_factory=dict)

    @property
    def region(self) -> str | None:
        return self.buffers[0].region if self.buffers else None

    @property
    def alignment(self) -> int:
        """Alignment the arena base needs (largest buffer alignment; 1 when empty)."""
        return max((b.align for b in self.buffers), default=1)

    @property
    def ratio(self) -> float:
        """Arena / lower bound (1.0 is optimal; 1.0 when both are 0)."""
        return self.size / self.lower_bound if self.lower_bound else (1.0 if self.size == 0 else float("inf"))

    def buffer(self, name: str) -> Buffer:
        for b in self.buffers:
            if b.name == name:
                return b
        raise KeyError(name)

    def end(self, name: str) -> int:
        """One past the last byte of buffer ``name``."""
        return self.offsets[name] + self.buffer(name).size

    def live_at(self, step: int) -> list[Buffer]:
        """Buffers live at ``step`` (zero-size ones included), by offset then name."""
        return sorted((b for b in self.buffers if b.first <= step <= b.last),
                      key=lambda b: (self.offsets[b.name], b.name))

    def live_bytes(self, step: int) -> int:
        return sum(b.size for b in self.buffers if b.first <= step <= b.last)

    def profile(self) -> list[tuple[int, int]]:
        """See ``live_profile``."""
        return live_profile(self.buffers)

    def peak_step(self) -> int | None:
        """Earliest step with the most bytes live (None when there are no buffers)."""
        return _peak(self.profile())[0]

    def peak_bytes(self) -> int:
        return _peak(self.profile())[1]


def _check_buffers(buffers: Sequence[Buffer]) -> None:
    seen: set[str] = set()
    for b in buffers:
        if not isinstance(b, Buffer):
            raise PlanError(f"expected Buffer records, got {type(b).__name__} {b!r}")
        if b.name in seen:
            raise PlanError(f"buffer name {b.name!r} is used twice")
        seen.add(b.name)


def plan(buffers: Iterable[Buffer], algorithms: Sequence[str] | str | None = None) -> Plan:
    """Run the named algorithms (default: all in ``ALGORITHMS`` order), verify every result and
    return the smallest arena; ties go to the earlier algorithm in the run order.

    All buffers must be in one region (see ``plan_regions``).
    """
    bufs = tuple(buffers)
    _check_buffers(bufs)
    regions = sorted({b.region for b in bufs})
    if len(regions) > 1:
        raise PlanError(f"buffers span regions {', '.join(map(repr, regions))}; a plan covers one "
                        "region: use plan_regions() or filter by region")
    if algorithms is None:
        names = list(ALGORITHMS)
    else:
        names = [algorithms] if isinstance(algorithms, str) else list(algorithms)
        if not names:
            raise ValueError("no memory planning algorithm given")
        unknown = [a for a in names if a not in ALGORITHMS]
        if unknown:
            raise ValueError(f"unknown memory planning algorithm(s) {', '.join(map(repr, unknown))}; "
                             f"known: {', '.join(ALGORITHMS)}")
    bound = lower_bound(bufs)
    best: tuple[int, str, dict[str, int]] | None = None
    candidates: dict[str, int] = {}
    for name in names:
        offsets = ALGORITHMS[name](bufs)
        size = max((offsets.get(b.name, 0) + b.size for b in bufs), default=0)
        try:
            verify(bufs, offsets, size)
        except PlanError as exc:  # a planner bug, never the user's
            raise PlanError(f"algorithm {name!r} produced an invalid plan: {exc}") from exc
        candidates[name] = size
        if best is None or size < best[0]:
            best = (size, name, offsets)
    assert best is not None
    size, name, offsets = best
    return Plan(offsets=dict(offsets), size=size, algorithm=name, lower_bound=bound,
                buffers=bufs, candidates=candidates)


def plan_regions(buffers: Iterable[Buffer], algorithms: Sequence[str] | str | None = None
                 ) -> dict[str, Plan]:
    """One ``plan`` per region, keyed by region name (sorted)."""
    bufs = tuple(buffers)
    _check_buffers(bufs)
    by_region: dict[str, list[Buffer]] = defaultdict(list)
    for b in bufs:
        by_region[b.region].append(b)
    return {r: plan(by_region[r], algorithms) for r in sorted(by_region)}
