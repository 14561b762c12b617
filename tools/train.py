"""Train the bundled shapes classifier (ShapesResNet) on images from tools/shapes.py.

A small ResNet-style CNN, built only from ops the engine supports (Conv2d, BatchNorm2d, ReLU,
MaxPool2d, AdaptiveAvgPool2d, flatten, Linear and residual `+`), learns the ten shape
classes as a multi-label problem: BCEWithLogits over the classes, so a two-object image has
two positives.  Its last stage, `layer3` (96 channels at 8x8, stride 16), feeds a global
average pool and one Linear layer and is the Grad-CAM target layer.

Data (all generated, see tools/shapes.py; the seeds are disjoint):
  training  TRAIN_SEED    TRAIN_COUNT images, half of them two-object, generated once into
                          memory; each epoch sees them under a random flip / transpose (the
                          8 symmetries of the square) and a random permutation of the RGB
                          channels (every class is invariant to both)
  held-out  HELDOUT_SEED  HELDOUT_COUNT images, half two-object: the metrics in the JSON
  eval      2026          tests/data/shapes-eval (never trained on): the Grad-CAM pointing
                          game with pytorch-grad-cam, run after training when present
Input normalisation: (pixel / 255 - MEAN) / STD with MEAN = 0.5 and STD = 0.25 per channel.

Usage (CPU; torch uses 2 threads):
  python tools/train.py                         train, evaluate, write weights/shapes-resnet.pt,
                                                weights/shapes-resnet.json and export
                                                weights/shapes-resnet.safetensors
  python tools/train.py --evaluate CHECKPOINT   recompute the metrics JSON only
  python tools/train.py --export-only CHECKPOINT
                                                re-export the safetensors file only
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

TOOLS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TOOLS)
sys.path.insert(0, TOOLS)
import shapes  # noqa: E402

CLASSES = shapes.CLASSES
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
TARGET_LAYER = "layer3"
TRAIN_SEED, HELDOUT_SEED = 1, 2  # the eval split, tests/data/shapes-eval, is seed 2026
TRAIN_COUNT, HELDOUT_COUNT, TWO_OBJECT_FRACTION = 40_000, 1_000, 0.5
EPOCHS, BATCH, LR, WEIGHT_DECAY = 5, 32, 6e-3, 1e-2
TORCH_SEED = 0
POINTING_TOLERANCE = 9  # pixels
CHECKPOINT = os.path.join(ROOT, "weights", "shapes-resnet.pt")
EVAL_DIR = os.path.join(ROOT, "tests", "data", "shapes-eval")


# ---------------------------------------------------------------- model

class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: two 3x3 convs, BN, ReLU, identity or 1x1 shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ShapesResNet(nn.Module):
    """128x128 input -> stem (3x3 conv s2 + 3x3 max-pool s2) -> layer1 (1 block, 24@32x32)
    -> layer2 (2 blocks, 48@16x16) -> layer3 (2 blocks, 96@8x8) -> GAP -> Linear(96, 10).

    Module names follow torchvision's ResNet.  A deeper, narrower layout than one block per
    stage at 32/64/128 channels, for the same cost: on this data it leaves the initial
    chance-level plateau about twice as soon, and its larger receptive field covers the
    biggest (60 px) shapes.
    """

    def __init__(self, num_classes: int = len(CLASSES), widths=(24, 48, 96)):
        super().__init__()
        w1, w2, w3 = widths
        self.conv1 = nn.Conv2d(3, w1, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w1)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = BasicBlock(w1, w1, 1)
        self.layer2 = nn.Sequential(BasicBlock(w1, w2, 2), BasicBlock(w2, w2, 1))
        self.layer3 = nn.Sequential(BasicBlock(w2, w3, 2), BasicBlock(w3, w3, 1))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w3, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def model_cost(model: nn.Module) -> dict:
    """Parameters, f32 weight bytes and multiply-accumulates of one 128x128 forward pass."""
    macs = []

    def hook(m, _inp, out):
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1] * m.in_channels // m.groups
            macs.append(out.numel() * k)
        elif isinstance(m, nn.Linear):
            macs.append(out.numel() * m.in_features)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, shapes.IMAGE_SIZE, shapes.IMAGE_SIZE))
    model.train(was_training)
    for h in handles:
        h.remove()
    params = sum(p.numel() for p in model.parameters())
    buffers = sum(b.numel() for n, b in model.named_buffers() if "num_batches" not in n)
    return {"parameters": params, "weight_bytes_f32": 4 * (params + buffers),
            "forward_macs": int(sum(macs)), "forward_flops": 2 * int(sum(macs))}


# ---------------------------------------------------------------- data

def _generate_one(job):
    seed, index, n_objects = job
    pixels, objects = shapes.generate(seed, index, n_objects)
    return pixels, [o["class"] for o in objects]


def make_split(seed: int, count: int, two_object_fraction: float, workers: int = 2):
    """Images (N x 128 x 128 x 3 uint8) and multi-hot labels (N x 10 float32) of a split."""
    jobs = [(seed, i, n) for i, n in enumerate(shapes.layout(count, two_object_fraction))]
    images = np.empty((count, shapes.IMAGE_SIZE, shapes.IMAGE_SIZE, 3), np.uint8)
    labels = np.zeros((count, len(CLASSES)), np.float32)
    with multiprocessing.Pool(workers) as pool:
        for i, (pixels, classes) in enumerate(pool.imap(_generate_one, jobs, chunksize=64)):
            images[i] = pixels
            labels[i, classes] = 1
    return images, labels


def to_input(images_u8: torch.Tensor) -> torch.Tensor:
    """N x H x W x 3 uint8 -> normalised N x 3 x H x W float32."""
    x = images_u8.permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random symmetry of the square and RGB channel permutation per image (N x 3 x H x W)."""
    n = x.shape[0]
    flips = torch.rand(n, 3, generator=gen) < 0.5
    x = torch.where(flips[:, 0, None, None, None], x.flip(3), x)
    x = torch.where(flips[:, 1, None, None, None], x.flip(2), x)
    x = torch.where(flips[:, 2, None, None, None], x.transpose(2, 3), x)
    perm = torch.argsort(torch.rand(n, 3, generator=gen), dim=1)
    return x.gather(1, perm[:, :, None, None].expand_as(x)).contiguous()


