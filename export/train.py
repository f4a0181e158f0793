"""Train a task: a generator and head on the frozen backbone, selected on a dev file.

ipt-edge train train.tsv --dev dev.tsv -o checkpoints/sst2 --generator mlp-prefix
"""

from __future__ import annotations

import copy
import math
import os
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

# oneDNN keeps a primitive (and its scratch memory) for every matmul shape it has met, 1,024 by
# default; length-bucketed batches meet a hundred lengths, and AG News grew to 2.0 GB of RSS. Eight
# kept primitives train as fast (117 rows/s either way) at 1.4 GB. Read at oneDNN's first use, so
# set before torch computes anything; a value the user set wins.
os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "8")

import numpy as np
import torch
import torch.nn.functional as F

from ipt_edge.progress import Progress
from ipt_edge.tables import TableError, read_labelled
from ipt_edge.tokenizer import BundleTokenizer, Text
from ipt_edge_export.backbones import packaged_backbone
from ipt_edge_export.checkpoint import (
    DEFAULT_BACKBONE,
    CheckpointError,
    check_out_dir,
    check_weight_names,
    load_backbone,
    read_checkpoint,
    save_checkpoint,
    text_budget,
)
from ipt_edge_export.model import IPTConfig, IPTModel, check_generator, position_offset
from ipt_edge_export.pairs import PairOptions, PairsDiverged, fit_pairs
from ipt_edge_export.probe import LinearProbe, probe_features
from ipt_edge_export.schedule import warmup_then_decay


@dataclass
class TrainOptions:
    train_file: Path
    out_dir: Path
    replace: bool = False  # replace an existing checkpoint at out_dir (never a folder that is not one)
    dev_file: Path | None = None
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    labels: str | None = None  # "neg,pos" or "0=negative,1=positive": order and display names
    backbone: str = DEFAULT_BACKBONE
    generator: str = "attn-prefix"  # the best measured (docs/accuracy.md)
    prompt_length: int = 16
    pooling: str = "mean"
    max_length: int = 128
    epochs: float | None = None  # passes over the rows; None: the step budget decides (training_steps)
    steps: int | None = None  # optimizer steps, overriding epochs
    batch_size: int = 32
    lr: float | None = None  # None: the backbone's (default_lr)
    weight_decay: float = 0.01
    warmup: float = 0.06  # share of steps with a linear warm-up
    seed: int = 0
    max_train_rows: int | None = None  # a seeded subsample, for quick runs
    eval_every: int | None = None  # steps between dev evaluations (default: once per epoch)
    threads: int | None = None
    init_generator: Path | None = None  # a checkpoint whose generator (same kind and P) starts this one
    prefix_from_layer: int = 0  # the first layer given a prefix (layers below get none)
    device: str = "cpu"  # cpu | cuda | auto (cuda where torch sees one); checkpoints are saved on CPU
    precision: str = "auto"  # auto | bf16 | fp32: the frozen backbone under bf16 autocast where native
    cache_mb: int = 512  # with prefix_from_layer > 0: memory for the layers below it, computed once per row
    max_batch_tokens: int = 2048  # a batch with more (rows x padded length) runs in parts, gradients summed
    legacy_loop: bool = False  # the loop before issue #28, every lever off: benchmarks/train_speed.py only
    probe_floor: bool = True  # keep the linear probe instead of the prompts when it does better on dev
    recipe: str = "auto"  # auto | pairs | cross-entropy: how the prompts learn (choose_recipe)
    pair_anchor: float = 0.5  # pairs: weight of the pull to each row's frozen embedding (export/pairs.py)


@dataclass
class Examples:
    texts: list[Text]
    labels: list[int]  # index into the label names


def parse_labels(spec: str) -> tuple[list[str], list[str]]:
    """'neg,pos' -> raw values and names alike; '0=negative,1=positive' -> raw ['0','1'], names."""
    raw, names = [], []
    for item in spec.split(","):
        value, _, name = item.strip().partition("=")
        if not value:
            raise ValueError(f"--labels {spec!r}: empty label")
        raw.append(value)
        names.append(name or value)
    if len(set(raw)) != len(raw) or len(raw) < 2:
        raise ValueError(f"--labels {spec!r}: need at least two distinct labels")
    return raw, names


