//! Every CAM method against pytorch-grad-cam 1.5.7 (fixtures from
//! tools/make_method_fixtures.py): a Bottleneck ResNet on a non-square input and a VGG-BN,
//! two different classes per image.

mod common;
mod fixture;

use fixture::Fixture;
use gradcam_wgpu::engine::{Fuse, Method, Score};
use gradcam_wgpu::{Engine, EngineConfig, GpuContext, TargetSpec};

const TOLERANCE: f32 = 1e-3;

struct Case<'a> {
    key: &'a str,
    method: Method,
    layers: Vec<String>,
    fuse: Fuse,
    eigen_smooth: bool,
    aug_smooth: bool,
    /// Winograd convs (`--winograd`).
    winograd: bool,
    score: Score,
    kpca_gamma: Option<f32>,
    /// SS-CAM / IS-CAM samples and SS-CAM's noise (std, or given draws).
    samples: Option<usize>,
    noise_std: Option<f32>,
    noise: Option<Vec<f32>>,
    /// Explain these instead of the fixture's two targets per image.
    targets: Option<TargetSpec>,
    random_seed: u64,
    finer_compare: Vec<usize>,
    finer_alpha: f32,
}

fn case(key: &str, method: Method) -> Case<'_> {
    Case {
        key,
        method,
        layers: Vec::new(),
        fuse: Fuse::Mean,
        eigen_smooth: false,
        aug_smooth: false,
        winograd: false,
        score: Score::Logit,
        kpca_gamma: None,
        samples: None,
        noise_std: None,
        noise: None,
        targets: None,
        random_seed: 0,
        finer_compare: vec![1, 2, 3],
        finer_alpha: 1.0,
    }
}

/// Runs `c` and returns the worst map error; maps under `{key}.flipped` are accepted too
/// (an SVD's sign is arbitrary).
fn run(fx: &Fixture, ctx: &GpuContext, c: &Case) -> f32 {
    run_with(fx, ctx, c).0
}

/// Also returns the output images (overlays, or Guided Grad-CAM images) of every row.
fn run_with(fx: &Fixture, ctx: &GpuContext, c: &Case) -> (f32, Vec<image::RgbImage>) {
    let targets: Vec<Vec<usize>> = fx
        .i64s("targets")
        .chunks(2)
        .map(|t| t.iter().map(|&v| v as usize).collect())
        .collect();
    let layers = if c.layers.is_empty() {
        vec![fx.meta["layer"].clone()]
    } else {
        c.layers.clone()
    };
    let cfg = EngineConfig {
        layers,
        method: c.method,
        fuse: c.fuse,
        eigen_smooth: c.eigen_smooth,
        aug_smooth: c.aug_smooth,
        winograd: c.winograd,
        score: c.score,
        kpca_gamma: c.kpca_gamma,
        samples: c.samples,
        noise_std: c.noise_std,
        noise: c.noise.clone(),
        size: fx.size,
        batch: 2,
        targets: c.targets.clone().unwrap_or(TargetSpec::PerImage(2)),
        read_maps: true,
        random_seed: c.random_seed,
        finer_compare: c.finer_compare.clone(),
        finer_alpha: c.finer_alpha,
        ..Default::default()
    };
    let start = std::time::Instant::now();
    let mut engine = Engine::new(ctx.clone(), &fx.model, cfg).unwrap();
    let results = match c.targets {
        Some(_) => engine.explain(&fx.images).unwrap(),
        None => engine.explain_for(&fx.images, &targets).unwrap(),
    };
    let want = fx.f32s(c.key);
    let flipped_key = format!("{}.flipped", c.key);
    let flipped = fx.has(&flipped_key).then(|| fx.f32s(&flipped_key));
    let plane = fx.size[0] * fx.size[1];
    let mut worst = 0f32;
    let mut images = Vec::new();
    for (i, r) in results.iter().enumerate() {
        for (t, tr) in r.targets.iter().enumerate() {
            if c.targets.is_none() {
                assert_eq!(tr.class, targets[i][t]);
            }
            let row = i * r.targets.len() + t;
            let got = tr.map.as_ref().unwrap();
            let err = |w: &[f32]| {
                got.iter()
                    .zip(&w[row * plane..(row + 1) * plane])
                    .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
            };
            let mut e = err(&want);
            if let Some(f) = &flipped {
                e = e.min(err(f));
            }
            worst = worst.max(e);
            images.push(tr.overlay.clone());
        }
    }
    println!(
        "{} {}{}: max abs error {worst:.2e} ({:.1} s)",
        fx.name,
        c.key,
        if c.winograd { " (Winograd)" } else { "" },
        start.elapsed().as_secs_f32()
    );
    (worst, images)
}

