"""The native API against pytorch-grad-cam 1.5.7's maps in the committed fixtures."""

import numpy as np
import pytest

import gradcam_wgpu as gw
from conftest import FIXTURES, Fixture, map_error

TOL = 1e-3

# fixture key -> (method, options)
CASES = {
    "cam.gradcam": ("gradcam", {}),
    "cam.hirescam": ("hirescam", {}),
    "cam.gradcam-elementwise": ("gradcam-elementwise", {}),
    "cam.gradcam++": ("gradcam++", {}),
    "cam.xgradcam": ("xgradcam", {}),
    "cam.layercam": ("layercam", {}),
    "cam.eigencam": ("eigencam", {}),
    "cam.eigengradcam": ("eigengradcam", {}),
    "cam.scorecam": ("scorecam", {}),
    "cam.ablationcam": ("ablationcam", {}),
    "cam.fullgrad": ("fullgrad", {}),
    "cam.gradcam.eigen_smooth": ("gradcam", {"eigen_smooth": True}),
    "cam.hirescam.eigen_smooth": ("hirescam", {"eigen_smooth": True}),
    "cam.gradcam.aug_smooth": ("gradcam", {"aug_smooth": True}),
}


def explainer(fx, method, layers=None, **kw):
    return gw.Explainer(
        fx.model, layers=layers or [fx.meta["layer"]], method=method, size=fx.size, batch=2, **kw
    )


@pytest.mark.parametrize("key", sorted(CASES))
def test_methods_float_input(methods_fixture, key):
    fx = methods_fixture
    method, opts = CASES[key]
    res = explainer(fx, method, **opts)(fx["input"], classes=fx.targets)
    assert res.maps.shape == (2, 2, *fx.size) and res.maps.dtype == np.float32
    assert (res.classes == fx.targets).all()
    err = map_error(res.maps, fx, key)
    print(f"{key}: {err:.2e}")
    assert err < TOL


@pytest.mark.parametrize("key", ["cam.gradcam", "cam.scorecam", "cam.gradcam.aug_smooth"])
def test_methods_uint8_input(methods_fixture, key):
    """RGB uint8 images are normalised on the device with the model's mean and std."""
    fx = methods_fixture
    method, opts = CASES[key]
    res = explainer(fx, method, overlays=True, **opts)(fx["input_u8"], classes=fx.targets)
    assert map_error(res.maps, fx, key) < TOL
    assert res.overlays.shape == (2, 2, *fx.size, 3) and res.overlays.dtype == np.uint8
    np.testing.assert_allclose(res.logits, fx["logits"], rtol=1e-3, atol=1e-3)


def test_multilayer(methods_fixture):
    import json

    fx = methods_fixture
    layers = json.loads(fx.meta["multilayer"])
    for key, fuse in (("cam.gradcam.multilayer", "mean"), ("cam.gradcam.multilayer_max", "max")):
        res = explainer(fx, "gradcam", layers=layers, fuse=fuse)(fx["input"], classes=fx.targets)
        assert map_error(res.maps, fx, key) < TOL


def test_targets(methods_fixture):
    fx = methods_fixture
    x = fx["input"]
    top = explainer(fx, "gradcam", targets="top2")(x)
    order = np.argsort(-fx["logits"], axis=1)[:, :2]
    assert (top.classes == order).all()
    one = explainer(fx, "gradcam", targets=3)(x)
    assert (one.classes == 3).all() and one.maps.shape == (2, 1, *fx.size)
    many = explainer(fx, "gradcam", targets=[1, 4])(x)
    assert (many.classes == [[1, 4], [1, 4]]).all()
    every = explainer(fx, "gradcam", targets="all")(x)
    assert every.maps.shape[1] == fx["logits"].shape[1]
    # classes= overrides per call: one class per image, or a list per image
    ex = explainer(fx, "gradcam")
    r = ex(x, classes=[5, 2])
    assert (r.classes[:, 0] == [5, 2]).all()
    assert ex(x).classes.shape == (2, 1)


def test_uint8_any_size_is_resized(methods_fixture):
    fx = methods_fixture
    big = np.repeat(np.repeat(fx["input_u8"], 2, axis=1), 3, axis=2)
    res = explainer(fx, "gradcam")(np.ascontiguousarray(big))
    assert res.maps.shape == (2, 1, *fx.size)


def test_noncontiguous_input(methods_fixture):
    fx = methods_fixture
    x = np.asfortranarray(fx["input"])
    res = explainer(fx, "gradcam")(x, classes=fx.targets)
    assert map_error(res.maps, fx, "cam.gradcam") < TOL


def test_errors(methods_fixture):
    fx = methods_fixture
    with pytest.raises(ValueError, match="unknown layer"):
        explainer(fx, "gradcam", layers=["nope"])
    with pytest.raises(ValueError, match="method"):
        explainer(fx, "no-such-method")
    ex = explainer(fx, "gradcam")
    with pytest.raises(ValueError, match=r"\[N, C, 32, 48\]"):
        ex(np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="channels"):
        ex(np.zeros((1, 4, *fx.size), np.float32))
    with pytest.raises(ValueError):
        ex(np.zeros((1, 3, *fx.size), np.int32))
    with pytest.raises(ValueError, match="out of range"):
        ex(fx["input"], classes=[0, 10_000])
    with pytest.raises(ValueError, match="non-finite"):
        ex(np.full((1, 3, *fx.size), np.nan, np.float32))
    with pytest.raises(gw.Error) as e:
        gw.Model.load(FIXTURES / "no-such-file.safetensors")
    assert isinstance(e.value, gw.ModelError) and "no-such-file" in str(e.value)
    assert issubclass(gw.GpuError, gw.Error) and not issubclass(gw.Error, ValueError)


def test_close_and_reuse(methods_fixture):
    fx = methods_fixture
    ex = explainer(fx, "gradcam")
    a = ex(fx["input"]).maps
    ex.close()
    b = ex(fx["input"]).maps
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case", ["mobilenet_v3_small", "convnext", "densenet"])
def test_onnx_models(case):
    """torch.onnx exports (TorchScript): layers are module paths."""
    fx = Fixture(FIXTURES / "onnx" / f"{case}.safetensors")
    model = gw.Model.load(FIXTURES / "onnx" / f"{case}.onnx")
    h, w = fx["input"].shape[2:]
    assert model.input_size == (h, w)
    for method in ("gradcam", "gradcam++", "scorecam", "eigencam"):
        ex = gw.Explainer(model, layers=[fx.meta["layer"]], method=method, batch=2)
        res = ex(fx["input"], classes=fx.targets)
        assert map_error(res.maps, fx, f"cam.{method}") < TOL, method


def test_bundled():
    m = gw.Model.bundled()
    assert m.default_layer in m.layers and m.input_channels == 3
    res = gw.Explainer(m)(np.zeros((1, *m.input_size, 3), np.uint8))
    assert res.maps.shape == (1, 1, *m.input_size)
    assert "gradcam" in gw.METHODS and len(gw.METHODS) >= 13
