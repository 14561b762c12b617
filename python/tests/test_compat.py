"""The pytorch-grad-cam drop-in: against the committed fixtures (no torch), and against
pytorch-grad-cam live where torch and grad-cam are installed."""

import json

import numpy as np
import pytest

import gradcam_wgpu as gw
from gradcam_wgpu import compat
from conftest import map_error

TOL = 1e-3

CLASSES = {
    "GradCAM": "cam.gradcam",
    "HiResCAM": "cam.hirescam",
    "GradCAMElementWise": "cam.gradcam-elementwise",
    "GradCAMPlusPlus": "cam.gradcam++",
    "XGradCAM": "cam.xgradcam",
    "LayerCAM": "cam.layercam",
    "EigenCAM": "cam.eigencam",
    "EigenGradCAM": "cam.eigengradcam",
    "ScoreCAM": "cam.scorecam",
    "AblationCAM": "cam.ablationcam",
    "FullGrad": "cam.fullgrad",
}


def per_target(fx, cls, layers, column, **call):
    """One pgc call per target column: pgc explains one target per image."""
    targets = [compat.ClassifierOutputTarget(int(c)) for c in fx.targets[:, column]]
    with cls(model=fx.model, target_layers=layers) as cam:
        maps = cam(input_tensor=fx["input"], targets=targets, **call)
    assert maps.shape == (2, *fx.size) and maps.dtype == np.float32
    return maps


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_fixture_methods(methods_fixture, name):
    fx = methods_fixture
    cls = getattr(compat, name)
    for column in (0, 1):
        maps = per_target(fx, cls, [fx.meta["layer"]], column)
        assert map_error(maps[:, None], fx, CLASSES[name], rows=[column]) < TOL, (name, column)


def test_fixture_new_methods(new_methods_fixture):
    fx = new_methods_fixture
    layers = [fx.meta["layer"]] + json.loads(fx.meta["layers"])
    classes = [
        ("cam.fem", compat.FEM),
        ("cam.seg-eigen-cam", compat.SegEigenCAM),
        ("cam.kpca-cam", compat.KPCA_CAM),
    ]
    for key, cls in classes:
        for i, layer in enumerate(layers):
            with cls(model=fx.model, target_layers=[layer]) as cam:
                for column in (0, 1):
                    maps = per_target_maps(cam, fx, column)
                    want = key if i == 0 else f"{key}.{layer}"
                    assert map_error(maps[:, None], fx, want, rows=[column]) < TOL, (want, column)
    with pytest.raises(NotImplementedError, match="k = 2"):
        compat.FEM(model=fx.model, target_layers=layers[:1], k=3)
    gamma = float(fx.meta["kpca_gamma"])
    with compat.KPCA_CAM(model=fx.model, target_layers=layers[:1], gamma=gamma) as cam:
        for column in (0, 1):
            maps = per_target_maps(cam, fx, column)
            assert map_error(maps[:, None], fx, "cam.kpca-cam.gamma", rows=[column]) < TOL
    with pytest.raises(NotImplementedError, match="sigmoid"):
        compat.KPCA_CAM(model=fx.model, target_layers=layers[:1], kernel="rbf")


def test_fixture_refine_cam(new_methods_fixture):
    """RefineCAM over several layers: Grad-CAM++ by default, any method as base_method."""
    fx = new_methods_fixture
    layers = json.loads(fx.meta["refine_layers"])
    for key, kw in [("cam.refine-cam", {}), ("cam.gradcam.product", {"base_method": compat.GradCAM})]:
        with compat.RefineCAM(model=fx.model, target_layers=layers, **kw) as cam:
            for column in (0, 1):
                maps = per_target_maps(cam, fx, column)
                assert map_error(maps[:, None], fx, key, rows=[column]) < TOL, (key, column)
    with pytest.raises(NotImplementedError, match="FullGrad"):
        compat.RefineCAM(model=fx.model, target_layers=layers, base_method=compat.FullGrad)


