//! The metrics' definitions, applied to per-map statistics computed on the device.

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
    pub seconds: f64,
    /// Images that could not be read (each also reported with its path).
    pub failed_images: usize,
}

impl Tally {
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
            seconds,
            failed_images: self.failed,
        }
    }
}

/// The table `gradcam eval` prints.
pub fn table(reports: &[Report]) -> String {
    let mut s = String::new();
    s.push_str(
        "| method | pointing 1-obj % | pointing 2-obj % | class-discrimination % | \
         top-1 loc error % | avg drop % | increase % | deletion AUC ↓ | insertion AUC ↑ | s |\n",
    );
    s.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let auc = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    for r in reports {
        s.push_str(&format!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {:.0} |\n",
            r.method,
            r.pointing_single,
            r.pointing_two,
            r.discrimination,
            r.loc_error,
            r.average_drop,
            r.increase_in_confidence,
            auc(r.deletion_auc),
            auc(r.insertion_auc),
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
