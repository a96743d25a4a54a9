#!/bin/sh
# Runs the llama.cpp comparison tests when node and the pinned node-llama-cpp (installed by
# .ci/bootstrap into tests/llamacpp/node_modules) are present; otherwise skips (exit 77) saying why.
here=$(dirname "$0")
if ! command -v node >/dev/null 2>&1; then
  echo "llamacpp: skipped: node is not installed (run .ci/bootstrap)" >&2
  exit 77
fi
if [ ! -f "$here/node_modules/node-llama-cpp/package.json" ] || [ ! -d "$here/node_modules/@node-llama-cpp/linux-x64" ]; then
  echo "llamacpp: skipped: node-llama-cpp 3.21.1 is not installed in $here/node_modules (run .ci/bootstrap)" >&2
  exit 77
fi
exec "$@"
