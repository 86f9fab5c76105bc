"""Speed of one training step: MACs, instructions (callgrind, host build of the generated C) and
steps/s of the C engine, the numpy int8 engine and PyTorch eager, side by side in one process.
Prints one JSON object (and writes it; default bench/results/speed.json, --quick: only with --out).

    python bench/speed.py [--out bench/results/speed.json] [--quick] [--no-mobilenet]
                          [--no-callgrind] [--min-seconds 1.0] [--rounds 3]

Rows. The example model (examples/digits_cnn.onnx, PTQ as the digits test fixture: 64 clean
training samples) under sparse (the default: all biases + classifier), bias, last-k (last 1),
fg (forward gradient on the sparse default selection, m 3, batch 1) and hybrid (backprop for the
classifier, fg for the other biases). MobileNetV2-w0.35 (tests/models/mobilenetv2.py, PTQ on 8
N(0,1) images) with MIT's sparse scheme (biases of the last 20 conv/fc layers, classifier, four
pointwise convs at 1/4 of their rows), stochastic rounding: at 128x128 for the C engine, torch and
callgrind (numpy would take seconds per step), and at a lower resolution (--mnv2-small, 64) with
all three engines side by side.

Timing. All engines of a row run in this process on the same samples (16 fixed samples, cycled;
the shifted digits training split, or N(0,1) images for MobileNetV2) and the same number of
steps N, after a warm-up that is not timed. N is chosen so that every engine runs >= --min-seconds
(1.25 x --min-seconds x the fastest engine's rate, estimated on >= 0.2 s of untimed steps after
the warm-up). The N steps are split into --rounds
interleaved rounds (C, numpy, torch, C, numpy, torch, ...) so that load from other processes hits
all engines alike; steps/s = N / total time of the engine. Learning rates are constant (no cosine
decay); the numbers are independent of the rate.

PyTorch baseline: the float IR graph (after BatchNorm folding: the same float model the int8
graph was quantized from) converted op by op to torch (NCHW), checked against the numpy float
interpreter; torch.set_num_threads(1); batch 1; eager mode. Backprop step = forward + cross
entropy + backward + SGD step, where exactly the tensors the schedule trains have
requires_grad (so autograd stops at the first trained layer, as the program does); a weight
trained on its leading rows only is trained as a whole tensor whose gradient rows beyond them are
zeroed before the step (the full weight gradient is computed). Forward-gradient layers run the
same sign-m-SPSA step as the int8 engine under torch.no_grad (unperturbed forward, then for each
of m Rademacher directions +eps, -eps passes from the first trained layer, then the update).

MACs per training step (macs_per_step, below): forward MACs of every conv/depthwise/fc node
(the device recomputes the frozen prefix every step), plus the backward MACs the program executes:
input gradients of conv/dw/fc nodes from the first trained layer on (as many MACs as the forward),
weight gradients for the trained rows only (forward MACs x rows / Cout); bias gradients and the
element-wise ops (pools, add, mean, ReLU masks) are not counted. Forward gradient: 2m perturbed
passes from the first trained layer to the logits, per sample of the fg batch.

Instructions: bench/native_step_main.c linked with the generated mt_model.c and the firmware
kernels (gcc -O3 as the native engine, x86-64 host), run under valgrind --tool=callgrind --toggle-collect=mt_train_step:
instructions executed inside mt_train_step per step, with the per-function split (exclusive).
Cortex-M counts under QEMU are a later step ("qemu": null).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
os.environ.setdefault("MICROTRAIN_CACHE", str(ROOT / "build" / "native"))

from microtrain.compiler.frontend import load_model  # noqa: E402
from microtrain.compiler.ops import registry  # noqa: E402
from microtrain.compiler.program import LINEAR_OPS, TrainingProgram, build_program  # noqa: E402
from microtrain.compiler.quantize import quantize_graph  # noqa: E402
from microtrain.compiler.schedule import FGOptions, Schedule, TrainPlan, parse_update, resolve  # noqa: E402
from microtrain.compiler.train_int import Int8Trainer  # noqa: E402

#: MIT-style sparse update of MobileNetV2 (as bench/memory.py)
MIT_SCHEME = dict(bias_last=20, update=parse_update("-1:1,-3:0.25,-5:0.25,-6:0.25,-8:0.25"))
EXAMPLE_SCHEDULES = {
    "sparse": Schedule("sparse"),
    "bias": Schedule("bias"),
    "last-k": Schedule("last-k"),
    "fg": Schedule("fg"),
    "hybrid": Schedule("hybrid"),
}
NSAMPLES = 16
TORCH_LR = 1e-3
ENGINES = ("c", "numpy", "torch")


# ---------------------------------------------------------------------------------------------
# MACs of one training step
# ---------------------------------------------------------------------------------------------
def macs_per_step(graph, plan: TrainPlan, program: TrainingProgram | None = None) -> dict:
    """MACs of one training step of ``plan`` on ``graph`` (see the module doc for the rules)."""
    program = program or build_program(graph, plan)
    nodes = {n.name: n for n in graph.nodes}
    lin = {n.name: int(registry.get(n.op).macs(n, graph)) for n in graph.nodes if n.op in LINEAR_OPS}
    fwd = [s for s in program.steps if s.kind == "forward"]
    forward = sum(lin.get(s.node, 0) for s in fwd)
    bwd_input = sum(lin[s.node] for s in program.steps if s.kind == "grad_input" and s.node in lin)
    bwd_weight = 0
    for s in program.steps:
        if s.kind == "update" and s.attrs["input"] == 1:
            n = nodes[s.node]
            cout = graph.tensors[n.inputs[1]].shape[LINEAR_OPS[n.op]]
            bwd_weight += lin[s.node] * s.attrs["rows"] // cout
    fg_layers = [lt for lt in plan.layers if lt.method == "fg" and lt.trainable]
    fg = plan.schedule.fg or FGOptions()
    has_bp = any(s.kind == "loss" for s in program.steps)
    batch = fg.batch if fg_layers else 1
    fg_macs = 0
    if fg_layers:
        trained = {lt.node for lt in plan.trainable_layers}
        start = next(k for k, s in enumerate(fwd) if s.node in trained)
        fg_macs = 2 * fg.m * batch * sum(lin.get(s.node, 0) for s in fwd[start:])
    per_sample_bp = forward + bwd_input + bwd_weight if has_bp else forward
    total = batch * per_sample_bp + fg_macs
    return {"forward": forward, "backward_input": bwd_input if has_bp else 0,
            "backward_weight": bwd_weight if has_bp else 0, "forward_gradient": fg_macs,
            "samples_per_step": batch, "total": total,
            "fg_passes": 2 * fg.m * batch if fg_layers else 0}


# ---------------------------------------------------------------------------------------------
# PyTorch twin of the float IR graph
# ---------------------------------------------------------------------------------------------
_NHWC_TO_NCHW = {0: 0, 1: 2, 2: 3, 3: 1}


class TorchNet:
    """The float IR graph (NHWC) as eager torch ops on NCHW tensors; parameters as leaf tensors
    in torch layout (conv OIHW, depthwise [C*M,1,KH,KW], fc [Cout,Cin])."""

    def __init__(self, graph):
        import torch

        self.torch = torch
        self.F = torch.nn.functional
        self.g = graph
        self.nodes = [n for n in graph.nodes if n.op not in ("quantize", "dequantize")]
        if self.nodes and self.nodes[-1].op == "softmax":
            self.nodes = self.nodes[:-1]
        self.params: dict[str, "torch.Tensor"] = {}
        for n in self.nodes:
            if n.op not in LINEAR_OPS and n.op not in ("relu", "relu6", "add", "max_pool2d", "avg_pool2d",
                                                        "mean", "reshape", "pad"):
                raise NotImplementedError(f"TorchNet: op {n.op}")
            for k, name in enumerate(n.inputs):
                t = graph.tensors[name] if name else None
                if t is None or not t.is_const or name in self.params:
                    continue
                a = torch.from_numpy(np.ascontiguousarray(t.data.astype(np.float32)))
                if k == 1 and n.op == "conv2d":
                    a = a.permute(0, 3, 1, 2)
                elif k == 1 and n.op == "depthwise_conv2d":
                    a = a.permute(3, 0, 1, 2)
                self.params[name] = a.contiguous().clone()
        self.input = graph.inputs[0]
        self.output = self.nodes[-1].outputs[0]

    def _act(self, y, act):
        if act == "relu":
            return self.F.relu(y)
        if act == "relu6":
            return self.F.relu6(y)
        if act not in (None, "none"):
            raise NotImplementedError(f"TorchNet: activation {act}")
        return y

    def _pad2d(self, x, pad):
        t, l, b, r = pad
        if t == b and l == r:
            return x, (t, l)
        return self.F.pad(x, (l, r, t, b)), (0, 0)

    def run(self, env: dict, start: int = 0, stop: int | None = None) -> dict:
        F, P = self.F, self.params
        for n in self.nodes[start:stop]:
            a = n.attrs
            x = env[n.inputs[0]] if n.inputs[0] in env else P[n.inputs[0]]
            if n.op == "conv2d":
                x, pad = self._pad2d(x, a.get("pad", (0, 0, 0, 0)))
                y = F.conv2d(x, P[n.inputs[1]], P.get(n.inputs[2]) if len(n.inputs) > 2 else None,
                             a.get("stride", (1, 1)), pad, a.get("dilation", (1, 1)))
                y = self._act(y, a.get("act"))
            elif n.op == "depthwise_conv2d":
                x, pad = self._pad2d(x, a.get("pad", (0, 0, 0, 0)))
                y = F.conv2d(x, P[n.inputs[1]], P.get(n.inputs[2]) if len(n.inputs) > 2 else None,
                             a.get("stride", (1, 1)), pad, a.get("dilation", (1, 1)), groups=x.shape[1])
                y = self._act(y, a.get("act"))
            elif n.op == "fully_connected":
                y = self._act(F.linear(x, P[n.inputs[1]], P.get(n.inputs[2]) if len(n.inputs) > 2 else None),
                              a.get("act"))
            elif n.op in ("relu", "relu6"):
                y = self._act(x, n.op)
            elif n.op == "add":
                b = env[n.inputs[1]] if n.inputs[1] in env else P[n.inputs[1]]
                y = self._act(x + b, a.get("act"))
            elif n.op in ("max_pool2d", "avg_pool2d"):
                t, l, b, r = a.get("pad", (0, 0, 0, 0))
                if t != b or l != r:
                    raise NotImplementedError("TorchNet: asymmetric pool padding")
                if n.op == "max_pool2d":
                    y = F.max_pool2d(x, a["ksize"], a.get("stride", (1, 1)), (t, l))
                else:
                    y = F.avg_pool2d(x, a["ksize"], a.get("stride", (1, 1)), (t, l),
                                     count_include_pad=bool(a.get("count_include_pad", False)))
                y = self._act(y, a.get("act"))
            elif n.op == "mean":
                axes = tuple(_NHWC_TO_NCHW[i] for i in a["axes"]) if x.dim() == 4 else tuple(a["axes"])
                y = x.mean(dim=axes, keepdim=bool(a.get("keepdims", True)))
            elif n.op == "reshape":
                shape = (x.shape[0],) + tuple(a["shape"][1:])
                if x.dim() == 4:
                    x = x.permute(0, 2, 3, 1)
                y = x.reshape(shape)
                if len(shape) == 4:
                    y = y.permute(0, 3, 1, 2)
            elif n.op == "pad":
                pads = [tuple(p) for p in a["pads"]]
                if x.dim() == 4:
                    pads = [pads[0], pads[3], pads[1], pads[2]]
                flat = [v for p in reversed(pads) for v in p]
                y = F.pad(x, flat, value=float(a.get("value", 0.0)))
            else:  # pragma: no cover - checked in __init__
                raise NotImplementedError(n.op)
            env[n.outputs[0]] = y
        return env

    def index_of(self, node_name: str) -> int:
        return next(k for k, n in enumerate(self.nodes) if n.name == node_name)


class TorchTrainer:
    """Batch-1 SGD (and sign-m-SPSA for fg layers) of ``plan``'s subset on a :class:`TorchNet`."""

    def __init__(self, net: TorchNet, plan: TrainPlan, seed: int = 0):
        torch = net.torch
        self.net, self.torch = net, torch
        self.gen = torch.Generator().manual_seed(seed)
        fg = plan.schedule.fg or FGOptions()
        self.m, self.eps, self.batch = fg.m, fg.eps, fg.batch
        self.bp: list = []  # (tensor, rows or None: rows to keep, axis 0 in torch layout)
        self.fg: list = []  # (tensor, rows, delta)
        for lt in plan.layers:
            for name, rows, cout in ((lt.weight, lt.weight_rows, lt.cout), (lt.bias, lt.bias_rows, lt.cout)):
                if not rows or name is None:
                    continue
                p = net.params[name]
                if lt.method == "bp":
                    p.requires_grad_(True)
                    self.bp.append((p, None if rows == cout else rows))
                else:
                    self.fg.append((p, rows, self.eps * float(p.abs().max())))
        self.opt = torch.optim.SGD([p for p, _ in self.bp], lr=TORCH_LR) if self.bp else None
        trained = [lt.node for lt in plan.trainable_layers]
        self.start = net.index_of(trained[0]) if trained else len(net.nodes)
        self.samples_per_step = self.batch if self.fg else 1

    def _loss(self, env, y):
        return self.torch.nn.functional.cross_entropy(env[self.net.output], y)

    def step(self, x, y) -> float:
        torch, net = self.torch, self.net
        with torch.no_grad():
            base = net.run({net.input: x}, 0, self.start)
        loss = 0.0
        if self.bp:
            for j in range(x.shape[0]):
                env = net.run({k: v[j:j + 1] for k, v in base.items()}, self.start)
                lo = self._loss(env, y[j:j + 1])
                self.opt.zero_grad(set_to_none=True)
                lo.backward()
                for p, rows in self.bp:
                    if rows is not None:
                        p.grad[rows:].zero_()
                self.opt.step()
                loss += float(lo.detach())
        if self.fg:
            with torch.no_grad():
                if not self.bp:
                    loss = float(self._loss(net.run(dict(base), self.start), y))
                g = [torch.zeros_like(p[:rows]) for p, rows, _ in self.fg]
                for _ in range(self.m):
                    z = [torch.randint(0, 2, p[:rows].shape, generator=self.gen).mul_(2).sub_(1).to(p.dtype)
                         for p, rows, _ in self.fg]
                    for (p, rows, d), zk in zip(self.fg, z):
                        p[:rows].add_(zk, alpha=d)
                    lp = float(self._loss(net.run(dict(base), self.start), y))
                    for (p, rows, d), zk in zip(self.fg, z):
                        p[:rows].add_(zk, alpha=-2 * d)
                    lm = float(self._loss(net.run(dict(base), self.start), y))
                    for (p, rows, d), zk in zip(self.fg, z):
                        p[:rows].add_(zk, alpha=d)
                    if lp != lm:
                        s = 1.0 if lp > lm else -1.0
                        for gk, zk in zip(g, z):
                            gk.add_(zk, alpha=s)
                for (p, rows, _), gk in zip(self.fg, g):
                    p[:rows].add_(gk, alpha=-TORCH_LR / self.m)
        return loss


