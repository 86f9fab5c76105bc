"""Model fixtures and helpers for tests (builders for ONNX graphs, MobileNetV2 export)."""
