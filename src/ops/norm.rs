//! Normalisation over rows of contiguous values: LayerNorm and GroupNorm
//! (shaders/norm.wgsl; f64 twin in `reference::norm`).

use super::staging::Staging;
use super::{module, u};
use crate::gpu::{Access, Dispatch, GpuContext, Kernel, Slot};

/// How a normalisation splits an image into rows, and which affine entry each value reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NormShape {
    /// Rows per image: LayerNorm's product of the dims before its axis, GroupNorm's groups.
    pub rows: usize,
    /// Values per row, normalised together.
    pub len: usize,
    /// Value j of row r reads affine entry `((r % groups) * len + j) / plane`: LayerNorm
    /// has 1 and 1 (entry j), GroupNorm its groups and H*W (entry = channel).
    pub groups: usize,
    pub plane: usize,
    pub eps: f32,
}

impl NormShape {
    /// Affine entries: the weight's length (and the bias's).
    pub fn affine_len(&self) -> usize {
        self.groups * self.len / self.plane
    }

    /// The affine entry of value `j` of (forward) row `r`.
    pub fn affine_index(&self, r: usize, j: usize) -> usize {
        ((r % self.groups) * self.len + j) / self.plane
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct NormParams {
    rows: u32,
    len: u32,
    groups: u32,
    plane: u32,
    per_img: u32,
    rep: u32,
    eps: f32,
    _pad: u32,
}

pub struct NormKernels {
    forward: Kernel,
    /// `forward` reading a texture copy of x, where the adapter prefers textures.
    forward_staged: Option<(Kernel, Staging)>,
    backward: Kernel,
}

impl NormKernels {
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "norm.wgsl");
        let st = [Access::Read, Access::Read, Access::Read, Access::ReadWrite];
        Self {
            forward: Kernel::new(ctx, &m, "norm_forward", &st, &[], 64),
            forward_staged: Some(Staging::new(ctx))
                .filter(Staging::enabled)
                .map(|staging| {
                    let slots = [
                        (5, Slot::ReadTexture(wgpu::TextureFormat::Rgba32Float)),
                        (3, Slot::Buffer(Access::Read)),
                        (4, Slot::Buffer(Access::ReadWrite)),
                    ];
                    let k = Kernel::with_slots(ctx, &m, "norm_forward_staged", &slots, &[], 64);
                    (k, staging)
                }),
            backward: Kernel::new(ctx, &m, "norm_backward", &st, &[], 64),
        }
    }

    fn params(s: &NormShape, rows: usize, rep: usize) -> NormParams {
        NormParams {
            rows: u(rows),
            len: u(s.len),
            groups: u(s.groups),
            plane: u(s.plane),
            per_img: u(s.rows),
            rep: u(rep.max(1)),
            eps: s.eps,
            _pad: 0,
        }
    }

    /// y = (x - mean) / sqrt(var + eps) * weight + bias for `n` images; `affine` holds the
    /// weights then the biases ([`NormShape::affine_len`] each).
    pub fn forward(
        &self,
        ctx: &GpuContext,
        s: &NormShape,
        n: usize,
        x: &wgpu::Buffer,
        affine: &wgpu::Buffer,
        y: &wgpu::Buffer,
    ) -> Dispatch {
        let rows = n * s.rows;
        let p = Self::params(s, rows, 1);
        let staged = self.forward_staged.as_ref().and_then(|(k, staging)| {
            let (view, copy) = staging.stage(ctx, x, (rows * s.len) as u64)?;
            let resources = vec![
                wgpu::BindingResource::TextureView(&view),
                affine.as_entire_binding(),
                y.as_entire_binding(),
            ];
            let grid = crate::gpu::grid((rows as u64).div_ceil(64), ctx.max_workgroups_per_dim);
            Some(copy(k.dispatch_bound(ctx, &p, resources, grid)))
        });
        staged.unwrap_or_else(|| {
            self.forward
                .dispatch(ctx, &p, &[x, x, affine, y], rows as u64)
        })
    }

    /// dx for `grads` gradient images (`rep` per forward image of `x`), from dy.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        ctx: &GpuContext,
        s: &NormShape,
        grads: usize,
        rep: usize,
        dy: &wgpu::Buffer,
        x: &wgpu::Buffer,
        affine: &wgpu::Buffer,
        dx: &wgpu::Buffer,
    ) -> Dispatch {
        let rows = grads * s.rows;
        let p = Self::params(s, rows, rep);
        self.backward
            .dispatch(ctx, &p, &[dy, x, affine, dx], rows as u64)
    }
}
