//! Attention: MatMul of two activations (Q K^T, P V) and Softmax inside the graph, on the
//! ONNX shapes at batch 1 (heads may sit on axis 0 where an export moved the batch).

use super::super::builder::{Act, Builder, around};
use super::super::node::{ONode, axis};
use crate::error::Result;
use crate::graph::Op;
use crate::graph::ops::matmul::MatMul;
use crate::graph::ops::softmax::Softmax;

/// `a`'s leading dims (everything before its matrices) and its node viewed as
/// `[batch, M, K]`.
fn batched(b: &mut Builder, n: &ONode, a: &Act) -> Result<(Vec<usize>, usize)> {
    let full = a.full();
    let r = full.len();
    if r < 2 {
        return Err(n.err("multiplies a 1-D activation"));
    }
    let lead = full[..r - 2].to_vec();
    let node = b.view(n, a, [lead.iter().product(), full[r - 2], full[r - 1]])?;
    Ok((lead, node))
}

/// MatMul of two activations; the leading dims are equal, or one side's are all 1.
pub fn matmul(b: &mut Builder, n: &ONode, x: &Act, y: &Act) -> Result<()> {
    let (lx, xn) = batched(b, n, x)?;
    let (ly, yn) = batched(b, n, y)?;
    let ones = |l: &[usize]| l.iter().all(|&d| d == 1);
    let lead = match (lx.len().max(ly.len()), ones(&lx), ones(&ly)) {
        _ if lx == ly => lx,
        (r, true, _) => pad_left(&ly, r),
        (r, _, true) => pad_left(&lx, r),
        _ => {
            return Err(n.err(format!(
                "multiplies ONNX shapes {:?} and {:?}: the batch dims differ",
                x.full(),
                y.full()
            )));
        }
    };
    let [_, m, _] = b.shapes[xn];
    let [_, _, k] = b.shapes[yn];
    let mut full = lead;
    full.extend([m, k]);
    b.emit_full(n, Op::MatMul(MatMul::default()), &[xn, yn], full, false)?;
    Ok(())
}

/// `l` padded on the left with 1s to rank `r`.
fn pad_left(l: &[usize], r: usize) -> Vec<usize> {
    let mut v = vec![1; r - l.len()];
    v.extend_from_slice(l);
    v
}

/// Softmax along one axis (opset 13's rule; before 13 only the last axis, where both rules
/// agree). The final Softmax is stripped by the rewrite pass instead.
pub fn softmax(b: &mut Builder, n: &ONode) -> Result<()> {
    let x = b.act_any(n, 0)?;
    let rank = x.rank();
    let default = if n.opset < 13 { 1 } else { -1 };
    let a = axis(n, n.int("axis", default)?, rank)?;
    if n.opset < 13 && a != rank - 1 {
        return Err(n.err(format!(
            "opset {} Softmax over axes {a}.. flattened: only the last axis is supported",
            n.opset
        )));
    }
    if a == 0 && x.lead == 1 {
        return Err(n.err("Softmax along the batch axis mixes images"));
    }
    if x.plain() {
        let op = Op::Softmax(Softmax { axis: a - 1 });
        b.emit_layout(n, op, &[x.node], x.dims.clone(), x.nhwc)?;
        return Ok(());
    }
    let xn = b.view(n, &x, around(&x.full(), a))?;
    b.emit_full(n, Op::Softmax(Softmax { axis: 1 }), &[xn], x.full(), false)?;
    Ok(())
}
