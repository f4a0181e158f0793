"""BundleTokenizer shortens long texts before tokenizing them; these tests hold it to giving exactly
the tokens that plain `tokenizers` gives the whole text, truncated to the budget.

The tokenizer is built here (BERT's normalizer and pre-tokenizer, WordPiece, BERT's added tokens):
no torch, no network. CI runs a bounded number of fuzz examples; the long profile runs by hand:

    HYPOTHESIS_PROFILE=long python -m pytest tests/test_tokenizer.py -q
"""

from __future__ import annotations

import base64
import os
import random
import string

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Encoding, Tokenizer, normalizers, pre_tokenizers

from ipt_edge.tokenizer import BundleTokenizer, _Reducer

from .tiny import wordpiece_tokenizer

settings.register_profile("ci", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "long", max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["play", "player", "the", "movie", "good", "mask", "ab", "abc"]
CHARS = list(string.ascii_lowercase + string.digits)
PUNCTUATION = list(".,!?'+/=-[]")


def bert_tokenizer(max_word: int = 100, madeup: bool = False) -> Tokenizer:
    """tiny.py's BERT-style tokenizer over this file's vocabulary, with BERT's special tokens added."""
    vocab = SPECIALS + WORDS + CHARS + ["##" + c for c in CHARS] + PUNCTUATION + ["中", "文", "madeup7"]
    tokenizer = wordpiece_tokenizer(vocab, max_input_chars_per_word=max_word)
    # As in real tokenizer.json files: matched in the raw text, before normalizing.
    tokenizer.add_special_tokens([AddedToken(t, normalized=False) for t in SPECIALS])
    if madeup:  # an added token made of letters and digits, which can split a word
        tokenizer.add_tokens([AddedToken("madeup7", normalized=False)])
    return tokenizer


def plain_encoding(tokenizer: Tokenizer, text, max_length: int) -> Encoding:
    """What `tokenizers` alone gives the whole text, truncated as BundleTokenizer truncates."""
    plain = Tokenizer.from_str(tokenizer.to_str())
    plain.no_padding()
    plain.enable_truncation(max_length, strategy="longest_first")
    return plain.encode(*(text if isinstance(text, tuple) else (text,)))


def plain_ids(tokenizer: Tokenizer, text, max_length: int) -> tuple[list[int], list[int], bool]:
    """Ids, type ids, and whether the text was truncated."""
    encoding = plain_encoding(tokenizer, text, max_length)
    return encoding.ids, encoding.type_ids, bool(encoding.overflowing)


def encoder_ids(tokenizer: Tokenizer, text, max_length: int, char_limit: int | None = None):
    encoder = BundleTokenizer(None, max_length, tokenizer=Tokenizer.from_str(tokenizer.to_str()))
    if char_limit is not None:
        encoder.char_limit = char_limit  # small, so that short texts take the long-text path
    encoding = encoder.tokenize([text])[0]
    return encoding.ids, encoding.type_ids, bool(encoding.overflowing)


def test_a_deleted_character_at_the_cut_does_not_split_the_word():
    """BERT's normalizer deletes \\v, which joins `playe` and `r`: cutting there gave `play`."""
    tokenizer = bert_tokenizer()
    # 125 tokens in 4,092 characters, then `playe\vr`: the first whitespace at or after 4,096
    # characters is the \v, and `player` is the last token the budget of 128 holds.
    text = "a " * 124 + "x" * 3843 + " " + "playe\vr" + " the movie" * 20
    ids, _, _ = encoder_ids(tokenizer, text, 128)
    assert ids == plain_ids(tokenizer, text, 128)[0]
    assert ids[-2] == tokenizer.token_to_id("player")


@pytest.mark.parametrize("deleted", ["\v", "\f", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\u200b", "\u0301"])
def test_no_deleted_character_splits_a_word_at_the_cut(deleted):
    tokenizer = bert_tokenizer()
    text = "a " * 20 + "playe" + deleted + "r" + " the" * 20
    assert encoder_ids(tokenizer, text, 23, char_limit=45) == plain_ids(tokenizer, text, 23)


LINES = {
    "alnum": lambda n: (
        "".join(random.Random(0).choices(string.ascii_lowercase + string.digits, k=99_991))
        * (n // 99_991 + 1)
    )[:n],
    "base64": lambda n: base64.b64encode(random.Random(1).randbytes(n * 3 // 4)).decode(),
    "word-then-words": lambda n: "good" + "x" * n + " the movie" * 200,
}


@pytest.mark.parametrize("kind", LINES)
def test_a_long_line_without_whitespace_is_short_to_tokenize_and_exact(kind):
    tokenizer = bert_tokenizer()
    encoder = BundleTokenizer(None, 128, tokenizer=Tokenizer.from_str(tokenizer.to_str()))
    short, _ = encoder._cut(LINES[kind](20_000_000), encoder.char_limit)
    assert len(short) < 3 * encoder.char_limit  # 20 MB in, kilobytes tokenized
    # Exact: checked on 200,000 characters, which plain tokenizers still tokenizes quickly.
    line = LINES[kind](200_000)
    assert encoder.tokenize([line])[0].ids == plain_ids(tokenizer, line, 128)[0]
    if kind == "base64":
        return  # in pairs, tokenizers' overflows multiply: thousands of tokens a part take gigabytes
    for pair in [(line, "the movie " * 300), ("the movie " * 300, line), (line, line[::-1])]:
        assert encoder_ids(tokenizer, pair, 128) == plain_ids(tokenizer, pair, 128)


class Recording:
    """A tokenizer that notes how many characters each text it tokenizes holds."""

    def __init__(self, tokenizer: Tokenizer):
        self.tokenizer, self.sizes = tokenizer, []

    def __getattr__(self, name: str):
        return getattr(self.tokenizer, name)

    def encode(self, *texts, **options) -> Encoding:
        self.sizes.append(sum(map(len, texts)))
        return self.tokenizer.encode(*texts, **options)

    def encode_batch(self, texts, **options) -> list[Encoding]:
        self.sizes += [len(t) if isinstance(t, str) else sum(map(len, t)) for t in texts]
        return self.tokenizer.encode_batch(texts, **options)


def recorded_encoder(tokenizer: Tokenizer, max_length: int, char_limit: int) -> BundleTokenizer:
    """A BundleTokenizer whose tokenizers (the truncating one and its untruncated twin) are Recordings."""
    encoder = BundleTokenizer(None, max_length, tokenizer=Tokenizer.from_str(tokenizer.to_str()))
    encoder.char_limit = char_limit
    untruncated = Tokenizer.from_str(encoder.tokenizer.to_str())
    untruncated.no_truncation()
    encoder.tokenizer, encoder._counter = Recording(encoder.tokenizer), Recording(untruncated)
    return encoder


@pytest.mark.parametrize("max_length", [16, 17])  # part budgets 13 and 14: odd, then even
@pytest.mark.parametrize("longer", ["first", "second", "neither"])
def test_a_long_pair_is_never_tokenized_whole(max_length, longer):
    """Two parts equal up to their last word: which is longer (longest_first gives it the odd
    token) shows only at the end. tokenizers pairs every overflow window of one part with every
    window of the other, so a whole long pair is a machine killer (50 KB parts took 3 GB): the
    parts are counted window by window, and no text near their size reaches a tokenizer."""
    tokenizer = bert_tokenizer()
    words = " ".join(random.Random(0).choices(WORDS, k=400))
    pair = {"first": (words + " good", words), "second": (words, words + " good"), "neither": (words, words)}
    encoder = recorded_encoder(tokenizer, max_length, char_limit=64)
    encoding = encoder.tokenize([pair[longer]])[0]
    plain = plain_encoding(tokenizer, pair[longer], max_length)
    assert (encoding.ids, encoding.type_ids) == (plain.ids, plain.type_ids)
    assert encoding.overflowing and plain.overflowing  # both truncated
    assert max(encoder.tokenizer.sizes + encoder._counter.sizes) < len(words) / 4


def test_a_long_pair_whose_budget_is_below_its_special_tokens_is_not_truncated():
    """tokenizers subtracts the special tokens from max_length unsigned: below zero nothing is cut."""
    tokenizer = bert_tokenizer()
    pair = ("the movie was good " * 10, "a play " * 12)
    assert encoder_ids(tokenizer, pair, 2, char_limit=16) == plain_ids(tokenizer, pair, 2)


def test_a_long_part_is_counted_without_probing_it_character_by_character(monkeypatch):
    """Counting a 2 MB part went through the reducer's per-character loop: 1.6 s of 2.3."""
    tokenizer = bert_tokenizer()
    encoder = BundleTokenizer(None, 16, tokenizer=Tokenizer.from_str(tokenizer.to_str()))
    text = " ".join(random.Random(1).choices(WORDS + PUNCTUATION, k=50_000))
    probes = []
    kind = _Reducer.kind
    monkeypatch.setattr(_Reducer, "kind", lambda self, c: probes.append(c) or kind(self, c))
    untruncated = Tokenizer.from_str(tokenizer.to_str())
    assert encoder._count(text) == len(untruncated.encode(text, add_special_tokens=False).ids)
    assert len(probes) < 1000  # the text has 250,000 characters


def test_a_single_word_added_token_is_counted_as_in_the_whole_text():
    """A single_word token is matched only between non-word characters: in "ab[MASK] " it is not,
    but a window cut just before its "[" would begin with it, and match it."""
    tokenizer = bert_tokenizer()
    tokenizer.add_special_tokens([AddedToken("[MASK]", single_word=True, normalized=False)])
    text = "ab[MASK] " * 30
    untruncated = Tokenizer.from_str(tokenizer.to_str())
    for char_limit in range(4, 40):
        encoder = BundleTokenizer(None, 16, tokenizer=Tokenizer.from_str(tokenizer.to_str()))
        encoder.char_limit = char_limit
        assert encoder._count(text) == len(untruncated.encode(text, add_special_tokens=False).ids)


def test_an_added_token_inside_a_long_word_splits_it():
    tokenizer = bert_tokenizer(max_word=8, madeup=True)
    for text in ["x" * 30 + "madeup7" + "y" * 5 + " good", "x" * 5 + "madeup7" + "y" * 30 + " the" * 9]:
        assert encoder_ids(tokenizer, text, 12, char_limit=10) == plain_ids(tokenizer, text, 12)


@pytest.mark.parametrize(
    "change",
    [
        lambda t: setattr(t, "normalizer", normalizers.NFC()),
        lambda t: setattr(t, "pre_tokenizer", pre_tokenizers.Metaspace()),
        lambda t: setattr(t, "pre_tokenizer", pre_tokenizers.ByteLevel()),
        lambda t: t.add_tokens([AddedToken("movie", normalized=True)]),
        lambda t: t.add_special_tokens([AddedToken("[MASK]", single_word=True, normalized=False)]),
    ],
    ids=["NFC", "Metaspace", "ByteLevel", "normalized-added-token", "single-word-added-token"],
)
def test_a_tokenizer_not_understood_is_not_cut(change):
    tokenizer = bert_tokenizer()
    change(tokenizer)
    assert not _Reducer(tokenizer).usable
    text = "the movie " * 50 + "playe\vr"
    assert encoder_ids(tokenizer, text, 16, char_limit=20) == plain_ids(tokenizer, text, 16)


# Pieces that stress the cut: words that join when a character between them is deleted, every
# character BERT's normalizer deletes or turns into a space, zero-width and combining characters,
# punctuation and CJK (split off alone), added tokens, and alphanumeric runs longer than a word.
PIECES = st.one_of(
    st.sampled_from([*WORDS, "x", "madeup7", "[MASK]", "[SEP", "MASK]", "中", "文", "é", "İ", "ß", "Σ"]),
    st.sampled_from([" ", "  ", "\t", "\n", "\r", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x1f", "\x85"]),
    st.sampled_from(["\u00a0", "\u3000", "\u2028", "\u200b", "\u200d", "\ufeff", "\x00", "\ufffd"]),
    st.sampled_from(["\u0301", "\u0327", "a\u0301", "\u0301\u0327", *PUNCTUATION]),
    st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=40),
    st.integers(1, 40).map(lambda n: "z" * n),
    st.characters(codec="utf-8"),
)
TEXTS = st.lists(PIECES, min_size=1, max_size=80).map("".join)


@given(text=TEXTS, max_length=st.integers(1, 24), char_limit=st.integers(4, 64), max_word=st.integers(3, 12))
def test_fuzz_long_texts_give_the_tokens_of_the_whole_text(text, max_length, char_limit, max_word):
    assume(text.strip())
    tokenizer = bert_tokenizer(max_word=max_word, madeup=True)
    assert encoder_ids(tokenizer, text, max_length, char_limit) == plain_ids(tokenizer, text, max_length)


@given(
    first=TEXTS,
    second=TEXTS,
    max_length=st.integers(1, 24),  # below 3, the budget wraps: nothing is cut
    char_limit=st.integers(4, 64),
    max_word=st.integers(3, 12),
)
def test_fuzz_long_pairs_give_the_tokens_of_the_whole_pair(first, second, max_length, char_limit, max_word):
    assume(first.strip() and second.strip())
    tokenizer = bert_tokenizer(max_word=max_word, madeup=True)
    pair = (first, second)
    assert encoder_ids(tokenizer, pair, max_length, char_limit) == plain_ids(tokenizer, pair, max_length)
