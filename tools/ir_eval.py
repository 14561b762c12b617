#!/usr/bin/env python3
"""A reference interpreter of the engine's IR (forward only, in torch), to prove that a file
written by tools/export.py computes what the PyTorch model computes, before (or apart from)
the engine's own kernels. Ops follow docs/architecture.md ("Shapes") and src/graph/ops/: activations
are [N, d0, d1, d2] (the per-image shape with the batch in front), axis fields are d-axes.

    /opt/ref/bin/python tools/ir_eval.py --torchvision convnext_tiny,mobilenet_v3_large
    from ir_eval import load, evaluate; logits = evaluate(*load("m.safetensors"), x)

--torchvision builds each net with random weights (norm statistics and layer scales drawn
too, so that no term vanishes), exports it to a temporary file, evaluates the file on a random
batch in float32 and float64 and prints max|IR - torch| / max|torch| of the logits; the exit
status is 1 where the float32 error is above --tol (default 1e-4).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export  # noqa: E402

ARITH = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div}


def load(path):
    """(metadata, {name: tensor}) of a self-describing model file."""
    with safe_open(path, "pt") as f:
        meta = json.loads(f.metadata()[export.META_KEY])
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return meta, tensors


def _need(cond, msg):
    if not cond:
        raise ValueError(msg)


def conv2d(op, x, t):
    w = t[op["weight"]]
    kh, kw = op["kernel"]
    _need(x.shape[1] == op["in_channels"], "in_channels")
    _need(list(w.shape) == [op["out_channels"], op["in_channels"] // op["groups"], kh, kw],
          "weight shape")
    (pt, pl), (pb, pr) = op["padding"], op.get("padding_end") or op["padding"]
    x = F.pad(x, (pl, pr, pt, pb))
    b = t[op["bias"]] if op.get("bias") else None
    return F.conv2d(x, w, b, op["stride"], 0, op["dilation"], op["groups"])


def batch_norm2d(op, x, t):
    g, b, m, v = (t[f"{op['prefix']}.{k}"].view(1, -1, 1, 1)
                  for k in ("weight", "bias", "running_mean", "running_var"))
    _need(x.shape[1] == op["channels"], "channels")
    return (x - m) / torch.sqrt(v + op["eps"]) * g + b


def linear(op, x, t):
    a, n = op.get("axis", 0), x.shape[0]
    dims = list(x.shape[1:])
    _need(dims[a] == op["in_features"] and all(d == 1 for d in dims[a + 1:]),
          f"linear axis {a} of {dims}")
    y = x.reshape(n, -1, op["in_features"]) @ t[op["weight"]].T
    if op.get("bias"):
        y = y + t[op["bias"]]
    dims[a] = op["out_features"]
    return y.reshape(n, *dims)


def layer_norm(op, x, t):
    a, n = op["axis"], x.shape[0]
    dims = list(x.shape[1:])
    _need(math.prod(dims[a:]) == op["features"], f"layer_norm features over {dims[a:]}")
    y = x.reshape(n, *dims[:a], op["features"])
    mu = y.mean(-1, keepdim=True)
    var = ((y - mu) ** 2).mean(-1, keepdim=True)
    y = (y - mu) / torch.sqrt(var + op["eps"])
    if op.get("weight"):
        y = y * t[op["weight"]]
    if op.get("bias"):
        y = y + t[op["bias"]]
    return y.reshape(x.shape)


def group_norm(op, x, t):
    n, c = x.shape[:2]
    _need(c == op["channels"] and c % op["groups"] == 0, "group_norm channels")
    y = x.reshape(n, op["groups"], -1)
    mu = y.mean(-1, keepdim=True)
    var = ((y - mu) ** 2).mean(-1, keepdim=True)
    y = ((y - mu) / torch.sqrt(var + op["eps"])).reshape(x.shape)
    if op.get("weight"):
        y = y * t[op["weight"]].view(1, c, 1, 1)
    if op.get("bias"):
        y = y + t[op["bias"]].view(1, c, 1, 1)
    return y


def binary(op, a, b):
    _need(all(p == q or 1 in (p, q) for p, q in zip(a.shape[1:], b.shape[1:])),
          f"binary of {list(a.shape)} and {list(b.shape)}")
    return ARITH[op["kind"]](a, b)


def binary_const(op, x, t):
    c = t[op["tensor"]]
    _need(list(c.shape) == op["shape"], f"tensor shape {list(c.shape)} != {op['shape']}")
    _need(all(s in (1, d) for s, d in zip(op["shape"], x.shape[1:])), "binary_const shape")
    c = c.unsqueeze(0)
    return ARITH[op["kind"]](c, x) if op["reversed"] else ARITH[op["kind"]](x, c)


def concat(op, *xs):
    d = op.get("axis", 0) + 1
    for x in xs:
        _need(all(x.shape[i] == xs[0].shape[i] for i in range(4) if i != d), "concat shapes")
    return torch.cat(xs, d)


def reshape(op, x):
    _need(math.prod(op["shape"]) == math.prod(x.shape[1:]), "reshape elements")
    return x.reshape(x.shape[0], *op["shape"])


def transpose(op, x):
    _need(sorted(op["perm"]) == [0, 1, 2], "perm")
    return x.permute(0, *(p + 1 for p in op["perm"])).contiguous()


def pad(op, x):
    widths = []
    for b, e in zip(op["begin"][::-1], op["end"][::-1]):  # F.pad lists the last dim first
        widths += [b, e]
    return F.pad(x, widths, value=op["value"])


def gelu(op, x):
    if op["approximate"]:
        return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def mat_mul(op, a, b):
    """Per image alpha * [batch, m, k] by [batch, k, n], a batch of 1 broadcast."""
    _need(a.shape[3] == b.shape[2] and 1 in (a.shape[1], b.shape[1]) or
          a.shape[1] == b.shape[1], f"mat_mul of {list(a.shape)} and {list(b.shape)}")
    alpha = op.get("alpha", 1.0)
    return a @ b if alpha == 1.0 else alpha * (a @ b)


def clip(op, x):
    return torch.clamp(x, op.get("min"), op.get("max"))


OPS = {
    "conv2d": conv2d,
    "batch_norm2d": batch_norm2d,
    "linear": linear,
    "layer_norm": layer_norm,
    "group_norm": group_norm,
    "binary_const": binary_const,
}
STATELESS = {
    "relu": lambda op, x: torch.clamp(x, min=0),
    "relu6": lambda op, x: torch.clamp(x, 0, 6),
    "sigmoid": lambda op, x: torch.sigmoid(x),
    "silu": lambda op, x: x * torch.sigmoid(x),
    "hardswish": lambda op, x: x * torch.clamp(x + 3, 0, 6) / 6,
    "hard_sigmoid": lambda op, x: torch.clamp(op["alpha"] * x + op["beta"], 0, 1),
    "gelu": gelu,
    "erf": lambda op, x: torch.erf(x),
    "clip": clip,
    "max_pool2d": lambda op, x: F.max_pool2d(x, op["kernel"], op["stride"], op["padding"],
                                             op["dilation"], op["ceil_mode"]),
    "avg_pool2d": lambda op, x: F.avg_pool2d(x, op["kernel"], op["stride"], op["padding"],
                                             op["ceil_mode"], op["count_include_pad"]),
    "adaptive_avg_pool2d": lambda op, x: F.adaptive_avg_pool2d(x, op["output"]),
    "flatten": lambda op, x: x.reshape(x.shape[0], -1, 1, 1),
    "dropout": lambda op, x: x,
    "reshape": reshape,
    "transpose": transpose,
    "slice": lambda op, x: x.narrow(op["axis"] + 1, op["start"], op["end"] - op["start"]),
    "pad": pad,
    "reduce_mean": lambda op, x: x.mean(tuple(range(op["start"] + 1, op["end"] + 1)), True),
    "add": lambda op, a, b: (_need(a.shape == b.shape, "add shapes"), a + b)[1],
    "mul": lambda op, a, b: (_need(b.shape[1:] in (a.shape[1:], (a.shape[1], 1, 1)),
                                   "mul shapes"), a * b)[1],
    "binary": binary,
    "concat": concat,
    "softmax": lambda op, x: torch.softmax(x, op["axis"] + 1),
    "gather": lambda op, x: x.reshape(x.shape[0], -1)[:, op["index"]].reshape(
        x.shape[0], *op["shape"]),
    "mat_mul": mat_mul,
}


def evaluate(meta, tensors, x, dtype=torch.float64):
    """Logits [N, classes] of the file's graph on the normalised batch `x` [N, C, H, W]."""
    t = {k: v.to(dtype) for k, v in tensors.items()}
    nodes = meta["graph"]["nodes"]
    vals = []
    for i, node in enumerate(nodes):
        op, kind = node["op"], node["op"]["op"]
        _need(all(j < i for j in node["inputs"]), f"node {i} reads a later node")
        args = [vals[j] for j in node["inputs"]]
        try:
            if kind == "input":
                _need(x.shape[1] == op["channels"], "input channels")
                y = x.to(dtype)
            elif kind in OPS:
                y = OPS[kind](op, *args, t)
            else:
                y = STATELESS[kind](op, *args)
        except (ValueError, KeyError, RuntimeError, IndexError) as e:
            raise ValueError(f"node {i} `{node['name']}` ({kind}): {e}") from e
        _need(y.dim() == 4, f"node `{node['name']}` gives a {y.dim()}-D value")
        vals.append(y)
    out = vals[-1]
    _need(list(out.shape[2:]) == [1, 1], f"output shape {list(out.shape[1:])}")
    return out[:, :, 0, 0]


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Draws the norms' affine and statistics and the layer scales, which a fresh model holds
    at 1, 0 or 1e-6 (a mapping error there would not show in the logits)."""
    g = torch.Generator().manual_seed(seed)
    u = lambda t, lo, hi: t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)  # noqa: E731
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.LayerNorm, nn.GroupNorm)):
                if getattr(m, "weight", None) is not None:
                    u(m.weight, 0.5, 1.5)
                if getattr(m, "bias", None) is not None:
                    u(m.bias, -0.3, 0.3)
            if isinstance(m, nn.BatchNorm2d):
                u(m.running_mean, -0.2, 0.2)
                u(m.running_var, 0.5, 2.0)
        for name, p in model.named_parameters():
            if name.endswith("layer_scale"):
                u(p, 0.2, 1.0)
    return model.eval()


def rel_err(got, want) -> float:
    return float((got - want).abs().max() / want.abs().max())


def check(model: nn.Module, size=(224, 224), batch=2, seed=0, name="model") -> dict:
    """Exports `model` to a temporary file and compares the file's IR, evaluated here, with
    the model's logits: {"nodes", "f32", "f64"} (max relative errors)."""
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.safetensors")
        with torch.no_grad():
            classes = model(torch.zeros(1, 3, *size)).shape[1]
        export.export(model, path, input_size=size, mean=(0.5,) * 3, std=(0.25,) * 3,
                      classes=[str(i) for i in range(classes)], default_layer="input",
                      name=name)
        meta, tensors = load(path)
    x = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(seed))
    out = {"nodes": len(meta["graph"]["nodes"])}
    with torch.no_grad():
        want = model(x)
        out["f32"] = rel_err(evaluate(meta, tensors, x, torch.float32), want)
        want64 = copy.deepcopy(model).double()(x.double())
        out["f64"] = rel_err(evaluate(meta, tensors, x, torch.float64), want64)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--torchvision", required=True, help="comma list of torchvision models")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    import torchvision

    torch.set_num_threads(2)
    bad = 0
    for arch in [a.strip() for a in args.torchvision.split(",") if a.strip()]:
        torch.manual_seed(args.seed)
        model = randomize(getattr(torchvision.models, arch)(weights=None), args.seed)
        r = check(model, (args.size, args.size), args.batch, args.seed, arch)
        ok = r["f32"] <= args.tol
        bad += not ok
        print(f"{'ok' if ok else 'FAIL'} {arch}: {r['nodes']} nodes, max rel logits error "
              f"f32 {r['f32']:.2e}, f64 {r['f64']:.2e}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
