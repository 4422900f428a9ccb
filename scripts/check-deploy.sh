#!/usr/bin/env bash
# Validates deploy/ offline: Kubernetes schemas (kubernetes-validate, hash-pinned from PyPI into
# models/deploy-venv), promtool on the alert rules and their tests, the dashboard JSON, the
# Envoy and Istio routing, the Dockerfiles' shape. See deploy/check.py.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/models/deploy-venv"
if [[ ! -x "$venv/bin/kubernetes-validate" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --require-hashes \
    --only-binary=:all: -r "$root/deploy/requirements.txt"
fi
exec "$venv/bin/python" "$root/deploy/check.py" --kubernetes-validate "$venv/bin/kubernetes-validate"
