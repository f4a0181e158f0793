"""One task of a bundle: its generator graph (where the prefix is made from the input), its
pooling and its head. The backbone graph it runs through is the bundle's, shared by every task.

    prefix(input_ids, token_embeds, attention_mask)  ->  prefix_kv: L arrays [2, N, heads, P, head_dim]
    logits(hidden, attention_mask)                   ->  [N, C]   (pool over the real tokens, then the head)

A `Task` holds no per-call state: the bundle (ipt_edge/bundle.py) calls it on the rows of a
batch that belong to it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from safetensors.numpy import load as load_safetensors

from ipt_edge import graphs
from ipt_edge.errors import BundleError
from ipt_edge.manifest import Manifest


def _head(data: bytes, name: str) -> dict[str, np.ndarray]:
    try:
        return load_safetensors(data)
    except Exception as error:  # safetensors raises its own SafetensorError
        raise BundleError(f"{name}: not a readable safetensors file ({str(error)[:200]})") from None


class Task:
    """A task's generator session, pooling and head; the generator is checked against the graph
    contract when opened."""

    def __init__(self, manifest: Manifest, name: str, read: Callable[[str], bytes], session: Callable):
        """`read(file)` gives a bundle file's checked bytes; `session(file)` opens a small graph."""
        self.name, self.info = manifest.task(name)
        self.labels = list(self.info.labels)
        # A gold label may be written as its display name or as its value in the training data.
        self.label_index = {v: i for i, v in enumerate(self.info.label_values)}
        self.label_index.update({label: i for i, label in enumerate(self.labels)})
        backbone = manifest.backbone
        self.generator = session(self.info.generator_file)
        dims = {
            "hidden": backbone.hidden_size,
            "layers": backbone.num_layers,
            "heads": backbone.num_heads,
            "head_dim": backbone.hidden_size // backbone.num_heads,
            "prompts": self.info.prompt_length,
        }
        self.spec = graphs.generator(backbone.num_layers)
        graphs.check_session(self.generator, self.spec, self.info.generator_file, True, dims)
        self.inputs = [i.name for i in self.generator.get_inputs()]
        head = _head(read(self.info.head_file), self.info.head_file)
        classes, hidden = len(self.labels), backbone.hidden_size
        expected = {"weight": (classes, hidden), "bias": (classes,)}
        found = {key: (t.shape, t.dtype) for key, t in head.items()}
        if any(found.get(key) != (shape, np.float32) for key, shape in expected.items()):
            raise BundleError(
                f"{self.info.head_file}: expected float32 weight [{classes}, {hidden}] and bias [{classes}], "
                f"found {found}"
            )
        self.head_weight, self.head_bias = head["weight"], head["bias"]  # [C, H], [C]
        # Which layers attend to the prefix: all from prefix_from_layer on.  [L, P]
        self.prefix_mask = np.ones((backbone.num_layers, self.info.prompt_length), dtype=np.int64)
        self.prefix_mask[: self.info.prefix_from_layer] = 0

    @property
    def text_pair(self) -> bool:
        return self.info.text_pair

    def prefix(
        self, input_ids: np.ndarray, token_embeds: np.ndarray, attention_mask: np.ndarray
    ) -> list[np.ndarray]:
        """prefix_kv for these rows: one [2, N, heads, P, head_dim] array per layer (keys, values)."""
        available = {"input_ids": input_ids, "token_embeds": token_embeds, "attention_mask": attention_mask}
        return self.generator.run(self.spec.output_names, {n: available[n] for n in self.inputs})

    def logits(self, hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """[N, C] from the backbone's hidden states [N, T, H]: pooled over the real tokens (or the
        first token), then the head."""
        if self.info.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = attention_mask.astype(np.float32)[:, None, :]  # [N, 1, T]
            # A batched matmul sums over the real tokens without the [N, T, H] temporary of hidden * mask.
            pooled = (mask @ hidden)[:, 0] / np.maximum(mask.sum(axis=2), 1.0)  # [N, H]
        return pooled @ self.head_weight.T + self.head_bias
