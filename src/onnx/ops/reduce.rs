//! ReduceMean over contiguous per-image axes (Keras's global pooling, squeeze-excitation
//! means): a global average pool where the axes are an NCHW tensor's H and W.

use super::super::builder::{Builder, Value};
use super::super::node::{ONode, axis};
use crate::error::Result;
use crate::graph::{AdaptiveAvgPool2d, Op, ReduceMean};

pub fn reduce_mean(b: &mut Builder, n: &ONode) -> Result<()> {
    let x = b.act(n, 0)?;
    let r = x.rank();
    let axes = match n.ints("axes")? {
        Some(a) => Some(a),
        None => b.opt_konst(n, 1)?.map(|c| c.to_i64()),
    };
    let mut axes: Vec<usize> = match axes {
        Some(a) if !a.is_empty() => a.iter().map(|&v| axis(n, v, r)).collect::<Result<_>>()?,
        _ if n.int("noop_with_empty_axes", 0)? != 0 => {
            return b.bind(n, 0, Value::Act(x));
        }
        _ => (0..r).collect(),
    };
    axes.sort_unstable();
    axes.dedup();
    if axes.contains(&0) {
        return Err(n.err("averages over the batch axis"));
    }
    let (start, end) = (axes[0] - 1, axes[axes.len() - 1]);
    if end - start != axes.len() {
        return Err(n.err(format!(
            "averages over axes {axes:?}, which are not contiguous"
        )));
    }
    let keepdims = n.int("keepdims", 1)? != 0;
    let dims: Vec<usize> = x
        .dims
        .iter()
        .enumerate()
        .filter_map(|(i, &d)| match (start..end).contains(&i) {
            false => Some(d),
            true if keepdims => Some(1),
            true => None,
        })
        .collect();
    let op = if r == 4 && !x.nhwc && (start, end) == (1, 3) {
        Op::AdaptiveAvgPool2d(AdaptiveAvgPool2d { output: [1, 1] })
    } else {
        Op::ReduceMean(ReduceMean { start, end })
    };
    b.emit_layout(n, op, &[x.node], dims, x.nhwc && keepdims)?;
    Ok(())
}
