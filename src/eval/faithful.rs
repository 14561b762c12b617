//! The reference implementations' faithfulness metrics, on normalised inputs and maps held on
//! the host: pgc's ROAD ([`super::road`]) and `CamMultImageConfidenceChange`, torch-cam's
//! deletion/insertion ([`super::torchcam`]). Every perturbed input of a batch of maps is one
//! job; jobs are composed in parallel (the ROAD imputations are sparse solves) and scored in
//! passes of the scorer's capacity, so nothing larger than one pass is held at once.

use super::imputer::NoisyLinearImputer;
use super::road::{PERCENTILES, Ranked, RoadCurve};
use super::{arcc, torchcam};
use crate::error::Result;
use rayon::prelude::*;

#[derive(Clone, Debug, PartialEq)]
pub struct FaithConfig {
    /// ROAD percentiles (empty: no ROAD).
    pub road_percentiles: Vec<u32>,
    pub imputer: NoisyLinearImputer,
    /// torch-cam deletion/insertion steps (0: skip).
    pub tc_steps: usize,
    /// Also ROAD at ARCC's percentiles.
    pub arcc: bool,
}

impl Default for FaithConfig {
    fn default() -> Self {
        Self {
            road_percentiles: PERCENTILES.to_vec(),
            imputer: NoisyLinearImputer::default(),
            tc_steps: torchcam::DEFAULT_STEPS,
            arcc: true,
        }
    }
}

impl FaithConfig {
    /// Every percentile ROAD is computed at: the asked ones and ARCC's.
    pub fn all_percentiles(&self) -> Vec<u32> {
        let mut ps = self.road_percentiles.clone();
        if self.arcc {
            ps.extend(arcc::PERCENTILES);
        }
        ps.sort_unstable();
        ps.dedup();
        ps
    }
}

/// Softmax probabilities `[rows, classes]` of `rows` normalised inputs.
pub type ScoreFn<'a> = dyn FnMut(&[f32], usize) -> Result<Vec<f32>> + 'a;

/// One map to measure: the normalised input `[3, H, W]`, the map `[H, W]`, the class scored.
pub struct MapRow<'a> {
    pub input: &'a [f32],
    pub cam: &'a [f32],
    pub class: usize,
    /// Distinct per map of a run: picks the imputer's noise streams.
    pub id: u64,
}

/// One map's results: score changes, AUCs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MapScores {
    pub road: Option<RoadCurve>,
    /// `CamMultImageConfidenceChange`: score(input ⊙ map) − score(input).
    pub cam_mult: f64,
    /// torch-cam's (deletion, insertion) AUCs.
    pub tc: Option<(f64, f64)>,
}

/// `input ⊙ map` (the map broadcast over channels): pgc's `multiply_tensor_with_cam`, and
/// the input of ARCC's coherency.
pub fn mult(input: &[f32], cam: &[f32]) -> Vec<f32> {
    let n = cam.len();
    input
        .iter()
        .enumerate()
        .map(|(i, v)| v * cam[i % n])
        .collect()
}

/// An image as the network input `[3, H, W]` = (x / 255 − mean) / std, as the engine's
/// preprocessing computes it.
pub fn normalize(img: &image::RgbImage, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let mut out = Vec::with_capacity(3 * img.as_raw().len() / 3);
    for c in 0..3 {
        out.extend(
            img.pixels()
                .map(|p| (p[c] as f32 / 255.0 - mean[c]) / std[c]),
        );
    }
    out
}

#[derive(Clone, Copy)]
enum Job {
    Plain,
    Mult,
    Road {
        p: usize,
        least: bool,
    },
    /// Every position at the baseline: deletion's last point, insertion's first.
    TcBaseline,
    Tc {
        point: usize,
        insertion: bool,
    },
}

struct Prep {
    morf: Option<Ranked>,
    lerf: Option<Ranked>,
    ranks: Vec<u32>,
}

