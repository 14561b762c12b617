//! Ops that only rearrange: Identity, Dropout, Flatten, Reshape, Squeeze, Unsqueeze (free:
//! the IR keeps ONNX's memory layout) and Transpose (a copy).

use super::super::builder::{Act, Builder, Value, pad3};
use super::super::fold;
use super::super::node::{ONode, axis};
use crate::error::Result;
use crate::graph::{Op, Reshape, Transpose};

/// Binds `n`'s output to `x`'s data under ONNX dims `dims` (`[N, ...dims]`).
fn view(b: &mut Builder, n: &ONode, x: &Act, dims: Vec<usize>, nhwc: bool) -> Result<()> {
    if pad3(&dims) == b.shape(x) {
        let act = b.act_of(n, x.node, dims, nhwc)?;
        return b.bind(n, 0, Value::Act(act));
    }
    if dims.len() > 3 {
        return Err(n.err(format!(
            "produces a rank-{} tensor; this importer handles ranks up to 4",
            dims.len() + 1
        )));
    }
    let op = Op::Reshape(Reshape { shape: pad3(&dims) });
    b.emit_layout(n, op, &[x.node], dims, nhwc)?;
    Ok(())
}

pub fn shape_op(b: &mut Builder, n: &ONode) -> Result<()> {
    let x = b.act(n, 0)?;
    let full: Vec<usize> = std::iter::once(1).chain(x.dims.iter().copied()).collect();
    let batch_kept = |out: Vec<usize>| -> Result<Vec<usize>> {
        match out.split_first() {
            Some((1, rest)) => Ok(rest.to_vec()),
            _ => Err(n.err(format!(
                "changes the batch dimension (per-image dims {:?} to {out:?} with a batch of 1)",
                x.dims
            ))),
        }
    };
    match n.op.as_str() {
        "Identity" | "Dropout" => b.bind(n, 0, Value::Act(x)),
        "Flatten" => {
            let r = full.len() as i64;
            let a = n.int("axis", 1)?;
            let a = (if a < 0 { a + r } else { a }).clamp(0, r) as usize;
            let lead: usize = full[1..a.max(1)].iter().product();
            if a == 0 || lead != 1 {
                return Err(n.err(format!("flattens at axis {a}, which merges the batch")));
            }
            view(b, n, &x, vec![x.dims.iter().product()], false)
        }
        "Reshape" => {
            let target = b.konst(n, 1)?.to_i64();
            let out = batch_kept(fold::reshape_dims(n, &full, &target)?)?;
            view(b, n, &x, out, false)
        }
        "Squeeze" | "Unsqueeze" => {
            let axes = match n.ints("axes")? {
                Some(a) => Some(a),
                None => b.opt_konst(n, 1)?.map(|c| c.to_i64()),
            };
            let out = batch_kept(fold::squeeze_dims(n, &full, axes)?)?;
            view(b, n, &x, out, x.nhwc)
        }
        "Transpose" => transpose(b, n, x),
        other => Err(n.err(format!("`{other}` is not a shape op"))),
    }
}

fn transpose(b: &mut Builder, n: &ONode, x: Act) -> Result<()> {
    let r = x.rank();
    let perm: Vec<usize> = match n.ints("perm")? {
        Some(p) => p.iter().map(|&a| axis(n, a, r)).collect::<Result<_>>()?,
        None => (0..r).rev().collect(),
    };
    let mut seen = vec![false; r];
    for &p in &perm {
        seen[p] = true;
    }
    if perm.len() != r || seen.contains(&false) {
        return Err(n.err(format!("perm {perm:?} is not a permutation of {r} axes")));
    }
    if perm[0] != 0 {
        return Err(n.err(format!("perm {perm:?} moves the batch axis")));
    }
    let dims: Vec<usize> = perm[1..].iter().map(|&p| x.dims[p - 1]).collect();
    // NCHW to NHWC makes a channels-last tensor; any other permutation, one that is not.
    let nhwc = !x.nhwc && perm == [0, 2, 3, 1];
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return b.bind(n, 0, Value::Act(x));
    }
    let mut internal = [0, 1, 2];
    for (i, &p) in perm[1..].iter().enumerate() {
        internal[i] = p - 1;
    }
    // Only the permuted prefix differs from the identity; trailing padded axes stay.
    let op = Op::Transpose(Transpose { perm: internal });
    b.emit_layout(n, op, &[x.node], dims, nhwc)?;
    Ok(())
}
