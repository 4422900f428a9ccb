#!/usr/bin/env bash
# Fuzzes the untrusted-input parsers (fuzz/: image decoding with the limits, a shot frame's
# masks, OpenEXR motion and .flo files sized against the frame, StylizeRequest
# decoding and validation, the pickle and safetensors weights readers) for a fixed number of
# executions each, with AddressSanitizer, and prints how many each reached with no crash.
# Runs outside CI (it needs the nightly toolchain and cargo-fuzz, installed from crates.io
# when missing). Crashes land in fuzz/artifacts/<target>/; make each a regression test.
# Usage: scripts/fuzz.sh [target ...]   (STYLIZE_FUZZ_RUNS overrides the 1,000,000 runs)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
runs="${STYLIZE_FUZZ_RUNS:-1000000}"
targets=("$@")
if (( ${#targets[@]} == 0 )); then
  targets=(decode_image sequence_inputs render_options weights_pickle weights_safetensors)
fi
if ! rustup toolchain list | grep -q '^nightly'; then
  echo "fuzz: cargo fuzz needs a nightly toolchain (rustup toolchain install nightly)" >&2
  exit 1
fi
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz

cd "$root"
cargo run --quiet --release --example fuzz_seeds -- fuzz/corpus models
summary="$(mktemp)"
trap 'rm -f "$summary"' EXIT
status=0
for target in "${targets[@]}"; do
  case "$target" in
    weights_pickle) max_len=65536 ;;
    *) max_len=8192 ;;
  esac
  log="fuzz/logs/$target.log"
  mkdir -p fuzz/logs
  echo "== $target: $runs runs"
  # -rss_limit_mb: a reader that believes a declared size and allocates it is a finding.
  if (cd fuzz && cargo +nightly fuzz run "$target" -- -runs="$runs" -max_len="$max_len" \
      -rss_limit_mb=2048 -timeout=10 -print_final_stats=1) > "$log" 2>&1; then
    done_line="$(grep -E '^Done [0-9]+ runs' "$log" | tail -n 1)"
    execs="$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' | tail -n 1)"
    echo "$target: ${execs:-?} executions, 0 crashes ($done_line)" | tee -a "$summary"
  else
    echo "$target: CRASH or failure, see $log and fuzz/artifacts/$target/" | tee -a "$summary"
    tail -n 30 "$log" >&2
    status=1
  fi
done
echo "== summary"
cat "$summary"
exit $status
