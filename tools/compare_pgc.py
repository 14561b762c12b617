"""Throughput comparison: pytorch-grad-cam 1.5.7 (CPU, torch) vs the gradcam-wgpu CLI.

Usage:
  /opt/ref/bin/python tools/compare_pgc.py --arch resnet18 --size 224 --batch 16 --images 32 \
      --methods gradcam,gradcam++,scorecam [--engine target/release/gradcam] [--check]

What is timed
  pgc     per method, in this process, everything after the model is built: read the PNGs
          (cv2), normalise, <Method>(model, [layer])(x, targets=None) per batch of --batch
          images (top-1 target, forward + backward / extra passes as the method needs),
          show_cam_on_image for every image and cv2.imwrite of the overlay.  Model
          construction and weight loading are excluded (printed separately); --warmup K
          first runs K untimed passes over the first batch (default 0: cold, like the CLI).
  engine  the wall clock of one subprocess
            ENGINE explain IMGDIR --model FILE --arch ARCH [--layer L] --method M
                   --batch B --size HxW --out TMP
          i.e. including process start, weight loading, GPU/driver set-up and shader
          compilation, decoding, overlays and PNG writing.
Both see the same model (torchvision ARCH, tools/detweights.py weights for --seed, 1000
classes by default, written as a torchvision state dict with safetensors) and the same
deterministic PNG images (tools/make_fixtures.make_images).  Slow methods (--slow-methods,
default scorecam,ablationcam) use only the first --slow-images images (default 1), for both.
A failing engine run (e.g. a method not implemented yet) prints n/a and the run continues.
--check also asks the engine for its raw maps (--save-cam) and prints max|engine - pgc| over
the top-1 maps (eigencam / eigengradcam: either SVD sign accepted per map).
"""

from __future__ import annotations

import argparse
import copy
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402

import cv2  # noqa: E402
import make_method_fixtures as mm  # noqa: E402
from pytorch_grad_cam import GradCAM, GuidedBackpropReLUModel  # noqa: E402
from pytorch_grad_cam.utils.image import deprocess_image, show_cam_on_image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

# fixture / CLI method name -> pgc class; guided-gradcam is GradCAM plus pgc's guided backprop
# model, combined as in pgc's cam.py example.
METHODS = {**mm.METHODS, "guided-gradcam": GradCAM}
EIGEN = ("eigencam", "eigengradcam")  # SVD sign is arbitrary: --check accepts either sign
REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def parse_size(s):
    if "x" in s:
        h, w = s.lower().split("x")
        return int(h), int(w)
    return int(s), int(s)


def default_layer(model, arch):
    if arch.startswith("vgg"):
        return "features." + str(mf.last_relu_index(model.features))
    return "layer4"


