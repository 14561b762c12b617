//! `gradcam eval`: how good are the maps? Localisation and faithfulness metrics over a
//! dataset with ground-truth boxes, computed on the device in batches.
//!
//! For every map source (a CAM method, or a baseline map) and every (image, ground-truth
//! class) pair, with the map for that class:
//! - **pointing game**: the map's maximum lies within 15 px (at 224 px, scaled) of the
//!   class's box; reported for one-object and multi-object images;
//! - **class discrimination** (multi-object images): the map's mass inside its class's box
//!   exceeds its mass inside every other object's box;
//! - **top-1 localisation error** (one-object images, the Grad-CAM paper's protocol):
//!   binarise at 15% of the max, box the largest 4-connected component; correct when the
//!   top-1 class is right and IoU ≥ 0.5;
//! - **average drop / increase in confidence** (Grad-CAM++): score the explanation map ⊙ image;
//!   drop = mean of max(0, Y − O) / Y, increase = share with O > Y, on softmax scores;
//! - **deletion / insertion AUC** (RISE): remove the most salient pixels (to black), or
//!   insert them into a blurred copy, in `steps` equal steps; AUC of the class's softmax
//!   score over the fraction of pixels.
//!
//! And the reference implementations' own metrics, on maps read back to the host
//! ([`faithful`], when `EvalConfig::faith` is set; the CLI sets it):
//! - **ROAD** (pytorch-grad-cam): MoRF/LeRF score changes at percentiles with its noisy
//!   linear imputer, their averages and ROADCombined ([`road`], [`imputer`]);
//! - **confidence change**: pgc's `CamMultImageConfidenceChange`, score(input ⊙ map) − score(input);
//! - **torch-cam deletion/insertion**: torch-cam 0.5's `DeletionInsertionMetric` ([`torchcam`]);
//! - **ARCC** (pgc, CAM methods only): the harmonic mean pgc computes ([`arcc`]).
//!
//! Their scores are softmax probabilities of the map's class (pgc's
//! `ClassifierOutputSoftmaxTarget`).

pub mod arcc;
pub mod dataset;
pub mod faithful;
pub mod imputer;
pub mod metrics;
pub mod road;
pub mod scorer;
pub mod torchcam;

pub use dataset::Dataset;
pub use metrics::{Report, Tally};

use crate::engine::{Engine, EngineConfig, Method, TargetSpec};
use crate::error::{Error, Result};
use crate::gpu::{GpuContext, buffer, record_all};
use crate::model::Model;
use crate::ops::eval::{Baseline, Composite, gaussian_taps, trapezoid_auc};
use crate::ops::image::pack_pixels;
use dataset::{Item, Object, load_item};
use rayon::prelude::*;
use scorer::Scorer;
use std::fmt;

/// Where a row's maps come from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Source {
    Method(Method),
    /// A centred Gaussian, the same for every image: what a metric gives for "the object
    /// is usually in the middle".
    CenterGaussian,
    /// Seeded uniform noise: what a metric gives by chance.
    Random,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Method(m) => f.write_str(m.name()),
            Source::CenterGaussian => f.write_str("baseline: centre gaussian"),
            Source::Random => f.write_str("baseline: random"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct EvalConfig {
    /// Target layers; empty for the model's default.
    pub layers: Vec<String>,
    /// Images per batch.
    pub batch: usize,
    /// Deletion/insertion steps; 0 skips those curves.
    pub steps: usize,
    /// Binarisation threshold of the localisation protocol, as a fraction of the map's max.
    pub loc_threshold: f32,
    /// Rows per scoring pass.
    pub score_rows: usize,
    /// ROAD, confidence change, torch-cam deletion/insertion and ARCC; None skips them.
    pub faith: Option<faithful::FaithConfig>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            layers: Vec::new(),
            batch: 16,
            steps: 8,
            loc_threshold: 0.15,
            score_rows: 64,
            faith: None,
        }
    }
}

