//! First-principal-component projection (pytorch-grad-cam's get_2d_projection) by a dense
//! Jacobi eigendecomposition, the reference for shaders/eigen.wgsl's power iteration.

/// For each row of `x` `[rows, C, plane]`: M = x^T centred per channel, out = M v1 with v1
/// the top right singular vector, signed so the entry of largest magnitude is positive.
pub fn projection(x: &[f64], rows: usize, channels: usize, plane: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(rows * plane);
    for r in 0..rows {
        let m = centred(
            &x[r * channels * plane..(r + 1) * channels * plane],
            channels,
            plane,
        );
        // Gram of the smaller side; its top eigenvector gives the projection.
        let p: Vec<f64> = if plane <= channels {
            let k = gram(&m, plane, channels, true);
            let (lambda, u) = top_eigen(&k, plane);
            u.iter().map(|v| v * lambda.max(0.0).sqrt()).collect()
        } else {
            let k = gram(&m, plane, channels, false);
            let (_, v) = top_eigen(&k, channels);
            (0..plane)
                .map(|s| (0..channels).map(|c| m[s * channels + c] * v[c]).sum())
                .collect()
        };
        out.extend(signed(p));
    }
    out
}

/// KPCA-CAM (pytorch-grad-cam's get_2d_projection_kernel with sklearn's
/// `KernelPCA(n_components=1, kernel="sigmoid", gamma, coef0=1)`): for each row of `x`
/// `[rows, C, plane]`, M = x^T centred per channel, K = tanh(gamma M M^T + 1) over positions,
/// double-centred (KernelCenterer); out = u sqrt(max(lambda, 0)) for the largest eigenvalue
/// lambda and its unit eigenvector u, signed so the entry of largest magnitude is positive
/// (sklearn's svd_flip).
pub fn kernel_projection(
    x: &[f64],
    rows: usize,
    channels: usize,
    plane: usize,
    gamma: f64,
) -> Vec<f64> {
    let mut out = Vec::with_capacity(rows * plane);
    for r in 0..rows {
        let m = centred(
            &x[r * channels * plane..(r + 1) * channels * plane],
            channels,
            plane,
        );
        let mut k = gram(&m, plane, channels, true);
        for v in &mut k {
            *v = (gamma * *v + 1.0).tanh();
        }
        let mean: Vec<f64> = k
            .chunks(plane)
            .map(|r| r.iter().sum::<f64>() / plane as f64)
            .collect();
        let all = mean.iter().sum::<f64>() / plane as f64;
        for a in 0..plane {
            for b in 0..plane {
                k[a * plane + b] += all - mean[a] - mean[b];
            }
        }
        let (lambda, u) = top_eigen(&k, plane);
        out.extend(signed(
            u.iter().map(|v| v * lambda.max(0.0).sqrt()).collect(),
        ));
    }
    out
}

/// `[plane, C]` row-major: x^T with each channel's mean over the plane subtracted.
fn centred(xr: &[f64], channels: usize, plane: usize) -> Vec<f64> {
    let mut m = vec![0.0; plane * channels];
    for c in 0..channels {
        let mean = xr[c * plane..(c + 1) * plane].iter().sum::<f64>() / plane as f64;
        for s in 0..plane {
            m[s * channels + c] = xr[c * plane + s] - mean;
        }
    }
    m
}

/// `p` times the sign of its first entry of largest magnitude.
fn signed(p: Vec<f64>) -> Vec<f64> {
    let mut best = 0;
    for (i, v) in p.iter().enumerate() {
        if v.abs() > p[best].abs() {
            best = i;
        }
    }
    let sign = if p[best] < 0.0 { -1.0 } else { 1.0 };
    p.into_iter().map(|v| v * sign).collect()
}

/// M M^T (rows of m) when `outer`, else M^T M; m is `[n, d]` row-major.
fn gram(m: &[f64], n: usize, d: usize, outer: bool) -> Vec<f64> {
    let k = if outer { n } else { d };
    let mut g = vec![0.0; k * k];
    for i in 0..k {
        for j in 0..=i {
            let v: f64 = if outer {
                (0..d).map(|c| m[i * d + c] * m[j * d + c]).sum()
            } else {
                (0..n).map(|s| m[s * d + i] * m[s * d + j]).sum()
            };
            g[i * k + j] = v;
            g[j * k + i] = v;
        }
    }
    g
}

/// Largest eigenvalue and its unit eigenvector of a symmetric matrix (cyclic Jacobi).
pub fn top_eigen(a: &[f64], n: usize) -> (f64, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        let scale: f64 = (0..n)
            .map(|i| a[i * n + i] * a[i * n + i])
            .sum::<f64>()
            .max(1e-300);
        if off <= 1e-30 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let akp = a[k * n + p];
                    let akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let apk = a[p * n + k];
                    let aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let vkp = v[k * n + p];
                    let vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let top = (0..n)
        .max_by(|&i, &j| a[i * n + i].total_cmp(&a[j * n + j]))
        .unwrap_or(0);
    ((a[top * n + top]), (0..n).map(|k| v[k * n + top]).collect())
}
