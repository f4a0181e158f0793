"""Training is held to a floor and guarded (issue #29): the linear probe on the frozen backbone is
fitted first and kept when it does better on dev; a run whose loss goes nowhere restarts
at a lower rate and says so; each packaged backbone has its own default rate."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ipt_edge_export import train as training  # noqa: E402
from ipt_edge_export.checkpoint import read_checkpoint  # noqa: E402
from ipt_edge_export.probe import LinearProbe  # noqa: E402

from .tiny import assert_exported_task_matches_torch  # noqa: E402

pytestmark = pytest.mark.export

TEXTS = ["the film was good", "dull", "a very lovely story and a great cast", "poor plot"]


def test_the_probe_separates_what_a_linear_head_can_and_ships_as_one():
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(200, 8, generator=generator) + 5  # pooled states sit off the origin
    labels = (features[:, 1] > 5).long()
    features[:, 1] += 2 * (2 * labels - 1)  # a margin along one feature
    probe = LinearProbe.fit(features, labels.tolist(), classes=2)
    assert probe.accuracy(features, labels.tolist()) > 0.95
    head = torch.nn.Linear(8, 2)
    head.weight.data, head.bias.data = probe.weight, probe.bias  # the head as it ships: raw features in
    assert (head(features).argmax(-1) == labels).float().mean() > 0.95


def test_a_probe_that_wins_on_dev_is_the_task_and_the_runtime_runs_it(
    tiny_backbone, sentiment_files, tmp_path, monkeypatch
):
    def no_row_right(model, encoder, examples):  # prompts that get no dev row right
        return torch.zeros(len(examples.labels), dtype=torch.bool)

    monkeypatch.setattr(training, "correct_rows", no_row_right)
    train, dev = sentiment_files
    said = []
    options = training.TrainOptions(train, tmp_path / "ckpt", dev_file=dev, backbone=str(tiny_backbone),
                                    prompt_length=4, steps=1)  # fmt: skip
    record = training.train(options, said.append)
    assert record["kept"] == "probe" and record["probe_dev_accuracy"] > record["dev_accuracy"] == 0.0
    assert any("linear probe (frozen backbone, no prompt): dev accuracy" in line for line in said)
    assert any("the task is the probe" in line for line in said)
    config = read_checkpoint(tmp_path / "ckpt").config
    assert config.prefix_from_layer == 2 and config.generator == "prefix"  # no layer of the 2 reads a prefix
    assert_exported_task_matches_torch(tmp_path / "ckpt", tiny_backbone, tmp_path / "bundle", TEXTS)


def test_prompts_that_beat_the_probe_are_kept_and_both_accuracies_are_printed(
    tiny_backbone, sentiment_files, tmp_path, monkeypatch
):
    monkeypatch.setattr(  # a probe that gets no row right
        LinearProbe, "correct", lambda self, features, labels: torch.zeros(len(labels), dtype=torch.bool)
    )
    train, dev = sentiment_files
    said = []
    record = training.train(
        training.TrainOptions(train, tmp_path / "again", dev_file=dev, backbone=str(tiny_backbone),
                              prompt_length=4, epochs=1.0, lr=1e-2),
        said.append,
    )  # fmt: skip
    assert record["kept"] == "prompts" and record["probe_dev_accuracy"] == 0.0
    assert any(line.startswith("dev accuracy") and "linear probe 0.0000" in line for line in said)
    assert read_checkpoint(tmp_path / "again").config.prefix_from_layer == 0


def rows(pattern: str):
    return torch.tensor([c == "1" for c in pattern])


def test_on_a_dev_split_the_probe_wins_with_any_lead():
    assert training.probe_wins(rows("1100"), rows("1000"), few=False)
    assert not training.probe_wins(rows("1100"), rows("0110"), few=False)  # a tie keeps the prompts


def test_on_a_small_sets_few_held_out_rows_the_probe_must_win_beyond_noise():
    # One or two rows ahead on a dozen is what chance gives: the prompts stay.
    assert not training.probe_wins(rows("111111100000"), rows("111110000000"), few=True)
    assert not training.probe_wins(rows("1111"), rows("1100"), few=True)  # 2 of 2 disagreements: p = 0.25
    # Prompts that collapsed lose row after row: the probe is kept.
    assert training.probe_wins(rows("1111"), rows("0000"), few=True)  # p = 1/16
    assert training.probe_wins(rows("111111110000"), rows("100000010000"), few=True)  # 6 to 0: p = 1/64
    assert not training.probe_wins(rows("0000"), rows("1111"), few=True)


def test_without_dev_a_small_set_holds_rows_out_only_to_check_the_probe(
    tiny_backbone, sentiment_files, tmp_path
):
    train, _ = sentiment_files  # 96 rows: a 10% dev split would hold 10, too few to choose steps by
    said = []
    record = training.train(
        training.TrainOptions(
            train,
            tmp_path / "ckpt",
            backbone=str(tiny_backbone),
            prompt_length=4,
            steps=20,
            recipe="cross-entropy",
        ),
        said.append,
    )
    assert any("only decide between the task and the linear probe" in line for line in said)
    assert record["train_rows"] < 96 and record["history"] == []  # no step chosen on those rows
    assert record["probe_dev_accuracy"] is not None and record["kept"] in ("probe", "prompts")


def test_a_run_that_goes_nowhere_restarts_at_a_lower_rate_and_says_so(
    tiny_backbone, sentiment_files, tmp_path
):
    train, dev = sentiment_files
    said = []
    options = training.TrainOptions(train, tmp_path / "ckpt", dev_file=dev, backbone=str(tiny_backbone),
                                    prompt_length=4, steps=40, lr=1e4)  # fmt: skip
    record = training.train(options, said.append)
    restarts = [line for line in said if line.startswith("training diverged")]
    assert len(restarts) == len(record["restarts"]) >= 1
    assert record["restarts"][0]["lr"] == 1e4 and record["lr"] == 1e4 / 4 ** len(record["restarts"])
    assert "Restarting at lr 2500" in restarts[0]


def test_the_guard_reads_the_loss_against_the_label_shares():
    assert training.prior_entropy([0, 1, 0, 1]) == pytest.approx(np.log(2))
    assert training.prior_entropy([0, 0, 0, 1]) < np.log(2)  # a 3:1 set: the majority guess scores less


def test_each_packaged_backbone_has_its_own_default_rate():
    assert training.default_lr("all-MiniLM-L6-v2") == 5e-2
    assert training.default_lr("sentence-transformers/all-mpnet-base-v2") == 1e-2
    assert training.default_lr("/some/local/folder") == training.UNKNOWN_BACKBONE_LR
