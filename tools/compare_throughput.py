"""Throughput in one invocation: pytorch-grad-cam (pgc, tools/requirements.txt) and optionally
Captum's LayerGradCam vs `gradcam bench`.

Usage:
  /opt/ref/bin/python tools/compare_throughput.py [--models bundled,resnet18,resnet50,vgg16,
      mobilenet_v3_large,efficientnet_b0,convnext_tiny,efficientnet_lite0,vit_b_16,swin_t]
      [--engine-format onnx|ir]
      [--methods gradcam,scorecam] [--batches 16] [--size 224] [--images 32] [--slow-images 1]
      [--threads 2] [--device cpu|cuda] [--iters 3] [--warmup 1] [--rounds 1] [--json OUT.json]
      [--peers pgc[,captum]] [--export-dir DIR]

Same model, batch and images on both sides:
  models   torchvision ARCH with tools/detweights.py weights (--seed), written as a state dict
           with safetensors and passed to the engine as --model FILE --arch ARCH (as
           tools/compare_pgc.py does); `shapes` is the project's shapes model
           (weights/shapes-resnet.pt for pgc, the engine's built-in copy, `--model shapes`),
           run at --size too (it is fully convolutional; its own size is 128);
           `bundled` (an alias, the row says efficientnet_lite0) or
           `efficientnet_lite0` is the engine's default ImageNet model (the PyTorch port with
           its published weights for pgc, tools/make_bundled_model.py; the engine's built-in
           copy, `--model efficientnet-lite0`), explained at its default layer, the head's
           ReLU6 (hooked on make_bundled_model.HeadHooked for pgc, see there).
           mobilenet_v3_large, efficientnet_b0 and convnext_tiny (detweights too) are not
           architectures the engine knows by tensor names: the script exports each on the fly
           to a temporary file, by default an ONNX file (torch.onnx.export, dynamo=False,
           opset 17, dynamic batch) run with --model X.onnx; --engine-format ir writes a
           self-describing file with tools/export.py instead (--export-dir keeps the files).
           An export that fails is the row's engine error. The transformers vit_b_16 (224
           only: its position embedding fixes the size) and swin_t are exported the same way;
           on top of detweights they get torchvision's LayerNorm init (weight 1, bias 0) and
           a head drawn from N(0, 0.02) (torch generator seeded by --seed), so the top-1 class
           depends on the image (build_exported). Captum has no reshape_transform: their
           captum rows are n/a.
  images   tools/make_fixtures.make_images, written as PNGs that the engine reads with
           `--images DIR` (decoded once, before timing) and pgc keeps decoded in memory.
  layer    ResNets layer4 (shapes: layer3; efficientnet_lite0: the head's ReLU6), VGG the
           last ReLU of `features`, the exported CNNs features[-1] (the same module path is
           passed to the engine's --layer). Transformers as pgc's tutorials: vit_b_16
           encoder.layers.encoder_layer_11.ln_1 (blocks[-1].norm1; pgc reshape_transform
           tensor[:, 1:, :].reshape(N, 14, 14, C).transpose(2, 3).transpose(1, 2), the class
           token dropped), swin_t features.7.1.norm1 (features[-1][-1].norm1; permute(0, 3, 1,
           2)); the engine folds the same tokens with its default --reshape auto.

What is timed, per (model, method, batch), after --warmup untimed batches, --iters times:
  pgc     in memory: normalise, Method(model, [layer])(x, targets=None) (top-1 target),
          show_cam_on_image and cv2.imencode('.png') for every image. torch threads --threads.
  captum  (--peers pgc,captum; Grad-CAM only, captum 0.9.0) the same images and batches:
          normalise, LayerGradCam(top-1 logit, layer).attribute(x, relu_attributions=True)
          (one forward; autograd asked for the layer's gradient only, as the engine does),
          LayerAttribution.interpolate (bilinear) and min-max on the device, then pgc's
          show_cam_on_image and cv2.imencode('.png') for every image.
  engine  `gradcam bench --json` end to end: upload, preprocess, forward/backward/CAM,
          overlays read back, PNG encoding in memory (its GPU-only figure is reported too).
Slow methods (--slow-methods, default scorecam,ablationcam) use --slow-images images (default 1)
and that many per batch, on both sides. A failing run prints n/a and the others go on.
--rounds N alternates the two sides N times per row (each round its own warm-up and passes)
and reports the medians, with the ratio as the median of the rounds' ratios: on a machine
whose speed drifts (a shared VM), a round's two sides run minutes apart at most.
With --json the file is rewritten after every row, so a run cut short keeps what it measured.
The header and the JSON's `host` record the machine (CPU model, cores, caches, the adapter
and its driver, e.g. Mesa's version): a figure without its host misleads.
Exit status: 0 when every row has its ratios, 1 when one does not, 2 on a usage error, 77 when
--device cuda is asked for and torch sees no CUDA device (nothing is measured).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cv2  # noqa: E402
import make_fixtures as mf  # noqa: E402
from compare_pgc import METHODS, REPO, default_layer, parse_size  # noqa: E402
from pytorch_grad_cam.utils.image import show_cam_on_image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

MODELS = ("bundled", "shapes", "resnet18", "resnet50", "vgg16", "mobilenet_v3_large",
          "efficientnet_b0", "convnext_tiny", "efficientnet_lite0", "vit_b_16", "swin_t")
# Run by the engine from a file exported on the fly (it has no state-dict layout for them).
EXPORTED = ("mobilenet_v3_large", "efficientnet_b0", "convnext_tiny", "vit_b_16", "swin_t")


def vit_reshape(tensor, height=14, width=14):
    """pgc's ViT tutorial transform (usage_examples/vit_example.py): drop the class token, fold
    the 14 x 14 patch tokens of vit_b_16 at 224 into NCHW."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def swin_reshape(tensor):
    """torchvision's Swin keeps [N, H, W, C]: NCHW for pgc."""
    return tensor.permute(0, 3, 1, 2)


