#!/usr/bin/env bash
# The README's test command: installs what is missing, builds latent in ./build and runs the suite.
set -euo pipefail
cd "$(dirname "$0")"
.ci/bootstrap
[ -f build/build.ninja ] || meson setup build
ninja -C build
status=0
meson test -C build --print-errorlogs "$@" || status=$?
# One plain closing line, counted from meson's own log.
python3 - <<'PY' || true
import json
passed = failed = skipped = 0
for line in open("build/meson-logs/testlog.json"):
    r = json.loads(line)["result"]
    if r in ("OK", "EXPECTEDFAIL"): passed += 1
    elif r == "SKIP": skipped += 1
    else: failed += 1
print(f"tests: {passed} passed, {failed} failed, {skipped} skipped")
PY
exit $status
