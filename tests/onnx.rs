//! ONNX import on small graphs built here: what the importer folds, fuses and names, and
//! that every malformed file is a clear error naming the node, tensor or file (never a
//! panic). Whole exported nets against PyTorch are in tests/onnx_golden.rs.

mod common;
mod onnx_util;

use gradcam_wgpu::Model;
use gradcam_wgpu::graph::Op;
use gradcam_wgpu::onnx::{Layout, OnnxOptions, import};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::{AttributeProto, Message, ModelProto, NodeProto, TensorProto};
use onnx_util::*;

/// Conv → Relu → (x * sigmoid(x)) → GlobalAveragePool → Flatten (via a Shape subgraph
/// into Reshape) → Gemm → Softmax, with TorchScript-style node names.
fn tiny_parts() -> (Vec<NodeProto>, Vec<TensorProto>) {
    let nodes = vec![
        node(
            "/features/features.0/Conv",
            "Conv",
            &["x", "w", "b"],
            &["c"],
            vec![
                attr_ints("pads", &[1, 1, 1, 1]),
                attr_ints("kernel_shape", &[3, 3]),
            ],
        ),
        node(
            "/features/features.0/act/Relu",
            "Relu",
            &["c"],
            &["r"],
            vec![],
        ),
        node(
            "/features/features.1/Sigmoid",
            "Sigmoid",
            &["r"],
            &["s"],
            vec![],
        ),
        node(
            "/features/features.1/Mul",
            "Mul",
            &["r", "s"],
            &["silu"],
            vec![],
        ),
        node(
            "/pool/GlobalAveragePool",
            "GlobalAveragePool",
            &["silu"],
            &["p"],
            vec![],
        ),
        node("/Shape", "Shape", &["p"], &["shape"], vec![]),
        node(
            "/Gather",
            "Gather",
            &["shape", "zero"],
            &["n"],
            vec![attr_int("axis", 0)],
        ),
        node("/Unsqueeze", "Unsqueeze", &["n", "axes0"], &["n1"], vec![]),
        node(
            "/Concat",
            "Concat",
            &["n1", "minus1"],
            &["target"],
            vec![attr_int("axis", 0)],
        ),
        node("/Reshape", "Reshape", &["p", "target"], &["flat"], vec![]),
        node(
            "/fc/Gemm",
            "Gemm",
            &["flat", "fw", "fb"],
            &["logits"],
            vec![attr_int("transB", 1)],
        ),
        node(
            "/Softmax",
            "Softmax",
            &["logits"],
            &["probs"],
            vec![attr_int("axis", 1)],
        ),
    ];
    let mut zero = ints("zero", &[0]);
    zero.dims.clear();
    let inits = vec![
        floats("w", &[4, 3, 3, 3], 1),
        floats("b", &[4], 2),
        floats("fw", &[5, 4], 3),
        floats("fb", &[5], 4),
        zero,
        ints("axes0", &[0]),
        ints("minus1", &[-1]),
    ];
    (nodes, inits)
}

fn tiny() -> Vec<u8> {
    let (nodes, inits) = tiny_parts();
    model(
        nodes,
        inits,
        input("x", &[None, Some(3), Some(9), Some(7)]),
        "probs",
    )
}

#[test]
fn a_small_net_imports_with_folding_fusion_and_names() {
    let m = load(&tiny(), &OnnxOptions::default()).unwrap();
    assert_eq!(m.input_size, [9, 7]);
    let ops: Vec<String> = m
        .graph
        .nodes
        .iter()
        .map(|n| format!("{:?}", n.op))
        .collect();
    // The shape subgraph folds away, x * sigmoid(x) is one SiLU, the Softmax is stripped.
    assert!(
        m.graph.nodes.iter().any(|n| matches!(n.op, Op::Silu(_))),
        "{ops:?}"
    );
    assert!(
        !m.graph.nodes.iter().any(|n| matches!(n.op, Op::Sigmoid(_))),
        "{ops:?}"
    );
    assert!(
        matches!(m.graph.nodes.last().unwrap().op, Op::Linear(_)),
        "{ops:?}"
    );
    assert_eq!(m.graph.num_classes(m.input_size).unwrap(), 5);
    assert!(m.explains.contains("Softmax"), "{}", m.explains);
    // The default layer is the last spatial map before the pool.
    assert_eq!(m.default_layer, "silu");
    // Value names, node names and module paths all resolve.
    let silu = m.graph.find("silu").unwrap();
    assert_eq!(m.graph.find("/features/features.1/Mul"), Some(silu));
    assert_eq!(m.graph.find("features.1"), Some(silu));
    assert_eq!(m.graph.find("features"), Some(silu));
    let relu = m.graph.find("r").unwrap();
    assert_eq!(m.graph.find("features.0"), Some(relu));
    assert_eq!(m.graph.find("features.0.act"), Some(relu));
    assert!(m.graph.find("features.2").is_none());
}

