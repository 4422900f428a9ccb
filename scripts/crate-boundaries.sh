#!/usr/bin/env bash
# The core knows no transport, and the fuzz targets link the core only: neither dependency
# tree may hold tonic, prost, redis, tokio or metrics-exporter-prometheus (docs/layout.md).
set -euo pipefail
cd "$(dirname "$0")/.."
forbidden='^(tonic|tonic-[a-z-]+|prost|prost-[a-z-]+|redis|tokio|tokio-[a-z-]+|metrics-exporter-prometheus) '
status=0
for tree in "-p stylize-core" "--manifest-path fuzz/Cargo.toml"; do
  # shellcheck disable=SC2086
  found="$(cargo tree $tree -e normal,build --prefix none | grep -E "$forbidden" | sort -u || true)"
  if [[ -n "$found" ]]; then
    echo "crate-boundaries: cargo tree $tree holds:" >&2
    echo "$found" >&2
    status=1
  fi
done
exit "$status"
