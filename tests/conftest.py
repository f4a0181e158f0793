"""Fixtures: a tiny random BERT with its own WordPiece tokenizer, tiny labelled data, and tasks
trained and exported from them. No network, no ../shared; everything is built in a temp folder."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

POSITIVE = ["good", "great", "fine", "lovely", "superb"]
NEGATIVE = ["bad", "awful", "poor", "dull", "boring"]
ALL_KINDS = ("static", "static-deep", "lookup", "mlp", "mlp-deep", "lstm", "cnn", "lstm-deep", "cnn-deep")
PREFIX_KINDS = ("prefix", "mlp-prefix", "attn-prefix")  # tests/test_prefix.py
FILLER = ["the", "film", "was", "a", "plot", "and", "very", "movie", "story", "is", "it", "so", "cast"]


def _write_tokenizer(path: Path) -> list[str]:
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = list("abcdefghijklmnopqrstuvwxyz") + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    words = [w for w in POSITIVE + NEGATIVE + FILLER if w not in letters]
    vocab = specials + words + letters + list(".,!?'")
    tokenizer = Tokenizer(WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.save(str(path))
    return vocab


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory) -> Path:
    """A 2-layer, hidden-32 BERT folder (config.json, model.safetensors, tokenizer.json)."""
    import torch
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = _write_tokenizer(folder / "tokenizer.json")
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


def sentiment_rows(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        positive = rng.random() < 0.5
        words = [*rng.sample(FILLER, 4), rng.choice(POSITIVE if positive else NEGATIVE)]
        rng.shuffle(words)
        rows.append((" ".join(words), "pos" if positive else "neg"))
    return rows


def write_tsv(path: Path, header: list[str], rows: list[tuple]) -> Path:
    lines = ["\t".join(header)] + ["\t".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def sentiment_files(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("data")
    train = write_tsv(folder / "train.tsv", ["text", "label"], sentiment_rows(96, seed=1))
    dev = write_tsv(folder / "dev.tsv", ["text", "label"], sentiment_rows(24, seed=2))
    return train, dev


def train_checkpoint(backbone: Path, train: Path, dev: Path | None, out: Path, **options) -> Path:
    from ipt_edge_export.train import TrainOptions
    from ipt_edge_export.train import train as run

    settings = {"generator": "mlp", "prompt_length": 4, "epochs": 1.0, "batch_size": 16, "lr": 1e-2}
    settings.update(options)
    run(
        TrainOptions(train_file=train, dev_file=dev, out_dir=out, backbone=str(backbone), **settings),
        progress=lambda message: None,
    )
    return out


@pytest.fixture(scope="session")
def checkpoints(tiny_backbone, sentiment_files, tmp_path_factory) -> dict[str, Path]:
    """One trained checkpoint per generator kind (a few steps each), and "mlp-prefix@1": an
    mlp-prefix task prompting from layer 1 on (of the tiny BERT's 2)."""
    folder = tmp_path_factory.mktemp("checkpoints")
    train, dev = sentiment_files
    made = {
        kind: train_checkpoint(tiny_backbone, train, dev, folder / kind, generator=kind)
        for kind in (*ALL_KINDS, *PREFIX_KINDS)
    }
    made["mlp-prefix@1"] = train_checkpoint(
        tiny_backbone, train, dev, folder / "mlp-prefix-1", generator="mlp-prefix", prefix_from_layer=1
    )
    return made


@pytest.fixture(scope="session")
def bundle(checkpoints, tmp_path_factory) -> Path:
    """A bundle holding the mlp task, exported once for the read-only tests."""
    from ipt_edge_export.onnx_export import export_checkpoint

    path = tmp_path_factory.mktemp("bundles") / "bundle"
    export_checkpoint(checkpoints["mlp"], path, task="sentiment", log=lambda message: None)
    return path