def read_batch(paths):
    rgb = [cv2.cvtColor(cv2.imread(p, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB) for p in paths]
    return np.stack(rgb)


def run_pgc(model, layer, method, paths, batch, outdir, inner_batch=None):
    """Returns (seconds, {stem: (class, map)})."""
    os.makedirs(outdir, exist_ok=True)
    maps = {}
    t0 = time.perf_counter()
    cls = METHODS[method]
    if method == "fullgrad":
        cam = cls(model=model, target_layers=[])
    elif method == "ablationcam" and inner_batch:
        cam = cls(model=model, target_layers=[model.get_submodule(layer)], batch_size=inner_batch)
    else:
        cam = cls(model=model, target_layers=[model.get_submodule(layer)])
        if method == "scorecam" and inner_batch:
            cam.batch_size = inner_batch
    # A deep copy: GuidedBackpropReLUModel swaps the model's ReLUs and restores them changed.
    guided = GuidedBackpropReLUModel(copy.deepcopy(model), device="cpu") if method == "guided-gradcam" else None
    with cam:
        for s in range(0, len(paths), batch):
            chunk = paths[s:s + batch]
            u8 = read_batch(chunk)
            x = mf.normalize(u8)
            g = cam(input_tensor=x, targets=None)
            top = np.argmax(cam.outputs.detach().numpy(), axis=-1)
            for i, p in enumerate(chunk):
                if guided is not None:
                    gb = guided(x[i:i + 1].clone(), target_category=int(top[i]))
                    ov = deprocess_image(cv2.merge([g[i], g[i], g[i]]) * gb)
                else:
                    ov = show_cam_on_image(u8[i].astype(np.float32) / np.float32(255), g[i],
                                           use_rgb=True)
                stem = os.path.splitext(os.path.basename(p))[0]
                cv2.imwrite(os.path.join(outdir, f"{stem}.{method}.{int(top[i])}.png"),
                            cv2.cvtColor(ov, cv2.COLOR_RGB2BGR))
                maps[stem] = (int(top[i]), g[i])
    return time.perf_counter() - t0, maps


def run_engine(engine, imgdir, model_path, arch, layer, method, batch, size, outdir, check,
               timeout):
    cmd = [engine, "explain", imgdir, "--model", model_path, "--arch", arch, "--method", method,
           "--batch", str(batch), "--size", f"{size[0]}x{size[1]}", "--out", outdir]
    if method != "fullgrad":
        cmd[5:5] = ["--layer", layer]
    if check:
        cmd.append("--save-cam")
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"
    except OSError as e:
        return None, f"cannot run: {e}"
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()
        return None, f"rc={r.returncode}: " + (tail[-1] if tail else "")
    return dt, None


def engine_diff(outdir, method, pgc_maps, flipped_maps=None):
    worst, found = 0.0, 0
    for stem, (cls, ref) in pgc_maps.items():
        cands = sorted(glob.glob(os.path.join(outdir, f"{stem}.*.{cls}.npy")))
        if not cands:
            continue
        m = np.load(cands[0])
        if m.shape != ref.shape:
            return f"shape {m.shape} != {ref.shape}"
        d = float(np.abs(m.astype(np.float32) - ref).max())
        if flipped_maps is not None:
            d = min(d, float(np.abs(m.astype(np.float32) - flipped_maps[stem][1]).max()))
        worst = max(worst, d)
        found += 1
    if not found:
        return "no maps found"
    return f"{worst:.2e} ({found}/{len(pgc_maps)} maps)"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet18")
    ap.add_argument("--size", default="224", help="H or HxW (default 224)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--methods", default="gradcam", help="comma list: " + ",".join(METHODS))
    ap.add_argument("--engine", default=None,
                    help="gradcam binary (default: target/release/gradcam if it exists)")
    ap.add_argument("--layer", default=None, help="default: layer4 (ResNet) / last ReLU of features (VGG)")
    ap.add_argument("--seed", type=int, default=0, help="detweights seed")
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--image-seed", type=int, default=2024)
    ap.add_argument("--slow-methods", default="scorecam,ablationcam")
    ap.add_argument("--slow-images", type=int, default=1)
    ap.add_argument("--inner-batch", type=int, default=None,
                    help="pgc ScoreCAM/AblationCAM batch_size (default: pgc's 16 / 32)")
    ap.add_argument("--warmup", type=int, default=0,
                    help="untimed pgc passes over the first batch before timing each method")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--timeout", type=int, default=1800, help="engine timeout per method, s")
    ap.add_argument("--check", action="store_true", help="also compare engine maps with pgc")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if m not in METHODS:
            ap.error(f"unknown method {m!r}; known: {', '.join(METHODS)}")
    slow = {m.strip() for m in args.slow_methods.split(",") if m.strip()}
    size = parse_size(args.size)
    engine = args.engine
    if engine is None:
        cand = os.path.join(REPO, "target", "release", "gradcam")
        engine = cand if os.path.exists(cand) else None
    if engine is not None:
        engine = os.path.abspath(engine)

    tmp = tempfile.mkdtemp(prefix="compare_pgc_")
    try:
        t0 = time.perf_counter()
        model = mf.build(args.arch, args.num_classes, args.seed)
        t_build = time.perf_counter() - t0
        layer = args.layer or default_layer(model, args.arch)
        model.get_submodule(layer)  # fail early on a bad name
        model_path = os.path.join(tmp, f"{args.arch}-seed{args.seed}.safetensors")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, model_path)

        u8 = mf.make_images(args.images, size[0], size[1], args.image_seed)
        dirs = {}
        for label, count in (("all", args.images), ("slow", min(args.slow_images, args.images))):
            d = os.path.join(tmp, "images_" + label)
            os.makedirs(d)
            for i in range(count):
                cv2.imwrite(os.path.join(d, f"img_{i:04d}.png"), cv2.cvtColor(u8[i], cv2.COLOR_RGB2BGR))
            dirs[label] = d
        print(f"# {args.arch} (detweights seed {args.seed}, {args.num_classes} classes), layer {layer}, "
              f"{size[0]}x{size[1]}, batch {args.batch}, torch threads {torch.get_num_threads()}; "
              f"model build+weights {t_build:.2f} s (not timed)")
        print(f"# engine: {engine or 'none'}")

        rows = []
        for m in methods:
            label = "slow" if m in slow else "all"
            imgdir = dirs[label]
            paths = sorted(glob.glob(os.path.join(imgdir, "*.png")))
            nimg = len(paths)
            for _ in range(args.warmup):
                run_pgc(model, layer, m, paths[:args.batch], args.batch,
                        os.path.join(tmp, "pgc_warmup"), args.inner_batch)
            t_pgc, maps = run_pgc(model, layer, m, paths, args.batch,
                                  os.path.join(tmp, "pgc_out_" + m), args.inner_batch)
            t_eng, err, diff = None, None, None
            if engine is None:
                err = "no engine binary"
            else:
                out = os.path.join(tmp, "engine_out_" + m)
                t_eng, err = run_engine(engine, imgdir, model_path, args.arch, layer, m, args.batch,
                                        size, out, args.check, args.timeout)
                if t_eng is not None and args.check:
                    flipped = None
                    if m in EIGEN:  # pgc with the opposite SVD sign (not timed)
                        with mm.svd_sign(-1):
                            _, flipped = run_pgc(model, layer, m, paths, args.batch,
                                                 os.path.join(tmp, "pgc_flip_" + m), args.inner_batch)
                    diff = engine_diff(out, m, maps, flipped)
            rows.append((m, nimg, t_pgc, t_eng, err, diff))
            line = f"#   {m}: pgc {t_pgc:.2f} s for {nimg} image(s)"
            line += f", engine {t_eng:.2f} s" if t_eng is not None else f", engine n/a ({err})"
            if diff:
                line += f", max|engine - pgc| {diff}"
            print(line, flush=True)

        print()
        hdr = f"{'method':20s} {'images':>6s} {'pgc img/s':>10s} {'engine img/s':>12s} {'engine/pgc':>10s}"
        print(hdr)
        print("-" * len(hdr))
        for m, nimg, t_pgc, t_eng, err, diff in rows:
            pgc_ips = nimg / t_pgc
            if t_eng is None:
                eng, ratio = "n/a", "n/a"
            else:
                eng_ips = nimg / t_eng
                eng, ratio = f"{eng_ips:.3f}", f"{eng_ips / pgc_ips:.2f}"
            print(f"{m:20s} {nimg:6d} {pgc_ips:10.3f} {eng:>12s} {ratio:>10s}")
    finally:
        if args.keep:
            print(f"# kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
