"""Schedule search under a memory budget: contribution analysis by host simulation, then a
budgeted selection whose memory comes from the planner itself.

1. Probes (int8 engine, same data, steps and seed each): zero-shot accuracy; biases of the last k
   conv/fc layers for each k in :func:`bias_counts`; the weights of each conv/fc layer alone at
   each channel ratio of :data:`RATIOS`. A probe's *gain* is its accuracy minus zero-shot.
2. Selection: a candidate is (k, {layer: ratio}); its score is gain(biases k) + the sum of the
   chosen layers' weight gains (only positive gains are ever chosen). Its memory is the planned
   SRAM peak (persistent + arena) of its schedule, not an estimate. Small spaces are enumerated
   best score first until a candidate fits; large ones are grown greedily from the best fitting
   bias-only candidate, adding the upgrade with the most gain per added byte that still fits.
3. The chosen schedule and the best bias-only schedule that fits are both simulated, so the
   report can show what the search bought.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from .schedule import Schedule, conv_fc_layers, resolve

RATIOS = (0.125, 0.25, 0.5, 1.0)
#: enumerate every combination when there are at most this many, else grow greedily
EXHAUSTIVE_LIMIT = 20000


@dataclass(frozen=True)
class Probe:
    kind: str  # "zero" | "bias" | "weight"
    k: int = 0  # bias: last k layers
    layer: int = 0  # weight: conv/fc index from the input
    ratio: float = 0.0

    def schedule(self, n_layers: int) -> Schedule:
        if self.kind == "zero":
            return Schedule("none")
        if self.kind == "bias":
            return Schedule("bias", bias_last=self.k)
        return Schedule("sparse", bias_last=0, update={self.layer - n_layers: self.ratio})

    @property
    def label(self) -> str:
        if self.kind == "zero":
            return "zero-shot"
        if self.kind == "bias":
            return f"biases of last {self.k}"
        return f"layer {self.layer} weights x{self.ratio:g}"


@dataclass
class Candidate:
    k: int
    ratios: dict[int, float]  # layer index from the input -> ratio
    score: float
    peak_bytes: int = 0

    def schedule(self, n_layers: int) -> Schedule:
        if not self.ratios:
            return Schedule("bias", bias_last=self.k) if self.k else Schedule("none")
        return Schedule("sparse", bias_last=self.k, update={i - n_layers: r for i, r in sorted(self.ratios.items())})


@dataclass
class SearchResult:
    budget: int
    probes: list[dict[str, Any]]
    chosen: Candidate
    best_bias: Candidate | None
    chosen_accuracy: float
    bias_accuracy: float | None
    zero_shot: float
    evaluated: int  # candidates planned
    method: str  # "exhaustive" | "greedy"
    extra: dict[str, Any] = field(default_factory=dict)


def bias_counts(n_layers: int) -> list[int]:
    """k values probed for biases-only: every k for small models, else 1, 2, 4, ... and n."""
    if n_layers <= 12:
        return list(range(1, n_layers + 1))
    ks = sorted({min(n_layers, 1 << i) for i in range(int(math.log2(n_layers)) + 1)} | {n_layers})
    return ks


def probes_for(n_layers: int) -> list[Probe]:
    out = [Probe("zero")] + [Probe("bias", k=k) for k in bias_counts(n_layers)]
    out += [Probe("weight", layer=i, ratio=r) for i in range(n_layers) for r in RATIOS]
    return out


def _simulate(args) -> float:
    graph, schedule, data, steps, seed, remedy = args
    from .train_int import train_int8

    if schedule.kind == "none":
        from . import driver
        from .train_int import Int8Trainer

        return driver.evaluate(Int8Trainer(graph, resolve(schedule, graph)), data.x_test, data.y_test)
    return train_int8(graph, schedule, data, steps=steps, seed=seed, remedy=remedy).acc_after


def run_probes(graph, data, probes: list[Probe], steps: int | None, seed: int, remedy: str, jobs: int,
               on_done: Callable[[Probe, float], None] | None = None) -> dict[Probe, float]:
    """Accuracy of every probe (``jobs`` > 1: in parallel processes)."""
    n = len(conv_fc_layers(graph))
    tasks = [(graph, p.schedule(n), data, steps, seed, remedy) for p in probes]
    out: dict[Probe, float] = {}
    if jobs <= 1:
        for p, t in zip(probes, tasks):
            out[p] = _simulate(t)
            if on_done:
                on_done(p, out[p])
        return out
    import concurrent.futures as cf
    import multiprocessing as mp

    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("fork")) as ex:
        futs = {ex.submit(_simulate, t): p for p, t in zip(probes, tasks)}
        for f in cf.as_completed(futs):
            p = futs[f]
            out[p] = f.result()
            if on_done:
                on_done(p, out[p])
    return out


def select(graph, acc: dict[Probe, float], budget: int, peak_of: Callable[[Schedule], int]) -> tuple[Candidate, Candidate | None, int, str]:
    """The best-scoring candidate whose planned peak fits ``budget``, the best bias-only one, the
    number of candidates planned and the method used."""
    n = len(conv_fc_layers(graph))
    zero = acc[Probe("zero")]
    bias_gain = {0: 0.0}
    bias_gain.update({p.k: a - zero for p, a in acc.items() if p.kind == "bias"})
    w_gain: dict[int, dict[float, float]] = {}
    for p, a in acc.items():
        if p.kind == "weight" and a - zero > 0:
            w_gain.setdefault(p.layer, {})[p.ratio] = a - zero
    planned = 0
    cache: dict[tuple, int] = {}

    def peak(c: Candidate) -> int:
        nonlocal planned
        key = (c.k, tuple(sorted(c.ratios.items())))
        if key not in cache:
            cache[key] = peak_of(c.schedule(n))
            planned += 1
        c.peak_bytes = cache[key]
        return c.peak_bytes

    # best bias-only candidate that fits
    best_bias = None
    for k, g in sorted(bias_gain.items(), key=lambda kv: (-kv[1], kv[0])):
        c = Candidate(k, {}, g)
        if k and peak(c) <= budget:
            best_bias = c
            break

    layers = sorted(w_gain)
    choices = [[0.0] + sorted(w_gain[i]) for i in layers]
    space = len(bias_gain) * math.prod(len(c) for c in choices)
    if space <= EXHAUSTIVE_LIMIT:
        cands = []
        for k, g in bias_gain.items():
            for combo in itertools.product(*choices):
                ratios = {i: r for i, r in zip(layers, combo) if r}
                score = g + sum(w_gain[i][r] for i, r in ratios.items())
                cands.append(Candidate(k, ratios, score))
        cands.sort(key=lambda c: (-c.score, c.k, sorted(c.ratios.items())))
        for c in cands:
            if (c.k or c.ratios) and peak(c) <= budget:
                return c, best_bias, planned, "exhaustive"
        return Candidate(0, {}, 0.0), best_bias, planned, "exhaustive"

    cur = best_bias or Candidate(0, {}, 0.0, peak_of(Schedule("none")))
    while True:
        best = None
        for i in layers:
            for r, g in w_gain[i].items():
                old = cur.ratios.get(i, 0.0)
                if r <= old:
                    continue
                dg = g - (w_gain[i][old] if old else 0.0)
                if dg <= 0:
                    continue
                c = Candidate(cur.k, {**cur.ratios, i: r}, cur.score + dg)
                if peak(c) > budget:
                    continue
                ratio = dg / max(1, c.peak_bytes - cur.peak_bytes)
                if best is None or ratio > best[0]:
                    best = (ratio, c)
        if best is None:
            return cur, best_bias, planned, "greedy"
        cur = best[1]


def search(graph, data, budget: int, peak_of: Callable[[Schedule], int], steps: int | None = None, seed: int = 0,
           remedy: str = "master", jobs: int = 1, on_probe=None, on_phase=None) -> SearchResult:
    n = len(conv_fc_layers(graph))
    probes = probes_for(n)
    if on_phase:
        on_phase("probes", len(probes))
    acc = run_probes(graph, data, probes, steps, seed, remedy, jobs, on_probe)
    if on_phase:
        on_phase("select", 0)
    chosen, best_bias, planned, method = select(graph, acc, budget, peak_of)
    if on_phase:
        on_phase("confirm", 0)
    finals = [chosen.schedule(n)] + ([best_bias.schedule(n)] if best_bias else [])
    res = run_probes_schedules(graph, data, finals, steps, seed, remedy, jobs)
    zero = acc[Probe("zero")]
    return SearchResult(budget, [{"probe": p.label, "kind": p.kind, "k": p.k, "layer": p.layer, "ratio": p.ratio,
                                  "accuracy": a, "gain": a - zero} for p, a in acc.items()],
                        chosen, best_bias, res[0], res[1] if best_bias else None, zero, planned, method)


def run_probes_schedules(graph, data, schedules: list[Schedule], steps, seed, remedy, jobs) -> list[float]:
    tasks = [(graph, s, data, steps, seed, remedy) for s in schedules]
    if jobs <= 1 or len(tasks) == 1:
        return [_simulate(t) for t in tasks]
    import concurrent.futures as cf
    import multiprocessing as mp

    with cf.ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=mp.get_context("fork")) as ex:
        return list(ex.map(_simulate, tasks))
