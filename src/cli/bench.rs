//! `gradcam bench`: throughput end to end and GPU-only, GPU time per kernel, peak GPU memory.

use super::args::BenchArgs;
use gradcam_wgpu::engine::Method;
use gradcam_wgpu::gpu::{KernelTime, MemoryUsage, Profiler};
use gradcam_wgpu::model::{BUNDLED, Tensor, Weights, detweights, torchvision};
use gradcam_wgpu::tune::Source;
use gradcam_wgpu::{Engine, EngineConfig, Error, GpuContext, Model, Result, TargetSpec};
use rayon::prelude::*;
use serde::Serialize;
use std::time::Instant;

#[derive(Serialize)]
struct Report {
    adapter: Adapter,
    model: ModelInfo,
    method: String,
    batch: usize,
    /// Storage precision of conv and linear weights (f32 or f16).
    precision: String,
    /// 3x3 stride-1 convs as Winograd F(4x4, 3x3) (`--winograd`).
    winograd: bool,
    iters: usize,
    warmup: usize,
    /// Engine creation (weights upload, pipelines), once.
    setup_seconds: f64,
    /// Decoded images in memory -> upload, preprocess, forward/backward/CAM, overlays read
    /// back, PNG encoding.
    end_to_end: Throughput,
    /// The same batch again on the pixels already on the device: GPU work only.
    compute: Throughput,
    /// `None` without TIMESTAMP_QUERY or with --no-profile.
    profile: Option<Profile>,
    memory: MemoryUsage,
    /// As given by --peak-gflops.
    peak_gflops: Option<f64>,
    /// Conv autotuning (--tune): each conv direction's kernel, where it came from, and
    /// the seconds tuning took (part of setup_seconds).
    tuning: gradcam_wgpu::tune::Tuning,
}

#[derive(Serialize)]
struct Adapter {
    name: String,
    backend: String,
    device_type: String,
    driver: String,
    driver_info: String,
}

#[derive(Serialize)]
struct ModelInfo {
    name: String,
    /// bundled, file or random.
    source: String,
    input_size: [usize; 2],
    layers: Vec<String>,
    classes: usize,
}

#[derive(Serialize)]
struct Throughput {
    images_per_second: f64,
    seconds_per_batch: f64,
    /// The fastest timed batch.
    min_seconds_per_batch: f64,
}

#[derive(Serialize)]
struct Profile {
    /// Profiled batches the figures are averaged over.
    batches: usize,
    /// How dispatches were timed: "timestamps" (one pass each) or "wall" (one submit each,
    /// submit to idle: CPU adapters, whose timestamps miss storage-buffer work).
    clock: &'static str,
    /// Timed GPU work per batch, summed over dispatches (each in its own pass).
    gpu_seconds_per_batch: f64,
    /// Conv and linear FLOPs per image (forward and the backward they need, perturbation
    /// passes included).
    flops_per_image: f64,
    kernels: Vec<KernelRow>,
}

#[derive(Serialize)]
struct KernelRow {
    kernel: String,
    calls_per_batch: f64,
    seconds_per_batch: f64,
    /// Of the profiled total.
    share: f64,
    flops_per_batch: f64,
    /// `None` for kernels without stated FLOPs.
    gflops_per_second: Option<f64>,
    /// Of --peak-gflops.
    peak_fraction: Option<f64>,
}

