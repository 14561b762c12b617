"""Self-check of tests/fixtures/onnx (written by tools/make_onnx_fixtures.py); no torch needed.

Usage:  python tools/test_onnx_fixtures.py [--dir tests/fixtures/onnx]

For every <case>.safetensors: onnxruntime runs <case>.onnx on "input" (permuted to NHWC for
layout nhwc, one image at a time where the file has a static batch of 1) and must give "logits"
(the Softmax input for score "pre-softmax") within 1e-4 relative; "layer_value" must be a value
of the graph produced by "layer_node", with shape "layer_output_shape" (or, for the transformer
cases with a "reshape", "layer_token_shape", whose fold gives "layer_output_shape"); the tensors
must have the documented shapes and dtypes (every map listed in "methods").
"""

from __future__ import annotations

import argparse
import glob
import json
import os

import numpy as np
import onnx
import onnxruntime as ort
from safetensors import safe_open

REL_TOL = 1e-4


def check(path: str) -> str:
    with safe_open(path, "np") as f:
        meta = f.metadata()
        t = {k: f.get_tensor(k) for k in f.keys()}
    n, h, w = int(meta["batch"]), int(meta["height"]), int(meta["width"])
    k = int(meta["classes"])
    assert t["input_u8"].dtype == np.uint8 and t["input_u8"].shape == (n, h, w, 3)
    assert t["input"].dtype == np.float32 and t["input"].shape == (n, 3, h, w)
    assert t["logits"].dtype == np.float32 and t["logits"].shape == (n, k)
    assert t["targets"].dtype == np.int64 and t["targets"].shape == (n, 2)
    methods = json.loads(meta["methods"])
    assert {"gradcam", "gradcam++", "scorecam", "eigencam", "eigencam.flipped"} <= set(methods)
    for key in ["cam." + m for m in methods]:
        assert t[key].dtype == np.float32 and t[key].shape == (n, 2, h, w), key
    mean = np.array(json.loads(meta["mean"]), np.float32).reshape(1, 3, 1, 1)
    std = np.array(json.loads(meta["std"]), np.float32).reshape(1, 3, 1, 1)
    x = (t["input_u8"].transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255) - mean) / std
    assert np.abs(x - t["input"]).max() <= 1e-6, "input is not normalize(input_u8)"

    model = onnx.load(os.path.join(os.path.dirname(path), meta["model"]))
    producers = {o: nd.name for nd in model.graph.node for o in nd.output}
    assert producers.get(meta["layer_value"]) == meta["layer_node"], meta["layer_value"]
    extra = [meta["layer_value"]]
    if meta["score"] == "pre-softmax":
        extra.append(meta["score_value"])
    for v in extra:
        model.graph.output.append(onnx.helper.make_tensor_value_info(v, onnx.TensorProto.FLOAT,
                                                                     None))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    xin = t["input"].transpose(0, 2, 3, 1).copy() if meta["layout"] == "nhwc" else t["input"]
    static1 = json.loads(meta["onnx_input_shape"])[0] == 1
    runs = ([sess.run(None, {name: xin[i:i + 1]}) for i in range(n)] if static1
            else [sess.run(None, {name: xin})])
    outs = [np.concatenate([r[j] for r in runs]) for j in range(len(runs[0]))]
    layer = outs[-len(extra)]
    score = outs[-1] if meta["score"] == "pre-softmax" else outs[0]
    folded = json.loads(meta["layer_output_shape"])
    if "reshape" in meta:  # token layer: [N, prefix + h*w, C] (vit) or [N, h, w, C] (swin)
        assert list(layer.shape) == json.loads(meta["layer_token_shape"]), layer.shape
        gh, gw = json.loads(meta["grid"])
        c = layer.shape[-1]
        tokens = {"vit": [n, int(meta["prefix_tokens"]) + gh * gw, c], "swin": [n, gh, gw, c]}
        assert list(layer.shape) == tokens[meta["reshape"]], layer.shape
        assert folded == [n, c, gh, gw], folded
    else:
        assert list(layer.shape) == folded, layer.shape
    ref = t["logits"]
    d = float(np.abs(score - ref).max() / np.abs(ref).max())
    assert d <= REL_TOL, (path, d)
    return (f"{meta['case']:20s} {meta['exporter']:22s} rel {d:.1e}  layer "
            f"{meta['layer_value']} {list(layer.shape)}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "tests", "fixtures", "onnx"))
    args = ap.parse_args()
    # the cases' files (metadata "case"); the others hold maps of another generator
    # (vit_legrad, token_ablation, segnet: checked against torch when they are made)
    def is_case(p):
        with safe_open(p, "np") as f:
            return "case" in (f.metadata() or {})

    files = sorted(p for p in glob.glob(os.path.join(args.dir, "*.safetensors")) if is_case(p))
    assert files, args.dir
    for p in files:
        print(check(p))
    print(f"{len(files)} fixtures ok")


if __name__ == "__main__":
    main()
