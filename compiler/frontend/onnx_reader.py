"""ONNX reader: a float32 ONNX model or a QDQ int8 model (as ``onnxruntime.quantization`` writes
it) -> a verified IR graph.

Contracts
  * Opsets 13 and newer (up to what the installed ``onnx`` knows); each op is accepted only at the
    schema versions listed in ``_SCHEMA_VERSIONS`` (for these ops, versions 22-28 changed only
    type lists and Q/DQ attributes, which are checked). Clip(0, 6) is relu6, Clip(0) relu.
  * Layout: ONNX 4-D tensors are NCHW; the IR is NHWC. A 4-D graph input ``x`` of ONNX shape
    [N, C, H, W] becomes the IR input ``x`` of shape [N, H, W, C]; ``graph.meta`` records the ONNX
    layout and shape of every input and output (``input_layout`` / ``input_shape`` for the first
    input) so callers transpose at the boundary. Conv weights become OHWI, depthwise weights
    [1, KH, KW, C*M]. A 2-D tensor keeps its layout.
  * A flatten/reshape of an NCHW tensor with H*W > 1 to [N, C*H*W] is done in NHWC order; the
    Gemm/MatMul that reads it gets its weight columns permuted at import so the result equals
    ONNX's channel-major flatten. Any other reader of such a tensor is rejected.
  * A symbolic batch dimension becomes 1; other dimensions must be static.
  * QDQ: DequantizeLinear(int8 constant) is a quantized weight/bias (int32 bias kept when its
    scale is s_in * s_w, else requantized to it); QuantizeLinear -> DequantizeLinear on an
    activation makes it an int8 IR tensor with those parameters. An op whose data inputs are such
    tensors and whose result only QuantizeLinear reads runs in int8 with that quantization (a
    Relu/Clip in between is fused; a range starting at 0, where onnxruntime dropped the Relu, is
    recorded as the fused act); otherwise it runs in float on dequantized inputs (mixed
    precision). Float graph inputs get a ``quantize`` node, float graph outputs a ``dequantize``
    node. uint8 activations are stored as int8 (value - 128, zero point - 128), which is exact.
  * Errors: an op (or op configuration) outside the above raises UnsupportedOpError naming the op
    and node and listing SUPPORTED_ONNX_OPS; anything malformed raises ModelFormatError with one
    line. No other exception type leaves :func:`load_onnx`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import fixedpoint as fp
from .. import passes
from ..errors import MicrotrainError, ModelFormatError, UnsupportedOpError
from ..ir import Graph, Node, QParams, Tensor, verify
from ..ops._common import out_size

SUPPORTED_ONNX_OPS = (
    "Add", "AveragePool", "BatchNormalization", "Clip", "Constant", "Conv", "DequantizeLinear",
    "Dropout", "Flatten", "Gemm", "GlobalAveragePool", "Identity", "MatMul", "MaxPool", "Pad",
    "QuantizeLinear", "Relu", "Reshape", "Softmax", "Squeeze", "Unsqueeze",
)
MIN_OPSET = 13

# Schema versions (onnx.defs since_version) whose semantics this reader implements.
_SCHEMA_VERSIONS = {
    "Add": (13, 14), "AveragePool": (11, 19, 22), "BatchNormalization": (9, 14, 15),
    "Clip": (13,), "Constant": (13, 19, 21, 23, 24, 25), "Conv": (11, 22),
    "DequantizeLinear": (13, 19, 21, 23, 24, 25, 28), "Dropout": (13, 22),
    "Flatten": (13, 21, 23, 24, 25), "Gemm": (13,), "GlobalAveragePool": (1, 22),
    "Identity": (13, 14, 16, 19, 21, 23, 24, 25), "MatMul": (13,), "MaxPool": (12, 22),
    "Pad": (13, 18, 19, 21, 23, 24, 25), "QuantizeLinear": (13, 19, 21, 23, 24, 25, 28),
    "Relu": (13, 14), "Reshape": (13, 14, 19, 21, 23, 24, 25), "Softmax": (13,),
    "Squeeze": (13, 21, 23, 24, 25), "Unsqueeze": (13, 21, 23, 24, 25),
}

_FLOAT, _UINT8, _INT8 = 1, 2, 3  # onnx.TensorProto element types
_ATTR_TYPES = {"int": 2, "ints": 7, "float": 1, "string": 3, "tensor": 4}


def load_onnx(model: Any, name: str | None = None) -> Graph:
    """Read ``model`` (a path, serialized bytes or an ``onnx.ModelProto``) into a verified graph."""
    source = name or (os.fspath(model) if isinstance(model, (str, os.PathLike)) else "<onnx model>")
    try:
        proto = _parse(model, source)
        return _Importer(proto, source).run()
    except MicrotrainError:
        raise
    except RecursionError as e:
        raise ModelFormatError(f"{source}: model is nested too deeply to read") from e
    except Exception as e:  # a malformed model reached a corner no explicit check covers
        raise ModelFormatError(f"{source}: cannot import model: {_one_line(f'{type(e).__name__}: {e}')}") from e


# ---------------------------------------------------------------------------------------------
# parsing and model-level validation
# ---------------------------------------------------------------------------------------------
def _one_line(s: str, limit: int = 300) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def _parse(model: Any, source: str):
    import onnx
    from google.protobuf.message import DecodeError

    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray, memoryview)):
        data, base = bytes(model), None
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ModelFormatError(f"{source}: cannot read file ({e.strerror or e})") from e
        base = os.path.dirname(os.path.abspath(path))
    else:
        raise ModelFormatError(f"{source}: expected a path, bytes or onnx.ModelProto, got {type(model).__name__}")
    if not data:
        raise ModelFormatError(f"{source}: empty file")
    try:
        proto = onnx.ModelProto.FromString(data)
    except (DecodeError, ValueError, TypeError, RuntimeError) as e:
        raise ModelFormatError(f"{source}: not a valid ONNX protobuf ({_one_line(e) or 'decode error'})") from e
    if base is not None and _has_external_data(proto):
        from onnx.external_data_helper import load_external_data_for_model

        try:
            load_external_data_for_model(proto, base)
        except Exception as e:
            raise ModelFormatError(f"{source}: cannot load external tensor data ({_one_line(e)})") from e
    return proto


def _has_external_data(proto) -> bool:
    return any(t.data_location == 1 for t in proto.graph.initializer) or any(
        a.t.data_location == 1 for n in proto.graph.node for a in n.attribute if a.type == 4)


def _check_model(proto, source: str) -> int:
    """Model-level checks; returns the ai.onnx opset version."""
    import onnx

    if not proto.HasField("graph") or (len(proto.graph.node) == 0 and len(proto.graph.output) == 0):
        raise ModelFormatError(f"{source}: not an ONNX model (no graph)")
    versions = [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise ModelFormatError(f"{source}: the model imports no ai.onnx opset")
    opset = int(versions[0])
    newest = onnx.defs.onnx_opset_version()
    if opset < MIN_OPSET:
        raise ModelFormatError(
            f"{source}: opset {opset} is older than {MIN_OPSET}; convert it first "
            f"(onnx.version_converter.convert_version(model, {MIN_OPSET}))")
    if opset > newest:
        raise ModelFormatError(f"{source}: opset {opset} is newer than the installed onnx package knows ({newest})")
    return opset


def _checker_context(proto):
    """onnx.checker context for per-node schema checks (arity, attribute types). Whole-model
    checking is not used: it rejects models onnxruntime runs (e.g. graph outputs without shapes)."""
    import onnx

    ctx = onnx.checker.C.CheckerContext()
    ctx.ir_version = int(proto.ir_version) if proto.ir_version > 0 else onnx.IR_VERSION
    ctx.opset_imports = {("" if o.domain == "ai.onnx" else o.domain): int(o.version) for o in proto.opset_import}
    return ctx


def _elem_name(elem: int) -> str:
    import onnx

    try:
        return onnx.TensorProto.DataType.Name(elem)
    except ValueError:
        return str(elem)


# ---------------------------------------------------------------------------------------------
# importer state
# ---------------------------------------------------------------------------------------------
@dataclass
class _Val:
    """An ONNX activation: its IR tensor, its ONNX shape and how the IR stores it.

    layout "nchw": 4-D, IR tensor is NHWC; "plain": IR shape == ONNX shape (2-D);
    "flat": 2-D [N, C*H*W] whose IR element order is (H, W, C) where ONNX's is (C, H, W);
    ``chw`` holds (C, H, W).
    """

    ir: str
    shape: tuple[int, ...]
    layout: str
    chw: tuple[int, int, int] | None = None


@dataclass
class _QConst:
    """DequantizeLinear of a constant: real = scale * (q - zero_point) along ``axis`` (or per tensor)."""

    q: np.ndarray
    scale: np.ndarray  # float32, 1-D (size 1 for per tensor)
    zero_point: np.ndarray  # int64, same size
    axis: int | None

    def real(self) -> np.ndarray:
        if self.axis is None:
            s, z = np.float32(self.scale[0]), np.float32(self.zero_point[0])
            return (s * (self.q.astype(np.float32) - z)).astype(np.float32)
        shape = [1] * self.q.ndim
        shape[self.axis] = -1
        s = self.scale.reshape(shape).astype(np.float32)
        z = self.zero_point.reshape(shape).astype(np.float32)
        return (s * (self.q.astype(np.float32) - z)).astype(np.float32)


class _Ctx:
    """One ONNX node being converted."""

    def __init__(self, imp: "_Importer", node, name: str):
        self.imp, self.node, self.name, self.op = imp, node, name, node.op_type
        self.attrs = {}
        for a in node.attribute:
            if a.name in self.attrs:
                self.fail(f"attribute {a.name!r} given twice")
            self.attrs[a.name] = a

    # ---- errors ----------------------------------------------------------------------------
    def unsupported(self, detail: str) -> UnsupportedOpError:
        return UnsupportedOpError(self.op, self.name, SUPPORTED_ONNX_OPS, detail)

    def fail(self, msg: str):
        raise ModelFormatError(f"{self.imp.source}: node {self.name!r} ({self.op}): {msg}")

    # ---- attributes --------------------------------------------------------------------------
    def attr(self, key: str, kind: str, default=None):
        import onnx

        a = self.attrs.get(key)
        if a is None:
            return default
        if a.type != _ATTR_TYPES[kind]:
            self.fail(f"attribute {key!r} must be {kind}, got type {a.type}")
        v = onnx.helper.get_attribute_value(a)
        if kind == "string":
            try:
                return v.decode("utf-8")
            except UnicodeDecodeError:
                self.fail(f"attribute {key!r} is not valid UTF-8")
        if kind == "ints":
            return [int(x) for x in v]
        if kind == "float":
            v = float(v)
            if not math.isfinite(v):
                self.fail(f"attribute {key!r} is not finite")
        return v

    def ints(self, key: str, n: int, default: list[int] | None) -> list[int]:
        v = self.attr(key, "ints", None)
        if v is None:
            if default is None:
                self.fail(f"attribute {key!r} is required")
            return list(default)
        if len(v) != n:
            self.fail(f"attribute {key!r} must have {n} values, got {v}")
        return v

    # ---- inputs ------------------------------------------------------------------------------
    def n_inputs(self) -> int:
        return len(self.node.input)

    def has(self, i: int) -> bool:
        return i < len(self.node.input) and self.node.input[i] != ""

    def input_name(self, i: int) -> str:
        if not self.has(i):
            self.fail(f"input {i} is missing")
        return self.node.input[i]

    def is_const(self, i: int) -> bool:
        n = self.input_name(i)
        return n in self.imp.consts or n in self.imp.qconsts

    def act(self, i: int) -> _Val:
        n = self.input_name(i)
        v = self.imp.vals.get(n)
        if v is None:
            if n in self.imp.consts or n in self.imp.qconsts:
                raise self.unsupported(f"input {i} ({n!r}) is a constant; this op needs an activation there")
            self.fail(f"input {n!r} is undefined")
        return v

    def const(self, i: int, what: str = "") -> np.ndarray:
        """A constant input as a float-or-int numpy array (a QDQ constant is dequantized)."""
        n = self.input_name(i)
        if n in self.imp.consts:
            return self.imp.consts[n]
        if n in self.imp.qconsts:
            return self.imp.qconsts[n].real()
        if n in self.imp.vals:
            raise self.unsupported(f"{what or f'input {i}'} ({n!r}) must be a constant initializer")
        self.fail(f"input {n!r} is undefined")

    def opt_const(self, i: int, what: str = ""):
        return self.const(i, what) if self.has(i) else None

    def qconst(self, i: int) -> _QConst | None:
        return self.imp.qconsts.get(self.input_name(i)) if self.has(i) else None

    def out(self, i: int = 0) -> str:
        if i >= len(self.node.output) or not self.node.output[i]:
            self.fail(f"output {i} is missing")
        return self.node.output[i]

    def extra_outputs_used(self, first: int) -> bool:
        return any(o and (self.imp.n_readers.get(o, 0) > 0) for o in self.node.output[first:])


class _Importer:
    def __init__(self, proto, source: str):
        self.proto, self.source = proto, source
        self.opset = _check_model(proto, source)
        self.gp = proto.graph
        self.g = Graph(name=_one_line(self.gp.name or "onnx_model", 80))
        self.consts: dict[str, np.ndarray] = {}
        self.qconsts: dict[str, _QConst] = {}
        self.vals: dict[str, _Val] = {}
        self.float_view: dict[str, str] = {}
        self.node_names: set[str] = set()
        self.readers: dict[str, list] = {}  # ONNX value -> reading NodeProtos
        self.display: list[str] = []  # unique node name per node index (name or OpType_index)
        self.display_of: dict[int, str] = {}  # id(NodeProto) -> display name
        self.n_readers: dict[str, int] = {}
        self.graph_outputs = [o.name for o in self.gp.output]
        self.softmax_nodes: list[tuple[str, str]] = []
        self.node_ops: dict[str, str] = {}  # display name -> ONNX op type
        self.onnx_int8: set[str] = set()  # ONNX values whose ONNX type is int8/uint8 (not float)

    # ---- driver ----------------------------------------------------------------------------
    def run(self) -> Graph:
        self._check_structure()
        self.checker = _checker_context(self.proto)
        self._read_initializers()
        self._read_inputs()
        for idx, node in enumerate(self.gp.node):
            self._convert(idx, node)
        self._finish_outputs()
        g = self.g
        try:
            verify(g)
        except MicrotrainError:
            raise
        except Exception as e:
            raise ModelFormatError(f"{self.source}: inconsistent model: {_one_line(e)}") from e
        passes.cleanup(g)
        for n in g.nodes:
            if n.op == "batch_norm":
                raise UnsupportedOpError("BatchNormalization", n.name, SUPPORTED_ONNX_OPS,
                                         f"cannot be folded: {passes.batchnorm_fold_blocker(g, n)}")
        renamed = self._name_outputs()
        for k, m in enumerate(g.meta["outputs"]):
            m["tensor"] = g.outputs[k]
        # ONNX activation name -> the IR tensor holding its value (an int8 tensor holds the
        # dequantized value) and how it is laid out there ("nchw": IR is NHWC; "flat": IR order
        # (H, W, C) of ONNX's (C, H, W) flatten; "plain": same layout).
        g.meta["onnx_values"] = {
            k: {"tensor": renamed.get(v.ir, v.ir), "layout": v.layout, "chw": list(v.chw) if v.chw else None}
            for k, v in self.vals.items() if renamed.get(v.ir, v.ir) in g.tensors}
        g.meta["quantized"] = any(g.tensors[t].dtype == "int8" for t in g.tensors if not g.tensors[t].is_const)
        return verify(g)

    def _check_structure(self) -> None:
        """Every node input is defined before use (graph input, initializer, earlier output)."""
        defined = {i.name for i in self.gp.input} | {t.name for t in self.gp.initializer}
        if len(self.gp.sparse_initializer):
            raise ModelFormatError(f"{self.source}: sparse initializers are not supported")
        for idx, node in enumerate(self.gp.node):
            base = node.name or f"{node.op_type}_{idx}"
            name, k = base, 1
            while name in self.node_names:
                name, k = f"{base}_{k}", k + 1
            self.node_names.add(name)
            self.display.append(name)
            self.display_of[id(node)] = name
            self.node_ops[name] = node.op_type
            for i in node.input:
                if i and i not in defined:
                    raise ModelFormatError(
                        f"{self.source}: node {name!r} ({node.op_type}): input {i!r} is not a graph input, "
                        f"an initializer or the output of an earlier node")
                if i:
                    self.readers.setdefault(i, []).append(node)
                    self.n_readers[i] = self.n_readers.get(i, 0) + 1
            for o in node.output:
                if o:
                    defined.add(o)
        for o in self.graph_outputs:
            if o not in defined:
                raise ModelFormatError(f"{self.source}: graph output {o!r} is never produced")
            self.n_readers[o] = self.n_readers.get(o, 0) + 1
        if not self.graph_outputs:
            raise ModelFormatError(f"{self.source}: the graph has no outputs")

    def _read_initializers(self) -> None:
        from onnx import numpy_helper

        for t in self.gp.initializer:
            try:
                arr = numpy_helper.to_array(t)
            except Exception as e:
                raise ModelFormatError(f"{self.source}: initializer {t.name!r} is unreadable ({_one_line(e)})") from e
            self.consts[t.name] = np.asarray(arr)

    def _read_inputs(self) -> None:
        first = True
        self.g.meta.update({"source": self.source, "format": "onnx", "opset": self.opset,
                            "producer": self.proto.producer_name, "inputs": [], "outputs": []})
        for vi in self.gp.input:
            if vi.name in self.consts:
                continue  # an initializer listed as an input (IR < 4): a constant
            shape, elem = self._value_info_shape(vi, batch_symbolic_ok=True)
            if elem not in (_FLOAT, _INT8):
                raise self._input_error(vi.name, f"element type {_elem_name(elem)}; float32 (or int8 for QDQ "
                                                 f"models) only")
            if len(shape) == 4:
                layout, ir_shape, tag = "nchw", (shape[0], shape[2], shape[3], shape[1]), "NCHW"
            elif len(shape) == 2:
                layout, ir_shape, tag = "plain", shape, "NC"
            else:
                raise self._input_error(vi.name, f"rank {len(shape)} (shape {list(shape)}); inputs must be 4-D NCHW "
                                                 f"or 2-D [N, features]")
            dtype = "float32" if elem == _FLOAT else "int8"
            if dtype == "int8":
                self.onnx_int8.add(vi.name)
            self.g.add_tensor(Tensor(vi.name, ir_shape, dtype))
            self.g.inputs.append(vi.name)
            self.vals[vi.name] = _Val(vi.name, shape, layout)
            self.g.meta["inputs"].append({"name": vi.name, "layout": tag, "shape": list(shape)})
            if first:
                self.g.meta["input_layout"], self.g.meta["input_shape"] = tag, list(shape)
                first = False

    def _input_error(self, name: str, detail: str) -> MicrotrainError:
        """An unsupported graph input, reported at its first reader (ModelFormatError if unread)."""
        reader = (self.readers.get(name) or [None])[0]
        if reader is None:
            return ModelFormatError(f"{self.source}: graph input {name!r}: {detail}")
        return UnsupportedOpError(reader.op_type, self.display_of[id(reader)], SUPPORTED_ONNX_OPS,
                                  f"graph input {name!r}: {detail}")

    def _value_info_shape(self, vi, batch_symbolic_ok: bool) -> tuple[tuple[int, ...], int]:
        if not vi.type.HasField("tensor_type"):
            raise ModelFormatError(f"{self.source}: graph input {vi.name!r} is not a tensor")
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            raise ModelFormatError(f"{self.source}: graph input {vi.name!r} has no shape")
        dims = []
        for k, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value"):
                if d.dim_value <= 0:
                    raise ModelFormatError(f"{self.source}: graph input {vi.name!r}: dimension {k} is {d.dim_value}")
                dims.append(int(d.dim_value))
            elif k == 0 and batch_symbolic_ok:
                dims.append(1)
            else:
                raise ModelFormatError(
                    f"{self.source}: graph input {vi.name!r}: dimension {k} is symbolic "
                    f"({d.dim_param or '?'}); only the batch dimension may be")
        return tuple(dims), int(tt.elem_type)

    def _convert(self, idx: int, node) -> None:
        import onnx

        name = self.display[idx]
        if node.domain not in ("", "ai.onnx"):
            raise UnsupportedOpError(f"{node.domain}.{node.op_type}", name, SUPPORTED_ONNX_OPS)
        handler = _HANDLERS.get(node.op_type)
        if handler is None:
            raise UnsupportedOpError(node.op_type, name, SUPPORTED_ONNX_OPS)
        try:
            since = onnx.defs.get_schema(node.op_type, self.opset, "").since_version
        except Exception:
            since = None
        if since not in _SCHEMA_VERSIONS[node.op_type]:
            raise UnsupportedOpError(node.op_type, name, SUPPORTED_ONNX_OPS,
                                     f"opset {self.opset} selects version {since} of this op, which is not supported")
        try:
            onnx.checker.check_node(node, self.checker)
        except Exception as e:  # ValidationError
            msg = str(e).strip().splitlines()
            raise ModelFormatError(f"{self.source}: node {name!r} ({node.op_type}): "
                                   f"{_one_line(msg[0] if msg else type(e).__name__)}") from e
        ctx = _Ctx(self, node, name)
        for o in node.output:
            if o and (o in self.vals or o in self.consts or o in self.qconsts):
                ctx.fail(f"output {o!r} is produced twice")
        handler(ctx)

    def _finish_outputs(self) -> None:
        for o in self.graph_outputs:
            v = self.vals.get(o)
            if v is None:
                raise ModelFormatError(f"{self.source}: graph output {o!r} is a constant; nothing to compute")
            t = self.g.tensors[v.ir]
            if v.layout == "flat":
                p = self.g.producer(v.ir)
                name = p.name if p is not None else o
                raise UnsupportedOpError(self.node_ops.get(name, "Flatten"), name, SUPPORTED_ONNX_OPS,
                                         f"graph output {o!r} flattens an NCHW tensor with H*W > 1, whose "
                                         f"element order differs in NHWC (only a Gemm/MatMul may read it)")
            if t.dtype == "int8" and t.quant is None:
                raise ModelFormatError(f"{self.source}: graph output {o!r} is int8 but never quantized")
            ir = v.ir
            if t.dtype == "int8" and o not in self.onnx_int8:  # float in ONNX (e.g. a DequantizeLinear output)
                ir = self.float_of(None, v)
            self.g.outputs.append(ir)
            tag = "NCHW" if v.layout == "nchw" else "NC"
            self.g.meta["outputs"].append({"name": o, "layout": tag, "shape": list(v.shape)})
        for t in self.g.tensors.values():
            if t.dtype == "int8" and t.quant is None and not t.is_const:
                p = self.g.producer(t.name)
                raise ModelFormatError(
                    f"{self.source}: node {p.name if p else t.name!r}: int8 result {t.name!r} is never quantized "
                    f"(no QuantizeLinear follows it)")
        self._check_softmax()

    def _check_softmax(self) -> None:
        """A Softmax result may reach only graph outputs (through Identity/Dropout/Q/DQ)."""
        for name, out in self.softmax_nodes:
            stack = [out]
            while stack:
                t = stack.pop()
                for r in self.readers.get(t, []):
                    if r.op_type in ("Identity", "Dropout", "QuantizeLinear", "DequantizeLinear"):
                        stack.extend(o for o in r.output[:1] if o)
                    else:
                        raise UnsupportedOpError("Softmax", name, SUPPORTED_ONNX_OPS,
                                                 f"Softmax is supported only as a graph output; its result is "
                                                 f"read by {r.op_type} {self.display_of[id(r)]!r}")

    def _name_outputs(self) -> dict[str, str]:
        """Give each graph output tensor its ONNX output name where no other name is lost.
        Returns {old IR name: new IR name}."""
        g = self.g
        renamed = {}
        for k, meta in enumerate(g.meta["outputs"]):
            cur, want = g.outputs[k], meta["name"]
            if cur == want or want in g.tensors or cur in g.inputs or g.outputs.count(cur) > 1:
                continue
            passes.rename_tensor(g, cur, want)
            renamed[cur] = want
        return renamed

    # ---- emission helpers ------------------------------------------------------------------
    def tensor(self, base: str, shape, dtype: str, quant: QParams | None = None) -> str:
        name = self.g.fresh_name(base)
        self.g.add_tensor(Tensor(name, tuple(shape), dtype, quant=quant))
        return name

    def const_tensor(self, base: str, data: np.ndarray, dtype: str, quant: QParams | None = None) -> str:
        return self.g.const(base, np.asarray(data).astype(dtype), dtype, quant).name

    def emit(self, op: str, name: str, inputs: list[str], outputs: list[str], **attrs) -> Node:
        nm = name
        k = 1
        existing = {n.name for n in self.g.nodes}
        while nm in existing:
            nm = f"{name}_{k}"
            k += 1
        n = Node(op, nm, list(inputs), list(outputs), dict(attrs))
        self.g.nodes.append(n)
        return n

    def is_int8(self, v: _Val) -> bool:
        return self.g.tensors[v.ir].dtype == "int8"

    def quantized_downstream(self, name: str) -> bool:
        """True when every reader of ONNX value ``name`` is a QuantizeLinear (possibly behind a
        sole Relu/Clip reader, which is then fused): an op writing it may run in int8."""
        readers = self.readers.get(name, [])
        if name in self.graph_outputs or not readers:
            return False
        if len(readers) == 1 and readers[0].op_type in ("Relu", "Clip") and readers[0].output:
            return self.quantized_downstream(readers[0].output[0])
        return all(r.op_type == "QuantizeLinear" for r in readers)

    def int8_op(self, ctx: "_Ctx", *inputs: _Val) -> bool:
        """Run ctx's op in int8: every data input is a quantized int8 tensor and the result is
        quantized by a following QuantizeLinear (else the op runs in float on dequantized inputs)."""
        return (all(self.is_int8(v) and self.g.tensors[v.ir].quant is not None for v in inputs)
                and self.quantized_downstream(ctx.out()))

    def float_of(self, ctx: _Ctx | None, v: _Val) -> str:
        """The float32 IR tensor holding v's value (a dequantize node for an int8 tensor)."""
        t = self.g.tensors[v.ir]
        if t.dtype == "float32":
            return v.ir
        if t.quant is None:
            msg = f"reads {v.ir!r}, an int8 result that no QuantizeLinear quantizes"
            if ctx is None:
                raise ModelFormatError(f"{self.source}: {msg}")
            raise ctx.unsupported(msg)
        if v.ir not in self.float_view:
            out = self.tensor(f"{v.ir}_float", t.shape, "float32")
            self.emit("dequantize", f"{v.ir}/dequantize", [v.ir], [out])
            self.float_view[v.ir] = out
        return self.float_view[v.ir]


