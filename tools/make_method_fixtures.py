"""Golden fixtures for every CAM method / option of pytorch-grad-cam 1.5.7 ("pgc").

Usage:  /opt/ref/bin/python tools/make_method_fixtures.py [--out tests/fixtures/methods] [--only resnet50 ...]

Same conventions as tools/make_fixtures.py: no weights are stored (they come from
tools/detweights.py with the "seed" in the metadata, and "tensors"/"tensor_qsums" describe
the state dict), the images come from make_fixtures.make_images, the normalisation is
make_fixtures.normalize, and the files are written with make_fixtures.save_safetensors
(sorted header, byte-reproducible).

One file per model, tests/fixtures/methods/<arch>.safetensors:
  input_u8   U8  [N, H, W, 3]     RGB images
  input      F32 [N, 3, H, W]     (u8/255 - mean)/std (float32, torch)
  logits     F32 [N, K]           model(input), eval mode
  targets    I64 [N, 2]           explicit, different per image
  cam.<m>    F32 [N, 2, H, W]     pgc <Method>(model, [layer])(input,
                                    [ClassifierOutputTarget(targets[n, t]) for n]) for every
                                    method m in METHODS (fullgrad: target_layers ignored by pgc)
  cam.eigencam.flipped, cam.eigengradcam.flipped, cam.gradcam.eigen_smooth.flipped,
  cam.hirescam.eigen_smooth.flipped
             F32 [N, 2, H, W]     the same pipeline with the opposite SVD sign (-VT[0]); the
                                    sign of an SVD vector is arbitrary, so a test should accept
                                    either map per (n, t)
  cam.gradcam.aug_smooth          GradCAM(..)(input, targets, aug_smooth=True)
  cam.gradcam.eigen_smooth        GradCAM(..)(input, targets, eigen_smooth=True)
  cam.hirescam.eigen_smooth       HiResCAM(..)(input, targets, eigen_smooth=True)
  cam.gradcam.multilayer          GradCAM(model, [layer_a, layer_b]) (pgc mean aggregation)
  cam.gradcam.multilayer_max      same, max aggregation (see metadata "multilayer_max_rule")
  guided.guided_backprop F32 [N, 2, H, W, 3]  GuidedBackpropReLUModel(deepcopy(model), 'cpu')(
                                    input[n:n+1], target_category=targets[n, t])  (HWC)
  guided.guided_gradcam  U8  [N, 2, H, W, 3]  deprocess_image(cv2.merge([c, c, c]) * gb),
                                    c = cam.gradcam[n, t], gb = guided_backprop[n, t]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import sys

os.environ.setdefault("TQDM_DISABLE", "1")  # ScoreCAM / AblationCAM progress bars

import numpy as np
import torch
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import detweights  # noqa: E402
import make_fixtures as mf  # noqa: E402

import cv2  # noqa: E402
import pytorch_grad_cam  # noqa: E402
import pytorch_grad_cam.base_cam  # noqa: E402
import pytorch_grad_cam.eigen_cam  # noqa: E402
import pytorch_grad_cam.eigen_grad_cam  # noqa: E402
import pytorch_grad_cam.grad_cam_elementwise  # noqa: E402
import pytorch_grad_cam.hirescam  # noqa: E402
import pytorch_grad_cam.layer_cam  # noqa: E402
from importlib.metadata import version as pkg_version  # noqa: E402
from pytorch_grad_cam import (AblationCAM, EigenCAM, EigenGradCAM, FullGrad, GradCAM,  # noqa: E402
                              GradCAMElementWise, GradCAMPlusPlus, GuidedBackpropReLUModel,
                              HiResCAM, LayerCAM, ScoreCAM, XGradCAM)
from pytorch_grad_cam.ablation_layer import AblationLayer  # noqa: E402
from pytorch_grad_cam.guided_backprop import GuidedBackpropReLUasModule  # noqa: E402
from pytorch_grad_cam.utils.image import deprocess_image, scale_cam_image  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection  # noqa: E402

MAX_FILE_BYTES = 1_000_000
MAX_TOTAL_BYTES = 3_000_000
SCORECAM_BATCH = 64
ABLATION_BATCH = 64

# fixture key -> pgc class (the order is the order of "methods" in the metadata)
METHODS = {
    "gradcam": GradCAM,
    "hirescam": HiResCAM,
    "gradcam-elementwise": GradCAMElementWise,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "eigencam": EigenCAM,
    "eigengradcam": EigenGradCAM,
    "scorecam": ScoreCAM,
    "ablationcam": AblationCAM,
    "fullgrad": FullGrad,
}

MULTILAYER_MAX_RULE = (
    "Not a pgc feature. GradCAM subclass whose aggregate_multi_layers is pgc's with np.max "
    "instead of np.mean: per layer, pgc's compute_cam_per_layer gives "
    "s_l = scale_cam_image(np.maximum(cam_l, 0), (W, H)) (min-max normalise at the layer's "
    "resolution with 1e-7, then cv2.resize to W x H); then "
    "c = np.concatenate([s_l[:, None] for l], axis=1); c = np.maximum(c, 0); "
    "result = scale_cam_image(np.max(c, axis=1)) (min-max normalise again with 1e-7, float32).")

EIGEN_FLIP_RULE = (
    "get_2d_projection copied verbatim but projecting on -VT[0, :] instead of VT[0, :] "
    "(patched into the pgc modules that call it); the rest of pgc's pipeline is unchanged "
    "(np.maximum(cam, 0), scale_cam_image per layer, aggregate_multi_layers). Since "
    "A @ (-v) == -(A @ v) bit for bit, the flipped low-res projection is exactly the negated "
    "one. Applies to cam.eigencam, cam.eigengradcam, cam.gradcam.eigen_smooth and "
    "cam.hirescam.eigen_smooth.")

AUG_SMOOTH_RULE = (
    "pgc default tta: ttach.Compose([HorizontalFlip(), Multiply([0.9, 1, 1.1])]) -> 6 passes in "
    "the order (flip, factor) = (no,0.9) (no,1) (no,1.1) (yes,0.9) (yes,1) (yes,1.1); pass = "
    "pgc forward(x.flip(3) if flip else x; then * factor (float32, skipped for 1)), its final "
    "map flipped back (mask.flip(3)); result = np.mean(np.float32(maps), axis=0) with NO "
    "renormalisation.")

GUIDED_RULE = (
    "guided_backprop[n, t] = GuidedBackpropReLUModel(copy.deepcopy(model), device='cpu')("
    "input[n:n+1].clone(), target_category=targets[n, t]) (input gradient of logit "
    "[0, target] with every nn.ReLU replaced by GuidedBackpropReLU: grad_in = grad_out * "
    "(x > 0) * (grad_out > 0)), HWC float32; guided_gradcam[n, t] = deprocess_image("
    "cv2.merge([c, c, c]) * guided_backprop[n, t]) with c = cam.gradcam[n, t] "
    "(deprocess_image: x - mean(x); / (std(x) + 1e-5); * 0.1; + 0.5; clip [0, 1]; "
    "np.uint8(x * 255) truncating; numpy float32 mean/std over all H*W*3 values).")


# --------------------------------------------------------------------------- helpers

def _projection_2d(activation_batch, sign):
    """Verbatim copy of pytorch_grad_cam.utils.svd_on_activations.get_2d_projection, with the
    projection vector multiplied by `sign` (+1: pgc as is, -1: flipped)."""
    activation_batch = activation_batch.copy()
    activation_batch[np.isnan(activation_batch)] = 0
    projections = []
    for activations in activation_batch:
        reshaped_activations = (activations).reshape(
            activations.shape[0], -1).transpose()
        reshaped_activations = reshaped_activations - \
            reshaped_activations.mean(axis=0)
        U, S, VT = np.linalg.svd(reshaped_activations, full_matrices=True)
        v = VT[0, :] if sign > 0 else -VT[0, :]
        projection = reshaped_activations @ v
        projection = projection.reshape(activations.shape[1:])
        projections.append(projection)
    return np.float32(projections)


_PROJ_MODULES = [pytorch_grad_cam.base_cam, pytorch_grad_cam.eigen_cam,
                 pytorch_grad_cam.eigen_grad_cam, pytorch_grad_cam.hirescam,
                 pytorch_grad_cam.grad_cam_elementwise, pytorch_grad_cam.layer_cam]


@contextlib.contextmanager
def svd_sign(sign):
    """Patch get_2d_projection in every pgc module that imported it."""
    saved = [(m, m.get_2d_projection) for m in _PROJ_MODULES]
    for m in _PROJ_MODULES:
        assert m.get_2d_projection is get_2d_projection
        m.get_2d_projection = lambda a, _s=sign: _projection_2d(a, _s)
    try:
        yield
    finally:
        for m, f in saved:
            m.get_2d_projection = f


class MaxAggGradCAM(GradCAM):
    """GradCAM fusing the per-layer maps with an element-wise max (see MULTILAYER_MAX_RULE)."""

    def aggregate_multi_layers(self, cam_per_target_layer):
        cam_per_target_layer = np.concatenate(cam_per_target_layer, axis=1)
        cam_per_target_layer = np.maximum(cam_per_target_layer, 0)
        result = np.max(cam_per_target_layer, axis=1)
        return scale_cam_image(result)


class CapturingGradCAM(GradCAM):
    """pgc GradCAM that keeps the per-layer maps (for the sanity checks only)."""

    def aggregate_multi_layers(self, cam_per_target_layer):
        self.captured = [np.array(c) for c in cam_per_target_layer]
        return super().aggregate_multi_layers(cam_per_target_layer)


class RecordingAblationLayer(AblationLayer):
    """pgc AblationLayer that records which ablation-value branch each call takes."""

    def __init__(self):
        super().__init__()
        self.log = []

    def __call__(self, x):
        mn = float(torch.min(self.activations))
        self.log.append((mn, "zero" if mn == 0 else "min-1e7"))
        return AblationLayer.__call__(self, x)


def run_cam(cam, x, targets, target_cls=ClassifierOutputTarget, **kw):
    """[N, T, H, W]: one pgc call per target column, `target_cls(targets[n, t])` per image."""
    n = x.shape[0]
    T = targets.shape[1]
    out = np.zeros((n, T) + tuple(x.shape[2:]), dtype=np.float32)
    for t in range(T):
        tg = [target_cls(int(targets[i, t])) for i in range(n)]
        g = cam(input_tensor=x, targets=tg, **kw)
        assert g.dtype == np.float32 and g.shape == (n,) + tuple(x.shape[2:]), (g.dtype, g.shape)
        out[:, t] = g
    return out


def module_name(model, module):
    for name, m in model.named_modules():
        if m is module:
            return name
    raise KeyError(module)


def relu_fingerprint(model):
    return [(name, id(m), m.inplace) for name, m in model.named_modules()
            if isinstance(m, torch.nn.ReLU)]


def norm(img):
    img = img - np.min(img)
    return img / (np.float32(1e-7) + np.max(img))


def finish(cam_lowres, w, h):
    """pgc's tail for a single target layer: relu, normalise, cv2.resize, (mean of one), normalise."""
    out = []
    for c in np.maximum(cam_lowres, 0):
        out.append(norm(norm(cv2.resize(np.float32(norm(c)), (w, h)))))
    return np.float32(out)


