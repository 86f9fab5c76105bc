"""Training/evaluation data: the built-in ``digits`` last-mile task and user ``.npz`` files.

``load_data(spec, model_graph=None) -> Dataset`` where ``spec`` is
  * ``"digits"``       the SHIFTED digits domain (the last-mile adaptation task: a model pretrained
                       on clean digits is adapted on device to this domain);
  * ``"digits-clean"`` the clean digits (the domain the example model was pretrained on);
  * a path to an ``.npz`` holding ``x_train, y_train, x_test, y_test``.

Built-in digits (scikit-learn's ``load_digits``, 1797 8x8 grayscale images, shipped with the
package, no download):
  * samples ``x``: float32 [N, 1, 8, 8] (NCHW, what the ONNX example model takes), values
    ``images / 16`` in [0, 1]; labels ``y``: int64 [N] in 0..9;
  * split: ``sklearn.model_selection.train_test_split(arange(1797), test_size=0.3,
    stratify=target, random_state=0)`` -> 1257 train / 540 test, the same indices for both domains;
  * the shift (``digits_shift``), applied to all 1797 images in dataset order before splitting:
        s = zeros_like(x); s[:, :, 1:, :] = x[:, :, :-1, :]   # content moves down 1 row; top row 0
        s = 0.6 * s + 0.3                                     # contrast x0.6, black level +0.3
        s = s + 0.05 * numpy.random.default_rng(1234).standard_normal((1797, 1, 8, 8))
        s = float32(clip(s, 0, 1))
    (a sensor mounted one pixel lower, with lower contrast, a raised black level and read noise).
With a model given, built-in samples are delivered in the model's source input layout: [N, 1, 8, 8]
for NCHW (ONNX) models, [N, 8, 8, 1] for NHWC (TFLite) models, [N, 64] for flat-input models.

Validation raises :class:`~microtrain.compiler.errors.DataError` with one line naming the data and
the problem: unreadable/missing file, missing arrays, empty splits, sample/label count mismatch,
x dtype not float32/int8, NaN/inf, labels not integer or out of range, sample shape that does not
fit the model input (per sample, batch first; the model's source layout, the IR's NHWC, or the
source shape without its size-1 axes, e.g. [N, 8, 8] for a one-channel [N, 1, 8, 8] model).

Layout/dtype helpers for feeding a model: :func:`to_model_layout` (source layout -> IR NHWC),
:func:`quantize_input` (float32 -> int8 with the model's input parameters), :func:`prepare_input`.
"""
from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, replace

import numpy as np

from ..compiler import quantize as _q
from ..compiler.errors import DataError
from ..compiler.ir import Graph

BUILTIN = ("digits", "digits-clean")
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")

#: the digits split
DIGITS_TEST_FRACTION = 0.3
DIGITS_SPLIT_SEED = 0
#: the digits domain shift
SHIFT_ROWS = 1
SHIFT_GAIN = 0.6
SHIFT_OFFSET = 0.3
SHIFT_NOISE_STD = 0.05
SHIFT_NOISE_SEED = 1234


@dataclass(frozen=True)
class Dataset:
    """Train/test splits, batch first. ``x``: float32 or int8 samples; ``y``: int64 class indices
    in ``[0, num_classes)``. ``layout`` names the sample layout: "NCHW", "NHWC" or "flat"
    (unknown for user files: "as given")."""

    name: str
    description: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    layout: str = "as given"

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}: train {self.x_train.shape} {self.x_train.dtype}, "
                f"test {self.x_test.shape}, {self.num_classes} classes, {self.layout})")


# ---------------------------------------------------------------------------------------------
# Built-in digits
# ---------------------------------------------------------------------------------------------
def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 clean digits: x float32 [1797, 1, 8, 8] in [0, 1] (NCHW), y int64 [1797]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float64) / 16.0).astype(np.float32)[:, None, :, :]
    return x, d.target.astype(np.int64)


