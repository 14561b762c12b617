//! The graph under construction: IR nodes with their shapes, the weights they read, and
//! what each ONNX value name stands for (a constant, or an IR node's output with its ONNX
//! shape).

use super::node::ONode;
use super::tensor::Const;
use crate::error::{Error, Result};
use crate::graph::{Input, Node, Op, Reshape, Shape};
use crate::model::Tokens;
use crate::weights::{Tensor, Weights};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

/// An activation: an IR node's output, with its ONNX shape when the graph runs one image.
///
/// The importer computes the graph at batch 1, once per image: ONNX axis 0 is the batch
/// (`lead == 1`) nearly always, but an export may move the batch inward (torch's
/// MultiheadAttention works on `[L, N, E]`) and merge it with other axes, with reshape
/// targets folded at batch 1. Axis 0 is then an ordinary per-image axis of size `lead`.
#[derive(Clone, Debug, PartialEq)]
pub struct Act {
    pub node: usize,
    /// ONNX dims less axis 0.
    pub dims: Vec<usize>,
    /// The size of ONNX axis 0 at batch 1.
    pub lead: usize,
    /// Channels-last (`[N, H, W, C]`): not a layer a CAM can read as channels.
    pub nhwc: bool,
}

impl Act {
    /// ONNX rank (with axis 0).
    pub fn rank(&self) -> usize {
        self.dims.len() + 1
    }

    /// The ONNX shape at batch 1.
    pub fn full(&self) -> Vec<usize> {
        std::iter::once(self.lead)
            .chain(self.dims.iter().copied())
            .collect()
    }

    /// Batch on axis 0 and at most three per-image axes: the IR shape is the ONNX one.
    pub fn plain(&self) -> bool {
        self.lead == 1 && self.dims.len() <= 3
    }
}

/// The IR's per-image shape for ONNX shape `full` at batch 1: the dims after axis 0 when
/// that is the batch (memory layout is ONNX's, so ONNX axis `a` is IR axis `a - 1`);
/// otherwise the axes longer than 1, the leading ones merged where more than three are
/// (ops that need an axis view the tensor around it).
pub fn ir_shape(full: &[usize]) -> Shape {
    match full.split_first() {
        Some((1, rest)) if rest.len() <= 3 => pad3(rest),
        _ => {
            let long: Vec<usize> = full.iter().copied().filter(|&d| d != 1).collect();
            match long.len() {
                0..=3 => pad3(&long),
                l => [long[..l - 2].iter().product(), long[l - 2], long[l - 1]],
            }
        }
    }
}

/// `full` as `[outer, full[a], inner]` around axis `a`: any one axis as IR axis 1.
pub fn around(full: &[usize], a: usize) -> Shape {
    [
        full[..a].iter().product(),
        full[a],
        full[a + 1..].iter().product(),
    ]
}

#[derive(Clone, Debug)]
pub enum Value {
    Const(Rc<Const>),
    Act(Act),
}

/// ONNX dims (less the batch) as the IR's per-image shape: padded on the right with 1s,
/// so the memory layout is ONNX's and an ONNX axis `a` is IR axis `a - 1`.
pub fn pad3(dims: &[usize]) -> Shape {
    let mut s = [1; 3];
    s[..dims.len()].copy_from_slice(dims);
    s
}

#[derive(Default)]
pub struct Builder {
    pub nodes: Vec<Node>,
    pub shapes: Vec<Shape>,
    pub weights: Weights,
    pub values: HashMap<String, Value>,
    /// Per IR node: a 4-D channels-first output with more than one position (a CAM layer).
    pub spatial: Vec<bool>,
    /// Per IR node: transformer tokens, `[N, T, C]` or channels-last `[N, h, w, C]`.
    pub tokens: Vec<Option<Tokens>>,
    /// How many nodes (and the graph's output) read each ONNX value.
    pub uses: HashMap<String, usize>,
    names: HashSet<String>,
}

