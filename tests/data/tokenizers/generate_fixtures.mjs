// Writes the tokenizer test fixtures with Hugging Face's own `tokenizers`
// library (its npm package, the Rust implementation):
//
//   mkdir -p /tmp/tokfix && cd /tmp/tokfix && npm install tokenizers@0.23.2
//   NODE_PATH=/tmp/tokfix/node_modules node tests/data/tokenizers/generate_fixtures.mjs
//
// (run from the repository root; NODE_PATH is read below because ES modules
// ignore it). Output, for each tokenizer NAME:
//   NAME.encode.jsonl  {"text", "ids" (add_special_tokens), "ids_plain" (without),
//                       "decoded" (decode(ids_plain)), "decoded_skip" (decode(ids, skip))}
//   NAME.decode.jsonl  {"ids" (random), "text" (decode), "text_skip" (decode, skip special)}
// and the synthetic tokenizers under synthetic/, built here from the real
// files, which exercise what the real ones do not (Llama-3 and Qwen2 split
// regexes, ignore_merges, NFC/NFD, every split behaviour, Metaspace,
// lstrip/rstrip/single_word added tokens).
// Everything is deterministic: the random strings come from a seeded generator.

import fs from 'node:fs';
import path from 'node:path';
import { createRequire } from 'node:module';

const require = createRequire(path.join(process.env.NODE_PATH || process.cwd(), 'x.js'));
const { Tokenizer } = require('tokenizers');

const here = path.dirname(new URL(import.meta.url).pathname);
const repo = path.resolve(here, '../../..');

