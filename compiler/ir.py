"""The microtrain IR: tensors, nodes, graph, and the verifier that runs after every pass.

Conventions (contracts every pass and kernel relies on):
  * Activations are NHWC, batch first: 4-D ``[N, H, W, C]`` or 2-D ``[N, C]``.
  * ``conv2d`` weights are OHWI ``[Cout, KH, KW, Cin]``, quantized per output channel (axis 0).
  * ``depthwise_conv2d`` weights are ``[1, KH, KW, Cin*multiplier]`` (TFLite layout), axis 3.
  * ``fully_connected`` weights are ``[Cout, Cin]``, quantized per output channel (axis 0) or per tensor.
  * int8 activations are asymmetric per tensor; int8 weights symmetric (zero point 0);
    int32 biases are at scale ``s_in * s_w`` with zero point 0.
  * Scales are kept as float32, exactly as a .tflite file stores them; every derived constant
    (multipliers, shifts) is computed from them in float64 by the op's ``prepare``.

A ``Graph`` owns its tensors by name. Constant tensors carry ``data``; activations do not.
Nodes are stored in execution (topological) order.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

DTYPES = ("float32", "int8", "int16", "int32", "int64", "uint8")


class IRError(ValueError):
    """A graph violates an IR invariant (raised by the verifier and by passes)."""


@dataclass
class QParams:
    """Affine quantization: ``real = scale * (q - zero_point)``.

    ``axis`` is None for per-tensor parameters; otherwise ``scale``/``zero_point`` have one entry
    per index along ``axis``.
    """

    scale: np.ndarray  # float32, shape [1] or [C]
    zero_point: np.ndarray  # int64, same shape as scale
    axis: int | None = None

    def __post_init__(self) -> None:
        self.scale = np.atleast_1d(np.asarray(self.scale, dtype=np.float32))
        self.zero_point = np.atleast_1d(np.asarray(self.zero_point, dtype=np.int64))
        if self.zero_point.shape != self.scale.shape:
            if self.zero_point.size == 1:
                self.zero_point = np.full(self.scale.shape, int(self.zero_point[0]), np.int64)
            else:
                raise IRError(f"quantization: {self.scale.size} scales but {self.zero_point.size} zero points")

    @property
    def per_channel(self) -> bool:
        return self.axis is not None

    @property
    def s(self) -> float:
        """The per-tensor scale (float32 value as a Python float)."""
        if self.scale.size != 1:
            raise IRError("per-tensor scale requested from per-channel parameters")
        return float(self.scale[0])

    @property
    def zp(self) -> int:
        if self.zero_point.size != 1:
            raise IRError("per-tensor zero point requested from per-channel parameters")
        return int(self.zero_point[0])

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, QParams)
            and self.axis == other.axis
            and np.array_equal(self.scale, other.scale)
            and np.array_equal(self.zero_point, other.zero_point)
        )

    def to_json(self) -> dict:
        return {
            "scale": [float(s) for s in self.scale],
            "zero_point": [int(z) for z in self.zero_point],
            "axis": self.axis,
        }


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: str
    data: np.ndarray | None = None  # constants only
    quant: QParams | None = None

    def __post_init__(self) -> None:
        self.shape = tuple(int(d) for d in self.shape)
        if self.dtype not in DTYPES:
            raise IRError(f"tensor {self.name!r}: dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")
        if self.data is not None:
            self.data = np.ascontiguousarray(np.asarray(self.data, dtype=self.dtype))

    @property
    def is_const(self) -> bool:
        return self.data is not None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.size * np.dtype(self.dtype).itemsize


@dataclass
class Node:
    op: str
    name: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Node({self.op} {self.name!r}: {self.inputs} -> {self.outputs})"


@dataclass
class Graph:
    name: str = "graph"
    tensors: dict[str, Tensor] = field(default_factory=dict)
    nodes: list[Node] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    # Free-form provenance: source file, source format, source input layout ("NCHW" for ONNX), ...
    meta: dict[str, Any] = field(default_factory=dict)

    # ---- construction -------------------------------------------------------------------
    def add_tensor(self, t: Tensor) -> Tensor:
        if t.name in self.tensors:
            raise IRError(f"duplicate tensor name {t.name!r}")
        self.tensors[t.name] = t
        return t

    def fresh_name(self, base: str) -> str:
        if base not in self.tensors and all(n.name != base for n in self.nodes):
            return base
        i = 1
        while f"{base}_{i}" in self.tensors:
            i += 1
        return f"{base}_{i}"

    def const(self, name: str, data: np.ndarray, dtype: str | None = None, quant: QParams | None = None) -> Tensor:
        data = np.asarray(data)
        return self.add_tensor(
            Tensor(self.fresh_name(name), data.shape, dtype or str(data.dtype), data=data, quant=quant)
        )

    def copy(self) -> "Graph":
        return copy.deepcopy(self)

    # ---- queries ---------------------------------------------------------------------------
    def producer(self, tensor: str) -> Node | None:
        for n in self.nodes:
            if tensor in n.outputs:
                return n
        return None

    def consumers(self, tensor: str) -> list[Node]:
        return [n for n in self.nodes if tensor in n.inputs]

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    @property
    def is_quantized(self) -> bool:
        """True when every activation the core computes on is int8 (boundary (de)quantize allowed)."""
        return all(self.tensors[o].dtype != "float32" for n in self.nodes
                   if n.op not in ("dequantize",) for o in n.outputs)

    def remove_unused(self) -> None:
        """Drop tensors referenced by no node and not a graph input/output."""
        used = set(self.inputs) | set(self.outputs)
        for n in self.nodes:
            used.update(n.inputs)
            used.update(n.outputs)
        for name in list(self.tensors):
            if name not in used:
                del self.tensors[name]

    def rename_tensor_uses(self, old: str, new: str) -> None:
        """Make every reader of ``old`` read ``new`` instead (graph outputs included)."""
        for n in self.nodes:
            n.inputs = [new if i == old else i for i in n.inputs]
        self.outputs = [new if o == old else o for o in self.outputs]

    def summary(self) -> str:
        lines = [f"graph {self.name}: inputs {self.inputs} outputs {self.outputs}"]
        for n in self.nodes:
            shapes = [self.tensors[o].shape for o in n.outputs]
            lines.append(f"  {n.op:<18} {n.name:<28} -> {shapes}")
        return "\n".join(lines)


def topo_sort(graph: Graph) -> None:
    """Reorder ``graph.nodes`` topologically, keeping the existing order where it is valid."""
    available = set(graph.inputs) | {n for n, t in graph.tensors.items() if t.is_const}
    pending = list(graph.nodes)
    ordered: list[Node] = []
    while pending:
        for i, n in enumerate(pending):
            if all(x in available or x == "" for x in n.inputs):
                ordered.append(n)
                available.update(n.outputs)
                del pending[i]
                break
        else:
            names = ", ".join(n.name for n in pending[:5])
            raise IRError(f"graph has a cycle or a missing input around nodes: {names}")
    graph.nodes = ordered


def verify(graph: Graph) -> Graph:
    """Check every IR invariant; raise IRError naming the first violation. Returns the graph.

    Checked: names unique and resolvable, nodes in topological order, every op registered,
    stored shapes/dtypes equal the op's shape inference, constants hold data of the stated
    shape and dtype, quantization parameters consistent with the tensor they describe.
    """
    from .ops import registry  # late: ops import the IR

    seen_nodes: set[str] = set()
    defined: set[str] = set(graph.inputs)
    for name in graph.inputs:
        if name not in graph.tensors:
            raise IRError(f"graph input {name!r} has no tensor")
        if graph.tensors[name].is_const:
            raise IRError(f"graph input {name!r} is a constant")
    for name, t in graph.tensors.items():
        if name != t.name:
            raise IRError(f"tensor stored under {name!r} is named {t.name!r}")
        if t.is_const:
            defined.add(name)
            if tuple(t.data.shape) != t.shape:
                raise IRError(f"constant {name!r}: data shape {t.data.shape} != declared {t.shape}")
            if str(t.data.dtype) != t.dtype:
                raise IRError(f"constant {name!r}: data dtype {t.data.dtype} != declared {t.dtype}")
        _verify_quant(t)
    for n in graph.nodes:
        if n.name in seen_nodes:
            raise IRError(f"duplicate node name {n.name!r}")
        seen_nodes.add(n.name)
        op = registry.get(n.op)  # raises for unknown ops
        for i in n.inputs:
            if i == "":
                continue
            if i not in graph.tensors:
                raise IRError(f"node {n.name!r} ({n.op}) reads unknown tensor {i!r}")
            if i not in defined:
                raise IRError(f"node {n.name!r} ({n.op}) reads {i!r} before it is produced")
        for o in n.outputs:
            if o not in graph.tensors:
                raise IRError(f"node {n.name!r} ({n.op}) writes unknown tensor {o!r}")
            if o in defined:
                raise IRError(f"tensor {o!r} is produced twice (again by {n.name!r})")
            defined.add(o)
        ins = [graph.tensors[i] if i else None for i in n.inputs]
        inferred = op.infer(n, ins)
        if len(inferred) != len(n.outputs):
            raise IRError(f"node {n.name!r} ({n.op}): {len(n.outputs)} outputs, op defines {len(inferred)}")
        for o, (shape, dtype) in zip(n.outputs, inferred):
            t = graph.tensors[o]
            if tuple(shape) != t.shape:
                raise IRError(f"node {n.name!r} ({n.op}): output {o!r} shape {t.shape} != inferred {tuple(shape)}")
            if dtype != t.dtype:
                raise IRError(f"node {n.name!r} ({n.op}): output {o!r} dtype {t.dtype} != inferred {dtype}")
        op.check(n, graph)
    for o in graph.outputs:
        if o not in defined:
            raise IRError(f"graph output {o!r} is never produced")
    return graph


def _verify_quant(t: Tensor) -> None:
    q = t.quant
    if t.dtype in ("int8", "uint8") and q is None and not t.is_const:
        raise IRError(f"int8 activation {t.name!r} has no quantization parameters")
    if q is None:
        return
    if np.any(~np.isfinite(q.scale)) or np.any(q.scale <= 0):
        raise IRError(f"tensor {t.name!r}: quantization scales must be finite and > 0")
    if q.axis is not None:
        if not (0 <= q.axis < max(len(t.shape), 1)):
            raise IRError(f"tensor {t.name!r}: quantization axis {q.axis} out of range for shape {t.shape}")
        if q.scale.size not in (1, t.shape[q.axis]):
            raise IRError(
                f"tensor {t.name!r}: {q.scale.size} scales for {t.shape[q.axis]} channels on axis {q.axis}"
            )
    elif q.scale.size != 1:
        raise IRError(f"tensor {t.name!r}: {q.scale.size} scales but no quantization axis")
    if t.dtype == "int8" and (np.any(q.zero_point < -128) or np.any(q.zero_point > 127)):
        raise IRError(f"tensor {t.name!r}: int8 zero point out of [-128, 127]")


def iter_params(graph: Graph) -> Iterable[Tensor]:
    """Constant tensors read by some node (weights, biases, shape constants)."""
    seen = set()
    for n in graph.nodes:
        for i in n.inputs:
            if i and i not in seen and graph.tensors[i].is_const:
                seen.add(i)
                yield graph.tensors[i]