def torch_check(net: TorchNet, graph, x_src: np.ndarray, x_ir: np.ndarray) -> float:
    """Max |torch - numpy float interpreter| of the logits of a few samples."""
    from microtrain.compiler.interpreter import run

    torch = net.torch
    with torch.no_grad():
        yt = net.run({net.input: torch.from_numpy(x_src)})[net.output].numpy()
    yr = run(graph, x_ir)
    return float(np.max(np.abs(yt - np.asarray(yr).reshape(yt.shape))))


# ---------------------------------------------------------------------------------------------
# callgrind
# ---------------------------------------------------------------------------------------------
CFLAGS = ("-std=c99", "-O3", "-fno-strict-aliasing", "-g")  # as compiler/codegen/native.py


def _cc(cmd: list[str]) -> None:
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        raise RuntimeError(f"build failed: {' '.join(cmd[:4])} ...\n{p.stdout[-3000:]}")


def parse_callgrind(text: str) -> tuple[int, dict[tuple[str, str], int]]:
    """(total Ir, exclusive Ir per (source file of the function, function)) of a callgrind output
    file; instructions of code inlined from headers count for the function they were inlined into,
    and static functions of the same name in different files stay apart."""
    names: dict[str, dict[str, str]] = {"file": {}, "fn": {}}
    kind = {"fl": "file", "fi": "file", "fe": "file", "cfl": "file", "cfi": "file", "fn": "fn", "cfn": "fn"}
    npos = 1
    fl = fn = "?"
    skip = False
    cost: dict[tuple[str, str], int] = {}
    total = None
    for line in text.splitlines():
        if not line:
            continue
        c = line[0]
        if c.isdigit() or c in "+-*":
            if skip:
                skip = False
                continue
            parts = line.split()
            if len(parts) > npos:
                key = (fl, fn)
                cost[key] = cost.get(key, 0) + int(parts[npos])
            continue
        key, _, val = line.partition("=")
        if key in kind:
            m = re.match(r"^\((\d+)\)(?:\s+(.*))?$", val)
            table = names[kind[key]]
            if m:
                if m.group(2) is not None:
                    table[m.group(1)] = m.group(2)
                val = table.get(m.group(1), val)
            if key == "fl":
                fl = Path(val).name
            elif key == "fn":
                fn = val
        elif key == "calls":
            skip = True
        elif line.startswith("positions:"):
            npos = len(line.split(":", 1)[1].split())
        elif line.startswith(("summary:", "totals:")):
            total = int(line.split(":", 1)[1].split()[0])
    if total is None:
        total = sum(cost.values())
    return total, cost



