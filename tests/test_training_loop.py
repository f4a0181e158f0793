"""The training loop's levers (issue #28) keep the trained function: length-bucketed batches see
every row once per epoch, the rate warms up from the first step and ends at zero, rows tokenized
once pad as the runtime pads, a long batch run in parts and the layers below the first prompted
one computed once give the loss and gradients of the plain step, and bf16 falls back to fp32 with
a message. Speed itself is measured in benchmarks/train_speed.py, not here."""

import itertools
import random

import pytest

torch = pytest.importorskip("torch")
from transformers import BertModel  # noqa: E402

from ipt_edge.tokenizer import BundleTokenizer  # noqa: E402
from ipt_edge_export import train as training  # noqa: E402
from ipt_edge_export.model import IPTConfig, IPTModel  # noqa: E402

from .tiny import sentiment_rows  # noqa: E402

pytestmark = pytest.mark.export


@pytest.fixture(scope="module")
def bert(tiny_backbone):
    return BertModel.from_pretrained(tiny_backbone, attn_implementation="eager").eval()


@pytest.fixture(scope="module")
def encoder(tiny_backbone):
    return BundleTokenizer(tiny_backbone / "tokenizer.json", 32)


def test_bucketed_batches_hold_every_row_once_in_an_order_the_seed_changes():
    lengths = [random.Random(i).randint(1, 60) for i in range(1000)]
    epochs = [training.length_bucketed(lengths, 32, random.Random(seed)) for seed in (0, 0, 1)]
    for batches in epochs:
        rows = [i for batch in batches for i in batch]
        assert sorted(rows) == list(range(1000))
        assert all(len(batch) <= 32 for batch in batches)
    assert epochs[0] == epochs[1]  # the same seed: the same epoch
    assert epochs[0] != epochs[2]
    # Rows of a batch are of about one length: far less padding than random batches.
    padded = sum(len(b) * max(lengths[i] for i in b) for b in epochs[0])
    order = list(range(1000))
    random.Random(0).shuffle(order)
    at_random = sum(len(b) * max(lengths[i] for i in b) for b in training.batches(order, 32))
    assert padded < 0.7 * at_random


def test_consecutive_epochs_draw_different_batches():
    rng = random.Random(3)
    lengths = [i % 17 + 1 for i in range(500)]
    assert training.length_bucketed(lengths, 16, rng) != training.length_bucketed(lengths, 16, rng)


def test_rows_tokenized_once_pad_as_the_runtime_pads(encoder):
    texts = [text for text, _ in sentiment_rows(40, seed=1)] + [("the film", "a plot was good")]
    rows = training.TokenizedRows.of(encoder, texts, chunk=7)  # several chunks
    picked = [3, 40, 0, 17]
    expected = encoder.encode([texts[i] for i in picked])
    got = rows.batch(picked, torch.device("cpu"))
    for tensor, array in zip(
        got, (expected.input_ids, expected.attention_mask, expected.token_type_ids), strict=True
    ):
        assert tensor.numpy().tolist() == array.tolist()


def _step(model, inputs, target, **forward):
    """Loss and the tuned parameters' gradients of one plain step."""
    model.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(*inputs, **forward), target)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _batch(encoder, n=6, seed=2):
    rows = sentiment_rows(n, seed=seed)
    batch = encoder.encode([text for text, _ in rows])
    inputs = tuple(torch.from_numpy(a) for a in (batch.input_ids, batch.attention_mask, batch.token_type_ids))
    return inputs, torch.tensor([int(label == "pos") for _, label in rows])


@pytest.mark.parametrize("kind", ["attn-prefix", "lstm-prefix", "prefix"])
def test_cached_lower_layers_give_the_same_loss_and_gradients(bert, encoder, kind):
    model = IPTModel(
        bert, IPTConfig(generator=kind, prompt_length=3, labels=["neg", "pos"], prefix_from_layer=1)
    )
    model.eval()  # no dropout: the two steps must see the same function
    inputs, target = _batch(encoder)
    loss, grads = _step(model, inputs, target)
    states = training.LowerStates(model, budget=1 << 20, dtype=None)
    rows = list(range(len(target)))
    first = states(rows, inputs)  # computed, and kept
    assert len(states.rows) == len(rows)
    again = states(rows, inputs)  # from what was kept: zero on padding, the same on real tokens
    real = inputs[1].bool()
    assert torch.equal(first[real], again[real])
    cached_loss, cached_grads = _step(model, inputs, target, lower=again)
    assert cached_loss == pytest.approx(loss, abs=1e-5)
    assert cached_grads.keys() == grads.keys()
    for name, grad in grads.items():
        assert torch.allclose(cached_grads[name], grad, atol=1e-5), name


def test_the_lower_state_cache_keeps_to_its_budget(bert, encoder):
    model = IPTModel(
        bert, IPTConfig(generator="prefix", prompt_length=2, labels=["n", "p"], prefix_from_layer=1)
    )
    inputs, _ = _batch(encoder)
    one_row = 4 * int(inputs[1][0].sum()) * bert.config.hidden_size
    states = training.LowerStates(model, budget=one_row, dtype=None)
    states(list(range(6)), inputs)
    assert 1 <= len(states.rows) < 6 and states.bytes <= one_row


def test_a_long_batch_in_parts_sums_to_the_whole_batch_gradient(bert, encoder):
    model = IPTModel(bert, IPTConfig(generator="attn-prefix", prompt_length=3, labels=["neg", "pos"])).eval()
    inputs, target = _batch(encoder, n=7)
    loss, grads = _step(model, inputs, target)
    model.zero_grad(set_to_none=True)
    pieces = training.parts(7, inputs[0].shape[1], max_tokens=2 * inputs[0].shape[1])
    assert [len(range(7)[p]) for p in pieces] == [2, 2, 2, 1]
    total = 0.0
    for part in pieces:
        logits = model(*(x[part] for x in inputs))
        part_loss = torch.nn.functional.cross_entropy(logits, target[part], reduction="sum") / 7
        part_loss.backward()
        total += part_loss.item()
    assert total == pytest.approx(loss, abs=1e-6)
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.allclose(p.grad, grads[name], atol=1e-6), name


