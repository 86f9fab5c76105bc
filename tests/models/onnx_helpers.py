"""Build small ONNX models, run them in onnxruntime and in the reference interpreter.

Layout contract: every helper here takes and returns arrays in the ONNX layout (NCHW for 4-D);
``run_ir`` transposes at the boundary using ``graph.meta`` as the reader records it.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from microtrain.compiler.interpreter import Interpreter

F32 = TensorProto.FLOAT


def vi(name: str, shape, elem=F32):
    return helper.make_tensor_value_info(name, elem, list(shape) if shape is not None else None)


def init(name: str, arr: np.ndarray):
    return numpy_helper.from_array(np.asarray(arr), name)


def make_model(nodes, inputs, outputs, initializers=(), opset: int = 13, name: str = "t") -> onnx.ModelProto:
    """A checked model; ``inputs``/``outputs`` are (name, shape) pairs or ValueInfoProtos."""
    ins = [i if isinstance(i, onnx.ValueInfoProto) else vi(*i) for i in inputs]
    outs = [o if isinstance(o, onnx.ValueInfoProto) else vi(*o) for o in outputs]
    g = helper.make_graph(list(nodes), name, ins, outs, initializer=list(initializers))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="microtrain-tests")
    if any(not o.type.tensor_type.HasField("shape") for o in outs):
        m = onnx.shape_inference.infer_shapes(m, strict_mode=True)  # fills the output shapes
    onnx.checker.check_model(m)
    return m


def ort_session(model):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    data = model if isinstance(model, (bytes, str)) else model.SerializeToString()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def run_ort(model, feeds: dict) -> list[np.ndarray]:
    return ort_session(model).run(None, feeds)


def to_ir(x: np.ndarray, layout: str) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if layout == "NCHW" else x


def from_ir(y: np.ndarray, layout: str) -> np.ndarray:
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2)) if layout == "NCHW" else y


def run_ir(graph, feeds: dict, interp: Interpreter | None = None) -> list[np.ndarray]:
    """Run the IR graph on ONNX-layout feeds keyed by ONNX input name; outputs in ONNX layout."""
    interp = interp or Interpreter(graph)
    layouts = {m["name"]: m["layout"] for m in graph.meta["inputs"]}
    out = interp.run({k: to_ir(np.asarray(v), layouts[k]) for k, v in feeds.items()})
    return [from_ir(out[m["tensor"]], m["layout"]) for m in graph.meta["outputs"]]


def random_feeds(model: onnx.ModelProto, rng: np.random.Generator, batch: int = 1) -> dict:
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for i in model.graph.input:
        if i.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else batch for d in i.type.tensor_type.shape.dim]
        feeds[i.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


def quantize_qdq(model: onnx.ModelProto, calib: list[dict], workdir, per_channel: bool,
                 activation_type: str = "int8", name: str = "m") -> onnx.ModelProto:
    """``onnxruntime.quantization.quantize_static`` in QDQ format with int8 weights and the given
    activation type ("int8" or "uint8"), calibrated (MinMax) on ``calib`` feeds."""
    import os

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(calib)

        def get_next(self):
            return next(self.it, None)

    src, dst = os.path.join(str(workdir), f"{name}_f32.onnx"), os.path.join(str(workdir), f"{name}_qdq.onnx")
    onnx.save(model, src)
    act = QuantType.QInt8 if activation_type == "int8" else QuantType.QUInt8
    quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=act, weight_type=QuantType.QInt8)
    return onnx.load(dst)


def expose_quantized_outputs(q: onnx.ModelProto) -> onnx.ModelProto:
    """Copy of ``q`` whose graph outputs are the quantized tensors feeding the final
    DequantizeLinear nodes (so int8 results can be compared exactly)."""
    m = onnx.ModelProto()
    m.CopyFrom(q)
    producers = {n.output[0]: n for n in m.graph.node if n.output}
    outs = []
    for o in m.graph.output:
        p = producers.get(o.name)
        if p is None or p.op_type != "DequantizeLinear":
            raise ValueError(f"output {o.name!r} is not produced by a DequantizeLinear")
        q_node = producers[p.input[0]]
        elem = TensorProto.INT8 if np.asarray(numpy_helper.to_array(
            next(t for t in m.graph.initializer if t.name == q_node.input[2]))).dtype == np.int8 else TensorProto.UINT8
        outs.append(helper.make_tensor_value_info(p.input[0], elem, None))
    del m.graph.output[:]
    m.graph.output.extend(outs)
    return m


def onnx_value_to_ir(arr: np.ndarray, info: dict) -> np.ndarray:
    """An ONNX-layout value -> the layout of its IR tensor (``graph.meta["onnx_values"][name]``)."""
    if info["layout"] == "nchw":
        return np.ascontiguousarray(arr.transpose(0, 2, 3, 1))
    if info["layout"] == "flat":
        c, h, w = info["chw"]
        return np.ascontiguousarray(arr.reshape(arr.shape[0], c, h, w).transpose(0, 2, 3, 1).reshape(arr.shape[0], -1))
    return arr


def expose_all_quantized(q: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Copy of ``q`` whose graph outputs are every QuantizeLinear output (int8/uint8)."""
    m = onnx.ModelProto()
    m.CopyFrom(q)
    inits = {t.name: t for t in m.graph.initializer}
    names = []
    del m.graph.output[:]
    for n in m.graph.node:
        if n.op_type == "QuantizeLinear":
            zp = numpy_helper.to_array(inits[n.input[2]])
            elem = TensorProto.INT8 if zp.dtype == np.int8 else TensorProto.UINT8
            m.graph.output.append(helper.make_tensor_value_info(n.output[0], elem, None))
            names.append(n.output[0])
    return m, names


def per_node_int8_agreement(q: onnx.ModelProto, graph, feeds: dict) -> dict[str, tuple[str, float, int]]:
    """Teacher-forced comparison of every int8 IR node of ``graph`` (imported from QDQ model ``q``):
    the node runs on onnxruntime's int8 input tensors and its output is compared with
    onnxruntime's. Returns {node name: (op, fraction of equal elements, max |difference|)}."""
    from microtrain.compiler.ops import registry

    qa, names = expose_all_quantized(q)
    ort_vals = dict(zip(names, ort_session(qa).run(None, feeds)))
    values = graph.meta["onnx_values"]
    ir_val = {}  # IR int8 tensor -> onnxruntime's value in IR layout
    for name, arr in ort_vals.items():
        info = values.get(name)
        if info is not None and info["tensor"] not in ir_val:
            ir_val[info["tensor"]] = onnx_value_to_ir(arr, info)
    interp = Interpreter(graph)
    out = {}
    for n in graph.nodes:
        if n.op in ("quantize", "dequantize") or graph.tensors[n.inputs[0]].dtype != "int8":
            continue
        ins = [graph.tensors[i].data if graph.tensors[i].is_const else ir_val.get(i) for i in n.inputs]
        if any(v is None for v in ins) or n.outputs[0] not in ir_val:
            raise AssertionError(f"node {n.name} ({n.op}): no onnxruntime value for {n.inputs} -> {n.outputs}")
        got = registry.get(n.op).forward_int8(n, ins, interp.prepared(n.name))[0].astype(np.int64)
        d = np.abs(got - ir_val[n.outputs[0]].astype(np.int64))
        out[n.name] = (n.op, float((d == 0).mean()), int(d.max()))
    return out
