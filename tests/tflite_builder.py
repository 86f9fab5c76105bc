"""Build small TFLite flatbuffers offline (no TensorFlow) for tests.

The models are written the way the TF converter writes full-integer int8 models: buffer 0 is the
empty sentinel, every tensor owns a buffer (empty for activations), weights are int8 with
per-channel scales on their quantized dimension, biases int32 at ``s_in * s_w``, and the
"TFL3" file identifier is set. Only the ``flatbuffers`` runtime and the generated accessors of the
``tflite`` package are used.

    b = build_model(
        tensors=[TensorSpec("x", (1, 8, 8, 3), "int8", scale=0.05, zero_point=-3), ...],
        ops=[OpSpec("CONV_2D", ["x", "w", "b"], ["y"], {"padding": "SAME", "stride_w": 1, ...})],
        inputs=["x"], outputs=["y"])

TFLite's int8 CONV_2D and DEPTHWISE_CONV_2D need the bias input (LiteRT refuses a CONV_2D without
one and crashes in the optimized DEPTHWISE_CONV_2D); a SOFTMAX output must be scale 1/256, zero
point -128; a per-tensor FULLY_CONNECTED bias must be at (about) s_in * s_w.

Option names are the snake_case spelling of the schema fields (``stride_w``,
``fused_activation_function``, ``dilation_h_factor``, ``keep_dims``, ``new_shape``, ``beta``...);
enum values may be given by name (``"SAME"``, ``"RELU6"``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import flatbuffers
import numpy as np
import tflite

_TENSOR_TYPES = {
    "float32": tflite.TensorType.FLOAT32,
    "int32": tflite.TensorType.INT32,
    "uint8": tflite.TensorType.UINT8,
    "int64": tflite.TensorType.INT64,
    "int16": tflite.TensorType.INT16,
    "int8": tflite.TensorType.INT8,
}

# builtin op -> (options table name, BuiltinOptions enum member)
_OPTIONS = {
    "CONV_2D": "Conv2DOptions",
    "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
    "FULLY_CONNECTED": "FullyConnectedOptions",
    "ADD": "AddOptions",
    "AVERAGE_POOL_2D": "Pool2DOptions",
    "MAX_POOL_2D": "Pool2DOptions",
    "MEAN": "ReducerOptions",
    "RESHAPE": "ReshapeOptions",
    "SOFTMAX": "SoftmaxOptions",
    "PAD": "PadOptions",
    "PADV2": "PadV2Options",
    "QUANTIZE": "QuantizeOptions",
    "DEQUANTIZE": "DequantizeOptions",
    "CONCATENATION": "ConcatenationOptions",
    "MUL": "MulOptions",
}

_ENUMS = {
    "padding": tflite.Padding,
    "fused_activation_function": tflite.ActivationFunctionType,
    "weights_format": tflite.FullyConnectedOptionsWeightsFormat,
}


@dataclass
class TensorSpec:
    name: str
    shape: Sequence[int]
    dtype: str = "int8"
    data: np.ndarray | None = None  # constants only
    scale: float | Sequence[float] | None = None  # None: no quantization parameters
    zero_point: int | Sequence[int] | None = None
    axis: int = 0  # quantized_dimension (used when several scales are given)


@dataclass
class OpSpec:
    op: str  # BuiltinOperator name, e.g. "CONV_2D"
    inputs: Sequence[str | None]  # None: optional input left out (-1)
    outputs: Sequence[str]
    options: dict[str, Any] = field(default_factory=dict)
    version: int = 1
    options_type: str | None = None  # override the options table (ops not in _OPTIONS)


def _camel(snake: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in snake.split("_"))


def _vec(b: flatbuffers.Builder, start_fn, values: Sequence, prepend: str) -> int:
    start_fn(b, len(values))
    for v in reversed(list(values)):
        getattr(b, prepend)(v)
    return b.EndVector()


def _options(b: flatbuffers.Builder, table: str, options: dict[str, Any]) -> int:
    mod = tflite
    vectors = {}
    for k, v in options.items():  # vectors must exist before the table starts
        if isinstance(v, (list, tuple, np.ndarray)):
            vectors[k] = _vec(b, getattr(mod, f"{table}Start{_camel(k)}Vector"), [int(x) for x in v],
                              "PrependInt32")
    getattr(mod, f"{table}Start")(b)
    for k, v in options.items():
        add = getattr(mod, f"{table}Add{_camel(k)}")
        if k in vectors:
            add(b, vectors[k])
        elif isinstance(v, str):
            add(b, getattr(_ENUMS[k], v.upper()))
        else:
            add(b, v)
    return getattr(mod, f"{table}End")(b)


def _data_bytes(t: TensorSpec) -> bytes:
    arr = np.ascontiguousarray(np.asarray(t.data, dtype=t.dtype).reshape(tuple(t.shape)))
    return arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()


def build_model(tensors: Sequence[TensorSpec], ops: Sequence[OpSpec], inputs: Sequence[str],
                outputs: Sequence[str], description: str = "microtrain test model") -> bytes:
    """Serialize one subgraph into a .tflite flatbuffer (bytes)."""
    b = flatbuffers.Builder(1024)
    index = {t.name: i for i, t in enumerate(tensors)}

    # Buffers: 0 is the empty sentinel; tensor i owns buffer i + 1.
    buffer_offsets = []
    for payload in [None] + [(_data_bytes(t) if t.data is not None else None) for t in tensors]:
        data_off = b.CreateByteVector(payload) if payload else None
        tflite.BufferStart(b)
        if data_off is not None:
            tflite.BufferAddData(b, data_off)
        buffer_offsets.append(tflite.BufferEnd(b))

    tensor_offsets = []
    for i, t in enumerate(tensors):
        name_off = b.CreateString(t.name)
        shape_off = _vec(b, tflite.TensorStartShapeVector, [int(d) for d in t.shape], "PrependInt32")
        q_off = None
        if t.scale is not None:
            scales = np.atleast_1d(np.asarray(t.scale, dtype=np.float32))
            zps = np.atleast_1d(np.asarray(0 if t.zero_point is None else t.zero_point, dtype=np.int64))
            if zps.size == 1 and scales.size > 1:
                zps = np.full(scales.size, zps[0], np.int64)
            s_off = _vec(b, tflite.QuantizationParametersStartScaleVector, [float(s) for s in scales],
                         "PrependFloat32")
            z_off = _vec(b, tflite.QuantizationParametersStartZeroPointVector, [int(z) for z in zps],
                         "PrependInt64")
            tflite.QuantizationParametersStart(b)
            tflite.QuantizationParametersAddScale(b, s_off)
            tflite.QuantizationParametersAddZeroPoint(b, z_off)
            tflite.QuantizationParametersAddQuantizedDimension(b, int(t.axis))
            q_off = tflite.QuantizationParametersEnd(b)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape_off)
        tflite.TensorAddType(b, _TENSOR_TYPES[t.dtype])
        tflite.TensorAddBuffer(b, i + 1)
        tflite.TensorAddName(b, name_off)
        if q_off is not None:
            tflite.TensorAddQuantization(b, q_off)
        tensor_offsets.append(tflite.TensorEnd(b))

    # Operator codes, one per distinct (op, version).
    codes: list[tuple[str, int]] = []
    for o in ops:
        if (o.op, o.version) not in codes:
            codes.append((o.op, o.version))
    code_offsets = []
    for name, version in codes:
        code = getattr(tflite.BuiltinOperator, name)
        tflite.OperatorCodeStart(b)
        tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
        tflite.OperatorCodeAddBuiltinCode(b, code)
        tflite.OperatorCodeAddVersion(b, version)
        code_offsets.append(tflite.OperatorCodeEnd(b))

    op_offsets = []
    for o in ops:
        ins = _vec(b, tflite.OperatorStartInputsVector, [-1 if n is None else index[n] for n in o.inputs],
                   "PrependInt32")
        outs = _vec(b, tflite.OperatorStartOutputsVector, [index[n] for n in o.outputs], "PrependInt32")
        table = o.options_type or _OPTIONS.get(o.op)
        opt_off = _options(b, table, o.options) if table else None
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, codes.index((o.op, o.version)))
        tflite.OperatorAddInputs(b, ins)
        tflite.OperatorAddOutputs(b, outs)
        if opt_off is not None:
            tflite.OperatorAddBuiltinOptionsType(b, getattr(tflite.BuiltinOptions, table))
            tflite.OperatorAddBuiltinOptions(b, opt_off)
        op_offsets.append(tflite.OperatorEnd(b))

    sg_tensors = _vec(b, tflite.SubGraphStartTensorsVector, tensor_offsets, "PrependUOffsetTRelative")
    sg_inputs = _vec(b, tflite.SubGraphStartInputsVector, [index[n] for n in inputs], "PrependInt32")
    sg_outputs = _vec(b, tflite.SubGraphStartOutputsVector, [index[n] for n in outputs], "PrependInt32")
    sg_ops = _vec(b, tflite.SubGraphStartOperatorsVector, op_offsets, "PrependUOffsetTRelative")
    sg_name = b.CreateString("main")
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, sg_tensors)
    tflite.SubGraphAddInputs(b, sg_inputs)
    tflite.SubGraphAddOutputs(b, sg_outputs)
    tflite.SubGraphAddOperators(b, sg_ops)
    tflite.SubGraphAddName(b, sg_name)
    subgraph = tflite.SubGraphEnd(b)

    m_codes = _vec(b, tflite.ModelStartOperatorCodesVector, code_offsets, "PrependUOffsetTRelative")
    m_sgs = _vec(b, tflite.ModelStartSubgraphsVector, [subgraph], "PrependUOffsetTRelative")
    m_bufs = _vec(b, tflite.ModelStartBuffersVector, buffer_offsets, "PrependUOffsetTRelative")
    m_desc = b.CreateString(description)
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, 3)
    tflite.ModelAddOperatorCodes(b, m_codes)
    tflite.ModelAddSubgraphs(b, m_sgs)
    tflite.ModelAddDescription(b, m_desc)
    tflite.ModelAddBuffers(b, m_bufs)
    model = tflite.ModelEnd(b)
    b.Finish(model, file_identifier=b"TFL3")
    return bytes(b.Output())


# ---- conveniences -------------------------------------------------------------------------------
def act(name: str, shape: Sequence[int], scale: float, zero_point: int, dtype: str = "int8") -> TensorSpec:
    """An int8 activation tensor with per-tensor parameters."""
    return TensorSpec(name, tuple(shape), dtype, scale=float(scale), zero_point=int(zero_point))


def weights(name: str, data: np.ndarray, scales, axis: int = 0) -> TensorSpec:
    """Symmetric int8 weights; several scales make them per-channel along ``axis``."""
    scales = np.atleast_1d(np.asarray(scales, np.float32))
    return TensorSpec(name, data.shape, "int8", data=data.astype(np.int8), scale=scales,
                      zero_point=np.zeros(scales.size, np.int64), axis=axis)


def bias(name: str, data: np.ndarray, s_in: float, w_scales) -> TensorSpec:
    """int32 bias at scale s_in * s_w[c] (float32 product, as the converter stores it)."""
    scales = np.float32(s_in) * np.atleast_1d(np.asarray(w_scales, np.float32))
    return TensorSpec(name, data.shape, "int32", data=data.astype(np.int32), scale=scales,
                      zero_point=np.zeros(scales.size, np.int64), axis=0)


def int32_const(name: str, values: Sequence[int] | np.ndarray) -> TensorSpec:
    arr = np.asarray(values, dtype=np.int32)
    return TensorSpec(name, arr.shape, "int32", data=arr)
