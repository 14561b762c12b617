//! Model loading, architecture inference, layer names, the graph IR and plan fusion.

use gradcam_wgpu::engine::Method;
use gradcam_wgpu::engine::{Plan, StepOp};
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
    assert!(
        !plan
            .steps
            .iter()
            .any(|s| matches!(s.op, StepOp::Affine { .. }))
    );
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
            .any(|s| s.name == "layer4.1.bn2" && matches!(s.op, StepOp::Affine { .. }))
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
    assert!(e.explain(&[image::RgbImage::new(8, 8)]).is_err());
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
