//! ARCC (Complexity, Coherency and ROAD in one number) as pytorch-grad-cam 1.5.7's
//! `metrics/arcc.py` computes it. Its docstring says "geometric mean", but the code takes the
//! **harmonic mean** of the three, and that is what this reproduces:
//!
//! `ARCC = 3 / (1/(coherency + 1e-8) + 1/((1 - complexity) + 1e-8) + 1/(road + 1e-8))`
//!
//! with complexity = mean |map|, coherency = (Pearson(map on input ⊙ map, map) + 1) / 2 (the
//! second map from the same CAM method), and road = clip(2 · ROADCombined, 0, 1) over the
//! percentiles 20, 40, 60, 80.

use crate::engine::Engine;
use crate::error::Result;

/// ARCC's ROAD percentiles.
pub const PERCENTILES: [u32; 4] = [20, 40, 60, 80];

/// pgc's `Complexity`: the map's L1 norm per pixel.
pub fn complexity(cam: &[f32]) -> f64 {
    cam.iter().map(|v| v.abs() as f64).sum::<f64>() / cam.len() as f64
}

/// pgc's `Coherency`: `(batch_pearson_coherency(mixed, cam) + 1) / 2`, with its eps.
pub fn coherency(mixed: &[f32], cam: &[f32]) -> f64 {
    let n = cam.len() as f64;
    let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / n;
    let (ma, mb) = (mean(mixed), mean(cam));
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (&a, &b) in mixed.iter().zip(cam) {
        let (a, b) = (a as f64 - ma, b as f64 - mb);
        cov += a * b;
        va += a * a;
        vb += b * b;
    }
    let d = n - 1.0;
    let rho = (cov / d) / ((va / d).sqrt() * (vb / d).sqrt() + 1e-8);
    (rho + 1.0) / 2.0
}

/// The harmonic mean pgc computes, from ROADCombined over [`PERCENTILES`].
pub fn arcc(complexity: f64, coherency: f64, road_combined: f64) -> f64 {
    let road = (road_combined * 2.0).clamp(0.0, 1.0);
    3.0 / (1.0 / (coherency + 1e-8) + 1.0 / ((1.0 - complexity) + 1e-8) + 1.0 / (road + 1e-8))
}

/// Coherency's second maps: `engine` (the method under test, one target per image, maps read
/// back) on each `input ⊙ map`, for its class.
pub fn mixed_maps(
    engine: &mut Engine,
    mixed: &[Vec<f32>],
    classes: &[usize],
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(mixed.len());
    let batch = engine.batch_size().max(1);
    for (inputs, cls) in mixed.chunks(batch).zip(classes.chunks(batch)) {
        let targets: Vec<Vec<usize>> = cls.iter().map(|&c| vec![c]).collect();
        let res = engine.explain_tensor(&inputs.concat(), inputs.len(), Some(&targets))?;
        for r in res {
            let map = r.targets.into_iter().next().and_then(|t| t.map);
            out.push(map.ok_or_else(|| {
                crate::error::Error::Invalid("ARCC: the engine returned no map".into())
            })?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn harmonic_not_geometric() {
        let h = arcc(0.5, 0.8, 0.25); // road 0.5
        assert!((h - 3.0 / (1.0 / 0.8 + 2.0 + 2.0)).abs() < 1e-6);
        assert!(arcc(0.5, 0.8, -0.1) < 1e-6, "negative ROAD clips to 0");
        assert!((coherency(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.0]) - 1.0).abs() < 1e-6);
        assert!(complexity(&[0.0, 1.0, -0.5, 0.5]) == 0.5);
    }
}
