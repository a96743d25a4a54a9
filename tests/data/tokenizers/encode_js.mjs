// `latent-tokenizer encode` in JavaScript: text on stdin -> ids on stdout (one line, no special
// tokens added) through transformers.js' tokenizer code, to compare the two on any tokenizer.json,
// e.g. one latent-tokenizer train wrote (README.md shows the command).
// Usage: node encode_js.mjs NODE_DEPS_DIR TOKENIZER_JSON < text
import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const [deps, tokenizerPath] = process.argv.slice(2);
if (!deps || !tokenizerPath) throw new Error('usage: node encode_js.mjs NODE_DEPS_DIR TOKENIZER_JSON < text');
const require = createRequire(path.resolve(deps) + '/');
const { TokenizerLoader } = require('@lenml/tokenizers');
const tokenizer = TokenizerLoader.fromPreTrained({
  tokenizerJSON: JSON.parse(fs.readFileSync(tokenizerPath, 'utf8')),
  tokenizerConfig: { tokenizer_class: 'PreTrainedTokenizer' },
});
const text = fs.readFileSync(0, 'utf8');
process.stdout.write(tokenizer.encode(text, { add_special_tokens: false }).join(' ') + '\n');
