//! pytorch-grad-cam's `NoisyLinearImputer` (ROAD, Rong et al. 2022): every removed pixel becomes
//! the weighted mean of its 8 neighbours (1/6 edge, 1/12 diagonal), removed neighbours included,
//! which is one sparse linear system per image; then Gaussian noise is added.
//!
//! The system is pgc's exactly (same equations, weights lost off the border subtracted from the
//! diagonal); negated it is symmetric positive definite, so faer's sparse Cholesky solves it in
//! f64 (pgc: scipy's `spsolve`). The noise (pgc: `0.01 * torch.randn_like`) comes from a seeded
//! ChaCha8 stream per image, so runs repeat but do not reproduce torch's draws.

use crate::error::{Error, Result};
use faer::linalg::solvers::Solve;
use faer::sparse::{SparseColMat, Triplet};
use faer::{Mat, Side};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// pgc's `neighbors_weights`: ((row, column) offset, weight).
const NEIGHBOURS: [((isize, isize), f64); 8] = [
    ((1, 1), 1.0 / 12.0),
    ((0, 1), 1.0 / 6.0),
    ((-1, 1), 1.0 / 12.0),
    ((1, -1), 1.0 / 12.0),
    ((0, -1), 1.0 / 6.0),
    ((-1, -1), 1.0 / 12.0),
    ((1, 0), 1.0 / 6.0),
    ((-1, 0), 1.0 / 6.0),
];

/// pgc's default noise magnitude.
pub const DEFAULT_NOISE: f32 = 0.01;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NoisyLinearImputer {
    /// Standard deviation of the noise added to imputed values (0: none).
    pub noise: f32,
    pub seed: u64,
}

impl Default for NoisyLinearImputer {
    fn default() -> Self {
        Self {
            noise: DEFAULT_NOISE,
            seed: 0,
        }
    }
}

impl NoisyLinearImputer {
    /// `img` is `[C, H, W]`; pixels where `keep` is false are imputed. `stream` picks the noise
    /// stream (one per perturbed image). With every pixel removed the system is singular (pgc
    /// returns NaN there): the image becomes 0, the normalised mean, plus noise.
    pub fn impute(
        &self,
        img: &[f32],
        keep: &[bool],
        size: [usize; 2],
        stream: u64,
    ) -> Result<Vec<f32>> {
        let [h, w] = size;
        let n = h * w;
        if n == 0 || keep.len() != n || !img.len().is_multiple_of(n) {
            return Err(Error::Invalid(format!(
                "imputer: image of {} values, mask of {} for a {h}x{w} map",
                img.len(),
                keep.len()
            )));
        }
        let channels = img.len() / n;
        let unknown: Vec<usize> = (0..n).filter(|&i| !keep[i]).collect();
        let mut out = img.to_vec();
        if unknown.is_empty() {
            return Ok(out);
        }
        let mut var = vec![usize::MAX; n];
        for (v, &i) in unknown.iter().enumerate() {
            var[i] = v;
        }
        let m = unknown.len();
        let mut x = Mat::<f64>::zeros(m, channels);
        if m < n {
            // -A x = -b: diagonal = weight of in-image neighbours, -w to removed neighbours,
            // kept neighbours' weighted values on the right-hand side.
            let mut entries = Vec::with_capacity(m * 9);
            for (v, &i) in unknown.iter().enumerate() {
                let (r, c) = ((i / w) as isize, (i % w) as isize);
                let mut diag = 1.0;
                for &((dr, dc), wt) in &NEIGHBOURS {
                    let (nr, nc) = (r + dr, c + dc);
                    if nr < 0 || nc < 0 || nr >= h as isize || nc >= w as isize {
                        diag -= wt;
                        continue;
                    }
                    let j = nr as usize * w + nc as usize;
                    if keep[j] {
                        for ch in 0..channels {
                            x[(v, ch)] += wt * img[ch * n + j] as f64;
                        }
                    } else if var[j] < v {
                        entries.push(Triplet::new(v, var[j], -wt));
                    }
                }
                entries.push(Triplet::new(v, v, diag));
            }
            let a = SparseColMat::<usize, f64>::try_new_from_triplets(m, m, &entries)
                .map_err(|e| Error::Invalid(format!("imputer system: {e:?}")))?;
            let llt = a
                .sp_cholesky(Side::Lower)
                .map_err(|e| Error::Invalid(format!("imputer system: {e:?}")))?;
            llt.solve_in_place(x.as_mut());
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(stream);
        for ch in 0..channels {
            for (v, &i) in unknown.iter().enumerate() {
                let noise: f32 = if self.noise != 0.0 {
                    let z: f32 = StandardNormal.sample(&mut rng);
                    self.noise * z
                } else {
                    0.0
                };
                out[ch * n + i] = x[(v, ch)] as f32 + noise;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_pixel_in_a_flat_image_is_its_neighbours_value() {
        let (h, w) = (5, 7);
        let img = vec![0.25f32; h * w];
        let mut keep = vec![true; h * w];
        for i in [0, 8, 9, 10, 17, 34] {
            keep[i] = false;
        }
        let imp = NoisyLinearImputer {
            noise: 0.0,
            seed: 0,
        };
        let out = imp.impute(&img, &keep, [h, w], 0).unwrap();
        assert!(out.iter().all(|v| (v - 0.25).abs() < 1e-6), "{out:?}");
    }

    #[test]
    fn noise_is_seeded_and_has_its_magnitude() {
        let (h, w) = (16, 16);
        let img = vec![0.0f32; h * w];
        let keep: Vec<bool> = (0..h * w).map(|i| i % 2 == 0).collect();
        let imp = NoisyLinearImputer::default();
        let a = imp.impute(&img, &keep, [h, w], 3).unwrap();
        assert_eq!(a, imp.impute(&img, &keep, [h, w], 3).unwrap());
        assert_ne!(a, imp.impute(&img, &keep, [h, w], 4).unwrap());
        let removed: Vec<f32> = (0..h * w).filter(|i| i % 2 == 1).map(|i| a[i]).collect();
        let sd = (removed.iter().map(|v| v * v).sum::<f32>() / removed.len() as f32).sqrt();
        assert!((sd - DEFAULT_NOISE).abs() < 0.3 * DEFAULT_NOISE, "{sd}");
    }

    #[test]
    fn everything_removed_is_zero_not_nan() {
        let imp = NoisyLinearImputer {
            noise: 0.0,
            seed: 0,
        };
        let out = imp.impute(&[1.0; 6], &[false; 6], [2, 3], 0).unwrap();
        assert_eq!(out, vec![0.0; 6]);
    }
}
