//! Whole-model Grad-CAM throughput on random torchvision weights (no downloads):
//! wall-clock and CPU-time img/s (the latter times the core count, for shared machines).
//!
//! cargo run --release --example model_speed -- resnet18 [BATCH=16] [BATCHES=3]

use gradcam_wgpu::GpuContext;
use gradcam_wgpu::engine::{Engine, EngineConfig};
use gradcam_wgpu::model::{Model, detweights, torchvision};
use std::time::Instant;

fn main() -> gradcam_wgpu::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arch = args.first().map_or("resnet18", String::as_str);
    let batch: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(16);
    let batches: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3);
    let weights = detweights::generate(&torchvision::state_dict_spec(arch, 1000)?, 0);
    let model = Model::from_weights(weights, Some(arch))?;
    let ctx = GpuContext::new()?;
    eprintln!("{}", ctx.describe());
    let cfg = EngineConfig {
        batch,
        ..Default::default()
    };
    let mut engine = Engine::new(ctx, &model, cfg)?;
    let images: Vec<_> = (0..batch)
        .map(|i| {
            image::RgbImage::from_fn(224, 224, |x, y| {
                image::Rgb([(x * 7 + i as u32) as u8, (y * 3) as u8, ((x ^ y) * 5) as u8])
            })
        })
        .collect();
    engine.explain(&images)?; // warm-up: pipelines, first-touch allocations
    let (t0, c0) = (Instant::now(), cpu_seconds());
    for _ in 0..batches {
        engine.explain(&images)?;
    }
    let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
    let n = (batch * batches) as f64;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get()) as f64;
    println!(
        "{arch} batch {batch}: {:.2} img/s wall, {:.2} img/s per CPU time x {cores} cores",
        n / wall,
        n / cpu * cores
    );
    Ok(())
}

/// CPU seconds used by this process, all threads (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|s| s.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}