# ------------------------------------------------------------ independent re-computations

def capture_acts_grads(model, layer_module, x, tg):
    """Activations and gradients of one layer (non-in-place copy), numpy."""
    rec = {}

    def hook(_m, _i, o):
        rec["a"] = o.detach().clone()
        o.register_hook(lambda g: rec.__setitem__("g", g.detach().clone()))

    h = layer_module.register_forward_hook(hook)
    model.zero_grad()
    out = model(x)
    loss = sum(out[i, int(tg[i])] for i in range(x.shape[0]))
    loss.backward()
    h.remove()
    return rec["a"].numpy(), rec["g"].numpy()


def independent_maps(model, layer, x, targets):
    """numpy re-implementation of the gradient methods (checks pgc against the quoted code)."""
    n, _, h, w = x.shape
    mod = model.get_submodule(layer)
    res = {k: np.zeros((n, targets.shape[1], h, w), np.float32) for k in
           ["gradcam", "hirescam", "gradcam-elementwise", "gradcam++", "xgradcam", "layercam",
            "eigengradcam", "eigencam"]}
    flips = {k: np.zeros_like(res[k]) for k in ["eigengradcam", "eigencam"]}
    for t in range(targets.shape[1]):
        A, G = capture_acts_grads(model, mod, x, targets[:, t])
        sa = A.sum(axis=(2, 3))[:, :, None, None]
        g2 = G ** 2
        g3 = g2 * G
        aij = np.where(G != 0, g2 / (2 * g2 + sa * g3 + 1e-6), 0)
        lo = {
            "gradcam": (G.mean(axis=(2, 3))[:, :, None, None] * A).sum(1),
            "hirescam": (G * A).sum(1),
            "gradcam-elementwise": np.maximum(G * A, 0).sum(1),
            "gradcam++": ((np.maximum(G, 0) * aij).sum(axis=(2, 3))[:, :, None, None] * A).sum(1),
            "xgradcam": ((G * A / (sa + 1e-7)).sum(axis=(2, 3))[:, :, None, None] * A).sum(1),
            "layercam": (np.maximum(G, 0) * A).sum(1),
        }
        for k, v in lo.items():
            res[k][:, t] = finish(v, w, h)
        for k, src in (("eigengradcam", G * A), ("eigencam", A)):
            # plain SVD in float64 of the centred matrix; sign fixed afterwards
            p = []
            for a in src:
                m = a.reshape(a.shape[0], -1).T.astype(np.float64)
                m = m - m.mean(axis=0)
                _, _, vt = np.linalg.svd(m, full_matrices=False)
                p.append((m @ vt[0]).reshape(a.shape[1:]))
            p = np.float32(p)
            res[k][:, t] = finish(p, w, h)
            flips[k][:, t] = finish(-p, w, h)
    return res, flips


