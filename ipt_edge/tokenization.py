"""Texts to padded id arrays with the bundle's tokenizer.json (the `tokenizers` library, no torch).

Training uses this same class, so the ids a task was trained on are the ids it is served with.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

# A text is a string, or a (text, text_pair) tuple for pair tasks such as entailment.
Text = str | tuple[str, str]


@dataclass
class TokenBatch:
    input_ids: np.ndarray  # [B, T] int64, right-padded to the longest row
    attention_mask: np.ndarray  # [B, T] int64, 1 for real tokens
    token_type_ids: np.ndarray  # [B, T] int64, 1 on the second text of a pair (BERT)
    truncated: np.ndarray  # [B] bool, True where the text was cut to max_length


def _pad_token(tokenizer: Tokenizer) -> tuple[int, str]:
    if tokenizer.padding is not None:
        return tokenizer.padding["pad_id"], tokenizer.padding["pad_token"]
    for token in ("[PAD]", "<pad>"):
        token_id = tokenizer.token_to_id(token)
        if token_id is not None:
            return token_id, token
    raise ValueError("the tokenizer has no padding token ([PAD] or <pad>)")


_WHITESPACE = re.compile(r"\s")


def _cut(text: str, limit: int) -> str:
    """`text` cut at a whitespace at or after `limit` characters (the whole text if it has none
    within 4 x limit, or is shorter). Tokens before a whitespace never depend on what follows it,
    for the whitespace-splitting pre-tokenizers of BERT, RoBERTa and SentencePiece alike."""
    if len(text) <= limit:
        return text
    space = _WHITESPACE.search(text, limit, 4 * limit)
    return text[: space.start()] if space else text[:limit]


class TextEncoder:
    """Tokenize texts or text pairs; truncate to `max_length`, pad each batch to its longest row.

    Memory follows the token budget, not the input: a text longer than `char_limit` characters
    is cut at a whitespace before tokenizing, and kept cut only where that provably keeps the same
    tokens (the cut text still overflows the budget); otherwise the limit grows and it is tried
    again. A 20 MB line costs what a few kilobytes do.
    """

    def __init__(
        self, tokenizer_path: str | Path | None, max_length: int, tokenizer: Tokenizer | None = None
    ):
        self.tokenizer = tokenizer or Tokenizer.from_file(str(tokenizer_path))
        self.max_length = max_length
        self.pad_id, _ = _pad_token(self.tokenizer)
        # tokenizer.json files often pad to a fixed length (128 for all-MiniLM-L6-v2); we pad in
        # `pad` instead, to the longest row of each batch, which keeps short texts cheap.
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length, strategy="longest_first")
        self.char_limit = max(4096, 32 * max_length)
        self._counter: Tokenizer | None = None  # untruncated twin, made on first need

    def tokenize(self, texts: Sequence[Text]) -> list[Encoding]:
        """Unpadded encodings; raises on an empty or non-string text, naming its index."""
        for index, text in enumerate(texts):
            parts = text if isinstance(text, tuple) else (text,)
            for part in parts:
                if not isinstance(part, str):
                    raise TypeError(f"text {index} is {type(part).__name__}, expected str")
                if not part.strip():
                    raise ValueError(f"text {index} is empty")
                try:
                    part.encode("utf-8")
                except UnicodeEncodeError:
                    raise ValueError(f"text {index} is not valid UTF-8 (it holds a lone surrogate)") from None
        encodings = self.tokenizer.encode_batch([self._bounded(text, self.char_limit) for text in texts])
        for index, text in enumerate(texts):
            limit = self.char_limit
            while not self._same_tokens(text, encodings[index], limit):
                limit *= 4
                encodings[index] = self.tokenizer.encode(*self._pair(self._bounded(text, limit)))
        return encodings

    @staticmethod
    def _pair(text: Text) -> tuple[str, ...]:
        return text if isinstance(text, tuple) else (text,)

    @staticmethod
    def _bounded(text: Text, limit: int) -> Text:
        return (_cut(text[0], limit), _cut(text[1], limit)) if isinstance(text, tuple) else _cut(text, limit)

    def _same_tokens(self, text: Text, encoding: Encoding, limit: int) -> bool:
        """Whether `encoding`, made from `text` cut at `limit`, holds the tokens the whole text gives."""
        parts = self._pair(text)
        cut = [_cut(part, limit) for part in parts]
        if all(c is p for c, p in zip(cut, parts, strict=True)):
            return True  # nothing was cut
        if len(parts) == 1:
            return len(encoding.overflowing) > 0  # the cut text alone still overflows the budget
        # Pairs: longest_first gives each part min(its length, about half the budget), and the
        # odd token to the longer part. Exact if every cut part alone overflows the budget and
        # the cut parts are ordered by length as the whole parts are.
        lengths = [self._count(c) for c in cut]
        if any(n <= self.max_length for n, c, p in zip(lengths, cut, parts, strict=True) if c is not p):
            return False
        whole = [n if c is p else self._count(p) for n, c, p in zip(lengths, cut, parts, strict=True)]
        return (lengths[0] > lengths[1]) == (whole[0] > whole[1])

    def _count(self, text: str) -> int:
        """Tokens of `text` without special tokens or truncation, counted window by window (each
        cut at a whitespace), so memory stays small however long the text is."""
        if self._counter is None:
            self._counter = Tokenizer.from_str(self.tokenizer.to_str())
            self._counter.no_truncation()
        total, start = 0, 0
        while start < len(text):
            piece = _cut(text[start : start + 4 * self.char_limit], self.char_limit)
            total += len(self._counter.encode(piece, add_special_tokens=False).ids)
            start += len(piece)
        return total

    def pad(self, encodings: Sequence[Encoding]) -> TokenBatch:
        if len(encodings) == 0:
            raise ValueError("no texts to encode")
        longest = max(len(e.ids) for e in encodings)
        batch = len(encodings)
        input_ids = np.full((batch, longest), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((batch, longest), dtype=np.int64)
        token_type_ids = np.zeros((batch, longest), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            input_ids[row, :n] = encoding.ids
            attention_mask[row, :n] = 1
            token_type_ids[row, :n] = encoding.type_ids
        truncated = np.array([len(e.overflowing) > 0 for e in encodings], dtype=bool)
        return TokenBatch(input_ids, attention_mask, token_type_ids, truncated)

    def encode(self, texts: Sequence[Text]) -> TokenBatch:
        return self.pad(self.tokenize(texts))
