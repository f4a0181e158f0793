"""Texts to padded id arrays with the bundle's tokenizer.json (the `tokenizers` library, no torch).

Training uses this same class, so the ids a task was trained on are the ids it is served with.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer
from tokenizers.models import WordPiece

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


_SURROGATE = re.compile("[\ud800-\udfff]")  # what UTF-8 cannot encode

# How a character behaves in the backbone's normalizer and pre-tokenizer (see _Reducer.kind).
SPLIT = "split"  # the pre-tokenizer splits on both sides of it (whitespace, punctuation, CJK)
SOLID = "solid"  # kept, adds one or more characters to the word it is in (letters, digits)
GONE = "gone"  # the normalizer deletes it (BERT: control characters, zero-width ones, accents)
OTHER = "other"  # anything else: never cut at or around it
# Components that act on each character alone, whatever its neighbours: for these, how "a" + c +
# "b" behaves is how c behaves anywhere. Other components (ByteLevel's and Metaspace's splitting,
# NFC/NFKC composition, SentencePiece's precompiled maps) look at context: their texts are not cut.
_NORMALIZERS = {"BertNormalizer", "Lowercase", "NFD", "NFKD", "StripAccents"}
_PRE_TOKENIZERS = {"BertPreTokenizer", "WhitespaceSplit"}


def _per_character(component, known: set[str]) -> bool:
    if component is None:
        return True
    state = json.loads(component.__getstate__())
    steps = (
        state.get("normalizers", state.get("pretokenizers")) if state.get("type") == "Sequence" else [state]
    )
    return isinstance(steps, list) and all(isinstance(s, dict) and s.get("type") in known for s in steps)


class _Reducer:
    """Shortens a long text to one with the same leading tokens, for tokenizers it understands.

    Exact because of three facts about per-character normalizers and pre-tokenizers:
    - cutting just before a SPLIT character leaves the tokens before it as they were, and the
      tokens of the text are those of the part before it followed by those of the part from it;
    - a GONE character contributes nothing to the normalized text, so removing it changes nothing;
    - WordPiece gives a word longer than max_input_chars_per_word one [UNK], however long: once a
      word holds that many SOLID characters and one more, the rest of it up to the next SPLIT
      character can go (it would still be one [UNK]), so a 20 MB word costs what 101 characters do.
    Added tokens ([CLS], [MASK], ...) are matched in the raw text before all this; no cut or removal
    may touch or create one.
    """

    def __init__(self, tokenizer: Tokenizer):
        added = list(tokenizer.get_added_tokens_decoder().values())
        self.usable = (
            _per_character(tokenizer.normalizer, _NORMALIZERS)
            and _per_character(tokenizer.pre_tokenizer, _PRE_TOKENIZERS)
            and not any(token.normalized for token in added)  # matched after normalizing: not handled
        )
        self.normalizer, self.pre_tokenizer = tokenizer.normalizer, tokenizer.pre_tokenizer
        self.longest_word = getattr(tokenizer.model, "max_input_chars_per_word", None)
        if not isinstance(tokenizer.model, WordPiece):
            self.longest_word = None
        self.added = [token.content for token in added if token.content]
        self.added_chars = set("".join(self.added))
        self.span = max((len(t) for t in self.added), default=1)
        self.kinds: dict[str, str] = {}
        self._runs: dict[tuple[str, ...], tuple[set[str], re.Pattern]] = {}

    def kind(self, c: str) -> str:
        kind = self.kinds.get(c)
        if kind is None:
            kind = self.kinds[c] = self._probe(c)
        return kind

    def _probe(self, c: str) -> str:
        text = self.normalizer.normalize_str("a" + c + "b") if self.normalizer else "a" + c + "b"
        if len(text) < 2 or text[0] != "a" or text[-1] != "b":
            return OTHER
        if text == "ab":
            return GONE
        pieces = self.pre_tokenizer.pre_tokenize_str(text) if self.pre_tokenizer else [(text, (0, len(text)))]
        if len(pieces) == 1 and pieces[0][0] == text:
            return SOLID
        end = len(text)
        # A combining mark could be reordered by NFD with the marks before it: never a cut point.
        if (
            pieces[0] == ("a", (0, 1))
            and pieces[-1] == ("b", (end - 1, end))
            and not unicodedata.combining(c)
        ):
            return SPLIT
        return OTHER

    def skip(self, text: str, i: int, kinds: tuple[str, ...]) -> int:
        """The first index from i whose character is not of these kinds. A regex of the characters
        known to be of these kinds crosses a 20 MB word at C speed; it is rebuilt once the stops
        at characters it does not hold yet would cost more than rebuilding it."""
        chars, pattern = self._runs.get(kinds, (set(), re.compile("(?s:.)")))
        stops = 0
        while True:
            match = pattern.search(text, i)
            if match is None:
                return len(text)
            i = match.start()
            if text[i] not in chars:
                if self.kind(text[i]) not in kinds:
                    return i
                chars.add(text[i])
            stops += 1
            if stops > len(chars) + 16:
                pattern = re.compile("[^" + "".join(re.escape(c) for c in sorted(chars)) + "]")
                self._runs[kinds] = (chars, pattern)
                stops = 0
            i += 1

    def _touches_added(self, text: str, start: int, end: int) -> bool:
        """Whether an added token's text overlaps text[start:end] or touches index `start`."""
        low, high = max(0, start - self.span + 1), min(len(text), end + self.span - 1)
        return any(text.find(token, low, high) >= 0 for token in self.added)

    def _removable(self, text: str, start: int, end: int, word: int) -> bool:
        """Whether text[start:end] can go: no added token overlaps text[word:end] (one inside the
        word would split it), and none can form across the join (it would hold both neighbours, so
        one neighbour in no added token suffices)."""
        if self._touches_added(text, word, end):
            return False
        joined = (text[start - 1] if start > 0 else "") + (text[end] if end < len(text) else "")
        return not (len(joined) == 2 and set(joined) <= self.added_chars)

    def reduce(self, text: str, start: int, limit: int) -> tuple[str, int]:
        """(short, stop): `short` has the tokens of text[start:stop], in at least `limit` characters
        where the text has them; `stop` is len(text), or a SPLIT character where the text may be cut.
        `start` is 0 or such a cut point."""
        if not self.usable:
            return text[start:], len(text)
        kept: list[str] = []
        size = 0  # characters in kept
        i = segment = word = start  # segment: start of what is being kept; word: of the current word
        solid = 0  # SOLID characters in the current word
        while i < len(text):
            kind = self.kind(text[i])
            if kind == SPLIT:
                if size + i - segment >= limit and not self._touches_added(text, i, i):
                    kept.append(text[segment:i])
                    return "".join(kept), i
                solid, word = 0, i + 1
            elif kind == GONE:
                end = self.skip(text, i, (GONE,))
                if self._removable(text, i, end, i):
                    kept.append(text[segment:i])
                    size += i - segment
                    segment = end
                i = end
                continue
            elif kind == SOLID:
                solid += 1
                if self.longest_word is not None and solid > self.longest_word:
                    end = self.skip(text, i + 1, (SOLID, GONE))  # the rest of this word
                    if (end == len(text) or self.kind(text[end]) == SPLIT) and self._removable(
                        text, i + 1, end, word
                    ):
                        kept.append(text[segment : i + 1])
                        size += i + 1 - segment
                        segment = end
                    i = end  # kept or not, nothing before `end` can be a cut point
                    continue
            else:
                solid, word = 0, i + 1
            i += 1
        kept.append(text[segment:])
        return "".join(kept), len(text)


