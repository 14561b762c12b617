//! Passes over the ONNX nodes before import: strip a final Softmax (the explained score is
//! its input, as pytorch-grad-cam users expect of logits), fuse the patterns exporters
//! decompose (erf-GELU, SiLU, HardSwish, a zero Pad before a Conv), and drop what the
//! output does not need.

use super::node::ONode;
use super::tensor::Const;
use onnx_protobuf::AttributeProto;
use onnx_protobuf::attribute_proto::AttributeType;
use std::collections::HashMap;

/// Constants known before import (initializers and `Constant` nodes), by value name.
pub type Constants<'a> = &'a dyn Fn(&str) -> Option<Const>;

pub struct Rewritten {
    pub nodes: Vec<ONode>,
    /// The value explained: the graph's output, or the input of its final Softmax.
    pub output: String,
    /// The final Softmax or LogSoftmax node that was stripped.
    pub softmax: Option<String>,
}

struct Index {
    producer: HashMap<String, usize>,
    consumers: HashMap<String, Vec<usize>>,
}

impl Index {
    fn new(nodes: &[Option<ONode>]) -> Self {
        let mut producer = HashMap::new();
        let mut consumers: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            let Some(n) = n else { continue };
            for o in &n.outputs {
                producer.insert(o.clone(), i);
            }
            for v in &n.inputs {
                consumers.entry(v.clone()).or_default().push(i);
            }
        }
        Self {
            producer,
            consumers,
        }
    }

    /// The node producing `v`, if `v` has exactly one consumer.
    fn sole_use(&self, v: &str) -> bool {
        self.consumers.get(v).is_some_and(|c| c.len() == 1)
    }

    fn consumer(&self, v: &str) -> Option<usize> {
        match self.consumers.get(v).map(Vec::as_slice) {
            Some(&[c]) => Some(c),
            _ => None,
        }
    }
}

fn near(v: Option<f32>, target: f32) -> bool {
    v.is_some_and(|v| (v - target).abs() < 1e-4 * target.abs().max(1.0))
}

fn scalar(k: Constants, v: &str) -> Option<f32> {
    k(v).and_then(|c| c.scalar())
}

pub fn rewrite(nodes: Vec<ONode>, output: &str, k: Constants) -> Rewritten {
    let mut nodes: Vec<Option<ONode>> = nodes.into_iter().map(Some).collect();
    let idx = Index::new(&nodes);
    let (output, softmax) = strip_softmax(&nodes, &idx, output);
    for i in 0..nodes.len() {
        fuse_gelu(&mut nodes, i, k);
    }
    let idx = Index::new(&nodes);
    for i in 0..nodes.len() {
        fuse_gated(&mut nodes, &idx, i);
        fuse_pad(&mut nodes, &idx, i, k);
    }
    let nodes = live(nodes, &output);
    Rewritten {
        nodes,
        output,
        softmax,
    }
}

/// The output, or the input of a final Softmax/LogSoftmax (through Identity nodes).
fn strip_softmax(nodes: &[Option<ONode>], idx: &Index, output: &str) -> (String, Option<String>) {
    let mut v = output.to_string();
    while let Some(n) = idx.producer.get(&v).and_then(|&p| nodes[p].as_ref()) {
        match n.op.as_str() {
            "Identity" | "Dropout" => v = n.inputs[0].clone(),
            "Softmax" | "LogSoftmax" => return (n.inputs[0].clone(), Some(n.name.clone())),
            _ => break,
        }
    }
    (output.to_string(), None)
}

/// `x * 0.5 * (1 + erf(x / sqrt(2)))`, in either order of the two products, as one Gelu.
fn fuse_gelu(nodes: &mut [Option<ONode>], e: usize, k: Constants) -> Option<()> {
    nodes[e].as_ref().filter(|n| n.op == "Erf")?;
    let idx = Index::new(nodes);
    let erf = nodes[e].as_ref()?;
    let d = *idx.producer.get(&erf.inputs[0])?;
    let div = nodes[d].as_ref()?;
    let scaled = (div.op == "Div" && near(scalar(k, div.inputs.get(1)?), std::f32::consts::SQRT_2))
        || (div.op == "Mul"
            && near(
                scalar(k, div.inputs.get(1)?),
                std::f32::consts::FRAC_1_SQRT_2,
            ));
    if !scaled || !idx.sole_use(&div.outputs[0]) {
        return None;
    }
    let x = div.inputs[0].clone();
    let a = idx.consumer(&erf.outputs[0])?;
    let add = nodes[a].as_ref().filter(|n| n.op == "Add")?;
    let one = add.inputs.iter().find(|v| **v != erf.outputs[0])?;
    if !near(scalar(k, one), 1.0) {
        return None;
    }
    let m1 = idx.consumer(&add.outputs[0])?;
    let mul1 = nodes[m1].as_ref().filter(|n| n.op == "Mul")?;
    let other = mul1.inputs.iter().find(|v| **v != add.outputs[0])?.clone();
    let (last, extra) = if other == x {
        // (x * (1 + erf)) * 0.5
        let m2 = idx.consumer(&mul1.outputs[0])?;
        let mul2 = nodes[m2].as_ref().filter(|n| n.op == "Mul")?;
        let half = mul2.inputs.iter().find(|v| **v != mul1.outputs[0])?;
        near(scalar(k, half), 0.5).then_some((m2, m1))?
    } else {
        // (x * 0.5) * (1 + erf)
        let h = *idx.producer.get(&other)?;
        let halve = nodes[h].as_ref().filter(|n| n.op == "Mul")?;
        let ok = halve.inputs.contains(&x)
            && halve.inputs.iter().any(|v| near(scalar(k, v), 0.5))
            && idx.sole_use(&other);
        ok.then_some((m1, h))?
    };
    let end = nodes[last].as_ref()?;
    let gelu = ONode {
        op: "Gelu".into(),
        inputs: vec![x],
        attrs: Vec::new(),
        ..end.clone()
    };
    for i in [d, e, a, extra] {
        nodes[i] = None;
    }
    nodes[last] = Some(gelu);
    Some(())
}