# ---------------------------------------------------------------------------------------------
# geometry helpers
# ---------------------------------------------------------------------------------------------
def _resolve_pads(ctx: _Ctx, hw, k, s, d) -> tuple[int, int, int, int]:
    """ONNX auto_pad / pads -> (top, left, bottom, right)."""
    auto = ctx.attr("auto_pad", "string", "NOTSET")
    if auto == "NOTSET":
        pads = ctx.ints("pads", 4, [0, 0, 0, 0])
        if min(pads) < 0:
            raise ctx.unsupported(f"negative pads {pads}")
        return pads[0], pads[1], pads[2], pads[3]
    if auto == "VALID":
        return 0, 0, 0, 0
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        ctx.fail(f"unknown auto_pad {auto!r}")
    res = []
    for i in range(2):
        out = -(-hw[i] // s[i])
        total = max(0, (out - 1) * s[i] + (k[i] - 1) * d[i] + 1 - hw[i])
        small = total // 2
        res.append((small, total - small) if auto == "SAME_UPPER" else (total - small, small))
    return res[0][0], res[1][0], res[0][1], res[1][1]


def _positive(ctx: _Ctx, key: str, vals: list[int]) -> None:
    if min(vals) < 1:
        ctx.fail(f"attribute {key!r} must be >= 1, got {vals}")


def _scalar(ctx: _Ctx, arr: np.ndarray | None, what: str):
    if arr is None:
        return None
    a = np.asarray(arr)
    if a.size != 1:
        ctx.fail(f"{what} must be a scalar, got shape {a.shape}")
    return a.reshape(-1)[0]


def _weight_quant(ctx: _Ctx, qc: _QConst, axis_map: dict[int, int], n_out: int) -> QParams:
    """Quantization of an int8 weight whose ONNX channel axis maps to an IR axis by ``axis_map``."""
    if qc.q.dtype != np.int8:
        raise ctx.unsupported(f"weights are {qc.q.dtype}; only int8 weights are supported")
    if np.any(qc.zero_point != 0):
        raise ctx.unsupported("weights must be symmetric (zero point 0)")
    if qc.axis is None or qc.scale.size == 1:
        return QParams(qc.scale[:1], [0], None)
    if qc.axis not in axis_map or qc.scale.size != n_out:
        raise ctx.unsupported(f"per-channel weight scales along axis {qc.axis} are not per output channel")
    return QParams(qc.scale, np.zeros(qc.scale.size, np.int64), axis_map[qc.axis])


def _int8_bias(ctx: _Ctx, x_quant: QParams, wq: QParams, n_out: int, qb: _QConst | None,
               fb: np.ndarray | None) -> tuple[np.ndarray, QParams]:
    """int32 bias at scale s_in * s_w (computed in float32, as onnxruntime writes it)."""
    s_w = wq.scale.astype(np.float32)
    expect = (np.float32(x_quant.s) * s_w).astype(np.float32)
    if wq.axis is None:
        bq = QParams(expect[:1], [0], None)
        expect_full = np.full(n_out, expect[0], np.float32)
    else:
        bq = QParams(expect, np.zeros(n_out, np.int64), 0)
        expect_full = expect
    if qb is None and fb is None:
        return np.zeros(n_out, np.int32), bq
    if qb is not None and qb.q.dtype == np.int32 and np.all(qb.zero_point == 0):
        s_b = np.broadcast_to(qb.scale.astype(np.float32), (n_out,)) if qb.scale.size in (1, n_out) else None
        if s_b is not None and qb.q.size == n_out and np.allclose(s_b, expect_full, rtol=1e-6, atol=0):
            return qb.q.reshape(n_out).astype(np.int32), bq
    real = (qb.real() if qb is not None else fb).astype(np.float64).reshape(-1)
    if real.size not in (1, n_out):
        ctx.fail(f"bias has {real.size} values for {n_out} output channels")
    q = np.round(np.broadcast_to(real, (n_out,)) / expect_full.astype(np.float64))
    if np.any(np.abs(q) > 2**31 - 1):
        raise ctx.unsupported("bias does not fit int32 at scale s_in * s_w")
    return q.astype(np.int32), bq


# ---------------------------------------------------------------------------------------------
# op handlers: each reads ctx inputs and defines ctx outputs in imp.vals / imp.consts
# ---------------------------------------------------------------------------------------------
def _conv(ctx: _Ctx) -> None:
    imp = ctx.imp
    x = ctx.act(0)
    if x.layout != "nchw":
        raise ctx.unsupported(f"input rank {len(x.shape)}; only 2-D convolution over an NCHW input is supported")
    if not ctx.is_const(1):
        raise ctx.unsupported("weights must be a constant initializer")
    qw = ctx.qconst(1)
    w = ctx.const(1, "weights")
    if w.ndim != 4:
        raise ctx.unsupported(f"weights of rank {w.ndim}; only 2-D convolution is supported")
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    group = ctx.attr("group", "int", 1)
    ks = ctx.attr("kernel_shape", "ints", None)
    if ks is not None and list(ks) != [kh, kw]:
        ctx.fail(f"kernel_shape {ks} disagrees with weights {list(w.shape)}")
    strides = ctx.ints("strides", 2, [1, 1])
    dil = ctx.ints("dilations", 2, [1, 1])
    _positive(ctx, "strides", strides)
    _positive(ctx, "dilations", dil)
    if group < 1 or c % group or m % group or cg * group != c:
        ctx.fail(f"group {group} does not fit {c} input channels and weights {list(w.shape)}")
    if group == 1:
        op, perm, out_axis = "conv2d", (0, 2, 3, 1), 0
    elif group == c and cg == 1:
        op, perm, out_axis = "depthwise_conv2d", (1, 2, 3, 0), 3
    else:
        raise ctx.unsupported(f"grouped convolution with group={group} over {c} channels; only group=1 "
                              f"or depthwise (group = input channels) is supported")
    pads = _resolve_pads(ctx, (h, wd), (kh, kw), strides, dil)
    oh = out_size(h, kh, strides[0], dil[0], pads[0], pads[2])
    ow = out_size(wd, kw, strides[1], dil[1], pads[1], pads[3])
    if oh < 1 or ow < 1:
        ctx.fail(f"kernel {kh}x{kw} does not fit input {list(x.shape)}")
    fb = ctx.opt_const(2, "bias")
    if fb is not None and fb.size != m:
        ctx.fail(f"bias has {fb.size} values for {m} output channels")
    attrs = dict(stride=(strides[0], strides[1]), dilation=(dil[0], dil[1]), pad=pads, act="none")
    wname = ctx.input_name(1)
    if imp.int8_op(ctx, x) and qw is not None:
        xq = imp.g.tensors[x.ir].quant
        wq = _weight_quant(ctx, qw, {0: out_axis}, m)
        bdata, bq = _int8_bias(ctx, xq, wq, m, ctx.qconst(2), None if ctx.qconst(2) is not None else fb)
        wt = imp.const_tensor(wname, qw.q.transpose(perm), "int8", wq)
        bt = imp.const_tensor(ctx.input_name(2) if ctx.has(2) else f"{ctx.name}/bias", bdata, "int32", bq)
        y = imp.tensor(ctx.out(), (n, oh, ow, m), "int8")
        xin = x.ir
    else:  # float (an int8 input with float weights is dequantized: a mixed-precision model)
        xin = imp.float_of(ctx, x)
        wt = imp.const_tensor(wname, w.astype(np.float32).transpose(perm), "float32")
        b = np.zeros(m, np.float32) if fb is None else fb.reshape(m).astype(np.float32)
        bt = imp.const_tensor(ctx.input_name(2) if ctx.has(2) else f"{ctx.name}/bias", b, "float32")
        y = imp.tensor(ctx.out(), (n, oh, ow, m), "float32")
    imp.emit(op, ctx.name, [xin, wt, bt], [y], **attrs)
    imp.vals[ctx.out()] = _Val(y, (n, m, oh, ow), "nchw")


def _fc_weight(ctx: _Ctx, x: _Val, w_mk: np.ndarray) -> np.ndarray:
    """[M, K] weights in ONNX input order -> IR input order (permuted for a "flat" input)."""
    if x.layout == "flat":
        c, h, w = x.chw
        return w_mk.reshape(w_mk.shape[0], c, h, w).transpose(0, 2, 3, 1).reshape(w_mk.shape[0], -1)
    return w_mk


def _fc(ctx: _Ctx, x: _Val, w_oi: np.ndarray, qw: _QConst | None, w_axis_map: dict[int, int],
        bias: np.ndarray | None, qb: _QConst | None, w_transform) -> None:
    """Emit fully_connected for y = x @ w_oi.T + bias (w_oi [M, K], ONNX input order)."""
    imp = ctx.imp
    m, k = w_oi.shape
    n = x.shape[0]
    name_w = ctx.input_name(1)
    bname = ctx.input_name(2) if ctx.has(2) else f"{ctx.name}/bias"
    if imp.int8_op(ctx, x) and qw is not None:
        wq = _weight_quant(ctx, qw, w_axis_map, m)
        bdata, bq = _int8_bias(ctx, imp.g.tensors[x.ir].quant, wq, m, qb, None if qb is not None else bias)
        wt = imp.const_tensor(name_w, _fc_weight(ctx, x, w_transform(qw.q)), "int8", wq)
        bt = imp.const_tensor(bname, bdata, "int32", bq)
        y = imp.tensor(ctx.out(), (n, m), "int8")
        xin = x.ir
    else:  # float (an int8 input with float weights is dequantized: a mixed-precision model)
        xin = imp.float_of(ctx, x)
        wt = imp.const_tensor(name_w, _fc_weight(ctx, x, w_oi).astype(np.float32), "float32")
        b = np.zeros(m, np.float32) if bias is None else bias.astype(np.float32)
        bt = imp.const_tensor(bname, b, "float32")
        y = imp.tensor(ctx.out(), (n, m), "float32")
    imp.emit("fully_connected", ctx.name, [xin, wt, bt], [y], act="none")
    imp.vals[ctx.out()] = _Val(y, (n, m), "plain")


def _fc_input(ctx: _Ctx) -> _Val:
    x = ctx.act(0)
    if len(x.shape) != 2:
        raise ctx.unsupported(f"input of rank {len(x.shape)}; only [N, K] inputs (after Flatten) are supported")
    return x


def _gemm(ctx: _Ctx) -> None:
    x = _fc_input(ctx)
    if ctx.attr("transA", "int", 0) != 0:
        raise ctx.unsupported("transA=1")
    if not ctx.is_const(1):
        raise ctx.unsupported("B must be a constant initializer")
    trans_b = ctx.attr("transB", "int", 0)
    alpha = ctx.attr("alpha", "float", 1.0)
    beta = ctx.attr("beta", "float", 1.0)
    b = ctx.const(1, "B")
    if b.ndim != 2:
        ctx.fail(f"B must be 2-D, got shape {list(b.shape)}")
    w = b if trans_b else b.T
    m, k = w.shape
    if k != x.shape[1]:
        ctx.fail(f"B {list(b.shape)} does not match input {list(x.shape)}")
    qw, qb = ctx.qconst(1), ctx.qconst(2)
    bias = None
    if ctx.has(2):
        c = ctx.const(2, "C")
        if c.size == 1:
            bias = np.full(m, c.reshape(-1)[0], np.float64)
        elif c.shape in ((m,), (1, m)) or (c.ndim == 2 and c.shape == (x.shape[0], m) and x.shape[0] == 1):
            bias = c.reshape(m).astype(np.float64)
        else:
            raise ctx.unsupported(f"C of shape {list(c.shape)}; only a per-output bias ([M] or [1, M]) is supported")
        bias = bias * beta
    if ctx.imp.int8_op(ctx, x) and qw is not None:
        if alpha != 1.0 or (ctx.has(2) and beta != 1.0):
            raise ctx.unsupported("int8 Gemm with alpha or beta other than 1")
        if qb is not None and qb.q.size != m:
            raise ctx.unsupported(f"C of shape {list(qb.q.shape)}; only a per-output bias is supported")
        _fc(ctx, x, w, qw, {0: 0} if trans_b else {1: 0}, bias, qb,
            (lambda q: q) if trans_b else (lambda q: q.T))
    else:
        _fc(ctx, x, w.astype(np.float64) * alpha, None, {}, bias, None, None)


def _matmul(ctx: _Ctx) -> None:
    x = _fc_input(ctx)
    if not ctx.is_const(1):
        raise ctx.unsupported("the right operand must be a constant initializer")
    b = ctx.const(1, "B")
    if b.ndim != 2 or b.shape[0] != x.shape[1]:
        raise ctx.unsupported(f"right operand of shape {list(b.shape)} for input {list(x.shape)}; "
                              f"only [K, M] with K = input features is supported")
    _fc(ctx, x, b.T, ctx.qconst(1), {1: 0}, None, None, lambda q: q.T)


def _unary_act(ctx: _Ctx, act: str) -> None:
    imp = ctx.imp
    x = ctx.act(0)
    t = imp.g.tensors[x.ir]
    if t.dtype == "int8" and t.quant is None:
        # int8 result still waiting for its QuantizeLinear: fuse into the producer.
        p = imp.g.producer(x.ir)
        onnx_in = ctx.input_name(0)
        if (p is None or p.op not in ("conv2d", "depthwise_conv2d", "fully_connected", "add")
                or p.attrs.get("act", "none") != "none" or imp.n_readers.get(onnx_in, 0) != 1):
            raise ctx.unsupported("int8 activation whose input is not quantized and cannot be fused")
        p.attrs["act"] = act
        imp.vals[ctx.out()] = x
        return
    if imp.int8_op(ctx, x):
        xin, dtype = x.ir, "int8"
    else:
        xin, dtype = imp.float_of(ctx, x), "float32"
    y = imp.tensor(ctx.out(), t.shape, dtype)
    imp.emit(act, ctx.name, [xin], [y])
    imp.vals[ctx.out()] = _Val(y, x.shape, x.layout, x.chw)


def _relu(ctx: _Ctx) -> None:
    _unary_act(ctx, "relu")


def _clip(ctx: _Ctx) -> None:
    lo = _scalar(ctx, ctx.opt_const(1, "min"), "min")
    hi = _scalar(ctx, ctx.opt_const(2, "max"), "max")
    if lo is not None and float(lo) == 0.0 and hi is not None and float(hi) == 6.0:
        _unary_act(ctx, "relu6")
    elif lo is not None and float(lo) == 0.0 and (hi is None or float(hi) == np.inf):
        _unary_act(ctx, "relu")
    else:
        raise ctx.unsupported(f"Clip(min={lo}, max={hi}); only Clip(0, 6) (ReLU6) and Clip(0) (ReLU) are supported")


def _nhwc_const(ctx: _Ctx, x: _Val, c: np.ndarray) -> np.ndarray:
    """An ONNX constant broadcast against activation x, in x's IR layout."""
    if x.layout == "nchw":
        if c.ndim > 4:
            raise ctx.unsupported(f"constant of rank {c.ndim} against a 4-D input")
        return c.reshape((1,) * (4 - c.ndim) + c.shape).transpose(0, 2, 3, 1)
    if x.layout == "flat":
        if c.size != 1:
            raise ctx.unsupported("non-scalar constant added to a flattened NCHW tensor")
        return c.reshape(1, 1)
    if c.ndim > len(x.shape):
        raise ctx.unsupported(f"constant of rank {c.ndim} against a rank-{len(x.shape)} input")
    return c.reshape((1,) * (len(x.shape) - c.ndim) + c.shape)


def _add(ctx: _Ctx) -> None:
    imp = ctx.imp
    if ctx.is_const(0) and ctx.is_const(1):
        a, b = ctx.const(0), ctx.const(1)
        imp.consts[ctx.out()] = np.asarray(a + b).astype(np.result_type(a, b))
        return
    if ctx.is_const(0) or ctx.is_const(1):
        ai, ci = (1, 0) if ctx.is_const(0) else (0, 1)
        x = ctx.act(ai)
        qc = ctx.qconst(ci)
        c = _nhwc_const(ctx, x, ctx.const(ci))
        tx = imp.g.tensors[x.ir]
        try:
            grown = tuple(np.broadcast_shapes(tx.shape, c.shape)) != tx.shape
        except ValueError:
            ctx.fail(f"shapes {list(x.shape)} and {list(ctx.const(ci).shape)} do not broadcast")
        if grown:
            raise ctx.unsupported("the constant operand would broadcast the activation to a larger shape")
        if imp.int8_op(ctx, x) and qc is not None and qc.q.dtype in (np.int8, np.uint8) and qc.scale.size == 1:
            shift = 128 if qc.q.dtype == np.uint8 else 0
            cq = _nhwc_const(ctx, x, qc.q.astype(np.int64) - shift)
            cquant = QParams(qc.scale[:1], [int(qc.zero_point[0]) - shift])
            ct = imp.const_tensor(ctx.input_name(ci), cq, "int8", cquant)
            xin = x.ir
            dtype = "int8"
        else:
            ct = imp.const_tensor(ctx.input_name(ci), c, "float32")
            xin = imp.float_of(ctx, x)
            dtype = "float32"
        y = imp.tensor(ctx.out(), tx.shape, dtype)
        imp.emit("add", ctx.name, [xin, ct], [y], act="none")
        imp.vals[ctx.out()] = _Val(y, x.shape, x.layout, x.chw)
        return
    a, b = ctx.act(0), ctx.act(1)
    if a.layout != b.layout or (a.layout == "flat" and a.chw != b.chw):
        raise ctx.unsupported(f"operands of different layouts ({list(a.shape)} and {list(b.shape)})")
    ta, tb = imp.g.tensors[a.ir], imp.g.tensors[b.ir]
    try:
        shape = tuple(np.broadcast_shapes(ta.shape, tb.shape))
        oshape = tuple(np.broadcast_shapes(a.shape, b.shape))
    except ValueError:
        ctx.fail(f"shapes {list(a.shape)} and {list(b.shape)} do not broadcast")
    if oshape[0] != a.shape[0] or len(oshape) != len(a.shape):
        raise ctx.unsupported("broadcast changes the batch axis or rank")
    if imp.int8_op(ctx, a, b):
        ins, dtype = [a.ir, b.ir], "int8"
    else:
        ins, dtype = [imp.float_of(ctx, a), imp.float_of(ctx, b)], "float32"
    y = imp.tensor(ctx.out(), shape, dtype)
    imp.emit("add", ctx.name, ins, [y], act="none")
    imp.vals[ctx.out()] = _Val(y, oshape, a.layout, a.chw)


def _pool(ctx: _Ctx) -> None:
    imp = ctx.imp
    x = ctx.act(0)
    if x.layout != "nchw":
        raise ctx.unsupported(f"input rank {len(x.shape)}; only 2-D pooling over an NCHW input is supported")
    if ctx.op == "MaxPool" and ctx.extra_outputs_used(1):
        raise ctx.unsupported("the Indices output is not supported")
    n, c, h, w = x.shape
    k = ctx.ints("kernel_shape", 2, None)
    s = ctx.ints("strides", 2, [1, 1])
    d = ctx.ints("dilations", 2, [1, 1])
    _positive(ctx, "kernel_shape", k)
    _positive(ctx, "strides", s)
    _positive(ctx, "dilations", d)
    if d != [1, 1]:
        raise ctx.unsupported(f"dilations {d}")
    pads = _resolve_pads(ctx, (h, w), k, s, (1, 1))
    oh = out_size(h, k[0], s[0], 1, pads[0], pads[2])
    ow = out_size(w, k[1], s[1], 1, pads[1], pads[3])
    if oh < 1 or ow < 1:
        ctx.fail(f"window {k} does not fit input {list(x.shape)}")
    if ctx.attr("ceil_mode", "int", 0):
        ch = -(-(h + pads[0] + pads[2] - k[0]) // s[0]) + 1
        cw = -(-(w + pads[1] + pads[3] - k[1]) // s[1]) + 1
        if (ch, cw) != (oh, ow):
            raise ctx.unsupported("ceil_mode=1 where it changes the output size")
    if max(pads[0], pads[2]) >= k[0] or max(pads[1], pads[3]) >= k[1]:
        raise ctx.unsupported(f"pads {list(pads)} not smaller than the window {k}")
    attrs = dict(ksize=(k[0], k[1]), stride=(s[0], s[1]), pad=pads, act="none")
    if ctx.op == "AveragePool":
        attrs["count_include_pad"] = bool(ctx.attr("count_include_pad", "int", 0))
        op = "avg_pool2d"
    else:
        if ctx.attr("storage_order", "int", 0) not in (0, 1):
            ctx.fail("storage_order must be 0 or 1")
        op = "max_pool2d"
    t = imp.g.tensors[x.ir]
    # int8 max pooling is exact (keeps the input's quantization); int8 average pooling rounds, so
    # it runs in int8 only when a QuantizeLinear (with the same parameters) follows.
    if t.dtype == "int8" and t.quant is not None and (op == "max_pool2d" or imp.int8_op(ctx, x)):
        xin, dtype, quant = x.ir, "int8", t.quant
    else:
        xin, dtype, quant = imp.float_of(ctx, x), "float32", None
    y = imp.tensor(ctx.out(), (n, oh, ow, c), dtype, quant)
    imp.emit(op, ctx.name, [xin], [y], **attrs)
    imp.vals[ctx.out()] = _Val(y, (n, c, oh, ow), "nchw")


def _global_avg_pool(ctx: _Ctx) -> None:
    imp = ctx.imp
    x = ctx.act(0)
    if x.layout != "nchw":
        raise ctx.unsupported(f"input rank {len(x.shape)}; only NCHW inputs are supported")
    n, c, _, _ = x.shape
    if imp.int8_op(ctx, x):
        xin, dtype = x.ir, "int8"
    else:
        xin, dtype = imp.float_of(ctx, x), "float32"
    y = imp.tensor(ctx.out(), (n, 1, 1, c), dtype)
    imp.emit("mean", ctx.name, [xin], [y], axes=(1, 2), keepdims=True)
    imp.vals[ctx.out()] = _Val(y, (n, c, 1, 1), "nchw")


def _batchnorm(ctx: _Ctx) -> None:
    imp = ctx.imp
    x = ctx.act(0)
    if ctx.attr("training_mode", "int", 0) != 0 or ctx.extra_outputs_used(1):
        raise ctx.unsupported("training mode (batch statistics) is not supported")
    if x.layout == "flat":
        raise ctx.unsupported("input is a flattened NCHW tensor with H*W > 1 (normalize before flattening)")
    if imp.is_int8(x):
        raise ctx.unsupported("BatchNormalization on a quantized tensor cannot be folded; fold it before quantizing "
                              "(e.g. onnxruntime.quantization.quant_pre_process)")
    eps = ctx.attr("epsilon", "float", 1e-5)
    c = x.shape[1]
    params = []
    for i, what in enumerate(("scale", "B", "mean", "var"), start=1):
        p = ctx.const(i, what)
        if p.size != c:
            ctx.fail(f"{what} has {p.size} values for {c} channels")
        params.append(imp.const_tensor(f"{ctx.input_name(i)}", p.reshape(c), "float32"))
    t = imp.g.tensors[x.ir]
    y = imp.tensor(ctx.out(), t.shape, "float32")
    imp.emit("batch_norm", ctx.name, [x.ir] + params, [y], eps=float(eps))
    imp.vals[ctx.out()] = _Val(y, x.shape, x.layout)


def _target_shape(ctx: _Ctx, src: tuple[int, ...], spec: np.ndarray, allowzero: bool) -> tuple[int, ...]:
    spec = [int(v) for v in np.asarray(spec).reshape(-1)]
    out, infer = [], None
    for i, d in enumerate(spec):
        if d == 0 and not allowzero:
            if i >= len(src):
                ctx.fail(f"shape {spec}: 0 at position {i} copies a dimension the input lacks")
            d = src[i]
        elif d == -1:
            if infer is not None:
                ctx.fail(f"shape {spec} has more than one -1")
            infer = i
        elif d < 0:
            ctx.fail(f"shape {spec} has a negative dimension")
        out.append(d)
    total = int(np.prod(src, dtype=np.int64))
    if infer is not None:
        rest = int(np.prod([d for i, d in enumerate(out) if i != infer], dtype=np.int64))
        if rest == 0 or total % rest:
            ctx.fail(f"cannot reshape {list(src)} to {spec}")
        out[infer] = total // rest
    if int(np.prod(out, dtype=np.int64)) != total or 0 in out:
        ctx.fail(f"cannot reshape {list(src)} to {spec}")
    return tuple(out)


def _reshape_to(ctx: _Ctx, target: tuple[int, ...]) -> None:
    """Reshape input 0 (activation or constant) to the ONNX shape ``target``."""
    imp = ctx.imp
    if ctx.is_const(0):
        imp.consts[ctx.out()] = np.asarray(ctx.const(0)).reshape(target)
        return
    x = ctx.act(0)
    s = x.shape
    if target == s:
        imp.vals[ctx.out()] = x
        return
    if len(target) < 1 or target[0] != s[0]:
        raise ctx.unsupported(f"reshape {list(s)} -> {list(target)} does not keep the batch axis")
    why = f"reshape {list(s)} -> {list(target)} would need a transpose in NHWC"
    layout, chw = None, None
    n = s[0]
    if x.layout == "nchw":
        c, h, w = s[1:]
        if len(target) == 2:
            ir = (n, target[1])
            layout, chw = ("plain", None) if h * w == 1 else ("flat", (c, h, w))
        elif len(target) == 4 and h * w == 1 and target[2] * target[3] == 1:
            ir, layout = (n, 1, 1, target[1]), "nchw"
        elif len(target) == 4 and target[1] == c:
            ir, layout = (n, target[2], target[3], c), "nchw"
    elif x.layout == "plain" and len(s) == 2:
        if len(target) == 4 and target[2] * target[3] == 1:
            ir, layout = (n, 1, 1, target[1]), "nchw"
    elif x.layout == "flat":
        c, h, w = x.chw
        if len(target) == 4 and target[1] == c and target[2] * target[3] == h * w:
            ir, layout = (n, target[2], target[3], c), "nchw"
    if layout is None:
        if len(target) not in (2, 4):
            why += " (only 4-D NCHW and 2-D tensors are supported)"
        raise ctx.unsupported(why)
    t = imp.g.tensors[x.ir]
    y = imp.tensor(ctx.out(), ir, t.dtype, t.quant)
    imp.emit("reshape", ctx.name, [x.ir], [y], shape=tuple(ir))
    imp.vals[ctx.out()] = _Val(y, target, layout, chw)


def _in_shape(ctx: _Ctx) -> tuple[int, ...]:
    return tuple(ctx.const(0).shape) if ctx.is_const(0) else ctx.act(0).shape


def _reshape(ctx: _Ctx) -> None:
    if not ctx.is_const(1):
        raise ctx.unsupported("the target shape must be a constant")
    spec = ctx.const(1, "shape")
    if spec.dtype != np.int64 or spec.ndim != 1:
        ctx.fail("shape must be a 1-D int64 tensor")
    _reshape_to(ctx, _target_shape(ctx, _in_shape(ctx), spec, bool(ctx.attr("allowzero", "int", 0))))


def _flatten(ctx: _Ctx) -> None:
    s = _in_shape(ctx)
    axis = ctx.attr("axis", "int", 1)
    if not -len(s) <= axis <= len(s):
        ctx.fail(f"axis {axis} out of range for rank {len(s)}")
    axis = axis + len(s) if axis < 0 else axis
    target = (int(np.prod(s[:axis], dtype=np.int64)), int(np.prod(s[axis:], dtype=np.int64)))
    if not ctx.is_const(0) and axis != 1:
        raise ctx.unsupported(f"axis={axis}; only axis=1 (keep the batch axis) is supported")
    _reshape_to(ctx, target)


def _axes(ctx: _Ctx, rank: int, required: bool) -> list[int] | None:
    if not ctx.has(1):
        if required:
            ctx.fail("axes input is required")
        return None
    if not ctx.is_const(1):
        raise ctx.unsupported("axes must be a constant")
    a = [int(v) for v in np.asarray(ctx.const(1)).reshape(-1)]
    out = []
    for v in a:
        if not -rank <= v < rank:
            ctx.fail(f"axis {v} out of range for rank {rank}")
        out.append(v + rank if v < 0 else v)
    if len(set(out)) != len(out):
        ctx.fail(f"repeated axes {a}")
    return out


def _squeeze(ctx: _Ctx) -> None:
    s = _in_shape(ctx)
    axes = _axes(ctx, len(s), required=False)
    if axes is None:
        axes = [i for i, d in enumerate(s) if d == 1]
    for a in axes:
        if s[a] != 1:
            ctx.fail(f"cannot squeeze axis {a} of size {s[a]}")
    _reshape_to(ctx, tuple(d for i, d in enumerate(s) if i not in axes))


def _unsqueeze(ctx: _Ctx) -> None:
    s = _in_shape(ctx)
    if ctx.has(1) and not ctx.is_const(1):
        raise ctx.unsupported("axes must be a constant")
    n_new = np.asarray(ctx.const(1, "axes")).size if ctx.has(1) else 0
    axes = _axes(ctx, len(s) + n_new, required=True)
    out, it = [], iter(s)
    for i in range(len(s) + len(axes)):
        out.append(1 if i in axes else next(it))
    _reshape_to(ctx, tuple(out))


def _pad(ctx: _Ctx) -> None:
    imp = ctx.imp
    x = ctx.act(0)
    mode = ctx.attr("mode", "string", "constant")
    if mode != "constant":
        raise ctx.unsupported(f"mode {mode!r}; only constant padding is supported")
    if not ctx.is_const(1):
        raise ctx.unsupported("pads must be a constant")
    pads = [int(v) for v in np.asarray(ctx.const(1)).reshape(-1)]
    r = len(x.shape)
    value = _scalar(ctx, ctx.opt_const(2, "constant_value"), "constant_value")
    value = 0.0 if value is None else float(value)
    axes = _axes_pad(ctx, r) if ctx.n_inputs() > 3 and ctx.has(3) else list(range(r))
    if len(pads) != 2 * len(axes):
        ctx.fail(f"{len(pads)} pads for {len(axes)} axes")
    per = [[0, 0] for _ in range(r)]
    for j, a in enumerate(axes):
        per[a] = [pads[j], pads[j + len(axes)]]
    if any(p < 0 for pp in per for p in pp):
        raise ctx.unsupported(f"negative pads {pads}")
    if per[0] != [0, 0]:
        raise ctx.unsupported("padding the batch axis")
    out_shape = tuple(d + a + b for d, (a, b) in zip(x.shape, per))
    if x.layout == "nchw":
        ir_pads = [per[0], per[2], per[3], per[1]]
    elif x.layout == "plain":
        ir_pads = per
    else:
        raise ctx.unsupported("padding a flattened NCHW tensor")
    t = imp.g.tensors[x.ir]
    if t.dtype == "int8" and value != 0.0:
        raise ctx.unsupported("int8 padding with a value other than 0")
    ir_out = tuple(d + a + b for d, (a, b) in zip(t.shape, ir_pads))
    y = imp.tensor(ctx.out(), ir_out, t.dtype, t.quant)
    imp.emit("pad", ctx.name, [x.ir], [y], pads=tuple((int(a), int(b)) for a, b in ir_pads), value=value)
    imp.vals[ctx.out()] = _Val(y, out_shape, x.layout)


def _axes_pad(ctx: _Ctx, rank: int) -> list[int]:
    if not ctx.is_const(3):
        raise ctx.unsupported("axes must be a constant")
    out = []
    for v in np.asarray(ctx.const(3)).reshape(-1):
        v = int(v)
        if not -rank <= v < rank:
            ctx.fail(f"axis {v} out of range for rank {rank}")
        out.append(v + rank if v < 0 else v)
    if len(set(out)) != len(out):
        ctx.fail("repeated axes")
    return out


def _softmax(ctx: _Ctx) -> None:
    imp = ctx.imp
    x = ctx.act(0)
    r = len(x.shape)
    axis = ctx.attr("axis", "int", -1)
    if not -r <= axis < r:
        ctx.fail(f"axis {axis} out of range for rank {r}")
    axis = axis + r if axis < 0 else axis
    if x.layout == "flat" or axis != 1:
        raise ctx.unsupported(f"softmax over axis {axis} of {list(x.shape)}; only the channel axis is supported")
    if imp.int8_op(ctx, x) and _int8_softmax_output(imp, ctx.out()):
        y = imp.tensor(ctx.out(), imp.g.tensors[x.ir].shape, "int8")
        imp.emit("softmax", ctx.name, [x.ir], [y])
    else:
        xin = imp.float_of(ctx, x)
        y = imp.tensor(ctx.out(), imp.g.tensors[xin].shape, "float32")
        imp.emit("softmax", ctx.name, [xin], [y])
    imp.vals[ctx.out()] = _Val(y, x.shape, x.layout)
    imp.softmax_nodes.append((ctx.name, ctx.out()))


def _int8_softmax_output(imp: "_Importer", out: str) -> bool:
    """True when the only reader of ``out`` is a QuantizeLinear to int8 scale 1/256, zero point
    -128 (the int8 softmax output the IR supports)."""
    readers = imp.readers.get(out, [])
    if len(readers) != 1 or readers[0].op_type != "QuantizeLinear" or out in imp.graph_outputs:
        return False
    q = readers[0]
    if len(q.input) < 3 or q.input[1] not in imp.consts or q.input[2] not in imp.consts:
        return False
    s, z = np.asarray(imp.consts[q.input[1]]), np.asarray(imp.consts[q.input[2]])
    return (s.size == 1 and z.size == 1 and z.dtype == np.int8 and int(z.reshape(-1)[0]) == -128
            and abs(float(s.reshape(-1)[0]) - 1.0 / 256) <= 0.001 / 256)


def _identity(ctx: _Ctx) -> None:
    imp = ctx.imp
    src = ctx.input_name(0)
    if src in imp.onnx_int8:
        imp.onnx_int8.add(ctx.out())
    if src in imp.vals:
        imp.vals[ctx.out()] = imp.vals[src]
    elif src in imp.qconsts:
        imp.qconsts[ctx.out()] = imp.qconsts[src]
    else:
        imp.consts[ctx.out()] = ctx.const(0)


def _dropout(ctx: _Ctx) -> None:
    tm = _scalar(ctx, ctx.opt_const(2, "training_mode"), "training_mode")
    if tm is not None and bool(tm):
        raise ctx.unsupported("training_mode=True")
    if ctx.extra_outputs_used(1):
        raise ctx.unsupported("the mask output is not supported")
    _identity(ctx)


def _constant(ctx: _Ctx) -> None:
    from onnx import numpy_helper

    keys = [k for k in ctx.attrs]
    if len(keys) != 1:
        ctx.fail(f"needs exactly one value attribute, got {keys}")
    key = keys[0]
    if key == "value":
        t = ctx.attr("value", "tensor")
        try:
            arr = numpy_helper.to_array(t)
        except Exception as e:
            ctx.fail(f"unreadable tensor ({_one_line(e)})")
    elif key == "value_float":
        arr = np.array(ctx.attr(key, "float"), np.float32)
    elif key == "value_floats":
        a = ctx.attrs[key]
        arr = np.array(list(a.floats), np.float32)
    elif key == "value_int":
        arr = np.array(ctx.attr(key, "int"), np.int64)
    elif key == "value_ints":
        arr = np.array(ctx.attr(key, "ints"), np.int64)
    else:
        raise ctx.unsupported(f"Constant with {key!r}")
    ctx.imp.consts[ctx.out()] = np.asarray(arr)


def _qparams(ctx: _Ctx, q_dtype_hint) -> tuple[np.ndarray, np.ndarray, np.dtype, int]:
    """(scale float32 1-D, zero point int64 1-D, quantized dtype, axis) of a Q/DQ node."""
    if ctx.attr("block_size", "int", 0) != 0:
        raise ctx.unsupported("blocked quantization (block_size)")
    if not ctx.is_const(1) or (ctx.has(2) and not ctx.is_const(2)):
        raise ctx.unsupported("scale and zero point must be constants")
    scale = np.asarray(ctx.const(1, "scale"))
    if scale.dtype != np.float32 or scale.ndim > 1:
        raise ctx.unsupported(f"scale of dtype {scale.dtype} and rank {scale.ndim}; float32 scalar or 1-D only")
    scale = scale.reshape(-1)
    if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
        ctx.fail("scales must be finite and > 0")
    if ctx.has(2):
        zp = np.asarray(ctx.const(2, "zero_point"))
        dtype = zp.dtype
        if zp.size != scale.size:
            ctx.fail(f"{zp.size} zero points for {scale.size} scales")
        zp = zp.reshape(-1).astype(np.int64)
    else:
        dtype = np.dtype(q_dtype_hint)
        zp = np.zeros(scale.size, np.int64)
    axis = ctx.attr("axis", "int", 1)
    return scale.astype(np.float32), zp, np.dtype(dtype), axis


def _quantize_linear(ctx: _Ctx) -> None:
    imp = ctx.imp
    out_dt = ctx.attr("output_dtype", "int", 0)
    hint = {0: np.uint8, _UINT8: np.uint8, _INT8: np.int8}.get(out_dt)
    if hint is None:
        raise ctx.unsupported(f"output_dtype {out_dt}; int8 or uint8 only")
    scale, zp, dtype, axis = _qparams(ctx, hint)
    if dtype not in (np.int8, np.uint8):
        raise ctx.unsupported(f"quantization to {dtype}; int8 or uint8 only")
    if ctx.is_const(0):  # fake-quantized weights: Q(float constant) folded to integers
        x = np.asarray(ctx.const(0), np.float32)
        if scale.size == 1:
            s, z = scale[0], zp[0]
        else:
            ax = axis + x.ndim if axis < 0 else axis
            if not 0 <= ax < x.ndim or x.shape[ax] != scale.size:
                ctx.fail(f"{scale.size} scales for axis {axis} of {list(x.shape)}")
            shape = [1] * x.ndim
            shape[ax] = -1
            s, z = scale.reshape(shape), zp.reshape(shape)
        info = np.iinfo(dtype)
        q = np.clip(np.rint(x / s) + z, info.min, info.max).astype(dtype)
        imp.consts[ctx.out()] = q
        return
    if scale.size != 1:
        raise ctx.unsupported("per-channel quantization of an activation")
    shift = 128 if dtype == np.uint8 else 0
    quant = QParams(scale[:1], [int(zp[0]) - shift])
    imp.onnx_int8.add(ctx.out())
    x = ctx.act(0)
    t = imp.g.tensors[x.ir]
    if t.dtype == "float32":
        y = imp.tensor(ctx.out(), t.shape, "int8", quant)
        imp.emit("quantize", ctx.name, [x.ir], [y])
        imp.vals[ctx.out()] = _Val(y, x.shape, x.layout, x.chw)
        return
    if t.quant is None:
        t.quant = quant
        _act_from_range(imp, x.ir, quant)
    elif t.quant != quant:
        raise ctx.unsupported(f"requantization of {x.ir!r} from (scale {t.quant.s}, zero point {t.quant.zp}) to "
                              f"(scale {quant.s}, zero point {quant.zp})")
    imp.vals[ctx.out()] = x


def _act_from_range(imp: "_Importer", tensor: str, q: QParams) -> None:
    """onnxruntime drops a Relu/Clip(0, 6) after conv/fc/add when the QuantizeLinear range starts at
    0 (zero point -128): the int8 clamp is the activation. Record it as the fused ``act`` (relu6
    when the range is [0, 6]); the int8 result is unchanged since the clamp bounds are equal."""
    p = imp.g.producer(tensor)
    if p is None or p.op not in ("conv2d", "depthwise_conv2d", "fully_connected", "add"):
        return
    if p.attrs.get("act", "none") != "none" or q.zp != -128:
        return
    top = float(q.s) * 255.0
    act = "relu6" if abs(top - 6.0) <= 6.0 * 1e-3 else "relu"
    if fp.activation_range_int8(act, q.s, q.zp) == (-128, 127):
        p.attrs["act"] = act


def _dequantize_linear(ctx: _Ctx) -> None:
    imp = ctx.imp
    out_dt = ctx.attr("output_dtype", "int", 0)
    if out_dt not in (0, _FLOAT):
        raise ctx.unsupported(f"output_dtype {out_dt}; float32 only")
    src = ctx.input_name(0)
    if ctx.is_const(0):
        q = np.asarray(ctx.const(0))
        scale, zp, dtype, axis = _qparams(ctx, q.dtype)
        if q.dtype not in (np.int8, np.uint8, np.int32):
            raise ctx.unsupported(f"dequantization of {q.dtype}")
        if scale.size == 1:
            ax = None
        else:
            ax = axis + q.ndim if axis < 0 else axis
            if not 0 <= ax < q.ndim or q.shape[ax] != scale.size:
                ctx.fail(f"{scale.size} scales for axis {axis} of {list(q.shape)}")
        imp.qconsts[ctx.out()] = _QConst(q, scale, zp, ax)
        return
    x = ctx.act(0)
    t = imp.g.tensors[x.ir]
    scale, zp, dtype, axis = _qparams(ctx, np.uint8)
    if t.dtype != "int8":
        ctx.fail(f"input {src!r} is {t.dtype}, not a quantized tensor")
    if scale.size != 1:
        raise ctx.unsupported("per-channel dequantization of an activation")
    shift = 128 if dtype == np.uint8 else 0
    quant = QParams(scale[:1], [int(zp[0]) - shift])
    if t.quant is None:
        if x.ir not in imp.g.inputs:
            ctx.fail(f"input {src!r} was never quantized")
        if shift:
            raise ctx.unsupported("uint8 graph inputs")
        t.quant = quant
    elif t.quant != quant:
        raise ctx.unsupported(f"dequantization of {src!r} with parameters other than its quantization")
    imp.vals[ctx.out()] = x


_HANDLERS = {
    "Add": _add, "AveragePool": _pool, "BatchNormalization": _batchnorm, "Clip": _clip,
    "Constant": _constant, "Conv": _conv, "DequantizeLinear": _dequantize_linear, "Dropout": _dropout,
    "Flatten": _flatten, "Gemm": _gemm, "GlobalAveragePool": _global_avg_pool, "Identity": _identity,
    "MatMul": _matmul, "MaxPool": _pool, "Pad": _pad, "QuantizeLinear": _quantize_linear,
    "Relu": _relu, "Reshape": _reshape, "Softmax": _softmax, "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
}
assert set(_HANDLERS) == set(SUPPORTED_ONNX_OPS) == set(_SCHEMA_VERSIONS)
