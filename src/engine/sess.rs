//! SESS, Saliency Enhancing with Scaling and Sliding (pytorch-grad-cam's `sess.py`): the image
//! at several scales, square windows slid over each, the base method on every patch (all
//! patches of an image batched on the device, every target class in the same passes), each
//! patch map weighted by its patch's softmax score, pasted back, fused by a weighted mean (or
//! max), blurred, and rescaled per image.

use super::{Engine, EngineConfig, ImageResult, TargetResult, TargetSpec};
use crate::GpuContext;
use crate::error::{Error, Result};
use crate::model::{Model, Output};
use crate::reference::image::{overlay, upsample_bilinear};

/// How patch maps are fused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SessPool {
    /// Per pixel, the mean over the patches whose map exceeds `theta` there.
    #[default]
    Mean,
    /// Per pixel, the maximum over the patches.
    Max,
}

/// pytorch-grad-cam's SESS parameters, with its defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct SessOptions {
    /// Sizes the image is resized to; default `num_scales` sizes from the window size up in
    /// steps of round(window · `scale_step_ratio`).
    pub scales: Option<Vec<usize>>,
    pub num_scales: usize,
    pub scale_step_ratio: f64,
    /// The square window's side; default the input's shorter side.
    pub window: Option<usize>,
    /// The window's stride; default the window (no overlap but at the borders).
    pub step: Option<usize>,
    /// Share of the lowest-scoring patches left out.
    pub pre_filter_ratio: f64,
    /// Mean pooling ignores map values at or below this.
    pub theta: f32,
    pub pool: SessPool,
    /// Gaussian blur (11 x 11, sigma 5) of the fused map.
    pub smooth: bool,
}

impl Default for SessOptions {
    fn default() -> Self {
        Self {
            scales: None,
            num_scales: 12,
            scale_step_ratio: 2.0 / 7.0,
            window: None,
            step: None,
            pre_filter_ratio: 0.0,
            theta: 0.0,
            pool: SessPool::Mean,
            smooth: true,
        }
    }
}

/// One patch: where it was cut from.
#[derive(Clone, Copy, Debug)]
struct Patch {
    x1: usize,
    y1: usize,
    /// The scaled image's side (square inputs).
    side: usize,
}

/// An engine running SESS around its method.
pub struct Sess {
    engine: Engine,
    opts: SessOptions,
    spec: TargetSpec,
    /// Targets per image.
    k: usize,
    classes: usize,
    side: usize,
    window: usize,
    step: usize,
    mean: [f32; 3],
    std: [f32; 3],
    /// Whether results carry their maps (`read_maps`).
    read_maps: bool,
}

