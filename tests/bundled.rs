//! The bundled model, EfficientNet-Lite0, against its PyTorch port and pytorch-grad-cam 1.5.7
//! (fixture from tools/make_bundled_fixtures.py; the weights are the bundled ones): logits
//! within 1e-4 relative, Grad-CAM, Grad-CAM++, Score-CAM and EigenCAM maps within 1e-3 at the
//! default layer (the head's ReLU6) and at `_blocks.15`; the top-1 label of every example
//! photo is the port's. Also what the bundled and the shapes models are.

mod fixture;

use fixture::repo_root;
use gradcam_wgpu::engine::Method;
use gradcam_wgpu::{Engine, EngineConfig, GpuContext, Model, TargetSpec, input};
use safetensors::SafeTensors;
use std::collections::BTreeMap;
use std::time::Instant;

const MAP_TOLERANCE: f32 = 1e-3;
const LOGIT_TOLERANCE: f32 = 1e-4;

struct Golden {
    meta: std::collections::HashMap<String, String>,
    bytes: Vec<u8>,
}

impl Golden {
    fn load() -> Self {
        let path = repo_root().join("tests/fixtures/bundled/efficientnet_lite0.safetensors");
        let bytes = std::fs::read(path).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta = meta.metadata().clone().unwrap();
        Self { meta, bytes }
    }

    fn tensor(&self, key: &str) -> Option<Vec<u8>> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        st.tensor(key).ok().map(|t| t.data().to_vec())
    }

    fn f32s(&self, key: &str) -> Vec<f32> {
        bytemuck::pod_collect_to_vec(&self.tensor(key).unwrap())
    }

    /// A map stored as u16 (`round(map * 65535)`).
    fn map(&self, key: &str) -> Option<Vec<f32>> {
        let raw: Vec<u16> = bytemuck::pod_collect_to_vec(&self.tensor(key)?);
        Some(raw.iter().map(|&v| v as f32 / 65535.0).collect())
    }

    fn images(&self) -> Vec<image::RgbImage> {
        let px = self.tensor("input_u8").unwrap();
        px.chunks(224 * 224 * 3)
            .map(|c| image::RgbImage::from_raw(224, 224, c.to_vec()).unwrap())
            .collect()
    }

    fn targets(&self) -> Vec<Vec<usize>> {
        let t: Vec<i64> = bytemuck::pod_collect_to_vec(&self.tensor("targets").unwrap());
        t.iter().map(|&c| vec![c as usize]).collect()
    }
}

fn config(model: &Model, layer: &str, method: Method, targets: TargetSpec) -> EngineConfig {
    EngineConfig {
        layers: vec![layer.to_string()],
        method,
        size: model.input_size,
        batch: 2,
        targets,
        mean: model.mean,
        std: model.std,
        read_maps: true,
        ..Default::default()
    }
}

