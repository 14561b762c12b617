//! `gradcam explain`: batch explanation of image files and folders.
//!
//! Three stages overlap, joined by channels one batch deep so memory stays flat however many
//! images there are: a producer walks the inputs lazily and decodes each batch on the rayon
//! pool; this thread runs the GPU; a writer encodes PNG/npy files on the pool, renames them
//! into place and appends the batch's manifest records in walk order.

use super::args::ExplainArgs;
use super::outputs::{self, TempPolicy};
use super::walk::{self, Item, Shard};
use gradcam_wgpu::engine::Method;
use gradcam_wgpu::gpu::AdapterClass;
use gradcam_wgpu::{
    Engine, EngineConfig, Error, GpuContext, ImageResult, Model, Result, TargetSpec,
};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Test hook: the first N GPU batches fail as out of memory, to
/// exercise the batch halving that real devices need and lavapipe never triggers.
const INJECT_OOM: &str = "GRADCAM_TEST_INJECT_OOM";
/// Test hook: destroy the device after N batches, as a driver reset or unplugged GPU would.
const LOSE_DEVICE: &str = "GRADCAM_TEST_LOSE_DEVICE_AFTER";

/// An image on its way through the pipeline.
struct Job {
    item: Item,
    image: std::result::Result<image::RgbImage, String>,
}

/// What the writer gets per image.
enum Done {
    Explained(ImageResult),
    Failed(String),
}

#[derive(Serialize, Default)]
struct Summary {
    shard: Option<[usize; 2]>,
    /// False when the run stopped early (fatal error); rerun with --resume.
    complete: bool,
    ok: usize,
    errors: usize,
    /// Images skipped by --resume (already done).
    skipped: usize,
    batch_requested: usize,
    batch_final: usize,
    /// Each out-of-memory retry: the batch that failed and the one tried next.
    oom_halvings: Vec<[usize; 2]>,
    /// NaN/Inf weights and the like: every result of the run is suspect.
    model_warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fatal: Option<String>,
}

