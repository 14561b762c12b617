//! Conv autotuning: tuned engines match untuned ones, the cache spares later runs, a bad
//! cache is ignored and rewritten, choices respect the device's limits, and the CLI.

use gradcam_wgpu::ops::conv::{ConvShape, ConvVariant, ConvWeight};
use gradcam_wgpu::tune::{
    Pick, Source, Tune, TuneCache, candidates, conv_key, graph_convs, layout_of, tune_convs,
};
use gradcam_wgpu::{Engine, EngineConfig, GpuContext, Model};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// One device for the binary (lavapipe's start-up is slow).
fn ctx() -> &'static GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    CTX.get_or_init(|| GpuContext::new().expect("a wgpu adapter"))
}

fn conv(in_c: usize, hw: usize, out_c: usize, k: usize, stride: usize, batch: usize) -> ConvShape {
    ConvShape {
        batch,
        in_c,
        in_h: hw,
        in_w: hw + 1,
        out_c,
        kernel: [k, k],
        stride: [stride, stride],
        padding: [k / 2, k / 2],
        padding_end: [k / 2, k / 2],
        dilation: [1, 1],
        groups: 1,
    }
}

fn small_convs() -> Vec<(String, ConvShape)> {
    vec![
        ("a".into(), conv(16, 9, 24, 3, 1, 2)),
        ("b".into(), conv(3, 11, 8, 3, 2, 2)),
    ]
}

const SIZE: [usize; 2] = [48, 48];
const BATCH: usize = 2;

fn images() -> Vec<image::RgbImage> {
    (0..3)
        .map(|i| {
            image::RgbImage::from_fn(SIZE[1] as u32, SIZE[0] as u32, |x, y| {
                image::Rgb([(x * 5) as u8, (y * 5) as u8, 70 * i as u8])
            })
        })
        .collect()
}

fn explain(
    model: &Model,
    tune: Tune,
    winograd: bool,
) -> (Vec<gradcam_wgpu::ImageResult>, gradcam_wgpu::tune::Tuning) {
    let cfg = EngineConfig {
        size: SIZE,
        batch: BATCH,
        mean: model.mean,
        std: model.std,
        read_maps: true,
        tune,
        winograd,
        ..EngineConfig::default()
    };
    let mut engine = Engine::new(ctx().clone(), model, cfg).unwrap();
    (engine.explain(&images()).unwrap(), engine.tuning().clone())
}

/// Every conv of the shapes model forced onto `pick` where it can run it (through a cache
/// the engine reads): outputs equal the untuned engine's within today's tolerances.
#[test]
fn tuned_engines_match_the_untuned_one() {
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: only this test reads the variable, set before its engines.
    unsafe { std::env::set_var("GRADCAM_PIPELINE_CACHE", dir.path()) };
    let model = Model::shapes().unwrap();
    let (want, t) = explain(&model, Tune::Off, false);
    assert!(t.convs.is_empty() && t.measurements == 0);
    let convs = graph_convs(&model.graph, SIZE, BATCH).unwrap();
    for pick in [
        Pick::Blocked,
        Pick::Tiled,
        Pick::Subgroup,
        Pick::Texture,
        Pick::Winograd,
    ] {
        let mut cache = TuneCache::open_in(ctx(), dir.path());
        for (_, s) in &convs {
            for backward in [false, true] {
                let c = candidates(ctx(), s, backward, true);
                let p = if c.contains(&pick) { pick } else { c[0] };
                cache.insert(conv_key(s, backward), p, Default::default());
            }
        }
        cache.save();
        // Winograd is opt-in (`--winograd`, which also forces it on the wider convs).
        let winograd = pick == Pick::Winograd;
        let (got, t) = explain(&model, Tune::Full, winograd);
        assert_eq!(
            t.measurements, 0,
            "{pick:?}: everything came from the cache"
        );
        assert!(
            t.convs
                .iter()
                .all(|c| c.source == Source::Cache || (winograd && c.source == Source::Forced)),
            "{pick:?}"
        );
        for (w, g) in want.iter().zip(&got) {
            for (a, b) in w.logits.iter().zip(&g.logits) {
                assert!(
                    (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                    "{pick:?}: logit {a} vs {b}"
                );
            }
            for (tw, tg) in w.targets.iter().zip(&g.targets) {
                assert_eq!(tw.class, tg.class);
                let (mw, mg) = (tw.map.as_ref().unwrap(), tg.map.as_ref().unwrap());
                let worst = mw
                    .iter()
                    .zip(mg)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(worst <= 1e-4, "{pick:?}: map differs by {worst}");
            }
        }
    }
}

#[test]
fn a_second_run_tunes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let convs = small_convs();
    let mut cache = TuneCache::open_in(ctx(), dir.path());
    let first = pollster::block_on(tune_convs(ctx(), &convs, Tune::Full, false, &mut cache));
    assert!(first.measurements > 0);
    assert_eq!(first.convs.len(), 4, "two convs, two directions");
    assert!(first.convs.iter().all(|c| c.source == Source::Measured));
    let mut cache = TuneCache::open_in(ctx(), dir.path());
    let second = pollster::block_on(tune_convs(ctx(), &convs, Tune::Full, false, &mut cache));
    assert_eq!(second.measurements, 0);
    assert!(second.convs.iter().all(|c| c.source == Source::Cache));
    for (a, b) in first.convs.iter().zip(&second.convs) {
        assert_eq!((&a.key, a.pick), (&b.key, b.pick));
    }
    // Fast tunes the forward passes only, and finds them cached too.
    let mut cache = TuneCache::open_in(ctx(), dir.path());
    let fast = pollster::block_on(tune_convs(ctx(), &convs, Tune::Fast, false, &mut cache));
    assert_eq!((fast.measurements, fast.convs.len()), (0, 2));
}

