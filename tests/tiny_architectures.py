"""A tiny random model of every architecture export/architectures.py supports, each with its own
tokenizer, built offline: transformers constructs the model from a small config (hidden 32, 2 layers,
2 or 4 heads, a vocabulary of a few hundred), and the `tokenizers` library builds a tokenizer of
the kind the real checkpoints ship (as transformers' convert_slow_tokenizer.py builds them):

    bert, distilbert, electra   WordPiece, BertNormalizer, [CLS] $A [SEP]          (tiny.wordpiece_tokenizer)
    mpnet                       WordPiece, <s> $A </s> (pairs: </s> </s>), <pad> = 1 (MPNet's padding_idx)
    roberta                     byte-level BPE, RobertaProcessing, <pad> = 1
    xlm-roberta, camembert      Unigram + Metaspace, <s> $A </s>, <pad> = 1
    deberta-v2                  Unigram + Metaspace, [CLS] $A [SEP], [PAD] = 0      (DeBERTa-v3's layout)
    modernbert                  byte-level BPE, [CLS] $A [SEP], [PAD]               (a PreTrainedTokenizerFast)

`write_architecture(model_type, folder)` writes config.json, model.safetensors and tokenizer.json:
a backbone folder that `ipt-edge train --backbone FOLDER` and export load like any other.
Every word of tiny.py's sentiment rows is one token or a few, so tasks train in a few steps.
Importing this module needs only `tokenizers`; writing a model imports torch and transformers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .tiny import FILLER, NEGATIVE, POSITIVE, wordpiece_tokenizer

ARCHITECTURES = (
    "bert",
    "roberta",
    "xlm-roberta",
    "camembert",
    "distilbert",
    "mpnet",
    "electra",
    "deberta-v2",
    "modernbert",
)
WORDS = POSITIVE + NEGATIVE + FILLER
LETTERS = list("abcdefghijklmnopqrstuvwxyz")
PUNCTUATION = list(".,!?'")


@dataclass(frozen=True)
class Size:
    """A model's dimensions: TINY_SIZE for the tests; benchmarks/prompt_tax.py also builds these models
    at all-MiniLM-L6-v2's size."""

    hidden: int = 32
    layers: int = 2
    heads: int = 4  # 2 for bert, xlm-roberta, camembert, distilbert, electra (both head counts run)
    intermediate: int = 64
    embedding: int | None = 16  # ELECTRA only: its embedding size (None: the hidden size, no project)


TINY_SIZE = Size()
# MAX_POSITIONS leaves room for RoBERTa's offset (2) after 64 tokens. INIT: weights 10x the usual
# std, so attention is far from uniform (at 0.02, scores of a hidden-32 model are ~0 and a wrong
# position term or mask would change an output by ~1e-4 only).
MAX_POSITIONS, INIT = 66, 0.2


def _wordpiece_vocab(specials: list[str]) -> list[str]:
    words = [w for w in WORDS if w not in LETTERS]
    return specials + words + LETTERS + ["##" + c for c in LETTERS] + PUNCTUATION


def _byte_level_bpe(specials: list[str], vocab_size: int = 360):
    """A byte-level BPE (GPT-2 style: RoBERTa's and ModernBERT's model) trained on the tiny corpus,
    the specials first. Training is deterministic for a fixed corpus."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE
    from tokenizers.trainers import BpeTrainer

    tokenizer = Tokenizer(BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [" ".join(WORDS), *(f"the {w} film" for w in WORDS), " ".join(PUNCTUATION)] * 4
    tokenizer.train_from_iterator(corpus, trainer)
    return tokenizer


def _unigram(specials: list[str], unk: str):
    """A SentencePiece-style Unigram (XLM-R's and DeBERTa-v3's model): '▁word' pieces for the tiny
    corpus' words, single characters as the fallback, Metaspace pre-tokenizer."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import Unigram

    pieces = [(s, 0.0) for s in specials]
    pieces += [("▁" + w, -2.0) for w in WORDS] + [("▁", -4.0)]
    pieces += [(c, -6.0) for c in LETTERS + PUNCTUATION]
    tokenizer = Tokenizer(Unigram(pieces, unk_id=specials.index(unk)))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return tokenizer


def tokenizer_for(model_type: str):
    """The tiny tokenizer of `model_type`, with its special tokens added by its post-processor and
    a padding token BundleTokenizer finds ([PAD] or <pad>)."""
    from tokenizers import processors

    if model_type in ("bert", "distilbert", "electra"):
        return wordpiece_tokenizer(_wordpiece_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    if model_type == "mpnet":
        # MPNetConverter's layout: <s> $A </s>, pairs <s> $A </s> </s> $B </s>
        vocab = _wordpiece_vocab(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        return wordpiece_tokenizer(vocab, cls="<s>", sep="</s>", unk="<unk>", pair_separators=2)
    if model_type == "roberta":
        tokenizer = _byte_level_bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        tokenizer.post_processor = processors.RobertaProcessing(
            sep=("</s>", 2), cls=("<s>", 0), add_prefix_space=False, trim_offsets=True
        )
        return tokenizer
    if model_type == "modernbert":
        specials = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]
        tokenizer = _byte_level_bpe(specials)
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS]:0 $A:0 [SEP]:0",
            pair="[CLS]:0 $A:0 [SEP]:0 $B:0 [SEP]:0",
            special_tokens=[("[CLS]", 1), ("[SEP]", 2)],
        )
        return tokenizer
    if model_type in ("xlm-roberta", "camembert"):
        tokenizer = _unigram(["<s>", "<pad>", "</s>", "<unk>", "<mask>"], unk="<unk>")
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
        )
        return tokenizer
    if model_type == "deberta-v2":
        tokenizer = _unigram(["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"], unk="[UNK]")
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS]:0 $A:0 [SEP]:0",
            pair="[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1",
            special_tokens=[("[CLS]", 1), ("[SEP]", 2)],
        )
        return tokenizer
    raise ValueError(f"no tiny tokenizer for {model_type!r}; one of {', '.join(ARCHITECTURES)}")


