//! ONNX import at batch 1 on small graphs built here: tensors whose axis 0 is not the
//! batch (torch's MultiheadAttention `[L, N, E]`, heads merged into axis 0), rank-5 and
//! rank-6 transposes, strided slices, constant folding of Transpose, ScatterND and
//! negative-step Slice, and `--reshape`. Every output is checked against loops written
//! here, at batch 2 with distinct images, on odd sizes.

mod common;
mod onnx_util;

use gradcam_wgpu::engine::reshape::{fold_layer, grid_fold};
use gradcam_wgpu::engine::{Method, Reshape};
use gradcam_wgpu::graph::Op;
use gradcam_wgpu::model::Tokens;
use gradcam_wgpu::onnx::OnnxOptions;
use gradcam_wgpu::{Engine, EngineConfig, GpuContext, Model, TargetSpec};
use onnx_protobuf::{NodeProto, TensorProto};
use onnx_util::*;
use std::sync::OnceLock;

/// `n` distinct images `[n, 3, h, w]`, none a multiple of another.
fn images(n: usize, h: usize, w: usize) -> Vec<f64> {
    (0..n * 3 * h * w)
        .map(|i| ((i * 37 + i / 5) % 23) as f64 / 7.0 - 1.5)
        .collect()
}

/// A float initializer's values as f64.
fn f64s(t: &TensorProto) -> Vec<f64> {
    t.float_data.iter().map(|&v| v as f64).collect()
}

/// `data` of row-major `dims` transposed by `perm` (output axis `i` is input axis `perm[i]`).
fn transpose_ref(data: &[f64], dims: &[usize], perm: &[usize]) -> Vec<f64> {
    let out: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    let pick: Vec<Vec<usize>> = out.iter().map(|&d| (0..d).collect()).collect();
    let mut stride = vec![1; dims.len()];
    for i in (0..dims.len() - 1).rev() {
        stride[i] = stride[i + 1] * dims[i + 1];
    }
    let pstride: Vec<usize> = perm.iter().map(|&p| stride[p]).collect();
    gather_ref(data, &pstride, &pick)
}

/// The elements at every combination of `pick[a]` indices (one list per axis), row-major,
/// for axis strides `stride`.
fn gather_ref(data: &[f64], stride: &[usize], pick: &[Vec<usize>]) -> Vec<f64> {
    let mut out = vec![0];
    for (a, idx) in pick.iter().enumerate() {
        out = out
            .iter()
            .flat_map(|&o| idx.iter().map(move |&i| o + i * stride[a]))
            .collect();
    }
    out.iter().map(|&o| data[o]).collect()
}

/// [`gather_ref`] on a row-major tensor of `dims`.
fn pick_ref(data: &[f64], dims: &[usize], pick: &[Vec<usize>]) -> Vec<f64> {
    let mut stride = vec![1; dims.len()];
    for i in (0..dims.len() - 1).rev() {
        stride[i] = stride[i + 1] * dims[i + 1];
    }
    gather_ref(data, &stride, pick)
}

fn gpu() -> GpuContext {
    static CTX: OnceLock<GpuContext> = OnceLock::new();
    CTX.get_or_init(|| GpuContext::new().expect("a wgpu adapter (lavapipe on CPU-only machines)"))
        .clone()
}

/// The GPU engine's logits and Grad-CAM maps for `classes` (one per image) at `layer`.
fn gpu_run(
    m: &Model,
    x: &[f64],
    layer: &str,
    reshape: Reshape,
    classes: &[usize],
) -> (Vec<f32>, Vec<Vec<f32>>) {
    let cfg = EngineConfig {
        layers: vec![layer.into()],
        method: Method::GradCam,
        size: m.input_size,
        batch: classes.len(),
        targets: TargetSpec::PerImage(1),
        read_maps: true,
        reshape,
        ..Default::default()
    };
    let mut engine = Engine::new(gpu(), m, cfg).unwrap();
    let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let cl: Vec<Vec<usize>> = classes.iter().map(|&c| vec![c]).collect();
    let r = engine
        .explain_tensor(&xf, classes.len(), Some(&cl))
        .unwrap();
    let logits = r.iter().flat_map(|r| r.logits.clone()).collect();
    let maps = r
        .iter()
        .map(|r| r.targets[0].map.clone().unwrap())
        .collect();
    (logits, maps)
}

/// Worst error of `got` relative to the largest `want`.
fn assert_rel(name: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{name}: lengths");
    let scale = want.iter().fold(1e-6f64, |m, v| m.max(v.abs()));
    for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= tol * scale,
            "{name}[{k}]: {g} vs {w}"
        );
    }
}

// ---- MultiheadAttention as torch exports it --------------------------------------------

const H: usize = 5;
const W: usize = 3;
const L: usize = H * W;
const E: usize = 6;
const HEADS: usize = 2;
const HD: usize = E / HEADS;

