#!/usr/bin/env bash
# Fuzzes every target for the given time: tests/fuzz/run.sh [seconds per target, default 60] [build dir].
# The build dir must be a -Dfuzz=true build (tests/fuzz/README.md). New interesting inputs go to
# <build>/fuzz-work/<target>/ (the committed corpus is only read); crashes are written to
# <build>/fuzz-crashes/<target>/ and make the script exit non-zero. A crash, once fixed, becomes a
# regression input: copy it to tests/fuzz/regressions/<target>/ so every build's suite replays it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
seconds="${1:-60}"
build="$(cd "${2:-$here/../../build-fuzz}" && pwd)"
failed=()
for exe in "$build"/tests/fuzz/fuzz_*; do
  [ -f "$exe" ] && [ -x "$exe" ] || continue
  target="$(basename "$exe")"
  target="${target#fuzz_}"
  work="$build/fuzz-work/$target"
  crashes="$build/fuzz-crashes/$target"
  mkdir -p "$work" "$crashes"
  dirs=("$work" "$here/corpus/$target")
  [ -d "$here/regressions/$target" ] && dirs+=("$here/regressions/$target")
  dict=()
  [ -f "$here/dictionaries/$target.dict" ] && dict=("-dict=$here/dictionaries/$target.dict")
  echo "== $target: ${seconds}s"
  # -timeout: an input that takes 10 s is a hang; -rss_limit_mb: one that needs 2 GB is a huge
  # allocation. Both count as crashes. One thread, as LLVMFuzzerInitialize sets.
  if ! UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 "$exe" "${dict[@]}" -max_total_time="$seconds" \
      -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$crashes/" "${dirs[@]}" 2>"$build/fuzz-$target.log"; then
    failed+=("$target")
    echo "   crash: see $build/fuzz-$target.log and $crashes/"
  fi
  grep -E "^stat::number_of_executed_units|^stat::new_units_added" "$build/fuzz-$target.log" | sed 's/^/   /' || true
done
if [ ${#failed[@]} -ne 0 ]; then
  echo "fuzz: crashes in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: no crashes"
