"""Golden fixture for Ablation-CAM on token layers: pytorch-grad-cam 1.5.7's AblationCAM with
its AblationLayerVit (every token of the ablated channel, prefix tokens included, set to
min - 1e7, compounding within pgc's batch of 32 probes) on the vit, deit and swin cases of
tools/make_onnx_fixtures.py (the same models, weights, images, targets and reshape_transforms;
their ONNX files).

Usage:  /opt/ref/bin/python tools/make_token_ablation_fixture.py [--out tests/fixtures/onnx]
        (tools/requirements.txt). Written by make_fixtures.save_safetensors (byte-reproducible).

Writes token_ablation.safetensors:
  <case>.logits           F32 [N, K]         the rebuilt model's logits (equal to <case>.safetensors')
  <case>.cam.ablationcam  F32 [N, 2, H, W]   AblationCAM(model, [layer], reshape_transform,
                                             ablation_layer=AblationLayerVit()) per target slot
Metadata: cases (JSON list), versions, generator.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
from safetensors.numpy import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TQDM_DISABLE", "1")
import make_fixtures as mf  # noqa: E402
import make_method_fixtures as mmf  # noqa: E402
import make_onnx_fixtures as mof  # noqa: E402
from pytorch_grad_cam import AblationCAM  # noqa: E402
from pytorch_grad_cam.ablation_layer import AblationLayerVit  # noqa: E402

CASES = ["vit", "deit", "swin"]


def build(case):
    """write_tv_case's model and inputs for `case`, rebuilt in the same order."""
    spec = next(c for c in mof.TV_CASES if c["case"] == case)
    h, w = spec["h"], spec["w"]
    torch.manual_seed(spec["seed"])
    net = spec["build"]()
    image_seed = 1000 + sum(("onnx_" + case).encode())
    u8 = mf.make_images(mof.N, h, w, image_seed)
    x = mf.normalize(u8)
    calib = mf.normalize(mf.make_images(8, h, w, image_seed + 1))
    mof.randomize_bn(net, calib)
    mof.scale_head(net, calib)
    return spec, net.eval(), u8, x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "tests", "fixtures", "onnx"))
    args = ap.parse_args()
    mf.setup_torch()
    tensors = {}
    for case in CASES:
        ref = load_file(os.path.join(args.out, case + ".safetensors"))
        spec, net, u8, x = build(case)
        assert np.array_equal(u8, ref["input_u8"]) and np.array_equal(x.numpy(), ref["input"])
        with torch.no_grad():
            logits = net(x).float().numpy()
        assert np.array_equal(logits, ref["logits"]), f"rebuilt {case} differs"
        _, transform, _ = mof.RESHAPES[spec["reshape"]]
        module = net.get_submodule(spec["layer"])
        with AblationCAM(model=net, target_layers=[module], reshape_transform=transform,
                         ablation_layer=AblationLayerVit()) as cam:
            maps = mmf.run_cam(cam, x, ref["targets"])
        with torch.no_grad():
            assert np.array_equal(net(x).float().numpy(), logits), "AblationCAM changed the model"
        assert np.isfinite(maps).all() and maps.max() > 0, case
        tensors[case + ".logits"] = logits
        tensors[case + ".cam.ablationcam"] = maps
    meta = {
        "cases": json.dumps(CASES),
        "torch_version": torch.__version__,
        "grad_cam_version": mof.pkg_version("grad-cam"),
        "notes": "pgc AblationCAM with AblationLayerVit and the case's reshape_transform, "
                 "batch_size 32, ClassifierOutputTarget per target slot",
        "generator": "tools/make_token_ablation_fixture.py",
    }
    path = os.path.join(args.out, "token_ablation.safetensors")
    mf.save_safetensors({k: np.ascontiguousarray(v) for k, v in tensors.items()}, path, meta)
    for k, v in tensors.items():
        print(k, v.shape, float(v.min()), float(v.max()))
    print(path, os.path.getsize(path), "B")


if __name__ == "__main__":
    main()
