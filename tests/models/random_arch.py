"""Random small CNN architectures for differential testing (C code generator vs. the numpy engine).

    random_spec(seed) -> ArchSpec            deterministic (``random.Random(seed)``), no hypothesis
    arch_strategy()   -> hypothesis strategy of ArchSpec (structural choices drawn, so it shrinks)
    build(spec, path) -> path                float ONNX model (opset 13, input "input" [N, C, H, W],
                                             output "logits" [N, classes]), like examples/digits_cnn.onnx
    quantized(spec)   -> (qgraph, x_train, y_train)
                                             int8 IR graph (microtrain frontend + quantize_graph on
                                             seeded calibration data), float32 samples [N, C, H, W]
                                             in the model's (NCHW) input layout, int64 labels
    SCHEDULES                                (id, Schedule kwargs, Int8Trainer kwargs) valid for every
                                             generated architecture (at least 2 conv/fc layers)
    also: to_onnx(spec) -> ModelProto, float_graph(spec) -> float IR, samples(spec, n, stream),
          is_live(spec), ArchSpec.features() / .describe() / .macs / .num_linear

Layer vocabulary (``LayerSpec.kind``):

  conv     Conv k 1|3, stride 1|2, pad same|valid, act none|relu|relu6, optional bias
  pw       pointwise 1x1 Conv (stride 1)
  dw       depthwise Conv k3 (group = C), multiplier 1|2, stride 1|2, pad same|valid
  block    inverted residual: pw (expand, act) -> dw (act, stride) -> pw (project, no act)
           [+ skip Add when stride 1 and cin == cout], optional ReLU after the Add
  fork     two parallel branches of the same input, conv 3x3 (same) and conv 1x1, equal output
           shape (stride 1|2), summed by Add (optional ReLU/ReLU6 after, fused into the add)
  maxpool  MaxPool 2x2 stride 2            avgpool  AveragePool 2x2 stride 2
  gap      GlobalAveragePool + Flatten      flatten  Flatten (or Reshape [0, -1])
  fc       Gemm (transB=1): hidden (act none|relu|relu6) and the final one (act none) -> logits

Every architecture is: 1-4 body layers (the first not a pool), gap|flatten, 0-1 hidden fc, the
final fc (4-10 classes). At least two conv/fc layers; total MACs < MAX_MACS (~12k on average).
The final fc is rescaled so the float logits spread ``logit_std`` (0.3-4) nats, and a draw whose
float model is dead (logits independent of the input) is redrawn (random_spec) or filtered out
(arch_strategy).

Quantization parameters vary per seed: per-layer weight magnitudes (He init times a random
factor, and a random spread of the per-channel scales), bias magnitudes (including none), the
input distribution (offset normal or asymmetric uniform, so the input zero point moves),
per-channel or per-tensor weights, minmax or percentile calibration.

Frontend limits respected (see compiler/frontend/onnx_reader.py): no grouped conv other than
depthwise, no Concat, no ReduceMean (GlobalAveragePool instead), Gemm needs a 2-D input, Clip only
as ReLU/ReLU6. A conv without bias still gets a zero bias tensor in the IR.
"""
from __future__ import annotations

import os
import random
import tempfile
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

#: conservative budget of multiply-accumulates per inference of a generated model
MAX_MACS = 150_000
#: per-layer kinds (spec level) and the feature tags of :meth:`ArchSpec.features`
BODY_KINDS = ("conv", "pw", "dw", "block", "fork", "maxpool", "avgpool")
HEAD_KINDS = ("gap", "flatten")
FEATURES = ("conv1x1", "conv3x3", "conv_stride2", "conv_valid", "pw", "dw", "dw_m2", "dw_stride2", "dw_valid",
            "block", "block_residual", "fork", "add", "maxpool", "avgpool", "gap", "flatten", "reshape_flatten",
            "fc_hidden", "fc_final", "relu", "relu6", "no_bias", "per_tensor", "percentile", "non_square")
