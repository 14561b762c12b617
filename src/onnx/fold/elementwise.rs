//! Element-wise folding with numpy broadcasting: arithmetic, comparisons and logic (bools
//! are integer constants of 0 and 1, as `Cast` to BOOL makes them), `Where`, `Expand`.

use super::super::node::ONode;
use super::super::tensor::{Const, Data};
use super::{count, strides};
use crate::error::Result;

/// Numpy broadcasting of two constants' dims.
pub fn broadcast(n: &ONode, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let pad = |d: &[usize]| -> Vec<usize> {
        let mut v = vec![1; r - d.len()];
        v.extend_from_slice(d);
        v
    };
    let (a, b) = (pad(a), pad(b));
    a.iter()
        .zip(&b)
        .map(|(&x, &y)| match (x, y) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(n.err(format!("cannot broadcast {a:?} with {b:?}"))),
        })
        .collect()
}

/// Index into `dims` (right-aligned to `out`) of each element of `out`.
fn broadcast_index(dims: &[usize], out: &[usize]) -> Vec<usize> {
    let r = out.len();
    let mut full = vec![1; r - dims.len()];
    full.extend_from_slice(dims);
    let st = strides(&full);
    let count: usize = out.iter().product();
    (0..count)
        .map(|flat| {
            let (mut rem, mut off) = (flat, 0);
            for d in (0..r).rev() {
                let i = rem % out[d];
                rem /= out[d];
                if full[d] != 1 {
                    off += i * st[d];
                }
            }
            off
        })
        .collect()
}

fn is_float(c: &Const) -> bool {
    matches!(c.data, Data::F(_))
}

/// `a ∘ b` for the arithmetic (`Add`, `Sub`, `Mul`, `Div`, `Mod`, `Pow`, `Max`, `Min`),
/// comparison (`Equal`, `Less`, `Greater`, `LessOrEqual`, `GreaterOrEqual`: bools) and
/// logic (`And`, `Or`, `Xor`) ops.
pub fn binary(n: &ONode, a: &Const, b: &Const) -> Result<Const> {
    let dims = broadcast(n, &a.dims, &b.dims)?;
    count(n, &dims)?;
    let (ia, ib) = (
        broadcast_index(&a.dims, &dims),
        broadcast_index(&b.dims, &dims),
    );
    let op = n.op.as_str();
    let compare = |o: std::cmp::Ordering| -> Option<bool> {
        use std::cmp::Ordering::*;
        Some(match op {
            "Equal" => o == Equal,
            "Less" => o == Less,
            "Greater" => o == Greater,
            "LessOrEqual" => o != Greater,
            "GreaterOrEqual" => o != Less,
            _ => return None,
        })
    };
    if matches!(op, "And" | "Or" | "Xor") {
        let (x, y) = (a.to_i64(), b.to_i64());
        let v = ia
            .iter()
            .zip(&ib)
            .map(|(&i, &j)| {
                let (p, q) = (x[i] != 0, y[j] != 0);
                (match op {
                    "And" => p && q,
                    "Or" => p || q,
                    _ => p != q,
                }) as i64
            })
            .collect();
        return Ok(Const::ints(dims, v));
    }
    // Pow's result has its base's type; the others promote to float if either is.
    let float = if op == "Pow" {
        is_float(a)
    } else {
        is_float(a) || is_float(b)
    };
    if op == "Pow" && !float {
        let (x, y) = (a.to_f32(), b.to_f32());
        let v = ia
            .iter()
            .zip(&ib)
            .map(|(&i, &j)| (x[i] as f64).powf(y[j] as f64) as i64)
            .collect();
        return Ok(Const::ints(dims, v));
    }
    let fmod = n.int("fmod", 0)? != 0;
    let is_compare = compare(std::cmp::Ordering::Equal).is_some();
    if float {
        let (x, y) = (a.to_f32(), b.to_f32());
        let pairs = ia.iter().zip(&ib).map(|(&i, &j)| (x[i], y[j]));
        if is_compare {
            // A NaN compares false.
            let v = pairs
                .map(|(p, q)| p.partial_cmp(&q).and_then(compare).unwrap_or(false) as i64)
                .collect();
            return Ok(Const::ints(dims, v));
        }
        let v = pairs
            .map(|(p, q)| match op {
                "Add" => p + q,
                "Sub" => p - q,
                "Mul" => p * q,
                "Div" => p / q,
                "Pow" => p.powf(q),
                // fmod=1 (C's fmod, the only mode ONNX allows for floats) is Rust's `%`.
                "Mod" if fmod => p % q,
                "Mod" => p - q * (p / q).floor(),
                "Max" => p.max(q),
                _ => p.min(q),
            })
            .collect();
        return Ok(Const::floats(dims, v));
    }
    let (x, y) = (a.to_i64(), b.to_i64());
    let mut v = Vec::with_capacity(ia.len());
    for (&i, &j) in ia.iter().zip(&ib) {
        let (p, q) = (x[i], y[j]);
        if let Some(c) = compare(p.cmp(&q)) {
            v.push(c as i64);
            continue;
        }
        let by_zero = || n.err(format!("divides an integer constant by zero ({op})"));
        v.push(match op {
            "Add" => p.wrapping_add(q),
            "Sub" => p.wrapping_sub(q),
            "Mul" => p.wrapping_mul(q),
            "Div" => p.checked_div(q).ok_or_else(by_zero)?,
            // fmod=1: the sign of the dividend (C); fmod=0: of the divisor (Python).
            "Mod" if fmod => p.checked_rem(q).ok_or_else(by_zero)?,
            "Mod" => {
                let r = p.checked_rem(q).ok_or_else(by_zero)?;
                if r != 0 && (r < 0) != (q < 0) {
                    r + q
                } else {
                    r
                }
            }
            "Max" => p.max(q),
            _ => p.min(q),
        });
    }
    Ok(Const::ints(dims, v))
}

