#!/usr/bin/env bash
# Builds stylize with candle's CUDA path on a machine without a GPU or a system CUDA install:
# fetches the toolkit from PyPI (scripts/cuda-toolkit.sh), then
# `cargo build --release --features cuda` (or `cuda,cudnn`) into target/cuda, so the CPU
# build's cache stays as it is. The binary needs the NVIDIA driver to start (it links
# libcuda.so.1) and the CUDA 13 libraries on LD_LIBRARY_PATH; see scripts/gpu-check.sh.
# Usage: scripts/build-cuda.sh [--cudnn] [extra cargo arguments]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
features=cuda
toolkit_args=()
if [[ "${1:-}" == "--cudnn" ]]; then
  features=cuda,cudnn
  toolkit_args=(--cudnn)
  shift
fi
eval "$("$root/scripts/cuda-toolkit.sh" "${toolkit_args[@]}")"
cd "$root"
cargo build --release --features "$features" --target-dir target/cuda "$@"
echo "built target/cuda/release/stylize with --features $features (sm_${CUDA_COMPUTE_CAP})" >&2
