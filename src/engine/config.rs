//! What an engine is asked for: layers, method, targets, sizes and the methods' options.

use super::{Fold, Fuse, IMAGENET_MEAN, IMAGENET_STD, Method, Reshape, Score, TargetSpec};
use crate::ops::Precision;
use crate::tune::Tune;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Target layers (torchvision module paths); empty picks the model's default. Several
    /// layers give one map fused from the per-layer maps.
    pub layers: Vec<String>,
    /// Per layer, how to read it (pytorch-grad-cam's `reshape_transform`): `None` as it is,
    /// or folded to `[C, h, w]` through an index map ([`Fold`]). Empty, or one per layer;
    /// ignored by FullGrad; CAM takes no folds.
    pub folds: Vec<Option<Fold>>,
    /// How token layers fold where `folds` is empty (`--reshape`).
    pub reshape: Reshape,
    pub method: Method,
    /// How several layers' maps are fused.
    pub fuse: Fuse,
    /// Replace the channel sum by the first principal component of the weighted terms.
    pub eigen_smooth: bool,
    /// pytorch-grad-cam's test-time augmentation: horizontal flip x {0.9, 1, 1.1}, six passes
    /// run as one batch, de-augmented and averaged (not renormalised).
    pub aug_smooth: bool,
    /// Model input size `[H, W]`.
    pub size: [usize; 2],
    /// Images per batch (lowered if one binding can't hold that many).
    pub batch: usize,
    pub targets: TargetSpec,
    /// The score each target explains (pytorch-grad-cam's target objects).
    pub score: Score,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Read the normalised maps back (for `.npy` output).
    pub read_maps: bool,
    /// Cap on (image, target) rows per backward pass; `None` sizes it from the device limits.
    pub backward_rows: Option<usize>,
    /// Cap on Score-CAM / Ablation-CAM probes per forward pass (pytorch-grad-cam's
    /// `batch_size`); `None` sizes it from a memory budget. The maps don't depend on it.
    pub probe_batch: Option<usize>,
    /// Faster Score-CAM (tf-keras-vis `max_N`): Score-CAM probes only the N channels of
    /// largest spatial std of each image's activations, the others weigh 0; `None`, or N at
    /// least the channels, is plain Score-CAM. Score-CAM only; N = 0 is an error.
    pub max_channels: Option<usize>,
    /// SS-CAM / IS-CAM / SmoothGrad-CAM++ samples (`--samples`); `None` is torch-cam's default for the method
    /// ([`Method::sample_defaults`]).
    pub samples: Option<usize>,
    /// SS-CAM's / SmoothGrad-CAM++'s noise std (`--noise`); `None` is torch-cam's 2.0 / 0.3.
    pub noise_std: Option<f32>,
    /// Seed of the noise the engine draws (`--seed`).
    pub seed: u64,
    /// Noise given instead of drawn, for comparisons with a reference whose RNG can't be
    /// reproduced (torch-cam's draws, in tests); the same for every image. SS-CAM:
    /// `[samples, C, H, W]`, C the target layer's channels, added to the masks at the input
    /// size. SmoothGrad-CAM++: `[samples, 3, H, W]`, added to the normalised input.
    pub noise: Option<Vec<f32>>,
    /// KPCA-CAM's sigmoid-kernel gamma; `None` is sklearn's 1 / channels. Finite and > 0.
    pub kpca_gamma: Option<f32>,
    /// Storage precision of conv and linear weights (f16 needs `SHADER_F16`).
    pub precision: Precision,
    /// Run 3x3 stride-1 convs as Winograd F(4x4, 3x3) where the adapter's kernel supports
    /// it (lavapipe): up to 2.4x faster convs, about 20x the rounding error (README).
    pub winograd: bool,
    /// random-cam's seed (`np.random.seed`, below 2^32); see [`random`].
    pub random_seed: u64,
    /// finer-cam's comparison classes: ranks in the order of |y - y_c| (rank 0 is the class
    /// itself); ranks at or past the classes are dropped, as pytorch-grad-cam does.
    pub finer_compare: Vec<usize>,
    /// finer-cam's alpha: the score is sum_k p_k (y_c - alpha y_k) / sum_k p_k.
    pub finer_alpha: f32,
    /// Conv autotuning before the weights are uploaded ([`Tune`]). Off here, so a library
    /// user's results never depend on timings; the CLI's default is `fast`.
    pub tune: Tune,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            layers: Vec::new(),
            folds: Vec::new(),
            reshape: Reshape::Auto,
            method: Method::GradCam,
            fuse: Fuse::Mean,
            eigen_smooth: false,
            aug_smooth: false,
            size: [224, 224],
            batch: 8,
            targets: TargetSpec::TopK(1),
            score: Score::Logit,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            read_maps: false,
            backward_rows: None,
            probe_batch: None,
            max_channels: None,
            kpca_gamma: None,
            samples: None,
            noise_std: None,
            seed: 0,
            noise: None,
            precision: Precision::F32,
            winograd: false,
            random_seed: 0,
            finer_compare: vec![1, 2, 3],
            finer_alpha: 1.0,
            tune: Tune::Off,
        }
    }
}
