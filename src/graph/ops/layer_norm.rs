//! LayerNorm (ONNX LayerNormalization; ViT, ConvNeXt): each row normalised over the dims
//! `axis..3`, biased variance, optional affine of shape `[features]`. Also the step and
//! references GroupNorm shares (a row of GroupNorm is one group of one image).

use super::prelude::*;
use crate::gpu::buffer;
use crate::graph::check_dim;
use crate::ops::norm::NormShape;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerNorm {
    /// First normalised (internal) axis: 0, 1 or 2.
    pub axis: usize,
    /// Product of the dims `axis..3`.
    pub features: usize,
    pub eps: f32,
    pub weight: Option<String>,
    pub bias: Option<String>,
}

impl LayerNorm {
    fn norm(&self, s: Shape) -> NormShape {
        NormShape {
            rows: s[..self.axis].iter().product(),
            len: self.features,
            groups: 1,
            plane: 1,
            eps: self.eps,
        }
    }
}

/// eps finite and non-negative.
pub(super) fn check_eps(eps: f32) -> std::result::Result<(), String> {
    if eps.is_finite() && eps >= 0.0 {
        Ok(())
    } else {
        Err(format!("eps {eps} must be finite and non-negative"))
    }
}

/// The affine tensors with their shape `[len]`.
pub(super) fn affine_tensors(
    weight: &Option<String>,
    bias: &Option<String>,
    len: usize,
) -> Vec<(String, Vec<usize>)> {
    [weight, bias]
        .into_iter()
        .flatten()
        .map(|t| (t.clone(), vec![len]))
        .collect()
}

impl NodeOp for LayerNorm {
    fn check(&self) -> std::result::Result<(), String> {
        if self.axis > 2 {
            return Err(format!("axis {} is not 0, 1 or 2", self.axis));
        }
        check_dim("features", self.features, 1)?;
        check_eps(self.eps)
    }
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        let s = inputs[0];
        let Some(dims) = s.get(self.axis..) else {
            return Err(format!("axis {} is not 0, 1 or 2", self.axis));
        };
        let features: usize = dims.iter().product();
        if features != self.features {
            return Err(format!(
                "expects {} features from axis {}, gets {features} ({s:?})",
                self.features, self.axis
            ));
        }
        Ok(s)
    }
    fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        affine_tensors(&self.weight, &self.bias, self.features)
    }
    fn lower(&self, cx: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        let step = NormStep::new(cx, self.norm(cx.shape), &self.weight, &self.bias)?;
        Ok(Box::new(step))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        reference(r, &self.norm(r.shape), &self.weight, &self.bias)
    }
    fn reference_backward(&self, r: &Reference<'_>, _: usize, dy: &[f64]) -> Result<Vec<f64>> {
        reference_backward(r, &self.norm(r.shape), &self.weight, dy)
    }
}

impl Samples for LayerNorm {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        let ln = |axis, features, affine: [bool; 2]| LayerNorm {
            axis,
            features,
            eps: 1e-5,
            weight: affine[0].then(|| "ln.weight".into()),
            bias: affine[1].then(|| "ln.bias".into()),
        };
        vec![
            // ConvNeXt's channels-last LayerNorm: [H, W, C], C not a multiple of 4.
            (ln(2, 7, [true, true]), vec![[3, 5, 7]]),
            // A token sequence [L, D, 1] and a [C, H, W] map normalised per channel.
            (ln(1, 6, [false, false]), vec![[5, 6, 1]]),
            (ln(1, 15, [true, false]), vec![[2, 3, 5]]),
            // The whole image, bias only.
            (ln(0, 30, [false, true]), vec![[2, 3, 5]]),
        ]
    }
}

/// A normalisation step (LayerNorm, GroupNorm): its rows and its affine, the weights then
/// the biases (ones and zeros where absent: one kernel, no flags).
pub struct NormStep {
    shape: NormShape,
    affine: wgpu::Buffer,
}

impl NormStep {
    pub(super) fn new(
        cx: &Lower<'_>,
        shape: NormShape,
        weight: &Option<String>,
        bias: &Option<String>,
    ) -> Result<Self> {
        let len = shape.affine_len();
        let mut affine = vec![1.0f32; len];
        affine.resize(2 * len, 0.0);
        for (t, half) in [weight, bias].into_iter().zip(affine.chunks_mut(len)) {
            if let Some(t) = t {
                half.copy_from_slice(&cx.weights.get(t)?.data);
            }
        }
        Ok(Self {
            shape,
            affine: buffer::storage_f32(cx.ctx, cx.name, &affine),
        })
    }
}

impl Lowered for NormStep {
    fn forward(&self, f: &Forward<'_>) -> Vec<Dispatch> {
        vec![
            f.ops
                .norm
                .forward(f.ctx, &self.shape, f.n, f.x(0), &self.affine, f.output),
        ]
    }
    fn backward(&self, b: &Backward<'_>) -> Vec<Dispatch> {
        vec![b.ops.norm.backward(
            b.ctx,
            &self.shape,
            b.rows,
            b.rep,
            b.dy,
            b.inputs[0].0,
            &self.affine,
            b.dx,
        )]
    }
}

/// The f64 forward of a normalisation.
pub(super) fn reference(
    r: &Reference<'_>,
    s: &NormShape,
    weight: &Option<String>,
    bias: &Option<String>,
) -> Result<Vec<f64>> {
    let weight = weight.as_ref().map(|t| r.tensor(t)).transpose()?;
    let bias = bias.as_ref().map(|t| r.tensor(t)).transpose()?;
    Ok(r::norm_forward(
        r.inputs[0],
        weight.as_deref(),
        bias.as_deref(),
        s,
    ))
}

/// The f64 gradient of a normalisation's input.
pub(super) fn reference_backward(
    r: &Reference<'_>,
    s: &NormShape,
    weight: &Option<String>,
    dy: &[f64],
) -> Result<Vec<f64>> {
    let weight = weight.as_ref().map(|t| r.tensor(t)).transpose()?;
    Ok(r::norm_backward(
        dy,
        r.inputs[0],
        weight.as_deref(),
        s,
        r.rep,
    ))
}
