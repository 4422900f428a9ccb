#!/usr/bin/env bash
# The Python client (clients/python) as a farm installs it, tested against a live server:
#   1. an sdist is built from the checkout (the proto copied into it), and a wheel from that
#      sdist alone, in an isolated build (no checkout);
#   2. the wheel goes into a fresh virtual environment at the dependency floors the generated
#      code allows (grpcio and protobuf as pyproject.toml names them), the sdist into another
#      at the newest releases;
#   3. pytest runs the client's tests in each, from a copy outside the repository, so only the
#      installed package is importable. The server is target/release/stylize (built by
#      `cargo test --release`).
set -euo pipefail
cd "$(dirname "$0")/.."
tools=models/tools/pybuild
venv_ok() { python3 -m venv "$1" 2>/dev/null; }
if ! venv_ok "$(mktemp -d)/probe"; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  else
    echo "scripts/python-client.sh: python3 -m venv failed (sudo apt-get install python3-venv)" >&2
    exit 1
  fi
fi
if [[ ! -x $tools/bin/pyproject-build ]]; then
  rm -rf "$tools"
  python3 -m venv "$tools"
  "$tools/bin/python" -m pip install --quiet --disable-pip-version-check build==1.2.2.post1
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
pip_quiet=(--quiet --disable-pip-version-check)
"$tools/bin/pyproject-build" --sdist --outdir "$work/dist" clients/python >/dev/null
rm -rf clients/python/build
sdist="$(ls "$work"/dist/stylize_client-*.tar.gz)"
grep -q "proto/stylize/v1/stylize.proto" <<<"$(tar -tzf "$sdist")" \
  || { echo "python-client.sh: the sdist lacks the proto" >&2; exit 1; }
# The wheel from the sdist alone (pip unpacks and builds it in isolation, away from the repo).
"$tools/bin/python" -m pip wheel "${pip_quiet[@]}" --no-deps --wheel-dir "$work/dist" "$sdist"
wheel="$(ls "$work"/dist/stylize_client-*.whl)"
grep -q "stylize_client/stylize/v1/stylize_pb2_grpc.py" <<<"$("$tools/bin/python" -m zipfile -l "$wheel")" \
  || { echo "python-client.sh: the wheel lacks the generated stubs" >&2; exit 1; }

floors="$(sed -n 's/^dependencies = \["grpcio>=\([0-9.]*\)", "protobuf>=\([0-9.]*\)"\]/grpcio==\1 protobuf==\2/p' \
  clients/python/pyproject.toml)"
[[ -n $floors ]] || { echo "python-client.sh: no floors found in pyproject.toml" >&2; exit 1; }
cp -r clients/python/tests "$work/tests"
export STYLIZE_REPO="$PWD" STYLIZE_BIN="$PWD/target/release/stylize" STYLIZE_MODELS_DIR="$PWD/models"
run_tests() {
  local venv="$1" label="$2"
  (cd "$work" && "$venv/bin/python" -c 'import stylize_client, sys; assert "site-packages" in stylize_client.__file__, stylize_client.__file__')
  echo "==> the Python client's tests, $label" >&2
  (cd "$work" && "$venv/bin/python" -m pytest -q -p no:cacheprovider tests)
}
# shellcheck disable=SC2086 # $floors is two requirement words
python3 -m venv "$work/floor" && "$work/floor/bin/python" -m pip install "${pip_quiet[@]}" "$wheel" $floors pytest
run_tests "$work/floor" "wheel at the floors ($floors)"
python3 -m venv "$work/newest" && "$work/newest/bin/python" -m pip install "${pip_quiet[@]}" "$sdist" pytest
run_tests "$work/newest" "sdist at the newest releases ($("$work/newest/bin/python" -m pip list 2>/dev/null | grep -E '^(grpcio|protobuf) ' | tr -s ' ' | tr '\n' ' '))"
