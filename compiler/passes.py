"""Graph cleanups run by the frontends. Each pass mutates the graph in place, verifies it and
returns it; each keeps the float function of the graph (up to float rounding) and, for int8
graphs, only rewrites patterns whose integer result is unchanged.

  fold_batchnorm     batch_norm after conv2d / depthwise_conv2d / fully_connected -> new W, b
  fold_bias_add      add of a per-channel constant after conv / fc            -> bias
  fuse_activations   relu / relu6 after conv / fc / add                       -> ``act`` attribute
  absorb_activation_into_quantize   relu before a quantize that clamps at 0 -> dropped
  fold_pad           zero pad of H, W feeding conv2d / depthwise_conv2d       -> ``pad`` attribute
  remove_noops       reshape to the same shape, pad by zero
  remove_dead        nodes none of whose outputs is read or a graph output

A fold happens only when the intermediate tensor has exactly one reader and is not a graph
output, so no value anyone can observe changes.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .ir import Graph, Node, verify

_LINEAR = ("conv2d", "depthwise_conv2d", "fully_connected")


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def _sole_reader(graph: Graph, tensor: str) -> Node | None:
    """The one node reading ``tensor`` if it has exactly one reader and is not a graph output."""
    if tensor in graph.outputs:
        return None
    readers = graph.consumers(tensor)
    return readers[0] if len(readers) == 1 else None


def _out_channel_axis(op: str) -> int:
    return 3 if op == "depthwise_conv2d" else 0


def _bias_of(graph: Graph, node: Node) -> np.ndarray:
    """float64 copy of a float linear node's bias (zeros when it has none)."""
    w = graph.tensors[node.inputs[1]]
    cout = w.shape[_out_channel_axis(node.op)]
    if len(node.inputs) > 2 and node.inputs[2]:
        return graph.tensors[node.inputs[2]].data.astype(np.float64).copy()
    return np.zeros(cout, np.float64)


def _set_params(graph: Graph, node: Node, w: np.ndarray | None, b: np.ndarray) -> None:
    """Give ``node`` fresh float32 weight (when ``w`` is given) and bias constants; the old ones
    stay untouched for any other reader and are dropped by ``remove_unused`` otherwise."""
    if w is not None:
        old = graph.tensors[node.inputs[1]]
        node.inputs[1] = graph.const(old.name, w.astype(np.float32), "float32").name
    base = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] else f"{node.name}/bias"
    bias = graph.const(base, b.astype(np.float32), "float32").name
    if len(node.inputs) > 2:
        node.inputs[2] = bias
    else:
        node.inputs.append(bias)


def _absorb(graph: Graph, keep: Node, drop: Node) -> None:
    """``keep`` now writes what ``drop`` wrote; ``drop`` and the tensor between them vanish."""
    mid = keep.outputs[0]
    keep.outputs[0] = drop.outputs[0]
    graph.nodes.remove(drop)
    del graph.tensors[mid]


def rename_tensor(graph: Graph, old: str, new: str) -> None:
    """Rename tensor ``old`` to the unused name ``new`` everywhere (producer, readers, I/O)."""
    if old == new:
        return
    if new in graph.tensors:
        raise ValueError(f"cannot rename {old!r}: tensor {new!r} exists")
    t = graph.tensors.pop(old)
    t.name = new
    graph.tensors[new] = t
    for n in graph.nodes:
        n.inputs = [new if i == old else i for i in n.inputs]
        n.outputs = [new if o == old else o for o in n.outputs]
    graph.inputs = [new if i == old else i for i in graph.inputs]
    graph.outputs = [new if o == old else o for o in graph.outputs]


def bypass(graph: Graph, node: Node) -> bool:
    """Remove a single-input node whose output equals its input (same shape, dtype, quant).

    Returns False (graph unchanged) when the node connects a graph input straight to a graph
    output, or when the input is itself a graph output, since one of the two names would be lost.
    """
    x, y = node.inputs[0], node.outputs[0]
    if y in graph.outputs:
        if x in graph.inputs or x in graph.outputs or graph.tensors[x].is_const:
            return False
        graph.nodes.remove(node)
        del graph.tensors[y]
        rename_tensor(graph, x, y)
        return True
    graph.nodes.remove(node)
    graph.rename_tensor_uses(y, x)
    del graph.tensors[y]
    return True


