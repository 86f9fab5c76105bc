"""Post-training quantization (PTQ): a float32 IR graph + calibration samples -> an int8 IR graph.

The result follows the TFLite int8 quantization spec (what TFLM and CMSIS-NN run):
  * weights of conv2d / fully_connected: int8 symmetric per output channel (axis 0), range
    [-127, 127], ``s_w[c] = max|w[c]| / 127``; depthwise_conv2d the same along axis 3;
    ``per_channel=False`` gives one scale per tensor instead;
  * biases: int32 at scale ``s_in * s_w[c]`` (float32 product), ``b_q = round(b / (s_in * s_w[c]))``;
  * activations: int8 asymmetric per tensor. The calibrated real range ``[lo, hi]`` is widened to
    contain 0, ``s = (hi - lo) / 255`` and ``zp = round(-128 - lo / s)`` clamped to [-128, 127],
    so real 0 is exactly representable (zero padding, ReLU floors);
  * a fused activation is observed after it is applied (the float reference applies it), so a
    ReLU-fused output gets ``lo = 0`` and ``zp = -128``;
  * max_pool2d, avg_pool2d, reshape and pad outputs reuse their input's parameters (TFLite requires
    it: those int8 kernels move values without requantizing);
  * softmax outputs are fixed at scale 1/256, zero point -128 (TFLite's int8 softmax contract).

Calibration runs the float reference interpreter over the samples, batch by batch, and observes
every activation tensor: ``method="minmax"`` takes the observed extremes, ``method="percentile"``
the ``100 - p`` and ``p`` percentiles (``p = percentile``) of the observed values.

Graph boundary (``io``): ``"float"`` keeps float32 graph inputs/outputs and adds a ``quantize``
node after each input and a ``dequantize`` node before each output (the names of the graph inputs
and outputs are unchanged); ``"int8"`` returns the pure integer core with int8 inputs/outputs.

Data contract: samples are batch first in the IR layout (NHWC for 4-D). Samples in the source
model's layout (NCHW for ONNX models, ``graph.meta["input_layout"]``) are accepted and transposed
by :func:`to_ir_layout`.
"""
from __future__ import annotations

import copy
import math
from typing import Sequence

import numpy as np

from .errors import DataError, ModelFormatError, UnsupportedOpError
from .fixedpoint import tflite_round
from .interpreter import Interpreter
from .ir import Graph, Node, QParams, Tensor, verify
from .ops.quantize import quantize_array

# ---------------------------------------------------------------------------------------------
# How each op is quantized (one table per concern, keyed by op)
# ---------------------------------------------------------------------------------------------
#: linear ops: output-channel axis of the weight (input 1); input 2 is the optional bias
LINEAR_WEIGHT_AXIS = {"conv2d": 0, "depthwise_conv2d": 3, "fully_connected": 0}
#: ops whose int8 kernel passes values through: output parameters = input parameters
SHARES_INPUT_PARAMS = ("max_pool2d", "avg_pool2d", "reshape", "pad")
#: ops whose int8 output parameters are fixed by the kernel: (scale, zero point)
FIXED_OUTPUT_PARAMS = {"softmax": (1.0 / 256.0, -128)}
#: ops that requantize: output parameters come from calibration
OBSERVED_OUTPUT = ("add", "relu", "relu6", "mean")
SUPPORTED_OPS = tuple(LINEAR_WEIGHT_AXIS) + SHARES_INPUT_PARAMS + tuple(FIXED_OUTPUT_PARAMS) + OBSERVED_OUTPUT

METHODS = ("minmax", "percentile")
IO_MODES = ("float", "int8")

#: values kept per tensor for percentile calibration (random subsample beyond this)
PERCENTILE_SAMPLE_CAP = 1 << 20


# ---------------------------------------------------------------------------------------------
# Model input layout and input quantization
# ---------------------------------------------------------------------------------------------
def source_layout(graph: Graph) -> str:
    """Layout of the source model's input: ``"NCHW"`` for ONNX models, ``"NHWC"`` otherwise."""
    return str(graph.meta.get("input_layout") or graph.meta.get("layout") or "NHWC").upper()


def _single_input(graph: Graph) -> Tensor:
    if len(graph.inputs) != 1:
        raise DataError(f"model {graph.name!r} has {len(graph.inputs)} inputs; only single-input models take "
                        f"array data")
    return graph.tensors[graph.inputs[0]]


