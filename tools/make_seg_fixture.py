"""Golden fixture for --mask: pytorch-grad-cam 1.5.7's SemanticSegmentationTarget (the sum of a
class's output map inside a mask) on a small seeded fully-convolutional segmentation net,
exported to ONNX (TorchScript exporter, opset 17, dynamic batch) with its [N, K, h, w] output.

Usage:  /opt/ref/bin/python tools/make_seg_fixture.py [--out tests/fixtures/onnx]

Writes segnet.onnx, segnet_mask.png (the mask at the output grid, values 0, 128 and 255; pgc
gets png / 255 in float32) and segnet.safetensors:
  input_u8  U8 [N, H, W, 3];  input F32 [N, 3, H, W];  targets I64 [N, 2]
  logits    F32 [N, K]         Σ mask · output[c] per class (what the engine's logits become)
  cam.<m>   F32 [N, 2, H, W]   pgc <m>(model, [layer])(input,
                               [SemanticSegmentationTarget(targets[n, t], mask) for n]) per t
Metadata as tools/make_onnx_fixtures.py's cases (model, layer, height, width, mean, std, grid).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TQDM_DISABLE", "1")
import make_fixtures as mf  # noqa: E402
import make_method_fixtures as mmf  # noqa: E402
import make_onnx_fixtures as mof  # noqa: E402
from pytorch_grad_cam import (AblationCAM, GradCAM, GradCAMPlusPlus, HiResCAM,  # noqa: E402
                              LayerCAM, ScoreCAM)
from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget  # noqa: E402

H, W, K, SEED = 32, 40, 5, 31
LAYER = "body.4"
METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "hirescam": HiResCAM,
           "layercam": LayerCAM, "scorecam": ScoreCAM, "ablationcam": AblationCAM}


class SegNet(nn.Module):
    """Stride-2 encoder and a 1x1 classifier per position: [N, K, H/2, W/2]."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        )
        self.classifier = nn.Conv2d(16, K, 1)

    def forward(self, x):
        return self.classifier(self.body(x))


def make_mask(h, w):
    m = np.zeros((h, w), np.uint8)
    m[3:11, 4:13] = 255  # the selected object
    m[12:15, 14:19] = 128  # a half-weight region
    return m


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "tests", "fixtures", "onnx"))
    args = ap.parse_args()
    mf.setup_torch()
    torch.manual_seed(SEED)
    net = SegNet().eval()
    u8 = mf.make_images(mof.N, H, W, 1000 + sum(b"onnx_segnet"))
    x = mf.normalize(u8)
    with torch.no_grad():
        out = net(x)
    gh, gw = out.shape[2:]
    mask_u8 = make_mask(gh, gw)
    mask = np.float32(mask_u8) / np.float32(255.0)
    logits = (out * torch.from_numpy(mask)).sum(dim=(2, 3)).numpy().astype(np.float32)
    targets = np.asarray([[1, 3], [4, 0]], np.int64)

    path = os.path.join(args.out, "segnet.onnx")
    mof.export_torchscript(net, x, path, 17, dynamic_batch=True)
    ort = mof.ort_scores(path, x.numpy(), static_batch1=False)
    assert mof.rel_diff(ort, out.numpy()) <= mof.REL_TOL, "onnxruntime differs from torch"
    Image.fromarray(mask_u8, mode="L").save(os.path.join(args.out, "segnet_mask.png"))

    module = net.get_submodule(LAYER)
    tensors = {"input_u8": np.ascontiguousarray(u8), "input": x.numpy(), "targets": targets,
               "logits": logits}
    for key, cls in METHODS.items():
        with cls(model=net, target_layers=[module]) as cam:
            if key == "scorecam":
                cam.batch_size = mmf.SCORECAM_BATCH
            tensors["cam." + key] = mmf.run_cam(
                cam, x, targets, target_cls=lambda c: SemanticSegmentationTarget(c, mask))
        assert tensors["cam." + key].max() > 0, key
    meta = {
        "model": "segnet.onnx", "layer": LAYER, "height": str(H), "width": str(W),
        "mean": json.dumps([float(v) for v in mf.MEAN]),
        "std": json.dumps([float(v) for v in mf.STD]),
        "mask": "segnet_mask.png", "grid": json.dumps([int(gh), int(gw)]),
        "torch_version": torch.__version__,
        "grad_cam_version": mof.pkg_version("grad-cam"),
        "generator": "tools/make_seg_fixture.py",
    }
    out_path = os.path.join(args.out, "segnet.safetensors")
    mf.save_safetensors(tensors, out_path, meta)
    for k, v in tensors.items():
        print(k, v.shape, float(v.min()), float(v.max()))
    print(out_path, os.path.getsize(out_path), "B")


if __name__ == "__main__":
    main()
