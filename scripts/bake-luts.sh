#!/usr/bin/env bash
# Bakes a studio view as stylize reads it, with OpenColorIO's own `ociobakelut` (the PyPI
# `opencolorio` wheel, pinned, in models/tools/ocio) from its built-in ACES config
# (`ocio://default`), into models/luts/:
#   aces-sdr-view.cube      ACEScg (scene-linear) to the sRGB display through the ACES 2.0 SDR
#                           view: a 1D shaper over ACEScct (covering light up to 222) and a
#                           33³ lattice (resolve_cube)
#   aces-sdr-inverse.cube   its inverse, as OpenColorIO inverts the view LUT (a 65³ lattice)
# and writes OpenColorIO's application of them (ociochecklut) to probe colours, for the tests
# to compare against: probes.txt, one `scene RGB | view RGB | inverse of the view RGB` a line.
# Run by tests/colour_luts.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=models/tools/ocio
out=models/luts
version=2.6.0
if [[ ! -x $tools/bin/ociobakelut ]] || ! grep -qx "$version" "$tools/version" 2>/dev/null; then
  rm -rf "$tools"
  if ! python3 -m venv "$tools" 2>/dev/null; then
    if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
      rm -rf "$tools"
      apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
      python3 -m venv "$tools"
    else
      echo "scripts/bake-luts.sh: python3 -m venv failed (sudo apt-get install python3-venv)" >&2
      exit 1
    fi
  fi
  "$tools/bin/python" -m pip install --quiet --disable-pip-version-check "opencolorio==$version"
  echo "$version" >"$tools/version"
fi
mkdir -p "$out"
bake() { "$tools/bin/ociobakelut" --iconfig ocio://default --format resolve_cube "$@"; }
bake --inputspace ACEScg --shaperspace ACEScct --shapersize 4096 --cubesize 33 \
  --displayview "sRGB - Display" "ACES 2.0 - SDR 100 nits (Rec.709)" "$out/aces-sdr-view.cube"
"$tools/bin/ociobakelut" --invlut "$out/aces-sdr-view.cube" --format resolve_cube --cubesize 65 \
  "$out/aces-sdr-inverse.cube"
: >"$out/probes.partial"
for rgb in "0.18 0.18 0.18" "1 0.5 0.25" "4 2 1" "0.02 0.3 0.9" "0.5 0.5 0.5" "0.9 0.1 0.4" "20 12 3"; do
  shown="$("$tools/bin/ociochecklut" "$out/aces-sdr-view.cube" $rgb | tail -1)"
  back="$("$tools/bin/ociochecklut" "$out/aces-sdr-inverse.cube" $shown | tail -1)"
  echo "$rgb | $shown | $back" >>"$out/probes.partial"
done
mv "$out/probes.partial" "$out/probes.txt"
