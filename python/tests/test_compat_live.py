"""The drop-in against pytorch-grad-cam live (skipped where torch or grad-cam is missing)."""

import warnings

import numpy as np
import pytest

import gradcam_wgpu as gw
from gradcam_wgpu import compat

TOL = 1e-3


torch = pytest.importorskip("torch", reason="torch is not installed")
pgc = pytest.importorskip("pytorch_grad_cam", reason="grad-cam is not installed")
torchvision = pytest.importorskip("torchvision", reason="torchvision is not installed")


def pgc_maps(name, model, layers, x, targets, **call):
    with getattr(pgc, name)(model=model, target_layers=layers) as cam:
        return cam(input_tensor=x, targets=targets, **call)


def ours(name, model, layers, x, targets, **call):
    with getattr(compat, name)(model=model, target_layers=layers) as cam:
        return cam(input_tensor=x, targets=targets, **call)


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


FAST = ["GradCAM", "HiResCAM", "GradCAMElementWise", "GradCAMPlusPlus", "XGradCAM",
        "LayerCAM", "EigenCAM", "EigenGradCAM", "FullGrad"]


@pytest.mark.parametrize("name", FAST)
def test_live_methods(resnet18, name):
    m = resnet18
    x = torch.randn(2, 3, 64, 80)
    t = [compat.ClassifierOutputTarget(3), pgc.utils.model_targets.ClassifierOutputTarget(5)]
    a, b = ours(name, m, [m.layer4], x, t), pgc_maps(name, m, [m.layer4], x, t)
    assert a.shape == b.shape and a.dtype == b.dtype
    assert np.abs(a - b).max() < TOL


def test_live_layers_sizes_smoothing(resnet18):
    m = resnet18
    torch.manual_seed(1)
    for shape in [(3, 3, 32, 32), (2, 3, 40, 72), (1, 3, 97, 61)]:
        x = torch.randn(*shape)
        for layers in ([m.layer4], [m.layer3, m.layer4[1].conv2]):
            # eigen_smooth is checked on the fixture: an SVD's sign is arbitrary
            for call in ({}, {"aug_smooth": True}):
                a = ours("GradCAM", m, layers, x, None, **call)
                b = pgc_maps("GradCAM", m, layers, x, None, **call)
                assert np.abs(a - b).max() < TOL, (shape, len(layers), call)


def test_live_score_and_ablation(resnet18):
    m = resnet18
    x = torch.randn(1, 3, 32, 40)
    for name in ("ScoreCAM", "AblationCAM"):
        a, b = ours(name, m, [m.layer4], x, None), pgc_maps(name, m, [m.layer4], x, None)
        assert np.abs(a - b).max() < TOL, name


def test_live_targets(resnet18):
    """pgc's own softmax, ReST and binary target objects, mixed within a call."""
    mt = pgc.utils.model_targets
    m = resnet18
    torch.manual_seed(2)
    x = torch.randn(3, 3, 48, 64)
    targets = [mt.ClassifierOutputSoftmaxTarget(2), mt.ClassifierOutputReST(7),
               mt.ClassifierOutputSoftmaxTarget(9)]
    for name in ("GradCAM", "GradCAMPlusPlus", "ScoreCAM"):
        a = ours(name, m, [m.layer3], x, targets)
        b = pgc_maps(name, m, [m.layer3], x, targets)
        assert np.abs(a - b).max() < TOL, name
    binary = torchvision.models.resnet18(num_classes=1).eval()
    targets = [mt.BinaryClassifierOutputTarget(0), mt.BinaryClassifierOutputTarget(1)]
    x = x[:2]
    for name in ("GradCAM", "AblationCAM"):
        a = ours(name, binary, [binary.layer3], x, targets)
        b = pgc_maps(name, binary, [binary.layer3], x, targets)
        assert np.abs(a - b).max() < TOL, name


class Gray(torch.nn.Module):
    """1- or 4-channel input convs, a custom forward."""

    def __init__(self, channels):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(channels, 8, 3, padding=1),
                                        torch.nn.BatchNorm2d(8), torch.nn.ReLU())
        self.body = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, stride=2, padding=1),
                                        torch.nn.ReLU(), torch.nn.Dropout(0.5))
        self.head = torch.nn.Linear(16, 4)

    def forward(self, x):
        return self.head(self.body(self.stem(x)).mean((2, 3)))