/// Runs the job; returns how many inputs failed. Errors are fatal (model, layer, args, GPU).
pub fn run(a: &ExplainArgs) -> Result<usize> {
    let method: Method = a.method.parse()?;
    let targets: TargetSpec = a.target.parse()?;
    let (model, warnings) = super::load_model(&a.model)?;
    let (size, mean, std) = super::preprocessing(&model, &a.size, &a.mean, &a.std)?;
    let shard = walk::resolve_shard(a.shard.as_deref(), a.shard_count, |k| std::env::var(k).ok())
        .map_err(Error::Invalid)?;
    if a.progress_json == Some(0) {
        return Err(Error::Invalid("--progress-json must be at least 1".into()));
    }
    let cfg = EngineConfig {
        layers: a.layer.clone(),
        method,
        fuse: a.fuse.parse()?,
        eigen_smooth: a.eigen_smooth,
        aug_smooth: a.aug_smooth,
        size,
        batch: a.batch,
        targets,
        mean,
        std,
        read_maps: a.save_cam,
        backward_rows: None,
        precision: a.weights.precision(),
        winograd: a.weights.winograd,
    };

    let ctx = GpuContext::new()?;
    let gpu = GpuWatch::install(&ctx);
    // `None`: upload images as decoded; the engine resizes them on the device.
    let host_size = match a.resize.as_str() {
        "host" => Some(size),
        "device" => None,
        _ => (ctx.class == AdapterClass::Cpu).then_some(size),
    };
    let mut summary = Summary {
        shard: shard.as_ref().map(|s| [s.index, s.count]),
        batch_requested: a.batch,
        skipped: 0,
        model_warnings: warnings.clone(),
        ..Default::default()
    };
    let hook = |name| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
    };
    let mut inject = hook(INJECT_OOM).unwrap_or(0);
    let mut lose_after = hook(LOSE_DEVICE);
    let mut engine = Some(build_engine(&ctx, &model, &cfg, &gpu, &mut summary)?);
    let first = engine.as_ref().expect("just built");
    eprintln!(
        "{} {} on {}; layer {}; batch {}{}",
        model.arch,
        method.name(),
        first.context().describe(),
        first.layers().join(", "),
        first.batch_size(),
        match &shard {
            Some(Shard { index, count, from }) => format!("; shard {index}/{count} (from {from})"),
            None => String::new(),
        }
    );

    // Outputs are touched only once the model, arguments and device are known to work.
    std::fs::create_dir_all(&a.out).map_err(|e| Error::File {
        path: a.out.clone(),
        message: format!("cannot create output directory: {e}"),
    })?;
    let (manifest_name, summary_name, tag) = match &shard {
        Some(s) => (
            format!("predictions.shard-{}-of-{}.jsonl", s.index, s.count),
            format!("summary.shard-{}-of-{}.json", s.index, s.count),
            format!("s{}of{}", s.index, s.count),
        ),
        None => (
            "predictions.jsonl".into(),
            "summary.json".into(),
            "all".into(),
        ),
    };
    let tmp = TempPolicy::new(&tag, a.fsync);
    tmp.clean(&a.out);
    let manifest_path = a.out.join(&manifest_name);
    let file_err = |e: std::io::Error| Error::File {
        path: manifest_path.clone(),
        message: e.to_string(),
    };
    // --resume keeps the records of finished images (rewritten whole, so torn or superseded
    // lines go) and skips those images; without it the manifest starts empty.
    let mut done: HashSet<String> = HashSet::new();
    let mut kept = Vec::new();
    if a.resume {
        let (entries, _, bad) = outputs::read_manifest(&manifest_path).map_err(file_err)?;
        if bad > 0 {
            eprintln!("{manifest_name}: ignored {bad} unreadable line(s)");
        }
        // The last record of an image wins.
        let mut last = std::collections::HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            last.insert(e.image.as_str(), i);
        }
        for (i, e) in entries.iter().enumerate() {
            let finished = last[e.image.as_str()] == i
                && e.ok
                && !e.outputs.is_empty()
                && e.outputs.iter().all(|o| {
                    std::fs::metadata(a.out.join(o)).is_ok_and(|m| m.is_file() && m.len() > 0)
                });
            if finished {
                done.insert(e.image.clone());
                kept.push(e.line.clone());
            }
        }
    }
    tmp.write(&a.out, &manifest_name, |w| {
        use std::io::Write;
        for l in &kept {
            writeln!(w, "{l}")?;
        }
        Ok(())
    })
    .map_err(file_err)?;
    drop(kept);
    let mut manifest = std::fs::OpenOptions::new()
        .append(true)
        .open(&manifest_path)
        .map_err(file_err)?;

    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {pos} images {per_sec} {elapsed}")
            .expect("valid template"),
    );
    let batch = AtomicUsize::new(first.batch_size());
    summary.batch_final = first.batch_size();
    let started = Instant::now();
    let ctx_w = ctx.clone();
    let (failed, fatal) = std::thread::scope(|s| {
        let (jobs_tx, jobs_rx) = sync_channel::<Vec<Job>>(1);
        let (done_tx, done_rx) = sync_channel::<Vec<(Item, Done)>>(1);
        let (done, shard, batch) = (&done, &shard, &batch);
        let producer = s.spawn(move || {
            let mut skipped = 0;
            let mut seen = HashSet::new();
            let mut chunk = Vec::new();
            let send = |chunk: Vec<Item>| {
                let jobs: Vec<Job> = chunk
                    .into_par_iter()
                    .map(|item| {
                        let image = match &item.error {
                            Some(e) => Err(e.clone()),
                            None => match host_size {
                                Some(size) => gradcam_wgpu::input::load(&item.path, size),
                                None => gradcam_wgpu::input::open(&item.path),
                            },
                        };
                        Job { item, image }
                    })
                    .collect();
                jobs_tx.send(jobs).is_ok()
            };
            for mut item in walk::walk(&a.inputs, Some(&a.out)) {
                if shard
                    .as_ref()
                    .is_some_and(|s| walk::shard_of(&item.key, s.count) != s.index)
                {
                    continue;
                }
                if done.contains(&item.key) {
                    skipped += 1;
                    continue;
                }
                // Keys are unique below one root unless lossy decoding merged two names; only
                // then (or with several inputs) remember them, so memory stays flat.
                let may_clash = a.inputs.len() > 1 || item.key.contains('\u{FFFD}');
                if may_clash && !seen.insert(item.key.clone()) && item.error.is_none() {
                    item.error = Some(format!(
                        "another input has the same key `{}`; name the inputs differently",
                        item.key
                    ));
                }
                chunk.push(item);
                if chunk.len() >= batch.load(Ordering::Relaxed) && !send(std::mem::take(&mut chunk))
                {
                    return skipped;
                }
            }
            if !chunk.is_empty() {
                send(chunk);
            }
            skipped
        });
        let writer = s.spawn(|| {
            let (mut ok, mut failed) = (0, 0);
            for batch_done in done_rx {
                // (line, ok?) per image, in walk order.
                let lines: Vec<(String, bool)> = batch_done
                    .par_iter()
                    .map(|(item, d)| {
                        let written = match d {
                            Done::Explained(r) => outputs::write_image(
                                &a.out, &item.stem, &a.method, r, size, &model, &tmp,
                            )
                            .map(|names| outputs::ok_line(&item.key, &names, r, &model, &warnings)),
                            Done::Failed(e) => Err(e.clone()),
                        };
                        written.map(|l| (l, true)).unwrap_or_else(|e| {
                            report(&bar, &format!("error: {}: {e}", item.path.display()));
                            (outputs::error_line(&item.key, &e), false)
                        })
                    })
                    .collect();
                let before = ok + failed;
                let good = lines.iter().filter(|(_, g)| *g).count();
                ok += good;
                failed += lines.len() - good;
                let lines: Vec<String> = lines.into_iter().map(|(l, _)| l).collect();
                if let Err(e) = outputs::append_lines(&mut manifest, &lines, a.fsync) {
                    return (ok, failed, Some(file_err(e)));
                }
                bar.inc(lines.len() as u64);
                if let Some(n) = a.progress_json
                    && (ok + failed) / n > before / n
                {
                    progress_json(&ctx_w, ok, failed, started);
                }
            }
            (ok, failed, None)
        });

        let mut fatal = None;
        for mut jobs in jobs_rx.iter() {
            if let Some(n) = &mut lose_after {
                if *n == 0 {
                    ctx.device.destroy();
                }
                *n = n.saturating_sub(1);
            }
            let mut images = Vec::new();
            // Move the decoded pixels out; an empty image marks where a result goes.
            for j in &mut jobs {
                if let Ok(img) = &mut j.image {
                    images.push(std::mem::take(img));
                }
            }
            let results = if images.is_empty() {
                Ok(Vec::new())
            } else {
                explain_retrying(
                    &mut engine,
                    &images,
                    (&ctx, &model, &cfg, &gpu),
                    &mut inject,
                    &mut summary,
                    &bar,
                )
            };
            drop(images);
            let mut results = match results {
                Ok(r) => r.into_iter(),
                Err(e) => {
                    fatal = Some(e);
                    break;
                }
            };
            batch.store(summary.batch_final, Ordering::Relaxed);
            let batch_done = jobs
                .into_iter()
                .map(|j| {
                    let d = match j.image {
                        Ok(_) => Done::Explained(results.next().expect("one result per image")),
                        Err(e) => Done::Failed(e),
                    };
                    (j.item, d)
                })
                .collect();
            if done_tx.send(batch_done).is_err() {
                break;
            }
        }
        // Stop the producer (its next send fails) and let the writer finish what it has.
        drop(jobs_rx);
        drop(done_tx);
        let skipped = producer.join().expect("producer thread");
        let (ok, failed, write_err) = writer.join().expect("writer thread");
        summary.skipped = skipped;
        summary.ok = ok;
        summary.errors = failed;
        (failed, fatal.or(write_err))
    });
    bar.finish_and_clear();
    summary.complete = fatal.is_none();
    let fatal = fatal.map(|e| gpu.explain_fatal(e, &manifest_name));
    summary.fatal = fatal.as_ref().map(|e| e.to_string());
    let json = serde_json::to_string_pretty(&summary).expect("summary serialises");
    let written = tmp.write(&a.out, &summary_name, |w| {
        use std::io::Write;
        writeln!(w, "{json}")
    });
    if let Some(e) = fatal {
        return Err(e);
    }
    written.map_err(|e| Error::File {
        path: a.out.join(&summary_name),
        message: e.to_string(),
    })?;
    let mut line = format!("explained {} image(s) into {}", summary.ok, a.out.display());
    if a.resume {
        line += &format!("; {} already done", summary.skipped);
    }
    if !summary.oom_halvings.is_empty() {
        line += &format!(
            "; GPU out of memory {} time(s), batch {} -> {}",
            summary.oom_halvings.len(),
            summary.batch_requested,
            summary.batch_final
        );
    }
    eprintln!("{line}");
    Ok(failed)
}

