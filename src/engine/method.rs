//! CAM methods. Each is a small recipe over the shared reductions in `ops::cam`.

use crate::error::{Error, Result};
use crate::ops::cam::{Term, Weighting};
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    GradCam,
    HiResCam,
    GradCamElementWise,
    GradCamPlusPlus,
    XGradCam,
    LayerCam,
    EigenCam,
    EigenGradCam,
    ScoreCam,
    AblationCam,
    GuidedGradCam,
    FullGrad,
    Cam,
    Fem,
    SegEigenCam,
    KpcaCam,
    SobelCam,
    LeGrad,
    RefineCam,
    SsCam,
    IsCam,
    SmoothGradCamPlusPlus,
    RandomCam,
    FinerCam,
    ShapleyCam,
}

/// (method, CLI name, one-line description).
pub const METHODS: &[(Method, &str, &str)] = &[
    (
        Method::GradCam,
        "gradcam",
        "channel weights = spatial mean of the gradients",
    ),
    (
        Method::HiResCam,
        "hirescam",
        "sum over channels of gradients x activations",
    ),
    (
        Method::GradCamElementWise,
        "gradcam-elementwise",
        "sum over channels of ReLU(gradients x activations)",
    ),
    (
        Method::GradCamPlusPlus,
        "gradcam++",
        "weights from positive gradients with Grad-CAM++'s alpha",
    ),
    (
        Method::XGradCam,
        "xgradcam",
        "weights = sum(gradients x activations) / sum(activations)",
    ),
    (
        Method::LayerCam,
        "layercam",
        "sum over channels of ReLU(gradients) x activations",
    ),
    (
        Method::EigenCam,
        "eigencam",
        "first principal component of the activations (no gradients)",
    ),
    (
        Method::EigenGradCam,
        "eigengradcam",
        "first principal component of gradients x activations",
    ),
    (
        Method::ScoreCam,
        "scorecam",
        "weights = softmax of the target score of the input masked by each channel",
    ),
    (
        Method::AblationCam,
        "ablationcam",
        "weights = relative score drop when each channel is ablated",
    ),
    (
        Method::GuidedGradCam,
        "guided-gradcam",
        "guided backpropagation to the input times the Grad-CAM map",
    ),
    (
        Method::FullGrad,
        "fullgrad",
        "input-gradient and bias-gradient maps of every layer (ignores --layer)",
    ),
    (
        Method::Cam,
        "cam",
        "weights = the classifier row of the class (global-average-pool + linear heads)",
    ),
    (
        Method::Fem,
        "fem",
        "weights = share of positions above mean + 2 std of each channel (no gradients)",
    ),
    (
        Method::SegEigenCam,
        "seg-eigen-cam",
        "first principal component of |gradients| x activations, salient side positive",
    ),
    (
        Method::KpcaCam,
        "kpca-cam",
        "first kernel-PCA component of the activations (sigmoid kernel, --kpca-gamma)",
    ),
    (
        Method::SobelCam,
        "sobel-cam",
        "Sobel edge magnitude of the input image: a baseline (ignores --layer and the class)",
    ),
    (
        Method::LeGrad,
        "legrad",
        "ViT: mean of ReLU(d block score / d attention) over heads, queries and blocks (--layer names blocks)",
    ),
    (
        Method::RefineCam,
        "refine-cam",
        "product of the per-layer Grad-CAM++ maps over several --layer, rescaled (--fuse product)",
    ),
    (
        Method::SsCam,
        "sscam",
        "torch-cam's Smoothed Score-CAM: scores of noisy masks averaged (--samples 35 --noise 2)",
    ),
    (
        Method::IsCam,
        "iscam",
        "torch-cam's Integrated Score-CAM: scores of scaled masked inputs averaged (--samples 10)",
    ),
    (
        Method::SmoothGradCamPlusPlus,
        "smoothgradcam++",
        "torch-cam's Grad-CAM++ over noisy inputs, one batch (--samples 4 --noise 0.3)",
    ),
    (
        Method::RandomCam,
        "random-cam",
        "channel weights uniform in [-1, 1] from numpy's seeded stream (--seed): a baseline",
    ),
    (
        Method::FinerCam,
        "finer-cam",
        "Grad-CAM of the class against its closest classes (--compare ranks, --alpha)",
    ),
    (
        Method::ShapleyCam,
        "shapley-cam",
        "weights = spatial mean of gradients - 1/2 Hessian x activations (piecewise-linear heads)",
    ),
];

