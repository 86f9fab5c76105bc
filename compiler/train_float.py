"""The float twin of a training schedule: the reference trainer the int8 engine is compared against.

:class:`FloatTrainer` trains a FLOAT IR graph (e.g. an ONNX import) under a resolved schedule
(:class:`~microtrain.compiler.schedule.TrainPlan`) the way a device does: one sample at a time.

Numbers. Trainable tensors live in a private dict of float64 master copies (the input graph is
never modified); frozen constants are read from the graph. Activations are float32 (what each op's
``forward_float`` returns), gradients float64 (``backward_float``), the loss is
``softmax_cross_entropy_float`` on the logits (float64).

Backprop layers (``method == "bp"``) execute the :class:`~microtrain.compiler.program.TrainingProgram`
of :func:`~microtrain.compiler.program.build_program` step by step, batch 1:
  * ``forward`` steps run the node's ``forward_float``; ReLU masks ``mask:t`` are derived from the
    activation (relu: y > 0, relu6: 0 < y < 6);
  * ``loss`` writes ``grad:<logits>``;
  * ``grad_input`` / ``update`` steps call ``backward_float`` and see ONLY the values the step lists
    in ``reads`` (anything else is a NaN placeholder of the right shape; a non-finite result raises),
    so the program's read lists are checked as it runs;
  * an ``update`` step applies SGD to rows ``[0, rows)`` of its tensor at once (in place), so a
    later ``grad_input`` of the same layer would see the new weights: the program order decides.
  With ``accumulate=k`` the update steps add g/k into a buffer and the k-th sample applies it.
SGD: ``v = momentum * v + g; w[slice] -= lr_t * v`` (momentum 0: ``w -= lr_t * g``); the velocity
exists only for the trained slice.

Forward-gradient layers (``method == "fg"``), sign-m-SPSA (DESIGN.md, Training schedules), per
step on a batch of B samples (B = ``FGOptions.batch``), for i = 1..m:
  z_i = ``rademacher(perturbation_seed(seed, step, i), n)`` walked over :func:`fg_walk`;
  w += eps*z;  L+ = L(w);  w -= 2*eps*z;  L- = L(w);  w restored to its saved value (exact);
  g += sign(L+ - L-) * z  (ties add nothing);
then ``w -= lr_t * g / m`` (through the same SGD/momentum). L is the mean cross-entropy over the B
samples. eps per tensor = ``FGOptions.eps * max|w|`` over the whole tensor, fixed at construction;
a tensor whose eps is 0 is excluded (not perturbed, not updated; it still consumes its stream
positions so every other tensor sees the same z). A hybrid step first trains the backprop layers
on the step's samples (unperturbed forward passes, batch 1 each), then runs the perturbations.

Learning rates: ``lr_t = lr`` ("constant") or ``lr * (1 + cos(pi * min(t, T) / T)) / 2``
("cosine", T = ``total_steps``), t = steps taken so far (0 for the first step).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import driver
from .driver import PREFIX_CACHE_BYTES, History, StepResult, TrainResult, evaluate, predict, train  # noqa: F401
from .ir import Graph, verify
from .ops import registry
from .ops.loss import softmax_cross_entropy_float
from .program import LINEAR_OPS, TrainingProgram, build_program, grad_name
from .schedule import FGOptions, Schedule, TrainPlan, resolve

#: default learning rate per schedule kind: of the backprop layers (for "fg": of the fg layers),
#: chosen on the digits last-mile task (2 epochs of batch-1 steps, cosine decay)
DEFAULT_LR = {"bias": 0.1, "sparse": 0.01, "last-k": 0.01, "full": 0.01, "fg": 0.01, "hybrid": 0.01,
              "none": 0.01}
#: default learning rate of the forward-gradient layers of a hybrid schedule
DEFAULT_FG_LR = 0.01
LR_SCHEDULES = ("constant", "cosine")

_M32 = 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------
# Forward-gradient perturbations: the stream the int8 engine regenerates bit for bit
# ---------------------------------------------------------------------------------------------
def xorshift32(state: int) -> int:
    """One step of Marsaglia's xorshift32 (shifts 13, 17, 5) on a nonzero uint32 state."""
    x = state & _M32
    x ^= (x << 13) & _M32
    x ^= x >> 17
    x ^= (x << 5) & _M32
    return x


def fmix32(h: int) -> int:
    """MurmurHash3's 32-bit finalizer (a bijection on uint32; fmix32(0) == 0)."""
    h &= _M32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _M32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _M32
    h ^= h >> 16
    return h


