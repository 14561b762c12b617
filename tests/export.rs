//! Self-describing model files: the exporter's golden fixtures (a custom net with concat,
//! squeeze-excitation, ReLU6, SiLU and depthwise conv; a small torchvision ViT and a DeiT-style
//! net, exported by tools/export.py) against PyTorch and pytorch-grad-cam, and the metadata's
//! error handling.

use gradcam_wgpu::engine::Reshape;
use gradcam_wgpu::model::{META_KEY, Model, ModelMeta, Tokens, Weights, detweights, torchvision};
use gradcam_wgpu::{Engine, EngineConfig, Error, GpuContext, TargetSpec};
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/export")
        .join(name)
}

struct Golden {
    bytes: Vec<u8>,
}

impl Golden {
    fn f32s(&self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t = st.tensor(name).unwrap();
        (t.shape().to_vec(), bytemuck::pod_collect_to_vec(t.data()))
    }
    fn meta(&self, key: &str) -> String {
        let (_, m) = SafeTensors::read_metadata(&self.bytes).unwrap();
        m.metadata().as_ref().unwrap()[key].clone()
    }
}

#[test]
fn exported_custom_net_matches_pytorch_and_pgc() {
    let model = Model::load(&fixture("custom.safetensors"), None).unwrap();
    assert_eq!(model.arch, "custom");
    assert_eq!(model.classes.len(), 7);
    assert_eq!(model.default_layer, "block");
    let golden = Golden {
        bytes: std::fs::read(fixture("custom-golden.safetensors")).unwrap(),
    };
    let size = model.input_size;
    let [h, w] = size;
    assert_eq!(golden.meta("height"), h.to_string());
    let st = SafeTensors::deserialize(&golden.bytes).unwrap();
    let images = images(&golden, "input_u8", size);
    let targets: Vec<i64> = bytemuck::pod_collect_to_vec(st.tensor("targets").unwrap().data());
    let per_image: Vec<Vec<usize>> = targets
        .chunks(2)
        .map(|c| vec![c[0] as usize, c[1] as usize])
        .collect();
    let (_, logits) = golden.f32s("logits");
    let ctx = GpuContext::new().unwrap();
    for layer in golden.meta("layers").split(',') {
        let cfg = EngineConfig {
            layers: vec![layer.to_string()],
            size,
            mean: model.mean,
            std: model.std,
            targets: TargetSpec::PerImage(2),
            read_maps: true,
            ..Default::default()
        };
        let mut engine = Engine::new(ctx.clone(), &model, cfg).unwrap();
        let results = engine.explain_for(&images, &per_image).unwrap();
        let (_, cams) = golden.f32s(&format!("cams.{layer}"));
        let mut worst_logit = 0f32;
        let mut worst_map = 0f32;
        for (i, r) in results.iter().enumerate() {
            for (k, &l) in r.logits.iter().enumerate() {
                let want = logits[i * 7 + k];
                worst_logit = worst_logit.max((l - want).abs() / want.abs().max(1.0));
            }
            for (t, tr) in r.targets.iter().enumerate() {
                assert_eq!(tr.class, per_image[i][t]);
                let map = tr.map.as_ref().unwrap();
                let want = &cams[(i * 2 + t) * h * w..(i * 2 + t + 1) * h * w];
                for (a, b) in map.iter().zip(want) {
                    worst_map = worst_map.max((a - b).abs());
                }
            }
        }
        eprintln!("layer {layer}: logits rel {worst_logit:.2e}, map abs {worst_map:.2e}");
        assert!(
            worst_logit < 2e-5,
            "layer {layer}: logits off by {worst_logit}"
        );
        assert!(worst_map < 2e-4, "layer {layer}: maps off by {worst_map}");
    }
}

/// The RGB images of `h x w` in a golden file's tensor `key` [N, H, W, 3].
fn images(golden: &Golden, key: &str, [h, w]: [usize; 2]) -> Vec<image::RgbImage> {
    let st = SafeTensors::deserialize(&golden.bytes).unwrap();
    let u8s = st.tensor(key).unwrap();
    (0..u8s.shape()[0])
        .map(|i| {
            let px = u8s.data()[i * h * w * 3..(i + 1) * h * w * 3].to_vec();
            image::RgbImage::from_raw(w as u32, h as u32, px).unwrap()
        })
        .collect()
}

