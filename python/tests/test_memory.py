"""Repeated calls hold RSS flat (pytorch-grad-cam #195, #483)."""

import os

import numpy as np

import gradcam_wgpu as gw
from gradcam_wgpu import compat

CALLS = int(os.environ.get("GRADCAM_WGPU_MEMORY_CALLS", "150"))


def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_rss_flat_over_calls(methods_fixture):
    fx = methods_fixture
    x = fx["input"]
    targets = [compat.ClassifierOutputTarget(int(c)) for c in fx.targets[:, 0]]
    ex = gw.Explainer(fx.model, layers=[fx.meta["layer"]], size=fx.size, batch=2, overlays=True)
    for i in range(20):  # warm-up: caches, allocator pools
        ex(x, classes=fx.targets)
        if i % 10 == 0:
            with compat.GradCAM(model=fx.model, target_layers=[fx.meta["layer"]]) as cam:
                cam(x, targets)
    start = rss_mib()
    for i in range(CALLS):
        ex(x, classes=fx.targets)
        if i % 30 == 0:  # a fresh drop-in object now and then: `with` must release it all
            with compat.GradCAM(model=fx.model, target_layers=[fx.meta["layer"]]) as cam:
                cam(x, targets)
    grown = rss_mib() - start
    print(f"RSS {start:.0f} MiB -> +{grown:.1f} MiB over {CALLS} calls")
    assert grown < 8, f"RSS grew {grown:.1f} MiB over {CALLS} calls"
