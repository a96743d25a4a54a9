#!/usr/bin/env bash
# precision_quality.sh: the default training job (small DeepSeek-V3, default corpus, 300 steps, the
# default seed) once at fp32 and once at bf16, then the validation loss each run ends with, their
# difference in nats per byte, and one plot of both runs' curves (bench/plot_curves.py).
#
# Usage: bench/precision_quality.sh [build-dir]   (default: build; run from the repository root)
# Environment: OUT run directories (default runs/precision), SVG the plot (default
# docs/img/bf16_vs_fp32.svg), THREADS (default 2), and any latent-train flags in TRAIN_ARGS.
set -euo pipefail

build=${1:-build}
out=${OUT:-runs/precision}
svg=${SVG:-docs/img/bf16_vs_fp32.svg}
threads=${THREADS:-2}
here=$(cd "$(dirname "$0")" && pwd)
train="$build/examples/latent-train"
[[ -x "$train" ]] || { echo "precision_quality.sh: $train not found; build first (ninja -C $build)" >&2; exit 1; }

for precision in fp32 bf16; do
  echo "== $precision" >&2
  # shellcheck disable=SC2086
  "$train" --precision "$precision" --threads "$threads" --out "$out/$precision" --overwrite ${TRAIN_ARGS:-} >&2
done
python3 "$here/plot_curves.py" "$svg" "fp32=$out/fp32/metrics.csv" "bf16=$out/bf16/metrics.csv"
python3 - "$out/fp32/metrics.csv" "$out/bf16/metrics.csv" <<'PY'
import csv, sys
def last_val(path):
    rows = [r for r in csv.DictReader(open(path)) if r.get("val_loss")]
    return int(rows[-1]["step"]), float(rows[-1]["val_loss"])
(s32, v32), (s16, v16) = last_val(sys.argv[1]), last_val(sys.argv[2])
print(f"final validation loss (nats/byte): fp32 {v32:.4f} at step {s32}, bf16 {v16:.4f} at step {s16}, "
      f"bf16 - fp32 = {v16 - v32:+.4f}")
PY
echo "plot: $svg" >&2
