"""The pairs stage: prompts trained on pairs of rows, the recipe for small training sets.

With tens of rows per label, a head trained by cross-entropy through the prompts sees each row a
few times and learns little the linear probe does not (issue #29). SetFit's lesson is to learn from
pairs: n rows make n(n-1)/2 of them. Each step here takes a label-balanced batch of B rows, embeds
them through the prompted backbone, and pulls the cosine of every same-label pair towards 1 and of
every other pair towards 0 (SetFit's targets): B(B-1)/2 pairs from B forward passes, where SetFit
runs two texts per pair. Only the generator trains; the head is then the linear probe fitted on the
prompted pooled states (export/probe.py), so the task ships as any other.

Pairs alone pull a few dozen rows into tight clusters and the embedding drifts from what the
backbone knew (emotion at 8 rows per label: 25.0% against the probe's 36.6%). An anchor term keeps
each row's prompted embedding near its frozen one, as SetFit's small rate and single epoch keep its
encoder near the pretrained one (with it: 38.6% on the same rows; the `anchor-0` and `anchor-1`
runs of docs/accuracy.md).

    seconds = fit_pairs(model, batch_of, labels, anchors, PairOptions(), lr, dtype, say)
    probe = LinearProbe.fit(probe_features(model, encoder, texts, dtype, prompted=True), labels, C)
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ipt_edge.progress import Progress
from ipt_edge_export.model import IPTModel
from ipt_edge_export.schedule import warmup_then_decay


@dataclass
class PairOptions:
    steps: int = 100  # 3,200 row passes at batch 32: about 15 s for MiniLM on 2 cores
    batch_size: int = 32
    lr_share: float = 0.2  # of the backbone's rate: MiniLM 5e-2 -> 1e-2 (docs/training.md)
    anchor: float = 0.5  # weight of the pull towards each row's frozen embedding
    warmup: float = 0.06
    weight_decay: float = 0.01
    seed: int = 0


def balanced_batch(by_label: dict[int, list[int]], size: int, rng: random.Random) -> list[int]:
    """Up to `size` distinct rows, the labels taken in turn (each label's rows in a seeded random
    order), so every batch holds same-label pairs of every label and pairs across labels."""
    queues = [rng.sample(rows, len(rows)) for rows in by_label.values()]
    batch: list[int] = []
    while len(batch) < size and any(queues):
        for queue in queues:
            if queue and len(batch) < size:
                batch.append(queue.pop())
    return batch


def pair_loss(embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean squared error of every pair's cosine against 1 (same label) or 0 (other labels), the
    same-label pairs and the others weighted half each. [B, H], [B] -> scalar"""
    unit = F.normalize(embeddings, dim=-1)
    cosine = unit @ unit.T  # [B, B]
    same = (labels[:, None] == labels[None, :]).float()
    same.fill_diagonal_(0.0)  # a row with itself is no pair
    other = (labels[:, None] != labels[None, :]).float()
    pulled = ((cosine - 1) ** 2 * same).sum() / same.sum().clamp_min(1.0)
    pushed = (cosine**2 * other).sum() / other.sum().clamp_min(1.0)
    return (pulled + pushed) / 2


class PairsDiverged(Exception):
    """The pair loss went to NaN or infinity."""


def fit_pairs(
    model: IPTModel,
    batch_of: Callable[[list[int]], tuple[torch.Tensor, ...]],
    labels: Sequence[int],
    anchors: torch.Tensor,
    options: PairOptions,
    lr: float,
    dtype: torch.dtype | None,
    say: Callable[[str], None] = print,
) -> float:
    """Train the generator on pairs of the rows (`batch_of(rows)` gives their input tensors), each
    row's embedding also held near `anchors[row]` ([N, H], its frozen embedding, unit length);
    AdamW with linear warm-up and decay. Returns the seconds it took."""
    generator = [p for p in model.generator.parameters() if p.requires_grad]
    if not generator:  # a generator with no layer to prompt: nothing to train
        return 0.0
    device = next(model.head.parameters()).device
    optimizer = torch.optim.AdamW(generator, lr=lr, weight_decay=options.weight_decay)
    scheduler, _ = warmup_then_decay(optimizer, options.steps, options.warmup)
    by_label: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    rng, all_labels = random.Random(options.seed), torch.tensor(list(labels), device=device)
    anchors = anchors.to(device)
    started, running, rows_seen = time.perf_counter(), 0.0, 0
    model.train()
    with Progress("pairs", total=options.steps, unit="steps") as progress:
        for step in range(options.steps):
            rows = balanced_batch(by_label, options.batch_size, rng)
            inputs = batch_of(rows)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                embeddings = model.embed(*inputs)  # [B, H] fp32
            drift = 1 - (F.normalize(embeddings, dim=-1) * anchors[rows]).sum(-1).mean()
            loss = pair_loss(embeddings, all_labels[rows]) + options.anchor * drift
            if not torch.isfinite(loss):
                raise PairsDiverged(f"the pair loss went to {loss.item()} at step {step + 1}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(generator, 1.0)
            optimizer.step()
            scheduler.step()
            running = loss.item() if step == 0 else 0.9 * running + 0.1 * loss.item()
            rows_seen += len(rows)
            progress.update(step + 1, rows=rows_seen, status=f"pair loss {running:.4f}")
    model.eval()
    seconds = time.perf_counter() - started
    say(
        f"pairs: {options.steps} steps of {options.batch_size} rows, pair loss {running:.4f} ({seconds:.0f} s)"
    )
    return seconds
