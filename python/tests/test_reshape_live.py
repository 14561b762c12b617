"""``reshape_transform`` against pytorch-grad-cam live (skipped where torch or grad-cam is
missing): a channels-last target layer (Swin, ConvNeXt) and ViT-style tokens."""

import numpy as np
import pytest

from gradcam_wgpu import compat

torch = pytest.importorskip("torch", reason="torch is not installed")
pgc = pytest.importorskip("pytorch_grad_cam", reason="grad-cam is not installed")

TOL = 1e-4


class Permute(torch.nn.Module):
    def __init__(self, *dims):
        super().__init__()
        self.dims = dims

    def forward(self, x):
        return x.permute(*self.dims)


class ChannelsLast(torch.nn.Module):
    """conv -> NHWC -> LayerNorm over channels (the target) -> GELU -> NCHW -> conv -> head."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.to_nhwc = Permute(0, 2, 3, 1)
        self.norm = torch.nn.LayerNorm(8)
        self.act = torch.nn.GELU()
        self.to_nchw = Permute(0, 3, 1, 2)
        self.conv = torch.nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.relu = torch.nn.ReLU()
        self.fc = torch.nn.Linear(12, 5)

    def forward(self, x):
        x = self.to_nchw(self.act(self.norm(self.to_nhwc(self.stem(x)))))
        return self.fc(self.relu(self.conv(x)).mean(dim=(2, 3)))


def nhwc_to_nchw(t):
    return t.permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return ChannelsLast().eval()


@pytest.mark.parametrize("name", ["GradCAM", "GradCAMPlusPlus", "ScoreCAM", "EigenCAM", "LayerCAM"])
def test_live_channels_last_layer(net, name):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 21, 18)
    targets = [compat.ClassifierOutputTarget(1), compat.ClassifierOutputTarget(4)]
    maps = []
    for lib in (compat, pgc):
        cls = getattr(lib, name)
        with cls(model=net, target_layers=[net.norm], reshape_transform=nhwc_to_nchw) as cam:
            maps.append(cam(input_tensor=x, targets=targets))
    ours, theirs = maps
    assert ours.shape == theirs.shape
    err = np.abs(ours - theirs).max()
    assert err < TOL, (name, err)


class TinyViT(torch.nn.Module):
    """Patch tokens and a leading summary token, an MLP block, LayerNorm (the target)."""

    def __init__(self, d=12, grid=(4, 5)):
        super().__init__()
        self.patch = torch.nn.Conv2d(3, d, 4, stride=4)
        self.pos = torch.nn.Parameter(torch.randn(1, 1 + grid[0] * grid[1], d) * 0.1)
        self.fc1 = torch.nn.Linear(d, 2 * d)
        self.fc2 = torch.nn.Linear(2 * d, d)
        self.norm = torch.nn.LayerNorm(d)
        self.head = torch.nn.Linear(d, 5)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        # (a mean token rather than a learned one: the importer lacks Expand)
        t = torch.cat([t.mean(dim=1, keepdim=True), t], dim=1) + self.pos
        t = t + self.fc2(torch.nn.functional.gelu(self.fc1(t)))
        t = self.norm(t)
        return self.head(t[:, :1].flatten(1) + t[:, 1:].mean(dim=1))


def vit_reshape_transform(t, height=4, width=5):
    """pytorch-grad-cam's ViT example: drop the first token, tokens to a grid, NCHW."""
    result = t[:, 1:, :].reshape(t.size(0), height, width, t.size(2))
    return result.transpose(2, 3).transpose(1, 2)


# EigenCAM is left to the channels-last case: here LAPACK's SVD sign differs from the engine's
# fixed one (the largest entry positive).
@pytest.mark.parametrize("name", ["GradCAM", "GradCAMPlusPlus", "ScoreCAM", "LayerCAM"])
def test_live_vit_tokens(name):
    torch.manual_seed(0)
    net = TinyViT().eval()
    x = torch.randn(2, 3, 16, 20)
    maps = []
    for lib in (compat, pgc):
        cls = getattr(lib, name)
        kw = {"target_layers": [net.norm], "reshape_transform": vit_reshape_transform}
        with cls(model=net, **kw) as cam:
            maps.append(cam(input_tensor=x, targets=None))
    err = np.abs(maps[0] - maps[1]).max()
    assert err < TOL, (name, err)
