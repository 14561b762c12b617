"""Golden Grad-CAM fixtures from PyTorch + pytorch-grad-cam (reference for gradcam-wgpu).

Usage:  /opt/ref/bin/python tools/make_fixtures.py [--out tests/fixtures] [--only CASE ...]

Each case writes tests/fixtures/<case>.safetensors containing
  input_u8  U8  [N, H, W, 3]    RGB images at model size (deterministic, numpy seeded)
  input     F32 [N, 3, H, W]    (u8.float() / 255.0 - mean) / std, all float32 (torch)
  logits    F32 [N, K]          model(input), eval mode
  targets   I64 [N, T]          class targets
  cams      F32 [N, T, H, W]    pytorch_grad_cam.GradCAM(model, [layer])(input,
                                  [ClassifierOutputTarget(targets[n, t]) for n])
  overlays  U8  [N, T, H, W, 3] show_cam_on_image(u8.astype(f32) / f32(255), cams[n, t],
                                  use_rgb=True, image_weight=0.5)
  override.<name>  F32          replaces the generated weight <name> (optional)
and string metadata (see META_KEYS in write_case).

The model weights are NOT stored: they come from tools/detweights.py (seed in the
metadata); the Rust side regenerates them bit-exactly.  "tensors" lists every
state-dict tensor (excluding num_batches_tracked) as [name, shape] in state-dict
order, and "tensor_qsums" gives, aligned with it, the exact integer sum of the
generator's q values of each tensor (before any override) as a cheap check of a
reimplementation of the generator.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import detweights  # noqa: E402
from export import save_safetensors  # noqa: E402

import cv2  # noqa: E402
import pytorch_grad_cam  # noqa: E402
from importlib.metadata import version as pkg_version  # noqa: E402
from pytorch_grad_cam import GradCAM  # noqa: E402
from pytorch_grad_cam.utils.image import show_cam_on_image  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
MAX_TOTAL_BYTES = 10_000_000


def setup_torch():
    torch.set_num_threads(2)
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_default_dtype(torch.float32)


def make_images(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """Smooth-ish deterministic RGB images: gradient + gaussian blobs + mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0.0, 1.0, h), np.linspace(0.0, 1.0, w), indexing="ij")
    out = np.empty((n, h, w, 3), dtype=np.uint8)
    for k in range(n):
        img = np.empty((h, w, 3), dtype=np.float64)
        base = rng.uniform(40, 200, size=3)
        gx = rng.uniform(-80, 80, size=3)
        gy = rng.uniform(-80, 80, size=3)
        for c in range(3):
            img[:, :, c] = base[c] + gx[c] * (xx - 0.5) + gy[c] * (yy - 0.5)
        for _ in range(int(rng.integers(3, 6))):
            cy, cx = rng.uniform(0, 1, size=2)
            sy, sx = rng.uniform(0.06, 0.25, size=2)
            amp = rng.uniform(-120, 120, size=3)
            blob = np.exp(-(((yy - cy) / sy) ** 2 + ((xx - cx) / sx) ** 2) / 2)
            img += blob[:, :, None] * amp[None, None, :]
        img += rng.normal(0, 6, size=img.shape)
        out[k] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return out


