"""A loaded bundle: the shared sessions, opened once, and the batches that run through them.

    bundle = Bundle.load("bundle")                       # manifest, tokenizer, embedding, backbone: once
    bundle.tasks                                         # ['sentiment', 'topic', ...]
    bundle.predict(["a gripping film", "stocks fell"], ["sentiment", "topic"])   # one task per row
    bundle.predict_tasks(["a gripping film"], ["sentiment", "topic"]).record(0)   # every task on every text
    Classifier(bundle, "sentiment").predict(["a gripping film"])                 # one task (classifier.py)

The path of a batch, the same for every task:

    texts ─tokenizer─▶ ids [B,T] ─embed.onnx─▶ token_embeds [B,T,H]
    each task's rows ─its generator.onnx─▶ its prefix_kv.0..L-1 [2,B,heads,P,head_dim], padded to the batch's longest P
    all rows ─encoder.onnx (the backbone)─▶ hidden [B,T,H] ─each task's pooling and head─▶ logits

Rows of every task share the embedding and backbone calls; only the generators and heads run per
task. Tasks of any generator family and prompt length share a batch: a shorter prefix is padded
and masked out (prefix_mask), so each row computes what it would alone. Nothing here keeps
per-call state: one Bundle may serve many threads at once.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from ipt_edge import graphs
from ipt_edge.errors import BundleError
from ipt_edge.manifest import Manifest, read_manifest, verified_bytes
from ipt_edge.sessions import create_session, resolve_providers
from ipt_edge.tables import finite_or_none
from ipt_edge.task import Task
from ipt_edge.tokenizer import BundleTokenizer, Refused, Text, TextError, TokenBatch, text_problem


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


@dataclass
class Predictions:
    """What one call returns, in input order: row i was scored by task `tasks[i]`."""

    tasks: list[str]
    logits: list[np.ndarray]  # one [C] array per row; C and the label order are that row's task's
    label_names: list[list[str]]  # row i's task's labels, in logit order
    truncated: np.ndarray  # [N] bool: the row's text was cut to its task's token budget

    @property
    def probabilities(self) -> list[np.ndarray]:
        return [softmax(row) for row in self.logits]

    @property
    def labels(self) -> list[str]:
        """The most probable label of each row."""
        return [names[int(row.argmax())] for names, row in zip(self.label_names, self.logits, strict=True)]


@dataclass
class TaskProbabilities:
    """What `Bundle.predict_tasks` returns: every task asked for, on every text, in input order."""

    texts: list[Text]
    labels: dict[str, list[str]]  # task -> its labels, in column order; the tasks in the order asked
    probabilities: dict[str, np.ndarray]  # task -> [N, C] float32, columns follow its labels
    truncated: np.ndarray  # [N] bool: the text was cut to a task's token budget (any task's)

    def best(self, row: int) -> dict[str, tuple[str, float]]:
        """Each task's most probable label for text `row`, with its probability."""
        best = {}
        for name, labels in self.labels.items():
            values = self.probabilities[name][row]
            index = int(values.argmax())
            best[name] = (labels[index], float(values[index]))
        return best

    def record(self, row: int) -> dict[str, Any]:
        """Text `row` and its answers as one JSON object, the one shape of `ipt-edge predict
        --json` (and of anything else that answers in JSON), whatever the number of tasks:

            {"text": ..., "tasks": {"A": {"label": ..., "probabilities": {label: p, ...}}, ...}}

        A pair is shown as "text" and "text_pair". Probabilities are rounded to 6 decimals; one
        that is not finite is null (JSON has no NaN)."""
        text = self.texts[row]
        shown = {"text": text} if isinstance(text, str) else {"text": text[0], "text_pair": text[1]}
        tasks = {}
        for name, (best, _) in self.best(row).items():
            values = zip(self.labels[name], self.probabilities[name][row], strict=True)
            probabilities = {label: finite_or_none(round(float(p), 6)) for label, p in values}
            tasks[name] = {"label": best, "probabilities": probabilities}
        return {**shown, "tasks": tasks}


