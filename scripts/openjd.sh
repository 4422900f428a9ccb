#!/usr/bin/env bash
# The Open Job Description templates (integrations/openjd) checked and run for real, with
# openjd-cli from PyPI (integrations/openjd/requirements.txt, pinned) in models/tools/openjd:
#   1. `openjd check` validates both templates;
#   2. `openjd run` runs the shot template against a live `stylize serve` on loopback, on the
#      shared Blender shot (16 frames in chunks of 4): the first chunk alone, then the second
#      with its client killed (kill -9) mid-chunk, then the whole step again, which skips the
#      first chunk, resumes the second after its last frame written and renders the rest;
#      every frame must then be there once, whole, named by its number;
#   3. the many-shots template renders two short shots, one task each;
#   4. the parallel template renders 12 frames of the shared shot as 3 chunks: the middle
#      frame and the far keyframe's still, the other chunks' keyframes (the far one from its
#      still), then every chunk (one backward, one pulled).
# Needs target/release/stylize (built by `cargo test --release`) and the models it fetches.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=models/tools/openjd
requirements=integrations/openjd/requirements.txt
if ! cmp -s "$requirements" "$venv/requirements.txt"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  cp "$requirements" "$venv/requirements.txt"
fi
openjd="$PWD/$venv/bin/openjd"
for template in integrations/openjd/*.yaml; do
  "$openjd" check "$template"
done

bin="$PWD/target/release/stylize"
shot="$(cd ../shared/sequences/rolling-ball && pwd)"
work="$(mktemp -d)"
server_pid=""
cleanup() {
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
STYLIZE_MODELS_DIR="${STYLIZE_MODELS_DIR:-$PWD/models}" RUST_LOG=stylize=warn \
  "$bin" serve --listen 127.0.0.1:0 --no-metrics --workers 1 >"$work/server.out" 2>"$work/server.log" &
server_pid=$!
for _ in $(seq 1 600); do
  grep -q "^listening on " "$work/server.out" && break
  sleep 0.1
done
address="$(sed -n 's/^listening on //p' "$work/server.out")"
[[ -n $address ]] || { cat "$work/server.log" >&2; echo "openjd.sh: the server did not start" >&2; exit 1; }

out="$work/out/styled_####.png"
params=(
  -p "Frames=$shot/frame_%04d.exr" -p FrameRange=1-16 -p ChunkSize=4
  -p "OutputPattern=$out" -p "StyleFile=$PWD/assets/starry_night.jpg"
  -p Quality=draft -p Size=128 -p "Server=http://$address" -p "StylizeCommand=$bin"
)
template=integrations/openjd/stylize-shot.yaml
frame() { printf '%s/out/styled_%04d.png' "$work" "$1"; }

echo "==> openjd run: register the style, then chunk 1-4" >&2
"$openjd" run "$template" "${params[@]}" --step Shot --run-dependencies \
  --tasks '[{"Frames": "1-4"}]' >"$work/first.log" 2>&1 || { cat "$work/first.log"; exit 1; }
grep -q "openjd_progress: " "$work/first.log" || { cat "$work/first.log"; exit 1; }

echo "==> openjd run: chunk 5-8, its client killed once frame 6 is written" >&2
"$openjd" run "$template" "${params[@]}" --step Shot --no-run-dependencies \
  --tasks '[{"Frames": "5-8"}]' >"$work/killed.log" 2>&1 &
run_pid=$!
for _ in $(seq 1 3000); do
  [[ -e "$(frame 6)" ]] && break
  sleep 0.02
done
# The chunk's client, found by its request id (what a worker dying mid-task does to it).
for cmdline in /proc/[0-9]*/cmdline; do
  if [[ "$(tr '\0' ' ' <"$cmdline" 2>/dev/null)" == *"--request-id chunk-5-8"* ]]; then
    pid="${cmdline#/proc/}"
    kill -9 "${pid%/cmdline}" 2>/dev/null || true
  fi
done
wait "$run_pid" && { echo "openjd.sh: the killed chunk reported success" >&2; exit 1; }
[[ -e "$(frame 6)" ]] || { cat "$work/killed.log"; echo "openjd.sh: frame 6 never came" >&2; exit 1; }
if [[ -e "$(frame 8)" ]]; then
  echo "openjd.sh: chunk 5-8 finished before it was killed; nothing was rerun" >&2
  exit 1
fi