fn mha_inits() -> Vec<TensorProto> {
    let s = |name: &str, v: &[i64]| ints(name, v);
    vec![
        s("rows_shape", &[1, 3, L as i64]),
        floats("we", &[3, E as i64], 21),
        floats("ln_w", &[E as i64], 22),
        floats("ln_b", &[E as i64], 23),
        floats("w_in", &[E as i64, 3 * E as i64], 24),
        floats("b_in", &[3 * E as i64], 25),
        s("qkv_shape", &[L as i64, 1, 3, E as i64]),
        s("axes0", &[0]),
        s("axes3", &[3]),
        int_scalar("i0", 0),
        int_scalar("i1", 1),
        int_scalar("i2", 2),
        s("head_shape", &[L as i64, HEADS as i64, HD as i64]),
        float_values("scale", &[], &[1.0 / (HD as f32).sqrt()]),
        s("merged_shape", &[L as i64, E as i64]),
        floats("w_out", &[E as i64, E as i64], 26),
        floats("b_out", &[E as i64], 27),
        s("seq_shape", &[L as i64, 1, E as i64]),
        s("flat_shape", &[1, -1]),
    ]
}

/// Image → tokens `[1, L, E]` → torch's MultiheadAttention export (self-attention in the
/// `[L, N, E]` layout, with a LayerNorm in front) → `[1, L·E]`.
fn mha_model() -> Model {
    let t102 = || vec![attr_ints("perm", &[1, 0, 2])];
    let mut nodes = vec![
        node(
            "/stem/Reshape",
            "Reshape",
            &["x", "rows_shape"],
            &["rows"],
            vec![],
        ),
        node(
            "/stem/Transpose",
            "Transpose",
            &["rows"],
            &["pix"],
            vec![attr_ints("perm", &[0, 2, 1])],
        ),
        node(
            "/stem/MatMul",
            "MatMul",
            &["pix", "we"],
            &["tokens"],
            vec![],
        ),
        node("/Transpose_in", "Transpose", &["tokens"], &["lne"], t102()),
        node(
            "/ln/LayerNormalization",
            "LayerNormalization",
            &["lne", "ln_w", "ln_b"],
            &["normed"],
            vec![attr_int("axis", -1)],
        ),
        node(
            "/in_proj/MatMul",
            "MatMul",
            &["normed", "w_in"],
            &["qkv0"],
            vec![],
        ),
        node("/in_proj/Add", "Add", &["qkv0", "b_in"], &["qkv1"], vec![]),
        node(
            "/Reshape_qkv",
            "Reshape",
            &["qkv1", "qkv_shape"],
            &["qkv2"],
            vec![],
        ),
        node(
            "/Unsqueeze",
            "Unsqueeze",
            &["qkv2", "axes0"],
            &["qkv3"],
            vec![],
        ),
        node(
            "/Transpose_qkv",
            "Transpose",
            &["qkv3"],
            &["qkv4"],
            vec![attr_ints("perm", &[3, 1, 2, 0, 4])],
        ),
        node("/Squeeze", "Squeeze", &["qkv4", "axes3"], &["qkv"], vec![]),
    ];
    for (i, p) in ["q", "k", "v"].iter().enumerate() {
        let (g, r, t) = (format!("{p}_g"), format!("{p}_r"), format!("{p}_h"));
        nodes.extend([
            node(
                &format!("/Gather_{p}"),
                "Gather",
                &["qkv", &format!("i{i}")],
                &[&g],
                vec![attr_int("axis", 0)],
            ),
            node(
                &format!("/Reshape_{p}"),
                "Reshape",
                &[&g, "head_shape"],
                &[&r],
                vec![],
            ),
            node(
                &format!("/Transpose_{p}"),
                "Transpose",
                &[&r],
                &[&t],
                t102(),
            ),
        ]);
    }
    nodes.extend([
        node("/Mul_scale", "Mul", &["q_h", "scale"], &["q_s"], vec![]),
        node(
            "/Transpose_kT",
            "Transpose",
            &["k_h"],
            &["k_t"],
            vec![attr_ints("perm", &[0, 2, 1])],
        ),
        node("/MatMul_qk", "MatMul", &["q_s", "k_t"], &["scores"], vec![]),
        node(
            "/Softmax",
            "Softmax",
            &["scores"],
            &["attn"],
            vec![attr_int("axis", -1)],
        ),
        node("/MatMul_av", "MatMul", &["attn", "v_h"], &["ctx"], vec![]),
        node("/Transpose_ctx", "Transpose", &["ctx"], &["ctx_t"], t102()),
        node(
            "/Reshape_ctx",
            "Reshape",
            &["ctx_t", "merged_shape"],
            &["merged"],
            vec![],
        ),
        node(
            "/out_proj/Gemm",
            "Gemm",
            &["merged", "w_out", "b_out"],
            &["proj"],
            vec![attr_int("transB", 1)],
        ),
        node(
            "/Reshape_seq",
            "Reshape",
            &["proj", "seq_shape"],
            &["seq"],
            vec![],
        ),
        node(
            "/Transpose_out",
            "Transpose",
            &["seq"],
            &["attn_out"],
            t102(),
        ),
        node(
            "/Reshape_out",
            "Reshape",
            &["attn_out", "flat_shape"],
            &["out"],
            vec![],
        ),
    ]);
    let x = input("x", &[None, Some(3), Some(H as i64), Some(W as i64)]);
    load(
        &model(nodes, mha_inits(), x, "out"),
        &OnnxOptions::default(),
    )
    .unwrap()
}

