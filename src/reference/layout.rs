//! f64 twins of shaders/layout.wgsl, written per op as plain loops over coordinates. Every
//! tensor is rows of one per-image shape `[d0, d1, d2]` (row-major); the row count follows
//! from the length.

type Shape = [usize; 3];

fn numel(s: Shape) -> usize {
    s.iter().product()
}

/// Every coordinate of `s` in row-major order.
fn coords(s: Shape) -> impl Iterator<Item = Shape> {
    (0..s[0]).flat_map(move |a| (0..s[1]).flat_map(move |b| (0..s[2]).map(move |c| [a, b, c])))
}

fn at(s: Shape, c: Shape) -> usize {
    (c[0] * s[1] + c[1]) * s[2] + c[2]
}

/// `y[o] = f(row, o)` for every coordinate `o` of `out` in every row of `x`.
fn map_rows(x: &[f64], shape: Shape, out: Shape, f: impl Fn(&[f64], Shape) -> f64) -> Vec<f64> {
    x.chunks(numel(shape))
        .flat_map(|row| coords(out).map(|o| f(row, o)).collect::<Vec<_>>())
        .collect()
}

/// Output dim i is input dim `perm[i]`.
pub fn transpose(x: &[f64], shape: Shape, perm: [usize; 3]) -> Vec<f64> {
    let out = perm.map(|p| shape[p]);
    map_rows(x, shape, out, |row, o| {
        let mut c = [0; 3];
        for i in 0..3 {
            c[perm[i]] = o[i];
        }
        row[at(shape, c)]
    })
}

/// The gradient of [`transpose`] of an input of `shape`: the inverse permutation.
pub fn transpose_backward(dy: &[f64], shape: Shape, perm: [usize; 3]) -> Vec<f64> {
    let mut inv = [0; 3];
    for i in 0..3 {
        inv[perm[i]] = i;
    }
    transpose(dy, perm.map(|p| shape[p]), inv)
}

/// `x[start..end]` along `axis`.
pub fn slice(x: &[f64], shape: Shape, axis: usize, start: usize, end: usize) -> Vec<f64> {
    let mut out = shape;
    out[axis] = end - start;
    map_rows(x, shape, out, |row, mut o| {
        o[axis] += start;
        row[at(shape, o)]
    })
}

/// The gradient of [`slice`] of an input of `shape`: `dy` in the range, zeros outside.
pub fn slice_backward(dy: &[f64], shape: Shape, axis: usize, start: usize, end: usize) -> Vec<f64> {
    let mut out = shape;
    out[axis] = end - start;
    map_rows(dy, out, shape, |row, mut o| {
        if (start..end).contains(&o[axis]) {
            o[axis] -= start;
            row[at(out, o)]
        } else {
            0.0
        }
    })
}

/// `begin[d]` values of `value` before and `end[d]` after every dim `d`.
pub fn pad(x: &[f64], shape: Shape, begin: Shape, end: Shape, value: f64) -> Vec<f64> {
    let out: Shape = std::array::from_fn(|d| begin[d] + shape[d] + end[d]);
    map_rows(x, shape, out, |row, o| {
        if (0..3).all(|d| (begin[d]..begin[d] + shape[d]).contains(&o[d])) {
            row[at(shape, std::array::from_fn(|d| o[d] - begin[d]))]
        } else {
            value
        }
    })
}

/// The gradient of [`pad`] of an input of `shape`: `dy` cropped.
pub fn pad_backward(dy: &[f64], shape: Shape, begin: Shape, end: Shape) -> Vec<f64> {
    let out: Shape = std::array::from_fn(|d| begin[d] + shape[d] + end[d]);
    map_rows(dy, out, shape, |row, o| {
        row[at(out, std::array::from_fn(|d| o[d] + begin[d]))]
    })
}

/// The shape with dims `start..end` reduced to 1.
pub fn reduced(shape: Shape, start: usize, end: usize) -> Shape {
    std::array::from_fn(|d| {
        if (start..end).contains(&d) {
            1
        } else {
            shape[d]
        }
    })
}

/// The mean over dims `start..end` (keepdims).
pub fn reduce_mean(x: &[f64], shape: Shape, start: usize, end: usize) -> Vec<f64> {
    let out = reduced(shape, start, end);
    let len = (numel(shape) / numel(out)) as f64;
    map_rows(x, shape, out, |row, o| {
        let sum: f64 = coords(shape)
            .filter(|c| (0..3).all(|d| (start..end).contains(&d) || c[d] == o[d]))
            .map(|c| row[at(shape, c)])
            .sum();
        sum / len
    })
}

/// The gradient of [`reduce_mean`] of an input of `shape`: `dy / len` to every element.
pub fn reduce_mean_backward(dy: &[f64], shape: Shape, start: usize, end: usize) -> Vec<f64> {
    let out = reduced(shape, start, end);
    let len = (numel(shape) / numel(out)) as f64;
    map_rows(dy, out, shape, |row, c| {
        row[at(
            out,
            std::array::from_fn(|d| if (start..end).contains(&d) { 0 } else { c[d] }),
        )] / len
    })
}

/// `y[row, i] = x[row, index[i]]`, `x` in rows of `in_numel` elements.
pub fn index_gather(x: &[f64], in_numel: usize, index: &[u32]) -> Vec<f64> {
    x.chunks(in_numel)
        .flat_map(|row| index.iter().map(|&j| row[j as usize]))
        .collect()
}

/// The gradient of [`index_gather`]: `dy[row, i]` added at `index[i]`, zeros elsewhere.
pub fn index_gather_backward(dy: &[f64], in_numel: usize, index: &[u32]) -> Vec<f64> {
    dy.chunks(index.len())
        .flat_map(|row| {
            let mut dx = vec![0.0; in_numel];
            for (&j, &g) in index.iter().zip(row) {
                dx[j as usize] += g;
            }
            dx
        })
        .collect()
}
