//! RandomCAM's channel weights: numpy's legacy `np.random.uniform(-1, 1)` stream, drawn on the
//! host and written before each pass.
//!
//! pytorch-grad-cam draws `np.random.uniform(-1, 1, size=(N, C))` per call and layer from
//! numpy's global state; seeded with `np.random.seed(S)` that is MT19937's `init_genrand(S)`,
//! two 32-bit outputs per double: `((a >> 5) * 2^26 + (b >> 6)) / 2^53`. Here image `i` of the
//! engine's run (in the order it explains them) takes the doubles `i·ΣC .. (i + 1)·ΣC` of that
//! stream, ΣC the channels of all target layers, first layer first: what pgc draws for the
//! whole run as one batch right after `np.random.seed(S)` with one layer (and for one image
//! with several). So the weights do not depend on `--batch`; every target of an image and
//! every aug-smooth pass use its weights (pgc would draw again per call).

use crate::error::{Error, Result};
use crate::gpu::{GpuContext, buffer};
use rand_mt::Mt;

/// numpy's legacy `random_sample` (`legacy_double`): 53 random bits in [0, 1).
pub fn random_sample(mt: &mut Mt) -> f64 {
    let a = (mt.next_u32() >> 5) as u64;
    let b = (mt.next_u32() >> 6) as u64;
    (a * 67108864 + b) as f64 / 9007199254740992.0
}

/// numpy's legacy stream after `np.random.seed(seed)` (a seed numpy accepts: below 2^32).
pub fn numpy_stream(seed: u64) -> Result<Mt> {
    let s = u32::try_from(seed).map_err(|_| {
        Error::Invalid(format!(
            "--seed {seed}: numpy's np.random.seed takes 0 to {}",
            u32::MAX
        ))
    })?;
    Ok(Mt::new(s))
}

pub(super) struct RandomWeights {
    mt: Mt,
    /// Channels of each target layer.
    channels: Vec<usize>,
    /// Per layer, `[rows, C]` weights of the current pass.
    pub(super) buffers: Vec<wgpu::Buffer>,
    /// The current batch's draws, `[images, ΣC]`.
    current: Vec<f32>,
}

impl RandomWeights {
    pub(super) fn new(
        ctx: &GpuContext,
        seed: u64,
        channels: Vec<usize>,
        rows: usize,
    ) -> Result<Self> {
        let buffers = channels
            .iter()
            .map(|&c| buffer::storage(ctx, "random", (rows * c * 4) as u64))
            .collect();
        Ok(Self {
            mt: numpy_stream(seed)?,
            channels,
            buffers,
            current: Vec::new(),
        })
    }

    /// The next `images` images' weights.
    pub(super) fn draw(&mut self, images: usize) {
        let total: usize = self.channels.iter().sum();
        self.current = (0..images * total)
            .map(|_| (2.0 * random_sample(&mut self.mt) - 1.0) as f32)
            .collect();
    }

    /// Writes the weights of rows (image, pass, target) for `passes` passes and `tc` targets.
    pub(super) fn write(&self, queue: &wgpu::Queue, passes: usize, tc: usize) {
        let total: usize = self.channels.iter().sum();
        let mut start = 0;
        for (c, buf) in self.channels.iter().zip(&self.buffers) {
            let rows: Vec<f32> = self
                .current
                .chunks(total)
                .flat_map(|img| std::iter::repeat_n(&img[start..start + c], passes * tc))
                .flatten()
                .copied()
                .collect();
            if !rows.is_empty() {
                queue.write_buffer(buf, 0, bytemuck::cast_slice(&rows));
            }
            start += c;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// numpy 2.4: `np.random.seed(s); np.random.random_sample()`.
    #[test]
    fn matches_numpys_legacy_stream() {
        let mut mt = numpy_stream(0).unwrap();
        let got: Vec<f64> = (0..3).map(|_| random_sample(&mut mt)).collect();
        assert_eq!(
            got,
            [0.5488135039273248, 0.7151893663724195, 0.6027633760716439]
        );
        assert_eq!(
            random_sample(&mut numpy_stream(u32::MAX as u64).unwrap()),
            0.0976320289940138
        );
        assert!(numpy_stream(1 << 32).is_err());
    }
}
