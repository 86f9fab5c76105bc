"""The int8 training engine: what the firmware does, step for step, in numpy integers.

:class:`Int8Trainer` trains an INT8 IR graph (a PTQ'd model or an int8 TFLite import) under a
resolved schedule, one sample at a time, with the public shape of the float twin
(:class:`~microtrain.compiler.train_float.FloatTrainer`): same constructor arguments (plus
``qas``, ``remedy``, ``loss_input``), ``step`` / ``train`` / ``evaluate``, the same
:class:`~microtrain.compiler.train_float.History`.

Device contract (everything on the training path is integer; host constants are prepared once in
the constructor, tagged ``@host_only`` or computed there):

  * Parameters. Trained tensors live in a private dict (full tensors: int8 weights, int32 biases);
    the graph is never modified. Scales never change, so the forward ``prepare`` constants
    (multipliers, shifts, clamps) and the backward constants are computed once and reused.
  * Input. A float graph input followed by a ``quantize`` node is a host boundary: samples are
    quantized on the host (``quantize_samples``) and fed as the quantize node's int8 output.
  * Forward: each program ``forward`` step runs ``forward_int8`` with its prepared constants.
  * Loss (backprop): ``softmax_cross_entropy_int`` on the int8 logits (``loss_input="int8"``, the
    program's ``logits`` tensor, nothing extra saved), or on the int32 accumulators of the final
    fully_connected layer (``loss_input="acc"``; needs a final FC without fused activation).
  * Backward: ``grad_input`` / ``update`` steps call ``backward_int8`` in program order. An update
    mutates the weights in place, so a later ``grad_input`` of the same layer would see new
    weights; the program puts every input gradient first (pre-update weights). Fan-out gradients
    are summed with ``gradfmt.add``.
  * Update: ``sgd_delta`` (QAS on: -lr*g/s; off: -lr*g*s) gives int32 Q15.16 deltas in
    quantized units for the trained rows only, then
      - int8 weights, ``remedy="master"``: an int16 master copy (w_q * 2^8) of the trained slice
        (2 bytes per trained weight element); the int8 weights are ``RDBPOT(master, 8)``;
      - int8 weights, ``remedy="stochastic"``: ``apply_stochastic_round`` with one xorshift32
        state (4 bytes) shared by all tensors, one draw per element in row-major order;
      - int32 biases (both remedies): ``b += RDBPOT(delta, 16)``, saturated. A bias LSB is
        s_x * s_w, one LSB of x times one LSB of w, so sub-LSB rounding of a bias is negligible.
    Momentum (optional): an int32 Q15.16 velocity per trained element, ``v = SRDHM(v, mu) + delta``
    (mu a Q31 constant), applied instead of ``delta``. This is ``v = mu*v + lr_t*g``: the float
    twin's ``v = mu*v + g; w -= lr_t*v`` for a constant lr, slightly different under decay.
  * Learning rate: one Q31 multiplier + exponent per method (host). ``"cosine"`` multiplies it
    per step by ``c(t) = (1 + cos(pi*min(t,T)/T))/2`` computed on the device from a host table
    :data:`COS_TABLE_Q15` (257 int16 entries of ``c`` at ``t/T = i/256``, 514 bytes of flash) by
    linear interpolation in integers (``i = t*256 // T``, remainder ``t*256 % T``), then a SRDHM
    and a renormalisation of the multiplier to [2^30, 2^31). Agrees with the float formula to
    < 1e-4 absolute. ``lr_t = 0`` skips the update.

Forward gradient (``method == "fg"`` layers; sign-m-SPSA, DESIGN.md), per step on B samples:
  * z_i is the float twin's stream, regenerated (never stored): ``rademacher(perturbation_seed(
    seed, t, i), n)`` walked over ``fg_walk`` (shared helpers, imported from train_float).
  * delta per tensor (host, fixed at construction): weights ``max(1, round(eps * max|master|))``
    in master units (1/256 LSB, master = w_q * 2^8 over the whole tensor); a weight tensor whose
    delta is below 256 (one int8 LSB) is excluded with a warning (it would only random-walk);
    biases ``round(eps * max|b_q|)`` in bias LSBs, excluded when 0. Excluded tensors keep their
    stream positions.
  * Perturbation, k = +1, -1, 0 (the +dz, -2dz, +dz sequence). Biases (int32): in place,
    ``b += dz; b -= 2dz; b += dz`` (exact; biases are saturated to +-(2^31 - 1 - 2*delta)).
    Weights: every fg weight slice has an int16 master copy (whatever ``remedy`` is); the int8
    weights are rewritten in place as ``sat8(RDBPOT(master + k*dz, 8))`` (int32 temporaries)
    and the master is never written: ``master +- delta`` does not fit int16 at |w_q| = 127 once
    delta >= 1 LSB, so the master cannot take the increments itself. Restore (k = 0) is exact by
    construction: w8 is a function of the master.
  * L+ / L- from the int32 accumulators of the final fully_connected layer (integer loss, Q15.16
    batch mean), not the int8 logits; a tie (L+ == L-) is skipped.
  * g = sum_i sign(L+ - L-) z_i (int, |g| <= m); update through ``sgd_delta`` with ``lr/m`` as
    the host lr constant, Grad(g, 0), into the master (weights) or the bias, as above.
  * Hybrid: the backprop head is trained first on each of the step's samples (batch 1), then the
    fg perturbations run on the batch, as in the float twin.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import fixedpoint as fp
from .gradfmt import Grad, add as grad_add, host_only, mul_q31, q31, rshift_round
from .ir import Graph, verify
from .ops import registry
from .ops._grad_int import (DELTA_FRAC_BITS, MASTER_FRAC_BITS, apply_master_copy, apply_stochastic_round,
                            init_master, prepare_int8_backward, prepare_update, sgd_delta)
from .ops.loss_int import LOSS_FRAC_BITS, prepare_softmax_ce_acc, prepare_softmax_ce_int8, softmax_cross_entropy_int
from .patch import PatchStage, run_stage
from .program import LINEAR_OPS, TrainingProgram, build_program, grad_name
from .schedule import FGOptions, Schedule, TrainPlan, resolve
from . import driver
from .driver import History, TrainResult, evaluate, predict  # noqa: F401
from .train_float import LR_SCHEDULES, _default_lrs, fg_walk, fmix32, perturbation_seed, rademacher, row_index

REMEDIES = ("master", "stochastic")
LOSS_INPUTS = ("int8", "acc")
INT32_MAX = (1 << 31) - 1
_M32 = 0xFFFFFFFF
#: cosine lr table: round(2^15 * (1 + cos(pi * i / 256)) / 2), i = 0..256 (int16, 514 bytes)
COS_TABLE_STEPS = 256


@host_only
def _cos_table() -> np.ndarray:
    i = np.arange(COS_TABLE_STEPS + 1, dtype=np.float64)
    return np.floor((1 << 15) * (1.0 + np.cos(np.pi * i / COS_TABLE_STEPS)) / 2.0 + 0.5).astype(np.int64)


COS_TABLE_Q15 = _cos_table()


def cosine_factor_q15(t: int, total: int) -> int:
    """``(1 + cos(pi * min(t, T) / T)) / 2`` as Q15 (0..32768), integer only: table lookup and
    linear interpolation (all products < 2^31 for T < 2^23)."""
    tt = min(int(t), int(total))
    num = tt * COS_TABLE_STEPS
    i, rem = num // total, num % total
    a = int(COS_TABLE_Q15[i])
    if i == COS_TABLE_STEPS:
        return a
    b = int(COS_TABLE_Q15[i + 1])
    return a - ((a - b) * rem) // total


def scale_lr(mult: int, shift: int, f_q15: int) -> tuple[int, int]:
    """lr (``mult * 2^(shift - 31)``, mult in [2^30, 2^31)) times a Q15 factor in [0, 1], with the
    product multiplier renormalised to [2^30, 2^31). (0, 0) when the product is 0."""
    if f_q15 >= 1 << 15:
        return mult, shift
    m = int(fp.srdhm(np.int64(mult), np.int64(f_q15 << 16)))
    if m <= 0:
        return 0, 0
    lsh = 31 - m.bit_length()
    return m << lsh, shift - lsh


@dataclass
class StepResult:
    """One :meth:`Int8Trainer.step`: loss (Q15.16 nats, mean over the step's samples) and correct
    predictions of the unperturbed forward passes, before any update of the step."""

    loss_q16: int
    correct: int
    samples: int
    skipped: int = 0  # forward-gradient perturbations skipped because L+ == L-

    @property
    @host_only
    def loss(self) -> float:
        return self.loss_q16 / float(1 << LOSS_FRAC_BITS)


@dataclass
class _Slice:
    """A trained slice: rows [0, rows) along ``axis`` of ``tensor``; host constants of its update."""

    tensor: str
    role: str  # "weight" | "bias"
    method: str  # "bp" | "fg"
    axis: int
    rows: int
    index: tuple
    upd: dict  # prepare_update constants (lr part replaced per step)
    lo: int
    hi: int
    master: bool  # has an int16 master copy


class Int8Trainer:
    """Integer training of ``graph`` (int8 IR, not modified) under ``plan``; see the module doc.

    ``lr``/``fg_lr``/``momentum``/``seed``/``lr_schedule``/``total_steps``: as the float twin.
    ``qas``: QAS on/off (None: the schedule's). ``remedy``: "master" | "stochastic" for backprop
    int8 weights. ``loss_input``: "int8" | "acc", the backprop loss input. ``accumulate``: only 1.
    """

    def __init__(self, graph: Graph, plan: TrainPlan | Schedule, lr: float | None = None,
                 momentum: float = 0.0, seed: int = 0, lr_schedule: str = "constant",
                 total_steps: int | None = None, accumulate: int = 1, fg_lr: float | None = None,
                 program: TrainingProgram | None = None, qas: bool | None = None, remedy: str = "master",
                 loss_input: str = "int8", patch: PatchStage | None = None):
        verify(graph)
        if isinstance(plan, Schedule):
            plan = resolve(plan, graph)
        driver.check_options(lr_schedule, total_steps, momentum, accumulate, LR_SCHEDULES)
        if lr_schedule == "cosine" and int(total_steps) >= 1 << 23:
            raise ValueError("lr_schedule 'cosine': total_steps must be < 2^23 (int32 interpolation)")
        if remedy not in REMEDIES:
            raise ValueError(f"remedy must be one of {', '.join(REMEDIES)}, got {remedy!r}")
        if loss_input not in LOSS_INPUTS:
            raise ValueError(f"loss_input must be one of {', '.join(LOSS_INPUTS)}, got {loss_input!r}")
        self.graph = graph
        self.plan = plan
        self.program = program if program is not None else build_program(graph, plan)
        self.lrs = _default_lrs(plan, lr, fg_lr)
        self.momentum = float(momentum)
        self.seed = int(seed) & _M32
        self.lr_schedule = lr_schedule
        self.total_steps = None if total_steps is None else int(total_steps)
        self.accumulate = int(accumulate)
        # gradient accumulation: running Grad sums per update tensor; the mean is the sum times
        # 1/count, a host-prepared Q31 constant per count (accumulate entries on the device)
        self._acc: dict[str, Grad] = {}
        self._acc_count = 0
        self._inv_count = {c: q31(1.0 / c) for c in range(1, self.accumulate + 1)}
        self.qas = plan.schedule.qas if qas is None else bool(qas)
        self.remedy = remedy
        self.loss_input = loss_input
        self.fg: FGOptions = plan.schedule.fg or FGOptions()
        self.t = 0
        self.warnings: list[str] = []
        self._nodes = {n.name: n for n in graph.nodes}

        # host boundary: float input -> quantize
        fwd = [s for s in self.program.steps if s.kind == "forward"]
        inp = graph.inputs[0] if len(graph.inputs) == 1 else None
        if inp is None:
            raise ValueError("Int8Trainer: single-input models only")
        if fwd and fwd[0].op == "quantize" and fwd[0].reads == [inp]:
            self.input = fwd[0].writes[0]
            fwd = fwd[1:]
        else:
            self.input = inp
        if graph.tensors[self.input].dtype != "int8":
            raise ValueError(f"Int8Trainer needs an int8 graph; input {self.input!r} is {graph.tensors[self.input].dtype}")
        for s in fwd:
            if s.op in ("quantize", "dequantize"):
                raise ValueError(f"Int8Trainer: {s.op} node {s.node!r} inside the model body is not supported")
        self._fwd = fwd
        self._bwd = [s for s in self.program.steps if s.kind in ("grad_input", "update")]
        self._has_bp = any(s.kind == "loss" for s in self.program.steps)
        self.prepared = {s.node: prepare_int8_backward(self._nodes[s.node], graph) for s in fwd}

        # trained slices
        self.slices: dict[str, _Slice] = {}
        for lt in plan.layers:
            node = self._nodes[lt.node]
            for role, name, rows, axis in (("weight", lt.weight, lt.weight_rows, LINEAR_OPS[lt.op]),
                                           ("bias", lt.bias, lt.bias_rows, 0)):
                if not rows or name is None:
                    continue
                t = graph.tensors[name]
                scales = self._scales(node, role, t.shape[axis])[:rows]
                upd = prepare_update(scales, 1.0, self.qas)  # lr replaced per step
                if role == "weight":
                    lo, hi = -127, 127
                else:
                    lo, hi = -INT32_MAX, INT32_MAX
                master = role == "weight" and (lt.method == "fg" or remedy == "master")
                self.slices[name] = _Slice(name, role, lt.method, axis, rows, row_index(axis, rows, len(t.shape)),
                                           upd, lo, hi, master)
        self.params: dict[str, np.ndarray] = {n: self.graph.tensors[n].data.copy() for n in self.slices}
        self.masters: dict[str, np.ndarray] = {
            n: init_master(self.params[n][s.index]) for n, s in self.slices.items() if s.master}
        self._velocity: dict[str, np.ndarray] = {}
        self.mu_q31 = int(round(self.momentum * (1 << 31))) if self.momentum else 0
        self.rng_state = fmix32(self.seed ^ 0x85EBCA6B) or 0x9E3779B9  # stochastic rounding stream
        # Q31 lr per method; the fg one includes the 1/m of g = (1/m) sum_i sign_i z_i
        self._lr_q31 = {"bp": q31(self.lrs["bp"]), "fg": q31(self.lrs["fg"] / self.fg.m)}

        # loss constants
        self._final = graph.producer(self.program.logits)
        self._acc_ok = self._final is not None and self._final.op == "fully_connected" \
            and self._final.attrs.get("act", "none") == "none"
        if loss_input == "acc" and not self._acc_ok:
            raise ValueError("loss_input 'acc' needs a final fully_connected layer without fused activation")
        self._loss_p: dict[tuple[str, int], dict] = {}

        # forward gradient
        self.walk = fg_walk(graph, plan)
        self.stream_size = sum(s.size for s in self.walk)
        self.fg_delta: dict[str, int] = {}
        for s in self.walk:
            self.fg_delta[s.tensor] = self._fg_delta(s)
        self.fg_excluded = [s.tensor for s in self.walk if self.fg_delta[s.tensor] == 0]
        for name in self.fg_excluded:
            msg = (f"forward gradient: {name} excluded, its perturbation eps {self.fg.eps:g} * max|w| is below "
                   f"one LSB (it would only random-walk)")
            self.warnings.append(msg)
            if msg not in plan.warnings:
                plan.warnings.append(msg)
        self._fg_live = [s for s in self.walk if self.fg_delta[s.tensor] > 0]
        if self.walk and not self._acc_ok:
            raise ValueError("forward gradient needs a final fully_connected layer without fused activation "
                             "(L+/L- come from its int32 accumulators)")
        for s in self._fg_live:
            if s.role == "bias":
                sl = self.slices[s.tensor]
                d = self.fg_delta[s.tensor]
                sl.lo, sl.hi = -INT32_MAX + 2 * d, INT32_MAX - 2 * d
        trained_nodes = {lt.node for lt in plan.layers if lt.trainable}
        self._start = next((k for k, s in enumerate(self._fwd) if s.node in trained_nodes), len(self._fwd))
        # patch-based execution of the frozen stage (compiler/patch.py): the same integers
        self.patch = patch
        self._patch_len = 0
        if patch is not None:
            names = [s.node for s in self._fwd[:len(patch.nodes)]]
            if names != list(patch.nodes) or patch.input != self.input or len(patch.nodes) > self._start:
                raise ValueError("patch: the stage must be the first frozen nodes of this model's forward pass "
                                 "(a stage planned for another model or schedule?)")
            self._patch_len = len(patch.nodes)

    # ---- host constants ---------------------------------------------------------------------------
    @host_only
    def _scales(self, node, role: str, cout: int) -> np.ndarray:
        w = self.graph.tensors[node.inputs[1]]
        s_w = w.quant.scale.astype(np.float64)
        if s_w.size == 1:
            s_w = np.full(cout, s_w[0])
        if role == "weight":
            return s_w
        b = self.graph.tensors[node.inputs[2]]
        if b.quant is not None and b.quant.scale.size in (1, cout):
            s = b.quant.scale.astype(np.float64)
            return np.full(cout, s[0]) if s.size == 1 else s
        return np.float64(self.graph.tensors[node.inputs[0]].quant.s) * s_w

    @host_only
    def _fg_delta(self, s) -> int:
        """Perturbation size of an fg tensor in its storage units (master units for weights, bias
        LSBs for biases); 0 = excluded."""
        data = self.graph.tensors[s.tensor].data.astype(np.int64)
        top = float(np.max(np.abs(data))) if data.size else 0.0
        if s.role == "weight":
            d = max(1, int(math.floor(self.fg.eps * top * (1 << MASTER_FRAC_BITS) + 0.5)))
            return d if d >= 1 << MASTER_FRAC_BITS else 0
        return int(math.floor(self.fg.eps * top + 0.5))

    @host_only
    def _loss_prep(self, kind: str, batch: int) -> dict:
        key = (kind, batch)
        if key not in self._loss_p:
            if kind == "int8":
                q = self.graph.tensors[self.program.logits].quant
                self._loss_p[key] = prepare_softmax_ce_int8(q.s, q.zp, batch)
            else:
                n = self._final
                s_x = np.float64(self.graph.tensors[n.inputs[0]].quant.s)
                w = self.graph.tensors[n.inputs[1]]
                s_w = w.quant.scale.astype(np.float64)
                if s_w.size == 1:
                    s_w = np.full(w.shape[0], s_w[0])
                self._loss_p[key] = prepare_softmax_ce_acc(s_x * s_w, batch)
        return self._loss_p[key]

    def prepare_batches(self, *sizes: int) -> None:
        """Host: prepare the loss constants for these batch sizes (the device gets them once)."""
        for b in sizes:
            self._loss_prep("int8", b)
            if self._acc_ok:
                self._loss_prep("acc", b)

    # ---- parameters -------------------------------------------------------------------------------
    def value(self, name: str) -> np.ndarray:
        p = self.params.get(name)
        return p if p is not None else self.graph.tensors[name].data

    def trained_graph(self) -> Graph:
        """A copy of the graph with the trained int8 weights / int32 biases in place."""
        g = self.graph.copy()
        for name, p in self.params.items():
            g.tensors[name].data = p.copy()
        return g

    def memory(self) -> dict[str, int]:
        """Training-state bytes on the device (persistent SRAM, flash for the lr table)."""
        master = sum(2 * m.size for m in self.masters.values())
        vel = sum(4 * self.params[n][s.index].size for n, s in self.slices.items()) if self.momentum else 0
        return {"master_bytes": master, "velocity_bytes": vel,
                "prng_bytes": 4 if (self.remedy == "stochastic" and any(
                    s.role == "weight" and not s.master for s in self.slices.values())) else 0,
                "fg_seed_bytes": 4 if self.walk else 0,
                "lr_table_flash_bytes": 2 * (COS_TABLE_STEPS + 1) if self.lr_schedule == "cosine" else 0,
                "trained_params": sum(self.params[n][s.index].size for n, s in self.slices.items())}

    def lr_q31(self, method: str, t: int | None = None) -> tuple[int, int]:
        """The step's lr of ``method`` as (Q31 multiplier, exponent): base * cosine factor."""
        t = self.t if t is None else t
        mult, shift = self._lr_q31[method]
        if self.lr_schedule == "cosine":
            mult, shift = scale_lr(mult, shift, cosine_factor_q15(t, self.total_steps))
        return mult, shift

    @host_only
    def lr_at(self, method: str, t: int | None = None) -> float:
        """The lr the device uses at step ``t`` (host view of :meth:`lr_q31`)."""
        mult, shift = self.lr_q31(method, t)
        return math.ldexp(mult, shift - 31)

    # ---- updates ----------------------------------------------------------------------------------
    def _apply(self, name: str, g: Grad, lr: tuple[int, int]) -> None:
        """Apply gradient ``g`` (real parameter, shaped like the slice) to slice ``name``."""
        s = self.slices[name]
        if lr[0] == 0:
            return
        p = dict(s.upd)
        p["lr_mult"], p["lr_shift"] = lr
        delta = sgd_delta(g, p, s.axis)
        if self.mu_q31:
            v = self._velocity.get(name)
            v = delta if v is None else np.clip(fp.srdhm(v, np.int64(self.mu_q31)) + delta, -INT32_MAX, INT32_MAX)
            self._velocity[name] = v
            delta = v
        w = self.params[name]
        if s.role == "bias":
            w[s.index] = np.clip(w[s.index].astype(np.int64) + rshift_round(delta, DELTA_FRAC_BITS),
                                 s.lo, s.hi).astype(w.dtype)
        elif s.master:
            self.masters[name], w8 = apply_master_copy(self.masters[name], delta)
            w[s.index] = w8
        else:
            w[s.index], self.rng_state = apply_stochastic_round(w[s.index], delta, DELTA_FRAC_BITS, self.rng_state)

    # ---- forward ----------------------------------------------------------------------------------
    def _forward(self, env: dict, start: int = 0, stop: int | None = None) -> dict:
        stop = len(self._fwd) if stop is None else stop
        if self.patch is not None and start == 0 and stop >= self._patch_len:
            env[self.patch.output] = run_stage(self.patch, env[self.patch.input], self._tile_forward)
            start = self._patch_len
        for s in self._fwd[start:stop]:
            node = self._nodes[s.node]
            xs = [self._value(env, i) for i in node.inputs]
            ys = registry.get(node.op).forward_int8(node, xs, self.prepared[s.node])
            for o, y in zip(node.outputs, ys):
                env[o] = y
        return env

    def _tile_forward(self, node, xs: list[np.ndarray]) -> np.ndarray:
        """One node of a patched stage on one tile: ``xs`` its activation inputs' regions."""
        it = iter(xs)
        full = [None if not t else (self.value(t) if self.graph.tensors[t].is_const else next(it))
                for t in node.inputs]
        return registry.get(node.op).forward_int8(node, full, self.prepared[node.name])[0]

    def _value(self, env, name):
        if name == "":
            return None
        t = self.graph.tensors[name]
        return self.value(name) if t.is_const else env[name]

    def _logit_acc(self, env: dict) -> np.ndarray:
        """int32 accumulators of the final fully_connected layer (bias included, no requant)."""
        n = self._final
        p = self.prepared[n.name]
        x = self._value(env, n.inputs[0]).astype(np.int64)
        w = self.value(n.inputs[1]).astype(np.int64)
        acc = (x - p["in_zp"]) @ (w - p["w_zp"]).T
        if len(n.inputs) > 2 and n.inputs[2]:
            acc = acc + self.value(n.inputs[2]).astype(np.int64)
        return acc

    def _final_step(self) -> int:
        return next(k for k, s in enumerate(self._fwd) if s.node == self._final.name)

    def frozen_prefix(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The int8 input and every value the frozen nodes produce for int8 samples ``x`` (IR
        layout), batch first."""
        return self._forward({self.input: np.asarray(x, dtype=np.int8)}, 0, self._start)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """int8 logits [N, C] of int8 samples ``x`` (IR layout) with the current parameters."""
        return self._forward({self.input: np.asarray(x, dtype=np.int8)})[self.program.logits]

    # ---- backprop (one sample) --------------------------------------------------------------------
    def _backprop(self, pre1: dict, y1: np.ndarray) -> tuple[int, int]:
        env = self._forward(dict(pre1), self._start)
        if self.loss_input == "acc":
            li = softmax_cross_entropy_int(self._logit_acc(env), y1, self._loss_prep("acc", 1))
        else:
            li = softmax_cross_entropy_int(env[self.program.logits], y1, self._loss_prep("int8", 1))
        grads: dict[str, Grad] = {grad_name(self.program.logits): li.grad}
        lr = self.lr_q31("bp")
        self._acc_count += 1
        apply_now = self._acc_count >= self.accumulate
        for s in self._bwd:
            node = self._nodes[s.node]
            op = registry.get(node.op)
            k = s.attrs["input"]
            xs = [self._value(env, i) for i in node.inputs]
            ys = [env[o] for o in node.outputs]
            gys = [grads[grad_name(o)] for o in node.outputs]
            p = self.prepared[s.node]
            if s.kind == "grad_input":
                g = op.backward_int8(node, xs, ys, gys, {k}, p)[k]
                gn = grad_name(node.inputs[k])
                grads[gn] = grad_add(grads[gn], g) if gn in grads else g
            else:
                g = op.backward_int8(node, xs, ys, gys, {k}, p, rows=s.attrs["rows"])[k]
                name = s.writes[0]
                if self.accumulate == 1:
                    self._apply(name, g, lr)
                    continue
                self._acc[name] = grad_add(self._acc[name], g) if name in self._acc else g
                if apply_now:
                    self._apply(name, self._mean(self._acc.pop(name), self.accumulate), lr)
        if apply_now:
            self._acc_count = 0
        return int(li.loss_mean), int(li.correct.sum())

    def _mean(self, g: Grad, count: int) -> Grad:
        """``g / count`` (integer: times the host's Q31 constant of 1/count)."""
        mult, shift = self._inv_count[count]
        return mul_q31(g.m, g.e, mult, shift)

    # ---- forward gradient -------------------------------------------------------------------------
    def perturb(self, z: list[np.ndarray], k: int, prev: int) -> None:
        """Move the live fg slices from perturbation ``prev`` to ``k`` (k, prev in {+1, 0, -1}):
        biases in place by ``(k - prev) * delta * z``; int8 weights rewritten from the master as
        ``sat8(RDBPOT(master + k * delta * z, 8))``."""
        for s, zk in zip(self._fg_live, z):
            d = self.fg_delta[s.tensor]
            w = self.params[s.tensor]
            if s.role == "bias":
                w[s.index] = (w[s.index].astype(np.int64) + (k - prev) * d * zk).astype(w.dtype)
            else:
                m = self.masters[s.tensor] + k * d * zk
                w[s.index] = np.clip(fp.rounding_divide_by_pot(m, MASTER_FRAC_BITS), -127, 127).astype(np.int8)

    def _fg_loss(self, base: dict, y: np.ndarray, stop: int) -> int:
        env = self._forward(dict(base), self._start, stop)
        return int(softmax_cross_entropy_int(self._logit_acc(env), y, self._loss_prep("acc", y.size)).loss_mean)

    def _forward_gradient(self, base: dict, y: np.ndarray) -> int:
        m = self.fg.m
        stop = self._final_step()
        live = self._fg_live
        g = [np.zeros(s.shape, np.int64) for s in live]
        skipped = 0
        for i in range(1, m + 1):
            z = rademacher(perturbation_seed(self.seed, self.t, i), self.stream_size)
            zs = [z[s.offset:s.offset + s.size].reshape(s.shape).astype(np.int64) for s in live]
            self.perturb(zs, 1, 0)
            lp = self._fg_loss(base, y, stop)
            self.perturb(zs, -1, 1)
            lm = self._fg_loss(base, y, stop)
            self.perturb(zs, 0, -1)
            if lp == lm:
                skipped += 1
                continue
            sign = 1 if lp > lm else -1
            for gk, zk in zip(g, zs):
                gk += sign * zk
        lr = self.lr_q31("fg")
        for s, gk in zip(live, g):
            self._apply(s.tensor, Grad(gk, 0), lr)
        return skipped

    # ---- one training step ------------------------------------------------------------------------
    @property
    def samples_per_step(self) -> int:
        return self.fg.batch if self.walk else 1

    def step(self, x: np.ndarray | None, y: np.ndarray, prefix: dict | None = None) -> StepResult:
        """One training step on int8 samples ``x`` [B, ...] (IR layout), labels ``y`` [B]; see the
        float twin. ``prefix``: the samples' :meth:`frozen_prefix` (``x`` is then not read)."""
        y = np.asarray(y, dtype=np.int64).reshape(-1)
        base = self.frozen_prefix(x) if prefix is None else prefix
        n = next(iter(base.values())).shape[0]
        if n != y.size or y.size == 0:
            raise ValueError(f"step: {n} samples, {y.size} labels")
        loss, correct, skipped = 0, 0, 0
        if self._has_bp:
            total = 0
            for j in range(y.size):
                lj, cj = self._backprop({k: v[j:j + 1] for k, v in base.items()}, y[j:j + 1])
                total += lj
                correct += cj
            loss = (total + y.size // 2) // y.size
        else:
            env = self._forward(dict(base), self._start)
            li = softmax_cross_entropy_int(self._logit_acc(env) if self.loss_input == "acc" else
                                           env[self.program.logits], y, self._loss_prep(self.loss_input, y.size))
            loss, correct = int(li.loss_mean), int(li.correct.sum())
        if self._fg_live:
            skipped = self._forward_gradient(base, y)
        self.t += 1
        return StepResult(int(loss), int(correct), int(y.size), skipped)

    def flush(self) -> None:
        """Apply a partially accumulated backprop gradient (the mean over the samples it holds)
        at the current step's lr."""
        if self._acc_count and self._acc:
            lr = self.lr_q31("bp")
            for name in list(self._acc):
                self._apply(name, self._mean(self._acc.pop(name), self._acc_count), lr)
        self._acc_count = 0

    # ---- driver interface (compiler/driver.py) ----------------------------------------------------
    @host_only
    def host_samples(self, x: np.ndarray, what: str = "data") -> np.ndarray:
        """Host: samples (source or IR layout; float32 or int8) -> int8 IR-layout model input."""
        from .quantize import quantize_samples, to_ir_layout

        return quantize_samples(to_ir_layout(np.asarray(x), self.graph, what), self.graph, what)

    def prefix_bytes(self, n: int) -> int:
        """Bytes of :meth:`frozen_prefix` for ``n`` samples."""
        inner = set() if self.patch is None else {o for s in self._fwd[:self._patch_len] for o in s.writes
                                                  if o != self.patch.output}
        names = [self.input] + [o for s in self._fwd[:self._start] for o in s.writes if o not in inner]
        return n * sum(np.dtype(self.graph.tensors[t].dtype).itemsize * int(np.prod(self.graph.tensors[t].shape[1:]))
                       for t in names)

    def predict_ir(self, x: np.ndarray) -> np.ndarray:
        """Top-1 classes of int8 IR-layout samples (first maximal int8 logit)."""
        return np.argmax(self.logits(x), axis=1)


# ---------------------------------------------------------------------------------------------
# Training loop and evaluation (host)
# ---------------------------------------------------------------------------------------------
def int8_samples(trainer: Int8Trainer, x: np.ndarray, what: str = "data") -> np.ndarray:
    """Host: samples (source or IR layout; float32 or int8) -> int8 IR-layout model input."""
    return trainer.host_samples(x, what)


def train(trainer: Int8Trainer, x_train: np.ndarray, y_train: np.ndarray, epochs: float | None = None,
          steps: int | None = None, **kw: Any) -> History:
    """:func:`~microtrain.compiler.driver.train` (the loop shared with the float twin) with the
    loss constants of the step's batch sizes prepared first. Loss values are the integer loss in
    nats."""
    trainer.prepare_batches(1, trainer.samples_per_step)
    return driver.train(trainer, x_train, y_train, epochs=epochs, steps=steps, **kw)


Int8Result = TrainResult  # same record as the float twin


def train_int8(graph: Graph, schedule: Schedule | TrainPlan, data: Any, steps: int | None = None,
               epochs: float | None = None, lr: float | None = None, seed: int = 0,
               momentum: float | None = None, fg_lr: float | None = None, lr_schedule: str | None = None,
               eval_every: int = 0, qas: bool | None = None, remedy: str = "master",
               loss_input: str = "int8", accumulate: int = 1, on_step=None, on_phase=None,
               engine: str = "numpy", patch="off", patch_max_overhead: float = 0.15,
               scratch: str = "fast") -> Int8Result:
    """:func:`~microtrain.compiler.train_float.train_float_twin` for the int8 engine: 1 epoch by
    default, cosine lr, ``seed`` for the fg stream and the shuffling. ``engine="c"`` trains with
    the generated C program (:class:`~microtrain.compiler.codegen.native.NativeTrainer`, the same
    integers) instead of numpy. ``patch``/``patch_max_overhead``/``scratch``: the memory plan's
    options (:func:`~microtrain.compiler.memory.memplan.plan_memory`); with a patched stage both
    engines run it tile by tile."""
    if engine not in ("numpy", "c"):
        raise ValueError(f"engine must be 'numpy' or 'c', got {engine!r}")
    plan = schedule if isinstance(schedule, TrainPlan) else resolve(schedule, graph)
    mom = plan.schedule.momentum if momentum is None else momentum
    stage = patch if isinstance(patch, PatchStage) or patch is None else None
    if stage is None and patch not in (None, "off"):
        from .memory.memplan import plan_memory

        stage = plan_memory(graph, plan, remedy=remedy, momentum=mom or 0.0, loss_input=loss_input,
                            patch=patch, patch_max_overhead=patch_max_overhead, scratch=scratch).patch

    def make(total: int):
        if engine == "c":
            from .codegen.native import NativeTrainer

            return NativeTrainer(graph, plan, lr=lr, fg_lr=fg_lr, momentum=mom, seed=seed,
                                 lr_schedule=lr_schedule or "cosine", total_steps=total, qas=qas, remedy=remedy,
                                 loss_input=loss_input, accumulate=accumulate,
                                 patch="off" if stage is None else stage, scratch=scratch)
        tr = Int8Trainer(graph, plan, lr=lr, fg_lr=fg_lr, momentum=mom, seed=seed,
                         lr_schedule=lr_schedule or "cosine", total_steps=total, qas=qas, remedy=remedy,
                         loss_input=loss_input, accumulate=accumulate, patch=stage)
        tr.prepare_batches(1, tr.samples_per_step)
        return tr

    return driver.run(make, plan, data, steps=steps, epochs=epochs, seed=seed, eval_every=eval_every,
                      on_step=on_step, on_phase=on_phase)