fn check_all(name: &str) {
    let fx = Fixture::load(&format!("methods/{name}.safetensors"));
    let ctx = GpuContext::new().expect("a wgpu adapter");
    let multilayer: Vec<String> = serde_json::from_str(&fx.meta["multilayer"]).unwrap();
    let mut cases = vec![
        case("cam.gradcam", Method::GradCam),
        case("cam.hirescam", Method::HiResCam),
        case("cam.gradcam-elementwise", Method::GradCamElementWise),
        case("cam.gradcam++", Method::GradCamPlusPlus),
        case("cam.xgradcam", Method::XGradCam),
        case("cam.layercam", Method::LayerCam),
        case("cam.eigencam", Method::EigenCam),
        case("cam.eigengradcam", Method::EigenGradCam),
        case("cam.scorecam", Method::ScoreCam),
        case("cam.ablationcam", Method::AblationCam),
        Case {
            eigen_smooth: true,
            ..case("cam.gradcam.eigen_smooth", Method::GradCam)
        },
        Case {
            eigen_smooth: true,
            ..case("cam.hirescam.eigen_smooth", Method::HiResCam)
        },
        Case {
            layers: multilayer.clone(),
            ..case("cam.gradcam.multilayer", Method::GradCam)
        },
        Case {
            layers: multilayer,
            fuse: Fuse::Max,
            ..case("cam.gradcam.multilayer_max", Method::GradCam)
        },
    ];
    cases.push(case("cam.fullgrad", Method::FullGrad));
    cases.push(Case {
        aug_smooth: true,
        ..case("cam.gradcam.aug_smooth", Method::GradCam)
    });
    let mut failures = Vec::new();
    // Guided Grad-CAM: its map is Grad-CAM's, its image deprocess(map * guided backprop).
    let (e, images) = run_with(&fx, &ctx, &case("cam.gradcam", Method::GuidedGradCam));
    if e.is_nan() || e > TOLERANCE {
        failures.push(format!("guided-gradcam map: {e:.2e}"));
    }
    let want = fx.u8s("guided.guided_gradcam");
    let got: Vec<u8> = images
        .iter()
        .flat_map(|im| im.as_raw().iter().copied())
        .collect();
    assert_eq!(got.len(), want.len());
    let off = got
        .iter()
        .zip(&want)
        .filter(|(a, b)| a.abs_diff(**b) > 1)
        .count();
    let max_diff = got
        .iter()
        .zip(&want)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap_or(0);
    println!(
        "{} guided-gradcam image: {:.4}% of values off by more than 1 level (max {max_diff})",
        fx.name,
        100.0 * off as f64 / want.len() as f64
    );
    if off as f64 > 1e-3 * want.len() as f64 {
        failures.push(format!("guided-gradcam image: {off} values off by >1"));
    }
    for c in cases.drain(..) {
        let e = run(&fx, &ctx, &c);
        if e.is_nan() || e > TOLERANCE {
            failures.push(format!("{}: {e:.2e}", c.key));
        }
    }
    assert!(
        failures.is_empty(),
        "{name}: over {TOLERANCE}: {failures:?}"
    );
}

#[test]
fn resnet50_bottleneck_nonsquare_all_methods() {
    check_all("resnet50");
}

#[test]
fn vgg11_bn_all_methods() {
    check_all("vgg11_bn");
}

