//! Conv kernels on the shapes of resnet18/50 and vgg16 at the engine's batch, the adapter's
//! variants, forward and backward-data; the classifier heads' linear layers; and depthwise
//! convs (MobileNetV2 / EfficientNet shapes), the direct kernel against the grouped GEMM.
//! Throughput is reported in FLOP (2 per multiply-add); Winograd's forward (`--winograd`,
//! where the adapter runs it) is counted in the direct conv's FLOP, for comparison.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gradcam_wgpu::GpuContext;
use gradcam_wgpu::gpu::AdapterClass;
use gradcam_wgpu::gpu::Dispatch;
use gradcam_wgpu::gpu::{buffer, record_all};
use gradcam_wgpu::ops::conv::{
    ConvShape, ConvVariant, ConvWeight, pack_backward, pack_depthwise, pack_forward,
    subgroup_conv_supported, texture_conv_supported, winograd_eligible,
};
use gradcam_wgpu::ops::linear::LinearWeight;
use gradcam_wgpu::ops::{Ops, Precision};

fn shape(batch: usize, cin: usize, hw: usize, cout: usize, k: usize, stride: usize) -> ConvShape {
    ConvShape {
        batch,
        in_c: cin,
        in_h: hw,
        in_w: hw,
        out_c: cout,
        kernel: [k, k],
        stride: [stride, stride],
        padding: [k / 2, k / 2],
        padding_end: [k / 2, k / 2],
        dilation: [1, 1],
        groups: 1,
    }
}

/// The variants worth timing on this adapter: the default first.
fn variants(ctx: &GpuContext) -> Vec<ConvVariant> {
    match ctx.class {
        AdapterClass::Cpu if texture_conv_supported(ctx) => {
            vec![
                ConvVariant::Texture,
                ConvVariant::Subgroup,
                ConvVariant::Blocked,
            ]
        }
        AdapterClass::Cpu if subgroup_conv_supported(ctx) => {
            vec![ConvVariant::Subgroup, ConvVariant::Blocked]
        }
        AdapterClass::Cpu => vec![ConvVariant::Blocked],
        AdapterClass::Gpu => vec![ConvVariant::Tiled, ConvVariant::Blocked],
    }
}

fn bench(c: &mut Criterion) {
    let ctx = GpuContext::new().expect("adapter");
    let mut ops = Ops::new(&ctx);
    // The engine's batch. VGG's big layers at batch 16 take seconds per run, so they are
    // timed at batch 2 (throughput per FLOP barely depends on the batch).
    let batch = 16;
    let cases = [
        ("r18.layer1.3x3", shape(batch, 64, 56, 64, 3, 1)),
        ("r18.layer2.3x3s2", shape(batch, 64, 56, 128, 3, 2)),
        ("r18.layer4.3x3", shape(batch, 512, 7, 512, 3, 1)),
        ("r50.layer1.1x1a", shape(batch, 256, 56, 64, 1, 1)),
        ("r50.layer1.1x1b", shape(batch, 64, 56, 256, 1, 1)),
        ("r50.layer3.3x3", shape(batch, 256, 14, 256, 3, 1)),
        ("r50.layer4.1x1", shape(batch, 512, 7, 2048, 1, 1)),
        ("r50.conv1.7x7s2", shape(batch, 3, 224, 64, 7, 2)),
        ("vgg16.conv1_2.b2", shape(2, 64, 224, 64, 3, 1)),
        ("vgg16.conv4_2.b2", shape(2, 512, 28, 512, 3, 1)),
        // vit_b_16's MLP at batch 2: 394 tokens as 1x1 images.
        ("vit.mlp1.b2", shape(2 * 197, 768, 1, 3072, 1, 1)),
    ];
    let mut g = c.benchmark_group("conv");
    g.sample_size(10);
    g.warm_up_time(std::time::Duration::from_millis(500));
    g.measurement_time(std::time::Duration::from_secs(1));
    for (name, s) in cases {
        let wlen = s.weight_len();
        let w: Vec<f32> = (0..wlen).map(|i| ((i % 7) as f32 - 3.0) * 0.01).collect();
        let x_len = s.batch * s.in_c * s.in_h * s.in_w;
        let y_len = s.batch * s.out_c * s.out_h() * s.out_w();
        let x = buffer::storage_f32(&ctx, "x", &vec![0.5; x_len]);
        let y = buffer::storage(&ctx, "y", (y_len * 4) as u64);
        g.throughput(Throughput::Elements(2 * s.macs() as u64));
        for (i, v) in variants(&ctx).into_iter().enumerate() {
            ops.conv.variant = v;
            let cw = ConvWeight::upload_as(&ctx, "w", &w, &s, v).expect("upload");
            let fwd = ops
                .conv
                .forward_chunked(&ctx, &s, true, &x, &cw, None, &y, &ops.dummy);
            let bwd = ops
                .conv
                .backward_data_chunked(&ctx, &s, &y, &cw, &x, &ops.dummy);
            // Backward-data (head-only in the engine) for the default variant only.
            let runs = if i == 0 {
                vec![("fwd", fwd), ("bwd", bwd)]
            } else {
                vec![("fwd", fwd)]
            };
            for (dir, d) in runs {
                g.bench_function(format!("{name}/{v:?}/{dir}"), |b| {
                    b.iter(|| time_dispatches(&ctx, &d))
                });
            }
        }
        // `--winograd`: the forward as Winograd F(4x4, 3x3) where the adapter runs it.
        if winograd_eligible(&ctx, &s) {
            let cw = ConvWeight::upload_winograd(&ctx, "w", &w, &s).expect("upload");
            let fwd = ops
                .conv
                .forward_chunked(&ctx, &s, true, &x, &cw, None, &y, &ops.dummy);
            g.bench_function(format!("{name}/Winograd/fwd"), |b| {
                b.iter(|| time_dispatches(&ctx, &fwd))
            });
        }
    }
    g.finish();
}

