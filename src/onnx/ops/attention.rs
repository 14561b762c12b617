//! Attention: MatMul of two activations (Q K^T, P V) and Softmax inside the graph, with the
//! batch on ONNX axis 0 (per-image matrices `[.., M, K]`, up to one leading batch dim).

use super::super::builder::{Act, Builder};
use super::super::node::{ONode, axis};
use crate::error::Result;
use crate::graph::ops::matmul::MatMul;
use crate::graph::ops::softmax::Softmax;
use crate::graph::{Op, Reshape};

/// `a` (its ONNX dims `[.., M, K]`) as an IR `[batch, M, K]` node.
fn batched(b: &mut Builder, n: &ONode, a: &Act) -> Result<usize> {
    match a.dims[..] {
        [_, _, _] => Ok(a.node),
        [m, k] => {
            let base = format!("{}:batched", b.nodes[a.node].name);
            let op = Op::Reshape(Reshape { shape: [1, m, k] });
            b.push(n, &base, op, &[a.node])
        }
        _ => Err(n.err(format!(
            "multiplies a rank-{} activation; attention's MatMul takes ranks 3 and 4",
            a.rank()
        ))),
    }
}

/// MatMul of two activations.
pub fn matmul(b: &mut Builder, n: &ONode, x: &Act, y: &Act) -> Result<()> {
    let (xn, yn) = (batched(b, n, x)?, batched(b, n, y)?);
    let [bx, m, _] = b.shapes[xn];
    let [by, _, k] = b.shapes[yn];
    let dims = if x.dims.len() == 3 || y.dims.len() == 3 {
        vec![bx.max(by), m, k]
    } else {
        vec![m, k]
    };
    b.emit(n, Op::MatMul(MatMul), &[xn, yn], dims)?;
    Ok(())
}

/// Softmax along one axis (opset 13's rule; before 13 only the last axis, where both rules
/// agree). The final Softmax is stripped by the rewrite pass instead.
pub fn softmax(b: &mut Builder, n: &ONode) -> Result<()> {
    let x = b.act(n, 0)?;
    let rank = x.rank();
    let default = if n.opset < 13 { 1 } else { -1 };
    let a = axis(n, n.int("axis", default)?, rank)?;
    if n.opset < 13 && a != rank - 1 {
        return Err(n.err(format!(
            "opset {} Softmax over axes {a}.. flattened: only the last axis is supported",
            n.opset
        )));
    }
    if a == 0 {
        return Err(n.err("Softmax along the batch axis mixes images"));
    }
    let op = Op::Softmax(Softmax { axis: a - 1 });
    b.emit_layout(n, op, &[x.node], x.dims.clone(), x.nhwc)?;
    Ok(())
}