impl Sess {
    /// SESS over `cfg`'s method, layers and targets. The input must be square; the window
    /// is the input (pgc's default), so every patch runs at the model's input size.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new(
        ctx: GpuContext,
        model: &Model,
        cfg: EngineConfig,
        opts: SessOptions,
    ) -> Result<Self> {
        pollster::block_on(Self::new_async(ctx, model, cfg, opts))
    }

    /// [`Sess::new`] without blocking.
    pub async fn new_async(
        ctx: GpuContext,
        model: &Model,
        cfg: EngineConfig,
        opts: SessOptions,
    ) -> Result<Self> {
        let [h, w] = cfg.size;
        if h != w {
            return Err(Error::Invalid(format!(
                "--sess slides square windows of the input size: the input must be square, not {h}x{w}"
            )));
        }
        let window = opts.window.unwrap_or(h);
        if window != h {
            return Err(Error::Invalid(format!(
                "--sess-window {window}: the engine runs patches at the model's input size {h}"
            )));
        }
        let step = opts.step.unwrap_or(window);
        if step == 0 {
            return Err(Error::Invalid("--sess-step must be at least 1".into()));
        }
        if !(0.0..1.0).contains(&opts.pre_filter_ratio) {
            return Err(Error::Invalid(format!(
                "--sess-prefilter {} must be in [0, 1)",
                opts.pre_filter_ratio
            )));
        }
        if opts.num_scales == 0 && opts.scales.is_none() {
            return Err(Error::Invalid("--sess-scales must be at least 1".into()));
        }
        if cfg.aug_smooth {
            return Err(Error::Invalid(
                "--sess with --aug-smooth: pytorch-grad-cam's SESS runs the base method plain"
                    .into(),
            ));
        }
        let shapes = model.graph.shapes(cfg.size)?;
        let classes = shapes.last().map_or(0, |s| s[0]);
        let k = cfg.targets.count(cfg.score.categories(classes)?)?;
        let spec = cfg.targets.clone();
        let (mean, std, read_maps) = (cfg.mean, cfg.std, cfg.read_maps);
        let engine = Engine::new_async(
            ctx,
            model,
            EngineConfig {
                targets: TargetSpec::PerImage(k),
                read_maps: true,
                ..cfg
            },
        )
        .await?;
        let sess = Self {
            engine,
            opts,
            spec,
            k,
            classes,
            side: h,
            window,
            step,
            mean,
            std,
            read_maps,
        };
        if let Some(&s) = sess.scales().iter().find(|&&s| s < window) {
            return Err(Error::Invalid(format!(
                "--sess scale {s} is smaller than the window {window}"
            )));
        }
        Ok(sess)
    }

    /// The engine that explains the patches.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The sizes the image is scaled to.
    fn scales(&self) -> Vec<usize> {
        if let Some(s) = &self.opts.scales {
            return s.clone();
        }
        // Python's round: ties to even.
        let step = (self.window as f64 * self.opts.scale_step_ratio).round_ties_even() as usize;
        (0..self.opts.num_scales)
            .map(|i| self.window + step * i)
            .collect()
    }

    /// Explains `images` (each the input size) for the configured targets; with
    /// [`TargetSpec::PerImage`], `classes` gives them.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn explain(
        &mut self,
        images: &[image::RgbImage],
        classes: Option<&[Vec<usize>]>,
    ) -> Result<Vec<ImageResult>> {
        pollster::block_on(self.explain_async(images, classes))
    }

    /// [`Sess::explain`] without blocking.
    pub async fn explain_async(
        &mut self,
        images: &[image::RgbImage],
        classes: Option<&[Vec<usize>]>,
    ) -> Result<Vec<ImageResult>> {
        if matches!(self.spec, TargetSpec::PerImage(_)) != classes.is_some() {
            return Err(Error::Invalid(
                "pass classes exactly when the engine uses TargetSpec::PerImage".into(),
            ));
        }
        let mut out = Vec::with_capacity(images.len());
        for (i, img) in images.iter().enumerate() {
            out.push(
                self.explain_one(img, classes.map(|c| c[i].as_slice()))
                    .await?,
            );
        }
        Ok(out)
    }

    async fn explain_one(
        &mut self,
        img: &image::RgbImage,
        given: Option<&[usize]>,
    ) -> Result<ImageResult> {
        let s = self.side;
        if [img.height() as usize, img.width() as usize] != [s, s] {
            return Err(Error::Invalid(format!(
                "image is {}x{}, expected the input size {s}x{s}",
                img.height(),
                img.width()
            )));
        }
        let x = self.normalize(img);
        // The whole image's logits, and its targets where the spec picks them.
        let probe = given.map_or_else(|| vec![0; self.k], <[usize]>::to_vec);
        let logits = self
            .engine
            .explain_tensor_async(&x, 1, Some(&[probe]))
            .await?[0]
            .logits
            .clone();
        let targets = match given {
            Some(c) => c.to_vec(),
            None => self.pick(&logits),
        };
        let (patches, cut) = self.patches(&x);
        let each = 3 * s * s;
        let n = cut.len();
        let mut maps = vec![Vec::new(); n];
        let mut scores = vec![vec![0f32; n]; self.k];
        let batch = self.engine.batch_size();
        for p0 in (0..n).step_by(batch) {
            let m = batch.min(n - p0);
            let chunk = &patches[p0 * each..(p0 + m) * each];
            let rows = vec![targets.clone(); m];
            for (j, r) in self
                .engine
                .explain_tensor_async(chunk, m, Some(&rows))
                .await?
                .into_iter()
                .enumerate()
            {
                let prob = Output::Softmax.scores(&r.logits);
                for (t, &c) in targets.iter().enumerate() {
                    // Negative scores can't weigh (pgc clips them; softmax never is).
                    scores[t][p0 + j] = prob[c].max(0.0);
                }
                maps[p0 + j] = r
                    .targets
                    .into_iter()
                    .map(|t| t.map.expect("read_maps is set"))
                    .collect::<Vec<_>>();
            }
        }
        let pixels: Vec<u8> = img.pixels().flat_map(|p| [p[0], p[1], p[2], 255]).collect();
        let results = targets
            .iter()
            .enumerate()
            .map(|(t, &class)| {
                let fused = self.fuse(&cut, &scores[t], |p| &maps[p][t]);
                let map = scale(fused);
                let map64: Vec<f64> = map.iter().map(|&v| v as f64).collect();
                let rgba = overlay(&pixels, &map64, 1, 1, [s, s]);
                let rgb = rgba.chunks(4).flat_map(|p| [p[0], p[1], p[2]]).collect();
                TargetResult {
                    class,
                    map: self.read_maps.then_some(map),
                    overlay: image::RgbImage::from_raw(s as u32, s as u32, rgb)
                        .expect("overlay has s*s pixels"),
                }
            })
            .collect();
        Ok(ImageResult {
            logits,
            targets: results,
        })
    }

    /// The input as the model takes it, `[3, s, s]`.
    fn normalize(&self, img: &image::RgbImage) -> Vec<f32> {
        let plane = self.side * self.side;
        let mut x = vec![0f32; 3 * plane];
        for (i, p) in img.pixels().enumerate() {
            for c in 0..3 {
                x[c * plane + i] = (f32::from(p[c]) / 255.0 - self.mean[c]) / self.std[c];
            }
        }
        x
    }

    /// The spec's classes for these logits (ties to the lower class).
    fn pick(&self, logits: &[f32]) -> Vec<usize> {
        match &self.spec {
            TargetSpec::TopK(k) => {
                let mut order: Vec<usize> = (0..logits.len()).collect();
                order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
                order.truncate(*k);
                order
            }
            TargetSpec::Classes(c) => c.clone(),
            TargetSpec::All => (0..self.classes).collect(),
            TargetSpec::PerImage(_) => unreachable!("PerImage targets are given"),
        }
    }

    /// Every patch of every scale, `[P, 3, window, window]`, and where each was cut.
    fn patches(&self, x: &[f32]) -> (Vec<f32>, Vec<Patch>) {
        let (s, win) = (self.side, self.window);
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let (mut out, mut cut) = (Vec::new(), Vec::new());
        for side in self.scales() {
            // torchvision's resize (bilinear; antialiasing is inert when enlarging).
            let scaled = upsample_bilinear(&x64, 3, [s, s], [side, side]);
            let starts = window_starts(side, self.step, win);
            for &y1 in &starts {
                for &x1 in &starts {
                    for c in 0..3 {
                        for y in y1..y1 + win {
                            let row = (c * side + y) * side;
                            out.extend(scaled[row + x1..row + x1 + win].iter().map(|&v| v as f32));
                        }
                    }
                    cut.push(Patch { x1, y1, side });
                }
            }
        }
        (out, cut)
    }

    /// The fused `[s, s]` map of one target: patch maps weighted by their scores over the
    /// best, pasted at their scale, resized to the input (cv2.resize), pooled, blurred.
    fn fuse<'m>(
        &self,
        cut: &[Patch],
        scores: &[f32],
        map: impl Fn(usize) -> &'m Vec<f32>,
    ) -> Vec<f32> {
        let (s, win) = (self.side, self.window);
        let mut order: Vec<usize> = (0..cut.len()).collect();
        order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
        let order = &order[(cut.len() as f64 * self.opts.pre_filter_ratio) as usize..];
        let best = order.last().map_or(0.0, |&p| scores[p]);
        let mut total = vec![0f32; s * s];
        let mut counts = vec![0f32; s * s];
        for &p in order {
            let weight = if best > 0.0 { scores[p] / best } else { 1.0 };
            let Patch { x1, y1, side } = cut[p];
            let mut full = vec![0f64; side * side];
            for (y, row) in map(p).chunks(win).enumerate() {
                for (x, &v) in row.iter().enumerate() {
                    full[(y1 + y) * side + x1 + x] = (v * weight) as f64;
                }
            }
            let cam = upsample_bilinear(&full, 1, [side, side], [s, s]);
            for (i, &v) in cam.iter().enumerate() {
                let v = v as f32;
                match self.opts.pool {
                    SessPool::Max => total[i] = total[i].max(v),
                    SessPool::Mean if v > self.opts.theta => {
                        total[i] += v;
                        counts[i] += 1.0;
                    }
                    SessPool::Mean => {}
                }
            }
        }
        if self.opts.pool == SessPool::Mean {
            for (t, &c) in total.iter_mut().zip(&counts) {
                *t = if c > 0.0 { *t / c } else { 0.0 };
            }
        }
        if self.opts.smooth {
            total = gaussian_blur(&total, [s, s]);
        }
        total
    }
}

