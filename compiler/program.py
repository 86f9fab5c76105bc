"""Training programs: compile-time autodiff of an inference graph under a schedule.

A :class:`TrainingProgram` is an ordered list of :class:`Step` records that later stages plan
(memory) and emit (C), and that the simulators execute. Steps, in order:

  forward   one per inference node, in graph order (the loss replaces a final softmax);
  loss      softmax cross-entropy on the logits: ``grad:<logits>``;
  backward  per node in reverse order, only where a gradient is needed:
              ``grad_input`` for each activation operand that leads back to a trainable
              parameter (nothing before the earliest trained layer),
              ``update``     for each trainable weight/bias slice: its gradient is computed and
              applied in one step, right after the node's input gradient (which must read the
              weights before they change). No full weight-gradient tensor is ever live.

Tensor namespace: forward values use their IR names; the gradient of a value ``t`` is
``grad:t``; a ReLU/ReLU6 backward mask of output ``t`` is ``mask:t`` (bit-packed on device).
Each step lists what it reads and writes, so lifetimes come straight from the step order.

Saved tensors (what the backward reads from the forward pass) are exactly the inputs of trained
layers (for weight gradients), the masks of activations on the gradient path, and the inputs of
max pools on the gradient path. Frozen prefixes save nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .ir import Graph, Node
from .ops import registry

#: ops with trainable weight (input 1) and bias (input 2), and the weight's output-channel axis
LINEAR_OPS = {"conv2d": 0, "depthwise_conv2d": 3, "fully_connected": 0}


def grad_name(t: str) -> str:
    return f"grad:{t}"


def mask_name(t: str) -> str:
    return f"mask:{t}"


@dataclass
class Step:
    kind: str  # "forward" | "loss" | "grad_input" | "update"
    node: str  # IR node the step belongs to ("" for the loss)
    op: str  # registry op name (or "softmax_cross_entropy")
    reads: list[str]
    writes: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"{self.kind:<10} {self.op:<22} {self.node:<24} {self.reads} -> {self.writes}"


@dataclass
class TrainingProgram:
    graph: Graph
    plan: Any  # schedule.TrainPlan
    steps: list[Step]
    logits: str  # tensor the loss reads
    saved: set[str]  # forward values read by backward steps
    masks: dict[str, str]  # mask name -> activation it is taken from

    def summary(self) -> str:
        return "\n".join(repr(s) for s in self.steps)

    @property
    def backward_steps(self) -> list[Step]:
        return [s for s in self.steps if s.kind in ("grad_input", "update")]


def _act_of(node: Node) -> str:
    if node.op in ("relu", "relu6"):
        return node.op
    return node.attrs.get("act", "none")


def build_program(graph: Graph, plan) -> TrainingProgram:
    """Differentiate ``graph`` (an inference graph, float or int8) for the backprop part of ``plan``.

    ``plan`` is a resolved schedule: ``plan.layers`` lists, per conv/fc node, ``weight_rows`` and
    ``bias_rows`` (0 = frozen) and ``method`` ("bp" | "fg"). Only "bp" layers get backward steps;
    forward-gradient layers are handled by the forward-gradient driver.
    """
    nodes = list(graph.nodes)
    logits, body = _strip_output(graph, nodes)
    bp = {lt.node: lt for lt in plan.layers if lt.method == "bp" and (lt.weight_rows or lt.bias_rows)}

    # requires_grad: a value is on the gradient path if a bp-trained parameter influences it.
    rg: set[str] = set()
    for n in body:
        if n.name in bp or any(i in rg for i in n.inputs):
            rg.update(n.outputs)

    steps: list[Step] = []
    saved: set[str] = set()
    masks: dict[str, str] = {}
    for n in body:
        steps.append(Step("forward", n.name, n.op, [i for i in n.inputs if i], list(n.outputs)))

    if bp:
        if logits not in rg:
            raise ValueError(f"trained layers do not reach the logits {logits!r}")
        steps.append(Step("loss", "", "softmax_cross_entropy", [logits, "label"], [grad_name(logits)]))

    for n in reversed(body):
        if not any(o in rg for o in n.outputs):
            continue
        op = registry.get(n.op)
        gys = [grad_name(o) for o in n.outputs]
        reads_common = list(gys)
        act = _act_of(n)
        if act != "none":
            m = mask_name(n.outputs[0])
            masks[m] = n.outputs[0]
            reads_common.append(m)
        if n.op == "max_pool2d":
            reads_common += [n.inputs[0], n.outputs[0]]
            saved.update((n.inputs[0], n.outputs[0]))
        # the bias update first (the input gradient does not read the bias, and it may then
        # scale the output gradient in place), then the input gradients (they read the weights
        # before the weight update changes them), then the weight update
        lt = bp.get(n.name)
        if lt is not None and lt.bias_rows:
            steps.append(Step("update", n.name, n.op, list(reads_common), [n.inputs[2]],
                              {"input": 2, "rows": lt.bias_rows}))
        act_inputs = [i for k, i in enumerate(n.inputs) if i and k not in op.param_inputs
                      and not graph.tensors[i].is_const]
        for k, i in enumerate(n.inputs):
            if i in act_inputs and i in rg:
                reads = reads_common + ([n.inputs[1]] if n.op in LINEAR_OPS else [])
                steps.append(Step("grad_input", n.name, n.op, reads, [grad_name(i)], {"input": k}))
        if lt is not None and lt.weight_rows:
            saved.add(n.inputs[0])
            steps.append(Step("update", n.name, n.op, reads_common + [n.inputs[0]], [n.inputs[1]],
                              {"input": 1, "rows": lt.weight_rows}))
    saved.update(masks.values())
    return TrainingProgram(graph, plan, steps, logits, saved, masks)


def _strip_output(graph: Graph, nodes: list[Node]) -> tuple[str, list[Node]]:
    """The logits tensor and the nodes computing it: a trailing softmax (and a boundary
    dequantize) is replaced by the loss."""
    if len(graph.outputs) != 1:
        raise ValueError(f"training needs a single-output classifier; the model has {len(graph.outputs)} outputs")
    out = graph.outputs[0]
    body = list(nodes)
    while body and out in body[-1].outputs and body[-1].op in ("softmax", "dequantize"):
        out = body[-1].inputs[0]
        body.pop()
    return out, body
