//! `gradcam eval`'s reference metrics against their reference implementations on given maps
//! (tests/fixtures/metrics/metrics.safetensors, from tools/make_metric_fixtures.py):
//! pytorch-grad-cam 1.5.7's ROAD (masks, imputer, MoRF/LeRF, averages, ROADCombined),
//! CamMultImageConfidenceChange and ARCC, and torch-cam 0.5's DeletionInsertionMetric(steps=20).

mod common;
mod fixture;

use fixture::Fixture;
use gradcam_wgpu::engine::{Method, Score};
use gradcam_wgpu::eval::faithful::{self, FaithConfig, MapRow};
use gradcam_wgpu::eval::imputer::NoisyLinearImputer;
use gradcam_wgpu::eval::road::{PERCENTILES, Ranked};
use gradcam_wgpu::eval::scorer::Scorer;
use gradcam_wgpu::eval::{arcc, torchcam};
use gradcam_wgpu::{Engine, EngineConfig, GpuContext, TargetSpec};

const TOLERANCE: f64 = 1e-4;

struct Data {
    fx: Fixture,
    inputs: Vec<f32>,
    cams: Vec<f32>,
    targets: Vec<usize>,
    n: usize,
    plane: usize,
}

fn data() -> Data {
    let fx = Fixture::load("metrics/metrics.safetensors");
    let plane = fx.size[0] * fx.size[1];
    Data {
        inputs: fx.f32s("input"),
        cams: fx.f32s("cams"),
        targets: fx.i64s("targets").iter().map(|&t| t as usize).collect(),
        n: fx.meta["batch"].parse().unwrap(),
        plane,
        fx,
    }
}

impl Data {
    fn input(&self, i: usize) -> &[f32] {
        &self.inputs[i * 3 * self.plane..(i + 1) * 3 * self.plane]
    }
    fn cam(&self, i: usize) -> &[f32] {
        &self.cams[i * self.plane..(i + 1) * self.plane]
    }
}

fn worst(name: &str, got: &[f64], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "{name}");
    let e = got
        .iter()
        .zip(want)
        .fold(0f64, |m, (a, &b)| m.max((a - b as f64).abs()));
    println!("{name}: max abs error {e:.2e} (reference {want:?})");
    e
}

/// The binary masks are pgc's bit for bit (numpy's percentile, ties at the threshold
/// removed), and the imputed inputs agree with scipy's solve.
#[test]
fn road_masks_and_imputer_match_pytorch_grad_cam() {
    let d = data();
    for p in PERCENTILES {
        for (kind, least) in [("morf", false), ("lerf", true)] {
            let want = d.fx.u8s(&format!("road.{kind}.mask.{p}"));
            for i in 0..d.n {
                let keep = Ranked::new(d.cam(i), least).keep(p);
                let got: Vec<u8> = keep.iter().map(|&k| k as u8).collect();
                assert_eq!(
                    got,
                    want[i * d.plane..(i + 1) * d.plane],
                    "{kind} {p} image {i}"
                );
            }
        }
    }
    let imp = NoisyLinearImputer {
        noise: 0.0,
        seed: 0,
    };
    for p in [20, 80] {
        let want = d.fx.f32s(&format!("road.morf.imputed.{p}"));
        let mut e = 0f32;
        for i in 0..d.n {
            let keep = Ranked::new(d.cam(i), false).keep(p);
            let got = imp.impute(d.input(i), &keep, d.fx.size, 0).unwrap();
            let w = &want[i * 3 * d.plane..(i + 1) * 3 * d.plane];
            e = got.iter().zip(w).fold(e, |m, (a, b)| m.max((a - b).abs()));
        }
        println!("imputed input at {p}: max abs error {e:.2e}");
        assert!(e < 1e-5, "imputed at {p}: {e}");
    }
}

