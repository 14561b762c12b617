//! torch-cam's SS-CAM and IS-CAM: Score-CAM's probes ([`super::perturb`]) with torch-cam's
//! masks (each channel min-max normalised at the layer's resolution, upsampled with
//! align_corners=False), repeated over samples and their scores averaged. SS-CAM adds
//! N(0, std) to every mask pixel of every sample; IS-CAM scales sample i's probes by
//! Σ_{j ≤ i} j / N (i from 1).

use super::plan::Plan;
use super::{EngineConfig, Method};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, buffer};
use crate::ops::perturb::{MaskNoise, MaskStyle};

/// More samples than this is a typo, not a smoother map.
const MAX_SAMPLES: usize = 100_000;

/// `--samples`, `--noise`, `--seed` and given noise fit the method.
pub(super) fn check_sampling(cfg: &EngineConfig) -> Result<()> {
    let name = cfg.method.name();
    let Some((_, _)) = cfg.method.sample_defaults() else {
        if cfg.samples.is_some() || cfg.noise_std.is_some() || cfg.noise.is_some() {
            return Err(Error::Invalid(format!(
                "--samples and --noise apply to sscam, iscam and smoothgradcam++, not {name}"
            )));
        }
        return Ok(());
    };
    if let Some(s) = cfg.samples
        && !(1..=MAX_SAMPLES).contains(&s)
    {
        return Err(Error::Invalid(format!(
            "--samples must be 1 to {MAX_SAMPLES}, not {s}"
        )));
    }
    if cfg.method == Method::IsCam && (cfg.noise_std.is_some() || cfg.noise.is_some()) {
        return Err(Error::Invalid(format!(
            "--noise applies to sscam and smoothgradcam++, not {name}"
        )));
    }
    if let Some(std) = cfg.noise_std
        && !(std.is_finite() && std >= 0.0)
    {
        return Err(Error::Invalid(format!(
            "--noise must be a finite std >= 0, not {std}"
        )));
    }
    Ok(())
}

/// Probe passes per channel: the method's samples, 1 for Score-CAM and Ablation-CAM.
pub(super) fn samples(cfg: &EngineConfig) -> usize {
    cfg.method
        .sample_defaults()
        .map_or(1, |(s, _)| cfg.samples.unwrap_or(s))
}

/// The masks of sample `s` (`given`: the uploaded [`EngineConfig::noise`]).
pub(super) fn mask_style<'a>(
    cfg: &EngineConfig,
    s: usize,
    given: Option<&'a wgpu::Buffer>,
) -> MaskStyle<'a> {
    let n = samples(cfg);
    match cfg.method {
        Method::SsCam => MaskStyle {
            torchcam: true,
            coeff: 1.0,
            noise: Some(match given {
                Some(noise) => MaskNoise::Given { noise, sample: s },
                None => MaskNoise::Seeded {
                    seed: cfg.seed,
                    sample: s,
                    std: cfg.noise_std.unwrap_or(2.0),
                },
            }),
        },
        Method::IsCam => MaskStyle {
            torchcam: true,
            // torch-cam: coeff += (sidx + 1) / num_samples before each sample.
            coeff: ((s + 1) * (s + 2)) as f32 / (2 * n) as f32,
            noise: None,
        },
        _ => MaskStyle::default(),
    }
}

/// [`EngineConfig::noise`] on the device, checked against the one target layer's channels
/// and the input size.
pub(super) fn given_noise(
    ctx: &GpuContext,
    cfg: &EngineConfig,
    plan: &Plan,
) -> Result<Option<wgpu::Buffer>> {
    let Some(noise) = &cfg.noise else {
        return Ok(None);
    };
    let [t] = plan.targets[..] else {
        return Err(Error::Invalid(
            "given SS-CAM noise needs exactly one target layer".into(),
        ));
    };
    let c = plan.steps[t].shape[0];
    let [h, w] = cfg.size;
    let s = samples(cfg);
    if noise.len() != s * c * h * w {
        return Err(Error::Invalid(format!(
            "the given noise holds {} values; expected [samples {s}, channels {c}, {h}, {w}]",
            noise.len()
        )));
    }
    if (noise.len() as u64) * 4 > ctx.max_binding {
        return Err(Error::Invalid(
            "the given noise does not fit one storage binding: use fewer --samples".into(),
        ));
    }
    if let Some(bad) = noise.iter().position(|v| !v.is_finite()) {
        return Err(Error::Invalid(format!(
            "the given noise has a non-finite value at flat index {bad}"
        )));
    }
    Ok(Some(buffer::storage_f32(ctx, "noise", noise)))
}
