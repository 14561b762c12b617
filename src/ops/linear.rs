//! Linear layers over row-chunked weights (shaders/linear.wgsl).

use super::{Precision, module_with, u};
use crate::gpu::{Access, Dispatch, GpuContext, Kernel};
use std::sync::OnceLock;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct LinearParams {
    batch: u32,
    in_f: u32,
    in4: u32,
    out_f: u32,
    row0: u32,
    rows: u32,
    flags: u32,
    _pad: u32,
}

const FLAG_RELU: u32 = 1;
const FLAG_BIAS: u32 = 2;
const FLAG_ACCUMULATE: u32 = 4;

/// A `[out_f, in_f]` weight on the device, split into row chunks that each fit one binding.
pub struct LinearWeight {
    pub in_f: usize,
    pub out_f: usize,
    /// (first row, rows, buffer of rows x in4 vec4).
    pub chunks: Vec<(usize, usize, wgpu::Buffer)>,
    pub precision: Precision,
}

impl LinearWeight {
    /// Uploads `w` (row-major `[out_f, in_f]`), padding rows to a multiple of 4 columns and
    /// splitting so that no chunk exceeds `ctx.max_binding` bytes.
    pub fn upload(
        ctx: &GpuContext,
        name: &str,
        w: &[f32],
        out_f: usize,
        in_f: usize,
    ) -> crate::Result<Self> {
        Self::upload_at(ctx, name, w, out_f, in_f, Precision::F32)
    }

    /// [`LinearWeight::upload`] storing the weights at `precision`.
    pub fn upload_at(
        ctx: &GpuContext,
        name: &str,
        w: &[f32],
        out_f: usize,
        in_f: usize,
        precision: Precision,
    ) -> crate::Result<Self> {
        let in_p = in_f.div_ceil(4) * 4;
        let row_bytes = in_p as u64 * precision.bytes();
        let rows_per_chunk = (ctx.max_binding / row_bytes) as usize;
        if rows_per_chunk == 0 {
            return Err(crate::Error::Tensor {
                name: name.to_string(),
                message: format!(
                    "one row of {in_f} inputs ({row_bytes} bytes) exceeds the device's storage binding limit of {} bytes",
                    ctx.max_binding
                ),
            });
        }
        let mut chunks = Vec::new();
        let mut row0 = 0;
        while row0 < out_f {
            let rows = rows_per_chunk.min(out_f - row0);
            let mut data = vec![0f32; rows * in_p];
            for r in 0..rows {
                data[r * in_p..r * in_p + in_f]
                    .copy_from_slice(&w[(row0 + r) * in_f..(row0 + r + 1) * in_f]);
            }
            chunks.push((row0, rows, precision.weights(ctx, name, &data)));
            row0 += rows;
        }
        Ok(Self {
            in_f,
            out_f,
            chunks,
            precision,
        })
    }
}

/// linear.wgsl's forward and backward-data for one weight precision.
struct Pair {
    fwd: Kernel,
    bwd: Kernel,
}

impl Pair {
    fn new(ctx: &GpuContext, precision: Precision) -> Self {
        let m = module_with(ctx, "linear.wgsl", precision);
        let st = [Access::Read, Access::Read, Access::Read, Access::ReadWrite];
        Self {
            fwd: Kernel::new(ctx, &m, "linear_forward", &st, &[], 64),
            bwd: Kernel::new(ctx, &m, "linear_backward", &st, &[], 64),
        }
    }
}

pub struct LinearKernels {
    f32: Pair,
    /// For f16 weights, built on first use.
    f16: OnceLock<Pair>,
}

impl LinearKernels {
    pub fn new(ctx: &GpuContext) -> Self {
        Self {
            f32: Pair::new(ctx, Precision::F32),
            f16: OnceLock::new(),
        }
    }

    fn pair(&self, ctx: &GpuContext, precision: Precision) -> &Pair {
        match precision {
            Precision::F32 => &self.f32,
            Precision::F16 => self.f16.get_or_init(|| Pair::new(ctx, Precision::F16)),
        }
    }

    fn params(
        w: &LinearWeight,
        batch: usize,
        row0: usize,
        rows: usize,
        flags: u32,
    ) -> LinearParams {
        LinearParams {
            batch: u(batch),
            in_f: u(w.in_f),
            in4: u(w.in_f.div_ceil(4)),
            out_f: u(w.out_f),
            row0: u(row0),
            rows: u(rows),
            flags,
            _pad: 0,
        }
    }

    /// y = x W^T + b (optionally ReLU); one dispatch per weight chunk.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        ctx: &GpuContext,
        w: &LinearWeight,
        batch: usize,
        relu: bool,
        x: &wgpu::Buffer,
        bias: Option<&wgpu::Buffer>,
        y: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Vec<Dispatch> {
        let flags = (relu as u32 * FLAG_RELU) | (bias.is_some() as u32 * FLAG_BIAS);
        let k = &self.pair(ctx, w.precision).fwd;
        w.chunks
            .iter()
            .map(|(row0, rows, buf)| {
                let p = Self::params(w, batch, *row0, *rows, flags);
                let threads = (rows.div_ceil(4) * batch.div_ceil(4)) as u64;
                k.dispatch(ctx, &p, &[x, buf, bias.unwrap_or(dummy), y], threads)
                    .with_macs((batch * rows * w.in_f) as u64)
            })
            .collect()
    }

    /// dx = dy W, accumulated over the weight's row chunks.
    pub fn backward(
        &self,
        ctx: &GpuContext,
        w: &LinearWeight,
        batch: usize,
        dy: &wgpu::Buffer,
        dx: &wgpu::Buffer,
        dummy: &wgpu::Buffer,
    ) -> Vec<Dispatch> {
        let k = &self.pair(ctx, w.precision).bwd;
        w.chunks
            .iter()
            .enumerate()
            .map(|(i, (row0, rows, buf))| {
                let flags = if i > 0 { FLAG_ACCUMULATE } else { 0 };
                let p = Self::params(w, batch, *row0, *rows, flags);
                let threads = (w.in_f.div_ceil(4) * batch.div_ceil(4)) as u64;
                k.dispatch(ctx, &p, &[dy, buf, dummy, dx], threads)
                    .with_macs((batch * rows * w.in_f) as u64)
            })
            .collect()
    }
}
