//! Explanation-quality metric kernels (twin of `shaders/eval.wgsl`): plain loops in f64,
//! or exact integer / f32 logic where the kernel must agree bit for bit (peaks, component
//! boxes, ranks, the random baseline). Maps are `[rows, h, w]` row-major; pixels are RGBA8
//! bytes, 4 per pixel.

use std::collections::VecDeque;

pub use crate::ops::eval::{Component, gaussian_taps, pcg, trapezoid_auc, uniform_value};

/// `map_peak`: per map, (smallest index of the max, max).
pub fn map_peak(maps: &[f64], rows: usize, plane: usize) -> Vec<(usize, f64)> {
    assert_eq!(maps.len(), rows * plane, "maps length");
    maps.chunks(plane)
        .map(|m| {
            m.iter()
                .enumerate()
                .fold((0, m[0]), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
        })
        .collect()
}

/// `box_mass`: per row r and box b of `boxes` (`[rows * k]`, `[x0, y0, x1, y1]`, x1 and
/// y1 exclusive, clamped to the map), the sum of map r over the box.
pub fn box_mass(maps: &[f64], rows: usize, size: [usize; 2], boxes: &[[u32; 4]]) -> Vec<f64> {
    let [h, w] = size;
    assert_eq!(maps.len(), rows * h * w, "maps length");
    assert_eq!(
        boxes.len() % rows.max(1),
        0,
        "the same number of boxes per row"
    );
    let k = boxes.len() / rows.max(1);
    boxes
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let m = &maps[(i / k) * h * w..(i / k + 1) * h * w];
            let [x0, y0, x1, y1] = [b[0] as usize, b[1] as usize, b[2] as usize, b[3] as usize];
            let (x0, x1, y0, y1) = (x0.min(w), x1.min(w), y0.min(h), y1.min(h));
            (y0..y1)
                .flat_map(|y| (x0..x1).map(move |x| y * w + x))
                .map(|s| m[s])
                .sum()
        })
        .collect()
}

/// The on-mask of `largest_component`: `v >= frac * max` with the product rounded to f32,
/// and nothing on when the max is not positive.
pub fn binarize(map: &[f32], frac: f32) -> Vec<bool> {
    let max = map.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let t = frac * max;
    map.iter().map(|&v| max > 0.0 && v >= t).collect()
}

/// `largest_component`: per map, the largest 4-connected component of [`binarize`]'s mask
/// (ties: the one holding the smallest pixel index), by breadth-first flood fill in pixel
/// order.
pub fn largest_component(maps: &[f32], rows: usize, size: [usize; 2], frac: f32) -> Vec<Component> {
    let [h, w] = size;
    assert_eq!(maps.len(), rows * h * w, "maps length");
    maps.chunks(h * w)
        .map(|m| {
            let on = binarize(m, frac);
            let mut seen = vec![false; h * w];
            let mut best = Component::default();
            for start in 0..h * w {
                if !on[start] || seen[start] {
                    continue;
                }
                seen[start] = true;
                let mut queue = VecDeque::from([start]);
                let (mut size, mut bbox) = (0u32, [u32::MAX, u32::MAX, 0, 0]);
                while let Some(s) = queue.pop_front() {
                    let (x, y) = (s % w, s / w);
                    size += 1;
                    bbox = [
                        bbox[0].min(x as u32),
                        bbox[1].min(y as u32),
                        bbox[2].max(x as u32 + 1),
                        bbox[3].max(y as u32 + 1),
                    ];
                    let neighbours = [
                        (x > 0).then(|| s - 1),
                        (x + 1 < w).then(|| s + 1),
                        (y > 0).then(|| s - w),
                        (y + 1 < h).then(|| s + w),
                    ];
                    for q in neighbours.into_iter().flatten() {
                        if on[q] && !seen[q] {
                            seen[q] = true;
                            queue.push_back(q);
                        }
                    }
                }
                // Strictly larger: components are met in order of their smallest index.
                if size > best.size {
                    best = Component { bbox, size };
                }
            }
            best
        })
        .collect()
}

/// `rank_desc`: per map, each pixel's position in a stable sort by value descending.
pub fn rank_desc(maps: &[f32], rows: usize, plane: usize) -> Vec<u32> {
    assert_eq!(maps.len(), rows * plane, "maps length");
    let mut ranks = vec![0u32; rows * plane];
    for (m, out) in maps.chunks(plane).zip(ranks.chunks_mut(plane)) {
        let mut order: Vec<usize> = (0..plane).collect();
        order.sort_by(|&a, &b| m[b].partial_cmp(&m[a]).expect("maps without NaN"));
        for (pos, &s) in order.iter().enumerate() {
            out[s] = pos as u32;
        }
    }
    ranks
}

