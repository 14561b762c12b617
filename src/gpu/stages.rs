//! GPU time per stage of a pass (forward, backward, CAM) from pass timestamps: three
//! compute passes instead of one, so the cost is six timestamps, not one pass per dispatch
//! as with [`super::Profiler`].

use super::{Dispatch, GpuContext, buffer};
use crate::error::{Error, Result};

/// The stages, in recording order.
const STAGES: usize = 3;

/// GPU seconds per stage, summed over the passes since the clock was last read.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct StageTimes {
    /// Preprocessing and the forward pass.
    pub forward: f64,
    /// The seed and the backward pass, or a method's probe forwards.
    pub backward: f64,
    /// Weights, the weighted sum, normalisation, upsampling and the overlay.
    pub cam: f64,
}

/// Timestamps around each stage of the passes it records.
pub struct StageClock {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    period_ns: f64,
    totals: StageTimes,
}

impl StageClock {
    /// `None` when the device lacks `TIMESTAMP_QUERY`.
    pub fn new(ctx: &GpuContext) -> Option<Self> {
        if !ctx.has_timestamps() {
            return None;
        }
        Some(Self {
            set: ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("stages"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * STAGES as u32,
            }),
            resolve: buffer::query_resolve(ctx, "stages", 2 * STAGES as u64 * 8),
            period_ns: ctx.queue.get_timestamp_period() as f64,
            totals: StageTimes::default(),
        })
    }

    /// Records each stage as one timed compute pass, then resolves the timestamps into
    /// [`StageClock::resolved`] (read it back with the pass's outputs).
    pub fn record(&self, encoder: &mut wgpu::CommandEncoder, stages: [&[Dispatch]; STAGES]) {
        for (i, dispatches) in stages.into_iter().enumerate() {
            let steps: Vec<&Dispatch> = dispatches.iter().collect();
            let timestamps = (&self.set, 2 * i as u32, 2 * i as u32 + 1);
            let label = ["forward", "backward", "cam"][i];
            super::kernel::record_split(encoder, label, &steps, Some(timestamps));
        }
        encoder.resolve_query_set(&self.set, 0..2 * STAGES as u32, &self.resolve, 0);
    }

    /// The buffer the timestamps resolve into, and its length in bytes.
    pub fn resolved(&self) -> (&wgpu::Buffer, u64) {
        (&self.resolve, 2 * STAGES as u64 * 8)
    }

    /// Adds one pass's timestamps, as read from [`StageClock::resolved`].
    pub fn add(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.len() != 2 * STAGES * 8 {
            return Err(Error::Gpu(format!(
                "stage clock: read {} bytes of timestamps, expected {}",
                bytes.len(),
                2 * STAGES * 8
            )));
        }
        let stamps: Vec<u64> = bytemuck::pod_collect_to_vec(bytes);
        let secs = |i: usize| {
            stamps[2 * i + 1].saturating_sub(stamps[2 * i]) as f64 * self.period_ns * 1e-9
        };
        self.totals.forward += secs(0);
        self.totals.backward += secs(1);
        self.totals.cam += secs(2);
        Ok(())
    }

    /// The sums since the last [`StageClock::reset`].
    pub fn totals(&self) -> StageTimes {
        self.totals
    }

    pub fn reset(&mut self) {
        self.totals = StageTimes::default();
    }
}
