//! Every CAM method against pytorch-grad-cam 1.5.7 (fixtures from
//! tools/make_method_fixtures.py): a Bottleneck ResNet on a non-square input and a VGG-BN,
//! two different classes per image.

mod fixture;

use fixture::Fixture;
use gradcam_wgpu::engine::{Fuse, Method};
use gradcam_wgpu::{Engine, EngineConfig, GpuContext, TargetSpec};

const TOLERANCE: f32 = 1e-3;

struct Case<'a> {
    key: &'a str,
    method: Method,
    layers: Vec<String>,
    fuse: Fuse,
    eigen_smooth: bool,
}

fn case(key: &str, method: Method) -> Case<'_> {
    Case {
        key,
        method,
        layers: Vec::new(),
        fuse: Fuse::Mean,
        eigen_smooth: false,
    }
}

/// Runs `c` and returns the worst map error; maps under `{key}.flipped` are accepted too
/// (an SVD's sign is arbitrary).
fn run(fx: &Fixture, ctx: &GpuContext, c: &Case) -> f32 {
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
        size: fx.size,
        batch: 2,
        targets: TargetSpec::PerImage(2),
        read_maps: true,
        ..Default::default()
    };
    let start = std::time::Instant::now();
    let mut engine = Engine::new(ctx.clone(), &fx.model, cfg).unwrap();
    let results = engine.explain_for(&fx.images, &targets).unwrap();
    let want = fx.f32s(c.key);
    let flipped_key = format!("{}.flipped", c.key);
    let flipped = fx.has(&flipped_key).then(|| fx.f32s(&flipped_key));
    let plane = fx.size[0] * fx.size[1];
    let mut worst = 0f32;
    for (i, r) in results.iter().enumerate() {
        for (t, tr) in r.targets.iter().enumerate() {
            assert_eq!(tr.class, targets[i][t]);
            let row = i * 2 + t;
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
        }
    }
    println!(
        "{} {}: max abs error {worst:.2e} ({:.1} s)",
        fx.name,
        c.key,
        start.elapsed().as_secs_f32()
    );
    worst
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
    let mut failures = Vec::new();
    for c in cases.drain(..) {
        let e = run(&fx, &ctx, &c);
        if !(e <= TOLERANCE) {
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