pub fn unary(n: &ONode, c: &Const) -> Const {
    match &c.data {
        _ if n.op == "Not" => Const::ints(
            c.dims.clone(),
            c.to_i64().iter().map(|&x| (x == 0) as i64).collect(),
        ),
        Data::I(v) if matches!(n.op.as_str(), "Neg" | "Abs" | "Floor" | "Ceil") => {
            let f = |x: i64| {
                if n.op == "Neg" {
                    x.wrapping_neg()
                } else if n.op == "Abs" {
                    x.wrapping_abs()
                } else {
                    x
                }
            };
            Const::ints(c.dims.clone(), v.iter().map(|&x| f(x)).collect())
        }
        _ => {
            let f = |x: f32| match n.op.as_str() {
                "Neg" => -x,
                "Sqrt" => x.sqrt(),
                "Reciprocal" => 1.0 / x,
                "Floor" => x.floor(),
                "Ceil" => x.ceil(),
                _ => x.abs(),
            };
            Const::floats(c.dims.clone(), c.to_f32().iter().map(|&x| f(x)).collect())
        }
    }
}

/// `Where(cond, x, y)`: `x` where `cond` is non-zero, else `y`, all three broadcast.
pub fn where_(n: &ONode, cond: &Const, x: &Const, y: &Const) -> Result<Const> {
    let dims = broadcast(n, &broadcast(n, &cond.dims, &x.dims)?, &y.dims)?;
    count(n, &dims)?;
    let ic = broadcast_index(&cond.dims, &dims);
    let (ix, iy) = (
        broadcast_index(&x.dims, &dims),
        broadcast_index(&y.dims, &dims),
    );
    let c = cond.to_i64();
    let take = |k: usize| c[ic[k]] != 0;
    Ok(if is_float(x) || is_float(y) {
        let (x, y) = (x.to_f32(), y.to_f32());
        let v = (0..ic.len())
            .map(|k| if take(k) { x[ix[k]] } else { y[iy[k]] })
            .collect();
        Const::floats(dims, v)
    } else {
        let (x, y) = (x.to_i64(), y.to_i64());
        let v = (0..ic.len())
            .map(|k| if take(k) { x[ix[k]] } else { y[iy[k]] })
            .collect();
        Const::ints(dims, v)
    })
}

/// `Expand(x, shape)`: `x` broadcast with `shape` (numpy rules: a 1 in `shape` keeps
/// `x`'s dim).
pub fn expand(n: &ONode, x: &Const, shape: &Const) -> Result<Const> {
    let target: Vec<usize> = shape
        .to_i64()
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| n.err(format!("expands to a negative dim {d}"))))
        .collect::<Result<_>>()?;
    let dims = broadcast(n, &x.dims, &target)?;
    count(n, &dims)?;
    let idx = broadcast_index(&x.dims, &dims);
    Ok(Const {
        dims,
        data: super::pick(x, &idx),
    })
}
