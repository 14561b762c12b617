//! Small ONNX graphs built in Rust, shared by tests/onnx.rs and tests/onnx_batch1.rs:
//! protobuf builders, import with no external data, and the f64 forward pass.
#![allow(dead_code)]

use super::common;
use gradcam_wgpu::Model;
use gradcam_wgpu::graph::Op;
use gradcam_wgpu::onnx::{OnnxOptions, import};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::tensor_proto::DataType;
use onnx_protobuf::tensor_shape_proto::Dimension;
use onnx_protobuf::{
    AttributeProto, GraphProto, Message, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto, type_proto,
};

pub fn attr_ints(name: &str, v: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INTS.into();
    a.ints = v.to_vec();
    a
}

pub fn attr_int(name: &str, v: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INT.into();
    a.i = v;
    a
}

pub fn node(
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

pub fn floats(name: &str, dims: &[i64], seed: u32) -> TensorProto {
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

pub fn ints(name: &str, v: &[i64]) -> TensorProto {
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = vec![v.len() as i64];
    t.data_type = DataType::INT64 as i32;
    t.int64_data = v.to_vec();
    t
}

/// An input value `[dims]`, `None` a named dynamic dim.
pub fn input(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
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

pub fn output(name: &str) -> ValueInfoProto {
    let mut v = ValueInfoProto::new();
    v.name = name.into();
    v
}

pub fn model(
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

pub fn no_external(_: &str) -> gradcam_wgpu::Result<Vec<u8>> {
    Err(gradcam_wgpu::Error::Invalid("no external data here".into()))
}

pub fn load(bytes: &[u8], opts: &OnnxOptions) -> gradcam_wgpu::Result<Model> {
    import(bytes, &mut no_external, opts, "tiny")
}

pub fn err(bytes: &[u8], opts: &OnnxOptions) -> String {
    let e = load(bytes, opts).expect_err("must fail").to_string();
    assert!(!e.contains('\n'), "error is not one line: {e}");
    e
}

/// A scalar int64 initializer.
pub fn int_scalar(name: &str, v: i64) -> TensorProto {
    let mut t = ints(name, &[v]);
    t.dims.clear();
    t
}

/// A float initializer of `dims` holding `v`.
pub fn float_values(name: &str, dims: &[i64], v: &[f32]) -> TensorProto {
    let mut t = floats(name, dims, 0);
    t.float_data = v.to_vec();
    t
}

/// The image `[N, 3, 4, 4]`, the graph's input in the transformer-shaped tests.
pub fn image4() -> ValueInfoProto {
    input("x", &[None, Some(3), Some(4), Some(4)])
}

/// The last node's output for a batch of `n` images, composed from the ops' f64 references.
pub fn cpu_forward(m: &Model, x: &[f64], n: usize) -> Vec<f64> {
    let mut acts = common::cpu_forward(&m.graph, &m.weights, x.to_vec(), n, m.input_size);
    acts.pop().unwrap()
}

pub fn assert_close(name: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{name}: lengths");
    for (k, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-9, "{name}[{k}]: {g} vs {w}");
    }
}

/// Folds the nodes computing `c` (of `k` elements) and returns it as the constant that
/// `x.flatten()[:, :k] + c.reshape(k)` adds.
pub fn folded(mut nodes: Vec<NodeProto>, mut inits: Vec<TensorProto>, k: i64) -> Vec<f32> {
    inits.extend([ints("s0", &[0]), ints("sk", &[k]), ints("s1", &[1])]);
    nodes.extend([
        node("/Flatten", "Flatten", &["x"], &["flat"], vec![]),
        node(
            "/Slice",
            "Slice",
            &["flat", "s0", "sk", "s1"],
            &["head"],
            vec![],
        ),
        node("/Reshape_c", "Reshape", &["c", "sk"], &["c_flat"], vec![]),
        node("/Add", "Add", &["head", "c_flat"], &["out"], vec![]),
    ]);
    let m = load(
        &model(nodes, inits, image4(), "out"),
        &OnnxOptions::default(),
    )
    .unwrap();
    let tensor = m.graph.nodes.iter().find_map(|n| match &n.op {
        Op::BinaryConst(b) => Some(b.tensor.clone()),
        _ => None,
    });
    m.weights
        .get(&tensor.expect("a constant add"))
        .unwrap()
        .data
        .clone()
}
