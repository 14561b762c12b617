"""A drop-in for pytorch-grad-cam: change the import, keep the code.

    from gradcam_wgpu.compat import GradCAM, ClassifierOutputTarget
    with GradCAM(model=model, target_layers=[model.layer4]) as cam:
        grayscale_cam = cam(input_tensor=x, targets=[ClassifierOutputTarget(281)])

``model`` is a ``torch.nn.Module`` (exported to ONNX once per input shape and cached while
its weights are unchanged; ``target_layers`` are mapped to their module paths) or a
:class:`gradcam_wgpu.Model` (``target_layers`` are then layer names, and the input a numpy
float32 array). Results are numpy float32 ``[N, H, W]`` in [0, 1], as pytorch-grad-cam's.

``reshape_transform`` (pytorch-grad-cam's hook for token and channels-last layers: ViT, Swin,
ConvNeXt) works when it only rearranges the layer's elements (slicing off a class token,
reshape, permute, transpose), as pytorch-grad-cam's examples write it: it is probed once per
input shape with element indices, and the engine reads the layer's activations and gradients
through the resulting index map. A transform that computes new values, or one that mixes the
images of a batch, raises NotImplementedError; so does AblationCAM with a transform.

Like pytorch-grad-cam, the constructor puts a torch model in eval mode. A model found in
training mode at call time is explained in eval mode (warned once) and left as it was.

Engines are shared: building one (shaders, pipelines, GPU buffers) takes seconds, so drop-in
objects with the same engine model, layers, method, input shape and smoothing flags share one,
e.g. a new ``with GradCAM(...) as cam:`` per loop iteration builds it once. ``close()`` (or
leaving the ``with`` block) drops the object's hold; the :data:`cache_size` most recently
released engines are kept idle for the next object, and :func:`clear_cache` frees them.

``cam.batch_size`` (Score-CAM, Ablation-CAM: perturbed copies per forward pass, default 32,
settable after construction) caps the engine's probe batch; the maps do not depend on it.

``aug_smooth=True`` runs the engine's built-in test-time augmentation (pytorch-grad-cam's
default: horizontal flip x {0.9, 1, 1.1}, as one batch). With ``tta_transforms`` (a ttach
``Compose``, or any iterable of objects with ``augment_image``/``deaugment_mask``; given to
the constructor or, as pytorch-grad-cam's CAM classes need, set as ``cam.tta_transforms``)
it runs pytorch-grad-cam's loop instead: one engine pass per transform, de-augmented,
averaged (needs torch).
"""

from __future__ import annotations

import collections
import os
import tempfile
import threading
import warnings
import weakref

import numpy as np

from . import _native

__all__ = [
    "AblationCAM",
    "BinaryClassifierOutputTarget",
    "ClassifierOutputReST",
    "ClassifierOutputSoftmaxTarget",
    "ClassifierOutputTarget",
    "EigenCAM",
    "EigenGradCAM",
    "FEM",
    "FullGrad",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "HiResCAM",
    "KPCA_CAM",
    "LayerCAM",
    "RawScoresOutputTarget",
    "RefineCAM",
    "ScoreCAM",
    "SegEigenCAM",
    "ShapleyCAM",
    "SoftmaxOutputTarget",
    "XGradCAM",
    "sobel_cam",
    "cache_info",
    "cache_size",
    "clear_cache",
]


# ---- targets (pytorch-grad-cam's own objects are accepted too) --------------------------


class ClassifierOutputTarget:
    """The logit of ``category``."""

    def __init__(self, category):
        self.category = category

    def __call__(self, model_output):
        if len(model_output.shape) == 1:
            return model_output[self.category]
        return model_output[:, self.category]


class ClassifierOutputSoftmaxTarget(ClassifierOutputTarget):
    """The softmax probability of ``category``."""

    def __call__(self, model_output):
        import torch

        if len(model_output.shape) == 1:
            return torch.softmax(model_output, dim=-1)[self.category]
        return torch.softmax(model_output, dim=-1)[:, self.category]


class ClassifierOutputReST(ClassifierOutputTarget):
    """The logit of ``category`` minus the cross-entropy (ReST, arXiv 2501.06261)."""

    def __call__(self, model_output):
        import torch

        one = len(model_output.shape) == 1
        out = model_output.unsqueeze(0) if one else model_output
        target = torch.full((out.shape[0],), self.category, device=out.device)
        ce = torch.nn.functional.cross_entropy(out, target, reduction="none")
        rest = out[:, self.category] - ce
        return rest[0] if one else rest


