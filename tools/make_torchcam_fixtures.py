"""Golden fixtures for torch-cam 0.5's SS-CAM, IS-CAM and SmoothGrad-CAM++ (--method sscam,
iscam, smoothgradcam++) on a small seeded ResNet-18 (weights from tools/detweights.py, images
from make_fixtures.make_images, as tools/make_new_method_fixtures.py).

Usage:  PYTHONPATH=<torchcam 0.5> /opt/ref/bin/python tools/make_torchcam_fixtures.py \
            [--out tests/fixtures/methods]      (tools/requirements.txt, torchcam included)

torch's RNG can't be reproduced, so the noise is recorded: each method's `_distrib.sample` is
wrapped to draw one image's worth ([1, ...]) and repeat it over the batch (the engine adds the
same noise to every image), and every target slot after the first replays the first slot's
draws. The engine is given these draws (EngineConfig::noise).

tests/fixtures/methods/torchcam_methods.safetensors:
  input_u8 U8 [N, H, W, 3]; input F32 [N, 3, H, W]; logits F32 [N, K]; targets I64 [N, 2]
  cam.<method>     F32 [N, 2, H, W]  torch-cam's raw map (normalized=False) of class
                   targets[n, t], through pgc's ReLU -> min-max -> cv2.resize -> min-max
  noise.sscam      F32 [samples, C, H, W]   SS-CAM's mask noise at the input size
  noise.smoothgradcam++ F32 [samples, 3, H, W]  SmoothGrad-CAM++'s input noise
Metadata: layer, samples and noise std per method (JSON), versions.
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
from make_method_fixtures import finish  # noqa: E402
from torchcam.methods import ISCAM, SSCAM, SmoothGradCAMpp  # noqa: E402

MAX_BYTES = 400_000
CASE = dict(arch="resnet18", num_classes=7, seed=43, n=2, h=16, w=20, layer="layer1",
            targets=[[1, 4], [3, 0]])
# --method -> (torch-cam class, samples, noise std or None)
METHODS = {"sscam": (SSCAM, 3, 2.0), "iscam": (ISCAM, 4, None),
           "smoothgradcam++": (SmoothGradCAMpp, 4, 0.3)}


class Recorder:
    """Stands in for a method's `_distrib`: draws [1, ...] from it, repeated over the batch;
    replays its draws once `replay` is set."""

    def __init__(self, distrib):
        self.distrib, self.draws, self.replay, self.i = distrib, [], False, 0

    def sample(self, shape):
        if self.replay:
            d = self.draws[self.i]
            self.i += 1
        else:
            d = self.distrib.sample((1, *shape[1:]))
            self.draws.append(d)
        return d.expand(*shape).contiguous()


def run(model, cls, x, targets, layer, samples, std, h, w):
    kw = dict(num_samples=samples, input_shape=(3, h, w))
    if std is not None:
        kw["std"] = std
    if cls is not SmoothGradCAMpp:
        kw["batch_size"] = 16
    maps, rec = [], None
    for t in range(targets.shape[1]):
        with cls(model, layer, **kw) as cam:
            if rec is None:
                rec = Recorder(cam._distrib) if hasattr(cam, "_distrib") else None
            elif rec is not None:
                rec.replay, rec.i = True, 0
            if rec is not None:
                cam._distrib = rec
            model(x)
            raw = cam([int(c) for c in targets[:, t]], normalized=False)[0]
        maps.append(finish(raw.detach().numpy(), w, h))
    noise = None if rec is None else torch.cat(rec.draws).numpy()
    return np.ascontiguousarray(np.stack(maps, 1), np.float32), noise


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
    for key, (cls, samples, std) in METHODS.items():
        torch.manual_seed(7)
        maps, noise = run(model, cls, x, targets, c["layer"], samples, std, c["h"], c["w"])
        assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1, key
        tensors[f"cam.{key}"] = maps
        if noise is not None:
            tensors[f"noise.{key}"] = np.ascontiguousarray(noise, np.float32)
    meta = {
        "arch": c["arch"],
        "num_classes": str(c["num_classes"]),
        "seed": str(c["seed"]),
        "layer": c["layer"],
        "height": str(c["h"]),
        "width": str(c["w"]),
        "batch": str(c["n"]),
        "targets": json.dumps(targets.tolist()),
        "methods": json.dumps(list(METHODS)),
        "samples": json.dumps({k: v[1] for k, v in METHODS.items()}),
        "noise_std": json.dumps({k: v[2] for k, v in METHODS.items() if v[2] is not None}),
        "tensors": json.dumps(detweights.tensor_list(model)),
        "tensor_qsums": json.dumps(mf.qsums(model, c["seed"])),
        "mean": json.dumps(mf.MEAN),
        "std": json.dumps(mf.STD),
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "torchcam_version": pkg_version("torchcam"),
        "numpy_version": np.__version__,
        "opencv_version": cv2.__version__,
        "generator": "tools/make_torchcam_fixtures.py",
    }
    path = os.path.join(args.out, "torchcam_methods.safetensors")
    mf.save_safetensors(tensors, path, meta)
    size = os.path.getsize(path)
    print(f"wrote {path} ({size} B): {sorted(k for k in tensors if '.' in k)}")
    assert size < MAX_BYTES, size


if __name__ == "__main__":
    main()
