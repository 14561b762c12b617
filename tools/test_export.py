#!/usr/bin/env python3
"""Checks of tools/export.py that need PyTorch (CI has none; run by hand):

    /opt/ref/bin/python tools/test_export.py

- torchvision VGG, ResNet, DenseNet, MobileNetV2/V3, EfficientNet, RegNet and ConvNeXt trace
  and export; graphs are topologically ordered, end in the logits, name layers by module path;
- the exported files of MobileNetV3, ConvNeXt, EfficientNet, RegNet, DenseNet and of a small
  net using every newer op (GroupNorm, GELU, LayerNorm, permute, Linear on [N, ..., F],
  broadcasting and constant element-wise ops, reshape, mean, cat on any axis) give the
  model's logits under tools/ir_eval.py's interpreter of the IR;
- padding: a zero pad (ZeroPad2d, F.pad) read by a conv folds into the conv's
  padding/padding_end, other pads stay `pad` nodes; a TF-"SAME" Conv2d subclass (a ZeroPad2d
  and F.conv2d in its forward) is one conv named by its module path; EfficientNet-Lite0 (the
  bundled model's architecture) exports with distinct stem and head activations;
- vision transformers: the small torchvision ViT and DeiT-style net of
  tools/make_onnx_fixtures.py and vit_b_16 give the model's logits within 1e-6 (attention
  decomposed, class token cat, `x[:, 0]`), default layer the last block's ln_1, token layers
  listed in the metadata; torchvision's Swin (the small one of make_onnx_fixtures.py, also at
  a size that pads windows, and swin_t) likewise, default layer the last block's norm1;
  cross-attention fails naming the module;
- unsupported ops fail with the module's path and the op's name.
"""

from __future__ import annotations

import os
import sys
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export  # noqa: E402
import ir_eval  # noqa: E402


def meta_of(model, size=64, **kw):
    kw.setdefault("default_layer", "input")
    meta, tensors = export.to_metadata(
        model, input_size=(size, size), mean=(0.5,) * 3, std=(0.25,) * 3,
        classes=[str(i) for i in range(10)], name="t", **kw)
    return meta, tensors


def check_graph(meta, tensors):
    nodes = meta["graph"]["nodes"]
    assert nodes[0]["op"]["op"] == "input"
    assert nodes[-1]["op"]["op"] == "linear"
    for i, n in enumerate(nodes):
        assert all(j < i for j in n["inputs"]), n
    names = [n["name"] for n in nodes]
    assert len(names) == len(set(names))
    for n in nodes:
        for k in ("weight", "bias"):
            if n["op"].get(k):
                assert n["op"][k] in tensors, n


def expect_error(model, *needles):
    try:
        meta_of(model)
    except export.UnsupportedOp as e:
        msg = str(e)
        assert all(s in msg for s in needles), msg
        return msg
    raise AssertionError(f"{type(model).__name__} exported but should not")


