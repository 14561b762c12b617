"""Train a small Vision Transformer on the shapes benchmark and export it to ONNX.

The ViT counterpart of tools/train.py, for the README's transformer example: torchvision's
VisionTransformer (128x128 input, 8x8 tokens of 16x16 pixels + a class token, 4 encoder
layers, 4 heads, width 64, MLP 128) as a hybrid ViT whose tokens come from the first stages
of the trained shapes ResNet (see RESNET) and whose head reads the mean patch token (see
ShapesViT), learns the same ten shape classes the same way, reusing
train.py's data and metrics: the same generated splits (training seed 1, held-out seed 2),
the same augmentation (the 8 symmetries of the square, RGB channel permutation), the same
normalisation (MEAN 0.5, STD 0.25) and BCEWithLogits multi-label loss over the classes.
Differences: fewer training images (a ViT step costs more on CPU per image), AdamW with
linear warmup and cosine decay, gradient clipping, and an ONNX export instead of a
safetensors file.

Grad-CAM target: `encoder.layers.encoder_layer_3.ln_1`, the last block's first LayerNorm
([N, 65, 64] tokens; pytorch-grad-cam's ViT recipe drops the class token and folds the
64 patch tokens to 8x8), which `gradcam explain` picks by default (`--reshape auto`).

Usage (CPU; torch uses 1 thread, see THREADS):
  python tools/train_vit.py             train, evaluate on the held-out split, write
                                        CHECKPOINT (state_dict) and its metrics .json, export
                                        examples/onnx/shapes-vit.onnx (checked against ort)
  python tools/train_vit.py --export-only CHECKPOINT
                                        re-export the ONNX file from a checkpoint
  python tools/train_vit.py --compare CHECKPOINT [--engine target/release/gradcam]
                                        Grad-CAM of the ONNX file on examples/shapes by the
                                        CLI (--save-cam, default layer, --reshape auto) vs
                                        pytorch-grad-cam on the checkpoint at TARGET_LAYER
                                        with its ViT reshape_transform: max map difference
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.models.vision_transformer import VisionTransformer

TOOLS = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, TOOLS)
import train  # noqa: E402  (tools/train.py: data, augmentation, metrics)

ROOT = train.ROOT
VIT = dict(image_size=128, patch_size=16, num_layers=4, num_heads=4, hidden_dim=64,
           mlp_dim=128, num_classes=len(train.CLASSES))
# A hybrid ViT (Dosovitskiy et al. 2021, section 3.1): the tokens come from a CNN feature map,
# here the stem and first two stages of the trained shapes ResNet (weights/shapes-resnet.pt,
# 48 channels at 16x16, fine-tuned) and a new 3x3 stride-2 conv to the width (8x8 tokens).
# From scratch (16x16 patchify conv, or torchvision's conv stem; class-token or mean-token
# readout; batch 128 or 32) the loss stayed at the label-prior plateau (0.423) for two
# epochs of this CPU budget; with this stem it left it within 300 steps.
RESNET = os.path.join(ROOT, "weights", "shapes-resnet.pt")
TARGET_LAYER = "encoder.layers.encoder_layer_3.ln_1"
TRAIN_COUNT = 20_000
EPOCHS, BATCH, LR, WEIGHT_DECAY, WARMUP, CLIP = 3, 32, 1e-3, 0.05, 0.05, 1.0
# One thread, not train.py's two: on the shared 2-core machine a 2-thread step of this model
# (many small matmuls) ran 3.5x slower than a 1-thread one whenever other jobs took a core.
THREADS = 1
CHECKPOINT = os.path.join(ROOT, "target", "shapes-vit", "shapes-vit.pt")  # not committed
ONNX_OUT = os.path.join(ROOT, "examples", "onnx", "shapes-vit.onnx")
OPSET, ORT_REL_TOL = 17, 1e-4


class ShapesViT(VisionTransformer):
    """torchvision's ViT whose head reads the mean of the 64 patch tokens (global average
    pooling, as in "Better plain ViT baselines", Beyer et al. 2022) instead of the class
    token. The class token is kept, so the token layers are the usual [N, 1 + 8·8, C] that
    pytorch-grad-cam's ViT reshape_transform expects."""

    def forward(self, x):
        x = self._process_input(x)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.heads(self.encoder(x)[:, 1:].mean(1))