echo "==> openjd run: the whole step again" >&2
"$openjd" run "$template" "${params[@]}" --step Shot --no-run-dependencies \
  >"$work/rerun.log" 2>&1 || { cat "$work/rerun.log"; exit 1; }
grep -q "every frame of .* is written already" "$work/rerun.log" || { cat "$work/rerun.log"; exit 1; }
grep -q "continuing the chain from .*styled_0006.png" "$work/rerun.log" || { cat "$work/rerun.log"; exit 1; }
for t in $(seq 1 16); do
  file="$(frame "$t")"
  [[ -s $file ]] || { echo "openjd.sh: frame $t is missing: $file" >&2; exit 1; }
done
written="$(find "$work/out" -name 'styled_*' | wc -l)"
[[ $written == 16 ]] || { ls "$work/out" >&2; echo "openjd.sh: $written files for 16 frames" >&2; exit 1; }
if find "$work/out" -name '*partial*' | grep -q .; then
  echo "openjd.sh: a partial file was left" >&2
  exit 1
fi
# Each frame was written exactly once across the runs (none doubled by the rerun).
for t in $(seq 1 16); do
  count="$(cat "$work"/first.log "$work"/killed.log "$work"/rerun.log | grep -c "frame $t: wrote")"
  [[ $count == 1 ]] || { echo "openjd.sh: frame $t written $count times" >&2; exit 1; }
done

echo "==> openjd run: two shots, one task each" >&2
list="$work/shots.txt"
printf '%s %s %s\n' "$shot/frame_####.exr" "$work/a/a_####.png" 1-3 \
  "$shot/frame_\$F4.exr" "$work/b/b_####.png" 1-4 >"$list"
"$openjd" run integrations/openjd/stylize-shots.yaml -p "ShotList=$list" -p ShotCount=2 \
  -p "StyleFile=$PWD/assets/starry_night.jpg" -p Quality=draft -p Size=64 \
  -p "Server=http://$address" -p "StylizeCommand=$bin" >"$work/shots.log" 2>&1 \
  || { cat "$work/shots.log"; exit 1; }
for file in a/a_0001.png a/a_0003.png b/b_0001.png b/b_0004.png; do
  [[ -s $work/$file ]] || { cat "$work/shots.log"; echo "openjd.sh: $file is missing" >&2; exit 1; }
done
echo "==> openjd run: one shot as parallel chunks (drafts, keyframes, chunks)" >&2
"$openjd" run integrations/openjd/stylize-shot-parallel.yaml \
  -p "Frames=$shot/frame_%04d.exr" -p FrameRange=1-12 -p ChunkSize=4 \
  -p "OutputPattern=$work/par/p_####.png" -p "StyleFile=$PWD/assets/starry_night.jpg" \
  -p Quality=draft -p Size=64 -p "Server=http://$address" -p "StylizeCommand=$bin" \
  --step Chunks --run-dependencies >"$work/par.log" 2>&1 || { cat "$work/par.log"; exit 1; }
for t in $(seq 1 12); do
  [[ -s $(printf '%s/par/p_%04d.png' "$work" "$t") ]] \
    || { cat "$work/par.log"; echo "openjd.sh: parallel frame $t is missing" >&2; exit 1; }
done
# 3 chunks of 4: the middle frame 5's draft started the chain, and keyframe 9's still was
# drafted beside it; the keyframes 4 and 9 and frame 5 itself continued from frame 5's draft
# (9 from its still where frame 5 never showed it); frames 3-1 ran backward from 4, 6-8 from
# 5 pulled toward 9, and 10-12 from 9.
for t in 5 9; do
  [[ -s $work/par/.stylize-drafts/p_000$t.png ]] \
    || { cat "$work/par.log"; echo "openjd.sh: frame $t's draft is missing" >&2; exit 1; }
done
for line in "continuing the chain from .*stylize-drafts/p_0005.png" \
  "continuing the chain from .*par/p_0005.png" "continuing the chain from .*par/p_0004.png" \
  "keyframe 9 starts from its own still where frame 5 never showed it" \
  "pulling frames 6-8 toward frame 9" "continuing the chain from .*p_0009.png" \
  "frame 1: wrote" "frame 12: wrote"; do
  grep -q "$line" "$work/par.log" || { cat "$work/par.log"; echo "openjd.sh: no \"$line\"" >&2; exit 1; }
done
echo "openjd.sh: the templates check; the shot ran in chunks, a killed chunk was rerun and completed; a shot ran as parallel chunks" >&2
