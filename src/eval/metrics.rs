//! The metrics' definitions, applied to per-map statistics computed on the device.

use super::arcc;
use super::faithful::MapScores;
use serde::Serialize;

/// The pointing game (Zhang et al., 2016): a hit when the map's maximum lies within
/// `tolerance` pixels of the target's box `[x0, y0, x1, y1)`.
pub fn pointing_hit(peak: [u32; 2], bbox: [u32; 4], tolerance: f64) -> bool {
    let [x, y] = peak.map(|v| v as f64 + 0.5); // pixel centre
    let [x0, y0, x1, y1] = bbox.map(|v| v as f64);
    let dx = (x0 - x).max(x - x1).max(0.0);
    let dy = (y0 - y).max(y - y1).max(0.0);
    (dx * dx + dy * dy).sqrt() <= tolerance
}

/// The original 15-pixel tolerance (at 224 px) scaled to an image of `size`.
pub fn pointing_tolerance(size: [usize; 2]) -> f64 {
    15.0 * size[0].min(size[1]) as f64 / 224.0
}

/// Intersection over union of two `[x0, y0, x1, y1)` boxes.
pub fn iou(a: [u32; 4], b: [u32; 4]) -> f64 {
    let area =
        |r: [u32; 4]| (r[2].saturating_sub(r[0]) as f64) * (r[3].saturating_sub(r[1]) as f64);
    let inter = [
        a[0].max(b[0]),
        a[1].max(b[1]),
        a[2].min(b[2]),
        a[3].min(b[3]),
    ];
    let i = area(inter);
    let u = area(a) + area(b) - i;
    if u > 0.0 { i / u } else { 0.0 }
}

/// Running sums for one map source; [`Tally::report`] turns them into rates.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub single: usize,
    pub single_hits: usize,
    pub two: usize,
    pub two_hits: usize,
    pub discriminated: usize,
    pub loc: usize,
    pub loc_correct: usize,
    pub drop_sum: f64,
    pub increased: usize,
    pub confidence: usize,
    pub deletion_sum: f64,
    pub insertion_sum: f64,
    pub curves: usize,
    pub failed: usize,
    /// The ROAD percentiles reported; `road_morf[i]`, `road_lerf[i]` sum their changes.
    pub road_percentiles: Vec<u32>,
    pub road_morf: Vec<f64>,
    pub road_lerf: Vec<f64>,
    pub road_n: usize,
    pub cam_mult_sum: f64,
    pub cam_mult_n: usize,
    pub tc_deletion_sum: f64,
    pub tc_insertion_sum: f64,
    pub tc_n: usize,
    pub arcc_sum: f64,
    pub arcc_n: usize,
    /// Maps the reference metrics have seen (numbers the imputer's noise streams).
    pub maps_measured: usize,
}

/// ROAD over a table row's maps: mean score changes per percentile and their summaries.
#[derive(Clone, Debug, Serialize)]
pub struct RoadReport {
    pub percentiles: Vec<u32>,
    /// ROADMostRelevantFirst per percentile (lower is better).
    pub morf: Vec<f64>,
    /// ROADLeastRelevantFirst per percentile (higher is better).
    pub lerf: Vec<f64>,
    pub morf_average: f64,
    pub lerf_average: f64,
    /// ROADCombined = (lerf_average − morf_average) / 2.
    pub combined: f64,
}

/// One table row. Rates are percentages; AUCs are in [0, 1] (deletion: lower is better).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub method: String,
    /// Maps scored: one per (image, ground-truth class).
    pub maps: usize,
    pub pointing_single: f64,
    pub pointing_two: f64,
    pub discrimination: f64,
    pub loc_error: f64,
    pub average_drop: f64,
    pub increase_in_confidence: f64,
    pub deletion_auc: Option<f64>,
    pub insertion_auc: Option<f64>,
    pub road: Option<RoadReport>,
    /// pgc's CamMultImageConfidenceChange: mean score(input ⊙ map) − score(input).
    pub confidence_change: Option<f64>,
    /// torch-cam 0.5's DeletionInsertionMetric (steps 20 unless set).
    pub tc_deletion_auc: Option<f64>,
    pub tc_insertion_auc: Option<f64>,
    /// pgc's ARCC (harmonic mean of coherency, 1 − complexity and ROAD), CAM methods only.
    pub arcc: Option<f64>,
    pub seconds: f64,
    /// Images that could not be read (each also reported with its path).
    pub failed_images: usize,
}

