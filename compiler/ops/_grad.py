"""Helpers shared by the float backward rules (``Op.backward_float``). Float64 throughout.

Window geometry matches ``_common.windows``: tap (i, j) of output pixel (oh, ow) reads padded input
pixel (oh*sh + i*dh, ow*sw + j*dw). ``tap_slice`` is the strided view of the padded input that tap
(i, j) reads for all output pixels at once; within one tap no two output pixels read the same input
pixel, so ``gxp[tap_slice] += g`` scatters without collisions.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np


def act_grad(gy: np.ndarray, y: np.ndarray, act: str) -> np.ndarray:
    """dL/dz from dL/dy for y = act(z), mask taken from y: relu y > 0; relu6 0 < y < 6; none 1."""
    g = np.asarray(gy, dtype=np.float64)
    if act == "none":
        return g
    y = np.asarray(y)
    if act == "relu":
        return np.where(y > 0, g, 0.0)
    if act == "relu6":
        return np.where((y > 0) & (y < 6), g, 0.0)
    raise ValueError(f"unknown fused activation {act!r}")


def check_need(op: str, need: Iterable[int], allowed: tuple[int, ...]) -> set[int]:
    need = set(need)
    bad = need - set(allowed)
    if bad:
        raise ValueError(f"{op}: no gradient for input position(s) {sorted(bad)} (has {list(allowed)})")
    return need


def check_rows(op: str, rows: int | None, channels: int) -> int:
    """Number of leading output channels a weight/bias gradient covers (``None``: all)."""
    if rows is None:
        return channels
    rows = int(rows)
    if not 1 <= rows <= channels:
        raise ValueError(f"{op}: rows={rows} outside [1, {channels}] output channels")
    return rows


def reduce_to(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a broadcast result's gradient back to an operand of ``shape`` (numpy broadcasting)."""
    shape = tuple(shape)
    lead = g.ndim - len(shape)
    if lead:
        g = g.sum(axis=tuple(range(lead)))
    axes = tuple(a for a, d in enumerate(shape) if d == 1 and g.shape[a] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)


def taps(kh: int, kw: int, stride: tuple[int, int], dilation: tuple[int, int], oh: int,
         ow: int) -> Iterator[tuple[int, int, tuple[slice, ...]]]:
    """(i, j, index) per kernel tap in row-major order; index selects [N, OH, OW, C] of padded NHWC."""
    sh, sw = stride
    dh, dw = dilation
    for i in range(kh):
        for j in range(kw):
            yield i, j, (slice(None), slice(i * dh, i * dh + (oh - 1) * sh + 1, sh),
                         slice(j * dw, j * dw + (ow - 1) * sw + 1, sw), slice(None))


def padded_zeros(x_shape: tuple[int, ...], pads: tuple[int, int, int, int]) -> np.ndarray:
    """Float64 zeros shaped like the (top, left, bottom, right)-padded NHWC input."""
    t, l, b, r = pads
    n, h, w, c = x_shape
    return np.zeros((n, h + t + b, w + l + r, c), dtype=np.float64)


def crop(gxp: np.ndarray, pads: tuple[int, int, int, int], x_shape: tuple[int, ...]) -> np.ndarray:
    """Gradient of the unpadded input: drop the padding rows/columns of a padded-input gradient."""
    t, l = pads[0], pads[1]
    return np.ascontiguousarray(gxp[:, t:t + x_shape[1], l:l + x_shape[2], :])
