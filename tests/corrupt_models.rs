//! Bad model files never crash or hang: each corrupt safetensors file or metadata graph gets
//! a clear error (asserted on its message), never a panic, an overflow or a huge allocation.
//! NaN and infinite weights load with a warning naming the tensor.

use gradcam_wgpu::model::{META_KEY, Weights, detweights, torchvision};
use gradcam_wgpu::{Model, TargetSpec};
use safetensors::Dtype;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::process::Command;

/// A tiny self-describing model: conv 3->2 (1x1), ReLU, global pool, linear 2->2.
fn tiny_meta() -> Value {
    json!({
        "version": 1,
        "name": "tiny",
        "graph": {
            "nodes": [
                {"name": "input", "op": {"op": "input", "channels": 3}, "inputs": []},
                {"name": "conv", "op": {"op": "conv2d", "weight": "conv.weight",
                    "bias": "conv.bias", "in_channels": 3, "out_channels": 2, "kernel": [1, 1],
                    "stride": [1, 1], "padding": [0, 0], "dilation": [1, 1], "groups": 1},
                    "inputs": [0]},
                {"name": "relu", "op": {"op": "relu"}, "inputs": [1]},
                {"name": "pool", "op": {"op": "adaptive_avg_pool2d", "output": [1, 1]},
                    "inputs": [2]},
                {"name": "flatten", "op": {"op": "flatten"}, "inputs": [3]},
                {"name": "fc", "op": {"op": "linear", "weight": "fc.weight", "bias": null,
                    "in_features": 2, "out_features": 2}, "inputs": [4]}
            ],
            "aliases": {}
        },
        "input_size": [8, 8],
        "mean": [0.5, 0.5, 0.5],
        "std": [0.25, 0.25, 0.25],
        "classes": ["a", "b"],
        "default_layer": "relu",
        "output": "softmax"
    })
}