pub fn run(a: &BenchArgs) -> Result<()> {
    let method: Method = a.method.parse()?;
    if a.iters == 0 {
        return Err(Error::Invalid("--iters must be at least 1".into()));
    }
    if a.peak_gflops.is_some_and(|p| !(p > 0.0 && p.is_finite())) {
        return Err(Error::Invalid(
            "--peak-gflops must be a positive number".into(),
        ));
    }
    let (model, source) = bench_model(a)?;
    let (size, mean, std) = super::preprocessing(&model, &a.size, &None, &None)?;
    let ctx = GpuContext::new()?;
    let cfg = EngineConfig {
        layers: a.layer.clone(),
        method,
        size,
        batch: a.batch,
        targets: TargetSpec::TopK(1),
        mean,
        std,
        precision: a.weights.precision(),
        winograd: a.weights.winograd,
        tune: a.weights.tune(),
        folds: Vec::new(),
        reshape: a.reshape.parse()?,
        max_channels: a.max_channels,
        ..EngineConfig::default()
    };
    let t = Instant::now();
    let mut engine = Engine::new(ctx.clone(), &model, cfg)?;
    let setup_seconds = t.elapsed().as_secs_f64();
    let batch = engine.batch_size();
    if !a.json {
        eprintln!(
            "{} {} on {}; layer {}; batch {batch}",
            model.arch,
            method.name(),
            ctx.describe(),
            engine.layers().join(", "),
        );
    }
    let images = bench_images(&a.images, size, batch)?;

    // End to end, as `gradcam explain` runs a batch (minus file reading and writing).
    for _ in 0..a.warmup {
        end_to_end(&mut engine, &images)?;
    }
    let mut times = Vec::with_capacity(a.iters);
    for _ in 0..a.iters {
        let t = Instant::now();
        end_to_end(&mut engine, &images)?;
        times.push(t.elapsed().as_secs_f64());
    }
    let end_to_end = throughput(&times, batch);

    // GPU only: upload once, then replay the recorded pass.
    engine.explain_on_device(&images, None)?;
    for _ in 0..a.warmup {
        engine.rerun_on_device(batch)?;
    }
    times.clear();
    for _ in 0..a.iters {
        let t = Instant::now();
        engine.rerun_on_device(batch)?;
        times.push(t.elapsed().as_secs_f64());
    }
    let compute = throughput(&times, batch);

    let profile = match (a.no_profile, Profiler::new(&ctx)) {
        (false, Some(p)) => {
            engine.set_profiler(Some(p));
            // One profiled batch untimed first: it creates the query sets.
            engine.rerun_on_device(batch)?;
            let p = engine.profiler_mut().expect("profiler set above");
            p.collect()?;
            p.reset();
            for _ in 0..a.iters {
                engine.rerun_on_device(batch)?;
                engine.profiler_mut().expect("profiler set").collect()?;
            }
            let p = engine.set_profiler(None).expect("profiler set");
            let wall = p.wall_clock();
            Some(profile(&p.kernels(), wall, a.iters, batch, a.peak_gflops))
        }
        (false, None) if !a.json => {
            eprintln!("note: the adapter has no TIMESTAMP_QUERY; no per-kernel profile");
            None
        }
        _ => None,
    };

    let info = &ctx.info;
    let report = Report {
        adapter: Adapter {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
        },
        model: ModelInfo {
            name: model.arch.clone(),
            source: source.into(),
            input_size: size,
            layers: engine.layers().to_vec(),
            classes: engine.num_classes(),
        },
        method: method.name().to_string(),
        batch,
        precision: a.weights.precision.clone(),
        winograd: a.weights.winograd,
        iters: a.iters,
        warmup: a.warmup,
        setup_seconds,
        end_to_end,
        compute,
        profile,
        memory: ctx.memory(),
        peak_gflops: a.peak_gflops,
        tuning: engine.tuning().clone(),
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("report serialises")
        );
    } else {
        print_report(&report);
    }
    Ok(())
}

/// The model: a file, a random-weight torchvision architecture, or the bundled one.
fn bench_model(a: &BenchArgs) -> Result<(Model, &'static str)> {
    match (&a.model.model, &a.model.arch, a.random_weights) {
        (Some(_), _, true) => Err(Error::Invalid(
            "--random-weights builds its own weights; drop --model".into(),
        )),
        (None, Some(arch), true) => Ok((random_model(arch, a.num_classes, a.seed)?, "random")),
        (Some(_), _, false) => {
            let kind = if super::is_builtin(&a.model) {
                "bundled"
            } else {
                "file"
            };
            Ok((super::load_model(&a.model, &a.size, BUNDLED)?.0, kind))
        }
        (None, Some(_), false) => Err(Error::Invalid(
            "--arch needs --model (a torchvision state dict) or --random-weights".into(),
        )),
        (None, None, _) => Ok((Model::bundled()?, "bundled")),
    }
}

