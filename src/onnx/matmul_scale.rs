//! A pass over the imported graph: attention's `(q * s) @ (k^T * s)` becomes
//! `s * s * (q @ k^T)`. A Mul (or Div) by a scalar constant whose only reader is a MatMul
//! of two activations is folded into the product's factor and dropped, with the layer names
//! that pointed at it: a pass over each scaled tensor less, both ways.

use crate::graph::ops::matmul::MatMul;
use crate::graph::{BinaryConst, BinaryKind, Graph, Op};
use crate::weights::Weights;

/// The factor a scalar Mul or Div applies, if `op` is one.
fn factor(op: &Op, weights: &Weights) -> Option<f32> {
    let Op::BinaryConst(BinaryConst {
        kind,
        tensor,
        shape: [1, 1, 1],
        reversed: false,
    }) = op
    else {
        return None;
    };
    let &[s] = &weights.get(tensor).ok()?.data[..] else {
        return None;
    };
    match kind {
        BinaryKind::Mul => Some(s),
        BinaryKind::Div if s != 0.0 => Some(1.0 / s),
        _ => None,
    }
    .filter(|f| f.is_finite())
}

/// Folds what it can; returns the dropped nodes' scalar tensors.
pub fn fold(graph: &mut Graph, weights: &Weights) -> Vec<String> {
    let n = graph.nodes.len();
    let mut readers = vec![0usize; n];
    for node in &graph.nodes {
        for &i in &node.inputs {
            readers[i] += 1;
        }
    }
    let mut dead = vec![false; n];
    let mut dropped = Vec::new();
    for m in 0..n {
        if !matches!(graph.nodes[m].op, Op::MatMul(_)) {
            continue;
        }
        for k in 0..2 {
            let p = graph.nodes[m].inputs[k];
            let Some(f) = factor(&graph.nodes[p].op, weights) else {
                continue;
            };
            let Op::MatMul(MatMul { alpha }) = &graph.nodes[m].op else {
                continue;
            };
            let alpha = alpha * f;
            if readers[p] != 1 || !alpha.is_finite() {
                continue;
            }
            if let Op::BinaryConst(c) = &graph.nodes[p].op {
                dropped.push(c.tensor.clone());
            }
            graph.nodes[m].op = Op::MatMul(MatMul { alpha });
            graph.nodes[m].inputs[k] = graph.nodes[p].inputs[0];
            dead[p] = true;
        }
    }
    if dropped.is_empty() {
        return dropped;
    }
    // Renumber what is left.
    let mut new = vec![usize::MAX; n];
    let mut next = 0;
    for i in 0..n {
        if !dead[i] {
            new[i] = next;
            next += 1;
        }
    }
    let nodes = std::mem::take(&mut graph.nodes);
    graph.nodes = nodes
        .into_iter()
        .zip(&dead)
        .filter(|(_, d)| !**d)
        .map(|(mut node, _)| {
            for i in &mut node.inputs {
                *i = new[*i];
            }
            node
        })
        .collect();
    graph.aliases.retain(|_, i| !dead[*i]);
    for i in graph.aliases.values_mut() {
        *i = new[*i];
    }
    dropped
}
