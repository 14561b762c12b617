"""Procedural "shapes" benchmark: cluttered 128x128 RGB images with ground-truth boxes.

Every image shows one object, or two objects of different classes, from ten silhouette
classes (CLASSES) on a cluttered background with distractors.  The generator is fully
deterministic: image `index` of dataset `seed` depends only on (seed, index, number of
objects), through a numpy Generator seeded with `np.random.default_rng([seed, index])`,
so any single image can be regenerated on its own with `generate(seed, index, n_objects)`.

Drawing, in order (all random choices come from that one Generator):
  1. Background: one of smooth value noise (a coarse 3x3..6x6 colour grid, bicubic
     upsampled), a linear or radial gradient, soft sinusoidal stripes (period 20-50 px)
     or large soft blobs; then, half the time, a few long straight lines.  Backgrounds are
     deliberately low-frequency so the PNGs stay small.
  2. Distractors under the objects (2-5): random open polylines, small lumpy blobs (an
     ellipse with a wobbly, corner-free outline, at most 14 px across, far smaller than
     any object and never a class silhouette) and thin (1-2 px) random-walk scribbles.
  3. The objects.  Each class is a fixed polygon set in a unit frame (circumradius 1),
     scaled to a diameter of 22-60 px (in two-object images the upper bound is itself
     drawn from 40-60 px, so that pairs fit), rotated by a uniform angle and placed so its
     pixels are at least 1 px inside the image.  It is rasterised 4x supersampled and
     area-averaged, so edges are anti-aliased.  Fill texture: solid, stripes, checker,
     dots or gradient, in the object's own rotated frame, in a colour that contrasts with
     the background underneath; a third of the objects get a thin (1-2 px) inner outline.
     In two-object images the two boxes have IoU <= 0.1.
  4. Distractors over the objects (0-2 thin, 1 px lines): each is kept only if it covers
     at most 8% of every object's pixels, so it never hides an object.

Ground truth: an object's box is the tight box [x0, y0, x1, y1] (pixels, x1/y1 exclusive)
of its drawn pixels, i.e. every pixel with non-zero coverage by the object, outline
included.  Boxes use the whole object even where a later object or a distractor paints
over part of it.

Datasets: `--count N --two-object-fraction F` makes the first N - round(N*F) images
single-object and the remaining round(N*F) two-object.

CLI:
  python tools/shapes.py --out DIR --count N --seed S [--two-object-fraction F]
      writes DIR/images/00000.png ... and DIR/boxes.json:
      {"version": 1, "generator": "tools/shapes.py", "seed": S, "image_size": [128, 128],
       "classes": [...], "images": [{"file": "images/00000.png",
                                     "objects": [{"class": 3, "box": [x0, y0, x1, y1]}]}]}
  python tools/shapes.py --showcase DIR
      writes the curated README images (SHOWCASE) and DIR/boxes.json in the same schema.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import os

import cv2
import numpy as np
from PIL import Image

IMAGE_SIZE = 128
SUPERSAMPLE = 4
CLASSES = ("circle", "square", "triangle", "star", "cross",
           "ring", "hexagon", "crescent", "heart", "arrow")
SIZE_RANGE = (22.0, 60.0)     # object diameter (circumscribed circle) in pixels
TEXTURES = ("solid", "stripes", "checker", "dots", "gradient")
MAX_PAIR_IOU = 0.1
MAX_OVERLAY_COVER = 0.08      # largest share of an object a top distractor may cover
SHOWCASE_SEED = 7
# (file stem, classes, index): indices picked by eye among seed-7 images with these classes.
SHOWCASE = (
    ("star-and-heart", ("star", "heart"), 8),
    ("arrow-and-ring", ("arrow", "ring"), 6),
    ("triangle-and-crescent", ("triangle", "crescent"), 5),
    ("circle-and-square", ("circle", "square"), 7),
    ("cross", ("cross",), 0),
    ("hexagon", ("hexagon",), 3),
)


def _regular(n: int, radius: float = 1.0, phase: float = np.pi / 2) -> np.ndarray:
    """Vertices of a regular n-gon (image coordinates, y down)."""
    t = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(t), -radius * np.sin(t)], axis=1)


def _normalise(parts):
    """Centre a shape on its bounding box and scale it to circumradius 1."""
    pts = np.concatenate([p for p, _ in parts])
    centre = (pts.min(0) + pts.max(0)) / 2
    radius = np.linalg.norm(pts - centre, axis=1).max()
    return [((p - centre) / radius, fill) for p, fill in parts]


def _shape_table():
    """Class name -> list of (polygon Nx2, fill) drawn in order; fill=False cuts a hole."""
    circle = _regular(96)
    star = _regular(10) * np.where(np.arange(10) % 2 == 0, 1.0, 0.42)[:, None]
    a = 0.3
    cross = np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a],
                      [a, 1], [-a, 1], [-a, a], [-1, a], [-1, -a], [-a, -a]])
    t = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    heart = np.stack([16 * np.sin(t) ** 3,
                      -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))],
                     axis=1)
    arrow = np.array([[-1, -0.2], [0.15, -0.2], [0.15, -0.55], [1, 0],
                      [0.15, 0.55], [0.15, 0.2], [-1, 0.2]])
    table = {
        "circle": [(circle, True)],
        "square": [(_regular(4, phase=np.pi / 4), True)],
        "triangle": [(_regular(3), True)],
        "star": [(star, True)],
        "cross": [(cross, True)],
        "ring": [(circle, True), (circle * 0.55, False)],
        "hexagon": [(_regular(6, phase=0.0), True)],
        "crescent": [(circle, True), (circle * 0.82 + [0.42, -0.12], False)],
        "heart": [(heart, True)],
        "arrow": [(arrow, True)],
    }
    return {name: _normalise(table[name]) for name in CLASSES}


SHAPES = _shape_table()


def _random_colour(rng, sat=(0.35, 1.0), val=(0.3, 1.0)) -> np.ndarray:
    """A random RGB colour in [0, 255] from uniform hue and bounded saturation/value."""
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))
    return np.array([r, g, b], dtype=np.float32) * 255


def _pixel_grid():
    """Pixel-centre coordinates (x, y) of the image, each HxW float32."""
    c = np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5
    return np.meshgrid(c, c)


GRID_X, GRID_Y = _pixel_grid()


# ---------------------------------------------------------------- background

def _background(rng) -> np.ndarray:
    """A low-frequency cluttered background, HxWx3 float32 in [0, 255]."""
    n = IMAGE_SIZE
    kind = rng.integers(4)
    if kind == 0:                                   # smooth value noise
        g = int(rng.integers(3, 7))
        grid = np.stack([_random_colour(rng, (0.1, 0.8), (0.2, 1.0)) for _ in range(g * g)])
        img = cv2.resize(grid.reshape(g, g, 3), (n, n), interpolation=cv2.INTER_CUBIC)
    elif kind == 1:                                 # linear or radial gradient
        c0, c1 = _random_colour(rng, (0.1, 0.8)), _random_colour(rng, (0.1, 0.8))
        if rng.random() < 0.5:
            phi = rng.uniform(0, 2 * np.pi)
            t = ((GRID_X - n / 2) * np.cos(phi) + (GRID_Y - n / 2) * np.sin(phi)) / n + 0.5
        else:
            cx, cy = rng.uniform(0, n, 2)
            t = np.hypot(GRID_X - cx, GRID_Y - cy) / (1.2 * n)
        t = np.clip(t, 0, 1)[..., None]
        img = c0 * (1 - t) + c1 * t
    elif kind == 2:                                 # soft sinusoidal stripes
        c0, c1 = _random_colour(rng, (0.1, 0.7)), _random_colour(rng, (0.1, 0.7))
        phi, period = rng.uniform(0, np.pi), rng.uniform(20, 50)
        s = (GRID_X * np.cos(phi) + GRID_Y * np.sin(phi)) / period + rng.random()
        t = (0.5 + 0.5 * np.sin(2 * np.pi * s))[..., None]
        img = c0 * (1 - t) + c1 * t
    else:                                           # large soft blobs
        img = np.broadcast_to(_random_colour(rng, (0.1, 0.7)), (n, n, 3)).copy()
        for _ in range(int(rng.integers(3, 8))):
            mask = np.zeros((n, n), np.float32)
            centre = tuple(int(v) for v in rng.integers(0, n, 2))
            axes = tuple(int(v) for v in rng.integers(12, 40, 2))
            cv2.ellipse(mask, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
            mask = cv2.GaussianBlur(mask, (0, 0), float(rng.uniform(4, 10)))[..., None]
            img = img * (1 - mask) + _random_colour(rng, (0.1, 0.8)) * mask
    img = np.ascontiguousarray(img, dtype=np.float32)
    if rng.random() < 0.5:                          # long straight background lines
        for _ in range(int(rng.integers(2, 6))):
            p0 = tuple(int(v) for v in rng.integers(-20, n + 20, 2))
            p1 = tuple(int(v) for v in rng.integers(-20, n + 20, 2))
            colour = tuple(float(v) for v in _random_colour(rng, (0.1, 0.8)))
            cv2.line(img, p0, p1, colour, int(rng.integers(1, 4)), cv2.LINE_AA)
    return img


# ---------------------------------------------------------------- distractors

def _distractor_path(rng, thickness_max: int):
    """Points and thickness of a random open polyline or a thin random-walk scribble."""
    n = IMAGE_SIZE
    start = rng.uniform(0, n, 2)
    if rng.random() < 0.5:                          # open polyline, 2-4 segments
        steps = rng.uniform(-35, 35, (int(rng.integers(2, 5)), 2))
    else:                                           # scribble: a wandering random walk
        k = int(rng.integers(15, 40))
        heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.35, k))
        steps = 2.5 * np.stack([np.cos(heading), np.sin(heading)], axis=1)
        thickness_max = min(thickness_max, 2)
    pts = start + np.concatenate([[[0.0, 0.0]], np.cumsum(steps, axis=0)])
    return pts.round().astype(np.int32), int(rng.integers(1, thickness_max + 1))


def _draw_distractors_below(img, rng):
    """Polylines, scribbles and small lumpy blobs, drawn before the objects."""
    for _ in range(int(rng.integers(2, 6))):
        colour = tuple(float(v) for v in _random_colour(rng))
        if rng.random() < 0.35:                     # small lumpy blob (<= 14 px across)
            # an elongated, wobbly outline: no corners, so it never reads as a polygon
            t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
            a2, a5 = rng.uniform(0.1, 0.35), rng.uniform(0.05, 0.15)
            p2, p5 = rng.uniform(0, 2 * np.pi, 2)
            r = rng.uniform(2.5, 4.5) * (1 + a2 * np.cos(2 * t - p2) + a5 * np.cos(5 * t - p5))
            centre = rng.uniform(8, IMAGE_SIZE - 8, 2)
            pts = centre + np.stack([r * np.cos(t), r * np.sin(t)], axis=1)
            cv2.fillPoly(img, [np.round(pts * 16).astype(np.int32)], colour, cv2.LINE_AA, 4)
        else:
            pts, thickness = _distractor_path(rng, 3)
            cv2.polylines(img, [pts], False, colour, thickness, cv2.LINE_AA)


def _draw_distractors_above(img, rng, cores):
    """Up to two thin lines over the objects, each kept only if it hides little of them."""
    for _ in range(int(rng.integers(0, 3))):
        pts, _ = _distractor_path(rng, 1)
        colour = tuple(float(v) for v in _random_colour(rng))
        mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.uint8)
        cv2.polylines(mask, [pts], False, 1, 1, cv2.LINE_AA)
        if all((mask[core] > 0).mean() <= MAX_OVERLAY_COVER for core in cores):
            cv2.polylines(img, [pts], False, colour, 1, cv2.LINE_AA)


# ---------------------------------------------------------------- objects

def _object_geometry(rng, cls: int, diameter: float):
    """Random rotation and in-image position: (parts in image coordinates, centre, angle)."""
    angle = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    parts = [(p @ rot.T * (diameter / 2), fill) for p, fill in SHAPES[CLASSES[cls]]]
    pts = np.concatenate([p for p, _ in parts])
    lo, hi = pts.min(0), pts.max(0)
    margin = 1.5
    centre = rng.uniform(margin - lo, IMAGE_SIZE - margin - hi)
    return [(p + centre, fill) for p, fill in parts], centre, angle


def _rasterise(parts, outline_px: int):
    """Coverage (HxW float32 in [0, 1]) of the shape and of its inner outline."""
    ss, hi_n = SUPERSAMPLE, IMAGE_SIZE * SUPERSAMPLE
    shift = 4
    mask = np.zeros((hi_n, hi_n), np.uint8)
    for poly, fill in parts:
        # image coordinate p lies at supersampled pixel coordinate p * ss - 0.5
        fixed = np.round((poly * ss - 0.5) * (1 << shift)).astype(np.int32)
        cv2.fillPoly(mask, [fixed], ss * ss if fill else 0, cv2.LINE_8, shift)
    outline = np.zeros_like(mask)
    if outline_px:
        k = 2 * ss * outline_px + 1
        inner = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
        outline = mask - inner

    def coverage(m):
        # Sub-pixels hold ss*ss where covered, so the area mean of each ss x ss block is
        # the exact count of covered sub-pixels (an integer, no rounding).
        count = cv2.resize(m, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_AREA)
        return count.astype(np.float32) / (ss * ss)

    return coverage(mask), coverage(outline)


def _texture(rng, centre, angle, diameter, c0, c1) -> np.ndarray:
    """Fill colours (HxWx3) in the object's own rotated frame."""
    u0, v0 = GRID_X - centre[0], GRID_Y - centre[1]
    u = u0 * np.cos(angle) + v0 * np.sin(angle)
    v = -u0 * np.sin(angle) + v0 * np.cos(angle)
    kind = TEXTURES[int(rng.integers(len(TEXTURES)))]
    if kind == "solid":
        t = np.zeros_like(u)
    elif kind == "stripes":
        phi, period = rng.uniform(0, np.pi), rng.uniform(5, 11)
        s = (u * np.cos(phi) + v * np.sin(phi)) / period + rng.random()
        t = (s - np.floor(s) < 0.5).astype(np.float32)
    elif kind == "checker":
        p = rng.uniform(5, 10)
        t = ((np.floor(u / p) + np.floor(v / p)) % 2).astype(np.float32)
    elif kind == "dots":
        p = rng.uniform(6, 11)
        r = p * rng.uniform(0.25, 0.4)
        du, dv = u / p - np.round(u / p), v / p - np.round(v / p)
        t = (np.hypot(du, dv) * p < r).astype(np.float32)
    else:  # gradient
        phi = rng.uniform(0, 2 * np.pi)
        t = np.clip((u * np.cos(phi) + v * np.sin(phi)) / diameter + 0.5, 0, 1)
    t = t[..., None]
    return c0 * (1 - t) + c1 * t