def input_sample_shapes(graph: Graph) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per-sample input shape (batch axis dropped) as ``(IR layout, source layout)``.

    For an NCHW source the IR input is NHWC ``[N, H, W, C]`` and the source sample is ``(C, H, W)``;
    otherwise both are the IR's.
    """
    ir = tuple(_single_input(graph).shape[1:])
    if source_layout(graph) == "NCHW" and len(ir) == 3:
        return ir, (ir[2], ir[0], ir[1])
    return ir, ir


def to_ir_layout(x: np.ndarray, graph: Graph, what: str = "data") -> np.ndarray:
    """Batch-first samples in the source layout or the IR layout -> the IR layout (NHWC).

    Samples whose shape matches the source layout are transposed NCHW -> NHWC when the source is
    NCHW (this wins when both layouts have the same shape, i.e. C == H == W); samples already in
    the IR layout pass unchanged; samples that leave out the source shape's size-1 axes (e.g.
    [N, 8, 8] for a one-channel [N, 1, 8, 8] input) get them back. Anything else raises
    :class:`DataError`.
    """
    x = np.asarray(x)
    ir, src = input_sample_shapes(graph)
    sample = tuple(x.shape[1:])
    squeezed = tuple(d for d in src if d != 1)
    if x.ndim >= 1 and sample != src and sample != ir and sample == squeezed:
        x, sample = x.reshape((x.shape[0],) + src), src  # size-1 axes (e.g. one channel) left out
    if x.ndim >= 1 and sample == src and src != ir:
        return np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    if x.ndim >= 1 and sample == ir:
        return x
    layout = source_layout(graph)
    expect = f"{src} ({layout})" if src == ir else f"{src} ({layout}) or {ir} (NHWC)"
    raise DataError(f"{what}: samples have shape {sample} but the model input takes {expect} per sample "
                    f"(arrays are batch first)")


def input_qparams(graph: Graph) -> QParams:
    """The int8 parameters samples are quantized with: the int8 graph input's, or those of the
    ``quantize`` node that reads a float graph input."""
    t = _single_input(graph)
    if t.dtype == "int8" and t.quant is not None:
        return t.quant
    for n in graph.consumers(t.name):
        if n.op == "quantize":
            return graph.tensors[n.outputs[0]].quant
    raise DataError(f"model {graph.name!r} has no int8 input quantization parameters (quantize it first)")


def quantize_samples(x: np.ndarray, graph: Graph, what: str = "data") -> np.ndarray:
    """float32 samples -> int8 with the model's input parameters (TFLite rounding); int8 as is."""
    x = np.asarray(x)
    if x.dtype == np.int8:
        return x
    if x.dtype != np.float32:
        raise DataError(f"{what}: dtype {x.dtype} is not float32 or int8")
    q = input_qparams(graph)
    return quantize_array(x, q.s, q.zp)


def model_input(x: np.ndarray, graph: Graph, what: str = "data") -> np.ndarray:
    """Samples ready for ``Interpreter(graph).run``: IR layout, and the dtype of the graph input
    (float32 samples are quantized for an int8 input; int8 samples need an int8 input)."""
    x = to_ir_layout(x, graph, what)
    t = _single_input(graph)
    if t.dtype == "int8":
        return quantize_samples(x, graph, what)
    if x.dtype != np.float32:
        raise DataError(f"{what}: the model takes float32 input; got {x.dtype} samples")
    return x


# ---------------------------------------------------------------------------------------------
# Observers
# ---------------------------------------------------------------------------------------------
class _Observer:
    """Running range of one activation tensor (float values)."""

    def __init__(self, method: str, percentile: float, expected_values: int, seed: int):
        self.method = method
        self.percentile = percentile
        self.lo = math.inf
        self.hi = -math.inf
        self._keep = min(1.0, PERCENTILE_SAMPLE_CAP / max(expected_values, 1))
        self._samples: list[np.ndarray] = []
        self._rng = np.random.default_rng(seed)

    def update(self, v: np.ndarray) -> None:
        v = np.asarray(v, dtype=np.float32).ravel()
        if v.size == 0:
            return
        self.lo = min(self.lo, float(v.min()))
        self.hi = max(self.hi, float(v.max()))
        if self.method == "percentile":
            if self._keep < 1.0:
                k = max(1, int(round(v.size * self._keep)))
                v = v[self._rng.integers(0, v.size, k)]
            self._samples.append(v.copy())

    def range(self) -> tuple[float, float]:
        if self.method == "percentile" and self._samples:
            vals = np.concatenate(self._samples)
            lo, hi = np.percentile(vals, [100.0 - self.percentile, self.percentile])
            return float(lo), float(hi)
        return self.lo, self.hi


