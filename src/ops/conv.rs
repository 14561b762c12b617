//! Conv2d forward and backward-data (shaders/conv.wgsl).

use super::{module, u};
use crate::gpu::{Access, AdapterClass, Dispatch, GpuContext, Kernel};

/// Geometry of one conv2d, PyTorch semantics (weight `[out_c, in_c / groups, k_h, k_w]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvShape {
    pub batch: usize,
    pub in_c: usize,
    pub in_h: usize,
    pub in_w: usize,
    pub out_c: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl ConvShape {
    pub fn out_h(&self) -> usize {
        out_size(self.in_h, self.kernel[0], self.stride[0], self.padding[0], self.dilation[0])
    }
    pub fn out_w(&self) -> usize {
        out_size(self.in_w, self.kernel[1], self.stride[1], self.padding[1], self.dilation[1])
    }
    pub fn weight_len(&self) -> usize {
        self.out_c * (self.in_c / self.groups) * self.kernel[0] * self.kernel[1]
    }
    /// Multiply-adds of the forward pass.
    pub fn macs(&self) -> usize {
        self.batch * self.out_h() * self.out_w() * self.weight_len()
    }
}

pub fn out_size(input: usize, k: usize, stride: usize, pad: usize, dil: usize) -> usize {
    (input + 2 * pad).saturating_sub(dil * (k - 1) + 1) / stride + 1
}

/// Kernel variant; chosen per adapter class, overridable for tests and benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConvVariant {
    /// Barrier-free 4x4 register blocks: best on CPU adapters (lavapipe).
    Blocked,
    /// 64x64 shared-memory tiles: best on GPUs.
    Tiled,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct ConvParams {
    batch: u32,
    in_c: u32,
    in_h: u32,
    in_w: u32,
    out_c: u32,
    out_h: u32,
    out_w: u32,
    groups: u32,
    red_c: u32,
    out_cg: u32,
    out_cg4: u32,
    k_h: u32,
    k_w: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
    dil_h: u32,
    dil_w: u32,
    flags: u32,
}

const FLAG_RELU: u32 = 1;
const FLAG_BIAS: u32 = 2;

pub struct ConvKernels {
    pub variant: ConvVariant,
    blocked: [Kernel; 2],
    tiled: [Kernel; 2],
}

