#!/usr/bin/env bash
# The README's main command: installs what is missing, builds latent in ./build and trains the small
# DeepSeek-V3 on the default corpus. Extra arguments go to latent-train (e.g. ./train.sh --steps 100).
set -euo pipefail
cd "$(dirname "$0")"
.ci/bootstrap
[ -f build/build.ninja ] || meson setup build
ninja -C build examples/latent-train examples/latent-generate
exec build/examples/latent-train "$@"