/// One image's tokens `[L, E]`: pixel `t = y·W + x` times `we`.
fn mha_tokens(x: &[f64]) -> Vec<f64> {
    let we = f64s(&floats("we", &[3, E as i64], 21));
    let mut t = vec![0.0; L * E];
    for p in 0..L {
        for e in 0..E {
            t[p * E + e] = (0..3).map(|c| x[c * L + p] * we[c * E + e]).sum();
        }
    }
    t
}

/// Multi-head self-attention of one image's tokens, written out: `[L, E]`.
fn mha_ref(tok: &[f64]) -> Vec<f64> {
    let get = |name: &str, dims: &[i64], seed| f64s(&floats(name, dims, seed));
    let (e, e3) = (E as i64, 3 * E as i64);
    let (ln_w, ln_b) = (get("ln_w", &[e], 22), get("ln_b", &[e], 23));
    let (w_in, b_in) = (get("w_in", &[e, e3], 24), get("b_in", &[e3], 25));
    let (w_out, b_out) = (get("w_out", &[e, e], 26), get("b_out", &[e], 27));
    let eps = 1e-5f32 as f64;
    let scale = (1.0 / (HD as f32).sqrt()) as f64;
    let mut qkv = vec![0.0; L * 3 * E];
    for t in 0..L {
        let row = &tok[t * E..(t + 1) * E];
        let mean = row.iter().sum::<f64>() / E as f64;
        let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / E as f64;
        let normed: Vec<f64> = (0..E)
            .map(|i| (row[i] - mean) / (var + eps).sqrt() * ln_w[i] + ln_b[i])
            .collect();
        for j in 0..3 * E {
            qkv[t * 3 * E + j] =
                b_in[j] + (0..E).map(|i| normed[i] * w_in[i * 3 * E + j]).sum::<f64>();
        }
    }
    let (q, k, v) = (
        |t: usize, c: usize| qkv[t * 3 * E + c],
        |t: usize, c: usize| qkv[t * 3 * E + E + c],
        |t: usize, c: usize| qkv[t * 3 * E + 2 * E + c],
    );
    let mut ctx = vec![0.0; L * E];
    for h in 0..HEADS {
        for i in 0..L {
            let s: Vec<f64> = (0..L)
                .map(|j| {
                    (0..HD)
                        .map(|d| q(i, h * HD + d) * scale * k(j, h * HD + d))
                        .sum()
                })
                .collect();
            let top = s.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = s.iter().map(|v| (v - top).exp()).sum();
            for d in 0..HD {
                ctx[i * E + h * HD + d] = (0..L)
                    .map(|j| (s[j] - top).exp() / z * v(j, h * HD + d))
                    .sum();
            }
        }
    }
    let mut out = vec![0.0; L * E];
    for t in 0..L {
        for m in 0..E {
            out[t * E + m] = b_out[m]
                + (0..E)
                    .map(|i| ctx[t * E + i] * w_out[m * E + i])
                    .sum::<f64>();
        }
    }
    out
}

#[test]
fn torch_multihead_attention_imports_and_explains() {
    let m = mha_model();
    let x = images(2, H, W);
    let each = 3 * L;
    let want: Vec<f64> = (0..2)
        .flat_map(|b| mha_ref(&mha_tokens(&x[b * each..(b + 1) * each])))
        .collect();
    assert_close("mha", &cpu_forward(&m, &x, 2), &want);
    // The heads sit on axis 0 of the attention MatMuls: one IR MatMul each, no per-head copy.
    let matmuls = m
        .graph
        .nodes
        .iter()
        .filter(|n| matches!(n.op, Op::MatMul(_)))
        .count();
    assert_eq!(matmuls, 2);

    // The GPU engine: logits, and Grad-CAM through attention at the tokens (a 5x3 grid),
    // against gradients of the loops above by central differences.
    let classes = [7, 40];
    let (logits, maps) = gpu_run(&m, &x, "tokens", Reshape::Vit(Some([H, W])), &classes);
    assert_rel("mha logits", &logits, &want, 1e-4);
    for (b, &class) in classes.iter().enumerate() {
        let tok = mha_tokens(&x[b * each..(b + 1) * each]);
        let grad: Vec<f64> = (0..L * E)
            .map(|i| {
                let step = 1e-5;
                let (mut up, mut down) = (tok.clone(), tok.clone());
                up[i] += step;
                down[i] -= step;
                (mha_ref(&up)[class] - mha_ref(&down)[class]) / (2.0 * step)
            })
            .collect();
        let alpha: Vec<f64> = (0..E)
            .map(|c| (0..L).map(|t| grad[t * E + c]).sum::<f64>() / L as f64)
            .collect();
        let cam: Vec<f64> = (0..L)
            .map(|t| {
                (0..E)
                    .map(|c| alpha[c] * tok[t * E + c])
                    .sum::<f64>()
                    .max(0.0)
            })
            .collect();
        let (lo, hi) = cam
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        assert!(hi - lo > 1e-3, "image {b}: a flat map tests nothing");
        let norm: Vec<f64> = cam.iter().map(|v| (v - lo) / (1e-7 + (hi - lo))).collect();
        assert_rel(&format!("mha grad-cam {b}"), &maps[b], &norm, 1e-3);
    }
}

