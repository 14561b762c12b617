//! `gradcam explain`: batch explanation of image files and folders.
//!
//! The pipeline: walk the inputs (`walk`) → decode and batch (`batch`) → explain on the GPU
//! (`device`) → write each image's files and record (`outputs`) → the manifest and summary
//! (`manifest`). Three threads overlap, joined by channels one batch deep so memory stays
//! flat however many images there are: a producer walks lazily and decodes each batch on
//! the rayon pool; this thread runs the GPU; a writer encodes PNG/npy files on the pool,
//! renames them into place and appends the batch's records in walk order.

use super::args::ExplainArgs;
use super::batch::{self, Done, Job};
use super::device::Gpu;
use super::manifest::{Manifest, Summary};
use super::outputs::{self, Writer};
use super::walk::{self, Item, Shard};
use gradcam_wgpu::engine::{Method, Score, SessOptions, SessPool};
use gradcam_wgpu::gpu::AdapterClass;
use gradcam_wgpu::{EngineConfig, Error, GpuContext, Model, Result, TargetSpec};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Instant;

/// Runs the job; returns how many inputs failed. Errors are fatal (model, layer, args, GPU).
pub fn run(a: &ExplainArgs) -> Result<usize> {
    let plan = plan(a)?;
    let ctx = GpuContext::new()?;
    let mut gpu = Gpu::start(&ctx, &plan.model, plan.cfg.clone(), plan.sess.clone())?;
    announce(&plan, &gpu);
    // Outputs are touched only once the model, arguments and device are known to work.
    let (manifest, done) = Manifest::open(&a.out, plan.shard.as_ref(), a.resume, a.fsync)?;
    let inputs = Inputs {
        paths: &a.inputs,
        out: &a.out,
        shard: plan.shard.as_ref(),
        done: &done,
        host_size: host_size(&a.resize, &ctx, plan.cfg.size),
    };
    let files = Writer {
        out: &a.out,
        method: &a.method,
        size: plan.cfg.size,
        model: &plan.model,
        warnings: &plan.warnings,
        tmp: &manifest.tmp,
    };
    let progress = Progress::new(&ctx, a.progress_json);
    let streamed = stream(&inputs, &mut gpu, &files, &manifest, &progress);
    progress.finish();
    conclude(a, &plan, &gpu, &manifest, streamed)
}

/// What the arguments ask for, checked before the GPU is touched.
struct Plan {
    method: Method,
    model: Model,
    warnings: Vec<String>,
    shard: Option<Shard>,
    cfg: EngineConfig,
    /// `--sess`: SESS around the method.
    sess: Option<SessOptions>,
}

fn plan(a: &ExplainArgs) -> Result<Plan> {
    let method: Method = a.method.parse()?;
    let targets: TargetSpec = a.target.parse()?;
    let (mut model, warnings) = super::load_model(&a.model, &a.size, gradcam_wgpu::model::BUNDLED)?;
    let (size, mean, std) = super::preprocessing(&model, &a.size, &a.mean, &a.std)?;
    let shard = walk::resolve_shard(a.shard.as_deref(), a.shard_count, |k| std::env::var(k).ok())
        .map_err(Error::Invalid)?;
    if a.progress_json == Some(0) {
        return Err(Error::Invalid("--progress-json must be at least 1".into()));
    }
    let score: Score = a.score.parse()?;
    if score != Score::Logit {
        model.explains = format!("{} of {}", score.describe(), model.explains);
    }
    if let Some(path) = &a.mask {
        model = masked(&model, path, score)?;
    }
    let sess = a.sess.then(|| SessOptions {
        num_scales: a.sess_scales,
        step: a.sess_step,
        pool: if a.sess_pool == "max" {
            SessPool::Max
        } else {
            SessPool::Mean
        },
        theta: a.sess_theta,
        pre_filter_ratio: a.sess_prefilter,
        ..Default::default()
    });
    let cfg = EngineConfig {
        layers: a.layer.clone(),
        method,
        fuse: a.fuse.parse()?,
        eigen_smooth: a.eigen_smooth,
        aug_smooth: a.aug_smooth,
        size,
        batch: a.batch,
        targets,
        score,
        mean,
        std,
        read_maps: a.save_cam,
        backward_rows: None,
        probe_batch: None,
        max_channels: a.max_channels,
        kpca_gamma: a.kpca_gamma,
        samples: a.samples,
        noise_std: a.noise,
        seed: a.seed,
        noise: None,
        random_seed: a.seed,
        finer_compare: parse_ranks(&a.compare)?,
        finer_alpha: a.alpha,
        precision: a.weights.precision(),
        winograd: a.weights.winograd,
        tune: a.weights.tune(),
        folds: Vec::new(),
        reshape: a.reshape.parse()?,
    };
    Ok(Plan {
        method,
        model,
        warnings,
        shard,
        cfg,
        sess,
    })
}

