"""Golden fixture for --sess: pytorch-grad-cam 1.5.7's SESS (Saliency Enhancing with Scaling
and Sliding) around Grad-CAM and Grad-CAM++ on a seeded ResNet-18 at a small square input, so
that few scales give a handful of patches each.

Usage:  /opt/ref/bin/python tools/make_sess_fixture.py [--out tests/fixtures/methods]

Conventions as tools/make_new_method_fixtures.py (weights regenerated from "seed" and "tensors"
by tools/detweights.py; images from make_fixtures.make_images). tests/fixtures/methods/sess.safetensors:
  input_u8 U8 [N, H, W, 3];  input F32 [N, 3, H, W];  logits F32 [N, K];  targets I64 [N, 2]
  cam.<case>  F32 [N, 2, H, W]  SESS(model, [layer], base_method, **options)(input,
                                [ClassifierOutputTarget(targets[n, t]) for n]) per t
Metadata "cases": {case: {"method": --method, "options": SESS keyword arguments}}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from importlib.metadata import version as pkg_version

import cv2
import numpy as np
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import detweights  # noqa: E402
import make_fixtures as mf  # noqa: E402
from make_method_fixtures import run_cam  # noqa: E402
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus  # noqa: E402
from pytorch_grad_cam.sess import SESS  # noqa: E402

CASE = dict(arch="resnet18", num_classes=7, seed=43, n=2, h=32, w=32, layer="layer2",
            targets=[[1, 4], [3, 0]])
BASES = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus}
CASES = {
    "sess": ("gradcam", dict(num_scales=4)),
    "sess.max": ("gradcam++", dict(num_scales=3, step_size=12, pool="max")),
    "sess.theta": ("gradcam", dict(num_scales=4, theta=0.2, pre_filter_ratio=0.3)),
    "sess.raw": ("gradcam", dict(scales=[32, 45], smooth=False)),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/methods")
    args = ap.parse_args()
    mf.setup_torch()
    c = CASE
    model = mf.build(c["arch"], c["num_classes"], c["seed"])
    u8 = mf.make_images(c["n"], c["h"], c["w"], 3000 + c["seed"])
    x = mf.normalize(u8)
    targets = np.asarray(c["targets"], dtype=np.int64)
    with torch.no_grad():
        logits = model(x).float()
    tensors = {"input_u8": np.ascontiguousarray(u8), "input": np.ascontiguousarray(x.numpy()),
               "logits": logits.numpy(), "targets": targets}
    for key, (base, opts) in CASES.items():
        cam = SESS(model, [model.get_submodule(c["layer"])], base_method=BASES[base], **opts)
        maps = run_cam(cam, x, targets)
        cam.base_cam.activations_and_grads.release()
        assert np.isfinite(maps).all() and maps.max() > 0.5, key
        tensors["cam." + key] = maps
    meta = {
        "arch": c["arch"], "num_classes": str(c["num_classes"]), "seed": str(c["seed"]),
        "layer": c["layer"], "height": str(c["h"]), "width": str(c["w"]),
        "batch": str(c["n"]), "targets": json.dumps(targets.tolist()),
        "cases": json.dumps({k: {"method": b, "options": o} for k, (b, o) in CASES.items()}),
        "tensors": json.dumps(detweights.tensor_list(model)),
        "tensor_qsums": json.dumps(mf.qsums(model, c["seed"])),
        "mean": json.dumps(mf.MEAN), "std": json.dumps(mf.STD),
        "torch_version": torch.__version__, "torchvision_version": torchvision.__version__,
        "grad_cam_version": pkg_version("grad-cam"), "opencv_version": cv2.__version__,
        "generator": "tools/make_sess_fixture.py",
    }
    path = os.path.join(args.out, "sess.safetensors")
    mf.save_safetensors(tensors, path, meta)
    print(f"wrote {path} ({os.path.getsize(path)} B): {sorted(CASES)}")


if __name__ == "__main__":
    main()
