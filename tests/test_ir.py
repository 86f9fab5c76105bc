"""The IR verifier rejects every broken invariant with a message naming the culprit."""
from __future__ import annotations

import numpy as np
import pytest

from microtrain.compiler.interpreter import Interpreter
from microtrain.compiler.ir import Graph, IRError, Node, QParams, Tensor, topo_sort, verify
from microtrain.compiler.ops import registry


def _conv_graph(int8: bool = True) -> Graph:
    rng = np.random.default_rng(0)
    g = Graph(name="t")
    if int8:
        g.add_tensor(Tensor("x", (1, 5, 5, 2), "int8", quant=QParams(0.05, 1)))
        g.add_tensor(Tensor("w", (3, 3, 3, 2), "int8", data=rng.integers(-127, 128, (3, 3, 3, 2)),
                            quant=QParams(np.full(3, 0.01), 0, axis=0)))
        g.add_tensor(Tensor("b", (3,), "int32", data=np.zeros(3)))
        g.add_tensor(Tensor("y", (1, 5, 5, 3), "int8", quant=QParams(0.1, 0)))
    else:
        g.add_tensor(Tensor("x", (1, 5, 5, 2), "float32"))
        g.add_tensor(Tensor("w", (3, 3, 3, 2), "float32", data=rng.standard_normal((3, 3, 3, 2))))
        g.add_tensor(Tensor("b", (3,), "float32", data=np.zeros(3)))
        g.add_tensor(Tensor("y", (1, 5, 5, 3), "float32"))
    g.nodes.append(Node("conv2d", "conv", ["x", "w", "b"], ["y"], {"pad": (1, 1, 1, 1), "act": "relu"}))
    g.inputs, g.outputs = ["x"], ["y"]
    return g


def test_valid_graph_passes():
    verify(_conv_graph())
    verify(_conv_graph(int8=False))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda g: g.tensors["y"].__setattr__("shape", (1, 4, 4, 3)), "shape"),
        (lambda g: g.tensors["y"].__setattr__("dtype", "int32"), "dtype"),
        (lambda g: g.nodes[0].inputs.__setitem__(0, "nope"), "unknown tensor"),
        (lambda g: g.nodes[0].__setattr__("op", "fancy_op"), "not in the registry"),
        (lambda g: g.tensors["y"].__setattr__("quant", None), "no quantization"),
        (lambda g: g.tensors["w"].__setattr__("quant", QParams(np.ones(2), 0, axis=0)), "channels"),
        (lambda g: g.tensors["y"].__setattr__("quant", QParams(-1.0, 0)), "> 0"),
        (lambda g: g.tensors["y"].__setattr__("quant", QParams(1.0, 300)), "zero point"),
        (lambda g: g.nodes[0].attrs.__setitem__("act", "gelu"), "fused activation"),
        (lambda g: g.outputs.append("ghost"), "never produced"),
        (lambda g: g.nodes.append(Node("relu", "conv", ["y"], ["y"])), "duplicate node"),
    ],
)
def test_verifier_rejects(mutate, message):
    g = _conv_graph()
    mutate(g)
    with pytest.raises((IRError, ValueError, KeyError), match=message):
        verify(g)


def test_verifier_rejects_use_before_definition():
    g = _conv_graph()
    g.add_tensor(Tensor("z", (1, 5, 5, 3), "int8", quant=QParams(0.1, 0)))
    g.nodes.insert(0, Node("relu", "r", ["y"], ["z"]))
    with pytest.raises(IRError, match="before it is produced"):
        verify(g)
    topo_sort(g)
    verify(g)


def test_constant_data_must_match_declaration():
    g = _conv_graph()
    g.tensors["b"].data = np.zeros(4, np.int32)
    with pytest.raises(IRError, match="data shape"):
        verify(g)


def test_interpreter_runs_any_batch_size():
    g = _conv_graph()
    x = np.random.default_rng(1).integers(-128, 128, (4, 5, 5, 2)).astype(np.int8)
    y = Interpreter(g).run(x)["y"]
    assert y.shape == (4, 5, 5, 3) and y.dtype == np.int8
    one = Interpreter(g).run(x[2:3])["y"]
    np.testing.assert_array_equal(one, y[2:3])


def test_every_op_has_shape_inference_and_a_reference():
    for name, op in registry.all_ops().items():
        assert op.infer is not registry.Op.infer, f"{name}: no shape inference"
        assert op.forward_float is not registry.Op.forward_float, f"{name}: no float reference"