# Transformers: (target layer, pgc's reshape_transform); the engine folds the same tokens with
# its default --reshape auto.
TOKEN_MODELS = {
    "vit_b_16": ("encoder.layers.encoder_layer_11.ln_1", vit_reshape),  # blocks[-1].norm1
    "swin_t": ("features.7.1.norm1", swin_reshape),  # features[-1][-1].norm1
}
ENGINE_FORMATS = ("onnx", "ir")
# --models' default stays the state-dict models (tools/gpu-check.sh's compare step runs it).
DEFAULT_MODELS = ("bundled", "resnet18", "resnet50", "vgg16")
PEERS = ("pgc", "captum")
# The engine/peer ratio's key in the rows; pgc's keeps its original name.
RATIO = {"pgc": "ratio", "captum": "captum_ratio"}


def load_bundled():
    import train  # tools/train.py: the bundled model's definition and preprocessing

    model = train.ShapesResNet()
    model.load_state_dict(torch.load(train.CHECKPOINT, map_location="cpu", weights_only=True))
    model.eval()
    return model, train.TARGET_LAYER, train.MEAN, train.STD


def load_efficientnet_lite0():
    """The port wrapped so pgc hooks the head's ReLU6 only; the engine's name for that layer."""
    import make_bundled_model as mbm

    model = mbm.HeadHooked(mbm.load_port()).eval()
    return model, "head_act", mbm.DEFAULT_LAYER, mbm.MEAN, mbm.STD


def build_exported(name, num_classes, seed):
    """tools/detweights.py weights (make_fixtures.build); for the transformers, also torchvision's
    own LayerNorm init (weight 1, bias 0: detweights' +-0.06 gains mute every residual branch,
    so ViT's class token, and its top-1, hardly depend on the image) and a head drawn from
    N(0, 0.02) with torch's generator seeded by `seed`. Swin's integer relative_position_index
    buffers keep their values (detweights would write floats into them)."""
    if name not in TOKEN_MODELS:
        return mf.build(name, num_classes, seed)
    fresh = getattr(torchvision.models, name)(num_classes=num_classes)
    keep = {k: v for k, v in fresh.state_dict().items()
            if not v.is_floating_point() and not k.endswith("num_batches_tracked")}
    model = mf.build(name, num_classes, seed, keep)
    gen = torch.Generator().manual_seed(seed)
    head = model.heads.head if name == "vit_b_16" else model.head
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.LayerNorm):
                mod.weight.fill_(1.0)
                mod.bias.zero_()
        head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.02)
        head.bias.zero_()
    return model


