//! ONNX import on small graphs built here: what the importer folds, fuses and names, and
//! that every malformed file is a clear error naming the node, tensor or file (never a
//! panic). Whole exported nets against PyTorch are in tests/onnx_golden.rs.

use gradcam_wgpu::Model;
use gradcam_wgpu::graph::Op;
use gradcam_wgpu::onnx::{Layout, OnnxOptions, import};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::Dimension;
use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, type_proto,
};

fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INTS.into();
    a.ints = v.to_vec();
    a
}

fn attr_int(name: &str, v: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INT.into();
    a.i = v;
    a
}

fn node(
    name: &str,
    op: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    let mut n = NodeProto::new();
    n.name = name.into();
    n.op_type = op.into();
    n.input = inputs.iter().map(|s| s.to_string()).collect();
    n.output = outputs.iter().map(|s| s.to_string()).collect();
    n.attribute = attrs;
    n
}

fn floats(name: &str, dims: &[i64], seed: u32) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = dims.to_vec();
    t.data_type = DataType::FLOAT as i32;
    let count: i64 = dims.iter().product();
    t.float_data = (0..count as u32)
        .map(|i| {
            ((i.wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32 / 1000.0 - 0.5
        })
        .collect();
    t
}

fn ints(name: &str, v: &[i64]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = vec![v.len() as i64];
    t.data_type = DataType::INT64 as i32;
    t.int64_data = v.to_vec();
    t
}

/// An input value `[dims]`, `None` a named dynamic dim.
fn input(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    let mut shape = TensorShapeProto::new();
    for d in dims {
        let mut dim = Dimension::new();
        match d {
            Some(v) => dim.set_dim_value(*v),
            None => dim.set_dim_param("N".into()),
        }
        shape.dim.push(dim);
    }
    let mut tt = type_proto::Tensor::new();
    tt.elem_type = DataType::FLOAT as i32;
    tt.shape = Some(shape).into();
    let mut ty = TypeProto::new();
    ty.set_tensor_type(tt);
    let mut v = ValueInfoProto::new();
    v.name = name.into();
    v.type_ = Some(ty).into();
    v
}

fn output(name: &str) -> ValueInfoProto {
    let mut v = ValueInfoProto::new();
    v.name = name.into();
    v
}

fn model(
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    inp: ValueInfoProto,
    out: &str,
) -> Vec<u8> {
    let mut g = GraphProto::new();
    g.name = "tiny".into();
    g.node = nodes;
    g.initializer = inits;
    g.input = vec![inp];
    g.output = vec![output(out)];
    let mut m = ModelProto::new();
    m.ir_version = 8;
    let mut op = OperatorSetIdProto::new();
    op.version = 17;
    m.opset_import = vec![op];
    m.graph = Some(g).into();
    m.write_to_bytes().unwrap()
}

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

fn no_external(_: &str) -> gradcam_wgpu::Result<Vec<u8>> {
    Err(gradcam_wgpu::Error::Invalid("no external data here".into()))
}

fn load(bytes: &[u8], opts: &OnnxOptions) -> gradcam_wgpu::Result<Model> {
    import(bytes, &mut no_external, opts, "tiny")
}

fn err(bytes: &[u8], opts: &OnnxOptions) -> String {
    let e = load(bytes, opts).expect_err("must fail").to_string();
    assert!(!e.contains('\n'), "error is not one line: {e}");
    e
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
