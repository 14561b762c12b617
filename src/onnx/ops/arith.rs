//! Add, Sub, Mul and Div with numpy broadcasting: of two activations (the engine's own Add
//! and Mul where shapes allow, as in residuals and squeeze-excitation gates), or of an
//! activation and a constant (layer scales, normalisation constants, biases).

use super::super::builder::{Act, Builder, Value, pad3};
use super::super::node::ONode;
use super::super::tensor::Const;
use crate::error::Result;
use crate::graph::{Add, Binary, BinaryConst, BinaryKind, Mul, Op};

fn kind(n: &ONode) -> Result<BinaryKind> {
    Ok(match n.op.as_str() {
        "Add" => BinaryKind::Add,
        "Sub" => BinaryKind::Sub,
        "Mul" => BinaryKind::Mul,
        "Div" => BinaryKind::Div,
        other => return Err(n.err(format!("`{other}` is not arithmetic"))),
    })
}

pub fn arith(b: &mut Builder, n: &ONode) -> Result<()> {
    let kind = kind(n)?;
    match (b.value(n, 0)?.clone(), b.value(n, 1)?.clone()) {
        (Value::Act(x), Value::Act(y)) if x.plain() && y.plain() => {
            two_activations(b, n, kind, x, y)
        }
        (Value::Act(x), Value::Act(y)) => same_shape(b, n, kind, x, y),
        (Value::Act(x), Value::Const(c)) if kind == BinaryKind::Add && bias(b, n, &x, &c)? => {
            Ok(())
        }
        (Value::Const(c), Value::Act(x)) if kind == BinaryKind::Add && bias(b, n, &x, &c)? => {
            Ok(())
        }
        (Value::Act(x), Value::Const(c)) if x.plain() => with_constant(b, n, kind, x, &c, false),
        (Value::Const(c), Value::Act(x)) if x.plain() => with_constant(b, n, kind, x, &c, true),
        (Value::Act(x), Value::Const(c)) => coalesced(b, n, kind, x, &c, false),
        (Value::Const(c), Value::Act(x)) => coalesced(b, n, kind, x, &c, true),
        (Value::Const(_), Value::Const(_)) => Err(n.err("constant arithmetic was not folded")),
    }
}

fn two_activations(b: &mut Builder, n: &ONode, kind: BinaryKind, x: Act, y: Act) -> Result<()> {
    if x.rank() != y.rank() {
        return Err(n.err(format!(
            "combines per-image dims {:?} and {:?} of different ranks",
            x.dims, y.dims
        )));
    }
    let mut dims = Vec::with_capacity(x.dims.len());
    for (&p, &q) in x.dims.iter().zip(&y.dims) {
        dims.push(match (p, q) {
            _ if p == q => p,
            (1, q) => q,
            (p, 1) => p,
            _ => {
                return Err(n.err(format!("cannot broadcast {:?} with {:?}", x.dims, y.dims)));
            }
        });
    }
    let nhwc = x.nhwc || y.nhwc;
    let (sx, sy) = (b.shape(&x), b.shape(&y));
    let gate = |s: [usize; 3], full: [usize; 3]| s == [full[0], 1, 1] && s != full;
    let (op, inputs) = match kind {
        BinaryKind::Add if sx == sy => (Op::Add(Add), [x.node, y.node]),
        BinaryKind::Mul if sx == sy || gate(sy, sx) => (Op::Mul(Mul), [x.node, y.node]),
        BinaryKind::Mul if gate(sx, sy) => (Op::Mul(Mul), [y.node, x.node]),
        _ => (Op::Binary(Binary { kind }), [x.node, y.node]),
    };
    b.emit_layout(n, op, &inputs, dims, nhwc)?;
    Ok(())
}

/// `x ∘ c` (or `c ∘ x` when `reversed`), `c` broadcast along `x`'s per-image dims.
fn with_constant(
    b: &mut Builder,
    n: &ONode,
    kind: BinaryKind,
    x: Act,
    c: &Const,
    reversed: bool,
) -> Result<()> {
    let r = x.rank();
    if c.dims.len() > r {
        return Err(n.err(format!(
            "constant of shape {:?} has a higher rank than the activation",
            c.dims
        )));
    }
    let mut aligned = vec![1; r - c.dims.len()];
    aligned.extend_from_slice(&c.dims);
    if aligned[0] != 1 {
        return Err(n.err(format!(
            "constant of shape {:?} varies along the batch",
            c.dims
        )));
    }
    let per_image = &aligned[1..];
    for (&d, &xd) in per_image.iter().zip(&x.dims) {
        if d != 1 && d != xd {
            return Err(n.err(format!(
                "constant of shape {:?} does not broadcast onto per-image dims {:?}",
                c.dims, x.dims
            )));
        }
    }
    let shape = pad3(per_image);
    let base = format!("{}.constant", n.outputs[0]);
    let tensor = b.tensor(&base, shape.to_vec(), c.to_f32());
    let op = Op::BinaryConst(BinaryConst {
        kind,
        tensor,
        shape,
        reversed,
    });
    b.emit_layout(n, op, &[x.node], x.dims.clone(), x.nhwc)?;
    Ok(())
}

