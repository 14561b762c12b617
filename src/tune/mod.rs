//! Conv autotuning: per distinct conv (geometry, batch rows, direction) of a plan, time the
//! kernel variants this adapter can run and keep the fastest, remembered per adapter and
//! driver in a JSON file next to the pipeline cache ([`cache`]).

mod cache;
mod measure;

use crate::gpu::GpuContext;
use crate::graph::{Graph, Op};
use crate::ops::Precision;
use crate::ops::conv::{
    ConvLayout, ConvShape, ConvVariant, conv_variants, default_variants, winograd_eligible,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub use cache::TuneCache;

/// How much tuning an engine does before lowering its convs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tune {
    /// The fixed per-adapter choice ([`crate::ops::conv::default_variant`]); the library's
    /// default, so results never depend on timings unless asked.
    #[default]
    Off,
    /// Forward passes of the [`FAST_CONVS`] convs with the most multiply-adds, few repeats:
    /// a few seconds on a model's first run on an adapter (the CLI's default).
    Fast,
    /// Every conv, forward and backward-data, more repeats.
    Full,
}

impl Tune {
    pub fn name(self) -> &'static str {
        match self {
            Tune::Off => "off",
            Tune::Fast => "fast",
            Tune::Full => "full",
        }
    }
}

impl std::str::FromStr for Tune {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "off" => Ok(Tune::Off),
            "fast" => Ok(Tune::Fast),
            "full" => Ok(Tune::Full),
            _ => Err(format!("unknown tune mode {s:?} (off, fast, full)")),
        }
    }
}

/// Convs [`Tune::Fast`] times (the rest keep the fixed choice).
pub const FAST_CONVS: usize = 6;
/// Images [`Tune::Fast`] times each conv at (the choice is kept for the real batch rows).
const FAST_ROWS: usize = 2;
/// How much faster than the fixed choice another kernel must run at [`FAST_ROWS`] for
/// [`Tune::Fast`] to take it: resnet18's 64-channel 3x3 conv at 56x56 timed subgroup 14.0 ms
/// against texture 16.0 at 2 images, yet texture runs it 1.5x faster at 16.
const FAST_MARGIN: f64 = 1.25;
/// Wall seconds after which [`Tune::Fast`] times no further conv (those left keep the fixed
/// choice, uncached, so a later run tunes them).
const FAST_SECONDS: f64 = 4.0;

/// A kernel a conv direction can run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pick {
    Blocked,
    Tiled,
    Subgroup,
    Texture,
    /// Forward only: Winograd F(4x4, 3x3) on the texture kernel.
    Winograd,
}

impl Pick {
    pub fn name(self) -> &'static str {
        match self {
            Pick::Blocked => "blocked",
            Pick::Tiled => "tiled",
            Pick::Subgroup => "subgroup",
            Pick::Texture => "texture",
            Pick::Winograd => "winograd",
        }
    }
    fn of(v: ConvVariant) -> Self {
        match v {
            ConvVariant::Blocked => Pick::Blocked,
            ConvVariant::Tiled => Pick::Tiled,
            ConvVariant::Subgroup => Pick::Subgroup,
            ConvVariant::Texture => Pick::Texture,
        }
    }
    fn variant(self) -> ConvVariant {
        match self {
            Pick::Blocked => ConvVariant::Blocked,
            Pick::Tiled => ConvVariant::Tiled,
            Pick::Subgroup => ConvVariant::Subgroup,
            Pick::Texture | Pick::Winograd => ConvVariant::Texture,
        }
    }
}

/// The kernels direction `backward` of `s` may be tuned over: [`conv_variants`], and with
/// `winograd` (`--winograd`) for the forward pass Winograd where [`winograd_eligible`].
/// Winograd is opt-in: its maps differ from the direct convolution's by more than 1e-3 in
/// some pytorch-grad-cam parity cases (README, "Parity"), so tuning alone never picks it.
pub fn candidates(ctx: &GpuContext, s: &ConvShape, backward: bool, winograd: bool) -> Vec<Pick> {
    let mut v: Vec<Pick> = conv_variants(ctx, s, backward)
        .into_iter()
        .map(Pick::of)
        .collect();
    if winograd && !backward && winograd_eligible(ctx, s) {
        v.push(Pick::Winograd);
    }
    v
}

/// The untuned choice for `s` (`winograd`: `--winograd`, as
/// [`crate::ops::conv::ConvWeight::upload_fast`] decides it).
fn fixed(ctx: &GpuContext, s: &ConvShape, winograd: bool) -> [Pick; 2] {
    let [f, b] = default_variants(ctx, s).map(Pick::of);
    let fast = winograd && f == Pick::Texture && s.in_c >= 32 && winograd_eligible(ctx, s);
    [if fast { Pick::Winograd } else { f }, b]
}

