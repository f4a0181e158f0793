// The texts on which the JavaScript tokenizer is compared with the Rust one, made the same way in
// Node and in the browser (a seeded generator): every code point in a small context, fuzzed
// texts, and (text, budget) cases that truncate, pairs among them; and the long-line checks.
import { truncation } from "../src/tokenization.js";

/** Every code point but the surrogates, as "a<c>b <c> x<c><c>": alone, inside a word, doubled. */
export function codePointTexts() {
  const texts = [];
  for (let cp = 0; cp < 0x110000; cp++) {
    if (cp >= 0xd800 && cp <= 0xdfff) continue;
    const c = String.fromCodePoint(cp);
    texts.push(`a${c}b ${c} x${c}${c}`);
  }
  return texts;
}

/** A small deterministic generator (mulberry32). */
export function random(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const PIECES = [
  ..."abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
  ..."     \t\n\r.,!?'\"-()[]{}:;/\\@#$%^&*_+=~`<>|",
  "good", "great", "bad", "the film", "movie", "plot", "story", "was", "very", "dull", "superb",
  "[MASK]", "[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MA", "SK]", "[", "]", "##",
  "<mask>", " <mask>", "<s>", "</s>", "<unk>", "<UNK>", "<pad>", "<", ">", "<ma", "sk>",
  ..."éèêëÉÈàâäÀçÇñÑöÖüÜßẞøØåÅæœıİĳ", "e\u0301", "E\u0300", "a\u0308", "n\u0303", "\u0301",
  ..."ΣσςΑΒΓΔΩαβγδω", "ΟΔΟΣ", "ΣΟΦΟΣ ", "ΌΣΟΣ", "Σ.",
  ..."中文字漢語日本語ひらがなカタカナ한국어", "𠀀", "𠀁", "𪚥", "𫝀", "𬺰", "𰀀", "丽", "丽",
  "😀", "👍🏽", "👩‍👩‍👧", "🇫🇷", "❤️", "🎬", "🍿",
  ..."ابتثआइईকখกขคאבגђжщ",
  "\u0000", "\u0007", "\u000b", "\u000c", "\u001c", "\u007f", "\u0085", "\u00a0", "\u00ad",
  "\u200b", "\u200c", "\u200d", "\u2028", "\u3000", "\ufeff", "\ufffd", "\ue000", "\u{f0000}",
  "\u061d", "\u166d", "\u{111c9}", "\u1734", "\u{1171e}", "\u0897", "\u2e5d", "\u0378", "\ufdd0",
  "\u{e0001}", "\u{e0100}", "\u{10ffff}",
];

/** `n` fuzzed texts of 1 to `maxPieces` pieces, none empty to the Python runtime. */
export function fuzzTexts(seed, n, maxPieces = 24) {
  const next = random(seed);
  const texts = [];
  while (texts.length < n) {
    const count = 1 + Math.floor(next() * maxPieces);
    let text = "";
    for (let i = 0; i < count; i++) text += PIECES[Math.floor(next() * PIECES.length)];
    if (!/^[\t\n\v\f\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$/.test(text)) texts.push(text);
  }
  return texts;
}

/**
 * Truncation cases: {text, maxLength}, text a string or a [text, pair] array, with budgets small
 * enough to truncate, odd and even; a few texts past the length where long texts are cut.
 */
export function truncationCases(seed) {
  const next = random(seed);
  const texts = fuzzTexts(seed + 1, 600, 60);
  const cases = [];
  for (let i = 0; i < texts.length; i++) {
    const maxLength = [1, 2, 3, 4, 5, 8, 9, 16, 17, 64][Math.floor(next() * 10)];
    cases.push({ text: i % 2 ? [texts[i], texts[(i * 7) % texts.length]] : texts[i], maxLength });
  }
  const long = (words) => Array.from({ length: words }, (_, i) => ["good", "film", "ΣΟΦΟΣ", "中", "😀", "[MASK]"][i % 6]).join(" ");
  for (const maxLength of [8, 9, 128]) {
    cases.push({ text: long(3000), maxLength });
    cases.push({ text: "x".repeat(5000) + " good film", maxLength });
  }
  for (const maxLength of [8, 9, 64, 65, 128]) {
    cases.push({ text: [long(3000), long(2999)], maxLength });
    cases.push({ text: [long(2500), "short one"], maxLength });
    cases.push({ text: ["short one", long(4000)], maxLength });
  }
  // Lines without whitespace: cut at punctuation or ideographs; runs of letters and digits trimmed.
  const lines = unspacedLines(20_000, seed);
  for (const maxLength of [9, 64]) {
    cases.push({ text: lines.json, maxLength }, { text: "good " + lines.hex + ",film", maxLength });
    cases.push({ text: [lines.url, lines.json], maxLength }, { text: [lines.hex, "[MASK]" + lines.url], maxLength });
    cases.push({ text: lines.chinese, maxLength }, { text: [lines.chinese, "好" + lines.chinese], maxLength });
  }
  return cases;
}

const WORDS = ["the", "film", "was", "good", "bad", "plot", "story", "very", "dull", "movie", "great"];

/**
 * Lines of `n` characters without whitespace (seeded), as minified JSON, URL-encoding, hex dumps
 * and Chinese make them: JSON and URLs full of punctuation, hex one word of letters and digits,
 * Chinese ideographs with a full-width comma now and then.
 */
export function unspacedLines(n, seed = 3) {
  const next = random(seed);
  const word = () => WORDS[Math.floor(next() * WORDS.length)];
  const fill = (piece) => {
    const pieces = [];
    for (let size = 0; size < n; ) size += pieces[pieces.push(piece()) - 1].length;
    return pieces.join("").slice(0, n);
  };
  return {
    json: fill(() => JSON.stringify({ id: Math.floor(next() * 1e6), title: `${word()}_${word()}`, tags: [word(), word()] }) + ","),
    url: fill(() => encodeURIComponent(`${word()} ${word()}, ${word()}!`) + "&q="),
    hex: fill(() => Math.floor(next() * 2 ** 32).toString(16)),
    chinese: fill(() => String.fromCharCode(...Array.from({ length: 19 }, () => 0x4e00 + Math.floor(next() * 0x5000))) + "，"),
  };
}

/** The ids `tokenizer.encode` gives when nothing is cut: the whole parts' pieces, truncated. */
export function uncut(tokenizer, text, maxLength) {
  const parts = (Array.isArray(text) ? text : [text]).map((part) => tokenizer.pieces(part));
  const items = parts.length === 2 ? tokenizer.template.pairTemplate : tokenizer.template.single;
  const budget = maxLength - items.reduce((n, item) => n + (item.ids?.length ?? 0), 0);
  const keep = truncation(parts[0].length, parts[1]?.length ?? null, budget >= 0 ? budget : Infinity);
  const index = { A: 0, B: 1 };
  return items.flatMap((item) => item.ids ?? parts[index[item.sequence]].slice(0, keep[index[item.sequence]]));
}

/**
 * The long-line checks, alike in Node and in the browser: `longest`, the most characters
 * `tokenizer` handed the library at once for each 20 MB line without whitespace (and for a pair of
 * 1 MB ones), at a budget of 64; `differing`, the cases of 200,000-character lines (alone and in
 * pairs, budgets 9 and 64) whose ids are not those of the uncut tokenization.
 */
export function longLineChecks(tokenizer) {
  const library = tokenizer.tokenizer;
  const sizes = [];
  const encode = library.encode.bind(library);
  library.encode = (text, options) => {
    sizes.push(text.length);
    return encode(text, options);
  };
  const longest = {};
  try {
    const { json, url } = unspacedLines(1_000_000);
    for (const [name, text] of [...Object.entries(unspacedLines(20_000_000)), ["pair", [json, url]]]) {
      sizes.length = 0;
      tokenizer.encode(text, 64);
      longest[name] = Math.max(...sizes);
    }
  } finally {
    delete library.encode;
  }
  const lines = unspacedLines(200_000);
  const texts = [...Object.values(lines), [lines.json, lines.url], [lines.hex, lines.json], ["good", lines.url]];
  const differing = [];
  for (const text of texts) {
    for (const maxLength of [9, 64]) {
      const ids = tokenizer.encode(text, maxLength).ids;
      if (JSON.stringify(ids) !== JSON.stringify(uncut(tokenizer, text, maxLength))) differing.push(`${JSON.stringify(text).slice(0, 40)} at ${maxLength}`);
    }
  }
  return { longest, differing };
}

/** FNV-1a over a list of id arrays, in blocks of `size` texts: compact enough to ship the Rust
 * side's ids of a million texts to a browser. */
export function blockHashes(idLists, size = 4096) {
  const hashes = [];
  for (let start = 0; start < idLists.length; start += size) {
    let h = 0x811c9dc5;
    for (const ids of idLists.slice(start, start + size)) {
      for (const id of [...ids, -1]) h = Math.imul(h ^ (id & 0xffffffff), 16777619) >>> 0;
    }
    hashes.push(h);
  }
  return hashes;
}
