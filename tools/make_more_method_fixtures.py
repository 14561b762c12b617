"""Golden fixtures for RandomCAM, FinerCAM and ShapleyCAM (pytorch-grad-cam 1.5.7), on the
ResNet-18 case of tools/make_new_method_fixtures.py (same weights, images and targets), in a
file of their own so the first set stays as it is.

Usage:  /opt/ref/bin/python tools/make_more_method_fixtures.py [--out tests/fixtures/methods]

tests/fixtures/methods/more_methods.safetensors (input_u8, input, logits, targets as there):
  cam.random-cam[.<layer>]  F32 [N, 2, H, W]  np.random.seed(random_seed), then RandomCAM per
                                               target column (both columns draw the same weights)
  cam.finer-cam[.<layer>]   F32 [N, 2, H, W]  FinerCAM with FinerWeightedTarget(c, comparison,
                                               1) per image, comparison by pgc's own rule (the
                                               1st-3rd classes sorted by |y - y_c|)
  cam.finer-cam.top1        F32 [N, 1, H, W]  FinerCAM()(x): pgc picks the classes (argmax)
  cam.finer-cam.opts        F32 [N, 1, H, W]  FinerCAM()(x, target_idx=finer_class,
                                               alpha=finer_alpha, comparison_categories=...)
  cam.shapley-cam.<score>   F32 [N, 2, H, W]  ShapleyCAM with ClassifierOutputTarget (logit),
                                               ClassifierOutputSoftmaxTarget (softmax) or
                                               ClassifierOutputReST (rest)
  random_draws              F32 [8]           np.random.seed(random_seed); uniform(-1, 1, 8)
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402
from make_method_fixtures import run_cam  # noqa: E402
from make_new_method_fixtures import CASE  # noqa: E402

from importlib.metadata import version as pkg_version  # noqa: E402
from pytorch_grad_cam.finer_cam import FinerCAM  # noqa: E402
from pytorch_grad_cam.random_cam import RandomCAM  # noqa: E402
from pytorch_grad_cam.shapley_cam import ShapleyCAM  # noqa: E402
from pytorch_grad_cam.utils.model_targets import (  # noqa: E402
    ClassifierOutputReST, ClassifierOutputSoftmaxTarget, ClassifierOutputTarget,
    FinerWeightedTarget)

MAX_BYTES = 300_000
# A seed whose maps all have a clear positive part (an all-zero map after ReLU is degenerate).
RANDOM_SEED = 22
FINER_CLASS, FINER_ALPHA, FINER_COMPARE = 5, 0.5, [2, 4]


def finer_targets(logits, classes, compare=(1, 2, 3), alpha=1.0):
    """pgc FinerCAM.forward's rule for a given class per image (it takes the argmax or one
    target_idx for all): the classes at `compare` in the order of |y - y_c|."""
    out = []
    for i, c in enumerate(classes):
        order = np.argsort(np.abs(logits[i] - logits[i, c]))
        out.append(FinerWeightedTarget(int(order[0]), [int(order[k]) for k in compare], alpha))
    return out


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
    out = logits.numpy()
    tensors = {"input_u8": np.ascontiguousarray(u8), "input": np.ascontiguousarray(x.numpy()),
               "logits": out, "targets": targets}
    np.random.seed(RANDOM_SEED)
    tensors["random_draws"] = np.random.uniform(-1, 1, size=8).astype(np.float32)
    n, T = targets.shape
    for layer in [c["layer"]] + c["other_layers"]:
        suffix = "" if layer == c["layer"] else "." + layer
        tl = [model.get_submodule(layer)]
        cam = RandomCAM(model, tl)
        maps = np.zeros((n, T, c["h"], c["w"]), np.float32)
        for t in range(T):
            np.random.seed(RANDOM_SEED)
            maps[:, t] = cam(x, [ClassifierOutputTarget(int(k)) for k in targets[:, t]])
        cam.activations_and_grads.release()
        tensors[f"cam.random-cam{suffix}"] = maps.copy()
        cam = FinerCAM(model, tl)
        for t in range(T):
            maps[:, t] = cam(x, finer_targets(out, targets[:, t]))
        tensors[f"cam.finer-cam{suffix}"] = maps.copy()
        if layer == c["layer"]:
            tensors["cam.finer-cam.top1"] = cam(x)[:, None]
            tensors["cam.finer-cam.opts"] = cam(
                x, target_idx=FINER_CLASS, alpha=FINER_ALPHA,
                comparison_categories=FINER_COMPARE)[:, None]
        cam.base_cam.activations_and_grads.release()
    for score, cls in [("logit", ClassifierOutputTarget),
                       ("softmax", ClassifierOutputSoftmaxTarget),
                       ("rest", ClassifierOutputReST)]:
        cam = ShapleyCAM(model, [model.get_submodule(c["layer"])])
        tensors[f"cam.shapley-cam.{score}"] = run_cam(cam, x, targets, target_cls=cls)
        cam.activations_and_grads.release()
    for k, v in tensors.items():
        if k.startswith("cam."):
            assert np.isfinite(v).all() and v.min() >= 0 and v.max() <= 1, k
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
        "methods": json.dumps(["random-cam", "finer-cam", "shapley-cam"]),
        "random_seed": str(RANDOM_SEED),
        "finer_class": str(FINER_CLASS),
        "finer_alpha": str(FINER_ALPHA),
        "finer_compare": json.dumps(FINER_COMPARE),
        "tensors": json.dumps(__import__("detweights").tensor_list(model)),
        "tensor_qsums": json.dumps(mf.qsums(model, c["seed"])),
        "mean": json.dumps(mf.MEAN),
        "std": json.dumps(mf.STD),
        "torch_version": torch.__version__,
        "grad_cam_version": pkg_version("grad-cam"),
        "numpy_version": np.__version__,
        "generator": "tools/make_more_method_fixtures.py",
    }
    path = os.path.join(args.out, "more_methods.safetensors")
    mf.save_safetensors(tensors, path, meta)
    size = os.path.getsize(path)
    print(f"wrote {path} ({size} B): {sorted(k for k in tensors if k.startswith('cam.'))}")
    assert size < MAX_BYTES, size


if __name__ == "__main__":
    main()
