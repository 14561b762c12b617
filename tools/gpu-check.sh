#!/usr/bin/env bash
# One pass on a real Vulkan GPU machine (written for NVIDIA, with torch+CUDA): Vulkan
# loader/ICD, build, parity tests (kernels, golden, methods), `gradcam bench` of resnet50 at
# batch 64 with the per-kernel profile, and the throughput comparison with pytorch-grad-cam on
# CUDA. Every step's exit code, time and log are recorded in $OUT/steps.jsonl even when a
# step (or a later one) fails; the whole run stops starting steps after $BUDGET_S seconds.
#
#   OUT=/tmp/gc tools/gpu-check.sh            # everything (about 8 minutes with a warm build)
#   STEPS=vulkan,build,bench tools/gpu-check.sh
#
# Packages it needs (Debian/Ubuntu):
#   libvulkan1      the Vulkan loader (libvulkan.so.1)
#   vulkan-tools    vulkaninfo, for the ICD check (optional)
#   the NVIDIA driver, which ships the ICD (/usr/share/vulkan/icd.d/nvidia_icd.json or
#   /etc/vulkan/icd.d/); in a container the NVIDIA toolkit must expose the `graphics`
#   capability (NVIDIA_DRIVER_CAPABILITIES=all, or compute,utility,graphics), else the ICD's
#   libGLX_nvidia.so.0 is missing and only lavapipe (mesa-vulkan-drivers) shows up.
#   Rust (cargo) with the crates available offline (`cargo fetch` beforehand, or a vendored
#   source) when the machine has no network.
#   Python with torch (CUDA) and grad-cam 1.5.7 + tools/requirements.txt; if pytorch_grad_cam
#   is missing, PGC_WHEEL=/path/grad_cam-1.5.7-py3-none-any.whl is pip-installed (--no-deps),
#   or else grad-cam==1.5.7 from the wheels in PGC_WHEELHOUSE (default tools/wheels), offline.
#
# Environment (all optional):
#   OUT          output directory (default ./gpu-check-out)
#   STEPS        comma list of steps (default: vulkan,build,kernels,golden,methods,bench,pgc,compare)
#   BUDGET_S     overall seconds (default 480); a step gets at most what is left
#   PYTHON       default /opt/ref/bin/python if present, else python3
#   PGC_WHEEL    local grad-cam wheel to install when pytorch_grad_cam is missing
#   PGC_WHEELHOUSE  directory of wheels (grad-cam and its dependencies), default tools/wheels
#   BENCH_ARCH (resnet50), BENCH_BATCH (64), BENCH_SIZE (224), PEAK_GFLOPS (none; an H100/H200
#   SXM does about 67000 dense FP32 GFLOP/s)
#   COMPARE_MODELS (resnet18,resnet50,vgg16,bundled), COMPARE_BATCHES (16,64),
#   COMPARE_DEVICE (cuda), COMPARE_THREADS (torch threads, 2)

set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu-check-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
STEPS=${STEPS:-vulkan,build,kernels,golden,methods,bench,pgc,compare}
BUDGET_S=${BUDGET_S:-480}
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x /opt/ref/bin/python ]]; then PYTHON=/opt/ref/bin/python; else PYTHON=python3; fi
fi
BENCH_ARCH=${BENCH_ARCH:-resnet50}
BENCH_BATCH=${BENCH_BATCH:-64}
BENCH_SIZE=${BENCH_SIZE:-224}
COMPARE_MODELS=${COMPARE_MODELS:-resnet18,resnet50,vgg16,bundled}
COMPARE_BATCHES=${COMPARE_BATCHES:-16,64}
COMPARE_DEVICE=${COMPARE_DEVICE:-cuda}
COMPARE_THREADS=${COMPARE_THREADS:-2}
BIN=$ROOT/target/release/gradcam
SUMMARY=$OUT/steps.jsonl
: >"$SUMMARY"
T0=$(date +%s)
FAILED=0

wanted() { [[ ",$STEPS," == *",$1,"* ]]; }

# step NAME LIMIT_S CMD...: runs CMD with a timeout, logs to $OUT/NAME.log, appends a JSON line.
step() {
    local name=$1 limit=$2 rc=0 start end left timed_out=false
    shift 2
    wanted "$name" || return 0
    left=$((BUDGET_S - ($(date +%s) - T0)))
    if ((left < 10)); then
        printf '{"step":"%s","rc":null,"skipped":"budget spent"}\n' "$name" >>"$SUMMARY"
        echo "== $name: skipped (budget of ${BUDGET_S}s spent)"
        FAILED=1
        return 0
    fi
    ((limit > left)) && limit=$left
    echo "== $name (limit ${limit}s)"
    start=$(date +%s.%N)
    # The steps are shell functions: run them in a child bash that inherits them (export -f).
    timeout --kill-after=10 "$limit" bash -c 'set -euo pipefail; "$@"' "$name" "$@" \
        >"$OUT/$name.log" 2>&1 || rc=$?
    end=$(date +%s.%N)
    ((rc == 124 || rc == 137)) && timed_out=true
    ((rc != 0)) && FAILED=1
    printf '{"step":"%s","rc":%d,"seconds":%.1f,"timed_out":%s,"log":"%s.log"}\n' \
        "$name" "$rc" "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')" "$timed_out" \
        "$name" >>"$SUMMARY"
    tail -n 5 "$OUT/$name.log" | sed 's/^/   /'
    echo "   -> rc=$rc"
    return 0
}