impl ConvKernels {
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "conv.wgsl");
        let st = [Access::Read, Access::Read, Access::Read, Access::ReadWrite];
        let make = |entry, backward: bool, wg| {
            Kernel::new(ctx, &m, entry, &st, &[("BACKWARD", backward as u32 as f64)], wg)
        };
        Self {
            variant: match ctx.class {
                AdapterClass::Cpu => ConvVariant::Blocked,
                AdapterClass::Gpu => ConvVariant::Tiled,
            },
            blocked: [make("conv_blocked", false, 64), make("conv_blocked", true, 64)],
            tiled: [make("conv_tiled", false, 256), make("conv_tiled", true, 256)],
        }
    }

    /// y = conv(x, w) + bias, optionally ReLU. `w` holds [`pack_forward`] output.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        ctx: &GpuContext,
        s: &ConvShape,
        relu: bool,
        x: &wgpu::Buffer,
        w: &wgpu::Buffer,
        bias: Option<&wgpu::Buffer>,
        y: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let g = s.groups;
        let p = ConvParams {
            batch: u(s.batch),
            in_c: u(s.in_c),
            in_h: u(s.in_h),
            in_w: u(s.in_w),
            out_c: u(s.out_c),
            out_h: u(s.out_h()),
            out_w: u(s.out_w()),
            groups: u(g),
            red_c: u(s.in_c / g),
            out_cg: u(s.out_c / g),
            out_cg4: u((s.out_c / g).div_ceil(4)),
            k_h: u(s.kernel[0]),
            k_w: u(s.kernel[1]),
            stride_h: u(s.stride[0]),
            stride_w: u(s.stride[1]),
            pad_h: u(s.padding[0]),
            pad_w: u(s.padding[1]),
            dil_h: u(s.dilation[0]),
            dil_w: u(s.dilation[1]),
            flags: (relu as u32 * FLAG_RELU) | (bias.is_some() as u32 * FLAG_BIAS),
        };
        self.dispatch(ctx, &p, 0, [x, w, bias.unwrap_or(dummy), y])
    }

    /// dx = conv_transpose(dy, w): the gradient of a conv's input. `w` holds
    /// [`pack_backward`] output; `dy` has `s.batch` rows.
    pub fn backward_data(
        &self,
        ctx: &GpuContext,
        s: &ConvShape,
        dy: &wgpu::Buffer,
        w: &wgpu::Buffer,
        dx: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let g = s.groups;
        let p = ConvParams {
            batch: u(s.batch),
            in_c: u(s.out_c),
            in_h: u(s.out_h()),
            in_w: u(s.out_w()),
            out_c: u(s.in_c),
            out_h: u(s.in_h),
            out_w: u(s.in_w),
            groups: u(g),
            red_c: u(s.out_c / g),
            out_cg: u(s.in_c / g),
            out_cg4: u((s.in_c / g).div_ceil(4)),
            k_h: u(s.kernel[0]),
            k_w: u(s.kernel[1]),
            stride_h: u(s.stride[0]),
            stride_w: u(s.stride[1]),
            pad_h: u(s.padding[0]),
            pad_w: u(s.padding[1]),
            dil_h: u(s.dilation[0]),
            dil_w: u(s.dilation[1]),
            flags: 0,
        };
        self.dispatch(ctx, &p, 1, [dy, w, dummy, dx])
    }

    fn dispatch(
        &self,
        ctx: &GpuContext,
        p: &ConvParams,
        dir: usize,
        bufs: [&wgpu::Buffer; 4],
    ) -> Dispatch {
        let plane = (p.out_h * p.out_w) as u64;
        match self.variant {
            ConvVariant::Blocked => {
                let threads =
                    p.batch as u64 * p.groups as u64 * p.out_cg4 as u64 * plane.div_ceil(4);
                self.blocked[dir].dispatch(ctx, p, &bufs, threads)
            }
            ConvVariant::Tiled => {
                let tiles_px = plane.div_ceil(64) as u32;
                let tiles_co = p.out_cg4.div_ceil(16) * p.groups;
                let wg = [tiles_px, tiles_co, p.batch];
                if wg.iter().any(|&d| d > ctx.max_workgroups_per_dim) {
                    // Fall back rather than exceed the grid limit.
                    let threads =
                        p.batch as u64 * p.groups as u64 * p.out_cg4 as u64 * plane.div_ceil(4);
                    return self.blocked[dir].dispatch(ctx, p, &bufs, threads);
                }
                self.tiled[dir].dispatch_groups(ctx, p, &bufs, wg)
            }
        }
    }
}

/// Packs a PyTorch weight `[out_c, in_c/g, kh, kw]` as `[g][r = (ci, kh, kw)][co padded to 4]`.
pub fn pack_forward(w: &[f32], s: &ConvShape) -> Vec<f32> {
    let g = s.groups;
    let (ocg, icg) = (s.out_c / g, s.in_c / g);
    let kk = s.kernel[0] * s.kernel[1];
    let ocp = ocg.div_ceil(4) * 4;
    let mut out = vec![0.0; g * icg * kk * ocp];
    for gi in 0..g {
        for co in 0..ocg {
            for ci in 0..icg {
                for k in 0..kk {
                    let src = (((gi * ocg + co) * icg + ci) * kk) + k;
                    let r = ci * kk + k;
                    out[(gi * icg * kk + r) * ocp + co] = w[src];
                }
            }
        }
    }
    out
}

/// Packs the same weight for backward-data: `[g][r = (co, kh, kw)][ci padded to 4]`.
pub fn pack_backward(w: &[f32], s: &ConvShape) -> Vec<f32> {
    let g = s.groups;
    let (ocg, icg) = (s.out_c / g, s.in_c / g);
    let kk = s.kernel[0] * s.kernel[1];
    let icp = icg.div_ceil(4) * 4;
    let mut out = vec![0.0; g * ocg * kk * icp];
    for gi in 0..g {
        for co in 0..ocg {
            for ci in 0..icg {
                for k in 0..kk {
                    let src = (((gi * ocg + co) * icg + ci) * kk) + k;
                    let r = co * kk + k;
                    out[(gi * ocg * kk + r) * icp + ci] = w[src];
                }
            }
        }
    }
    out
}
