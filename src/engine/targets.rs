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
