// The texts on which the JavaScript tokenizer is compared with the Rust one, made the same way in
// Node and in the browser (a seeded generator): every code point in a small context, fuzzed
// texts, and (text, budget) cases that truncate, pairs among them.

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
  // Long pairs with budgets of 64+ only: the Rust tokenizer pairs every overflow window of one part
  // with every window of the other, so two long parts at budget 8 take gigabytes in Python.
  for (const maxLength of [8, 9, 128]) {
    cases.push({ text: long(3000), maxLength });
    cases.push({ text: "x".repeat(5000) + " good film", maxLength });
  }
  for (const maxLength of [64, 65, 128]) {
    cases.push({ text: [long(3000), long(2999)], maxLength });
    cases.push({ text: [long(2500), "short one"], maxLength });
    cases.push({ text: ["short one", long(4000)], maxLength });
  }
  return cases;
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
