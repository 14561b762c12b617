//! `gradcam eval` on the shipped split with the shapes model (eval's default): the device pipeline agrees
//! with a host recomputation from read-back maps, and the numbers mean something (Grad-CAM
//! beats the random baseline, deletion falls faster than insertion rises).

use gradcam_wgpu::eval::dataset::{Dataset, Item, load_item};
use gradcam_wgpu::eval::{EvalConfig, Evaluator, Source, metrics};
use gradcam_wgpu::{Engine, EngineConfig, GpuContext, Model, TargetSpec, engine::Method};
use std::path::Path;

fn dataset() -> Dataset {
    Dataset::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/shapes-eval")).unwrap()
}

/// Every `stride`-th image of each kind, `count` of each.
fn subset(ds: &Dataset, count: usize) -> Vec<&Item> {
    let mut v = Vec::new();
    for k in 1..=2 {
        v.extend(
            ds.images
                .iter()
                .filter(|i| i.objects.len() == k)
                .step_by(7)
                .take(count),
        );
    }
    v
}

#[test]
fn device_metrics_match_a_host_recomputation() {
    let model = Model::shapes().unwrap();
    let ds = dataset();
    let items = subset(&ds, 12);
    let ctx = GpuContext::new().unwrap();
    let cfg = EvalConfig {
        batch: 5, // several batches, one partial
        steps: 4,
        score_rows: 16,
        ..Default::default()
    };
    let mut ev = Evaluator::new(&ctx, &model, &ds, items.clone(), cfg).unwrap();
    let r = ev.run(Source::Method(Method::GradCam)).unwrap();

    // Host: read the maps back through the library path and recompute the pointing game
    // and class discrimination.
    let size = model.input_size;
    let [h, w] = size;
    let tol = metrics::pointing_tolerance(size);
    let (mut single, mut single_hits, mut two, mut two_hits, mut disc) = (0, 0, 0, 0, 0);
    for k in 1..=2 {
        let mut engine = Engine::new(
            ctx.clone(),
            &model,
            EngineConfig {
                size,
                mean: model.mean,
                std: model.std,
                targets: TargetSpec::PerImage(k),
                read_maps: true,
                ..Default::default()
            },
        )
        .unwrap();
        for item in items.iter().filter(|i| i.objects.len() == k) {
            let (img, objs) = load_item(&ds, item, size).unwrap();
            let classes = vec![objs.iter().map(|o| o.class).collect::<Vec<_>>()];
            let res = engine.explain_for(&[img], &classes).unwrap();
            for (t, o) in objs.iter().enumerate() {
                let map = res[0].targets[t].map.as_ref().unwrap();
                let at = (0..h * w)
                    .max_by(|&a, &b| map[a].total_cmp(&map[b]).then(b.cmp(&a)))
                    .unwrap();
                let hit = metrics::pointing_hit([(at % w) as u32, (at / w) as u32], o.bbox, tol);
                let mass = |b: [u32; 4]| -> f64 {
                    let mut s = 0.0;
                    for y in b[1]..b[3] {
                        for x in b[0]..b[2] {
                            s += map[y as usize * w + x as usize] as f64;
                        }
                    }
                    s
                };
                if k == 1 {
                    single += 1;
                    single_hits += hit as usize;
                } else {
                    two += 1;
                    two_hits += hit as usize;
                    disc += (mass(o.bbox) > mass(objs[1 - t].bbox)) as usize;
                }
            }
        }
    }
    let pct = |a: usize, b: usize| 100.0 * a as f64 / b as f64;
    eprintln!("{}", metrics::table(std::slice::from_ref(&r)));
    assert_eq!(r.maps, single + two);
    assert_eq!(r.pointing_single, pct(single_hits, single));
    assert_eq!(r.pointing_two, pct(two_hits, two));
    assert_eq!(r.discrimination, pct(disc, two));
    // A trained model's Grad-CAM finds the objects; deletion hurts more than insertion.
    assert!(r.pointing_single >= 80.0 && r.pointing_two >= 80.0, "{r:?}");
    let (del, ins) = (r.deletion_auc.unwrap(), r.insertion_auc.unwrap());
    assert!(del < ins, "deletion {del} vs insertion {ins}");
    assert!((0.0..=100.0).contains(&r.average_drop), "{r:?}");
}

#[test]
fn baselines_score_below_gradcam() {
    let model = Model::shapes().unwrap();
    let ds = dataset();
    let items = subset(&ds, 10);
    let ctx = GpuContext::new().unwrap();
    let cfg = EvalConfig {
        steps: 0,
        ..Default::default()
    };
    let mut ev = Evaluator::new(&ctx, &model, &ds, items, cfg).unwrap();
    let cam = ev.run(Source::Method(Method::GradCam)).unwrap();
    let random = ev.run(Source::Random).unwrap();
    let gauss = ev.run(Source::CenterGaussian).unwrap();
    eprintln!(
        "{}",
        metrics::table(&[cam.clone(), random.clone(), gauss.clone()])
    );
    assert!(cam.deletion_auc.is_none());
    assert!(random.pointing_single < cam.pointing_single, "{random:?}");
    assert!(
        gauss.discrimination <= 60.0,
        "one map for both classes: {gauss:?}"
    );
    assert!(cam.discrimination > gauss.discrimination);
}