impl Tally {
    /// Adds one map's reference metrics; `coherency` is given for CAM methods (ARCC).
    pub fn add_faithful(&mut self, s: &MapScores, cam: &[f32], coherency: Option<f64>) {
        if let Some(curve) = &s.road {
            let k = self.road_percentiles.len();
            self.road_morf.resize(k, 0.0);
            self.road_lerf.resize(k, 0.0);
            for (i, p) in self.road_percentiles.iter().enumerate() {
                if let Some(j) = curve.percentiles.iter().position(|q| q == p) {
                    self.road_morf[i] += curve.morf[j];
                    self.road_lerf[i] += curve.lerf[j];
                }
            }
            self.road_n += 1;
            if let Some(coh) = coherency {
                let road = curve.combined(&arcc::PERCENTILES);
                self.arcc_sum += arcc::arcc(arcc::complexity(cam), coh, road);
                self.arcc_n += 1;
            }
        }
        self.cam_mult_sum += s.cam_mult;
        self.cam_mult_n += 1;
        if let Some((d, i)) = s.tc {
            self.tc_deletion_sum += d;
            self.tc_insertion_sum += i;
            self.tc_n += 1;
        }
    }

    pub fn report(&self, method: &str, seconds: f64) -> Report {
        let pct = |a: usize, b: usize| {
            if b == 0 {
                f64::NAN
            } else {
                100.0 * a as f64 / b as f64
            }
        };
        let mean = |s: f64, n: usize| (n > 0).then(|| s / n as f64);
        Report {
            method: method.to_string(),
            maps: self.single + self.two,
            pointing_single: pct(self.single_hits, self.single),
            pointing_two: pct(self.two_hits, self.two),
            discrimination: pct(self.discriminated, self.two),
            loc_error: 100.0 - pct(self.loc_correct, self.loc),
            average_drop: 100.0 * mean(self.drop_sum, self.confidence).unwrap_or(f64::NAN),
            increase_in_confidence: pct(self.increased, self.confidence),
            deletion_auc: mean(self.deletion_sum, self.curves),
            insertion_auc: mean(self.insertion_sum, self.curves),
            road: self.road_report(),
            confidence_change: mean(self.cam_mult_sum, self.cam_mult_n),
            tc_deletion_auc: mean(self.tc_deletion_sum, self.tc_n),
            tc_insertion_auc: mean(self.tc_insertion_sum, self.tc_n),
            arcc: mean(self.arcc_sum, self.arcc_n),
            seconds,
            failed_images: self.failed,
        }
    }
}

impl Tally {
    fn road_report(&self) -> Option<RoadReport> {
        if self.road_n == 0 || self.road_percentiles.is_empty() {
            return None;
        }
        let n = self.road_n as f64;
        let morf: Vec<f64> = self.road_morf.iter().map(|v| v / n).collect();
        let lerf: Vec<f64> = self.road_lerf.iter().map(|v| v / n).collect();
        let avg = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (morf_average, lerf_average) = (avg(&morf), avg(&lerf));
        Some(RoadReport {
            percentiles: self.road_percentiles.clone(),
            morf,
            lerf,
            morf_average,
            lerf_average,
            combined: (lerf_average - morf_average) / 2.0,
        })
    }
}

/// The table `gradcam eval` prints.
pub fn table(reports: &[Report]) -> String {
    let mut s = String::new();
    s.push_str(
        "| method | pointing 1-obj % | pointing 2-obj % | class-discrimination % | \
         top-1 loc error % | avg drop % | increase % | deletion AUC ↓ | insertion AUC ↑ | \
         ROAD MoRF ↓ | ROAD LeRF ↑ | ROAD combined ↑ | conf. change ↑ | tc deletion ↓ | \
         tc insertion ↑ | ARCC ↑ | s |\n",
    );
    s.push_str(
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let auc = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    let fine = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    for r in reports {
        let road = |f: fn(&RoadReport) -> f64| fine(r.road.as_ref().map(f));
        s.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |\n",
            r.method,
            r.pointing_single,
            r.pointing_two,
            r.discrimination,
            r.loc_error,
            r.average_drop,
            r.increase_in_confidence,
            auc(r.deletion_auc),
            auc(r.insertion_auc),
            road(|x| x.morf_average),
            road(|x| x.lerf_average),
            road(|x| x.combined),
            fine(r.confidence_change),
            auc(r.tc_deletion_auc),
            auc(r.tc_insertion_auc),
            fine(r.arcc),
            r.seconds
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointing_counts_the_tolerance_from_the_box_edge() {
        let b = [10, 10, 20, 20];
        assert!(pointing_hit([15, 15], b, 0.0));
        assert!(pointing_hit([19, 19], b, 0.0)); // last pixel inside
        assert!(!pointing_hit([20, 15], b, 0.0));
        assert!(pointing_hit([24, 15], b, 4.5)); // centre 24.5, edge 20
        assert!(!pointing_hit([25, 15], b, 4.5));
        assert!(!pointing_hit([24, 24], b, 4.5)); // diagonal distance 6.36
    }

    #[test]
    fn iou_of_boxes() {
        assert_eq!(iou([0, 0, 10, 10], [0, 0, 10, 10]), 1.0);
        assert_eq!(iou([0, 0, 10, 10], [10, 0, 20, 10]), 0.0);
        assert!((iou([0, 0, 10, 10], [5, 0, 15, 10]) - 50.0 / 150.0).abs() < 1e-12);
    }
}