/// `model` explaining the sums inside the `--mask` PNG at `path`.
fn masked(model: &Model, path: &Path, score: Score) -> Result<Model> {
    if score != Score::Logit {
        return Err(Error::Invalid(format!(
            "--mask sums the class's logits (pytorch-grad-cam's SemanticSegmentationTarget): \
             use it with --score logit, not {score}"
        )));
    }
    let mask = image::open(path)
        .map_err(|e| Error::File {
            path: path.to_path_buf(),
            message: format!("--mask: {e}"),
        })?
        .to_luma8();
    model.with_mask_luma(&mask).map_err(|e| match e {
        Error::Invalid(m) => Error::Invalid(format!("{m} ({})", path.display())),
        e => e,
    })
}

/// `--compare 1,2,3`: finer-cam's comparison ranks.
fn parse_ranks(s: &str) -> Result<Vec<usize>> {
    s.split(',')
        .map(|r| {
            r.trim().parse().map_err(|_| {
                Error::Invalid(format!(
                    "--compare `{}`: expected ranks like 1,2,3",
                    s.escape_debug()
                ))
            })
        })
        .collect()
}

/// The start-up line: model, method, device, layers, batch and shard.
fn announce(plan: &Plan, gpu: &Gpu) {
    eprintln!(
        "{} {}{} of {} on {}{}",
        plan.model.arch,
        plan.method.name(),
        match &plan.sess {
            Some(o) => format!(" with SESS ({} scales)", o.num_scales),
            None => String::new(),
        },
        plan.model.explains,
        gpu.describe(),
        match &plan.shard {
            Some(Shard { index, count, from }) => format!("; shard {index}/{count} (from {from})"),
            None => String::new(),
        }
    );
}

/// The size the decode threads resize to, or `None` to upload images as decoded for the
/// engine to resize on the device (`--resize auto`: on the host where the "device" is the
/// same CPU cores).
fn host_size(resize: &str, ctx: &GpuContext, size: [usize; 2]) -> Option<[usize; 2]> {
    match resize {
        "host" => Some(size),
        "device" => None,
        _ => (ctx.class == AdapterClass::Cpu).then_some(size),
    }
}

/// Which inputs a run explains and how they are decoded.
struct Inputs<'a> {
    paths: &'a [PathBuf],
    /// Never walked into: a run does not explain its own outputs.
    out: &'a Path,
    shard: Option<&'a Shard>,
    /// Keys `--resume` skips.
    done: &'a HashSet<String>,
    host_size: Option<[usize; 2]>,
}

/// How the stages ended: the counts, and the error that stopped them early, if any.
struct Streamed {
    ok: usize,
    failed: usize,
    skipped: usize,
    fatal: Option<Error>,
}

/// Runs the stages side by side: the producer and the writer on their own threads, the
/// GPU on this one.
fn stream(
    inputs: &Inputs,
    gpu: &mut Gpu,
    files: &Writer,
    manifest: &Manifest,
    progress: &Progress,
) -> Streamed {
    let batch = AtomicUsize::new(gpu.batch);
    let batch = &batch;
    std::thread::scope(|s| {
        let (jobs_tx, jobs_rx) = sync_channel::<Vec<Job>>(1);
        let (done_tx, done_rx) = sync_channel::<Vec<(Item, Done)>>(1);
        let producer = s.spawn(move || produce(inputs, batch, jobs_tx));
        let writer = s.spawn(move || write(done_rx, files, manifest, progress));
        // Returns when the inputs run out or a batch fails; its channels close with it,
        // which stops the producer and lets the writer finish what it has.
        let fatal = gpu.run(jobs_rx, done_tx, batch, &|l| progress.report(l));
        let skipped = producer.join().expect("producer thread");
        let (ok, failed, write_err) = writer.join().expect("writer thread");
        Streamed {
            ok,
            failed,
            skipped,
            fatal: fatal.or(write_err),
        }
    })
}

