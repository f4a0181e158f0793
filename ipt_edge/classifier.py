"""One task of a bundle, as a classifier: texts in, labels and probabilities out.

clf = Classifier.load("bundle")              # checks manifest, sizes and sha256 first
clf.predict(["a gripping, funny film"])      # -> ["positive"]
clf.predict_proba([("premise", "hypothesis")])  # pair tasks take (text, text_pair) tuples
result = clf.classify(texts)                 # labels, probabilities and which texts were truncated

Several tasks of one bundle share its sessions: `Classifier(bundle, name)` for each, on one
`Bundle.load(path)` (ipt_edge/bundle.py); `Classifier.load` builds the Bundle for one task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ipt_edge.bundle import Bundle, softmax
from ipt_edge.tokenizer import Text

__all__ = ["Classification", "Classifier", "softmax"]


@dataclass
class Classification:
    """What `Classifier.classify` returns, in input order."""

    labels: list[str]  # the most probable label of each text
    probabilities: np.ndarray  # [N, C], columns follow the classifier's labels
    truncated: np.ndarray  # [N] bool: the text was cut to the task's token budget


class Classifier:
    """One task of a bundle, ready to run. It keeps no per-call state: one Classifier (or several
    of one Bundle) may serve many threads."""

    def __init__(self, bundle: Bundle, task: str | None = None):
        """The task `task` of an open bundle (None: its only task); opens only the task's own files."""
        self.bundle = bundle
        self.task = bundle.task(task)  # generator, pooling and head (ipt_edge/task.py)
        self.task_name = self.task.name
        self.labels = list(self.task.labels)
        self.label_index = self.task.label_index  # gold labels as names or as training values

    @classmethod
    def load(
        cls,
        bundle_dir: str | Path,
        task: str | None = None,
        providers: str | list[str] | None = None,
        threads: int | None = None,
        precision: str = "fp32",
    ) -> Classifier:
        """Open a bundle's task: 'cpu' (default) or 'cuda' providers; threads default to ORT's;
        precision 'int8' runs the dynamically quantized backbone, where the bundle has one."""
        return cls(Bundle.load(bundle_dir, providers, threads, precision), task)

    def classify(self, texts: Sequence[Text], batch_size: int = 32) -> Classification:
        """Labels, probabilities [N, C] and which texts were truncated, in input order."""
        result = self.bundle.run(texts, self.task_name, batch_size)
        probabilities = softmax(self._stack(result.logits))
        return Classification(result.labels, probabilities, result.truncated)

    def logits(self, texts: Sequence[Text], batch_size: int = 32) -> np.ndarray:
        """Raw head outputs [N, C], in input order. Batches are formed by length to save padding."""
        return self._stack(self.bundle.run(texts, self.task_name, batch_size).logits)

    def predict_proba(self, texts: Sequence[Text], batch_size: int = 32) -> np.ndarray:
        """Probabilities [N, C]; columns follow `self.labels`."""
        return softmax(self.logits(texts, batch_size))

    def predict(self, texts: Sequence[Text], batch_size: int = 32) -> list[str]:
        """The most probable label of each text."""
        return self.bundle.run(texts, self.task_name, batch_size).labels

    def _stack(self, rows: list[np.ndarray]) -> np.ndarray:
        if not rows:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return np.stack(rows).astype(np.float32, copy=False)
