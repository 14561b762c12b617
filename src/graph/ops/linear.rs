//! Fully connected layer over row-chunked weights (one binding need not hold the weight),
//! contracting one dim of the input: the rows are the dims before it (ConvNeXt's pointwise
//! Linear on `[H, W, C]`, a token MLP on `[L, D, 1]`).

use super::conv2d::ConvStep;
use super::prelude::*;
use crate::gpu::buffer;
use crate::graph::check_dim;
use crate::ops::Precision;
use crate::ops::conv::{ConvLayout, ConvShape, ConvVariant, ConvWeight, default_variant};
use crate::ops::linear::LinearWeight;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Linear {
    pub weight: String,
    pub bias: Option<String>,
    pub in_features: usize,
    pub out_features: usize,
    /// The contracted dim (size `in_features`); every dim after it must be 1. 0: `[F, 1, 1]`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub axis: usize,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

impl Linear {
    /// Rows per image: the product of the dims before `axis`.
    fn rows(&self, input: Shape) -> usize {
        input[..self.axis].iter().product()
    }
}

impl NodeOp for Linear {
    fn check(&self) -> std::result::Result<(), String> {
        check_dim("in_features", self.in_features, 1)?;
        check_dim("out_features", self.out_features, 1)?;
        if self.axis > 2 {
            return Err(format!("axis {} is out of range 0..=2", self.axis));
        }
        Ok(())
    }
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        let (x, a) = (inputs[0], self.axis);
        if a > 2 {
            return Err(format!("axis {a} is out of range 0..=2"));
        }
        if x[a] != self.in_features || x[a + 1..].iter().any(|&d| d != 1) {
            let along = match a {
                0 => String::new(),
                _ => format!(" along axis {a} and 1 after it"),
            };
            return Err(format!(
                "expects {} features{along}, gets {}x{}x{}",
                self.in_features, x[0], x[1], x[2]
            ));
        }
        let mut out = x;
        out[a] = self.out_features;
        Ok(out)
    }
    fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let mut v = vec![(
            self.weight.clone(),
            vec![self.out_features, self.in_features],
        )];
        if let Some(b) = &self.bias {
            v.push((b.clone(), vec![self.out_features]));
        }
        v
    }
    fn stores_relu(&self) -> bool {
        true
    }
    fn lower(&self, cx: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        let rows = self.rows(cx.inputs[0]);
        if let Some(step) = self.lower_rows(cx, rows)? {
            return Ok(Box::new(step));
        }
        let weight = LinearWeight::upload_at(
            cx.ctx,
            &self.weight,
            &cx.weights.get(&self.weight)?.data,
            self.out_features,
            self.in_features,
            cx.how.precision,
        )?;
        let bias = match &self.bias {
            Some(b) => Some(buffer::storage_f32(cx.ctx, b, &cx.weights.get(b)?.data)),
            None => None,
        };
        Ok(Box::new(LinearStep { weight, bias, rows }))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        let bias = self.bias.as_ref().map(|b| r.tensor(b)).transpose()?;
        Ok(r::linear_forward(
            r.inputs[0],
            &r.tensor(&self.weight)?,
            bias.as_deref(),
            r.n * self.rows(r.in_shapes[0]),
            self.in_features,
            self.out_features,
        ))
    }
    fn reference_backward(&self, r: &Reference<'_>, _: usize, dy: &[f64]) -> Result<Vec<f64>> {
        Ok(r::linear_backward(
            dy,
            &r.tensor(&self.weight)?,
            r.n * r.rep * self.rows(r.in_shapes[0]),
            self.in_features,
            self.out_features,
        ))
    }
}

impl Linear {
    /// On a CPU adapter: the texture conv kernel as a 1x1 conv over 1x1 images, one per row
    /// (token, channels-last position, or image of a classifier head), which is the same
    /// memory layout and runs several times the row kernel's rate on llvmpipe (VGG16's
    /// classifier at batch 16: 2.0 s to 0.4 s a batch). A head of one row per image takes it
    /// only where its weight is large enough to matter (4 Mi entries: VGG's FC1 and FC2):
    /// below that the row kernel costs about 1% of a batch (ResNet-50's head 43 ms of 2.7 s),
    /// less than packing the head's input and gradient into textures is worth. `None` where
    /// that kernel is not the one the weights would get.
    fn lower_rows(&self, cx: &Lower<'_>, rows: usize) -> Result<Option<ConvStep>> {
        if (rows < 2 && self.in_features * self.out_features < 1 << 22)
            || cx.how.precision != Precision::F32
            || default_variant(cx.ctx) != ConvVariant::Texture
        {
            return Ok(None);
        }
        let shape = ConvShape {
            batch: 0,
            in_c: self.in_features,
            in_h: 1,
            in_w: 1,
            out_c: self.out_features,
            kernel: [1, 1],
            stride: [1, 1],
            padding: [0, 0],
            padding_end: [0, 0],
            dilation: [1, 1],
            groups: 1,
        };
        let w = &cx.weights.get(&self.weight)?.data;
        let weight = ConvWeight::upload_at(cx.ctx, &self.weight, w, &shape, Precision::F32)?;
        if weight.layout != ConvLayout::Texels || weight.backward_layout != ConvLayout::Texels {
            return Ok(None);
        }
        let bias = match &self.bias {
            Some(b) => Some(buffer::storage_f32(cx.ctx, b, &cx.weights.get(b)?.data)),
            None => None,
        };
        Ok(Some(ConvStep {
            shape,
            weight,
            bias,
            per_image: rows,
        }))
    }
}

impl Samples for Linear {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        let linear = |in_features, out_features, bias: bool, axis| Linear {
            weight: "fc.weight".into(),
            bias: bias.then(|| "fc.bias".into()),
            in_features,
            out_features,
            axis,
        };
        vec![
            (linear(13, 7, true, 0), vec![[13, 1, 1]]),
            (linear(6, 3, false, 0), vec![[6, 1, 1]]),
            // ConvNeXt's pointwise Linear on [H, W, C].
            (linear(5, 9, true, 2), vec![[3, 7, 5]]),
            // A token MLP on [L, D, 1].
            (linear(6, 5, false, 1), vec![[7, 6, 1]]),
        ]
    }
}

pub struct LinearStep {
    pub weight: LinearWeight,
    pub bias: Option<wgpu::Buffer>,
    /// Rows per image (the dims before the contracted one).
    pub rows: usize,
}

impl Lowered for LinearStep {
    fn forward(&self, f: &Forward<'_>) -> Vec<Dispatch> {
        f.ops.linear.forward(
            f.ctx,
            &self.weight,
            f.n * self.rows,
            f.relu,
            f.x(0),
            self.bias.as_ref(),
            f.output,
            f.dummy(),
        )
    }
    fn backward(&self, b: &Backward<'_>) -> Vec<Dispatch> {
        b.ops.linear.backward(
            b.ctx,
            &self.weight,
            b.rows * self.rows,
            b.dy,
            b.dx,
            b.dummy(),
        )
    }
}
