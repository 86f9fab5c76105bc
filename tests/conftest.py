"""Shared pytest fixtures (generic only; model builders live in tests/models/)."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(scope="session")
def mobilenetv2_onnx(tmp_path_factory) -> str:
    """MobileNetV2 w0.35, 128x128x3, 10 classes (BatchNormalization kept), exported once per session."""
    pytest.importorskip("torch")
    from models.mobilenetv2 import build_mobilenetv2_onnx

    return build_mobilenetv2_onnx(tmp_path_factory.mktemp("mobilenetv2") / "mobilenetv2_w035_r128_c10.onnx")