check_vulkan() {
    echo "# loader"
    ldconfig -p 2>/dev/null | grep -E 'libvulkan\.so\.1' || { echo "no libvulkan.so.1: apt-get install libvulkan1"; return 1; }
    echo "# ICDs"
    local found=0 f
    for f in /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json $(tr : " " <<<"${VK_ICD_FILENAMES:-}"); do
        [[ -f "$f" ]] && { echo "$f"; found=1; }
    done
    ((found)) || { echo "no Vulkan ICD json found"; return 1; }
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    if command -v vulkaninfo >/dev/null; then
        vulkaninfo --summary
        # A real GPU must be listed (not only llvmpipe).
        vulkaninfo --summary | grep -E 'deviceType *= *PHYSICAL_DEVICE_TYPE_(DISCRETE|INTEGRATED)_GPU' ||
            { echo "no GPU among the Vulkan devices (only CPU ones such as llvmpipe?)"; return 1; }
    else
        echo "vulkaninfo missing (apt-get install vulkan-tools); the bench step checks the adapter"
    fi
}

bench() {
    local args=(--arch "$BENCH_ARCH" --random-weights --batch "$BENCH_BATCH" --size "$BENCH_SIZE")
    [[ -n "${PEAK_GFLOPS:-}" ]] && args+=(--peak-gflops "$PEAK_GFLOPS")
    "$BIN" bench "${args[@]}" --iters 5 --warmup 2 --json >"$OUT/bench-$BENCH_ARCH-b$BENCH_BATCH.json"
    "$BIN" bench "${args[@]}" --iters 2 --warmup 1 | tee "$OUT/bench-$BENCH_ARCH-b$BENCH_BATCH.txt"
    # f16 weights (opt-in): the same run, for the README's precision table.
    "$BIN" bench "${args[@]}" --precision f16 --iters 5 --warmup 2 --json \
        >"$OUT/bench-$BENCH_ARCH-b$BENCH_BATCH-f16.json" || echo "f16 bench failed"
    # The numbers are only worth having from a real GPU.
    "$PYTHON" - "$OUT/bench-$BENCH_ARCH-b$BENCH_BATCH.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
a = r["adapter"]
print(f"adapter {a['name']} ({a['backend']}, {a['device_type']}); end to end "
      f"{r['end_to_end']['images_per_second']:.1f} img/s, compute {r['compute']['images_per_second']:.1f} img/s, "
      f"peak memory {r['memory']['peak'] / 2**20:.0f} MiB")
assert r["profile"] and r["profile"]["kernels"], "no per-kernel profile"
sys.exit(0 if a["device_type"] != "Cpu" else "the engine ran on a CPU adapter")
EOF
}

pgc_setup() {
    "$PYTHON" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
    if ! "$PYTHON" -c 'import pytorch_grad_cam' 2>/dev/null; then
        local house=${PGC_WHEELHOUSE:-$ROOT/tools/wheels}
        if [[ -n "${PGC_WHEEL:-}" ]]; then
            "$PYTHON" -m pip install --no-index --no-deps "$PGC_WHEEL"
        elif compgen -G "$house/grad_cam-*.whl" >/dev/null; then
            # The wheel and its dependencies (ttach, ...) carried in the tree; no network.
            "$PYTHON" -m pip install --no-index --find-links "$house" grad-cam==1.5.7
        else
            echo "pytorch_grad_cam missing: set PGC_WHEEL or put the wheels in $house"
            return 1
        fi
    fi
    "$PYTHON" -c 'import pytorch_grad_cam, importlib.metadata as m; print("grad-cam", m.version("grad-cam"))'
    if [[ "$COMPARE_DEVICE" == cuda ]]; then
        "$PYTHON" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "torch sees no CUDA device")'
    fi
}

compare() {
    local rc=0 common=(--device "$COMPARE_DEVICE" --threads "$COMPARE_THREADS" --size 224 --iters 3 --warmup 1)
    "$PYTHON" tools/compare_throughput.py "${common[@]}" --models "$COMPARE_MODELS" --methods gradcam \
        --batches "$COMPARE_BATCHES" --json "$OUT/compare-gradcam.json" || rc=$?
    "$PYTHON" tools/plot_throughput.py "$OUT/compare-gradcam.json" --out "$OUT/compare-gradcam.png" || true
    # Score-CAM: one forward per channel; a few images only.
    "$PYTHON" tools/compare_throughput.py "${common[@]}" --models resnet18,bundled --methods scorecam \
        --batches 4 --slow-images 4 --iters 1 --json "$OUT/compare-scorecam.json"
    return "$rc"
}

export -f check_vulkan bench pgc_setup compare
export ROOT OUT PYTHON BIN BENCH_ARCH BENCH_BATCH BENCH_SIZE COMPARE_MODELS COMPARE_BATCHES \
    COMPARE_DEVICE COMPARE_THREADS

{
    echo "date $(date -u +%FT%TZ)"
    echo "commit $(git rev-parse HEAD 2>/dev/null || echo unknown)"
    uname -a
    cargo --version 2>&1 || true
    rustc --version 2>&1 || true
    nproc
} >"$OUT/env.txt" 2>&1 || true

step vulkan 30 check_vulkan
step build 300 cargo build --release --bins --tests --benches
step kernels 120 cargo test --release --test kernels
step golden 120 cargo test --release --test golden
step methods 240 cargo test --release --test methods
step bench 120 bench
step pgc 60 pgc_setup
step compare 240 compare

echo "== done in $(($(date +%s) - T0))s; results in $OUT (steps.jsonl)"
cat "$SUMMARY"
exit "$FAILED"
