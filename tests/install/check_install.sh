#!/usr/bin/env bash
# The "link latent as a library" check: stage `meson install`, build outside programs against it with
# pkg-config and run them, then build one against latent as a Meson subproject.
#
# Usage: tests/install/check_install.sh [source_dir] [build_dir]   (defaults: this repo and its ./build)
# meson test runs it as the 'install' test with both directories passed in. Environment: CXX (default
# g++), MESON (default meson).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source_root="$(cd "${1:-$here/../..}" && pwd)"
build_root="$(cd "${2:-$source_root/build}" && pwd)"
cxx="${CXX:-g++}"
meson_cmd="${MESON:-meson}"

work="$(mktemp -d "${TMPDIR:-/tmp}/latent-install-check.XXXXXX")"
trap 'rm -rf "$work"' EXIT

step() { printf '\n==> [%3ds] %s\n' "$SECONDS" "$*"; }
fail() { printf 'check_install: %s\n' "$*" >&2; exit 1; }

# --- the staged install -------------------------------------------------------------------------
stage="$work/stage"
step "meson install -C $build_root --destdir $stage --no-rebuild"
"$meson_cmd" install -C "$build_root" --destdir "$stage" --no-rebuild --quiet

pc_file="$(find "$stage" -path '*/pkgconfig/latent.pc' -print -quit)"
[ -n "$pc_file" ] || fail "no pkgconfig/latent.pc in the installed tree"
PKG_CONFIG_PATH="$(dirname "$pc_file")${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
export PKG_CONFIG_PATH
# latent.pc names the final prefix (/usr/local, ...); point it into the staging tree instead.
# (--define-prefix cannot be used: it guesses the prefix from the .pc location, which is wrong for a
# multiarch libdir such as lib/x86_64-linux-gnu.)
staged_prefix="$stage$(pkg-config --variable=prefix latent)"
pkg_config() { pkg-config --define-variable=prefix="$staged_prefix" "$@"; }
libdir="$(pkg_config --variable=libdir latent)"

step "installed tree under $staged_prefix"
for f in "$staged_prefix/include/latent/latent.hpp" "$libdir/liblatent.so" "$pc_file" \
         "$staged_prefix/bin/latent-train" "$staged_prefix/bin/latent-generate"; do
  [ -e "$f" ] || fail "missing from the install: ${f#"$stage"}"
  echo "  ${f#"$stage"}"
done
[ ! -e "$staged_prefix/bin/latent-custom-layer" ] || fail "the tutorial program was installed into bin/"
# Installed programs must find liblatent without LD_LIBRARY_PATH: their RUNPATH names the final libdir.
final_libdir="${libdir#"$stage"}"
for program in latent-train latent-generate; do
  runpath="$(readelf -d "$staged_prefix/bin/$program" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]/\1/p')"
  case ":$runpath:" in
    *":$final_libdir:"*) echo "  $program RUNPATH $runpath" ;;
    *) fail "$program's RUNPATH is '$runpath', not $final_libdir: it would need LD_LIBRARY_PATH" ;;
  esac
done
flags=("$(pkg_config --cflags latent)" "$(pkg_config --libs latent)")
echo "  pkg-config --cflags --libs latent: ${flags[*]}"
case "${flags[*]}" in
  *"-I$staged_prefix/include"*) ;;
  *) fail "pkg-config does not point into the staged tree: ${flags[*]}" ;;
esac

# Runs an installed-tree program, after checking that it really loads the staged liblatent.
run_staged() {
  local resolved
  resolved="$(LD_LIBRARY_PATH="$libdir" ldd "$1" | awk '/liblatent/ { print $3 }')"
  [ "$resolved" = "$libdir/$(basename "$resolved")" ] || fail "$1 loads liblatent from '$resolved', not $libdir"
  echo "  (liblatent from ${resolved#"$stage"})"
  LD_LIBRARY_PATH="$libdir" "$1"
}

# --- (a), (b): outside programs built with pkg-config -------------------------------------------
for source in "$here/api_program.cpp" "$source_root/examples/custom_layer.cpp"; do
  program="$work/$(basename "$source" .cpp)"
  step "$cxx -std=c++20 $(basename "$source") \$(pkg-config --cflags --libs latent), then run it"
  # shellcheck disable=SC2046  # pkg-config output is a list of flags, split on purpose
  "$cxx" -std=c++20 -O2 -Wall -Wextra "$source" -o "$program" $(pkg_config --cflags --libs latent)
  run_staged "$program"
done

step "run the installed latent-train --help"
LD_LIBRARY_PATH="$libdir" "$staged_prefix/bin/latent-train" --help >/dev/null
echo "  ok"

# --- (c): latent as a Meson subproject ----------------------------------------------------------
project="$work/subproject"
step "Meson subproject: $project with subprojects/latent -> $source_root"
mkdir -p "$project/subprojects"
ln -s "$source_root" "$project/subprojects/latent"
cp "$here/api_program.cpp" "$project/"
cat >"$project/meson.build" <<'EOF'
project('latent_user', 'cpp', default_options : ['cpp_std=c++20'])
latent_dep = dependency('latent', fallback : 'latent')
test('api_program', executable('api_program', 'api_program.cpp', dependencies : latent_dep))
EOF
# Force the subproject even when a latent is installed system-wide; the library is all we build, and
# unoptimised, to keep this check short.
"$meson_cmd" setup "$project/build" "$project" --force-fallback-for=latent -Dbuildtype=plain \
  -Dlatent:tests=false -Dlatent:native=false >/dev/null
"$meson_cmd" compile -C "$project/build" >/dev/null
"$project/build/api_program"

# A debug parent still gets an optimised liblatent, and is told so at configure time.
step "Meson subproject inside a debug parent: configure only"
"$meson_cmd" setup "$project/build-debug" "$project" --force-fallback-for=latent -Dbuildtype=debug \
  -Dlatent:tests=false -Dlatent:native=false >"$work/debug-setup.log"
grep -q "building liblatent with optimization=3" "$work/debug-setup.log" || fail "no configure-time note for a debug parent"
grep -A4 'liblatent.so.*core_tensor.cpp.o: ' "$project/build-debug/build.ninja" | grep -q -- ' -O3' \
  || fail "liblatent is not compiled with -O3 inside a debug parent"
echo "  configure note present; liblatent compiles with -O3"

step "all install checks passed"
