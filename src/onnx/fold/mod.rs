//! Constant folding: the shape subgraphs exporters emit (`Shape`, `Gather`, `Unsqueeze`,
//! `Concat` of constants feeding a `Reshape`), and any other node whose inputs are all
//! constants. Shapes are folded with a batch of 1: the importer reads the batch
//! dimension of a `Reshape` target as the batch, whatever the model's own batch size.

mod elementwise;
mod layout;

use super::builder::{Builder, Value};
use super::node::{ONode, axis, slice_args};
use super::tensor::{Const, Data};
use crate::error::Result;
use elementwise::{binary, expand, unary, where_};
use std::rc::Rc;

/// The op types folded only when their inputs are constants (beyond those in
/// [`super::ops::SUPPORTED`], which fold too when they can).
pub const FOLDED: &[&str] = &[
    "Abs",
    "And",
    "Cast",
    "Ceil",
    "Constant",
    "ConstantOfShape",
    "Equal",
    "Expand",
    "Floor",
    "Greater",
    "GreaterOrEqual",
    "Less",
    "LessOrEqual",
    "Max",
    "Min",
    "Mod",
    "Neg",
    "Not",
    "Or",
    "Pow",
    "Range",
    "Reciprocal",
    "ScatterND",
    "Shape",
    "Size",
    "Sqrt",
    "Where",
    "Xor",
];

/// Folds `n` if it computes a constant; `Ok(false)` leaves it to the op importers.
pub fn try_fold(b: &mut Builder, n: &ONode) -> Result<bool> {
    // `Shape` needs only its input's (static) dims.
    if n.op == "Shape" || n.op == "Size" {
        let dims: Vec<usize> = match b.value(n, 0)? {
            Value::Act(a) => a.full(),
            Value::Const(c) => c.dims.clone(),
        };
        let out = if n.op == "Size" {
            Const::ints(vec![], vec![dims.iter().product::<usize>() as i64])
        } else {
            let r = dims.len() as i64;
            let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
            let start = clampi(n.int("start", 0)?);
            let end = clampi(n.int("end", r)?).max(start);
            let v: Vec<i64> = dims[start..end].iter().map(|&d| d as i64).collect();
            Const::ints(vec![v.len()], v)
        };
        b.bind(n, 0, Value::Const(Rc::new(out)))?;
        return Ok(true);
    }
    if n.op == "Constant" {
        let c = constant(n)?;
        b.bind(n, 0, Value::Const(Rc::new(c)))?;
        return Ok(true);
    }
    let mut inputs = Vec::new();
    for (i, name) in n.inputs.iter().enumerate() {
        if name.is_empty() {
            continue;
        }
        match b.value(n, i)? {
            Value::Const(c) => inputs.push((i, c.clone())),
            Value::Act(_) => return Ok(false),
        }
    }
    if inputs.is_empty() && n.op != "ConstantOfShape" {
        return Ok(false);
    }
    let get = |i: usize| {
        inputs
            .iter()
            .find(|(k, _)| *k == i)
            .map(|(_, c)| c.clone())
            .ok_or_else(|| n.err(format!("input {i} is missing")))
    };
    let out = match n.op.as_str() {
        "Identity" | "Dropout" => (*get(0)?).clone(),
        "Cast" => cast(n, &*get(0)?)?,
        "Gather" => gather(n, &*get(0)?, &*get(1)?)?,
        "Unsqueeze" | "Squeeze" => {
            let c = get(0)?;
            let axes = match n.ints("axes")? {
                Some(a) => Some(a),
                None => n.input(1).map(|_| get(1).map(|c| c.to_i64())).transpose()?,
            };
            let dims = squeeze_dims(n, &c.dims, axes)?;
            Const {
                dims,
                ..(*c).clone()
            }
        }
        "Reshape" => {
            let c = get(0)?;
            let dims = reshape_dims(n, &c.dims, &get(1)?.to_i64())?;
            Const {
                dims,
                ..(*c).clone()
            }
        }
        "Flatten" => {
            let c = get(0)?;
            let r = c.dims.len() as i64;
            let a = n.int("axis", 1)?;
            let a = (if a < 0 { a + r } else { a }).clamp(0, r) as usize;
            let outer: usize = c.dims[..a].iter().product();
            Const {
                dims: vec![outer, c.len() / outer.max(1)],
                ..(*c).clone()
            }
        }
        "Concat" => {
            let parts: Vec<Rc<Const>> = inputs.iter().map(|(_, c)| c.clone()).collect();
            concat(n, &parts)?
        }
        "Slice" => slice(n, &*get(0)?, &inputs)?,
        "ConstantOfShape" => {
            let shape = get(0)?.to_i64();
            let dims: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
            let count = count(n, &dims)?;
            let v = n
                .tensor("value")?
                .unwrap_or(Const::floats(vec![1], vec![0.0]));
            match v.data {
                Data::F(f) => Const::floats(dims, vec![f.first().copied().unwrap_or(0.0); count]),
                Data::I(i) => Const::ints(dims, vec![i.first().copied().unwrap_or(0); count]),
            }
        }
        "Add" | "Sub" | "Mul" | "Div" | "Mod" | "Pow" | "Max" | "Min" | "Equal" | "Less"
        | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And" | "Or" | "Xor" => {
            binary(n, &*get(0)?, &*get(1)?)?
        }
        "Neg" | "Sqrt" | "Reciprocal" | "Floor" | "Ceil" | "Abs" | "Not" => unary(n, &*get(0)?),
        "Where" => where_(n, &*get(0)?, &*get(1)?, &*get(2)?)?,
        "Expand" => expand(n, &*get(0)?, &*get(1)?)?,
        "Range" => range(n, &*get(0)?, &*get(1)?, &*get(2)?)?,
        "Transpose" => layout::transpose(n, &*get(0)?)?,
        "ScatterND" => layout::scatter_nd(n, &*get(0)?, &*get(1)?, &*get(2)?)?,
        _ => return Ok(false),
    };
    b.bind(n, 0, Value::Const(Rc::new(out)))?;
    Ok(true)
}

