//! ROAD (RemOve And Debias, Rong et al. 2022) as pytorch-grad-cam 1.5.7 computes it:
//! `ROADMostRelevantFirst(p)` imputes (see [`super::imputer`]) the pixels whose map value is
//! at least the map's p-th percentile and keeps the rest; `ROADLeastRelevantFirst(p)` does the
//! same on `1 - map`, removing the least relevant. Each reports score(imputed) − score(input).
//! The averages run over the percentiles (pgc: 10, 20, …, 90) and
//! `ROADCombined = (LeRF average − MoRF average) / 2`.

/// pgc's default percentiles.
pub const PERCENTILES: [u32; 9] = [10, 20, 30, 40, 50, 60, 70, 80, 90];

/// `np.percentile(values, p)` (method "linear") for float32 values, bit for bit: the
/// interpolation runs in f32 with the weight rounded from f64, as numpy 2 does for a
/// scalar percentile.
pub fn percentile(sorted: &[f32], p: u32) -> f32 {
    let n = sorted.len();
    if n == 0 {
        return f32::NAN;
    }
    let vi = (n - 1) as f64 * (p as f64 / 100.0);
    let lo = (vi.floor() as usize).min(n - 1);
    let hi = (lo + 1).min(n - 1);
    let g = vi - lo as f64;
    let (a, b) = (sorted[lo], sorted[hi]);
    let d = b - a;
    if g >= 0.5 {
        b - d * (1.0 - g) as f32
    } else {
        a + d * g as f32
    }
}

/// The values one removal order thresholds: the map (MoRF) or `1 - map` (LeRF), in f32
/// as torch computes them, and sorted for [`percentile`].
pub struct Ranked {
    pub values: Vec<f32>,
    pub sorted: Vec<f32>,
}

impl Ranked {
    pub fn new(cam: &[f32], least_first: bool) -> Self {
        let values: Vec<f32> = if least_first {
            cam.iter().map(|v| 1.0 - v).collect()
        } else {
            cam.to_vec()
        };
        let mut sorted = values.clone();
        sorted.sort_by(f32::total_cmp);
        Self { values, sorted }
    }

    /// pgc's binary mask: true (kept) where the value is below the p-th percentile.
    pub fn keep(&self, p: u32) -> Vec<bool> {
        let t = percentile(&self.sorted, p);
        self.values.iter().map(|&v| v < t).collect()
    }
}

/// One map's ROAD score changes at each percentile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoadCurve {
    pub percentiles: Vec<u32>,
    pub morf: Vec<f64>,
    pub lerf: Vec<f64>,
}

impl RoadCurve {
    fn mean_at(&self, v: &[f64], ps: &[u32]) -> f64 {
        let picked: Vec<f64> = ps
            .iter()
            .filter_map(|p| self.percentiles.iter().position(|q| q == p).map(|i| v[i]))
            .collect();
        picked.iter().sum::<f64>() / picked.len() as f64
    }

    /// `ROADMostRelevantFirstAverage` over `ps`.
    pub fn morf_average(&self, ps: &[u32]) -> f64 {
        self.mean_at(&self.morf, ps)
    }

    /// `ROADLeastRelevantFirstAverage` over `ps`.
    pub fn lerf_average(&self, ps: &[u32]) -> f64 {
        self.mean_at(&self.lerf, ps)
    }

    /// `ROADCombined` over `ps`.
    pub fn combined(&self, ps: &[u32]) -> f64 {
        (self.lerf_average(ps) - self.morf_average(ps)) / 2.0
    }
}

/// Checks `--road-percentiles`: each in 1..=99 (0 and 100 remove nothing or nearly all).
pub fn check_percentiles(ps: &[u32]) -> std::result::Result<(), String> {
    match ps.iter().find(|&&p| p == 0 || p >= 100) {
        Some(p) => Err(format!("percentile {p} is not in 1..=99")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_interpolates_like_numpy() {
        let s = [0.0f32, 1.0, 2.0, 4.0];
        assert_eq!(percentile(&s, 50), 1.5);
        assert_eq!(percentile(&s, 25), 0.75);
        assert_eq!(percentile(&[3.0], 10), 3.0);
    }

    #[test]
    fn ties_at_the_threshold_are_removed() {
        let r = Ranked::new(&[0.0, 0.5, 0.5, 0.5, 1.0], false);
        assert_eq!(r.keep(50), vec![true, false, false, false, false]);
        let l = Ranked::new(&[0.0, 0.5, 0.5, 0.5, 1.0], true);
        assert_eq!(l.keep(50), vec![false, false, false, false, true]);
    }
}
