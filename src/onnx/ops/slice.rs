//! Concat, Split, Slice, Pad and Gather of activations along per-image axes.
//!
//! Axes are ONNX's at batch 1; axis 0 is the batch where it has length 1, else an ordinary
//! axis (see [`Act`]), read through an `[outer, len, inner]` view.

use super::super::builder::{Act, Builder, Value, around, pad3};
use super::super::node::{ONode, axis, slice_args};
use crate::error::Result;
use crate::graph::{Add, BinaryConst, BinaryKind, Concat, Gather, Op, Pad, Slice};

/// ONNX axis `a` of `x`, which must not be the batch.
fn data_axis(n: &ONode, a: i64, x: &Act) -> Result<usize> {
    match axis(n, a, x.rank())? {
        0 if x.lead == 1 => Err(n.err("works along the batch axis")),
        a => Ok(a),
    }
}

/// `x`'s node with ONNX axis `a` as an IR axis: the plain layout's own, or an
/// `[outer, len, inner]` view.
fn along(b: &mut Builder, n: &ONode, x: &Act, a: usize) -> Result<(usize, usize)> {
    if x.plain() && a >= 1 {
        return Ok((x.node, a - 1));
    }
    Ok((b.view(n, x, around(&x.full(), a))?, 1))
}

pub fn concat(b: &mut Builder, n: &ONode) -> Result<()> {
    let parts: Vec<Value> = (0..n.inputs.len())
        .filter(|&i| n.input(i).is_some())
        .map(|i| b.value(n, i).cloned())
        .collect::<Result<_>>()?;
    let first = parts
        .iter()
        .find_map(|p| match p {
            Value::Act(x) => Some(x.clone()),
            Value::Const(_) => None,
        })
        .ok_or_else(|| n.err("has no inputs that depend on the image"))?;
    // Axis 0 is the batch only where no part is longer than 1 there (`[1, N, E]` in front
    // of `[L, N, E]` is a token, not a batch).
    let longest = parts.iter().fold(&first, |m, p| match p {
        Value::Act(x) if x.lead > m.lead => x,
        _ => m,
    });
    let a = data_axis(n, n.int("axis", 0)?, longest)?;
    if parts.len() == 1 {
        return b.bind(n, 0, Value::Act(first));
    }
    let general = parts.iter().any(|p| match p {
        Value::Act(x) => !x.plain() || x.lead != first.lead,
        Value::Const(_) => false,
    });
    if general || a == 0 {
        return concat_any(b, n, &parts, &first, a);
    }
    let a = a - 1;
    // Per-image dims of each part: a constant's batch dim must be 1 (the same for every image).
    let mut dims = first.dims.clone();
    dims[a] = 0;
    let mut sizes = Vec::with_capacity(parts.len());
    for p in &parts {
        let mut d = match p {
            Value::Act(x) => x.dims.clone(),
            Value::Const(c) => match c.dims.split_first() {
                Some((1, rest)) => rest.to_vec(),
                _ => {
                    return Err(n.err(format!(
                        "concatenates a constant of shape {:?}, which is not one [1, ...] \
                         for every image of the batch",
                        c.dims
                    )));
                }
            },
        };
        if d.len() != first.dims.len() {
            return Err(n.err("concatenates tensors of different ranks"));
        }
        dims[a] = dims[a]
            .checked_add(d[a])
            .ok_or_else(|| n.err("concatenates too much"))?;
        sizes.push(d[a]);
        d[a] = first.dims[a];
        if d != first.dims {
            return Err(n.err(format!(
                "concatenates per-image dims {:?} and {d:?} along axis {}",
                first.dims,
                a + 1
            )));
        }
    }
    if parts.iter().all(|p| matches!(p, Value::Act(_))) {
        let inputs: Vec<usize> = parts
            .iter()
            .filter_map(|p| match p {
                Value::Act(x) => Some(x.node),
                Value::Const(_) => None,
            })
            .collect();
        b.emit_layout(n, Op::Concat(Concat { axis: a }), &inputs, dims, first.nhwc)?;
        return Ok(());
    }
    concat_constants(b, n, &parts, &sizes, a, dims, first.nhwc)
}

/// Concat of activations of any ONNX shape, through `[outer, len, inner]` views.
fn concat_any(b: &mut Builder, n: &ONode, parts: &[Value], first: &Act, a: usize) -> Result<()> {
    let mut full = first.full();
    full[a] = 0;
    let mut inputs = Vec::with_capacity(parts.len());
    for p in parts {
        let Value::Act(x) = p else {
            return Err(n.err(format!(
                "concatenates a constant with an activation of ONNX shape {:?} at batch 1; \
                 only activations concatenate there",
                first.full()
            )));
        };
        let mut f = x.full();
        let len = f[a];
        // The other axes must agree; `full[a]` is the length so far.
        f[a] = full[a];
        if f != full {
            return Err(n.err(format!(
                "concatenates ONNX shapes {:?} and {:?} along axis {a}",
                first.full(),
                x.full()
            )));
        }
        full[a] += len;
        inputs.push(b.view(n, x, around(&x.full(), a))?);
    }
    b.emit_full(n, Op::Concat(Concat { axis: 1 }), &inputs, full, false)?;
    Ok(())
}

