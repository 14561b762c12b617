//! Lowering a graph to executable steps: BatchNorm folded into its conv, ReLU fused into its
//! producer, dropout and flatten as aliases — except where the target layer needs an
//! intermediate output, which then stays its own step.

use crate::error::{Error, Result};
use crate::gpu::GpuContext;
use crate::graph::op::{Lower, Lowered};
use crate::graph::{Graph, Op, Shape};
use crate::weights::Weights;

pub use crate::graph::WeightUpload;

pub struct Step {
    /// Name of the graph node whose output this step produces.
    pub name: String,
    /// The lowered op, which records the step's dispatches.
    pub op: Box<dyn Lowered>,
    pub inputs: Vec<usize>,
    /// Per-image output shape.
    pub shape: Shape,
    /// ReLU applied to the output (fused).
    pub relu: bool,
    /// ReLU6 applied to the output (fused into a conv).
    pub relu6: bool,
    /// The graph nodes this step computes, in order (e.g. conv, batch norm, ReLU).
    pub nodes: Vec<usize>,
}

pub struct Plan {
    pub steps: Vec<Step>,
    /// The steps whose outputs are the target layers' activations, in the order asked.
    pub targets: Vec<usize>,
    /// Per target, the step the backward computes the gradient of: the target itself, or
    /// for a folded target (a gather node the output does not read) the layer it gathers
    /// from; the target's gradient is then the same gather of that one.
    pub sources: Vec<usize>,
    /// Steps whose gradient the backward pass computes: the targets and everything after
    /// them that the output depends on.
    pub in_region: Vec<bool>,
}

/// A step under construction.
struct Pending {
    node: usize,
    out_node: usize,
    nodes: Vec<usize>,
    inputs: Vec<usize>,
    bn: Option<usize>,
    relu: bool,
    relu6: bool,
}

impl Plan {
    pub fn new(
        ctx: &GpuContext,
        graph: &Graph,
        weights: &Weights,
        size: [usize; 2],
        target_nodes: &[usize],
        to_input: bool,
    ) -> Result<Self> {
        Self::new_at(
            ctx,
            graph,
            weights,
            size,
            target_nodes,
            to_input,
            WeightUpload::default(),
            None,
        )
    }