class BinaryClassifierOutputTarget:
    """A one-logit model's output, negated for ``category`` 0."""

    def __init__(self, category):
        self.category = category

    def __call__(self, model_output):
        return model_output * (1 if self.category == 1 else -1)


class RawScoresOutputTarget:
    def __call__(self, model_output):
        return model_output


class SoftmaxOutputTarget:
    def __call__(self, model_output):
        import torch

        return torch.softmax(model_output, dim=-1)


# pgc target class -> the engine's score (`score=` of gradcam_wgpu.Explainer)
_SCORES = {
    "ClassifierOutputTarget": "logit",
    "ClassifierOutputSoftmaxTarget": "softmax",
    "ClassifierOutputReST": "rest",
    "BinaryClassifierOutputTarget": "binary",
}


def _targets(targets, n):
    """pytorch-grad-cam targets -> [(score, class)] per image, or None for the top logit."""
    if targets is None:
        return None
    targets = list(targets)
    if len(targets) != n:
        raise ValueError(f"{len(targets)} targets for {n} images: give one target per image")
    out = []
    for t in targets:
        name = type(t).__name__
        score = _SCORES.get(name)
        if score is None or not hasattr(t, "category"):
            raise NotImplementedError(
                f"target {name}: gradcam_wgpu explains {', '.join(_SCORES)} "
                "(or targets=None for the top class)"
            )
        c = int(t.category)
        if c < 0:
            raise ValueError(f"{name}({c}): negative classes are not supported")
        out.append((score, c))
    return out


# ---- models -------------------------------------------------------------------------------

# torch model -> {(C, H, W): (weights fingerprint, gradcam_wgpu.Model)}
_EXPORTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_WARNED_TRAINING: "weakref.WeakSet" = weakref.WeakSet()


def _is_torch_module(model) -> bool:
    try:
        import torch
    except ImportError:
        return False
    return isinstance(model, torch.nn.Module)


def _fingerprint(model):
    """Changes when any parameter or buffer is replaced or updated in place."""
    return tuple((id(t), t._version) for t in model.state_dict(keep_vars=True).values())


def _export(model, shape):
    """The engine's model for `model` at input `shape` (C, H, W): an ONNX export, cached."""
    import torch

    per_model = _EXPORTS.setdefault(model, {})
    fp = _fingerprint(model)
    hit = per_model.get(shape)
    if hit is not None and hit[0] == fp:
        return hit[1]
    was_training = model.training
    if was_training and model not in _WARNED_TRAINING:
        _WARNED_TRAINING.add(model)
        warnings.warn(
            "the model is in training mode; gradcam_wgpu explains it in eval mode "
            "(BatchNorm running statistics, no dropout), as pytorch-grad-cam does after "
            "model.eval()",
            stacklevel=4,
        )
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    dummy = torch.zeros((1, *shape), dtype=torch.float32, device=device)
    with tempfile.TemporaryDirectory(prefix="gradcam_wgpu-") as d:
        path = os.path.join(d, "model.onnx")
        model.eval()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model,
                    (dummy,),
                    path,
                    dynamo=False,
                    opset_version=17,
                    input_names=["input"],
                    output_names=["logits"],
                    dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                    do_constant_folding=True,
                )
        except Exception as e:
            raise _native.ModelError(
                f"{type(model).__name__}: torch.onnx.export failed: {e}"
            ) from e
        finally:
            model.train(was_training)
        engine_model = _native.Model.load(path)
    per_model[shape] = (fp, engine_model)
    return engine_model


def _layer_names(model, target_layers):
    """Module paths of `target_layers` in `model` (the importer's layer names)."""
    paths = {}
    for name, module in model.named_modules():
        paths.setdefault(id(module), name)
    names = []
    for layer in target_layers:
        if isinstance(layer, str):
            names.append(layer)
            continue
        name = paths.get(id(layer))
        if name is None:
            raise ValueError(
                f"target layer {type(layer).__name__} is not a submodule of the model"
            )
        if name == "":
            raise ValueError("the whole model is not a target layer; pick a submodule")
        names.append(name)
    return names