/// CAM: for a global-average-pool + linear head it is Grad-CAM up to a positive factor, so
/// after normalisation it must equal pytorch-grad-cam's Grad-CAM maps.
#[test]
fn cam_matches_gradcam_on_gap_linear_heads() {
    let ctx = GpuContext::new().expect("a wgpu adapter");
    for name in ["resnet18_layer4", "resnet50_layer4"] {
        let fx = Fixture::load(&format!("{name}.safetensors"));
        let targets = fx.i64s("targets");
        let n = fx.images.len();
        let per = targets.len() / n;
        let lists: Vec<Vec<usize>> = targets
            .chunks(per)
            .map(|t| t.iter().map(|&v| v as usize).collect())
            .collect();
        let cfg = EngineConfig {
            layers: vec![fx.meta["layer"].clone()],
            method: Method::Cam,
            size: fx.size,
            targets: TargetSpec::PerImage(per),
            read_maps: true,
            ..Default::default()
        };
        let mut engine = Engine::new(ctx.clone(), &fx.model, cfg).unwrap();
        let results = engine.explain_for(&fx.images, &lists).unwrap();
        let want = fx.f32s("cams");
        let plane = fx.size[0] * fx.size[1];
        let mut worst = 0f32;
        for (i, r) in results.iter().enumerate() {
            for (t, tr) in r.targets.iter().enumerate() {
                let row = i * per + t;
                for (a, b) in tr
                    .map
                    .as_ref()
                    .unwrap()
                    .iter()
                    .zip(&want[row * plane..(row + 1) * plane])
                {
                    worst = worst.max((a - b).abs());
                }
            }
        }
        println!("{name} cam vs pgc GradCAM: max abs error {worst:.2e}");
        assert!(worst <= TOLERANCE, "{name}: {worst}");
    }
    // VGG's three-layer classifier is not a CAM head.
    let fx = Fixture::load("vgg11_bn_mid.safetensors");
    let cfg = EngineConfig {
        method: Method::Cam,
        size: fx.size,
        ..Default::default()
    };
    let err = Engine::new(ctx, &fx.model, cfg)
        .err()
        .expect("CAM must refuse VGG heads");
    assert!(err.to_string().contains("global average pool"), "{err}");
}

/// Winograd convs (`--winograd`) on the fixture most sensitive to them. Grad-CAM and
/// Score-CAM keep the parity bound; Ablation-CAM (differences of near-equal scores) and
/// aug-smooth exceed it (2.4e-3 and 3.4e-3 measured on lavapipe), which the README states
/// and the looser bound pins.
#[test]
fn vgg11_bn_winograd() {
    let fx = Fixture::load("methods/vgg11_bn.safetensors");
    let ctx = GpuContext::new().expect("a wgpu adapter");
    if !gradcam_wgpu::ops::conv::texture_conv_supported(&ctx) {
        eprintln!("skipped: {} has no Winograd kernel", ctx.describe());
        return;
    }
    let winograd = |c: Case<'static>| Case {
        winograd: true,
        ..c
    };
    for (c, bound) in [
        (winograd(case("cam.gradcam", Method::GradCam)), TOLERANCE),
        (winograd(case("cam.scorecam", Method::ScoreCam)), TOLERANCE),
        (winograd(case("cam.ablationcam", Method::AblationCam)), 1e-2),
        (
            winograd(Case {
                aug_smooth: true,
                ..case("cam.gradcam.aug_smooth", Method::GradCam)
            }),
            1e-2,
        ),
    ] {
        let e = run(&fx, &ctx, &c);
        assert!(e <= bound, "{} with Winograd: {e:.2e} > {bound}", c.key);
    }
}

/// `--score` against pytorch-grad-cam's target objects (tools/make_score_fixtures.py): softmax
/// and ReST on a 7-class ResNet, binary on a one-output ResNet, with the gradient methods and
/// the perturbation methods (which score their probes the same way).
#[test]
fn scores_match_pytorch_grad_cam_targets() {
    let ctx = GpuContext::new().expect("a wgpu adapter");
    let mut failures = Vec::new();
    let mut checked = 0;
    for name in ["scores_multiclass", "scores_binary"] {
        let fx = Fixture::load(&format!("methods/{name}.safetensors"));
        let keys: Vec<String> = serde_json::from_str(&fx.meta["keys"]).unwrap();
        for key in &keys {
            let mut parts = key.split('.').skip(1);
            let method: Method = parts.next().unwrap().parse().unwrap();
            let score: Score = parts.next().unwrap().parse().unwrap();
            let c = Case {
                score,
                ..case(key, method)
            };
            let err = run(&fx, &ctx, &c);
            checked += 1;
            if err > TOLERANCE {
                failures.push(format!("{name} {key}: {err:.2e}"));
            }
        }
    }
    assert!(checked >= 15, "only {checked} cases in the score fixtures");
    assert!(failures.is_empty(), "over {TOLERANCE}: {failures:?}");
}

