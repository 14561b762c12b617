//! LeGrad (torchcam 0.5's `LeGrad`, Bousselham et al. 2024) as a graph transform and a CAM
//! stage. Per selected transformer block l, the block's own class score
//! `s^l = head(final_norm(mean over tokens of o_l))` is appended to the graph; a stop-gradient
//! after each `o_l` keeps `s^l` from reaching any other block's attention, and the output
//! becomes `detach(logits) + (S - detach(S))` with `S = sum_l s^l`: its value is the logits,
//! its gradient `dS`. The targets are the blocks' attention probabilities `A^l`, folded to
//! `[heads x queries, h, w]` over the keys after the prefix tokens; the map is the mean over
//! heads, queries and blocks of `ReLU(dS/dA^l)`, min-max normalised, then upsampled.

use super::fold::Fold;
use super::reshape::{Reshape, vit_prefix};
use super::{Engine, Method};
use crate::error::{Error, Result};
use crate::gpu::Dispatch;
use crate::graph::ops::add::Add;
use crate::graph::ops::alias::Reshape as ReshapeOp;
use crate::graph::ops::binary::{Binary, BinaryKind};
use crate::graph::ops::detach::Detach;
use crate::graph::ops::layer_norm::LayerNorm;
use crate::graph::ops::linear::Linear;
use crate::graph::ops::reduce_mean::ReduceMean;
use crate::graph::{Graph, Node, Op, Shape, elements};
use crate::model::Model;
use crate::ops::cam::{CamShape, Term};
use crate::ops::eltwise::Merge;

/// The LeGrad graph, its target nodes (the attention probabilities, one per block) and their
/// folds; `layers` are the block names, the last block when empty (then filled in).
pub(super) fn legrad_graph(
    model: &Model,
    layers: &mut Vec<String>,
    reshape: Reshape,
    size: [usize; 2],
) -> Result<(Graph, Vec<usize>, Vec<Option<Fold>>)> {
    let graph = &model.graph;
    let shapes = graph.shapes(size)?;
    let missing = |what: &str| {
        Error::Invalid(format!(
            "--method legrad needs a vision transformer (torchvision VisionTransformer): {what}"
        ))
    };
    let tokens = |s: Shape| s[2] == 1 && s[0] > 1 && s[1] > 1;
    // The final norm: the last LayerNorm over the embedding of a token tensor.
    let norm = (0..graph.nodes.len())
        .rev()
        .find_map(|i| match &graph.nodes[i].op {
            Op::LayerNorm(ln) if tokens(shapes[i]) && ln.features == shapes[i][1] => {
                Some((i, ln.clone()))
            }
            _ => None,
        })
        .ok_or_else(|| missing("no LayerNorm over token embeddings (the encoder's final norm)"))?;
    let embed = norm.1.features;
    // The head: a Linear over the embedding that gives the output (torchvision's heads.head).
    let out = graph.output();
    let head = match &graph.nodes[unaliased(graph, out)].op {
        Op::Linear(l) if l.in_features == embed => l.clone(),
        _ => {
            return Err(missing(&format!(
                "the output is not a Linear head taking {embed} features"
            )));
        }
    };
    let classes = shapes[out];
    if classes != [head.out_features, 1, 1] {
        return Err(missing(&format!(
            "the head gives {} classes but the output has shape {classes:?}",
            head.out_features
        )));
    }
    if layers.is_empty() {
        // The last block: the final norm's input.
        let o = graph.nodes[norm.0].inputs[0];
        let name = graph
            .aliases
            .iter()
            .filter(|&(_, &i)| i == o)
            .map(|(a, _)| a)
            .max_by_key(|a| (a.matches('.').count(), a.len()))
            .unwrap_or(&graph.nodes[o].name);
        layers.push(name.clone());
    }
    let mut blocks: Vec<(&str, usize)> = Vec::new();
    for name in layers.iter() {
        let o = model.find_layer(name)?;
        let s = shapes[o];
        if !tokens(s) || s[1] != embed {
            return Err(Error::Invalid(format!(
                "--method legrad: layer `{name}` has per-image shape {s:?}, not a transformer \
                 block's tokens [T, {embed}, 1]"
            )));
        }
        if o >= norm.0 {
            return Err(Error::Invalid(format!(
                "--method legrad: layer `{name}` is not before the final norm `{}`",
                graph.nodes[norm.0].name
            )));
        }
        if !residual(graph, o) {
            return Err(Error::Invalid(format!(
                "--method legrad: layer `{name}` is not a transformer block's output (a \
                 residual sum); name blocks, such as encoder.layers.encoder_layer_0"
            )));
        }
        if let Some(&(other, _)) = blocks.iter().find(|b| b.1 == o) {
            return Err(Error::Invalid(format!(
                "--method legrad: layers `{other}` and `{name}` are the same block"
            )));
        }
        blocks.push((name.as_str(), o));
    }
    let mut order: Vec<usize> = (0..blocks.len()).collect();
    order.sort_by_key(|&k| blocks[k].1);
    // Each block's attention: the last Softmax before its output, after the previous block's.
    let mut attn = vec![0; blocks.len()];
    let mut prev = 0;
    for &k in &order {
        let (name, o) = blocks[k];
        let t = shapes[o][0];
        let (a, axis) = (prev + 1..o)
            .rev()
            .find_map(|i| match &graph.nodes[i].op {
                Op::Softmax(sm) => Some((i, sm.axis)),
                _ => None,
            })
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "--method legrad: no attention Softmax in block `{name}` (none between \
                     node {prev} and its output); name transformer blocks, not their parts"
                ))
            })?;
        let sa = shapes[a];
        // Keys innermost: softmax over an axis of T with only 1s after it.
        if sa[axis] != t
            || sa[axis + 1..].iter().any(|&d| d != 1)
            || !elements(sa).is_multiple_of(t * t)
        {
            return Err(Error::Invalid(format!(
                "--method legrad: block `{name}`'s attention `{}` has per-image shape {sa:?} \
                 (softmax axis {}), not [heads, {t}, {t}]",
                graph.nodes[a].name, axis
            )));
        }
        attn[k] = a;
        prev = o;
    }
    let folds = blocks
        .iter()
        .zip(&attn)
        .map(|(&(name, o), &a)| {
            let t = shapes[o][0];
            let grid = match reshape {
                Reshape::Vit(g) => g,
                // The attention always folds: `none` reads as `auto`.
                Reshape::Auto | Reshape::None => None,
                Reshape::Swin(_) => {
                    return Err(Error::Invalid(
                        "--method legrad folds ViT tokens: use --reshape vit[:HxW] or auto".into(),
                    ));
                }
            };
            let (p, g) = vit_prefix(t, grid).ok_or_else(|| {
                Error::Invalid(format!(
                    "--method legrad: block `{name}` has {t} tokens, which {}",
                    match grid {
                        Some([h, w]) =>
                            format!("a {h}x{w} grid with 0 to 2 prefix tokens don't fit"),
                        None => "don't fold to a square grid after 1, 2 or 0 prefix tokens; \
                                 pass --reshape vit:HxW"
                            .into(),
                    }
                ))
            })?;
            Ok(Some(key_fold(elements(shapes[a]) / t, t, p, g)))
        })
        .collect::<Result<Vec<_>>>()?;
    let (graph, targets) = scored_graph(graph, &blocks, &attn, &norm.1, &head, embed)?;
    Ok((graph, targets, folds))
}

