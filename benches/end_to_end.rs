//! The shapes model (`Model::shapes`) with Grad-CAM at its own size (128x128), batches of 1
//! and 16:
//! `end_to_end` is what `gradcam explain` does per batch minus file I/O (upload, forward,
//! backward, CAM, overlays read back, PNG encoding in memory); `compute` replays the pass on
//! pixels already on the device (GPU work only). Throughput is in images.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gradcam_wgpu::{Engine, EngineConfig, GpuContext, Model};
use std::time::Duration;

fn images(n: usize, [h, w]: [usize; 2]) -> Vec<image::RgbImage> {
    (0..n)
        .map(|i| {
            image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
                image::Rgb([(x * 2) as u8, (y * 2) as u8, (i * 40 + 30) as u8])
            })
        })
        .collect()
}

fn png_bytes(results: &[gradcam_wgpu::ImageResult]) -> usize {
    results
        .iter()
        .flat_map(|r| &r.targets)
        .map(|t| {
            let mut png = std::io::Cursor::new(Vec::new());
            t.overlay
                .write_to(&mut png, image::ImageFormat::Png)
                .expect("PNG encodes");
            png.into_inner().len()
        })
        .sum()
}

fn bench(c: &mut Criterion) {
    let ctx = GpuContext::new().expect("adapter");
    let model = Model::shapes().expect("shapes model");
    let mut g = c.benchmark_group("end_to_end");
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(4));
    for batch in [1, 16] {
        let cfg = EngineConfig {
            size: model.input_size,
            mean: model.mean,
            std: model.std,
            batch,
            ..EngineConfig::default()
        };
        let mut engine = Engine::new(ctx.clone(), &model, cfg).expect("engine");
        let imgs = images(batch, model.input_size);
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("shapes.gradcam.b{batch}"), |b| {
            b.iter(|| png_bytes(&engine.explain(&imgs).expect("explain")))
        });
        engine.explain_on_device(&imgs, None).expect("upload");
        g.bench_function(format!("shapes.gradcam.compute.b{batch}"), |b| {
            b.iter(|| engine.rerun_on_device(batch).expect("rerun"))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
