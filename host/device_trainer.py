"""A device behind the serial bridge as a trainer of the shared training loop.

:class:`DeviceTrainer` has the trainer interface of :mod:`microtrain.compiler.driver` (the one
``simulate`` drives the numpy and native engines through), so ``microtrain train`` / ``run`` feed
a device the very sample sequence ``simulate`` would train on, and evaluate test accuracy on the
device itself (INFER per test sample).

Exactly-once training and resume:

* The bridge's sequence numbers make retries idempotent; the device also keeps a count of the
  samples it trained and a CRC-32 chain over them (``METRICS.count`` / ``trace``). After every
  step the bridge compares them with its own: a lost or repeated sample stops the run.
* Every ``checkpoint_every`` steps the trainer pulls the checkpoint (trained tensors, master
  copies, velocities, step, PRNG state) and keeps the samples of the steps since. When the device
  reboots (:class:`~microtrain.host.bridge.DeviceReset`), the trainer starts a session again with
  the checkpoint's counters, pushes the checkpoint and replays the kept steps (their metrics must
  equal the first run's), then goes on: the run ends with the weights of an uninterrupted one.
"""
from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..compiler.codegen.native import CheckpointView
from ..compiler.driver import StepResult
from ..compiler.errors import MicrotrainError
from .bridge import Bridge, DeviceReset, sample_trace

#: pull a checkpoint every this many steps by default
CHECKPOINT_EVERY = 50
#: give up after this many device resets in one run
MAX_RESETS = 20


@dataclass
class _Checkpoint:
    data: bytes
    step: int
    count: int
    trace: int


