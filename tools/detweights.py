"""Deterministic weight generator for gradcam-wgpu reference fixtures.

The Rust crate has a bit-exact twin of this module; keep the two in lock-step.
Nothing here depends on torch's RNG: every value is a pure function of
(tensor name, element index, seed, tensor shape, set of state-dict names).

SPEC (all integer arithmetic is on unsigned 64-bit words, wrapping mod 2^64)
---------------------------------------------------------------------------
fnv1a64(bytes):
    h = 0xcbf29ce484222325
    for b in bytes: h ^= b; h = (h * 0x100000001b3) mod 2^64
    return h

Hash of element i (0-based, row-major / C order, i.e. the flat index of the
contiguous PyTorch tensor) of the tensor called `name` (the state-dict key,
e.g. "layer1.0.conv1.weight"), for the u64 `seed`:
    key = fnv1a64(name.encode('utf-8')) ^ seed
    z = (key + (i + 1) * 0x9E3779B97F4A7C15) mod 2^64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) mod 2^64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) mod 2^64
    z = z ^ (z >> 31)
    q = int(z >> 52) - 2048          # signed integer in [-2048, 2047]

Value rules, given the full state-dict key list (name -> shape):
  - name ends with "num_batches_tracked": int64 scalar 0 (left as torch has it)
  - BatchNorm tensors: a 1-D tensor P.weight / P.bias / P.running_mean /
    P.running_var such that "P.running_mean" is a key of the state dict
    (P = name with its last ".component" removed):
        weight       = 1 + q * 2^-13
        bias         =     q * 2^-13
        running_mean =     q * 2^-13
        running_var  = 1 + q * 2^-13
  - any other tensor with ndim >= 2 (conv / linear weights):
        fan_in = prod(shape[1:]); shift = bit_length(fan_in) // 2
        value  = q * 2^-11 * 2^(1 - shift)
    (bit_length(x) = number of bits needed for x, i.e. 64 - leading_zeros(x);
     e.g. fan_in 147 -> 8 -> shift 4; fan_in 4608 -> 13 -> shift 6)
  - any other 1-D tensor (conv / linear biases):
        value  = q * 2^-11 * 2^-4
All values are computed in float64 and then cast to float32; they are exactly
representable, so the cast is exact and any evaluation order gives the same
bits.  (In Rust: `(q as f64 * scale) as f32`, or directly `q as f32 * scale`.)

Test vectors: `python tools/detweights.py --vectors` prints a JSON document
with the first q values / floats of a few tensors; it is stored in
tests/fixtures/detweights_vectors.json.
"""

from __future__ import annotations

import json
import sys
from typing import Dict, Iterable, Tuple

import numpy as np

FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
GOLDEN = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
MASK64 = (1 << 64) - 1

_CHUNK = 1 << 22  # elements per vectorised chunk (bounded memory)


def fnv1a64(data: bytes) -> int:
    h = FNV_OFFSET
    for b in data:
        h ^= b
        h = (h * FNV_PRIME) & MASK64
    return h


def q_scalar(name: str, seed: int, i: int) -> int:
    """Reference (slow, pure-Python) implementation of q for one element."""
    key = fnv1a64(name.encode("utf-8")) ^ (seed & MASK64)
    z = (key + (i + 1) * GOLDEN) & MASK64
    z = ((z ^ (z >> 30)) * MIX1) & MASK64
    z = ((z ^ (z >> 27)) * MIX2) & MASK64
    z = z ^ (z >> 31)
    return (z >> 52) - 2048


def q_values(name: str, seed: int, numel: int) -> np.ndarray:
    """Vectorised q for elements 0..numel-1, as int64 array."""
    key = np.uint64(fnv1a64(name.encode("utf-8")) ^ (seed & MASK64))
    out = np.empty(numel, dtype=np.int64)
    g = np.uint64(GOLDEN)
    m1 = np.uint64(MIX1)
    m2 = np.uint64(MIX2)
    s30, s27, s31, s52 = (np.uint64(s) for s in (30, 27, 31, 52))
    with np.errstate(over="ignore"):
        for start in range(0, numel, _CHUNK):
            stop = min(numel, start + _CHUNK)
            z = np.arange(start + 1, stop + 1, dtype=np.uint64)
            z *= g
            z += key
            z ^= z >> s30
            z *= m1
            z ^= z >> s27
            z *= m2
            z ^= z >> s31
            z >>= s52
            out[start:stop] = z.astype(np.int64) - 2048
    return out


