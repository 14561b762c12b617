//! Concat, Split, Slice and Pad of activations along per-image axes.

use super::super::builder::{Act, Builder, Value};
use super::super::node::{ONode, axis};
use crate::error::Result;
use crate::graph::{Concat, Op, Pad, Slice};

/// A non-batch axis of a rank-`r` tensor as an IR axis.
fn image_axis(n: &ONode, a: i64, r: usize) -> Result<usize> {
    match axis(n, a, r)? {
        0 => Err(n.err("works along the batch axis")),
        a => Ok(a - 1),
    }
}

pub fn concat(b: &mut Builder, n: &ONode) -> Result<()> {
    let xs: Vec<Act> = (0..n.inputs.len())
        .filter(|&i| n.input(i).is_some())
        .map(|i| b.act(n, i))
        .collect::<Result<_>>()?;
    let first = xs.first().ok_or_else(|| n.err("has no inputs"))?.clone();
    let a = image_axis(n, n.int("axis", 0)?, first.rank())?;
    if xs.len() == 1 {
        return b.bind(n, 0, Value::Act(first));
    }
    let mut dims = first.dims.clone();
    dims[a] = 0;
    for x in &xs {
        let mut d = x.dims.clone();
        if d.len() != first.dims.len() {
            return Err(n.err("concatenates tensors of different ranks"));
        }
        dims[a] += d[a];
        d[a] = first.dims[a];
        if d != first.dims {
            return Err(n.err(format!(
                "concatenates {:?} and {:?} along axis {}",
                first.dims,
                x.dims,
                a + 1
            )));
        }
    }
    let inputs: Vec<usize> = xs.iter().map(|x| x.node).collect();
    b.emit_layout(n, Op::Concat(Concat { axis: a }), &inputs, dims, first.nhwc)?;
    Ok(())
}

/// `x[start..end]` along IR axis `a`, bound to output `k`.
fn slice_to(
    b: &mut Builder,
    n: &ONode,
    x: &Act,
    a: usize,
    range: (usize, usize),
    k: usize,
) -> Result<Act> {
    let (start, end) = range;
    let mut dims = x.dims.clone();
    dims[a] = end - start;
    let base = n.outputs.get(k).cloned().unwrap_or_else(|| n.name.clone());
    let node = b.push(
        n,
        &base,
        Op::Slice(Slice {
            axis: a,
            start,
            end,
        }),
        &[x.node],
    )?;
    let act = b.act_of(n, node, dims, x.nhwc)?;
    b.bind(n, k, Value::Act(act.clone()))?;
    Ok(act)
}

pub fn split(b: &mut Builder, n: &ONode) -> Result<()> {
    let x = b.act(n, 0)?;
    let a = image_axis(n, n.int("axis", 0)?, x.rank())?;
    let len = x.dims[a];
    let outputs = n.outputs.len();
    let sizes: Vec<usize> = match n.ints("split")? {
        Some(s) => s.iter().map(|&v| v.max(0) as usize).collect(),
        None => match b.opt_konst(n, 1)? {
            Some(c) => c.to_i64().iter().map(|&v| v.max(0) as usize).collect(),
            None => {
                let parts = outputs.max(1);
                let chunk = len.div_ceil(parts);
                (0..parts)
                    .map(|k| chunk.min(len.saturating_sub(k * chunk)))
                    .collect()
            }
        },
    };
    let total = sizes.iter().try_fold(0usize, |t, &v| t.checked_add(v));
    if sizes.len() != outputs || total != Some(len) {
        return Err(n.err(format!(
            "splits {len} into {sizes:?} across {outputs} outputs"
        )));
    }
    let mut start = 0;
    for (k, &s) in sizes.iter().enumerate() {
        if !n.outputs[k].is_empty() {
            slice_to(b, n, &x, a, (start, start + s), k)?;
        }
        start += s;
    }
    Ok(())
}