#[test]
fn a_corrupt_or_stale_cache_is_ignored_and_rewritten() {
    let dir = tempfile::tempdir().unwrap();
    let convs = small_convs();
    let path: PathBuf = TuneCache::open_in(ctx(), dir.path()).path().unwrap().into();
    let stale = r#"{"version": 0, "adapter": "x", "convs": {}}"#;
    for bad in ["{not json", stale] {
        std::fs::write(&path, bad).unwrap();
        let mut cache = TuneCache::open_in(ctx(), dir.path());
        let t = pollster::block_on(tune_convs(ctx(), &convs, Tune::Fast, false, &mut cache));
        assert!(t.measurements > 0, "nothing read from {bad:?}");
        let text = std::fs::read_to_string(&path).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["convs"].as_object().unwrap().len(), 2, "{text}");
    }
}

/// Cramped limits: nothing tuned picks a kernel the device can't run, and every pick uploads.
#[test]
fn choices_respect_the_device_limits() {
    // Small activations, so the 18 KiB binding below still holds them.
    let narrow = conv(64, 4, 64, 3, 1, 2);
    let s = conv(64, 20, 64, 3, 1, 2);
    let mut small = ctx().clone();
    // Two Quad blocks of weights per binding; no 32-channel block.
    small.max_binding = (64 * 9 * 4 * 4 * 2) as u64;
    let mut cramped = ctx().clone();
    // One image of the packed input (16 texels x 420 pixels) exceeds one texture row.
    cramped.max_texture_rows = 1;
    let picks = candidates(&small, &narrow, false, true);
    assert!(!picks.contains(&Pick::Subgroup) && picks.contains(&Pick::Blocked));
    let picks = candidates(&cramped, &s, false, true);
    assert!(!picks.contains(&Pick::Texture) && !picks.contains(&Pick::Winograd));
    for (c, s) in [(&small, narrow), (&cramped, s)] {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = TuneCache::open_in(c, dir.path());
        let convs = vec![("c".to_string(), s)];
        let t = pollster::block_on(tune_convs(c, &convs, Tune::Full, false, &mut cache));
        let mut variants = [ConvVariant::Blocked; 2];
        let mut winograd = false;
        for (i, row) in t.convs.iter().enumerate() {
            assert!(
                candidates(c, &s, i == 1, false).contains(&row.pick),
                "{row:?}"
            );
            variants[i] = match row.pick {
                Pick::Blocked => ConvVariant::Blocked,
                Pick::Tiled => ConvVariant::Tiled,
                Pick::Subgroup => ConvVariant::Subgroup,
                Pick::Texture | Pick::Winograd => ConvVariant::Texture,
            };
            winograd |= row.pick == Pick::Winograd;
        }
        let w = vec![0.5; s.weight_len()];
        let weight = ConvWeight::upload_tuned(c, "w", &w, &s, variants, winograd).unwrap();
        assert_eq!(weight.layout, layout_of(t.convs[0].pick));
        assert_eq!(weight.backward_layout, layout_of(t.convs[1].pick));
    }
}

fn gradcam(args: &[&str], cache: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gradcam"))
        .args(args)
        .env("GRADCAM_PIPELINE_CACHE", cache)
        .output()
        .unwrap()
}

#[test]
fn cli_tune_flag_and_subcommand() {
    let dir = tempfile::tempdir().unwrap();
    let bench = ["bench", "--model", "shapes", "--size", "32", "--batch", "2"];
    let quick = ["--iters", "1", "--warmup", "0", "--no-profile", "--tune"];
    for mode in ["off", "fast", "full"] {
        let args: Vec<&str> = bench.iter().chain(&quick).copied().chain([mode]).collect();
        let o = gradcam(&args, dir.path());
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success(),
            "{mode}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.contains(&format!("tuning    {mode}")), "{out}");
    }
    let args: Vec<&str> = bench
        .iter()
        .chain(&quick)
        .copied()
        .chain(["fastest"])
        .collect();
    assert_eq!(gradcam(&args, dir.path()).status.code(), Some(2));

    let tune = ["tune", "--model", "shapes", "--size", "40", "--batch", "1"];
    let o = gradcam(&tune, dir.path());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("measured") && out.contains("layer"), "{out}");
    let o = gradcam(&tune, dir.path());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains(" 0 measurements") && !out.contains("measured"),
        "{out}"
    );
}