// ---------------------------------------------------------------- random ---
function mulberry32(seed) {
  return function () {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = mulberry32(20261128);
const randInt = (lo, hi) => lo + Math.floor(rand() * (hi - lo + 1));  // inclusive
const pick = (list) => list[Math.floor(rand() * list.length)];

// ------------------------------------------------------------- the texts ---
const handWritten = [
  '', ' ', '  ', 'a', 'Hello world', 'Hello, world!', 'hello world  foo', ' leading space',
  'trailing spaces   ', '   ', '\t', '\t\t', '\n', '\n\n\n', ' \n ', '\r\n', 'a  \n  b',
  'a   b\tc\n\n  d', 'if x:\n        return y', 'line1\nline2\r\nline3\rline4',
  "I don't know, DON'T ask; I'll see.", "I'm here. I'M HERE. You're, YOU'RE, we've, WE'VE",
  "she'd he'll they'LL it's IT'S isn't ISN'T", "'s 't 're 've 'm 'll 'd", "'S 'T 'RE 'VE 'M 'LL 'D",
  "rock'n'roll", "''quoted''", 'x = 12345 + 3.14159', '1234567890', '12', '123', '1234',
  '1,000,000.00', '3.14', '-42', '2026-11-28', 'abc123def456', '1 2 3 4 5', '٣٤٥ ١٢',
  '１２３ ＡＢＣ', 'Ⅻ ⅳ', 'x² + y³ = z½ ¼ ¾', 'café naïve résumé', 'cafe\u0301 nai\u0308ve',
  'Ångström Ünïcödé', 'ﬁ ﬂ ﬀ', 'ǅ ǈ', 'Σίσυφος ΣΊΣΥΦΟΣ', 'İstanbul ı I', 'Straße STRASSE',
  '你好，世界', '日本語のテキストです。', '한국어 텍스트', '한국어', '각', 'Привет, мир!',
  'Γειά σου Κόσμε', 'مرحبا بالعالم', 'שלום עולם', 'नमस्ते दुनिया', 'สวัสดีชาวโลก', 'ሰላም',
  'Hello 世界 мир 🌍!', '👋🌍', '👨‍👩‍👧‍👦', '🏳️‍🌈', '🇫🇷🇩🇪', '❤️', '😀😃😄😁', 'a😀b',
  '\x00', 'a\x00b', '\x01\x02\x03\x04\x05\x06\x07\x08', 'a\x0bb', 'a\x0cb', '\x0e\x0f\x10',
  '\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b', '\x1c', ' \x1cb', ' \x0bb', '\x1d\x1e\x1f',
  'a\x1fb', '\x7f', 'a\x7fb', '\x85', 'a\x85b', ' \x85 b', '\xa0', 'a\xa0b', ' \xa0 b',
  'a\u2028b', 'a\u2029b', 'a\u3000b', 'a\u1680b', 'a\u180eb', ' \u180e b', 'a\u2000\u2001b',
  'a\u200bb', 'a\u200db', 'a\u202fb', 'a\u205fb', '\ufeffBOM', 'a\ufffdb', '\u0300', '\u0301a',
  '<|endoftext|>', 'a<|endoftext|>b', 'Hello<|endoftext|> world', '<|endoftext|><|endoftext|>',
  '<|endoftext', '<s>', '</s>', '<unk>', '<s>Hello</s>', 'a<s>b', ' <s> ', '<s><s>',
  '>>TITLE<<', '>>ABSTRACT<< text >>INTRODUCTION<<', '<mask>', 'a <mask> b', 'x<mask>y',
  '<|user|>', 'hi <|user|> there', 'hi<|user|>there', '<|begin_of_text|>Hi', '<|im_start|>user\nHi<|im_end|>',
  'def f(x):\n\treturn x ** 2  # square\n', 'for (int i = 0; i < n; ++i) { a[i] = b[i]; }',
  '<html><body class="x">Hi</body></html>', 'https://example.com/path?q=1&r=2#frag',
  'user@example.com', '**bold** _italic_ `code` # Title', '- item\n- item 2\n\n> quote',
  '$100 €50 £30 ¥20', '50% off!!!', '...', '!!!???', '---', '"quoted" «guillemets» „low“',
  '(parens) [brackets] {braces}', 'e.g. i.e. etc.', 'U.S.A.', 'well-known self-evident',
  'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
  ' '.repeat(40), '\n'.repeat(20), 'ab'.repeat(60), '🙂'.repeat(30), '9'.repeat(50),
  'The quick brown fox jumps over the lazy dog.', 'THE QUICK BROWN FOX',
  'Once upon a time, there was a little girl named Lily. She loved to play outside.',
  'One day, Tom said, "Let\'s go to the park!"', 'Lily and Ben are friends. They like to play.',
];

const wordList = ['the', 'The', 'a', 'cat', 'dog', 'Lily', 'ran', 'happy', 'big', 'tree',
  'jumped', 'and', 'OK', 'HTTP', 'JSON', 'camelCase', 'snake_case', 'naïve', 'über', 'mañana',
  '東京', 'Москва', 'Ελλάδα', '😀', 'x', 'y2k', '42', '3.5', '1000000', "don't", "I'M", "it's",
  "WE'LL", 'e-mail', 'co-op'];
const separators = [' ', ' ', ' ', '  ', '   ', '\t', '\n', '\n\n', ' \n', ', ', '. ', '! ',
  '? ', '; ', ': ', ' - ', '(', ')', '"', "'", '/', '\\', '_', '', '\r\n', '\u00a0', '\u3000'];

function randomWordText() {
  const n = randInt(1, 14);
  let s = rand() < 0.2 ? pick(separators) : '';
  for (let i = 0; i < n; i++) {
    s += pick(wordList);
    if (i + 1 < n) s += pick(separators);
  }
  if (rand() < 0.3) s += pick(separators);
  return s;
}

// Code point ranges, weighted toward what tokenizers treat specially.
const ranges = [
  [0x20, 0x7e, 8], [0x00, 0x1f, 2], [0x7f, 0x9f, 1], [0xa0, 0xff, 2], [0x100, 0x24f, 2],
  [0x300, 0x36f, 2], [0x370, 0x3ff, 1], [0x400, 0x4ff, 1], [0x590, 0x6ff, 1], [0x900, 0x97f, 1],
  [0xe00, 0xe7f, 1], [0x1100, 0x11ff, 1], [0x1e00, 0x1eff, 1], [0x2000, 0x206f, 2],
  [0x2070, 0x218f, 1], [0x3000, 0x30ff, 2], [0x4e00, 0x9fff, 2], [0xac00, 0xd7a3, 1],
  [0xfb00, 0xfb4f, 1], [0xff00, 0xffef, 1], [0x1f300, 0x1faff, 2], [0x20000, 0x2a6df, 1],
  [0x0, 0x10ffff, 1],
];
const totalWeight = ranges.reduce((sum, r) => sum + r[2], 0);
function randomCodePoint() {
  for (;;) {
    let w = rand() * totalWeight;
    let range = ranges[0];
    for (const r of ranges) {
      if (w < r[2]) { range = r; break; }
      w -= r[2];
    }
    const cp = randInt(range[0], range[1]);
    if (cp >= 0xd800 && cp <= 0xdfff) continue;  // not scalar values
    return cp;
  }
}
function randomUnicodeText() {
  const n = randInt(1, 40);
  let s = '';
  for (let i = 0; i < n; i++) {
    s += rand() < 0.15 ? pick(separators) : String.fromCodePoint(randomCodePoint());
  }
  return s;
}

const specialsToSprinkle = ['<|endoftext|>', '<s>', '</s>', '>>TITLE<<', '<mask>', '<|user|>',
  '<|im_start|>', '<|begin_of_text|>'];
function randomMixedText() {
  let s = rand() < 0.5 ? randomWordText() : randomUnicodeText();
  if (rand() < 0.3) s += pick(specialsToSprinkle) + randomWordText();
  return s;
}

const texts = [...handWritten];
for (let i = 0; i < 90; i++) texts.push(randomWordText());
for (let i = 0; i < 110; i++) texts.push(randomUnicodeText());
for (let i = 0; i < 40; i++) texts.push(randomMixedText());
// A long text, to exercise long inputs.
texts.push(Array.from({ length: 120 }, randomWordText).join(' '));

// ---------------------------------------------------- synthetic tokenizers ---
function readJson(file) { return JSON.parse(fs.readFileSync(file, 'utf8')); }

function bytesToUnicode() {
  const bs = [];
  for (let b = 0x21; b <= 0x7e; b++) bs.push(b);
  for (let b = 0xa1; b <= 0xac; b++) bs.push(b);
  for (let b = 0xae; b <= 0xff; b++) bs.push(b);
  const map = new Map();
  let next = 0x100;
  for (let b = 0; b < 256; b++) map.set(b, String.fromCodePoint(bs.includes(b) ? b : next++));
  return map;
}

// A byte-level vocabulary cut from GPT-2's: the 256 byte symbols plus the
// first `mergeCount` merges (ids renumbered, kept in GPT-2's id order).
function byteLevelSubset(mergeCount) {
  const gpt2 = readJson(path.join(here, 'gpt2/tokenizer.json')).model;
  const tokens = new Set(bytesToUnicode().values());
  const merges = [];
  for (const line of gpt2.merges.slice(0, mergeCount)) {
    const [a, b] = line.split(' ');
    if (!tokens.has(a) || !tokens.has(b)) continue;
    merges.push([a, b]);
    tokens.add(a + b);
  }
  const ordered = [...tokens].sort((x, y) => gpt2.vocab[x] - gpt2.vocab[y]);
  const vocab = {};
  ordered.forEach((t, i) => { vocab[t] = i; });
  return { vocab, merges };
}

function addedToken(id, content, extra = {}) {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false,
    special: true, ...extra };
}

const llama3Regex = String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;
const qwen2Regex = String.raw`(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`;

function syntheticTokenizers() {
  const byteLevel = byteLevelSubset(6000);
  const n = Object.keys(byteLevel.vocab).length;
  const bpe = (extra = {}) => ({ type: 'BPE', dropout: null, unk_token: null,
    continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false,
    byte_fallback: false, ...extra });
  const stories = readJson(path.join(repo, 'models/stories260k/tokenizer.json'));
  const storiesAdded = [addedToken(0, '<unk>'), addedToken(1, '<s>'), addedToken(2, '</s>')];
  const storiesTemplate = {
    type: 'TemplateProcessing',
    single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
    pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
    special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
  };
  const sentencepieceDecoder = { type: 'Sequence', decoders: [
    { type: 'Replace', pattern: { String: '▁' }, content: ' ' }, { type: 'ByteFallback' },
    { type: 'Fuse' }, { type: 'Strip', content: ' ', start: 1, stop: 0 }] };
  const base = { version: '1.0', truncation: null, padding: null };
  return {
    // Llama 3's layout: Split(regex) then ByteLevel without its regex; ignore_merges.
    'llama3-style': { ...base,
      added_tokens: [addedToken(n, '<|begin_of_text|>'), addedToken(n + 1, '<|end_of_text|>'),
        addedToken(n + 2, '<|eot_id|>')],
      normalizer: null,
      pre_tokenizer: { type: 'Sequence', pretokenizers: [
        { type: 'Split', pattern: { Regex: llama3Regex }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false }] },
      post_processor: { type: 'Sequence', processors: [
        { type: 'ByteLevel', add_prefix_space: true, trim_offsets: false, use_regex: true },
        { type: 'TemplateProcessing',
          single: [{ SpecialToken: { id: '<|begin_of_text|>', type_id: 0 } },
            { Sequence: { id: 'A', type_id: 0 } }],
          pair: [{ Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
          special_tokens: { '<|begin_of_text|>': { id: '<|begin_of_text|>', ids: [n],
            tokens: ['<|begin_of_text|>'] } } }] },
      decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: bpe({ ignore_merges: true, vocab: byteLevel.vocab, merges: byteLevel.merges }) },
    // Qwen2's layout: NFC, single-digit split regex, ByteLevel without its regex.
    'qwen2-style': { ...base,
      added_tokens: [addedToken(n, '<|endoftext|>'), addedToken(n + 1, '<|im_start|>'),
        addedToken(n + 2, '<|im_end|>')],
      normalizer: { type: 'NFC' },
      pre_tokenizer: { type: 'Sequence', pretokenizers: [
        { type: 'Split', pattern: { Regex: qwen2Regex }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false }] },
      post_processor: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false,
        use_regex: false },
      decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
      model: bpe({ vocab: byteLevel.vocab, merges: byteLevel.merges }) },
    // SmolLM's layout: Digits before ByteLevel (with its regex, add_prefix_space).
    'digits-bytelevel': { ...base,
      added_tokens: [addedToken(n, '<|endoftext|>')],
      normalizer: null,
      pre_tokenizer: { type: 'Sequence', pretokenizers: [
        { type: 'Digits', individual_digits: true },
        { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true }] },
      post_processor: null,
      decoder: { type: 'ByteLevel', add_prefix_space: true, trim_offsets: true, use_regex: true },
      model: bpe({ vocab: byteLevel.vocab, merges: byteLevel.merges }) },
    // Newer Llama 2 / Mistral layout: no normalizer, Metaspace(prepend_scheme first),
    // Metaspace decoder; added tokens with lstrip/rstrip and single_word.
    'metaspace-first': { ...base,
      added_tokens: [...storiesAdded,
        addedToken(512, '<mask>', { lstrip: true, rstrip: true, special: false }),
        addedToken(513, '<|user|>', { single_word: true })],
      normalizer: null,
      pre_tokenizer: { type: 'Metaspace', replacement: '▁', prepend_scheme: 'first', split: false },
      post_processor: storiesTemplate,
      decoder: { type: 'Sequence', decoders: [
        { type: 'Metaspace', replacement: '▁', prepend_scheme: 'first', split: false },
        { type: 'ByteFallback' }, { type: 'Fuse' }] },
      model: stories.model },
    // Every split behaviour and the Unicode normalizers.
    'split-behaviors': { ...base,
      added_tokens: storiesAdded,
      normalizer: { type: 'Sequence', normalizers: [
        { type: 'NFD' }, { type: 'StripAccents' }, { type: 'Lowercase' },
        { type: 'Replace', pattern: { Regex: ' {2,}' }, content: ' ' },
        { type: 'Strip', strip_left: true, strip_right: true }] },
      pre_tokenizer: { type: 'Sequence', pretokenizers: [
        { type: 'Punctuation', behavior: 'MergedWithPrevious' },
        { type: 'Digits', individual_digits: false },
        { type: 'Split', pattern: { Regex: '[aeiou]+' }, behavior: 'MergedWithNext', invert: false },
        { type: 'Split', pattern: { String: '-' }, behavior: 'Removed', invert: false },
        { type: 'Split', pattern: { Regex: '\\p{Lo}' }, behavior: 'Contiguous', invert: false },
        { type: 'Metaspace', replacement: '▁', prepend_scheme: 'always', split: true }] },
      post_processor: storiesTemplate,
      decoder: sentencepieceDecoder,
      model: stories.model },
    'whitespace-nfc': { ...base,
      added_tokens: storiesAdded,
      normalizer: { type: 'Sequence', normalizers: [{ type: 'NFC' },
        { type: 'Prepend', prepend: '▁' }, { type: 'Replace', pattern: { String: ' ' }, content: '▁' }] },
      pre_tokenizer: { type: 'Sequence', pretokenizers: [
        { type: 'Split', pattern: { Regex: '▁' }, behavior: 'MergedWithPrevious', invert: true },
        { type: 'Whitespace' },
        { type: 'Split', pattern: { Regex: '\\s+|\\d' }, behavior: 'Isolated', invert: true },
        { type: 'WhitespaceSplit' }] },
      post_processor: null,
      decoder: sentencepieceDecoder,
      model: stories.model },
  };
}

// ------------------------------------------------------------- fixtures ---
async function writeFixtures(name, file) {
  const tokenizer = Tokenizer.fromFile(file);
  const encodeLines = [];
  for (const text of texts) {
    const ids = (await tokenizer.encode(text, null, { addSpecialTokens: true })).getIds();
    const plain = (await tokenizer.encode(text, null, { addSpecialTokens: false })).getIds();
    encodeLines.push(JSON.stringify({ text, ids, ids_plain: plain,
      decoded: await tokenizer.decode(plain, false), decoded_skip: await tokenizer.decode(ids, true) }));
  }
  const vocabSize = tokenizer.getVocabSize(true);
  const specialIds = Object.values(tokenizer.getVocab(true)).filter((id) => id >= vocabSize - 64 || id < 4);
  const decodeLines = [];
  for (let i = 0; i < 80; i++) {
    const length = randInt(1, 30);
    const ids = [];
    for (let k = 0; k < length; k++) {
      ids.push(rand() < 0.1 ? pick(specialIds) : randInt(0, vocabSize - 1));
    }
    decodeLines.push(JSON.stringify({ ids, text: await tokenizer.decode(ids, false),
      text_skip: await tokenizer.decode(ids, true) }));
  }
  fs.writeFileSync(path.join(here, `${name}.encode.jsonl`), encodeLines.join('\n') + '\n');
  fs.writeFileSync(path.join(here, `${name}.decode.jsonl`), decodeLines.join('\n') + '\n');
  console.log(`${name}: ${encodeLines.length} encode, ${decodeLines.length} decode fixtures`);
}

for (const [name, json] of Object.entries(syntheticTokenizers())) {
  const dir = path.join(here, 'synthetic', name);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(json) + '\n');
}
await writeFixtures('gpt2', path.join(here, 'gpt2/tokenizer.json'));
await writeFixtures('phi-2', path.join(here, 'phi-2/tokenizer.json'));
await writeFixtures('falcon-7b', path.join(here, 'falcon-7b/tokenizer.json'));
await writeFixtures('stories260k', path.join(repo, 'models/stories260k/tokenizer.json'));
for (const name of Object.keys(syntheticTokenizers())) {
  await writeFixtures(name, path.join(here, 'synthetic', name, 'tokenizer.json'));
}