class Zoo(nn.Module):
    """Every op tools/export.py maps beyond the CNN set, in one small net."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.GroupNorm(2, 8), nn.GELU())
        self.scale = nn.Parameter(torch.rand(8, 1, 1) + 0.5)
        self.gate = nn.Sequential(nn.Conv2d(8, 8, 1), nn.Hardsigmoid())
        self.norm = nn.LayerNorm(8)
        self.mlp = nn.Sequential(nn.Linear(8, 12), nn.Hardswish(), nn.Linear(12, 8))
        self.tokens = nn.Linear(8, 6)
        self.head = nn.Linear(6 + 8 + 8, 10)

    def forward(self, x):
        x = self.stem(x)                                   # [N, 8, H, W]
        x = x * self.scale + self.gate(x) * x / 6          # binary_const, mul gate, div const
        x = torch.clamp(6 - x, -2.0, 3.0) - x.mean(1, keepdim=True)  # reversed sub, clip, binary
        y = x.permute(0, 2, 3, 1)                          # transpose to [N, H, W, C]
        y = y + self.mlp(self.norm(y))                     # layer_norm and linear on axis 2
        t = y.flatten(1, 2)                                # reshape to [N, HW, C]
        t = F.gelu(self.tokens(t), approximate="tanh")     # linear on axis 1, tanh GELU
        a = t.mean(1)                                      # reduce_mean and a reshape
        b = torch.cat([y, y * 0.5], dim=3).mean((1, 2))    # concat on axis 2, mean
        return self.head(torch.cat([a, b], 1))


class SameConv(nn.Conv2d):
    """TF "SAME" padding as EfficientNet-Lite's port writes it: a ZeroPad2d, then F.conv2d."""

    def __init__(self, cin, cout, k, stride, size):
        super().__init__(cin, cout, k, stride, bias=True)
        total = max((-(-size // stride) - 1) * stride + k - size, 0)
        self.static_padding = nn.ZeroPad2d((total // 2, total - total // 2) * 2)

    def forward(self, x):
        return F.conv2d(self.static_padding(x), self.weight, self.bias, self.stride)


class Padded(nn.Module):
    """Pads folded into convs and pads that stay."""

    def __init__(self):
        super().__init__()
        self.stem = SameConv(3, 8, 3, 2, 20)                     # pads (0, 1): padding_end
        self.pad = nn.ZeroPad2d((2, 0, 1, 3))                    # folded into conv
        self.conv = nn.Conv2d(8, 8, 3, padding=1, groups=8)      # ... on top of its own
        self.mid = nn.ConstantPad2d(1, -0.5)                     # not zero: stays a pad node
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = self.conv(self.pad(x))
        x = F.max_pool2d(self.mid(x), 2)
        x = F.pad(x, (1, 1, 0, 2))                               # zero pad read by a mean
        return self.head(x.mean((2, 3)))


def check_padding():
    model = ir_eval.randomize(Padded())
    meta, tensors = meta_of(model, size=20)
    check_graph(meta, tensors)
    by = {n["name"]: n["op"] for n in meta["graph"]["nodes"]}
    assert by["stem"]["padding"] == [0, 0] and by["stem"]["padding_end"] == [1, 1], by["stem"]
    assert by["stem"]["bias"] == "stem.bias"
    assert by["conv"]["padding"] == [2, 3] and by["conv"]["padding_end"] == [4, 1], by["conv"]
    pads = [op for op in by.values() if op["op"] == "pad"]
    assert [(p["begin"], p["end"], p["value"]) for p in pads] == [
        ([0, 1, 1], [0, 1, 1], -0.5), ([0, 0, 1], [0, 2, 1], 0.0)], pads
    assert "stem.static_padding" not in by and "pad" not in by  # folded, pruned
    print(f"ok padding: {check_ir(model, 'padded', size=20)}")


def check_efficientnet_lite():
    """The bundled model's architecture (tools/make_bundled_model.py), random weights."""
    from efficientnet_lite_pytorch import EfficientNet

    model = ir_eval.randomize(EfficientNet.from_name("efficientnet-lite0", num_classes=10))
    meta, tensors = meta_of(model, size=224, default_layer="_swish:1")
    check_graph(meta, tensors)
    nodes = meta["graph"]["nodes"]
    names = [n["name"] for n in nodes]
    # One ReLU6 module serves the stem and the head: two nodes, the head's last.
    assert names[3] == "_swish" and names[-5] == "_swish:1", (names[:4], names[-5:])
    assert nodes[-5]["inputs"] == [names.index("_bn1")]
    assert not any(n["op"]["op"] == "pad" for n in nodes)
    assert meta["graph"]["aliases"]["_blocks.15"] == names.index("_blocks.15._bn2")
    assert nodes[names.index("_conv_stem")]["op"]["padding_end"] == [1, 1]
    print(f"ok efficientnet-lite0: {check_ir(model, 'efficientnet-lite0', size=224)}")


def check_ir(model, name, size=64, f32=1e-4, f64=1e-10):
    """The exported file's IR (tools/ir_eval.py) gives the model's logits."""
    r = ir_eval.check(model, (size, size), name=name)
    assert r["f32"] < f32 and r["f64"] < f64, r
    return f"{r['nodes']} nodes, max rel logits error f32 {r['f32']:.1e} f64 {r['f64']:.1e}"


def check_transformers():
    """ViT (torchvision, small and vit_b_16) and DeiT: attention decomposed as torch computes
    it, the class token's cat, `x[:, 0]`; default layer the last ln_1, token layers listed;
    the IR gives the logits within 1e-6 (f64: the attention scale is stored as an f32)."""
    from make_onnx_fixtures import DeiT, build_vit

    layer = "encoder.layers.encoder_layer_1.ln_1"
    for name, build in (("vit", build_vit), ("deit", DeiT)):
        torch.manual_seed(28)
        model = ir_eval.randomize(build())
        meta, tensors = meta_of(model, default_layer=None)
        nodes = meta["graph"]["nodes"]
        for i, n in enumerate(nodes):
            assert all(j < i for j in n["inputs"]), n
        assert meta["default_layer"] == layer, meta["default_layer"]
        assert meta["tokens"][layer] == "sequence" and "encoder.ln" in meta["tokens"]
        by = {n["name"]: n["op"] for n in nodes}
        att = "encoder.layers.encoder_layer_0.self_attention"
        assert by[att]["weight"] == f"{att}.out_proj.weight"
        assert by[f"{att}.in_proj"]["weight"] == f"{att}.in_proj_weight"
        assert by[f"{att}.softmax"] == {"op": "softmax", "axis": 2}
        prefix = 1 if name == "vit" else 2
        assert by["cat:pad"]["begin"] == [prefix, 0, 0], by["cat:pad"]
        assert tensors["cat"][:prefix].abs().sum() > 0 and tensors["cat"][prefix:].abs().sum() == 0
        print(f"ok {name}: {check_ir(model, name, f32=1e-6, f64=1e-8)}")
    torch.manual_seed(0)
    model = ir_eval.randomize(torchvision.models.vit_b_16(num_classes=10))
    with torch.no_grad():  # torchvision zeroes the head and the class token: logits all 0
        nn.init.normal_(model.heads.head.weight, std=0.05)
        model.class_token.normal_()
    meta, _ = meta_of(model, size=224, default_layer=None)
    assert meta["default_layer"] == "encoder.layers.encoder_layer_11.ln_1"
    print(f"ok vit_b_16: {check_ir(model, 'vit_b_16', size=224, f32=1e-6, f64=1e-8)}")

    class Cross(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 8, 8)
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = nn.Linear(8, 10)

        def forward(self, x):
            t = self.conv(x).flatten(2).transpose(1, 2)
            return self.head(self.attn(t, t * 2, t)[0].mean(1))

    print("ok", expect_error(Cross(), "attn", "only self-attention"))
    from make_onnx_fixtures import build_swin

    for size in (32, 36):  # 36: windows padded, the second stage's shift kept
        torch.manual_seed(30)
        model = ir_eval.randomize(build_swin())
        meta, tensors = meta_of(model, size=size, default_layer=None)
        assert meta["default_layer"] == "features.3.1.norm1", meta["default_layer"]
        assert meta["tokens"]["features.3.1.norm1"] == "grid" and "norm" in meta["tokens"]
        by = {n["name"]: n["op"] for n in meta["graph"]["nodes"]}
        assert by["features.3.1.attn.softmax"] == {"op": "softmax", "axis": 2}
        assert by["features.2.merge"]["op"] == "gather" and "features.2.reduction" in by
        print(f"ok swin {size}: {check_ir(model, 'swin', size=size, f32=1e-6, f64=1e-8)}")
    torch.manual_seed(0)
    model = ir_eval.randomize(torchvision.models.swin_t(num_classes=10))
    meta, _ = meta_of(model, size=224, default_layer=None)
    assert meta["default_layer"] == "features.7.1.norm1", meta["default_layer"]
    print(f"ok swin_t: {check_ir(model, 'swin_t', size=224, f32=1e-6, f64=1e-8)}")


def main():
    torch.manual_seed(0)
    torch.set_num_threads(2)
    for arch in ("vgg11_bn", "resnet18", "resnet50", "densenet121", "mobilenet_v2",
                 "mobilenet_v3_large", "efficientnet_b0", "regnet_y_400mf", "convnext_tiny"):
        model = getattr(torchvision.models, arch)(num_classes=10)
        meta, tensors = meta_of(model)
        check_graph(meta, tensors)
        print(f"ok {arch}: {len(meta['graph']['nodes'])} nodes, {len(tensors)} tensors")
    for arch in ("mobilenet_v3_large", "convnext_tiny", "efficientnet_b0", "regnet_y_400mf",
                 "densenet121"):
        model = ir_eval.randomize(getattr(torchvision.models, arch)(num_classes=10))
        print(f"ok {arch} through ir_eval: {check_ir(model, arch)}")
    meta, _ = meta_of(torchvision.models.resnet18(num_classes=10), default_layer="layer4")
    assert meta["graph"]["aliases"]["layer4"] == len(meta["graph"]["nodes"]) - 4

    check_padding()
    check_efficientnet_lite()
    check_transformers()

    zoo = ir_eval.randomize(Zoo())
    meta, tensors = meta_of(zoo)
    check_graph(meta, tensors)
    kinds = {n["op"]["op"] for n in meta["graph"]["nodes"]}
    want = {"group_norm", "gelu", "binary_const", "hard_sigmoid", "mul", "binary", "clip",
            "transpose", "layer_norm", "linear", "hardswish", "reshape", "reduce_mean",
            "concat"}
    assert want <= kinds, want - kinds
    consts = [n["op"] for n in meta["graph"]["nodes"] if n["op"]["op"] == "binary_const"]
    assert {(c["kind"], c["reversed"], tuple(c["shape"])) for c in consts} == {
        ("mul", False, (8, 1, 1)), ("div", False, (1, 1, 1)), ("sub", True, (1, 1, 1)),
        ("mul", False, (1, 1, 1))}, consts
    assert all(list(tensors[c["tensor"]].shape) == c["shape"] for c in consts)
    print(f"ok zoo: {check_ir(zoo, 'zoo', size=19)}")

    class Softmaxed(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 10, 3)

        def forward(self, x):
            return torch.softmax(self.conv(x).mean((2, 3)), 1)

    print("ok", expect_error(Softmaxed(), "softmax"))

    class Upsampled(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, 10, 3), nn.Upsample(scale_factor=2))

        def forward(self, x):
            return self.body(x).mean((2, 3))

    print("ok", expect_error(Upsampled(), "body.1", "Upsample"))

    class BatchMixed(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 10, 3)

        def forward(self, x):
            return self.conv(x).permute(1, 0, 2, 3).mean((2, 3)).t()

    print("ok", expect_error(BatchMixed(), "moves the batch"))

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.safetensors")
        export.export(torchvision.models.resnet18(num_classes=10), path, input_size=(64, 64),
                      mean=(0.5,) * 3, std=(0.25,) * 3, classes=[str(i) for i in range(10)],
                      default_layer="layer4", name="r18")
        assert os.path.getsize(path) > 40e6
    print("all export checks passed")


if __name__ == "__main__":
    main()
