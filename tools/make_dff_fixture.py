"""Golden fixture for `gradcam dff`: pytorch-grad-cam 1.5.7's DeepFeatureFactorization (sklearn
NMF(init='random', random_state=0), the 'cd' solver) on the seeded ResNet-18 of
tools/make_new_method_fixtures.py, plus small NMF-only cases and numpy's legacy gauss draws.

Usage:  /opt/ref/bin/python tools/make_dff_fixture.py [--out tests/fixtures/methods]

tests/fixtures/methods/dff.safetensors (weights regenerated from "seed" and "tensors" by
tools/detweights.py; images from make_fixtures.make_images):
  input_u8              U8  [N, H, W, 3]
  randn                 F64 [64]          np.random.RandomState(0).standard_normal(64)
  nmf.x, nmf64.x        F32/F64 [7, 9]    a non-negative matrix; nmf.w/h, nmf64.w/h: sklearn's
                                          NMF(3, init='random', random_state=0) of it (its dtype)
  dff.<layer>.acts      F32 [N, C, h, w]  the layer's activations
  dff.<layer>.w         F32 [C, K]        NMF W of pgc's dff(); .h F32 [K, N*h*w] its H
  dff.<layer>.concepts  F32 [C, K]        W + offset (pgc's concepts)
  dff.<layer>.maps      F32 [N, K, H, W]  pgc's processed explanations (scale_cam_image)
  dff.layer4.outputs    F32 [K, classes]  model.fc(concepts.T) (computation_on_concepts)
  dff.layer4.scores     F32 [K, classes]  their softmax (run_dff_on_image)
  dff.layer4.overlay    U8  [N, H, W, 3]  show_factorization_on_image(img/255, maps[n]) without
                                          labels, gist_rainbow colours (pgc's default; pgc's own
                                          plt.cm.get_cmap is gone from matplotlib 3.9+)
metadata "cases": {layer: K}, "n_iter": {layer: sklearn's n_iter_}.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import cv2
import matplotlib
import numpy as np
import sklearn
import torch
import torchvision
from sklearn.decomposition import NMF

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import detweights  # noqa: E402
import export  # noqa: E402
import make_fixtures as mf  # noqa: E402

from importlib.metadata import version as pkg_version  # noqa: E402
from pytorch_grad_cam import DeepFeatureFactorization  # noqa: E402
from pytorch_grad_cam.feature_factorization.deep_feature_factorization import dff  # noqa: E402
from pytorch_grad_cam.utils.image import show_factorization_on_image  # noqa: E402

# The f64 NMF case and numpy's draws are kept in f64 (export's writer lists the project's dtypes).
export._ST_DTYPES.setdefault(np.dtype(np.float64), "F64")
MAX_BYTES = 400_000
CASE = dict(arch="resnet18", num_classes=7, seed=41, n=2, h=48, w=64,
            concepts={"layer4": 4, "layer3": 3})


def nmf_case(dtype):
    x = np.random.default_rng(5).uniform(0, 2, size=(7, 9)).astype(dtype)
    x[x < 0.4] = 0
    model = NMF(n_components=3, init="random", random_state=0)
    w = model.fit_transform(x)
    return x, w, model.components_, model.n_iter_


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures/methods")
    args = ap.parse_args()
    mf.setup_torch()
    c = CASE
    model = mf.build(c["arch"], c["num_classes"], c["seed"])
    u8 = mf.make_images(c["n"], c["h"], c["w"], 3000 + c["seed"])
    x = mf.normalize(u8)
    tensors = {"input_u8": np.ascontiguousarray(u8),
               "randn": np.random.RandomState(0).standard_normal(64)}
    n_iters = {}
    for key, dtype in [("nmf", np.float32), ("nmf64", np.float64)]:
        xs, w, h, it = nmf_case(dtype)
        assert w.dtype == dtype and h.dtype == dtype
        tensors.update({f"{key}.x": xs, f"{key}.w": w, f"{key}.h": h})
        n_iters[key] = int(it)
    for layer, k in c["concepts"].items():
        head = model.fc if layer == "layer4" else None
        d = DeepFeatureFactorization(model, model.get_submodule(layer),
                                     computation_on_concepts=head)
        out = d(x, k)
        concepts, maps = out[0], np.float32(out[1])
        acts = d.activations_and_grads.activations[0].cpu().numpy()
        d.activations_and_grads.release()
        # The NMF again, to keep W, H and the iteration count (pgc's dff() drops them).
        n, ch, hh, ww = acts.shape
        flat = acts.transpose((1, 0, 2, 3)).reshape(ch, -1)
        flat = flat - flat.min(axis=-1)[:, None]
        nmf = NMF(n_components=k, init="random", random_state=0)
        w = nmf.fit_transform(flat)
        c2, _ = dff(acts.copy(), n_components=k)
        assert np.array_equal(c2, concepts) and np.array_equal(w + acts.transpose(
            (1, 0, 2, 3)).reshape(ch, -1).min(axis=-1)[:, None], concepts)
        n_iters[layer] = int(nmf.n_iter_)
        p = f"dff.{layer}."
        tensors.update({p + "acts": acts, p + "w": w, p + "h": nmf.components_,
                        p + "concepts": np.float32(concepts), p + "maps": maps})
        if head is not None:
            outputs = np.float32(out[2])
            tensors[p + "outputs"] = outputs
            tensors[p + "scores"] = np.float32(torch.softmax(torch.from_numpy(outputs), -1))
            cmap = matplotlib.colormaps["gist_rainbow"]
            colors = [np.array(cmap(i)) for i in np.arange(0, 1, 1.0 / k)]
            tensors[p + "overlay"] = np.stack([
                show_factorization_on_image(u8[i] / 255, maps[i].copy(), colors=colors)
                for i in range(n)])
    meta = {
        "arch": c["arch"],
        "num_classes": str(c["num_classes"]),
        "seed": str(c["seed"]),
        "height": str(c["h"]),
        "width": str(c["w"]),
        "batch": str(c["n"]),
        "cases": json.dumps(c["concepts"]),
        "n_iter": json.dumps(n_iters),
        "tensors": json.dumps(detweights.tensor_list(model)),
        "tensor_qsums": json.dumps(mf.qsums(model, c["seed"])),
        "mean": json.dumps(mf.MEAN),
        "std": json.dumps(mf.STD),
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "grad_cam_version": pkg_version("grad-cam"),
        "numpy_version": np.__version__,
        "sklearn_version": sklearn.__version__,
        "opencv_version": cv2.__version__,
        "matplotlib_version": matplotlib.__version__,
        "generator": "tools/make_dff_fixture.py",
    }
    path = os.path.join(args.out, "dff.safetensors")
    mf.save_safetensors(tensors, path, meta)
    size = os.path.getsize(path)
    print(f"wrote {path} ({size} B); n_iter {n_iters}")
    assert size < MAX_BYTES, size


if __name__ == "__main__":
    main()
