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
    // The overlay from pgc's own maps: within one level (OpenCV's SIMD HSV paths).
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
    eprintln!("overlay: {off} bytes off by one");
}

#[test]
fn dff_on_device_activations_matches_pgc() {
    let fx = load();
    let ctx = GpuContext::new().expect("a wgpu adapter");
    for (layer, k) in cases(&fx) {
        let p = format!("dff.{layer}.");
        let cfg = EngineConfig {
            layers: vec![layer.clone()],
            size: fx.size,
            batch: 2,
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
