//! The explanation-quality metric kernels (`ops::eval`, shaders/eval.wgsl) against their
//! twins in `reference::eval`, on awkward shapes (odd sizes, several rows, ties, all-zero
//! maps). Selections (peaks, component boxes, ranks, the random baseline) must be exact;
//! sums and normalisations are checked against f64 within a few f32 roundings.

mod common;

use common::*;
use gradcam_wgpu::ops::eval::{self, Baseline, Component, Composite};
use gradcam_wgpu::reference::eval as r;

const SHAPES: [[usize; 2]; 2] = [[13, 17], [37, 29]];
const ROWS: usize = 5;

fn garbage(len: usize) -> wgpu::Buffer {
    upload(&vec![f32::NAN; len])
}

fn garbage_u32(len: usize) -> wgpu::Buffer {
    upload_u32(&vec![0xdead_beef; len])
}

fn pack_rgba(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// `ROWS` maps exercising ties: values on a coarse grid (many exact ties), an all-zero map,
/// a map of negatives with -0.0 and +0.0, a constant map and a smooth blob with a flat top.
fn tie_maps(rng: &mut Rng, size: [usize; 2]) -> Vec<f32> {
    let [h, w] = size;
    let n = h * w;
    let mut maps = Vec::with_capacity(ROWS * n);
    maps.extend((0..n).map(|_| rng.below(6) as f32 / 5.0));
    maps.extend(std::iter::repeat_n(0.0, n));
    maps.extend((0..n).map(|_| match rng.below(4) {
        0 => -0.0,
        1 => 0.0,
        _ => -(rng.below(3) as f32) * 0.25,
    }));
    maps.extend(std::iter::repeat_n(0.5, n));
    maps.extend((0..n).map(|i| {
        let (dx, dy) = (
            (i % w) as f32 - w as f32 / 3.0,
            (i / w) as f32 - h as f32 / 2.0,
        );
        (1.0 - (dx * dx + dy * dy) / (h * w) as f32 * 4.0).clamp(0.0, 0.8)
    }));
    maps
}

// ---------------------------------------------------------------------------------------
// Peaks and box masses

#[test]
fn map_peak_first_maximum() {
    let e = env();
    let mut rng = Rng::new(1);
    for size in SHAPES {
        let n = size[0] * size[1];
        let maps = tie_maps(&mut rng, size);
        let want = r::map_peak(&f64s(&maps), ROWS, n);
        let (mb, at, max) = (upload(&maps), garbage_u32(ROWS), garbage(ROWS));
        let d = e.ops.eval.map_peak(&e.ctx, ROWS, size, &mb, &at, &max);
        let got = run_bytes(&[d], &[(&at, ROWS), (&max, ROWS)]);
        let got_at: Vec<u32> = bytemuck::pod_collect_to_vec(&got[0]);
        let got_max: Vec<f32> = bytemuck::pod_collect_to_vec(&got[1]);
        for (row, &(i, v)) in want.iter().enumerate() {
            assert_eq!(got_at[row] as usize, i, "{size:?} row {row}: index of max");
            assert_eq!(got_max[row], v as f32, "{size:?} row {row}: max");
        }
        // The tie rule is exercised: the grid map holds its max more than once.
        let first = &maps[..n];
        assert!(first.iter().filter(|&&v| v == 1.0).count() > 1);
        assert_eq!(got_at[1], 0, "all-zero map: index 0");
    }
}

#[test]
fn box_mass_clamped_and_empty() {
    let e = env();
    let mut rng = Rng::new(2);
    for size in SHAPES {
        let [h, w] = size;
        let (hu, wu) = (h as u32, w as u32);
        let mut maps = tie_maps(&mut rng, size);
        // A signed row so cancellation is covered by the bound.
        for v in &mut maps[..h * w] {
            *v -= 0.5;
        }
        let mut boxes = Vec::new();
        for _ in 0..ROWS {
            let x0 = rng.below(w) as u32;
            let y0 = rng.below(h) as u32;
            boxes.extend([
                [0, 0, wu, hu],                             // the whole map
                [0, 0, 1, 1],                               // the corner pixel
                [wu - 3, hu - 2, wu + 5, hu + 7],           // over the far borders
                [x0, y0, x0, hu],                           // empty (zero width)
                [x0 + 1, y0, x0, y0 + 2],                   // inverted: empty
                [x0, y0, x0 + 1 + rng.below(9) as u32, hu], // touches the bottom
                [wu + 2, 0, wu + 9, hu],                    // entirely outside
            ]);
        }
        let k = boxes.len() / ROWS;
        let want = r::box_mass(&f64s(&maps), ROWS, size, &boxes);
        let abs = r::box_mass(&abs(&f64s(&maps)), ROWS, size, &boxes);
        let flat: Vec<u32> = boxes.iter().flatten().copied().collect();
        let (mb, bb, out) = (upload(&maps), upload_u32(&flat), garbage(want.len()));
        let d = e.ops.eval.box_mass(&e.ctx, ROWS, size, k, &mb, &bb, &out);
        let got = run(&[d], &[(&out, want.len())]);
        check_terms(&format!("box_mass {size:?}"), &got[0], &want, &abs, h * w);
        for (i, b) in boxes.iter().enumerate() {
            if b[0] >= b[2].min(wu) || b[1] >= b[3].min(hu) {
                assert_eq!(got[0][i], 0.0, "empty box {b:?} sums to 0");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Largest connected component

/// Runs the GPU components on `maps` and checks them against the flood fill; returns the
/// GPU result.
fn check_components(
    name: &str,
    maps: &[f32],
    rows: usize,
    size: [usize; 2],
    frac: f32,
) -> Vec<Component> {
    let e = env();
    let want = r::largest_component(maps, rows, size, frac);
    let got = e
        .ops
        .eval
        .largest_component(&e.ctx, rows, size, frac, &upload(maps))
        .expect("components");
    eprintln!("{name}: {} sweeps", got.sweeps);
    assert_eq!(got.components, want, "{name}: components");
    got.components
}

/// A map of `size` with the pixels listed on at 1 and everything else 0.
fn mask(size: [usize; 2], on: impl IntoIterator<Item = (usize, usize)>) -> Vec<f32> {
    let mut m = vec![0.0; size[0] * size[1]];
    for (x, y) in on {
        m[y * size[1] + x] = 1.0;
    }
    m
}

#[test]
fn components_match_flood_fill() {
    let mut rng = Rng::new(3);
    for size in SHAPES {
        let n = size[0] * size[1];
        for frac in [0.15, 0.5] {
            // Random maps with many small components, plus the tie maps (all-zero, all
            // non-positive, constant, a flat-topped blob).
            let mut maps = rng.vec(2 * n, 0.0, 1.0);
            maps.extend(tie_maps(&mut rng, size));
            let comps = check_components(
                &format!("random {size:?} frac {frac}"),
                &maps,
                ROWS + 2,
                size,
                frac,
            );
            assert_eq!(comps[3], Component::default(), "all-zero map: empty");
            assert_eq!(comps[4], Component::default(), "non-positive map: empty");
            assert_eq!(
                comps[5],
                Component {
                    bbox: [0, 0, size[1] as u32, size[0] as u32],
                    size: n as u32
                },
                "constant map: everything"
            );
        }
    }
}

#[test]
fn components_threshold_is_inclusive() {
    // 0.25 * 0.8 rounds to exactly 0.2 in f32: pixels of 0.2 are on and join the row
    // into one 5-pixel component; one ulp less leaves two 2-pixel components, and the tie
    // goes to the one holding pixel 3.
    let size = [3, 5];
    let below = f32::from_bits(0.2f32.to_bits() - 1);
    let map = |link: f32| {
        let mut m = vec![0.0f32; 15];
        (m[3], m[5], m[6], m[7], m[8]) = (0.2, 0.8, 0.2, link, 0.8);
        m
    };
    let maps = [map(0.2), map(below)].concat();
    let c = check_components("inclusive threshold", &maps, 2, size, 0.25);
    assert_eq!(
        c[0],
        Component {
            bbox: [0, 0, 4, 2],
            size: 5
        }
    );
    assert_eq!(
        c[1],
        Component {
            bbox: [3, 0, 4, 2],
            size: 2
        }
    );
}

#[test]
fn components_tie_goes_to_smallest_index() {
    let size = [13, 17];
    // Two 6-pixel components: an L whose box starts further left but whose first pixel
    // (in raster order) comes later than a horizontal bar's.
    let bar = (10..16).map(|x| (x, 2));
    let ell = [(1, 5), (1, 6), (1, 7), (2, 7), (3, 7), (4, 7)];
    let m1 = mask(size, bar.clone().chain(ell));
    // The same with the bar moved below the L: now the L wins.
    let m2 = mask(size, (10..16).map(|x| (x, 9)).chain(ell));
    // A third shape one pixel larger wins outright.
    let m3 = mask(size, bar.chain(ell).chain([(5, 7)]));
    let maps = [m1, m2, m3].concat();
    let c = check_components("equal-size tie", &maps, 3, size, 0.5);
    assert_eq!(
        c[0],
        Component {
            bbox: [10, 2, 16, 3],
            size: 6
        }
    );
    assert_eq!(
        c[1],
        Component {
            bbox: [1, 5, 5, 8],
            size: 6
        }
    );
    assert_eq!(
        c[2],
        Component {
            bbox: [1, 5, 6, 8],
            size: 7
        }
    );
}

#[test]
fn components_diagonal_contacts_do_not_connect() {
    let size = [13, 17];
    // A 7-pixel diagonal staircase touching only at corners, then a 2-pixel bar: with
    // 4-connectivity the bar is the largest component.
    let diag = (0..7).map(|i| (i + 3, i + 2));
    let m1 = mask(size, diag.clone().chain([(12, 11), (13, 11)]));
    // A checkerboard: every pixel alone; the tie goes to the first on pixel (0, 0).
    let m2 = mask(
        size,
        (0..13 * 17)
            .map(|i| (i % 17, i / 17))
            .filter(|(x, y)| (x + y) % 2 == 0),
    );
    // Two blocks touching only at a corner stay apart (3x3 = 9 vs 4x4 = 16).
    let blocks = (0..3).flat_map(|y| (0..3).map(move |x| (x, y)));
    let blocks = blocks.chain((3..7).flat_map(|y| (3..7).map(move |x| (x, y))));
    let m3 = mask(size, blocks);
    let maps = [m1, m2, m3].concat();
    let c = check_components("diagonal contacts", &maps, 3, size, 0.5);
    assert_eq!(
        c[0],
        Component {
            bbox: [12, 11, 14, 12],
            size: 2
        }
    );
    assert_eq!(
        c[1],
        Component {
            bbox: [0, 0, 1, 1],
            size: 1
        }
    );
    assert_eq!(
        c[2],
        Component {
            bbox: [3, 3, 7, 7],
            size: 16
        }
    );
}

/// A boustrophedon snake: every other row on, joined alternately at the right and left
/// ends, so the smallest label has to travel the whole length.
fn snake(size: [usize; 2]) -> Vec<f32> {
    let [h, w] = size;
    let mut on = Vec::new();
    for y in (0..h).step_by(2) {
        on.extend((0..w).map(|x| (x, y)));
        if y + 1 < h {
            on.push((if (y / 2) % 2 == 0 { w - 1 } else { 0 }, y + 1));
        }
    }
    mask(size, on)
}

/// [`snake`] running down the columns instead: raster order no longer helps.
fn column_snake(size: [usize; 2]) -> Vec<f32> {
    let [h, w] = size;
    let t = snake([w, h]);
    (0..h * w).map(|i| t[(i % w) * h + i / w]).collect()
}

/// A clockwise spiral path from the top-left corner inwards with one-pixel gaps between
/// its arms: the walker turns right when the next cell is off the map or the one after it
/// is already on, and stops when it can't move after a turn.
fn spiral(size: [usize; 2]) -> Vec<f32> {
    let [h, w] = [size[0] as i64, size[1] as i64];
    let mut m = vec![0.0f32; (h * w) as usize];
    let inside = |x: i64, y: i64| (0..w).contains(&x) && (0..h).contains(&y);
    let on = |m: &[f32], x: i64, y: i64| inside(x, y) && m[(y * w + x) as usize] > 0.0;
    let dirs = [(1, 0), (0, 1), (-1, 0), (0, -1)];
    let (mut x, mut y, mut d) = (0i64, 0i64, 0usize);
    m[0] = 1.0;
    let mut turned = false;
    loop {
        let (dx, dy) = dirs[d];
        let (nx, ny) = (x + dx, y + dy);
        if inside(nx, ny) && !on(&m, nx, ny) && !on(&m, nx + dx, ny + dy) {
            (x, y, turned) = (nx, ny, false);
            m[(y * w + x) as usize] = 1.0;
        } else if turned {
            break;
        } else {
            d = (d + 1) % 4;
            turned = true;
        }
    }
    m
}

#[test]
fn components_snake_and_spiral() {
    let mut rng = Rng::new(4);
    for size in [[13, 17], [37, 29], [128, 128]] {
        let n = size[0] * size[1];
        // Speckle below the threshold must not join anything.
        let noise: Vec<f32> = spiral(size)
            .iter()
            .map(|&v| v.max(0.4 * rng.unit() as f32))
            .collect();
        let maps = [snake(size), column_snake(size), spiral(size), noise].concat();
        let c = check_components(&format!("snakes and spiral {size:?}"), &maps, 4, size, 0.5);
        for (k, m) in maps.chunks(n).enumerate() {
            let on = m.iter().filter(|&&v| v >= 0.5).count();
            assert_eq!(c[k].size as usize, on, "{size:?} map {k} is one component");
        }
    }
}

#[test]
fn components_random_blobs_128() {
    // Smooth random fields: a realistic Grad-CAM-like workload for the sweep count.
    let mut rng = Rng::new(5);
    let size = [128, 128];
    let coarse = rng.vec(2 * 8 * 8, 0.0, 1.0);
    let coarse64: Vec<f64> = f64s(&coarse);
    let maps = gradcam_wgpu::reference::upsample_bilinear(&coarse64, 2, [8, 8], size);
    let maps: Vec<f32> = maps.iter().map(|&v| v as f32).collect();
    for frac in [0.15, 0.5] {
        check_components(&format!("smooth 128x128 frac {frac}"), &maps, 2, size, frac);
    }
}

// ---------------------------------------------------------------------------------------
// Ranks

#[test]
fn rank_desc_equals_stable_sort() {
    let e = env();
    let mut rng = Rng::new(6);
    for size in [[13, 17], [37, 29], [8, 16], [1, 1], [1, 3], [128, 128]] {
        let n = size[0] * size[1];
        let maps = if n >= 4 {
            tie_maps(&mut rng, size)
        } else {
            rng.vec(ROWS * n, -1.0, 1.0)
        };
        let want = r::rank_desc(&maps, ROWS, n);
        let out = garbage_u32(want.len());
        let d = e
            .ops
            .eval
            .rank_desc(&e.ctx, ROWS, size, &upload(&maps), &out);
        let got = run_u32(&d, &[(&out, want.len())]);
        assert_eq!(got[0], want, "{size:?}: ranks");
        for m in got[0].chunks(n) {
            let mut seen = m.to_vec();
            seen.sort_unstable();
            assert!(
                seen.iter().copied().eq(0..n as u32),
                "{size:?}: a permutation"
            );
        }
        eprintln!("rank_desc {size:?}: exact, {} dispatches", d.len());
    }
}

// ---------------------------------------------------------------------------------------
// Composite inputs, blur and baselines

const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

fn mean64() -> [f64; 3] {
    MEAN.map(|v| v as f64)
}

fn std64() -> [f64; 3] {
    STD.map(|v| v as f64)
}

#[test]
fn compose_explanation_deletion_insertion() {
    let e = env();
    let mut rng = Rng::new(7);
    let (images, per_image, steps) = (2, 3, 7);
    for size in SHAPES {
        let n = size[0] * size[1];
        let maps_rows = images * per_image;
        let px = rng.bytes(images * n * 4);
        let mut maps = tie_maps(&mut rng, size);
        maps.extend(rng.vec((maps_rows - ROWS) * n, 0.0, 1.0));
        let ranks = r::rank_desc(&maps, maps_rows, n);
        let blurred = rng.vec(images * 3 * n, 0.0, 1.0);
        // Every map row at every step 0..=steps (whole curves in one dispatch), in an
        // order that mixes images.
        let mut table: Vec<[u32; 2]> = (0..maps_rows as u32)
            .flat_map(|src| (0..=steps as u32).map(move |k| [src, k]))
            .collect();
        rng.shuffle(&mut table);
        let flat: Vec<u32> = table.iter().flatten().copied().collect();
        let (pb, mb, rb, bb, tb) = (
            upload_u32(&pack_rgba(&px)),
            upload(&maps),
            upload_u32(&ranks),
            upload(&blurred),
            upload_u32(&flat),
        );
        let maps64 = f64s(&maps);
        let blurred64 = f64s(&blurred);
        let cases = [
            (
                "explanation",
                Composite::Explanation { maps: &mb },
                r::Composite::Explanation { maps: &maps64 },
            ),
            (
                "deletion",
                Composite::Deletion { ranks: &rb, steps },
                r::Composite::Deletion {
                    ranks: &ranks,
                    steps,
                },
            ),
            (
                "insertion",
                Composite::Insertion {
                    ranks: &rb,
                    blurred: &bb,
                    steps,
                },
                r::Composite::Insertion {
                    ranks: &ranks,
                    blurred: &blurred64,
                    steps,
                },
            ),
        ];
        for (name, gpu_src, ref_src) in cases {
            let want = r::compose(&px, size, per_image, ref_src, &table, mean64(), std64());
            let out = garbage(want.len());
            let d = e.ops.eval.compose(
                &e.ctx,
                table.len(),
                size,
                per_image,
                gpu_src,
                MEAN,
                STD,
                &pb,
                &tb,
                &out,
            );
            let got = run(&[d], &[(&out, want.len())]);
            check_rel(&format!("compose {name} {size:?}"), &got[0], &want, 1e-6);
        }
        // The curve's ends: deletion step 0 and insertion step S are the plain image.
        let plain = gradcam_wgpu::reference::preprocess(&px, images, size, mean64(), std64());
        for (name, step) in [("deletion", 0), ("insertion", steps)] {
            let src = if name == "deletion" {
                r::Composite::Deletion {
                    ranks: &ranks,
                    steps,
                }
            } else {
                r::Composite::Insertion {
                    ranks: &ranks,
                    blurred: &blurred64,
                    steps,
                }
            };
            let out = r::compose(
                &px,
                size,
                per_image,
                src,
                &[[4, step as u32]],
                mean64(),
                std64(),
            );
            assert_eq!(
                out,
                plain[3 * n..6 * n],
                "{name} step {step}: image 4 / 3 = 1"
            );
        }
    }
}

#[test]
fn gaussian_taps_match_scipy() {
    // scipy.ndimage.gaussian_filter of a centred impulse (RISE's gkern), row klen / 2
    // divided by its sum: the 1-D factor.
    let cases: [(usize, f64, &[f64]); 3] = [
        (
            11,
            5.0,
            &[
                0.08795814577727815,
                0.08889611977709484,
                0.09047419654910865,
                0.09219111781938806,
                0.09348938844291409,
                0.09398206326843248,
                0.09348938844291409,
                0.09219111781938806,
                0.09047419654910865,
                0.08889611977709484,
                0.08795814577727815,
            ],
        ),
        (
            7,
            1.5,
            &[
                0.04359175027030576,
                0.1103693715326694,
                0.2130567496164894,
                0.2659642571610709,
                0.2130567496164894,
                0.1103693715326694,
                0.04359175027030576,
            ],
        ),
        (
            5,
            0.5,
            &[
                0.00026386508273735414,
                0.10645077197359151,
                0.7865707258873422,
                0.10645077197359151,
                0.00026386508273735414,
            ],
        ),
    ];
    for (klen, sigma, want) in cases {
        let got = eval::gaussian_taps(klen, sigma);
        for (g, w) in got.iter().zip(want) {
            assert!(
                (*g as f64 - w).abs() <= 1e-7 * w,
                "gkern({klen}, {sigma}): {got:?} vs scipy {want:?}"
            );
        }
    }
}

#[test]
fn blur_matches_direct_convolution() {
    let e = env();
    let mut rng = Rng::new(8);
    let images = 2;
    for size in SHAPES {
        let n = size[0] * size[1];
        let px = rng.bytes(images * n * 4);
        let pb = upload_u32(&pack_rgba(&px));
        // RISE's (11, 5) with zero padding and with mean padding; a kernel wider than the
        // 13-pixel side; a sharp one.
        for (klen, sigma, pad) in [
            (11, 5.0, [0.0; 3]),
            (11, 5.0, MEAN),
            (27, 6.0, [0.25, 0.5, 1.0]),
            (5, 0.5, [0.0; 3]),
        ] {
            let taps = eval::gaussian_taps(klen, sigma);
            let want = r::blur(&px, images, size, &f64s(&taps), pad.map(|v| v as f64));
            let out = garbage(want.len());
            let d = e.ops.eval.blur(&e.ctx, images, size, &taps, pad, &pb, &out);
            let got = run(&d, &[(&out, want.len())]);
            check_rel(
                &format!("blur {size:?} klen {klen} sigma {sigma} pad {pad:?}"),
                &got[0],
                &want,
                1e-5,
            );
        }
    }
}

#[test]
fn baseline_center_gaussian() {
    let e = env();
    for size in [[13, 17], [37, 29], [8, 6], [1, 1]] {
        for sigma in [0.1f32, 0.25] {
            let want = r::center_gaussian(ROWS, size, sigma as f64);
            let out = garbage(want.len());
            let d = e.ops.eval.baseline_map(
                &e.ctx,
                ROWS,
                size,
                Baseline::CenterGaussian { sigma },
                &out,
            );
            let got = run(&[d], &[(&out, want.len())]);
            check_rel(
                &format!("centre gaussian {size:?} sigma {sigma}"),
                &got[0],
                &want,
                1e-5,
            );
            let max = got[0].iter().copied().fold(0.0f32, f32::max);
            assert!((max - 1.0).abs() <= 1e-6, "{size:?}: max {max}");
        }
    }
}

#[test]
fn baseline_uniform_bit_exact() {
    let e = env();
    let size = [37, 29];
    let n = size[0] * size[1];
    let mut maps = Vec::new();
    for seed in [0u32, 1, 0xdead_beef] {
        let want = r::uniform_map(ROWS, size, seed);
        let out = garbage(want.len());
        let d = e
            .ops
            .eval
            .baseline_map(&e.ctx, ROWS, size, Baseline::Uniform { seed }, &out);
        let got = run(&[d], &[(&out, want.len())]);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&got[0]),
            bits(&want),
            "seed {seed}: bit-identical to the twin"
        );
        let mean = want.iter().map(|&v| v as f64).sum::<f64>() / want.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "seed {seed}: mean {mean}");
        assert!(want.iter().all(|v| (0.0..1.0).contains(v)));
        assert_ne!(want[..n], want[n..2 * n], "rows differ");
        maps.push(want);
    }
    assert_ne!(maps[0], maps[1], "seeds differ");
}

#[test]
fn float_kernels_repeat_bit_identically() {
    // Sums run in a fixed order per invocation (no float atomics), so reruns agree bit for
    // bit.
    let e = env();
    let mut rng = Rng::new(9);
    let size = [37, 29];
    let n = size[0] * size[1];
    let maps = upload(&rng.vec(ROWS * n, 0.0, 1.0));
    let boxes: Vec<u32> = (0..ROWS)
        .flat_map(|_| [0, 0, 29, 37, 3, 4, 20, 30])
        .collect();
    let boxes = upload_u32(&boxes);
    let pixels = upload_u32(&pack_rgba(&rng.bytes(2 * n * 4)));
    let table = upload_u32(&[0, 0, 3, 0, 4, 0]);
    let taps = eval::gaussian_taps(11, 5.0);
    let once = || {
        let (mass, blurred, composed) = (garbage(2 * ROWS), garbage(6 * n), garbage(9 * n));
        let mut d = vec![
            e.ops
                .eval
                .box_mass(&e.ctx, ROWS, size, 2, &maps, &boxes, &mass),
        ];
        d.extend(
            e.ops
                .eval
                .blur(&e.ctx, 2, size, &taps, MEAN, &pixels, &blurred),
        );
        d.push(e.ops.eval.compose(
            &e.ctx,
            3,
            size,
            3,
            Composite::Explanation { maps: &maps },
            MEAN,
            STD,
            &pixels,
            &table,
            &composed,
        ));
        run_bytes(
            &d,
            &[(&mass, 2 * ROWS), (&blurred, 6 * n), (&composed, 9 * n)],
        )
    };
    assert_eq!(once(), once());
}

#[test]
fn trapezoid_auc_rise_formula() {
    assert_eq!(eval::trapezoid_auc(&[1.0, 1.0, 1.0]), 1.0);
    assert_eq!(eval::trapezoid_auc(&[0.0, 1.0]), 0.5);
    assert_eq!(eval::trapezoid_auc(&[1.0, 0.0, 0.0, 0.0, 1.0]), 0.25);
    assert_eq!(eval::trapezoid_auc(&[0.3]), 0.0);
}
