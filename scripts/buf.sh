#!/usr/bin/env bash
# The gRPC contract's own checks, with buf from npm (@bufbuild/buf, pinned with its sha512 in
# scripts/buf/package-lock.json, installed by `npm ci` into models/tools/buf):
#   scripts/buf.sh          STANDARD lint (proto/buf.yaml; the vendored ONNX subset excluded),
#                           and `buf breaking` against the contract as last released
#                           (proto/released/stylize-v1.json)
#   scripts/buf.sh release  records the current contract as the released one (when cutting a
#                           release; a deliberate break is recorded the same way, with a note)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v npm >/dev/null 2>&1; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends npm >/dev/null
  else
    echo "scripts/buf.sh: buf comes from npm, which is missing (sudo apt-get install npm)" >&2
    exit 1
  fi
fi
tools=models/tools/buf
if ! cmp -s scripts/buf/package-lock.json "$tools/package-lock.json" \
  || [[ ! -x $tools/node_modules/.bin/buf ]]; then
  rm -rf "$tools" && mkdir -p "$tools"
  cp scripts/buf/package.json scripts/buf/package-lock.json "$tools/"
  (cd "$tools" && npm ci --silent --no-audit --no-fund)
fi
buf="$PWD/$tools/node_modules/.bin/buf"
cd proto
case "${1:-check}" in
  check)
    "$buf" lint
    "$buf" breaking --against released/stylize-v1.json
    ;;
  release)
    "$buf" build --exclude-source-info -o released/stylize-v1.json
    ;;
  *)
    echo "usage: scripts/buf.sh [check|release]" >&2
    exit 2
    ;;
esac