/// The cache's key of one conv direction at `s.batch` rows.
pub fn conv_key(s: &ConvShape, backward: bool) -> String {
    let (p, e) = (s.padding, s.padding_end);
    format!(
        "{} n{} c{} {}x{} o{} k{}x{} s{}x{} p{},{},{},{} d{}x{} g{}",
        if backward { "bwd" } else { "fwd" },
        s.batch,
        s.in_c,
        s.in_h,
        s.in_w,
        s.out_c,
        s.kernel[0],
        s.kernel[1],
        s.stride[0],
        s.stride[1],
        p[0],
        p[1],
        e[0],
        e[1],
        s.dilation[0],
        s.dilation[1],
        s.groups
    )
}

/// Where a conv direction's kernel came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Not tuned: the fixed choice.
    Fixed,
    /// The tune cache.
    Cache,
    /// Timed in this run.
    Measured,
    /// `--winograd` forces it.
    Forced,
}

/// One direction of one distinct conv.
#[derive(Clone, Debug, Serialize)]
pub struct TunedConv {
    /// The first graph node with this geometry.
    pub node: String,
    pub key: String,
    pub pick: Pick,
    pub source: Source,
    /// Median GPU milliseconds per candidate, where measured (now or in the cache).
    pub times_ms: BTreeMap<Pick, f64>,
}

/// What tuning chose, for lowering and for `bench`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Tuning {
    pub mode: &'static str,
    /// Wall seconds spent tuning (cache included).
    pub seconds: f64,
    /// Timed candidate runs (0 when everything came from the cache).
    pub measurements: usize,
    pub convs: Vec<TunedConv>,
    /// Why nothing was tuned, where so.
    pub note: Option<String>,
    /// The batch rows the keys were made at.
    #[serde(skip)]
    rows: usize,
    #[serde(skip)]
    winograd: bool,
}

impl Tuning {
    /// The variants (forward, backward-data) and whether the forward pass is Winograd for
    /// the conv `s` (any batch), where tuning chose anything for it.
    pub fn choice(&self, ctx: &GpuContext, s: &ConvShape) -> Option<([ConvVariant; 2], bool)> {
        let s = ConvShape {
            batch: self.rows,
            ..*s
        };
        let find = |backward| {
            let key = conv_key(&s, backward);
            self.convs.iter().find(|c| c.key == key).map(|c| c.pick)
        };
        let (f, b) = (find(false), find(true));
        if f.is_none() && b.is_none() {
            return None;
        }
        let [df, db] = fixed(ctx, &s, self.winograd);
        let (f, b) = (f.unwrap_or(df), b.unwrap_or(db));
        Some(([f.variant(), b.variant()], f == Pick::Winograd))
    }

    /// One line per tuned conv direction (`bench`, `gradcam tune`).
    pub fn table(&self) -> String {
        let mut out = String::new();
        for c in &self.convs {
            let times: Vec<String> = c
                .times_ms
                .iter()
                .map(|(p, t)| format!("{} {t:.2}", p.name()))
                .collect();
            out += &format!(
                "  {:<52} {:<9} {:<8} {:<24} {}\n",
                c.key,
                c.pick.name(),
                format!("{:?}", c.source).to_lowercase(),
                c.node,
                times.join(", ")
            );
        }
        out
    }
}

/// The graph's non-depthwise convs at `rows` images of `size`, with their node names.
pub fn graph_convs(
    graph: &Graph,
    size: [usize; 2],
    rows: usize,
) -> crate::Result<Vec<(String, ConvShape)>> {
    let shapes = graph.shapes(size)?;
    Ok(graph
        .nodes
        .iter()
        .filter_map(|n| match &n.op {
            Op::Conv2d(c) => Some((n.name.clone(), c.geometry(rows, shapes[n.inputs[0]]))),
            _ => None,
        })
        .filter(|(_, s)| !s.is_depthwise())
        .collect())
}

