"""The tiny world the tests live in: a 2-layer, hidden-32 random BERT with its own WordPiece tokenizer,
and labelled rows made from its vocabulary. Shared by tests/conftest.py and tests/bundles/make.py.

Importing this module needs only the runtime (tokenizers); `write_backbone`, `train_checkpoint` and
`torch_logits` import torch and the export side when called."""

from __future__ import annotations

import random
from pathlib import Path

POSITIVE = ["good", "great", "fine", "lovely", "superb"]
NEGATIVE = ["bad", "awful", "poor", "dull", "boring"]
FILLER = ["the", "film", "was", "a", "plot", "and", "very", "movie", "story", "is", "it", "so", "cast"]
KINDS = ("prefix", "lookup-prefix", "mlp-prefix", "lstm-prefix", "cnn-prefix", "attn-prefix")  # every family
INSTANCE_KINDS = KINDS[1:]  # those whose prefix depends on the input

BUNDLES = Path(__file__).parent / "bundles"
SENTIMENT_BUNDLE = BUNDLES / "sentiment"  # one mlp-prefix task "sentiment", labels neg/pos
MULTI_BUNDLE = BUNDLES / "multi"  # MULTI_TASKS below
PAIR_BUNDLE = BUNDLES / "pair"  # one pair task "entail", labels differ/same

# The committed multi-task bundle: name -> (generator, P, extra training options). Every family,
# prompt lengths 2 to 5, a prefix from layer 1 only, and "rating3", whose labels differ from
# everyone else's (low/mid/high where the others have neg/pos).
MULTI_TASKS = {
    "prefix2": ("prefix", 2, {}),
    "lookup4": ("lookup-prefix", 4, {}),
    "mlp4": ("mlp-prefix", 4, {}),
    "lstm3": ("lstm-prefix", 3, {}),
    "cnn5": ("cnn-prefix", 5, {}),
    "attn4": ("attn-prefix", 4, {}),
    "late4": ("mlp-prefix", 4, {"prefix_from_layer": 1}),
    "rating3": ("mlp-prefix", 4, {"labels": "low,mid,high"}),
}


def wordpiece_tokenizer(
    vocab: list[str],
    max_input_chars_per_word: int = 100,
    cls: str = "[CLS]",
    sep: str = "[SEP]",
    unk: str = "[UNK]",
    pair_separators: int = 1,
):
    """A BERT-style tokenizer over `vocab`: BertNormalizer (cleans, lowercases, strips accents,
    spaces out CJK), BertPreTokenizer, WordPiece; cls $A sep (pairs: ... sep $B sep, with
    `pair_separators` seps between the parts: 1 for BERT, 2 for MPNet's <s> $A </s> </s> $B </s>)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    tokenizer = Tokenizer(
        WordPiece(
            {t: i for i, t in enumerate(vocab)},
            unk_token=unk,
            max_input_chars_per_word=max_input_chars_per_word,
        )
    )
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    between = " ".join([f"{sep}:0"] * pair_separators)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{cls}:0 $A:0 {sep}:0",
        pair=f"{cls}:0 $A:0 {between} $B:1 {sep}:1",
        special_tokens=[(cls, vocab.index(cls)), (sep, vocab.index(sep))],
    )
    return tokenizer


def write_tokenizer(path: Path) -> list[str]:
    from tokenizers import decoders

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = list("abcdefghijklmnopqrstuvwxyz") + ["##" + c for c in "abcdefghijklmnopqrstuvwxyz"]
    words = [w for w in POSITIVE + NEGATIVE + FILLER if w not in letters]
    vocab = specials + words + letters + list(".,!?'")
    tokenizer = wordpiece_tokenizer(vocab)
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.save(str(path))
    return vocab


def write_backbone(folder: Path) -> Path:
    """A 2-layer, hidden-32 BERT folder (config.json, model.safetensors, tokenizer.json), seed 0."""
    import torch
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    vocab = write_tokenizer(folder / "tokenizer.json")
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
    """Four filler words and one sentiment word, shuffled; the label is the sentiment word's."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        positive = rng.random() < 0.5
        words = [*rng.sample(FILLER, 4), rng.choice(POSITIVE if positive else NEGATIVE)]
        rng.shuffle(words)
        rows.append((" ".join(words), "pos" if positive else "neg"))
    return rows