impl Builder {
    /// Input `i` of `n`, which must exist.
    pub fn value(&self, n: &ONode, i: usize) -> Result<&Value> {
        let name = n
            .input(i)
            .ok_or_else(|| n.err(format!("input {i} is missing")))?;
        self.values.get(name).ok_or_else(|| {
            n.err(format!(
                "reads `{name}`, which no node or initializer defines"
            ))
        })
    }

    /// Input `i` as an activation with the batch on axis 0 ([`Act::plain`]).
    pub fn act(&self, n: &ONode, i: usize) -> Result<Act> {
        let a = self.act_any(n, i)?;
        if !a.plain() {
            return Err(n.err(format!(
                "input {i} has ONNX shape {:?} at batch 1, and this op needs the batch on \
                 axis 0 and at most 4 axes",
                a.full()
            )));
        }
        Ok(a)
    }

    /// Input `i` as an activation of any shape, for ops that read every axis alike.
    pub fn act_any(&self, n: &ONode, i: usize) -> Result<Act> {
        match self.value(n, i)? {
            Value::Act(a) => Ok(a.clone()),
            Value::Const(_) => Err(n.err(format!(
                "input {i} is a constant where this importer needs an activation"
            ))),
        }
    }

    /// Input `i` as a constant (an initializer or folded from constants).
    pub fn konst(&self, n: &ONode, i: usize) -> Result<Rc<Const>> {
        match self.value(n, i)? {
            Value::Const(c) => Ok(c.clone()),
            Value::Act(_) => Err(n.err(format!(
                "input {i} (`{}`) depends on the image; this importer needs a constant there",
                n.inputs[i]
            ))),
        }
    }

    /// Optional constant input `i`.
    pub fn opt_konst(&self, n: &ONode, i: usize) -> Result<Option<Rc<Const>>> {
        match n.input(i) {
            Some(_) => self.konst(n, i).map(Some),
            None => Ok(None),
        }
    }

    /// A fresh node or tensor name based on `base`.
    pub fn fresh(&mut self, base: &str) -> String {
        let mut name = base.to_string();
        let mut k = 1;
        while self.names.contains(&name) || self.weights.tensors.contains_key(&name) {
            name = format!("{base}:{k}");
            k += 1;
        }
        self.names.insert(name.clone());
        name
    }

    /// Node 0, the image batch of `3 x H x W` images.
    pub fn push_input(&mut self, name: &str, channels: usize, [h, w]: [usize; 2]) -> usize {
        let name = self.fresh(name);
        self.nodes.push(Node {
            name,
            op: Op::Input(Input { channels }),
            inputs: Vec::new(),
        });
        self.shapes.push([channels, h, w]);
        self.spatial.push(false);
        self.tokens.push(None);
        self.nodes.len() - 1
    }

    /// Appends an IR node named after `base`; its shape follows from the op's own rule.
    pub fn push(&mut self, n: &ONode, base: &str, op: Op, inputs: &[usize]) -> Result<usize> {
        let in_shapes: Vec<Shape> = inputs.iter().map(|&i| self.shapes[i]).collect();
        op.node().check().map_err(|m| n.err(m))?;
        let shape = op.node().shape(&in_shapes).map_err(|m| n.err(m))?;
        let name = self.fresh(base);
        self.nodes.push(Node {
            name,
            op,
            inputs: inputs.to_vec(),
        });
        self.shapes.push(shape);
        self.spatial.push(false);
        self.tokens.push(None);
        Ok(self.nodes.len() - 1)
    }

    /// `node` as an activation of ONNX dims `dims` (less the batch on axis 0), reshaped
    /// (free) where the op's own shape lays the same elements out under other axes.
    pub fn act_of(&mut self, n: &ONode, node: usize, dims: Vec<usize>, nhwc: bool) -> Result<Act> {
        let full = std::iter::once(1).chain(dims).collect();
        self.act_full(n, node, full, nhwc)
    }