#[test]
fn a_dataset_with_a_broken_image_reports_it_and_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/shapes-eval");
    let ds = dataset();
    std::fs::create_dir(tmp.path().join("images")).unwrap();
    let mut json = serde_json::json!({"version": 1, "classes": ds.classes, "images": []});
    for (i, item) in ds.images.iter().take(3).enumerate() {
        let dst = tmp.path().join(&item.file);
        if i == 1 {
            std::fs::write(&dst, b"not a png").unwrap();
        } else {
            std::fs::copy(src.join(&item.file), &dst).unwrap();
        }
        json["images"].as_array_mut().unwrap().push(serde_json::json!({
            "file": item.file,
            "objects": item.objects.iter().map(|o| serde_json::json!({"class": o.class, "box": o.bbox})).collect::<Vec<_>>(),
        }));
    }
    std::fs::write(tmp.path().join("boxes.json"), json.to_string()).unwrap();
    let ds = Dataset::load(tmp.path()).unwrap();
    let model = Model::shapes().unwrap();
    let ctx = GpuContext::new().unwrap();
    let cfg = EvalConfig {
        steps: 0,
        ..Default::default()
    };
    let mut ev = Evaluator::new(&ctx, &model, &ds, ds.images.iter().collect(), cfg).unwrap();
    let r = ev.run(Source::Method(Method::GradCam)).unwrap();
    assert_eq!(r.failed_images, 1);
    assert_eq!(
        r.maps,
        ds.images[0].objects.len() + ds.images[2].objects.len()
    );

    let bad = serde_json::json!({"version": 1, "classes": ["a"], "images": [
        {"file": "x.png", "objects": [{"class": 4, "box": [0, 0, 3, 3]}]}]});
    std::fs::write(tmp.path().join("boxes.json"), bad.to_string()).unwrap();
    let e = Dataset::load(tmp.path()).unwrap_err().to_string();
    assert!(e.contains("boxes.json") && e.contains("x.png"), "{e}");
}

/// `gradcam eval`'s default model is the shapes model its benchmark was made for, not the
/// bundled ImageNet one.
#[test]
fn the_cli_evaluates_the_shapes_model_by_default() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/shapes-eval");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_gradcam"))
        .args(["eval", "--data", data.to_str().unwrap()])
        .args(["--limit", "2", "--steps", "2", "--no-baselines", "--json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("shapes-resnet: 2 images"), "{err}");
}

/// The reference implementations' metrics through the evaluator: every column is filled for
/// a CAM method (ARCC only there), Grad-CAM's ROAD beats the random map's, and the per-map
/// ROAD noise is seeded (two runs agree).
#[test]
fn reference_metrics_fill_their_columns() {
    use gradcam_wgpu::eval::faithful::FaithConfig;
    let model = Model::shapes().unwrap();
    let ds = dataset();
    let items = subset(&ds, 3);
    let ctx = GpuContext::new().unwrap();
    let cfg = EvalConfig {
        batch: 4,
        steps: 0,
        faith: Some(FaithConfig {
            road_percentiles: vec![30, 70],
            tc_steps: 4,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut ev = Evaluator::new(&ctx, &model, &ds, items, cfg).unwrap();
    let cam = ev.run(Source::Method(Method::GradCam)).unwrap();
    let again = ev.run(Source::Method(Method::GradCam)).unwrap();
    let random = ev.run(Source::Random).unwrap();
    eprintln!("{}", metrics::table(&[cam.clone(), random.clone()]));
    let road = cam.road.as_ref().unwrap();
    assert_eq!(road.percentiles, vec![30, 70]);
    assert_eq!(road.morf.len(), 2);
    assert!((road.combined - (road.lerf_average - road.morf_average) / 2.0).abs() < 1e-12);
    assert_eq!(road.combined, again.road.as_ref().unwrap().combined);
    assert!(
        road.combined > random.road.as_ref().unwrap().combined,
        "{cam:?} {random:?}"
    );
    let arcc = cam.arcc.unwrap();
    assert!((0.0..=1.0).contains(&arcc), "{arcc}");
    assert!(random.arcc.is_none());
    let (d, i) = (cam.tc_deletion_auc.unwrap(), cam.tc_insertion_auc.unwrap());
    assert!(d < i, "torch-cam deletion {d} vs insertion {i}");
    assert!(cam.confidence_change.unwrap().is_finite());
}

/// Bad reference-metric flags are exit 2 with the flag named; the JSON carries the columns.
#[test]
fn the_cli_checks_and_reports_the_reference_metrics() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/shapes-eval");
    let eval = |extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_gradcam"))
            .args(["eval", "--data", data.to_str().unwrap()])
            .args(["--limit", "1", "--steps", "0", "--no-baselines", "--json"])
            .args(extra)
            .output()
            .unwrap()
    };
    for (args, flag) in [
        (&["--road-percentiles", "0,50"][..], "--road-percentiles"),
        (&["--road-percentiles", "100"][..], "--road-percentiles"),
        (&["--road-percentiles", "5,x"][..], "--road-percentiles"),
        (&["--road-noise=-0.5"][..], "--road-noise"),
        (&["--road-noise", "NaN"][..], "--road-noise"),
        (&["--tc-steps", "100000"][..], "--tc-steps"),
    ] {
        let o = eval(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?}: {err}");
    }
    let o = eval(&["--road-percentiles", "50", "--tc-steps", "2", "--no-arcc"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let row = &v[0];
    assert_eq!(row["road"]["percentiles"], serde_json::json!([50]));
    assert!(row["road"]["combined"].is_number(), "{row}");
    assert!(row["tc_deletion_auc"].is_number() && row["confidence_change"].is_number());
    assert!(row["arcc"].is_null(), "--no-arcc: {row}");
    let o = eval(&["--no-reference-metrics"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v[0]["road"].is_null() && v[0]["tc_deletion_auc"].is_null());
}
