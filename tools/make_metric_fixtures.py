"""Golden fixture for `gradcam eval`'s reference metrics (src/eval/): pytorch-grad-cam 1.5.7's
ROAD, CamMultImageConfidenceChange and ARCC, and torchcam 0.5's DeletionInsertionMetric.

Usage:  /opt/ref/bin/python tools/make_metric_fixtures.py [--out tests/fixtures/metrics]
(torchcam 0.5 is installed with --no-deps, see tools/requirements.txt; PYTHONPATH may point at it.)

The CAM maps are given (stored, not computed by a CAM method), so only the metrics are tested.
Weights are regenerated from "seed" and "tensors" by tools/detweights.py, images from
make_fixtures.make_images. Scores are softmax probabilities (pgc's
ClassifierOutputSoftmaxTarget; torchcam's logits_fn = softmax), one target class per image.
pgc's NoisyLinearImputer adds `0.01 * torch.randn_like(...)`, which no other RNG reproduces:
it is zeroed here (monkeypatched), and the engine's noise is a parameter set to 0 in the test.

tests/fixtures/metrics/metrics.safetensors:
  input_u8  U8  [N, H, W, 3]        input F32 [N, 3, H, W] = (u8/255 - mean)/std
  targets   I64 [N]                 cams  F32 [N, H, W]   (given maps in [0, 1], with ties)
  override.fc.weight F32 [K, 512]  the seeded head times FC_SCALE (sharper scores)
  road.morf.mask.<p>, road.lerf.mask.<p>  U8 [N, H, W]   pgc's binary masks (1 = kept)
  road.morf.<p>, road.lerf.<p>      F32 [N]  ROADMost/LeastRelevantFirst(p), p in 10..90
  road.morf.imputed.<p>             F32 [N, 3, H, W]  the imputed input (p in 20, 80)
  road.morf_avg, road.lerf_avg, road.combined  F32 [N]  averages over 10..90, ROADCombined
  cam_mult  F32 [N]                 CamMultImageConfidenceChange
  tc.deletion, tc.insertion  F32 [N]  torchcam DeletionInsertionMetric(steps=20) AUCs
  arcc.mixed_cams F32 [N, H, W]     pgc GradCAM on input * cam (coherency's second map)
  arcc.complexity, arcc.coherency, arcc.road, arcc  F32 [N]   ARCC(road_percentiles 20..80)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from functools import partial

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import detweights  # noqa: E402
import make_fixtures as mf  # noqa: E402

from importlib.metadata import version as pkg_version  # noqa: E402
from pytorch_grad_cam import GradCAM  # noqa: E402
from pytorch_grad_cam.metrics import road  # noqa: E402
from pytorch_grad_cam.metrics.arcc import ARCC  # noqa: E402
from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange  # noqa: E402
from pytorch_grad_cam.metrics.perturbation_confidence import RemoveMostRelevantFirst  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget  # noqa: E402
from torchcam.metrics import DeletionInsertionMetric  # noqa: E402

ARCH, CLASSES, SEED, N, H, W, LAYER = "resnet18", 7, 41, 3, 32, 40, "layer2"
FC_SCALE = 4.0
PERCENTILES = [10, 20, 30, 40, 50, 60, 70, 80, 90]


def make_cams(rng):
    """Smooth blobs, one map quantised to eighths (ties at the percentile thresholds)."""
    yy, xx = np.meshgrid(np.linspace(0, 1, H), np.linspace(0, 1, W), indexing="ij")
    cams = np.zeros((N, H, W))
    for i in range(N):
        for _ in range(3):
            cy, cx, s = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.1, 0.3)
            cams[i] += rng.uniform(0.3, 1) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s * s))
        cams[i] += rng.uniform(0, 0.05, size=(H, W))
        cams[i] = (cams[i] - cams[i].min()) / (cams[i].max() - cams[i].min())
    cams[1] = np.round(cams[1] * 8) / 8
    return cams.astype(np.float32)


class GivenCams:
    """A torchcam CAM extractor that returns the stored maps."""

    def __init__(self, model, cams):
        self.model, self.cams = model, cams

    def __call__(self, class_idx, scores):
        return [torch.from_numpy(self.cams)]

    def fuse_cams(self, cams):
        return cams[0]

    def _hooks_off(self):
        return contextlib.nullcontext()


class GivenBase:
    """ARCC's base method, returning the maps computed beforehand on the mixed images."""

    def __init__(self, maps):
        self.maps = maps

    def __call__(self, input_tensor, targets):
        return self.maps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/metrics")
    args = ap.parse_args()
    mf.setup_torch()
    # The imputer's noise is zeroed: see the docstring.
    road.torch.randn_like = torch.zeros_like
    model = mf.build(ARCH, CLASSES, SEED)
    # Sharper logits than the He-uniform head gives, so the scores move visibly.
    with torch.no_grad():
        model.fc.weight.mul_(FC_SCALE)
    u8 = mf.make_images(N, H, W, 4100)
    x = mf.normalize(u8)
    rng = np.random.default_rng(SEED)
    cams = make_cams(rng)
    with torch.no_grad():
        logits = model(x)
    # The top class of two images, the second class of the third.
    order = torch.argsort(logits, dim=1, descending=True)
    targets = np.array([order[0, 0], order[1, 0], order[2, 1]], dtype=np.int64)
    tg = [ClassifierOutputSoftmaxTarget(int(c)) for c in targets]
    t = {"input_u8": u8, "input": x.numpy(), "targets": targets, "cams": cams,
         "override.fc.weight": model.fc.weight.detach().numpy()}

    imputer = road.NoisyLinearImputer()
    for p in PERCENTILES:
        for kind, metric, flip in [("morf", road.ROADMostRelevantFirst, False),
                                   ("lerf", road.ROADLeastRelevantFirst, True)]:
            t[f"road.{kind}.{p}"] = metric(p)(x, cams, tg, model).astype(np.float32)
            masks = []
            for i in range(N):
                m = torch.from_numpy(cams[i])
                m = 1 - m if flip else m
                thr = np.percentile(m.numpy(), p)
                masks.append(np.uint8(m < thr))
            t[f"road.{kind}.mask.{p}"] = np.stack(masks)
        if p in (20, 80):
            t[f"road.morf.imputed.{p}"] = np.stack([
                RemoveMostRelevantFirst(p, imputer)(x[i], torch.from_numpy(cams[i])).numpy()
                for i in range(N)])
    t["road.morf_avg"] = road.ROADMostRelevantFirstAverage(PERCENTILES)(x, cams, tg, model)
    t["road.lerf_avg"] = road.ROADLeastRelevantFirstAverage(PERCENTILES)(x, cams, tg, model)
    t["road.combined"] = road.ROADCombined(PERCENTILES)(x, cams, tg, model)
    t["cam_mult"] = CamMultImageConfidenceChange()(x, cams, tg, model)

    dele, ins = [], []
    for i in range(N):
        m = DeletionInsertionMetric(GivenCams(model, cams[i:i + 1]),
                                    partial(torch.softmax, dim=-1), steps=20)
        m.update(x[i:i + 1], class_idx=[int(targets[i])])
        s = m.summary()
        dele.append(s["deletion_auc"])
        ins.append(s["insertion_auc"])
    t["tc.deletion"], t["tc.insertion"] = np.float32(dele), np.float32(ins)

    # Coherency's second map: pgc GradCAM on the input masked by each map.
    mixed = x * torch.from_numpy(cams).unsqueeze(1)
    gc = GradCAM(model=model, target_layers=[model.get_submodule(LAYER)])
    mixed_cams = gc(input_tensor=mixed, targets=tg)
    gc.activations_and_grads.release()
    t["arcc.mixed_cams"] = mixed_cams.astype(np.float32)
    arcc = ARCC(GivenBase(mixed_cams))
    t["arcc.complexity"] = arcc.complexity(cams)
    t["arcc.coherency"] = arcc.coherency(x, cams, tg, model, arcc.base_method)
    t["arcc.road"] = arcc.road(x, cams, tg, model)
    t["arcc"] = arcc(x, cams, tg, model)
    t = {k: (np.ascontiguousarray(v, dtype=np.float32) if v.dtype.kind == "f" else v)
         for k, v in t.items()}
    for k in ("road.combined", "cam_mult", "tc.deletion", "tc.insertion", "arcc"):
        print(f"{k}: {t[k]}")

    meta = {
        "arch": ARCH, "num_classes": str(CLASSES), "seed": str(SEED), "layer": LAYER,
        "height": str(H), "width": str(W), "batch": str(N),
        "percentiles": json.dumps(PERCENTILES), "arcc_percentiles": json.dumps([20, 40, 60, 80]),
        "tensors": json.dumps(detweights.tensor_list(model)),
        "tensor_qsums": json.dumps(mf.qsums(model, SEED)),
        "mean": json.dumps(mf.MEAN), "std": json.dumps(mf.STD),
        "imputer_noise": "0 (pgc's 0.01 * torch.randn_like zeroed)",
        "score": "softmax", "tc_steps": "20",
        "torch_version": torch.__version__, "torchvision_version": torchvision.__version__,
        "grad_cam_version": pkg_version("grad-cam"), "torchcam_version": pkg_version("torchcam")
        if _has_dist("torchcam") else "0.5 (source tree)",
        "numpy_version": np.__version__, "generator": "tools/make_metric_fixtures.py",
    }
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "metrics.safetensors")
    mf.save_safetensors(t, path, meta)
    print(f"wrote {path} ({os.path.getsize(path)} B)")


def _has_dist(name):
    try:
        pkg_version(name)
        return True
    except Exception:
        return False


if __name__ == "__main__":
    main()
