"""Per-layer model summary: op, shapes, parameters, MACs and bytes, with totals.

``inspect_graph(graph)`` is pure: it reads the IR and the op registry (``macs``) and returns plain
JSON-ready data (ints, floats, strings, lists, dicts); rendering is the caller's job.

Counting rules:
  * a *parameter* is a constant input of a node (weights, biases, constant operands); a constant
    read by several nodes is counted once, at its first reader;
  * ``param_bytes`` is what the graph stores now (float32: 4 bytes per element; int8 graphs:
    int8 weights, int32 biases); ``weight_bytes_float32`` is 4 bytes per parameter element;
    ``weight_bytes_int8`` is the int8 deployment size: bias operands of conv/fc
    (input 2) are int32, other float parameters int8, integer parameters keep their width.
    Quantization scales and zero points are not counted;
  * ``macs`` are per inference of the graph as stored (its batch dimension), from the registry;
  * ``activation_bytes`` of a layer is the size of its outputs in the graph's dtype.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .ir import Graph, Tensor
from .ops import registry

#: input position that holds an int32 bias in the int8 deployment (conv2d, depthwise, fc)
_BIAS_POSITION = 2
_BIAS_OPS = ("conv2d", "depthwise_conv2d", "fully_connected")


def precision(graph: Graph) -> str:
    """``"int8"`` when the graph computes on integers, ``"float32"`` when on floats, else ``"mixed"``."""
    if graph.is_quantized:
        return "int8"
    computed = [graph.tensors[o].dtype for n in graph.nodes for o in n.outputs]
    return "mixed" if any(d == "int8" for d in computed) else "float32"


def _int8_bytes(t: Tensor, is_bias: bool) -> int:
    if t.dtype == "float32":
        return t.size * (4 if is_bias else 1)
    return t.nbytes


def _tensor_info(t: Tensor, source: list | None) -> dict[str, Any]:
    """IR name/shape/dtype, plus the source file's layout and shape when the frontend recorded them."""
    info: dict[str, Any] = {"name": t.name, "shape": list(t.shape), "dtype": t.dtype}
    for m in source or ():
        if isinstance(m, dict) and m.get("name") == t.name:
            info["source_layout"] = m.get("layout")
            info["source_shape"] = [int(d) for d in m.get("shape", [])]
    return info


def inspect_graph(graph: Graph) -> dict[str, Any]:
    """Summarize ``graph``: ``{"name", "precision", "format", "inputs", "outputs", "layers", "totals"}``."""
    seen: set[str] = set()
    layers: list[dict[str, Any]] = []
    tot = dict(params=0, macs=0, param_bytes=0, weight_bytes_float32=0, weight_bytes_int8=0)
    max_act = max_io = 0
    for index, n in enumerate(graph.nodes):
        op = registry.get(n.op)
        params = p_bytes = w_f32 = w_i8 = 0
        act_inputs = []
        for pos, name in enumerate(n.inputs):
            if not name:
                continue
            t = graph.tensors[name]
            if not t.is_const:
                act_inputs.append(t)
                continue
            if name in seen:
                continue
            seen.add(name)
            params += t.size
            p_bytes += t.nbytes
            w_f32 += t.size * 4
            w_i8 += _int8_bytes(t, is_bias=(n.op in _BIAS_OPS and pos == _BIAS_POSITION))
        outs = [graph.tensors[o] for o in n.outputs]
        act_bytes = sum(t.nbytes for t in outs)
        io_bytes = act_bytes + sum(t.nbytes for t in act_inputs)
        macs = int(op.macs(n, graph))
        layers.append({
            "index": index,
            "name": n.name,
            "op": n.op,
            "input_shapes": [list(t.shape) for t in act_inputs],
            "output_shapes": [list(t.shape) for t in outs],
            "params": int(params),
            "macs": macs,
            "param_bytes": int(p_bytes),
            "activation_bytes": int(act_bytes),
            "act": n.attrs.get("act") if isinstance(n.attrs.get("act"), str) else None,
        })
        tot["params"] += params
        tot["macs"] += macs
        tot["param_bytes"] += p_bytes
        tot["weight_bytes_float32"] += w_f32
        tot["weight_bytes_int8"] += w_i8
        max_act = max(max_act, act_bytes)
        max_io = max(max_io, io_bytes)
    ops: dict[str, int] = {}
    for n in graph.nodes:
        ops[n.op] = ops.get(n.op, 0) + 1
    totals = {k: int(v) for k, v in tot.items()}
    totals.update(
        layers=len(layers),
        ops=ops,
        max_activation_bytes=int(max_act),
        max_layer_io_bytes=int(max_io),  # largest (inputs + outputs) of a single layer
    )
    return {
        "name": graph.name,
        "format": graph.meta.get("format") or graph.meta.get("source_format"),
        "precision": precision(graph),
        "inputs": [_tensor_info(graph.tensors[i], graph.meta.get("inputs")) for i in graph.inputs],
        "outputs": [_tensor_info(graph.tensors[o], graph.meta.get("outputs")) for o in graph.outputs],
        "layers": layers,
        "totals": totals,
    }


def top1(logits: np.ndarray) -> np.ndarray:
    """Predicted class per row of a ``[N, C]`` (or ``[N, ..., C]``) output."""
    a = np.asarray(logits)
    return a.reshape(a.shape[0], -1).argmax(axis=1)
