//! Command-line arguments (the `explain` contract is fixed; other tools depend on it).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "gradcam",
    version,
    about = "Grad-CAM on the GPU with WGSL compute shaders"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Explain images: heatmap overlays (and optionally raw maps) per target class.
    // Boxed: by far the largest arguments (clippy::large_enum_variant).
    Explain(Box<ExplainArgs>),
    /// Merge the shard manifests in OUT (predictions.shard-I-of-N.jsonl) into one
    /// predictions.jsonl sorted by image; exit 1 if any image is missing, duplicated or failed.
    Merge(MergeArgs),
    /// Measure explanation quality on a dataset with ground-truth boxes (pointing game,
    /// class discrimination, localisation error, average drop, deletion/insertion AUC), and
    /// the reference implementations' metrics: ROAD, confidence change, torch-cam
    /// deletion/insertion, ARCC.
    #[command(after_long_help = EVAL_COLUMNS)]
    Eval(EvalArgs),
    /// Measure throughput (end to end and GPU-only), per-kernel GPU time and peak GPU memory
    /// on synthetic images.
    Bench(BenchArgs),
    /// Deep Feature Factorization: NMF of the layer's activations over all images into K
    /// concepts, labelled through the classifier head (concept overlays and dff.json).
    Dff(super::dff::DffArgs),
    /// Tune a model's conv kernels on this adapter ahead of time (see --tune) and print what
    /// each conv got.
    Tune(TuneArgs),
}

/// `gradcam eval --help`: what each column means.
const EVAL_COLUMNS: &str = "\
Columns (scores are softmax probabilities of the map's class; one row per method or baseline):
  pointing 1-obj / 2-obj %   the map's peak within 15 px (at 224 px) of the class's box
  class-discrimination %     more map mass in the class's box than in the other object's
  top-1 loc error %          Grad-CAM paper protocol (--loc-threshold, IoU >= 0.5)
  avg drop %, increase %     Grad-CAM++'s, on the map x image (pixel space)
  deletion / insertion AUC   RISE: to black / from a blur, --steps equal steps
  ROAD MoRF, ROAD LeRF       pytorch-grad-cam 1.5.7 ROADMostRelevantFirst / ROADLeastRelevantFirst:
                             score change after its noisy linear imputer fills the pixels whose
                             map (MoRF) or 1 - map (LeRF) is at or above its p-th percentile, for
                             each p of --road-percentiles, averaged (--json: each p)
  ROAD combined              ROADCombined = (LeRF average - MoRF average) / 2
  conf. change               pgc CamMultImageConfidenceChange: score(input x map) - score(input),
                             on the normalised input
  tc deletion / insertion    torch-cam 0.5 DeletionInsertionMetric (--tc-steps, baseline 0 in the
                             normalised input, AUC over the perturbed fraction)
  ARCC                       pgc ARCC: the harmonic mean (pgc's code; its docstring says
                             geometric) of coherency, 1 - complexity and clip(2 ROADCombined, 0, 1)
                             at percentiles 20, 40, 60, 80; CAM methods only";

/// Which model to run (shared by the subcommands).
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// Model file: an ONNX model (`.onnx`, any exporter, opset 9+), a self-describing
    /// model (tools/export.py) or a torchvision state dict saved with safetensors.
    /// Or a built-in model by name: `efficientnet-lite0` (ImageNet, the default of explain
    /// and bench) or `shapes` (the shapes benchmark's model, the default of eval).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Image layout of an ONNX model's input; default: read from its shape ([N,3,H,W] or
    /// [N,H,W,3], as tf2onnx writes Keras models).
    #[arg(long, value_parser = ["nchw", "nhwc"])]
    pub layout: Option<String>,
    /// Architecture of a torchvision state dict (e.g. resnet50, vgg16_bn); inferred from
    /// the tensor names if omitted. Not used with self-describing model files.
    #[arg(long)]
    pub arch: Option<String>,
}

/// How conv and linear weights run (shared by explain and bench).
#[derive(Args, Debug)]
pub struct WeightArgs {
    /// Storage precision of conv and linear weights: f16 halves their memory and bandwidth
    /// (needs SHADER_F16; arithmetic stays f32; parity error in README). On CPU adapters
    /// f16 convs use the slower blocked kernel.
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16"])]
    pub precision: String,
    /// Run 3x3 stride-1 convs as Winograd F(4x4, 3x3) where the adapter's kernel supports it
    /// (lavapipe): up to 2.4x faster convs for about 20x the rounding error (README).
    #[arg(long)]
    pub winograd: bool,
    /// Conv autotuning: time each conv's kernels on this adapter and keep the fastest,
    /// remembered next to the pipeline cache. fast: the largest convs' forward passes (a
    /// few seconds on a model's first run); full: every conv, both directions; off: the
    /// fixed per-adapter choice.
    #[arg(long, default_value = "fast", value_parser = ["off", "fast", "full"])]
    pub tune: String,
}