/// Concat with constant parts, without an op of its own: each run of activations is
/// concatenated and zero-padded to the full length, the runs summed, and one constant
/// holding the constant parts in their slots (zeros elsewhere) added.
fn concat_constants(
    b: &mut Builder,
    n: &ONode,
    parts: &[Value],
    sizes: &[usize],
    a: usize,
    dims: Vec<usize>,
    nhwc: bool,
) -> Result<()> {
    let total = dims[a];
    let base = n.outputs.first().cloned().unwrap_or_else(|| n.name.clone());
    let mut sum: Option<usize> = None;
    let (mut offset, mut k) = (0, 0);
    while k < parts.len() {
        let (start, mut run) = (offset, Vec::new());
        while let Some(Value::Act(x)) = parts.get(k) {
            run.push(x.node);
            offset += sizes[k];
            k += 1;
        }
        if run.is_empty() {
            offset += sizes[k];
            k += 1;
            continue;
        }
        let joined = match run[..] {
            [one] => one,
            _ => b.push(
                n,
                &format!("{base}:concat"),
                Op::Concat(Concat { axis: a }),
                &run,
            )?,
        };
        let (mut begin, mut end) = ([0; 3], [0; 3]);
        begin[a] = start;
        end[a] = total - offset;
        let pad = Op::Pad(Pad {
            begin,
            end,
            value: 0.0,
        });
        let padded = b.push(n, &format!("{base}:pad"), pad, &[joined])?;
        sum = Some(match sum {
            None => padded,
            Some(s) => b.push(n, &format!("{base}:sum"), Op::Add(Add), &[s, padded])?,
        });
    }
    let sum = sum.ok_or_else(|| n.err("has no inputs that depend on the image"))?;
    // The IR's per-image layout is ONNX's: `outer` blocks of `len · inner` elements.
    let outer: usize = dims[..a].iter().product();
    let inner: usize = dims[a + 1..].iter().product();
    let mut slots = vec![0.0; outer * total * inner];
    let mut offset = 0;
    for (p, &len) in parts.iter().zip(sizes) {
        if let Value::Const(c) = p {
            let v = c.to_f32();
            for o in 0..outer {
                let to = (o * total + offset) * inner;
                slots[to..to + len * inner]
                    .copy_from_slice(&v[o * len * inner..(o + 1) * len * inner]);
            }
        }
        offset += len;
    }
    let shape = pad3(&dims);
    let tensor = b.tensor(&format!("{base}.constant"), shape.to_vec(), slots);
    let op = Op::BinaryConst(BinaryConst {
        kind: BinaryKind::Add,
        tensor,
        shape,
        reversed: false,
    });
    b.emit_layout(n, op, &[sum], dims, nhwc)?;
    Ok(())
}

/// `x[start..end]` along ONNX axis `a`, bound to output `k`.
fn slice_to(
    b: &mut Builder,
    n: &ONode,
    x: &Act,
    a: usize,
    range: (usize, usize),
    k: usize,
) -> Result<Act> {
    let (start, end) = range;
    let mut full = x.full();
    full[a] = end - start;
    let base = n.outputs.get(k).cloned().unwrap_or_else(|| n.name.clone());
    let (input, axis) = along(b, n, x, a)?;
    let node = b.push(n, &base, Op::Slice(Slice { axis, start, end }), &[input])?;
    let act = b.act_full(n, node, full, x.nhwc)?;
    b.bind(n, k, Value::Act(act.clone()))?;
    Ok(act)
}

