"""ipt_edge.ray's predictor, called as Ray would call it (no cluster needed): it opens one Bundle
and its Task, and scores through Bundle.predict_tasks, as the local engine does."""

from __future__ import annotations

import numpy as np
import pytest

from ipt_edge import Bundle, Classifier
from ipt_edge.task import Task

from .tiny import record_predict_tasks

pa = pytest.importorskip("pyarrow")


def test_the_predictor_scores_through_its_bundle_and_task(bundle, monkeypatch):
    from ipt_edge.ray import IptPredictor

    calls = record_predict_tasks(monkeypatch)
    predictor = IptPredictor(bundle)
    assert isinstance(predictor.bundle, Bundle) and isinstance(predictor.task, Task)
    texts = ["the film was good", "a dull movie"]
    out = predictor(pa.table({"text": texts}))
    assert calls == [(2, ["sentiment"])]
    expected = Classifier.load(bundle).predict_proba(texts)
    got = np.stack([out.column("prob_neg").to_numpy(), out.column("prob_pos").to_numpy()], axis=1)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert out.column("prediction").to_pylist() == [["neg", "pos"][i] for i in expected.argmax(axis=1)]
