"""A loaded bundle: the shared sessions, opened once, and the batches that run through them.

    bundle = Bundle.load("bundle")                       # manifest, tokenizer, embedding: once
    bundle.tasks                                         # ['sentiment', 'topic', ...]
    bundle.predict(["a gripping film", "stocks fell"], ["sentiment", "topic"])   # one task per row
    bundle.classifier("sentiment").predict(["a gripping film"])                  # one task

The path of a batch (mixed tasks or not):

    texts ─tokenizer─▶ ids [B,T] ─embed.onnx─▶ token_embeds [B,T,H]
    each task's rows ─its generator.onnx─▶ its prompts, padded to the batch's longest P and masked
    all rows ─the encoder graph of their prompt kind─▶ hidden ─pool─▶ each task's head ─▶ logits

Rows of every task share the embedding and encoder calls; only the generators and heads are per
task. Prepend and prefix tasks use different encoder graphs, so a batch holds rows of one prompt
kind; within a kind, tasks of any prompt length share a batch (shorter prompts are masked, so each
row computes what it would alone). Nothing here keeps per-call state: one Bundle may serve many
threads at once.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from ipt_edge import graphs
from ipt_edge.bundle import BundleError, Manifest, read_manifest, verified_bytes
from ipt_edge.generator import TaskGenerator
from ipt_edge.sessions import create_session, resolve_providers
from ipt_edge.tokenization import Text, TextEncoder, TokenBatch


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


class Bundle:
    """A bundle's shared sessions (tokenizer, embedding, encoder graphs) and its tasks, opened once.

    A task's generator and head are opened when the task is first used; an encoder graph when the
    first task of its prompt kind is."""

    def __init__(
        self,
        bundle_dir: str | Path,
        manifest: Manifest,
        providers: str | list[str] | None = None,
        threads: int | None = None,
        precision: str = "fp32",
    ):
        if precision not in ("fp32", "int8"):
            raise ValueError(f"precision must be 'fp32' or 'int8', got {precision!r}")
        self.bundle_dir = Path(bundle_dir)
        self.manifest = manifest
        self.providers = resolve_providers(providers)
        self.threads = threads
        self.precision = precision
        # Pads every batch (any task's token budget: padding needs only the pad token), and is the
        # tokenizer each budget's TextEncoder copies.
        self._padder = _padder(self._read(manifest.tokenizer_file), manifest.tokenizer_file)
        # The embedding gather is tiny: it runs on the calling thread (see TaskGenerator).
        self.embed = self._session(manifest.embed_file, 1)
        graphs.check_session(
            self.embed, graphs.EMBED, manifest.embed_file, dims={"hidden": manifest.backbone.hidden_size}
        )
        self._encoders: dict[str, object] = {}  # prompt kind -> session
        self._encoder_inputs: dict[str, set[str]] = {}  # prompt kind -> its session's input names
        self._generators: dict[str, TaskGenerator] = {}
        self._text_encoders: dict[int, TextEncoder] = {}
        self._lock = threading.Lock()  # guards the lazily opened sessions above, nothing else

    @classmethod
    def load(
        cls,
        bundle_dir: str | Path,
        providers: str | list[str] | None = None,
        threads: int | None = None,
        precision: str = "fp32",
    ) -> Bundle:
        """Open a bundle: 'cpu' (default) or 'cuda' providers; threads default to ORT's; precision
        'int8' runs the dynamically quantized encoder, where the bundle has one. Checks the manifest
        and every file's size and sha256 before using it."""
        return cls(bundle_dir, read_manifest(bundle_dir), providers, threads, precision)

    # ---- opening ------------------------------------------------------------------------------

    def _read(self, file: str) -> bytes:
        """Every file is read once, checked (size, sha256) and used from those same bytes."""
        return verified_bytes(self.bundle_dir, self.manifest, file)

    def _session(self, file: str, threads: int | None):
        return create_session(self._read(file), file, self.providers, threads)

    @property
    def tasks(self) -> list[str]:
        return sorted(self.manifest.tasks)

    def generator(self, name: str) -> TaskGenerator:
        """The task's generator and head (opened on first use), and its prompt kind's encoder."""
        task = self._generators.get(name)  # opened already: no lock needed to read it
        if task is not None:
            return task
        with self._lock:
            if name not in self._generators:
                task = TaskGenerator(self.manifest, name, self._read, self._session)
                self._open_encoder(task)
                self._generators[name] = task
            return self._generators[name]

    def _open_encoder(self, task: TaskGenerator) -> None:
        if task.kind in self._encoders:
            return
        file = graphs.encoder_file(self.manifest, task.kind)
        if not file:
            raise BundleError(
                f"{self.bundle_dir}: task {task.name!r} ({task.info.generator}) needs the {task.kind} "
                "encoder graph, which the manifest does not name"
            )
        if self.precision == "int8":
            file = graphs.encoder_file(self.manifest, task.kind, "int8")
            if not file:
                raise BundleError(
                    f"{self.bundle_dir} has no int8 {task.kind} encoder (for task {task.name!r}); "
                    "export with --quantize int8"
                )
            if not task.info.int8:
                warnings.warn(f"int8 accuracy was never measured for task {task.name!r}", stacklevel=5)
        session = self._session(file, self.threads)
        dims = {"hidden": self.manifest.backbone.hidden_size, "layers": self.manifest.backbone.num_layers}
        graphs.check_session(session, graphs.ENCODERS[task.kind], file, dims=dims)
        self._encoders[task.kind] = session
        self._encoder_inputs[task.kind] = {i.name for i in session.get_inputs()}

    def text_encoder(self, max_length: int) -> TextEncoder:
        """Tokenization with a task's token budget (tasks may differ; each budget gets its own)."""
        encoder = self._text_encoders.get(max_length)  # made already: no lock needed to read it
        if encoder is not None:
            return encoder
        with self._lock:
            if max_length not in self._text_encoders:
                tokenizer = Tokenizer.from_str(self._padder.tokenizer.to_str())
                self._text_encoders[max_length] = TextEncoder(None, max_length, tokenizer=tokenizer)
            return self._text_encoders[max_length]

    def classifier(self, name: str | None = None):
        """A `Classifier` for one task, sharing this bundle's sessions (None: the only task)."""
        from ipt_edge.classifier import Classifier

        return Classifier.of(self, name)

    # ---- running ------------------------------------------------------------------------------

    def run(self, texts: Sequence[Text], tasks: Sequence[str] | str, batch_size: int = 32) -> Predictions:
        """Score each text with its task (one name per row, or one name for all rows).

        Rows are grouped by prompt kind and sorted by length into batches; every row's logits are
        what its task gives it alone."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        if isinstance(texts, (str, tuple)):
            raise TypeError("pass a list of texts, e.g. predict([text], ...), not a single text")
        texts = list(texts)
        names = [tasks] * len(texts) if isinstance(tasks, str) else list(tasks)
        if len(names) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(names)} task names: give one task per text")
        generators = {}
        for index, name in enumerate(names):
            if name not in generators:
                if name not in self.manifest.tasks:
                    raise BundleError(
                        f"text {index}: no task {name!r} in the bundle; it has: {', '.join(self.tasks)}"
                    )
                generators[name] = self.generator(name)
        checked = [
            _check_text(text, index, generators[name])
            for index, (text, name) in enumerate(zip(texts, names, strict=True))
        ]
        encodings: list = [None] * len(texts)
        budgets: dict[int, list[int]] = {}
        for index, name in enumerate(names):
            budgets.setdefault(generators[name].info.max_length, []).append(index)
        for max_length, rows in budgets.items():
            for row, encoding in zip(
                rows, self.text_encoder(max_length).tokenize([checked[i] for i in rows]), strict=True
            ):
                encodings[row] = encoding
        logits: list = [None] * len(texts)
        truncated = np.zeros(len(texts), dtype=bool)
        for rows in self._groups(names, generators):
            order = sorted(rows, key=lambda i: len(encodings[i].ids))
            for start in range(0, len(order), batch_size):
                chunk = order[start : start + batch_size]
                batch = self._padder.pad([encodings[i] for i in chunk])
                truncated[chunk] = batch.truncated
                for row, values in zip(
                    chunk, self._batch_logits(batch, [generators[names[i]] for i in chunk]), strict=True
                ):
                    logits[row] = values
        if truncated.any():
            warnings.warn(
                f"{int(truncated.sum())} text(s) longer than their task's token budget were truncated",
                stacklevel=2,
            )
        label_names = [generators[name].labels for name in names]
        return Predictions(names, logits, label_names, truncated)

    def _groups(self, names: list[str], generators: dict[str, TaskGenerator]) -> list[list[int]]:
        """Rows that can share batches: same prompt kind (one encoder graph), and for a prepend
        encoder exported before prompt_mask existed, the same prompt length too."""
        groups: dict[tuple, list[int]] = {}
        for index, name in enumerate(names):
            task = generators[name]
            key: tuple = (task.kind,)
            if task.kind == graphs.PREPEND and not self._takes_prompt_mask():
                key += (task.info.prompt_length,)
            groups.setdefault(key, []).append(index)
        return list(groups.values())

    def _takes_prompt_mask(self) -> bool:
        return graphs.PROMPT_MASK.name in self._encoder_inputs[graphs.PREPEND]

    def _batch_logits(self, batch: TokenBatch, tasks: list[TaskGenerator]) -> list[np.ndarray]:
        """One padded batch through the graphs; tasks[i] is row i's task (all of one prompt kind)."""
        (token_embeds,) = self.embed.run(None, {"input_ids": batch.input_ids})  # [B, T, H]
        kind = tasks[0].kind
        rows_of: dict[str, list[int]] = {}
        for row, task in enumerate(tasks):
            rows_of.setdefault(task.name, []).append(row)
        by_name = {task.name: task for task in tasks}
        size, longest = len(tasks), max(task.info.prompt_length for task in tasks)
        backbone = self.manifest.backbone
        feeds = {
            "token_embeds": token_embeds,
            "attention_mask": batch.attention_mask,
            "token_type_ids": batch.token_type_ids,
        }
        if kind == graphs.PREFIX:
            keys = values = None
            prefix_mask = np.zeros((size, backbone.num_layers, longest), dtype=np.int64)  # [B, L, P]
            for name, rows in rows_of.items():
                task, p = by_name[name], by_name[name].info.prompt_length
                out = task.prompts(batch.input_ids[rows], token_embeds[rows], batch.attention_mask[rows])
                if keys is None:  # [B, L, heads, P, head_dim], the longest P of the batch
                    layers, heads, _, head_dim = out["prefix_keys"].shape[1:]
                    keys = np.zeros((size, layers, heads, longest, head_dim), dtype=np.float32)
                    values = np.zeros_like(keys)
                keys[rows, :, :, :p] = out["prefix_keys"]
                values[rows, :, :, :p] = out["prefix_values"]
                prefix_mask[rows, :, :p] = task.prefix_mask_row
            feeds.update(prefix_keys=keys, prefix_values=values, prefix_mask=prefix_mask)
            (hidden,) = self._encoders[kind].run(None, feeds)  # [B, T, H]: no prompt positions
            token_states = hidden
        else:
            h = backbone.hidden_size
            prompt_embeds = np.zeros((size, longest, h), dtype=np.float32)  # [B, P, H]
            prompt_mask = np.zeros((size, longest), dtype=np.int64)  # [B, P]
            layer_prompts = None  # [B, L, P, H] once a deep task is in the batch; else [1, L, P, H] zeros
            for name, rows in rows_of.items():
                task, p = by_name[name], by_name[name].info.prompt_length
                out = task.prompts(batch.input_ids[rows], token_embeds[rows], batch.attention_mask[rows])
                prompt_embeds[rows, :p] = out["prompt_embeds"]
                prompt_mask[rows, :p] = 1
                if "layer_prompts" in out:
                    if layer_prompts is None:
                        layer_prompts = np.zeros((size, backbone.num_layers, longest, h), dtype=np.float32)
                    layer_prompts[rows, :, :p] = out["layer_prompts"]
            if layer_prompts is None:
                layer_prompts = np.zeros((1, backbone.num_layers, longest, h), dtype=np.float32)
            feeds.update(prompt_embeds=prompt_embeds, layer_prompts=layer_prompts)
            if graphs.PROMPT_MASK.name in self._encoder_inputs[kind]:
                feeds["prompt_mask"] = prompt_mask
            (hidden,) = self._encoders[kind].run(None, feeds)  # [B, P+T, H]
            token_states = hidden[:, longest:]  # the real text's states, prompts left out
        mask = batch.attention_mask[:, :, None].astype(np.float32)
        mean = (token_states * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0)  # [B, H]
        logits = [None] * size
        for name, rows in rows_of.items():
            task = by_name[name]
            pooled = token_states[rows, 0] if task.info.pooling == "cls" else mean[rows]
            for row, values in zip(rows, task.head(pooled), strict=True):
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


def _padder(data: bytes, name: str) -> TextEncoder:
    try:  # a TextEncoder needs the tokenizer to load and to have a padding token
        return TextEncoder(None, 1, tokenizer=Tokenizer.from_str(data.decode("utf-8")))
    except Exception as error:  # tokenizers raises a bare Exception on a malformed file
        raise BundleError(
            f"{name}: not a tokenizer the tokenizers library can load ({str(error)[:200]})"
        ) from None


def _check_text(text: Text, index: int, task: TaskGenerator) -> Text:
    if task.info.text_pair:
        if not (isinstance(text, (tuple, list)) and len(text) == 2):
            raise ValueError(f"text {index}: task {task.name!r} takes (text, text_pair) pairs")
        return (text[0], text[1])
    if not isinstance(text, str):
        raise ValueError(f"text {index}: task {task.name!r} takes single strings")
    return text