def normalize(u8: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def build(arch: str, num_classes: int, seed: int, overrides=None):
    model = getattr(torchvision.models, arch)(num_classes=num_classes)
    detweights.load_into(model, seed, overrides)
    model.eval()
    return model


def qsums(model, seed):
    out = []
    for name, t in model.state_dict().items():
        if name.endswith("num_batches_tracked"):
            continue
        out.append(int(detweights.q_values(name, seed, t.numel()).sum()))
    return out


def last_relu_index(features: torch.nn.Sequential) -> int:
    return max(i for i, m in enumerate(features) if isinstance(m, torch.nn.ReLU))


def write_case(outdir, case, arch, num_classes, seed, layer, n, h, w, targets_rule,
               explicit_targets=None, override_fn=None, image_seed=None):
    base_model = build(arch, num_classes, seed)
    overrides = {}
    if override_fn is not None:
        overrides = override_fn(base_model)
        model = build(arch, num_classes, seed, overrides)
    else:
        model = base_model
    module = model.get_submodule(layer)

    if image_seed is None:
        image_seed = 1000 + sum(case.encode())
    u8 = make_images(n, h, w, image_seed)
    x = normalize(u8)

    # capture the target layer's activation shape for the metadata
    act_shape = {}
    def _grab(_m, _i, o):
        act_shape["s"] = list(o.shape)  # must return None (a value would replace the output)

    hnd = module.register_forward_hook(_grab)
    with torch.no_grad():
        logits = model(x).float()
    hnd.remove()

    if targets_rule.startswith("top"):
        k = int(targets_rule[3:])
        order = np.argsort(-logits.numpy(), axis=1, kind="stable")
        targets = order[:, :k].astype(np.int64)
    else:
        targets = np.asarray(explicit_targets, dtype=np.int64)
    assert targets.shape[0] == n
    T = targets.shape[1]

    cams = np.zeros((n, T, h, w), dtype=np.float32)
    overlays = np.zeros((n, T, h, w, 3), dtype=np.uint8)
    with GradCAM(model=model, target_layers=[module]) as cam:
        for t in range(T):
            tg = [ClassifierOutputTarget(int(targets[i, t])) for i in range(n)]
            g = cam(input_tensor=x, targets=tg)
            assert g.dtype == np.float32 and g.shape == (n, h, w), (g.dtype, g.shape)
            cams[:, t] = g
    for i in range(n):
        img = u8[i].astype(np.float32) / np.float32(255)
        for t in range(T):
            overlays[i, t] = show_cam_on_image(img, cams[i, t], use_rgb=True, image_weight=0.5)

    tensors = {
        "input_u8": np.ascontiguousarray(u8),
        "input": np.ascontiguousarray(x.numpy()),
        "logits": np.ascontiguousarray(logits.numpy()),
        "targets": targets,
        "cams": cams,
        "overlays": overlays,
    }
    for k, v in overrides.items():
        tensors["override." + k] = np.ascontiguousarray(v.detach().numpy().astype(np.float32))

    meta = {
        "arch": arch,
        "num_classes": str(num_classes),
        "seed": str(seed),
        "layer": layer,
        "layer_output_shape": json.dumps(act_shape["s"]),
        "height": str(h),
        "width": str(w),
        "batch": str(n),
        "tensors": json.dumps(detweights.tensor_list(model)),
        "tensor_qsums": json.dumps(qsums(model, seed)),
        "targets_rule": targets_rule,
        "overrides": json.dumps(sorted(overrides)),
        "image_seed": str(image_seed),
        "mean": json.dumps(MEAN),
        "std": json.dumps(STD),
        "image_weight": "0.5",
        "cam_method": "GradCAM",
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "grad_cam_version": pkg_version("grad-cam"),
        "opencv_version": cv2.__version__,
        "numpy_version": np.__version__,
        "generator": "tools/make_fixtures.py",
    }
    path = os.path.join(outdir, case + ".safetensors")
    save_safetensors(tensors, path, meta)
    size = os.path.getsize(path)
    print(f"{case:20s} size={size:8d} B  layer={layer} act={act_shape['s']}  "
          f"max|logit|={float(np.abs(logits.numpy()).max()):.4f}  "
          f"sum(cams)={float(cams.astype(np.float64).sum()):.6f}  targets={targets.tolist()}")
    return path, size, cams


def neg_fc_row2(model):
    w = model.state_dict()["fc.weight"].clone()
    w[2] = -w[2].abs()
    return {"fc.weight": w}


def cases():
    vgg = torchvision.models.vgg11_bn(num_classes=7)
    vgg_last = last_relu_index(vgg.features)
    assert isinstance(vgg.features[13], torch.nn.ReLU)
    vgg_mid = 13
    del vgg
    return [
        dict(case="resnet18_layer4", arch="resnet18", num_classes=10, seed=1, layer="layer4",
             n=3, h=64, w=80, targets_rule="top2"),
        dict(case="resnet18_layer3", arch="resnet18", num_classes=10, seed=1, layer="layer3",
             n=2, h=64, w=64, targets_rule="explicit", explicit_targets=[[3, 7], [3, 7]]),
        dict(case="resnet50_layer4", arch="resnet50", num_classes=5, seed=2, layer="layer4",
             n=2, h=64, w=64, targets_rule="top1"),
        dict(case="vgg11_bn_features", arch="vgg11_bn", num_classes=7, seed=3,
             layer=f"features.{vgg_last}", n=2, h=48, w=64, targets_rule="explicit",
             explicit_targets=[[1], [5]]),
        dict(case="vgg11_bn_mid", arch="vgg11_bn", num_classes=7, seed=3,
             layer=f"features.{vgg_mid}", n=1, h=64, w=64, targets_rule="top1"),
        dict(case="resnet18_negative", arch="resnet18", num_classes=10, seed=4, layer="layer4",
             n=1, h=64, w=64, targets_rule="explicit", explicit_targets=[[2]],
             override_fn=neg_fc_row2),
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "tests", "fixtures"))
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    setup_torch()
    os.makedirs(args.out, exist_ok=True)
    total = 0
    for spec in cases():
        if args.only and spec["case"] not in args.only:
            continue
        case = spec.pop("case")
        _, size, cams = write_case(args.out, case, **spec)
        total += size
        if case == "resnet18_negative":
            assert np.all(cams == 0), "negative case: pytorch-grad-cam map is not all zeros"
            print("  resnet18_negative: cam is all zeros (as required)")
    print(f"total fixture size {total} B")
    assert total < MAX_TOTAL_BYTES


if __name__ == "__main__":
    main()