/// Builds the engine, halving the batch while the device runs out of memory.
fn build_engine(
    ctx: &GpuContext,
    model: &Model,
    cfg: &EngineConfig,
    gpu: &GpuWatch,
    summary: &mut Summary,
) -> Result<Engine> {
    let mut cfg = cfg.clone();
    loop {
        let r = Engine::new(ctx.clone(), model, cfg.clone()).and_then(|e| gpu.check().map(|_| e));
        match r {
            Err(Error::OutOfMemory(m)) if cfg.batch > 1 => {
                let next = cfg.batch / 2;
                eprintln!(
                    "GPU out of memory building batch {}: {m}; trying {next}",
                    cfg.batch
                );
                summary.oom_halvings.push([cfg.batch, next]);
                cfg.batch = next;
            }
            r => return r,
        }
    }
}

/// Explains one batch; on out-of-memory rebuilds the engine with half the batch and retries.
fn explain_retrying(
    engine: &mut Option<Engine>,
    images: &[image::RgbImage],
    (ctx, model, cfg, gpu): (&GpuContext, &Model, &EngineConfig, &GpuWatch),
    inject: &mut usize,
    summary: &mut Summary,
    bar: &indicatif::ProgressBar,
) -> Result<Vec<ImageResult>> {
    loop {
        let e = engine.as_mut().expect("an engine between retries");
        let r = if *inject > 0 {
            *inject -= 1;
            Err(Error::OutOfMemory(format!("injected by {INJECT_OOM}")))
        } else {
            e.explain(images).and_then(|r| gpu.check().map(|_| r))
        };
        let batch = e.batch_size();
        match r {
            Err(Error::OutOfMemory(m)) if batch > 1 => {
                let next = batch / 2;
                report(
                    bar,
                    &format!("GPU out of memory at batch {batch}: {m}; retrying with batch {next}"),
                );
                summary.oom_halvings.push([batch, next]);
                // Free the old buffers before allocating smaller ones.
                *engine = None;
                let smaller = EngineConfig {
                    batch: next,
                    ..cfg.clone()
                };
                let built = build_engine(ctx, model, &smaller, gpu, summary)?;
                summary.batch_final = built.batch_size();
                *engine = Some(built);
            }
            r => return r,
        }
    }
}