/// The methods pytorch-grad-cam added later (tools/make_new_method_fixtures.py): FEM,
/// Seg-Eigen-CAM, KPCA-CAM and Sobel-CAM at two layers of a ResNet-18.
#[test]
fn new_methods_match_pytorch_grad_cam() {
    let ctx = GpuContext::new().expect("a wgpu adapter");
    let fx = Fixture::load("methods/new_methods.safetensors");
    let methods: Vec<String> = serde_json::from_str(&fx.meta["methods"]).unwrap();
    let others: Vec<String> = serde_json::from_str(&fx.meta["layers"]).unwrap();
    let mut failures = Vec::new();
    for name in &methods {
        let method: Method = name.parse().unwrap();
        let mut keys = vec![(format!("cam.{name}"), Vec::new())];
        keys.extend(
            others
                .iter()
                .map(|l| (format!("cam.{name}.{l}"), vec![l.clone()])),
        );
        for (key, layers) in &keys {
            let c = Case {
                layers: layers.clone(),
                ..case(key, method)
            };
            let err = run(&fx, &ctx, &c);
            if err > TOLERANCE {
                failures.push(format!("{key}: {err:.2e}"));
            }
        }
    }
    // KPCA-CAM's --kpca-gamma.
    let gamma: f32 = fx.meta["kpca_gamma"].parse().unwrap();
    let c = Case {
        kpca_gamma: Some(gamma),
        ..case("cam.kpca-cam.gamma", Method::KpcaCam)
    };
    let err = run(&fx, &ctx, &c);
    if err > TOLERANCE {
        failures.push(format!("cam.kpca-cam.gamma: {err:.2e}"));
    }
    assert!(failures.is_empty(), "over {TOLERANCE}: {failures:?}");
}

/// RandomCAM and FinerCAM (tools/make_more_method_fixtures.py) at two layers of the
/// ResNet-18: RandomCAM from numpy's seeded stream (its first draws checked directly, and
/// another seed must fail), FinerCAM with per-image classes, with pgc's own top-1 choice and
/// with --compare/--alpha of their own.
#[test]
fn random_and_finer_cam_match_pytorch_grad_cam() {
    use gradcam_wgpu::engine::random::{numpy_stream, random_sample};
    let ctx = GpuContext::new().expect("a wgpu adapter");
    let fx = Fixture::load("methods/more_methods.safetensors");
    let seed: u64 = fx.meta["random_seed"].parse().unwrap();
    let mut mt = numpy_stream(seed).unwrap();
    for (i, want) in fx.f32s("random_draws").iter().enumerate() {
        let got = (2.0 * random_sample(&mut mt) - 1.0) as f32;
        assert_eq!(got, *want, "draw {i} of np.random.seed({seed})");
    }
    assert!(numpy_stream(1 << 32).is_err());
    let others: Vec<String> = serde_json::from_str(&fx.meta["layers"]).unwrap();
    let mut cases = Vec::new();
    for (name, method) in [
        ("random-cam", Method::RandomCam),
        ("finer-cam", Method::FinerCam),
    ] {
        cases.push(case(&*format!("cam.{name}").leak(), method));
        for l in &others {
            cases.push(Case {
                layers: vec![l.clone()],
                ..case(format!("cam.{name}.{l}").leak(), method)
            });
        }
    }
    for c in &mut cases {
        c.random_seed = seed;
    }
    cases.push(Case {
        targets: Some(TargetSpec::TopK(1)),
        ..case("cam.finer-cam.top1", Method::FinerCam)
    });
    cases.push(Case {
        targets: Some(TargetSpec::Classes(vec![
            fx.meta["finer_class"].parse().unwrap(),
        ])),
        finer_alpha: fx.meta["finer_alpha"].parse().unwrap(),
        finer_compare: serde_json::from_str(&fx.meta["finer_compare"]).unwrap(),
        ..case("cam.finer-cam.opts", Method::FinerCam)
    });
    let mut failures = Vec::new();
    for c in &cases {
        let err = run(&fx, &ctx, c);
        if err > TOLERANCE {
            failures.push(format!("{}: {err:.2e}", c.key));
        }
    }
    assert!(failures.is_empty(), "over {TOLERANCE}: {failures:?}");
    // The fixtures tell the variants apart: another seed, and Grad-CAM, miss them.
    let other_seed = Case {
        random_seed: seed + 1,
        ..case("cam.random-cam", Method::RandomCam)
    };
    assert!(run(&fx, &ctx, &other_seed) > 0.05);
    assert!(run(&fx, &ctx, &case("cam.finer-cam", Method::GradCam)) > 0.05);
}