pub fn split(b: &mut Builder, n: &ONode) -> Result<()> {
    let x = b.act_any(n, 0)?;
    let a = data_axis(n, n.int("axis", 0)?, &x)?;
    let len = x.full()[a];
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
    let mut x = b.act_any(n, 0)?;
    let r = x.rank();
    let konst = |i: usize| Ok(b.opt_konst(n, i)?.map(|c| c.to_i64()));
    let (starts, ends, axes, steps) = slice_args(n, r, konst)?;
    if ends.len() != starts.len() || axes.len() != starts.len() {
        return Err(n.err("starts, ends and axes differ in length"));
    }
    let mut sliced = false;
    for (k, &a) in axes.iter().enumerate() {
        let step = steps.as_ref().and_then(|s| s.get(k).copied()).unwrap_or(1);
        let batch = a == 0 && x.lead == 1;
        let len = if batch { i64::MAX } else { x.full()[a] as i64 };
        let clampi = |v: i64| (if v < 0 { v.saturating_add(len) } else { v }).clamp(0, len);
        let (s, e) = (clampi(starts[k]), clampi(ends[k]).max(clampi(starts[k])));
        if batch {
            if s != 0 || ends[k] < 1 {
                return Err(n.err("slices the batch axis"));
            }
            continue;
        }
        if step != 1 {
            x = strided(b, n, &x, a, starts[k], ends[k], step)?;
            sliced = true;
            continue;
        }
        if s == 0 && e == len {
            continue;
        }
        if s == e {
            return Err(n.err("produces an empty tensor"));
        }
        x = slice_to(b, n, &x, a, (s as usize, e as usize), 0)?;
        sliced = true;
    }
    if !sliced {
        b.bind(n, 0, Value::Act(x))?;
    }
    Ok(())
}

/// A Slice along ONNX axis `a` with a step other than 1 (Swin's patch merging takes every
/// other row): an index map over an `[outer, len, inner]` view, clamped as ONNX does.
#[allow(clippy::too_many_arguments)]
fn strided(
    b: &mut Builder,
    n: &ONode,
    x: &Act,
    a: usize,
    start: i64,
    end: i64,
    step: i64,
) -> Result<Act> {
    let mut full = x.full();
    let [outer, len, inner] = around(&full, a);
    let d = len as i64;
    let wrap = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    let (first, count) = match step {
        0 => return Err(n.err("slices with step 0")),
        _ if d == 0 => (0, 0),
        st if st > 0 => {
            let (s, e) = (wrap(start).clamp(0, d), wrap(end).clamp(0, d));
            (s, ((e - s).max(0) as u64).div_ceil(st as u64) as usize)
        }
        st => {
            let (s, e) = (wrap(start).clamp(0, d - 1), wrap(end).clamp(-1, d - 1));
            (
                s,
                ((s - e).max(0) as u64).div_ceil(st.unsigned_abs()) as usize,
            )
        }
    };
    if count == 0 {
        return Err(n.err("produces an empty tensor"));
    }
    let mut index = Vec::with_capacity(outer * count * inner);
    for o in 0..outer {
        for i in 0..count {
            let row = (first + i as i64 * step) as usize;
            for j in 0..inner {
                index.push(((o * len + row) * inner + j) as u32);
            }
        }
    }
    full[a] = count;
    let op = Op::Gather(Gather {
        shape: [outer, count, inner],
        index,
    });
    let xn = b.view(n, x, [outer, len, inner])?;
    let base = n.outputs.first().cloned().unwrap_or_else(|| n.name.clone());
    let node = b.push(n, &base, op, &[xn])?;
    let act = b.act_full(n, node, full, x.nhwc)?;
    b.bind(n, 0, Value::Act(act.clone()))?;
    Ok(act)
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

/// `Gather` of an activation along a per-image axis with constant indices: a scalar
/// index drops the axis, a list of consecutive increasing ones keeps it; either is a slice.
pub fn gather(b: &mut Builder, n: &ONode) -> Result<()> {
    let x = b.act_any(n, 0)?;
    let idx = b.konst(n, 1)?;
    let a = data_axis(n, n.int("axis", 0)?, &x)?;
    let len = x.full()[a];
    if idx.dims.len() > 1 {
        return Err(n.err(format!(
            "gathers with indices of shape {:?}; only a scalar or a 1-D list is supported",
            idx.dims
        )));
    }
    let ids: Vec<usize> = idx
        .to_i64()
        .iter()
        .map(|&i| {
            let j = if i < 0 {
                i.saturating_add(len as i64)
            } else {
                i
            };
            usize::try_from(j)
                .ok()
                .filter(|&j| j < len)
                .ok_or_else(|| n.err(format!("index {i} is out of range for a dim of {len}")))
        })
        .collect::<Result<_>>()?;
    let Some(&start) = ids.first() else {
        return Err(n.err("gathers no index"));
    };
    if ids.windows(2).any(|w| w[1] != w[0] + 1) {
        return Err(n.err(format!(
            "gathers indices {ids:?}; only consecutive increasing ones (a slice) are supported"
        )));
    }
    let end = start + ids.len();
    let sliced = if (start, end) == (0, len) {
        x.clone()
    } else {
        slice_to(b, n, &x, a, (start, end), 0)?
    };
    if idx.dims.is_empty() {
        let mut full = sliced.full();
        full.remove(a);
        if full.is_empty() {
            return Err(n.err("gathers a scalar"));
        }
        let act = b.act_full(n, sliced.node, full, false)?;
        b.bind(n, 0, Value::Act(act))?;
    } else {
        b.bind(n, 0, Value::Act(sliced))?;
    }
    Ok(())
}
