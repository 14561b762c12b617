//! Timing one conv direction on one kernel: random weights and inputs of the conv's size, a
//! warm-up run, then the median of a few timed ones. Natively each run is timed from submit
//! to idle: lavapipe's pass timestamps miss the storage-buffer conv kernels' work (they read
//! TFLOP/s on two cores). In the browser, which has no clock here, timestamp queries.

use super::Pick;
#[cfg(target_arch = "wasm32")]
use crate::gpu::Profiler;
#[cfg(not(target_arch = "wasm32"))]
use crate::gpu::record_all;
use crate::gpu::{Dispatch, GpuContext, buffer};
use crate::ops::conv::{self, ConvKernels, ConvShape, ConvVariant, ConvWeight, Fused, Twins};

/// Wall time of the tuning (none in the browser, whose `Instant` panics).
pub(super) struct Clock(#[cfg(not(target_arch = "wasm32"))] std::time::Instant);

impl Clock {
    pub(super) fn start() -> Self {
        Clock(
            #[cfg(not(target_arch = "wasm32"))]
            std::time::Instant::now(),
        )
    }
    pub(super) fn seconds(&self) -> f64 {
        #[cfg(not(target_arch = "wasm32"))]
        return self.0.elapsed().as_secs_f64();
        #[cfg(target_arch = "wasm32")]
        0.0
    }
}

/// The conv kernels (and in the browser a profiler), made once per tuning.
pub(super) struct Timer {
    ctx: GpuContext,
    kernels: ConvKernels,
    #[cfg(target_arch = "wasm32")]
    profiler: Profiler,
    dummy: wgpu::Buffer,
}

/// Values in [-1, 1) from a fixed LCG: any data does, the kernels' time doesn't depend on it.
fn noise(len: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2654435761) | 1;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1664525).wrapping_add(1013904223);
            (x >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

impl Timer {
    /// `None` in the browser without `TIMESTAMP_QUERY`.
    pub(super) fn new(ctx: &GpuContext) -> Option<Self> {
        Some(Self {
            #[cfg(target_arch = "wasm32")]
            profiler: Profiler::new(ctx)?,
            kernels: ConvKernels::new(ctx),
            dummy: buffer::storage(ctx, "tune dummy", 16),
            ctx: ctx.clone(),
        })
    }

    /// Median GPU milliseconds of `pick` on direction `backward` of `s` (the other direction
    /// packed for `fixed`), over `repeats` runs after a warm-up; a warm-up slower than
    /// 3 x `best` ends it there. `None` where the variant fails (upload, validation) or the
    /// conv's activations exceed one binding.
    pub(super) async fn time(
        &mut self,
        s: &ConvShape,
        backward: bool,
        pick: Pick,
        fixed: [ConvVariant; 2],
        repeats: usize,
        best: f64,
    ) -> Option<f64> {
        let ctx = &self.ctx.clone();
        let src = s.batch * s.in_c * s.in_h * s.in_w;
        let dst = s.batch * s.out_c * s.out_h() * s.out_w();
        if (src.max(dst) as u64 * 4) > ctx.max_binding {
            return None;
        }
        let scope = ctx.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut variants = fixed;
        variants[backward as usize] = pick.variant();
        let winograd = pick == Pick::Winograd;
        let w = noise(s.weight_len(), 1);
        let weight = ConvWeight::upload_tuned(ctx, "tune", &w, s, variants, winograd);
        let (a, b) = if backward { (dst, src) } else { (src, dst) };
        let x = buffer::storage_f32(ctx, "tune x", &noise(a, 2));
        let y = buffer::storage(ctx, "tune y", b as u64 * 4);
        let mut times = Vec::new();
        if let Ok(weight) = &weight {
            let k = &self.kernels;
            // A forward that can read and write twins runs between them in the engine (its
            // producer wrote the input's texels, its consumer reads the output's): so here.
            let twin = |[c, h, w]: [usize; 3]| {
                conv::twin_texels(ctx, [c, h, w], s.batch).map(|t| conv::twin_texture(ctx, t))
            };
            let reads = !backward && ConvKernels::reads_twin(s, weight);
            let writes = !backward && ConvKernels::writes_twin(s, weight);
            let input = reads.then(|| twin([s.in_c, s.in_h, s.in_w])).flatten();
            let out_shape = [s.out_c, s.out_h(), s.out_w()];
            let output = writes.then(|| twin(out_shape)).flatten();
            // One that can't is charged the pack its consumer then runs.
            let consumer = (!backward && !writes).then(|| twin(out_shape)).flatten();
            let twins = Twins {
                input: input.as_ref(),
                output: output.as_ref(),
            };
            let mut dispatches = match backward {
                false => k.forward_twinned(
                    ctx,
                    s,
                    Fused::None,
                    &x,
                    weight,
                    None,
                    &y,
                    &self.dummy,
                    twins,
                ),
                true => k.backward_data_chunked(ctx, s, &x, weight, &y, &self.dummy),
            };
            if let Some(t) = &consumer {
                dispatches.extend(k.pack_twin(ctx, out_shape, s.batch, &y, t));
            }
            for rep in 0..=repeats {
                let Some(ms) = self.run(&dispatches).await else {
                    break;
                };
                times.push(ms);
                if rep == 0 && ms > 3.0 * best {
                    break;
                }
            }
        }
        if scope.pop().await.is_some() || weight.is_err() || times.is_empty() {
            return None;
        }
        // The warm-up counts only where it was the only run.
        if times.len() > 1 {
            times.remove(0);
        }
        times.sort_by(f64::total_cmp);
        Some(times[times.len() / 2])
    }

    /// Milliseconds of one run of `dispatches`.
    async fn run(&mut self, dispatches: &[Dispatch]) -> Option<f64> {
        let ctx = &self.ctx;
        let mut encoder = ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("tune"),
            });
        #[cfg(not(target_arch = "wasm32"))]
        {
            let clock = Clock::start();
            record_all(&mut encoder, "tune", dispatches);
            ctx.queue.submit([encoder.finish()]);
            buffer::wait_idle(ctx).ok()?;
            Some(1e3 * clock.seconds())
        }
        #[cfg(target_arch = "wasm32")]
        {
            self.profiler.reset();
            self.profiler.record(&mut encoder, dispatches);
            ctx.queue.submit([encoder.finish()]);
            self.profiler.collect_async().await.ok()?;
            Some(
                1e3 * self
                    .profiler
                    .kernels()
                    .iter()
                    .map(|k| k.seconds)
                    .sum::<f64>(),
            )
        }
    }
}
