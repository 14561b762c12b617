//! Conv, MaxPool, AveragePool, GlobalAveragePool and GlobalMaxPool (NCHW, 2-D).

use super::super::builder::{Act, Builder};
use super::super::node::ONode;
use crate::error::Result;
use crate::graph::{AdaptiveAvgPool2d, AvgPool2d, Conv2d, MaxPool2d, Op, Pad};

/// A 4-D activation's `[C, H, W]`.
fn nchw(n: &ONode, x: &Act) -> Result<[usize; 3]> {
    match x.dims[..] {
        [c, h, w] if !x.nhwc => Ok([c, h, w]),
        _ => Err(n.err(format!(
            "expects a 4-D NCHW input, gets per-image dims {:?}{}",
            x.dims,
            if x.nhwc { " (channels-last)" } else { "" }
        ))),
    }
}

/// A 2-element attribute (`strides`, `dilations`), default `[1, 1]`.
fn pair(n: &ONode, name: &str) -> Result<[usize; 2]> {
    match n.ints(name)?.as_deref() {
        None => Ok([1, 1]),
        Some(&[a, b]) if a >= 1 && b >= 1 => Ok([a as usize, b as usize]),
        Some(v) => Err(n.err(format!("`{name}` {v:?} is not two positive values"))),
    }
}

/// `(begin, end)` padding from `pads` or `auto_pad`, for a window of effective size
/// `dilation * (kernel - 1) + 1`.
pub fn pads(
    n: &ONode,
    input: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
) -> Result<([usize; 2], [usize; 2])> {
    match n.string("auto_pad", "NOTSET")?.as_str() {
        "NOTSET" => match n.ints("pads")?.as_deref() {
            None => Ok(([0, 0], [0, 0])),
            Some(&[t, l, b, r]) if t >= 0 && l >= 0 && b >= 0 && r >= 0 => {
                Ok(([t as usize, l as usize], [b as usize, r as usize]))
            }
            Some(v) => Err(n.err(format!("`pads` {v:?} is not four non-negative values"))),
        },
        "VALID" => Ok(([0, 0], [0, 0])),
        mode @ ("SAME_UPPER" | "SAME_LOWER") => {
            let mut begin = [0; 2];
            let mut end = [0; 2];
            for d in 0..2 {
                let out = input[d].div_ceil(stride[d]);
                let eff = dilation[d].saturating_mul(kernel[d] - 1).saturating_add(1);
                let total = ((out - 1).saturating_mul(stride[d]).saturating_add(eff))
                    .saturating_sub(input[d]);
                let small = total / 2;
                (begin[d], end[d]) = if mode == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
            }
            Ok((begin, end))
        }
        other => Err(n.err(format!("unknown auto_pad `{other}`"))),
    }
}

pub fn conv(b: &mut Builder, n: &ONode) -> Result<()> {
    let x = b.act(n, 0)?;
    let [c, h, w] = nchw(n, &x)?;
    let wt = b.konst(n, 1)?;
    let [m, cg, kh, kw] = wt.dims[..] else {
        return Err(n.err(format!(
            "weight has shape {:?}; only 2-D convolutions are supported",
            wt.dims
        )));
    };
    let groups = n.int("group", 1)?;
    if kh == 0 || kw == 0 || m == 0 {
        return Err(n.err(format!("weight has an empty shape {:?}", wt.dims)));
    }
    if groups < 1 {
        return Err(n.err(format!("group {groups} is not positive")));
    }
    let groups = groups as usize;
    if cg.checked_mul(groups) != Some(c) {
        return Err(n.err(format!(
            "weight {:?} with {groups} groups does not fit {c} input channels",
            wt.dims
        )));
    }
    if let Some(k) = n.ints("kernel_shape")?
        && k != [kh as i64, kw as i64]
    {
        return Err(n.err(format!(
            "kernel_shape {k:?} contradicts the weight {:?}",
            wt.dims
        )));
    }
    let (stride, dilation) = (pair(n, "strides")?, pair(n, "dilations")?);
    let (begin, end) = pads(n, [h, w], [kh, kw], stride, dilation)?;
    let base = n.outputs.first().cloned().unwrap_or_else(|| n.name.clone());
    let weight = b.tensor(&format!("{base}.weight"), wt.dims.clone(), wt.to_f32());
    let bias = match b.opt_konst(n, 2)? {
        Some(bc) if bc.len() == m => Some(b.tensor(&format!("{base}.bias"), vec![m], bc.to_f32())),
        Some(bc) => return Err(n.err(format!("bias has {} values for {m} outputs", bc.len()))),
        None => None,
    };
    let op = Op::Conv2d(Conv2d {
        weight,
        bias,
        in_channels: c,
        out_channels: m,
        kernel: [kh, kw],
        stride,
        padding: begin,
        dilation,
        groups,
        padding_end: (end != begin).then_some(end),
    });
    emit_spatial(b, n, op, x)
}

