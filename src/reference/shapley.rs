//! Shapley-CAM's second-order pieces (twin of `shaders/shapley.wgsl`).

use super::targets::score_grad;
use crate::engine::Score;

/// H_score(row, c) · u: the explained score's Hessian in the logits times `u`, in closed form
/// (zero for the logit and binary scores).
pub fn score_hessian_vec(kind: Score, row: &[f64], c: usize, u: &[f64]) -> Vec<f64> {
    let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
    let p: Vec<f64> = row.iter().map(|v| (v - m).exp() / s).collect();
    let pu: f64 = p.iter().zip(u).map(|(a, b)| a * b).sum();
    (0..row.len())
        .map(|k| match kind {
            Score::Logit | Score::Binary => 0.0,
            Score::Rest => -p[k] * (u[k] - pu),
            Score::Softmax => {
                let d = if k == c { 1.0 } else { 0.0 };
                p[c] * (d - p[k]) * (u[c] - pu) - p[c] * p[k] * (u[k] - pu)
            }
        })
        .collect()
}

/// The same by central differences of [`score_grad`] along `u` (for tests).
pub fn score_hessian_vec_fd(kind: Score, row: &[f64], c: usize, u: &[f64], h: f64) -> Vec<f64> {
    let at = |t: f64| -> Vec<f64> {
        let r: Vec<f64> = row.iter().zip(u).map(|(a, b)| a + t * b).collect();
        score_grad(kind, &r, c)
    };
    let (up, down) = (at(h), at(-h));
    up.iter()
        .zip(&down)
        .map(|(a, b)| (a - b) / (2.0 * h))
        .collect()
}

/// out[image, col0 + j] = <grads[row], acts[image]> for rows (image, j), `rep` per image.
pub fn jv_rows(grads: &[f64], acts: &[f64], rows: usize, rep: usize, len: usize) -> Vec<f64> {
    (0..rows)
        .map(|r| {
            let (g, a) = (&grads[r * len..][..len], &acts[(r / rep) * len..][..len]);
            g.iter().zip(a).map(|(x, y)| x * y).sum()
        })
        .collect()
}
