#!/usr/bin/env bash
# The GPU check, run from an unpacked dist/stylize-gpu-check.tar.xz (scripts/gpu-bundle.sh) on
# an NVIDIA node: x86-64, driver 580 (CUDA 13), PyTorch with CUDA 13 in `python3` (its
# nvidia-* wheels supply libcudart/libcublas/libcurand), no internet, no Rust.
#   1. every fixture case with candle on the GPU (the fixture test, STYLIZE_TEST_DEVICE), and
#      ONNX Runtime's features on its CUDA provider when python3 has onnxruntime-gpu 1.31
#      (the bundle cannot carry its 280 MB provider library); else on the bundled CPU library;
#   2. a full step at 512² and 1024²: stylize (candle on CUDA) and the identical PyTorch step on
#      the same GPU, alternating, with the ratios; peak GPU memory of each process from
#      nvidia-smi, and PyTorch's allocator peak.
# Usage: ./gpu-check.sh [cuda:N]   (PYTHON overrides python3)
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
device="${1:-cuda:0}"
python="${PYTHON:-python3}"
status=0

libs="$("$python" - <<'PY'
import os
try:
    import nvidia
except ImportError:
    raise SystemExit("")
dirs = set()
for root in nvidia.__path__:
    for d, _, files in os.walk(root):
        if any(f.startswith(("libcudart.so.13", "libcublas.so.13", "libcurand.so.10", "libcudnn.so.9", "libnvrtc.so.13")) for f in files):
            dirs.add(d)
print(":".join(sorted(dirs)))
PY
)"
if [[ -z "$libs" ]]; then
  echo "gpu-check: no CUDA 13 libraries under python3's nvidia packages (PyTorch with CUDA 13 needed)" >&2
  exit 1
fi
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export STYLIZE_MODELS_DIR="$here/models"
ort_gpu="$("$python" - <<'PY'
import glob, os
try:
    import onnxruntime
except ImportError:
    raise SystemExit("")
capi = os.path.join(os.path.dirname(onnxruntime.__file__), "capi")
if os.path.exists(os.path.join(capi, "libonnxruntime_providers_cuda.so")):
    print(next(iter(sorted(glob.glob(os.path.join(capi, "libonnxruntime.so.1.3[1-9]*")))), ""))
PY
)"
if [[ -n "$ort_gpu" ]]; then
  echo "ONNX Runtime with the CUDA provider: $ort_gpu"
  export ORT_DYLIB_PATH="$ort_gpu"
else
  echo "no onnxruntime-gpu >= 1.31 in $python: ONNX Runtime runs on the bundled CPU library"
  export ORT_DYLIB_PATH="$(ls "$here"/models/libs/libonnxruntime.so.* | head -n 1)"
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
"$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
missing="$(ldd "$here/bin/stylize" | grep "not found" || true)"
if [[ -n "$missing" ]]; then
  echo "gpu-check: unresolved libraries:" >&2
  echo "$missing" >&2
  exit 1
fi

echo "== 1. fixture cases on $device"
if ! STYLIZE_TEST_DEVICE="$device" STYLIZE_FIXTURES="$here/fixtures" \
    timeout 900 "$here/bin/fixtures" --nocapture --test-threads 1; then
  echo "gpu-check: FIXTURES FAILED" >&2
  status=1
fi
if ! STYLIZE_TEST_DEVICE="$device" timeout 300 "$here/bin/ort_engine" --nocapture a_cuda_precompute; then
  echo "gpu-check: ONNX RUNTIME PROVIDER CHECK FAILED" >&2
  status=1
fi

echo "== 2. step timing on $device, stylize vs PyTorch"
samples="$(mktemp)"
nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader,nounits \
  -lms 200 > "$samples" 2>/dev/null &
sampler=$!
if ! STYLIZE_PYTHON="$python" timeout 900 "$here/bin/stylize" bench --device "$device" \
    --sizes 512,1024 --rounds 2 --repeats 5 --compare-torch; then
  echo "gpu-check: BENCH FAILED" >&2
  status=1
fi
kill "$sampler" 2>/dev/null
wait "$sampler" 2>/dev/null
echo "peak GPU memory per process (nvidia-smi, MiB):"
awk -F', *' '{ if ($3 + 0 > peak[$2]) peak[$2] = $3 + 0 } END { for (p in peak) printf "  %-40s %8d\n", p, peak[p] }' "$samples"
rm -f "$samples"
exit $status
