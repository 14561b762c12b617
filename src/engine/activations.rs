//! Forward-pass buffers for a batch capacity, and recording forward dispatches into them.

use super::plan::Plan;
use crate::gpu::{Dispatch, GpuContext, buffer};
use crate::graph::Shape;
use crate::graph::op::Forward;
use crate::ops::{Ops, conv};

/// One buffer per step output (aliases share their input's) plus the buffers steps save for
/// their backward (max pool's argmax), and the twins convs read their inputs from.
pub struct Activations {
    acts: Vec<wgpu::Buffer>,
    act_of: Vec<usize>,
    saved: Vec<Option<wgpu::Buffer>>,
    /// Per step, the texture its output's twin goes to ([`crate::ops::conv::Twins`]).
    twins: Vec<Option<wgpu::TextureView>>,
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
            twins: twins(ctx, plan, cap),
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

    /// Where the preprocessing may write the input's twin (see [`Activations::forward_from`]).
    pub fn input_twin(&self) -> Option<&wgpu::TextureView> {
        self.twins[0].as_ref()
    }

    /// Forward dispatches for `n` images over the steps where `run` is true (never the input).
    /// A conv reads its input's twin only where the twin's producer ran in this call.
    pub fn forward(
        &self,
        ctx: &GpuContext,
        ops: &Ops,
        plan: &Plan,
        n: usize,
        run: &[bool],
    ) -> Vec<Dispatch> {
        self.forward_from(ctx, ops, plan, n, run, false)
    }

    /// [`Activations::forward`] where `input_packed` says the preprocessing just wrote the
    /// input's twin ([`Activations::input_twin`]) too.
    pub fn forward_from(
        &self,
        ctx: &GpuContext,
        ops: &Ops,
        plan: &Plan,
        n: usize,
        run: &[bool],
        input_packed: bool,
    ) -> Vec<Dispatch> {
        let mut d = Vec::new();
        let mut fresh = vec![false; plan.steps.len()];
        fresh[0] = input_packed && self.twins[0].is_some();
        for (s, step) in plan.steps.iter().enumerate().skip(1) {
            if !run[s] {
                continue;
            }
            let inputs = self.inputs(plan, s);
            let twin_in = match step.inputs.first() {
                Some(&i) if fresh[i] && step.op.reads_twin() => self.twins[i].as_ref(),
                _ => None,
            };
            let twin_out = self.twins[s].as_ref();
            d.extend(step.op.forward(&Forward {
                ctx,
                ops,
                n,
                inputs: &inputs,
                output: self.act(s),
                shape: step.shape,
                relu: step.relu,
                relu6: step.relu6,
                saved: self.saved(s),
                twin_in,
                twin_out,
            }));
            fresh[s] = twin_out.is_some();
        }
        d
    }
}

/// Twins for `cap` images: where a step that writes one feeds a conv that reads one and the
/// twin fits a texture. Textures are shared by twins whose lives (producer to last reader)
/// do not meet, so a plain ResNet holds three at a time.
fn twins(ctx: &GpuContext, plan: &Plan, cap: usize) -> Vec<Option<wgpu::TextureView>> {
    let steps = &plan.steps;
    let mut last_reader = vec![None; steps.len()];
    for (c, step) in steps.iter().enumerate() {
        if let Some(&i) = step.inputs.first().filter(|_| step.op.reads_twin()) {
            last_reader[i] = Some(c);
        }
    }
    // Per texture: texels, and the last step that reads what it holds.
    let mut textures: Vec<(u64, usize)> = Vec::new();
    let mut texture_of = vec![None; steps.len()];
    for (s, step) in steps.iter().enumerate() {
        // The input's twin comes from the preprocessing (RGB: one texel per pixel).
        let writes = match s {
            0 => step.shape[0] == 3,
            _ => step.op.writes_twin(),
        };
        let Some(until) = last_reader[s].filter(|_| writes) else {
            continue;
        };
        let Some(texels) = conv::twin_texels(ctx, step.shape, cap) else {
            continue;
        };
        let k = match textures.iter().position(|&(_, busy)| busy < s) {
            Some(k) => k,
            None => {
                textures.push((0, 0));
                textures.len() - 1
            }
        };
        textures[k] = (textures[k].0.max(texels), until);
        texture_of[s] = Some(k);
    }
    let views: Vec<_> = textures
        .iter()
        .map(|&(texels, _)| conv::twin_texture(ctx, texels))
        .collect();
    texture_of
        .iter()
        .map(|k| k.map(|k| views[k].clone()))
        .collect()
}
