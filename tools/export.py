#!/usr/bin/env python3
"""Export a PyTorch CNN or vision transformer to a self-describing gradcam-wgpu model file.

The module is traced with ``torch.fx``; every node is mapped to one op of the engine's IR
(``src/graph/``) and the file's ``__metadata__["gradcam_wgpu"]`` gets the graph, the
input size, the normalisation, the class names, the default target layer and the output kind
(schema: ``src/model/meta.rs``). Tensors keep their ``state_dict`` names, so layer names in
the engine are the module paths PyTorch users know (``layer4``, ``features.29``, ...).

Tensors of rank 2 to 4 with the batch first; the engine's per-image shape is the torch shape
without the batch, padded on the right with 1s (``[N, L, D]`` is ``[L, D, 1]``), so axis
fields count from torch's dim 1 (docs/architecture.md, "Shapes"). Supported: Conv2d (any groups),
BatchNorm2d (eval), LayerNorm and F.layer_norm (over the last dims), GroupNorm, ReLU,
ReLU6/Hardtanh/clamp, SiLU, Sigmoid, Hardswish, Hardsigmoid, GELU (erf or tanh), MaxPool2d,
AvgPool2d, AdaptiveAvgPool2d, Linear (on the last dim of any rank), Dropout, StochasticDepth
and Identity (the identity), ``+ - * /`` and their torch forms (two tensors broadcasting per
dim, or a tensor and a Python number or a parameter such as ConvNeXt's layer_scale, stored
as a tensor), ``torch.cat`` on any dim but the batch, permute/transpose that keep the batch
first, flatten/view/reshape/squeeze/unsqueeze that keep the batch, ``mean`` over contiguous
dims, constant padding (ZeroPad2d, ConstantPad2d, ``F.pad``; a zero pad read by a conv is
folded into the conv's ``padding``/``padding_end``, as TF-"SAME" ports such as
EfficientNet-Lite write it), ``F.conv2d`` with a parameter as weight (a Conv2d subclass's own
forward: the node is named by the module's path), and the functional forms of the
activations and pools. Vision transformers (torchvision's VisionTransformer, DeiT-style nets):
nn.MultiheadAttention (self-attention, batch first) is traced as one call and decomposed
(``_Exporter.attention``), a parameter expanded to the batch joins ``torch.cat`` (class and
distillation tokens: a zero pad plus a constant), ``x[:, i]`` and ``x[:, a:b]`` are slices;
3-D ``[N, T, C]`` tensors are listed as token layers (``tokens``, for ``--reshape auto``) and
the default layer is the last token LayerNorm before the last attention (``auto_layer``).
torchvision's Swin V1: its fx-wrapped ``shifted_window_attention`` and ``_patch_merging_pad``
are decomposed (``window_attention``, ``patch_merging_pad``: the window partition, shift and
merge are gathers by index maps, stored per element), ``_get_relative_position_bias`` is
evaluated at export, channels-last layers are grid tokens; Swin V2 (``logit_scale``) is not.
Anything else is an error naming the module (or function) and the op. tools/ir_eval.py
evaluates an exported file's IR in torch, to check it against the model.

    python tools/export.py --torchvision resnet18 --out resnet18.safetensors
    python -c 'from export import export; export(model, "m.safetensors", input_size=(128, 128),
                                                 ...)'
"""

from __future__ import annotations

import argparse
import json
import operator
import re
from collections.abc import Sequence

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
import numpy as np
from safetensors.numpy import load_file
from torch.fx.passes.shape_prop import ShapeProp

META_KEY = "gradcam_wgpu"
META_VERSION = 1


_ST_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.uint8): "U8", np.dtype(np.uint16): "U16",
              np.dtype(np.int64): "I64"}


def save_safetensors(tensors: dict, path: str, metadata: dict):
    """Byte-reproducible safetensors writer (the safetensors package writes the
    header keys in hash-map order, so reruns would churn the files in git)."""
    header = {"__metadata__": dict(sorted(metadata.items()))}
    blobs, off = [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        b = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": _ST_DTYPES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * (-len(hj) % 8)
    with open(path, "wb") as f:
        f.write(len(hj).to_bytes(8, "little"))
        f.write(hj)
        for b in blobs:
            f.write(b)
    back = load_file(path)  # round-trip check with the official reader
    assert back.keys() == tensors.keys()
    for k in tensors:
        assert back[k].dtype == tensors[k].dtype and np.array_equal(back[k], tensors[k]), k


class UnsupportedOp(ValueError):
    """A module or function the engine's IR cannot express."""


def _pair(v) -> list[int]:
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"expected 2 values, got {v!r}")
        return [int(v[0]), int(v[1])]
    return [int(v), int(v)]


_BINARY = {"add", "sub", "mul", "div"}
# Shape-only tensor methods and functions: the same data per image under the output's shape.
_RESHAPES_M = {"view", "reshape", "flatten", "squeeze", "unsqueeze"}
_RESHAPES_F = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}
_IDENTITY = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity)


def internal(shape: Sequence[int]) -> list[int]:
    """The engine's per-image shape of a torch shape [N, ...] (rank 2..4): the batch dropped,
    padded on the right with 1s (ir-spec: torch dim d >= 1 is internal axis d - 1)."""
    if not 2 <= len(shape) <= 4:
        raise UnsupportedOp(f"a {len(shape)}-D tensor (shape {list(shape)}); only 2-D to 4-D")
    return [int(v) for v in shape[1:]] + [1] * (4 - len(shape))


class _Tracer(torch.fx.Tracer):
    """fx cannot trace into nn.MultiheadAttention (its forward branches on tensor values):
    it stays one call, decomposed by `_Exporter.attention`."""

    def is_leaf_module(self, m: nn.Module, path: str) -> bool:
        return isinstance(m, nn.MultiheadAttention) or super().is_leaf_module(m, path)


