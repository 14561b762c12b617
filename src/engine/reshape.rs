//! `--reshape`: how a transformer's token layer folds to the `[C, h, w]` map a CAM reads,
//! as pytorch-grad-cam's `reshape_transform` recipes do (its ViT tutorial drops the class
//! token and folds the rest row-major; its Swin one permutes channels-last to first).

use super::fold::Fold;
use crate::error::{Error, Result};
use crate::graph::Shape;
use crate::model::{Model, Tokens};

/// How target layers fold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reshape {
    /// What the importer knows is a token layer folds: a sequence `[p + h·w, C]` (p = 1, 2
    /// or 0 prefix tokens) as ViT, a channels-last grid `[h, w, C]` as Swin. Any other
    /// layer stays as it is.
    #[default]
    Auto,
    /// No fold: channels-first layers.
    None,
    /// ViT/DeiT tokens `[p + h·w, C]`: the leading p (class, distillation) dropped, the
    /// rest folded row-major to `h × w`. Without a grid, h = w and p is 1, 2 or 0.
    Vit(Option<[usize; 2]>),
    /// Swin: channels-last `[h, w, C]`, or tokens `[h·w, C]` with the grid given or square.
    Swin(Option<[usize; 2]>),
}

impl std::str::FromStr for Reshape {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::Invalid(format!(
                "--reshape `{s}`: expected auto, none, vit, vit:HxW, swin or swin:HxW"
            ))
        };
        let (kind, grid) = match s.split_once(':') {
            Some((k, g)) => {
                let (h, w) = g.split_once('x').ok_or_else(bad)?;
                let side = |v: &str| v.parse::<usize>().ok().filter(|&v| v > 0).ok_or_else(bad);
                (k, Some([side(h)?, side(w)?]))
            }
            None => (s, None),
        };
        match (kind, grid) {
            ("auto", None) => Ok(Self::Auto),
            ("none", None) => Ok(Self::None),
            ("vit", g) => Ok(Self::Vit(g)),
            ("swin", g) => Ok(Self::Swin(g)),
            _ => Err(bad()),
        }
    }
}

/// One fold per layer (`None` where it stays), for layers `layers` at nodes `nodes`.
pub fn folds(
    model: &Model,
    layers: &[String],
    nodes: &[usize],
    reshape: Reshape,
    size: [usize; 2],
) -> Result<Vec<Option<Fold>>> {
    if reshape == Reshape::None {
        return Ok(Vec::new());
    }
    let shapes = model.graph.shapes(size)?;
    layers
        .iter()
        .zip(nodes)
        .map(|(name, &t)| {
            let known = model.tokens.get(&model.graph.nodes[t].name).copied();
            fold_layer(name, shapes[t], known, reshape)
        })
        .collect()
}

/// The fold of one layer of IR shape `shape`.
pub fn fold_layer(
    name: &str,
    shape: Shape,
    known: Option<Tokens>,
    reshape: Reshape,
) -> Result<Option<Fold>> {
    // Tokens `[T, C]` (a 2-D per-image tensor), or channels-last `[h, w, C]`.
    let tokens = shape[2] == 1 && shape[1] > 1;
    let bad = |what: String| {
        Error::Invalid(format!(
            "--reshape: layer `{name}` has per-image shape {shape:?}, which {what}"
        ))
    };
    match reshape {
        Reshape::None => Ok(None),
        Reshape::Auto => Ok(match known {
            Some(Tokens::Grid) => Some(grid_fold(0, [shape[0], shape[1]], shape[2])),
            Some(Tokens::Sequence) if tokens => {
                vit_prefix(shape[0], None).map(|(p, grid)| grid_fold(p, grid, shape[1]))
            }
            _ => None,
        }),
        Reshape::Vit(grid) | Reshape::Swin(grid) if tokens => {
            let t = shape[0];
            let fit = match reshape {
                Reshape::Vit(_) => vit_prefix(t, grid),
                _ => vit_prefix(t, grid.or_else(|| square(t))).filter(|&(p, _)| p == 0),
            };
            let (p, g) = fit.ok_or_else(|| {
                bad(format!(
                    "has {t} tokens: {}",
                    match grid {
                        Some([h, w]) =>
                            format!("a {h}x{w} grid needs {} to {} of them", h * w, h * w + 2),
                        None if matches!(reshape, Reshape::Vit(_)) => {
                            "neither 1, 2 nor 0 prefix tokens leave a square grid; pass vit:HxW"
                                .into()
                        }
                        None => "they are not a square grid; pass swin:HxW".into(),
                    }
                ))
            })?;
            Ok(Some(grid_fold(p, g, shape[1])))
        }
        Reshape::Swin(grid) if shape.iter().all(|&d| d > 1) => {
            let g = [shape[0], shape[1]];
            if grid.is_some_and(|h| h != g) {
                return Err(bad(format!(
                    "is a {}x{} grid of {} channels (channels last), not the grid given",
                    g[0], g[1], shape[2]
                )));
            }
            Ok(Some(grid_fold(0, g, shape[2])))
        }
        Reshape::Vit(_) | Reshape::Swin(_) => Err(bad(
            "is not a token layer: vit folds [1 + h·w, C] tokens, swin [h, w, C] or [h·w, C]"
                .into(),
        )),
    }
}

/// The side of a square `t`.
fn square(t: usize) -> Option<[usize; 2]> {
    let s = (t as f64).sqrt().round() as usize;
    (s * s == t && s > 0).then_some([s, s])
}

/// Prefix tokens and grid for `t` tokens: the grid given (prefix 0 to 2), else a square
/// after 1, 2 or 0 prefix tokens, in that order (class token, distillation token, none).
pub(super) fn vit_prefix(t: usize, grid: Option<[usize; 2]>) -> Option<(usize, [usize; 2])> {
    match grid {
        Some(g) => {
            let p = t.checked_sub(g[0] * g[1])?;
            (p <= 2).then_some((p, g))
        }
        None => [1, 2, 0]
            .into_iter()
            .find_map(|p| Some((p, square(t.checked_sub(p)?)?)))
            .filter(|(_, g)| g[0] > 1),
    }
}

/// Tokens `[p + h·w, C]` (row-major, so also `[h, w, C]` with p = 0) read as `[C, h, w]`.
pub fn grid_fold(p: usize, [h, w]: [usize; 2], c: usize) -> Fold {
    let mut index = Vec::with_capacity(c * h * w);
    for ch in 0..c {
        for pos in 0..h * w {
            index.push(((p + pos) * c + ch) as u32);
        }
    }
    Fold {
        shape: [c, h, w],
        index,
    }
}