/// tools/make_export_vit_fixture.py: ViT, DeiT and Swin exported with attention decomposed,
/// against PyTorch's logits and pytorch-grad-cam's GradCAM with its reshape_transforms at the
/// last block's first norm; the default layer with `--reshape auto` gives the same maps as the
/// layer named with `--reshape vit` (`swin`).
#[test]
fn exported_vit_deit_and_swin_match_pytorch_and_pgc() {
    let golden = Golden {
        bytes: std::fs::read(fixture("vit-golden.safetensors")).unwrap(),
    };
    let ctx = GpuContext::new().unwrap();
    let targets: Vec<i64> = bytemuck::pod_collect_to_vec(
        SafeTensors::deserialize(&golden.bytes)
            .unwrap()
            .tensor("targets")
            .unwrap()
            .data(),
    );
    let per_image: Vec<Vec<usize>> = targets
        .chunks(2)
        .map(|c| vec![c[0] as usize, c[1] as usize])
        .collect();
    for case in golden.meta("cases").split(',') {
        let model = Model::load(&fixture(&format!("{case}.safetensors")), None).unwrap();
        let layer = golden.meta(&format!("layer.{case}"));
        assert_eq!(model.default_layer, layer, "{case}");
        let (kind, reshape) = match case {
            "swin" => (Tokens::Grid, Reshape::Swin(None)),
            _ => (Tokens::Sequence, Reshape::Vit(None)),
        };
        assert_eq!(model.tokens.get(&layer), Some(&kind), "{case}");
        let size = model.input_size;
        let [h, w] = size;
        let images = images(&golden, &format!("{case}.input_u8"), size);
        let (_, logits) = golden.f32s(&format!("{case}.logits"));
        let (_, cams) = golden.f32s(&format!("{case}.cams"));
        let classes = model.classes.len();
        let run = |layers: Vec<String>, reshape: Reshape| {
            let cfg = EngineConfig {
                layers,
                reshape,
                size,
                mean: model.mean,
                std: model.std,
                targets: TargetSpec::PerImage(2),
                read_maps: true,
                ..Default::default()
            };
            let mut engine = Engine::new(ctx.clone(), &model, cfg).unwrap();
            engine.explain_for(&images, &per_image).unwrap()
        };
        let auto = run(Vec::new(), Reshape::Auto);
        let named = run(vec![layer.clone()], reshape);
        let (mut worst_logit, mut worst_map) = (0f32, 0f32);
        let scale = logits.iter().fold(0f32, |m, v| m.max(v.abs()));
        for (i, (r, rn)) in auto.iter().zip(&named).enumerate() {
            for (k, &l) in r.logits.iter().enumerate() {
                worst_logit = worst_logit.max((l - logits[i * classes + k]).abs() / scale);
            }
            for (t, (tr, trn)) in r.targets.iter().zip(&rn.targets).enumerate() {
                assert_eq!(tr.class, per_image[i][t]);
                let (map, mapn) = (tr.map.as_ref().unwrap(), trn.map.as_ref().unwrap());
                assert_eq!(map, mapn, "{case}: default layer and --reshape auto");
                let want = &cams[(i * 2 + t) * h * w..(i * 2 + t + 1) * h * w];
                for (a, b) in map.iter().zip(want) {
                    worst_map = worst_map.max((a - b).abs());
                }
            }
        }
        eprintln!("{case}: logits rel {worst_logit:.2e}, map abs {worst_map:.2e}");
        assert!(worst_logit < 1e-4, "{case}: logits off by {worst_logit}");
        assert!(worst_map < 1e-3, "{case}: maps off by {worst_map}");
    }
}

/// A self-describing resnet18 built in Rust: the metadata round-trips through bytes.
fn resnet_meta_model() -> Model {
    let spec = torchvision::state_dict_spec("resnet18", 4).unwrap();
    let mut model = Model::from_weights(detweights::generate(&spec, 3), None).unwrap();
    model.arch = "tiny".into();
    model.input_size = [48, 40];
    model.classes = ["a", "b", "c", "d"].map(String::from).to_vec();
    model
}

