//! Which classes to explain per image.

use crate::error::{Error, Result};
use std::str::FromStr;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    /// The k highest logits of each image, chosen on the GPU.
    TopK(usize),
    /// The same explicit classes for every image.
    Classes(Vec<usize>),
    /// Every class.
    All,
    /// This many classes per image, given per image to [`crate::Engine::explain_for`]
    /// (e.g. ground-truth labels).
    PerImage(usize),
}

impl TargetSpec {
    /// Targets per image for a model with `classes` outputs; checks the spec fits the model.
    pub fn count(&self, classes: usize) -> Result<usize> {
        if classes == 0 {
            return Err(Error::Invalid("the model has no classes".into()));
        }
        match self {
            TargetSpec::TopK(k) if *k == 0 || *k > classes => Err(Error::Invalid(format!(
                "--target top{k}: the model has {classes} classes"
            ))),
            TargetSpec::TopK(k) => Ok(*k),
            TargetSpec::Classes(c) => match c.iter().find(|&&c| c >= classes) {
                Some(bad) => Err(Error::Invalid(format!(
                    "--target class {bad} is out of range: the model has {classes} classes (0..{})",
                    classes - 1
                ))),
                None => Ok(c.len()),
            },
            TargetSpec::All => Ok(classes),
            TargetSpec::PerImage(0) => Err(Error::Invalid("at least one target per image".into())),
            TargetSpec::PerImage(k) => Ok(*k),
        }
    }
}

impl FromStr for TargetSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Invalid(format!(
                "--target `{}`: expected top1, topK (e.g. top3), all, or class indices like 3,7",
                s.escape_debug()
            ))
        };
        let s = s.trim();
        if s == "all" {
            return Ok(TargetSpec::All);
        }
        if let Some(k) = s.strip_prefix("top") {
            return k.parse().map(TargetSpec::TopK).map_err(|_| bad());
        }
        let classes: Vec<usize> = s
            .split(',')
            .map(|c| c.trim().parse::<usize>().map_err(|_| bad()))
            .collect::<Result<_>>()?;
        if classes.is_empty() {
            return Err(bad());
        }
        Ok(TargetSpec::Classes(classes))
    }
}

/// The score explained for a target class: pytorch-grad-cam's target objects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Score {
    /// The pre-softmax logit (`ClassifierOutputTarget`).
    #[default]
    Logit,
    /// The softmax probability (`ClassifierOutputSoftmaxTarget`).
    Softmax,
    /// The logit minus the cross-entropy, 2·y_c − logsumexp(y) (`ClassifierOutputReST`).
    Rest,
    /// A one-output model's logit for class 1, its negation for class 0
    /// (`BinaryClassifierOutputTarget`).
    Binary,
}

/// `--score` names, in [`Score`] order.
pub const SCORES: &[&str] = &["logit", "softmax", "rest", "binary"];

impl Score {
    /// The shaders' code for this score (lib/score.wgsl).
    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn name(self) -> &'static str {
        SCORES[self as usize]
    }

    /// What the score is, for a run's header: "{describe} of the logits".
    pub fn describe(self) -> &'static str {
        match self {
            Score::Logit => "the logit",
            Score::Softmax => "the softmax probability",
            Score::Rest => "the ReST score (logit - cross-entropy)",
            Score::Binary => "the binary score (logit, negated for class 0)",
        }
    }

    /// Classes a target may name for a model with `outputs` logits: two categories for a
    /// binary score, which needs a single output.
    pub fn categories(self, outputs: usize) -> Result<usize> {
        match self {
            Score::Binary if outputs != 1 => Err(Error::Invalid(format!(
                "--score binary explains a model with one output; this one has {outputs}"
            ))),
            Score::Binary => Ok(2),
            _ => Ok(outputs),
        }
    }
}

impl FromStr for Score {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim() {
            "logit" => Ok(Score::Logit),
            "softmax" => Ok(Score::Softmax),
            "rest" => Ok(Score::Rest),
            "binary" => Ok(Score::Binary),
            _ => Err(Error::Invalid(format!(
                "--score `{}`: expected one of {}",
                s.escape_debug(),
                SCORES.join(", ")
            ))),
        }
    }
}

impl std::fmt::Display for Score {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_parse_by_name_and_binary_needs_one_output() {
        for (i, name) in SCORES.iter().enumerate() {
            let s: Score = name.parse().unwrap();
            assert_eq!((s.code() as usize, s.name()), (i, *name));
        }
        assert!("probability".parse::<Score>().is_err());
        assert_eq!(Score::Softmax.categories(10).unwrap(), 10);
        assert_eq!(Score::Binary.categories(1).unwrap(), 2);
        let e = Score::Binary.categories(3).unwrap_err().to_string();
        assert!(e.contains("--score binary") && e.contains('3'), "{e}");
    }
}
