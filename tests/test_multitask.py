"""Many tasks, one backbone: a Bundle opens one backbone session whatever tasks it runs, and rows of
different tasks (every generator family, different prompt lengths) share its calls, each row scoring
what its task alone gives."""

from __future__ import annotations

import json
import math
import random
import shutil
import threading

import numpy as np
import pytest
from typer.testing import CliRunner

import ipt_edge.bundle
from ipt_edge import Bundle, Classifier
from ipt_edge.cli import app
from ipt_edge.errors import BundleError
from ipt_edge.manifest import read_manifest

from .tiny import KINDS, MULTI_TASKS, rating_rows, record_predict_tasks, sentiment_rows, write_tsv

# The committed bundle (`multi`, tests/bundles/multi) holds MULTI_TASKS: a task of every generator
# family, prompt lengths 2 to 5, "late4" (a prefix from layer 1 on), all neg/pos, and "rating3"
# (labels low/mid/high).
TASKS = MULTI_TASKS
TEXTS = [
    "the film was good",
    "a dull and boring plot , very poor",
    "superb",
    "it is so lovely the cast is great",
    "bad",
    "the story was fine and the cast superb but the plot dull",
]
# The PyTorch parity test trains its own tasks (name -> checkpoint key in `checkpoints`, or a
# (generator, P) trained here) and exports them into a bundle of its own: every family, P 2 to 4.
PARITY_TASKS = {
    "prefix2": ("prefix", 2),
    "lookup4": "lookup-prefix",
    "mlp4": "mlp-prefix",
    "lstm3": ("lstm-prefix", 3),
    "cnn4": "cnn-prefix",
    "attn4": "attn-prefix",
    "late4": "mlp-prefix@1",
}


@pytest.fixture(scope="module")
def sources(checkpoints, tiny_backbone, sentiment_files, tmp_path_factory):
    from .tiny import train_checkpoint

    folder = tmp_path_factory.mktemp("multitask")
    train, dev = sentiment_files
    made = {}
    for name, source in PARITY_TASKS.items():
        if isinstance(source, tuple):
            generator, p = source
            made[name] = train_checkpoint(
                tiny_backbone, train, dev, folder / name, generator=generator, prompt_length=p
            )
        else:
            made[name] = checkpoints[source]
    return made


@pytest.fixture(scope="module")
def exported(sources, tmp_path_factory):
    from ipt_edge_export.onnx_export import export_checkpoint

    path = tmp_path_factory.mktemp("multi") / "bundle"
    for name, checkpoint in sources.items():
        export_checkpoint(checkpoint, path, task=name, log=lambda m: None)
    return path


def alone(bundle_path, name, texts):
    """The reference: each task in a bundle of its own loading, on rows of its own."""
    return Classifier(Bundle.load(bundle_path), name).logits(texts)


class Counting:
    """A session that records the feeds' shapes and the prefix lengths of each call."""

    def __init__(self, session):
        self.session, self.calls = session, []

    def run(self, outputs, feeds):
        self.calls.append({name: value.shape for name, value in feeds.items()})
        if "prefix_mask" in feeds:  # each row's P: its prefix positions the last layer attends to
            self.calls[-1]["row_prompts"] = feeds["prefix_mask"][:, -1].sum(axis=1).tolist()
        return self.session.run(outputs, feeds)

    def __getattr__(self, name):
        return getattr(self.session, name)


def test_bundle_lists_its_tasks(multi):
    assert Bundle.load(multi).tasks == sorted(TASKS)


def test_the_multi_bundle_has_every_generator_family_and_several_prompt_lengths(multi):
    # What the tests below mix: a task of each family, and prompt lengths that differ.
    tasks = read_manifest(multi).tasks
    assert {task.generator for task in tasks.values()} == set(KINDS)
    assert len({task.prompt_length for task in tasks.values()}) >= 3
    assert {name: (task.generator, task.prompt_length) for name, task in tasks.items()} == {
        name: (generator, p) for name, (generator, p, _) in TASKS.items()
    }


def test_a_bundle_holds_one_backbone_graph(multi):
    manifest = read_manifest(multi)
    assert manifest.shared_files() == ["tokenizer.json", "embed.onnx", "encoder.onnx"]
    shared = sorted(path for path in manifest.files if not path.startswith("tasks/"))
    assert shared == ["embed.onnx", "encoder.onnx", "tokenizer.json"]
    assert sorted(p.name for p in multi.glob("*.onnx")) == ["embed.onnx", "encoder.onnx"]


