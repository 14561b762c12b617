"""pytorch-grad-cam's image helpers, byte-equal to ``pytorch_grad_cam.utils.image``.

``show_cam_on_image`` needs OpenCV only for colormaps other than JET; ``preprocess_image``
returns a torch tensor when torch is installed, else a numpy array of the same values.
"""

from __future__ import annotations

import numpy as np

__all__ = ["deprocess_image", "preprocess_image", "scale_cam_image", "show_cam_on_image"]

# OpenCV's COLORMAP_JET (cv2.COLORMAP_JET == 2), RGB, from tools/jet_lut.json.
COLORMAP_JET = 2
_JET_RGB = np.frombuffer(
    bytes.fromhex(
    "00008000008400008800008c00009000009400009800009c0000a00000a40000a80000ac0000b00000b40000b80000bc"
    "0000c00000c40000c80000cc0000d00000d40000d80000dc0000e00000e40000e80000ec0000f00000f40000f80000fc"
    "0000ff0004ff0008ff000cff0010ff0014ff0018ff001cff0020ff0024ff0028ff002cff0030ff0034ff0038ff003cff"
    "0040ff0044ff0048ff004cff0050ff0054ff0058ff005cff0060ff0064ff0068ff006cff0070ff0074ff0078ff007cff"
    "0080ff0084ff0088ff008cff0090ff0094ff0098ff009cff00a0ff00a4ff00a8ff00acff00b0ff00b4ff00b8ff00bcff"
    "00c0ff00c4ff00c8ff00ccff00d0ff00d4ff00d8ff00dcff00e0ff00e4ff00e8ff00ecff00f0ff00f4ff00f8ff00fcff"
    "02fffe06fffa0afff60efff212ffee16ffea1affe61effe222ffde26ffda2affd62effd232ffce36ffca3affc63effc2"
    "42ffbe46ffba4affb64effb252ffae56ffaa5affa65effa262ff9e66ff9a6aff966eff9272ff8e76ff8a7aff867eff82"
    "82ff7e86ff7a8aff768eff7292ff6e96ff6a9aff669eff62a2ff5ea6ff5aaaff56aeff52b2ff4eb6ff4abaff46beff42"
    "c2ff3ec6ff3acaff36ceff32d2ff2ed6ff2adaff26deff22e2ff1ee6ff1aeaff16eeff12f2ff0ef6ff0afaff06feff01"
    "fffc00fff800fff400fff000ffec00ffe800ffe400ffe000ffdc00ffd800ffd400ffd000ffcc00ffc800ffc400ffc000"
    "ffbc00ffb800ffb400ffb000ffac00ffa800ffa400ffa000ff9c00ff9800ff9400ff9000ff8c00ff8800ff8400ff8000"
    "ff7c00ff7800ff7400ff7000ff6c00ff6800ff6400ff6000ff5c00ff5800ff5400ff5000ff4c00ff4800ff4400ff4000"
    "ff3c00ff3800ff3400ff3000ff2c00ff2800ff2400ff2000ff1c00ff1800ff1400ff1000ff0c00ff0800ff0400ff0000"
    "fc0000f80000f40000f00000ec0000e80000e40000e00000dc0000d80000d40000d00000cc0000c80000c40000c00000"
    "bc0000b80000b40000b00000ac0000a80000a40000a000009c00009800009400009000008c0000880000840000800000"
    ),
    dtype=np.uint8,
).reshape(256, 3)


def _apply_colormap(gray: np.ndarray, colormap: int) -> np.ndarray:
    """cv2.applyColorMap: BGR uint8."""
    if colormap == COLORMAP_JET:
        return _JET_RGB[gray][..., ::-1].copy()
    import cv2

    return cv2.applyColorMap(gray, colormap)


def show_cam_on_image(
    img: np.ndarray,
    mask: np.ndarray,
    use_rgb: bool = False,
    colormap: int = COLORMAP_JET,
    image_weight: float = 0.5,
) -> np.ndarray:
    """Overlays the cam mask on the image (float32 RGB or BGR in [0, 1]) as a heatmap."""
    heatmap = _apply_colormap(np.uint8(255 * mask), colormap)
    if use_rgb:
        heatmap = heatmap[..., ::-1]
    heatmap = np.float32(heatmap) / 255

    if np.max(img) > 1:
        raise Exception("The input image should np.float32 in the range [0, 1]")

    if image_weight < 0 or image_weight > 1:
        raise Exception(f"image_weight should be in the range [0, 1]. Got: {image_weight}")

    cam = (1 - image_weight) * heatmap + image_weight * img
    cam = cam / np.max(cam)
    return np.uint8(255 * cam)


def preprocess_image(img: np.ndarray, mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5]):
    """HWC image -> normalised [1, C, H, W] float32 (uint8 is scaled by 1/255 first)."""
    x = np.ascontiguousarray(img.copy().transpose(2, 0, 1))
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / np.float32(255)
    dtype = x.dtype
    m = np.asarray(mean, dtype=dtype)[:, None, None]
    s = np.asarray(std, dtype=dtype)[:, None, None]
    x = ((x - m) / s)[None]
    try:
        import torch
    except ImportError:
        return x
    return torch.from_numpy(np.ascontiguousarray(x))


def deprocess_image(img):
    """see https://github.com/jacobgil/keras-grad-cam/blob/master/grad-cam.py#L65"""
    img = img - np.mean(img)
    img = img / (np.std(img) + 1e-5)
    img = img * 0.1
    img = img + 0.5
    img = np.clip(img, 0, 1)
    return np.uint8(img * 255)


def scale_cam_image(cam, target_size=None):
    """Per-map min-max to [0, 1], resized (cv2.resize) to target_size (W, H) if given."""
    result = []
    for img in cam:
        img = img - np.min(img)
        img = img / (1e-7 + np.max(img))
        if target_size is not None:
            import cv2

            img = cv2.resize(np.float32(img), target_size)
        result.append(img)
    return np.float32(result)
