#!/usr/bin/env bash
# The GPU check: parity tests, `gradcam bench` and the throughput comparison with
# pytorch-grad-cam and Captum, on a lent GPU machine that has no Rust toolchain, no network and
# perhaps no Vulkan loader. Two halves (docs/gpu-check.md has the exact device call):
#
#   tools/gpu-check.sh prepare [--dest DIR] [--gradcam EXE] [--test NAME=EXE]...
#       Here, with cargo and network. Builds the release CLI and the kernels, golden and methods
#       test executables (or takes the ones given), strips and gzips them, downloads the Vulkan loader
#       (libvulkan1 .deb, via apt-get with private lists) and the grad-cam 1.5.7 (built from
#       its sdist), ttach 0.0.3 and captum 0.9.0 wheels (Python 3.12, pure Python), and stages
#       everything in DIR (default .device/, git-ignored). Refuses to stage more than 60 MiB.
#
#   OUT=DIR tools/gpu-check.sh run
#       There, in the working tree with .device carried; needs no cargo, git or network.
#       Steps, each time-boxed, all within BUDGET_S (480 s) whatever happens:
#         loader    libvulkan.so.1 from the system, else unpacked from the staged .deb into a
#                   private folder (LD_LIBRARY_PATH); NVIDIA's ICD from /usr/share/vulkan/icd.d
#                   or /etc/vulkan/icd.d, else VK_DRIVER_FILES=/usr/local/nvidia/.../nvidia_icd.json
#         adapter   the adapter wgpu picks (a one-image bench), once more with that ICD named in
#                   VK_DRIVER_FILES if it is not a GPU; a CPU adapter fails it, and then the
#                   steps that need the GPU are not run
#         wheels    the staged wheels into a temporary site (PYTHONPATH), with --no-deps
#         bench     `gradcam bench` of BENCH_ARCH: f32 at each of BENCH_BATCHES (conv kernels
#                   tuned, --tune fast), then at the last untuned (--tune off), f16 weights and
#                   --winograd, with the per-kernel profile against PEAK_GFLOPS
#         kernels, golden, methods   the staged parity test executables (GRADCAM_REPO = tree)
#         compare   tools/compare_throughput.py --device cuda --peers pgc,captum
#         scorecam  the same against pgc for Score-CAM, a few images
#       Logs and JSON go to a temporary folder, packed into $OUT/gpu-check.tar.gz after every
#       step; $OUT also gets summary.txt (printed at the end), steps.jsonl and the main bench and
#       comparison JSON: 6 files at most, as the device tool returns 8.
#
# Environment for `run` (all optional):
#   OUT            results (default ./gpu-check-out)
#   STEPS          comma list (default loader,adapter,wheels,bench,kernels,golden,methods,compare,scorecam)
#   BUDGET_S       seconds for every step together (default 480); a step gets what is left
#   LIMIT_SCALE    multiplies every step's own limit (default 1; for slow rehearsals)
#   GPU_CHECK_DIR  the staged folder (default .device)
#   PYTHON         the Python with torch (default python3)
#   REHEARSAL=1    a dry run on a machine without a GPU: the loader is unpacked even where the
#                  system has one, a CPU adapter (lavapipe) is accepted, and skipped steps (no
#                  torch, no CUDA) don't fail the run
#   QUICK=1        small sizes and one fixture test per executable (the rehearsal test)
#   BENCH_ARCH (resnet50), BENCH_BATCHES (16,64), BENCH_SIZE (224), BENCH_ITERS (5),
#   BENCH_WARMUP (2)
#   PEAK_GFLOPS    FP32 peak for the profile's "% peak" (default: known from the GPU's name)
#   COMPARE_MODELS (resnet18,resnet50,shapes,vgg16), COMPARE_BATCHES (16,64),
#   COMPARE_DEVICE (cuda), COMPARE_THREADS (torch threads, 8)
#   KERNELS_FILTER, GOLDEN_FILTER, METHODS_FILTER   test name filters (space-separated)
#
# A step's status in steps.jsonl: ok, failed, timed_out, skipped (it exited 77: not possible
# here, e.g. torch sees no CUDA device; a failure unless REHEARSAL=1) or not_run (the budget was
# spent, or the adapter step failed). The exit status is 0 when every step is ok (or skipped,
# in a rehearsal).

set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH=$PATH:/usr/sbin:/sbin # ldconfig, for ordinary users too
export PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1