def fullgrad_reference(model, x, targets):
    """Independent FullGrad (non-in-place copy, retain_grad on every biased conv / BN output)."""
    m = copy.deepcopy(model)
    for mod in m.modules():
        if isinstance(mod, torch.nn.ReLU):
            mod.inplace = False
    layers = [mod for mod in m.modules()
              if type(mod) in (torch.nn.Conv2d, torch.nn.BatchNorm2d) and mod.bias is not None]
    n, _, h, w = x.shape
    out_maps = np.zeros((n, targets.shape[1], h, w), np.float32)
    for t in range(targets.shape[1]):
        outs = {}
        hs = []
        for i, mod in enumerate(layers):
            def hook(_m, _i, o, i=i):
                o.retain_grad()
                outs[i] = o
            hs.append(mod.register_forward_hook(hook))
        xin = x.clone().requires_grad_(True)
        m.zero_grad()
        y = m(xin)
        sum(y[k, int(targets[k, t])] for k in range(n)).backward()
        for hd in hs:
            hd.remove()
        total = np.zeros((n, h, w), np.float64)
        gi = np.abs(xin.grad.numpy() * x.numpy())
        for k in range(n):
            for c in range(gi.shape[1]):
                total[k] += cv2.resize(np.float32(norm(gi[k, c])), (w, h))
        for i, mod in enumerate(layers):
            if isinstance(mod, torch.nn.BatchNorm2d):
                b = (-(mod.running_mean * mod.weight / torch.sqrt(mod.running_var + mod.eps))
                     + mod.bias).detach().numpy()
            else:
                b = mod.bias.detach().numpy()
            bg = np.abs(b[None, :, None, None] * outs[i].grad.numpy())
            for k in range(n):
                for c in range(bg.shape[1]):
                    total[k] += cv2.resize(np.float32(norm(bg[k, c])), (w, h))
        for k in range(n):
            out_maps[k, t] = norm(np.float32(total[k]))
    return out_maps


