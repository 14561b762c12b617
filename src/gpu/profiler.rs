//! GPU time per kernel from timestamp queries (adapters with `TIMESTAMP_QUERY`), or on CPU
//! adapters natively from the wall clock.
//!
//! Each dispatch is recorded in its own compute pass with beginning/end timestamps (pass
//! timestamps need only `TIMESTAMP_QUERY`, not the inside-passes feature), and the times are
//! summed per kernel entry point. Splitting passes adds a little per-dispatch overhead, so
//! profiled runs are for attribution; throughput is measured with profiling off, where the
//! recording paths are the untouched single-pass ones.
//!
//! lavapipe's pass timestamps miss most of the work of kernels that write storage buffers
//! (a conv read 5x faster than the wall clock allowed), so there each dispatch is submitted
//! on its own and timed from submit to idle, after the work before it has finished.

use super::{Dispatch, GpuContext, buffer};
use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// Queries per set (wgpu's limit); an even number, so a dispatch's pair never straddles sets.
const QUERIES: u32 = wgpu::QUERY_SET_MAX_QUERIES;

/// One kernel entry point's share of the profiled work.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct KernelTime {
    pub kernel: String,
    /// Dispatches timed.
    pub calls: u64,
    /// GPU time summed over those dispatches.
    pub seconds: f64,
    /// Floating-point operations of those dispatches, where the op states them (conv,
    /// linear); 0 for the rest.
    pub flops: u64,
}

struct QuerySet {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
}

/// Collects per-dispatch GPU times; see the module docs.
pub struct Profiler {
    ctx: GpuContext,
    sets: Vec<QuerySet>,
    /// The recorded but not yet collected dispatches: (kernel, flops), in query order.
    pending: Vec<(&'static str, u64)>,
    period_ns: f64,
    totals: BTreeMap<&'static str, KernelTime>,
    /// Time each dispatch with the wall clock instead (native CPU adapters).
    wall: bool,
}

impl Profiler {
    /// `None` when the device lacks `TIMESTAMP_QUERY` (request it when creating the device;
    /// [`GpuContext::new`] does when the adapter has it).
    /// On a native CPU adapter it times with the wall clock, with or without timestamps.
    pub fn new(ctx: &GpuContext) -> Option<Self> {
        let wall = cfg!(not(target_arch = "wasm32")) && ctx.class == super::AdapterClass::Cpu;
        if !wall && !ctx.has_timestamps() {
            return None;
        }
        Some(Self {
            period_ns: ctx.queue.get_timestamp_period() as f64,
            ctx: ctx.clone(),
            sets: Vec::new(),
            pending: Vec::new(),
            totals: BTreeMap::new(),
            wall,
        })
    }

    /// Whether times come from the wall clock (see the module docs).
    pub fn wall_clock(&self) -> bool {
        self.wall
    }

    fn add(&mut self, label: &'static str, seconds: f64, flops: u64) {
        let t = self.totals.entry(label).or_insert_with(|| KernelTime {
            kernel: label.to_string(),
            ..Default::default()
        });
        t.calls += 1;
        t.seconds += seconds;
        t.flops += flops;
    }

    /// Submits what `encoder` holds, then each dispatch alone, timed from submit to idle;
    /// `encoder` is left empty for the caller's further work.
    #[cfg(not(target_arch = "wasm32"))]
    fn record_wall<'a>(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        dispatches: impl IntoIterator<Item = &'a Dispatch>,
    ) {
        let device = self.ctx.device.clone();
        let fresh = || device.create_command_encoder(&Default::default());
        for d in dispatches {
            let before = std::mem::replace(encoder, fresh());
            self.ctx.queue.submit([before.finish()]);
            // A failed poll surfaces again at the caller's own wait.
            let _ = buffer::wait_idle(&self.ctx);
            let mut one = fresh();
            d.record_alone(&mut one);
            let start = std::time::Instant::now();
            self.ctx.queue.submit([one.finish()]);
            let _ = buffer::wait_idle(&self.ctx);
            self.add(d.label, start.elapsed().as_secs_f64(), d.flops);
        }
    }

    /// Records each dispatch into its own timed compute pass of `encoder`. Call
    /// [`Profiler::collect`] once the encoder's work has completed.
    pub fn record<'a>(
        &mut self,
        encoder: &mut wgpu::CommandEncoder,
        dispatches: impl IntoIterator<Item = &'a Dispatch>,
    ) {
        #[cfg(not(target_arch = "wasm32"))]
        if self.wall {
            return self.record_wall(encoder, dispatches);
        }
        for d in dispatches {
            let q = 2 * self.pending.len() as u32;
            let (set, index) = ((q / QUERIES) as usize, q % QUERIES);
            if set == self.sets.len() {
                let ctx = &self.ctx;
                self.sets.push(QuerySet {
                    set: ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                        label: Some("profiler"),
                        ty: wgpu::QueryType::Timestamp,
                        count: QUERIES,
                    }),
                    resolve: buffer::query_resolve(ctx, "profiler", QUERIES as u64 * 8),
                });
            }
            let timestamps = (&self.sets[set].set, index, index + 1);
            super::kernel::record_split(encoder, d.label, &[d], Some(timestamps));
            self.pending.push((d.label, d.flops));
        }
    }

    /// Reads the timestamps of everything recorded since the last call (whose work must have
    /// been submitted) and adds them to the totals.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn collect(&mut self) -> Result<()> {
        pollster::block_on(self.collect_async())
    }

    /// [`Profiler::collect`] without blocking.
    pub async fn collect_async(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let queries = 2 * self.pending.len() as u32;
        let mut encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("profiler resolve"),
            });
        let mut reads = Vec::new();
        for (i, s) in self.sets.iter().enumerate() {
            let used = queries.saturating_sub(i as u32 * QUERIES).min(QUERIES);
            if used == 0 {
                break;
            }
            encoder.resolve_query_set(&s.set, 0..used, &s.resolve, 0);
            reads.push((&s.resolve, used as u64 * 8));
        }
        let bytes = buffer::submit_and_read_async(&self.ctx, encoder, &reads).await?;
        let stamps: Vec<u64> = bytes
            .iter()
            .flat_map(|b| bytemuck::pod_collect_to_vec::<u8, u64>(b))
            .collect();
        if stamps.len() != queries as usize {
            return Err(Error::Gpu(format!(
                "profiler: read {} timestamps, expected {queries}",
                stamps.len()
            )));
        }
        let pending = std::mem::take(&mut self.pending);
        for (i, (label, flops)) in pending.into_iter().enumerate() {
            let ticks = stamps[2 * i + 1].saturating_sub(stamps[2 * i]);
            self.add(label, ticks as f64 * self.period_ns * 1e-9, flops);
        }
        Ok(())
    }

    /// The totals per kernel, most time first.
    pub fn kernels(&self) -> Vec<KernelTime> {
        let mut v: Vec<KernelTime> = self.totals.values().cloned().collect();
        v.sort_by(|a, b| {
            b.seconds
                .total_cmp(&a.seconds)
                .then(a.kernel.cmp(&b.kernel))
        });
        v
    }

    /// Drops the totals (and anything recorded but not collected).
    pub fn reset(&mut self) {
        self.pending.clear();
        self.totals.clear();
    }
}
