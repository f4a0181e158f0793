"""Texts to padded id arrays with the bundle's tokenizer.json (the `tokenizers` library, no torch).

Training uses this same class, so the ids a task was trained on are the ids it is served with.
What a text may hold is said once, by `text_problem`: the runtime checks every text with it where
the text comes in (Bundle.run, training's reader), and the tokenizer takes the texts as checked.
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


def text_problem(part: str) -> str | None:
    """What makes a string unusable as a text ("is empty", "is not valid UTF-8 ..."), or None.

    It reads the string without copying it (no strip(), no encode()): a 20 MB text costs no second
    20 MB, and one of any length that starts with a letter is known not to be blank at once."""
    if not part or part.isspace():
        return "is empty"
    if _SURROGATE.search(part):
        return "is not valid UTF-8 (it holds a lone surrogate)"
    return None


@dataclass(frozen=True, order=True)
class Refused:
    """One text refused: its place in the call, which of its strings (0: the text, 1: a pair's
    second text) and what is wrong with it (text_problem's words)."""

    index: int
    part: int
    problem: str


class TextError(ValueError):
    """Texts that cannot be read, every one of the call, in input order (`refused`). The message
    names the first as the runtime does ("text 3 is empty"); a caller with names of its own (a
    file's line and column, a line of stdin) names them from `refused`."""

    def __init__(self, refused: list[Refused]):
        super().__init__(f"text {refused[0].index} {refused[0].problem}")
        self.refused = refused

    def __reduce__(self) -> tuple[type, tuple[list[Refused]]]:  # pickled (by Ray) as it was made
        return TextError, (self.refused,)


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
            and not any(token.single_word for token in added)  # matched or not by its neighbours
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

    def cut_point(self, text: str, i: int) -> int:
        """The first index from i where the text may be cut (a SPLIT character that touches no
        added token), or len(text); found by `skip`, at C speed, not character by character."""
        if not self.usable:
            return len(text)
        while (i := self.skip(text, i, (SOLID, GONE, OTHER))) < len(text):
            if not self._touches_added(text, i, i):
                return i
            i += 1
        return len(text)

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


def _parts(text: Text) -> tuple[str, ...]:
    return text if isinstance(text, tuple) else (text,)


def _text(parts: tuple[str, ...]) -> Text:
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])


