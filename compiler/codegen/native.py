"""The native host engine: the generated C + the firmware kernels built with the host compiler
and driven from Python through ctypes (``microtrain simulate --engine c``).

:class:`NativeTrainer` has the trainer interface the shared training loop
(:mod:`microtrain.compiler.driver`) uses, so the C engine runs the same epochs, sample order,
evaluation and reports as the numpy engine; the numpy engine stays the oracle.

Builds are cached by content: the kernels once per firmware version (a static archive), each
generated model once per hash (a shared library), under ``$MICROTRAIN_CACHE`` or
``~/.cache/microtrain/native``.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import MicrotrainError
from ..train_int import StepResult
from .emit import CHECKPOINT_HEADER, Generated, generate

HOST_CC = os.environ.get("MT_HOST_CC", "gcc")
FLAGS = ("-std=c99", "-O3", "-fPIC", "-fno-strict-aliasing", "-Wall", "-Wextra", "-Werror")
SANITIZE_FLAGS = ("-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", "-g")


class BuildError(MicrotrainError):
    """The host C compiler failed or is missing."""


def firmware_dir() -> Path:
    from ...host.resources import firmware_dir as fd

    return Path(fd())


def cache_dir() -> Path:
    d = os.environ.get("MICROTRAIN_CACHE")
    return Path(d) if d else Path.home() / ".cache" / "microtrain" / "native"


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(hashlib.sha256(p).digest())
    return h.hexdigest()[:16]


def _run(cmd: list[str], cwd: Path | None = None) -> None:
    if shutil.which(cmd[0]) is None:
        raise BuildError(f"{cmd[0]}: host C compiler not found (install gcc, or set MT_HOST_CC)")
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        raise BuildError(f"C build failed: {' '.join(cmd[:3])} ...\n{p.stdout[-4000:]}")


def kernel_sources() -> list[Path]:
    return sorted((firmware_dir() / "src" / "kernels").glob("*.c"))


def _atomic(out: Path, build) -> Path:
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mt-build-", dir=out.parent) as tmp:
        tmp_out = Path(tmp) / out.name
        build(Path(tmp), tmp_out)
        os.replace(tmp_out, out)
    return out


def build_library(gen: Generated, sanitize: bool = False, extra_flags: tuple[str, ...] = ()) -> Path:
    """Compile ``gen`` + the kernels into a shared library (cached); its path."""
    inc = firmware_dir() / "include"
    flags = list(FLAGS) + list(extra_flags) + (list(SANITIZE_FLAGS) if sanitize else [])
    srcs = kernel_sources()
    headers = sorted(inc.glob("*.h"))
    kkey = _digest(" ".join(flags).encode(), *(p.read_bytes() for p in srcs + headers))
    root = cache_dir()
    tag = "-san" if sanitize else ""

    def build_kernels(tmp: Path, out: Path) -> None:
        objs = []
        for s in srcs:
            o = tmp / (s.stem + ".o")
            _run([HOST_CC, *flags, f"-I{inc}", "-c", str(s), "-o", str(o)])
            objs.append(str(o))
        _run(["ar", "rcs", str(out), *objs])

    archive = _atomic(root / f"libmtkernels-{kkey}{tag}.a", build_kernels)
    mkey = _digest(kkey.encode(), gen.files["mt_model.c"].encode(), gen.files["mt_model.h"].encode())

    def build_model(tmp: Path, out: Path) -> None:
        for name, text in gen.files.items():
            (tmp / name).write_text(text)
        _run([HOST_CC, *flags, f"-I{inc}", f"-I{tmp}", "-shared", str(tmp / "mt_model.c"), str(archive), "-o", str(out)])

    return _atomic(root / f"libmtmodel-{gen.hash}-{mkey}{tag}.so", build_model)


class _Metrics(ctypes.Structure):
    _fields_ = [("loss_q16", ctypes.c_int32), ("correct", ctypes.c_int32), ("samples", ctypes.c_int32),
                ("skipped", ctypes.c_int32), ("cycles", ctypes.c_uint32)]


class CheckpointView:
    """The trained state of a generated program, decoded from its checkpoint bytes: for any
    trainer with ``gen`` (:class:`Generated`), ``ref`` (its Int8Trainer), ``graph`` and
    ``checkpoint()`` (the native library, or a device over the serial bridge)."""

    def state(self) -> dict[str, Any]:
        """Everything the checkpoint holds, decoded: step, rng, and per trained tensor its SRAM
        array, master copy and velocity (slice order)."""
        data = self.checkpoint()
        out: dict[str, Any] = {"step": int.from_bytes(data[24:28], "little"),
                               "rng": int.from_bytes(data[28:32], "little")}
        for part in self.gen.manifest["checkpoint"]:
            a = np.frombuffer(data, dtype=np.dtype(part["dtype"]), count=part["count"], offset=part["offset"])
            out[part["name"]] = a.copy()
        assert CHECKPOINT_HEADER == 32
        return out

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Every trained tensor, whole (frozen rows from the graph), as the numpy engine's."""
        st = self.state()
        rows = self.gen.manifest["sram_rows"]
        out = {}
        for name in self.ref.slices:
            full = self.graph.tensors[name].data.copy()
            a = st[name]
            if rows[name] is None:
                full[...] = a.reshape(full.shape)
            else:
                full[: rows[name]] = a.reshape((rows[name],) + full.shape[1:])
            out[name] = full
        return out

    @property
    def masters(self) -> dict[str, np.ndarray]:
        st = self.state()
        return {n: st[f"{n}.master"] for n in self.ref.masters}

    @property
    def velocity(self) -> dict[str, np.ndarray]:
        st = self.state()
        return {n: st[f"{n}.velocity"] for n in self.ref.slices if f"{n}.velocity" in st}

    @property
    def rng_state(self) -> int:
        return int(self.state()["rng"])

    def _scales(self, node, role: str, cout: int) -> np.ndarray:
        return self.ref._scales(node, role, cout)

    def trained_graph(self):
        g = self.graph.copy()
        for name, p in self.params.items():
            g.tensors[name].data = p
        return g


