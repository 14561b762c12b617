"""Grad-CAM and its variants on the GPU (wgpu), numerically equal to pytorch-grad-cam.

Native API::

    import gradcam_wgpu as gw
    model = gw.Model.load("net.safetensors")    # or .onnx, a torchvision state dict (arch=...)
    ex = gw.Explainer(model, layers=["layer4"], method="gradcam", targets="top1")
    res = ex(images)   # uint8 [N, H, W, 3] RGB, or float32 [N, C, H, W] already normalised
    res.maps           # float32 [N, T, H, W] in [0, 1]; res.classes [N, T]; res.logits [N, K]

The pytorch-grad-cam drop-in is :mod:`gradcam_wgpu.compat`; ``show_cam_on_image`` and
``preprocess_image`` are in :mod:`gradcam_wgpu.utils`.
"""

from ._native import METHODS, Error, Explainer, GpuError, Model, ModelError, Result

__all__ = ["METHODS", "Error", "Explainer", "GpuError", "Model", "ModelError", "Result"]