    /// [`Self::act_of`] for the ONNX shape `full` at batch 1.
    pub fn act_full(
        &mut self,
        n: &ONode,
        node: usize,
        full: Vec<usize>,
        nhwc: bool,
    ) -> Result<Act> {
        let want = ir_shape(&full);
        let (lead, dims) = (full[0], full[1..].to_vec());
        let nhwc = nhwc && lead == 1;
        let have = self.shapes[node];
        let node = if want == have {
            node
        } else if want.iter().product::<usize>() == have.iter().product::<usize>() {
            let base = format!("{}:reshape", self.nodes[node].name);
            self.push(n, &base, Op::Reshape(Reshape { shape: want }), &[node])?
        } else {
            return Err(n.err(format!(
                "the graph's shapes disagree: ONNX says {dims:?} per image, the op gives {have:?}"
            )));
        };
        self.spatial[node] = lead == 1 && dims.len() == 3 && !nhwc && dims[1] * dims[2] > 1;
        // A free view of the node (a transpose that moves an axis of length 1) keeps it.
        self.tokens[node] = self.tokens[node].or(match dims[..] {
            [t, c] if lead == 1 && t > 1 && c > 1 => Some(Tokens::Sequence),
            [h, w, c] if lead == 1 && nhwc && h * w > 1 && c > 1 => Some(Tokens::Grid),
            _ => None,
        });
        Ok(Act {
            node,
            dims,
            lead,
            nhwc,
        })
    }

    /// `x`'s node under IR shape `shape` (a free reshape where it differs).
    pub fn view(&mut self, n: &ONode, x: &Act, shape: Shape) -> Result<usize> {
        if self.shapes[x.node] == shape {
            return Ok(x.node);
        }
        let base = format!("{}:view", self.nodes[x.node].name);
        self.push(n, &base, Op::Reshape(Reshape { shape }), &[x.node])
    }

    /// Appends an IR node for `n`'s first output, of ONNX shape `full` at batch 1, and
    /// binds it.
    pub fn emit_full(
        &mut self,
        n: &ONode,
        op: Op,
        inputs: &[usize],
        full: Vec<usize>,
        nhwc: bool,
    ) -> Result<Act> {
        let base = n.outputs.first().cloned().unwrap_or_else(|| n.name.clone());
        let node = self.push(n, &base, op, inputs)?;
        let act = self.act_full(n, node, full, nhwc)?;
        self.bind(n, 0, Value::Act(act.clone()))?;
        Ok(act)
    }

    /// Appends an IR node for `n`'s first output, of ONNX dims `dims`, and binds it.
    pub fn emit(&mut self, n: &ONode, op: Op, inputs: &[usize], dims: Vec<usize>) -> Result<Act> {
        let nhwc = false;
        self.emit_layout(n, op, inputs, dims, nhwc)
    }

    /// [`Self::emit`] for an op that keeps its input's layout (element-wise ops).
    pub fn emit_layout(
        &mut self,
        n: &ONode,
        op: Op,
        inputs: &[usize],
        dims: Vec<usize>,
        nhwc: bool,
    ) -> Result<Act> {
        let full = std::iter::once(1).chain(dims).collect();
        self.emit_full(n, op, inputs, full, nhwc)
    }

    /// Output `k` of `n` stands for `v`.
    pub fn bind(&mut self, n: &ONode, k: usize, v: Value) -> Result<()> {
        let name = n
            .outputs
            .get(k)
            .ok_or_else(|| n.err(format!("has no output {k}")))?;
        self.values.insert(name.clone(), v);
        Ok(())
    }

    /// Stores a constant as a weight tensor and returns its name.
    pub fn tensor(&mut self, base: &str, shape: Vec<usize>, data: Vec<f32>) -> String {
        let name = self.fresh(base);
        self.weights
            .tensors
            .insert(name.clone(), Tensor { shape, data });
        name
    }

    /// The per-image IR shape of an activation.
    pub fn shape(&self, a: &Act) -> Shape {
        self.shapes[a.node]
    }
}

/// A model error naming the file's ONNX graph.
pub fn graph_err(m: impl std::fmt::Display) -> Error {
    Error::Model(format!("ONNX graph: {m}"))
}
