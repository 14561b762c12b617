//! Every op in the registry, on its samples (awkward shapes): the f64 reference backward
//! equals finite differences of the f64 reference forward, and the lowered op's GPU forward
//! and backward (two gradient rows per image) equal the references. A new op is covered by
//! listing it in the registry with samples.

mod common;

use common::*;
use gradcam_wgpu::graph::op::{Backward, Forward, Lower, Lowered, Reference};
use gradcam_wgpu::graph::{Op, Shape};
use gradcam_wgpu::model::{Tensor, Weights};

const IMAGES: usize = 3;

fn numel(s: Shape) -> usize {
    s.iter().product()
}

/// The variant's name, e.g. `Conv2d`.
fn kind(op: &Op) -> String {
    let d = format!("{op:?}");
    d[..d.find('(').unwrap_or(d.len())].to_string()
}

/// `n` values uniform in [lo, hi), those within 0.1 of 0 moved 0.1 further out (sign
/// kept): next to a divisor near 0 (Binary and BinaryConst div) central differences measure
/// their own truncation error (h^2 x / y^4), not the gradient.
fn draw(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> Vec<f32> {
    rng.vec(n, lo, hi)
        .into_iter()
        .map(|v| {
            if v.abs() < 0.1 {
                v + 0.1f32.copysign(v)
            } else {
                v
            }
        })
        .collect()
}

/// Random weights for every tensor the op reads (variances positive).
fn weights_for(op: &Op, rng: &mut Rng) -> Weights {
    let mut w = Weights::default();
    for (name, shape) in op.node().tensors() {
        let (lo, hi) = if name.ends_with("running_var") {
            (0.3, 2.0)
        } else {
            (-1.0, 1.0)
        };
        let data = draw(rng, shape.iter().product(), lo, hi);
        w.tensors.insert(name, Tensor { shape, data });
    }
    w
}

/// f32-rounded inputs of `n` images per input shape, values in [-4, 7] (none within 0.1 of
/// 0: see [`draw`]): past the kinks of ReLU6 (0, 6) and Hardswish (-3, 3).
fn inputs_for(shapes: &[Shape], n: usize, rng: &mut Rng) -> Vec<Vec<f32>> {
    shapes
        .iter()
        .map(|&s| draw(rng, n * numel(s), -4.0, 7.0))
        .collect()
}

struct Case {
    op: Op,
    in_shapes: Vec<Shape>,
    shape: Shape,
    weights: Weights,
}

fn cases() -> Vec<Case> {
    let mut rng = Rng::new(15);
    Op::samples()
        .into_iter()
        .map(|(op, in_shapes)| {
            let shape = op
                .node()
                .shape(&in_shapes)
                .expect("a sample's shapes are valid");
            let weights = weights_for(&op, &mut rng);
            Case {
                op,
                in_shapes,
                shape,
                weights,
            }
        })
        .collect()
}

impl Case {
    fn name(&self) -> String {
        format!("{} {:?}", kind(&self.op), self.in_shapes)
    }

    fn forward(&self, inputs: &[Vec<f64>], n: usize) -> Vec<f64> {
        let refs: Vec<&[f64]> = inputs.iter().map(|v| v.as_slice()).collect();
        self.op
            .node()
            .reference(&Reference {
                weights: &self.weights,
                n,
                rep: 1,
                inputs: &refs,
                in_shapes: &self.in_shapes,
                output: &[],
                shape: self.shape,
            })
            .unwrap()
    }

    fn backward(
        &self,
        inputs: &[Vec<f64>],
        n: usize,
        rep: usize,
        k: usize,
        dy: &[f64],
    ) -> Vec<f64> {
        let refs: Vec<&[f64]> = inputs.iter().map(|v| v.as_slice()).collect();
        let output = self.forward(inputs, n);
        self.op
            .node()
            .reference_backward(
                &Reference {
                    weights: &self.weights,
                    n,
                    rep,
                    inputs: &refs,
                    in_shapes: &self.in_shapes,
                    output: &output,
                    shape: self.shape,
                },
                k,
                dy,
            )
            .unwrap()
    }
}

#[test]
fn every_op_has_samples_and_they_are_awkward() {
    let cases = cases();
    for name in Op::NAMES.iter().filter(|&&n| n != "Input") {
        assert!(
            cases.iter().any(|c| kind(&c.op) == *name),
            "{name} has no samples: list some in its Samples impl"
        );
    }
    // At least one sample per op has a side that is not a multiple of 4.
    for c in &cases {
        assert!(c.op.node().check().is_ok(), "{}: invalid sample", c.name());
    }
    assert!(
        cases
            .iter()
            .flat_map(|c| c.in_shapes.iter())
            .any(|s| s.iter().any(|d| d % 4 != 0))
    );
}

/// Central differences of `sum(dy * forward(x))` against the reference backward, per input.
#[test]
fn reference_backward_matches_finite_differences() {
    let mut rng = Rng::new(24);
    let h = 1e-5;
    // Detach is a stop-gradient: its backward is zero by design, not the forward's derivative.
    for c in cases().into_iter().filter(|c| kind(&c.op) != "Detach") {
        let n = 2;
        let x: Vec<Vec<f64>> = inputs_for(&c.in_shapes, n, &mut rng)
            .iter()
            .map(|v| f64s(v))
            .collect();
        let dy = rng.vec64(n * numel(c.shape));
        let loss = |x: &[Vec<f64>]| dot(&c.forward(x, n), &dy);
        for k in 0..c.in_shapes.len() {
            let analytic = c.backward(&x, n, 1, k, &dy);
            assert_eq!(analytic.len(), x[k].len(), "{}: gradient length", c.name());
            let mut worst: f64 = 0.0;
            for i in 0..x[k].len() {
                let mut xp = x.clone();
                xp[k][i] += h;
                let mut xm = x.clone();
                xm[k][i] -= h;
                let fd = (loss(&xp) - loss(&xm)) / (2.0 * h);
                worst = worst.max((fd - analytic[i]).abs() / (1.0 + fd.abs()));
            }
            assert!(
                worst < 1e-6,
                "{} input {k}: reference backward differs from finite differences by {worst:.2e}",
                c.name()
            );
        }
    }
}

/// The lowered op on the device against the f64 reference, forward then backward.
#[test]
fn lowered_ops_match_the_reference_on_the_device() {
    let env = env();
    let ctx = &env.ctx;
    let mut rng = Rng::new(42);
    let rep = 2;
    for c in cases() {
        let name = c.name();
        let lowered: Box<dyn Lowered> =
            c.op.node()
                .lower(&Lower {
                    ctx,
                    weights: &c.weights,
                    name: &name,
                    inputs: &c.in_shapes,
                    shape: c.shape,
                    how: Default::default(),
                    batch_norm: None,
                    tuned: None,
                })
                .unwrap();
        let x32 = inputs_for(&c.in_shapes, IMAGES, &mut rng);
        let x: Vec<Vec<f64>> = x32.iter().map(|v| f64s(v)).collect();
        let bufs: Vec<wgpu::Buffer> = x32.iter().map(|v| upload(v)).collect();
        let inputs: Vec<(&wgpu::Buffer, Shape)> = bufs
            .iter()
            .zip(&c.in_shapes)
            .map(|(b, &s)| (b, s))
            .collect();
        let out_len = IMAGES * numel(c.shape);
        let output = if lowered.aliases_input() {
            upload(&x32[0])
        } else {
            zeros(out_len)
        };
        let words = lowered.saved_words(c.shape);
        let saved = (words > 0).then(|| zeros(IMAGES * words));
        let f = lowered.forward(&Forward {
            ctx,
            ops: &env.ops,
            n: IMAGES,
            inputs: &inputs,
            output: &output,
            shape: c.shape,
            relu: false,
            relu6: false,
            saved: saved.as_ref(),
            twin_in: None,
            twin_out: None,
        });
        let y = &run(&f, &[(&output, out_len)])[0];
        check_rel(&format!("{name} forward"), y, &c.forward(&x, IMAGES), 1e-5);

        let dy32 = rng.vec(IMAGES * rep * out_len / IMAGES, -1.0, 1.0);
        let dy = upload(&dy32);
        for k in 0..c.in_shapes.len() {
            let dx_len = IMAGES * rep * numel(c.in_shapes[k]);
            let dx = zeros(dx_len);
            let b = lowered.backward(&Backward {
                ctx,
                ops: &env.ops,
                rows: IMAGES * rep,
                rep,
                guided: false,
                k,
                dy: &dy,
                dx: &dx,
                accumulate: false,
                inputs: &inputs,
                output: &output,
                shape: c.shape,
                saved: saved.as_ref(),
            });
            let got = &run(&b, &[(&dx, dx_len)])[0];
            let want = c.backward(&x, IMAGES, rep, k, &f64s(&dy32));
            check_rel(&format!("{name} backward {k}"), got, &want, 1e-5);
        }
    }
}