/// Tunes `convs` (graph node name, geometry at the batch rows it runs at) as `mode` says,
/// through `cache` (read before, written after). `winograd` (`--winograd`) forces the
/// forward pass of the convs [`crate::ops::conv::ConvWeight::upload_fast`] would run as
/// Winograd. Failures never stop the engine: a variant that fails is skipped.
pub async fn tune_convs(
    ctx: &GpuContext,
    convs: &[(String, ConvShape)],
    mode: Tune,
    winograd: bool,
    cache: &mut TuneCache,
) -> Tuning {
    let clock = measure::Clock::start();
    let rows = convs.first().map_or(0, |c| c.1.batch);
    let mut t = Tuning {
        mode: mode.name(),
        rows,
        winograd,
        ..Default::default()
    };
    if mode == Tune::Off || convs.is_empty() {
        return t;
    }
    // Distinct geometries, most multiply-adds (over their repeats) first.
    let mut distinct: Vec<(String, ConvShape, usize)> = Vec::new();
    for (name, s) in convs {
        match distinct.iter_mut().find(|d| d.1 == *s) {
            Some(d) => d.2 += s.macs(),
            None => distinct.push((name.clone(), *s, s.macs())),
        }
    }
    distinct.sort_by_key(|d| std::cmp::Reverse(d.2));
    let (dirs, take, repeats, rows, budget): (&[bool], _, _, _, _) = match mode {
        Tune::Full => (&[false, true], distinct.len(), 5, rows, f64::INFINITY),
        _ => (&[false], FAST_CONVS, 2, rows.min(FAST_ROWS), FAST_SECONDS),
    };
    let mut timer = None;
    for (name, s, _) in distinct.into_iter().take(take) {
        for &backward in dirs {
            let key = conv_key(&s, backward);
            let mut row = TunedConv {
                node: name.clone(),
                key: key.clone(),
                pick: fixed(ctx, &s, winograd)[backward as usize],
                source: Source::Fixed,
                times_ms: BTreeMap::new(),
            };
            if row.pick == Pick::Winograd {
                row.source = Source::Forced;
            } else if let Some(e) = cache
                .get(&key)
                .filter(|e| candidates(ctx, &s, backward, winograd).contains(&e.pick))
            {
                row.pick = e.pick;
                row.times_ms = e.times_ms.clone();
                row.source = Source::Cache;
            } else if clock.seconds() < budget {
                let timer = match &mut timer {
                    Some(m) => m,
                    None => match measure::Timer::new(ctx) {
                        Some(m) => timer.insert(m),
                        None => {
                            t.note = Some("no timestamp queries on this adapter".into());
                            break;
                        }
                    },
                };
                let fixed = fixed(ctx, &s, false).map(Pick::variant);
                let probe = ConvShape { batch: rows, ..s };
                // The fixed choice first: the bar the others' warm-up runs must clear.
                let mut picks = candidates(ctx, &s, backward, winograd);
                picks.sort_by_key(|&p| p != row.pick);
                for pick in picks {
                    let best = row.times_ms.values().copied().fold(f64::INFINITY, f64::min);
                    let ms = timer
                        .time(&probe, backward, pick, fixed, repeats, best)
                        .await;
                    t.measurements += 1;
                    if let Some(ms) = ms {
                        row.times_ms.insert(pick, ms);
                    }
                }
                if let Some((&p, &ms)) = row.times_ms.iter().min_by(|a, b| a.1.total_cmp(b.1)) {
                    // Fast mode leaves the fixed choice only for a clear win at its probe
                    // size, which can rank kernels otherwise than the engine's batch does.
                    let fixed_ms = row.times_ms.get(&row.pick).copied();
                    let clear = fixed_ms.is_none_or(|f| ms * FAST_MARGIN <= f);
                    row.pick = if mode == Tune::Full || clear {
                        p
                    } else {
                        row.pick
                    };
                    row.source = Source::Measured;
                    cache.insert(key, row.pick, row.times_ms.clone());
                }
            }
            t.convs.push(row);
        }
    }
    cache.save();
    t.seconds = clock.seconds();
    t
}

/// [`tune_convs`] over a graph's convs, with the cache next to the pipeline cache (skipped
/// for f16 weights, which have one kernel per adapter class).
pub async fn tune_graph(
    ctx: &GpuContext,
    graph: &Graph,
    size: [usize; 2],
    rows: usize,
    mode: Tune,
    winograd: bool,
    precision: Precision,
) -> crate::Result<Tuning> {
    if mode == Tune::Off || precision != Precision::F32 {
        return Ok(Tuning {
            mode: Tune::Off.name(),
            ..Default::default()
        });
    }
    let convs = graph_convs(graph, size, rows)?;
    let mut cache = TuneCache::open(ctx);
    Ok(tune_convs(ctx, &convs, mode, winograd, &mut cache).await)
}

/// The packing a [`Pick`]'s weights get.
pub fn layout_of(pick: Pick) -> ConvLayout {
    match pick {
        Pick::Blocked | Pick::Tiled => ConvLayout::Quad,
        Pick::Subgroup => ConvLayout::Lanes,
        Pick::Texture => ConvLayout::Texels,
        Pick::Winograd => ConvLayout::Winograd,
    }
}
