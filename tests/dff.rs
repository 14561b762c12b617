//! Deep Feature Factorization against pytorch-grad-cam 1.5.7 and sklearn 1.9.1
//! (tests/fixtures/methods/dff.safetensors from tools/make_dff_fixture.py): numpy's legacy
//! gauss draws, sklearn's NMF in f32 and f64, pgc's dff() maps, concept labels and overlay,
//! and the activations read back from the device.

mod fixture;

use fixture::Fixture;
use gradcam_wgpu::dff::nmf::{NmfConfig, nmf};
use gradcam_wgpu::dff::random::LegacyRandom;
use gradcam_wgpu::dff::{ConceptHead, factorize, overlay, softmax};
use gradcam_wgpu::{Engine, EngineConfig, GpuContext};
use std::collections::BTreeMap;

/// pgc's maps after its normalisation (the bar).
const MAP_TOLERANCE: f32 = 1e-3;

fn load() -> Fixture {
    Fixture::load("methods/dff.safetensors")
}

fn f64s(fx: &Fixture, name: &str) -> Vec<f64> {
    let st = safetensors::SafeTensors::deserialize(&fx.bytes).unwrap();
    bytemuck::pod_collect_to_vec(st.tensor(name).unwrap().data())
}

fn shape(fx: &Fixture, name: &str) -> Vec<usize> {
    let st = safetensors::SafeTensors::deserialize(&fx.bytes).unwrap();
    st.tensor(name).unwrap().shape().to_vec()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Largest error relative to the largest magnitude of `want`.
fn max_rel(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    max_abs(got, want) / scale
}

fn cases(fx: &Fixture) -> BTreeMap<String, usize> {
    serde_json::from_str(&fx.meta["cases"]).unwrap()
}

fn n_iter(fx: &Fixture, key: &str) -> usize {
    let m: BTreeMap<String, usize> = serde_json::from_str(&fx.meta["n_iter"]).unwrap();
    m[key]
}

#[test]
fn legacy_gauss_matches_numpy_random_state() {
    let fx = load();
    let want = f64s(&fx, "randn");
    let mut rng = LegacyRandom::new(0);
    for (i, w) in want.iter().enumerate() {
        let g = rng.gauss();
        assert!(
            (g - w).abs() <= 1e-15 * w.abs().max(1.0),
            "draw {i}: {g} vs {w}"
        );
    }
}

#[test]
fn nmf_matches_sklearn_in_f32_and_f64() {
    let fx = load();
    let [rows, cols] = shape(&fx, "nmf.x")[..] else {
        panic!("nmf.x is 2-d")
    };
    let cfg = NmfConfig::new(3);
    let f = nmf(&fx.f32s("nmf.x"), rows, cols, &cfg).unwrap();
    assert_eq!(f.iterations, n_iter(&fx, "nmf"));
    let (ew, eh) = (
        max_rel(&f.w, &fx.f32s("nmf.w")),
        max_rel(&f.h, &fx.f32s("nmf.h")),
    );
    eprintln!("f32 NMF: W {ew:.1e}, H {eh:.1e} (relative)");
    assert!(ew < 1e-4 && eh < 1e-4, "f32: W {ew:.2e} H {eh:.2e}");
    let f = nmf(&f64s(&fx, "nmf64.x"), rows, cols, &cfg).unwrap();
    assert_eq!(f.iterations, n_iter(&fx, "nmf64"));
    for (got, key) in [(&f.w, "nmf64.w"), (&f.h, "nmf64.h")] {
        let want = f64s(&fx, key);
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        eprintln!("f64 NMF {key}: {err:.1e}");
        assert!(err < 1e-10, "{key}: {err:.2e}");
    }
}

#[test]
fn factorization_matches_pgc_dff() {
    let fx = load();
    for (layer, k) in cases(&fx) {
        let p = format!("dff.{layer}.");
        let dims = shape(&fx, &(p.clone() + "acts"));
        let f = factorize(
            &fx.f32s(&(p.clone() + "acts")),
            dims[0],
            [dims[1], dims[2], dims[3]],
            k,
        )
        .unwrap();
        assert_eq!(f.iterations, n_iter(&fx, &layer), "{layer}: iterations");
        let ec = max_rel(&f.concepts, &fx.f32s(&(p.clone() + "concepts")));
        let em = max_abs(&f.maps(fx.size), &fx.f32s(&(p.clone() + "maps")));
        eprintln!("{layer} K={k}: concepts {ec:.1e} (relative), maps {em:.1e}");
        assert!(ec < 1e-3, "{layer}: concepts {ec:.2e}");
        assert!(em < MAP_TOLERANCE, "{layer}: maps {em:.2e}");
    }
}

#[test]
fn concept_labels_and_overlay_match_pgc() {
    let fx = load();
    let k = cases(&fx)["layer4"];
    let g = &fx.model.graph;
    let layer = g.find("layer4").unwrap();
    let head = ConceptHead::new(g, layer, fx.size).unwrap();
    let concepts = fx.f32s("dff.layer4.concepts");
    let c = concepts.len() / k;
    let vectors: Vec<f32> = (0..k)
        .flat_map(|t| (0..c).map(|ch| concepts[ch * k + t]).collect::<Vec<_>>())
        .collect();
    let outputs = head.outputs(g, &fx.model.weights, &vectors).unwrap();
    let eo = max_rel(&outputs, &fx.f32s("dff.layer4.outputs"));
    let classes = outputs.len() / k;
    let es = max_abs(&softmax(&outputs, classes), &fx.f32s("dff.layer4.scores"));
    eprintln!("head outputs {eo:.1e} (relative), scores {es:.1e}");
    assert!(eo < 1e-4 && es < 1e-5, "outputs {eo:.2e} scores {es:.2e}");
    // No head after layer3 (it feeds layer4, not a pool).
    let err = ConceptHead::new(g, g.find("layer3").unwrap(), fx.size)
        .err()
        .expect("layer3 has no head")
        .to_string();
    assert!(err.contains("global average pool"), "{err}");
    // The overlay from pgc's own maps: exact (OpenCV's SIMD HSV path truncates).
    let maps = fx.f32s("dff.layer4.maps");
    let want = fx.u8s("dff.layer4.overlay");
    let plane = fx.size[0] * fx.size[1];
    let mut off = 0;
    for (i, img) in fx.images.iter().enumerate() {
        let got =
            overlay::show_factorization(img.as_raw(), &maps[i * k * plane..][..k * plane], k, 0.5);
        let w = &want[i * plane * 3..][..plane * 3];
        for (j, (a, b)) in got.iter().zip(w).enumerate() {
            assert!(
                (*a as i32 - *b as i32).abs() <= 1,
                "image {i} byte {j}: {a} vs {b}"
            );
            off += (a != b) as usize;
        }
    }
    assert_eq!(off, 0, "overlay: {off} bytes off by one");
}

#[test]
fn dff_on_device_activations_matches_pgc() {
    let fx = load();
    let ctx = GpuContext::new().expect("a wgpu adapter");
    for (layer, k) in cases(&fx) {
        let p = format!("dff.{layer}.");
        // layer3 reads its activations back one image per batch.
        let cfg = EngineConfig {
            layers: vec![layer.clone()],
            size: fx.size,
            batch: if layer == "layer3" { 1 } else { 2 },
            ..Default::default()
        };
        let mut engine = Engine::new(ctx.clone(), &fx.model, cfg).unwrap();
        let (acts, shape) = engine.layer_activations(&fx.images).unwrap();
        let ea = max_rel(&acts, &fx.f32s(&(p.clone() + "acts")));
        let f = factorize(&acts, fx.images.len(), shape, k).unwrap();
        let em = max_abs(&f.maps(fx.size), &fx.f32s(&(p.clone() + "maps")));
        eprintln!(
            "{layer} K={k} on the device: activations {ea:.1e} (relative), maps {em:.1e}, {} iterations",
            f.iterations
        );
        assert!(ea < 1e-4, "{layer}: activations {ea:.2e}");
        assert!(em < MAP_TOLERANCE, "{layer}: maps {em:.2e}");
    }
}

#[test]
fn concepts_out_of_range_are_refused() {
    let acts = vec![1f32; 2 * 4 * 3];
    for k in [0, 5] {
        let e = factorize(&acts, 2, [4, 3, 1], k).unwrap_err().to_string();
        assert!(e.contains("concepts must be 1 to 4"), "{e}");
    }
}

fn gradcam(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_gradcam"))
        .args(args)
        .output()
        .expect("run gradcam")
}

/// `gradcam dff` end to end on the fixture's model and images: the maps (--save-cam), the
/// overlays and the labels in dff.json against pgc.
#[test]
fn cli_dff_matches_pgc() {
    let fx = load();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("resnet18.safetensors");
    std::fs::write(&model, fx.model.weights.to_bytes().unwrap()).unwrap();
    let mut paths = Vec::new();
    for (i, img) in fx.images.iter().enumerate() {
        let p = dir.path().join(format!("img{i}.png"));
        img.save(&p).unwrap();
        paths.push(p.to_str().unwrap().to_string());
    }
    let out = dir.path().join("out");
    let size = format!("{}x{}", fx.size[0], fx.size[1]);
    let k = cases(&fx)["layer4"];
    let ks = k.to_string();
    let mut args: Vec<&str> = paths.iter().map(String::as_str).collect();
    args.extend([
        "--model",
        model.to_str().unwrap(),
        "--arch",
        "resnet18",
        "--layer",
        "layer4",
        "--size",
        &size,
        "--concepts",
        &ks,
        "--top-k",
        "3",
        "--save-cam",
        "--out",
        out.to_str().unwrap(),
    ]);
    let o = gradcam(&["dff"].into_iter().chain(args).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("dff.json")).unwrap()).unwrap();
    let scores = fx.f32s("dff.layer4.scores");
    let classes = scores.len() / k;
    let want = gradcam_wgpu::dff::top_classes(&scores, classes, 3);
    for (t, concept) in report["labels"].as_array().unwrap().iter().enumerate() {
        for (j, label) in concept["top"].as_array().unwrap().iter().enumerate() {
            assert_eq!(label["class"].as_u64().unwrap() as usize, want[t][j].0);
            let s = label["score"].as_f64().unwrap() as f32;
            assert!(
                (s - want[t][j].1).abs() < 1e-4,
                "concept {t}: {s} vs {:?}",
                want[t][j]
            );
        }
    }
    let maps = fx.f32s("dff.layer4.maps");
    let overlays = fx.u8s("dff.layer4.overlay");
    let plane = fx.size[0] * fx.size[1];
    for (i, entry) in report["images"].as_array().unwrap().iter().enumerate() {
        let npy = std::fs::read(out.join(entry["maps"].as_str().unwrap())).unwrap();
        let got: Vec<f32> = npyz::NpyFile::new(&npy[..]).unwrap().into_vec().unwrap();
        let e = max_abs(&got, &maps[i * k * plane..][..k * plane]);
        assert!(e < MAP_TOLERANCE, "image {i}: maps {e:.2e}");
        let png = image::open(out.join(entry["overlay"].as_str().unwrap()))
            .unwrap()
            .to_rgb8();
        let want = &overlays[i * plane * 3..][..plane * 3];
        let worst = png
            .as_raw()
            .iter()
            .zip(want)
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap();
        assert!(worst <= 1, "image {i}: overlay off by {worst}");
    }
}

