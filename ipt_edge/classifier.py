"""The classifier pipeline: texts -> tokens -> prompts -> backbone -> pooled states -> probabilities.

clf = Classifier.load("bundle")              # checks manifest, sizes and sha256 first
clf.predict(["a gripping, funny film"])      # -> ["positive"]
clf.predict_proba([("premise", "hypothesis")])  # pair tasks take (text, text_pair) tuples
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from safetensors.numpy import load as load_safetensors
from tokenizers import Tokenizer

from ipt_edge import graphs
from ipt_edge.bundle import BundleError, Manifest, read_manifest, verified_bytes
from ipt_edge.sessions import create_session, resolve_providers
from ipt_edge.tokenization import Text, TextEncoder, TokenBatch


def _text_encoder(data: bytes, name: str, max_length: int) -> TextEncoder:
    try:
        return TextEncoder(None, max_length, tokenizer=Tokenizer.from_str(data.decode("utf-8")))
    except Exception as error:  # tokenizers raises a bare Exception on a malformed file
        raise BundleError(
            f"{name}: not a tokenizer the tokenizers library can load ({str(error)[:200]})"
        ) from None


def _head(data: bytes, name: str) -> dict[str, np.ndarray]:
    try:
        return load_safetensors(data)
    except Exception as error:  # safetensors raises its own SafetensorError
        raise BundleError(f"{name}: not a readable safetensors file ({str(error)[:200]})") from None


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class Classifier:
    """One task of a bundle, ready to run. Sessions are made once and reused for every call."""

    def __init__(
        self,
        bundle_dir: str | Path,
        manifest: Manifest,
        task: str | None = None,
        providers: str | list[str] | None = None,
        threads: int | None = None,
        precision: str = "fp32",
    ):
        self.bundle_dir = Path(bundle_dir)
        self.manifest = manifest
        self.task_name, self.task = manifest.task(task)
        self.labels = list(self.task.labels)
        self.prompt_kind = graphs.prompt_kind(self.task.generator)  # picks the encoder graph
        self.providers = resolve_providers(providers)
        backbone = manifest.backbone
        # Every file is read once, checked (size, sha256) and used from those same bytes.
        read = lambda name: verified_bytes(self.bundle_dir, manifest, name)  # noqa: E731
        self.encoder_text = _text_encoder(
            read(manifest.tokenizer_file), manifest.tokenizer_file, self.task.max_length
        )
        # The embedding gather and the generator are tiny: they run on the calling thread. Given
        # thread pools of their own, those pools' threads spin after each run and take cores from
        # the encoder (measured on 2 cores: 131 -> 181 rows/s, p50 17 -> 7 ms; docs/performance.md).
        session = lambda name, threads: create_session(read(name), name, self.providers, threads)  # noqa: E731
        self.embed = session(manifest.embed_file, 1)
        self.generator = session(self.task.generator_file, 1)
        encoder_file = self._encoder_file(precision)
        self.backbone = session(encoder_file, threads)
        # The graph contract (ipt_edge/graphs.py): names, ranks and dtypes, checked once here.
        spec = graphs.generator_spec(self.task.generator, self.task.deep)
        graphs.check_session(self.generator, spec, self.task.generator_file, subset_inputs=True)
        graphs.check_session(self.embed, graphs.EMBED, manifest.embed_file)
        graphs.check_session(self.backbone, graphs.ENCODERS[self.prompt_kind], encoder_file)
        self.generator_inputs = [i.name for i in self.generator.get_inputs()]
        self.generator_outputs = [o.name for o in self.generator.get_outputs()]
        head = _head(read(self.task.head_file), self.task.head_file)
        classes, hidden = len(self.labels), backbone.hidden_size
        self.head_weight = head.get("weight")  # [C, H]
        self.head_bias = head.get("bias")  # [C]
        expected = {"weight": (classes, hidden), "bias": (classes,)}
        found = {name: (t.shape, t.dtype) for name, t in head.items()}
        if any(found.get(name) != (shape, np.float32) for name, shape in expected.items()):
            raise BundleError(
                f"{self.task.head_file}: expected float32 weight [{classes}, {hidden}] and bias [{classes}], "
                f"found {found}"
            )
        # Shallow tasks add nothing per layer: one zero tensor, broadcast over the batch.
        p, h = self.task.prompt_length, backbone.hidden_size
        self.no_layer_prompts = np.zeros((1, backbone.num_layers, p, h), dtype=np.float32)  # [1, L, P, H]
        # Prefix tasks: which layers attend to their prefix (all from prefix_from_layer on).
        self.prefix_mask_row = np.ones((1, backbone.num_layers, p), dtype=np.int64)  # [1, L, P]
        self.prefix_mask_row[:, : self.task.prefix_from_layer] = 0
        self.last_truncated = 0
        # A gold label may be written as its display name or as its value in the training data.
        self.label_index = {v: i for i, v in enumerate(self.task.label_values)}
        self.label_index.update({name: i for i, name in enumerate(self.labels)})

    def _encoder_file(self, precision: str) -> str:
        if precision not in ("fp32", "int8"):
            raise ValueError(f"precision must be 'fp32' or 'int8', got {precision!r}")
        file = graphs.encoder_file(self.manifest, self.prompt_kind)
        if not file:
            raise BundleError(
                f"{self.bundle_dir}: task {self.task_name!r} ({self.task.generator}) needs the "
                f"{self.prompt_kind} encoder graph, which the manifest does not name"
            )
        if precision == "fp32":
            return file
        if self.prompt_kind == graphs.PREFIX:
            raise BundleError(f"task {self.task_name!r}: no int8 encoder for prefix tasks yet; use fp32")
        if not self.manifest.encoder_int8_file:
            raise BundleError(f"{self.bundle_dir} has no int8 encoder; export with --quantize int8")
        if not self.task.int8:
            warnings.warn(f"int8 accuracy was never measured for task {self.task_name!r}", stacklevel=4)
        return self.manifest.encoder_int8_file

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

    # ---- one padded batch through the three graphs ----------------------------------------------

    def logits_for(self, batch: TokenBatch) -> np.ndarray:
        (token_embeds,) = self.embed.run(None, {"input_ids": batch.input_ids})  # [B, T, H]
        available = {
            "input_ids": batch.input_ids,
            "token_embeds": token_embeds,
            "attention_mask": batch.attention_mask,
        }
        generated = self.generator.run(None, {name: available[name] for name in self.generator_inputs})
        outputs = dict(zip(self.generator_outputs, generated, strict=True))
        feeds = {
            "token_embeds": token_embeds,
            "attention_mask": batch.attention_mask,
            "token_type_ids": batch.token_type_ids,
        }
        if self.prompt_kind == graphs.PREFIX:
            feeds["prefix_keys"] = outputs["prefix_keys"]  # [B, L, heads, P, head_dim]
            feeds["prefix_values"] = outputs["prefix_values"]
            feeds["prefix_mask"] = np.repeat(self.prefix_mask_row, len(token_embeds), axis=0)  # [B, L, P]
            (tokens,) = self.backbone.run(None, feeds)  # [B, T, H]: no prompt positions
        else:
            feeds["prompt_embeds"] = outputs["prompt_embeds"]  # [B, P, H]
            feeds["layer_prompts"] = outputs.get("layer_prompts", self.no_layer_prompts)  # [B or 1, L, P, H]
            (hidden,) = self.backbone.run(None, feeds)  # [B, P+T, H]
            tokens = hidden[:, self.task.prompt_length :]  # the real text's states, prompts left out
        if self.task.pooling == "cls":
            pooled = tokens[:, 0]
        else:
            mask = batch.attention_mask[:, :, None].astype(np.float32)
            pooled = (tokens * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0)  # [B, H]
        return pooled @ self.head_weight.T + self.head_bias  # [B, C]

    # ---- public API ----------------------------------------------------------------------------

    def _check_texts(self, texts: Sequence[Text]) -> list[Text]:
        if isinstance(texts, (str, tuple)):
            raise TypeError("pass a list of texts, e.g. predict([text]), not a single text")
        checked: list[Text] = []
        for index, text in enumerate(texts):
            if self.task.text_pair:
                if not (isinstance(text, (tuple, list)) and len(text) == 2):
                    raise ValueError(f"text {index}: task {self.task_name!r} takes (text, text_pair) pairs")
                checked.append((text[0], text[1]))
            else:
                if not isinstance(text, str):
                    raise ValueError(f"text {index}: task {self.task_name!r} takes single strings")
                checked.append(text)
        return checked

    def logits(self, texts: Sequence[Text], batch_size: int = 32) -> np.ndarray:
        """Raw head outputs [N, C], in input order. Batches are formed by length to save padding."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
        texts = self._check_texts(texts)
        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        encodings = self.encoder_text.tokenize(texts)
        order = np.argsort([len(e.ids) for e in encodings], kind="stable")
        result = np.empty((len(texts), len(self.labels)), dtype=np.float32)
        truncated = 0
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = self.encoder_text.pad([encodings[i] for i in rows])
            truncated += int(batch.truncated.sum())
            result[rows] = self.logits_for(batch)
        self.last_truncated = truncated
        if truncated:
            warnings.warn(
                f"{truncated} text(s) longer than {self.task.max_length} tokens were truncated",
                stacklevel=3,
            )
        return result

    def predict_proba(self, texts: Sequence[Text], batch_size: int = 32) -> np.ndarray:
        """Probabilities [N, C]; columns follow `self.labels`."""
        return softmax(self.logits(texts, batch_size))

    def predict(self, texts: Sequence[Text], batch_size: int = 32) -> list[str]:
        """The most probable label of each text."""
        logits = self.logits(texts, batch_size)
        return [self.labels[i] for i in logits.argmax(axis=-1)]
