// Writes the golden token ids the C++ tests compare against: each text below encoded by
// transformers.js' tokenizer code (npm @lenml/tokenizers) with DeepSeek-V3's and GPT-2's
// tokenizer.json, no special tokens added. GPT-2's ids are also checked against an unrelated
// implementation (npm gpt-tokenizer, r50k_base; texts without special tokens), which validates
// convert_gpt2.mjs.
//
// Usage: node make_fixtures.mjs NODE_DEPS_DIR   (run in this folder; see README.md for the setup)
// Texts with invalid UTF-8 are given as bytes: Hugging Face cannot take them, and latent's rule
// (tokenizer/tokenizer.hpp) is that each maximal run of invalid bytes is one BPE piece and the valid
// text around it is encoded as if the run were a boundary. Their golden ids apply that rule with
// the JavaScript pieces: valid runs through tokenizer.encode, invalid runs through model.bpe.
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { createRequire } from 'node:module';

const deps = process.argv[2];
if (!deps) throw new Error('usage: node make_fixtures.mjs NODE_DEPS_DIR');
const require = createRequire(path.resolve(deps) + '/');
const { TokenizerLoader } = require('@lenml/tokenizers');
const { encode: r50kEncode } = require('gpt-tokenizer/cjs/encoding/r50k_base');

const longCjk = '深度求索人工智能基础技术研究有限公司成立于二零二三年专注于研究世界领先的通用人工智能底层模型与技术挑战人工智能前沿性难题'.repeat(3);
const texts = [
  ['empty', ''],
  ['prose', "The quick brown fox jumps over the lazy dog. It's a sentence you've seen before; they'd say it's " +
    "overused, but we'll keep it. DON'T SHOUT! I'M NOT. Mr. O'Neil's café—naïve, coöperate—costs $3.50."],
  ['prose_paragraphs', 'Language models read text as tokens.\n\nA tokenizer turns bytes into ids, and back again.\n' +
    'Byte-level BPE never meets an unknown character:\tevery byte has a token.\r\nWindows line ends, too.\r\n'],
  ['code_cpp', '#include <vector>\n\nint main(int argc, char** argv) {\n  std::vector<int> v{1, 2, 3};\n' +
    '\tfor (auto& x : v) x *= 2;  // double\n    return v.size() > 2 ? 0 : 1;\n}\n'],
  ['code_python', 'def fib(n: int) -> int:\n    """Return the n-th Fibonacci number."""\n    a, b = 0, 1\n' +
    '    for _ in range(n):\n        a, b = b, a + b\n    return a\n\nprint(f"{fib(30)=}")  # 832040\n'],
  ['numbers', '0 1 12 123 1234 12345 123456 1234567 12345678 123456789 1234567890 12345678901 ' +
    '3.14159 -42 +7 1e10 6.02e23 0x1F 0b1010 2024-12-04 12:34:56 1,000,000 1.000.000,50 ½ ² ٣ ४ 𝟗'],
  ['long_number', '9'.repeat(7) + ' ' + '31415926535897932384626433832795028841971693993751058209749445923078164062862089986280348253421170679'],
  ['spaces', 'a b  c   d    e     f      g'],
  ['whitespace_mix', '  leading\ttab\t\tdouble tab\n\nblank line\n\n\n   \t \n  trailing   '],
  ['only_spaces', '        '],
  ['only_newlines', '\n\n\n\n'],
  ['long_space_run', 'x' + ' '.repeat(300) + 'y' + '\n'.repeat(80) + 'z' + '\t'.repeat(70)],
  ['carriage_returns', 'one\rtwo\r\nthree\n\rfour\r\r\n'],
  ['unicode_spaces', 'no\u00a0break ideographic\u3000space em\u2003space line\u2028separator thin\u2009space'],
  ['chinese', '深度求索是一家专注于通用人工智能的公司。我们的模型叫做DeepSeek-V3，参数量为6710亿！'],
  ['japanese', '日本語のテキストです。カタカナとひらがな、そして漢字。東京タワーは333メートル。'],
  ['korean', '한국어 텍스트입니다. 안녕하세요, 세계!'],
  ['long_cjk', longCjk],
  ['mixed_scripts', 'Hello мир, 世界! مرحبا بالعالم שלום עולם नमस्ते दुनिया Γειά σου κόσμε ภาษาไทย ქართული Ελληνικά'],
  ['emoji', 'I ❤️ 🍕! Family: 👨‍👩‍👧‍👦, flags: 🇫🇷🇯🇵, skin tone: 👍🏽, keycap: 1️⃣, 🚀🚀🚀 done.'],
  ['combining_marks', 'cafe\u0301 vs café, n\u0303, Z\u0351\u0307\u036b\u0342a\u0300\u0301\u0302l\u0308g\u0327o, ' +
    'हिन्दी, ผู้ใหญ่, 한글 (\u1112\u1161\u11ab), a\u20dd'],
  ['punctuation', '!!!??? ... --- *** \'\'\' """ ((( ))) [[[ ]]] {{{ }}} @#$%^&*_+=|\\/<> ~`§¶•–—…«»“”‘’'],
  ['markup', '# Title\n\n- item *one*\n- item **two**\n\n```js\nconst x = {a: [1, 2]};\n```\n' +
    '<a href="https://example.com/path?q=1&r=2#frag">link</a> user@example.org'],
  ['long_word', 'Pneumonoultramicroscopicsilicovolcanoconiosis' + 'abcdefghij'.repeat(12) + ' ' + 'ab'.repeat(60)],
  ['contractions', "'s 't 're 've 'm 'll 'd 'S 'T 'RE 'VE 'M 'LL 'D it's IT'S we'Re ''''s"],
  ['special_tokens_deepseek', '<｜begin▁of▁sentence｜>You are helpful.<｜User｜>What is 2+2?<｜Assistant｜>4<｜end▁of▁sentence｜>' +
    ' <｜begin▁of▁sentence｜ (unfinished) <|endoftext|> <｜tool▁calls▁begin｜><｜tool▁sep｜>x'],
  ['special_tokens_gpt2', 'Hello<|endoftext|>World <|endoftext|><|endoftext|> <|endoftext| <|endoftext|>\n'],
];

