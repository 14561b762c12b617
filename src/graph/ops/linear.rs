//! Fully connected layer over row-chunked weights (one binding need not hold the weight).

use super::prelude::*;
use crate::gpu::buffer;
use crate::graph::check_dim;
use crate::ops::linear::LinearWeight;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Linear {
    pub weight: String,
    pub bias: Option<String>,
    pub in_features: usize,
    pub out_features: usize,
}

impl NodeOp for Linear {
    fn check(&self) -> std::result::Result<(), String> {
        check_dim("in_features", self.in_features, 1)?;
        check_dim("out_features", self.out_features, 1)
    }
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        let [c, h, w] = inputs[0];
        if c != self.in_features || h * w != 1 {
            return Err(format!(
                "expects {} features, gets {c}x{h}x{w}",
                self.in_features
            ));
        }
        Ok([self.out_features, 1, 1])
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
        Ok(Box::new(LinearStep { weight, bias }))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        let bias = self.bias.as_ref().map(|b| r.tensor(b)).transpose()?;
        Ok(r::linear_forward(
            r.inputs[0],
            &r.tensor(&self.weight)?,
            bias.as_deref(),
            r.n,
            self.in_features,
            self.out_features,
        ))
    }
    fn reference_backward(&self, r: &Reference<'_>, _: usize, dy: &[f64]) -> Result<Vec<f64>> {
        Ok(r::linear_backward(
            dy,
            &r.tensor(&self.weight)?,
            r.n * r.rep,
            self.in_features,
            self.out_features,
        ))
    }
}

impl Samples for Linear {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        let linear = |in_features, out_features, bias: bool| Linear {
            weight: "fc.weight".into(),
            bias: bias.then(|| "fc.bias".into()),
            in_features,
            out_features,
        };
        vec![
            (linear(13, 7, true), vec![[13, 1, 1]]),
            (linear(6, 3, false), vec![[6, 1, 1]]),
        ]
    }
}

pub struct LinearStep {
    pub weight: LinearWeight,
    pub bias: Option<wgpu::Buffer>,
}

impl Lowered for LinearStep {
    fn forward(&self, f: &Forward<'_>) -> Vec<Dispatch> {
        f.ops.linear.forward(
            f.ctx,
            &self.weight,
            f.n,
            f.relu,
            f.x(0),
            self.bias.as_ref(),
            f.output,
            f.dummy(),
        )
    }
    fn backward(&self, b: &Backward<'_>) -> Vec<Dispatch> {
        b.ops
            .linear
            .backward(b.ctx, &self.weight, b.rows, b.dy, b.dx, b.dummy())
    }
}