# ---------------------------------------------------------------- metrics

@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, batch: int = 200) -> np.ndarray:
    """Logits (N x 10) of uint8 images."""
    model.eval()
    out = [model(to_input(torch.from_numpy(images[i:i + batch])))
           for i in range(0, len(images), batch)]
    return torch.cat(out).numpy()


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict:
    """Exact-set accuracy (sigmoid > 0.5), per-class AP and F1, top-1 on single-object images."""
    from sklearn.metrics import average_precision_score, f1_score

    pred = (logits > 0).astype(np.float32)  # sigmoid(logit) > 0.5
    single = labels.sum(1) == 1
    two = ~single
    top2 = np.argsort(-logits, axis=1)[:, :2]
    top2_ok = [set(top2[i]) == set(np.nonzero(labels[i])[0]) for i in np.nonzero(two)[0]]
    ap = [average_precision_score(labels[:, c], logits[:, c]) for c in range(len(CLASSES))]
    f1 = f1_score(labels, pred, average=None, zero_division=0)
    return {
        "images": int(len(labels)),
        "exact_set_accuracy": float((pred == labels).all(1).mean()),
        "exact_set_accuracy_single": float((pred[single] == labels[single]).all(1).mean()),
        "exact_set_accuracy_two": float((pred[two] == labels[two]).all(1).mean()),
        "top1_accuracy_single": float((logits[single].argmax(1) ==
                                       labels[single].argmax(1)).mean()),
        "top2_set_accuracy_two": float(np.mean(top2_ok)),
        "mean_ap": float(np.mean(ap)),
        "macro_f1": float(np.mean(f1)),
        "per_class_ap": {c: round(float(v), 4) for c, v in zip(CLASSES, ap)},
        "per_class_f1": {c: round(float(v), 4) for c, v in zip(CLASSES, f1)},
    }


def _box_distance(x: int, y: int, box) -> float:
    """Euclidean distance from pixel (x, y) to the pixels of box [x0, y0, x1, y1)."""
    dx = max(box[0] - x, 0, x - (box[2] - 1))
    dy = max(box[1] - y, 0, y - (box[3] - 1))
    return float(np.hypot(dx, dy))