/// ShapleyCAM on the ResNet-18 (a piecewise-linear head): with the logit score its Hessian
/// term is zero (Grad-CAM), with the softmax score it is not, and Grad-CAM (g alone) misses
/// that fixture.
#[test]
fn shapley_cam_matches_pytorch_grad_cam() {
    let ctx = GpuContext::new().expect("a wgpu adapter");
    let fx = Fixture::load("methods/more_methods.safetensors");
    let mut failures = Vec::new();
    for (key, score) in [
        ("cam.shapley-cam.logit", Score::Logit),
        ("cam.shapley-cam.softmax", Score::Softmax),
        ("cam.shapley-cam.rest", Score::Rest),
    ] {
        let c = Case {
            score,
            ..case(key, Method::ShapleyCam)
        };
        let err = run(&fx, &ctx, &c);
        if err > TOLERANCE {
            failures.push(format!("{key}: {err:.2e}"));
        }
    }
    // Few backward rows per pass: J·A in chunks of classes, the targets in several passes.
    let cfg = |rows| EngineConfig {
        layers: vec![fx.meta["layer"].clone()],
        method: Method::ShapleyCam,
        score: Score::Softmax,
        size: fx.size,
        batch: 2,
        targets: TargetSpec::TopK(3),
        read_maps: true,
        backward_rows: rows,
        ..Default::default()
    };
    let maps = |rows| -> Vec<f32> {
        let mut e = Engine::new(ctx.clone(), &fx.model, cfg(rows)).unwrap();
        let r = e.explain(&fx.images).unwrap();
        r.iter()
            .flat_map(|ir| ir.targets.iter().flat_map(|t| t.map.clone().unwrap()))
            .collect()
    };
    let (whole, chunked) = (maps(None), maps(Some(3)));
    let apart = whole
        .iter()
        .zip(&chunked)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(apart < 1e-5, "chunked passes differ by {apart:.2e}");
    assert!(failures.is_empty(), "over {TOLERANCE}: {failures:?}");
    let without_hv = Case {
        score: Score::Softmax,
        ..case("cam.shapley-cam.softmax", Method::GradCam)
    };
    let err = run(&fx, &ctx, &without_hv);
    assert!(err > 0.05, "the Hessian term matters here ({err:.2e})");
}

/// random-cam's weights follow the images of the run, not the batches: a batch of 2 and two
/// calls with one image each give the same maps; finer-cam's options are checked.
#[test]
fn random_cam_ignores_batching_and_finer_cam_checks_its_options() {
    let ctx = GpuContext::new().expect("a wgpu adapter");
    let fx = Fixture::load("methods/more_methods.safetensors");
    let cfg = |method, batch| EngineConfig {
        layers: vec![fx.meta["layer"].clone()],
        method,
        size: fx.size,
        batch,
        targets: TargetSpec::TopK(2),
        read_maps: true,
        random_seed: 5,
        ..Default::default()
    };
    let maps = |r: Vec<gradcam_wgpu::engine::ImageResult>| -> Vec<f32> {
        r.iter()
            .flat_map(|ir| ir.targets.iter().flat_map(|t| t.map.clone().unwrap()))
            .collect()
    };
    let mut one = Engine::new(ctx.clone(), &fx.model, cfg(Method::RandomCam, 2)).unwrap();
    let whole = maps(one.explain(&fx.images).unwrap());
    let mut each = Engine::new(ctx.clone(), &fx.model, cfg(Method::RandomCam, 1)).unwrap();
    let mut split = maps(each.explain(&fx.images[..1]).unwrap());
    split.extend(maps(each.explain(&fx.images[1..]).unwrap()));
    assert_eq!(whole, split);
    // The next run of the same engine continues the stream.
    assert_ne!(whole, maps(one.explain(&fx.images).unwrap()));
    type Change = fn(&mut EngineConfig);
    let changes: [(Change, &str); 4] = [
        (|c| c.score = Score::Softmax, "--score softmax"),
        (|c| c.finer_compare = vec![7, 9], "--compare"),
        (|c| c.finer_compare = vec![16], "--compare rank 16"),
        (|c| c.finer_alpha = f32::NAN, "--alpha"),
    ];
    for (change, needle) in changes {
        let mut c = cfg(Method::FinerCam, 2);
        change(&mut c);
        let e = Engine::new(ctx.clone(), &fx.model, c)
            .err()
            .expect("refused");
        assert!(e.to_string().contains(needle), "{e}");
    }
    let mut c = cfg(Method::RandomCam, 2);
    c.random_seed = 1 << 32;
    let e = Engine::new(ctx, &fx.model, c).err().expect("refused");
    assert!(e.to_string().contains("--seed"), "{e}");
}

