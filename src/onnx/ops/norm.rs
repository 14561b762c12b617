//! BatchNormalization (inference), LayerNormalization and GroupNormalization.

use super::super::builder::Builder;
use super::super::node::{ONode, axis};
use crate::error::Result;
use crate::graph::{BatchNorm2d, BinaryConst, BinaryKind, GroupNorm, LayerNorm, Op};
use crate::weights::Tensor;

pub fn batch_norm(b: &mut Builder, n: &ONode) -> Result<()> {
    let x = b.act(n, 0)?;
    let eps = n.float("epsilon", 1e-5)?;
    let params: Vec<Vec<f32>> = (1..5)
        .map(|i| b.konst(n, i).map(|c| c.to_f32()))
        .collect::<Result<_>>()?;
    let c = if x.nhwc {
        *x.dims.last().unwrap_or(&1)
    } else {
        *x.dims.first().unwrap_or(&1)
    };
    if params.iter().any(|p| p.len() != c) {
        return Err(n.err(format!("parameters do not have {c} channels")));
    }
    let base = n.outputs[0].clone();
    if !x.nhwc {
        // Channels first: the engine's BatchNorm2d, which the plan folds into a conv before it.
        let prefix = b.fresh(&base);
        for (suffix, data) in ["weight", "bias", "running_mean", "running_var"]
            .iter()
            .zip(params)
        {
            b.weights.tensors.insert(
                format!("{prefix}.{suffix}"),
                Tensor {
                    shape: vec![c],
                    data,
                },
            );
        }
        let op = Op::BatchNorm2d(BatchNorm2d {
            prefix,
            channels: c,
            eps: eps as f64,
        });
        b.emit(n, op, &[x.node], x.dims.clone())?;
        return Ok(());
    }
    // Channels last: scale and shift along the last axis.
    let (gamma, beta, mean, var) = (&params[0], &params[1], &params[2], &params[3]);
    let scale: Vec<f32> = (0..c)
        .map(|k| (gamma[k] as f64 / (var[k] as f64 + eps as f64).sqrt()) as f32)
        .collect();
    let shift: Vec<f32> = (0..c)
        .map(|k| (beta[k] as f64 - mean[k] as f64 * scale[k] as f64) as f32)
        .collect();
    let mut shape = [1; 3];
    shape[x.dims.len() - 1] = c;
    let s = b.tensor(&format!("{base}.scale"), shape.to_vec(), scale);
    let t = b.tensor(&format!("{base}.shift"), shape.to_vec(), shift);
    let mul = Op::BinaryConst(BinaryConst {
        kind: BinaryKind::Mul,
        tensor: s,
        shape,
        reversed: false,
    });
    let scaled = b.push(n, &format!("{base}:scale"), mul, &[x.node])?;
    let add = Op::BinaryConst(BinaryConst {
        kind: BinaryKind::Add,
        tensor: t,
        shape,
        reversed: false,
    });
    b.emit_layout(n, add, &[scaled], x.dims.clone(), true)?;
    Ok(())
}

/// A per-channel affine parameter (input `i`) as a weight named `{base}.{what}`.
fn affine(b: &mut Builder, n: &ONode, i: usize, len: usize, what: &str) -> Result<Option<String>> {
    match b.opt_konst(n, i)? {
        Some(c) if c.len() == len => {
            let base = format!("{}.{what}", n.outputs[0]);
            Ok(Some(b.tensor(&base, vec![len], c.to_f32())))
        }
        Some(c) => Err(n.err(format!("{what} has {} values, expected {len}", c.len()))),
        None => Ok(None),
    }
}

pub fn layer_norm(b: &mut Builder, n: &ONode) -> Result<()> {
    let x = b.act_any(n, 0)?;
    let a = axis(n, n.int("axis", -1)?, x.rank())?;
    if a == 0 && x.lead == 1 {
        return Err(n.err("normalises over the batch axis"));
    }
    let full = x.full();
    let features: usize = full[a..].iter().product();
    // The plain layout normalises its own trailing axes; any other, a `[rows, features, 1]` view.
    let (input, ir_axis) = if x.plain() {
        (x.node, a - 1)
    } else {
        (
            b.view(
                n,
                &x,
                [full.iter().product::<usize>() / features, features, 1],
            )?,
            1,
        )
    };
    let op = Op::LayerNorm(LayerNorm {
        axis: ir_axis,
        features,
        eps: n.float("epsilon", 1e-5)?,
        weight: affine(b, n, 1, features, "weight")?,
        bias: affine(b, n, 2, features, "bias")?,
    });
    b.emit_full(n, op, &[input], full, x.nhwc)?;
    Ok(())
}

pub fn group_norm(b: &mut Builder, n: &ONode) -> Result<()> {
    let x = b.act(n, 0)?;
    if x.nhwc || x.dims.is_empty() {
        return Err(n.err("expects a channels-first input"));
    }
    let channels = x.dims[0];
    let groups = n.int("num_groups", 0)?;
    if groups < 1 {
        return Err(n.err(format!("num_groups {groups} is not positive")));
    }
    // Opset 18 scales per group, opset 21 per channel: widen per-group parameters.
    let widen = |c: Vec<f32>| -> Vec<f32> {
        if c.len() == channels {
            c
        } else {
            (0..channels).map(|k| c[k * c.len() / channels]).collect()
        }
    };
    let mut param = |i: usize, what: &str| -> Result<String> {
        let c = b.konst(n, i)?;
        if c.len() != channels && c.len() != groups as usize {
            return Err(n.err(format!("{what} has {} values", c.len())));
        }
        let data = widen(c.to_f32());
        Ok(b.tensor(&format!("{}.{what}", n.outputs[0]), vec![channels], data))
    };
    let weight = param(1, "weight")?;
    let bias = param(2, "bias")?;
    let op = Op::GroupNorm(GroupNorm {
        groups: groups as usize,
        channels,
        eps: n.float("epsilon", 1e-5)?,
        weight: Some(weight),
        bias: Some(bias),
    });
    b.emit(n, op, &[x.node], x.dims.clone())?;
    Ok(())
}
