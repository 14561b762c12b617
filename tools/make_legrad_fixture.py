"""Golden fixture for --method legrad: torchcam 0.5's LeGrad on the vit case of
tools/make_onnx_fixtures.py (the same model, weights, images and targets; its ONNX file).

Usage:  /opt/ref/bin/python tools/make_legrad_fixture.py [--out tests/fixtures/onnx]
        (tools/requirements.txt, torchcam included). Written by make_fixtures.save_safetensors
        (sorted header, byte-reproducible).

Writes vit_legrad.safetensors:
  logits        F32 [N, K]           the model's logits (equal to vit.safetensors' "logits")
  cam.legrad    F32 [N, 2, H, W]     LeGrad on blocks encoder.layers.encoder_layer_0 and _1
  cam.legrad_last F32 [N, 2, H, W]   LeGrad on encoder.layers.encoder_layer_1 alone
Maps per target slot j (classes vit.safetensors' targets[:, j]), normalised by torchcam
(_normalize: (x - min) / (max - min + 1e-8)), then upsampled to H x W with
F.interpolate(bilinear, align_corners=False); not renormalised.
Metadata: legrad_layers, legrad_last_layers (JSON lists), prefix_tokens, grid, model, plus the
vit case's height, width, mean, std and versions.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402
import make_onnx_fixtures as mof  # noqa: E402
from torchcam.methods import LeGrad  # noqa: E402

CASE = next(c for c in mof.TV_CASES if c["case"] == "vit")
LAYERS = {"legrad": ["encoder.layers.encoder_layer_0", "encoder.layers.encoder_layer_1"],
          "legrad_last": ["encoder.layers.encoder_layer_1"]}


def build():
    """write_tv_case's model and inputs for the vit case, rebuilt in the same order."""
    h, w, seed = CASE["h"], CASE["w"], CASE["seed"]
    torch.manual_seed(seed)
    net = CASE["build"]()
    image_seed = 1000 + sum(("onnx_" + CASE["case"]).encode())
    u8 = mf.make_images(mof.N, h, w, image_seed)
    x = mf.normalize(u8)
    calib = mf.normalize(mf.make_images(8, h, w, image_seed + 1))
    mof.randomize_bn(net, calib)
    mof.scale_head(net, calib)
    return net.eval(), u8, x


def legrad(net, x, layers, targets, size):
    out = []
    for j in range(targets.shape[1]):
        with LeGrad(net, layers) as cam:
            scores = net(x)
            m = cam([int(c) for c in targets[:, j]], scores)[0]  # [N, h, w], normalised
        out.append(F.interpolate(m[:, None], size=size, mode="bilinear",
                                 align_corners=False)[:, 0].detach())
    return torch.stack(out, 1).numpy().astype(np.float32)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "tests", "fixtures", "onnx"))
    args = ap.parse_args()
    mf.setup_torch()
    ref = load_file(os.path.join(args.out, "vit.safetensors"))
    net, u8, x = build()
    assert np.array_equal(u8, ref["input_u8"]) and np.array_equal(x.numpy(), ref["input"])
    with torch.no_grad():
        logits = net(x).float().numpy()
    assert np.array_equal(logits, ref["logits"]), "rebuilt vit differs from vit.safetensors"
    size = (CASE["h"], CASE["w"])
    tensors = {"logits": logits}
    for key, layers in LAYERS.items():
        tensors["cam." + key] = legrad(net, x, layers, ref["targets"], size)
    with torch.no_grad():
        assert np.array_equal(net(x).float().numpy(), logits), "LeGrad changed the logits"
    from safetensors import safe_open
    with safe_open(os.path.join(args.out, "vit.safetensors"), "np") as f:
        vit_meta = f.metadata()
    meta = {k: vit_meta[k] for k in ("model", "height", "width", "mean", "std", "batch", "seed",
                                     "image_seed", "targets", "torch_version",
                                     "torchvision_version")
            if k in vit_meta}
    meta.update({
        "legrad_layers": json.dumps(LAYERS["legrad"]),
        "legrad_last_layers": json.dumps(LAYERS["legrad_last"]),
        "prefix_tokens": "1",
        "grid": json.dumps([8, 8]),
        "torchcam": __import__("torchcam").__version__,
        "notes": "torchcam LeGrad (prefix_tokens 1, square grid) per target slot; maps "
                 "normalised by torchcam then bilinear (align_corners=False) to H x W.",
        "generator": "tools/make_legrad_fixture.py",
    })
    path = os.path.join(args.out, "vit_legrad.safetensors")
    mf.save_safetensors({k: np.ascontiguousarray(v) for k, v in tensors.items()}, path, meta)
    for k, v in tensors.items():
        print(k, v.shape, float(v.min()), float(v.max()))
    print(path, os.path.getsize(path), "B")


if __name__ == "__main__":
    main()