def rating_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """Three labels: a negative word is low, a positive one high, no sentiment word mid."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["low", "mid", "high"])
        words = rng.sample(FILLER, 4)
        if label != "mid":
            words.append(rng.choice(NEGATIVE if label == "low" else POSITIVE))
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def pair_rows(n: int, seed: int) -> list[tuple[str, str, str]]:
    """(premise, hypothesis, label): "same" where both carry the same sentiment word."""
    rng = random.Random(seed)
    words = POSITIVE + NEGATIVE
    rows = []
    for _ in range(n):
        first = rng.choice(words)
        same = rng.random() < 0.5
        second = first if same else rng.choice([w for w in words if w != first])
        rows.append((f"the film was {first}", f"it is {second}", "same" if same else "differ"))
    return rows


def write_tsv(path: Path, header: list[str], rows: list[tuple]) -> Path:
    lines = ["\t".join(header)] + ["\t".join(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def train_checkpoint(backbone: Path, train: Path, dev: Path | None, out: Path, **options) -> Path:
    from ipt_edge_export.train import TrainOptions
    from ipt_edge_export.train import train as run

    # probe_floor off: a test of a generator family gets that family, never the probe the floor keeps.
    settings = {"generator": "mlp-prefix", "prompt_length": 4, "epochs": 1.0, "batch_size": 16, "lr": 1e-2,
                "probe_floor": False}  # fmt: skip
    settings.update(options)
    run(
        TrainOptions(train_file=train, dev_file=dev, out_dir=out, backbone=str(backbone), **settings),
        progress=lambda message: None,
    )
    return out


def torch_logits(checkpoint: Path, backbone: Path, texts: list):
    """The PyTorch model's logits for `texts`: what an exported task must reproduce."""
    import torch

    from ipt_edge.tokenizer import BundleTokenizer
    from ipt_edge_export.checkpoint import model_from_checkpoint, read_checkpoint

    model, source = model_from_checkpoint(read_checkpoint(checkpoint), str(backbone))
    batch = BundleTokenizer(source.tokenizer_path, model.config.max_length).encode(texts)
    with torch.no_grad():
        return model(
            *(torch.from_numpy(a) for a in (batch.input_ids, batch.attention_mask, batch.token_type_ids))
        ).numpy()


def assert_exported_task_matches_torch(
    checkpoint: Path, backbone: Path, bundle_dir: Path, texts: list
) -> None:
    """Export `checkpoint`, load the bundle in the runtime, and check its probabilities for `texts`
    against the PyTorch model's (1e-4)."""
    import numpy as np

    from ipt_edge.bundle import Bundle
    from ipt_edge_export.onnx_export import export_checkpoint

    export_checkpoint(checkpoint, bundle_dir, backbone=str(backbone), log=lambda m: None)
    bundle = Bundle.load(bundle_dir)
    runtime = bundle.predict_tasks(texts, bundle.tasks)
    expected = torch_logits(checkpoint, backbone, texts)
    probabilities = np.exp(expected) / np.exp(expected).sum(-1, keepdims=True)
    name = checkpoint.name
    got = np.array(
        [list(runtime.record(i)["tasks"][name]["probabilities"].values()) for i in range(len(texts))]
    )
    np.testing.assert_allclose(got, probabilities, atol=1e-4)


def cli_runner():
    """typer's CliRunner with stderr kept apart from stdout, at any click: click < 8.2 mixes the two
    unless told not to, and 8.2 dropped the option (and always keeps them apart)."""
    import inspect

    from typer.testing import CliRunner

    if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters:
        return CliRunner(mix_stderr=False)
    return CliRunner()


def record_predict_tasks(monkeypatch) -> list:
    """Spy on Bundle.predict_tasks: the calls' (number of texts, task names), in order."""
    from ipt_edge import Bundle

    calls: list = []
    original = Bundle.predict_tasks

    def recording(self, texts, tasks, batch_size=32):
        calls.append((len(texts), list(tasks)))
        return original(self, texts, tasks, batch_size)

    monkeypatch.setattr(Bundle, "predict_tasks", recording)
    return calls