TESTS=(kernels golden methods)
# Where NVIDIA's container toolkit puts the driver's ICD when the loader's folders lack it.
export NV_ICD=${NV_ICD:-/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json}
STAGE_LIMIT_MIB=60

usage() {
    sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

die() {
    echo "gpu-check: $*" >&2
    exit 1
}

# ---------------------------------------------------------------------------------------------
# prepare (here)

# The executables cargo builds, as "NAME PATH" lines: the CLI and the staged test targets.
cargo_executables() {
    local tests=()
    for t in "${TESTS[@]}"; do tests+=(--test "$t"); done
    {
        cargo build --release --bin gradcam --message-format=json-render-diagnostics
        cargo test --release --no-run "${tests[@]}" --message-format=json-render-diagnostics
    } | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])'
}

prepare() {
    local dest=$ROOT/.device cli="" name path
    declare -A test_exe=()
    while (($#)); do
        case $1 in
        --dest) dest=$2; shift 2 ;;
        --gradcam) cli=$2; shift 2 ;;
        --test) test_exe[${2%%=*}]=${2#*=}; shift 2 ;;
        -h | --help) usage ;;
        *) die "prepare: unknown argument $1" ;;
        esac
    done
    for name in "${!test_exe[@]}"; do
        [[ " ${TESTS[*]} " == *" $name "* ]] || die "prepare: --test $name: stages ${TESTS[*]}"
    done
    if [[ -z $cli || ${#test_exe[@]} -lt ${#TESTS[@]} ]]; then
        command -v cargo >/dev/null || die "prepare: no cargo; pass --gradcam and --test NAME=EXE"
        echo "# building with cargo (release)"
        while read -r name path; do
            if [[ $name == gradcam ]]; then
                [[ -n $cli ]] || cli=$path
            elif [[ -z ${test_exe[$name]:-} ]]; then
                test_exe[$name]=$path
            fi
        done < <(cargo_executables)
    fi
    [[ -x $cli ]] || die "prepare: no gradcam executable ($cli)"
    for name in "${TESTS[@]}"; do
        [[ -x ${test_exe[$name]:-} ]] || die "prepare: no $name test executable"
    done

    # Start from nothing, but only ever delete a folder this script made.
    if [[ -e $dest ]]; then
        [[ -f $dest/manifest.txt || -z $(ls -A "$dest") ]] ||
            die "prepare: $dest exists and was not made by prepare; give another --dest"
        rm -rf "$dest"
    fi
    mkdir -p "$dest"/{bin,tests,debs,wheels}
    dest=$(cd "$dest" && pwd)

    echo "# executables (stripped, gzipped)"
    stage_exe "$cli" "$dest/bin/gradcam"
    for name in "${TESTS[@]}"; do stage_exe "${test_exe[$name]}" "$dest/tests/$name"; done

    echo "# the Vulkan loader (apt-get download, private lists)"
    local apt
    apt=$(mktemp -d)
    mkdir -p "$apt"/lists/partial "$apt"/cache/archives/partial
    local o=(-q -oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists="$apt/lists"
        -oDir::Cache="$apt/cache" -oDebug::NoLocking=1)
    command -v apt-get >/dev/null || die "prepare: needs apt-get (Debian/Ubuntu) for libvulkan1"
    apt-get "${o[@]}" update >"$apt/update.log" 2>&1 || { cat "$apt/update.log"; die "apt-get update failed"; }
    (cd "$dest/debs" && apt-get "${o[@]}" download libvulkan1 2>&1 | { grep -v '^W: Download is performed unsandboxed' || true; }) ||
        die "apt-get download libvulkan1 failed"
    rm -rf "$apt"
    ls "$dest"/debs/libvulkan1_*.deb >/dev/null || die "no libvulkan1 .deb downloaded"

    echo "# wheels for Python 3.12 (pure Python; their dependencies are on the device)"
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        -d "$dest/wheels" ttach==0.0.3 captum==0.9.0
    # grad-cam has no wheel on PyPI: build one from its sdist.
    python3 -m pip wheel -q --no-deps -w "$dest/wheels" grad-cam==1.5.7
    local n
    n=$(find "$dest/wheels" -name '*-py3-none-any.whl' | wc -l)
    ((n == 3)) || die "expected 3 pure-Python wheels in $dest/wheels, found $n"

    {
        echo "commit $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (modified)')"
        echo "prepared $(date -u +%FT%TZ) on $(uname -n) ($(uname -m))"
        echo "gradcam $("$cli" --version 2>/dev/null || echo '?')"
        (cd "$dest" && find . -type f ! -name manifest.txt | sort | xargs du -b)
    } >"$dest/manifest.txt"
    ls -l "$dest"/bin "$dest"/tests "$dest"/debs "$dest"/wheels | grep -v '^total'

    local bytes tree
    bytes=$(du -sb "$dest" | cut -f1)
    tree=$(git ls-files -z --cached --others --exclude-standard 2>/dev/null |
        xargs -0 -r stat -c %s -- 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
    printf 'staged %s: %.1f MiB (limit %d MiB); with the tree (%.1f MiB) %.1f MiB travel (device limit 64)\n' \
        "$dest" "$(mib "$bytes")" "$STAGE_LIMIT_MIB" "$(mib "$tree")" "$(mib $((bytes + tree)))"
    if ((bytes > STAGE_LIMIT_MIB * 1048576)); then
        die "the staged folder is over ${STAGE_LIMIT_MIB} MiB: it would not travel with the tree"
    fi
}

mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

# stage_exe EXE DEST: EXE stripped and gzipped to DEST.gz (run unpacks it), so that the
# executables, the bundled model inside the CLI included, fit the staged folder's limit.
stage_exe() {
    if command -v strip >/dev/null; then
        strip -o "$2" "$1"
    else
        echo "  (no strip here: copied as is)"
        cp "$1" "$2"
    fi
    gzip -9 -n -f "$2"
    printf '  %-8s %6.1f MiB gzipped  <- %s\n' "$(basename "$2")" "$(mib "$(stat -c %s "$2.gz")")" "$1"
}

# ---------------------------------------------------------------------------------------------
# run (there)

# tools/gpu_check_summary.py (standard library only): the summary, steps.jsonl lines, one-liners.
summary_py() { python3 "$ROOT/tools/gpu_check_summary.py" "$@"; }

# note LINE: one finding for the summary.
note() { echo "$*" | tee -a "$WORK/notes.txt"; }

# export_env NAME=VALUE: for this and every later step (the parent sources env.sh).
export_env() {
    echo "export ${1%%=*}=$(printf %q "${1#*=}")" >>"$WORK/env.sh"
    export "${1?}"
}

step_loader() {
    local lib="" deb
    if [[ $REHEARSAL == 1 ]] || ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1 '; then
        [[ $REHEARSAL == 1 ]] && echo "rehearsal: unpacking the staged loader even where the system has one"
        command -v dpkg-deb >/dev/null || { echo "no dpkg-deb to unpack $STAGE/debs"; return 1; }
        mkdir -p "$RT/vk"
        for deb in "$STAGE"/debs/*.deb; do dpkg-deb -x "$deb" "$RT/vk"; done
        lib=$(find "$RT/vk" -name libvulkan.so.1 | head -n 1)
        [[ -n $lib ]] || { echo "no libvulkan.so.1 in $STAGE/debs"; return 1; }
        export_env LD_LIBRARY_PATH="$(dirname "$lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
        note "loader: private, $(cd "$STAGE/debs" && ls -- *.deb | paste -sd ' ') unpacked into the run's folder"
    else
        note "loader: system $(ldconfig -p | grep -m1 'libvulkan\.so\.1 ' | sed 's/.*=> //')"
    fi

    # The loader's own folders (the system's XDG and SYSCONF ones), wherever it was unpacked.
    local d f icds=() nv=""
    for d in /etc/vulkan/icd.d /usr/local/share/vulkan/icd.d /usr/share/vulkan/icd.d; do
        for f in "$d"/*.json; do [[ -f $f ]] && icds+=("$f"); done
    done
    echo "ICDs in the loader's folders: ${icds[*]:-none}"
    for f in "${icds[@]}"; do grep -qi nvidia "$f" && { nv=$f; break; }; done
    if [[ -n ${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-} ]]; then
        note "ICD: as set, VK_DRIVER_FILES=${VK_DRIVER_FILES:-} VK_ICD_FILENAMES=${VK_ICD_FILENAMES:-}"
    elif [[ -n $nv ]]; then
        note "ICD: $nv"
        nvidia_libs
    elif [[ -f $NV_ICD ]]; then
        note "ICD: none from NVIDIA in the loader's folders; VK_DRIVER_FILES=$NV_ICD"
        export_env VK_DRIVER_FILES=$NV_ICD
        nvidia_libs
    else
        note "ICD: none from NVIDIA; the loader's folders hold: $(for f in "${icds[@]}"; do basename "$f"; done | paste -sd ' ')"
    fi
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader |
            tee "$WORK/gpu.txt" | sed 's/^/gpu: /' | tee -a "$WORK/notes.txt" || echo "nvidia-smi failed"
    fi
}

# NVIDIA's ICD names its library (libGLX_nvidia.so.0) without a path: where ldconfig does not
# know it, the driver's own folder goes on LD_LIBRARY_PATH.
nvidia_libs() {
    ldconfig -p 2>/dev/null | grep -q libGLX_nvidia.so.0 && return 0
    local d
    for d in /usr/local/nvidia/lib64 /usr/local/nvidia/lib; do
        if [[ -e $d/libGLX_nvidia.so.0 && ":${LD_LIBRARY_PATH:-}:" != *":$d:"* ]]; then
            export_env LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$d"
            note "ICD library: $d/libGLX_nvidia.so.0 (added to LD_LIBRARY_PATH)"
            return 0
        fi
    done
}

# A one-image bench of the bundled model: the adapter wgpu picks, the loader's driver search
# (VK_LOADER_DEBUG) and the libvulkan.so.1 the dynamic linker took (LD_DEBUG). Fails unless
# the adapter is a GPU (any adapter in a rehearsal).
probe_adapter() {
    local rc=0 vk
    rm -f "$RT"/ld.*
    VK_LOADER_DEBUG=${VK_LOADER_DEBUG:-error,warn,driver} LD_DEBUG=libs LD_DEBUG_OUTPUT=$RT/ld \
        "$BIN" bench --batch 1 --iters 1 --warmup 0 --no-profile --json >"$WORK/adapter.json" || rc=$?
    vk=$(cat "$RT"/ld.* 2>/dev/null | grep -m1 'calling init: .*libvulkan' | sed 's/.*calling init: //') || true
    vk=${vk//"$RT/"/"(run's folder)/"}
    note "libvulkan in use: ${vk:-none loaded}"
    ((rc == 0)) || { echo "gradcam bench failed (rc=$rc): no usable adapter"; return 1; }
    note "$(summary_py adapter "$WORK/adapter.json")"
    if grep -q '"device_type": "Cpu"' "$WORK/adapter.json"; then
        [[ $REHEARSAL == 1 ]] && { echo "rehearsal: a CPU adapter is accepted"; return 0; }
        echo "the engine runs on a CPU adapter: no GPU reached through Vulkan (see the loader step)"
        return 1
    fi
}

step_adapter() {
    probe_adapter && return 0
    # Once more with NVIDIA's ICD named outright, as the device tool's README advises.
    [[ -z ${VK_DRIVER_FILES:-} && -f $NV_ICD ]] || return 1
    echo "again with VK_DRIVER_FILES=$NV_ICD"
    export_env VK_DRIVER_FILES=$NV_ICD
    nvidia_libs
    probe_adapter
}

step_wheels() {
    "$PYTHON" --version
    local w
    if "$PYTHON" -m pip --version >/dev/null 2>&1; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$RT/site" "$STAGE"/wheels/*.whl
    else # pure-Python wheels are zip files of the installed layout
        echo "no pip in $PYTHON: unzipping the wheels"
        for w in "$STAGE"/wheels/*.whl; do "$PYTHON" -m zipfile -e "$w" "$RT/site"; done
    fi
    export_env PYTHONPATH="$RT/site${PYTHONPATH:+:$PYTHONPATH}"
    "$PYTHON" - <<'EOF' | tee -a "$WORK/notes.txt"
import importlib, importlib.metadata as md, platform
parts = [f"python: {platform.python_version()}"]
try:
    import torch
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"
    parts.append(f"torch {torch.__version__} ({cuda})")
except ImportError:
    parts.append("torch missing")
for mod, dist in (("pytorch_grad_cam", "grad-cam"), ("captum", "captum"), ("ttach", "ttach")):
    try:
        importlib.import_module(mod)
        parts.append(f"{dist} {md.version(dist)}")
    except Exception as e:  # an import that breaks (a missing torch) reads the same
        parts.append(f"{dist} not importable ({type(e).__name__}: {e})")
print("; ".join(parts))
EOF
}

peak_gflops() {
    [[ -n ${PEAK_GFLOPS:-} ]] && { echo "$PEAK_GFLOPS"; return; }
    local name
    name=$(cat "$WORK/gpu.txt" 2>/dev/null || grep -m1 '"name"' "$WORK/adapter.json" 2>/dev/null || true)
    # Dense FP32 at boost clock, from the vendors' data sheets.
    case $name in
    *H100*PCIe*) echo 51200 ;;
    *H100*NVL* | *H200*NVL*) echo 60000 ;;
    *H100* | *H200*) echo 66900 ;;
    *A100*) echo 19500 ;;
    *L40S*) echo 91600 ;;
    *L4*) echo 30300 ;;
    esac
}

step_bench() {
    local peak args rc=0 b largest=${BENCH_BATCHES##*,}
    peak=$(peak_gflops)
    args=(--arch "$BENCH_ARCH" --random-weights --size "$BENCH_SIZE" --iters "$BENCH_ITERS"
        --warmup "$BENCH_WARMUP" --json)
    [[ -n $peak ]] && args+=(--peak-gflops "$peak")
    note "bench: $BENCH_ARCH ${BENCH_SIZE}x$BENCH_SIZE, $BENCH_ITERS iters after $BENCH_WARMUP, peak ${peak:-unknown} GFLOP/s"
    one() { # TAG BATCH FLAGS...
        local tag=$1 batch=$2 out
        shift 2
        out=$WORK/bench-$BENCH_ARCH-$tag-b$batch.json
        echo "# $tag batch $batch"
        if "$BIN" bench "${args[@]}" --batch "$batch" "$@" >"$out.tmp"; then
            mv "$out.tmp" "$out"
            summary_py bench-line "$out"
        else
            echo "bench $tag batch $batch failed"
            rm -f "$out.tmp"
            return 1
        fi
    }
    for b in ${BENCH_BATCHES//,/ }; do one f32 "$b" || rc=1; done
    one untuned "$largest" --tune off || rc=1
    one f16 "$largest" --precision f16 || rc=1
    one winograd "$largest" --winograd || rc=1
    return "$rc"
}

step_tests() {
    local name=$1 filter=$2 log=$WORK/$1-tests.txt
    # shellcheck disable=SC2086 # the filter is a list of names
    GRADCAM_REPO=$ROOT "$EXE/tests/$name" $filter 2>&1 | tee "$log"
    # A filter that matched nothing must not pass for a run.
    grep -Eq '^test result: ok\. [1-9][0-9]* passed' "$log" || { echo "no test ran"; return 1; }
}

# The importable peers among pgc and captum; exit 77 where torch is missing.
step_compare() {
    local methods=$1 peers=$2 json=$WORK/compare-$1.json rc=0
    "$PYTHON" -c 'import torch, torchvision, cv2, safetensors' 2>/dev/null || {
        echo "torch (with torchvision, opencv and safetensors) is missing from $PYTHON: no comparison"
        return 77
    }
    if [[ $peers == *captum* ]] && ! "$PYTHON" -c 'import captum.attr' 2>/dev/null; then
        echo "captum is not importable: comparing with pgc only"
        peers=pgc
    fi
    PYTHONUNBUFFERED=1 "$PYTHON" tools/compare_throughput.py --engine "$BIN" --device "$COMPARE_DEVICE" \
        --threads "$COMPARE_THREADS" --size "$COMPARE_SIZE" --peers "$peers" --methods "$methods" \
        --json "$json" "${@:3}" || rc=$?
    if [[ -f $json ]] && "$PYTHON" -c 'import matplotlib' 2>/dev/null; then
        "$PYTHON" tools/plot_throughput.py "$json" --out "$WORK/compare-$methods.png" || true
    fi
    return "$rc"
}

# step NAME LIMIT_S CMD...: runs CMD (a function) time-boxed, logs to $WORK/NAME.log, appends a
# line to steps.jsonl.
step() {
    local name=$1 limit=$2 rc=0 start end left status
    shift 2
    [[ ",$STEPS," == *",$name,"* ]] || return 0
    left=$((BUDGET_S - ($(date +%s) - T0)))
    if ((left < 5)); then
        record "$name" not_run null 0 "$limit" "budget of ${BUDGET_S}s spent"
        return 0
    fi
    if [[ " $NEEDS_GPU " == *" $name "* && $ADAPTER_OK == 0 ]]; then
        record "$name" not_run null 0 "$limit" "the adapter step failed"
        return 0
    fi
    limit=$((limit * LIMIT_SCALE))
    ((limit > left)) && limit=$left
    echo "== $name (limit ${limit}s)"
    start=$(date +%s.%N)
    timeout --kill-after=5 "$limit" bash -c 'set -euo pipefail; "$@"' "$name" "$@" \
        >"$WORK/$name.log" 2>&1 || rc=$?
    end=$(date +%s.%N)
    case $rc in
    0) status=ok ;;
    77) status=skipped ;;
    124 | 137) status=timed_out ;;
    *) status=failed ;;
    esac
    # shellcheck disable=SC1091
    [[ -f $WORK/env.sh ]] && source "$WORK/env.sh"
    record "$name" "$status" "$rc" "$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')" \
        "$limit" "$(grep -v '^\s*$' "$WORK/$name.log" | tail -n 1 | cut -c1-200)"
    tail -n 4 "$WORK/$name.log" | cut -c1-200 | sed 's/^/   /'
    echo "   -> $status"
    pack
}

# record NAME STATUS RC SECONDS LIMIT LAST_LINE
record() {
    local ok=0
    [[ $2 == ok || ($2 == skipped && $REHEARSAL == 1) ]] && ok=1
    ((ok)) || FAILED=1
    [[ $1 == adapter && $2 != ok ]] && ADAPTER_OK=0
    summary_py record "$@" >>"$WORK/steps.jsonl"
}

# Everything into $OUT/gpu-check.tar.gz (the runtime folder aside), and the key files beside it.
pack() {
    tar czf "$OUT/gpu-check.tar.gz.tmp" -C "$WORK" --exclude=./rt . && mv "$OUT/gpu-check.tar.gz.tmp" "$OUT/gpu-check.tar.gz"
    cp "$WORK/steps.jsonl" "$OUT/"
    local main=$WORK/bench-$BENCH_ARCH-f32-b${BENCH_BATCHES##*,}.json f
    for f in "$main" "$WORK/compare-gradcam.json" "$WORK/compare-gradcam.png"; do
        [[ -f $f ]] && cp "$f" "$OUT/"
    done
    return 0
}

run() {
    (($# == 0)) || usage
    STAGE=${GPU_CHECK_DIR:-$ROOT/.device}
    [[ -f $STAGE/manifest.txt ]] ||
        die "no staged folder at $STAGE: run 'tools/gpu-check.sh prepare' where cargo is, and carry .device"
    STAGE=$(cd "$STAGE" && pwd)
    OUT=${OUT:-$ROOT/gpu-check-out}
    mkdir -p "$OUT"
    OUT=$(cd "$OUT" && pwd)
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
    # Everything worth keeping is packed into $OUT.
    [[ ${GPU_CHECK_KEEP:-0} == 1 ]] || trap 'rm -rf "$WORK"' EXIT
    RT=$WORK/rt # loader, site-packages, pipeline cache: not packed
    mkdir -p "$RT"
    : >"$WORK/steps.jsonl"
    : >"$WORK/notes.txt"
    : >"$WORK/env.sh"
    # The staged executables are gzipped: unpack them into the run's folder.
    EXE=$RT/exe
    mkdir -p "$EXE"/bin "$EXE"/tests
    local gz
    for gz in "$STAGE"/bin/*.gz "$STAGE"/tests/*.gz; do
        gunzip -c "$gz" >"$EXE/$(basename "$(dirname "$gz")")/$(basename "$gz" .gz)"
    done
    chmod +x "$EXE"/bin/* "$EXE"/tests/*
    BIN=$EXE/bin/gradcam
    REHEARSAL=${REHEARSAL:-0}
    QUICK=${QUICK:-0}
    STEPS=${STEPS:-loader,adapter,wheels,bench,kernels,golden,methods,compare,scorecam}
    BUDGET_S=${BUDGET_S:-480}
    LIMIT_SCALE=${LIMIT_SCALE:-1}
    PYTHON=${PYTHON:-python3}
    local q=$QUICK
    BENCH_ARCH=${BENCH_ARCH:-$( ((q)) && echo resnet18 || echo resnet50)}
    BENCH_BATCHES=${BENCH_BATCHES:-$( ((q)) && echo 2 || echo 16,64)}
    BENCH_SIZE=${BENCH_SIZE:-$( ((q)) && echo 64 || echo 224)}
    BENCH_ITERS=${BENCH_ITERS:-$( ((q)) && echo 1 || echo 5)}
    BENCH_WARMUP=${BENCH_WARMUP:-$( ((q)) && echo 0 || echo 2)}
    COMPARE_MODELS=${COMPARE_MODELS:-$( ((q)) && echo shapes || echo resnet18,resnet50,shapes,vgg16)}
    COMPARE_BATCHES=${COMPARE_BATCHES:-$( ((q)) && echo 2 || echo 16,64)}
    COMPARE_SIZE=${COMPARE_SIZE:-$( ((q)) && echo 64 || echo 224)}
    COMPARE_DEVICE=${COMPARE_DEVICE:-cuda}
    COMPARE_THREADS=${COMPARE_THREADS:-8}
    if ((q)); then
        KERNELS_FILTER=${KERNELS_FILTER-golden_fixtures}
        GOLDEN_FILTER=${GOLDEN_FILTER-detweights_match_python_vectors all_negative_cam_is_all_zeros}
        METHODS_FILTER=${METHODS_FILTER-cam_matches_gradcam_on_gap_linear_heads}
    fi
    export GRADCAM_PIPELINE_CACHE=$RT/pipeline-cache
    if [[ -z ${XDG_RUNTIME_DIR:-} ]]; then # else Mesa's window-system code complains on every start
        export XDG_RUNTIME_DIR=$RT/xdg
        mkdir -m 700 "$XDG_RUNTIME_DIR"
    fi
    export WORK RT STAGE EXE BIN REHEARSAL PYTHON BENCH_ARCH BENCH_BATCHES BENCH_SIZE \
        BENCH_ITERS BENCH_WARMUP COMPARE_DEVICE COMPARE_THREADS COMPARE_SIZE ROOT
    export -f summary_py note export_env peak_gflops nvidia_libs probe_adapter step_loader \
        step_adapter step_wheels step_bench step_tests step_compare
    T0=$(date +%s)
    FAILED=0
    ADAPTER_OK=1
    # Steps that need the engine on a GPU: not run when the adapter step failed.
    NEEDS_GPU="bench kernels golden methods compare scorecam"
    # Keep the last 15 s for the summary.
    BUDGET_S=$((BUDGET_S - 15))

    {
        echo "run $(date -u +%FT%TZ) on $(uname -n): $(uname -srm), $(nproc) CPUs"
        cat "$STAGE/manifest.txt"
        echo "rehearsal=$REHEARSAL quick=$QUICK budget=$((BUDGET_S + 15))s"
        echo "cargo: $(command -v cargo || echo none)"
    } >"$WORK/env.txt"
    echo "gpu-check run: staged $(head -n 1 "$STAGE/manifest.txt"); work $WORK; results $OUT"

    step loader 20 step_loader
    step adapter 60 step_adapter
    step wheels 40 step_wheels
    step bench 150 step_bench
    step kernels 90 step_tests kernels "${KERNELS_FILTER:-}"
    step golden 60 step_tests golden "${GOLDEN_FILTER:-}"
    step methods 90 step_tests methods "${METHODS_FILTER:-}"
    step compare 200 step_compare gradcam pgc,captum --models "$COMPARE_MODELS" \
        --batches "$COMPARE_BATCHES" --iters "$( ((q)) && echo 1 || echo 3)" --warmup 1
    # Score-CAM: one forward per channel of the layer; Captum has no Score-CAM.
    step scorecam 60 step_compare scorecam pgc --models "$( ((q)) && echo shapes || echo resnet18,shapes)" \
        --batches 4 --slow-images "$( ((q)) && echo 1 || echo 4)" --iters 1 --warmup 1

    summary_py summary "$WORK" "$OUT" "$((BUDGET_S + 15))" >"$WORK/summary.txt" 2>&1 ||
        { echo "(the summary failed; steps.jsonl follows)"; cat "$WORK/steps.jsonl"; } >>"$WORK/summary.txt"
    cp "$WORK/summary.txt" "$OUT/"
    pack
    echo
    cat "$OUT/summary.txt"
    exit "$FAILED"
}

case ${1:-} in
prepare) shift; prepare "$@" ;;
run) shift; run "$@" ;;
*) usage ;;
esac
