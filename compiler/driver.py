"""The training loop shared by both engines (host side).

A *trainer* is :class:`~microtrain.compiler.train_float.FloatTrainer` (the float twin) or
:class:`~microtrain.compiler.train_int.Int8Trainer` (the integer engine). Both expose:

  * ``samples_per_step``          samples one ``step`` consumes (``FGOptions.batch`` with fg layers)
  * ``host_samples(x, what)``     source- or IR-layout samples -> the engine's model input
                                  (IR layout; float32 for the twin, int8 for the engine)
  * ``prefix_bytes(n)``           bytes of ``frozen_prefix`` for ``n`` samples
  * ``frozen_prefix(x)``          values of the frozen nodes (computed once per data set)
  * ``step(x, y, prefix=...)``    one training step -> ``StepResult``
  * ``flush()``                   apply a partially accumulated gradient
  * ``predict_ir(x)``             top-1 classes of engine-input samples

This module streams samples into a trainer in a seeded order (per-epoch permutations from
``numpy.random.default_rng(seed)``, ``samples_per_step`` at a time) and records a
:class:`History`; :func:`run` adds construction with the right step count and the before/after
test accuracy. Identical seeds give identical sample orders in both engines, which is what makes
the float twin a fair comparison.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

#: the frozen prefix of all training samples is computed once when it is at most this big
PREFIX_CACHE_BYTES = 256 << 20


@dataclass
class StepResult:
    """What one ``step`` saw: mean loss (nats; the int8 engine's integer loss converted) and
    correct predictions of its samples, from the unperturbed forward passes, before any update of
    the step."""

    loss: float
    correct: int
    samples: int
    skipped: int = 0  # forward-gradient perturbations skipped because L+ == L-


@dataclass
class History:
    """Per-step record of :func:`train`. ``loss[t]``/``correct[t]``: step t's mean loss and
    correct count (its samples, before its updates); ``running_acc[t]``: correct fraction over
    the samples of the last ``window`` steps up to t; ``evals``: (steps taken, test accuracy)."""

    loss: np.ndarray
    correct: np.ndarray
    samples_per_step: int
    running_acc: np.ndarray
    evals: list[tuple[int, float]] = field(default_factory=list)
    skipped: int = 0  # forward-gradient perturbations skipped on ties
    seconds: float = 0.0

    @property
    def steps(self) -> int:
        return int(self.loss.size)

    @property
    def samples(self) -> int:
        return self.steps * self.samples_per_step

    def to_json(self) -> dict[str, Any]:
        return {"steps": self.steps, "samples": self.samples, "loss": [float(v) for v in self.loss],
                "running_acc": [float(v) for v in self.running_acc], "evals": [list(e) for e in self.evals],
                "skipped": self.skipped, "seconds": self.seconds}


@dataclass
class TrainResult:
    """What :func:`run` returns (``train_float_twin`` and ``train_int8`` are thin wrappers)."""

    trainer: Any  # FloatTrainer or Int8Trainer
    history: History
    acc_before: float  # test accuracy before training
    acc_after: float  # test accuracy after training

    @property
    def plan(self):
        return self.trainer.plan


def check_options(lr_schedule: str, total_steps: int | None, momentum: float, accumulate: int,
                  schedules: tuple[str, ...] = ("constant", "cosine")) -> None:
    """The constructor checks both trainers share (ValueError with the option's name)."""
    if lr_schedule not in schedules:
        raise ValueError(f"lr_schedule must be one of {', '.join(schedules)}, got {lr_schedule!r}")
    if lr_schedule == "cosine" and (total_steps is None or int(total_steps) < 1):
        raise ValueError("lr_schedule 'cosine' needs total_steps >= 1")
    if not (0.0 <= momentum < 1.0):
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if int(accumulate) < 1:
        raise ValueError(f"accumulate must be >= 1, got {accumulate!r}")


def step_count(n_samples: int, samples_per_step: int, steps: int | None = None,
               epochs: float | None = None) -> int:
    """Steps of a run: ``steps``, or ``ceil(epochs * n_samples / samples_per_step)`` (exactly one
    of the two; neither means 1 epoch)."""
    if steps is not None and epochs is not None:
        raise ValueError("give steps or epochs, not both")
    if steps is not None:
        return int(steps)
    return int(math.ceil(float(1 if epochs is None else epochs) * n_samples / samples_per_step))


def fg_samples_per_step(plan) -> int:
    """``samples_per_step`` of a trainer of ``plan`` (without building one)."""
    from .schedule import FGOptions

    fg = plan.schedule.fg or FGOptions()
    return fg.batch if any(lt.method == "fg" and lt.trainable for lt in plan.layers) else 1


def train(trainer, x_train: np.ndarray, y_train: np.ndarray, epochs: float | None = None,
          steps: int | None = None, shuffle_seed: int = 0, x_eval: np.ndarray | None = None,
          y_eval: np.ndarray | None = None, eval_every: int = 0, window: int = 100,
          on_step: Callable[[int, StepResult], None] | None = None) -> History:
    """Train for ``steps`` steps, or ``epochs`` passes over the data (``ceil(epochs * N / B)``
    steps, B = ``trainer.samples_per_step``). With ``eval_every`` > 0 and eval data, test accuracy
    is recorded every that many steps and at the end. A partially accumulated gradient is applied
    at the end. ``on_step(t, result)`` is called after every step (progress display)."""
    x = trainer.host_samples(x_train, "x_train")
    y = np.asarray(y_train, dtype=np.int64).reshape(-1)
    if x.shape[0] != y.size or y.size == 0:
        raise ValueError(f"train: {x.shape[0]} samples, {y.size} labels")
    if (epochs is None) == (steps is None):
        raise ValueError("train: give exactly one of epochs and steps")
    b = trainer.samples_per_step
    n_steps = step_count(y.size, b, steps, epochs)
    rng = np.random.default_rng(shuffle_seed)
    order = np.zeros(0, np.int64)
    losses = np.zeros(n_steps)
    correct = np.zeros(n_steps, np.int64)
    evals: list[tuple[int, float]] = []
    skipped = 0
    t0 = time.perf_counter()
    cache = trainer.frozen_prefix(x) if trainer.prefix_bytes(y.size) <= PREFIX_CACHE_BYTES else None
    for t in range(n_steps):
        while order.size < b:
            order = np.concatenate([order, rng.permutation(y.size)])
        idx, order = order[:b], order[b:]
        if cache is None:
            r = trainer.step(x[idx], y[idx])
        else:
            r = trainer.step(None, y[idx], prefix={k: v[idx] for k, v in cache.items()})
        losses[t], correct[t] = r.loss, r.correct
        skipped += r.skipped
        if on_step is not None:
            on_step(t, r)
        if eval_every and x_eval is not None and (t + 1) % eval_every == 0:
            evals.append((t + 1, evaluate(trainer, x_eval, y_eval)))
    trainer.flush()
    if eval_every and x_eval is not None and (not evals or evals[-1][0] != n_steps):
        evals.append((n_steps, evaluate(trainer, x_eval, y_eval)))
    csum = np.concatenate([[0], np.cumsum(correct)])
    lo = np.maximum(np.arange(1, n_steps + 1) - window, 0)
    hi = np.arange(1, n_steps + 1)
    running = (csum[hi] - csum[lo]) / ((hi - lo) * b) if n_steps else np.zeros(0)
    return History(losses, correct, b, running, evals, skipped, time.perf_counter() - t0)


def predict(trainer, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Top-1 class (int64 [N]) of samples ``x`` (source or IR layout) with the trainer's current
    parameters."""
    xi = trainer.host_samples(x, "data")
    out = [trainer.predict_ir(xi[i:i + batch_size]) for i in range(0, xi.shape[0], batch_size)]
    return np.concatenate(out) if out else np.zeros(0, np.int64)


def evaluate(trainer, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy in [0, 1] with the trainer's current parameters."""
    y = np.asarray(y).reshape(-1)
    return float(np.mean(predict(trainer, x, batch_size) == y))


def run(make_trainer: Callable[[int], Any], plan, data: Any, steps: int | None = None,
        epochs: float | None = None, seed: int = 0, eval_every: int = 0,
        on_step: Callable[[int, StepResult], None] | None = None,
        on_phase: Callable[[str], None] | None = None) -> TrainResult:
    """Build a trainer for the run's step count (``make_trainer(total_steps)``: the cosine lr
    needs it), measure test accuracy, train on ``data`` (anything with ``x_train, y_train,
    x_test, y_test``) with shuffling seed ``seed``, measure again. ``on_phase`` is told
    "before", "train", "after" as each phase starts."""
    total = step_count(len(data.y_train), fg_samples_per_step(plan), steps, epochs)
    trainer = make_trainer(total)
    if on_phase:
        on_phase("before")
    before = evaluate(trainer, data.x_test, data.y_test)
    if on_phase:
        on_phase("train")
    hist = train(trainer, data.x_train, data.y_train, steps=total, shuffle_seed=seed, x_eval=data.x_test,
                 y_eval=data.y_test, eval_every=eval_every, on_step=on_step)
    if on_phase:
        on_phase("after")
    return TrainResult(trainer, hist, before, evaluate(trainer, data.x_test, data.y_test))
