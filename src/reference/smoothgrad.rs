//! torch-cam's SmoothGrad-CAM++ (twin of `shaders/smoothgrad.wgsl`).

use super::perturb::{philox_key, unit_normal};

/// The engine's seeded input noise (`InputNoise::Seeded`): std times N(0, 1) at Philox
/// counter (element e of the image's `[C, H, W]`, sample, 0, 1).
pub fn seeded_input_noise(seed: u64, sample: usize, e: usize, std: f64) -> f64 {
    std * unit_normal([e as u32, sample as u32, 0, 1], philox_key(seed))
}

/// torch-cam's SmoothGradCAMpp weights of one (image, target) row: `grads` holds the samples'
/// gradients `[samples, C, plane]`, `act` the clean activations `[C, plane]`. With
/// g2 = mean g^2, g3 = mean g^3: w_c = sum_p g2 / (2 g2 + sum_p' g3 A + 1e-8) * ReLU(g_last).
pub fn plusplus_weights(grads: &[f64], act: &[f64], samples: usize, channels: usize) -> Vec<f64> {
    let plane = act.len() / channels;
    assert_eq!(grads.len(), samples * channels * plane, "grads length");
    let g = |s: usize, c: usize, q: usize| grads[(s * channels + c) * plane + q];
    let mean = |c: usize, q: usize, k: i32| {
        (0..samples).map(|s| g(s, c, q).powi(k)).sum::<f64>() / samples as f64
    };
    (0..channels)
        .map(|c| {
            let s3: f64 = (0..plane).map(|q| mean(c, q, 3) * act[c * plane + q]).sum();
            (0..plane)
                .map(|q| {
                    let g2 = mean(c, q, 2);
                    g2 / (2.0 * g2 + s3 + 1e-8) * g(samples - 1, c, q).max(0.0)
                })
                .sum()
        })
        .collect()
}