def activation_qparams(lo: float, hi: float) -> QParams:
    """int8 asymmetric per-tensor parameters covering the real range ``[lo, hi]`` and 0.

    ``s = float32((hi - lo) / 255)``, ``zp = round_half_away(-128 - lo / s)`` clamped to int8.
    A degenerate range (all zeros) gets the parameters of ``[0, 1]``.
    """
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"activation range [{lo}, {hi}] is not finite")
    if hi - lo <= 1e-12:
        lo, hi = 0.0, 1.0
    scale = np.float32((hi - lo) / 255.0)
    zp = int(tflite_round(np.float64(-128.0 - lo / np.float64(scale))))
    return QParams(scale, min(127, max(-128, zp)))


def weight_qparams(w: np.ndarray, axis: int | None) -> tuple[np.ndarray, QParams]:
    """int8 symmetric weights: ``s = max|w| / 127`` per index along ``axis`` (per tensor when
    ``axis`` is None), ``q = clamp(round_half_away(w / s), -127, 127)``.

    An all-zero channel takes the mean scale of the other channels (1/127 if every channel is
    zero), so its bias keeps a usable int32 scale.
    """
    w = np.asarray(w, dtype=np.float32)
    if axis is None:
        amax = np.array([np.abs(w).max() if w.size else 0.0], dtype=np.float64)
    else:
        other = tuple(a for a in range(w.ndim) if a != axis)
        amax = np.abs(w).max(axis=other).astype(np.float64)
    zero = amax <= 0
    if np.all(zero):
        amax[:] = 1.0
    elif np.any(zero):
        amax[zero] = amax[~zero].mean()
    scale = (amax / 127.0).astype(np.float32)
    shape = [1] * w.ndim
    if axis is not None:
        shape[axis] = -1
    q = tflite_round(w.astype(np.float64) / scale.astype(np.float64).reshape(shape))
    q = np.clip(q, -127, 127).astype(np.int8)
    return q, QParams(scale, np.zeros(scale.shape, np.int64), axis=axis)


def bias_qparams(b: np.ndarray, s_in: float, w_quant: QParams) -> tuple[np.ndarray, QParams]:
    """int32 bias at scale ``float32(s_in) * s_w`` (float32 product, per channel like the weights)."""
    scale = (np.float32(s_in) * w_quant.scale).astype(np.float32)
    b = np.asarray(b, dtype=np.float64)
    s = scale.astype(np.float64)
    q = tflite_round(b / (s if s.size == b.size else s[0]))
    q = np.clip(q, -(1 << 31), (1 << 31) - 1).astype(np.int32)
    axis = 0 if scale.size > 1 else None
    return q, QParams(scale, np.zeros(scale.shape, np.int64), axis=axis)


# ---------------------------------------------------------------------------------------------
# PTQ
# ---------------------------------------------------------------------------------------------
def _activations(graph: Graph) -> list[str]:
    """Non-constant tensors in definition order: graph inputs, then node outputs."""
    names = list(graph.inputs)
    for n in graph.nodes:
        names.extend(o for o in n.outputs if o not in names)
    return names


def _check_float_graph(graph: Graph) -> bool:
    """True for a float graph PTQ can quantize; False for an int8 graph (passes through)."""
    acts = _activations(graph)
    dtypes = {graph.tensors[a].dtype for a in acts}
    if dtypes == {"float32"}:
        for n in graph.nodes:
            if n.op == "batch_norm":
                raise UnsupportedOpError(n.op, n.name, SUPPORTED_OPS, "fold BatchNorm before quantizing")
            if n.op not in SUPPORTED_OPS:
                raise UnsupportedOpError(n.op, n.name, SUPPORTED_OPS, "no int8 quantization rule")
            if n.op == "pad" and float(n.attrs.get("value", 0.0)) != 0.0:
                raise UnsupportedOpError(n.op, n.name, SUPPORTED_OPS, "int8 pad only pads with zero")
        return False
    if graph.is_quantized:
        return True
    raise ModelFormatError(f"model {graph.name!r} mixes float32 and integer activations; PTQ needs a float32 "
                           f"graph (or an int8 one, which passes through)")