class NativeTrainer(CheckpointView):
    """The generated C engine behind the trainer interface of
    :class:`~microtrain.compiler.train_int.Int8Trainer` (same constructor arguments)."""

    def __init__(self, graph, plan, lr: float | None = None, momentum: float = 0.0, seed: int = 0,
                 lr_schedule: str = "constant", total_steps: int | None = None, accumulate: int = 1,
                 fg_lr: float | None = None, qas: bool | None = None, remedy: str = "master",
                 loss_input: str = "int8", sanitize: bool = False, generated: Generated | None = None,
                 extra_flags: tuple[str, ...] = (), patch="off", patch_max_overhead: float = 0.15,
                 scratch: str = "fast"):
        self.gen = generated or generate(graph, plan, lr=lr, fg_lr=fg_lr, momentum=momentum, lr_schedule=lr_schedule,
                                         qas=qas, remedy=remedy, loss_input=loss_input, accumulate=accumulate,
                                         patch=patch, patch_max_overhead=patch_max_overhead, scratch=scratch)
        self.ref = self.gen.trainer  # host constants, host-side sample preparation
        self.graph, self.plan, self.program = self.ref.graph, self.ref.plan, self.ref.program
        self.warnings = list(self.ref.warnings)
        self.seed = int(seed) & 0xFFFFFFFF
        self.total_steps = int(total_steps) if total_steps else 1
        self.lib_path = build_library(self.gen, sanitize=sanitize, extra_flags=tuple(extra_flags))
        # the program's state is static: each trainer loads its own copy of the library (a
        # second dlopen of one path would share it), unlinked once loaded
        with tempfile.TemporaryDirectory(prefix="mt-native-") as tmp:
            own = Path(tmp) / self.lib_path.name
            shutil.copyfile(self.lib_path, own)
            lib = ctypes.CDLL(str(own))
        i8p, i32p, u8p = (ctypes.POINTER(ctypes.c_int8), ctypes.POINTER(ctypes.c_int32),
                          ctypes.POINTER(ctypes.c_uint8))
        lib.mt_init.argtypes = [ctypes.c_uint32, ctypes.c_int32]
        lib.mt_init.restype = None
        lib.mt_train_step.argtypes = [i8p, i32p, ctypes.POINTER(_Metrics)]
        lib.mt_infer.argtypes = [i8p, i8p]
        lib.mt_params_get.argtypes = [u8p, ctypes.c_uint32]
        lib.mt_params_set.argtypes = [u8p, ctypes.c_uint32]
        lib.mt_step_count.restype = ctypes.c_int32
        self.lib = lib
        self.B = int(self.gen.manifest["batch"])
        self.C = int(self.gen.manifest["classes"])
        self.in_bytes = int(self.gen.manifest["input_bytes"])
        lib.mt_init(self.seed, self.total_steps)

    # ---- trainer interface ----
    @property
    def lrs(self) -> dict[str, float]:
        return self.ref.lrs

    @property
    def samples_per_step(self) -> int:
        return self.B

    @property
    def t(self) -> int:
        return int(self.lib.mt_step_count())

    def step(self, x: np.ndarray | None, y: np.ndarray, prefix: dict | None = None) -> StepResult:
        if x is None:
            raise ValueError("NativeTrainer.step needs the samples (no frozen-prefix cache)")
        y = np.ascontiguousarray(np.asarray(y, dtype=np.int32).reshape(-1))
        x = np.ascontiguousarray(np.asarray(x, dtype=np.int8))
        if y.size != self.B or x.size != self.B * self.in_bytes:
            raise ValueError(f"step: the C engine takes {self.B} sample(s) per step, got {y.size}")
        m = _Metrics()
        rc = self.lib.mt_train_step(x.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
                                    y.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), ctypes.byref(m))
        if rc != 0:
            raise MicrotrainError(f"mt_train_step returned {rc} at step {self.t}")
        return StepResult(int(m.loss_q16), int(m.correct), int(m.samples), int(m.skipped))

    def flush(self) -> None:
        return None

    def prefix_bytes(self, n: int) -> int:
        return 1 << 62  # never cache a frozen prefix: the device recomputes it

    def host_samples(self, x: np.ndarray, what: str = "data") -> np.ndarray:
        return self.ref.host_samples(x, what)

    def logits(self, x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(x, dtype=np.int8))
        out = np.zeros((x.shape[0], self.C), np.int8)
        for i in range(x.shape[0]):
            xi = np.ascontiguousarray(x[i])
            oi = out[i]
            rc = self.lib.mt_infer(xi.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)),
                                   oi.ctypes.data_as(ctypes.POINTER(ctypes.c_int8)))
            if rc != 0:
                raise MicrotrainError(f"mt_infer returned {rc}")
        return out

    def predict_ir(self, x: np.ndarray) -> np.ndarray:
        return np.argmax(self.logits(x), axis=1)

    # ---- state ----
    def checkpoint(self) -> bytes:
        n = int(self.gen.manifest["params_bytes"])
        buf = (ctypes.c_uint8 * n)()
        if self.lib.mt_params_get(buf, n) != 0:
            raise MicrotrainError("mt_params_get failed")
        return bytes(buf)

    def load_checkpoint(self, data: bytes) -> None:
        buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data)
        if self.lib.mt_params_set(buf, len(data)) != 0:
            raise MicrotrainError("checkpoint rejected: not a checkpoint of this model and schedule")