#: IR ops every large enough set of seeds must produce
IR_OPS = ("conv2d", "depthwise_conv2d", "fully_connected", "add", "max_pool2d", "avg_pool2d", "mean", "reshape")

N_TRAIN = 24
N_CALIB = 32


# ---------------------------------------------------------------------------------------------
# spec
# ---------------------------------------------------------------------------------------------
@dataclass
class LayerSpec:
    """One layer (or block) of the body/head; fields not used by ``kind`` keep their defaults.

    ``wscale``: factor on the He-normal weights of the layer; ``spread``: per-output-channel scale
    factors are ``10 ** U(-spread, spread)``; ``bscale``: std of the bias (0 with ``bias=False``)."""

    kind: str
    cout: int = 0
    k: int = 1
    stride: int = 1
    pad: str = "same"  # "same" | "valid"
    act: str = "none"  # "none" | "relu" | "relu6"
    bias: bool = True
    mult: int = 1  # depthwise channel multiplier
    hidden: int = 0  # block: expanded channels
    skip: bool = False  # block: residual Add
    post_act: str = "none"  # block/fork: activation after the Add
    reshape: bool = False  # flatten/gap: Reshape [0, -1] instead of Flatten
    wscale: float = 1.0
    spread: float = 0.0
    bscale: float = 0.1


