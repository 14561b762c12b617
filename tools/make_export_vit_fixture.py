#!/usr/bin/env python3
"""Golden fixture for vision transformers through tools/export.py: the small torchvision ViT
and the DeiT-style net of tools/make_onnx_fixtures.py (image 64, patch 8, 2 layers, 4 heads,
hidden 32, mlp 64, 10 classes; same builders and seeds), exported to self-describing files,
with PyTorch's logits and pytorch-grad-cam's Grad-CAM maps at the last block's ln_1 through
its ViT reshape_transform (the class token dropped, or class and distillation tokens for
DeiT; the 8 x 8 patch grid to NCHW).

Usage:  /opt/ref/bin/python tools/make_export_vit_fixture.py [--out tests/fixtures/export]

Writes
  vit.safetensors, deit.safetensors  the exported models (default layer
                                     encoder.layers.encoder_layer_1.ln_1, token layers listed)
  vit-golden.safetensors             input_u8 U8 [N, H, W, 3], targets I64 [N, T],
                                     <case>.logits F32 [N, 10], <case>.cams F32 [N, T, H, W]
                                     (pytorch_grad_cam.GradCAM per target column)
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
from make_onnx_fixtures import DeiT, build_vit, deit_reshape_transform  # noqa: E402
from make_onnx_fixtures import vit_reshape_transform  # noqa: E402
from pytorch_grad_cam import GradCAM  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

MEAN = (0.5, 0.45, 0.4)
STD = (0.25, 0.2, 0.3)
SIZE = (64, 64)
LAYER = "encoder.layers.encoder_layer_1.ln_1"
# case -> (builder, seed, pgc reshape_transform)
CASES = {"vit": (build_vit, 28, vit_reshape_transform),
         "deit": (DeiT, 30, deit_reshape_transform)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/export")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(1)
    rng = np.random.default_rng(12)
    n, (h, w) = 2, SIZE
    u8 = rng.integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)
    x = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255.0
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    targets = np.array([[4, 8], [1, 6]], dtype=np.int64)
    tensors = {"input_u8": u8, "targets": targets}
    for case, (build, seed, reshape) in CASES.items():
        torch.manual_seed(seed)
        net = build().eval()
        meta = export.export(net, os.path.join(args.out, f"{case}.safetensors"),
                             input_size=SIZE, mean=MEAN, std=STD,
                             classes=[f"c{i}" for i in range(10)], name=case)
        assert meta["default_layer"] == LAYER, meta["default_layer"]
        with torch.no_grad():
            tensors[f"{case}.logits"] = net(x).numpy()
        layer = net.get_submodule(LAYER)
        cams = np.zeros((n, targets.shape[1], h, w), np.float32)
        with GradCAM(model=net, target_layers=[layer], reshape_transform=reshape) as cam:
            for t in range(targets.shape[1]):
                cams[:, t] = cam(x, [ClassifierOutputTarget(int(c)) for c in targets[:, t]])
        tensors[f"{case}.cams"] = cams
    save_safetensors(tensors, os.path.join(args.out, "vit-golden.safetensors"),
                     {"cases": ",".join(CASES), "layer": LAYER, "height": str(h),
                      "width": str(w), "torch": torch.__version__})
    print(f"wrote {args.out}: cases {list(CASES)}, layer {LAYER}")


if __name__ == "__main__":
    main()
