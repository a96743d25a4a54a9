#!/usr/bin/env bash
# Decode speed, latent-generate against llama.cpp (node-llama-cpp 3.21.1, CPU) on the same f32 model:
# batch 1, greedy, 1 and 2 threads, prompt processing and generation reported separately.
#   bench/decode.sh [MODEL_DIR] [BUILD_DIR]   (default: a freshly initialised `small` checkpoint)
# latent-generate prints no timings, so its phases come from differences of whole runs, in which
# loading cancels: a P-token and a 1-token prompt with 1 new token differ by P - 1 prompt tokens;
# the P-token prompt with 1 and with 1 + N new tokens differ by N generation steps. llama.cpp times
# the phases inside one process.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${2:-$root/build}"
prompt_tokens=${PROMPT_TOKENS:-64} new_tokens=${NEW_TOKENS:-512}
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
model="${1:-}"
if [ -z "$model" ]; then
  model="$scratch/small"
  "$build/examples/latent-train" --preset small --steps 1 --batch 1 --seq 32 --data "$root/README.md" --out "$model" \
    --eval-every 0 --sample-every 0 --save-every 0 >/dev/null 2>&1
fi
"$build/examples/latent-export-gguf" "$model" "$scratch/model.gguf"
prompt="$(head -c "$prompt_tokens" "$root/README.md")"

seconds() {  # wall time of a command, in seconds
  local start end
  start=$(date +%s.%N)
  "$@" >/dev/null
  end=$(date +%s.%N)
  echo "$end - $start" | bc -l
}

printf '%-8s %-10s %14s %14s\n' threads program "prompt tok/s" "generate tok/s"
for threads in 1 2; do
  short=$(seconds "$build/examples/latent-generate" "$model" -p "${prompt:0:1}" -n 1 -t 0 --threads "$threads")
  one=$(seconds "$build/examples/latent-generate" "$model" -p "$prompt" -n 1 -t 0 --threads "$threads")
  many=$(seconds "$build/examples/latent-generate" "$model" -p "$prompt" -n $((new_tokens + 1)) -t 0 --threads "$threads")
  printf '%-8s %-10s %14.0f %14.0f\n' "$threads" latent "$(echo "($prompt_tokens - 1) / ($one - $short)" | bc -l)" \
    "$(echo "$new_tokens / ($many - $one)" | bc -l)"
  read -r pp tg < <(node "$root/bench/decode.mjs" "$scratch/model.gguf" "$prompt_tokens" "$new_tokens" "$threads" |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const j=JSON.parse(s);console.log(j.prompt_tokens_per_s,j.generation_tokens_per_s)})')
  printf '%-8s %-10s %14.0f %14.0f\n' "$threads" llama.cpp "$pp" "$tg"
done
