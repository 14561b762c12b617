//! Forward-pass buffers for a batch capacity, and recording forward dispatches into them.

use super::plan::Plan;
use crate::gpu::{Dispatch, GpuContext, buffer};
use crate::graph::Shape;
use crate::graph::op::Forward;
use crate::ops::Ops;

/// One buffer per step output (aliases share their input's) plus the buffers steps save for
/// their backward (max pool's argmax).
pub struct Activations {
    acts: Vec<wgpu::Buffer>,
    act_of: Vec<usize>,
    saved: Vec<Option<wgpu::Buffer>>,
}

impl Activations {
    /// Buffers for `cap` images.
    pub fn new(ctx: &GpuContext, plan: &Plan, cap: usize) -> Self {
        let mut acts = Vec::new();
        let mut act_of = Vec::new();
        let mut saved = Vec::new();
        for s in &plan.steps {
            let bytes = (cap * s.shape.iter().product::<usize>() * 4) as u64;
            if s.op.aliases_input() {
                act_of.push(act_of[s.inputs[0]]);
            } else {
                act_of.push(acts.len());
                acts.push(buffer::storage(ctx, &s.name, bytes));
            }
            let words = s.op.saved_words(s.shape);
            saved
                .push((words > 0).then(|| buffer::storage(ctx, "saved", (cap * words * 4) as u64)));
        }
        Self {
            acts,
            act_of,
            saved,
        }
    }

    pub fn act(&self, step: usize) -> &wgpu::Buffer {
        &self.acts[self.act_of[step]]
    }

    /// What step `step` saved in the forward for its backward, if anything.
    pub fn saved(&self, step: usize) -> Option<&wgpu::Buffer> {
        self.saved[step].as_ref()
    }

    /// The activations and shapes of a step's inputs.
    pub fn inputs(&self, plan: &Plan, step: usize) -> Vec<(&wgpu::Buffer, Shape)> {
        plan.steps[step]
            .inputs
            .iter()
            .map(|&i| (self.act(i), plan.steps[i].shape))
            .collect()
    }

    /// Forward dispatches for `n` images over the steps where `run` is true (never the input).
    pub fn forward(
        &self,
        ctx: &GpuContext,
        ops: &Ops,
        plan: &Plan,
        n: usize,
        run: &[bool],
    ) -> Vec<Dispatch> {
        let mut d = Vec::new();
        for (s, step) in plan.steps.iter().enumerate().skip(1) {
            if !run[s] {
                continue;
            }
            let inputs = self.inputs(plan, s);
            d.extend(step.op.forward(&Forward {
                ctx,
                ops,
                n,
                inputs: &inputs,
                output: self.act(s),
                shape: step.shape,
                relu: step.relu,
                saved: self.saved(s),
            }));
        }
        d
    }
}