/// `arch` with He-uniform conv/linear weights (bound sqrt(6 / fan_in), so activations keep
/// their scale through depth), zero biases and identity BatchNorm, deterministic in `seed`.
fn random_model(arch: &str, classes: usize, seed: u64) -> Result<Model> {
    if classes == 0 {
        return Err(Error::Invalid("--num-classes must be at least 1".into()));
    }
    let spec = torchvision::state_dict_spec(arch, classes)?;
    let mut weights = Weights::default();
    for (name, shape) in spec {
        let numel: usize = shape.iter().product();
        let data = if shape.len() >= 2 {
            let fan_in: usize = shape[1..].iter().product();
            let bound = (6.0 / fan_in as f64).sqrt();
            let key = detweights::fnv1a64(name.as_bytes()) ^ seed;
            (0..numel as u64)
                .map(|i| (detweights::q(key, i) as f64 / 2048.0 * bound) as f32)
                .collect()
        } else {
            // 1-D: BatchNorm scale and running variance 1; shifts, means and biases 0.
            let one = name.ends_with(".weight") || name.ends_with(".running_var");
            vec![if one { 1.0 } else { 0.0 }; numel]
        };
        weights.tensors.insert(name, Tensor { shape, data });
    }
    Model::from_weights(weights, Some(arch))
}

/// `batch` images at `size`: the given files cycled, or synthetic ones (smooth colour ramps
/// with a bright square, different per image, so top-1 classes and maps vary).
fn bench_images(
    paths: &[std::path::PathBuf],
    size: [usize; 2],
    batch: usize,
) -> Result<Vec<image::RgbImage>> {
    let [h, w] = size;
    if paths.is_empty() {
        return Ok((0..batch)
            .map(|i| {
                let (x0, y0) = ((i * 37) % w.max(1), (i * 53) % h.max(1));
                image::RgbImage::from_fn(w as u32, h as u32, |x, y| {
                    let (x, y) = (x as usize, y as usize);
                    let inside = x.abs_diff(x0) < w / 6 && y.abs_diff(y0) < h / 6;
                    if inside {
                        image::Rgb([250, 240, (i * 29 % 256) as u8])
                    } else {
                        image::Rgb([
                            (x * 255 / w.max(1)) as u8,
                            (y * 255 / h.max(1)) as u8,
                            ((i * 41 + x + y) % 256) as u8,
                        ])
                    }
                })
            })
            .collect());
    }
    // Enough images for one batch, taken lazily from the walk.
    let mut decoded = Vec::with_capacity(batch);
    for item in super::walk::walk(paths, None).take(batch) {
        if let Some(message) = item.error {
            return Err(Error::File {
                path: item.path,
                message,
            });
        }
        let img = gradcam_wgpu::input::load(&item.path, size).map_err(|message| Error::File {
            path: item.path.clone(),
            message,
        })?;
        decoded.push(img);
    }
    if decoded.is_empty() {
        return Err(Error::Invalid("--images: no image files found".into()));
    }
    Ok((0..batch)
        .map(|i| decoded[i % decoded.len()].clone())
        .collect())
}