def _calibration_input(graph: Graph, calib_x: np.ndarray) -> np.ndarray:
    what = "calibration data"
    x = np.asarray(calib_x)
    if x.ndim == 0 or x.shape[0] == 0:
        raise DataError(f"{what}: no samples (PTQ needs at least one calibration sample)")
    if x.dtype != np.float32:
        raise DataError(f"{what}: dtype {x.dtype}; calibration samples must be float32")
    if not np.all(np.isfinite(x)):
        raise DataError(f"{what}: contains NaN or infinite values")
    return to_ir_layout(x, graph, what)


def calibrate(graph: Graph, x: np.ndarray, method: str = "minmax", percentile: float = 99.99,
              batch_size: int = 128) -> dict[str, tuple[float, float]]:
    """Observed real range ``(lo, hi)`` of every activation tensor over the samples ``x`` (IR layout)."""
    interp = Interpreter(graph, check=False)
    names = _activations(graph)
    n = x.shape[0]
    obs = {a: _Observer(method, percentile, n * int(np.prod(graph.tensors[a].shape[1:], dtype=np.int64)), i)
           for i, a in enumerate(names)}
    for start in range(0, n, batch_size):
        env = interp.run(x[start:start + batch_size], keep_all=True)
        for a in names:
            obs[a].update(env[a])
    return {a: o.range() for a, o in obs.items()}


def quantize_graph(float_graph: Graph, calib_x: np.ndarray, method: str = "minmax", percentile: float = 99.99,
                   per_channel: bool = True, io: str = "float", batch_size: int = 128) -> Graph:
    """PTQ of a float32 graph with calibration samples ``calib_x`` ([N, ...], batch first, float32,
    IR or source layout). Returns a new verified int8 graph; the input graph is not modified.

    An already-int8 graph is returned as a copy, untouched. Raises :class:`DataError` for bad
    calibration data and :class:`UnsupportedOpError` for ops without an int8 quantization rule.
    """
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {METHODS}")
    if io not in IO_MODES:
        raise ValueError(f"io {io!r} is not one of {IO_MODES}")
    if not (50.0 < percentile <= 100.0):
        raise ValueError(f"percentile {percentile} is not in (50, 100]")
    verify(float_graph)
    if _check_float_graph(float_graph):
        return float_graph.copy()
    x = _calibration_input(float_graph, calib_x)
    ranges = calibrate(float_graph, x, method, percentile, batch_size)

    fg = float_graph
    qp: dict[str, QParams] = {}
    for a in fg.inputs:
        qp[a] = activation_qparams(*ranges[a])
    for n in fg.nodes:
        for o in n.outputs:
            if n.op in SHARES_INPUT_PARAMS:
                qp[o] = copy.deepcopy(qp[n.inputs[0]])
            elif n.op in FIXED_OUTPUT_PARAMS:
                s, z = FIXED_OUTPUT_PARAMS[n.op]
                qp[o] = QParams(s, z)
            else:
                qp[o] = activation_qparams(*ranges[o])

    g = Graph(name=fg.name, meta=copy.deepcopy(fg.meta))
    if "quantized" in g.meta:
        g.meta["quantized"] = True
    g.meta["quantization"] = {
        "method": method, "percentile": percentile if method == "percentile" else None,
        "per_channel": bool(per_channel), "io": io, "calibration_samples": int(x.shape[0]),
    }
    # Internal int8 names: with io="float" the graph inputs/outputs keep their names (float32) and
    # the int8 tensors next to them get a suffix.
    inner = {a: a for a in qp}
    if io == "float":
        for a in fg.inputs:
            inner[a] = _unique(fg, f"{a}/int8")
        for a in fg.outputs:
            if a not in fg.inputs:
                inner[a] = _unique(fg, f"{a}/int8")
    for a, q in qp.items():
        g.add_tensor(Tensor(inner[a], fg.tensors[a].shape, "int8", quant=q))

    node_names = {n.name for n in fg.nodes}
    if io == "float":
        for a in fg.inputs:
            g.add_tensor(Tensor(a, fg.tensors[a].shape, "float32"))
            name = _unique_node(node_names, f"{a}/quantize")
            g.nodes.append(Node("quantize", name, [a], [inner[a]]))
    cache: dict[tuple, str] = {}
    for n in fg.nodes:
        ins = [_quantized_operand(fg, g, n, i, qp, inner, per_channel, cache) for i in range(len(n.inputs))]
        g.nodes.append(Node(n.op, n.name, ins, [inner[o] for o in n.outputs], copy.deepcopy(n.attrs)))
    if io == "float":
        for a in fg.outputs:
            if a in fg.inputs:
                continue
            g.add_tensor(Tensor(a, fg.tensors[a].shape, "float32"))
            name = _unique_node(node_names, f"{a}/dequantize")
            g.nodes.append(Node("dequantize", name, [inner[a]], [a]))
    g.inputs = list(fg.inputs) if io == "float" else [inner[a] for a in fg.inputs]
    g.outputs = list(fg.outputs) if io == "float" else [inner[a] for a in fg.outputs]
    return verify(g)


