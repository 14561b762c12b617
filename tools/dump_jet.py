"""Print OpenCV's COLORMAP_JET as 256 RGB triples (JSON) — the LUT used by
pytorch_grad_cam.utils.image.show_cam_on_image.

Usage: python tools/dump_jet.py > tools/jet_lut.json
Entry k is the RGB colour cv2.applyColorMap gives to uint8 value k.
"""
import json

import cv2
import numpy as np


def jet_rgb():
    idx = np.arange(256, dtype=np.uint8).reshape(256, 1)
    bgr = cv2.applyColorMap(idx, cv2.COLORMAP_JET)  # (256, 1, 3) BGR
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).reshape(256, 3)
    return [[int(c) for c in row] for row in rgb]


if __name__ == "__main__":
    lut = jet_rgb()
    assert len(lut) == 256
    print("[")
    print(",\n".join(f"  [{r}, {g}, {b}]" for r, g, b in lut))
    print("]")