def _to_numpy(input_tensor):
    """A float32 [N, C, H, W] numpy array from a torch tensor on any device, or numpy."""
    if hasattr(input_tensor, "detach"):
        input_tensor = input_tensor.detach().to("cpu")
        import torch

        input_tensor = input_tensor.to(torch.float32).contiguous().numpy()
    x = np.ascontiguousarray(np.asarray(input_tensor, dtype=np.float32))
    if x.ndim != 4:
        raise ValueError(f"input_tensor must be [N, C, H, W], got shape {tuple(x.shape)}")
    return x


# ---- shared engines -----------------------------------------------------------------------

#: How many released engines are kept idle for the next drop-in object (least recently used
#: first out); 0 frees an engine as soon as no object holds it. Read on every release.
cache_size = 2

_LOCK = threading.RLock()
_ENTRIES = {}  # key -> _Entry: every cached engine, held or idle
_IDLE = collections.OrderedDict()  # key -> _Entry with no holder, least recently used first
_STATS = {"builds": 0, "hits": 0}
_MAX_BATCH = 64


class _Entry:
    """One shared ``_native.Explainer`` and the drop-in objects holding it."""

    def __init__(self, key, model, kwargs):
        self.key = key
        self.model = model  # keeps id(model) in the key unique while the entry lives
        self.kwargs = kwargs
        self.explainer = None
        self.batch = 0
        self.refs = 0
        self.cached = True
        self.lock = threading.Lock()  # one call at a time: the explainer is not reentrant

    def explainer_for(self, n):
        """The explainer, rebuilt with a larger batch if `n` images need one (under `lock`)."""
        want = max(1, min(n, _MAX_BATCH))
        if self.explainer is None or self.batch < want:
            old, self.explainer = self.explainer, None
            if old is not None:
                old.close()
            self.explainer = _native.Explainer(self.model, batch=want, lazy=True, **self.kwargs)
            self.batch = want
            with _LOCK:
                _STATS["builds"] += 1
        return self.explainer

    def close(self):
        if self.explainer is not None:
            self.explainer.close()
            self.explainer = None
            self.batch = 0


def _options(kwargs):
    """A hashable key of explainer options (folds by their shapes and index bytes)."""

    def key(k, v):
        if k == "folds":
            return tuple(None if f is None else (tuple(f[0]), f[1].tobytes()) for f in v)
        return tuple(v) if isinstance(v, list) else v

    return tuple(sorted((k, key(k, v)) for k, v in kwargs.items()))


def _acquire(model, kwargs):
    """The shared entry for (model, engine options), with one more holder."""
    key = (id(model), _options(kwargs))
    with _LOCK:
        entry = _ENTRIES.get(key)
        if entry is None or entry.model is not model:
            entry = _Entry(key, model, kwargs)
            _ENTRIES[key] = entry
        else:
            _STATS["hits"] += 1
        _IDLE.pop(key, None)
        entry.refs += 1
        return entry


def _release(entry):
    """Drops one holder; the entry goes idle (kept up to `cache_size`) or is freed."""
    with _LOCK:
        entry.refs -= 1
        if entry.refs > 0:
            return
        if entry.cached:
            _IDLE[entry.key] = entry
            evicted = _trim(cache_size)
        else:
            evicted = [entry]
    for e in evicted:
        _free(e)


def _trim(keep):
    """Removes idle entries beyond `keep` from the cache (under `_LOCK`); returns them."""
    out = []
    while len(_IDLE) > max(0, keep):
        _, e = _IDLE.popitem(last=False)
        out.append(e)
    for e in out:
        e.cached = False
        if _ENTRIES.get(e.key) is e:
            del _ENTRIES[e.key]
    return out


def _free(entry):
    with entry.lock:
        entry.close()


def clear_cache():
    """Frees every idle engine now; engines held by open drop-in objects are freed when
    they are closed (and no longer shared with new objects)."""
    with _LOCK:
        evicted = _trim(0)
        for e in _ENTRIES.values():
            e.cached = False
        _ENTRIES.clear()
    for e in evicted:
        _free(e)


def cache_info():
    """Engine cache counters: ``builds`` (engines built), ``hits`` (objects that found a
    shared engine), ``entries`` (engines cached, held or idle), ``idle``."""
    with _LOCK:
        return {**_STATS, "entries": len(_ENTRIES), "idle": len(_IDLE)}


# ---- CAMs ---------------------------------------------------------------------------------


