"""The numpy reference interpreter: the oracle every C kernel and device is compared against.

Each node runs its registry entry's float reference when its first operand is float32, and its
int8 reference (with constants from the op's host-side ``prepare``, computed once) otherwise.
A quantized graph therefore runs integers end to end, with float only in boundary
quantize/dequantize nodes.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .ir import Graph, verify
from .ops import registry


class Interpreter:
    def __init__(self, graph: Graph, check: bool = True):
        if check:
            verify(graph)
        self.graph = graph
        self._prepared: dict[str, dict] = {}
        for n in graph.nodes:
            if self._is_int(n):
                self._prepared[n.name] = registry.get(n.op).prepare(n, graph)

    def _is_int(self, node) -> bool:
        first = self.graph.tensors[node.inputs[0]]
        return node.op == "quantize" or first.dtype != "float32"

    def prepared(self, node_name: str) -> dict:
        return self._prepared[node_name]

    def run(self, feeds: Mapping[str, np.ndarray] | np.ndarray, keep_all: bool = False) -> dict[str, np.ndarray]:
        """Execute the graph. ``feeds`` maps input names to arrays (or is the single input array).

        Returns the graph outputs by name, or every tensor value when ``keep_all``.
        """
        g = self.graph
        if not isinstance(feeds, Mapping):
            if len(g.inputs) != 1:
                raise ValueError(f"graph has {len(g.inputs)} inputs; pass a dict")
            feeds = {g.inputs[0]: feeds}
        env: dict[str, np.ndarray] = {}
        for name in g.inputs:
            if name not in feeds:
                raise ValueError(f"missing input {name!r}")
            t = g.tensors[name]
            x = np.asarray(feeds[name])
            if tuple(x.shape[1:]) != t.shape[1:]:
                raise ValueError(f"input {name!r}: shape {x.shape} does not match model input {t.shape} "
                                 f"(batch dimension may differ)")
            env[name] = x.astype(t.dtype, copy=False)
        batch = next(iter(env.values())).shape[0] if env else 1
        for n in g.nodes:
            op = registry.get(n.op)
            xs = [self._value(env, i) for i in n.inputs]
            if self._is_int(n):
                ys = op.forward_int8(n, xs, self._prepared[n.name])
            else:
                ys = op.forward_float(n, xs)
            for o, y in zip(n.outputs, ys):
                t = g.tensors[o]
                if y.dtype != np.dtype(t.dtype):
                    raise AssertionError(f"{n.op} {n.name!r}: produced {y.dtype}, IR says {t.dtype}")
                if y.shape[1:] != t.shape[1:] and batch == t.shape[0]:
                    raise AssertionError(f"{n.op} {n.name!r}: produced {y.shape}, IR says {t.shape}")
                env[o] = y
        if keep_all:
            return env
        return {o: env[o] for o in g.outputs}

    def _value(self, env, name):
        if name == "":
            return None
        t = self.graph.tensors[name]
        return t.data if t.is_const else env[name]


def run(graph: Graph, x: np.ndarray | Mapping[str, np.ndarray]) -> np.ndarray:
    """Run a single-output graph and return its output."""
    out = Interpreter(graph).run(x)
    return next(iter(out.values()))
