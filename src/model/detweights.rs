//! Deterministic pseudo-random weights, bit-exact twin of `tools/detweights.py` (see its
//! docstring for the specification). Golden fixtures store only a seed; this regenerates the
//! weights PyTorch used. Also handy for random-weight models in benchmarks and examples.

use crate::weights::{Tensor, Weights};
use std::collections::BTreeSet;

pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// The 12-bit signed integer for element `i` of tensor `name`.
pub fn q(key: u64, i: u64) -> i64 {
    let mut z = key.wrapping_add((i + 1).wrapping_mul(0x9E3779B97F4A7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^= z >> 31;
    (z >> 52) as i64 - 2048
}

/// Generates every tensor of `spec` (name, shape) for `seed`.
pub fn generate(spec: &[(String, Vec<usize>)], seed: u64) -> Weights {
    let names: BTreeSet<&str> = spec.iter().map(|(n, _)| n.as_str()).collect();
    let mut w = Weights::default();
    for (name, shape) in spec {
        let key = fnv1a64(name.as_bytes()) ^ seed;
        let numel: usize = shape.iter().product();
        let prefix = name.rsplit_once('.').map(|(p, _)| p).unwrap_or("");
        let is_bn = shape.len() == 1 && names.contains(format!("{prefix}.running_mean").as_str());
        let (offset, scale) = if is_bn {
            let one = name.ends_with(".weight") || name.ends_with(".running_var");
            (if one { 1.0 } else { 0.0 }, 2f64.powi(-13))
        } else if shape.len() >= 2 {
            let fan_in: usize = shape[1..].iter().product();
            let shift = (usize::BITS - fan_in.leading_zeros()) as i32 / 2;
            (0.0, 2f64.powi(-11) * 2f64.powi(1 - shift))
        } else {
            (0.0, 2f64.powi(-11) * 2f64.powi(-4))
        };
        let data = (0..numel as u64)
            .map(|i| (offset + q(key, i) as f64 * scale) as f32)
            .collect();
        w.tensors.insert(
            name.clone(),
            Tensor {
                shape: shape.clone(),
                data,
            },
        );
    }
    w
}
