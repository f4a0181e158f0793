"""Texts to padded id arrays with the bundle's tokenizer.json (the `tokenizers` library, no torch).

Training uses this same class, so the ids a task was trained on are the ids it is served with.
"""

from __future__ import annotations

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


class TextEncoder:
    """Tokenize texts or text pairs; truncate to `max_length`, pad each batch to its longest row."""

    def __init__(self, tokenizer_path: str | Path, max_length: int):
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self.max_length = max_length
        self.pad_id, _ = _pad_token(self.tokenizer)
        # tokenizer.json files often pad to a fixed length (128 for all-MiniLM-L6-v2); we pad in
        # `pad` instead, to the longest row of each batch, which keeps short texts cheap.
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length, strategy="longest_first")

    def tokenize(self, texts: Sequence[Text]) -> list[Encoding]:
        """Unpadded encodings; raises on an empty or non-string text, naming its index."""
        for index, text in enumerate(texts):
            parts = text if isinstance(text, tuple) else (text,)
            for part in parts:
                if not isinstance(part, str):
                    raise TypeError(f"text {index} is {type(part).__name__}, expected str")
                if not part.strip():
                    raise ValueError(f"text {index} is empty")
        return self.tokenizer.encode_batch(list(texts))

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