def read_examples(
    path: Path, options: TrainOptions, raw_labels: list[str] | None
) -> tuple[Examples, list[str], Counter[str]]:
    """Rows of a labelled file, their label values and the count of each value found. With
    `raw_labels` given, any other label is an error naming its line."""
    texts: list[Text] = []
    values: list[tuple[int, str]] = []
    for line, text, label in read_labelled(
        path, options.text_column, options.text_pair_column, options.label_column
    ):
        texts.append(text)
        values.append((line, label))
    if not texts:
        raise TableError(f"{path}: no rows")
    counts = Counter(value for _, value in values)
    if raw_labels is None:
        numeric = all(v.lstrip("-").isdigit() for v in counts)
        raw_labels = sorted(counts, key=int) if numeric else sorted(counts)
        if len(raw_labels) < 2:
            raise TableError(f"{path}: only one label ({raw_labels}) in column {options.label_column!r}")
    index = {value: i for i, value in enumerate(raw_labels)}
    labels = []
    for line, value in values:
        if value not in index:
            raise TableError(
                f"{path}:{line}: label {value!r} is not one of the task's labels {raw_labels} "
                "(--labels names them all)"
            )
        labels.append(index[value])
    return Examples(texts, labels), raw_labels, counts


DEFAULT_EPOCHS = 2.0
MIN_STEPS = 300  # benchmarks/few_rows.py: what 16 to 64 rows per class need (docs/training.md)
DEV_SHARE, DEV_MAX, DEV_MIN = 0.1, 1000, 50
FLOOR_SHARE = 0.2  # of each label's rows, held out to check a small set's task against the probe
# On those few rows, the probe replaces the task only when it wins at this level (probe_wins).
FLOOR_ALPHA = 0.1


def training_steps(rows: int, options: TrainOptions) -> int:
    """The step budget: --steps, else --epochs passes over the rows, else DEFAULT_EPOCHS passes
    and at least MIN_STEPS steps. A budget in epochs alone starves small sets: 32 rows at batch 32
    got 2 optimizer steps from 2 epochs, a coin flip."""
    per_epoch = math.ceil(rows / options.batch_size)
    if options.steps:
        return options.steps
    if options.epochs:
        return max(1, round(options.epochs * per_epoch))
    return max(round(DEFAULT_EPOCHS * per_epoch), MIN_STEPS)


def carve_dev(train_set: Examples, seed: int) -> tuple[Examples, Examples | None, bool]:
    """(train, dev, floor_only): a seeded split stratified by label, DEV_SHARE of the rows up to
    DEV_MAX. Where that would hold under DEV_MIN rows, FLOOR_SHARE of each label's rows (one at
    least, from labels with two or more) are held out with floor_only True: under 50 rows a dev
    accuracy moves 2 points a row, coarser than the steps it would choose between, so such a split
    only decides between the task and the linear probe (docs/training.md). No label with two rows: no split."""
    size = min(DEV_MAX, round(DEV_SHARE * len(train_set.texts)))
    floor_only = size < DEV_MIN
    by_label: dict[int, list[int]] = {}
    for i, label in enumerate(train_set.labels):
        by_label.setdefault(label, []).append(i)
    rng, dev_rows = random.Random(seed), []
    share = FLOOR_SHARE if floor_only else size / len(train_set.texts)
    for rows in by_label.values():
        rng.shuffle(rows)
        take = max(1, round(share * len(rows))) if floor_only and len(rows) >= 2 else round(share * len(rows))
        dev_rows += rows[:take]
    if not dev_rows:
        return train_set, None, False
    held = set(dev_rows)
    keep = [i for i in range(len(train_set.texts)) if i not in held]

    def subset(rows: list[int]) -> Examples:
        return Examples([train_set.texts[i] for i in rows], [train_set.labels[i] for i in rows])

    return subset(keep), subset(sorted(dev_rows)), floor_only


def probe_wins(probe_right: torch.Tensor, task_right: torch.Tensor, few: bool) -> bool:
    """Whether the floor keeps the probe instead of the task, from which held-out rows each gets
    right ([N] bool). On a dev split: when the probe gets more right. On the few rows a small set
    holds out (`few`), only when it is significantly better: a one-sided exact sign test (McNemar's)
    on the rows where just one of the two is right, at FLOOR_ALPHA. There a lead of a row or two is
    noise: at 8 rows per label the plain comparison kept the probe on 8 of 20 runs, each time by one
    or two of 4 to 12 held-out rows (docs/training.md, "A small training set")."""
    probe_only = int((probe_right & ~task_right).sum())  # rows only the probe gets right
    task_only = int((task_right & ~probe_right).sum())
    if not few or probe_only <= task_only:
        return probe_only > task_only
    split = probe_only + task_only
    # The chance of the probe winning probe_only or more of them if neither were better:
    chance = sum(math.comb(split, k) for k in range(probe_only, split + 1)) / 2**split
    return chance <= FLOOR_ALPHA