    /// [`Plan::new`] with conv and linear weights stored as `how` says, convs on the
    /// kernels `tuned` chose.
    #[allow(clippy::too_many_arguments)]
    pub fn new_at(
        ctx: &GpuContext,
        graph: &Graph,
        weights: &Weights,
        size: [usize; 2],
        target_nodes: &[usize],
        to_input: bool,
        how: WeightUpload,
        tuned: Option<&crate::tune::Tuning>,
    ) -> Result<Self> {
        let shapes = graph.shapes(size)?;
        let mut consumers = vec![0usize; graph.nodes.len()];
        for n in &graph.nodes {
            for &i in &n.inputs {
                consumers[i] += 1;
            }
        }
        // Fuse a node into its producer's step only if the producer's own output is not
        // needed by anything else: one consumer, and not a target.
        let fusable = |p: usize| consumers[p] == 1 && !target_nodes.contains(&p);
        let mut pending: Vec<Pending> = Vec::new();
        let mut step_of = vec![usize::MAX; graph.nodes.len()];
        for (i, n) in graph.nodes.iter().enumerate() {
            let prev = n.inputs.first().map(|&p| (p, step_of[p]));
            let fuse_into = match (&n.op, prev) {
                (Op::BatchNorm2d(_), Some((p, s))) => {
                    let st = &pending[s];
                    (fusable(p)
                        && st.out_node == p
                        && matches!(graph.nodes[st.node].op, Op::Conv2d(_))
                        && st.bn.is_none()
                        && !st.relu
                        && !st.relu6)
                        .then_some(s)
                }
                (op, Some((p, s))) if is_relu6(op) => {
                    let st = &pending[s];
                    (fusable(p)
                        && st.out_node == p
                        && !st.relu
                        && !st.relu6
                        && graph.nodes[st.node].op.node().stores_relu6())
                    .then_some(s)
                }
                // Only producers whose kernels apply the ReLU on store; the others keep a
                // following ReLU as its own step.
                (Op::Relu(_), Some((p, s))) => {
                    let st = &pending[s];
                    (fusable(p)
                        && st.out_node == p
                        && !st.relu
                        && !st.relu6
                        && graph.nodes[st.node].op.node().stores_relu())
                    .then_some(s)
                }
                _ => None,
            };
            if let Some(s) = fuse_into {
                let st = &mut pending[s];
                match n.op {
                    Op::Relu(_) => st.relu = true,
                    ref op if is_relu6(op) => st.relu6 = true,
                    _ => st.bn = Some(i),
                }
                st.out_node = i;
                st.nodes.push(i);
                step_of[i] = s;
                continue;
            }
            step_of[i] = pending.len();
            pending.push(Pending {
                node: i,
                out_node: i,
                nodes: vec![i],
                inputs: n.inputs.iter().map(|&j| step_of[j]).collect(),
                bn: None,
                relu: false,
                relu6: false,
            });
        }
        let targets: Vec<usize> = target_nodes.iter().map(|&t| step_of[t]).collect();

        let mut steps = Vec::with_capacity(pending.len());
        for p in &pending {
            let node = &graph.nodes[p.node];
            let inputs: Vec<Shape> = node.inputs.iter().map(|&i| shapes[i]).collect();
            let batch_norm = p.bn.map(|b| match &graph.nodes[b].op {
                Op::BatchNorm2d(bn) => bn,
                _ => unreachable!("only BatchNorm nodes fold"),
            });
            let op = node.op.node().lower(&Lower {
                ctx,
                weights,
                name: &node.name,
                inputs: &inputs,
                shape: shapes[p.node],
                how,
                batch_norm,
                tuned,
            })?;
            steps.push(Step {
                name: graph.nodes[p.out_node].name.clone(),
                op,
                inputs: p.inputs.clone(),
                shape: shapes[p.out_node],
                relu: p.relu,
                relu6: p.relu6,
                nodes: p.nodes.clone(),
            });
        }
        let mut to_output = vec![false; steps.len()];
        to_output[steps.len() - 1] = true;
        for s in (0..steps.len()).rev() {
            if to_output[s] {
                for &i in &steps[s].inputs {
                    to_output[i] = true;
                }
            }
        }
        let sources: Vec<usize> = targets
            .iter()
            .map(|&t| {
                let fold = matches!(graph.nodes[pending[t].node].op, Op::Gather(_));
                if fold && !to_output[t] {
                    steps[t].inputs[0]
                } else {
                    t
                }
            })
            .collect();
        // The region: descendants of the targets that the output depends on.
        let mut from_target = vec![false; steps.len()];
        for &t in &sources {
            from_target[t] = true;
        }
        // Methods that need the input's gradient backpropagate through everything.
        from_target[0] |= to_input;
        for s in 0..steps.len() {
            from_target[s] |= steps[s].inputs.iter().any(|&i| from_target[i]);
        }
        let in_region: Vec<bool> = from_target
            .iter()
            .zip(&to_output)
            .map(|(a, b)| *a && *b)
            .collect();
        if let Some(&t) = sources.iter().find(|&&t| !in_region[t]) {
            return Err(Error::Invalid(format!(
                "the output does not depend on layer `{}`",
                steps[t].name
            )));
        }
        Ok(Self {
            steps,
            targets,
            sources,
            in_region,
        })
    }

    /// Whether target `k` is folded (its gradient is gathered from its source's).
    pub fn folded(&self, k: usize) -> bool {
        self.sources[k] != self.targets[k]
    }
}

/// ReLU6, or a Clip to [0, 6] (ONNX exports ReLU6 as one).
fn is_relu6(op: &Op) -> bool {
    match op {
        Op::Relu6(_) => true,
        Op::Clip(c) => c.min == Some(0.0) && c.max == Some(6.0),
        _ => false,
    }
}

impl Step {
    /// The lowered op as its concrete type (e.g. `ConvStep`), if it is one.
    pub fn lowered<T: Lowered>(&self) -> Option<&T> {
        let any: &dyn std::any::Any = self.op.as_ref();
        any.downcast_ref()
    }
}
