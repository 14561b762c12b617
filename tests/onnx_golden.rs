//! ONNX files exported from PyTorch (and one trained paddle2onnx model) against PyTorch and
//! pytorch-grad-cam 1.5.7: fixtures from tools/make_onnx_fixtures.py. Logits within 1e-4
//! relative, maps within 1e-3 absolute, for Grad-CAM, Grad-CAM++, Score-CAM and EigenCAM
//! at the layer each fixture names (a PyTorch module path, or an ONNX value name).

mod fixture;

use fixture::repo_root;
use gradcam_wgpu::engine::{Method, Reshape};
use gradcam_wgpu::onnx::OnnxOptions;
use gradcam_wgpu::{Engine, EngineConfig, GpuContext, Model, TargetSpec};
use safetensors::SafeTensors;
use std::collections::HashMap;

const MAP_TOLERANCE: f32 = 1e-3;
const LOGIT_TOLERANCE: f32 = 1e-4;

struct Golden {
    meta: HashMap<String, String>,
    model: Model,
    size: [usize; 2],
    images: Vec<image::RgbImage>,
    bytes: Vec<u8>,
}

impl Golden {
    fn load(name: &str) -> Self {
        let dir = repo_root().join("tests/fixtures/onnx");
        let bytes = std::fs::read(dir.join(format!("{name}.safetensors"))).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        let meta = meta.metadata().clone().unwrap();
        let size = [
            meta["height"].parse().unwrap(),
            meta["width"].parse().unwrap(),
        ];
        let mut model = Model::load_with(
            &dir.join(&meta["model"]),
            None,
            &OnnxOptions {
                size: Some(size),
                layout: None,
            },
        )
        .or_else(|_| Model::load(&dir.join(&meta["model"]), None))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        model.mean = serde_json::from_str(&meta["mean"]).unwrap();
        model.std = serde_json::from_str(&meta["std"]).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let u8s = st.tensor("input_u8").unwrap();
        let [h, w] = size;
        // Stored in the order the model takes its channels (BGR for the rapidocr model).
        let images = (0..u8s.shape()[0])
            .map(|i| {
                let px = u8s.data()[i * h * w * 3..(i + 1) * h * w * 3].to_vec();
                image::RgbImage::from_raw(w as u32, h as u32, px).unwrap()
            })
            .collect();
        Self {
            meta,
            model,
            size,
            images,
            bytes,
        }
    }

    fn f32s(&self, key: &str) -> Option<Vec<f32>> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        st.tensor(key)
            .ok()
            .map(|t| bytemuck::pod_collect_to_vec(t.data()))
    }

    fn targets(&self) -> Vec<Vec<usize>> {
        let st = SafeTensors::deserialize(&self.bytes).unwrap();
        let t: Vec<i64> = bytemuck::pod_collect_to_vec(st.tensor("targets").unwrap().data());
        t.chunks(2)
            .map(|c| c.iter().map(|&v| v as usize).collect())
            .collect()
    }

    fn config(&self, method: Method) -> EngineConfig {
        EngineConfig {
            layers: vec![self.meta["layer"].clone()],
            method,
            size: self.size,
            batch: self.images.len(),
            targets: TargetSpec::PerImage(2),
            mean: self.model.mean,
            std: self.model.std,
            read_maps: true,
            reshape: self.reshape(),
            ..Default::default()
        }
    }

    /// The fixture's pytorch-grad-cam reshape_transform as `--reshape`, with its grid.
    fn reshape(&self) -> Reshape {
        let grid = || {
            let g: Vec<usize> = serde_json::from_str(&self.meta["grid"]).unwrap();
            Some([g[0], g[1]])
        };
        match self.meta.get("reshape").map(String::as_str) {
            None => Reshape::None,
            Some("vit") => Reshape::Vit(grid()),
            Some("swin") => Reshape::Swin(grid()),
            Some(other) => panic!("unknown reshape {other}"),
        }
    }
}

