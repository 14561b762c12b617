//! Residual add, ReLU, the other element-wise activations, per-channel affine, products,
//! channel slices (concatenation), and gradient accumulation (shaders/eltwise.wgsl).

use super::staging::Staging;
use super::{module, u};
use crate::gpu::{Access, Dispatch, GpuContext, Kernel, Slot};
use std::collections::HashMap;
use std::sync::Mutex;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct EltParams {
    len: u32,
    per_img: u32,
    rep: u32,
    channels: u32,
    plane: u32,
    flags: u32,
    /// Merge scale; a parametric activation's two parameters are `scale` and `shift`.
    scale: f32,
    shift: f32,
    src_per: u32,
    src_off: u32,
    dst_per: u32,
    dst_off: u32,
}

const FLAG_RELU: u32 = 1;
const FLAG_ACCUMULATE: u32 = 4;
const FLAG_MAX: u32 = 8;
const FLAG_SCALE: u32 = 16;
const FLAG_GUIDED: u32 = 32;
const FLAG_BROADCAST: u32 = 64;
const FLAG_MUL: u32 = 128;

/// An element-wise activation other than ReLU (which fuses into its producer and has a guided
/// mode): its forward and backward entry points in shaders/eltwise.wgsl. An op module
/// declares its own; the kernels are built on first use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Activation {
    /// `y = f(x)` over `len` values.
    pub forward: &'static str,
    /// `dx = dy * f'(.)`, reading the forward output (or input, see `reads_input`).
    pub backward: &'static str,
    /// The backward reads the forward input (SiLU) rather than the output.
    pub reads_input: bool,
    /// A forward entry point that reads x as a texture copy, one texel per invocation
    /// (see [`crate::ops::staging`]), used where the adapter prefers textures.
    pub staged: Option<&'static str>,
}

impl Activation {
    pub const SIGMOID: Self = Self {
        forward: "sigmoid_forward",
        backward: "sigmoid_backward",
        reads_input: false,
        staged: None,
    };
    /// clamp(x, 0, 6)
    pub const RELU6: Self = Self {
        forward: "relu6_forward",
        backward: "relu6_backward",
        reads_input: false,
        staged: None,
    };
    /// x * sigmoid(x)
    pub const SILU: Self = Self {
        forward: "silu_forward",
        backward: "silu_backward",
        reads_input: true,
        staged: None,
    };

    /// Whether the backward pass reads the forward input rather than the output.
    pub fn backward_reads_input(self) -> bool {
        self.reads_input
    }
}

/// A row-strided range of a buffer: row r covers `offset + r * per_row ..`.
#[derive(Clone, Copy, Debug)]
pub struct Slice<'a> {
    pub buf: &'a wgpu::Buffer,
    pub per_row: usize,
    pub offset: usize,
}

pub struct EltwiseKernels {
    add: Kernel,
    add4: Kernel,
    relu_fwd: Kernel,
    relu_bwd: Kernel,
    affine_fwd: Kernel,
    affine_bwd: Kernel,
    add_into: Kernel,
    /// Forward and backward per [`Activation`] entry, built on first use.
    activations: Mutex<HashMap<&'static str, [Kernel; 2]>>,
    /// [`Activation::staged`] entries, built on first use, and their input's texture.
    staged: Mutex<HashMap<&'static str, Kernel>>,
    staging: Staging,
    module: wgpu::ShaderModule,
    mul: Kernel,
    mul_reduce: Kernel,
    copy_slice: Kernel,
}

