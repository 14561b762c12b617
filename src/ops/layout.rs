//! Layout ops: a strided gather (transpose, slice, pad, their backward passes, and the
//! broadcast back of a mean), a gather by an index map (a folded target layer) and a sum
//! over a contiguous block of dims (shaders/layout.wgsl).

use super::staging::Staging;
use super::{module, u};
use crate::gpu::{Access, Dispatch, GpuContext, Kernel, Slot};

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct LayoutParams {
    dims: [u32; 4],
    lo: [u32; 4],
    hi: [u32; 4],
    stride: [u32; 4],
    misc: [u32; 4],
    fill: f32,
    scale: f32,
    _p: [u32; 2],
}

const FLAG_ACCUMULATE: u32 = 1;

/// What [`LayoutKernels::gather`] reads for each element `o` of a `[E0, E1, E2]` box per
/// row: `scale * src[row * row_stride + offset + sum_d (o_d - lo_d) * stride_d]` inside the
/// window `lo <= o < hi`, `fill` outside.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gather {
    pub dims: [usize; 3],
    pub lo: [usize; 3],
    pub hi: [usize; 3],
    /// Source strides per box dim (0 broadcasts).
    pub stride: [usize; 3],
    pub row_stride: usize,
    pub offset: usize,
    pub fill: f32,
    pub scale: f32,
}

impl Gather {
    /// A plain read of the whole box: window everything, no offset, no fill, scale 1.
    pub fn new(dims: [usize; 3], stride: [usize; 3], row_stride: usize) -> Self {
        Self {
            dims,
            lo: [0; 3],
            hi: dims,
            stride,
            row_stride,
            offset: 0,
            fill: 0.0,
            scale: 1.0,
        }
    }
}

impl Gather {
    /// Whether every element of the box's last dim is read, contiguously, from offsets that
    /// are multiples of 4, so that [`LayoutKernels::gather`] can move vec4s.
    fn by4(&self) -> bool {
        let aligned = [
            self.dims[2],
            self.stride[0],
            self.stride[1],
            self.row_stride,
            self.offset,
        ]
        .iter()
        .all(|v| v % 4 == 0);
        aligned && self.stride[2] == 1 && self.lo[2] == 0 && self.hi[2] == self.dims[2]
    }
}

impl Gather {
    /// One past the last source element `rows` rows of the box read (0 if none).
    fn source_extent(&self, rows: usize) -> usize {
        let span = |d: usize| self.hi[d].saturating_sub(self.lo[d]);
        if rows == 0 || (0..3).any(|d| span(d) == 0 || self.dims[d] == 0) {
            return 0;
        }
        let last: usize = (0..3)
            .map(|d| (span(d).min(self.dims[d]) - 1) * self.stride[d])
            .sum();
        (rows - 1) * self.row_stride + self.offset + last + 1
    }
}

/// Row-major strides of a shape.
pub fn strides(s: [usize; 3]) -> [usize; 3] {
    [s[1] * s[2], s[2], 1]
}

/// An [`LayoutKernels::index_gather`] index that reads nothing: the element is 0.
pub const NO_INDEX: u32 = u32::MAX;

pub struct LayoutKernels {
    gather: Kernel,
    /// `gather` by vec4 where the last dim is contiguous and 4-aligned ([`Gather::by4`]).
    gather4: Kernel,
    /// `gather4` reading a texture copy of its source, where the adapter prefers textures.
    gather4_staged: Option<(Kernel, Staging)>,
    index_gather: Kernel,
    reduce_sum: Kernel,
}

fn quad(v: [usize; 3], w: usize) -> [u32; 4] {
    [u(v[0]), u(v[1]), u(v[2]), u(w)]
}

