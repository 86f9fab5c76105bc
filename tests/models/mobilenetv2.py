"""MobileNetV2 (Sandler et al. 2018) in PyTorch, written from the paper's table, exported to ONNX
with its BatchNormalization nodes kept (so BN folding is exercised downstream).

    build_mobilenetv2_onnx(path, width=0.35, resolution=128, num_classes=10, seed=0) -> path

Architecture: conv 3x3/2 (32*w) -> 17 inverted-residual blocks (t, c, n, s) = (1,16,1,1) (6,24,2,2)
(6,32,3,2) (6,64,4,2) (6,96,3,1) (6,160,3,2) (6,320,1,1) -> conv 1x1 (1280 * max(1, w)) -> global
average pool -> dropout -> linear. Every conv is bias-free and followed by BatchNorm; ReLU6 after
all but the block projections. Channels are w*c rounded to a multiple of 8 (never below 90% of
w*c), as the reference implementation does. Weights: He-normal (fan-out) convs, N(0, 0.01)
linear, seeded; BN running statistics come from one training-mode pass over random images and are
then perturbed randomly, and BN scale/shift are random, so no BN is an identity.

torch is a test-only dependency; importing this module without torch raises ImportError.
"""
from __future__ import annotations

import os
import warnings

import torch
from torch import nn

SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
            (6, 320, 1, 1))
OPSET = 17


def make_divisible(v: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round ``v`` to the nearest multiple of ``divisor`` (at least ``min_value``), going one
    multiple up if that loses more than 10% of ``v``."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _conv_bn(cin: int, cout: int, k: int, stride: int, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=False))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = int(round(cin * expand))
        self.residual = stride == 1 and cin == cout
        layers = []
        if expand != 1:
            layers.append(_conv_bn(cin, hidden, 1, 1))
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden), _conv_bn(hidden, cout, 1, 1, act=False)]
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class MobileNetV2(nn.Module):
    def __init__(self, width: float = 1.0, num_classes: int = 1000, dropout: float = 0.2):
        super().__init__()
        cin = make_divisible(32 * width)
        last = make_divisible(1280 * max(1.0, width))
        blocks = [_conv_bn(3, cin, 3, 2)]
        for t, c, n, s in SETTINGS:
            cout = make_divisible(c * width)
            for i in range(n):
                blocks.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        blocks.append(_conv_bn(cin, last, 1, 1))
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))

    def forward(self, x):
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, 1)
        return self.classifier(torch.flatten(x, 1))


def randomize(model: MobileNetV2, resolution: int, seed: int) -> MobileNetV2:
    """Seeded weights and non-trivial BatchNorm parameters and running statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_out) ** 0.5)
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.01)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.01)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.momentum = None  # running stats = the (cumulative) batch statistics
                m.reset_running_stats()
        model.train()
        model(torch.randn((8, 3, resolution, resolution), generator=g))
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                std = m.running_var.sqrt()
                m.running_mean.add_(torch.randn(m.running_mean.shape, generator=g) * 0.2 * std)
                m.running_var.mul_(0.5 + 1.5 * torch.rand(m.running_var.shape, generator=g))
                m.momentum = 0.1
    return model.eval()


def build_mobilenetv2(width: float = 0.35, resolution: int = 128, num_classes: int = 10, seed: int = 0) -> MobileNetV2:
    torch.manual_seed(seed)
    return randomize(MobileNetV2(width, num_classes), resolution, seed)


def build_mobilenetv2_onnx(path, width: float = 0.35, resolution: int = 128, num_classes: int = 10,
                           seed: int = 0) -> str:
    """Export MobileNetV2 (eval mode, BatchNormalization nodes kept, input "input" [N, 3, R, R] with
    a symbolic batch, output "logits" [N, num_classes], opset 17) to ``path``; returns the path."""
    path = os.fspath(path)
    model = build_mobilenetv2(width, resolution, num_classes, seed)
    x = torch.zeros((1, 3, resolution, resolution))
    kwargs = dict(input_names=["input"], output_names=["logits"], opset_version=OPSET,
                  dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # TorchScript exporter; PRESERVE (with the model in eval mode) keeps BatchNormalization,
            # EVAL would fold it into the convolutions.
            torch.onnx.export(model, (x,), path, dynamo=False, training=torch.onnx.TrainingMode.PRESERVE,
                              do_constant_folding=True, **kwargs)
        except TypeError:  # a torch without the TorchScript exporter: the dynamo exporter
            del kwargs["dynamic_axes"]
            torch.onnx.export(model, (x,), path, dynamo=True, optimize=False,
                              dynamic_shapes={"x": {0: torch.export.Dim("N")}}, **kwargs)
    return path
