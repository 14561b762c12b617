//! Max, average and adaptive-average pooling, forward and backward (shaders/pool.wgsl).

use super::{module, u};
use crate::gpu::{Access, Dispatch, GpuContext, Kernel, Slot};

/// Pooling window, PyTorch semantics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolWindow {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub ceil_mode: bool,
    /// Average pooling only.
    pub count_include_pad: bool,
}

impl PoolWindow {
    pub fn out_size(&self, input: [usize; 2]) -> [usize; 2] {
        [0, 1].map(|d| {
            pool_out_size(
                input[d],
                self.kernel[d],
                self.stride[d],
                self.padding[d],
                self.dilation[d],
                self.ceil_mode,
            )
        })
    }
}

/// PyTorch's pooling_output_shape, including the ceil_mode rule that the last window must
/// start inside the input or left padding.
pub fn pool_out_size(
    input: usize,
    k: usize,
    stride: usize,
    pad: usize,
    dil: usize,
    ceil: bool,
) -> usize {
    let span = (input + 2 * pad) as i64 - (dil * (k - 1)) as i64 - 1;
    if span < 0 {
        return 0;
    }
    let s = stride as i64;
    let mut out = if ceil {
        (span + s - 1) / s + 1
    } else {
        span / s + 1
    };
    if ceil && (out - 1) * s >= (input + pad) as i64 {
        out -= 1;
    }
    out as usize
}

/// Shapes of one pooling call: `planes` = rows * channels of the tensor being produced.
#[derive(Clone, Copy, Debug)]
pub struct PoolShape {
    pub planes: usize,
    pub channels: usize,
    pub input: [usize; 2],
    pub output: [usize; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct PoolParams {
    planes: u32,
    channels: u32,
    in_h: u32,
    in_w: u32,
    out_h: u32,
    out_w: u32,
    k_h: u32,
    k_w: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
    dil_h: u32,
    dil_w: u32,
    count_include_pad: u32,
    rep: u32,
}

pub struct PoolKernels {
    max_fwd: Kernel,
    /// `max_fwd` writing the output's twin, reading the input's, or both: built on first use.
    max_fwd_pack: std::sync::OnceLock<Kernel>,
    max_fwd_texels: std::sync::OnceLock<Kernel>,
    max_fwd_texture: std::sync::OnceLock<Kernel>,
    max_bwd: Kernel,
    avg_fwd: Kernel,
    avg_bwd: Kernel,
    adaptive_fwd: Kernel,
    adaptive_bwd: Kernel,
}

impl PoolKernels {
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "pool.wgsl");
        let st = [Access::Read, Access::ReadWrite, Access::ReadWrite];
        let k = |e| Kernel::new(ctx, &m, e, &st, &[], 64);
        Self {
            max_fwd: k("maxpool_forward"),
            max_fwd_pack: std::sync::OnceLock::new(),
            max_fwd_texels: std::sync::OnceLock::new(),
            max_fwd_texture: std::sync::OnceLock::new(),
            max_bwd: k("maxpool_backward"),
            avg_fwd: k("avgpool_forward"),
            avg_bwd: k("avgpool_backward"),
            adaptive_fwd: k("adaptive_avgpool_forward"),
            adaptive_bwd: k("adaptive_avgpool_backward"),
        }
    }

    fn params(s: &PoolShape, w: Option<&PoolWindow>, rep: usize) -> PoolParams {
        let w = w.copied().unwrap_or(PoolWindow {
            kernel: [1, 1],
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            ceil_mode: false,
            count_include_pad: false,
        });
        PoolParams {
            planes: u(s.planes),
            channels: u(s.channels),
            in_h: u(s.input[0]),
            in_w: u(s.input[1]),
            out_h: u(s.output[0]),
            out_w: u(s.output[1]),
            k_h: u(w.kernel[0]),
            k_w: u(w.kernel[1]),
            stride_h: u(w.stride[0]),
            stride_w: u(w.stride[1]),
            pad_h: u(w.padding[0]),
            pad_w: u(w.padding[1]),
            dil_h: u(w.dilation[0]),
            dil_w: u(w.dilation[1]),
            count_include_pad: w.count_include_pad as u32,
            rep: u(rep.max(1)),
        }
    }

    /// Writes the pooled output and the argmax (index within the input plane).
    pub fn max_forward(
        &self,
        ctx: &GpuContext,
        s: &PoolShape,
        w: &PoolWindow,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        argmax: &wgpu::Buffer,
    ) -> Dispatch {
        let n = (s.planes * s.output[0] * s.output[1]) as u64;
        self.max_fwd
            .dispatch(ctx, &Self::params(s, Some(w), 1), &[x, y, argmax], n)
    }

