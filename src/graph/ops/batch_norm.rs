//! Eval-mode BatchNorm: `x * scale + shift` per channel. The plan folds it into the conv
//! before it where it can; otherwise it is an affine step of its own.

use super::prelude::*;
use crate::gpu::buffer;
use crate::weights::Weights;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BatchNorm2d {
    /// Tensors are `{prefix}.weight`, `.bias`, `.running_mean`, `.running_var`.
    pub prefix: String,
    pub channels: usize,
    pub eps: f64,
}

impl BatchNorm2d {
    /// `(scale, shift)` per channel, in f64.
    pub fn affine(&self, weights: &Weights) -> Result<(Vec<f64>, Vec<f64>)> {
        let get = |t: &str| -> Result<Vec<f64>> {
            Ok(weights
                .get(&format!("{}.{t}", self.prefix))?
                .data
                .iter()
                .map(|&v| v as f64)
                .collect())
        };
        let (g, b, m, v) = (
            get("weight")?,
            get("bias")?,
            get("running_mean")?,
            get("running_var")?,
        );
        let scale: Vec<f64> = g
            .iter()
            .zip(&v)
            .map(|(g, v)| g / (v + self.eps).sqrt())
            .collect();
        let shift = b
            .iter()
            .zip(&m)
            .zip(&scale)
            .map(|((b, m), s)| b - m * s)
            .collect();
        Ok((scale, shift))
    }
}

impl NodeOp for BatchNorm2d {
    fn check(&self) -> std::result::Result<(), String> {
        crate::graph::check_dim("channels", self.channels, 1)?;
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(format!("eps {} must be finite and non-negative", self.eps));
        }
        Ok(())
    }
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        let s = inputs[0];
        if s[0] != self.channels {
            return Err(format!("expects {} channels, gets {}", self.channels, s[0]));
        }
        Ok(s)
    }
    fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        ["weight", "bias", "running_mean", "running_var"]
            .iter()
            .map(|t| (format!("{}.{t}", self.prefix), vec![self.channels]))
            .collect()
    }
    fn stores_relu(&self) -> bool {
        true
    }
    fn lower(&self, cx: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        let (scale, shift) = self.affine(cx.weights)?;
        let ss: Vec<f32> = scale.iter().chain(&shift).map(|&v| v as f32).collect();
        Ok(Box::new(Affine {
            scale_shift: buffer::storage_f32(cx.ctx, cx.name, &ss),
        }))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        let (scale, shift) = self.affine(r.weights)?;
        Ok(r::affine_forward(
            r.inputs[0],
            &scale,
            &shift,
            r.shape[1] * r.shape[2],
        ))
    }
    fn reference_backward(&self, r: &Reference<'_>, _: usize, dy: &[f64]) -> Result<Vec<f64>> {
        let (scale, _) = self.affine(r.weights)?;
        Ok(r::affine_backward(dy, &scale, r.shape[1] * r.shape[2]))
    }
}

impl Samples for BatchNorm2d {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        let bn = BatchNorm2d {
            prefix: "bn".into(),
            channels: 5,
            eps: 1e-5,
        };
        vec![(bn, vec![[5, 3, 7]])]
    }
}

/// Per-channel `x * scale + shift` (an unfolded BatchNorm).
pub struct Affine {
    /// `[scale (C), shift (C)]`.
    pub scale_shift: wgpu::Buffer,
}

impl Lowered for Affine {
    fn forward(&self, f: &Forward<'_>) -> Vec<Dispatch> {
        let [c, oh, ow] = f.shape;
        vec![f.ops.eltwise.affine_forward(
            f.ctx,
            f.n * c * oh * ow,
            c,
            oh * ow,
            f.relu,
            f.x(0),
            &self.scale_shift,
            f.output,
        )]
    }
    fn backward(&self, b: &Backward<'_>) -> Vec<Dispatch> {
        let [c, oh, ow] = b.shape;
        vec![b.ops.eltwise.affine_backward(
            b.ctx,
            b.rows * c * oh * ow,
            c,
            oh * ow,
            b.dy,
            &self.scale_shift,
            b.dx,
        )]
    }
}
