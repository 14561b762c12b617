//! Target selection and the explained scores' gradient seeds (twin of `shaders/targets.wgsl`
//! and `shaders/lib/score.wgsl`).

use crate::engine::Score;

/// Per image, the indices of the `k` largest logits, descending; ties go to the lower index.
pub fn topk(logits: &[f64], images: usize, classes: usize, k: usize) -> Vec<usize> {
    assert_eq!(logits.len(), images * classes, "logits length");
    assert!(k <= classes, "k exceeds the number of classes");
    let mut out = Vec::with_capacity(images * k);
    for row in logits.chunks(classes) {
        let mut idx: Vec<usize> = (0..classes).collect();
        idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        out.extend_from_slice(&idx[..k]);
    }
    out
}

/// The explained score of logits `row` for class `c` (twin of `target_score` in
/// `shaders/lib/score.wgsl`; a binary score's `c` is its category).
pub fn score(kind: Score, row: &[f64], c: usize) -> f64 {
    match kind {
        Score::Logit => row[c],
        Score::Softmax => (row[c] - logsumexp(row)).exp(),
        Score::Rest => 2.0 * row[c] - logsumexp(row),
        Score::Binary => {
            assert_eq!(row.len(), 1, "a binary score reads one logit");
            if c == 1 { row[0] } else { -row[0] }
        }
    }
}

/// d[`score`]/d`row`, in closed form (`target_score_grad`).
pub fn score_grad(kind: Score, row: &[f64], c: usize) -> Vec<f64> {
    let onehot = |k: usize| if k == c { 1.0 } else { 0.0 };
    let lse = logsumexp(row);
    (0..row.len())
        .map(|k| match kind {
            Score::Logit => onehot(k),
            Score::Softmax => (row[c] - lse).exp() * (onehot(k) - (row[k] - lse).exp()),
            Score::Rest => 2.0 * onehot(k) - (row[k] - lse).exp(),
            Score::Binary => {
                if c == 1 {
                    1.0
                } else {
                    -1.0
                }
            }
        })
        .collect()
}

fn logsumexp(row: &[f64]) -> f64 {
    let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    m + row.iter().map(|v| (v - m).exp()).sum::<f64>().ln()
}

/// Per image, the `k` classes of the largest scores, descending, ties to the lower class:
/// [`topk`] of the logits, or of the two categories' scores (-z, z) for a binary score.
pub fn topk_scores(
    logits: &[f64],
    images: usize,
    classes: usize,
    k: usize,
    kind: Score,
) -> Vec<usize> {
    if kind != Score::Binary {
        return topk(logits, images, classes, k);
    }
    // + 0.0 turns -0 into 0, so z = 0 is a tie (the kernel compares with ==): category 0.
    let pairs: Vec<f64> = logits.iter().flat_map(|&z| [-z + 0.0, z + 0.0]).collect();
    topk(&pairs, images, 2, k)
}

/// seed[(n, j), :] = d score / d logits of image n for its target `t0 + j`, for j < tc;
/// `targets` holds `k` per image. Returns `[images * tc, classes]` (one-hot for logits).
#[allow(clippy::too_many_arguments)]
pub fn seed_scores(
    logits: &[f64],
    targets: &[usize],
    images: usize,
    classes: usize,
    k: usize,
    t0: usize,
    tc: usize,
    kind: Score,
) -> Vec<f64> {
    assert_eq!(targets.len(), images * k, "targets length");
    assert_eq!(logits.len(), images * classes, "logits length");
    assert!(t0 + tc <= k, "target range exceeds k");
    let mut seed = Vec::with_capacity(images * tc * classes);
    for n in 0..images {
        let row = &logits[n * classes..(n + 1) * classes];
        for j in 0..tc {
            seed.extend(score_grad(kind, row, targets[n * k + t0 + j]));
        }
    }
    seed
}

/// Finer-CAM's comparison classes for class `c` of logits `row`: the classes at `ranks` in
/// the order of (|y - y_c|, index), rank 0 being `c` (twin of `shaders/finer.wgsl`).
pub fn finer_classes(row: &[f64], c: usize, ranks: &[usize]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..row.len()).collect();
    let d = |k: usize| (row[k] - row[c]).abs();
    order.sort_by(|&a, &b| d(a).total_cmp(&d(b)).then(a.cmp(&b)));
    ranks.iter().map(|&r| order[r]).collect()
}

/// pytorch-grad-cam's FinerWeightedTarget of `row` for class `c` against classes `k`:
/// sum_k p_k (y_c - alpha y_k) / (sum_k p_k + 1e-9), p = softmax(row).
pub fn finer_score(row: &[f64], c: usize, k: &[usize], alpha: f64) -> f64 {
    let lse = logsumexp(row);
    let p = |i: usize| (row[i] - lse).exp();
    let num: f64 = k.iter().map(|&i| p(i) * (row[c] - alpha * row[i])).sum();
    let den: f64 = k.iter().map(|&i| p(i)).sum();
    num / (den + 1e-9)
}

/// d[`finer_score`]/d`row` in closed form, the comparison classes held fixed.
pub fn finer_score_grad(row: &[f64], c: usize, k: &[usize], alpha: f64) -> Vec<f64> {
    let lse = logsumexp(row);
    let p = |i: usize| (row[i] - lse).exp();
    let num: f64 = k.iter().map(|&i| p(i) * (row[c] - alpha * row[i])).sum();
    let den: f64 = k.iter().map(|&i| p(i)).sum();
    let (d, s) = (den + 1e-9, finer_score(row, c, k, alpha));
    (0..row.len())
        .map(|m| {
            let pm = p(m);
            let hits = k.iter().filter(|&&i| i == m).count() as f64;
            let dn = hits * pm * (row[c] - alpha * row[m] - alpha) - pm * num
                + if m == c { den } else { 0.0 };
            let dd = hits * pm - pm * den;
            (dn - s * dd) / d
        })
        .collect()
}

/// Finer-CAM's seeds as [`seed_scores`] lays them out: `[images * tc, classes]`.
#[allow(clippy::too_many_arguments)]
pub fn seed_finer(
    logits: &[f64],
    targets: &[usize],
    images: usize,
    classes: usize,
    k: usize,
    t0: usize,
    tc: usize,
    ranks: &[usize],
    alpha: f64,
) -> Vec<f64> {
    assert_eq!(targets.len(), images * k, "targets length");
    assert_eq!(logits.len(), images * classes, "logits length");
    let mut seed = Vec::with_capacity(images * tc * classes);
    for n in 0..images {
        let row = &logits[n * classes..(n + 1) * classes];
        for j in 0..tc {
            let c = targets[n * k + t0 + j];
            seed.extend(finer_score_grad(
                row,
                c,
                &finer_classes(row, c, ranks),
                alpha,
            ));
        }
    }
    seed
}
