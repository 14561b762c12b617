//! SmoothGrad-CAM++'s noisy inputs, weights and last-sample activations
//! (shaders/smoothgrad.wgsl; twin in `reference::smoothgrad`).

use super::{module, u};
use crate::gpu::{Access, Dispatch, GpuContext, Kernel, grid};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct SmoothParams {
    img: u32,
    samples: u32,
    channels: u32,
    plane: u32,
    tc: u32,
    each: u32,
    mode: u32,
    noise_std: f32,
    seed_lo: u32,
    seed_hi: u32,
    _p: [u32; 2],
}

/// Noise added to the input samples.
#[derive(Clone, Copy, Debug)]
pub enum InputNoise<'a> {
    /// N(0, std) drawn on the device (Philox4x32-10 keyed by the seed at counter (element,
    /// sample, 0, 1); [`crate::reference::smoothgrad::seeded_input_noise`]).
    Seeded { seed: u64, std: f32 },
    /// Given draws `[samples, C, H, W]`, the same for every image.
    Given(&'a wgpu::Buffer),
}

pub struct SmoothGradKernels {
    noisy: Kernel,
    weights: Kernel,
    last: Kernel,
}

impl SmoothGradKernels {
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "smoothgrad.wgsl");
        let st = [Access::Read, Access::Read, Access::ReadWrite];
        let k = |e, wg| Kernel::new(ctx, &m, e, &st, &[], wg);
        Self {
            noisy: k("noisy_inputs", 64),
            weights: k("plusplus_weights", 256),
            last: k("copy_last", 64),
        }
    }

    /// out[s] = input[img] + noise of sample s, for s < samples; `each` = C H W.
    #[allow(clippy::too_many_arguments)]
    pub fn noisy_inputs(
        &self,
        ctx: &GpuContext,
        img: usize,
        samples: usize,
        each: usize,
        noise: InputNoise,
        input: &wgpu::Buffer,
        out: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let mut p = SmoothParams {
            img: u(img),
            samples: u(samples),
            each: u(each),
            ..Default::default()
        };
        let given = match noise {
            InputNoise::Seeded { seed, std } => {
                p.mode = 2;
                (p.seed_lo, p.seed_hi, p.noise_std) = (seed as u32, (seed >> 32) as u32, std);
                dummy
            }
            InputNoise::Given(b) => b,
        };
        self.noisy
            .dispatch(ctx, &p, &[input, given, out], (samples * each) as u64)
    }

    /// weights[(img, j), c] for j < tc from the samples' gradients `grads` (rows s tc + j,
    /// `[C, plane]` each) and image `img`'s clean activations `act`: torch-cam's
    /// SmoothGradCAMpp weights.
    #[allow(clippy::too_many_arguments)]
    pub fn plusplus_weights(
        &self,
        ctx: &GpuContext,
        img: usize,
        samples: usize,
        [channels, plane]: [usize; 2],
        tc: usize,
        act: &wgpu::Buffer,
        grads: &wgpu::Buffer,
        weights: &wgpu::Buffer,
    ) -> Dispatch {
        let p = SmoothParams {
            img: u(img),
            samples: u(samples),
            channels: u(channels),
            plane: u(plane),
            tc: u(tc),
            ..Default::default()
        };
        self.weights.dispatch_groups(
            ctx,
            &p,
            &[act, grads, weights],
            grid((tc * channels) as u64, ctx.max_workgroups_per_dim),
        )
    }

    /// out[img] = acts[samples - 1] (`each` = C h w).
    #[allow(clippy::too_many_arguments)]
    pub fn copy_last(
        &self,
        ctx: &GpuContext,
        img: usize,
        samples: usize,
        each: usize,
        acts: &wgpu::Buffer,
        out: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let p = SmoothParams {
            img: u(img),
            samples: u(samples),
            each: u(each),
            ..Default::default()
        };
        self.last
            .dispatch(ctx, &p, &[acts, dummy, out], each as u64)
    }
}