def pointing_game(model: nn.Module, data_dir: str, batch: int = 50) -> dict:
    """Grad-CAM pointing game with pytorch-grad-cam on a tools/shapes.py dataset directory.

    For every object, the Grad-CAM map of its class at TARGET_LAYER (pgc's 128x128 map:
    ReLU, min-max normalised, bilinearly upsampled) "hits" when its argmax lies within
    POINTING_TOLERANCE pixels of the object's box.  On two-object images the map of class A
    "discriminates" when it hits A and its argmax is not inside B's box, and its mean inside
    A's box exceeds its mean inside B's box.
    """
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with open(os.path.join(data_dir, "boxes.json")) as f:
        doc = json.load(f)
    entries = doc["images"]
    images = np.stack([np.asarray(Image.open(os.path.join(data_dir, e["file"])).convert("RGB"))
                       for e in entries])
    model.eval()
    cam = GradCAM(model=model, target_layers=[getattr(model, TARGET_LAYER)])
    hits = [[] for _ in entries]  # per image, per object
    discriminates = []            # per map of a two-object image
    for start in range(0, len(entries), batch):
        x = to_input(torch.from_numpy(images[start:start + batch]))
        for slot in range(2):
            idx = [i for i in range(len(x)) if len(entries[start + i]["objects"]) > slot]
            if not idx:
                continue
            objects = [entries[start + i]["objects"] for i in idx]
            targets = [ClassifierOutputTarget(o[slot]["class"]) for o in objects]
            maps = cam(input_tensor=x[idx], targets=targets)
            for i, objs, m in zip(idx, objects, maps):
                own = objs[slot]["box"]
                y, xx = np.unravel_index(np.argmax(m), m.shape)
                hit = _box_distance(xx, y, own) <= POINTING_TOLERANCE
                hits[start + i].append(hit)
                if len(objs) == 2:
                    other = objs[1 - slot]["box"]
                    mean_in = lambda b: m[b[1]:b[3], b[0]:b[2]].mean()  # noqa: E731
                    discriminates.append(hit and _box_distance(xx, y, other) > 0
                                         and mean_in(own) > mean_in(other))
    single = [h[0] for h in hits if len(h) == 1]
    pairs = [h for h in hits if len(h) == 2]
    rate = lambda v: float(np.mean(v)) if len(v) else None  # noqa: E731
    return {
        "data": os.path.relpath(data_dir, ROOT),
        "seed": doc["seed"],
        "images": len(entries),
        "tolerance_px": POINTING_TOLERANCE,
        "target_layer": TARGET_LAYER,
        "hit_rate_objects": rate([v for h in hits for v in h]),
        "hit_rate_single": rate(single),
        "hit_rate_two_object_objects": rate([v for h in pairs for v in h]),
        "two_object_images_both_hit": rate([all(h) for h in pairs]),
        "two_object_maps_discriminative": rate(discriminates),
    }


# ---------------------------------------------------------------- train / export

def setup_torch():
    torch.set_num_threads(2)
    torch.manual_seed(TORCH_SEED)
    torch.use_deterministic_algorithms(True)