class DeviceTrainer(CheckpointView):
    """Train the generated program ``gen`` (:class:`~microtrain.compiler.codegen.emit.Generated`)
    on the device behind ``bridge``. ``total_steps`` feeds the cosine schedule (``mt_init``)."""

    def __init__(self, bridge: Bridge, gen, seed: int = 0, total_steps: int = 1,
                 checkpoint_every: int = CHECKPOINT_EVERY, checkpoint_path: str | None = None,
                 on_event: Callable[[str, str], None] | None = None):
        self.bridge, self.gen = bridge, gen
        self.ref = gen.trainer
        self.graph, self.plan, self.program = self.ref.graph, self.ref.plan, self.ref.program
        self.warnings = list(self.ref.warnings)
        self.seed = int(seed) & 0xFFFFFFFF
        self.total_steps = max(1, int(total_steps))
        self.checkpoint_every = max(1, int(checkpoint_every))
        self.checkpoint_path = checkpoint_path
        self.on_event = on_event
        man = gen.manifest
        self.B, self.C = int(man["batch"]), int(man["classes"])
        self.in_bytes, self.params_bytes = int(man["input_bytes"]), int(man["params_bytes"])
        self.resets = 0
        self.metrics: dict[str, Any] = {}
        info = bridge.hello()
        self.check_device(info)
        self.info = info
        self._t = 0
        self.count = 0
        self.trace = 0
        self._replay: list[tuple[np.ndarray, np.ndarray, tuple]] = []
        self.session = secrets.randbits(31) | 1
        bridge.init(self.seed, self.total_steps, self.session)
        self._ck = _Checkpoint(self._pull(), self._t, self.count, self.trace)

    def check_device(self, info: dict) -> None:
        """The device must run this very program (hash, sizes)."""
        if info["model_hash"] != self.gen.hash:
            raise MicrotrainError(f"{self.bridge.url}: the device runs model {info['model_hash'] or '(none)'}, "
                                  f"not {self.gen.hash}; flash this program first (microtrain flash DIR)")
        for key, want in (("input_bytes", self.in_bytes), ("batch", self.B), ("classes", self.C),
                          ("params_bytes", self.params_bytes)):
            if int(info[key]) != want:
                raise MicrotrainError(f"{self.bridge.url}: device reports {key} {info[key]}, the program has {want}")

    def _event(self, what: str, detail: str) -> None:
        if self.on_event is not None:
            self.on_event(what, detail)

    # ---- trainer interface ----
    @property
    def lrs(self) -> dict[str, float]:
        return self.ref.lrs

    @property
    def samples_per_step(self) -> int:
        return self.B

    @property
    def t(self) -> int:
        return self._t

    def prefix_bytes(self, n: int) -> int:
        return 1 << 62  # the device recomputes its frozen prefix

    def host_samples(self, x: np.ndarray, what: str = "data") -> np.ndarray:
        return self.ref.host_samples(x, what)

    def flush(self) -> None:
        return None

    def step(self, x: np.ndarray | None, y: np.ndarray, prefix: dict | None = None) -> StepResult:
        if x is None:
            raise ValueError("DeviceTrainer.step needs the samples")
        x = np.ascontiguousarray(np.asarray(x, dtype=np.int8)).reshape(self.B, -1)
        y = np.asarray(y, dtype=np.int64).reshape(-1)
        if y.size != self.B or x.shape[1] != self.in_bytes:
            raise ValueError(f"step: the device takes {self.B} sample(s) of {self.in_bytes} bytes per step")
        while True:
            try:
                m = self._train(x, y)
                break
            except DeviceReset as e:
                self._recover(str(e))
        key = (m["loss_q16"], m["correct"], m["skipped"])
        self._replay.append((x.copy(), y.copy(), key))
        if self._t - self._ck.step >= self.checkpoint_every:
            self._checkpoint()
        return StepResult(int(m["loss_q16"]), int(m["correct"]), self.B, int(m["skipped"]))

    def _train(self, x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        for j in range(self.B):
            self.bridge.send_sample(j, x[j].tobytes(), int(y[j]))
        m = self.bridge.train(self._t)
        count, trace = self.count, self.trace
        for j in range(self.B):
            trace = sample_trace(trace, int(y[j]), x[j].tobytes())
        count += self.B
        if m["count"] != count or m["trace"] != trace or m["step"] != self._t + 1:
            raise MicrotrainError(f"device trained a different sample sequence at step {self._t}: "
                                  f"device count {m['count']} trace {m['trace']:08x} step {m['step']}, "
                                  f"host count {count} trace {trace:08x} step {self._t + 1}")
        self.count, self.trace, self._t = count, trace, self._t + 1
        self.metrics = m
        return m

    def _recover(self, why: str) -> None:
        """The device lost its state: restart the session from the last checkpoint and replay."""
        self.resets += 1
        if self.resets > MAX_RESETS:
            raise MicrotrainError(f"{self.bridge.url}: the device reset {self.resets} times; giving up")
        ck = self._ck
        self._event("resume", f"{why}; resuming from step {ck.step}, replaying {len(self._replay)} step(s)")
        while True:
            try:
                info = self.bridge.hello(_check=False)
                self.check_device(info)
                self.bridge.init(self.seed, self.total_steps, self.session, ck.count, ck.trace)
                self.bridge.params_set(ck.data)
                self._t, self.count, self.trace = ck.step, ck.count, ck.trace
                for xr, yr, key in self._replay:
                    m = self._train(xr, yr)
                    if (m["loss_q16"], m["correct"], m["skipped"]) != key:
                        raise MicrotrainError(f"replayed step {self._t - 1} differs from its first run "
                                              f"({(m['loss_q16'], m['correct'], m['skipped'])} != {key})")
                return
            except DeviceReset:
                self.resets += 1
                if self.resets > MAX_RESETS:
                    raise MicrotrainError(f"{self.bridge.url}: the device reset {self.resets} times; giving up")

    def _pull(self) -> bytes:
        data = self.bridge.params_get()
        if len(data) != self.params_bytes or data[:4] != b"MTCK":
            raise MicrotrainError(f"{self.bridge.url}: checkpoint of {len(data)} bytes is not an MTCK checkpoint "
                                  f"of {self.params_bytes} bytes")
        return data

    def _checkpoint(self) -> None:
        while True:
            try:
                data = self._pull()
                break
            except DeviceReset as e:
                self._recover(str(e))
        if _ck_step(data) != self._t:
            raise MicrotrainError(f"device checkpoint is at step {_ck_step(data)}, the host at {self._t}")
        self._ck = _Checkpoint(data, self._t, self.count, self.trace)
        self._replay.clear()
        if self.checkpoint_path:
            write_atomic(self.checkpoint_path, data)

    def predict_ir(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(x, dtype=np.int8)).reshape(x.shape[0], -1)
        out = np.zeros(x.shape[0], np.int64)
        for i in range(x.shape[0]):
            while True:
                try:
                    self.bridge.send_sample(0, x[i].tobytes(), -1)
                    out[i] = self.bridge.infer()["predicted"]
                    break
                except DeviceReset as e:
                    self._recover(str(e))
        return out

    # ---- state ----
    def checkpoint(self) -> bytes:
        """The device's checkpoint now (pulled over the bridge)."""
        if self._ck.step != self._t:
            self._checkpoint()
        return self._ck.data

    def finish(self) -> bytes:
        """Pull the final checkpoint (and write it to ``checkpoint_path``)."""
        self._checkpoint()
        return self._ck.data


def _ck_step(data: bytes) -> int:
    return int.from_bytes(data[24:28], "little")


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder (never a torn file)."""
    target = os.path.abspath(os.path.expanduser(path))
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise MicrotrainError(f"{path}: folder {folder} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".microtrain-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
