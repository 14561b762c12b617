//! numpy's legacy `RandomState(seed).standard_normal()`: MT19937 seeded by `init_genrand`,
//! 53-bit doubles, and the Marsaglia polar method that keeps its second draw (numpy's
//! `legacy_gauss`). sklearn's `init='random'` draws from it.

use rand_mt::Mt;

pub struct LegacyRandom {
    mt: Mt,
    /// The polar method's second value, returned by the next call.
    gauss: Option<f64>,
}

impl LegacyRandom {
    /// `np.random.RandomState(seed)` for an integer seed.
    pub fn new(seed: u32) -> Self {
        Self {
            mt: Mt::new(seed),
            gauss: None,
        }
    }

    /// A double in [0, 1) from two draws (numpy's `legacy_double`).
    pub fn double(&mut self) -> f64 {
        let a = (self.mt.next_u32() >> 5) as f64;
        let b = (self.mt.next_u32() >> 6) as f64;
        (a * 67108864.0 + b) / 9007199254740992.0
    }

    /// One standard normal draw (numpy's `legacy_gauss`).
    pub fn gauss(&mut self) -> f64 {
        if let Some(g) = self.gauss.take() {
            return g;
        }
        let (x1, x2, r2) = loop {
            let x1 = 2.0 * self.double() - 1.0;
            let x2 = 2.0 * self.double() - 1.0;
            let r2 = x1 * x1 + x2 * x2;
            if r2 < 1.0 && r2 != 0.0 {
                break (x1, x2, r2);
            }
        };
        let f = (-2.0 * r2.ln() / r2).sqrt();
        self.gauss = Some(f * x1);
        f * x2
    }
}
