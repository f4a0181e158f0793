"""The linear probe: logistic regression on the frozen backbone's pooled states, no prompt.

It trains in seconds and is the floor every task is held to: `train` fits it first, prints its dev
accuracy beside the task's, and keeps it instead of the prompts when it does better on dev.
A kept probe is an ordinary task whose prefix no layer reads (prefix_from_layer = the number of
layers), so both runtimes run it unchanged.

    probe = LinearProbe.fit(model, encoder, train_set, dtype)   # pooled states, then L-BFGS
    probe.accuracy(probe_features(model, encoder, dev_set))     # the floor, on dev
    probe.into(model)                                           # the task becomes the probe
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ipt_edge.tokenizer import BundleTokenizer, Text
from ipt_edge_export.model import IPTModel, pool

C = 1.0  # inverse L2 strength, as scikit-learn's LogisticRegression default (the probe)


@torch.no_grad()
def probe_features(
    model: IPTModel, encoder: BundleTokenizer, texts: Sequence[Text], dtype: torch.dtype | None = None,
    batch_size: int = 64, prompted: bool = False,
) -> torch.Tensor:  # fmt: skip
    """Pooled states of the frozen backbone without any prefix (with `prompted`, through the
    model's prompts, as its head reads them), fp32 [N, H]; rows sorted by length into batches so
    padding stays small, under autocast to `dtype` if given (training's bf16)."""
    device = next(model.head.parameters()).device
    was_training = model.training
    model.eval()  # no dropout in the generator
    order = sorted(range(len(texts)), key=lambda i: len(str(texts[i])))
    features = torch.empty(len(texts), model.head.in_features)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = encoder.encode([texts[i] for i in rows])
        ids, mask, types = (
            torch.from_numpy(a).to(device)
            for a in (batch.input_ids, batch.attention_mask, batch.token_type_ids)
        )
        with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            if prompted:
                features[rows] = model.embed(ids, mask, types).float().cpu()  # [B, H]
                continue
            hidden = model.frozen_states(ids, mask, types)  # [B, T, H]
        features[rows] = pool(hidden.float(), mask, model.config.pooling).cpu()
    model.train(was_training)
    return features


@dataclass
class LinearProbe:
    weight: torch.Tensor  # [C, H], on the raw pooled states (the standardisation is folded in)
    bias: torch.Tensor  # [C]

    @classmethod
    def fit(cls, features: torch.Tensor, labels: Sequence[int], classes: int, c: float = C) -> LinearProbe:
        """Multinomial logistic regression, L2 penalty 1/(2c), L-BFGS to convergence (the loss is
        convex), on the features divided by their mean norm: about the normalised embeddings of the
        usual probe (mean-pooled states' norms vary little), so C = 1 regularises as it does there.
        Per-feature standardisation fitted 16 rows a head 4 points worse on SST-2. One scale for
        every row folds into a head on the raw features."""
        scale = features.norm(dim=1).mean().clamp_min(1e-6)
        x, y = features / scale, torch.tensor(list(labels))
        w = torch.zeros(classes, x.shape[1], requires_grad=True)
        b = torch.zeros(classes, requires_grad=True)
        optimizer = torch.optim.LBFGS(
            [w, b], max_iter=500, tolerance_grad=1e-6, line_search_fn="strong_wolfe"
        )

        def loss() -> torch.Tensor:
            optimizer.zero_grad()
            value = F.cross_entropy(x @ w.T + b, y, reduction="sum") + (w * w).sum() / (2 * c)
            value.backward()
            return value

        with torch.enable_grad():
            optimizer.step(loss)  # type: ignore[arg-type]
        return cls((w / scale).detach(), b.detach())  # w·(f/scale) + b = (w/scale)·f + b

    def correct(self, features: torch.Tensor, labels: Sequence[int]) -> torch.Tensor:
        """Whether each row's prediction is its label: [N] bool (the floor compares row by row)."""
        return (features @ self.weight.T + self.bias).argmax(-1) == torch.tensor(list(labels))

    def accuracy(self, features: torch.Tensor, labels: Sequence[int]) -> float:
        return self.correct(features, labels).float().mean().item()

    @torch.no_grad()
    def into(self, model: IPTModel, drop_prefix: bool = True) -> None:
        """Make `model`'s head this probe's; with `drop_prefix`, no layer reads the prefix any
        more (the task is the probe). Without, the head reads the prompted states it was fitted on."""
        if drop_prefix:
            model.drop_prefix()
        model.head.weight.copy_(self.weight)
        model.head.bias.copy_(self.bias)