class BaseCAM:
    """pytorch-grad-cam's BaseCAM contract on the gradcam_wgpu engine."""

    _method = "gradcam"
    # How several target layers' maps are fused (RefineCAM multiplies them).
    _fuse = "mean"

    def __init__(
        self,
        model,
        target_layers,
        reshape_transform=None,
        compute_input_gradient=False,
        uses_gradients=True,
        tta_transforms=None,
        detach=True,
        **kwargs,
    ):
        ablation_layer = kwargs.pop("ablation_layer", None)
        layer_kind = type(ablation_layer).__name__ if ablation_layer is not None else None
        if layer_kind not in (None, "AblationLayer", "AblationLayerVit"):
            raise NotImplementedError(
                f"ablation_layer {layer_kind}: gradcam_wgpu ablates channels as "
                "pytorch-grad-cam's AblationLayer and AblationLayerVit do"
            )
        if layer_kind == "AblationLayerVit" and reshape_transform is None:
            # pgc's AblationLayerVit would ablate the last axis of an [N, C, H, W] layer
            raise NotImplementedError(
                "AblationLayerVit without a reshape_transform: gradcam_wgpu ablates the "
                "channels of token layers folded by a reshape_transform"
            )
        ratio = kwargs.pop("ratio_channels_to_ablate", 1.0)
        if ratio != 1.0:
            raise NotImplementedError(
                f"ratio_channels_to_ablate={ratio}: gradcam_wgpu ablates every channel (1.0)"
            )
        self.ablation_layer = ablation_layer
        # None: aug_smooth=True runs the engine's built-in (pgc's default) augmentation
        self.tta_transforms = tta_transforms
        self.model = model
        self.target_layers = list(target_layers) if target_layers is not None else []
        self.reshape_transform = reshape_transform
        self.batch_size = kwargs.pop("batch_size", 32)
        self.outputs = None
        self._torch = _is_torch_module(model)
        if self._torch:
            self.model.eval()
            self._names = _layer_names(model, self.target_layers)
        elif isinstance(model, _native.Model):
            self._names = [str(layer) for layer in self.target_layers]
        else:
            raise TypeError(
                f"model: expected a torch.nn.Module or gradcam_wgpu.Model, got {type(model).__name__}"
            )
        if not self._names and self._method != "fullgrad":
            raise ValueError("target_layers is empty")
        # the shared engines this object holds, by engine options
        self._held = {}
        # reshape_transform: (C, H, W) -> the engine's folds of the target layers
        self._folds = {}

    def _entry(self, model, shape, aug_smooth, eigen_smooth, score="logit", folds=None):
        """The shared engine entry for this call's options (held until `close`)."""
        kwargs = {
            "layers": [] if self._method == "fullgrad" else list(self._names),
            "method": self._method,
            "score": score,
            "size": tuple(shape[1:]),
            "eigen_smooth": bool(eigen_smooth),
            "aug_smooth": bool(aug_smooth),
        }
        if self._method in ("scorecam", "ablationcam") and self.batch_size is not None:
            kwargs["probe_batch"] = max(1, int(self.batch_size))
        if self._method == "kpca-cam" and self.gamma is not None:
            kwargs["kpca_gamma"] = float(self.gamma)
        if self._fuse != "mean":
            kwargs["fuse"] = self._fuse
        if folds is not None:
            kwargs["folds"] = folds
        opts = _options(kwargs)
        held = self._held.get(opts)
        if held is not None and held.model is model:
            return held
        entry = _acquire(model, kwargs)
        self._held[opts] = entry
        if held is not None:  # a re-exported model (new weights): the old engine is unused
            _release(held)
        return entry

    def forward(self, input_tensor, targets=None, eigen_smooth=False, aug_smooth=False):
        x = _to_numpy(input_tensor)
        n, c, h, w = x.shape
        shape = (c, h, w)
        model = _export(self.model, shape) if self._torch else self.model
        # EigenCAM, FEM and KPCA-CAM weigh no target: pytorch-grad-cam takes any target and
        # ignores it.
        no_target = ("eigencam", "fem", "kpca-cam")
        per_image = None if self._method in no_target else _targets(targets, n)
        folds = None
        if self.reshape_transform is not None and self._method != "fullgrad":
            folds = self._folds.get(shape)
            if folds is None:
                folds = _transform_folds(self, model, input_tensor, shape)
                self._folds[shape] = folds
        maps = np.empty((n, h, w), np.float32)
        logits = None
        # One engine call per score; images keep their places.
        groups = {}
        for i, (score, _) in enumerate(per_image or []):
            groups.setdefault(score, []).append(i)
        for score, idx in groups.items() or [("logit", None)]:
            entry = self._entry(model, shape, aug_smooth, eigen_smooth, score, folds)
            with entry.lock:
                ex = entry.explainer_for(n if idx is None else len(idx))
                if idx is None:
                    res = ex(x)
                elif len(idx) == n:
                    res = ex(x, classes=[c for _, c in per_image])
                else:
                    sub = np.ascontiguousarray(x[idx])
                    res = ex(sub, classes=[per_image[i][1] for i in idx])
            if logits is None:
                logits = np.empty((n, res.logits.shape[1]), np.float32)
            sel = slice(None) if idx is None else idx
            maps[sel] = res.maps[:, 0]
            logits[sel] = res.logits
        self.outputs = logits
        if self._torch:
            import torch

            self.outputs = torch.from_numpy(logits).to(_device(input_tensor))
        return maps

    def forward_augmentation_smoothing(self, input_tensor, targets=None, eigen_smooth=False):
        """pytorch-grad-cam's loop over ``tta_transforms``: augment the input, explain it,
        de-augment the ``[N, 1, H, W]`` map, average over transforms (not renormalised)."""
        try:
            import torch
        except ImportError as e:
            raise ImportError(
                "tta_transforms needs torch (ttach transforms work on torch tensors); "
                "install torch, or use aug_smooth=True without tta_transforms"
            ) from e
        if not isinstance(input_tensor, torch.Tensor):
            input_tensor = torch.from_numpy(_to_numpy(input_tensor).copy())
        cams = []
        for transform in self.tta_transforms:
            augmented = transform.augment_image(input_tensor)
            cam = self.forward(augmented, targets, eigen_smooth=eigen_smooth)
            cam = transform.deaugment_mask(torch.from_numpy(cam[:, None, :, :]))
            cams.append(cam.numpy()[:, 0, :, :])
        return np.mean(np.float32(cams), axis=0)

    def __call__(self, input_tensor, targets=None, aug_smooth=False, eigen_smooth=False):
        if aug_smooth is True and self.tta_transforms is not None:
            return self.forward_augmentation_smoothing(input_tensor, targets, eigen_smooth)
        return self.forward(input_tensor, targets, eigen_smooth=eigen_smooth, aug_smooth=aug_smooth)

    def close(self):
        """Drops this object's hold on its engines (also on leaving a ``with`` block); the
        most recently released are kept idle for new objects (see :func:`clear_cache`)."""
        held = list(getattr(self, "_held", {}).values())
        self._held = {}
        for entry in held:
            _release(entry)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, exc_tb):
        self.close()
        # As pytorch-grad-cam: an IndexError in the block is reported and swallowed.
        if isinstance(exc_value, IndexError):
            print(f"An exception occurred in CAM with block: {exc_type}. Message: {exc_value}")
            return True