/// Worst relative logit error and worst map error per method.
fn check(name: &str) {
    let g = Golden::load(name);
    let ctx = GpuContext::new().expect("a wgpu adapter");
    let want_logits = g.f32s("logits").unwrap();
    let mut worst_logit = 0f32;
    let scale = want_logits
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(1e-6);
    let mut report = Vec::new();
    for (key, method) in [
        ("cam.gradcam", Method::GradCam),
        ("cam.gradcam++", Method::GradCamPlusPlus),
        ("cam.scorecam", Method::ScoreCam),
        ("cam.eigencam", Method::EigenCam),
        ("cam.layercam", Method::LayerCam),
    ] {
        let Some(want) = g.f32s(key) else { continue };
        let flipped = g.f32s(&format!("{key}.flipped"));
        let (worst, logits) = map_error(&g, &ctx, method, &want, flipped.as_deref());
        worst_logit = worst_logit.max(logits / scale);
        assert!(
            worst_logit <= LOGIT_TOLERANCE,
            "{name}: logits off by {worst_logit:.2e} relative"
        );
        report.push(format!("{key} {worst:.2e}"));
        assert!(
            worst <= MAP_TOLERANCE,
            "{name} {key}: max map error {worst:.2e}"
        );
    }
    println!(
        "{name} ({}, layer {}): logits {worst_logit:.2e} relative; {}",
        g.meta.get("exporter").map_or("?", |s| s.as_str()),
        g.meta["layer"],
        report.join(", ")
    );
    assert!(
        worst_logit <= LOGIT_TOLERANCE,
        "{name}: logits off by {worst_logit:.2e} relative"
    );
    assert!(!report.is_empty(), "{name}: no maps in the fixture");
}

/// Worst map error of `method` against `want` (or its sign-flipped twin) and worst absolute
/// logit error, on the fixture's images and targets.
fn map_error(
    g: &Golden,
    ctx: &GpuContext,
    method: Method,
    want: &[f32],
    flipped: Option<&[f32]>,
) -> (f32, f32) {
    let targets = g.targets();
    let want_logits = g.f32s("logits").unwrap();
    let mut engine = Engine::new(ctx.clone(), &g.model, g.config(method))
        .unwrap_or_else(|e| panic!("{method:?}: {e}"));
    let results = engine.explain_for(&g.images, &targets).unwrap();
    let plane = g.size[0] * g.size[1];
    let (mut worst, mut worst_logit) = (0f32, 0f32);
    for (i, r) in results.iter().enumerate() {
        let k = r.logits.len();
        for (c, &l) in r.logits.iter().enumerate() {
            worst_logit = worst_logit.max((l - want_logits[i * k + c]).abs());
        }
        for (t, tr) in r.targets.iter().enumerate() {
            assert_eq!(tr.class, targets[i][t]);
            let row = i * 2 + t;
            let got = tr.map.as_ref().unwrap();
            let err = |w: &[f32]| {
                got.iter()
                    .zip(&w[row * plane..(row + 1) * plane])
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
            };
            worst = worst.max(flipped.map_or(err(want), |f| err(want).min(err(f))));
        }
    }
    (worst, worst_logit)
}

