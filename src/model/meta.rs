//! Self-describing model files: a safetensors file whose `__metadata__` carries everything
//! needed to run it, so `gradcam` loads it with no `--arch`.
//!
//! # Schema (version 1)
//!
//! The metadata key [`META_KEY`] (`"gradcam_wgpu"`) holds one JSON object:
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `version` | integer | schema version; this build reads [`META_VERSION`] only |
//! | `name` | string | model name, shown in logs |
//! | `graph` | object | the engine IR ([`Graph`]): `nodes` (each `{name, op: {op, ...}, inputs}`) and `aliases` |
//! | `input_size` | `[H, W]` | the size the model was trained at |
//! | `mean`, `std` | `[R, G, B]` | input normalisation of pixels in [0, 1] |
//! | `classes` | `[string]` | one name per output logit |
//! | `default_layer` | string | target layer used when none is given (a node name or alias) |
//! | `output` | `"softmax"` or `"sigmoid"` | how logits become the scores in predictions (multi-class or multi-label) |
//! | `tokens` | `{node: "sequence" \| "grid"}`, optional | transformer token layers by node name (`[N, T, C]`, or Swin's channels-last `[N, h, w, C]`), which `--reshape auto` folds; absent = none |
//!
//! Tensors are named as the graph's ops refer to them (`weight` and `bias` of convs and linear
//! layers; `{prefix}.weight`, `.bias`, `.running_mean` and `.running_var` of batch norms),
//! with PyTorch shapes.
//! Unknown fields are rejected, so a typo cannot silently fall back to a default.
//! `tools/export.py` writes these files from any `torch.nn.Module` that `torch.fx` can trace.

use super::{Graph, Tokens, Weights};
use crate::error::{Error, Result};
use crate::input::MAX_INPUT_SIDE;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The `__metadata__` key that marks a self-describing model file.
pub const META_KEY: &str = "gradcam_wgpu";
/// The schema version this build writes and reads.
pub const META_VERSION: u32 = 1;

/// How logits become per-class scores.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Output {
    /// Mutually exclusive classes (ImageNet-style).
    #[default]
    Softmax,
    /// Independent classes (multi-label): several may be present at once.
    Sigmoid,
}

impl Output {
    /// Scores for one image's logits.
    pub fn scores(self, logits: &[f32]) -> Vec<f32> {
        match self {
            Output::Softmax => {
                let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f64> = logits.iter().map(|&l| ((l - m) as f64).exp()).collect();
                let s: f64 = e.iter().sum();
                e.iter().map(|v| (v / s) as f32).collect()
            }
            Output::Sigmoid => logits
                .iter()
                .map(|&l| (1.0 / (1.0 + (-(l as f64)).exp())) as f32)
                .collect(),
        }
    }
}

/// The metadata of a self-describing model file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelMeta {
    pub version: u32,
    pub name: String,
    pub graph: Graph,
    pub input_size: [usize; 2],
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub classes: Vec<String>,
    pub default_layer: String,
    pub output: Output,
    /// Optional (files before it have none), left out when empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tokens: BTreeMap<String, Tokens>,
}

impl ModelMeta {
    /// Parses the metadata of `weights`, if it has any; checks the version first so a newer
    /// file gets a version error rather than a confusing field error.
    pub fn from_weights(weights: &Weights) -> Result<Option<Self>> {
        let Some(text) = weights.metadata.get(META_KEY) else {
            return Ok(None);
        };
        let bad = |m: String| Error::Model(format!("metadata `{META_KEY}`: {m}"));
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        match value.get("version").and_then(|v| v.as_u64()) {
            Some(v) if v == META_VERSION as u64 => {}
            Some(v) => {
                return Err(bad(format!(
                    "schema version {v} is not supported; this build reads version \
                     {META_VERSION} (upgrade gradcam-wgpu, or re-export the model)"
                )));
            }
            None => return Err(bad("has no integer `version` field".into())),
        }
        let meta: Self = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        meta.check(weights)?;
        Ok(Some(meta))
    }

    /// Consistency of the fields with each other and with the tensors.
    pub fn check(&self, weights: &Weights) -> Result<()> {
        let bad = |m: String| Err(Error::Model(m));
        self.graph.validate()?;
        let [h, w] = self.input_size;
        if h == 0 || w == 0 || h > MAX_INPUT_SIDE || w > MAX_INPUT_SIDE {
            return bad(format!("input_size {h}x{w} is out of range"));
        }
        if self.mean.iter().chain(&self.std).any(|v| !v.is_finite()) || self.std.contains(&0.0) {
            return bad("mean and std must be finite and std non-zero".into());
        }
        let classes = self.graph.num_classes(self.input_size)?;
        if self.classes.len() != classes {
            return bad(format!(
                "{} class names for {classes} outputs",
                self.classes.len()
            ));
        }
        if self.graph.find(&self.default_layer).is_none() {
            return bad(format!(
                "default_layer `{}` is not a layer of the graph",
                self.default_layer
            ));
        }
        let names: std::collections::HashSet<&str> =
            self.graph.nodes.iter().map(|n| n.name.as_str()).collect();
        if let Some(t) = self.tokens.keys().find(|t| !names.contains(t.as_str())) {
            return bad(format!("tokens: `{t}` is not a node of the graph"));
        }
        weights.check(&self.graph.tensors())
    }

    /// The metadata as the JSON string stored under [`META_KEY`].
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("metadata serialises")
    }
}
