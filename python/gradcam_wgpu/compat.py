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
"""

from __future__ import annotations

import os
import tempfile
import warnings
import weakref

import numpy as np

from . import _native

__all__ = [
    "AblationCAM",
    "BinaryClassifierOutputTarget",
    "ClassifierOutputSoftmaxTarget",
    "ClassifierOutputTarget",
    "EigenCAM",
    "EigenGradCAM",
    "FullGrad",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "HiResCAM",
    "LayerCAM",
    "RawScoresOutputTarget",
    "ScoreCAM",
    "SoftmaxOutputTarget",
    "XGradCAM",
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
    """The softmax probability of ``category`` (not supported by the engine yet)."""

    def __call__(self, model_output):
        import torch

        if len(model_output.shape) == 1:
            return torch.softmax(model_output, dim=-1)[self.category]
        return torch.softmax(model_output, dim=-1)[:, self.category]


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


def _classes(targets, n):
    """pytorch-grad-cam targets -> one class per image (None: the top class)."""
    if targets is None:
        return None
    targets = list(targets)
    if len(targets) != n:
        raise ValueError(f"{len(targets)} targets for {n} images: give one target per image")
    out = []
    for t in targets:
        name = type(t).__name__
        if name == "ClassifierOutputTarget" and hasattr(t, "category"):
            c = int(t.category)
            if c < 0:
                raise ValueError(f"ClassifierOutputTarget({c}): negative classes are not supported")
            out.append(c)
        else:
            raise NotImplementedError(
                f"target {name}: gradcam_wgpu explains classifier logits "
                "(ClassifierOutputTarget, or targets=None for the top class)"
            )
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


# ---- CAMs ---------------------------------------------------------------------------------


class BaseCAM:
    """pytorch-grad-cam's BaseCAM contract on the gradcam_wgpu engine."""

    _method = "gradcam"

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
        if tta_transforms is not None:
            raise NotImplementedError(
                "tta_transforms: only pytorch-grad-cam's default augmentation (aug_smooth=True)"
            )
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
        # (C, H, W, aug_smooth, eigen_smooth) -> Explainer
        self._explainers = {}
        # reshape_transform: (C, H, W) -> the engine's folds of the target layers
        self._folds = {}

    def _explainer(self, model, shape, n, aug_smooth, eigen_smooth, folds=None):
        key = (shape, aug_smooth, eigen_smooth)
        ex = self._explainers.get(key)
        if ex is not None and ex[0] is model and ex[1].batch_size >= min(n, 64):
            return ex[1]
        layers = [] if self._method == "fullgrad" else self._names
        explainer = _native.Explainer(
            model,
            layers=layers,
            method=self._method,
            size=shape[1:],
            batch=max(1, min(n, 64)),
            eigen_smooth=eigen_smooth,
            aug_smooth=aug_smooth,
            folds=None if self._method == "fullgrad" else folds,
        )
        self._explainers[key] = (model, explainer)
        return explainer

    def forward(self, input_tensor, targets=None, eigen_smooth=False, aug_smooth=False):
        x = _to_numpy(input_tensor)
        n, c, h, w = x.shape
        shape = (c, h, w)
        model = _export(self.model, shape) if self._torch else self.model
        classes = _classes(targets, n)
        folds = None
        if self.reshape_transform is not None and self._method != "fullgrad":
            folds = self._folds.get(shape)
            if folds is None:
                folds = _transform_folds(self, model, input_tensor, shape)
                self._folds[shape] = folds
        ex = self._explainer(model, shape, n, aug_smooth, eigen_smooth, folds)
        res = ex(x, classes=classes)
        self.outputs = res.logits
        if self._torch:
            import torch

            self.outputs = torch.from_numpy(res.logits).to(_device(input_tensor))
        return res.maps[:, 0]

    def __call__(self, input_tensor, targets=None, aug_smooth=False, eigen_smooth=False):
        return self.forward(input_tensor, targets, eigen_smooth=eigen_smooth, aug_smooth=aug_smooth)

    def close(self):
        """Releases the GPU buffers (also on leaving a ``with`` block)."""
        for _, ex in self._explainers.values():
            ex.close()
        self._explainers.clear()

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
