"""The op registry: one entry per op, holding everything the toolchain knows about that op.

An entry is a subclass of :class:`Op` registered with :func:`register`. It holds
  * ``infer``          shape/dtype inference (the verifier checks every node against it),
  * ``check``          attribute and operand validation with a one-line message,
  * ``forward_float``  float32 reference semantics,
  * ``prepare``        host-side int8 "Prepare": multipliers, shifts, clamp bounds (float64 allowed),
  * ``forward_int8``   integer reference kernel: integers in, integers out, no float,
  * ``macs``           multiply-accumulates per inference (for reports),
  * ``backward_float`` float64 gradient rule (the reference semantics of compile-time autodiff),
                       present when ``differentiable`` is True,
and later issues add backward rules, memory and the C emitter to the same entry.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from ..ir import Graph, Node, Tensor

_REGISTRY: dict[str, type["Op"]] = {}


class UnknownOpError(KeyError):
    pass


class Op:
    name: ClassVar[str] = ""
    #: input positions that must be constants (weights, biases, shape operands)
    const_inputs: ClassVar[tuple[int, ...]] = ()
    #: input positions holding trainable parameters (weights, bias)
    param_inputs: ClassVar[tuple[int, ...]] = ()
    #: True when ``backward_float`` is implemented (the op may sit on a backward path)
    differentiable: ClassVar[bool] = False

    @classmethod
    def infer(cls, node: "Node", ins: list["Tensor | None"]) -> list[tuple[tuple[int, ...], str]]:
        raise NotImplementedError

    @classmethod
    def check(cls, node: "Node", graph: "Graph") -> None:
        for i in cls.const_inputs:
            if i < len(node.inputs) and node.inputs[i] and not graph.tensors[node.inputs[i]].is_const:
                raise ValueError(f"node {node.name!r} ({node.op}): input {i} must be a constant")

    @classmethod
    def forward_float(cls, node: "Node", xs: list[np.ndarray | None]) -> list[np.ndarray]:
        raise NotImplementedError(f"{cls.name}: no float reference")

    @classmethod
    def prepare(cls, node: "Node", graph: "Graph") -> dict[str, Any]:
        return {}

    @classmethod
    def forward_int8(cls, node: "Node", xs: list[np.ndarray | None], p: dict[str, Any]) -> list[np.ndarray]:
        raise NotImplementedError(f"{cls.name}: no int8 reference")

    @classmethod
    def macs(cls, node: "Node", graph: "Graph") -> int:
        return 0

    @classmethod
    def backward_float(cls, node: "Node", xs: list[np.ndarray | None], ys: list[np.ndarray],
                       gys: list[np.ndarray], need: set[int], rows: int | None = None) -> dict[int, np.ndarray]:
        """Float64 gradients of the inputs at positions ``need``: ``{position: dL/dx}``.

        xs: forward inputs in ``node.inputs`` order (constants included); ys: forward outputs (after
        the fused activation); gys: dL/dy, one per output, shaped like ys. Only requested positions
        are returned, each shaped like its input, except that ``rows`` (weighted ops only) limits a
        weight/bias gradient to output channels ``[0, rows)``.
        """
        raise NotImplementedError(f"{cls.name}: no backward rule (not differentiable)")


def register(cls: type[Op]) -> type[Op]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no op name")
    if cls.name in _REGISTRY:
        raise ValueError(f"op {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def get(name: str) -> type[Op]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownOpError(f"op {name!r} is not in the registry ({', '.join(sorted(_REGISTRY))})") from None


def all_ops() -> dict[str, type[Op]]:
    return dict(_REGISTRY)