# ---- reshape_transform ----------------------------------------------------------------------


def _transform_folds(cam, model, input_tensor, shape):
    """The engine's fold of each target layer under ``cam.reshape_transform``.

    The transform is probed with element indices: a layer output of shape S becomes
    ``arange(prod(S)).reshape(1, *S)`` (float64), and the transformed [1, C, h, w] values say
    which element each folded element reads. A second probe, two images of shuffled labels,
    checks that the transform moves values without computing and keeps the images apart.
    S is torch's output shape of the layer (one forward pass with hooks, on the first
    image), whose row-major order is the exported ONNX value's and so the engine's
    (docs/architecture.md, "Shapes"); for a :class:`gradcam_wgpu.Model` it is
    ``Model.layer_shape``, and the probe is a numpy array.
    """
    h, w = shape[1:]
    engine = [model.layer_shape(name, (h, w)) for name in cam._names]
    if not cam._torch:
        return [_fold(cam.reshape_transform, s, name, False) for s, name in zip(engine, cam._names)]
    torch_shapes = _torch_layer_shapes(cam.model, cam._names, input_tensor)
    folds = []
    for name, s, ts in zip(cam._names, engine, torch_shapes):
        if ts is None or int(np.prod(ts)) != int(np.prod(s)):
            raise NotImplementedError(
                f"reshape_transform on layer `{name}`: its torch output {ts} does not match "
                f"the exported layer's shape {s}"
            )
        folds.append(_fold(cam.reshape_transform, ts, name, True))
    return folds