def test_sobel_cam(new_methods_fixture):
    """The drop-in's sobel_cam (host numpy) through scale_cam_image equals pgc's."""
    fx = new_methods_fixture
    for i, img in enumerate(fx["input_u8"]):
        edges = compat.sobel_cam(img)
        assert edges.dtype == np.uint8 and edges.shape == img.shape[:2]
        e = edges.astype(np.float64) - edges.min()
        e = e / (1e-7 + e.max())
        assert np.abs(e - fx["cam.sobel-cam"][i, 0]).max() < 1e-6
    with pytest.raises(ValueError, match="uint8"):
        compat.sobel_cam(np.zeros((4, 4, 3), np.float32))


def per_target_maps(cam, fx, column):
    targets = [compat.ClassifierOutputTarget(int(c)) for c in fx.targets[:, column]]
    return cam(input_tensor=fx["input"], targets=targets)


def test_fixture_options(methods_fixture):
    fx = methods_fixture
    layers = json.loads(fx.meta["multilayer"])
    for column in (0, 1):
        m = per_target(fx, compat.GradCAM, layers, column)
        assert map_error(m[:, None], fx, "cam.gradcam.multilayer", rows=[column]) < TOL
        m = per_target(fx, compat.GradCAM, [fx.meta["layer"]], column, aug_smooth=True)
        assert map_error(m[:, None], fx, "cam.gradcam.aug_smooth", rows=[column]) < TOL
        m = per_target(fx, compat.HiResCAM, [fx.meta["layer"]], column, eigen_smooth=True)
        assert map_error(m[:, None], fx, "cam.hirescam.eigen_smooth", rows=[column]) < TOL


def test_fixture_top1_and_outputs(methods_fixture):
    fx = methods_fixture
    with compat.GradCAM(model=fx.model, target_layers=[fx.meta["layer"]]) as cam:
        top = cam(input_tensor=fx["input"], targets=None)
        np.testing.assert_allclose(cam.outputs, fx["logits"], rtol=1e-3, atol=1e-3)
        # reuse across calls: one image, then the batch again
        one = cam(input_tensor=fx["input"][:1])
    np.testing.assert_allclose(one, top[:1], atol=1e-5)
    best = [compat.ClassifierOutputTarget(int(c)) for c in fx["logits"].argmax(1)]
    with compat.GradCAM(model=fx.model, target_layers=[fx.meta["layer"]]) as cam:
        np.testing.assert_allclose(cam(fx["input"], best), top, atol=1e-6)


SCORE_CLASSES = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "layercam": "LayerCAM",
                 "scorecam": "ScoreCAM", "ablationcam": "AblationCAM"}
SCORE_TARGETS = {"softmax": compat.ClassifierOutputSoftmaxTarget,
                 "rest": compat.ClassifierOutputReST,
                 "binary": compat.BinaryClassifierOutputTarget}


@pytest.mark.parametrize("case", ["multiclass", "binary"])
def test_fixture_targets(score_fixtures, case):
    """pgc's softmax, ReST and binary targets, for gradient and perturbation methods."""
    fx = score_fixtures[case]
    keys = json.loads(fx.meta["keys"])
    assert len(keys) >= 5
    for key in keys:
        _, method, score = key.split(".")
        cls = getattr(compat, SCORE_CLASSES[method])
        with cls(model=fx.model, target_layers=[fx.meta["layer"]]) as cam:
            for column in (0, 1):
                targets = [SCORE_TARGETS[score](int(c)) for c in fx.targets[:, column]]
                maps = cam(input_tensor=fx["input"], targets=targets)
                assert map_error(maps[:, None], fx, key, rows=[column]) < TOL, (key, column)


def test_fixture_mixed_targets_keep_their_images(score_fixtures):
    """One softmax and one ReST target in a call: each image gets its own score's map."""
    fx = score_fixtures["multiclass"]
    t = fx.targets[:, 0]
    targets = [compat.ClassifierOutputSoftmaxTarget(int(t[0])), compat.ClassifierOutputReST(int(t[1]))]
    with compat.GradCAM(model=fx.model, target_layers=[fx.meta["layer"]]) as cam:
        maps = cam(input_tensor=fx["input"], targets=targets)
        assert cam.outputs.shape == fx["logits"].shape
        np.testing.assert_allclose(cam.outputs, fx["logits"], rtol=1e-3, atol=1e-4)
    assert np.abs(maps[0] - fx["cam.gradcam.softmax"][0, 0]).max() < TOL
    assert np.abs(maps[1] - fx["cam.gradcam.rest"][1, 0]).max() < TOL