/// Appends a spatial op on `x` whose output is again NCHW.
fn emit_spatial(b: &mut Builder, n: &ONode, op: Op, x: Act) -> Result<()> {
    let shape = op.node().shape(&[b.shape(&x)]).map_err(|m| n.err(m))?;
    b.emit(n, op, &[x.node], shape.to_vec())?;
    Ok(())
}

pub fn pool(b: &mut Builder, n: &ONode) -> Result<()> {
    let x = b.act(n, 0)?;
    let [_, h, w] = nchw(n, &x)?;
    if n.op.starts_with("Global") {
        let op = if n.op == "GlobalAveragePool" {
            Op::AdaptiveAvgPool2d(AdaptiveAvgPool2d { output: [1, 1] })
        } else {
            Op::MaxPool2d(MaxPool2d {
                kernel: [h, w],
                stride: [1, 1],
                padding: [0, 0],
                dilation: [1, 1],
                ceil_mode: false,
            })
        };
        return emit_spatial(b, n, op, x);
    }
    let kernel = match n.ints("kernel_shape")?.as_deref() {
        Some(&[a, c]) if a >= 1 && c >= 1 => [a as usize, c as usize],
        other => {
            return Err(n.err(format!(
                "kernel_shape {other:?}: only 2-D pooling is supported"
            )));
        }
    };
    let (stride, dilation) = (pair(n, "strides")?, pair(n, "dilations")?);
    let ceil_mode = n.int("ceil_mode", 0)? != 0;
    let (begin, end) = pads(n, [h, w], kernel, stride, dilation)?;
    let max = n.op == "MaxPool";
    let include = n.int("count_include_pad", 0)? != 0;
    // PyTorch-style symmetric padding of at most half the window; anything else pads first
    // (max: with the lowest float, which never wins; average: zeros, counted).
    let symmetric = begin == end && (0..2).all(|d| begin[d] <= kernel[d] / 2);
    let (x, padding) = if symmetric || begin == [0, 0] && end == [0, 0] {
        (x, begin)
    } else if max || include {
        let value = if max { f32::MIN } else { 0.0 };
        let op = Op::Pad(Pad {
            begin: [0, begin[0], begin[1]],
            end: [0, end[0], end[1]],
            value,
        });
        let base = format!("{}:pad", n.outputs[0]);
        let node = b.push(n, &base, op, &[x.node])?;
        let dims = b.shapes[node].to_vec();
        (b.act_of(n, node, dims, false)?, [0, 0])
    } else {
        return Err(n.err(format!(
            "average pooling with asymmetric pads {begin:?}/{end:?} that are not counted \
             (count_include_pad 0) is not supported"
        )));
    };
    let op = if max {
        Op::MaxPool2d(MaxPool2d {
            kernel,
            stride,
            padding,
            dilation,
            ceil_mode,
        })
    } else {
        if dilation != [1, 1] {
            return Err(n.err("dilated average pooling is not supported"));
        }
        Op::AvgPool2d(AvgPool2d {
            kernel,
            stride,
            padding,
            ceil_mode,
            count_include_pad: include,
        })
    };
    emit_spatial(b, n, op, x)
}
