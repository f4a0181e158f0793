// Texts to token ids, exactly as the Python runtime makes them (ipt_edge/tokenizer.py, which
// runs the Rust `tokenizers` library): the tokenizer.json is read by @huggingface/tokenizers, and
// this module adds what that library does differently from Rust, found by comparing the ids of
// every code point and of fuzzed texts (js/scripts/compare_tokenizers.mjs):
//
// - it ignores the file's truncation: each part is encoded without special tokens, truncated
//   here as Rust's `longest_first` does, and the post-processor's template adds [CLS]/[SEP];
// - JS lowercases a word-final capital sigma to "ς" (Rust: "σ");
// - it walks UTF-16 halves, so CJK ideographs above U+FFFF are not split off as words;
// - Rust's Unicode tables are older than V8's: the code points in unicode-table.js are replaced,
//   before the library sees them, by what gives Rust's tokens (`rustCompatible`).
//
// Only the tokenizers these fixes were verified for are accepted: uncased BERT WordPiece
// (BertNormalizer with clean_text, handle_chinese_chars, lowercase; BertPreTokenizer). Anything
// else is refused when the bundle loads, rather than tokenized differently.
import { Tokenizer } from "@huggingface/tokenizers";
import { RUST_FORMS, RUST_GONE, RUST_SOLID, RUST_SPLIT } from "./unicode-table.js";
import { BundleError } from "./errors.js";
import { ASTRAL_CJK, isAstralCjk } from "./cjk.js";


// A noncharacter: unassigned in every Unicode version, so the library keeps it inside a word, and
// no vocabulary holds it. It stands in for a character Rust keeps but JS would split or delete.
const STAND_IN = "\uFDD0";
const parse = (ranges) => ranges.split(" ").filter(Boolean).map((r) => r.split("-").map((h) => parseInt(h, 16)));
const charClass = (ranges) => ranges.map(([lo, hi = lo]) => `\\u{${lo.toString(16)}}-\\u{${hi.toString(16)}}`).join("");
const FEW = new Map(); // the gone and split code points -> their replacement
for (const [cp] of parse(RUST_GONE)) FEW.set(cp, "\u0000"); // deleted by the library's clean_text too
for (const [cp] of parse(RUST_SPLIT)) FEW.set(cp, ` ${STAND_IN} `); // a word of its own: [UNK]
const TABLE = charClass([...parse(RUST_GONE), ...parse(RUST_SPLIT), ...parse(RUST_SOLID)]);
const IN_TABLE = new RegExp(`[${TABLE}]`, "u");
const FIXES = new RegExp(`[${TABLE}${charClass(ASTRAL_CJK)}\u03a3]`, "gu");

/** The text with every character whose handling differs from Rust's replaced as described above. */
export function rustCompatible(text) {
  return text.replace(FIXES, (c) => {
    if (c === "\u03a3") return "\u03c3"; // lowercase is required, and Rust gives this wherever it is
    const cp = c.codePointAt(0);
    if (isAstralCjk(cp)) return ` ${c} `; // a word of its own, as Rust makes it
    return FEW.get(cp) ?? STAND_IN; // else one Rust keeps in its word: [UNK], as the stand-in gives
  });
}