def normalize(u8, mean, std):
    x = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255.0
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous()


def overlay_pngs(u8, maps):
    """pgc's show_cam_on_image and a PNG encoding for every image; returns the bytes written."""
    written = 0
    for i in range(len(u8)):
        ov = show_cam_on_image(u8[i].astype(np.float32) / np.float32(255), maps[i], use_rgb=True)
        ok, png = cv2.imencode(".png", cv2.cvtColor(ov, cv2.COLOR_RGB2BGR))
        assert ok
        written += len(png)
    return written


def pgc_batch(cam, u8, mean, std):
    """One batch as an explain tool would run it; returns the PNG bytes written."""
    x = normalize(u8, mean, std)
    return overlay_pngs(u8, cam(input_tensor=x, targets=None))


def captum_batch(cam, u8, mean, std, device):
    """One batch through Captum's LayerGradCam, post-processed as pgc does; returns PNG bytes."""
    from captum.attr import LayerAttribution

    x = normalize(u8, mean, std).to(device)
    attr = cam.attribute(x, target=0, relu_attributions=True)  # [N, 1, h, w]
    up = LayerAttribution.interpolate(attr, tuple(x.shape[2:]), interpolate_mode="bilinear")
    flat = up.flatten(1)
    flat = flat - flat.min(dim=1, keepdim=True).values
    maps = (flat / (1e-7 + flat.max(dim=1, keepdim=True).values)).view(len(u8), *x.shape[2:])
    return overlay_pngs(u8, maps.detach().cpu().numpy())


def time_passes(one_batch, u8, batch, iters, warmup, device):
    """Seconds per image over `iters` passes over `u8` in batches of `batch`, after `warmup`
    untimed batches."""
    for _ in range(warmup):
        one_batch(u8[:batch])
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        for s in range(0, len(u8), batch):
            one_batch(u8[s:s + batch])
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t0) / (iters * len(u8))


def time_captum(model, layer, u8, batch, mean, std, iters, warmup, device):
    """time_passes for Captum's Grad-CAM; the target is each image's top-1 class."""
    if layer in (t[0] for t in TOKEN_MODELS.values()):
        raise NotImplementedError("LayerGradCam has no reshape_transform for token layers")
    from captum.attr import LayerGradCam

    def top1(x):  # the top-1 logit as the only output: target 0, one forward per batch
        return model(x).max(dim=1, keepdim=True).values

    cam = LayerGradCam(top1, model.get_submodule(layer))
    return time_passes(lambda b: captum_batch(cam, b, mean, std, device), u8, batch, iters, warmup,
                       device)


def time_pgc(model, layer, method, u8, batch, mean, std, iters, warmup, device,
             reshape_transform=None):
    """time_passes for pgc's `method`."""
    cls = METHODS[method]
    cam = cls(model=model, target_layers=[] if method == "fullgrad" else [model.get_submodule(layer)],
              reshape_transform=reshape_transform)
    with cam:
        return time_passes(lambda b: pgc_batch(cam, b, mean, std), u8, batch, iters, warmup, device)


def export_for_engine(model, name, layer, fmt, size, num_classes, outdir):
    """Writes `model` (on the CPU, eval) as a file the engine loads; returns its path."""
    x = torch.zeros(1, 3, *size)
    if fmt == "onnx":
        path = os.path.join(outdir, f"{name}.onnx")
        # Grad on for the transformers: under no_grad, nn.MultiheadAttention takes its fused
        # fast path (aten::_native_multi_head_attention), which the exporter cannot write.
        grad = contextlib.nullcontext() if name in TOKEN_MODELS else torch.no_grad()
        with grad, warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # dynamo=False is on purpose
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # torchvision's size asserts
            torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17,
                              input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    else:
        import export  # tools/export.py

        path = os.path.join(outdir, f"{name}.safetensors")
        export.export(model, path, input_size=size, mean=mf.MEAN, std=mf.STD,
                      classes=[str(i) for i in range(num_classes)], default_layer=layer,
                      name=name)
    return path


