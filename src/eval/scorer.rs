//! Forward-only passes over model inputs composed on the device (masked, deleted or inserted
//! images), returning class probabilities: the scoring half of the metrics.

use crate::engine::Plan;
use crate::engine::activations::Activations;
use crate::error::Result;
use crate::gpu::{Dispatch, GpuContext, buffer, record_all};
use crate::model::Model;
use crate::ops::Ops;
use std::collections::HashMap;

pub struct Scorer {
    ctx: GpuContext,
    ops: Ops,
    plan: Plan,
    acts: Activations,
    cap: usize,
    classes: usize,
    probs: wgpu::Buffer,
    passes: HashMap<usize, Vec<Dispatch>>,
}

impl Scorer {
    /// Buffers for up to `cap` input rows of `size`.
    pub fn new(ctx: &GpuContext, model: &Model, size: [usize; 2], cap: usize) -> Result<Self> {
        let plan = Plan::new(ctx, &model.graph, &model.weights, size, &[], false)?;
        let acts = Activations::new(ctx, &plan, cap);
        let classes = model.graph.num_classes(size)?;
        Ok(Self {
            ops: Ops::new(ctx),
            probs: buffer::storage(ctx, "probs", (cap * classes * 4) as u64),
            ctx: ctx.clone(),
            plan,
            acts,
            cap,
            classes,
            passes: HashMap::new(),
        })
    }

    /// The kernels, shared with the metrics so they are compiled once.
    pub fn ops(&self) -> &Ops {
        &self.ops
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The normalised input, f32 `[cap, 3, H, W]`, for the composing kernels to fill.
    pub fn input(&self) -> &wgpu::Buffer {
        self.acts.act(0)
    }

    /// Probabilities `[rows, classes]` of normalised inputs given on the host (`[rows, 3, H, W]`).
    pub fn probabilities_of(&mut self, inputs: &[f32], rows: usize) -> Result<Vec<f32>> {
        self.ctx
            .queue
            .write_buffer(self.acts.act(0), 0, bytemuck::cast_slice(inputs));
        let encoder = self
            .ctx
            .device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                label: Some("score host inputs"),
            });
        self.probabilities(encoder, rows)
    }

    /// Records the forward pass and softmax over the first `rows` inputs into `encoder`,
    /// submits, and returns the probabilities `[rows, classes]`.
    pub fn probabilities(
        &mut self,
        mut encoder: wgpu::CommandEncoder,
        rows: usize,
    ) -> Result<Vec<f32>> {
        assert!(rows <= self.cap, "at most {} rows per pass", self.cap);
        let (ctx, ops, plan, acts) = (&self.ctx, &self.ops, &self.plan, &self.acts);
        let (classes, probs) = (self.classes, &self.probs);
        let pass = self.passes.entry(rows).or_insert_with(|| {
            let all = vec![true; plan.steps.len()];
            let mut d = acts.forward(ctx, ops, plan, rows, &all);
            let logits = acts.act(plan.steps.len() - 1);
            d.push(
                ops.perturb
                    .softmax(ctx, (0, rows), classes, None, logits, probs, &ops.dummy),
            );
            d
        });
        record_all(&mut encoder, "score", pass);
        let bytes = buffer::submit_and_read(
            &self.ctx,
            encoder,
            &[(&self.probs, (rows * self.classes * 4) as u64)],
        )?;
        Ok(bytemuck::pod_collect_to_vec(&bytes[0]))
    }
}