def train(model: nn.Module, images: np.ndarray, labels: np.ndarray, log) -> float:
    """AdamW + one-cycle schedule; returns training seconds."""
    gen = torch.Generator().manual_seed(TORCH_SEED)
    steps_per_epoch = len(images) // BATCH
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, epochs=EPOCHS,
                                                steps_per_epoch=steps_per_epoch, pct_start=0.15)
    images_t, labels_t = torch.from_numpy(images), torch.from_numpy(labels)
    start = time.time()
    for epoch in range(EPOCHS):
        model.train()
        order = torch.randperm(len(images), generator=gen)
        total, seen = 0.0, 0
        for step in range(steps_per_epoch):
            idx = order[step * BATCH:(step + 1) * BATCH]
            x = augment(to_input(images_t[idx]), gen)
            loss = F.binary_cross_entropy_with_logits(model(x), labels_t[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            seen += len(idx)
            if step % 200 == 0 or step == steps_per_epoch - 1:
                rate = (epoch * steps_per_epoch * BATCH + seen) / (time.time() - start)
                log(f"epoch {epoch + 1}/{EPOCHS} step {step + 1}/{steps_per_epoch} "
                    f"loss {total / seen:.4f} ({rate:.0f} img/s)")
    return time.time() - start


def export_checkpoint(model: nn.Module, path: str) -> dict:
    """Write the self-describing engine file (tools/export.py) for a trained model."""
    from export import export

    return export(model.eval(), path, input_size=(shapes.IMAGE_SIZE, shapes.IMAGE_SIZE),
                  mean=MEAN, std=STD, classes=CLASSES, default_layer=TARGET_LAYER,
                  name="shapes-resnet", output="sigmoid")


def load(checkpoint: str) -> nn.Module:
    model = ShapesResNet()
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return model.eval()


def evaluate(model: nn.Module, log) -> dict:
    """Held-out classification metrics and, when the eval split exists, the pointing game."""
    log(f"generating held-out split (seed {HELDOUT_SEED}, {HELDOUT_COUNT} images)")
    images, labels = make_split(HELDOUT_SEED, HELDOUT_COUNT, TWO_OBJECT_FRACTION)
    result = {"held_out": {"seed": HELDOUT_SEED, "two_object_fraction": TWO_OBJECT_FRACTION,
                           **classification_metrics(predict(model, images), labels)}}
    if os.path.exists(os.path.join(EVAL_DIR, "boxes.json")):
        log("pointing game on the eval split")
        result["pointing_game"] = pointing_game(model, EVAL_DIR)
    return result


def write_json(path: str, doc: dict):
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=CHECKPOINT, help="checkpoint path (state_dict)")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--evaluate", metavar="CHECKPOINT", help="recompute the metrics JSON")
    mode.add_argument("--export-only", metavar="CHECKPOINT", help="only write the .safetensors")
    args = ap.parse_args()
    setup_torch()
    log = lambda msg: print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)  # noqa: E731

    checkpoint = args.export_only or args.evaluate or args.out
    stem = os.path.splitext(checkpoint)[0]
    if args.export_only:
        export_checkpoint(load(checkpoint), stem + ".safetensors")
        log(f"wrote {stem}.safetensors")
        return
    if args.evaluate:
        model = load(checkpoint)
        doc = {}
        if os.path.exists(stem + ".json"):
            with open(stem + ".json") as f:
                doc = json.load(f)
        doc.update(evaluate(model, log))
    else:
        wall = time.time()
        model = ShapesResNet()
        log(f"model: {model_cost(model)}")
        log(f"generating training split (seed {TRAIN_SEED}, {TRAIN_COUNT} images)")
        images, labels = make_split(TRAIN_SEED, TRAIN_COUNT, TWO_OBJECT_FRACTION)
        gen_seconds = time.time() - wall
        train_seconds = train(model, images, labels, log)
        del images, labels
        os.makedirs(os.path.dirname(os.path.abspath(checkpoint)), exist_ok=True)
        torch.save(model.state_dict(), checkpoint)
        doc = {
            "model": "ShapesResNet (tools/train.py)", "classes": list(CLASSES),
            "mean": MEAN, "std": STD, "target_layer": TARGET_LAYER, **model_cost(model),
            "training": {"seed": TRAIN_SEED, "images": TRAIN_COUNT,
                         "two_object_fraction": TWO_OBJECT_FRACTION, "epochs": EPOCHS,
                         "batch": BATCH, "lr": LR, "weight_decay": WEIGHT_DECAY,
                         "torch_seed": TORCH_SEED, "threads": torch.get_num_threads(),
                         "data_seconds": round(gen_seconds), "train_seconds": round(train_seconds)},
        }
        doc.update(evaluate(model, log))
        doc["training"]["total_seconds"] = round(time.time() - wall)
    write_json(stem + ".json", doc)
    log(json.dumps({k: doc[k] for k in ("held_out", "pointing_game") if k in doc}, indent=1))
    if not args.evaluate:
        export_checkpoint(model, stem + ".safetensors")
        log(f"wrote {stem}.safetensors")


if __name__ == "__main__":
    main()