/// Whether node `o` is a residual sum (a block's output), through free reshapes.
fn residual(graph: &Graph, o: usize) -> bool {
    matches!(
        graph.nodes[unaliased(graph, o)].op,
        Op::Add(_)
            | Op::Binary(Binary {
                kind: BinaryKind::Add
            })
    )
}

/// The node whose data node `o` is, through free reshapes.
fn unaliased(graph: &Graph, mut o: usize) -> usize {
    while let Op::Flatten(_) | Op::Dropout(_) | Op::Reshape(_) = graph.nodes[o].op {
        o = graph.nodes[o].inputs[0];
    }
    o
}

/// Attention rows `[queries, T]` (all heads' queries) read as `[queries, h, w]` over the keys
/// after the first `p`.
fn key_fold(queries: usize, t: usize, p: usize, [h, w]: [usize; 2]) -> Fold {
    let index = (0..queries)
        .flat_map(|q| (0..h * w).map(move |k| (q * t + p + k) as u32))
        .collect();
    Fold {
        shape: [queries, h, w],
        index,
    }
}

/// `graph` with a detach after each block output (read by its original consumers), each
/// block's score appended, and the output `detach(logits) + (S - detach(S))`; with the
/// attention nodes' new indices.
fn scored_graph(
    graph: &Graph,
    blocks: &[(&str, usize)],
    attn: &[usize],
    norm: &LayerNorm,
    head: &Linear,
    embed: usize,
) -> Result<(Graph, Vec<usize>)> {
    let detach_after: Vec<bool> = {
        let mut v = vec![false; graph.nodes.len()];
        blocks.iter().for_each(|&(_, o)| v[o] = true);
        v
    };
    // Old node i moves to new[i]; its consumers read read[i] (its detach, if any).
    let (mut new, mut read) = (Vec::new(), Vec::new());
    let mut nodes: Vec<Node> = Vec::with_capacity(graph.nodes.len() + 8 * blocks.len() + 4);
    for (i, n) in graph.nodes.iter().enumerate() {
        new.push(nodes.len());
        nodes.push(Node {
            inputs: n.inputs.iter().map(|&j| read[j]).collect(),
            ..n.clone()
        });
        read.push(nodes.len() - 1);
        if detach_after[i] {
            read[i] = nodes.len();
            nodes.push(Node {
                name: format!("{}#legrad_detach", n.name),
                op: Op::Detach(Detach),
                inputs: vec![new[i]],
            });
        }
    }
    let push = |nodes: &mut Vec<Node>, name: String, op: Op, inputs: Vec<usize>| {
        nodes.push(Node { name, op, inputs });
        nodes.len() - 1
    };
    let mut sum = None;
    for (k, &(_, o)) in blocks.iter().enumerate() {
        let tag = |s: &str| format!("legrad#{k}.{s}");
        let m = push(
            &mut nodes,
            tag("mean"),
            Op::ReduceMean(ReduceMean { start: 0, end: 1 }),
            vec![new[o]],
        );
        let v = push(
            &mut nodes,
            tag("flat"),
            Op::Reshape(ReshapeOp {
                shape: [embed, 1, 1],
            }),
            vec![m],
        );
        let ln = LayerNorm {
            axis: 0,
            ..norm.clone()
        };
        let v = push(&mut nodes, tag("norm"), Op::LayerNorm(ln), vec![v]);
        let lin = Linear {
            axis: 0,
            ..head.clone()
        };
        let s = push(&mut nodes, tag("score"), Op::Linear(lin), vec![v]);
        sum = Some(match sum {
            None => s,
            Some(acc) => push(&mut nodes, tag("sum"), Op::Add(Add), vec![acc, s]),
        });
    }
    let s = sum.ok_or_else(|| Error::Invalid("--method legrad needs at least one block".into()))?;
    let logits = new[graph.output()];
    let ds = push(
        &mut nodes,
        "legrad#detach_sum".into(),
        Op::Detach(Detach),
        vec![s],
    );
    let zero = push(
        &mut nodes,
        "legrad#sum_minus_detached".into(),
        Op::Binary(Binary {
            kind: BinaryKind::Sub,
        }),
        vec![s, ds],
    );
    let dl = push(
        &mut nodes,
        "legrad#detach_logits".into(),
        Op::Detach(Detach),
        vec![logits],
    );
    push(
        &mut nodes,
        "legrad#logits".into(),
        Op::Add(Add),
        vec![dl, zero],
    );
    let aliases = graph
        .aliases
        .iter()
        .map(|(a, &i)| (a.clone(), new[i]))
        .collect();
    let out = Graph { nodes, aliases };
    out.validate()?;
    Ok((out, attn.iter().map(|&a| new[a]).collect()))
}