/// How a method turns one layer's activations (and gradients) into a map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Recipe {
    /// Per-channel weights from gradients, then the weighted channel sum.
    Weights(Weighting),
    /// Weights are the classifier's row for the class.
    Classifier,
    /// A per-element term summed over channels.
    Term(Term),
    /// The first principal component of a per-element term.
    Eigen(Term),
    /// The first kernel-PCA component of the activations (sigmoid kernel).
    Kpca,
    /// Softmax of the target scores of inputs masked by each channel.
    Score,
    /// Relative score drop when each channel is ablated.
    Ablation,
    /// FullGrad's bias-gradient and input-gradient maps (no per-layer CAM).
    FullGrad,
    /// The input image's Sobel edges (no per-layer CAM).
    Sobel,
    /// LeGrad: ReLU(gradients) of the blocks' attention, averaged before normalising.
    LeGrad,
    /// SmoothGrad-CAM++: Grad-CAM++ weights from noisy samples' gradients (own passes).
    SmoothPlusPlus,
    /// Channel weights drawn on the host (RandomCAM).
    Random,
}

impl Method {
    pub fn name(self) -> &'static str {
        METHODS
            .iter()
            .find(|m| m.0 == self)
            .map(|m| m.1)
            .expect("every method is listed")
    }

    pub(crate) fn recipe(self) -> Option<Recipe> {
        Some(match self {
            // Finer-CAM is Grad-CAM of its own score (seeded in backward.rs).
            // Shapley-CAM subtracts its Hessian term's weights (shapley.rs).
            Method::GradCam | Method::GuidedGradCam | Method::FinerCam | Method::ShapleyCam => {
                Recipe::Weights(Weighting::Mean)
            }
            Method::GradCamPlusPlus | Method::RefineCam => Recipe::Weights(Weighting::PlusPlus),
            Method::XGradCam => Recipe::Weights(Weighting::XGrad),
            Method::Fem => Recipe::Weights(Weighting::Fem),
            Method::Cam => Recipe::Classifier,
            Method::HiResCam => Recipe::Term(Term::GradAct),
            Method::GradCamElementWise => Recipe::Term(Term::ReluGradAct),
            Method::LayerCam => Recipe::Term(Term::ReluGradTimesAct),
            Method::EigenCam => Recipe::Eigen(Term::Act),
            Method::EigenGradCam => Recipe::Eigen(Term::GradAct),
            Method::SegEigenCam => Recipe::Eigen(Term::AbsGradTimesAct),
            Method::KpcaCam => Recipe::Kpca,
            Method::ScoreCam | Method::SsCam | Method::IsCam => Recipe::Score,
            Method::AblationCam => Recipe::Ablation,
            Method::FullGrad => Recipe::FullGrad,
            Method::SobelCam => Recipe::Sobel,
            Method::LeGrad => Recipe::LeGrad,
            Method::SmoothGradCamPlusPlus => Recipe::SmoothPlusPlus,
            Method::RandomCam => Recipe::Random,
        })
    }

    /// torch-cam's samples and noise std defaults: SS-CAM 35 and 2.0, IS-CAM 10 and none,
    /// SmoothGrad-CAM++ 4 and 0.3.
    pub fn sample_defaults(self) -> Option<(usize, f32)> {
        match self {
            Method::SsCam => Some((35, 2.0)),
            Method::IsCam => Some((10, 0.0)),
            Method::SmoothGradCamPlusPlus => Some((4, 0.3)),
            _ => None,
        }
    }

    /// Whether the method backpropagates to the input image.
    pub fn needs_input_gradient(self) -> bool {
        matches!(self, Method::GuidedGradCam | Method::FullGrad)
    }

    /// Whether the method needs the backward pass.
    pub fn needs_gradients(self) -> bool {
        !matches!(
            self,
            Method::EigenCam
                | Method::Cam
                | Method::ScoreCam
                | Method::SsCam
                | Method::IsCam
                | Method::SmoothGradCamPlusPlus
                | Method::AblationCam
                | Method::Fem
                | Method::KpcaCam
                | Method::SobelCam
                | Method::RandomCam
        )
    }
}

impl FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        METHODS
            .iter()
            .find(|m| m.1 == s)
            .map(|m| m.0)
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "unknown --method `{s}`; available: {}",
                    METHODS.iter().map(|m| m.1).collect::<Vec<_>>().join(", ")
                ))
            })
    }
}

/// How maps of several layers are fused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Fuse {
    /// pytorch-grad-cam: the mean of the per-layer normalised maps.
    #[default]
    Mean,
    /// torch-cam: their element-wise maximum.
    Max,
    /// pytorch-grad-cam's RefineCAM: their element-wise product (each map rescaled to [0, 1]
    /// at the input size first).
    Product,
}

impl FromStr for Fuse {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mean" => Ok(Fuse::Mean),
            "max" => Ok(Fuse::Max),
            "product" => Ok(Fuse::Product),
            _ => Err(Error::Invalid(format!(
                "--fuse `{s}`: expected mean, max or product"
            ))),
        }
    }
}