def test_a_bundle_opens_one_backbone_session_whatever_tasks_it_runs(multi, monkeypatch):
    opened = []

    def recording(model, name, providers, threads=None, small=False, spin=True):
        opened.append((name, small))
        return create_session(model, name, providers, threads, small, spin)

    create_session = ipt_edge.bundle.create_session
    monkeypatch.setattr(ipt_edge.bundle, "create_session", recording)
    bundle = Bundle.load(multi)
    encoder = bundle.encoder
    classifiers = [Classifier(bundle, name) for name in TASKS]
    for classifier in classifiers:
        assert classifier.bundle is bundle
        assert len(classifier.predict_proba(TEXTS[:2])) == 2
    bundle.predict(TEXTS * 2, [name for name in TASKS for _ in range(2)][: len(TEXTS) * 2])
    assert bundle.encoder is encoder
    backbone = [(name, small) for name, small in opened if name == "encoder.onnx"]
    assert backbone == [("encoder.onnx", False)]  # one backbone session, for every task
    assert sorted(opened) == sorted(
        [("embed.onnx", True), ("encoder.onnx", False)]
        + [(f"tasks/{name}/generator.onnx", True) for name in TASKS]  # each task's own, once
    )


def test_each_tasks_generator_session_is_small(multi):
    # A task's generator (and the embedding) takes its memory from one arena shared by the process,
    # not an arena of its own (an extra task then costs its weights), and its thread pool does not
    # spin while idle (it would take cores from the backbone). The backbone keeps its own of both.
    bundle = Bundle.load(multi, threads=2)
    small = [bundle.task(name).generator for name in TASKS] + [bundle.embed]
    for session in small:
        entries = session.get_session_options().get_session_config_entry
        assert entries("session.use_env_allocators") == "1"
        assert entries("session.intra_op.allow_spinning") == "0"
        assert session.get_session_options().intra_op_num_threads == 2
    entries = bundle.encoder.get_session_options().get_session_config_entry
    with pytest.raises(RuntimeError):  # no such entry: ONNX Runtime's defaults (own arena, spinning)
        entries("session.use_env_allocators")


def test_tasks_of_every_family_and_prompt_length_share_one_backbone_call_per_batch(multi):
    bundle = Bundle.load(multi)
    bundle.encoder = encoder = Counting(bundle.encoder)
    bundle.embed = embed = Counting(bundle.embed)
    names = list(TASKS)
    texts = [TEXTS[i % len(TEXTS)] for i in range(len(names))]
    bundle.predict(texts, names, batch_size=32)
    longest = max(p for _, p, _ in TASKS.values())
    assert len(encoder.calls) == len(embed.calls) == 1  # every task's rows in one call
    (call,) = encoder.calls
    assert (
        call["prefix_kv.0"] == call["prefix_kv.1"] == (2, len(names), 2, longest, 16)
    )  # [2, B, heads, P, 16]
    assert call["prefix_mask"] == (len(names), 2, longest)
    assert sorted(call["row_prompts"]) == sorted(p for _, p, _ in TASKS.values())
    encoder.calls.clear()
    bundle.predict(texts * 3, names * 3, batch_size=5)
    assert len(encoder.calls) == math.ceil(len(names) * 3 / 5)  # one call per batch, whatever its tasks


def test_mixed_batch_equals_each_task_alone(multi):
    bundle = Bundle.load(multi)
    bundle.encoder = encoder = Counting(bundle.encoder)
    names = list(TASKS)
    tasks = names * 4
    random.Random(0).shuffle(tasks)  # interleaved, each task 4 times
    texts = [TEXTS[i % len(TEXTS)] for i in range(len(tasks))]
    mixed = bundle.logits(texts, tasks, batch_size=5)
    full = [call["row_prompts"] for call in encoder.calls if len(call["row_prompts"]) == 5]
    assert len(full) == 6 and all(len(set(prompts)) > 1 for prompts in full)  # each full batch mixes P
    for name in names:
        rows = [i for i, t in enumerate(tasks) if t == name]
        expected = alone(multi, name, [texts[i] for i in rows])
        np.testing.assert_allclose(np.stack([mixed[i] for i in rows]), expected, atol=1e-4, rtol=0)