def run_engine(engine, model_args, layer, method, batch, size, imgdir, iters, warmup, timeout,
               extra=()):
    cmd = [engine, "bench", "--json", "--no-profile", *model_args, *extra, "--method", method,
           "--batch", str(batch), "--size", f"{size[0]}x{size[1]}", "--images", imgdir,
           "--iters", str(iters), "--warmup", str(warmup)]
    if method != "fullgrad":
        cmd += ["--layer", layer]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s"
    except OSError as e:
        return None, f"cannot run: {e}"
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()
        return None, f"rc={r.returncode}: " + (tail[-1] if tail else "")
    return json.loads(r.stdout), None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS),
                    help="comma list of " + ", ".join(MODELS) + " (default: "
                    + ",".join(DEFAULT_MODELS) + ")")
    ap.add_argument("--methods", default="gradcam,scorecam", help="comma list: " + ",".join(METHODS))
    ap.add_argument("--batches", default="16", help="comma list of batch sizes")
    ap.add_argument("--size", default="224", help="H or HxW (default 224)")
    ap.add_argument("--images", type=int, default=None,
                    help="images per timed pass (default: the largest batch)")
    ap.add_argument("--slow-methods", default="scorecam,ablationcam")
    ap.add_argument("--slow-images", type=int, default=1, help="images (and batch) for slow methods")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="pgc's torch device")
    ap.add_argument("--iters", type=int, default=3, help="timed passes")
    ap.add_argument("--warmup", type=int, default=1, help="untimed batches first")
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternate pgc and engine this many times per row; report medians")
    ap.add_argument("--engine", default=None, help="gradcam binary (default target/release/gradcam)")
    ap.add_argument("--seed", type=int, default=0, help="detweights seed")
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--image-seed", type=int, default=2024)
    ap.add_argument("--timeout", type=int, default=1800, help="engine timeout per run, s")
    ap.add_argument("--json", default=None, help="write the rows here")
    ap.add_argument("--engine-format", default="onnx", choices=ENGINE_FORMATS,
                    help="file the engine runs the exported models from (" + ", ".join(EXPORTED)
                    + "): onnx (torch.onnx.export) or ir (tools/export.py)")
    ap.add_argument("--export-dir", default=None,
                    help="write the exported models here and keep them (e.g. for a profiling "
                    "`gradcam bench` run); default: a temporary folder")
    ap.add_argument("--engine-args", default="",
                    help="extra `gradcam bench` flags, space-separated (e.g. --winograd)")
    ap.add_argument("--peers", default="pgc",
                    help="comma list of " + ", ".join(PEERS) + " (captum: Grad-CAM rows only)")
    args = ap.parse_args()

    # `bundled` is the engine's default model.
    models = [{"bundled": "efficientnet_lite0"}.get(m.strip(), m.strip())
              for m in args.models.split(",") if m.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    for m in models:
        if m not in MODELS:
            ap.error(f"unknown model {m!r}; known: {', '.join(MODELS)}")
    for m in methods:
        if m not in METHODS:
            ap.error(f"unknown method {m!r}; known: {', '.join(METHODS)}")
    if not batches or min(batches) < 1:
        ap.error("--batches: positive integers")
    if args.rounds < 1:
        ap.error("--rounds: a positive integer")
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    if not peers or any(p not in PEERS for p in peers):
        ap.error(f"--peers: a comma list of {', '.join(PEERS)}")
    if "captum" in peers:
        try:
            import captum.attr  # noqa: F401
        except ImportError as e:
            ap.error(f"--peers captum: {e} (pip install captum==0.9.0)")
    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"compare_throughput: --device cuda: torch {torch.__version__} sees no CUDA device; "
              "nothing measured", file=sys.stderr)
        return 77
    slow = {m.strip() for m in args.slow_methods.split(",") if m.strip()}
    size = parse_size(args.size)
    torch.set_num_threads(args.threads)
    engine = os.path.abspath(args.engine or os.path.join(REPO, "target", "release", "gradcam"))
    n_images = args.images or max(batches)

    tmp = tempfile.mkdtemp(prefix="compare_throughput_")
    if args.export_dir:
        os.makedirs(args.export_dir, exist_ok=True)
    rows = []
    try:
        u8_all = mf.make_images(max(n_images, args.slow_images), size[0], size[1], args.image_seed)
        dirs = {}
        for label, count in (("all", n_images), ("slow", args.slow_images)):
            d = os.path.join(tmp, "images_" + label)
            os.makedirs(d)
            for i in range(count):
                cv2.imwrite(os.path.join(d, f"img_{i:04d}.png"), cv2.cvtColor(u8_all[i], cv2.COLOR_RGB2BGR))
            dirs[label] = d
        host = host_info(engine)
        print(f"# {size[0]}x{size[1]}, torch {torch.__version__} ({args.device}, {torch.get_num_threads()} "
              f"threads); host {host['cpu']}, {host['cores']} cores, L2 {host.get('l2', '?')}, "
              f"L3 {host.get('l3', '?')}; adapter {host.get('adapter', '?')} "
              f"({host.get('driver', '?')}); engine {engine}", flush=True)
        for name in models:
            export_error = None
            engine_layer = None  # the engine's name for `layer` where they differ
            reshape = None  # pgc's reshape_transform (token layers)
            if name == "shapes":
                model, layer, mean, std = load_bundled()
                model_args = ["--model", "shapes"]
            elif name == "efficientnet_lite0":
                model, layer, engine_layer, mean, std = load_efficientnet_lite0()
                model_args = ["--model", "efficientnet-lite0"]
            elif name in EXPORTED:
                model = build_exported(name, args.num_classes, args.seed)
                if name in TOKEN_MODELS:
                    layer, reshape = TOKEN_MODELS[name]
                else:
                    layer = f"features.{len(model.features) - 1}"  # pgc's features[-1]
                mean, std = mf.MEAN, mf.STD
                model_args = []
                try:
                    path = export_for_engine(model, name, layer, args.engine_format, size,
                                             args.num_classes, args.export_dir or tmp)
                    model_args = ["--model", path]
                except Exception as e:  # the pgc side still runs; the row says why
                    export_error = (f"{args.engine_format} export failed: "
                                    f"{type(e).__name__}: {e}")
            else:
                model = mf.build(name, args.num_classes, args.seed)
                layer = default_layer(model, name)
                mean, std = mf.MEAN, mf.STD
                path = os.path.join(tmp, f"{name}.safetensors")
                save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
                model_args = ["--model", path, "--arch", name]
            model = model.to(args.device)
            for method in methods:
                is_slow = method in slow
                for batch in batches:
                    count = args.slow_images if is_slow else n_images
                    b = min(batch, count)
                    if is_slow and rows and any(r["model"] == name and r["method"] == method
                                                and r["batch"] == b for r in rows):
                        continue  # slow methods run at one batch size only
                    u8 = u8_all[:count]
                    row = {"model": name, "method": method, "batch": b, "images": count,
                           "size": list(size), "layer": engine_layer or layer,
                           "device": args.device,
                           "torch_threads": torch.get_num_threads()}
                    if name in EXPORTED:
                        row["engine_format"] = args.engine_format
                    if export_error:
                        row["engine_error"] = export_error
                    # Captum has Grad-CAM only: its column stays empty for other methods.
                    row_peers = [p for p in peers if p == "pgc" or method == "gradcam"]
                    got = {p: [] for p in row_peers}
                    eng = []
                    for _ in range(args.rounds):
                        for p in row_peers:
                            if f"{p}_error" in row:
                                continue
                            try:
                                if p == "pgc":
                                    spi = time_pgc(model, layer, method, u8, b, mean, std,
                                                   args.iters, args.warmup, args.device,
                                                   reshape)
                                else:
                                    spi = time_captum(model, layer, u8, b, mean, std,
                                                      args.iters, args.warmup, args.device)
                                got[p].append(1.0 / spi)
                            except Exception as e:  # keep going: report it in the row
                                row[f"{p}_error"] = f"{type(e).__name__}: {e}"
                        if "engine_error" not in row:
                            rep, err = run_engine(engine, model_args, engine_layer or layer,
                                                  method, b, size,
                                                  dirs["slow" if is_slow else "all"], args.iters,
                                                  args.warmup, args.timeout,
                                                  args.engine_args.split())
                            if rep is None:
                                row["engine_error"] = err
                            else:
                                eng.append(rep)
                    for p, v in got.items():
                        if v:
                            row[f"{p}_images_per_second"] = statistics.median(v)
                    if eng:
                        e2e = [r["end_to_end"]["images_per_second"] for r in eng]
                        row["engine_images_per_second"] = statistics.median(e2e)
                        row["engine_compute_images_per_second"] = statistics.median(
                            r["compute"]["images_per_second"] for r in eng)
                        row["engine_adapter"] = eng[0]["adapter"]["name"]
                        row["engine_peak_memory_bytes"] = max(r["memory"]["peak"] for r in eng)
                    for p, v in got.items():
                        if args.rounds > 1:
                            row[f"{p}_rounds"] = v
                        if v and eng and "engine_error" not in row and f"{p}_error" not in row:
                            row[RATIO[p]] = statistics.median(e / x for e, x in zip(e2e, v))
                    if args.rounds > 1:
                        row["engine_rounds"] = [r["end_to_end"]["images_per_second"] for r in eng]
                    row["peers"] = row_peers
                    rows.append(row)
                    if args.json:
                        write_json(args.json, args, rows, host)
                    print(f"#   {name} {method} batch {b}: "
                          + "".join(f"{p} {fmt(row.get(f'{p}_images_per_second'))} img/s, "
                                    for p in row_peers)
                          + f"engine {fmt(row.get('engine_images_per_second'))} img/s"
                          + (f" ({row['engine_error']})" if "engine_error" in row else "")
                          + "".join(f" ({p}: {row[f'{p}_error']})" for p in row_peers
                                    if f"{p}_error" in row), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    cols = " | ".join(f"{p} img/s" for p in peers)
    ratios = " | ".join(f"engine/{p}" for p in peers)
    print(f"| model | method | batch | images | {cols} | engine img/s | engine GPU-only img/s | {ratios} |")
    print("| --- | --- | ---: | ---: |" + " ---: |" * (2 * len(peers) + 2))
    for r in rows:
        print(f"| {r['model']} | {r['method']} | {r['batch']} | {r['images']} | "
              + "".join(f"{fmt(r.get(f'{p}_images_per_second'))} | " for p in peers)
              + f"{fmt(r.get('engine_images_per_second'))} | "
              f"{fmt(r.get('engine_compute_images_per_second'))} | "
              + " | ".join(fmt(r.get(RATIO[p]), 2) for p in peers) + " |")
    if args.json:
        write_json(args.json, args, rows, host)
        print(f"\n# wrote {args.json}")
    return 0 if rows and all(RATIO[p] in r for r in rows for p in r["peers"]) else 1


def host_info(engine):
    """The machine the figures belong to: CPU model, cores, caches (lscpu), and the adapter the
    engine picks with its driver (for lavapipe, Mesa's and LLVM's versions)."""
    host = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "platform": platform.platform()}
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        if names:
            host["cpu"] = names[0]
    except OSError:
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for ln in out.splitlines():
            key, _, val = ln.partition(":")
            key = {"L1d cache": "l1d", "L2 cache": "l2", "L3 cache": "l3"}.get(key.strip())
            if key:
                host[key] = val.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        r = subprocess.run([engine, "bench", "--json", "--no-profile", "--model", "shapes",
                            "--size", "32", "--batch", "1", "--iters", "1", "--warmup", "0"],
                           capture_output=True, text=True, timeout=300)
        a = json.loads(r.stdout)["adapter"]
        host["adapter"] = a["name"]
        host["driver"] = f"{a['driver']} {a['driver_info']}".strip()
    except Exception as e:  # the figures still stand; the host says what it could not read
        host["adapter_error"] = f"{type(e).__name__}: {e}"
    return host


def write_json(path, args, rows, host):
    doc = {"args": vars(args), "host": host, "torch": torch.__version__, "rows": rows}
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f, indent=1)
    os.replace(path + ".tmp", path)


def fmt(x, digits=3):
    if x is None:
        return "n/a"
    return f"{x:.{digits}g}" if x < 100 else f"{x:.0f}"


if __name__ == "__main__":
    sys.exit(main())