def test_parts_never_split_below_one_row():
    assert training.parts(3, 5000, max_tokens=2048) == [slice(0, 1), slice(1, 2), slice(2, 3)]
    assert training.parts(32, 10, max_tokens=2048) == [slice(0, 32)]


def test_without_native_bf16_training_runs_fp32_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(training, "native_bf16", lambda device: False)
    said = []
    options = training.TrainOptions(tmp_path / "t.tsv", tmp_path / "out")
    assert training.autocast_dtype(options, torch.device("cpu"), said.append) is None
    assert len(said) == 1 and "fp32" in said[0] and "bf16" in said[0]


def test_bf16_where_native_and_fp32_when_asked(monkeypatch, tmp_path):
    monkeypatch.setattr(training, "native_bf16", lambda device: True)
    said = []
    auto = training.TrainOptions(tmp_path / "t.tsv", tmp_path / "out")
    assert training.autocast_dtype(auto, torch.device("cpu"), said.append) is torch.bfloat16
    fp32 = training.TrainOptions(tmp_path / "t.tsv", tmp_path / "out", precision="fp32")
    assert training.autocast_dtype(fp32, torch.device("cpu"), said.append) is None
    legacy = training.TrainOptions(tmp_path / "t.tsv", tmp_path / "out", legacy_loop=True)
    assert training.autocast_dtype(legacy, torch.device("cpu"), said.append) is None
    assert said == []
    with pytest.raises(ValueError, match="precision"):
        training.autocast_dtype(
            training.TrainOptions(tmp_path / "t.tsv", tmp_path / "out", precision="fp16"),
            torch.device("cpu"),
            said.append,
        )


def test_label_counts_are_of_the_rows_trained_on(tmp_path):
    rows = "text\tlabel\n" + "".join(f"row {i}\t{'a' if i < 90 else 'b'}\n" for i in range(100))
    (tmp_path / "t.tsv").write_text(rows)
    said = []
    options = training.TrainOptions(tmp_path / "t.tsv", tmp_path / "out", max_train_rows=20, seed=1)
    train_set, *_ = training.load_task_data(options, said.append)
    counts = {label: train_set.labels.count(label) for label in (0, 1)}
    assert said == [
        f"labels found in 20 rows of {tmp_path / 't.tsv'} (column 'label'): 'a' x{counts[0]}, 'b' x{counts[1]}"
    ]


def test_the_step_budget_gives_small_sets_enough_steps(tmp_path):
    options = training.TrainOptions(tmp_path / "t.tsv", tmp_path / "out")  # batch 32
    assert training.training_steps(32, options) == training.MIN_STEPS  # 2 epochs would be 2 steps
    assert training.training_steps(40_000, options) == 2 * 1250  # large sets: 2 epochs, as before
    assert training.training_steps(32, replace_options(options, epochs=2.0)) == 2  # asked for: as asked
    assert training.training_steps(40_000, replace_options(options, epochs=2.0, steps=7)) == 7


def replace_options(options, **changes):
    from dataclasses import replace

    return replace(options, **changes)


def test_a_dev_split_is_stratified_seeded_and_chooses_steps_only_where_it_is_large_enough():
    rows = [(f"text {i}", 0 if i % 4 else 1) for i in range(1000)]  # 750 of label 0, 250 of label 1
    examples = training.Examples([t for t, _ in rows], [label for _, label in rows])
    train_set, dev_set, floor_only = training.carve_dev(examples, seed=0)
    assert len(dev_set.texts) == 100 and len(train_set.texts) == 900 and not floor_only
    assert dev_set.labels.count(1) == 25  # the labels' shares kept
    assert not set(dev_set.texts) & set(train_set.texts)
    assert training.carve_dev(examples, seed=0)[1].texts == dev_set.texts
    assert training.carve_dev(examples, seed=1)[1].texts != dev_set.texts
    # A dev of 40 rows would be too coarse to choose steps: a fifth of each label only checks the probe.
    few = training.Examples(examples.texts[:400], examples.labels[:400])
    _, dev_few, floor_only = training.carve_dev(few, seed=0)
    assert floor_only and len(dev_few.texts) == 80 and dev_few.labels.count(1) == 20
    # 8 rows, one of them the only row of its label: that label keeps its row, the other gives one.
    tiny = training.Examples([f"t{i}" for i in range(8)], [0] * 7 + [1])
    _, dev_tiny, _ = training.carve_dev(tiny, seed=0)
    assert dev_tiny.labels == [0]
    single = training.Examples(["a", "b"], [0, 1])
    assert training.carve_dev(single, seed=0) == (single, None, False)


def test_the_rate_warms_up_from_its_first_step_then_falls_to_zero_at_the_last():
    from ipt_edge_export.schedule import warmup_then_decay

    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=1.0)
    scheduler, warmup = warmup_then_decay(optimizer, steps=100, warmup_share=0.06)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert warmup == 6
    assert rates[0] == pytest.approx(1 / 6)  # the first step already learns
    assert rates[5] == pytest.approx(1.0) and max(rates) == pytest.approx(1.0)
    assert all(later <= earlier for earlier, later in itertools.pairwise(rates[5:]))
    assert rates[-1] == pytest.approx(1 / 94) and optimizer.param_groups[0]["lr"] == 0.0
