//! Model loading, architecture inference, layer names, the graph IR and plan fusion.

mod common;

use gradcam_wgpu::engine::Plan;
use gradcam_wgpu::engine::{Fold, Method, Score};
use gradcam_wgpu::graph::op::Reference;
use gradcam_wgpu::graph::ops::batch_norm::Affine;
use gradcam_wgpu::graph::ops::concat::ConcatStep;
use gradcam_wgpu::graph::ops::mul::MulStep;
use gradcam_wgpu::graph::ops::relu::ReluStep;
use gradcam_wgpu::graph::{
    AdaptiveAvgPool2d, Add, Concat, Conv2d, Flatten, Input, Linear, Mul, Relu, Relu6, Sigmoid, Silu,
};
use gradcam_wgpu::model::{Graph, Model, Tensor, Weights, detweights, torchvision};
use gradcam_wgpu::{Engine, EngineConfig, Error, GpuContext, TargetSpec};

fn stub(spec: &[(String, Vec<usize>)]) -> Weights {
    let mut w = Weights::default();
    for (n, s) in spec {
        w.tensors.insert(
            n.clone(),
            Tensor {
                shape: s.clone(),
                data: Vec::new(),
            },
        );
    }
    w
}

#[test]
fn every_arch_is_inferred_and_builds() {
    for &arch in torchvision::ARCHS {
        let spec = torchvision::state_dict_spec(arch, 17).unwrap();
        let w = stub(&spec);
        assert_eq!(torchvision::infer_arch(&w), Some(arch));
        let g = torchvision::build(arch, &w).unwrap();
        assert_eq!(g.num_classes([224, 224]).unwrap(), 17, "{arch}");
        // The graph is plain data: it survives a JSON round trip.
        let json = serde_json::to_string(&g).unwrap();
        let back: Graph = serde_json::from_str(&json).unwrap();
        assert_eq!(back, g);
    }
}

#[test]
fn torchvision_layer_names() {
    let w = stub(&torchvision::state_dict_spec("vgg16", 1000).unwrap());
    let m = Model::from_weights(w, None).unwrap();
    assert_eq!(m.arch, "vgg16");
    assert_eq!(m.default_layer, "features.29");
    for name in [
        "features.28",
        "features.30",
        "avgpool",
        "classifier.0",
        "classifier.6",
        "features",
    ] {
        assert!(m.graph.find(name).is_some(), "{name}");
    }
    let w = stub(&torchvision::state_dict_spec("resnet50", 1000).unwrap());
    let m = Model::from_weights(w, None).unwrap();
    assert_eq!(m.default_layer, "layer4");
    for name in [
        "layer4",
        "layer4.1",
        "layer4.2.conv3",
        "layer4.2.bn3",
        "layer3.0.downsample",
        "layer1.0.relu",
        "maxpool",
        "avgpool",
        "fc",
    ] {
        assert!(m.graph.find(name).is_some(), "{name}");
    }
    // A container means its last block's output.
    assert_eq!(m.graph.find("layer4"), m.graph.find("layer4.2"));
}