class Callgrind:
    """Builds the firmware kernels once (static archive) and, per generated model, the standalone
    driver; runs it under callgrind."""

    def __init__(self, workdir: Path):
        from microtrain.compiler.codegen.native import firmware_dir, kernel_sources

        self.dir = workdir
        self.inc = firmware_dir() / "include"
        objs = []
        for s in kernel_sources():
            o = workdir / (s.stem + ".o")
            _cc(["gcc", *CFLAGS, f"-I{self.inc}", "-c", str(s), "-o", str(o)])
            objs.append(str(o))
        self.archive = workdir / "libmtkernels.a"
        _cc(["ar", "rcs", str(self.archive), *objs])
        self.available = shutil.which("valgrind") is not None

    def build(self, gen, tag: str) -> Path:
        d = self.dir / tag
        d.mkdir(parents=True, exist_ok=True)
        for name, text in gen.files.items():
            (d / name).write_text(text)
        exe = d / "step"
        _cc(["gcc", *CFLAGS, f"-I{self.inc}", f"-I{d}", str(ROOT / "bench" / "native_step_main.c"),
             str(d / "mt_model.c"), str(self.archive), "-o", str(exe)])
        return exe

    def run(self, exe: Path, steps: int, top: int = 12) -> dict:
        out = exe.parent / "callgrind.out"
        t0 = time.perf_counter()
        p = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                            "--toggle-collect=mt_train_step", str(exe), str(steps)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"callgrind failed:\n{p.stderr[-3000:]}")
        total, cost = parse_callgrind(out.read_text())
        funcs = [{"function": fn, "file": fl, "instructions_per_step": ir // steps,
                  "percent": round(100.0 * ir / total, 2)}
                 for (fl, fn), ir in sorted(cost.items(), key=lambda kv: -kv[1]) if ir]
        return {"instructions_per_step": total // steps, "steps_measured": steps,
                "by_function_exclusive": funcs[:top], "valgrind_seconds": round(time.perf_counter() - t0, 1)}