// ---- Channels-last grids: rank-6 transposes, strided slices ----------------------------

/// Image `[N, 3, h, w]` → `grid` `[1, h, w, 3]` (channels last) → `nodes` → `out` →
/// `[1, -1]`.
fn grid_model(
    h: usize,
    w: usize,
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
    out: &str,
) -> Vec<u8> {
    let mut all = vec![node(
        "/Transpose_grid",
        "Transpose",
        &["x"],
        &["grid"],
        vec![attr_ints("perm", &[0, 2, 3, 1])],
    )];
    all.extend(nodes);
    all.push(node(
        "/Reshape_out",
        "Reshape",
        &[out, "flat_shape"],
        &["flat"],
        vec![],
    ));
    let mut inits = inits;
    inits.push(ints("flat_shape", &[1, -1]));
    let x = input("x", &[None, Some(3), Some(h as i64), Some(w as i64)]);
    model(all, inits, x, "flat")
}

/// One image's grid `[h, w, 3]`.
fn grid_ref(x: &[f64], h: usize, w: usize) -> Vec<f64> {
    transpose_ref(x, &[3, h, w], &[1, 2, 0])
}

/// `f` of each image's grid, concatenated.
fn per_image(x: &[f64], h: usize, w: usize, f: impl Fn(&[f64]) -> Vec<f64>) -> Vec<f64> {
    let each = 3 * h * w;
    (0..x.len() / each)
        .flat_map(|b| f(&grid_ref(&x[b * each..(b + 1) * each], h, w)))
        .collect()
}

#[test]
fn rank6_window_partitions_transpose_by_any_permutation() {
    // Swin's window partition of a 6x9 grid into 3x3 windows, and other permutations of
    // the same rank-6 view: merged runs of 1, 2, 3 and 4 axes, the batch moved inward.
    let (h, w, ws) = (6, 9, 3);
    let dims6 = [1, h / ws, ws, w / ws, ws, 3];
    let x = images(2, h, w);
    // Axes that stay together merge (the batch, of length 1, drops): up to 3 runs are an
    // IR Transpose (or a free view), more an index map.
    for (perm, copy) in [
        ([0, 1, 3, 2, 4, 5], "gather"),
        ([0, 1, 2, 3, 4, 5], "view"),
        ([1, 2, 0, 3, 4, 5], "view"),
        ([0, 5, 1, 2, 3, 4], "transpose"),
        ([0, 2, 1, 3, 4, 5], "transpose"),
        ([0, 3, 4, 5, 1, 2], "transpose"),
        ([0, 3, 1, 4, 2, 5], "gather"),
        ([5, 4, 3, 2, 1, 0], "gather"),
        ([2, 0, 4, 1, 5, 3], "gather"),
    ] {
        let nodes = vec![
            node(
                "/Reshape_win",
                "Reshape",
                &["grid", "win_shape"],
                &["win"],
                vec![],
            ),
            node(
                "/Transpose_win",
                "Transpose",
                &["win"],
                &["windows"],
                vec![attr_ints("perm", &perm.map(|p| p as i64))],
            ),
        ];
        let dims: Vec<i64> = dims6.iter().map(|&d| d as i64).collect();
        let bytes = grid_model(h, w, nodes, vec![ints("win_shape", &dims)], "windows");
        let m = load(&bytes, &OnnxOptions::default()).unwrap();
        let want = per_image(&x, h, w, |g| transpose_ref(g, &dims6, &perm));
        assert_close(&format!("perm {perm:?}"), &cpu_forward(&m, &x, 2), &want);
        // The image to the grid is one Transpose of its own.
        let count = |f: fn(&Op) -> bool| m.graph.nodes.iter().filter(|n| f(&n.op)).count();
        let kinds = (
            count(|o| matches!(o, Op::Transpose(_))) - 1,
            count(|o| matches!(o, Op::Gather(_))),
        );
        let want = match copy {
            "view" => (0, 0),
            "transpose" => (1, 0),
            _ => (0, 1),
        };
        assert_eq!(kinds, want, "perm {perm:?}: {copy}");
    }

    // The partition to window tokens [nW, ws·ws, C] (axis 0 the windows), and back: the
    // round trip is the grid itself; the GPU agrees and Grad-CAM reads the grid.
    let nodes = vec![
        node(
            "/Reshape_win",
            "Reshape",
            &["grid", "win_shape"],
            &["win"],
            vec![],
        ),
        node(
            "/Transpose_win",
            "Transpose",
            &["win"],
            &["win_t"],
            vec![attr_ints("perm", &[0, 1, 3, 2, 4, 5])],
        ),
        node(
            "/Reshape_tok",
            "Reshape",
            &["win_t", "tok_shape"],
            &["wtok"],
            vec![],
        ),
        node(
            "/Reshape_back",
            "Reshape",
            &["wtok", "win_shape2"],
            &["win2"],
            vec![],
        ),
        node(
            "/Transpose_back",
            "Transpose",
            &["win2"],
            &["win3"],
            vec![attr_ints("perm", &[0, 1, 3, 2, 4, 5])],
        ),
        node(
            "/Reshape_grid",
            "Reshape",
            &["win3", "grid_shape"],
            &["grid2"],
            vec![],
        ),
        node("/Mul_tok", "Mul", &["grid2", "grid"], &["sq"], vec![]),
    ];
    let inits = vec![
        ints("win_shape", &[1, 2, 3, 3, 3, 3]),
        ints("tok_shape", &[-1, 9, 3]),
        ints("win_shape2", &[1, 2, 3, 3, 3, 3]),
        ints("grid_shape", &[1, 6, 9, 3]),
    ];
    let m = load(
        &grid_model(h, w, nodes, inits, "sq"),
        &OnnxOptions::default(),
    )
    .unwrap();
    let want = per_image(&x, h, w, |g| g.iter().map(|v| v * v).collect());
    assert_close("round trip", &cpu_forward(&m, &x, 2), &want);
    let (logits, maps) = gpu_run(&m, &x, "grid", Reshape::Auto, &[5, 100]);
    assert_rel("round trip logits", &logits, &want, 1e-5);
    assert_eq!(maps[0].len(), h * w);
}

