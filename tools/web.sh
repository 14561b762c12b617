#!/usr/bin/env bash
# The page in web/: Grad-CAM in the browser through WebGPU (README, "In the browser").
#   tools/web.sh build         the wasm package into web/pkg/ (installs the wasm32 target and
#                              wasm-bindgen-cli, at Cargo.lock's wasm-bindgen version, if missing)
#   tools/web.sh serve [PORT]  build, then serve web/ on http://127.0.0.1:PORT/ (default 8000)
#   tools/web.sh test          build, then the browser test (headless Debian chromium, WebGPU
#                              through SwiftShader; node packages from web/package-lock.json)
#   tools/web.sh bench [N]     build, then time Grad-CAM per image (ResNet-18 at 224, batch 1 and
#                              8; medians of N rounds, default 3) of the engine against TF.js
#                              Grad-CAM (WebGPU backend, tf.grad) in one headless chromium, and
#                              the native CLI on lavapipe; writes docs/bench/web.json (README, "In
#                              the browser"). Node packages from web/bench/package-lock.json.
# CHROMIUM=/path/to/chromium picks another Chromium for the test and the bench (default
# /usr/bin/chromium). PYTHON=/path/to/python (default python3): the bench's weights need torch.
set -euo pipefail
cd "$(dirname "$0")/.."

target=wasm32-unknown-unknown

# The version Cargo.lock pins for the wasm-bindgen crate: the CLI must be the same version.
lock_version() {
    awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock
}

install_tools() {
    if ! rustup target list --installed | grep -qx "$target"; then
        echo "web.sh: installing the Rust target $target"
        rustup target add "$target"
    fi
    local want have
    want="$(lock_version)"
    [ -n "$want" ] || { echo "web.sh: no wasm-bindgen package in Cargo.lock" >&2; exit 1; }
    have="$(wasm-bindgen --version 2>/dev/null | awk '{ print $2 }' || true)"
    if [ "$have" != "$want" ]; then
        echo "web.sh: installing wasm-bindgen-cli $want (found: ${have:-none})"
        # --locked first (the CLI's own lockfile); a registry mirror that lacks one of those
        # exact versions gets the newest compatible ones instead.
        cargo install wasm-bindgen-cli --version "$want" --locked ||
            cargo install wasm-bindgen-cli --version "$want"
    fi
}

build() {
    install_tools
    cargo build --release -p gradcam-wgpu-web --target "$target"
    wasm-bindgen --target web --out-dir web/pkg --out-name gradcam_wgpu \
        "target/$target/release/gradcam_wgpu_web.wasm"
    # The example photos, where the page offers them, with the list it reads.
    rm -rf web/pkg/photos
    mkdir -p web/pkg/photos
    cp examples/photos/*.jpg web/pkg/photos/
    (cd web/pkg/photos && printf '%s\n' *.jpg |
        awk 'BEGIN { printf "[" } { printf "%s\"%s\"", (NR > 1 ? "," : ""), $0 } END { print "]" }' \
            >index.json)
    echo "web.sh: built web/pkg/ ($(du -sh web/pkg | cut -f1))"
}

serve() {
    local port="${1:-8000}"
    build
    echo "web.sh: serving web/ on http://127.0.0.1:$port/ (Ctrl-C stops)"
    # http.server with the MIME types set explicitly (instantiateStreaming needs
    # application/wasm; module scripts need a JavaScript type), and no-cache so that a rebuild
    # shows on reload (the page's service worker keeps it working offline).
    exec python3 - "$port" <<'EOF'
import http.server, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".wasm": "application/wasm", ".js": "text/javascript",
                      ".mjs": "text/javascript", ".json": "application/json",
                      ".css": "text/css", ".html": "text/html; charset=utf-8"}
    def end_headers(self):
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()
def handler(*args, **kwargs):
    return Handler(*args, directory="web", **kwargs)
try:
    http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), handler).serve_forever()
except KeyboardInterrupt:
    pass
EOF
}

browser_test() {
    build
    # The native CLI the test compares with (up to date: a no-op after `cargo test --release`).
    cargo build --release --bin gradcam
    command -v node >/dev/null || { echo "web.sh: the test needs node and npm" >&2; exit 1; }
    [ -d web/node_modules/playwright-core ] || (cd web && npm ci --no-audit --no-fund)
    (cd web && node --test tests/browser.test.mjs)
}

# A torchvision ResNet-18 state dict with tools/detweights.py weights (seed 0), saved with
# safetensors: the engine and the TF.js ResNet-18 in web/bench/bench.js both load it. 45 MB, made
# once into target/ (never committed).
bench_weights() {
    local file=target/web-bench/resnet18-seed0.safetensors
    if [ ! -s "$file" ]; then
        mkdir -p "$(dirname "$file")"
        "${PYTHON:-python3}" - "$file" <<'EOF' >&2
import sys
sys.path.insert(0, "tools")
import make_fixtures as mf
from safetensors.torch import save_file
model = mf.build("resnet18", 1000, 0)
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, sys.argv[1])
EOF
    fi
    echo "$file"
}

bench() {
    local rounds="${1:-3}"
    build
    cargo build --release --bin gradcam
    command -v node >/dev/null || { echo "web.sh: the bench needs node and npm" >&2; exit 1; }
    [ -d web/node_modules/playwright-core ] || (cd web && npm ci --no-audit --no-fund)
    [ -d web/bench/node_modules/@tensorflow/tfjs-backend-webgpu ] ||
        (cd web/bench && npm ci --no-audit --no-fund)
    local weights
    weights="$(bench_weights)"
    node web/bench/run.mjs "$weights" --rounds "$rounds" --json docs/bench/web.json
}

case "${1:-}" in
build) build ;;
serve) serve "${2:-8000}" ;;
test) browser_test ;;
bench) bench "${2:-3}" ;;
*)
    echo "usage: tools/web.sh build | serve [PORT] | test | bench [ROUNDS]" >&2
    exit 2
    ;;
esac
