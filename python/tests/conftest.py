"""Shared test support: the repository's fixtures, read without torch or safetensors."""

import json
import pathlib
import struct

import numpy as np
import pytest

import gradcam_wgpu as gw

REPO = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"

_DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "U8": np.uint8, "F16": np.float16}


def read_safetensors(path):
    """(tensors, metadata) of a safetensors file."""
    raw = pathlib.Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", {})
    data = raw[8 + n :]
    tensors = {}
    for name, t in header.items():
        a, b = t["data_offsets"]
        tensors[name] = np.frombuffer(data[a:b], dtype=_DTYPES[t["dtype"]]).reshape(t["shape"])
    return tensors, meta


class Fixture:
    def __init__(self, path):
        self.tensors, self.meta = read_safetensors(path)
        self.size = (int(self.meta.get("height", 0)), int(self.meta.get("width", 0)))
        self.targets = self.tensors["targets"].astype(np.int64)

    def __getitem__(self, key):
        return self.tensors[key]

    def __contains__(self, key):
        return key in self.tensors


@pytest.fixture(scope="session")
def methods_fixture():
    """resnet50 fixture: model, inputs, pytorch-grad-cam maps of every method."""
    fx = Fixture(FIXTURES / "methods" / "resnet50.safetensors")
    overrides = {
        k[len("override.") :]: np.ascontiguousarray(v, dtype=np.float32)
        for k, v in fx.tensors.items()
        if k.startswith("override.")
    }
    fx.model = gw._native._fixture_model(
        fx.meta["arch"], fx.meta["tensors"], int(fx.meta["seed"]), overrides
    )
    return fx


@pytest.fixture(scope="session")
def score_fixtures():
    """The --score fixtures: pytorch-grad-cam maps for its softmax, ReST and binary targets."""
    out = {}
    for case in ("multiclass", "binary"):
        fx = Fixture(FIXTURES / "methods" / f"scores_{case}.safetensors")
        fx.model = gw._native._fixture_model(
            fx.meta["arch"], fx.meta["tensors"], int(fx.meta["seed"]), {}
        )
        out[case] = fx
    return out


@pytest.fixture(scope="session")
def new_methods_fixture():
    """The methods pytorch-grad-cam added later (FEM, ...) on a ResNet-18."""
    fx = Fixture(FIXTURES / "methods" / "new_methods.safetensors")
    fx.model = gw._native._fixture_model(
        fx.meta["arch"], fx.meta["tensors"], int(fx.meta["seed"]), {}
    )
    return fx


def map_error(got, fx, key, rows=None):
    """Max abs error of maps `got` [N, T, H, W] against fixture `key`, per map the nearer of
    it and `key.flipped` (an SVD's sign is arbitrary); `rows` picks the fixture's targets."""
    wants = [fx[k] if rows is None else fx[k][:, rows] for k in (key, key + ".flipped") if k in fx]
    per_map = [np.abs(got - w).reshape(*got.shape[:-2], -1).max(axis=-1) for w in wants]
    return float(np.minimum.reduce(per_map).max())
