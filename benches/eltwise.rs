//! The non-GEMM kernels of a vision transformer block at vit_b_16's batch-16 sizes: the
//! residual add, a gradient copy, GELU, LayerNorm, softmax over attention rows and the
//! head-split transpose. On llvmpipe these are per-lane memory loops, 40% of a ViT batch.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gradcam_wgpu::GpuContext;
use gradcam_wgpu::gpu::{Dispatch, buffer, record_all};
use gradcam_wgpu::ops::Ops;
use gradcam_wgpu::ops::eltwise::Activation;
use gradcam_wgpu::ops::layout::Gather;
use gradcam_wgpu::ops::norm::NormShape;

const GELU: Activation = Activation {
    forward: "gelu_forward",
    backward: "gelu_backward",
    reads_input: true,
    staged: Some("gelu_forward_staged"),
};

fn run(ctx: &GpuContext, ds: &[Dispatch]) {
    let mut enc = ctx.device.create_command_encoder(&Default::default());
    record_all(&mut enc, "bench", ds);
    ctx.queue.submit([enc.finish()]);
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("poll");
}

fn bench(c: &mut Criterion) {
    let ctx = GpuContext::new().expect("adapter");
    let ops = Ops::new(&ctx);
    let (n, tokens, width, heads) = (16, 197, 768, 12);
    let rows = n * tokens * width;
    let mlp = rows * 4;
    let scores = n * heads * tokens * tokens;
    let big = rows.max(mlp).max(scores);
    let a = buffer::storage_f32(&ctx, "a", &vec![0.25; big]);
    let b = buffer::storage_f32(&ctx, "b", &vec![0.5; big]);
    let y = buffer::storage(&ctx, "y", (big * 4) as u64);
    let affine = buffer::storage_f32(&ctx, "affine", &vec![1.0; 2 * width]);
    let norm = NormShape {
        rows: tokens,
        len: width,
        groups: 1,
        plane: 1,
        eps: 1e-6,
    };
    // [tokens, n, heads, 64] -> [n, heads, tokens, 64]: the head split.
    let split = Gather::new([n * heads, tokens, 64], [64, n * heads * 64, 1], rows);
    let cases: Vec<(&str, usize, Dispatch)> = vec![
        ("add", rows, ops.eltwise.add(&ctx, rows, false, &a, &b, &y)),
        (
            "add.tiny",
            1024,
            ops.eltwise.add(&ctx, 1024, false, &a, &b, &y),
        ),
        (
            "add_into.copy",
            rows,
            ops.eltwise.add_into(&ctx, rows, false, &a, &y, &ops.dummy),
        ),
        (
            "gelu",
            mlp,
            ops.eltwise
                .activation_forward(&ctx, GELU, [0.0; 2], mlp, &a, &y, &ops.dummy),
        ),
        (
            "layernorm",
            rows,
            ops.norm.forward(&ctx, &norm, n, &a, &affine, &y),
        ),
        (
            "softmax",
            scores,
            ops.attention
                .softmax(&ctx, [heads * tokens, tokens, 1], n, &a, &y, &ops.dummy),
        ),
        (
            "head_split",
            rows,
            ops.layout.gather(&ctx, 1, &split, false, &a, &y),
        ),
    ];
    let mut g = c.benchmark_group("eltwise");
    g.sample_size(10);
    g.warm_up_time(std::time::Duration::from_millis(500));
    g.measurement_time(std::time::Duration::from_secs(2));
    for (name, len, d) in &cases {
        g.throughput(Throughput::Elements(*len as u64));
        g.bench_function(*name, |bch| bch.iter(|| run(&ctx, std::slice::from_ref(d))));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