impl WeightArgs {
    /// The tune mode (clap allows only off, fast and full).
    pub fn tune(&self) -> gradcam_wgpu::tune::Tune {
        self.tune.parse().unwrap_or_default()
    }

    /// The precision (clap allows only f32 and f16).
    pub fn precision(&self) -> gradcam_wgpu::Precision {
        match self.precision.as_str() {
            "f16" => gradcam_wgpu::Precision::F16,
            _ => gradcam_wgpu::Precision::F32,
        }
    }
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// Dataset directory holding boxes.json (e.g. tests/data/shapes-eval).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// CAM method to evaluate; repeat for several, or `all`. Default: gradcam.
    #[arg(long, value_parser = methods_or_all())]
    pub method: Vec<String>,
    /// Skip the centre-Gaussian and random-map baseline rows.
    #[arg(long)]
    pub no_baselines: bool,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Target layer(s); default: the model's.
    #[arg(long)]
    pub layer: Vec<String>,
    /// Images per GPU batch.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Deletion/insertion steps (0 skips those curves).
    #[arg(long, default_value_t = 8)]
    pub steps: usize,
    /// Localisation: binarise each map at this fraction of its max (the Grad-CAM paper: 0.15).
    #[arg(long, default_value_t = 0.15)]
    pub loc_threshold: f32,
    /// Use N images spread evenly over the dataset.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
    /// ROAD percentiles, comma-separated, each in 1..=99, or `none` to skip ROAD.
    #[arg(
        long,
        value_name = "LIST",
        default_value = "10,20,30,40,50,60,70,80,90"
    )]
    pub road_percentiles: String,
    /// Standard deviation of the ROAD imputer's Gaussian noise (pytorch-grad-cam: 0.01).
    #[arg(long, value_name = "SD", default_value_t = 0.01)]
    pub road_noise: f32,
    /// Seed of the ROAD imputer's noise (ChaCha8; torch's draws are not reproduced).
    #[arg(long, default_value_t = 0)]
    pub road_seed: u64,
    /// torch-cam deletion/insertion steps (torch-cam's default: 20; 0 skips them).
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub tc_steps: usize,
    /// Skip ARCC (it runs the method again on every input x map).
    #[arg(long)]
    pub no_arcc: bool,
    /// Skip ROAD, confidence change, torch-cam deletion/insertion and ARCC.
    #[arg(long)]
    pub no_reference_metrics: bool,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// With --arch and no --model: a torchvision architecture with deterministic random
    /// weights (He-uniform, seeded by --seed).
    #[arg(long, requires = "arch")]
    pub random_weights: bool,
    /// Seed of --random-weights.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Classes of a --random-weights model.
    #[arg(long, default_value_t = 1000)]
    pub num_classes: usize,
    /// Target layer(s); default: the model's.
    #[arg(long)]
    pub layer: Vec<String>,
    /// How a transformer's token layer is read as a [C, h, w] map (pytorch-grad-cam's
    /// reshape_transform): auto (what the model's graph shows: [N, 1 + h·w, C] tokens drop the
    /// class token, channels-last [N, h, w, C] maps permute), none, vit, vit:HxW (prefix tokens
    /// = tokens − h·w), swin, swin:HxW.
    #[arg(long, default_value = "auto")]
    pub reshape: String,
    /// CAM method.
    #[arg(long, default_value = "gradcam", value_parser = methods())]
    pub method: String,
    /// Faster Score-CAM: scorecam probes only the N channels of largest spatial std.
    #[arg(long, value_name = "N")]
    pub max_channels: Option<usize>,
    /// Model input size HxW (or one number). Default: the model's own.
    #[arg(long)]
    pub size: Option<String>,
    /// Images per GPU batch.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[command(flatten)]
    pub weights: WeightArgs,
    /// Timed batches (per measurement).
    #[arg(long, default_value_t = 5)]
    pub iters: usize,
    /// Untimed batches first (pipelines, caches).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Use these images (a directory or files, resized to --size) instead of synthetic ones,
    /// cycled to fill the batch.
    #[arg(long, value_name = "IMAGE|DIR")]
    pub images: Vec<PathBuf>,
    /// Skip the per-kernel profile (timestamp queries).
    #[arg(long)]
    pub no_profile: bool,
    /// Peak of the device in GFLOP/s, to print the conv/linear kernels' share of it. The
    /// adapter's name is printed so it can be looked up.
    #[arg(long)]
    pub peak_gflops: Option<f64>,
    /// Print JSON instead of the tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// Image files or directories (walked recursively).
    #[arg(required = true, value_name = "IMAGE|DIR")]
    pub inputs: Vec<PathBuf>,
    #[command(flatten)]
    pub model: ModelArgs,
    /// Target layer as a torchvision module path (e.g. layer4, features.29). Repeat for
    /// several layers: their normalised maps are fused (see --fuse).
    #[arg(long)]
    pub layer: Vec<String>,
    /// How a transformer's token layer is read as a [C, h, w] map (pytorch-grad-cam's
    /// reshape_transform): auto (what the model's graph shows: [N, 1 + h·w, C] tokens drop the
    /// class token, channels-last [N, h, w, C] maps permute), none, vit, vit:HxW (prefix tokens
    /// = tokens − h·w), swin, swin:HxW.
    #[arg(long, default_value = "auto")]
    pub reshape: String,
    /// CAM method.
    #[arg(long, default_value = "gradcam", value_parser = methods())]
    pub method: String,
    /// How the maps of several --layer are fused: mean (pytorch-grad-cam), max (torch-cam) or
    /// product (pytorch-grad-cam's RefineCAM over any method; refine-cam uses it).
    #[arg(long, default_value = "mean", value_parser = ["mean", "max", "product"])]
    pub fuse: String,
    /// Replace the channel sum by the first principal component of the weighted activations.
    #[arg(long)]
    pub eigen_smooth: bool,
    /// Faster Score-CAM (tf-keras-vis max_N): scorecam probes only the N channels of largest
    /// spatial std of each image's activations; the others weigh 0. At least 1.
    #[arg(long, value_name = "N")]
    pub max_channels: Option<usize>,
    /// kpca-cam's sigmoid-kernel gamma, tanh(gamma <x, y> + 1) (default 1 / channels, as
    /// sklearn's KernelPCA).
    #[arg(long, value_name = "G")]
    pub kpca_gamma: Option<f32>,
    /// sscam / iscam: noisy or scaled samples per channel, their scores averaged (torch-cam's
    /// num_samples: 35 for sscam, 10 for iscam).
    #[arg(long, value_name = "N")]
    pub samples: Option<usize>,
    /// sscam: std of the Gaussian noise added to every normalised mask (torch-cam's 2.0).
    #[arg(long, value_name = "STD")]
    pub noise: Option<f32>,
    /// Seed of random-cam's weights, as numpy's np.random.seed (0 to 2^32 - 1; image i of the
    /// run takes draws i·C .. (i + 1)·C of np.random.uniform(-1, 1), C the layers' channels),
    /// and of the noise the engine draws (sscam, smoothgradcam++).
    #[arg(long, default_value_t = 0, value_name = "S")]
    pub seed: u64,
    /// finer-cam's comparison classes: ranks in the order of |y - y_class| (0 is the class).
    #[arg(long, default_value = "1,2,3", value_name = "R,R,...")]
    pub compare: String,
    /// finer-cam's alpha: the score is sum_k p_k (y_class - alpha y_k) / sum_k p_k.
    #[arg(long, default_value_t = 1.0, value_name = "A")]
    pub alpha: f32,
    /// Test-time augmentation: horizontal flip x {0.9, 1, 1.1}, six passes in one batch,
    /// averaged (pytorch-grad-cam's aug_smooth).
    #[arg(long)]
    pub aug_smooth: bool,
    /// Classes to explain: top1, topK, all, or a list like 3,7.
    #[arg(long, default_value = "top1")]
    pub target: String,
    /// The score each map explains: logit (pre-softmax), softmax (its probability), rest
    /// (logit minus cross-entropy) or binary (a one-output model's logit for class 1,
    /// negated for class 0): pytorch-grad-cam's ClassifierOutputTarget,
    /// ClassifierOutputSoftmaxTarget, ClassifierOutputReST and BinaryClassifierOutputTarget.
    #[arg(long, default_value = "logit", value_parser = clap::builder::PossibleValuesParser::new(gradcam_wgpu::engine::SCORES))]
    pub score: String,
    /// SESS (pytorch-grad-cam's Saliency Enhancing with Scaling and Sliding) around the
    /// method: the image at --sess-scales sizes, input-sized windows slid over each, the
    /// method on every patch (batched on the device), patch maps weighted by their softmax
    /// score, pasted back, fused and blurred. Square inputs.
    #[arg(long)]
    pub sess: bool,
    /// SESS: how many scales, from the input size up in steps of 2/7 of it.
    #[arg(long, value_name = "N", default_value_t = 12)]
    pub sess_scales: usize,
    /// SESS: the windows' stride (default: the input size).
    #[arg(long, value_name = "PX")]
    pub sess_step: Option<usize>,
    /// SESS: fuse patch maps by their mean over the patches above --sess-theta, or the max.
    #[arg(long, default_value = "mean", value_parser = ["mean", "max"])]
    pub sess_pool: String,
    /// SESS: map values at or below this do not count in the mean.
    #[arg(long, value_name = "T", default_value_t = 0.0)]
    pub sess_theta: f32,
    /// SESS: the share of lowest-scoring patches left out, in [0, 1).
    #[arg(long, value_name = "R", default_value_t = 0.0)]
    pub sess_prefilter: f64,
    /// For models that score every position (segmentation): explain, per class, the sum of
    /// its output map inside this mask (pytorch-grad-cam's SemanticSegmentationTarget). A
    /// grayscale PNG of the output grid's size; each pixel weighs value / 255, so a
    /// black-and-white mask selects positions.
    #[arg(long, value_name = "FILE.png")]
    pub mask: Option<PathBuf>,
    /// Model input size HxW (or one number for square). Default: the model's own size
    /// (224x224 for torchvision state dicts).
    #[arg(long)]
    pub size: Option<String>,
    /// Normalisation mean, R,G,B. Default: the model's (ImageNet's for torchvision).
    #[arg(long)]
    pub mean: Option<String>,
    /// Normalisation std, R,G,B. Default: the model's (ImageNet's for torchvision).
    #[arg(long)]
    pub std: Option<String>,
    /// Images per GPU batch.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[command(flatten)]
    pub weights: WeightArgs,
    /// Where decoded images are resized to the input size: on the device (upload as
    /// decoded), on the host decode threads, or auto (device on GPUs, host on CPU adapters,
    /// where the "device" shares the host's cores). Both use the Triangle filter; results
    /// differ by at most one level in a few pixels.
    #[arg(long, default_value = "auto", value_parser = ["auto", "device", "host"])]
    pub resize: String,
    /// Output directory.
    #[arg(long, default_value = "gradcam-out")]
    pub out: PathBuf,
    /// Also write each map as float32 .npy in [0, 1].
    #[arg(long)]
    pub save_cam: bool,
    /// Continue an interrupted run: skip images whose manifest record is ok and whose
    /// output files all exist; redo the rest (errors included).
    #[arg(long)]
    pub resume: bool,
    /// Process only shard I of N (a stable hash of each image's path relative to its input
    /// root); writes predictions.shard-I-of-N.jsonl. Default: from SLURM_ARRAY_TASK_ID and
    /// SLURM_ARRAY_TASK_COUNT, or JOB_COMPLETION_INDEX with --shard-count.
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Number of shards of a Kubernetes Indexed Job (the index is JOB_COMPLETION_INDEX).
    #[arg(long, value_name = "N")]
    pub shard_count: Option<usize>,
    /// fsync every output file and each manifest append (power-loss safe; slower). Without
    /// it, files are still renamed into place whole, which survives a killed process.
    #[arg(long)]
    pub fsync: bool,
    /// Print a JSON progress line to stderr every N images (images, errors, resident
    /// memory, GPU allocations), for monitoring and tools/soak.py.
    #[arg(long, value_name = "N")]
    pub progress_json: Option<usize>,
}

#[derive(Args, Debug)]
pub struct TuneArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Model input size HxW (or one number). Default: the model's own.
    #[arg(long)]
    pub size: Option<String>,
    /// Images per GPU batch (the batch rows explain or bench will run at).
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Every conv, forward and backward-data (else the fast budget).
    #[arg(long)]
    pub full: bool,
    /// Print JSON instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The shared output directory the shards wrote into.
    #[arg(value_name = "OUT")]
    pub out: PathBuf,
    /// The inputs the shards were given (same order): report images no shard recorded.
    #[arg(long, value_name = "IMAGE|DIR")]
    pub inputs: Vec<PathBuf>,
}

fn methods() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        gradcam_wgpu::engine::METHODS
            .iter()
            .map(|(_, name, help)| clap::builder::PossibleValue::new(*name).help(*help)),
    )
}

fn methods_or_all() -> clap::builder::PossibleValuesParser {
    clap::builder::PossibleValuesParser::new(
        gradcam_wgpu::engine::METHODS
            .iter()
            .map(|(_, name, help)| clap::builder::PossibleValue::new(*name).help(*help))
            .chain([clap::builder::PossibleValue::new("all").help("every method but legrad")]),
    )
}