/// RefineCAM: the base method's maps at several layers, each rescaled to [0, 1] at the input
/// size, multiplied and rescaled; Grad-CAM++ for `refine-cam`, any method with `--fuse
/// product`.
#[test]
fn refine_cam_matches_pytorch_grad_cam() {
    let ctx = GpuContext::new().expect("a wgpu adapter");
    let fx = Fixture::load("methods/new_methods.safetensors");
    let layers: Vec<String> = serde_json::from_str(&fx.meta["refine_layers"]).unwrap();
    let mut failures = Vec::new();
    for (key, method, fuse) in [
        ("cam.refine-cam", Method::RefineCam, Fuse::Mean),
        ("cam.gradcam.product", Method::GradCam, Fuse::Product),
    ] {
        let c = Case {
            layers: layers.clone(),
            fuse,
            ..case(key, method)
        };
        let err = run(&fx, &ctx, &c);
        println!("{key}: {err:.2e}");
        if err > TOLERANCE {
            failures.push(format!("{key}: {err:.2e}"));
        }
    }
    assert!(failures.is_empty(), "over {TOLERANCE}: {failures:?}");
    // refine-cam multiplies: --fuse max contradicts it.
    let cfg = EngineConfig {
        layers,
        method: Method::RefineCam,
        fuse: Fuse::Max,
        size: fx.size,
        ..Default::default()
    };
    let e = Engine::new(ctx, &fx.model, cfg).err().expect("refused");
    assert!(e.to_string().contains("--fuse max"), "{e}");
}

/// Faster Score-CAM (`max_channels`, tf-keras-vis's `max_N`) against its f64 composition on
/// the new-methods ResNet-18: the layer's activations, each image's N channels of largest
/// spatial std (tf-keras-vis: `tf.math.top_k` of `tf.math.reduce_std`), Score-CAM's probes of
/// just those through the f64 network, the softmax of their scores (the other channels weigh
/// 0), ReLU, min-max, resize. N at least the channels is plain Score-CAM, bit for bit.
#[test]
fn faster_score_cam_matches_its_f64_reference() {
    use gradcam_wgpu::reference as r;
    let ctx = GpuContext::new().expect("a wgpu adapter");
    let fx = Fixture::load("methods/new_methods.safetensors");
    let (g, w) = (&fx.model.graph, &fx.model.weights);
    let size = fx.size;
    let (n, tc, keep) = (2, 2, 6);
    let plane = size[0] * size[1];
    let targets: Vec<Vec<usize>> = fx
        .i64s("targets")
        .chunks(tc)
        .map(|t| t.iter().map(|&v| v as usize).collect())
        .collect();
    let layer = fx.meta["layer"].clone();
    let maps = |max_channels| {
        let cfg = EngineConfig {
            layers: vec![layer.clone()],
            method: Method::ScoreCam,
            max_channels,
            size,
            batch: n,
            targets: TargetSpec::PerImage(tc),
            read_maps: true,
            ..Default::default()
        };
        let mut engine = Engine::new(ctx.clone(), &fx.model, cfg).unwrap();
        let res = engine.explain_for(&fx.images, &targets).unwrap();
        res.iter()
            .flat_map(|ir| ir.targets.iter().flat_map(|t| t.map.clone().unwrap()))
            .collect::<Vec<f32>>()
    };

    let x: Vec<f64> = fx.f32s("input").iter().map(|&v| v as f64).collect();
    let node = fx.model.find_layer(&layer).unwrap();
    let shape = g.shapes(size).unwrap()[node];
    let [c, h, wd] = shape;
    let acts = common::cpu_forward(g, w, x.clone(), n, size);
    let a = &acts[node];
    let classes = g.num_classes(size).unwrap();
    let mut weights = Vec::new();
    for (img, classes_of) in targets.iter().enumerate() {
        let kept = &r::perturb::top_channels(a, img, shape)[..keep];
        let masks = r::perturb::score_masks(a, img, shape, size);
        let xi = &x[img * 3 * plane..][..3 * plane];
        let probes: Vec<f64> = (0..keep * 3 * plane)
            .map(|i| xi[i % (3 * plane)] * masks[kept[i / (3 * plane)] * plane + i % plane])
            .collect();
        let logits = common::cpu_forward(g, w, probes, keep, size).pop().unwrap();
        for &class in classes_of {
            let scores: Vec<f64> = (0..keep).map(|j| logits[j * classes + class]).collect();
            weights.extend(r::perturb::softmax_kept(&scores, kept, c));
        }
    }
    let cam = r::weighted_sum(a, &weights, n * tc, c, h * wd, tc);
    let cam = r::minmax_normalize(&cam, h * wd);
    let cam = r::upsample_bilinear(&cam, n * tc, [h, wd], size);
    let want = r::minmax_normalize(&cam, plane);

    let got = maps(Some(keep));
    let worst = got
        .iter()
        .zip(&want)
        .fold(0f64, |m, (&a, &b)| m.max((a as f64 - b).abs()));
    let plain = maps(None);
    let apart = got
        .iter()
        .zip(&plain)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    println!(
        "faster score-cam ({keep} of {c} channels): max abs error {worst:.2e}; \
         {apart:.2} from plain Score-CAM"
    );
    assert!(worst < TOLERANCE as f64, "max abs error {worst:.2e}");
    assert!(apart > 0.05, "the selection changes the maps ({apart})");
    for all in [c, c + 3] {
        assert!(
            maps(Some(all)) == plain,
            "max_channels {all} of {c} is Score-CAM"
        );
    }
}