/// pgc's window_starts: steps of `step`, the last window moved back inside the image.
fn window_starts(length: usize, step: usize, window: usize) -> Vec<usize> {
    let mut starts = Vec::new();
    for start in (0..length).step_by(step) {
        if start + window >= length {
            starts.push(length.saturating_sub(window));
            break;
        }
        starts.push(start);
    }
    starts
}

/// pgc's scale_cam_image without a resize: (x - min) / (1e-7 + max of that).
fn scale(mut map: Vec<f32>) -> Vec<f32> {
    let min = map.iter().copied().fold(f32::INFINITY, f32::min);
    map.iter_mut().for_each(|v| *v -= min);
    let max = map.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    map.iter_mut().for_each(|v| *v /= 1e-7 + max);
    map
}

/// cv2.GaussianBlur(map, (11, 11), 5): a separable float32 kernel, BORDER_REFLECT_101.
fn gaussian_blur(map: &[f32], [h, w]: [usize; 2]) -> Vec<f32> {
    const K: usize = 11;
    let sigma = 5.0f64;
    let g: Vec<f64> = (0..K)
        .map(|i| {
            let x = i as f64 - (K - 1) as f64 * 0.5;
            (-0.5 / (sigma * sigma) * x * x).exp()
        })
        .collect();
    let sum: f64 = g.iter().sum();
    let kernel: Vec<f64> = g.iter().map(|v| ((v / sum) as f32) as f64).collect();
    let reflect = |i: isize, n: usize| -> usize {
        let n = n as isize;
        if n == 1 {
            return 0;
        }
        let mut i = i;
        while i < 0 || i >= n {
            i = if i < 0 { -i } else { 2 * (n - 1) - i };
        }
        i as usize
    };
    let r = (K / 2) as isize;
    let mut rows = vec![0f32; h * w];
    for y in 0..h {
        for x in 0..w {
            let v: f64 = (0..K)
                .map(|k| kernel[k] * map[y * w + reflect(x as isize + k as isize - r, w)] as f64)
                .sum();
            rows[y * w + x] = v as f32;
        }
    }
    let mut out = vec![0f32; h * w];
    for y in 0..h {
        for x in 0..w {
            let v: f64 = (0..K)
                .map(|k| kernel[k] * rows[reflect(y as isize + k as isize - r, h) * w + x] as f64)
                .sum();
            out[y * w + x] = v as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pgc's window_starts on the 224-pixel default scales.
    #[test]
    fn windows() {
        assert_eq!(window_starts(224, 224, 224), vec![0]);
        assert_eq!(window_starts(288, 224, 224), vec![0, 64]);
        assert_eq!(window_starts(928, 224, 224), vec![0, 224, 448, 672, 704]);
        assert_eq!(window_starts(10, 3, 4), vec![0, 3, 6]);
    }

    /// A constant map stays constant under the blur (the kernel sums to 1 in float32).
    #[test]
    fn blur_keeps_constants() {
        let out = gaussian_blur(&[0.5; 35], [5, 7]);
        assert!(out.iter().all(|v| (v - 0.5).abs() < 1e-6), "{out:?}");
    }
}
