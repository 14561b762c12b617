"""tools/gpu-check.sh's reporting: steps.jsonl lines, one-line readings and the final summary.

Standard library only: it runs wherever the check runs, torch or not.

  gpu_check_summary.py record NAME STATUS RC SECONDS LIMIT LAST_LINE   one steps.jsonl line
  gpu_check_summary.py adapter ADAPTER.json                          "adapter: ..." line
  gpu_check_summary.py bench-line BENCH.json                         one bench configuration
  gpu_check_summary.py summary WORK OUT BUDGET_S                     the one-screen summary
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys

TESTS = ("kernels", "golden", "methods")


def record(name, status, rc, seconds, limit, last):
    print(json.dumps({
        "step": name, "status": status, "rc": None if rc == "null" else int(rc),
        "seconds": float(seconds), "limit": int(limit), "timed_out": status == "timed_out",
        "log": f"{name}.log", "last": last,
    }))


def adapter_line(path):
    a = json.load(open(path))["adapter"]
    return (f"adapter: {a['name']} ({a['backend']}, {a['device_type']}), driver "
            f"{a['driver']} {a['driver_info']}".rstrip())


def bench_tag(r):
    return "winograd" if r["winograd"] else r["precision"]


def bench_line(r):
    p = r.get("profile")
    gpu = f", GPU {p['gpu_seconds_per_batch'] * 1e3:.2f} ms/batch profiled" if p else ""
    return (f"{bench_tag(r)} b{r['batch']}: {r['end_to_end']['images_per_second']:.1f} img/s end to "
            f"end, {r['compute']['images_per_second']:.1f} GPU-only{gpu}, peak "
            f"{r['memory']['peak'] / 2**20:.0f} MiB, setup {r['setup_seconds']:.1f} s")


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def last_line(path):
    try:
        lines = [ln.strip() for ln in open(path, errors="replace") if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def tests_line(work):
    parts = []
    for name in TESTS:
        path = os.path.join(work, f"{name}-tests.txt")
        if not os.path.exists(path):
            continue
        text = open(path, errors="replace").read()
        results = re.findall(r"^test result: (\w+)\. (\d+) passed; (\d+) failed; (\d+) ignored; "
                             r"\d+ measured; (\d+) filtered out; finished in ([\d.]+)s", text, re.M)
        if not results:  # cut short: what had passed by then
            done = re.findall(r"^test \S+ \.\.\. ok$", text, re.M)
            total = re.findall(r"^running (\d+) tests?$", text, re.M)
            of = f" of {total[0]}" if total else ""
            parts.append(f"{name}: no result, {len(done)}{of} passed before it stopped")
            continue
        ok, passed, failed, ignored, filtered, secs = results[-1]
        s = f"{name} {passed} passed"
        if int(failed):
            names = re.findall(r"^test (\S+) \.\.\. FAILED", text, re.M)
            s += f", {failed} FAILED ({', '.join(names[:4])})"
        if int(filtered):
            s += f" ({filtered} filtered out)"
        parts.append(s + f" in {float(secs):.0f} s")
    return "tests: " + "; ".join(parts) if parts else None


def kernel_table(r, top=6):
    p = r.get("profile")
    if not p or not p["kernels"]:
        return ["  (no per-kernel profile: the adapter has no TIMESTAMP_QUERY)"]
    peak = r.get("peak_gflops")
    rows = sorted(p["kernels"], key=lambda k: -k["seconds_per_batch"])[:top]
    out = [f"top kernels, {bench_tag(r)} b{r['batch']}: {p['gpu_seconds_per_batch'] * 1e3:.2f} ms GPU "
           f"per batch, {p['flops_per_image'] / 1e9:.2f} GFLOP/image, peak "
           f"{f'{peak:.0f} GFLOP/s' if peak else 'unknown'}",
           f"  {'kernel':<28} {'ms/batch':>9} {'share':>6} {'GFLOP/s':>9} {'% peak':>7}"]
    for k in rows:
        g = k.get("gflops_per_second")
        f = k.get("peak_fraction")
        out.append(f"  {k['kernel'][:28]:<28} {k['seconds_per_batch'] * 1e3:>9.3f} {k['share']:>6.1%} "
                   f"{f'{g:.0f}' if g else '-':>9} {f'{f:.1%}' if f is not None else '-':>7}")
    total_flops = sum(k["flops_per_batch"] for k in p["kernels"])
    if total_flops and p["gpu_seconds_per_batch"]:
        overall = total_flops / p["gpu_seconds_per_batch"] / 1e9
        pct = f" ({overall / peak:.1%} of peak)" if peak else ""
        out.append(f"  all kernels: {overall:.0f} GFLOP/s over the profiled GPU time{pct}")
    return out


def kernel_names(r):
    return {k["kernel"] for k in (r.get("profile") or {}).get("kernels", [])}


def fmt(x, digits=3):
    if x is None:
        return "n/a"
    return f"{x:.{digits}g}" if x < 100 else f"{x:.0f}"


def compare_lines(work, steps, step, methods):
    st = steps.get(step)
    if st is None:
        return []
    doc = load(os.path.join(work, f"compare-{methods}.json"))
    head = f"{step} ({methods}): {st['status']}"
    if doc:
        a = doc["args"]
        head += f" (torch {doc.get('torch', '?')} on {a['device']}, peers {a.get('peers', 'pgc')})"
    if st["status"] != "ok" or not doc:
        head += f": {st.get('last', '')}"
    out = [head]
    if doc and doc["rows"]:
        peers = [p for p in doc["args"].get("peers", "pgc").split(",") if p]
        out.append("  | model | batch | " + " | ".join(f"{p} img/s" for p in peers)
                   + " | engine img/s | GPU-only | " + " | ".join(f"engine/{p}" for p in peers) + " |")
        ratio_key = {"pgc": "ratio", "captum": "captum_ratio"}
        for r in doc["rows"]:
            errs = [r[k] for k in ("pgc_error", "captum_error", "engine_error") if k in r]
            out.append(f"  | {r['model']} | {r['batch']} | "
                       + " | ".join(fmt(r.get(f"{p}_images_per_second")) for p in peers)
                       + f" | {fmt(r.get('engine_images_per_second'))}"
                       + f" | {fmt(r.get('engine_compute_images_per_second'))} | "
                       + " | ".join(fmt(r.get(ratio_key[p]), 2) for p in peers) + " |"
                       + (f" {'; '.join(errs)[:80]}" if errs else ""))
    return out


def summary(work, out_dir, budget):
    steps = {}
    for line in open(os.path.join(work, "steps.jsonl")):
        if line.strip():
            s = json.loads(line)
            steps[s["step"]] = s
    env = open(os.path.join(work, "env.txt")).read().splitlines()
    rehearsal = any(ln.startswith("rehearsal=1") for ln in env)
    lines = ["== gpu-check summary " + "=" * 58]
    lines += [ln for ln in env if ln.startswith(("run ", "commit ", "prepared ", "rehearsal=", "cargo:"))]
    total = sum(s["seconds"] for s in steps.values())
    lines.append(f"{'step':<9} {'status':<9} {'s':>6} {'limit':>5}  last line of its log"
                 f" (all steps {total:.0f} s of {budget})")
    for s in steps.values():
        lines.append(f"{s['step']:<9} {s['status']:<9} {s['seconds']:>6.1f} {s['limit']:>5}  "
                     f"{s.get('last', '')[:52]}")
    notes = [ln.rstrip() for ln in open(os.path.join(work, "notes.txt")) if ln.strip()]
    lines += notes
    t = tests_line(work)
    if t:
        lines.append(t)

    benches = [r for r in (load(p) for p in sorted(glob.glob(os.path.join(work, "bench-*.json")))) if r]
    if benches:
        order = {"f32": 0, "f16": 1, "winograd": 2}
        benches.sort(key=lambda r: (order.get(bench_tag(r), 3), r["batch"]))
        main = max((r for r in benches if bench_tag(r) == "f32"), key=lambda r: r["batch"], default=None)
        for r in benches:
            extra = ""
            if bench_tag(r) == "winograd" and main:
                new = sorted(kernel_names(r) - kernel_names(main))
                extra = (f" (kernels: {', '.join(new)})" if new else
                         " (no kernel of its own ran: Winograd does not apply to this adapter's convs)")
            lines.append("bench " + bench_line(r) + extra)
        if main:
            lines += kernel_table(main)
    lines += compare_lines(work, steps, "compare", "gradcam")
    lines += compare_lines(work, steps, "scorecam", "scorecam")
    bad = [s["step"] for s in steps.values()
           if not (s["status"] == "ok" or (s["status"] == "skipped" and rehearsal))]
    verdict = "all steps ok" if not bad else "NOT OK: " + ", ".join(bad)
    if rehearsal:
        verdict += " (rehearsal: CPU adapter and skipped steps accepted)"
    lines.append(f"result: {verdict}")
    files = sorted(os.listdir(out_dir)) if os.path.isdir(out_dir) else []
    files = [f for f in files if not f.endswith(".tmp") and f != "summary.txt"] + ["summary.txt"]
    lines.append(f"files: {out_dir}: {' '.join(files)}"
                 " (logs and JSON in gpu-check.tar.gz)")
    print("\n".join(lines))


def main(argv):
    cmd = argv[1] if len(argv) > 1 else ""
    if cmd == "record" and len(argv) == 8:
        record(*argv[2:])
    elif cmd == "adapter" and len(argv) == 3:
        print(adapter_line(argv[2]))
    elif cmd == "bench-line" and len(argv) == 3:
        print(bench_line(json.load(open(argv[2]))))
    elif cmd == "summary" and len(argv) == 5:
        summary(argv[2], argv[3], argv[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