/// Prints a line above the spinner (a hidden bar's own println would drop it).
fn report(bar: &indicatif::ProgressBar, line: &str) {
    bar.suspend(|| eprintln!("{line}"));
}

/// One `--progress-json` line: counts, resident memory (from /proc, where there is one;
/// on a CPU adapter such as lavapipe that includes the "GPU" memory) and GPU allocations.
fn progress_json(ctx: &GpuContext, ok: usize, failed: usize, started: Instant) {
    let rss_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        });
    let alloc = ctx.allocations();
    let line = serde_json::json!({
        "progress": ok + failed,
        "ok": ok,
        "errors": failed,
        "rss_kib": rss_kib,
        "gpu_buffers_created": alloc.buffers,
        "gpu_textures_created": alloc.textures,
        "elapsed_s": started.elapsed().as_secs_f64(),
    });
    eprintln!("{line}");
}

/// GPU errors no error scope caught (wgpu would panic on them by default) and device loss.
struct GpuWatch {
    uncaptured: Arc<Mutex<Option<(bool, String)>>>,
    lost: Arc<Mutex<Option<String>>>,
}

impl GpuWatch {
    fn install(ctx: &GpuContext) -> Self {
        let uncaptured: Arc<Mutex<Option<(bool, String)>>> = Arc::default();
        let lost: Arc<Mutex<Option<String>>> = Arc::default();
        let u = uncaptured.clone();
        ctx.device
            .on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
                let oom = matches!(e, wgpu::Error::OutOfMemory { .. });
                u.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert((oom, e.to_string()));
            }));
        let l = lost.clone();
        ctx.device.set_device_lost_callback(move |reason, message| {
            *l.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{reason:?}: {message}"));
        });
        Self { uncaptured, lost }
    }

    /// The first uncaught GPU error since the last check, typed.
    fn check(&self) -> Result<()> {
        match self
            .uncaptured
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            Some((true, m)) => Err(Error::OutOfMemory(m)),
            Some((false, m)) => Err(Error::Gpu(m)),
            None => Ok(()),
        }
    }

    /// A fatal mid-run error, with what it means for the outputs.
    fn explain_fatal(&self, e: Error, manifest: &str) -> Error {
        if !matches!(e, Error::Gpu(_) | Error::OutOfMemory(_)) {
            return e;
        }
        let lost = self.lost.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let headline = match lost {
            Some(reason) => format!(
                "the GPU device was lost ({})",
                reason.trim_end_matches(": ")
            ),
            None => "the GPU failed".into(),
        };
        Error::Gpu(format!(
            "{headline}. Every file and {manifest} record written so far is complete; rerun \
             the same command with --resume to finish.\n  cause: {}",
            e.to_string().trim_end()
        ))
    }
}
