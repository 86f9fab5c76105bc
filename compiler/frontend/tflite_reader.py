"""TFLite reader: full-integer int8 .tflite flatbuffers -> IR graph.

Accepted models are the ones the TF converter writes with full-integer quantization: int8
activations (per tensor), int8 weights (per output channel, or per tensor for FULLY_CONNECTED),
int32 biases, and float32 only at QUANTIZE / DEQUANTIZE on the graph boundary. Layouts already
match the IR (NHWC; conv OHWI; depthwise [1,KH,KW,C*M]; fully connected [Cout,Cin]), and scales
are kept as the float32 values stored in the file, so every multiplier the ops' ``prepare``
derives is the one TFLite derives.

SAME/VALID padding becomes explicit (top, left, bottom, right) pads exactly as TFLite's
ComputePaddingHeightWidth computes them: total = max(0, (out-1)*stride + (k-1)*dilation + 1 - in),
top/left = total // 2, bottom/right = total - total // 2 (the odd pixel goes after).

Every failure is a one-line MicrotrainError: unsupported ops -> UnsupportedOpError naming the op,
the node (its first output tensor) and the supported list; anything unreadable or inconsistent ->
ModelFormatError. The parser validates every index, length and buffer size itself before use, and
wraps anything the generated flatbuffer accessors raise on corrupt input.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import MicrotrainError, ModelFormatError, UnsupportedOpError
from ..ir import Graph, Node, QParams, Tensor, verify
from ..ops import registry

SUPPORTED_OPS = (
    "ADD", "AVERAGE_POOL_2D", "CONV_2D", "DEPTHWISE_CONV_2D", "DEQUANTIZE", "FULLY_CONNECTED",
    "MAX_POOL_2D", "MEAN", "PAD", "PADV2", "QUANTIZE", "RELU", "RELU6", "RESHAPE", "SOFTMAX",
)

_MAX_RANK = 8
_MAX_ELEMENTS = 1 << 31

# TensorType enum value -> (IR dtype, numpy little-endian dtype)
_TYPES = {0: ("float32", "<f4"), 2: ("int32", "<i4"), 3: ("uint8", "u1"), 4: ("int64", "<i8"),
          7: ("int16", "<i2"), 9: ("int8", "i1")}
_TYPE_NAMES = {0: "FLOAT32", 1: "FLOAT16", 2: "INT32", 3: "UINT8", 4: "INT64", 5: "STRING", 6: "BOOL",
               7: "INT16", 8: "COMPLEX64", 9: "INT8", 10: "FLOAT64", 11: "COMPLEX128", 12: "UINT64",
               13: "RESOURCE", 14: "VARIANT", 15: "UINT32", 16: "UINT16", 17: "INT4"}
# ActivationFunctionType -> IR ``act``
_ACTS = {0: "none", 1: "relu", 3: "relu6"}
_ACT_NAMES = {2: "RELU_N1_TO_1", 4: "TANH", 5: "SIGN_BIT"}


def load_tflite(path: str | os.PathLike) -> Graph:
    """Read a full-integer int8 .tflite file into a verified IR graph."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ModelFormatError(f"{path}: cannot read model file ({e.strerror or e})") from None
    return parse_tflite(data, source=path)


def parse_tflite(data: bytes, source: str = "<tflite bytes>") -> Graph:
    """Parse .tflite bytes (see :func:`load_tflite`)."""
    try:
        graph = _Reader(bytes(data), source).read()
    except MicrotrainError:
        raise
    except RecursionError:
        raise ModelFormatError(f"{source}: corrupt TFLite file (runaway nesting)") from None
    except Exception as e:  # accessors on corrupt bytes raise struct/Index/Unicode/... errors
        raise ModelFormatError(f"{source}: corrupt or truncated TFLite file ({_one_line(e)})") from None
    try:
        verify(graph)
    except MicrotrainError:
        raise
    except Exception as e:  # IRError / op shape inference: the file's own shapes disagree
        raise ModelFormatError(f"{source}: inconsistent TFLite model: {_one_line(e)}") from None
    for node in graph.nodes:
        # Derive every int8 constant now (multipliers, shifts, clamps), as TFLite's Prepare does:
        # quantization parameters TFLite itself would refuse fail here, at load time.
        try:
            registry.get(node.op).prepare(node, graph)
        except Exception as e:
            raise ModelFormatError(f"{source}: invalid quantization parameters: {_one_line(e)}") from None
    return graph


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split())
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _builtin_names() -> dict[int, str]:
    import tflite

    return {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}


