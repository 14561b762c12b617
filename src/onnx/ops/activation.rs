//! Element-wise activations: Relu, Sigmoid, HardSigmoid, HardSwish, Clip, Gelu, Erf, and
//! the SiLU the rewrite pass recognises.

use super::super::builder::Builder;
use super::super::node::ONode;
use crate::error::Result;
use crate::graph::ops::hardswish::Hardswish;
use crate::graph::{Clip, Erf, Gelu, HardSigmoid, Op, Relu, Relu6, Sigmoid, Silu};

pub fn activation(b: &mut Builder, n: &ONode) -> Result<()> {
    let x = b.act_any(n, 0)?;
    let op = match n.op.as_str() {
        "Relu" => Op::Relu(Relu),
        "Sigmoid" => Op::Sigmoid(Sigmoid),
        "Silu" => Op::Silu(Silu),
        "HardSwish" => Op::Hardswish(Hardswish),
        "HardSigmoid" => Op::HardSigmoid(HardSigmoid {
            alpha: n.float("alpha", 0.2)?,
            beta: n.float("beta", 0.5)?,
        }),
        "Erf" => Op::Erf(Erf),
        "Gelu" => Op::Gelu(Gelu {
            approximate: match n.string("approximate", "none")?.as_str() {
                "none" => false,
                "tanh" => true,
                other => return Err(n.err(format!("unknown approximate `{other}`"))),
            },
        }),
        "Clip" => {
            let (min, max) = clip_bounds(b, n)?;
            if min == Some(0.0) && max == Some(6.0) {
                Op::Relu6(Relu6)
            } else if min == Some(0.0) && max.is_none() {
                Op::Relu(Relu)
            } else {
                Op::Clip(Clip { min, max })
            }
        }
        other => return Err(n.err(format!("`{other}` is not an activation"))),
    };
    b.emit_full(n, op, &[x.node], x.full(), x.nhwc)?;
    Ok(())
}

/// Clip's bounds: attributes before opset 11, optional constant inputs after.
fn clip_bounds(b: &Builder, n: &ONode) -> Result<(Option<f32>, Option<f32>)> {
    if n.opset < 11 {
        let min = n.has("min").then(|| n.float("min", 0.0)).transpose()?;
        let max = n.has("max").then(|| n.float("max", 0.0)).transpose()?;
        return Ok((min, max));
    }
    let bound = |i: usize| -> Result<Option<f32>> {
        match b.opt_konst(n, i)? {
            Some(c) => c
                .scalar()
                .map(Some)
                .ok_or_else(|| n.err(format!("bound {i} is not a scalar"))),
            None => Ok(None),
        }
    };
    Ok((bound(1)?, bound(2)?))
}