class Bundle:
    """A bundle's shared sessions (tokenizer, embedding, backbone) and its tasks, opened once.

    A task's generator and head are opened when the task is first used."""

    def __init__(
        self,
        bundle_dir: str | Path,
        manifest: Manifest,
        providers: str | list[str] | None = None,
        threads: int | None = None,
        precision: str = "fp32",
        spin: bool = True,
    ):
        if precision not in ("fp32", "int8"):
            raise ValueError(f"precision must be 'fp32' or 'int8', got {precision!r}")
        self.bundle_dir = Path(bundle_dir)
        self.manifest = manifest
        self.providers = resolve_providers(providers)
        self.precision = precision
        self.threads = threads  # every session's: the small ones' pools do not spin (sessions.py)
        # spin=False: the backbone's pool does not spin either, for a process with other work
        # between calls (ipt-edge serve's event loop), which a spinning pool would take cores from.
        self.spin = spin
        # Pads every batch (any task's token budget: padding needs only the pad token), and is the
        # tokenizer each budget's BundleTokenizer copies.
        self._padder = _padder(self._read(manifest.tokenizer_file), manifest.tokenizer_file)
        backbone = manifest.backbone
        self.embed = self._session(manifest.embed_file, small=True)  # [B, T] ids -> [B, T, H]
        graphs.check_session(
            self.embed, graphs.EMBED, manifest.embed_file, dims={"hidden": backbone.hidden_size}
        )
        file = manifest.encoder.int8_file if precision == "int8" else manifest.encoder.file
        if not file:
            raise BundleError(f"{self.bundle_dir} has no int8 encoder; export with --quantize int8")
        # the backbone, shared by every task; an int8 one must be quantized, or int8 would run fp32
        self.encoder = self._session(file, quantized=precision == "int8")
        dims = {"hidden": backbone.hidden_size, "layers": backbone.num_layers, "heads": backbone.num_heads,
                "head_dim": backbone.hidden_size // backbone.num_heads}  # fmt: skip
        self.encoder_spec = graphs.encoder(backbone.num_layers)
        graphs.check_session(self.encoder, self.encoder_spec, file, dims=dims)
        self._tasks: dict[str, Task] = {}
        self._text_encoders: dict[int, BundleTokenizer] = {}
        self._lock = threading.Lock()  # guards the lazily opened tasks and text encoders, nothing else

    @classmethod
    def load(
        cls,
        bundle_dir: str | Path,
        providers: str | list[str] | None = None,
        threads: int | None = None,
        precision: str = "fp32",
        spin: bool = True,
    ) -> Bundle:
        """Open a bundle: 'cpu' (default) or 'cuda' providers; threads default to ORT's; precision
        'int8' runs the dynamically quantized backbone, where the bundle has one; spin=False keeps
        the backbone's threads from spinning between calls. Checks the manifest and every file's
        size and sha256 before using it."""
        return cls(bundle_dir, read_manifest(bundle_dir), providers, threads, precision, spin)

    # ---- opening ------------------------------------------------------------------------------

    def _read(self, file: str) -> bytes:
        """Every file is read once, checked (size, sha256) and used from those same bytes."""
        return verified_bytes(self.bundle_dir, self.manifest, file)

    def _session(self, file: str, small: bool = False, quantized: bool = False):
        model = self._read(file)
        if quantized:
            graphs.check_quantized(model, file)
        return create_session(model, file, self.providers, self.threads, small, spin=self.spin and not small)

    @property
    def tasks(self) -> list[str]:
        return sorted(self.manifest.tasks)

    def task(self, name: str | None = None) -> Task:
        """The task called `name` (None: the only one), opened on first use."""
        name, info = self.manifest.task(name)
        task = self._tasks.get(name)  # opened already: no lock needed to read it
        if task is not None:
            return task
        with self._lock:
            if name not in self._tasks:
                if self.precision == "int8" and not info.int8:
                    warnings.warn(f"int8 accuracy was never measured for task {name!r}", stacklevel=3)
                self._tasks[name] = Task(
                    self.manifest, name, self._read, lambda file: self._session(file, small=True)
                )
            return self._tasks[name]

    def text_encoder(self, max_length: int) -> BundleTokenizer:
        """Tokenization with a task's token budget (tasks may differ; each budget gets its own)."""
        encoder = self._text_encoders.get(max_length)  # made already: no lock needed to read it
        if encoder is not None:
            return encoder
        with self._lock:
            if max_length not in self._text_encoders:
                tokenizer = Tokenizer.from_str(self._padder.tokenizer.to_str())
                self._text_encoders[max_length] = BundleTokenizer(None, max_length, tokenizer=tokenizer)
            return self._text_encoders[max_length]

    # ---- running ------------------------------------------------------------------------------

    def run(self, texts: Sequence[Text], tasks: Sequence[str] | str, batch_size: int = 32) -> Predictions:
        """Score each text with its task (one name per row, or one name for all rows).

        Rows are sorted by length into batches, whatever their tasks; every row's logits are what
        its task gives it alone."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        if isinstance(texts, (str, tuple)):
            raise TypeError("pass a list of texts, e.g. predict([text], ...), not a single text")
        texts = list(texts)
        names = [tasks] * len(texts) if isinstance(tasks, str) else list(tasks)
        if len(names) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(names)} task names: give one task per text")
        opened: dict[str, Task] = {}
        for index, name in enumerate(names):
            if name not in opened:
                if name not in self.manifest.tasks:
                    raise BundleError(
                        f"text {index}: no task {name!r} in the bundle; it has: {', '.join(self.tasks)}"
                    )
                opened[name] = self.task(name)
        row_tasks = [opened[name] for name in names]
        checked = check_texts(texts, row_tasks)
        encodings: list = [None] * len(texts)
        budgets: dict[int, list[int]] = {}
        for index, task in enumerate(row_tasks):
            budgets.setdefault(task.info.max_length, []).append(index)
        for max_length, rows in budgets.items():
            tokenized = self.text_encoder(max_length).tokenize([checked[i] for i in rows])
            for row, encoding in zip(rows, tokenized, strict=True):
                encodings[row] = encoding
        logits: list = [None] * len(texts)
        truncated = np.zeros(len(texts), dtype=bool)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = self._padder.pad([encodings[i] for i in chunk])
            truncated[chunk] = batch.truncated
            for row, values in zip(
                chunk, self._batch_logits(batch, [row_tasks[i] for i in chunk]), strict=True
            ):
                logits[row] = values
        if truncated.any():
            warnings.warn(
                f"{int(truncated.sum())} text(s) longer than their task's token budget were truncated",
                stacklevel=2,
            )
        return Predictions(names, logits, [task.labels for task in row_tasks], truncated)

    def predict_tasks(
        self, texts: Sequence[Text], tasks: Sequence[str] | str, batch_size: int = 32
    ) -> TaskProbabilities:
        """Every task of `tasks` on every text, in one run: the rows of all tasks share batches
        and encoder calls. Each task's probabilities [N, C], in input order."""
        if isinstance(texts, (str, tuple)):
            raise TypeError("pass a list of texts, e.g. predict_tasks([text], ...), not a single text")
        texts = list(texts)
        names = list(dict.fromkeys([tasks] if isinstance(tasks, str) else tasks))
        if not names:
            raise ValueError("give at least one task")
        opened = [self.task(name) for name in names]  # an unknown name is a BundleError naming it
        n = len(texts)
        try:
            result = self.run(texts * len(names), [name for name in names for _ in texts], batch_size)
        except TextError as error:  # name each refused text once, by its place in `texts`
            first: dict[int, Refused] = {}
            for refused in error.refused:
                first.setdefault(refused.index % n, replace(refused, index=refused.index % n))
            raise TextError(sorted(first.values())) from None
        every, probabilities = result.probabilities, {}
        for k, task in enumerate(opened):  # task k's rows are k * n .. (k + 1) * n - 1
            rows = every[k * n : (k + 1) * n]
            probabilities[task.name] = np.array(rows, dtype=np.float32).reshape(n, len(task.labels))
        truncated = np.asarray(result.truncated.reshape(len(names), n).any(axis=0))
        labels = {task.name: list(task.labels) for task in opened}
        return TaskProbabilities(texts, labels, probabilities, truncated)

    def _batch_logits(self, batch: TokenBatch, tasks: list[Task]) -> list[np.ndarray]:
        """One padded batch through the graphs; tasks[i] is row i's task."""
        (token_embeds,) = self.embed.run(None, {"input_ids": batch.input_ids})  # [B, T, H]
        rows_of: dict[str, list[int]] = {}
        for row, task in enumerate(tasks):
            rows_of.setdefault(task.name, []).append(row)
        by_name = {task.name: task for task in tasks}
        if len(rows_of) == 1:  # one task: its generator's outputs go to the backbone as they are
            (task,) = by_name.values()
            prefix_kv = task.prefix(batch.input_ids, token_embeds, batch.attention_mask)
            prefix_mask = np.ascontiguousarray(
                np.broadcast_to(task.prefix_mask, (len(tasks), *task.prefix_mask.shape))
            )
        else:  # each task's prefix in its rows, padded to the longest P and masked beyond its own
            backbone, longest = self.manifest.backbone, max(task.info.prompt_length for task in tasks)
            heads = backbone.num_heads
            shape = (
                2,
                len(tasks),
                heads,
                longest,
                backbone.hidden_size // heads,
            )  # [2, B, heads, P, head_dim]
            prefix_kv = [np.zeros(shape, dtype=np.float32) for _ in range(backbone.num_layers)]
            prefix_mask = np.zeros((len(tasks), backbone.num_layers, longest), dtype=np.int64)  # [B, L, P]
            for name, rows in rows_of.items():
                task = by_name[name]
                p = task.info.prompt_length
                own = task.prefix(batch.input_ids[rows], token_embeds[rows], batch.attention_mask[rows])
                for layer, values in zip(prefix_kv, own, strict=True):
                    layer[:, rows, :, :p] = values
                prefix_mask[rows, :, :p] = task.prefix_mask
        feeds = {
            "token_embeds": token_embeds,
            "attention_mask": batch.attention_mask,
            "token_type_ids": batch.token_type_ids,
            "prefix_mask": prefix_mask,
            **{graphs.prefix_kv(layer).name: values for layer, values in enumerate(prefix_kv)},
        }
        (hidden,) = self.encoder.run(None, feeds)  # [B, T, H]
        logits: list = [None] * len(tasks)
        for name, rows in rows_of.items():
            for row, values in zip(
                rows, by_name[name].logits(hidden[rows], batch.attention_mask[rows]), strict=True
            ):
                logits[row] = values
        return logits

    def logits(
        self, texts: Sequence[Text], tasks: Sequence[str] | str, batch_size: int = 32
    ) -> list[np.ndarray]:
        """Raw head outputs, one [C] array per row (C: that row's task's labels)."""
        return self.run(texts, tasks, batch_size).logits

    def predict_proba(
        self, texts: Sequence[Text], tasks: Sequence[str] | str, batch_size: int = 32
    ) -> list[np.ndarray]:
        """One probability array per row; columns follow that row's task's labels."""
        return self.run(texts, tasks, batch_size).probabilities

    def predict(self, texts: Sequence[Text], tasks: Sequence[str] | str, batch_size: int = 32) -> list[str]:
        """The most probable label of each row, under its task."""
        return self.run(texts, tasks, batch_size).labels


def _padder(data: bytes, name: str) -> BundleTokenizer:
    try:  # a BundleTokenizer needs the tokenizer to load and to have a padding token
        return BundleTokenizer(None, 1, tokenizer=Tokenizer.from_str(data.decode("utf-8")))
    except Exception as error:  # tokenizers raises a bare Exception on a malformed file
        raise BundleError(
            f"{name}: not a tokenizer the tokenizers library can load ({str(error)[:200]})"
        ) from None


def check_texts(texts: Sequence[Any], tasks: Sequence[Task]) -> list[Text]:
    """The one check of the texts that come into the runtime (Bundle.run; js/src/bundle.js's _run
    is the same): each has its task's shape, (text, text_pair) for a pair task and a string for
    the others, and strings text_problem passes. A wrong shape or a string that is not a string
    is a mistake of the caller's code, raised at once (ValueError, TypeError); texts that are empty
    or not UTF-8 are bad data, gathered into one TextError that names every one."""
    checked: list[Text] = []
    refused: list[Refused] = []
    for index, (text, task) in enumerate(zip(texts, tasks, strict=True)):
        if task.text_pair:
            if not (isinstance(text, (tuple, list)) and len(text) == 2):
                raise ValueError(f"text {index}: task {task.name!r} takes (text, text_pair) pairs")
            checked.append((text[0], text[1]))
        elif isinstance(text, str):
            checked.append(text)
        else:
            raise ValueError(f"text {index}: task {task.name!r} takes single strings")
        parts = checked[-1] if isinstance(checked[-1], tuple) else (checked[-1],)
        for part_index, part in enumerate(parts):
            if not isinstance(part, str):
                raise TypeError(f"text {index} is {type(part).__name__}, expected str")
            problem = text_problem(part)
            if problem is not None:
                refused.append(Refused(index, part_index, problem))
                break
    if refused:
        raise TextError(refused)
    return checked