/// One batch as the CLI runs it, with the overlays PNG-encoded in memory.
fn end_to_end(engine: &mut Engine, images: &[image::RgbImage]) -> Result<usize> {
    let results = engine.explain(images)?;
    let bytes = results
        .par_iter()
        .flat_map(|r| &r.targets)
        .map(|t| {
            let mut png = Vec::new();
            super::outputs::write_png(&t.overlay, &mut png)
                .map(|_| png.len())
                .map_err(|e| Error::Invalid(format!("PNG encoding failed: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(bytes.iter().sum())
}

fn throughput(times: &[f64], batch: usize) -> Throughput {
    let total: f64 = times.iter().sum();
    Throughput {
        images_per_second: (batch * times.len()) as f64 / total,
        seconds_per_batch: total / times.len() as f64,
        min_seconds_per_batch: times.iter().copied().fold(f64::INFINITY, f64::min),
    }
}

fn profile(
    kernels: &[KernelTime],
    wall: bool,
    batches: usize,
    batch: usize,
    peak: Option<f64>,
) -> Profile {
    let per = |x: f64| x / batches as f64;
    let total: f64 = kernels.iter().map(|k| k.seconds).sum();
    let flops: u64 = kernels.iter().map(|k| k.flops).sum();
    let kernels = kernels
        .iter()
        .map(|k| {
            let gflops = (k.flops > 0 && k.seconds > 0.0).then(|| k.flops as f64 / k.seconds / 1e9);
            KernelRow {
                kernel: k.kernel.clone(),
                calls_per_batch: per(k.calls as f64),
                seconds_per_batch: per(k.seconds),
                share: if total > 0.0 { k.seconds / total } else { 0.0 },
                flops_per_batch: per(k.flops as f64),
                gflops_per_second: gflops,
                peak_fraction: gflops.zip(peak).map(|(g, p)| g / p),
            }
        })
        .collect();
    Profile {
        batches,
        clock: if wall { "wall" } else { "timestamps" },
        gpu_seconds_per_batch: per(total),
        flops_per_image: per(flops as f64) / batch as f64,
        kernels,
    }
}

fn print_report(r: &Report) {
    let a = &r.adapter;
    println!(
        "adapter   {} ({}, {}, driver {} {})",
        a.name, a.backend, a.device_type, a.driver, a.driver_info
    );
    let m = &r.model;
    println!(
        "model     {} ({}), {}x{}, layer {}, {} classes; {}, batch {}, {} weights{}, {} iters after {} warm-up",
        m.name,
        m.source,
        m.input_size[0],
        m.input_size[1],
        m.layers.join(", "),
        m.classes,
        r.method,
        r.batch,
        r.precision,
        if r.winograd { ", Winograd" } else { "" },
        r.iters,
        r.warmup
    );
    println!("setup     {:.3} s", r.setup_seconds);
    let t = &r.tuning;
    println!(
        "tuning    {}: {:.3} s, {} measurements, {} conv directions tuned ({} from the cache){}",
        t.mode,
        t.seconds,
        t.measurements,
        t.convs.len(),
        t.convs.iter().filter(|c| c.source == Source::Cache).count(),
        t.note
            .as_ref()
            .map(|n| format!("; {n}"))
            .unwrap_or_default()
    );
    print!("{}", t.table());
    println!();
    println!(
        "{:<12} {:>10} {:>12} {:>12}",
        "", "images/s", "ms/batch", "best ms"
    );
    for (name, t) in [("end to end", &r.end_to_end), ("compute", &r.compute)] {
        println!(
            "{:<12} {:>10.2} {:>12.2} {:>12.2}",
            name,
            t.images_per_second,
            t.seconds_per_batch * 1e3,
            t.min_seconds_per_batch * 1e3
        );
    }
    if let Some(p) = &r.profile {
        println!();
        println!(
            "GPU time per batch {:.2} ms over {} profiled batch(es) ({}); \
             conv+linear {:.1} MFLOP/image",
            p.gpu_seconds_per_batch * 1e3,
            p.batches,
            match p.clock {
                "wall" => "one submit per dispatch, wall clock",
                _ => "one pass per dispatch, timestamps",
            },
            p.flops_per_image / 1e6
        );
        print!(
            "{:<26} {:>7} {:>10} {:>7} {:>10} {:>9}",
            "kernel", "calls", "ms/batch", "share", "MFLOP", "GFLOP/s"
        );
        if r.peak_gflops.is_some() {
            print!(" {:>7}", "% peak");
        }
        println!();
        for k in &p.kernels {
            let gf = k
                .gflops_per_second
                .map_or("-".to_string(), |g| format!("{g:.2}"));
            print!(
                "{:<26} {:>7.1} {:>10.3} {:>6.1}% {:>10.1} {:>9}",
                k.kernel,
                k.calls_per_batch,
                k.seconds_per_batch * 1e3,
                k.share * 100.0,
                k.flops_per_batch / 1e6,
                gf
            );
            if r.peak_gflops.is_some() {
                let pct = k
                    .peak_fraction
                    .map_or("-".to_string(), |f| format!("{:.1}%", f * 100.0));
                print!(" {pct:>7}");
            }
            println!();
        }
    }
    println!();
    println!(
        "GPU memory: peak {:.1} MiB, live at the end {:.1} MiB (buffers and textures)",
        r.memory.peak as f64 / (1 << 20) as f64,
        r.memory.live as f64 / (1 << 20) as f64
    );
}