/// A `Constant` node's tensor, from whichever attribute holds it.
fn constant(n: &ONode) -> Result<Const> {
    if let Some(t) = n.tensor("value")? {
        return Ok(t);
    }
    if n.has("value_float") {
        return Ok(Const::floats(vec![], vec![n.float("value_float", 0.0)?]));
    }
    if let Some(v) = n.floats("value_floats")? {
        return Ok(Const::floats(vec![v.len()], v));
    }
    if n.has("value_int") {
        return Ok(Const::ints(vec![], vec![n.int("value_int", 0)?]));
    }
    if let Some(v) = n.ints("value_ints")? {
        return Ok(Const::ints(vec![v.len()], v));
    }
    Err(n.err("has no value this importer reads (sparse and string constants are not)"))
}

fn cast(n: &ONode, c: &Const) -> Result<Const> {
    // TensorProto.DataType: 1 float, 10 float16, 11 double, 16 bfloat16; the rest integers.
    let to = n.int("to", 1)?;
    Ok(if matches!(to, 1 | 10 | 11 | 16) {
        Const::floats(c.dims.clone(), c.to_f32())
    } else if to == 9 {
        Const::ints(
            c.dims.clone(),
            c.to_f32().iter().map(|&v| (v != 0.0) as i64).collect(),
        )
    } else {
        Const::ints(c.dims.clone(), c.to_i64())
    })
}

/// Most elements a folded constant may have: shape arithmetic needs few, and a corrupt
/// file must not make the importer allocate without bound.
const MAX_FOLDED: usize = 1 << 26;

/// `dims`' element count, if within [`MAX_FOLDED`].
fn count(n: &ONode, dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |p, &d| p.checked_mul(d))
        .filter(|&c| c <= MAX_FOLDED)
        .ok_or_else(|| {
            n.err(format!(
                "folds a constant of shape {dims:?}, which is too large"
            ))
        })
}

/// Row-major strides of `dims`.
fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

fn pick(c: &Const, idx: &[usize]) -> Data {
    match &c.data {
        Data::F(v) => Data::F(idx.iter().map(|&i| v[i]).collect()),
        Data::I(v) => Data::I(idx.iter().map(|&i| v[i]).collect()),
    }
}

