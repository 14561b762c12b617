"""Golden fixtures for the explained scores (`--score`): pytorch-grad-cam 1.5.7's target objects.

Usage:  /opt/ref/bin/python tools/make_score_fixtures.py [--out tests/fixtures/methods]

Conventions as tools/make_method_fixtures.py (weights regenerated from "seed" and "tensors" by
tools/detweights.py; images from make_fixtures.make_images). One file per model,
tests/fixtures/methods/scores_<case>.safetensors:
  input_u8   U8  [N, H, W, 3]
  input      F32 [N, 3, H, W]         (u8/255 - mean)/std
  logits     F32 [N, K]
  targets    I64 [N, 2]               classes (binary: categories 0/1), different per image
  cam.<method>.<score>  F32 [N, 2, H, W]   pgc <Method>(model, [layer])(input,
                                          [<Target>(targets[n, t]) for n]) per t
with <score> -> <Target>: softmax -> ClassifierOutputSoftmaxTarget, rest -> ClassifierOutputReST,
binary -> BinaryClassifierOutputTarget (a one-output model). Logits are covered by the other
fixtures in that folder.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import detweights  # noqa: E402
import make_fixtures as mf  # noqa: E402
from make_method_fixtures import run_cam  # noqa: E402

from importlib.metadata import version as pkg_version  # noqa: E402
from pytorch_grad_cam import AblationCAM, GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM  # noqa: E402
from pytorch_grad_cam.utils.model_targets import (  # noqa: E402
    BinaryClassifierOutputTarget, ClassifierOutputReST, ClassifierOutputSoftmaxTarget)

MAX_TOTAL_BYTES = 600_000
METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "layercam": LayerCAM,
           "scorecam": ScoreCAM, "ablationcam": AblationCAM}
TARGETS = {"softmax": ClassifierOutputSoftmaxTarget,
           "rest": ClassifierOutputReST, "binary": BinaryClassifierOutputTarget}


def cases():
    return [
        dict(case="multiclass", arch="resnet18", num_classes=7, seed=31, n=2, h=32, w=40,
             layer="layer2", targets=[[1, 4], [3, 0]], scores=["softmax", "rest"]),
        dict(case="binary", arch="resnet18", num_classes=1, seed=32, n=2, h=32, w=40,
             layer="layer2", targets=[[0, 1], [1, 0]], scores=["binary"]),
    ]


def write(outdir, case, arch, num_classes, seed, n, h, w, layer, targets, scores):
    model = mf.build(arch, num_classes, seed)
    u8 = mf.make_images(n, h, w, 2000 + sum(case.encode()))
    x = mf.normalize(u8)
    targets = np.asarray(targets, dtype=np.int64)
    with torch.no_grad():
        logits = model(x).float()
    module = model.get_submodule(layer)
    tensors = {"input_u8": np.ascontiguousarray(u8), "input": np.ascontiguousarray(x.numpy()),
               "logits": logits.numpy(),
               "targets": targets}
    for score in scores:
        for key, cls in METHODS.items():
            kw = {"batch_size": 64} if key == "ablationcam" else {}
            # Not `with`: pgc's __exit__ would swallow an IndexError (a bad class).
            cam = cls(model=model, target_layers=[module], **kw)
            if key == "scorecam":
                cam.batch_size = 64
            maps = run_cam(cam, x, targets, TARGETS[score])
            cam.activations_and_grads.release()
            assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
            zero = int((maps.reshape(-1, h * w).max(axis=1) == 0).sum())
            if zero:
                print(f"  {case} {key} {score}: {zero} all-zero map(s) (ReLU of a negative cam)")
            tensors[f"cam.{key}.{score}"] = maps
    # The scores differ from the logit where it matters: the maps must not all coincide.
    if "softmax" in scores:
        assert np.abs(tensors["cam.gradcam.softmax"] - tensors["cam.gradcam.rest"]).max() > 1e-2
    if "binary" in scores:
        assert np.abs(tensors["cam.scorecam.binary"][:, 0]
                      - tensors["cam.scorecam.binary"][:, 1]).max() > 1e-2
    meta = {
        "arch": arch,
        "num_classes": str(num_classes),
        "seed": str(seed),
        "layer": layer,
        "height": str(h),
        "width": str(w),
        "batch": str(n),
        "targets": json.dumps(targets.tolist()),
        "scores": json.dumps(scores),
        "targets_classes": json.dumps({k: v.__name__ for k, v in TARGETS.items()}),
        "keys": json.dumps(sorted(k for k in tensors if k.startswith("cam."))),
        "tensors": json.dumps(detweights.tensor_list(model)),
        "tensor_qsums": json.dumps(mf.qsums(model, seed)),
        "mean": json.dumps(mf.MEAN),
        "std": json.dumps(mf.STD),
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "grad_cam_version": pkg_version("grad-cam"),
        "numpy_version": np.__version__,
        "generator": "tools/make_score_fixtures.py",
    }
    path = os.path.join(outdir, f"scores_{case}.safetensors")
    mf.save_safetensors(tensors, path, meta)
    size = os.path.getsize(path)
    print(f"{case}: wrote {path} ({size} B): {json.loads(meta['keys'])}")
    return size


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/methods")
    args = ap.parse_args()
    mf.setup_torch()
    total = sum(write(args.out, **c) for c in cases())
    assert total < MAX_TOTAL_BYTES, total


if __name__ == "__main__":
    main()