# --------------------------------------------------------------------------- the cases

def cases():
    vgg = torchvision.models.vgg11_bn(num_classes=5)
    assert isinstance(vgg.features[6], torch.nn.ReLU) and isinstance(vgg.features[13], torch.nn.ReLU)
    assert isinstance(vgg.features[4], torch.nn.Conv2d) and vgg.features[4].out_channels == 128
    del vgg
    return [
        dict(arch="resnet50", num_classes=6, seed=11, n=2, h=32, w=48, layer="layer1",
             multilayer=["layer1", "layer2"], targets=[[1, 4], [0, 5]]),
        dict(arch="vgg11_bn", num_classes=5, seed=12, n=2, h=32, w=32, layer="features.6",
             multilayer=["features.6", "features.13"], targets=[[2, 3], [4, 1]]),
    ]


def write_model(outdir, arch, num_classes, seed, n, h, w, layer, multilayer, targets):
    model = mf.build(arch, num_classes, seed)
    relus_before = relu_fingerprint(model)
    sd_before = {k: v.clone() for k, v in model.state_dict().items()}
    case = "methods_" + arch
    image_seed = 1000 + sum(case.encode())
    u8 = mf.make_images(n, h, w, image_seed)
    x = mf.normalize(u8)
    targets = np.asarray(targets, dtype=np.int64)
    assert targets.shape == (n, 2)
    assert all(len(set(r)) == 2 for r in targets) and len({tuple(r) for r in targets}) == n
    T = targets.shape[1]
    module = model.get_submodule(layer)
    ml_modules = [model.get_submodule(name) for name in multilayer]

    shapes = {}
    hs = [model.get_submodule(name).register_forward_hook(
        lambda _m, _i, o, name=name: shapes.__setitem__(name, list(o.shape)))
        for name in multilayer]
    with torch.no_grad():
        logits = model(x).float()
    for hd in hs:
        hd.remove()
    print(f"{arch}: target layer {layer} = {type(module).__name__}, output shape {shapes[layer]}; "
          f"multilayer {[(nm, shapes[nm]) for nm in multilayer]}")

    cams = {}
    log = {}
    # ---- every method, pgc as is
    for key, cls in METHODS.items():
        if key == "fullgrad":
            cam = cls(model=model, target_layers=[])
        elif key == "ablationcam":
            abl = RecordingAblationLayer()
            cam = cls(model=model, target_layers=[module], ablation_layer=abl,
                      batch_size=ABLATION_BATCH)
        else:
            cam = cls(model=model, target_layers=[module])
        if key == "scorecam":
            cam.batch_size = SCORECAM_BATCH
        with cam:
            cams["cam." + key] = run_cam(cam, x, targets)
        if key == "fullgrad":
            fg_layers = [module_name(model, m) for m in cam.target_layers]
        if key == "ablationcam":
            log["ablation"] = abl.log
        del cam

    # ---- opposite SVD sign (and a check that the verbatim copy with + sign is pgc itself)
    with svd_sign(+1):
        with EigenCAM(model=model, target_layers=[module]) as cam:
            same = run_cam(cam, x, targets)
    assert np.array_equal(same, cams["cam.eigencam"]), "verbatim get_2d_projection copy differs"
    with svd_sign(-1):
        for key, cls in (("eigencam", EigenCAM), ("eigengradcam", EigenGradCAM)):
            with cls(model=model, target_layers=[module]) as cam:
                cams[f"cam.{key}.flipped"] = run_cam(cam, x, targets)
        for key, cls in (("gradcam", GradCAM), ("hirescam", HiResCAM)):
            with cls(model=model, target_layers=[module]) as cam:
                cams[f"cam.{key}.eigen_smooth.flipped"] = run_cam(cam, x, targets, eigen_smooth=True)

    # ---- options
    with GradCAM(model=model, target_layers=[module]) as cam:
        cams["cam.gradcam.aug_smooth"] = run_cam(cam, x, targets, aug_smooth=True)
        cams["cam.gradcam.eigen_smooth"] = run_cam(cam, x, targets, eigen_smooth=True)
    with HiResCAM(model=model, target_layers=[module]) as cam:
        cams["cam.hirescam.eigen_smooth"] = run_cam(cam, x, targets, eigen_smooth=True)
    with GradCAM(model=model, target_layers=ml_modules) as cam:
        cams["cam.gradcam.multilayer"] = run_cam(cam, x, targets)
    with MaxAggGradCAM(model=model, target_layers=ml_modules) as cam:
        cams["cam.gradcam.multilayer_max"] = run_cam(cam, x, targets)

    # ---- guided backprop / guided Grad-CAM (fresh deep copy per call: pgc swaps the ReLUs)
    gb = np.zeros((n, T, h, w, 3), np.float32)
    ggc = np.zeros((n, T, h, w, 3), np.uint8)
    for i in range(n):
        for t in range(T):
            twin = copy.deepcopy(model)
            g = GuidedBackpropReLUModel(twin, device="cpu")(x[i:i + 1].clone(),
                                                             target_category=int(targets[i, t]))
            assert g.dtype == np.float32 and g.shape == (h, w, 3), (g.dtype, g.shape)
            gb[i, t] = g
            c = cams["cam.gradcam"][i, t]
            ggc[i, t] = deprocess_image(cv2.merge([c, c, c]) * g)
            # pgc restores the ReLUs of the copy: all nn.ReLU again (one shared, NOT in-place
            # instance), no GuidedBackpropReLUasModule left
            assert not any(isinstance(m, GuidedBackpropReLUasModule) for m in twin.modules())
            rel = [m for m in twin.modules() if isinstance(m, torch.nn.ReLU)]
            assert len(rel) >= 1 and all(not m.inplace for m in rel)
            log["gb_restore"] = (f"copy after the call: {len(rel)} distinct nn.ReLU module(s), "
                                 f"inplace={rel[0].inplace}")
            del twin

    # ---- the model itself is untouched
    assert relu_fingerprint(model) == relus_before, "ReLU modules changed"
    assert all(torch.equal(sd_before[k], v) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert torch.equal(model(x), logits), "model output changed after the methods ran"

    # ---- sanity checks
    report = sanity(model, layer, x, targets, cams, gb, ggc, multilayer, log, shapes)

    tensors = {
        "input_u8": np.ascontiguousarray(u8),
        "input": np.ascontiguousarray(x.numpy()),
        "logits": np.ascontiguousarray(logits.numpy()),
        "targets": targets,
        "guided.guided_backprop": gb,
        "guided.guided_gradcam": ggc,
    }
    tensors.update(cams)
    abl_branches = sorted({b for _, b in log["ablation"]})
    meta = {
        "arch": arch,
        "num_classes": str(num_classes),
        "seed": str(seed),
        "layer": layer,
        "layer_output_shape": json.dumps(shapes[layer]),
        "multilayer": json.dumps(multilayer),
        "multilayer_output_shapes": json.dumps([shapes[nm] for nm in multilayer]),
        "multilayer_max_rule": MULTILAYER_MAX_RULE,
        "height": str(h),
        "width": str(w),
        "batch": str(n),
        "targets": json.dumps(targets.tolist()),
        "targets_rule": "explicit",
        "methods": json.dumps(list(METHODS)),
        "method_classes": json.dumps({k: c.__name__ for k, c in METHODS.items()}),
        "options": json.dumps(sorted(k for k in cams if k.count(".") >= 2)),
        "scorecam_batch": str(SCORECAM_BATCH),
        "ablation_batch": str(ABLATION_BATCH),
        "ablation_branch": json.dumps(abl_branches),
        "ablation_min": json.dumps(sorted({mn for mn, _ in log["ablation"]})[:4]),
        "fullgrad_layers": json.dumps(fg_layers),
        "eigen_flip_rule": EIGEN_FLIP_RULE,
        "aug_smooth_rule": AUG_SMOOTH_RULE,
        "guided_rule": GUIDED_RULE,
        "tensors": json.dumps(detweights.tensor_list(model)),
        "tensor_qsums": json.dumps(mf.qsums(model, seed)),
        "zero_maps": json.dumps(log["zero_maps"]),
        "overrides": json.dumps([]),
        "image_seed": str(image_seed),
        "mean": json.dumps(mf.MEAN),
        "std": json.dumps(mf.STD),
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "grad_cam_version": pkg_version("grad-cam"),
        "ttach_version": pkg_version("ttach"),
        "opencv_version": cv2.__version__,
        "numpy_version": np.__version__,
        "generator": "tools/make_method_fixtures.py",
    }
    path = os.path.join(outdir, arch + ".safetensors")
    mf.save_safetensors(tensors, path, meta)
    size = os.path.getsize(path)
    print(f"{arch}: wrote {path} ({size} B), {len(tensors)} tensors; ablation branch(es) "
          f"{abl_branches} over {len(log['ablation'])} ablation-layer calls; "
          f"{len(fg_layers)} FullGrad layers; {log['gb_restore']}")
    for line in report:
        print("  " + line)
    assert size < MAX_FILE_BYTES, size
    return size


def sanity(model, layer, x, targets, cams, gb, ggc, multilayer, log, shapes):
    rep = []
    zero_maps = log.setdefault("zero_maps", [])
    n, T = targets.shape
    h, w = x.shape[2:]
    for k, v in cams.items():
        assert v.dtype == np.float32 and v.shape == (n, T, h, w), (k, v.shape)
        assert np.isfinite(v).all() and v.min() >= 0 and v.max() <= 1, (k, v.min(), v.max())
        # every (n, t) map is min-max normalised except the aug_smooth mean
        # (or all zero: with these random weights some Grad-CAM maps are entirely <= 0)
        if k != "cam.gradcam.aug_smooth":
            mins = v.reshape(n * T, -1).min(1)
            maxs = v.reshape(n * T, -1).max(1)
            assert np.all(mins == 0), (k, mins)
            assert np.all((maxs > 0.99) | (maxs == 0)), (k, maxs)
        for i in range(n):
            for t in range(T):
                if v[i, t].max() == 0:
                    zero_maps.append([k, i, t])
    rep.append(f"{len(cams)} cam tensors: finite, in [0, 1], min 0 / max ~1 per map "
               f"(aug_smooth max {cams['cam.gradcam.aug_smooth'].max():.6f}); all-zero maps "
               f"[tensor, n, t]: {zero_maps}")
    assert len(zero_maps) <= 6, zero_maps

    def differ(a, b):
        return float(np.abs(cams[a] - cams[b]).max())

    for a, b in [("cam.fullgrad", "cam.gradcam"), ("cam.eigencam", "cam.eigencam.flipped"),
                 ("cam.eigengradcam", "cam.eigengradcam.flipped"),
                 ("cam.gradcam", "cam.gradcam.aug_smooth"), ("cam.gradcam", "cam.gradcam.eigen_smooth"),
                 ("cam.gradcam.multilayer", "cam.gradcam.multilayer_max"),
                 ("cam.gradcam", "cam.gradcam.multilayer"), ("cam.scorecam", "cam.gradcam"),
                 ("cam.ablationcam", "cam.gradcam"), ("cam.gradcam", "cam.hirescam")]:
        d = differ(a, b)
        assert d > 1e-3, (a, b, d)
    rep.append("pairwise distinct (max|d| > 1e-3): fullgrad/gradcam, eigen*/flipped, options, "
               "multilayer mean/max, scorecam, ablationcam: e.g. fullgrad vs gradcam "
               f"{differ('cam.fullgrad', 'cam.gradcam'):.3f}")
    for t in range(T):
        assert not np.array_equal(cams["cam.gradcam"][:, t], cams["cam.gradcam"][:, (t + 1) % T])
    assert np.array_equal(cams["cam.eigencam"][:, 0], cams["cam.eigencam"][:, 1]), \
        "EigenCAM does not depend on the target"

    # independent numpy re-implementations
    ind, flips = independent_maps(model, layer, x, targets)
    worst = {}
    for k, v in ind.items():
        ref = cams["cam." + k]
        if k in flips:  # accept either sign per (n, t)
            d = np.minimum(np.abs(v - ref).reshape(n, T, -1).max(-1),
                           np.abs(flips[k] - ref).reshape(n, T, -1).max(-1))
            df = np.minimum(np.abs(v - cams[f"cam.{k}.flipped"]).reshape(n, T, -1).max(-1),
                            np.abs(flips[k] - cams[f"cam.{k}.flipped"]).reshape(n, T, -1).max(-1))
            d = max(float(d.max()), float(df.max()))
        else:
            d = float(np.abs(v - ref).max())
        worst[k] = d
        assert d < 2e-4, (k, d)
    rep.append("independent numpy re-implementation vs pgc, max|d|: " +
               ", ".join(f"{k} {d:.1e}" for k, d in worst.items()))
    fg = fullgrad_reference(model, x, targets)
    dfg = float(np.abs(fg - cams["cam.fullgrad"]).max())
    assert dfg < 2e-4, dfg
    rep.append(f"independent FullGrad (retain_grad on every biased Conv2d/BN output, "
               f"non-in-place ReLUs) vs pgc max|d| = {dfg:.1e}")

    # multilayer: the mean / max rules from pgc's own per-layer maps
    mods = [model.get_submodule(nm) for nm in multilayer]
    with CapturingGradCAM(model=model, target_layers=mods) as cam:
        for t in range(T):
            tg = [ClassifierOutputTarget(int(targets[i, t])) for i in range(n)]
            out = cam(input_tensor=x, targets=tg)
            per = np.concatenate(cam.captured, axis=1)
            assert per.shape == (n, len(mods), h, w)
            assert np.array_equal(out, cams["cam.gradcam.multilayer"][:, t])
            assert np.array_equal(scale_cam_image(np.mean(np.maximum(per, 0), axis=1)), out)
            assert np.array_equal(scale_cam_image(np.max(np.maximum(per, 0), axis=1)),
                                  cams["cam.gradcam.multilayer_max"][:, t])
    rep.append("multilayer: pgc output == scale_cam_image(mean(per-layer)); multilayer_max == "
               "scale_cam_image(max(per-layer)) (bit-exact)")

    # eigen flip: low-res projection exactly negated
    a = np.random.default_rng(0).standard_normal((2, 16, 5, 7)).astype(np.float32)
    assert np.array_equal(_projection_2d(a, -1), -get_2d_projection(a))
    # guided
    assert np.isfinite(gb).all() and np.abs(gb).max() > 0
    for i in range(n):
        for t in range(T):
            c = cams["cam.gradcam"][i, t]
            assert np.array_equal(ggc[i, t], deprocess_image(cv2.merge([c, c, c]) * gb[i, t]))
    rep.append(f"guided_backprop max|g| {np.abs(gb).max():.3e}, frac zero "
               f"{float((gb == 0).mean()):.3f}; guided_gradcam u8 range [{ggc.min()}, {ggc.max()}]")
    mins = sorted({mn for mn, _ in log["ablation"]})
    rep.append(f"ablation layer input min over its calls: {mins[:4]} -> branch "
               f"{sorted({b for _, b in log['ablation']})}")
    return rep


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "tests", "fixtures", "methods"))
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    mf.setup_torch()
    os.makedirs(args.out, exist_ok=True)
    total = 0
    for spec in cases():
        if args.only and spec["arch"] not in args.only:
            continue
        total += write_model(args.out, **spec)
    print(f"total fixture size {total} B")
    assert total < MAX_TOTAL_BYTES


if __name__ == "__main__":
    main()