def same_valid_pads(padding: str, in_hw: tuple[int, int], k_hw: tuple[int, int], stride: tuple[int, int],
                    dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """TFLite ComputePaddingHeightWidth -> explicit (top, left, bottom, right)."""
    out = []
    for size, k, s, d in zip(in_hw, k_hw, stride, dilation):
        eff = (k - 1) * d + 1
        if padding == "SAME":
            o = (size + s - 1) // s
        else:
            o = (size + s - eff) // s
        total = max(0, (o - 1) * s + eff - size)
        out.append((total // 2, total - total // 2))
    (t, b), (l, r) = out
    return t, l, b, r


class _Reader:
    def __init__(self, data: bytes, source: str):
        self.buf = data
        self.n = len(data)
        self.source = source
        self.graph = Graph(name=os.path.splitext(os.path.basename(source))[0] or "tflite",
                           meta={"source": source, "format": "tflite", "layout": "NHWC"})

    # ---- helpers -----------------------------------------------------------------------------
    def fail(self, what: str) -> ModelFormatError:
        return ModelFormatError(f"{self.source}: {what}")

    def length(self, n: int, elem_size: int, what: str) -> int:
        """Validate a vector length read from the file against the file size."""
        if n < 0 or n * elem_size > self.n:
            raise self.fail(f"corrupt TFLite file ({what}: length {n} exceeds the file)")
        return n

    def ints(self, obj, field: str, what: str) -> list[int]:
        n = self.length(getattr(obj, f"{field}Length")(), 4, what)
        get = getattr(obj, field)
        return [int(get(j)) for j in range(n)]

    # ---- model -------------------------------------------------------------------------------
    def read(self) -> Graph:
        import tflite

        if self.n < 8 or self.buf[4:8] != b"TFL3":
            raise self.fail("not a TFLite flatbuffer (missing the TFL3 file identifier)")
        root = int.from_bytes(self.buf[0:4], "little")
        if not 8 <= root <= self.n - 4:
            raise self.fail("corrupt TFLite file (root table offset outside the file)")
        model = tflite.Model.GetRootAs(self.buf, 0)
        self.model = model
        if model.Version() != 3:
            raise self.fail(f"unsupported TFLite schema version {model.Version()} (expected 3)")
        if self.length(model.SubgraphsLength(), 4, "subgraphs") < 1:
            raise self.fail("TFLite file has no subgraph")
        self.n_buffers = self.length(model.BuffersLength(), 4, "buffers")
        for b in range(self.n_buffers):  # touch every buffer table: catches truncated tails
            fb = model.Buffers(b)
            self.length(fb.DataLength(), 1, f"buffer {b}")
            fb.Offset(), fb.Size()
        names = _builtin_names()
        self.op_names = []
        for j in range(self.length(model.OperatorCodesLength(), 4, "operator codes")):
            oc = model.OperatorCodes(j)
            code = max(int(oc.DeprecatedBuiltinCode()), int(oc.BuiltinCode()))
            if code == 32:  # CUSTOM
                custom = oc.CustomCode()
                name = "CUSTOM:" + (custom.decode("utf-8", "replace") if custom else "?")
            else:
                name = names.get(code, f"BUILTIN_{code}")
            self.op_names.append(name)

        sg = model.Subgraphs(0)
        self.sg = sg
        self.n_tensors = self.length(sg.TensorsLength(), 4, "tensors")
        self.tensor_cache: dict[int, Tensor] = {}
        self._check_integer_model()

        inputs = self.ints(sg, "Inputs", "subgraph inputs")
        outputs = self.ints(sg, "Outputs", "subgraph outputs")
        for i in inputs:
            t = self.tensor(i, "subgraph input")
            if t.is_const:
                raise self.fail(f"subgraph input {t.name!r} is a constant")
            self.graph.inputs.append(t.name)
        for k in range(self.length(sg.OperatorsLength(), 4, "operators")):
            self.operator(sg.Operators(k), k)
        for o in outputs:
            self.graph.outputs.append(self.tensor(o, "subgraph output").name)
        return self.graph

    def _check_integer_model(self) -> None:
        """Reject float and legacy uint8 models up front with one clear message."""
        types = set()
        for i in range(self.n_tensors):
            types.add(int(self.sg.Tensors(i).Type()))
        if 9 not in types:  # no INT8 tensor at all
            kind = "uint8-quantized (legacy)" if 3 in types else "float (non-quantized)"
            raise self.fail(f"this is a {kind} TFLite model; only full-integer int8 TFLite models are "
                            f"supported (convert with full-integer int8 quantization)")

    # ---- tensors -----------------------------------------------------------------------------
    def tensor(self, idx: int, what: str) -> Tensor:
        if idx in self.tensor_cache:
            return self.tensor_cache[idx]
        if not 0 <= idx < self.n_tensors:
            raise self.fail(f"corrupt TFLite file ({what} refers to tensor {idx}, "
                            f"the subgraph has {self.n_tensors})")
        ft = self.sg.Tensors(idx)
        ttype = int(ft.Type())
        if ttype not in _TYPES:
            raise self.fail(f"tensor {idx} has unsupported type {_TYPE_NAMES.get(ttype, ttype)}")
        dtype, np_dtype = _TYPES[ttype]
        shape = tuple(self.ints(ft, "Shape", f"tensor {idx} shape"))
        if len(shape) > _MAX_RANK or any(d < 0 for d in shape):
            raise self.fail(f"corrupt TFLite file (tensor {idx} has shape {shape})")
        size = 1
        for d in shape:
            size *= d
        if size > _MAX_ELEMENTS:
            raise self.fail(f"corrupt TFLite file (tensor {idx} has {size} elements)")

        raw = ft.Name()
        base = raw.decode("utf-8", "replace") if raw else ""
        name = base if base and base not in self.graph.tensors else f"{base or 'tensor'}_{idx}"
        while name in self.graph.tensors:
            name += "_"

        data = self.buffer_data(int(ft.Buffer()), idx)
        arr = None
        if data is not None and len(data):
            itemsize = np.dtype(np_dtype).itemsize
            if len(data) != size * itemsize:
                raise self.fail(f"corrupt TFLite file (tensor {name!r} {shape} {dtype} needs "
                                f"{size * itemsize} bytes, its buffer has {len(data)})")
            arr = np.frombuffer(data, dtype=np_dtype).astype(dtype).reshape(shape)

        quant = self.quant(ft, name, shape)
        t = Tensor(name, shape, dtype, data=arr, quant=quant)
        self.graph.add_tensor(t)
        self.tensor_cache[idx] = t
        return t

    def buffer_data(self, b: int, tensor_idx: int) -> bytes | None:
        if b == 0:
            return None
        if not 0 <= b < self.n_buffers:
            raise self.fail(f"corrupt TFLite file (tensor {tensor_idx} refers to buffer {b}, "
                            f"the model has {self.n_buffers})")
        fb = self.model.Buffers(b)
        n = self.length(fb.DataLength(), 1, f"buffer {b}")
        if n:
            arr = fb.DataAsNumpy()
            return arr.tobytes()
        off, size = int(fb.Offset()), int(fb.Size())
        if off > 1 and size:  # large models keep data after the flatbuffer
            if off + size > self.n:
                raise self.fail(f"corrupt TFLite file (buffer {b} data at {off}+{size} is beyond the file)")
            return self.buf[off:off + size]
        return None

    def quant(self, ft, name: str, shape: tuple[int, ...]) -> QParams | None:
        q = ft.Quantization()
        if q is None:
            return None
        ns = self.length(q.ScaleLength(), 4, f"tensor {name!r} scales")
        if ns == 0:
            return None
        nz = self.length(q.ZeroPointLength(), 8, f"tensor {name!r} zero points")
        scale = np.array([q.Scale(j) for j in range(ns)], dtype=np.float32)
        zp = np.array([q.ZeroPoint(j) for j in range(nz)], dtype=np.int64) if nz else np.zeros(ns, np.int64)
        if zp.size not in (1, ns):
            raise self.fail(f"tensor {name!r}: {ns} scales but {zp.size} zero points")
        axis = None
        if ns > 1:
            axis = int(q.QuantizedDimension())
            if not 0 <= axis < len(shape) or shape[axis] != ns:
                raise self.fail(f"tensor {name!r}: {ns} scales do not match quantized dimension "
                                f"{axis} of shape {shape}")
        return QParams(scale, zp, axis)

    # ---- operators ---------------------------------------------------------------------------
    def operator(self, op, k: int) -> None:
        oi = int(op.OpcodeIndex())
        if not 0 <= oi < len(self.op_names):
            raise self.fail(f"corrupt TFLite file (operator {k} uses opcode {oi}, "
                            f"the model has {len(self.op_names)})")
        opname = self.op_names[oi]
        ins = self.ints(op, "Inputs", f"operator {k} inputs")
        outs = self.ints(op, "Outputs", f"operator {k} outputs")
        if not outs:
            raise self.fail(f"corrupt TFLite file (operator {k} {opname} has no output)")
        for i in ins + outs:
            if not -1 <= i < self.n_tensors:
                raise self.fail(f"corrupt TFLite file (operator {k} {opname} refers to tensor {i}, "
                                f"the subgraph has {self.n_tensors})")
        node_name = self.tensor(outs[0], f"operator {k} output").name
        if opname not in SUPPORTED_OPS:
            raise UnsupportedOpError(opname, node_name, SUPPORTED_OPS)
        handler = getattr(self, "op_" + opname.lower())
        handler(op, opname, node_name, ins, outs)

    def unsupported(self, opname, node_name, detail):
        return UnsupportedOpError(opname, node_name, SUPPORTED_OPS, detail)

    def options(self, op, opname: str, node_name: str, cls_name: str, required: bool = True):
        import tflite

        tab = op.BuiltinOptions()
        expected = getattr(tflite.BuiltinOptions, cls_name)
        if tab is None or int(op.BuiltinOptionsType()) != expected:
            if not required and tab is None:
                return None
            raise self.fail(f"corrupt TFLite file ({opname} node {node_name!r} lacks its {cls_name})")
        opts = getattr(tflite, cls_name)()
        opts.Init(tab.Bytes, tab.Pos)
        return opts

    def act(self, code: int, opname: str, node_name: str) -> str:
        code = int(code)
        if code not in _ACTS:
            raise self.unsupported(opname, node_name,
                                   f"fused activation {_ACT_NAMES.get(code, code)}; supported: NONE, RELU, RELU6")
        return _ACTS[code]

    def operands(self, ins, outs, n_in: tuple[int, int], opname, node_name):
        lo, hi = n_in
        if not lo <= len(ins) <= hi or len(outs) != 1:
            raise self.fail(f"corrupt TFLite file ({opname} node {node_name!r} has {len(ins)} inputs "
                            f"and {len(outs)} outputs)")
        if any(i == -1 for i in ins[:lo]):
            raise self.fail(f"corrupt TFLite file ({opname} node {node_name!r} lacks a required input)")
        xs = [self.tensor(i, f"{opname} input") if i != -1 else None for i in ins]
        y = self.tensor(outs[0], f"{opname} output")
        return xs, y

    def require_int8(self, ts, opname, node_name):
        for t in ts:
            if t is not None and t.dtype != "int8":
                kind = ("float32 operands: only full-integer int8 TFLite models are supported"
                        if t.dtype == "float32" else f"{t.dtype} operand {t.name!r}; only int8 activations are supported")
                raise self.unsupported(opname, node_name, kind)
            if t is not None and t.quant is not None and t.quant.axis is not None and not t.is_const:
                raise self.unsupported(opname, node_name, f"per-channel quantized activation {t.name!r}")

    def require_const(self, t, opname, node_name, what):
        if t is not None and not t.is_const:
            raise self.unsupported(opname, node_name, f"{what} {t.name!r} must be a constant")

    def add_node(self, op: str, name: str, inputs, outputs, attrs=None) -> None:
        taken = {n.name for n in self.graph.nodes}
        unique, i = name, 1
        while unique in taken:
            unique, i = f"{name}_{i}", i + 1
        self.graph.nodes.append(Node(op, unique, list(inputs), list(outputs), attrs or {}))

    @staticmethod
    def padding_name(code: int) -> str:
        return {0: "SAME", 1: "VALID"}.get(int(code), "")

    def strides(self, o, opname, node_name, dilation=True):
        s = (int(o.StrideH()), int(o.StrideW()))
        d = (int(o.DilationHFactor()), int(o.DilationWFactor())) if dilation else (1, 1)
        if min(s) < 1 or min(d) < 1:
            raise self.fail(f"corrupt TFLite file ({opname} node {node_name!r} has strides {s} "
                            f"and dilation {d})")
        pad = self.padding_name(o.Padding())
        if not pad:
            raise self.fail(f"corrupt TFLite file ({opname} node {node_name!r} has padding code {o.Padding()})")
        return s, d, pad

    # ---- op handlers (one per TFLite builtin) -----------------------------------------------
    def _conv_like(self, op, opname, node_name, ins, outs, ir_op, opt_cls):
        (x, w, b), y = self._conv_operands(ins, outs, opname, node_name)
        o = self.options(op, opname, node_name, opt_cls)
        self.require_int8([x, w, y], opname, node_name)
        self.require_const(w, opname, node_name, "weights")
        self.require_const(b, opname, node_name, "bias")
        if b is not None and b.dtype != "int32":
            raise self.unsupported(opname, node_name, f"{b.dtype} bias; int8 models use int32 biases")
        if len(x.shape) != 4 or len(w.shape) != 4:
            raise self.fail(f"{opname} node {node_name!r}: expects 4-D input and weights, got {x.shape}, {w.shape}")
        stride, dil, pad = self.strides(o, opname, node_name)
        pads = same_valid_pads(pad, (x.shape[1], x.shape[2]), (w.shape[1], w.shape[2]), stride, dil)
        attrs = {"stride": stride, "dilation": dil, "pad": pads,
                 "act": self.act(o.FusedActivationFunction(), opname, node_name)}
        self.add_node(ir_op, node_name, [x.name, w.name] + ([b.name] if b is not None else []), [y.name], attrs)

    def _conv_operands(self, ins, outs, opname, node_name):
        xs, y = self.operands(ins, outs, (2, 3), opname, node_name)
        xs = xs + [None] * (3 - len(xs))
        return xs, y

    def op_conv_2d(self, op, opname, node_name, ins, outs):
        self._conv_like(op, opname, node_name, ins, outs, "conv2d", "Conv2DOptions")

    def op_depthwise_conv_2d(self, op, opname, node_name, ins, outs):
        self._conv_like(op, opname, node_name, ins, outs, "depthwise_conv2d", "DepthwiseConv2DOptions")

    def op_fully_connected(self, op, opname, node_name, ins, outs):
        (x, w, b), y = self._conv_operands(ins, outs, opname, node_name)
        o = self.options(op, opname, node_name, "FullyConnectedOptions")
        self.require_int8([x, w, y], opname, node_name)
        self.require_const(w, opname, node_name, "weights")
        self.require_const(b, opname, node_name, "bias")
        if b is not None and b.dtype != "int32":
            raise self.unsupported(opname, node_name, f"{b.dtype} bias; int8 models use int32 biases")
        if int(o.WeightsFormat()) != 0:
            raise self.unsupported(opname, node_name, "shuffled weights format")
        if len(w.shape) != 2:
            raise self.fail(f"{opname} node {node_name!r}: weights must be 2-D, got {w.shape}")
        cin = w.shape[1]
        src = x.name
        if len(x.shape) != 2:
            # The converter keeps the input's rank and lets FULLY_CONNECTED flatten it: make that
            # flatten an explicit reshape (only the batch-preserving case maps onto the IR).
            if len(x.shape) < 1 or int(np.prod(x.shape[1:])) != cin:
                raise self.unsupported(opname, node_name,
                                       f"input {x.shape} is not a batch of {cin}-vectors")
            flat = self.graph.fresh_name(f"{x.name}/flatten")
            self.graph.add_tensor(Tensor(flat, (x.shape[0], cin), "int8", quant=x.quant))
            self.add_node("reshape", flat, [x.name], [flat], {"shape": (x.shape[0], cin)})
            src = flat
        if len(y.shape) != 2:
            raise self.unsupported(opname, node_name, f"keep_num_dims output {y.shape}")
        attrs = {"act": self.act(o.FusedActivationFunction(), opname, node_name)}
        self.add_node("fully_connected", node_name, [src, w.name] + ([b.name] if b is not None else []),
                      [y.name], attrs)

    def op_add(self, op, opname, node_name, ins, outs):
        (a, b), y = self.operands(ins, outs, (2, 2), opname, node_name)
        o = self.options(op, opname, node_name, "AddOptions", required=False)
        self.require_int8([a, b, y], opname, node_name)
        act = self.act(o.FusedActivationFunction(), opname, node_name) if o is not None else "none"
        self.add_node("add", node_name, [a.name, b.name], [y.name], {"act": act})

    def _pool(self, op, opname, node_name, ins, outs, ir_op):
        (x,), y = self.operands(ins, outs, (1, 1), opname, node_name)
        o = self.options(op, opname, node_name, "Pool2DOptions")
        self.require_int8([x, y], opname, node_name)
        if len(x.shape) != 4:
            raise self.fail(f"{opname} node {node_name!r}: expects a 4-D input, got {x.shape}")
        k = (int(o.FilterHeight()), int(o.FilterWidth()))
        if min(k) < 1:
            raise self.fail(f"corrupt TFLite file ({opname} node {node_name!r} has filter {k})")
        stride, _, pad = self.strides(o, opname, node_name, dilation=False)
        pads = same_valid_pads(pad, (x.shape[1], x.shape[2]), k, stride, (1, 1))
        attrs = {"ksize": k, "stride": stride, "pad": pads,
                 "act": self.act(o.FusedActivationFunction(), opname, node_name)}
        self.add_node(ir_op, node_name, [x.name], [y.name], attrs)

    def op_average_pool_2d(self, op, opname, node_name, ins, outs):
        self._pool(op, opname, node_name, ins, outs, "avg_pool2d")

    def op_max_pool_2d(self, op, opname, node_name, ins, outs):
        self._pool(op, opname, node_name, ins, outs, "max_pool2d")

    def op_mean(self, op, opname, node_name, ins, outs):
        (x, axis), y = self.operands(ins, outs, (2, 2), opname, node_name)
        o = self.options(op, opname, node_name, "ReducerOptions", required=False)
        self.require_int8([x, y], opname, node_name)
        self.require_const(axis, opname, node_name, "axis")
        if axis.dtype not in ("int32", "int64"):
            raise self.fail(f"{opname} node {node_name!r}: axis tensor has type {axis.dtype}")
        rank = len(x.shape)
        axes = sorted({int(a) + rank if int(a) < 0 else int(a) for a in axis.data.ravel()})
        if rank != 4 or axes != [1, 2]:
            raise self.unsupported(opname, node_name, f"mean over axes {axes} of a rank-{rank} tensor; only "
                                                      f"the global mean over H,W of NHWC is supported")
        keep = bool(o.KeepDims()) if o is not None else False
        self.add_node("mean", node_name, [x.name], [y.name], {"axes": (1, 2), "keepdims": keep})

    def op_reshape(self, op, opname, node_name, ins, outs):
        (x, *_), y = self.operands(ins, outs, (1, 2), opname, node_name)
        self.require_int8([x, y], opname, node_name)
        if not y.shape or not x.shape or y.shape[0] != x.shape[0]:
            raise self.unsupported(opname, node_name, f"reshape {x.shape} -> {y.shape} must keep the batch axis")
        self.add_node("reshape", node_name, [x.name], [y.name], {"shape": tuple(y.shape)})

    def op_softmax(self, op, opname, node_name, ins, outs):
        (x,), y = self.operands(ins, outs, (1, 1), opname, node_name)
        o = self.options(op, opname, node_name, "SoftmaxOptions", required=False)
        self.require_int8([x, y], opname, node_name)
        beta = float(np.float32(o.Beta())) if o is not None else 1.0
        if not np.isfinite(beta) or beta <= 0:
            raise self.fail(f"{opname} node {node_name!r}: beta {beta} must be finite and > 0")
        self.add_node("softmax", node_name, [x.name], [y.name], {"beta": beta})

    def _pad(self, op, opname, node_name, ins, outs, n_in):
        xs, y = self.operands(ins, outs, n_in, opname, node_name)
        x, paddings = xs[0], xs[1]
        self.require_int8([x, y], opname, node_name)
        self.require_const(paddings, opname, node_name, "paddings")
        if paddings.dtype not in ("int32", "int64") or paddings.shape != (len(x.shape), 2):
            raise self.fail(f"{opname} node {node_name!r}: paddings {paddings.shape} {paddings.dtype} "
                            f"do not fit input {x.shape}")
        if len(xs) > 2 and xs[2] is not None:
            v = xs[2]
            self.require_const(v, opname, node_name, "pad value")
            if v.dtype != "int8" or v.size != 1 or y.quant is None or int(v.data.ravel()[0]) != y.quant.zp:
                raise self.unsupported(opname, node_name, "pad value other than the output zero point")
        pads = [tuple(int(p) for p in row) for row in paddings.data]
        self.add_node("pad", node_name, [x.name], [y.name], {"pads": pads})

    def op_pad(self, op, opname, node_name, ins, outs):
        self._pad(op, opname, node_name, ins, outs, (2, 2))

    def op_padv2(self, op, opname, node_name, ins, outs):
        self._pad(op, opname, node_name, ins, outs, (2, 3))

    def op_quantize(self, op, opname, node_name, ins, outs):
        (x,), y = self.operands(ins, outs, (1, 1), opname, node_name)
        if x.dtype != "float32" or y.dtype != "int8":
            raise self.unsupported(opname, node_name, f"{x.dtype} -> {y.dtype}; only float32 -> int8 "
                                                      f"at the graph input is supported")
        self.require_int8([y], opname, node_name)
        self.add_node("quantize", node_name, [x.name], [y.name])

    def op_dequantize(self, op, opname, node_name, ins, outs):
        (x,), y = self.operands(ins, outs, (1, 1), opname, node_name)
        if x.dtype != "int8" or y.dtype != "float32" or x.is_const:
            raise self.unsupported(opname, node_name, f"{'constant ' if x.is_const else ''}{x.dtype} -> "
                                                      f"{y.dtype}; only int8 -> float32 at the graph output "
                                                      f"is supported")
        self.require_int8([x], opname, node_name)
        self.add_node("dequantize", node_name, [x.name], [y.name])

    def op_relu(self, op, opname, node_name, ins, outs):
        (x,), y = self.operands(ins, outs, (1, 1), opname, node_name)
        self.require_int8([x, y], opname, node_name)
        self.add_node("relu", node_name, [x.name], [y.name])

    def op_relu6(self, op, opname, node_name, ins, outs):
        (x,), y = self.operands(ins, outs, (1, 1), opname, node_name)
        self.require_int8([x, y], opname, node_name)
        self.add_node("relu6", node_name, [x.name], [y.name])
