#!/usr/bin/env python3
"""Train the example model on CLEAN digits and export it to ``examples/digits_cnn.onnx``.

Development tool: needs PyTorch (``pip install torch``); the microtrain package itself does not.
Deterministic (seeded, single thread, deterministic algorithms): re-running it reproduces the
same weights on the same torch build.

Model (input float32 [N, 1, 8, 8] NCHW in [0, 1], output logits [N, 10]):
    Conv 1->8, 3x3, pad 1, no bias + BatchNorm + ReLU    [N,  8, 8, 8]
    Conv 8->16, 3x3, stride 2, pad 1 + ReLU              [N, 16, 4, 4]
    Conv 16->16, 3x3, pad 1 + ReLU                       [N, 16, 4, 4]
    MaxPool 2x2, stride 2                                [N, 16, 2, 2]
    Flatten                                              [N, 64]
    Gemm 64->32 + ReLU                                   [N, 32]
    Gemm 32->10 (logits)                                 [N, 10]
ONNX ops: Conv, BatchNormalization, Relu, MaxPool, Flatten, Gemm (opset 13, batch axis dynamic).

Prints the clean and shifted test accuracy and, with ``--finetune-check``, how far float
fine-tuning of the last layer(s) on the shifted train split recovers (the headroom the on-device
last-mile training has).
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import warnings

import numpy as np
import torch
import torch.nn as nn

from microtrain.host.data import load_data

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 0
EPOCHS = 60
BATCH = 32
LR = 3e-3
WEIGHT_DECAY = 1e-4
OPSET = 13


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(64, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        x = torch.relu(self.conv3(x))
        x = torch.flatten(self.pool(x), 1)
        x = torch.relu(self.fc1(x))
        return self.fc2(x)


def train(model: nn.Module, x: np.ndarray, y: np.ndarray, params=None, epochs: int = EPOCHS, seed: int = SEED):
    """Adam on cross-entropy, minibatches of BATCH in a seeded order."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(params if params is not None else model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), BATCH):
            b = perm[i:i + BATCH]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[b]), yt[b]).backward()
            opt.step()
    return model


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def finetune_last(model: nn.Module, k: int, x: np.ndarray, y: np.ndarray) -> nn.Module:
    """Copy of ``model`` with only its last ``k`` Linear layers trained (BN frozen, eval mode)."""
    m = copy.deepcopy(model).eval()
    linears = [m.fc1, m.fc2][-k:]
    return train(m, x, y, params=[p for layer in linears for p in layer.parameters()])


def export(model: nn.Module, path: str) -> None:
    model.eval()
    dummy = torch.zeros(1, 1, 8, 8)
    kwargs = dict(input_names=["input"], output_names=["logits"], opset_version=OPSET,
                  dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    # TrainingMode.PRESERVE with an eval-mode model keeps BatchNormalization as a node (the EVAL
    # mode would fold it into the conv at export; the frontend's own folding is what we exercise).
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript exporter's notice
    warnings.filterwarnings("ignore", message=".*constant folding.*")  # the model is in eval mode
    try:
        torch.onnx.export(model, (dummy,), path, dynamo=False, training=torch.onnx.TrainingMode.PRESERVE,
                          do_constant_folding=True, **kwargs)
    except TypeError:  # a torch without the TorchScript exporter switch
        torch.onnx.export(model, (dummy,), path, **kwargs)


def check_export(model: nn.Module, path: str, x: np.ndarray) -> float | None:
    """Largest |logit difference| between torch and onnxruntime on ``x`` (None without onnxruntime)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(x)).numpy()
    return float(np.abs(sess.run(None, {"input": x})[0] - ref).max())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default=os.path.join(HERE, "digits_cnn.onnx"))
    ap.add_argument("--finetune-check", action="store_true",
                    help="also report float fine-tuning of the last 1 and 2 layers on the shifted train split")
    args = ap.parse_args(argv)

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    clean = load_data("digits-clean")
    shifted = load_data("digits")

    model = DigitsCNN()
    model.train()
    train(model, clean.x_train, clean.y_train)
    export(model, args.output)

    acc_clean = accuracy(model, clean.x_test, clean.y_test)
    acc_shift = accuracy(model, shifted.x_test, shifted.y_test)
    diff = check_export(model, args.output, clean.x_test)
    print(f"wrote {args.output} ({os.path.getsize(args.output)} bytes)"
          + (f"; onnxruntime vs torch max |logit diff| {diff:.2e}" if diff is not None else ""))
    if diff is not None and diff > 1e-3:
        print("error: the exported model disagrees with torch", file=sys.stderr)
        return 1
    print(f"float test accuracy: clean {acc_clean:.4f}  shifted {acc_shift:.4f} "
          f"({len(clean.y_test)} test samples)")
    if args.finetune_check:
        for k in (1, 2):
            ft = finetune_last(model, k, shifted.x_train, shifted.y_train)
            print(f"fine-tune last {k} layer(s) on shifted train: shifted test {accuracy(ft, shifted.x_test, shifted.y_test):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