class _Exporter:
    BATCH = 2  # shape propagation batch: a reshape that keeps it keeps the images apart

    def __init__(self, module: nn.Module, input_size: Sequence[int], in_channels: int):
        self.module = module.eval()
        tracer = _Tracer()
        graph = tracer.trace(self.module)
        self.gm = torch.fx.GraphModule(tracer.root, graph, type(module).__name__)
        example = torch.zeros(self.BATCH, in_channels, *input_size)
        ShapeProp(self.gm).propagate(example)
        self.modules = dict(self.gm.named_modules())
        self.state = self.module.state_dict()
        self.nodes: list[dict] = []
        self.index: dict[str, int] = {}  # fx node name -> IR node index
        self.names: set[str] = set()
        self.scope_last: dict[str, int] = {}  # container path -> last IR node inside it
        self.tensors: dict[str, torch.Tensor] = {}
        self.consts: dict[str, tuple[str, torch.Tensor]] = {}  # get_attr node -> (name, value)
        self.tokens: dict[int, str] = {}  # IR node -> "sequence" [N, T, C] or "grid" (NHWC)
        self.nhwc: set[str] = set()  # fx nodes of channels-last [N, h, w, C] tensors

    # -- helpers -----------------------------------------------------------------------
    def shape(self, n: torch.fx.Node) -> list[int]:
        meta = n.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape"):
            raise UnsupportedOp(f"`{n.name}` does not produce a tensor")
        return list(meta.shape)

    def ishape(self, n: torch.fx.Node, at: torch.fx.Node | None = None) -> list[int]:
        """`n`'s per-image shape in the engine; errors name `at` (default `n`)."""
        try:
            return internal(self.shape(n))
        except UnsupportedOp as e:
            raise UnsupportedOp(f"{self.where(at or n)}: {e}") from None

    def where(self, n: torch.fx.Node) -> str:
        if n.op == "call_module":
            return f"module `{n.target}` ({type(self.modules[n.target]).__name__})"
        target = getattr(n.target, "__name__", str(n.target))
        return f"`{n.name}` ({n.op} {target})"

    def inp(self, n: torch.fx.Node, a) -> int:
        if isinstance(a, torch.fx.Node) and a.name in self.consts:
            raise UnsupportedOp(f"{self.where(n)}: reads parameter `{a.target}` directly "
                                "(only element-wise ops and norms' affine take one)")
        if not isinstance(a, torch.fx.Node) or a.name not in self.index:
            raise UnsupportedOp(
                f"{self.where(n)}: input {a!r} is not a tensor produced by a supported op"
            )
        return self.index[a.name]

    def tensor(self, name: str, shape: Sequence[int] | None = None) -> str:
        if name not in self.state:
            raise UnsupportedOp(f"tensor `{name}` is not in the state dict")
        t = self.state[name].detach().to(torch.float32).contiguous().clone()
        self.tensors[name] = t if shape is None else t.reshape(list(shape))
        return name

    def constant(self, base: str, value: torch.Tensor, owned: bool = False) -> str:
        """Stores `value` under `base`, or `base:k` where that name holds another value (or,
        unless `owned`, is a state dict entry)."""
        value = value.detach().to(torch.float32).contiguous().clone()
        name, k = base, 0
        while True:
            held = self.tensors.get(name)
            if held is not None and held.shape == value.shape and torch.equal(held, value):
                break
            if held is None and (owned and name == base or name not in self.state):
                break
            k += 1
            name = f"{base}:{k}"
        self.tensors[name] = value
        return name

    def param(self, n: torch.fx.Node, a, shape: Sequence[int]) -> str | None:
        """A norm's affine weight or bias given as a parameter (get_attr), stored as `shape`."""
        if a is None:
            return None
        if not isinstance(a, torch.fx.Node) or a.name not in self.consts:
            raise UnsupportedOp(f"{self.where(n)}: affine {a!r} is not a parameter")
        name, value = self.consts[a.name]
        if value.numel() != int(np.prod(shape)):
            raise UnsupportedOp(f"{self.where(n)}: `{name}` has shape {list(value.shape)}")
        return self.constant(name, value.reshape(list(shape)), owned=True)

    def unique(self, base: str) -> str:
        name, k = base, 0
        while name in self.names:
            k += 1
            name = f"{base}:{k}"
        self.names.add(name)
        return name

    def emit(self, n: torch.fx.Node, op: dict, inputs: list[int], base: str | None = None
             ) -> int:
        if base is None:  # else the caller's (a functional conv named by its module)
            base = self.default_name(n)
        idx = len(self.nodes)
        self.nodes.append({"name": self.unique(base), "op": op, "inputs": inputs})
        self.index[n.name] = idx
        for path in self.stack(n):
            self.scope_last[path] = idx
        return idx

    def default_name(self, n: torch.fx.Node) -> str:
        """A module's path, else the op's kind in its enclosing module's path."""
        if n.op == "call_module":
            return str(n.target)
        scope = self.scope(n)
        kind = re.sub(r"_\d+$", "", n.name)  # fx numbers repeats globally; we do per scope
        return f"{scope}.{kind}" if scope else kind

    def alias(self, n: torch.fx.Node, a) -> None:
        """`n` is the same data as its input (identity at inference)."""
        self.emit(n, {"op": "dropout"}, [self.inp(n, a)])

    @staticmethod
    def stack(n: torch.fx.Node) -> list[str]:
        """Module paths enclosing `n`, outermost first (a repeated call's key is `path@k`)."""
        return [v[0] for k, v in n.meta.get("nn_module_stack", {}).items() if v[0]]

    def scope(self, n: torch.fx.Node) -> str:
        paths = self.stack(n)
        return paths[-1] if paths else ""

    def dims(self, n: torch.fx.Node, x, dims) -> list[int]:
        """`dims` of `x` normalised (non-negative); the batch (dim 0) is refused."""
        rank = len(self.shape(x))
        dims = [int(d) % rank for d in (dims if isinstance(dims, (tuple, list)) else [dims])]
        if 0 in dims:
            raise UnsupportedOp(f"{self.where(n)}: operates on the batch dimension")
        return dims

    # -- op mapping -------------------------------------------------------------------
    def conv(self, n, m: nn.Conv2d, x):
        if m.padding_mode != "zeros":
            raise UnsupportedOp(f"{self.where(n)}: padding_mode `{m.padding_mode}`")
        p = str(n.target)
        self.conv_op(n, x, self.tensor(f"{p}.weight"),
                     self.tensor(f"{p}.bias") if m.bias is not None else None,
                     m.stride, m.padding, m.dilation, m.groups)

    def conv_fn(self, n, x, weight, bias, stride, padding, dilation, groups):
        """`F.conv2d` with parameters as weight and bias; inside a Conv2d subclass that owns
        the weight (a TF-"SAME" conv's forward) the node takes the module's path."""
        def own(a, what):
            if a is None:
                return None
            if not isinstance(a, torch.fx.Node) or a.name not in self.consts:
                raise UnsupportedOp(f"{self.where(n)}: {what} {a!r} is not a parameter")
            name, _ = self.consts[a.name]
            return self.tensor(name)
        w, b = own(weight, "weight"), own(bias, "bias")
        scope = self.scope(n)
        m = dict(self.module.named_modules()).get(scope)  # fx keeps only called modules
        base = scope if isinstance(m, nn.Conv2d) and f"{scope}.weight" == w else None
        self.conv_op(n, x, w, b, stride, padding, dilation, groups, base)

    def conv_op(self, n, x, weight, bias, stride, padding, dilation, groups, base=None):
        w = self.tensors[weight]
        if w.dim() != 4:
            raise UnsupportedOp(f"{self.where(n)}: a {w.dim()}-D conv weight; only 2-D convs")
        kernel, dilation = list(w.shape[2:]), _pair(dilation)
        if isinstance(padding, str):
            if padding == "valid":
                padding = [0, 0]
            else:  # "same" (stride 1): symmetric only
                total = [d * (k - 1) for d, k in zip(dilation, kernel)]
                if any(t % 2 for t in total):
                    raise UnsupportedOp(f"{self.where(n)}: asymmetric 'same' padding")
                padding = [t // 2 for t in total]
        else:
            padding = _pair(padding)
        end = list(padding)
        src = self.inp(n, x)
        pad = self.nodes[src]["op"]
        if pad["op"] == "pad" and pad["value"] == 0.0 and pad["begin"][0] == pad["end"][0] == 0:
            # A zero pad read by a conv: folded (the pad node is pruned unless read elsewhere).
            padding = [p + b for p, b in zip(padding, pad["begin"][1:])]
            end = [p + e for p, e in zip(end, pad["end"][1:])]
            src = self.nodes[src]["inputs"][0]
        op = {
            "op": "conv2d",
            "weight": weight,
            "bias": bias,
            "in_channels": int(w.shape[1]) * int(groups),
            "out_channels": int(w.shape[0]),
            "kernel": kernel,
            "stride": _pair(stride),
            "padding": padding,
            "dilation": dilation,
            "groups": int(groups),
        }
        if end != padding:
            op["padding_end"] = end  # absent = `padding`: symmetric files stay the same
        self.emit(n, op, [src], base)

    def pad(self, n, x, pads, mode="constant", value=0.0):
        """Constant padding of the last dims (`pads` as F.pad: last dim first, before/after)."""
        rank = len(self.shape(x))
        pads = [int(v) for v in pads]
        if mode != "constant":
            raise UnsupportedOp(f"{self.where(n)}: {mode} padding; only constant")
        if len(pads) % 2 or len(pads) // 2 > rank - 1 or min(pads, default=0) < 0:
            raise UnsupportedOp(f"{self.where(n)}: pad {pads} (only non-negative, not the batch)")
        if value is not None and not isinstance(value, (int, float)):
            raise UnsupportedOp(f"{self.where(n)}: pad value {value!r}")
        begin, end = [0, 0, 0], [0, 0, 0]
        for i in range(len(pads) // 2):
            d = rank - 2 - i  # IR axis of torch dim rank-1-i
            begin[d], end[d] = pads[2 * i], pads[2 * i + 1]
        self.ishape(n)  # rank check
        self.emit(n, {"op": "pad", "begin": begin, "end": end, "value": float(value or 0.0)},
                  [self.inp(n, x)])

    def max_pool(self, n, x, kernel, stride, padding, dilation, ceil_mode, return_indices):
        if return_indices:
            raise UnsupportedOp(f"{self.where(n)}: return_indices")
        self.emit(
            n,
            {
                "op": "max_pool2d",
                "kernel": _pair(kernel),
                "stride": _pair(stride if stride not in (None, []) else kernel),
                "padding": _pair(padding),
                "dilation": _pair(dilation),
                "ceil_mode": bool(ceil_mode),
            },
            [self.inp(n, x)],
        )

    def avg_pool(self, n, x, kernel, stride, padding, ceil_mode, include_pad, divisor):
        if divisor is not None:
            raise UnsupportedOp(f"{self.where(n)}: divisor_override")
        self.emit(
            n,
            {
                "op": "avg_pool2d",
                "kernel": _pair(kernel),
                "stride": _pair(stride if stride not in (None, []) else kernel),
                "padding": _pair(padding),
                "ceil_mode": bool(ceil_mode),
                "count_include_pad": bool(include_pad),
            },
            [self.inp(n, x)],
        )

    def adaptive(self, n, x):
        out = self.shape(n)
        if len(out) != 4:
            raise UnsupportedOp(f"{self.where(n)}: on a {len(out)}-D tensor; only [N, C, H, W]")
        self.emit(n, {"op": "adaptive_avg_pool2d", "output": out[2:]}, [self.inp(n, x)])

    def reshape(self, n, x):
        """Any view of `x` that keeps the batch: `flatten` to [N, F], else `reshape`."""
        out, inp = self.shape(n), self.shape(x)
        if out[:1] != inp[:1]:
            raise UnsupportedOp(f"{self.where(n)}: {inp} to {out} does not keep the batch")
        if len(out) == 2:
            self.emit(n, {"op": "flatten"}, [self.inp(n, x)])
        elif self.ishape(n) == self.ishape(x, n):
            self.alias(n, x)
        else:
            self.emit(n, {"op": "reshape", "shape": self.ishape(n)}, [self.inp(n, x)])

    def permute(self, n, x, dims):
        dims = [int(d) % len(self.shape(x)) for d in dims]
        if not dims or dims[0] != 0:
            raise UnsupportedOp(f"{self.where(n)}: permute {dims} moves the batch")
        perm = [d - 1 for d in dims[1:]]
        perm += list(range(len(perm), 3))
        if perm == [0, 1, 2]:
            self.alias(n, x)
        else:
            self.ishape(n)  # rank check
            self.emit(n, {"op": "transpose", "perm": perm}, [self.inp(n, x)])

    def swap(self, n, x, d0, d1):
        d0, d1 = self.dims(n, x, [d0, d1])
        dims = list(range(len(self.shape(x))))
        dims[d0], dims[d1] = dims[d1], dims[d0]
        self.permute(n, x, dims)

    def operand(self, n, a):
        """('x', node) for an activation, ('c', value, base name) for a constant."""
        if isinstance(a, torch.fx.Node):
            if a.name in self.consts:
                name, value = self.consts[a.name]
                return ("c", value, name)
            return ("x", a)
        if isinstance(a, (int, float)) and not isinstance(a, bool):
            return ("c", torch.tensor(float(a)), None)
        raise UnsupportedOp(f"{self.where(n)}: operand {a!r}")

    def binary(self, n, kind: str, a, b):
        oa, ob = self.operand(n, a), self.operand(n, b)
        if oa[0] == "c" and ob[0] == "c":
            raise UnsupportedOp(f"{self.where(n)}: {kind} of two constants")
        if oa[0] == "c" or ob[0] == "c":
            self.binary_const(n, kind, oa, ob)
            return
        sa, sb = self.shape(a), self.shape(b)
        if kind == "add" and sa == sb:
            self.emit(n, {"op": "add"}, [self.inp(n, a), self.inp(n, b)])
            return
        if kind == "mul":
            gate = lambda s, o: len(s) == 4 and s[2:] == [1, 1] and s[:2] == o[:2]  # noqa: E731
            if sa != sb and gate(sa, sb):
                a, b, sa, sb = b, a, sb, sa  # the engine's mul broadcasts its second operand
            if sa == sb or gate(sb, sa):
                self.emit(n, {"op": "mul"}, [self.inp(n, a), self.inp(n, b)])
                return
        if len(sa) != len(sb) or sa[0] != sb[0]:
            raise UnsupportedOp(f"{self.where(n)}: {kind} of shapes {sa} and {sb}")
        self.ishape(n)  # rank check
        self.emit(n, {"op": "binary", "kind": kind}, [self.inp(n, a), self.inp(n, b)])

    def binary_const(self, n, kind, oa, ob):
        reversed_ = oa[0] == "c"
        (_, value, name), (_, x) = (oa, ob) if reversed_ else (ob, oa)
        xs = self.shape(x)
        cs = list(value.shape)
        if len(cs) > len(xs) or any(c not in (1, d) for c, d in zip(cs[::-1], xs[::-1])) or (
            len(cs) == len(xs) and cs[0] != 1
        ):
            raise UnsupportedOp(f"{self.where(n)}: {kind} of {xs} and a constant of shape {cs}")
        self.ishape(x, n)  # rank check
        shape = internal([1] * (len(xs) - len(cs)) + cs)
        if name is None:  # a Python number: named after the op, as emit() names the node
            scope, op = self.scope(n), re.sub(r"_\d+$", "", n.name)
            name = f"{scope}.{op}" if scope else op
            tensor = self.constant(name, value.reshape(shape))
        else:
            tensor = self.constant(name, value.reshape(shape), owned=True)
        self.emit(
            n,
            {"op": "binary_const", "kind": kind, "tensor": tensor, "shape": shape,
             "reversed": reversed_},
            [self.inp(n, x)],
        )

    def concat(self, n, tensors, dim=0, base=None):
        (dim,) = self.dims(n, n, [dim])
        self.ishape(n)  # rank check
        consts = [isinstance(t, torch.fx.Node) and t.name in self.consts for t in tensors]
        if any(consts):
            self.concat_const(n, tensors, consts, dim)
            return
        op = {"op": "concat"}
        if dim != 1:
            op["axis"] = dim - 1  # absent = 0: files of the old unit `concat` stay the same
        self.emit(n, op, [self.inp(n, t) for t in tensors], base)

    def concat_const(self, n, tensors, consts, dim):
        """`torch.cat` of activations and constants (ViT's class token expanded to the batch):
        the activations zero-padded along `dim`, plus the constants at their places (exact:
        each element is a sum with 0)."""
        xs = [i for i, c in enumerate(consts) if not c]
        if not xs or xs != list(range(xs[0], xs[-1] + 1)):
            raise UnsupportedOp(f"{self.where(n)}: cat of constants "
                                + ("only" if not xs else "between activations"))
        out = self.shape(n)
        full = torch.zeros([1] + out[1:])
        sizes = [self.shape(t)[dim] for t in tensors]
        for i, t in enumerate(tensors):
            if consts[i]:
                name, value = self.consts[t.name]
                if value.dim() != len(out) or value.shape[0] != 1:
                    raise UnsupportedOp(f"{self.where(n)}: cat of `{name}` of shape "
                                        f"{list(value.shape)}")
                full.narrow(dim, sum(sizes[:i]), sizes[i]).copy_(value)
        default = self.default_name(n)
        if len(xs) > 1:
            self.concat(n, [tensors[i] for i in xs], dim, base=f"{default}:x")
            src = self.index[n.name]
        else:
            src = self.inp(n, tensors[xs[0]])
        begin, end = [0, 0, 0], [0, 0, 0]
        begin[dim - 1], end[dim - 1] = sum(sizes[:xs[0]]), sum(sizes[xs[-1] + 1:])
        pad = self.emit(n, {"op": "pad", "begin": begin, "end": end, "value": 0.0}, [src],
                        f"{default}:pad")
        shape = internal(out)
        tensor = self.constant(default, full.reshape(shape))
        self.emit(n, {"op": "binary_const", "kind": "add", "tensor": tensor, "shape": shape,
                      "reversed": False}, [pad])

    def getitem(self, n, x, idx):
        """`x[:, ...]` with ints and step-1 slices (ViT's `x[:, 0]`); an attention module's
        output tuple's first element."""
        if x.op == "call_module" and isinstance(self.modules[x.target], nn.MultiheadAttention):
            if idx != 0:
                raise UnsupportedOp(f"{self.where(x)}: reads the attention weights (output "
                                    f"{idx}); only the attention output (0)")
            self.index[n.name] = self.index[x.name]
            return
        shape = self.shape(x)
        idx = idx if isinstance(idx, tuple) else (idx,)
        if not idx or idx[0] != slice(None) or len(idx) > len(shape):
            raise UnsupportedOp(f"{self.where(n)}: index {idx!r} (only `x[:, ...]` with "
                                "integers and slices, the batch whole)")
        ops, kept = [], list(shape)
        for d, s in enumerate(idx[1:], start=1):
            if isinstance(s, int) and not isinstance(s, bool) and -shape[d] <= s < shape[d]:
                start, end = s % shape[d], s % shape[d] + 1
            elif isinstance(s, slice) and s.step in (None, 1) and all(
                    v is None or isinstance(v, int) for v in (s.start, s.stop)):
                start, end, _ = s.indices(shape[d])
                if start >= end:
                    raise UnsupportedOp(f"{self.where(n)}: empty slice {s!r}")
            else:
                raise UnsupportedOp(f"{self.where(n)}: index {s!r} of dim {d}")
            if (start, end) != (0, shape[d]):
                ops.append({"op": "slice", "axis": d - 1, "start": start, "end": end})
                kept[d] = end - start
        if internal(kept) != self.ishape(n):  # an integer index dropped a dim
            ops.append({"op": "flatten"} if len(self.shape(n)) == 2 else
                       {"op": "reshape", "shape": self.ishape(n)})
        src, default = self.inp(n, x), self.default_name(n)
        ops = ops or [{"op": "dropout"}]  # x[:, :]: an alias
        for i, op in enumerate(ops):
            src = self.emit(n, op, [src], None if i == len(ops) - 1 else f"{default}:{op['op']}")

    def mean(self, n, x, dims, keepdim=False):
        if dims is None or dims == []:
            raise UnsupportedOp(f"{self.where(n)}: mean over every dimension (the batch too)")
        rank = len(self.shape(x))
        dims = sorted(self.dims(n, x, dims))
        if dims != list(range(dims[0], dims[-1] + 1)):
            raise UnsupportedOp(f"{self.where(n)}: mean over {dims}; only contiguous dims")
        if rank == 4 and dims == [2, 3]:  # global average pooling: the engine's own op
            self.emit(n, {"op": "adaptive_avg_pool2d", "output": [1, 1]}, [self.inp(n, x)])
            return
        self.ishape(x, n)
        kept = [d if i not in dims else 1 for i, d in enumerate(self.shape(x))]
        idx = self.emit(n, {"op": "reduce_mean", "start": dims[0] - 1, "end": dims[-1]},
                        [self.inp(n, x)])
        if internal(kept) != self.ishape(n):  # keepdim=False dropped a dim before others
            self.emit(n, {"op": "reshape", "shape": self.ishape(n)}, [idx])

    def unary(self, n, kind: str, x, **params):
        self.emit(n, {"op": kind, **params}, [self.inp(n, x)])

    def clamp(self, n, x, lo, hi):
        if (lo, hi) == (0.0, 6.0):
            self.unary(n, "relu6", x)
        elif lo == 0.0 and hi is None:
            self.unary(n, "relu", x)
        else:
            for v in (lo, hi):
                if v is not None and not isinstance(v, (int, float)):
                    raise UnsupportedOp(f"{self.where(n)}: clamp to a tensor")
            self.unary(n, "clip", x, min=None if lo is None else float(lo),
                       max=None if hi is None else float(hi))

    def gelu(self, n, x, approximate="none"):
        if approximate not in ("none", "tanh"):
            raise UnsupportedOp(f"{self.where(n)}: gelu approximate={approximate!r}")
        self.unary(n, "gelu", x, approximate=approximate == "tanh")

    def layer_norm(self, n, x, normalized, weight, bias, eps):
        normalized = [int(v) for v in normalized]
        s = self.shape(x)
        if len(normalized) >= len(s) or s[len(s) - len(normalized):] != normalized:
            raise UnsupportedOp(f"{self.where(n)}: layer_norm over {normalized} of {s}")
        self.ishape(x, n)
        features = int(np.prod(normalized))
        self.emit(
            n,
            {"op": "layer_norm", "axis": len(s) - 1 - len(normalized), "features": features,
             "eps": float(eps), "weight": weight(features), "bias": bias(features)},
            [self.inp(n, x)],
        )

    def group_norm(self, n, x, groups, weight, bias, eps):
        s = self.shape(x)
        self.ishape(x, n)
        if s[1] % groups:
            raise UnsupportedOp(f"{self.where(n)}: {s[1]} channels in {groups} groups")
        self.emit(
            n,
            {"op": "group_norm", "groups": int(groups), "channels": s[1], "eps": float(eps),
             "weight": weight(s[1]), "bias": bias(s[1])},
            [self.inp(n, x)],
        )

    def linear(self, n, x, weight: str, bias: str | None, in_features, out_features):
        self.ishape(x, n)  # rank check
        rank = len(self.shape(x))
        op = {"op": "linear", "weight": weight, "bias": bias, "in_features": in_features,
              "out_features": out_features}
        if rank > 2:
            op["axis"] = rank - 2  # the last torch dim; absent = 0 keeps old files the same
        self.emit(n, op, [self.inp(n, x)])

    def attention(self, n, m: nn.MultiheadAttention):
        """Self-attention as torch's F.multi_head_attention_forward computes it: the packed
        in_proj split into q, k and v, q scaled by head_dim**-0.5, heads [H, L, d],
        softmax(q kᵀ) v, heads merged back to [L, E], out_proj. The last node is named by the
        module's path, the probabilities `{path}.softmax`."""
        p, a, kw = str(n.target), list(n.args), n.kwargs
        names = ("query", "key", "value", "key_padding_mask", "need_weights", "attn_mask",
                 "average_attn_weights", "is_causal")
        args = dict(zip(names, a)) | dict(kw)
        x = args.get("query")
        if not (x is args.get("key") is args.get("value")):
            raise UnsupportedOp(f"{self.where(n)}: query, key and value differ; only "
                                "self-attention")
        if any(args.get(k) is not None for k in ("key_padding_mask", "attn_mask")) or \
                args.get("is_causal", False):
            raise UnsupportedOp(f"{self.where(n)}: attention masks")
        if not m.batch_first or not m._qkv_same_embed_dim or m.bias_k is not None or \
                m.add_zero_attn:
            raise UnsupportedOp(f"{self.where(n)}: only batch_first, packed in_proj, no bias_k "
                                "or add_zero_attn")
        s = self.shape(x)
        if len(s) != 3:
            raise UnsupportedOp(f"{self.where(n)}: input of shape {s}; expected [N, L, E]")
        e, h, length = m.embed_dim, m.num_heads, s[1]
        d = e // h
        src = self.emit(n, {"op": "linear", "weight": self.tensor(f"{p}.in_proj_weight"),
                            "bias": self.tensor(f"{p}.in_proj_bias")
                            if m.in_proj_bias is not None else None,
                            "in_features": e, "out_features": 3 * e, "axis": 1},
                        [self.inp(n, x)], f"{p}.in_proj")
        heads = []
        for i, (part, perm) in enumerate((("q", [1, 0, 2]), ("k", [1, 2, 0]), ("v", [1, 0, 2]))):
            t = self.emit(n, {"op": "slice", "axis": 1, "start": i * e, "end": (i + 1) * e},
                          [src], f"{p}.{part}")
            if part == "q":
                scale = self.constant(f"{p}.scale", torch.tensor(float(d) ** -0.5).reshape(
                    1, 1, 1))
                t = self.emit(n, {"op": "binary_const", "kind": "mul", "tensor": scale,
                                  "shape": [1, 1, 1], "reversed": False}, [t], f"{p}.q:scaled")
            t = self.emit(n, {"op": "reshape", "shape": [length, h, d]}, [t], f"{p}.{part}:heads")
            heads.append(self.emit(n, {"op": "transpose", "perm": perm}, [t], f"{p}.{part}:t"))
        q, k, v = heads
        t = self.emit(n, {"op": "mat_mul"}, [q, k], f"{p}.scores")
        t = self.emit(n, {"op": "softmax", "axis": 2}, [t], f"{p}.softmax")
        t = self.emit(n, {"op": "mat_mul"}, [t, v], f"{p}.context")
        t = self.emit(n, {"op": "transpose", "perm": [1, 0, 2]}, [t], f"{p}.context:t")
        t = self.emit(n, {"op": "reshape", "shape": [length, e, 1]}, [t], f"{p}.context:merged")
        self.emit(n, {"op": "linear", "weight": self.tensor(f"{p}.out_proj.weight"),
                      "bias": self.tensor(f"{p}.out_proj.bias") if m.out_proj.bias is not None
                      else None, "in_features": e, "out_features": e, "axis": 1}, [t], p)

    def gather(self, n, src: int, shape: Sequence[int], index: torch.Tensor, base: str) -> int:
        """An IR gather: output element i (row-major over `shape`) is input element index[i]."""
        return self.emit(n, {"op": "gather", "shape": [int(v) for v in shape],
                             "index": [int(v) for v in index.reshape(-1)]}, [src], base)

    def window_attention(self, n, a, kw):
        """torchvision's fx-wrapped `shifted_window_attention` (Swin V1) as torch computes it:
        pad to whole windows, roll and partition (one gather), qkv, heads as batches (free
        views and transposes, heads outermost), scaled q kᵀ plus the relative position bias
        and the shifted windows' mask (one constant), softmax, · v, heads merged, proj, windows
        merged, rolled back and unpadded (one gather). Named `{module}.softmax` etc."""
        names = ("input", "qkv_weight", "proj_weight", "relative_position_bias", "window_size",
                 "num_heads", "shift_size", "attention_dropout", "dropout", "qkv_bias",
                 "proj_bias", "logit_scale", "training")
        args = dict(zip(names, a)) | dict(kw)
        if args.get("logit_scale") is not None:
            raise UnsupportedOp(f"{self.where(n)}: Swin V2's cosine attention (logit_scale)")
        x, p = args["input"], self.scope(n)
        b, hh, ww, c = self.shape(x)
        wh, wwin = (int(v) for v in args["window_size"])
        heads, d = int(args["num_heads"]), c // int(args["num_heads"])
        pad_b, pad_r = (wh - hh % wh) % wh, (wwin - ww % wwin) % wwin
        ph, pw = hh + pad_b, ww + pad_r
        s0, s1 = (int(v) for v in args.get("shift_size", [0, 0]))
        s0, s1 = (0 if wh >= ph else s0), (0 if wwin >= pw else s1)
        nw, t = (ph // wh) * (pw // wwin), wh * wwin
        src = self.inp(n, x)
        if pad_b or pad_r:
            src = self.emit(n, {"op": "pad", "begin": [0, 0, 0], "end": [pad_b, pad_r, 0],
                                "value": 0.0}, [src], f"{p}.pad")
        # Window (r, q) position of each padded, rolled-back position (i, j).
        r = (torch.arange(ph) + s0) % ph  # rolled by -shift: row i reads row i + shift
        q = (torch.arange(pw) + s1) % pw
        rows = r.view(ph // wh, wh, 1, 1)
        cols = q.view(1, 1, pw // wwin, wwin)
        pos = (rows * pw + cols).permute(0, 2, 1, 3).reshape(nw, t)  # [window, token]
        index = pos.view(nw, t, 1) * c + torch.arange(c)
        src = self.gather(n, src, [nw, t, c], index, f"{p}.windows")

        def param(key):
            v = args.get(key)
            if v is None:
                return None
            if not isinstance(v, torch.fx.Node) or v.name not in self.consts:
                raise UnsupportedOp(f"{self.where(n)}: {key} is not a parameter")
            return self.tensor(self.consts[v.name][0])
        src = self.emit(n, {"op": "linear", "weight": param("qkv_weight"),
                            "bias": param("qkv_bias"), "in_features": c, "out_features": 3 * c,
                            "axis": 2}, [src], f"{p}.qkv")
        parts = []
        for i, part in enumerate("qkv"):
            u = self.emit(n, {"op": "slice", "axis": 2, "start": i * c, "end": (i + 1) * c},
                          [src], f"{p}.{part}")
            if part == "q":
                scale = self.constant(f"{p}.scale", torch.tensor(float(d) ** -0.5).view(1, 1, 1))
                u = self.emit(n, {"op": "binary_const", "kind": "mul", "tensor": scale,
                                  "shape": [1, 1, 1], "reversed": False}, [u], f"{p}.q:scaled")
            u = self.emit(n, {"op": "reshape", "shape": [nw * t, heads, d]}, [u],
                          f"{p}.{part}:heads")
            u = self.emit(n, {"op": "transpose", "perm": [1, 0, 2]}, [u], f"{p}.{part}:t")
            u = self.emit(n, {"op": "reshape", "shape": [heads * nw, t, d]}, [u],
                          f"{p}.{part}:batched")
            if part == "k":
                u = self.emit(n, {"op": "transpose", "perm": [0, 2, 1]}, [u], f"{p}.k:kt")
            parts.append(u)
        bias = args["relative_position_bias"]
        if not isinstance(bias, torch.fx.Node) or bias.name not in self.consts:
            raise UnsupportedOp(f"{self.where(n)}: relative_position_bias is not a constant")
        bias = self.consts[bias.name][1].reshape(heads, 1, t, t)
        mask = torch.zeros(ph, pw)
        if s0 or s1:
            count = 0
            for h0, h1 in ((0, -wh), (-wh, -s0), (-s0, None)):
                for w0, w1 in ((0, -wwin), (-wwin, -s1), (-s1, None)):
                    mask[h0:h1, w0:w1] = count
                    count += 1
        mask = mask.view(ph // wh, wh, pw // wwin, wwin).permute(0, 2, 1, 3).reshape(nw, t)
        mask = mask.unsqueeze(1) - mask.unsqueeze(2)
        mask = mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)
        both = (bias + mask.unsqueeze(0)).reshape(heads * nw, t, t)  # heads outermost
        u = self.emit(n, {"op": "mat_mul"}, parts[:2], f"{p}.scores")
        u = self.emit(n, {"op": "binary_const", "kind": "add",
                          "tensor": self.constant(f"{p}.relative_position_bias", both),
                          "shape": [heads * nw, t, t], "reversed": False}, [u], f"{p}.biased")
        u = self.emit(n, {"op": "softmax", "axis": 2}, [u], f"{p}.softmax")
        u = self.emit(n, {"op": "mat_mul"}, [u, parts[2]], f"{p}.context")
        u = self.emit(n, {"op": "reshape", "shape": [heads, nw * t, d]}, [u], f"{p}.context:v")
        u = self.emit(n, {"op": "transpose", "perm": [1, 0, 2]}, [u], f"{p}.context:t")
        u = self.emit(n, {"op": "reshape", "shape": [nw, t, c]}, [u], f"{p}.context:merged")
        u = self.emit(n, {"op": "linear", "weight": param("proj_weight"),
                          "bias": param("proj_bias"), "in_features": c, "out_features": c,
                          "axis": 2}, [u], f"{p}.proj")
        # Back: output (i, j) < (H, W) reads the window element that the partition took
        # from padded position (i, j): the inverse of `pos`.
        inv = torch.empty(ph * pw, dtype=torch.long)
        inv[pos.reshape(-1)] = torch.arange(nw * t)
        inv = inv.view(ph, pw)[:hh, :ww]
        self.gather(n, u, [hh, ww, c], inv.reshape(hh, ww, 1) * c + torch.arange(c), p)

    def patch_merging_pad(self, n, x):
        """torchvision's fx-wrapped `_patch_merging_pad`: [H, W, C] zero-padded to even sides,
        then x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2] on channels (one
        gather)."""
        _, hh, ww, c = self.shape(x)
        src, p = self.inp(n, x), self.scope(n)
        if hh % 2 or ww % 2:
            src = self.emit(n, {"op": "pad", "begin": [0, 0, 0], "end": [hh % 2, ww % 2, 0],
                                "value": 0.0}, [src], f"{p}.pad")
        ph, pw = hh + hh % 2, ww + ww % 2
        i = torch.arange(ph // 2).view(-1, 1, 1, 1)
        j = torch.arange(pw // 2).view(1, -1, 1, 1)
        di = torch.tensor([0, 1, 0, 1]).view(1, 1, 4, 1)
        dj = torch.tensor([0, 0, 1, 1]).view(1, 1, 4, 1)
        index = ((2 * i + di) * pw + 2 * j + dj) * c + torch.arange(c).view(1, 1, 1, c)
        self.gather(n, src, [ph // 2, pw // 2, 4 * c], index, f"{p}.merge")

    def call_module(self, n: torch.fx.Node):
        m = self.modules[n.target]
        x = n.args[0] if n.args else None
        p = str(n.target)
        own = lambda t: (lambda k: self.tensor(f"{p}.{t}", [k])  # noqa: E731
                         if getattr(m, t, None) is not None else None)
        if isinstance(m, nn.MultiheadAttention):
            self.attention(n, m)
        elif isinstance(m, nn.Conv2d):
            self.conv(n, m, x)
        elif isinstance(m, (nn.ZeroPad2d, nn.ConstantPad2d)):
            self.pad(n, x, m.padding, value=m.value)
        elif isinstance(m, nn.BatchNorm2d):
            if m.running_mean is None:
                raise UnsupportedOp(f"{self.where(n)}: BatchNorm without running statistics")
            for t in ("weight", "bias", "running_mean", "running_var"):
                if getattr(m, t) is None:
                    raise UnsupportedOp(f"{self.where(n)}: affine=False")
                self.tensor(f"{p}.{t}")
            self.emit(
                n,
                {"op": "batch_norm2d", "prefix": p, "channels": m.num_features, "eps": m.eps},
                [self.inp(n, x)],
            )
        elif isinstance(m, nn.LayerNorm):
            self.layer_norm(n, x, m.normalized_shape, own("weight"), own("bias"), m.eps)
        elif isinstance(m, nn.GroupNorm):
            self.group_norm(n, x, m.num_groups, own("weight"), own("bias"), m.eps)
        elif isinstance(m, nn.ReLU):
            self.unary(n, "relu", x)
        elif isinstance(m, nn.ReLU6):
            self.unary(n, "relu6", x)
        elif isinstance(m, nn.Hardtanh):
            self.clamp(n, x, m.min_val, m.max_val)
        elif isinstance(m, nn.SiLU):
            self.unary(n, "silu", x)
        elif isinstance(m, nn.Sigmoid):
            self.unary(n, "sigmoid", x)
        elif isinstance(m, nn.Hardswish):
            self.unary(n, "hardswish", x)
        elif isinstance(m, nn.Hardsigmoid):
            self.unary(n, "hard_sigmoid", x, alpha=1 / 6, beta=0.5)
        elif isinstance(m, nn.GELU):
            self.gelu(n, x, m.approximate)
        elif isinstance(m, nn.MaxPool2d):
            self.max_pool(
                n, x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode,
                m.return_indices,
            )
        elif isinstance(m, nn.AvgPool2d):
            self.avg_pool(
                n, x, m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad,
                m.divisor_override,
            )
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            self.adaptive(n, x)
        elif isinstance(m, (nn.Flatten, nn.Unflatten)):
            self.reshape(n, x)
        elif isinstance(m, _IDENTITY):
            self.alias(n, x)
        elif isinstance(m, nn.Linear):
            self.linear(n, x, self.tensor(f"{p}.weight"),
                        self.tensor(f"{p}.bias") if m.bias is not None else None,
                        m.in_features, m.out_features)
        else:
            raise UnsupportedOp(f"{self.where(n)}: unsupported op `{type(m).__name__}`")

    def call_function(self, n: torch.fx.Node):
        f, a, kw = n.target, n.args, n.kwargs
        arg = lambda i, k, d=None: a[i] if len(a) > i else kw.get(k, d)  # noqa: E731
        binary = {
            "add": (operator.add, operator.iadd, torch.add),
            "sub": (operator.sub, operator.isub, torch.sub, torch.subtract),
            "mul": (operator.mul, operator.imul, torch.mul, torch.multiply),
            "div": (operator.truediv, operator.itruediv, torch.div, torch.true_divide),
        }
        if "tensor_meta" not in n.meta:
            return  # shape arithmetic and torch._assert (ViT's input checks): no tensor
        kind = next((k for k, fs in binary.items() if f in fs), None)
        if kind is not None:
            if kw.get("alpha", 1) != 1 or kw.get("rounding_mode") is not None:
                raise UnsupportedOp(f"{self.where(n)}: {kind} with alpha or rounding_mode")
            self.binary(n, kind, a[0], a[1])
        elif f is operator.getitem:
            self.getitem(n, a[0], a[1])
        elif f in (F.conv2d, torch.conv2d):
            self.conv_fn(n, a[0], arg(1, "weight"), arg(2, "bias"), arg(3, "stride", 1),
                         arg(4, "padding", 0), arg(5, "dilation", 1), arg(6, "groups", 1))
        elif f is F.pad:
            self.pad(n, a[0], arg(1, "pad"), arg(2, "mode", "constant"), arg(3, "value", 0.0))
        elif f in (torch.cat, torch.concat):
            self.concat(n, arg(0, "tensors"), arg(1, "dim", 0))
        elif f in _RESHAPES_F:
            self.reshape(n, a[0])
        elif f is torch.permute:
            self.permute(n, a[0], arg(1, "dims"))
        elif f is torch.transpose:
            self.swap(n, a[0], arg(1, "dim0"), arg(2, "dim1"))
        elif f in (F.relu, torch.relu):
            self.unary(n, "relu", a[0])
        elif f is F.relu6:
            self.unary(n, "relu6", a[0])
        elif f is F.hardtanh:
            self.clamp(n, a[0], arg(1, "min_val", -1.0), arg(2, "max_val", 1.0))
        elif f in (torch.clamp, torch.clip):
            self.clamp(n, a[0], arg(1, "min"), arg(2, "max"))
        elif f is F.silu:
            self.unary(n, "silu", a[0])
        elif f in (torch.sigmoid, F.sigmoid):
            self.unary(n, "sigmoid", a[0])
        elif f is F.hardswish:
            self.unary(n, "hardswish", a[0])
        elif f is F.hardsigmoid:
            self.unary(n, "hard_sigmoid", a[0], alpha=1 / 6, beta=0.5)
        elif f is F.gelu:
            self.gelu(n, a[0], arg(1, "approximate", "none"))
        elif f is F.layer_norm:
            w, b = arg(2, "weight"), arg(3, "bias")
            self.layer_norm(n, a[0], arg(1, "normalized_shape"),
                            lambda k: self.param(n, w, [k]), lambda k: self.param(n, b, [k]),
                            arg(4, "eps", 1e-5))
        elif f is F.group_norm:
            w, b = arg(2, "weight"), arg(3, "bias")
            self.group_norm(n, a[0], arg(1, "num_groups"), lambda k: self.param(n, w, [k]),
                            lambda k: self.param(n, b, [k]), arg(4, "eps", 1e-5))
        elif f is F.adaptive_avg_pool2d:
            self.adaptive(n, a[0])
        elif f in (F.max_pool2d, torch.max_pool2d):
            self.max_pool(
                n, a[0], arg(1, "kernel_size"), arg(2, "stride"), arg(3, "padding", 0),
                arg(4, "dilation", 1), arg(5, "ceil_mode", False), arg(6, "return_indices", False),
            )
        elif f is F.avg_pool2d:
            self.avg_pool(
                n, a[0], arg(1, "kernel_size"), arg(2, "stride"), arg(3, "padding", 0),
                arg(4, "ceil_mode", False), arg(5, "count_include_pad", True),
                arg(6, "divisor_override"),
            )
        elif f in (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d):
            self.alias(n, a[0])
        elif getattr(f, "__name__", "") == "stochastic_depth" and not arg(3, "training", True):
            self.alias(n, a[0])  # torchvision.ops.stochastic_depth is the identity in eval
        elif f in (torch.mean,):
            self.mean(n, a[0], arg(1, "dim"), arg(2, "keepdim", False))
        elif getattr(f, "__name__", "") == "shifted_window_attention":
            self.window_attention(n, a, kw)
        elif getattr(f, "__name__", "") == "_patch_merging_pad":
            self.patch_merging_pad(n, a[0])
        elif getattr(f, "__name__", "") == "_get_relative_position_bias" and all(
                isinstance(v, torch.fx.Node) and v.name in self.consts for v in a[:2]):
            bias = f(self.consts[a[0].name][1], self.consts[a[1].name][1], *a[2:])
            self.consts[n.name] = (f"{self.scope(n)}.relative_position_bias", bias)
        else:
            raise UnsupportedOp(f"{self.where(n)}: unsupported op")

    def call_method(self, n: torch.fx.Node):
        m, a, kw = n.target, n.args, n.kwargs
        if m == "size" or m == "dim":
            return  # shape queries feed view/reshape, checked there
        x = a[0]
        arg = lambda i, k, d=None: a[i] if len(a) > i else kw.get(k, d)  # noqa: E731
        binary = {"add": ("add", "add_", "__add__", "__iadd__", "__radd__"),
                  "sub": ("sub", "sub_", "__sub__", "__isub__"),
                  "mul": ("mul", "mul_", "__mul__", "__imul__", "__rmul__"),
                  "div": ("div", "div_", "__truediv__", "__itruediv__")}
        kind = next((k for k, ms in binary.items() if m in ms), None)
        if kind is not None:
            if kw.get("alpha", 1) != 1 or kw.get("rounding_mode") is not None:
                raise UnsupportedOp(f"{self.where(n)}: {kind} with alpha or rounding_mode")
            self.binary(n, kind, x, a[1])
        elif m in ("__rsub__", "__rtruediv__"):
            self.binary(n, "sub" if m == "__rsub__" else "div", a[1], x)
        elif m in _RESHAPES_M:
            self.reshape(n, x)
        elif m == "permute":
            self.permute(n, x, a[1] if len(a) == 2 and isinstance(a[1], (tuple, list))
                         else kw.get("dims", a[1:]))
        elif m == "transpose":
            self.swap(n, x, arg(1, "dim0"), arg(2, "dim1"))
        elif m == "contiguous":
            self.alias(n, x)
        elif m == "expand" and isinstance(x, torch.fx.Node) and x.name in self.consts:
            name, value = self.consts[x.name]  # a parameter broadcast to the batch (class token)
            out = self.shape(n)
            if value.dim() != len(out) or list(value.shape[1:]) != out[1:]:
                raise UnsupportedOp(f"{self.where(n)}: expands `{name}` beyond the batch")
            self.consts[n.name] = (name, value)
        elif m in ("relu", "relu_", "sigmoid", "sigmoid_"):
            self.unary(n, m.rstrip("_"), x)
        elif m in ("clamp", "clamp_", "clip", "clip_"):
            self.clamp(n, x, arg(1, "min"), arg(2, "max"))
        elif m == "mean":
            self.mean(n, x, arg(1, "dim"), arg(2, "keepdim", False))
        else:
            raise UnsupportedOp(f"{self.where(n)}: unsupported tensor method `{m}`")

    def get_attr(self, n: torch.fx.Node):
        """A parameter or buffer read in `forward` (ConvNeXt's layer_scale, LayerNorm2d's
        affine): kept aside as a constant for the ops that take one."""
        value = self.gm
        for part in str(n.target).split("."):
            value = getattr(value, part)
        if not isinstance(value, torch.Tensor):
            raise UnsupportedOp(f"`{n.name}` reads `{n.target}`, not a tensor")
        self.consts[n.name] = (str(n.target), value.detach())

    def mark_tokens(self, n: torch.fx.Node):
        """Token layers, as the ONNX importer marks them: [N, T, C] sequences, and [N, h, w, C]
        grids that are channels last (a permute (0, 2, 3, 1) and what is computed from one,
        as Swin's blocks)."""
        meta = n.meta.get("tensor_meta")
        shape = list(getattr(meta, "shape", ()))
        if len(shape) == 4:
            dims = n.args[1:] if n.target == "permute" else n.args[1:2] \
                if n.target is torch.permute else None
            if dims is not None:
                dims = list(dims[0]) if len(dims) == 1 and isinstance(dims[0], (list, tuple)) \
                    else list(dims)
                if dims == [0, 2, 3, 1]:
                    self.nhwc.add(n.name)
            elif any(isinstance(v, torch.fx.Node) and v.name in self.nhwc
                     for v in n.args + tuple(n.kwargs.values())):
                self.nhwc.add(n.name)
        if n.name not in self.index or min(shape[1:], default=0) <= 1:
            return
        if len(shape) == 3:
            self.tokens[self.index[n.name]] = "sequence"
        elif n.name in self.nhwc and shape[1] * shape[2] > 1:
            self.tokens[self.index[n.name]] = "grid"

    def run(self) -> tuple[list[dict], dict[str, int], dict[str, str]]:
        placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        if len(placeholders) != 1:
            raise UnsupportedOp(f"the model takes {len(placeholders)} inputs; expected 1")
        out = None
        for n in self.gm.graph.nodes:
            if n.op == "placeholder":
                shape = self.shape(n)
                self.names.add("input")
                self.nodes.append({"name": "input", "op": {"op": "input", "channels": shape[1]},
                                   "inputs": []})
                self.index[n.name] = 0
            elif n.op == "call_module":
                self.call_module(n)
            elif n.op == "call_function":
                if n.target is getattr:
                    continue  # e.g. x.shape, consumed by view/reshape
                self.call_function(n)
            elif n.op == "call_method":
                self.call_method(n)
            elif n.op == "get_attr":
                self.get_attr(n)
            elif n.op == "output":
                out = n.args[0]
            self.mark_tokens(n)
        if not isinstance(out, torch.fx.Node) or out.name not in self.index:
            raise UnsupportedOp("the model must return one logits tensor")
        if len(self.shape(out)) != 2:
            raise UnsupportedOp(f"the output has shape {self.shape(out)}; expected [N, classes]")
        return self.prune(self.index[out.name])

    def prune(self, out: int) -> tuple[list[dict], dict[str, int], dict[str, str]]:
        """Keeps the nodes the output depends on, with the output last; with the aliases and
        the token layers (`--reshape auto`, src/model/meta.rs) by name."""
        live = {out}
        for i in range(out, -1, -1):
            if i in live:
                live.update(self.nodes[i]["inputs"])
        order = [i for i in range(out + 1) if i in live]
        remap = {old: new for new, old in enumerate(order)}
        nodes = []
        for old in order:
            node = dict(self.nodes[old])
            node["inputs"] = [remap[j] for j in node["inputs"]]
            nodes.append(node)
        names = {n["name"] for n in nodes}
        aliases = {}
        for path, last in self.scope_last.items():
            # Containers only: a leaf's node already carries its path as its name.
            if path and path not in names and last in remap:
                aliases[path] = remap[last]
        tokens = {nodes[remap[i]]["name"]: k for i, k in sorted(self.tokens.items())
                  if i in remap}
        return nodes, dict(sorted(aliases.items())), tokens


def auto_layer(nodes: list[dict], aliases: dict[str, int], tokens: dict[str, str]) -> str:
    """The default target layer, as the ONNX importer picks it: in a transformer the last
    token LayerNorm before the last attention softmax (the last block's `ln_1`,
    pytorch-grad-cam's `blocks[-1].norm1`), else the outermost container of the last conv."""
    last = max((i for i, n in enumerate(nodes) if n["op"]["op"] == "softmax"), default=None)
    if last is not None:
        norms = [n["name"] for n in nodes[:last]
                 if n["op"]["op"] == "layer_norm" and n["name"] in tokens]
        if norms:
            return norms[-1]
    convs = [n["name"] for n in nodes if n["op"]["op"] == "conv2d"]
    if not convs:
        raise UnsupportedOp("no default layer (no attention and no conv): pass default_layer")
    return min((a for a in aliases if convs[-1].startswith(a + ".")), key=lambda a: a.count("."),
               default=convs[-1])


def to_metadata(module: nn.Module, *, input_size, mean, std, classes, name, default_layer=None,
                output="softmax", in_channels=3):
    """The metadata dict and the tensors for a self-describing file; `default_layer` None
    picks one (`auto_layer`)."""
    if output not in ("softmax", "sigmoid"):
        raise ValueError("output must be 'softmax' or 'sigmoid'")
    ex = _Exporter(module, list(input_size), in_channels)
    nodes, aliases, tokens = ex.run()
    n_out = ex.shape([n for n in ex.gm.graph.nodes if n.op == "output"][0].args[0])[1]
    classes = list(classes)
    if len(classes) != n_out:
        raise ValueError(f"{len(classes)} class names for {n_out} outputs")
    known = {n["name"] for n in nodes} | set(aliases)
    if default_layer is None:
        default_layer = auto_layer(nodes, aliases, tokens)
    if default_layer not in known:
        raise ValueError(f"default_layer `{default_layer}` is not a layer; one of {sorted(known)}")
    used = set()
    for n in nodes:
        op = n["op"]
        used.update(v for k, v in op.items() if k in ("weight", "bias", "tensor") and v)
        if op["op"] == "batch_norm2d":
            used.update(f"{op['prefix']}.{t}" for t in ("weight", "bias", "running_mean",
                                                        "running_var"))
    meta = {
        "version": META_VERSION,
        "name": name,
        "graph": {"nodes": nodes, "aliases": aliases},
        "input_size": [int(v) for v in input_size],
        "mean": [float(v) for v in mean],
        "std": [float(v) for v in std],
        "classes": classes,
        "default_layer": default_layer,
        "output": output,
    }
    if tokens:  # absent in CNN files, which stay as they were
        meta["tokens"] = tokens
    return meta, {k: v for k, v in ex.tensors.items() if k in used}


def export(module: nn.Module, path, **kw) -> dict:
    """Writes `module` to `path` as a self-describing model file; returns the metadata."""
    meta, tensors = to_metadata(module, **kw)
    arrays = {k: v.numpy() for k, v in tensors.items()}
    save_safetensors(arrays, str(path), {META_KEY: json.dumps(meta, separators=(",", ":"))})
    return meta


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--torchvision", required=True, help="a torchvision classification model name")
    ap.add_argument("--out", required=True)
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--seed", type=int, default=0, help="random init seed (no downloads here)")
    ap.add_argument("--layer", help="default target layer (default: a transformer's last "
                    "ln_1, else the last conv's outermost container)")
    args = ap.parse_args()
    import torchvision

    torch.manual_seed(args.seed)
    model = getattr(torchvision.models, args.torchvision)(num_classes=args.num_classes)
    meta = export(model, args.out, input_size=(args.size, args.size),
                  mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                  classes=[str(i) for i in range(args.num_classes)], default_layer=args.layer,
                  name=args.torchvision)
    layer = meta["default_layer"]
    print(f"wrote {args.out}: {len(meta['graph']['nodes'])} nodes, default layer {layer}")


if __name__ == "__main__":
    main()
