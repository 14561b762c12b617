//! Element-wise add, sub, mul, div with numpy broadcasting per dim, and each operand's
//! gradient reduced over the dims it was broadcast along (shaders/broadcast.wgsl).

use super::{module, u};
use crate::gpu::{Access, Dispatch, GpuContext, Kernel};
use serde::{Deserialize, Serialize};

/// The arithmetic of a broadcast binary op (ONNX Add, Sub, Mul, Div). Re-exported as
/// `graph::BinaryKind`, the IR's spelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BinaryKind {
    Add,
    Sub,
    Mul,
    Div,
}

/// One operand: its per-row shape (each dim 1 or the output's) and whether it has a row per
/// image (an activation) or one for all (a constant weight).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operand {
    pub shape: [usize; 3],
    pub batched: bool,
}

impl Operand {
    /// An activation of per-image `shape`.
    pub fn activation(shape: [usize; 3]) -> Self {
        Self {
            shape,
            batched: true,
        }
    }

    /// A constant weight of `shape`, the same for every image.
    pub fn constant(shape: [usize; 3]) -> Self {
        Self {
            shape,
            batched: false,
        }
    }

    /// Element strides along the output's dims (0 where broadcast) and per row.
    fn strides(&self) -> [u32; 4] {
        let [c, h, w] = self.shape;
        let s = |dim: usize, stride: usize| u(if dim == 1 { 0 } else { stride });
        let row = if self.batched { c * h * w } else { 0 };
        [s(c, h * w), s(h, w), s(w, 1), u(row)]
    }
}

/// `a ∘ b` with numpy broadcasting per dim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Broadcast {
    pub kind: BinaryKind,
    pub a: Operand,
    pub b: Operand,
}

impl Broadcast {
    /// The output's per-row shape (callers check [`broadcast_shape`] first).
    pub fn out(&self) -> [usize; 3] {
        std::array::from_fn(|d| self.a.shape[d].max(self.b.shape[d]))
    }
}

/// numpy's rule per dim: equal, or 1 on one side; `None` if the shapes don't broadcast.
pub fn broadcast_shape(a: [usize; 3], b: [usize; 3]) -> Option<[usize; 3]> {
    let mut out = [0; 3];
    for d in 0..3 {
        out[d] = match (a[d], b[d]) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct BcastParams {
    len: u32,
    rep: u32,
    kind: u32,
    wrt: u32,
    out: [u32; 4],
    dst: [u32; 4],
    a: [u32; 4],
    b: [u32; 4],
}

impl BcastParams {
    fn new(bc: &Broadcast, dst: [usize; 3], rows: usize, rep: usize, wrt: u32) -> Self {
        let pad = |s: [usize; 3]| [u(s[0]), u(s[1]), u(s[2]), 0];
        Self {
            len: u(rows * dst.iter().product::<usize>()),
            rep: u(rep.max(1)),
            kind: bc.kind as u32,
            wrt,
            out: pad(bc.out()),
            dst: pad(dst),
            a: bc.a.strides(),
            b: bc.b.strides(),
        }
    }
}

pub struct BroadcastKernels {
    forward: Kernel,
    backward: Kernel,
}

impl BroadcastKernels {
    pub fn new(ctx: &GpuContext) -> Self {
        let m = module(ctx, "broadcast.wgsl");
        let st = [Access::Read, Access::Read, Access::Read, Access::ReadWrite];
        let k = |e| Kernel::new(ctx, &m, e, &st, &[], 256);
        Self {
            forward: k("binary_forward"),
            backward: k("binary_backward"),
        }
    }

    /// out = a ∘ b over `rows` rows of the broadcast shape.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        ctx: &GpuContext,
        bc: &Broadcast,
        rows: usize,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        out: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Dispatch {
        let p = BcastParams::new(bc, bc.out(), rows, 1, 0);
        self.forward
            .dispatch(ctx, &p, &[a, b, dummy, out], p.len as u64)
    }

    /// The gradient of operand `k` (0: a, 1: b; an activation) for `rows` rows of `dy`, each
    /// reading forward image `row / rep` of the operands: dy times the partial derivative,
    /// summed over the dims the operand was broadcast along.
    #[allow(clippy::too_many_arguments)]
    pub fn backward(
        &self,
        ctx: &GpuContext,
        bc: &Broadcast,
        k: usize,
        rows: usize,
        rep: usize,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        dy: &wgpu::Buffer,
        dx: &wgpu::Buffer,
    ) -> Dispatch {
        let shape = if k == 0 { bc.a.shape } else { bc.b.shape };
        let p = BcastParams::new(bc, shape, rows, rep, k as u32 + 1);
        self.backward
            .dispatch(ctx, &p, &[a, b, dy, dx], p.len as u64)
    }
}