fn with_meta(model: &Model, json: String) -> Weights {
    let mut w = model.weights.clone();
    w.metadata.insert(META_KEY.into(), json);
    w
}

#[test]
fn metadata_round_trips() {
    let mut model = resnet_meta_model();
    let weights = with_meta(&model, model.meta().to_json());
    assert!(
        !model.meta().to_json().contains("tokens"),
        "absent when empty"
    );
    let back = Model::from_weights(weights, None).unwrap();
    assert_eq!(back.meta(), model.meta());
    let node = model.graph.nodes[1].name.clone();
    model.tokens.insert(node, Tokens::Grid);
    let weights = with_meta(&model, model.meta().to_json());
    let bytes = weights.to_bytes().unwrap();
    let back = Model::from_weights(Weights::from_bytes(&bytes).unwrap(), None).unwrap();
    assert_eq!(back.meta(), model.meta());
    assert_eq!(back.class_name(2), "c");
}

#[test]
fn metadata_errors_are_clear() {
    let model = resnet_meta_model();
    let json = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v = serde_json::to_value(model.meta()).unwrap();
        f(&mut v);
        v.to_string()
    };
    let err = |j: String| {
        Model::from_weights(with_meta(&model, j), None)
            .unwrap_err()
            .to_string()
    };
    let e = err(json(&|v| v["version"] = 2.into()));
    assert!(e.contains("schema version 2 is not supported"), "{e}");
    let e = err(json(&|v| {
        v.as_object_mut().unwrap().remove("version");
    }));
    assert!(e.contains("no integer `version`"), "{e}");
    let e = err(json(&|v| v["colour"] = "blue".into()));
    assert!(e.contains("unknown field `colour`"), "{e}");
    let e = err(json(&|v| v["classes"] = serde_json::json!(["x"])));
    assert!(e.contains("1 class names for 4 outputs"), "{e}");
    let e = err(json(&|v| v["default_layer"] = "layer9".into()));
    assert!(e.contains("default_layer `layer9`"), "{e}");
    let e = err(json(&|v| v["std"] = serde_json::json!([0.2, 0.0, 0.2])));
    assert!(e.contains("std non-zero"), "{e}");
    let e = err(json(&|v| v["input_size"] = serde_json::json!([0, 10])));
    assert!(e.contains("input_size 0x10"), "{e}");
    let e = err(json(&|v| {
        v["graph"]["nodes"][1]["op"]["op"] = "upsample".into();
    }));
    assert!(e.contains("upsample"), "{e}");
    let e = err(json(&|v| {
        v["tokens"] = serde_json::json!({"layer9": "sequence"})
    }));
    assert!(e.contains("tokens: `layer9` is not a node"), "{e}");
    let e = err(json(&|v| {
        v["tokens"] = serde_json::json!({"layer4": "cube"})
    }));
    assert!(e.contains("unknown variant `cube`"), "{e}");
    let e = err("{not json".into());
    assert!(e.contains("not valid JSON"), "{e}");
    // A tensor the graph names but the file lacks.
    let mut w = with_meta(&model, model.meta().to_json());
    w.tensors.remove("layer1.0.conv1.weight");
    let e = Model::from_weights(w, None).unwrap_err();
    assert!(
        matches!(&e, Error::Tensor { name, .. } if name == "layer1.0.conv1.weight"),
        "{e}"
    );
    // --arch makes no sense for a self-describing file.
    let e = Model::from_weights(with_meta(&model, model.meta().to_json()), Some("resnet18"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("drop --arch"), "{e}");
}

#[test]
fn meta_parses_the_documented_schema() {
    let model = Model::load(&fixture("custom.safetensors"), None).unwrap();
    let meta = ModelMeta::from_weights(&model.weights).unwrap().unwrap();
    assert_eq!(meta.version, 1);
    assert_eq!(meta.input_size, [37, 42]);
    assert!(model.graph.find("se").is_some() && model.graph.find("mix.cat").is_some());
}