#[test]
fn errors_name_the_tensor_and_shape() {
    let spec = torchvision::state_dict_spec("resnet18", 10).unwrap();
    let mut w = detweights::generate(&spec, 1);
    w.tensors.remove("layer2.1.bn2.running_var");
    let e = Model::from_weights(w, Some("resnet18"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layer2.1.bn2.running_var") && e.contains("[128]"),
        "{e}"
    );

    let mut w = detweights::generate(&spec, 1);
    w.tensors.get_mut("layer3.0.conv1.weight").unwrap().shape = vec![256, 128, 1, 1];
    let e = Model::from_weights(w, Some("resnet18"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("layer3.0.conv1.weight") && e.contains("[256, 128, 3, 3]"),
        "{e}"
    );

    let mut w = detweights::generate(&spec, 1);
    w.tensors.insert(
        "head.weight".into(),
        Tensor {
            shape: vec![2],
            data: vec![0.0; 2],
        },
    );
    let e = Model::from_weights(w, Some("resnet18"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("head.weight"), "{e}");

    let e = Model::from_weights(Weights::default(), Some("resnet19"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("resnet19") && e.contains("resnet50"), "{e}");
}

#[test]
fn f16_and_bf16_files_load() {
    use safetensors::{Dtype, tensor::TensorView};
    let values = [0.5f32, -1.25, 3.0, 0.0];
    let f16: Vec<u8> = values
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let bf16: Vec<u8> = values
        .iter()
        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
        .collect();
    let i64s: Vec<u8> = 5i64.to_le_bytes().to_vec();
    let bytes = safetensors::serialize(
        [
            ("a", TensorView::new(Dtype::F16, vec![2, 2], &f16).unwrap()),
            ("b", TensorView::new(Dtype::BF16, vec![4], &bf16).unwrap()),
            (
                "bn.num_batches_tracked",
                TensorView::new(Dtype::I64, vec![], &i64s).unwrap(),
            ),
        ],
        None,
    )
    .unwrap();
    let w = Weights::from_bytes(&bytes).unwrap();
    assert_eq!(w.tensors["a"].data, values);
    assert_eq!(w.tensors["a"].shape, vec![2, 2]);
    assert_eq!(w.tensors["b"].data, values);
    assert!(!w.tensors.contains_key("bn.num_batches_tracked"));

    let bad = safetensors::serialize(
        [(
            "w",
            TensorView::new(Dtype::I32, vec![1], &[0u8; 4]).unwrap(),
        )],
        None,
    )
    .unwrap();
    let e = Weights::from_bytes(&bad).unwrap_err().to_string();
    assert!(e.contains("`w`") && e.contains("I32"), "{e}");
    assert!(Weights::from_bytes(b"short").is_err());
}

fn ctx() -> GpuContext {
    GpuContext::new().expect("a wgpu adapter (install mesa-vulkan-drivers for lavapipe)")
}

#[test]
fn fusion_keeps_the_target_output() {
    let ctx = ctx();
    let spec = torchvision::state_dict_spec("resnet18", 10).unwrap();
    let m = Model::from_weights(detweights::generate(&spec, 3), None).unwrap();
    let node = |n: &str| m.graph.find(n).unwrap();
    // Default: conv+bn+relu are one step.
    let plan = Plan::new(
        &ctx,
        &m.graph,
        &m.weights,
        [64, 64],
        &[node("layer4")],
        false,
    )
    .unwrap();
    assert!(!plan.steps.iter().any(|s| s.lowered::<Affine>().is_some()));
    assert!(
        plan.steps
            .iter()
            .any(|s| s.name == "layer1.0.relu" && s.relu)
    );
    // Targeting a conv that has a BatchNorm after it keeps the BN unfolded.
    let plan = Plan::new(
        &ctx,
        &m.graph,
        &m.weights,
        [64, 64],
        &[node("layer4.1.conv2")],
        false,
    )
    .unwrap();
    assert_eq!(plan.steps[plan.targets[0]].name, "layer4.1.conv2");
    assert!(
        plan.steps
            .iter()
            .any(|s| s.name == "layer4.1.bn2" && s.lowered::<Affine>().is_some())
    );
    // The backward region starts at the target.
    assert!(plan.in_region[plan.targets[0]]);
    assert!(!plan.in_region[plan.targets[0] - 1]);
}

#[test]
fn any_layer_explains_and_errors_are_values() {
    let ctx = ctx();
    let spec = torchvision::state_dict_spec("vgg11_bn", 5).unwrap();
    let m = Model::from_weights(detweights::generate(&spec, 9), None).unwrap();
    let img = image::RgbImage::from_fn(40, 32, |x, y| image::Rgb([x as u8 * 6, y as u8 * 7, 128]));
    for layer in [
        "features.4",
        "features.5",
        "features.6",
        "features.27",
        "avgpool",
        "classifier.0",
    ] {
        let cfg = EngineConfig {
            layers: vec![layer.into()],
            size: [32, 40],
            batch: 2,
            targets: TargetSpec::TopK(2),
            read_maps: true,
            ..Default::default()
        };
        let mut e = Engine::new(ctx.clone(), &m, cfg).unwrap();
        let r = e.explain(&[img.clone(), img.clone()]).unwrap();
        assert_eq!(r.len(), 2);
        for t in &r[0].targets {
            let map = t.map.as_ref().unwrap();
            assert_eq!(map.len(), 32 * 40);
            assert!(map.iter().all(|v| (0.0..=1.0).contains(v)), "{layer}");
        }
        // Both images are the same, so their explanations must be too.
        assert_eq!(r[0].targets[0].map, r[1].targets[0].map, "{layer}");
    }
    let bad = EngineConfig {
        layers: vec!["features.99".into()],
        ..Default::default()
    };
    assert!(matches!(
        Engine::new(ctx.clone(), &m, bad),
        Err(Error::UnknownLayer { .. })
    ));
    let mut e = Engine::new(
        ctx,
        &m,
        EngineConfig {
            size: [32, 40],
            ..Default::default()
        },
    )
    .unwrap();
    // Other sizes are resized on the device; an image without pixels is an error value.
    assert!(e.explain(&[image::RgbImage::new(8, 8)]).is_ok());
    assert!(e.explain(&[image::RgbImage::new(0, 8)]).is_err());
}

#[test]
fn results_can_stay_on_the_device() {
    let ctx = ctx();
    let spec = torchvision::state_dict_spec("resnet18", 10).unwrap();
    let m = Model::from_weights(detweights::generate(&spec, 5), None).unwrap();
    let imgs: Vec<_> = (0..3)
        .map(|k| {
            image::RgbImage::from_fn(40, 32, |x, y| {
                image::Rgb([(x * 5 + k) as u8, (y * 7) as u8, 40 * k as u8])
            })
        })
        .collect();
    for method in [Method::GradCam, Method::LayerCam, Method::GuidedGradCam] {
        let cfg = EngineConfig {
            method,
            size: [32, 40],
            targets: TargetSpec::TopK(2),
            read_maps: true,
            ..Default::default()
        };
        let mut e = Engine::new(ctx.clone(), &m, cfg).unwrap();
        let host = e.explain(&imgs).unwrap();
        let dev = e.explain_on_device(&imgs, None).unwrap();
        let maps = gradcam_wgpu::gpu::buffer::read_f32(&ctx, dev.maps(), 3 * 2 * 32 * 40).unwrap();
        for (i, r) in host.iter().enumerate() {
            for (t, tr) in r.targets.iter().enumerate() {
                let row = i * 2 + t;
                assert_eq!(
                    tr.map.as_deref().unwrap(),
                    &maps[row * 32 * 40..(row + 1) * 32 * 40],
                    "{method:?}"
                );
            }
        }
    }
}

#[test]
fn new_ops_have_the_exporters_spellings_and_checked_shapes() {
    use gradcam_wgpu::model::{Node, Op};
    for (op, json) in [
        (Op::Concat(Concat::default()), r#"{"op":"concat"}"#),
        (Op::Sigmoid(Sigmoid), r#"{"op":"sigmoid"}"#),
        (Op::Relu6(Relu6), r#"{"op":"relu6"}"#),
        (Op::Silu(Silu), r#"{"op":"silu"}"#),
        (Op::Mul(Mul), r#"{"op":"mul"}"#),
    ] {
        assert_eq!(serde_json::to_string(&op).unwrap(), json);
        assert_eq!(serde_json::from_str::<Op>(json).unwrap(), op);
    }
    let node = |name: &str, op: Op, inputs: Vec<usize>| Node {
        name: name.into(),
        op,
        inputs,
    };
    let graph = |nodes: Vec<Node>| Graph {
        nodes,
        aliases: Default::default(),
    };
    let conv = |out: usize, k: usize| {
        Op::Conv2d(Conv2d {
            weight: "w".into(),
            bias: None,
            in_channels: 3,
            out_channels: out,
            kernel: [k, k],
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
            padding_end: None,
        })
    };
    let input = || node("x", Op::Input(Input { channels: 3 }), vec![]);
    // Arity.
    let g = graph(vec![
        input(),
        node("cat", Op::Concat(Concat::default()), vec![0]),
    ]);
    let e = g.validate().unwrap_err().to_string();
    assert!(e.contains("`cat`") && e.contains("at least 2"), "{e}");
    let g = graph(vec![input(), node("m", Op::Mul(Mul), vec![0, 0, 0])]);
    let e = g.validate().unwrap_err().to_string();
    assert!(e.contains("`m`") && e.contains("expected 2"), "{e}");
    // Shapes: concat sums channels of equal sizes, mul takes equal shapes or [C, 1, 1].
    let pool = Op::AdaptiveAvgPool2d(AdaptiveAvgPool2d { output: [1, 1] });
    let g = graph(vec![
        input(),
        node("a", conv(5, 1), vec![0]),
        node("cat", Op::Concat(Concat::default()), vec![0, 1, 0]),
        node("gate", pool.clone(), vec![1]),
        node("se", Op::Mul(Mul), vec![1, 3]),
        node("sq", Op::Mul(Mul), vec![1, 1]),
    ]);
    g.validate().unwrap();
    let s = g.shapes([9, 7]).unwrap();
    assert_eq!(s[2], [11, 9, 7]);
    assert_eq!(s[4], [5, 9, 7]);
    assert_eq!(s[5], [5, 9, 7]);
    let g = graph(vec![
        input(),
        node("a", conv(5, 3), vec![0]),
        node("cat", Op::Concat(Concat::default()), vec![0, 1]),
    ]);
    let e = g.shapes([9, 7]).unwrap_err().to_string();
    assert!(
        e.contains("`cat`") && e.contains("9x7") && e.contains("7x5"),
        "{e}"
    );
    // A [3, 1, 1] factor for a 5-channel tensor, and a [5, 1, 1] tensor scaled by a map.
    let g = graph(vec![
        input(),
        node("a", conv(5, 1), vec![0]),
        node("gate", pool.clone(), vec![0]),
        node("se", Op::Mul(Mul), vec![1, 2]),
    ]);
    let e = g.shapes([9, 7]).unwrap_err().to_string();
    assert!(e.contains("`se`") && e.contains("[5, 1, 1]"), "{e}");
    let g = graph(vec![
        input(),
        node("a", conv(5, 1), vec![0]),
        node("gate", pool, vec![1]),
        node("se", Op::Mul(Mul), vec![2, 1]),
    ]);
    assert!(g.shapes([9, 7]).is_err());
}

/// Random weights for the test nets: uniform in +-sqrt(3 / fan_in).
struct Init {
    rng: common::Rng,
    weights: Weights,
}

impl Init {
    fn new(seed: u64) -> Self {
        Self {
            rng: common::Rng::new(seed),
            weights: Weights::default(),
        }
    }

    fn tensor(&mut self, name: &str, shape: Vec<usize>, fan_in: usize) -> String {
        let len = shape.iter().product();
        let scale = (3.0 / fan_in as f64).sqrt();
        let data = (0..len)
            .map(|_| ((2.0 * self.rng.unit() - 1.0) * scale) as f32)
            .collect();
        self.weights
            .tensors
            .insert(name.to_string(), Tensor { shape, data });
        name.to_string()
    }

    /// `name`'s conv with a bias: `cin` to `cout`, kernel `k`, stride `s`, padding `p`,
    /// dilation `d`.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        s: usize,
        p: usize,
        d: usize,
        groups: usize,
    ) -> gradcam_wgpu::model::Op {
        let fan_in = cin / groups * k * k;
        gradcam_wgpu::model::Op::Conv2d(Conv2d {
            weight: self.tensor(
                &format!("{name}.weight"),
                vec![cout, cin / groups, k, k],
                fan_in,
            ),
            bias: Some(self.tensor(&format!("{name}.bias"), vec![cout], fan_in)),
            in_channels: cin,
            out_channels: cout,
            kernel: [k, k],
            stride: [s, s],
            padding: [p, p],
            dilation: [d, d],
            groups,
            padding_end: None,
        })
    }
}

/// A small net of the ops exported models use: a stem, a depthwise conv with ReLU6,
/// squeeze-excitation (pool, 1x1 conv, SiLU, 1x1 conv, sigmoid, channel product), a residual
/// add, a three-way concat, a ReLU after it, a strided dilated depthwise conv and a linear
/// head, with random weights.
fn mobile_net() -> (Graph, Weights) {
    use gradcam_wgpu::model::{Node, Op};
    let mut init = Init::new(21);
    let mut nodes: Vec<Node> = Vec::new();
    let mut push = |name: &str, op: Op, inputs: Vec<usize>| {
        nodes.push(Node {
            name: name.into(),
            op,
            inputs,
        });
        nodes.len() - 1
    };
    let pool = || Op::AdaptiveAvgPool2d(AdaptiveAvgPool2d { output: [1, 1] });
    let x = push("input", Op::Input(Input { channels: 3 }), vec![]);
    let stem = push(
        "stem.conv",
        init.conv("stem.conv", 3, 8, 3, 2, 1, 1, 1),
        vec![x],
    );
    let stem = push("stem.relu", Op::Relu(Relu), vec![stem]);
    let dw = push(
        "dw.conv",
        init.conv("dw.conv", 8, 8, 3, 1, 1, 1, 8),
        vec![stem],
    );
    let dw = push("dw.act", Op::Relu6(Relu6), vec![dw]);
    let se = push("se.pool", pool(), vec![dw]);
    let se = push("se.fc1", init.conv("se.fc1", 8, 4, 1, 1, 0, 1, 1), vec![se]);
    let se = push("se.act", Op::Silu(Silu), vec![se]);
    let se = push("se.fc2", init.conv("se.fc2", 4, 8, 1, 1, 0, 1, 1), vec![se]);
    let se = push("se.gate", Op::Sigmoid(Sigmoid), vec![se]);
    let mul = push("se.mul", Op::Mul(Mul), vec![dw, se]);
    let proj = push("proj", init.conv("proj", 8, 8, 1, 1, 0, 1, 1), vec![mul]);
    let add = push("add", Op::Add(Add), vec![proj, stem]);
    let cat = push("concat", Op::Concat(Concat::default()), vec![add, dw, mul]);
    let relu = push("head.relu", Op::Relu(Relu), vec![cat]);
    let hd = push(
        "head.dw",
        init.conv("head.dw", 24, 24, 3, 2, 2, 2, 24),
        vec![relu],
    );
    let p = push("pool", pool(), vec![hd]);
    let f = push("flatten", Op::Flatten(Flatten), vec![p]);
    let fc = Op::Linear(Linear {
        weight: init.tensor("fc.weight", vec![5, 24], 24),
        bias: Some(init.tensor("fc.bias", vec![5], 24)),
        in_features: 24,
        out_features: 5,
        axis: 0,
    });
    push("fc", fc, vec![f]);
    let g = Graph {
        nodes,
        aliases: Default::default(),
    };
    g.validate().unwrap();
    (g, init.weights)
}

/// Gradients of every node for `n * rep` rows (row r belongs to image r / rep) from the
/// output gradient `seed`, composed from the ops' f64 references.
fn cpu_backward(
    g: &Graph,
    w: &Weights,
    acts: &[Vec<f64>],
    seed: Vec<f64>,
    n: usize,
    rep: usize,
    size: [usize; 2],
) -> Vec<Vec<f64>> {
    use gradcam_wgpu::reference as r;
    let shapes = g.shapes(size).unwrap();
    let rows = n * rep;
    let mut grads: Vec<Vec<f64>> = shapes
        .iter()
        .map(|s| vec![0.0; rows * s.iter().product::<usize>()])
        .collect();
    *grads.last_mut().unwrap() = seed;
    for (i, node) in g.nodes.iter().enumerate().rev().take(g.nodes.len() - 1) {
        let gy = grads[i].clone();
        let inputs: Vec<&[f64]> = node.inputs.iter().map(|&j| acts[j].as_slice()).collect();
        let in_shapes: Vec<_> = node.inputs.iter().map(|&j| shapes[j]).collect();
        let cx = Reference {
            weights: w,
            n,
            rep,
            inputs: &inputs,
            in_shapes: &in_shapes,
            output: &acts[i],
            shape: shapes[i],
        };
        for (k, &j) in node.inputs.iter().enumerate() {
            let dx = node.op.node().reference_backward(&cx, k, &gy).unwrap();
            grads[j] = r::add(&grads[j], &dx);
        }
    }
    grads
}

/// The engine on a net of the new ops, for layers that are the concat, the
/// squeeze-excitation product, a ReLU6 read by three consumers, a ReLU kept apart from the
/// concat before it, and a depthwise conv.
#[test]
fn mobile_ops_explain_like_the_f64_composition() {
    let ctx = ctx();
    let (graph, weights) = mobile_net();
    let size = [21, 19];
    // The ReLU after the concat is a step of its own; the stem's is fused into its conv.
    let plan = Plan::new(
        &ctx,
        &graph,
        &weights,
        size,
        &[graph.find("concat").unwrap()],
        false,
    )
    .unwrap();
    assert!(
        plan.steps
            .iter()
            .any(|s| s.name == "head.relu" && s.lowered::<ReluStep>().is_some())
    );
    assert!(plan.steps.iter().any(|s| s.name == "stem.relu" && s.relu));
    assert!(
        plan.steps
            .iter()
            .any(|s| s.name == "concat" && s.lowered::<ConcatStep>().is_some())
    );
    assert!(
        plan.steps
            .iter()
            .any(|s| s.name == "se.mul" && s.lowered::<MulStep>().is_some_and(|m| m.broadcast))
    );
    explains_like_the_f64_composition(
        &ctx,
        &graph,
        &weights,
        size,
        &["concat", "se.mul", "dw.act", "head.relu", "head.dw"],
    );
}

/// A residual net whose tensors reach the convs through their twins (the preprocessing,
/// a max pool, convs, residual sums and ReLU6s write them; a grouped conv reads one but
/// writes none; a depthwise conv reads one), with channels not a multiple of 4 and planes
/// of both parities.
fn residual_net() -> (Graph, Weights) {
    use gradcam_wgpu::graph::MaxPool2d;
    use gradcam_wgpu::model::{Node, Op};
    let mut init = Init::new(22);
    let mut nodes: Vec<Node> = Vec::new();
    let mut push = |name: &str, op: Op, inputs: Vec<usize>| {
        nodes.push(Node {
            name: name.into(),
            op,
            inputs,
        });
        nodes.len() - 1
    };
    let x = push("input", Op::Input(Input { channels: 3 }), vec![]);
    let stem = push("stem", init.conv("stem", 3, 12, 3, 2, 1, 1, 1), vec![x]);
    let stem = push("stem.relu", Op::Relu(Relu), vec![stem]);
    let window = MaxPool2d {
        kernel: [3, 3],
        stride: [1, 1],
        padding: [1, 1],
        dilation: [1, 1],
        ceil_mode: false,
    };
    let pool = push("pool", Op::MaxPool2d(window), vec![stem]);
    let a = push("a", init.conv("a", 12, 6, 3, 1, 1, 1, 1), vec![pool]);
    let a = push("a.relu", Op::Relu(Relu), vec![a]);
    let b = push("b", init.conv("b", 6, 12, 1, 1, 0, 1, 1), vec![a]);
    let add = push("add1", Op::Add(Add), vec![b, pool]);
    let add = push("add1.relu", Op::Relu(Relu), vec![add]);
    let c = push("c", init.conv("c", 12, 8, 3, 2, 0, 1, 1), vec![add]);
    let c = push("c.relu", Op::Relu(Relu), vec![c]);
    let d = push("d", init.conv("d", 8, 8, 3, 1, 2, 2, 2), vec![c]);
    let e = push("e", init.conv("e", 8, 8, 1, 1, 0, 1, 1), vec![d]);
    let add2 = push("add2", Op::Add(Add), vec![e, c]);
    let add2 = push("add2.relu", Op::Relu(Relu), vec![add2]);
    // An inverted residual's middle (MobileNet, EfficientNet): ReLU6s write the twins, the
    // depthwise conv reads one.
    let ex = push("ex", init.conv("ex", 8, 10, 1, 1, 0, 1, 1), vec![add2]);
    let ex = push("ex.act", Op::Relu6(Relu6), vec![ex]);
    let dw = push("dw", init.conv("dw", 10, 10, 3, 2, 1, 1, 10), vec![ex]);
    let dw = push("dw.act", Op::Relu6(Relu6), vec![dw]);
    let f = push("f", init.conv("f", 10, 10, 1, 1, 0, 1, 1), vec![dw]);
    let f = push("f.relu", Op::Relu(Relu), vec![f]);
    let gap = Op::AdaptiveAvgPool2d(AdaptiveAvgPool2d { output: [1, 1] });
    let gap = push("gap", gap, vec![f]);
    let flat = push("flatten", Op::Flatten(Flatten), vec![gap]);
    let fc = Op::Linear(Linear {
        weight: init.tensor("fc.weight", vec![5, 10], 10),
        bias: Some(init.tensor("fc.bias", vec![5], 10)),
        in_features: 10,
        out_features: 5,
        axis: 0,
    });
    push("fc", fc, vec![flat]);
    let g = Graph {
        nodes,
        aliases: Default::default(),
    };
    g.validate().unwrap();
    (g, init.weights)
}

/// Twins carry the activations between the convs of a residual net exactly: 23x16 makes
/// the stem's plane 12x8 (the 4-pixel sum kernel) and the stride-2 conv's 5x3 (the
/// per-texel one).
#[test]
fn twins_explain_like_the_f64_composition() {
    let ctx = ctx();
    let (graph, weights) = residual_net();
    explains_like_the_f64_composition(
        &ctx,
        &graph,
        &weights,
        [23, 16],
        &[
            "f.relu",
            "add1.relu",
            "a.relu",
            "pool",
            // Its gradient crosses the max pool (the argmax the twin-reading kernel saved).
            "stem.relu",
            "add2.relu",
            "dw.act",
            "dw",
        ],
    );
}

/// The engine on `graph`: logits against the composed f64 forward, and Grad-CAM maps (alpha
/// from the gradients at the layer, two targets per image so gradient rows map to images by
/// r / 2) against the composed f64 backward, at each of `layers`.
fn explains_like_the_f64_composition(
    ctx: &GpuContext,
    graph: &Graph,
    weights: &Weights,
    size: [usize; 2],
    layers: &[&str],
) {
    let layers: Vec<(&str, Option<Fold>)> = layers.iter().map(|&l| (l, None)).collect();
    explains_folded_like_the_f64_composition(ctx, graph, weights, size, &layers);
}

/// [`explains_like_the_f64_composition`] with folded layers: the reference gathers the f64
/// activations and gradients through the same index map.
fn explains_folded_like_the_f64_composition(
    ctx: &GpuContext,
    graph: &Graph,
    weights: &Weights,
    size: [usize; 2],
    layers: &[(&str, Option<Fold>)],
) {
    use gradcam_wgpu::engine::{IMAGENET_MEAN, IMAGENET_STD};
    use gradcam_wgpu::reference as r;
    let (n, k) = (3, 2);
    let model = Model {
        arch: "mobile-test".into(),
        graph: graph.clone(),
        weights: weights.clone(),
        default_layer: layers[0].0.into(),
        input_size: size,
        mean: IMAGENET_MEAN,
        std: IMAGENET_STD,
        classes: Vec::new(),
        output: gradcam_wgpu::model::Output::Softmax,
        explains: gradcam_wgpu::model::LOGITS.into(),
        output_grid: None,
        tokens: Default::default(),
    };
    let images: Vec<image::RgbImage> = (0..n as u32)
        .map(|i| {
            image::RgbImage::from_fn(size[1] as u32, size[0] as u32, |x, y| {
                image::Rgb([
                    (x * 13 + y * 3 + 40 * i) as u8,
                    (y * 11 + x * x) as u8,
                    (90 + 50 * i + x * y) as u8,
                ])
            })
        })
        .collect();
    let pixels: Vec<u8> = images
        .iter()
        .flat_map(|im| im.pixels().flat_map(|p| [p[0], p[1], p[2], 255]))
        .collect();
    let f64s = |v: [f32; 3]| v.map(|x| x as f64);
    let x = r::preprocess(&pixels, n, size, f64s(IMAGENET_MEAN), f64s(IMAGENET_STD));
    let acts = common::cpu_forward(graph, weights, x, n, size);
    let logits = acts.last().unwrap();
    let classes = graph.num_classes(size).unwrap();
    let targets = r::topk(logits, n, classes, k);
    let seed = r::seed_scores(logits, &targets, n, classes, k, 0, k, Score::Logit);
    let grads = cpu_backward(graph, weights, &acts, seed, n, k, size);
    let shapes = graph.shapes(size).unwrap();

    let scale = logits.iter().fold(0f64, |m, v| m.max(v.abs()));
    let plane = size[0] * size[1];
    for (layer, fold) in layers {
        let layer = *layer;
        let cfg = EngineConfig {
            layers: vec![layer.into()],
            folds: vec![fold.clone()],
            size,
            batch: n,
            targets: TargetSpec::TopK(k),
            read_maps: true,
            ..Default::default()
        };
        let mut e = Engine::new(ctx.clone(), &model, cfg).unwrap();
        let res = e.explain(&images).unwrap();
        let node = graph.find(layer).unwrap();
        let want = match fold {
            None => {
                let [c, h, w] = shapes[node];
                r::gradcam(&acts[node], &grads[node], [n, c, h, w], k, size)
            }
            Some(f) => {
                let numel = shapes[node].iter().product();
                let a = r::layout::index_gather(&acts[node], numel, &f.index);
                let g = r::layout::index_gather(&grads[node], numel, &f.index);
                let [c, h, w] = f.shape;
                r::gradcam(&a, &g, [n, c, h, w], k, size)
            }
        };
        let mut worst_logit = 0f64;
        let mut worst_map = 0f64;
        for (i, ir) in res.iter().enumerate() {
            for (j, &l) in ir.logits.iter().enumerate() {
                worst_logit = worst_logit.max((l as f64 - logits[i * classes + j]).abs() / scale);
            }
            for (t, tr) in ir.targets.iter().enumerate() {
                assert_eq!(
                    tr.class,
                    targets[i * k + t],
                    "{layer}: image {i} target {t}"
                );
                let row = i * k + t;
                let got = tr.map.as_ref().unwrap();
                for (g, w) in got.iter().zip(&want[row * plane..(row + 1) * plane]) {
                    worst_map = worst_map.max((*g as f64 - w).abs());
                }
            }
        }
        eprintln!("{layer}: logits rel err {worst_logit:.2e}, map err {worst_map:.2e}");
        assert!(
            worst_logit <= 1e-4,
            "{layer}: logits off by {worst_logit:.2e} of max |logit|"
        );
        assert!(
            worst_map <= 1e-4,
            "{layer}: Grad-CAM map off by {worst_map:.2e}"
        );
        // Every map must carry information (min-max spans [0, 1]), or the comparison above
        // proves little.
        for m in want.chunks(plane) {
            let hi = m.iter().fold(0f64, |a, v| a.max(*v));
            assert!(hi > 0.99, "{layer}: a degenerate reference map");
        }
    }
}

/// The layout ops in a net: a stem read twice (by a transpose and by a concat along W, so
/// its gradient is summed from both), transpose, pad, slice, concat along W, a transpose to
/// NHWC, Keras's global average pool (reduce_mean 0..2), reshape and a linear head.
fn layout_net() -> (Graph, Weights) {
    use gradcam_wgpu::graph::{Pad, ReduceMean, Reshape, Slice, Transpose};
    use gradcam_wgpu::model::{Node, Op};
    let mut init = Init::new(33);
    let mut nodes: Vec<Node> = Vec::new();
    let mut push = |name: &str, op: Op, inputs: Vec<usize>| {
        nodes.push(Node {
            name: name.into(),
            op,
            inputs,
        });
        nodes.len() - 1
    };
    let transpose = |perm| Op::Transpose(Transpose { perm });
    let x = push("input", Op::Input(Input { channels: 3 }), vec![]);
    let stem = push(
        "stem.conv",
        init.conv("stem.conv", 3, 6, 3, 1, 1, 1, 1),
        vec![x],
    );
    let stem = push("stem.relu", Op::Relu(Relu), vec![stem]);
    let t = push("t", transpose([0, 2, 1]), vec![stem]);
    let pad = Pad {
        begin: [0, 1, 0],
        end: [0, 0, 2],
        value: 0.5,
    };
    let p = push("pad", Op::Pad(pad), vec![t]);
    let slice = Slice {
        axis: 2,
        start: 1,
        end: 14,
    };
    let s = push("slice", Op::Slice(slice), vec![p]);
    let t = push("t2", transpose([0, 2, 1]), vec![s]);
    let cat = push("cat", Op::Concat(Concat { axis: 2 }), vec![stem, t]);
    let hwc = push("nhwc", transpose([1, 2, 0]), vec![cat]);
    let gap = push(
        "gap",
        Op::ReduceMean(ReduceMean { start: 0, end: 2 }),
        vec![hwc],
    );
    let flat = push(
        "reshape",
        Op::Reshape(Reshape { shape: [6, 1, 1] }),
        vec![gap],
    );
    let fc = Op::Linear(Linear {
        weight: init.tensor("fc.weight", vec![5, 6], 6),
        bias: Some(init.tensor("fc.bias", vec![5], 6)),
        in_features: 6,
        out_features: 5,
        axis: 0,
    });
    push("fc", fc, vec![flat]);
    let g = Graph {
        nodes,
        aliases: Default::default(),
    };
    g.validate().unwrap();
    (g, init.weights)
}

#[test]
fn layout_ops_explain_like_the_f64_composition() {
    let ctx = ctx();
    let (graph, weights) = layout_net();
    let size = [13, 11];
    let shapes = graph.shapes(size).unwrap();
    assert_eq!(shapes[graph.find("pad").unwrap()], [6, 12, 15]);
    assert_eq!(shapes[graph.find("cat").unwrap()], [6, 13, 23]);
    assert_eq!(shapes[graph.find("gap").unwrap()], [1, 1, 6]);
    explains_like_the_f64_composition(&ctx, &graph, &weights, size, &["stem.relu", "cat"]);
}

#[test]
fn layout_ops_have_the_spec_spellings_and_checked_parameters() {
    use gradcam_wgpu::graph::{Pad, ReduceMean, Reshape, Slice, Transpose};
    use gradcam_wgpu::model::Op;
    let pad = Pad {
        begin: [0, 1, 2],
        end: [3, 0, 1],
        value: -0.5,
    };
    for (op, json) in [
        (
            Op::Concat(Concat { axis: 2 }),
            r#"{"op":"concat","axis":2}"#,
        ),
        (
            Op::Transpose(Transpose { perm: [1, 2, 0] }),
            r#"{"op":"transpose","perm":[1,2,0]}"#,
        ),
        (
            Op::Reshape(Reshape { shape: [4, 3, 1] }),
            r#"{"op":"reshape","shape":[4,3,1]}"#,
        ),
        (
            Op::Slice(Slice {
                axis: 1,
                start: 2,
                end: 5,
            }),
            r#"{"op":"slice","axis":1,"start":2,"end":5}"#,
        ),
        (
            Op::Pad(pad),
            r#"{"op":"pad","begin":[0,1,2],"end":[3,0,1],"value":-0.5}"#,
        ),
        (
            Op::ReduceMean(ReduceMean { start: 1, end: 3 }),
            r#"{"op":"reduce_mean","start":1,"end":3}"#,
        ),
    ] {
        assert_eq!(serde_json::to_string(&op).unwrap(), json);
        assert_eq!(serde_json::from_str::<Op>(json).unwrap(), op);
    }
    // Bad parameters and shapes are errors naming the parameter, never panics.
    let bad = |op: Op, input: [usize; 3], needle: &str| {
        let node = op.node();
        let e = node
            .check()
            .and_then(|_| node.shape(&[input]))
            .expect_err(needle);
        assert!(e.contains(needle), "{e}");
    };
    bad(
        Op::Transpose(Transpose { perm: [0, 0, 1] }),
        [2, 3, 4],
        "perm",
    );
    bad(
        Op::Transpose(Transpose { perm: [0, 1, 3] }),
        [2, 3, 4],
        "perm",
    );
    bad(
        Op::Reshape(Reshape { shape: [5, 5, 1] }),
        [2, 3, 4],
        "24 elements",
    );
    bad(
        Op::Reshape(Reshape { shape: [0, 5, 1] }),
        [2, 3, 4],
        "shape",
    );
    let big = 1 << 24;
    let r = Reshape {
        shape: [big, big, big],
    };
    bad(Op::Reshape(r), [2, 3, 4], "elements");
    let slice = |axis, start, end| Op::Slice(Slice { axis, start, end });
    bad(slice(3, 0, 1), [2, 3, 4], "axis");
    bad(slice(1, 2, 2), [2, 3, 4], "start");
    bad(slice(2, 1, 5), [2, 3, 4], "end 5");
    bad(slice(0, 0, usize::MAX), [2, 3, 4], "end");
    let pad = |begin, end| {
        Op::Pad(Pad {
            begin,
            end,
            value: 0.0,
        })
    };
    bad(pad([0, usize::MAX, 0], [0; 3]), [2, 3, 4], "begin");
    bad(pad([0; 3], [0, 0, 1 << 30]), [2, 3, 4], "end");
    let mean = |start, end| Op::ReduceMean(ReduceMean { start, end });
    bad(mean(1, 1), [2, 3, 4], "dims");
    bad(mean(0, 4), [2, 3, 4], "dims");
    bad(Op::Concat(Concat { axis: 3 }), [2, 3, 4], "axis");
    let e = Op::Concat(Concat { axis: 1 })
        .node()
        .shape(&[[2, 3, 4], [2, 5, 6]])
        .unwrap_err();
    assert!(
        e.contains("2x4") && e.contains("2x6") && e.contains("axis 1"),
        "{e}"
    );
    assert_eq!(
        Op::Concat(Concat { axis: 1 })
            .node()
            .shape(&[[2, 3, 4], [2, 5, 4], [2, 1, 4]]),
        Ok([2, 9, 4])
    );
}

/// `nhwc` of the layout net (the concat transposed to `[H, W, C]`) read back as `[C, H, W]`.
fn nhwc_to_nchw([c, h, w]: [usize; 3]) -> Fold {
    let index = (0..c)
        .flat_map(|ch| (0..h * w).map(move |p| (p * c + ch) as u32))
        .collect();
    Fold {
        shape: [c, h, w],
        index,
    }
}

fn identity(shape: [usize; 3]) -> Fold {
    Fold {
        shape,
        index: (0..shape.iter().product::<usize>() as u32).collect(),
    }
}

/// Maps of `layer` (folded by `fold`) for the layout net's images.
fn folded_maps(
    ctx: &GpuContext,
    model: &Model,
    method: Method,
    layer: &str,
    fold: Option<Fold>,
) -> Vec<Vec<f32>> {
    let size = model.input_size;
    let cfg = EngineConfig {
        layers: vec![layer.into()],
        folds: vec![fold],
        method,
        size,
        batch: 2,
        targets: TargetSpec::TopK(2),
        read_maps: true,
        ..Default::default()
    };
    let images: Vec<image::RgbImage> = (0..3u32)
        .map(|i| {
            image::RgbImage::from_fn(size[1] as u32, size[0] as u32, |x, y| {
                image::Rgb([
                    (x * 17 + 30 * i) as u8,
                    (y * y + x) as u8,
                    (x * y + 9) as u8,
                ])
            })
        })
        .collect();
    let mut e = Engine::new(ctx.clone(), model, cfg).unwrap();
    e.explain(&images)
        .unwrap()
        .into_iter()
        .flat_map(|r| r.targets.into_iter().map(|t| t.map.unwrap()))
        .collect()
}

/// Folded layers: Grad-CAM of the NHWC layer folded to NCHW against the f64 reference on
/// the gathered tensors; for every method, an identity fold gives exactly the unfolded maps
/// (also on a conv whose ReLU is otherwise fused), and the NHWC layer folded back gives
/// exactly the NCHW concat's maps.
#[test]
fn folded_layers_explain_like_their_gathered_tensors() {
    let ctx = ctx();
    let (graph, weights) = layout_net();
    let size = [13, 11];
    let shapes = graph.shapes(size).unwrap();
    let cat = shapes[graph.find("cat").unwrap()];
    assert_eq!(shapes[graph.find("nhwc").unwrap()], [13, 23, 6]);
    let stem = shapes[graph.find("stem.conv").unwrap()];
    explains_folded_like_the_f64_composition(
        &ctx,
        &graph,
        &weights,
        size,
        &[
            ("nhwc", Some(nhwc_to_nchw(cat))),
            ("cat", Some(identity(cat))),
        ],
    );
    let model = layout_model(graph, weights, size);
    for method in [
        Method::GradCam,
        Method::GradCamPlusPlus,
        Method::LayerCam,
        Method::EigenCam,
        Method::ScoreCam,
        Method::GuidedGradCam,
    ] {
        let plain = folded_maps(&ctx, &model, method, "cat", None);
        let same = folded_maps(&ctx, &model, method, "cat", Some(identity(cat)));
        assert_eq!(plain, same, "{method:?}: identity fold");
        let back = folded_maps(&ctx, &model, method, "nhwc", Some(nhwc_to_nchw(cat)));
        assert_eq!(plain, back, "{method:?}: NHWC folded to NCHW");
        let conv = folded_maps(&ctx, &model, method, "stem.conv", None);
        let same = folded_maps(&ctx, &model, method, "stem.conv", Some(identity(stem)));
        assert_eq!(conv, same, "{method:?}: identity fold of a conv");
    }
}

/// `layout_net` as a model at `size`, its default layer the concat.
fn layout_model(graph: Graph, weights: Weights, size: [usize; 2]) -> Model {
    Model {
        arch: "layout-test".into(),
        graph,
        weights,
        default_layer: "cat".into(),
        input_size: size,
        mean: gradcam_wgpu::engine::IMAGENET_MEAN,
        std: gradcam_wgpu::engine::IMAGENET_STD,
        classes: Vec::new(),
        output: gradcam_wgpu::model::Output::Softmax,
        explains: gradcam_wgpu::model::LOGITS.into(),
        output_grid: None,
        tokens: Default::default(),
    }
}

/// Shapley-CAM's Hessian term is exact on piecewise-linear heads only: a layer before the
/// squeeze-excitation (SiLU, sigmoid, a product of activations) is refused, naming the node;
/// the ReLU before the depthwise conv and linear head is taken; so is only one layer.
#[test]
fn shapley_cam_needs_a_piecewise_linear_head() {
    let (graph, weights) = mobile_net();
    let model = layout_model(graph, weights, [21, 19]);
    let cfg = |layers: &[&str]| EngineConfig {
        layers: layers.iter().map(|l| l.to_string()).collect(),
        method: Method::ShapleyCam,
        size: [21, 19],
        ..Default::default()
    };
    let e = Engine::new(ctx(), &model, cfg(&["dw.act"]))
        .err()
        .expect("refused");
    assert!(
        e.to_string().contains("piecewise-linear") && e.to_string().contains("se."),
        "{e}"
    );
    let e = Engine::new(ctx(), &model, cfg(&["head.relu", "concat"]))
        .err()
        .expect("refused");
    assert!(e.to_string().contains("one --layer"), "{e}");
    Engine::new(ctx(), &model, cfg(&["head.relu"])).unwrap();
}

/// Bad folds are errors naming the layer; Ablation-CAM takes none; FullGrad ignores them.
#[test]
fn folds_are_checked() {
    let ctx = ctx();
    let (graph, weights) = layout_net();
    let size = [13, 11];
    let model = layout_model(graph, weights, size);
    assert_eq!(model.layer_shape("nhwc", size).unwrap(), [13, 23, 6]);
    assert!(matches!(
        model.layer_shape("nope", size),
        Err(Error::UnknownLayer { .. })
    ));
    let cat = [6, 13, 23];
    let engine = |method, fold: Fold| {
        let cfg = EngineConfig {
            layers: vec!["nhwc".into()],
            folds: vec![Some(fold)],
            method,
            size,
            batch: 1,
            ..Default::default()
        };
        Engine::new(ctx.clone(), &model, cfg)
            .err()
            .map(|e| e.to_string())
    };
    let mut short = identity(cat);
    short.index.pop();
    let mut far = identity(cat);
    far.index[5] = 6 * 13 * 23;
    let mut twice = identity(cat);
    twice.index[5] = 4;
    for (fold, says) in [
        (short, "1793 indices"),
        (far, "out of range"),
        (twice, "appears twice"),
    ] {
        let e = engine(Method::GradCam, fold).expect("a bad fold is an error");
        assert!(e.contains("layer `nhwc`") && e.contains(says), "{e}");
    }
    let e = engine(Method::Cam, identity(cat)).unwrap();
    assert!(e.contains("CAM on a folded layer is not supported"), "{e}");
    assert_eq!(engine(Method::AblationCam, identity(cat)), None);
    assert_eq!(engine(Method::FullGrad, identity([1, 1, 1])), None);
    // The output cannot be folded (the plan needs the logits last).
    let cfg = EngineConfig {
        layers: vec!["fc".into()],
        folds: vec![Some(identity([5, 1, 1]))],
        size,
        ..Default::default()
    };
    let e = Engine::new(ctx.clone(), &model, cfg)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("layer `fc`: fold of the output"), "{e}");
}
