//! Transpose and ScatterND of constants (Swin's shifted-window attention masks).

use super::super::node::{ONode, perm};
use super::super::tensor::{Const, Data};
use super::{count, pick, strides};
use crate::error::Result;

/// `Transpose`: output dim `i` is input dim `perm[i]` (reversed when `perm` is absent).
pub fn transpose(n: &ONode, c: &Const) -> Result<Const> {
    let r = c.dims.len();
    let perm = perm(n, r)?;
    let dims: Vec<usize> = perm.iter().map(|&p| c.dims[p]).collect();
    let st = strides(&c.dims);
    let count: usize = dims.iter().product();
    let mut idx = Vec::with_capacity(count);
    for flat in 0..count {
        let (mut rem, mut off) = (flat, 0);
        for d in (0..r).rev() {
            off += (rem % dims[d]) * st[perm[d]];
            rem /= dims[d];
        }
        idx.push(off);
    }
    Ok(Const {
        dims,
        data: pick(c, &idx),
    })
}

/// `ScatterND(data, indices, updates)`: each index tuple (the last axis of `indices`)
/// addresses a slice of `data` that the matching slice of `updates` overwrites or, with
/// `reduction`, combines into.
pub fn scatter_nd(n: &ONode, data: &Const, indices: &Const, updates: &Const) -> Result<Const> {
    let Some((&k, outer)) = indices.dims.split_last() else {
        return Err(n.err("indices is a scalar"));
    };
    if k > data.dims.len() {
        return Err(n.err(format!(
            "index tuples of {k} address a rank-{} tensor",
            data.dims.len()
        )));
    }
    let tail: Vec<usize> = data.dims[k..].to_vec();
    let slice: usize = tail.iter().product();
    let want: Vec<usize> = outer.iter().copied().chain(tail).collect();
    if updates.dims != want {
        return Err(n.err(format!(
            "updates have shape {:?}, expected {want:?}",
            updates.dims
        )));
    }
    let reduction = n.string("reduction", "none")?;
    let st = strides(&data.dims);
    let ids = indices.to_i64();
    let updates_count = count(n, outer)?;
    // Empty index tuples address the whole tensor (each update replaces all of it).
    let tuples: Vec<&[i64]> = match k {
        0 => vec![&[]; updates_count],
        _ => ids.chunks(k).take(updates_count).collect(),
    };
    let offsets = tuples
        .into_iter()
        .map(|t| {
            t.iter().enumerate().try_fold(0usize, |off, (a, &i)| {
                let d = data.dims[a] as i64;
                let j = if i < 0 { i + d } else { i };
                if !(0..d).contains(&j) {
                    return Err(n.err(format!("index {i} is out of range for a dim of {d}")));
                }
                Ok(off + j as usize * st[a])
            })
        })
        .collect::<Result<Vec<usize>>>()?;
    macro_rules! scatter {
        ($out:expr, $upd:expr) => {{
            let (mut out, upd) = ($out, $upd);
            for (u, &off) in offsets.iter().enumerate() {
                for e in 0..slice {
                    let (o, v) = (&mut out[off + e], upd[u * slice + e]);
                    *o = match reduction.as_str() {
                        "none" => v,
                        "add" => *o + v,
                        "mul" => *o * v,
                        "max" => {
                            if v > *o {
                                v
                            } else {
                                *o
                            }
                        }
                        "min" => {
                            if v < *o {
                                v
                            } else {
                                *o
                            }
                        }
                        other => return Err(n.err(format!("unknown reduction `{other}`"))),
                    };
                }
            }
            out
        }};
    }
    let data_out = match &data.data {
        Data::F(f) => Data::F(scatter!(f.clone(), updates.to_f32())),
        Data::I(i) => Data::I(scatter!(i.clone(), updates.to_i64())),
    };
    Ok(Const {
        dims: data.dims.clone(),
        data: data_out,
    })
}
