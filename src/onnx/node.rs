//! An ONNX node as the importer sees it: op type, value names, attributes, and the PyTorch
//! module scopes it came from.

use super::tensor::{self, Const};
use crate::error::{Error, Result};
use onnx_protobuf::attribute_proto::AttributeType;
use onnx_protobuf::{AttributeProto, NodeProto};

#[derive(Clone, Debug)]
pub struct ONode {
    pub name: String,
    pub op: String,
    /// Value names; an empty name is an omitted optional input.
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attrs: Vec<AttributeProto>,
    /// Module paths enclosing the node, outermost first (`features`, `features.12`).
    pub scopes: Vec<String>,
    /// The default opset version in force.
    pub opset: i64,
}

impl ONode {
    pub fn from_proto(n: &NodeProto, index: usize, opset: i64) -> Self {
        let name = if n.name.is_empty() {
            format!("{}_{index}", n.op_type)
        } else {
            n.name.clone()
        };
        let scopes = super::names::scopes(&n.name, &n.metadata_props);
        Self {
            name,
            op: n.op_type.clone(),
            inputs: n.input.clone(),
            outputs: n.output.clone(),
            attrs: n.attribute.clone(),
            scopes,
            opset,
        }
    }

    /// How errors name the node.
    pub fn label(&self) -> String {
        format!("node `{}` ({}, opset {})", self.name, self.op, self.opset)
    }

    /// An error about this node.
    pub fn err(&self, m: impl std::fmt::Display) -> Error {
        Error::Model(format!("{}: {m}", self.label()))
    }

    /// Input `i`'s value name, if present and not omitted.
    pub fn input(&self, i: usize) -> Option<&str> {
        self.inputs
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.attrs.iter().find(|a| a.name == name)
    }

    fn typed(&self, name: &str, t: AttributeType) -> Result<Option<&AttributeProto>> {
        match self.attr(name) {
            None => Ok(None),
            Some(a) if a.type_.enum_value() == Ok(t) => Ok(Some(a)),
            // Files from old writers leave the type unset.
            Some(a) if a.type_.value() == 0 => Ok(Some(a)),
            Some(a) => Err(self.err(format!(
                "attribute `{name}` has type {:?}, expected {t:?}",
                a.type_
            ))),
        }
    }

    pub fn int(&self, name: &str, default: i64) -> Result<i64> {
        Ok(self
            .typed(name, AttributeType::INT)?
            .map_or(default, |a| a.i))
    }

    pub fn float(&self, name: &str, default: f32) -> Result<f32> {
        Ok(self
            .typed(name, AttributeType::FLOAT)?
            .map_or(default, |a| a.f))
    }

    pub fn ints(&self, name: &str) -> Result<Option<Vec<i64>>> {
        Ok(self
            .typed(name, AttributeType::INTS)?
            .map(|a| a.ints.clone()))
    }

    pub fn floats(&self, name: &str) -> Result<Option<Vec<f32>>> {
        Ok(self
            .typed(name, AttributeType::FLOATS)?
            .map(|a| a.floats.clone()))
    }

    pub fn string(&self, name: &str, default: &str) -> Result<String> {
        Ok(self
            .typed(name, AttributeType::STRING)?
            .map_or(default.to_string(), |a| {
                String::from_utf8_lossy(&a.s).into_owned()
            }))
    }

    pub fn tensor(&self, name: &str) -> Result<Option<Const>> {
        match self.typed(name, AttributeType::TENSOR)? {
            Some(a) => match a.t.as_ref() {
                Some(t) => tensor::decode(t, &mut |_| {
                    Err(self.err("a Constant's tensor cannot use external data"))
                })
                .map(Some),
                None => Err(self.err(format!("attribute `{name}` holds no tensor"))),
            },
            None => Ok(None),
        }
    }

    /// Whether the node has attribute `name` at all.
    pub fn has(&self, name: &str) -> bool {
        self.attr(name).is_some()
    }
}

/// An ONNX axis (negative counts from the end) checked against `rank`.
pub fn axis(n: &ONode, a: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a2 = if a < 0 { a + r } else { a };
    if !(0..r).contains(&a2) {
        return Err(n.err(format!("axis {a} is out of range for rank {rank}")));
    }
    Ok(a2 as usize)
}

/// Transpose's `perm` for a rank-`rank` input (reversed when absent), checked to be a
/// permutation.
pub fn perm(n: &ONode, rank: usize) -> Result<Vec<usize>> {
    let perm: Vec<usize> = match n.ints("perm")? {
        Some(p) => p.iter().map(|&a| axis(n, a, rank)).collect::<Result<_>>()?,
        None => (0..rank).rev().collect(),
    };
    let mut seen = vec![false; rank];
    for &p in &perm {
        seen[p] = true;
    }
    if perm.len() != rank || seen.contains(&false) {
        return Err(n.err(format!("perm {perm:?} is not a permutation of {rank} axes")));
    }
    Ok(perm)
}

/// Slice's `(starts, ends, axes, steps)` for an input of rank `rank`: attributes before
/// opset 10, optional constant inputs 1 to 4 (`input(i)`) from it on; axes resolved, and
/// `0..starts.len()` where none are given.
pub type SliceArgs = (Vec<i64>, Vec<i64>, Vec<usize>, Option<Vec<i64>>);

pub fn slice_args(
    n: &ONode,
    rank: usize,
    input: impl Fn(usize) -> Result<Option<Vec<i64>>>,
) -> Result<SliceArgs> {
    let (starts, ends, axes, steps) = match n.ints("starts")? {
        Some(s) => (
            s,
            n.ints("ends")?.unwrap_or_default(),
            n.ints("axes")?,
            None,
        ),
        None => (
            input(1)?.unwrap_or_default(),
            input(2)?.unwrap_or_default(),
            input(3)?,
            input(4)?,
        ),
    };
    let axes: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&v| axis(n, v, rank)).collect::<Result<_>>()?,
        None => (0..starts.len()).collect(),
    };
    Ok((starts, ends, axes, steps))
}