def config_for(model_type: str, tokenizer, size: Size = TINY_SIZE):
    """A small config of `model_type` whose special-token ids match `tokenizer`.

    Chosen so that each architecture's own path is exercised: ELECTRA's embedding size differs from
    its hidden size (embeddings_project), DeBERTa buckets relative positions beyond 4 tokens (log
    buckets), ModernBERT alternates a global and a local layer whose window (4) is shorter than the
    tests' texts."""
    import transformers as tf

    vocab = tokenizer.get_vocab_size()

    def pad(name: str) -> int:
        return tokenizer.token_to_id(name)

    few = 2 if size is TINY_SIZE else size.heads  # the tiny models run with 2 heads and with 4
    common = {"vocab_size": vocab, "hidden_size": size.hidden, "num_hidden_layers": size.layers,
              "intermediate_size": size.intermediate, "max_position_embeddings": MAX_POSITIONS,
              "initializer_range": INIT}  # fmt: skip
    roberta_ids = {"pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2, "type_vocab_size": 1}
    if model_type == "bert":
        return tf.BertConfig(**common, num_attention_heads=few, pad_token_id=pad("[PAD]"))
    if model_type == "roberta":
        return tf.RobertaConfig(**common, num_attention_heads=size.heads, **roberta_ids)
    if model_type == "xlm-roberta":
        return tf.XLMRobertaConfig(**common, num_attention_heads=few, **roberta_ids)
    if model_type == "camembert":
        return tf.CamembertConfig(**common, num_attention_heads=few, **roberta_ids)
    if model_type == "distilbert":
        return tf.DistilBertConfig(vocab_size=vocab, dim=size.hidden, n_layers=size.layers, n_heads=few,
                                   hidden_dim=size.intermediate, max_position_embeddings=MAX_POSITIONS,
                                   pad_token_id=pad("[PAD]"), initializer_range=INIT)  # fmt: skip
    if model_type == "mpnet":
        return tf.MPNetConfig(
            **common, num_attention_heads=size.heads, pad_token_id=1, bos_token_id=0, eos_token_id=2
        )
    if model_type == "electra":
        return tf.ElectraConfig(**common, embedding_size=size.embedding or size.hidden, num_attention_heads=few,
                                pad_token_id=pad("[PAD]"))  # fmt: skip
    if model_type == "deberta-v2":
        # DeBERTa-v3's settings (microsoft/deberta-v3-base's config.json), scaled down.
        return tf.DebertaV2Config(
            **common, num_attention_heads=size.heads, pad_token_id=0, type_vocab_size=0, relative_attention=True,
            pos_att_type=["p2c", "c2p"], position_buckets=8, max_relative_positions=-1, norm_rel_ebd="layer_norm",
            share_att_key=True, position_biased_input=False, layer_norm_eps=1e-7,
        )  # fmt: skip
    if model_type == "modernbert":
        return tf.ModernBertConfig(
            vocab_size=vocab, hidden_size=size.hidden, num_hidden_layers=size.layers,
            intermediate_size=size.intermediate, num_attention_heads=size.heads,
            max_position_embeddings=MAX_POSITIONS, global_attn_every_n_layers=2, local_attention=4,
            initializer_range=INIT, pad_token_id=pad("[PAD]"), cls_token_id=pad("[CLS]"), sep_token_id=pad("[SEP]"),
            bos_token_id=pad("[CLS]"), eos_token_id=pad("[SEP]"), reference_compile=False,
        )  # fmt: skip
    raise ValueError(f"no tiny config for {model_type!r}; one of {', '.join(ARCHITECTURES)}")


def write_architecture(model_type: str, folder: Path, seed: int = 0, size: Size = TINY_SIZE) -> Path:
    """A backbone folder (config.json, model.safetensors, tokenizer.json) of a random `model_type`
    of `size` (tiny by default), seeded. Norm weights and every bias are randomised too (a freshly initialised model
    has ones and zeros there, which would hide a norm or a bias applied to the wrong tensor)."""
    import torch
    from transformers import AutoModel

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer_for(model_type)
    tokenizer.save(str(folder / "tokenizer.json"))
    torch.manual_seed(seed)
    model = AutoModel.from_config(config_for(model_type, tokenizer, size))
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name.lower() or name.endswith("bias"):
                parameter.add_(0.1 * torch.randn_like(parameter))
    model.save_pretrained(folder, safe_serialization=True)
    return folder
