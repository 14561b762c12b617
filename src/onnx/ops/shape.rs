//! Ops that only rearrange: Identity, Dropout, Flatten, Reshape, Squeeze, Unsqueeze (free:
//! the IR keeps ONNX's memory layout) and Transpose (a copy).
//!
//! All of them work on the ONNX shape at batch 1 ([`Act::full`]), so an export that moves
//! the batch inward (`[N, L, E]` to `[L, N, E]`, heads merged with it) imports as it runs.

use super::super::builder::{Act, Builder, Value, ir_shape};
use super::super::fold;
use super::super::node::{ONode, perm};
use crate::error::Result;
use crate::graph::{Gather, MAX_ELEMENTS, Op, Reshape, Transpose};

/// Binds `n`'s output to `x`'s data under ONNX shape `full` at batch 1.
fn view(b: &mut Builder, n: &ONode, x: &Act, full: Vec<usize>, nhwc: bool) -> Result<()> {
    let want = ir_shape(&full);
    if want == b.shapes[x.node] {
        let act = b.act_full(n, x.node, full, nhwc)?;
        return b.bind(n, 0, Value::Act(act));
    }
    let op = Op::Reshape(Reshape { shape: want });
    b.emit_full(n, op, &[x.node], full, nhwc)?;
    Ok(())
}

pub fn shape_op(b: &mut Builder, n: &ONode) -> Result<()> {
    let x = b.act_any(n, 0)?;
    let full = x.full();
    // Channels-last survives only reshapes that keep the batch leading.
    let keeps = |out: &[usize]| x.nhwc && out.first() == Some(&1);
    match n.op.as_str() {
        "Identity" | "Dropout" => b.bind(n, 0, Value::Act(x)),
        "Flatten" => {
            let r = full.len() as i64;
            let a = n.int("axis", 1)?;
            let a = (if a < 0 { a + r } else { a }).clamp(0, r) as usize;
            let out = vec![full[..a].iter().product(), full[a..].iter().product()];
            view(b, n, &x, out, false)
        }
        "Reshape" => {
            let target = b.konst(n, 1)?.to_i64();
            let out = fold::reshape_dims(n, &full, &target)?;
            view(b, n, &x, out, false)
        }
        "Squeeze" | "Unsqueeze" => {
            let axes = match n.ints("axes")? {
                Some(a) => Some(a),
                None => b.opt_konst(n, 1)?.map(|c| c.to_i64()),
            };
            let out = fold::squeeze_dims(n, &full, axes)?;
            if out.is_empty() {
                return Err(n.err("squeezes the tensor to a scalar"));
            }
            let nhwc = keeps(&out) && out.len() == full.len();
            view(b, n, &x, out, nhwc)
        }
        "Transpose" => transpose(b, n, x),
        other => Err(n.err(format!("`{other}` is not a shape op"))),
    }
}

/// Output dim `i` is input dim `perm[i]`, on the ONNX shape at batch 1.
fn transpose(b: &mut Builder, n: &ONode, x: Act) -> Result<()> {
    let full = x.full();
    let r = full.len();
    let perm = perm(n, r)?;
    let out: Vec<usize> = perm.iter().map(|&p| full[p]).collect();
    // NCHW to NHWC makes a channels-last tensor; any other permutation, one that is not.
    let nhwc = x.plain() && !x.nhwc && perm == [0, 2, 3, 1];
    if x.plain() && perm[0] == 0 {
        let mut internal = [0, 1, 2];
        for (i, &p) in perm[1..].iter().enumerate() {
            internal[i] = p - 1;
        }
        if internal == [0, 1, 2] {
            return view(b, n, &x, out, nhwc);
        }
        return emit(
            b,
            n,
            Op::Transpose(Transpose { perm: internal }),
            x.node,
            out,
            nhwc,
        );
    }
    let (shape, groups) = reduce(&full, &perm);
    if groups.iter().enumerate().all(|(i, &g)| i == g) {
        return view(b, n, &x, out, nhwc);
    }
    let op = if groups.len() <= 3 {
        // Axes of length 1 dropped and axes that stay together merged: at most 3 remain.
        let mut internal = [0, 1, 2];
        internal[..groups.len()].copy_from_slice(&groups);
        let mut s = [1; 3];
        s[..shape.len()].copy_from_slice(&shape);
        let xn = b.view(n, &x, s)?;
        return emit(
            b,
            n,
            Op::Transpose(Transpose { perm: internal }),
            xn,
            out,
            nhwc,
        );
    } else {
        // Swin's window partition (rank 6): an index map.
        gather(n, &full, &perm, &out)?
    };
    emit(b, n, op, x.node, out, nhwc)
}

fn emit(b: &mut Builder, n: &ONode, op: Op, x: usize, out: Vec<usize>, nhwc: bool) -> Result<()> {
    b.emit_full(n, op, &[x], out, nhwc)?;
    Ok(())
}

/// The transpose of `full` by `perm` with axes of length 1 dropped and runs of axes that
/// stay adjacent merged: the merged input shape and the permutation of its axes.
pub fn reduce(full: &[usize], perm: &[usize]) -> (Vec<usize>, Vec<usize>) {
    // The axes longer than 1, numbered in input order, listed in output order.
    let long: Vec<usize> = (0..full.len()).filter(|&a| full[a] != 1).collect();
    let kept: Vec<usize> = perm
        .iter()
        .filter_map(|&p| long.iter().position(|&a| a == p))
        .collect();
    // Runs of them in output order that are consecutive in the input too.
    let mut runs: Vec<Vec<usize>> = Vec::new();
    for &k in &kept {
        match runs.last_mut() {
            Some(run) if run.last().is_some_and(|&l| l + 1 == k) => run.push(k),
            _ => runs.push(vec![k]),
        }
    }
    // Number the runs by their input order.
    let mut order: Vec<usize> = (0..runs.len()).collect();
    order.sort_by_key(|&i| runs[i][0]);
    let mut rank = vec![0; runs.len()];
    for (k, &i) in order.iter().enumerate() {
        rank[i] = k;
    }
    let shape = order
        .iter()
        .map(|&i| runs[i].iter().map(|&k| full[long[k]]).product())
        .collect();
    (shape, rank)
}

/// A transpose of more than three merged axes as an index map over the per-image elements.
fn gather(n: &ONode, full: &[usize], perm: &[usize], out: &[usize]) -> Result<Op> {
    let total: usize = full.iter().product();
    if total > MAX_ELEMENTS || u32::try_from(total).is_err() {
        return Err(n.err(format!("transposes a tensor of shape {full:?}, too large")));
    }
    let mut stride = vec![1usize; full.len()];
    for i in (0..full.len().saturating_sub(1)).rev() {
        stride[i] = stride[i + 1] * full[i + 1];
    }
    let mut index = Vec::with_capacity(total);
    let mut at = vec![0usize; out.len()];
    for _ in 0..total {
        index.push(
            at.iter()
                .zip(perm)
                .map(|(&i, &p)| i * stride[p])
                .sum::<usize>() as u32,
        );
        for d in (0..out.len()).rev() {
            at[d] += 1;
            if at[d] < out[d] {
                break;
            }
            at[d] = 0;
        }
    }
    Ok(Op::Gather(Gather {
        shape: ir_shape(out),
        index,
    }))
}
