"""Seed corpus for the `onnx_load` fuzz target (fuzz/corpus/onnx_load): tiny ONNX graphs, one
per family of ops and exporter idioms the importer handles, plus truncated copies.

Usage:  /opt/ref/bin/python tools/make_onnx_corpus.py [--out fuzz/corpus/onnx_load]

Each file is one mode byte (bit 0: pass an input size, bit 1: force NHWC; see
fuzz/fuzz_targets/onnx_load.rs) followed by the model. Names are the SHA-1 of the content, as
libFuzzer names its corpus. tests/fuzz_regressions.rs replays them without libFuzzer.
"""

from __future__ import annotations

import argparse
import hashlib
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RNG = np.random.default_rng(16)


def w(name, *shape):
    return numpy_helper.from_array(RNG.uniform(-0.5, 0.5, shape).astype(np.float32), name)


def i64(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def scalar(name, v):
    return numpy_helper.from_array(np.array(v, dtype=np.float32), name)


def model(nodes, inits, dims, out="y", opset=17):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info(out, TensorProto.FLOAT, None)
    g = helper.make_graph(nodes, "corpus", [x], [y], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m.SerializeToString()


def head(src, c, classes=3):
    """GlobalAveragePool → Flatten → Gemm on `src` with `c` channels."""
    return [
        helper.make_node("GlobalAveragePool", [src], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"], transB=1),
    ], [w("fc_w", classes, c), w("fc_b", classes)]


def cases():
    nchw = ["N", 3, 9, 7]
    out = {}
    # Conv, ReLU, head, Softmax.
    h, hi = head("r", 4)
    out["conv"] = (0, model(
        [helper.make_node("Conv", ["x", "cw", "cb"], ["c"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["c"], ["r"])] + h[:2]
        + [helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["l"], transB=1),
           helper.make_node("Softmax", ["l"], ["y"], axis=1)],
        [w("cw", 4, 3, 3, 3), w("cb", 4)] + hi, nchw))
    # Dynamic H and W (mode 1 gives a size).
    out["dynamic"] = (1, model(
        [helper.make_node("Conv", ["x", "cw"], ["r"], strides=[2, 2], auto_pad="SAME_UPPER")] + h,
        [w("cw", 4, 3, 3, 3)] + hi, ["N", 3, "H", "W"]))
    # Channels-last input, Transpose to NCHW, ReduceMean over NHWC at the end.
    out["nhwc"] = (0, model(
        [helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
         helper.make_node("Conv", ["t", "cw"], ["c"]),
         helper.make_node("Transpose", ["c"], ["tc"], perm=[0, 2, 3, 1]),
         helper.make_node("ReduceMean", ["tc"], ["m"], axes=[1, 2], keepdims=0),
         helper.make_node("Gemm", ["m", "fc_w"], ["y"], transB=1)],
        [w("cw", 4, 3, 3, 3), w("fc_w", 3, 4)], [1, 9, 7, 3], opset=13))
    # A zero Pad fused into a Conv with asymmetric pads; MaxPool with ceil_mode.
    h, hi = head("p", 5)
    out["pad_conv"] = (0, model(
        [helper.make_node("Pad", ["x", "pads"], ["xp"]),
         helper.make_node("Conv", ["xp", "cw"], ["c"], strides=[2, 2], pads=[0, 0, 1, 0]),
         helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2],
                          ceil_mode=1)] + h,
        [w("cw", 5, 3, 3, 3), i64("pads", [0, 0, 1, 0, 0, 0, 0, 1])] + hi, nchw))
    # A ConvNeXt block: permute, LayerNorm, MatMul, erf-GELU, MatMul, layer scale, permute.
    gelu = [
        helper.make_node("Div", ["m1", "sqrt2"], ["d"]),
        helper.make_node("Erf", ["d"], ["e"]),
        helper.make_node("Add", ["e", "one"], ["a"]),
        helper.make_node("Mul", ["m1", "a"], ["g0"]),
        helper.make_node("Mul", ["g0", "half"], ["g"]),
    ]
    h, hi = head("res", 4)
    out["convnext"] = (0, model(
        [helper.make_node("Conv", ["x", "cw"], ["c"], group=1),
         helper.make_node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1]),
         helper.make_node("LayerNormalization", ["t", "ln_w", "ln_b"], ["ln"], axis=-1),
         helper.make_node("MatMul", ["ln", "w1"], ["m0"]),
         helper.make_node("Add", ["b1", "m0"], ["m1"])] + gelu
        + [helper.make_node("MatMul", ["g", "w2"], ["m2"]),
           helper.make_node("Transpose", ["m2"], ["t2"], perm=[0, 3, 1, 2]),
           helper.make_node("Mul", ["t2", "gamma"], ["s"]),
           helper.make_node("Add", ["s", "c"], ["res"])] + h,
        [w("cw", 4, 3, 3, 3), w("ln_w", 4), w("ln_b", 4), w("w1", 4, 8), w("b1", 8),
         w("w2", 8, 4), w("gamma", 4, 1, 1), scalar("sqrt2", 1.4142135), scalar("one", 1.0),
         scalar("half", 0.5)] + hi, nchw))
    # Squeeze-excitation with SiLU as Sigmoid·Mul, ReduceMean keepdims.
    h, hi = head("se", 4)
    out["se"] = (0, model(
        [helper.make_node("Conv", ["x", "cw"], ["c"]),
         helper.make_node("Sigmoid", ["c"], ["sg"]),
         helper.make_node("Mul", ["c", "sg"], ["silu"]),
         helper.make_node("ReduceMean", ["silu", "axes"], ["m"], keepdims=1),
         helper.make_node("Conv", ["m", "sw"], ["z"]),
         helper.make_node("Sigmoid", ["z"], ["gate"]),
         helper.make_node("Mul", ["silu", "gate"], ["se"])] + h,
        [w("cw", 4, 3, 3, 3), w("sw", 4, 4, 1, 1), i64("axes", [2, 3])] + hi, nchw, opset=18))
    # HardSwish, HardSigmoid, Clip bounds as inputs.
    h, hi = head("hs", 4)
    out["hard"] = (0, model(
        [helper.make_node("Conv", ["x", "cw"], ["c"]),
         helper.make_node("Clip", ["c", "lo", "hi"], ["cl"]),
         helper.make_node("HardSigmoid", ["cl"], ["hg"], alpha=1 / 6, beta=0.5),
         helper.make_node("Mul", ["cl", "hg"], ["hsw"]),
         helper.make_node("HardSwish", ["hsw"], ["hs"])] + h,
        [w("cw", 4, 3, 3, 3), scalar("lo", 0.0), scalar("hi", 6.0)] + hi, nchw))
    # Split, Slice and Concat along channels.
    h, hi = head("cat", 6)
    out["split"] = (0, model(
        [helper.make_node("Conv", ["x", "cw"], ["c"]),
         helper.make_node("Split", ["c", "sizes"], ["s0", "s1"], axis=1),
         helper.make_node("Slice", ["c", "st", "en", "ax"], ["sl"]),
         helper.make_node("Concat", ["s1", "s0", "sl"], ["cat"], axis=1)] + h,
        [w("cw", 4, 3, 3, 3), i64("sizes", [1, 3]), i64("st", [1]), i64("en", [3]),
         i64("ax", [1])] + hi, nchw))
    # The TorchScript flatten: Shape, Gather, Unsqueeze, Concat, Reshape.
    out["reshape"] = (0, model(
        [helper.make_node("Conv", ["x", "cw"], ["c"]),
         helper.make_node("GlobalAveragePool", ["c"], ["g"]),
         helper.make_node("Shape", ["g"], ["sh"]),
         helper.make_node("Gather", ["sh", "zero"], ["n"], axis=0),
         helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
         helper.make_node("Concat", ["n1", "m1"], ["tgt"], axis=0),
         helper.make_node("Reshape", ["g", "tgt"], ["f"]),
         helper.make_node("MatMul", ["f", "mw"], ["y"])],
        [w("cw", 4, 3, 3, 3), numpy_helper.from_array(np.array(0, np.int64), "zero"),
         i64("ax0", [0]), i64("m1", [-1]), w("mw", 4, 3)], nchw))
    # GroupNormalization (opset 21), AveragePool counting pads, BatchNormalization.
    h, hi = head("bn", 4)
    out["norms"] = (0, model(
        [helper.make_node("Conv", ["x", "cw"], ["c"]),
         helper.make_node("GroupNormalization", ["c", "gs", "gb"], ["gn"], num_groups=2),
         helper.make_node("AveragePool", ["gn"], ["ap"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                          count_include_pad=1),
         helper.make_node("BatchNormalization", ["ap", "s", "b", "mu", "var"], ["bn"])] + h,
        [w("cw", 4, 3, 3, 3), w("gs", 4), w("gb", 4), w("s", 4), w("b", 4), w("mu", 4),
         numpy_helper.from_array(np.full(4, 0.7, np.float32), "var")] + hi, nchw, opset=21))
    # Normalisation constants on the input, an unsupported op later on (an error, by design).
    out["unsupported"] = (0, model(
        [helper.make_node("Sub", ["x", "mean"], ["xs"]),
         helper.make_node("Div", ["xs", "std"], ["xn"]),
         helper.make_node("Conv", ["xn", "cw"], ["c"]),
         helper.make_node("Elu", ["c"], ["y"])],
        [w("mean", 1, 3, 1, 1), scalar("std", 0.25), w("cw", 4, 3, 3, 3)], nchw))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="fuzz/corpus/onnx_load")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    files = []
    for name, (mode, body) in cases().items():
        onnx.load_from_string(body)  # parses
        files.append(bytes([mode]) + body)
        if name in ("conv", "convnext"):
            files += [bytes([mode]) + body[:cut] for cut in (len(body) // 3, len(body) - 5)]
    for f in files:
        with open(os.path.join(args.out, hashlib.sha1(f).hexdigest()), "wb") as fh:
            fh.write(f)
    print(f"{len(files)} files, {sum(map(len, files))} bytes in {args.out}")


if __name__ == "__main__":
    main()
