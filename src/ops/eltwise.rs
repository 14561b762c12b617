//! Residual add, ReLU, per-channel affine, and gradient accumulation (shaders/eltwise.wgsl).

use super::{module, u};
use crate::gpu::{Access, Dispatch, GpuContext, Kernel};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct EltParams {
    len: u32,
    per_img: u32,
    rep: u32,
    channels: u32,
    plane: u32,
    flags: u32,
    scale: f32,
    _p1: u32,
}

const FLAG_RELU: u32 = 1;
const FLAG_ACCUMULATE: u32 = 4;
const FLAG_MAX: u32 = 8;
const FLAG_SCALE: u32 = 16;
const FLAG_GUIDED: u32 = 32;

pub struct EltwiseKernels {
    add: Kernel,
    relu_fwd: Kernel,
    relu_bwd: Kernel,
    affine_fwd: Kernel,
    affine_bwd: Kernel,
    add_into: Kernel,
}

impl EltwiseKernels {
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "eltwise.wgsl");
        let st = [Access::Read, Access::Read, Access::ReadWrite];
        let k = |e| Kernel::new(ctx, &m, e, &st, &[], 256);
        Self {
            add: k("add"),
            relu_fwd: k("relu_forward"),
            relu_bwd: k("relu_backward"),
            affine_fwd: k("affine_forward"),
            affine_bwd: k("affine_backward"),
            add_into: k("add_into"),
        }
    }

    fn run(k: &Kernel, ctx: &GpuContext, p: EltParams, bufs: [&wgpu::Buffer; 3]) -> Dispatch {
        k.dispatch(ctx, &p, &bufs, p.len as u64)
    }

    /// out = a + b, optionally followed by ReLU.
    pub fn add(
        &self,
        ctx: &GpuContext,
        len: usize,
        relu: bool,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Dispatch {
        let p = EltParams {
            len: u(len),
            flags: relu as u32 * FLAG_RELU,
            ..Default::default()
        };
        Self::run(&self.add, ctx, p, [a, b, out])
    }

    pub fn relu_forward(
        &self,
        ctx: &GpuContext,
        len: usize,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let p = EltParams {
            len: u(len),
            ..Default::default()
        };
        Self::run(&self.relu_fwd, ctx, p, [x, dummy, y])
    }

    /// dx = dy * (y > 0). `dy` has `rows` rows of `per_img` values; row r reads forward
    /// image r / rep of `y`.
    #[allow(clippy::too_many_arguments)]
    pub fn relu_backward(
        &self,
        ctx: &GpuContext,
        rows: usize,
        per_img: usize,
        rep: usize,
        dy: &wgpu::Buffer,
        y: &wgpu::Buffer,
        dx: &wgpu::Buffer,
    ) -> Dispatch {
        self.relu_backward_mode(ctx, rows, per_img, rep, false, dy, y, dx)
    }

    /// [`Self::relu_backward`], or guided backpropagation's ReLU (which also zeroes negative
    /// incoming gradients) when `guided`.
    #[allow(clippy::too_many_arguments)]
    pub fn relu_backward_mode(
        &self,
        ctx: &GpuContext,
        rows: usize,
        per_img: usize,
        rep: usize,
        guided: bool,
        dy: &wgpu::Buffer,
        y: &wgpu::Buffer,
        dx: &wgpu::Buffer,
    ) -> Dispatch {
        let p = EltParams {
            len: u(rows * per_img),
            per_img: u(per_img),
            rep: u(rep.max(1)),
            flags: guided as u32 * FLAG_GUIDED,
            ..Default::default()
        };
        Self::run(&self.relu_bwd, ctx, p, [dy, y, dx])
    }

    /// y = x * scale[c] + shift[c]; `scale_shift` holds all scales then all shifts.
    #[allow(clippy::too_many_arguments)]
    pub fn affine_forward(
        &self,
        ctx: &GpuContext,
        len: usize,
        channels: usize,
        plane: usize,
        relu: bool,
        x: &wgpu::Buffer,
        scale_shift: &wgpu::Buffer,
        y: &wgpu::Buffer,
    ) -> Dispatch {
        let p = EltParams {
            len: u(len),
            channels: u(channels),
            plane: u(plane),
            flags: relu as u32 * FLAG_RELU,
            ..Default::default()
        };
        Self::run(&self.affine_fwd, ctx, p, [x, scale_shift, y])
    }

    /// dx = dy * scale[c].
    #[allow(clippy::too_many_arguments)]
    pub fn affine_backward(
        &self,
        ctx: &GpuContext,
        len: usize,
        channels: usize,
        plane: usize,
        dy: &wgpu::Buffer,
        scale_shift: &wgpu::Buffer,
        dx: &wgpu::Buffer,
    ) -> Dispatch {
        let p = EltParams {
            len: u(len),
            channels: u(channels),
            plane: u(plane),
            ..Default::default()
        };
        Self::run(&self.affine_bwd, ctx, p, [dy, scale_shift, dx])
    }

    /// dst = src, or dst += src when `accumulate`.
    pub fn add_into(
        &self,
        ctx: &GpuContext,
        len: usize,
        accumulate: bool,
        src: &wgpu::Buffer,
        dst: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let p = EltParams {
            len: u(len),
            flags: accumulate as u32 * FLAG_ACCUMULATE,
            ..Default::default()
        };
        Self::run(&self.add_into, ctx, p, [src, dummy, dst])
    }
}

/// How [`EltwiseKernels::combine_into`] merges into its destination.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Merge {
    /// dst = scale * src
    Set(f32),
    /// dst += scale * src
    Add(f32),
    /// dst = max(dst, src)
    Max,
}

impl EltwiseKernels {
    /// Merges `src` into `dst` element-wise.
    pub fn combine_into(
        &self,
        ctx: &GpuContext,
        len: usize,
        merge: Merge,
        src: &wgpu::Buffer,
        dst: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let (flags, scale) = match merge {
            Merge::Set(s) => (FLAG_SCALE, s),
            Merge::Add(s) => (FLAG_SCALE | FLAG_ACCUMULATE, s),
            Merge::Max => (FLAG_MAX, 1.0),
        };
        let p = EltParams {
            len: u(len),
            flags,
            scale,
            ..Default::default()
        };
        Self::run(&self.add_into, ctx, p, [src, dummy, dst])
    }
}