/// The classifier heads at batch 16: resnet18, resnet50 and VGG16's first FC layer (411 MB,
/// split into chunks that fit one binding).
fn bench_linear(c: &mut Criterion) {
    let ctx = GpuContext::new().expect("adapter");
    let ops = Ops::new(&ctx);
    let batch = 16;
    let cases = [
        ("r18.fc", 512, 1000),
        ("r50.fc", 2048, 1000),
        ("vgg16.fc6", 25088, 4096),
    ];
    let mut g = c.benchmark_group("linear");
    g.sample_size(10);
    g.warm_up_time(std::time::Duration::from_millis(500));
    g.measurement_time(std::time::Duration::from_secs(1));
    for (name, in_f, out_f) in cases {
        let w: Vec<f32> = (0..in_f * out_f)
            .map(|i| ((i % 7) as f32 - 3.0) * 0.01)
            .collect();
        let x = buffer::storage_f32(&ctx, "x", &vec![0.5; batch * in_f]);
        let y = buffer::storage(&ctx, "y", (batch * out_f * 4) as u64);
        g.throughput(Throughput::Elements(2 * (batch * in_f * out_f) as u64));
        // f16 weights (`--precision f16`) halve the bytes read, which bounds these layers.
        let precisions: &[Precision] = if Precision::F16.supported(&ctx) {
            &[Precision::F32, Precision::F16]
        } else {
            &[Precision::F32]
        };
        for &precision in precisions {
            let lw =
                LinearWeight::upload_at(&ctx, "w", &w, out_f, in_f, precision).expect("upload");
            let fwd = ops
                .linear
                .forward(&ctx, &lw, batch, true, &x, None, &y, &ops.dummy);
            let bwd = ops.linear.backward(&ctx, &lw, batch, &y, &x, &ops.dummy);
            for (dir, d) in [("fwd", fwd), ("bwd", bwd)] {
                g.bench_function(format!("{name}/{precision:?}/{dir}"), |b| {
                    b.iter(|| time_dispatches(&ctx, &d))
                });
            }
        }
    }
    g.finish();
}

/// Submits `ds` in one pass and waits for them.
fn time_dispatches(ctx: &GpuContext, ds: &[Dispatch]) {
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    record_all(&mut enc, "bench", ds);
    ctx.queue.submit([enc.finish()]);
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("poll");
}

/// Submits `d` and waits for it.
fn time_dispatch(ctx: &GpuContext, d: &Dispatch) {
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    record_all(&mut enc, "bench", std::slice::from_ref(d));
    ctx.queue.submit([enc.finish()]);
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("poll");
}

fn bench_depthwise(c: &mut Criterion) {
    let ctx = GpuContext::new().expect("adapter");
    let mut ops = Ops::new(&ctx);
    let batch = 4;
    let dw = |hw, ch, stride| ConvShape {
        groups: ch,
        ..shape(batch, ch, hw, ch, 3, stride)
    };
    let cases = [
        ("56x56x96.3x3s1", dw(56, 96, 1)),
        ("56x56x96.3x3s2", dw(56, 96, 2)),
        ("28x28x144.3x3s1", dw(28, 144, 1)),
        ("28x28x144.3x3s2", dw(28, 144, 2)),
    ];
    let variants: &[ConvVariant] = match ctx.class {
        AdapterClass::Cpu => &[ConvVariant::Blocked],
        AdapterClass::Gpu => &[ConvVariant::Tiled, ConvVariant::Blocked],
    };
    let mut g = c.benchmark_group("depthwise");
    g.sample_size(10);
    g.warm_up_time(std::time::Duration::from_secs(1));
    g.measurement_time(std::time::Duration::from_secs(2));
    for (name, s) in cases {
        let w: Vec<f32> = (0..s.weight_len())
            .map(|i| ((i % 7) as f32 - 3.0) * 0.01)
            .collect();
        let x_len = s.batch * s.in_c * s.in_h * s.in_w;
        let y_len = s.batch * s.out_c * s.out_h() * s.out_w();
        let x = buffer::storage_f32(&ctx, "x", &vec![0.5; x_len]);
        let y = buffer::storage(&ctx, "y", (y_len * 4) as u64);
        let wd = buffer::storage_f32(&ctx, "w", &pack_depthwise(&w, &s));
        g.throughput(Throughput::Elements(2 * s.macs() as u64));
        let mut runs = vec![(
            "direct".to_string(),
            ops.conv
                .depthwise_forward(&ctx, &s, true, &x, &wd, None, &y, &ops.dummy),
            ops.conv
                .depthwise_backward_data(&ctx, &s, &y, &wd, &x, &ops.dummy),
        )];
        // The grouped GEMM the depthwise kernel replaces.
        let wf = buffer::storage_f32(&ctx, "w", &pack_forward(&w, &s));
        let wb = buffer::storage_f32(&ctx, "w", &pack_backward(&w, &s));
        for &v in variants {
            ops.conv.variant = v;
            runs.push((
                format!("grouped-{v:?}"),
                ops.conv
                    .forward(&ctx, &s, true, &x, &wf, None, &y, &ops.dummy),
                ops.conv.backward_data(&ctx, &s, &y, &wb, &x, &ops.dummy),
            ));
        }
        for (kernel, fwd, bwd) in runs {
            for (dir, d) in [("fwd", fwd), ("bwd", bwd)] {
                g.bench_function(format!("{name}/{kernel}/{dir}"), |b| {
                    b.iter(|| time_dispatch(&ctx, &d))
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, bench, bench_linear, bench_depthwise);
criterion_main!(benches);
