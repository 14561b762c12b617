//! `gradcam bench --json`: the report's fields and their consistency, and bad arguments.
//! (Speed itself is measured in benches, never asserted here.)

use gradcam_wgpu::gpu::{Profiler, buffer};
use gradcam_wgpu::{Engine, EngineConfig, GpuContext, Model};
use std::process::{Command, Output};

fn gradcam(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gradcam"))
        .args(args)
        .output()
        .expect("run gradcam")
}

fn f(v: &serde_json::Value, path: &[&str]) -> f64 {
    let mut x = v;
    for p in path {
        x = &x[*p];
    }
    x.as_f64()
        .unwrap_or_else(|| panic!("{} is not a number in {v}", path.join(".")))
}

#[test]
fn bench_json_reports_throughput_profile_and_memory() {
    // The adapter's fixed kernels: tuned picks on 4x4 planes are timing noise, and one that
    // writes no twin (blocked) leaves its consumer packing.
    let o = gradcam(&[
        "bench", "--json", "--model", "shapes", "--size", "32", "--batch", "2", "--iters", "2",
        "--warmup", "1", "--tune", "off",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");

    assert!(!r["adapter"]["name"].as_str().unwrap().is_empty(), "{r}");
    assert!(r["adapter"]["backend"].is_string() && r["adapter"]["device_type"].is_string());
    assert_eq!(r["model"]["source"], "bundled");
    assert_eq!(r["model"]["input_size"], serde_json::json!([32, 32]));
    assert_eq!(r["method"], "gradcam");
    assert_eq!(r["batch"], 2);
    assert_eq!(r["iters"], 2);
    for t in ["end_to_end", "compute"] {
        let ips = f(&r, &[t, "images_per_second"]);
        let spb = f(&r, &[t, "seconds_per_batch"]);
        assert!(ips > 0.0 && ips.is_finite(), "{t}: {r}");
        // images/s is the batch over the mean batch time.
        assert!((ips * spb - 2.0).abs() < 1e-6, "{t}: {r}");
        assert!(
            f(&r, &[t, "min_seconds_per_batch"]) <= spb + 1e-12,
            "{t}: {r}"
        );
    }

    // lavapipe has TIMESTAMP_QUERY, so there is a profile.
    let p = &r["profile"];
    let kernels = p["kernels"].as_array().expect("profile.kernels");
    assert!(!kernels.is_empty(), "{r}");
    let total = f(p, &["gpu_seconds_per_batch"]);
    let sum: f64 = kernels.iter().map(|k| f(k, &["seconds_per_batch"])).sum();
    assert!((sum - total).abs() <= 1e-9 + 1e-6 * total, "{r}");
    let shares: f64 = kernels.iter().map(|k| f(k, &["share"])).sum();
    assert!((shares - 1.0).abs() < 1e-6, "{r}");
    // The timed GPU work fits in the wall time of a GPU-only batch (profiled batches run
    // one pass per dispatch, hence the slack).
    let compute = f(&r, &["compute", "seconds_per_batch"]);
    assert!(
        total > 0.0 && total < 3.0 * compute + 0.05,
        "{total} vs {compute}: {r}"
    );
    // The shapes model's convs: 102 MFLOP per image at 128x128, so 6.4 MFLOP at 32x32, and
    // Grad-CAM adds the backward above layer3 (none: layer3 feeds the pool) plus the fc.
    let fpi = f(p, &["flops_per_image"]);
    assert!(fpi > 5.0e6 && fpi < 8.0e6, "{fpi}: {r}");
    let conv = kernels
        .iter()
        .find(|k| {
            k["kernel"].as_str().unwrap().starts_with("conv_")
                && k["flops_per_batch"].as_f64() > Some(0.0)
        })
        .expect("a conv kernel that computes (not a packing one)");
    assert!(f(conv, &["gflops_per_second"]) > 0.0, "{r}");
    // Where the convs run on the texture kernel (lavapipe), each reads its input's twin,
    // written by the producer as it stores: nothing repacks activations between layers.
    let names: Vec<&str> = kernels
        .iter()
        .map(|k| k["kernel"].as_str().unwrap())
        .collect();
    if names.contains(&"conv_texture") {
        assert!(
            !names.iter().any(|n| n.starts_with("conv_pack")),
            "{names:?}"
        );
    }
    assert!(conv["peak_fraction"].is_null(), "no --peak-gflops given");

    let mem = &r["memory"];
    assert!(f(mem, &["peak"]) >= f(mem, &["live"]), "{r}");
    // The shapes model's weights alone are 1.5 MB.
    assert!(f(mem, &["peak"]) > 1.5e6, "{r}");
}

#[test]
fn bench_rejects_bad_method_and_arch() {
    let o = gradcam(&["bench", "--json", "--method", "nosuchcam"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("nosuchcam"));

    let o = gradcam(&["bench", "--json", "--arch", "resnet7", "--random-weights"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("resnet7"), "{err}");
    assert!(o.stdout.is_empty());

    let o = gradcam(&["bench", "--arch", "resnet18"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--random-weights"));
}

#[test]
fn profiling_leaves_results_unchanged_and_memory_is_tracked() {
    let ctx = GpuContext::new().unwrap();
    let start = ctx.memory();
    let model = Model::shapes().unwrap();
    let cfg = EngineConfig {
        size: [32, 32],
        batch: 2,
        mean: model.mean,
        std: model.std,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(ctx.clone(), &model, cfg).unwrap();
    let images: Vec<image::RgbImage> = (0..2)
        .map(|i| {
            image::RgbImage::from_fn(32, 32, |x, y| {
                image::Rgb([(x * 8) as u8, (y * 8) as u8, 60 * i])
            })
        })
        .collect();
    let plain = engine.explain(&images).unwrap();
    let mem = ctx.memory();
    // The shapes model's weights alone are 1.5 MB; the peak includes the readback staging.
    assert!(mem.live > start.live + 1_500_000, "{start:?} -> {mem:?}");
    assert!(mem.peak >= mem.live, "{mem:?}");

    assert!(engine.set_profiler(Profiler::new(&ctx)).is_none());
    let profiled = engine.explain(&images).unwrap();
    engine
        .profiler_mut()
        .expect("lavapipe has timestamps")
        .collect()
        .unwrap();
    let kernels = engine.set_profiler(None).unwrap().kernels();
    for (a, b) in plain.iter().zip(&profiled) {
        assert_eq!(a.logits, b.logits);
        assert_eq!(a.targets[0].class, b.targets[0].class);
        assert_eq!(a.targets[0].overlay, b.targets[0].overlay);
    }
    // Sorted by time; the convs state their FLOPs, the overlay kernel none.
    assert!(
        kernels.windows(2).all(|w| w[0].seconds >= w[1].seconds),
        "{kernels:?}"
    );
    assert!(
        kernels.iter().all(|k| k.calls > 0 && k.seconds >= 0.0),
        "{kernels:?}"
    );
    let flops: u64 = kernels.iter().map(|k| k.flops).sum();
    assert!(
        kernels
            .iter()
            .any(|k| k.kernel.starts_with("conv_") && k.flops > 0),
        "{kernels:?}"
    );
    // 102 MFLOP per 128x128 image, so 6.4 MFLOP per 32x32 image (plus the tiny fc), x2.
    assert!((12_000_000..14_000_000).contains(&flops), "{flops}");

    // A buffer raises live and peak; dropping it lowers live only.
    let big = buffer::storage(&ctx, "big", 64 << 20);
    let with = ctx.memory();
    assert!(with.live >= mem.live + (64 << 20), "{mem:?} -> {with:?}");
    assert!(with.peak >= with.live);
    drop(big);
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .unwrap();
    let after = ctx.memory();
    assert!(
        after.live + (64 << 20) <= with.live,
        "{with:?} -> {after:?}"
    );
    assert_eq!(after.peak, with.peak.max(after.live));
}

/// `bench` without `--model` runs the bundled ImageNet model; `--model shapes` the shapes one.
#[test]
fn bench_defaults_to_the_bundled_model() {
    let run = |extra: &[&str]| {
        let mut args = vec![
            "bench",
            "--json",
            "--size",
            "32",
            "--batch",
            "1",
            "--iters",
            "1",
            "--warmup",
            "0",
            "--no-profile",
        ];
        args.extend_from_slice(extra);
        let o = gradcam(&args);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        (r["model"]["name"].clone(), r["model"]["source"].clone())
    };
    assert_eq!(run(&[]), ("efficientnet-lite0".into(), "bundled".into()));
    assert_eq!(
        run(&["--model", "shapes"]),
        ("shapes-resnet".into(), "bundled".into())
    );
}
