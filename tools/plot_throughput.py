"""Images/s vs batch size, engine vs pytorch-grad-cam (and Captum), from compare_throughput.py's JSON.

Usage:
  /opt/ref/bin/python tools/compare_throughput.py --models bundled,resnet18 --methods gradcam \
      --batches 1,4,16,32 --json tp.json
  /opt/ref/bin/python tools/plot_throughput.py tp.json --out throughput.png

One panel per (model, method); lines: engine end to end, engine GPU-only, pgc, Captum (where
measured). Log-scale y.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SERIES = (
    ("engine_images_per_second", "engine, end to end", "-o"),
    ("engine_compute_images_per_second", "engine, GPU only", ":o"),
    ("pgc_images_per_second", "pytorch-grad-cam", "-s"),
    ("captum_images_per_second", "Captum LayerGradCam", "-^"),
)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", help="compare_throughput.py --json output")
    ap.add_argument("--out", default="throughput.png")
    ap.add_argument("--title", default=None)
    args = ap.parse_args()

    with open(args.json) as f:
        doc = json.load(f)
    panels = defaultdict(list)
    for r in doc["rows"]:
        panels[(r["model"], r["method"])].append(r)
    if not panels:
        raise SystemExit(f"{args.json}: no rows")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, ((model, method), rows) in zip(axes[0], sorted(panels.items())):
        rows.sort(key=lambda r: r["batch"])
        for key, label, style in SERIES:
            pts = [(r["batch"], r[key]) for r in rows if r.get(key)]
            if pts:
                ax.plot(*zip(*pts), style, label=label)
        r0 = rows[0]
        ax.set_title(f"{model} {method} {r0['size'][0]}x{r0['size'][1]}", fontsize=10)
        ax.set_xlabel("batch size")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("images / s")
    axes[0][0].legend(fontsize=8)
    r0 = doc["rows"][0]
    peers = " and ".join({"pgc": "pgc", "captum": "Captum"}[p]
                         for p in doc["args"].get("peers", "pgc").split(","))
    # Two lines: adapter names are long and the figure may be one panel wide.
    fig.suptitle(args.title or f"engine on {r0.get('engine_adapter', '?')}\nvs {peers} on torch "
                 f"{r0['device']} ({r0['torch_threads']} threads)", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
