#!/usr/bin/env bash
# scaling.sh: how latent's training step time grows with the batch at a fixed sequence length (it
# should be linear: every GEMM's rows are batch x seq), and with the sequence length at a fixed number
# of tokens per step (only attention's T^2 term may grow). Runs bench/train_step alternately for
# several rounds and prints a Markdown table of medians.
#
# Usage: bench/scaling.sh [build-dir]        (default: build; run from the repository root)
# Environment: ROUNDS (default 3), STEPS (default 6), WARMUP (default 2), THREADS (default 2).
set -euo pipefail

build=${1:-build}
rounds=${ROUNDS:-3}
steps=${STEPS:-6}
warmup=${WARMUP:-2}
threads=${THREADS:-2}
ours="$build/bench/train_step"
[[ -x "$ours" ]] || { echo "scaling.sh: $ours not found; build first (ninja -C $build)" >&2; exit 1; }

# Batch sweep at T=256, then a sweep of T at 2048 tokens per step.
shapes="1x256 2x256 4x256 8x256 16x256 16x128 4x512 2x1024"
results=$(mktemp)
trap 'rm -f "$results"' EXIT

for round in $(seq 1 "$rounds"); do
  echo "round $round/$rounds" >&2
  for shape in $shapes; do
    batch=${shape%x*} seq=${shape#*x}
    out=$("$ours" --preset small --batch "$batch" --seq "$seq" --steps "$steps" --warmup "$warmup" --threads "$threads")
    step=$(awk '/^step_time_median_s:/ {print $2}' <<<"$out")
    [[ -n "$step" ]] || { echo "scaling.sh: no step time for $shape:" >&2; echo "$out" >&2; exit 1; }
    echo "$batch $seq $step" >>"$results"
    printf '  B%-3s T%-5s %8.4f s/step\n' "$batch" "$seq" "$step" >&2
  done
done

awk -v rounds="$rounds" -v steps="$steps" -v threads="$threads" '
  { key = $1 "x" $2; n[key]++; v[key, n[key]] = $3; b[key] = $1; t[key] = $2; if (!(key in seen)) { seen[key] = 1; order[++k] = key } }
  function median(key,   i, j, tmp, m) {
    m = n[key]
    for (i = 1; i <= m; i++) a[i] = v[key, i]
    for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (a[j] < a[i]) { tmp = a[i]; a[i] = a[j]; a[j] = tmp }
    return m % 2 ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
  }
  END {
    printf "Medians of %d alternating rounds, %d timed steps each, %d thread(s), preset small.\n\n", rounds, steps, threads
    printf "| shape | tokens/step | step s | ms per 1k tokens | vs B8/T256 per token |\n|---|---|---|---|---|\n"
    ref = median("8x256") / 2048
    for (i = 1; i <= k; i++) {
      key = order[i]; tok = b[key] * t[key]; s = median(key)
      printf "| B%d/T%d | %d | %.4f | %.1f | %.2fx |\n", b[key], t[key], tok, s, 1e6 * s / tok, (s / tok) / ref
    }
  }' "$results"
