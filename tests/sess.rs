//! `--sess` (pytorch-grad-cam's SESS) around Grad-CAM and Grad-CAM++ against pgc 1.5.7 on a
//! ResNet-18 (tools/make_sess_fixture.py): default fusion, max pooling with overlapping
//! windows, theta and pre-filtering, explicit scales without the blur.

mod fixture;

use fixture::Fixture;
use gradcam_wgpu::engine::{Method, Sess, SessOptions, SessPool};
use gradcam_wgpu::{EngineConfig, GpuContext, TargetSpec};
use serde_json::Value;

const TOLERANCE: f32 = 1e-3;

fn options(o: &Value) -> SessOptions {
    let mut s = SessOptions::default();
    for (k, v) in o.as_object().unwrap() {
        match k.as_str() {
            "num_scales" => s.num_scales = v.as_u64().unwrap() as usize,
            "step_size" => s.step = Some(v.as_u64().unwrap() as usize),
            "pool" => {
                s.pool = if v == "max" {
                    SessPool::Max
                } else {
                    SessPool::Mean
                }
            }
            "theta" => s.theta = v.as_f64().unwrap() as f32,
            "pre_filter_ratio" => s.pre_filter_ratio = v.as_f64().unwrap(),
            "smooth" => s.smooth = v.as_bool().unwrap(),
            "scales" => {
                s.scales = Some(
                    v.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_u64().unwrap() as usize)
                        .collect(),
                )
            }
            other => panic!("option {other}"),
        }
    }
    s
}

#[test]
fn sess_matches_pytorch_grad_cam() {
    let ctx = GpuContext::new().expect("a wgpu adapter");
    let fx = Fixture::load("methods/sess.safetensors");
    let cases: serde_json::Map<String, Value> = serde_json::from_str(&fx.meta["cases"]).unwrap();
    let targets: Vec<Vec<usize>> = fx
        .i64s("targets")
        .chunks(2)
        .map(|t| t.iter().map(|&v| v as usize).collect())
        .collect();
    let plane = fx.size[0] * fx.size[1];
    let mut failures = Vec::new();
    for (key, case) in &cases {
        let method: Method = case["method"].as_str().unwrap().parse().unwrap();
        let cfg = EngineConfig {
            layers: vec![fx.meta["layer"].clone()],
            method,
            size: fx.size,
            batch: 8,
            targets: TargetSpec::PerImage(2),
            read_maps: true,
            ..Default::default()
        };
        let mut sess = Sess::new(ctx.clone(), &fx.model, cfg, options(&case["options"])).unwrap();
        let results = sess.explain(&fx.images, Some(&targets)).unwrap();
        let want = fx.f32s(&format!("cam.{key}"));
        let mut worst = 0f32;
        for (i, r) in results.iter().enumerate() {
            for (t, tr) in r.targets.iter().enumerate() {
                assert_eq!(tr.class, targets[i][t]);
                let row = i * 2 + t;
                let got = tr.map.as_ref().unwrap();
                for (a, b) in got.iter().zip(&want[row * plane..(row + 1) * plane]) {
                    worst = worst.max((a - b).abs());
                }
            }
        }
        println!("{key} ({method:?}): max map error {worst:.2e}");
        if worst > TOLERANCE {
            failures.push(format!("{key}: {worst:.2e}"));
        }
    }
    assert!(cases.len() >= 4, "{} cases", cases.len());
    assert!(failures.is_empty(), "over {TOLERANCE}: {failures:?}");
}

/// Bad SESS settings are errors naming the flag.
#[test]
fn sess_options_are_checked() {
    let ctx = GpuContext::new().expect("a wgpu adapter");
    let fx = Fixture::load("methods/sess.safetensors");
    let cfg = |size| EngineConfig {
        layers: vec![fx.meta["layer"].clone()],
        size,
        batch: 2,
        ..Default::default()
    };
    let err = |size, o: SessOptions| {
        Sess::new(ctx.clone(), &fx.model, cfg(size), o)
            .err()
            .expect("refused")
            .to_string()
    };
    let e = err([32, 40], SessOptions::default());
    assert!(e.contains("must be square"), "{e}");
    let e = err(
        fx.size,
        SessOptions {
            pre_filter_ratio: 1.0,
            ..Default::default()
        },
    );
    assert!(e.contains("--sess-prefilter"), "{e}");
    let e = err(
        fx.size,
        SessOptions {
            scales: Some(vec![20]),
            ..Default::default()
        },
    );
    assert!(e.contains("scale 20 is smaller than the window 32"), "{e}");
    let e = err(
        fx.size,
        SessOptions {
            step: Some(0),
            ..Default::default()
        },
    );
    assert!(e.contains("--sess-step"), "{e}");
}
