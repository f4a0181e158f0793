"""The runtime: predictions, batching, text checks, and no torch anywhere."""

import pickle
import subprocess
import sys

import numpy as np
import pytest

from ipt_edge.bundle import Bundle
from ipt_edge.classifier import Classifier
from ipt_edge.errors import BundleError
from ipt_edge.sessions import ProviderError
from ipt_edge.tokenizer import TextError

TEXTS = ["the film was good", "dull", "a very lovely story and a great cast", "poor plot", "superb"]


@pytest.fixture(scope="module")
def classifier(bundle):
    return Classifier.load(bundle)


def test_predict_proba_rows_are_distributions_over_the_labels(classifier):
    probabilities = classifier.predict_proba(TEXTS)
    assert probabilities.shape == (len(TEXTS), 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)


# Texts of both labels, of different lengths (batches are sorted by length), that the committed task
# classifies correctly with a margin (its probabilities of "pos": 0.66 0.02 0.97 0.17 1.00 0.02).
LABELLED = [
    ("the film was good", "pos"),
    ("it was a dull movie", "neg"),
    ("a very lovely story and a great cast", "pos"),
    ("the cast is very poor", "neg"),
    ("superb", "pos"),
    ("the plot was so boring", "neg"),
]


def test_predict_returns_label_names_in_input_order(classifier):
    texts = [text for text, _ in LABELLED]
    assert classifier.predict(texts) == [label for _, label in LABELLED]
    assert classifier.predict(texts[::-1]) == [label for _, label in LABELLED[::-1]]


def test_batch_size_and_padding_do_not_change_results(classifier):
    one_at_a_time = classifier.logits(TEXTS, batch_size=1)
    np.testing.assert_allclose(classifier.logits(TEXTS, batch_size=32), one_at_a_time, atol=1e-5)


def test_empty_text_is_an_error_naming_it(classifier):
    with pytest.raises(ValueError, match=r"text 1 is empty"):
        classifier.predict(["good", "   "])


def test_every_refused_text_is_named_once_by_its_place_in_the_call(bundle):
    """Bundle.run checks every text before any is tokenized; one TextError names each refused one
    (its index, which string, what is wrong), its message the first."""
    loaded = Bundle.load(bundle)
    texts = ["good", "", "fine", "bad \ud800 text", " \t "]
    with pytest.raises(TextError, match=r"^text 1 is empty$") as raised:
        loaded.run(texts, "sentiment")
    refused = [(r.index, r.part, r.problem) for r in raised.value.refused]
    lone = "is not valid UTF-8 (it holds a lone surrogate)"
    assert refused == [(1, 0, "is empty"), (3, 0, lone), (4, 0, "is empty")]
    copy = pickle.loads(pickle.dumps(raised.value))  # as a process pool or Ray sends it back
    assert str(copy) == "text 1 is empty" and copy.refused == raised.value.refused


def test_predict_tasks_names_a_refused_text_once_by_its_place_in_the_texts(multi):
    # Each text runs once per task (rows k * n + i); the refusal names text i, once.
    with pytest.raises(TextError, match=r"^text 2 is empty$") as raised:
        Bundle.load(multi).predict_tasks(["good", "fine", "", "ok", "  "], ["cnn5", "attn4", "mlp4"])
    assert [(r.index, r.problem) for r in raised.value.refused] == [(2, "is empty"), (4, "is empty")]


def test_a_bare_string_is_refused(classifier):
    with pytest.raises(TypeError, match=r"pass a list of texts"):
        classifier.predict("good")


def test_pairs_are_refused_by_a_single_text_task(classifier):
    with pytest.raises(ValueError, match=r"takes single strings"):
        classifier.predict([("good", "bad")])


def test_long_text_is_truncated_and_said_so(classifier):
    long_text = " ".join(["good film"] * 200)
    with pytest.warns(UserWarning, match=r"1 text\(s\) longer than their task's token budget were truncated"):
        result = classifier.classify([long_text, "dull"])
    assert result.truncated.tolist() == [True, False]


def test_a_classifier_is_a_task_of_an_open_bundle(bundle, classifier):
    # One constructor, Classifier(bundle, task); Classifier.load builds the Bundle for it.
    opened = Bundle.load(bundle)
    one = Classifier(opened, "sentiment")
    assert one.bundle is opened and one.task is opened.task("sentiment") and one.labels == ["neg", "pos"]
    assert Classifier(opened).task_name == "sentiment"  # a bundle's only task, when none is named
    assert isinstance(classifier.bundle, Bundle) and classifier.bundle is not opened
    np.testing.assert_array_equal(one.logits(TEXTS), classifier.logits(TEXTS))
    with pytest.raises(BundleError, match=r"no task 'spam' in the bundle; it has: sentiment"):
        Classifier(opened, "spam")


def test_asking_for_an_unavailable_provider_fails_clearly(bundle):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("CUDA is available here")
    with pytest.raises(ProviderError, match=r"CUDAExecutionProvider is not available"):
        Classifier.load(bundle, providers="cuda")


def test_runtime_never_imports_torch(bundle, tmp_path):
    source = tmp_path / "in.tsv"
    source.write_text("text\nthe film was good\ndull\n")
    out = tmp_path / "out.tsv"
    code = (
        "import sys\n"
        "from ipt_edge.classifier import Classifier\n"
        "import ipt_edge.cli, ipt_edge.scoring, ipt_edge.ray\n"
        f"print(Classifier.load({str(bundle)!r}).predict(['the film was good']))\n"
        "try:\n"
        f"    ipt_edge.cli.app(['score', {str(source)!r}, '-o', {str(out)!r}, '-b', {str(bundle)!r}])\n"
        "except SystemExit as done:\n"
        "    assert done.code == 0, done.code\n"
        "print([m for m in ('torch', 'transformers', 'optimum') if m in sys.modules])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert len(out.read_text().splitlines()) == 3  # the score really ran
    assert result.stdout.splitlines()[-1] == "[]"  # the heavy modules it imported


def test_a_bundle_loaded_not_to_spin_keeps_its_backbone_threads_from_spinning(bundle):
    # ipt-edge serve loads it so: a spinning pool would take the cores its event loop needs.
    def spinning(loaded):
        try:
            return loaded.encoder.get_session_options().get_session_config_entry(
                "session.intra_op.allow_spinning"
            )
        except Exception:  # not set: ONNX Runtime's default, which spins
            return "1"

    quiet, default = Bundle.load(bundle, spin=False), Bundle.load(bundle)
    assert spinning(quiet) == "0" and spinning(default) != "0"
    assert quiet.predict(TEXTS, "sentiment") == default.predict(TEXTS, "sentiment")