/// What `compose` keeps (see [`crate::ops::eval::Composite`]).
#[derive(Clone, Copy, Debug)]
pub enum Composite<'a> {
    Explanation {
        maps: &'a [f64],
    },
    Deletion {
        ranks: &'a [u32],
        steps: usize,
    },
    Insertion {
        ranks: &'a [u32],
        blurred: &'a [f64],
        steps: usize,
    },
}

/// `compose`: `[table.len(), 3, h, w]` = (v' - mean) / std, row r from `table[r] = (src,
/// step)` over image `src / per_image`, v = pixel / 255 and v' as [`Composite`] says.
pub fn compose(
    pixels: &[u8],
    size: [usize; 2],
    per_image: usize,
    source: Composite<'_>,
    table: &[[u32; 2]],
    mean: [f64; 3],
    std: [f64; 3],
) -> Vec<f64> {
    let n = size[0] * size[1];
    let mut out = Vec::with_capacity(table.len() * 3 * n);
    for &[src, step] in table {
        let (src, step) = (src as usize, step as usize);
        let img = src / per_image.max(1);
        for c in 0..3 {
            for s in 0..n {
                let v = pixels[(img * n + s) * 4 + c] as f64 / 255.0;
                let v = match source {
                    Composite::Explanation { maps } => v * maps[src * n + s],
                    Composite::Deletion { ranks, steps } => {
                        let cut = step * n / steps;
                        if (ranks[src * n + s] as usize) >= cut {
                            v
                        } else {
                            0.0
                        }
                    }
                    Composite::Insertion {
                        ranks,
                        blurred,
                        steps,
                    } => {
                        let cut = step * n / steps;
                        if (ranks[src * n + s] as usize) < cut {
                            v
                        } else {
                            blurred[(img * 3 + c) * n + s]
                        }
                    }
                };
                out.push((v - mean[c]) / std[c]);
            }
        }
    }
    out
}

/// `blur`: each channel of the pixels / 255 correlated with the 2-D kernel
/// `taps[i] * taps[j]` (odd length, centred) over the image padded with `pad[c]`;
/// `[images, 3, h, w]`. Direct 2-D sums, not separable passes.
pub fn blur(
    pixels: &[u8],
    images: usize,
    size: [usize; 2],
    taps: &[f64],
    pad: [f64; 3],
) -> Vec<f64> {
    let [h, w] = size;
    assert_eq!(pixels.len(), images * h * w * 4, "pixels length");
    assert_eq!(taps.len() % 2, 1, "odd kernel");
    let r = (taps.len() / 2) as i64;
    let mut out = Vec::with_capacity(images * 3 * h * w);
    for img in 0..images {
        for c in 0..3 {
            for y in 0..h as i64 {
                for x in 0..w as i64 {
                    let mut acc = 0.0;
                    for (i, ti) in taps.iter().enumerate() {
                        for (j, tj) in taps.iter().enumerate() {
                            let (yy, xx) = (y + i as i64 - r, x + j as i64 - r);
                            let v = if (0..h as i64).contains(&yy) && (0..w as i64).contains(&xx) {
                                let s = img * h * w + yy as usize * w + xx as usize;
                                pixels[s * 4 + c] as f64 / 255.0
                            } else {
                                pad[c]
                            };
                            acc += ti * tj * v;
                        }
                    }
                    out.push(acc);
                }
            }
        }
    }
    out
}

/// `baseline_map` (Gaussian): `rows` copies of exp(-d² / (2 s²)) over the pixel centres,
/// d from ((w - 1) / 2, (h - 1) / 2), s = sigma * max(h, w), divided by the largest sample.
pub fn center_gaussian(rows: usize, size: [usize; 2], sigma: f64) -> Vec<f64> {
    let [h, w] = size;
    let s = sigma * h.max(w) as f64;
    let (cx, cy) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
    let g: Vec<f64> = (0..h * w)
        .map(|i| {
            let (dx, dy) = ((i % w) as f64 - cx, (i / w) as f64 - cy);
            (-(dx * dx + dy * dy) / (2.0 * s * s)).exp()
        })
        .collect();
    let max = g.iter().copied().fold(0.0, f64::max);
    (0..rows).flat_map(|_| g.iter().map(|v| v / max)).collect()
}

/// `baseline_map` (uniform): [`uniform_value`]`(seed, row, pixel)` for every pixel.
pub fn uniform_map(rows: usize, size: [usize; 2], seed: u32) -> Vec<f32> {
    let n = size[0] * size[1];
    (0..rows * n)
        .map(|i| uniform_value(seed, (i / n) as u32, (i % n) as u32))
        .collect()
}
