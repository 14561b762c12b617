//! sklearn's `NMF(n_components, init='random', random_state, solver='cd')` with its defaults
//! (Frobenius loss, alpha 0, `tol` 1e-4, `max_iter` 200, no shuffle): the random
//! initialisation and Cichocki and Phan's coordinate descent of `_cdnmf_fast.pyx`, in the
//! input's precision as sklearn keeps X's dtype. Pure computation (no threads, no files).

use super::random::LegacyRandom;
use crate::error::{Error, Result};

/// The float types sklearn's Cython solver is compiled for.
pub trait Real:
    Copy
    + PartialOrd
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<Output = Self>
    + std::ops::Div<Output = Self>
    + std::ops::Neg<Output = Self>
{
    const ZERO: Self;
    fn from_f64(v: f64) -> Self;
    fn to_f64(self) -> f64;
    fn abs(self) -> Self;
}

macro_rules! real {
    ($t:ty) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
        }
    };
}
real!(f32);
real!(f64);

#[derive(Clone, Debug)]
pub struct NmfConfig {
    pub components: usize,
    /// `random_state`.
    pub seed: u32,
    pub tol: f64,
    pub max_iter: usize,
}

impl NmfConfig {
    /// sklearn's defaults with `init='random', random_state=0`, as pytorch-grad-cam calls it.
    pub fn new(components: usize) -> Self {
        Self {
            components,
            seed: 0,
            tol: 1e-4,
            max_iter: 200,
        }
    }
}

/// X ≈ W H.
#[derive(Clone, Debug)]
pub struct Nmf<T> {
    /// `[rows, components]`, row-major.
    pub w: Vec<T>,
    /// `[components, cols]`, row-major.
    pub h: Vec<T>,
    /// Iterations run (sklearn's `n_iter_`).
    pub iterations: usize,
}

/// Factorises the non-negative `x` (`[rows, cols]`, row-major).
pub fn nmf<T: Real>(x: &[T], rows: usize, cols: usize, cfg: &NmfConfig) -> Result<Nmf<T>> {
    let k = cfg.components;
    if k == 0 {
        return Err(Error::Invalid("NMF needs at least one component".into()));
    }
    if rows == 0 || cols == 0 || rows.checked_mul(cols) != Some(x.len()) {
        return Err(Error::Invalid(format!(
            "NMF input holds {} values, not [{rows}, {cols}]",
            x.len()
        )));
    }
    if let Some(i) = x.iter().position(|v| !v.to_f64().is_finite()) {
        return Err(Error::Invalid(format!(
            "NMF input must be finite (flat index {i})"
        )));
    }
    if let Some(i) = x.iter().position(|v| *v < T::ZERO) {
        return Err(Error::Invalid(format!(
            "NMF input must be non-negative (flat index {i})"
        )));
    }
    // init='random': avg = sqrt(X.mean() / k) in X's dtype; H's draws first, then W's,
    // each cast to X's dtype before scaling.
    let mean = T::from_f64(x.iter().map(|v| v.to_f64()).sum::<f64>() / x.len() as f64);
    let quotient = T::from_f64(mean.to_f64() / k as f64);
    let avg = T::from_f64(quotient.to_f64().sqrt());
    let mut rng = LegacyRandom::new(cfg.seed);
    let mut draw = |n: usize| -> Vec<T> {
        (0..n)
            .map(|_| (avg * T::from_f64(rng.gauss())).abs())
            .collect()
    };
    let h = draw(k * cols);
    let mut w = draw(rows * k);
    // sklearn updates H through its transpose `[cols, k]`.
    let mut ht = transpose(&h, k, cols);
    let xt = transpose(x, rows, cols);
    let mut violation_init = 0.0;
    let mut iterations = 0;
    for it in 1..=cfg.max_iter {
        iterations = it;
        let mut violation = update(x, rows, cols, &mut w, &ht, k).to_f64();
        violation += update(&xt, cols, rows, &mut ht, &w, k).to_f64();
        if it == 1 {
            violation_init = violation;
        }
        if violation_init == 0.0 || violation / violation_init <= cfg.tol {
            break;
        }
    }
    Ok(Nmf {
        w,
        h: transpose(&ht, cols, k),
        iterations,
    })
}

/// One sweep of `_update_coordinate_descent(X, W, Ht)` over W (`[rows, k]`) with
/// `Ht` `[cols, k]` fixed; returns the projected-gradient violation in `T`.
fn update<T: Real>(x: &[T], rows: usize, cols: usize, w: &mut [T], ht: &[T], k: usize) -> T {
    // HHt = Ht.T Ht and XHt = X Ht are BLAS products in sklearn; here each sum runs in f64
    // and rounds once to T (within BLAS's own rounding of it).
    let mut hht = vec![T::ZERO; k * k];
    for a in 0..k {
        for b in 0..k {
            let s: f64 = (0..cols)
                .map(|j| ht[j * k + a].to_f64() * ht[j * k + b].to_f64())
                .sum();
            hht[a * k + b] = T::from_f64(s);
        }
    }
    let mut xht = vec![T::ZERO; rows * k];
    for i in 0..rows {
        let xi = &x[i * cols..(i + 1) * cols];
        for t in 0..k {
            let s: f64 = xi
                .iter()
                .enumerate()
                .map(|(j, v)| v.to_f64() * ht[j * k + t].to_f64())
                .sum();
            xht[i * k + t] = T::from_f64(s);
        }
    }
    // _update_cdnmf_fast, in T like the Cython `floating` loop.
    let mut violation = T::ZERO;
    for t in 0..k {
        let hess = hht[t * k + t];
        for i in 0..rows {
            let mut grad = -xht[i * k + t];
            for r in 0..k {
                grad = grad + hht[t * k + r] * w[i * k + r];
            }
            let wit = w[i * k + t];
            let pg = if wit == T::ZERO && grad > T::ZERO {
                T::ZERO
            } else {
                grad
            };
            violation = violation + pg.abs();
            if hess != T::ZERO {
                let v = wit - grad / hess;
                w[i * k + t] = if v > T::ZERO { v } else { T::ZERO };
            }
        }
    }
    violation
}

fn transpose<T: Copy>(a: &[T], rows: usize, cols: usize) -> Vec<T> {
    (0..cols)
        .flat_map(|j| (0..rows).map(move |i| a[i * cols + j]))
        .collect()
}