def test_unsupported_targets(methods_fixture, score_fixtures):
    fx = methods_fixture
    with compat.GradCAM(model=fx.model, target_layers=[fx.meta["layer"]]) as cam:
        with pytest.raises(NotImplementedError, match="RawScoresOutputTarget"):
            cam(fx["input"], [compat.RawScoresOutputTarget()] * 2)
        with pytest.raises(ValueError, match="one target per image"):
            cam(fx["input"], [compat.ClassifierOutputTarget(1)])
        with pytest.raises(ValueError, match="--score binary"):
            cam(fx["input"], [compat.BinaryClassifierOutputTarget(1)] * 2)
    # EigenCAM weighs no target, so any target object goes, as in pgc.
    with compat.EigenCAM(model=fx.model, target_layers=[fx.meta["layer"]]) as cam:
        cam(fx["input"], [compat.RawScoresOutputTarget()] * 2)


def test_with_swallows_index_error_like_pgc(methods_fixture, capsys):
    fx = methods_fixture
    with compat.GradCAM(model=fx.model, target_layers=[fx.meta["layer"]]):
        raise IndexError("boom")
    assert "boom" in capsys.readouterr().out


# ---- shared engines, batch_size, tta_transforms, ablation_layer -----------------------------


@pytest.fixture
def fresh_cache():
    compat.clear_cache()
    size = compat.cache_size
    yield
    compat.cache_size = size
    compat.clear_cache()


def grad_cam(fx, x=None, cls=compat.GradCAM, **kw):
    targets = [compat.ClassifierOutputTarget(int(c)) for c in fx.targets[:, 0]]
    x = fx["input"] if x is None else x
    with cls(model=fx.model, target_layers=[fx.meta["layer"]], **kw) as cam:
        return cam(x, targets[: len(x)])


def test_engines_are_shared_across_objects(methods_fixture, fresh_cache):
    fx = methods_fixture
    start = compat.cache_info()
    first = grad_cam(fx)
    info = compat.cache_info()
    assert info["builds"] == start["builds"] + 1 and info["idle"] == 1
    for _ in range(3):  # pgc's README pattern: a new object per iteration
        np.testing.assert_array_equal(grad_cam(fx), first)
    info = compat.cache_info()
    assert info["builds"] == start["builds"] + 1, info
    assert info["hits"] == start["hits"] + 3 and info["entries"] == 1 and info["idle"] == 1
    # two open objects hold one engine; it goes idle when both are closed
    a = compat.GradCAM(model=fx.model, target_layers=[fx.meta["layer"]])
    b = compat.GradCAM(model=fx.model, target_layers=[fx.meta["layer"]])
    np.testing.assert_array_equal(a(fx["input"]), b(fx["input"]))
    assert compat.cache_info()["idle"] == 0 and compat.cache_info()["entries"] == 1
    a.close()
    assert compat.cache_info()["idle"] == 0
    b.close()
    info = compat.cache_info()
    assert info["idle"] == 1 and info["builds"] == start["builds"] + 1
    compat.clear_cache()
    assert compat.cache_info()["entries"] == 0 and compat.cache_info()["idle"] == 0


def test_cache_is_bounded(methods_fixture, fresh_cache):
    fx = methods_fixture
    for cls in (compat.GradCAM, compat.HiResCAM, compat.LayerCAM):
        grad_cam(fx, cls=cls)
    assert compat.cache_info()["idle"] == 2 and compat.cache_info()["entries"] == 2
    builds = compat.cache_info()["builds"]
    grad_cam(fx, cls=compat.GradCAM)  # evicted: least recently used
    assert compat.cache_info()["builds"] == builds + 1
    grad_cam(fx, cls=compat.LayerCAM)  # kept
    assert compat.cache_info()["builds"] == builds + 1
    compat.cache_size = 0
    grad_cam(fx, cls=compat.LayerCAM)
    assert compat.cache_info()["entries"] == 0


