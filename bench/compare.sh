#!/usr/bin/env bash
# compare.sh: latent's train_step against its PyTorch twin (bench/torch_twin.py), run alternately for
# several rounds so both see the same machine load, then medians per shape and thread count, the
# ratio, and the cost of doubling the routed experts at fixed top-k. Prints a Markdown table; with
# bf16 in PRECISIONS, a second one: latent's bf16 step (--precision bf16) against its fp32 step and
# against PyTorch's best setting (fp32, or torch.autocast bf16 with torch 1 or N threads).
#
# Usage: bench/compare.sh [build-dir]        (default: build; run from the repository root)
# Environment: ROUNDS (default 3), STEPS timed steps per run (default 8), WARMUP (default 2),
#              SHAPES (default "8x256 4x512"), THREADS (default "1 2"), PRECISIONS (default "fp32 bf16"),
#              PYTHON (default /usr/bin/python3).
set -euo pipefail

build=${1:-build}
rounds=${ROUNDS:-3}
steps=${STEPS:-8}
warmup=${WARMUP:-2}
shapes=${SHAPES:-"8x256 4x512"}
thread_counts=${THREADS:-"1 2"}
precisions=${PRECISIONS:-"fp32 bf16"}
python=${PYTHON:-/usr/bin/python3}
here=$(cd "$(dirname "$0")" && pwd)
ours="$build/bench/train_step"
twin="$here/torch_twin.py"

[[ -x "$ours" ]] || { echo "compare.sh: $ours not found; build first (ninja -C $build)" >&2; exit 1; }
"$python" -c "import torch" 2>/dev/null || { echo "compare.sh: $python cannot import torch" >&2; exit 1; }

results=$(mktemp)
trap 'rm -f "$results"' EXIT

# One line per run: who shape threads tokens_per_s mfu peak_rss_mb os_allocations_per_step
record() {  # record WHO SHAPE THREADS OUTPUT
  local out=$4
  local tps mfu rss allocs
  tps=$(awk '/^tokens_per_s:/ {print $2}' <<<"$out")
  mfu=$(awk '/^model_flops_utilization:/ {print $2}' <<<"$out")
  rss=$(awk '/^peak_rss_mb:/ {print $2}' <<<"$out")
  allocs=$(awk '/^os_allocations_per_step:/ {print $2}' <<<"$out")
  [[ -n "$tps" ]] || { echo "compare.sh: no tokens_per_s from $1 $2 $3:" >&2; echo "$out" >&2; exit 1; }
  echo "$1 $2 $3 $tps $mfu $rss ${allocs:--}" >>"$results"
  printf '  %-12s %-6s %s thread(s): %8.1f tokens/s, MFU %s, peak RSS %s MB\n' "$1" "$2" "$3" "$tps" "$mfu" "$rss" >&2
}

for round in $(seq 1 "$rounds"); do
  echo "round $round/$rounds" >&2
  for shape in $shapes; do
    batch=${shape%x*} seq=${shape#*x}
    for threads in $thread_counts; do
      common=(--preset small --batch "$batch" --seq "$seq" --steps "$steps" --warmup "$warmup")
      record latent "$shape" "$threads" "$("$ours" "${common[@]}" --threads "$threads")"
      # The twin's best setting: ATen on one thread, OpenBLAS on all of them (see torch_twin.py).
      record pytorch "$shape" "$threads" "$("$python" "$twin" "${common[@]}" --threads 1 --openblas-threads "$threads")"
      if [[ " $precisions " == *" bf16 "* ]]; then
        record latent-bf16 "$shape" "$threads" "$("$ours" "${common[@]}" --threads "$threads" --precision bf16)"
        for torch_threads in $(printf '%s\n' 1 "$threads" | sort -u); do
          record "pytorch-bf16-t$torch_threads" "$shape" "$threads" \
            "$("$python" "$twin" "${common[@]}" --threads "$torch_threads" --openblas-threads "$threads" --precision bf16)"
        done
      fi
    done
  done
  # Expert scaling: twice the routed experts at the same top-k should cost little (idle weight only).
  max_threads=$(tr ' ' '\n' <<<"$thread_counts" | sort -n | tail -1)
  for experts in 16 32; do
    record "latent-E$experts" 8x256 "$max_threads" \
      "$("$ours" --preset small --batch 8 --seq 256 --steps "$steps" --warmup "$warmup" --threads "$max_threads" --routed-experts "$experts")"
  done
done

"$python" - "$results" "$rounds" "$steps" "$shapes" "$thread_counts" <<'EOF'
import statistics, sys
from collections import defaultdict
path, rounds, steps, shapes, thread_counts = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4].split(), sys.argv[5].split()
runs = defaultdict(list)
for line in open(path):
    who, shape, threads, tps, mfu, rss, allocs = line.split()
    runs[(who, shape, threads)].append((float(tps), float(mfu), float(rss), allocs))