def digits_split(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fixed stratified 70/30 split: (train indices, test indices) into the 1797 digits."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=DIGITS_TEST_FRACTION, stratify=y, random_state=DIGITS_SPLIT_SEED)
    return np.asarray(tr), np.asarray(te)


def digits_shift(x: np.ndarray, seed: int = SHIFT_NOISE_SEED) -> np.ndarray:
    """The last-mile domain shift of digits ``x`` (float32 [N, 1, 8, 8] in [0, 1]); see the module
    docstring for the definition. Deterministic: noise is drawn for the whole array at once from
    ``default_rng(seed)``, so a sample's noise depends on its position in ``x``."""
    x = np.asarray(x, dtype=np.float64)
    s = np.zeros_like(x)
    s[:, :, SHIFT_ROWS:, :] = x[:, :, :-SHIFT_ROWS, :]
    s = SHIFT_GAIN * s + SHIFT_OFFSET
    s = s + SHIFT_NOISE_STD * np.random.default_rng(seed).standard_normal(x.shape)
    return np.clip(s, 0.0, 1.0).astype(np.float32)


def _digits(shifted: bool) -> Dataset:
    x, y = digits_images()
    if shifted:
        x = digits_shift(x)
    tr, te = digits_split(y)
    if shifted:
        name, desc = "digits", ("sklearn digits 8x8, SHIFTED domain (down 1 px, x0.6 + 0.3, noise sd 0.05, "
                                "seed 1234): the last-mile adaptation task")
    else:
        name, desc = "digits-clean", "sklearn digits 8x8, clean domain (the example model's pretraining data)"
    return Dataset(name, desc, x[tr], y[tr], x[te], y[te], 10, "NCHW")


def _builtin_for_model(ds: Dataset, graph: Graph) -> Dataset:
    """Deliver built-in NCHW [N, 1, 8, 8] samples in the model's source input layout."""
    _, src = _q.input_sample_shapes(graph)
    if src == (1, 8, 8):
        return ds
    if src == (8, 8, 1):
        t = (0, 2, 3, 1)
        return replace(ds, x_train=np.ascontiguousarray(ds.x_train.transpose(t)),
                       x_test=np.ascontiguousarray(ds.x_test.transpose(t)), layout="NHWC")
    if src == (64,):
        return replace(ds, x_train=ds.x_train.reshape(-1, 64), x_test=ds.x_test.reshape(-1, 64), layout="flat")
    return ds  # validation reports the mismatch


# ---------------------------------------------------------------------------------------------
# .npz files
# ---------------------------------------------------------------------------------------------
def _load_npz(path: str) -> Dataset:
    if not os.path.isfile(path):
        raise DataError(f"data {path}: no such file")
    try:
        z = np.load(path, allow_pickle=False)
        if isinstance(z, np.ndarray):
            raise DataError(f"data {path}: a single array (.npy), not an .npz archive with {', '.join(NPZ_KEYS)}")
        with z:
            missing = [k for k in NPZ_KEYS if k not in z.files]
            if missing:
                raise DataError(f"data {path}: missing array(s) {', '.join(missing)}; an .npz needs "
                                f"{', '.join(NPZ_KEYS)}")
            arrays = {k: z[k] for k in NPZ_KEYS}
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"data {path}: not a readable .npz archive ({msg})") from None
    name = os.path.basename(path)
    return Dataset(name, f"user data from {path}", arrays["x_train"], arrays["y_train"], arrays["x_test"],
                   arrays["y_test"], 0)


