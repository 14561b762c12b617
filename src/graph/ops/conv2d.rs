//! 2-D convolution, PyTorch semantics (weight `[out, in / groups, kh, kw]`). A BatchNorm
//! right after it folds into its weights and bias.

use super::prelude::*;
use crate::gpu::buffer;
use crate::graph::node::tensor_f64;
use crate::graph::{check_dim, check_pair};
use crate::ops::Precision;
use crate::ops::conv::{ConvKernels, ConvShape, ConvWeight, Fused, Twins, out_size};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conv2d {
    pub weight: String,
    pub bias: Option<String>,
    pub in_channels: usize,
    pub out_channels: usize,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    /// Top and left padding (and bottom and right unless `padding_end` says otherwise).
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
    /// Bottom and right padding where it differs from `padding` (ONNX pads `[t, l, b, r]`,
    /// TF 'same' with stride 2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub padding_end: Option<[usize; 2]>,
}

impl Conv2d {
    /// Bottom and right padding.
    pub fn padding_end(&self) -> [usize; 2] {
        self.padding_end.unwrap_or(self.padding)
    }

    /// The kernels' geometry for `batch` images of per-image `input`.
    pub fn geometry(&self, batch: usize, input: Shape) -> ConvShape {
        ConvShape {
            batch,
            in_c: self.in_channels,
            in_h: input[1],
            in_w: input[2],
            out_c: self.out_channels,
            kernel: self.kernel,
            stride: self.stride,
            padding: self.padding,
            padding_end: self.padding_end(),
            dilation: self.dilation,
            groups: self.groups,
        }
    }
}

impl NodeOp for Conv2d {
    fn check(&self) -> std::result::Result<(), String> {
        let (cin, cout, groups) = (self.in_channels, self.out_channels, self.groups);
        check_dim("in_channels", cin, 1)?;
        check_dim("out_channels", cout, 1)?;
        check_pair("kernel", &self.kernel, 1)?;
        check_pair("stride", &self.stride, 1)?;
        check_pair("padding", &self.padding, 0)?;
        if let Some(end) = &self.padding_end {
            check_pair("padding_end", end, 0)?;
        }
        check_pair("dilation", &self.dilation, 1)?;
        check_dim("groups", groups, 1)?;
        if cin % groups != 0 || cout % groups != 0 {
            return Err(format!(
                "groups {groups} do not divide the channels ({cin} in, {cout} out)"
            ));
        }
        Ok(())
    }

    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        let [c, h, w] = inputs[0];
        let (k, s, d) = (self.kernel, self.stride, self.dilation);
        let (p, e) = (self.padding, self.padding_end());
        if c != self.in_channels {
            return Err(format!("expects {} channels, gets {c}", self.in_channels));
        }
        let groups = self.groups;
        if groups == 0 || !c.is_multiple_of(groups) || !self.out_channels.is_multiple_of(groups) {
            return Err(format!("groups {groups} do not divide the channels"));
        }
        let eh = d[0] * (k[0] - 1) + 1;
        let ew = d[1] * (k[1] - 1) + 1;
        if h + p[0] + e[0] < eh || w + p[1] + e[1] < ew {
            return Err(format!("input {h}x{w} is smaller than the kernel"));
        }
        Ok([
            self.out_channels,
            out_size(h, k[0], s[0], [p[0], e[0]], d[0]),
            out_size(w, k[1], s[1], [p[1], e[1]], d[1]),
        ])
    }

    fn tensors(&self) -> Vec<(String, Vec<usize>)> {
        let mut v = vec![(
            self.weight.clone(),
            vec![
                self.out_channels,
                self.in_channels / self.groups,
                self.kernel[0],
                self.kernel[1],
            ],
        )];
        if let Some(b) = &self.bias {
            v.push((b.clone(), vec![self.out_channels]));
        }
        v
    }

    fn stores_relu(&self) -> bool {
        true
    }

    fn stores_relu6(&self) -> bool {
        true
    }

    fn lower(&self, cx: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        let shape = self.geometry(0, cx.inputs[0]);
        let mut w = tensor_f64(cx.weights, &self.weight)?;
        let mut b = match &self.bias {
            Some(name) => tensor_f64(cx.weights, name)?,
            None => vec![0.0; self.out_channels],
        };
        let mut has_bias = self.bias.is_some();
        if let Some(bn) = cx.batch_norm {
            let (scale, shift) = bn.affine(cx.weights)?;
            let per = w.len() / self.out_channels;
            for (co, chunk) in w.chunks_mut(per).enumerate() {
                chunk.iter_mut().for_each(|v| *v *= scale[co]);
                b[co] = b[co] * scale[co] + shift[co];
            }
            has_bias = true;
        }
        let w32: Vec<f32> = w.iter().map(|&v| v as f32).collect();
        let b32: Vec<f32> = b.iter().map(|&v| v as f32).collect();
        // A tuned choice that fails to upload (it never should) leaves the fixed one.
        let tuned = cx.tuned.filter(|_| cx.how.precision == Precision::F32);
        let tuned = tuned
            .and_then(|t| t.choice(cx.ctx, &shape))
            .and_then(|(v, wino)| {
                ConvWeight::upload_tuned(cx.ctx, &self.weight, &w32, &shape, v, wino).ok()
            });
        let weight = match tuned {
            Some(weight) => weight,
            None if cx.how.winograd && cx.how.precision == Precision::F32 => {
                ConvWeight::upload_fast(cx.ctx, &self.weight, &w32, &shape)?
            }
            None => ConvWeight::upload_at(cx.ctx, &self.weight, &w32, &shape, cx.how.precision)?,
        };
        Ok(Box::new(ConvStep {
            shape,
            weight,
            bias: has_bias.then(|| buffer::storage_f32(cx.ctx, "bias", &b32)),
            per_image: 1,
        }))
    }

    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        let bias = self.bias.as_ref().map(|b| r.tensor(b)).transpose()?;
        let s = self.geometry(r.n, r.in_shapes[0]);
        Ok(r::conv2d_forward(
            r.inputs[0],
            &r.tensor(&self.weight)?,
            bias.as_deref(),
            &s,
        ))
    }

    fn reference_backward(&self, r: &Reference<'_>, _: usize, dy: &[f64]) -> Result<Vec<f64>> {
        let s = self.geometry(r.n * r.rep, r.in_shapes[0]);
        Ok(r::conv2d_backward_data(dy, &r.tensor(&self.weight)?, &s))
    }
}