def med(key, i):
    return statistics.median(r[i] for r in runs[key])
print(f"Medians of {rounds} alternating rounds, {steps} timed steps each (DeepSeek-V3 'small', full training step).\n")
print("| shape | threads | latent tokens/s | PyTorch tokens/s | ratio | latent MFU | PyTorch MFU | latent peak RSS MB | PyTorch peak RSS MB | latent OS allocs/step |")
print("|---|---|---|---|---|---|---|---|---|---|")
for shape, threads in ((s, t) for s in shapes for t in thread_counts):
    ours, theirs = ("latent", shape, threads), ("pytorch", shape, threads)
    b, t = shape.split("x")
    allocs = "/".join(sorted({r[3] for r in runs[ours]}))
    print(f"| B{b}/T{t} | {threads} | {med(ours, 0):.0f} | {med(theirs, 0):.0f} | {med(ours, 0) / med(theirs, 0):.2f}x "
          f"| {med(ours, 1):.1%} | {med(theirs, 1):.1%} | {med(ours, 2):.0f} | {med(theirs, 2):.0f} | {allocs} |")
if any(k[0] == "latent-bf16" for k in runs):
    print("\nbf16: latent --precision bf16 (bf16 GEMM operands, fp32 accumulation, fp32 master weights) against "
          "latent fp32 and PyTorch's best of fp32 and torch.autocast bf16 (torch 1 or N threads); MFU of the bf16 GEMM peak.\n")
    print("| shape | threads | latent fp32 tokens/s | latent bf16 tokens/s | bf16 / fp32 | PyTorch best tokens/s (setting) "
          "| latent bf16 / PyTorch best | latent bf16 MFU | latent bf16 peak RSS MB | latent bf16 OS allocs/step |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for shape, threads in ((s, t) for s in shapes for t in thread_counts):
        fp32, bf16 = ("latent", shape, threads), ("latent-bf16", shape, threads)
        if bf16 not in runs:
            continue
        settings = {"fp32": ("pytorch", shape, threads)}
        settings.update({f"autocast bf16, torch {k[0].rsplit('-t', 1)[1]}T": k for k in runs
                         if k[0].startswith("pytorch-bf16-t") and k[1:] == (shape, threads)})
        best = max(settings, key=lambda name: med(settings[name], 0))
        b, t = shape.split("x")
        allocs = "/".join(sorted({r[3] for r in runs[bf16]}))
        print(f"| B{b}/T{t} | {threads} | {med(fp32, 0):.0f} | {med(bf16, 0):.0f} | {med(bf16, 0) / med(fp32, 0):.2f}x "
              f"| {med(settings[best], 0):.0f} ({best}) | {med(bf16, 0) / med(settings[best], 0):.2f}x "
              f"| {med(bf16, 1):.1%} | {med(bf16, 2):.0f} | {allocs} |")
scaling = sorted(k for k in runs if k[0].startswith("latent-E"))
if len(scaling) == 2:
    (a, b) = scaling
    ta, tb = 1 / med(a, 0), 1 / med(b, 0)
    print(f"\nRouted experts 16 -> 32 at top-4 (B8/T256, {a[2]} threads): {med(a, 0):.0f} -> {med(b, 0):.0f} tokens/s, "
          f"step time {tb / ta - 1:+.1%}.")
EOF