@pytest.mark.export
def test_mixed_batch_matches_pytorch_for_every_task(exported, sources, tiny_backbone):
    from .tiny import torch_logits

    bundle = Bundle.load(exported)
    names = list(PARITY_TASKS)
    assert {read_manifest(exported).tasks[name].generator for name in names} == set(KINDS)
    tasks = [names[i % len(names)] for i in range(len(names) * 2)]
    texts = [TEXTS[i % len(TEXTS)] for i in range(len(tasks))]
    mixed = bundle.logits(texts, tasks, batch_size=len(tasks))  # one batch of every family
    for name in names:
        rows = [i for i, t in enumerate(tasks) if t == name]
        expected = torch_logits(sources[name], tiny_backbone, [texts[i] for i in rows])
        np.testing.assert_allclose(np.stack([mixed[i] for i in rows]), expected, atol=1e-4, rtol=0)


def test_predict_tasks_answers_every_task_on_every_text_as_each_task_alone(multi):
    bundle = Bundle.load(multi)
    names = ["rating3", "mlp4", "late4"]
    answers = bundle.predict_tasks(TEXTS, names, batch_size=4)
    assert list(answers.probabilities) == names  # in the order asked
    assert answers.labels == {name: bundle.task(name).labels for name in names}
    for name in names:
        expected = Classifier(Bundle.load(multi), name).predict_proba(TEXTS)
        assert answers.probabilities[name].shape == (len(TEXTS), len(answers.labels[name]))
        np.testing.assert_allclose(answers.probabilities[name], expected, atol=1e-5, rtol=0)
    assert answers.truncated.tolist() == [False] * len(TEXTS)


