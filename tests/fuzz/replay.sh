#!/usr/bin/env bash
# Runs a libFuzzer executable once over each input directory that exists (regressions/<target>/
# appears with the target's first finding, after the build was configured): replay.sh FUZZER DIR...
set -euo pipefail
fuzzer="$1"
shift
dirs=()
for dir in "$@"; do
  [ -d "$dir" ] && dirs+=("$dir")
done
exec "$fuzzer" -runs=0 "${dirs[@]}"
