"""Train a task: a generator and head on the frozen backbone, selected on a dev file.

ipt-edge train train.tsv --dev dev.tsv -o checkpoints/sst2 --generator mlp-prefix
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ipt_edge.progress import Progress
from ipt_edge.tables import TableError, read_labelled
from ipt_edge.tokenization import Text, TextEncoder
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
from ipt_edge_export.model import IPTConfig, IPTModel, check_generator, default_lr, position_offset


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
    epochs: float = 2.0
    batch_size: int = 32
    lr: float | None = None  # None: the family's default (model.default_lr)
    weight_decay: float = 0.01
    warmup: float = 0.06  # share of steps with a linear warm-up
    seed: int = 0
    max_train_rows: int | None = None  # a seeded subsample, for quick runs
    eval_every: int | None = None  # steps between dev evaluations (default: once per epoch)
    threads: int | None = None
    init_generator: Path | None = None  # a checkpoint whose generator (same kind and P) starts this one
    prefix_from_layer: int = 0  # the first layer given a prefix (layers below get none)
    device: str = "cpu"  # cpu | cuda | auto (cuda where torch sees one); checkpoints are saved on CPU


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


def batches(order: Sequence[int], size: int) -> list[list[int]]:
    return [list(order[i : i + size]) for i in range(0, len(order), size)]


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


def to_tensors(encoder: TextEncoder, texts: Sequence[Text], device=None) -> tuple[torch.Tensor, ...]:
    batch = encoder.encode(texts)
    arrays = (batch.input_ids, batch.attention_mask, batch.token_type_ids)
    return tuple(torch.from_numpy(a).to(device) for a in arrays)


@torch.inference_mode()
def evaluate(model: IPTModel, encoder: TextEncoder, examples: Examples, batch_size: int = 64) -> float:
    """Accuracy; rows are sorted by length so padding stays small."""
    was_training = model.training
    model.eval()
    device = model_device(model)
    order = sorted(range(len(examples.texts)), key=lambda i: len(str(examples.texts[i])))
    correct = 0
    for rows in batches(order, batch_size):
        logits = model(*to_tensors(encoder, [examples.texts[i] for i in rows], device))
        predicted = logits.argmax(-1).tolist()
        correct += sum(int(p == examples.labels[i]) for p, i in zip(predicted, rows, strict=True))
    model.train(was_training)
    return correct / len(examples.texts)


def accuracies(
    model: torch.nn.Module,
    encoder: TextEncoder,
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
    train_set, raw_labels, counts = read_examples(options.train_file, options, raw_labels)
    if not given:
        found = ", ".join(f"{value!r} x{counts[value]:,}" for value in raw_labels)
        progress(f"labels found in {options.train_file} (column {options.label_column!r}): {found}")
    dev_set = read_examples(options.dev_file, options, raw_labels)[0] if options.dev_file else None
    if options.max_train_rows and options.max_train_rows < len(train_set.texts):
        keep = sorted(random.Random(options.seed).sample(range(len(train_set.texts)), options.max_train_rows))
        train_set = Examples([train_set.texts[i] for i in keep], [train_set.labels[i] for i in keep])
    return train_set, dev_set, raw_labels, label_names or raw_labels


@dataclass
class FitResult:
    best_state: dict | None  # the snapshot at the best dev accuracy (None without a dev set)
    best_dev: float | None
    best_step: int
    steps: int
    seconds: float
    history: list[dict]


def fit(
    model: torch.nn.Module,
    encoder: TextEncoder,
    train_set: Examples,
    dev_set: Examples | None,
    options: TrainOptions,
    snapshot: Callable[[], dict],
) -> FitResult:
    """AdamW over the trainable parameters, linear warm-up and decay, dev selection, a progress bar.

    `snapshot` returns what to keep at the best dev step (a task's tuned weights, or all weights).
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    device = model_device(model)
    optimizer = torch.optim.AdamW(trainable, lr=options.lr, weight_decay=options.weight_decay)
    steps_per_epoch = math.ceil(len(train_set.texts) / options.batch_size)
    total_steps = max(1, round(options.epochs * steps_per_epoch))
    warmup = max(1, round(options.warmup * total_steps))

    def lr_at(step: int) -> float:  # linear warm-up, then linear decay to zero
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_at)
    eval_every = options.eval_every or steps_per_epoch
    shuffler = random.Random(options.seed)
    best_state, best_dev, best_step = None, -1.0, total_steps
    history: list[dict] = []
    started = time.perf_counter()
    # On stderr, like every status line: a bar on a terminal, a line every 30 s in a log.
    with Progress("training", total=total_steps, unit="steps") as progress:
        step, rows_seen, running_loss = 0, 0, 0.0
        model.train()
        while step < total_steps:
            order = list(range(len(train_set.texts)))
            shuffler.shuffle(order)
            for rows in batches(order, options.batch_size):
                if step >= total_steps:
                    break
                inputs = to_tensors(encoder, [train_set.texts[i] for i in rows], device)
                target = torch.tensor([train_set.labels[i] for i in rows], device=device)
                loss = F.cross_entropy(model(*inputs), target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimizer.step()
                scheduler.step()
                step += 1
                rows_seen += len(rows)
                running_loss = loss.item() if step == 1 else 0.98 * running_loss + 0.02 * loss.item()
                status = f"loss {running_loss:.4f}"
                if dev_set and (step % eval_every == 0 or step == total_steps):
                    accuracy = evaluate(model, encoder, dev_set)
                    history.append({"step": step, "loss": round(running_loss, 4), "dev_accuracy": accuracy})
                    if accuracy > best_dev:
                        best_dev, best_step = accuracy, step
                        best_state = copy.deepcopy(snapshot())
                    progress.line(
                        f"step {step}/{total_steps}: loss {running_loss:.4f}, dev accuracy {accuracy:.4f}"
                    )
                if history:
                    status += f"  dev acc {history[-1]['dev_accuracy']:.4f} (best {best_dev:.4f})"
                progress.update(step, rows=rows_seen, status=status)
    model.eval()
    seconds = time.perf_counter() - started
    return FitResult(best_state, best_dev if history else None, best_step, total_steps, seconds, history)


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


def train(options: TrainOptions, progress: Callable[[str], None] = print) -> dict:
    """Train a task's generator and head, keep the best dev state, save the checkpoint."""
    if options.threads:
        torch.set_num_threads(options.threads)
    torch.manual_seed(options.seed)
    check_generator(options.generator)  # before reading data and the backbone
    check_out_dir(options.out_dir, options.replace)  # before hours of training, not after
    options = replace(options, lr=options.lr or default_lr(options.generator))
    device = resolve_device(options.device)
    train_set, dev_set, raw_labels, label_names = load_task_data(options, progress)
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
    model = IPTModel(backbone.model, config, seed=options.seed)
    if options.init_generator:
        start_from_pretrained_generator(model, options.init_generator, backbone.identity["sha256"])
        progress(f"generator initialised from {options.init_generator}")
    model.to(device)
    encoder = TextEncoder(backbone.tokenizer_path, config.max_length)
    tuned = model.tuned_parameter_count()
    share = tuned / backbone.identity["parameters"]
    progress(
        f"{options.generator}: {tuned:,} tuned parameters = {share:.2%} of the backbone "
        f"({backbone.identity['parameters']:,}); {len(train_set.texts):,} training rows on {device}"
    )
    result = fit(model, encoder, train_set, dev_set, options, snapshot=model.tuned_state)
    if result.best_state is not None:
        model.load_state_dict(result.best_state, strict=False)
    model.to("cpu")  # checkpoints hold CPU tensors
    record = {
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(options).items()},
        "steps": result.steps,
        "train_rows": len(train_set.texts),
        "train_seconds": round(result.seconds, 1),
        "best_step": result.best_step,
        "dev_accuracy": result.best_dev,
        "history": result.history,
        "tuned_share": share,
    }
    samples_from = dev_set or train_set
    samples = [list(t) if isinstance(t, tuple) else t for t in samples_from.texts[:16]]
    save_checkpoint(options.out_dir, model, backbone, record, samples, replace=options.replace)
    if result.best_dev is not None:
        progress(f"best dev accuracy {result.best_dev:.4f} at step {result.best_step}")
    progress(f"saved checkpoint {options.out_dir} ({result.seconds:.0f} s)")
    return record