/// Runs the metrics for one model over one dataset.
pub struct Evaluator<'a> {
    ctx: GpuContext,
    model: &'a Model,
    ds: &'a Dataset,
    items: Vec<&'a Item>,
    cfg: EvalConfig,
    size: [usize; 2],
    scorer: Scorer,
    pixels: wgpu::Buffer,
    maps: wgpu::Buffer,
    peak_at: wgpu::Buffer,
    peak_max: wgpu::Buffer,
    boxes: wgpu::Buffer,
    mass: wgpu::Buffer,
    ranks: wgpu::Buffer,
    blurred: wgpu::Buffer,
    table: wgpu::Buffer,
    max_objects: usize,
}

/// One decoded batch: images with their objects, and where each map row comes from.
struct Batch {
    images: Vec<image::RgbImage>,
    objects: Vec<Vec<Object>>,
    /// Objects (= targets) per image in this group.
    k: usize,
}

impl<'a> Evaluator<'a> {
    /// `items` selects (and orders) the images of `ds` to use.
    pub fn new(
        ctx: &GpuContext,
        model: &'a Model,
        ds: &'a Dataset,
        items: Vec<&'a Item>,
        cfg: EvalConfig,
    ) -> Result<Self> {
        ds.check_classes(&model.classes)?;
        if cfg.batch == 0 || cfg.score_rows == 0 {
            return Err(Error::Invalid("batch sizes must be at least 1".into()));
        }
        let size = model.input_size;
        let n = size[0] * size[1];
        let max_objects = items
            .iter()
            .map(|i| i.objects.len())
            .max()
            .unwrap_or(1)
            .max(1);
        let rows = cfg.batch * max_objects;
        let storage = |label: &str, bytes: usize| buffer::storage(ctx, label, bytes as u64);
        Ok(Self {
            scorer: Scorer::new(ctx, model, size, cfg.score_rows)?,
            pixels: storage("eval pixels", cfg.batch * n * 4),
            maps: storage("baseline maps", rows * n * 4),
            peak_at: storage("peak at", rows * 4),
            peak_max: storage("peak max", rows * 4),
            boxes: storage("boxes", rows * max_objects * 16),
            mass: storage("box mass", rows * max_objects * 4),
            ranks: storage("ranks", rows * n * 4),
            blurred: storage("blurred", cfg.batch * 3 * n * 4),
            table: storage("compose table", cfg.score_rows * 8),
            ctx: ctx.clone(),
            model,
            ds,
            items,
            cfg,
            size,
            max_objects,
        })
    }