#[test]
fn dynamic_sizes_need_a_size_and_fixed_ones_refuse_another() {
    let (nodes, inits) = tiny_parts();
    let dynamic = model(
        nodes,
        inits,
        input("x", &[None, Some(3), None, None]),
        "probs",
    );
    let e = err(&dynamic, &OnnxOptions::default());
    assert!(e.contains("--size"), "{e}");
    let m = load(
        &dynamic,
        &OnnxOptions {
            size: Some([12, 10]),
            layout: None,
        },
    )
    .unwrap();
    assert_eq!(m.input_size, [12, 10]);
    let e = err(
        &tiny(),
        &OnnxOptions {
            size: Some([12, 10]),
            layout: None,
        },
    );
    assert!(e.contains("fixed at 9x7"), "{e}");
}

#[test]
fn channels_last_inputs_are_detected() {
    let (mut nodes, inits) = tiny_parts();
    nodes.insert(
        0,
        node(
            "/Transpose",
            "Transpose",
            &["x_nhwc"],
            &["x"],
            vec![attr_ints("perm", &[0, 3, 1, 2])],
        ),
    );
    let bytes = model(
        nodes,
        inits,
        input("x_nhwc", &[Some(1), Some(9), Some(7), Some(3)]),
        "probs",
    );
    let m = load(&bytes, &OnnxOptions::default()).unwrap();
    assert_eq!(m.input_size, [9, 7]);
    assert!(matches!(m.graph.nodes[1].op, Op::Transpose(_)));
    assert_eq!(m.default_layer, "silu");
    // Forced the other way, the 3 "channels" are 9 rows: a clear error.
    let e = err(
        &bytes,
        &OnnxOptions {
            size: None,
            layout: Some(Layout::Nchw),
        },
    );
    assert!(e.contains("channels"), "{e}");
}

#[test]
fn grayscale_and_rgba_inputs_take_tensors() {
    for c in [1usize, 4] {
        let (nodes, mut inits) = tiny_parts();
        inits[0] = floats("w", &[4, c as i64, 3, 3], 1);
        let bytes = model(
            nodes,
            inits,
            input("x", &[None, Some(c as i64), Some(9), Some(7)]),
            "probs",
        );
        let m = load(&bytes, &OnnxOptions::default()).unwrap();
        let ctx = gradcam_wgpu::GpuContext::new().expect("a wgpu adapter");
        let cfg = gradcam_wgpu::EngineConfig {
            size: m.input_size,
            read_maps: true,
            ..Default::default()
        };
        let mut engine = gradcam_wgpu::Engine::new(ctx, &m, cfg).unwrap();
        assert_eq!(engine.input_channels(), c);
        let x: Vec<f32> = (0..2 * c * 9 * 7)
            .map(|i| (i % 13) as f32 / 6.0 - 1.0)
            .collect();
        let r = engine.explain_tensor(&x, 2, None).unwrap();
        assert_eq!(r[1].targets[0].map.as_ref().unwrap().len(), 9 * 7);
        let e = engine
            .explain(&[image::RgbImage::new(7, 9)])
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("{c}-channel")), "{e}");
    }
    // Five channels are not an image.
    let (nodes, mut inits) = tiny_parts();
    inits[0] = floats("w", &[4, 5, 3, 3], 1);
    let bytes = model(
        nodes,
        inits,
        input("x", &[None, Some(5), Some(9), Some(7)]),
        "probs",
    );
    assert!(err(&bytes, &OnnxOptions::default()).contains("C of 1 to 4"));
}