/// Every score-based metric through the engine's scorer, within 1e-4 of the references.
#[test]
fn reference_metrics_match_their_implementations() {
    let d = data();
    let ctx = GpuContext::new().unwrap();
    let classes = d.fx.model.graph.num_classes(d.fx.size).unwrap();
    let mut scorer = Scorer::new(&ctx, &d.fx.model, d.fx.size, 16).unwrap();
    let rows: Vec<MapRow> = (0..d.n)
        .map(|i| MapRow {
            input: d.input(i),
            cam: d.cam(i),
            class: d.targets[i],
            id: i as u64,
        })
        .collect();
    let cfg = FaithConfig {
        imputer: NoisyLinearImputer {
            noise: 0.0,
            seed: 0,
        },
        ..Default::default()
    };
    assert_eq!(cfg.tc_steps, 20);
    let cap = scorer.capacity();
    let got = faithful::measure(&rows, d.fx.size, &cfg, cap, classes, &mut |x, r| {
        scorer.probabilities_of(x, r)
    })
    .unwrap();

    let mut errors = Vec::new();
    let mut check = |name: &str, v: Vec<f64>| {
        errors.push((name.to_string(), worst(name, &v, &d.fx.f32s(name))));
    };
    let curve = |i: usize| got[i].road.as_ref().unwrap();
    for (j, p) in PERCENTILES.iter().enumerate() {
        let at = |least: bool| -> Vec<f64> {
            (0..d.n)
                .map(|i| {
                    let c = curve(i);
                    let k = c.percentiles.iter().position(|q| q == p).unwrap();
                    if least { c.lerf[k] } else { c.morf[k] }
                })
                .collect()
        };
        assert_eq!(PERCENTILES[j], *p);
        check(&format!("road.morf.{p}"), at(false));
        check(&format!("road.lerf.{p}"), at(true));
    }
    let all = |f: &dyn Fn(usize) -> f64| (0..d.n).map(f).collect::<Vec<f64>>();
    check(
        "road.morf_avg",
        all(&|i| curve(i).morf_average(&PERCENTILES)),
    );
    check(
        "road.lerf_avg",
        all(&|i| curve(i).lerf_average(&PERCENTILES)),
    );
    check("road.combined", all(&|i| curve(i).combined(&PERCENTILES)));
    check("cam_mult", all(&|i| got[i].cam_mult));
    check("tc.deletion", all(&|i| got[i].tc.unwrap().0));
    check("tc.insertion", all(&|i| got[i].tc.unwrap().1));

    // ARCC from the stored coherency maps (pgc GradCAM on input ⊙ map).
    let mixed = d.fx.f32s("arcc.mixed_cams");
    let coh = |i: usize| arcc::coherency(&mixed[i * d.plane..(i + 1) * d.plane], d.cam(i));
    check("arcc.complexity", all(&|i| arcc::complexity(d.cam(i))));
    check("arcc.coherency", all(&coh));
    check("arcc.road", all(&|i| curve(i).combined(&arcc::PERCENTILES)));
    check(
        "arcc",
        all(&|i| {
            arcc::arcc(
                arcc::complexity(d.cam(i)),
                coh(i),
                curve(i).combined(&arcc::PERCENTILES),
            )
        }),
    );
    let bad: Vec<_> = errors.iter().filter(|(_, e)| *e > TOLERANCE).collect();
    assert!(bad.is_empty(), "over {TOLERANCE}: {bad:?}");
    assert!(errors.len() >= 27);
}

/// The engine's Grad-CAM on the mixed inputs is pgc's (coherency's second map, as `gradcam
/// eval` computes it), within the methods' 1e-3. The fixture's targets are softmax scores
/// (`gradcam eval` explains the logit, for the original and the mixed maps alike).
#[test]
fn arcc_mixed_maps_come_from_the_method() {
    let d = data();
    let ctx = GpuContext::new().unwrap();
    let mut engine = Engine::new(
        ctx,
        &d.fx.model,
        EngineConfig {
            layers: vec![d.fx.meta["layer"].clone()],
            method: Method::GradCam,
            score: Score::Softmax,
            size: d.fx.size,
            batch: 2, // a partial last batch
            targets: TargetSpec::PerImage(1),
            read_maps: true,
            ..Default::default()
        },
    )
    .unwrap();
    let mixed: Vec<Vec<f32>> = (0..d.n)
        .map(|i| faithful::mult(d.input(i), d.cam(i)))
        .collect();
    let got = arcc::mixed_maps(&mut engine, &mixed, &d.targets).unwrap();
    let want = d.fx.f32s("arcc.mixed_cams");
    let e = got
        .concat()
        .iter()
        .zip(&want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    println!("mixed maps: max abs error {e:.2e}");
    assert!(e < 1e-3, "{e}");
}

#[test]
fn torchcam_counts_follow_its_step_rule() {
    // 32 x 40 = 1280 positions, steps 20: step 64, 21 points.
    assert_eq!(torchcam::counts(1280, 20).len(), 21);
}
