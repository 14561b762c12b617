//! `Engine::explain_tensor`: preprocessed f32 input gives the maps and logits of the same
//! images fed as pixels, with and without aug-smooth, for every target kind.

use gradcam_wgpu::engine::Method;
use gradcam_wgpu::model::{detweights, torchvision};
use gradcam_wgpu::{Engine, EngineConfig, GpuContext, Model, TargetSpec};

const SIZE: [usize; 2] = [40, 56];

fn images() -> Vec<image::RgbImage> {
    (0..3u32)
        .map(|i| {
            image::RgbImage::from_fn(SIZE[1] as u32, SIZE[0] as u32, |x, y| {
                image::Rgb([
                    (x * 7 + i * 50) as u8,
                    (y * 5 + x * i) as u8,
                    ((x ^ y) * 3 + i) as u8,
                ])
            })
        })
        .collect()
}

/// The host twin of the preprocessing kernel: `(x / 255 - mean) / std`, NCHW.
fn preprocess(images: &[image::RgbImage], cfg: &EngineConfig) -> Vec<f32> {
    let mut out = Vec::new();
    for im in images {
        for c in 0..3 {
            out.extend(
                im.pixels()
                    .map(|p| (p.0[c] as f32 / 255.0 - cfg.mean[c]) / cfg.std[c]),
            );
        }
    }
    out
}

fn worst(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

#[test]
fn tensors_match_pixels() {
    let spec = torchvision::state_dict_spec("resnet18", 7).unwrap();
    let model = Model::from_weights(detweights::generate(&spec, 3), None).unwrap();
    let ctx = GpuContext::new().expect("a wgpu adapter");
    let imgs = images();
    let cases = [
        (Method::GradCam, false, TargetSpec::TopK(2)),
        (Method::GradCam, true, TargetSpec::Classes(vec![1, 5])),
        (Method::ScoreCam, false, TargetSpec::PerImage(1)),
        (Method::FullGrad, false, TargetSpec::All),
    ];
    for (method, aug_smooth, targets) in cases {
        let cfg = EngineConfig {
            layers: vec!["layer3".into()],
            method,
            aug_smooth,
            size: SIZE,
            batch: 2, // 3 images: two batches
            targets: targets.clone(),
            read_maps: true,
            ..Default::default()
        };
        let x = preprocess(&imgs, &cfg);
        let mut engine = Engine::new(ctx.clone(), &model, cfg.clone()).unwrap();
        let per_image: Vec<Vec<usize>> = vec![vec![2], vec![0], vec![6]];
        let (from_pixels, from_tensors) = if let TargetSpec::PerImage(_) = targets {
            (
                engine.explain_for(&imgs, &per_image).unwrap(),
                engine.explain_tensor(&x, 3, Some(&per_image)).unwrap(),
            )
        } else {
            (
                engine.explain(&imgs).unwrap(),
                engine.explain_tensor(&x, 3, None).unwrap(),
            )
        };
        assert_eq!(from_tensors.len(), 3);
        if method == Method::GradCam && !aug_smooth {
            // Tensor overlays are drawn over black, also after pixels were uploaded: the
            // same as a fresh engine's, and again on a second call (black kept, not rewritten).
            let mut fresh = Engine::new(ctx.clone(), &model, cfg.clone()).unwrap();
            let want = fresh.explain_tensor(&x, 3, None).unwrap();
            let again = engine.explain_tensor(&x, 3, None).unwrap();
            for ((a, b), c) in from_tensors.iter().zip(&want).zip(&again) {
                for ((ta, tb), tc) in a.targets.iter().zip(&b.targets).zip(&c.targets) {
                    assert_eq!(ta.overlay, tb.overlay, "overlay after a pixel upload");
                    assert_eq!(tc.overlay, tb.overlay, "overlay on a second tensor call");
                }
            }
        }
        for (p, t) in from_pixels.iter().zip(&from_tensors) {
            assert!(worst(&p.logits, &t.logits) < 1e-4, "{method:?} logits");
            assert_eq!(p.targets.len(), t.targets.len());
            for (a, b) in p.targets.iter().zip(&t.targets) {
                assert_eq!(a.class, b.class);
                let e = worst(a.map.as_ref().unwrap(), b.map.as_ref().unwrap());
                assert!(e < 1e-4, "{method:?} aug {aug_smooth}: map error {e}");
            }
        }
    }
}

#[test]
fn bad_tensors_are_errors() {
    let spec = torchvision::state_dict_spec("resnet18", 4).unwrap();
    let model = Model::from_weights(detweights::generate(&spec, 1), None).unwrap();
    let ctx = GpuContext::new().expect("a wgpu adapter");
    let cfg = EngineConfig {
        size: [32, 32],
        ..Default::default()
    };
    let mut engine = Engine::new(ctx, &model, cfg).unwrap();
    let one = 3 * 32 * 32;
    let e = engine
        .explain_tensor(&vec![0.0; one - 1], 1, None)
        .unwrap_err();
    assert!(e.to_string().contains("[1, 3, 32, 32]"), "{e}");
    let e = engine.explain_tensor(&[], 0, None).unwrap_err();
    assert!(e.to_string().contains("at least one"), "{e}");
    let mut x = vec![0.0; one];
    x[17] = f32::NAN;
    let e = engine.explain_tensor(&x, 1, None).unwrap_err();
    assert!(e.to_string().contains("non-finite"), "{e}");
    let e = engine
        .explain_tensor(&vec![0.0; one], 1, Some(&[vec![1]]))
        .unwrap_err();
    assert!(e.to_string().contains("PerImage"), "{e}");
}

#[test]
fn probe_batch_leaves_maps_unchanged() {
    // Score-CAM and Ablation-CAM chunk their probes; a cap of 3 (not dividing 256 channels)
    // gives the same maps as the budget's sizing.
    let spec = torchvision::state_dict_spec("resnet18", 7).unwrap();
    let model = Model::from_weights(detweights::generate(&spec, 5), None).unwrap();
    let ctx = GpuContext::new().expect("a wgpu adapter");
    let imgs = images();
    for method in [Method::ScoreCam, Method::AblationCam] {
        let run = |probe_batch| {
            let cfg = EngineConfig {
                layers: vec!["layer3".into()],
                method,
                size: SIZE,
                batch: 2,
                targets: TargetSpec::TopK(2),
                read_maps: true,
                probe_batch,
                ..Default::default()
            };
            let mut engine = Engine::new(ctx.clone(), &model, cfg).unwrap();
            engine.explain(&imgs).unwrap()
        };
        let (a, b) = (run(None), run(Some(3)));
        for (p, q) in a.iter().zip(&b) {
            for (x, y) in p.targets.iter().zip(&q.targets) {
                assert_eq!(x.class, y.class);
                let e = worst(x.map.as_ref().unwrap(), y.map.as_ref().unwrap());
                assert!(e < 1e-6, "{method:?}: map error {e}");
            }
        }
    }
}