    /// Evaluates one map source over the selected images.
    pub fn run(&mut self, source: Source) -> Result<Report> {
        let start = std::time::Instant::now();
        let mut tally = Tally::default();
        let faith = self.cfg.faith.clone();
        if let Some(f) = &faith {
            tally.road_percentiles = f.road_percentiles.clone();
        }
        // ARCC's coherency runs the method again, one target per input.
        let mut arcc_engine = match (source, &faith) {
            (Source::Method(method), Some(f)) if f.arcc => Some(Engine::new(
                self.ctx.clone(),
                self.model,
                EngineConfig {
                    layers: self.cfg.layers.clone(),
                    method,
                    size: self.size,
                    batch: self.cfg.batch,
                    targets: TargetSpec::PerImage(1),
                    mean: self.model.mean,
                    std: self.model.std,
                    read_maps: true,
                    ..Default::default()
                },
            )?),
            _ => None,
        };
        for k in 1..=self.max_objects {
            let group: Vec<&Item> = self
                .items
                .iter()
                .copied()
                .filter(|i| i.objects.len() == k)
                .collect();
            if group.is_empty() {
                continue;
            }
            let mut engine = match source {
                Source::Method(method) => Some(Engine::new(
                    self.ctx.clone(),
                    self.model,
                    EngineConfig {
                        layers: self.cfg.layers.clone(),
                        method,
                        size: self.size,
                        batch: self.cfg.batch,
                        targets: TargetSpec::PerImage(k),
                        mean: self.model.mean,
                        std: self.model.std,
                        ..Default::default()
                    },
                )?),
                _ => None,
            };
            let batch = engine.as_ref().map_or(self.cfg.batch, |e| e.batch_size());
            for chunk in group.chunks(batch.min(self.cfg.batch)) {
                let b = self.decode(chunk, k, &mut tally);
                if b.images.is_empty() {
                    continue;
                }
                let classes: Vec<Vec<usize>> = b
                    .objects
                    .iter()
                    .map(|o| o.iter().map(|o| o.class).collect())
                    .collect();
                match engine.as_mut() {
                    Some(engine) => {
                        let results = engine.explain_on_device(&b.images, Some(&classes))?;
                        let maps = results.maps();
                        self.measure(&b, maps, &mut tally)?;
                        if let Some(f) = &faith {
                            let maps = maps.clone();
                            self.faithful(&b, &maps, f, arcc_engine.as_mut(), &mut tally)?;
                        }
                    }
                    None => {
                        let rows = b.images.len() * k;
                        let kind = match source {
                            Source::CenterGaussian => Baseline::CenterGaussian { sigma: 0.25 },
                            _ => Baseline::Uniform { seed: 0x5eed },
                        };
                        let ops = self.scorer.ops();
                        let d = ops
                            .eval
                            .baseline_map(&self.ctx, rows, self.size, kind, &self.maps);
                        self.submit(&[d])?;
                        let maps = self.maps.clone();
                        self.measure(&b, &maps, &mut tally)?;
                        if let Some(f) = &faith {
                            self.faithful(&b, &maps, f, None, &mut tally)?;
                        }
                    }
                }
            }
        }
        Ok(tally.report(&source.to_string(), start.elapsed().as_secs_f64()))
    }

    fn decode(&self, chunk: &[&Item], k: usize, tally: &mut Tally) -> Batch {
        let loaded: Vec<_> = chunk
            .par_iter()
            .map(|item| (item, load_item(self.ds, item, self.size)))
            .collect();
        let mut b = Batch {
            images: Vec::new(),
            objects: Vec::new(),
            k,
        };
        for (item, r) in loaded {
            match r {
                Ok((img, objects)) => {
                    b.images.push(img);
                    b.objects.push(objects);
                }
                Err(e) => {
                    tally.failed += 1;
                    eprintln!("error: {}: {e}", self.ds.path(item).display());
                }
            }
        }
        b
    }

    fn submit(&self, d: &[crate::gpu::Dispatch]) -> Result<()> {
        let mut encoder = self.encoder();
        record_all(&mut encoder, "eval", d);
        buffer::submit_and_read(&self.ctx, encoder, &[])?;
        Ok(())
    }

