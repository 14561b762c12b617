"""gradcam_wgpu.utils: byte-equal to pytorch-grad-cam's helpers (live where installed)."""

import numpy as np
import pytest

from gradcam_wgpu import utils


def test_jet_endpoints():
    # OpenCV's JET: dark blue at 0, dark red at 255 (BGR out of applyColorMap).
    mask = np.array([[0.0, 1.0]], np.float32)
    img = np.zeros((1, 2, 3), np.float32)
    out = utils.show_cam_on_image(img, mask, use_rgb=True, image_weight=0.0)
    assert out.dtype == np.uint8 and out.shape == (1, 2, 3)
    assert out[0, 0].tolist() == [0, 0, 255] and out[0, 1].tolist() == [255, 0, 0]


def test_errors_as_pgc():
    img = np.full((2, 2, 3), 2.0, np.float32)
    with pytest.raises(Exception, match="range"):
        utils.show_cam_on_image(img, np.zeros((2, 2)))
    with pytest.raises(Exception, match="image_weight"):
        utils.show_cam_on_image(img / 4, np.zeros((2, 2)), image_weight=1.5)


def test_preprocess_shape():
    x = utils.preprocess_image(np.zeros((5, 7, 3), np.uint8))
    assert tuple(x.shape) == (1, 3, 5, 7)
    assert np.allclose(np.asarray(x), -1.0)


def test_live_byte_equal():
    pim = pytest.importorskip("pytorch_grad_cam.utils.image")
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    img = rng.random((37, 53, 3), dtype=np.float32)
    mask = rng.random((37, 53), dtype=np.float32)
    for use_rgb in (False, True):
        for w in (0.0, 0.3, 0.5, 1.0):
            a = utils.show_cam_on_image(img, mask, use_rgb=use_rgb, image_weight=w)
            b = pim.show_cam_on_image(img, mask, use_rgb=use_rgb, image_weight=w)
            assert a.dtype == b.dtype and np.array_equal(a, b)
    a = utils.show_cam_on_image(img, mask, colormap=cv2.COLORMAP_VIRIDIS)
    assert np.array_equal(a, pim.show_cam_on_image(img, mask, colormap=cv2.COLORMAP_VIRIDIS))
    for im in (img, (img * 255).astype(np.uint8), img.astype(np.float64)):
        for mean, std in (([0.5] * 3, [0.5] * 3), ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])):
            a, b = utils.preprocess_image(im, mean, std), pim.preprocess_image(im, mean, std)
            assert a.dtype == b.dtype and a.numpy().tobytes() == b.numpy().tobytes()
    assert np.array_equal(utils.deprocess_image(img), pim.deprocess_image(img))
    cam = rng.random((2, 5, 6), dtype=np.float32)
    assert np.array_equal(utils.scale_cam_image(cam, (12, 10)), pim.scale_cam_image(cam, (12, 10)))
