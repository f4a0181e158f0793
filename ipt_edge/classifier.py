"""One task of a bundle, as a classifier: texts in, labels and probabilities out.

clf = Classifier.load("bundle")              # checks manifest, sizes and sha256 first
clf.predict(["a gripping, funny film"])      # -> ["positive"]
clf.predict_proba([("premise", "hypothesis")])  # pair tasks take (text, text_pair) tuples
result = clf.classify(texts)                 # labels, probabilities and which texts were truncated

Several tasks of one bundle share its sessions: `Bundle.load(path).classifier(name)` for each
(ipt_edge/pipeline.py); `Classifier.load` is the one-task shortcut.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ipt_edge.bundle import Manifest, read_manifest
from ipt_edge.pipeline import Bundle, softmax
from ipt_edge.tokenization import Text, TextEncoder

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

    def __init__(
        self,
        bundle_dir: str | Path,
        manifest: Manifest,
        task: str | None = None,
        providers: str | list[str] | None = None,
        threads: int | None = None,
        precision: str = "fp32",
    ):
        self._bind(Bundle(bundle_dir, manifest, providers, threads, precision), task)

    @classmethod
    def of(cls, bundle: Bundle, task: str | None = None) -> Classifier:
        """A classifier sharing `bundle`'s sessions; opens only the task's generator and head."""
        classifier = cls.__new__(cls)
        classifier._bind(bundle, task)
        return classifier

    def _bind(self, bundle: Bundle, task: str | None) -> None:
        self.bundle = bundle
        self.bundle_dir, self.manifest = bundle.bundle_dir, bundle.manifest
        self.task_name, self.task = bundle.manifest.task(task)
        self.generator = bundle.generator(self.task_name)
        self.labels = list(self.generator.labels)
        self.label_index = self.generator.label_index  # gold labels as names or as training values

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
        precision 'int8' runs the dynamically quantized encoder, where the bundle has one."""
        return cls(bundle_dir, read_manifest(bundle_dir), task, providers, threads, precision)

    @property
    def encoder(self):
        """The ONNX Runtime session of the shared encoder graph this task runs through."""
        return self.bundle._encoders[self.generator.kind]

    @property
    def encoder_text(self) -> TextEncoder:
        """The tokenization this task's texts get (its token budget)."""
        return self.bundle.text_encoder(self.task.max_length)

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
