#!/usr/bin/env bash
# The spread of every quantity a test bounds (tests/common `measured`), with ONNX Runtime's
# intra-op threads and rayon's pool (candle's CPU kernels use it too) at 1 and at 2, as
# one- and two-core machines run them, each count `--runs` times. Prints each quantity's
# range per thread count; a test's bound belongs outside it, with the range in a comment.
#
#   scripts/spreads.sh [--runs N] [cargo test arguments, e.g. --test sequence]
#
# Exits non-zero when any test failed at either count (every binary runs regardless).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=1
if [[ "${1:-}" == "--runs" ]]; then
  runs="$2"
  shift 2
fi
out="target/spreads"
mkdir -p "$out"
rm -f "$out"/threads-*.tsv
status=0
for threads in 1 2; do
  for run in $(seq "$runs"); do
    echo "==> threads $threads, run $run: cargo test --release --features test-hooks --no-fail-fast $*" >&2
    STYLIZE_SPREADS="$PWD/$out/threads-$threads.tsv" RAYON_NUM_THREADS="$threads" \
      STYLIZE_ORT_THREADS="$threads" cargo test --release --features test-hooks --no-fail-fast "$@" || status=1
  done
done
python3 - "$out" <<'PY'
import collections, pathlib, sys
table = collections.defaultdict(dict)
for path in sorted(pathlib.Path(sys.argv[1]).glob("threads-*.tsv")):
    threads = path.stem.split("-")[1]
    for line in path.read_text().splitlines():
        key, value = line.split("\t")
        table[key].setdefault(threads, []).append(float(value))
def span(values):
    if not values:
        return "-"
    lo, hi = min(values), max(values)
    return f"{lo:.4g}" if lo == hi else f"{lo:.4g} .. {hi:.4g}"
width = max((len(k) for k in table), default=8)
print(f"{'quantity':<{width}}  {'1 thread':<24}  {'2 threads':<24}  n")
for key in sorted(table):
    by = table[key]
    n = sum(len(v) for v in by.values())
    print(f"{key:<{width}}  {span(by.get('1', [])):<24}  {span(by.get('2', [])):<24}  {n}")
PY
exit "$status"