def _torch_layer_shapes(model, names, input_tensor):
    """Torch's per-image output shape of each named module, from one image."""
    import torch

    x = input_tensor
    if not hasattr(x, "detach"):
        x = torch.from_numpy(_to_numpy(x))
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    x = x[:1].detach().to(device=device, dtype=torch.float32)
    shapes = {}

    def hook(i):
        def record(module, inputs, output):
            out = output[0] if isinstance(output, (tuple, list)) else output
            shapes.setdefault(i, tuple(out.shape[1:]))

        return record

    handles = [model.get_submodule(n).register_forward_hook(hook(i)) for i, n in enumerate(names)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return [shapes.get(i) for i in range(len(names))]


def _fold(transform, shape, name, torch_probe):
    """``((C, h, w), uint32 index)`` of ``transform`` on a layer output of per-image ``shape``."""
    numel = int(np.prod(shape))
    # The second probe: two images of shuffled element labels, so that arithmetic which
    # happens to give indices on the first (a mean over channels of arange) disagrees.
    shuffled = np.random.default_rng(0).permutation(2 * numel).astype(np.float64)

    def probe(n):
        x = np.arange(numel, dtype=np.float64) if n == 1 else shuffled
        x = x.reshape(n, *shape)
        if torch_probe:
            import torch

            y = transform(torch.from_numpy(x))
            return y.detach().cpu().numpy() if hasattr(y, "detach") else np.asarray(y)
        return np.asarray(transform(x))

    def unsupported(why):
        return NotImplementedError(
            f"reshape_transform on layer `{name}`: {why}; gradcam_wgpu supports transforms "
            "that only rearrange a layer's elements (slice, reshape, permute, transpose)"
        )

    try:
        one, two = probe(1), probe(2)
    except Exception as e:
        raise unsupported(f"it failed on a probe of shape {(1, *shape)}: {e}") from e
    if one.ndim != 4 or one.shape[0] != 1 or two.shape != (2, *one.shape[1:]) or one.size == 0:
        raise unsupported(f"expected an [n, C, h, w] result, got {tuple(one.shape)}")
    idx = one[0]
    if (
        not np.all(np.isfinite(idx))
        or np.any(idx != np.round(idx))
        or idx.min() < 0
        or idx.max() >= numel
    ):
        raise unsupported("its values are not the layer's elements (it computes new ones)")
    if np.unique(idx).size != idx.size:
        raise unsupported("it repeats elements")
    flat = idx.reshape(-1).astype(np.int64)
    want = shuffled.reshape(2, numel)[:, flat].reshape(two.shape)
    if not np.array_equal(two, want):
        raise unsupported("it computes new values or mixes the images of a batch")
    return tuple(int(d) for d in idx.shape), flat.astype(np.uint32)


def _device(t):
    return getattr(t, "device", "cpu")


def _cam(name, method, doc):
    cls = type(name, (BaseCAM,), {"_method": method, "__doc__": doc})
    cls.__module__ = __name__
    return cls


GradCAM = _cam("GradCAM", "gradcam", "Grad-CAM: channel weights are the mean gradients.")
HiResCAM = _cam("HiResCAM", "hirescam", "HiResCAM: gradients times activations.")
GradCAMElementWise = _cam(
    "GradCAMElementWise", "gradcam-elementwise", "ReLU(gradients x activations), summed."
)
GradCAMPlusPlus = _cam("GradCAMPlusPlus", "gradcam++", "Grad-CAM++.")
XGradCAM = _cam("XGradCAM", "xgradcam", "XGrad-CAM.")
LayerCAM = _cam("LayerCAM", "layercam", "LayerCAM: ReLU(gradients) x activations.")
EigenCAM = _cam("EigenCAM", "eigencam", "Eigen-CAM: the activations' first principal component.")
EigenGradCAM = _cam("EigenGradCAM", "eigengradcam", "The first principal component of grads x acts.")
ScoreCAM = _cam("ScoreCAM", "scorecam", "Score-CAM.")
AblationCAM = _cam("AblationCAM", "ablationcam", "Ablation-CAM.")
FullGrad = _cam("FullGrad", "fullgrad", "FullGrad (target_layers is ignored).")


SegEigenCAM = _cam(
    "SegEigenCAM", "seg-eigen-cam", "Seg-Eigen-CAM: first PC of |gradients| x activations."
)
ShapleyCAM = _cam(
    "ShapleyCAM",
    "shapley-cam",
    "ShapleyCAM: weights = mean of gradients - 1/2 Hessian x activations (piecewise-linear "
    "heads: the engine refuses others).",
)


class FEM(BaseCAM):
    """FEM: weights = the share of positions above mean + k std of each channel (k = 2)."""

    _method = "fem"

    def __init__(self, model, target_layers, reshape_transform=None, k=2):
        if k != 2:
            raise NotImplementedError(f"FEM(k={k}): gradcam_wgpu uses pytorch-grad-cam's k = 2")
        super().__init__(model, target_layers, reshape_transform)
        self.k = k


class KPCA_CAM(BaseCAM):
    """KPCA-CAM: the activations' first kernel-PCA component (sklearn's KernelPCA with the
    sigmoid kernel tanh(gamma <x, y> + 1); gamma None is 1 / channels)."""

    _method = "kpca-cam"

    def __init__(self, model, target_layers, reshape_transform=None, kernel="sigmoid", gamma=None):
        if kernel != "sigmoid":
            raise NotImplementedError(
                f"KPCA_CAM(kernel={kernel!r}): gradcam_wgpu has pytorch-grad-cam's default, sigmoid"
            )
        if gamma is not None and not float(gamma) > 0:
            raise ValueError(f"KPCA_CAM(gamma={gamma}): gamma must be positive")
        super().__init__(model, target_layers, reshape_transform)
        self.kernel = kernel
        self.gamma = gamma


class RefineCAM(BaseCAM):
    """RefineCAM: the base method's map at each target layer (rescaled to [0, 1]), multiplied
    and rescaled, as pytorch-grad-cam's refine_cam. `base_method` is one of this module's
    classes or pytorch-grad-cam's class of the same name (default Grad-CAM++)."""

    _fuse = "product"

    def __init__(self, model, target_layers, reshape_transform=None, base_method=None, **kwargs):
        name = "GradCAMPlusPlus" if base_method is None else base_method.__name__
        ours = globals().get(name)
        method = getattr(ours, "_method", None) if isinstance(ours, type) else None
        if method is None or method in ("fullgrad", "ablationcam") or kwargs:
            raise NotImplementedError(
                f"RefineCAM(base_method={name}{', ' + ', '.join(kwargs) if kwargs else ''}): "
                "gradcam_wgpu fuses the per-layer maps of its own CAM methods, without options"
            )
        super().__init__(model, target_layers, reshape_transform)
        self._method = method
        self.base_method = base_method


def sobel_cam(img):
    """pytorch-grad-cam's sobel_cam on an RGB uint8 image [H, W, 3]: uint8 [H, W] edges,
    OpenCV-exact without OpenCV (cv2 5.0's RGB2GRAY, 3x3 Sobel with reflect-101 borders,
    convertScaleAbs, addWeighted(0.5, 0.5)). On the host: the engine's `sobel-cam` method
    computes the same map on the device, min-max normalised."""
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"sobel_cam takes an RGB uint8 image [H, W, 3], not {img.dtype} {img.shape}")
    r, g, b = (img[..., i].astype(np.int64) for i in range(3))
    gray = (9798 * r + 19235 * g + 3735 * b + (1 << 14)) >> 15
    h, w = gray.shape
    # BORDER_REFLECT_101 (a side of one pixel reflects onto itself).
    ys = np.abs(np.arange(-1, h + 1))
    ys = np.where(ys >= h, 2 * h - 2 - ys, ys) if h > 1 else np.zeros(h + 2, np.int64)
    xs = np.abs(np.arange(-1, w + 1))
    xs = np.where(xs >= w, 2 * w - 2 - xs, xs) if w > 1 else np.zeros(w + 2, np.int64)
    p = gray[ys][:, xs]
    gx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    gy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    v = np.minimum(np.abs(gx), 255) + np.minimum(np.abs(gy), 255)
    return np.round(v / 2).astype(np.uint8)  # numpy rounds half to even, as OpenCV does