#[test]
fn strided_slices_take_every_kth_reverse_and_clamp() {
    let (h, w) = (7, 9);
    let x = images(2, h, w);
    let all = |d: usize| (0..d).collect::<Vec<_>>();
    let slice = |starts: &[i64], ends: &[i64], axes: &[i64], steps: &[i64]| {
        let nodes = vec![node(
            "/Slice",
            "Slice",
            &["grid", "starts", "ends", "axes", "steps"],
            &["s"],
            vec![],
        )];
        let inits = vec![
            ints("starts", starts),
            ints("ends", ends),
            ints("axes", axes),
            ints("steps", steps),
        ];
        load(
            &grid_model(h, w, nodes, inits, "s"),
            &OnnxOptions::default(),
        )
        .unwrap()
    };
    let cases: [(&str, Model, Vec<Vec<usize>>); 5] = [
        // Swin's patch merging x[:, 0::2, 1::2, :].
        (
            "0::2, 1::2",
            slice(&[0, 1], &[i64::MAX, i64::MAX], &[1, 2], &[2, 2]),
            vec![vec![0, 2, 4, 6], vec![1, 3, 5, 7], all(3)],
        ),
        // x[:, :, ::-1] as torch.flip exports it.
        (
            "::-1",
            slice(&[-1], &[i64::MIN], &[2], &[-1]),
            vec![all(h), (0..w).rev().collect(), all(3)],
        ),
        // An end past the axis clamps.
        (
            "1:100:3",
            slice(&[1], &[100], &[1], &[3]),
            vec![vec![1, 4], all(w), all(3)],
        ),
        // A negative axis, a start past the axis and a negative end with a step of -2.
        (
            "9:-100:-2 on axis -3",
            slice(&[9], &[-100], &[-3], &[-2]),
            vec![vec![6, 4, 2, 0], all(w), all(3)],
        ),
        // Channels 2 and 0, every third column.
        (
            "2::-2, 0::3",
            slice(&[2, 0], &[-5, 9], &[3, 2], &[-2, 3]),
            vec![all(h), vec![0, 3, 6], vec![2, 0]],
        ),
    ];
    for (name, m, pick) in &cases {
        let want = per_image(&x, h, w, |g| pick_ref(g, &[h, w, 3], pick));
        assert_close(name, &cpu_forward(m, &x, 2), &want);
    }
    let (logits, _) = gpu_run(&cases[0].1, &x, "grid", Reshape::Auto, &[0, 47]);
    let want = per_image(&x, h, w, |g| pick_ref(g, &[h, w, 3], &cases[0].2));
    assert_rel("patch merging logits", &logits, &want, 1e-6);

    // Axis 0 of a tensor whose batch moved inward ([3, 7, 9, 1]: channels first) slices too.
    let nodes = vec![
        node(
            "/Transpose_c",
            "Transpose",
            &["grid"],
            &["chw"],
            vec![attr_ints("perm", &[3, 1, 2, 0])],
        ),
        node(
            "/Slice",
            "Slice",
            &["chw", "starts", "ends", "axes", "steps"],
            &["s"],
            vec![],
        ),
    ];
    let inits = vec![
        ints("starts", &[2]),
        ints("ends", &[i64::MIN]),
        ints("axes", &[0]),
        ints("steps", &[-2]),
    ];
    let m = load(
        &grid_model(h, w, nodes, inits, "s"),
        &OnnxOptions::default(),
    )
    .unwrap();
    let want: Vec<f64> = (0..2)
        .flat_map(|b| {
            let img = &x[b * 3 * h * w..(b + 1) * 3 * h * w];
            pick_ref(img, &[3, h, w], &[vec![2, 0], all(h), all(w)])
        })
        .collect();
    assert_close("channels 2, 0", &cpu_forward(&m, &x, 2), &want);
}

