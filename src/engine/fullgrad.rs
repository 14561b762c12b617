//! FullGrad: the input-gradient term and every biased layer's bias-gradient term.

use super::Engine;
use super::plan::Plan;
use crate::error::Result;
use crate::gpu::{Dispatch, GpuContext, buffer};
use crate::graph::Op;
use crate::graph::ops::conv2d::Conv2d;
use crate::model::Model;
use crate::ops::cam::CamShape;
use crate::ops::eltwise::Merge;

impl Engine {
    /// FullGrad: each biased layer of step `s` adds resize(sum_c minmax(|bias_c * dy/dz_c|))
    /// to `cam_big`; `g` is the gradient at the step's pre-ReLU output.
    pub(super) fn fullgrad_layers(
        &self,
        d: &mut Vec<Dispatch>,
        s: usize,
        rows: usize,
        g: &wgpu::Buffer,
        first: &mut bool,
    ) {
        let (ctx, ops, dummy) = (&self.ctx, &self.ops, &self.ops.dummy);
        let [c, oh, ow] = self.plan.steps[s].shape;
        let [h, w] = self.cfg.size;
        let shape = CamShape {
            rows,
            channels: c,
            plane: oh * ow,
            rep: 1,
        };
        for aux in &self.fullgrad_bias[s] {
            d.extend(ops.cam.abs_normalized_sum(
                ctx,
                &shape,
                false,
                dummy,
                g,
                aux,
                &self.cam_small,
                dummy,
            ));
            d.push(ops.image.upsample(
                ctx,
                rows,
                [oh, ow],
                [h, w],
                &self.cam_small,
                &self.layer_map,
                dummy,
            ));
            let merge = if *first {
                Merge::Set(1.0)
            } else {
                Merge::Add(1.0)
            };
            *first = false;
            d.push(self.merge_layer_map(rows, merge));
        }
    }
}

/// FullGrad's biased layers per step: every conv with a bias and every BatchNorm, as
/// `[bias (C), scale (C), statistics (rows x C x 2)]` buffers. A BN's bias is its folded
/// shift; a conv followed by a BN in the same step sees the gradient scaled by the BN.
pub(super) fn fullgrad_terms(
    ctx: &GpuContext,
    model: &Model,
    plan: &Plan,
    rows: usize,
) -> Result<(Vec<Vec<wgpu::Buffer>>, wgpu::Buffer)> {
    let mut per_step = Vec::with_capacity(plan.steps.len());
    for step in &plan.steps {
        let mut terms = Vec::new();
        for (k, &node) in step.nodes.iter().enumerate() {
            let (bias, scale): (Vec<f64>, Vec<f64>) = match &model.graph.nodes[node].op {
                Op::Conv2d(Conv2d {
                    bias: Some(b),
                    out_channels,
                    ..
                }) => {
                    let bias = model
                        .weights
                        .get(b)?
                        .data
                        .iter()
                        .map(|&v| v as f64)
                        .collect();
                    let bn =
                        step.nodes[k + 1..]
                            .iter()
                            .find_map(|&m| match &model.graph.nodes[m].op {
                                Op::BatchNorm2d(bn) => Some(bn),
                                _ => None,
                            });
                    let scale = match bn {
                        Some(bn) => bn.affine(&model.weights)?.0,
                        None => vec![1.0; *out_channels],
                    };
                    (bias, scale)
                }
                Op::BatchNorm2d(bn) => {
                    let (_, shift) = bn.affine(&model.weights)?;
                    (shift, vec![1.0; bn.channels])
                }
                _ => continue,
            };
            let c = bias.len();
            let mut data: Vec<f32> = bias.iter().chain(&scale).map(|&v| v as f32).collect();
            data.resize(2 * c + rows * c * 2, 0.0);
            terms.push(buffer::storage_f32(ctx, "fullgrad", &data));
        }
        per_step.push(terms);
    }
    let input = buffer::storage(ctx, "fullgrad", ((6 + rows * 3 * 2) * 4) as u64);
    Ok((per_step, input))
}
