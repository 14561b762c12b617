//! torch-cam 0.5's `DeletionInsertionMetric` (RISE's deletion and insertion as torch-cam
//! implements them), with its default `steps=20`: positions ranked by the map (descending,
//! ties in index order: a stable argsort), counts `0, s, 2s, … < HW` then `HW` with
//! `s = ceil(HW / steps)`; deletion replaces the top `count` positions of the normalised input
//! with the baseline 0 (every channel), insertion keeps only them. AUCs are trapezoids over
//! the actual fractions `count / HW`. Scores are softmax probabilities (`logits_fn=softmax`).
//!
//! Unlike the RISE curves of [`super`] (black deletion, blurred insertion, equal steps in
//! pixel space), this is torch-cam's own protocol and is reported in its own columns.

/// torch-cam's default.
pub const DEFAULT_STEPS: usize = 20;

/// The perturbed counts of the curves' points.
pub fn counts(positions: usize, steps: usize) -> Vec<usize> {
    let step = positions.div_ceil(steps.max(1)).max(1);
    let mut c: Vec<usize> = (0..positions).step_by(step).collect();
    c.push(positions);
    c
}

/// Each position's rank in a stable descending argsort of the map.
pub fn ranks(cam: &[f32]) -> Vec<u32> {
    let mut order: Vec<u32> = (0..cam.len() as u32).collect();
    // NaN never reaches here (maps are finite); total_cmp keeps the sort total anyway.
    order.sort_by(|&a, &b| cam[b as usize].total_cmp(&cam[a as usize]));
    let mut ranks = vec![0u32; cam.len()];
    for (r, &i) in order.iter().enumerate() {
        ranks[i as usize] = r as u32;
    }
    ranks
}

/// The input with the positions ranked below `count` (insertion: at or above it) set to 0.
pub fn perturb(input: &[f32], ranks: &[u32], count: usize, insertion: bool) -> Vec<f32> {
    let n = ranks.len();
    input
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let relevant = (ranks[i % n] as usize) < count;
            if relevant == insertion { v } else { 0.0 }
        })
        .collect()
}

/// `torch.trapezoid(scores, fractions)`.
pub fn auc(scores: &[f64], fractions: &[f64]) -> f64 {
    scores
        .windows(2)
        .zip(fractions.windows(2))
        .map(|(s, f)| (s[0] + s[1]) / 2.0 * (f[1] - f[0]))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_end_at_every_position() {
        assert_eq!(counts(10, 20), (0..=10).collect::<Vec<_>>());
        assert_eq!(counts(1280, 20), {
            let mut v: Vec<usize> = (0..20).map(|i| i * 64).collect();
            v.push(1280);
            v
        });
        assert_eq!(counts(1290, 20).len(), 21); // step 65, last interval shorter
    }

    #[test]
    fn ranks_are_stable_and_descending() {
        assert_eq!(ranks(&[0.5, 1.0, 0.5, 0.0]), vec![1, 0, 2, 3]);
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0];
        let r = ranks(&[0.5, 1.0, 0.5, 0.0]);
        assert_eq!(
            perturb(&x, &r, 1, false),
            [1.0, 0.0, 3.0, 4.0, 5.0, 0.0, 7.0, 8.0]
        );
        assert_eq!(
            perturb(&x, &r, 1, true),
            [0.0, 2.0, 0.0, 0.0, 0.0, 6.0, 0.0, 0.0]
        );
    }
}