class TextEncoder:
    """Tokenize texts or text pairs; truncate to `max_length`, pad each batch to its longest row.

    Memory follows the token budget, not the input: a text longer than `char_limit` characters
    is shortened first (_Reducer: cut at a separator, words of more than WordPiece's longest word
    trimmed, deleted characters dropped), and kept cut only where that provably keeps the same
    tokens (the cut text still overflows the budget); otherwise the limit grows and it is tried
    again. A 20 MB line, with whitespace or without, costs what a few kilobytes do.
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
        self._reducer: _Reducer | None = None  # made on the first long text

    def tokenize(self, texts: Sequence[Text], numbers: Sequence[int] | None = None) -> list[Encoding]:
        """Unpadded encodings; raises on an empty or non-string text, naming it "text N" (N: its
        index, or numbers[index] when the texts are some rows of a larger call)."""
        for position, text in enumerate(texts):
            index = numbers[position] if numbers is not None else position
            parts = text if isinstance(text, tuple) else (text,)
            for part in parts:
                if not isinstance(part, str):
                    raise TypeError(f"text {index} is {type(part).__name__}, expected str")
                if not part or part.isspace():  # not strip() or encode(): no copy of a 20 MB text
                    raise ValueError(f"text {index} is empty")
                if _SURROGATE.search(part):
                    raise ValueError(f"text {index} is not valid UTF-8 (it holds a lone surrogate)")
        reduced = [self._reduce(text, self.char_limit) for text in texts]
        encodings = self.tokenizer.encode_batch([self._shorts(parts) for parts in reduced])
        for index, text in enumerate(texts):
            limit = self.char_limit
            while not self._same_tokens(reduced[index], encodings[index]):
                limit *= 4
                reduced[index] = self._reduce(text, limit)
                encodings[index] = self.tokenizer.encode(*(short for short, _ in reduced[index]))
        return encodings

    @staticmethod
    def _shorts(parts: list[tuple[str, str | None]]) -> Text:
        return (parts[0][0], parts[1][0]) if len(parts) == 2 else parts[0][0]

    def _reduce(self, text: Text, limit: int) -> list[tuple[str, str | None]]:
        """Each part of `text` as (short, cut_from): `short` has the part's leading tokens, all of
        them where cut_from is None; else it was cut from the part `cut_from`."""
        parts = []
        for part in text if isinstance(text, tuple) else (text,):
            if len(part) <= limit:
                parts.append((part, None))
                continue
            if self._reducer is None:
                self._reducer = _Reducer(self.tokenizer)
            short, stop = self._reducer.reduce(part, 0, limit)
            parts.append((short, None if stop == len(part) else part))
        return parts

    def _same_tokens(self, parts: list[tuple[str, str | None]], encoding: Encoding) -> bool:
        """Whether `encoding`, made from the short parts, holds the tokens the whole text gives."""
        if all(cut_from is None for _, cut_from in parts):
            return True  # nothing was cut
        if len(parts) == 1:
            return len(encoding.overflowing) > 0  # the cut text alone still overflows the budget
        # Pairs: longest_first gives each part min(its length, about half the budget), and the
        # odd token to the longer part. Exact if every cut part alone overflows the budget and
        # the cut parts are ordered by length as the whole parts are.
        lengths = [self._count(short) for short, _ in parts]
        if any(n <= self.max_length for n, (_, cut_from) in zip(lengths, parts, strict=True) if cut_from):
            return False
        first_longer = lengths[0] > lengths[1]
        if (first_longer and parts[1][1] is None) or (not first_longer and parts[0][1] is None):
            return True  # a whole part is at least as long as its cut: the order is known already
        whole = [
            self._count(cut_from) if cut_from else n for n, (_, cut_from) in zip(lengths, parts, strict=True)
        ]
        return first_longer == (whole[0] > whole[1])

    def _count(self, text: str) -> int:
        """Tokens of `text` without special tokens or truncation, counted window by window (each
        one a short text with the tokens of a stretch between two cut points), so memory stays
        small however long the text is."""
        if self._counter is None:
            self._counter = Tokenizer.from_str(self.tokenizer.to_str())
            self._counter.no_truncation()
        if self._reducer is None:
            self._reducer = _Reducer(self.tokenizer)
        total, start = 0, 0
        while start < len(text):
            short, start = self._reducer.reduce(text, start, self.char_limit)
            total += len(self._counter.encode(short, add_special_tokens=False).ids)
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