pub fn slice(b: &mut Builder, n: &ONode) -> Result<()> {
    let mut x = b.act(n, 0)?;
    let r = x.rank();
    let konst =
        |i: usize| -> Result<Option<Vec<i64>>> { Ok(b.opt_konst(n, i)?.map(|c| c.to_i64())) };
    let (starts, ends, axes, steps) = match n.ints("starts")? {
        Some(s) => (
            s,
            n.ints("ends")?.unwrap_or_default(),
            n.ints("axes")?,
            None,
        ),
        None => (
            konst(1)?.unwrap_or_default(),
            konst(2)?.unwrap_or_default(),
            konst(3)?,
            konst(4)?,
        ),
    };
    let axes: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&v| axis(n, v, r)).collect::<Result<_>>()?,
        None => (0..starts.len()).collect(),
    };
    if ends.len() != starts.len() || axes.len() != starts.len() {
        return Err(n.err("starts, ends and axes differ in length"));
    }
    let mut sliced = false;
    for (k, &a) in axes.iter().enumerate() {
        let step = steps.as_ref().and_then(|s| s.get(k).copied()).unwrap_or(1);
        let len = if a == 0 {
            i64::MAX
        } else {
            x.dims[a - 1] as i64
        };
        let clampi = |v: i64| (if v < 0 { v.saturating_add(len) } else { v }).clamp(0, len);
        let (s, e) = (clampi(starts[k]), clampi(ends[k]).max(clampi(starts[k])));
        if a == 0 {
            if s != 0 || ends[k] < 1 {
                return Err(n.err("slices the batch axis"));
            }
            continue;
        }
        if step != 1 {
            return Err(n.err(format!("slices with step {step}; only step 1 is supported")));
        }
        if s == 0 && e == len {
            continue;
        }
        if s == e {
            return Err(n.err("produces an empty tensor"));
        }
        x = slice_to(b, n, &x, a - 1, (s as usize, e as usize), 0)?;
        sliced = true;
    }
    if !sliced {
        b.bind(n, 0, Value::Act(x))?;
    }
    Ok(())
}

pub fn pad(b: &mut Builder, n: &ONode) -> Result<()> {
    let x = b.act(n, 0)?;
    let r = x.rank();
    let mode = n.string("mode", "constant")?;
    if mode != "constant" {
        return Err(n.err(format!(
            "pad mode `{mode}`; only constant padding is supported"
        )));
    }
    let (pads, value, axes) = if n.opset < 11 {
        (
            n.ints("pads")?.unwrap_or_default(),
            n.float("value", 0.0)?,
            None,
        )
    } else {
        let pads = b.konst(n, 1)?.to_i64();
        let value = match b.opt_konst(n, 2)? {
            Some(c) => c
                .scalar()
                .ok_or_else(|| n.err("constant_value is not a scalar"))?,
            None => 0.0,
        };
        let axes = b.opt_konst(n, 3)?.map(|c| c.to_i64());
        (pads, value, axes)
    };
    let axes: Vec<usize> = match axes {
        Some(a) => a.iter().map(|&v| axis(n, v, r)).collect::<Result<_>>()?,
        None => (0..r).collect(),
    };
    if pads.len() != 2 * axes.len() || pads.iter().any(|&p| p < 0) {
        return Err(n.err(format!(
            "pads {pads:?} are not {} non-negative values",
            2 * axes.len()
        )));
    }
    let (mut begin, mut end) = ([0; 3], [0; 3]);
    for (k, &a) in axes.iter().enumerate() {
        let (p, q) = (pads[k] as usize, pads[k + axes.len()] as usize);
        if a == 0 {
            if p + q != 0 {
                return Err(n.err("pads the batch axis"));
            }
            continue;
        }
        begin[a - 1] = p;
        end[a - 1] = q;
    }
    if begin == [0; 3] && end == [0; 3] {
        return b.bind(n, 0, Value::Act(x));
    }
    let dims: Vec<usize> = x
        .dims
        .iter()
        .enumerate()
        .map(|(i, &d)| d.saturating_add(begin[i]).saturating_add(end[i]))
        .collect();
    b.emit_layout(
        n,
        Op::Pad(Pad { begin, end, value }),
        &[x.node],
        dims,
        x.nhwc,
    )?;
    Ok(())
}