fn gather(n: &ONode, data: &Const, indices: &Const) -> Result<Const> {
    let r = data.dims.len();
    if r == 0 {
        return Err(n.err("gathers from a scalar"));
    }
    let a = axis(n, n.int("axis", 0)?, r)?;
    let len = data.dims[a] as i64;
    let outer: usize = data.dims[..a].iter().product();
    let inner: usize = data.dims[a + 1..].iter().product();
    count(n, &[outer, indices.len(), inner])?;
    let mut idx = Vec::new();
    let ids = indices.to_i64();
    for o in 0..outer {
        for &i in &ids {
            let i = if i < 0 { i + len } else { i };
            if !(0..len).contains(&i) {
                return Err(n.err(format!("index {i} is out of range 0..{len}")));
            }
            for k in 0..inner {
                idx.push((o * len as usize + i as usize) * inner + k);
            }
        }
    }
    let mut dims = data.dims[..a].to_vec();
    dims.extend(&indices.dims);
    dims.extend(&data.dims[a + 1..]);
    Ok(Const {
        dims,
        data: pick(data, &idx),
    })
}

/// Dims after `Squeeze` (no `axes`: every 1) or `Unsqueeze`.
pub fn squeeze_dims(n: &ONode, dims: &[usize], axes: Option<Vec<i64>>) -> Result<Vec<usize>> {
    if n.op == "Squeeze" {
        let Some(axes) = axes else {
            return Ok(dims.iter().copied().filter(|&d| d != 1).collect());
        };
        let axes: Vec<usize> = axes
            .iter()
            .map(|&a| axis(n, a, dims.len()))
            .collect::<Result<_>>()?;
        Ok(dims
            .iter()
            .enumerate()
            .filter(|(i, _)| !axes.contains(i))
            .map(|(_, &d)| d)
            .collect())
    } else {
        let axes = axes.ok_or_else(|| n.err("has no axes"))?;
        let r = dims.len() + axes.len();
        let mut axes: Vec<usize> = axes.iter().map(|&a| axis(n, a, r)).collect::<Result<_>>()?;
        axes.sort_unstable();
        let mut out = dims.to_vec();
        for a in axes {
            out.insert(a.min(out.len()), 1);
        }
        Ok(out)
    }
}

/// A `Reshape` target resolved against `dims` (0 copies a dim unless `allowzero`, -1 infers).
pub fn reshape_dims(n: &ONode, dims: &[usize], target: &[i64]) -> Result<Vec<usize>> {
    let total: usize = dims.iter().product();
    let allowzero = n.int("allowzero", 0)? != 0;
    let mut out = Vec::with_capacity(target.len());
    let mut infer = None;
    for (i, &t) in target.iter().enumerate() {
        out.push(match t {
            0 if !allowzero => *dims
                .get(i)
                .ok_or_else(|| n.err(format!("target {target:?} copies a missing dim")))?,
            -1 if infer.is_none() => {
                infer = Some(i);
                1
            }
            t if t >= 0 => t as usize,
            _ => return Err(n.err(format!("invalid reshape target {target:?}"))),
        });
    }
    let known = out
        .iter()
        .try_fold(1usize, |p, &d| p.checked_mul(d))
        .ok_or_else(|| n.err(format!("invalid reshape target {target:?}")))?;
    if let Some(i) = infer {
        if known == 0 || !total.is_multiple_of(known) {
            return Err(n.err(format!("cannot reshape {dims:?} to {target:?}")));
        }
        out[i] = total / known;
    }
    if out.iter().try_fold(1usize, |p, &d| p.checked_mul(d)) != Some(total) {
        return Err(n.err(format!("cannot reshape {dims:?} to {target:?}")));
    }
    Ok(out)
}

fn concat(n: &ONode, parts: &[Rc<Const>]) -> Result<Const> {
    let r = parts[0].dims.len().max(1);
    let a = axis(n, n.int("axis", 0)?, r)?;
    let dims0 = if parts[0].dims.is_empty() {
        vec![1]
    } else {
        parts[0].dims.clone()
    };
    let outer: usize = dims0[..a].iter().product();
    let mut dims = dims0.clone();
    dims[a] = 0;
    let float = parts.iter().any(|p| matches!(p.data, Data::F(_)));
    let (mut f, mut i) = (Vec::new(), Vec::new());
    for o in 0..outer {
        for p in parts {
            let pd = if p.dims.is_empty() {
                vec![1]
            } else {
                p.dims.clone()
            };
            if pd.len() != dims0.len() {
                return Err(n.err("concatenates constants of different ranks"));
            }
            let block = p.len() / outer.max(1);
            if o == 0 {
                dims[a] += pd[a];
            }
            if float {
                f.extend_from_slice(&p.to_f32()[o * block..(o + 1) * block]);
            } else {
                i.extend_from_slice(&p.to_i64()[o * block..(o + 1) * block]);
            }
        }
    }
    if dims.iter().product::<usize>() != f.len().max(i.len()) {
        return Err(n.err("concatenates constants whose other dims differ"));
    }
    Ok(if float {
        Const::floats(dims, f)
    } else {
        Const::ints(dims, i)
    })
}

