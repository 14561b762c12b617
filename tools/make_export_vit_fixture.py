#!/usr/bin/env python3
"""Golden fixture for vision transformers through tools/export.py: the small torchvision ViT,
the DeiT-style net (image 64, patch 8, 2 layers, 4 heads, hidden 32, mlp 64, 10 classes) and
the small torchvision Swin (patch 2, embed 16, depths [1, 2], window 4, at 32 x 32) of
tools/make_onnx_fixtures.py (same builders, seeds and sizes), exported to self-describing
files, with PyTorch's logits and pytorch-grad-cam's Grad-CAM maps at the default layer
(ViT, DeiT: the last block's ln_1 through pgc's ViT reshape_transform, the class token
dropped, or class and distillation tokens; Swin: the last block's norm1, [N, h, w, C]
permuted to NCHW).

Usage:  /opt/ref/bin/python tools/make_export_vit_fixture.py [--out tests/fixtures/export]

Writes
  vit.safetensors, deit.safetensors, swin.safetensors
                          the exported models (default layer as below, token layers listed)
  vit-golden.safetensors  targets I64 [N, T], <case>.input_u8 U8 [N, H, W, 3],
                          <case>.logits F32 [N, 10], <case>.cams F32 [N, T, H, W]
                          (pytorch_grad_cam.GradCAM per target column); metadata "cases",
                          "layer.<case>"
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export  # noqa: E402
from make_fixtures import save_safetensors  # noqa: E402
from make_onnx_fixtures import DeiT, build_swin, build_vit, deit_reshape_transform  # noqa: E402
from make_onnx_fixtures import swin_reshape_transform, vit_reshape_transform  # noqa: E402
from pytorch_grad_cam import GradCAM  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

MEAN = (0.5, 0.45, 0.4)
STD = (0.25, 0.2, 0.3)
VIT_LAYER = "encoder.layers.encoder_layer_1.ln_1"
# case -> (builder, seed, input size, default layer, pgc reshape_transform)
CASES = {"vit": (build_vit, 28, (64, 64), VIT_LAYER, vit_reshape_transform),
         "deit": (DeiT, 30, (64, 64), VIT_LAYER, deit_reshape_transform),
         "swin": (build_swin, 29, (32, 32), "features.3.1.norm1", swin_reshape_transform)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/export")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    targets = np.array([[4, 8], [1, 6]], dtype=np.int64)
    tensors, layers = {"targets": targets}, {}
    for case, (build, seed, size, layer, reshape) in CASES.items():
        rng = np.random.default_rng(12)
        n, (h, w) = targets.shape[0], size
        u8 = rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
        x = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255.0
        x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
        torch.manual_seed(seed)
        net = build().eval()
        meta = export.export(net, os.path.join(args.out, f"{case}.safetensors"),
                             input_size=size, mean=MEAN, std=STD,
                             classes=[f"c{i}" for i in range(10)], name=case)
        assert meta["default_layer"] == layer, meta["default_layer"]
        layers[f"layer.{case}"] = layer
        tensors[f"{case}.input_u8"] = u8
        with torch.no_grad():
            tensors[f"{case}.logits"] = net(x).numpy()
        cams = np.zeros((n, targets.shape[1], h, w), np.float32)
        with GradCAM(model=net, target_layers=[net.get_submodule(layer)],
                     reshape_transform=reshape) as cam:
            for t in range(targets.shape[1]):
                cams[:, t] = cam(x, [ClassifierOutputTarget(int(c)) for c in targets[:, t]])
        tensors[f"{case}.cams"] = cams
    save_safetensors(tensors, os.path.join(args.out, "vit-golden.safetensors"),
                     {"cases": ",".join(CASES), **layers, "torch": torch.__version__})
    print(f"wrote {args.out}: {layers}")


if __name__ == "__main__":
    main()
