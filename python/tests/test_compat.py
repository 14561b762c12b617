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