def _unique(graph: Graph, base: str) -> str:
    name, i = base, 1
    while name in graph.tensors:
        name, i = f"{base}_{i}", i + 1
    return name


def _unique_node(taken: set[str], base: str) -> str:
    name, i = base, 1
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    taken.add(name)
    return name


def _quantized_operand(fg: Graph, g: Graph, n: Node, i: int, qp: dict[str, QParams], inner: dict[str, str],
                       per_channel: bool, cache: dict[tuple, str]) -> str:
    """Name, in the int8 graph ``g``, of operand ``i`` of float node ``n`` (constants converted)."""
    name = n.inputs[i]
    if name == "":
        return ""
    t = fg.tensors[name]
    if not t.is_const:
        return inner[name]
    if n.op in LINEAR_WEIGHT_AXIS and i == 1:
        axis = LINEAR_WEIGHT_AXIS[n.op] if per_channel else None
        key = ("w", name, axis)
        if key not in cache:
            q, quant = weight_qparams(t.data, axis)
            cache[key] = g.const(name, q, "int8", quant).name
        return cache[key]
    if n.op in LINEAR_WEIGHT_AXIS and i == 2:
        s_in = qp[n.inputs[0]].s
        w_name = _quantized_operand(fg, g, n, 1, qp, inner, per_channel, cache)
        w_quant = g.tensors[w_name].quant
        key = ("b", name, s_in, w_name)
        if key not in cache:
            q, quant = bias_qparams(t.data, s_in, w_quant)
            cache[key] = g.const(name, q, "int32", quant).name
        return cache[key]
    if t.dtype != "float32":
        key = ("c", name)
        if key not in cache:
            cache[key] = g.const(name, t.data, t.dtype, t.quant).name
        return cache[key]
    # any other float constant operand (e.g. an add's constant): int8 asymmetric per tensor
    key = ("a", name)
    if key not in cache:
        quant = activation_qparams(float(t.data.min()), float(t.data.max()))
        cache[key] = g.const(name, quantize_array(t.data, quant.s, quant.zp), "int8", quant).name
    return cache[key]


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------
def predict(graph: Graph, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Top-1 class index per sample (int64 [N]) from the graph's first output (last axis).

    ``x``: batch first, float32 (quantized with the input parameters when the graph input is
    int8) or int8, in the IR or the source layout.
    """
    xs = model_input(x, graph)
    interp = Interpreter(graph)
    out = graph.outputs[0]
    preds = []
    for start in range(0, xs.shape[0], batch_size):
        y = interp.run(xs[start:start + batch_size])[out]
        preds.append(np.argmax(y.reshape(y.shape[0], -1), axis=1))
    return np.concatenate(preds) if preds else np.zeros(0, np.int64)


def evaluate(graph: Graph, x: np.ndarray, y: Sequence[int] | np.ndarray, batch_size: int = 256) -> float:
    """Top-1 accuracy in [0, 1] of a float or int8 graph on samples ``x`` with labels ``y``."""
    y = np.asarray(y).ravel()
    if len(y) != np.asarray(x).shape[0]:
        raise DataError(f"data: {np.asarray(x).shape[0]} samples but {len(y)} labels")
    if len(y) == 0:
        raise DataError("data: no samples to evaluate")
    return float(np.mean(predict(graph, x, batch_size) == y))