#[test]
fn split_concat_and_softmax_along_an_inner_axis_0() {
    // [3, 7, 9, 1] (the batch moved to the end): split the channels 1 + 2 along axis 0,
    // concatenate them back in the other order, softmax over axis 0.
    let (h, w) = (7, 9);
    let x = images(2, h, w);
    let nodes = vec![
        node(
            "/Transpose_c",
            "Transpose",
            &["grid"],
            &["chw"],
            vec![attr_ints("perm", &[3, 1, 2, 0])],
        ),
        node(
            "/Split",
            "Split",
            &["chw", "sizes"],
            &["c0", "c12"],
            vec![attr_int("axis", 0)],
        ),
        node(
            "/Concat",
            "Concat",
            &["c12", "c0"],
            &["rolled"],
            vec![attr_int("axis", 0)],
        ),
        node(
            "/Softmax",
            "Softmax",
            &["rolled"],
            &["sm"],
            vec![attr_int("axis", 0)],
        ),
    ];
    let bytes = grid_model(h, w, nodes, vec![ints("sizes", &[1, 2])], "sm");
    let m = load(&bytes, &OnnxOptions::default()).unwrap();
    let plane = h * w;
    let mut want = Vec::new();
    for b in 0..2 {
        let img = &x[b * 3 * plane..(b + 1) * 3 * plane];
        let rolled = [&img[plane..2 * plane], &img[2 * plane..], &img[..plane]];
        let mut out = vec![0.0; 3 * plane];
        for p in 0..plane {
            let z: f64 = rolled.iter().map(|c| c[p].exp()).sum();
            for (c, ch) in rolled.iter().enumerate() {
                out[c * plane + p] = ch[p].exp() / z;
            }
        }
        want.extend(out);
    }
    assert_close("rolled softmax", &cpu_forward(&m, &x, 2), &want);

    // The same with the single channel first: its axis 0 has length 1, as a batch would.
    let nodes = vec![
        node(
            "/Transpose_c",
            "Transpose",
            &["grid"],
            &["chw"],
            vec![attr_ints("perm", &[3, 1, 2, 0])],
        ),
        node(
            "/Split",
            "Split",
            &["chw", "sizes"],
            &["c0", "c12"],
            vec![attr_int("axis", 0)],
        ),
        node(
            "/Concat",
            "Concat",
            &["c0", "c12"],
            &["same"],
            vec![attr_int("axis", 0)],
        ),
    ];
    let bytes = grid_model(h, w, nodes, vec![ints("sizes", &[1, 2])], "same");
    let m = load(&bytes, &OnnxOptions::default()).unwrap();
    assert_close("split and concat", &cpu_forward(&m, &x, 2), &x);
}

#[test]
fn ops_that_need_the_batch_on_axis_0_name_the_node_and_shape() {
    let (h, w) = (7, 9);
    // A Conv on [3, 1, 7, 9] (the image with axes 0 and 1 swapped).
    let nodes = vec![
        node(
            "/Transpose_c",
            "Transpose",
            &["x"],
            &["swapped"],
            vec![attr_ints("perm", &[1, 0, 2, 3])],
        ),
        node("/Conv_bad", "Conv", &["swapped", "cw"], &["c"], vec![]),
    ];
    let bytes = grid_model(h, w, nodes, vec![floats("cw", &[2, 1, 3, 3], 3)], "c");
    let e = err(&bytes, &OnnxOptions::default());
    assert!(
        e.contains("/Conv_bad") && e.contains("[3, 1, 7, 9]") && e.contains("batch on axis 0"),
        "{e}"
    );
    // Softmax and Gather over axis 0 of length 1: the batch.
    let softmax = node(
        "/Softmax_bad",
        "Softmax",
        &["grid"],
        &["s"],
        vec![attr_int("axis", 0)],
    );
    let e = err(
        &grid_model(h, w, vec![softmax], vec![], "s"),
        &OnnxOptions::default(),
    );
    assert!(
        e.contains("/Softmax_bad") && e.contains("batch axis"),
        "{e}"
    );
    let gather = node(
        "/Gather_bad",
        "Gather",
        &["grid", "i0"],
        &["g"],
        vec![attr_int("axis", 0)],
    );
    let bytes = grid_model(h, w, vec![gather], vec![int_scalar("i0", 0)], "g");
    let e = err(&bytes, &OnnxOptions::default());
    assert!(e.contains("/Gather_bad") && e.contains("batch axis"), "{e}");
    // Two activations of different non-batch-leading shapes do not broadcast.
    let nodes = vec![
        node(
            "/Transpose_c",
            "Transpose",
            &["grid"],
            &["chw"],
            vec![attr_ints("perm", &[3, 1, 2, 0])],
        ),
        node(
            "/Transpose_d",
            "Transpose",
            &["grid"],
            &["cwh"],
            vec![attr_ints("perm", &[3, 2, 1, 0])],
        ),
        node("/Add_bad", "Add", &["chw", "cwh"], &["sum"], vec![]),
    ];
    let e = err(
        &grid_model(h, w, nodes, vec![], "sum"),
        &OnnxOptions::default(),
    );
    assert!(
        e.contains("/Add_bad") && e.contains("[3, 7, 9, 1]") && e.contains("[3, 9, 7, 1]"),
        "{e}"
    );
}

// ---- Constant folding ------------------------------------------------------------------

