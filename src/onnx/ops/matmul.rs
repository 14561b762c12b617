//! Gemm and MatMul of an activation by constant weights: the engine's Linear, contracting
//! the activation's last axis.

use super::super::builder::{Act, Builder, Value};
use super::super::node::ONode;
use crate::error::Result;
use crate::graph::{Linear, Op};

/// `[rows, cols]` to `[cols, rows]`.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0.0; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = v[r * cols + c];
        }
    }
    t
}

pub fn gemm(b: &mut Builder, n: &ONode) -> Result<()> {
    let x = b.act_any(n, 0)?;
    if n.int("transA", 0)? != 0 {
        return Err(n.err("transA on an activation is not supported"));
    }
    let &[k] = &x.dims[..] else {
        return Err(n.err(format!(
            "expects a 2-D input, gets ONNX shape {:?} at batch 1",
            x.full()
        )));
    };
    let w = b.konst(n, 1)?;
    let (alpha, beta) = (n.float("alpha", 1.0)?, n.float("beta", 1.0)?);
    let trans_b = n.int("transB", 0)? != 0;
    let (m, weight) = match (&w.dims[..], trans_b) {
        (&[m, k2], true) if k2 == k => (m, w.to_f32()),
        (&[k2, m], false) if k2 == k => (m, transpose(&w.to_f32(), k, m)),
        _ => {
            return Err(n.err(format!(
                "weight {:?} (transB {trans_b}) does not take {k} features",
                w.dims
            )));
        }
    };
    let weight: Vec<f32> = weight.iter().map(|v| v * alpha).collect();
    let bias = match b.opt_konst(n, 2)? {
        None => None,
        Some(c) => {
            let v = c.to_f32();
            let v: Vec<f32> = match v.len() {
                1 => vec![v[0] * beta; m],
                l if l == m => v.iter().map(|x| x * beta).collect(),
                l => return Err(n.err(format!("bias has {l} values for {m} outputs"))),
            };
            Some(v)
        }
    };
    linear(b, n, &x, k, m, weight, bias, vec![x.lead, m])
}

pub fn matmul(b: &mut Builder, n: &ONode) -> Result<()> {
    let x = b.act_any(n, 0)?;
    let w = match b.value(n, 1)? {
        Value::Const(c) => c.clone(),
        Value::Act(y) => {
            let y = y.clone();
            return super::attention::matmul(b, n, &x, &y);
        }
    };
    let full = x.full();
    let (&k, rows) = full.split_last().expect("an activation has axis 0");
    if rows.is_empty() {
        return Err(n.err("multiplies a 1-D activation"));
    }
    let (m, weight, out) = match w.dims[..] {
        [k2, m] if k2 == k => {
            let mut d = full.clone();
            d[rows.len()] = m;
            (m, transpose(&w.to_f32(), k, m), d)
        }
        [k2] if k2 == k => (1, w.to_f32(), rows.to_vec()),
        _ => {
            return Err(n.err(format!(
                "weight {:?} does not contract the last axis ({k})",
                w.dims
            )));
        }
    };
    linear(b, n, &x, k, m, weight, None, out)
}

/// The engine's Linear over `x`'s last axis (`k` to `m` features); `out` is the ONNX
/// shape at batch 1.
#[allow(clippy::too_many_arguments)]
fn linear(
    b: &mut Builder,
    n: &ONode,
    x: &Act,
    k: usize,
    m: usize,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    out: Vec<usize>,
) -> Result<()> {
    // The plain layout contracts its own last axis; any other, a `[rows, k, 1]` view.
    let (input, axis) = if x.plain() {
        (x.node, x.dims.len() - 1)
    } else {
        let rows = x.full().iter().product::<usize>() / k.max(1);
        (b.view(n, x, [rows, k, 1])?, 1)
    };
    let base = n.outputs[0].clone();
    let weight = b.tensor(&format!("{base}.weight"), vec![m, k], weight);
    let bias = bias.map(|v| b.tensor(&format!("{base}.bias"), vec![m], v));
    let op = Op::Linear(Linear {
        weight,
        bias,
        in_features: k,
        out_features: m,
        axis,
    });
    b.emit_full(n, op, &[input], out, x.nhwc)?;
    Ok(())
}
