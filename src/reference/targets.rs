//! Target selection and one-hot gradient seeds (twin of `shaders/targets.wgsl`).

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

/// seed[(n, j), c] = 1 where c is target `t0 + j` of image n, for j < tc; `targets` holds
/// `k` per image. Returns `[images * tc, classes]`.
pub fn seed_onehot(
    targets: &[usize],
    images: usize,
    classes: usize,
    k: usize,
    t0: usize,
    tc: usize,
) -> Vec<f64> {
    assert_eq!(targets.len(), images * k, "targets length");
    assert!(t0 + tc <= k, "target range exceeds k");
    let mut seed = vec![0.0; images * tc * classes];
    for n in 0..images {
        for j in 0..tc {
            let row = n * tc + j;
            seed[row * classes + targets[n * k + t0 + j]] = 1.0;
        }
    }
    seed
}
