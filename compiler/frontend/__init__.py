"""Model frontends: ONNX and TFLite files -> IR graphs.

``load_model(path)`` picks the reader by content (TFLite files carry the ``TFL3`` identifier at
byte 4), falling back to the extension, and always returns a verified graph or raises a
:class:`~microtrain.compiler.errors.MicrotrainError` subclass with a one-line message.
"""
from __future__ import annotations

import os

from ..errors import ModelFormatError
from ..ir import Graph


def load_model(path: str | os.PathLike) -> Graph:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelFormatError(f"{path}: no such model file")
    with open(path, "rb") as f:
        head = f.read(8)
    if len(head) >= 8 and head[4:8] == b"TFL3":
        from .tflite_reader import load_tflite

        return load_tflite(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".tflite":
        raise ModelFormatError(f"{path}: not a TFLite flatbuffer (missing the TFL3 identifier)")
    if ext == ".onnx" or ext == "":
        from .onnx_reader import load_onnx

        return load_onnx(path)
    raise ModelFormatError(f"{path}: unknown model format {ext!r}; supported: .onnx, .tflite")
