//! A gather by an index map: output element `i` (per image, row-major over `shape`) is the
//! input's flat element `index[i]`. The engine appends one after a target layer to read it
//! folded (pytorch-grad-cam's `reshape_transform`: tokens to a grid, NHWC to NCHW). The map is
//! injective, so the gradient is a scatter: `dy[i]` to `index[i]`, zeros elsewhere.

use super::prelude::*;
use crate::graph::check_dim;
use crate::ops::layout::NO_INDEX;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gather {
    /// The per-image output shape.
    pub shape: Shape,
    /// Per output element, the flat per-image input index; `elements(shape)` of them.
    pub index: Vec<u32>,
}

impl Gather {
    /// Every index below `input` (the input's elements per image), none repeated.
    pub fn check_input(&self, input: usize) -> std::result::Result<(), String> {
        let mut seen = vec![false; input];
        for (i, &j) in self.index.iter().enumerate() {
            match seen.get_mut(j as usize) {
                None => {
                    return Err(format!(
                        "index {j} (element {i}) is out of range for {input} input elements"
                    ));
                }
                Some(true) => {
                    return Err(format!(
                        "index {j} appears twice (element {i}): the map must be injective"
                    ));
                }
                Some(s) => *s = true,
            }
        }
        Ok(())
    }

    /// Per input element, the output element that reads it, or [`NO_INDEX`].
    fn inverse(&self, input: usize) -> Vec<u32> {
        let mut inv = vec![NO_INDEX; input];
        for (i, &j) in self.index.iter().enumerate() {
            inv[j as usize] = i as u32;
        }
        inv
    }
}

impl NodeOp for Gather {
    fn check(&self) -> std::result::Result<(), String> {
        for d in self.shape {
            check_dim("shape", d, 1)?;
        }
        let len = self
            .shape
            .iter()
            .try_fold(1usize, |p, &d| p.checked_mul(d))
            .filter(|&n| n <= crate::graph::MAX_ELEMENTS)
            .ok_or_else(|| format!("shape {:?} is too large", self.shape))?;
        if self.index.len() != len {
            return Err(format!(
                "{} indices for shape {:?} ({len} elements)",
                self.index.len(),
                self.shape
            ));
        }
        Ok(())
    }
    fn shape(&self, inputs: &[Shape]) -> std::result::Result<Shape, String> {
        self.check()?;
        self.check_input(elements(inputs[0]))?;
        Ok(self.shape)
    }
    fn lower(&self, cx: &Lower<'_>) -> Result<Box<dyn Lowered>> {
        let input = elements(cx.inputs[0]);
        self.check_input(input)
            .map_err(|m| Error::Model(format!("node `{}`: {m}", cx.name)))?;
        let upload = |label, v: &[u32]| {
            crate::gpu::buffer::storage_init(cx.ctx, label, bytemuck::cast_slice(v))
        };
        Ok(Box::new(GatherStep {
            index: upload("gather index", &self.index),
            inverse: upload("gather inverse", &self.inverse(input)),
            input,
            output: self.index.len(),
        }))
    }
    fn reference(&self, r: &Reference<'_>) -> Result<Vec<f64>> {
        Ok(r::layout::index_gather(
            r.inputs[0],
            elements(r.in_shapes[0]),
            &self.index,
        ))
    }
    fn reference_backward(&self, r: &Reference<'_>, _: usize, dy: &[f64]) -> Result<Vec<f64>> {
        Ok(r::layout::index_gather_backward(
            dy,
            elements(r.in_shapes[0]),
            &self.index,
        ))
    }
}

/// The index map and its inverse on the device.
pub struct GatherStep {
    index: wgpu::Buffer,
    inverse: wgpu::Buffer,
    /// Elements per image of the input and the output.
    input: usize,
    output: usize,
}

impl Lowered for GatherStep {
    fn forward(&self, f: &Forward<'_>) -> Vec<Dispatch> {
        vec![f.ops.layout.index_gather(
            f.ctx,
            f.n,
            self.output,
            self.input,
            &self.index,
            false,
            f.x(0),
            f.output,
        )]
    }
    fn backward(&self, b: &Backward<'_>) -> Vec<Dispatch> {
        vec![b.ops.layout.index_gather(
            b.ctx,
            b.rows,
            self.input,
            self.output,
            &self.inverse,
            b.accumulate,
            b.dy,
            b.dx,
        )]
    }
    fn accumulates(&self) -> bool {
        true
    }
}

impl Samples for Gather {
    fn samples() -> Vec<(Self, Vec<Shape>)> {
        // NHWC [5, 7, 3] read as NCHW [3, 5, 7] (Swin, ConvNeXt).
        let nhwc: Vec<u32> = (0..3)
            .flat_map(|c| (0..35).map(move |p| (p * 3 + c) as u32))
            .collect();
        // ViT tokens [1 + 3 * 5, 6]: the class token dropped, the grid channels-first.
        let vit: Vec<u32> = (0..6)
            .flat_map(|c| (0..15).map(move |t| ((1 + t) * 6 + c) as u32))
            .collect();
        // Every other element of [2, 3, 5], backwards: most inputs get no gradient.
        let sparse: Vec<u32> = (0..7).map(|i| 28 - 4 * i).collect();
        vec![
            (
                Gather {
                    shape: [3, 5, 7],
                    index: nhwc,
                },
                vec![[5, 7, 3]],
            ),
            (
                Gather {
                    shape: [6, 3, 5],
                    index: vit,
                },
                vec![[16, 6, 1]],
            ),
            (
                Gather {
                    shape: [1, 7, 1],
                    index: sparse,
                },
                vec![[2, 3, 5]],
            ),
        ]
    }
}