class BundleTokenizer:
    """Tokenize texts or text pairs; truncate to `max_length`, pad each batch to its longest row.

    Memory follows the token budget, not the input: a text longer than `char_limit` characters
    is shortened first (_Reducer: cut at a separator, words of more than WordPiece's longest word
    trimmed, deleted characters dropped), and kept cut only where that provably keeps the same
    tokens (the cut text still overflows the budget); otherwise the limit grows and it is tried
    again. A 20 MB line, with whitespace or without, costs what a few kilobytes do. A pair with a
    long part is tokenized part by part (_encode_cut_pair), the whole parts only counted, window
    by window: two 2 MB parts cost what two 2 MB single texts do.
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

    def tokenize(self, texts: Sequence[Text]) -> list[Encoding]:
        """Unpadded encodings of texts already checked (text_problem), in input order."""
        cuts = [[self._cut(part, self.char_limit) for part in _parts(text)] for text in texts]
        # A pair with a cut part is tokenized part by part (_encode_cut_pair), never as a pair.
        batch = [i for i, parts in enumerate(cuts) if len(parts) == 1 or not any(cut for _, cut in parts)]
        shorts = [_text(tuple(short for short, _ in cuts[i])) for i in batch]
        encodings: list[Encoding | None] = [None] * len(texts)
        for index, encoding in zip(batch, self.tokenizer.encode_batch(shorts), strict=True):
            encodings[index] = encoding
        for index, text in enumerate(texts):
            if encodings[index] is None:
                assert isinstance(text, tuple)  # only a pair with a cut part is left out of the batch
                encodings[index] = self._encode_cut_pair(text)
            elif isinstance(text, str) and cuts[index][0][1]:
                encodings[index] = self._encode_cut(text, encodings[index])
        return encodings

    def _cut(self, text: str, limit: int) -> tuple[str, bool]:
        """(short, cut): `short` has the leading tokens of `text` in at least `limit` characters,
        all of them where `cut` is False."""
        if len(text) <= limit:
            return text, False
        short, stop = self._reducer_of().reduce(text, 0, limit)
        return short, stop < len(text)

    def _encode_cut(self, text: str, encoding: Encoding) -> Encoding:
        """A single text, given the encoding of its cut: exact once the cut text still overflows
        the budget (truncation keeps leading tokens, the same in both); else the cut grows."""
        limit, cut = self.char_limit, True
        while cut and not encoding.overflowing:
            limit *= 4
            short, cut = self._cut(text, limit)
            encoding = self.tokenizer.encode(short)
        return encoding

    def _encode_cut_pair(self, pair: tuple[str, str]) -> Encoding:
        """A pair with a part cut, tokenized part by part, then truncated and given its special
        tokens by the tokenizer itself (post_process), as encode(*pair) would without the whole
        parts: tokenizers pairs every overflow window of one part with every window of the
        other, so two whole 2 MB parts take gigabytes.

        longest_first keeps of each part about half the budget at most, the odd token going to
        the longer part (the second on a tie). So a part's length matters only up to max_length,
        and beyond it only which part is longer: a part with more tokens is handed over with
        max_length + 2 of them if it is the longer one, else max_length + 1."""
        if self.max_length < self.tokenizer.num_special_tokens_to_add(True):
            return self.tokenizer.encode(*pair)  # the budget wraps (unsigned in tokenizers): no cut
        (first, first_cut), (second, second_cut) = self._part(pair[0]), self._part(pair[1])
        counts = [len(first.ids), len(second.ids)]  # exact where not cut, lower bounds where cut
        lengths = [min(n, self.max_length + 1) for n in counts]
        if min(counts) > self.max_length:
            lengths[0 if self._first_longer(pair, counts, (first_cut, second_cut)) else 1] += 1
        first.truncate(lengths[0])
        second.truncate(lengths[1])
        return self.tokenizer.post_process(first, second)

    def _part(self, text: str) -> tuple[Encoding, bool]:
        """(encoding, cut): the leading tokens of one part of a pair, without special tokens or
        truncation: all of them, or more than max_length + 1 of them where `cut`."""
        limit = self.char_limit
        while True:
            short, cut = self._cut(text, limit)
            encoding = self._untruncated().encode(short, add_special_tokens=False)
            if not cut or len(encoding.ids) > self.max_length + 1:
                return encoding, cut
            limit *= 4

    def _first_longer(self, pair: tuple[str, str], counts: list[int], cuts: tuple[bool, bool]) -> bool:
        """Whether the first whole part has more tokens than the second; `counts` are exact where
        not cut, lower bounds where cut. The whole parts are counted only if these do not tell."""
        if not cuts[1] and counts[0] > counts[1]:
            return True
        if not cuts[0] and counts[0] <= counts[1]:
            return False
        whole = [self._count(text) if cut else n for text, n, cut in zip(pair, counts, cuts, strict=True)]
        return whole[0] > whole[1]

    def _count(self, text: str) -> int:
        """Tokens of `text` without special tokens or truncation, counted window by window (each
        a stretch between two cut points, shortened if long), so memory stays small however
        long the text is."""
        reducer, total, start = self._reducer_of(), 0, 0
        while start < len(text):
            stop = reducer.cut_point(text, start + self.char_limit)
            if stop - start <= 2 * self.char_limit:
                short = text[start:stop]
            else:  # no cut point near: long words trimmed, deleted characters dropped
                short, stop = reducer.reduce(text, start, self.char_limit)
            total += len(self._untruncated().encode(short, add_special_tokens=False).ids)
            start = stop
        return total

    def _untruncated(self) -> Tokenizer:
        if self._counter is None:
            self._counter = Tokenizer.from_str(self.tokenizer.to_str())
            self._counter.no_truncation()
        return self._counter

    def _reducer_of(self) -> _Reducer:
        if self._reducer is None:
            self._reducer = _Reducer(self.tokenizer)
        return self._reducer

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