impl Samples for Conv2d {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        #[allow(clippy::too_many_arguments)]
        let conv = |cin, cout, kernel, stride, padding, dilation, groups, bias: bool| Conv2d {
            weight: "conv.weight".into(),
            bias: bias.then(|| "conv.bias".into()),
            in_channels: cin,
            out_channels: cout,
            kernel,
            stride,
            padding,
            dilation,
            groups,
            padding_end: None,
        };
        let asymmetric = |c: Conv2d, end| Conv2d {
            padding_end: Some(end),
            ..c
        };
        vec![
            (
                conv(5, 7, [3, 3], [2, 2], [1, 1], [1, 1], 1, true),
                vec![[5, 9, 8]],
            ),
            (
                conv(6, 6, [3, 3], [1, 1], [2, 2], [2, 2], 6, false),
                vec![[6, 7, 9]],
            ),
            (
                conv(6, 9, [2, 3], [1, 2], [0, 1], [1, 1], 3, true),
                vec![[6, 5, 7]],
            ),
            // TF 'same' with stride 2 on an even side: pads [0, 0, 1, 1].
            (
                asymmetric(conv(5, 7, [3, 3], [2, 2], [0, 0], [1, 1], 1, true), [1, 1]),
                vec![[5, 8, 10]],
            ),
            // ONNX pads [t, l, b, r] = [2, 0, 0, 1], dilated, grouped.
            (
                asymmetric(conv(6, 9, [3, 2], [1, 2], [2, 0], [2, 1], 3, false), [0, 1]),
                vec![[6, 7, 9]],
            ),
            // Depthwise, 3 wide (the depthwise kernel's row-window path), end pad larger.
            (
                asymmetric(conv(6, 6, [3, 3], [1, 1], [0, 1], [1, 1], 6, true), [2, 0]),
                vec![[6, 5, 7]],
            ),
            // Depthwise, stride 2, dilated (its general path).
            (
                asymmetric(conv(4, 4, [3, 3], [2, 2], [1, 0], [2, 1], 4, false), [0, 2]),
                vec![[4, 9, 8]],
            ),
        ]
    }
}

/// A conv with its weights packed for the adapter's kernel (BatchNorm folded in).
pub struct ConvStep {
    /// Geometry with batch 0; each dispatch fills its batch.
    pub shape: ConvShape,
    pub weight: ConvWeight,
    pub bias: Option<wgpu::Buffer>,
    /// Conv images per engine image: 1, or a Linear's rows run as 1x1 images
    /// ([`super::linear::Linear`] on CPU adapters).
    pub per_image: usize,
}

impl Lowered for ConvStep {
    fn forward(&self, f: &Forward<'_>) -> Vec<Dispatch> {
        let shape = ConvShape {
            batch: f.n * self.per_image,
            ..self.shape
        };
        let twins = Twins {
            input: f.twin_in,
            output: f.twin_out,
        };
        let act = match (f.relu, f.relu6) {
            (_, true) => Fused::Relu6,
            (true, false) => Fused::Relu,
            (false, false) => Fused::None,
        };
        f.ops.conv.forward_twinned(
            f.ctx,
            &shape,
            act,
            f.x(0),
            &self.weight,
            self.bias.as_ref(),
            f.output,
            f.dummy(),
            twins,
        )
    }
    fn reads_twin(&self) -> bool {
        self.per_image == 1 && ConvKernels::reads_twin(&self.shape, &self.weight)
    }
    fn writes_twin(&self) -> bool {
        self.per_image == 1 && ConvKernels::writes_twin(&self.shape, &self.weight)
    }
    fn backward(&self, b: &Backward<'_>) -> Vec<Dispatch> {
        let shape = ConvShape {
            batch: b.rows * self.per_image,
            ..self.shape
        };
        b.ops
            .conv
            .backward_data_chunked(b.ctx, &shape, b.dy, &self.weight, b.dx, b.dummy())
    }
}