// Invalid UTF-8, as hex: a lone continuation byte, a truncated sequence (mid-text and at the end),
// an overlong form, a surrogate, bytes that never occur (FE, FF, F5), a valid emoji between them.
const invalid = [
  ['invalid_lone_continuation', '48656c6c6f80776f726c64'],
  ['invalid_truncated', 'e4b8ade696872020e4b8204869'],
  ['invalid_truncated_end', '616263f09f98'],
  ['invalid_overlong_surrogate', 'c0af20eda080202f2e2e2f'],
  ['invalid_never_bytes', 'fffe20f5202020616263fffffffff09f9880'],
  ['invalid_only', '80818283'],
];

// Length of the valid UTF-8 character at bytes[i] (Unicode table 3-7), 0 when none starts there.
function validLength(bytes, i) {
  const b = bytes[i];
  if (b < 0x80) return 1;
  let n, lo = 0x80, hi = 0xbf;
  if (b >= 0xc2 && b <= 0xdf) n = 2;
  else if (b >= 0xe0 && b <= 0xef) { n = 3; if (b === 0xe0) lo = 0xa0; if (b === 0xed) hi = 0x9f; }
  else if (b >= 0xf0 && b <= 0xf4) { n = 4; if (b === 0xf0) lo = 0x90; if (b === 0xf4) hi = 0x8f; }
  else return 0;
  if (i + n > bytes.length) return 0;
  if (bytes[i + 1] < lo || bytes[i + 1] > hi) return 0;
  for (let k = 2; k < n; ++k) if (bytes[i + k] < 0x80 || bytes[i + k] > 0xbf) return 0;
  return n;
}

// The GPT-2 byte -> character table, as transformers.js builds it.
const byteToChar = (() => {
  const bs = [];
  for (let b = 33; b <= 126; ++b) bs.push(b);
  for (let b = 161; b <= 172; ++b) bs.push(b);
  for (let b = 174; b <= 255; ++b) bs.push(b);
  const table = new Array(256);
  let next = 256;
  for (let b = 0; b < 256; ++b) table[b] = bs.includes(b) ? String.fromCodePoint(b) : String.fromCodePoint(next++);
  return table;
})();

function encodeBytes(tokenizer, bytes) {
  const ids = [];
  let i = 0;
  while (i < bytes.length) {
    let j = i;
    if (validLength(bytes, i) > 0) {
      while (j < bytes.length && validLength(bytes, j) > 0) j += validLength(bytes, j);
      ids.push(...tokenizer.encode(Buffer.from(bytes.slice(i, j)).toString('utf8'), { add_special_tokens: false }));
    } else {
      while (j < bytes.length && validLength(bytes, j) === 0) ++j;
      const piece = Array.from(bytes.slice(i, j), (b) => byteToChar[b]).join('');
      for (const token of tokenizer.model.bpe(piece)) ids.push(tokenizer.model.tokens_to_ids.get(token));
    }
    i = j;
  }
  return ids;
}

function goldens(name, tokenizerJSON, tokenizerConfig, crossCheck) {
  const tokenizer = TokenizerLoader.fromPreTrained({ tokenizerJSON, tokenizerConfig });
  const cases = [];
  for (const [caseName, text] of texts) {
    const ids = tokenizer.encode(text, { add_special_tokens: false });
    // (gpt-tokenizer 4.0's r50k_base does not honour allowedSpecial, so texts with <|endoftext|> skip it.)
    if (crossCheck && !text.includes('<|endoftext|>')) {
      const other = crossCheck(text);
      if (JSON.stringify(other) !== JSON.stringify(ids))
        throw new Error(`${name} ${caseName}: implementations disagree:\n${other}\n${ids}`);
    }
    cases.push({ name: caseName, text, ids });
  }
  for (const [caseName, hex] of invalid) {
    const bytes = Array.from(Buffer.from(hex, 'hex'));
    cases.push({ name: caseName, hex, ids: encodeBytes(tokenizer, bytes) });
  }
  fs.writeFileSync(`golden_${name}.json`, JSON.stringify({ tokenizer: `${name}.json.gz`, cases }, null, 1) + '\n');
  console.log(`golden_${name}.json: ${cases.length} cases, ${cases.reduce((n, c) => n + c.ids.length, 0)} ids`);
}

const gunzipJSON = (file) => JSON.parse(zlib.gunzipSync(fs.readFileSync(file)).toString('utf8'));
const deepseekConfig = JSON.parse(fs.readFileSync(path.join(deps, 'deepseek_v3', 'package', 'models', 'tokenizer_config.json'), 'utf8'));
goldens('deepseek_v3', gunzipJSON('deepseek_v3.json.gz'), deepseekConfig, null);
goldens('gpt2', gunzipJSON('gpt2.json.gz'), { tokenizer_class: 'GPT2Tokenizer' },
        (text) => r50kEncode(text));