def build(resnet_init: bool = False) -> VisionTransformer:
    model = ShapesViT(**VIT)
    cnn = train.ShapesResNet()
    if resnet_init:
        cnn.load_state_dict(torch.load(RESNET, map_location="cpu", weights_only=True))
    width = VIT["hidden_dim"]
    model.conv_proj = torch.nn.Sequential(cnn.conv1, cnn.bn1, cnn.relu, cnn.maxpool, cnn.layer1,
                                          cnn.layer2, torch.nn.Conv2d(48, width, 3, 2, 1))
    return model


def cached_split(seed: int, count: int, folder: str):
    """train.make_split, kept as .npy next to the checkpoint for reruns (1 GB at 20k)."""
    stem = os.path.join(folder, f"split-{seed}-{count}")
    if os.path.exists(stem + ".labels.npy"):
        return np.load(stem + ".images.npy"), np.load(stem + ".labels.npy")
    images, labels = train.make_split(seed, count, train.TWO_OBJECT_FRACTION)
    os.makedirs(folder, exist_ok=True)
    np.save(stem + ".images.npy", images)
    np.save(stem + ".labels.npy", labels)  # last: its presence marks a complete cache
    return images, labels


def fit(model, images: np.ndarray, labels: np.ndarray, log) -> float:
    """AdamW, linear warmup then cosine decay to 0; returns training seconds."""
    gen = torch.Generator().manual_seed(train.TORCH_SEED)
    steps_per_epoch = len(images) // BATCH
    total = EPOCHS * steps_per_epoch
    warmup = max(1, int(WARMUP * total))
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup
        else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (total - warmup))))
    images_t, labels_t = torch.from_numpy(images), torch.from_numpy(labels)
    start = time.time()
    for epoch in range(EPOCHS):
        model.train()
        order = torch.randperm(len(images), generator=gen)
        loss_sum, seen = 0.0, 0
        for step in range(steps_per_epoch):
            idx = order[step * BATCH:(step + 1) * BATCH]
            x = train.augment(train.to_input(images_t[idx]), gen)
            loss = F.binary_cross_entropy_with_logits(model(x), labels_t[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            seen += len(idx)
            if step % 200 == 0 or step == steps_per_epoch - 1:
                rate = (epoch * steps_per_epoch * BATCH + seen) / (time.time() - start)
                log(f"epoch {epoch + 1}/{EPOCHS} step {step + 1}/{steps_per_epoch} "
                    f"loss {loss_sum / seen:.4f} lr {sched.get_last_lr()[0]:.2e} "
                    f"({rate:.0f} img/s)")
    return time.time() - start


def export_onnx(model, path: str, log) -> float:
    """TorchScript exporter, opset 17, dynamic batch; returns max rel diff of ort vs torch."""
    import onnxruntime as ort
    from make_onnx_fixtures import export_torchscript, rel_diff

    model.eval()
    images, _ = train.make_split(train.HELDOUT_SEED, 4, train.TWO_OBJECT_FRACTION)
    x = train.to_input(torch.from_numpy(images))
    export_torchscript(model, x[:1], path, OPSET, dynamic_batch=True)
    with torch.no_grad():
        want = model(x).numpy()
    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(
        None, {"input": x.numpy()})[0]
    diff = rel_diff(got, want)
    log(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes); "
        f"onnxruntime vs torch at batch {len(x)}: max rel diff {diff:.2e}")
    if not diff <= ORT_REL_TOL:
        raise SystemExit(f"onnxruntime differs from torch by {diff:.2e} > {ORT_REL_TOL}")
    return diff


def compare(model, onnx_path: str, engine: str, log) -> float:
    """Max |engine - pgc| over the top-1 Grad-CAM maps of the showcase images."""
    import glob
    import subprocess
    import tempfile

    from compare_pgc import engine_diff, read_batch
    from make_onnx_fixtures import vit_reshape_transform
    from pytorch_grad_cam import GradCAM

    paths = sorted(glob.glob(os.path.join(ROOT, "examples", "shapes", "*.png")))
    out = tempfile.mkdtemp(prefix="svit-")
    norm = lambda v: ",".join(str(c) for c in v)  # noqa: E731
    subprocess.run([engine, "explain", *paths, "--model", onnx_path, "--mean", norm(train.MEAN),
                    "--std", norm(train.STD), "--save-cam", "--out", out], check=True)
    x = train.to_input(torch.from_numpy(read_batch(paths)))
    with GradCAM(model=model.eval(), target_layers=[model.get_submodule(TARGET_LAYER)],
                 reshape_transform=vit_reshape_transform) as cam:
        maps = cam(input_tensor=x, targets=None)
        top = cam.outputs.detach().numpy().argmax(1)
    pgc = {os.path.splitext(os.path.basename(p))[0]: (int(c), m)
           for p, c, m in zip(paths, top, maps)}
    result = engine_diff(out, "gradcam", pgc)
    log(f"max |engine - pytorch-grad-cam| over the top-1 maps: {result} (engine output: {out})")
    return result


def load(checkpoint: str) -> VisionTransformer:
    model = build()
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return model.eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=CHECKPOINT, help="checkpoint path (state_dict)")
    ap.add_argument("--onnx", default=ONNX_OUT, help="ONNX output path")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--export-only", metavar="CHECKPOINT", help="only write the ONNX file")
    mode.add_argument("--compare", metavar="CHECKPOINT", help="engine vs pytorch-grad-cam maps")
    ap.add_argument("--engine", default=os.path.join(ROOT, "target", "release", "gradcam"))
    args = ap.parse_args()
    train.setup_torch()
    torch.set_num_threads(THREADS)
    log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)  # noqa: E731

    if args.export_only:
        export_onnx(load(args.export_only), args.onnx, log)
        return
    if args.compare:
        compare(load(args.compare), args.onnx, args.engine, log)
        return
    wall = time.time()
    model = build(resnet_init=True)
    params = sum(p.numel() for p in model.parameters())
    log(f"model: VisionTransformer({VIT}), {params} parameters")
    log(f"generating training split (seed {train.TRAIN_SEED}, {TRAIN_COUNT} images)")
    images, labels = cached_split(train.TRAIN_SEED, TRAIN_COUNT, os.path.dirname(args.out))
    data_seconds = time.time() - wall
    train_seconds = fit(model, images, labels, log)
    del images, labels
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    torch.save(model.state_dict(), args.out)
    log(f"held-out split (seed {train.HELDOUT_SEED}, {train.HELDOUT_COUNT} images)")
    images, labels = train.make_split(train.HELDOUT_SEED, train.HELDOUT_COUNT,
                                      train.TWO_OBJECT_FRACTION)
    doc = {
        "model": f"torchvision VisionTransformer {VIT} (tools/train_vit.py)",
        "classes": list(train.CLASSES), "mean": train.MEAN, "std": train.STD,
        "target_layer": TARGET_LAYER, "parameters": params,
        "training": {"seed": train.TRAIN_SEED, "images": TRAIN_COUNT,
                     "two_object_fraction": train.TWO_OBJECT_FRACTION, "epochs": EPOCHS,
                     "batch": BATCH, "lr": LR, "weight_decay": WEIGHT_DECAY, "warmup": WARMUP,
                     "clip_grad_norm": CLIP, "stem": "shapes-resnet conv1..layer2 + conv 3x3 s2",
                     "torch_seed": train.TORCH_SEED, "threads": torch.get_num_threads(),
                     "data_seconds": round(data_seconds), "train_seconds": round(train_seconds)},
        "held_out": {"seed": train.HELDOUT_SEED, "two_object_fraction": train.TWO_OBJECT_FRACTION,
                     **train.classification_metrics(train.predict(model, images), labels)},
    }
    doc["ort_max_rel_diff"] = export_onnx(model, args.onnx, log)
    train.write_json(os.path.splitext(args.out)[0] + ".json", doc)
    log(json.dumps(doc["held_out"], indent=1))


if __name__ == "__main__":
    main()