/// `Slice` of a constant (opset 10+ inputs, or opset < 10 attributes).
fn slice(n: &ONode, c: &Const, inputs: &[(usize, Rc<Const>)]) -> Result<Const> {
    let get = |i: usize| {
        Ok(inputs
            .iter()
            .find(|(k, _)| *k == i)
            .map(|(_, c)| c.to_i64()))
    };
    let r = c.dims.len();
    let (starts, ends, axes, steps) = slice_args(n, r, get)?;
    // Per axis: first index, step (negative walks backwards) and count, as ONNX clamps them.
    let mut ranges: Vec<(i64, i64, usize)> = c.dims.iter().map(|&d| (0, 1, d)).collect();
    for (k, &a) in axes.iter().enumerate() {
        let d = c.dims[a] as i64;
        let step = steps.as_ref().and_then(|s| s.get(k).copied()).unwrap_or(1);
        let wrap = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
        let start = *starts.get(k).unwrap_or(&0);
        ranges[a] = match step {
            0 => return Err(n.err("slices with step 0")),
            // An empty axis stays empty (and has no last index to start from).
            st if d == 0 => (0, st, 0),
            st if st > 0 => {
                let end = *ends.get(k).unwrap_or(&d);
                let (s, e) = (wrap(start).clamp(0, d), wrap(end).clamp(0, d));
                (s, st, ((e - s).max(0) as u64).div_ceil(st as u64) as usize)
            }
            st => {
                let end = *ends.get(k).unwrap_or(&i64::MIN);
                let (s, e) = (wrap(start).clamp(0, d - 1), wrap(end).clamp(-1, d - 1));
                let back = st.unsigned_abs();
                (s, st, ((s - e).max(0) as u64).div_ceil(back) as usize)
            }
        };
    }
    let dims: Vec<usize> = ranges.iter().map(|&(_, _, len)| len).collect();
    let st = strides(&c.dims);
    let count: usize = dims.iter().product();
    let mut idx = Vec::with_capacity(count);
    for flat in 0..count {
        let (mut rem, mut off) = (flat, 0);
        for d in (0..r).rev() {
            let i = rem % dims[d];
            rem /= dims[d];
            off += (ranges[d].0 + i as i64 * ranges[d].1) as usize * st[d];
        }
        idx.push(off);
    }
    Ok(Const {
        dims,
        data: pick(c, &idx),
    })
}

/// `Range(start, limit, delta)`: `start + k·delta` while short of `limit`.
fn range(n: &ONode, start: &Const, limit: &Const, delta: &Const) -> Result<Const> {
    let scalar = |c: &Const, what: &str| {
        c.scalar()
            .map(|_| ())
            .ok_or_else(|| n.err(format!("{what} is not a scalar")))
    };
    scalar(start, "start")?;
    scalar(limit, "limit")?;
    scalar(delta, "delta")?;
    let float = [start, limit, delta]
        .iter()
        .any(|c| matches!(c.data, Data::F(_)));
    if float {
        let (s, l, d) = (start.to_f32()[0], limit.to_f32()[0], delta.to_f32()[0]);
        let len = ((l - s) / d).ceil();
        if d == 0.0 || !len.is_finite() || len > MAX_FOLDED as f32 {
            return Err(n.err(format!(
                "range {s}..{l} by {d} is empty-stepped or too long"
            )));
        }
        let len = count(n, &[len.max(0.0) as usize])?;
        Ok(Const::floats(
            vec![len],
            (0..len).map(|k| s + k as f32 * d).collect(),
        ))
    } else {
        let (s, l, d) = (start.to_i64()[0], limit.to_i64()[0], delta.to_i64()[0]);
        let span = (l as i128 - s as i128).unsigned_abs();
        let len = match d {
            0 => return Err(n.err("range has a delta of 0")),
            d if (d > 0) == (l > s) => span.div_ceil(d.unsigned_abs() as u128),
            _ => 0,
        };
        let len = count(n, &[usize::try_from(len).unwrap_or(usize::MAX)])?;
        Ok(Const::ints(
            vec![len],
            (0..len as i64).map(|k| s + k * d).collect(),
        ))
    }
}
