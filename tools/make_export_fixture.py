#!/usr/bin/env python3
"""Golden fixture for the exporter: a custom net with every op tools/export.py maps, exported
to a self-describing file, plus PyTorch's logits and pytorch-grad-cam's Grad-CAM maps.

Usage:  /opt/ref/bin/python tools/make_export_fixture.py [--out tests/fixtures/export]

Writes
  custom.safetensors         the exported model (tools/export.py)
  custom-golden.safetensors  input_u8 U8 [N, H, W, 3], input F32 [N, 3, H, W],
                             logits F32 [N, K], targets I64 [N, T],
                             cams.<layer> F32 [N, T, H, W] for every layer in "layers"
                             (pytorch_grad_cam.GradCAM(model, [module]) per layer)
The net covers: conv (strided, dilated, grouped, depthwise, no-bias), BatchNorm, ReLU, ReLU6,
SiLU, Sigmoid, squeeze-excitation (mean -> 1x1 convs -> sigmoid -> mul), concat, residual
add, max and average pooling, dropout, flatten via view, and a linear head.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export  # noqa: E402
from make_fixtures import save_safetensors  # noqa: E402
from pytorch_grad_cam import GradCAM  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

MEAN = (0.5, 0.45, 0.4)
STD = (0.25, 0.2, 0.3)
SIZE = (37, 42)  # odd on purpose
CLASSES = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"]


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, r: int):
        super().__init__()
        self.reduce = nn.Conv2d(c, r, 1)
        self.act = nn.SiLU()
        self.expand = nn.Conv2d(r, c, 1)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(s))))


class Mix(nn.Module):
    """Two branches concatenated on channels (DenseNet/Inception style)."""

    def __init__(self, c: int):
        super().__init__()
        self.a = nn.Conv2d(c, 7, 1, bias=False)
        self.b = nn.Conv2d(c, 6, 3, padding=2, dilation=2, groups=2)

    def forward(self, x):
        return torch.cat([self.a(x), F.relu(self.b(x))], dim=1)


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.short = nn.Conv2d(c_in, c_out, 1, stride=2)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)) + self.short(x))


class CustomNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 10, 3, stride=2, padding=1), nn.BatchNorm2d(10), nn.ReLU6(inplace=True)
        )
        self.dw = nn.Sequential(
            nn.Conv2d(10, 10, 3, padding=1, groups=10, bias=False), nn.BatchNorm2d(10), nn.SiLU()
        )
        self.mix = Mix(10)
        self.se = SqueezeExcite(13, 5)
        self.block = Block(13, 18)
        self.pool = nn.MaxPool2d(3, stride=1, padding=1)
        self.smooth = nn.AvgPool2d(2, stride=1, ceil_mode=True, count_include_pad=False)
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(18, len(CLASSES))

    def forward(self, x):
        x = self.se(self.mix(self.dw(self.stem(x))))
        x = self.smooth(self.pool(self.block(x)))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.head(self.drop(x.view(x.size(0), -1)))


def build() -> nn.Module:
    torch.manual_seed(7)
    net = CustomNet()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):  # non-trivial eval statistics
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/export")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    net = build()
    export.export(net, os.path.join(args.out, "custom.safetensors"), input_size=SIZE,
                  mean=MEAN, std=STD, classes=CLASSES, default_layer="block", name="custom",
                  output="softmax")

    rng = np.random.default_rng(11)
    n, (h, w) = 3, SIZE
    u8 = rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
    x = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.no_grad():
        logits = net(x)
    targets = np.array([[0, 3], [5, 1], [6, 2]], dtype=np.int64)
    layers = {"mix": net.mix, "se": net.se, "block": net.block, "dw.2": net.dw[2]}
    tensors = {"input_u8": u8, "input": x.numpy(), "logits": logits.numpy(), "targets": targets}
    for name, module in layers.items():
        cams = np.zeros((n, targets.shape[1], h, w), np.float32)
        with GradCAM(model=net, target_layers=[module]) as cam:
            for t in range(targets.shape[1]):
                cams[:, t] = cam(x, [ClassifierOutputTarget(int(c)) for c in targets[:, t]])
        tensors[f"cams.{name}"] = cams
    save_safetensors(tensors, os.path.join(args.out, "custom-golden.safetensors"),
                     {"layers": ",".join(layers), "height": str(h), "width": str(w),
                      "torch": torch.__version__})
    print(f"wrote {args.out}: logits {logits.shape}, layers {list(layers)}")


if __name__ == "__main__":
    main()