#[test]
fn transpose_scatternd_and_negative_slices_of_constants_fold() {
    let c = |dims: &[i64]| floats("c0", dims, 9);
    let cv = |dims: &[i64]| f64s(&c(dims));
    let folded64 = |nodes, inits, k| -> Vec<f64> {
        folded(nodes, inits, k).iter().map(|&v| v as f64).collect()
    };
    // Transpose with a perm and without (reversed axes).
    let t = folded64(
        vec![node(
            "/T",
            "Transpose",
            &["c0"],
            &["c"],
            vec![attr_ints("perm", &[2, 0, 1])],
        )],
        vec![c(&[2, 3, 5])],
        30,
    );
    assert_close(
        "perm 2,0,1",
        &t,
        &transpose_ref(&cv(&[2, 3, 5]), &[2, 3, 5], &[2, 0, 1]),
    );
    let t = folded64(
        vec![node("/T", "Transpose", &["c0"], &["c"], vec![])],
        vec![c(&[2, 3, 5])],
        30,
    );
    assert_close(
        "no perm",
        &t,
        &transpose_ref(&cv(&[2, 3, 5]), &[2, 3, 5], &[2, 1, 0]),
    );

    // ScatterND: rows 3 and 0 of a [5, 3] replaced.
    let upd = |dims: &[i64]| floats("upd", dims, 4);
    let mut idx = ints("idx", &[3, 0]);
    idx.dims = vec![2, 1];
    let s = folded64(
        vec![node(
            "/S",
            "ScatterND",
            &["c0", "idx", "upd"],
            &["c"],
            vec![],
        )],
        vec![c(&[5, 3]), idx, upd(&[2, 3])],
        15,
    );
    let (d, u) = (cv(&[5, 3]), f64s(&upd(&[2, 3])));
    let mut want = d.clone();
    want[9..12].copy_from_slice(&u[0..3]);
    want[0..3].copy_from_slice(&u[3..6]);
    assert_close("scatter rows", &s, &want);
    // With reduction add, a repeated index adds both updates.
    let mut idx = ints("idx", &[1, 2, 4, 0, 1, 2]);
    idx.dims = vec![3, 2];
    let mut reduce = attr_int("x", 0);
    reduce.name = "reduction".into();
    reduce.type_ = onnx_protobuf::attribute_proto::AttributeType::STRING.into();
    reduce.s = b"add".to_vec();
    let s = folded64(
        vec![node(
            "/S",
            "ScatterND",
            &["c0", "idx", "upd"],
            &["c"],
            vec![reduce],
        )],
        vec![c(&[5, 3]), idx, upd(&[3])],
        15,
    );
    let u = f64s(&upd(&[3]));
    let mut want = d.clone();
    want[5] += u[0] + u[2];
    want[12] += u[1];
    assert_close("scatter add", &s, &want);
    // Index tuples of length 0 address the whole tensor: one update of its shape replaces it.
    let mut idx = ints("idx", &[]);
    idx.dims = vec![1, 0];
    let s = folded64(
        vec![node(
            "/S",
            "ScatterND",
            &["c0", "idx", "upd"],
            &["c"],
            vec![],
        )],
        vec![c(&[5, 3]), idx, upd(&[1, 5, 3])],
        15,
    );
    assert_close("scatter whole", &s, &f64s(&upd(&[1, 5, 3])));

    // Slice with negative steps: c0[::-1, 4:0:-2] and c0[-2::-3] of a [4, 5] and a [7].
    let sl = |dims: &[i64], starts: &[i64], ends: &[i64], axes: &[i64], steps: &[i64], k| {
        folded64(
            vec![node(
                "/Sl",
                "Slice",
                &["c0", "st", "en", "ax", "sp"],
                &["c"],
                vec![],
            )],
            vec![
                c(dims),
                ints("st", starts),
                ints("en", ends),
                ints("ax", axes),
                ints("sp", steps),
            ],
            k,
        )
    };
    let v = cv(&[4, 5]);
    let got = sl(&[4, 5], &[-1, 4], &[i64::MIN, 0], &[0, 1], &[-1, -2], 8);
    let want: Vec<f64> = [3, 2, 1, 0]
        .iter()
        .flat_map(|&r| [4, 2].map(|c| v[r * 5 + c]))
        .collect();
    assert_close("[::-1, 4:0:-2]", &got, &want);
    let v = cv(&[7]);
    let got = sl(&[7], &[-2], &[-100], &[0], &[-3], 2);
    assert_close("[-2::-3]", &got, &[v[5], v[2]]);
    let got = sl(&[7], &[100], &[2], &[0], &[-4], 1);
    assert_close("[100:2:-4]", &got, &[v[6]]);
}

// ---- --reshape -------------------------------------------------------------------------

