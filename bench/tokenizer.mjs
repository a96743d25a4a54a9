// The JavaScript side of bench/tokenizer.sh: transformers.js' tokenizer code (npm @lenml/tokenizers)
// encoding and decoding one text, single thread, the best of several rounds; the same output lines
// as bench/tokenizer.cpp, and the ids written out for comparison.
// Usage: node tokenizer.mjs NODE_DEPS_DIR TOKENIZER_JSON TEXT_FILE ROUNDS IDS_OUT
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const [deps, tokenizerPath, textPath, rounds, idsOut] = process.argv.slice(2);
const require = createRequire(path.resolve(deps) + '/');
const { TokenizerLoader } = require('@lenml/tokenizers');

const text = fs.readFileSync(textPath, 'utf8');
const loadStart = performance.now();
const tokenizer = TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(fs.readFileSync(tokenizerPath, 'utf8')),
  tokenizerConfig: { tokenizer_class: 'PreTrainedTokenizer' },
});
const load = (performance.now() - loadStart) / 1000;

let encode = Infinity, decode = Infinity, ids = [], decoded = '';
for (let r = 0; r < Number(rounds); ++r) {
  const t0 = performance.now();
  ids = tokenizer.encode(text, { add_special_tokens: false });
  const t1 = performance.now();
  decoded = tokenizer.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  const t2 = performance.now();
  encode = Math.min(encode, (t1 - t0) / 1000);
  decode = Math.min(decode, (t2 - t1) / 1000);
}
if (decoded !== text) console.error('tokenizer.mjs: decode(encode(text)) differs from the text');
const mb = Buffer.byteLength(text, 'utf8') / 1e6;
console.log(`load_s: ${load.toFixed(3)}\nbytes: ${Buffer.byteLength(text, 'utf8')}\ntokens: ${ids.length}`);
console.log(`encode_mb_per_s: ${(mb / encode).toFixed(2)}\ndecode_mb_per_s: ${(mb / decode).toFixed(2)}`);
fs.writeFileSync(idsOut, ids.join(' ') + '\n');
