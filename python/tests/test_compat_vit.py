"""The drop-in on a vision transformer against pytorch-grad-cam live (skipped where torch,
torchvision or grad-cam is missing): the ONNX golden fixture's torchvision ViT (image 64,
patch 8, 2 layers, hidden 32) at the tutorial's layer, blocks[-1].norm1, with pytorch-grad-cam's
own vit_reshape_transform, on the fixture's images and targets."""

import functools

import numpy as np
import pytest

from conftest import FIXTURES, read_safetensors
from gradcam_wgpu import compat

torch = pytest.importorskip("torch", reason="torch is not installed")
torchvision = pytest.importorskip("torchvision", reason="torchvision is not installed")
pgc = pytest.importorskip("pytorch_grad_cam", reason="grad-cam is not installed")
from pytorch_grad_cam import eigen_cam  # noqa: E402
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402
from pytorch_grad_cam.utils.reshape_transforms import vit_reshape_transform  # noqa: E402

TOL = 1e-3
RESHAPE = functools.partial(vit_reshape_transform, height=8, width=8)


@pytest.fixture(scope="module")
def vit():
    """tools/make_onnx_fixtures.py's build_vit (seed 28), without its head rescaling."""
    torch.manual_seed(28)
    m = torchvision.models.VisionTransformer(
        image_size=64, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64,
        num_classes=10,
    )
    with torch.no_grad():  # torchvision zeroes the head and the class token
        m.class_token.normal_(0.0, 0.5)
        torch.nn.init.normal_(m.heads.head.weight, std=32**-0.5)
        m.heads.head.bias.normal_(0.0, 0.05)
    return m.eval()


@pytest.fixture(scope="module")
def images():
    tensors, _ = read_safetensors(FIXTURES / "onnx" / "vit.safetensors")
    x = torch.from_numpy(tensors["input"].copy())
    return x, [int(c) for c in tensors["targets"][:, 0]]


def maps(lib, name, model, x, classes):
    layer = model.encoder.layers[-1].ln_1
    with getattr(lib, name)(model=model, target_layers=[layer], reshape_transform=RESHAPE) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes])


@pytest.mark.parametrize("name", ["GradCAM", "GradCAMPlusPlus", "EigenCAM", "LayerCAM"])
def test_live_vit(vit, images, name, monkeypatch):
    x, classes = images
    ours = maps(compat, name, vit, x, classes)
    theirs = [maps(pgc, name, vit, x, classes)]
    if name == "EigenCAM":
        # An SVD's sign is arbitrary (the engine fixes it): also pgc's projection negated,
        # -(A @ v) == A @ (-v) bit for bit, and either map may match per image.
        flip = eigen_cam.get_2d_projection
        monkeypatch.setattr(eigen_cam, "get_2d_projection", lambda a: -flip(a))
        theirs.append(maps(pgc, name, vit, x, classes))
    assert ours.shape == theirs[0].shape == (2, 64, 64) and ours.dtype == np.float32
    err = max(min(np.abs(ours[i] - t[i]).max() for t in theirs) for i in range(len(ours)))
    print(f"{name}: max |ours - pgc| {err:.2e}")
    assert err < TOL, (name, err)
    assert all(m.max() > 0.5 for m in ours), name  # no all-zero map passes vacuously


def test_live_vit_ablation(vit, images):
    """AblationCAM with pgc's AblationLayerVit: every token of a channel ablated, the class
    token's included."""
    from pytorch_grad_cam.ablation_layer import AblationLayerVit

    x, classes = images
    layer = vit.encoder.layers[-1].ln_1
    out = []
    for lib in (compat, pgc):
        with lib.AblationCAM(model=vit, target_layers=[layer], reshape_transform=RESHAPE,
                             ablation_layer=AblationLayerVit()) as cam:
            out.append(cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes]))
    ours, theirs = out
    err = np.abs(ours - theirs).max()
    print(f"AblationCAM: max |ours - pgc| {err:.2e}")
    assert err < TOL and all(m.max() > 0.5 for m in ours), err
