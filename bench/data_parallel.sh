#!/usr/bin/env bash
# data_parallel.sh: training throughput of one process with T threads against T MPI ranks with one
# thread each (data parallelism: each rank trains on batch/T sequences, gradients all-reduced every
# step), on the same model, global batch and data. Runs latent-train alternately for several rounds,
# reads the per-step tokens/s from each run's metrics.csv (--log-every 1; the first WARMUP steps
# dropped) and prints a Markdown table of medians.
#
# Usage: bench/data_parallel.sh [build-dir]      (default: build-mpi; run from the repository root)
# Environment: ROUNDS (default 3), STEPS (default 12), WARMUP (default 2), RANKS (default 2),
#              SHAPES (default "8x256 4x512": batch x seq, batch divisible by RANKS), PRESET (default small).
set -euo pipefail

build=${1:-build-mpi}
rounds=${ROUNDS:-3}
steps=${STEPS:-12}
warmup=${WARMUP:-2}
ranks=${RANKS:-2}
shapes=${SHAPES:-"8x256 4x512"}
preset=${PRESET:-small}
train="$build/examples/latent-train"
[[ -x "$train" ]] || { echo "data_parallel.sh: $train not found; build first (ninja -C $build)" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "data_parallel.sh: mpirun not found (apt-get install openmpi-bin)" >&2; exit 1; }
mpirun_flags=()
[[ $(id -u) -eq 0 ]] && mpirun_flags+=(--allow-run-as-root)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
results="$work/results"

# Median tokens/s of the timed steps of one run's metrics.csv.
tokens_per_s() {
  awk -F, -v warmup="$warmup" '
    NR == 1 { for (i = 1; i <= NF; i++) if ($i == "tokens_per_s") col = i; next }
    $1 > warmup { v[++n] = $col }
    END {
      for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] > v[j]; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
      print (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }' "$1"
}

run() {  # run <label> <out-dir> <command...>
  local label=$1 out=$2
  shift 2
  rm -rf "$out"
  "$@" --preset "$preset" --batch "$batch" --seq "$seq" --steps "$steps" --warmup 0 --log-every 1 --eval-every 0 \
    --save-every 0 --out "$out" >"$work/log" 2>&1 || { cat "$work/log" >&2; exit 1; }
  local rate
  rate=$(tokens_per_s "$out/metrics.csv")
  echo "$shape $label $rate" >>"$results"
  printf '  %-8s %-22s %8.0f tokens/s\n' "$shape" "$label" "$rate" >&2
}

for round in $(seq 1 "$rounds"); do
  echo "round $round/$rounds" >&2
  for shape in $shapes; do
    batch=${shape%x*} seq=${shape#*x}
    run "1x${ranks}T" "$work/one" "$train" --threads "$ranks"
    run "${ranks}x1T" "$work/many" mpirun "${mpirun_flags[@]}" -np "$ranks" --bind-to core "$train" --threads 1
  done
done

awk -v rounds="$rounds" -v steps="$steps" -v warmup="$warmup" -v ranks="$ranks" '
  { key = $1 " " $2; n[key]++; v[key, n[key]] = $3; if (!($1 in seen)) { seen[$1] = 1; order[++k] = $1 } }
  function median(key,   i, j, m, t, a) {  # insertion sort: mawk has no asort
    m = n[key]
    for (i = 1; i <= m; i++) a[i] = v[key, i]
    for (i = 2; i <= m; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    return (m % 2) ? a[(m + 1) / 2] : (a[m / 2] + a[m / 2 + 1]) / 2
  }
  END {
    printf "Medians of %d alternating rounds, steps %d..%d of each run timed\n\n", rounds, warmup + 1, steps
    printf "| shape | 1 process x %d threads, tokens/s | %d ranks x 1 thread, tokens/s | ratio |\n", ranks, ranks
    print "|---|---|---|---|"
    for (i = 1; i <= k; i++) {
      s = order[i]; one = median(s " 1x" ranks "T"); many = median(s " " ranks "x1T")
      split(s, bt, "x")
      printf "| B%s/T%s | %.0f | %.0f | %.2fx |\n", bt[1], bt[2], one, many, many / one
    }
  }' "$results"