/// torch-cam 0.5's SS-CAM and IS-CAM (tools/make_torchcam_fixtures.py) on a ResNet-18:
/// torch-cam's raw maps through pgc's ReLU -> min-max -> resize pipeline, SS-CAM given
/// torch-cam's recorded noise (its RNG can't be reproduced).
#[test]
fn torchcam_methods_match_torch_cam() {
    let ctx = GpuContext::new().expect("a wgpu adapter");
    let fx = Fixture::load("methods/torchcam_methods.safetensors");
    let methods: Vec<String> = serde_json::from_str(&fx.meta["methods"]).unwrap();
    let samples: std::collections::HashMap<String, usize> =
        serde_json::from_str(&fx.meta["samples"]).unwrap();
    let mut failures = Vec::new();
    for name in &methods {
        let Ok(method) = name.parse::<Method>() else {
            continue;
        };
        let key = format!("cam.{name}");
        let noise_key = format!("noise.{name}");
        let c = Case {
            samples: Some(samples[name]),
            noise: fx.has(&noise_key).then(|| fx.f32s(&noise_key)),
            ..case(&key, method)
        };
        let err = run(&fx, &ctx, &c);
        if err > TOLERANCE {
            failures.push(format!("{key}: {err:.2e}"));
        }
    }
    assert!(failures.is_empty(), "over {TOLERANCE}: {failures:?}");
}

/// SS-CAM's and SmoothGrad-CAM++'s noise is used: the recorded draws, zero draws and the
/// engine's own seeded draws give different maps; a seed gives the same maps twice.
#[test]
fn noise_changes_the_maps() {
    let ctx = GpuContext::new().expect("a wgpu adapter");
    let fx = Fixture::load("methods/torchcam_methods.safetensors");
    let samples: std::collections::HashMap<String, usize> =
        serde_json::from_str(&fx.meta["samples"]).unwrap();
    for method in [Method::SsCam, Method::SmoothGradCamPlusPlus] {
        let name = method.name();
        let given = fx.f32s(&format!("noise.{name}"));
        let maps = |noise: Option<Vec<f32>>, seed: u64| {
            let cfg = EngineConfig {
                layers: vec![fx.meta["layer"].clone()],
                method,
                samples: Some(samples[name]),
                noise,
                seed,
                size: fx.size,
                batch: 2,
                read_maps: true,
                ..Default::default()
            };
            let mut engine = Engine::new(ctx.clone(), &fx.model, cfg).unwrap();
            let res = engine.explain(&fx.images).unwrap();
            res.iter()
                .flat_map(|ir| ir.targets.iter().flat_map(|t| t.map.clone().unwrap()))
                .collect::<Vec<f32>>()
        };
        let apart =
            |a: &[f32], b: &[f32]| a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        let recorded = maps(Some(given.clone()), 0);
        let zero = maps(Some(vec![0.0; given.len()]), 0);
        let seeded = maps(None, 5);
        println!(
            "{name}: recorded vs zero noise {:.2}, vs seeded {:.2}",
            apart(&recorded, &zero),
            apart(&recorded, &seeded)
        );
        assert!(apart(&recorded, &zero) > 1e-2, "{name}: noise is ignored");
        assert!(
            apart(&recorded, &seeded) > 1e-2,
            "{name}: seeded noise is ignored"
        );
        assert!(
            apart(&seeded, &maps(None, 6)) > 1e-2,
            "{name}: the seed is ignored"
        );
        assert!(
            seeded == maps(None, 5),
            "{name}: a seed gives the same maps"
        );
    }
}