#[test]
fn unsupported_ops_name_the_node_type_and_opset() {
    let (mut nodes, inits) = tiny_parts();
    nodes[1] = node(
        "/features/features.0/act/Elu",
        "Elu",
        &["c"],
        &["r"],
        vec![],
    );
    let e = err(
        &model(
            nodes,
            inits,
            input("x", &[None, Some(3), Some(9), Some(7)]),
            "probs",
        ),
        &OnnxOptions::default(),
    );
    assert!(
        e.contains("/features/features.0/act/Elu") && e.contains("`Elu`") && e.contains("opset 17"),
        "{e}"
    );
}

#[test]
fn malformed_graphs_are_clear_errors() {
    let opts = OnnxOptions::default();
    // Not protobuf at all, and a truncated file.
    assert!(err(b"definitely not a model", &opts).contains("not a valid ONNX model"));
    let bytes = tiny();
    for cut in [1, 7, bytes.len() / 3, bytes.len() / 2, bytes.len() - 3] {
        let _ = load(&bytes[..cut], &opts).map(|_| ()).map_err(|e| {
            assert!(!e.to_string().contains('\n'));
        });
    }
    // A missing initializer names the value.
    let (nodes, mut inits) = tiny_parts();
    inits.retain(|t| t.name != "w");
    let e = err(
        &model(
            nodes,
            inits,
            input("x", &[None, Some(3), Some(9), Some(7)]),
            "probs",
        ),
        &opts,
    );
    assert!(
        e.contains("`w`") && e.contains("/features/features.0/Conv"),
        "{e}"
    );
    // A cycle: the first node reads what a later one writes.
    let (mut nodes, inits) = tiny_parts();
    nodes[0].input[0] = "silu".into();
    let e = err(
        &model(
            nodes,
            inits,
            input("x", &[None, Some(3), Some(9), Some(7)]),
            "probs",
        ),
        &opts,
    );
    assert!(e.contains("`silu`"), "{e}");
    // A weight whose shape contradicts the graph.
    let (nodes, mut inits) = tiny_parts();
    inits[2] = floats("fw", &[5, 6], 3);
    let e = err(
        &model(
            nodes,
            inits,
            input("x", &[None, Some(3), Some(9), Some(7)]),
            "probs",
        ),
        &opts,
    );
    assert!(e.contains("/fc/Gemm"), "{e}");
    // A shape subgraph asking for an enormous constant is refused, not allocated.
    let (mut nodes, mut inits) = tiny_parts();
    inits.push(ints("huge", &[1 << 40, 1 << 20]));
    nodes[9].input[1] = "big".into();
    nodes.insert(
        0,
        node("/Big", "ConstantOfShape", &["huge"], &["big"], vec![]),
    );
    let e = err(
        &model(
            nodes,
            inits,
            input("x", &[None, Some(3), Some(9), Some(7)]),
            "probs",
        ),
        &opts,
    );
    assert!(e.contains("/Big") && e.contains("too large"), "{e}");
    // Raw data shorter than its shape.
    let (nodes, mut inits) = tiny_parts();
    inits[1].float_data.clear();
    inits[1].raw_data = vec![0; 6];
    let e = err(
        &model(
            nodes,
            inits,
            input("x", &[None, Some(3), Some(9), Some(7)]),
            "probs",
        ),
        &opts,
    );
    assert!(e.contains("`b`") && e.contains("raw data"), "{e}");
}

#[test]
fn external_data_is_read_and_a_missing_file_is_named() {
    let (nodes, mut inits) = tiny_parts();
    let w = inits[0].float_data.clone();
    inits[0].float_data.clear();
    let mut loc = onnx_protobuf::StringStringEntryProto::new();
    loc.key = "location".into();
    loc.value = "tiny.data".into();
    inits[0].external_data = vec![loc];
    inits[0].data_location = onnx_protobuf::tensor_proto::DataLocation::EXTERNAL.into();
    let bytes = model(
        nodes,
        inits,
        input("x", &[None, Some(3), Some(9), Some(7)]),
        "probs",
    );
    let e = err(&bytes, &OnnxOptions::default());
    assert!(e.contains("tiny.data") && e.contains("`w`"), "{e}");
    let data: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut ext = |loc: &str| {
        assert_eq!(loc, "tiny.data");
        Ok(data.clone())
    };
    let m = import(&bytes, &mut ext, &OnnxOptions::default(), "tiny").unwrap();
    let conv = m.graph.nodes.iter().find_map(|n| match &n.op {
        Op::Conv2d(c) => Some(c.weight.clone()),
        _ => None,
    });
    assert_eq!(m.weights.get(&conv.unwrap()).unwrap().data, w);
}