/// Ablation-CAM on token layers against pytorch-grad-cam's AblationCAM with its
/// AblationLayerVit (every token of a channel ablated, prefix tokens included):
/// tools/make_token_ablation_fixture.py on the vit, deit and swin fixtures.
#[test]
fn ablation_cam_on_token_layers() {
    let bytes =
        std::fs::read(repo_root().join("tests/fixtures/onnx/token_ablation.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let f32s = |k: &str| -> Vec<f32> { bytemuck::pod_collect_to_vec(st.tensor(k).unwrap().data()) };
    let ctx = GpuContext::new().expect("a wgpu adapter");
    for name in ["vit", "deit", "swin"] {
        let g = Golden::load(name);
        assert_eq!(f32s(&format!("{name}.logits")), g.f32s("logits").unwrap());
        let want = f32s(&format!("{name}.cam.ablationcam"));
        let (worst, _) = map_error(&g, &ctx, Method::AblationCam, &want, None);
        println!("{name}: ablationcam max map error {worst:.2e}");
        assert!(worst <= MAP_TOLERANCE, "{name} ablationcam: {worst:.2e}");
    }
}

#[test]
fn mobilenet_v3_small() {
    check("mobilenet_v3_small");
}

#[test]
fn convnext() {
    check("convnext");
}

#[test]
fn efficientnet_b0_dynamo_external_data() {
    check("efficientnet_b0");
}

#[test]
fn regnet_y() {
    check("regnet_y");
}

#[test]
fn densenet() {
    check("densenet");
}

/// Multi-head self-attention over a conv stem's positions: MatMul of two activations and an
/// inner Softmax, with the target layer before them so the gradient runs back through both.
#[test]
fn attention_net() {
    check("attention_net");
}

#[test]
fn nhwc_convnet() {
    check("nhwc_convnet");
}

/// A trained model from another framework: PaddleOCR's text-direction classifier as
/// paddle2onnx wrote it (Constant-node weights, a Shape/Cast/Slice flatten, HardSwish as
/// Add/Clip/Mul/Div, a final Softmax), explained at an ONNX value name.
#[test]
fn rapidocr_cls_trained_paddle2onnx() {
    check("rapidocr_cls");
}

/// torchvision's VisionTransformer through the TorchScript exporter with a dynamic batch:
/// MultiheadAttention moves the batch inward (`[L, N, E]`), merges it with the heads and
/// slices Q, K and V out of a rank-5 tensor. pytorch-grad-cam's ViT reshape_transform.
#[test]
fn vit_torchscript() {
    check("vit");
}

/// The same ViT through the dynamo exporter (opset 18, batch 1).
#[test]
fn vit_dynamo() {
    check("vit_dynamo");
}

/// A distilled DeiT (class and distillation tokens, two heads averaged) through the
/// TorchScript exporter: `--reshape vit:8x8` drops both prefix tokens of the 66.
#[test]
fn deit() {
    check("deit");
}

/// torchvision's Swin Transformer: window partition (rank 6), shifted windows with their
/// attention masks, patch merging's strided slices; channels-last maps permuted.
#[test]
fn swin() {
    check("swin");
}

/// With no --layer and --reshape auto, a transformer explains what pytorch-grad-cam's
/// tutorials do: the last block's first norm, folded as the fixture's transform folds it.
#[test]
fn transformers_default_to_the_last_blocks_norm1_folded() {
    for name in ["vit", "vit_dynamo", "deit", "swin"] {
        let g = Golden::load(name);
        let layer = g.model.find_layer(&g.meta["layer"]).unwrap();
        assert_eq!(
            g.model.find_layer(&g.model.default_layer).unwrap(),
            layer,
            "{name}: default layer {}",
            g.model.default_layer
        );
        let ctx = GpuContext::new().expect("a wgpu adapter");
        let mut maps = Vec::new();
        for (layers, reshape) in [
            (vec![], Reshape::Auto),
            (vec![g.meta["layer"].clone()], g.reshape()),
        ] {
            let cfg = EngineConfig {
                layers,
                reshape,
                ..g.config(Method::GradCam)
            };
            let mut engine = Engine::new(ctx.clone(), &g.model, cfg).unwrap();
            let r = engine.explain_for(&g.images, &g.targets()).unwrap();
            maps.push(r[0].targets[0].map.clone().unwrap());
        }
        assert_eq!(maps[0], maps[1], "{name}");
    }
}

/// torchcam 0.5's LeGrad on the ViT (tools/make_legrad_fixture.py: the vit case's model,
/// images and targets): maps within 1e-3 and the logits unchanged by LeGrad's score branch,
/// through both exporters. Returns the worst map error.
fn legrad(name: &str, key: &str, layers: Option<Vec<String>>) -> f32 {
    let g = Golden::load(name);
    let dir = repo_root().join("tests/fixtures/onnx");
    let bytes = std::fs::read(dir.join("vit_legrad.safetensors")).unwrap();
    let fx = Golden {
        bytes,
        ..Golden::load(name)
    };
    let (_, meta) = SafeTensors::read_metadata(&fx.bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    let want = fx.f32s(&format!("cam.{key}")).unwrap();
    let cfg = EngineConfig {
        layers: layers
            .unwrap_or_else(|| serde_json::from_str(&meta[&format!("{key}_layers")]).unwrap()),
        ..g.config(Method::LeGrad)
    };
    let ctx = GpuContext::new().expect("a wgpu adapter");
    let mut engine = Engine::new(ctx, &g.model, cfg).unwrap();
    let r = engine.explain_for(&g.images, &g.targets()).unwrap();
    let logits: Vec<f32> = r.iter().flat_map(|i| i.logits.clone()).collect();
    let want_logits = fx.f32s("logits").unwrap();
    let scale = want_logits.iter().fold(0f32, |m, v| m.max(v.abs()));
    let logit = max_abs_diff(&logits, &want_logits) / scale;
    assert!(
        logit < LOGIT_TOLERANCE,
        "{name} {key}: logits rel {logit:.2e}"
    );
    let got: Vec<f32> = r
        .iter()
        .flat_map(|i| i.targets.iter().flat_map(|t| t.map.clone().unwrap()))
        .collect();
    let worst = max_abs_diff(&got, &want);
    println!("{name} legrad {key}: map max |diff| {worst:.2e}, logits rel {logit:.2e}");
    assert!(
        worst < MAP_TOLERANCE,
        "{name} {key}: map max |diff| {worst:.2e}"
    );
    worst
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn legrad_two_blocks() {
    for name in ["vit", "vit_dynamo"] {
        legrad(name, "legrad", None);
    }
}

/// One block, named or by default (the last block).
#[test]
fn legrad_last_block_and_default() {
    legrad("vit", "legrad_last", None);
    legrad("vit", "legrad_last", Some(Vec::new()));
}

/// A CNN has no attention to differentiate: the error names what is missing.
#[test]
fn legrad_on_a_cnn_names_what_is_missing() {
    let g = Golden::load("mobilenet_v3_small");
    let ctx = GpuContext::new().expect("a wgpu adapter");
    let cfg = EngineConfig {
        layers: Vec::new(),
        ..g.config(Method::LeGrad)
    };
    let e = Engine::new(ctx, &g.model, cfg)
        .err()
        .expect("legrad on a CNN fails");
    let msg = e.to_string();
    assert!(
        msg.contains("vision transformer") && msg.contains("LayerNorm"),
        "{msg}"
    );
}

/// Blocks are residual sums with an attention inside, each named once.
#[test]
fn legrad_layers_must_be_blocks() {
    let g = Golden::load("vit");
    let ctx = GpuContext::new().expect("a wgpu adapter");
    for (layers, want) in [
        (
            vec!["encoder.layers.encoder_layer_1.ln_1"],
            "not a transformer block's output",
        ),
        (
            vec![
                "encoder.layers.encoder_layer_1",
                "encoder.layers.encoder_layer_1",
            ],
            "are the same block",
        ),
    ] {
        let cfg = EngineConfig {
            layers: layers.iter().map(|s| s.to_string()).collect(),
            ..g.config(Method::LeGrad)
        };
        let e = Engine::new(ctx.clone(), &g.model, cfg)
            .err()
            .expect("an error");
        assert!(e.to_string().contains(want), "{layers:?}: {e}");
    }
}

/// One gradient row per backward pass (targets split across passes) gives the same maps.
#[test]
fn legrad_split_passes_agree() {
    let g = Golden::load("vit");
    let ctx = GpuContext::new().expect("a wgpu adapter");
    let maps = |rows: Option<usize>| {
        let cfg = EngineConfig {
            layers: Vec::new(),
            backward_rows: rows,
            ..g.config(Method::LeGrad)
        };
        let mut engine = Engine::new(ctx.clone(), &g.model, cfg).unwrap();
        let r = engine.explain_for(&g.images, &g.targets()).unwrap();
        r.iter()
            .flat_map(|i| i.targets.iter().flat_map(|t| t.map.clone().unwrap()))
            .collect::<Vec<f32>>()
    };
    assert_eq!(maps(None), maps(Some(1)));
}

/// DeiT averages two heads: no single head projects a block's tokens as torchcam's
/// torchvision-ViT projection does, so legrad refuses it.
#[test]
fn legrad_needs_a_single_linear_head() {
    let g = Golden::load("deit");
    let ctx = GpuContext::new().expect("a wgpu adapter");
    let cfg = EngineConfig {
        layers: Vec::new(),
        ..g.config(Method::LeGrad)
    };
    let e = Engine::new(ctx, &g.model, cfg)
        .err()
        .expect("legrad on DeiT fails");
    assert!(e.to_string().contains("not a Linear head"), "{e}");
}

/// `--mask` (pytorch-grad-cam's SemanticSegmentationTarget) on a fully-convolutional net
/// with an `[N, 5, 16, 20]` output: each class's score is its map's sum inside a mask of
/// weights 0, 1 and 128/255 (tools/make_seg_fixture.py).
#[test]
fn segmentation_mask() {
    let mut g = Golden::load("segnet");
    let grid: Vec<usize> = serde_json::from_str(&g.meta["grid"]).unwrap();
    assert_eq!(g.model.output_grid, Some([5, grid[0], grid[1]]));
    let png = repo_root()
        .join("tests/fixtures/onnx")
        .join(&g.meta["mask"]);
    let mask = image::open(png).unwrap().to_luma8();
    let weights: Vec<f32> = mask.pixels().map(|p| f32::from(p.0[0]) / 255.0).collect();
    let size = [mask.height() as usize, mask.width() as usize];
    g.model = g.model.with_mask(&weights, size).unwrap();
    let ctx = GpuContext::new().expect("a wgpu adapter");
    let scale = g
        .f32s("logits")
        .unwrap()
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()));
    for (key, method) in [
        ("cam.gradcam", Method::GradCam),
        ("cam.gradcam++", Method::GradCamPlusPlus),
        ("cam.hirescam", Method::HiResCam),
        ("cam.layercam", Method::LayerCam),
        ("cam.scorecam", Method::ScoreCam),
        ("cam.ablationcam", Method::AblationCam),
    ] {
        let want = g.f32s(key).unwrap();
        let (worst, logits) = map_error(&g, &ctx, method, &want, None);
        println!(
            "segnet {key}: max map error {worst:.2e}, logits {:.2e}",
            logits / scale
        );
        assert!(
            logits / scale <= LOGIT_TOLERANCE,
            "{key}: logits {logits:.2e}"
        );
        assert!(worst <= MAP_TOLERANCE, "{key}: {worst:.2e}");
    }
}

/// `--mask` errors name the flag and the expected shape.
#[test]
fn segmentation_mask_errors() {
    let g = Golden::load("segnet");
    let [_, h, w] = g.model.output_grid.unwrap();
    let ones = vec![1f32; h * w];
    let e = g
        .model
        .with_mask(&ones, [h, w + 1])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("--mask is 16x21") && e.contains("output grid is 16x20"),
        "{e}"
    );
    let e = g
        .model
        .with_mask(&vec![0.0; h * w], [h, w])
        .unwrap_err()
        .to_string();
    assert!(e.contains("--mask is empty"), "{e}");
    let vit = Golden::load("vit");
    assert_eq!(vit.model.output_grid, None);
    let e = vit.model.with_mask(&ones, [h, w]).unwrap_err().to_string();
    assert!(
        e.contains("--mask") && e.contains("score every position"),
        "{e}"
    );
}