    fn encoder(&self) -> wgpu::CommandEncoder {
        self.ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("eval"),
            })
    }

    /// Every metric for the maps of one batch (`[images, k, H, W]` in `maps`).
    fn measure(&mut self, b: &Batch, maps: &wgpu::Buffer, tally: &mut Tally) -> Result<()> {
        let (ctx, size, k) = (&self.ctx.clone(), self.size, b.k);
        let w = size[1];
        let rows = b.images.len() * k;
        let pixels = pack_pixels(&b.images);
        ctx.queue
            .write_buffer(&self.pixels, 0, bytemuck::cast_slice(&pixels));
        // Per row: its own box first, then the image's other objects' boxes.
        let mut boxes = vec![0u32; rows * k * 4];
        for (i, objs) in b.objects.iter().enumerate() {
            for t in 0..k {
                let order = std::iter::once(t).chain((0..k).filter(|&o| o != t));
                for (slot, o) in order.enumerate() {
                    let at = ((i * k + t) * k + slot) * 4;
                    boxes[at..at + 4].copy_from_slice(&objs[o].bbox);
                }
            }
        }
        ctx.queue
            .write_buffer(&self.boxes, 0, bytemuck::cast_slice(&boxes));

        let ops = self.scorer.ops();
        let mut d = vec![
            ops.eval
                .map_peak(ctx, rows, size, maps, &self.peak_at, &self.peak_max),
            ops.eval
                .box_mass(ctx, rows, size, k, maps, &self.boxes, &self.mass),
        ];
        if self.cfg.steps > 0 {
            d.extend(ops.eval.rank_desc(ctx, rows, size, maps, &self.ranks));
            let mean = self.model.mean;
            d.extend(ops.eval.blur(
                ctx,
                b.images.len(),
                size,
                &gaussian_taps(11, 5.0),
                mean,
                &self.pixels,
                &self.blurred,
            ));
        }
        let mut encoder = self.encoder();
        record_all(&mut encoder, "eval stats", &d);
        let read = buffer::submit_and_read(
            ctx,
            encoder,
            &[
                (&self.peak_at, (rows * 4) as u64),
                (&self.mass, (rows * k * 4) as u64),
            ],
        )?;
        let peak_at: Vec<u32> = bytemuck::pod_collect_to_vec(&read[0]);
        let mass: Vec<f32> = bytemuck::pod_collect_to_vec(&read[1]);
        let comps = ops
            .eval
            .largest_component(ctx, rows, size, self.cfg.loc_threshold, maps)?
            .components;

        // Scores: the plain image (deletion step 0), the explanation, and the curves.
        let steps = self.cfg.steps.max(1);
        let deletion = self.score(b, maps, Mode::Deletion, steps, self.cfg.steps > 0)?;
        let explanation = self.score(b, maps, Mode::Explanation, 1, false)?;
        let insertion = if self.cfg.steps > 0 {
            Some(self.score(b, maps, Mode::Insertion, steps, true)?)
        } else {
            None
        };

        let tol = metrics::pointing_tolerance(size);
        let classes = self.scorer.classes();
        for (i, objs) in b.objects.iter().enumerate() {
            for (t, obj) in objs.iter().enumerate() {
                let r = i * k + t;
                let c = obj.class;
                let at = peak_at[r] as usize;
                let hit = metrics::pointing_hit([(at % w) as u32, (at / w) as u32], obj.bbox, tol);
                let curve =
                    |s: &Scores| -> Vec<f64> { s.rows[r].iter().map(|p| p[c] as f64).collect() };
                let plain = &deletion.rows[r][0];
                if k == 1 {
                    tally.single += 1;
                    tally.single_hits += hit as usize;
                    let top1 = (0..classes)
                        .max_by(|&a, &b| plain[a].total_cmp(&plain[b]).then(b.cmp(&a)))
                        .unwrap_or(0);
                    tally.loc += 1;
                    let comp = comps[r];
                    tally.loc_correct +=
                        (top1 == c && comp.size > 0 && metrics::iou(comp.bbox, obj.bbox) >= 0.5)
                            as usize;
                } else {
                    tally.two += 1;
                    tally.two_hits += hit as usize;
                    let own = mass[r * k];
                    let other = mass[r * k + 1..(r + 1) * k]
                        .iter()
                        .copied()
                        .fold(f32::MIN, f32::max);
                    tally.discriminated += (own > other) as usize;
                }
                let y = plain[c] as f64;
                let o = explanation.rows[r][0][c] as f64;
                tally.confidence += 1;
                tally.drop_sum += if y > 0.0 { (y - o).max(0.0) / y } else { 0.0 };
                tally.increased += (o > y) as usize;
                if let Some(ins) = &insertion {
                    tally.curves += 1;
                    tally.deletion_sum += trapezoid_auc(&curve(&deletion));
                    tally.insertion_sum += trapezoid_auc(&curve(ins));
                }
            }
        }
        Ok(())
    }

    /// The reference implementations' metrics ([`faithful`], ARCC) for one batch's maps.
    fn faithful(
        &mut self,
        b: &Batch,
        maps: &wgpu::Buffer,
        f: &faithful::FaithConfig,
        arcc_engine: Option<&mut Engine>,
        tally: &mut Tally,
    ) -> Result<()> {
        let n = self.size[0] * self.size[1];
        let rows = b.images.len() * b.k;
        let read =
            buffer::submit_and_read(&self.ctx, self.encoder(), &[(maps, (rows * n * 4) as u64)])?;
        let cams: Vec<f32> = bytemuck::pod_collect_to_vec(&read[0]);
        let inputs: Vec<Vec<f32>> = b
            .images
            .iter()
            .map(|im| faithful::normalize(im, self.model.mean, self.model.std))
            .collect();
        let classes: Vec<usize> = b
            .objects
            .iter()
            .flat_map(|o| o.iter().map(|o| o.class))
            .collect();
        let map_rows: Vec<faithful::MapRow> = (0..rows)
            .map(|r| faithful::MapRow {
                input: &inputs[r / b.k],
                cam: &cams[r * n..(r + 1) * n],
                class: classes[r],
                id: (tally.maps_measured + r) as u64,
            })
            .collect();
        let (cap, nclasses) = (self.scorer.capacity(), self.scorer.classes());
        let scorer = &mut self.scorer;
        let scores = faithful::measure(&map_rows, self.size, f, cap, nclasses, &mut |x, rows| {
            scorer.probabilities_of(x, rows)
        })?;
        let mixed = match arcc_engine {
            Some(engine) => {
                let mixed: Vec<Vec<f32>> = map_rows
                    .iter()
                    .map(|m| faithful::mult(m.input, m.cam))
                    .collect();
                Some(arcc::mixed_maps(engine, &mixed, &classes)?)
            }
            None => None,
        };
        for (r, s) in scores.iter().enumerate() {
            let coherency = mixed
                .as_ref()
                .map(|m| arcc::coherency(&m[r], map_rows[r].cam));
            tally.add_faithful(s, map_rows[r].cam, coherency);
        }
        tally.maps_measured += rows;
        Ok(())
    }

    /// Softmax scores of composed inputs: for every map row, steps `0..=steps` (or just step
    /// 0 unless `curve`), in scoring passes of at most `score_rows` rows.
    fn score(
        &mut self,
        b: &Batch,
        maps: &wgpu::Buffer,
        mode: Mode,
        steps: usize,
        curve: bool,
    ) -> Result<Scores> {
        let rows = b.images.len() * b.k;
        let per_row = if curve { steps + 1 } else { 1 };
        let jobs: Vec<(u32, u32)> = (0..rows)
            .flat_map(|r| (0..per_row).map(move |s| (r as u32, s as u32)))
            .collect();
        let classes = self.scorer.classes();
        let mut out = vec![vec![Vec::new(); per_row]; rows];
        for chunk in jobs.chunks(self.scorer.capacity()) {
            let table: Vec<u32> = chunk.iter().flat_map(|&(r, s)| [r, s]).collect();
            self.ctx
                .queue
                .write_buffer(&self.table, 0, bytemuck::cast_slice(&table));
            let source = match mode {
                Mode::Explanation => Composite::Explanation { maps },
                Mode::Deletion => Composite::Deletion {
                    ranks: &self.ranks,
                    steps,
                },
                Mode::Insertion => Composite::Insertion {
                    ranks: &self.ranks,
                    blurred: &self.blurred,
                    steps,
                },
            };
            let d = self.scorer.ops().eval.compose(
                &self.ctx,
                chunk.len(),
                self.size,
                b.k,
                source,
                self.model.mean,
                self.model.std,
                &self.pixels,
                &self.table,
                self.scorer.input(),
            );
            let mut encoder = self.encoder();
            record_all(&mut encoder, "compose", &[d]);
            let probs = self.scorer.probabilities(encoder, chunk.len())?;
            for (j, &(r, s)) in chunk.iter().enumerate() {
                out[r as usize][s as usize] = probs[j * classes..(j + 1) * classes].to_vec();
            }
        }
        Ok(Scores { rows: out })
    }
}

#[derive(Clone, Copy)]
enum Mode {
    Explanation,
    Deletion,
    Insertion,
}

/// `rows[map row][step]` = softmax scores over the classes.
struct Scores {
    rows: Vec<Vec<Vec<f32>>>,
}
