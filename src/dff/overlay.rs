//! pytorch-grad-cam's `show_factorization_on_image` without the legend: each pixel takes the
//! colour of its strongest concept (matplotlib's gist_rainbow at i / K), its HSV value set to
//! that concept's map (OpenCV's 8-bit HSV conversions), blended with the image.

/// matplotlib's `gist_rainbow` segment data: (x, r, g, b).
const GIST_RAINBOW: [(f64, [f64; 3]); 8] = [
    (0.000, [1.00, 0.00, 0.16]),
    (0.030, [1.00, 0.00, 0.00]),
    (0.215, [1.00, 1.00, 0.00]),
    (0.400, [0.00, 1.00, 0.00]),
    (0.586, [0.00, 1.00, 1.00]),
    (0.770, [0.00, 0.00, 1.00]),
    (0.954, [1.00, 0.00, 1.00]),
    (1.000, [1.00, 0.00, 0.75]),
];

/// `cmap(v)` of matplotlib's 256-entry gist_rainbow table, RGB in [0, 1].
pub fn gist_rainbow(v: f64) -> [f64; 3] {
    let i = ((v * 256.0) as i64).clamp(0, 255);
    let x = i as f64 / 255.0;
    let seg = GIST_RAINBOW
        .iter()
        .position(|&(sx, _)| sx >= x)
        .unwrap_or(GIST_RAINBOW.len() - 1);
    if seg == 0 {
        return GIST_RAINBOW[0].1;
    }
    let (x0, c0) = GIST_RAINBOW[seg - 1];
    let (x1, c1) = GIST_RAINBOW[seg];
    let d = (x - x0) / (x1 - x0);
    std::array::from_fn(|ch| (d * (c1[ch] - c0[ch]) + c0[ch]).clamp(0.0, 1.0))
}

/// The K concept colours, `np.uint8(colour * 255)`.
pub fn colors(k: usize) -> Vec<[u8; 3]> {
    (0..k)
        .map(|i| gist_rainbow(i as f64 / k as f64).map(|c| (c * 255.0) as u8))
        .collect()
}

/// OpenCV's `COLOR_RGB2HSV` for 8 bits (H in 0..180, fixed-point tables).
fn rgb_to_hsv([r, g, b]: [u8; 3]) -> [u8; 3] {
    const SHIFT: i32 = 12;
    let round = |v: f64| v.round_ties_even() as i32;
    let (r, g, b) = (r as i32, g as i32, b as i32);
    let v = r.max(g).max(b);
    let diff = v - r.min(g).min(b);
    let sdiv = if v == 0 {
        0
    } else {
        round((255 << SHIFT) as f64 / v as f64)
    };
    let hdiv = if diff == 0 {
        0
    } else {
        round((180 << SHIFT) as f64 / (6.0 * diff as f64))
    };
    let s = (diff * sdiv + (1 << (SHIFT - 1))) >> SHIFT;
    let h = if v == r {
        g - b
    } else if v == g {
        b - r + 2 * diff
    } else {
        r - g + 4 * diff
    };
    let mut h = (h * hdiv + (1 << (SHIFT - 1))) >> SHIFT;
    if h < 0 {
        h += 180;
    }
    [h as u8, s as u8, v as u8]
}

/// OpenCV's `COLOR_HSV2RGB` for 8 bits through f32, as its SIMD path does it: truncated (the
/// scalar path, for a row's last few pixels only, rounds instead).
fn hsv_to_rgb([h, s, v]: [u8; 3]) -> [u8; 3] {
    let (s, v) = (s as f32 * (1.0 / 255.0), v as f32 * (1.0 / 255.0));
    let rgb = if s == 0.0 {
        [v; 3]
    } else {
        let mut h = h as f32 * (6.0 / 180.0);
        while h >= 6.0 {
            h -= 6.0;
        }
        let sector = h.floor() as usize;
        let f = h - sector as f32;
        let tab = [
            v,
            v * (1.0 - s),
            v * (1.0 - s * f),
            v * (1.0 - s * (1.0 - f)),
        ];
        // OpenCV's (b, g, r) table, reversed to (r, g, b).
        const SECTOR: [[usize; 3]; 6] = [
            [1, 3, 0],
            [1, 0, 2],
            [3, 0, 1],
            [0, 2, 1],
            [0, 1, 3],
            [2, 1, 0],
        ];
        let [bi, gi, ri] = SECTOR[sector.min(5)];
        [tab[ri], tab[gi], tab[bi]]
    };
    rgb.map(|c| (c * 255.0) as u8)
}

/// The overlay of one image: `pixels` RGB8 `[H, W, 3]`, `maps` `[K, H, W]` in [0, 1];
/// `image_weight` of the image plus the rest of the concept colours, truncated to u8.
pub fn show_factorization(pixels: &[u8], maps: &[f32], k: usize, image_weight: f64) -> Vec<u8> {
    let plane = pixels.len() / 3;
    let hsv: Vec<[u8; 3]> = colors(k).into_iter().map(rgb_to_hsv).collect();
    let mut out = Vec::with_capacity(plane * 3);
    for p in 0..plane {
        // The first concept of largest value (numpy's argmax).
        let mut best = 0;
        for t in 1..k {
            if maps[t * plane + p] > maps[best * plane + p] {
                best = t;
            }
        }
        let [h, s, _] = hsv[best];
        let value = (255.0f32 * maps[best * plane + p]) as u8;
        let mask = hsv_to_rgb([h, s, value]);
        for ch in 0..3 {
            let img = pixels[p * 3 + ch] as f64 / 255.0;
            let m = (mask[ch] as f32 / 255.0) as f64;
            out.push(((img * image_weight + m * (1.0 - image_weight)) * 255.0) as u8);
        }
    }
    out
}
