#!/usr/bin/env python3
"""Side-by-side README figures from `gradcam explain` outputs: the input, then one overlay per
listed file, each scaled up (nearest) and captioned.

    python tools/readme_figure.py --out docs/two-objects.png --scale 2 \
        examples/shapes/star-and-heart.png gradcam-out/star-and-heart.gradcam.star.png ...

A row per `--row` group is possible: separate groups with `--row`.
"""

from __future__ import annotations

import argparse
import os

from PIL import Image, ImageDraw


def caption(path: str) -> str:
    """`stem.method.class.png` -> `method: class`; an input -> its stem."""
    parts = os.path.basename(path).rsplit(".", 3)
    if len(parts) == 4:
        return f"{parts[1]}: {parts[2]}"
    return os.path.splitext(os.path.basename(path))[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--scale", type=int, default=2)
    ap.add_argument("images", nargs="+", help="files; `--row` starts a new row")
    args, rest = ap.parse_known_args()
    tokens = args.images + rest
    rows, row = [], []
    for t in tokens:
        if t == "--row":
            rows.append(row)
            row = []
        else:
            row.append(t)
    rows.append(row)
    rows = [r for r in rows if r]
    tiles = [[Image.open(p).convert("RGB") for p in r] for r in rows]
    w = max(im.width for r in tiles for im in r) * args.scale
    h = max(im.height for r in tiles for im in r) * args.scale
    pad, text_h = 6, 16
    cols = max(len(r) for r in rows)
    canvas = Image.new("RGB", (cols * (w + pad) + pad, len(rows) * (h + text_h + pad) + pad),
                       "white")
    draw = ImageDraw.Draw(canvas)
    for i, (paths, ims) in enumerate(zip(rows, tiles)):
        for j, (p, im) in enumerate(zip(paths, ims)):
            x, y = pad + j * (w + pad), pad + i * (h + text_h + pad)
            canvas.paste(im.resize((w, h), Image.NEAREST), (x, y + text_h))
            draw.text((x, y + 2), caption(p), fill="black")
    canvas.save(args.out)
    print(f"wrote {args.out} ({canvas.width}x{canvas.height})")


if __name__ == "__main__":
    main()