def test_shared_engine_grows_its_batch(methods_fixture, fresh_cache):
    fx = methods_fixture
    builds = compat.cache_info()["builds"]
    one = grad_cam(fx, x=fx["input"][:1])
    two = grad_cam(fx)  # the batch grows: rebuilt once
    assert compat.cache_info()["builds"] == builds + 2
    np.testing.assert_allclose(grad_cam(fx, x=fx["input"][:1]), one, atol=1e-6)
    np.testing.assert_allclose(two[:1], one, atol=1e-5)
    assert compat.cache_info()["builds"] == builds + 2  # the larger batch serves one image


@pytest.mark.parametrize("name", ["ScoreCAM", "AblationCAM"])
def test_batch_size_caps_probes_without_changing_maps(methods_fixture, fresh_cache, name):
    fx = methods_fixture
    cls = getattr(compat, name)
    default = grad_cam(fx, cls=cls)
    with cls(model=fx.model, target_layers=[fx.meta["layer"]]) as cam:
        assert cam.batch_size == 32
        cam.batch_size = 3  # as pgc: set after construction, read at call time
        builds = compat.cache_info()["builds"]
        small = cam(fx["input"], [compat.ClassifierOutputTarget(int(c)) for c in fx.targets[:, 0]])
        assert compat.cache_info()["builds"] == builds + 1
    np.testing.assert_allclose(small, default, atol=1e-6)


def test_ablation_layer(methods_fixture):
    fx = methods_fixture

    class AblationLayer:  # pgc's default, by name (no torch here)
        pass

    class AblationLayerVit(AblationLayer):
        pass

    layers = [fx.meta["layer"]]
    compat.AblationCAM(model=fx.model, target_layers=layers, ablation_layer=None).close()
    compat.AblationCAM(model=fx.model, target_layers=layers, ablation_layer=AblationLayer()).close()
    with pytest.raises(NotImplementedError, match="AblationLayerVit"):
        compat.AblationCAM(model=fx.model, target_layers=layers, ablation_layer=AblationLayerVit())
    with pytest.raises(NotImplementedError, match="ratio_channels_to_ablate"):
        compat.AblationCAM(model=fx.model, target_layers=layers, ratio_channels_to_ablate=0.5)


def test_tta_transforms_loop(methods_fixture):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    fx = methods_fixture

    class Flip:  # the ttach interface: augment_image / deaugment_mask on torch tensors
        def augment_image(self, x):
            return torch.flip(x, [-1])

        def deaugment_mask(self, m):
            return torch.flip(m, [-1])

    class Same:
        def augment_image(self, x):
            return x

        def deaugment_mask(self, m):
            return m

    x = fx["input"]
    plain = grad_cam(fx)
    flipped = grad_cam(fx, x=np.ascontiguousarray(x[..., ::-1]))[..., ::-1]
    targets = [compat.ClassifierOutputTarget(int(c)) for c in fx.targets[:, 0]]
    with compat.GradCAM(
        model=fx.model, target_layers=[fx.meta["layer"]], tta_transforms=[Same(), Flip()]
    ) as cam:
        got = cam(x, targets, aug_smooth=True)
        assert cam(x, targets) is not None  # aug_smooth=False ignores tta_transforms
    assert got.dtype == np.float32 and got.shape == plain.shape
    np.testing.assert_allclose(got, (plain + flipped) / 2, atol=1e-6)


def test_tta_transforms_need_torch(methods_fixture, monkeypatch):
    import sys

    fx = methods_fixture
    cam = compat.GradCAM(model=fx.model, target_layers=[fx.meta["layer"]], tta_transforms=[])
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match="tta_transforms needs torch"):
        cam(fx["input"], None, aug_smooth=True)
    cam.close()