def tensor_kind(name: str, shape: Tuple[int, ...], names: Iterable[str]) -> str:
    """One of 'counter', 'bn_weight', 'bn_bias', 'bn_mean', 'bn_var', 'weight', 'bias'."""
    if name.endswith("num_batches_tracked"):
        return "counter"
    names = set(names)
    if len(shape) == 1 and "." in name:
        prefix, comp = name.rsplit(".", 1)
        if prefix + ".running_mean" in names and comp in (
            "weight",
            "bias",
            "running_mean",
            "running_var",
        ):
            return {
                "weight": "bn_weight",
                "bias": "bn_bias",
                "running_mean": "bn_mean",
                "running_var": "bn_var",
            }[comp]
    if len(shape) >= 2:
        return "weight"
    return "bias"


def values_for(name: str, shape: Tuple[int, ...], seed: int, names: Iterable[str]) -> np.ndarray:
    """float32 numpy array of the generated tensor (None-like for counters)."""
    kind = tensor_kind(name, shape, names)
    if kind == "counter":
        raise ValueError("num_batches_tracked is not generated")
    numel = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    q = q_values(name, seed, numel).astype(np.float64)
    if kind in ("bn_weight", "bn_var"):
        v = 1.0 + q * 2.0**-13
    elif kind in ("bn_bias", "bn_mean"):
        v = q * 2.0**-13
    elif kind == "weight":
        fan_in = int(np.prod(shape[1:], dtype=np.int64))
        shift = int(fan_in).bit_length() // 2
        v = q * 2.0**-11 * 2.0 ** (1 - shift)
    else:
        v = q * 2.0**-11 * 2.0**-4
    v32 = v.astype(np.float32)
    assert np.array_equal(v32.astype(np.float64), v), "value not exactly representable"
    return v32.reshape(shape)


def generate_state_dict(model, seed: int) -> Dict[str, "torch.Tensor"]:
    """Full state dict (same keys/order as model.state_dict()) with generated values."""
    import torch

    sd = model.state_dict()
    names = list(sd.keys())
    out = {}
    for name, t in sd.items():
        shape = tuple(t.shape)
        if tensor_kind(name, shape, names) == "counter":
            out[name] = torch.zeros_like(t)
            continue
        out[name] = torch.from_numpy(values_for(name, shape, seed, names))
    return out


def load_into(model, seed: int, overrides: Dict[str, "torch.Tensor"] | None = None):
    """Load generated weights (plus optional overrides by name) into `model`."""
    sd = generate_state_dict(model, seed)
    if overrides:
        for k, v in overrides.items():
            if k not in sd or tuple(sd[k].shape) != tuple(v.shape):
                raise KeyError(f"bad override {k}")
            sd[k] = v
    model.load_state_dict(sd, strict=True)
    return model


def tensor_list(model):
    """[[name, shape], ...] for every state-dict tensor except num_batches_tracked."""
    return [
        [k, list(v.shape)]
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    ]


def _vectors():
    """Small test-vector document for the Rust twin."""
    cases = []
    for name, seed in [("fc.weight", 1), ("conv1.weight", 1), ("features.0.weight", 3),
                       ("", 0), ("layer1.0.bn1.running_var", 0xFFFFFFFFFFFFFFFF)]:
        qs = [q_scalar(name, seed, i) for i in range(8)]
        assert qs == list(q_values(name, seed, 8))
        cases.append({
            "name": name,
            "seed": str(seed),
            "fnv1a64": f"0x{fnv1a64(name.encode()):016x}",
            "q_first8": qs,
        })
    # value rules on a tiny synthetic state dict
    names = ["conv.weight", "conv.bias", "bn.weight", "bn.bias", "bn.running_mean",
             "bn.running_var", "bn.num_batches_tracked", "fc.weight", "fc.bias"]
    shapes = {"conv.weight": (4, 3, 7, 7), "conv.bias": (4,), "bn.weight": (4,), "bn.bias": (4,),
              "bn.running_mean": (4,), "bn.running_var": (4,), "fc.weight": (10, 512), "fc.bias": (10,)}
    vals = []
    for n in names:
        if n.endswith("num_batches_tracked"):
            continue
        v = values_for(n, shapes[n], 1, names).reshape(-1)
        vals.append({
            "name": n, "shape": list(shapes[n]), "kind": tensor_kind(n, shapes[n], names),
            "first4": [float(x) for x in v[:4]],
            "first4_bits": [f"0x{int(x):08x}" for x in v[:4].view(np.uint32)],
            "sum_f64": float(v.astype(np.float64).sum()),
        })
    return {"hash_cases": cases, "seed_for_values": 1, "value_cases": vals}


if __name__ == "__main__":
    if "--vectors" in sys.argv:
        print(json.dumps(_vectors(), indent=1))
    else:
        print(__doc__)