// Python's str.isspace(): a text of only these is "empty" (ipt_edge/tokenizer.py).
const PY_SPACE = /^[\t\n\v\f\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]*$/;
const LONE_SURROGATE = /[\ud800-\udfff]/u; // with the u flag, a valid pair is one character
// Where a text may be cut: before whitespace (both libraries split there; no token spans it), and,
// where every added token is matched in the raw text whatever its neighbours, before ASCII
// punctuation or a CJK ideograph below U+FFFF (each a word of its own to both); never where an
// added token spans the cut.
const SPACE = /[ \t\n\r]/g;
const SPACE_OR_WORD = /[ \t\n\r!-/:-@[-`{-~\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]/g;
const NOT_ALPHANUMERIC = /[^A-Za-z0-9]/g;

/** Checks one part of a text as the Python runtime does; `index` names it in errors. */
export function checkText(part, index) {
  if (typeof part !== "string") throw new TypeError(`text ${index} is ${part === null ? "null" : typeof part}, expected str`);
  if (PY_SPACE.test(part)) throw new RangeError(`text ${index} is empty`);
  if (LONE_SURROGATE.test(part)) throw new RangeError(`text ${index} is not valid UTF-8 (it holds a lone surrogate)`);
}

export class BertTokenizer {
  /** @param {object} json the parsed tokenizer.json; @param {string} name the file, for errors */
  constructor(json, name) {
    const fail = (why) => {
      throw new BundleError(`${name}: ${why}`);
    };
    const normalizer = json?.normalizer;
    if (
      normalizer?.type !== "BertNormalizer" || !normalizer.clean_text || !normalizer.handle_chinese_chars ||
      !normalizer.lowercase || normalizer.strip_accents === false ||
      json.pre_tokenizer?.type !== "BertPreTokenizer" || json.model?.type !== "WordPiece"
    ) {
      fail("the JavaScript runtime reproduces the Rust tokenizer for uncased BERT WordPiece tokenizers only " +
        "(BertNormalizer with lowercase, BertPreTokenizer, WordPiece); this one differs");
    }
    try {
      this.tokenizer = new Tokenizer(json, {});
    } catch (error) {
      fail(`not a tokenizer @huggingface/tokenizers can load (${String(error.message).slice(0, 200)})`);
    }
    this.template = template(json.post_processor, fail);
    this.padId = padId(json, this.tokenizer, fail);
    const added = json.added_tokens ?? [];
    this.cuttable = added.every((t) => !/[ \t\n\r]/.test(t.content));
    // matched in the raw text, whatever its neighbours (single_word looks at them)
    const raw = added.every((t) => t.normalized === false && !t.single_word);
    this.cut = raw ? SPACE_OR_WORD : SPACE;
    this.added = added.map((t) => t.content).filter(Boolean);
    this.span = Math.max(1, ...this.added.map((t) => t.length));
    // A run of ASCII letters and digits longer than WordPiece's longest word is one [UNK] however
    // long it is; it is trimmed to that many characters and one more if no added token can be in
    // its middle (each holds something else), keeping `span` at each end for those at its edges.
    const longest = json.model.max_input_chars_per_word ?? 100;
    this.keep = Math.max(longest + 1, this.span);
    const trimmable = raw && this.added.every((t) => /[^A-Za-z0-9]/.test(t));
    this.longRun = trimmable ? new RegExp(`[A-Za-z0-9]{${this.keep + this.span + 1}}`, "g") : null;
    checkVocabulary(json, this.tokenizer, fail);
  }

  /** Token ids of one part, no special tokens, not truncated. */
  pieces(text) {
    return this.tokenizer.encode(rustCompatible(text), { add_special_tokens: false }).ids;
  }

  /**
   * Ids of one part: all of them, or a prefix of more than `budget` of them with the exact count
   * (`count`), for a text too long to tokenize whole (it is cut and trimmed; see `window`).
   */
  part(text, budget, needCount) {
    const limit = Math.max(4096, 32 * budget);
    if (text.length <= limit) {
      const ids = this.pieces(text);
      return { ids, count: ids.length };
    }
    for (let from = limit; ; ) {
      const { short, stop } = this.window(text, 0, from);
      const ids = this.pieces(short);
      if (stop === text.length) return { ids, count: ids.length };
      if (ids.length > budget) {
        if (!needCount) return { ids, count: Infinity };
        let count = ids.length; // the rest, window by window: same sum, bounded memory
        for (let start = stop; start < text.length; ) {
          const next = this.window(text, start, start + limit);
          count += this.pieces(next.short).length;
          start = next.stop;
        }
        return { ids, count };
      }
      from = Math.max(4 * from, stop + 1); // past a long uncut stretch at once: it is trimmed anew each time
    }
  }

  /**
   * {short, stop}: `short` has the tokens of text.slice(start, stop), where `start` is 0 or a cut
   * point and `stop` the first cut point from `from` (or text.length); long runs of letters and
   * digits trimmed.
   */
  window(text, start, from) {
    const stop = this.cutAt(text, from);
    return { short: this.trim(text.slice(start, stop)), stop };
  }

  /** `text` with each run of letters and digits too long for a word trimmed (see the constructor). */
  trim(text) {
    if (!this.longRun) return text;
    const kept = [];
    let last = 0;
    this.longRun.lastIndex = 0;
    for (let match; (match = this.longRun.exec(text)); ) {
      // its end found by a search for one character: a quantifier over megabytes overflows V8's stack
      NOT_ALPHANUMERIC.lastIndex = match.index;
      const end = NOT_ALPHANUMERIC.exec(text)?.index ?? text.length;
      kept.push(text.slice(last, match.index + this.keep), text.slice(end - this.span, end));
      last = this.longRun.lastIndex = end;
    }
    kept.push(text.slice(last));
    return kept.join("");
  }

  /** The first index from `from` where the text may be cut, or text.length. */
  cutAt(text, from) {
    if (!this.cuttable) return text.length;
    this.cut.lastIndex = from;
    for (let match; (match = this.cut.exec(text)); ) {
      const near = text.slice(Math.max(0, match.index - this.span + 1), match.index + this.span - 1);
      if (!this.added.some((token) => near.includes(token))) return match.index;
    }
    return text.length;
  }

  /**
   * `text` (a string, or [text, textPair]) to ids and type ids with the token budget
   * `maxLength`, special tokens included: Rust's `longest_first` truncation, then the template.
   */
  encode(text, maxLength) {
    const pair = Array.isArray(text);
    const { single, pairTemplate } = this.template;
    const items = pair ? pairTemplate : single;
    const added = items.reduce((n, item) => n + (item.ids?.length ?? 0), 0);
    // Rust computes max_length - added in unsigned arithmetic: below zero it wraps, so no truncation.
    const budget = maxLength - added >= 0 ? maxLength - added : Infinity;
    const a = this.part(pair ? text[0] : text, budget, pair);
    const b = pair ? this.part(text[1], budget, true) : null;
    const [keepA, keepB] = truncation(a.count, b?.count ?? null, budget);
    const parts = { A: a.ids.slice(0, keepA), B: b ? b.ids.slice(0, keepB) : [] };
    const ids = [];
    const typeIds = [];
    for (const item of items) {
      const values = item.ids ?? parts[item.sequence];
      for (const id of values) {
        ids.push(id);
        typeIds.push(item.typeId);
      }
    }
    return { ids, typeIds, truncated: keepA < a.count || (b !== null && keepB < b.count) };
  }
}

/** How many tokens of each part Rust keeps (tokenizers' truncate_encodings, LongestFirst). */
export function truncation(n1, n2, max) {
  if (n2 === null) return [Math.min(n1, max), 0];
  if (max === 0) return [0, 0];
  if (n1 + n2 <= max) return [n1, n2];
  const swap = n1 > n2;
  let [short, long] = swap ? [n2, n1] : [n1, n2];
  long = short > max ? short : Math.max(short, max - short);
  if (short + long > max) {
    short = Math.floor(max / 2);
    long = short + (max % 2);
  }
  return swap ? [long, short] : [short, long];
}

/** The post-processor as lists of {ids, typeId} (special tokens) and {sequence: "A"|"B", typeId}. */
function template(processor, fail) {
  const special = (token, typeId) => ({ ids: [token[1]], typeId });
  if (processor?.type === "BertProcessing") {
    const { cls, sep } = processor;
    return {
      single: [special(cls, 0), { sequence: "A", typeId: 0 }, special(sep, 0)],
      pairTemplate: [special(cls, 0), { sequence: "A", typeId: 0 }, special(sep, 0), { sequence: "B", typeId: 1 }, special(sep, 1)],
    };
  }
  if (processor?.type === "RobertaProcessing") { // MPNet: <s> A </s> </s> B </s>, type ids all 0
    const { cls, sep } = processor;
    const a = { sequence: "A", typeId: 0 };
    return {
      single: [special(cls, 0), a, special(sep, 0)],
      pairTemplate: [special(cls, 0), a, special(sep, 0), special(sep, 0), { sequence: "B", typeId: 0 }, special(sep, 0)],
    };
  }
  if (processor?.type !== "TemplateProcessing") fail(`post_processor ${processor?.type ?? "none"} is not supported (TemplateProcessing, BertProcessing, RobertaProcessing)`);
  const items = (list) =>
    list.map((item) => {
      if (item.Sequence) return { sequence: item.Sequence.id, typeId: item.Sequence.type_id };
      const token = processor.special_tokens?.[item.SpecialToken?.id];
      if (!token || !Array.isArray(token.ids)) fail(`post_processor names an unknown special token`);
      return { ids: token.ids, typeId: item.SpecialToken.type_id };
    });
  return { single: items(processor.single), pairTemplate: items(processor.pair) };
}

/** The padding id, as the Python runtime picks it: the file's padding, else [PAD] or <pad>. */
function padId(json, tokenizer, fail) {
  if (json.padding) return json.padding.pad_id;
  for (const token of ["[PAD]", "<pad>"]) {
    const id = tokenizer.token_to_id(token);
    if (id !== undefined) return id;
  }
  fail("the tokenizer has no padding token ([PAD] or <pad>)");
}

/**
 * The replacements above are exact only if no vocabulary token holds a replaced character or
 * what Rust normalizes one to (both then give [UNK]), and no added token holds one.
 */
function checkVocabulary(json, tokenizer, fail) {
  const held = new Set();
  for (const token of tokenizer.get_vocab(true).keys()) for (const c of token) held.add(c);
  for (const token of json.added_tokens ?? []) for (const c of token.content) held.add(c);
  for (const c of held) {
    if (IN_TABLE.test(c) || RUST_FORMS.includes(c) || c === "\u03a3" || isAstralCjk(c.codePointAt(0))) {
      const cp = c.codePointAt(0).toString(16).toUpperCase();
      fail(`its vocabulary holds U+${cp}, which JavaScript and the Rust tokenizer handle differently`);
    }
  }
}