def carved_dev_line(train_set: Examples, dev_set: Examples | None, floor_only: bool, seed: int) -> str:
    if dev_set is None:
        return "no --dev, and no label has two rows to hold one out: the last step is kept, unchecked"
    if floor_only:
        return (
            f"no --dev, and {len(train_set.texts) + len(dev_set.texts):,} rows are too few to choose steps "
            f"by: the last step is kept, and {len(dev_set.texts)} held-out rows (stratified, seed {seed}) "
            "only decide between the task and the linear probe"
        )
    return (
        f"no --dev: {len(dev_set.texts):,} of the training rows (stratified, seed {seed}) are held out "
        "to keep the best step and to check the task against the linear probe"
    )


def batches(order: Sequence[int], size: int) -> list[list[int]]:
    return [list(order[i : i + size]) for i in range(0, len(order), size)]


def length_bucketed(lengths: Sequence[int], size: int, rng: random.Random, pool: int = 64) -> list[list[int]]:
    """One epoch's batches, every row exactly once. Rows are shuffled, sorted by length within
    pools of `pool` batches and cut into batches; then the batches are shuffled. A batch holds
    rows of about one length (little padding: SST-2's phrases run from 1 to 60 tokens) and is
    still a random draw of the data, met in a random order."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    epoch: list[list[int]] = []
    for start in range(0, len(order), size * pool):
        epoch += batches(sorted(order[start : start + size * pool], key=lengths.__getitem__), size)
    rng.shuffle(epoch)
    return epoch


@dataclass
class TokenizedRows:
    """Every training row tokenized once: its ids do not change between epochs."""

    ids: list[np.ndarray]  # [T_i] int64 each, special tokens included
    type_ids: list[np.ndarray]  # [T_i] int64 each
    pad_id: int

    @classmethod
    def of(cls, encoder: BundleTokenizer, texts: Sequence[Text], chunk: int = 1024) -> TokenizedRows:
        ids, type_ids = [], []
        for start in range(0, len(texts), chunk):  # a chunk's Encodings at a time, kept as arrays
            for encoding in encoder.tokenize(texts[start : start + chunk]):
                ids.append(np.asarray(encoding.ids, dtype=np.int64))
                type_ids.append(np.asarray(encoding.type_ids, dtype=np.int64))
        return cls(ids, type_ids, encoder.pad_id)

    @property
    def lengths(self) -> list[int]:
        return [len(row) for row in self.ids]

    def batch(self, rows: Sequence[int], device: torch.device) -> tuple[torch.Tensor, ...]:
        """input_ids, attention_mask, token_type_ids [B, T] int64, right-padded to the longest row."""
        length = max(len(self.ids[i]) for i in rows)
        ids = np.full((len(rows), length), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), length), dtype=np.int64)
        types = np.zeros((len(rows), length), dtype=np.int64)
        for j, i in enumerate(rows):
            n = len(self.ids[i])
            ids[j, :n], mask[j, :n], types[j, :n] = self.ids[i], 1, self.type_ids[i]
        return tuple(torch.from_numpy(a).to(device) for a in (ids, mask, types))


class LowerStates:
    """With a prefix from layer K > 0, the state entering layer K ([T_i, H] per row) is fixed for
    a row: computed once, kept up to `budget` bytes, the layers below K are not run again in later
    epochs. Rows past the budget are recomputed each time. Kept in the autocast dtype, if any."""

    def __init__(self, model: IPTModel, budget: int, dtype: torch.dtype | None):
        self.model, self.budget, self.dtype = model, budget, dtype
        self.rows: dict[int, torch.Tensor] = {}
        self.bytes = 0

    def __call__(self, rows: Sequence[int], inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """[B, T, H] for these rows, padded as `inputs` are (padding states are zero: nothing
        reads them, every layer masks them and pooling skips them)."""
        if not all(i in self.rows for i in rows):
            states = self.model.lower_states(*inputs)  # [B, T, H]
            lengths = inputs[1].sum(1).tolist()
            for j, i in enumerate(rows):
                kept = states[j, : lengths[j]].to(self.dtype or states.dtype)
                if i not in self.rows and self.bytes + kept.nbytes <= self.budget:
                    self.rows[i] = kept
                    self.bytes += kept.nbytes
            return states
        batch, length = inputs[0].shape
        first = self.rows[rows[0]]
        states = first.new_zeros(batch, length, first.shape[-1])
        for j, i in enumerate(rows):
            states[j, : len(self.rows[i])] = self.rows[i]
        return states


def usable_cores() -> int:
    """The cores this process may run on (a container's share, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes bf16 matmuls in hardware: CUDA from Ampere on; on CPU, AVX-512
    BF16 or AMX (Linux flags). Elsewhere oneDNN would emulate bf16, slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(
    options: TrainOptions, device: torch.device, say: Callable[[str], None]
) -> torch.dtype | None:
    """bf16 for --precision auto or bf16 where the device has it natively, else None (fp32), said
    in one line. The trainable weights, their gradients and the optimizer stay fp32 either way."""
    if options.precision not in ("auto", "bf16", "fp32"):
        raise ValueError(f"precision must be auto, bf16 or fp32; got {options.precision!r}")
    if options.precision == "fp32" or options.legacy_loop:
        return None
    if native_bf16(device):
        return torch.bfloat16
    say(f"bf16: {device.type} has no native bf16 (AVX-512 BF16, AMX or an Ampere GPU); training in fp32")
    return None


def resolve_device(name: str) -> torch.device:
    """'cpu', 'cuda' (an error where torch sees no GPU) or 'auto' (cuda if available)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ValueError(f"device must be cpu, cuda or auto; got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: this torch ({torch.__version__}) sees no CUDA GPU")
    return torch.device(name)


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def to_tensors(encoder: BundleTokenizer, texts: Sequence[Text], device=None) -> tuple[torch.Tensor, ...]:
    batch = encoder.encode(texts)
    arrays = (batch.input_ids, batch.attention_mask, batch.token_type_ids)
    return tuple(torch.from_numpy(a).to(device) for a in arrays)


@torch.inference_mode()
def correct_rows(
    model: IPTModel, encoder: BundleTokenizer, examples: Examples, batch_size: int = 64
) -> torch.Tensor:
    """Whether the model gets each row right: [N] bool. Rows are sorted by length so padding stays small."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    order = sorted(range(len(examples.texts)), key=lambda i: len(str(examples.texts[i])))
    correct = torch.zeros(len(examples.texts), dtype=torch.bool)
    for rows in batches(order, batch_size):
        logits = model(*to_tensors(encoder, [examples.texts[i] for i in rows], device))
        correct[rows] = logits.argmax(-1).cpu() == torch.tensor([examples.labels[i] for i in rows])
    model.train(was_training)
    return correct


def evaluate(model: IPTModel, encoder: BundleTokenizer, examples: Examples, batch_size: int = 64) -> float:
    """Accuracy."""
    return correct_rows(model, encoder, examples, batch_size).float().mean().item()


def accuracies(
    model: torch.nn.Module,
    encoder: BundleTokenizer,
    tests: dict[str, Path],
    options: TrainOptions,
    raw_labels: list[str],
) -> dict[str, float]:
    """`<name>_accuracy` of the model on each labelled file in `tests` (columns as in `options`)."""
    return {
        f"{name}_accuracy": evaluate(model, encoder, read_examples(path, options, raw_labels)[0])
        for name, path in tests.items()
    }


def load_task_data(
    options: TrainOptions, progress: Callable[[str], None] = print
) -> tuple[Examples, Examples | None, list[str], list[str]]:
    """Training rows (seeded subsample if asked), dev rows, raw label values and display names.
    Without --labels, the labels found are printed with their counts (a typo shows up here)."""
    raw_labels, label_names = parse_labels(options.labels) if options.labels else (None, None)
    given = raw_labels is not None
    train_set, raw_labels, _ = read_examples(options.train_file, options, raw_labels)
    dev_set = read_examples(options.dev_file, options, raw_labels)[0] if options.dev_file else None
    subsample = options.max_train_rows and options.max_train_rows < len(train_set.texts)
    if subsample:
        keep = sorted(random.Random(options.seed).sample(range(len(train_set.texts)), options.max_train_rows))
        train_set = Examples([train_set.texts[i] for i in keep], [train_set.labels[i] for i in keep])
    if not given:  # counted on the rows trained on
        counts = Counter(train_set.labels)
        found = ", ".join(f"{value!r} x{counts[i]:,}" for i, value in enumerate(raw_labels))
        rows = f"{len(train_set.texts):,} rows of " if subsample else ""
        progress(f"labels found in {rows}{options.train_file} (column {options.label_column!r}): {found}")
    return train_set, dev_set, raw_labels, label_names or raw_labels


class Diverged(Exception):
    """Training went nowhere: the loss is not finite, or sits at the label prior's entropy (what a
    model predicting no more than the label shares scores: ln C for balanced labels) after warm-up."""


STUCK_SHARE = 0.98  # a mean loss over the last STUCK_WINDOW steps above this share of the prior's entropy
STUCK_WINDOW = 10


def prior_entropy(labels: Sequence[int]) -> float:
    counts = Counter(labels)
    return -sum(n / len(labels) * math.log(n / len(labels)) for n in counts.values())


@dataclass
class FitResult:
    best_state: dict | None  # the snapshot at the best dev accuracy (None without a dev set)
    best_dev: float | None
    best_right: torch.Tensor | None  # [N] bool: the dev rows the best state gets right
    best_step: int
    steps: int
    seconds: float
    history: list[dict]


def parts(rows: int, length: int, max_tokens: int) -> list[slice]:
    """Consecutive slices of a batch of `rows` rows padded to `length` tokens, each of at most
    `max_tokens` tokens (one row at least): the parts a long batch runs in."""
    size = max(1, min(rows, max_tokens // max(1, length)))
    return [slice(start, start + size) for start in range(0, rows, size)]


def epoch_batches(
    train_set: Examples, rows: TokenizedRows | None, encoder: BundleTokenizer, size: int, rng: random.Random,
    device: torch.device,
) -> Iterator[tuple[list[int], tuple[torch.Tensor, ...]]]:  # fmt: skip
    """One epoch: (row indices, their input tensors) per batch. Length-bucketed batches of the
    rows tokenized once; without `rows` (the legacy loop), random batches tokenized anew."""
    if rows is not None:
        for batch in length_bucketed(rows.lengths, size, rng):
            yield batch, rows.batch(batch, device)
        return
    order = list(range(len(train_set.texts)))
    rng.shuffle(order)
    for batch in batches(order, size):
        yield batch, to_tensors(encoder, [train_set.texts[i] for i in batch], device)


def fit(
    model: torch.nn.Module,
    encoder: BundleTokenizer,
    train_set: Examples,
    dev_set: Examples | None,
    options: TrainOptions,
    snapshot: Callable[[], dict],
    say: Callable[[str], None] = print,
    guard: bool = False,
) -> FitResult:
    """AdamW over the trainable parameters, linear warm-up and decay, dev selection, a progress bar.

    `snapshot` returns what to keep at the best dev step (a task's tuned weights, or all weights).
    The frozen backbone runs under bf16 autocast where the device has it (autocast_dtype); dev
    accuracy is measured in fp32, as the exported graphs run. With `guard`, a loss that is not
    finite, or that still sits at the label prior's entropy STUCK_WINDOW steps after warm-up,
    raises Diverged (train restarts at a lower rate).
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    device = model_device(model)
    optimizer = torch.optim.AdamW(trainable, lr=options.lr, weight_decay=options.weight_decay)
    steps_per_epoch = math.ceil(len(train_set.texts) / options.batch_size)
    total_steps = training_steps(len(train_set.texts), options)
    scheduler, warmup = warmup_then_decay(optimizer, total_steps, options.warmup)
    eval_every = options.eval_every or steps_per_epoch
    shuffler = random.Random(options.seed)
    dtype = autocast_dtype(options, device, say)
    legacy = options.legacy_loop
    rows = None if legacy else TokenizedRows.of(encoder, train_set.texts)
    cached = isinstance(model, IPTModel) and model.config.prefix_from_layer > 0 and not legacy
    lower = LowerStates(model, options.cache_mb << 20, dtype) if cached else None
    max_tokens = sys.maxsize if legacy else options.max_batch_tokens
    best_state, best_dev, best_step = None, -1.0, total_steps
    best_right: torch.Tensor | None = None
    history: list[dict] = []
    stuck_at = STUCK_SHARE * prior_entropy(train_set.labels)
    recent: list[float] = []
    started = time.perf_counter()
    # On stderr, like every status line: a bar on a terminal, a line every 30 s in a log.
    with Progress("training", total=total_steps, unit="steps") as progress:
        step, rows_seen, running_loss = 0, 0, 0.0
        model.train()
        while step < total_steps:
            for batch, inputs in epoch_batches(
                train_set, rows, encoder, options.batch_size, shuffler, device
            ):
                if step >= total_steps:
                    break
                optimizer.zero_grad(set_to_none=True)
                loss = torch.zeros((), device=device)
                # A long batch runs in parts whose gradients add up to the batch's: the same step,
                # with memory bounded by max_batch_tokens whatever the texts' lengths.
                for part in parts(len(batch), inputs[0].shape[1], max_tokens):
                    rows_in, inputs_in = batch[part], tuple(x[part] for x in inputs)
                    target = torch.tensor([train_set.labels[i] for i in rows_in], device=device)
                    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                        states = None if lower is None else lower(rows_in, inputs_in)
                        logits = model(*inputs_in) if states is None else model(*inputs_in, lower=states)
                    part_loss = F.cross_entropy(logits.float(), target, reduction="sum") / len(batch)
                    part_loss.backward()
                    loss += part_loss.detach()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimizer.step()
                scheduler.step()
                step += 1
                rows_seen += len(batch)
                recent = [*recent[1 - STUCK_WINDOW :], loss.item()]
                if guard and not math.isfinite(recent[-1]):
                    raise Diverged(f"the loss went to {recent[-1]} at step {step}")
                if guard and step == warmup + STUCK_WINDOW and statistics.fmean(recent) > stuck_at:
                    raise Diverged(
                        f"the loss sat at {statistics.fmean(recent):.3f} after warm-up (step {step}), the "
                        f"entropy of the label shares ({stuck_at / STUCK_SHARE:.3f}): no more than a majority guess"
                    )
                running_loss = recent[-1] if step == 1 else 0.98 * running_loss + 0.02 * recent[-1]
                status = f"loss {running_loss:.4f}"
                if dev_set and (step % eval_every == 0 or step == total_steps):
                    right = correct_rows(model, encoder, dev_set)
                    accuracy = right.float().mean().item()
                    history.append({"step": step, "loss": round(running_loss, 4), "dev_accuracy": accuracy})
                    if accuracy > best_dev:
                        best_dev, best_right, best_step = accuracy, right, step
                        best_state = copy.deepcopy(snapshot())
                    progress.line(
                        f"step {step}/{total_steps}: loss {running_loss:.4f}, dev accuracy {accuracy:.4f}"
                    )
                if history:
                    status += f"  dev acc {history[-1]['dev_accuracy']:.4f} (best {best_dev:.4f})"
                progress.update(step, rows=rows_seen, status=status)
    model.eval()
    seconds = time.perf_counter() - started
    return FitResult(best_state, best_dev if history else None, best_right, best_step, total_steps, seconds,
                     history)  # fmt: skip


def start_from_pretrained_generator(model: IPTModel, checkpoint_dir: Path, backbone_sha256: str) -> None:
    """Generator pretraining: take the generator of a checkpoint trained on an auxiliary corpus
    (e.g. AG News topics); the head is new, since the labels differ."""
    source = read_checkpoint(checkpoint_dir)
    mine, theirs = model.config, source.config
    if (theirs.generator, theirs.prompt_length) != (mine.generator, mine.prompt_length):
        raise CheckpointError(
            f"{checkpoint_dir}: its generator is {theirs.generator} with P={theirs.prompt_length}; "
            f"this task trains {mine.generator} with P={mine.prompt_length}"
        )
    if source.meta["backbone"]["sha256"] != backbone_sha256:
        raise CheckpointError(f"{checkpoint_dir} was trained on another backbone")
    weights = {k: v for k, v in source.weights.items() if k.startswith("generator.")}
    wanted = {k for k in model.tuned_state() if k.startswith("generator.")}
    check_weight_names(checkpoint_dir, mine.generator, wanted, set(weights))
    model.load_state_dict(weights, strict=False)


RECIPES = ("auto", "pairs", "cross-entropy")
PAIRS_BELOW = 100  # rows per label (on average) under which `auto` trains the prompts on pairs


def choose_recipe(options: TrainOptions, rows: int, labels: int) -> str:
    """--recipe, or for `auto`: pairs (export/pairs.py) for under PAIRS_BELOW rows per label, the
    "tens of rows" where cross-entropy through the prompts did no better than the probe
    (docs/accuracy.md), cross-entropy above."""
    if options.recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {', '.join(RECIPES)}; got {options.recipe!r}")
    if options.recipe != "auto":
        return options.recipe
    return "pairs" if rows < PAIRS_BELOW * labels else "cross-entropy"


def fit_on_pairs(
    model: IPTModel, encoder: BundleTokenizer, train_set: Examples, frozen: torch.Tensor, options: TrainOptions,
    dtype: torch.dtype | None, say: Callable[[str], None],
) -> FitResult:  # fmt: skip
    """The pairs recipe: the generator trained on pairs of rows, each held near its `frozen`
    embedding ([N, H] pooled states of the unprompted backbone), then the head fitted as the
    linear probe on the prompted states. The last state is kept (no dev step to choose)."""
    rows, device = TokenizedRows.of(encoder, train_set.texts), model_device(model)
    steps = options.steps or (training_steps(len(train_set.texts), options) if options.epochs else None)
    pairs = PairOptions(batch_size=options.batch_size, seed=options.seed, anchor=options.pair_anchor)
    pairs = replace(pairs, steps=steps or pairs.steps)
    lr = (options.lr or 0.0) * pairs.lr_share
    try:
        seconds = fit_pairs(model, lambda batch: rows.batch(batch, device), train_set.labels,
                            F.normalize(frozen, dim=-1), pairs, lr, dtype, say)  # fmt: skip
    except PairsDiverged as why:
        raise Diverged(str(why)) from why
    prompted = probe_features(model, encoder, train_set.texts, prompted=True)  # fp32, as the graphs will run
    LinearProbe.fit(prompted, train_set.labels, len(model.config.labels)).into(model, drop_prefix=False)
    return FitResult(None, None, None, pairs.steps, pairs.steps, seconds, [])


UNKNOWN_BACKBONE_LR = 1e-2  # a backbone not in the packaged table: MPNet's, the safer of the two measured
MAX_RESTARTS = 2  # a diverged run restarts at a quarter of the rate, at most this many times


def default_lr(backbone: str) -> float:
    packaged = packaged_backbone(backbone)
    return packaged.lr if packaged else UNKNOWN_BACKBONE_LR


def train(options: TrainOptions, progress: Callable[[str], None] = print) -> dict:
    """Train a task's generator and head, keep the best dev state, hold it to the linear probe (the
    probe is kept when it does better on dev), save the checkpoint."""
    torch.set_num_threads(options.threads or usable_cores())
    torch.manual_seed(options.seed)
    check_generator(options.generator)  # before reading data and the backbone
    check_out_dir(options.out_dir, options.replace)  # before hours of training, not after
    options = replace(options, lr=options.lr or default_lr(options.backbone))
    device = resolve_device(options.device)
    train_set, dev_set, raw_labels, label_names = load_task_data(options, progress)
    recipe = choose_recipe(options, len(train_set.texts), len(raw_labels))
    if options.recipe == "auto":
        per_label = len(train_set.texts) / len(raw_labels)
        progress(
            f"recipe: {recipe} ({per_label:,.0f} rows per label; pairs under {PAIRS_BELOW}; --recipe to choose)"
        )
    floor_only = False  # a dev split too small to choose steps by: it only decides task or probe
    if dev_set is None:
        train_set, dev_set, floor_only = carve_dev(train_set, options.seed)
        progress(carved_dev_line(train_set, dev_set, floor_only, options.seed))
    backbone = load_backbone(options.backbone)
    config = IPTConfig(
        generator=options.generator,
        prompt_length=options.prompt_length,
        pooling=options.pooling,
        labels=label_names,
        label_values=raw_labels,
        text_pair=options.text_pair_column is not None,
        max_length=options.max_length,
        prefix_from_layer=options.prefix_from_layer,
    )
    config.max_length = text_budget(backbone.identity, config, position_offset(backbone.model.config))

    def new_model() -> IPTModel:
        torch.manual_seed(options.seed)
        model = IPTModel(backbone.model, copy.deepcopy(config), seed=options.seed)
        if options.init_generator:
            start_from_pretrained_generator(model, options.init_generator, backbone.identity["sha256"])
            progress(f"generator initialised from {options.init_generator}")
        return model.to(device)

    model = new_model()
    encoder = BundleTokenizer(backbone.tokenizer_path, config.max_length)
    tuned = model.tuned_parameter_count()
    share = tuned / backbone.identity["parameters"]
    progress(
        f"{options.generator}: {tuned:,} tuned parameters = {share:.2%} of the backbone "
        f"({backbone.identity['parameters']:,}); {len(train_set.texts):,} training rows on {device}"
    )
    probe_started = time.perf_counter()
    dtype = autocast_dtype(options, device, say=lambda message: None)  # fit says it
    frozen = probe_features(model, encoder, train_set.texts, dtype)  # [N, H]
    probe = LinearProbe.fit(frozen, train_set.labels, len(raw_labels))
    dev_features = probe_features(model, encoder, dev_set.texts) if dev_set else None
    probe_right = (
        probe.correct(dev_features, dev_set.labels) if dev_set and dev_features is not None else None
    )
    probe_dev = probe_right.float().mean().item() if probe_right is not None else None
    if probe_dev is not None:
        progress(f"linear probe (frozen backbone, no prompt): dev accuracy {probe_dev:.4f} "
                 f"({time.perf_counter() - probe_started:.0f} s)")  # fmt: skip
    restarts: list[dict] = []
    while True:
        guard = len(restarts) < MAX_RESTARTS
        try:
            if recipe == "pairs":
                result = fit_on_pairs(model, encoder, train_set, frozen, options, dtype, progress)
            else:
                select_on = None if floor_only else dev_set
                result = fit(
                    model, encoder, train_set, select_on, options, model.tuned_state, progress, guard
                )
            break
        except Diverged as why:
            if not guard:  # the pairs recipe raises whatever the guard (a NaN has nothing to keep)
                raise ValueError(
                    f"training diverged at lr {options.lr:g} after {MAX_RESTARTS} restarts: {why}"
                ) from why
            restarts.append({"lr": options.lr, "why": str(why)})
            progress(f"training diverged: {why}. Restarting at lr {options.lr / 4:g} (was {options.lr:g})")
            options = replace(options, lr=options.lr / 4)
            model = new_model()
    if result.best_state is not None:
        model.load_state_dict(result.best_state, strict=False)
    task_right = result.best_right  # the kept state's dev rows, row by row: fit's, or counted here
    if task_right is None and dev_set:
        task_right = correct_rows(model, encoder, dev_set)
    task_dev = task_right.float().mean().item() if task_right is not None else None
    kept = "prompts"
    if (
        options.probe_floor
        and probe_right is not None
        and task_right is not None
        and probe_wins(probe_right, task_right, few=floor_only)
    ):
        kept = "probe"
        # The held-out rows decided; the probe they chose is fitted on every row.
        if floor_only and dev_features is not None:
            probe = LinearProbe.fit(torch.cat([frozen, dev_features]), train_set.labels + dev_set.labels,
                                    len(raw_labels))  # fmt: skip
        probe.into(model)
        progress(f"the linear probe does better on dev ({probe_dev:.4f} vs the task's "
                 f"{task_dev:.4f}): the task is the probe, a head on the frozen backbone with no prompt")  # fmt: skip
    elif probe_dev is not None and task_dev is not None:
        why = ""
        if probe_dev > task_dev:
            why = (" (a lead within noise on so few rows: the prompts are kept)" if options.probe_floor
                   else " (--no-probe-floor: the prompts are kept)")  # fmt: skip
        progress(f"dev accuracy {task_dev:.4f}, linear probe {probe_dev:.4f}{why}")
    if kept == "prompts" and floor_only and recipe == "pairs" and dev_set and dev_features is not None:
        # The held-out rows chose the prompts; trained on pairs in seconds, they train again on every row.
        train_set = Examples(train_set.texts + dev_set.texts, train_set.labels + dev_set.labels)
        every_frozen = torch.cat([frozen, dev_features])
        progress(f"training the prompts again on all {len(train_set.texts):,} rows")
        model = new_model()
        result = fit_on_pairs(model, encoder, train_set, every_frozen, options, dtype, progress)
    model.to("cpu")  # checkpoints hold CPU tensors
    record = {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "steps": result.steps,
        "train_rows": len(train_set.texts),
        "train_seconds": round(result.seconds, 1),
        "best_step": result.best_step,
        "dev_accuracy": task_dev,
        "probe_dev_accuracy": probe_dev,
        "kept": kept,
        "recipe": recipe,
        "lr": options.lr,
        "restarts": restarts,
        "history": result.history,
        "tuned_share": share,
    }
    samples_from = dev_set or train_set
    samples = [list(t) if isinstance(t, tuple) else t for t in samples_from.texts[:16]]
    save_checkpoint(options.out_dir, model, backbone, record, samples, replace=options.replace)
    if result.best_dev is not None and kept == "prompts":
        progress(f"best dev accuracy {result.best_dev:.4f} at step {result.best_step}")
    progress(f"saved checkpoint {options.out_dir} ({result.seconds:.0f} s)")
    return record