struct T {
    name: &'static str,
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn tiny_tensors() -> Vec<T> {
    vec![
        T {
            name: "conv.weight",
            dtype: Dtype::F32,
            shape: vec![2, 3, 1, 1],
            data: f32s(&[0.1, 0.2, 0.3, -0.4, 0.5, 0.6]),
        },
        T {
            name: "conv.bias",
            dtype: Dtype::F32,
            shape: vec![2],
            data: f32s(&[0.0, 1.0]),
        },
        T {
            name: "fc.weight",
            dtype: Dtype::F32,
            shape: vec![2, 2],
            data: f32s(&[1.0, 0.0, 0.0, 1.0]),
        },
    ]
}

/// Safetensors bytes of `tensors` with `meta` (a JSON string) as the model metadata.
fn file(tensors: &[T], meta: Option<String>) -> Vec<u8> {
    let views: Vec<(&str, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|t| {
            let v = safetensors::tensor::TensorView::new(t.dtype, t.shape.clone(), &t.data);
            (t.name, v.unwrap())
        })
        .collect();
    let meta: Option<HashMap<String, String>> = meta.map(|m| [(META_KEY.to_string(), m)].into());
    safetensors::serialize(views, meta).unwrap()
}

fn tiny() -> Vec<u8> {
    file(&tiny_tensors(), Some(tiny_meta().to_string()))
}

fn load(bytes: &[u8]) -> gradcam_wgpu::Result<Model> {
    Model::from_weights(Weights::from_bytes(bytes)?, None)
}

/// The error of loading `bytes`, which must fail.
fn error(bytes: &[u8]) -> String {
    match load(bytes) {
        Ok(m) => panic!("loaded a bad model `{}`", m.arch),
        Err(e) => e.to_string(),
    }
}

/// Loading the tiny model with its metadata changed by `f` fails with a message containing
/// every one of `expect`.
fn meta_error(f: impl Fn(&mut Value), expect: &[&str]) {
    let mut meta = tiny_meta();
    f(&mut meta);
    let e = error(&file(&tiny_tensors(), Some(meta.to_string())));
    for x in expect {
        assert!(e.contains(x), "expected `{x}` in: {e}");
    }
}

fn node(i: usize) -> String {
    format!("/graph/nodes/{i}")
}

#[test]
fn the_tiny_model_loads() {
    let m = load(&tiny()).unwrap();
    assert_eq!(m.graph.num_classes(m.input_size).unwrap(), 2);
    assert!(m.warnings().is_empty());
}

#[test]
fn truncated_and_malformed_files_are_rejected() {
    let good = tiny();
    let mut tried = 0;
    // Every truncation: inside the length prefix, the header, and the data.
    for len in (0..good.len()).step_by(7) {
        let e = error(&good[..len]);
        assert!(e.contains("not a valid safetensors file"), "{len}: {e}");
        tried += 1;
    }
    // The header length claims more than the file holds (and absurdly more).
    for claim in [good.len() as u64, 1 << 40, u64::MAX] {
        let mut b = good.clone();
        b[..8].copy_from_slice(&claim.to_le_bytes());
        let e = error(&b);
        assert!(e.contains("not a valid safetensors file"), "{claim}: {e}");
        tried += 1;
    }
    // Data offsets past the end, and a header that is not JSON.
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(good[8..8 + header_len].to_vec()).unwrap();
    for bad in [
        header.replacen("\"data_offsets\":[0,", "\"data_offsets\":[1000000,", 1),
        header.replacen('{', "[", 1),
    ] {
        let mut b = (bad.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(bad.as_bytes());
        b.extend_from_slice(&good[8 + header_len..]);
        let e = error(&b);
        assert!(e.contains("not a valid safetensors file"), "{e}");
        tried += 1;
    }
    eprintln!("tried {tried} malformed files");
}

#[test]
fn dtypes_convert_or_name_the_tensor() {
    // F16, BF16 and F64 convert to the same f32 values.
    let halves = |v: &[f32], dtype| -> Vec<u8> {
        v.iter()
            .flat_map(|&x| match dtype {
                Dtype::F16 => half::f16::from_f32(x).to_le_bytes().to_vec(),
                Dtype::BF16 => half::bf16::from_f32(x).to_le_bytes().to_vec(),
                _ => (x as f64).to_le_bytes().to_vec(),
            })
            .collect()
    };
    let fc = [1.0, 0.5, -2.0, 0.25]; // exact in every dtype
    for dtype in [Dtype::F16, Dtype::BF16, Dtype::F64] {
        let mut t = tiny_tensors();
        t[2].dtype = dtype;
        t[2].data = halves(&fc, dtype);
        let m = load(&file(&t, Some(tiny_meta().to_string()))).unwrap();
        assert_eq!(m.weights.get("fc.weight").unwrap().data, fc, "{dtype:?}");
    }
    for dtype in [Dtype::I64, Dtype::I32, Dtype::U8, Dtype::BOOL] {
        let mut t = tiny_tensors();
        t[2].dtype = dtype;
        t[2].data = vec![0; 4 * dtype.bitsize() / 8];
        let e = error(&file(&t, Some(tiny_meta().to_string())));
        assert!(
            e.contains("tensor `fc.weight`") && e.contains(&format!("unsupported dtype {dtype:?}")),
            "{e}"
        );
    }
}

#[test]
fn nan_and_inf_weights_load_with_a_warning_naming_the_tensor() {
    let mut t = tiny_tensors();
    t[0].data = f32s(&[0.1, f32::NAN, 0.3, f32::INFINITY, 0.5, f32::NEG_INFINITY]);
    let m = load(&file(&t, Some(tiny_meta().to_string()))).unwrap();
    let w = m.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("tensor `conv.weight`") && w[0].contains("1 NaN and 2 infinite values of 6"),
        "{w:?}"
    );

    // The CLI prints it at load, and the manifest and summary state it.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("nan.safetensors");
    std::fs::write(&path, file(&t, Some(tiny_meta().to_string()))).unwrap();
    let img = tmp.path().join("img.png");
    image::RgbImage::from_pixel(8, 8, image::Rgb([9, 99, 199]))
        .save(&img)
        .unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_gradcam"))
        .arg("explain")
        .arg(&img)
        .arg("--model")
        .arg(&path)
        .arg("--out")
        .arg(tmp.path().join("out"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("warning: tensor `conv.weight`: 1 NaN"),
        "{stderr}"
    );
    let out = tmp.path().join("out");
    let manifest = std::fs::read_to_string(out.join("predictions.jsonl")).unwrap();
    let rec: Value = serde_json::from_str(manifest.lines().next().unwrap()).unwrap();
    assert!(
        rec["model_warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("tensor `conv.weight`")),
        "{rec}"
    );
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["model_warnings"], rec["model_warnings"]);
}

#[test]
fn shapes_that_contradict_the_graph_name_tensor_and_shapes() {
    let mut t = tiny_tensors();
    t[0].shape = vec![2, 3, 1];
    let e = error(&file(&t, Some(tiny_meta().to_string())));
    assert!(
        e.contains("tensor `conv.weight`: has shape [2, 3, 1], expected [2, 3, 1, 1]"),
        "{e}"
    );
    let mut t = tiny_tensors();
    t.remove(1);
    let e = error(&file(&t, Some(tiny_meta().to_string())));
    assert!(e.contains("tensor `conv.bias`: missing"), "{e}");
    // A torchvision state dict whose classifier has no classes.
    let spec = torchvision::state_dict_spec("resnet18", 0).unwrap();
    let e = Model::from_weights(detweights::generate(&spec, 1), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("node `fc`: out_features 0 is out of range"),
        "{e}"
    );
}

/// A metadata edit and the phrases its error must contain.
type Case = (Box<dyn Fn(&mut Value)>, Vec<&'static str>);

#[test]
fn bad_graphs_get_clear_errors() {
    let set = |ptr: String, v: Value| {
        move |m: &mut Value| *m.pointer_mut(&ptr).unwrap_or_else(|| panic!("{ptr}")) = v.clone()
    };
    let cases: Vec<Case> = vec![
        // A cycle (relu reads fc) and a self-reference: both forward references.
        (
            Box::new(set(node(2) + "/inputs", json!([5]))),
            vec!["node `relu` reads node 5, which is not earlier"],
        ),
        (
            Box::new(set(node(1) + "/inputs", json!([1]))),
            vec!["node `conv` reads node 1"],
        ),
        (
            Box::new(set(node(3) + "/inputs", json!([99]))),
            vec!["node `pool` reads node 99"],
        ),
        (
            Box::new(set(node(2) + "/op", json!({"op": "upsample"}))),
            vec!["unknown variant `upsample`"],
        ),
        (
            Box::new(set(node(1) + "/op/out_channels", json!(-2))),
            vec!["invalid value: integer `-2`"],
        ),
        (
            Box::new(set("/input_size".into(), json!([1_000_000_000_000u64, 8]))),
            vec!["input_size 1000000000000x8 is out of range"],
        ),
        (
            Box::new(set("/input_size".into(), json!([1e12, 8]))),
            vec!["invalid type: floating point"],
        ),
        (
            Box::new(set(node(0) + "/op/channels", json!(1u64 << 40))),
            vec!["node `input`: channels 1099511627776 is out of range"],
        ),
        (
            Box::new(set(node(1) + "/op/out_channels", json!(u64::MAX))),
            vec!["node `conv`: out_channels 18446744073709551615 is out of range"],
        ),
        (
            Box::new(set(node(1) + "/op/kernel", json!([0, 1]))),
            vec!["node `conv`: kernel 0 is out of range"],
        ),
        (
            Box::new(set(node(1) + "/op/stride", json!([1, 0]))),
            vec!["node `conv`: stride 0 is out of range"],
        ),
        (
            Box::new(set(node(1) + "/op/groups", json!(0))),
            vec!["node `conv`: groups 0 is out of range"],
        ),
        (
            Box::new(set(node(1) + "/op/groups", json!(2))),
            vec!["node `conv`: groups 2 do not divide the channels"],
        ),
        (
            Box::new(set(node(1) + "/op/padding", json!([1 << 30, 0]))),
            vec!["node `conv`: padding 1073741824 is out of range"],
        ),
        // Each side in range, but the activation would be 2 x 2^20 x 2^20 floats.
        (
            Box::new(set(node(3) + "/op/output", json!([1 << 20, 1 << 20]))),
            vec!["node `pool`: output shape [2, 1048576, 1048576] is empty or larger"],
        ),
        (
            Box::new(set(node(5) + "/op/out_features", json!(0))),
            vec!["node `fc`: out_features 0 is out of range"],
        ),
        (
            Box::new(set(node(5) + "/op/in_features", json!(7))),
            vec!["node `fc`: expects 7 features, gets 2x1x1"],
        ),
        (
            Box::new(set("/graph/nodes".into(), json!([]))),
            vec!["graph must start with an input node"],
        ),
        (
            Box::new(set(node(2) + "/name", json!("conv"))),
            vec!["duplicate node name `conv`"],
        ),
        (
            Box::new(set("/graph/aliases".into(), json!({"x": 77}))),
            vec!["alias `x` points past the graph"],
        ),
        (
            Box::new(set("/version".into(), json!(2))),
            vec!["schema version 2 is not supported"],
        ),
        (
            Box::new(set("/version".into(), json!(u64::MAX))),
            vec!["schema version 18446744073709551615 is not supported"],
        ),
        (
            Box::new(set("/version".into(), json!("1"))),
            vec!["has no integer `version` field"],
        ),
        (
            Box::new(set("/std".into(), json!([0.25, 0.0, 0.25]))),
            vec!["std non-zero"],
        ),
        (
            Box::new(set("/classes".into(), json!(["a"]))),
            vec!["1 class names for 2 outputs"],
        ),
        (
            Box::new(set("/default_layer".into(), json!("nope"))),
            vec!["default_layer `nope` is not a layer"],
        ),
    ];
    let n = cases.len();
    for (f, expect) in cases {
        meta_error(f, &expect);
    }
    eprintln!("tried {n} bad graphs");
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    // 100k nested arrays, in the model metadata and in the safetensors header itself. Run
    // on a small stack: serde_json's recursion limit (128) must stop it, not the stack size.
    let deep = "[".repeat(100_000) + &"]".repeat(100_000);
    let handle = std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            let in_meta = error(&file(&tiny_tensors(), Some(deep.clone())));
            let header = format!("{{\"__metadata__\":{deep}}}");
            let mut b = (header.len() as u64).to_le_bytes().to_vec();
            b.extend_from_slice(header.as_bytes());
            let in_header = error(&b);
            (in_meta, in_header)
        })
        .unwrap();
    let (in_meta, in_header) = handle.join().expect("no stack overflow or panic");
    assert!(
        in_meta.contains("not valid JSON: recursion limit exceeded"),
        "{in_meta}"
    );
    assert!(
        in_header.contains("not a valid safetensors file"),
        "{in_header}"
    );
}

#[test]
fn target_counts_check_the_class_count() {
    let e = TargetSpec::Classes(vec![0])
        .count(0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("the model has no classes"), "{e}");
    let e = TargetSpec::Classes(vec![usize::MAX])
        .count(3)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("out of range: the model has 3 classes (0..2)"),
        "{e}"
    );
}

#[test]
fn the_cli_names_the_bad_model_file_and_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cycle = tiny_meta();
    *cycle.pointer_mut("/graph/nodes/2/inputs").unwrap() = json!([4]);
    let good = tiny();
    for (name, bytes, expect) in [
        (
            "truncated.safetensors",
            good[..good.len() / 2].to_vec(),
            "not a valid safetensors file",
        ),
        (
            "cycle.safetensors",
            file(&tiny_tensors(), Some(cycle.to_string())),
            "not earlier in the graph",
        ),
    ] {
        let path = tmp.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let o = Command::new(env!("CARGO_BIN_EXE_gradcam"))
            .arg("explain")
            .arg(tmp.path())
            .arg("--model")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{stderr}");
        let line = format!("error: {}: ", path.display());
        let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with(&line)).collect();
        assert!(errors.len() == 1 && errors[0].contains(expect), "{stderr}");
    }
}
