//! Deep Feature Factorization (Collins et al. 2018) as pytorch-grad-cam 1.5.7's
//! `DeepFeatureFactorization`: the target layer's activations over a batch, channel-major
//! `[C, N·h·w]` with each channel's minimum subtracted, factorised by sklearn's NMF into K
//! concepts: W + offset are the concept vectors `[C, K]`, H the per-image concept maps. Each
//! concept is labelled by the classifier head after the global pool (`computation_on_concepts`).
//!
//! Pure host computation on activations the engine read back
//! ([`crate::Engine::layer_activations`]): no threads, no files.

pub mod nmf;
pub mod overlay;
pub mod random;

use crate::error::{Error, Result};
use crate::graph::op::Reference;
use crate::graph::{Graph, Op, Shape};
use crate::weights::Weights;
use nmf::{NmfConfig, nmf};

/// pgc's `dff()` output for a batch.
#[derive(Clone, Debug)]
pub struct Factorization {
    pub images: usize,
    pub channels: usize,
    pub components: usize,
    /// The layer's grid `[h, w]`.
    pub grid: [usize; 2],
    /// W + offset, `[C, K]` (pgc's `concepts`).
    pub concepts: Vec<f32>,
    /// H as `[N, K, h, w]` (pgc's `explanations`).
    pub explanations: Vec<f32>,
    /// NMF iterations run.
    pub iterations: usize,
}

/// Factorises `acts` (`[n, C, h, w]` f32 per `shape` = `[C, h, w]`) into `k` concepts as
/// pgc's `dff()`: NaN read as 0, sklearn's `NMF(k, init='random', random_state=0)` in f32.
pub fn factorize(acts: &[f32], n: usize, shape: Shape, k: usize) -> Result<Factorization> {
    let [c, h, w] = shape;
    let plane = h * w;
    let count = n.checked_mul(c).and_then(|v| v.checked_mul(plane));
    if n == 0 || count != Some(acts.len()) {
        return Err(Error::Invalid(format!(
            "{} activations for {n} images of shape {shape:?}",
            acts.len()
        )));
    }
    if k == 0 || k > c {
        return Err(Error::Invalid(format!(
            "concepts must be 1 to {c} (the layer's channels), got {k}"
        )));
    }
    let cols = n * plane;
    let mut x = vec![0f32; c * cols];
    for i in 0..n {
        for ch in 0..c {
            let src = &acts[(i * c + ch) * plane..][..plane];
            let dst = &mut x[ch * cols + i * plane..][..plane];
            for (d, s) in dst.iter_mut().zip(src) {
                *d = if s.is_nan() { 0.0 } else { *s };
            }
        }
    }
    if x.iter().any(|v| v.is_infinite()) {
        return Err(Error::Invalid(
            "the layer's activations are not finite".into(),
        ));
    }
    let offset: Vec<f32> = x
        .chunks(cols)
        .map(|row| row.iter().copied().fold(f32::INFINITY, f32::min))
        .collect();
    for (row, o) in x.chunks_mut(cols).zip(&offset) {
        row.iter_mut().for_each(|v| *v -= o);
    }
    let f = nmf(&x, c, cols, &NmfConfig::new(k))?;
    let concepts =
        f.w.chunks(k)
            .zip(&offset)
            .flat_map(|(row, o)| row.iter().map(move |v| v + o))
            .collect();
    let mut explanations = vec![0f32; n * k * plane];
    for t in 0..k {
        for i in 0..n {
            explanations[(i * k + t) * plane..][..plane]
                .copy_from_slice(&f.h[t * cols + i * plane..][..plane]);
        }
    }
    Ok(Factorization {
        images: n,
        channels: c,
        components: k,
        grid: [h, w],
        concepts,
        explanations,
        iterations: f.iterations,
    })
}

impl Factorization {
    /// pgc's processed explanations `[N, K, H, W]`: each map min-max scaled
    /// (`scale_cam_image`: x − min, / (1e-7 + max), in f32) and resized bilinearly to `size`.
    pub fn maps(&self, size: [usize; 2]) -> Vec<f32> {
        let plane = self.grid[0] * self.grid[1];
        let scaled: Vec<f64> = self
            .explanations
            .chunks(plane)
            .flat_map(|m| {
                let lo = m.iter().copied().fold(f32::INFINITY, f32::min);
                let shifted: Vec<f32> = m.iter().map(|v| v - lo).collect();
                let hi = shifted.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let den = 1e-7f32 + hi;
                shifted.into_iter().map(move |v| (v / den) as f64)
            })
            .collect();
        let rows = self.images * self.components;
        crate::reference::image::upsample_bilinear(&scaled, rows, self.grid, size)
            .into_iter()
            .map(|v| v as f32)
            .collect()
    }

