#!/usr/bin/env python3
"""Checks of tools/export.py that need PyTorch (CI has none; run by hand):

    /opt/ref/bin/python tools/test_export.py

- torchvision VGG, ResNet, DenseNet, MobileNetV2 and EfficientNet trace and export;
- graphs are topologically ordered, end in the logits, and name layers by module path;
- unsupported ops fail with the module's path and the op's name.
"""

from __future__ import annotations

import os
import sys
import tempfile

import torch
import torch.nn as nn
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export  # noqa: E402


def meta_of(model, size=64, **kw):
    kw.setdefault("default_layer", "input")
    meta, tensors = export.to_metadata(
        model, input_size=(size, size), mean=(0.5,) * 3, std=(0.25,) * 3,
        classes=[str(i) for i in range(10)], name="t", **kw)
    return meta, tensors


def check_graph(meta, tensors):
    nodes = meta["graph"]["nodes"]
    assert nodes[0]["op"]["op"] == "input"
    assert nodes[-1]["op"]["op"] == "linear"
    for i, n in enumerate(nodes):
        assert all(j < i for j in n["inputs"]), n
    names = [n["name"] for n in nodes]
    assert len(names) == len(set(names))
    for n in nodes:
        for k in ("weight", "bias"):
            if n["op"].get(k):
                assert n["op"][k] in tensors, n


def expect_error(model, *needles):
    try:
        meta_of(model)
    except export.UnsupportedOp as e:
        msg = str(e)
        assert all(s in msg for s in needles), msg
        return msg
    raise AssertionError(f"{type(model).__name__} exported but should not")


def main():
    torch.manual_seed(0)
    for arch in ("vgg11_bn", "resnet18", "resnet50", "densenet121", "mobilenet_v2",
                 "efficientnet_b0"):
        model = getattr(torchvision.models, arch)(num_classes=10)
        meta, tensors = meta_of(model)
        check_graph(meta, tensors)
        print(f"ok {arch}: {len(meta['graph']['nodes'])} nodes, {len(tensors)} tensors")
    meta, _ = meta_of(torchvision.models.resnet18(num_classes=10), default_layer="layer4")
    assert meta["graph"]["aliases"]["layer4"] == len(meta["graph"]["nodes"]) - 4

    class Gelu(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU())
            self.fc = nn.Linear(4, 10)

        def forward(self, x):
            return self.fc(self.body(x).mean((2, 3)))

    print("ok", expect_error(Gelu(), "body.1", "GELU"))
    print("ok", expect_error(torchvision.models.mobilenet_v3_small(num_classes=10),
                             "features.0.2", "Hardswish"))

    class Softmaxed(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 10, 3)

        def forward(self, x):
            return torch.softmax(self.conv(x).mean((2, 3)), 1)

    print("ok", expect_error(Softmaxed(), "softmax"))

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 10, 3)

        def forward(self, x):
            return (self.conv(x) * 2.0).mean((2, 3))

    print("ok", expect_error(Scaled(), "mul with a constant"))

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.safetensors")
        export.export(torchvision.models.resnet18(num_classes=10), path, input_size=(64, 64),
                      mean=(0.5,) * 3, std=(0.25,) * 3, classes=[str(i) for i in range(10)],
                      default_layer="layer4", name="r18")
        assert os.path.getsize(path) > 40e6
    print("all export checks passed")


if __name__ == "__main__":
    main()
