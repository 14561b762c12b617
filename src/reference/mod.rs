//! f64 CPU references of every kernel, used by the tests.
//!
//! One module per shader family, mirroring [`crate::ops`]. Everything is a plain loop over
//! NCHW slices with PyTorch (and, for image-space ops, OpenCV / pytorch-grad-cam) semantics;
//! inputs are `&[f64]`, outputs `Vec<f64>`. Gradient tensors may hold `rep` rows per forward
//! image (several targets sharing one forward pass): row `r` reads forward image `r / rep`.

pub mod attention;
pub mod broadcast;
pub mod cam;
pub mod conv;
pub mod eigen;
pub mod eltwise;
pub mod eval;
pub mod image;
pub mod layout;
pub mod linear;
pub mod norm;
pub mod perturb;
pub mod pool;
pub mod shapley;
pub mod smoothgrad;
pub mod targets;

pub use broadcast::{binary, binary_backward};
pub use cam::{alpha, gradcam, minmax_normalize, weighted_sum};
pub use conv::{conv2d_backward_data, conv2d_forward};
pub use eltwise::{
    add, affine_backward, affine_forward, concat, concat_backward, mul, mul_reduce, relu,
    relu_backward, relu6, relu6_backward, sigmoid, sigmoid_backward, silu, silu_backward,
};
pub use image::{jet, overlay, preprocess, upsample_bilinear};
pub use linear::{linear_backward, linear_forward};
pub use norm::{norm_backward, norm_forward};
pub use pool::{
    adaptive_avgpool_backward, adaptive_avgpool_forward, avgpool_backward, avgpool_forward,
    maxpool_backward, maxpool_forward,
};
pub use targets::{score, score_grad, seed_scores, topk, topk_scores};