/// Two activations of one ONNX shape that is not plain (see [`Act::plain`]).
fn same_shape(b: &mut Builder, n: &ONode, kind: BinaryKind, x: Act, y: Act) -> Result<()> {
    if x.full() != y.full() {
        return Err(n.err(format!(
            "combines ONNX shapes {:?} and {:?} at batch 1; broadcasting is supported only \
             with the batch on axis 0",
            x.full(),
            y.full()
        )));
    }
    let op = match kind {
        BinaryKind::Add => Op::Add(Add),
        BinaryKind::Mul => Op::Mul(Mul),
        _ => Op::Binary(Binary { kind }),
    };
    b.emit_full(n, op, &[x.node, y.node], x.full(), false)?;
    Ok(())
}

/// `x ∘ c` for an `x` that is not plain: axes of length 1 dropped and neighbours that `c`
/// treats alike (all broadcast, or all its own) merged, so that at most three remain.
fn coalesced(
    b: &mut Builder,
    n: &ONode,
    kind: BinaryKind,
    x: Act,
    c: &Const,
    reversed: bool,
) -> Result<()> {
    let full = x.full();
    if c.dims.len() > full.len() {
        return Err(n.err(format!(
            "constant of shape {:?} has a higher rank than the activation",
            c.dims
        )));
    }
    let mut aligned = vec![1; full.len() - c.dims.len()];
    aligned.extend_from_slice(&c.dims);
    // Per merged axis: its length in x, and whether c varies along it.
    let mut groups: Vec<(usize, bool)> = Vec::new();
    for (&d, &cd) in full.iter().zip(&aligned) {
        if cd != 1 && cd != d {
            return Err(n.err(format!(
                "constant of shape {:?} does not broadcast onto ONNX shape {full:?}",
                c.dims
            )));
        }
        if d == 1 {
            continue;
        }
        let varies = cd != 1;
        match groups.last_mut() {
            Some((len, v)) if *v == varies => *len *= d,
            _ => groups.push((d, varies)),
        }
    }
    if groups.len() > 3 {
        return Err(n.err(format!(
            "constant of shape {:?} broadcasts onto ONNX shape {full:?} in more than 3 runs",
            c.dims
        )));
    }
    let (mut xs, mut cs) = ([1; 3], [1; 3]);
    for (i, &(len, varies)) in groups.iter().enumerate() {
        xs[i] = len;
        cs[i] = if varies { len } else { 1 };
    }
    let xn = b.view(n, &x, xs)?;
    let base = format!("{}.constant", n.outputs[0]);
    let tensor = b.tensor(&base, cs.to_vec(), c.to_f32());
    let op = Op::BinaryConst(BinaryConst {
        kind,
        tensor,
        shape: cs,
        reversed,
    });
    b.emit_full(n, op, &[xn], full, false)?;
    Ok(())
}

/// `MatMul` then `Add` of a vector, as exporters write a Linear layer: the vector becomes
/// the Linear's bias (one pass less) where nothing else reads the product, which stops being
/// a layer of its own. `false` where the pattern does not hold.
fn bias(b: &mut Builder, n: &ONode, x: &Act, c: &Const) -> Result<bool> {
    let product = n
        .inputs
        .iter()
        .find(|v| matches!(b.values.get(v.as_str()), Some(Value::Act(a)) if a == x))
        .cloned();
    let Some(product) = product.filter(|v| b.uses.get(v) == Some(&1)) else {
        return Ok(false);
    };
    // The Linear, last or followed only by its own free reshape.
    let last = b.nodes.len() - 1;
    let linear = match &b.nodes[last].op {
        Op::Reshape(_) if x.node == last && b.nodes[last].inputs == [last - 1] => last - 1,
        _ if x.node == last => last,
        _ => return Ok(false),
    };
    let m = match &b.nodes[linear].op {
        Op::Linear(l) if l.bias.is_none() => l.out_features,
        _ => return Ok(false),
    };
    if x.full().last() != Some(&m) || c.len() != m || c.dims.iter().rev().skip(1).any(|&d| d != 1) {
        return Ok(false);
    }
    let name = b.tensor(&format!("{}.bias", n.outputs[0]), vec![m], c.to_f32());
    if let Op::Linear(l) = &mut b.nodes[linear].op {
        l.bias = Some(name);
    }
    b.values.remove(&product);
    b.bind(n, 0, Value::Act(x.clone()))?;
    Ok(true)
}
