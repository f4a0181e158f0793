"""Small sets train the prompts on pairs of rows (issue #29): label-balanced batches, every pair of
a batch pulled together (same label) or pushed apart (other labels), each row held near its frozen
embedding; the head is then the probe on the prompted states. `train` picks this recipe under 100
rows per label, says so, and the task it saves runs in the runtime as any other."""

import random

import pytest

torch = pytest.importorskip("torch")

from ipt_edge_export import train as training  # noqa: E402
from ipt_edge_export.checkpoint import read_checkpoint  # noqa: E402
from ipt_edge_export.pairs import balanced_batch, pair_loss  # noqa: E402

from .tiny import assert_exported_task_matches_torch  # noqa: E402

pytestmark = pytest.mark.export

TEXTS = ["the film was good", "dull", "a very lovely story and a great cast", "poor plot"]


def test_a_batch_takes_the_labels_in_turn_and_holds_each_row_once():
    by_label = {0: list(range(10)), 1: list(range(10, 13)), 2: list(range(13, 30))}
    batch = balanced_batch(by_label, 8, random.Random(0))
    assert len(batch) == len(set(batch)) == 8
    labels = [0 if i < 10 else 1 if i < 13 else 2 for i in batch]
    assert labels[:3] == [0, 1, 2] and labels.count(1) == 3  # every label, the small one in full
    assert balanced_batch(by_label, 64, random.Random(0)).__len__() == 30  # no row twice to fill a batch
    assert balanced_batch(by_label, 8, random.Random(1)) != batch  # the seed draws other rows


def test_the_pair_loss_is_zero_only_when_labels_cluster_apart():
    labels = torch.tensor([0, 0, 1, 1])
    clustered = torch.tensor(
        [[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]]
    )  # same label parallel, others orthogonal
    assert pair_loss(clustered, labels).item() == pytest.approx(0.0, abs=1e-6)
    mixed = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    # Both same-label pairs at cosine 0 (error 1 each); of the four other pairs, two at cosine 1.
    assert pair_loss(mixed, labels).item() == pytest.approx((1.0 + 0.5) / 2)


def test_the_recipe_follows_the_rows_per_label_unless_chosen(tmp_path):
    options = training.TrainOptions(tmp_path / "t.tsv", tmp_path / "out")
    assert training.choose_recipe(options, rows=199, labels=2) == "pairs"
    assert training.choose_recipe(options, rows=200, labels=2) == "cross-entropy"
    assert training.choose_recipe(options, rows=599, labels=6) == "pairs"
    chosen = training.TrainOptions(tmp_path / "t.tsv", tmp_path / "out", recipe="cross-entropy")
    assert training.choose_recipe(chosen, rows=10, labels=2) == "cross-entropy"
    with pytest.raises(ValueError, match="recipe must be one of auto, pairs, cross-entropy"):
        training.choose_recipe(
            training.TrainOptions(tmp_path / "t.tsv", tmp_path / "o", recipe="setfit"), 10, 2
        )


def test_a_small_set_trains_on_pairs_says_so_and_ships_a_task_the_runtime_reproduces(
    tiny_backbone, sentiment_files, tmp_path
):
    train, dev = sentiment_files  # 96 rows, 2 labels: 48 a label
    said = []
    options = training.TrainOptions(train, tmp_path / "ckpt", dev_file=dev, backbone=str(tiny_backbone),
                                    prompt_length=4, steps=15, probe_floor=False)  # fmt: skip
    record = training.train(options, said.append)
    assert record["recipe"] == "pairs" and record["kept"] == "prompts" and record["steps"] == 15
    assert any(line.startswith("recipe: pairs (48 rows per label") for line in said)
    assert any(line.startswith("pairs: 15 steps of 32 rows, pair loss") for line in said)
    config = read_checkpoint(tmp_path / "ckpt").config
    assert config.prefix_from_layer == 0 and config.generator == "attn-prefix"  # the prompts are the task's
    assert_exported_task_matches_torch(tmp_path / "ckpt", tiny_backbone, tmp_path / "bundle", TEXTS)


def test_pairs_pull_same_label_rows_together(tiny_backbone, sentiment_files, tmp_path):
    """The generator trains: after the pairs, rows of one label sit closer than rows of two."""
    from ipt_edge.tokenizer import BundleTokenizer
    from ipt_edge_export.checkpoint import model_from_checkpoint
    from ipt_edge_export.probe import probe_features

    train, _ = sentiment_files
    examples = training.read_examples(train, training.TrainOptions(train, tmp_path), None)[0]
    gaps = []
    for steps in (1, 60):
        out = tmp_path / f"ckpt{steps}"
        training.train(training.TrainOptions(train, out, backbone=str(tiny_backbone), prompt_length=4,
                                             steps=steps, lr=0.5, probe_floor=False, recipe="pairs"),
                       lambda message: None)  # fmt: skip
        model, source = model_from_checkpoint(read_checkpoint(out))
        encoder = BundleTokenizer(source.tokenizer_path, model.config.max_length)
        unit = torch.nn.functional.normalize(
            probe_features(model, encoder, examples.texts, prompted=True), dim=-1
        )
        cosine, labels = unit @ unit.T, torch.tensor(examples.labels)
        same = labels[:, None] == labels[None, :]
        gaps.append((cosine[same].mean() - cosine[~same].mean()).item())
    assert gaps[1] > gaps[0] + 0.05


def test_without_dev_the_held_out_rows_choose_and_chosen_prompts_train_again_on_every_row(
    tiny_backbone, sentiment_files, tmp_path, monkeypatch
):
    from ipt_edge_export.probe import LinearProbe

    monkeypatch.setattr(LinearProbe, "accuracy", lambda self, features, labels: 0.0)  # the prompts win
    train, _ = sentiment_files
    said = []
    record = training.train(
        training.TrainOptions(
            train, tmp_path / "ckpt", backbone=str(tiny_backbone), prompt_length=4, steps=5
        ),
        said.append,
    )
    assert any("only decide between the task and the linear probe" in line for line in said)
    assert record["recipe"] == "pairs" and record["kept"] == "prompts" and record["train_rows"] == 96
    assert "training the prompts again on all 96 rows" in said
    assert sum(line.startswith("pairs: 5 steps") for line in said) == 2
