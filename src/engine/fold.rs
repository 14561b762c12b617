//! Folded target layers (pytorch-grad-cam's `reshape_transform`): a layer read through an
//! index map as `[C, h, w]`. The engine inserts a [`Gather`] node right after the layer and
//! targets it; the plan stops the backward at the layer and gathers its gradient too.

use crate::error::{Error, Result};
use crate::graph::{Gather, Graph, Node, Op, elements};

/// How a target layer is read: element `i` of the folded `[C, h, w]` tensor (row-major, per
/// image) is the layer's flat per-image element `index[i]` (row-major over its own shape).
/// Activations and gradients are both folded; the map must be injective.
#[derive(Clone, Debug, PartialEq)]
pub struct Fold {
    /// `[C, h, w]`: channels and the map's grid.
    pub shape: [usize; 3],
    pub index: Vec<u32>,
}

/// `graph` with a gather node after each folded target, and the nodes to target: the
/// gather where `folds[k]` is set, else the layer. `folds` is empty or one per target.
pub(super) fn fold_graph(
    graph: &Graph,
    names: &[String],
    targets: &[usize],
    folds: &[Option<Fold>],
    size: [usize; 2],
) -> Result<(Graph, Vec<usize>)> {
    if folds.iter().all(Option::is_none) {
        return Ok((graph.clone(), targets.to_vec()));
    }
    if folds.len() != targets.len() {
        return Err(Error::Invalid(format!(
            "{} folds for {} layers: give one (or None) per layer",
            folds.len(),
            targets.len()
        )));
    }
    let shapes = graph.shapes(size)?;
    // Gather nodes to insert after each node, in the order of the layers.
    let mut after: Vec<Vec<(usize, Gather)>> = vec![Vec::new(); graph.nodes.len()];
    for (k, (fold, &t)) in folds.iter().zip(targets).enumerate() {
        let Some(f) = fold else { continue };
        let bad = |m: String| Error::Invalid(format!("layer `{}`: fold {m}", names[k]));
        if t == graph.output() {
            return Err(bad("of the output: pick a layer before it".into()));
        }
        let op = Gather {
            shape: f.shape,
            index: f.index.clone(),
        };
        crate::graph::NodeOp::check(&op).map_err(bad)?;
        op.check_input(elements(shapes[t])).map_err(|m| {
            bad(format!(
                "(layer shape {:?}, {} elements): {m}",
                shapes[t],
                elements(shapes[t])
            ))
        })?;
        after[t].push((k, op));
    }
    // Old node i moves to new[i]; the gathers follow their layers.
    let mut new = Vec::with_capacity(graph.nodes.len());
    let mut next = 0;
    for a in &after {
        new.push(next);
        next += 1 + a.len();
    }
    let mut nodes = Vec::with_capacity(next);
    let mut out = targets.iter().map(|&t| new[t]).collect::<Vec<_>>();
    for (i, n) in graph.nodes.iter().enumerate() {
        nodes.push(Node {
            inputs: n.inputs.iter().map(|&j| new[j]).collect(),
            ..n.clone()
        });
        for (k, op) in after[i].drain(..) {
            out[k] = nodes.len();
            nodes.push(Node {
                name: format!("{}#fold{k}", n.name),
                op: Op::Gather(op),
                inputs: vec![new[i]],
            });
        }
    }
    let aliases = graph
        .aliases
        .iter()
        .map(|(a, &i)| (a.clone(), new[i]))
        .collect();
    Ok((Graph { nodes, aliases }, out))
}

impl Fold {
    /// The channel of each of the layer's `len` per-image elements, as Ablation-CAM ablates
    /// them: folded elements take their folded channel; the others (a ViT's prefix tokens)
    /// the channel of the layer's own channel axis where the fold keeps one, last (tokens
    /// `[T, C]`, Swin's `[h, w, C]`) or first; else `u32::MAX`, none.
    pub fn channel_map(&self, len: usize) -> Vec<u32> {
        let [c, h, w] = self.shape;
        let plane = (h * w).max(1);
        let mut map = vec![u32::MAX; len];
        for (i, &j) in self.index.iter().enumerate() {
            if let Some(m) = map.get_mut(j as usize) {
                *m = (i / plane) as u32;
            }
        }
        let folded = |axis: &dyn Fn(usize) -> usize| {
            self.index
                .iter()
                .enumerate()
                .all(|(i, &j)| axis(j as usize) == i / plane)
        };
        let axis: Option<Box<dyn Fn(usize) -> usize>> = if c == 0 || !len.is_multiple_of(c) {
            None
        } else if folded(&|j| j % c) {
            Some(Box::new(move |j| j % c))
        } else if folded(&|j| j / (len / c)) {
            Some(Box::new(move |j| j / (len / c)))
        } else {
            None
        };
        if let Some(axis) = axis {
            for (j, m) in map.iter_mut().enumerate() {
                if *m == u32::MAX {
                    *m = axis(j) as u32;
                }
            }
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::Fold;

    /// A ViT layer `[1 + 2·2, 3]` folded as pytorch-grad-cam's ViT recipe: the class token's
    /// elements join their channel; a channels-first fold of `[3, 2, 2]` plus a prefix.
    #[test]
    fn channel_maps() {
        let (c, grid) = (3usize, 4usize);
        let vit = Fold {
            shape: [c, 2, 2],
            index: (0..c * grid)
                .map(|i| ((1 + i % grid) * c + i / grid) as u32)
                .collect(),
        };
        assert_eq!(
            vit.channel_map(15),
            (0..15).map(|j| (j % c) as u32).collect::<Vec<_>>()
        );
        let first = Fold {
            shape: [c, 1, 2],
            index: (0..6).map(|i| ((i / 2) * 3 + 1 + i % 2) as u32).collect(),
        };
        assert_eq!(first.channel_map(9), vec![0, 0, 0, 1, 1, 1, 2, 2, 2]);
        let odd = Fold {
            shape: [2, 1, 1],
            index: vec![4, 0],
        };
        assert_eq!(odd.channel_map(5), vec![1, u32::MAX, u32::MAX, u32::MAX, 0]);
    }
}
