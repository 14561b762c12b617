"""pytorch-grad-cam's ``reshape_transform`` through the engine's folded layers, without
torch: numpy transforms on the bundled model, and the native ``folds=`` and
``Model.layer_shape``."""

import numpy as np
import pytest

import gradcam_wgpu as gw
from gradcam_wgpu import compat

SIZE = (48, 40)


@pytest.fixture(scope="module")
def model():
    return gw.Model.bundled()


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).standard_normal((2, 3, *SIZE)).astype(np.float32)


def layer(model):
    """A layer with a spatial map of a few cells at SIZE."""
    for name in reversed(model.layers):
        c, h, w = model.layer_shape(name, SIZE)
        if c > 1 and h >= 3 and w >= 3 and h != w:
            return name
    raise AssertionError("no spatial layer")


def maps(model, x, cls=compat.GradCAM, transform=None, name=None):
    with cls(model=model, target_layers=[name or layer(model)], reshape_transform=transform) as cam:
        return cam(input_tensor=x, targets=[compat.ClassifierOutputTarget(c) for c in (3, 7)])


def test_layer_shape(model):
    name = model.default_layer
    assert len(model.layer_shape(name)) == 3
    assert model.layer_shape(name, SIZE) != model.layer_shape(name, (96, 96))
    with pytest.raises(ValueError, match="nope"):
        model.layer_shape("nope", SIZE)


@pytest.mark.parametrize("cls", [compat.GradCAM, compat.LayerCAM, compat.ScoreCAM])
def test_rearranging_transforms(model, x, cls):
    plain = maps(model, x, cls)
    assert np.array_equal(maps(model, x, cls, lambda t: t), plain)
    # Channels reversed: the same sum in another order.
    assert np.abs(maps(model, x, cls, lambda t: t[:, ::-1]) - plain).max() < 1e-5
    # Rows reversed: the map flipped (the upsampling is symmetric); Score-CAM's masks
    # flip too, so its scores change (as in pytorch-grad-cam).
    if cls is not compat.ScoreCAM:
        flipped = maps(model, x, cls, lambda t: t[:, :, ::-1])
        assert np.abs(flipped - plain[:, ::-1]).max() < 1e-4
    # To channels-last and back: an identity made of two transposes.
    back = maps(model, x, cls, lambda t: t.transpose(0, 2, 3, 1).transpose(0, 3, 1, 2))
    assert np.array_equal(back, plain)


def test_transforms_that_compute_are_refused(model, x):
    name = layer(model)
    for transform, why in [
        (lambda t: t * 2, "not the layer's elements"),
        (lambda t: t.mean(axis=1, keepdims=True), "computes new values"),
        (lambda t: t[:, [0, 0]], "repeats elements"),
        (lambda t: t[::-1], "mixes the images"),
        (lambda t: np.roll(t, 1, axis=0), "mixes the images"),
        (lambda t: t[:, 0], "expected an \\[n, C, h, w\\] result"),
        (lambda t: t.nope(), "it failed on a probe"),
    ]:
        with pytest.raises(NotImplementedError, match=f"layer `{name}`: .*{why}"):
            maps(model, x, transform=transform, name=name)
    # AblationCAM ablates through the fold (as pgc's AblationLayerVit): an identity is plain.
    plain = maps(model, x, compat.AblationCAM)
    assert np.abs(maps(model, x, compat.AblationCAM, lambda t: t, name) - plain).max() < 1e-6


def test_native_folds(model, x):
    name = layer(model)
    c, h, w = model.layer_shape(name, SIZE)
    ident = np.arange(c * h * w, dtype=np.uint32)
    run = lambda folds: gw.Explainer(model, [name], size=SIZE, targets=3, folds=folds)(x).maps
    assert np.array_equal(run([((c, h, w), ident)]), run(None))
    assert np.array_equal(run([None]), run(None))
    with pytest.raises(ValueError, match=f"layer `{name}`: fold .*appears twice"):
        run([((c, h, w), np.zeros(c * h * w, dtype=np.uint32))])
    with pytest.raises(ValueError, match="folds: expected"):
        run(["nope"])