def with_max_length(multi, tmp_path, task: str, max_length: int):
    """A copy of the multi-task bundle in which `task` keeps `max_length` tokens."""
    copy = tmp_path / "bundle"
    shutil.copytree(multi, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["tasks"][task]["max_length"] = max_length
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_predict_tasks_marks_a_text_truncated_by_any_task(multi, tmp_path):
    copy = with_max_length(multi, tmp_path, "mlp4", 8)  # attn4 keeps 64
    with pytest.warns(UserWarning):
        answers = Bundle.load(copy).predict_tasks(
            ["good", "the film was good and the cast superb"], ["attn4", "mlp4"]
        )
    assert answers.truncated.tolist() == [False, True]


def test_predict_tasks_on_no_texts_gives_empty_answers(multi):
    answers = Bundle.load(multi).predict_tasks([], ["rating3", "mlp4"])
    assert answers.probabilities["rating3"].shape == (0, 3) and answers.truncated.shape == (0,)


def test_predict_tasks_refuses_an_unknown_task_naming_it(multi):
    with pytest.raises(BundleError, match=r"no task 'nope' in the bundle; it has: attn4"):
        Bundle.load(multi).predict_tasks(["good"], ["mlp4", "nope"])


def test_predict_and_score_run_every_task_on_every_row_through_predict_tasks(multi, tmp_path, monkeypatch):
    calls = record_predict_tasks(monkeypatch)
    assert run("predict", "-b", multi, "--task", "mlp4", "--task", "attn4", "good", "bad").exit_code == 0
    source = write_tsv(tmp_path / "in.tsv", ["text", "label"], sentiment_rows(3, seed=5))
    result = run(
        "score", source, "-o", tmp_path / "out.tsv", "-b", multi, "--task", "mlp4", "--task", "attn4"
    )
    assert result.exit_code == 0, result.output
    assert calls == [(2, ["mlp4", "attn4"]), (3, ["mlp4", "attn4"])]


def test_open_bundle_gives_the_bundle_and_its_tasks(multi):
    from ipt_edge.cli.app import open_bundle
    from ipt_edge.task import Task

    loaded, tasks = open_bundle(multi, ["rating3", "mlp4", "rating3"], False, "cpu", None, "fp32")
    assert isinstance(loaded, Bundle)
    assert all(isinstance(task, Task) for task in tasks) and [t.name for t in tasks] == ["rating3", "mlp4"]
    assert tasks[0] is loaded.task("rating3")  # opened once, by the bundle


def test_predict_proba_gives_each_row_its_tasks_labels(multi):
    probabilities = Bundle.load(multi).predict_proba(["good", "bad", "fine"], ["attn4", "rating3", "prefix2"])
    assert [p.shape for p in probabilities] == [(2,), (3,), (2,)]
    assert all(abs(p.sum() - 1) < 1e-6 for p in probabilities)


def test_an_unknown_task_name_is_refused_naming_it(multi):
    with pytest.raises(BundleError, match=r"text 1: no task 'nope' in the bundle; it has: attn4"):
        Bundle.load(multi).predict(["good", "bad"], ["mlp4", "nope"])


def test_one_task_name_per_text(multi):
    with pytest.raises(ValueError, match="2 texts but 1 task names"):
        Bundle.load(multi).predict(["good", "bad"], ["mlp4"])


def test_one_bundle_from_many_threads_equals_serial_use(multi):
    bundle = Bundle.load(multi)
    names = list(TASKS)
    jobs = [([TEXTS[(i + j) % len(TEXTS)] for j in range(5)], [names[(i + j) % len(names)] for j in range(5)])
            for i in range(16)]  # fmt: skip
    serial = [bundle.logits(texts, tasks, batch_size=2) for texts, tasks in jobs]
    results: list = [None] * len(jobs)

    def work(index):
        texts, tasks = jobs[index]
        results[index] = bundle.logits(texts, tasks, batch_size=2)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got, expected in zip(results, serial, strict=True):
        for got_row, expected_row in zip(got, expected, strict=True):  # rating3's rows have 3 labels
            np.testing.assert_array_equal(got_row, expected_row)


def test_truncation_is_returned_per_call_not_kept(multi):
    bundle = Bundle.load(multi)
    with pytest.warns(UserWarning):
        result = bundle.run([" ".join(["good film"] * 40), "bad"], ["mlp4", "attn4"])
    assert result.truncated.tolist() == [True, False]
    assert bundle.run(["bad"], "mlp4").truncated.tolist() == [False]


def test_generator_outputs_off_the_manifest_are_refused_when_the_task_opens(multi, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(multi, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["tasks"]["mlp4"].update(prompt_length=5)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    bundle = Bundle.load(copy)
    with pytest.raises(
        BundleError, match=r"generator.onnx: prefix_kv.0 has prompts = 4, but the manifest says 5"
    ):
        Classifier(bundle, "mlp4")
    assert bundle.predict(["good"], "attn4") in (["neg"], ["pos"])  # the other tasks still run


# ---- the command line ---------------------------------------------------------------------------

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def test_predict_json_answers_every_asked_task(multi):
    result = run("predict", "-b", multi, "--json", "--task", "mlp4", "--task", "attn4", "good", "bad")
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in records] == ["good", "bad"]
    assert set(records[0]["tasks"]) == {"mlp4", "attn4"}
    assert set(records[0]["tasks"]["attn4"]["probabilities"]) == {"neg", "pos"}


def test_predict_without_a_task_on_a_multi_task_bundle_answers_every_task(multi):
    result = run("predict", "-b", multi, "--json", "good")
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["tasks"]) == set(TASKS)


def test_predict_all_tasks_answers_every_task(multi):
    result = run("predict", "-b", multi, "--all-tasks", "--json", "good")
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.stdout)["tasks"]) == set(TASKS)


def test_predict_prints_each_tasks_label_and_probability_then_the_text(multi):
    result = run("predict", "-b", multi, "--task", "mlp4", "--task", "rating3", "the film was good", "dull")
    assert result.exit_code == 0, result.output
    bundle = Bundle.load(multi)
    expected = []
    for text in ["the film was good", "dull"]:
        answers = []
        for name in ["mlp4", "rating3"]:
            classifier = Classifier(bundle, name)
            row = classifier.predict_proba([text])[0]
            answers.append(f"{name}:{classifier.labels[int(row.argmax())]} {row.max():.4f}")
        expected.append("\t".join([*answers, text]))
    assert result.stdout.splitlines() == expected  # A:label p<TAB>B:label p<TAB>text


def test_predict_with_no_task_answers_every_task_in_plain_text(multi):
    result = run("predict", "-b", multi, "good")
    assert result.exit_code == 0, result.output
    *answers, text = result.stdout.rstrip("\n").split("\t")
    assert text == "good"
    assert [answer.split(":")[0] for answer in answers] == Bundle.load(multi).tasks