# ---------------------------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------------------------
def _labels(y: np.ndarray, key: str, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{where}: {key} must be a 1-D array of class indices, got shape {y.shape}")
    if y.dtype.kind in "iu":
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if np.any(bad):
            raise DataError(f"{where}: {key} must hold integer class indices, found {y[bad][0]!r}")
        return y.astype(np.int64)
    raise DataError(f"{where}: {key} must hold integer class indices, got dtype {y.dtype}")


def _samples(x: np.ndarray, key: str, where: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim < 2:
        raise DataError(f"{where}: {key} must be batch first [N, ...], got shape {x.shape}")
    if x.shape[0] == 0:
        raise DataError(f"{where}: {key} is empty (0 samples)")
    if x.dtype not in (np.float32, np.int8):
        raise DataError(f"{where}: {key} has dtype {x.dtype}; samples must be float32 (quantized with the "
                        f"model's input parameters) or int8 (taken as is)")
    if x.dtype == np.float32 and not np.all(np.isfinite(x)):
        raise DataError(f"{where}: {key} contains NaN or infinite values")
    return x


def num_model_classes(graph: Graph) -> int:
    """Classes a classifier graph predicts: the last axis of its first output."""
    return int(graph.tensors[graph.outputs[0]].shape[-1])


def validate(ds: Dataset, graph: Graph | None = None) -> Dataset:
    """Check ``ds`` (and its fit to ``graph`` when given); return it with int64 labels and
    ``num_classes`` set (the model's output width, else the largest label + 1)."""
    where = f"data {ds.name}"
    x_tr = _samples(ds.x_train, "x_train", where)
    x_te = _samples(ds.x_test, "x_test", where)
    y_tr = _labels(ds.y_train, "y_train", where)
    y_te = _labels(ds.y_test, "y_test", where)
    for xk, x, yk, y in (("x_train", x_tr, "y_train", y_tr), ("x_test", x_te, "y_test", y_te)):
        if x.shape[0] != y.shape[0]:
            raise DataError(f"{where}: {xk} has {x.shape[0]} samples but {yk} has {y.shape[0]} labels")
    if x_tr.shape[1:] != x_te.shape[1:]:
        raise DataError(f"{where}: x_train samples have shape {x_tr.shape[1:]} but x_test samples "
                        f"{x_te.shape[1:]}")
    if x_tr.dtype != x_te.dtype:
        raise DataError(f"{where}: x_train is {x_tr.dtype} but x_test is {x_te.dtype}")
    if graph is not None:
        _q.to_ir_layout(x_tr[:1], graph, where)  # raises DataError on a shape that fits neither layout
        ir, src = _q.input_sample_shapes(graph)
        if x_tr.shape[1:] not in (ir, src):  # size-1 axes left out: restore the source shape
            x_tr, x_te = x_tr.reshape((-1,) + src), x_te.reshape((-1,) + src)
        num_classes = num_model_classes(graph)
        limit = f"for a model with {num_classes} outputs"
    else:
        num_classes = max(int(ds.num_classes), int(max(y_tr.max(), y_te.max())) + 1)
        limit = f"({num_classes} classes)"
    for key, y in (("y_train", y_tr), ("y_test", y_te)):
        bad = (y < 0) | (y >= num_classes)
        if np.any(bad):
            raise DataError(f"{where}: {key} has label {int(y[bad][0])} outside [0, {num_classes}) {limit}")
    return replace(ds, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, num_classes=num_classes)


# ---------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------
def load_data(spec: str | os.PathLike | Dataset, model_graph: Graph | None = None) -> Dataset:
    """Load and validate a dataset; see the module docstring for ``spec``. With ``model_graph``
    the samples are checked against the model input and labels against its output width."""
    if isinstance(spec, Dataset):
        ds = spec
    else:
        s = os.fspath(spec)
        if s in BUILTIN:
            ds = _digits(shifted=(s == "digits"))
            if model_graph is not None:
                ds = _builtin_for_model(ds, model_graph)
        elif s.lower().endswith(".npz") or os.path.exists(s):
            ds = _load_npz(s)
        else:
            raise DataError(f"unknown data {s!r}: expected {' or '.join(BUILTIN)} or a path to an .npz file "
                            f"with {', '.join(NPZ_KEYS)}")
    return validate(ds, model_graph)


def to_model_layout(x: np.ndarray, graph: Graph) -> np.ndarray:
    """Batch-first samples in the model's source layout (NCHW for ONNX) -> the IR layout (NHWC);
    samples already in the IR layout pass unchanged. Raises DataError on any other shape."""
    return _q.to_ir_layout(x, graph)


def quantize_input(x: np.ndarray, graph: Graph) -> np.ndarray:
    """float32 samples -> int8 with the graph's int8 input parameters
    (``clamp(round_half_away(x / s) + zp, -128, 127)``); int8 samples are returned as is."""
    return _q.quantize_samples(x, graph)


def prepare_input(x: np.ndarray, graph: Graph) -> np.ndarray:
    """Samples ready for ``Interpreter(graph).run``: IR layout and the graph input's dtype."""
    return _q.model_input(x, graph)