/// Scores every map. `score(inputs, rows)` returns softmax probabilities `[rows, classes]`
/// for at most `cap` rows of `[3, H, W]` inputs.
pub fn measure(
    rows: &[MapRow],
    size: [usize; 2],
    cfg: &FaithConfig,
    cap: usize,
    classes: usize,
    score: &mut ScoreFn,
) -> Result<Vec<MapScores>> {
    let n = size[0] * size[1];
    let ps = cfg.all_percentiles();
    let counts = torchcam::counts(n, cfg.tc_steps);
    let mut jobs: Vec<(usize, Job)> = Vec::new();
    for r in 0..rows.len() {
        jobs.push((r, Job::Plain));
        jobs.push((r, Job::Mult));
        for p in 0..ps.len() {
            jobs.extend([false, true].map(|least| (r, Job::Road { p, least })));
        }
        if cfg.tc_steps > 0 {
            jobs.push((r, Job::TcBaseline));
            for point in 1..counts.len() - 1 {
                jobs.extend([false, true].map(|insertion| (r, Job::Tc { point, insertion })));
            }
        }
    }
    let preps: Vec<Prep> = rows
        .par_iter()
        .map(|row| Prep {
            morf: (!ps.is_empty()).then(|| Ranked::new(row.cam, false)),
            lerf: (!ps.is_empty()).then(|| Ranked::new(row.cam, true)),
            ranks: if cfg.tc_steps > 0 {
                torchcam::ranks(row.cam)
            } else {
                Vec::new()
            },
        })
        .collect();
    let compose = |&(r, job): &(usize, Job)| -> Result<Vec<f32>> {
        let (row, prep) = (&rows[r], &preps[r]);
        Ok(match job {
            Job::Plain => row.input.to_vec(),
            Job::Mult => mult(row.input, row.cam),
            Job::Road { p, least } => {
                let ranked = if least { &prep.lerf } else { &prep.morf };
                let keep = ranked.as_ref().expect("ROAD prepared").keep(ps[p]);
                let stream = (row.id * ps.len() as u64 + p as u64) * 2 + least as u64;
                cfg.imputer.impute(row.input, &keep, size, stream)?
            }
            Job::TcBaseline => vec![0.0; row.input.len()],
            Job::Tc { point, insertion } => {
                torchcam::perturb(row.input, &prep.ranks, counts[point], insertion)
            }
        })
    };

    // score[row][job index within the row's jobs]
    let mut got: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    for chunk in jobs.chunks(cap.max(1)) {
        let inputs: Vec<Vec<f32>> = chunk.par_iter().map(compose).collect::<Result<_>>()?;
        let flat: Vec<f32> = inputs.concat();
        let probs = score(&flat, chunk.len())?;
        for (j, &(r, _)) in chunk.iter().enumerate() {
            got[r].push(probs[j * classes + rows[r].class] as f64);
        }
    }

    let mut out = Vec::with_capacity(rows.len());
    for s in got {
        let base = s[0];
        let mut next = 2;
        let road = (!ps.is_empty()).then(|| {
            let mut c = RoadCurve {
                percentiles: ps.clone(),
                ..Default::default()
            };
            for _ in &ps {
                c.morf.push(s[next] - base);
                c.lerf.push(s[next + 1] - base);
                next += 2;
            }
            c
        });
        let tc = (cfg.tc_steps > 0).then(|| {
            let m = counts.len();
            let (mut del, mut ins) = (vec![0.0; m], vec![0.0; m]);
            del[0] = base;
            ins[m - 1] = base;
            del[m - 1] = s[next];
            ins[0] = s[next];
            next += 1;
            for point in 1..m - 1 {
                del[point] = s[next];
                ins[point] = s[next + 1];
                next += 2;
            }
            let fr: Vec<f64> = counts.iter().map(|&c| c as f64 / n as f64).collect();
            (torchcam::auc(&del, &fr), torchcam::auc(&ins, &fr))
        });
        out.push(MapScores {
            road,
            cam_mult: s[1] - base,
            tc,
        });
    }
    Ok(out)
}
