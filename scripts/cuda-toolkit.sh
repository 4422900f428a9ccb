#!/usr/bin/env bash
# Installs the CUDA 13.0 build toolkit for candle's `cuda` feature from PyPI wheels only (no
# system CUDA, no GPU), every wheel sha256-checked, into $STYLIZE_CUDA_DIR (default
# models/cuda), and bridges what the wheels leave out for a build:
#   1. unversioned linker names (libcublas.so, libcudart.so, ...);
#   2. a libcuda.so stub (soname libcuda.so.1) exporting the driver API names cudarc declares;
#      the real library comes with the NVIDIA driver on GPU nodes;
#   3. one CUDA_HOME holding bin/, include/, lib/ and nvvm/.
# Prints `export` lines for the build (eval them); progress goes to stderr.
# Usage: scripts/cuda-toolkit.sh [--cudnn]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${STYLIZE_CUDA_DIR:-$root/models/cuda}"
cudnn=0
case "${1:-}" in
  --cudnn) cudnn=1 ;;
  "") ;;
  *) echo "usage: $0 [--cudnn]" >&2; exit 2 ;;
esac
python="${PYTHON:-python3}"
site="$dest/site"
home="$site/nvidia/cu13"

install() { # requirements file, marker
  if [[ ! -f "$dest/$2" ]]; then
    echo "cuda-toolkit: installing $(basename "$1") into $site" >&2
    "$python" -m pip install --quiet --disable-pip-version-check --no-deps \
      --only-binary=:all: --require-hashes --upgrade --target "$site" -r "$1" >&2
    touch "$dest/$2"
  fi
}
mkdir -p "$dest"
install "$root/scripts/cuda-wheels.txt" .toolkit-installed
[[ $cudnn == 1 ]] && install "$root/scripts/cudnn-wheels.txt" .cudnn-installed

[[ -x "$home/bin/nvcc" ]] || { echo "cuda-toolkit: $home/bin/nvcc missing after install" >&2; exit 1; }

# 1. Unversioned names for the linker.
link_unversioned() { # dir name
  local versioned
  versioned="$(ls "$1/lib$2.so."* 2>/dev/null | sort | head -n 1 || true)"
  [[ -n "$versioned" ]] || { echo "cuda-toolkit: no lib$2.so.* in $1" >&2; exit 1; }
  ln -sf "$(basename "$versioned")" "$1/lib$2.so"
}
for name in cublas cublasLt cudart curand nvrtc; do link_unversioned "$home/lib" "$name"; done
if [[ $cudnn == 1 ]]; then
  cudnn_dir="$site/nvidia/cudnn"
  for f in "$cudnn_dir"/lib/libcudnn*.so.*; do ln -sf "$f" "$home/lib/$(basename "$f")"; done
  for f in "$cudnn_dir"/include/*.h; do ln -sf "$f" "$home/include/$(basename "$f")"; done
  link_unversioned "$home/lib" cudnn
fi

# 2. The driver stub, built from the names cudarc's bindings declare.
stub="$home/lib/stubs/libcuda.so"
if [[ ! -f "$stub" ]]; then
  cudarc="$(cd "$root" && cargo metadata --format-version 1 --features cuda 2>/dev/null \
    | "$python" -c 'import json,sys; print(next(p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"]=="cudarc"))')"
  bindings="$(dirname "$cudarc")/src/driver/sys"
  mkdir -p "$(dirname "$stub")"
  # The extern declarations inside cudarc's wrappers carry the symbol names.
  grep -rhoE '^\s*fn cu[A-Za-z0-9_]+\(' "$bindings" | grep -oE 'cu[A-Za-z0-9_]+' | sort -u \
    | awk '{print "void " $1 "(void) {}"}' > "$dest/libcuda_stub.c"
  if [[ ! -s "$dest/libcuda_stub.c" ]]; then
    echo "cuda-toolkit: found no driver functions in $bindings" >&2
    exit 1
  fi
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stub" "$dest/libcuda_stub.c"
  ln -sf libcuda.so "$(dirname "$stub")/libcuda.so.1"
  echo "cuda-toolkit: libcuda stub with $(wc -l < "$dest/libcuda_stub.c") symbols" >&2
fi

cat <<ENV
export CUDA_HOME="$home" CUDA_PATH="$home" CUDA_ROOT="$home"
export PATH="$home/bin:\$PATH"
export CUDA_COMPUTE_CAP="\${CUDA_COMPUTE_CAP:-90}"
export CUDARC_CUDA_VERSION=13000
export LIBRARY_PATH="$home/lib:$home/lib/stubs\${LIBRARY_PATH:+:\$LIBRARY_PATH}"
ENV
