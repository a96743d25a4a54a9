#!/usr/bin/env bash
# tokenizer.sh: encode and decode throughput (MB/s, one thread) of latent against transformers.js'
# tokenizer code on the same multi-megabyte text, with DeepSeek-V3's and GPT-2's tokenizer.json;
# also checks that both produce the same ids. Prints a Markdown table.
#
# Usage: bench/tokenizer.sh NODE_DEPS_DIR [build-dir]   (run from the repository root)
#   NODE_DEPS_DIR: a folder with node_modules/@lenml/tokenizers (tests/data/tokenizers/README.md).
# Environment: MEGABYTES of text (default 4; Debian copyright files, the same bytes for both),
#              ROUNDS (default 3; the best round is reported).
set -euo pipefail

deps=${1:?usage: bench/tokenizer.sh NODE_DEPS_DIR [build-dir]}
build=${2:-build}
megabytes=${MEGABYTES:-4}
rounds=${ROUNDS:-3}
here=$(cd "$(dirname "$0")" && pwd)
ours="$build/bench/tokenizer"
[[ -x "$ours" ]] || { echo "tokenizer.sh: $ours not found; build first (ninja -C $build)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Valid UTF-8 text: the JavaScript side reads a string, so invalid bytes would not be the same input.
# U+FEFF removed: JavaScript's \s counts it as whitespace, Hugging Face's (Oniguruma) and PCRE2's do
# not, so GPT-2's regex cuts "\n\n<U+FEFF>" differently in transformers.js.
(cat /usr/share/doc/*/copyright 2>/dev/null || true) | head -c $((megabytes * 1000000)) | iconv -f utf-8 -t utf-8 -c |
  sed $'s/\xef\xbb\xbf//g' >"$work/text.txt" || true
[[ -s "$work/text.txt" ]] || { echo "tokenizer.sh: no text from /usr/share/doc/*/copyright" >&2; exit 1; }
for name in deepseek_v3 gpt2; do
  gunzip -c "$here/../tests/data/tokenizers/$name.json.gz" >"$work/$name.json"
done

value() { awk -v key="$1:" '$1 == key {print $2}' <<<"$2"; }
echo "| tokenizer | implementation | encode MB/s | decode MB/s | tokens |"
echo "|---|---|---|---|---|"
for name in deepseek_v3 gpt2; do
  latent_out=$("$ours" "$work/$name.json" "$work/text.txt" --rounds "$rounds" --ids-out "$work/latent.ids")
  js_out=$(node "$here/tokenizer.mjs" "$deps" "$work/$name.json" "$work/text.txt" "$rounds" "$work/js.ids")
  for who in latent js; do
    out=latent_out; [[ $who == js ]] && out=js_out
    echo "| $name | $who | $(value encode_mb_per_s "${!out}") | $(value decode_mb_per_s "${!out}") | $(value tokens "${!out}") |"
  done
  cmp -s "$work/latent.ids" "$work/js.ids" || { echo "tokenizer.sh: $name: latent and transformers.js ids differ" >&2; exit 1; }
done
echo
echo "$(wc -c <"$work/text.txt") bytes of text; ids identical between the two implementations."