/// The producer: the walk's items for this run, in batches of the engine's current size,
/// decoded. Returns how many `--resume` skipped.
fn produce(inputs: &Inputs, batch: &AtomicUsize, tx: SyncSender<Vec<Job>>) -> usize {
    let mut select = walk::Select::new(inputs.shard, inputs.done, inputs.paths.len() > 1);
    let items = walk::walk(inputs.paths, Some(inputs.out)).filter_map(|i| select.take(i));
    batch::produce(items, batch, inputs.host_size, &tx);
    select.skipped
}

/// Images whose top-5 the console shows (all of them are in the manifest).
const CONSOLE_PREDICTIONS: usize = 10;

/// The writer: each batch's files, then its records appended to the manifest in walk order.
/// Returns the ok and failed counts and the error that stopped it, if any.
fn write(
    rx: Receiver<Vec<(Item, Done)>>,
    files: &Writer,
    manifest: &Manifest,
    progress: &Progress,
) -> (usize, usize, Option<Error>) {
    let (mut ok, mut failed) = (0, 0);
    for batch in rx {
        let lines = files.write_batch(&batch, &|l| progress.report(l));
        let before = ok + failed;
        for (line, _) in lines.iter().filter(|(_, g)| *g) {
            match ok {
                n if n < CONSOLE_PREDICTIONS => {
                    if let Some(l) = outputs::console_line(line) {
                        progress.report(&l);
                    }
                }
                CONSOLE_PREDICTIONS => {
                    progress.report(&format!("... the rest in {}", manifest.name))
                }
                _ => {}
            }
            ok += 1;
        }
        let good = lines.iter().filter(|(_, g)| *g).count();
        failed += lines.len() - good;
        let lines: Vec<String> = lines.into_iter().map(|(l, _)| l).collect();
        if let Err(e) = manifest.append(&lines) {
            return (ok, failed, Some(e));
        }
        progress.advance(lines.len(), before, ok, failed);
    }
    (ok, failed, None)
}

/// Writes the summary and prints the closing line; a fatal error is returned once the
/// summary has recorded it.
fn conclude(
    a: &ExplainArgs,
    plan: &Plan,
    gpu: &Gpu,
    manifest: &Manifest,
    s: Streamed,
) -> Result<usize> {
    let fatal = s.fatal.map(|e| gpu.fatal(e, &manifest.name));
    let summary = Summary {
        shard: plan.shard.as_ref().map(|s| [s.index, s.count]),
        complete: fatal.is_none(),
        ok: s.ok,
        errors: s.failed,
        skipped: s.skipped,
        batch_requested: a.batch,
        batch_final: gpu.batch,
        oom_halvings: gpu.halvings.clone(),
        model_warnings: plan.warnings.clone(),
        explains: plan.model.explains.clone(),
        fatal: fatal.as_ref().map(|e| e.to_string()),
    };
    let written = manifest.write_summary(&summary);
    if let Some(e) = fatal {
        return Err(e);
    }
    written?;
    eprintln!("{}", summary.closing_line(&a.out, a.resume));
    Ok(s.failed)
}

/// The spinner, and the `--progress-json` lines every N images.
struct Progress<'a> {
    bar: indicatif::ProgressBar,
    ctx: &'a GpuContext,
    every: Option<usize>,
    started: Instant,
}

impl<'a> Progress<'a> {
    fn new(ctx: &'a GpuContext, every: Option<usize>) -> Self {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {pos} images {per_sec} {elapsed}")
                .expect("valid template"),
        );
        Self {
            bar,
            ctx,
            every,
            started: Instant::now(),
        }
    }

    /// Prints a line above the spinner (a hidden bar's own println would drop it).
    fn report(&self, line: &str) {
        self.bar.suspend(|| eprintln!("{line}"));
    }

    /// `n` more images done, `before` of them done before.
    fn advance(&self, n: usize, before: usize, ok: usize, failed: usize) {
        self.bar.inc(n as u64);
        if let Some(every) = self.every
            && (ok + failed) / every > before / every
        {
            self.json(ok, failed);
        }
    }

    /// One `--progress-json` line: counts, resident memory (from /proc, where there is one;
    /// on a CPU adapter such as lavapipe that includes the "GPU" memory) and GPU allocations.
    fn json(&self, ok: usize, failed: usize) {
        let rss_kib = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            });
        let alloc = self.ctx.allocations();
        let line = serde_json::json!({
            "progress": ok + failed,
            "ok": ok,
            "errors": failed,
            "rss_kib": rss_kib,
            "gpu_buffers_created": alloc.buffers,
            "gpu_textures_created": alloc.textures,
            "elapsed_s": self.started.elapsed().as_secs_f64(),
        });
        eprintln!("{line}");
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
