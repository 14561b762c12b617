//! The engine stage: explains batches on the GPU, halves the batch and rebuilds the engine
//! when the device runs out of memory, and turns GPU failures into errors that say what the
//! outputs written so far hold.

use super::batch::{Done, Job};
use super::walk::Item;
use gradcam_wgpu::engine::{Sess, SessOptions};
use gradcam_wgpu::{Engine, EngineConfig, Error, GpuContext, ImageResult, Model, Result};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex};

/// Test hook: the first N GPU batches fail as out of memory, to
/// exercise the batch halving that real devices need and lavapipe never triggers.
const INJECT_OOM: &str = "GRADCAM_TEST_INJECT_OOM";
/// Test hook: destroy the device after N batches, as a driver reset or unplugged GPU would.
const LOSE_DEVICE: &str = "GRADCAM_TEST_LOSE_DEVICE_AFTER";

/// What explains a batch: the engine, or SESS around it.
enum Explainer {
    Plain(Box<Engine>),
    Sess(Box<Sess>),
}

impl Explainer {
    fn engine(&self) -> &Engine {
        match self {
            Explainer::Plain(e) => e,
            Explainer::Sess(s) => s.engine(),
        }
    }

    fn explain(&mut self, images: &[image::RgbImage]) -> Result<Vec<ImageResult>> {
        match self {
            Explainer::Plain(e) => e.explain(images),
            Explainer::Sess(s) => s.explain(images, None),
        }
    }
}

/// An engine on one device, rebuilt smaller whenever a batch does not fit.
pub struct Gpu<'a> {
    ctx: GpuContext,
    model: &'a Model,
    cfg: EngineConfig,
    watch: GpuWatch,
    /// `--sess`: SESS around the method.
    sess: Option<SessOptions>,
    /// `None` only between dropping an engine and building its smaller successor.
    engine: Option<Explainer>,
    /// The batch of the last engine built.
    pub batch: usize,
    /// Each out-of-memory retry: the batch that failed and the one tried next.
    pub halvings: Vec<[usize; 2]>,
    inject_oom: usize,
    lose_after: Option<usize>,
}

impl<'a> Gpu<'a> {
    /// Builds the engine for `cfg`, halving its batch while the device runs out of memory.
    pub fn start(
        ctx: &GpuContext,
        model: &'a Model,
        cfg: EngineConfig,
        sess: Option<SessOptions>,
    ) -> Result<Self> {
        let hook = |name| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse::<usize>().ok())
        };
        let mut gpu = Self {
            watch: GpuWatch::install(ctx),
            ctx: ctx.clone(),
            model,
            batch: cfg.batch,
            cfg,
            sess,
            engine: None,
            halvings: Vec::new(),
            inject_oom: hook(INJECT_OOM).unwrap_or(0),
            lose_after: hook(LOSE_DEVICE),
        };
        gpu.build(gpu.cfg.batch)?;
        Ok(gpu)
    }

    /// `{adapter}; layer {names}; batch {n}`, for the start-up line.
    pub fn describe(&self) -> String {
        match self.engine.as_ref().map(Explainer::engine) {
            Some(e) => format!(
                "{}; layer {}; batch {}",
                e.context().describe(),
                e.layers().join(", "),
                e.batch_size()
            ),
            None => self.ctx.describe(),
        }
    }

    /// The stage: explains every batch `jobs` brings and sends it on to `done`, telling the
    /// producer through `batch` how big to cut the next. Returns the error that stopped it.
    pub fn run(
        &mut self,
        jobs: Receiver<Vec<Job>>,
        done: SyncSender<Vec<(Item, Done)>>,
        batch: &AtomicUsize,
        report: &dyn Fn(&str),
    ) -> Option<Error> {
        for jobs in jobs {
            match self.explain(jobs, report) {
                Ok(results) => {
                    batch.store(self.batch, Ordering::Relaxed);
                    if done.send(results).is_err() {
                        return None;
                    }
                }
                Err(e) => return Some(e),
            }
        }
        None
    }

    /// One batch: its decoded images explained, its undecodable ones passed on as failures.
    fn explain(&mut self, mut jobs: Vec<Job>, report: &dyn Fn(&str)) -> Result<Vec<(Item, Done)>> {
        if let Some(n) = &mut self.lose_after {
            if *n == 0 {
                self.ctx.device.destroy();
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
            Vec::new()
        } else {
            self.explain_retrying(&images, report)?
        };
        drop(images);
        let mut results = results.into_iter();
        Ok(jobs
            .into_iter()
            .map(|j| {
                let d = match j.image {
                    Ok(_) => Done::Explained(results.next().expect("one result per image")),
                    Err(e) => Done::Failed(e),
                };
                (j.item, d)
            })
            .collect())
    }

    /// Explains one batch; on out-of-memory rebuilds the engine with half the batch and retries.
    fn explain_retrying(
        &mut self,
        images: &[image::RgbImage],
        report: &dyn Fn(&str),
    ) -> Result<Vec<ImageResult>> {
        loop {
            let engine = self.engine.as_mut().expect("an engine between retries");
            let r = if self.inject_oom > 0 {
                self.inject_oom -= 1;
                Err(Error::OutOfMemory(format!("injected by {INJECT_OOM}")))
            } else {
                engine
                    .explain(images)
                    .and_then(|r| self.watch.check().map(|_| r))
            };
            let batch = engine.engine().batch_size();
            match r {
                Err(Error::OutOfMemory(m)) if batch > 1 => {
                    let next = batch / 2;
                    report(&format!(
                        "GPU out of memory at batch {batch}: {m}; retrying with batch {next}"
                    ));
                    self.halvings.push([batch, next]);
                    // Free the old buffers before allocating smaller ones.
                    self.engine = None;
                    self.build(next)?;
                }
                r => return r,
            }
        }
    }

    /// Builds the engine at `batch`, halving it while the device runs out of memory.
    fn build(&mut self, mut batch: usize) -> Result<()> {
        loop {
            let cfg = EngineConfig {
                batch,
                ..self.cfg.clone()
            };
            let r = match &self.sess {
                Some(o) => Sess::new(self.ctx.clone(), self.model, cfg, o.clone())
                    .map(|s| Explainer::Sess(Box::new(s))),
                None => Engine::new(self.ctx.clone(), self.model, cfg)
                    .map(|e| Explainer::Plain(Box::new(e))),
            }
            .and_then(|e| self.watch.check().map(|_| e));
            match r {
                Err(Error::OutOfMemory(m)) if batch > 1 => {
                    let next = batch / 2;
                    eprintln!("GPU out of memory building batch {batch}: {m}; trying {next}");
                    self.halvings.push([batch, next]);
                    batch = next;
                }
                r => {
                    let engine = r?;
                    self.batch = engine.engine().batch_size();
                    self.engine = Some(engine);
                    return Ok(());
                }
            }
        }
    }

    /// A fatal mid-run error, with what it means for the outputs (`manifest` is their record).
    pub fn fatal(&self, e: Error, manifest: &str) -> Error {
        self.watch.explain_fatal(e, manifest)
    }
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
