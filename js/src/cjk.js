/** Rust tokenizers' `is_chinese_char` above U+FFFF: its BertNormalizer makes each of these a word
 * of its own; @huggingface/tokenizers checks UTF-16 halves only, so it misses them. */
export const ASTRAL_CJK = [[0x20000, 0x2a6df], [0x2a700, 0x2b81f], [0x2b920, 0x2ceaf], [0x2f800, 0x2fa1f]];
export const isAstralCjk = (cp) => ASTRAL_CJK.some(([lo, hi]) => cp >= lo && cp <= hi);
