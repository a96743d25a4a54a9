#!/usr/bin/env bash
# Decode speed, latent-generate against llama.cpp (node-llama-cpp 3.21.1, CPU) on the same f32 model:
# batch 1, greedy, 1 and 2 threads, prompt processing and generation reported separately.
#   [ROUNDS=3] [PROMPT_TOKENS=64] [NEW_TOKENS=512] [LATENT_ARGS=...] bench/decode.sh [MODEL_DIR] [BUILD_DIR]
# LATENT_ARGS go to latent-generate only (e.g. "--precision bf16": bf16 GEMM operands against
# llama.cpp's f32 model).
# MODEL_DIR defaults to a freshly initialised `small` checkpoint (one training step, fixed seed).
# Both programs time their phases inside one process: latent-generate --timings counts the prompt
# phase up to the first new token and then NEW_TOKENS decoding steps; llama.cpp (bench/decode.mjs)
# evaluates the prompt and then NEW_TOKENS single tokens. The rounds alternate the two programs and
# the table shows the median of each column, with every round's generation speed after it.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${2:-$root/build}"
rounds=${ROUNDS:-3} prompt_tokens=${PROMPT_TOKENS:-64} new_tokens=${NEW_TOKENS:-512}
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
model="${1:-}"
if [ -z "$model" ]; then
  model="$scratch/small"
  "$build/examples/latent-train" --preset small --steps 1 --batch 1 --seq 32 --data "$root/README.md" --out "$model" \
    --eval-every 0 --sample-every 0 --save-every 0 >/dev/null 2>&1
fi
"$build/examples/latent-export-gguf" "$model" "$scratch/model.gguf" >/dev/null
prompt="$(head -c "$prompt_tokens" "$root/README.md")"  # bytes: one token each

latent() {  # prints "prompt_tokens_per_s generation_tokens_per_s"
  "$build/examples/latent-generate" "$model" -p "$prompt" -n $((new_tokens + 1)) -t 0 --threads "$1" --timings ${LATENT_ARGS:-} \
    2>&1 >/dev/null | sed -nE 's/.*prompt .*\(([0-9.]+) tokens\/s\), then .*\(([0-9.]+) tokens\/s\)/\1 \2/p'
}
llama_cpp() {
  node "$root/bench/decode.mjs" "$scratch/model.gguf" "$prompt_tokens" "$new_tokens" "$1" |
    node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const j=JSON.parse(s);console.log(j.prompt_tokens_per_s,j.generation_tokens_per_s)})'
}
median() { sort -g | awk '{v[NR] = $1} END {print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

printf '%-8s %-10s %14s %16s   %s\n' threads program "prompt tok/s" "generate tok/s" "generate tok/s per round"
for threads in 1 2; do
  : >"$scratch/latent" && : >"$scratch/llama.cpp"
  for ((round = 0; round < rounds; round++)); do
    latent "$threads" >>"$scratch/latent"
    llama_cpp "$threads" >>"$scratch/llama.cpp"
  done
  for program in latent llama.cpp; do
    printf '%-8s %-10s %14.0f %16.0f   %s\n' "$threads" "$program" "$(cut -d' ' -f1 "$scratch/$program" | median)" \
      "$(cut -d' ' -f2 "$scratch/$program" | median)" "$(cut -d' ' -f2 "$scratch/$program" | xargs printf '%.0f ')"
  done
done
