"""Golden fixtures for the methods pytorch-grad-cam 1.5.7 added after the first set: FEM,
Seg-Eigen-CAM (its sign correction fixes the SVD's sign, so there is no `.flipped` map) and
KPCA-CAM (sklearn's KernelPCA fixes its sign with svd_flip: no `.flipped` map either; sklearn
is needed here only, not by the tests), and Sobel-CAM (pgc's sobel_cam of the 8-bit image, through
its scale_cam_image; it ignores the layer and the class, so every key holds the same map).

Usage:  /opt/ref/bin/python tools/make_new_method_fixtures.py [--out tests/fixtures/methods]

Conventions as tools/make_method_fixtures.py (weights regenerated from "seed" and "tensors" by
tools/detweights.py; images from make_fixtures.make_images). tests/fixtures/methods/new_methods.safetensors:
  input_u8   U8  [N, H, W, 3];  input  F32 [N, 3, H, W];  logits  F32 [N, K]
  targets    I64 [N, 2]
  cam.<method>            F32 [N, 2, H, W]   pgc <Class>(model, [layer])(input,
                                              [ClassifierOutputTarget(targets[n, t]) for n]) per t
  cam.<method>.<layer>    the same at another layer (metadata "layers")
  cam.kpca-cam.gamma      KPCA_CAM(..., gamma=kpca_gamma) at the main layer
  cam.refine-cam          RefineCAM(model, [layers of metadata "refine_layers"]): Grad-CAM++'s
                            per-layer maps multiplied, rescaled (--method refine-cam)
  cam.gradcam.product     the same with base_method=GradCAM (--method gradcam --fuse product)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import cv2
import numpy as np
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import detweights  # noqa: E402
import make_fixtures as mf  # noqa: E402
from make_method_fixtures import run_cam  # noqa: E402

from importlib.metadata import version as pkg_version  # noqa: E402
from pytorch_grad_cam import FEM, KPCA_CAM, GradCAM, SegEigenCAM  # noqa: E402
from pytorch_grad_cam.refine_cam import RefineCAM  # noqa: E402
import sklearn  # noqa: E402
from pytorch_grad_cam.sobel_cam import sobel_cam  # noqa: E402
from pytorch_grad_cam.utils.image import scale_cam_image  # noqa: E402

MAX_BYTES = 400_000
# --method name -> pgc class
METHODS = {"fem": FEM, "seg-eigen-cam": SegEigenCAM, "kpca-cam": KPCA_CAM}
KPCA_GAMMA = 0.05
CASE = dict(arch="resnet18", num_classes=7, seed=41, n=2, h=32, w=40, layer="layer2",
            other_layers=["layer1"], targets=[[1, 4], [3, 0]])


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
    for key, cls in METHODS.items():
        for layer in [c["layer"]] + c["other_layers"]:
            # Not `with`: pgc's __exit__ would swallow an IndexError (a bad class).
            cam = cls(model=model, target_layers=[model.get_submodule(layer)])
            maps = run_cam(cam, x, targets)
            cam.activations_and_grads.release()
            assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
            zero = int((maps.reshape(-1, c["h"] * c["w"]).max(axis=1) == 0).sum())
            assert zero == 0, (key, layer, zero)
            suffix = "" if layer == c["layer"] else "." + layer
            tensors[f"cam.{key}{suffix}"] = maps
    # KPCA-CAM with a gamma of its own (--kpca-gamma) at the main layer.
    cam = KPCA_CAM(model=model, target_layers=[model.get_submodule(c["layer"])],
                   gamma=KPCA_GAMMA)
    tensors["cam.kpca-cam.gamma"] = run_cam(cam, x, targets)
    cam.activations_and_grads.release()
    # RefineCAM over the main and the other layers, with its default base method and Grad-CAM.
    refine_layers = [c["layer"]] + c["other_layers"]
    for key, kw in [("cam.refine-cam", {}), ("cam.gradcam.product", {"base_method": GradCAM})]:
        cam = RefineCAM(model, [model.get_submodule(m) for m in refine_layers], **kw)
        tensors[key] = run_cam(cam, x, targets)
        for base in cam.base_cam_per_layer:
            base.activations_and_grads.release()
    # Sobel-CAM: a function of the image, not a CAM class.
    sobel = np.stack([scale_cam_image(sobel_cam(im)[None])[0] for im in u8])
    sobel = np.ascontiguousarray(np.repeat(sobel[:, None], targets.shape[1], axis=1), np.float32)
    for layer in [c["layer"]] + c["other_layers"]:
        suffix = "" if layer == c["layer"] else "." + layer
        tensors[f"cam.sobel-cam{suffix}"] = sobel
    meta = {
        "arch": c["arch"],
        "num_classes": str(c["num_classes"]),
        "seed": str(c["seed"]),
        "layer": c["layer"],
        "layers": json.dumps(c["other_layers"]),
        "height": str(c["h"]),
        "width": str(c["w"]),
        "batch": str(c["n"]),
        "targets": json.dumps(targets.tolist()),
        "methods": json.dumps(list(METHODS) + ["sobel-cam"]),
        "method_classes": json.dumps({k: v.__name__ for k, v in METHODS.items()}),
        "fem_k": "2",
        "kpca_gamma": str(KPCA_GAMMA),
        "refine_layers": json.dumps(refine_layers),
        "tensors": json.dumps(detweights.tensor_list(model)),
        "tensor_qsums": json.dumps(mf.qsums(model, c["seed"])),
        "mean": json.dumps(mf.MEAN),
        "std": json.dumps(mf.STD),
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "grad_cam_version": pkg_version("grad-cam"),
        "numpy_version": np.__version__,
        "sklearn_version": sklearn.__version__,
        "opencv_version": cv2.__version__,
        "generator": "tools/make_new_method_fixtures.py",
    }
    path = os.path.join(args.out, "new_methods.safetensors")
    mf.save_safetensors(tensors, path, meta)
    size = os.path.getsize(path)
    print(f"wrote {path} ({size} B): {sorted(k for k in tensors if k.startswith('cam.'))}")
    assert size < MAX_BYTES, size


if __name__ == "__main__":
    main()
