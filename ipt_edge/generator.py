"""One task of a bundle: its generator graph (where prompts are made), its head, and how its
prompts enter the shared encoder graph of its prompt kind (ipt_edge/graphs.py).

A `TaskGenerator` holds no per-call state: the pipeline (ipt_edge/pipeline.py) calls `prompts`
on the rows of a batch that belong to this task and `head` on their pooled states.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from safetensors.numpy import load as load_safetensors

from ipt_edge import graphs
from ipt_edge.bundle import BundleError, Manifest


def _head(data: bytes, name: str) -> dict[str, np.ndarray]:
    try:
        return load_safetensors(data)
    except Exception as error:  # safetensors raises its own SafetensorError
        raise BundleError(f"{name}: not a readable safetensors file ({str(error)[:200]})") from None


class TaskGenerator:
    """A task's generator session and head; checked against the graph contract when opened."""

    def __init__(self, manifest: Manifest, name: str, read: Callable[[str], bytes], session: Callable):
        """`read(file)` gives a bundle file's checked bytes; `session(file, threads)` opens a graph."""
        self.name, self.info = manifest.task(name)
        self.kind = graphs.prompt_kind(self.info.generator)  # picks the encoder graph
        self.labels = list(self.info.labels)
        # A gold label may be written as its display name or as its value in the training data.
        self.label_index = {v: i for i, v in enumerate(self.info.label_values)}
        self.label_index.update({label: i for i, label in enumerate(self.labels)})
        backbone = manifest.backbone
        # The generator is tiny: it runs on the calling thread (a pool of its own would spin and
        # take cores from the encoder; docs/performance.md).
        self.session = session(self.info.generator_file, 1)
        spec = graphs.generator_spec(self.info.generator, self.info.deep)
        dims = {
            "hidden": backbone.hidden_size,
            "layers": backbone.num_layers,
            "prompts": self.info.prompt_length,
        }
        graphs.check_session(self.session, spec, self.info.generator_file, subset_inputs=True, dims=dims)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
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
        # Prefix tasks: which layers attend to their prefix (all from prefix_from_layer on).
        self.prefix_mask_row = np.ones(
            (backbone.num_layers, self.info.prompt_length), dtype=np.int64
        )  # [L, P]
        self.prefix_mask_row[: self.info.prefix_from_layer] = 0

    def prompts(self, input_ids: np.ndarray, token_embeds: np.ndarray, attention_mask: np.ndarray) -> dict:
        """The generator's outputs for these rows, by name (graphs.generator_spec)."""
        available = {"input_ids": input_ids, "token_embeds": token_embeds, "attention_mask": attention_mask}
        generated = self.session.run(None, {name: available[name] for name in self.inputs})
        return dict(zip(self.outputs, generated, strict=True))

    def head(self, pooled: np.ndarray) -> np.ndarray:
        """Logits [N, C] from pooled states [N, H]."""
        return pooled @ self.head_weight.T + self.head_bias
