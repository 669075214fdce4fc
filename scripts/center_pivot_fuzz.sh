#!/usr/bin/env bash
# The fused center-pivot kernel (hsnet_lite/fast/csrc/center_pivot.c) on random geometries, against
# a float64 loop, built with AddressSanitizer and UBSan: any out-of-bounds access or disagreement fails.
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
"${CC:-cc}" -O1 -g -march=native -fopenmp -fsanitize=address,undefined -fno-sanitize-recover=all \
  -fno-omit-frame-pointer -I hsnet_lite/fast/csrc scripts/center_pivot_fuzz.c -o "$out/fuzz" -lm
ASAN_OPTIONS=detect_leaks=0 "$out/fuzz"