#[test]
fn reshape_parses_and_folds_token_layers() {
    for (s, want) in [
        ("auto", Reshape::Auto),
        ("none", Reshape::None),
        ("vit", Reshape::Vit(None)),
        ("vit:7x9", Reshape::Vit(Some([7, 9]))),
        ("swin", Reshape::Swin(None)),
        ("swin:4x4", Reshape::Swin(Some([4, 4]))),
    ] {
        assert_eq!(s.parse::<Reshape>().unwrap(), want, "{s}");
    }
    for s in ["vit:0x3", "vit:3", "foo", "swin:4x", "auto:2x2"] {
        let e = s.parse::<Reshape>().unwrap_err().to_string();
        assert!(e.contains(s) && e.contains("vit:HxW"), "{s}: {e}");
    }

    // 50 tokens of 8 channels: a 6x8 grid after 2 prefix tokens, or 7x7 after the class token.
    let c = 8;
    let f = fold_layer("blocks.3", [50, c, 1], None, Reshape::Vit(Some([6, 8])))
        .unwrap()
        .unwrap();
    assert_eq!(f.shape, [c, 6, 8]);
    for (ch, y, x) in [(0, 0, 0), (3, 2, 5), (7, 5, 7)] {
        assert_eq!(
            f.index[(ch * 6 + y) * 8 + x] as usize,
            (2 + y * 8 + x) * c + ch
        );
    }
    let f = fold_layer("blocks.3", [50, c, 1], None, Reshape::Vit(None))
        .unwrap()
        .unwrap();
    assert_eq!(
        (f.shape, f.index[0], f.index[1]),
        ([c, 7, 7], c as u32, 2 * c as u32)
    );
    let auto = fold_layer("t", [50, c, 1], Some(Tokens::Sequence), Reshape::Auto).unwrap();
    assert_eq!(auto.unwrap().shape, [c, 7, 7]);
    assert!(
        fold_layer("t", [50, c, 1], None, Reshape::Auto)
            .unwrap()
            .is_none()
    );
    assert!(
        fold_layer("t", [50, c, 1], None, Reshape::None)
            .unwrap()
            .is_none()
    );
    // Swin: a channels-last grid [5, 7, 3], and its grid checked.
    let g = fold_layer("stage", [5, 7, 3], Some(Tokens::Grid), Reshape::Auto)
        .unwrap()
        .unwrap();
    assert_eq!(g.shape, [3, 5, 7]);
    assert_eq!(g.index[(2 * 5 + 4) * 7 + 6], ((4 * 7 + 6) * 3 + 2) as u32);
    assert_eq!(
        fold_layer("stage", [5, 7, 3], None, Reshape::Swin(None))
            .unwrap()
            .unwrap()
            .index,
        g.index
    );
    let e = fold_layer("stage", [5, 7, 3], None, Reshape::Swin(Some([7, 5]))).unwrap_err();
    assert!(
        e.to_string().contains("`stage`") && e.to_string().contains("not the grid given"),
        "{e}"
    );

    // What does not fold says why, naming the layer and its shape.
    let e = fold_layer("features.7", [7, 5, 3], None, Reshape::Vit(None))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`features.7`") && e.contains("[7, 5, 3]") && e.contains("is not a token layer"),
        "{e}"
    );
    let e = fold_layer("enc", [65, 32, 1], None, Reshape::Vit(Some([5, 5])))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`enc`") && e.contains("65 tokens") && e.contains("25 to 27"),
        "{e}"
    );
    let e = fold_layer("enc", [52, 32, 1], None, Reshape::Vit(None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("52 tokens") && e.contains("vit:HxW"), "{e}");
    let e = fold_layer("enc", [50, 32, 1], None, Reshape::Swin(None))
        .unwrap_err()
        .to_string();
    assert!(e.contains("50 tokens") && e.contains("swin:HxW"), "{e}");

    // grid_fold: (c, y, x) reads token p + y·w + x, channel c.
    let (p, h, w, c) = (1, 3, 5, 7);
    let f = grid_fold(p, [h, w], c);
    assert_eq!(f.shape, [c, h, w]);
    for ch in 0..c {
        for y in 0..h {
            for x in 0..w {
                assert_eq!(
                    f.index[(ch * h + y) * w + x] as usize,
                    (p + y * w + x) * c + ch
                );
            }
        }
    }
}

/// A backwards Slice of an empty constant is empty (it once panicked with no last index);
/// what then reads it is the error.
#[test]
fn an_empty_constant_slices_backwards_to_an_empty_one() {
    let mut c0 = floats("c0", &[0], 1);
    c0.float_data.clear();
    let nodes = vec![
        node(
            "/Sl",
            "Slice",
            &["c0", "st", "en", "ax", "sp"],
            &["c"],
            vec![],
        ),
        node("/Add", "Add", &["x", "c"], &["out"], vec![]),
    ];
    let inits = vec![
        c0,
        ints("st", &[-1]),
        ints("en", &[i64::MIN]),
        ints("ax", &[0]),
        ints("sp", &[-1]),
    ];
    let e = err(
        &model(nodes, inits, image4(), "out"),
        &OnnxOptions::default(),
    );
    assert!(e.contains("/Add") && e.contains("[0]"), "{e}");
}

/// A graph exported at a fixed batch other than 1 folds that batch into its reshape
/// targets, which the importer would read as one image's: refused, naming the input.
#[test]
fn a_fixed_batch_other_than_one_is_refused() {
    let relu = || vec![node("/relu", "Relu", &["x"], &["y"], vec![])];
    for (n, ok) in [(Some(1), true), (None, true), (Some(4), false)] {
        let bytes = model(
            relu(),
            vec![],
            input("x", &[n, Some(3), Some(5), Some(7)]),
            "y",
        );
        match ok {
            true => {
                load(&bytes, &OnnxOptions::default()).unwrap();
            }
            false => {
                let e = err(&bytes, &OnnxOptions::default());
                assert!(
                    e.contains("input `x`") && e.contains("fixed batch of 4"),
                    "{e}"
                );
            }
        }
    }
}