    /// [`PoolKernels::max_forward`] reading `x` from its twin and/or writing `y`'s twin
    /// ([`crate::ops::conv::Twins`]) where given: one invocation per texel of 4 channels.
    #[allow(clippy::too_many_arguments)]
    pub fn max_forward_twins(
        &self,
        ctx: &GpuContext,
        s: &PoolShape,
        w: &PoolWindow,
        x: &wgpu::Buffer,
        x_twin: Option<&wgpu::TextureView>,
        y: &wgpu::Buffer,
        argmax: &wgpu::Buffer,
        twin: Option<&wgpu::TextureView>,
    ) -> Dispatch {
        if x_twin.is_none() && twin.is_none() {
            return self.max_forward(ctx, s, w, x, y, argmax);
        }
        let rgba = wgpu::TextureFormat::Rgba32Float;
        let mut slots = vec![
            (2, Slot::Buffer(Access::ReadWrite)),
            (3, Slot::Buffer(Access::ReadWrite)),
        ];
        let mut bound = vec![y.as_entire_binding(), argmax.as_entire_binding()];
        match x_twin {
            Some(t) => {
                slots.push((5, Slot::ReadTexture(rgba)));
                bound.push(wgpu::BindingResource::TextureView(t));
            }
            None => {
                slots.push((1, Slot::Buffer(Access::Read)));
                bound.push(x.as_entire_binding());
            }
        }
        if let Some(t) = twin {
            slots.push((4, Slot::StorageTexture(rgba)));
            bound.push(wgpu::BindingResource::TextureView(t));
        }
        let (cell, entry) = match (x_twin.is_some(), twin.is_some()) {
            (true, true) => (&self.max_fwd_texture, "maxpool_forward_texture"),
            (true, false) => (&self.max_fwd_texels, "maxpool_forward_texels"),
            (false, _) => (&self.max_fwd_pack, "maxpool_forward_pack"),
        };
        let kernel = cell.get_or_init(|| {
            Kernel::with_slots(ctx, &module(ctx, "pool.wgsl"), entry, &slots, &[], 64)
        });
        let texels = (s.planes / s.channels * s.channels.div_ceil(4)) as u64
            * (s.output[0] * s.output[1]) as u64;
        kernel.dispatch_bound(
            ctx,
            &Self::params(s, Some(w), 1),
            bound,
            crate::gpu::grid(texels.div_ceil(64), ctx.max_workgroups_per_dim),
        )
    }

    /// Routes `dy` to the forward argmax. `s.planes` counts gradient rows; each forward
    /// image serves `rep` consecutive rows.
    #[allow(clippy::too_many_arguments)]
    pub fn max_backward(
        &self,
        ctx: &GpuContext,
        s: &PoolShape,
        w: &PoolWindow,
        rep: usize,
        dy: &wgpu::Buffer,
        argmax: &wgpu::Buffer,
        dx: &wgpu::Buffer,
    ) -> Dispatch {
        let n = (s.planes * s.input[0] * s.input[1]) as u64;
        self.max_bwd
            .dispatch(ctx, &Self::params(s, Some(w), rep), &[dy, dx, argmax], n)
    }

    pub fn avg_forward(
        &self,
        ctx: &GpuContext,
        s: &PoolShape,
        w: &PoolWindow,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let n = (s.planes * s.output[0] * s.output[1]) as u64;
        self.avg_fwd
            .dispatch(ctx, &Self::params(s, Some(w), 1), &[x, y, dummy], n)
    }

    pub fn avg_backward(
        &self,
        ctx: &GpuContext,
        s: &PoolShape,
        w: &PoolWindow,
        dy: &wgpu::Buffer,
        dx: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let n = (s.planes * s.input[0] * s.input[1]) as u64;
        self.avg_bwd
            .dispatch(ctx, &Self::params(s, Some(w), 1), &[dy, dx, dummy], n)
    }

    pub fn adaptive_forward(
        &self,
        ctx: &GpuContext,
        s: &PoolShape,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let n = (s.planes * s.output[0] * s.output[1]) as u64;
        self.adaptive_fwd
            .dispatch(ctx, &Self::params(s, None, 1), &[x, y, dummy], n)
    }

    pub fn adaptive_backward(
        &self,
        ctx: &GpuContext,
        s: &PoolShape,
        dy: &wgpu::Buffer,
        dx: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let n = (s.planes * s.input[0] * s.input[1]) as u64;
        self.adaptive_bwd
            .dispatch(ctx, &Self::params(s, None, 1), &[dy, dx, dummy], n)
    }
}
