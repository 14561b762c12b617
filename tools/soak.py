#!/usr/bin/env python3
"""Soak test for `gradcam explain`: does memory stay flat over a long batch run?

Generates (or takes) a folder of images, runs `gradcam explain --progress-json N` over it,
and records, every N images: resident memory (the CLI's own /proc reading; on a CPU adapter
such as lavapipe that includes the "GPU" memory), GPU memory per nvidia-smi where there is
one, and the count of GPU buffers the engine has created. Writes CSV + JSON and a verdict on
the slopes after warm-up.

    python3 tools/soak.py --images 10000 --size 64 --out /tmp/soak

Standard library only (a minimal PNG writer generates the images).
"""

import argparse
import csv
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import time
import zlib


def png(path, w, h, pixels):
    """Writes 8-bit RGB `pixels` (bytes, row-major) as a PNG."""

    def chunk(kind, data):
        c = kind + data
        return struct.pack(">I", len(data)) + c + struct.pack(">I", zlib.crc32(c))

    raw = b"".join(b"\x00" + pixels[y * w * 3 : (y + 1) * w * 3] for y in range(h))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n")
        f.write(chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)))
        f.write(chunk(b"IDAT", zlib.compress(raw, 6)))
        f.write(chunk(b"IEND", b""))


def generate(folder, n, side, seed=1):
    """`n` images of a random filled rectangle and disc on a random background, 100 per
    subfolder (so the walk crosses directories)."""
    rng = random.Random(seed)
    for i in range(n):
        sub = os.path.join(folder, f"{i // 100:04d}")
        os.makedirs(sub, exist_ok=True)
        bg = [rng.randrange(256) for _ in range(3)]
        fg = [rng.randrange(256) for _ in range(3)]
        x0, y0 = rng.randrange(side // 2), rng.randrange(side // 2)
        x1, y1 = x0 + rng.randrange(4, side // 2), y0 + rng.randrange(4, side // 2)
        cx, cy, r = rng.randrange(side), rng.randrange(side), rng.randrange(3, side // 3)
        px = bytearray()
        for y in range(side):
            for x in range(side):
                if x0 <= x < x1 and y0 <= y < y1:
                    px += bytes(fg)
                elif (x - cx) ** 2 + (y - cy) ** 2 < r * r:
                    px += bytes(fg[::-1])
                else:
                    px += bytes(bg)
        png(os.path.join(sub, f"{i:06d}.png"), side, side, bytes(px))


def gpu_mib(pid):
    """GPU memory of `pid` per nvidia-smi, or None."""
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=10,
        ).stdout
    except Exception:
        return None
    for line in out.splitlines():
        p, _, mib = line.partition(",")
        if p.strip() == str(pid):
            return float(mib)
    return None


def slope(xs, ys):
    """Least-squares slope of ys over xs."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=10000, help="how many to generate")
    ap.add_argument("--input", help="use this folder instead of generating images")
    ap.add_argument("--side", type=int, default=64, help="generated image side")
    ap.add_argument("--size", default="64", help="gradcam --size")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--every", type=int, default=500, help="sample every N images")
    ap.add_argument("--warmup", type=float, default=0.2, help="fraction of samples ignored")
    ap.add_argument("--out", default="/tmp/gradcam-soak", help="work folder")
    ap.add_argument("--bin", default=None, help="gradcam binary (default: target/release/gradcam)")
    ap.add_argument("--limit-mib-per-10k", type=float, default=16.0,
                    help="verdict: growth above this (MiB per 10,000 images) is a leak")
    ap.add_argument("extra", nargs="*", help="more gradcam explain arguments (after --)")
    a = ap.parse_args()

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    binary = a.bin or os.path.join(root, "target", "release", "gradcam")
    os.makedirs(a.out, exist_ok=True)
    inputs = a.input
    if not inputs:
        inputs = os.path.join(a.out, f"images-{a.images}-{a.side}")
        marker = os.path.join(inputs, ".complete")
        if not os.path.exists(marker):
            t = time.time()
            generate(inputs, a.images, a.side)
            open(marker, "w").close()
            print(f"generated {a.images} images in {time.time() - t:.0f} s", file=sys.stderr)
    results = os.path.join(a.out, "explained")
    shutil.rmtree(results, ignore_errors=True)

    cmd = [binary, "explain", inputs, "--size", a.size, "--batch", str(a.batch),
           "--out", results, "--progress-json", str(a.every), *a.extra]
    print(" ".join(cmd), file=sys.stderr)
    t0 = time.time()
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    rows = []
    for line in proc.stderr:
        line = line.strip()
        if not line.startswith("{"):
            if line and "XDG_RUNTIME_DIR" not in line:
                print(line, file=sys.stderr)
            continue
        p = json.loads(line)
        row = {
            "images": p["progress"],
            "errors": p["errors"],
            "rss_mib": round(p["rss_kib"] / 1024, 2) if p.get("rss_kib") else None,
            "gpu_mib": gpu_mib(proc.pid),
            "gpu_buffers_created": p["gpu_buffers_created"],
            "elapsed_s": round(p["elapsed_s"], 2),
        }
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    rc = proc.wait()
    wall = time.time() - t0

    with open(os.path.join(a.out, "soak.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()) if rows else ["images"])
        w.writeheader()
        w.writerows(rows)

    steady = rows[int(len(rows) * a.warmup):]
    xs = [r["images"] for r in steady]
    verdict = {"exit_code": rc, "samples": len(rows), "wall_s": round(wall, 1),
               "images_per_s": round(rows[-1]["images"] / rows[-1]["elapsed_s"], 1) if rows else None}
    for key in ("rss_mib", "gpu_mib", "gpu_buffers_created"):
        ys = [r[key] for r in steady]
        if len(ys) >= 2 and all(y is not None for y in ys):
            verdict[f"{key}_first"] = ys[0]
            verdict[f"{key}_last"] = ys[-1]
            verdict[f"{key}_per_10k_images"] = round(slope(xs, ys) * 10000, 3)
    leaks = [k for k in ("rss_mib", "gpu_mib")
             if verdict.get(f"{k}_per_10k_images", 0) > a.limit_mib_per_10k]
    verdict["verdict"] = ("flat" if rc == 0 and not leaks and len(steady) >= 2
                          else "LEAK: " + ", ".join(leaks) if leaks
                          else "inconclusive (too few samples or the run failed)")
    with open(os.path.join(a.out, "soak.json"), "w") as f:
        json.dump({"rows": rows, "verdict": verdict}, f, indent=1)
    print(json.dumps(verdict, indent=1))
    return 0 if verdict["verdict"] == "flat" else 1


if __name__ == "__main__":
    sys.exit(main())