/// Runs `methods` at the fixture's layers whose tag is in `tags` (all when empty) on its
/// first `images` images; panics listing every case over the tolerances.
fn check_parity(methods: &[(&str, Method)], tags: &[&str], images: usize) {
    let g = Golden::load();
    let start = Instant::now();
    let model = Model::bundled().unwrap();
    println!(
        "Model::bundled(): {:.1} ms",
        start.elapsed().as_secs_f64() * 1e3
    );
    let ctx = GpuContext::new().expect("a wgpu adapter");
    let all = g.images();
    let inputs = &all[..images];
    let targets = &g.targets()[..images];
    let want_logits = g.f32s("logits");
    let scale = want_logits.iter().fold(0f32, |m, v| m.max(v.abs()));
    let layers: BTreeMap<String, String> = serde_json::from_str(&g.meta["layers"]).unwrap();
    let plane = 224 * 224;
    let mut failures = Vec::new();
    for (tag, layer) in &layers {
        if !tags.is_empty() && !tags.contains(&tag.as_str()) {
            continue;
        }
        for &(key, method) in methods {
            let want = g.map(&format!("cam.{key}.{tag}")).unwrap();
            let flipped = g.map(&format!("cam.{key}.flipped.{tag}"));
            let start = Instant::now();
            let cfg = config(&model, layer, method, TargetSpec::PerImage(1));
            let mut engine = Engine::new(ctx.clone(), &model, cfg).unwrap();
            let results = engine.explain_for(inputs, targets).unwrap();
            let (mut logit_err, mut map_err) = (0f32, 0f32);
            for (i, r) in results.iter().enumerate() {
                for (l, w) in r.logits.iter().zip(&want_logits[i * 1000..(i + 1) * 1000]) {
                    logit_err = logit_err.max((l - w).abs() / scale);
                }
                let got = r.targets[0].map.as_ref().unwrap();
                let err = |w: &[f32]| {
                    got.iter()
                        .zip(&w[i * plane..(i + 1) * plane])
                        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
                };
                let e = flipped
                    .as_ref()
                    .map_or(err(&want), |f| err(&want).min(err(f)));
                map_err = map_err.max(e);
            }
            println!(
                "{tag} ({layer}) {key}, {images} image(s): logits {logit_err:.2e} relative, \
                 map {map_err:.2e} ({:.1} s)",
                start.elapsed().as_secs_f32()
            );
            if logit_err > LOGIT_TOLERANCE || map_err > MAP_TOLERANCE {
                failures.push(format!(
                    "{tag} {key}: logits {logit_err:.2e}, map {map_err:.2e}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn logits_and_maps_match_the_pytorch_port() {
    check_parity(
        &[
            ("gradcam", Method::GradCam),
            ("gradcam++", Method::GradCamPlusPlus),
            ("eigencam", Method::EigenCam),
        ],
        &[],
        2,
    );
}

/// Score-CAM runs one forward pass per channel (320 at `_blocks.15`, 1280 at the head),
/// about 0.3 s each on lavapipe: this test takes `_blocks.15` on one photo (about 90 s on 2
/// cores); the ignored one below takes both layers and both photos.
#[test]
fn score_cam_matches_the_pytorch_port_at_the_last_block() {
    check_parity(&[("scorecam", Method::ScoreCam)], &["_blocks.15"], 1);
}

/// About 15 min on lavapipe: `cargo test --release --test bundled -- --ignored`.
#[test]
#[ignore]
fn score_cam_matches_the_pytorch_port_everywhere() {
    check_parity(&[("scorecam", Method::ScoreCam)], &[], 2);
}

/// Every photo in examples/photos, decoded and resized as `gradcam explain` does, gets the
/// top-1 label the PyTorch port gives it.
#[test]
fn example_photos_top1_is_the_ports() {
    let g = Golden::load();
    let want: BTreeMap<String, String> = serde_json::from_str(&g.meta["photos"]).unwrap();
    let model = Model::bundled().unwrap();
    let dir = repo_root().join("examples/photos");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".jpg"))
        .collect();
    files.sort();
    assert_eq!(files, want.keys().cloned().collect::<Vec<_>>());
    let images: Vec<_> = files
        .iter()
        .map(|f| input::load(&dir.join(f), model.input_size).unwrap())
        .collect();
    let ctx = GpuContext::new().expect("a wgpu adapter");
    let mut cfg = config(
        &model,
        &model.default_layer,
        Method::GradCam,
        TargetSpec::TopK(1),
    );
    cfg.batch = images.len();
    let mut engine = Engine::new(ctx, &model, cfg).unwrap();
    let results = engine.explain(&images).unwrap();
    for (f, r) in files.iter().zip(&results) {
        let got = model.class_name(r.targets[0].class);
        println!("{f}: {got} (port: {})", want[f]);
        assert_eq!(&got, &want[f], "{f}");
    }
}

/// The bundled model is the ImageNet classifier; its default layer is the head's activation,
/// distinct from the stem's (the port calls one ReLU6 module for both).
#[test]
fn bundled_is_efficientnet_lite0() {
    let m = Model::bundled().unwrap();
    assert_eq!(m.arch, "efficientnet-lite0");
    assert_eq!(m.classes.len(), 1000);
    assert_eq!(m.class_name(285), "Egyptian cat");
    assert_eq!(m.input_size, [224, 224]);
    assert_eq!(m.mean, [0.485, 0.456, 0.406]);
    let shapes = m.graph.shapes(m.input_size).unwrap();
    let head = m.graph.find(&m.default_layer).unwrap();
    assert_eq!(m.default_layer, "_swish:1");
    assert_eq!(shapes[head], [1280, 7, 7]);
    let node = &m.graph.nodes[head];
    assert_eq!(m.graph.nodes[node.inputs[0]].name, "_bn1");
    let stem = m.graph.find("_swish").unwrap();
    assert_ne!(stem, head);
    assert_eq!(shapes[stem], [32, 112, 112]);
    for (layer, shape) in [("_blocks.15", [320, 7, 7]), ("_conv_head", [1280, 7, 7])] {
        let i = m.graph.find(layer).unwrap_or_else(|| panic!("{layer}"));
        assert_eq!(shapes[i], shape, "{layer}");
    }
    assert!(m.warnings().is_empty());
}

#[test]
fn shapes_model_stays_available() {
    let m = Model::shapes().unwrap();
    assert_eq!(m.arch, "shapes-resnet");
    assert_eq!(m.input_size, [128, 128]);
    assert_eq!(m.classes.len(), 10);
    assert_eq!(m.default_layer, "layer3");
    assert_eq!(
        Model::builtin("shapes").unwrap().unwrap().arch,
        "shapes-resnet"
    );
    assert_eq!(
        Model::builtin("efficientnet-lite0").unwrap().unwrap().arch,
        "efficientnet-lite0"
    );
    assert!(Model::builtin("resnet50").is_none());
}