def batchnorm_fold_blocker(graph: Graph, bn: Node) -> str | None:
    """Why batch_norm ``bn`` cannot be folded into its producer (None when it can)."""
    x = bn.inputs[0]
    p = graph.producer(x)
    if p is None:
        return f"its input {x!r} is a graph input, not the output of a convolution or linear layer"
    if p.op not in _LINEAR:
        return f"it follows {p.op} {p.name!r}, not a convolution or linear layer"
    if p.attrs.get("act", "none") != "none":
        return f"an activation ({p.attrs['act']}) sits between {p.name!r} and the normalization"
    if _sole_reader(graph, x) is not bn:
        return f"the output of {p.name!r} is also read elsewhere"
    if graph.tensors[x].dtype != "float32" or graph.tensors[p.inputs[1]].dtype != "float32":
        return "the layer is not float32"
    return None


# ---------------------------------------------------------------------------------------------
# passes
# ---------------------------------------------------------------------------------------------
def fold_batchnorm(graph: Graph) -> Graph:
    """W'[c] = W[c] * a[c], b'[c] = b[c] * a[c] + c[c] with a = scale / sqrt(var + eps),
    c = bias - mean * a (float64, rounded once to float32). Unfoldable batch_norm nodes are left
    in place (see :func:`batchnorm_fold_blocker`)."""
    from .ops.batchnorm import BatchNorm

    for bn in [n for n in graph.nodes if n.op == "batch_norm"]:
        if batchnorm_fold_blocker(graph, bn) is not None:
            continue
        p = graph.producer(bn.inputs[0])
        scale, bias, mean, var = (graph.tensors[i].data for i in bn.inputs[1:5])
        a, c = BatchNorm.affine(bn, scale, bias, mean, var)
        w = graph.tensors[p.inputs[1]].data.astype(np.float64)
        axis = _out_channel_axis(p.op)
        shape = [1] * w.ndim
        shape[axis] = -1
        _set_params(graph, p, w * a.reshape(shape), _bias_of(graph, p) * a + c)
        _absorb(graph, p, bn)
    graph.remove_unused()
    return verify(graph)


def fold_bias_add(graph: Graph) -> Graph:
    """add(y, k) with y = conv/fc output and k a float constant that varies at most along the
    channel (last) axis and does not grow y's shape -> bias += k."""
    for add in [n for n in graph.nodes if n.op == "add"]:
        ts = [graph.tensors[i] for i in add.inputs]
        if sum(t.is_const for t in ts) != 1:
            continue
        y, k = (ts[1], ts[0]) if ts[0].is_const else (ts[0], ts[1])
        p = graph.producer(y.name)
        if (p is None or p.op not in _LINEAR or p.attrs.get("act", "none") != "none"
                or _sole_reader(graph, y.name) is not add or y.dtype != "float32" or k.dtype != "float32"):
            continue
        out = graph.tensors[add.outputs[0]]
        cout = y.shape[-1]
        if out.shape != y.shape or any(d != 1 for d in k.shape[:-1]) or (k.shape and k.shape[-1] not in (1, cout)):
            continue
        b = _bias_of(graph, p) + np.broadcast_to(k.data.reshape(-1).astype(np.float64), (cout,))
        _set_params(graph, p, None, b)
        p.attrs["act"] = add.attrs.get("act", "none")
        _absorb(graph, p, add)
    graph.remove_unused()
    return verify(graph)


def fuse_activations(graph: Graph) -> Graph:
    """relu / relu6 reading the sole output of conv/fc/add with no activation -> ``act``.
    In int8 graphs only when the producer's output already has the activation's quantization."""
    for r in [n for n in graph.nodes if n.op in ("relu", "relu6")]:
        x = r.inputs[0]
        p = graph.producer(x)
        if p is None or p.op not in _LINEAR + ("add",) or p.attrs.get("act", "none") != "none":
            continue
        if _sole_reader(graph, x) is not r:
            continue
        tx, ty = graph.tensors[x], graph.tensors[r.outputs[0]]
        if tx.dtype != "float32" and tx.quant != ty.quant:
            continue
        p.attrs["act"] = r.op
        _absorb(graph, p, r)
    return verify(graph)