impl EltwiseKernels {
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "eltwise.wgsl");
        let st = [Access::Read, Access::Read, Access::ReadWrite];
        let k = |e| Kernel::new(ctx, &m, e, &st, &[], 256);
        let kernels = Self {
            add: k("add"),
            add4: Kernel::with_slots(
                ctx,
                &m,
                "add4",
                &[
                    (4, Slot::Buffer(Access::Read)),
                    (5, Slot::Buffer(Access::Read)),
                    (6, Slot::Buffer(Access::ReadWrite)),
                ],
                &[],
                256,
            ),
            relu_fwd: k("relu_forward"),
            relu_bwd: k("relu_backward"),
            affine_fwd: k("affine_forward"),
            affine_bwd: k("affine_backward"),
            add_into: k("add_into"),
            activations: Mutex::default(),
            staged: Mutex::default(),
            staging: Staging::new(ctx),
            mul: k("mul"),
            mul_reduce: k("mul_reduce"),
            copy_slice: k("copy_slice"),
            module: m.clone(),
        };
        // The bundled activations now, so that they land in the pipeline cache.
        for act in [Activation::SIGMOID, Activation::RELU6, Activation::SILU] {
            kernels.activation(ctx, act, |_| ());
        }
        kernels
    }

    /// Runs `f` on the activation's [forward, backward] kernels, building them first if new.
    fn activation<R>(
        &self,
        ctx: &GpuContext,
        act: Activation,
        f: impl FnOnce(&[Kernel; 2]) -> R,
    ) -> R {
        let mut built = self
            .activations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let pair = built.entry(act.forward).or_insert_with(|| {
            let st = [Access::Read, Access::Read, Access::ReadWrite];
            let k = |entry| Kernel::new(ctx, &self.module, entry, &st, &[], 256);
            [k(act.forward), k(act.backward)]
        });
        f(pair)
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
        if len.is_multiple_of(4) {
            return self.add4.dispatch(ctx, &p, &[a, b, out], len as u64 / 4);
        }
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

impl EltwiseKernels {
    /// y = act(x) over `len` values. `params` are a parametric activation's two parameters
    /// (HardSigmoid's alpha and beta, Clip's bounds); the others ignore them.
    #[allow(clippy::too_many_arguments)]
    pub fn activation_forward(
        &self,
        ctx: &GpuContext,
        act: Activation,
        params: [f32; 2],
        len: usize,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let p = EltParams {
            len: u(len),
            scale: params[0],
            shift: params[1],
            ..Default::default()
        };
        if let Some(entry) = act.staged
            && len.is_multiple_of(4)
            && let Some((view, copy)) = self.staging.stage(ctx, x, len as u64)
        {
            let mut built = self
                .staged
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let k = built.entry(entry).or_insert_with(|| {
                let slots = [
                    (7, Slot::ReadTexture(wgpu::TextureFormat::Rgba32Float)),
                    (6, Slot::Buffer(Access::ReadWrite)),
                ];
                Kernel::with_slots(ctx, &self.module, entry, &slots, &[], 256)
            });
            let resources = vec![
                wgpu::BindingResource::TextureView(&view),
                y.as_entire_binding(),
            ];
            let groups = (len as u64 / 4).div_ceil(256);
            let grid = crate::gpu::grid(groups, ctx.max_workgroups_per_dim);
            return copy(k.dispatch_bound(ctx, &p, resources, grid));
        }
        self.activation(ctx, act, |k| Self::run(&k[0], ctx, p, [x, dummy, y]))
    }

    /// dx = dy * act'(x). `forward` is the forward output, or the input where
    /// [`Activation::backward_reads_input`]; `dy` has `rows` rows of `per_img` values and
    /// row r reads forward image r / rep. `params` as in [`Self::activation_forward`].
    #[allow(clippy::too_many_arguments)]
    pub fn activation_backward(
        &self,
        ctx: &GpuContext,
        act: Activation,
        params: [f32; 2],
        rows: usize,
        per_img: usize,
        rep: usize,
        dy: &wgpu::Buffer,
        forward: &wgpu::Buffer,
        dx: &wgpu::Buffer,
    ) -> Dispatch {
        let p = EltParams {
            len: u(rows * per_img),
            per_img: u(per_img),
            rep: u(rep.max(1)),
            scale: params[0],
            shift: params[1],
            ..Default::default()
        };
        self.activation(ctx, act, |k| Self::run(&k[1], ctx, p, [dy, forward, dx]))
    }

    /// out = a * b over `rows` rows of `[channels, plane]` in `a`; `b` holds one image per
    /// `rep` rows, of the same shape or, when `broadcast`, `[channels]` per image. With rep 1
    /// it is the forward product; with `a` = dy, the gradient of a factor shaped like dy.
    #[allow(clippy::too_many_arguments)]
    pub fn mul(
        &self,
        ctx: &GpuContext,
        rows: usize,
        channels: usize,
        plane: usize,
        rep: usize,
        broadcast: bool,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Dispatch {
        let p = EltParams {
            len: u(rows * channels * plane),
            per_img: u(channels * plane),
            rep: u(rep.max(1)),
            channels: u(channels),
            plane: u(plane),
            flags: broadcast as u32 * FLAG_BROADCAST,
            ..Default::default()
        };
        Self::run(&self.mul, ctx, p, [a, b, out])
    }

    /// The gradient of a per-channel factor: db[row, c] = sum over the plane of
    /// dy[row, c] * x[row / rep, c], `x` being the other factor.
    #[allow(clippy::too_many_arguments)]
    pub fn mul_reduce(
        &self,
        ctx: &GpuContext,
        rows: usize,
        channels: usize,
        plane: usize,
        rep: usize,
        dy: &wgpu::Buffer,
        x: &wgpu::Buffer,
        db: &wgpu::Buffer,
    ) -> Dispatch {
        let p = EltParams {
            len: u(rows * channels),
            rep: u(rep.max(1)),
            channels: u(channels),
            plane: u(plane),
            ..Default::default()
        };
        Self::run(&self.mul_reduce, ctx, p, [dy, x, db])
    }

    /// Copies `count` values per row for `rows` rows from `src` into `dst` (adding when
    /// `accumulate`): a concatenation's input into its channel range (forward) and that
    /// range of the gradient back (backward).
    pub fn copy_slice(
        &self,
        ctx: &GpuContext,
        rows: usize,
        count: usize,
        accumulate: bool,
        src: Slice,
        dst: Slice,
    ) -> Dispatch {
        let p = EltParams {
            len: u(rows * count),
            per_img: u(count),
            flags: accumulate as u32 * FLAG_ACCUMULATE,
            src_per: u(src.per_row),
            src_off: u(src.offset),
            dst_per: u(dst.per_row),
            dst_off: u(dst.offset),
            ..Default::default()
        };
        Self::run(&self.copy_slice, ctx, p, [src.buf, src.buf, dst.buf])
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
    /// dst *= src
    Mul,
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
            Merge::Mul => (FLAG_MUL, 1.0),
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
