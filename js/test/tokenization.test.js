// The tokenizer fixes, without Python: the cases the Rust tokenizer is known to give (found by
// js/scripts/compare_tokenizers.mjs, which compares every code point; see js/README.md).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { BertTokenizer, rustCompatible, truncation } from "../src/tokenization.js";
import { TINY } from "./config.js";
import { longLineChecks, uncut } from "./tokenizer-cases.js";

const json = JSON.parse(readFileSync(join(TINY.sentiment, "tokenizer.json"), "utf8"));
const tokenizer = new BertTokenizer(json, "tokenizer.json");
const tokens = (text) => tokenizer.pieces(text).map((id) => tokenizer.tokenizer.id_to_token(id));

test("what JavaScript does differently from Rust is replaced before the library sees it", () => {
  assert.equal(rustCompatible("ΟΔΟΣ Σ"), "ΟΔΟσ σ"); // Rust lowercases every Σ to σ, JS a final one to ς
  assert.equal(rustCompatible("a𠀀b"), "a 𠀀 b"); // CJK above U+FFFF: a word of its own
  assert.equal(rustCompatible("a\u061db"), "a\ufdd0b"); // punctuation to V8, an unknown letter to Rust
  assert.equal(rustCompatible("a\u166db"), "a \ufdd0 b"); // punctuation to Rust, a symbol to V8
  assert.equal(rustCompatible("a\u1734b"), "a\u0000b"); // a mark Rust strips, a spacing mark to V8
  assert.equal(rustCompatible("plain ascii, é and 中"), "plain ascii, é and 中");
});

test("ids, as the Rust tokenizer gives them", () => {
  assert.deepEqual(tokens("The Film WAS good!"), ["the", "film", "was", "good", "!"]);
  assert.deepEqual(tokens("a𠀀b"), ["a", "[UNK]", "b"]);
  assert.deepEqual(tokens("a\u061db c"), ["[UNK]", "c"]);
  assert.deepEqual(tokens("a\u166db"), ["a", "[UNK]", "b"]);
  assert.deepEqual(tokens("ab\u1734c"), ["a", "##b", "##c"]);
});

test("truncation: Rust's longest_first", () => {
  assert.deepEqual(truncation(10, null, 4), [4, 0]);
  assert.deepEqual(truncation(3, 2, 5), [3, 2]); // fits
  assert.deepEqual(truncation(2, 10, 6), [2, 4]); // only the longer part is cut
  assert.deepEqual(truncation(10, 10, 5), [2, 3]); // equal: the second gets the odd token
  assert.deepEqual(truncation(10, 9, 5), [3, 2]); // the longer part gets it
  assert.deepEqual(truncation(4, 3, 0), [0, 0]);
});

test("encode: the template's special tokens, type ids, the budget", () => {
  const cls = json.post_processor.special_tokens["[CLS]"].ids[0];
  const sep = json.post_processor.special_tokens["[SEP]"].ids[0];
  const single = tokenizer.encode("good film good film", 4);
  assert.deepEqual(single.ids, [cls, ...tokenizer.pieces("good film"), sep]);
  assert.equal(single.truncated, true);
  const pair = tokenizer.encode(["good", "bad plot"], 64);
  assert.deepEqual(pair.typeIds, [0, 0, 0, 1, 1, 1]);
  assert.equal(pair.truncated, false);
  // a budget below the special tokens: Rust's unsigned subtraction wraps, so nothing is cut
  assert.equal(tokenizer.encode("good film", 1).ids.length, 4);
  // long texts are cut at whitespace before tokenizing, with the same tokens
  const long = "good film ".repeat(3000);
  assert.deepEqual(tokenizer.encode(long, 64).ids, [cls, ...tokenizer.pieces(long).slice(0, 62), sep]);
});

test("tokenizers the fixes were not verified for are refused", () => {
  const cased = structuredClone(json);
  cased.normalizer.lowercase = false;
  assert.throws(() => new BertTokenizer(cased, "tokenizer.json"), /uncased BERT WordPiece tokenizers only/);
  const bpe = structuredClone(json);
  bpe.model.type = "BPE";
  assert.throws(() => new BertTokenizer(bpe, "tokenizer.json"), /uncased BERT WordPiece tokenizers only/);
  const held = structuredClone(json);
  held.model.vocab["\u061d"] = Object.keys(held.model.vocab).length;
  assert.throws(() => new BertTokenizer(held, "tokenizer.json"), /its vocabulary holds U\+61D, which JavaScript and the Rust tokenizer handle differently/);
});

test("a 20 MB line without whitespace reaches the library in kilobytes, with the same tokens", () => {
  const { longest, differing } = longLineChecks(new BertTokenizer(json, "tokenizer.json"));
  for (const [name, n] of Object.entries(longest)) assert.ok(n < 3 * 4096, `${name}: ${n} characters reached the library`);
  assert.deepEqual(differing, []);
});

test("a cut or a trimmed word never splits an added token", () => {
  const added = structuredClone(json);
  const vocab = added.model.vocab;
  added.added_tokens = ["[MASK]", "[SEP]", "madeup7"].map((content) => ({
    id: vocab[content] ?? Object.keys(vocab).length, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  }));
  const t = new BertTokenizer(added, "tokenizer.json");
  // 61 tokens, then "[MASK]" across the first place a cut may go (4,096 characters): cut inside
  // it, the 62nd and last token the budget of 64 holds would be "[", not [MASK]
  const first = ("good" + " ".repeat(63)).repeat(60) + "good" + " ".repeat(70);
  const texts = [
    first + "[MASK]" + ",good".repeat(100),
    "[MASK]" + "x".repeat(5000) + "[SEP]" + "y".repeat(300) + ",good",
    "x".repeat(5000) + "madeup7" + "y".repeat(5000), // a token of letters and digits: not trimmed
  ];
  for (const text of texts) assert.deepEqual(t.encode(text, 64).ids, uncut(t, text, 64));
});