@dataclass
class ArchSpec:
    layers: list[LayerSpec]
    input_shape: tuple[int, int, int]  # (C, H, W)
    num_classes: int
    seed: int
    input_dist: str = "normal"  # "normal" (mean, std) | "uniform" (lo, hi)
    input_a: float = 0.0
    input_b: float = 1.0
    per_channel: bool = True
    calib_method: str = "minmax"  # "minmax" | "percentile"
    logit_std: float = 1.0  # the final fc is rescaled so the float logits (centred per sample) have this std

    # ---- queries ----
    def shapes(self) -> list[tuple[int, ...]]:
        """Activation shape after each layer (C, H, W) or (F,) — the input shape first."""
        out = [tuple(self.input_shape)]
        for ls in self.layers:
            out.append(_out_shape(ls, out[-1]))
        return out

    @property
    def macs(self) -> int:
        shapes = self.shapes()
        return sum(_macs(ls, s) for ls, s in zip(self.layers, shapes))

    @property
    def num_linear(self) -> int:
        """Number of conv/fc layers of the IR graph (the schedule's layer count)."""
        n = 0
        for ls in self.layers:
            n += {"conv": 1, "pw": 1, "dw": 1, "fc": 1, "fork": 2}.get(ls.kind, 0)
            if ls.kind == "block":
                n += 3
        return n

    def features(self) -> set[str]:
        f: set[str] = set()
        shapes = self.shapes()
        fcs = [i for i, ls in enumerate(self.layers) if ls.kind == "fc"]
        for i, (ls, s) in enumerate(zip(self.layers, shapes)):
            k = ls.kind
            if k == "conv":
                f.add(f"conv{ls.k}x{ls.k}")
                if ls.stride == 2:
                    f.add("conv_stride2")
                if ls.pad == "valid" and ls.k > 1:
                    f.add("conv_valid")
            elif k == "pw":
                f.add("pw")
            elif k == "dw":
                f.add("dw")
                if ls.mult == 2:
                    f.add("dw_m2")
                if ls.stride == 2:
                    f.add("dw_stride2")
                if ls.pad == "valid":
                    f.add("dw_valid")
            elif k == "block":
                f.update(("block", "pw", "dw"))
                if ls.stride == 2:
                    f.add("dw_stride2")
                if ls.skip:
                    f.update(("block_residual", "add"))
            elif k == "fork":
                f.update(("fork", "add", "conv3x3", "conv1x1"))
            elif k in ("maxpool", "avgpool", "gap", "flatten"):
                f.add(k)
                if ls.reshape:
                    f.add("reshape_flatten")
            elif k == "fc":
                f.add("fc_final" if i == fcs[-1] else "fc_hidden")
            for a in (ls.act, ls.post_act):
                if a != "none":
                    f.add(a)
            if k in ("conv", "pw", "dw", "fc", "block", "fork") and not ls.bias:
                f.add("no_bias")
        if not self.per_channel:
            f.add("per_tensor")
        if self.calib_method == "percentile":
            f.add("percentile")
        if self.input_shape[1] != self.input_shape[2]:
            f.add("non_square")
        return f

    def describe(self) -> str:
        parts = []
        for ls in self.layers:
            k = ls.kind
            if k in ("conv", "pw"):
                parts.append(f"{k}{ls.k}x{ls.k}/{ls.stride}{'v' if ls.pad == 'valid' and ls.k > 1 else ''}"
                             f"->{ls.cout}{_act_txt(ls.act)}{'' if ls.bias else ' nb'}")
            elif k == "dw":
                parts.append(f"dw3x3/{ls.stride}{'v' if ls.pad == 'valid' else ''} m{ls.mult}{_act_txt(ls.act)}"
                             f"{'' if ls.bias else ' nb'}")
            elif k == "block":
                parts.append(f"block(h{ls.hidden} /{ls.stride} ->{ls.cout}{' +skip' if ls.skip else ''}"
                             f"{_act_txt(ls.post_act)})")
            elif k == "fork":
                parts.append(f"fork(3x3|1x1 /{ls.stride} ->{ls.cout}{_act_txt(ls.post_act)})")
            elif k == "fc":
                parts.append(f"fc{ls.cout}{_act_txt(ls.act)}{'' if ls.bias else ' nb'}")
            else:
                parts.append(k + (" (reshape)" if ls.reshape else ""))
        c, h, w = self.input_shape
        return (f"seed {self.seed}: {c}x{h}x{w} {self.input_dist}({self.input_a:.2g},{self.input_b:.2g}) | "
                + " | ".join(parts) + f" | {self.macs} MACs, {'per-channel' if self.per_channel else 'per-tensor'}"
                f" {self.calib_method}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _act_txt(a: str) -> str:
    return "" if a == "none" else f" {a}"


def _conv_out(n: int, k: int, s: int, pad: str) -> int:
    if pad == "same":
        return -(-n // s)
    return (n - k) // s + 1


def _out_shape(ls: LayerSpec, s: tuple[int, ...]) -> tuple[int, ...]:
    k = ls.kind
    if k == "fc":
        return (ls.cout,)
    c, h, w = s
    if k in ("conv", "pw", "fork"):
        kk = 3 if k == "fork" else ls.k
        pad = "same" if k == "fork" else ls.pad
        return (ls.cout, _conv_out(h, kk, ls.stride, pad), _conv_out(w, kk, ls.stride, pad))
    if k == "dw":
        return (c * ls.mult, _conv_out(h, 3, ls.stride, ls.pad), _conv_out(w, 3, ls.stride, ls.pad))
    if k == "block":
        return (ls.cout, _conv_out(h, 3, ls.stride, "same"), _conv_out(w, 3, ls.stride, "same"))
    if k in ("maxpool", "avgpool"):
        return (c, h // 2, w // 2)
    if k == "gap":
        return (c,)
    if k == "flatten":
        return (c * h * w,)
    raise ValueError(k)


def _macs(ls: LayerSpec, s: tuple[int, ...]) -> int:
    o = _out_shape(ls, s)
    k = ls.kind
    if k == "fc":
        return s[0] * ls.cout
    if k in ("conv", "pw"):
        return o[0] * o[1] * o[2] * ls.k * ls.k * s[0]
    if k == "dw":
        return o[0] * o[1] * o[2] * 9
    if k == "fork":
        return o[0] * o[1] * o[2] * s[0] * (9 + 1)
    if k == "block":
        c, h, w = s
        return h * w * ls.hidden * c + o[1] * o[2] * ls.hidden * 9 + o[1] * o[2] * ls.hidden * ls.cout
    return 0


# ---------------------------------------------------------------------------------------------
# generation (one code path for random.Random and hypothesis draws)
# ---------------------------------------------------------------------------------------------
class _Chooser:
    def __init__(self, choice: Callable[[Sequence], Any], randint: Callable[[int, int], int],
                 uniform: Callable[[float, float], float]):
        self.choice, self.randint, self.uniform = choice, randint, uniform

    def chance(self, p: float) -> bool:
        return self.uniform(0.0, 1.0) < p

    def weighted(self, options: Sequence[tuple[Any, float]]) -> Any:
        """One of ``options`` (value, weight) by weight."""
        total = sum(w for _, w in options)
        r = self.uniform(0.0, total)
        for v, w in options:
            if r < w:
                return v
            r -= w
        return options[-1][0]


def _rand_chooser(seed: int | str) -> _Chooser:
    r = random.Random(seed)
    return _Chooser(lambda seq: seq[r.randrange(len(seq))], r.randint, r.uniform)


def _act(ch: _Chooser) -> str:
    return ch.weighted((("relu", 0.45), ("relu6", 0.3), ("none", 0.25)))


def _params(ch: _Chooser, ls: LayerSpec, allow_no_bias: bool = True) -> LayerSpec:
    ls.wscale = 10 ** ch.uniform(-0.8, 0.4)
    ls.spread = ch.choice((0.0, 0.3, 0.8))
    ls.bias = not (allow_no_bias and ch.chance(0.2))
    ls.bscale = ch.choice((0.02, 0.2, 1.0)) if ls.bias else 0.0
    return ls


def _body_layer(ch: _Chooser, shape: tuple[int, int, int], first: bool, prev: str | None,
                budget: int) -> LayerSpec | None:
    c, h, w = shape
    small = min(h, w)
    kinds: list[tuple[str, float]] = [("conv", 3.0), ("pw", 1.5), ("block", 1.5), ("fork", 1.5)]
    if c >= 2:
        kinds.append(("dw", 2.5))
    if not first and small >= 4 and prev not in ("maxpool", "avgpool"):
        kinds += [("maxpool", 2.0), ("avgpool", 2.0)]
    kind = ch.weighted(kinds)
    stride2_ok = small >= 4
    if kind in ("maxpool", "avgpool"):
        return LayerSpec(kind)
    if kind == "conv":
        k = ch.choice((1, 3, 3))
        ls = LayerSpec("conv", cout=ch.randint(2, 12), k=k, stride=2 if stride2_ok and ch.chance(0.35) else 1,
                       pad="valid" if k == 3 and small >= 5 and ch.chance(0.4) else "same", act=_act(ch))
    elif kind == "pw":
        ls = LayerSpec("pw", cout=ch.randint(2, 12), k=1, act=_act(ch))
    elif kind == "dw":
        ls = LayerSpec("dw", k=3, mult=2 if c <= 8 and ch.chance(0.5) else 1,
                       stride=2 if stride2_ok and ch.chance(0.35) else 1,
                       pad="valid" if small >= 5 and ch.chance(0.4) else "same", act=_act(ch))
    elif kind == "block":
        stride = 2 if stride2_ok and ch.chance(0.3) else 1
        cout = c if stride == 1 and ch.chance(0.7) else ch.randint(2, 10)
        ls = LayerSpec("block", cout=cout, hidden=ch.randint(max(2, c), max(4, min(16, 3 * c))), stride=stride,
                       act=ch.choice(("relu", "relu6")), skip=stride == 1 and cout == c,
                       post_act="none")
        if ls.skip and ch.chance(0.3):
            ls.post_act = "relu"
    else:  # fork
        ls = LayerSpec("fork", cout=ch.randint(2, 10), stride=2 if stride2_ok and ch.chance(0.3) else 1,
                       post_act=ch.choice(("relu", "none", "relu6")))
    _params(ch, ls)
    if _macs(ls, shape) > budget and ls.kind in ("conv", "pw", "fork", "block"):  # too expensive: shrink
        if not ls.skip:
            ls.cout = 2
        if ls.kind == "block":
            ls.hidden = 2
    return ls if _macs(ls, shape) <= budget else None


def _generate(ch: _Chooser, seed: int) -> ArchSpec:
    c = ch.choice((1, 1, 2, 3))
    h = ch.randint(6, 12)
    w = h if ch.chance(0.7) else ch.randint(6, 12)
    classes = ch.randint(4, 10)
    spec = ArchSpec([], (c, h, w), classes, int(seed))
    budget = MAX_MACS
    shape: tuple[int, ...] = (c, h, w)
    n_body = ch.randint(1, 4)
    prev = None
    for i in range(n_body):
        ls = _body_layer(ch, shape, i == 0, prev, budget - 4000)  # head reserve
        if ls is None:
            if i == 0:  # a cheap first layer always fits
                ls = _params(ch, LayerSpec("pw", cout=2, k=1, act="relu"))
            else:
                break
        spec.layers.append(ls)
        budget -= _macs(ls, shape)
        shape = _out_shape(ls, shape)
        prev = ls.kind
    # head: gap | flatten, 0-1 hidden fc, final fc (the body left >= 4000 MACs for it)
    feats = shape[0] * shape[1] * shape[2]
    flat_ok = feats <= 600 and feats * classes <= budget
    head = "flatten" if flat_ok and ch.chance(0.5) else "gap"
    spec.layers.append(LayerSpec(head, reshape=ch.chance(0.4)))
    shape = _out_shape(spec.layers[-1], shape)
    if ch.chance(0.5):
        hidden = ch.randint(6, 24)
        while hidden > 4 and shape[0] * hidden + hidden * classes > budget:
            hidden //= 2
        if shape[0] * hidden + hidden * classes <= budget:
            spec.layers.append(_params(ch, LayerSpec("fc", cout=hidden, act=_act(ch))))
            shape = (hidden,)
    spec.layers.append(_params(ch, LayerSpec("fc", cout=classes, act="none")))

    spec.input_dist = ch.choice(("normal", "uniform"))
    if spec.input_dist == "normal":
        spec.input_a, spec.input_b = ch.uniform(-1.0, 1.0), 10 ** ch.uniform(-0.7, 0.5)  # mean, std
    else:
        lo = ch.uniform(-2.0, 0.5)
        spec.input_a, spec.input_b = lo, lo + 10 ** ch.uniform(-0.5, 0.6)
    spec.logit_std = 10 ** ch.uniform(-0.5, 0.6)
    spec.per_channel = not ch.chance(0.3)
    spec.calib_method = "percentile" if ch.chance(0.3) else "minmax"
    assert spec.num_linear >= 2 and spec.macs < MAX_MACS, spec.describe()
    return spec


def random_spec(seed: int) -> ArchSpec:
    """The architecture of ``seed`` (deterministic, plain ``random.Random``). A draw whose float
    model is dead (logits independent of the input, e.g. every ReLU of a layer off) is redrawn
    from ``random.Random(f"{seed}/{attempt}")``; the weights always come from ``seed``."""
    spec = _generate(_rand_chooser(seed), seed)
    for attempt in range(1, 16):
        if is_live(spec):
            break
        spec = _generate(_rand_chooser(f"{seed}/{attempt}"), seed)
    return spec


def arch_strategy():
    """A hypothesis strategy of :class:`ArchSpec`: every structural choice is a draw (shrinks
    towards the first options and small sizes), the weights come from a drawn seed."""
    from hypothesis import strategies as st

    @st.composite
    def _arch(draw):
        ch = _Chooser(lambda seq: draw(st.sampled_from(list(seq))),
                      lambda a, b: draw(st.integers(a, b)),
                      lambda a, b: draw(st.floats(a, b, allow_nan=False, allow_infinity=False,
                                                  exclude_max=b > a)))
        seed = draw(st.integers(0, 2**31 - 1))
        return _generate(ch, seed)

    return _arch().filter(is_live)


# ---------------------------------------------------------------------------------------------
# ONNX
# ---------------------------------------------------------------------------------------------
class _Emitter:
    def __init__(self, spec: ArchSpec):
        self.spec = spec
        self.nodes: list = []
        self.inits: list = []
        self.n = 0
        self.clip_consts = False

    def name(self, base: str) -> str:
        self.n += 1
        return f"{base}{self.n}"

    def init(self, name: str, arr: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        from onnx import helper

        nm = self.name(f"/{op.lower()}_")
        out = f"{nm}_output_0"
        self.nodes.append(helper.make_node(op, inputs, [out], name=nm, **attrs))
        return out

    def act(self, x: str, act: str) -> str:
        if act == "relu":
            return self.node("Relu", [x])
        if act == "relu6":
            if not self.clip_consts:
                self.init("clip_min", np.array(0.0, np.float32))
                self.init("clip_max", np.array(6.0, np.float32))
                self.clip_consts = True
            return self.node("Clip", [x, "clip_min", "clip_max"])
        return x

    def conv(self, x: str, rng: np.random.Generator, ls: LayerSpec, cin: int, hw: tuple[int, int], cout: int,
             k: int, stride: int, pad: str, group: int = 1, act: str = "none") -> str:
        cg = cin // group
        fan_in = cg * k * k
        w = rng.standard_normal((cout, cg, k, k)) * np.sqrt(2.0 / fan_in) * ls.wscale
        w *= (10 ** rng.uniform(-ls.spread, ls.spread, cout)).reshape(cout, 1, 1, 1)
        tag = self.name("conv")
        ins = [x, self.init(f"{tag}.weight", w.astype(np.float32))]
        if ls.bias:
            ins.append(self.init(f"{tag}.bias", (rng.standard_normal(cout) * ls.bscale).astype(np.float32)))
        if pad == "same":
            pads = []
            for n in hw:
                out = -(-n // stride)
                total = max(0, (out - 1) * stride + k - n)
                pads.append((total // 2, total - total // 2))  # SAME_UPPER split
            pads_attr = [pads[0][0], pads[1][0], pads[0][1], pads[1][1]]
        else:
            pads_attr = [0, 0, 0, 0]
        y = self.node("Conv", ins, kernel_shape=[k, k], strides=[stride, stride], pads=pads_attr,
                      dilations=[1, 1], group=group)
        return self.act(y, act)

    def fc(self, x: str, rng: np.random.Generator, ls: LayerSpec, fin: int) -> str:
        w = rng.standard_normal((ls.cout, fin)) * np.sqrt(2.0 / fin) * ls.wscale
        w *= (10 ** rng.uniform(-ls.spread, ls.spread, ls.cout)).reshape(-1, 1)
        tag = self.name("fc")
        ins = [x, self.init(f"{tag}.weight", w.astype(np.float32))]
        if ls.bias:
            ins.append(self.init(f"{tag}.bias", (rng.standard_normal(ls.cout) * ls.bscale).astype(np.float32)))
        y = self.node("Gemm", ins, alpha=1.0, beta=1.0, transB=1)
        return self.act(y, ls.act)

    def flatten(self, x: str, reshape: bool) -> str:
        if reshape:
            return self.node("Reshape", [x, self.init(self.name("shape"), np.array([0, -1], np.int64))])
        return self.node("Flatten", [x], axis=1)


def to_onnx(spec: ArchSpec, normalize: bool = True):
    """The float ONNX model of ``spec`` (an ``onnx.ModelProto``, checked); ``normalize``: final fc
    rescaled to the spec's logit spread."""
    from .onnx_helpers import make_model

    e = _Emitter(spec)
    x = "input"
    shapes = spec.shapes()
    for i, (ls, s) in enumerate(zip(spec.layers, shapes)):
        rng = np.random.default_rng([spec.seed & 0xFFFFFFFF, i])
        k = ls.kind
        if k in ("conv", "pw"):
            x = e.conv(x, rng, ls, s[0], s[1:], ls.cout, ls.k, ls.stride, ls.pad, act=ls.act)
        elif k == "dw":
            x = e.conv(x, rng, ls, s[0], s[1:], s[0] * ls.mult, 3, ls.stride, ls.pad, group=s[0], act=ls.act)
        elif k == "block":
            y = e.conv(x, rng, ls, s[0], s[1:], ls.hidden, 1, 1, "same", act=ls.act)
            y = e.conv(y, rng, ls, ls.hidden, s[1:], ls.hidden, 3, ls.stride, "same", group=ls.hidden, act=ls.act)
            o = _out_shape(ls, s)
            y = e.conv(y, rng, ls, ls.hidden, o[1:], ls.cout, 1, 1, "same")
            if ls.skip:
                y = e.act(e.node("Add", [x, y]), ls.post_act)
            x = y
        elif k == "fork":
            a = e.conv(x, rng, ls, s[0], s[1:], ls.cout, 3, ls.stride, "same")
            b = e.conv(x, rng, ls, s[0], s[1:], ls.cout, 1, ls.stride, "same")
            x = e.act(e.node("Add", [a, b] if rng.random() < 0.5 else [b, a]), ls.post_act)
        elif k == "maxpool":
            x = e.node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2])
        elif k == "avgpool":
            x = e.node("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
        elif k == "gap":
            x = e.flatten(e.node("GlobalAveragePool", [x]), ls.reshape)
        elif k == "flatten":
            x = e.flatten(x, ls.reshape)
        elif k == "fc":
            x = e.fc(x, rng, ls, s[0])
        else:
            raise ValueError(f"unknown layer kind {k!r}")
    # the final Gemm writes "logits" directly
    last = e.nodes[-1]
    assert last.op_type == "Gemm", last.op_type
    last.output[0] = "logits"
    c, h, w = spec.input_shape
    model = make_model(e.nodes, [("input", ["N", c, h, w])], [("logits", ["N", spec.num_classes])], e.inits,
                       opset=13, name=f"random_arch_{spec.seed}")
    return _normalize_logits(model, spec, list(last.input[1:])) if normalize else model


def _float_logits(model, spec: ArchSpec, n: int = N_CALIB) -> np.ndarray:
    """Float logits of ``model`` on the first ``n`` calibration samples (onnx's reference evaluator,
    independent of microtrain)."""
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(model).run(None, {"input": samples(spec, N_CALIB, 0)[:n]})[0].astype(np.float64)


def _normalize_logits(model, spec: ArchSpec, params: list[str]):
    """Rescale the final Gemm's weight and bias (``params``) so the float logits on the
    calibration samples, centred per sample, have std ``spec.logit_std`` (random deep nets give
    logits spread over hundreds of nats, where the integer loss saturates at 31)."""
    from onnx import numpy_helper

    z = _float_logits(model, spec)
    std = float((z - z.mean(axis=1, keepdims=True)).std())
    if not (np.isfinite(std) and std > 1e-6):
        return model
    f = spec.logit_std / std
    for t in model.graph.initializer:
        if t.name in params:
            t.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(t) * f).astype(np.float32), t.name))
    return model


def is_live(spec: ArchSpec) -> bool:
    """True when the float logits depend on the input: some logit varies across the calibration
    samples by more than 1e-4 of the logits' spread. A dead model (every unit of some layer
    switched off by its ReLU) makes forward-gradient losses tie and trains nothing."""
    z = _float_logits(to_onnx(spec, normalize=False), spec, 16)
    var = float(z.std(axis=0).max())
    return bool(np.isfinite(var) and var > 1e-4 * (float(np.abs(z - z.mean()).max()) + 1e-6))


def build(spec: ArchSpec, path) -> str:
    """Write the float ONNX model of ``spec`` to ``path``; returns the path."""
    import onnx

    path = os.fspath(path)
    onnx.save(to_onnx(spec), path)
    return path


# ---------------------------------------------------------------------------------------------
# data and quantization
# ---------------------------------------------------------------------------------------------
def samples(spec: ArchSpec, n: int, stream: int) -> np.ndarray:
    """``n`` float32 samples [n, C, H, W] from the spec's input distribution (``stream`` picks an
    independent sequence: 0 calibration, 1 training)."""
    rng = np.random.default_rng([spec.seed & 0xFFFFFFFF, 1000 + stream])
    shape = (n,) + tuple(spec.input_shape)
    if spec.input_dist == "normal":
        x = spec.input_a + spec.input_b * rng.standard_normal(shape)
    else:
        x = rng.uniform(spec.input_a, spec.input_b, shape)
    return x.astype(np.float32)


def float_graph(spec: ArchSpec):
    """The spec's float IR graph, read by microtrain's frontend from the built ONNX file."""
    from microtrain.compiler.frontend import load_model

    with tempfile.TemporaryDirectory(prefix="random_arch_") as d:
        return load_model(build(spec, os.path.join(d, f"arch_{spec.seed}.onnx")))


def quantized(spec: ArchSpec, n_train: int = N_TRAIN):
    """(int8 graph, float32 training samples [n, C, H, W], int64 labels [n]).

    The float model is read by the frontend and PTQ'd on ``N_CALIB`` samples of the spec's input
    distribution. Labels are those of a random linear teacher on the samples (learnable, every
    class reachable), not the model's own predictions."""
    from microtrain.compiler.quantize import quantize_graph

    fg = float_graph(spec)
    q = quantize_graph(fg, samples(spec, N_CALIB, 0), method=spec.calib_method, per_channel=spec.per_channel)
    x = samples(spec, n_train, 1)
    rng = np.random.default_rng([spec.seed & 0xFFFFFFFF, 2000])
    teacher = rng.standard_normal((x[0].size, spec.num_classes))
    feats = x.reshape(n_train, -1)
    y = np.argmax((feats - feats.mean(0)) @ teacher, axis=1).astype(np.int64)
    return q, x, y


# ---------------------------------------------------------------------------------------------
# schedules valid on every generated architecture (>= 2 conv/fc layers)
# ---------------------------------------------------------------------------------------------
def _schedules():
    from microtrain.compiler.schedule import FGOptions

    fg2 = FGOptions(m=2, batch=2)
    bp = dict(lr=0.05, seed=7)
    fgk = dict(lr=0.05, fg_lr=0.05, seed=7)
    return [
        ("sparse-master-int8", dict(kind="sparse", bias_last=2, update={-1: 1.0, 0: 0.5}),
         dict(bp, remedy="master", loss_input="int8")),
        ("sparse-stochastic-acc", dict(kind="sparse", bias_last="all", update={-1: 0.5, -2: 0.25}),
         dict(bp, remedy="stochastic", loss_input="acc")),
        ("sparse-default-momentum", dict(kind="sparse"),
         dict(bp, remedy="stochastic", loss_input="int8", momentum=0.9)),
        ("bias-master-acc", dict(kind="bias"), dict(bp, remedy="master", loss_input="acc")),
        ("bias2-stochastic-int8", dict(kind="bias", bias_last=2), dict(bp, remedy="stochastic", loss_input="int8")),
        ("lastk2-master-int8", dict(kind="last-k", last=2), dict(bp, remedy="master", loss_input="int8")),
        ("lastk2-stochastic-acc", dict(kind="last-k", last=2), dict(bp, remedy="stochastic", loss_input="acc")),
        ("full-stochastic-int8", dict(kind="full"), dict(bp, remedy="stochastic", loss_input="int8")),
        ("fg-default", dict(kind="fg", fg=fg2), dict(fgk, remedy="master", loss_input="acc")),
        ("fg-rows", dict(kind="fg", bias_last=1, update={0: 0.5, -1: 1.0}, fg=fg2),
         dict(fgk, remedy="stochastic", loss_input="int8")),
        ("hybrid-stochastic-int8", dict(kind="hybrid", fg=fg2), dict(fgk, remedy="stochastic", loss_input="int8")),
        ("hybrid-master-acc", dict(kind="hybrid", bias_last="all", update={0: 0.5}, fg=fg2),
         dict(fgk, remedy="master", loss_input="acc")),
    ]


#: (id, Schedule kwargs incl. "kind", Int8Trainer kwargs): ``Schedule(**skw)``,
#: ``Int8Trainer(qgraph, Schedule(**skw), **tkw)``; valid for every architecture of this module.
SCHEDULES = _schedules()
