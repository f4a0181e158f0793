"""TextEncoder shortens long texts before tokenizing them; these tests hold it to giving exactly
the tokens that plain `tokenizers` gives the whole text, truncated to the budget.

The tokenizer is built here (BERT's normalizer and pre-tokenizer, WordPiece, BERT's added tokens):
no torch, no network. CI runs a bounded number of fuzz examples; the long profile runs by hand:

    HYPOTHESIS_PROFILE=long python -m pytest tests/test_tokenization.py -q
"""

from __future__ import annotations

import base64
import os
import random
import string

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Tokenizer, normalizers, pre_tokenizers

from ipt_edge.tokenization import TextEncoder, _Reducer

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


def plain_ids(tokenizer: Tokenizer, text, max_length: int) -> tuple[list[int], list[int]]:
    """What `tokenizers` alone gives the whole text, truncated as TextEncoder truncates."""
    plain = Tokenizer.from_str(tokenizer.to_str())
    plain.no_padding()
    plain.enable_truncation(max_length, strategy="longest_first")
    encoding = plain.encode(*(text if isinstance(text, tuple) else (text,)))
    return encoding.ids, encoding.type_ids


def encoder_ids(tokenizer: Tokenizer, text, max_length: int, char_limit: int | None = None):
    encoder = TextEncoder(None, max_length, tokenizer=Tokenizer.from_str(tokenizer.to_str()))
    if char_limit is not None:
        encoder.char_limit = char_limit  # small, so that short texts take the long-text path
    encoding = encoder.tokenize([text])[0]
    return encoding.ids, encoding.type_ids


def test_a_deleted_character_at_the_cut_does_not_split_the_word():
    """BERT's normalizer deletes \\v, which joins `playe` and `r`: cutting there gave `play`."""
    tokenizer = bert_tokenizer()
    # 125 tokens in 4,092 characters, then `playe\vr`: the first whitespace at or after 4,096
    # characters is the \v, and `player` is the last token the budget of 128 holds.
    text = "a " * 124 + "x" * 3843 + " " + "playe\vr" + " the movie" * 20
    ids, _ = encoder_ids(tokenizer, text, 128)
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
    encoder = TextEncoder(None, 128, tokenizer=Tokenizer.from_str(tokenizer.to_str()))
    ((short, _),) = encoder._reduce(LINES[kind](20_000_000), encoder.char_limit)
    assert len(short) < 3 * encoder.char_limit  # 20 MB in, kilobytes tokenized
    # Exact: checked on 200,000 characters, which plain tokenizers still tokenizes quickly.
    line = LINES[kind](200_000)
    assert encoder.tokenize([line])[0].ids == plain_ids(tokenizer, line, 128)[0]
    if kind == "base64":
        return  # in pairs, tokenizers' overflows multiply: thousands of tokens a part take gigabytes
    for pair in [(line, "the movie " * 300), ("the movie " * 300, line), (line, line[::-1])]:
        assert encoder_ids(tokenizer, pair, 128) == plain_ids(tokenizer, pair, 128)


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
    ],
    ids=["NFC", "Metaspace", "ByteLevel", "normalized-added-token"],
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


@given(text=TEXTS, max_length=st.integers(3, 24), char_limit=st.integers(4, 64), max_word=st.integers(3, 12))
def test_fuzz_long_texts_give_the_tokens_of_the_whole_text(text, max_length, char_limit, max_word):
    assume(text.strip())
    tokenizer = bert_tokenizer(max_word=max_word, madeup=True)
    assert encoder_ids(tokenizer, text, max_length, char_limit) == plain_ids(tokenizer, text, max_length)


@given(
    first=TEXTS,
    second=TEXTS,
    max_length=st.integers(5, 24),
    char_limit=st.integers(4, 64),
    max_word=st.integers(3, 12),
)
def test_fuzz_long_pairs_give_the_tokens_of_the_whole_pair(first, second, max_length, char_limit, max_word):
    assume(first.strip() and second.strip())
    tokenizer = bert_tokenizer(max_word=max_word, madeup=True)
    pair = (first, second)
    assert encoder_ids(tokenizer, pair, max_length, char_limit) == plain_ids(tokenizer, pair, max_length)
