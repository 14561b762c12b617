//! Attention's activation-by-activation kernels (shaders/attention.wgsl): the batched matrix
//! product of two activations with its two gradients, and Softmax along an axis. f64 twin
//! in `reference::attention`.

use super::conv::ConvVariant;
use super::conv::{Scratch, grow, texture_capacity, twin_texture};
use super::staging::Staging;
use super::{module, u};
use crate::gpu::{Access, Dispatch, GpuContext, Kernel, Slot};
use std::sync::Mutex;

/// Per-image operands of a batched product: a `[batch_a, m, k]` by b `[batch_b, k, n]`, one
/// batch broadcast where it is 1; the product is `[max batch, m, n]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatMulShape {
    pub a: [usize; 3],
    pub b: [usize; 3],
}

impl MatMulShape {
    pub fn batch(&self) -> usize {
        self.a[0].max(self.b[0])
    }

    pub fn output(&self) -> [usize; 3] {
        [self.batch(), self.a[1], self.b[2]]
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct BmmParams {
    rows: u32,
    batch: u32,
    m: u32,
    n: u32,
    l: u32,
    s: u32,
    x_rep: u32,
    y_rep: u32,
    x_row: u32,
    x_b: u32,
    x_s: u32,
    x_i: u32,
    x_l: u32,
    y_row: u32,
    y_b: u32,
    y_s: u32,
    y_l: u32,
    y_j: u32,
    alpha: f32,
    _p: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct SoftmaxParams {
    lines: u32,
    len: u32,
    inner: u32,
    outer: u32,
    rep: u32,
    _p: [u32; 3],
}

/// Softmax lines of an image `[outer, len, inner]`: along `axis` of `shape`.
pub fn softmax_lines(shape: [usize; 3], axis: usize) -> [usize; 3] {
    [
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    ]
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct PackParams {
    mats: u32,
    batch: u32,
    rep: u32,
    len: u32,
    l: u32,
    l4: u32,
    m_row: u32,
    m_b: u32,
    s_r: u32,
    s_l: u32,
    _p: [u32; 2],
}

/// The texture path's kernels and its two scratch textures (the packed operands), shared by
/// every product of the dispatch lists (they run in order) and grown on demand.
struct TexturePath {
    pack: Kernel,
    bmm: Kernel,
    x: Scratch<wgpu::TextureView>,
    y: Scratch<wgpu::TextureView>,
}

pub struct AttentionKernels {
    bmm: Kernel,
    /// Where the texture conv kernel is the default (CPU adapters).
    texture: Option<TexturePath>,
    softmax_forward: Kernel,
    /// `softmax_forward` reading a texture copy of x, where the adapter prefers textures.
    softmax_staged: Option<(Kernel, Staging)>,
    softmax_backward: Kernel,
}

impl AttentionKernels {
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "attention.wgsl");
        let st = [Access::Read, Access::Read, Access::ReadWrite];
        let rgba = wgpu::TextureFormat::Rgba32Float;
        let texture = (super::conv::default_variant(ctx) == ConvVariant::Texture).then(|| {
            let pack_slots = [
                (1, Slot::Buffer(Access::Read)),
                (4, Slot::StorageTexture(rgba)),
            ];
            let bmm_slots = [
                (3, Slot::Buffer(Access::ReadWrite)),
                (5, Slot::ReadTexture(rgba)),
                (6, Slot::ReadTexture(rgba)),
            ];
            TexturePath {
                pack: Kernel::with_slots(ctx, &m, "bmm_pack", &pack_slots, &[], 64),
                bmm: Kernel::with_slots(ctx, &m, "bmm_texture", &bmm_slots, &[], 64),
                x: Mutex::new(None),
                y: Mutex::new(None),
            }
        });
        Self {
            bmm: Kernel::new(ctx, &m, "bmm", &st, &[], 64),
            texture,
            softmax_forward: Kernel::new(ctx, &m, "softmax_forward", &st, &[], 64),
            softmax_staged: Some(Staging::new(ctx))
                .filter(Staging::enabled)
                .map(|staging| {
                    let slots = [
                        (7, Slot::ReadTexture(rgba)),
                        (3, Slot::Buffer(Access::ReadWrite)),
                    ];
                    let k = Kernel::with_slots(ctx, &m, "softmax_forward_staged", &slots, &[], 64);
                    (k, staging)
                }),
            softmax_backward: Kernel::new(ctx, &m, "softmax_backward", &st, &[], 64),
        }
    }

    fn bmm(
        &self,
        ctx: &GpuContext,
        p: &BmmParams,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Vec<Dispatch> {
        let mats = p.rows as u64 * p.batch as u64;
        let l4 = p.l.div_ceil(4) as u64;
        let (xt, yt) = (mats * p.m as u64 * l4, mats * p.n as u64 * l4);
        let fits = |t: u64| t <= texture_capacity(ctx);
        match &self.texture {
            Some(tp) if p.s == 1 && fits(xt) && fits(yt) => {
                // One operand of `len` rows: its batch repeat, row and batch strides, and
                // the strides along its rows and along the reduction.
                let pack = |slot,
                            texels: u64,
                            buf: &wgpu::Buffer,
                            [rep, len, m_row, m_b, s_r, s_l]: [u32; 6]| {
                    let q = PackParams {
                        mats: u(mats as usize),
                        batch: p.batch,
                        rep,
                        len,
                        l: p.l,
                        l4: l4 as u32,
                        m_row,
                        m_b,
                        s_r,
                        s_l,
                        _p: [0; 2],
                    };
                    let view = grow(slot, texels, || twin_texture(ctx, texels));
                    let d = tp.pack.dispatch_bound(
                        ctx,
                        &q,
                        vec![
                            buf.as_entire_binding(),
                            wgpu::BindingResource::TextureView(&view),
                        ],
                        crate::gpu::grid(texels.div_ceil(64).max(1), ctx.max_workgroups_per_dim),
                    );
                    (d, view)
                };
                let (px, vx) = pack(&tp.x, xt, x, [p.x_rep, p.m, p.x_row, p.x_b, p.x_i, p.x_l]);
                let (py, vy) = pack(&tp.y, yt, y, [p.y_rep, p.n, p.y_row, p.y_b, p.y_j, p.y_l]);
                // One invocation per 8 x 4 block.
                let threads = mats * p.m.div_ceil(8) as u64 * p.n.div_ceil(4) as u64;
                let bmm = tp.bmm.dispatch_bound(
                    ctx,
                    p,
                    vec![
                        out.as_entire_binding(),
                        wgpu::BindingResource::TextureView(&vx),
                        wgpu::BindingResource::TextureView(&vy),
                    ],
                    crate::gpu::grid(threads.div_ceil(64).max(1), ctx.max_workgroups_per_dim),
                );
                let macs = mats * p.m as u64 * p.n as u64 * p.l as u64;
                vec![px, py, bmm.with_macs(macs)]
            }
            _ => {
                // One invocation per 4 x 4 block of the output.
                let threads = mats * p.m.div_ceil(4) as u64 * p.n.div_ceil(4) as u64;
                vec![self.bmm.dispatch(ctx, p, &[x, y, out], threads)]
            }
        }
    }

    /// out = alpha a b for `n` images.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul(
        &self,
        ctx: &GpuContext,
        s: &MatMulShape,
        alpha: f32,
        n: usize,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Vec<Dispatch> {
        let ([ba, m, k], [bb, _, nn]) = (s.a, s.b);
        let p = BmmParams {
            rows: u(n),
            batch: u(s.batch()),
            m: u(m),
            n: u(nn),
            l: u(k),
            s: 1,
            x_rep: 1,
            y_rep: 1,
            x_row: u(ba * m * k),
            x_b: u(if ba > 1 { m * k } else { 0 }),
            x_i: u(k),
            x_l: 1,
            y_row: u(bb * k * nn),
            y_b: u(if bb > 1 { k * nn } else { 0 }),
            y_l: u(nn),
            y_j: 1,
            alpha,
            ..Default::default()
        };
        self.bmm(ctx, &p, a, b, out)
    }

    /// The gradient of operand `which` (0: a, 1: b) of `alpha a b` for `rows` gradient rows
    /// (`rep` per forward image of `a` and `b`) from `dy`; a broadcast operand's gradient is summed over
    /// the batch it was repeated along.
    #[allow(clippy::too_many_arguments)]
    pub fn matmul_backward(
        &self,
        ctx: &GpuContext,
        s: &MatMulShape,
        alpha: f32,
        which: usize,
        rows: usize,
        rep: usize,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        dy: &wgpu::Buffer,
        dx: &wgpu::Buffer,
    ) -> Vec<Dispatch> {
        let ([ba, m, k], [bb, _, nn]) = (s.a, s.b);
        let bo = s.batch();
        let dy_row = bo * m * nn;
        // The batches of dx, and whether dy's batch is summed into one.
        let (bx, other_batched) = if which == 0 {
            (ba, bb > 1)
        } else {
            (bb, ba > 1)
        };
        let summed = bx == 1 && bo > 1;
        let sum = if summed { bo } else { 1 };
        let p = if which == 0 {
            // dA[b, i = m, j = k] = sum_l dY[b, m, l] B[b, k, l]
            BmmParams {
                rows: u(rows),
                batch: u(bx),
                m: u(m),
                n: u(k),
                l: u(nn),
                s: u(sum),
                x_rep: 1,
                y_rep: u(rep),
                x_row: u(dy_row),
                x_b: u(if bx > 1 { m * nn } else { 0 }),
                x_s: u(if summed { m * nn } else { 0 }),
                x_i: u(nn),
                x_l: 1,
                y_row: u(bb * k * nn),
                y_b: u(if bx > 1 && other_batched { k * nn } else { 0 }),
                y_s: u(if summed && other_batched { k * nn } else { 0 }),
                y_l: 1,
                y_j: u(nn),
                alpha,
                ..Default::default()
            }
        } else {
            // dB[b, i = k, j = n] = sum_l A[b, l, k] dY[b, l, n]
            BmmParams {
                rows: u(rows),
                batch: u(bx),
                m: u(k),
                n: u(nn),
                l: u(m),
                s: u(sum),
                x_rep: u(rep),
                y_rep: 1,
                x_row: u(ba * m * k),
                x_b: u(if bx > 1 && other_batched { m * k } else { 0 }),
                x_s: u(if summed && other_batched { m * k } else { 0 }),
                x_i: 1,
                x_l: u(k),
                y_row: u(dy_row),
                y_b: u(if bx > 1 { m * nn } else { 0 }),
                y_s: u(if summed { m * nn } else { 0 }),
                y_l: u(nn),
                y_j: 1,
                alpha,
                ..Default::default()
            }
        };
        if which == 0 {
            self.bmm(ctx, &p, dy, b, dx)
        } else {
            self.bmm(ctx, &p, a, dy, dx)
        }
    }

    /// y = softmax(x) along the lines `[outer, len, inner]` of `n` images.
    pub fn softmax(
        &self,
        ctx: &GpuContext,
        lines: [usize; 3],
        n: usize,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let count = n * lines[0] * lines[2];
        let p = softmax_params(lines, count, 1);
        let staged = self.softmax_staged.as_ref().and_then(|(k, staging)| {
            let (view, copy) = staging.stage(ctx, x, (count * lines[1]) as u64)?;
            let resources = vec![
                wgpu::BindingResource::TextureView(&view),
                y.as_entire_binding(),
            ];
            let grid = crate::gpu::grid((count as u64).div_ceil(64), ctx.max_workgroups_per_dim);
            Some(copy(k.dispatch_bound(ctx, &p, resources, grid)))
        });
        staged.unwrap_or_else(|| {
            self.softmax_forward
                .dispatch(ctx, &p, &[x, dummy, y], count as u64)
        })
    }

    /// dx = y (dy - sum(dy y)) per line, for `rows` gradient rows (`rep` per image of `y`).
    #[allow(clippy::too_many_arguments)]
    pub fn softmax_backward(
        &self,
        ctx: &GpuContext,
        lines: [usize; 3],
        rows: usize,
        rep: usize,
        y: &wgpu::Buffer,
        dy: &wgpu::Buffer,
        dx: &wgpu::Buffer,
    ) -> Dispatch {
        let count = rows * lines[0] * lines[2];
        let p = softmax_params(lines, count, rep);
        self.softmax_backward
            .dispatch(ctx, &p, &[dy, y, dx], count as u64)
    }
}

fn softmax_params(lines: [usize; 3], count: usize, rep: usize) -> SoftmaxParams {
    SoftmaxParams {
        lines: u(count),
        len: u(lines[1]),
        inner: u(lines[2]),
        outer: u(lines[0]),
        rep: u(rep.max(1)),
        _p: [0; 3],
    }
}