#[test]
fn files_load_by_extension_or_content() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("net.bin");
    std::fs::write(&p, tiny()).unwrap();
    let m = Model::load(&p, None).unwrap();
    assert_eq!(m.arch, "tiny");
    let e = Model::load(&p, Some("resnet18")).unwrap_err().to_string();
    assert!(e.contains("ONNX") && e.contains("--arch"), "{e}");
}

#[test]
fn transformer_shape_subgraphs_fold() {
    let mod_of = |fmod: i64| {
        folded(
            vec![node(
                "/Mod",
                "Mod",
                &["p", "q"],
                &["c"],
                vec![attr_int("fmod", fmod)],
            )],
            vec![ints("p", &[-7, 7, -7, 7, 6]), ints("q", &[3, 3, -3, -3, 3])],
            5,
        )
    };
    // Python's sign (of the divisor) and C's (of the dividend).
    assert_eq!(mod_of(0), [2.0, 1.0, -1.0, -2.0, 0.0]);
    assert_eq!(mod_of(1), [-1.0, 1.0, -1.0, 1.0, 0.0]);
    let fmod = folded(
        vec![node(
            "/Mod",
            "Mod",
            &["p", "q"],
            &["c"],
            vec![attr_int("fmod", 1)],
        )],
        vec![
            float_values("p", &[2], &[-7.5, 7.5]),
            float_values("q", &[1], &[2.0]),
        ],
        2,
    );
    assert_eq!(fmod, [-1.5, 1.5]);
    // torch's `expand(N, -1)`: ConstantOfShape(ones) * -1 == [N, -1] picks the
    // -1s, Where puts the 1s there, and Expand broadcasts (numpy: a 1 keeps the dim).
    let mut one = ints("one", &[1]);
    one.dims = vec![1];
    let mut cos = node(
        "/ConstantOfShape",
        "ConstantOfShape",
        &["two"],
        &["ones"],
        vec![],
    );
    let mut value = AttributeProto::new();
    value.name = "value".into();
    value.type_ = AttributeType::TENSOR.into();
    value.t = Some(one).into();
    cos.attribute = vec![value];
    let expand = folded(
        vec![
            cos,
            node("/Mul", "Mul", &["ones", "minus1"], &["neg"], vec![]),
            node("/Equal", "Equal", &["target", "neg"], &["eq"], vec![]),
            node(
                "/Where",
                "Where",
                &["eq", "ones", "target"],
                &["shape"],
                vec![],
            ),
            node("/Expand", "Expand", &["token", "shape"], &["c"], vec![]),
        ],
        vec![
            ints("two", &[2]),
            int_scalar("minus1", -1),
            ints("target", &[1, -1]),
            float_values("token", &[1, 3], &[0.5, -1.0, 2.0]),
        ],
        3,
    );
    assert_eq!(expand, [0.5, -1.0, 2.0]);
    let broadcast = folded(
        vec![node("/Expand", "Expand", &["col", "shape"], &["c"], vec![])],
        vec![
            float_values("col", &[2, 1], &[1.0, 2.0]),
            ints("shape", &[2, 3]),
        ],
        6,
    );
    assert_eq!(broadcast, [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
    // Comparisons are bools (0/1 integers); Not and Where read them.
    let logic = folded(
        vec![
            node("/Less", "Less", &["a", "b"], &["lt"], vec![]),
            node("/Greater", "Greater", &["a", "b"], &["gt"], vec![]),
            node("/Not", "Not", &["lt"], &["ge"], vec![]),
            node("/Where", "Where", &["gt", "a", "b"], &["max"], vec![]),
            node(
                "/Concat",
                "Concat",
                &["lt", "gt", "ge", "max"],
                &["c"],
                vec![attr_int("axis", 0)],
            ),
        ],
        vec![
            float_values("a", &[3], &[1.0, 5.0, 3.0]),
            float_values("b", &[3], &[2.0, 2.0, 3.0]),
        ],
        12,
    );
    assert_eq!(logic, [1., 0., 0., 0., 1., 0., 0., 1., 1., 2., 5., 3.]);
    // Range (int, negative step, float), Sqrt and Pow, as attention's scale computes them.
    let ranges = folded(
        vec![
            node("/Range", "Range", &["r0", "r1", "r2"], &["up"], vec![]),
            node("/Range_1", "Range", &["r1", "r0", "r3"], &["down"], vec![]),
            node("/Range_2", "Range", &["f0", "f1", "f0"], &["half"], vec![]),
            node("/Sqrt", "Sqrt", &["sq"], &["root"], vec![]),
            node("/Pow", "Pow", &["base", "exp"], &["pow"], vec![]),
            node("/Pow_1", "Pow", &["ibase", "iexp"], &["ipow"], vec![]),
            node(
                "/Concat",
                "Concat",
                &["up", "down", "half", "root", "pow", "ipow"],
                &["c"],
                vec![attr_int("axis", 0)],
            ),
        ],
        vec![
            int_scalar("r0", 1),
            int_scalar("r1", 10),
            int_scalar("r2", 3),
            int_scalar("r3", -4),
            float_values("f0", &[], &[0.5]),
            float_values("f1", &[], &[2.0]),
            float_values("sq", &[2], &[4.0, 2.25]),
            float_values("base", &[2], &[2.0, 3.0]),
            float_values("exp", &[2], &[3.0, 2.0]),
            ints("ibase", &[2]),
            ints("iexp", &[10]),
        ],
        14,
    );
    let want = [
        1.0, 4.0, 7.0, 10.0, 6.0, 2.0, 0.5, 1.0, 1.5, 2.0, 1.5, 8.0, 9.0, 1024.0,
    ];
    assert_eq!(ranges, want);
}

#[test]
fn folding_errors_name_the_node_and_never_allocate_without_bound() {
    let opts = OnnxOptions::default();
    let fails = |nodes: Vec<NodeProto>, inits: Vec<TensorProto>| {
        let mut inits = inits;
        inits.extend([ints("s0", &[0]), ints("sk", &[1]), ints("s1", &[1])]);
        let mut nodes = nodes;
        nodes.extend([
            node("/Flatten", "Flatten", &["x"], &["flat"], vec![]),
            node(
                "/Slice",
                "Slice",
                &["flat", "s0", "sk", "s1"],
                &["head"],
                vec![],
            ),
            node("/Add", "Add", &["head", "c"], &["out"], vec![]),
        ]);
        err(&model(nodes, inits, image4(), "out"), &opts)
    };
    let e = fails(
        vec![node("/Big", "Range", &["a", "b", "d"], &["c"], vec![])],
        vec![
            int_scalar("a", i64::MIN),
            int_scalar("b", i64::MAX),
            int_scalar("d", 1),
        ],
    );
    assert!(e.contains("/Big") && e.contains("too large"), "{e}");
    let e = fails(
        vec![node("/Stuck", "Range", &["a", "b", "d"], &["c"], vec![])],
        vec![int_scalar("a", 0), int_scalar("b", 3), int_scalar("d", 0)],
    );
    assert!(e.contains("/Stuck") && e.contains("delta of 0"), "{e}");
    let e = fails(
        vec![node("/Stuck", "Range", &["a", "b", "d"], &["c"], vec![])],
        vec![
            float_values("a", &[], &[0.0]),
            float_values("b", &[], &[1e30]),
            float_values("d", &[], &[1e-30]),
        ],
    );
    assert!(e.contains("/Stuck") && e.contains("too long"), "{e}");
    let e = fails(
        vec![node("/Huge", "Expand", &["v", "shape"], &["c"], vec![])],
        vec![
            float_values("v", &[1], &[1.0]),
            ints("shape", &[1 << 40, 1 << 30]),
        ],
    );
    assert!(e.contains("/Huge") && e.contains("too large"), "{e}");
    let e = fails(
        vec![node("/Neg", "Expand", &["v", "shape"], &["c"], vec![])],
        vec![float_values("v", &[1], &[1.0]), ints("shape", &[-3])],
    );
    assert!(e.contains("/Neg") && e.contains("negative"), "{e}");
    let e = fails(
        vec![node("/Mod", "Mod", &["p", "q"], &["c"], vec![])],
        vec![ints("p", &[3]), ints("q", &[0])],
    );
    assert!(e.contains("/Mod") && e.contains("by zero"), "{e}");
    let e = fails(
        vec![node("/Where", "Where", &["p", "q", "r"], &["c"], vec![])],
        vec![ints("p", &[1, 0]), ints("q", &[1, 2, 3]), ints("r", &[0])],
    );
    assert!(e.contains("/Where") && e.contains("broadcast"), "{e}");
    // A fold-only op on the image says so.
    let e = fails(vec![node("/Sqrt", "Sqrt", &["x"], &["c"], vec![])], vec![]);
    assert!(
        e.contains("/Sqrt") && e.contains("only on constants"),
        "{e}"
    );
}

/// torchvision's ViT stem: patches `[N, 16, 3]` (a reshape and transpose of the image), the
/// class token expanded to the batch through torch's shape subgraph, concatenated in front,
/// plus a position embedding; then `extra` nodes reading `tokens` (`[N, 17, 3]`).
fn vit_stem(extra: Vec<NodeProto>, out: &str) -> Vec<u8> {
    let mut nodes = vec![
        node("/Reshape", "Reshape", &["x", "flat3"], &["rows"], vec![]),
        node(
            "/Transpose",
            "Transpose",
            &["rows"],
            &["patches"],
            vec![attr_ints("perm", &[0, 2, 1])],
        ),
        // [N, -1, -1] with N from the image's shape (1 when folded).
        node("/Shape", "Shape", &["x"], &["xshape"], vec![]),
        node(
            "/Gather",
            "Gather",
            &["xshape", "zero"],
            &["n"],
            vec![attr_int("axis", 0)],
        ),
        node("/Unsqueeze", "Unsqueeze", &["n", "axes0"], &["n1"], vec![]),
        node(
            "/Concat_shape",
            "Concat",
            &["n1", "minus1s"],
            &["target"],
            vec![attr_int("axis", 0)],
        ),
        node("/Abs", "Abs", &["target"], &["ones"], vec![]),
        node("/Equal", "Equal", &["target", "minus1"], &["eq"], vec![]),
        node(
            "/Where",
            "Where",
            &["eq", "ones", "target"],
            &["shape"],
            vec![],
        ),
        node(
            "/Expand",
            "Expand",
            &["class_token", "shape"],
            &["cls"],
            vec![],
        ),
        node(
            "/Concat",
            "Concat",
            &["cls", "patches"],
            &["joined"],
            vec![attr_int("axis", 1)],
        ),
        node("/Add", "Add", &["joined", "pos"], &["tokens"], vec![]),
    ];
    nodes.extend(extra);
    let mut zero = ints("zero", &[0]);
    zero.dims.clear();
    let inits = vec![
        ints("flat3", &[1, 3, 16]),
        zero,
        ints("axes0", &[0]),
        ints("minus1s", &[-1, -1]),
        int_scalar("minus1", -1),
        float_values("class_token", &[1, 1, 3], &[0.25, -0.5, 1.5]),
        floats("pos", &[1, 17, 3], 7),
    ];
    model(nodes, inits, image4(), out)
}

/// The image batch `[n, 3, 4, 4]` and the f64 tokens `[n, 17, 3]` of [`vit_stem`].
fn vit_tokens(n: usize) -> (Vec<f64>, Vec<f64>) {
    let x: Vec<f64> = (0..n * 48)
        .map(|i| ((i * 37) % 23) as f64 / 7.0 - 1.5)
        .collect();
    let pos = floats("pos", &[1, 17, 3], 7).float_data;
    let cls = [0.25f32, -0.5, 1.5];
    let mut tokens = Vec::with_capacity(n * 51);
    for b in 0..n {
        for t in 0..17 {
            for d in 0..3 {
                let v = if t == 0 {
                    cls[d] as f64
                } else {
                    x[b * 48 + d * 16 + (t - 1)]
                };
                tokens.push(v + pos[t * 3 + d] as f64);
            }
        }
    }
    (x, tokens)
}

#[test]
fn a_class_token_concatenates_in_front_of_the_patches() {
    let bytes = vit_stem(vec![], "tokens");
    let m = load(&bytes, &OnnxOptions::default()).unwrap();
    // A pad and a constant add, no concat; the batch of 2 shares the class token.
    assert!(m.graph.nodes.iter().any(|n| matches!(n.op, Op::Pad(_))));
    assert!(!m.graph.nodes.iter().any(|n| matches!(n.op, Op::Concat(_))));
    let (x, tokens) = vit_tokens(2);
    assert_close("tokens", &cpu_forward(&m, &x, 2), &tokens);
    assert_eq!(m.graph.find("joined"), m.graph.find("/Concat"));
}

#[test]
fn constants_concatenate_between_and_after_activations() {
    // [c0 | patches | c1 | patches | c2] along the token axis: two runs of activations.
    let bytes = vit_stem(
        vec![node(
            "/Concat_more",
            "Concat",
            &["c0", "patches", "c1", "patches", "c2"],
            &["mixed"],
            vec![attr_int("axis", 1)],
        )],
        "mixed",
    );
    // Splice the three constants into the graph's initializers.
    let mut proto = ModelProto::parse_from_bytes(&bytes).unwrap();
    let g = proto.graph.as_mut().unwrap();
    g.initializer.push(floats("c0", &[1, 2, 3], 11));
    g.initializer.push(floats("c1", &[1, 1, 3], 12));
    g.initializer.push(floats("c2", &[1, 3, 3], 13));
    let m = load(&proto.write_to_bytes().unwrap(), &OnnxOptions::default()).unwrap();
    let x: Vec<f64> = (0..2 * 48).map(|i| (i % 11) as f64 * 0.3 - 1.0).collect();
    let c = |name: &str, t: i64, seed| floats(name, &[1, t, 3], seed).float_data;
    let (c0, c1, c2) = (c("c0", 2, 11), c("c1", 1, 12), c("c2", 3, 13));
    let mut want = Vec::new();
    for b in 0..2 {
        let patches: Vec<f64> = (0..16)
            .flat_map(|t| (0..3).map(move |d| (t, d)))
            .map(|(t, d)| x[b * 48 + d * 16 + t])
            .collect();
        want.extend(c0.iter().map(|&v| v as f64));
        want.extend(&patches);
        want.extend(c1.iter().map(|&v| v as f64));
        want.extend(&patches);
        want.extend(c2.iter().map(|&v| v as f64));
    }
    assert_close("mixed", &cpu_forward(&m, &x, 2), &want);
}

#[test]
fn gather_on_tokens_is_a_slice() {
    // x[:, 0] (the class token), x[:, -1] and x[:, 2:5] of the tokens.
    let mut proto = ModelProto::parse_from_bytes(&vit_stem(
        vec![
            node(
                "/Gather_cls",
                "Gather",
                &["tokens", "i0"],
                &["cls_out"],
                vec![attr_int("axis", 1)],
            ),
            node(
                "/Gather_last",
                "Gather",
                &["tokens", "ilast"],
                &["last"],
                vec![attr_int("axis", -2)],
            ),
            node(
                "/Gather_run",
                "Gather",
                &["tokens", "irun"],
                &["run"],
                vec![attr_int("axis", 1)],
            ),
            node("/Flatten_run", "Flatten", &["run"], &["run_flat"], vec![]),
            node(
                "/Concat_out",
                "Concat",
                &["cls_out", "last", "run_flat"],
                &["out"],
                vec![attr_int("axis", 1)],
            ),
        ],
        "out",
    ))
    .unwrap();
    let g = proto.graph.as_mut().unwrap();
    g.initializer.extend([
        int_scalar("i0", 0),
        int_scalar("ilast", -1),
        ints("irun", &[2, 3, 4]),
    ]);
    let bytes = proto.write_to_bytes().unwrap();
    let m = load(&bytes, &OnnxOptions::default()).unwrap();
    let (x, tokens) = vit_tokens(2);
    let mut want = Vec::new();
    for b in 0..2 {
        let tok = |t: usize| tokens[(b * 17 + t) * 3..(b * 17 + t + 1) * 3].to_vec();
        want.extend(tok(0));
        want.extend(tok(16));
        for t in 2..5 {
            want.extend(tok(t));
        }
    }
    assert_close("gathered", &cpu_forward(&m, &x, 2), &want);
    assert_eq!(m.graph.num_classes(m.input_size).unwrap(), 15);

    // The index lists that are not a slice, the batch axis and a stray index are errors.
    let with_gather = |axis: i64, idx: TensorProto| {
        let mut p = ModelProto::parse_from_bytes(&vit_stem(
            vec![node(
                "/Gather_bad",
                "Gather",
                &["tokens", "idx"],
                &["out"],
                vec![attr_int("axis", axis)],
            )],
            "out",
        ))
        .unwrap();
        let mut idx = idx;
        idx.name = "idx".into();
        p.graph.as_mut().unwrap().initializer.push(idx);
        err(&p.write_to_bytes().unwrap(), &OnnxOptions::default())
    };
    let e = with_gather(1, ints("idx", &[0, 2]));
    assert!(
        e.contains("/Gather_bad") && e.contains("consecutive"),
        "{e}"
    );
    let e = with_gather(1, ints("idx", &[3, 2]));
    assert!(
        e.contains("/Gather_bad") && e.contains("consecutive"),
        "{e}"
    );
    let e = with_gather(0, int_scalar("idx", 0));
    assert!(e.contains("/Gather_bad") && e.contains("batch axis"), "{e}");
    let e = with_gather(1, int_scalar("idx", 17));
    assert!(
        e.contains("/Gather_bad") && e.contains("out of range"),
        "{e}"
    );
    let e = with_gather(1, int_scalar("idx", -18));
    assert!(
        e.contains("/Gather_bad") && e.contains("out of range"),
        "{e}"
    );
}

#[test]
fn a_constant_that_varies_along_the_batch_does_not_concatenate() {
    let mut proto = ModelProto::parse_from_bytes(&vit_stem(vec![], "tokens")).unwrap();
    // A class token for a batch of two, and one of the wrong width.
    for (dims, what) in [
        (vec![2, 1, 3], "every image"),
        (vec![1, 1, 4], "per-image dims"),
    ] {
        let t = proto
            .graph
            .as_mut()
            .unwrap()
            .initializer
            .iter_mut()
            .find(|t| t.name == "class_token")
            .unwrap();
        *t = floats("class_token", &dims, 5);
        let e = err(&proto.write_to_bytes().unwrap(), &OnnxOptions::default());
        assert!(e.contains("/Concat") && e.contains(what), "{e}");
    }
}

/// The import folds attention's scalar q and k scales into the product (alpha) and drops
/// them cleanly: no scale node left before a MatMul, the model still self-consistent
/// (every token layer a node, every tensor used), as a saved model must be.
#[test]
fn attention_scales_fold_into_the_product() {
    let path = std::path::Path::new("tests/fixtures/onnx/vit.onnx");
    let mut m = Model::load(path, None).unwrap();
    // The file names no classes; a saved model must.
    let outputs = m.graph.shapes(m.input_size).unwrap().last().unwrap()[0];
    m.classes = (0..outputs).map(|i| format!("class {i}")).collect();
    let nodes = &m.graph.nodes;
    let alphas: Vec<f32> = nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::MatMul(mm) => Some(mm.alpha),
            _ => None,
        })
        .collect();
    // Q K^T scaled by (d^-1/4)^2 with d = 8, P V not.
    let folded = alphas
        .iter()
        .filter(|&&a| (a - 8f32.powf(-0.5)).abs() < 1e-6);
    assert_eq!(folded.count(), alphas.len() / 2, "{alphas:?}");
    for n in nodes.iter().filter(|n| matches!(n.op, Op::MatMul(_))) {
        for &i in &n.inputs {
            assert!(
                !matches!(nodes[i].op, Op::BinaryConst(_)),
                "`{}` still reads a scale node `{}`",
                n.name,
                nodes[i].name
            );
        }
    }
    m.meta().check(&m.weights).unwrap();
}