def fold_pad(graph: Graph) -> Graph:
    """pad of H and W only (value 0 in float; zero point in int8 with equal in/out quantization)
    whose sole reader is a conv2d / depthwise_conv2d -> added to the conv's ``pad``."""
    for pad in [n for n in graph.nodes if n.op == "pad"]:
        x, y = graph.tensors[pad.inputs[0]], graph.tensors[pad.outputs[0]]
        c = _sole_reader(graph, y.name)
        if c is None or c.op not in ("conv2d", "depthwise_conv2d") or c.inputs[0] != y.name:
            continue
        pads = [tuple(int(v) for v in p) for p in pad.attrs["pads"]]
        if len(pads) != 4 or pads[0] != (0, 0) or pads[3] != (0, 0):
            continue
        if x.dtype == "float32" and float(pad.attrs.get("value", 0.0)) != 0.0:
            continue
        if x.dtype != "float32" and x.quant != y.quant:
            continue
        top, left, bottom, right = c.attrs.get("pad", (0, 0, 0, 0))
        c.attrs["pad"] = (top + pads[1][0], left + pads[2][0], bottom + pads[1][1], right + pads[2][1])
        c.inputs[0] = x.name
        graph.nodes.remove(pad)
        del graph.tensors[y.name]
    return verify(graph)


def absorb_activation_into_quantize(graph: Graph) -> Graph:
    """float relu / relu6 whose sole reader is a ``quantize`` that clamps the same way (zero point
    -128, i.e. real 0 is the int8 minimum; for relu6 also 6.0 quantizing to >= 127) -> dropped:
    the quantize alone gives the same integers."""
    from .ops.quantize import quantize_array

    for q in [n for n in graph.nodes if n.op == "quantize"]:
        r = graph.producer(q.inputs[0])
        if r is None or r.op not in ("relu", "relu6") or _sole_reader(graph, r.outputs[0]) is not q:
            continue
        if graph.tensors[r.inputs[0]].dtype != "float32":
            continue
        qp = graph.tensors[q.outputs[0]].quant
        if qp.zp != -128:
            continue
        if r.op == "relu6" and int(quantize_array(np.float32(6.0), qp.s, qp.zp)) < 127:
            continue
        q.inputs[0] = r.inputs[0]
        graph.nodes.remove(r)
        del graph.tensors[r.outputs[0]]
    return verify(graph)


def remove_noops(graph: Graph) -> Graph:
    """Drop reshapes to the same shape and pads by zero (when a name would not be lost)."""
    for n in list(graph.nodes):
        if n.op == "reshape":
            noop = graph.tensors[n.inputs[0]].shape == graph.tensors[n.outputs[0]].shape
        elif n.op == "pad":
            noop = all(int(a) == 0 and int(b) == 0 for a, b in n.attrs["pads"])
        else:
            continue
        if noop:
            bypass(graph, n)
    graph.remove_unused()
    return verify(graph)


def remove_dead(graph: Graph) -> Graph:
    """Remove nodes whose outputs nobody reads (iterated to a fixed point), then unused tensors."""
    changed = True
    while changed:
        read = set(graph.outputs)
        for n in graph.nodes:
            read.update(n.inputs)
        keep = [n for n in graph.nodes if any(o in read for o in n.outputs)]
        changed = len(keep) != len(graph.nodes)
        graph.nodes = keep
    graph.remove_unused()
    return verify(graph)


DEFAULT_PASSES: tuple[Callable[[Graph], Graph], ...] = (
    remove_dead, fold_batchnorm, fold_bias_add, fuse_activations, absorb_activation_into_quantize, fold_pad,
    remove_noops,
)


def cleanup(graph: Graph, passes=DEFAULT_PASSES) -> Graph:
    """Run ``passes`` in order (each verifies the graph it leaves)."""
    for p in passes:
        p(graph)
    return graph