def test_score_writes_columns_per_task_in_one_pass(multi, tmp_path):
    source = write_tsv(tmp_path / "in.tsv", ["text", "label"], sentiment_rows(7, seed=9))
    out = tmp_path / "out.tsv"
    result = run("score", source, "-o", out, "-b", multi, "--task", "mlp4", "--task", "prefix2")
    assert result.exit_code == 0, result.output
    header = out.read_text().splitlines()[0].split("\t")
    assert header == ["text", "label", "mlp4_prediction", "mlp4_prob_neg", "mlp4_prob_pos",
                      "prefix2_prediction", "prefix2_prob_neg", "prefix2_prob_pos"]  # fmt: skip
    rows = [line.split("\t") for line in out.read_text().splitlines()[1:]]
    texts = [r[0] for r in rows]
    expected = Classifier(Bundle.load(multi), "prefix2").predict_proba(texts)
    np.testing.assert_allclose([[float(r[6]), float(r[7])] for r in rows], expected, atol=1e-5)


def test_score_task_column_scores_each_row_with_its_task(multi, tmp_path):
    rows = [
        (text, ["mlp4", "attn4", "lstm3"][i % 3]) for i, (text, _) in enumerate(sentiment_rows(9, seed=3))
    ]
    source = write_tsv(tmp_path / "in.tsv", ["text", "task"], rows)
    out = tmp_path / "out.jsonl"
    result = run("score", source, "-o", out, "-b", multi, "--task-column", "task")
    assert result.exit_code == 0, result.output
    bundle = Bundle.load(multi)
    scored = [json.loads(line) for line in out.read_text().split("\n") if line]
    assert [(r["text"], r["task"]) for r in scored] == rows
    for row in scored:
        classifier = Classifier(bundle, row["task"])
        expected = classifier.predict_proba([row["text"]])[0]
        assert row["prediction"] == classifier.labels[int(expected.argmax())]
        got = [row[f"prob_{label}"] for label in classifier.labels]
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_score_task_column_leaves_a_cell_empty_where_a_label_is_not_the_rows_tasks(multi, tmp_path):
    rows = [(sentiment_rows(1, seed=21)[0][0], "mlp4"), (rating_rows(1, seed=22)[0][0], "rating3")]
    source = write_tsv(tmp_path / "in.tsv", ["text", "task"], rows)
    out = tmp_path / "out.csv"
    result = run("score", source, "-o", out, "-b", multi, "--task-column", "task")
    assert result.exit_code == 0, result.output
    header, *lines = [line.split(",") for line in out.read_text().splitlines()]
    probability_columns = sorted(name for name in header if name.startswith("prob_"))
    assert probability_columns == ["prob_high", "prob_low", "prob_mid", "prob_neg", "prob_pos"]
    scored = [dict(zip(header, line, strict=True)) for line in lines]
    assert [name for name in probability_columns if scored[0][name] == ""] == [
        "prob_high", "prob_low", "prob_mid"
    ]  # fmt: skip
    assert [name for name in probability_columns if scored[1][name] == ""] == ["prob_neg", "prob_pos"]
    bundle = Bundle.load(multi)
    for row, (text, task) in zip(scored, rows, strict=True):
        classifier = Classifier(bundle, task)
        expected = classifier.predict_proba([text])[0]
        got = [float(row[f"prob_{label}"]) for label in classifier.labels]
        np.testing.assert_allclose(got, expected, atol=1e-5)
        assert row["prediction"] == classifier.labels[int(expected.argmax())]


def test_score_task_column_with_an_unknown_task_names_the_line(multi, tmp_path):
    source = write_tsv(tmp_path / "in.tsv", ["text", "task"], [("good", "mlp4"), ("bad", "topic")])
    result = run("score", source, "-o", tmp_path / "out.tsv", "-b", multi, "--task-column", "task")
    assert result.exit_code == 2
    assert "in.tsv:3: no task 'topic' in the bundle" in result.output
    assert not (tmp_path / "out.tsv").exists()


def test_an_empty_text_is_named_by_its_row_whatever_its_tasks_budget(multi, tmp_path):
    # Rows are tokenized grouped by their task's token budget; the message still names the row.
    copy = with_max_length(multi, tmp_path, "cnn5", 32)  # attn4 keeps 64
    with pytest.raises(ValueError, match=r"^text 3 is empty$"):
        Bundle.load(copy).run(["good", "fine", "ok", "  "], ["attn4", "cnn5", "attn4", "cnn5"])