impl LayoutKernels {
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "layout.wgsl");
        let st = [Access::Read, Access::ReadWrite];
        Self {
            gather: Kernel::new(ctx, &m, "gather", &st, &[], 256),
            gather4: Kernel::with_slots(
                ctx,
                &m,
                "gather4",
                &[
                    (4, Slot::Buffer(Access::Read)),
                    (5, Slot::Buffer(Access::ReadWrite)),
                ],
                &[],
                256,
            ),
            gather4_staged: Some(Staging::new(ctx))
                .filter(Staging::enabled)
                .map(|staging| {
                    let slots = [
                        (6, Slot::ReadTexture(wgpu::TextureFormat::Rgba32Float)),
                        (5, Slot::Buffer(Access::ReadWrite)),
                    ];
                    let k = Kernel::with_slots(ctx, &m, "gather4_staged", &slots, &[], 256);
                    (k, staging)
                }),
            index_gather: Kernel::new(
                ctx,
                &m,
                "index_gather",
                &[Access::Read, Access::ReadWrite, Access::Read],
                &[],
                256,
            ),
            reduce_sum: Kernel::new(ctx, &m, "reduce_sum", &st, &[], 256),
        }
    }

    /// `dst` (contiguous, `rows` boxes) = the [`Gather`] of `src`, added when `accumulate`.
    pub fn gather(
        &self,
        ctx: &GpuContext,
        rows: usize,
        g: &Gather,
        accumulate: bool,
        src: &wgpu::Buffer,
        dst: &wgpu::Buffer,
    ) -> Dispatch {
        let len = rows * g.dims.iter().product::<usize>();
        let p = LayoutParams {
            dims: quad(g.dims, len),
            lo: quad(g.lo, 0),
            hi: quad(g.hi, 0),
            stride: quad(g.stride, g.row_stride),
            misc: [u(g.offset), accumulate as u32 * FLAG_ACCUMULATE, 0, 0],
            fill: g.fill,
            scale: g.scale,
            ..Default::default()
        };
        // One invocation per 4 elements along the last dim.
        let threads = rows * g.dims[0] * g.dims[1] * g.dims[2].div_ceil(4);
        if !g.by4() {
            return self.gather.dispatch(ctx, &p, &[src, dst], threads as u64);
        }
        let staged = self.gather4_staged.as_ref().and_then(|(k, staging)| {
            let (view, copy) = staging.stage(ctx, src, g.source_extent(rows) as u64)?;
            let resources = vec![
                wgpu::BindingResource::TextureView(&view),
                dst.as_entire_binding(),
            ];
            let groups = (threads as u64).div_ceil(256);
            let grid = crate::gpu::grid(groups, ctx.max_workgroups_per_dim);
            Some(copy(k.dispatch_bound(ctx, &p, resources, grid)))
        });
        staged.unwrap_or_else(|| self.gather4.dispatch(ctx, &p, &[src, dst], threads as u64))
    }

    /// `dst[row, i] = src[row * src_row + index[i]]` for `rows` rows of `index.len()`
    /// elements (0 where the index is [`NO_INDEX`]), added when `accumulate`. `index` holds
    /// `per_row` u32.
    #[allow(clippy::too_many_arguments)]
    pub fn index_gather(
        &self,
        ctx: &GpuContext,
        rows: usize,
        per_row: usize,
        src_row: usize,
        index: &wgpu::Buffer,
        accumulate: bool,
        src: &wgpu::Buffer,
        dst: &wgpu::Buffer,
    ) -> Dispatch {
        let len = rows * per_row;
        let p = LayoutParams {
            dims: [u(per_row), 0, 0, u(len)],
            stride: [0, 0, 0, u(src_row)],
            misc: [0, accumulate as u32 * FLAG_ACCUMULATE, 0, 0],
            ..Default::default()
        };
        self.index_gather
            .dispatch(ctx, &p, &[src, dst, index], len as u64)
    }

    /// `dst[a, b] = scale * sum_l src[a, l, b]`, `src` viewed as `[outer, len, inner]`
    /// (`outer` counts every row).
    #[allow(clippy::too_many_arguments)]
    pub fn reduce_sum(
        &self,
        ctx: &GpuContext,
        outer: usize,
        len: usize,
        inner: usize,
        scale: f32,
        src: &wgpu::Buffer,
        dst: &wgpu::Buffer,
    ) -> Dispatch {
        let count = outer * inner;
        let p = LayoutParams {
            dims: quad([outer, len, inner], count),
            scale,
            ..Default::default()
        };
        self.reduce_sum.dispatch(ctx, &p, &[src, dst], count as u64)
    }
}