@pytest.mark.parametrize("channels", [1, 4])
def test_live_channels(channels):
    torch.manual_seed(channels)
    m = Gray(channels).eval()
    x = torch.randn(2, channels, 33, 47)
    a = ours("GradCAM", m, [m.body[1]], x, None)
    b = pgc_maps("GradCAM", m, [m.body[1]], x, None)
    assert np.abs(a - b).max() < TOL


def test_live_training_mode_warns_once():
    torch.manual_seed(2)
    m = Gray(3)
    x = torch.randn(2, 3, 32, 32)
    with compat.GradCAM(model=m, target_layers=[m.body[0]]) as cam:
        assert not m.training  # pgc's contract: the constructor calls model.eval()
        m.train()
        with pytest.warns(UserWarning, match="training mode"):
            a = cam(x)
        assert m.training  # left as the caller set it
        m.eval()
        want = pgc_maps("GradCAM", m, [m.body[0]], x, None)
        m.train()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            cam(torch.randn(1, 3, 36, 36))  # a new export, no second warning
    assert np.abs(a - want).max() < TOL


def test_live_cache_follows_weights():
    torch.manual_seed(3)
    m = Gray(3).eval()
    x = torch.randn(2, 3, 32, 32)
    with compat.GradCAM(model=m, target_layers=[m.body[0]]) as cam:
        before = cam(x)
        with torch.no_grad():
            m.stem[0].weight.mul_(-1.5)
        after = cam(x)
    want = pgc_maps("GradCAM", m, [m.body[0]], x, None)
    assert np.abs(after - want).max() < TOL and np.abs(after - before).max() > 0.01


def test_live_outputs_are_torch(resnet18):
    x = torch.randn(2, 3, 32, 32)
    with compat.GradCAM(model=resnet18, target_layers=[resnet18.layer4]) as cam:
        cam(x)
        assert isinstance(cam.outputs, torch.Tensor)
        torch.testing.assert_close(cam.outputs, resnet18(x), rtol=1e-3, atol=1e-3)


def test_live_errors(resnet18):
    other = torch.nn.Conv2d(3, 3, 1)
    with pytest.raises(ValueError, match="not a submodule"):
        compat.GradCAM(model=resnet18, target_layers=[other])

    class Weird(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(torch.cumsum(self.conv(x), 1).mean((2, 3)))

    m = Weird().eval()
    with compat.GradCAM(model=m, target_layers=[m.conv]) as cam:
        with pytest.raises(gw.Error, match="CumSum"):
            cam(torch.randn(1, 3, 16, 16))


def test_live_tta_transforms():
    tta = pytest.importorskip("ttach", reason="ttach is not installed")
    torch.manual_seed(4)
    m = Gray(3).eval()
    x = torch.randn(2, 3, 33, 40)
    transforms = tta.Compose(
        [tta.HorizontalFlip(), tta.VerticalFlip(), tta.Multiply(factors=[0.9, 1, 1.1])]
    )
    for targets in (None, [compat.ClassifierOutputTarget(1), compat.ClassifierOutputTarget(3)]):
        # pgc's CAM classes take it as an attribute (only BaseCAM's constructor has it)
        with compat.GradCAM(model=m, target_layers=[m.body[0]]) as cam:
            cam.tta_transforms = transforms
            a = cam(input_tensor=x, targets=targets, aug_smooth=True)
        with pgc.GradCAM(model=m, target_layers=[m.body[0]]) as cam:
            cam.tta_transforms = transforms
            b = cam(input_tensor=x, targets=targets, aug_smooth=True)
        assert a.shape == b.shape and a.dtype == b.dtype
        assert np.abs(a - b).max() < 1e-4, targets


def test_live_ablation_layers(resnet18):
    from pytorch_grad_cam.ablation_layer import AblationLayer, AblationLayerVit

    layers = [resnet18.layer4]
    compat.AblationCAM(model=resnet18, target_layers=layers, ablation_layer=AblationLayer()).close()
    with pytest.raises(NotImplementedError, match="AblationLayerVit"):
        compat.AblationCAM(model=resnet18, target_layers=layers, ablation_layer=AblationLayerVit())
