"""Times the Python drop-in (gradcam_wgpu.compat) against pytorch-grad-cam on the same torch
model and input, in one run; also the native API (uint8 images with overlays read back: the
CLI's path minus PNG encoding) and, with --rss, the RSS over a loop of drop-in calls.

Usage (an interpreter with torch, torchvision, grad-cam and the gradcam_wgpu package):
  python tools/bench_python.py [--models resnet18,resnet50] [--batch 16] [--size 224]
      [--method GradCAM] [--iters 3] [--warmup 1] [--threads 2] [--rss 0] [--json OUT]

Per model (torchvision, seeded random weights, eval mode), layer4, targets=None (top 1):
  pgc      pytorch_grad_cam.<method>(model, [layer4])(input_tensor=x) on torch's device (CPU)
  drop-in  gradcam_wgpu.compat.<method> the same; its first call (the ONNX export, import and
           engine build) is reported as `setup` and not timed with the calls
  native   gradcam_wgpu.Explainer on the same export: uint8 [N, H, W, 3] in, maps, logits and
           overlays out
Times are the median of --iters calls after --warmup, in images per second.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings


def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def timed(fn, iters, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="resnet18,resnet50")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--method", default="GradCAM")
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rss", type=int, default=0, help="drop-in calls for the RSS loop (0: none)")
    ap.add_argument("--json")
    a = ap.parse_args()

    import numpy as np
    import torch
    import torchvision
    import pytorch_grad_cam as pgc

    import gradcam_wgpu as gw
    from gradcam_wgpu import compat

    torch.set_num_threads(a.threads)
    warnings.simplefilter("ignore")
    rows = []
    print(f"{platform.node()}: {os.cpu_count()} CPUs, torch {torch.__version__} "
          f"({a.threads} threads), batch {a.batch}, {a.size}x{a.size}, {a.method}")
    for arch in a.models.split(","):
        torch.manual_seed(0)
        model = getattr(torchvision.models, arch)(num_classes=1000).eval()
        x = torch.randn(a.batch, 3, a.size, a.size)
        layers = [model.layer4]
        row = {"model": arch, "batch": a.batch, "size": a.size, "method": a.method}

        with getattr(pgc, a.method)(model=model, target_layers=layers) as cam:
            want = cam(input_tensor=x, targets=None)
            row["pgc_s"] = timed(lambda: cam(input_tensor=x, targets=None), a.iters, a.warmup)

        with getattr(compat, a.method)(model=model, target_layers=layers) as cam:
            t = time.perf_counter()
            got = cam(input_tensor=x, targets=None)
            row["dropin_setup_s"] = time.perf_counter() - t
            row["max_abs_error"] = float(np.abs(got - want).max())
            row["dropin_s"] = timed(lambda: cam(input_tensor=x, targets=None), a.iters, a.warmup)
            if a.rss:
                for _ in range(10):
                    cam(input_tensor=x, targets=None)
                start = rss_mib()
                samples = []
                for i in range(a.rss):
                    cam(input_tensor=x, targets=None)
                    if i % max(1, a.rss // 10) == 0:
                        samples.append(round(rss_mib() - start, 1))
                row["rss_start_mib"] = round(start, 1)
                row["rss_growth_mib"] = round(rss_mib() - start, 1)
                row["rss_samples_mib"] = samples

        engine_model = compat._export(model, (3, a.size, a.size))
        images = np.random.default_rng(0).integers(0, 256, (a.batch, a.size, a.size, 3), np.uint8)
        method = getattr(compat, a.method)._method
        ex = gw.Explainer(engine_model, layers=["layer4"], method=method, batch=a.batch,
                          overlays=True)
        row["native_u8_overlays_s"] = timed(lambda: ex(images), a.iters, a.warmup)
        ex.close()

        for k in ("pgc", "dropin", "native_u8_overlays"):
            row[f"{k}_img_per_s"] = a.batch / row[f"{k}_s"]
        row["speedup_vs_pgc"] = row["pgc_s"] / row["dropin_s"]
        rows.append(row)
        print(f"{arch}: pgc {row['pgc_img_per_s']:.2f} img/s, drop-in "
              f"{row['dropin_img_per_s']:.2f} img/s ({row['speedup_vs_pgc']:.2f}x; setup "
              f"{row['dropin_setup_s']:.1f} s), native u8+overlays "
              f"{row['native_u8_overlays_img_per_s']:.2f} img/s; max |drop-in - pgc| "
              f"{row['max_abs_error']:.1e}"
              + (f"; RSS {row['rss_start_mib']:.0f} MiB, +{row['rss_growth_mib']} MiB over "
                 f"{a.rss} calls" if a.rss else ""), flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"python": sys.version, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