# ---------------------------------------------------------------------------------------------
# timing
# ---------------------------------------------------------------------------------------------
def time_engines(steppers: dict, batches: dict, min_seconds: float, rounds: int, warmup: int,
                 fixed_steps: int | None = None, max_steps: int | None = None) -> dict:
    """Run every engine's step on its batches (cycled): warm-up (not timed) gives a rate, then N
    steps each in ``rounds`` interleaved rounds. ``steppers``: name -> step(x, y)."""
    est = {}
    for name, step in steppers.items():
        xs = batches[name]
        for i in range(warmup):
            step(*xs[i % len(xs)])
        if fixed_steps:
            continue
        k, t0 = 0, time.perf_counter()  # rate estimate: >= 0.2 s of (untimed) steps after the warm-up
        while True:
            step(*xs[k % len(xs)])
            k += 1
            dt = time.perf_counter() - t0
            if dt >= 0.2 or k >= 2000 and dt >= 0.05:
                break
        est[name] = k / dt
    n = fixed_steps or max(warmup, math.ceil(1.25 * min_seconds * max(est.values())))
    if max_steps:
        n = min(n, max_steps)
    per = [n // rounds + (1 if r < n % rounds else 0) for r in range(rounds)]
    secs = {k: 0.0 for k in steppers}
    per_round = {k: [] for k in steppers}
    done = {k: 0 for k in steppers}
    for r in range(rounds):
        for name, step in steppers.items():
            xs = batches[name]
            k0 = warmup + done[name]
            t0 = time.perf_counter()
            for i in range(per[r]):
                step(*xs[(k0 + i) % len(xs)])
            dt = time.perf_counter() - t0
            secs[name] += dt
            done[name] += per[r]
            per_round[name].append(round(per[r] / dt, 2) if dt > 0 else None)
    return {name: {"steps": n, "seconds": round(secs[name], 3), "steps_per_s": round(n / secs[name], 2),
                   "steps_per_s_rounds": per_round[name], "warmup_steps": warmup}
            for name in steppers}


# ---------------------------------------------------------------------------------------------
# rows
# ---------------------------------------------------------------------------------------------
def bench_row(label: str, fgraph, qgraph, schedule: Schedule, x_src: np.ndarray, y: np.ndarray, *, engines,
              remedy: str, min_seconds: float, rounds: int, warmup: int, cg: Callgrind | None, cg_steps: int,
              fixed_steps: int | None = None, max_steps: int | None = None, resolution: int | None = None) -> dict:
    from microtrain.compiler.codegen.native import NativeTrainer

    plan = resolve(schedule, qgraph)
    t_setup = time.perf_counter()
    ref = Int8Trainer(qgraph, plan, remedy=remedy)
    B = ref.samples_per_step
    ref.prepare_batches(1, B)
    x_int8 = ref.host_samples(x_src)
    y = np.asarray(y, np.int64)
    nb = max(1, len(y) // B)
    int_batches = [(x_int8[i * B:(i + 1) * B], y[i * B:(i + 1) * B]) for i in range(nb)]
    steppers, batches, notes = {}, {}, {}
    native = None
    if "c" in engines:
        native = NativeTrainer(qgraph, plan, remedy=remedy, seed=0, total_steps=1 << 20)
        steppers["c"] = native.step
        batches["c"] = int_batches
    if "numpy" in engines:
        steppers["numpy"] = ref.step
        batches["numpy"] = int_batches
    torch_info = None
    if "torch" in engines:
        try:
            import torch
        except ImportError:
            torch = None
            notes["torch"] = "torch not installed"
        if torch is not None:
            net = TorchNet(fgraph)
            ttr = TorchTrainer(net, resolve(schedule, fgraph))
            xt = torch.from_numpy(np.ascontiguousarray(x_src.astype(np.float32)))
            yt = torch.from_numpy(y)
            steppers["torch"] = ttr.step
            batches["torch"] = [(xt[i * B:(i + 1) * B], yt[i * B:(i + 1) * B]) for i in range(nb)]
            x_ir = np.ascontiguousarray(np.moveaxis(x_src[:2], 1, -1)) if x_src.ndim == 4 else x_src[:2]
            torch_info = {"max_abs_logit_diff_vs_float_interpreter": torch_check(TorchNet(fgraph), fgraph,
                                                                                x_src[:2], x_ir),
                          "trained_tensors_backprop": len(ttr.bp), "trained_tensors_fg": len(ttr.fg),
                          "row_subsets": "whole tensor with the gradient of the untrained rows zeroed"
                          if any(r is not None for _, r in ttr.bp) else "none (every trained tensor is whole)"}
    setup_s = time.perf_counter() - t_setup
    timing = time_engines(steppers, batches, min_seconds, rounds, warmup, fixed_steps, max_steps)
    for e in ENGINES:
        if e not in timing:
            timing[e] = None
    sps = {e: (timing[e] or {}).get("steps_per_s") for e in ENGINES}
    ratios = {"c_over_numpy": round(sps["c"] / sps["numpy"], 2) if sps["c"] and sps["numpy"] else None,
              "c_over_torch": round(sps["c"] / sps["torch"], 2) if sps["c"] and sps["torch"] else None,
              "torch_over_numpy": round(sps["torch"] / sps["numpy"], 2) if sps["torch"] and sps["numpy"] else None}
    macs = macs_per_step(qgraph, plan, ref.program)
    inst = None
    if cg is not None and native is not None and cg.available:
        exe = cg.build(native.gen, re.sub(r"[^A-Za-z0-9]+", "_", label))
        inst = cg.run(exe, cg_steps)
        inst["instructions_per_mac"] = round(inst["instructions_per_step"] / macs["total"], 2)
    row = {"name": label, "schedule": schedule.to_json(), "describe": schedule.describe(),
           "plan": plan.describe(), "trainable_params": plan.num_trainable_params, "remedy": remedy,
           "resolution": resolution, "samples_per_step": B, "macs_per_step": macs,
           "steps_per_s": sps, "ratios": ratios, "timing": timing, "instructions": inst, "qemu": None,
           "torch": torch_info, "notes": notes, "setup_seconds": round(setup_s, 2)}
    if sps["c"]:
        row["c_macs_per_s"] = round(macs["total"] * sps["c"])
    return row


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def machine_info() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gcc = subprocess.run(["gcc", "--version"], stdout=subprocess.PIPE, text=True).stdout.splitlines()[0]
    vg = subprocess.run(["valgrind", "--version"], stdout=subprocess.PIPE, text=True).stdout.strip() \
        if shutil.which("valgrind") else None
    info = {"cpu": cpu, "cpu_count": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "numpy": np.__version__, "gcc": gcc, "valgrind": vg, "host_cflags_engine": "-std=c99 -O3 -fPIC "
            "-fno-strict-aliasing (compiler/codegen/native.py)", "host_cflags_callgrind": " ".join(CFLAGS)}
    try:
        import torch

        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                    torch_interop_threads=torch.get_num_interop_threads())
    except ImportError:
        info.update(torch=None)
    try:
        info["loadavg"] = list(os.getloadavg())
    except OSError:
        pass
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="JSON file (default bench/results/speed.json; --quick: none)")
    ap.add_argument("--quick", action="store_true", help="smoke run: example model, sparse only, few steps")
    ap.add_argument("--no-mobilenet", action="store_true")
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--min-seconds", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--mnv2-small", type=int, default=64, help="MobileNetV2 resolution for the numpy engine")
    ap.add_argument("--mnv2-max-steps", type=int, default=120,
                    help="cap of N on the small MobileNetV2 row (numpy runs N steps too)")
    a = ap.parse_args()
    out_path = a.out if a.out is not None else (None if a.quick else str(ROOT / "bench" / "results" / "speed.json"))
    t_all = time.perf_counter()
    try:
        import torch

        torch.set_num_threads(1)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
    except ImportError:
        pass

    from microtrain.host.data import load_data

    g = load_model(str(ROOT / "examples" / "digits_cnn.onnx"))
    q = quantize_graph(g, load_data("digits-clean", g).x_train[:64])
    task = load_data("digits", g)
    xs, ys = task.x_train[:NSAMPLES].astype(np.float32), np.asarray(task.y_train[:NSAMPLES], np.int64)

    tmp = tempfile.TemporaryDirectory(prefix="mt-speed-")
    cg = None
    if not a.no_callgrind and shutil.which("valgrind"):
        cg = Callgrind(Path(tmp.name))
    common = dict(engines=ENGINES, rounds=1 if a.quick else a.rounds, cg=cg)
    example = {}
    kinds = ["sparse"] if a.quick else list(EXAMPLE_SCHEDULES)
    for k in kinds:
        _log(f"example model, {k} ...")
        example[k] = bench_row(f"digits_{k}", g, q, EXAMPLE_SCHEDULES[k], xs, ys, remedy="master",
                               min_seconds=a.min_seconds, warmup=5 if a.quick else 30,
                               cg_steps=5 if a.quick else 50, fixed_steps=10 if a.quick else None, **common)
        r = example[k]
        _log(f"  c {r['steps_per_s']['c']}/s, numpy {r['steps_per_s']['numpy']}/s, torch {r['steps_per_s']['torch']}/s"
             f"  instr/step {(r['instructions'] or {}).get('instructions_per_step')}")

    out = {"benchmark": "training-step speed: C engine vs numpy engine vs PyTorch eager, side by side",
           "machine": machine_info(), "quick": a.quick,
           "method": {"timing": f"same {NSAMPLES} samples cycled, same N steps per engine, warm-up excluded, "
                                f"{common['rounds']} interleaved rounds, N = ceil(1.25 x min_seconds x fastest "
                                f"engine's rate measured after the warm-up); min_seconds {a.min_seconds}",
                      "torch": "float IR graph (BatchNorm folded) as eager torch ops, NCHW, batch 1, "
                               "torch.set_num_threads(1), SGD lr 1e-3; requires_grad only on the trained "
                               "tensors; partial weights: whole tensor, gradient of untrained rows zeroed "
                               "before optimizer.step(); fg layers: sign-m-SPSA under no_grad",
                      "numpy": "compiler/train_int.py Int8Trainer.step (frozen prefix recomputed every step)",
                      "c": "compiler/codegen/native.py NativeTrainer.step (ctypes call of mt_train_step; "
                           "host gcc -O3 build)",
                      "macs": macs_per_step.__doc__.strip() + " Rules: see bench/speed.py module doc.",
                      "instructions": "valgrind --tool=callgrind --toggle-collect=mt_train_step on "
                                      "bench/native_step_main.c + mt_model.c + firmware kernels, gcc "
                                      + " ".join(CFLAGS) + ", x86-64; pseudo-random int8 samples",
                      "qemu": None, "qemu_note": "Cortex-M instruction/cycle counts under QEMU come later"},
           "example_model": {"model": "examples/digits_cnn.onnx (PTQ int8, 64 clean digits calibration samples)",
                             "rows": example}}
    sp = example["sparse"]
    out["acceptance"] = {
        "example_sparse_c_over_torch": sp["ratios"]["c_over_torch"],
        "example_sparse_c_over_numpy": sp["ratios"]["c_over_numpy"],
        "c_at_least_5x_torch": None if sp["ratios"]["c_over_torch"] is None else sp["ratios"]["c_over_torch"] >= 5,
        "c_at_least_20x_numpy": sp["ratios"]["c_over_numpy"] >= 20 if sp["ratios"]["c_over_numpy"] else None,
    }

    if not a.quick and not a.no_mobilenet:
        from models.mobilenetv2 import build_mobilenetv2_onnx

        mnv2 = {}
        for res, engines, note in ((128, ("c", "torch"), "numpy engine not run at 128x128 (seconds per step); "
                                    "see the small-resolution row"),
                                   (a.mnv2_small, ENGINES, None)):
            _log(f"MobileNetV2-w0.35 {res}x{res} ...")
            with tempfile.TemporaryDirectory() as d:
                mg = load_model(str(build_mobilenetv2_onnx(Path(d) / "mnv2.onnx", resolution=res)))
            rng = np.random.default_rng(0)
            mq = quantize_graph(mg, rng.standard_normal((8, 3, res, res)).astype(np.float32))
            mx = rng.standard_normal((NSAMPLES, 3, res, res)).astype(np.float32)
            my = rng.integers(0, 10, NSAMPLES)
            r = bench_row(f"mnv2_{res}", mg, mq, Schedule("sparse", **MIT_SCHEME), mx, my, engines=engines,
                          remedy="stochastic", min_seconds=a.min_seconds, rounds=a.rounds, warmup=3,
                          cg=cg if res == 128 else None, cg_steps=2,
                          max_steps=a.mnv2_max_steps if "numpy" in engines else None, resolution=res)
            if note:
                r["notes"]["numpy"] = note
            mnv2[f"w035_{res}"] = r
            _log(f"  c {r['steps_per_s']['c']}/s, numpy {r['steps_per_s']['numpy']}/s, torch {r['steps_per_s']['torch']}/s"
                 f"  instr/step {(r['instructions'] or {}).get('instructions_per_step')}")
        out["mobilenetv2"] = {"model": "MobileNetV2 w0.35, 10 classes (tests/models/mobilenetv2.py), PTQ on 8 "
                                       "N(0,1) images; MIT sparse scheme, stochastic rounding",
                              "rows": mnv2}
    tmp.cleanup()
    out["seconds"] = round(time.perf_counter() - t_all, 1)
    text = json.dumps(out, indent=2)
    print(text)
    if out_path:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        Path(out_path).write_text(text + "\n")


if __name__ == "__main__":
    main()
