"""Training losses, float64 reference (plain functions; not IR ops, nothing registered here).

softmax_cross_entropy_float: logits z [N, C], integer labels t [N] in [0, C)
    p    = softmax(z) per row, computed as exp(z - max z) / sum exp(z - max z)
    loss = (1/N) * sum_n (logsumexp(z_n) - z_n[t_n])
    dL/dz = (p - onehot(t)) / N
"""
from __future__ import annotations

import numpy as np


def softmax_cross_entropy_float(logits: np.ndarray, labels: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean softmax cross-entropy over the batch and its gradient w.r.t. the logits ([N, C], float64)."""
    z = np.asarray(logits, dtype=np.float64)
    t = np.asarray(labels)
    if z.ndim != 2:
        raise ValueError(f"softmax_cross_entropy_float: logits must be [N, C], got shape {z.shape}")
    n, c = z.shape
    if t.shape != (n,) or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"softmax_cross_entropy_float: labels must be {n} integers, got {t.dtype} {t.shape}")
    if n == 0:
        raise ValueError("softmax_cross_entropy_float: empty batch")
    if np.any((t < 0) | (t >= c)):
        raise ValueError(f"softmax_cross_entropy_float: labels outside [0, {c})")
    shifted = z - z.max(axis=1, keepdims=True)  # <= 0: exp cannot overflow, row max gives exp 1
    e = np.exp(shifted)
    s = e.sum(axis=1, keepdims=True)  # in [1, C]
    rows = np.arange(n)
    loss = float(np.mean(np.log(s[:, 0]) - shifted[rows, t]))
    grad = e / s
    grad[rows, t] -= 1.0
    grad /= n
    return loss, grad