impl Engine {
    /// The LeGrad map of `rows` gradient rows: per block, the channel sum of ReLU(gradient)
    /// over its folded attention, averaged (heads x queries, blocks) at the grid's size in
    /// `layer_map`; min-max normalised there, then upsampled into `cam_big` (torchcam
    /// normalises before any resize).
    pub(super) fn legrad_stage(&self, d: &mut Vec<Dispatch>, rows: usize, tc: usize) {
        let (ctx, ops, dummy) = (&self.ctx, &self.ops, &self.ops.dummy);
        let [h, w] = self.cfg.size;
        let layers = self.plan.targets.len();
        let [_, th, tw] = self.plan.steps[self.plan.targets[0]].shape;
        for (li, &t) in self.plan.targets.iter().enumerate() {
            let [c, _, _] = self.plan.steps[t].shape;
            let shape = CamShape {
                rows,
                channels: c,
                plane: th * tw,
                rep: tc,
            };
            let g = self.grads[t]
                .as_ref()
                .expect("legrad targets have gradients");
            let a = self.act(t);
            d.push(ops.cam.combine(
                ctx,
                &shape,
                Term::ReluGrad,
                a,
                g,
                &self.alpha,
                &self.cam_small,
            ));
            let scale = 1.0 / (c * layers) as f32;
            let merge = if li == 0 {
                Merge::Set(scale)
            } else {
                Merge::Add(scale)
            };
            d.push(ops.eltwise.combine_into(
                ctx,
                rows * th * tw,
                merge,
                &self.cam_small,
                &self.layer_map,
                dummy,
            ));
        }
        d.push(
            ops.cam
                .normalize(ctx, rows, th * tw, &self.layer_map, dummy),
        );
        d.push(ops.image.upsample(
            ctx,
            rows,
            [th, tw],
            [h, w],
            &self.layer_map,
            &self.cam_big,
            dummy,
        ));
    }
}

/// LeGrad's blocks share one grid: the folds' `[_, h, w]` agree.
pub(super) fn check_grids(method: Method, folds: &[Option<Fold>]) -> Result<()> {
    if method != Method::LeGrad {
        return Ok(());
    }
    let grids: Vec<_> = folds
        .iter()
        .flatten()
        .map(|f| [f.shape[1], f.shape[2]])
        .collect();
    if grids.windows(2).any(|p| p[0] != p[1]) {
        return Err(Error::Invalid(format!(
            "--method legrad: the blocks' grids differ ({grids:?}); pick blocks of one grid"
        )));
    }
    Ok(())
}
