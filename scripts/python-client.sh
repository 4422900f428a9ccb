#!/usr/bin/env bash
# The Python client's tests against a live server: `pip install ./clients/python[test]` into a
# virtual environment under models/tools/pyclient (its gRPC stubs generated from the proto as it
# builds), then pytest, which starts target/release/stylize (built by `cargo test --release`).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=models/tools/pyclient
if [[ ! -x $venv/bin/python ]]; then
  if ! python3 -m venv "$venv" 2>/dev/null; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
      rm -rf "$venv"
      apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
      python3 -m venv "$venv"
    else
      echo "scripts/python-client.sh: python3 -m venv failed (sudo apt-get install python3-venv)" >&2
      exit 1
    fi
  fi
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check "./clients/python[test]"
rm -rf clients/python/build
STYLIZE_BIN="$PWD/target/release/stylize" STYLIZE_MODELS_DIR="$PWD/models" \
  "$venv/bin/python" -m pytest -q clients/python/tests
