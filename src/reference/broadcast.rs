//! Broadcast add, sub, mul, div and their reduced gradients (twin of
//! `shaders/broadcast.wgsl`).

use crate::ops::broadcast::{BinaryKind, Broadcast, Operand};

fn apply(kind: BinaryKind, x: f64, y: f64) -> f64 {
    match kind {
        BinaryKind::Add => x + y,
        BinaryKind::Sub => x - y,
        BinaryKind::Mul => x * y,
        BinaryKind::Div => x / y,
    }
}

/// d(x ∘ y)/dx (k = 0) or d(x ∘ y)/dy (k = 1).
fn partial(kind: BinaryKind, k: usize, x: f64, y: f64) -> f64 {
    match (kind, k) {
        (BinaryKind::Add, _) | (BinaryKind::Sub, 0) => 1.0,
        (BinaryKind::Sub, _) => -1.0,
        (BinaryKind::Mul, 0) => y,
        (BinaryKind::Mul, _) => x,
        (BinaryKind::Div, 0) => 1.0 / y,
        (BinaryKind::Div, _) => -x / (y * y),
    }
}

/// Index into `op`'s data of output coordinate `c` of row `row`; `image` is the forward
/// image (a constant has one for all).
fn at(op: &Operand, image: usize, c: [usize; 3]) -> usize {
    let s = op.shape;
    let pick = |d: usize| if s[d] == 1 { 0 } else { c[d] };
    let image = if op.batched { image } else { 0 };
    ((image * s[0] + pick(0)) * s[1] + pick(1)) * s[2] + pick(2)
}

/// Every output coordinate of `rows` rows: (row, coordinate, flat output index).
fn each(out: [usize; 3], rows: usize, mut f: impl FnMut(usize, [usize; 3], usize)) {
    let mut i = 0;
    for row in 0..rows {
        for c in 0..out[0] {
            for h in 0..out[1] {
                for w in 0..out[2] {
                    f(row, [c, h, w], i);
                    i += 1;
                }
            }
        }
    }
}

fn check(op: &Operand, data: &[f64], images: usize) {
    let per: usize = op.shape.iter().product();
    let want = if op.batched { images * per } else { per };
    assert_eq!(data.len(), want, "operand length");
}

/// a ∘ b for `n` images.
pub fn binary(bc: &Broadcast, n: usize, a: &[f64], b: &[f64]) -> Vec<f64> {
    check(&bc.a, a, n);
    check(&bc.b, b, n);
    let out = bc.out();
    let mut y = vec![0.0; n * out.iter().product::<usize>()];
    each(out, n, |row, c, i| {
        y[i] = apply(bc.kind, a[at(&bc.a, row, c)], b[at(&bc.b, row, c)]);
    });
    y
}

/// The gradient of operand `k` (0: a, 1: b; an activation) for `dy` of `n * rep` rows (row
/// `r` belongs to image `r / rep`): dy times the partial derivative, summed over the dims
/// the operand was broadcast along.
pub fn binary_backward(
    bc: &Broadcast,
    k: usize,
    n: usize,
    rep: usize,
    a: &[f64],
    b: &[f64],
    dy: &[f64],
) -> Vec<f64> {
    check(&bc.a, a, n);
    check(&bc.b, b, n);
    let rows = n * rep;
    let out = bc.out();
    assert_eq!(dy.len(), rows * out.iter().product::<usize>(), "dy length");
    let wrt = if k == 0 { bc.a } else { bc.b };
    assert!(wrt.batched, "gradients go to activations only");
    let mut dx = vec![0.0; rows * wrt.shape.iter().product::<usize>()];
    each(out, rows, |row, c, i| {
        let (x, y) = (a[at(&bc.a, row / rep, c)], b[at(&bc.b, row / rep, c)]);
        dx[at(&wrt, row, c)] += dy[i] * partial(bc.kind, k, x, y);
    });
    dx
}