/// `x * sigmoid(x)` as Silu, `x * hardsigmoid(x)` (1/6, 1/2) as HardSwish.
fn fuse_gated(nodes: &mut [Option<ONode>], idx: &Index, m: usize) -> Option<()> {
    let mul = nodes[m]
        .as_ref()
        .filter(|n| n.op == "Mul" && n.inputs.len() == 2)?;
    for (gi, xi) in [(1, 0), (0, 1)] {
        let g = *idx.producer.get(&mul.inputs[gi])?;
        let Some(gate) = nodes[g].as_ref() else {
            continue;
        };
        if gate.inputs.first() != Some(&mul.inputs[xi]) || !idx.sole_use(&gate.outputs[0]) {
            continue;
        }
        let op = match gate.op.as_str() {
            "Sigmoid" => "Silu",
            "HardSigmoid"
                if near(gate.float("alpha", 0.2).ok(), 1.0 / 6.0)
                    && near(gate.float("beta", 0.5).ok(), 0.5) =>
            {
                "HardSwish"
            }
            _ => continue,
        };
        let fused = ONode {
            op: op.into(),
            inputs: vec![mul.inputs[xi].clone()],
            attrs: Vec::new(),
            ..mul.clone()
        };
        nodes[g] = None;
        nodes[m] = Some(fused);
        return Some(());
    }
    None
}

/// A constant zero Pad of H and W whose only reader is a Conv becomes the Conv's padding.
fn fuse_pad(nodes: &mut [Option<ONode>], idx: &Index, c: usize, k: Constants) -> Option<()> {
    let conv = nodes[c].as_ref().filter(|n| n.op == "Conv")?;
    let p = *idx.producer.get(&conv.inputs[0])?;
    let pad = nodes[p].as_ref().filter(|n| n.op == "Pad")?;
    if !idx.sole_use(&pad.outputs[0])
        || pad.string("mode", "constant").ok()? != "constant"
        || conv.string("auto_pad", "NOTSET").ok()? != "NOTSET"
    {
        return None;
    }
    let (pads, value) = if pad.opset < 11 {
        (pad.ints("pads").ok()??, pad.float("value", 0.0).ok()?)
    } else {
        let pads = k(pad.inputs.get(1)?)?.to_i64();
        let value = match pad.input(2) {
            Some(v) => scalar(k, v)?,
            None => 0.0,
        };
        if pad.input(3).is_some() {
            return None;
        }
        (pads, value)
    };
    // [N, C, H, W] begins then ends; only H and W may be padded, by zeros.
    if value != 0.0 || pads.len() != 8 || pads.iter().any(|&v| v < 0) {
        return None;
    }
    if pads[0] != 0 || pads[1] != 0 || pads[4] != 0 || pads[5] != 0 {
        return None;
    }
    let old = conv.ints("pads").ok()?.unwrap_or(vec![0; 4]);
    if old.len() != 4 {
        return None;
    }
    let new = vec![
        old[0] + pads[2],
        old[1] + pads[3],
        old[2] + pads[6],
        old[3] + pads[7],
    ];
    let mut conv = conv.clone();
    conv.inputs[0] = pad.inputs[0].clone();
    conv.attrs.retain(|a| a.name != "pads");
    let mut attr = AttributeProto::new();
    attr.name = "pads".into();
    attr.type_ = AttributeType::INTS.into();
    attr.ints = new;
    conv.attrs.push(attr);
    nodes[p] = None;
    nodes[c] = Some(conv);
    Some(())
}

/// The nodes `output` depends on, in their order.
fn live(nodes: Vec<Option<ONode>>, output: &str) -> Vec<ONode> {
    let idx = Index::new(&nodes);
    let mut keep = vec![false; nodes.len()];
    let mut stack = vec![output.to_string()];
    while let Some(v) = stack.pop() {
        if let Some(&p) = idx.producer.get(&v)
            && !keep[p]
        {
            keep[p] = true;
            if let Some(n) = &nodes[p] {
                stack.extend(n.inputs.iter().filter(|s| !s.is_empty()).cloned());
            }
        }
    }
    nodes
        .into_iter()
        .zip(keep)
        .filter_map(|(n, k)| if k { n } else { None })
        .collect()
}
