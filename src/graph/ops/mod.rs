//! One module per graph op: its parameters, shape rule, lowering to kernels (forward and
//! backward) and f64 reference. The registry in [`super::op`] lists them.

pub mod activation;
pub mod adaptive_avg_pool;
pub mod add;
pub mod alias;
pub mod avg_pool;
pub mod batch_norm;
pub mod binary;
pub mod binary_const;
pub mod clip;
pub mod concat;
pub mod conv2d;
pub mod detach;
pub mod erf;
pub mod gather;
pub mod gelu;
pub mod group_norm;
pub mod hard_sigmoid;
pub mod hardswish;
pub mod input;
pub mod layer_norm;
pub mod layout;
pub mod linear;
pub mod matmul;
pub mod max_pool;
pub mod mul;
pub mod pad;
pub mod reduce_mean;
pub mod relu;
pub mod slice;
pub mod softmax;
pub mod transpose;

use super::node;

/// What every op module uses.
mod prelude {
    pub use crate::error::{Error, Result};
    pub use crate::gpu::Dispatch;
    pub use crate::graph::node::{
        Arity, Backward, Forward, Lower, Lowered, NodeOp, Reference, Samples,
    };
    pub use crate::graph::{Shape, elements};
    pub use crate::reference as r;
    pub use serde::{Deserialize, Serialize};
}

/// The gradient passed through unchanged (sums, aliases): added into input `k`'s gradient,
/// or written there when nothing was yet.
fn pass_through(b: &node::Backward<'_>) -> Vec<crate::gpu::Dispatch> {
    let len = b.rows * crate::graph::elements(b.shape);
    vec![
        b.ops
            .eltwise
            .add_into(b.ctx, len, b.accumulate, b.dy, b.dx, b.dummy()),
    ]
}

/// PyTorch's rule: pooling padding is at most half the kernel.
fn pool_padding(kernel: &[usize; 2], padding: &[usize; 2]) -> std::result::Result<(), String> {
    if padding[0] > kernel[0] / 2 || padding[1] > kernel[1] / 2 {
        return Err(format!(
            "padding {padding:?} is more than half the kernel {kernel:?}"
        ));
    }
    Ok(())
}

/// A pooling call over `rows` images (or gradient rows) from `input` to `output`.
fn pool_shape(
    rows: usize,
    input: crate::graph::Shape,
    output: crate::graph::Shape,
) -> crate::ops::pool::PoolShape {
    crate::ops::pool::PoolShape {
        planes: rows * output[0],
        channels: output[0],
        input: [input[1], input[2]],
        output: [output[1], output[2]],
    }
}

/// A windowed pool's output for `input`, or why it is empty.
fn pooled(
    window: &crate::ops::pool::PoolWindow,
    input: crate::graph::Shape,
) -> std::result::Result<crate::graph::Shape, String> {
    let [c, h, w] = input;
    let [oh, ow] = window.out_size([h, w]);
    if oh == 0 || ow == 0 {
        return Err(format!("input {h}x{w} is too small to pool"));
    }
    Ok([c, oh, ow])
}