/// Bad input is exit 2 with a message naming the flag or the missing head.
#[test]
fn cli_dff_refuses_bad_concepts_and_headless_layers() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("a.png");
    image::RgbImage::from_fn(40, 32, |x, y| {
        image::Rgb([(x * 6) as u8, (y * 7) as u8, 90])
    })
    .save(&img)
    .unwrap();
    let out = dir.path().join("out");
    let (img, out) = (img.to_str().unwrap(), out.to_str().unwrap());
    for (extra, want) in [
        (vec!["--concepts", "0"], "--concepts must be 1 to"),
        (vec!["--concepts", "100000"], "--concepts must be 1 to"),
        (
            vec!["--concepts", "2", "--layer", "layer2"],
            "global average pool",
        ),
    ] {
        let mut args = vec!["dff", img, "--model", "shapes", "--out", out];
        args.extend(&extra);
        let o = gradcam(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: {err}");
    }
}

/// NaN activations count as 0 (pgc's dff()); the NMF itself refuses negative or non-finite
/// input instead of panicking.
#[test]
fn nan_activations_read_as_zero_and_bad_nmf_input_is_an_error() {
    let mut acts: Vec<f32> = (0..2 * 3 * 4).map(|i| ((i * 7) % 5) as f32).collect();
    acts[5] = 0.0;
    let zero = factorize(&acts, 2, [3, 2, 2], 2).unwrap();
    acts[5] = f32::NAN;
    let nan = factorize(&acts, 2, [3, 2, 2], 2).unwrap();
    assert_eq!(zero.explanations, nan.explanations);
    assert_eq!(zero.concepts, nan.concepts);
    let cfg = NmfConfig::new(1);
    let e = nmf(&[1.0f32, -1.0], 1, 2, &cfg).unwrap_err().to_string();
    assert!(e.contains("non-negative"), "{e}");
    let e = nmf(&[1.0f64, f64::NAN], 1, 2, &cfg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("finite"), "{e}");
    let e = nmf(&[1.0f32; 3], 2, 2, &cfg).unwrap_err().to_string();
    assert!(e.contains("not [2, 2]"), "{e}");
}