    /// The concept vectors `[K, C]` (concepts transposed), as the head reads them.
    pub fn concept_vectors(&self) -> Vec<f32> {
        let (c, k) = (self.channels, self.components);
        (0..k)
            .flat_map(|t| (0..c).map(move |ch| self.concepts[ch * k + t]))
            .collect()
    }
}

/// The classifier head after a global average pool of the target layer: the graph nodes from
/// the pool to the output, which read nothing but the pool and each other.
pub struct ConceptHead {
    pool: usize,
    nodes: Vec<usize>,
    shapes: Vec<Shape>,
    channels: usize,
}

impl ConceptHead {
    /// The head over graph node `layer` (input size `size`), or an error saying why there is
    /// none (pgc needs a `computation_on_concepts`; ours is the model's own head).
    pub fn new(graph: &Graph, layer: usize, size: [usize; 2]) -> Result<Self> {
        let shapes = graph.shapes(size)?;
        let none = |why: &str| {
            Error::Invalid(format!(
                "dff labels concepts with the classifier head after a global average pool of \
                 the layer, and `{}` has none: {why}",
                graph.nodes[layer].name
            ))
        };
        let channels = shapes[layer][0];
        let pool = (layer + 1..graph.nodes.len())
            .find(|&i| {
                let n = &graph.nodes[i];
                n.inputs == [layer]
                    && shapes[i] == [channels, 1, 1]
                    && match &n.op {
                        Op::AdaptiveAvgPool2d(p) => p.output == [1, 1],
                        Op::ReduceMean(r) => r.start == 1 && r.end == 3,
                        _ => false,
                    }
            })
            .ok_or_else(|| none("no global average pool reads it"))?;
        // The nodes the output needs; past the pool they may read only the head.
        let out = graph.output();
        let mut needed = vec![false; graph.nodes.len()];
        needed[out] = true;
        for i in (0..=out).rev() {
            if needed[i] && i != pool {
                for &j in &graph.nodes[i].inputs {
                    needed[j] = true;
                }
            }
        }
        if !needed[pool] {
            return Err(none("the output does not read its pool"));
        }
        let nodes: Vec<usize> = (pool + 1..=out).filter(|&i| needed[i]).collect();
        for &i in &nodes {
            if graph.nodes[i].inputs.iter().any(|&j| j < pool) {
                return Err(none(&format!(
                    "`{}` after the pool reads an earlier layer",
                    graph.nodes[i].name
                )));
            }
        }
        Ok(Self {
            pool,
            nodes,
            shapes,
            channels,
        })
    }

    /// The head's outputs `[K, classes]` for concept vectors `[K, C]` (f64 references of its
    /// ops, as pgc runs `computation_on_concepts` on the f32 concepts).
    pub fn outputs(&self, graph: &Graph, weights: &Weights, vectors: &[f32]) -> Result<Vec<f32>> {
        let k = vectors.len() / self.channels;
        if k == 0 || vectors.len() != k * self.channels {
            return Err(Error::Invalid(format!(
                "concept vectors hold {} values, not K x {}",
                vectors.len(),
                self.channels
            )));
        }
        let mut acts: Vec<Option<Vec<f64>>> = vec![None; graph.nodes.len()];
        acts[self.pool] = Some(vectors.iter().map(|&v| v as f64).collect());
        for &i in &self.nodes {
            let node = &graph.nodes[i];
            let inputs: Vec<&[f64]> = node
                .inputs
                .iter()
                .map(|&j| acts[j].as_deref().expect("head inputs precede"))
                .collect();
            let in_shapes: Vec<Shape> = node.inputs.iter().map(|&j| self.shapes[j]).collect();
            let out = node.op.node().reference(&Reference {
                weights,
                n: k,
                rep: 1,
                inputs: &inputs,
                in_shapes: &in_shapes,
                output: &[],
                shape: self.shapes[i],
            })?;
            acts[i] = Some(out);
        }
        let last = self.nodes.last().copied().unwrap_or(self.pool);
        Ok(acts[last]
            .take()
            .expect("head output")
            .into_iter()
            .map(|v| v as f32)
            .collect())
    }
}

/// Row-wise softmax of `[rows, classes]` (run_dff_on_image's `torch.softmax`).
pub fn softmax(x: &[f32], classes: usize) -> Vec<f32> {
    x.chunks(classes.max(1))
        .flat_map(|row| {
            let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
            let s: f64 = e.iter().sum();
            e.into_iter().map(move |v| (v / s) as f32)
        })
        .collect()
}

/// The `top` classes of each row of `scores` `[rows, classes]`, highest first, as
/// `(class, score)` (create_labels_legend's order).
pub fn top_classes(scores: &[f32], classes: usize, top: usize) -> Vec<Vec<(usize, f32)>> {
    scores
        .chunks(classes.max(1))
        .map(|row| {
            let mut idx: Vec<usize> = (0..row.len()).collect();
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            idx.into_iter().take(top).map(|c| (c, row[c])).collect()
        })
        .collect()
}