def perturbation_seed(seed: int, step: int, i: int) -> int:
    """The nonzero xorshift32 seed of perturbation ``i`` (1..m) of training step ``step`` (0-based).

    In uint32 arithmetic (C: ``uint32_t``, every argument taken mod 2^32)::

        h = fmix32(seed ^ 0x9E3779B9);  h = fmix32(h ^ step);  h = fmix32(h ^ i);
        return h ? h : 0x9E3779B9;
    """
    h = fmix32((seed & _M32) ^ 0x9E3779B9)
    h = fmix32(h ^ (step & _M32))
    h = fmix32(h ^ (i & _M32))
    return h if h else 0x9E3779B9


def rademacher(seed: int, n: int) -> np.ndarray:
    """``n`` signs (int8, +1/-1) from xorshift32 started at ``seed`` (nonzero uint32).

    Draw k (k = 0, 1, ...) is the state after k + 1 xorshift32 steps; element e takes bit
    ``e % 32`` (bit 0 = least significant) of draw ``e // 32``: bit set -> +1, clear -> -1.
    C: ``z = (d >> (e & 31)) & 1 ? 1 : -1`` with ``d`` advanced every 32 elements.
    """
    seed &= _M32
    if seed == 0:
        raise ValueError("rademacher: xorshift32 seed must be nonzero")
    if n <= 0:
        return np.zeros(0, np.int8)
    draws = np.empty((n + 31) // 32, dtype="<u4")
    x = seed
    for k in range(draws.size):
        x = xorshift32(x)
        draws[k] = x
    bits = np.unpackbits(draws.view(np.uint8), bitorder="little")[:n]
    return (bits.astype(np.int8) * 2 - 1).astype(np.int8)


@dataclass(frozen=True)
class FGSlice:
    """One forward-gradient-trained tensor slice: rows ``[0, rows)`` along ``axis`` of ``tensor``.

    ``offset``/``size``: its position in the perturbation stream; the slice's elements take stream
    positions ``offset .. offset + size - 1`` in C order of ``tensor[index]``.
    """

    layer: str  # node name
    tensor: str
    role: str  # "weight" | "bias"
    axis: int
    rows: int
    shape: tuple[int, ...]  # shape of the slice
    offset: int
    size: int

    @property
    def index(self) -> tuple[slice, ...]:
        """Index of the slice in the full tensor."""
        return row_index(self.axis, self.rows, len(self.shape))


def row_index(axis: int, rows: int, ndim: int) -> tuple[slice, ...]:
    """Index selecting the leading ``rows`` entries along ``axis`` of an ``ndim``-D array."""
    idx = [slice(None)] * ndim
    idx[axis] = slice(0, rows)
    return tuple(idx)


def fg_walk(graph: Graph, plan: TrainPlan) -> list[FGSlice]:
    """The forward-gradient slices of ``plan`` in stream order: layers in graph order, per layer
    the weight slice (rows along the weight's output-channel axis) then the bias slice."""
    out: list[FGSlice] = []
    offset = 0
    for lt in plan.layers:
        if lt.method != "fg":
            continue
        for role, name, rows in (("weight", lt.weight, lt.weight_rows), ("bias", lt.bias, lt.bias_rows)):
            if not rows or name is None:
                continue
            full = graph.tensors[name].shape
            axis = LINEAR_OPS[lt.op] if role == "weight" else 0
            shape = tuple(rows if a == axis else d for a, d in enumerate(full))
            size = int(np.prod(shape))
            out.append(FGSlice(lt.node, name, role, axis, rows, shape, offset, size))
            offset += size
    return out


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------
def _default_lrs(plan: TrainPlan, lr: float | None, fg_lr: float | None) -> dict[str, float]:
    """Learning rate per method ("bp", "fg").

    ``lr`` sets the backprop layers' rate, and the fg layers' too when the plan has no backprop
    layer (kind fg); ``fg_lr`` sets the fg layers' rate. Unset: the schedule's ``lr`` in the same
    role, else :data:`DEFAULT_LR` of the kind (backprop, or fg for kind fg) and
    :data:`DEFAULT_FG_LR` (fg layers of a hybrid).
    """
    kind = plan.schedule.kind
    has_bp = any(lt.method == "bp" and lt.trainable for lt in plan.layers)
    main = lr if lr is not None else plan.schedule.lr
    if main is None:
        main = DEFAULT_LR[kind]
    bp = main
    if fg_lr is not None:
        fg = fg_lr
    elif not has_bp:
        fg = main
    else:
        fg = DEFAULT_FG_LR
    for name, v in (("lr", bp), ("fg_lr", fg)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a number > 0, got {v!r}")
    return {"bp": float(bp), "fg": float(fg)}


class FloatTrainer:
    """Float reference training of ``graph`` (float IR, not modified) under ``plan``.

    ``lr``/``fg_lr``: see :func:`_default_lrs`. ``momentum`` in [0, 1) for both methods.
    ``seed``: the global forward-gradient seed. ``lr_schedule``: "constant" or "cosine" (needs
    ``total_steps``). ``accumulate``: backprop samples per SGD update (gradients averaged).
    ``program``: the training program to execute (default ``build_program(graph, plan)``).
    Samples are batch first in the IR layout (NHWC), float32.
    """

    def __init__(self, graph: Graph, plan: TrainPlan | Schedule, lr: float | None = None,
                 momentum: float = 0.0, seed: int = 0, lr_schedule: str = "constant",
                 total_steps: int | None = None, accumulate: int = 1, fg_lr: float | None = None,
                 program: TrainingProgram | None = None):
        verify(graph)
        if len(graph.inputs) != 1:
            raise ValueError(f"FloatTrainer needs a single-input graph; {graph.name!r} has {len(graph.inputs)} inputs")
        if isinstance(plan, Schedule):
            plan = resolve(plan, graph)
        for n in graph.nodes:
            if n.op in ("quantize", "dequantize") or graph.tensors[n.outputs[0]].dtype != "float32":
                raise ValueError(f"FloatTrainer needs a float graph; node {n.name!r} ({n.op}) is not float32")
        driver.check_options(lr_schedule, total_steps, momentum, accumulate, LR_SCHEDULES)
        self.graph = graph
        self.plan = plan
        self.program = program if program is not None else build_program(graph, plan)
        self.lrs = _default_lrs(plan, lr, fg_lr)
        self.momentum = float(momentum)
        self.seed = int(seed) & _M32
        self.lr_schedule = lr_schedule
        self.total_steps = None if total_steps is None else int(total_steps)
        self.accumulate = int(accumulate)
        self.fg: FGOptions = plan.schedule.fg or FGOptions()
        self.t = 0  # steps taken
        self._nodes = {n.name: n for n in graph.nodes}

        # trained slices: tensor name -> (method, row index); params are float64 master copies
        self.slices: dict[str, tuple[str, tuple[slice, ...]]] = {}
        for lt in plan.layers:
            for name, rows, axis in ((lt.weight, lt.weight_rows, LINEAR_OPS[lt.op]), (lt.bias, lt.bias_rows, 0)):
                if rows and name is not None:
                    nd = len(graph.tensors[name].shape)
                    self.slices[name] = (lt.method, row_index(axis, rows, nd))
        self.params: dict[str, np.ndarray] = {
            name: graph.tensors[name].data.astype(np.float64) for name in self.slices}
        self._velocity: dict[str, np.ndarray] = {}
        self._acc: dict[str, np.ndarray] = {}
        self._acc_count = 0

        kinds = "".join({"forward": "f", "loss": "l", "grad_input": "b", "update": "b"}.get(st.kind, "?")
                        for st in self.program.steps)
        if not re.fullmatch(r"f*(lb*)?", kinds):
            raise ValueError("training program must be forward steps, then (loss, then grad_input/update "
                             "steps); got " + ", ".join(st.kind for st in self.program.steps))
        self._fwd = [s for s in self.program.steps if s.kind == "forward"]
        self._bwd = [s for s in self.program.steps if s.kind in ("grad_input", "update")]
        self._has_bp = "l" in kinds
        self._mask_act = {m: _act_of(graph.producer(t)) for m, t in self.program.masks.items()}

        self.walk = fg_walk(graph, plan)
        self.stream_size = sum(s.size for s in self.walk)
        self.fg_eps: dict[str, float] = {}
        for s in self.walk:
            self.fg_eps[s.tensor] = float(self.fg.eps * np.max(np.abs(self.params[s.tensor]))) \
                if self.params[s.tensor].size else 0.0
        self.fg_excluded = [s.tensor for s in self.walk if self.fg_eps[s.tensor] == 0.0]
        self._fg_live = [(s, s.index, self.fg_eps[s.tensor]) for s in self.walk if self.fg_eps[s.tensor] > 0.0]
        # first forward step whose output can change during training (earlier values are reused)
        trained_nodes = {lt.node for lt in plan.layers if lt.trainable}
        self._start = next((k for k, s in enumerate(self._fwd) if s.node in trained_nodes), len(self._fwd))
        # frozen-prefix values read from the first trained node on (the rest of a prefix is dropped)
        later = {i for st in self._fwd[self._start:] + self._bwd for i in st.reads} | {self.program.logits}
        self._prefix_keep = [t for t in [graph.inputs[0]] + [o for st in self._fwd[:self._start]
                                                             for o in st.writes] if t in later]

    # ---- parameters ------------------------------------------------------------------------------
    def value(self, name: str) -> np.ndarray:
        """Current value of a constant: the trained copy if trainable, else the graph's data."""
        p = self.params.get(name)
        return p if p is not None else self.graph.tensors[name].data

    def trained_graph(self) -> Graph:
        """A copy of the graph with the trained values (float32) in place of the originals."""
        g = self.graph.copy()
        for name, p in self.params.items():
            g.tensors[name].data = p.astype(np.float32)
        return g

    def lr_at(self, method: str, t: int | None = None) -> float:
        """Learning rate of ``method`` ("bp" | "fg") at step ``t`` (default: the current step)."""
        t = self.t if t is None else t
        base = self.lrs[method]
        if self.lr_schedule == "constant":
            return base
        T = self.total_steps
        return base * 0.5 * (1.0 + math.cos(math.pi * min(t, T) / T))

    def _sgd(self, name: str, g: np.ndarray, lr: float) -> None:
        idx = self.slices[name][1]
        if self.momentum:
            v = self._velocity.get(name)
            v = g.copy() if v is None else self.momentum * v + g
            self._velocity[name] = v
            g = v
        self.params[name][idx] -= lr * g

    # ---- forward ---------------------------------------------------------------------------------
    def _forward(self, env: dict[str, np.ndarray], start: int = 0, masks: bool = False,
                 stop: int | None = None) -> dict[str, np.ndarray]:
        """Run forward steps ``[start, stop)`` on ``env`` (which holds the graph input and, for
        ``start > 0``, every value the skipped steps produced). Returns ``env``."""
        for s in self._fwd[start:stop]:
            node = self._nodes[s.node]
            ys = registry.get(node.op).forward_float(node, [self._env_value(env, i) for i in node.inputs])
            env.update(zip(node.outputs, ys))
        if masks:
            for m, t in self.program.masks.items():
                y = env[t]
                env[m] = (y > 0) & (y < 6) if self._mask_act[m] == "relu6" else y > 0
        return env

    def _env_value(self, env, name):
        if name == "":
            return None
        t = self.graph.tensors[name]
        return self.value(name) if t.is_const else env[name]

    def _input_env(self, x: np.ndarray) -> dict[str, np.ndarray]:
        x = np.asarray(x)
        inp = self.graph.tensors[self.graph.inputs[0]]
        if x.dtype != np.float32 or tuple(x.shape[1:]) != inp.shape[1:]:
            raise ValueError(f"samples must be float32 [N, {', '.join(map(str, inp.shape[1:]))}] (IR layout), "
                             f"got {x.dtype} {x.shape}")
        return {self.graph.inputs[0]: x}

    @property
    def frozen_nodes(self) -> list[str]:
        """Nodes before the first trained one: their values never change while training."""
        return [s.node for s in self._fwd[:self._start]]

    def frozen_prefix(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The values of the frozen nodes (and the graph input) that training reads, for samples
        ``x`` (IR layout, float32), batch first; rows of it may be passed to :meth:`step`."""
        env = self._forward(self._input_env(x), 0, stop=self._start)
        return {t: env[t] for t in self._prefix_keep}

    def prefix_bytes(self, n: int) -> int:
        """Bytes of :meth:`frozen_prefix` for ``n`` samples."""
        return n * sum(4 * int(np.prod(self.graph.tensors[t].shape[1:])) for t in self._prefix_keep)

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits (float32 [N, C]) of samples ``x`` with the current parameters."""
        return self._forward(self._input_env(x))[self.program.logits]

    def host_samples(self, x: np.ndarray, what: str = "data") -> np.ndarray:
        """Samples in the source or IR layout -> float32 IR-layout model input."""
        from .quantize import to_ir_layout

        x = to_ir_layout(np.asarray(x), self.graph, what)
        if x.dtype != np.float32:
            raise ValueError(f"{what}: float32 samples required, got {x.dtype}")
        return x

    def predict_ir(self, x: np.ndarray) -> np.ndarray:
        """Top-1 classes of IR-layout float32 samples."""
        return np.argmax(self.logits(x), axis=1)

    # ---- backprop (one sample) -------------------------------------------------------------------
    def _visible(self, env, step, name):
        """``name``'s value if ``step`` reads it; else a NaN placeholder shaped like it."""
        if name == "":
            return None
        if name in step.reads:
            return self._env_value(env, name)
        shape = self.graph.tensors[name].shape if self.graph.tensors[name].is_const else env[name].shape
        return np.broadcast_to(np.float64(np.nan), shape)

    def _visible_y(self, env, step, name):
        if name in step.reads:
            return env[name]
        m = f"mask:{name}"
        if m in step.reads:
            return env[m].astype(np.float64)  # 1.0 passes both the relu and the relu6 mask test
        return np.broadcast_to(np.float64(np.nan), env[name].shape)

    def _backprop(self, pre1: dict[str, np.ndarray], y1: np.ndarray) -> tuple[float, int]:
        """One program run on a single sample (batch 1) whose frozen prefix is ``pre1``:
        forward, loss, backward + updates."""
        env = self._forward(dict(pre1), self._start, masks=True)
        z = env[self.program.logits]
        loss, gz = softmax_cross_entropy_float(z, y1)
        correct = int(np.argmax(z[0]) == y1[0])
        env[grad_name(self.program.logits)] = gz
        self._acc_count += 1
        apply_now = self._acc_count >= self.accumulate
        lr = self.lr_at("bp")
        for s in self._bwd:
            node = self._nodes[s.node]
            op = registry.get(node.op)
            k = s.attrs["input"]
            xs = [self._visible(env, s, i) for i in node.inputs]
            ys = [self._visible_y(env, s, o) for o in node.outputs]
            gys = [env[grad_name(o)] for o in node.outputs]
            if s.kind == "grad_input":
                g = op.backward_float(node, xs, ys, gys, {k})[k]
                self._check_finite(s, g)
                gn = grad_name(node.inputs[k])
                env[gn] = env[gn] + g if gn in env else g
                continue
            name = s.writes[0]
            g = op.backward_float(node, xs, ys, gys, {k}, rows=s.attrs["rows"])[k]
            self._check_finite(s, g)
            if self.accumulate == 1:
                self._sgd(name, g, lr)
            else:
                self._acc[name] = self._acc[name] + g if name in self._acc else g.copy()
                if apply_now:
                    self._sgd(name, self._acc.pop(name) / self.accumulate, lr)
        if apply_now:
            self._acc_count = 0
        return loss, correct

    @staticmethod
    def _check_finite(step, g):
        if not np.all(np.isfinite(g)):
            raise RuntimeError(f"{step.kind} step of {step.node!r} produced non-finite values: it reads a "
                               f"value its program step does not list ({step.reads}) or the training diverged")

    def flush(self) -> None:
        """Apply a partially accumulated backprop gradient (averaged over the samples it holds)."""
        if self._acc_count and self._acc:
            lr = self.lr_at("bp")
            for name in list(self._acc):
                self._sgd(name, self._acc.pop(name) / self._acc_count, lr)
        self._acc_count = 0

    # ---- forward gradient ------------------------------------------------------------------------
    def _fg_loss(self, base: dict[str, np.ndarray], y: np.ndarray) -> float:
        env = self._forward(dict(base), self._start)
        return softmax_cross_entropy_float(env[self.program.logits], y)[0]

    def _forward_gradient(self, base: dict[str, np.ndarray], y: np.ndarray) -> int:
        """One sign-m-SPSA update of the fg slices on the batch whose frozen prefix is ``base``.
        Returns the number of perturbations skipped on a tie (L+ == L-)."""
        m = self.fg.m
        live = self._fg_live
        g = [np.zeros(s.shape, np.float64) for s, _, _ in live]
        skipped = 0
        for i in range(1, m + 1):
            z = rademacher(perturbation_seed(self.seed, self.t, i), self.stream_size)
            zs = [z[s.offset:s.offset + s.size].reshape(s.shape).astype(np.float64) for s, _, _ in live]
            saved = [self.params[s.tensor][idx].copy() for s, idx, _ in live]
            for (s, idx, eps), zk in zip(live, zs):
                self.params[s.tensor][idx] += eps * zk
            lp = self._fg_loss(base, y)
            for (s, idx, eps), zk in zip(live, zs):
                self.params[s.tensor][idx] -= 2.0 * eps * zk
            lm = self._fg_loss(base, y)
            for (s, idx, _), w0 in zip(live, saved):
                self.params[s.tensor][idx] = w0
            if lp == lm:
                skipped += 1
                continue
            sign = 1.0 if lp > lm else -1.0
            for gk, zk in zip(g, zs):
                gk += sign * zk
        lr = self.lr_at("fg")
        for (s, _, _), gk in zip(live, g):
            self._sgd(s.tensor, gk / m, lr)
        return skipped

    # ---- one training step -----------------------------------------------------------------------
    @property
    def samples_per_step(self) -> int:
        """Samples :func:`train` feeds per step: ``FGOptions.batch`` with fg layers, else 1."""
        return self.fg.batch if self.walk else 1

    def step(self, x: np.ndarray | None, y: np.ndarray, prefix: dict[str, np.ndarray] | None = None) -> StepResult:
        """One training step on samples ``x`` [B, ...] (IR layout, float32), labels ``y`` [B].

        Backprop layers: each sample in turn runs the program (batch 1). Forward-gradient layers:
        one sign-m-SPSA update on the B samples together, after the backprop updates.
        ``prefix``: the samples' :meth:`frozen_prefix` (same values, computed once per data set);
        when given, ``x`` is not read.
        """
        y = np.asarray(y, dtype=np.int64).reshape(-1)
        if prefix is None and x is None:
            raise ValueError("step: give the samples x or their frozen prefix")
        base = self.frozen_prefix(x) if prefix is None else prefix
        n = next(iter(base.values())).shape[0]
        if n != y.size or y.size == 0:
            raise ValueError(f"step: {n} samples, {y.size} labels")
        if self._has_bp:
            losses, correct = [], 0
            for j in range(y.size):
                lj, cj = self._backprop({k: v[j:j + 1] for k, v in base.items()}, y[j:j + 1])
                losses.append(lj)
                correct += cj
            loss = float(np.mean(losses))
        skipped = 0
        if not self._has_bp:
            loss, correct = _metrics(self._forward(dict(base), self._start)[self.program.logits], y)
        if self.walk:
            skipped = self._forward_gradient(base, y)
        self.t += 1
        return StepResult(float(loss), int(correct), int(y.size), skipped)


def _metrics(z: np.ndarray, y: np.ndarray) -> tuple[float, int]:
    return softmax_cross_entropy_float(z, y)[0], int(np.sum(np.argmax(z, axis=1) == y))


def _act_of(node) -> str:
    if node.op in ("relu", "relu6"):
        return node.op
    return node.attrs.get("act", "none")


# ---------------------------------------------------------------------------------------------
# Training run (the loop itself is compiler/driver.py, shared with the int8 engine)
# ---------------------------------------------------------------------------------------------
def train_float_twin(graph: Graph, schedule: Schedule | TrainPlan, data: Any, steps: int | None = None,
                     epochs: float | None = None, lr: float | None = None, seed: int = 0,
                     momentum: float | None = None, fg_lr: float | None = None, accumulate: int = 1,
                     lr_schedule: str | None = None, eval_every: int = 0, on_step=None,
                     on_phase=None) -> TrainResult:
    """Train ``graph`` (float IR) under ``schedule`` on ``data`` (anything with ``x_train,
    y_train, x_test, y_test``, e.g. ``host.data.load_data(...)``) and measure test accuracy.

    Defaults: 1 epoch when neither steps nor epochs is given; lr per :func:`_default_lrs`;
    momentum the schedule's; lr schedule "cosine" (batch-1 SGD at a constant rate ends on a
    noisy iterate: up to +-8 points of test accuracy on digits between neighbouring steps);
    ``seed`` seeds both the forward-gradient stream and the shuffling.
    """
    plan = schedule if isinstance(schedule, TrainPlan) else resolve(schedule, graph)
    mom = plan.schedule.momentum if momentum is None else momentum

    def make(total: int) -> FloatTrainer:
        return FloatTrainer(graph, plan, lr=lr, fg_lr=fg_lr, momentum=mom, seed=seed,
                            lr_schedule=lr_schedule or "cosine", total_steps=total, accumulate=accumulate)

    return driver.run(make, plan, data, steps=steps, epochs=epochs, seed=seed, eval_every=eval_every,
                      on_step=on_step, on_phase=on_phase)