/// `--max-channels` (Faster Score-CAM) applies to SS-CAM and IS-CAM: N at least the channels
/// is the plain method bit for bit, fewer channels change the maps.
#[test]
fn max_channels_applies_to_sscam_and_iscam() {
    let ctx = GpuContext::new().expect("a wgpu adapter");
    let fx = Fixture::load("methods/torchcam_methods.safetensors");
    let given = fx.f32s("noise.sscam");
    for method in [Method::SsCam, Method::IsCam] {
        let maps = |max_channels| {
            let cfg = EngineConfig {
                layers: vec![fx.meta["layer"].clone()],
                method,
                samples: Some(3),
                noise: (method == Method::SsCam).then(|| given.clone()),
                max_channels,
                size: fx.size,
                batch: 2,
                read_maps: true,
                ..Default::default()
            };
            let mut engine = Engine::new(ctx.clone(), &fx.model, cfg).unwrap();
            let res = engine.explain(&fx.images).unwrap();
            res.iter()
                .flat_map(|ir| ir.targets.iter().flat_map(|t| t.map.clone().unwrap()))
                .collect::<Vec<f32>>()
        };
        let plain = maps(None);
        let few = maps(Some(6));
        let apart = plain
            .iter()
            .zip(&few)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        println!("{}: 6 channels {apart:.2} from all", method.name());
        assert!(
            apart > 1e-2,
            "{}: the selection changes the maps",
            method.name()
        );
        assert!(
            maps(Some(64)) == plain,
            "{}: all channels is plain",
            method.name()
        );
    }
}

/// `--samples`, `--noise` and given noise are refused where they don't apply or don't fit.
#[test]
fn sampling_options_are_checked() {
    let ctx = GpuContext::new().expect("a wgpu adapter");
    let fx = Fixture::load("methods/torchcam_methods.safetensors");
    let layer = fx.meta["layer"].clone();
    let base = EngineConfig {
        layers: vec![layer],
        method: Method::SsCam,
        size: fx.size,
        ..Default::default()
    };
    for (cfg, says) in [
        (
            EngineConfig {
                method: Method::GradCam,
                samples: Some(2),
                ..base.clone()
            },
            "--samples",
        ),
        (
            EngineConfig {
                method: Method::IsCam,
                noise_std: Some(1.0),
                ..base.clone()
            },
            "--noise",
        ),
        (
            EngineConfig {
                samples: Some(0),
                ..base.clone()
            },
            "--samples",
        ),
        (
            EngineConfig {
                noise_std: Some(f32::NAN),
                ..base.clone()
            },
            "--noise",
        ),
        (
            EngineConfig {
                samples: Some(2),
                noise: Some(vec![0.0; 7]),
                ..base.clone()
            },
            "noise",
        ),
    ] {
        let e = Engine::new(ctx.clone(), &fx.model, cfg)
            .err()
            .expect("refused");
        assert!(e.to_string().contains(says), "{e}");
    }
}

/// Every method the CLI offers is compared with pytorch-grad-cam: the fixtures list the
/// methods tools/make_method_fixtures.py ran, and the two it runs apart (guided-gradcam's
/// image, cam's classifier weights) have tests of their own above; legrad (torchcam's, on a
/// ViT) is in tests/onnx_golden.rs.
#[test]
fn every_method_has_a_golden_fixture() {
    // refine-cam: several layers at once, in refine_cam_matches_pytorch_grad_cam.
    // random-cam, finer-cam, shapley-cam: methods/more_methods, tests of their own below.
    let separately = [
        "guided-gradcam",
        "cam",
        "legrad",
        "refine-cam",
        "random-cam",
        "finer-cam",
        "shapley-cam",
    ];
    let mut new: Vec<String> = Vec::new();
    for extra in ["new_methods", "torchcam_methods"] {
        let fx = Fixture::load(&format!("methods/{extra}.safetensors"));
        new.extend(serde_json::from_str::<Vec<String>>(&fx.meta["methods"]).unwrap());
    }
    for name in ["resnet50", "vgg11_bn"] {
        let fx = Fixture::load(&format!("methods/{name}.safetensors"));
        let listed: Vec<String> = serde_json::from_str(&fx.meta["methods"]).unwrap();
        for (_, cli, _) in gradcam_wgpu::engine::METHODS {
            assert!(
                listed.iter().chain(&new).any(|m| m == cli) || separately.contains(cli),
                "{cli} has no golden case in methods/{name} or methods/new_methods: add it to \
                 tools/make_new_method_fixtures.py and regenerate"
            );
        }
    }
}