def _contrasting_colours(rng, bg_mean):
    """Two fill colours whose mean differs clearly from the background under the object."""
    for _ in range(20):
        c0 = _random_colour(rng)
        c1 = np.clip(c0 * rng.uniform(0.35, 0.7), 0, 255) if rng.random() < 0.5 \
            else _random_colour(rng)
        if np.linalg.norm((c0 + c1) / 2 - bg_mean) > 90 and np.linalg.norm(c0 - bg_mean) > 90:
            break
    return c0, c1


def _box(alpha) -> list:
    """Tight [x0, y0, x1, y1] (x1/y1 exclusive) of the pixels with non-zero coverage."""
    ys, xs = np.nonzero(alpha > 0)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def box_iou(a, b) -> float:
    """Intersection over union of two [x0, y0, x1, y1] boxes."""
    w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    area = lambda r: (r[2] - r[0]) * (r[3] - r[1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def _place_objects(rng, classes):
    """Geometry, coverage and box of each object; two-object layouts keep IoU <= 0.1."""
    while True:
        placed = []
        for cls in classes:
            hi = SIZE_RANGE[1] if len(classes) == 1 else rng.uniform(40, SIZE_RANGE[1])
            diameter = rng.uniform(SIZE_RANGE[0], hi)
            outline_px = int(rng.integers(1, 3)) if rng.random() < 1 / 3 else 0
            for _ in range(50):
                parts, centre, angle = _object_geometry(rng, cls, diameter)
                alpha, edge = _rasterise(parts, outline_px)
                box = _box(alpha)
                if all(box_iou(box, other["box"]) <= MAX_PAIR_IOU for other in placed):
                    placed.append(dict(cls=cls, centre=centre, angle=angle, diameter=diameter,
                                       alpha=alpha, edge=edge, box=box))
                    break
        if len(placed) == len(classes):
            return placed


def generate(seed: int, index: int, n_objects: int = 1, classes=None):
    """Image `index` of dataset `seed`: (HxWx3 uint8 RGB, [{"class", "box"}, ...]).

    `classes` (class indices) forces the object classes; by default they are drawn
    uniformly (distinct for two objects) from the image's own Generator.
    """
    if n_objects not in (1, 2):
        raise ValueError("n_objects must be 1 or 2")
    rng = np.random.default_rng([seed, index])
    if classes is None:
        classes = [int(c) for c in rng.choice(len(CLASSES), n_objects, replace=False)]
    if len(classes) != n_objects or len(set(classes)) != n_objects:
        raise ValueError("need n_objects distinct classes")

    img = _background(rng)
    _draw_distractors_below(img, rng)
    objects = _place_objects(rng, classes)
    for obj in objects:
        alpha = obj["alpha"][..., None]
        bg_mean = (img * alpha).sum((0, 1)) / alpha.sum()
        c0, c1 = _contrasting_colours(rng, bg_mean)
        fill = _texture(rng, obj["centre"], obj["angle"], obj["diameter"], c0, c1)
        edge = obj["edge"][..., None]
        line = np.full(3, 20.0 if bg_mean.mean() > 110 else 235.0, np.float32)
        img = img * (1 - alpha) + fill * (alpha - edge) + line * edge
    _draw_distractors_above(img, rng, [obj["alpha"] >= 0.5 for obj in objects])
    pixels = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return pixels, [{"class": obj["cls"], "box": obj["box"]} for obj in objects]


def layout(count: int, two_object_fraction: float):
    """Objects per image for a dataset: single-object images first, then two-object."""
    n_two = int(round(count * two_object_fraction))
    return [1] * (count - n_two) + [2] * n_two


def save_png(pixels: np.ndarray, path: str):
    """Lossless, deterministic PNG."""
    Image.fromarray(pixels, "RGB").save(path, optimize=True)


def _manifest(seed: int, images: list) -> dict:
    return {"version": 1, "generator": "tools/shapes.py", "seed": seed,
            "image_size": [IMAGE_SIZE, IMAGE_SIZE], "classes": list(CLASSES),
            "images": images}


def _write_json(path: str, doc: dict):
    """boxes.json with one image per line (compact, yet diffable)."""
    head = json.dumps({k: v for k, v in doc.items() if k != "images"})[:-1]
    rows = ",\n".join("  " + json.dumps(image) for image in doc["images"])
    with open(path, "w") as f:
        f.write(f'{head},\n "images": [\n{rows}\n ]}}\n')


def write_dataset(out: str, count: int, seed: int, two_object_fraction: float = 0.0):
    """Write out/images/NNNNN.png and out/boxes.json."""
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    images = []
    for index, n_objects in enumerate(layout(count, two_object_fraction)):
        pixels, objects = generate(seed, index, n_objects)
        name = f"images/{index:05d}.png"
        save_png(pixels, os.path.join(out, name))
        images.append({"file": name, "objects": objects})
    _write_json(os.path.join(out, "boxes.json"), _manifest(seed, images))


def write_showcase(out: str):
    """Write the curated README images (SHOWCASE, seed SHOWCASE_SEED) and boxes.json."""
    os.makedirs(out, exist_ok=True)
    images = []
    for stem, names, index in SHOWCASE:
        classes = [CLASSES.index(n) for n in names]
        pixels, objects = generate(SHOWCASE_SEED, index, len(classes), classes)
        save_png(pixels, os.path.join(out, f"{stem}.png"))
        images.append({"file": f"{stem}.png", "objects": objects})
    _write_json(os.path.join(out, "boxes.json"), _manifest(SHOWCASE_SEED, images))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="output directory")
    ap.add_argument("--count", type=int, help="number of images")
    ap.add_argument("--seed", type=int, help="dataset seed")
    ap.add_argument("--two-object-fraction", type=float, default=0.0,
                    help="share of two-object images (they come last)")
    ap.add_argument("--showcase", metavar="DIR", help="write the curated README images")
    args = ap.parse_args()
    if args.showcase:
        write_showcase(args.showcase)
    elif args.out and args.count is not None and args.seed is not None:
        write_dataset(args.out, args.count, args.seed, args.two_object_fraction)
    else:
        ap.error("need --out, --count and --seed (or --showcase DIR)")


if __name__ == "__main__":
    main()
